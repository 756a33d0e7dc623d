"""PyTorch's loss and attention arguments against PyTorch, forward and gradient, on every device.

nll_loss / cross_entropy: `weight` (a constant: its gradient is zero, PyTorch gives none), `ignore_index`, every `reduction`,
`label_smoothing`, probability targets; scaled_dot_product_attention: `enable_gqa`, `is_causal`,
bool and float `attn_mask`, `scale`. Few shapes, many checks: each new shape is a compile.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import picograd.nn.functional as F
from picograd import Tensor
from gradcheck import assert_close_to_torch

RNG = np.random.default_rng(8)
LOGITS = RNG.standard_normal((6, 4)).astype(np.float32)
TARGET = np.array([0, 3, 1, 3, 2, 1], np.int64)
TARGET_IGNORED = np.array([0, 3, -100, 3, 2, -100], np.int64)
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0], np.float32)
LOGITS_3D = RNG.standard_normal((2, 4, 3)).astype(np.float32)  # (batch, classes, positions)
TARGET_3D = np.array([[0, 3, 1], [2, 2, 0]], np.int64)


def _ce(picograd_kwargs: dict, target: np.ndarray):
  """A cross_entropy on (logits, weight) for picograd and for torch with the same keyword arguments."""
  def ours(x, w): return F.cross_entropy(x, Tensor(target, device=x.device), weight=w, **picograd_kwargs)
  def theirs(x, w): return TF.cross_entropy(x, torch.tensor(target), weight=w.detach(), **picograd_kwargs)
  return ours, theirs


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.2},
                                    {"label_smoothing": 0.1, "reduction": "sum"}, {"label_smoothing": 0.3, "reduction": "none"}],
                         ids=["mean", "sum", "none", "smooth-mean", "smooth-sum", "smooth-none"])
@pytest.mark.parametrize("target", [TARGET, TARGET_IGNORED], ids=["plain", "ignored"])
def test_cross_entropy_weight(device, kwargs, target):
  ours, theirs = _ce(kwargs, target)
  assert_close_to_torch(ours, [LOGITS, WEIGHT], theirs, device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_weight(device, reduction):
  def ours(x, w): return F.nll_loss(x.log_softmax(1), Tensor(TARGET_IGNORED, device=x.device), weight=w, reduction=reduction)
  def theirs(x, w): return TF.nll_loss(x.log_softmax(1), torch.tensor(TARGET_IGNORED), weight=w.detach(), reduction=reduction)
  assert_close_to_torch(ours, [LOGITS, WEIGHT], theirs, device=device)


def test_nll_loss_weight_ignore_index_is_a_class(device):
  """ignore_index may name a real class: its samples drop out of both the sum and the weight normalizer."""
  def ours(x, w): return F.nll_loss(x, Tensor(TARGET, device=x.device), weight=w, ignore_index=3)
  def theirs(x, w): return TF.nll_loss(x, torch.tensor(TARGET), weight=w.detach(), ignore_index=3)
  assert_close_to_torch(ours, [LOGITS, WEIGHT], theirs, device=device)


@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.2}, {"reduction": "none"}], ids=["mean", "smooth", "none"])
def test_weight_with_spatial_dims(device, kwargs):
  """Classes on dim 1 of a (batch, classes, positions) input, as PyTorch's K-dimensional losses."""
  def ours(x, w): return F.cross_entropy(x, Tensor(TARGET_3D, device=x.device), weight=w, **kwargs)
  def theirs(x, w): return TF.cross_entropy(x, torch.tensor(TARGET_3D), weight=w.detach(), **kwargs)
  assert_close_to_torch(ours, [LOGITS_3D, WEIGHT], theirs, device=device)


def test_weight_single_sample(device):
  """A 1-D input is one sample: its classes are dim 0 and the target is 0-d."""
  def ours(x, w): return F.cross_entropy(x, Tensor(np.int64(2), device=x.device), weight=w, label_smoothing=0.1)
  def theirs(x, w): return TF.cross_entropy(x, torch.tensor(2), weight=w.detach(), label_smoothing=0.1)
  assert_close_to_torch(ours, [LOGITS[0], WEIGHT], theirs, device=device)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"label_smoothing": 0.25}], ids=["mean", "sum", "smooth"])
def test_weight_with_probability_targets(device, kwargs):
  probs = np.abs(RNG.standard_normal((6, 4))).astype(np.float32)
  probs /= probs.sum(1, keepdims=True)
  def ours(x, p, w): return F.cross_entropy(x, p, weight=w, **kwargs)
  def theirs(x, p, w): return TF.cross_entropy(x, p, weight=w.detach(), **kwargs)
  assert_close_to_torch(ours, [LOGITS, probs, WEIGHT], theirs, device=device)


def test_weight_nan_and_all_ignored(device):
  """A NaN logit poisons only a sum it is part of; a mean over no valid target is 0/0 = NaN, as in PyTorch."""
  logits = LOGITS.copy()
  logits[2, 1] = np.nan
  kw = dict(weight=Tensor(WEIGHT, device=device), ignore_index=-100, reduction="none")
  got = F.cross_entropy(Tensor(logits, device=device), Tensor(TARGET_IGNORED, device=device), **kw).numpy()
  want = TF.cross_entropy(torch.tensor(logits), torch.tensor(TARGET_IGNORED), weight=torch.tensor(WEIGHT), reduction="none").numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  none = np.full(6, -100, np.int64)
  got = F.nll_loss(Tensor(LOGITS, device=device), Tensor(none, device=device), weight=Tensor(WEIGHT, device=device)).item()
  assert np.isnan(got) and np.isnan(TF.nll_loss(torch.tensor(LOGITS), torch.tensor(none), weight=torch.tensor(WEIGHT)).item())


def test_empty_batch(device):
  empty = np.zeros((0, 4), np.float32)
  got = F.cross_entropy(Tensor(empty, device=device), Tensor(np.zeros(0, np.int64), device=device), weight=Tensor(WEIGHT, device=device))
  assert np.isnan(got.item())
  assert np.isnan(TF.cross_entropy(torch.tensor(empty), torch.zeros(0, dtype=torch.long), weight=torch.tensor(WEIGHT)).item())


# ---------------------------------------------------------------- scaled_dot_product_attention
Q = RNG.standard_normal((2, 4, 3, 8)).astype(np.float32)  # (batch, heads, queries, dim)
KV = RNG.standard_normal((2, 2, 5, 8)).astype(np.float32)  # two key/value heads, each serving two query heads
V = RNG.standard_normal((2, 2, 5, 6)).astype(np.float32)
BOOL_MASK = RNG.random((3, 5)) < 0.7
BOOL_MASK[:, 0] = True  # every query sees at least one key
FLOAT_MASK = RNG.standard_normal((4, 3, 5)).astype(np.float32)


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.3}, {"mask": "bool"}, {"mask": "float"}, {"mask": "float", "scale": 2.0}],
                         ids=["plain", "causal", "scale", "bool-mask", "float-mask", "float-mask-scale"])
def test_sdpa_gqa(device, kwargs):
  kwargs = dict(kwargs)
  mask = {"bool": BOOL_MASK, "float": FLOAT_MASK, None: None}[kwargs.pop("mask", None)]
  def ours(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, None if mask is None else Tensor(mask, device=q.device), enable_gqa=True, **kwargs)
  def theirs(q, k, v): return TF.scaled_dot_product_attention(q, k, v, None if mask is None else torch.tensor(mask), enable_gqa=True, **kwargs)
  assert_close_to_torch(ours, [Q, KV, V], theirs, device=device)


def test_sdpa_gqa_equal_heads_and_three_dims(device):
  """enable_gqa with as many key heads as query heads changes nothing; a 3-d input has its heads on dim 0."""
  def ours(q, k, v): return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
  def theirs(q, k, v): return TF.scaled_dot_product_attention(q, k, v, enable_gqa=True)
  assert_close_to_torch(ours, [Q[0], KV[0].repeat(2, 0), V[0].repeat(2, 0)], theirs, device=device)
  assert_close_to_torch(ours, [Q[0], KV[0], V[0]], theirs, device=device)


def test_sdpa_gqa_refuses_heads_that_do_not_divide():
  q, k = Tensor(np.zeros((1, 4, 2, 8), np.float32)), Tensor(np.zeros((1, 3, 2, 8), np.float32))
  with pytest.raises(RuntimeError, match=r"enable_gqa, the heads of key \(1, 3, 2, 8\)"): F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
  with pytest.raises(RuntimeError):
    TF.scaled_dot_product_attention(torch.zeros(1, 4, 2, 8), torch.zeros(1, 3, 2, 8), torch.zeros(1, 3, 2, 8), enable_gqa=True)
  with pytest.raises(RuntimeError, match="cannot be broadcast"):  # without enable_gqa the head counts must broadcast
    F.scaled_dot_product_attention(q, Tensor(np.zeros((1, 2, 2, 8), np.float32)), Tensor(np.zeros((1, 2, 2, 8), np.float32)))
