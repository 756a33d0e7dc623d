"""JIT capture/replay: replays give the same numbers as running the function, on new inputs, with in-place updates and random draws."""
import numpy as np
import pytest
import picograd
from picograd import Tensor, Context
from conftest import CUDA_ERROR


def _make_step():
  w = Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))

  def step(x):
    noise = Tensor.rand(3)
    y = ((x @ w).tanh() + noise).sum()
    w.assign(w * 0.9 + 0.01)
    return y.realize(w), noise.realize()
  return w, step


def _run(step_fn, inputs):
  return [(y.item(), n.numpy().copy()) for y, n in (step_fn(Tensor(x)) for x in inputs)]


def test_replay_matches_eager():
  inputs = [np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32) for i in range(5)]
  Tensor.manual_seed(7)
  w_eager, eager_step = _make_step()
  eager = _run(eager_step, inputs)
  Tensor.manual_seed(7)
  w_jit, jit_step = _make_step()
  jitted = _run(picograd.jit(jit_step), inputs)
  for (ye, ne), (yj, nj) in zip(eager, jitted):
    assert ye == pytest.approx(yj, rel=1e-6)
    np.testing.assert_array_equal(ne, nj)  # random draws advance exactly as without the JIT
  np.testing.assert_allclose(w_eager.numpy(), w_jit.numpy(), rtol=1e-6)


def test_replay_launches_without_scheduling():
  from picograd.engine.realize import stats
  _, step = _make_step()
  jitted = picograd.jit(step)
  for i in range(3): jitted(Tensor(np.ones((2, 4), np.float32)))
  before = stats["schedules"]
  jitted(Tensor(np.ones((2, 4), np.float32)))
  assert stats["schedules"] == before


def test_shape_change_is_an_error():
  _, step = _make_step()
  jitted = picograd.jit(step)
  for _ in range(2): jitted(Tensor(np.ones((2, 4), np.float32)))
  with pytest.raises(ValueError, match="captured for inputs"):
    jitted(Tensor(np.ones((5, 4), np.float32)))


def test_jit_off_runs_eagerly():
  inputs = [np.full((2, 4), i, np.float32) for i in range(4)]
  Tensor.manual_seed(1)
  _, step = _make_step()
  with Context(JIT=0):
    off = _run(picograd.jit(step), inputs)
  Tensor.manual_seed(1)
  _, step2 = _make_step()
  eager = _run(step2, inputs)
  assert [y for y, _ in off] == pytest.approx([y for y, _ in eager], rel=1e-6)


# ---------------------------------------------------------------- misuse: a replay refuses what it cannot replay

def _add_step():
  return picograd.jit(lambda a, b, k=2: (a * k + b).realize())


def _ones(n=3, dtype=np.float32, device="CPU"): return Tensor(np.ones(n, dtype), device=device)


def test_aliased_arguments():
  """The same tensor twice: replays with it twice are right; with two tensors (or the other way round) they raise."""
  step = _add_step()
  x = _ones()
  for i in range(3):
    x = Tensor(np.full(3, i, np.float32))
    np.testing.assert_array_equal(step(x, x).numpy(), [3 * i] * 3)
  with pytest.raises(ValueError, match="same tensor"):
    step(Tensor(np.full(3, 10, np.float32)), _ones())
  distinct = _add_step()
  for _ in range(3): distinct(_ones(), _ones())
  with pytest.raises(ValueError, match="same tensor"):
    distinct(x, x)
  np.testing.assert_array_equal(distinct(Tensor(np.full(3, 10, np.float32)), _ones()).numpy(), [21] * 3)


@pytest.mark.parametrize("change", ["shape", "dtype", "device", "count"])
def test_changed_inputs_raise(change):
  step = picograd.jit(lambda *xs: sum(xs[1:], xs[0] * 2).realize())
  for _ in range(3): step(_ones(), _ones())
  other = {"shape": (_ones(4), _ones()), "dtype": (_ones(dtype=np.int32), _ones()), "device": (_ones(device="PYTHON"), _ones(device="PYTHON")),
           "count": (_ones(), _ones(), _ones())}[change]
  with pytest.raises(ValueError, match="captured for inputs"):
    step(*other)


def test_changed_python_arguments_raise():
  step = _add_step()
  for _ in range(3): step(_ones(), _ones(), k=2)
  with pytest.raises(ValueError, match="non-tensor arguments"):
    step(_ones(), _ones(), k=3)
  np.testing.assert_array_equal(step(_ones(), _ones(), k=2).numpy(), [3] * 3)


def test_arguments_by_keyword_and_in_containers():
  """Inputs are matched by parameter, whatever the call's keyword order, and found inside lists and dicts."""
  step = picograd.jit(lambda b, a: (a * 3 + b).realize())
  for _ in range(3): step(_ones(), _ones())
  np.testing.assert_array_equal(step(a=Tensor(np.full(3, 10, np.float32)), b=_ones()).numpy(), [31] * 3)
  nested = picograd.jit(lambda xs, d: (xs[0] - xs[1] + d["c"]).realize())
  for _ in range(3): nested([_ones(), _ones()], {"c": _ones()})
  out = nested([Tensor(np.full(3, 10, np.float32)), Tensor(np.full(3, 4, np.float32))], {"c": Tensor(np.full(3, 0.5, np.float32))})
  np.testing.assert_array_equal(out.numpy(), [6.5] * 3)


# ---------------------------------------------------------------- numpy arrays as inputs

@pytest.mark.parametrize("device", ["CPU", "PYTHON"])
def test_array_inputs_match_eager(device):
  """Arrays become tensors on the jit's device; replays copy each call's array into the captured buffer (also an array
  changed in place and passed again), and compute what eager code given `Tensor(x)` does."""
  inputs = [np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32) for i in range(5)]
  w = Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), device=device)
  seen: list[str] = []

  def step(x, idx):
    seen.append(x.device)
    y = ((x @ w).tanh().sum(1) * w[idx, 0]).sum()
    w.assign(w * 0.9 + 0.01)
    return y.realize(w)
  w_eager = Tensor(w.numpy(), device=device)

  def eager_step(x, idx):
    y = ((x @ w_eager).tanh().sum(1) * w_eager[idx, 0]).sum()
    w_eager.assign(w_eager * 0.9 + 0.01)
    return y.realize(w_eager)
  jitted = picograd.jit(step, device=device)
  reused = inputs[0].copy()
  for i, x in enumerate(inputs + [reused, reused]):
    if i == len(inputs) + 1: reused *= -3  # the same array object, changed in place: the replay must read its new values
    idx = np.array([i % 4, 3 - i % 4], np.int64)
    got = jitted(x, idx).item()
    assert got == pytest.approx(eager_step(Tensor(x, device=device), Tensor(idx, device=device)).item(), rel=1e-6), i
  assert seen == [device.upper()] * 2 and jitted.calls == 2  # traced twice, replayed five times
  np.testing.assert_allclose(w.numpy(), w_eager.numpy(), rtol=1e-6)


def test_array_inputs_make_no_tensors(monkeypatch):
  """A replay takes an array with no tensor made of it (the host cost the feature removes)."""
  jitted = picograd.jit(lambda a, b: (a * 2 + b).realize())
  for _ in range(2): jitted(np.ones(3, np.float32), np.zeros(3, np.float32))
  made = []
  init = Tensor.__init__
  monkeypatch.setattr(Tensor, "__init__", lambda self, *a, **k: (made.append(1), init(self, *a, **k))[-1])
  out = jitted(np.full(3, 5, np.float32), np.arange(3, dtype=np.float32))
  assert not made
  np.testing.assert_array_equal(out.numpy(), [10, 11, 12])


@pytest.mark.parametrize("change", ["shape", "dtype", "tensor"])
def test_changed_array_inputs_raise(change):
  step = picograd.jit(lambda x: (x * 2).realize())
  for _ in range(3): step(np.ones(3, np.float32))
  other = {"shape": np.ones(4, np.float32), "dtype": np.ones(3, np.int32), "tensor": _ones()}[change]
  with pytest.raises(ValueError, match="numpy array"):
    step(other)
  np.testing.assert_array_equal(step(np.full(3, 4, np.float32)).numpy(), [8] * 3)


def test_array_inputs_in_containers_and_jit_off():
  """Arrays inside lists and dicts are inputs too; with JIT=0 each call makes tensors of them, as eager code would."""
  for jit_on in (1, 0):
    with Context(JIT=jit_on):
      step = picograd.jit(lambda xs, d: (xs[0] - xs[1] + d["c"]).realize())
      for i in range(4):
        out = step([np.full(3, i, np.float32), np.ones(3, np.float32)], {"c": np.full(3, 0.5, np.float32)})
        np.testing.assert_array_equal(out.numpy(), [i - 0.5] * 3)


def _graph_step_run(graph_on: bool) -> tuple[list, np.ndarray, np.ndarray, "picograd.engine.jit.Jit"]:
  """A step on the GPU with a parameter and an input updated in place, a random draw and an index input."""
  Tensor.manual_seed(3)
  w = Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), device="CUDA")
  table = Tensor(np.arange(20, dtype=np.float32).reshape(10, 2), device="CUDA")

  def step(x, acc, idx):
    y = ((x @ w).tanh() + Tensor.rand(3, device="CUDA")).sum() + table[idx].sum()
    w.assign(w * 0.9 + 0.01)
    acc.assign(acc + y)
    return y.realize(w, acc)
  acc = Tensor(np.zeros(1, np.float32), device="CUDA")
  outs = []
  with Context(GRAPH=int(graph_on)):
    jitted = picograd.jit(step)
    for i in range(6):
      x = Tensor(np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32), device="CUDA")
      outs.append(jitted(x, acc, Tensor(np.array([i, 9 - i], np.int32), device="CUDA")).item())
  return outs, w.numpy(), acc.numpy(), jitted


@pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA: {CUDA_ERROR}")
def test_cuda_graph_replay_matches_step_replay():
  """On a GPU a replay launches one CUDA graph (GRAPH=0: kernel by kernel); it computes what a replay kernel by kernel does (new inputs, in-place
  updates of a parameter and of an input, random draws), and a failed check in the graph raises at the next read."""
  stepwise, w_steps, acc_steps, jitted_steps = _graph_step_run(False)
  graphed, w_graph, acc_graph, jitted = _graph_step_run(True)
  assert jitted_steps.replay is None and jitted.replay is not None and jitted.replay.native
  np.testing.assert_allclose(graphed, stepwise, rtol=1e-6)
  np.testing.assert_allclose(w_graph, w_steps, rtol=1e-6)
  np.testing.assert_allclose(acc_graph, acc_steps, rtol=1e-6)
  x = Tensor(np.ones((2, 4), np.float32), device="CUDA")
  out = jitted(x, Tensor(np.zeros(1, np.float32), device="CUDA"), Tensor(np.array([0, 10], np.int32), device="CUDA"))
  with pytest.raises((IndexError, RuntimeError)): out.numpy()


@pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA: {CUDA_ERROR}")
def test_cuda_graph_replay_of_array_inputs():
  """Arrays fed to a jit on the GPU are copied into the graph's input buffers on its stream: each replay sees its batch."""
  w = Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), device="CUDA")
  jitted = picograd.jit(lambda x, idx: ((x @ w).relu().sum(1) * w[idx, 1]).sum().realize(), device="CUDA")
  for i in range(6):
    x = np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32)
    idx = np.array([i % 4, 3 - i % 4], np.int32)
    want = ((np.maximum(x @ w.numpy(), 0).sum(1)) * w.numpy()[idx, 1]).sum()
    assert jitted(x, idx).item() == pytest.approx(want, rel=1e-5), i
  assert jitted.replay is not None and jitted.replay.native
