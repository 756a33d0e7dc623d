"""Lowering: a fused kernel graph (tensor-level UOps over PARAMs) becomes scalar code over loop indices.

The kernel iterates over its output shape with one RANGE per dimension; each REDUCE adds
RANGEs for its reduced axes. Movement ops are never copies: each maps the consumer's index
expressions to the producer's (reshape by combining/splitting, permute by reordering, expand
by dropping, shrink by offset, flip by n-1-i, pad by a validity mask that also guards the
load). Integer division and modulo by a value that may be 0 or -1 get a CHECK (division by zero is an
error, as in PyTorch) and a divisor that cannot fault (MIN // -1 traps on x86; PyTorch wraps it to MIN).
Every CHECK gets a bit of the kernel's error word (`Lowerer.checks`) and becomes a condition on the
stored value (`hoist_checks`). The symbolic simplifier then folds the arithmetic (a gated load's index given its gate, so
a pad does not block the folding), and adjacent loops whose accesses are all affine in a mergeable
way are collapsed into one.
"""
from __future__ import annotations
from typing import Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import prod
from picograd.ir.ops import UOp, Ops, ALU, UPat, PatternMatcher, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic

def reduce_identity(op: Ops, dtype: DType):
  if op is Ops.ADD: return False if dtype == dtypes.bool else (0 if not dtype.is_float else 0.0)
  return dtypes.min(dtype)


class Lowerer:
  """Builds the scalar kernel graph. Each REDUCE gets fresh RANGEs (ids from a counter)."""

  def __init__(self, index_dtype: DType):
    self.idt = index_dtype
    self.next_range = 0
    self.checks: dict[tuple[str, str], int] = {}  # (exception name, message) -> its bit in the kernel's error word

  def new_range(self, size: int, kind: str) -> UOp:
    r = UOp(Ops.RANGE, self.idt, (), (self.next_range, size, kind))
    self.next_range += 1
    return r

  def const(self, v: int) -> UOp: return UOp.const(self.idt, v)

  # ---- index maps of the movement ops: consumer's indices -> producer's indices (+ extra validity)
  def map_reshape(self, src_shape: tuple[int, ...], dst_idx: tuple[UOp, ...], dst_shape: tuple[int, ...]) -> tuple[UOp, ...]:
    # through the flat (row-major) position; the simplifier folds the div/mod back when dims line up
    flat = self.const(0)
    for i, d in zip(dst_idx, dst_shape): flat = flat * self.const(d) + i
    out = []
    for k, d in enumerate(src_shape):
      stride = prod(src_shape[k + 1:])
      v = flat.alu(Ops.IDIV, self.const(stride)) if stride != 1 else flat
      out.append(v if k == 0 else v.alu(Ops.MOD, self.const(d)))
    return tuple(out)

  def child_requests(self, n: UOp, idx: tuple[UOp, ...], valid: UOp) -> list[tuple[UOp, tuple[UOp, ...], UOp]]:
    """(source, its indices, its validity) for each source `n` reads, from the index maps below."""
    if n.op in ALU or n.op is Ops.DETACH: return [(s, idx, valid) for s in n.src]
    if n.op not in INDEX_MAPS: raise NotImplementedError(f"lowering has no rule for {n.op}")
    return INDEX_MAPS[n.op](self, n, idx, valid)

  def pad_valid(self, n: UOp, idx: tuple[UOp, ...]) -> UOp:
    cond = UOp.const(dtypes.bool, True)
    for i, d, (before, after) in zip(idx, n.src[0].tshape, n.arg):
      if before: cond = cond & (i < self.const(before)).alu(Ops.XOR, UOp.const(dtypes.bool, True))
      if after: cond = cond & (i < self.const(before + d))
    return cond

  def check(self, value: UOp, bad: UOp, arg: tuple[str, str]) -> UOp:
    """`value`, and the bit of `arg` set in the error word where `bad` holds. `bad` includes the lowering's validity
    (a padded region's gated loads read stand-in data, which must not raise)."""
    # 63 distinct checks in one kernel share the last bit rather than overflow the int64 word
    bit = self.checks.setdefault(arg, min(len(self.checks), 62))
    return UOp(Ops.CHECK, value.dtype, (value, bad, UOp.const(dtypes.int64, 1 << bit)), arg)

  def safe_divide(self, op: Ops, a: UOp, d: UOp, valid: UOp) -> UOp:
    """Integer a // d or a % d (C semantics) that never faults: a divisor of 0 raises after the kernel (and divides
    by 1 meanwhile); -1 gives -a and 0 without dividing, because MIN / -1 overflows (x86 traps; PyTorch wraps to MIN)."""
    signed = not d.dtype.is_unsigned and d.dtype != dtypes.bool
    lo, hi = d.vmin, d.vmax
    if not (lo <= 0 <= hi or (signed and lo <= -1 <= hi)): return UOp(op, a.dtype, (a, d))
    if lo <= 0 <= hi: d = self.check(d, valid & d.ne(0).alu(Ops.XOR, UOp.const(dtypes.bool, True)), ("RuntimeError", "ZeroDivisionError"))
    normal = d.ne(0) & d.ne(-1) if signed else d.ne(0)
    q = UOp(op, a.dtype, (a, normal.where(d, UOp.const(d.dtype, 1))))
    # x % 1 is 0, which is also x % -1; x // -1 is -x (wrapping)
    return d.ne(-1).where(q, -a) if op is Ops.IDIV and signed else q

  def reduce_index(self, n: UOp, idx: tuple[UOp, ...]) -> tuple[UOp, ...]:
    key = (n, idx)
    if key not in self.reduce_ranges:
      self.reduce_ranges[key] = {a: self.new_range(n.src[0].tshape[a], "reduce") for a in n.arg[1]}
    rngs = self.reduce_ranges[key]
    return tuple(rngs.get(a, i) for a, i in enumerate(idx))

  def build(self, n: UOp, children: list[UOp], idx: tuple[UOp, ...], valid: UOp) -> UOp:
    """The scalar value of `n` at `idx`, from its sources' values `children` (the builders below)."""
    if n.op in BUILDERS: return BUILDERS[n.op](self, n, children, idx, valid)
    if n.op in ALU: return UOp(n.op, n.dtype, tuple(children), n.arg)
    return children[0]  # movement ops and DETACH only changed the indices

  def _load(self, n: UOp, children: list[UOp], idx: tuple[UOp, ...], valid: UOp) -> UOp:
    index = idx[0] if valid.op is Ops.CONST and valid.arg else valid.where(idx[0], self.const(0))
    return UOp(Ops.LOAD, n.dtype, (n, index))

  def _reduce(self, n: UOp, children: list[UOp], idx: tuple[UOp, ...], valid: UOp) -> UOp:
    return UOp(Ops.REDUCE, n.dtype, (children[0], *self.reduce_ranges[(n, idx)].values()), n.arg[0])

  def _permute(self, n: UOp, idx: tuple[UOp, ...], valid: UOp) -> list[tuple[UOp, tuple[UOp, ...], UOp]]:
    inv = [0] * len(n.arg)
    for i, p in enumerate(n.arg): inv[p] = i
    return [(n.src[0], tuple(idx[inv[k]] for k in range(len(inv))), valid)]

  def lower(self, values: list[UOp], idx: tuple[UOp, ...]) -> list[UOp]:
    """The scalar values of `values` (a kernel's outputs) at indices `idx`, built without recursion (kernels can be 10,000
    nodes deep). One walk for all outputs, so what they share is built once, over the same loops."""
    self.reduce_ranges: dict = {}
    true = UOp.const(dtypes.bool, True)
    self.memo: dict[tuple, UOp] = {}
    memo = self.memo
    stack: list[tuple[UOp, tuple, UOp, bool]] = [(value, idx, true, False) for value in values]
    while stack:
      n, i, v, ready = stack.pop()
      if (n, i, v) in memo: continue
      reqs = self.child_requests(n, i, v)
      if not ready:
        stack.append((n, i, v, True))
        stack.extend((c, ci, cv, False) for c, ci, cv in reqs if (c, ci, cv) not in memo)
      else:
        memo[(n, i, v)] = self.build(n, [memo[r] for r in reqs], i, v)
    return [memo[(value, idx, true)] for value in values]

  def read_at(self, value: UOp) -> tuple[tuple[UOp, ...], UOp]:
    """Where the last `lower` walk read `value`, and its scalar there: for an output another output reads (a row statistic
    read by the weighted sum beside it), which must be read at one position."""
    true = UOp.const(dtypes.bool, True)
    hits = [(i, scalar) for (n, i, v), scalar in self.memo.items() if n is value and v is true]
    assert len(hits) == 1, f"an output of fewer elements must be read by the kernel's largest output at one position, not {len(hits)}"
    return hits[0]


Requests = list[tuple[UOp, tuple[UOp, ...], UOp]]
# index maps: op -> fn(lowerer, node, its indices, validity) -> what each source is read at. Movement ops are not copies:
# each maps the consumer's indices to the producer's (reshape through the flat position, permute by reordering, expand by
# dropping the index, shrink by an offset, flip by d-1-i, pad by an offset and a validity mask)
INDEX_MAPS: dict[Ops, Callable[[Lowerer, UOp, tuple[UOp, ...], UOp], Requests]] = {
  Ops.PARAM: lambda lw, n, idx, valid: [], Ops.CONST: lambda lw, n, idx, valid: [], Ops.IOTA: lambda lw, n, idx, valid: [],
  Ops.RESHAPE: lambda lw, n, idx, valid: [(n.src[0], lw.map_reshape(n.src[0].tshape, idx, n.tshape), valid)],
  Ops.PERMUTE: Lowerer._permute,
  Ops.EXPAND: lambda lw, n, idx, valid: [(n.src[0], tuple(lw.const(0) if s == 1 and d != 1 else i
                                                          for i, s, d in zip(idx, n.src[0].tshape, n.tshape)), valid)],
  Ops.SHRINK: lambda lw, n, idx, valid: [(n.src[0], tuple(i + lw.const(b) if b else i for i, (b, _) in zip(idx, n.arg)), valid)],
  Ops.FLIP: lambda lw, n, idx, valid: [(n.src[0], tuple(lw.const(d - 1) - i if f else i for i, d, f in zip(idx, n.src[0].tshape, n.arg)), valid)],
  Ops.PAD: lambda lw, n, idx, valid: [(n.src[0], tuple(i - lw.const(b) if b else i for i, (b, _) in zip(idx, n.arg)),
                                       valid & lw.pad_valid(n, idx))],
  Ops.REDUCE: lambda lw, n, idx, valid: [(n.src[0], lw.reduce_index(n, idx), valid)],
}

# builders for the ops that are not rebuilt as they are: op -> fn(lowerer, node, sources' values, indices, validity)
BUILDERS: dict[Ops, Callable[[Lowerer, UOp, list[UOp], tuple[UOp, ...], UOp], UOp]] = {
  Ops.CONST: lambda lw, n, ch, idx, valid: n,
  Ops.IOTA: lambda lw, n, ch, idx, valid: idx[0].cast(n.dtype),
  Ops.PARAM: Lowerer._load,
  Ops.CHECK: lambda lw, n, ch, idx, valid: lw.check(ch[0], valid & ch[1].alu(Ops.XOR, UOp.const(dtypes.bool, True)), n.arg),
  Ops.IDIV: lambda lw, n, ch, idx, valid: lw.safe_divide(n.op, ch[0], ch[1], valid) if n.dtype.is_int else UOp(n.op, n.dtype, tuple(ch), n.arg),
  Ops.MOD: lambda lw, n, ch, idx, valid: lw.safe_divide(n.op, ch[0], ch[1], valid) if n.dtype.is_int else UOp(n.op, n.dtype, tuple(ch), n.arg),
  Ops.PAD: lambda lw, n, ch, idx, valid: lw.pad_valid(n, idx).where(ch[0], UOp.const(n.dtype, 0)),
  Ops.REDUCE: Lowerer._reduce,
}


def index_dtype_for(ast: UOp) -> DType:
  biggest = max((n.size for n in toposort([ast]) if n.shape is not None), default=1)
  return dtypes.int32 if biggest < 2**31 else dtypes.int64


def lower_kernel(ast: UOp) -> UOp:
  """SINK(STORE(PARAM 0, value), ...) -> SINK(STORE(PARAM 0, index, scalar value), ...) over RANGEs, simplified.

  A kernel with several outputs (engine/schedule.py merges elementwise kernels of one loop shape) stores values of one
  shape: they share the loops and the index, and each is stored at the same position in its own buffer. Outputs of
  another shape (a softmax's row max and sum beside the weighted sum that reads them: engine/outputs.py) are stored where
  the largest output reads them, inside its loops (every loop their position ignores stores the same value again)."""
  outs, values = [st.src[0] for st in ast.src], [st.src[1] for st in ast.src]
  lw = Lowerer(index_dtype_for(ast))
  shape = max(values, key=lambda v: prod(v.tshape)).tshape
  ranges = tuple(lw.new_range(s, "global") for s in shape)
  full = [v for v in values if v.tshape == shape]
  lowered = dict(zip(full, lw.lower(full, ranges)))
  at = {v: (ranges, lowered[v]) if v in lowered else lw.read_at(v) for v in values}
  scalars = [hoist_checks(at[v][1]) for v in values]
  def flat(index: tuple[UOp, ...], dims: tuple[int, ...]) -> UOp:
    out = lw.const(0)
    for r, s in zip(index, dims): out = out * lw.const(s) + r
    return out
  out_indices = [flat(at[v][0], v.tshape) for v in values]
  # the SINK's arg is the kernel's signature, every PARAM: an input the simplifier folds away (a zero-size
  # piece of a cat, a pad of an empty tensor) keeps its place, so arguments line up with the schedule's buffers
  signature = tuple(sorted((p for p in toposort([ast]) if p.op is Ops.PARAM), key=lambda p: p.arg[0]))
  stores = tuple(UOp(Ops.STORE, dtypes.void, (out, index, scalar)) for out, index, scalar in zip(outs, out_indices, scalars))
  sink = UOp(Ops.SINK, dtypes.void, stores, signature)
  sink = graph_rewrite(sink, symbolic)
  return merge_loops(simplify_gated_loads(sink))


def _range_plus(u: UOp) -> tuple[UOp, int] | None:
  """(r, c) when `u` is a loop index r plus a constant c (a pad's gate on a shifted window: r + c < k), else None."""
  if u.op is Ops.RANGE: return u, 0
  if u.op is Ops.ADD and u.src[0].op is Ops.RANGE and u.src[1].op is Ops.CONST: return u.src[0], u.src[1].arg
  return None


_strip_checks = PatternMatcher([(UPat(Ops.CHECK, name="c"), lambda c: c.src[0])])


def _free_reduce_ranges(u: UOp) -> list[UOp]:
  """The reduction loops `u` varies with that no REDUCE inside `u` closes over."""
  deps: dict[UOp, frozenset[UOp]] = {}
  for n in toposort([u]):
    if n.op is Ops.RANGE: deps[n] = frozenset([n]) if n.arg[2] == "reduce" else frozenset()
    elif n.op is Ops.REDUCE: deps[n] = deps[n.src[0]] - frozenset(n.src[1:])
    else: deps[n] = frozenset().union(*(deps[s] for s in n.src))
  return sorted(deps[u], key=lambda r: r.arg[0])


def _hoistable(check: UOp) -> UOp | None:
  """The failure condition of a CHECK when it varies with no reduction loop (then it can be a condition on the stored value)."""
  bad = graph_rewrite(graph_rewrite(check.src[1], _strip_checks), symbolic)
  return None if _free_reduce_ranges(bad) else bad


def hoist_checks(value: UOp) -> UOp:
  """A CHECK outside reductions becomes a condition on the stored value: inside the graph CHECK(v, bad, bit) is just v,
  and the value stored is CHECKed against `bad`. So a rewrite that drops a checked value (`x // 0 * 0` folds to 0, a
  WHERE with a constant condition drops a branch) keeps its check, as PyTorch, which computes every op, would raise.
  A check that varies inside a reduction (an index checked in an embedding's backward sum) stays where it is: hoisting
  it would take a loop of its own, and an extra accumulator changes how the CUDA renderer plans the kernel."""
  conditions: dict[tuple[UOp, UOp], tuple[str, str]] = {}
  for c in toposort([value]):
    if c.op is Ops.CHECK and (bad := _hoistable(c)) is not None: conditions.setdefault((bad, c.src[2]), c.arg)
  if not conditions: return value
  value = graph_rewrite(value, PatternMatcher([(UPat(Ops.CHECK, name="c"), lambda c: c.src[0] if _hoistable(c) is not None else None)]))
  for (bad, bit), arg in conditions.items(): value = UOp(Ops.CHECK, value.dtype, (value, bad, bit), arg)
  return value


def _loop_bounds(valid: UOp) -> dict[UOp, tuple[int, int]]:
  """Inclusive bounds on loop indices that the gate `valid` implies: a pad's gate is a conjunction of `r + c < k` and `not (r + c < k)`."""
  bounds: dict[UOp, tuple[int, int]] = {}
  stack = [valid]
  while stack:
    c = stack.pop()
    if c.op is Ops.AND: stack.extend(c.src)
    elif c.op is Ops.CMPLT and (rc := _range_plus(c.src[0])) is not None and c.src[1].op is Ops.CONST:  # r + c < k
      lo, hi = bounds.get(rc[0], (0, rc[0].arg[1] - 1))
      bounds[rc[0]] = (lo, min(hi, c.src[1].arg - rc[1] - 1))
    elif c.op is Ops.XOR and c.src[1].op is Ops.CONST and c.src[1].arg and (lt := c.src[0]).op is Ops.CMPLT \
        and (rc := _range_plus(lt.src[0])) is not None and lt.src[1].op is Ops.CONST:  # not (r + c < k)
      lo, hi = bounds.get(rc[0], (0, rc[0].arg[1] - 1))
      bounds[rc[0]] = (max(lo, lt.src[1].arg - rc[1]), hi)
  return bounds


def _simplify_given(index: UOp, valid: UOp) -> UOp:
  """`index` simplified on the points where `valid` holds (the only ones a gated load reads).

  A pad shifts its index by its leading padding, so through the reshapes behind it the index is
  `(i - 128) // 16 % 4` with i in [0, 192): negative values block the div/mod folding. Under the
  gate i >= 128, so i is rewritten as 128 + i' with i' a stand-in loop over [0, 64), folded, and
  i' put back as i - 128: what remains is the index the unpadded view would have, with unit strides
  where the data has them (which the upcast planner and LLVM's vectorizers need).
  """
  shifted = {r: (lo, hi) for r, (lo, hi) in _loop_bounds(valid).items() if (lo, hi) != (0, r.arg[1] - 1) and lo <= hi}
  if not shifted: return index
  # stand-ins: RANGEs of kind "given" that exist only inside this function
  stand_in = {r: UOp(Ops.RANGE, r.dtype, (), (r.arg[0], hi - lo + 1, "given")) for r, (lo, hi) in shifted.items()}
  folded = graph_rewrite(substitute(index, {r: stand_in[r] + shifted[r][0] for r in shifted}), symbolic)
  return graph_rewrite(substitute(folded, {s: r - shifted[r][0] for r, s in stand_in.items()}), symbolic)


def simplify_gated_loads(sink: UOp) -> UOp:
  """Every gated load `LOAD(buf, valid.where(index, 0))` with its index simplified given `valid` (see _simplify_given)."""
  mapping: dict[UOp, UOp] = {}
  for n in toposort([sink]):
    if n.op is not Ops.LOAD or (w := n.src[1]).op is not Ops.WHERE: continue
    index = _simplify_given(w.src[1], w.src[0])
    if index is not w.src[1]: mapping[w] = w.src[0].where(index, w.src[2])
  return substitute(sink, mapping)


def merge_loops(sink: UOp) -> UOp:
  """Collapse adjacent global loops (outer, inner) when the simplifier can fold every outer*size+inner back into one index.

  The substitution is always correct; it is kept only when no div/mod of the merged index is
  left, i.e. when it makes the loop nest cheaper.
  """
  glob = sorted((n for n in toposort([sink]) if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  k = len(glob) - 1
  while k > 0:
    outer, inner = glob[k - 1], glob[k]
    merged = UOp(Ops.RANGE, outer.dtype, (), (outer.arg[0], outer.arg[1] * inner.arg[1], "global"))
    size = UOp.const(outer.dtype, inner.arg[1])
    candidate = graph_rewrite(substitute(sink, {outer: merged.alu(Ops.IDIV, size), inner: merged.alu(Ops.MOD, size)}), symbolic)
    leftover = any(n.op in (Ops.IDIV, Ops.MOD) and n.src[0] is merged for n in toposort([candidate]))
    if not leftover:
      sink = candidate
      glob[k - 1:k + 1] = [merged]
    k -= 1
  return sink


__all__ = ["lower_kernel", "reduce_identity"]
