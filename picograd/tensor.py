"""The Tensor API: eager-looking, PyTorch-named operations that record a lazy UOp graph.

A `Tensor` is a mutable handle on an immutable UOp. Every operation checks shapes, dtypes and
devices right away (so errors point at the line the user wrote) and builds new nodes; nothing
runs until a value is needed (`numpy()`, `item()`, `realize()`). Only a small set of primitives
exists in the IR; everything else here (sub, div, exp, tanh, softmax, matmul, ...) is composed
from them, so it gets gradients and fusion for free.
"""
from __future__ import annotations
import contextlib, math, weakref
from typing import Any, Sequence
import numpy as np
from picograd.dtype import DType, dtypes, promote, result_type_with_scalar
from picograd.helpers import prod, ShapeError
from picograd.ir.ops import UOp, Ops
from picograd.ir.gradient import compute_gradient, nodes_between, gradient_graph_text
from picograd.runtime.device import Buffer, canonicalize
from picograd.engine.jit import register_frontend
from picograd.indexing import getitem
from picograd.frontend.conv import ConvMixin
from picograd.frontend.math import MathMixin
from picograd.frontend.random import RandomMixin
from picograd.frontend.scan import ScanMixin

Scalar = int | float | bool


def _normalize_axis(op: str, axis: int, ndim: int) -> int:
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
    raise TypeError(f"{op}: a dimension must be an int, not {type(axis).__name__}")
  n = max(ndim, 1)  # a 0-d tensor accepts dims 0 and -1, as in PyTorch
  if not -n <= axis < n:
    raise IndexError(f"{op}: dimension {axis} is out of range for a tensor with {ndim} dimension(s) "
                     f"(expected to be in range of [{-n}, {n - 1}], but got {axis})")
  return int(axis) + ndim if axis < 0 else int(axis)


def _unique_axes(op: str, axes: Sequence[int], given: Any) -> None:
  """PyTorch refuses a dim named twice (sum((0, 0)), flip((0, 0)), permute(0, 0))."""
  if len(set(axes)) != len(axes):
    repeated = next(a for a in axes if list(axes).count(a) > 1)
    raise ShapeError(f"{op}: dim {repeated} appears multiple times in the list of dims {tuple(given)}")


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


def _shape_arg(shape: tuple, op: str = "shape") -> tuple[int, ...]:
  """Accept f(2, 3), f((2, 3)) and f([2, 3]); every size must be an int (PyTorch: TypeError for 2.5, None, "a")."""
  if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
  for s in shape:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
      raise TypeError(f"{op}: sizes must be ints, not {type(s).__name__} ({s!r}) in {tuple(shape)}")
  return tuple(int(s) for s in shape)


def _new_shape(shape: tuple, op: str) -> tuple[int, ...]:
  """The shape of a tensor about to be created: ints, none negative."""
  shape = _shape_arg(shape, op)
  if any(s < 0 for s in shape):
    raise RuntimeError(f"{op}: Trying to create tensor with negative dimension {min(shape)}: {list(shape)}")
  return shape


class Tensor(ConvMixin, ScanMixin, MathMixin, RandomMixin):
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
    if isinstance(data, (bool, int, float)) and not isinstance(data, np.generic):
      dt = dtype or dtypes.of_python(data)
      self.uop = UOp.const(dt, data)
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
    if Tensor.no_grad and _leaves and uop.op is not Ops.DETACH: uop = _detached(uop)
    out.uop, out.device, out.grad = uop, self.device, None
    out._requires_grad = None
    return out

  # ---------------------------------------------------------------- realizing
  def realize(self, *others: "Tensor") -> "Tensor":
    """Run the kernels needed for this tensor (and `others`) now."""
    from picograd.engine.realize import realize
    graphs = _graphs_for_grad([self, *others])
    tensors = [self, *others]
    for t, u in zip(tensors, realize(tensors)): t.uop = u  # the engine returns buffers; each tensor points itself at its own
    for t, u in graphs.items(): t.uop = u
    return self

  def numpy(self) -> np.ndarray:
    from picograd.engine.realize import realize, buffer_of, check_errors
    graphs = _graphs_for_grad([self])
    (self.uop,) = realize([self])
    check_errors()  # runtime checks of kernels on asynchronous devices (CUDA) are read where the host waits anyway
    buf = buffer_of(self.uop)
    for t, u in graphs.items(): t.uop = u
    host = buf.numpy()
    if self.dtype == dtypes.bfloat16: host = _bfloat16_bits_to_float32(host)
    return host.reshape(self.shape)

  def item(self) -> Scalar:
    if self.numel() != 1: raise RuntimeError(f"item: only a tensor with one element can become a Python scalar, not shape {self.shape}")
    return self.numpy().reshape(()).item()
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
    from picograd.engine.realize import realize
    from picograd.engine.schedule import is_contiguous_view
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
    shape = _new_shape((shape,) if isinstance(shape, (int, np.integer)) else tuple(shape), "full")
    if isinstance(fill_value, (np.number, np.bool_)): fill_value = fill_value.item()
    if not isinstance(fill_value, (bool, int, float)): raise TypeError(f"full: fill_value must be a number, not {type(fill_value).__name__}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.of_python(fill_value)
    const = UOp.const(dt, fill_value)
    return Tensor(const.reshape((1,) * len(shape)).expand(shape), device=device, requires_grad=requires_grad)
  @staticmethod
  def zeros(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return Tensor.full(_new_shape(shape, "zeros"), 0.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
  @staticmethod
  def ones(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return Tensor.full(_new_shape(shape, "ones"), 1.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
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
    for v in (start, stop, step):
      if isinstance(v, Tensor) or not isinstance(v, (int, float, np.number)): raise TypeError(f"arange: start, end and step must be numbers, not {type(v).__name__}")
      if not math.isfinite(v): raise RuntimeError(f"arange: unsupported range: {start} -> {stop} (step {step})")
    if step == 0: raise RuntimeError("arange: step must be nonzero")
    if (stop - start) * step < 0: raise RuntimeError(f"arange: upper bound {stop} and lower bound {start} inconsistent with step sign ({step})")
    n = max(0, math.ceil((stop - start) / step))
    is_float = any(isinstance(v, float) for v in (start, stop, step))
    dt = dtypes.from_any(dtype) if dtype is not None else (dtypes.default_float if is_float else dtypes.int64)
    iota = Tensor(UOp(Ops.IOTA, dtypes.int32, (), n), device=device)
    out = (iota.cast(dt) * step + start) if dt.is_float else (iota.cast(dt) * int(step) + int(start))
    out.requires_grad = requires_grad
    return out.cast(dt)

  @staticmethod
  def linspace(start: float, end: float, steps: int, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    """`steps` evenly spaced values from start to end, as PyTorch computes them.

    The first half counts up from `start` and the second half down from `end`, so both ends are
    exact. Integer dtypes take start and end as integers and step in float64, truncating each value.
    """
    if steps < 0: raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    if dt.is_float: compute, start, end = dt, float(start), float(end)
    else: compute, start, end = dtypes.float64, float(int(start)), float(int(end))  # int(): PyTorch casts them to the dtype first
    if steps <= 1: return Tensor.full((steps,), start, dtype=compute, device=device).cast(dt)
    step = UOp.const(compute, end - start).arg / (steps - 1)  # the span as the dtype holds it, divided in float64
    idx = Tensor.arange(steps, dtype=dtypes.int32, device=device)
    up, down = idx.cast(compute) * step + start, end - (steps - 1 - idx).cast(compute) * step
    return _where(idx < steps // 2, up, down).cast(dt)

  @staticmethod
  def eye(n: int, m: int | None = None, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    m = n if m is None else m
    for v in (n, m):
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)): raise TypeError(f"eye: sizes must be ints, not {type(v).__name__}")
      if v < 0: raise RuntimeError(f"eye: sizes must be greater or equal to 0, got {v}")
    rows = Tensor.arange(n, dtype=dtypes.int32, device=device).reshape(n, 1)
    cols = Tensor.arange(m, dtype=dtypes.int32, device=device).reshape(1, m)
    return (rows == cols).cast(dtypes.from_any(dtype) if dtype is not None else dtypes.default_float)

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
    from picograd.engine.realize import buffer_of
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

  @staticmethod
  def rand(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Uniform samples in [0, 1)."""
    shape = _new_shape(shape, "rand")
    bits = Tensor._random_bits(prod(shape), device)
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    out = (bits._shr(8).cast(dtypes.float32) * (1.0 / (1 << 24))).cast(dt).reshape(shape)
    out.requires_grad = requires_grad
    return out

  @staticmethod
  def randn(*shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    """Standard normal samples (Box-Muller on two uniform streams)."""
    shape = _new_shape(shape, "randn")
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
    if high <= low: raise RuntimeError(f"randint: empty range [{low}, {high}): 'from' must be less than 'to'")
    u = Tensor.rand(*_new_shape(size if isinstance(size, (tuple, list)) else (size,), "randint"), device=device)
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
    if op not in (Ops.CMPLT, Ops.CMPNE) and _half_meets_wide_float(self, other):
      return self.float()._binary(op, other, name, reverse).cast(self.dtype)
    a, b = self._broadcasted(other, name, reverse)
    if op is Ops.ADD and a.dtype == dtypes.bool: op = Ops.OR  # True + True is True (PyTorch), not a 1-bit wraparound
    return a._new(a.uop.alu(op, b.uop))

  # ---------------------------------------------------------------- arithmetic
  def add(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.ADD, x, "add")
  def mul(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MUL, x, "mul")
  def neg(self) -> "Tensor":
    if self.dtype == dtypes.bool: raise RuntimeError("neg: negation of a bool tensor is not supported; use logical_not()")
    return self._new(self.uop.alu(Ops.NEG))
  def sub(self, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
    if _half_meets_wide_float(self, x): return self.float().sub(x, reverse).cast(self.dtype)
    a, b = self._broadcasted(x, "sub", reverse)
    if a.dtype == dtypes.bool: raise RuntimeError("sub: subtraction of bool tensors is not supported; use ^ or logical_xor")
    return a._new(a.uop.alu(Ops.ADD, b.uop.alu(Ops.NEG)))
  def div(self, x: "Tensor | Scalar", reverse: bool = False, rounding_mode: str | None = None) -> "Tensor":
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
  def _floordiv_int(self, b: "Tensor") -> "Tensor":
    q = self._new(self.uop.alu(Ops.IDIV, b.uop))
    # C division truncates; step down when the signs differ and there is a remainder
    fix = ((self < 0) != (b < 0)) & (q * b != self)
    return _where(fix, q - 1, q)
  def __floordiv__(self, x): return self.div(x, rounding_mode="floor")
  def __rfloordiv__(self, x): return self._to_tensor(x, "floordiv").div(self, rounding_mode="floor")
  def __mod__(self, x):
    a, b = self._broadcasted(x, "mod")
    if a.dtype.is_float: return _mod_float(a, b)
    if a.dtype.is_int:  # C's remainder moved to the divisor's sign (and its division-by-zero check kept alive)
      r = a._new(a.uop.alu(Ops.MOD, b.uop))
      return _where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
    return a - a.div(b, rounding_mode="floor") * b
  def __rmod__(self, x): return self._to_tensor(x, "mod").__mod__(self)

  def pow(self, x: "Tensor | Scalar", reverse: bool = False) -> "Tensor":
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
  def sigmoid(self) -> "Tensor":
    # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) below: the exponent is never positive, so no branch overflows, and the
    # backward never meets 0 * inf (1/(1+e^-x) alone has a NaN gradient once e^-x overflows)
    x = self._float()
    e = _where(x >= 0, -x, x).exp()
    return _where(x >= 0, 1.0, e) / (1 + e)
  def tanh(self) -> "Tensor": return 2.0 * (2.0 * self._float()).sigmoid() - 1.0
  def relu(self) -> "Tensor": return _where(self <= 0, 0, self)  # NaN passes through, with gradient 1 (PyTorch)
  def leaky_relu(self, negative_slope: float = 0.01) -> "Tensor": return _where(self > 0, self, self * negative_slope)
  def abs(self) -> "Tensor":
    if self.dtype == dtypes.bool or self.dtype.is_unsigned: return self
    if self.dtype.is_int: return _where(self < 0, -self, self)  # INT_MIN stays INT_MIN, as in PyTorch
    return self * self.sign() + 0.0  # NaN stays NaN; the gradient is sign(x), 0 at 0 and at NaN (PyTorch); + 0.0: abs(-0.0) is +0.0
  def sign(self) -> "Tensor": return (self > 0).cast(self.dtype) - (self < 0).cast(self.dtype)
  def square(self) -> "Tensor": return self * self
  def trunc(self) -> "Tensor":
    if not self.dtype.is_float: return self
    # through int64 is exact for |x| < 2**63; larger floats are already integers. A zero keeps x's sign (trunc(-0.5) is -0.0)
    small = self.abs() < 2.0**62
    # the cast sees 0 where it is not taken: a NaN or infinity cast to an integer is undefined behaviour in LLVM
    t = _where(small, self, 0.0).cast(dtypes.int64).cast(self.dtype)
    return _where(small, _where(t == 0, self * 0, t), self)
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
    out = _where(diff > 0.5, f + 1, _where(diff < 0.5, f, _where(f_is_even, f, f + 1)))
    return _where(out == 0, self * 0, out)  # round(-0.4) is -0.0
  def _float(self) -> "Tensor": return self if self.dtype.is_float else self.cast(dtypes.default_float)

  def maximum(self, x: "Tensor | Scalar") -> "Tensor": return self._binary(Ops.MAX, x, "maximum")
  def minimum(self, x: "Tensor | Scalar") -> "Tensor":
    a, b = self._broadcasted(x, "minimum")
    if a.dtype == dtypes.bool: return a & b
    # ~x = -1 - x reverses the order of integers without overflowing at INT_MIN (-x does not)
    if a.dtype.is_int: return ~((~a).maximum(~b))
    return -((-a).maximum(-b))
  def clip(self, min: Scalar | "Tensor | None" = None, max: Scalar | "Tensor | None" = None) -> "Tensor":  # noqa: A002 (PyTorch's names)
    """min(max(x, min), max) like torch.clamp: NaN stays NaN; the gradient passes where min <= x <= max (bounds included)."""
    if min is None and max is None: raise RuntimeError("clip: at least one of min and max must be given")
    out = self
    if min is not None: out = _where(out < min, min, out)
    if max is not None: out = _where(out > max, max, out)
    if out.dtype.is_float and self.dtype.is_float: out = _where(self.isnan(), self.detach(), out)  # NaN: no gradient (PyTorch)
    return out
  clamp = clip

  def where(self, condition: "Tensor", other: "Tensor | Scalar") -> "Tensor":
    """PyTorch's `x.where(condition, y)`: x where condition holds, else y."""
    _check_condition(condition, "where")
    return _where(condition, self, other)

  # comparisons (results are bool)
  def __lt__(self, x): return self._binary(Ops.CMPLT, x, "lt")
  def __gt__(self, x): return self._binary(Ops.CMPLT, x, "gt", reverse=True)
  def __le__(self, x):
    a, b = self._broadcasted(x, "le")
    # not (a > b) would be True for NaN: floats need the ordered form
    return (a < b) | (a == b) if a.dtype.is_float else (a > b).logical_not()
  def __ge__(self, x):
    a, b = self._broadcasted(x, "ge")
    return (a > b) | (a == b) if a.dtype.is_float else (a < b).logical_not()
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
    # PyTorch's type for an op with no kernel for the dtype
    if a.dtype.is_float: raise NotImplementedError(f"{name}: bitwise operations need integer or bool tensors, not {a.dtype.name}")
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
    _unique_axes(op, axes, axis)
    return axes if self.ndim else ()  # a 0-d tensor accepts dim 0 or -1 (PyTorch) and has nothing to reduce

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
    _check_nonempty(self, axis, "max")
    return self._reduce(Ops.MAX, axis, keepdim, "max")

  def min(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    _check_nonempty(self, axis, "min")
    if self.dtype == dtypes.bool: return self.logical_not().max(axis, keepdim).logical_not()
    if self.dtype.is_int: return ~((~self).max(axis, keepdim))  # -x overflows at INT_MIN; ~x reverses the order exactly
    return -((-self).max(axis, keepdim))

  def mean(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    n = prod(self.shape[a] for a in self._axes("mean", axis))
    x = self._float()
    if x.dtype in (dtypes.float16, dtypes.bfloat16):  # the float32 sum, divided before it is rounded back (it may overflow)
      return x.cast(dtypes.float32).mean(axis, keepdim).cast(x.dtype)
    return x.sum(axis, keepdim) * (1.0 / n if n else float("nan"))

  def var(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None, unbiased: bool | None = None) -> "Tensor":
    axis = dim if dim is not None else axis
    if unbiased is not None: correction = int(unbiased)
    n = prod(self.shape[a] for a in self._axes("var", axis))
    x = self._float()
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).var(axis, keepdim, correction).cast(x.dtype)
    mean = x.mean(axis, keepdim=True)
    # with no degrees of freedom left the gradient is ±inf; the mean's share of it (exactly 0) would make that inf - inf
    centered = x - (mean.detach() if n <= correction else mean)
    # a true division: with correction >= n the sum over 0 is inf (0/0 = NaN for constant rows), as in PyTorch
    return (centered * centered).sum(axis, keepdim) / float(max(n - correction, 0))

  def std(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, correction: int = 1, dim=None, unbiased: bool | None = None) -> "Tensor":
    return self.var(axis, keepdim, correction, dim, unbiased).sqrt()

  def argmax(self, axis: int | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    """Index of the first maximum (int64), like PyTorch."""
    axis = dim if dim is not None else axis
    if axis is None: return self.flatten().argmax(0, keepdim=False) if not keepdim else self.flatten().argmax(0).reshape((1,) * self.ndim)
    ax = _normalize_axis("argmax", axis, self.ndim)
    if self.ndim == 0: return Tensor.zeros((), dtype=dtypes.int64, device=self.device)
    n = self.shape[ax]
    if n == 0: raise IndexError(f"argmax: expected reduction dim {ax} to have non-zero size (shape {self.shape})")
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
    return (~self if self.dtype.is_int else -self).argmax(axis, keepdim)  # ~x reverses integer order exactly, even at INT_MIN

  def logsumexp(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dim=None) -> "Tensor":
    axis = dim if dim is not None else axis
    axes = self._axes("logsumexp", axis)  # a bad axis is reported as logsumexp's, not as the max inside it
    x = self._float()
    if any(self.shape[a] == 0 for a in axes):  # log of an empty sum, as in PyTorch
      return x.sum(axis, keepdim).full_like(float("-inf"))
    m = x.max(axis, keepdim=True).detach()
    m = _where(m.isinf(), 0.0, m)
    out = (x - m).exp().sum(axis, keepdim=True).log() + m
    return out if keepdim else out.reshape(tuple(d for i, d in enumerate(self.shape) if i not in self._axes("logsumexp", axis)))

  def softmax(self, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("softmax", dim if dim is not None else axis, self.ndim)
    x = self._float()
    if x.numel() == 0: return x  # an empty axis has no maximum to subtract; the result is empty
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).softmax(axis).cast(x.dtype)  # a half sum overflows
    e = (x - x.max(axis, keepdim=True).detach()).exp()
    return e / e.sum(axis, keepdim=True)

  def log_softmax(self, axis: int = -1, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("log_softmax", dim if dim is not None else axis, self.ndim)
    x = self._float()
    if x.numel() == 0: return x
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.cast(dtypes.float32).log_softmax(axis).cast(x.dtype)
    shifted = x - x.max(axis, keepdim=True).detach()
    return shifted - shifted.exp().sum(axis, keepdim=True).log()

  def cumsum(self, axis: int = 0, dim: int | None = None) -> "Tensor":
    axis = _normalize_axis("cumsum", dim if dim is not None else axis, self.ndim)
    n = self.shape[axis]
    if n == 0: return self if self.dtype.is_float else self.cast(dtypes.int64)  # nothing to add up; sum's dtype
    x = self.transpose(axis, -1)
    # pad to 2n-1 then take n sliding windows of length n: windows[i] covers x[..i]
    padded = x.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((n - 1, 0),))
    win = padded.unsqueeze(-2).expand(*x.shape[:-1], n, 2 * n - 1 if n else 0)
    flat = win.reshape(*x.shape[:-1], n * (2 * n - 1)) if n else win
    if n: flat = flat.pad(tuple((0, 0) for _ in range(x.ndim - 1)) + ((0, n),)).reshape(*x.shape[:-1], n, 2 * n)[..., :n]
    return flat.sum(-1).transpose(axis, -1) if n else self

  # ---------------------------------------------------------------- movement
  def reshape(self, *shape) -> "Tensor":
    shape = _shape_arg(shape, "reshape")
    if any(s < -1 for s in shape): raise ShapeError(f"reshape: invalid shape dimension {min(shape)} in {shape}")
    if shape.count(-1) > 1: raise ShapeError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
      known = prod(s for s in shape if s != -1)
      if known == 0 or self.numel() % known: raise ShapeError(f"reshape: cannot reshape {self.shape} into {shape}")
      shape = tuple(self.numel() // known if s == -1 else s for s in shape)
    if any(s < 0 for s in shape) or prod(shape) != self.numel():
      raise ShapeError(f"reshape: cannot reshape tensor of shape {self.shape} ({self.numel()} elements) into {shape}")
    return self._new(self.uop.reshape(shape))
  def view(self, *shape) -> "Tensor":
    """reshape; given a dtype instead of a shape, the same bits read as that dtype (`bitcast`), as in PyTorch."""
    if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list)): return self.bitcast(shape[0])
    return self.reshape(*shape)

  def permute(self, *order) -> "Tensor":
    order = _shape_arg(order, "permute")
    if len(order) != self.ndim: raise ShapeError(f"permute: {order} is not a permutation of the {self.ndim} dimensions of {self.shape}")
    order = tuple(_normalize_axis("permute", a, self.ndim) for a in order)
    _unique_axes("permute", order, order)
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
    shape = _shape_arg(shape, "expand")
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
    if s > e: raise RuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
    return self.reshape(self.shape[:s] + (prod(self.shape[s:e + 1]),) + self.shape[e + 1:])
  def unflatten(self, dim: int, sizes: Sequence[int]) -> "Tensor":
    dim = _normalize_axis("unflatten", dim, self.ndim)
    return self.reshape(self.shape[:dim] + tuple(sizes) + self.shape[dim + 1:])

  def pad(self, padding: Sequence[int] | Sequence[tuple[int, int]], value: Scalar = 0.0, mode: str = "constant") -> "Tensor":
    """Pad with `value`. Either PyTorch's flat form (last dim first: left, right, top, bottom, ...) or one (before, after) pair per dim.

    Negative amounts crop, as in PyTorch.
    """
    if padding and isinstance(padding[0], (tuple, list)):
      if len(padding) != self.ndim: raise ShapeError(f"pad: {len(padding)} (before, after) pairs for a tensor of shape {self.shape}")
      pairs = [tuple(p) for p in padding]
    else:
      if len(padding) % 2 or len(padding) // 2 > self.ndim:
        raise ShapeError(f"pad: padding {tuple(padding)} does not fit a tensor of shape {self.shape}")
      pairs = [(0, 0)] * self.ndim
      for i in range(len(padding) // 2): pairs[self.ndim - 1 - i] = (padding[2 * i], padding[2 * i + 1])
    if mode != "constant": return self._pad_mode(pairs, mode)  # reflect, replicate, circular: frontend/conv.py
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
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = [_normalize_axis("flip", d, self.ndim) for d in dims]
    _unique_axes("flip", axes, dims)
    return self._new(self.uop.flip(tuple(i in axes for i in range(self.ndim))))

  def repeat(self, *repeats) -> "Tensor":
    """Tile the tensor (PyTorch's repeat): each dim i is repeated repeats[i] times."""
    repeats = _shape_arg(repeats, "repeat")
    if any(r < 0 for r in repeats): raise RuntimeError(f"repeat: repeat counts must be non-negative, got {repeats}")
    if len(repeats) < self.ndim: raise ShapeError(f"repeat: {len(repeats)} repeat counts for a tensor of shape {self.shape}")
    base = (1,) * (len(repeats) - self.ndim) + self.shape
    x = self.reshape(base)
    interleaved = tuple(v for d in base for v in (1, d))
    expanded = tuple(v for r, d in zip(repeats, base) for v in (r, d))
    return x.reshape(interleaved).expand(expanded).reshape(tuple(r * d for r, d in zip(repeats, base)))

  def chunk(self, chunks: int, dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("chunk", dim, self.ndim)
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)): raise TypeError(f"chunk: chunks must be an int, not {type(chunks).__name__}")
    if chunks <= 0: raise RuntimeError(f"chunk: chunks must be greater than 0, got {chunks}")
    step = math.ceil(self.shape[dim] / chunks)
    return self.split(step, dim)

  def split(self, sizes: int | Sequence[int], dim: int = 0) -> list["Tensor"]:
    dim = _normalize_axis("split", dim, self.ndim)
    n = self.shape[dim]
    if isinstance(sizes, (int, np.integer)):
      if sizes < 0 or (sizes == 0 and n != 0): raise RuntimeError(f"split: split_size must be positive (0 only for an empty dimension), got {sizes} for dimension {dim} of {self.shape}")
      sizes = [min(sizes, n - i) for i in range(0, n, max(sizes, 1))]
    elif any(s < 0 for s in _shape_arg(tuple(sizes), "split")): raise RuntimeError(f"split: sizes must be non-negative, got {list(sizes)}")
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
    if self.ndim < 2: raise RuntimeError(f"{'tril' if lower else 'triu'}: input must have at least 2 dimensions, got shape {self.shape}")
    r, c = self.shape[-2], self.shape[-1]
    rows = Tensor.arange(r, dtype=dtypes.int32, device=self.device).reshape(r, 1)
    cols = Tensor.arange(c, dtype=dtypes.int32, device=self.device).reshape(1, c)
    keep = (cols <= rows + diagonal) if lower else (cols >= rows + diagonal)
    return _where(keep, self, self.zeros_like())  # a tensor zero keeps bool bool (a Python 0 would promote it)

  def masked_fill(self, mask: "Tensor", value: Scalar) -> "Tensor":
    _check_condition(mask, "masked_fill")
    out = _where(mask, value, self)
    if out.shape != self.shape: raise ShapeError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's {self.shape}")
    return out

  def _check(self, ok: "Tensor", exception: type[Exception], message: str) -> "Tensor":
    """This tensor, checked when it is computed: where `ok` is false, realizing it raises `exception(message)` (PyTorch
    raises at the op; values here are known only when the kernel runs). The engine reads the kernel's error word."""
    return self._new(UOp(Ops.CHECK, self.dtype, (self.uop, ok._expand_to(self.shape).uop), (exception.__name__, message)))

  # ---------------------------------------------------------------- indexing
  def __getitem__(self, index: Any) -> "Tensor":
    return getitem(self, index, Tensor)

  def __setitem__(self, index: Any, value: Any) -> None:
    raise TypeError("picograd tensors do not support item assignment; build the new tensor with where/pad/cat, or use assign()")

  def gather(self, dim: int, index: "Tensor") -> "Tensor":
    """out[i][j] = self[index[i][j]][j] for dim=0 (PyTorch's gather)."""
    dim = _normalize_axis("gather", dim, self.ndim)
    if not isinstance(index, Tensor): raise TypeError(f"gather: index must be a Tensor, not {type(index).__name__}")
    if not index.dtype.is_int: raise RuntimeError(f"gather: index must be an integer tensor, not {index.dtype.name}")
    if index.device != self.device: raise RuntimeError(f"gather: index on {index.device} but the input is on {self.device}")
    if index.ndim != self.ndim: raise ShapeError(f"gather: index of shape {index.shape} must have as many dims as {self.shape}")
    n = self.shape[dim]
    index = index._check((index >= 0) & (index < n), RuntimeError, f"gather: index out of bounds for dimension {dim} with size {n}")
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
    batch = _broadcast_shape(f"matmul of {self.shape} and {other.shape}: batch dimensions", a.shape[:-2], b.shape[:-2])
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

  # ---------------------------------------------------------------- composites for neural networks (PyTorch's names and semantics)
  def erf(self) -> "Tensor":
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

  def gelu(self, approximate: str = "none") -> "Tensor":
    """x * Phi(x) with the exact erf form, or PyTorch's tanh approximation (`approximate="tanh"`)."""
    x = self._float()
    if approximate == "tanh": return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).tanh())
    if approximate != "none": raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return 0.5 * x * (1 + (x * (1 / math.sqrt(2))).erf())

  def silu(self) -> "Tensor": return self._float() * self.sigmoid()
  def softplus(self, beta: float = 1.0, threshold: float = 20.0) -> "Tensor":
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's overflow guard)."""
    x = self._float()
    linear = x * beta > threshold
    # the log branch sees 0 where it is not taken, so its exp cannot overflow into a NaN gradient
    return _where(linear, x, _where(linear, 0.0, x * beta).exp().log1p() * (1 / beta))

  def layer_norm(self, normalized_shape: int | Sequence[int], weight: "Tensor | None" = None, bias: "Tensor | None" = None,
                 eps: float = 1e-5) -> "Tensor":
    """Normalize over the trailing `normalized_shape` dims to zero mean and unit biased variance, then scale and shift."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if self.ndim < len(shape) or self.shape[self.ndim - len(shape):] != shape:
      raise ShapeError(f"layer_norm: input of shape {self.shape} does not end in the normalized shape {shape}")
    axes = tuple(range(self.ndim - len(shape), self.ndim))
    x = self._float()
    centered = x - x.mean(axes, keepdim=True)
    out = centered * ((centered * centered).mean(axes, keepdim=True) + eps).rsqrt()
    if weight is not None: out = out * weight
    return out + bias if bias is not None else out

  def dropout(self, p: float = 0.5, training: bool | None = None) -> "Tensor":
    """Zero each element with probability p and scale the rest by 1/(1-p); the identity when not training.

    `training=None` follows `Tensor.training`.
    """
    if not 0 <= p <= 1: raise ValueError(f"dropout: probability must be between 0 and 1, got {p}")
    if not (Tensor.training if training is None else training) or p == 0: return self
    if p == 1: return self * 0
    keep = Tensor.rand(*self.shape, device=self.device) >= p
    return _where(keep, self * (1 / (1 - p)), 0)

  def one_hot(self, num_classes: int = -1) -> "Tensor":
    """int64 one-hot vectors along a new last dim. `num_classes=-1` reads the largest index (this realizes the tensor)."""
    if self.dtype.is_float or self.dtype == dtypes.bool: raise RuntimeError(f"one_hot: indices must be integers, not {self.dtype.name}")
    if num_classes == -1: num_classes = int(self.max().item()) + 1
    checked = self._check(self >= 0, RuntimeError, "one_hot: Class values must be non-negative.")
    checked = checked._check(checked < num_classes, RuntimeError, "one_hot: Class values must be smaller than num_classes.")
    return (checked.unsqueeze(-1) == Tensor.arange(num_classes, dtype=self.dtype, device=self.device)).cast(dtypes.int64)

  def scaled_dot_product_attention(self, key: "Tensor", value: "Tensor", attn_mask: "Tensor | None" = None, dropout_p: float = 0.0,
                                   is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> "Tensor":
    """softmax(q k^T * scale + mask) v with q = self. A bool `attn_mask` marks the pairs that may attend; a float one is added.

    `is_causal` lets query i see keys 0..i (the mask is aligned at the top left, as in PyTorch).
    `enable_gqa` (grouped-query attention): key and value have fewer heads (dim -3) than the query,
    a divisor of its count; each key/value head serves that many consecutive query heads.
    """
    op = "scaled_dot_product_attention"
    if is_causal and attn_mask is not None: raise ValueError(f"{op}: pass either attn_mask or is_causal, not both")
    for name, t in (("key", key), ("value", value)):
      if not isinstance(t, Tensor): raise TypeError(f"{op}: {name} must be a Tensor, not {type(t).__name__}")
      if t.ndim < 2 or self.ndim < 2: raise ShapeError(f"{op}: query, key and value need at least 2 dimensions, got {self.shape}, {key.shape}, {value.shape}")
    if attn_mask is not None and not isinstance(attn_mask, Tensor): raise TypeError(f"{op}: attn_mask must be a Tensor, not {type(attn_mask).__name__}")
    if enable_gqa and self.ndim >= 3 and key.ndim >= 3 and key.shape[-3] != self.shape[-3]:
      heads, kv_heads = self.shape[-3], key.shape[-3]
      if kv_heads == 0 or heads % kv_heads or value.ndim < 3 or value.shape[-3] != kv_heads:
        raise ShapeError(f"{op}: with enable_gqa, the heads of key {key.shape} and value {value.shape} (dim -3) must divide the query's "
                         f"{heads} ({self.shape})")
      key, value = _repeat_heads(key, heads // kv_heads), _repeat_heads(value, heads // kv_heads)
    scale = 1 / math.sqrt(self.shape[-1]) if scale is None else scale
    scores = self.matmul(key.transpose(-2, -1)) * scale
    if is_causal:
      n_q, n_k = self.shape[-2], key.shape[-2]
      rows = Tensor.arange(n_q, dtype=dtypes.int32, device=self.device).reshape(n_q, 1)
      attn_mask = Tensor.arange(n_k, dtype=dtypes.int32, device=self.device).reshape(1, n_k) <= rows
    if attn_mask is not None:
      scores = _where(attn_mask, scores, float("-inf")) if attn_mask.dtype == dtypes.bool else scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p > 0: weights = weights.dropout(dropout_p, training=True)
    return weights.matmul(value)

  # ---------------------------------------------------------------- losses
  def cross_entropy(self, target: "Tensor", ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                    weight: "Tensor | None" = None) -> "Tensor":
    """Cross-entropy of logits `self` (classes on dim 1, or dim 0 for a single sample) against class indices or probabilities.

    Integer targets have the logits' shape without the class dim; entries equal to `ignore_index`
    add nothing and are left out of the mean. Float targets are class probabilities of the logits' shape.
    `weight` (one per class) scales each class's terms; with integer targets the mean divides by the
    summed weights of the targets, as in PyTorch (with probability targets, by the number of samples).
    """
    if not 0 <= label_smoothing <= 1: raise RuntimeError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(target, Tensor): raise TypeError(f"cross_entropy: target must be a Tensor, not {type(target).__name__}")
    class_dim = 1 if self.ndim >= 2 else 0
    w = _class_weight(self, weight, class_dim, "cross_entropy")
    logp = self.log_softmax(class_dim)
    if target.dtype.is_float:
      if target.shape != self.shape: raise ShapeError(f"cross_entropy: probability targets of shape {target.shape} must match the logits' {self.shape}")
      probs = target * (1 - label_smoothing) + label_smoothing / self.shape[class_dim] if label_smoothing else target
      if w is not None: probs = probs * w.reshape([-1 if d == class_dim else 1 for d in range(self.ndim)])
      return _reduce_loss(-(logp * probs).sum(class_dim), reduction, "cross_entropy")
    return _nll(logp, target, ignore_index, reduction, label_smoothing, "cross_entropy", w)

  def nll_loss(self, target: "Tensor", ignore_index: int = -100, reduction: str = "mean", weight: "Tensor | None" = None) -> "Tensor":
    """Negative log-likelihood of log-probabilities `self` (classes on dim 1, or dim 0 for one sample) at integer `target`.

    `weight` (one per class) scales each sample's term by its target's weight; the mean divides by the summed weights.
    """
    if not isinstance(target, Tensor): raise TypeError(f"nll_loss: target must be a Tensor, not {type(target).__name__}")
    x = self._float()
    return _nll(x, target, ignore_index, reduction, 0.0, "nll_loss", _class_weight(x, weight, 1 if self.ndim >= 2 else 0, "nll_loss"))

  def mse_loss(self, target: "Tensor", reduction: str = "mean") -> "Tensor":
    diff = self - target
    return _reduce_loss(diff * diff, reduction, "mse_loss")

  def binary_cross_entropy(self, target: "Tensor", reduction: str = "mean") -> "Tensor":
    """-(y log p + (1-y) log(1-p)) for probabilities p = self; logs are clamped at -100, as PyTorch does."""
    p = self._float()
    loss = -(target * p.log().maximum(-100.0) + (1 - target) * (1 - p).log().maximum(-100.0))
    return _reduce_loss(loss, reduction, "binary_cross_entropy")

  def binary_cross_entropy_with_logits(self, target: "Tensor", reduction: str = "mean", pos_weight: "Tensor | None" = None) -> "Tensor":
    """Binary cross-entropy of sigmoid(self), in the form that cannot overflow: (1-y) x + w (log(1 + e^-|x|) + max(-x, 0))."""
    x = self._float()
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    # -|x| spelled as a where, so that x = 0 (zero-initialized logits) gets the one-sided derivative, not abs's 0
    neg_abs = _where(x >= 0, -x, x)
    loss = (1 - target) * x + log_weight * (neg_abs.exp().add(1).log() + (-x).relu())
    return _reduce_loss(loss, reduction, "binary_cross_entropy_with_logits")

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
  from picograd.engine.schedule import is_contiguous_view
  return {t: t.uop for t in tensors if t._requires_grad is None and not is_contiguous_view(t.uop) and t.requires_grad}


def _half_meets_wide_float(x: Tensor, scalar: Any) -> bool:
  """A half-precision tensor and a finite Python float that half precision cannot hold (x * 1e5, x / 1e5, x * 1e-8).

  PyTorch computes such an op in float32 and rounds the result once; rounding the scalar to half
  first would turn 1e5 into inf and 1e-8 into 0.
  """
  if x.dtype not in (dtypes.float16, dtypes.bfloat16) or not isinstance(scalar, float) or not math.isfinite(scalar) or scalar == 0: return False
  # only a scalar half precision overflows or flushes to 0; one it merely rounds (65519 -> 65504) is rounded, as in PyTorch
  rounded = UOp.const(x.dtype, scalar).arg
  return math.isinf(rounded) or rounded == 0


def _check_nonempty(x: Tensor, axis, op: str) -> None:
  """PyTorch's errors for a max/min with nothing to pick from: IndexError for an empty dim, RuntimeError for an empty tensor."""
  if axis is None and x.numel() == 0:
    raise RuntimeError(f"{op}: expected reduction dim to be specified for an empty tensor of shape {x.shape}")
  for a in x._axes(op, axis):
    if x.shape[a] == 0: raise IndexError(f"{op}: expected reduction dim {a} to have non-zero size (shape {x.shape})")


def _repeat_heads(x: Tensor, n: int) -> Tensor:
  """Each head (dim -3) n times in a row, like x.repeat_interleave(n, -3): a broadcast, so no copy is made."""
  *batch, h, s, e = x.shape
  return x.unsqueeze(-3).expand(*batch, h, n, s, e).reshape(*batch, h * n, s, e)


def _reduce_loss(loss: Tensor, reduction: str, op: str) -> Tensor:
  if reduction == "none": return loss
  if reduction == "sum": return loss.sum()
  if reduction == "mean": return loss.mean()
  raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def _class_weight(x: Tensor, weight: Tensor | None, class_dim: int, op: str) -> Tensor | None:
  """A loss's per-class `weight`, checked against the input (PyTorch: RuntimeError unless there is one weight per class)."""
  if weight is None: return None
  if not isinstance(weight, Tensor): raise TypeError(f"{op}: weight must be a Tensor, not {type(weight).__name__}")
  n_classes = x.shape[class_dim] if x.ndim else 0
  if weight.shape != (n_classes,):
    raise ShapeError(f"{op}: weight of shape {weight.shape} must have one entry for each of the {n_classes} classes of input {x.shape}")
  if weight.device != x.device: raise RuntimeError(f"{op}: weight on {weight.device} but the input is on {x.device}")
  if not weight.dtype.is_float: raise RuntimeError(f"{op}: weight must be a floating-point tensor, not {weight.dtype.name}")
  # constants of the loss, as in PyTorch (whose nll_loss is not differentiable with respect to its weight)
  return weight.detach().cast(promote(x.dtype, weight.dtype) if x.dtype.is_float else weight.dtype)


def _nll(logp: Tensor, target: Tensor, ignore_index: int, reduction: str, label_smoothing: float, op: str, weight: Tensor | None = None) -> Tensor:
  """-logp[target] per sample (mixed with the mean over classes by `label_smoothing`), with `ignore_index` masked out.

  With a class `weight` both terms are weighted per class, and a mean divides by the targets' summed
  weights instead of their count (PyTorch's normalization, which makes weights relative).
  """
  if target.dtype.is_float or target.dtype == dtypes.bool: raise RuntimeError(f"{op}: class targets must be integers, not {target.dtype.name}")
  class_dim = 1 if logp.ndim >= 2 else 0
  n_classes = logp.shape[class_dim]
  if target.shape != logp.shape[:class_dim] + logp.shape[class_dim + 1:]:
    raise ShapeError(f"{op}: target of shape {target.shape} does not fit input of shape {logp.shape} (classes on dim {class_dim})")
  if target.device != logp.device: raise RuntimeError(f"{op}: target on {target.device} but the input is on {logp.device}")
  target = target._check((target == ignore_index) | ((target >= 0) & (target < n_classes)), IndexError, f"{op}: Target is out of bounds.")
  classes_last = logp.permute([d for d in range(logp.ndim) if d != class_dim] + [class_dim])
  if weight is not None: classes_last = classes_last * weight
  # picking logp[target] as a one-hot sum keeps it fusable, and its gradient is the matching one-hot scatter
  onehot = target.unsqueeze(-1) == Tensor.arange(n_classes, dtype=target.dtype, device=logp.device)
  picked = _where(onehot, classes_last, 0).sum(-1)
  loss = -picked
  if label_smoothing: loss = loss * (1 - label_smoothing) - classes_last.sum(-1) * (label_smoothing / n_classes)
  valid = target != ignore_index
  loss = _where(valid, loss, 0)
  if reduction != "mean": return _reduce_loss(loss, reduction, op)
  if weight is None: return loss.sum() / valid.sum().cast(loss.dtype)
  return loss.sum() / _where(onehot & valid.unsqueeze(-1), weight, 0).sum()


def _draw_counter(n: int) -> int:
  """Take n numbers from the generator: the counter they start at. Also the JIT's RNG hook (a replay redraws with it)."""
  offset = Tensor._rng_counter
  Tensor._rng_counter += n
  return offset


def _hash32(x: int) -> int:
  x ^= x >> 16; x = (x * 0x7FEB352D) & 0xFFFFFFFF; x ^= x >> 15; x = (x * 0x846CA68B) & 0xFFFFFFFF; x ^= x >> 16
  return x


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


def _mod_float(a: Tensor, b: Tensor) -> Tensor:
  """Python's (and PyTorch's) a % b for floats: the exact fmod, moved by b where its sign differs from b's (-5 % inf is inf)."""
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
  _check_condition(condition, "where")
  return _where(condition, x, y)


def _check_condition(condition: Any, op: str) -> None:
  """A user's mask must be bool, as in PyTorch (internally, _where also accepts numbers)."""
  if not isinstance(condition, Tensor): raise TypeError(f"{op}: the condition must be a bool Tensor, not {type(condition).__name__}")
  if condition.dtype != dtypes.bool: raise RuntimeError(f"{op}: the condition must be a bool tensor, not {condition.dtype.name}")


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
  if not tensors: raise RuntimeError("stack: expected a non-empty list of tensors")
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


def normal(mean: Tensor | float, std: Tensor | float = 1.0, size: Sequence[int] | None = None, *, dtype: DType | str | None = None,
           device: str | None = None) -> Tensor:
  """PyTorch's `torch.normal`: samples of N(mean, std**2), with `size` for float arguments or the broadcast shape of tensor ones.

  A tensor `mean` or `std` is detached: PyTorch's gradient for them is zero, here the sample needs none.
  """
  tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
  if not tensors:
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
