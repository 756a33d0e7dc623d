"""Mixed precision: `picograd.autocast` follows PyTorch's policy (16-bit matrix products, float32 softmax/norms/losses),
keeps float32 parameters and gradients, fuses its casts, and agrees with PyTorch's explicit-cast computation."""
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor, dtypes

BF16 = 2e-2  # bfloat16 keeps 8 significant bits


def rnd(*shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("low", [dtypes.bfloat16, dtypes.float16])
def test_matmul_and_linear_run_in_the_autocast_type(device, low):
  x, w, b = rnd(8, 16), rnd(12, 16, seed=1), rnd(12, seed=2)
  tlow = torch.bfloat16 if low == dtypes.bfloat16 else torch.float16
  with picograd.autocast(low):
    mm = Tensor(x, device=device) @ Tensor(w, device=device).T
    lin = Tensor(x, device=device).linear(Tensor(w, device=device), Tensor(b, device=device))
  assert mm.dtype == low and lin.dtype == low
  ref = torch.nn.functional.linear(torch.tensor(x).to(tlow), torch.tensor(w).to(tlow), torch.tensor(b).to(tlow))
  np.testing.assert_allclose(lin.float().numpy(), ref.float().numpy(), rtol=BF16, atol=BF16)
  np.testing.assert_allclose(mm.float().numpy(), (torch.tensor(x).to(tlow).float() @ torch.tensor(w).to(tlow).float().T).numpy(), rtol=BF16, atol=BF16)


def test_precision_sensitive_ops_compute_in_float32(device):
  x = rnd(4, 10)
  with picograd.autocast():
    h = Tensor(x, device=device) @ Tensor(rnd(10, 10, seed=1), device=device)
    assert h.dtype == dtypes.bfloat16
    assert h.softmax(-1).dtype == dtypes.float32 and h.log_softmax(-1).dtype == dtypes.float32
    assert h.layer_norm(10).dtype == dtypes.float32 and h.logsumexp(-1).dtype == dtypes.float32
    target = Tensor(np.array([1, 0, 3, 9], np.int64), device=device)
    loss = h.cross_entropy(target)
    assert loss.dtype == dtypes.float32
    assert (h + Tensor(x, device=device)).dtype == dtypes.float32  # a 16-bit tensor meets a float32 one: float32
    assert h.relu().dtype == dtypes.bfloat16  # everything else keeps its input's type
  hb = torch.tensor(h.float().numpy())
  np.testing.assert_allclose(loss.numpy(), torch.nn.functional.cross_entropy(hb, torch.tensor([1, 0, 3, 9])).numpy(), rtol=1e-5, atol=1e-5)


def test_parameters_and_gradients_stay_float32(device):
  """A training step under autocast: float32 weights, float32 gradients close to PyTorch's autocast gradients."""
  x, w1, w2 = rnd(16, 32), rnd(32, 24, seed=1) * 0.2, rnd(24, 5, seed=2) * 0.2
  target = np.arange(16) % 5
  W1, W2 = Tensor(w1, device=device, requires_grad=True), Tensor(w2, device=device, requires_grad=True)
  with picograd.autocast():
    loss = (Tensor(x, device=device) @ W1).gelu().matmul(W2).cross_entropy(Tensor(target.astype(np.int64), device=device))
  loss.backward()
  assert W1.grad.dtype == dtypes.float32 and W2.grad.dtype == dtypes.float32
  t1, t2 = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)
  with torch.autocast("cpu", dtype=torch.bfloat16):
    tl = torch.nn.functional.cross_entropy(torch.nn.functional.gelu(torch.tensor(x) @ t1) @ t2, torch.tensor(target))
  tl.backward()
  np.testing.assert_allclose(loss.numpy(), tl.detach().float().numpy(), rtol=BF16, atol=BF16)
  np.testing.assert_allclose(W1.grad.numpy(), t1.grad.numpy(), rtol=5e-2, atol=5e-3)
  np.testing.assert_allclose(W2.grad.numpy(), t2.grad.numpy(), rtol=5e-2, atol=5e-3)


def test_conv_and_attention_under_autocast(device):
  x, w = rnd(2, 3, 8, 8), rnd(4, 3, 3, 3, seed=1)
  q, k, v = rnd(2, 2, 6, 8), rnd(2, 2, 6, 8, seed=1), rnd(2, 2, 6, 8, seed=2)
  with picograd.autocast():
    c = Tensor(x, device=device).conv2d(Tensor(w, device=device), padding=1)
    a = Tensor(q, device=device).scaled_dot_product_attention(Tensor(k, device=device), Tensor(v, device=device), is_causal=True)
  assert c.dtype == dtypes.bfloat16 and a.dtype == dtypes.bfloat16
  tc = torch.nn.functional.conv2d(torch.tensor(x).bfloat16().float(), torch.tensor(w).bfloat16().float(), padding=1)
  np.testing.assert_allclose(c.float().numpy(), tc.numpy(), rtol=BF16, atol=BF16)
  ta = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(t).bfloat16().float() for t in (q, k, v)), is_causal=True)
  np.testing.assert_allclose(a.float().numpy(), ta.numpy(), rtol=3e-2, atol=3e-2)


def test_nesting_decorator_and_bad_dtype():
  x = Tensor(rnd(3, 3))
  with picograd.autocast():
    with picograd.autocast(enabled=False):
      assert (x @ x).dtype == dtypes.float32
    assert (x @ x).dtype == dtypes.bfloat16
  assert (x @ x).dtype == dtypes.float32

  @picograd.autocast(dtypes.float16)
  def f(t: Tensor) -> Tensor: return t @ t
  assert f(x).dtype == dtypes.float16 and (x @ x).dtype == dtypes.float32
  with pytest.raises(ValueError, match="float16 or bfloat16"): picograd.autocast(dtypes.float32)
  # float64 operands are left alone, as in PyTorch
  with picograd.autocast(): assert (x.double() @ x.double()).dtype == dtypes.float64


def test_autocast_casts_fuse_into_the_product():
  """The casts autocast adds are read inside the matmul kernel: `x @ w` is still one kernel (and its gradient one per operand)."""
  x, w = Tensor(rnd(16, 32)), Tensor(rnd(32, 8, seed=1), requires_grad=True)
  with picograd.autocast():
    out = x @ w
  assert len(picograd.schedule(out)) == 1
  out.float().sum().backward()
  assert len(picograd.schedule(w.grad)) == 1


def test_to_dtype_casts_float_tensors_in_place():
  from picograd import nn
  lin, table = nn.Linear(4, 3), Tensor(np.arange(6, dtype=np.int32))
  model = {"lin": lin, "table": table}
  weight = lin.weight
  values = weight.numpy()
  assert nn.to_dtype(model, dtypes.bfloat16) is model
  assert lin.weight is weight and weight.dtype == dtypes.bfloat16 and weight.requires_grad and lin.bias.dtype == dtypes.bfloat16
  assert table.dtype == dtypes.int32  # integer tables are left alone
  np.testing.assert_allclose(weight.float().numpy(), values, rtol=1e-2)


@pytest.mark.parametrize("opt_name", ["SGD", "AdamW"])
def test_optimizers_keep_float32_masters_of_16_bit_parameters(opt_name):
  """Updates far below a bfloat16 step still add up: the master is float32, the parameter its rounding."""
  from picograd import optim
  p = Tensor(np.ones(4, np.float32), requires_grad=True).cast(dtypes.bfloat16).contiguous().realize()
  p.requires_grad = True
  opt = optim.SGD([p], lr=1e-4) if opt_name == "SGD" else optim.AdamW([p], lr=1e-4, weight_decay=0.0)
  assert opt.masters[0] is not None and opt.masters[0].dtype == dtypes.float32
  for _ in range(100):
    opt.zero_grad()
    (p.float() * 1.0).sum().backward()
    opt.step()
  master = opt.masters[0].numpy()
  np.testing.assert_allclose(master, 1 - 100 * 1e-4, rtol=1e-4)  # pure bfloat16 updates would have stayed at 1.0
  assert p.dtype == dtypes.bfloat16
  np.testing.assert_array_equal(p.float().numpy(), Tensor(master).cast(dtypes.bfloat16).float().numpy())
  if opt_name == "AdamW": assert opt.m[0].dtype == dtypes.float32 and opt.v[0].dtype == dtypes.float32


def test_sdpa_keeps_its_scores_in_float32():
  """The scores of 16-bit attention are the float32 sums of the 16-bit products, not rounded back to 16 bits (as PyTorch's
  flash and memory-efficient SDPA kernels keep them); the softmax weights are rounded to 16 bits for the second product.
  Closer to float32 attention than the scores rounded first were."""
  from picograd.ir.ops import Ops, toposort
  q, k, v = rnd(2, 2, 16, 8), rnd(2, 2, 16, 8, seed=1), rnd(2, 2, 16, 8, seed=2)
  with picograd.autocast():
    out = Tensor(q).scaled_dot_product_attention(Tensor(k), Tensor(v), is_causal=True)
  row_max = next(n for n in toposort([out.uop]) if n.op is Ops.REDUCE and n.arg[0] is Ops.MAX)
  # everything the softmax's max reads back to the products: float32 (before, the scores were rounded to bfloat16 first)
  scores = [n for n in toposort([row_max.src[0]], stop=lambda n: n.op is Ops.REDUCE) if n.tshape[2:4] == (16, 16)]
  assert scores and not any(n.dtype in (dtypes.bfloat16, dtypes.float16) for n in scores), [(n.op, n.dtype) for n in scores]
  exact = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(t).bfloat16().double() for t in (q, k, v)), is_causal=True)
  np.testing.assert_allclose(out.float().numpy(), exact.numpy(), rtol=1e-2, atol=1e-2)
