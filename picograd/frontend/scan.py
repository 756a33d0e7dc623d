"""Scans, scatter/gather-style ops and einsum (cumprod, cummax, scatter, nonzero, einsum, ...) (frontend layer).

Everything here is built from movement ops, elementwise ops and ADD/MAX reductions, so it has
gradients through the primitives' chain rules and runs on every device:

- products (`prod`, `cumprod`, scatter's "prod") multiply in a tree of pairwise-grouped levels
  (there is no multiplicative reduction primitive); the chain rule through MUL gives the exact
  gradient even where inputs are zero, which out/x would not;
- scans (`cumprod`, `cummax`, `cummin`, `logcumsumexp`) are Hillis-Steele: log2(n) steps that
  each combine every element with the one 2^s before it, realized every few steps so that the
  fused expression does not double in size without bound;
- sorting (sort, argsort, topk) lives in frontend/sort.py;
- scatters compare the index with every output position (a one-hot mask) and reduce the masked
  sources over the index dimension, like `gather` and integer indexing do.

Only ops whose output shape depends on the data (`nonzero`, `masked_select`, `repeat_interleave`
with tensor repeats) read values back to the host.
"""
from __future__ import annotations
import math
from typing import Any, Callable, NamedTuple, Sequence
import numpy as np
from picograd.dtype import dtypes, DType
from picograd.ir.ops import UOp, Ops

# steps of a scan fused into one kernel: each step reads its input at two positions, so a fused
# run of s steps loads 2^s values per element
_SCAN_STEPS_PER_KERNEL = 3
# factors multiplied per level of a product tree (one kernel per level)
_PROD_GROUP = 8


class ValuesIndices(NamedTuple):
  """(values, indices), as torch.return_types.sort/topk/cummax/cummin: unpacks like a tuple, or use `.values`/`.indices`."""
  values: Any
  indices: Any


def _dim(op: str, dim: int, ndim: int) -> int:
  """`dim` normalized into [0, ndim); a 0-d tensor accepts 0 and -1, as in PyTorch. Bad dims raise IndexError."""
  n = max(ndim, 1)
  if not isinstance(dim, int) or isinstance(dim, bool): raise TypeError(f"{op}: dim must be an int, not {type(dim).__name__}")
  if not -n <= dim < n: raise IndexError(f"{op}: dimension {dim} is out of range (expected to be in [{-n}, {n - 1}])")
  return dim % n


def _lowest(dtype: DType) -> float | int | bool:
  """The value no element is below: the identity of max."""
  if dtype.is_float: return -math.inf
  if dtype == dtypes.bool: return False
  return int(np.iinfo(dtype.np).min)


def _highest(dtype: DType) -> float | int | bool:
  if dtype.is_float: return math.inf
  if dtype == dtypes.bool: return True
  return int(np.iinfo(dtype.np).max)


def _boundary(x: Any) -> Any:
  """`x` realized into a buffer, and its gradient too: a fused chain of steps that each read their input twice would
  load 2^steps values per element in either direction."""
  return x._new(UOp(Ops.CONTIGUOUS, x.dtype, (x.uop,), "backward"))


def _last_axis_pad(x: Any, after: int, value: float | int = 0) -> Any:
  return x.pad(((0, 0),) * (x.ndim - 1) + ((0, after),), value=value)


def _tree_product(x: Any) -> Any:
  """The product over the last axis of `x` (shape (..., n) -> (...)): levels of _PROD_GROUP-way multiplies."""
  n = x.shape[-1]
  # the empty product is 1; built from x so that the result still depends on it (a zero gradient, as in PyTorch)
  if n == 0: return x.sum(-1, dtype=x.dtype) * 0 + 1
  while n > 1:
    group = min(n, _PROD_GROUP)
    groups = -(-n // group)
    x = _last_axis_pad(x, groups * group - n, 1).reshape(*x.shape[:-1], groups, group)
    out = x[..., 0]
    for i in range(1, group): out = out * x[..., i]
    n, x = groups, out
    # a level is a kernel: the next level reads each value `group` times instead of recomputing its subtree
    if n > 1: x = _boundary(x)
  return x[..., 0]


def _hillis_steele(values: list[Any], combine: Callable[[list[Any], list[Any]], list[Any]]) -> list[Any]:
  """Inclusive scan over the last axis of same-shaped tensors: out[i] = combine(out[..i-1], x[i]) for an associative `combine`.

  `combine(earlier, later)` takes and returns one tensor per entry of `values`.
  """
  n = values[0].shape[-1]
  if n <= 1: return values
  first = values[0]
  pos = type(first).arange(n, dtype=dtypes.int32, device=first.device)
  shift, step = 1, 0
  while shift < n:
    # the element `shift` places earlier (padding fills the first `shift` places, which keep their value)
    earlier = [v.pad(((0, 0),) * (v.ndim - 1) + ((shift, 0),))[..., :n] for v in values]
    combined = combine(earlier, values)
    values = [c.where(pos >= shift, v) for c, v in zip(combined, values)]
    shift, step = shift * 2, step + 1
    if shift < n and step % _SCAN_STEPS_PER_KERNEL == 0: values = [_boundary(v) for v in values]
  return values


def _parse_einsum(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[list[str]], list[str]]:
  """Per operand its labels (ellipsis dims become labels '.0', '.1', ... aligned from the right), and the output labels."""
  eq = equation.replace(" ", "")
  lhs, arrow, rhs = eq.partition("->")
  terms = lhs.split(",")
  if len(terms) != len(shapes):
    raise RuntimeError(f"einsum(): the equation {equation!r} names {len(terms)} operand(s) but {len(shapes)} were given")

  def letters(term: str, what: str) -> list[str]:
    if term.count("...") > 1: raise RuntimeError(f"einsum(): {what} {term!r} has more than one ellipsis")
    out = []
    for part_i, part in enumerate(term.split("...")):
      if part_i: out.append("...")
      for c in part:
        if not c.isascii() or not c.isalpha(): raise RuntimeError(f"einsum(): invalid subscript {c!r} in {what} {term!r}")
        out.append(c)
    return out

  ops = [letters(t, "operand") for t in terms]
  n_ell = 0
  for labels, shape in zip(ops, shapes):
    named = len(labels) - labels.count("...")
    if ("..." in labels and named > len(shape)) or ("..." not in labels and named != len(shape)):
      raise RuntimeError(f"einsum(): subscripts {''.join(labels)!r} do not fit an operand with {len(shape)} dimension(s)")
    if "..." in labels: n_ell = max(n_ell, len(shape) - named)
  ell = [f".{i}" for i in range(n_ell)]
  expanded = []
  for labels, shape in zip(ops, shapes):
    if "..." in labels:
      i, e = labels.index("..."), len(shape) - (len(labels) - 1)
      labels = labels[:i] + ell[n_ell - e:] + labels[i + 1:]
    expanded.append(labels)
  if arrow:
    out = letters(rhs, "output")
    if "..." in out: out = out[:out.index("...")] + ell + out[out.index("...") + 1:]
    seen = [l for labels in expanded for l in labels]
    for l in out:
      if out.count(l) > 1: raise RuntimeError(f"einsum(): output subscript {l!r} appears more than once")
      if l not in seen: raise RuntimeError(f"einsum(): output subscript {l!r} does not appear in the operands")
  else:
    counts: dict[str, int] = {}
    for labels in expanded:
      for l in labels: counts[l] = counts.get(l, 0) + 1
    out = ell + sorted(l for l, c in counts.items() if c == 1 and not l.startswith("."))
  return expanded, out


def _take_diagonals(t: Any, labels: list[str]) -> tuple[Any, list[str]]:
  """An operand with a repeated label (einsum's "ii") reduced to its diagonal, once per repeat."""
  while len(set(labels)) != len(labels):
    l = next(l for l in labels if labels.count(l) > 1)
    d1 = labels.index(l)
    d2 = labels.index(l, d1 + 1)
    if t.shape[d1] != t.shape[d2]:
      raise RuntimeError(f"einsum(): subscript {l!r} is repeated for dimensions of sizes {t.shape[d1]} and {t.shape[d2]}")
    t = t.diagonal(0, d1, d2)
    labels = [x for i, x in enumerate(labels) if i not in (d1, d2)] + [l]
  return t, labels


def _align(t: Any, labels: list[str], order: list[str]) -> Any:
  """`t` permuted into `order` (a superset of `labels`), with size-1 dims for the labels it lacks."""
  present = [l for l in order if l in labels]
  t = t.permute([labels.index(l) for l in present])
  return t.reshape([t.shape[present.index(l)] if l in labels else 1 for l in order])


def einsum(equation: str, *operands: Any) -> Any:
  """torch.einsum: implicit and explicit output, repeated subscripts (diagonals), ellipsis broadcasting.

  Operands are contracted left to right as broadcast products summed over the labels no later
  operand and not the output needs: each contraction is one fused multiply-reduce (a matmul when
  the labels say so), and a label is summed as soon as possible so the product space stays small.
  """
  if len(operands) == 1 and isinstance(operands[0], (list, tuple)): operands = tuple(operands[0])
  if not operands: raise RuntimeError("einsum(): must provide at least one operand")
  dev = operands[0].device
  for o in operands:
    if o.device != dev: raise RuntimeError(f"einsum(): operands are on different devices ({dev} and {o.device})")
  op_labels, out = _parse_einsum(equation, [tuple(o.shape) for o in operands])
  pairs = [_take_diagonals(o, labels) for o, labels in zip(operands, op_labels)]
  sizes: dict[str, int] = {}
  for t, labels in pairs:
    for l, size in zip(labels, t.shape):
      if sizes.setdefault(l, size) != size and 1 not in (size, sizes[l]):
        raise RuntimeError(f"einsum(): subscript {'...' if l.startswith('.') else l!r} has sizes {sizes[l]} and {size} that do not broadcast")
      if sizes[l] == 1: sizes[l] = size
  acc, acc_labels = None, list[str]()
  for i, (t, labels) in enumerate(pairs):
    order = acc_labels + [l for l in labels if l not in acc_labels]
    t = _align(t, labels, order)
    acc = t if acc is None else acc.reshape(list(acc.shape) + [1] * (len(order) - acc.ndim)) * t
    needed = set(out) | {l for _, later in pairs[i + 1:] for l in later}
    done = [d for d, l in enumerate(order) if l not in needed]
    if done: acc = acc.sum(done)
    acc_labels = [l for l in order if l in needed]
  assert acc is not None, "einsum has at least one operand"
  return acc.permute([acc_labels.index(l) for l in out])


def meshgrid(*tensors: Any, indexing: str = "ij") -> tuple[Any, ...]:
  """torch.meshgrid: coordinate grids from 1-D tensors. "ij" is matrix indexing; "xy" swaps the first two dims (Cartesian)."""
  if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)): tensors = tuple(tensors[0])
  if indexing not in ("ij", "xy"): raise RuntimeError(f"meshgrid: indexing must be 'ij' or 'xy', not {indexing!r}")
  if not tensors: raise RuntimeError("meshgrid: expects a non-empty list of tensors")
  for t in tensors:
    if t.ndim > 1: raise RuntimeError(f"meshgrid: expects 0-d or 1-d tensors, got shape {tuple(t.shape)}")
  flat = [t.reshape(-1) for t in tensors]
  axes = list(range(len(flat)))
  if indexing == "xy" and len(flat) >= 2: axes[0], axes[1] = 1, 0
  shape = [0] * len(flat)
  for t, a in zip(flat, axes): shape[a] = t.shape[0]
  return tuple(t.reshape([t.shape[0] if d == a else 1 for d in range(len(flat))]).expand(shape) for t, a in zip(flat, axes))


def repeat_interleave(input: Any, repeats: Any = None, dim: int | None = None, output_size: int | None = None) -> Any:
  """torch.repeat_interleave; with only a tensor of repeats, the indices 0, 1, ... each repeated that often."""
  if repeats is None:
    counts = input
    return type(counts).arange(counts.shape[0] if counts.ndim else 1, device=counts.device).repeat_interleave(counts, 0, output_size)
  return input.repeat_interleave(repeats, dim, output_size)


class ScanMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  # ---------------------------------------------------------------- reductions: products and truth
  def prod(self: Any, dim: int | None = None, keepdim: bool = False, dtype: DType | None = None) -> Any:
    """Product of the elements (over `dim`). Integers and bools multiply in int64, as in PyTorch."""
    acc = dtypes.from_any(dtype) if dtype is not None else (self.dtype if self.dtype.is_float else dtypes.int64)
    x = self.cast(acc)
    if dim is None:
      out = _tree_product(x.reshape(-1))
      return out.reshape((1,) * self.ndim) if keepdim else out
    d = _dim("prod", dim, self.ndim)
    if self.ndim == 0: return x
    out = _tree_product(x.transpose(d, -1))
    out = out.reshape(out.shape + (1,)).transpose(d, -1)
    return out if keepdim else out.squeeze(d)

  def any(self: Any, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Any:
    """Whether any element (over `dim`) is nonzero; False over an empty dim."""
    self._axes("any", dim)
    nonzero = self if self.dtype == dtypes.bool else self != 0
    return nonzero.sum(dim, keepdim) > 0

  def all(self: Any, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Any:
    """Whether every element (over `dim`) is nonzero; True over an empty dim."""
    self._axes("all", dim)
    zero = self.logical_not() if self.dtype == dtypes.bool else self == 0
    return zero.sum(dim, keepdim) == 0

  # ---------------------------------------------------------------- movement: roll, diagonals, repeats
  def roll(self: Any, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None) -> Any:
    """Shift elements along `dims` circularly (elements past the end come back at the start). No dims: the flattened tensor."""
    if dims is None:
      if not isinstance(shifts, int):
        if len(shifts) != 1: raise RuntimeError(f"roll: {len(shifts)} shifts need as many dims")
        shifts = shifts[0]
      return self.flatten().roll(shifts, 0).reshape(self.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims): raise RuntimeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    x = self
    for s, d in zip(shifts, dims):
      d = _dim("roll", d, self.ndim)
      n = x.shape[d] if x.ndim else 1
      if n == 0 or s % n == 0 or x.ndim == 0: continue
      s %= n
      head = x.shrink([(n - s, n) if i == d else None for i in range(x.ndim)])
      tail = x.shrink([(0, n - s) if i == d else None for i in range(x.ndim)])
      x = head.cat(tail, dim=d)
    return x

  def diagonal(self: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
    """The diagonal of the (dim1, dim2) planes as a new last dim; offset > 0 is above the main diagonal."""
    d1, d2 = _dim("diagonal", dim1, self.ndim), _dim("diagonal", dim2, self.ndim)
    if self.ndim < 2: raise RuntimeError(f"diagonal: needs at least 2 dimensions, got shape {tuple(self.shape)}")
    if d1 == d2: raise RuntimeError(f"diagonal: dim1 and dim2 cannot be the same dimension ({dim1}, {dim2})")
    x = self.permute([i for i in range(self.ndim) if i not in (d1, d2)] + [d1, d2])
    r, c = x.shape[-2:]
    m = max(0, min(r, c - offset) if offset >= 0 else min(r + offset, c))
    row0, col0 = (0, offset) if offset >= 0 else (-offset, 0)
    if m == 0: row0 = col0 = 0
    lead = x.shape[:-2]
    sq = x.shrink([None] * len(lead) + [(row0, row0 + m), (col0, col0 + m)])
    # in the flattened m x m square, (i, i) sits at i * (m + 1): pad to m rows of m + 1 and keep column 0
    flat = _last_axis_pad(sq.reshape(*lead, m * m), m)
    return flat.reshape(*lead, m, m + 1)[..., 0]

  def diag(self: Any, diagonal: int = 0) -> Any:
    """A 1-D tensor becomes a square matrix with it on the `diagonal`-th diagonal; a 2-D tensor gives that diagonal."""
    if self.ndim == 2: return self.diagonal(diagonal, 0, 1)
    if self.ndim != 1: raise RuntimeError(f"diag: expects a 1-D or 2-D tensor, got shape {tuple(self.shape)}")
    n = self.shape[0]
    # the inverse of diagonal's trick: row i of an n x (n + 1) matrix holds x[i] then zeros; its first n*n flattened
    # elements, viewed as n x n, put x[i] at (i, i)
    sq = _last_axis_pad(self.reshape(n, 1), n).reshape(n * (n + 1))[:n * n].reshape(n, n)
    k = abs(diagonal)
    return sq.pad(((0, k), (k, 0)) if diagonal >= 0 else ((k, 0), (0, k)))

  def repeat_interleave(self: Any, repeats: Any, dim: int | None = None, output_size: int | None = None) -> Any:
    """Repeat each element `repeats` times along `dim` (the flattened tensor when dim is None).

    Integer repeats are a broadcast (no copy); a tensor of per-element repeats is read on the
    host, since it decides the output's shape.
    """
    x = self.flatten() if dim is None else self
    d = 0 if dim is None else _dim("repeat_interleave", dim, self.ndim)
    if x.ndim == 0: x = x.reshape(1)
    n = x.shape[d]
    if isinstance(repeats, int):
      if repeats < 0: raise RuntimeError(f"repeat_interleave: repeats must be non-negative, got {repeats}")
      out = x.unsqueeze(d + 1)
      out = out.expand(*out.shape[:d + 1], repeats, *out.shape[d + 2:])
      return out.reshape(*x.shape[:d], n * repeats, *x.shape[d + 1:])
    counts = np.asarray(repeats.numpy() if hasattr(repeats, "numpy") else repeats).reshape(-1)
    if counts.dtype.kind not in "iu": raise RuntimeError(f"repeat_interleave: repeats must be integers, not {counts.dtype}")
    if counts.size == 1: counts = np.repeat(counts, n)
    if counts.size != n: raise RuntimeError(f"repeat_interleave: {counts.size} repeats for a dimension of size {n}")
    if (counts < 0).any(): raise RuntimeError("repeat_interleave: repeats must be non-negative")
    if output_size is not None and output_size != int(counts.sum()):
      raise RuntimeError(f"repeat_interleave: output_size={output_size} but the repeats add up to {int(counts.sum())}")
    picks = np.repeat(np.arange(n, dtype=np.int64), counts)
    return x[(slice(None),) * d + (type(self)(picks, device=self.device),)]

  # ---------------------------------------------------------------- scans
  def _scan(self: Any, op: str, dim: int, combine: Callable[[list[Any], list[Any]], list[Any]], with_index: bool = False) -> list[Any]:
    d = _dim(op, dim, self.ndim)
    x = self.reshape(1) if self.ndim == 0 else self
    xs = [x.transpose(d, -1)]
    if with_index:
      n = xs[0].shape[-1]
      xs.append(type(self).arange(n, dtype=dtypes.int64, device=self.device)._expand_to(xs[0].shape))
    out = _hillis_steele(xs, combine)
    return [o.transpose(d, -1).reshape(self.shape) for o in out]

  def cumprod(self: Any, dim: int, dtype: DType | None = None) -> Any:
    """Running product along `dim` (integers and bools in int64). The gradient is exact where elements are zero."""
    acc = dtypes.from_any(dtype) if dtype is not None else (self.dtype if self.dtype.is_float else dtypes.int64)
    return self.cast(acc)._scan("cumprod", dim, lambda a, b: [a[0] * b[0]])[0]

  def _cum_extreme(self: Any, op: str, dim: int, larger: bool) -> ValuesIndices:
    def combine(earlier: list[Any], later: list[Any]) -> list[Any]:
      (v1, i1), (v2, i2) = earlier, later
      # the later element wins ties (PyTorch gives the last index of the running extreme) and a NaN stays once seen
      # spelled with strict compares and ==, which are false against NaN (a negated < would not be)
      take = ((v1 < v2) if larger else (v2 < v1)) | (v1 == v2)
      if v2.dtype.is_float: take = take | v2.isnan()
      return [v2.where(take, v1), i2.where(take, i1)]
    values, indices = self._scan(op, dim, combine, with_index=True)
    return ValuesIndices(values, indices)

  def cummax(self: Any, dim: int) -> ValuesIndices:
    """Running maximum along `dim` and the index where it was found (the latest one on ties; NaN propagates)."""
    return self._cum_extreme("cummax", dim, True)

  def cummin(self: Any, dim: int) -> ValuesIndices:
    """Running minimum along `dim` and the index where it was found (the latest one on ties; NaN propagates)."""
    return self._cum_extreme("cummin", dim, False)

  def logcumsumexp(self: Any, dim: int) -> Any:
    """log(cumsum(exp(x))) along `dim`, computed without overflow as a scan of pairwise log-add-exp."""
    def combine(earlier: list[Any], later: list[Any]) -> list[Any]:
      a, b = earlier[0], later[0]
      hi, lo = a.maximum(b), a.minimum(b)
      finite = hi.abs() < math.inf
      # where hi is infinite (or NaN) the result is hi; elsewhere exp sees a non-positive, finite-or--inf argument,
      # so neither branch's gradient meets inf - inf
      gap = (lo - hi.where(finite, 0)).where(finite, -math.inf)
      return [(hi + (gap.exp() + 1).log()).where(finite, hi)]
    x = self._float()
    return x._scan("logcumsumexp", dim, combine)[0]

  # ---------------------------------------------------------------- scatter and selection
  def _scatter_parts(self: Any, op: str, dim: int, index: Any, src: Any) -> tuple[int, Any, Any]:
    """For index positions (..., k) along `dim` (moved last): the one-hot (..., k, n) of their targets and the sources (..., k, 1)."""
    d = _dim(op, dim, self.ndim)
    if index.dtype.is_float or index.dtype == dtypes.bool: raise RuntimeError(f"{op}: index must be an integer tensor, not {index.dtype.name}")
    if index.device != self.device: raise RuntimeError(f"{op}: index on {index.device} but the tensor is on {self.device}")
    if not isinstance(src, type(self)): src = type(self).full(index.shape, src, dtype=self.dtype, device=self.device)
    if src.device != self.device: raise RuntimeError(f"{op}: src on {src.device} but the tensor is on {self.device}")
    if not (index.ndim == src.ndim == self.ndim):
      raise RuntimeError(f"{op}: index {tuple(index.shape)}, src {tuple(src.shape)} and self {tuple(self.shape)} must have the same number of dims")
    for i, k in enumerate(index.shape):
      if k > src.shape[i] or (i != d and k > self.shape[i]):
        raise RuntimeError(f"{op}: index of shape {tuple(index.shape)} does not fit src {tuple(src.shape)} and self {tuple(self.shape)} "
                           f"outside dimension {d}")
    if self.ndim == 0: return d, index.reshape(1, 1) == 0, src.cast(self.dtype).reshape(1, 1)
    n = self.shape[d]
    index = index._check((index >= 0) & (index < n), RuntimeError, f"{op}: index out of bounds for dimension {d} with size {n}")
    src = src.shrink([(0, k) for k in index.shape]).cast(self.dtype)
    targets = index.transpose(d, -1).unsqueeze(-1) == type(self).arange(n, dtype=index.dtype, device=self.device)
    return d, targets, src.transpose(d, -1).unsqueeze(-1)

  def _scatter_place(self: Any, d: int, reduced: Any) -> Any:
    """(..., n) results over index's other dims, padded out to self's and moved back to `dim`."""
    if self.ndim == 0: return reduced.reshape(())
    out = reduced.transpose(d, -1)
    return out.pad([(0, s - r) for s, r in zip(self.shape, out.shape)])

  def _scatter_reduced(self: Any, op: str, dim: int, index: Any, src: Any, reduce: str, with_self: bool = False) -> tuple[Any, Any]:
    """(the reduction of the sources sent to each element, how many were sent there) for sum/prod/amax/amin.

    `with_self` (amax/amin only) reduces each element's old value together with its sources, so
    that a gradient splits evenly among all tied maxima, self included, as PyTorch's does.
    """
    d, targets, srcs = self._scatter_parts(op, dim, index, src)
    count = self._scatter_place(d, targets.sum(-2))
    if reduce == "sum": red = srcs.where(targets, 0).sum(-2, dtype=self.dtype)
    elif reduce == "prod": red = _tree_product(srcs.where(targets, 1).transpose(-2, -1)) if targets.shape[-2] else srcs.sum(-2) + 1
    elif reduce in ("amax", "amin"):
      cands = srcs.where(targets, _lowest(self.dtype) if reduce == "amax" else _highest(self.dtype))
      if with_self:
        own = self.reshape(1, 1) if self.ndim == 0 else self.transpose(d, -1).shrink([(0, s) for s in targets.shape[:-2]] + [None])
        cands = cands.cat(own.unsqueeze(-2), dim=-2)
      if cands.shape[-2] == 0: red = targets.sum(-2).cast(self.dtype)  # nothing sent anywhere: count is 0, self is kept
      else: red = cands.max(-2) if reduce == "amax" else cands.min(-2)
    else: raise RuntimeError(f"{op}: reduce must be one of 'sum', 'prod', 'mean', 'amax', 'amin', not {reduce!r}")
    return self._scatter_place(d, red.cast(self.dtype)), count

  def scatter(self: Any, dim: int, index: Any, src: Any = None, value: Any = None, reduce: str | None = None) -> Any:
    """out[index[i][j]][j] = src[i][j] for dim=0 (PyTorch's scatter); `src` may be a scalar (or pass `value=`).

    `reduce="add"`/`"multiply"` combine with the old value instead of replacing it. Where an index
    repeats, the last source wins.
    """
    if src is None: src = value
    if src is None: raise TypeError("scatter: pass src (a tensor or scalar) or value")
    if reduce is not None:
      kinds = {"add": "sum", "multiply": "prod"}
      if reduce not in kinds: raise RuntimeError(f"scatter: reduce must be 'add' or 'multiply', not {reduce!r}")
      return self.scatter_reduce(dim, index, src, kinds[reduce], include_self=True)
    d, targets, srcs = self._scatter_parts("scatter", dim, index, src)
    k = targets.shape[-2]
    if k == 0: return self
    # the last index position that writes each element wins (what a sequential loop does)
    order = type(self).arange(k, dtype=dtypes.int32, device=self.device).reshape(k, 1)
    last = order.where(targets, -1).max(-2, keepdim=True)
    winner = targets & (order == last)
    sent = self._scatter_place(d, srcs.where(winner, 0).sum(-2, dtype=self.dtype).cast(self.dtype))
    count = self._scatter_place(d, targets.sum(-2))
    return sent.where(count > 0, self)

  def scatter_add(self: Any, dim: int, index: Any, src: Any) -> Any:
    return self.scatter_reduce(dim, index, src, "sum", include_self=True)

  def scatter_reduce(self: Any, dim: int, index: Any, src: Any, reduce: str, include_self: bool = True) -> Any:
    """Reduce the sources sent to each element ("sum", "prod", "mean", "amax", "amin"), with or without its old value."""
    if reduce == "mean":
      total, count = self._scatter_reduced("scatter_reduce", dim, index, src, "sum")
      if include_self: total, count = total + self, count + 1
      mean = total.div(count.cast(total.dtype), rounding_mode=None if self.dtype.is_float else "floor").cast(self.dtype)
      return mean.where(count > 0, self)
    red, count = self._scatter_reduced("scatter_reduce", dim, index, src, reduce, with_self=include_self and reduce in ("amax", "amin"))
    if include_self and reduce == "sum": red = red + self
    if include_self and reduce == "prod": red = red * self
    return red.where(count > 0, self)

  def masked_select(self: Any, mask: Any) -> Any:
    """The elements where `mask` (broadcast with self) is True, as a 1-D tensor. The mask is read on the host (it decides the size)."""
    if mask.dtype != dtypes.bool: raise RuntimeError(f"masked_select: mask must be a bool tensor, not {mask.dtype.name}")
    x = self.where(mask, self)  # broadcasts self and mask together (the values are self's, the graph keeps its gradient)
    flat = x.reshape(-1)
    where = np.flatnonzero(np.broadcast_to(mask.numpy(), x.shape))
    return flat[type(self)(where.astype(np.int64), device=self.device)]

  def nonzero(self: Any, as_tuple: bool = False) -> Any:
    """Indices of the nonzero elements: an (N, ndim) int64 tensor, or a tuple of ndim 1-D tensors. Read on the host."""
    host = self.numpy()
    coords = np.nonzero(host.reshape(1) if host.ndim == 0 else host)
    T = type(self)
    if as_tuple: return tuple(T(c.astype(np.int64), device=self.device) for c in coords)
    stacked = np.stack(coords, axis=1).astype(np.int64) if host.ndim else np.zeros((len(coords[0]), 0), dtype=np.int64)
    return T(stacked, device=self.device)


# ---------------------------------------------------------------- torch.* functional forms of the methods above
def prod(input: Any, dim: int | None = None, keepdim: bool = False, dtype: DType | None = None) -> Any: return input.prod(dim, keepdim, dtype)
def cumprod(input: Any, dim: int, dtype: DType | None = None) -> Any: return input.cumprod(dim, dtype)
def cummax(input: Any, dim: int) -> ValuesIndices: return input.cummax(dim)
def cummin(input: Any, dim: int) -> ValuesIndices: return input.cummin(dim)
def logcumsumexp(input: Any, dim: int) -> Any: return input.logcumsumexp(dim)
def roll(input: Any, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None) -> Any: return input.roll(shifts, dims)
def diag(input: Any, diagonal: int = 0) -> Any: return input.diag(diagonal)
def diagonal(input: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any: return input.diagonal(offset, dim1, dim2)
def scatter(input: Any, dim: int, index: Any, src: Any = None, value: Any = None, reduce: str | None = None) -> Any:
  return input.scatter(dim, index, src, value, reduce)
def scatter_add(input: Any, dim: int, index: Any, src: Any) -> Any: return input.scatter_add(dim, index, src)
def scatter_reduce(input: Any, dim: int, index: Any, src: Any, reduce: str, include_self: bool = True) -> Any:
  return input.scatter_reduce(dim, index, src, reduce, include_self)
def masked_select(input: Any, mask: Any) -> Any: return input.masked_select(mask)
def nonzero(input: Any, as_tuple: bool = False) -> Any: return input.nonzero(as_tuple)
