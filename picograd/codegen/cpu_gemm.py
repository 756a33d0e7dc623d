"""Matrix products on the CPU as a packed-panel, register-blocked GEMM (codegen layer).

`gemm_match.match_gemm` says which lowered kernels are GEMMs (a sum of products a[.., i, k] * b[.., k, j] with an
elementwise epilogue); `render_gemm` then writes such a kernel as LLVM IR in the classic blocked form instead of the
generic loop nest:

- the columns are cut into blocks of NC, and K into blocks of at most KC (so a packed KC x NC block of b stays in
  L2); for each block b is packed into a stack buffer of KC x NR panels (contiguous, zero-padded past N), read by
  the microkernel at unit stride whatever b's layout;
- rows are taken MR at a time (the last tile reads its last row again for the missing ones), read
  straight from a plain row-major a, else from a k-major copy of a few tiles' rows (a transposed a,
  or elementwise work computed once there); the microkernel keeps the MR x NR tile of sums in
  MR * NR / lanes vector registers (explicit <lanes x float> values, one fmuladd per row and vector
  each k step: a broadcast of a[i, k] times a vector of the b panel) over the K block, starting from
  the tile's sums after the previous block, so each output is summed in k order, as the generic loop nest does;
- the tile goes through a stack buffer (holding a group of tiles' partial sums while K blocks remain) to the
  epilogue, after the last K block; only the tile's valid outputs are stored.
  Operands that are not plain loads, and the epilogue, are printed by the LLVM renderer from the
  kernel's own nodes, with the loops (and the sum) named by this GEMM's values.

The outer loop the runtime splits across threads is batch x row tiles; each thread packs the
b blocks it reads (once per group of its row tiles where K is blocked). Vectors are 16 floats where the
host has AVX-512, else 8. Small products and few rows against a large b keep the generic loop nest
(codegen/opt.py), as does `NOOPT=1`.
"""
from __future__ import annotations
from typing import Sequence
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, toposort
from picograd.codegen.llvm import LLVMRenderer, ll_type
from picograd.codegen.gemm_match import Gemm, MR, VECTORS, C_BYTES, A_GROUP_BYTES, k_block, vector_lanes, _panel_sizes, _loops, _size, _unit_loads
from picograd.codegen.cpu_vector import Vector, vectorizable


class GemmRenderer(LLVMRenderer):
  """Prints a matched GEMM as one LLVM function, with the generic renderer's signature, slice entry and epilogue ops."""

  def __init__(self, name: str, gemm: Gemm, params: list[UOp]):
    super().__init__(name, [])
    self.g, self.params, self.lanes = gemm, params, vector_lanes()
    self.ordered, self.accumulated, self.checked = set(), set(), False
    self.steps: dict[str, int] = {}  # loop name -> its step, for `close`
    self.sel = "0"  # gated sums: the term the tile's batch value reads

  def i64(self, expr: str) -> str:
    out = self.tmp()
    self.emit(f"{out} = {expr}")
    return out

  def affine(self, off: tuple[int, dict[UOp, int]], values: dict[UOp, str], skip: tuple[UOp, ...]) -> str:
    """i64 constant + sum(coefficient * value) over the loops in `values` (those in `skip` left out)."""
    acc = str(off[0])
    for r, c in off[1].items():
      if r in skip or c == 0: continue
      term = self.i64(f"mul nsw i64 {values[r]}, {c}")
      acc = self.i64(f"add nsw i64 {acc}, {term}")
    return acc

  def add(self, a: str | int, b: str | int) -> str: return self.i64(f"add nsw i64 {a}, {b}")
  def mul(self, a: str | int, b: str | int) -> str: return self.i64(f"mul nsw i64 {a}, {b}")

  def narrow(self, value: str, r: UOp) -> str:
    """An i64 value as loop `r`'s type."""
    return value if r.dtype == dtypes.int64 else self.i64(f"trunc i64 {value} to {ll_type(r.dtype)}")

  def lane_values(self, first: str, lt: str) -> str:
    """<lanes x lt>: first, first + 1, ... (first: a value of type lt)."""
    L = self.lanes
    one = self.i64(f"insertelement <{L} x {lt}> poison, {lt} {first}, i64 0")
    base = self.i64(f"shufflevector <{L} x {lt}> {one}, <{L} x {lt}> poison, <{L} x i32> zeroinitializer")
    return self.i64(f"add <{L} x {lt}> {base}, <" + ", ".join(f"{lt} {n}" for n in range(L)) + ">")

  def lanes_below(self, end: str) -> str:
    """<lanes x i1>: which of the lane numbers 0, 1, ... are below `end` (an i64 up to 2^31: a count of rows or steps)."""
    L = self.lanes
    ids = "<" + ", ".join(f"i32 {n}" for n in range(L)) + ">"
    if not end.startswith("%"): return "<" + ", ".join(f"i1 {int(n < int(end))}" for n in range(L)) + ">"
    one = self.i64(f"insertelement <{L} x i32> poison, i32 {self.i64(f'trunc i64 {end} to i32')}, i64 0")
    bound = self.i64(f"shufflevector <{L} x i32> {one}, <{L} x i32> poison, <{L} x i32> zeroinitializer")
    return self.i64(f"icmp slt <{L} x i32> {ids}, {bound}")

  def vector_value(self, x: UOp, lanes_loop: UOp, first: str, mask: str, scalars: dict[UOp, str]) -> str:
    """<lanes x float>: operand `x` with `lanes_loop` at first, first + 1, ... along the lanes (an i64 start) and the other
    loops at the i64 values `scalars`; lanes outside `mask` read nothing."""
    given = {r: (self.narrow(v, r), False) for r, v in scalars.items()}
    given[lanes_loop] = (self.lane_values(self.narrow(first, lanes_loop), ll_type(lanes_loop.dtype)), True)
    val, vec = Vector(self, lanes_loop, mask).run(x, given)
    if vec: return val
    one = self.i64(f"insertelement <{self.lanes} x float> poison, float {val}, i64 0")
    return self.i64(f"shufflevector <{self.lanes} x float> {one}, <{self.lanes} x float> poison, <{self.lanes} x i32> zeroinitializer")

  def min64(self, a: str, b: str) -> str:
    lt = self.i64(f"icmp slt i64 {a}, {b}")
    return self.i64(f"select i1 {lt}, i64 {a}, i64 {b}")

  def k_range(self, at: int, size: int, pc: str, kcb: str) -> tuple[str, str]:
    """[lo, hi): the steps of a term over `size` steps of k from `at` that fall in the K block [pc, pc + kcb)
    (all of them when the block is all of K)."""
    if pc == "0": return "0", str(size)
    lo = self.sub(pc, at)
    lo = self.i64(f"select i1 {self.i64(f'icmp sgt i64 {lo}, 0')}, i64 {lo}, i64 0")
    return lo, self.min64(self.sub(self.add(pc, kcb), at), str(size))

  def sub(self, a: str | int, b: str | int) -> str: return self.i64(f"sub nsw i64 {a}, {b}")

  def only_term(self, prefix: str, n: int, end: bool = False) -> None:
    """Open (or with `end`, close) the code that runs for gated sums only where the tile's batch value reads term n."""
    if self.g.select is None: return
    if end:
      self.emit(f"br label %{prefix}{n}.off")
      self.label(f"{prefix}{n}.off")
      return
    self.emit(f"br i1 {self.i64(f'icmp eq i64 {self.sel}, {n}')}, label %{prefix}{n}.on, label %{prefix}{n}.off")
    self.label(f"{prefix}{n}.on")

  def digits(self, flat: str, loops: Sequence[UOp]) -> dict[UOp, str]:
    """The values of `loops` at flat index `flat`, innermost fastest (a row-major flattening of their sizes)."""
    values: dict[UOp, str] = {}
    for loop in reversed(loops):
      values[loop] = self.i64(f"urem i64 {flat}, {loop.arg[1]}")
      flat = self.i64(f"udiv i64 {flat}, {loop.arg[1]}")
    return values

  def loop(self, name: str, start: str, end: str, step: int = 1) -> str:
    """Open `for (name = start; name < end; name += step)`; `close(name)` ends it. Returns the induction variable."""
    pred = self.block
    self.emit(f"br label %{name}.head")
    self.label(f"{name}.head")
    self.emit(f"%{name} = phi i64 [{start}, %{pred}], [%{name}.next, %{name}.latch]")
    ok = self.i64(f"icmp slt i64 %{name}, {end}")
    self.emit(f"br i1 {ok}, label %{name}.body, label %{name}.exit")
    self.label(f"{name}.body")
    self.steps[name] = step
    return f"%{name}"

  def close(self, name: str, vectorize: bool = True) -> None:
    """End loop `name`; `vectorize=False` keeps LLVM's loop vectorizer off it (a loop of a few iterations: compile time)."""
    self.emit(f"br label %{name}.latch")
    self.label(f"{name}.latch")
    self.emit(f"%{name}.next = add nsw i64 %{name}, {self.steps[name]}")
    # LLVM's unroller copied these loops' bodies (the packing loops 8 times) and took ~0.5 s a kernel for no measured gain
    n = len(self.loop_md)
    self.emit(f"br label %{name}.head, !llvm.loop !{n}")
    off = ', !{!"llvm.loop.vectorize.enable", i1 false}' if not vectorize else ""
    self.loop_md.append(f"!{n} = distinct !{{!{n}, !{{!\"llvm.loop.unroll.disable\"}}{off}}}")
    self.label(f"{name}.exit")

  def render(self) -> str:
    g = self.g
    lanes = _panel_sizes(g)[0] // VECTORS
    m, n, k = g.sizes
    nr, nc = _panel_sizes(g)
    kc = k_block(g)
    blocked = kc < k
    vt = f"<{lanes} x float>"
    ntile = -(-m // MR)
    for p in self.params: self.names[p] = f"%p{p.arg[0]}"
    self.allocas += [f"%bp = alloca [{kc * nc} x float], align 64"] + ([] if blocked else [f"%tile = alloca [{MR * nr} x float], align 64"])
    self.decls.add(f"declare {vt} @llvm.fmuladd.v{lanes}f32({vt}, {vt}, {vt})")
    # gated sums: b's packing picks the term of the tile's batch value
    b_batched = (g.select is not None and not g.b_shared) or any(r in _loops(y) for _, y, _ in g.terms for r in g.batch)
    jc = self.loop("jc", "0", str(n), nc)
    ncols = self.min64(str(nc), self.i64(f"sub nsw i64 {n}, {jc}"))
    npan = self.i64(f"udiv i64 {self.i64(f'add nsw i64 {ncols}, {nr - 1}')}, {nr}")
    if blocked:
      # K in blocks of kc: a group of the thread's row tiles at a time (their partial sums in %cbuf) runs through all
      # the blocks, b's block packed once for the group; the tile's sums go on from where the last block left them
      group = max(1, C_BYTES // (4 * MR * nc))
      self.allocas.append(f"%cbuf = alloca [{group * MR * nc} x float], align 64")
      ug = self.loop("ug", "%start", "%end", group)
      uend = self.min64(self.add(ug, group), "%end")
      pc = self.loop("kb", "0", str(k), kc)
      kcb = self.min64(str(kc), self.i64(f"sub nsw i64 {k}, {pc}"))
    else: ug, uend, pc, kcb = "%start", "%end", "0", str(k)
    if not b_batched: self._pack({}, jc, ncols, npan, pc, kcb)
    u = self.loop("u", ug, uend)
    bt, it = self.i64(f"udiv i64 {u}, {ntile}"), self.i64(f"urem i64 {u}, {ntile}")
    values = self.digits(bt, g.batch)
    if g.select is not None:  # the term this batch value reads, from the table
      self.sel = "0"
      for flat, t in enumerate(g.select):
        if t: self.sel = self.i64(f"select i1 {self.i64(f'icmp eq i64 {bt}, {flat}')}, i64 {t}, i64 {self.sel}")
    if b_batched:
      # pack again where this tile's batch is not the one packed last (each thread's tiles run in order, so once per batch)
      prev = self.tmp()
      self.allocas += ["%packed = alloca i64", "store i64 -1, ptr %packed"]
      self.emit(f"{prev} = load i64, ptr %packed")
      first = self.i64(f"icmp eq i64 {u}, {ug}")
      other = self.i64(f"icmp ne i64 {prev}, {bt}")
      need = self.i64(f"or i1 {first}, {other}")
      self.emit(f"br i1 {need}, label %repack, label %packed.ok")
      self.label("repack")
      self._pack(values, jc, ncols, npan, pc, kcb)
      self.emit(f"store i64 {bt}, ptr %packed")
      self.emit("br label %packed.ok")
      self.label("packed.ok")
    i0 = self.i64(f"mul nsw i64 {it}, {MR}")
    if g.a_off is not None and abs(a_step := g.a_off[1][g.k]) == 1:
      a_base, a_rows = self.affine(g.a_off, values, (g.i, g.k)), []
      if blocked: a_base = self.add(a_base, self.mul(pc, a_step))
      for r in range(MR):  # the last tile repeats row m - 1 for rows past the end (their sums are not stored)
        row = self.min64(self.add(i0, r), str(m - 1))
        ofs = self.add(a_base, self.mul(row, g.a_off[1][g.i]))
        a_rows.append(self.i64(f"getelementptr inbounds float, ptr {self.names[g.a.src[0]]}, i64 {ofs}"))
    else: a_rows, a_step = self._pack_a(u, it, i0, values, ntile, ug, uend, pc, kcb)
    jr = self.loop("jr", "0", npan)
    panel = self.i64(f"getelementptr inbounds float, ptr %bp, i64 {self.i64(f'mul nsw i64 {jr}, {kc * nr}')}")
    accs = [[f"%acc{r}.{v}" for v in range(VECTORS)] for r in range(MR)]
    if blocked:
      # this tile's slot in %cbuf: zeros before the first block, else the sums so far
      at = self.mul(self.add(self.mul(self.sub(u, ug), nc // nr), jr), MR * nr)
      slot = self.i64(f"getelementptr inbounds float, ptr %cbuf, i64 {at}")
      self.emit(f"br i1 {self.i64(f'icmp eq i64 {pc}, 0')}, label %acc.zero, label %acc.load")
      self.label("acc.load")
      loaded = [[self.i64(f"load {vt}, ptr {self.i64(f'getelementptr inbounds float, ptr {slot}, i64 {r * nr + v * lanes}')}, align {4 * lanes}")
                 for v in range(VECTORS)] for r in range(MR)]
      self.emit("br label %acc.go")
      self.label("acc.zero")
      self.emit("br label %acc.go")
      self.label("acc.go")
      init = [[self.i64(f"phi {vt} [zeroinitializer, %acc.zero], [{loaded[r][v]}, %acc.load]") for v in range(VECTORS)] for r in range(MR)]
    else: slot, init = "%tile", [["zeroinitializer"] * VECTORS for _ in range(MR)]
    # the microkernel: MR x VECTORS accumulators carried around the k loop in registers
    pred = self.block
    self.emit("br label %k.body")
    self.label("k.body")
    self.emit(f"%k = phi i64 [0, %{pred}], [%k.next, %k.body]")
    for r in range(MR):
      for v in range(VECTORS): self.emit(f"{accs[r][v]} = phi {vt} [{init[r][v]}, %{pred}], [{accs[r][v]}.n, %k.body]")
    bvec = []
    ivt = f"<{lanes} x i32>"
    for v in range(VECTORS):
      ofs = self.i64(f"add nsw i64 {self.i64(f'mul nsw i64 %k, {nr}')}, {v * lanes}")
      ptr = self.i64(f"getelementptr inbounds float, ptr {panel}, i64 {ofs}")
      bvec.append(self.i64(f"load {vt}, ptr {ptr}, align {4 * lanes}"))
      if g.masked: bvec[-1] = self.i64(f"bitcast {vt} {bvec[-1]} to {ivt}")
    ak = self.mul("%k", a_step)
    for r in range(MR):
      s = self.i64(f"load float, ptr {self.i64(f'getelementptr inbounds float, ptr {a_rows[r]}, i64 {ak}')}")
      one = self.i64(f"insertelement {vt} poison, float {s}, i64 0")
      splat = self.i64(f"shufflevector {vt} {one}, {vt} poison, <{lanes} x i32> zeroinitializer")
      if g.masked:  # one operand is a mask's bits: the term is the other's value or +0.0, added as where(mask, value, 0) adds it
        bits = self.i64(f"bitcast {vt} {splat} to {ivt}")
        for v in range(VECTORS):
          term = self.i64(f"bitcast {ivt} {self.i64(f'and {ivt} {bits}, {bvec[v]}')} to {vt}")
          self.emit(f"{accs[r][v]}.n = fadd {vt} {accs[r][v]}, {term}")
        continue
      for v in range(VECTORS): self.emit(f"{accs[r][v]}.n = call {vt} @llvm.fmuladd.v{lanes}f32({vt} {splat}, {vt} {bvec[v]}, {vt} {accs[r][v]})")
    self.emit("%k.next = add nsw i64 %k, 1")
    self.emit(f"%k.more = icmp slt i64 %k.next, {kcb}")
    self.emit("br i1 %k.more, label %k.body, label %k.exit")
    self.label("k.exit")
    for r in range(MR):
      for v in range(VECTORS):
        ptr = self.i64(f"getelementptr inbounds float, ptr {slot}, i64 {r * nr + v * lanes}")
        self.emit(f"store {vt} {accs[r][v]}.n, ptr {ptr}, align {4 * lanes}")
    if blocked:  # the epilogue after the last block only
      self.emit(f"br i1 {self.i64(f'icmp eq i64 {self.add(pc, kcb)}, {k}')}, label %epi, label %epi.exit")
      self.label("epi")
    j0 = self.i64(f"add nsw i64 {jc}, {self.i64(f'mul nsw i64 {jr}, {nr}')}")
    rows, cols = self.min64(str(MR), self.i64(f"sub nsw i64 {m}, {i0}")), self.min64(str(nr), self.i64(f"sub nsw i64 {n}, {j0}"))
    er = self.loop("er", "0", rows)
    values[g.i] = self.i64(f"add nsw i64 {i0}, {er}")
    ec = self.loop("ec", "0", cols)
    values[g.j] = self.i64(f"add nsw i64 {j0}, {ec}")
    at = self.i64(f"add nsw i64 {self.i64(f'mul nsw i64 {er}, {nr}')}, {ec}")
    total = self.i64(f"load float, ptr {self.i64(f'getelementptr inbounds float, ptr {slot}, i64 {at}')}")
    self._value(g.store, values, {g.total: total} if g.select is None else {x: total for x in g.sums})
    self.close("ec")
    self.close("er")
    if blocked:
      self.emit("br label %epi.exit")
      self.label("epi.exit")
    self.close("jr")
    self.close("u")
    if blocked:
      self.close("kb")
      self.close("ug")
    self.close("jc")
    params = self.params
    args = ", ".join(f"ptr noalias align 16 %p{p.arg[0]}" for p in params)
    head = [f"define void @{self.name}({args}, i64 %start, i64 %end) #0 {{", "entry:"] + ["  " + a for a in self.allocas]
    attrs = ('attributes #0 = { nounwind "no-trapping-math"="true" "prefer-vector-width"="512" "min-legal-vector-width"="512" '
             '"probe-stack"="inline-asm" }')
    return "\n".join(sorted(self.decls) + [""] + head + self.lines + ["  ret void", "}"] + self._slice_entry(len(params)) + [attrs] + self.loop_md)

  def _pack_a(self, u: str, it: str, i0: str, values: dict[UOp, str], ntile: int, ug: str, uend: str, pc: str, kcb: str) -> tuple[list[str], int]:
    """Pointers to this tile's MR rows of a, packed, and the step between its k values: a transposed a (a.T @ g: a step
    along k is a row of a), or elementwise work on loads (a relu's mask in a gradient, a convolution's padded views),
    computed once here.

    Read directly, each k step of a transposed a is a new cache line (and, for wide rows, a new page). The rows of
    up to A_GROUP tiles (as many as the thread has left in this batch, from ug to uend) are packed together whenever a
    tile starts a new group, reading a's rows contiguously; rows past the end of a are left unwritten or hold garbage
    (only their own, unstored, outputs read them). Only the K block [pc, pc + kcb) is packed. Computed elementwise work is
    printed as vector code along the loop more of its loads step by one along (`Vector`): a tile's rows (into MR-row
    tiles stored k-major) or k (rows stored row-major); the transposed a, and work `Vector` cannot print, go element by
    element into the MR-row tiles."""
    g, m, kc, L = self.g, self.g.sizes[0], k_block(self.g), self.lanes
    group = max(1, A_GROUP_BYTES // (4 * MR * kc))
    k_inner = _unit_loads(g.a, g.ks[-1]) > _unit_loads(g.a, g.i)
    vector = g.a_off is None and all(vectorizable(x) for x, _, _ in g.terms)
    # k along the lanes goes in runs of the innermost reduction loop: one shorter than a vector takes a tile's rows instead
    k_inner = k_inner and (not vector or all(ks[-1].arg[1] >= L for _, _, ks in g.terms))
    # packed k-major in MR-row tiles (element (q, dk) at q // MR * tile_len + dk * MR + q % MR), or row-major (k_inner:
    # at q * row_len + dk); vector stores run up to a vector's length past the block
    row_len, tile_len = -(-kc // L) * L + L, kc * MR + (L if vector else 0)
    floats = group * MR * row_len if vector and k_inner else group * tile_len
    self.allocas += [f"%ap = alloca [{floats} x float], align 64", "%grp.start = alloca i64", "%grp.end = alloca i64",
                     "store i64 0, ptr %grp.end"]
    cur_end = self.i64("load i64, ptr %grp.end")
    need = self.i64(f"or i1 {self.i64(f'icmp eq i64 {u}, {ug}')}, {self.i64(f'icmp sge i64 {u}, {cur_end}')}")
    self.emit(f"br i1 {need}, label %apack, label %apack.ok")
    self.label("apack")
    cnt = self.min64(self.min64(str(group), self.i64(f"sub nsw i64 {uend}, {u}")), self.i64(f"sub nsw i64 {ntile}, {it}"))
    self.emit(f"store i64 {u}, ptr %grp.start")
    self.emit(f"store i64 {self.add(u, cnt)}, ptr %grp.end")
    rows = self.min64(self.mul(cnt, MR), self.i64(f"sub nsw i64 {m}, {i0}"))
    if g.a_off is not None:
      # a transposed a: tiles with all MR rows inside a go MR rows a step (their loads and stores vectorize), the
      # last tile's rows one at a time
      full = self.i64(f"udiv i64 {rows}, {MR}")
      kk = self.loop("gk", "0", kcb)
      t = self.loop("gt", "0", full)
      src = kk if pc == "0" else self.add(kk, pc)
      for r in range(MR): self._pack_a_element(values, i0, t, g.a, g.ks, src, kk, str(r))
      self.close("gt")
      self.close("gk")
      kk = self.loop("gl", "0", kcb)
      left = self.loop("gr", "0", self.i64(f"sub nsw i64 {rows}, {self.mul(full, MR)}"))
      self._pack_a_element(values, i0, full, g.a, g.ks, kk if pc == "0" else self.add(kk, pc), kk, left)
      self.close("gr", vectorize=False)
      self.close("gl", vectorize=False)
    else:
      at = 0
      for n, (x, _, ks) in enumerate(g.terms):
        self.only_term("pa", n)
        lo, hi = self.k_range(at, _size(ks), pc, kcb)
        if vector and k_inner: self._pack_a_rows(n, x, ks, values, i0, rows, lo, hi, at, pc, row_len)
        elif vector: self._pack_a_columns(n, x, ks, values, i0, rows, lo, hi, at, pc, tile_len)
        else:
          # rows innermost where more of its loads run along them, else k (a row-major a under a relu's mask)
          outer, inner = ((f"gq{n}", "0", rows), (f"gk{n}", lo, hi)) if k_inner else ((f"gk{n}", lo, hi), (f"gq{n}", "0", rows))
          v1 = self.loop(*outer)
          v2 = self.loop(*inner)
          q, kk = (v1, v2) if k_inner else (v2, v1)
          dk = self.add(kk, at) if pc == "0" else self.sub(self.add(kk, at), pc)
          self._pack_a_element(values, i0, self.i64(f"udiv i64 {q}, {MR}"), x, ks, kk, dk, self.i64(f"urem i64 {q}, {MR}"))
          self.close(inner[0])
          self.close(outer[0])
        self.only_term("pa", n, end=True)
        if g.select is None: at += _size(ks)
    self.emit("br label %apack.ok")
    self.label("apack.ok")
    mine = self.i64(f"sub nsw i64 {u}, {self.i64('load i64, ptr %grp.start')}")
    if vector and k_inner:
      first = self.mul(mine, MR)
      return [self.i64(f"getelementptr inbounds float, ptr %ap, i64 {self.mul(self.add(first, r), row_len)}") for r in range(MR)], 1
    base = self.i64(f"getelementptr inbounds float, ptr %ap, i64 {self.mul(mine, tile_len)}")
    return [self.i64(f"getelementptr inbounds float, ptr {base}, i64 {r}") for r in range(MR)], MR

  def _pack_a_columns(self, n: int, x: UOp, ks: tuple[UOp, ...], values: dict[UOp, str], i0: str, rows: str, lo: str, hi: str,
                      at: int, pc: str, tile_len: int) -> None:
    """Term n's steps [lo, hi) of a, a tile's MR rows along the lanes: k-major MR-row tiles (as the microkernel reads them
    best), tile_len apart. A vector's lanes past MR write the next k step's places, which are written after (or the
    tile's padding past the block)."""
    g, L = self.g, self.lanes
    # tiles outermost: what depends only on the rows (a pad's gate along them, the lanes inside a) is computed once a tile
    q = self.loop(f"gq{n}", "0", rows, MR)
    inside = self.lanes_below(self.min64(self.sub(rows, q), str(MR)))
    at_tile = self.mul(self.i64(f"udiv i64 {q}, {MR}"), tile_len)
    kk = self.loop(f"gk{n}", lo, hi)
    dk = self.add(kk, at) if pc == "0" else self.sub(self.add(kk, at), pc)
    val = self.vector_value(x, g.i, self.add(i0, q), inside, {**values, **self._k_values(ks, kk)})
    dst = self.i64(f"getelementptr inbounds float, ptr %ap, i64 {self.add(at_tile, self.mul(dk, MR))}")
    self.emit(f"store <{L} x float> {val}, ptr {dst}, align 4")
    self.close(f"gk{n}", vectorize=False)
    self.close(f"gq{n}", vectorize=False)

  def _pack_a_rows(self, n: int, x: UOp, ks: tuple[UOp, ...], values: dict[UOp, str], i0: str, rows: str, lo: str, hi: str,
                   at: int, pc: str, row_len: int) -> None:
    """Term n's steps [lo, hi) of a, k along the lanes: each row contiguous, row_len apart. The innermost reduction loop
    runs along the lanes (the flattened k restarts it), so the steps go as runs of that loop's values; a vector's lanes
    past its run write the next run's places, which that run then writes (or the row's padding past the block)."""
    g, L, inner = self.g, self.lanes, ks[-1]
    size = inner.arg[1]
    q = self.loop(f"gq{n}", "0", rows)
    o = self.loop(f"go{n}", self.i64(f"udiv i64 {lo}, {size}"), self.i64(f"udiv i64 {self.add(hi, size - 1)}, {size}"))
    s = self.sub(lo, self.mul(o, size))
    s = self.i64(f"select i1 {self.i64(f'icmp sgt i64 {s}, 0')}, i64 {s}, i64 0")
    e = self.min64(self.sub(hi, self.mul(o, size)), str(size))
    v = self.loop(f"gv{n}", s, e, L)
    outer = self._k_values(ks[:-1], o) if len(ks) > 1 else {}
    val = self.vector_value(x, inner, v, self.lanes_below(self.sub(e, v)), {**values, **outer, g.i: self.add(i0, q)})
    dk = self.add(self.add(self.mul(o, size), v), at)
    if pc != "0": dk = self.sub(dk, pc)
    dst = self.i64(f"getelementptr inbounds float, ptr %ap, i64 {self.add(self.mul(q, row_len), dk)}")
    self.emit(f"store <{L} x float> {val}, ptr {dst}, align 4")
    self.close(f"gv{n}", vectorize=False)
    self.close(f"go{n}", vectorize=False)
    self.close(f"gq{n}", vectorize=False)

  def _pack_a_element(self, values: dict[UOp, str], i0: str, t: str, x: UOp, ks: tuple[UOp, ...], kk: str, dk: str, r: str) -> None:
    """Packed a[i0 + t * MR + r, step kk of the term `x` over `ks`] (tile t of the group, its row r) at step dk of the packed block."""
    g, kc = self.g, k_block(self.g)
    q = self.add(self.mul(t, MR), r)
    if g.a_off is not None:
      src = self.add(self.affine(g.a_off, values, (g.i, g.k)), self.add(self.mul(kk, g.a_off[1][g.k]), self.mul(self.add(i0, q), g.a_off[1][g.i])))
      val = self.i64(f"load float, ptr {self.i64(f'getelementptr inbounds float, ptr {self.names[g.a.src[0]]}, i64 {src}')}")
    else: val = self._value(x, {**values, **self._k_values(ks, kk), g.i: self.add(i0, q)})
    dst = self.add(self.mul(t, kc * MR), self.add(self.mul(dk, MR), r))
    self.emit(f"store float {val}, ptr {self.i64(f'getelementptr inbounds float, ptr %ap, i64 {dst}')}")

  def _pack(self, values: dict[UOp, str], jc: str, ncols: str, npan: str, pc: str, kcb: str) -> None:
    """Copy b's columns [jc, jc + ncols), rows [pc, pc + kcb) of K, into kcb x NR panels at %bp, zeros past the last column."""
    g, n, kc = self.g, self.g.sizes[1], k_block(self.g)
    nr = _panel_sizes(g)[0]
    sk, sj = (g.b_off[1][g.k], g.b_off[1][g.j]) if g.b_off is not None else (_unit_loads(g.b, g.j), _unit_loads(g.b, g.ks[-1]))
    pp = self.loop("pp", "0", npan)
    col0 = self.i64(f"add nsw i64 {jc}, {self.i64(f'mul nsw i64 {pp}, {nr}')}")
    width = self.min64(str(nr), self.i64(f"sub nsw i64 {n}, {col0}"))
    dst0 = self.i64(f"mul nsw i64 {pp}, {kc * nr}")
    # elementwise work that `Vector` prints: a k step's columns of the panel as NR / lanes vectors (contiguous loads, else
    # gathers), zeros past the last column
    if g.b_off is None and all(vectorizable(y) for _, y, _ in g.terms):
      at = 0
      for n, (_, y, ks) in enumerate(g.terms):
        self.only_term("pb", n)
        lo, hi = self.k_range(at, _size(ks), pc, kcb)
        kk = self.loop(f"pk{n}", lo, hi)
        row = self.add(kk, at) if pc == "0" else self.sub(self.add(kk, at), pc)
        for h in range(nr // self.lanes):
          inside = self.lanes_below(self.sub(width, h * self.lanes))
          val = self.vector_value(y, g.j, self.add(col0, h * self.lanes), inside, {**values, **self._k_values(ks, kk)})
          val = self.i64(f"select <{self.lanes} x i1> {inside}, <{self.lanes} x float> {val}, <{self.lanes} x float> zeroinitializer")
          dst = self.i64(f"getelementptr inbounds float, ptr %bp, i64 {self.add(dst0, self.add(self.mul(row, nr), h * self.lanes))}")
          self.emit(f"store <{self.lanes} x float> {val}, ptr {dst}, align {4 * self.lanes}")
        self.close(f"pk{n}", vectorize=False)
        self.only_term("pb", n, end=True)
        if g.select is None: at += _size(ks)
      self.close("pp")
      return
    # columns innermost for a row-major b, k for a transposed one (x @ W.T); elementwise work on loads along the axis
    # more of its loads run along (the "strides" are counts of loads: the smaller innermost)
    at = 0
    for n, (_, y, ks) in enumerate(g.terms):
      size = _size(ks)
      self.only_term("pb", n)
      lo, hi = self.k_range(at, size, pc, kcb)
      outer, inner = ((f"pk{n}", lo, hi), (f"pc{n}", "0", width)) if abs(sj) <= abs(sk) else ((f"pc{n}", "0", width), (f"pk{n}", lo, hi))
      v_out = self.loop(*outer)
      v_in = self.loop(*inner)
      kk, cc = (v_out, v_in) if outer[0].startswith("pk") else (v_in, v_out)
      col = self.i64(f"add nsw i64 {col0}, {cc}")
      if g.b_off is not None:
        src = self.add(self.affine(g.b_off, values, (g.j, g.k)), self.add(self.mul(kk, sk), self.mul(col, sj)))
        val = self.i64(f"load float, ptr {self.i64(f'getelementptr inbounds float, ptr {self.names[g.b.src[0]]}, i64 {src}')}")
      else: val = self._value(y, {**values, **self._k_values(ks, kk), g.j: col})
      row = self.add(kk, at) if pc == "0" else self.sub(self.add(kk, at), pc)
      dst = self.add(dst0, self.add(self.mul(row, nr), cc))
      self.emit(f"store float {val}, ptr {self.i64(f'getelementptr inbounds float, ptr %bp, i64 {dst}')}")
      self.close(inner[0])
      self.close(outer[0])
      self.only_term("pb", n, end=True)
      if g.select is None: at += size
    # zeros in the columns past N of the last panel, so its tile's extra columns sum finite garbage that is never stored
    pz = self.loop("pz", "0", kcb)
    pzc = self.loop("pzc", width, str(nr))
    dst = self.add(dst0, self.add(self.mul(pz, nr), pzc))
    self.emit(f"store float 0.0, ptr {self.i64(f'getelementptr inbounds float, ptr %bp, i64 {dst}')}")
    self.close("pzc", vectorize=False)
    self.close("pz", vectorize=False)
    self.close("pp")

  def _k_values(self, ks: tuple[UOp, ...], kk: str) -> dict[UOp, str]:
    """The reduction loops' values at position `kk` of their flattening."""
    out, rest = {}, kk
    for r in reversed(ks[1:]):
      out[r] = self.i64(f"urem i64 {rest}, {r.arg[1]}")
      rest = self.i64(f"udiv i64 {rest}, {r.arg[1]}")
    out[ks[0]] = rest
    return out

  def _value(self, root: UOp, loops: dict[UOp, str], given: dict[UOp, str] | None = None) -> str:
    """Print the kernel's nodes under `root` (an operand, or the STORE with the sum's value from the tile in `given`)
    with the loops at the i64 values `loops`; its value's name. Names made here are dropped after, so another part
    of the kernel (in another loop nest) prints shared nodes again rather than use a value out of its scope."""
    saved = dict(self.names)
    self.names.update(given or {})
    for r, v in loops.items():
      self.names[r] = v if r.dtype == dtypes.int64 else self.i64(f"trunc i64 {v} to {ll_type(r.dtype)}")
    for u in toposort([root], stop=lambda x: x in self.names):
      if u in self.names or u.op in (Ops.CONST, Ops.PARAM): continue
      self._render(u, False)
    out = self.val(root)
    self.names = saved
    return out


def render_gemm(name: str, gemm: Gemm, params: list[UOp]) -> str:
  """LLVM IR of the kernel `gemm` was matched in: signature `name(ptr params..., i64 start, i64 end)` over row tiles."""
  return GemmRenderer(name, gemm, params).render()


__all__ = ["GemmRenderer", "render_gemm"]
