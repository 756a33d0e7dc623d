"""Models as plain Python objects (library layer): find their tensors, name them, save and restore them.

There is no Module base class. A model is any object; its tensors are found by walking its
attributes (`vars(obj)`), and through lists, tuples and dicts, depth first in definition order.
Names follow PyTorch's `state_dict` keys: attribute names and list indices joined by dots, so

    class Block:
      def __init__(self): self.attn, self.mlp = Linear(8, 8), [Linear(8, 32), Linear(32, 8)]
    class GPT:
      def __init__(self): self.blocks = [Block(), Block()]

has keys `blocks.0.attn.weight`, `blocks.0.mlp.1.bias`, and so on. A tensor reachable under two names
(tied weights) is listed once, under the first name found.
"""
from __future__ import annotations
from typing import Any, Iterator
import numpy as np
from picograd.dtype import DType
from picograd.tensor import Tensor
from picograd.nn import state as _state

__all__ = ["state_dict", "get_parameters", "load_state_dict", "to_dtype"]


def _walk(obj: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, Tensor]]:
  if isinstance(obj, Tensor):
    yield prefix, obj
    return
  # `seen` stops cycles (a child holding its parent) and reports shared tensors and sub-models once
  if id(obj) in seen: return
  if isinstance(obj, (list, tuple)): items: Any = enumerate(obj)
  elif isinstance(obj, dict): items = obj.items()
  elif hasattr(obj, "__dict__") and not isinstance(obj, type): items = vars(obj).items()
  else: return
  seen.add(id(obj))
  for key, value in items:
    yield from _walk(value, f"{prefix}.{key}" if prefix else str(key), seen)


def state_dict(model: Any, prefix: str = "") -> dict[str, Tensor]:
  """Every tensor of `model`, by PyTorch-style dotted name, in attribute definition order."""
  out: dict[str, Tensor] = {}
  found: set[int] = set()
  for name, t in _walk(model, prefix, set()):
    if id(t) not in found:
      found.add(id(t))
      out[name] = t
  return out


def get_parameters(model: Any) -> list[Tensor]:
  """The tensors of `model` an optimizer should train: those with `requires_grad` (layers set it on their weights).

  Other tensors (a model's constant tables, say) are still saved by `state_dict`, like PyTorch's buffers.
  """
  return [t for t in state_dict(model).values() if t.requires_grad]


def load_state_dict(model: Any, state: dict[str, Any], strict: bool = True) -> None:
  """Write the values of `state` (Tensors or numpy arrays, e.g. from `nn.state.load`) into `model`'s tensors in place.

  Every mismatch (missing or unexpected keys with `strict`, a wrong shape or dtype) is reported at
  once as a `CheckpointError` before anything is written, so a failed load leaves the model as it was.
  The assignments are realized together, so the model holds the new values (in its existing buffers)
  when this returns.
  """
  own = state_dict(model)
  targets = []
  for name, value in _state.load_state_dict(own, state, strict=strict):
    target = own[name]
    if isinstance(value, np.ndarray) and value.dtype == np.uint16:
      value = (value.astype(np.uint32) << 16).view(np.float32)  # bfloat16 bits (nn.state's convention) to their values
    if not isinstance(value, Tensor): value = Tensor(value, dtype=target.dtype, device=target.device)
    targets.append(target.assign(value.to(target.device)))
  if targets: Tensor.realize(*targets)



def to_dtype(model: Any, dtype: DType) -> Any:
  """Cast every floating-point tensor of `model` to `dtype` in place, as PyTorch's `model.to(dtype)` (integer tensors,
  such as index tables, are left alone); returns the model. The tensors keep their identity and `requires_grad`, so
  references to them (an optimizer made later, tied weights) see the new type. Train a 16-bit model with the optimizers'
  float32 master weights (picograd.optim)."""
  tensors = [t for t in state_dict(model).values() if t.dtype.is_float and t.dtype != dtype]
  for t in tensors: t.replace(t.cast(dtype).contiguous())
  if tensors: Tensor.realize(*tensors)
  return model
