"""Sorting (frontend layer): sort, argsort, topk.

Sorting ranks every element by counting the elements that precede it (ties broken by index, so
the sort is stable), then places each element at its rank with a one-hot sum: two fused O(n^2)
reductions per row, no host round-trip and no data-dependent control flow. Long rows go through
a bitonic network instead.
"""
from __future__ import annotations
from typing import Any
from picograd.dtype import dtypes
from picograd.frontend.scan import ValuesIndices, _dim, _boundary, _last_axis_pad

# rows up to _RANK_SORT_MAX long, or all rows together within _RANK_SORT_WORK compares, sort by ranking (O(n^2)
# compares in 2 fused reductions); longer ones through a bitonic network (O(n log^2 n) work, but about log^2 n kernels
# to compile and launch: on the CPU the rank sort of one 20k row is still faster, 0.5 s vs 0.8 s warm)
_RANK_SORT_MAX = 1024
_RANK_SORT_WORK = 1 << 30
_SORT_STEPS_PER_KERNEL = 3


def _before(a: Any, b: Any, ia: Any, ib: Any, descending: bool) -> Any:
  """Whether element a (at index ia) goes before b (at ib) in a stable sort. NaN is the largest value, as in PyTorch."""
  first = a > b if descending else a < b
  same = a == b
  if a.dtype.is_float:
    a_nan, b_nan = a.isnan(), b.isnan()
    first = first | ((a_nan & b_nan.logical_not()) if descending else (b_nan & a_nan.logical_not()))
    same = same | (a_nan & b_nan)
  return first | (same & (ia < ib))


def _sort(x: Any, dim: int, descending: bool, k: int | None = None) -> ValuesIndices:
  """The first k (default: all) elements along `dim` in stable sorted order, with their original indices (int64)."""
  if x.ndim == 0:  # one element: itself at index 0 (or nothing, for k = 0)
    if k == 0: return _sort(x.reshape(1), 0, descending, 0)
    return ValuesIndices(x, x.zeros_like(dtype=dtypes.int64))
  n = x.shape[dim]
  k = n if k is None else k
  xs = x.transpose(dim, -1)
  if k == 0:  # nothing to pick (k <= n): an empty slice keeps the result connected to x, for a (zero) gradient
    empty = xs.shrink([None] * (xs.ndim - 1) + [(0, 0)])
    return ValuesIndices(empty.transpose(dim, -1), empty.zeros_like(dtype=dtypes.int64).transpose(dim, -1))
  rows = xs.numel() // n
  by_rank = n <= _RANK_SORT_MAX or rows * n * n <= _RANK_SORT_WORK
  values, indices = (_rank_sort if by_rank else _bitonic_sort)(xs, descending, k)
  return ValuesIndices(values.transpose(dim, -1), indices.cast(dtypes.int64).transpose(dim, -1))


def _rank_sort(xs: Any, descending: bool, k: int) -> tuple[Any, Any]:
  """Sort the last axis by ranking: each element's place is the number of elements that go before it."""
  n = xs.shape[-1]
  T = type(xs)
  idx = T.arange(n, dtype=dtypes.int32, device=xs.device)
  # rank[i] = how many elements go before element i: (..., i, j) pairs reduced over j
  before = _before(xs.unsqueeze(-2), xs.unsqueeze(-1), idx.reshape(1, n), idx.reshape(n, 1), descending)
  rank = before.cast(dtypes.int32).sum(-1, dtype=dtypes.int32)
  # out[r] = the element whose rank is r: a one-hot over (..., r, i) summed over i
  places = rank.unsqueeze(-2) == T.arange(k, dtype=dtypes.int32, device=xs.device).reshape(k, 1)
  picked = xs.cast(dtypes.int32) if xs.dtype == dtypes.bool else xs
  values = picked.unsqueeze(-2).where(places, 0).sum(-1, dtype=picked.dtype).cast(xs.dtype)
  return values, idx.reshape(1, n).where(places, 0).sum(-1, dtype=dtypes.int32)


def _bitonic_sort(xs: Any, descending: bool, k: int) -> tuple[Any, Any]:
  """Sort the last axis with a bitonic network: log2(P)(log2(P)+1)/2 compare-exchange steps over P = 2^m >= n places.

  In each step every place meets one partner: viewing the places as (blocks, 2, half), the partner
  is the same spot in the other half (a flip of the size-2 axis), mirrored within the half in the
  first step of each merge. A place in a first half keeps whichever of the pair goes first, one in a
  second half the other: elementwise work over movement ops. Places past n are padding that sorts
  after every element. Values travel with their original index, which breaks ties (stable).
  """
  n = xs.shape[-1]
  P = 1 << (n - 1).bit_length()
  lead = xs.shape[:-1]
  T = type(xs)
  vals = _last_axis_pad(xs, P - n)
  idx = T.arange(P, dtype=dtypes.int32, device=xs.device)._expand_to(lead + (P,))

  def goes_first(va: Any, ia: Any, vb: Any, ib: Any) -> Any:
    real_a, real_b = ia < n, ib < n
    return (real_a & real_b.logical_not()) | (real_a & real_b & _before(va, vb, ia, ib, descending)) | \
           (real_a.logical_not() & real_b.logical_not() & (ia < ib))

  def step(v: Any, i: Any, half: int, mirror: bool) -> tuple[Any, Any]:
    shape = (*lead, P // (2 * half), 2, half)
    v, i = v.reshape(shape), i.reshape(shape)
    flips = (-2, -1) if mirror else (-2,)
    pv, pi = v.flip(flips), i.flip(flips)
    in_first = T.arange(2, dtype=dtypes.int32, device=xs.device).reshape(2, 1) == 0
    take_partner = goes_first(pv, pi, v, i).where(in_first, goes_first(v, i, pv, pi))
    return pv.where(take_partner, v).reshape(*lead, P), pi.where(take_partner, i).reshape(*lead, P)

  steps, block = 0, 2
  while block <= P:
    half = block // 2
    while half >= 1:
      vals, idx = step(vals, idx, half, mirror=half == block // 2)
      steps, half = steps + 1, half // 2
      if steps % _SORT_STEPS_PER_KERNEL == 0 and not (block == P and half == 0): vals, idx = _boundary(vals), _boundary(idx)
    block *= 2
  return vals[..., :k], idx[..., :k]


class SortMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  def sort(self: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> ValuesIndices:
    """Sorted values along `dim` and the indices they came from. Always stable (equal elements keep their order); NaN sorts as the largest value."""
    return _sort(self, _dim("sort", dim, self.ndim), descending)

  def argsort(self: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
    return self.sort(dim, descending, stable).indices

  def topk(self: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:
    """The k largest (or smallest) elements along `dim`, in sorted order, with their indices."""
    d = _dim("topk", dim, self.ndim)
    n = self.shape[d] if self.ndim else 1
    if not 0 <= k <= n: raise RuntimeError(f"topk: k={k} is out of range for a dimension of size {n}")
    return _sort(self, d, largest, k)


def sort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> ValuesIndices: return input.sort(dim, descending, stable)
def argsort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Any: return input.argsort(dim, descending, stable)
def topk(input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:
  return input.topk(k, dim, largest, sorted)
