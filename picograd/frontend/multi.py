"""Sharded tensors (frontend layer): `MultiTensor`, one logical tensor whose pieces live on several devices.

`t.shard(devices, axis)` splits `t` along `axis` into one piece per device (contiguous blocks, the
first pieces one element longer when the size does not divide); `axis=None` replicates it. Each
piece is an ordinary `Tensor` on its own device, so every piece's graph is fused, compiled and run
by the unchanged engine, and kernels of different GPUs run concurrently on their own streams.

Elementwise ops run per piece (a replicated operand is sliced to match a sharded one; a plain
tensor is replicated first). A reduction over the sharded axis, or a matmul contracting it, reduces
each piece and inserts an all-reduce; the result is replicated. `.to(device)` gathers.

Collectives are IR nodes (`Ops.COLLECTIVE`, one per output device), so DESIGN §4's "the scheduler
inserts collectives" holds where it matters: the scheduler makes one step of all of a collective's
outputs, orders it among the kernels, and the JIT records and replays it; on GPUs it is NCCL on the
kernels' streams (runtime/nccl.py), on virtual CPU devices a copy (runtime/collective.py).
Gradients flow through them by chain rules (ir/gradient.py): an all-reduce sends its output's
gradient back to every input, an all-gather a slice to each.

Why the sharding layout lives here, above the Tensor, and not in the scheduler: a layout (which
axis, which devices) is a property of a value the user chose, like a dtype, and every op must
decide what it does to it (a reduction over the sharded axis needs an all-reduce, one over
another axis does not; a reshape moves the axis). At this level each rule is a few lines over
per-device Tensors; below, every scheduler pass would have to carry device sets through fusion
and buffer assignment. What the scheduler does own is the collective step itself. The cost: ops
without a rule here are unavailable on a MultiTensor (they raise, naming the op), where a
scheduler-level design would split any graph.

Gradients of replicated values: the pieces of a replicated tensor hold one logical value, and its
gradient is the sum of the pieces' gradients (each piece's graph contributes its part).
`backward()` on a replicated scalar seeds its first piece; `backward()` then all-reduces the
gradients of replicated leaf MultiTensors (the data-parallel gradient all-reduce), and leaves
sharded leaves' gradients per piece.
"""
from __future__ import annotations
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence
from picograd.dtype import DType
from picograd.helpers import ShapeError, prod
from picograd.ir.ops import UOp, Ops
from picograd.runtime.device import canonicalize
from picograd.frontend._util import TensorBase, _normalize_axis
from picograd.frontend.movement import cat
if TYPE_CHECKING: from picograd.tensor import Tensor

__all__ = ["MultiTensor", "shard", "all_reduce", "all_gather", "reduce_scatter", "broadcast", "device_tuple"]


# ---------------------------------------------------------------------------------------------
# collectives on lists of per-device tensors (one tensor per device, in device order)

def _on(like: "Tensor", uop: UOp, device: str) -> "Tensor":
  out = like._new(uop)
  out.device = device
  return out


def _collective(kind: str, op: str | None, pieces: Sequence["Tensor"], devices: tuple[str, ...], root: int = 0) -> list["Tensor"]:
  src = tuple(p.uop for p in pieces)
  return [_on(pieces[0], UOp(Ops.COLLECTIVE, pieces[0].dtype, src, (kind, op, devices, i, root)), d) for i, d in enumerate(devices)]


def _devices(pieces: Sequence["Tensor"]) -> tuple[str, ...]:
  devices = tuple(p.device for p in pieces)
  if len(set(devices)) != len(devices): raise RuntimeError(f"a collective needs one tensor per device, got devices {devices}")
  return devices


def all_reduce(pieces: Sequence["Tensor"], op: str = "sum") -> list["Tensor"]:
  """Every device gets the elementwise sum (or max) of all pieces. Pieces: same shape and dtype, one per device."""
  if op not in ("sum", "max"): raise ValueError(f"all_reduce: op must be 'sum' or 'max', not {op!r}")
  if len({(p.shape, p.dtype) for p in pieces}) != 1: raise ShapeError(f"all_reduce: pieces differ: {[(p.shape, p.dtype.name) for p in pieces]}")
  return _collective("allreduce", op, pieces, _devices(pieces))


def all_gather(pieces: Sequence["Tensor"]) -> list["Tensor"]:
  """Every device gets the pieces concatenated in device order, flattened (pieces: same shape and dtype)."""
  if len({(p.shape, p.dtype) for p in pieces}) != 1: raise ShapeError(f"all_gather: pieces differ: {[(p.shape, p.dtype.name) for p in pieces]}")
  return _collective("allgather", None, [p.reshape(-1) for p in pieces], _devices(pieces))


def reduce_scatter(pieces: Sequence["Tensor"], op: str = "sum") -> list["Tensor"]:
  """Device i gets block i (of n equal blocks of the flattened pieces) of their sum."""
  if op not in ("sum", "max"): raise ValueError(f"reduce_scatter: op must be 'sum' or 'max', not {op!r}")
  n = len(pieces)
  if len({(p.shape, p.dtype) for p in pieces}) != 1: raise ShapeError("reduce_scatter: pieces differ in shape or dtype")
  if pieces[0].numel() % n: raise ShapeError(f"reduce_scatter: {pieces[0].numel()} elements do not split into {n} equal blocks")
  return _collective("reducescatter", op, [p.reshape(-1) for p in pieces], _devices(pieces))


def device_tuple(op: str, devices: Sequence[str]) -> tuple[str, ...]:
  """Canonical device names, checked to be distinct and at least one."""
  devs = tuple(canonicalize(d) for d in devices)
  if not devs: raise ValueError(f"{op}: no devices")
  if len(set(devs)) != len(devs): raise RuntimeError(f"{op}: devices repeat: {devs}")
  return devs


def broadcast(t: "Tensor", devices: Sequence[str]) -> list["Tensor"]:
  """`t` on every one of `devices` (t's own device must be among them)."""
  devs = device_tuple("broadcast", devices)
  if t.device not in devs: raise RuntimeError(f"broadcast: the root tensor is on {t.device}, not one of {devs}")
  return _collective("broadcast", None, [t], devs, devs.index(t.device))


# ---------------------------------------------------------------------------------------------
# the sharded tensor

def _bounds(size: int, n: int) -> list[tuple[int, int]]:
  """n contiguous blocks of `size`, the first size % n one longer."""
  edges = [i * (size // n) + min(i, size % n) for i in range(n + 1)]
  return list(zip(edges, edges[1:]))


def _slice(t: "Tensor", axis: int, lo: int, hi: int) -> "Tensor":
  return t.shrink([(lo, hi) if i == axis else None for i in range(t.ndim)])


def _axes(op: str, axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
  if axis is None: return tuple(range(ndim))
  return tuple(_normalize_axis(op, a, ndim) for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))


# replicated leaves whose pieces need gradients: backward() all-reduces their gradients
_replicated_leaves: "weakref.WeakSet[MultiTensor]" = weakref.WeakSet()

Operand = Any  # a MultiTensor, a Tensor or a Python scalar


class MultiTensor:
  """A tensor split along `axis` (or replicated: axis None) over `devices`; `pieces[i]` is the Tensor on devices[i]."""
  __slots__ = ("pieces", "axis", "__weakref__")

  def __init__(self, pieces: Sequence["Tensor"], axis: int | None):
    if not pieces: raise ValueError("MultiTensor: no pieces")
    _devices(pieces)
    ndim = pieces[0].ndim
    if axis is not None and not 0 <= axis < ndim: raise IndexError(f"MultiTensor: axis {axis} out of range for {ndim} dimensions")
    for p in pieces:
      if p.ndim != ndim or p.dtype != pieces[0].dtype or any(a != b for i, (a, b) in enumerate(zip(p.shape, pieces[0].shape)) if i != axis):
        raise ShapeError(f"MultiTensor: pieces do not fit one layout: {[(q.shape, q.dtype.name) for q in pieces]} along axis {axis}")
    self.pieces, self.axis = list(pieces), axis

  @staticmethod
  def from_tensor(t: "Tensor", devices: Sequence[str], axis: int | None = None) -> "MultiTensor":
    """`t` split along `axis` over `devices` (None: a copy on each). Differentiable: gradients flow back to `t`."""
    devs = device_tuple("shard", devices)
    if axis is None: return MultiTensor([t.to(d) if d != t.device else t.contiguous() for d in devs], None)
    axis = _normalize_axis("shard", axis, t.ndim)
    if t.shape[axis] < len(devs): raise ShapeError(f"shard: axis {axis} of size {t.shape[axis]} cannot be split over {len(devs)} devices")
    return MultiTensor([_slice(t, axis, lo, hi).to(d) for (lo, hi), d in zip(_bounds(t.shape[axis], len(devs)), devs)], axis)

  # ---------------------------------------------------------------- properties
  @property
  def devices(self) -> tuple[str, ...]: return tuple(p.device for p in self.pieces)
  @property
  def shape(self) -> tuple[int, ...]:
    s = list(self.pieces[0].shape)
    if self.axis is not None: s[self.axis] = sum(p.shape[self.axis] for p in self.pieces)
    return tuple(s)
  @property
  def dtype(self) -> DType: return self.pieces[0].dtype
  @property
  def ndim(self) -> int: return self.pieces[0].ndim
  def numel(self) -> int: return prod(self.shape)
  def __repr__(self) -> str:
    layout = "replicated" if self.axis is None else f"sharded on axis {self.axis}"
    return f"<MultiTensor {self.shape} {self.dtype.name} {layout} over {', '.join(self.devices)}>"

  @property
  def requires_grad(self) -> bool: return any(p.requires_grad for p in self.pieces)
  @requires_grad.setter
  def requires_grad(self, value: bool) -> None:
    for p in self.pieces: p.requires_grad = value
    if value and self.axis is None: _replicated_leaves.add(self)
    else: _replicated_leaves.discard(self)

  @property
  def grad(self) -> "MultiTensor | None":
    if all(p.grad is None for p in self.pieces): return None
    return MultiTensor([p.grad if p.grad is not None else p.zeros_like() for p in self.pieces], self.axis)

  def _map(self, fn: Callable[["Tensor"], "Tensor"], axis: int | None | str = "same") -> "MultiTensor":
    return MultiTensor([fn(p) for p in self.pieces], self.axis if axis == "same" else axis)  # type: ignore[arg-type]

  # ---------------------------------------------------------------- realizing and gathering
  def realize(self) -> "MultiTensor":
    self.pieces[0].realize(*self.pieces[1:])
    return self

  def to(self, device: str) -> "Tensor":
    """Gather onto one device: a replicated tensor's piece there (or a copy of the first), a sharded one's pieces concatenated."""
    device = canonicalize(device)
    if self.axis is None: return self.pieces[self.devices.index(device)] if device in self.devices else self.pieces[0].to(device)
    return cat([p.to(device) for p in self.pieces], dim=self.axis)

  def numpy(self) -> Any: return self.to(self.devices[0]).numpy()
  def item(self) -> Any: return self.to(self.devices[0]).item()

  def backward(self) -> None:
    """Fill `.grad` of the leaves this scalar depends on; replicated leaf MultiTensors get their gradients all-reduced."""
    if self.axis is not None or self.numel() != 1:
      raise RuntimeError(f"backward: needs a replicated scalar, not {self!r} (reduce it first: .sum() or .mean())")
    leaves = list(_replicated_leaves)
    saved = {id(p): p.grad for m in leaves for p in m.pieces}
    for m in leaves:
      for p in m.pieces: p.grad = None
    self.pieces[0].backward()  # the pieces hold one value: seed the first; collectives carry the gradient to every device
    for m in leaves:
      if all(p.grad is None for p in m.pieces):
        for p in m.pieces: p.grad = saved[id(p)]
        continue
      reduced = all_reduce([p.grad if p.grad is not None else p.zeros_like() for p in m.pieces])
      for p, g in zip(m.pieces, reduced):
        old = saved[id(p)]
        p.grad = g if old is None else old + g

  # ---------------------------------------------------------------- elementwise
  def _aligned(self, other: Operand, op: str) -> tuple[list[Any], list[Any], int | None]:
    """Per-device operands of a broadcasting binary op, and the result's sharded axis."""
    if not isinstance(other, (MultiTensor, TensorBase)): return self.pieces, [other] * len(self.pieces), self.axis
    if isinstance(other, TensorBase): other = MultiTensor.from_tensor(other, self.devices)  # type: ignore[arg-type]
    if other.devices != self.devices: raise RuntimeError(f"{op}: operands live on different devices ({self.devices} and {other.devices})")
    ndim = max(self.ndim, other.ndim)
    axes = [None if m.axis is None else m.axis + ndim - m.ndim for m in (self, other)]
    if axes[0] is not None and axes[1] is not None and axes[0] != axes[1]:
      raise NotImplementedError(f"{op}: operands are sharded on different axes ({self.axis} and {other.axis}); gather one first")
    axis = axes[0] if axes[0] is not None else axes[1]
    if axis is None or axes[0] == axes[1]: return self.pieces, other.pieces, axis
    sharded, rep = (self, other) if axes[0] is not None else (other, self)
    rep_axis = axis - (ndim - rep.ndim)
    if rep_axis >= 0 and rep.shape[rep_axis] != 1:  # a size-1 axis broadcasts: nothing to slice
      bounds = _bounds(sharded.shape[sharded.axis], len(self.pieces))  # type: ignore[index]
      rep = MultiTensor([_slice(p, rep_axis, lo, hi) for p, (lo, hi) in zip(rep.pieces, bounds)], rep_axis)
    return (sharded.pieces, rep.pieces, axis) if sharded is self else (rep.pieces, sharded.pieces, axis)

  def _binary(self, other: Operand, fn: Callable[[Any, Any], "Tensor"], op: str, reverse: bool = False) -> "MultiTensor":
    a, b, axis = self._aligned(other, op)
    if reverse: a, b = b, a
    return MultiTensor([fn(x, y) for x, y in zip(a, b)], axis)

  def __add__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a + b, "add")
  def __radd__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a + b, "add", reverse=True)
  def __sub__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a - b, "sub")
  def __rsub__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a - b, "sub", reverse=True)
  def __mul__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a * b, "mul")
  def __rmul__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a * b, "mul", reverse=True)
  def __truediv__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a / b, "div")
  def __rtruediv__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a / b, "div", reverse=True)
  def __pow__(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a ** b, "pow")
  def maximum(self, x: Operand) -> "MultiTensor": return self._binary(x, lambda a, b: a.maximum(b), "maximum")
  def __neg__(self) -> "MultiTensor": return self._map(lambda p: -p)

  # elementwise ops of one tensor: per piece, the layout unchanged
  _ELEMENTWISE = frozenset({"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "gelu", "silu", "abs", "square",
                            "reciprocal", "neg", "float", "half", "double", "cast", "contiguous", "detach", "clip", "clamp"})

  def __getattr__(self, name: str) -> Any:
    if name in MultiTensor._ELEMENTWISE:
      return lambda *args, **kwargs: self._map(lambda p: getattr(p, name)(*args, **kwargs))
    raise AttributeError(f"MultiTensor has no {name!r} (elementwise ops, reductions, matmul, reshape, permute, softmax; gather with .to())")

  # ---------------------------------------------------------------- reductions
  def _reduce(self, name: str, op: str, axis: int | Sequence[int] | None, keepdim: bool) -> "MultiTensor":
    axes = _axes(name, axis, self.ndim)
    local = [getattr(p, "sum" if op == "sum" else "max")(axes, keepdim=keepdim) for p in self.pieces]
    if self.axis is not None and self.axis in axes: return MultiTensor(all_reduce(local, op), None)
    new_axis = None if self.axis is None else self.axis if keepdim else self.axis - sum(a < self.axis for a in axes)
    return MultiTensor(local, new_axis)

  def sum(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> "MultiTensor": return self._reduce("sum", "sum", axis, keepdim)
  def max(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> "MultiTensor": return self._reduce("max", "max", axis, keepdim)
  def mean(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> "MultiTensor":
    axes = _axes("mean", axis, self.ndim)
    return self.sum(axes, keepdim) * (1.0 / prod(self.shape[a] for a in axes))

  def softmax(self, axis: int = -1) -> "MultiTensor": return self._rowwise("softmax", axis)
  def log_softmax(self, axis: int = -1) -> "MultiTensor": return self._rowwise("log_softmax", axis)

  def _rowwise(self, name: str, axis: int) -> "MultiTensor":
    axis = _normalize_axis(name, axis, self.ndim)
    if axis == self.axis: raise NotImplementedError(f"{name} along the sharded axis {axis}: gather first (.to(device))")
    return self._map(lambda p: getattr(p, name)(axis))

  # ---------------------------------------------------------------- matmul
  def matmul(self, other: "MultiTensor | Tensor") -> "MultiTensor":
    """Matrix product. Contracting a sharded axis multiplies the matching blocks on each device and all-reduces the sums;
    a sharded batch or row axis of the left operand, or column axis of the right one, stays sharded."""
    if isinstance(other, TensorBase): other = MultiTensor.from_tensor(other, self.devices)  # type: ignore[arg-type]
    if other.devices != self.devices: raise RuntimeError(f"matmul: operands live on different devices ({self.devices} and {other.devices})")
    if self.ndim < 2 or other.ndim < 2: raise ShapeError("matmul of MultiTensors needs at least 2 dimensions on each side")
    a, b = self, other
    k_a, k_b = a.ndim - 1, b.ndim - 2
    n = len(self.pieces)
    if a.axis == k_a or b.axis == k_b:  # the contracted axis is sharded: split the other side to match, multiply, all-reduce
      size = a.shape[k_a] if a.axis == k_a else b.shape[k_b]
      bounds = _bounds(size, n)
      ap = a.pieces if a.axis == k_a else [_slice(p, k_a, lo, hi) for p, (lo, hi) in zip(a.pieces, bounds)] if a.axis is None else None
      bp = b.pieces if b.axis == k_b else [_slice(p, k_b, lo, hi) for p, (lo, hi) in zip(b.pieces, bounds)] if b.axis is None else None
      if ap is None or bp is None: raise NotImplementedError(f"matmul of {a!r} and {b!r}: shard both on the contracted axis, or one only")
      return MultiTensor(all_reduce([x @ y for x, y in zip(ap, bp)]), None)
    out_ndim = max(a.ndim, b.ndim)
    if b.axis is None:  # rows or a batch axis of `a` sharded (or nothing)
      axis = None if a.axis is None else a.axis + out_ndim - a.ndim
    elif a.axis is None and b.axis == b.ndim - 1: axis = out_ndim - 1
    else: raise NotImplementedError(f"matmul of {a!r} and {b!r}: this pair of layouts needs a gather first (.to(device))")
    return MultiTensor([x @ y for x, y in zip(a.pieces, b.pieces)], axis)

  def __matmul__(self, other: "MultiTensor | Tensor") -> "MultiTensor": return self.matmul(other)
  def __rmatmul__(self, other: "Tensor") -> "MultiTensor": return MultiTensor.from_tensor(other, self.devices).matmul(self)

  # ---------------------------------------------------------------- movement
  def reshape(self, *shape: Any) -> "MultiTensor":
    """Reshape; the sharded axis may merge with the axes after it or split off them, as long as every piece keeps whole rows."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    if -1 in shape:
      known = prod(d for d in shape if d != -1)
      shape = tuple(self.numel() // known if d == -1 else d for d in shape)
    if prod(shape) != self.numel(): raise ShapeError(f"reshape: {self.shape} has {self.numel()} elements, {shape} has {prod(shape)}")
    if self.axis is None: return self._map(lambda p: p.reshape(shape))
    # each piece is a leading block of every row of the axes from the sharded one on: it stays one if the new axis k starts
    # at the same row boundary and is the sharded axis merged with (some of) the axes after it
    ax = self.axis
    before = prod(self.shape[:ax])
    for k in range(len(shape)):
      if prod(shape[:k]) == before and shape[k] % self.shape[ax] == 0:
        scale = shape[k] // self.shape[ax]
        return self._map(lambda p: p.reshape(shape[:k] + (p.shape[ax] * scale,) + shape[k + 1:]), k)
    raise NotImplementedError(f"reshape of {self!r} to {shape}: the sharded axis would be split; gather first (.to(device))")

  def permute(self, *order: Any) -> "MultiTensor":
    order = tuple(order[0]) if len(order) == 1 and isinstance(order[0], (tuple, list)) else tuple(order)
    order = tuple(_normalize_axis("permute", a, self.ndim) for a in order)
    return self._map(lambda p: p.permute(order), None if self.axis is None else order.index(self.axis))

  def transpose(self, dim0: int = -2, dim1: int = -1) -> "MultiTensor":
    order = list(range(self.ndim))
    a, b = _normalize_axis("transpose", dim0, self.ndim), _normalize_axis("transpose", dim1, self.ndim)
    order[a], order[b] = order[b], order[a]
    return self.permute(order)


def shard(t: "Tensor", devices: Sequence[str], axis: int | None = None) -> MultiTensor:
  """`t` split along `axis` over `devices` (None replicates it): `Tensor.shard` calls this."""
  return MultiTensor.from_tensor(t, devices, axis)
