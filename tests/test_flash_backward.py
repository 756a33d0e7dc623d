"""Attention's backward pass without T x T work or memory: the reassociation of nested sums (engine/reassociate.py: the
softmax gradient's row term sum_j P_ij dP_ij read as sum_d dO_id O_id) and the scores recomputed inside the reductions
reading them (engine/recompute.py, RECOMPUTE_MIN), checked on the schedule and against PyTorch's values and gradients on
CPU and PYTHON."""
import re
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor
from picograd.engine import realize, schedule
from picograd.helpers import Context
from compare import rand
from gradcheck import assert_close_to_torch

B, H, T, D = 2, 3, 16, 8
F = torch.nn.functional


def _qkv(seed: int = 0) -> list[np.ndarray]:
  return [rand((B, H, T, D), seed=seed + i) for i in range(3)]


def _mask() -> np.ndarray:
  m = np.random.default_rng(5).random((T, T)) > 0.4
  m[:, 0] = True  # every query sees a key (the hand-written softmax of a row of -inf is NaN, PyTorch's too)
  return m


def _float_mask(m: np.ndarray) -> np.ndarray: return np.where(m, 0.0, -np.inf).astype(np.float32)


def _hand(q, k, v, mask):
  """softmax(q k^T * s + mask) v written out, for picograd and torch tensors alike."""
  return ((q @ k.transpose(-2, -1)) * 0.3 + mask).softmax(-1) @ v


def _grad_steps(device: str, attention) -> list:
  q, k, v = (Tensor(a, device=device, requires_grad=True) for a in _qkv())
  out = attention(q, k, v)
  grads = (out * Tensor(rand((B, H, T, D), seed=9), device=device)).sum().gradient(q, k, v)
  return picograd.schedule(out, *grads)


def _row_term_reads_o(steps: list) -> bool:
  """Is there a kernel writing one value per query (B*H*T) that reads two B*H*T*D buffers (dO and O) and no score matrix?"""
  return any(s.buffers[0].size == B * H * T and sum(b.size == B * H * T * D for b in s.buffers[1:]) == 2
             and all(b.size < B * H * T * T for b in s.buffers) for s in steps)


def _without_reassociation(monkeypatch) -> None:
  monkeypatch.setattr(schedule, "REASSOCIATE_DEVICES", set())
  monkeypatch.setattr(realize, "_templates", {})  # schedules cached with the rewrite must not be found


ATTENTIONS = {
  "sdpa": lambda q, k, v: q.scaled_dot_product_attention(k, v),
  "causal": lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=True),
  "dropout": lambda q, k, v: q.scaled_dot_product_attention(k, v, dropout_p=0.3),
  "hand": lambda q, k, v: _hand(q, k, v, Tensor(_float_mask(_mask()), device=q.device)),
}


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_softmax_gradient_row_term_reads_the_output(device, name, monkeypatch):
  # the row term of softmax's gradient is a sum over the head dimension of dO * O: no kernel sums P * dP over the keys
  # (from the size recomputed scores may have: below it, as at these sizes by default, the graph stays as it is; the
  # scores are kept stored here, so that the row term is all that changes)
  if device not in schedule.REASSOCIATE_DEVICES: pytest.skip(f"{device} keeps its graphs (engine/schedule.py REASSOCIATE_DEVICES)")
  assert not _row_term_reads_o(_grad_steps(device, ATTENTIONS[name]))
  monkeypatch.setattr(schedule, "RECOMPUTE_DEVICES", set())
  with Context(RECOMPUTE_MASKED_MIN=B * H * T * T):
    assert _row_term_reads_o(_grad_steps(device, ATTENTIONS[name]))
    _without_reassociation(monkeypatch)
    assert not _row_term_reads_o(_grad_steps(device, ATTENTIONS[name]))


def test_stacked_attentions_reassociate_every_row_term(device):
  """Two attentions in a row (a GPT's layers): the later one's row term lies inside the gradient flowing into the earlier
  one, which is rewritten too. Both rewrites must land in the graph: the earlier layer's new row term once kept the later
  layer's old sum over P * dP, whose score product was then read outside a reduction and stored (GPT large on CUDA: five
  of six layers stored dP)."""
  if device not in schedule.RECOMPUTE_DEVICES: pytest.skip(f"{device} stores the scores (engine/schedule.py RECOMPUTE_DEVICES)")
  q, k, v = (Tensor(a, device=device, requires_grad=True) for a in _qkv())
  with Context(RECOMPUTE_MASKED_MIN=B * H * T * T):  # (causal scores are recomputed when every path to a sum is masked)
    first = q.scaled_dot_product_attention(k, v, is_causal=True)
    second = first.scaled_dot_product_attention(k, first, is_causal=True)
    grads = (second * Tensor(rand((B, H, T, D), seed=9), device=device)).sum().gradient(q, k, v)
    steps = picograd.schedule(second, *grads)
    assert all(b.size < B * H * T * T for s in steps for b in s.buffers)
    got = [g.numpy() for g in grads]
  tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in _qkv())
  t_first = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
  F.scaled_dot_product_attention(t_first, tk, t_first, is_causal=True).backward(torch.tensor(rand((B, H, T, D), seed=9)))
  for g, t in zip(got, (tq, tk, tv)): np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-5)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_backward_has_no_score_buffer(device, name):
  # forward and backward: the max and the sum of each row are stored (T values per head), no B*H*T*T buffer
  if device not in schedule.RECOMPUTE_DEVICES: pytest.skip(f"{device} stores the scores (engine/schedule.py RECOMPUTE_DEVICES)")
  with Context(RECOMPUTE_MIN=0):
    steps = _grad_steps(device, ATTENTIONS[name])
    assert all(b.size < B * H * T * T for s in steps for b in s.buffers)
    assert len(steps) <= 7  # max, sum, O, dV, the row term, dQ, dK
    if device == "CPU":
      # every kernel that recomputes scores renders them as register tiles (codegen/cpu_flash_bwd.py); passes are shared
      # (engine/outputs.py recomputed_groups): the rows' max and sum (the flash renderer stores the max beside the sum),
      # and sums over either axis of one product (dQ beside dK; here dO is given, so O and dV too)
      assert len(steps) == 4 and sum(_is_tiled(s) for s in steps) == 3 and _stores_statistics(steps) == 1
      assert sum(any("crosswise" in o for o in s.kernel.opts) for s in steps if s.kernel is not None) == 2
  if device == "CPU":
    with Context(RECOMPUTE_MIN=0, ONLINE_SOFTMAX_MIN=0):  # scores this small in one online pass: O joins them
      steps = _grad_steps(device, ATTENTIONS[name])
      assert len(steps) == 3 and sum(_is_tiled(s) for s in steps) == 2 and _stores_statistics(steps) == 2
  with Context(RECOMPUTE_MIN=B * H * T * T + 1):  # below the flag's size: stored
    assert any(b.size == B * H * T * T for s in _grad_steps(device, ATTENTIONS[name]) for b in s.buffers)


def test_positionally_masked_scores_are_recomputed_first(device):
  # RECOMPUTE_MASKED_MIN: scores every reader sees through a mask made from positions (causal) are recomputed from a smaller
  # size than others (whole blocks above the diagonal are skipped); a mask read from a buffer says nothing about blocks
  if device not in schedule.RECOMPUTE_DEVICES: pytest.skip(f"{device} stores the scores (engine/schedule.py RECOMPUTE_DEVICES)")
  with Context(RECOMPUTE_MASKED_MIN=0):
    for name, recomputed in (("causal", True), ("sdpa", False), ("hand", False)):
      stored = any(b.size == B * H * T * T for s in _grad_steps(device, ATTENTIONS[name]) for b in s.buffers)
      assert stored != recomputed, name
    bool_mask = lambda q, k, v: q.scaled_dot_product_attention(k, v, attn_mask=Tensor(_mask(), device=q.device))
    assert any(b.size == B * H * T * T for s in _grad_steps(device, bool_mask) for b in s.buffers)


def test_queries_that_see_no_key_match_torch(device):
  # by hand, a bool mask through where(mask, x, -inf): the rows that see no key (a whole tile of them) are NaN in the output
  # and dV, and add nothing to dQ and dK, as in PyTorch, with the scores recomputed too
  m = _mask()
  m[3:11] = False
  hand = lambda q, k, v, mask: ((q @ k.transpose(-2, -1)) * 0.3).where(mask, float("-inf")).softmax(-1) @ v
  torch_hand = lambda q, k, v, mask: ((q @ k.transpose(-2, -1)) * 0.3).masked_fill(~mask, float("-inf")).softmax(-1) @ v
  arrays, g = _qkv(4), rand((B, H, T, D), seed=9)
  tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrays)
  (torch_hand(tq, tk, tv, torch.tensor(m)) * torch.tensor(g)).sum().backward()
  for recompute in (False, True):
    with Context(RECOMPUTE_MIN=0 if recompute else 1 << 62):
      q, k, v = (Tensor(a, device=device, requires_grad=True) for a in arrays)
      (hand(q, k, v, Tensor(m, device=device)) * Tensor(g, device=device)).sum().backward()
      for got, want in ((q.grad, tq.grad), (k.grad, tk.grad), (v.grad, tv.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5, equal_nan=True)


def _is_tiled(step) -> bool:
  """Does the step's CPU kernel compute its scores as register tiles (codegen/cpu_flash_bwd.py, cpu_flash.py)?"""
  return step.kernel is not None and any(o.startswith(("recomputed scores", "flash attention")) for o in step.kernel.opts)


def _stores_statistics(steps: list) -> int:
  """How many row statistics the flash kernels among `steps` store beside their sum."""
  found = [re.search(r"(\d) row statistic", o) for s in steps if s.kernel is not None for o in s.kernel.opts]
  return sum(int(m.group(1)) for m in found if m)


def test_causal_blocks_are_skipped_under_dropout():
  """A term whose causal mask sits under dropout's (the GPT's O and dV: P times the mask) still finds its positional gate:
  every kernel over recomputed scores skips the blocks above the diagonal (before, the dropout mask's gate, which reads
  the generator's counter, was found first and nothing was skipped)."""
  from picograd.engine.compile import _kernels
  from picograd.codegen.cpu_flash_bwd import match_recomputed
  from picograd.codegen.lower import lower_kernel
  from picograd.ir.ops import Ops, toposort
  with Context(RECOMPUTE_MIN=0):
    Tensor.manual_seed(2)
    steps = _grad_steps("CPU", lambda q, k, v: q.scaled_dot_product_attention(k, v, dropout_p=0.3, is_causal=True))
    realize.run_steps(steps)
  recomputing = [s for s in steps if s.kernel is not None and any(o.startswith("recomputed scores") for o in s.kernel.opts)]
  asts = [key[0] for s in recomputing for key, k in _kernels.items() if k is s.kernel]
  matched = [match_recomputed(lower_kernel(ast)) for ast in asts]
  assert len(matched) >= 2 and all(f is not None and f.gate is not None for f in matched)
  assert all(not any(n.op is Ops.LOAD for n in toposort([f.gate])) for f in matched if f is not None and f.gate is not None)


def test_odd_shapes_and_grouped_heads_match_torch(device):
  # 20 queries over 37 keys (a partial block of keys, a partial tile of rows), head size 12, values 5 wide, grouped heads
  rng = np.random.default_rng(3)
  q, k, v = (rng.standard_normal(sh).astype(np.float32) for sh in ((2, 4, 20, 12), (2, 2, 37, 12), (2, 2, 37, 5)))
  mask = rng.random((20, 37)) > 0.3
  mask[:, 0] = True
  fn = lambda q, k, v, m: q.scaled_dot_product_attention(k, v, attn_mask=m, enable_gqa=True)
  with Context(RECOMPUTE_MIN=0):
    assert_close_to_torch(fn, [q, k, v], device=device, extra=[Tensor(mask, device=device)], torch_extra=[torch.tensor(mask)],
                          torch_fn=lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True))
    if device == "CPU":
      xs = [Tensor(a, device=device, requires_grad=True) for a in (q, k, v)]
      out = fn(*xs, Tensor(mask, device=device))
      assert sum(_is_tiled(s) for s in picograd.schedule(*out.sum().gradient(*xs))) >= 3


@pytest.mark.parametrize("causal", [False, True])
def test_dq_shares_the_pass_of_dk_and_dv(device, causal):
  """On the CPU dQ (a sum over the keys) joins dK and dV (sums over the queries) in one pass over the recomputed scores:
  each tile of keys adds its share into a buffer of the head's dQ (codegen/cpu_flash_bwd.py, crosswise). 41 queries and
  keys (a partial tile of rows and block of keys), head size 12 (a partial vector), against PyTorch."""
  fn = lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=causal)
  arrays = [rand((2, 3, 41, 12), seed=i) for i in range(3)]
  with Context(RECOMPUTE_MIN=0, ONLINE_SOFTMAX_MIN=0):
    assert_close_to_torch(fn, arrays, device=device, torch_fn=lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    if device == "CPU":
      xs = [Tensor(a, device=device, requires_grad=True) for a in arrays]
      steps = picograd.schedule(*fn(*xs).sum().gradient(*xs))
      assert any("crosswise" in o for s in steps if s.kernel is not None for o in s.kernel.opts)


def test_a_layer_product_is_stored(device):
  # x @ W has no batch axis shared by both factors: the rule leaves it stored however small its inner sum
  with Context(RECOMPUTE_MIN=0):
    x, w, w2 = (Tensor(rand(sh, seed=i), device=device, requires_grad=True) for i, sh in enumerate([(64, 16), (16, 64), (64, 8)]))
    h = (x @ w).relu() @ w2
    steps = picograd.schedule(h, *h.sum().gradient(x, w, w2))
    assert any(b.size == 64 * 64 for s in steps for b in s.buffers)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("kind", ["plain", "causal", "bool", "float", "hand"])
def test_attention_gradients_match_torch(device, kind, recompute):
  with Context(RECOMPUTE_MIN=0 if recompute else 1 << 62): _gradients_match_torch(device, kind)


def _gradients_match_torch(device: str, kind: str) -> None:
  m = _mask()
  if kind == "hand":
    fn = lambda q, k, v, mask: _hand(q, k, v, mask)
    mask = _float_mask(m)
    assert_close_to_torch(fn, _qkv(1), device=device, extra=[Tensor(mask, device=device)], torch_extra=[torch.tensor(mask)])
    return
  kw = {"plain": {}, "causal": {"is_causal": True}}.get(kind)
  if kw is not None:
    assert_close_to_torch(lambda q, k, v: q.scaled_dot_product_attention(k, v, **kw), _qkv(1), device=device,
                          torch_fn=lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw))
    return
  mask = m if kind == "bool" else _float_mask(m)
  assert_close_to_torch(lambda q, k, v, mask: q.scaled_dot_product_attention(k, v, attn_mask=mask, scale=0.7), _qkv(1), device=device,
                        torch_fn=lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.7),
                        extra=[Tensor(mask, device=device)], torch_extra=[torch.tensor(mask)])


def test_dropout_gradients_match_the_stored_graph(device, monkeypatch):
  # the same counter-RNG mask either way: the reassociated gradients, and those from recomputed scores (the mask drawn
  # inside each kernel), equal the ones computed through P * dP
  def grads() -> list[np.ndarray]:
    Tensor.manual_seed(4)
    q, k, v = (Tensor(a, device=device, requires_grad=True) for a in _qkv(2))
    (q.scaled_dot_product_attention(k, v, dropout_p=0.3, is_causal=True) * Tensor(rand((B, H, T, D), seed=9), device=device)).sum().backward()
    return [t.grad.numpy() for t in (q, k, v)]
  new = grads()
  with Context(RECOMPUTE_MIN=0): recomputed = grads()
  for a, b in zip(new, recomputed): np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  _without_reassociation(monkeypatch)
  for a, b in zip(new, grads()): np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
