"""Helpers the frontend's op families share (frontend layer): axis and shape arguments, broadcasting, `where`.

`TensorBase` is the root class of `Tensor`: `isinstance(x, TensorBase)` tells a tensor apart from
a Python scalar without importing `picograd.tensor` (which imports the mixins that use this module).
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any, Sequence
import numpy as np
from picograd.dtype import dtypes, promote, result_type_with_scalar
from picograd.helpers import ShapeError
from picograd.ir.ops import UOp, Ops
if TYPE_CHECKING: from picograd.tensor import Tensor

Scalar = int | float | bool


class TensorBase:
  """The root class of `Tensor` (it holds no state: Tensor keeps __slots__)."""
  __slots__ = ()


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


def _half_meets_wide_float(x: Tensor, scalar: Any) -> bool:
  """A half-precision tensor and a finite Python float that half precision cannot hold (x * 1e5, x / 1e5, x * 1e-8).

  PyTorch computes such an op in float32 and rounds the result once; rounding the scalar to half
  first would turn 1e5 into inf and 1e-8 into 0.
  """
  if x.dtype not in (dtypes.float16, dtypes.bfloat16) or not isinstance(scalar, float) or not math.isfinite(scalar) or scalar == 0: return False
  # only a scalar half precision overflows or flushes to 0; one it merely rounds (65519 -> 65504) is rounded, as in PyTorch
  rounded = UOp.const(x.dtype, scalar).arg
  return math.isinf(rounded) or rounded == 0


def _where(cond: Tensor | Any, x: Tensor | Scalar, y: Tensor | Scalar) -> Tensor:
  """Elementwise select with broadcasting and promotion of x and y (PyTorch's torch.where)."""
  # Any: isinstance narrows to TensorBase, the state-less root, which mypy cannot tell is a Tensor
  anchor: Any = next(t for t in (cond, x, y) if isinstance(t, TensorBase))
  c: Any = anchor._to_tensor(cond, "where") if not isinstance(cond, TensorBase) else cond
  if c.device != anchor.device: raise RuntimeError(f"where: tensors are on different devices ({c.device} and {anchor.device})")
  c = c.cast(dtypes.bool)
  if isinstance(x, TensorBase) and isinstance(y, TensorBase): dt = promote(x.dtype, y.dtype)
  elif isinstance(x, TensorBase): dt = result_type_with_scalar(x.dtype, y)
  elif isinstance(y, TensorBase): dt = result_type_with_scalar(y.dtype, x)
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
  if not isinstance(condition, TensorBase): raise TypeError(f"{op}: the condition must be a bool Tensor, not {type(condition).__name__}")
  # the ignore: isinstance narrows to TensorBase, Tensor's state-less root, which declares no dtype
  if condition.dtype != dtypes.bool: raise RuntimeError(f"{op}: the condition must be a bool tensor, not {condition.dtype.name}")  # type: ignore[attr-defined]
