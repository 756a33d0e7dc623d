"""picograd.nn.init against torch.nn.init: the same gains, fans, bounds and spreads, errors of the same types, in place and seeded.

Values come from picograd's generator, so the checks are on the distribution: the empirical
standard deviation of one large fill against the formula (and against PyTorch's own fill of the same
shape), the uniform schemes' bounds, and exact values for the constant fills.
"""
import math
import numpy as np
import pytest
import torch
from picograd import Tensor, dtypes, nn
from picograd.engine.realize import buffer_of

GAINS = [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
         ("leaky_relu", 0.2), ("leaky_relu", 3), ("selu", None)]


@pytest.mark.parametrize("nonlinearity,param", GAINS)
def test_calculate_gain_matches_pytorch(nonlinearity, param):
  assert nn.init.calculate_gain(nonlinearity, param) == pytest.approx(torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


# (scheme, kwargs, std as a function of (fan_in, fan_out)); shape (64, 32, 3, 3): fan_in 288, fan_out 576
SHAPE = (64, 32, 3, 3)
SCHEMES = [
  ("kaiming_uniform_", {"a": math.sqrt(5)}, lambda fi, fo: math.sqrt(2 / 6) / math.sqrt(fi)),
  ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, lambda fi, fo: math.sqrt(2) / math.sqrt(fo)),
  ("kaiming_normal_", {}, lambda fi, fo: math.sqrt(2 / (1 + 0.01 ** 2)) / math.sqrt(fi)),
  ("kaiming_normal_", {"a": 0.1, "mode": "fan_out", "nonlinearity": "leaky_relu"}, lambda fi, fo: math.sqrt(2 / 1.01) / math.sqrt(fo)),
  ("xavier_uniform_", {}, lambda fi, fo: math.sqrt(2 / (fi + fo))),
  ("xavier_normal_", {"gain": 5 / 3}, lambda fi, fo: 5 / 3 * math.sqrt(2 / (fi + fo))),
]


@pytest.mark.parametrize("scheme,kwargs,std", SCHEMES, ids=[f"{s}-{'-'.join(map(str, k.values()))}" for s, k, _ in SCHEMES])
def test_scheme_spread_matches_formula_and_pytorch(scheme, kwargs, std):
  Tensor.manual_seed(0)
  ours = Tensor.empty(*SHAPE).realize()
  buf = buffer_of(ours)
  assert getattr(nn.init, scheme)(ours, **kwargs) is ours
  assert buffer_of(ours) is buf  # filled in place: an optimizer built before still holds it
  theirs = getattr(torch.nn.init, scheme)(torch.empty(SHAPE), **kwargs)
  expected = std(32 * 9, 64 * 9)
  v = ours.numpy()
  assert v.std() == pytest.approx(expected, rel=0.03) and theirs.std().item() == pytest.approx(expected, rel=0.03)
  assert abs(v.mean()) < 0.05 * expected
  if scheme.endswith("uniform_"):
    bound = math.sqrt(3) * expected
    assert np.abs(v).max() <= bound * (1 + 1e-6) and np.abs(v).max() > 0.99 * bound


def test_constant_fills_keep_dtype_and_buffer():
  t = Tensor.empty(3, 4, dtype=dtypes.float64).realize()
  buf = buffer_of(t)
  np.testing.assert_array_equal(nn.init.constant_(t, 0.5).numpy(), np.full((3, 4), 0.5))
  np.testing.assert_array_equal(nn.init.ones_(t).numpy(), np.ones((3, 4)))
  np.testing.assert_array_equal(nn.init.zeros_(t).numpy(), np.zeros((3, 4)))
  assert t.dtype == dtypes.float64 and buffer_of(t) is buf
  ints = nn.init.ones_(Tensor.empty(2, dtype=dtypes.int32).realize())
  assert ints.dtype == dtypes.int32 and ints.numpy().tolist() == [1, 1]
  u = nn.init.uniform_(Tensor.empty(1000).realize(), -1.0, 1.0).numpy()
  n = nn.init.normal_(Tensor.empty(1000).realize(), 3.0, 0.5).numpy()
  assert u.min() >= -1 and u.max() < 1 and abs(n.mean() - 3) < 0.1 and abs(n.std() - 0.5) < 0.1


def test_seeded_and_usable_for_training():
  def init(seed):
    Tensor.manual_seed(seed)
    return nn.init.kaiming_normal_(Tensor.empty(8, 4).realize()).numpy()
  np.testing.assert_array_equal(init(1), init(1))
  assert not np.array_equal(init(1), init(2))
  layer = nn.Linear(4, 8)
  from picograd import optim
  opt = optim.SGD(nn.get_parameters(layer), lr=0.1)
  nn.init.xavier_uniform_(layer.weight)
  nn.init.zeros_(layer.bias)
  before = layer.weight.numpy().copy()
  loss = layer(Tensor.ones(2, 4)).sum()
  opt.zero_grad(); loss.backward(); opt.step()
  np.testing.assert_allclose(layer.weight.numpy(), before - 0.1 * 2, rtol=1e-6)  # d(sum)/dW = batch size 2 everywhere


BAD = [
  ("1-d fan", lambda init, t: init.kaiming_uniform_(t(3))),
  ("1-d xavier", lambda init, t: init.xavier_normal_(t(3))),
  ("bad mode", lambda init, t: init.kaiming_normal_(t(3, 3), mode="fan_middle")),
  ("unknown nonlinearity", lambda init, t: init.calculate_gain("swishy")),
  ("bad slope", lambda init, t: init.calculate_gain("leaky_relu", "x")),
  ("bad slope bool", lambda init, t: init.calculate_gain("leaky_relu", True)),
  ("nonlinearity without gain", lambda init, t: init.kaiming_uniform_(t(3, 3), nonlinearity="softmax")),
]


@pytest.mark.parametrize("name,call", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_like_pytorch(name, call):
  with pytest.raises(Exception) as theirs: call(torch.nn.init, torch.empty)
  with pytest.raises(theirs.type): call(nn.init, lambda *s: Tensor.empty(*s).realize())
