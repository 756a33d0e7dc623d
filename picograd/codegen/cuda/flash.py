"""Flash attention on the GPU as an IR pass (codegen layer): the `flash` plan for online-softmax kernels of 16-bit products.

The online rule (engine/online_fusion.py; on CUDA only for `tensor_core_form`: autocast's attention) keeps a softmax-weighted
sum and its scores in one kernel. Lowered, such a kernel stores a value built from sums over a key loop j:

    x(j) = E(sum_k a(i, k) * b(j, k), j)       the score: elementwise work E (a scale, casts, a mask) on a 16-bit product
    M    = max_j x(j)                           accumulated in float32 (q . k)
    R    = sum_j float(h(exp2((x(j) - M) * c) * outside) * F(j, d))    the weighted sum: a 16-bit product (P v) in float32
    S    = sum_j exp2((x(j) - M) * c)                                   the denominator (outside = 1 / S)

`match_flash_cuda` recognizes it (h: the 16-bit type of both products; the sums reading exp2 only, or its product with one 16-bit
factor F along the keys and one output column d, and factors constant along the keys). `map_flash` writes it with the kernel-
level ops the GEMM plans use (tiling.py), nothing printed by hand:

- a block (SPECIAL) per batch value and tile of BM = 64 query rows; 4 warps (128 threads), warp w owning rows 16w..16w + 15;
- the query tile a (64 x K) is staged into shared memory once (DEFINE_LOCAL, rows padded by 8); per key tile jt of BN = 64
  keys (a loop holding BARRIERs) the tiles of b (64 x K) and F (64 x D) are read from shared memory (two buffers each);
- the scores S = a b^T of the warp's 16 x 64: FRAGMENTs (ldmatrix) of a (once) and of b, a chain of MMAs (mma.sync m16n8k16)
  over K in steps of 16: lane l holds rows g, g + 8 and columns 2t, 2t + 1 of each 8 keys (g = l / 4, t = l % 4), so E
  runs on each of them with its row and key substituted (keys past the end: -inf);
- a row's block max (over the score without its positive constant factor, SDPA's scale, which joins the exp's constant:
  `_scaled`) is the max over the lane's 16 values of it, then over its quad of lanes (GROUP_REDUCE of 4 lanes:
  two shuffles); the running max is RUNNING_MAX over jt, the sums are RESCALED over jt with exp2((m_old - m_new) * c): the
  denominator per lane (its quad combines after the loop), the output columns as a chain of MMAs (MMA's third source: one
  per 16 keys) of P, packed from the exps in registers (FRAGMENT "pack": the C layout of two 8-key tiles is the A layout of
  one 16-key step, rounded to h in pairs; no shared memory), and F (ldmatrix.trans), added into O after O is rescaled;
- after the loop each lane's outputs (rows g, g + 8, columns 2t, 2t + 1 of each 8) go through the kernel's own stored
  expression with R = O * outside, S = the denominator and M = the max substituted (the epilogue: 1 / S, the cast, the
  per-head store), gated at the last query tile's edge;
- a training step's forward also stores the row max and the sum of exps (the kernels the backward reads them in come after;
  engine/outputs.py groups them with O): one lane of a quad stores each row's values; without O (the weights carry a
  dropout mask, which this plan does not take) the kernel stores them alone.

Where the score is where(gate, ..., -inf) with a gate j <= i + c (causal), the key loop's trip count is a value: the tiles
past the last key the block's last row sees are not visited (RANGE with a source). Rows past the end and keys past the end
read index 0 (clamped; their outputs are not stored, their scores are -inf). Tiles of plain 16-bit loads move by 16-byte
loads; the key tiles are double-buffered, the next one copied by cp.async (plain 16-bit loads of the tiles' type: the
stored casts of k and v on CUDA; one group per tile, waited for before the next barrier) or loaded into registers at the
start of an iteration and stored at its end: one barrier per key tile. Q's fragments are loaded once, before the key loop.
Kept simple for now (NOTES.md, CUDA backend): the outputs are stored from the fragments.
"""
from __future__ import annotations
import math
from dataclasses import dataclass
from typing import Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import ceildiv, prod
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.online import _factors, _exp_of_shifted, _canonical
from picograd.codegen.cuda.analysis import contiguous_in
from picograd.codegen.cuda.fast_math import exact
from picograd.codegen.cuda.ops import APPROX
from picograd.codegen.cuda.mapping import digits, special
from picograd.codegen.cuda.target import CUDATarget
from picograd.codegen.cuda.tiling import Layout

# query rows per block: a warp per 16 (BM // 16 warps). 128 with 8 warps was slower on the H200 (causal bf16 SDPA, B=64
# H=6 D=64: forward 0.049 -> 0.065 ms at T = 256, 0.338 -> 0.451 at T = 1024; training kernels 0.28 -> 0.33, 2.09 -> 2.52)
BM = 64
BN = 64        # keys per tile
# the forward's __launch_bounds__ minimum of blocks an SM: the driver's ptxas gave it more than 128 registers (3 blocks an
# SM); capped at 128 the T = 1024 forward went 329 -> 298 us (H200, session 13), T = 256 unchanged
FORWARD_BLOCKS_PER_SM = 4
INT = dtypes.int32
# causal blocks run their heads' longest row tiles first (`row_tiles_in_order`) within chunks of heads whose key-side tiles
# (every row tile of a head reads them) stay in L2 together: about half an H100's or H200's 50 MB
L2_REUSE_BYTES = 24 << 20


def row_tiles_in_order(block: UOp, tiles: int, heads: int, head_bytes: int, longest: str | None) -> tuple[UOp, UOp]:
  """(row tile, head) of block `block` of `heads` x `tiles`. Without a causal bound, a head's tiles follow each other. With
  one, a row tile's work grows with its index ("last") or shrinks ("first"), and the GPU gives blocks to SMs in index order:
  so the longest tiles of a chunk of heads come first, then the next longest, and the last wave holds the shortest (the
  greedy order that ends with the least idle SMs: a simulation of 528 slots gives 115 -> 107 tile-times at T = 1024, 11.5 ->
  9.5 at T = 256, against 105 and 8.7 with no tail). A chunk is the most heads (a divisor of `heads`) whose `head_bytes`
  (what every row tile of a head reads) fit L2_REUSE_BYTES together, so the key tiles are still read from L2."""
  if longest is None: return block % tiles, block // tiles
  chunk = max((n for n in range(1, heads + 1) if heads % n == 0 and n * head_bytes <= L2_REUSE_BYTES), default=1)
  rank, head = block % (chunk * tiles) // chunk, block // (chunk * tiles) * chunk + block % chunk
  return (UOp.const(INT, tiles - 1) + -rank if longest == "last" else rank), head


def _put(x: UOp, at: dict[UOp, UOp]) -> UOp:
  """`x` with nodes replaced, each value cast to the type of what it replaces: the plan's indices are int32, a lowered
  kernel's loops int64 where its index space needs it (attention at T = 1024: 64 x 6 x 1024 x 1024 scores)."""
  return substitute(x, {k: v.cast(k.dtype) for k, v in at.items()})
HALVES = {dtypes.float16: "f16", dtypes.bfloat16: "bf16"}


@dataclass(frozen=True)
class FlashSum:
  """One sum over the keys: of exp2((x - M) * c) alone (a denominator), or of its 16-bit product with `f` (a row of v)."""
  node: UOp
  f: UOp | None        # the 16-bit factor along the keys and the output column, or None
  outside: UOp | None  # factors constant along the keys (1 / the denominator), applied after the pass


@dataclass(frozen=True)
class FlashGPU:
  """A matched kernel: its loops by role, the score and its product's factors, the sums. With a weighted sum (O) it stores
  one value per output column d; without one, values per row built from the maxes and denominators (the row max and sum
  of a training step's softmax, one kernel of two stores)."""
  stores: tuple[UOp, ...]
  maxes: frozenset[UOp]
  c: float
  x: UOp               # the score, over the max's key loop j and the product's loop k (the product is `inner`)
  inner: UOp           # the score's product sum REDUCE(ADD, float(h(a * b)), k)
  a: UOp               # 16-bit, over the batch, i and k
  b: UOp               # 16-bit, over the batch, j and k
  j: UOp
  k: UOp
  batch: tuple[UOp, ...]
  i: UOp
  d: UOp | None
  sums: tuple[FlashSum, ...]
  half: DType

  @property
  def kind(self) -> str: return HALVES[self.half]


def _loops(u: UOp) -> set[UOp]: return {n for n in toposort([u]) if n.op is Ops.RANGE}


def _half_product(u: UOp) -> tuple[UOp, UOp, DType] | None:
  """(x, y, h) when `u` is float32(h(x * y)) with h a 16-bit float type: a 16-bit product accumulated in float32."""
  if u.op is not Ops.CAST or u.dtype != dtypes.float32 or u.src[0].op is not Ops.MUL or u.src[0].dtype not in HALVES: return None
  return u.src[0].src[0], u.src[0].src[1], u.src[0].dtype


def _uncast(u: UOp) -> UOp:
  while u.op is Ops.CAST and u.dtype.is_float and u.src[0].dtype.is_float: u = u.src[0]
  return u


def match_flash_cuda(sink: UOp, target: CUDATarget) -> FlashGPU | None:
  """The flash form of lowered kernel `sink` (module docstring) on a GPU with mma.sync (sm_80+), or None. Where lowering merged
  the head loop with the column (the output stored with its heads side by side: b * T * C + i * C + h * D + d), the merged
  loop is split apart again first."""
  if (found := _match(sink, target)) is not None: return found
  return None if (split := _split_merged(sink)) is sink else _match(split, target)


def _split_merged(sink: UOp) -> UOp:
  """`sink` with each global loop n that is read as n // c (c dividing its size) as two loops, n = hi * c + lo."""
  nodes = toposort([sink])
  next_id = max((n.arg[0] for n in nodes if n.op is Ops.RANGE), default=-1) + 1
  parts: dict[UOp, UOp] = {}
  for n in nodes:
    g, c = (n.src[0], n.src[1].arg) if n.op is Ops.IDIV and n.src[1].op is Ops.CONST else (None, 0)
    if g is None or g.op is not Ops.RANGE or g.arg[2] != "global" or g in parts or not 1 < c < g.arg[1] or g.arg[1] % c: continue
    hi = UOp(Ops.RANGE, g.dtype, (), (next_id, g.arg[1] // c, "global"))
    lo = UOp(Ops.RANGE, g.dtype, (), (next_id + 1, c, "global"))
    parts[g], next_id = hi * c + lo, next_id + 2
  return graph_rewrite(substitute(sink, parts), symbolic) if parts else sink


def _match(sink: UOp, target: CUDATarget) -> FlashGPU | None:
  if target.cc < 80 or any(st.op is not Ops.STORE or len(st.src) != 3 for st in sink.src): return None
  nodes = toposort([sink])
  if any(n.op is Ops.CHECK for n in nodes): return None
  maxes = [n for n in nodes if n.op is Ops.REDUCE and n.arg is Ops.MAX and len(n.src) == 2]
  if not maxes: return None
  m0 = maxes[0]
  j, x = m0.src[1], m0.src[0]
  key = _canonical(x, j)
  same = frozenset(m for m in maxes if m.src[1].arg[1] == j.arg[1] and _canonical(m.src[0], m.src[1]) is key)
  if x.dtype != dtypes.float32: return None
  inner = [n for n in toposort([x]) if n.op is Ops.REDUCE]
  if len(inner) != 1 or inner[0].arg is not Ops.ADD or len(inner[0].src) != 2 or (hp := _half_product(inner[0].src[0])) is None: return None
  p, q, half = hp
  k = inner[0].src[1]
  with_j = [f for f in (p, q) if j in _loops(f)]
  if len(with_j) != 1 or any(f.dtype != half for f in (p, q)): return None
  b = with_j[0]
  a = q if p is b else p
  glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  gx = [g for g in glob if g in _loops(x)]
  rows = [g for g in gx if g in _loops(a) and g not in _loops(b)]
  cols = [g for g in glob if g not in gx]
  # stored: one value per output column d (O), and/or values per row (the max and the sum of exps: two at least alone)
  if len(rows) > 1 or len(cols) > 1 or (not cols and len(sink.src) == 1): return None
  if cols and sum(cols[0] in _loops(st.src[1]) for st in sink.src) != 1: return None
  # one query row (decoding) has no loop (lowering drops loops of size 1): a stand-in of size 1 that nothing reads
  i, d = rows[0] if rows else UOp(Ops.RANGE, INT, (), (-1, 1, "global")), (cols[0] if cols else None)
  batch = tuple(g for g in gx if g is not i)
  base = set(batch)
  if not (_loops(a) <= base | {i, k} and _loops(b) <= base | {j, k}) or not _loops(x) <= base | {i, j, k}: return None
  if k.arg[1] % 16 or not 16 <= k.arg[1] <= 128 or (d is not None and (d.arg[1] % 16 or not 16 <= d.arg[1] <= 128)): return None
  sums: list[FlashSum] = []
  for r in nodes:
    if r.op is not Ops.REDUCE or r.arg is not Ops.ADD or len(r.src) != 2 or r.dtype != dtypes.float32 or r is inner[0]: continue
    if any(n.op is Ops.REDUCE for n in toposort([r.src[0]]) if n is not r) and r.src[1].arg[1] == j.arg[1]:
      found = _weighted(r, same, key, half, d, base)
      if found is None: return None
      sums.append(found)
  known = {s.node for s in sums} | same | {inner[0]}
  if not sums or sum(s.f is not None for s in sums) != (1 if d is not None else 0): return None
  # every other reduction the stored values read must be one of these sums or a copy of the max
  for root in [*(st.src[2] for st in sink.src), *(s.outside for s in sums if s.outside is not None)]:
    seen = toposort([root], stop=lambda n: n in known)
    if any(n.op is Ops.REDUCE and n not in known for n in seen) or any(n.op is Ops.RANGE and n not in glob for n in seen): return None
  if any(r.arg[1] == 0 for r in (*glob, j, k)) or not all(_exp_of_shifted(e) is not None for s in sums for e in [_exp_in(s.node)]): return None
  c = _exp_of_shifted(_exp_in(sums[0].node))[2]  # type: ignore[index]
  if any(_exp_of_shifted(_exp_in(s.node))[2] != c for s in sums): return None  # type: ignore[index]
  return FlashGPU(sink.src, same, c, x, inner[0], a, b, j, k, batch, i, d, tuple(sorted(sums, key=lambda s: nodes.index(s.node))), half)


def _exp_in(r: UOp) -> UOp:
  """The exp2 factor of a matched sum's term."""
  hp = _half_product(r.src[0])
  factors = _factors(_uncast(hp[0]) if hp is not None else r.src[0])
  return next(f for f in factors if f.op is Ops.EXP2)


def _weighted(r: UOp, maxes: frozenset[UOp], key: UOp, half: DType, d: UOp | None, base: set[UOp]) -> FlashSum | None:
  """`r` as a FlashSum when it sums exp2((x - M) * c) (a denominator) or float(h(exp2(...) * outside) * F) with F along d,
  x the maxes' score (the same up to renaming loops: `key`)."""
  jr = r.src[1]
  hp = _half_product(r.src[0])
  weight, f = (_uncast(hp[0]), hp[1]) if hp is not None else (r.src[0], None)
  if hp is not None and (d is None or hp[2] != half or f is None or f.dtype != half or not _loops(f) <= base | {jr, d}): return None
  factors = _factors(weight)
  exps = [e for e in factors if (hit := _exp_of_shifted(e)) is not None and hit[1] in maxes and _canonical(hit[0], jr) is key]
  if len(exps) != 1: return None
  rest = [g for g in factors if g is not exps[0]]
  if any(jr in _loops(g) for g in rest) or (f is None and rest): return None
  outside = None
  for g in rest: outside = g if outside is None else outside * g
  return FlashSum(r, f, outside)


def _position(u: UOp) -> UOp:
  """`u` without integer casts: a position compared as int32 may be an int64 loop (attention at T = 1024) cast down."""
  while u.op is Ops.CAST and u.dtype.is_int and u.src[0].dtype.is_int: u = u.src[0]
  return u


def _rising(u: UOp, r: UOp) -> bool:
  u = _position(u)
  return u is r or (u.op is Ops.ADD and _position(u.src[0]) is r and u.src[1].op is Ops.CONST)


def causal_bound(gate: UOp, r: UOp, s: UOp) -> tuple[str, UOp] | None:
  """The gate as s <= f(r) ("upto") or s >= f(r) ("from"), f(r) = r or r + a constant, both compared directly or through
  integer casts; else None."""
  if gate.op is Ops.XOR and gate.src[1].op is Ops.CONST and gate.src[1].arg is True and gate.src[0].op is Ops.CMPLT:
    lo, hi = gate.src[0].src  # not(lo < hi): hi <= lo
    if _position(hi) is s and _rising(lo, r): return ("upto", lo)
    if _position(lo) is s and _rising(hi, r): return ("from", hi)
  elif gate.op is Ops.CMPLT:
    lo, hi = gate.src
    if _position(lo) is s and _rising(hi, r): return ("upto", hi + -1)
    if _position(hi) is s and _rising(lo, r): return ("from", lo + 1)
  return None


def _last_key(x: UOp, i: UOp, j: UOp) -> UOp | None:
  """When the score is where(gate, ..., -inf) (through casts) with a gate that lets key j through only up to a position of
  row i (j <= i + c, or j < i + c: a causal mask), the last key row i can see, as an expression of i; else None."""
  u = _uncast(x)
  if u.op is not Ops.WHERE or u.src[2].op is not Ops.CONST or u.src[2].arg != -math.inf: return None
  bound = causal_bound(u.src[0], i, j)
  return bound[1] if bound is not None and bound[0] == "upto" else None


def _scaled(x: UOp) -> tuple[UOp, float]:
  """The score as scale * y: (y, scale) when `x` is y times a positive constant (SDPA's 1 / sqrt(d)), also under a causal
  mask's select to -inf; else (x, 1). The plan takes its row max over y and folds the scale into the exp's constant, one
  FMUL a score fewer: max_j fl(scale * y_j) = fl(scale * max_j y_j) (rounding keeps order), so the stored max is exact."""
  masked = x.op is Ops.WHERE and x.src[2].op is Ops.CONST and x.src[2].arg == -math.inf
  body = x.src[1] if masked else x
  if body.op is not Ops.MUL or body.src[1].op is not Ops.CONST or not 0 < body.src[1].arg < math.inf: return x, 1.0
  y = body.src[0]
  return (x.src[0].where(y, x.src[2]) if masked else y), float(body.src[1].arg)


def split_at_diagonal(loop: UOp, bound: str, edge: UOp, tile: int, tiles: int) -> UOp:
  """`loop` (a RANGE whose source is its trip count) as RANGE(count, split): the iterations before `split` visit tiles that
  lie wholly inside a causal bound, the rest the tiles on its diagonal (linearize writes two loops; the first body has
  FIRST_PART(loop) true, so the plans drop the mask there, as FlashAttention masks only its diagonal tiles). `edge` is
  the bound at the block's binding row: "upto" (s <= f(r), tiles visited from 0 up) the last key its first row sees,
  "from" (s >= f(r), tiles visited from the last down) the first query its last row sees."""
  zero, count = UOp.const(INT, 0), loop.src[0]
  def at_least(x: UOp, lo: UOp) -> UOp: return (x < lo).where(lo, x)
  if bound == "upto": split = at_least(edge + 1, zero) // tile  # whole tiles up to the first row's last key
  else: split = at_least(UOp.const(INT, tiles) + -((at_least(edge, zero) + (tile - 1)) // tile), zero)  # tiles from its first
  return UOp(Ops.RANGE, loop.dtype, (count, (split < count).where(split, count)), loop.arg)


def _store(buf: UOp, index: UOp, value: UOp, *after: UOp) -> UOp:
  return UOp(Ops.STORE, dtypes.void, (buf, index, value, UOp.const(dtypes.bool, True), *after))


def _clamp(idx: UOp, size: int, tile_end: int) -> tuple[UOp, UOp | None]:
  """`idx` and whether it is inside [0, size), read at 0 outside (only when a tile can run past the end)."""
  if tile_end <= size: return idx, None
  ok = idx < size
  return ok.where(idx, UOp.const(INT, 0)), ok


def _threads() -> int: return BM // 16 * 32


def _width(value: UOp, loop: UOp, rows: int, cols: int) -> int:
  """Lanes of a 16-byte load of an operand along its tile's columns (`loop`): 8 when it is a plain load of a 16-bit buffer
  moving by one along them (the stored 16-bit casts of q, k, v on CUDA) and every thread moves whole vectors, else 1."""
  whole = cols % 8 == 0 and rows * cols % (_threads() * 8) == 0
  plain = value.op is Ops.LOAD and len(value.src) == 2 and value.src[0].op is Ops.PARAM and value.dtype.itemsize == 2
  return 8 if whole and plain and contiguous_in(value.src[1], loop, 8) else 1


def _tile(local: UOp, offset: UOp | int, layout: Layout, rows: int, cols: int, value_at, width: int, tid: UOp, along_rows: bool,
          *after: UOp, copy: bool = False) -> list[UOp]:
  """The STOREs of this thread's share of a rows x cols tile (consecutive threads take consecutive columns, the axis the
  operands run along in memory, `width` at a time: a 16-byte load stored as it is, or with `copy` an ASYNC_COPY of it):
  value_at(row, col) is the value, stored at `offset` + layout.at(col, row) when `along_rows` (the tile's rows are its
  columns: F, keys along k) else at row * ld + col; both put consecutive columns next to each other."""
  out = []
  for e in range(rows * cols // (_threads() * width)):
    flat = tid + e * _threads()
    r, c = flat // (cols // width), flat % (cols // width) * width
    at = layout.at(c, r) if along_rows else layout.at(r, c)
    value = value_at(r, c)
    if copy:
      out.append(UOp(Ops.ASYNC_COPY, dtypes.void, (local, offset + at, value.src[0], value.src[1], UOp.const(dtypes.bool, True), *after), 16))
      continue
    if width > 1:
      vec = UOp(Ops.LOAD, value.dtype, value.src, width)
      value = UOp(Ops.VECTORIZE, value.dtype, tuple(UOp(Ops.GEP, value.dtype, (vec,), lane) for lane in range(width)), width)
    out.append(_store(local, offset + at, value, *after))
  return out


def mma_chains(a: list[UOp], b_fragment: Callable[[int, int], UOp], cols: int, kind: str) -> list[tuple[int, UOp]]:
  """A warp's m16 x `cols` product of A fragments `a` (one per 16-deep step) and B fragments `b_fragment(n2, step)` (16
  columns n2, two groups of 8): [(8-column group, the chain of m16n8k16 MMAs over the steps, each adding into the one
  before: MMA's third source)]."""
  out = []
  for n2 in range(cols // 16):
    for half in range(2):
      chain: UOp | None = None
      for k16, fa in enumerate(a):
        chain = UOp(Ops.MMA, dtypes.float32, (fa, b_fragment(n2, k16)) + ((chain,) if chain is not None else ()), (kind, half))
      assert chain is not None
      out.append((n2 * 2 + half, chain))
  return out


def packed_products(value: Callable[[int, int], UOp], h: DType, kind: str, steps: int, cols: int,
                    b_fragment: Callable[[int, int], UOp]) -> list[tuple[int, UOp]]:
  """A lane's values times a tile on tensor cores, with no shared-memory round trip: `value(n, q)` (lane value q of 8-wide
  column group n, the C layout of m16n8k16) packed in pairs into A fragments rounded to `h`, one per 16-deep step (`steps`),
  times `b_fragment(n2, step)`: `mma_chains` of them."""
  packs = [UOp(Ops.FRAGMENT, h, tuple(value(2 * k16 + n, q) for n in range(2) for q in range(4)), ("pack", kind, 0, False)) for k16 in range(steps)]
  return mma_chains(packs, b_fragment, cols, kind)


def map_flash(sink: UOp, fl: FlashGPU) -> UOp:
  """The flash plan (module docstring) for lowered kernel `sink` matched as `fl`."""
  T, Tk, K, D = fl.i.arg[1], fl.j.arg[1], fl.k.arg[1], (fl.d.arg[1] if fl.d is not None else 0)
  tiles_i, tiles_j = ceildiv(T, BM), ceildiv(Tk, BN)
  nb = prod(g.arg[1] for g in fl.batch)
  next_id = max((n.arg[0] for n in toposort([sink, *fl.stores]) if n.op is Ops.RANGE), default=-1) + 1  # (the stores': split loops)
  block = special("block", nb * tiles_i)
  tid = special("thread", _threads())
  last = _last_key(fl.x, fl.i, fl.j)
  it, bidx = row_tiles_in_order(block, tiles_i, nb, Tk * (K + D) * fl.half.itemsize, None if last is None else "last")
  batch = digits(list(fl.batch), bidx) if fl.batch else {}
  warp, lane = tid // 32, tid % 32
  g, tq = lane // 4, lane % 4
  h, kind = fl.half, fl.kind
  lq, lk = Layout(False, K + 8), Layout(False, K + 8)
  lv = Layout(True, D + 8)  # keys (the product's k) along the rows: read transposed (ldmatrix.trans)
  sq = UOp(Ops.DEFINE_LOCAL, h, (), (0, BM * (K + 8)))
  sk = UOp(Ops.DEFINE_LOCAL, h, (), (1, 2 * BN * (K + 8)))  # two buffers each: the next key tile is stored while this one is read
  sv = UOp(Ops.DEFINE_LOCAL, h, (), (2, 2 * BN * (D + 8)))
  # key tiles wholly past the last key the tile's last row can see (causal) are not visited: the loop's bound is a value
  # (RANGE with a source; it is at most tiles_j, which the value-range analysis keeps assuming)
  if last is not None:
    last_row = it * BM + (BM - 1)
    if T % BM: last_row = (last_row < T).where(last_row, UOp.const(INT, T - 1))
    seen = (_put(last, {fl.i: last_row}) // BN + 1).cast(INT)
    jt = UOp(Ops.RANGE, INT, ((seen < tiles_j).where(seen, UOp.const(INT, tiles_j)),), (next_id, tiles_j, "reduce"))
  else: jt = UOp(Ops.RANGE, INT, (), (next_id, tiles_j, "reduce"))
  once = UOp(Ops.RANGE, INT, (), (next_id + 1, 1, "reduce"))

  def row_at(r: UOp | int) -> UOp: return _clamp(it * BM + r, T, tiles_i * BM)[0]
  def key_at(c: UOp | int) -> UOp: return _clamp(jt * BN + c, Tk, tiles_j * BN)[0]
  column = next((s for s in fl.sums if s.f is not None), None)  # the weighted sum (O), None for row statistics alone
  f = column.f if column is not None else None

  wb = _width(fl.b, fl.k, BN, K)
  wf = _width(f, fl.d, BN, D) if f is not None and fl.d is not None else 8
  # key tiles of plain 16-bit loads of the tiles' type (the stored casts of k and v) are copied by cp.async, no registers between
  copy = wb == wf == 8 and fl.b.dtype == h and (f is None or f.dtype == h)

  def kv_tiles(tile: UOp, slot: UOp, *after: UOp) -> list[UOp]:
    """The STOREs (or ASYNC_COPYs) of key tile `tile` of b and F into buffer `slot` (keys past the end read at 0)."""
    def key(r: UOp) -> UOp: return _clamp(tile * BN + r, Tk, (tiles_j + 1) * BN)[0]
    out = _tile(sk, slot * (BN * (K + 8)), lk, BN, K, lambda r, c: _put(fl.b, {**batch, fl.j: key(r), fl.k: c}), wb, tid, False,
                *after, copy=copy)
    if column is None or f is None or fl.d is None: return out
    fv, dv, jv = f, fl.d, column.node.src[1]
    return out + _tile(sv, slot * (BN * (D + 8)), lv, BN, D, lambda r, c: _put(fv, {**batch, jv: key(r), dv: c}), wf, tid, True, *after,
                       copy=copy)
  # before the loop: the query tile and key tile 0. Each key tile starts at a barrier (the tile for it is complete, and every
  # thread is done with the buffer the next one goes to); right after it the next tile's copies are issued (cp.async, one
  # group, waited for before the next barrier), or its global loads (ordering sources of the first fragments), stored at the
  # end of the iteration (SINK sources in the loop: the linearizer writes them after the accumulations): either way they
  # overlap the tile's work
  zero = UOp.const(INT, 0)
  first_stores = _tile(sq, 0, lq, BM, K, lambda r, c: _put(fl.a, {**batch, fl.i: row_at(r), fl.k: c}), _width(fl.a, fl.k, BM, K), tid,
                       False)
  refills: list[UOp] = []
  if copy:
    landed = UOp(Ops.BARRIER, dtypes.void, (jt, UOp(Ops.BARRIER, dtypes.void, tuple(kv_tiles(zero, zero)), "commit")), ("wait", 0))
    loaded = UOp(Ops.BARRIER, dtypes.void, (jt, *first_stores, landed), "block")
    ahead = [UOp(Ops.BARRIER, dtypes.void, tuple(kv_tiles(jt + 1, (jt + 1) & 1, loaded)), "commit")]
  else:
    loaded = UOp(Ops.BARRIER, dtypes.void, (jt, *first_stores, *kv_tiles(zero, zero)), "block")
    refills = kv_tiles(jt + 1, (jt + 1) & 1, loaded)
    ahead = [n for st in refills for n in toposort([st.src[2]]) if n.op is Ops.LOAD]

  def frag(local: UOp, layout: Layout, base: UOp, role: str, *after: UOp) -> UOp:
    return UOp(Ops.FRAGMENT, h, (local, base, *after), (role, kind, layout.ld, layout.k_rows))
  # Q's fragments once, before the key loop (registers); S: lane values (row g + 8 * (q // 2), key 8n + 2t + q % 2) of the
  # warp's 16 x 64 scores, per 8 keys a chain of MMAs over k in steps of 16 (MMA's third source), read as a sum over a loop
  # of one step (its ACCUMULATE prints the chain into zeroed accumulators). The next key tile's loads are ordering sources
  # of the K fragments, so they are issued first
  q_ready = UOp(Ops.BARRIER, dtypes.void, tuple(first_stores), "block")
  fqs = [frag(sq, lq, lq.at(warp * 16, s16 * 16), "a", q_ready) for s16 in range(K // 16)]
  keyed: list[list[tuple[UOp, UOp]]] = [[], []]  # per row (g, g + 8): (score / scale, key in the tile)
  inf = UOp.const(dtypes.float32, -math.inf)
  unscaled, scale = _scaled(fl.x)
  def k_at(n2: int, s16: int) -> UOp: return frag(sk, lk, (jt & 1) * (BN * (K + 8)) + lk.at(n2 * 16, s16 * 16), "b2", loaded, *ahead)
  for c8, chain in mma_chains(fqs, k_at, BN, kind):
    for q in range(4):
      s = UOp(Ops.REDUCE, dtypes.float32, (UOp(Ops.GEP, dtypes.float32, (chain,), q), once), Ops.ADD)
      row, col = warp * 16 + g + 8 * (q // 2), c8 * 8 + tq * 2 + q % 2
      xv = _put(unscaled, {fl.inner: s, **batch, fl.i: row_at(row), fl.j: key_at(col)})
      if tiles_j * BN > Tk: xv = (jt * BN + col < Tk).where(xv, inf)
      keyed[q // 2].append((xv, col))
  c = UOp.const(dtypes.float32, fl.c * scale)  # exp2((x - M) * c) = exp2((y - M / scale) * scale * c)
  olds, safes, alphas = [], [], []  # (safes: -(the running max of y, 0 for -inf) * c)
  for r in range(2):
    # (fast math, as codegen/cuda/fast_math.py: fmaxf over the tile, ex2.approx, and exp2(x * c - m * c): one FFMA a score)
    bmax = keyed[r][0][0]
    for xv, _ in keyed[r][1:]: bmax = UOp(Ops.MAX, dtypes.float32, (bmax, xv), APPROX)
    bmax = UOp(Ops.GROUP_REDUCE, dtypes.float32, (bmax,), (Ops.MAX, 4))
    old = UOp(Ops.RUNNING_MAX, dtypes.float32, (bmax, jt))
    new = old.alu(Ops.MAX, bmax)
    safe = new.ne(inf).where(new, UOp.const(dtypes.float32, 0.0))
    olds.append(UOp(Ops.REDUCE, dtypes.float32, (bmax, jt), Ops.MAX))
    safes.append(-(safe * c))
    alphas.append(UOp(Ops.EXP2, dtypes.float32, (old * c + safes[-1],), APPROX))
  # P straight from the score registers: the m16n8k16 C layout of two 8-key tiles is the A layout of one 16-key step
  # (FRAGMENT "pack": lane values rounded to 16 bits in pairs), so no shared-memory round trip
  exps = [[UOp(Ops.EXP2, dtypes.float32, (xv * c + safes[r],), APPROX) for xv, _ in keyed[r]] for r in range(2)]
  def p_at(n: int, q: int) -> UOp: return exps[q // 2][n * 2 + q % 2]  # (keyed[r] runs over 8-key tiles n, then q % 2)
  denominators = []
  for r in range(2):
    total = exps[r][0]
    for e in exps[r][1:]: total = total + e
    rescaled = UOp(Ops.RESCALED, dtypes.float32, (total, alphas[r], jt))
    denominators.append(UOp(Ops.GROUP_REDUCE, dtypes.float32, (rescaled,), (Ops.ADD, 4)))
  def finals(half_row: int) -> dict[UOp, UOp]:
    """The maxes and the denominators at their final values, for row g (0) or g + 8 (1)."""
    m = olds[half_row] if scale == 1.0 else olds[half_row] * UOp.const(dtypes.float32, scale)
    return {**{mx: m for mx in fl.maxes}, **{s.node: denominators[half_row] for s in fl.sums if s.f is None}}
  def row_stores(*after: UOp) -> list[UOp]:
    """Per row each stored row statistic (the max, the sum of exps), by one lane of the quad."""
    out = []
    for half_row in range(2):
      gi, ok = _clamp(it * BM + warp * 16 + g + 8 * half_row, T, tiles_i * BM)
      gate = (tq < 1) if ok is None else ok & (tq < 1)
      for st in fl.stores:
        if fl.d is not None and fl.d in _loops(st.src[1]): continue
        value = _put(st, {**finals(half_row), **batch, fl.i: gi})
        out.append(UOp(Ops.STORE, value.dtype, value.src[:3] + (gate, *after), value.arg))
    return out
  if column is None or fl.d is None:
    drained = (UOp(Ops.BARRIER, dtypes.void, tuple(olds + denominators), ("wait", 0)),) if copy else ()
    return graph_rewrite(UOp(Ops.SINK, sink.dtype, tuple(row_stores(*drained) + refills), sink.arg), symbolic + exact)
  # O rescaled, then a chain of MMAs (one per 16 keys, each adding into the one before: MMA's third source) added into it
  outs: list[tuple[UOp, int, UOp, UOp]] = []  # (O value, row g or g + 8, row in the tile, column)
  def v_at(n2: int, s16: int) -> UOp: return frag(sv, lv, (jt & 1) * (BN * (D + 8)) + lv.at(n2 * 16, s16 * 16), "b2", loaded)
  for c8, chain in packed_products(p_at, h, kind, BN // 16, D, v_at):
    for q in range(4):
      o = UOp(Ops.RESCALED, dtypes.float32, (UOp(Ops.GEP, dtypes.float32, (chain,), q), alphas[q // 2], jt))
      outs.append((o, q // 2, warp * 16 + g + 8 * (q // 2), UOp.const(INT, c8 * 8) + tq * 2 + q % 2))
  # (copies still in flight, of the tile after the last, are waited for before the kernel's stores)
  drained = (UOp(Ops.BARRIER, dtypes.void, (outs[0][0],), ("wait", 0)),) if copy else ()
  stores = row_stores(*drained)
  [store] = [st for st in fl.stores if fl.d in _loops(st.src[1])]
  for o, half_row, row, col in outs:
    gi, ok = _clamp(it * BM + row, T, tiles_i * BM)
    at = {**batch, fl.i: gi, fl.d: col}
    # R = O * outside; the denominators and the max at their final values
    known = finals(half_row)
    outside = _put(column.outside, {**known, **at}) if column.outside is not None else None
    known[column.node] = o if outside is None else o * outside
    out = _put(store, {**known, **at})
    stores.append(UOp(Ops.STORE, out.dtype, out.src[:3] + (UOp.const(dtypes.bool, True) if ok is None else ok, *drained), out.arg))
  return graph_rewrite(UOp(Ops.SINK, sink.dtype, tuple(stores + refills), sink.arg), symbolic + exact)


def describe_flash_cuda(fl: FlashGPU) -> str:
  T, Tk, K = fl.i.arg[1], fl.j.arg[1], fl.k.arg[1]
  stats = len(fl.stores) - (fl.d is not None)
  what = (f"{fl.d.arg[1]} columns" if fl.d is not None else "") + (" and " if fl.d is not None and stats else "") + \
    (f"{stats} row statistics (max, sums of exps)" if stats else "")
  work = "scores and P @ V" if fl.d is not None else "scores"
  return (f"flash attention {T}x{Tk}, k={K}, {what}: a block per {BM} query rows ({BM // 16} warps of 16), key tiles of {BN} through "
          f"shared memory, {work} on mma.sync m16n8k16 {fl.kind}, running max and sums in registers (quad shuffles)" +
          ("; key tiles past the causal diagonal skipped" if _last_key(fl.x, fl.i, fl.j) is not None else ""))


__all__ = ["match_flash_cuda", "map_flash", "describe_flash_cuda", "FlashGPU", "causal_bound", "row_tiles_in_order", "split_at_diagonal",
           "FORWARD_BLOCKS_PER_SM"]
