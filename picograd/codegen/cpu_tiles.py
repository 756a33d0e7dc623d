"""What the CPU's flash renderers share (codegen layer): `TileRenderer`, the base of cpu_flash.py's forward and
cpu_flash_bwd.py's recomputed-score sums (panels packed once per batch, the function text), and `_Vector`, which prints
elementwise UOps as LLVM IR with the keys along the vector lanes (a score's mask, dropout's gate)."""
from __future__ import annotations
from typing import Any, Callable
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, toposort
from picograd.codegen.llvm import LLVMRenderer, BINARY, COMPARE, MEM_TYPES, ll_type, ll_const
from picograd.codegen.gemm_match import vector_lanes, _affine
from picograd.codegen.cpu_gemm import GemmRenderer


class _Vector:
  """Prints elementwise UOps as LLVM IR where some values are vectors (the keys along the lanes) and others scalars
  (broadcast where they meet a vector). Loads whose index steps by one along the lanes' loop are vector loads, others
  gathers; `mask` (lanes past the last key) guards both, and their lanes read 0 (not poison, which a branch on the lanes,
  such as a gate's skip, must never see)."""

  def __init__(self, out: "TileRenderer", lanes_loop: UOp, mask: str | None):
    self.out, self.loop, self.mask = out, lanes_loop, mask
    self.n = out.lanes

  def ty(self, dt: DType, vec: bool) -> str: return f"<{self.n} x {ll_type(dt)}>" if vec else ll_type(dt)
  def mty(self, dt: DType, vec: bool) -> str: return f"<{self.n} x {MEM_TYPES[dt]}>" if vec else MEM_TYPES[dt]
  def sfx(self, dt: DType, vec: bool) -> str:
    base = {"float": "f32", "double": "f64"}.get(ll_type(dt), ll_type(dt))
    return f"v{self.n}{base}" if vec else base

  def splat(self, name: str, dt: DType) -> str:
    if not name.startswith("%"): return f"splat ({ll_type(dt)} {name})"
    one = self.out.i64(f"insertelement {self.ty(dt, True)} poison, {ll_type(dt)} {name}, i64 0")
    return self.out.i64(f"shufflevector {self.ty(dt, True)} {one}, {self.ty(dt, True)} poison, <{self.n} x i32> zeroinitializer")

  def zero(self, dt: DType, vec: bool) -> str:
    return "zeroinitializer" if vec else ll_const(0, dt)

  def run(self, root: UOp, given: dict[UOp, tuple[str, bool]]) -> tuple[str, bool]:
    vals = dict(given)
    for u in toposort([root], stop=lambda x: x in vals):
      if u not in vals: vals[u] = self.node(u, vals)
    return vals[root]

  def node(self, u: UOp, vals: dict[UOp, tuple[str, bool]]) -> tuple[str, bool]:
    o = self.out
    if u.op is Ops.CONST: return ll_const(u.arg, u.dtype), False
    if u.op is Ops.PARAM: return o.names[u], False
    if u.op is Ops.LOAD: return self.load(u, vals)
    vec = any(vals[s][1] for s in u.src)
    a = [vals[s][0] if not vec or vals[s][1] else self.splat(vals[s][0], s.dtype) for s in u.src]
    dt, t = u.dtype, self.ty(u.dtype, vec)
    if u.op is Ops.MAX:
      name = ("maximum" if dt.is_float else "umax" if dt.is_unsigned or dt == dtypes.bool else "smax") + "." + self.sfx(dt, vec)
      o.decls.add(f"declare {t} @llvm.{name}({t}, {t})")
      return o.i64(f"call {t} @llvm.{name}({t} {a[0]}, {t} {a[1]})"), vec
    if u.op in BINARY: return o.i64(f"{BINARY[u.op](dt)} {t} {a[0]}, {a[1]}"), vec
    if u.op in COMPARE:
      sd = u.src[0].dtype
      return o.i64(f"{COMPARE[u.op](sd)} {self.ty(sd, vec)} {a[0]}, {a[1]}"), vec
    if u.op is Ops.WHERE: return o.i64(f"select {self.ty(dtypes.bool, vec)} {a[0]}, {t} {a[1]}, {t} {a[2]}"), vec
    if u.op is Ops.NEG: return o.i64(f"fneg {t} {a[0]}" if dt.is_float else f"sub {t} {self.zero(dt, vec)}, {a[0]}"), vec
    if u.op is Ops.RECIPROCAL:
      one = f"splat ({ll_type(dt)} {ll_const(1.0, dt)})" if vec else ll_const(1.0, dt)
      return o.i64(f"fdiv {t} {one}, {a[0]}"), vec
    if u.op is Ops.SQRT:
      o.decls.add(f"declare {t} @llvm.sqrt.{self.sfx(dt, vec)}({t})")
      return o.i64(f"call {t} @llvm.sqrt.{self.sfx(dt, vec)}({t} {a[0]})"), vec
    if u.op is Ops.BITCAST: return o.i64(f"bitcast {self.ty(u.src[0].dtype, vec)} {a[0]} to {t}"), vec
    assert u.op is Ops.CAST, u.op
    return self.cast(dt, u.src[0].dtype, a[0], vec), vec

  def cast(self, dst: DType, src: DType, x: str, vec: bool) -> str:
    o, s, d = self.out, self.ty(src, vec), self.ty(dst, vec)
    if dst == dtypes.bool: return o.i64(f"{'fcmp une' if src.is_float else 'icmp ne'} {s} {x}, {self.zero(src, vec)}")
    if ll_type(src) == ll_type(dst): return x
    if src.is_float and dst.is_float: return o.i64(f"{'fpext' if src.itemsize < dst.itemsize else 'fptrunc'} {s} {x} to {d}")
    if src.is_float:  # saturating, as codegen/llvm.py converts
      name = f"llvm.{'fptoui' if dst.is_unsigned else 'fptosi'}.sat.{self.sfx(dst, vec)}.{self.sfx(src, vec)}"
      o.decls.add(f"declare {d} @{name}({s})")
      return o.i64(f"call {d} @{name}({s} {x})")
    unsigned = src.is_unsigned or src == dtypes.bool
    if dst.is_float: return o.i64(f"{'uitofp' if unsigned else 'sitofp'} {s} {x} to {d}")
    bits = (1 if src == dtypes.bool else 8 * src.itemsize, 8 * dst.itemsize)
    return o.i64(f"{'trunc' if bits[0] > bits[1] else 'zext' if unsigned else 'sext'} {s} {x} to {d}")

  def load(self, u: UOp, vals: dict[UOp, tuple[str, bool]]) -> tuple[str, bool]:
    o, (idx, vec) = self.out, vals[u.src[1]]
    buf, it, mem = o.names[u.src[0]], ll_type(u.src[1].dtype), MEM_TYPES[u.dtype]
    size = u.dtype.itemsize
    if not vec:
      raw = o.i64(f"load {mem}, ptr {o.i64(f'getelementptr inbounds {mem}, ptr {buf}, {it} {idx}')}")
    else:
      vm, mask = self.mty(u.dtype, True), self.mask or "splat (i1 true)"
      # masked-off lanes may point past the buffer: no `inbounds` (its poison would reach the call)
      gep = "getelementptr" if self.mask else "getelementptr inbounds"
      off = _affine(u.src[1])
      if off is not None and off[1].get(self.loop) == 1:  # consecutive along the lanes: one (masked) vector load
        first = o.i64(f"extractelement <{self.n} x {it}> {idx}, i64 0")
        ptr = o.i64(f"{gep} {mem}, ptr {buf}, {it} {first}")
        if self.mask is None: raw = o.i64(f"load {vm}, ptr {ptr}, align {size}")
        else:
          name = f"llvm.masked.load.v{self.n}{self.sfx(u.dtype, False) if u.dtype.is_float else mem}.p0"
          o.decls.add(f"declare {vm} @{name}(ptr, i32, <{self.n} x i1>, {vm})")
          raw = o.i64(f"call {vm} @{name}(ptr {ptr}, i32 {size}, <{self.n} x i1> {mask}, {vm} zeroinitializer)")
      else:
        ptrs = o.i64(f"{gep} {mem}, ptr {buf}, <{self.n} x {it}> {idx}")
        name = f"llvm.masked.gather.v{self.n}{self.sfx(u.dtype, False) if u.dtype.is_float else mem}.v{self.n}p0"
        o.decls.add(f"declare {vm} @{name}(<{self.n} x ptr>, i32, <{self.n} x i1>, {vm})")
        raw = o.i64(f"call {vm} @{name}(<{self.n} x ptr> {ptrs}, i32 {size}, <{self.n} x i1> {mask}, {vm} zeroinitializer)")
    if u.dtype == dtypes.bool: return o.i64(f"trunc {self.mty(u.dtype, vec)} {raw} to {self.ty(dtypes.bool, vec)}"), vec
    return raw, vec


class TileRenderer(GemmRenderer):
  """What the flash renderers share (this module's forward, cpu_flash_bwd's recomputed-score sums): one LLVM function with
  the generic renderer's signature and slice entry, the GEMM renderer's loop and value helpers, packed panels on the stack
  or the heap, packed again only when a tile's batch changes."""

  def __init__(self, name: str, f: Any, params: list[UOp]):  # f: a Flash or a cpu_flash_bwd.Recomputed (`.mr` rows a tile)
    LLVMRenderer.__init__(self, name, [])
    self.f, self.params, self.lanes, self.mr = f, params, vector_lanes(), f.mr
    self.ordered, self.accumulated, self.checked = set(), set(), False
    self.steps: dict[str, int] = {}
    self.freed: list[str] = []  # panels on the heap

  def ptr(self, buf: str, index: str | int) -> str: return self.i64(f"getelementptr inbounds float, ptr {buf}, i64 {index}")

  def splat_f(self, name: str) -> str:
    vt = f"<{self.lanes} x float>"
    one = self.i64(f"insertelement {vt} poison, float {name}, i64 0")
    return self.i64(f"shufflevector {vt} {one}, {vt} poison, <{self.lanes} x i32> zeroinitializer")

  def narrow(self, value: str, r: UOp) -> str:
    return value if r.dtype == dtypes.int64 else self.i64(f"trunc i64 {value} to {ll_type(r.dtype)}")

  def panel(self, name: str, floats: int, heap: bool) -> None:
    """A buffer of `floats` for packed operands: an alloca, or aligned_alloc'ed (freed at the end) when they are too big."""
    if not heap: return self.allocas.append(f"{name} = alloca [{floats} x float], align 64")
    self.decls |= {"declare ptr @aligned_alloc(i64, i64)", "declare void @free(ptr)"}
    self.allocas.append(f"{name} = call ptr @aligned_alloc(i64 64, i64 {4 * floats})")
    self.freed.append(name)

  def pack_once(self, batch: str, pack: Callable[[], None]) -> None:
    """Pack (`pack`) where this tile's batch is not the one packed last (a thread's tiles run in order: once per batch)."""
    prev = self.i64("load i64, ptr %packed")
    self.emit(f"br i1 {self.i64(f'icmp ne i64 {prev}, {batch}')}, label %repack, label %packed.ok")
    self.label("repack")
    pack()
    self.emit(f"store i64 {batch}, ptr %packed")
    self.emit("br label %packed.ok")
    self.label("packed.ok")

  def block_lanes(self, first: str, loop: UOp) -> tuple[list[str], list[str | None]]:
    """`loop`'s values in the two vectors of a block of it starting at `first` (an i64), and which lanes are inside the loop
    (None when every block is whole)."""
    L, lt = self.lanes, ll_type(loop.dtype)
    lane_ids = "<" + ", ".join(f"{lt} {n}" for n in range(L)) + ">"
    vecs: list[str] = []
    valid: list[str | None] = []
    for h in range(2):
      start = self.narrow(self.add(first, h * L), loop)
      one = self.i64(f"insertelement <{L} x {lt}> poison, {lt} {start}, i64 0")
      base = self.i64(f"shufflevector <{L} x {lt}> {one}, <{L} x {lt}> poison, <{L} x i32> zeroinitializer")
      vecs.append(self.i64(f"add <{L} x {lt}> {base}, {lane_ids}"))
      valid.append(self.i64(f"icmp slt <{L} x {lt}> {vecs[h]}, splat ({lt} {loop.arg[1]})") if loop.arg[1] % (2 * L) else None)
    return vecs, valid

  def function(self) -> str:
    """The whole LLVM module text once `lines` hold the body."""
    args = ", ".join(f"ptr noalias align 16 %p{p.arg[0]}" for p in self.params)
    head = [f"define void @{self.name}({args}, i64 %start, i64 %end) #0 {{", "entry:"] + ["  " + a for a in self.allocas]
    attrs = ('attributes #0 = { nounwind "no-trapping-math"="true" "prefer-vector-width"="512" "min-legal-vector-width"="512" '
             '"probe-stack"="inline-asm" }')
    tail = self._slice_entry(len(self.params)) + [attrs] + self.loop_md
    frees = [f"  call void @free(ptr {name})" for name in self.freed]
    return "\n".join(sorted(self.decls) + [""] + head + self.lines + frees + ["  ret void", "}"] + tail)


__all__ = ["TileRenderer"]
