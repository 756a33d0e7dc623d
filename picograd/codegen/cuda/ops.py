"""CUDA C for values: register and memory types, constants, casts, loads and stores, and ALU ops rendered from an `{Ops: fn}` table."""
from __future__ import annotations
import math, struct
from typing import Any, Callable
from picograd.dtype import DType, dtypes, half_bits
from picograd.ir.ops import UOp, Ops

REG_TYPES = {dtypes.bool: "bool", dtypes.uint8: "unsigned char", dtypes.int8: "signed char", dtypes.int16: "short",
             dtypes.uint16: "unsigned short", dtypes.int32: "int", dtypes.uint32: "unsigned int", dtypes.int64: "long long",
             dtypes.uint64: "unsigned long long", dtypes.float16: "__half", dtypes.bfloat16: "float", dtypes.float32: "float",
             dtypes.float64: "double"}
MEM_TYPES = {**REG_TYPES, dtypes.bfloat16: "__nv_bfloat16"}
# one access of four lanes: 16 bytes of 32-bit types, 8 of 16-bit floats (their lanes reinterpreted, their stores packed)
VEC4_TYPES = {dtypes.float32: "float4", dtypes.int32: "int4", dtypes.uint32: "uint4", dtypes.bfloat16: "uint2", dtypes.float16: "uint2"}


def vector_type(dt: DType, lanes: int) -> str:
  """The C type of one access of `lanes` values of `dt` (four lanes: VEC4_TYPES; 16 bytes otherwise: eight 16-bit lanes)."""
  return VEC4_TYPES[dt] if lanes == 4 else "uint4"


def c_const(value: Any, dt: DType) -> str:
  if dt == dtypes.bool: return "true" if value else "false"
  if dt.is_int:
    v = int(value)
    if dt == dtypes.int64: return "(-9223372036854775807LL-1)" if v == -2**63 else f"{v}LL"
    if dt == dtypes.int32: return "(-2147483647-1)" if v == -2**31 else str(v)
    if dt == dtypes.uint64: return f"{v}ull"
    return f"{v}u" if dt == dtypes.uint32 else f"(({REG_TYPES[dt]})({v}))"
  if dt == dtypes.float16: return f"__ushort_as_half((unsigned short){half_bits(value)})"
  if dt == dtypes.float64:
    if math.isfinite(value): return float(value).hex()
    return f"__longlong_as_double({struct.unpack('<q', struct.pack('<d', value))[0]}LL)"
  if math.isfinite(value): return float(value).hex() + "f"
  return f"__int_as_float({struct.unpack('<i', struct.pack('<f', value))[0]})"


def render_cast(dst: DType, src: DType, x: str) -> str:
  if dst == src: return x
  if dst == dtypes.bool: return f"({x} != {c_const(0, src)})" if src != dtypes.float16 else f"(__half2float({x}) != 0.0f)"
  if src == dtypes.float16: x, src = f"__half2float({x})", dtypes.float32
  # double -> float -> half would round twice; __double2half rounds once
  if dst == dtypes.float16 and src == dtypes.float64: return f"__double2half({x})"
  if dst == dtypes.float16: return f"__float2half_rn({x if src in (dtypes.float32, dtypes.bfloat16) else f'(float){x}'})"
  if dst == dtypes.bfloat16: return f"pg_round_bf16({x if src == dtypes.float32 else f'(float){x}'})"
  if src.is_float and dst.is_int:
    # int8/16, uint8/16/32 wrap from a saturated int64, as PyTorch's casts do (-1.0 -> 255 for uint8)
    wide = dtypes.int64 if dst.itemsize < 4 or dst == dtypes.uint32 else dst
    sat = f"pg_float_to_int<{REG_TYPES[wide]}>({x}, {c_const(dtypes.min(wide), wide)}, {c_const(dtypes.max(wide), wide)})"
    return sat if wide == dst else f"(({REG_TYPES[dst]}){sat})"
  return f"(({REG_TYPES[dst]}){x})"


# ------------------------------------------------------------------------------------------------
# the ALU table: op -> fn(result dtype, operand expressions, first operand's dtype, wrap) -> C expression

AluFn = Callable[[DType, list[str], DType, bool], str]

# float/double forms of the ops with no native __half form, given the suffix ("f" for float, "" for double)
_FLOAT_MATH: dict[Ops, Callable[[str, list[str]], str]] = {
  Ops.EXP2: lambda f, x: f"exp2{f}({x[0]})", Ops.LOG2: lambda f, x: f"log2{f}({x[0]})", Ops.SIN: lambda f, x: f"sin{f}({x[0]})",
  Ops.SQRT: lambda f, x: f"sqrt{f}({x[0]})", Ops.RECIPROCAL: lambda f, x: f"(1.0{f} / {x[0]})", Ops.MOD: lambda f, x: f"fmod{f}({x[0]}, {x[1]})",
}


def _float_math(op: Ops) -> AluFn:
  """A math-library op; float16 operands are computed in float and rounded back."""
  def fn(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
    if dt == dtypes.float16: return f"__float2half_rn({_FLOAT_MATH[op]('f', [f'__half2float({a})' for a in x])})"
    return _FLOAT_MATH[op]("f" if dt != dtypes.float64 else "", x)
  return fn


def _infix(sym: str) -> AluFn: return lambda dt, x, src_dt, wrap: f"({x[0]} {sym} {x[1]})"


_UNSIGNED = {dtypes.int32: "unsigned int", dtypes.int64: "unsigned long long"}


def _wrapping(sym: str, plain: AluFn) -> AluFn:
  """With `wrap`, signed ADD/MUL go through unsigned arithmetic: in C their overflow is undefined, and the compiler
  may then fold e.g. -max(INT_MIN, -x) into garbage; LLVM's plain add/mul wrap."""
  def fn(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
    if wrap and dt in _UNSIGNED: return f"(({REG_TYPES[dt]})(({_UNSIGNED[dt]}){x[0]} {sym} ({_UNSIGNED[dt]}){x[1]}))"
    return plain(dt, x, src_dt, wrap)
  return fn


def _mul(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
  # C promotes short types to int: a uint16 product can overflow int
  if dt == dtypes.uint16: return f"((unsigned short)((unsigned int){x[0]} * (unsigned int){x[1]}))"
  return f"({x[0]} * {x[1]})"


def _neg(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
  if wrap and dt in _UNSIGNED: return f"(({REG_TYPES[dt]})(0u - ({_UNSIGNED[dt]}){x[0]}))"
  return f"(-{x[0]})"


def _shl(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
  # a negative value shifted left is undefined in C: shift the unsigned bits
  if dt.kind == "i": return f"(({REG_TYPES[dt]})(({'unsigned long long' if dt.itemsize == 8 else 'unsigned int'}){x[0]} << {x[1]}))"
  return f"({x[0]} << {x[1]})"


def _mod(dt: DType, x: list[str], src_dt: DType, wrap: bool) -> str:
  return _float_math(Ops.MOD)(dt, x, src_dt, wrap) if dt.is_float else f"({x[0]} % {x[1]})"


ALU: dict[Ops, AluFn] = {
  Ops.ADD: _wrapping("+", _infix("+")), Ops.MUL: _wrapping("*", _mul), Ops.NEG: _neg, Ops.SHL: _shl, Ops.MOD: _mod,
  Ops.IDIV: _infix("/"), Ops.AND: _infix("&"), Ops.OR: _infix("|"), Ops.XOR: _infix("^"), Ops.SHR: _infix(">>"),
  Ops.CMPLT: _infix("<"), Ops.CMPNE: _infix("!="),
  Ops.CAST: lambda dt, x, src_dt, wrap: render_cast(dt, src_dt, x[0]),
  Ops.BITCAST: lambda dt, x, src_dt, wrap: f"pg_bitcast<{REG_TYPES[dt]}>({x[0]})",
  Ops.WHERE: lambda dt, x, src_dt, wrap: f"({x[0]} ? {x[1]} : {x[2]})",
  Ops.MAX: lambda dt, x, src_dt, wrap: f"pg_max({x[0]}, {x[1]})",
  Ops.CHECK: lambda dt, x, src_dt, wrap: f"pg_check({x[0]}, {x[1]}, {x[2]}, pg_err)",
  **{op: _float_math(op) for op in (Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIPROCAL)},
}


# an ALU node's arg asking for the hardware's approximate float32 form (fast_math.py marks them in the attention plans)
APPROX = "approx"
_APPROX_F32: dict[Ops, Callable[[list[str]], str]] = {
  Ops.EXP2: lambda x: f"pg_ex2_approx({x[0]})", Ops.RECIPROCAL: lambda x: f"pg_rcp_approx({x[0]})", Ops.MAX: lambda x: f"fmaxf({x[0]}, {x[1]})",
}


def render_alu(op: Ops, dt: DType, x: list[str], src_dt: DType, wrap: bool = False, approx: bool = False) -> str:
  """C for one ALU op; `dt` is the result dtype, `src_dt` the first operand's; `wrap`: integer ADD/MUL/NEG must wrap;
  `approx`: a float32 op in its approximate form (one MUFU or FMNMX instruction)."""
  if approx and dt == dtypes.float32 and op in _APPROX_F32: return _APPROX_F32[op](x)
  if op not in ALU: raise NotImplementedError(f"no CUDA C for {op}")
  return ALU[op](dt, x, src_dt, wrap)


# ------------------------------------------------------------------------------------------------
# memory and accumulators

def render_load(param: UOp, idx: str) -> str:
  p = f"p{param.arg[0]}"
  return f"__bfloat162float({p}[{idx}])" if param.dtype == dtypes.bfloat16 else f"{p}[{idx}]"


def render_store(param: UOp, idx: str, value: str) -> str:
  p = f"p{param.arg[0]}"
  return f"{p}[{idx}] = __float2bfloat16_rn({value});" if param.dtype == dtypes.bfloat16 else f"{p}[{idx}] = {value};"


def acc_update(op: Ops, dt: DType, acc: str, v: str) -> str:
  """The statement folding `v` into accumulator `acc` (ADD wraps for integers, OR for bool)."""
  if op is Ops.MAX: return f"{acc} = pg_max({acc}, {v});"
  if dt == dtypes.bool: return f"{acc} = {acc} || {v};"
  return f"{acc} = {render_alu(Ops.ADD, dt, [acc, v], dt, wrap=True)};"


REDUCE_FUNCTORS = {Ops.ADD: "PgAdd()", Ops.MAX: "PgMax()"}  # the prelude's combine functors, for pg_warp/block_reduce
