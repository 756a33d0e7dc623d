"""Multi-output kernels (engine layer): which elementwise kernels of one loop shape the scheduler merges into one.

Every boundary node gets a kernel of its own (engine/schedule.py); an optimizer step then runs a kernel
per tensor per parameter (Adam's m, v and the parameter itself, each an ASSIGN), and the parameter's
kernel reads m and v back from memory. Kernels that iterate over the same shape and share what they
compute are merged into one kernel that stores several outputs, `SINK(STORE(PARAM 0, a), STORE(PARAM 1, b))`:

- *related* kernels: one reads the other's output, or both read one input of their own size (m and v
  read the gradient; the parameter reads the new m and v);
- *small* kernels (under SMALL_OUTPUT elements) of one shape, related or not: a GPT's layer-norm weights
  and biases are all (384,), and each of their updates was a launch of its own.

A merged kernel computes an output that another of its outputs reads once and uses the value itself (no
round trip through memory), which is right only where the reader reads it elementwise at the position
being computed: through no movement op (`_reads_in_place`). Merging must keep the kernels' order
possible: no kernel outside a group may run between two of its members (a path through it would be a
cycle), and a kernel that reads a buffer's old value never joins the group of the ASSIGN that
overwrites it (within one kernel the load could come after the store). Kernels with reductions are left
alone (their loops are planned per output: GEMM tiles, row plans, split-K), except sums over one recomputed product
(`recomputed_groups`): attention's dK and dV each sum a term of the scores q . k over the queries, and one kernel computes
the scores once for both (FlashAttention-2's backward; codegen/cuda/flash_bwd.py and codegen/cpu_flash_bwd.py map a kernel
of several such stores; on the CPU dQ, a sum over the keys, joins them too).
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Callable
from picograd.helpers import prod
from picograd.ir.ops import UOp, Ops, ALU, MOVEMENT, toposort
from picograd.engine.reassociate import view_labels

# device kinds whose codegen takes several STOREs over one loop nest (lowering, the CPU passes, the CUDA flat/lanes plans)
MULTI_OUTPUT_DEVICES = {"CPU", "PYTHON", "CUDA"}
SMALL_OUTPUT = 1 << 16  # elements: kernels this small of one shape merge even when they share nothing (a launch each costs more)
MAX_PARAMS = 96         # arguments of one merged kernel (outputs and inputs); a group that would take more starts a new kernel


@dataclass(frozen=True)
class Candidate:
  """A kernel that may be merged: the node it computes, its merge key (device, shape), its fused nodes, what it reads
  (boundary nodes and input slots) and the buffer it writes."""
  root: UOp
  key: tuple
  nodes: tuple[UOp, ...]
  reads: frozenset[UOp]
  output: object


def mergeable(ast: UOp | None, device: str, root: UOp, nodes: tuple[UOp, ...], reads: set[UOp]) -> bool:
  """Whether a scheduled kernel may join a multi-output kernel: an elementwise kernel on a device that takes them, with no
  ordering-only inputs (a checkpoint's AFTER)."""
  if ast is None or device.split(":")[0] not in MULTI_OUTPUT_DEVICES or root.op is Ops.AFTER: return False
  return not any(n.op is Ops.REDUCE for n in nodes) and not any(x.op is Ops.AFTER for x in reads)


def _reads_in_place(reader: Candidate, output: UOp) -> bool:
  """Does `reader` read `output` only elementwise, at the position it computes (no movement op on any path between)?"""
  region = set(reader.nodes)
  return output not in toposort([s for n in reader.nodes if n.op in MOVEMENT for s in n.src], stop=lambda x: x not in region)


def _target(c: Candidate) -> UOp | None:
  """The buffer an ASSIGN writes (below its reshapes), None for other kernels."""
  if c.root.op is not Ops.ASSIGN: return None
  t = c.root.src[0]
  while t.op is Ops.RESHAPE: t = t.src[0]
  return t


def _full_reads(c: Candidate) -> set[UOp]:
  """The inputs `c` reads that have its own number of elements (a broadcast scalar like the learning rate does not count)."""
  size = prod(c.root.tshape)
  return {x for x in c.reads if x.op is not Ops.AFTER and x.size == size}


class _Groups:
  """Kernels merged so far: each kernel's group, and a dependence search over the graph of groups."""

  def __init__(self, n: int, deps: list[set[int]]):
    self.deps = deps
    self.group_of = list(range(n))
    self.members: dict[int, list[int]] = {i: [i] for i in range(n)}

  def path_through_others(self, start: list[int], goal: list[int]) -> bool:
    """Must a kernel of `goal` run before one of `start` because of a kernel of neither (start -> other -> ... -> goal)?"""
    ends, starts = set(goal), set(start)
    seen: set[int] = set()
    stack = [self.group_of[d] for s in start for d in self.deps[s] if d not in starts and d not in ends]
    while stack:
      g = stack.pop()
      if g in seen: continue
      seen.add(g)
      for m in self.members[g]:
        if m in ends: return True
        stack.extend(self.group_of[d] for d in self.deps[m] if d not in starts and self.group_of[d] not in seen)
    return False

  def join(self, j: int, g: int) -> None:
    self.members[g].append(j)
    del self.members[self.group_of[j]]
    self.group_of[j] = g


def _fits(j: int, group: list[int], cands: dict[int, Candidate], groups: _Groups) -> bool:
  """May kernel `j` join `group` (module docstring)?"""
  c = cands[j]
  members = [cands[m] for m in group]
  related = prod(c.root.tshape) < SMALL_OUTPUT
  for m, mc in zip(group, members):
    # one buffer written twice, or a buffer one writes read by the other as it was (or written by it)
    if mc.output == c.output or _target(c) in (mc.reads | {mc.root}) or _target(mc) in (c.reads | {c.root}): return False
    reads_m, read_by_m = mc.root in c.reads, c.root in mc.reads
    # contiguous() asks for its value in memory before its readers run (a user's kernel boundary): it is not merged into them
    if reads_m and mc.root.op is Ops.CONTIGUOUS or read_by_m and c.root.op is Ops.CONTIGUOUS: return False
    if reads_m and not _reads_in_place(c, mc.root) or read_by_m and not _reads_in_place(mc, c.root): return False
    related = related or reads_m or read_by_m or bool(_full_reads(c) & _full_reads(mc))
  if not related: return False
  inputs = set(c.reads).union(*(mc.reads for mc in members)) - {c.root, *(mc.root for mc in members)}
  if len(inputs) + len(group) + 1 > MAX_PARAMS: return False
  return not groups.path_through_others([j], group) and not groups.path_through_others(group, [j])


def output_groups(cands: dict[int, Candidate], deps: list[set[int]]) -> list[list[int]]:
  """Groups of candidate kernels (by index; `deps[i]`: the kernels i must run after) to merge into one kernel each, members
  in kernel order, which is an order in which each member's inputs come first. Greedy: each kernel joins the first group
  of its key that it fits, else starts one."""
  groups = _Groups(len(deps), deps)
  by_key: dict[tuple, list[int]] = {}
  for j in sorted(cands):
    c = cands[j]
    for g in by_key.setdefault(c.key, []):
      if _fits(j, groups.members[g], cands, groups):
        groups.join(j, g)
        break
    else: by_key[c.key].append(j)
  return [sorted(groups.members[g]) for gs in by_key.values() for g in gs]


def _summed_axis(red: UOp, product: UOp) -> int | None:
  """The axis of `product` (a reduction inside `red`'s fused graph) that the single-axis sum `red` runs along, followed
  through elementwise ops and the views that permute, broadcast or add and remove size-1 axes; None where no path shows it
  or two paths disagree."""
  if len(red.arg[1]) != 1: return None
  axis = red.arg[1][0]
  found: set[int | None] = set()
  stack: list[tuple[UOp, tuple[int | None, ...]]] = [(red.src[0], tuple(range(len(red.src[0].tshape))))]
  seen: set[tuple[UOp, tuple[int | None, ...]]] = set()
  while stack:
    n, labels = stack.pop()
    if (n, labels) in seen: continue
    seen.add((n, labels))
    if n is product: found.add(labels.index(axis) if axis in labels else None)
    elif n.op in ALU or n.op is Ops.DETACH: stack.extend((x, labels) for x in n.src if x.shape is not None and x.tshape == n.tshape)
    elif n.op in MOVEMENT and (v := view_labels(n, labels)) is not None: stack.append((n.src[0], v))
  return found.pop() if len(found) == 1 else None


def recomputed_groups(reductions: dict[int, tuple[UOp, tuple, frozenset[UOp]]], deps: list[set[int]], merged: list[list[int]],
                      one_pass: Callable[[UOp, UOp, str], bool], crosswise: Callable[[str], bool]) -> list[list[int]]:
  """Groups of reduction kernels (by index) to compute in one pass over one recomputed product: `reductions[i]` = (the
  kernel's single-axis sum, its key (device, output shape), the reductions fused into it). Kernels join when they share a
  fused product and sum it along the same axis (dK and dV over the queries), of one output shape, and neither needs the
  other's result, directly or through other kernels (`merged`: the groups output_groups made, one kernel each); where
  `crosswise(device)`, also a sum along its other axis (dQ over the keys: its plan adds each tile's share into a buffer
  of the whole output). A sum that reads the group's row statistics directly joins it too, of any shape, where
  `one_pass(statistic, sum, device)` says a running max computes them together (softmax's row sum of exps beside its max;
  the weighted sum O = P @ v beside both: the flash plans). `deps[i]`: the kernels i must run after."""
  def along(i: int, products: frozenset[UOp]) -> set[tuple[UOp, int]]:
    red = reductions[i][0]
    return {(p, a) for p in products if (a := _summed_axis(red, p)) is not None}
  def meets(m: int, j: int, key: tuple) -> bool:
    """Do kernels m and j sum a product they both fuse along one axis (or, crosswise, along its two)?"""
    shared = reductions[j][2] & reductions[m][2]
    mine, theirs = along(m, shared), along(j, shared)
    return bool(mine & theirs) or (reductions[m][1] == key and crosswise(key[0]) and any(p is q for p, _ in mine for q, _ in theirs))
  groups = _Groups(len(deps), deps)
  for group in merged:
    for m in group[1:]: groups.join(m, group[0])
  heads: list[int] = []
  for j in sorted(reductions):
    red, key, fused = reductions[j]
    for g in heads:
      members = groups.members[g]
      reads_all = all(m in deps[j] and one_pass(reductions[m][0], red, key[0]) for m in members)
      if reductions[g][1] != key and not (reductions[g][1][0] == key[0] and reads_all): continue
      if not all(meets(m, j, key) for m in members): continue
      if any((m in deps[j] and not one_pass(reductions[m][0], red, key[0])) or j in deps[m] for m in members): continue
      if groups.path_through_others([j], members) or groups.path_through_others(members, [j]): continue
      groups.join(j, g)
      break
    else: heads.append(j)
  return [sorted(groups.members[g]) for g in heads if len(groups.members[g]) > 1]


__all__ = ["Candidate", "MULTI_OUTPUT_DEVICES", "SMALL_OUTPUT", "mergeable", "output_groups", "recomputed_groups"]
