"""Gradient checkpointing: the same gradients (bit for bit) with less memory, the recomputation visible in the schedule."""
import numpy as np
import pytest
import picograd
from picograd import Tensor, schedule

rng = np.random.default_rng(0)
D, H = 16, 64
X = rng.standard_normal((128, D)).astype(np.float32)
W1 = [(rng.standard_normal((D, H)) * 0.2).astype(np.float32) for _ in range(3)]
W2 = [(rng.standard_normal((H, D)) * 0.2).astype(np.float32) for _ in range(3)]
G = rng.standard_normal((D,)).astype(np.float32)


def _model(device: str, checkpoint: bool, shared: bool = False):
  """Three residual blocks (matmul, tanh, dropout) whose weights the blocks close over. With `shared` every block reads the
  first gain: its gradient then sums the blocks' contributions in kernels fused another way than without checkpoints."""
  Tensor.manual_seed(0)
  x = Tensor(X, device=device, requires_grad=True)
  gains = [Tensor(G + i, device=device, requires_grad=True) for i in range(1 if shared else 3)]
  w1 = [Tensor(w, device=device, requires_grad=True) for w in W1]
  w2 = [Tensor(w, device=device, requires_grad=True) for w in W2]

  def block(h: Tensor, i: int, scale: float) -> Tensor:
    return h + ((h * gains[i % len(gains)]) @ w1[i]).tanh().dropout(0.1) @ w2[i] * scale

  h = x
  for i in range(3): h = picograd.checkpoint(block, h, i, 0.5) if checkpoint else block(h, i, 0.5)
  return (h * h).mean(), [x, *gains, *w1, *w2]


def _gradients(device: str, checkpoint: bool, shared: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
  loss, params = _model(device, checkpoint, shared)
  return loss.numpy(), [g.numpy() for g in loss.gradient(*params)]


@pytest.mark.parametrize("device", ["CPU", "PYTHON"])
def test_gradients_identical(device: str):
  """Where the recomputation compiles to the forward's kernels, the gradients are the same bits (dropout draws the same mask)."""
  Tensor.training = True
  (l0, g0), (l1, g1) = _gradients(device, False), _gradients(device, True)
  assert l0 == l1
  for a, b in zip(g0, g1): np.testing.assert_array_equal(a, b)


def test_gradients_of_a_shared_parameter():
  """A parameter every block reads: the recomputation fuses its gradient differently from the forward (other kernels), so the
  gradients agree to rounding."""
  Tensor.training = True
  (l0, g0), (l1, g1) = _gradients("CPU", False, shared=True), _gradients("CPU", True, shared=True)
  assert l0 == l1
  for a, b in zip(g0, g1): np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_recomputation_in_schedule_and_memory(monkeypatch):
  """The checkpointed backward recomputes the blocks (more kernels: each block's forward kernels run again), the forward's
  intermediates die with the forward, and the step's peak memory drops."""
  from picograd.engine import realize
  monkeypatch.setattr(realize, "RELEASE_MIN_BYTES", 0)  # this model's intermediates are small: release them all
  runs = {}
  for checkpoint in (False, True):
    loss, params = _model("CPU", checkpoint)
    loss.backward()
    grads = [p.grad for p in params]
    steps = schedule(*grads)
    # a forward kernel runs in the backward again: the same compiled kernel, launched twice as often
    names = [s.kernel.name for s in steps if s.kernel is not None]
    picograd.reset_peak_memory("CPU")
    before = picograd.device_memory("CPU")["current"]
    Tensor.realize(*grads)
    runs[checkpoint] = (names, picograd.device_memory("CPU")["peak"] - before)
  (plain, peak0), (ck, peak1) = runs[False], runs[True]
  assert len(ck) > len(plain)
  assert any(ck.count(n) > plain.count(n) > 0 for n in set(plain)), "no forward kernel is run again"
  assert peak1 < 0.8 * peak0, (peak0, peak1)


def test_gradients_of_inputs_several_args_and_second_order():
  """Tensor arguments (also one passed twice) get gradients through the recomputation, non-tensor ones pass through; a gradient
  of a checkpointed gradient and a jvp through a checkpoint agree with the plain function's."""
  a = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
  b = Tensor(np.array([1.5, 0.25, -0.5]), requires_grad=True)
  f = lambda x, y, k: (x * y).sin() * k + x * x
  for args in ((a, b, 3.0), (a, a, 2.0)):
    plain = f(*args).sum().gradient(a, b)
    ck = picograd.checkpoint(f, *args).sum().gradient(a, b)
    for p, c in zip(plain, ck): np.testing.assert_array_equal(p.numpy(), c.numpy())
  (g,) = picograd.checkpoint(f, a, b, 3.0).sum().gradient(a)
  (gg,) = (g * g).sum().gradient(b)
  (g_plain,) = f(a, b, 3.0).sum().gradient(a)
  (gg_plain,) = (g_plain * g_plain).sum().gradient(b)
  np.testing.assert_allclose(gg.numpy(), gg_plain.numpy(), rtol=1e-12)
  _, t = picograd.jvp(lambda x: picograd.checkpoint(f, x, b, 3.0), (a,), (b,))
  _, t_plain = picograd.jvp(lambda x: f(x, b, 3.0), (a,), (b,))
  np.testing.assert_array_equal(t.numpy(), t_plain.numpy())
  with picograd.no_grad(): assert picograd.checkpoint(f, a, b, 3.0).uop is f(a, b, 3.0).uop


def test_jitted_checkpointed_step():
  """A jitted step with checkpoints replays to the same values as running it eagerly (the replay frees and retakes memory)."""
  w = Tensor(W1[0], requires_grad=True)

  def step(x: Tensor) -> Tensor:
    y = picograd.checkpoint(lambda h: (h @ w).tanh() @ w.T, x)
    (g,) = (y * y).sum().gradient(w)
    return g.realize()

  jitted = picograd.jit(step)
  for i in range(4):
    x = Tensor(X * (i + 1))
    np.testing.assert_array_equal(jitted(x).numpy(), step(Tensor(X * (i + 1))).numpy())


def test_gpt_with_a_checkpoint_per_block():
  """examples/gpt.py's --checkpoint: two blocks (attention, layer norms, GELU, dropout) give the plain model's loss and gradients."""
  import os, sys
  from dataclasses import replace
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
  import gpt
  from picograd import nn
  cfg = replace(gpt.CONFIGS["small"], n_layer=2, n_head=2, n_embd=32, block_size=16, batch=4, dropout=0.1)
  x, y = (Tensor(rng.integers(0, 65, (4, 16)).astype(np.int32)) for _ in range(2))
  Tensor.training = True
  results = []
  for checkpoint in (False, True):
    Tensor.manual_seed(0)
    model = gpt.GPT(cfg, 65, checkpoint=checkpoint)
    loss = gpt.loss_fn(model, x, y)
    params = list(nn.state_dict(model).values())
    results.append((loss.numpy(), [g.numpy() for g in loss.gradient(*params)]))
  (l0, g0), (l1, g1) = results
  assert l0 == l1
  # the recomputation's kernels fuse differently from the forward's (attention, layer norms): equal to rounding
  for a, b in zip(g0, g1): np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_device_memory_accounting():
  picograd.reset_peak_memory("CPU")
  m0 = picograd.device_memory("CPU")
  assert set(m0) == {"current", "peak", "reserved", "peak_reserved"} and m0["peak"] == m0["current"] <= m0["reserved"]
  t = Tensor.ones(1000, 1000).contiguous().realize()  # 4 MB taken
  m1 = picograd.device_memory("CPU")
  assert m1["current"] >= m0["current"] + 4_000_000 and m1["peak"] >= m1["current"]
  del t
  m2 = picograd.device_memory("CPU")
  assert m2["current"] == m1["current"] - 4_000_000 and m2["peak"] == m1["peak"]  # freed into the cache: still reserved
  assert m2["reserved"] == m1["reserved"]
