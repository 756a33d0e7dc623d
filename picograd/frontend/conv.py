"""Convolution, pooling, interpolation and unfolding (conv1d/2d/3d, conv_transpose, max/avg pool, interpolate) (frontend layer)."""
from __future__ import annotations


class ConvMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()
