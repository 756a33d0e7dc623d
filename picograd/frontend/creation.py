"""Tensor creation (frontend layer): full, zeros, ones, empty, the *_like forms, arange, linspace, eye.

Constants are one CONST node broadcast to the shape (no memory until something is computed
from them); ranges start from an IOTA. Classmethods build through `cls`, so this module never
imports `picograd.tensor`.
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any
import numpy as np
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops
from picograd.frontend._util import Scalar, _new_shape, _where
if TYPE_CHECKING: from picograd.tensor import Tensor


class CreationMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  @classmethod
  def full(cls: Any, shape: tuple[int, ...] | int, fill_value: Scalar, dtype: DType | str | None = None, device: str | None = None,
           requires_grad: bool | None = None) -> "Tensor":
    shape = _new_shape((shape,) if isinstance(shape, (int, np.integer)) else tuple(shape), "full")
    if isinstance(fill_value, (np.number, np.bool_)): fill_value = fill_value.item()
    if not isinstance(fill_value, (bool, int, float)): raise TypeError(f"full: fill_value must be a number, not {type(fill_value).__name__}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.of_python(fill_value)
    const = UOp.const(dt, fill_value)
    return cls(const.reshape((1,) * len(shape)).expand(shape), device=device, requires_grad=requires_grad)
  @classmethod
  def zeros(cls: Any, *shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return cls.full(_new_shape(shape, "zeros"), 0.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
  @classmethod
  def ones(cls: Any, *shape, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    return cls.full(_new_shape(shape, "ones"), 1.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)
  @classmethod
  def empty(cls: Any, *shape, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    return cls.zeros(*shape, dtype=dtype, device=device).contiguous()
  def full_like(self: Any, fill_value: Scalar, dtype: DType | None = None, device: str | None = None) -> "Tensor":
    return type(self).full(self.shape, fill_value, dtype=dtype or self.dtype, device=device or self.device)
  def zeros_like(self: Any, dtype: DType | None = None, device: str | None = None) -> "Tensor": return self.full_like(0, dtype, device)
  def ones_like(self: Any, dtype: DType | None = None, device: str | None = None) -> "Tensor": return self.full_like(1, dtype, device)

  @classmethod
  def arange(cls: Any, start: Scalar, stop: Scalar | None = None, step: Scalar = 1, dtype: DType | str | None = None,
             device: str | None = None, requires_grad: bool | None = None) -> "Tensor":
    if stop is None: start, stop = 0, start
    for v in (start, stop, step):
      if isinstance(v, cls) or not isinstance(v, (int, float, np.number)):
        raise TypeError(f"arange: start, end and step must be numbers, not {type(v).__name__}")
      if not math.isfinite(v): raise RuntimeError(f"arange: unsupported range: {start} -> {stop} (step {step})")
    if step == 0: raise RuntimeError("arange: step must be nonzero")
    if (stop - start) * step < 0: raise RuntimeError(f"arange: upper bound {stop} and lower bound {start} inconsistent with step sign ({step})")
    n = max(0, math.ceil((stop - start) / step))
    is_float = any(isinstance(v, float) for v in (start, stop, step))
    dt = dtypes.from_any(dtype) if dtype is not None else (dtypes.default_float if is_float else dtypes.int64)
    iota = cls(UOp(Ops.IOTA, dtypes.int32, (), n), device=device)
    out = (iota.cast(dt) * step + start) if dt.is_float else (iota.cast(dt) * int(step) + int(start))
    out.requires_grad = requires_grad
    return out.cast(dt)

  @classmethod
  def linspace(cls: Any, start: float, end: float, steps: int, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    """`steps` evenly spaced values from start to end, as PyTorch computes them.

    The first half counts up from `start` and the second half down from `end`, so both ends are
    exact. Integer dtypes take start and end as integers and step in float64, truncating each value.
    """
    if steps < 0: raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.default_float
    if dt.is_float: compute, start, end = dt, float(start), float(end)
    else: compute, start, end = dtypes.float64, float(int(start)), float(int(end))  # int(): PyTorch casts them to the dtype first
    if steps <= 1: return cls.full((steps,), start, dtype=compute, device=device).cast(dt)
    step = UOp.const(compute, end - start).arg / (steps - 1)  # the span as the dtype holds it, divided in float64
    idx = cls.arange(steps, dtype=dtypes.int32, device=device)
    up, down = idx.cast(compute) * step + start, end - (steps - 1 - idx).cast(compute) * step
    return _where(idx < steps // 2, up, down).cast(dt)

  @classmethod
  def eye(cls: Any, n: int, m: int | None = None, dtype: DType | str | None = None, device: str | None = None) -> "Tensor":
    m = n if m is None else m
    for v in (n, m):
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)): raise TypeError(f"eye: sizes must be ints, not {type(v).__name__}")
      if v < 0: raise RuntimeError(f"eye: sizes must be greater or equal to 0, got {v}")
    rows = cls.arange(n, dtype=dtypes.int32, device=device).reshape(n, 1)
    cols = cls.arange(m, dtype=dtypes.int32, device=device).reshape(1, m)
    return (rows == cols).cast(dtypes.from_any(dtype) if dtype is not None else dtypes.default_float)
