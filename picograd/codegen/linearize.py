"""Linearizing: the lowered kernel graph becomes a list of instructions with explicit loops.

Output order: PARAMs, then every node after its sources, inside the global loops it needs: those open
lazily, outermost first, so work that depends only on outer loops is not repeated for inner ones.
A REDUCE becomes DEFINE_ACC (before its loops), its RANGEs, the body, ACCUMULATE, the
ENDRANGEs, and a LOAD of the accumulator that later nodes use; REDUCEs over the same RANGEs
(the optimizer's unrolled copies) share that loop nest, and a SINK may hold several STOREs.
Work that does not depend on a reduction's loops is emitted before them, and work that needs only its outer
loops before the inner ones open, so no value is used outside the loop that defines it. A STORE of the SINK that runs
inside a reduction's loops (a GPU plan refilling a shared tile for the next k-step) is that reduction's effect: its
operands are computed as early as their loops allow, and it is written at the end of the loop body, after the
ACCUMULATEs, so the loads it waits for overlap the body's work.
A reduction over one loop RANGE(count, split) is written as two loops, the iterations before `split` and the rest (the
second's index offset by `split`), with FIRST_PART(loop) folded to true in the first body and false in the second; both
add into the same accumulators (their DEFINE_ACC names both loops).
Renderers (LLVM IR, CUDA C) and the PYTHON interpreter all walk this one list.
"""
from __future__ import annotations
import itertools
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.lower import reduce_identity


def loop_deps(nodes: list[UOp]) -> dict[UOp, frozenset[UOp]]:
  """The loops each node's value depends on (a REDUCE's own loops excluded); `nodes` in topological order."""
  deps: dict[UOp, frozenset[UOp]] = {}
  for n in nodes:
    if n.op is Ops.RANGE: deps[n] = frozenset([n])
    elif n.op in (Ops.REDUCE, Ops.RESCALED): deps[n] = frozenset().union(*(deps[s] for s in n.src)) - frozenset(reduce_ranges(n))
    else: deps[n] = frozenset().union(*(deps[s] for s in n.src)) if n.src else frozenset()
  return deps


def reduce_ranges(n: UOp) -> tuple[UOp, ...]:
  """The loops a REDUCE(value, *loops) or RESCALED(term, scale, *loops) closes over."""
  return n.src[2:] if n.op is Ops.RESCALED else n.src[1:]


def linearize(sink: UOp) -> list[UOp]:
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  program: list[UOp] = []
  remap: dict[UOp, UOp] = {}

  def append(n: UOp) -> None:
    new = n if not n.src else UOp(n.op, n.dtype, tuple(remap[s] for s in n.src), n.arg)
    remap[n] = new
    program.append(new)

  # every PARAM of the signature (lowering keeps it in the SINK's arg), also those no load reads any more
  params = sorted({n for n in nodes if n.op is Ops.PARAM} | set(sink.arg or ()), key=lambda p: p.arg[0])
  for p in params: append(p)
  global_ranges = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  ids = itertools.count(max((n.arg[0] for n in nodes if n.op is Ops.RANGE), default=-1) + 1)
  depth = {r: i for i, r in enumerate(global_ranges)}
  opened: list[UOp] = []
  running: dict[tuple[UOp, ...], UOp] = {}  # (x, *loops) -> the accumulator of REDUCE(MAX, x, *loops)
  # STOREs of the SINK inside a reduction's loops: written by the reduction whose loops they run in (see the docstring)
  effects = [s for s in sink.src if s.op is Ops.STORE and any(r.op is Ops.RANGE and r.arg[2] != "global" for r in deps[s])]

  def level(n: UOp) -> int:
    """The innermost global loop `n` needs: it is emitted inside that loop and no deeper."""
    return max((depth[r] for r in deps[n] if r in depth), default=-1)

  def open_loops(k: int) -> None:
    # global loops open lazily, outermost first, so work that needs only the outer loops (a row's
    # max or sum, broadcast back over the row) runs once per row instead of once per element
    while len(opened) <= k:
      opened.append(global_ranges[len(opened)])
      append(opened[-1])

  def emit(roots: list[UOp], allowed: frozenset[UOp]) -> None:
    """Emit `roots` and everything below them not yet emitted; REDUCEs open their own loops."""
    order = toposort(roots, stop=lambda x: x in remap or x.op in (Ops.REDUCE, Ops.RESCALED))
    for n in sorted(order, key=level):  # stable, and a node's sources never need deeper loops than it does
      open_loops(level(n))
      if n in remap: continue  # (a global RANGE is emitted by open_loops)
      if n.op in (Ops.REDUCE, Ops.RESCALED): emit_reduce(n, allowed)
      elif n.op is Ops.RUNNING_MAX:
        # the max accumulator of the same x over the same loop, read (after x) before this iteration updates it
        remap[n] = UOp(Ops.LOAD, n.dtype, (running[n.src], remap[n.src[0]]))
        program.append(remap[n])
      else: append(n)

  def emit_reduce(r: UOp, allowed: frozenset[UOp]) -> None:
    rngs = reduce_ranges(r)
    if any(rng in remap for rng in rngs):
      # these loops already ran for a reduction at another depth (the CPU optimizer's split of a padded loop can leave
      # one outside the global loops, one inside): a RANGE opens one loop nest, so this reduction gets fresh copies
      fresh = {rng: UOp(Ops.RANGE, rng.dtype, (), (next(ids), rng.arg[1], rng.arg[2])) for rng in rngs}
      renamed = substitute(r, fresh)
      deps.update(loop_deps(toposort([renamed])))
      emit_reduce(renamed, allowed)
      remap[r] = remap[renamed]
      return
    # REDUCEs over the very same loops (the optimizer's unrolled copies) share one loop nest, one accumulator each
    group = [x for x in nodes if x.op in (Ops.REDUCE, Ops.RESCALED) and reduce_ranges(x) == rngs and x not in remap
             and deps[x] <= allowed] or [r]
    # a RUNNING_MAX reads the accumulator of the max of its x over these loops: that max joins the group if it is not in it
    # (a rescaled sum given fresh loops above: its max was not renamed with it)
    runs = [n for n in toposort([v for x in group for v in x.src], stop=lambda x: x in remap or x.op in (Ops.REDUCE, Ops.RESCALED))
            if n.op is Ops.RUNNING_MAX and n.src[1:] == rngs]
    group += [m for m in dict.fromkeys(UOp(Ops.REDUCE, n.dtype, n.src, Ops.MAX) for n in runs) if m not in group]
    mine = [e for e in effects if e not in remap and rngs[-1] in deps[e] and deps[e] <= allowed | frozenset(rngs)]
    ops = [Ops.RESCALED if x.op is Ops.RESCALED else x.arg for x in group]
    split = len(rngs) == 1 and len(rngs[0].src) == 2
    parts = _parts(rngs[0], next(ids)) if split else [(rngs, {})]
    # the slot number keeps the accumulators of a group distinct (UOps are hash-consed)
    loops = tuple(r for part, _ in parts for r in part)
    accs = [UOp(Ops.DEFINE_ACC, x.dtype, loops, (0.0 if op is Ops.RESCALED else reduce_identity(op, x.dtype), op, slot))
            for slot, (x, op) in enumerate(zip(group, ops))]
    for part_rngs, at in parts:
      # a split loop's part: its body with the loop replaced by the part's index and FIRST_PART folded; a RUNNING_MAX reads
      # the part's loop
      if at and part_rngs is not parts[0][0]:  # the second part's inner loops (a chain's one-step loop) are its own
        inner = {n for x in group for n in toposort(list(x.src)) if n.op is Ops.RANGE and n.arg[2] != "global" and n not in rngs}
        at = {**at, **{n: UOp(Ops.RANGE, n.dtype, n.src, (next(ids), *n.arg[1:])) for n in inner}}
      if at: at = {**at, **{n: UOp(Ops.RUNNING_MAX, n.dtype, (substitute(n.src[0], at), *part_rngs)) for n in runs}}
      def part_of(u: UOp) -> UOp: return graph_rewrite(substitute(u, at), symbolic) if at else u
      values = [[part_of(v) for v in x.src[:len(x.src) - len(rngs)]] for x in group]
      part_effects = [part_of(e) for e in mine]
      body = [v for vs in values for v in vs] + [s for e in part_effects for s in e.src]
      if at:  # (the part's new nodes join the kernel's, so the reductions inside it group as the original's do)
        order = toposort(body + list(part_rngs))
        nodes.extend(n for n in order if n not in deps)
        deps.update(loop_deps(order))
      # loop-invariant work first, outside the reduction's loops (and the part's trip count)
      invariant = [n for n in toposort(body + [s for r in part_rngs for s in r.src], stop=lambda x: x in remap)
                   if n not in remap and deps[n] <= allowed]
      emit(invariant, allowed)
      if part_rngs is parts[0][0]: program.extend(accs)
      running.update({(vs[0], *part_rngs): acc for x, vs, acc in zip(group, values, accs) if x.op is Ops.REDUCE and x.arg is Ops.MAX})
      for i, rng in enumerate(part_rngs):
        append(rng)
        # work that needs only the loops opened so far runs before the next one opens: a GPU tile staged into shared
        # memory once per k-step, not once per step of the loop inside it
        if i + 1 < len(part_rngs):
          outer = allowed | frozenset(part_rngs[:i + 1])
          emit([n for n in toposort(body, stop=lambda x: x in remap) if n not in remap and deps[n] <= outer], outer)
      emit(body, allowed | frozenset(part_rngs))
      # a rescaled sum's ACCUMULATE also takes its scale; the max's comes after every RUNNING_MAX read of it
      for acc, vs, op in zip(accs, values, ops): program.append(UOp(Ops.ACCUMULATE, dtypes.void, (acc, *(remap[v] for v in vs)), op))
      for e in part_effects: append(e)
      for rng in reversed(part_rngs): program.append(UOp(Ops.ENDRANGE, dtypes.void, (rng,)))
    for e, last in zip(mine, part_effects): remap[e] = remap[last]
    for acc, x in zip(accs, group):
      result = UOp(Ops.LOAD, x.dtype, (acc,))
      program.append(result)
      remap[x] = result

  emit([s for s in sink.src if s not in effects], frozenset(global_ranges))
  assert all(e in remap for e in effects), "a STORE inside loops that no reduction runs"
  open_loops(len(global_ranges) - 1)
  for r in reversed(opened):
    program.append(UOp(Ops.ENDRANGE, dtypes.void, (r,)))
  return program


def _parts(loop: UOp, rest_id: int) -> list[tuple[tuple[UOp, ...], dict[UOp, UOp]]]:
  """The two loops of RANGE(count, split) (see the module docstring): per part its loop and what replaces the original
  loop (the part's index) and FIRST_PART(loop) in its body."""
  count, split = loop.src
  # (trip counts in the simplified form the parts' bodies get: they are rewritten with them)
  first = UOp(Ops.RANGE, loop.dtype, (graph_rewrite(split, symbolic),), loop.arg)
  rest = UOp(Ops.RANGE, loop.dtype, (graph_rewrite(count + -split, symbolic),), (rest_id, *loop.arg[1:]))
  part = UOp(Ops.FIRST_PART, dtypes.bool, (loop,))
  return [((first,), {loop: first, part: UOp.const(dtypes.bool, True)}), ((rest,), {loop: rest + split, part: UOp.const(dtypes.bool, False)})]


def kernel_name(program: list[UOp]) -> str:
  """`E_` (elementwise) or `r_` (with a reduction) and the loop sizes, globals first: the readable part of a kernel's name."""
  glob = [u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  red = [u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "reduce"]
  kind = "r" if red else "E"
  return f"{kind}_{'_'.join(map(str, glob + red)) or 'scalar'}"
