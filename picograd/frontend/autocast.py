"""Mixed precision (frontend layer): `autocast(dtype)` runs matrix products in a 16-bit float type, PyTorch's policy.

Inside `with picograd.autocast(dtypes.bfloat16):` (or on a function decorated with it):

- matrix products (matmul, linear, the two products of scaled_dot_product_attention, convolutions) cast their float32
  operands to the autocast type; the codegen accumulates them in float32 (tensor cores on the GPU) and the result is
  of the autocast type, as in PyTorch;
- reductions, softmax, log_softmax, layer_norm, the losses, exp, log and pow compute in float32: a 16-bit input is cast
  up first and the result stays float32 (a 16-bit sum or exponential loses too much);
- everything else runs in the type of its inputs, and mixing a 16-bit tensor with a float32 one promotes to float32.

Parameters stay float32 (the "master weights"): autocast only casts the values that flow into a product, and those
casts are fused into the kernels that read them. Gradients flow back through the casts, so each parameter's gradient
is float32 too. This is a policy of the frontend: nothing below it knows about autocast.
"""
from __future__ import annotations
import functools
from typing import Any, Callable, TypeVar
from picograd.dtype import DType, dtypes
from picograd.helpers import TF32

_active: list[DType | None] = []  # the autocast type of each `with autocast(...)` open, innermost last (None: disabled)
F = TypeVar("F", bound=Callable[..., Any])


class autocast:
  """Run matrix products in `dtype` (float16 or bfloat16) and precision-sensitive ops in float32 (see the module docstring).

  A context manager and a decorator, like `torch.autocast`; `enabled=False` turns an outer autocast off inside.
  """

  def __init__(self, dtype: DType = dtypes.bfloat16, enabled: bool = True):
    if dtype not in (dtypes.float16, dtypes.bfloat16):
      raise ValueError(f"autocast: dtype must be float16 or bfloat16, not {getattr(dtype, 'name', dtype)}")
    self.dtype, self.enabled = dtype, enabled

  def __enter__(self) -> "autocast":
    _active.append(self.dtype if self.enabled else None)
    return self

  def __exit__(self, *exc: object) -> None: _active.pop()

  def __call__(self, fn: F) -> F:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
      with autocast(self.dtype, self.enabled): return fn(*args, **kwargs)
    return wrapped  # type: ignore[return-value]


def autocast_dtype() -> DType | None:
  """The 16-bit type matrix products run in now, or None outside autocast."""
  return _active[-1] if _active else None


def lower_precision(*tensors: Any) -> tuple[Any, ...]:
  """The operands of a matrix product under autocast: float32 tensors cast to the autocast type (others as they are)."""
  dt = autocast_dtype()
  if dt is None: return tensors
  return tuple(t.cast(dt) if t is not None and t.dtype == dtypes.float32 else t for t in tensors)


def full_precision(t: Any) -> Any:
  """The input of a precision-sensitive op under autocast: a 16-bit float tensor cast to float32."""
  if autocast_dtype() is None or t.dtype not in (dtypes.float16, dtypes.bfloat16): return t
  return t.cast(dtypes.float32)


def set_float32_matmul_precision(precision: str) -> None:
  """PyTorch's switch: "highest" (the default) keeps float32 matrix products in float32; "high" or "medium" lets them
  use TF32 tensor cores on the GPU (inputs rounded to 10-bit mantissas, float32 accumulation: ~1e-3 relative error)."""
  if precision not in ("highest", "high", "medium"):
    raise ValueError(f"set_float32_matmul_precision: precision must be 'highest', 'high' or 'medium', not {precision!r}")
  TF32.value = int(precision != "highest")


def get_float32_matmul_precision() -> str: return "high" if TF32 else "highest"


__all__ = ["autocast", "autocast_dtype", "lower_precision", "full_precision", "set_float32_matmul_precision", "get_float32_matmul_precision"]
