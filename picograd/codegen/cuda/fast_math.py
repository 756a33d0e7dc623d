"""Fast math for the attention plans (codegen layer): the flash and recomputed plans' float32 work per score.

FlashAttention is compiled with --use_fast_math; per score its kernels spend one FFMA, one MUFU.EX2 and a max or an add
beside the tensor-core products. Written as lowering leaves it, the same work is three to four times as many instructions
(exp2f's subnormal handling, an IEEE division per value, the exp's gradient multiplying by ln 2 and then by log2 e, the
NaN-propagating max), and the kernels become bound by issuing them rather than by the tensor cores.

`fast_terms` rewrites a recomputed plan's term (the summand over the scores, every value of which is rounded to 16 bits
before it meets a tensor core, or summed into a softmax statistic, so last-bit changes disappear there); the flash plan
builds its exps and row maxes in these forms itself. The approximate rules, float32 only:
- EXP2 and RECIPROCAL take their approximate forms (arg `ops.APPROX`: ex2.approx.ftz, rcp.approx.ftz; results below 2^-126
  flush to 0). The flash plan's row max is fmaxf (APPROX on MAX): a NaN score can drop out of the max, and every sum that
  reads it still turns NaN through its exp;
- constant factors move out of products and combine: (x * c1) * c2 = x * (c1 c2), x * (y * c) = (x * y) * c. The exp's
  gradient, e * ln 2 multiplied by log2 e, becomes e times 1;
- (a + b) * c = a c + b c: (x - max) * log2 e is one FFMA, the max's part computed once per row;
- where(g, a, k) * c = where(g, a c, k c), so the score's scale joins log2 e.

`exact` (both plans' whole mapped kernels, epilogues included: nothing there changes a value):
- i < j + c of two integer sums becomes i - j < c when value ranges keep i - j inside its type: i - j is the same for a
  lane's values of one row in a tile, so a causal compare is one compare with a constant instead of an add and a compare;
- int32(int64(x)) of an int32 x is x;
- float32 of a 16-bit select moves inside, and float32 of a bfloat16 product with a power of two (bfloat16 has float32's
  exponents: the product is exact in both), so the float32 rules reach the constants.
"""
from __future__ import annotations
import math
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, value_range
from picograd.ir.symbolic import linear, from_linear
from picograd.codegen.cuda.ops import APPROX

F32 = dtypes.float32


def _approximate(u: UOp) -> UOp | None:
  return UOp(u.op, u.dtype, u.src, APPROX) if u.arg is None and u.dtype == F32 else None


def _constant(u: UOp) -> bool: return u.op is Ops.CONST


def _split(u: UOp) -> tuple[UOp, UOp] | None:
  """(x, c) when `u` is x * c with c a constant (either side), else None."""
  if u.op is not Ops.MUL or u.dtype != F32: return None
  a, b = u.src
  if _constant(b) and not _constant(a): return a, b
  if _constant(a) and not _constant(b): return b, a
  return None


def _times(x: UOp, c1: UOp, c2: UOp) -> UOp:
  """x * (c1 c2), the constant rounded to float32 once; x alone when it is 1 (ln 2 * log2 e)."""
  k = UOp.const(F32, float(c1.arg) * float(c2.arg))
  return x if k.arg == 1.0 else x * k


def _product(u: UOp) -> UOp | None:
  """Constants out of a float32 product, combined, and distributed over a sum."""
  if (outer := _split(u)) is None: return None
  x, c = outer
  if (inner := _split(x)) is not None: return _times(inner[0], inner[1], c)  # (y * c1) * c2 = y * (c1 c2)
  if x.op is Ops.MUL:  # (p * (y * c1)) * c2 = (p * y) * (c1 c2)
    for i in range(2):
      if (inner := _split(x.src[i])) is not None: return _times(x.src[1 - i] * inner[0], inner[1], c)
  if x.op is Ops.ADD: return x.src[0] * c + x.src[1] * c  # (a + b) * c = a c + b c: one FFMA
  return None


def _round_trip(u: UOp) -> UOp | None:
  """int32(int64(x)) of an int32 x is x (lowering indexes with int64 loops where the index space needs it)."""
  inner = u.src[0]
  return inner.src[0] if u.dtype == dtypes.int32 and inner.op is Ops.CAST and inner.dtype == dtypes.int64 and inner.src[0].dtype == dtypes.int32 \
    else None


def _compare(u: UOp) -> UOp | None:
  """i < j + c as i - j < c, for integer sums i and j (j not a constant) whose difference stays inside the type."""
  a, b = u.src
  if not a.dtype.is_int or b.op is Ops.CONST: return None
  (ta, ca), (tb, cb) = linear(a), linear(b)
  if not tb: return None
  terms = dict(ta)
  for atom, k in tb.items(): terms[atom] = terms.get(atom, 0) - k
  left = from_linear({atom: k for atom, k in terms.items() if k != 0}, 0, a.dtype)
  lo, hi = value_range(left)
  bits = 8 * a.dtype.itemsize - (0 if a.dtype.is_unsigned else 1)
  if lo < (0 if a.dtype.is_unsigned else -2 ** bits) or hi >= 2 ** bits: return None
  return left.alu(Ops.CMPLT, UOp.const(a.dtype, cb - ca))


def _into_select(u: UOp) -> UOp | None:
  """where(g, a, k) * c = where(g, a c, k c): the constant then combines with a's own (the score's scale and log2 e)."""
  if (outer := _split(u)) is None or (w := outer[0]).op is not Ops.WHERE or w.src[2].op is not Ops.CONST: return None
  return w.src[0].where(w.src[1] * outer[1], UOp.const(F32, float(w.src[2].arg) * float(outer[1].arg)))


def _is_power_of_two(c: UOp) -> bool: return c.op is Ops.CONST and math.frexp(abs(float(c.arg)))[0] == 0.5


def _widen(u: UOp) -> UOp | None:
  """float32(x) of a 16-bit select, or of a bfloat16 product with a power of two, moved inside (exact): the float32 rules
  then reach the constants (the score's where(causal, s * 0.125, -inf) in bfloat16)."""
  x = u.src[0]
  if u.dtype != F32 or not x.dtype.is_float or x.dtype.itemsize != 2: return None
  if x.op is Ops.WHERE: return x.src[0].where(*(UOp.const(F32, v.arg) if v.op is Ops.CONST else v.cast(F32) for v in x.src[1:]))
  if x.op is Ops.MUL and x.dtype == dtypes.bfloat16 and _is_power_of_two(x.src[1]): return x.src[0].cast(F32) * UOp.const(F32, float(x.src[1].arg))
  return None


def unrounded(u: UOp, h: DType) -> UOp:
  """`u`, a float32 value the plan rounds to `h` as it packs it, without a rounding to `h` that only exact steps separate
  from that one (selects against a constant, products with powers of two, float32 casts): rounding twice is rounding once."""
  if u.op is Ops.CAST and u.dtype == F32 and u.src[0].op is Ops.CAST and u.src[0].dtype == h and u.src[0].src[0].dtype == F32:
    return u.src[0].src[0]
  if u.op is Ops.WHERE and u.src[2].op is Ops.CONST: return u.src[0].where(unrounded(u.src[1], h), u.src[2])
  if (split := _split(u)) is not None and _is_power_of_two(split[1]): return unrounded(split[0], h) * split[1]
  return u


exact = PatternMatcher([
  (UPat(Ops.CAST, name="u"), _round_trip),
  (UPat(Ops.CAST, name="u"), _widen),
  (UPat(Ops.CMPLT, name="u"), _compare),
])

fast_terms = exact + PatternMatcher([
  (UPat((Ops.EXP2, Ops.RECIPROCAL), name="u"), _approximate),
  (UPat(Ops.MUL, name="u"), _product),
  (UPat(Ops.MUL, name="u"), _into_select),
])

__all__ = ["exact", "fast_terms", "unrounded"]
