"""BatchNorm, GroupNorm, RNN/LSTM/GRU, Sequential/ModuleList and the conv/pool layers' arguments against torch.nn.

Each layer gets a torch twin loaded from its state_dict (the keys must match), then forward values,
gradients (of the input, the initial states and every parameter), batch-norm running statistics
over several training steps (also under the JIT) and evaluation mode are compared, and state dicts
go back and forth. Shapes are tiny and few, as each new shape compiles kernels on a cold cache.
"""
import numpy as np
import pytest
import picograd
from picograd import Tensor, nn, dtypes, optim

torch = pytest.importorskip("torch")


def _rand(*shape, seed=0, scale=1.0, shift=0.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(np.float32)


def _to_torch(ours, theirs) -> None:
  """Load our state into the torch twin; the key lists must be the same, in the same order."""
  sd = nn.state_dict(ours)
  assert list(sd) == list(theirs.state_dict()), (list(sd), list(theirs.state_dict()))
  theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in sd.items()})


def _close(got, want, what="", tol=2e-5):
  want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
  np.testing.assert_allclose(got.numpy() if isinstance(got, Tensor) else got, want, rtol=tol, atol=tol, err_msg=what)


def _param_grads(ours, theirs, tol=2e-5):
  tparams = dict(theirs.named_parameters())
  for name, p in nn.state_dict(ours).items():
    if p.requires_grad: _close(p.grad, tparams[name].grad, f"grad of {name}", tol)


# ---------------------------------------------------------------- batch norm
@pytest.mark.parametrize("kind, shape, kwargs", [
  ("BatchNorm2d", (4, 3, 2, 3), {"momentum": 0.1}),
  ("BatchNorm1d", (6, 3), {"momentum": None, "affine": False}),
  ("BatchNorm1d", (4, 3, 5), {"track_running_stats": False}),
])
def test_batchnorm_training_steps_and_eval(device, kind, shape, kwargs):
  ours, theirs = getattr(nn, kind)(3, device=device, **kwargs), getattr(torch.nn, kind)(3, **kwargs)
  if ours.weight is not None: nn.load_state_dict(ours, {"weight": _rand(3, seed=5), "bias": _rand(3, seed=6)}, strict=False)
  _to_torch(ours, theirs)
  Tensor.training = True
  for step in range(3):  # different scales and shifts each step, so the running averages differ from any one batch
    x = _rand(*shape, seed=step, scale=step + 1, shift=step - 1)
    w = _rand(*shape, seed=10 + step)
    px, tx = Tensor(x, device=device, requires_grad=True), torch.from_numpy(x).requires_grad_()
    py, ty = ours(px), theirs(tx)
    (py * Tensor(w, device=device)).sum().backward()
    (ty * torch.from_numpy(w)).sum().backward()
    _close(py, ty, f"output, step {step}")
    _close(px.grad, tx.grad, f"input grad, step {step}", 1e-4)
    _param_grads(ours, theirs, 1e-4)
    for p in nn.get_parameters(ours): p.grad = None
    theirs.zero_grad()
  for name, t in theirs.state_dict().items():  # running_mean, running_var, num_batches_tracked
    _close(nn.state_dict(ours)[name], t, name)
  Tensor.training = False
  theirs.eval()
  x = _rand(*shape, seed=7, scale=2)
  _close(ours(Tensor(x, device=device)), theirs(torch.from_numpy(x)), "eval mode")
  if ours.num_batches_tracked is not None: assert ours.num_batches_tracked.dtype == dtypes.int64


def test_batchnorm_state_dict_round_trip():
  ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
  theirs.train()(torch.from_numpy(_rand(4, 3, 2, 2, scale=3, shift=1)))  # torch's running statistics move off their start
  nn.load_state_dict(ours, {k: v.numpy() for k, v in theirs.state_dict().items()})
  assert ours.num_batches_tracked.item() == 1
  _close(ours.running_var, theirs.running_var)
  back = torch.nn.BatchNorm2d(3)
  _to_torch(ours, back)
  assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), theirs.state_dict().values()))
  assert [p is ours.weight or p is ours.bias for p in nn.get_parameters(ours)] == [True, True]  # buffers are not trained


def test_batchnorm_under_jit_updates_running_stats_each_replay():
  ours, theirs = nn.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None)
  opt = optim.SGD(nn.get_parameters(ours), lr=0.1)
  topt = torch.optim.SGD(theirs.parameters(), lr=0.1)

  @picograd.jit
  def step(x: Tensor) -> Tensor:
    loss = ours(x).square().mean() + ours.weight.sum()
    opt.zero_grad()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss

  Tensor.training = True
  for i in range(5):  # calls 3 to 5 are replays
    x = _rand(4, 3, seed=i, scale=i + 1, shift=i)
    loss = step(Tensor(x)).item()
    tloss = theirs(torch.from_numpy(x)).square().mean() + theirs.weight.sum()
    topt.zero_grad()
    tloss.backward()
    topt.step()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
  for name, t in theirs.state_dict().items(): _close(nn.state_dict(ours)[name], t, name)


def test_batchnorm_errors():
  with pytest.raises(ValueError, match="2D or 3D"): nn.BatchNorm1d(3)(Tensor(np.zeros((2, 3, 4, 5), np.float32)))
  with pytest.raises(RuntimeError, match="running_mean"): nn.BatchNorm2d(3)(Tensor(np.zeros((2, 4, 2, 2), np.float32)))
  Tensor.training = True
  with pytest.raises(ValueError, match="more than 1 value per channel"): nn.BatchNorm1d(3)(Tensor(np.zeros((1, 3), np.float32)))


def test_groupnorm(device):
  ours, theirs = nn.GroupNorm(2, 4, device=device), torch.nn.GroupNorm(2, 4)
  nn.load_state_dict(ours, {"weight": _rand(4, seed=1), "bias": _rand(4, seed=2)})
  _to_torch(ours, theirs)
  x, w = _rand(3, 4, 5, seed=3, scale=2, shift=1), _rand(3, 4, 5, seed=4)
  px, tx = Tensor(x, device=device, requires_grad=True), torch.from_numpy(x).requires_grad_()
  py, ty = ours(px), theirs(tx)
  (py * Tensor(w, device=device)).sum().backward()
  (ty * torch.from_numpy(w)).sum().backward()
  _close(py, ty)
  _close(px.grad, tx.grad, "input grad", 1e-4)
  _param_grads(ours, theirs, 1e-4)
  with pytest.raises(ValueError, match="divisible"): nn.GroupNorm(3, 4)


# ---------------------------------------------------------------- recurrent layers
RECURRENT = [
  ("LSTM", {"bidirectional": True, "proj_size": 2}, (3, 2, 3)),
  ("GRU", {"batch_first": True}, (2, 3, 3)),
  ("RNN", {"num_layers": 2, "nonlinearity": "relu", "bias": False}, (3, 3)),  # unbatched
]


@pytest.mark.parametrize("kind, kwargs, shape", RECURRENT, ids=[r[0] for r in RECURRENT])
def test_recurrent_against_torch(device, kind, kwargs, shape):
  ours, theirs = getattr(nn, kind)(3, 4, device=device, **kwargs), getattr(torch.nn, kind)(3, 4, **kwargs)
  _to_torch(ours, theirs)
  x = _rand(*shape, seed=1)
  batched = len(shape) == 3
  layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
  batch = (shape[0 if kwargs.get("batch_first") else 1],) if batched else ()
  h0 = _rand(layers, *batch, kwargs.get("proj_size") or 4, seed=2)
  c0 = _rand(layers, *batch, 4, seed=3)
  px, tx = Tensor(x, device=device, requires_grad=True), torch.from_numpy(x).requires_grad_()
  ph = [Tensor(h0, device=device, requires_grad=True)] + ([Tensor(c0, device=device, requires_grad=True)] if kind == "LSTM" else [])
  th = [torch.from_numpy(h0).requires_grad_()] + ([torch.from_numpy(c0).requires_grad_()] if kind == "LSTM" else [])
  pout, pstate = ours(px, tuple(ph) if kind == "LSTM" else ph[0])
  tout, tstate = theirs(tx, tuple(th) if kind == "LSTM" else th[0])
  pfinal = list(pstate) if kind == "LSTM" else [pstate]
  tfinal = list(tstate) if kind == "LSTM" else [tstate]
  _close(pout, tout, "output")
  for i, (p, t) in enumerate(zip(pfinal, tfinal)): _close(p, t, f"final state {i}")
  # a loss that weighs the output and every final state differently
  weights = [_rand(*t.shape, seed=10 + i) for i, t in enumerate([tout, *tfinal])]
  sum(((p * Tensor(w, device=device)).sum() for p, w in zip([pout, *pfinal], weights)), Tensor(0.0, device=device)).backward()
  sum((t * torch.from_numpy(w)).sum() for t, w in zip([tout, *tfinal], weights)).backward()
  _close(px.grad, tx.grad, "input grad", 1e-4)
  for i, (p, t) in enumerate(zip(ph, th)): _close(p.grad, t.grad, f"initial state {i} grad", 1e-4)
  _param_grads(ours, theirs, 1e-4)


def test_recurrent_defaults_init_and_state_round_trip():
  Tensor.manual_seed(0)
  ours = nn.LSTM(3, 5, num_layers=2)
  bound = 1 / np.sqrt(5)
  for name, t in nn.state_dict(ours).items():
    v = t.numpy()
    assert t.requires_grad and np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound, name  # U(-1/sqrt(H), 1/sqrt(H))
  assert ours.weight_ih_l1.shape == (20, 5) and ours.weight_hh_l0.shape == (20, 5)
  theirs = torch.nn.LSTM(3, 5, num_layers=2)  # torch to ours: the same function afterwards, zero initial states by default
  nn.load_state_dict(ours, {k: v.numpy() for k, v in theirs.state_dict().items()})
  x = _rand(4, 2, 3)
  out, (h, c) = ours(Tensor(x))
  tout, (th, tc) = theirs(torch.from_numpy(x))
  _close(out, tout)
  _close(h, th)
  _close(c, tc)
  assert out.shape == (4, 2, 5) and h.shape == c.shape == (2, 2, 5)


def test_recurrent_errors():
  with pytest.raises(ValueError, match="nonlinearity"): nn.RNN(3, 4, nonlinearity="sigmoid")
  with pytest.raises(ValueError, match="proj_size"): nn.GRU(3, 4, proj_size=2)
  with pytest.raises(ValueError, match="hidden_size"): nn.LSTM(3, 0)
  with pytest.raises(ValueError, match="2D or 3D"): nn.GRU(3, 4)(Tensor(np.zeros((1, 2, 3, 3), np.float32)))
  with pytest.raises(RuntimeError, match="input_size"): nn.GRU(3, 4)(Tensor(np.zeros((2, 1, 5), np.float32)))
  with pytest.raises(RuntimeError, match="Expected hidden"): nn.GRU(3, 4)(Tensor(np.zeros((2, 1, 3), np.float32)), Tensor(np.zeros((1, 2, 4))))
  with pytest.raises(TypeError, match="tuple"): nn.LSTM(3, 4)(Tensor(np.zeros((2, 1, 3), np.float32)), Tensor(np.zeros((1, 1, 4))))


# ---------------------------------------------------------------- containers and the conv/pool layers' arguments
def test_sequential_and_modulelist_follow_torch():
  ours = nn.Sequential(nn.Linear(3, 4), Tensor.relu, nn.ModuleList([nn.Linear(4, 2), nn.Linear(2, 2)]))
  theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.ModuleList([torch.nn.Linear(4, 2), torch.nn.Linear(2, 2)]))
  _to_torch(ours, theirs)  # keys 0.weight, ..., 2.0.weight, 2.1.bias
  assert len(ours) == 3 and isinstance(ours[-1], nn.ModuleList) and len(ours[1:]) == 2 and list(nn.state_dict(ours[2:]))[0] == "2.0.weight"
  head = ours[2]
  ours[2] = lambda x: head[1](head[0](x))
  x = _rand(5, 3)
  _close(ours(Tensor(x)), theirs[1](theirs[0](torch.from_numpy(x))) @ theirs[2][0].weight.T @ theirs[2][1].weight.T
         + theirs[2][0].bias @ theirs[2][1].weight.T + theirs[2][1].bias)
  named = nn.Sequential({"conv": nn.Conv1d(2, 3, 3), "pool": nn.MaxPool1d(2)})
  assert list(nn.state_dict(named)) == ["conv.weight", "conv.bias"] and named(Tensor(_rand(1, 2, 8))).shape == (1, 3, 3)
  layers = nn.ModuleList()
  layers.append(nn.Linear(2, 2)).extend([nn.Linear(2, 3)])
  layers.insert(0, nn.Linear(1, 2))
  assert [layer.weight.shape for layer in layers] == [(2, 1), (2, 2), (3, 2)]
  del layers[0]
  assert list(nn.state_dict(layers)) == ["0.weight", "0.bias", "1.weight", "1.bias"]
  with pytest.raises(IndexError): layers[2]


def test_conv_and_pool_layers_take_torchs_arguments():
  # positional arguments in torch's order: ConvTranspose2d(in, out, k, stride, padding, output_padding, groups, bias, dilation)
  args = (4, 6, 3, 2, 1, 1, 2, True, 1)
  ours, theirs = nn.ConvTranspose2d(*args), torch.nn.ConvTranspose2d(*args)
  _to_torch(ours, theirs)
  x = _rand(1, 4, 3, 3)
  _close(ours(Tensor(x)), theirs(torch.from_numpy(x)))
  bound = 1 / np.sqrt(3 * 3 * 3)  # fan_in = weight.shape[1] * kernel area, for the transposed kind too
  assert np.abs(ours.weight.numpy()).max() <= bound and np.abs(ours.bias.numpy()).max() <= bound
  for mode, padding in (("reflect", 1), ("circular", (2, 1)), ("replicate", "same")):
    ours, theirs = nn.Conv2d(2, 2, 3, 1, padding, padding_mode=mode), torch.nn.Conv2d(2, 2, 3, 1, padding, padding_mode=mode)
    _to_torch(ours, theirs)
    x = _rand(1, 2, 4, 5, seed=3)
    _close(ours(Tensor(x)), theirs(torch.from_numpy(x)), mode)
  with pytest.raises(ValueError, match="padding_mode"): nn.Conv2d(2, 2, 3, padding_mode="mirror")
  with pytest.raises(ValueError, match="zeros"): nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
  for layer in (nn.Conv1d(2, 4, 3), nn.Conv2d(2, 4, (3, 2), 1, 1, 1, 2, False)):
    twin = getattr(torch.nn, type(layer).__name__)(2, 4, 3) if isinstance(layer, nn.Conv1d) else torch.nn.Conv2d(2, 4, (3, 2), 1, 1, 1, 2, False)
    assert {k: v.shape for k, v in nn.state_dict(layer).items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
  x = _rand(1, 2, 6, 6)
  # MaxPool2d(kernel, stride, padding, dilation, return_indices, ceil_mode); AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad,
  # divisor_override)
  out, idx = nn.MaxPool2d(2, 2, 1, 1, True, True)(Tensor(x))
  tout, tidx = torch.nn.MaxPool2d(2, 2, 1, 1, True, True)(torch.from_numpy(x))
  _close(out, tout)
  assert np.array_equal(idx.numpy(), tidx.numpy())
  for avg_args in ((3, 2, 1, True, False), (2, 1, 0, False, True, 3)):
    _close(nn.AvgPool2d(*avg_args)(Tensor(x)), torch.nn.AvgPool2d(*avg_args)(torch.from_numpy(x)))
