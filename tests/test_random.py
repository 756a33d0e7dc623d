"""Sampling: normal (Tensor.normal, picograd.normal, normal_), uniform_ and multinomial.

The generator is picograd's own, so values cannot match PyTorch's: the checks are statistical
(mean, spread, frequencies within several standard errors), exact properties (ranges, uniqueness,
zero-weight categories never drawn), determinism under `Tensor.manual_seed`, and PyTorch's
exception types on bad arguments. One shape per op keeps the compile count small.
"""
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor, dtypes
from picograd.engine.realize import buffer_of


def test_normal_statistics_shape_dtype(device):
  Tensor.manual_seed(0)
  x = Tensor.normal(200, 100, mean=2.0, std=3.0, device=device)
  assert x.shape == (200, 100) and x.dtype == dtypes.float32 and x.device == device
  v = x.numpy().astype(np.float64)
  assert abs(v.mean() - 2.0) < 0.1 and abs(v.std() - 3.0) < 0.1  # standard errors 0.02 and 0.015
  assert Tensor.normal(2, 3, dtype=dtypes.float64, device=device).dtype == dtypes.float64
  assert Tensor.normal((0, 4), device=device).numpy().shape == (0, 4)
  assert Tensor.normal(3, requires_grad=True).requires_grad


def test_functional_normal(device):
  Tensor.manual_seed(1)
  a = picograd.normal(-1.0, 0.5, (4000,), device=device).numpy()
  assert a.shape == (4000,) and abs(a.mean() + 1) < 0.05 and abs(a.std() - 0.5) < 0.05
  mean = Tensor([0.0, 10.0, 100.0], device=device, requires_grad=True)
  std = Tensor([[1.0], [0.0]], device=device)
  out = picograd.normal(mean, std)
  assert out.shape == (2, 3)
  v = out.numpy()
  np.testing.assert_array_equal(v[1], [0.0, 10.0, 100.0])  # std 0 gives the mean exactly
  assert np.all(np.abs(v[0] - [0.0, 10.0, 100.0]) < 6)
  assert not out.requires_grad  # mean and std are detached: PyTorch's gradient for them is zero as well


def test_in_place_fill_keeps_the_buffer(device):
  Tensor.manual_seed(2)
  t = Tensor.zeros(100, 50, device=device).contiguous().realize()
  buf = buffer_of(t)
  assert t.uniform_(-2.0, 3.0) is t
  v = t.realize().numpy()
  assert buffer_of(t) is buf
  assert v.min() >= -2.0 and v.max() < 3.0 and abs(v.mean() - 0.5) < 0.1 and abs(v.std() - 5 / 12 ** 0.5) < 0.1
  t.normal_(1.0, 0.25).realize()
  v = t.numpy()
  assert buffer_of(t) is buf and abs(v.mean() - 1.0) < 0.02 and abs(v.std() - 0.25) < 0.02


def test_seed_determinism():
  def draw(seed):
    Tensor.manual_seed(seed)
    w = Tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 0.0, 1.0, 1.0]])
    return (Tensor.normal(5, mean=1.0).numpy(), w.multinomial(3).numpy(), w.multinomial(6, replacement=True).numpy(),
            Tensor.zeros(5).contiguous().uniform_().numpy())
  a, b, c = draw(3), draw(3), draw(4)
  for x, y in zip(a, b): np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_rng_state_round_trip():
  Tensor.manual_seed(9)
  Tensor.rand(5).numpy()
  state = Tensor.get_rng_state()
  assert state == (9, 5)
  first = Tensor.normal(4).numpy()
  Tensor.manual_seed(1)
  Tensor.set_rng_state(state)
  np.testing.assert_array_equal(Tensor.normal(4).numpy(), first)
  with pytest.raises(ValueError): Tensor.set_rng_state((1, -1))


def _frequencies(samples: np.ndarray, n: int) -> np.ndarray:
  return np.stack([np.bincount(row, minlength=n) for row in samples]) / samples.shape[1]


def test_multinomial_with_replacement_frequencies(device):
  Tensor.manual_seed(5)
  weights = np.array([[1.0, 0.0, 3.0, 6.0], [0.0, 0.0, 0.0, 2.5], [5.0, 5.0, 0.0, 0.0]], dtype=np.float32)  # unnormalized
  s = Tensor(weights, device=device).multinomial(4000, replacement=True)
  assert s.shape == (3, 4000) and s.dtype == dtypes.int64
  freq = _frequencies(s.numpy(), 4)
  p = weights / weights.sum(1, keepdims=True)
  np.testing.assert_allclose(freq, p, atol=0.03)  # standard error <= 0.008
  assert not freq[p == 0].any()  # a category of weight 0 is never drawn
  one = Tensor([0.2, 0.8], device=device).multinomial(1, replacement=True)
  assert one.shape == (1,) and one.numpy()[0] in (0, 1)


def test_multinomial_without_replacement(device):
  Tensor.manual_seed(6)
  p = np.array([0.1, 0.2, 0.3, 0.4, 0.0], dtype=np.float32)
  s = Tensor(np.tile(p, (2000, 1)), device=device).multinomial(3).numpy()
  assert s.shape == (2000, 3) and s.min() >= 0 and s.max() <= 3  # the weight-0 category never comes up
  assert all(len(set(row)) == 3 for row in s)  # no category twice in a row
  # the first draw follows the weights; the second follows them renormalized without the first
  np.testing.assert_allclose(np.bincount(s[:, 0], minlength=5) / 2000, p, atol=0.04)
  second_after_3 = s[s[:, 0] == 3, 1]
  np.testing.assert_allclose(np.bincount(second_after_3, minlength=5)[:3] / len(second_after_3), p[:3] / p[:3].sum(), atol=0.06)
  # all categories: a permutation, with the zero-weight one last (after the positive weights are used up)
  perm = Tensor(p, device=device).multinomial(5).numpy()
  assert sorted(perm) == [0, 1, 2, 3, 4] and perm[-1] == 4


BAD = [
  ("3 dims", lambda m: m.ones(2, 2, 2).multinomial(1)),
  ("no samples", lambda m: m.ones(3).multinomial(0)),
  ("too many without replacement", lambda m: m.ones(3).multinomial(4)),
  ("negative weight", lambda m: m.tensor([1.0, -1.0]).multinomial(1)),
  ("nan weight", lambda m: m.tensor([1.0, float("nan")]).multinomial(1)),
  ("inf weight", lambda m: m.tensor([1.0, float("inf")]).multinomial(1, True)),
  ("zero row", lambda m: m.tensor([[1.0, 1.0], [0.0, 0.0]]).multinomial(1)),
  ("integer weights", lambda m: m.ones(3, dtype=m.int64).multinomial(1)),
  ("float num_samples", lambda m: m.ones(3).multinomial(1.5)),
  ("no categories", lambda m: m.ones(0).multinomial(1)),
  ("negative std", lambda m: m.normal(0.0, -1.0, (3,))),
  ("negative std tensor", lambda m: m.normal(m.zeros(3), m.tensor([1.0, -1.0, 1.0]))),
  ("float args without size", lambda m: m.normal(0.0, 1.0)),
  ("size with a tensor mean", lambda m: m.normal(m.zeros(3), 1.0, (3,))),
  ("uniform_ from > to", lambda m: m.zeros(3).uniform_(1.0, 0.0)),
  ("normal_ negative std", lambda m: m.zeros(3).normal_(0.0, -1.0)),
  ("uniform_ of ints", lambda m: m.zeros(3, dtype=m.int64).uniform_()),
  ("normal_ of ints", lambda m: m.zeros(3, dtype=m.int64).normal_()),
]


class _Ours:
  """The slice of torch's namespace BAD uses, answered by picograd."""
  int64 = dtypes.int64
  ones, zeros = Tensor.ones, Tensor.zeros
  normal = staticmethod(picograd.normal)
  @staticmethod
  def tensor(x): return Tensor(np.array(x, dtype=np.float32))


@pytest.mark.parametrize("name,call", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_like_pytorch(name, call):
  with pytest.raises(Exception) as theirs: call(torch)
  with pytest.raises(theirs.type): call(_Ours)
