"""The Tensor API: eager-looking, PyTorch-named operations that record a lazy UOp graph.

A `Tensor` is a mutable handle on an immutable UOp. Every operation checks shapes, dtypes and
devices right away (so errors point at the line the user wrote) and builds new nodes; nothing
runs until a value is needed (`numpy()`, `item()`, `realize()`). Only a small set of primitives
exists in the IR; everything else (sub, div, exp, tanh, softmax, matmul, ...: the mixins in frontend/) is composed
from them, so it gets gradients and fusion for free.
"""
from __future__ import annotations
import contextlib, weakref
from typing import Any, Sequence
import numpy as np
from picograd.dtype import DType, dtypes, promote, result_type_with_scalar
from picograd.helpers import prod, ShapeError
from picograd.ir.ops import UOp, Ops
from picograd.ir.provenance import record
from picograd.ir.gradient import compute_gradient, nodes_between, gradient_graph_text
from picograd.runtime.device import Buffer, canonicalize
from picograd.frontend._util import Scalar, TensorBase, _normalize_axis, _broadcast_shape, _shape_arg, _half_meets_wide_float
from picograd.frontend._util import where  # noqa: F401  (picograd.where, re-exported)
from picograd.frontend.creation import CreationMixin
from picograd.frontend.elementwise import ElementwiseMixin
from picograd.frontend.reduce import ReduceMixin
from picograd.frontend.movement import MovementMixin, cat, stack  # noqa: F401  (picograd.cat/stack, re-exported)
from picograd.frontend.nn_ops import NNOpsMixin
from picograd.engine.jit import register_frontend
from picograd.engine.realize import realize, buffer_of, read_checked
from picograd.engine.schedule import is_contiguous_view
from picograd.frontend.conv import ConvMixin
from picograd.frontend.math import MathMixin
from picograd.frontend.random import RandomMixin
from picograd.frontend.scan import ScanMixin
from picograd.frontend.sort import SortMixin


class Tensor(CreationMixin, ElementwiseMixin, ReduceMixin, MovementMixin, NNOpsMixin, ConvMixin, ScanMixin, SortMixin, MathMixin, RandomMixin,
             TensorBase):
  """A lazily evaluated n-dimensional array on a device."""
  # _requires_grad: True/False as set by the user on a leaf, None to derive it from the graph
  __slots__ = ("uop", "device", "_requires_grad", "grad", "__weakref__")
  training: bool = False
  no_grad: bool = False
  _seed: int = 0
  _rng_counter: int = 0

  def __init__(self, data: Any, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None):
    self.device = canonicalize(device)
    self.grad: Tensor | None = None
    self._requires_grad: bool | None = None
    self._init_uop(data, dtype, device)
    record(self.uop)  # provenance: the user's line that made it
    if requires_grad is not None: self.requires_grad = requires_grad

  def _init_uop(self, data: Any, dtype: DType | str | None, device: str | None) -> None:
    dtype = None if dtype is None else dtypes.from_any(dtype)
    if isinstance(data, UOp):
      self.uop = data if dtype is None else data.cast(dtype)
      return
    if isinstance(data, Tensor):
      self.uop = data.uop if dtype is None else data.uop.cast(dtype)
      if data.device != self.device and device is not None: self.uop = _copy_uop(self.uop, data.device, self.device)
      return
    if type(data) is np.ndarray: arr = data  # (first: a training step makes its batches from arrays)
    else:
      if isinstance(data, (bool, int, float)) and not isinstance(data, np.generic):
        self.uop = UOp.const(dtype or dtypes.of_python(data), data)
        return
      if type(data).__module__.startswith("torch"): data = data.detach().cpu().numpy()
      try:
        arr = np.asarray(data)
      except ValueError as e:  # numpy 2 refuses ragged nesting outright
        raise ValueError(f"Tensor: cannot make a tensor from ragged data {data!r:.80} ({e})") from None
    if arr.dtype == object: raise TypeError(f"Tensor: cannot make a tensor from ragged or non-numeric data {data!r:.80}")
    if dtype is None:
      if isinstance(data, (list, tuple)):  # Python lists follow PyTorch: floats -> float32, ints -> int64
        if arr.dtype.kind == "u" and arr.size and arr.max() >= 2**63: raise ValueError(f"Tensor: {int(arr.max())} does not fit in int64 (overflow)")
        dtype = {"f": dtypes.default_float, "i": dtypes.int64, "u": dtypes.int64, "b": dtypes.bool}.get(arr.dtype.kind)
        if dtype is None: raise TypeError(f"Tensor: cannot make a tensor from {data!r:.80}")
      else: dtype = dtypes.from_numpy(arr.dtype)
    if dtype == dtypes.bfloat16: host = _float32_to_bfloat16_bits(arr.astype(np.float32))
    else: host = arr.astype(dtype.np, copy=False)
    buf = Buffer(self.device, host.size, dtype).copyin(host)
    self.uop = UOp(Ops.BUFFER, dtype, (), buf).reshape(arr.shape)

  # ---------------------------------------------------------------- properties
  @property
  def shape(self) -> tuple[int, ...]: return self.uop.tshape
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
    if Tensor.no_grad and _leaves and uop.op is not Ops.DETACH: uop = _detached(uop)
    out.uop, out.device, out.grad = uop, self.device, None
    out._requires_grad = None
    record(uop, 1)  # provenance; the caller of _new is picograd's own
    return out

  # ---------------------------------------------------------------- realizing
  def realize(self, *others: "Tensor") -> "Tensor":
    """Run the kernels needed for this tensor (and `others`) now."""
    graphs = _graphs_for_grad([self, *others])
    tensors = [self, *others]
    for t, u in zip(tensors, realize(tensors)): t.uop = u  # the engine returns buffers; each tensor points itself at its own
    for t, u in graphs.items(): t.uop = u
    return self

  def numpy(self) -> np.ndarray:
    uop = self.uop
    if not is_contiguous_view(uop):  # (a realized tensor, such as a jitted step's loss, is read without a plan)
      graphs = _graphs_for_grad([self])
      (uop,) = realize([self])
      self.uop = uop
      for t, u in graphs.items(): t.uop = u
    # runtime checks of kernels on asynchronous devices (CUDA) are read where the host waits anyway, with the data
    host = read_checked(buffer_of(uop))
    if self.dtype == dtypes.bfloat16: host = _bfloat16_bits_to_float32(host)
    return host.reshape(self.shape)

  def item(self) -> Scalar:
    if self.numel() != 1: raise RuntimeError(f"item: only a tensor with one element can become a Python scalar, not shape {self.shape}")
    return self.numpy().item()
  def tolist(self) -> Any: return self.numpy().tolist()
  def data(self) -> np.ndarray: return self.numpy()

  # ---------------------------------------------------------------- gradients
  @property
  def requires_grad(self) -> bool:
    """True for a leaf marked trainable and for any float result computed from one (outside `no_grad`), as in PyTorch."""
    if self._requires_grad is not None: return self._requires_grad
    if not _leaves: return False
    return self.uop in nodes_between(self.uop, {t.uop for t in _leaves.values()})

  @requires_grad.setter
  def requires_grad(self, value: bool | None) -> None:
    if value is None: return
    if not value:
      if self._requires_grad is None and self.requires_grad:
        raise RuntimeError("requires_grad: only a leaf's flag can be turned off; use detach() for a result computed from trainable tensors")
      _leaves.pop(id(self), None)
      self._requires_grad = False
      return
    if not self.dtype.is_float: raise RuntimeError(f"requires_grad: only floating-point tensors can require gradients, not {self.dtype.name}")
    # a leaf must be a node of its own: lazy values are hash-consed (two Tensor.zeros(3) are one UOp), a buffer is not
    if not is_contiguous_view(self.uop): (self.uop,) = realize([self])
    self._requires_grad = True
    _leaves[id(self)] = self

  def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
    self.requires_grad = requires_grad
    return self

  @property
  def is_leaf(self) -> bool:
    """PyTorch's convention: tensors the user created (or that need no gradient) are leaves; results of trainable ones are not."""
    return self._requires_grad is not None or not self.requires_grad

  def _seed_gradient(self, gradient: "Tensor | None", op: str) -> UOp:
    if not self.dtype.is_float: raise RuntimeError(f"{op}: only floating-point outputs have gradients, not {self.dtype.name}")
    if gradient is None:
      if self.numel() != 1:
        raise RuntimeError(f"{op}: a gradient can be created implicitly only for a scalar output, not shape {self.shape}; pass gradient=")
      return UOp.const(self.dtype, 1.0).reshape((1,) * self.ndim).expand(self.shape)
    if not isinstance(gradient, Tensor): raise TypeError(f"{op}: gradient= must be a Tensor, not {type(gradient).__name__}")
    if gradient.shape != self.shape: raise ShapeError(f"{op}: gradient of shape {gradient.shape} does not match the output's shape {self.shape}")
    if gradient.device != self.device: raise RuntimeError(f"{op}: gradient on {gradient.device} but the output is on {self.device}")
    return gradient.uop.cast(self.dtype)

  def _gradients(self, targets: Sequence["Tensor"], gradient: "Tensor | None", op: str) -> list[UOp | None]:
    """Per target, the gradient graph of this output with respect to it (None where the output does not depend on it)."""
    seed = self._seed_gradient(gradient, op)
    for t in targets:
      if not isinstance(t, Tensor): raise TypeError(f"{op}: targets must be Tensors, not {type(t).__name__}")
      if not t.dtype.is_float: raise RuntimeError(f"{op}: only floating-point tensors have gradients, not {t.dtype.name}")
    grads = compute_gradient(self.uop, seed, [t.uop for t in targets])
    return [grads.get(t.uop) for t in targets]

  def backward(self, gradient: "Tensor | None" = None, create_graph: bool = False) -> None:
    """Accumulate d(self)/d(leaf) into `.grad` of every leaf with requires_grad=True that this output depends on.

    Lazy: the gradients are graphs, realized with whatever reads them (usually an optimizer step).
    Without `create_graph` the stored gradients are detached, as in PyTorch.
    """
    if not self.dtype.is_float: raise RuntimeError(f"backward: only floating-point outputs have gradients, not {self.dtype.name}")
    if not self.requires_grad:
      raise RuntimeError("backward: this tensor does not require grad (no tensor it was computed from has requires_grad=True, "
                         "or it was computed under no_grad or detached)")
    leaves = list(_leaves.values())
    for leaf, g in zip(leaves, self._gradients(leaves, gradient, "backward")):
      if g is None: continue
      if not create_graph: g = UOp(Ops.DETACH, g.dtype, (g,))
      grad = leaf._new(g)
      leaf.grad = grad if leaf.grad is None else leaf.grad + grad

  def gradient(self, *targets: "Tensor", gradient: "Tensor | None" = None) -> list["Tensor"]:
    """d(self)/d(target) for each target, without touching `.grad` (zeros where self does not depend on a target).

    The results are graphs that can be differentiated again (second derivatives), like
    `torch.autograd.grad(..., create_graph=True)`.
    """
    grads = self._gradients(targets, gradient, "gradient")
    return [t._new(g) if g is not None else t.zeros_like() for t, g in zip(targets, grads)]

  def gradient_graph(self, *targets: "Tensor", gradient: "Tensor | None" = None) -> str:
    """The gradient graph of this output with respect to `targets`, as text, before any scheduling or fusion."""
    self._gradients(targets, gradient, "gradient_graph")  # the same checks as gradient()
    return gradient_graph_text(self.uop, self._seed_gradient(gradient, "gradient_graph"), [t.uop for t in targets])

  def to(self, device: str | None = None, dtype: DType | None = None) -> "Tensor":
    """Move to another device (a COPY node) and/or cast."""
    out = self
    if device is not None and isinstance(device, (DType,)): device, dtype = None, device
    if device is not None and canonicalize(device) != self.device:
      out = self._new(_copy_uop(self.uop, self.device, canonicalize(device)))
      out.device = canonicalize(device)
    if dtype is not None: out = out.cast(dtype)
    return out
  def shard(self, devices: Sequence[str], axis: int | None = None) -> Any:
    """One MultiTensor split along `axis` over `devices` (None: replicated on each); see frontend/multi.py."""
    from picograd.frontend.multi import shard
    return shard(self, devices, axis)
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
    record(self.uop)
    return self

  def replace(self, other: "Tensor") -> "Tensor":
    """Point this handle at another tensor's graph (no copy)."""
    if other.shape != self.shape: raise ShapeError(f"replace: shape {other.shape} does not match {self.shape}")
    self.uop = other.uop
    return self

  # ---------------------------------------------------------------- random generator state (samplers: frontend/random.py)
  @staticmethod
  def manual_seed(seed: int = 0) -> None:
    """Seed the counter-based generator: the same seed gives the same numbers on every device."""
    Tensor._seed, Tensor._rng_counter = int(seed), 0

  @staticmethod
  def get_rng_state() -> tuple[int, int]:
    """(seed, numbers drawn so far): all the generator's future draws depend on. Checkpoints save it to resume bit-exactly."""
    return Tensor._seed, Tensor._rng_counter

  @staticmethod
  def set_rng_state(state: Sequence[int]) -> None:
    """Restore a state from `get_rng_state`: the next draws are the ones that followed it."""
    seed, counter = (int(v) for v in state)
    if counter < 0: raise ValueError(f"set_rng_state: the counter must be non-negative, got {counter}")
    Tensor._seed, Tensor._rng_counter = seed, counter

  @staticmethod
  def _random_bits(n: int, device: str | None) -> "Tensor":
    """n uint32 hashes of (seed, counter + element index): lazy and fusable, identical on every device."""
    offset = _draw_counter(n)
    idx = Tensor(UOp(Ops.IOTA, dtypes.int32, (), n), device=device).cast(dtypes.uint32)
    key = _hash32((Tensor._seed * 0x9E3779B9 + 0x632BE5AB) & 0xFFFFFFFF)
    # the offset is data, not a constant, so every call builds the same graph (one schedule, one kernel)
    counter = Tensor(np.array([offset & 0xFFFFFFFF], dtype=np.uint32), device=device)
    from picograd.engine.capture import record_rng_draw
    record_rng_draw(buffer_of(counter.uop), n)  # a JIT replay rewrites this counter instead of rebuilding the graph
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
    if op not in (Ops.CMPLT, Ops.CMPNE) and _half_meets_wide_float(self, other):
      return self.float()._binary(op, other, name, reverse).cast(self.dtype)
    a, b = self._broadcasted(other, name, reverse)
    if op is Ops.ADD and a.dtype == dtypes.bool: op = Ops.OR  # True + True is True (PyTorch), not a 1-bit wraparound
    return a._new(a.uop.alu(op, b.uop))

  # ---------------------------------------------------------------- casts and operators (the ops: frontend/elementwise.py, nn_ops.py)
  def cast(self, dtype: DType | str) -> "Tensor":
    dt = dtypes.from_any(dtype)
    return self if dt == self.dtype else self._new(self.uop.cast(dt))
  def float(self) -> "Tensor": return self.cast(dtypes.float32)
  def half(self) -> "Tensor": return self.cast(dtypes.float16)
  def double(self) -> "Tensor": return self.cast(dtypes.float64)
  def int(self) -> "Tensor": return self.cast(dtypes.int32)
  def long(self) -> "Tensor": return self.cast(dtypes.int64)
  def bool(self) -> "Tensor": return self.cast(dtypes.bool)

  def __add__(self, x: "Tensor | Scalar") -> "Tensor": return self.add(x)
  def __mul__(self, x: "Tensor | Scalar") -> "Tensor": return self.mul(x)
  def __neg__(self) -> "Tensor": return self.neg()
  def __radd__(self, x): return self._binary(Ops.ADD, x, "add", reverse=True)
  def __rmul__(self, x): return self._binary(Ops.MUL, x, "mul", reverse=True)
  def __sub__(self, x): return self.sub(x)
  def __rsub__(self, x): return self.sub(x, reverse=True)
  def __truediv__(self, x): return self.div(x)
  def __rtruediv__(self, x): return self.div(x, reverse=True)
  def __matmul__(self, x): return self.matmul(x)
  def __rmatmul__(self, x): return self._to_tensor(x, "matmul").matmul(self)
  def __iadd__(self, x: "Tensor | Scalar") -> "Tensor": return self.assign(self + x)
  def __isub__(self, x): return self.assign(self - x)
  def __imul__(self, x: "Tensor | Scalar") -> "Tensor": return self.assign(self * x)
  def __itruediv__(self, x): return self.assign(self / x)

  # ---------------------------------------------------------------- runtime checks and iteration
  def _check(self, ok: "Tensor", exception: type[Exception], message: str) -> "Tensor":
    """This tensor, checked when it is computed: where `ok` is false, realizing it raises `exception(message)` (PyTorch
    raises at the op; values here are known only when the kernel runs). The engine reads the kernel's error word."""
    return self._new(UOp(Ops.CHECK, self.dtype, (self.uop, ok._expand_to(self.shape).uop), (exception.__name__, message)))


  def __iter__(self):
    for i in range(len(self)): yield self[i]


# every live leaf with requires_grad=True, by id: backward() fills the .grad of those an output depends on
_leaves: "weakref.WeakValueDictionary[int, Tensor]" = weakref.WeakValueDictionary()


class no_grad(contextlib.ContextDecorator):
  """`with picograd.no_grad():` (or `@picograd.no_grad()`): results computed inside need no gradient and pass none back."""

  def __init__(self) -> None: self._saved: list[bool] = []  # a stack: one decorator instance may be entered recursively

  def __enter__(self) -> None:
    self._saved.append(Tensor.no_grad)
    Tensor.no_grad = True

  def __exit__(self, *exc: object) -> None: Tensor.no_grad = self._saved.pop()


def _detached(uop: UOp) -> UOp:
  """`uop` behind one DETACH. A DETACH directly under it is dropped: one at the top stops the whole result's gradient."""
  src = tuple(s.src[0] if s.op is Ops.DETACH else s for s in uop.src)
  inner = uop if src == uop.src else UOp(uop.op, uop.dtype, src, uop.arg)
  return UOp(Ops.DETACH, uop.dtype, (inner,))


def _graphs_for_grad(tensors: Sequence["Tensor"]) -> dict["Tensor", UOp]:
  """The lazy graphs of the results among `tensors` that gradients must flow through.

  Realizing points a tensor at its buffer, which would cut it off from the leaves it was computed
  from. Such a tensor gets its graph back after the realize: the engine remembers which buffer
  holds that graph's value, so later schedules read the buffer instead of recomputing it.
  """
  return {t: t.uop for t in tensors if t._requires_grad is None and not is_contiguous_view(t.uop) and t.requires_grad}


def _draw_counter(n: int) -> int:
  """Take n numbers from the generator: the counter they start at. Also the JIT's RNG hook (a replay redraws with it)."""
  offset = Tensor._rng_counter
  Tensor._rng_counter += n
  return offset


def _hash32(x: int) -> int:
  x ^= x >> 16; x = (x * 0x7FEB352D) & 0xFFFFFFFF; x ^= x >> 15; x = (x * 0x846CA68B) & 0xFFFFFFFF; x ^= x >> 16
  return x


def _copy_uop(uop: UOp, src_device: str, dst_device: str) -> UOp:
  return UOp(Ops.COPY, uop.dtype, (uop,), (src_device, dst_device))


def _float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
  bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
  rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
  return (rounded >> 16).astype(np.uint16)


def _bfloat16_bits_to_float32(x: np.ndarray) -> np.ndarray:
  return (x.astype(np.uint32) << 16).view(np.float32)


def normal(mean: Tensor | float, std: Tensor | float = 1.0, size: Sequence[int] | None = None, *, dtype: DType | str | None = None,
           device: str | None = None) -> Tensor:
  """PyTorch's `torch.normal`: samples of N(mean, std**2), with `size` for float arguments or the broadcast shape of tensor ones.

  A tensor `mean` or `std` is detached: PyTorch's gradient for them is zero, here the sample needs none.
  """
  tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
  if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
    if size is None: raise TypeError("normal: with a float mean and std, give the output size")
    return Tensor.normal(*_shape_arg((size,)), mean=float(mean), std=float(std), dtype=dtype, device=device)
  if size is not None: raise TypeError("normal: size is only allowed when mean and std are both floats")
  if isinstance(std, Tensor):
    if std.numel() and std.min().item() < 0: raise RuntimeError("normal expects all elements of std >= 0.0")
  elif not std >= 0: raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
  shape = _broadcast_shape("normal", *(t.shape for t in tensors))
  dev = tensors[0].device
  m = mean.detach() if isinstance(mean, Tensor) else mean
  s = std.detach() if isinstance(std, Tensor) else std
  out = Tensor.randn(shape, device=dev) * s + m
  return out.cast(dtypes.from_any(dtype)) if dtype is not None else out


register_frontend(Tensor, _draw_counter)  # the JIT finds tensors among a step's arguments and redraws random counters through these
