"""picograd.nn.functional (library layer): PyTorch's functional API as thin wrappers over Tensor methods.

    import picograd.nn.functional as F
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)

Every function here is composed from primitives in the Tensor frontend, so each one has
gradients and fuses like any other op; this module only adds PyTorch's calling conventions.
"""
from __future__ import annotations
from typing import Sequence
from picograd.tensor import Tensor


def relu(input: Tensor) -> Tensor: return input.relu()
def sigmoid(input: Tensor) -> Tensor: return input.sigmoid()
def tanh(input: Tensor) -> Tensor: return input.tanh()
def silu(input: Tensor) -> Tensor: return input.silu()
def erf(input: Tensor) -> Tensor: return input.erf()
def gelu(input: Tensor, approximate: str = "none") -> Tensor: return input.gelu(approximate)
def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor: return input.softplus(beta, threshold)
def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor: return input.leaky_relu(negative_slope)
def softmax(input: Tensor, dim: int = -1) -> Tensor: return input.softmax(dim)
def log_softmax(input: Tensor, dim: int = -1) -> Tensor: return input.log_softmax(dim)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor: return input.linear(weight, bias)


def embedding(input: Tensor, weight: Tensor) -> Tensor:
  """Rows of `weight` [num_embeddings, dim] at the integer indices `input`: the result has shape input.shape + (dim,)."""
  if not input.dtype.is_int: raise RuntimeError(f"embedding: indices must be an integer tensor, not {input.dtype.name}")
  return weight[input._check((input >= 0) & (input < weight.shape[0]), IndexError, "embedding: index out of range in self")]


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor: return tensor.one_hot(num_classes)


def layer_norm(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
  return input.layer_norm(normalized_shape, weight, bias, eps)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
  """As in PyTorch, the function form drops by default; pass `training=False` (e.g. `training=model_is_training`) to turn it off."""
  return input.dropout(p, training)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
  return query.scaled_dot_product_attention(key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
  return input.cross_entropy(target, ignore_index, reduction, label_smoothing, weight=weight)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
  return input.nll_loss(target, ignore_index, reduction, weight=weight)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor: return input.mse_loss(target, reduction)


def binary_cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
  return input.binary_cross_entropy(target, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
  return input.binary_cross_entropy_with_logits(target, reduction, pos_weight)


__all__ = ["relu", "sigmoid", "tanh", "silu", "erf", "gelu", "softplus", "leaky_relu", "softmax", "log_softmax", "linear", "embedding",
           "one_hot", "layer_norm", "dropout", "scaled_dot_product_attention", "cross_entropy", "nll_loss", "mse_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits"]


# ---------------------------------------------------------------- elementwise math and activations (frontend/math.py)
def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor: return input.elu(alpha)
def selu(input: Tensor, inplace: bool = False) -> Tensor: return input.selu()
def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor: return input.celu(alpha)
def relu6(input: Tensor, inplace: bool = False) -> Tensor: return input.relu6()
def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor: return input.hardtanh(min_val, max_val)
def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor: return input.hardsigmoid()
def hardswish(input: Tensor, inplace: bool = False) -> Tensor: return input.hardswish()
def mish(input: Tensor, inplace: bool = False) -> Tensor: return input.mish()
def softsign(input: Tensor) -> Tensor: return input.softsign()
def logsigmoid(input: Tensor) -> Tensor: return input.logsigmoid()
def softmin(input: Tensor, dim: int = -1) -> Tensor: return input.softmin(dim)
def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor: return input.normalize(p, dim, eps)


__all__ += ["elu", "selu", "celu", "relu6", "hardtanh", "hardsigmoid", "hardswish", "mish", "softsign", "logsigmoid", "softmin",
            "normalize"]


# ---------------------------------------------------------------- convolution family (picograd/frontend/conv.py)
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
  return input.conv1d(weight, bias, stride, padding, dilation, groups)
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
  return input.conv2d(weight, bias, stride, padding, dilation, groups)
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
  return input.conv3d(weight, bias, stride, padding, dilation, groups)
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> Tensor:
  return input.conv_transpose1d(weight, bias, stride, padding, output_padding, groups, dilation)
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> Tensor:
  return input.conv_transpose2d(weight, bias, stride, padding, output_padding, groups, dilation)
def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> Tensor:
  return input.conv_transpose3d(weight, bias, stride, padding, output_padding, groups, dilation)
def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, return_indices: bool = False):
  return input.max_pool1d(kernel_size, stride, padding, dilation, ceil_mode, return_indices)
def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, return_indices: bool = False):
  return input.max_pool2d(kernel_size, stride, padding, dilation, ceil_mode, return_indices)
def max_pool3d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, return_indices: bool = False):
  return input.max_pool3d(kernel_size, stride, padding, dilation, ceil_mode, return_indices)
def avg_pool1d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
  return input.avg_pool1d(kernel_size, stride, padding, ceil_mode, count_include_pad)
def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
  return input.avg_pool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
def avg_pool3d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
  return input.avg_pool3d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
def max_unpool2d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
  return input.max_unpool2d(indices, kernel_size, stride, padding, output_size)
def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
  """PyTorch's F.unfold (im2col), not Tensor.unfold (sliding slices of one dim)."""
  return input.im2col(kernel_size, dilation, padding, stride)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
  return input.pad(pad, 0.0 if value is None else value, mode)
def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
  return input.interpolate(size, scale_factor, mode, align_corners)


__all__ += ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "max_pool1d", "max_pool2d", "max_pool3d",
            "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_unpool2d", "unfold", "pad", "interpolate"]
