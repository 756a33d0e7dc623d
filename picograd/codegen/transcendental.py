"""exp2, log2 and sin as polynomials in plain arithmetic, so the CPU's vectorizers can turn them into SIMD code.

LLVM lowers its exp2/log2/sin intrinsics to scalar libm calls: a loop containing one cannot
use vector registers. This rewrite, applied to lowered kernels for the CPU renderer only (the
PYTHON reference keeps numpy's functions), replaces each float32 EXP2, LOG2 and SIN by
integer/bit manipulation and a short polynomial, made of UOps the renderer already knows.
float16 and bfloat16 go through float32; float64 keeps libm (these polynomials are fitted for
float32, about 1 ulp).

The special cases follow libm: exp2(-inf) = 0, exp2(x) = inf above 128, results that are
denormal are rounded once; log2(0) = -inf, log2(negative) = nan, log2(inf) = inf, denormal
inputs are exact (log2 evaluates its series in float64, to stay within 1 ulp); sin(+-inf) = nan;
nan stays nan. sin reduces its argument in float64 with a three-part pi/2, exact up to |x| = 2^29; beyond, it stays within [-1, 1] but loses accuracy.

The coefficients are least-squares fits on Chebyshev nodes reweighted toward minimax
(relative error below 4e-9 before float32 rounding), with the leading term pinned to its
exact value so exp2(0) = 1 and sin(x) = x for tiny x.
"""
from __future__ import annotations
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, graph_rewrite

F32, I32, F64, I64 = dtypes.float32, dtypes.int32, dtypes.float64, dtypes.int64

# 2^f - 1 on [-0.5, 0.5], coefficients of f^1..f^6
EXP2_POLY = (0.69314720556396225, 0.24022648462510948, 0.055503290511980850, 0.0096183732039441423, 0.0013399843838251410,
             0.00015370721270258127)
# log2((1+s)/(1-s)) / s on |s| <= 3 - 2*sqrt(2), in powers of s^2
LOG2_POLY = (2.8853900797910055, 0.9617988463646265, 0.5767144997587996, 0.43173325537326956)
# (sin r - r) / r^3 and (cos r - 1) / r^2 on |r| <= pi/4, in powers of r^2
SIN_POLY = (-0.16666654343400722, 0.00833214844328331, -0.00019513952677964)
COS_POLY = (-0.49999999686544788, 0.041666619710167038, -0.0013886665594991870, 0.000024382321151666277)
# pi/2 in three parts: the first two have 24 significant bits, so n * part is exact in float64 for n < 2^29
PIO2 = (1.5707963705062866, -4.371138828673793e-08, -1.7151244994428829e-15)
ROUND32 = 12582912.0  # 1.5 * 2^23: x + ROUND32 - ROUND32 rounds a float32 to an integer, whose bits sit in the low mantissa
ROUND64 = 6755399441055744.0  # 1.5 * 2^52, the same for float64


def _c(dt, v) -> UOp: return UOp.const(dt, v)


def _horner(x: UOp, coeffs: tuple[float, ...]) -> UOp:
  """coeffs[0] + x*coeffs[1] + x^2*coeffs[2] + ..."""
  acc = _c(x.dtype, coeffs[-1])
  for c in reversed(coeffs[:-1]): acc = acc * x + c
  return acc


def _pow2(n: UOp) -> UOp:
  """2^n as a float32 for an int32 n in [-126, 127]: the exponent field built directly."""
  return ((n + 127).alu(Ops.SHL, _c(I32, 23))).bitcast(F32)


def exp2_f32(x: UOp) -> UOp:
  # clamping keeps the exponent arithmetic in range; beyond +-160 the result is 0 or inf anyway (nan comes back at the end)
  xc = (x < -160.0).where(_c(F32, -160.0), (x < 160.0).where(x, _c(F32, 160.0)))
  t = xc + ROUND32
  n = t - ROUND32                      # round(x), exactly
  p = _horner(xc - n, (1.0,) + EXP2_POLY)  # 2^f for f in [-0.5, 0.5]
  ni = t.bitcast(I32) - _c(I32, 0x4B400000)  # the integer n from t's low bits
  # 2^n in two factors, each a normal float, so 2^-149..2^-127 (denormal) and 2^128+ (inf) round correctly once
  half = ni.alu(Ops.SHR, _c(I32, 1))
  r = p * _pow2(half) * _pow2(ni - half)
  return x.ne(x).where(x, r)


def log2_f32(x: UOp) -> UOp:
  tiny = x < 1.1754943508222875e-38  # below the smallest normal float: scale up by 2^23 so the exponent field is exact
  xs = tiny.where(x * 8388608.0, x)
  bits = xs.bitcast(I32)
  e = (bits.alu(Ops.SHR, _c(I32, 23)) & 0xFF) - tiny.where(_c(I32, 127 + 23), _c(I32, 127))
  m = ((bits & 0x7FFFFF).alu(Ops.OR, _c(I32, 0x3F800000))).bitcast(F32)  # mantissa in [1, 2)
  big = _c(F32, 1.4142135623730951) < m  # center the mantissa on 1: [sqrt(1/2), sqrt(2))
  m = big.where(m * 0.5, m)
  e = e + big.where(_c(I32, 1), _c(I32, 0))
  # the series in float64: in float32 the roundings of s, 2/ln2 and the sum add up to 3 ulp; in float64 one final rounding is left
  md = m.cast(F64)
  s = (md - 1.0).alu(Ops.IDIV, md + 1.0)  # IDIV on floats is true division
  r = (e.cast(F64) + s * _horner(s * s, LOG2_POLY)).cast(F32)
  r = (x < float("inf")).where(r, x)  # inf -> inf, nan -> nan
  r = x.ne(0.0).where(r, _c(F32, float("-inf")))
  return (x < 0.0).where(_c(F32, float("nan")), r)


def sin_f32(x: UOp) -> UOp:
  xd = x.cast(F64)
  t = xd * 0.6366197723675814 + ROUND64  # x * 2/pi, rounded to an integer n
  n = t - ROUND64
  r = ((xd - n * PIO2[0]) - n * PIO2[1]) - n * PIO2[2]  # x - n*pi/2, in [-pi/4, pi/4]
  quadrant = t.bitcast(I64) & 3
  # past 2^51 the reduction is meaningless: keep r in range so the result stays in [-1, 1] (max propagates nan)
  rf = r.cast(F32).maximum(_c(F32, -0.7853982)).alu(Ops.NEG).maximum(_c(F32, -0.7853982)).alu(Ops.NEG)
  z = rf * rf
  s = rf + rf * z * _horner(z, SIN_POLY)
  c = _horner(z, (1.0,) + COS_POLY)
  v = (quadrant & 1).ne(0).where(c, s)
  return (quadrant & 2).ne(0).where(-v, v)


_F32_VERSIONS = {Ops.EXP2: exp2_f32, Ops.LOG2: log2_f32, Ops.SIN: sin_f32}


def _approximate(u: UOp) -> UOp | None:
  if u.dtype == F32: return _F32_VERSIONS[u.op](u.src[0])
  if u.dtype in (dtypes.float16, dtypes.bfloat16): return _F32_VERSIONS[u.op](u.src[0].cast(F32)).cast(u.dtype)
  return None  # float64: libm


transcendental_rules = PatternMatcher([(UPat((Ops.EXP2, Ops.LOG2, Ops.SIN), name="u"), _approximate)])


def approximate_transcendentals(sink: UOp) -> UOp:
  """Rewrite a lowered kernel's float32/float16/bfloat16 EXP2, LOG2 and SIN into vectorizable arithmetic."""
  return graph_rewrite(sink, transcendental_rules)


__all__ = ["approximate_transcendentals", "exp2_f32", "log2_f32", "sin_f32"]
