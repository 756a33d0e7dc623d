"""Reductions (frontend layer): sum, max, min, mean, var, std, argmax, argmin, logsumexp, softmax, log_softmax, cumsum.

Only ADD and MAX are reduction primitives; min, mean, var, the arg-reductions and softmax are
composed from them (half types accumulate in float32, as PyTorch does).
"""
from __future__ import annotations
from typing import TYPE_CHECKING, Any, Sequence
from picograd.dtype import DType, dtypes
from picograd.helpers import prod
from picograd.ir.ops import Ops
from picograd.frontend._util import _normalize_axis, _unique_axes, _where
from picograd.frontend.autocast import full_precision
if TYPE_CHECKING: from picograd.tensor import Tensor


class ReduceMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  def _axes(self: Any, op: str, axis: int | Sequence[int] | None) -> tuple[int, ...]:
    if axis is None: return tuple(range(self.ndim))
    if isinstance(axis, int): axis = (axis,)
    axes = tuple(_normalize_axis(op, a, self.ndim) for a in axis)
    _unique_axes(op, axes, axis)
    return axes if self.ndim else ()  # a 0-d tensor accepts dim 0 or -1 (PyTorch) and has nothing to reduce

  def _reduce(self: Any, op: Ops, axis, keepdim: bool, name: str) -> "Tensor":
    axes = self._axes(name, axis)
    x = self
    if self.ndim == 0: return self
    out = x._new(x.uop.reduce(op, axes)) if axes else x
    if keepdim: return out
    return out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

  def sum(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, dtype: DType | None = None, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    acc = dtypes.from_any(dtype) if dtype is not None else (dtypes.int64 if not self.dtype.is_float else self.dtype)
    x = self.cast(acc)
    if acc in (dtypes.float16, dtypes.bfloat16):  # accumulate half types in float32, as PyTorch does
      return x.cast(dtypes.float32)._reduce(Ops.ADD, axis, keepdim, "sum").cast(acc)
    return x._reduce(Ops.ADD, axis, keepdim, "sum")

  def max(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    _check_nonempty(self, axis, "max")
    return self._reduce(Ops.MAX, axis, keepdim, "max")

  def min(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    _check_nonempty(self, axis, "min")
    if self.dtype == dtypes.bool: return self.logical_not().max(axis, keepdim).logical_not()
    if self.dtype.is_int: return ~((~self).max(axis, keepdim))  # -x overflows at INT_MIN; ~x reverses the order exactly
    return -((-self).max(axis, keepdim))

  def mean(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    n = prod(self.shape[a] for a in self._axes("mean", axis))
    x = self._float()
    if x.dtype in (dtypes.float16, dtypes.bfloat16):  # the float32 sum, divided before it is rounded back (it may overflow)
      return x.cast(dtypes.float32).mean(axis, keepdim).cast(x.dtype)
    return x.sum(axis, keepdim) * (1.0 / n if n else float("nan"))

  def var(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None,
          unbiased: bool | None = None) -> "Tensor":
    axis = dim if dim is not None else axis
    if unbiased is not None: correction = int(unbiased)
    n = prod(self.shape[a] for a in self._axes("var", axis))
    x = self._float()
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).var(axis, keepdim, correction).cast(x.dtype)
    mean = x.mean(axis, keepdim=True)
    # with no degrees of freedom left the gradient is ±inf; the mean's share of it (exactly 0) would make that inf - inf
    centered = x - (mean.detach() if n <= correction else mean)
    # a true division: with correction >= n the sum over 0 is inf (0/0 = NaN for constant rows), as in PyTorch
    return (centered * centered).sum(axis, keepdim) / float(max(n - correction, 0))

  def std(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None,
          unbiased: bool | None = None) -> "Tensor":
    return self.var(axis, keepdim, correction, dim, unbiased).sqrt()

  def argmax(self: Any, axis: int | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    """Index of the first maximum (int64), like PyTorch."""
    axis = dim if dim is not None else axis
    if axis is None: return self.flatten().argmax(0, keepdim=False) if not keepdim else self.flatten().argmax(0).reshape((1,) * self.ndim)
    ax = _normalize_axis("argmax", axis, self.ndim)
    if self.ndim == 0: return type(self).zeros((), dtype=dtypes.int64, device=self.device)
    n = self.shape[ax]
    if n == 0: raise IndexError(f"argmax: expected reduction dim {ax} to have non-zero size (shape {self.shape})")
    is_max = self == self.max(ax, keepdim=True)
    # a NaN is the maximum (max propagates it), but NaN == NaN is false: pick the first NaN, as PyTorch does
    if self.dtype.is_float: is_max = is_max | self.isnan()
    # score positions so the first maximum wins: n - index where the max is, 0 elsewhere
    rev = type(self).arange(n, 0, -1, dtype=dtypes.int32, device=self.device).reshape([n if i == ax else 1 for i in range(self.ndim)])
    best = _where(is_max, rev, 0).max(ax, keepdim=keepdim)
    return (n - best).cast(dtypes.int64)

  def argmin(self: Any, axis: int | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    if self.dtype == dtypes.bool: return self.logical_not().argmax(axis, keepdim)
    return (~self if self.dtype.is_int else -self).argmax(axis, keepdim)  # ~x reverses integer order exactly, even at INT_MIN

  def logsumexp(self: Any, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    axes = self._axes("logsumexp", axis)  # a bad axis is reported as logsumexp's, not as the max inside it
    x = full_precision(self._float())
    if any(self.shape[a] == 0 for a in axes):  # log of an empty sum, as in PyTorch
      return x.sum(axis, keepdim).full_like(float("-inf"))
    m = x.max(axis, keepdim=True).detach()
    m = _where(m.isinf(), 0.0, m)
    out = (x - m).exp().sum(axis, keepdim=True).log() + m
    return out if keepdim else out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in self._axes("logsumexp", axis)))

  def softmax(self: Any, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("softmax", dim if dim is not None else axis, self.ndim)
    x = full_precision(self._float())
    if x.numel() == 0: return x  # an empty axis has no maximum to subtract; the result is empty
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).softmax(axis).cast(x.dtype)  # a half sum overflows
    e = (x - x.max(axis, keepdim=True).detach()).exp()
    return e / e.sum(axis, keepdim=True)

  def log_softmax(self: Any, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("log_softmax", dim if dim is not None else axis, self.ndim)
    x = full_precision(self._float())
    if x.numel() == 0: return x
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).log_softmax(axis).cast(x.dtype)
    shifted = x - x.max(axis, keepdim=True).detach()
    return shifted - shifted.exp().sum(axis, keepdim=True).log()

  def cumsum(self: Any, axis: int = 0, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("cumsum", dim if dim is not None else axis, self.ndim)
    n = self.shape[axis]
    if n == 0: return self if self.dtype.is_float else self.cast(dtypes.int64)  # nothing to add up; sum's dtype
    x = self.transpose(axis, -1)
    # pad to 2n-1 then take n sliding windows of length n: windows[i] covers x[..i]
    padded = x.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((n - 1, 0),))
    win = padded.unsqueeze(-2).expand(*x.shape[:-1], n, 2 * n - 1 if n else 0)
    flat = win.reshape(*x.shape[:-1], n * (2 * n - 1)) if n else win
    if n: flat = flat.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((0, n),)).reshape(*x.shape[:-1], n, 2 * n)[..., :n]
    return flat.sum(-1).transpose(axis, -1) if n else self


def _check_nonempty(x: Tensor, axis, op: str) -> None:
  """PyTorch's errors for a max/min with nothing to pick from: IndexError for an empty dim, RuntimeError for an empty tensor."""
  if axis is None and x.numel() == 0:
    raise RuntimeError(f"{op}: expected reduction dim to be specified for an empty tensor of shape {x.shape}")
  for a in x._axes(op, axis):
    if x.shape[a] == 0: raise IndexError(f"{op}: expected reduction dim {a} to have non-zero size (shape {x.shape})")
