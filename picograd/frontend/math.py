"""Elementwise math and activations beyond the core (inverse trig, hyperbolics, elu/selu/mish/..., lerp, fmod, isclose, ...) (frontend layer).

Everything is composed from the Tensor's primitives, so gradients come from the chain rule.
Two habits keep those gradients right at the edges:
- a branch of a `where` that is not taken still has its derivative multiplied by a zero
  gradient, and 0 * inf is NaN; so each branch sees an input clamped into its own domain
  (`_guard`), as erf does in elementwise.py;
- where PyTorch defines a gradient at a kink (hardtanh's bounds, copysign at 0), the branch
  that holds the kink is written so the chain rule gives PyTorch's value.
"""
from __future__ import annotations
import math
from typing import Any
from picograd.dtype import DType, dtypes
from picograd.ir.ops import Ops

_LN2, _LN10 = math.log(2), math.log(10)


def _series_terms(dt: DType, ratio: float) -> int:
  """How many terms of a series whose n-th term shrinks like ratio**n reach the precision of `dt`."""
  eps = 1e-17 if dt == dtypes.float64 else 1e-8
  return max(1, math.ceil(math.log(eps) / math.log(ratio)))


class MathMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  # ---------------------------------------------------------------- helpers
  def _select(self: Any, cond: Any, other: Any) -> Any:
    """self where cond holds, else other (a Tensor or a Python scalar)."""
    return self.where(cond, other)

  def _guard(self: Any, cond: Any, safe: float) -> Any:
    """self where cond holds, else `safe`: the input of a branch that is only taken where cond holds."""
    return self.where(cond, safe)

  def _wide(self: Any) -> Any:
    """self as a float, and float16/bfloat16 as float32: composites with thresholds and series compute there, then cast back."""
    return self.cast(dtypes.float32) if self.dtype in (dtypes.float16, dtypes.bfloat16) else self._float()

  def _nan_gradient_where(self: Any, cond: Any) -> Any:
    """Zero, with a NaN derivative where `cond` holds (only where self is +-inf): PyTorch's gradient of inf - inf.

    sqrt(1/x) is +-0 at x = +-inf, and its derivative (-1/x^2) / (2 sqrt(1/x)) is 0/0 there.
    """
    return self._guard(cond, 1.0).reciprocal().sqrt()._select(cond, 0.0)

  def _pair(self: Any, other: Any, op: str, floating: bool = True) -> tuple[Any, Any]:
    """self and other broadcast to one shape and promoted to one dtype (a float one when `floating`)."""
    a, b = self._broadcasted(other, op)
    if floating and not a.dtype.is_float: a, b = a._float(), b._float()
    return a, b

  # ---------------------------------------------------------------- classification
  def isfinite(self: Any) -> Any:
    if not self.dtype.is_float: return self.ones_like(dtype=dtypes.bool)
    return (self == self) & self.isinf().logical_not()
  def isposinf(self: Any) -> Any: return self == float("inf") if self.dtype.is_float else self.zeros_like(dtype=dtypes.bool)
  def isneginf(self: Any) -> Any: return self == float("-inf") if self.dtype.is_float else self.zeros_like(dtype=dtypes.bool)

  def signbit(self: Any) -> Any:
    """True where the sign bit is set, also for -0.0 and negative NaNs (read from the bits)."""
    if not self.dtype.is_float: return self < 0 if self.dtype.kind == "i" else self.zeros_like(dtype=dtypes.bool)
    x = self.cast(dtypes.float32) if self.dtype == dtypes.bfloat16 else self  # bfloat16 lives in float registers
    ints = {2: dtypes.int16, 4: dtypes.int32, 8: dtypes.int64}[x.dtype.itemsize]
    return x.detach().bitcast(ints) < 0

  def isclose(self: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
    """|self - other| <= atol + rtol * |other|, elementwise; equal values (infinities too) are close, NaNs only with `equal_nan`."""
    if rtol < 0 or atol < 0: raise RuntimeError(f"isclose: rtol and atol must be non-negative, got rtol={rtol}, atol={atol}")
    a, b = self._broadcasted(other, "isclose")
    close = a == b
    if not a.dtype.is_float and a.dtype != dtypes.bool:
      if rtol == 0 and atol == 0: return close
      a, b = a.cast(dtypes.float64), b.cast(dtypes.float64)
    elif a.dtype == dtypes.bool: return close
    if equal_nan: close = close | (a.isnan() & b.isnan())
    err = (a - b).abs()
    return close | (err.isfinite() & (err <= atol + rtol * b.abs()))

  def allclose(self: Any, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    return bool(self.isclose(other, rtol, atol, equal_nan).logical_not().sum().item() == 0)

  # ---------------------------------------------------------------- arithmetic
  def lerp(self: Any, end: Any, weight: Any) -> Any:
    """self + weight * (end - self); for weight >= 0.5 counted back from `end`, as PyTorch does, so weight 1 gives end exactly."""
    a, b = self._pair(end, "lerp")
    diff = b - a
    if isinstance(weight, (int, float)): return a + weight * diff if abs(weight) < 0.5 else b - diff * (1 - weight)
    return (a + weight * diff)._select(weight.abs() < 0.5, b - diff * (1 - weight))

  def fmod(self: Any, other: Any) -> Any:
    """The C remainder: self - trunc(self / other) * other, with the sign of the dividend (exact, like C's fmod).

    The MOD primitive is C's `%` for integers and fmod for floats; its gradient rule is in ir/gradient.py.
    """
    a, b = self._broadcasted(other, "fmod")
    if a.dtype == dtypes.bool: raise RuntimeError("fmod: not implemented for bool tensors")
    return a._new(a.uop.alu(Ops.MOD, b.uop))

  def copysign(self: Any, other: Any) -> Any:
    """|self| with the sign of `other` (also of -0.0 and NaN). The gradient is 0 where self is 0, NaN where it is NaN, as in PyTorch."""
    a, b = self._pair(other, "copysign")
    sb = b.signbit()
    flip = a.signbit() != sb
    # the derivative is PyTorch's ratio result / self: +-1, masked to 0 at self == 0, NaN at NaN (and inf / inf at infinities)
    ratio = a.full_like(1.0)._select(flip.logical_not(), -1.0)._select(a == a, float("nan")).detach()
    zero = a.full_like(0.0)._select(sb.logical_not(), -0.0)
    return (a * ratio + a._nan_gradient_where(a.isinf()))._select(a != 0, zero)

  def logaddexp(self: Any, other: Any) -> Any:
    """log(e^self + e^other) without overflow: max + log1p(e^-|self - other|)."""
    return self._logaddexp(other, "logaddexp", base2=False)

  def logaddexp2(self: Any, other: Any) -> Any:
    """log2(2^self + 2^other) without overflow."""
    return self._logaddexp(other, "logaddexp2", base2=True)

  def _logaddexp(self: Any, other: Any, op: str, base2: bool) -> Any:
    a, b = self._pair(other, op)
    bigger = a > b
    m = a._select(bigger, b)
    # -|a - b|, as a where so the larger side gets the one-sided derivative; equal infinities give
    # a difference of 0 (not NaN) so that logaddexp(inf, inf) = inf, with PyTorch's NaN gradients
    same_inf = (a == b) & a.isinf()
    d = (b - a)._select(bigger, a - b)._select(same_inf.logical_not(), 0.0)
    t = d.exp2().log1p() * (1 / _LN2) if base2 else d.exp().log1p()
    return m + t + a._nan_gradient_where(same_inf) + b._nan_gradient_where(same_inf)

  # ---------------------------------------------------------------- logarithms and exponentials
  def log10(self: Any) -> Any: return self.log2() * (_LN2 / _LN10)

  def log1p(self: Any) -> Any:
    """log(1 + x), accurate for small x: log(u) * x / (u - 1) with u = 1 + x corrects the rounding of u."""
    x = self._wide()
    u = x + 1
    exact = (u != 1) & (u != float("inf")) & (u > 0)  # u <= 0 gives log's -inf or NaN below
    safe_u = u._guard(exact, 2.0)
    # the correction only fixes the rounding of u, so it is detached: the derivative stays d log(u) = 1/u
    log_u = safe_u.log()
    corrected = log_u + (log_u * (x._guard(exact, 1.0) / (safe_u - 1) - 1)).detach()
    return (corrected._select(exact, x._select(u == 1, u.log()))).cast(self._float().dtype)

  def expm1(self: Any) -> Any:
    """e^x - 1, accurate for small x: (u - 1) * x / log(u) with u = e^x; e^x - 1 directly once |x| >= 0.5."""
    x = self._wide()
    small = x.abs() < 0.5
    xs = x._guard(small, 0.25)
    u = xs.exp()
    # the correction only fixes the rounding of u, so it is detached: the derivative stays du = u dx
    near = (u - 1) + ((u - 1) * (xs / u._guard(u != 1, 2.0).log() - 1)).detach()
    near = near._select(u != 1, xs)
    return (near._select(small, x.exp() - 1)).cast(self._float().dtype)

  # ---------------------------------------------------------------- inverse trigonometry
  def _atan_unit(self: Any) -> Any:
    """atan for |x| <= 1: halve the angle once (t = x / (1 + sqrt(1 + x^2)), |t| <= tan(pi/8)), then the Taylor series."""
    t = self / ((self * self + 1).sqrt() + 1)
    t2 = t * t
    n = _series_terms(self.dtype, 0.1716)
    acc = None
    for k in reversed(range(n + 1)):
      c = (-1) ** k / (2 * k + 1)
      acc = t2.full_like(c) if acc is None else acc * t2 + c
    return 2 * t * acc

  def atan(self: Any) -> Any:
    """atan x; for |x| > 1 as sign(x) pi/2 - atan(1/x)."""
    x = self._wide()
    big = x.abs() > 1
    inv = -x._guard(big, 1.0).reciprocal()
    near = x._guard(big.logical_not(), 0.0)._atan_unit()
    return near._select(big.logical_not(), inv._atan_unit() + x.sign() * (math.pi / 2)).cast(self._float().dtype)

  def atan2(self: Any, other: Any) -> Any:
    """The angle of the point (other, self) in (-pi, pi], with C's conventions for zeros (signed) and infinities."""
    y, x = self._pair(other, "atan2")
    swap = y.abs() > x.abs()
    num, den = x._select(swap, y), y._select(swap, x)
    safe_den = den._guard(den != 0, 1.0)
    both_inf = num.isinf() & den.isinf()
    r = (num._guard(both_inf.logical_not(), 0.0) / safe_den)._select(den != 0, num * 0)
    r = r._select(both_inf.logical_not(), num.sign() * den.sign())
    base = r._atan_unit()
    half_pi = y.full_like(math.pi / 2)._select(y.signbit().logical_not(), -math.pi / 2)
    pi = y.full_like(math.pi)._select(y.signbit().logical_not(), -math.pi)
    left = x.signbit()  # x < 0, and x = -0.0 (atan2(0, -0) = pi)
    return (half_pi - base)._select(swap, base + y.full_like(0.0)._select(left.logical_not(), pi))
  arctan2 = atan2

  def asin(self: Any) -> Any:
    """asin x = atan(x / sqrt((1 - x)(1 + x))) (NaN outside [-1, 1])."""
    x = self._float()
    return (x / ((1 - x) * (1 + x)).sqrt()).atan()

  def acos(self: Any) -> Any:
    """acos x = 2 atan(sqrt((1 - x) / (1 + x))): no cancellation near x = 1."""
    x = self._float()
    return 2 * ((1 - x) / (1 + x)).sqrt().atan()
  arcsin, arccos, arctan = asin, acos, atan

  # ---------------------------------------------------------------- hyperbolic functions
  def sinh(self: Any) -> Any:
    x = self._float()
    return (x.expm1() - (-x).expm1()) * 0.5

  def cosh(self: Any) -> Any:
    x = self._float()
    return (x.exp() + (-x).exp()) * 0.5

  def asinh(self: Any) -> Any:
    """asinh x = sign(x) log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), and log(2|x|) where x^2 would overflow."""
    x = self._wide()
    neg = x < 0
    t = (-x)._select(neg, x)  # |x| as a where: the derivative at 0 is 1, not abs's 0
    big = t > 1e8
    ts = t._guard(big.logical_not(), 1.0)
    near = (ts + ts * ts / ((ts * ts + 1).sqrt() + 1)).log1p()
    out = near._select(big.logical_not(), t._guard(big, 2.0).log() + _LN2)
    return ((-out)._select(neg, out)).cast(self._float().dtype)

  def acosh(self: Any) -> Any:
    """acosh x = log1p((x - 1) + sqrt((x - 1)(x + 1))), and log(2x) where the product would overflow (NaN below 1)."""
    x = self._wide()
    big = x > 1e8
    xs = x._guard(big.logical_not(), 1.0)
    near = ((xs - 1) + ((xs - 1) * (xs + 1)).sqrt()).log1p()
    return (near._select(big.logical_not(), x._guard(big, 2.0).log() + _LN2)).cast(self._float().dtype)

  def atanh(self: Any) -> Any:
    """atanh x = log1p(2x / (1 - x)) / 2."""
    x = self._wide()
    return ((2 * x / (1 - x)).log1p() * 0.5).cast(self._float().dtype)
  arcsinh, arccosh, arctanh = asinh, acosh, atanh

  # ---------------------------------------------------------------- activations
  def elu(self: Any, alpha: float = 1.0) -> Any:
    """x for x > 0, alpha (e^x - 1) for x <= 0 (the gradient at 0 is alpha; NaN passes with gradient 1, as in PyTorch)."""
    x = self._float()
    neg = (x < 0) | (x == 0)
    return (alpha * x._guard(neg, 0.0).expm1())._select(neg, x)

  def selu(self: Any) -> Any:
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * self.elu(alpha)

  def celu(self: Any, alpha: float = 1.0) -> Any:
    if alpha == 0: raise RuntimeError("celu: alpha must not be 0")
    x = self._float()
    neg = (x < 0) | (x == 0)
    return (alpha * (x._guard(neg, 0.0) * (1 / alpha)).expm1())._select(neg, x)

  def hardtanh(self: Any, min_val: float = -1.0, max_val: float = 1.0) -> Any:
    """x clamped to [min_val, max_val]; the gradient is 0 at the bounds and NaN passes through, as in PyTorch."""
    if min_val > max_val: raise ValueError(f"hardtanh: min_val ({min_val}) must not exceed max_val ({max_val})")
    x = self._float()
    # the bounds themselves take the constant (gradient 0); spelled with < and == so that NaN, which compares false, passes
    below_max = x.full_like(max_val)._select((x > max_val) | (x == max_val), x)
    return below_max.full_like(min_val)._select((below_max < min_val) | (below_max == min_val), below_max)

  def relu6(self: Any) -> Any: return self.hardtanh(0.0, 6.0)

  def hardsigmoid(self: Any) -> Any:
    """relu6(x + 3) / 6; the gradient is 1/6 strictly inside (-3, 3), as in PyTorch."""
    x = self._float()
    # outside (-3, 3), NaN included, the gradient is 0: the value there is a constant, or NaN itself detached
    outside = x.full_like(1.0)._select(x > 0, x.full_like(0.0)._select(x < 0, x.detach()))
    return (x * (1 / 6) + 0.5)._select((x > -3) & (x < 3), outside)

  def hardswish(self: Any) -> Any:
    """x relu6(x + 3) / 6, written piecewise so the gradient at -3 and 3 is PyTorch's."""
    x = self._float()
    # PyTorch's gradient: 0 up to -3, x/3 + 1/2 strictly inside, 1 from 3 on (and for NaN); hardswish(-inf) is -inf * 0 = NaN
    low = x.full_like(0.0)._select(x != float("-inf"), float("nan"))
    inside = (x > -3) & (x < 3)
    xs = x._guard(inside, 0.0)
    return (xs * (xs + 3) * (1 / 6))._select(inside, low._select(x < 3, x))

  def mish(self: Any) -> Any:
    """x tanh(softplus x), with tanh s = expm1(2s) / (expm1(2s) + 2): exact for tiny s = softplus(very negative x)."""
    x = self._float()
    s = x.logaddexp(x.zeros_like())
    big = s > 20
    e = (2 * s._guard(big.logical_not(), 0.0)).expm1()
    return x * (e / (e + 2))._select(big.logical_not(), 1.0)

  def softsign(self: Any) -> Any:
    x = self._float()
    return x / (1 + x.abs())

  def logsigmoid(self: Any) -> Any:
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|): the exponent is never positive."""
    x = self._float()
    neg = x < 0
    return x._select(neg, 0.0) - x._select(neg, -x).exp().log1p()

  def softmin(self: Any, axis: int = -1, dim: int | None = None) -> Any: return (-self._float()).softmax(axis, dim)

  def normalize(self: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Any:
    """self / max(||self||_p along dim, eps) (PyTorch's F.normalize); a zero vector stays zero with a finite gradient."""
    x = self._float()
    if p == 2:
      sq = (x * x).sum(dim, keepdim=True)
      norm = sq._guard(sq > 0, 1.0).sqrt()._select(sq > 0, 0.0)
    elif p == float("inf"): norm = x.abs().max(dim, keepdim=True)
    elif p == 1: norm = x.abs().sum(dim, keepdim=True)
    elif p > 0:
      s = x.abs().pow(p).sum(dim, keepdim=True)
      norm = s._guard(s > 0, 1.0).pow(1 / p)._select(s > 0, 0.0)
    else: raise ValueError(f"normalize: p must be positive, got {p}")
    return x / norm._select(norm > eps, eps)

  # ---------------------------------------------------------------- shifts
  def _shift(self: Any, other: Any, left: bool, name: str, reverse: bool = False) -> Any:
    """C shifts with PyTorch's rules past the width: left gives 0; right gives 0 for unsigned types and the sign for signed ones."""
    a, b = self._broadcasted(other, name, reverse)
    if a.dtype.is_float or a.dtype == dtypes.bool:
      raise NotImplementedError(f"{name}: shifts need integer tensors, not {a.dtype.name}")  # PyTorch's type: no kernel for the dtype
    bits = 8 * a.dtype.itemsize
    inside = (b >= 0) & (b < bits) if not a.dtype.is_unsigned else b < bits
    amount = b._select(inside, 0)
    if left: return a._new(a.uop.alu(Ops.SHL, amount.uop))._select(inside, 0)
    if a.dtype.is_unsigned: return a._new(a.uop.alu(Ops.SHR, amount.uop))._select(inside, 0)
    return a._new(a.uop.alu(Ops.SHR, b._select(inside, bits - 1).uop))
  def bitwise_left_shift(self: Any, other: Any) -> Any: return self._shift(other, True, "bitwise_left_shift")
  def bitwise_right_shift(self: Any, other: Any) -> Any: return self._shift(other, False, "bitwise_right_shift")
  def __lshift__(self: Any, other: Any) -> Any: return self._shift(other, True, "lshift")
  def __rshift__(self: Any, other: Any) -> Any: return self._shift(other, False, "rshift")
  def __rlshift__(self: Any, other: Any) -> Any: return self._shift(other, True, "lshift", reverse=True)
  def __rrshift__(self: Any, other: Any) -> Any: return self._shift(other, False, "rshift", reverse=True)

  # ---------------------------------------------------------------- reinterpreting bits
  def bitcast(self: Any, dtype: Any) -> Any:
    """The same bits read as another dtype of the same size (PyTorch's `view(dtype)`); no gradient flows through it."""
    dt = dtypes.from_any(dtype)
    if dt.itemsize != self.dtype.itemsize:
      raise RuntimeError(f"bitcast: {self.dtype.name} ({self.dtype.itemsize} bytes) and {dt.name} ({dt.itemsize} bytes) differ in size")
    x = self.detach()
    if dt == x.dtype: return x
    if dtypes.bool in (dt, x.dtype): return x.cast(dt) if x.dtype == dtypes.bool else x != 0
    # bfloat16 is held as a float32 with the low half zero: its bits are the top half of that float's
    if x.dtype == dtypes.bfloat16: return (x.cast(dtypes.float32).bitcast(dtypes.uint32) >> 16).cast(dtypes.uint16).bitcast(dt)
    if dt == dtypes.bfloat16: return (x.bitcast(dtypes.uint16).cast(dtypes.uint32) << 16).bitcast(dtypes.float32).cast(dt)
    return x._new(x.uop.bitcast(dt))
