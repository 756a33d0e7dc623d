"""Elementwise arithmetic, comparisons, bitwise ops and the core activations (frontend layer).

add/mul/neg/div/pow/mod, the unary math built on EXP2/LOG2/SIN/SQRT/RECIPROCAL (exp, log, cos,
tanh, sigmoid, ...), rounding, maximum/minimum/clip, comparisons (bool results), bitwise ops and
erf/gelu/silu/softplus. Broadcasting and promotion go through the Tensor's `_broadcasted`; more
elementwise math lives in frontend/math.py.
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops
from picograd.frontend._util import Scalar, _where, _check_condition, _half_meets_wide_float
if TYPE_CHECKING: from picograd.tensor import Tensor


class ElementwiseMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  def add(self: Any, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.ADD, x, "add")
  def mul(self: Any, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MUL, x, "mul")
  def neg(self: Any) -> "Tensor":
    if self.dtype == dtypes.bool: raise RuntimeError("neg: negation of a bool tensor is not supported; use logical_not()")
    return self._new(self.uop.alu(Ops.NEG))
  def sub(self: Any, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
    if _half_meets_wide_float(self, x): return self.float().sub(x, reverse).cast(self.dtype)
    a, b = self._broadcasted(x, "sub", reverse)
    if a.dtype == dtypes.bool: raise RuntimeError("sub: subtraction of bool tensors is not supported; use ^ or logical_xor")
    return a._new(a.uop.alu(Ops.ADD, b.uop.alu(Ops.NEG)))
  def div(self: Any, x: "Tensor | Scalar", reverse: bool = False, rounding_mode: str | None = None) -> "Tensor":
    if rounding_mode not in (None, "trunc", "floor"):
      raise RuntimeError(f"div: rounding_mode must be one of None, 'trunc' or 'floor', not {rounding_mode!r}")
    if _half_meets_wide_float(self, x): return self.float().div(x, reverse, rounding_mode).cast(self.dtype)
    a, b = self._broadcasted(x, "div", reverse)
    if rounding_mode == "trunc" and a.dtype.is_int: return a._new(a.uop.alu(Ops.IDIV, b.uop))
    if rounding_mode == "floor" and a.dtype.is_int: return a._floordiv_int(b)
    if not a.dtype.is_float: a, b = a.cast(dtypes.default_float), b.cast(dtypes.default_float)
    out = a._new(a.uop.alu(Ops.MUL, b.uop.alu(Ops.RECIPROCAL)))
    if rounding_mode == "trunc": return out.trunc()
    if rounding_mode == "floor": return _floordiv_float(a, b)
    return out
  def _floordiv_int(self: Any, b: "Tensor") -> "Tensor":
    q = self._new(self.uop.alu(Ops.IDIV, b.uop))
    # C division truncates; step down when the signs differ and there is a remainder
    fix = ((self < 0) != (b < 0)) & (q * b != self)
    return _where(fix, q - 1, q)
  def __floordiv__(self: Any, x): return self.div(x, rounding_mode="floor")
  def __rfloordiv__(self: Any, x): return self._to_tensor(x, "floordiv").div(self, rounding_mode="floor")
  def __mod__(self: Any, x):
    a, b = self._broadcasted(x, "mod")
    if a.dtype.is_float or a.dtype.is_int: return _remainder(a, b)
    return a - a.div(b, rounding_mode="floor") * b
  def __rmod__(self: Any, x): return self._to_tensor(x, "mod").__mod__(self)

  def pow(self: Any, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
    if (not reverse and isinstance(x, (int, float)) and not isinstance(x, bool) and float(x).is_integer() and abs(x) <= 1024
        and (self.dtype.is_float or isinstance(x, float))):
      # integer-valued exponents by square-and-multiply: exact where the result is representable (3 ** 5.0 is 243, where
      # exp2(5 log2 3) is not), a few roundings otherwise, and negative bases need no sign rules
      n, base = int(x), self._float()
      if n == 0: return base.ones_like()
      out = _pow_by_squaring(base, abs(n))
      return out.reciprocal() if n < 0 else out
    a, b = self._broadcasted(x, "pow", reverse)
    if a.dtype.is_int:
      if isinstance(x, int) and not reverse:
        if x < 0: raise RuntimeError("pow: Integers to negative integer powers are not allowed.")
        return _pow_by_squaring(a, x)
      return _pow_int(a, b)
    if a.dtype == dtypes.bool: a, b = a.cast(dtypes.int64), b.cast(dtypes.int64)  # PyTorch: bool ** bool is int64
    if not a.dtype.is_float: return _pow_int(a, b)
    return _pow_float(a, b)
  def __pow__(self: Any, x): return self.pow(x)
  def __rpow__(self: Any, x): return self.pow(x, reverse=True)

  def reciprocal(self: Any) -> "Tensor": return self._unary(Ops.RECIPROCAL)
  def sqrt(self: Any) -> "Tensor": return self._unary(Ops.SQRT)
  def rsqrt(self: Any) -> "Tensor": return self.sqrt().reciprocal()
  def exp2(self: Any) -> "Tensor": return self._unary(Ops.EXP2)
  def log2(self: Any) -> "Tensor": return self._unary(Ops.LOG2)
  def exp(self: Any) -> "Tensor": return self._float().mul(1 / math.log(2)).exp2()
  def log(self: Any) -> "Tensor": return self.log2().mul(math.log(2))
  def sin(self: Any) -> "Tensor": return self._unary(Ops.SIN)
  def cos(self: Any) -> "Tensor": return (math.pi / 2 - self._float()).sin()
  def tan(self: Any) -> "Tensor": return self.sin() / self.cos()
  def sigmoid(self: Any) -> "Tensor":
    # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) below: the exponent is never positive, so no branch overflows, and the
    # backward never meets 0 * inf (1/(1+e^-x) alone has a NaN gradient once e^-x overflows)
    x = self._float()
    e = _where(x >= 0, -x, x).exp()
    return _where(x >= 0, 1.0, e) / (1 + e)
  def tanh(self: Any) -> "Tensor": return 2.0 * (2.0 * self._float()).sigmoid() - 1.0
  def relu(self: Any) -> "Tensor": return _where(self <= 0, 0, self)  # NaN passes through, with gradient 1 (PyTorch)
  def leaky_relu(self: Any, negative_slope: float = 0.01) -> "Tensor": return _where(self > 0, self, self * negative_slope)
  def abs(self: Any) -> "Tensor":
    if self.dtype == dtypes.bool or self.dtype.is_unsigned: return self
    if self.dtype.is_int: return _where(self < 0, -self, self)  # INT_MIN stays INT_MIN, as in PyTorch
    return self * self.sign() + 0.0  # NaN stays NaN; the gradient is sign(x), 0 at 0 and at NaN (PyTorch); + 0.0: abs(-0.0) is +0.0
  def sign(self: Any) -> "Tensor": return (self > 0).cast(self.dtype) - (self < 0).cast(self.dtype)
  def square(self: Any) -> "Tensor": return self * self
  def trunc(self: Any) -> "Tensor":
    if not self.dtype.is_float: return self
    # through int64 is exact for |x| < 2**63; larger floats are already integers. A zero keeps x's sign (trunc(-0.5) is -0.0)
    small = self.abs() < 2.0**62
    # the cast sees 0 where it is not taken: a NaN or infinity cast to an integer is undefined behaviour in LLVM
    t = _where(small, self, 0.0).cast(dtypes.int64).cast(self.dtype)
    return _where(small, _where(t == 0, self * 0, t), self)
  def floor(self: Any) -> "Tensor":
    if not self.dtype.is_float: return self
    t = self.trunc()
    return _where(t > self, t - 1, t)
  def ceil(self: Any) -> "Tensor":
    if not self.dtype.is_float: return self
    t = self.trunc()
    return _where(t < self, t + 1, t)
  def round(self: Any) -> "Tensor":
    """Round half to even, like PyTorch and numpy."""
    if not self.dtype.is_float: return self
    f = self.floor()
    diff = self - f
    f_is_even = (f * 0.5).floor() * 2 == f
    out = _where(diff > 0.5, f + 1, _where(diff < 0.5, f, _where(f_is_even, f, f + 1)))
    return _where(out == 0, self * 0, out)  # round(-0.4) is -0.0
  def _float(self: Any) -> "Tensor": return self if self.dtype.is_float else self.cast(dtypes.default_float)

  def maximum(self: Any, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MAX, x, "maximum")
  def minimum(self: Any, x: "Tensor | Scalar") -> "Tensor":
    a, b = self._broadcasted(x, "minimum")
    if a.dtype == dtypes.bool: return a & b
    # ~x = -1 - x reverses the order of integers without overflowing at INT_MIN (-x does not)
    if a.dtype.is_int: return ~((~a).maximum(~b))
    return -((-a).maximum(-b))
  def clip(self: Any, min: Scalar | "Tensor | None" = None, max: Scalar | "Tensor | None" = None) -> "Tensor":  # noqa: A002 (PyTorch's names)
    """min(max(x, min), max) like torch.clamp: NaN stays NaN; the gradient passes where min <= x <= max (bounds included)."""
    if min is None and max is None: raise RuntimeError("clip: at least one of min and max must be given")
    out = self
    if min is not None: out = _where(out < min, min, out)
    if max is not None: out = _where(out > max, max, out)
    if out.dtype.is_float and self.dtype.is_float: out = _where(self.isnan(), self.detach(), out)  # NaN: no gradient (PyTorch)
    return out
  clamp = clip

  def where(self: Any, condition: "Tensor", other: "Tensor | Scalar") -> "Tensor":
    """PyTorch's `x.where(condition, y)`: x where condition holds, else y."""
    _check_condition(condition, "where")
    return _where(condition, self, other)

  # comparisons (results are bool)
  def __lt__(self: Any, x): return self._binary(Ops.CMPLT, x, "lt")
  def __gt__(self: Any, x): return self._binary(Ops.CMPLT, x, "gt", reverse=True)
  def __le__(self: Any, x):
    a, b = self._broadcasted(x, "le")
    # not (a > b) would be True for NaN: floats need the ordered form
    return (a < b) | (a == b) if a.dtype.is_float else (a > b).logical_not()
  def __ge__(self: Any, x):
    a, b = self._broadcasted(x, "ge")
    return (a > b) | (a == b) if a.dtype.is_float else (a < b).logical_not()
  def __ne__(self: Any, x): return self._binary(Ops.CMPNE, x, "ne")  # type: ignore[override]
  def __eq__(self: Any, x): return (self != x).logical_not()  # type: ignore[override]
  lt, gt, le, ge = __lt__, __gt__, __le__, __ge__
  def eq(self: Any, x): return self == x
  def ne(self: Any, x): return self != x
  def logical_not(self: Any) -> "Tensor":
    true = UOp.const(dtypes.bool, True).reshape((1,) * self.ndim).expand(self.shape)
    return self._new(self.cast(dtypes.bool).uop.alu(Ops.XOR, true))
  def isnan(self: Any) -> "Tensor": return self != self
  def isinf(self: Any) -> "Tensor": return (self == float("inf")) | (self == float("-inf"))

  def _bitwise(self: Any, op: Ops, x: "Tensor | Scalar", name: str) -> "Tensor":
    a, b = self._broadcasted(x, name)
    # PyTorch's type for an op with no kernel for the dtype
    if a.dtype.is_float: raise NotImplementedError(f"{name}: bitwise operations need integer or bool tensors, not {a.dtype.name}")
    return a._new(a.uop.alu(op, b.uop))
  def __and__(self: Any, x): return self._bitwise(Ops.AND, x, "bitwise_and")
  def __or__(self: Any, x): return self._bitwise(Ops.OR, x, "bitwise_or")
  def __xor__(self: Any, x): return self._bitwise(Ops.XOR, x, "bitwise_xor")
  __rand__, __ror__, __rxor__ = __and__, __or__, __xor__
  def __invert__(self: Any): return self.logical_not() if self.dtype == dtypes.bool else self ^ -1
  def _shr(self: Any, n: int) -> "Tensor":
    return self._new(self.uop.alu(Ops.SHR, UOp.const(self.dtype, n).reshape((1,) * self.ndim).expand(self.shape)))

  def erf(self: Any) -> "Tensor":
    """The error function, to about 1 ulp in float32 and 1e-15 in float64 (values and derivatives).

    Below |x| = 2.5, the everywhere-positive series erf x = 2/sqrt(pi) e^(-x^2) sum_n (2x^2)^n x / (2n+1)!!
    (no cancellation); above, 1 - erfc x with erfc from its continued fraction. Each branch sees
    its input clamped into its own range, so the branch not taken stays finite (a masked gradient
    times an infinite local derivative would be NaN).
    """
    x = self._float()
    compute = x if x.dtype in (dtypes.float32, dtypes.float64) else x.cast(dtypes.float32)
    n_series, n_fraction = (35, 23) if compute.dtype == dtypes.float64 else (23, 4)
    split = 2.5
    # clamps that let NaN through with its gradient (clip's NaN has none): erf's derivative at NaN is NaN
    near = _where(compute < -split, -split, _where(compute > split, split, compute))
    u, acc = 2 * near * near, None
    coeffs = [1.0]
    for n in range(1, n_series + 1): coeffs.append(coeffs[-1] / (2 * n + 1))
    for c in reversed(coeffs): acc = c if acc is None else acc * u + c
    series = (2 / math.sqrt(math.pi)) * (-(near * near)).exp() * near * acc
    # capped at 10, where erf is 1 to float64 precision: at inf the tail's derivative would be inf * 0 = NaN (PyTorch: 0)
    mag = compute.abs()
    far = _where(mag < split, split, _where(mag > 10.0, 10.0, mag))
    frac = far
    for k in range(n_fraction, 0, -1): frac = far + (k / 2) / frac
    tail = 1 - (-(far * far)).exp() / (math.sqrt(math.pi) * frac)
    return _where(compute.abs() < split, series, compute.sign() * tail).cast(x.dtype)

  def gelu(self: Any, approximate: str = "none") -> "Tensor":
    """x * Phi(x) with the exact erf form, or PyTorch's tanh approximation (`approximate="tanh"`)."""
    x = self._float()
    if approximate == "tanh": return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).tanh())
    if approximate != "none": raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return 0.5 * x * (1 + (x * (1 / math.sqrt(2))).erf())

  def silu(self: Any) -> "Tensor": return self._float() * self.sigmoid()
  def softplus(self: Any, beta: float = 1.0, threshold: float = 20.0) -> "Tensor":
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's overflow guard)."""
    x = self._float()
    linear = x * beta > threshold
    # the log branch sees 0 where it is not taken, so its exp cannot overflow into a NaN gradient
    return _where(linear, x, _where(linear, 0.0, x * beta).exp().log1p() * (1 / beta))


def _pow_float(a: Tensor, b: Tensor) -> Tensor:
  """a ** b for floats via exp2(b * log2|a|), with C's pow rules at the edges (PyTorch follows them).

  A zero base is its own branch (0, 1 or inf by the exponent's sign), so log2(0) never meets the
  gradient. A negative base (-0.0 included)
  flips the sign for odd integer exponents and gives NaN for non-integer ones unless it is -inf;
  1 ** NaN, (±1) ** ±inf and x ** 0 are 1. Differences from PyTorch that remain: d/db at a == 0 with b < 0 is 0
  (PyTorch: -inf), and d/db at a negative base is finite (PyTorch: NaN, from the log of a negative number).
  """
  is_zero = a == 0
  mag = (b * _where(is_zero, 1.0, a.abs()).log2()).exp2()
  # at a == 0 the derivative b * a ** (b - 1) is 0 for b > 1, 1 for b == 1, and ±inf for 0 < b < 1 and b < 0: a term that
  # is 0 there with that derivative (sqrt has an infinite one at 0; elsewhere it reads 1, so masked gradients stay finite)
  steep = is_zero & (b < 1) & (b != 0)
  root = _where(steep, a, 1.0).sqrt()
  slope = a * (b == 1) + _where(steep, _where(b > 0, root, -root), 0.0)
  mag = _where(is_zero, _where(b > 0, 0.0, _where(b == 0, 1.0, float("inf"))) + slope, mag)
  b_int = b == b.trunc()
  b_odd = b_int & ((b * 0.5) != (b * 0.5).trunc())
  neg = (a < 0) | (is_zero & (a.detach().reciprocal() < 0))  # 1/-0.0 is -inf: the sign of a negative zero
  out = _where(neg & b_odd, -mag, mag)
  out = _where((a < 0) & (a != float("-inf")) & b_int.logical_not(), float("nan"), out)
  # only where the exp2/log2 form gives NaN (0 * inf): elsewhere it is already 1, with the right gradient
  ones = ((b == 0) & (a.isnan() | a.isinf())) | ((a == 1) & b.isnan()) | ((a.abs() == 1) & b.isinf())
  return _where(ones, 1.0, out)


def _remainder(a: Tensor, b: Tensor) -> Tensor:
  """Python's (and PyTorch's) a % b: C's remainder (the exact fmod for floats, with its division-by-zero check for
  integers), moved by b where its sign differs from b's (-5 % inf is inf)."""
  r = a._new(a.uop.alu(Ops.MOD, b.uop))
  return _where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


def _floordiv_float(a: Tensor, b: Tensor) -> Tensor:
  """PyTorch's floor division of floats: the quotient (a - fmod(a, b)) / b is exact up to rounding, unlike floor(a / b).

  It is stepped down where fmod's sign differs from b's, rounded to the nearest integer (the division may land just
  off one), and a / b where b is 0 (inf or NaN, as PyTorch gives).
  """
  r = a._new(a.uop.alu(Ops.MOD, b.uop))
  q = (a - r) / b
  q = _where((r != 0) & ((r < 0) != (b < 0)), q - 1, q)
  f = q.floor()
  f = _where(q - f > 0.5, f + 1, f)
  return _where(b == 0, a / b, f)


def _pow_by_squaring(a: Tensor, n: int) -> Tensor:
  """a ** n for a Python int n >= 0 by square-and-multiply: about 2 log2(n) multiplies; exact for integers (they wrap like the dtype)."""
  out, base = None, a
  while n:
    if n & 1: out = base if out is None else out * base
    n >>= 1
    if n: base = base * base
  return a.ones_like() if out is None else out


def _pow_int(a: Tensor, b: Tensor) -> Tensor:
  """a ** b for integer tensors, exactly: square-and-multiply over every bit of the exponent (one step per bit of the dtype).

  A negative exponent truncates 1 / a ** -b: 1 for a == 1, ±1 for a == -1, else 0 (PyTorch raises, which needs the data).
  """
  out, base, e = a.ones_like(), a, b
  for _ in range(8 * a.dtype.itemsize - (0 if a.dtype.is_unsigned else 1)):  # a signed exponent's top bit is its sign
    out = _where((e & 1) == 1, out * base, out)
    base, e = base * base, e._shr(1)
  neg = b < 0
  at_neg = _where(a == 1, 1, _where(a == -1, _where((b & 1) == 1, -1, 1), 0)).cast(a.dtype)
  return _where(neg, at_neg, out)
