"""picograd.nn: each layer against PyTorch (forward values and gradients), initialisation, state dicts and checkpoints."""
import numpy as np
import pytest
from picograd import Tensor, nn, dtypes
from picograd.nn.state import CheckpointError

torch = pytest.importorskip("torch")


def _rand(*shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _check_layer(ours, theirs, x: np.ndarray, names: list[str], x_is_index: bool = False, atol: float = 1e-5):
  """Same parameters in both layers; compare the output, and the gradients of a random weighting of it."""
  for name in names:
    getattr(theirs, name).data = torch.from_numpy(getattr(ours, name).numpy().copy())
  tx = torch.from_numpy(x).long() if x_is_index else torch.from_numpy(x).requires_grad_()
  px = Tensor(x) if x_is_index else Tensor(x, requires_grad=True)
  ty, py = theirs(tx), ours(px)
  np.testing.assert_allclose(py.numpy(), ty.detach().numpy(), rtol=1e-5, atol=atol)
  w = _rand(*ty.shape, seed=1)
  (ty * torch.from_numpy(w)).sum().backward()
  (py * Tensor(w)).sum().backward()
  for name in names:
    np.testing.assert_allclose(getattr(ours, name).grad.numpy(), getattr(theirs, name).grad.numpy(), rtol=1e-4, atol=atol, err_msg=name)
  if not x_is_index: np.testing.assert_allclose(px.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=atol)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
  _check_layer(nn.Linear(6, 4, bias=bias), torch.nn.Linear(6, 4, bias=bias), _rand(3, 5, 6), ["weight", "bias"] if bias else ["weight"])


def test_embedding():
  idx = np.random.default_rng(0).integers(0, 7, (4, 3)).astype(np.int32)
  idx[0, :] = 2  # a repeated index: its rows' gradients add up
  _check_layer(nn.Embedding(7, 5), torch.nn.Embedding(7, 5), idx, ["weight"], x_is_index=True)


def test_embedding_rejects_float_indices():
  with pytest.raises(RuntimeError, match="integer tensor"): nn.Embedding(3, 2)(Tensor([0.0, 1.0]))  # PyTorch's type


@pytest.mark.parametrize("shape", [8, (3, 8)])
def test_layernorm(shape):
  ours, theirs = nn.LayerNorm(shape), torch.nn.LayerNorm(shape)
  # non-trivial affine parameters, so their gradients are tested with something to scale
  nn.load_state_dict(ours, {"weight": _rand(*ours.weight.shape, seed=2), "bias": _rand(*ours.bias.shape, seed=3)})
  _check_layer(ours, theirs, _rand(2, 3, 8) * 3 + 1, ["weight", "bias"])


def test_rmsnorm():
  ours, theirs = nn.RMSNorm(8), torch.nn.RMSNorm(8)
  nn.load_state_dict(ours, {"weight": _rand(8, seed=2)})
  _check_layer(ours, theirs, _rand(4, 8), ["weight"])
  _check_layer(nn.RMSNorm(8, eps=1e-3), torch.nn.RMSNorm(8, eps=1e-3), _rand(4, 8) * 0.01, ["weight"], atol=1e-4)


def test_norms_check_shapes():
  with pytest.raises(ValueError, match="normalized shape"): nn.LayerNorm(4)(Tensor.ones(2, 3))
  with pytest.raises(ValueError, match="normalized shape"): nn.RMSNorm(4)(Tensor.ones(2, 3))


def test_dropout():
  x = Tensor.ones(200, 100)
  assert nn.Dropout(0.3)(x) is x  # Tensor.training is off by default: the identity
  Tensor.training = True
  try:
    x = Tensor.ones(200, 100, requires_grad=True)
    y = nn.Dropout(0.3)(x)
    out = y.numpy()
    np.testing.assert_allclose(np.unique(out), [0, 1 / 0.7], rtol=1e-6)
    assert abs((out == 0).mean() - 0.3) < 0.02
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out, rtol=1e-6)  # the same mask scales the gradient
  finally:
    Tensor.training = False
  with pytest.raises(ValueError): nn.Dropout(1.5)


def test_initialisation():
  Tensor.manual_seed(0)
  lin = nn.Linear(400, 300)
  w, b, bound = lin.weight.numpy(), lin.bias.numpy(), 1 / np.sqrt(400)
  assert w.shape == (300, 400) and b.shape == (300,)
  assert -bound <= w.min() < -0.95 * bound and 0.95 * bound < w.max() <= bound and abs(w.mean()) < 0.01 * bound
  assert -bound <= b.min() and b.max() <= bound
  emb = nn.Embedding(300, 200).weight.numpy()
  assert abs(emb.mean()) < 0.01 and abs(emb.std() - 1) < 0.01
  ln = nn.LayerNorm(5)
  np.testing.assert_array_equal(ln.weight.numpy(), np.ones(5)); np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(5))
  assert lin.weight.requires_grad and ln.bias.requires_grad
  # the parameters own their memory from the start, so optimizers can update them in place
  from picograd.engine.realize import is_buffer_view
  assert all(is_buffer_view(t.uop) for t in (lin.weight, lin.bias, ln.weight))


def test_dtype_and_device_arguments():
  lin = nn.Linear(3, 2, dtype=dtypes.float64, device="PYTHON")
  assert lin.weight.dtype == dtypes.float64 and lin.weight.device == "PYTHON"
  assert lin(Tensor(np.ones((1, 3)), device="PYTHON")).dtype == dtypes.float64


class _Block:
  def __init__(self):
    self.attn, self.mlp = nn.Linear(4, 4), [nn.Linear(4, 8), nn.Linear(8, 4, bias=False)]


class _Model:
  def __init__(self):
    self.wte, self.blocks, self.ln_f = nn.Embedding(10, 4), [_Block(), _Block()], nn.LayerNorm(4)
    self.head = nn.Linear(4, 10, bias=False)
    self.head.weight = self.wte.weight  # tied: one parameter, listed once
    self.extra = {"scale": Tensor([2.0])}
    self.name, self.ratio = "gpt", 0.5  # not tensors: ignored


def test_state_dict_keys_follow_pytorch():
  sd = nn.state_dict(_Model())
  assert list(sd) == ["wte.weight", "blocks.0.attn.weight", "blocks.0.attn.bias", "blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias",
                      "blocks.0.mlp.1.weight", "blocks.1.attn.weight", "blocks.1.attn.bias", "blocks.1.mlp.0.weight",
                      "blocks.1.mlp.0.bias", "blocks.1.mlp.1.weight", "ln_f.weight", "ln_f.bias", "extra.scale"]
  # the same names as the equivalent torch.nn model
  tblock = lambda: torch.nn.ModuleDict({"attn": torch.nn.Linear(4, 4),
                                        "mlp": torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4, bias=False))})
  tmodel = torch.nn.ModuleDict({"wte": torch.nn.Embedding(10, 4), "blocks": torch.nn.ModuleList([tblock(), tblock()]), "ln_f": torch.nn.LayerNorm(4)})
  assert [k for k in sd if k != "extra.scale"] == list(tmodel.state_dict())


def test_get_parameters():
  m = _Model()
  params = nn.get_parameters(m)
  # a tensor without requires_grad (like a PyTorch buffer) is state but not a parameter
  assert len(params) == 13 and all(p is not m.extra["scale"] for p in params)
  assert sum(p is m.wte.weight for p in params) == 1
  m.ln_f.bias.requires_grad = False
  assert len(nn.get_parameters(m)) == 12


def test_save_load_round_trip(tmp_path):
  Tensor.manual_seed(1)
  a = _Model()
  Tensor.manual_seed(2)
  b = _Model()
  buffers = [t.uop for t in nn.state_dict(b).values()]
  path = str(tmp_path / "model.safetensors")
  nn.state.save(nn.state_dict(a), path)
  nn.load_state_dict(b, nn.state.load(path))
  for (name, ta), tb in zip(nn.state_dict(a).items(), nn.state_dict(b).values()):
    np.testing.assert_array_equal(ta.numpy(), tb.numpy(), err_msg=name)
  # loaded in place: the same buffers, now holding the checkpoint's values
  assert [t.uop for t in nn.state_dict(b).values()] == buffers


def test_load_into_pytorch_and_back(tmp_path):
  lin = nn.Linear(3, 2)
  tlin = torch.nn.Linear(3, 2)
  tlin.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in nn.state_dict(lin).items()})
  x = _rand(4, 3)
  np.testing.assert_allclose(tlin(torch.from_numpy(x)).detach().numpy(), lin(Tensor(x)).numpy(), rtol=1e-6, atol=1e-6)
  nn.load_state_dict(lin, {k: v.detach().numpy() * 2 for k, v in tlin.state_dict().items()})
  np.testing.assert_allclose(lin.weight.numpy(), tlin.weight.detach().numpy() * 2)


def test_load_mismatch_reports_everything_and_changes_nothing():
  lin = nn.Linear(3, 2)
  before = lin.weight.numpy().copy()
  bad = {"weight": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32), "other": np.zeros(1, np.float32)}
  with pytest.raises(CheckpointError) as e: nn.load_state_dict(lin, bad)
  assert "weight: expected (2, 3) float32, got (3, 2) float32" in str(e.value) and "unexpected keys: other" in str(e.value)
  np.testing.assert_array_equal(lin.weight.numpy(), before)
  with pytest.raises(CheckpointError, match="missing keys: bias"): nn.load_state_dict(lin, {"weight": np.zeros((2, 3), np.float32)})
  nn.load_state_dict(lin, {"weight": np.zeros((2, 3), np.float32)}, strict=False)
  np.testing.assert_array_equal(lin.weight.numpy(), np.zeros((2, 3)))
