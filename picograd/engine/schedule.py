"""Kernel boundaries: which nodes of a lazy graph get a buffer, and the kernels that compute them, in order.

The policy (DESIGN §4): elementwise chains and the movement ops between them fuse into one
kernel; elementwise producers fuse into the reduction that consumes them; elementwise consumers
of a reduction fuse into its kernel; a reduction whose result is broadcast back (through an
EXPAND) or used by several nodes is realized first so it is not recomputed per element, unless
it is a row reduction broadcast back over its own trailing axes (softmax, layernorm), which the
kernel computes once per row; transcendental work broadcast into a reduction is stored once;
CONTIGUOUS, COPY, ASSIGN, COLLECTIVE and the requested outputs are boundaries; the outputs of one
collective (one per device) are written by one step. Elementwise kernels of one loop shape that share
what they read (or are small) are then merged into one kernel storing several outputs (engine/outputs.py).

Scheduling works on a *normalized* graph in which every input buffer is replaced by a numbered
slot. The result, a `ScheduleTemplate`, depends only on graph structure, so it is cached: step
N+1 of a training loop skips straight to launching.
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import EMULATE, NOOPT, RECOMPUTE_MIN, RECOMPUTE_MASKED_MIN, prod
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, MOVEMENT, ALU, toposort, substitute, graph_rewrite_many, rebuild_hooks, strip_reshapes
from picograd.engine.online_fusion import online_groups, half_product, exp_factor_reads, group_of, tensor_core_form
from picograd.engine.outputs import Candidate, mergeable, output_groups, recomputed_groups
from picograd.engine.reassociate import reassociate
from picograd.engine.recompute import recomputed


# devices whose codegen computes a row reduction once per row when it is broadcast back over the row
ROW_FUSING_DEVICES = {"CPU", "PYTHON", "CUDA"}
# devices whose codegen reads a concatenation inside a reduction through one gate per piece at every load (the CPU's
# optimizer splits such a loop into one gate-free loop per piece): a concatenation read by a reduction is stored first
CONCAT_STORING_DEVICES = {"CUDA"}
# devices whose matrix products copy 16-bit operand tiles as they are (cp.async): a float32 tensor cast to 16 bits for a
# product is stored cast; the CPU's GEMM converts while it packs, so there the cast stays inside the product
PRODUCT_CAST_DEVICES = {"CUDA"}
# devices whose codegen runs a sum rescaled by a running max in one pass (codegen/online.py). The CUDA mapping passes
# (and the PYTHON device while it emulates them, EMULATE=CUDA) only in their flat plan (NOOPT=1): the others deal a max's
# loop out to threads
ONLINE_DEVICES = {"CPU", "PYTHON"}
# devices that run in one pass only the sums of `online_fusion.tensor_core_form` (autocast's attention: 16-bit products),
# which the CUDA flash plan maps (codegen/cuda/flash.py); other sums keep their stored scores there
TENSOR_CORE_ONLINE_DEVICES = {"CUDA"}
# devices whose threads split only a kernel's output loop: a reduction to one value of at least SPLIT_REDUCE_MIN elements
# is split in two kernels there (`_split_reductions`), so both cores read the input (the CUDA codegen splits it by itself)
SPLIT_REDUCE_DEVICES = {"CPU"}
SPLIT_REDUCE_MIN = 1 << 20
# devices whose graphs reassociate nested sums when the inner sum over j exists already (engine/reassociate.py: softmax's
# gradient reads O = P @ v instead of summing P * (dO @ v.T) over the keys); not CUDA yet (nor the PYTHON device emulating
# it), whose graphs stay as they are. Only sums over as many elements as recomputed scores may have (RECOMPUTE_MIN,
# RECOMPUTE_MASKED_MIN): where the scores are stored anyway the row term is cheap beside them, and the GPT small step
# (2^17 scores) was 10-40% slower reassociated (5.8 -> 6.3-8.1 ms)
REASSOCIATE_DEVICES = {"CPU", "PYTHON"}
# devices whose kernels recompute a batched pairwise product with a short inner sum (attention's q . k) inside each reduction
# that reads it instead of storing it (engine/recompute.py): no T x T buffer in attention's backward. Not CUDA (nor the
# PYTHON device emulating it) until a GPU mapping of such kernels exists
RECOMPUTE_DEVICES = {"CPU", "PYTHON"}
# devices that recompute (and reassociate around) only 16-bit products accumulated in float32 (autocast's q . k and dO . v,
# SDPA of 16-bit tensors; `online_fusion.half_product`): the form the CUDA plan for sums over recomputed scores maps
# (codegen/cuda/flash_bwd.py). Other products keep their stored scores there; the gates RECOMPUTE_MIN / RECOMPUTE_MASKED_MIN
# apply as on the CPU. In a training step the forward's online kernel stores the row max and sum beside O (engine/outputs.py
# recomputed_groups), which the backward's kernels read.
# H200, causal bf16 SDPA fwd+bwd (B=64 H=6 D=64), kernel time: T = 256 0.24 ms recomputed against 0.45 stored, T = 1024
# 1.81 against 3.56; the GPT large bf16 step 8.46 against 8.55 ms (session 12, NOTES "Flash attention backward on CUDA")
TENSOR_CORE_RECOMPUTE_DEVICES: set[str] = {"CUDA"}


def _on_cuda(kind: str) -> bool: return kind == "CUDA" or EMULATE == "CUDA"


def _recomputes(n: UOp, kind: str) -> bool:
  if not _on_cuda(kind): return kind in RECOMPUTE_DEVICES
  # (the plan's MMAs take head sizes that are multiples of 16 up to 128; others would fall to a loop nest)
  inner = prod(n.src[0].tshape[a] for a in n.arg[1]) if n.op is Ops.REDUCE else 0
  return "CUDA" in TENSOR_CORE_RECOMPUTE_DEVICES and half_product(n) is not None and inner % 16 == 0 and 16 <= inner <= 128


def _reassociates(node_device: dict[UOp, str]) -> Callable[[UOp], bool]:
  """Whether a sum may be reassociated (see REASSOCIATE_DEVICES): its device, and the elements it sums."""
  least = min(int(RECOMPUTE_MIN), int(RECOMPUTE_MASKED_MIN))
  def ok(r: UOp) -> bool:
    kind = node_device[r].split(":")[0]
    if prod(r.src[0].tshape) < least: return False
    return "CUDA" in TENSOR_CORE_RECOMPUTE_DEVICES if _on_cuda(kind) else kind in REASSOCIATE_DEVICES
  return ok


def _fuses_online(kind: str) -> bool:
  if kind == "CUDA" or EMULATE == "CUDA": return "CUDA" in TENSOR_CORE_ONLINE_DEVICES or bool(NOOPT)
  return kind in ONLINE_DEVICES


def _online_tensor_cores(kind: str) -> bool:
  """Whether the device fuses only the online sums the CUDA flash plan maps (NOOPT=1's flat plan runs any)."""
  return (kind == "CUDA" or EMULATE == "CUDA") and not NOOPT


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
  """One step: a kernel (`ast` = SINK(STORE(PARAM 0, value), ...), one STORE per output) or a device copy (`ast` is None),
  and its buffers.

  A collective (`collective` = its arg without the index) writes its first n bindings (one per device) and reads the rest."""
  ast: UOp | None
  device: str
  bindings: tuple[Binding, ...]  # bindings[:outputs] are written (a kernel's PARAM 0..outputs-1), the rest are read
  # the fused nodes that compute (not the inputs): their source lines are the kernel's provenance (ir/provenance.py). The
  # lines are read when asked for, as a later graph with this structure adds its own lines to these same (hash-consed) nodes
  nodes: tuple[UOp, ...] = ()
  collective: tuple | None = None
  outputs: int = 1


@dataclass(frozen=True)
class ScheduleTemplate:
  kernels: tuple[KernelSpec, ...]
  temps: tuple[TempBuffer, ...]
  outputs: tuple[Binding, ...]  # per root: the buffer holding its value


def slot_of(u: UOp) -> tuple | None:
  """A normalized input buffer is BUFFER with arg ("slot", index, size, device)."""
  return u.arg if u.op is Ops.BUFFER and isinstance(u.arg, tuple) else None


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


def _reductions_reading(u: UOp, consumers: dict[UOp, set[UOp]], realize: set[UOp]) -> list[UOp]:
  """The REDUCEs that read `u` through elementwise and movement ops, without crossing boundaries."""
  found, stack, seen = [], [u], set()
  while stack:
    n = stack.pop()
    for c in consumers.get(n, ()):
      if c in seen: continue
      seen.add(c)
      if c.op is Ops.REDUCE: found.append(c)
      elif (c.op in ALU or c.op in MOVEMENT) and c not in realize: stack.append(c)
  return found


def _feeds_reduce(u: UOp, consumers: dict[UOp, set[UOp]], realize: set[UOp]) -> bool:
  return bool(_reductions_reading(u, consumers, realize))


@dataclass
class _Fusion:
  """What the boundary rules read: the nodes realized so far, each node's consumers, and the kind of device each node is
  computed on ("CPU", "CUDA", ...)."""
  realize: set[UOp]
  consumers: dict[UOp, set[UOp]]
  kind: Callable[[UOp], str]


def _copy_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  return [n] + ([n.src[0]] if not is_contiguous_view(n.src[0]) else [])


def _broadcast_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  """A reduction seen through a broadcast would be recomputed for every broadcast element, except a row reduction
  broadcast back over its own row, which the kernel computes once per row (softmax, layernorm). Transcendental work
  broadcast into a reduction (tanh fed into a matmul) would be redone for every element the reduction reads: stored once."""
  fused = _row_reductions(n, f.consumers, f.realize) if f.kind(n) in ROW_FUSING_DEVICES else set()
  out = [r for r in _reduces_below(n.src[0], f.realize) if r not in fused]
  if not fused and n.size >= 8 * n.src[0].size and _feeds_reduce(n, f.consumers, f.realize) and \
     (costly := _costly_elementwise(n.src[0], f.realize)) is not None:
    out.append(costly)
  return out


def _padded_pieces(u: UOp) -> int:
  """How many padded pieces a sum adds up (a concatenation, or the gradient of several slices of one tensor)."""
  u = strip_reshapes(u)
  if u.op is Ops.PAD: return 1
  return sum(_padded_pieces(s) for s in u.src) if u.op is Ops.ADD else 0


def _concat_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  """A concatenation read by a reduction is stored first: every load of the reduction would otherwise test one gate per
  piece and read through the pieces' index maps (the weight gradient of a fused q/k/v projection). Its pieces' own sums
  are stored too: inside the concatenation's elementwise kernel a product would run as one dot product per output."""
  if f.kind(n) not in CONCAT_STORING_DEVICES or any(c.op is Ops.ADD for c in f.consumers.get(n, ())) or _padded_pieces(n) < 2: return []
  return [n, *_reduces_below(n, f.realize)] if _feeds_reduce(n, f.consumers, f.realize) else []


SHARED_INPUTS_MAX = 8  # buffers an elementwise value read by several nodes may read before it is stored once


def _shared_elementwise_boundaries(nodes: list[UOp], f: _Fusion) -> set[UOp]:
  """Elementwise values read by several nodes are recomputed by each kernel that fuses them; that is cheap for a short chain,
  but a long one grows with every step (the gradient of a residual stream: each layer adds to the sum of the layers after it,
  and every kernel reading one of the partial sums would recompute all of them, dropout masks included). Such a value is
  stored once when its fused graph reads more than SHARED_INPUTS_MAX buffers; sources first, so a chain is cut every few
  steps."""
  reads: dict[UOp, frozenset[UOp]] = {}
  out: set[UOp] = set()
  for n in nodes:  # topological order: sources first
    if n.op is Ops.BUFFER or n in f.realize: reads[n] = frozenset([n])
    elif not n.src: reads[n] = frozenset()
    elif n.op is Ops.REDUCE: reads[n] = frozenset()  # a fused reduction's own inputs are read once by the kernel that has it
    else: reads[n] = frozenset().union(*(reads[s] for s in n.src))
    if n.op in ALU and len(f.consumers.get(n, ())) > 1 and len(reads[n]) > SHARED_INPUTS_MAX:
      out.add(n)
      reads[n] = frozenset([n])
  return out


CHECKED_REDUCE_MIN = 1 << 20  # terms: a smaller reduction keeps its checks inside (a kernel more costs more)


def _check_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  """A checked value (an index whose range is checked: cross-entropy's targets, an embedding's indices) read by a large
  reduction is stored first: inside the reduction the check runs for every term (the GPT's token embedding and the
  one-hot part of its lm_head weight gradient: 409M checks each per step) where stored it runs once per index."""
  return [n] if max((r.src[0].size for r in _reductions_reading(n, f.consumers, f.realize)), default=0) >= CHECKED_REDUCE_MIN else []


def _summed(u: UOp, consumers: dict[UOp, set[UOp]]) -> bool:
  """Whether a reduction sums `u`, casts between (a 16-bit product accumulated in float32)."""
  return any((c.op is Ops.REDUCE and c.arg[0] is Ops.ADD) or (c.op is Ops.CAST and _summed(c, consumers)) for c in consumers.get(u, ()))


def _product_operand(u: UOp, consumers: dict[UOp, set[UOp]]) -> bool:
  """Whether `u` is, through views only, a factor of a product that a reduction sums (a matrix product's operand)."""
  views, seen = [u], set()
  while views:
    for c in consumers.get(views.pop(), ()):
      if c in seen: continue
      seen.add(c)
      if c.op in MOVEMENT: views.append(c)
      elif c.op is Ops.MUL and _summed(c, consumers): return True
  return False


def _narrow_cast_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  """A float32 tensor cast to 16 bits for a matrix product (autocast) is stored cast: the product's tiles then read half
  the bytes and copy them to shared memory as they are (cp.async), and a cast that several products read (a weight in
  its product and in its gradient's) converts once. Where the tensor is computed for nothing else, its kernel stores only
  the cast."""
  if f.kind(n) not in PRODUCT_CAST_DEVICES or n.dtype not in NARROW_FLOATS or n.src[0].dtype != dtypes.float32: return []
  return [n] if _product_operand(n, f.consumers) else []


def _narrow_operand_boundaries(n: UOp, f: _Fusion) -> list[UOp]:
  """A 16-bit elementwise value of a sum that a matrix product reads as an operand (autocast's linear: the product's bf16
  plus its bias, the q, k and v that attention's products read) is stored: the sum's kernel computes it as its epilogue,
  and the products read plain 16-bit tiles (copied by TMA) instead of adding the bias at every tile they load."""
  # (the walk through consumers first: it stops at the first non-view, the walk below at the region's reductions)
  if f.kind(n) not in PRODUCT_CAST_DEVICES or n.dtype not in NARROW_FLOATS or n.op is Ops.CAST or not _product_operand(n, f.consumers):
    return []
  # matrix products below it (no other reduction: a softmax's row sums would fuse in, with the product under them), at
  # most one read by nothing else (whose epilogue it becomes; one that others read too gets its own kernel), and not a
  # concatenation of several (each a product of its own)
  def product(r: UOp) -> bool:
    v = r.src[0]
    while v.op is Ops.CAST: v = v.src[0]
    return r.arg[0] is Ops.ADD and v.op is Ops.MUL
  found, own, seen = 0, 0, set()
  stack = [(s, True) for s in n.src]
  while stack:
    u, alone = stack.pop()
    if u in seen or u in f.realize: continue
    seen.add(u)
    alone = alone and len(f.consumers.get(u, ())) == 1
    if u.op is Ops.REDUCE and not product(u): return []
    if u.op is Ops.REDUCE: found, own = found + 1, own + alone
    elif u.op in ALU or u.op in MOVEMENT: stack.extend((s, alone) for s in u.src)
  return [n] if found and own <= 1 and not _padded_pieces(n) else []


BoundaryRule = Callable[[UOp, _Fusion], list[UOp]]
# The fusion policy (DESIGN §4) as rules: op -> fn(node, state) -> the nodes that get a buffer. The tables apply in order,
# each to every node (a later table sees what the earlier ones realized); ops without a rule fuse into their consumers.
BOUNDARY_RULES: list[dict[Ops, BoundaryRule]] = [
  {  # kernel boundaries by definition
    Ops.CONTIGUOUS: lambda n, f: [n], Ops.ASSIGN: lambda n, f: [n], Ops.COPY: _copy_boundaries,
    # a collective reads whole buffers: a reshape of a computed node reads its buffer as it is (no copy kernel)
    Ops.COLLECTIVE: lambda n, f: [n, *(strip_reshapes(s) for s in n.src if not is_contiguous_view(s))],
    # AFTER(x, dep): x is read from memory (a checkpoint's saved input) by kernels ordered after dep's
    Ops.AFTER: lambda n, f: [s for s in n.src if not is_contiguous_view(s)]},
  {Ops.REDUCE: lambda n, f: [n] if len(f.consumers[n]) > 1 else []},  # a reduction read by several nodes is computed once
  # before the broadcast rule: a product's 16-bit operand computed from a sum is stored with the sum (its epilogue)
  {op: _narrow_operand_boundaries for op in ALU},
  {Ops.EXPAND: _broadcast_boundaries},
  # after the broadcast rule: the pieces' own reductions have buffers
  {Ops.ADD: _concat_boundaries, Ops.CHECK: _check_boundaries, Ops.CAST: _narrow_cast_boundaries},
  # an assignment whose value reads its own target at other positions would read elements it already overwrote:
  # the value gets a buffer of its own first
  {Ops.ASSIGN: lambda n, f: [n.src[1]] if _reads_shifted(n.src[1], strip_reshapes(n.src[0]), f.realize) else []},
]


def _boundaries(roots: list[UOp], nodes: list[UOp], kind: Callable[[UOp], str]) -> set[UOp]:
  """The nodes that get their own buffer (`BOUNDARY_RULES`). `kind(node)`: the kind of device that computes it."""
  f = _Fusion({r for r in roots if not is_contiguous_view(r)}, _consumers(nodes), kind)
  # a sum rescaled by a running max (online softmax, engine/online_fusion.py) keeps its scores, max and denominator
  online = online_groups(roots, nodes, f.consumers, lambda n: _fuses_online(kind(n)), lambda n: _online_tensor_cores(kind(n)))
  # so do the scores that each reduction reading them recomputes (engine/recompute.py)
  online |= recomputed(roots, nodes, f.consumers, lambda n: _recomputes(n, kind(n)), lambda n: _on_cuda(kind(n)))
  for rules in BOUNDARY_RULES:
    for n in nodes:
      if (rule := rules.get(n.op)) is not None: f.realize.update(x for x in rule(n, f) if x not in online)
  f.realize.update(x for x in _shared_elementwise_boundaries(nodes, f) if x not in online)
  # a stored value that another stored value alone reads is computed in that one's kernel instead, one kernel fewer: a
  # concatenation or a sum read only by its stored 16-bit cast (and one float32 round trip fewer), a reduction read only
  # by an elementwise function of it (a layer norm's 1 / sqrt(var / n + eps), a log of a sum)
  roots_set = set(roots)
  for n in nodes:
    if n in f.realize and n.op in ALU and (s := _stored_under(n, f)) is not None and s not in roots_set \
       and (s.op is Ops.REDUCE or (n.op is Ops.CAST and s is n.src[0] and s.op in ALU)):
      f.realize.discard(s)
  # and a stored reduction read only through one cast to 16 bits (autocast's products: float32 sums read as bf16) stores the
  # cast: half the bytes out and in, the same values read
  def stored(r: UOp) -> UOp:
    if r.op is not Ops.REDUCE or r in roots_set or f.kind(r) not in PRODUCT_CAST_DEVICES or len(f.consumers[r]) != 1: return r
    c = next(iter(f.consumers[r]))
    return c if c.op is Ops.CAST and c.dtype in NARROW_FLOATS and c not in online else r
  f.realize = {stored(n) for n in f.realize}
  # a reduction that would be fused into several kernels would run once per kernel: give it its own
  while True:
    owners: dict[UOp, int] = {}
    for b in f.realize:
      for r in set(_reduces_below_sources(b, f.realize)): owners[r] = owners.get(r, 0) + 1
    shared = {stored(r) for r, count in owners.items() if count > 1 and r not in online}
    if not shared - f.realize: return f.realize
    f.realize |= shared


def _constant(u: UOp) -> bool:
  while u.op in MOVEMENT: u = u.src[0]
  return u.op is Ops.CONST


def _stored_under(n: UOp, f: _Fusion) -> UOp | None:
  """The stored node that elementwise `n` alone reads and is a function of, through elementwise nodes of its shape that
  nothing else reads, its other sources constants; None if there is none."""
  u = n
  while True:
    live = [s for s in u.src if not _constant(s)]
    if len(live) != 1 or live[0].tshape != n.tshape or f.consumers[live[0]] != {u}: return None
    s = live[0]
    if s in f.realize: return s
    if s.op not in ALU: return None
    u = s


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
  """Every node's device: the root's, except below a COPY, which names its source device, and at a collective,
  which names its own device and its inputs'."""
  device = {root: root_device}
  for n in reversed(nodes):
    if n.op is Ops.COLLECTIVE:
      kind, _, devs, index, root_index = n.arg
      device[n] = devs[index]
      for j, s in enumerate(n.src): device.setdefault(s, devs[root_index if kind == "broadcast" else j])
      continue
    d = device.get(n, root_device)
    for s in n.src: device.setdefault(s, n.arg[0] if n.op is Ops.COPY else d)
  return device


# a CHECKPOINT is its value: its other sources only serve its gradient
NARROW_FLOATS = (dtypes.float16, dtypes.bfloat16)
# before the boundaries are chosen: a checkpoint is its value; a 16-bit value cast to float32 and back is itself; a cast
# to a 16-bit float goes below views (a view moves elements, the cast converts them: they commute), so the cast of a tensor
# is one node however it is viewed (autocast casts each use of a float32 tensor: a weight in its product and in its
# gradient's, an activation through a transpose)
_canonical = PatternMatcher([
  (UPat(Ops.CHECKPOINT, name="c"), lambda c: c.src[0]),
  # a 16-bit value widened to float32 and narrowed back is itself (exact both ways): autocast casts a bf16 gradient read as
  # float32 (a bias's sum) back to bf16 for its products, which then read the same buffer as the sum
  (UPat(Ops.CAST, NARROW_FLOATS, src=(UPat(Ops.CAST, dtypes.float32, src=(UPat(name="x"),)),), name="c"),
   lambda c, x: x if x.dtype == c.dtype else None),
  (UPat(Ops.CAST, NARROW_FLOATS, src=(UPat(MOVEMENT, name="view"),), name="c"),
   lambda c, view: UOp(view.op, c.dtype, (view.src[0].cast(c.dtype), *view.src[1:]), view.arg)),
])


def _node_devices(roots: list[UOp], devices: list[str]) -> dict[UOp, str]:
  node_device: dict[UOp, str] = {}
  for root, dev in zip(roots, devices):
    for n, d in _device_of(dev, toposort([root]), root).items(): node_device.setdefault(n, d)
  return node_device


def _split_reductions(nodes: list[UOp], node_device: dict[UOp, str]) -> dict[UOp, UOp]:
  """A reduction of n >= SPLIT_REDUCE_MIN elements to one value has no output loop for the threads to split: reduce it to
  p partials first (a kernel of p rows, p the largest of 64, 32, ..., 2 that divides n), stored, then the partials (a
  second kernel of p elements). Devices in SPLIT_REDUCE_DEVICES; NOOPT=1 keeps one kernel. Returns old -> new nodes."""
  out: dict[UOp, UOp] = {}
  for r in nodes:
    if r.op is not Ops.REDUCE or NOOPT or node_device[r].split(":")[0] not in SPLIT_REDUCE_DEVICES or r.size != 1: continue
    n = r.src[0].size
    if n < SPLIT_REDUCE_MIN or r.dtype.itemsize < 4 or (p := next((p for p in (64, 32, 16, 8, 4, 2) if n % p == 0), 0)) == 0: continue
    partials = r.src[0].reshape((p, n // p)).reduce(r.arg[0], (1,))
    total = UOp(Ops.CONTIGUOUS, r.dtype, (partials,)).reduce(r.arg[0], (0,))
    for hook in rebuild_hooks: hook(r, partials); hook(r, total)  # both kernels come from the user's reduction (provenance)
    out[r] = total.reshape(r.tshape)
  return out


def _substitute_all(roots: list[UOp], mapping: dict[UOp, UOp]) -> list[UOp]:
  """`roots` with `mapping` applied, in one walk for all of them (a training step has a root per gradient, which share most
  of their graph: one walk per root took ~1 s of the large GPT's first schedule)."""
  return list(substitute(UOp(Ops.SINK, dtypes.void, tuple(roots)), mapping).src)


def create_template(roots: list[UOp], devices: list[str]) -> ScheduleTemplate:
  """Schedule normalized `roots` (inputs already replaced by slots) to be realized on `devices`."""
  roots = graph_rewrite_many(roots, _canonical)
  nodes = toposort(roots)
  node_device = _node_devices(roots, devices)
  if nested := reassociate(nodes, _reassociates(node_device), lambda r: _on_cuda(node_device[r].split(":")[0])):
    roots = _substitute_all(roots, nested)
    nodes, node_device = toposort(roots), _node_devices(roots, devices)
  if split := _split_reductions(nodes, node_device):
    roots = _substitute_all(roots, split)
    nodes, node_device = toposort(roots), _node_devices(roots, devices)
  boundaries = _boundaries(roots, nodes, lambda n: node_device[n].split(":")[0])
  # a root that reshapes a value stored anyway (attention's bfloat16 output, which the backward's row term also reads) is
  # that value's buffer, not a copy of it (not an assignment's: that buffer is the assigned variable's, which changes later)
  boundaries -= {r for r in roots if r.op is Ops.RESHAPE and (base := strip_reshapes(r)) in boundaries and base.op is not Ops.ASSIGN}

  temps: list[TempBuffer] = []
  where: dict[UOp, Binding] = {}  # boundary node -> buffer that holds it
  kernels: list[KernelSpec] = []
  reads: list[set[UOp]] = []      # per kernel: the boundary nodes and input BUFFER slots it reads
  computed: list[tuple[UOp, ...]] = []  # per kernel: the nodes it computes (a collective: its first output seen)
  leader: dict[UOp, UOp] = {}     # each output of a collective -> the node standing for its step
  for n in nodes:
    if n not in boundaries or n in where: continue
    computed.append((n,))
    if n.op is Ops.COLLECTIVE:
      _collective_step(n, node_device, temps, where, kernels, reads, leader)
      continue
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
      reads.append({leader.get(src, src)})
      continue
    ast, inputs, leaves, fused = _kernel_ast((n,), boundaries, where)
    kernels.append(KernelSpec(ast, node_device[n], (out, *inputs), fused))
    reads.append({leader.get(x, x) for x in leaves})
  # a kernel that reads a buffer's old value and also (through other kernels) a value computed after the ASSIGN that
  # overwrites it cannot run before the ASSIGN: its reads of the old value go through a copy made before it
  stale: list[tuple[int, UOp]] = []
  deps = _dependences(computed, reads, stale)
  if (stale_nodes := _stale_reads(kernels, stale)) and (copied := _rebuild_keeping_targets(roots, stale_nodes)) != roots:
    return create_template(copied, devices)
  kernels, computed, reads = _merge_outputs(kernels, computed, reads, deps, boundaries, where)
  outputs: list[Binding] = []
  copies: list[KernelSpec] = []
  for r in roots:
    out = _binding_of(r, where)
    if out.kind == "temp" and out in outputs:  # one graph realized for two tensors (two zero states): they must not share memory
      temps.append(temps[out.index])
      copies.append(KernelSpec(None, temps[out.index].device, (Binding("temp", len(temps) - 1), out)))
      out = Binding("temp", len(temps) - 1)
    outputs.append(out)
  order = _order(computed, reads)
  return ScheduleTemplate(tuple(kernels[i] for i in order) + tuple(copies), tuple(temps), tuple(outputs))


def _collective_step(n: UOp, node_device: dict[UOp, str], temps: list[TempBuffer], where: dict[UOp, Binding], kernels: list[KernelSpec],
                     reads: list[set[UOp]], leader: dict[UOp, UOp]) -> None:
  """One step for all outputs of the collective `n` belongs to, whichever of them the graph uses (the others are temps)."""
  kind, op, devices, _, root = n.arg
  outs = [UOp(Ops.COLLECTIVE, n.dtype, n.src, (kind, op, devices, i, root)) for i in range(len(devices))]
  for o, d in zip(outs, devices):
    temps.append(TempBuffer(n.size, n.dtype, d))
    where[o], leader[o] = Binding("temp", len(temps) - 1), n
  srcs = [s if s in where else strip_reshapes(s) for s in n.src]
  kernels.append(KernelSpec(None, node_device[n], (*(where[o] for o in outs), *(_binding_of(s, where) for s in srcs)),
                            collective=(kind, op, devices, root)))
  reads.append({leader.get(s, s) for s in srcs})


def _binding_of(u: UOp, where: dict[UOp, Binding]) -> Binding:
  """The buffer holding `u`: a computed node's, or the input slot it is a reshape of."""
  if u in where: return where[u]
  base = strip_reshapes(u)
  if (slot := slot_of(base)) is not None: return Binding("input", slot[1])
  return where[base]


def _stored_value(root: UOp) -> UOp:
  """What the kernel computing boundary `root` stores: an assignment's value, a CONTIGUOUS's or AFTER's source, or `root`."""
  return root.src[1] if root.op is Ops.ASSIGN else root.src[0] if root.op in (Ops.CONTIGUOUS, Ops.AFTER) else root


def _kernel_ast(roots: tuple[UOp, ...], boundaries: set[UOp], where: dict[UOp, Binding]) -> tuple[UOp, list[Binding], set[UOp], tuple[UOp, ...]]:
  """The fused graph computing `roots` (one kernel's outputs, PARAM 0..n-1, in the order of `roots`, each one's sources
  before it), with every input (buffer or realized node) replaced by a PARAM; those inputs; the nodes it reads; the fused
  nodes. An output that another reads is computed once: the reader uses its value, not its buffer (engine/outputs.py
  merges only outputs read elementwise at their own position)."""
  group = set(roots)
  params: dict[Binding, UOp] = {}
  inputs: list[Binding] = []
  mapping: dict[UOp, UOp] = {}  # inputs -> PARAMs, and the outputs stored by an ASSIGN or CONTIGUOUS -> their values
  leaves: set[UOp] = set()

  def param(b: Binding, dtype: DType, size: int) -> UOp:
    if b not in params:
      inputs.append(b)
      params[b] = UOp(Ops.PARAM, dtype, (), (len(roots) + len(inputs) - 1, size))
    return params[b]

  # an output's ASSIGN or CONTIGUOUS node is its value to the outputs after it; other outputs are plain nodes of the graph
  inlined = lambda n: n in group and n.op in (Ops.ASSIGN, Ops.CONTIGUOUS)
  stop = lambda n: inlined(n) or n not in group and (n in boundaries or n.op in (Ops.BUFFER, Ops.AFTER))
  ordered: set[UOp] = set()
  fused: list[UOp] = []
  values: list[UOp] = []
  for root in roots:
    # AFTER(x, dep) reads x (a boundary or an input); dep only orders this kernel after the one computing it. It becomes a
    # PARAM before anything else is rewritten: stripped first, a recomputation would merge with the forward it repeats
    if root.op is Ops.AFTER: ordered.update(root.src)
    order = toposort([_stored_value(root)], stop=stop)
    for n in order:
      if not stop(n) or n in mapping: continue
      assert not inlined(n), "an output read by an earlier output of its kernel"
      leaves.add(n)
      if n.op is Ops.BUFFER:
        mapping[n] = param(Binding("input", n.arg[1]), n.dtype, n.size)
      elif n.op is Ops.AFTER:
        x = n.src[0]
        ordered.update(n.src)
        mapping[n] = param(_binding_of(x, where), x.dtype, (x if x in where else strip_reshapes(x)).size).reshape(n.tshape)
      else:
        mapping[n] = param(where[n], n.dtype, n.size).reshape(n.tshape)
    value = substitute(_stored_value(root), mapping)
    if inlined(root): mapping[root] = value
    values.append(value)
    fused += [root, *(n for n in order if not stop(n) and n not in group)]
  # DETACH only matters to gradients
  detached = {n: n.src[0] for n in toposort(values) if n.op is Ops.DETACH}
  while detached:
    values = [substitute(v, detached) for v in values]
    detached = {n: n.src[0] for n in toposort(values) if n.op is Ops.DETACH}
  stores = tuple(UOp(Ops.STORE, dtypes.void, (UOp(Ops.PARAM, r.dtype, (), (i, r.size)), v)) for i, (r, v) in enumerate(zip(roots, values)))
  return UOp(Ops.SINK, dtypes.void, stores), inputs, leaves | ordered, tuple(dict.fromkeys(fused))


def _groups_recomputed(kind: str) -> bool:
  """Whether sums over one recomputed product share a kernel on this device: CUDA's flash and recomputed plans, and the
  CPU's flash renderers (codegen/cpu_flash.py: O with its row max and sum; cpu_flash_bwd.py: dK with dV), take several."""
  return _on_cuda(kind) or kind == "CPU"


def _crosswise(device: str) -> bool:
  """Whether a sum along a recomputed product's other axis may share its pass (dQ with dK and dV): the CPU's renderer adds
  each row tile's share into a buffer of the whole output, one thread a head (codegen/cpu_flash_bwd.py). CUDA's plan would
  need atomic adds (FlashAttention-2's dQ), which it does not have."""
  kind = device.split(":")[0]
  return kind == "CPU" and not _on_cuda(kind)


def _one_pass(statistic: UOp, r: UOp, device: str) -> bool:
  """May sum `r` run in one pass with the row statistic it reads (engine/outputs.py recomputed_groups) on `device`? A
  sum of exps of the scores minus their max (softmax's denominator) with the max; a weighted sum with the max and the
  denominator where the online rule takes it: on CUDA of the flash plan's form (`online_fusion.tensor_core_form`: no
  dropout mask on the weights), on the CPU any (codegen/cpu_flash.py)."""
  if r.arg[0] is not Ops.ADD: return False
  cuda = _on_cuda(device.split(":")[0])
  if statistic.arg[0] is Ops.MAX and r.tshape == statistic.tshape: return exp_factor_reads(r.src[0], statistic, casts=cuda)
  found = group_of(r, casts=cuda)
  return found is not None and statistic in found[0] and (not cuda or tensor_core_form(r, found[0][0]))


def _outer_sum(root: UOp) -> UOp | None:
  """The single-axis sum a kernel stores (through casts, reshapes and permutes), None for other kernels."""
  while root.op in (Ops.CAST, Ops.RESHAPE, Ops.PERMUTE): root = root.src[0]
  return root if root.op is Ops.REDUCE and len(root.arg[1]) == 1 else None


def _merge_outputs(kernels: list[KernelSpec], computed: list[tuple[UOp, ...]], reads: list[set[UOp]], deps: list[set[int]],
                   boundaries: set[UOp], where: dict[UOp, Binding]) -> tuple[list[KernelSpec], list[tuple[UOp, ...]], list[set[UOp]]]:
  """The kernels with the groups `engine/outputs.py:output_groups` picks (elementwise kernels of one loop shape) and, on
  CUDA and the CPU, `recomputed_groups` (sums over one recomputed product along the same axis: attention's dK and dV; O
  with its row statistics) merged into one kernel each, which stores all of their outputs. `deps`: `_dependences` of
  the kernels."""
  candidates = {i: Candidate(computed[i][0], (k.device, computed[i][0].tshape), k.nodes, frozenset(reads[i]), k.bindings[0])
                for i, k in enumerate(kernels) if mergeable(k.ast, k.device, computed[i][0], k.nodes, reads[i])}
  groups = [g for g in output_groups(candidates, deps) if len(g) > 1]
  # sums over one recomputed product (`_groups_recomputed`: mapped in one pass): a kernel of one output, a single-axis sum
  reductions = {i: (red, (k.device, computed[i][0].tshape), frozenset(n for n in k.nodes if n.op is Ops.REDUCE and n is not red))
                for i, k in enumerate(kernels) if len(computed[i]) == 1 and _groups_recomputed(k.device.split(":")[0])
                and (red := _outer_sum(computed[i][0])) is not None and red in k.nodes}
  groups += recomputed_groups(reductions, deps, groups, _one_pass, _crosswise)
  if not groups: return kernels, computed, reads
  out_kernels, out_computed, out_reads = [], [], []
  merged = {i: g for g in groups for i in g}
  for i, k in enumerate(kernels):
    if i not in merged or len(merged[i]) == 1:
      out_kernels.append(k); out_computed.append(computed[i]); out_reads.append(reads[i])
      continue
    if i != merged[i][0]: continue  # the group's kernel stands where its first member stood
    roots = tuple(computed[j][0] for j in merged[i])
    ast, inputs, _, fused = _kernel_ast(roots, boundaries, where)
    out_kernels.append(KernelSpec(ast, k.device, (*(kernels[j].bindings[0] for j in merged[i]), *inputs), fused, outputs=len(roots)))
    out_computed.append(roots)
    out_reads.append(set().union(*(reads[j] for j in merged[i])) - set(roots))
  return out_kernels, out_computed, out_reads


def _dependences(computed: list[tuple[UOp, ...]], reads: list[set[UOp]], stale: list[tuple[int, UOp]] | None = None) -> list[set[int]]:
  """Per kernel, the kernels it must run after: those whose results it reads, an earlier ASSIGN to the buffer it assigns,
  and each kernel that reads a buffer's old value before an ASSIGN (of this kernel) overwrites it. A reader of the old
  value that must also run after the ASSIGN is added to `stale` as (kernel, buffer) instead (create_template gives it a
  copy of the old value)."""
  index = {n: i for i, ns in enumerate(computed) for n in ns}
  deps: list[set[int]] = [{index[x] for x in r if x in index} - {i} for i, r in enumerate(reads)]
  assigns = [(i, n, strip_reshapes(n.src[0])) for i, ns in enumerate(computed) for n in ns if n.op is Ops.ASSIGN]
  # a second assignment to a buffer in one schedule writes after the first (its target is the first ASSIGN)
  for i, _, target in assigns:
    if target in index and index[target] != i: deps[i].add(index[target])
  for i, _, target in assigns:
    for j, r in enumerate(reads):
      if j == i or target not in r: continue
      if not _depends_on(j, i, deps): deps[i].add(j)
      elif stale is not None: stale.append((j, target))
  return deps


def _stale_reads(kernels: list[KernelSpec], stale: list[tuple[int, UOp]]) -> dict[UOp, UOp]:
  """For each kernel that must read a buffer's old value after the ASSIGN that overwrites it (`stale`, from `_dependences`):
  its nodes that read the buffer, each -> the same node reading CONTIGUOUS(buffer) instead, a copy taken before the ASSIGN."""
  out: dict[UOp, UOp] = {}
  for j, target in stale:
    copy = UOp(Ops.CONTIGUOUS, target.dtype, (target,))
    for n in kernels[j].nodes:
      if target in n.src and n.op is not Ops.ASSIGN: out[n] = UOp(n.op, n.dtype, tuple(copy if s is target else s for s in n.src), n.arg)
  return out


def _rebuild_keeping_targets(roots: list[UOp], mapping: dict[UOp, UOp]) -> list[UOp]:
  """`roots` with the nodes of `mapping` replaced, except in the target of an ASSIGN (the buffer it writes stays itself)."""
  done: dict[UOp, UOp] = {}
  for node in toposort(roots):
    if node in mapping: done[node] = UOp(mapping[node].op, node.dtype, tuple(done.get(s, s) for s in mapping[node].src), node.arg)
    elif node.op is Ops.ASSIGN:
      target = node.src[0] if is_contiguous_view(node.src[0]) else done[node.src[0]]  # (an earlier ASSIGN is rebuilt)
      done[node] = UOp(node.op, node.dtype, (target, *(done[s] for s in node.src[1:])), node.arg)
    else: done[node] = UOp(node.op, node.dtype, tuple(done[s] for s in node.src), node.arg) if any(done[s] is not s for s in node.src) else node
    if done[node] is not node:
      for hook in rebuild_hooks: hook(node, done[node])
  return [done[r] for r in roots]


def _order(computed: list[tuple[UOp, ...]], reads: list[set[UOp]]) -> list[int]:
  """Kernel order: after the kernels whose results they read, and a kernel that reads a buffer's old value
  before the ASSIGN that overwrites it."""
  deps = _dependences(computed, reads)
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
