"""Layers (library layer): Linear, Embedding, LayerNorm, RMSNorm, Dropout, as plain callable classes.

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
  Tensor.realize(*real)
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
