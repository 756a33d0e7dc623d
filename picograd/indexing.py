"""`Tensor.__getitem__`: ints, slices (any step), None, Ellipsis, integer tensor indices and host lists, built from movement ops.

Basic indexing is shrink / flip / pad+reshape (for steps), so it never copies. An integer tensor
index becomes a one-hot comparison reduced with a sum: lazy, fusable, and its gradient is the
scatter-add PyTorch computes. Lists, tuples and numpy arrays inside an index are host values, so
they are checked right at the op (an out-of-range entry raises IndexError, as in PyTorch), negative
entries are resolved there, and a bool list (a mask of known shape) becomes the integer indices
of its True entries. Tensor indices are checked when the kernel runs
(an index out of range raises IndexError).
"""
from __future__ import annotations
from typing import TYPE_CHECKING, Any
import numpy as np
from picograd.dtype import dtypes
from picograd.helpers import prod, ShapeError

if TYPE_CHECKING:
  from picograd.tensor import Tensor


def _take_every(x: Tensor, dim: int, start: int, count: int, step: int) -> Tensor:
  """Elements start, start+step, ... (count of them) along `dim`, with step >= 1."""
  n = x.shape[dim]
  bounds: list[tuple[int, int] | None] = [None] * x.ndim
  if step == 1 or count <= 1:
    bounds[dim] = (start, start + count)
    return x.shrink(bounds)
  end = min(n, start + count * step)
  bounds[dim] = (start, end)
  x = x.shrink(bounds)
  pad = [(0, 0)] * x.ndim
  pad[dim] = (0, count * step - (end - start))
  x = x.pad(pad)
  x = x.reshape(x.shape[:dim] + (count, step) + x.shape[dim + 1:])
  bounds = [None] * x.ndim
  bounds[dim + 1] = (0, 1)
  x = x.shrink(bounds)
  return x.reshape(x.shape[:dim + 1] + x.shape[dim + 2:])


def _host_index(item: Any) -> np.ndarray:
  """A list, tuple or numpy array used as an index: int64 positions or a bool mask."""
  try:
    arr = np.asarray(item)
  except ValueError:  # numpy 2 refuses ragged nesting
    raise ValueError(f"index {item!r:.80} is ragged: nested lists must be rectangular") from None
  if arr.size == 0 and arr.dtype.kind == "f": return arr.astype(np.int64)  # [] is an empty list of positions
  if arr.dtype.kind == "b":
    if arr.ndim == 0: raise IndexError("a 0-d bool array is not supported as an index")
    return arr
  if arr.dtype.kind not in "iu":
    raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors; got {item!r:.80} of numpy kind {arr.dtype.name}")
  return arr.astype(np.int64)


def _dims_consumed(i: Any) -> int:
  if i is None or i is Ellipsis: return 0
  return i.ndim if isinstance(i, np.ndarray) and i.dtype == np.bool_ else 1


def _resolve_host(t: Tensor, index: tuple) -> tuple:
  """Check host arrays against the dims they index (they need no check when the kernel runs) and resolve negative entries.

  Bool masks become one position array per masked dim.
  """
  out: list[Any] = []
  dim = 0
  for item in index:
    if isinstance(item, np.ndarray) and item.dtype == np.bool_:
      covered = t.shape[dim:dim + item.ndim]
      if item.shape != covered:
        raise IndexError(f"the shape of the mask {list(item.shape)} at index {dim} does not match the shape of the indexed tensor "
                         f"{list(t.shape)} at index {dim}")
      out.extend(np.nonzero(item))
    elif isinstance(item, np.ndarray):
      n = t.shape[dim]
      bad = (item < -n) | (item >= n)
      if bad.any(): raise IndexError(f"index {int(item[bad].flat[0])} is out of bounds for dimension {dim} with size {n} (shape {t.shape})")
      out.append(np.where(item < 0, item + n, item))
    else: out.append(item)
    dim += _dims_consumed(item)
  return tuple(out)


def _expand_ellipsis(t: Tensor, index: tuple) -> tuple:
  consumed = sum(_dims_consumed(i) for i in index)
  if sum(1 for i in index if i is Ellipsis) > 1: raise IndexError("an index can only have a single ellipsis ('...')")
  if consumed > t.ndim: raise IndexError(f"too many indices for tensor of shape {t.shape}: {len(index)} given")
  if any(i is Ellipsis for i in index):
    pos = next(k for k, i in enumerate(index) if i is Ellipsis)
    return index[:pos] + (slice(None),) * (t.ndim - consumed) + index[pos + 1:]
  return index + (slice(None),) * (t.ndim - consumed)


def getitem(t: Tensor, index: Any, tensor_type: type[Tensor]) -> Tensor:
  """`t[index]`. `tensor_type` is the Tensor class (passed in by tensor.py, which imports this module: no import circle)."""
  if not isinstance(index, tuple): index = (index,)
  index = tuple(_host_index(i) if isinstance(i, (list, tuple, np.ndarray)) else i for i in index)
  for i in index:
    if isinstance(i, tensor_type) and i.dtype == dtypes.bool: raise IndexError("boolean mask indexing is not supported; use where()")
    if isinstance(i, tensor_type) and i.dtype.is_float: raise IndexError(f"tensors used as indices must be integer, not {i.dtype.name}")
    if isinstance(i, tensor_type) and i.device != t.device:
      raise RuntimeError(f"getitem: index tensor on {i.device} cannot index a tensor on {t.device}; move one with .to()")
    if isinstance(i, (float, np.floating)):
      raise IndexError(f"unsupported index {i!r}: only integers, slices, None, ... and integer tensors or lists")
    if not isinstance(i, (int, np.integer, slice, tensor_type, np.ndarray)) and i is not None and i is not Ellipsis:
      raise TypeError(f"unsupported index {i!r:.80} of type {type(i).__name__}")
  index = _resolve_host(t, _expand_ellipsis(t, index))
  x, dim = t, 0
  out_shape: list[int] = []
  tensor_dims: list[tuple[int, Tensor]] = []  # (position in out_shape, index tensor)
  for item in index:
    if item is None:
      out_shape.append(1)
      continue
    n = x.shape[dim]
    if isinstance(item, bool) or not isinstance(item, (int, np.integer, slice, tensor_type, np.ndarray)):
      raise IndexError(f"unsupported index {item!r}")
    if isinstance(item, (int, np.integer)):
      item = int(item)
      if not -n <= item < n: raise IndexError(f"index {item} is out of bounds for dimension {dim} with size {n} (shape {t.shape})")
      bounds: list[tuple[int, int] | None] = [None] * x.ndim
      bounds[dim] = (item % n, item % n + 1)
      x = x.shrink(bounds)
    elif isinstance(item, slice):
      start, stop, step = item.indices(n)
      if step < 0:  # walk the flipped dimension forwards
        x = x.flip(dim)
        start, stop, step = n - 1 - start, n - 1 - stop, -step
      count = max(0, -(-(stop - start) // step))
      x = _take_every(x, dim, start if count else 0, count, step)
      out_shape.append(x.shape[dim])
    elif isinstance(item, np.ndarray):  # host positions, checked and made non-negative by _resolve_host
      tensor_dims.append((len(out_shape), tensor_type(item, device=t.device)))
      out_shape.append(n)
    else:
      item = item._check((item >= -n) & (item < n), IndexError, f"index out of bounds for dimension {dim} with size {n}")
      tensor_dims.append((len(out_shape), item))
      out_shape.append(n)
    dim += 1
  x = x.reshape(tuple(out_shape))
  return _gather_dims(x, tensor_dims) if tensor_dims else x


def _gather_dims(x: Tensor, tensor_dims: list[tuple[int, Tensor]]) -> Tensor:
  """Advanced indexing of the dims named in `tensor_dims`, with numpy/PyTorch placement of the result dims."""
  dims = [d for d, _ in tensor_dims]
  sizes = [x.shape[d] for d in dims]
  try:
    bshape = tuple(np.broadcast_shapes(*[i.shape for _, i in tensor_dims]))
  except ValueError:
    raise IndexError(f"shape mismatch: indexing tensors could not be broadcast together with shapes {[i.shape for _, i in tensor_dims]}") from None
  flat: Tensor | None = None
  for (d, idx), n in zip(tensor_dims, sizes):
    idx = idx.cast(dtypes.int32)
    idx = (idx + n).where(idx < 0, idx)  # negative indices count from the end
    flat = idx if flat is None else flat * n + idx
  assert flat is not None, "at least one tensor index"
  flat = flat._expand_to(bshape)
  rest = [d for d in range(x.ndim) if d not in dims]
  total = prod(sizes)
  moved = x.permute(rest + dims).reshape(*[x.shape[d] for d in rest], total)
  # one-hot over the flattened indexed dims, summed: out[r..., b...] = x[r..., flat[b...]]
  onehot = flat.unsqueeze(-1) == x.arange(total, dtype=dtypes.int32, device=x.device)
  lhs = moved.reshape(*moved.shape[:-1], *([1] * len(bshape)), total)
  picked = lhs.where(onehot.reshape(*([1] * len(rest)), *bshape, total), 0).sum(-1, dtype=x.dtype)
  # adjacent indexed dims keep their place; separated ones go to the front (numpy's rule)
  adjacent = dims == list(range(dims[0], dims[0] + len(dims)))
  pos = sum(1 for d in rest if d < dims[0]) if adjacent else 0
  nr, nb = len(rest), len(bshape)
  order = list(range(pos)) + list(range(nr, nr + nb)) + list(range(pos, nr))
  return picked.permute(order)


__all__ = ["getitem", "ShapeError"]
