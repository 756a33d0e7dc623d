"""Movement and indexing (frontend layer): reshape, permute, expand, pad, shrink, flip, repeat, split, cat, stack, tril, gather, [].

Each is a view on the same data (RESHAPE/PERMUTE/EXPAND/PAD/SHRINK/FLIP nodes) or a fusable
composite of them; nothing is copied until a kernel reads it. `__getitem__` is implemented in
picograd/indexing.py.
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any, Sequence, cast
import numpy as np
from picograd.dtype import dtypes, promote
from picograd.helpers import prod, ShapeError
from picograd.ir.ops import UOp
from picograd.frontend._util import Scalar, _normalize_axis, _unique_axes, _shape_arg, _where, _check_condition
if TYPE_CHECKING: from picograd.tensor import Tensor


class MovementMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  def reshape(self: Any, *shape) -> "Tensor":
    shape = _shape_arg(shape, "reshape")
    if any(s < -1 for s in shape): raise ShapeError(f"reshape: invalid shape dimension {min(shape)} in {shape}")
    if shape.count(-1) > 1: raise ShapeError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
      known = prod(s for s in shape if s != -1)
      if known == 0 or self.numel() % known: raise ShapeError(f"reshape: cannot reshape {self.shape} into {shape}")
      shape = tuple(self.numel() // known if s == -1 else s for s in shape)
    if any(s < 0 for s in shape) or prod(shape) != self.numel():
      raise ShapeError(f"reshape: cannot reshape tensor of shape {self.shape} ({self.numel()} elements) into {shape}")
    return self._new(self.uop.reshape(shape))
  def view(self: Any, *shape) -> "Tensor":
    """reshape; given a dtype instead of a shape, the same bits read as that dtype (`bitcast`), as in PyTorch."""
    if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list)): return self.bitcast(shape[0])
    return self.reshape(*shape)

  def permute(self: Any, *order) -> "Tensor":
    order = _shape_arg(order, "permute")
    if len(order) != self.ndim: raise ShapeError(f"permute: {order} is not a permutation of the {self.ndim} dimensions of {self.shape}")
    order = tuple(_normalize_axis("permute", a, self.ndim) for a in order)
    _unique_axes("permute", order, order)
    return self._new(self.uop.permute(order))

  def transpose(self: Any, dim0: int = -2, dim1: int = -1) -> "Tensor":
    a, b = _normalize_axis("transpose", dim0, self.ndim), _normalize_axis("transpose", dim1, self.ndim)
    order = list(range(self.ndim))
    order[a], order[b] = order[b], order[a]
    return self.permute(order)
  @property
  def T(self: Any) -> "Tensor": return self.permute(tuple(range(self.ndim))[::-1])
  @property
  def mT(self: Any) -> "Tensor": return self.transpose(-2, -1)

  def expand(self: Any, *shape) -> "Tensor":
    shape = _shape_arg(shape, "expand")
    if len(shape) < self.ndim: raise ShapeError(f"expand: target {shape} has fewer dimensions than the tensor's {self.shape}")
    src = (1,) * (len(shape) - self.ndim) + self.shape
    new = tuple(s if n == -1 else n for s, n in zip(src, shape))
    if any(s != n and s != 1 for s, n in zip(src, new)): raise ShapeError(f"expand: cannot expand shape {self.shape} to {shape}")
    return self._new(self.uop.reshape(src).expand(new))
  def expand_as(self: Any, other: "Tensor") -> "Tensor": return self.expand(other.shape)

  def squeeze(self: Any, dim: int | Sequence[int] | None = None) -> "Tensor":
    if dim is None: return self.reshape(tuple(d for d in self.shape if d != 1))
    dims = {_normalize_axis("squeeze", d, self.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
    return self.reshape(tuple(d for i, d in enumerate(self.shape) if not (i in dims and d == 1)))
  def unsqueeze(self: Any, dim: int) -> "Tensor":
    dim = _normalize_axis("unsqueeze", dim, self.ndim + 1)
    return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])
  def flatten(self: Any, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
    if self.ndim == 0: return self.reshape(1)
    s, e = _normalize_axis("flatten", start_dim, self.ndim), _normalize_axis("flatten", end_dim, self.ndim)
    if s > e: raise RuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
    return self.reshape(self.shape[:s] + (prod(self.shape[s:e + 1]),) + self.shape[e + 1:])
  def unflatten(self: Any, dim: int, sizes: Sequence[int]) -> "Tensor":
    dim = _normalize_axis("unflatten", dim, self.ndim)
    return self.reshape(self.shape[:dim] + tuple(sizes) + self.shape[dim + 1:])

  def pad(self: Any, padding: Sequence[int] | Sequence[tuple[int, int]], value: Scalar = 0.0, mode: str = "constant") -> "Tensor":
    """Pad with `value`. Either PyTorch's flat form (last dim first: left, right, top, bottom, ...) or one (before, after) pair per dim.

    Negative amounts crop, as in PyTorch.
    """
    if padding and isinstance(padding[0], (tuple, list)):
      if len(padding) != self.ndim: raise ShapeError(f"pad: {len(padding)} (before, after) pairs for a tensor of shape {self.shape}")
      pairs = [tuple(p) for p in cast(Sequence[Sequence[int]], padding)]
    else:
      if len(padding) % 2 or len(padding) // 2 > self.ndim:
        raise ShapeError(f"pad: padding {tuple(padding)} does not fit a tensor of shape {self.shape}")
      pairs = [(0, 0)] * self.ndim
      flat = cast(Sequence[int], padding)  # mypy cannot narrow the union by its first element
      for i in range(len(flat) // 2): pairs[self.ndim - 1 - i] = (flat[2 * i], flat[2 * i + 1])
    if mode != "constant": return self._pad_mode(pairs, mode)  # reflect, replicate, circular: frontend/conv.py
    # negative amounts are crops; do them first
    crop = tuple((-min(b, 0), d + min(a, 0)) for (b, a), d in zip(pairs, self.shape))
    if any(e < s for s, e in crop): raise ShapeError(f"pad: padding {pairs} crops more than the shape {self.shape}")
    x = self._new(self.uop.shrink(crop))
    grow = tuple((max(b, 0), max(a, 0)) for b, a in pairs)
    if all(g == (0, 0) for g in grow): return x
    out = x._new(x.uop.pad(grow))
    if value == 0: return out
    mask = type(self).ones(x.shape, dtype=dtypes.bool, device=self.device)._new(
      UOp.const(dtypes.bool, True).reshape((1,) * x.ndim).expand(x.shape).pad(grow))
    return _where(mask, out, value)

  def shrink(self: Any, bounds: Sequence[tuple[int, int] | None]) -> "Tensor":
    b = tuple((0, d) if p is None else tuple(p) for p, d in zip(bounds, self.shape))
    if any(not 0 <= s <= e <= d for (s, e), d in zip(b, self.shape)): raise ShapeError(f"shrink: bounds {b} do not fit shape {self.shape}")
    return self._new(self.uop.shrink(b))

  def flip(self: Any, dims: int | Sequence[int]) -> "Tensor":
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = [_normalize_axis("flip", d, self.ndim) for d in dims]
    _unique_axes("flip", axes, dims)
    return self._new(self.uop.flip(tuple(i in axes for i in range(self.ndim))))

  def repeat(self: Any, *repeats) -> "Tensor":
    """Tile the tensor (PyTorch's repeat): each dim i is repeated repeats[i] times."""
    repeats = _shape_arg(repeats, "repeat")
    if any(r < 0 for r in repeats): raise RuntimeError(f"repeat: repeat counts must be non-negative, got {repeats}")
    if len(repeats) < self.ndim: raise ShapeError(f"repeat: {len(repeats)} repeat counts for a tensor of shape {self.shape}")
    base = (1,) * (len(repeats) - self.ndim) + self.shape
    x = self.reshape(base)
    interleaved = tuple(v for d in base for v in (1, d))
    expanded = tuple(v for r, d in zip(repeats, base) for v in (r, d))
    return x.reshape(interleaved).expand(expanded).reshape(tuple(r * d for r, d in zip(repeats, base)))

  def chunk(self: Any, chunks: int, dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("chunk", dim, self.ndim)
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)):
      raise TypeError(f"chunk: chunks must be an int, not {type(chunks).__name__}")
    if chunks <= 0: raise RuntimeError(f"chunk: chunks must be greater than 0, got {chunks}")
    step = math.ceil(self.shape[dim] / chunks)
    return self.split(step, dim)

  def split(self: Any, sizes: int | Sequence[int], dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("split", dim, self.ndim)
    n = self.shape[dim]
    if isinstance(sizes, (int, np.integer)):
      if sizes < 0 or (sizes == 0 and n != 0):
        raise RuntimeError(f"split: split_size must be positive (0 only for an empty dimension), got {sizes} for dimension {dim} of {self.shape}")
      sizes = [min(sizes, n - i) for i in range(0, n, max(sizes, 1))]
    elif any(s < 0 for s in _shape_arg(tuple(sizes), "split")): raise RuntimeError(f"split: sizes must be non-negative, got {list(sizes)}")
    if sum(sizes) != n: raise ShapeError(f"split: sizes {list(sizes)} do not add up to dimension {dim} of {self.shape}")
    out, start = [], 0
    for s in sizes:
      out.append(self.shrink([(start, start + s) if i == dim else None for i in range(self.ndim)]))
      start += s
    return out

  def cat(self: Any, *others: "Tensor", dim: int = 0) -> "Tensor": return cat([self, *others], dim)
  def stack(self: Any, *others: "Tensor", dim: int = 0) -> "Tensor": return stack([self, *others], dim)

  def tril(self: Any, diagonal: int = 0) -> "Tensor": return self._triangle(diagonal, lower=True)
  def triu(self: Any, diagonal: int = 0) -> "Tensor": return self._triangle(diagonal, lower=False)
  def _triangle(self: Any, diagonal: int, lower: bool) -> "Tensor":
    if self.ndim < 2: raise RuntimeError(f"{'tril' if lower else 'triu'}: input must have at least 2 dimensions, got shape {self.shape}")
    r, c = self.shape[-2], self.shape[-1]
    rows = type(self).arange(r, dtype=dtypes.int32, device=self.device).reshape(r, 1)
    cols = type(self).arange(c, dtype=dtypes.int32, device=self.device).reshape(1, c)
    keep = (cols <= rows + diagonal) if lower else (cols >= rows + diagonal)
    return _where(keep, self, self.zeros_like())  # a tensor zero keeps bool bool (a Python 0 would promote it)

  def masked_fill(self: Any, mask: "Tensor", value: Scalar) -> "Tensor":
    _check_condition(mask, "masked_fill")
    out = _where(mask, value, self)
    if out.shape != self.shape: raise ShapeError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's {self.shape}")
    return out

  def __getitem__(self: Any, index: Any) -> "Tensor":
    from picograd.indexing import getitem
    return getitem(self, index, type(self))

  def __setitem__(self: Any, index: Any, value: Any) -> None:
    raise TypeError("picograd tensors do not support item assignment; build the new tensor with where/pad/cat, or use assign()")

  def gather(self: Any, dim: int, index: "Tensor") -> "Tensor":
    """out[i][j] = self[index[i][j]][j] for dim=0 (PyTorch's gather)."""
    dim = _normalize_axis("gather", dim, self.ndim)
    if not isinstance(index, type(self)): raise TypeError(f"gather: index must be a Tensor, not {type(index).__name__}")
    if not index.dtype.is_int: raise RuntimeError(f"gather: index must be an integer tensor, not {index.dtype.name}")
    if index.device != self.device: raise RuntimeError(f"gather: index on {index.device} but the input is on {self.device}")
    if index.ndim != self.ndim: raise ShapeError(f"gather: index of shape {index.shape} must have as many dims as {self.shape}")
    n = self.shape[dim]
    index = index._check((index >= 0) & (index < n), RuntimeError, f"gather: index out of bounds for dimension {dim} with size {n}")
    x = self.shrink([None if i == dim else (0, index.shape[i]) for i in range(self.ndim)])
    onehot = index.unsqueeze(-1) == type(self).arange(n, dtype=index.dtype, device=self.device)
    moved = x.unsqueeze(-1).transpose(dim, -1)
    return _where(onehot, moved, 0).sum(-1, dtype=self.dtype)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
  """Concatenate along `dim`: each input is padded to the full size and the pads are summed (a single fused kernel)."""
  if not tensors: raise ValueError("cat: expected a non-empty list of tensors")
  first = tensors[0]
  dim = _normalize_axis("cat", dim, first.ndim)
  for t in tensors[1:]:
    if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
      raise ShapeError(f"cat: shapes {[tuple(x.shape) for x in tensors]} differ outside dimension {dim}")
    if t.device != first.device: raise RuntimeError(f"cat: tensors are on different devices ({first.device} and {t.device})")
  dt = first.dtype
  for t in tensors[1:]: dt = promote(dt, t.dtype)
  total = sum(t.shape[dim] for t in tensors)
  out, start = None, 0
  for t in tensors:
    pad = [(0, 0)] * first.ndim
    pad[dim] = (start, total - start - t.shape[dim])
    piece = t.cast(dt)._new(t.cast(dt).uop.pad(tuple(pad)))
    start += t.shape[dim]
    if dt == dtypes.bool: out = piece if out is None else out | piece
    else: out = piece if out is None else out + piece
  assert out is not None, "cat has at least one tensor"
  return out


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
  if not tensors: raise RuntimeError("stack: expected a non-empty list of tensors")
  shapes = {t.shape for t in tensors}
  if len(shapes) != 1: raise ShapeError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
  dim = _normalize_axis("stack", dim, tensors[0].ndim + 1)
  return cat([t.unsqueeze(dim) for t in tensors], dim)
