"""Kernel boundaries: which nodes of a lazy graph get a buffer, and the kernels that compute them, in order.

The policy (DESIGN §4): elementwise chains and the movement ops between them fuse into one
kernel; elementwise producers fuse into the reduction that consumes them; elementwise consumers
of a reduction fuse into its kernel; a reduction whose result is broadcast back (through an
EXPAND) or used by several nodes is realized first so it is not recomputed per element, unless
it is a row reduction broadcast back over its own trailing axes (softmax, layernorm), which the
kernel computes once per row; transcendental work broadcast into a reduction is stored once;
CONTIGUOUS, COPY, ASSIGN and the requested outputs are boundaries.

Scheduling works on a *normalized* graph in which every input buffer is replaced by a numbered
slot. The result, a `ScheduleTemplate`, depends only on graph structure, so it is cached: step
N+1 of a training loop skips straight to launching.
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Callable
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, MOVEMENT, ALU, toposort, substitute, graph_rewrite_many


# devices whose codegen computes a row reduction once per row when it is broadcast back over the row
ROW_FUSING_DEVICES = {"CPU", "PYTHON", "CUDA"}


@dataclass(frozen=True)
class Binding:
  """Where a kernel argument's memory comes from: an input slot, or a buffer the schedule creates."""
  kind: str  # "input" or "temp"
  index: int


@dataclass(frozen=True)
class TempBuffer:
  size: int
  dtype: DType
  device: str


@dataclass(frozen=True)
class KernelSpec:
  """One step: a kernel (`ast` = SINK(STORE(PARAM 0, value))) or a device copy (`ast` is None), and its buffers."""
  ast: UOp | None
  device: str
  bindings: tuple[Binding, ...]  # bindings[0] is written, the rest are read


@dataclass(frozen=True)
class ScheduleTemplate:
  kernels: tuple[KernelSpec, ...]
  temps: tuple[TempBuffer, ...]
  outputs: tuple[Binding, ...]  # per root: the buffer holding its value


def slot_of(u: UOp) -> tuple | None:
  """A normalized input buffer is BUFFER with arg ("slot", index, size, device)."""
  return u.arg if u.op is Ops.BUFFER and isinstance(u.arg, tuple) else None


def strip_reshapes(u: UOp) -> UOp:
  """Below the RESHAPEs: the node a reshape-only view reads."""
  while u.op is Ops.RESHAPE: u = u.src[0]
  return u


def is_contiguous_view(u: UOp) -> bool:
  """A whole buffer seen through reshapes only: reading it needs no kernel."""
  return strip_reshapes(u).op is Ops.BUFFER


def _consumers(nodes: list[UOp]) -> dict[UOp, set[UOp]]:
  out: dict[UOp, set[UOp]] = {n: set() for n in nodes}
  for n in nodes:
    for s in n.src: out[s].add(n)
  return out


def _reduces_below(start: UOp, stop: set[UOp]) -> list[UOp]:
  """REDUCE nodes reachable from `start` through elementwise and movement ops, without entering boundaries."""
  found, seen, stack = [], set(), [start]
  while stack:
    n = stack.pop()
    if n in seen or n in stop: continue
    seen.add(n)
    if n.op is Ops.REDUCE: found.append(n)
    elif n.op in ALU or n.op in MOVEMENT or n.op is Ops.DETACH: stack.extend(n.src)
  return found


def _broadcast_axes(expand: UOp) -> tuple[int, ...]:
  return tuple(i for i, (a, b) in enumerate(zip(expand.src[0].tshape, expand.tshape)) if a != b)


def _row_reductions(expand: UOp, consumers: dict[UOp, set[UOp]], realize: set[UOp]) -> set[UOp]:
  """The REDUCEs below `expand` that a kernel can compute once per row: they reduce exactly the broadcast
  axes, those axes are the trailing ones, and everything between the reduce, the broadcast and the kernel's
  output is elementwise. Then the reduction needs only the outer loops, and the linearizer emits it before
  the loops over the row."""
  axes = _broadcast_axes(expand)
  # trailing axes, and at least one row axis before them: a reduction over everything has no rows to share out
  if not axes or axes[0] == 0 or axes != tuple(range(axes[0], len(expand.tshape))): return set()
  # upwards: elementwise at this shape up to a boundary, or a reduction over the same row
  stack, seen = [expand], set()
  while stack:
    n = stack.pop()
    for c in consumers.get(n, ()):
      if c in seen: continue
      seen.add(c)
      if c.op is Ops.REDUCE and c.arg[1] == axes and c.src[0].shape == expand.shape: continue
      if c.shape != expand.shape or c.op not in ALU | {Ops.ASSIGN, Ops.CONTIGUOUS}: return set()
      if c not in realize: stack.append(c)  # a boundary is the kernel's output: it iterates over this shape
  # downwards: through elementwise ops and reshapes to reductions over these axes of this shape
  found, stack, seen = set(), [expand.src[0]], set()
  while stack:
    n = stack.pop()
    if n in seen or n in realize: continue
    seen.add(n)
    if n.op is Ops.REDUCE:
      if n.arg[1] == axes and n.src[0].shape == expand.shape: found.add(n)
    elif n.op in ALU or n.op in (Ops.RESHAPE, Ops.DETACH): stack.extend(n.src)
  return found


TRANSCENDENTAL = {Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIPROCAL}


def _costly_elementwise(u: UOp, realize: set[UOp]) -> UOp | None:
  """The elementwise node under a view if its fused graph (up to boundaries) does transcendental work."""
  while u.op in MOVEMENT: u = u.src[0]
  if u.op not in ALU or u in realize: return None
  for n in toposort([u], stop=lambda x: x in realize or x.op is Ops.REDUCE):
    if n.op in TRANSCENDENTAL: return u
  return None


def _feeds_reduce(u: UOp, consumers: dict[UOp, set[UOp]], realize: set[UOp]) -> bool:
  stack, seen = [u], set()
  while stack:
    n = stack.pop()
    for c in consumers.get(n, ()):
      if c in seen: continue
      seen.add(c)
      if c.op is Ops.REDUCE: return True
      if (c.op in ALU or c.op in MOVEMENT) and c not in realize: stack.append(c)
  return False


def _boundaries(roots: list[UOp], nodes: list[UOp], fuse_rows: Callable[[UOp], bool] = lambda _: False) -> set[UOp]:
  """The nodes that get their own buffer. `fuse_rows(node)`: may this node's kernel compute row reductions in place."""
  realize: set[UOp] = {r for r in roots if not is_contiguous_view(r)}
  for n in nodes:
    if n.op in (Ops.CONTIGUOUS, Ops.COPY, Ops.ASSIGN): realize.add(n)
    if n.op is Ops.COPY and not is_contiguous_view(n.src[0]): realize.add(n.src[0])
    # AFTER(x, dep): x is read from memory (a checkpoint's saved input) by kernels ordered after dep's
    if n.op is Ops.AFTER: realize.update(s for s in n.src if not is_contiguous_view(s))
  consumers = _consumers(nodes)
  for n in nodes:
    if n.op is Ops.REDUCE and len(consumers[n]) > 1: realize.add(n)
  # a reduction seen through a broadcast would be recomputed for every broadcast element, except a
  # row reduction broadcast back over its own row, which the kernel computes once per row (softmax, layernorm)
  for n in nodes:
    if n.op is Ops.EXPAND:
      fused = _row_reductions(n, consumers, realize) if fuse_rows(n) else set()
      realize.update(r for r in _reduces_below(n.src[0], realize) if r not in fused)
      # transcendental work broadcast into a reduction (tanh fed into a matmul) would be redone for every
      # element the reduction reads: storing it once is cheaper
      if not fused and n.size >= 8 * n.src[0].size and _feeds_reduce(n, consumers, realize) and \
         (costly := _costly_elementwise(n.src[0], realize)) is not None:
        realize.add(costly)
  # an assignment whose value reads its own target at other positions would read elements it already
  # overwrote: compute the value into a buffer of its own first
  for n in nodes:
    if n.op is Ops.ASSIGN and _reads_shifted(n.src[1], strip_reshapes(n.src[0]), realize): realize.add(n.src[1])
  # a reduction that would be fused into several kernels would run once per kernel: give it its own
  while True:
    owners: dict[UOp, int] = {}
    for b in realize:
      for r in set(_reduces_below_sources(b, realize)): owners[r] = owners.get(r, 0) + 1
    shared = {r for r, count in owners.items() if count > 1}
    if not shared: return realize
    realize |= shared


def _reduces_below_sources(b: UOp, realize: set[UOp]) -> list[UOp]:
  return [r for s in b.src for r in _reduces_below(s, realize)]


def _reads_shifted(value: UOp, target: UOp, realize: set[UOp]) -> bool:
  """Does `value` read `target` through anything but a reshape (another element than the one being written)?"""
  reaches: dict[UOp, bool] = {}
  for n in toposort([value], stop=lambda x: x in realize and x is not value):
    reaches[n] = n is target or (not (n in realize and n is not value) and any(reaches.get(s, False) for s in n.src))
    if reaches[n] and (n.op in MOVEMENT and n.op is not Ops.RESHAPE or n.op is Ops.REDUCE): return True
  return False


def _device_of(root_device: str, nodes: list[UOp], root: UOp) -> dict[UOp, str]:
  """Every node's device: the root's, except below a COPY, which names its source device."""
  device = {root: root_device}
  for n in reversed(nodes):
    d = device.get(n, root_device)
    for s in n.src: device.setdefault(s, n.arg[0] if n.op is Ops.COPY else d)
  return device


# a CHECKPOINT is its value: its other sources only serve its gradient
_strip_checkpoints = PatternMatcher([(UPat(Ops.CHECKPOINT, name="c"), lambda c: c.src[0])])


def create_template(roots: list[UOp], devices: list[str]) -> ScheduleTemplate:
  """Schedule normalized `roots` (inputs already replaced by slots) to be realized on `devices`."""
  roots = graph_rewrite_many(roots, _strip_checkpoints)
  nodes = toposort(roots)
  node_device: dict[UOp, str] = {}
  for root, dev in zip(roots, devices):
    for n, d in _device_of(dev, toposort([root]), root).items(): node_device.setdefault(n, d)
  boundaries = _boundaries(roots, nodes, lambda n: node_device[n].split(":")[0] in ROW_FUSING_DEVICES)

  temps: list[TempBuffer] = []
  where: dict[UOp, Binding] = {}  # boundary node -> buffer that holds it
  kernels: list[KernelSpec] = []
  reads: list[set[UOp]] = []      # per kernel: the boundary nodes and input BUFFER slots it reads
  for n in nodes:
    if n not in boundaries: continue
    if n.op is Ops.ASSIGN:
      target = strip_reshapes(n.src[0])
      out = Binding("input", slot[1]) if (slot := slot_of(target)) else where[target]
    else:
      temps.append(TempBuffer(n.size, n.dtype, node_device[n]))
      out = Binding("temp", len(temps) - 1)
    where[n] = out
    if n.op is Ops.COPY:
      src = n.src[0] if n.src[0] in where else strip_reshapes(n.src[0])
      kernels.append(KernelSpec(None, node_device[n], (out, _binding_of(src, where))))
      reads.append({src})
      continue
    ast, inputs, leaves = _kernel_ast(n, boundaries, where)
    kernels.append(KernelSpec(ast, node_device[n], (out, *inputs)))
    reads.append(leaves)
  outputs = tuple(_binding_of(r, where) for r in roots)
  order = _order([n for n in nodes if n in boundaries], reads)
  return ScheduleTemplate(tuple(kernels[i] for i in order), tuple(temps), outputs)


def _binding_of(u: UOp, where: dict[UOp, Binding]) -> Binding:
  """The buffer holding `u`: a computed node's, or the input slot it is a reshape of."""
  if u in where: return where[u]
  base = strip_reshapes(u)
  if (slot := slot_of(base)) is not None: return Binding("input", slot[1])
  return where[base]


def _kernel_ast(root: UOp, boundaries: set[UOp], where: dict[UOp, Binding]) -> tuple[UOp, list[Binding], set[UOp]]:
  """The fused graph computing `root`, with every input (buffer or realized node) replaced by a PARAM; and those inputs."""
  value = root.src[1] if root.op is Ops.ASSIGN else root.src[0] if root.op in (Ops.CONTIGUOUS, Ops.AFTER) else root
  params: dict[Binding, UOp] = {}
  inputs: list[Binding] = []
  mapping: dict[UOp, UOp] = {}

  def param(b: Binding, dtype: DType, size: int) -> UOp:
    if b not in params:
      inputs.append(b)
      params[b] = UOp(Ops.PARAM, dtype, (), (len(inputs), size))
    return params[b]

  stop = lambda n: n is not root and (n in boundaries or n.op in (Ops.BUFFER, Ops.AFTER))
  # AFTER(x, dep) reads x (a boundary or an input); dep only orders this kernel after the one computing it. It becomes a
  # PARAM before anything else is rewritten: stripped first, a recomputation would merge with the forward it repeats
  ordered: set[UOp] = set(root.src) if root.op is Ops.AFTER else set()
  for n in toposort([value], stop=stop):
    if not stop(n): continue
    if n.op is Ops.BUFFER:
      mapping[n] = param(Binding("input", n.arg[1]), n.dtype, n.size)
    elif n.op is Ops.AFTER:
      x = n.src[0]
      ordered.update(n.src)
      mapping[n] = param(_binding_of(x, where), x.dtype, (x if x in where else strip_reshapes(x)).size).reshape(n.tshape)
    else:
      mapping[n] = param(where[n], n.dtype, n.size).reshape(n.tshape)
  value = substitute(value, mapping)
  # DETACH only matters to gradients
  detached = {n: n.src[0] for n in toposort([value]) if n.op is Ops.DETACH}
  while detached:
    value = substitute(value, detached)
    detached = {n: n.src[0] for n in toposort([value]) if n.op is Ops.DETACH}
  out = UOp(Ops.PARAM, root.dtype, (), (0, root.size))
  ast = UOp(Ops.SINK, dtypes.void, (UOp(Ops.STORE, dtypes.void, (out, value)),))
  return ast, inputs, set(mapping) | ordered


def _order(computed: list[UOp], reads: list[set[UOp]]) -> list[int]:
  """Kernel order: after the kernels whose results they read, and a kernel that reads a buffer's old value
  before the ASSIGN that overwrites it."""
  index = {n: i for i, n in enumerate(computed)}
  deps: list[set[int]] = [{index[x] for x in r if x in index} for r in reads]
  for i, n in enumerate(computed):
    if n.op is not Ops.ASSIGN: continue
    target = strip_reshapes(n.src[0])
    for j, r in enumerate(reads):
      if j != i and target in r and not _depends_on(j, i, deps): deps[i].add(j)
  order: list[int] = []
  done: set[int] = set()
  while len(order) < len(computed):
    ready = [i for i in range(len(computed)) if i not in done and deps[i] <= done]
    if not ready: raise RuntimeError("schedule: circular dependence between in-place assignments")
    order.extend(ready)
    done.update(ready)
  return order


def _depends_on(a: int, b: int, deps: list[set[int]]) -> bool:
  stack, seen = [a], set()
  while stack:
    x = stack.pop()
    if x == b: return True
    if x in seen: continue
    seen.add(x)
    stack.extend(deps[x])
  return False
