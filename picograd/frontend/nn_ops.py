"""Linear algebra and neural-network composites (frontend layer): matmul, linear, layer_norm, dropout, one_hot, attention, losses.

PyTorch's names and semantics, built from the Tensor's primitives: matmul is a broadcast
product reduced over the inner dimension; the losses pick class scores with one-hot sums, so
they stay fusable and their gradients are the matching scatters.
"""
from __future__ import annotations
import math
from typing import TYPE_CHECKING, Any, Sequence
from picograd.dtype import dtypes, promote
from picograd.helpers import ShapeError
from picograd.frontend._util import _broadcast_shape, _where
from picograd.frontend.autocast import full_precision, lower_precision
if TYPE_CHECKING: from picograd.tensor import Tensor


class NNOpsMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  def matmul(self: Any, other: "Tensor") -> "Tensor": return self._matmul(other)

  def _matmul(self: Any, other: "Tensor", accumulated: bool = False) -> "Tensor":
    """matmul; with `accumulated`, the float32 sum of 16-bit products as it is, not rounded back to 16 bits (attention's
    scores, as PyTorch's fused SDPA kernels keep them)."""
    other = self._to_tensor(other, "matmul")
    self, other = lower_precision(self, other)  # under autocast: 16-bit operands, float32 accumulation
    if self.ndim == 0 or other.ndim == 0: raise ShapeError(f"matmul: both operands need at least 1 dimension, got {self.shape} and {other.shape}")
    a = self.unsqueeze(0) if self.ndim == 1 else self
    b = other.unsqueeze(-1) if other.ndim == 1 else other
    if a.shape[-1] != b.shape[-2]:
      raise ShapeError(f"matmul: shapes {self.shape} and {other.shape} do not fit: inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
    batch = _broadcast_shape(f"matmul of {self.shape} and {other.shape}: batch dimensions", a.shape[:-2], b.shape[:-2])
    dt = promote(a.dtype, b.dtype)
    a, b = a.cast(dt), b.cast(dt)
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    # out[..., i, j] = sum_k a[..., i, k] * b[..., k, j], as a broadcast product reduced over k
    prod_ = a.reshape(*a.shape[:-2], n, 1, k)._expand_to(batch + (n, m, k)) * \
            b.transpose(-1, -2).reshape(*b.shape[:-2], 1, m, k)._expand_to(batch + (n, m, k))
    out = prod_.sum(-1, dtype=dtypes.float32 if accumulated and dt in (dtypes.float16, dtypes.bfloat16) else dt)
    if self.ndim == 1: out = out.squeeze(-2)
    if other.ndim == 1: out = out.squeeze(-1)
    return out
  def dot(self: Any, other: "Tensor") -> "Tensor": return self.matmul(other)

  def linear(self: Any, weight: "Tensor", bias: "Tensor | None" = None) -> "Tensor":
    (bias,) = lower_precision(bias)  # under autocast the bias is added in the product's type, as PyTorch's addmm does
    out = self.matmul(weight.T)
    return out + bias if bias is not None else out

  def layer_norm(self: Any, normalized_shape: int | Sequence[int], weight: "Tensor | None" = None, bias: "Tensor | None" = None,
                 eps: float = 1e-5) -> "Tensor":
    """Normalize over the trailing `normalized_shape` dims to zero mean and unit biased variance, then scale and shift."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if self.ndim < len(shape) or self.shape[self.ndim - len(shape):] != shape:
      raise ShapeError(f"layer_norm: input of shape {self.shape} does not end in the normalized shape {shape}")
    axes = tuple(range(self.ndim - len(shape), self.ndim))
    x = full_precision(self._float())
    centered = x - x.mean(axes, keepdim=True)
    out = centered * ((centered * centered).mean(axes, keepdim=True) + eps).rsqrt()
    if weight is not None: out = out * weight
    return out + bias if bias is not None else out

  def dropout(self: Any, p: float = 0.5, training: bool | None = None) -> "Tensor":
    """Zero each element with probability p and scale the rest by 1/(1-p); the identity when not training.

    `training=None` follows `type(self).training`.
    """
    if not 0 <= p <= 1: raise ValueError(f"dropout: probability must be between 0 and 1, got {p}")
    if not (type(self).training if training is None else training) or p == 0: return self
    if p == 1: return self * 0
    keep = type(self).rand(*self.shape, device=self.device) >= p
    return _where(keep, self * (1 / (1 - p)), 0)

  def one_hot(self: Any, num_classes: int = -1) -> "Tensor":
    """int64 one-hot vectors along a new last dim. `num_classes=-1` reads the largest index (this realizes the tensor)."""
    if self.dtype.is_float or self.dtype == dtypes.bool: raise RuntimeError(f"one_hot: indices must be integers, not {self.dtype.name}")
    if num_classes == -1: num_classes = int(self.max().item()) + 1
    checked = self._check(self >= 0, RuntimeError, "one_hot: Class values must be non-negative.")
    checked = checked._check(checked < num_classes, RuntimeError, "one_hot: Class values must be smaller than num_classes.")
    return (checked.unsqueeze(-1) == type(self).arange(num_classes, dtype=self.dtype, device=self.device)).cast(dtypes.int64)

  def scaled_dot_product_attention(self: Any, key: "Tensor", value: "Tensor", attn_mask: "Tensor | None" = None, dropout_p: float = 0.0,
                                   is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> "Tensor":
    """softmax(q k^T * scale + mask) v with q = self. A bool `attn_mask` marks the pairs that may attend; a float one is added.

    `is_causal` lets query i see keys 0..i (the mask is aligned at the top left, as in PyTorch).
    `enable_gqa` (grouped-query attention): key and value have fewer heads (dim -3) than the query,
    a divisor of its count; each key/value head serves that many consecutive query heads.
    """
    op = "scaled_dot_product_attention"
    if is_causal and attn_mask is not None: raise ValueError(f"{op}: pass either attn_mask or is_causal, not both")
    for name, t in (("key", key), ("value", value)):
      if not isinstance(t, type(self)): raise TypeError(f"{op}: {name} must be a Tensor, not {type(t).__name__}")
      if t.ndim < 2 or self.ndim < 2:
        raise ShapeError(f"{op}: query, key and value need at least 2 dimensions, got {self.shape}, {key.shape}, {value.shape}")
    if attn_mask is not None and not isinstance(attn_mask, type(self)):
      raise TypeError(f"{op}: attn_mask must be a Tensor, not {type(attn_mask).__name__}")
    if enable_gqa and self.ndim >= 3 and key.ndim >= 3 and key.shape[-3] != self.shape[-3]:
      heads, kv_heads = self.shape[-3], key.shape[-3]
      if kv_heads == 0 or heads % kv_heads or value.ndim < 3 or value.shape[-3] != kv_heads:
        raise ShapeError(f"{op}: with enable_gqa, the heads of key {key.shape} and value {value.shape} (dim -3) must divide the query's "
                         f"{heads} ({self.shape})")
      key, value = _repeat_heads(key, heads // kv_heads), _repeat_heads(value, heads // kv_heads)
    scale = 1 / math.sqrt(self.shape[-1]) if scale is None else scale
    # 16-bit q and k: the scores stay in float32 (PyTorch's flash and memory-efficient kernels keep them so), and the softmax
    # weights are rounded to that 16-bit type for the second product
    product = promote(*(t.dtype for t in lower_precision(self, key)))
    half = product if product in (dtypes.float16, dtypes.bfloat16) else None
    scores = self._matmul(key.transpose(-2, -1), accumulated=True) * scale
    if is_causal:
      n_q, n_k = self.shape[-2], key.shape[-2]
      rows = type(self).arange(n_q, dtype=dtypes.int32, device=self.device).reshape(n_q, 1)
      attn_mask = type(self).arange(n_k, dtype=dtypes.int32, device=self.device).reshape(1, n_k) <= rows
    if attn_mask is not None:
      scores = _where(attn_mask, scores, float("-inf")) if attn_mask.dtype == dtypes.bool else scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p > 0: weights = weights.dropout(dropout_p, training=True)
    if half is not None: weights = weights.cast(half)
    out = weights.matmul(value)
    if attn_mask is None or is_causal: return out
    # a query that may attend to no key gets zeros, as PyTorch's SDPA gives (its softmax alone would be 0/0). Read from the
    # mask, not from the scores' max, so the scores stay inside the one online pass (engine/online_fusion.py)
    sees = attn_mask if attn_mask.dtype == dtypes.bool else attn_mask > float("-inf")
    return _where(sees.any(-1, keepdim=True), out, 0.0)

  def cross_entropy(self: Any, target: "Tensor", ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                    weight: "Tensor | None" = None) -> "Tensor":
    """Cross-entropy of logits `self` (classes on dim 1, or dim 0 for a single sample) against class indices or probabilities.

    Integer targets have the logits' shape without the class dim; entries equal to `ignore_index`
    add nothing and are left out of the mean. Float targets are class probabilities of the logits' shape.
    `weight` (one per class) scales each class's terms; with integer targets the mean divides by the
    summed weights of the targets, as in PyTorch (with probability targets, by the number of samples).
    """
    if not 0 <= label_smoothing <= 1: raise RuntimeError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(target, type(self)): raise TypeError(f"cross_entropy: target must be a Tensor, not {type(target).__name__}")
    class_dim = 1 if self.ndim >= 2 else 0
    w = _class_weight(self, weight, class_dim, "cross_entropy")
    logp = self.log_softmax(class_dim)
    if target.dtype.is_float:
      if target.shape != self.shape:
        raise ShapeError(f"cross_entropy: probability targets of shape {target.shape} must match the logits' {self.shape}")
      probs = target * (1 - label_smoothing) + label_smoothing / self.shape[class_dim] if label_smoothing else target
      if w is not None: probs = probs * w.reshape([-1 if d == class_dim else 1 for d in range(self.ndim)])
      return _reduce_loss(-(logp * probs).sum(class_dim), reduction, "cross_entropy")
    return _nll(logp, target, ignore_index, reduction, label_smoothing, "cross_entropy", w)

  def nll_loss(self: Any, target: "Tensor", ignore_index: int = -100, reduction: str = "mean", weight: "Tensor | None" = None) -> "Tensor":
    """Negative log-likelihood of log-probabilities `self` (classes on dim 1, or dim 0 for one sample) at integer `target`.

    `weight` (one per class) scales each sample's term by its target's weight; the mean divides by the summed weights.
    """
    if not isinstance(target, type(self)): raise TypeError(f"nll_loss: target must be a Tensor, not {type(target).__name__}")
    x = full_precision(self._float())
    return _nll(x, target, ignore_index, reduction, 0.0, "nll_loss", _class_weight(x, weight, 1 if self.ndim >= 2 else 0, "nll_loss"))

  def mse_loss(self: Any, target: "Tensor", reduction: str = "mean") -> "Tensor":
    diff = self - target
    return _reduce_loss(diff * diff, reduction, "mse_loss")

  def binary_cross_entropy(self: Any, target: "Tensor", reduction: str = "mean") -> "Tensor":
    """-(y log p + (1-y) log(1-p)) for probabilities p = self; logs are clamped at -100, as PyTorch does."""
    p = full_precision(self._float())
    loss = -(target * p.log().maximum(-100.0) + (1 - target) * (1 - p).log().maximum(-100.0))
    return _reduce_loss(loss, reduction, "binary_cross_entropy")

  def binary_cross_entropy_with_logits(self: Any, target: "Tensor", reduction: str = "mean", pos_weight: "Tensor | None" = None) -> "Tensor":
    """Binary cross-entropy of sigmoid(self), in the form that cannot overflow: (1-y) x + w (log(1 + e^-|x|) + max(-x, 0))."""
    x = full_precision(self._float())
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    # -|x| spelled as a where, so that x = 0 (zero-initialized logits) gets the one-sided derivative, not abs's 0
    neg_abs = _where(x >= 0, -x, x)
    loss = (1 - target) * x + log_weight * (neg_abs.exp().add(1).log() + (-x).relu())
    return _reduce_loss(loss, reduction, "binary_cross_entropy_with_logits")


def _repeat_heads(x: Tensor, n: int) -> Tensor:
  """Each head (dim -3) n times in a row, like x.repeat_interleave(n, -3): a broadcast, so no copy is made."""
  *batch, h, s, e = x.shape
  return x.unsqueeze(-3).expand(*batch, h, n, s, e).reshape(*batch, h * n, s, e)


def _reduce_loss(loss: Tensor, reduction: str, op: str) -> Tensor:
  if reduction == "none": return loss
  if reduction == "sum": return loss.sum()
  if reduction == "mean": return loss.mean()
  raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def _class_weight(x: Tensor, weight: Tensor | None, class_dim: int, op: str) -> Tensor | None:
  """A loss's per-class `weight`, checked against the input (PyTorch: RuntimeError unless there is one weight per class)."""
  if weight is None: return None
  if not isinstance(weight, type(x)): raise TypeError(f"{op}: weight must be a Tensor, not {type(weight).__name__}")
  n_classes = x.shape[class_dim] if x.ndim else 0
  if weight.shape != (n_classes,):
    raise ShapeError(f"{op}: weight of shape {weight.shape} must have one entry for each of the {n_classes} classes of input {x.shape}")
  if weight.device != x.device: raise RuntimeError(f"{op}: weight on {weight.device} but the input is on {x.device}")
  if not weight.dtype.is_float: raise RuntimeError(f"{op}: weight must be a floating-point tensor, not {weight.dtype.name}")
  # constants of the loss, as in PyTorch (whose nll_loss is not differentiable with respect to its weight)
  return weight.detach().cast(promote(x.dtype, weight.dtype) if x.dtype.is_float else weight.dtype)


def _nll(logp: Tensor, target: Tensor, ignore_index: int, reduction: str, label_smoothing: float, op: str, weight: Tensor | None = None) -> Tensor:
  """-logp[target] per sample (mixed with the mean over classes by `label_smoothing`), with `ignore_index` masked out.

  With a class `weight` both terms are weighted per class, and a mean divides by the targets' summed
  weights instead of their count (PyTorch's normalization, which makes weights relative).
  """
  if target.dtype.is_float or target.dtype == dtypes.bool: raise RuntimeError(f"{op}: class targets must be integers, not {target.dtype.name}")
  class_dim = 1 if logp.ndim >= 2 else 0
  n_classes = logp.shape[class_dim]
  if target.shape != logp.shape[:class_dim] + logp.shape[class_dim + 1:]:
    raise ShapeError(f"{op}: target of shape {target.shape} does not fit input of shape {logp.shape} (classes on dim {class_dim})")
  if target.device != logp.device: raise RuntimeError(f"{op}: target on {target.device} but the input is on {logp.device}")
  target = target._check((target == ignore_index) | ((target >= 0) & (target < n_classes)), IndexError, f"{op}: Target is out of bounds.")
  classes_last = logp.permute([d for d in range(logp.ndim) if d != class_dim] + [class_dim])
  if weight is not None: classes_last = classes_last * weight
  # picking logp[target] as a one-hot sum keeps it fusable, and its gradient is the matching one-hot scatter
  onehot = target.unsqueeze(-1) == type(logp).arange(n_classes, dtype=target.dtype, device=logp.device)
  picked = _where(onehot, classes_last, 0).sum(-1)
  loss = -picked
  if label_smoothing: loss = loss * (1 - label_smoothing) - classes_last.sum(-1) * (label_smoothing / n_classes)
  valid = target != ignore_index
  loss = _where(valid, loss, 0)
  if reduction != "mean": return _reduce_loss(loss, reduction, op)
  if weight is None: return loss.sum() / valid.sum().cast(loss.dtype)
  return loss.sum() / _where(onehot & valid.unsqueeze(-1), weight, 0).sum()
