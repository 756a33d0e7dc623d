"""Reductions over recomputed scores on the CPU, register-tiled like flash attention (codegen layer).

engine/recompute.py keeps attention's scores x = q . k (and dP = dO . v) out of memory: each reduction reading them
computes them again. Lowered, such a kernel stores a value built from one reduction over a loop s:

    R(r, d) = sum_s T(r, s) * F(s, d)      or      R(r) = sum_s T(r, s),  max_s T(r, s)
    T = E(P_1, ..., P_m, r, s)             P_n = sum_k a_n(r, k) * b_n(s, k)     (short product sums, recomputed)

(O = sum_j P_ij v_jd, dV_j = sum_i P_ij dO_i, dQ and dK with T = dS, the row max and sum), or several such values over the
same product sums (engine/outputs.py recomputed_groups; each its own T, F and accumulators, the product tiles computed
once a block): over one s (dK and dV), or crosswise, C(s, d) = sum_r T(r, s) * F(r, d) (dQ beside them: lowered over
the same loops, its sum runs over what is s to the others; `_oriented` renames it). `match_recomputed` recognizes
every such kernel: factors of the reduction's term that vary along d (a row of v, of k, of dO, of q) form F, the rest T;
each product sum's factors split into a (along the output rows r) and b (along s). `render_recomputed` writes it the way
codegen/cpu_flash.py writes the forward:

- per batch (the global loops other than r and d) every b_n is packed as K x NR panels (the s values along the vector
  lanes) and F as a Spad x Dpad panel; per tile of MR rows each a_n is packed k-major;
- per block of NR values of s: each P_n is an MR x NR register tile of fmuladds over k; T is printed as 16-lane vector
  code (cpu_vector.py's `Vector`, lanes past the end masked to the reduction's identity); then either the MR x NR terms times
  F's panel rows into MR x Dpad accumulators (L1), or one vector accumulator per row (the max, the sum);
- a block where T is where(gate, ..., 0 or -inf) with a gate made from positions (no loads, no product sum) that holds
  for no row and no s (above a causal diagonal) is skipped before its scores;
- a crosswise output adds, per block, the MR x NR terms times the tile's MR rows of F into a Dpad x Spad buffer of the
  whole batch (transposed: per column two vectors of s, MR broadcasts of F), stored after the batch's last row tile;
- after the last block each row's sums replace the reduction in the stored expression, printed per output.

The outer loop the runtime splits across threads is batch x row tiles, or the batches where a crosswise output gathers
every row tile's share (no two threads add into one buffer). Kernels outside this form keep the loop nest.
"""
from __future__ import annotations
from dataclasses import dataclass
from picograd.helpers import prod
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.codegen.gemm_match import vector_lanes
from picograd.codegen.cpu_flash import MR, MAX_STACK_BYTES, _SCORE, _loops, _has_reduce
from picograd.codegen.cpu_tiles import TileRenderer
from picograd.codegen.cpu_vector import Vector, vectorizable
from picograd.codegen.online import _product, identity_gates, outer_sum, inner_sums, product_key, merge_equal_sums
from picograd.codegen.transcendental import transcendental_rules


@dataclass(frozen=True)
class ProductSum:
  """sum_k a(r, k) * b(s, k), recomputed per block: `stand` stands for it in the term."""
  node: UOp
  a: UOp
  b: UOp
  k: UOp
  stand: UOp


@dataclass(frozen=True)
class RecomputedOut:
  """One stored reduction over s of a matched kernel: its term T (each product sum replaced by its stand-in,
  transcendentals approximated) and its factor F."""
  store: UOp
  red: UOp                 # the reduction over s (ADD or MAX) as lowered
  term: UOp
  f: UOp | None            # F (along s and d), packed
  gate: UOp | None = None  # T = where(gate, ..., identity) with a gate reading no product sum: blocks where it never holds are skipped
  crosswise: bool = False  # a sum over the rows r stored along s (dQ beside dK and dV): each row tile adds its share

  @property
  def is_max(self) -> bool: return self.red.arg is Ops.MAX
  @property
  def identity(self) -> str: return "0xFFF0000000000000" if self.is_max else "0.0"


@dataclass(frozen=True)
class Recomputed:
  """A matched kernel (module docstring): its loops by role, the product sums, and one or several outputs over them
  (attention's dK and dV: engine/outputs.py recomputed_groups; their product sums are computed once a block)."""
  outs: tuple[RecomputedOut, ...]
  s: UOp
  batch: tuple[UOp, ...]   # outermost first
  r: UOp
  d: UOp | None
  products: tuple[ProductSum, ...]

  @property
  def mr(self) -> int: return min(MR, self.r.arg[1])
  @property
  def gate(self) -> UOp | None:
    """The gate that skips a block: the outputs' gates (or-ed), when every output has one."""
    gates = list(dict.fromkeys(o.gate for o in self.outs))
    if None in gates: return None
    out = gates[0]
    for g in gates[1:]: out = UOp(Ops.OR, dtypes.bool, (out, g))  # type: ignore[arg-type]
    return out


def _mul_factors(u: UOp) -> list[UOp]:
  """The operands of a float product tree. (where(c, a, 0) stays whole: as a * where(c, 1, 0) a NaN in a would survive.)"""
  out, stack = [], [u]
  while stack:
    n = stack.pop()
    if n.op is Ops.MUL and n.dtype.is_float: stack.extend(n.src)
    else: out.append(n)
  return out


def _qstride(spad: int) -> int:
  """Floats between columns of a crosswise output's buffer: one block of s past the values, so that a block's columns
  (one cache line each) do not all fall in one L1 set (a stride of 4 KiB at 1024 values does that)."""
  return spad + 16


def _stand(n: int) -> UOp: return UOp(Ops.DEFINE_ACC, dtypes.float32, (), ("recomputed", n))


def _oriented(sink: UOp) -> tuple[UOp, tuple[bool, ...]] | None:
  """`sink` with every store's sum over one loop s of terms of the same product sums (each one node), and which stores
  are crosswise: a store whose sum runs along the products' other axis (dQ beside dK and dV: lowered over the same loops,
  its sum runs over what is s to them and its rows are theirs) is renamed so that it sums over the rows' loop r and is
  stored along s. None where the stores do not fit that form."""
  outers = [outer_sum(st.src[2]) for st in sink.src]
  if any(o is None or not inner_sums(o.src[0]) for o in outers): return None
  s = outers[0].src[1]  # type: ignore[union-attr]
  glob = {n for n in toposort([sink]) if n.op is Ops.RANGE and n.arg[2] == "global"}
  first = inner_sums(outers[0].src[0])[0]  # type: ignore[union-attr]
  if first.src[0].op is not Ops.MUL or len(first.src[0].src) != 2: return None
  a, b = sorted(first.src[0].src, key=lambda f: s in _loops(f))
  rows = (_loops(a) - _loops(b)) & glob
  if len(rows) != 1 or s in _loops(a): return None
  r = rows.pop()
  def renamed(i: int, cross: bool) -> UOp:
    own = outers[i].src[1]  # type: ignore[union-attr]
    if own.arg[1] != (r if cross else s).arg[1] or (cross and r.arg[1] != s.arg[1]): return sink.src[i]
    return substitute(sink.src[i], {r: s, own: r} if cross else {own: s})
  def keys(store: UOp) -> set[tuple]:
    red = outer_sum(store.src[2])
    return {product_key(p) for p in inner_sums(red.src[0])} if red is not None else set()
  known, flags = keys(renamed(0, False)), [False]
  for i in range(1, len(sink.src)):
    normal, cross = keys(renamed(i, False)), keys(renamed(i, True))
    if normal & known and outers[i].src[1].arg[1] == s.arg[1]: flags.append(False); known |= normal  # type: ignore[union-attr]
    elif cross & known: flags.append(True); known |= cross
    else: return None
  out = UOp(Ops.SINK, sink.dtype, tuple(renamed(i, c) for i, c in enumerate(flags)), sink.arg)
  if 2 * sum(flags) > len(flags):  # the crosswise ones are most: they take the rows, the others go crosswise
    out, flags = substitute(out, {r: s, s: r}), [not c for c in flags]
  return merge_equal_sums(out), tuple(flags)


def match_recomputed(sink: UOp) -> Recomputed | None:
  """The recomputed-score form of lowered kernel `sink` (module docstring), or None when it is not one. Several stores
  (each a sum over the same loop of terms of the same product sums, or crosswise: along their other axis) are one pass
  with an output each."""
  if not sink.src or any(st.op is not Ops.STORE or len(st.src) != 3 for st in sink.src): return None
  if (oriented := _oriented(sink)) is None: return None
  sink, crosswise = oriented
  nodes = toposort([sink])
  if any(n.op is Ops.CHECK for n in nodes): return None
  reds = [outer_sum(st.src[2]) for st in sink.src]
  if any(red is None or red.arg not in (Ops.ADD, Ops.MAX) or red.dtype != dtypes.float32 for red in reds): return None
  if any(c and red.arg is not Ops.ADD for c, red in zip(crosswise, reds)): return None  # type: ignore[union-attr]
  s = next(red.src[1] for c, red in zip(crosswise, reds) if not c)  # type: ignore[union-attr]
  inner = [n for n in nodes if n.op is Ops.REDUCE and n not in reds]
  if not inner or any(not set(n for n in inner if n in toposort([red.src[0]])) for red in reds): return None  # type: ignore[union-attr]
  glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda g: g.arg[0])
  products = []
  for n, p in enumerate(inner):
    if p.arg is not Ops.ADD or len(p.src) != 2 or p.dtype != dtypes.float32 or (prod_ := p.src[0]).op is not Ops.MUL: return None
    if any(f.dtype != dtypes.float32 or _has_reduce(f) for f in prod_.src): return None
    with_s = [f for f in prod_.src if s in _loops(f)]
    if len(with_s) != 1: return None
    b = with_s[0]
    a = prod_.src[1] if prod_.src[0] is b else prod_.src[0]
    products.append(ProductSum(p, a, b, p.src[1], _stand(n)))
  along_a = set().union(*(_loops(p.a) for p in products))
  along_b = set().union(*(_loops(p.b) for p in products))
  rows = [g for g in glob if g in along_a and g not in along_b]
  cols = [g for g in glob if g not in along_a and g not in along_b]
  if len(rows) != 1 or len(cols) > 1: return None
  r, d = rows[0], (cols[0] if cols else None)
  batch = tuple(g for g in glob if g is not r and g is not d)
  base = set(batch)
  if any(not (_loops(p.a) <= base | {r, p.k} and _loops(p.b) <= base | {s, p.k}) for p in products): return None
  outs = []
  for st, red, cross in zip(sink.src, reds, crosswise):
    assert red is not None
    factors = _mul_factors(red.src[0]) if red.arg is Ops.ADD else [red.src[0]]
    f_part = [f for f in factors if d is not None and d in _loops(f)]
    t_part = [f for f in factors if f not in f_part]
    fv = _product(f_part, red.dtype) if f_part else None
    if cross and fv is None: return None  # (a crosswise sum is a tile's terms times rows of F: dS times k)
    if fv is not None and (_has_reduce(fv) or not _loops(fv) <= base | {r if cross else s, d}): return None  # type: ignore[operator]
    term = substitute(_product(t_part, red.dtype), {p.node: p.stand for p in products})
    if _has_reduce(term) or not _loops(term) <= base | {r, s}: return None
    # only a gate made from positions (causal): a row it masks everywhere has a max of -inf, and its terms are NaN where the
    # block is computed (as with the scores stored) but skipped blocks add nothing; a positional mask that leaves a query no
    # key is rare, a loaded one (padding) is not
    gate = next((g for g in identity_gates(term, red.arg is Ops.ADD, {p.stand for p in products})
                 if not any(n.op is Ops.LOAD for n in toposort([g]))), None)
    term = graph_rewrite(term, transcendental_rules)
    # (the check knows cpu_flash's score stand-in: every product sum's stands for it there)
    if not vectorizable(substitute(term, {p.stand: _SCORE for p in products}), (_SCORE,)): return None
    if gate is not None and not vectorizable(gate): return None
    # the stored expression reads no other reduction and no other loop (a crosswise one is stored along s, not r)
    outside = toposort([st.src[2]], stop=lambda n: n is red)
    stored_along = (set(glob) - {r}) | {s} if cross else set(glob)
    if any(n.op is Ops.REDUCE and n is not red for n in outside) or any(n.op is Ops.RANGE and n not in stored_along for n in outside): return None
    outs.append(RecomputedOut(st, red, term, fv, gate, cross))
  if any(g.arg[1] == 0 for g in (*glob, s, *(p.k for p in products))): return None
  return Recomputed(tuple(outs), s, batch, r, d, tuple(products))


def describe_recomputed(f: Recomputed) -> list[str]:
  """What DEBUG=3 lists for such a kernel."""
  nr = 2 * vector_lanes()
  def what(o: RecomputedOut) -> str:
    if o.crosswise and f.d is not None: return f"crosswise: the tile's rows of a column of {f.d.arg[1]} into a {f.s.arg[1]}x{f.d.arg[1]} buffer"
    return f"times a column of {f.d.arg[1]} as a {f.mr}x{nr} tile" if o.f is not None and f.d is not None else f"a {o.red.arg.name.lower()} per row"
  outs = f"{len(f.outs)} outputs: " if len(f.outs) > 1 else ""
  split = "batches" if any(o.crosswise for o in f.outs) else "batch x row tiles"
  return [f"recomputed scores: {f.r.arg[1]} rows x {f.s.arg[1]}, {len(f.products)} product sum(s) of k = "
          f"{', '.join(str(p.k.arg[1]) for p in f.products)} as {f.mr}x{nr} tiles per block, {outs}{', '.join(what(o) for o in f.outs)}; "
          f"{split} split across threads"]


def recomputed_tiles(f: Recomputed) -> int:
  """The outer loop the runtime splits across threads: every batch's row tiles, or the batches where a crosswise output
  gathers every row tile's share."""
  batches = prod(b.arg[1] for b in f.batch)
  return batches if any(o.crosswise for o in f.outs) else batches * -(-f.r.arg[1] // f.mr)


def recomputed_flops(f: Recomputed) -> int:
  batches = prod(b.arg[1] for b in f.batch)
  per = sum(2 * p.k.arg[1] for p in f.products) + sum(2 * f.d.arg[1] if o.f is not None and f.d is not None else 1 for o in f.outs)
  return batches * f.r.arg[1] * f.s.arg[1] * per


class RecomputedRenderer(TileRenderer):
  """Prints a matched kernel as one LLVM function (module docstring)."""

  f: Recomputed

  def render(self) -> str:
    f, L = self.f, self.lanes
    nr, vt = 2 * L, f"<{L} x float>"
    S, NR_ = f.s.arg[1], f.r.arg[1]
    ND = f.d.arg[1] if f.d is not None else 1
    spad, dpad = -(-S // nr) * nr, -(-ND // nr) * nr
    ntile = -(-NR_ // self.mr)
    columns = [o for o in f.outs if o.f is not None]
    crosswise = [n for n, o in enumerate(f.outs) if o.crosswise]
    for param in self.params: self.names[param] = f"%p{param.arg[0]}"
    heap = 4 * (sum(p.k.arg[1] for p in f.products) * spad + len(columns) * spad * dpad + len(crosswise) * _qstride(spad) * dpad) > MAX_STACK_BYTES
    for n, p in enumerate(f.products):
      self.panel(f"%kt{n}", p.k.arg[1] * spad, heap)
      self.allocas.append(f"%ap{n} = alloca [{p.k.arg[1] * self.mr} x float], align 64")
    self.allocas += ["%packed = alloca i64", "store i64 -1, ptr %packed"]
    for n, o in enumerate(f.outs):
      if o.crosswise:  # the whole output of a batch (D x S, transposed) and this tile's rows of F (MR x D)
        self.panel(f"%dq{n}", _qstride(spad) * dpad, heap)
        self.allocas += [f"%pt{n} = alloca [{self.mr * nr} x float], align 64", f"%fq{n} = alloca [{self.mr * dpad} x float], align 64"]
      elif o.f is not None:
        self.panel(f"%vp{n}", spad * dpad, heap)
        self.allocas += [f"%pt{n} = alloca [{self.mr * nr} x float], align 64", f"%ot{n} = alloca [{self.mr * dpad} x float], align 64"]
      else: self.allocas.append(f"%lt{n} = alloca [{self.mr * L} x float], align 64")
    self.decls |= {f"declare {vt} @llvm.fmuladd.v{L}f32({vt}, {vt}, {vt})", f"declare float @llvm.vector.reduce.fadd.v{L}f32(float, {vt})",
                   f"declare float @llvm.vector.reduce.fmax.v{L}f32({vt})", f"declare {vt} @llvm.maxnum.v{L}f32({vt}, {vt})"}
    u = self.loop("u", "%start", "%end")
    if crosswise:  # a thread takes whole batches: its row tiles add into the crosswise outputs' buffers, stored at the end
      bt = u
      values = self.digits(bt, f.batch)
      self.pack_once(bt, lambda: self._pack_panels(values, spad, dpad))
      for n in crosswise:
        z = self.loop(f"qz{n}", "0", str(_qstride(spad) * dpad // L))
        self.emit(f"store {vt} zeroinitializer, ptr {self.ptr(f'%dq{n}', self.mul(z, L))}, align 64")
        self.close(f"qz{n}")
      it = self.loop("it", "0", str(ntile))
    else:
      bt, it = self.i64(f"udiv i64 {u}, {ntile}"), self.i64(f"urem i64 {u}, {ntile}")
      values = self.digits(bt, f.batch)
      self.pack_once(bt, lambda: self._pack_panels(values, spad, dpad))
    i0 = self.mul(it, self.mr)
    rows = [self.min64(self.add(i0, r), str(NR_ - 1)) for r in range(self.mr)]  # the last tile repeats row NR - 1
    for n, p in enumerate(f.products):
      kk = self.loop(f"ak{n}", "0", str(p.k.arg[1]))
      for r in range(self.mr):
        self.emit(f"store float {self._value(p.a, {**values, f.r: rows[r], p.k: kk})}, ptr {self.ptr(f'%ap{n}', self.add(self.mul(kk, self.mr), r))}")
      self.close(f"ak{n}")
    for n in crosswise:  # this tile's rows of F, zeros past the last column
      o = f.outs[n]
      assert o.f is not None and f.d is not None
      fd = self.loop(f"fd{n}", "0", str(dpad))
      for r in range(self.mr):
        at = self.ptr(f"%fq{n}", self.add(fd, r * dpad))
        if dpad > ND: self.emit(f"store float 0.0, ptr {at}")
        inside = self.i64(f"icmp slt i64 {fd}, {ND}")
        self.emit(f"br i1 {inside}, label %fq{n}.{r}.in, label %fq{n}.{r}.out")
        self.label(f"fq{n}.{r}.in")
        self.emit(f"store float {self._value(o.f, {**values, f.r: rows[r], f.d: fd})}, ptr {at}")
        self.emit(f"br label %fq{n}.{r}.out")
        self.label(f"fq{n}.{r}.out")
      self.close(f"fd{n}", vectorize=False)
    for n, o in enumerate(f.outs):
      if o.crosswise: continue
      if o.f is not None:
        z = self.loop(f"oz{n}", "0", str(self.mr * dpad // L))
        self.emit(f"store {vt} zeroinitializer, ptr {self.ptr(f'%ot{n}', self.mul(z, L))}, align 64")
        self.close(f"oz{n}")
      else:
        for r in range(self.mr): self.emit(f"store {vt} splat (float {o.identity}), ptr {self.ptr(f'%lt{n}', r * L)}, align 64")
    batch32 = {loop: (self.narrow(values[loop], loop), False) for loop in f.batch}
    rows32 = [self.narrow(r, f.r) for r in rows]
    sb = self.loop("sb", "0", str(spad // nr))
    s0 = self.mul(sb, nr)
    svec, valid = self.block_lanes(s0, f.s)
    printers = [Vector(self, f.s, valid[h]) for h in range(2)]
    def env(r: int, h: int) -> dict[UOp, tuple[str, bool]]: return {**batch32, f.r: (rows32[r], False), f.s: (svec[h], True)}
    if (gate := f.gate) is not None:
      live = "0"
      self.decls.add(f"declare i1 @llvm.vector.reduce.or.v{L}i1(<{L} x i1>)")
      for r in range(self.mr):
        for h in range(2):
          g, along = printers[h].run(gate, env(r, h))
          g = g if along else printers[h].splat(g, dtypes.bool)
          if valid[h] is not None: g = self.i64(f"and <{L} x i1> {g}, {valid[h]}")
          live = self.i64(f"or i1 {live}, {self.i64(f'call i1 @llvm.vector.reduce.or.v{L}i1(<{L} x i1> {g})')}")
      self.emit(f"br i1 {live}, label %sb.live, label %sb.latch")
      self.label("sb.live")
    tiles = [self._score_tile(n, s0) for n in range(len(f.products))]
    for r in range(self.mr):
      for h in range(2):
        given = {**env(r, h), **{p.stand: (tiles[n][r][h], True) for n, p in enumerate(f.products)}}
        for n, o in enumerate(f.outs):
          t, along = printers[h].run(o.term, given)
          if not along: t = self.splat_f(t)
          if valid[h] is not None: t = self.i64(f"select <{L} x i1> {valid[h]}, {vt} {t}, {vt} splat (float {o.identity})")
          if o.f is not None or o.crosswise: self.emit(f"store {vt} {t}, ptr {self.ptr(f'%pt{n}', r * nr + h * L)}, align 64")
          else:
            at = self.ptr(f"%lt{n}", r * L)
            acc = self.i64(f"load {vt}, ptr {at}, align 64")
            new = self.i64(f"call {vt} @llvm.maxnum.v{L}f32({vt} {acc}, {vt} {t})") if o.is_max else self.i64(f"fadd {vt} {acc}, {t}")
            self.emit(f"store {vt} {new}, ptr {at}, align 64")
    for n, o in enumerate(f.outs):
      if o.crosswise: self._crosswise_tile(n, s0, dpad, i0)
      elif o.f is not None: self._value_tile(n, s0, dpad)
    self.close("sb")
    nrows = self.min64(str(self.mr), self.i64(f"sub nsw i64 {NR_}, {i0}"))
    er = self.loop("er", "0", nrows)
    values[f.r] = self.add(i0, er)
    totals = {}
    for n, o in enumerate(f.outs):
      if o.f is not None or o.crosswise: continue
      vec = self.i64(f"load {vt}, ptr {self.ptr(f'%lt{n}', self.mul(er, L))}, align 64")
      totals[n] = self.i64(f"call float @llvm.vector.reduce.fmax.v{L}f32({vt} {vec})") if o.is_max else \
        self.i64(f"call reassoc float @llvm.vector.reduce.fadd.v{L}f32(float -0.0, {vt} {vec})")
    if f.d is not None: values[f.d] = self.loop("ec", "0", str(ND))
    for n, o in enumerate(f.outs):
      if o.crosswise: continue
      if o.f is not None:
        totals[n] = self.i64(f"load float, ptr {self.ptr(f'%ot{n}', self.add(self.mul(er, dpad), values[f.d] if f.d is not None else 0))}")
      self._value(o.store, values, {o.red: totals[n]})
    if f.d is not None: self.close("ec")
    self.close("er")
    if crosswise:
      self.close("it")
      assert f.d is not None
      where = {**self.digits(bt, f.batch), f.s: self.loop("qs", "0", str(S)), f.d: self.loop("qd", "0", str(ND))}  # (dq is d-major)
      for n in crosswise:
        total = self.i64(f"load float, ptr {self.ptr(f'%dq{n}', self.add(self.mul(where[f.d], _qstride(spad)), where[f.s]))}")
        self._value(f.outs[n].store, where, {f.outs[n].red: total})
      self.close("qd")
      self.close("qs")
    self.close("u")
    return self.function()

  def _pack_panels(self, values: dict[UOp, str], spad: int, dpad: int) -> None:
    """Each b_n into K x NR panels (kt[(s // NR * K + k) * NR + s % NR]), F into vp[s * dpad + d]; zeros past S and D."""
    f, nr = self.f, 2 * self.lanes
    S = f.s.arg[1]
    for n, p in enumerate(f.products):
      K = p.k.arg[1]
      def slot(s: str, k: str) -> str:
        return self.add(self.mul(self.add(self.mul(self.i64(f"udiv i64 {s}, {nr}"), K), k), nr), self.i64(f"urem i64 {s}, {nr}"))
      ps = self.loop(f"ps{n}", "0", str(S))
      pk = self.loop(f"pk{n}", "0", str(K))
      self.emit(f"store float {self._value(p.b, {**values, f.s: ps, p.k: pk})}, ptr {self.ptr(f'%kt{n}', slot(ps, pk))}")
      self.close(f"pk{n}")
      self.close(f"ps{n}")
      if spad > S:
        zs = self.loop(f"zs{n}", str(S), str(spad))
        zk = self.loop(f"zk{n}", "0", str(K))
        self.emit(f"store float 0.0, ptr {self.ptr(f'%kt{n}', slot(zs, zk))}")
        self.close(f"zk{n}", vectorize=False)
        self.close(f"zs{n}", vectorize=False)
    for n, o in enumerate(f.outs):
      if o.f is not None and f.d is not None and not o.crosswise: self.pack_panel(f"%vp{n}", o.f, values, f.s, f.d, spad, dpad, str(n))

  def _score_tile(self, n: int, s0: str) -> list[list[str]]:
    """Product sum n's MR x NR values for this block: sum over k of a broadcast ap[k, r] times the packed b's two vectors."""
    L, K, vt = self.lanes, self.f.products[n].k.arg[1], f"<{self.lanes} x float>"
    pred, loop = self.block, f"sk{n}"
    self.emit(f"br label %{loop}.body")
    self.label(f"{loop}.body")
    self.emit(f"%{loop} = phi i64 [0, %{pred}], [%{loop}.next, %{loop}.body]")
    acc = [[f"%s{n}.{r}.{h}" for h in range(2)] for r in range(self.mr)]
    for r in range(self.mr):
      for h in range(2): self.emit(f"{acc[r][h]} = phi {vt} [zeroinitializer, %{pred}], [{acc[r][h]}.n, %{loop}.body]")
    row = self.add(self.mul(s0, K), self.mul(f"%{loop}", 2 * L))
    bvec = [self.i64(f"load {vt}, ptr {self.ptr(f'%kt{n}', self.add(row, h * L))}, align 64") for h in range(2)]
    base = self.mul(f"%{loop}", self.mr)
    for r in range(self.mr):
      splat = self.splat_f(self.i64(f"load float, ptr {self.ptr(f'%ap{n}', self.add(base, r))}"))
      for h in range(2): self.emit(f"{acc[r][h]}.n = call {vt} @llvm.fmuladd.v{L}f32({vt} {splat}, {vt} {bvec[h]}, {vt} {acc[r][h]})")
    self.emit(f"%{loop}.next = add nsw i64 %{loop}, 1")
    self.emit(f"br i1 {self.i64(f'icmp slt i64 %{loop}.next, {K}')}, label %{loop}.body, label %{loop}.exit")
    self.label(f"{loop}.exit")
    return [[f"{acc[r][h]}.n" for h in range(2)] for r in range(self.mr)]

  def _value_tile(self, n: int, s0: str, dpad: int) -> None:
    """Output n's accumulators (ot, MR x dpad) plus this block's terms (pt, MR x NR) times its F's panel rows."""
    L, vt = self.lanes, f"<{self.lanes} x float>"
    nr = 2 * L
    dp = self.loop(f"dp{n}", "0", str(dpad // nr))
    col = self.mul(dp, nr)
    slots = [[self.ptr(f'%ot{n}', self.add(col, r * dpad + h * L)) for h in range(2)] for r in range(self.mr)]
    start = [[self.i64(f"load {vt}, ptr {slots[r][h]}, align 64") for h in range(2)] for r in range(self.mr)]
    pred, loop = self.block, f"pv{n}"
    self.emit(f"br label %{loop}.body")
    self.label(f"{loop}.body")
    self.emit(f"%{loop} = phi i64 [0, %{pred}], [%{loop}.next, %{loop}.body]")
    acc = [[f"%o{n}.{r}.{h}" for h in range(2)] for r in range(self.mr)]
    for r in range(self.mr):
      for h in range(2): self.emit(f"{acc[r][h]} = phi {vt} [{start[r][h]}, %{pred}], [{acc[r][h]}.n, %{loop}.body]")
    row = self.add(self.mul(self.add(s0, f"%{loop}"), dpad), col)
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


  def _crosswise_tile(self, n: int, s0: str, dpad: int, i0: str) -> None:
    """Crosswise output n's buffer (dq, kept transposed: dq[d * spad + s]) at this block's NR values of s, plus the sum over
    the tile's rows of their terms (pt, MR x NR: two vectors a row, held in registers) times F's value at the row and
    column (fq, MR x dpad, broadcast): per column two vector accumulators and 2 * MR fused multiply-adds. A row past the
    last (the last tile repeats it) adds 0."""
    L, vt, NR_ = self.lanes, f"<{self.lanes} x float>", self.f.r.arg[1]
    nr, spad = 2 * L, -(-self.f.s.arg[1] // (2 * L)) * 2 * L
    weights = []
    for r in range(self.mr):
      live = self.i64(f"icmp slt i64 {self.add(i0, r)}, {NR_}")
      row = [self.i64(f"load {vt}, ptr {self.ptr(f'%pt{n}', r * nr + h * L)}, align 64") for h in range(2)]
      weights.append([self.i64(f"select i1 {live}, {vt} {w}, {vt} zeroinitializer") for w in row])
    cd = self.loop(f"cd{n}", "0", str(dpad))
    at = [self.ptr(f"%dq{n}", self.add(self.add(self.mul(cd, _qstride(spad)), s0), h * L)) for h in range(2)]
    acc = [self.i64(f"load {vt}, ptr {at[h]}, align 32") for h in range(2)]
    for r in range(self.mr):
      fr = self.splat_f(self.i64(f"load float, ptr {self.ptr(f'%fq{n}', self.add(cd, r * dpad))}"))
      acc = [self.i64(f"call {vt} @llvm.fmuladd.v{L}f32({vt} {weights[r][h]}, {vt} {fr}, {vt} {acc[h]})") for h in range(2)]
    for h in range(2): self.emit(f"store {vt} {acc[h]}, ptr {at[h]}, align 32")
    self.close(f"cd{n}", vectorize=False)


def render_recomputed(name: str, f: Recomputed, params: list[UOp]) -> str:
  """LLVM IR of the kernel `f` was matched in: signature `name(ptr params..., i64 start, i64 end)` over row tiles."""
  return RecomputedRenderer(name, f, params).render()


__all__ = ["Recomputed", "RecomputedOut", "match_recomputed", "render_recomputed", "describe_recomputed", "recomputed_tiles", "recomputed_flops"]
