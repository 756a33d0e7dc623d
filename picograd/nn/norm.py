"""Normalization layers with statistics over the batch (library layer): BatchNorm1d, BatchNorm2d and GroupNorm.

Names, arguments, initial values and state_dict keys are PyTorch's (`weight`, `bias`, `running_mean`,
`running_var`, `num_batches_tracked`), so a torch state dict loads as it is. The mode is picograd's
global `Tensor.training` flag (the one `Dropout` reads), not a per-module flag: set it around training
and clear it to evaluate. It starts off, so a fresh BatchNorm normalizes with its running statistics,
where a fresh torch module would be in training mode.

In training mode BatchNorm writes its running statistics with `assign` and realizes them at once,
together with its input and the batch statistics (which the forward pass reads from those buffers,
so nothing is computed twice). Realizing here, inside the forward pass, is what lets a
`@picograd.jit` training step record the update and replay it each step; a lazy update that nobody
realized would leave the statistics stale under the JIT and grow their graph step after step outside it.
"""
from __future__ import annotations
from picograd.dtype import DType, dtypes
from picograd.tensor import Tensor
from picograd.nn.layers import _parameters

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm"]


class _BatchNorm:
  """Normalize each channel (dim 1) over the batch and the spatial dims; `dims` are the accepted input ranks."""
  dims: tuple[int, ...] = ()

  def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
               device: str | None = None, dtype: DType | None = None):
    self.num_features, self.eps, self.momentum = num_features, eps, momentum
    self.affine, self.track_running_stats = affine, track_running_stats
    # the attribute order is the state_dict order PyTorch uses: parameters first, then buffers
    self.weight = Tensor.ones(num_features, device=device, dtype=dtype) if affine else None
    self.bias = Tensor.zeros(num_features, device=device, dtype=dtype) if affine else None
    _parameters(self.weight, self.bias)
    self.running_mean = self.running_var = self.num_batches_tracked = None
    if track_running_stats:
      self.running_mean = Tensor.zeros(num_features, device=device, dtype=dtype)
      self.running_var = Tensor.ones(num_features, device=device, dtype=dtype)
      self.num_batches_tracked = Tensor.zeros((), device=device, dtype=dtypes.int64)
      Tensor.realize(self.running_mean, self.running_var, self.num_batches_tracked)

  def _check_input(self, x: Tensor) -> None:
    name = type(self).__name__
    if x.ndim not in self.dims:
      raise ValueError(f"{name}: expected {' or '.join(f'{d}D' for d in self.dims)} input (got {x.ndim}D input)")
    if x.shape[1] != self.num_features:
      raise RuntimeError(f"{name}: running_mean should contain {x.shape[1]} elements not {self.num_features}")

  def __call__(self, x: Tensor) -> Tensor:
    self._check_input(x)
    axes = (0, *range(2, x.ndim))
    shape = (1, self.num_features) + (1,) * (x.ndim - 2)
    use_batch_stats = Tensor.training or self.running_mean is None
    if use_batch_stats:
      n = x.numel() // self.num_features
      if Tensor.training and n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
      mean = x.mean(axes)
      var = (x - mean.reshape(shape)).square().mean(axes)  # biased, as the normalization uses
      if Tensor.training and self.running_mean is not None: self._update(x, mean, var, n)
    else:
      assert self.running_mean is not None and self.running_var is not None
      mean, var = self.running_mean, self.running_var
    y = (x - mean.reshape(shape)) * (var + self.eps).rsqrt().reshape(shape)
    if self.weight is not None: y = y * self.weight.reshape(shape)
    if self.bias is not None: y = y + self.bias.reshape(shape)
    return y

  def _update(self, x: Tensor, mean: Tensor, var: Tensor, n: int) -> None:
    """running = (1 - factor) * running + factor * batch, with the unbiased batch variance; factor = momentum or 1/batches seen."""
    assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
    self.num_batches_tracked.assign(self.num_batches_tracked + 1)
    # momentum None is the cumulative average; the factor is a tensor so that a JIT replay recomputes it from the count
    factor: Tensor | float = 1 / self.num_batches_tracked.cast(mean.dtype) if self.momentum is None else self.momentum
    stats_mean, stats_var = mean.detach(), var.detach() * (n / (n - 1))
    self.running_mean.assign(self.running_mean * (1 - factor) + stats_mean * factor)
    self.running_var.assign(self.running_var * (1 - factor) + stats_var * factor)
    Tensor.realize(x, mean, var, self.running_mean, self.running_var, self.num_batches_tracked)


class BatchNorm1d(_BatchNorm):
  """Batch normalization of (N, C) or (N, C, L) inputs over N (and L), per channel C."""
  dims = (2, 3)


class BatchNorm2d(_BatchNorm):
  """Batch normalization of (N, C, H, W) inputs over N, H and W, per channel C."""
  dims = (4,)


class GroupNorm:
  """Split the C channels into `num_groups` groups; normalize each sample's group over its channels and spatial dims.

  `weight` (ones) and `bias` (zeros) scale and shift each channel, as in PyTorch. There are no running
  statistics: training and evaluation compute the same thing.
  """

  def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device: str | None = None,
               dtype: DType | None = None):
    if num_channels % num_groups: raise ValueError("num_channels must be divisible by num_groups")
    self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
    self.weight = Tensor.ones(num_channels, device=device, dtype=dtype) if affine else None
    self.bias = Tensor.zeros(num_channels, device=device, dtype=dtype) if affine else None
    _parameters(self.weight, self.bias)

  def __call__(self, x: Tensor) -> Tensor:
    if x.ndim < 2 or x.shape[1] != self.num_channels:
      raise RuntimeError(f"GroupNorm: expected an input with shape (N, {self.num_channels}, *), got {x.shape}")
    groups = x.reshape(x.shape[0], self.num_groups, -1)
    mean = groups.mean(2, keepdim=True)
    var = (groups - mean).square().mean(2, keepdim=True)
    y = ((groups - mean) * (var + self.eps).rsqrt()).reshape(x.shape)
    shape = (1, self.num_channels) + (1,) * (x.ndim - 2)
    if self.weight is not None: y = y * self.weight.reshape(shape)
    if self.bias is not None: y = y + self.bias.reshape(shape)
    return y
