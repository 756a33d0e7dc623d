"""The LLVM IR renderer: a linearized kernel becomes one LLVM function for the CPU.

Signature: `void name(ptr noalias %p0, ..., i64 %start, i64 %end)`; the outermost global loop
runs from %start to %end so the runtime can split it across threads (its thread pool calls the
entry `name.slice(ptr args, i64 start, i64 end)`, which reads the pointers from an array). Accumulators are allocas
(LLVM's mem2reg turns them into registers); reductions carry `reassoc` so the loop vectorizer
may reorder them, except in upcast tiles that SLP vectorizes instead (see _ordered_accumulators).
A reduction's multiply-accumulate carries `contract`, so it becomes one FMA. Functions ask for
512-bit vectors: LLVM's default for AVX-512 CPUs is 256, which halves the matmul's throughput.
bfloat16 values live in float registers and are converted at loads/stores.
A kernel with CHECKs takes one more pointer, its int64 error word, after the buffers: failed checks OR their
bits into a local flag (a reduction the vectorizer handles), stored once per call with an atomic OR.
Per-op rendering is a table, not an if-chain.
"""
from __future__ import annotations
import math, platform, struct
from typing import Callable
from picograd.dtype import DType, dtypes, half_bits
from picograd.ir.ops import UOp, Ops
from picograd.codegen.opt import index_stride

LL_TYPES = {dtypes.bool: "i1", dtypes.uint8: "i8", dtypes.int8: "i8", dtypes.int16: "i16", dtypes.uint16: "i16", dtypes.int32: "i32",
            dtypes.uint32: "i32", dtypes.int64: "i64", dtypes.uint64: "i64",
            dtypes.float16: "half", dtypes.bfloat16: "float", dtypes.float32: "float", dtypes.float64: "double"}
MEM_TYPES = {**LL_TYPES, dtypes.bool: "i8", dtypes.bfloat16: "i16"}


def ll_type(dt: DType) -> str: return LL_TYPES[dt]


def ll_const(value, dt: DType) -> str:
  if dt == dtypes.bool: return "1" if value else "0"
  if dt.is_int: return str(int(value))
  if dt == dtypes.float16: return "0xH" + f"{half_bits(value):04X}"
  # LLVM spells float constants as the double with the same value, so round to float first
  if dt in (dtypes.float32, dtypes.bfloat16) and math.isfinite(value): value = struct.unpack("f", struct.pack("f", value))[0]
  return "0x" + struct.pack(">d", value).hex().upper()


def _fop(f: str, i: str, u: str | None = None) -> Callable[[DType], str]:
  return lambda dt: f if dt.is_float else (u if u is not None and (dt.is_unsigned or dt == dtypes.bool) else i)


BINARY: dict[Ops, Callable[[DType], str]] = {
  Ops.ADD: _fop("fadd", "add"), Ops.MUL: _fop("fmul", "mul"), Ops.IDIV: _fop("fdiv", "sdiv", "udiv"), Ops.MOD: _fop("frem", "srem", "urem"),
  Ops.AND: _fop("and", "and"), Ops.OR: _fop("or", "or"), Ops.XOR: _fop("xor", "xor"), Ops.SHL: _fop("shl", "shl"),
  Ops.SHR: _fop("lshr", "ashr", "lshr"),
}
COMPARE: dict[Ops, Callable[[DType], str]] = {
  Ops.CMPLT: _fop("fcmp olt", "icmp slt", "icmp ult"), Ops.CMPNE: _fop("fcmp une", "icmp ne", "icmp ne"),
}
INTRINSIC = {Ops.EXP2: "exp2", Ops.LOG2: "log2", Ops.SIN: "sin", Ops.SQRT: "sqrt"}


def _suffix(dt: DType) -> str: return {"half": "f16", "float": "f32", "double": "f64"}.get(ll_type(dt), ll_type(dt))


def _cast(dst: DType, src: DType, x: str, out: str) -> list[str]:
  s, d = ll_type(src), ll_type(dst)
  if dst == dtypes.bool:
    return [f"{out} = fcmp une {s} {x}, 0.0" if src.is_float else f"{out} = icmp ne {s} {x}, 0"]
  if dst == dtypes.bfloat16:  # via float32, then round
    if src == dtypes.float32: return _round_to_bfloat16([], x, out)
    return _round_to_bfloat16(_cast(dtypes.float32, src, x, out + ".f32"), out + ".f32", out)
  if s == d: return [f"{out} = bitcast {s} {x} to {d}"]  # same register type (int32 <-> uint32, bfloat16 -> float32)
  if src == dtypes.float64 and dst == dtypes.float16: return _double_to_half(x, out)
  if src.is_float and dst.is_float:
    return [f"{out} = {'fpext' if _fbits(src) < _fbits(dst) else 'fptrunc'} {s} {x} to {d}"]
  if src.is_float and _wraps_from_int64(dst):
    return [f"{out}.i64 = call i64 @{_float_to_int_intrinsic(dtypes.int64, src)}({s} {x})", f"{out} = trunc i64 {out}.i64 to {d}"]
  if src.is_float: return [f"{out} = call {d} @{_float_to_int_intrinsic(dst, src)}({s} {x})"]
  if dst.is_float: return [f"{out} = {'uitofp' if src.is_unsigned or src == dtypes.bool else 'sitofp'} {s} {x} to {d}"]
  sb, db = _ibits(src), _ibits(dst)
  if sb > db: return [f"{out} = trunc {s} {x} to {d}"]
  return [f"{out} = {'zext' if src.is_unsigned or src == dtypes.bool else 'sext'} {s} {x} to {d}"]


def _round_to_bfloat16(prefix: list[str], x: str, out: str) -> list[str]:
  """A float rounded (to nearest even) to the values bfloat16 can hold, still as a float register."""
  return prefix + [f"{out}.b = bitcast float {x} to i32", f"{out}.l = lshr i32 {out}.b, 16", f"{out}.o = and i32 {out}.l, 1",
                   f"{out}.r = add i32 {out}.b, 32767", f"{out}.s = add i32 {out}.r, {out}.o", f"{out}.m = and i32 {out}.s, -65536",
                   f"{out} = bitcast i32 {out}.m to float"]


def _wraps_from_int64(dst: DType) -> bool:
  """float -> int8/16, uint8/16/32 wrap from a saturated int64, as PyTorch's casts do (-1.0 -> 255 for uint8)."""
  return dst.itemsize < 4 or dst == dtypes.uint32


def _float_to_int_intrinsic(dst: DType, src: DType) -> str:
  """float -> integer saturates to the integer's range and gives 0 for NaN, on every device. A plain
  fptosi of an out-of-range value is poison, which LLVM may fold to anything (and the PYTHON and CUDA
  backends would disagree with it)."""
  return f"llvm.{'fptoui' if dst.is_unsigned else 'fptosi'}.sat.{ll_type(dst)}.{_suffix(src)}"


def _double_to_half(x: str, out: str) -> list[str]:
  """double -> half, correctly rounded, without a runtime library call.

  LLVM lowers `fptrunc double to half` to a call of __truncdfhf2, which MCJIT cannot resolve. Going
  through float instead rounds twice (a double just above a half tie can round down to the tie in
  float, then to even in half). Rounding to float *to odd* (truncate, then set the last bit when
  inexact) keeps enough information for the second rounding to be exact: float has 13 bits more
  than half. The round-to-odd float is built from the nearest float: when inexact, of it and its
  neighbour towards x, the one with the odd bit pattern.
  """
  return [f"{out}.f = fptrunc double {x} to float", f"{out}.e = fpext float {out}.f to double",
          f"{out}.exact = fcmp ueq double {out}.e, {x}",  # NaN counts as exact: it stays a NaN
          f"{out}.neg = fcmp olt double {x}, 0.0", f"{out}.lo = fcmp olt double {out}.e, {x}", f"{out}.hi = fcmp ogt double {out}.e, {x}",
          f"{out}.away = select i1 {out}.neg, i1 {out}.lo, i1 {out}.hi",  # rounded away from zero
          f"{out}.b = bitcast float {out}.f to i32", f"{out}.step = select i1 {out}.away, i32 -1, i32 1",
          f"{out}.nb = add i32 {out}.b, {out}.step", f"{out}.bit = trunc i32 {out}.b to i1", f"{out}.keep = or i1 {out}.exact, {out}.bit",
          f"{out}.ob = select i1 {out}.keep, i32 {out}.b, i32 {out}.nb", f"{out}.o = bitcast i32 {out}.ob to float",
          f"{out} = fptrunc float {out}.o to half"]


def _fbits(dt: DType) -> int: return {"half": 16, "float": 32, "double": 64}[ll_type(dt)]
def _ibits(dt: DType) -> int: return 1 if dt == dtypes.bool else 8 * dt.itemsize


def _ordered_accumulators(program: list[UOp]) -> set[UOp]:
  """Accumulators whose additions must stay in order (no `reassoc`), so the loop vectorizer leaves their loop alone.

  `reassoc` lets the loop vectorizer split a reduction into vector lanes along its loop. That
  is right for one accumulator, and for an upcast tile whose loads run along the loop (a @ b.T).
  It is wrong for a tile of several accumulators whose loads stride across the loop (the b of
  a @ b): lanes along k would need gathers, while SLP vectorizes across the tile's columns.
  """
  ranges = [u for u in program if u.op is Ops.RANGE]
  accs = [u for u in program if u.op is Ops.DEFINE_ACC]
  ordered: set[UOp] = set()
  for a in accs:
    if a in ordered or not a.src or sum(b.src == a.src for b in accs) < 2: continue
    loop = a.src[-1]
    start = program.index(loop)
    body = program[start:program.index(UOp(Ops.ENDRANGE, dtypes.void, (loop,)), start)]
    loads = [u for u in body if u.op is Ops.LOAD and u.src[0].op is Ops.PARAM]
    if any(index_stride(ld.src[1], loop, ranges) not in (0, 1) for ld in loads): ordered |= {b for b in accs if b.src == a.src}
  return ordered


def _row_loops(program: list[UOp]) -> set[UOp]:
  """Global loops the loop vectorizer must leave alone: those of a kernel whose reductions only sum (or max) loaded values
  that lie contiguously along the reduction but not along the global loop (row sums, row maxima).

  LLVM unrolls a short reduction loop (rows of 16 floats) completely, and then vectorizes the row loop around it with a
  gather per element: 1M x 16 row sums took 8-11 ms (PyTorch ~1.9; now 1.4-1.6). Kept scalar, the row loop's unrolled
  body is what SLP packs into one vector load and one horizontal sum per row. Long rows keep their reduction loop, which
  stays the loop vectorizer's (innermost loops only), so the mark changes nothing there.
  """
  ranges = [u for u in program if u.op is Ops.RANGE]
  accs = [u for u in program if u.op is Ops.ACCUMULATE]
  marked: set[UOp] = set()
  for u in accs:
    ld = u.src[1].src[0] if u.src[1].op is Ops.CAST else u.src[1]
    # a plain load: not a stored term read back (codegen/stored_terms.py: a LOAD ordered after its STORE)
    if u.arg not in (Ops.ADD, Ops.MAX) or ld.op is not Ops.LOAD or len(ld.src) != 2 or ld.src[0].op is not Ops.PARAM or not u.src[0].src:
      return set()
    if index_stride(ld.src[1], u.src[0].src[-1], ranges) != 1: return set()
    marked |= {g for g in ranges if g.arg[2] == "global" and index_stride(ld.src[1], g, ranges) not in (0, 1)}
  return marked


def _streaming(store: UOp) -> bool: return isinstance(store.arg, tuple) and store.arg[0] == "nontemporal"


class LLVMRenderer:
  """Renders `program` (from linearize) as LLVM IR text."""

  def __init__(self, name: str, program: list[UOp]):
    self.name, self.program = name, program
    self.names: dict[UOp, str] = {}
    self.lines: list[str] = []
    self.allocas: list[str] = []
    self.decls: set[str] = set()
    self.counter = 0
    self.block = "entry"
    self.loops: dict[UOp, tuple[str, str, str, str]] = {}  # range -> (header, body, exit, predecessor)
    self.loop_md: list[str] = []  # !llvm.loop metadata nodes (loops LLVM's vectorizer or unroller must leave alone)

  def tmp(self) -> str:
    self.counter += 1
    return f"%t{self.counter}"

  def emit(self, line: str) -> None: self.lines.append("  " + line)

  def label(self, name: str) -> None:
    self.lines.append(f"{name}:")
    self.block = name

  def val(self, u: UOp) -> str:
    if u.op is Ops.CONST: return ll_const(u.arg, u.dtype)
    return self.names[u]

  def render(self) -> str:
    params = [u for u in self.program if u.op is Ops.PARAM]
    self.ordered = _ordered_accumulators(self.program)
    self.scalar_loops = _row_loops(self.program)
    self.accumulated = {u.src[1] for u in self.program if u.op is Ops.ACCUMULATE}  # multiplies an FMA may absorb
    first_global = next((u for u in self.program if u.op is Ops.RANGE and u.arg[2] == "global"), None)
    self.checked = any(u.op is Ops.CHECK for u in self.program)
    if self.checked: self.allocas += ["%errflag = alloca i64", "store i64 0, ptr %errflag"]
    for u in self.program:
      if u.op is Ops.PARAM: self.names[u] = f"%p{u.arg[0]}"
      elif u.op is Ops.CONST: continue
      else: self._render(u, u is first_global)
    args = ", ".join([f"ptr noalias align 16 %p{p.arg[0]}" for p in params] + (["ptr noalias %err"] if self.checked else []))
    head = [f"define void @{self.name}({args}, i64 %start, i64 %end) #0 {{", "entry:"] + ["  " + a for a in self.allocas]
    body = self.lines
    if self.checked: body = body + ["  %errflag.end = load i64, ptr %errflag", "  %errflag.old = atomicrmw or ptr %err, i64 %errflag.end monotonic"]
    # streaming stores are weakly ordered: fence them before returning, so whoever reads the output next (another thread) sees it
    if any(u.op is Ops.STORE and _streaming(u) for u in self.program):
      if platform.machine() in ("x86_64", "AMD64"):
        self.decls.add("declare void @llvm.x86.sse.sfence()")
        body = body + ["  call void @llvm.x86.sse.sfence()"]
      else: body = body + ["  fence seq_cst"]
    attrs = 'attributes #0 = { nounwind "no-trapping-math"="true" "prefer-vector-width"="512" "min-legal-vector-width"="512" }'
    return "\n".join(sorted(self.decls) + [""] + head + body + ["  ret void", "}"] + self._slice_entry(len(params) + self.checked) + [attrs]
                     + self.loop_md)

  def _slice_entry(self, n: int) -> list[str]:
    """`name.slice(ptr args, i64 start, i64 end)`: the kernel called with its pointers read from an array, the one
    signature the native thread pool (runtime/cpu_pool.py) calls whatever the kernel's arity. The call is not
    inlined, so the kernel's code is compiled once."""
    loads = [f"  %a{i}.p = getelementptr ptr, ptr %args, i64 {i}\n  %a{i} = load ptr, ptr %a{i}.p" for i in range(n)]
    args = ", ".join([f"ptr %a{i}" for i in range(n)] + ["i64 %start", "i64 %end"])
    return ["", f"define void @{self.name}.slice(ptr %args, i64 %start, i64 %end) {{"] + loads + \
           [f"  call void @{self.name}({args}) #1", "  ret void", "}", "attributes #1 = { noinline }"]

  def _render(self, u: UOp, split_loop: bool) -> None:
    out = self.names[u] = self.tmp() if u.dtype != dtypes.void else ""
    if u.op is Ops.RANGE: return self._open_loop(u, out, split_loop)
    self._RENDER.get(u.op, LLVMRenderer._binary)(self, u, out)

  def _define_acc(self, u: UOp, out: str) -> None:
    self.allocas.append(f"{out} = alloca {ll_type(u.dtype)}")
    self.emit(f"store {ll_type(u.dtype)} {ll_const(u.arg[0], u.dtype)}, ptr {out}")

  def _accumulate(self, u: UOp, out: str) -> None:
    acc, value = u.src[:2]
    t, cur, new = ll_type(acc.dtype), self.tmp(), self.tmp()
    self.emit(f"{cur} = load {t}, ptr {self.val(acc)}")
    if u.arg is Ops.RESCALED:  # online softmax: acc * scale + term
      scaled = self.tmp()
      self.emit(f"{scaled} = fmul contract {t} {cur}, {self.val(u.src[2])}")
      self.emit(f"{new} = fadd contract {t} {scaled}, {self.val(value)}")
      self.emit(f"store {t} {new}, ptr {self.val(acc)}")
      return
    line = self._binop(u.arg, acc.dtype, new, cur, self.val(value), reassoc=acc not in self.ordered, contract=True)
    self.emit(line.replace("reassoc", "reassoc nsz", 1) if self._signless(acc) else line)
    self.emit(f"store {t} {new}, ptr {self.val(acc)}")

  def _signless(self, acc: UOp) -> bool:
    """A float sum of a row kernel (`_row_loops`) adds with `nsz`: SLP packs a short unrolled row into one vector load and
    one horizontal sum only when the +0.0 the accumulator starts from may be dropped. Its value is read back plus +0.0
    (`_load_any`), so a zero sum is +0.0 as before (-0.0 + 0.0 is +0.0) and the result differs only by the reassociation
    `reassoc` already allows."""
    return bool(self.scalar_loops) and acc.dtype.is_float and acc.arg[1] is Ops.ADD and acc not in self.ordered

  def _load_any(self, u: UOp, out: str) -> None:
    if u.src[0].op is not Ops.DEFINE_ACC: return self._load(u, out)
    t, acc = ll_type(u.dtype), u.src[0]
    if not self._signless(acc): return self.emit(f"{out} = load {t}, ptr {self.val(acc)}")
    raw = self.tmp()
    self.emit(f"{raw} = load {t}, ptr {self.val(acc)}")
    self.emit(f"{out} = fadd {t} {raw}, {ll_const(0.0, u.dtype)}")

  def _check(self, u: UOp, out: str = "") -> None:
    value, bad, bit = u.src
    self.names[u] = self.val(value)
    sel, old, new = self.tmp(), self.tmp(), self.tmp()
    self.emit(f"{sel} = select i1 {self.val(bad)}, i64 {bit.arg}, i64 0")
    self.emit(f"{old} = load i64, ptr %errflag")
    self.emit(f"{new} = or i64 {old}, {sel}")
    self.emit(f"store i64 {new}, ptr %errflag")

  def _open_loop(self, r: UOp, out: str, split: bool) -> None:
    n = r.arg[0]
    header, body, exit_ = f"loop{n}", f"body{n}", f"exit{n}"
    start, end = ("0", str(r.arg[1]))
    if split:  # the thread's share of the outer loop: i64 arguments, narrowed in the entry block
      start, end = ("%start", "%end") if r.dtype == dtypes.int64 else ("%start.i", "%end.i")
      if r.dtype != dtypes.int64: self.allocas += ["%start.i = trunc i64 %start to i32", "%end.i = trunc i64 %end to i32"]
    pred = self.block
    self.emit(f"br label %{header}")
    self.label(header)
    nxt = f"{out}.next"
    self.emit(f"{out} = phi {ll_type(r.dtype)} [{start}, %{pred}], [{nxt}, %latch{n}]")
    cond = self.tmp()
    self.emit(f"{cond} = icmp slt {ll_type(r.dtype)} {out}, {end}")
    self.emit(f"br i1 {cond}, label %{body}, label %{exit_}")
    self.label(body)
    self.loops[r] = (header, body, exit_, pred)

  def _endrange(self, u: UOp, out: str) -> None: self._close_loop(u.src[0])

  def _close_loop(self, r: UOp) -> None:
    n = r.arg[0]
    out = self.names[r]
    header, _, exit_, _ = self.loops[r]
    self.emit(f"br label %latch{n}")
    self.label(f"latch{n}")
    self.emit(f"{out}.next = add nuw nsw {ll_type(r.dtype)} {out}, 1")
    if r in self.scalar_loops:
      md = len(self.loop_md)
      self.emit(f"br label %{header}, !llvm.loop !{md}")
      self.loop_md.append(f'!{md} = distinct !{{!{md}, !{{!"llvm.loop.vectorize.enable", i1 false}}}}')
    else: self.emit(f"br label %{header}")
    self.label(exit_)

  def _gep(self, u: UOp) -> str:
    buf, idx = u.src[0], u.src[1]
    ptr = self.tmp()
    self.emit(f"{ptr} = getelementptr inbounds {MEM_TYPES[buf.dtype]}, ptr {self.val(buf)}, {ll_type(idx.dtype)} {self.val(idx)}")
    return ptr

  def _load(self, u: UOp, out: str) -> None:
    ptr = self._gep(u)
    mem = MEM_TYPES[u.dtype]
    if u.dtype == dtypes.bool:
      raw = self.tmp()
      self.emit(f"{raw} = load i8, ptr {ptr}")
      return self.emit(f"{out} = trunc i8 {raw} to i1")
    if u.dtype == dtypes.bfloat16:
      raw, wide, bits = self.tmp(), self.tmp(), self.tmp()
      self.emit(f"{raw} = load i16, ptr {ptr}")
      self.emit(f"{wide} = zext i16 {raw} to i32")
      self.emit(f"{bits} = shl i32 {wide}, 16")
      return self.emit(f"{out} = bitcast i32 {bits} to float")
    self.emit(f"{out} = load {mem}, ptr {ptr}")

  def _store(self, u: UOp) -> None:
    ptr = self._gep(u)
    value, dt = self.val(u.src[2]), u.src[0].dtype
    if dt == dtypes.bool:
      wide = self.tmp()
      self.emit(f"{wide} = zext i1 {value} to i8")
      return self.emit(f"store i8 {wide}, ptr {ptr}")
    if dt == dtypes.bfloat16:
      bits, lsb, bias, rounded, hi, short = (self.tmp() for _ in range(6))
      # round to nearest even: add 0x7fff plus the lowest kept bit, then keep the top half
      self.emit(f"{bits} = bitcast float {value} to i32")
      self.emit(f"{lsb} = lshr i32 {bits}, 16")
      self.emit(f"{bias} = and i32 {lsb}, 1")
      self.emit(f"{rounded} = add i32 {bits}, 32767")
      self.emit(f"{hi} = add i32 {rounded}, {bias}")
      self.emit(f"{short} = lshr i32 {hi}, 16")
      trunc = self.tmp()
      self.emit(f"{trunc} = trunc i32 {short} to i16")
      return self.emit(f"store i16 {trunc}, ptr {ptr}")
    if _streaming(u):  # codegen/streaming.py: ("nontemporal", alignment in bytes)
      return self.emit(f"store {MEM_TYPES[dt]} {value}, ptr {ptr}, align {u.arg[1]}, !nontemporal !{{i32 1}}")
    self.emit(f"store {MEM_TYPES[dt]} {value}, ptr {ptr}")

  def _binop(self, op: Ops, dt: DType, out: str, a: str, b: str, reassoc: bool = False, contract: bool = False) -> str:
    """`contract` lets LLVM fuse a multiply into the add that accumulates it (one FMA, one rounding). Only a
    reduction's multiply-accumulate gets it: elementwise code contracted in one kernel and not in another
    would give recomputed values that differ in the last bit (and a max's gradient would miss its argmax)."""
    t = ll_type(dt)
    if op is Ops.MAX:
      if dt.is_float:  # llvm.maximum propagates NaN, like torch.maximum
        self.decls.add(f"declare {t} @llvm.maximum.{_suffix(dt)}({t}, {t})")
        return f"{out} = call {'reassoc nsz ' if reassoc else ''}{t} @llvm.maximum.{_suffix(dt)}({t} {a}, {t} {b})"
      name = "umax" if dt.is_unsigned or dt == dtypes.bool else "smax"
      self.decls.add(f"declare {t} @llvm.{name}.{t}({t}, {t})")
      return f"{out} = call {t} @llvm.{name}.{t}({t} {a}, {t} {b})"
    flags = ("reassoc contract " if reassoc else "contract ") if contract and dt.is_float and op in (Ops.ADD, Ops.MUL) else ""
    return f"{out} = {BINARY[op](dt)} {flags}{t} {a}, {b}"

  # ---- ALU ops, one method each (the table below); anything else is a binary op of BINARY
  def _cast_op(self, u: UOp, out: str) -> None:
    src_dt = u.src[0].dtype
    if src_dt.is_float and u.dtype.is_int:
      self.decls.add(f"declare {ll_type(u.dtype)} @{_float_to_int_intrinsic(u.dtype, src_dt)}({ll_type(src_dt)})")
    for line in _cast(u.dtype, src_dt, self.val(u.src[0]), out): self.emit(line)

  def _bitcast(self, u: UOp, out: str) -> None: self.emit(f"{out} = bitcast {ll_type(u.src[0].dtype)} {self.val(u.src[0])} to {ll_type(u.dtype)}")
  def _where(self, u: UOp, out: str) -> None:
    c, a, b = (self.val(s) for s in u.src)
    self.emit(f"{out} = select i1 {c}, {ll_type(u.dtype)} {a}, {ll_type(u.dtype)} {b}")
  def _compare(self, u: UOp, out: str) -> None:
    dt = u.src[0].dtype
    self.emit(f"{out} = {COMPARE[u.op](dt)} {ll_type(dt)} {self.val(u.src[0])}, {self.val(u.src[1])}")
  def _neg(self, u: UOp, out: str) -> None:
    x = self.val(u.src[0])
    self.emit(f"{out} = fneg {ll_type(u.dtype)} {x}" if u.dtype.is_float else f"{out} = sub {ll_type(u.dtype)} 0, {x}")
  def _reciprocal(self, u: UOp, out: str) -> None: self.emit(f"{out} = fdiv {ll_type(u.dtype)} {ll_const(1.0, u.dtype)}, {self.val(u.src[0])}")
  def _intrinsic(self, u: UOp, out: str) -> None:
    t, name = ll_type(u.dtype), f"llvm.{INTRINSIC[u.op]}.{_suffix(u.dtype)}"
    self.decls.add(f"declare {t} @{name}({t})")
    self.emit(f"{out} = call {t} @{name}({t} {self.val(u.src[0])})")
  def _binary(self, u: UOp, out: str) -> None:
    self.emit(self._binop(u.op, u.dtype, out, self.val(u.src[0]), self.val(u.src[1]), contract=u in self.accumulated))

  # op -> how one instruction is rendered (RANGE opens a loop in `_render`); ops not listed are binary ALU ops
  _RENDER: dict[Ops, Callable[["LLVMRenderer", UOp, str], None]] = {
    Ops.ENDRANGE: _endrange, Ops.DEFINE_ACC: _define_acc, Ops.ACCUMULATE: _accumulate, Ops.LOAD: _load_any,
    Ops.STORE: lambda self, u, out: self._store(u), Ops.CHECK: _check, Ops.CAST: _cast_op, Ops.BITCAST: _bitcast, Ops.WHERE: _where,
    Ops.NEG: _neg, Ops.RECIPROCAL: _reciprocal, **dict.fromkeys(COMPARE, _compare), **dict.fromkeys(INTRINSIC, _intrinsic)}


def render_llvm(name: str, program: list[UOp]) -> str:
  return LLVMRenderer(name, program).render()
