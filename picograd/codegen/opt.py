"""Kernel optimization for the CPU: unroll ("upcast") output loops of reductions into register accumulators.

The lowered form of a matrix product is a loop over (i, j) with an inner reduction over k
whose load of b strides through memory. Upcasting j by U replaces the loop over j by one over
j' = j // U and U copies of the body for j = j'*U + c: the copies share the load of a (it
does not depend on j), their loads of b are U consecutive floats, and linearize gives the U
REDUCEs one loop with U accumulators. LLVM's SLP vectorizer then turns the copies into vector
loads and vector FMAs. Upcasting i as well reuses each vector of b for several rows: the k loop
becomes a small outer product held in registers.
Loops whose sizes hold no whole 16-lane vectors (the makemore MLP's 27 and 30 wide products) get
tiles SLP still packs: one row of the odd width, or half-width vectors along another output loop
with contiguous loads (the gradient a.T @ g, whose stored-contiguous loop is the odd one).

First, a reduction's expensive terms that the output loop computes again are stored into the output and read back
(codegen/stored_terms.py: softmax's exp once per element). Before planning, a loop that pad gates cut into a few equal regions (the gradient of a
concatenation such as the fused q, k, v projection) is split into one gate-free copy per region
(split_gated_loops), and where most loads are contiguous along the reduction the plan leaves the
reduction loop to the loop vectorizer rather than vectorizing across outputs.

The pass chooses which loops to upcast by probing the index expressions numerically (the
stride of each load along each loop), so it does not depend on how the simplifier spelled an
index. An upcast factor always divides the loop size; sizes with no suitable divisor are left
alone. `NOOPT=1` turns the pass off; the results are the same either way (each output's
reduction still runs over k in the same order), except that a split reduction adds its regions'
partial sums (a reassociation NOOPT's policy allows).
"""
from __future__ import annotations
import math, random
from typing import Any, Callable
from picograd.dtype import c_div, c_mod
from picograd.helpers import NOOPT, prod
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.streaming import plan_streaming
from picograd.codegen.stored_terms import store_terms

# Registers hold 32 vectors of 64 bytes on AVX-512: the contiguous loop gets two vectors' worth
# of columns, and ROWS rows, so ROWS * 2 accumulators plus the loaded vectors stay in registers.
VECTOR_BYTES = 64
ROWS = 4
# LLVM's SLP vectorizer reliably packs only small tiles of odd shapes: measured on the makemore MLP's
# matrix products (27, 30, 200 wide), 8 x 9 accumulators vectorize and 8 x 16 or 27 x 2 fall back
# to scalar code, 6x slower. Tiles that are not whole 16-lane vectors stay at about this many accumulators.
SMALL_TILE = 72
# A loop is split into at most this many equal regions to take the pad gates out of it (a concatenation of q, k, v is 3).
MAX_REGIONS = 4
# A cap on the operations an upcast tile repeats, to bound LLVM's compile time (a 4x32 matmul tile is ~600).
MAX_UNROLLED_OPS = 8192
# A tile of one row whose reduction strides through memory (column sums, a bias gradient) reads its columns' run of
# contiguous bytes per step of the reduction and then jumps a row: 2 vectors (128 bytes) a step stream at ~25 GB/s on
# 2-core Zen 5, 16 vectors (1 KiB) at ~45 (column sums of 4096^2: 2.3 -> 1.5 ms, PyTorch 3.0). 32 vectors were a little
# faster again but doubled LLVM's compile time (0.17 -> 0.3 s). The widened loop keeps at least MIN_BLOCKS iterations
# of the output loops for the threads to share.
WIDE_VECTORS = 16
MIN_BLOCKS = 8

_INT_OPS: dict[Ops, Callable[[int, int], Any]] = {
  Ops.ADD: lambda a, b: a + b, Ops.MUL: lambda a, b: a * b, Ops.MAX: max,
  Ops.IDIV: lambda a, b: c_div(a, b) if b else None, Ops.MOD: lambda a, b: c_mod(a, b) if b else None,
  Ops.CMPLT: lambda a, b: a < b, Ops.CMPNE: lambda a, b: a != b,
  Ops.AND: lambda a, b: a & b, Ops.OR: lambda a, b: a | b, Ops.XOR: lambda a, b: a ^ b,
}


def _evaluate(u: UOp, env: dict[UOp, int]) -> int | None:
  """The integer value of index expression `u` with the loops set as in `env`; None when it depends on loaded data."""
  vals: dict[UOp, int | None] = {}
  for n in toposort([u]):
    s: list[Any] = [vals[x] for x in n.src]  # ints past the `None in s` test (mypy cannot narrow a list by membership)
    if n.op is Ops.CONST: vals[n] = n.arg
    elif n.op is Ops.RANGE: vals[n] = env.get(n, 0)
    elif None in s: vals[n] = None
    elif n.op is Ops.NEG: vals[n] = -s[0]
    elif n.op is Ops.CAST: vals[n] = int(s[0])
    elif n.op is Ops.WHERE: vals[n] = s[1] if s[0] else s[2]
    elif n.op in _INT_OPS: vals[n] = _INT_OPS[n.op](s[0], s[1])
    else: vals[n] = None  # LOAD (a gather) and anything else data-dependent
  return vals[u]


def index_stride(index: UOp, rng: UOp, ranges: list[UOp], rnd: random.Random | None = None) -> int | None:
  """How far `index` moves when loop `rng` steps by one, if that is the same at a few sample points (else None)."""
  if rng.arg[1] < 2: return 0
  rnd = rnd or random.Random(0)
  seen = set()
  for _ in range(3):
    env = {r: rnd.randrange(max(r.arg[1], 1)) for r in ranges}
    env[rng] = rnd.randrange(rng.arg[1] - 1)
    a = _evaluate(index, env)
    env[rng] += 1
    b = _evaluate(index, env)
    if a is None or b is None: return None
    seen.add(b - a)
  return seen.pop() if len(seen) == 1 else None


def _depends(u: UOp, rng: UOp) -> bool: return rng in toposort([u])


def _factor(size: int, limit: int) -> int:
  """The upcast factor for a loop of `size`: all of it when that is at most `limit`, else the largest power of two <= limit dividing it.

  Unrolling a short loop whole also means work that does not depend on it (an activation fused
  into a matrix product) runs once per row instead of once per column.
  """
  if size <= limit: return size
  f = 1
  while f * 2 <= limit and size % (f * 2) == 0: f *= 2
  return f


def _wide_factor(size: int, f: int, lanes: int, outputs: int) -> int:
  """Factor `f` of a loop of `size` doubled while it divides size, stays within WIDE_VECTORS vectors of `lanes` and leaves
  at least MIN_BLOCKS iterations of the `outputs` output loop iterations."""
  while 2 * f <= WIDE_VECTORS * lanes and size % (2 * f) == 0 and outputs // (2 * f) >= MIN_BLOCKS: f *= 2
  return f


def _divisor(size: int, limit: int) -> int:
  """The largest divisor of `size` that is at most `limit` (27 rows with a limit of 9 gives 9, where _factor gives 1)."""
  return max(d for d in range(1, min(size, limit) + 1) if size % d == 0)


def _cut_points(nodes: list[UOp]) -> dict[UOp, set[int]]:
  """For each loop compared with a constant (`r < k`: the gates of pads and concatenations), the values k inside it."""
  cuts: dict[UOp, set[int]] = {}
  for n in nodes:
    if n.op is Ops.CMPLT and n.src[0].op is Ops.RANGE and n.src[1].op is Ops.CONST and 0 < n.src[1].arg < n.src[0].arg[1]:
      cuts.setdefault(n.src[0], set()).add(n.src[1].arg)
  return cuts


def split_gated_loops(sink: UOp) -> UOp:
  """Split each loop whose gates cut it into a few equal regions into one copy per region, so the gates fold away.

  The gradient of a concatenation (the fused q, k, v projection) is a sum of padded pieces: a loop
  over its 192 columns reads three buffers under three gates, every load guarded and two of three
  wasted. Cut at the region boundaries (64, 128) each copy reads one buffer with no gate and an
  affine index. A global loop becomes one STORE per region (the region's copy of the loop body);
  a reduction loop becomes one REDUCE per region over a shorter loop, added together (a
  reassociation of the sum, as NOOPT's policy allows), which linearize runs in one loop nest.
  """
  if len(sink.src) == 0 or any(st.op is not Ops.STORE for st in sink.src): return sink
  nodes = toposort([sink])
  for rng, cuts in _cut_points(nodes).items():
    size = rng.arg[1]
    width = math.gcd(size, *cuts)
    if not 1 < size // width <= MAX_REGIONS: continue
    short = UOp(Ops.RANGE, rng.dtype, (), (rng.arg[0], width, rng.arg[2]))
    regions = [short + k * width for k in range(size // width)]
    if rng.arg[2] == "global":
      sink = UOp(Ops.SINK, sink.dtype, tuple(substitute(st, {rng: r}) for st in sink.src for r in regions), sink.arg)
    else:
      owners = [n for n in nodes if n.op is Ops.REDUCE and rng in n.src[1:]]
      sink = substitute(sink, {x: _combine(x.arg, [UOp(Ops.REDUCE, x.dtype, (substitute(x.src[0], {rng: r}),
                                                       *(short if s is rng else s for s in x.src[1:])), x.arg) for r in regions])
                               for x in owners})
    sink = graph_rewrite(sink, symbolic)
    nodes = toposort([sink])
  return sink


def _combine(op: Ops, parts: list[UOp]) -> UOp:
  """The partial reductions `parts` combined by the reduction's operation, left to right."""
  out = parts[0]
  for p in parts[1:]: out = out.alu(op, p)
  return out


def plan_upcasts(sink: UOp) -> list[tuple[UOp, int]]:
  """(global RANGE, factor) pairs worth upcasting in this lowered kernel; empty when none helps."""
  if len(sink.src) == 0 or any(st.op is not Ops.STORE for st in sink.src): return []
  nodes = toposort([sink])
  reduces = [n for n in nodes if n.op is Ops.REDUCE]
  if not reduces: return []
  every_glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  red_ranges = {r for x in reduces for r in x.src[1:]}
  if any(r.arg[1] == 0 for r in every_glob) or any(r.arg[1] == 0 for r in red_ranges): return []  # no work
  ranges = every_glob + sorted(red_ranges, key=lambda r: r.arg[0])
  # only loops that enclose a reduction: the column loop of a row softmax runs after its row's reductions, and
  # copies of its elementwise body vectorize better by the loop vectorizer (16 lanes) than by SLP (8 copies, 6x slower)
  glob = [g for g in every_glob if any(_depends(x, g) for x in reduces)]
  # the loads inside the reduction loops are the ones executed K times per output
  inner = [n for n in toposort([x.src[0] for x in reduces]) if n.op is Ops.LOAD and n.src[0].op is Ops.PARAM
           and any(_depends(n.src[1], r) for r in red_ranges)]
  if not inner: return []
  rnd = random.Random(0)
  innermost_red = max(red_ranges, key=lambda r: r.arg[0])
  itemsize = max(x.dtype.itemsize for x in reduces)
  lanes = max(VECTOR_BYTES // itemsize, 2)
  plan: list[tuple[UOp, int]] = []
  def along(g: UOp) -> list[int | None]: return [index_stride(ld.src[1], g, ranges, rnd) for ld in inner]
  along_red = [index_stride(ld.src[1], innermost_red, ranges, rnd) == 1 for ld in inner]
  def vector_load(g: UOp) -> bool:
    """Inner loads run along output loop `g` but not along the reduction, at least as many as run along the reduction.

    Vectors along `g` make the loads contiguous along the reduction strided (gathers, or scalar
    code): where most loads are contiguous along the reduction (a LayerNorm gradient summing
    five row-major terms and one transposed one), its loop vectorizes better.
    """
    n = sum(s == 1 and not red for s, red in zip(along(g), along_red))
    return n > 0 and n >= sum(along_red)
  col = next((g for g in reversed(glob) if all(index_stride(st.src[1], g, ranges, rnd) == 1 for st in sink.src)), None)
  # a loop other than the stored-contiguous one whose loads are contiguous, for half-width vectors
  other = next((g for g in reversed(glob) if g is not col and g.arg[1] % (lanes // 2) == 0 and vector_load(g)), None)
  # the stores of a split loop (split_gated_loops) each reuse the loaded column vectors already, like rows of the
  # tile: three of them take 2 rows each (12 accumulators; with 4 rows, 24 of them, 1.4x slower on the GPT step)
  rows_limit = ROWS if len(sink.src) == 1 else max(1, 2 * ROWS // len(sink.src))
  whole = False
  if col is not None and vector_load(col) and (f := _factor(col.arg[1], 2 * lanes)) % lanes == 0:
    # whole vectors along the stored-contiguous loop: SLP turns the copies into vector loads and FMAs
    plan.append((col, f))
    whole = True
  elif other is not None:
    # the stored-contiguous loop is of an odd size or has no contiguous loads (a.T @ g, written transposed):
    # half-width vectors along another output loop, stored with a stride once per output
    col = other
    plan.append((col, lanes // 2))
    rows_limit = SMALL_TILE // (lanes // 2)
  elif col is not None and vector_load(col):
    # one row of an odd width (27, 30, 40 floats): the largest that SLP still packs into vectors
    size, f = col.arg[1], _factor(col.arg[1], 2 * lanes)
    if f < size and any(s == 0 for s in along(col)):  # wider rows only pay where a broadcast load is shared by the row
      f = max((d for d in range(lanes // 2, 3 * lanes + 1, lanes // 2) if size % d == 0), default=f)
    if f > 1: plan.append((col, f))
    # half vectors cut from a longer row (a convolution's 8 of 56 columns) take a few rows too, within half a small tile
    rows_limit = max(1, SMALL_TILE // 2 // f) if f % (lanes // 2) == 0 and f < size else 1
  elif col is not None and any(s == 0 for s in along(col)):
    # no contiguous loads along any output loop: a small tile still reuses each loaded value several times
    if (f := _factor(col.arg[1], lanes // 2)) > 1: plan.append((col, f))
  # rows: another output loop that some inner load does not depend on, so a loaded vector serves several rows; first
  # choice a loop that the vector loads along `col` do not depend on (a convolution's output channels, not its output rows)
  vec_loads = [s == 1 for s in along(col)] if col is not None else [False] * len(inner)
  shares = [g for g in reversed(glob) if g is not col and g.arg[1] >= 2 and any(s == 0 and v for s, v in zip(along(g), vec_loads))]
  for g in shares + [g for g in reversed(glob) if g not in shares]:
    if g is col or g.arg[1] < 2: continue
    if any(s == 0 for s in along(g)):
      if (f := _divisor(g.arg[1], rows_limit)) > 1: plan.append((g, f))
      break
  if whole and len(plan) == 1:
    # one row of whole vectors, no other row sharing its loads (column sums, a vector-matrix product): each step of the
    # reduction reads a longer contiguous run of the vector operands (WIDE_VECTORS)
    rng, f = plan[0]
    plan[0] = (rng, _wide_factor(rng.arg[1], f, lanes, prod(g.arg[1] for g in every_glob)))
  # every copy of the reduction's body is code LLVM compiles: a large fused body gets a smaller tile
  body = len(toposort([x.src[0] for x in reduces]))
  while plan and body * prod(f for _, f in plan) > MAX_UNROLLED_OPS:
    rng, f = plan[-1]
    plan[-1:] = [(rng, f // 2)] if f // 2 > 1 and f % 2 == 0 else []
  return plan


def upcast(sink: UOp, rng: UOp, factor: int) -> UOp:
  """Replace loop `rng` by one `factor` times shorter and `factor` copies of every STORE (the loop index rng'*factor + c)."""
  short = UOp(Ops.RANGE, rng.dtype, (), (rng.arg[0], rng.arg[1] // factor, rng.arg[2]))
  stores = [substitute(st, {rng: short * factor + c}) for st in sink.src for c in range(factor)]
  return UOp(Ops.SINK, sink.dtype, tuple(stores), sink.arg)


def optimize(sink: UOp) -> tuple[UOp, list[str]]:
  """The lowered kernel `sink`, split at its gates and upcast where it pays, and one line per optimization applied
  (what `DEBUG=3` lists). Unchanged, with nothing applied, under NOOPT=1."""
  if NOOPT: return sink, []
  sink, applied = store_terms(sink)
  if (streamed := plan_streaming(sink)) is not None:
    return graph_rewrite(streamed, symbolic), applied + [f"streaming (non-temporal) stores, loop upcast by {len(streamed.src)}"]
  split = split_gated_loops(sink)
  if split is not sink: applied.append(f"split gated loops at their regions' boundaries: {len(sink.src)} -> {len(split.src)} stores")
  plan = plan_upcasts(split)
  for rng, factor in plan:
    split = upcast(split, rng, factor)
    applied.append(f"upcast {rng.arg[2]} loop {rng.arg[0]} (size {rng.arg[1]}) by {factor}")
  return (graph_rewrite(split, symbolic) if plan else split), applied


__all__ = ["optimize", "plan_upcasts", "split_gated_loops", "upcast", "index_stride"]
