"""Computing an expensive term once (codegen layer, CPU): a reduction's terms stored into the output, read back by the output loop.

A row softmax, as lowered, computes exp(x_j - max) twice per element: once per term of the row's sum, and again in the
loop over j that stores exp(x_j - max) / sum. On the CPU that exp (a ~25-op polynomial, codegen/transcendental.py) made
the kernel compute-bound at about half the memory speed. The rule, general over lowered kernels:

    a REDUCE over loop j (inside the output's outer loops) whose value holds an expensive term E(j), and a STORE of the
    kernel's output at an index `base + j' * s` (s != 0, base free of j': one-to-one in the output loop j') whose value
    holds E(j') outside that reduction

becomes: the reduction accumulates `LOAD(out, idx(j), STORE(out, idx(j), E(j)))` (the term stored, read back; LLVM
forwards the store to the load), and the output loop reads `LOAD(out, idx(j'), <the new REDUCE>)` in place of E(j'). A
LOAD's extra sources only order it (ir/ops.py): the STORE is reachable, so linearize emits it inside the reduction's loop,
and the read comes after the reduction, when every term is stored. The row is written twice, both times while it is in
cache. The values are the same bits: E is computed by the same nodes, stored and read at its own dtype (the output's).

Where it does not apply: a cheap term (log_softmax's x - max: reading it back costs as much as computing it), an output
whose dtype differs from E's (float16 softmax computes in float32), an output the kernel reads, or may read: a loop over j'
that still loads a buffer of the output's dtype and size (an in-place assignment's value reads its target elementwise,
as another parameter: it would read a stored term instead of its old element); a store index that is not one-to-one in
j', and a reduction that does not run exactly once per output row before the loop over j': it must depend on all the
global loops outside that loop (the outermost one, which the CPU's threads split, among them) and on no other (softmax
over a non-last axis recomputes its column's sums per element; storing there would write the whole column each time).
NOOPT=1 turns it off (codegen/opt.py).
"""
from __future__ import annotations
from picograd.ir.ops import UOp, Ops, toposort, substitute

# An approximated float32 exp2 is ~25 ALU ops, log2 and sin ~30; the float64 versions stay libm calls (counted as
# TRANSCENDENTAL_COST). A term cheaper than MIN_COST (x - max, (x - mean) * rstd) is recomputed instead: storing and reading it
# back costs about as much.
TRANSCENDENTAL_COST = 20
MIN_COST = 16
_FREE = (Ops.CONST, Ops.RANGE, Ops.PARAM, Ops.LOAD, Ops.REDUCE)


def _varying(root: UOp, loop: UOp) -> set[UOp]:
  """The nodes of `root` (not entering reductions, which run before) whose value changes with `loop`."""
  out: set[UOp] = set()
  for n in toposort([root], stop=lambda x: x.op is Ops.REDUCE):
    if n is loop or (n.op is not Ops.REDUCE and any(s in out for s in n.src)): out.add(n)
  return out


def term_cost(e: UOp, loop: UOp) -> int:
  """ALU ops of `e` that run once per iteration of `loop` (the loop-invariant ones are hoisted out of it)."""
  varying = _varying(e, loop)
  return sum(TRANSCENDENTAL_COST if n.op in (Ops.EXP2, Ops.LOG2, Ops.SIN) else 1 for n in varying if n.op not in _FREE)


def _affine_in(idx: UOp, loop: UOp) -> bool:
  """Is `idx` `loop * s + base` (or `loop + base`, `loop * s`, `loop`) with s a nonzero constant and `base` free of `loop`?"""
  def scaled(u: UOp) -> bool:
    return u is loop or (u.op is Ops.MUL and any(a is loop and b.op is Ops.CONST and b.arg != 0 for a, b in (u.src, u.src[::-1])))
  if scaled(idx): return True
  return idx.op is Ops.ADD and any(scaled(a) and loop not in toposort([b]) for a, b in (idx.src, idx.src[::-1]))


def _may_read_output(value: UOp, out: UOp, g: UOp) -> bool:
  """Does `value` still read, along output loop `g`, a buffer that may be `out` itself? An in-place assignment's value reads
  its target only elementwise (engine/schedule.py gives it a buffer of its own otherwise), as another parameter of the
  output's dtype and size."""
  return any(n.op is Ops.LOAD and n.src[0].op is Ops.PARAM and n.src[0] is not out and n.src[0].dtype == out.dtype and
             n.src[0].arg[1] == out.arg[1] and g in toposort([n.src[1]]) for n in toposort([value], stop=lambda x: x.op is Ops.REDUCE))


def _global_loops(u: UOp) -> set[UOp]: return {n for n in toposort([u]) if n.op is Ops.RANGE and n.arg[2] == "global"}


def _rewrite(sink: UOp, store: UOp, globs: list[UOp]) -> tuple[UOp, str] | None:
  """The kernel with `store`'s first qualifying reduction rewritten (module docstring), and a line saying what was done."""
  out, idx, value = store.src
  idx_loops = _global_loops(idx)
  for r in toposort([value]):
    if r.op is not Ops.REDUCE or len(r.src) != 2: continue
    j, outer = r.src[1], _global_loops(r)
    rest = idx_loops - outer
    if len(rest) != 1: continue
    (g,) = rest
    # the reduction runs once per row, before the output loop over the row: it needs exactly the loops outside g
    if outer != set(globs[:globs.index(g)]) or not outer or g.arg[1] != j.arg[1] or not _affine_in(idx, g): continue
    in_value = set(toposort([value]))
    candidates = [(term_cost(e, j), e) for e in _varying(r.src[0], j) if e.dtype == out.dtype and e.op not in _FREE]
    for cost, e in sorted(candidates, key=lambda c: -c[0]):
      if cost < MIN_COST: break
      if (e_out := substitute(e, {j: g})) not in in_value: continue
      at = substitute(idx, {g: j})
      term = UOp(Ops.LOAD, e.dtype, (out, at, UOp(Ops.STORE, store.dtype, (out, at, e))))
      new_r = UOp(Ops.REDUCE, r.dtype, (substitute(r.src[0], {e: term}), j), r.arg)
      read = UOp(Ops.LOAD, e.dtype, (out, idx, new_r))
      stores = tuple(substitute(st, {r: new_r, e_out: read} if st is store else {r: new_r}) for st in sink.src)
      if any(_may_read_output(st.src[2], out, g) for st in stores): continue
      note = f"terms of reduce loop {j.arg[0]} ({cost} ops each) stored to the output in its loop, read back by output loop {g.arg[0]}"
      return UOp(Ops.SINK, sink.dtype, stores, sink.arg), note
  return None


def store_terms(sink: UOp) -> tuple[UOp, list[str]]:
  """`sink` with each output's expensive reduction term computed once (module docstring), and one line per rewrite."""
  if not sink.src or any(st.op is not Ops.STORE or len(st.src) != 3 or st.arg is not None for st in sink.src): return sink, []
  nodes = toposort([sink])
  if any(n.op in (Ops.RESCALED, Ops.RUNNING_MAX) for n in nodes): return sink, []
  loaded = {n.src[0] for n in nodes if n.op is Ops.LOAD}
  globs = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  notes = []
  outs = [st.src[0] for st in sink.src]
  for out in outs:
    if out.op is not Ops.PARAM or out in loaded or outs.count(out) != 1: continue
    store = next(st for st in sink.src if st.src[0] is out)
    if (done := _rewrite(sink, store, globs)) is not None:
      sink, note = done
      notes.append(note)
  return sink, notes


__all__ = ["store_terms", "term_cost", "TRANSCENDENTAL_COST", "MIN_COST"]
