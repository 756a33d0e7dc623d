"""Random sampling beyond rand/randn (frontend layer): normal, in-place normal_/uniform_, multinomial.

Every draw comes from picograd's counter-based generator (`Tensor.rand`, seeded by
`Tensor.manual_seed`), so samples are lazy, fuse into their consumers, advance under a JIT replay
and are the same on every device. Argument names and errors follow PyTorch.
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any
from picograd.dtype import DType, dtypes
from picograd.helpers import prod
from picograd.frontend._util import _new_shape
if TYPE_CHECKING: from picograd.tensor import Tensor


def _check_std(op: str, std: float) -> None:
  if not std >= 0: raise RuntimeError(f"{op} expects std >= 0.0, but found std {std}")


class RandomMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  @classmethod
  def rand(cls: Any, *shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Uniform samples in [0, 1)."""
    shape = _new_shape(shape, "rand")
    bits = cls._random_bits(prod(shape), device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    out = (bits._shr(8).cast(dtypes.float32) * (1.0 / (1 << 24))).cast(dt).reshape(shape)
    out.requires_grad = requires_grad
    return out

  @classmethod
  def randn(cls: Any, *shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Standard normal samples (Box-Muller on two uniform streams)."""
    shape = _new_shape(shape, "randn")
    u = cls.rand(2, *shape, device=device)
    u1, u2 = u[0], u[1]
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    out = ((1.0 - u1).log() * -2.0).sqrt() * (u2 * (2 * math.pi)).cos()
    out = out.cast(dt)
    out.requires_grad = requires_grad
    return out

  @classmethod
  def randint(cls: Any, low: int, high: int | None = None, size: tuple[int, ...] = (), dtype: DType | None = None,
              device: str | None = None) -> "Tensor":
    if high is None: low, high = 0, low
    if high <= low: raise RuntimeError(f"randint: empty range [{low}, {high}): 'from' must be less than 'to'")
    u = cls.rand(*_new_shape(size if isinstance(size, (tuple, list)) else (size,), "randint"), device=device)
    return (u * (high - low)).floor().cast(dtype or dtypes.int64) + low

  @classmethod
  def uniform(cls: Any, *shape, low: float = 0.0, high: float = 1.0, **kwargs) -> "Tensor":
    return cls.rand(*shape, **kwargs) * (high - low) + low

  def rand_like(self: Any) -> "Tensor": return type(self).rand(self.shape, dtype=self.dtype if self.dtype.is_float else None, device=self.device)
  def randn_like(self: Any) -> "Tensor": return type(self).randn(self.shape, dtype=self.dtype if self.dtype.is_float else None, device=self.device)

  @classmethod
  def normal(cls: Any, *shape, mean: float = 0.0, std: float = 1.0, dtype: DType | str | None = None, device: str | None = None,
             requires_grad: bool | None = None) -> Any:
    """Samples of N(mean, std**2) of the given shape (`picograd.normal(mean, std, size)` is PyTorch's spelling)."""
    _check_std("normal", std)
    out = (cls.randn(*shape, device=device) * std + mean).cast(dtypes.from_any(dtype) if dtype is not None else dtypes.default_float)
    out.requires_grad = requires_grad
    return out

  def normal_(self: Any, mean: float = 0.0, std: float = 1.0) -> Any:
    """Fill this tensor in place with samples of N(mean, std**2), as `torch.Tensor.normal_`."""
    _check_std("normal_", std)
    if not self.dtype.is_float: raise NotImplementedError(f"normal_: not implemented for {self.dtype.name} (a floating point tensor is needed)")
    return self.assign(type(self).randn(self.shape, device=self.device) * std + mean)

  def uniform_(self: Any, a: float = 0.0, b: float = 1.0) -> Any:
    """Fill this tensor in place with samples of U[a, b), as `torch.Tensor.uniform_(from, to)`."""
    if not a <= b: raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}")
    if not self.dtype.is_float: raise NotImplementedError(f"uniform_: not implemented for {self.dtype.name} (a floating point tensor is needed)")
    return self.assign(type(self).rand(self.shape, device=self.device) * (b - a) + a)

  def multinomial(self: Any, num_samples: int = 1, replacement: bool = False) -> Any:
    """Indices drawn from the categorical distribution each row of this tensor's non-negative weights describes.

    A 1-D input gives [num_samples] int64 indices, a 2-D [rows, num_samples] gives one draw list per row.
    With replacement each draw is the first category whose cumulative weight exceeds a uniform
    draw scaled by the row's total. Without replacement each category gets an exponential key
    E / weight (E ~ Exp(1)) and the `num_samples` smallest keys win in increasing order: this is
    exactly successive sampling without replacement (Efraimidis and Spirakis), done as a rank count
    so it stays one fused reduction; once a row's positive weights are used up, its zero-weight
    categories follow in index order. The weights are checked on the data first, as PyTorch's CPU does.
    """
    if self.ndim not in (1, 2): raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got {self.ndim} dims")
    if not self.dtype.is_float: raise RuntimeError(f"multinomial: expected a floating point tensor of weights, got {self.dtype.name}")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool):
      raise TypeError(f"multinomial: num_samples must be an int, got {num_samples!r}")
    if num_samples <= 0: raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples, got {num_samples}")
    n = self.shape[-1]
    if n == 0: raise RuntimeError("multinomial: number of categories cannot be zero")
    if not replacement and num_samples > n:
      raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without replacement ({num_samples} > {n})")
    w = self if self.ndim == 2 else self.reshape(1, n)
    if w.dtype.itemsize < 4: w = w.cast(dtypes.float32)  # half-precision cumulative sums would lose small weights
    self._check_weights(w)
    rows = w.shape[0]
    idx = type(self).arange(n, dtype=dtypes.int32, device=self.device)
    if replacement:
      cdf = w.cumsum(1)
      total = cdf[:, n - 1:n]
      u = type(self).rand(rows, num_samples, device=self.device) * total  # [rows, k]
      # categories whose cumulative weight is <= u lie wholly before the draw
      out = (cdf.reshape(rows, 1, n) <= u.reshape(rows, num_samples, 1)).cast(dtypes.int32).sum(2)
      # u * total can round up to the total: never step past the last category with weight
      last = ((w > 0).cast(dtypes.int32) * idx.reshape(1, n)).max(1, keepdim=True)
      out = out.minimum(last)
    else:
      e = -(1.0 - type(self).rand(rows, n, device=self.device)).log()  # Exp(1); 1 - u > 0, so it is finite
      key = (e / w).where(w > 0, math.inf)
      # rank of each category among its row's keys, ties broken by index: the order in which it is drawn
      ki, kj = key.reshape(rows, n, 1), key.reshape(rows, 1, n)
      before = (kj < ki) | ((kj == ki) & (idx.reshape(1, 1, n) < idx.reshape(1, n, 1)))
      rank = before.cast(dtypes.int32).sum(2)  # [rows, n]
      draw = type(self).arange(num_samples, dtype=dtypes.int32, device=self.device)
      hit = rank.reshape(rows, 1, n) == draw.reshape(1, num_samples, 1)
      out = (hit.cast(dtypes.int32) * idx.reshape(1, 1, n)).sum(2)
    out = out.cast(dtypes.int64)
    return out if self.ndim == 2 else out.reshape(num_samples)

  @staticmethod
  def _check_weights(w: Any) -> None:
    """Raise like PyTorch's CPU multinomial on weights that are negative, inf or NaN, or a row that sums to zero."""
    bad = ((w < 0) | w.isnan() | (w == math.inf)).cast(dtypes.int32).sum()
    positive = (w > 0).cast(dtypes.int32).sum(1).min()
    bad.realize(positive)
    bad_n, min_positive = int(bad.item()), int(positive.item())
    if bad_n: raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    if min_positive == 0: raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
