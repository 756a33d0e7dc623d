"""picograd.optim: SGD, Adam and AdamW against PyTorch over several steps, in-place updates, no recompiles, the LR schedule."""
import math
import numpy as np
import pytest
import picograd
from picograd import Tensor, nn, optim
from picograd.engine import realize as engine

torch = pytest.importorskip("torch")


class _Tiny:
  def __init__(self):
    self.l1, self.l2 = nn.Linear(5, 8), nn.Linear(8, 3)

  def __call__(self, x: Tensor) -> Tensor: return self.l2(self.l1(x).tanh())


def _torch_twin(model: _Tiny):
  twin = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
  sd = {k.replace("l1", "0").replace("l2", "2"): torch.from_numpy(v.numpy().copy()) for k, v in nn.state_dict(model).items()}
  twin.load_state_dict(sd)
  return twin


def _batches(n: int):
  rng = np.random.default_rng(0)
  return [(rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6).astype(np.int32)) for _ in range(n)]


CASES = [
  (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
  (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
  (optim.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
  (optim.Adam, torch.optim.Adam, {"lr": 0.01}),
  (optim.Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
  (optim.AdamW, torch.optim.AdamW, {"lr": 0.01}),
  (optim.AdamW, torch.optim.AdamW, {"lr": 0.02, "weight_decay": 0.5, "eps": 1e-6}),
]


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", CASES, ids=lambda c: getattr(c, "__name__", None) or str(c))
def test_matches_pytorch(ours_cls, theirs_cls, kwargs):
  model = _Tiny()
  twin = _torch_twin(model)
  opt, topt = ours_cls(nn.get_parameters(model), **kwargs), theirs_cls(twin.parameters(), **kwargs)
  for step, (x, y) in enumerate(_batches(6)):
    if step == 3:  # a learning-rate change mid-run reaches the update
      opt.lr = topt.param_groups[0]["lr"] = kwargs["lr"] / 2
    loss = model(Tensor(x)).cross_entropy(Tensor(y))
    opt.zero_grad(); loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    tloss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y).long())
    topt.zero_grad(); tloss.backward(); topt.step()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
  for (name, ours), theirs in zip(nn.state_dict(model).items(), twin.state_dict().values()):
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def _train_steps(opt, model, batches):
  for x, y in batches:
    loss = model(Tensor(x)).cross_entropy(Tensor(y))
    opt.zero_grad(); loss.backward()
    Tensor.realize(loss, *opt.schedule_step())


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.AdamW(p, lr=0.01)])
def test_updates_in_place_without_recompiling(make):
  model = _Tiny()
  params = nn.get_parameters(model)
  opt = make(params)
  state = params + [t for t in nn.state_dict(opt).values()]
  _train_steps(opt, model, _batches(2))  # compiles
  buffers = [engine.buffer_of(t) for t in state]
  schedules, hits = engine.stats["schedules"], engine.stats["cache_hits"]
  for step in range(4):
    opt.lr = 0.01 * (step + 1)  # a new learning rate every step
    _train_steps(opt, model, _batches(1))
  # the same buffers hold the parameters and the optimizer state: memory does not grow over steps
  assert [engine.buffer_of(t) for t in state] == buffers
  assert all(engine.buffer_of(t) is b for t, b in zip(state, buffers))
  # every schedule (the steps and the learning-rate writes) came from the cache: nothing was recompiled
  assert engine.stats["cache_hits"] - hits == engine.stats["schedules"] - schedules


@picograd.Context(DEV="CPU")  # kernel counts are the CPU's: the GPU may split a reduction in two
def test_update_is_a_few_kernels():
  model = _Tiny()
  opt = optim.AdamW(nn.get_parameters(model), lr=0.01)
  loss = model(Tensor(_batches(1)[0][0])).sum()
  opt.zero_grad(); loss.backward()
  gradients = picograd.schedule(*[p.grad for p in opt.params])
  step = picograd.schedule(*opt.schedule_step())
  # on top of the gradients: one kernel each for m, v and the parameter, and two for the powers of beta
  assert len(step) <= len(gradients) + 3 * len(opt.params) + 2, [k.name for k in step]


def test_step_with_jit_follows_learning_rate():
  model, twin_model = _Tiny(), _Tiny()
  nn.load_state_dict(twin_model, nn.state_dict(model))
  opt, twin = optim.Adam(nn.get_parameters(model), lr=0.01), optim.Adam(nn.get_parameters(twin_model), lr=0.01)

  @picograd.jit
  def step(x: Tensor, y: Tensor) -> Tensor:
    loss = model(x).cross_entropy(y)
    opt.zero_grad(); loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss

  for i, (x, y) in enumerate(_batches(5)):
    opt.lr = twin.lr = 0.01 / (i + 1)
    step(Tensor(x), Tensor(y))  # replayed from the third call on
    _train_steps(twin, twin_model, [(x, y)])
  for ours, ref in zip(nn.state_dict(model).values(), nn.state_dict(twin_model).values()):
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)


def test_parameters_without_gradient_are_left_alone():
  a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0], requires_grad=True)
  opt = optim.SGD([a, b, a], lr=0.5)  # duplicates are dropped
  assert len(opt.params) == 2
  (a * a).sum().backward()
  opt.step()
  np.testing.assert_allclose(a.numpy(), [0.0, 0.0]); np.testing.assert_allclose(b.numpy(), [3.0])


def test_bad_arguments():
  with pytest.raises(ValueError, match="empty"): optim.SGD([], lr=0.1)
  with pytest.raises(ValueError, match="non-negative"): optim.SGD([Tensor([1.0])], lr=-1)
  with pytest.raises(ValueError, match="Nesterov"): optim.SGD([Tensor([1.0])], lr=0.1, nesterov=True)
  with pytest.raises(ValueError, match="betas"): optim.Adam([Tensor([1.0])], betas=(1.0, 0.9))


def test_optimizer_state_round_trip(tmp_path):
  model = _Tiny()
  opt = optim.AdamW(nn.get_parameters(model), lr=0.01)
  _train_steps(opt, model, _batches(3))
  path = str(tmp_path / "ckpt.safetensors")
  nn.state.save(nn.state_dict({"model": model, "opt": opt}), path)
  model2 = _Tiny()
  opt2 = optim.AdamW(nn.get_parameters(model2), lr=0.01)
  nn.load_state_dict({"model": model2, "opt": opt2}, nn.state.load(path))
  # the resumed run continues exactly like the original one
  _train_steps(opt, model, _batches(2)); _train_steps(opt2, model2, _batches(2))
  for a, b in zip(nn.state_dict(model).values(), nn.state_dict(model2).values()): np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_cosine_warmup():
  lr = lambda s: optim.cosine_warmup(s, max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
  assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
  assert lr(10) == pytest.approx(1.0) and lr(60) == pytest.approx(0.55) and lr(110) == pytest.approx(0.1) and lr(500) == 0.1
  assert all(lr(s) >= lr(s + 1) for s in range(10, 120))
  assert lr(35) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
