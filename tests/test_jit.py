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
