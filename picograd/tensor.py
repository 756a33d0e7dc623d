"""The Tensor API: eager-looking, PyTorch-named operations that record a lazy UOp graph.

A `Tensor` is a mutable handle on an immutable UOp. Every operation checks shapes, dtypes and
devices right away (so errors point at the line the user wrote) and builds new nodes; nothing
runs until a value is needed (`numpy()`, `item()`, `realize()`). Only a small set of primitives
exists in the IR; everything else here (sub, div, exp, tanh, softmax, matmul, ...) is composed
from them, so it gets gradients and fusion for free.
"""
from __future__ import annotations
import math
from typing import Any, Callable, Iterable, Sequence
import numpy as np
from picograd.dtype import DType, dtypes, promote, result_type_with_scalar
from picograd.helpers import prod, argsort
from picograd.ir.ops import UOp, Ops
from picograd.runtime.device import Buffer, canonicalize

Scalar = int | float | bool
TensorLike = "Tensor | Scalar"


class ShapeError(ValueError):
  """Shapes that do not fit the operation (broadcasting, matmul, reshape, cat, ...)."""


def _normalize_axis(op: str, axis: int, ndim: int) -> int:
  if not -max(ndim, 1) <= axis < max(ndim, 1):
    raise IndexError(f"{op}: dimension {axis} is out of range for a tensor with {ndim} dimension(s)")
  return axis + ndim if axis < 0 else axis


def _broadcast_shape(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
  ndim = max(len(s) for s in shapes)
  padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
  out = []
  for dims in zip(*padded):
    sizes = {d for d in dims if d != 1}
    if len(sizes) > 1:
      raise ShapeError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast together")
    out.append(sizes.pop() if sizes else 1)
  return tuple(out)


def _shape_arg(shape: tuple) -> tuple[int, ...]:
  """Accept f(2, 3), f((2, 3)) and f([2, 3])."""
  if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
  return tuple(int(s) for s in shape)


class Tensor:
  """A lazily evaluated n-dimensional array on a device."""
  __slots__ = ("uop", "device", "requires_grad", "grad", "__weakref__")
  training: bool = False
  no_grad: bool = False
  _seed: int = 0
  _rng_counter: int = 0

  def __init__(self, data: Any, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None):
    self.device = canonicalize(device)
    self.grad: Tensor | None = None
    self.requires_grad: bool | None = requires_grad
    dtype = None if dtype is None else dtypes.from_any(dtype)
    if isinstance(data, UOp):
      self.uop = data if dtype is None else data.cast(dtype)
      return
    if isinstance(data, Tensor):
      self.uop = data.uop if dtype is None else data.uop.cast(dtype)
      if data.device != self.device and device is not None: self.uop = _copy_uop(self.uop, data.device, self.device)
      return
    if isinstance(data, (bool, int, float)) and not isinstance(data, np.generic):
      dt = dtype or dtypes.of_python(data)
      self.uop = UOp.const(dt, data)
      return
    if type(data).__module__.startswith("torch"): data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if arr.dtype == object: raise TypeError(f"Tensor: cannot make a tensor from ragged or non-numeric data {data!r:.80}")
    if dtype is None:
      if isinstance(data, (list, tuple)):  # Python lists follow PyTorch: floats -> float32, ints -> int64
        dtype = {"f": dtypes.default_float, "i": dtypes.int64, "u": dtypes.int64, "b": dtypes.bool}.get(arr.dtype.kind)
        if dtype is None: raise TypeError(f"Tensor: cannot make a tensor from {data!r:.80}")
      else: dtype = dtypes.from_numpy(arr.dtype)
    if dtype == dtypes.bfloat16: host = _float32_to_bfloat16_bits(arr.astype(np.float32))
    else: host = arr.astype(dtype.np, copy=False)
    buf = Buffer(self.device, host.size, dtype).copyin(host)
    self.uop = UOp(Ops.BUFFER, dtype, (), buf).reshape(arr.shape)

  # ---------------------------------------------------------------- properties
  @property
  def shape(self) -> tuple[int, ...]: return self.uop.shape
  @property
  def dtype(self) -> DType: return self.uop.dtype
  @property
  def ndim(self) -> int: return len(self.shape)
  def numel(self) -> int: return prod(self.shape)
  def size(self, dim: int | None = None) -> tuple[int, ...] | int:
    return self.shape if dim is None else self.shape[_normalize_axis("size", dim, self.ndim)]
  def dim(self) -> int: return self.ndim
  def __len__(self) -> int:
    if not self.shape: raise TypeError("len() of a 0-d tensor")
    return self.shape[0]
  def __repr__(self) -> str:
    grad = ", requires_grad=True" if self.requires_grad else ""
    return f"<Tensor {self.shape} {self.dtype.name} on {self.device}{grad}>"
  def __hash__(self) -> int: return id(self)
  def __bool__(self) -> bool:
    if self.numel() != 1: raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
    return bool(self.item())

  def _new(self, uop: UOp) -> "Tensor":
    out = Tensor.__new__(Tensor)
    out.uop, out.device, out.grad = uop, self.device, None
    out.requires_grad = None
    return out

  # ---------------------------------------------------------------- realizing
  def realize(self, *others: "Tensor") -> "Tensor":
    """Run the kernels needed for this tensor (and `others`) now."""
    from picograd.engine.realize import realize
    realize([self, *others])
    return self

  def numpy(self) -> np.ndarray:
    from picograd.engine.realize import realize, buffer_of
    realize([self])
    buf = buffer_of(self)
    host = buf.numpy()
    if self.dtype == dtypes.bfloat16: host = _bfloat16_bits_to_float32(host)
    return host.reshape(self.shape)

  def item(self) -> Scalar:
    if self.numel() != 1: raise ValueError(f"item: only a tensor with one element can become a Python scalar, not shape {self.shape}")
    return self.numpy().reshape(()).item()
  def tolist(self) -> Any: return self.numpy().tolist()
  def data(self) -> np.ndarray: return self.numpy()

  def to(self, device: str | None = None, dtype: DType | None = None) -> "Tensor":
    """Move to another device (a COPY node) and/or cast."""
    out = self
    if device is not None and isinstance(device, (DType,)): device, dtype = None, device
    if device is not None and canonicalize(device) != self.device:
      out = Tensor.__new__(Tensor)
      out.uop, out.device, out.grad, out.requires_grad = _copy_uop(self.uop, self.device, canonicalize(device)), canonicalize(device), None, self.requires_grad
    if dtype is not None: out = out.cast(dtype)
    return out
  def cpu(self) -> "Tensor": return self.to("CPU")
  def cuda(self) -> "Tensor": return self.to("CUDA")

  def contiguous(self) -> "Tensor": return self._new(UOp(Ops.CONTIGUOUS, self.dtype, (self.uop,)))
  def detach(self) -> "Tensor": return self._new(UOp(Ops.DETACH, self.dtype, (self.uop,)))
  def clone(self) -> "Tensor": return self.contiguous()

  def assign(self, value: "Tensor | Scalar") -> "Tensor":
    """Write `value` into this tensor's memory (in place). Shapes must match; the value is cast to this dtype."""
    if not isinstance(value, Tensor): value = Tensor.full(self.shape, value, dtype=self.dtype, device=self.device)
    if value.shape != self.shape: raise ShapeError(f"assign: shape {value.shape} does not match the target's {self.shape}")
    if value.device != self.device: raise RuntimeError(f"assign: value on {value.device} cannot be written into a tensor on {self.device}")
    value_uop = value.uop.cast(self.dtype)
    from picograd.engine.realize import is_buffer_view
    if is_buffer_view(self.uop): self.uop = UOp(Ops.ASSIGN, self.dtype, (self.uop, value_uop))
    else: self.uop = value_uop
    return self

  def replace(self, other: "Tensor") -> "Tensor":
    """Point this handle at another tensor's graph (no copy)."""
    if other.shape != self.shape: raise ShapeError(f"replace: shape {other.shape} does not match {self.shape}")
    self.uop = other.uop
    return self

  # ---------------------------------------------------------------- creation
  @staticmethod
  def full(shape: tuple[int, ...] | int, fill_value: Scalar, dtype: DType | str | None = None, device: str | None = None,
           requires_grad: bool | None = None) -> "Tensor":
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(s < 0 for s in shape): raise ShapeError(f"full: negative dimension in shape {shape}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.of_python(fill_value)
    const = UOp.const(dt, fill_value)
    return Tensor(const.reshape((1,) * len(shape)).expand(shape), device=device, requires_grad=requires_grad)
  @staticmethod
  def zeros(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return Tensor.full(_shape_arg(shape), 0.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
  @staticmethod
  def ones(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return Tensor.full(_shape_arg(shape), 1.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
  @staticmethod
  def empty(*shape, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    return Tensor.zeros(*shape, dtype=dtype, device=device).contiguous()
  def full_like(self, fill_value: Scalar, dtype: DType | None = None, device: str | None = None) -> "Tensor":
    return Tensor.full(self.shape, fill_value, dtype=dtype or self.dtype, device=device or self.device)
  def zeros_like(self, dtype: DType | None = None, device: str | None = None) -> "Tensor": return self.full_like(0, dtype, device)
  def ones_like(self, dtype: DType | None = None, device: str | None = None) -> "Tensor": return self.full_like(1, dtype, device)

  @staticmethod
  def arange(start: Scalar, stop: Scalar | None = None, step: Scalar = 1, dtype: DType | str | None = None,
             device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    if stop is None: start, stop = 0, start
    if step == 0: raise ValueError("arange: step must be nonzero")
    n = max(0, math.ceil((stop - start) / step))
    is_float = any(isinstance(v, float) for v in (start, stop, step))
    dt = dtypes.from_any(dtype) if dtype is not None else (dtypes.default_float if is_float else dtypes.int64)
    iota = Tensor(UOp(Ops.IOTA, dtypes.int32, (), n), device=device)
    out = (iota.cast(dt) * step + start) if dt.is_float else (iota.cast(dt) * int(step) + int(start))
    out.requires_grad = requires_grad
    return out.cast(dt)

  @staticmethod
  def linspace(start: float, end: float, steps: int, dtype: DType | None = None, device: str | None = None) -> "Tensor":
    if steps == 1: return Tensor.full((1,), float(start), dtype=dtype or dtypes.default_float, device=device)
    return (Tensor.arange(steps, device=device).cast(dtype or dtypes.default_float) * ((end - start) / (steps - 1)) + start)

  @staticmethod
  def eye(n: int, m: int | None = None, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    m = n if m is None else m
    rows = Tensor.arange(n, dtype=dtypes.int32, device=device).reshape(n, 1)
    cols = Tensor.arange(m, dtype=dtypes.int32, device=device).reshape(1, m)
    return (rows == cols).cast(dtypes.from_any(dtype) if dtype is not None else dtypes.default_float)

  @staticmethod
  def manual_seed(seed: int = 0) -> None:
    """Seed the counter-based generator: the same seed gives the same numbers on every device."""
    Tensor._seed, Tensor._rng_counter = int(seed), 0

  @staticmethod
  def _random_bits(n: int, device: str | None) -> "Tensor":
    """n uint32 hashes of (seed, counter + element index): lazy and fusable, identical on every device."""
    offset = Tensor._rng_counter
    Tensor._rng_counter += n
    idx = Tensor(UOp(Ops.IOTA, dtypes.int32, (), n), device=device).cast(dtypes.uint32)
    key = _hash32((Tensor._seed * 0x9E3779B9 + 0x632BE5AB) & 0xFFFFFFFF)
    # the offset is data, not a constant, so every call builds the same graph (one schedule, one kernel)
    counter = Tensor(np.array([offset & 0xFFFFFFFF], dtype=np.uint32), device=device)
    from picograd.engine.jit import record_rng_draw
    from picograd.engine.realize import buffer_of
    record_rng_draw(buffer_of(counter), n)  # a JIT replay rewrites this counter instead of rebuilding the graph
    start = counter.reshape(())
    x = (idx + start) ^ key
    # a 32-bit integer mixer (multiply-xorshift); two rounds decorrelate neighbouring counters
    for _ in range(2):
      x = x ^ x._shr(16)
      x = x * 0x7FEB352D
      x = x ^ x._shr(15)
      x = x * 0x846CA68B
      x = x ^ x._shr(16)
    return x

  @staticmethod
  def rand(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Uniform samples in [0, 1)."""
    shape = _shape_arg(shape)
    bits = Tensor._random_bits(prod(shape), device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    out = (bits._shr(8).cast(dtypes.float32) * (1.0 / (1 << 24))).cast(dt).reshape(shape)
    out.requires_grad = requires_grad
    return out

  @staticmethod
  def randn(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Standard normal samples (Box-Muller on two uniform streams)."""
    shape = _shape_arg(shape)
    u = Tensor.rand(2, *shape, device=device)
    u1, u2 = u[0], u[1]
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    out = ((1.0 - u1).log() * -2.0).sqrt() * (u2 * (2 * math.pi)).cos()
    out = out.cast(dt)
    out.requires_grad = requires_grad
    return out

  @staticmethod
  def randint(low: int, high: int | None = None, size: tuple[int, ...] = (), dtype: DType | None = None, device: str | None = None) -> "Tensor":
    if high is None: low, high = 0, low
    if high <= low: raise ValueError(f"randint: empty range [{low}, {high})")
    u = Tensor.rand(*size, device=device)
    return (u * (high - low)).floor().cast(dtype or dtypes.int64) + low

  @staticmethod
  def uniform(*shape, low: float = 0.0, high: float = 1.0, **kwargs) -> "Tensor":
    return Tensor.rand(*shape, **kwargs) * (high - low) + low

  def rand_like(self) -> "Tensor": return Tensor.rand(self.shape, dtype=self.dtype if self.dtype.is_float else None, device=self.device)
  def randn_like(self) -> "Tensor": return Tensor.randn(self.shape, dtype=self.dtype if self.dtype.is_float else None, device=self.device)

  # ---------------------------------------------------------------- broadcasting and elementwise plumbing
  def _to_tensor(self, x: "Tensor | Scalar", op: str, dtype: DType | None = None) -> "Tensor":
    if isinstance(x, Tensor):
      if x.device != self.device:
        raise RuntimeError(f"{op}: tensors are on different devices ({self.device} and {x.device}); move one with .to()")
      return x
    if isinstance(x, np.ndarray) or type(x).__module__.startswith("torch"): return Tensor(x, device=self.device)
    if not isinstance(x, (int, float, bool)): raise TypeError(f"{op}: unsupported operand of type {type(x).__name__}")
    return Tensor(UOp.const(dtype or result_type_with_scalar(self.dtype, x), x), device=self.device)

  def _broadcasted(self, other: "Tensor | Scalar", op: str, reverse: bool = False) -> tuple["Tensor", "Tensor"]:
    if isinstance(other, Tensor): a, b = self, self._to_tensor(other, op)
    else:
      a = self
      b = self._to_tensor(other, op)
      if b.dtype != a.dtype: a = a.cast(b.dtype)
    if reverse: a, b = b, a
    dt = promote(a.dtype, b.dtype)
    a, b = a.cast(dt), b.cast(dt)
    shape = _broadcast_shape(op, a.shape, b.shape)
    return a._expand_to(shape), b._expand_to(shape)

  def _expand_to(self, shape: tuple[int, ...]) -> "Tensor":
    if self.shape == shape: return self
    padded = (1,) * (len(shape) - self.ndim) + self.shape
    return self._new(self.uop.reshape(padded).expand(shape))

  def _unary(self, op: Ops) -> "Tensor":
    x = self if self.dtype.is_float else self.cast(dtypes.default_float)
    return x._new(x.uop.alu(op))

  def _binary(self, op: Ops, other: "Tensor | Scalar", name: str, reverse: bool = False) -> "Tensor":
    a, b = self._broadcasted(other, name, reverse)
    return a._new(a.uop.alu(op, b.uop))

  # ---------------------------------------------------------------- arithmetic
  def add(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.ADD, x, "add")
  def mul(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MUL, x, "mul")
  def neg(self) -> "Tensor":
    if self.dtype == dtypes.bool: raise TypeError("neg: negation of a bool tensor is not supported; use logical_not()")
    return self._new(self.uop.alu(Ops.NEG))
  def sub(self, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
    a, b = self._broadcasted(x, "sub", reverse)
    if a.dtype == dtypes.bool: raise TypeError("sub: subtraction of bool tensors is not supported")
    return a._new(a.uop.alu(Ops.ADD, b.uop.alu(Ops.NEG)))
  def div(self, x: "Tensor | Scalar", reverse: bool = False, rounding_mode: str | None = None) -> "Tensor":
    a, b = self._broadcasted(x, "div", reverse)
    if rounding_mode == "trunc" and a.dtype.is_int: return a._new(a.uop.alu(Ops.IDIV, b.uop))
    if rounding_mode == "floor" and a.dtype.is_int: return a._floordiv_int(b)
    if not a.dtype.is_float: a, b = a.cast(dtypes.default_float), b.cast(dtypes.default_float)
    out = a._new(a.uop.alu(Ops.MUL, b.uop.alu(Ops.RECIPROCAL)))
    if rounding_mode == "trunc": return out.trunc()
    if rounding_mode == "floor": return out.floor()
    return out
  def _floordiv_int(self, b: "Tensor") -> "Tensor":
    q = self._new(self.uop.alu(Ops.IDIV, b.uop))
    # C division truncates; step down when the signs differ and there is a remainder
    fix = ((self < 0) != (b < 0)) & (q * b != self)
    return _where(fix, q - 1, q)
  def __floordiv__(self, x): return self.div(x, rounding_mode="floor")
  def __rfloordiv__(self, x): return self._to_tensor(x, "floordiv").div(self, rounding_mode="floor")
  def __mod__(self, x):
    a, b = self._broadcasted(x, "mod")
    return a - a.div(b, rounding_mode="floor") * b
  def __rmod__(self, x): return self._to_tensor(x, "mod").__mod__(self)

  def pow(self, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
    if not reverse and isinstance(x, (int, float)) and not isinstance(x, bool) and float(x).is_integer() and abs(x) <= 4 and self.dtype.is_float:
      # small integer powers by repeated multiplication: exact, and negative bases work
      n = int(x)
      if n == 0: return self.ones_like()
      out = self
      for _ in range(abs(n) - 1): out = out * self
      return out.reciprocal() if n < 0 else out
    a, b = self._broadcasted(x, "pow", reverse)
    if not a.dtype.is_float:  # integer powers: computed in float, rounded, and given back the promoted integer dtype
      int_dtype = a.dtype
      a, b = a.cast(dtypes.default_float), b.cast(dtypes.default_float)
      return _pow_float(a, b).round().cast(int_dtype)
    return _pow_float(a, b)
  def __pow__(self, x): return self.pow(x)
  def __rpow__(self, x): return self.pow(x, reverse=True)

  def reciprocal(self) -> "Tensor": return self._unary(Ops.RECIPROCAL)
  def sqrt(self) -> "Tensor": return self._unary(Ops.SQRT)
  def rsqrt(self) -> "Tensor": return self.sqrt().reciprocal()
  def exp2(self) -> "Tensor": return self._unary(Ops.EXP2)
  def log2(self) -> "Tensor": return self._unary(Ops.LOG2)
  def exp(self) -> "Tensor": return self._float().mul(1 / math.log(2)).exp2()
  def log(self) -> "Tensor": return self.log2().mul(math.log(2))
  def sin(self) -> "Tensor": return self._unary(Ops.SIN)
  def cos(self) -> "Tensor": return (math.pi / 2 - self._float()).sin()
  def tan(self) -> "Tensor": return self.sin() / self.cos()
  def sigmoid(self) -> "Tensor": return (1 + (-self._float()).exp()).reciprocal()
  def tanh(self) -> "Tensor": return 2.0 * (2.0 * self._float()).sigmoid() - 1.0
  def relu(self) -> "Tensor": return _where(self > 0, self, 0)
  def leaky_relu(self, negative_slope: float = 0.01) -> "Tensor": return _where(self > 0, self, self * negative_slope)
  def abs(self) -> "Tensor":
    if self.dtype == dtypes.bool or self.dtype.is_unsigned: return self
    return self.relu() + (-self).relu()
  def sign(self) -> "Tensor": return (self > 0).cast(self.dtype) - (self < 0).cast(self.dtype)
  def square(self) -> "Tensor": return self * self
  def trunc(self) -> "Tensor":
    if not self.dtype.is_float: return self
    # through int64 is exact for |x| < 2**63; larger floats are already integers
    return _where(self.abs() < 2.0**62, self.cast(dtypes.int64).cast(self.dtype), self)
  def floor(self) -> "Tensor":
    if not self.dtype.is_float: return self
    t = self.trunc()
    return _where(t > self, t - 1, t)
  def ceil(self) -> "Tensor":
    if not self.dtype.is_float: return self
    t = self.trunc()
    return _where(t < self, t + 1, t)
  def round(self) -> "Tensor":
    """Round half to even, like PyTorch and numpy."""
    if not self.dtype.is_float: return self
    f = self.floor()
    diff = self - f
    f_is_even = (f * 0.5).floor() * 2 == f
    return _where(diff > 0.5, f + 1, _where(diff < 0.5, f, _where(f_is_even, f, f + 1)))
  def _float(self) -> "Tensor": return self if self.dtype.is_float else self.cast(dtypes.default_float)

  def maximum(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MAX, x, "maximum")
  def minimum(self, x: "Tensor | Scalar") -> "Tensor":
    a, b = self._broadcasted(x, "minimum")
    if a.dtype == dtypes.bool: return a & b
    return -((-a).maximum(-b))
  def clip(self, min_: Scalar | "Tensor | None" = None, max_: Scalar | "Tensor | None" = None) -> "Tensor":
    if min_ is None and max_ is None: raise ValueError("clip: at least one of min and max must be given")
    out = self
    if min_ is not None: out = out.maximum(min_)
    if max_ is not None: out = out.minimum(max_)
    return out
  clamp = clip

  def where(self, condition: "Tensor", other: "Tensor | Scalar") -> "Tensor":
    """PyTorch's `x.where(condition, y)`: x where condition holds, else y."""
    return _where(condition, self, other)

  # comparisons (results are bool)
  def __lt__(self, x): return self._binary(Ops.CMPLT, x, "lt")
  def __gt__(self, x): return self._binary(Ops.CMPLT, x, "gt", reverse=True)
  def __le__(self, x): return (self > x).logical_not()
  def __ge__(self, x): return (self < x).logical_not()
  def __ne__(self, x): return self._binary(Ops.CMPNE, x, "ne")  # type: ignore[override]
  def __eq__(self, x): return (self != x).logical_not()  # type: ignore[override]
  lt, gt, le, ge = __lt__, __gt__, __le__, __ge__
  def eq(self, x): return self == x
  def ne(self, x): return self != x
  def logical_not(self) -> "Tensor": return self._new(self.cast(dtypes.bool).uop.alu(Ops.XOR, UOp.const(dtypes.bool, True).reshape((1,) * self.ndim).expand(self.shape)))
  def isnan(self) -> "Tensor": return self != self
  def isinf(self) -> "Tensor": return (self == float("inf")) | (self == float("-inf"))

  def _bitwise(self, op: Ops, x: "Tensor | Scalar", name: str) -> "Tensor":
    a, b = self._broadcasted(x, name)
    if a.dtype.is_float: raise TypeError(f"{name}: bitwise operations need integer or bool tensors, not {a.dtype.name}")
    return a._new(a.uop.alu(op, b.uop))
  def __and__(self, x): return self._bitwise(Ops.AND, x, "bitwise_and")
  def __or__(self, x): return self._bitwise(Ops.OR, x, "bitwise_or")
  def __xor__(self, x): return self._bitwise(Ops.XOR, x, "bitwise_xor")
  __rand__, __ror__, __rxor__ = __and__, __or__, __xor__
  def __invert__(self): return self.logical_not() if self.dtype == dtypes.bool else self ^ -1
  def _shr(self, n: int) -> "Tensor": return self._new(self.uop.alu(Ops.SHR, UOp.const(self.dtype, n).reshape((1,) * self.ndim).expand(self.shape)))

  def cast(self, dtype: DType | str) -> "Tensor":
    dt = dtypes.from_any(dtype)
    return self if dt == self.dtype else self._new(self.uop.cast(dt))
  def float(self) -> "Tensor": return self.cast(dtypes.float32)
  def half(self) -> "Tensor": return self.cast(dtypes.float16)
  def double(self) -> "Tensor": return self.cast(dtypes.float64)
  def int(self) -> "Tensor": return self.cast(dtypes.int32)
  def long(self) -> "Tensor": return self.cast(dtypes.int64)
  def bool(self) -> "Tensor": return self.cast(dtypes.bool)

  __add__ = add
  __mul__ = mul
  __neg__ = neg
  def __radd__(self, x): return self._binary(Ops.ADD, x, "add", reverse=True)
  def __rmul__(self, x): return self._binary(Ops.MUL, x, "mul", reverse=True)
  def __sub__(self, x): return self.sub(x)
  def __rsub__(self, x): return self.sub(x, reverse=True)
  def __truediv__(self, x): return self.div(x)
  def __rtruediv__(self, x): return self.div(x, reverse=True)
  def __matmul__(self, x): return self.matmul(x)
  def __rmatmul__(self, x): return self._to_tensor(x, "matmul").matmul(self)
  def __iadd__(self, x): return self.assign(self + x)
  def __isub__(self, x): return self.assign(self - x)
  def __imul__(self, x): return self.assign(self * x)
  def __itruediv__(self, x): return self.assign(self / x)

  # ---------------------------------------------------------------- reductions
  def _axes(self, op: str, axis: int | Sequence[int] | None) -> tuple[int, ...]:
    if axis is None: return tuple(range(self.ndim))
    if isinstance(axis, int): axis = (axis,)
    axes = tuple(_normalize_axis(op, a, self.ndim) for a in axis)
    if len(set(axes)) != len(axes): raise ValueError(f"{op}: dimension repeated in {tuple(axis)}")
    return axes

  def _reduce(self, op: Ops, axis, keepdim: bool, name: str) -> "Tensor":
    axes = self._axes(name, axis)
    x = self
    if self.ndim == 0: return self
    out = x._new(x.uop.reduce(op, axes)) if axes else x
    if keepdim: return out
    return out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

  def sum(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dtype: DType | None = None, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    acc = dtypes.from_any(dtype) if dtype is not None else (dtypes.int64 if not self.dtype.is_float else self.dtype)
    x = self.cast(acc)
    if acc in (dtypes.float16, dtypes.bfloat16):  # accumulate half types in float32, as PyTorch does
      return x.cast(dtypes.float32)._reduce(Ops.ADD, axis, keepdim, "sum").cast(acc)
    return x._reduce(Ops.ADD, axis, keepdim, "sum")

  def max(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    if any(self.shape[a] == 0 for a in self._axes("max", axis)): raise ValueError(f"max: cannot reduce an empty dimension of shape {self.shape}")
    return self._reduce(Ops.MAX, axis, keepdim, "max")

  def min(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    if self.dtype == dtypes.bool: return self.logical_not().max(axis, keepdim).logical_not()
    if self.dtype.is_unsigned: return ~((~self).max(axis, keepdim))
    return -((-self).max(axis, keepdim))

  def mean(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    n = prod(self.shape[a] for a in self._axes("mean", axis))
    x = self._float()
    return x.sum(axis, keepdim) * (1.0 / n if n else float("nan"))

  def var(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None, unbiased: bool | None = None) -> "Tensor":
    axis = dim if dim is not None else axis
    if unbiased is not None: correction = int(unbiased)
    n = prod(self.shape[a] for a in self._axes("var", axis))
    x = self._float()
    centered = x - x.mean(axis, keepdim=True)
    denom = max(n - correction, 0)
    return (centered * centered).sum(axis, keepdim) * (1.0 / denom if denom else float("nan"))

  def std(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None, unbiased: bool | None = None) -> "Tensor":
    return self.var(axis, keepdim, correction, dim, unbiased).sqrt()

  def argmax(self, axis: int | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    """Index of the first maximum (int64), like PyTorch."""
    axis = dim if dim is not None else axis
    if axis is None: return self.flatten().argmax(0, keepdim=False) if not keepdim else self.flatten().argmax(0).reshape((1,) * self.ndim)
    ax = _normalize_axis("argmax", axis, self.ndim)
    n = self.shape[ax]
    if n == 0: raise ValueError(f"argmax: cannot reduce an empty dimension of shape {self.shape}")
    is_max = self == self.max(ax, keepdim=True)
    # a NaN is the maximum (max propagates it), but NaN == NaN is false: pick the first NaN, as PyTorch does
    if self.dtype.is_float: is_max = is_max | self.isnan()
    # score positions so the first maximum wins: n - index where the max is, 0 elsewhere
    rev = Tensor.arange(n, 0, -1, dtype=dtypes.int32, device=self.device).reshape([n if i == ax else 1 for i in range(self.ndim)])
    best = _where(is_max, rev, 0).max(ax, keepdim=keepdim)
    return (n - best).cast(dtypes.int64)

  def argmin(self, axis: int | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    if self.dtype == dtypes.bool: return self.logical_not().argmax(axis, keepdim)
    return (-self._float() if not self.dtype.is_float else -self).argmax(axis, keepdim)

  def logsumexp(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    x = self._float()
    m = x.max(axis, keepdim=True).detach()
    m = _where(m.isinf(), 0.0, m)
    out = (x - m).exp().sum(axis, keepdim=True).log() + m
    return out if keepdim else out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in self._axes("logsumexp", axis)))

  def softmax(self, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = dim if dim is not None else axis
    x = self._float()
    e = (x - x.max(axis, keepdim=True).detach()).exp()
    return e / e.sum(axis, keepdim=True)

  def log_softmax(self, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = dim if dim is not None else axis
    x = self._float()
    shifted = x - x.max(axis, keepdim=True).detach()
    return shifted - shifted.exp().sum(axis, keepdim=True).log()

  def cumsum(self, axis: int = 0, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("cumsum", dim if dim is not None else axis, self.ndim)
    n = self.shape[axis]
    x = self.transpose(axis, -1)
    # pad to 2n-1 then take n sliding windows of length n: windows[i] covers x[..i]
    padded = x.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((n - 1, 0),))
    win = padded.unsqueeze(-2).expand(*x.shape[:-1], n, 2 * n - 1 if n else 0)
    flat = win.reshape(*x.shape[:-1], n * (2 * n - 1)) if n else win
    if n: flat = flat.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((0, n),)).reshape(*x.shape[:-1], n, 2 * n)[..., :n]
    return flat.sum(-1).transpose(axis, -1) if n else self

  # ---------------------------------------------------------------- movement
  def reshape(self, *shape) -> "Tensor":
    shape = _shape_arg(shape)
    if shape.count(-1) > 1: raise ShapeError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
      known = prod(s for s in shape if s != -1)
      if known == 0 or self.numel() % known: raise ShapeError(f"reshape: cannot reshape {self.shape} into {shape}")
      shape = tuple(self.numel() // known if s == -1 else s for s in shape)
    if any(s < 0 for s in shape) or prod(shape) != self.numel():
      raise ShapeError(f"reshape: cannot reshape tensor of shape {self.shape} ({self.numel()} elements) into {shape}")
    return self._new(self.uop.reshape(shape))
  view = reshape

  def permute(self, *order) -> "Tensor":
    order = tuple(_normalize_axis("permute", a, self.ndim) for a in _shape_arg(order))
    if sorted(order) != list(range(self.ndim)): raise ShapeError(f"permute: {order} is not a permutation of the {self.ndim} dimensions of {self.shape}")
    return self._new(self.uop.permute(order))

  def transpose(self, dim0: int = -2, dim1: int = -1) -> "Tensor":
    a, b = _normalize_axis("transpose", dim0, self.ndim), _normalize_axis("transpose", dim1, self.ndim)
    order = list(range(self.ndim))
    order[a], order[b] = order[b], order[a]
    return self.permute(order)
  @property
  def T(self) -> "Tensor": return self.permute(tuple(range(self.ndim))[::-1])
  @property
  def mT(self) -> "Tensor": return self.transpose(-2, -1)

  def expand(self, *shape) -> "Tensor":
    shape = _shape_arg(shape)
    if len(shape) < self.ndim: raise ShapeError(f"expand: target {shape} has fewer dimensions than the tensor's {self.shape}")
    src = (1,) * (len(shape) - self.ndim) + self.shape
    new = tuple(s if n == -1 else n for s, n in zip(src, shape))
    if any(s != n and s != 1 for s, n in zip(src, new)): raise ShapeError(f"expand: cannot expand shape {self.shape} to {shape}")
    return self._new(self.uop.reshape(src).expand(new))
  def expand_as(self, other: "Tensor") -> "Tensor": return self.expand(other.shape)

  def squeeze(self, dim: int | Sequence[int] | None = None) -> "Tensor":
    if dim is None: return self.reshape(tuple(d for d in self.shape if d != 1))
    dims = {_normalize_axis("squeeze", d, self.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
    return self.reshape(tuple(d for i, d in enumerate(self.shape) if not (i in dims and d == 1)))
  def unsqueeze(self, dim: int) -> "Tensor":
    dim = _normalize_axis("unsqueeze", dim, self.ndim + 1)
    return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])
  def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
    if self.ndim == 0: return self.reshape(1)
    s, e = _normalize_axis("flatten", start_dim, self.ndim), _normalize_axis("flatten", end_dim, self.ndim)
    return self.reshape(self.shape[:s] + (prod(self.shape[s:e + 1]),) + self.shape[e + 1:])
  def unflatten(self, dim: int, sizes: Sequence[int]) -> "Tensor":
    dim = _normalize_axis("unflatten", dim, self.ndim)
    return self.reshape(self.shape[:dim] + tuple(sizes) + self.shape[dim + 1:])

  def pad(self, padding: Sequence[int] | Sequence[tuple[int, int]], value: Scalar = 0.0, mode: str = "constant") -> "Tensor":
    """Pad with `value`. Either PyTorch's flat form (last dim first: left, right, top, bottom, ...) or one (before, after) pair per dim.

    Negative amounts crop, as in PyTorch.
    """
    if mode != "constant": raise NotImplementedError(f"pad: mode {mode!r} (only 'constant' is supported)")
    if padding and isinstance(padding[0], (tuple, list)):
      if len(padding) != self.ndim: raise ShapeError(f"pad: {len(padding)} (before, after) pairs for a tensor of shape {self.shape}")
      pairs = [tuple(p) for p in padding]
    else:
      if len(padding) % 2 or len(padding) // 2 > self.ndim:
        raise ShapeError(f"pad: padding {tuple(padding)} does not fit a tensor of shape {self.shape}")
      pairs = [(0, 0)] * self.ndim
      for i in range(len(padding) // 2): pairs[self.ndim - 1 - i] = (padding[2 * i], padding[2 * i + 1])
    # negative amounts are crops; do them first
    crop = tuple((-min(b, 0), d + min(a, 0)) for (b, a), d in zip(pairs, self.shape))
    if any(e < s for s, e in crop): raise ShapeError(f"pad: padding {pairs} crops more than the shape {self.shape}")
    x = self._new(self.uop.shrink(crop))
    grow = tuple((max(b, 0), max(a, 0)) for b, a in pairs)
    if all(g == (0, 0) for g in grow): return x
    out = x._new(x.uop.pad(grow))
    if value == 0: return out
    mask = Tensor.ones(x.shape, dtype=dtypes.bool, device=self.device)._new(
      UOp.const(dtypes.bool, True).reshape((1,) * x.ndim).expand(x.shape).pad(grow))
    return _where(mask, out, value)

  def shrink(self, bounds: Sequence[tuple[int, int] | None]) -> "Tensor":
    b = tuple((0, d) if p is None else tuple(p) for p, d in zip(bounds, self.shape))
    if any(not 0 <= s <= e <= d for (s, e), d in zip(b, self.shape)): raise ShapeError(f"shrink: bounds {b} do not fit shape {self.shape}")
    return self._new(self.uop.shrink(b))

  def flip(self, dims: int | Sequence[int]) -> "Tensor":
    dims = (dims,) if isinstance(dims, int) else dims
    axes = {_normalize_axis("flip", d, self.ndim) for d in dims}
    return self._new(self.uop.flip(tuple(i in axes for i in range(self.ndim))))

  def repeat(self, *repeats) -> "Tensor":
    """Tile the tensor (PyTorch's repeat): each dim i is repeated repeats[i] times."""
    repeats = _shape_arg(repeats)
    if len(repeats) < self.ndim: raise ShapeError(f"repeat: {len(repeats)} repeat counts for a tensor of shape {self.shape}")
    base = (1,) * (len(repeats) - self.ndim) + self.shape
    x = self.reshape(base)
    interleaved = tuple(v for d in base for v in (1, d))
    expanded = tuple(v for r, d in zip(repeats, base) for v in (r, d))
    return x.reshape(interleaved).expand(expanded).reshape(tuple(r * d for r, d in zip(repeats, base)))

  def chunk(self, chunks: int, dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("chunk", dim, self.ndim)
    step = math.ceil(self.shape[dim] / chunks)
    return self.split(step, dim)

  def split(self, sizes: int | Sequence[int], dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("split", dim, self.ndim)
    n = self.shape[dim]
    if isinstance(sizes, int): sizes = [min(sizes, n - i) for i in range(0, n, max(sizes, 1))]
    if sum(sizes) != n: raise ShapeError(f"split: sizes {list(sizes)} do not add up to dimension {dim} of {self.shape}")
    out, start = [], 0
    for s in sizes:
      out.append(self.shrink([(start, start + s) if i == dim else None for i in range(self.ndim)]))
      start += s
    return out

  def cat(self, *others: "Tensor", dim: int = 0) -> "Tensor": return cat([self, *others], dim)
  def stack(self, *others: "Tensor", dim: int = 0) -> "Tensor": return stack([self, *others], dim)

  def tril(self, diagonal: int = 0) -> "Tensor": return self._triangle(diagonal, lower=True)
  def triu(self, diagonal: int = 0) -> "Tensor": return self._triangle(diagonal, lower=False)
  def _triangle(self, diagonal: int, lower: bool) -> "Tensor":
    r, c = self.shape[-2], self.shape[-1]
    rows = Tensor.arange(r, dtype=dtypes.int32, device=self.device).reshape(r, 1)
    cols = Tensor.arange(c, dtype=dtypes.int32, device=self.device).reshape(1, c)
    keep = (cols <= rows + diagonal) if lower else (cols >= rows + diagonal)
    return _where(keep, self, 0)

  def masked_fill(self, mask: "Tensor", value: Scalar) -> "Tensor": return _where(mask, value, self)

  # ---------------------------------------------------------------- indexing
  def __getitem__(self, index: Any) -> "Tensor":
    from picograd.indexing import getitem
    return getitem(self, index)

  def __setitem__(self, index: Any, value: Any) -> None:
    raise TypeError("picograd tensors do not support item assignment; build the new tensor with where/pad/cat, or use assign()")

  def gather(self, dim: int, index: "Tensor") -> "Tensor":
    """out[i][j] = self[index[i][j]][j] for dim=0 (PyTorch's gather)."""
    dim = _normalize_axis("gather", dim, self.ndim)
    if index.ndim != self.ndim: raise ShapeError(f"gather: index of shape {index.shape} must have as many dims as {self.shape}")
    n = self.shape[dim]
    x = self.shrink([None if i == dim else (0, index.shape[i]) for i in range(self.ndim)])
    onehot = index.unsqueeze(-1) == Tensor.arange(n, dtype=index.dtype, device=self.device)
    moved = x.unsqueeze(-1).transpose(dim, -1)
    return _where(onehot, moved, 0).sum(-1, dtype=self.dtype)

  # ---------------------------------------------------------------- linear algebra and nn functions
  def matmul(self, other: "Tensor") -> "Tensor":
    other = self._to_tensor(other, "matmul")
    if self.ndim == 0 or other.ndim == 0: raise ShapeError(f"matmul: both operands need at least 1 dimension, got {self.shape} and {other.shape}")
    a = self.unsqueeze(0) if self.ndim == 1 else self
    b = other.unsqueeze(-1) if other.ndim == 1 else other
    if a.shape[-1] != b.shape[-2]:
      raise ShapeError(f"matmul: shapes {self.shape} and {other.shape} do not fit: inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
    batch = _broadcast_shape("matmul", a.shape[:-2], b.shape[:-2])
    dt = promote(a.dtype, b.dtype)
    a, b = a.cast(dt), b.cast(dt)
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    # out[..., i, j] = sum_k a[..., i, k] * b[..., k, j], as a broadcast product reduced over k
    prod_ = a.reshape(*a.shape[:-2], n, 1, k)._expand_to(batch + (n, m, k)) * \
            b.transpose(-1, -2).reshape(*b.shape[:-2], 1, m, k)._expand_to(batch + (n, m, k))
    out = prod_.sum(-1, dtype=dt)
    if self.ndim == 1: out = out.squeeze(-2)
    if other.ndim == 1: out = out.squeeze(-1)
    return out
  def dot(self, other: "Tensor") -> "Tensor": return self.matmul(other)

  def linear(self, weight: "Tensor", bias: "Tensor | None" = None) -> "Tensor":
    out = self.matmul(weight.T)
    return out + bias if bias is not None else out

  def __iter__(self):
    for i in range(len(self)): yield self[i]


def _hash32(x: int) -> int:
  x ^= x >> 16; x = (x * 0x7FEB352D) & 0xFFFFFFFF; x ^= x >> 15; x = (x * 0x846CA68B) & 0xFFFFFFFF; x ^= x >> 16
  return x


def _pow_float(a: Tensor, b: Tensor) -> Tensor:
  """a ** b for floats via exp2(b * log2|a|), with the sign rules of a negative base and 0 ** 0 == 1."""
  mag = (b * a.abs().log2()).exp2()
  b_int = b == b.trunc()
  b_odd = b_int & ((b * 0.5) != (b * 0.5).trunc())
  neg = a < 0
  out = _where(neg & b_odd, -mag, mag)
  out = _where(neg & b_int.logical_not(), float("nan"), out)
  return _where(b == 0, 1.0, out)


def _where(cond: Tensor | Any, x: Tensor | Scalar, y: Tensor | Scalar) -> Tensor:
  """Elementwise select with broadcasting and promotion of x and y (PyTorch's torch.where)."""
  anchor = next(t for t in (cond, x, y) if isinstance(t, Tensor))
  c = anchor._to_tensor(cond, "where") if not isinstance(cond, Tensor) else cond
  if c.device != anchor.device: raise RuntimeError(f"where: tensors are on different devices ({c.device} and {anchor.device})")
  c = c.cast(dtypes.bool)
  if isinstance(x, Tensor) and isinstance(y, Tensor): dt = promote(x.dtype, y.dtype)
  elif isinstance(x, Tensor): dt = result_type_with_scalar(x.dtype, y)
  elif isinstance(y, Tensor): dt = result_type_with_scalar(y.dtype, x)
  else: dt = promote(dtypes.of_python(x), dtypes.of_python(y))
  xt = anchor._to_tensor(x, "where", dt).cast(dt)
  yt = anchor._to_tensor(y, "where", dt).cast(dt)
  shape = _broadcast_shape("where", c.shape, xt.shape, yt.shape)
  c, xt, yt = c._expand_to(shape), xt._expand_to(shape), yt._expand_to(shape)
  return xt._new(c.uop.alu(Ops.WHERE, xt.uop, yt.uop))


def where(condition: Tensor, x: Tensor | Scalar, y: Tensor | Scalar) -> Tensor:
  """torch.where(condition, x, y)."""
  return _where(condition, x, y)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
  """Concatenate along `dim`: each input is padded to the full size and the pads are summed (a single fused kernel)."""
  if not tensors: raise ValueError("cat: expected a non-empty list of tensors")
  first = tensors[0]
  dim = _normalize_axis("cat", dim, first.ndim)
  for t in tensors[1:]:
    if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
      raise ShapeError(f"cat: shapes {[tuple(x.shape) for x in tensors]} differ outside dimension {dim}")
    if t.device != first.device: raise RuntimeError(f"cat: tensors are on different devices ({first.device} and {t.device})")
  dt = first.dtype
  for t in tensors[1:]: dt = promote(dt, t.dtype)
  total = sum(t.shape[dim] for t in tensors)
  out, start = None, 0
  for t in tensors:
    pad = [(0, 0)] * first.ndim
    pad[dim] = (start, total - start - t.shape[dim])
    piece = t.cast(dt)._new(t.cast(dt).uop.pad(tuple(pad)))
    start += t.shape[dim]
    if dt == dtypes.bool: out = piece if out is None else out | piece
    else: out = piece if out is None else out + piece
  return out


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
  if not tensors: raise ValueError("stack: expected a non-empty list of tensors")
  shapes = {t.shape for t in tensors}
  if len(shapes) != 1: raise ShapeError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
  dim = _normalize_axis("stack", dim, tensors[0].ndim + 1)
  return cat([t.unsqueeze(dim) for t in tensors], dim)


def _copy_uop(uop: UOp, src_device: str, dst_device: str) -> UOp:
  return UOp(Ops.COPY, uop.dtype, (uop,), (src_device, dst_device))


def _float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
  bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
  rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
  return (rounded >> 16).astype(np.uint16)


def _bfloat16_bits_to_float32(x: np.ndarray) -> np.ndarray:
  return (x.astype(np.uint32) << 16).view(np.float32)
