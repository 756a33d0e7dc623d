"""Online-softmax kernels on the CPU as register-tiled flash attention (codegen layer).

The online rule (engine/online_fusion.py) keeps a softmax-weighted sum and its scores in one kernel. Lowered, such a
kernel stores a value built from sums over a key loop j (codegen/online.py's module docstring has the form):

    x(j)  = E(sum_k a(i, k) * b(j, k), j)           the score: elementwise work E (a scale, a mask, causal) on a product sum
    M     = max_j x(j)
    R     = sum_j exp2((x(j) - M) * c) * g(i, j) * F(j, d) * outside       (one or several such sums sharing M)

`match_flash` recognizes every such kernel whose score holds one product sum with a factor `a` not varying along the
keys and a factor `b` not varying along the rows i (q . k), whatever E, g (dropout's mask), F (a row of v) and the
factors constant along j (1 / the denominator) are. `render_flash` writes it as LLVM IR in blocks, in the way
codegen/cpu_gemm.py writes a matrix product:

- per batch (the global loops other than the rows i and the column d) b is packed transposed, one K x NR panel per
  block of NR keys with the keys along the vector lanes, and F as a Tpad x Dpad panel (zero-padded to whole blocks): both
  stay in L2 up to T ~ 2048 (D = 64), and a block reads each at unit stride;
- rows are taken MR at a time (the last tile repeats its last row); their a(i, k) are packed k-major. Keys go in blocks of
  NR = two vectors: the MR x NR scores are a register tile of `fmuladd`s over k (a broadcast of a times a vector of
  packed b), like the GEMM microkernel;
- E and g are printed as vector code, keys along the lanes (cpu_vector.py's `Vector`: contiguous loads become vector loads, others
  gathers; lanes past the last key masked), then per row the block max, the running max, one rescale, and 16-lane
  exps (codegen/transcendental.py's polynomial as fused multiply-adds, for the arguments <= 0 they have here; results
  below 2^-126, beside a largest term of 1, are 0);
- sums that vary along d (attention's output) are a second register tile: the block's weights p * g (MR x NR, through a
  small stack buffer) times the packed F, MR rows x NR columns of fmuladds over the block's keys, added to the row's
  accumulators (in a stack buffer, L1) rescaled once per block; sums that do not (the denominator) stay one vector a row;
- a block whose rows are all -inf so far and in it (a causal mask's upper triangle) skips the exps and the second tile;
  where the score is where(gate, ..., -inf) with a gate that does not read the product (causal, a bool mask), a block
  where the gate holds nowhere skips its scores too;
- after the last block each row's values replace the max and the sums in the stored expression, printed by the LLVM
  renderer per output (a row that is all -inf gives NaN, as the stored softmax does); row statistics stored beside the sum
  (the max and the denominator that attention's backward reads: engine/outputs.py groups them) are printed once a row.

No T x T buffer exists; the outer loop the runtime splits across threads is batch x row tiles (each thread repacks when
its batch changes). Kernels outside this form, or with elementwise work the vector printer does not cover (16-bit
floats), keep codegen/online.py's loop nest; NOOPT=1 too.
"""
from __future__ import annotations
import math
from dataclasses import dataclass
from picograd.helpers import prod
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.codegen.llvm import ll_type, ll_const
from picograd.codegen.gemm_match import vector_lanes
from picograd.codegen.cpu_tiles import TileRenderer
from picograd.codegen.cpu_vector import Vector, vectorizable
from picograd.codegen.online import _factors, _exp_of_shifted, _canonical, _product
from picograd.codegen.transcendental import EXP2_POLY, ROUND32, transcendental_rules

# rows of a tile: MR x (NR = 2 vectors) accumulators in both register tiles (12 of 32 AVX-512 registers), as in the GEMM
MR = 6
# the packed b and F panels (K x Tpad and Tpad x Dpad floats) live on the stack up to this size (T = 2048 at D = 64), else
# on the heap (aligned_alloc, freed before returning)
MAX_STACK_BYTES = 1 << 20
# stands for a score's product sum, which the renderer computes (a leaf without a shape: UOp arithmetic on it stays below
# the tensor level)
_SCORE = UOp(Ops.DEFINE_ACC, dtypes.float32, (), ("flash", "score"))


@dataclass(frozen=True)
class FlashSum:
  """One sum of exp2((x - M) * c) * factors over the keys, split by what its factors vary along."""
  node: UOp          # the REDUCE(ADD) as lowered
  g: UOp | None      # factors varying along the keys, not the column (dropout's mask), in the max's key loop; vector code
  f: UOp | None      # factors varying along the keys and the column (a row of v), in the max's key loop: packed
  outside: UOp | None  # factors constant along the keys (1 / the denominator): applied after the pass


@dataclass(frozen=True)
class Flash:
  """A matched online-softmax kernel: its loops by role, the score's parts and the sums."""
  store: UOp
  maxes: frozenset[UOp]   # every lowered copy of the scores' max (the same value)
  c: float                # exp2's scale (log2(e))
  score: UOp              # the score x with its product sum replaced by _SCORE (transcendentals approximated)
  a: UOp                  # the product's factor along the rows (q), over i and k
  b: UOp                  # the factor along the keys (k), over j and k
  j: UOp
  k: UOp
  batch: tuple[UOp, ...]  # outermost first
  i: UOp
  d: UOp | None
  sums: tuple[FlashSum, ...]  # inner ones first (a sum's `outside` may read another: the denominator)
  # when the score is where(gate, ..., -inf) and the gate does not read the product (causal, a bool mask): the gate
  gate: UOp | None = None
  stats: tuple[UOp, ...] = ()  # STOREs of row statistics beside the sum's (the max, the denominator), once a row

  @property
  def columns(self) -> list[FlashSum]: return [s for s in self.sums if s.f is not None]
  @property
  def mr(self) -> int: return min(MR, self.i.arg[1])  # rows of a tile (a single query row, decoding, takes one)


def _loops(u: UOp) -> set[UOp]: return {n for n in toposort([u]) if n.op is Ops.RANGE}
def _has_reduce(u: UOp) -> bool: return any(n.op is Ops.REDUCE for n in toposort([u]))


def _stack_bytes(T: int, K: int, D: int, columns: int) -> int:
  nr = 2 * vector_lanes()
  tpad, dpad = -(-T // nr) * nr, -(-D // nr) * nr
  return 4 * (K * tpad + columns * tpad * dpad)


def match_flash(sink: UOp) -> Flash | None:
  """The flash form of lowered kernel `sink` (module docstring), or None when it is not one. Beside the sum's STORE the
  kernel may store the row statistics it reads (the max, the denominator: engine/outputs.py groups them with it for the
  backward's reading), values of the rows without the column, stored once a row."""
  if any(st.op is not Ops.STORE or len(st.src) != 3 for st in sink.src) or not sink.src: return None
  st = max(reversed(sink.src), key=lambda x: x.src[0].arg[1])  # the sum: the largest output (the rows' statistics are smaller)
  stats = tuple(x for x in sink.src if x is not st)
  nodes = toposort([sink])
  if any(n.op is Ops.CHECK for n in nodes): return None
  found: list[tuple[UOp, UOp, float, list[UOp]]] = []  # (sum, its max, c, its other factors)
  for r in nodes:
    if r.op is not Ops.REDUCE or r.arg is not Ops.ADD or len(r.src) != 2 or r.dtype != dtypes.float32: continue
    factors = _factors(r.src[0])
    for n, e in enumerate(factors):
      if (hit := _exp_of_shifted(e)) is None: continue
      x, m, c = hit
      if m.src[1].arg[1] == r.src[1].arg[1] and _canonical(x, r.src[1]) is _canonical(m.src[0], m.src[1]):
        found.append((r, m, c, factors[:n] + factors[n + 1:]))
        break
  if not found: return None
  m0, c = found[0][1], found[0][2]
  j, x = m0.src[1], m0.src[0]
  key = _canonical(x, j)
  maxes = frozenset(n for n in nodes if n.op is Ops.REDUCE and n.arg is Ops.MAX and len(n.src) == 2 and n.src[1].arg[1] == j.arg[1]
                    and _canonical(n.src[0], n.src[1]) is key)
  if any(m not in maxes or cc != c for _, m, cc, _ in found) or x.dtype != dtypes.float32: return None
  # the score: one product sum over k, a factor without the keys (q) times one with them (k)
  inner = [n for n in toposort([x]) if n.op is Ops.REDUCE]
  if len(inner) != 1 or inner[0].arg is not Ops.ADD or len(inner[0].src) != 2 or inner[0].dtype != dtypes.float32: return None
  prod_, k = inner[0].src
  if prod_.op is not Ops.MUL or any(f.dtype != dtypes.float32 for f in prod_.src): return None
  with_j = [f for f in prod_.src if j in _loops(f)]
  if len(with_j) != 1: return None
  b = with_j[0]
  a = prod_.src[1] if prod_.src[0] is b else prod_.src[0]
  glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  gx = [g for g in glob if g in _loops(x)]
  rows = [g for g in gx if g in _loops(a) and g not in _loops(b)]
  cols = [g for g in glob if g not in gx]
  if len(cols) > 1: return None
  # one query row has no loop (lowering drops loops of size 1): a stand-in of size 1 that nothing reads
  i = rows[-1] if rows else UOp(Ops.RANGE, dtypes.int32, (), (-1, 1, "global"))
  d = cols[0] if cols else None
  batch = tuple(g for g in gx if g is not i)
  base = set(batch)
  if not (_loops(a) <= base | {i, k} and _loops(b) <= base | {j, k}): return None
  score = substitute(x, {inner[0]: _SCORE})
  if _has_reduce(score) or not _loops(score) <= base | {i, j}: return None
  score = graph_rewrite(score, transcendental_rules)
  if not vectorizable(score, (_SCORE,)): return None
  sums = []
  for r, _, _, rest in sorted(found, key=lambda f: nodes.index(f[0])):
    jr = r.src[1]
    varying = [substitute(f, {jr: j}) for f in rest if jr in _loops(f)]
    outside = [f for f in rest if jr not in _loops(f)]
    f_part = [f for f in varying if d is not None and d in _loops(f)]
    g_part = [f for f in varying if f not in f_part]
    g = graph_rewrite(_product(g_part, r.dtype), transcendental_rules) if g_part else None
    fv = _product(f_part, r.dtype) if f_part else None
    if any(_has_reduce(f) for f in varying) or (g is not None and (not _loops(g) <= base | {i, j} or not vectorizable(g))): return None
    if fv is not None and not _loops(fv) <= base | {j, d}: return None
    sums.append(FlashSum(r, g, fv, _product(outside, r.dtype) if outside else None))
  # every other reduction the stored values read must be one of these sums or a copy of the max
  known = {s.node for s in sums} | maxes
  for root in [st.src[2], *(s.outside for s in sums if s.outside is not None), *(v for x in stats for v in x.src[1:])]:
    seen = toposort([root], stop=lambda n: n in known)
    if any(n.op is Ops.REDUCE and n not in known for n in seen) or any(n.op is Ops.RANGE and n not in glob for n in seen): return None
  # a row statistic is stored once a row: it reads no column and no column sum
  if any(n is d or (n.op is Ops.REDUCE and n in {sm.node for sm in sums if sm.f is not None})
         for x in stats for n in toposort(list(x.src[1:]), stop=lambda n: n in maxes)): return None
  if any(r.arg[1] == 0 for r in (*glob, j, k)): return None
  gate = score.src[0] if score.op is Ops.WHERE and score.src[2].op is Ops.CONST and score.src[2].arg == -math.inf and \
    _SCORE not in toposort([score.src[0]]) else None
  return Flash(st, maxes, c, score, a, b, j, k, batch, i, d, tuple(sums), gate, stats)


def describe_flash(f: Flash) -> list[str]:
  """What DEBUG=3 lists for a kernel rendered as flash attention."""
  nr = 2 * vector_lanes()
  cols = f"; {len(f.columns)} sum(s) along a column of {f.d.arg[1]} as a {f.mr}x{nr} tile per block" if f.d is not None and f.columns else ""
  stats = f"; {len(f.stats)} row statistic(s) stored" if f.stats else ""
  return [f"flash attention: {f.i.arg[1]} rows x {f.j.arg[1]} keys, k = {f.k.arg[1]}; {f.mr}x{nr} score tile of <{nr // 2} x float> "
          f"fmuladds per block of {nr} keys{cols}{stats}; batch x row tiles split across threads"]


def flash_tiles(f: Flash) -> int:
  """The outer loop the runtime splits across threads: every batch's row tiles."""
  batches = prod(b.arg[1] for b in f.batch)
  return batches * -(-f.i.arg[1] // f.mr)


def flash_flops(f: Flash) -> int:
  """Arithmetic per run, as DEBUG=2 reports it: each score's product sum, and each sum's multiply-add per column."""
  batches = prod(b.arg[1] for b in f.batch)
  per_key = 2 * f.k.arg[1] + sum(2 * (f.d.arg[1] if s.f is not None and f.d is not None else 1) for s in f.sums)
  return batches * f.i.arg[1] * f.j.arg[1] * per_key


class FlashRenderer(TileRenderer):
  """Prints a matched online-softmax kernel as one LLVM function (module docstring)."""

  f: Flash

  def max_of(self, a: str, b: str, vec: bool) -> str:
    """a > b ? a : b (x86's max). A NaN score can drop out of the max; the sums still see it, through its exp."""
    t, c = (f"<{self.lanes} x float>", f"<{self.lanes} x i1>") if vec else ("float", "i1")
    return self.i64(f"select {c} {self.i64(f'fcmp ogt {t} {a}, {b}')}, {t} {a}, {t} {b}")

  def hmax(self, v: str) -> str:
    """The max of vector `v`'s lanes: halves folded onto each other."""
    L, w = self.lanes, self.lanes // 2
    while w:
      mask = ", ".join(f"i32 {(n + w) % L}" for n in range(L))
      v = self.max_of(v, self.i64(f"shufflevector <{L} x float> {v}, <{L} x float> poison, <{L} x i32> <{mask}>"), True)
      w //= 2
    return self.i64(f"extractelement <{L} x float> {v}, i64 0")

  def exp2(self, t: str, vec: bool) -> str:
    """2^t for t <= 0 (or NaN, which stays NaN): the polynomial of codegen/transcendental.py, with fused multiply-adds and
    results below 2^-126 flushed to 0 (beside the row's largest term, 1, they are lost anyway; -inf gives exactly 0)."""
    L = self.lanes
    ft, it, bt = (f"<{L} x float>", f"<{L} x i32>", f"<{L} x i1>") if vec else ("float", "i32", "i1")
    def k(v: float, dt: DType = dtypes.float32) -> str: return f"splat ({ll_type(dt)} {ll_const(v, dt)})" if vec else ll_const(v, dt)
    fma = f"llvm.fmuladd.{f'v{L}f32' if vec else 'f32'}"
    self.decls.add(f"declare {ft} @{fma}({ft}, {ft}, {ft})")
    low = self.i64(f"fcmp olt {ft} {t}, {k(-126.0)}")
    tc = self.i64(f"select {bt} {low}, {ft} {k(-126.0)}, {ft} {t}")
    rounded = self.i64(f"fadd {ft} {tc}, {k(ROUND32)}")
    frac = self.i64(f"fsub {ft} {tc}, {self.i64(f'fsub {ft} {rounded}, {k(ROUND32)}')}")
    acc = k(EXP2_POLY[-1])
    for coef in reversed((1.0,) + EXP2_POLY[:-1]): acc = self.i64(f"call {ft} @{fma}({ft} {acc}, {ft} {frac}, {ft} {k(coef)})")
    n = self.i64(f"sub {it} {self.i64(f'bitcast {ft} {rounded} to {it}')}, {k(0x4B400000, dtypes.int32)}")
    biased = self.i64(f"add {it} {n}, {k(127, dtypes.int32)}")
    power = self.i64(f"bitcast {it} {self.i64(f'shl {it} {biased}, {k(23, dtypes.int32)}')} to {ft}")
    return self.i64(f"select {bt} {low}, {ft} {k(0.0)}, {ft} {self.i64(f'fmul {ft} {acc}, {power}')}")

  def render(self) -> str:
    f, L = self.f, self.lanes
    nr, vt = 2 * L, f"<{self.lanes} x float>"
    T, K, NI = f.j.arg[1], f.k.arg[1], f.i.arg[1]
    ND = f.d.arg[1] if f.d is not None else 1
    tpad, dpad = -(-T // nr) * nr, -(-ND // nr) * nr
    ntile = -(-NI // self.mr)
    columns = f.columns
    lane_sums = [s for s in f.sums if s.f is None]
    for p in self.params: self.names[p] = f"%p{p.arg[0]}"
    heap = _stack_bytes(T, K, ND, len(columns)) > MAX_STACK_BYTES
    self.panel("%kt", K * tpad, heap)
    self.allocas += [f"%ap = alloca [{K * self.mr} x float], align 64",
                     f"%mt = alloca [{self.mr} x float], align 64", f"%sc = alloca [{self.mr} x float], align 64",
                     "%packed = alloca i64", "store i64 -1, ptr %packed"]
    for n, _ in enumerate(columns):
      self.panel(f"%vp{n}", tpad * dpad, heap)
      self.allocas += [f"%pt{n} = alloca [{self.mr * nr} x float], align 64",
                       f"%ot{n} = alloca [{self.mr * dpad} x float], align 64"]
    for n, _ in enumerate(lane_sums): self.allocas.append(f"%lt{n} = alloca [{self.mr * L} x float], align 64")
    self.decls |= {f"declare {vt} @llvm.fmuladd.v{L}f32({vt}, {vt}, {vt})", f"declare float @llvm.vector.reduce.fadd.v{L}f32(float, {vt})"}
    u = self.loop("u", "%start", "%end")
    bt, it = self.i64(f"udiv i64 {u}, {ntile}"), self.i64(f"urem i64 {u}, {ntile}")
    values = self.digits(bt, f.batch)
    self.pack_once(bt, lambda: self._pack_panels(values, tpad, dpad))  # b and F
    i0 = self.mul(it, self.mr)
    rows = [self.min64(self.add(i0, r), str(NI - 1)) for r in range(self.mr)]  # the last tile repeats row NI - 1
    # this tile's a, k-major: ap[k * MR + r]
    kk = self.loop("ak", "0", str(K))
    for r in range(self.mr):
      self.emit(f"store float {self._value(f.a, {**values, f.i: rows[r], f.k: kk})}, ptr {self.ptr('%ap', self.add(self.mul(kk, self.mr), r))}")
    self.close("ak")
    for r in range(self.mr): self.emit(f"store float 0xFFF0000000000000, ptr {self.ptr('%mt', r)}")
    for n, _ in enumerate(lane_sums):
      for r in range(self.mr): self.emit(f"store {vt} zeroinitializer, ptr {self.ptr(f'%lt{n}', r * L)}, align 64")
    for n, _ in enumerate(columns):
      z = self.loop(f"oz{n}", "0", str(self.mr * dpad // L))
      self.emit(f"store {vt} zeroinitializer, ptr {self.ptr(f'%ot{n}', self.mul(z, L))}, align 64")
      self.close(f"oz{n}")
    batch32 = {loop: (self.narrow(values[loop], loop), False) for loop in f.batch}
    rows32 = [self.narrow(r, f.i) for r in rows]
    jb = self.loop("jb", "0", str(tpad // nr))
    j0 = self.mul(jb, nr)
    jvec, valid = self.block_lanes(j0, f.j)  # the keys of the block's two vectors, and which are keys at all
    printers = [Vector(self, f.j, valid[h]) for h in range(2)]
    def env(r: int, h: int) -> dict[UOp, tuple[str, bool]]: return {**batch32, f.i: (rows32[r], False), f.j: (jvec[h], True)}
    if f.gate is not None:
      # a block where the gate holds for no row and key (above a causal diagonal) is all -inf: skipped before its scores
      live = "0"
      for r in range(self.mr):
        for h in range(2):
          g, along = printers[h].run(f.gate, env(r, h))
          g = g if along else printers[h].splat(g, dtypes.bool)
          if valid[h] is not None: g = self.i64(f"and <{L} x i1> {g}, {valid[h]}")
          self.decls.add(f"declare i1 @llvm.vector.reduce.or.v{L}i1(<{L} x i1>)")
          live = self.i64(f"or i1 {live}, {self.i64(f'call i1 @llvm.vector.reduce.or.v{L}i1(<{L} x i1> {g})')}")
      self.emit(f"br i1 {live}, label %jb.live, label %jb.latch")
      self.label("jb.live")
    s = self._score_tile(j0)
    x, bmax = [], []
    for r in range(self.mr):
      xr = []
      for h in range(2):
        v, _ = printers[h].run(f.score, {**env(r, h), _SCORE: (s[r][h], True)})
        if valid[h] is not None: v = self.i64(f"select <{L} x i1> {valid[h]}, {vt} {v}, {vt} splat (float 0xFFF0000000000000)")
        xr.append(v)
      x.append(xr)
      bmax.append(self.hmax(self.max_of(xr[0], xr[1], True)))
    # a block where every row is -inf (masked) changes nothing: skip its exps and products
    dead = self.i64(f"fcmp oeq float {bmax[0]}, 0xFFF0000000000000")
    for r in range(1, self.mr): dead = self.i64(f"and i1 {dead}, {self.i64(f'fcmp oeq float {bmax[r]}, 0xFFF0000000000000')}")
    self.emit(f"br i1 {dead}, label %jb.latch, label %jb.update")
    self.label("jb.update")
    c = ll_const(f.c, dtypes.float32)
    for r in range(self.mr):
      old = self.i64(f"load float, ptr {self.ptr('%mt', r)}")
      new = self.max_of(old, bmax[r], False)
      # a row that is -inf so far subtracts 0, never -inf - -inf
      shift = self.i64(f"select i1 {self.i64(f'fcmp oeq float {new}, 0xFFF0000000000000')}, float 0.0, float {new}")
      scale = self.exp2(self.i64(f"fmul float {self.i64(f'fsub float {old}, {shift}')}, {c}"), False)
      self.emit(f"store float {new}, ptr {self.ptr('%mt', r)}")
      self.emit(f"store float {scale}, ptr {self.ptr('%sc', r)}")
      shifts = self.splat_f(shift)
      probs = [self.exp2(self.i64(f"fmul {vt} {self.i64(f'fsub {vt} {x[r][h]}, {shifts}')}, splat (float {c})"), True) for h in range(2)]
      def weights(sm: FlashSum) -> list[str]:
        if sm.g is None: return probs
        return [self.i64(f"fmul {vt} {probs[h]}, {printers[h].run(sm.g, env(r, h))[0]}") for h in range(2)]
      for n, sm in enumerate(lane_sums):
        w = weights(sm)
        at = self.ptr(f"%lt{n}", r * L)
        acc = self.i64(f"fmul {vt} {self.i64(f'load {vt}, ptr {at}, align 64')}, {self.splat_f(scale)}")
        term = self.i64(f"fadd {vt} {w[0]}, {w[1]}")
        self.emit(f"store {vt} {self.i64(f'fadd {vt} {acc}, {term}')}, ptr {at}, align 64")
      for n, sm in enumerate(columns):
        for h, wh in enumerate(weights(sm)): self.emit(f"store {vt} {wh}, ptr {self.ptr(f'%pt{n}', r * nr + h * L)}, align 64")
    for n, _ in enumerate(columns): self._value_tile(n, j0, dpad)
    self.close("jb")
    # each row's max and sums into the stored expression, one output at a time
    nrows = self.min64(str(self.mr), self.i64(f"sub nsw i64 {NI}, {i0}"))
    er = self.loop("er", "0", nrows)
    values[f.i] = self.add(i0, er)
    m = self.i64(f"load float, ptr {self.ptr('%mt', er)}")
    seen = self.i64(f"fcmp une float {m}, 0xFFF0000000000000")  # else the row is all -inf: NaN, as exp(-inf - -inf)
    totals = {}
    for n, sm in enumerate(lane_sums):
      vec = self.i64(f"load {vt}, ptr {self.ptr(f'%lt{n}', self.mul(er, L))}, align 64")
      totals[sm.node] = self.i64(f"call reassoc float @llvm.vector.reduce.fadd.v{L}f32(float -0.0, {vt} {vec})")
    given = dict.fromkeys(f.maxes, m)
    def finish(sm: FlashSum, acc: str) -> None:
      if sm.outside is not None: acc = self.i64(f"fmul float {self._value(sm.outside, values, given)}, {acc}")
      given[sm.node] = self.i64(f"select i1 {seen}, float {acc}, float 0x7FF8000000000000")
    for sm in lane_sums: finish(sm, totals[sm.node])  # (the denominator: a column sum's outside factor reads it)
    for stat in f.stats: self._value(stat, values, given)
    if f.d is not None: values[f.d] = self.loop("ec", "0", str(ND))
    for n, sm in enumerate(columns):
      slot = self.add(self.mul(er, dpad), values[f.d] if f.d is not None else 0)
      finish(sm, self.i64(f"load float, ptr {self.ptr(f'%ot{n}', slot)}"))
    self._value(f.store, values, given)
    if f.d is not None: self.close("ec")
    self.close("er")
    self.close("u")
    return self.function()

  def _pack_panels(self, values: dict[UOp, str], tpad: int, dpad: int) -> None:
    """b transposed into K x NR panels, one per block of keys (kt[(j // NR * K + k) * NR + j % NR]: a block's scores read
    it at unit stride), and each column sum's F into vp[j * dpad + d]; zeros past T keys and D columns."""
    f, nr = self.f, 2 * self.lanes
    T, K = f.j.arg[1], f.k.arg[1]
    def slot(j: str, k: str) -> str:
      return self.add(self.mul(self.add(self.mul(self.i64(f"udiv i64 {j}, {nr}"), K), k), nr), self.i64(f"urem i64 {j}, {nr}"))
    pj = self.loop("pj", "0", str(T))
    pk = self.loop("pk", "0", str(K))
    self.emit(f"store float {self._value(f.b, {**values, f.j: pj, f.k: pk})}, ptr {self.ptr('%kt', slot(pj, pk))}")
    self.close("pk")
    self.close("pj")
    if tpad > T:
      zj = self.loop("zj", str(T), str(tpad))
      zk = self.loop("zk", "0", str(K))
      self.emit(f"store float 0.0, ptr {self.ptr('%kt', slot(zj, zk))}")
      self.close("zk", vectorize=False)
      self.close("zj", vectorize=False)
    for n, sm in enumerate(f.columns):
      assert sm.f is not None and f.d is not None
      self.pack_panel(f"%vp{n}", sm.f, values, f.j, f.d, tpad, dpad, str(n))

  def _score_tile(self, j0: str) -> list[list[str]]:
    """The MR x NR product sums of this block: sum over k of a broadcast ap[k, r] times the packed b's two vectors at k."""
    L, K, vt = self.lanes, self.f.k.arg[1], f"<{self.lanes} x float>"
    pred = self.block
    self.emit("br label %sk.body")
    self.label("sk.body")
    self.emit(f"%sk = phi i64 [0, %{pred}], [%sk.next, %sk.body]")
    acc = [[f"%s{r}.{h}" for h in range(2)] for r in range(self.mr)]
    for r in range(self.mr):
      for h in range(2): self.emit(f"{acc[r][h]} = phi {vt} [zeroinitializer, %{pred}], [{acc[r][h]}.n, %sk.body]")
    row = self.add(self.mul(j0, K), self.mul("%sk", 2 * L))  # this block's panel, row k
    bvec = [self.i64(f"load {vt}, ptr {self.ptr('%kt', self.add(row, h * L))}, align 64") for h in range(2)]
    base = self.mul("%sk", self.mr)
    for r in range(self.mr):
      splat = self.splat_f(self.i64(f"load float, ptr {self.ptr('%ap', self.add(base, r))}"))
      for h in range(2): self.emit(f"{acc[r][h]}.n = call {vt} @llvm.fmuladd.v{L}f32({vt} {splat}, {vt} {bvec[h]}, {vt} {acc[r][h]})")
    self.emit("%sk.next = add nsw i64 %sk, 1")
    self.emit(f"br i1 {self.i64(f'icmp slt i64 %sk.next, {K}')}, label %sk.body, label %sk.exit")
    self.label("sk.exit")
    return [[f"{acc[r][h]}.n" for h in range(2)] for r in range(self.mr)]

  def _value_tile(self, n: int, j0: str, dpad: int) -> None:
    """Column sum n's accumulators (ot, MR x dpad) rescaled and plus this block's weights (pt, MR x NR) times F's panel rows."""
    L, vt = self.lanes, f"<{self.lanes} x float>"
    nr = 2 * L
    dp = self.loop(f"dp{n}", "0", str(dpad // nr))
    col = self.mul(dp, nr)
    slots = [[self.ptr(f"%ot{n}", self.add(col, r * dpad + h * L)) for h in range(2)] for r in range(self.mr)]
    start = []
    for r in range(self.mr):
      scale = self.splat_f(self.i64(f"load float, ptr {self.ptr('%sc', r)}"))
      start.append([self.i64(f"fmul {vt} {self.i64(f'load {vt}, ptr {slots[r][h]}, align 64')}, {scale}") for h in range(2)])
    pred, loop = self.block, f"pv{n}"
    self.emit(f"br label %{loop}.body")
    self.label(f"{loop}.body")
    self.emit(f"%{loop} = phi i64 [0, %{pred}], [%{loop}.next, %{loop}.body]")
    acc = [[f"%o{n}.{r}.{h}" for h in range(2)] for r in range(self.mr)]
    for r in range(self.mr):
      for h in range(2): self.emit(f"{acc[r][h]} = phi {vt} [{start[r][h]}, %{pred}], [{acc[r][h]}.n, %{loop}.body]")
    row = self.add(self.mul(self.add(j0, f"%{loop}"), dpad), col)
    vvec = [self.i64(f"load {vt}, ptr {self.ptr(f'%vp{n}', self.add(row, h * L))}, align 64") for h in range(2)]
    for r in range(self.mr):
      w = self.splat_f(self.i64(f"load float, ptr {self.ptr(f'%pt{n}', self.add(f'%{loop}', r * nr))}"))
      for h in range(2): self.emit(f"{acc[r][h]}.n = call {vt} @llvm.fmuladd.v{L}f32({vt} {w}, {vt} {vvec[h]}, {vt} {acc[r][h]})")
    self.emit(f"%{loop}.next = add nsw i64 %{loop}, 1")
    self.emit(f"br i1 {self.i64(f'icmp slt i64 %{loop}.next, {nr}')}, label %{loop}.body, label %{loop}.exit")
    self.label(f"{loop}.exit")
    for r in range(self.mr):
      for h in range(2): self.emit(f"store {vt} {acc[r][h]}.n, ptr {slots[r][h]}, align 64")
    self.close(f"dp{n}")


def render_flash(name: str, flash: Flash, params: list[UOp]) -> str:
  """LLVM IR of the kernel `flash` was matched in: signature `name(ptr params..., i64 start, i64 end)` over row tiles."""
  return FlashRenderer(name, flash, params).render()


__all__ = ["Flash", "FlashSum", "match_flash", "render_flash", "describe_flash", "flash_tiles", "flash_flops", "MR"]
