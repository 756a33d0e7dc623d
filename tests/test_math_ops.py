"""Elementwise math and activations of frontend/math.py against PyTorch: values (NaN, infinities, zeros, bounds), gradients
(PyTorch's and float64 finite differences), size-0 and size-1 dims, and the nn.functional wrappers.

To keep compiles few, each test puts many ops into one graph: row i of the input goes through op i,
so one realize (and one backward) checks them all, and a wrong gradient still shows in its own row.
"""
import numpy as np
import pytest
import picograd.nn.functional as F
from picograd import Tensor, dtypes, stack
from compare import assert_tensor
from gradcheck import assert_matches_finite_differences

torch = pytest.importorskip("torch")
TF = torch.nn.functional
INF, NAN = float("inf"), float("nan")

# name -> (picograd, torch, low, high): the range the random inputs of the gradient checks come from (inside the domain, off kinks)
UNARY = {
  "atan": (lambda x: x.atan(), torch.atan, -4, 4), "asin": (lambda x: x.asin(), torch.asin, -0.95, 0.95),
  "acos": (lambda x: x.acos(), torch.acos, -0.95, 0.95), "sinh": (lambda x: x.sinh(), torch.sinh, -3, 3),
  "cosh": (lambda x: x.cosh(), torch.cosh, -3, 3), "asinh": (lambda x: x.asinh(), torch.asinh, -4, 4),
  "acosh": (lambda x: x.acosh(), torch.acosh, 1.05, 5), "atanh": (lambda x: x.atanh(), torch.atanh, -0.95, 0.95),
  "log10": (lambda x: x.log10(), torch.log10, 0.1, 5), "log1p": (lambda x: x.log1p(), torch.log1p, -0.9, 3),
  "expm1": (lambda x: x.expm1(), torch.expm1, -2, 2), "elu": (lambda x: F.elu(x, 0.7), lambda x: TF.elu(x, 0.7), -3, 3),
  "selu": (F.selu, TF.selu, -3, 3), "celu": (lambda x: F.celu(x, 1.5), lambda x: TF.celu(x, 1.5), -3, 3),
  "relu6": (F.relu6, TF.relu6, -2, 8), "hardtanh": (lambda x: F.hardtanh(x, -0.5, 2.0), lambda x: TF.hardtanh(x, -0.5, 2.0), -3, 3),
  "hardsigmoid": (F.hardsigmoid, TF.hardsigmoid, -5, 5), "hardswish": (F.hardswish, TF.hardswish, -5, 5),
  "mish": (F.mish, TF.mish, -5, 5), "softsign": (F.softsign, TF.softsign, -4, 4), "logsigmoid": (F.logsigmoid, TF.logsigmoid, -30, 30),
  "softplus": (lambda x: F.softplus(x, 2.0, 3.0), lambda x: TF.softplus(x, 2.0, 3.0), -4, 4),
  "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), -3, 3),
  "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), -3, 3),
}
NAMES = list(UNARY)
# values every unary op sees: NaN, infinities, signed zeros, the kinks and bounds of the activations, tiny and huge
EDGES = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-7, -1e-7, 3.0, -3.0, 6.0, 2.0, 25.0, -25.0, 1e20, 0.999]


def _rows(xs: Tensor, fns) -> Tensor:
  return stack([f(xs[i]) for i, f in enumerate(fns)])


def _torch_rows(xs, fns):
  return torch.stack([f(xs[i]) for i, f in enumerate(fns)])


def _domain_data(dtype, seed: int = 0, n: int = 6) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.uniform(UNARY[k][2], UNARY[k][3], n) for k in NAMES]).astype(dtype)


def test_unary_edge_values_match_torch(device):
  """NaN in gives NaN out, infinities and zeros land where PyTorch's do, and tiny inputs keep their precision (log1p, expm1, sinh)."""
  x = np.tile(np.array(EDGES, np.float32), (len(NAMES), 1))
  got = _rows(Tensor(x, device=device), [UNARY[k][0] for k in NAMES]).numpy()
  want = _torch_rows(torch.tensor(x), [UNARY[k][1] for k in NAMES]).numpy()
  for i, k in enumerate(NAMES):
    np.testing.assert_allclose(got[i], want[i], rtol=3e-6, atol=1e-30, equal_nan=True, err_msg=k)


def test_unary_values_and_gradients_match_torch(device):
  x = _domain_data(np.float32)
  xt = Tensor(x, device=device, requires_grad=True)
  out = _rows(xt, [UNARY[k][0] for k in NAMES])
  w = np.random.default_rng(1).uniform(0.5, 1.5, x.shape).astype(np.float32)
  (out * Tensor(w, device=device)).sum().backward()
  tx = torch.tensor(x, requires_grad=True)
  tout = _torch_rows(tx, [UNARY[k][1] for k in NAMES])
  (tout * torch.tensor(w)).sum().backward()
  got, grad = out.numpy(), xt.grad.numpy()
  for i, k in enumerate(NAMES):
    np.testing.assert_allclose(got[i], tout[i].detach().numpy(), rtol=2e-6, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(grad[i], tx.grad[i].numpy(), rtol=2e-5, atol=1e-6, err_msg=f"gradient of {k}")


@pytest.mark.parametrize("dev", ["CPU", "PYTHON"])
def test_unary_gradients_match_finite_differences(dev):
  x = _domain_data(np.float64, seed=2, n=3)
  assert_matches_finite_differences(lambda t: _rows(t, [UNARY[k][0] for k in NAMES]), [x], device=dev, rtol=1e-6)


def test_gradients_at_kinks_match_torch(device):
  """hardtanh/relu6/hardsigmoid are flat at their bounds, hardswish is x/3 + 1/2 at -3 and 3, elu is alpha at 0, NaN passes."""
  fns = ["hardtanh", "relu6", "hardsigmoid", "hardswish", "elu", "celu", "selu", "leaky_relu"]
  x = np.tile(np.array([-0.5, 2.0, 0.0, 6.0, -3.0, 3.0, 1.0, NAN], np.float32), (len(fns), 1))
  xt = Tensor(x, device=device, requires_grad=True)
  _rows(xt, [UNARY[k][0] for k in fns]).sum().backward()
  tx = torch.tensor(x, requires_grad=True)
  _torch_rows(tx, [UNARY[k][1] for k in fns]).sum().backward()
  grad = xt.grad.numpy()
  for i, k in enumerate(fns):
    np.testing.assert_allclose(grad[i], tx.grad[i].numpy(), rtol=1e-6, equal_nan=True, err_msg=k)


BINARY = {
  "fmod": (lambda a, b: a.fmod(b), torch.fmod), "copysign": (lambda a, b: a.copysign(b), torch.copysign),
  "logaddexp": (lambda a, b: a.logaddexp(b), torch.logaddexp), "logaddexp2": (lambda a, b: a.logaddexp2(b), torch.logaddexp2),
  "atan2": (lambda a, b: a.atan2(b), torch.atan2), "lerp_scalar": (lambda a, b: a.lerp(b, 0.3), lambda a, b: torch.lerp(a, b, 0.3)),
  "lerp_scalar_high": (lambda a, b: a.lerp(b, 0.8), lambda a, b: torch.lerp(a, b, 0.8)),
  "lerp_tensor": (lambda a, b: a.lerp(b, (a * b).sigmoid()), lambda a, b: torch.lerp(a, b, (a * b).sigmoid())),
}
BNAMES = list(BINARY)


def _pairs_edge() -> tuple[np.ndarray, np.ndarray]:
  vals = [NAN, INF, -INF, 0.0, -0.0, 1.5, -2.5, 7.0]
  a, b = np.meshgrid(np.array(vals, np.float32), np.array(vals, np.float32))
  return a.ravel(), b.ravel()


def test_binary_edge_values_match_torch(device):
  """Every pair of NaN, +-inf, +-0 and finite values: fmod keeps the dividend's sign, atan2 the quadrants, logaddexp(inf, inf) = inf."""
  a, b = _pairs_edge()
  A, B = np.tile(a, (len(BNAMES), 1)), np.tile(b, (len(BNAMES), 1))
  ta, tb = Tensor(A, device=device), Tensor(B, device=device)
  got = stack([BINARY[k][0](ta[i], tb[i]) for i, k in enumerate(BNAMES)]).numpy()
  want = torch.stack([BINARY[k][1](torch.tensor(A[i]), torch.tensor(B[i])) for i, k in enumerate(BNAMES)]).numpy()
  for i, k in enumerate(BNAMES):
    np.testing.assert_allclose(got[i], want[i], rtol=2e-6, atol=1e-30, equal_nan=True, err_msg=k)
  # the sign of a zero result (copysign(0, -1) is -0.0) and of fmod's zero remainders (not stacked: cat adds -0.0 + 0.0)
  signs = [ta[0].copysign(tb[0]), ta[0].fmod(tb[0])]
  Tensor.realize(*signs)
  signs = [o.numpy() for o in signs]
  number = ~np.isnan(A[0])  # the sign of a NaN result is not specified
  assert np.array_equal(np.signbit(signs[0])[number], np.signbit(np.copysign(A[0], B[0]))[number])
  with np.errstate(invalid="ignore"): rem = np.fmod(A[0], B[0])
  finite = np.isfinite(rem)
  assert np.array_equal(np.signbit(signs[1])[finite], np.signbit(rem)[finite])


def test_binary_values_and_gradients_match_torch(device):
  rng = np.random.default_rng(3)
  a = rng.uniform(-4, 4, (len(BNAMES), 5)).astype(np.float32)
  b = rng.uniform(0.5, 3, (len(BNAMES), 5)).astype(np.float32) * rng.choice([-1, 1], (len(BNAMES), 5)).astype(np.float32)
  ta, tb = Tensor(a, device=device, requires_grad=True), Tensor(b, device=device, requires_grad=True)
  out = stack([BINARY[k][0](ta[i], tb[i]) for i, k in enumerate(BNAMES)])
  out.sum().backward()
  xa, xb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
  tout = torch.stack([BINARY[k][1](xa[i], xb[i]) for i, k in enumerate(BNAMES)])
  tout.sum().backward()
  got, ga, gb = out.numpy(), ta.grad.numpy(), tb.grad.numpy()
  for i, k in enumerate(BNAMES):
    np.testing.assert_allclose(got[i], tout[i].detach().numpy(), rtol=2e-6, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(ga[i], xa.grad[i].numpy(), rtol=2e-5, atol=1e-6, err_msg=f"d{k}/da")
    np.testing.assert_allclose(gb[i], xb.grad[i].numpy(), rtol=2e-5, atol=1e-6, err_msg=f"d{k}/db")


@pytest.mark.parametrize("dev", ["CPU", "PYTHON"])
def test_binary_gradients_match_finite_differences(dev):
  rng = np.random.default_rng(4)
  a = rng.uniform(-4, 4, (len(BNAMES), 3))
  b = rng.uniform(0.5, 3, (len(BNAMES), 3)) * rng.choice([-1, 1], (len(BNAMES), 3))
  assert_matches_finite_differences(lambda x, y: stack([BINARY[k][0](x[i], y[i]) for i, k in enumerate(BNAMES)]), [a, b], device=dev)


def test_edge_gradients_match_torch(device):
  """logaddexp at infinities (NaN only where PyTorch's is), copysign at 0 (zero) and NaN (NaN), fmod's -trunc(a/b)."""
  a = np.array([INF, -INF, 1.0, 0.0, -2.0, NAN, 5.5, -5.5, INF, -INF, 2.0], np.float32)
  b = np.array([-INF, 3.0, INF, -1.0, -0.0, 1.0, -2.0, 2.0, INF, -INF, 2.0], np.float32)
  ops = ["logaddexp", "logaddexp2", "copysign", "fmod"]
  for k in ops:
    ta, tb = Tensor(a, device=device, requires_grad=True), Tensor(b, device=device, requires_grad=True)
    BINARY[k][0](ta, tb).sum().backward()
    xa, xb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    BINARY[k][1](xa, xb).sum().backward()
    np.testing.assert_allclose(ta.grad.numpy(), xa.grad.numpy(), rtol=1e-6, equal_nan=True, err_msg=f"d{k}/da")
    gb = tb.grad.numpy() if tb.grad is not None else np.zeros_like(b)  # copysign's sign input has no gradient path
    np.testing.assert_allclose(gb, xb.grad.numpy(), rtol=1e-6, equal_nan=True, err_msg=f"d{k}/db")


def test_abs_trunc_of_nan_and_infinity(device):
  """abs(NaN) and trunc(NaN) are NaN (no float->int cast of a NaN), infinities stay, as in PyTorch."""
  x = np.array([NAN, INF, -INF, -2.5, 2.5, -0.0, 3e20], np.float32)
  t = Tensor(x, device=device)
  outs = [t.abs(), t.trunc(), t.floor(), t.ceil()]
  Tensor.realize(*outs)
  for o, w in zip(outs, [torch.tensor(x).abs(), torch.tensor(x).trunc(), torch.tensor(x).floor(), torch.tensor(x).ceil()]):
    assert_tensor(o, w.numpy())


def test_classification_and_isclose(device):
  x = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0, -2.0], np.float32)
  t = Tensor(x, device=device)
  outs = [t.isfinite(), t.isinf(), t.isnan(), t.isposinf(), t.isneginf(), t.signbit()]
  Tensor.realize(*outs)
  tx = torch.tensor(x)
  for o, w in zip(outs, [tx.isfinite(), tx.isinf(), tx.isnan(), tx.isposinf(), tx.isneginf(), tx.signbit()]):
    assert_tensor(o, w.numpy())
  assert_tensor(Tensor([1, -2], dtype=dtypes.int8, device=device).isfinite(), np.array([True, True]))
  a = np.array([1.0, NAN, INF, INF, 1e-9, 100.0, 1.0], np.float32)
  b = np.array([1.00001, NAN, INF, -INF, 0.0, 100.1, 1.1], np.float32)
  ta, tb = Tensor(a, device=device), Tensor(b, device=device)
  for kw in [{}, {"equal_nan": True}, {"rtol": 1e-2, "atol": 0.0}, {"rtol": 0.0, "atol": 0.2}]:
    assert_tensor(ta.isclose(tb, **kw), torch.isclose(torch.tensor(a), torch.tensor(b), **kw).numpy())
  ia = Tensor([1, 5, -3], dtype=dtypes.int32, device=device)
  assert_tensor(ia.isclose(Tensor([1, 6, -3], dtype=dtypes.int32, device=device)), np.array([True, False, True]))
  assert ta[:1].allclose(tb[:1], rtol=1e-4) and not ta[-1:].allclose(tb[-1:])
  with pytest.raises(RuntimeError): ta.isclose(tb, rtol=-1.0)


@pytest.mark.parametrize("p, dim", [(2.0, 1), (1.0, 0), (INF, 1), (3.0, -1)])
def test_normalize_matches_torch(device, p, dim):
  x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
  x[1] = 0.0  # a zero row stays zero, with a finite gradient
  t = Tensor(x, device=device, requires_grad=True)
  out = F.normalize(t, p=p, dim=dim)
  (out * Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), device=device)).sum().backward()
  tx = torch.tensor(x, requires_grad=True)
  tout = TF.normalize(tx, p=p, dim=dim)
  (tout * torch.arange(12, dtype=torch.float32).reshape(3, 4)).sum().backward()
  np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_softmin_and_normalize_gradients_match_finite_differences():
  x = np.random.default_rng(6).standard_normal((3, 4))
  assert_matches_finite_differences(lambda t: stack([F.softmin(t, dim=1), F.normalize(t, dim=1), F.normalize(t, p=3.0, dim=0)]), [x])


def test_softmin_matches_torch(device):
  x = np.random.default_rng(7).standard_normal((2, 5)).astype(np.float32)
  assert_tensor(F.softmin(Tensor(x, device=device), dim=0), TF.softmin(torch.tensor(x), dim=0).numpy())


def test_empty_and_size_one_dims(device):
  """Size-0 and size-1 inputs keep their shapes through every op (a size-0 kernel must not run or crash)."""
  for shape in [(0, 3), (1,), (2, 0)]:
    x = Tensor.ones(*shape, device=device) * 0.5
    outs = [UNARY[k][0](x) for k in NAMES] + [BINARY[k][0](x, x + 1) for k in BNAMES] + [x.isclose(x), x.isfinite(), F.normalize(x, dim=-1)]
    Tensor.realize(*outs)
    got = [o.numpy() for o in outs]
    for o, k in zip(got[:len(NAMES)], NAMES):
      assert o.shape == shape
      np.testing.assert_allclose(o, UNARY[k][1](torch.full(shape, 0.5)).numpy(), rtol=2e-6, err_msg=k)
    assert all(g.shape == shape for g in got)


def test_dtypes_of_results(device):
  """Integer inputs give float32 results (like PyTorch); float16 stays float16; fmod of integers is the integer remainder."""
  i = Tensor([-7, 7, 3], dtype=dtypes.int32, device=device)
  assert i.asin().dtype == i.elu().dtype == i.copysign(i).dtype == i.logaddexp(i).dtype == dtypes.float32
  assert Tensor([0.5], dtype=dtypes.float16).atan().dtype == dtypes.float16
  assert_tensor(i.fmod(Tensor([2, -2, 3], dtype=dtypes.int32, device=device)),
                torch.fmod(torch.tensor([-7, 7, 3]), torch.tensor([2, -2, 3])).int().numpy())
  assert_tensor(i.fmod(2), np.array([-1, 1, 1], np.int32))
  h = np.array([0.3, -0.7, 2.0], np.float16)
  np.testing.assert_allclose(Tensor(h, device=device).asinh().numpy(), torch.tensor(h).asinh().numpy(), rtol=2e-3)


SHIFT_DTYPES = [dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.int32, dtypes.int64]


@pytest.mark.parametrize("dt", SHIFT_DTYPES)
def test_shifts_match_torch(device, dt):
  """<< and >> past the width give 0 (left) and the sign fill (arithmetic right shift of signed types), as in PyTorch."""
  tdt = getattr(torch, dt.name)
  a = np.array([-5, 5, 100, -128, 1, 77, -1, 3, 0], np.int64).astype(dt.np)
  s = np.array([1, 3, 7, 8, 0, 9, 40, 2, 5], np.int64).astype(dt.np)
  if not dt.is_unsigned: s[-1] = -1
  ta, ts = Tensor(a, device=device), Tensor(s, device=device)
  outs = [ta << ts, ta >> ts, ta << 2, ta >> 1, ta.bitwise_left_shift(ts), ta.bitwise_right_shift(ts), 1 << ts.clip(0, 6)]
  Tensor.realize(*outs)
  xa, xs = torch.tensor(a, dtype=tdt), torch.tensor(s, dtype=tdt)
  for o, w in zip(outs, [xa << xs, xa >> xs, xa << 2, xa >> 1, xa << xs, xa >> xs, 1 << xs.clip(0, 6)]):
    assert_tensor(o, w.numpy())
  with pytest.raises(NotImplementedError): Tensor([1.0]) << 1  # PyTorch's type


@pytest.mark.parametrize("dt", [dtypes.uint16, dtypes.uint32, dtypes.uint64])
def test_unsigned_shifts_are_logical(device, dt):
  """PyTorch has no shifts for these: the expected values are the shifts of Python ints, masked to the width."""
  bits = 8 * dt.itemsize
  top = (1 << bits) - 1
  a = [top, 1 << (bits - 1), 5, 12345]
  s = [1, bits - 1, bits, 3]
  ta, ts = Tensor(np.array(a, dt.np), device=device), Tensor(np.array(s, dt.np), device=device)
  assert_tensor(ta >> ts, np.array([x >> k if k < bits else 0 for x, k in zip(a, s)], dt.np))
  assert_tensor(ta << ts, np.array([(x << k) & top if k < bits else 0 for x, k in zip(a, s)], dt.np))
