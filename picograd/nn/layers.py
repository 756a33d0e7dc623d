"""Layers (library layer): Linear, Embedding, LayerNorm, RMSNorm, Dropout, convolutions, pooling and Upsample, as plain callable classes.

Each layer holds its parameters as Tensor attributes named as in PyTorch (`weight`, `bias`), so
`nn.state_dict` gives PyTorch's keys and checkpoints move between the two. Parameters are
initialised as PyTorch does, from picograd's counter-based generator (`Tensor.manual_seed`), and
realized in the constructor: they are buffers from the start, so an optimizer updates them in place.
"""
from __future__ import annotations
import math
from typing import Sequence
from picograd.dtype import DType, dtypes
from picograd.tensor import Tensor, ShapeError


def _parameters(*tensors: Tensor | None) -> None:
  """Mark `tensors` trainable and compute their initial values now, in one schedule."""
  real = [t for t in tensors if t is not None]
  if real: Tensor.realize(*real)  # a layer without parameters (LayerNorm(elementwise_affine=False)) has none to realize
  for t in real: t.requires_grad = True


class Linear:
  """y = x @ weight.T + bias, with weight [out_features, in_features] and both drawn from U(-1/sqrt(in), 1/sqrt(in))."""

  def __init__(self, in_features: int, out_features: int, bias: bool = True, device: str | None = None, dtype: DType | None = None):
    bound = 1 / math.sqrt(in_features)
    self.weight = Tensor.uniform(out_features, in_features, low=-bound, high=bound, device=device, dtype=dtype)
    self.bias = Tensor.uniform(out_features, low=-bound, high=bound, device=device, dtype=dtype) if bias else None
    _parameters(self.weight, self.bias)

  def __call__(self, x: Tensor) -> Tensor: return x.linear(self.weight, self.bias)


class Embedding:
  """A lookup table: row i of `weight` [num_embeddings, embedding_dim] (drawn from N(0, 1)) for each index i."""

  def __init__(self, num_embeddings: int, embedding_dim: int, device: str | None = None, dtype: DType | None = None):
    self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
    self.weight = Tensor.randn(num_embeddings, embedding_dim, device=device, dtype=dtype)
    _parameters(self.weight)

  def __call__(self, idx: Tensor) -> Tensor:
    if not idx.dtype.is_int: raise RuntimeError(f"Embedding: indices must be an integer tensor, not {idx.dtype.name}")
    return self.weight[idx._check((idx >= 0) & (idx < self.num_embeddings), IndexError, "Embedding: index out of range in self")]


def _normalized_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
  return (shape,) if isinstance(shape, int) else tuple(shape)


class LayerNorm:
  """Normalize over the last len(normalized_shape) dims to zero mean and unit (biased) variance, then scale and shift.

  `weight` starts at ones and `bias` at zeros, as in PyTorch.
  """

  def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
               device: str | None = None, dtype: DType | None = None):
    self.normalized_shape, self.eps = _normalized_shape(normalized_shape), eps
    self.weight = Tensor.ones(self.normalized_shape, device=device, dtype=dtype) if elementwise_affine else None
    self.bias = Tensor.zeros(self.normalized_shape, device=device, dtype=dtype) if elementwise_affine and bias else None
    _parameters(self.weight, self.bias)

  def __call__(self, x: Tensor) -> Tensor: return x.layer_norm(self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm:
  """x / sqrt(mean(x**2) + eps) over the last len(normalized_shape) dims, times `weight` (ones at first).

  `eps=None` uses the machine epsilon of the input's dtype, as PyTorch's RMSNorm does.
  """

  def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None, elementwise_affine: bool = True,
               device: str | None = None, dtype: DType | None = None):
    self.normalized_shape, self.eps = _normalized_shape(normalized_shape), eps
    self.weight = Tensor.ones(self.normalized_shape, device=device, dtype=dtype) if elementwise_affine else None
    _parameters(self.weight)

  def __call__(self, x: Tensor) -> Tensor:
    if x.ndim < len(self.normalized_shape) or x.shape[x.ndim - len(self.normalized_shape):] != self.normalized_shape:
      raise ShapeError(f"RMSNorm: input of shape {x.shape} does not end in the normalized shape {self.normalized_shape}")
    axes = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
    eps = self.eps if self.eps is not None else _machine_eps(x.dtype)
    y = x * (x.square().mean(axes, keepdim=True) + eps).rsqrt()
    return y * self.weight if self.weight is not None else y


def _machine_eps(dt: DType) -> float:
  return {dtypes.float16: 2.0**-10, dtypes.bfloat16: 2.0**-7, dtypes.float64: 2.0**-52}.get(dt, 2.0**-23)


class Dropout:
  """While `Tensor.training` is set, zero each element with probability p and scale the rest by 1/(1-p); else the identity."""

  def __init__(self, p: float = 0.5):
    if not 0 <= p <= 1: raise ValueError(f"Dropout: probability must be between 0 and 1, got {p}")
    self.p = p

  def __call__(self, x: Tensor) -> Tensor: return x.dropout(self.p)


# ---------------------------------------------------------------- convolution family (picograd/frontend/conv.py)
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd:
  """Shared by Conv1d/2d/3d and ConvTranspose1d/2d: weight and bias drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch does."""
  dims, transposed = 2, False

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1, bias: bool = True,
               padding_mode: str = "zeros", device: str | None = None, dtype: DType | None = None, output_padding=0):
    if in_channels % groups or out_channels % groups:
      raise ValueError(f"{type(self).__name__}: in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}")
    if padding_mode not in _PADDING_MODES:
      raise ValueError(f"padding_mode must be one of {list(_PADDING_MODES)}, but got padding_mode='{padding_mode}'")
    if self.transposed and padding_mode != "zeros": raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
    k = (kernel_size,) * self.dims if isinstance(kernel_size, int) else tuple(kernel_size)
    self.in_channels, self.out_channels, self.kernel_size, self.padding_mode = in_channels, out_channels, k, padding_mode
    self.stride, self.padding, self.dilation, self.groups, self.output_padding = stride, padding, dilation, groups, output_padding
    shape = (in_channels, out_channels // groups, *k) if self.transposed else (out_channels, in_channels // groups, *k)
    bound = 1 / math.sqrt(shape[1] * math.prod(k))  # PyTorch's fan_in is the weight's dim 1 times the kernel size, for both kinds
    self.weight = Tensor.uniform(*shape, low=-bound, high=bound, device=device, dtype=dtype)
    self.bias = Tensor.uniform(out_channels, low=-bound, high=bound, device=device, dtype=dtype) if bias else None
    _parameters(self.weight, self.bias)

  def __call__(self, x: Tensor) -> Tensor:
    if self.transposed:
      return x._conv_transposend(self.dims, type(self).__name__, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                 self.groups, self.dilation)
    padding = self.padding
    if self.padding_mode != "zeros" and padding != "valid":  # pad the input in that mode first, then convolve unpadded (as torch does)
      dl = (self.dilation,) * self.dims if isinstance(self.dilation, int) else tuple(self.dilation)
      if padding == "same": pairs = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(self.kernel_size, dl)]
      else: pairs = [(p, p) for p in ((padding,) * self.dims if isinstance(padding, int) else padding)]
      x, padding = x.pad([(0, 0)] * (x.ndim - self.dims) + pairs, mode=self.padding_mode), 0
    return x._convnd(self.dims, type(self).__name__, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class Conv1d(_ConvNd): dims = 1
class Conv2d(_ConvNd): dims = 2
class Conv3d(_ConvNd): dims = 3


class _ConvTransposeNd(_ConvNd):
  """PyTorch's positional order for the transposed kinds: output_padding comes before groups, dilation after bias."""
  transposed = True

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0, groups: int = 1, bias: bool = True,
               dilation=1, padding_mode: str = "zeros", device: str | None = None, dtype: DType | None = None):
    super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype, output_padding)


class ConvTranspose1d(_ConvTransposeNd): dims = 1
class ConvTranspose2d(_ConvTransposeNd): dims = 2


class _MaxPool:
  """MaxPool layers: the functional op with the arguments given at construction, in the layer's (PyTorch's) positional order."""
  op = ""

  def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False, ceil_mode: bool = False):
    self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
    self.return_indices, self.ceil_mode = return_indices, ceil_mode

  def __call__(self, x: Tensor):
    return getattr(x, self.op)(self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)


class _AvgPool:
  """AvgPool layers: the functional op with the arguments given at construction."""
  op = ""

  def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None):
    self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad = kernel_size, stride, padding, ceil_mode, count_include_pad
    self.divisor_override = divisor_override

  def __call__(self, x: Tensor):
    # only AvgPool2d's op takes divisor_override (torch's AvgPool1d has none)
    extra = {} if self.divisor_override is None else {"divisor_override": self.divisor_override}
    return getattr(x, self.op)(self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad, **extra)


class MaxPool1d(_MaxPool): op = "max_pool1d"
class MaxPool2d(_MaxPool): op = "max_pool2d"
class AvgPool1d(_AvgPool): op = "avg_pool1d"
class AvgPool2d(_AvgPool): op = "avg_pool2d"


class Upsample:
  """Resample the spatial dims to `size` or by `scale_factor` (F.interpolate)."""

  def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None):
    self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

  def __call__(self, x: Tensor) -> Tensor: return x.interpolate(self.size, self.scale_factor, self.mode, self.align_corners)
