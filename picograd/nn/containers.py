"""Containers (library layer): Sequential and ModuleList, so PyTorch-style models keep PyTorch's state_dict keys.

A model here is any object whose tensors `nn.state_dict` finds by walking attributes, lists and
dicts. A container keeps its layers as attributes named "0", "1", ... (or the names given in a
dict), so `Sequential(Conv2d(1, 8, 3), ReLU)` has the keys `0.weight` and `0.bias` that torch's
`nn.Sequential` has. Layers are any callables, so plain functions (`Tensor.relu`) work as steps.
"""
from __future__ import annotations
from typing import Any, Callable, Iterable, Iterator
from picograd.tensor import Tensor

__all__ = ["Sequential", "ModuleList"]


class _Container:
  """Layers stored as the object's attributes, in order; every attribute of a container is one of its layers."""
  slices_keep_names = True  # torch's Sequential keeps the names in a slice; its ModuleList renumbers

  def _layers(self) -> list[Any]: return list(vars(self).values())

  def _set_layers(self, layers: Iterable[tuple[str, Any]]) -> None:
    vars(self).clear()
    for name, layer in layers: setattr(self, name, layer)

  def _index(self, idx: int) -> int:
    n = len(self)
    if not -n <= idx < n: raise IndexError(f"index {idx} is out of range")
    return idx % n

  def __len__(self) -> int: return len(vars(self))
  def __iter__(self) -> Iterator[Any]: return iter(self._layers())

  def __getitem__(self, idx: int | slice) -> Any:
    if isinstance(idx, slice):
      part = object.__new__(type(self))
      items = list(vars(self).items())[idx]
      part._set_layers(items if self.slices_keep_names else ((str(i), m) for i, (_, m) in enumerate(items)))
      return part
    return self._layers()[self._index(idx)]

  def __setitem__(self, idx: int, layer: Any) -> None: setattr(self, list(vars(self))[self._index(idx)], layer)

  def __delitem__(self, idx: int | slice) -> None:
    layers = self._layers()
    del layers[idx if isinstance(idx, slice) else self._index(idx)]
    self._set_layers((str(i), m) for i, m in enumerate(layers))  # renumbered, as torch does

  def append(self, layer: Any) -> _Container:
    setattr(self, str(len(self)), layer)
    return self

  def extend(self, layers: Iterable[Any]) -> _Container:
    for layer in layers: self.append(layer)
    return self

  def insert(self, index: int, layer: Any) -> None:
    layers = self._layers()
    layers.insert(index, layer)
    self._set_layers((str(i), m) for i, m in enumerate(layers))

  def __repr__(self) -> str:
    inner = "".join(f"\n  ({name}): {layer!r}" for name, layer in vars(self).items())
    return f"{type(self).__name__}({inner}\n)" if inner else f"{type(self).__name__}()"


class Sequential(_Container):
  """Call the layers in order, each on the previous one's output: `Sequential(a, b, c)(x) == c(b(a(x)))`.

  `Sequential({"conv": Conv2d(...), "act": Tensor.relu})` names the layers (torch takes an OrderedDict; any dict keeps its order).
  """

  def __init__(self, *layers: Any):
    if len(layers) == 1 and isinstance(layers[0], dict): self._set_layers((str(k), v) for k, v in layers[0].items())
    else: self._set_layers((str(i), layer) for i, layer in enumerate(layers))

  def __call__(self, x: Tensor) -> Tensor:
    for layer in self._layers(): x = layer(x)
    return x


class ModuleList(_Container):
  """A list of layers whose tensors `nn.state_dict` names `0.weight`, `1.weight`, ...; it is not callable, as in torch."""
  slices_keep_names = False

  def __init__(self, layers: Iterable[Callable[..., Any]] | None = None):
    self._set_layers((str(i), layer) for i, layer in enumerate(layers or ()))
