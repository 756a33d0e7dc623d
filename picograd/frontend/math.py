"""Elementwise math and activations beyond the core (inverse trig, hyperbolics, elu/selu/mish/..., lerp, fmod, isclose, ...) (frontend layer)."""
from __future__ import annotations


class MathMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()
