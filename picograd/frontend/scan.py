"""Scans, sorting, scatter/gather-style ops and einsum (cumprod, cummax, sort, topk, scatter, nonzero, einsum, ...) (frontend layer)."""
from __future__ import annotations


class ScanMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()
