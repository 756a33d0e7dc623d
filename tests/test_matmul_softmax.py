"""matmul / @ (1-D, 2-D, batched, broadcast batches) and the composite row functions softmax, log_softmax, logsumexp."""
import numpy as np
import pytest
from picograd import Tensor, dtypes
from compare import assert_tensor, rand, torch_result

MATMUL_SHAPES = [
  ((3, 4), (4, 5)), ((1, 1), (1, 1)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
  ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (2, 4, 1)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((0, 4), (4, 3)), ((3, 0), (0, 2)),
  ((1, 7), (7, 1)), ((17, 33), (33, 9)),
]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_shapes(device, sa, sb):
  a, b = rand(sa, seed=1), rand(sb, seed=2)
  ref = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
  assert_tensor(Tensor(a, device=device) @ Tensor(b, device=device), ref, rtol=1e-5, atol=1e-5)
  assert_tensor(Tensor(a, device=device).matmul(Tensor(b, device=device)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("da, db", [(np.int64, np.int64), (np.int32, np.float32), (np.float16, np.float16), (np.float64, np.float32)])
def test_matmul_dtypes_match_torch(device, da, db):
  torch = pytest.importorskip("torch")
  a, b = rand((3, 4), da, seed=3), rand((4, 2), db, seed=4)
  # torch.matmul refuses mixed dtypes; picograd promotes the operands first, as every other binary op does
  dt = torch.result_type(torch.from_numpy(a), torch.from_numpy(b))
  assert_tensor(Tensor(a, device=device) @ Tensor(b, device=device), torch_result(lambda x, y: x.to(dt) @ y.to(dt), a, b), rtol=2e-3, atol=2e-3)


def test_matmul_with_transposed_and_sliced_operands(device):
  a, b = rand((5, 6), seed=5), rand((4, 6), seed=6)
  x, w = Tensor(a, device=device), Tensor(b, device=device)
  assert_tensor(x @ w.T, a @ b.T, rtol=1e-5, atol=1e-5)
  assert_tensor(x[::2, 1:] @ w[1:, 1:].T, a[::2, 1:] @ b[1:, 1:].T, rtol=1e-5, atol=1e-5)


def test_linear_and_dot(device):
  a, w, bias = rand((3, 4), seed=7), rand((2, 4), seed=8), rand((2,), seed=9)
  assert_tensor(Tensor(a, device=device).linear(Tensor(w, device=device), Tensor(bias, device=device)), a @ w.T + bias, rtol=1e-5, atol=1e-5)
  v = rand((4,), seed=10)
  assert_tensor(Tensor(v, device=device).dot(Tensor(v, device=device)), np.dot(v, v), rtol=1e-5)


@pytest.mark.parametrize("shape, axis", [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((1,), 0), ((4, 1), 1), ((0, 3), 1), ((), 0)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_torch(device, name, shape, axis):
  pytest.importorskip("torch")
  a = rand(shape, seed=11, low=-5, high=5)
  assert_tensor(getattr(Tensor(a, device=device), name)(axis), torch_result(lambda t: getattr(t, name)(axis), a), rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_large_inputs(device):
  a = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]], np.float32)
  out = Tensor(a, device=device).softmax(-1).numpy()
  e = np.exp(a - a.max(-1, keepdims=True))
  np.testing.assert_allclose(out, e / e.sum(-1, keepdims=True), rtol=1e-6)
  assert np.isfinite(Tensor(a, device=device).log_softmax(-1).numpy()).all()


def test_softmax_of_ints_and_halves(device):
  assert Tensor([1, 2, 3], device=device).softmax().dtype == dtypes.float32
  assert Tensor([1, 2, 3], dtype=dtypes.float16, device=device).softmax().dtype == dtypes.float16


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 1), None])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp_matches_torch(device, axis, keepdim):
  pytest.importorskip("torch")
  a = rand((3, 4), seed=12, low=-30, high=30)
  dim = axis if axis is not None else (0, 1)
  assert_tensor(Tensor(a, device=device).logsumexp(axis, keepdim=keepdim), torch_result(lambda t: t.logsumexp(dim, keepdim=keepdim), a),
                rtol=1e-5, atol=1e-5)


def test_logsumexp_with_infinities(device):
  pytest.importorskip("torch")
  a = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [-np.inf, 0.0]], np.float32)
  assert_tensor(Tensor(a, device=device).logsumexp(1), torch_result(lambda t: t.logsumexp(1), a))
