"""Sums over recomputed 16-bit scores on the GPU as an IR pass (codegen layer): the `recomputed` plan, attention's backward.

On CUDA engine/recompute.py keeps autocast's score products (q . k, dO . v: 16-bit products summed in float32) out of memory
(schedule.TENSOR_CORE_RECOMPUTE_DEVICES), and each kernel reading them recomputes them. Lowered, such a kernel stores a value
built from one reduction over a loop s:

    R(r, d) = sum_s float(h(T(r, s)) * F(s, d))     or     R(r) = sum_s T(r, s),  max_s T(r, s)
    T = E(P_1, ..., P_m, r, s)                      P_n = sum_k float(h(a_n(r, k) * b_n(s, k)))

(h: a 16-bit float type; O = sum_j P_ij v_jd, dV_j = sum_i P_ij dO_i, dQ_i = sum_j dS_ij k_j, dK_j = sum_i dS_ij q_i with T = dS
reading two product sums, the row max and sum; the same form codegen/cpu_flash_bwd.py renders on the CPU). `match_recomputed_cuda`
recognizes it, `map_recomputed` writes it with the ops of the forward's flash plan (flash.py):

- a block (SPECIAL) per batch value and tile of BM = 64 rows r; 4 warps, warp w owning rows 16w..16w + 15;
- every a_n's row tile is staged in shared memory once; per tile of BN = 64 values of s (32 where two product sums share
  the registers: `s_tile`; a loop holding BARRIERs) the tiles of every b_n and of F go into shared memory (two buffers
  each: cp.async where all are plain loads of 16-bit buffers, else registers stored at the end of the iteration), and so do
  the values of T that vary along s alone (dK's and dV's row max, sum and row term, one per query);
- each P_n of the warp's 16 x tile by a chain of mma.sync m16n8k16 over k (a_n's fragments loaded once); T runs per lane value
  with its row and s substituted (values of s past the end: the reduction's identity);
- with F: T packed from the lane's registers as A fragments (FRAGMENT "pack", rounded to h in pairs: the m16n8k16 C layout
  of two 8-wide tiles is the A layout of one 16-deep step, as the forward packs P) times F (ldmatrix.trans), summed over the
  tiles of s into accumulators; without F: a sum or max per lane over the tiles, its quad combined after the loop;
- after the loop each lane's values go through the kernel's stored expression (rows g, g + 8; columns 2t, 2t + 1 of each 8).

A kernel may store several such sums over the same s and the same product sums (engine/outputs.py `recomputed_groups`: dK
and dV, FlashAttention-2's backward): lowered separately, their loops s and equal product sums are made one (`online.one_loop`),
the products are computed once per tile, and each output has its term, its F tile and its accumulators.

Where T is the identity wherever a positional gate s <= f(r) (the forward's and dQ's causal mask) or s >= f(r) (dK's and
dV's, whose rows are keys) fails, the tiles of s past the block's last row (or before its first) are not visited: the loop's
trip count is a value, over a reversed index for s >= f(r); the blocks with the most tiles run first. The loop is then split
at the diagonal (flash.split_at_diagonal, RANGE(count, split)): the tiles wholly inside the bound come first and compute T
without its gate, as FlashAttention masks only the diagonal tiles (linearize writes the two loops into one accumulator);
not a lone dV's (`_splits_at_diagonal`). Under dropout the positional gate is found beneath the mask's.
"""
from __future__ import annotations
import math
from dataclasses import dataclass
from picograd.dtype import DType, dtypes
from picograd.helpers import ceildiv, prod
from picograd.ir.ops import UOp, Ops, toposort, graph_rewrite, substitute
from picograd.ir.symbolic import symbolic
from picograd.codegen.cuda.flash import BM, BN, INT, HALVES, _put, _clamp, _threads, _width, _tile, _loops, _half_product, _uncast, \
  mma_chains, packed_products, causal_bound, row_tiles_in_order, split_at_diagonal
from picograd.codegen.online import identity_gates, one_loop, outer_sum
from picograd.codegen.cuda.analysis import contiguous_in
from picograd.codegen.cuda.fast_math import exact, fast_terms, unrounded
from picograd.codegen.cuda.mapping import digits, special
from picograd.codegen.cuda.target import CUDATarget
from picograd.codegen.cuda.tiling import Layout


@dataclass(frozen=True)
class HalfProduct:
  """P = sum_k float(h(a(r, k) * b(s, k))), recomputed per tile of s."""
  node: UOp
  a: UOp
  b: UOp
  k: UOp


@dataclass(frozen=True)
class RecomputedOut:
  """One stored output of a matched kernel: its reduction over s, the term T and the factor F."""
  store: UOp
  red: UOp                  # the reduction over s (ADD or MAX) as lowered
  term: UOp                 # T in float32 (with F: the value rounded to h as it is packed)
  f: UOp | None             # F (along s and d), 16-bit
  bound: tuple[str, UOp] | None  # ("upto", f(r)): T is the identity where s > f(r); ("from", f(r)): where s < f(r)
  gate: UOp | None          # the positional gate of `bound` as T reads it


@dataclass(frozen=True)
class RecomputedGPU:
  """A matched kernel (module docstring): its loops by role, the product sums its outputs share, and the outputs."""
  s: UOp
  batch: tuple[UOp, ...]    # outermost first
  r: UOp
  d: UOp | None
  products: tuple[HalfProduct, ...]
  half: DType
  outs: tuple[RecomputedOut, ...]

  @property
  def kind(self) -> str: return HALVES[self.half]

  @property
  def bound(self) -> tuple[str, UOp] | None:
    """The tiles of s every output skips: where all outputs have the same positional bound."""
    first = self.outs[0].bound
    return first if all(o.bound == first for o in self.outs) else None


def match_recomputed_cuda(sink: UOp, target: CUDATarget) -> RecomputedGPU | None:
  """The recomputed-score form of lowered kernel `sink` (module docstring) on a GPU with mma.sync (sm_80+), or None. A
  kernel of several stores (each a sum over the same s of terms of the same product sums) is one pass with an output each."""
  if target.cc < 80 or any(st.op is not Ops.STORE or len(st.src) != 3 for st in sink.src): return None
  if len(sink.src) > 1:
    if (unified := one_loop(sink)) is None: return None
    sink = unified
  nodes = toposort([sink])
  if any(n.op is Ops.CHECK for n in nodes): return None
  reds = [outer_sum(st.src[2]) for st in sink.src]
  if any(red is None or red.arg not in (Ops.ADD, Ops.MAX) or red.dtype != dtypes.float32 for red in reds): return None
  s = reds[0].src[1]  # type: ignore[union-attr]
  inner = [n for n in nodes if n.op is Ops.REDUCE and n not in reds]
  glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda g: g.arg[0])
  products: list[HalfProduct] = []
  halves: set[DType] = set()
  for p in inner:
    if p.arg is not Ops.ADD or len(p.src) != 2 or (hp := _half_product(p.src[0])) is None: return None
    x, y, h = hp
    with_s = [f for f in (x, y) if s in _loops(f)]
    if len(with_s) != 1 or any(f.dtype != h or any(n.op is Ops.REDUCE for n in toposort([f])) for f in (x, y)): return None
    b = with_s[0]
    products.append(HalfProduct(p, y if x is b else x, b, p.src[1]))
    halves.add(h)
  if not products or len(halves) != 1: return None
  half = halves.pop()
  along_a = set().union(*(_loops(p.a) for p in products))
  along_b = set().union(*(_loops(p.b) for p in products))
  rows = [g for g in glob if g in along_a and g not in along_b]
  cols = [g for g in glob if g not in along_a and g not in along_b]
  if len(rows) != 1 or len(cols) > 1: return None
  r, d = rows[0], (cols[0] if cols else None)
  batch = tuple(g for g in glob if g is not r and g is not d)
  base = set(batch)
  if any(not (_loops(p.a) <= base | {r, p.k} and _loops(p.b) <= base | {s, p.k}) for p in products): return None
  if any(p.k.arg[1] % 16 or not 16 <= p.k.arg[1] <= 128 for p in products): return None
  if any(g.arg[1] == 0 for g in (*glob, s)): return None
  stands = {p.node for p in products}
  outs = []
  for st, red in zip(sink.src, reds):
    assert red is not None
    f: UOp | None = None
    if d is not None:
      # R = sum_s float(h(T) * F): F along s and d, T without d
      if red.arg is not Ops.ADD or (hp := _half_product(red.src[0])) is None or hp[2] != half: return None
      with_d = [v for v in hp[:2] if d in _loops(v)]
      if len(with_d) != 1 or d.arg[1] % 16 or not 16 <= d.arg[1] <= 128: return None
      f = with_d[0]
      t = hp[1] if hp[0] is f else hp[0]
      if any(n.op is Ops.REDUCE for n in toposort([f])) or not _loops(f) <= base | {s, d}: return None
      term = _uncast(t) if t.op is Ops.CAST and _uncast(t).dtype == dtypes.float32 else t.cast(dtypes.float32)
    else: term = red.src[0]
    inside = toposort([term], stop=lambda n: n in stands)
    if any(n.op is Ops.REDUCE and n not in stands for n in inside) or not {n for n in inside if n.op is Ops.RANGE} <= base | {r, s}: return None
    # the positional one of its gates (under dropout the mask's gate comes first: it reads the RNG's counter, a load)
    gate = next((g for g in identity_gates(term, red.arg is Ops.ADD, stands) if not any(n.op is Ops.LOAD for n in toposort([g]))), None)
    bound = None if gate is None else causal_bound(gate, r, s)
    if bound is None: gate = None
    # the stored expression reads no other reduction and no other loop
    def at_red(n: UOp, red: UOp = red) -> bool: return n is red
    outside = toposort([st.src[2]], stop=at_red)
    if any(n.op is Ops.REDUCE and n is not red for n in outside) or any(n.op is Ops.RANGE and n not in glob for n in outside): return None
    outs.append(RecomputedOut(st, red, term, f, bound, gate))
  return RecomputedGPU(s, batch, r, d, tuple(products), half, tuple(outs))


# values of s per tile in kernels with two product sums (dQ, dK): their warps hold two 16 x tile score blocks beside the
# 16 x D accumulators. At 64, 166-211 registers left room for two blocks an SM; at 32, 128-144 (H200, causal bf16 SDPA
# fwd+bwd, B=64 H=6 D=64: dQ + dK 167 -> 138 us at T = 256, 1174 -> 1085 us at T = 1024; 32 for O and dV too gained < 3 us)
TWO_PRODUCTS_S_TILE = 32


def _splits_at_diagonal(fr: RecomputedGPU) -> bool:
  """Whether the loop over s is split at the causal diagonal: every output gated by the bound, and not a single product
  sum over tiles from the diagonal on (dV alone: the GPT's, whose dV sum is not merged with dK's). Split, that kernel came
  out wrong on the H200 in warp 0's first 8 rows of every block of keys (session 16: the loop split alone, with the mask
  kept in both parts, did it; EMULATE=CUDA, with shared memory filled with NaN, agreed with the unmapped kernels), which
  made the GPT's bf16 training diverge; unsplit it skips the same tiles and is right. Not found: the cause."""
  return fr.bound is not None and all(o.gate is not None for o in fr.outs) and (fr.bound[0] == "upto" or len(fr.products) > 1)


def _float32_products(term: UOp, fr: RecomputedGPU) -> UOp:
  """`term` with each product sum read as the tensor cores' float32 sum where the graph rounds it to 16 bits first (dP =
  dO . v, the gradient of autocast's 16-bit P @ v), as FlashAttention keeps dP: more precise, and no conversion per value."""
  sums = {p.node for p in fr.products}
  return substitute(term, {n: n.src[0].src[0] for n in toposort([term]) if n.op is Ops.CAST and n.dtype == dtypes.float32
                           and n.src[0].op is Ops.CAST and n.src[0].dtype == fr.half and n.src[0].src[0] in sums})


def s_tile(fr: RecomputedGPU) -> int: return BN if len(fr.products) == 1 else TWO_PRODUCTS_S_TILE


def map_recomputed(sink: UOp, fr: RecomputedGPU) -> UOp:
  """The recomputed plan (module docstring) for lowered kernel `sink` matched as `fr`."""
  T, Ts = fr.r.arg[1], fr.s.arg[1]
  bn = s_tile(fr)
  D = fr.d.arg[1] if fr.d is not None else 0
  tiles_r, tiles_s = ceildiv(T, BM), ceildiv(Ts, bn)
  nb = prod(g.arg[1] for g in fr.batch)
  next_id = max((n.arg[0] for n in toposort([sink, *(o.store for o in fr.outs)]) if n.op is Ops.RANGE), default=-1) + 1
  block = special("block", nb * tiles_r)
  tid = special("thread", _threads())
  # causal: up to the diagonal a row tile's work grows with its index, from it (dV, dK) it shrinks; the longest run first
  head_bytes = Ts * (sum(p.k.arg[1] for p in fr.products) + D * sum(o.f is not None for o in fr.outs)) * fr.half.itemsize
  rt, bidx = row_tiles_in_order(block, tiles_r, nb, head_bytes, None if fr.bound is None else {"upto": "last", "from": "first"}[fr.bound[0]])
  batch = digits(list(fr.batch), bidx) if fr.batch else {}
  warp, lane = tid // 32, tid % 32
  g, tq = lane // 4, lane % 4
  h, kind = fr.half, fr.kind
  zero = UOp.const(INT, 0)
  # the tiles of s visited: all, those up to the block's last row's bound, or (a reversed index) from its first row's
  count: UOp | None = None
  if fr.bound is not None and fr.bound[0] == "upto":
    last_row = rt * BM + (BM - 1)
    if T % BM: last_row = (last_row < T).where(last_row, UOp.const(INT, T - 1))
    seen = (_put(fr.bound[1], {fr.r: last_row}) // bn + 1).cast(INT)
    count = (seen < tiles_s).where(seen, UOp.const(INT, tiles_s))
  elif fr.bound is not None:
    first = _put(fr.bound[1], {fr.r: rt * BM}).cast(INT)
    first = (first < 0).where(zero, first) // bn
    count = (first < tiles_s).where(UOp.const(INT, tiles_s) + -first, UOp.const(INT, 1))
  st = UOp(Ops.RANGE, INT, (count,) if count is not None else (), (next_id, tiles_s, "reduce"))
  # the tiles wholly inside the causal bound come first and skip the mask (split_at_diagonal): up to the diagonal the
  # first row's bound decides, from it (a reversed index) the last row's
  if fr.bound is not None and _splits_at_diagonal(fr):
    if fr.bound[0] == "upto": st = split_at_diagonal(st, "upto", _put(fr.bound[1], {fr.r: rt * BM}).cast(INT), bn, tiles_s)
    else:
      last_row = rt * BM + (BM - 1)
      if T % BM: last_row = (last_row < T).where(last_row, UOp.const(INT, T - 1))
      st = split_at_diagonal(st, "from", _put(fr.bound[1], {fr.r: last_row}).cast(INT), bn, tiles_s)
  once = UOp(Ops.RANGE, INT, (), (next_id + 1, 1, "reduce"))
  reverse = fr.bound is not None and fr.bound[0] == "from"
  def tile_of(i: UOp) -> UOp: return UOp.const(INT, tiles_s - 1) + -i if reverse else i
  def row_at(x: UOp | int) -> UOp: return _clamp(rt * BM + x, T, tiles_r * BM)[0]

  # shared memory: each a_n's row tile once, two buffers of each b_n's and each output's F's tiles of s
  las = [Layout(False, p.k.arg[1] + 8) for p in fr.products]
  sas = [UOp(Ops.DEFINE_LOCAL, h, (), (n, BM * (p.k.arg[1] + 8))) for n, p in enumerate(fr.products)]
  sbs = [UOp(Ops.DEFINE_LOCAL, h, (), (len(sas) + n, 2 * bn * (p.k.arg[1] + 8))) for n, p in enumerate(fr.products)]
  lf = Layout(True, D + 8)  # s (the product's k) along the rows: read transposed (ldmatrix.trans)
  fs = [o.f for o in fr.outs if o.f is not None]
  sfs = [UOp(Ops.DEFINE_LOCAL, h, (), (2 * len(sas) + n, 2 * bn * (D + 8))) for n in range(len(fs))]
  wbs = [_width(p.b, p.k, bn, p.k.arg[1]) for p in fr.products]
  wfs = [_width(f, fr.d, bn, D) for f in fs] if fr.d is not None else []
  copy = all(w == 8 for w in wbs + wfs) and all(p.b.dtype == h for p in fr.products) and all(f.dtype == h for f in fs)
  # values of T read from memory along s alone (dK's and dV's row max, sum and row term: one per query) come with the tiles,
  # bn to a buffer by 16-byte copies of the first threads, instead of a global load per lane value, each waited for
  base = set(fr.batch)
  vectors = [n for n in toposort([o.term for o in fr.outs]) if n.op is Ops.LOAD and len(n.src) == 2 and n.src[0].op is Ops.PARAM and
             n.dtype.itemsize == 4 and fr.s in _loops(n) and _loops(n) <= base | {fr.s} and contiguous_in(n.src[1], fr.s, 4)] \
    if copy and Ts % 4 == 0 else []
  # (two buffers of bn, then a spare 16 bytes that the threads with nothing to copy fill with zeros)
  svs = [UOp(Ops.DEFINE_LOCAL, v.dtype, (), (2 * len(sas) + len(fs) + n, 2 * bn + 4)) for n, v in enumerate(vectors)]

  def s_tiles(tile: UOp, slot: UOp, *after: UOp) -> list[UOp]:
    """The STOREs (or ASYNC_COPYs) of tile `tile` of s of every b_n and F into buffer `slot` (past the end: read at 0)."""
    # (a reversed index's tile after the last is -1: read at tile 0, as the tile after the last is read at 0 going forward)
    if reverse: tile = (tile < 0).where(zero, tile)
    def at(x: UOp) -> UOp: return _clamp(tile * bn + x, Ts, (tiles_s + 1) * bn)[0]
    out: list[UOp] = []
    for p, sb, lb, wb in zip(fr.products, sbs, las, wbs):
      K = p.k.arg[1]
      out += _tile(sb, slot * (bn * (K + 8)), lb, bn, K, lambda x, c, p=p: _put(p.b, {**batch, fr.s: at(x), p.k: c}), wb, tid, False,
                   *after, copy=copy)
    for f, sf, wf in zip(fs, sfs, wfs):
      def f_at(x: UOp, c: UOp, f: UOp = f) -> UOp:
        assert fr.d is not None
        return _put(f, {**batch, fr.s: at(x), fr.d: c})
      out += _tile(sf, slot * (bn * (D + 8)), lf, bn, D, f_at, wf, tid, True, *after, copy=copy)
    busy, x = tid < bn // 4, tid % (bn // 4) * 4
    for local, vec in zip(svs, vectors):
      out.append(UOp(Ops.ASYNC_COPY, dtypes.void, (local, busy.where(slot * bn + x, UOp.const(INT, 2 * bn)), vec.src[0],
                                                   _put(vec.src[1], {**batch, fr.s: at(x)}), busy, *after), 16))
    return out
  first_stores: list[UOp] = []
  for p, sa, la in zip(fr.products, sas, las):
    K = p.k.arg[1]
    first_stores += _tile(sa, 0, la, BM, K, lambda x, c, p=p: _put(p.a, {**batch, fr.r: row_at(x), p.k: c}), _width(p.a, p.k, BM, K), tid, False)
  refills: list[UOp] = []
  if copy:
    landed = UOp(Ops.BARRIER, dtypes.void, (st, UOp(Ops.BARRIER, dtypes.void, tuple(s_tiles(tile_of(zero), zero)), "commit")), ("wait", 0))
    loaded = UOp(Ops.BARRIER, dtypes.void, (st, *first_stores, landed), "block")
    ahead = [UOp(Ops.BARRIER, dtypes.void, tuple(s_tiles(tile_of(st + 1), (st + 1) & 1, loaded)), "commit")]
  else:
    loaded = UOp(Ops.BARRIER, dtypes.void, (st, *first_stores, *s_tiles(tile_of(zero), zero)), "block")
    refills = s_tiles(tile_of(st + 1), (st + 1) & 1, loaded)
    ahead = [n for x in refills for n in toposort([x.src[2]]) if n.op is Ops.LOAD]

  def frag(local: UOp, layout: Layout, base: UOp, role: str, *after: UOp) -> UOp:
    return UOp(Ops.FRAGMENT, h, (local, base, *after), (role, kind, layout.ld, layout.k_rows))
  a_ready = UOp(Ops.BARRIER, dtypes.void, tuple(first_stores), "block")
  tile = tile_of(st)
  # per lane value (q: rows g, g + 8 and columns 2t, 2t + 1 of each 8 of s): each P_n by a chain of MMAs, then each T
  scores: dict[tuple[int, int, int], UOp] = {}  # (product, n, q) -> P_n
  for n_, (p, sa, sb, la) in enumerate(zip(fr.products, sas, sbs, las)):
    K = p.k.arg[1]
    fas = [frag(sa, la, la.at(warp * 16, k16 * 16), "a", a_ready) for k16 in range(K // 16)]
    def b_at(n2: int, k16: int, sb: UOp = sb, la: Layout = la, K: int = K) -> UOp:
      return frag(sb, la, (st & 1) * (bn * (K + 8)) + la.at(n2 * 16, k16 * 16), "b2", loaded, *ahead)
    for c8, chain in mma_chains(fas, b_at, bn, kind):
      for q in range(4):
        scores[(n_, c8, q)] = UOp(Ops.REDUCE, dtypes.float32, (UOp(Ops.GEP, dtypes.float32, (chain,), q), once), Ops.ADD)
  def terms(o: RecomputedOut) -> dict[tuple[int, int], UOp]:
    """(8-wide tile n of s, q) -> output o's T at the lane value."""
    identity = UOp.const(dtypes.float32, 0.0 if o.red.arg is Ops.ADD else -math.inf)
    summand = _float32_products(o.term, fr)
    term = graph_rewrite(summand, fast_terms)
    if o.f is not None: term = unrounded(term, h)
    # inside the causal bound (the first part of a split loop) the term without its gate
    inner = None
    if len(st.src) == 2 and o.gate is not None:
      inner = graph_rewrite(graph_rewrite(substitute(summand, {o.gate: UOp.const(dtypes.bool, True)}), symbolic), fast_terms)
      if o.f is not None: inner = unrounded(inner, h)
    values = {}
    for n8 in range(bn // 8):
      for q in range(4):
        row, col = warp * 16 + g + 8 * (q // 2), n8 * 8 + tq * 2 + q % 2
        sv = tile * bn + col
        at = {**{p.node: scores[(n_, n8, q)] for n_, p in enumerate(fr.products)}, **batch, fr.r: row_at(row),
              fr.s: _clamp(sv, Ts, tiles_s * bn)[0],
              **{vec: UOp(Ops.LOAD, vec.dtype, (local, (st & 1) * bn + col, loaded)) for local, vec in zip(svs, vectors)}}
        v = _put(term, at)
        if inner is not None: v = UOp(Ops.FIRST_PART, dtypes.bool, (st,)).where(_put(inner, at), v)
        values[(n8, q)] = (sv < Ts).where(v, identity) if tiles_s * bn > Ts else v
    return values
  outs: list[tuple[RecomputedOut, UOp, int, UOp]] = []  # (output, value, row in the tile, column)
  shared_f = iter(sfs)
  for o in fr.outs:
    values = terms(o)
    if o.f is not None:
      # T as A fragments straight from the lane registers, times F's tile, summed over the tiles of s
      sf = next(shared_f)
      def lane_value(n: int, q: int, values: dict[tuple[int, int], UOp] = values) -> UOp: return values[(n, q)]
      def f_fragment(n2: int, k16: int, sf: UOp = sf) -> UOp:
        return frag(sf, lf, (st & 1) * (bn * (D + 8)) + lf.at(n2 * 16, k16 * 16), "b2", loaded)
      for c8, chain in packed_products(lane_value, h, kind, bn // 16, D, f_fragment):
        for q in range(4):
          acc = UOp(Ops.REDUCE, dtypes.float32, (UOp(Ops.GEP, dtypes.float32, (chain,), q), st), Ops.ADD)
          outs.append((o, acc, warp * 16 + g + 8 * (q // 2), UOp.const(INT, c8 * 8) + tq * 2 + q % 2))
    else:
      # one value per row: the lane's 16 per tile, over the tiles, then over its quad of lanes
      for r2 in range(2):
        total = values[(0, 2 * r2)]
        for n8 in range(bn // 8):
          for q in (2 * r2, 2 * r2 + 1):
            if (n8, q) != (0, 2 * r2): total = total.alu(o.red.arg, values[(n8, q)])
        acc = UOp(Ops.GROUP_REDUCE, dtypes.float32, (UOp(Ops.REDUCE, dtypes.float32, (total, st), o.red.arg),), (o.red.arg, 4))
        outs.append((o, acc, warp * 16 + g + 8 * r2, UOp.const(INT, 0)))
  drained = (UOp(Ops.BARRIER, dtypes.void, tuple(acc for _, acc, _, _ in outs), ("wait", 0)),) if copy else ()
  stores = []
  for o, value, row, col in outs:
    gi, ok = _clamp(rt * BM + row, T, tiles_r * BM)
    at = {**batch, fr.r: gi, **({fr.d: col} if fr.d is not None else {})}
    out = _put(o.store, {o.red: value, **at})
    # (without columns the four lanes of a quad hold the same row: one stores it)
    gate = ok if fr.d is not None else ((tq < 1) if ok is None else ok & (tq < 1))
    stores.append(UOp(Ops.STORE, out.dtype, out.src[:3] + (UOp.const(dtypes.bool, True) if gate is None else gate, *drained), out.arg))
  return graph_rewrite(UOp(Ops.SINK, sink.dtype, tuple(stores + refills), sink.arg), symbolic + exact)


def describe_recomputed_cuda(fr: RecomputedGPU) -> str:
  def what(o: RecomputedOut) -> str:
    return f"times {fr.d.arg[1]} columns by mma.sync" if fr.d is not None else f"a {'sum' if o.red.arg is Ops.ADD else 'max'} per row (quad shuffles)"
  skip = {"upto": "; tiles of s past the causal diagonal skipped", "from": "; tiles of s before the causal diagonal skipped"}
  kinds = list(dict.fromkeys(what(o) for o in fr.outs))
  outputs = kinds[0] if len(fr.outs) == 1 else f"{len(fr.outs)} outputs, " + ("each " + kinds[0] if len(kinds) == 1 else ", ".join(kinds))
  return (f"recomputed scores on tensor cores {fr.r.arg[1]}x{fr.s.arg[1]}, {len(fr.products)} product sum(s) of k = "
          f"{', '.join(str(p.k.arg[1]) for p in fr.products)}: a block per {BM} rows ({BM // 16} warps of 16), tiles of {s_tile(fr)} through "
          f"shared memory, mma.sync m16n8k16 {fr.kind}, {outputs}" + (skip[fr.bound[0]] if fr.bound is not None else ""))


__all__ = ["match_recomputed_cuda", "map_recomputed", "describe_recomputed_cuda", "RecomputedGPU", "RecomputedOut"]
