"""Parameter initialisation (library layer): PyTorch's `torch.nn.init` schemes, written into existing tensors in place.

    from picograd import nn
    w = Tensor.empty(256, 128)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))   # what torch.nn.Linear does to its weight

Every function fills its tensor with `assign` (the tensor keeps its buffer, so an optimizer built
earlier still updates it), realizes it, and returns it. Random schemes draw from picograd's
counter-based generator (`Tensor.manual_seed`), so they are reproducible and identical on every
device, though not the same numbers PyTorch's generator gives. Names, arguments and errors follow
PyTorch; fan-in is `shape[1] * prod(shape[2:])` and fan-out `shape[0] * prod(shape[2:])`, as there.
"""
from __future__ import annotations
import math
from picograd.helpers import prod
from picograd.tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_",
           "kaiming_uniform_", "kaiming_normal_"]

_UNIT_GAIN = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid"}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
  """The factor that keeps activations' variance steady through `nonlinearity` (PyTorch's table).

  linear, conv and sigmoid 1; tanh 5/3; relu sqrt(2); leaky_relu sqrt(2 / (1 + slope**2)) with `param` the
  negative slope (default 0.01); selu 3/4.
  """
  if nonlinearity in _UNIT_GAIN: return 1.0
  if nonlinearity == "tanh": return 5.0 / 3
  if nonlinearity == "relu": return math.sqrt(2.0)
  if nonlinearity == "leaky_relu":
    if param is None: slope = 0.01
    elif isinstance(param, (int, float)) and not isinstance(param, bool): slope = param
    else: raise ValueError(f"negative_slope {param} not a valid number")
    return math.sqrt(2.0 / (1 + slope ** 2))
  if nonlinearity == "selu": return 3.0 / 4
  raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _fans(tensor: Tensor) -> tuple[int, int]:
  if tensor.ndim < 2: raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
  receptive = prod(tensor.shape[2:])
  return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
  if mode not in ("fan_in", "fan_out"): raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
  fan_in, fan_out = _fans(tensor)
  return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
  """Fill with samples of U[a, b)."""
  return tensor.uniform_(a, b).realize()


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
  """Fill with samples of N(mean, std**2)."""
  return tensor.normal_(mean, std).realize()


def constant_(tensor: Tensor, val: float) -> Tensor:
  """Fill with `val`."""
  return tensor.assign(val).realize()


def zeros_(tensor: Tensor) -> Tensor: return constant_(tensor, 0)
def ones_(tensor: Tensor) -> Tensor: return constant_(tensor, 1)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
  """Glorot and Bengio (2010): U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
  fan_in, fan_out = _fans(tensor)
  bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
  return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
  """Glorot and Bengio (2010): N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
  fan_in, fan_out = _fans(tensor)
  return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
  """He et al. (2015): U(-bound, bound) with bound = gain * sqrt(3 / fan); `a` is leaky_relu's negative slope."""
  fan = _fan(tensor, mode)
  if fan == 0: return tensor  # an empty tensor has nothing to fill (PyTorch warns and returns it)
  bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
  return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
  """He et al. (2015): N(0, std**2) with std = gain / sqrt(fan); `a` is leaky_relu's negative slope."""
  fan = _fan(tensor, mode)
  if fan == 0: return tensor
  return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
