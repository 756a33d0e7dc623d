"""Elementwise UOps printed as LLVM vector code, one loop along the lanes (codegen layer): the CPU's flash renderers
print a score's mask and dropout's gate with the keys along the lanes (cpu_flash.py, cpu_flash_bwd.py), and the GEMM packs
computed operands (a convolution's padded, shifted views; a relu's mask) rows or columns along them (cpu_gemm.py)."""
from __future__ import annotations
from typing import Any
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, BINARY as BINARY_OPS, toposort
from picograd.codegen.llvm import BINARY, COMPARE, MEM_TYPES, ll_type, ll_const
from picograd.codegen.gemm_match import _affine

VECTOR_OPS = BINARY_OPS | {Ops.CONST, Ops.RANGE, Ops.PARAM, Ops.LOAD, Ops.WHERE, Ops.NEG, Ops.RECIPROCAL, Ops.SQRT, Ops.CAST, Ops.BITCAST}


def vectorizable(u: UOp, stand_ins: tuple[UOp, ...] = ()) -> bool:
  """Can `Vector` print `u` (float32/float64 and integer types, loads of plain buffers)? `stand_ins` are leaves the caller
  gives values for (a score's product sum)."""
  for n in toposort([u]):
    if n in stand_ins: continue
    if n.op not in VECTOR_OPS or n.dtype in (dtypes.float16, dtypes.bfloat16): return False
    if n.op is Ops.LOAD and (len(n.src) != 2 or n.src[0].op is not Ops.PARAM): return False
    if n.op is Ops.CAST:
      src = n.src[0].dtype
      if src in (dtypes.float16, dtypes.bfloat16) or (src.is_float and n.dtype.is_int and (n.dtype.itemsize < 4 or n.dtype == dtypes.uint32)):
        return False
  return True


def _gated_index(index: UOp) -> tuple[UOp, UOp, int] | None:
  """(gate, index, c) of a load's index where(gate, index, c) with c a constant (lowering's form of a pad's load), else None."""
  if index.op is Ops.WHERE and index.src[2].op is Ops.CONST: return index.src[0], index.src[1], int(index.src[2].arg)
  return None


class Vector:
  """Prints elementwise UOps as LLVM IR where some values are vectors (one loop's values along the lanes: the keys of a
  score tile, the rows or columns of a GEMM operand being packed) and others scalars (broadcast where they meet a
  vector). Loads whose index steps by one along the lanes' loop are vector loads, also under a pad's gate
  (load(where(g, idx, c)): a load masked by g, lanes where g fails read element c as the scalar code does); others are
  gathers. `mask` (lanes past the loop's end) guards both, and its lanes read 0 (not poison, which a branch on the lanes,
  such as a gate's skip, must never see).

  `out` is the renderer printing the function: its `lanes`, `names` (the loops' and parameters' values), `decls` and
  `i64` (emit an instruction, return its name)."""

  def __init__(self, out: Any, lanes_loop: UOp, mask: str | None):
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
    dt, t = u.dtype, self.ty(u.dtype, vec)
    if u.op is Ops.WHERE and vec and not vals[u.src[0]][1]:
      # a scalar condition picks a whole vector: no vector of i1 to build (LLVM legalizes those through 16-bit lanes)
      a = [vals[s][0] if vals[s][1] else self.splat(vals[s][0], s.dtype) for s in u.src[1:]]
      return o.i64(f"select i1 {vals[u.src[0]][0]}, {t} {a[0]}, {t} {a[1]}"), vec
    if u.op in (Ops.AND, Ops.OR) and dt == dtypes.bool and vec and not all(vals[s][1] for s in u.src):
      # likewise a scalar bool and a vector of them: the scalar picks the vector or a constant
      (s_val, _), (v_val, _) = sorted((vals[s] for s in u.src), key=lambda x: x[1])
      on, off = (v_val, "zeroinitializer") if u.op is Ops.AND else ("splat (i1 true)", v_val)
      return o.i64(f"select i1 {s_val}, {t} {on}, {t} {off}"), vec
    a = [vals[s][0] if not vec or vals[s][1] else self.splat(vals[s][0], s.dtype) for s in u.src]
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
      gated = _gated_index(u.src[1])
      off = _affine(u.src[1] if gated is None else gated[1])
      if off is not None and off[1].get(self.loop) == 1:  # consecutive along the lanes: one (masked) vector load
        first = o.i64(f"extractelement <{self.n} x {it}> {vals[u.src[1] if gated is None else gated[1]][0]}, i64 0")
        ptr = o.i64(f"getelementptr {mem}, ptr {buf}, {it} {first}" if gated is not None else f"{gep} {mem}, ptr {buf}, {it} {first}")
        if gated is not None:  # lanes where the gate fails read nothing here (their index may leave the buffer)
          g, gvec = vals[gated[0]]
          if gvec: mask = g if self.mask is None else o.i64(f"and <{self.n} x i1> {g}, {self.mask}")
          else: mask = o.i64(f"select i1 {g}, <{self.n} x i1> {mask}, <{self.n} x i1> zeroinitializer")
        if self.mask is None and gated is None: raw = o.i64(f"load {vm}, ptr {ptr}, align {size}")
        else:
          name = f"llvm.masked.load.v{self.n}{self.sfx(u.dtype, False) if u.dtype.is_float else mem}.p0"
          o.decls.add(f"declare {vm} @{name}(ptr, i32, <{self.n} x i1>, {vm})")
          raw = o.i64(f"call {vm} @{name}(ptr {ptr}, i32 {size}, <{self.n} x i1> {mask}, {vm} zeroinitializer)")
        if gated is not None:  # and take element c, as the scalar code reads it
          at = o.i64(f"getelementptr inbounds {mem}, ptr {buf}, {it} {gated[2]}")
          other = self.splat(o.i64(f"load {mem}, ptr {at}"), u.dtype if u.dtype != dtypes.bool else dtypes.int8)
          raw = o.i64(f"select {self.ty(dtypes.bool, gvec)} {g}, {vm} {raw}, {vm} {other}")
      else:
        ptrs = o.i64(f"{gep} {mem}, ptr {buf}, <{self.n} x {it}> {idx}")
        name = f"llvm.masked.gather.v{self.n}{self.sfx(u.dtype, False) if u.dtype.is_float else mem}.v{self.n}p0"
        o.decls.add(f"declare {vm} @{name}(<{self.n} x ptr>, i32, <{self.n} x i1>, {vm})")
        raw = o.i64(f"call {vm} @{name}(<{self.n} x ptr> {ptrs}, i32 {size}, <{self.n} x i1> {mask}, {vm} zeroinitializer)")
    if u.dtype == dtypes.bool: return o.i64(f"trunc {self.mty(u.dtype, vec)} {raw} to {self.ty(dtypes.bool, vec)}"), vec
    return raw, vec


__all__ = ["Vector", "vectorizable", "VECTOR_OPS"]
