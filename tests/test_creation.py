"""Making tensors: from Python scalars, nested lists and numpy arrays; zeros/ones/full/arange/eye; rand/randn and the seed."""
import numpy as np
import pytest
from picograd import Tensor, dtypes
from compare import assert_tensor


# ---------------------------------------------------------------- from Python and numpy data

@pytest.mark.parametrize("value, dtype", [(3, np.int32), (-7, np.int32), (2.5, np.float32), (True, np.bool_), (False, np.bool_)])
def test_from_python_scalar(device, value, dtype):
  # picograd's default int for a Python int scalar is int32 (dtypes.default_int); floats are float32
  t = Tensor(value, device=device)
  assert t.shape == () and t.device == device
  assert_tensor(t, np.array(value, dtype=dtype))


@pytest.mark.parametrize("data, dtype", [
  ([[1, 2], [3, 4]], np.int64),         # Python lists follow PyTorch: ints -> int64
  ([1.5, 2, -3], np.float32),           # floats -> the default float
  ([[True], [False]], np.bool_),
  ([[[1.0]]], np.float32),              # size-1 dimensions
  ([], np.float32),                     # an empty list is a zero-size float tensor, as in PyTorch
  ([[], []], np.float32),
])
def test_from_nested_list(device, data, dtype):
  assert_tensor(Tensor(data, device=device), np.array(data, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8])
@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3), (3, 1, 2), (0,), (2, 0, 3)])
def test_from_numpy_keeps_dtype_and_shape(device, dtype, shape):
  a = (np.arange(int(np.prod(shape))).reshape(shape) % 3).astype(dtype)
  assert_tensor(Tensor(a, device=device), a)


def test_from_numpy_non_contiguous(device):
  a = np.arange(24, dtype=np.float32).reshape(4, 6)[::2, ::-3]
  assert_tensor(Tensor(a, device=device), a)


def test_explicit_dtype_casts_the_data(device):
  assert_tensor(Tensor([1, 2], dtype=dtypes.float16, device=device), np.array([1, 2], np.float16))
  assert_tensor(Tensor(3, dtype="float64", device=device), np.array(3, np.float64))
  assert_tensor(Tensor(np.array([1.7, -1.7]), dtype=dtypes.int32, device=device), np.array([1, -1], np.int32))


def test_from_torch_tensor(device):
  torch = pytest.importorskip("torch")
  assert_tensor(Tensor(torch.arange(6).reshape(2, 3), device=device), np.arange(6).reshape(2, 3))


def test_device_name_is_canonical():
  assert Tensor([1], device="cpu").device == "CPU"
  assert Tensor([1], device="python").device == "PYTHON"


# ---------------------------------------------------------------- constant tensors

@pytest.mark.parametrize("shape", [(), (1,), (3,), (2, 3), (0,), (2, 0), (1, 1, 4)])
def test_zeros_ones(device, shape):
  assert_tensor(Tensor.zeros(*shape, device=device), np.zeros(shape, np.float32))
  assert_tensor(Tensor.ones(shape, device=device), np.ones(shape, np.float32))
  assert_tensor(Tensor.ones(*shape, dtype=dtypes.int32, device=device), np.ones(shape, np.int32))


@pytest.mark.parametrize("fill, dtype", [(7, np.int32), (2.5, np.float32), (True, np.bool_), (-1.0, np.float32)])
def test_full_infers_dtype_from_value(device, fill, dtype):
  assert_tensor(Tensor.full((2, 3), fill, device=device), np.full((2, 3), fill, dtype))


def test_full_with_dtype(device):
  assert_tensor(Tensor.full((3,), 2, dtype=dtypes.float64, device=device), np.full(3, 2, np.float64))
  assert_tensor(Tensor.full(4, 1.5, dtype="float16", device=device), np.full(4, 1.5, np.float16))


@pytest.mark.parametrize("args, kwargs", [
  ((5,), {}), ((0,), {}), ((1,), {}), ((2, 9), {}), ((1, 10, 3), {}), ((5, 0, -2), {}), ((-3, 4), {}), ((3, 3), {}),
  ((0.0, 1.0, 0.25), {}), ((1.5,), {}), ((0, 5), {"dtype": "float32"}), ((4,), {"dtype": "int32"}), ((-1.0, 1.0, 0.3), {}),
])
def test_arange(device, args, kwargs):
  expected = np.arange(*args)
  # PyTorch's rule: any float argument -> default float, else int64
  expected = expected.astype(kwargs.get("dtype", np.float32 if any(isinstance(a, float) for a in args) else np.int64))
  assert_tensor(Tensor.arange(*args, **kwargs, device=device), expected)


@pytest.mark.parametrize("n, m", [(1, None), (3, None), (2, 4), (4, 2), (0, None), (3, 0)])
def test_eye(device, n, m):
  assert_tensor(Tensor.eye(n, m, device=device), np.eye(n, m, dtype=np.float32))


def test_eye_dtype(device):
  assert_tensor(Tensor.eye(3, dtype=dtypes.int64, device=device), np.eye(3, dtype=np.int64))


@pytest.mark.parametrize("src_dtype", [dtypes.float32, dtypes.float16, dtypes.int64, dtypes.bool])
def test_like_constructors_keep_shape_dtype_device(device, src_dtype):
  x = Tensor.ones(2, 3, dtype=src_dtype, device=device)
  np_dt = src_dtype.np
  assert_tensor(x.zeros_like(), np.zeros((2, 3), np_dt))
  assert_tensor(x.ones_like(), np.ones((2, 3), np_dt))
  assert_tensor(x.full_like(1), np.full((2, 3), 1, np_dt))
  assert x.zeros_like().device == device
  assert_tensor(x.zeros_like(dtype=dtypes.float64), np.zeros((2, 3), np.float64))


# ---------------------------------------------------------------- random numbers

@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 4), (0, 5)])
def test_rand_shape_dtype_and_range(device, shape):
  Tensor.manual_seed(0)
  r = Tensor.rand(*shape, device=device)
  assert r.shape == shape and r.dtype == dtypes.float32
  v = r.numpy()
  assert v.shape == shape and v.dtype == np.float32
  assert np.all((v >= 0) & (v < 1))


def test_rand_statistics(device):
  # deterministic for the seed: uniform mean 1/2, variance 1/12; normal mean 0, std 1
  Tensor.manual_seed(1234)
  u = Tensor.rand(20000, device=device).numpy()
  n = Tensor.randn(20000, device=device).numpy()
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
  assert abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03
  assert np.isfinite(n).all()
  assert len(np.unique(u)) > 19000  # not a short cycle


@pytest.mark.parametrize("dtype", [dtypes.float16, dtypes.float64])
def test_rand_randn_dtype(device, dtype):
  assert Tensor.rand(4, dtype=dtype, device=device).numpy().dtype == dtype.np
  assert Tensor.randn(2, 2, dtype=dtype, device=device).numpy().dtype == dtype.np


def test_manual_seed_repeats_the_sequence(device):
  Tensor.manual_seed(42)
  a, b = Tensor.rand(5, device=device).numpy(), Tensor.randn(2, 3, device=device).numpy()
  Tensor.manual_seed(42)
  np.testing.assert_array_equal(Tensor.rand(5, device=device).numpy(), a)
  np.testing.assert_array_equal(Tensor.randn(2, 3, device=device).numpy(), b)


def test_successive_draws_and_seeds_differ(device):
  Tensor.manual_seed(3)
  a, b = Tensor.rand(64, device=device).numpy(), Tensor.rand(64, device=device).numpy()
  assert not np.array_equal(a, b)
  Tensor.manual_seed(4)
  assert not np.array_equal(Tensor.rand(64, device=device).numpy(), a)


def test_random_values_identical_on_cpu_and_python():
  draws = {}
  for dev in ("CPU", "PYTHON"):
    Tensor.manual_seed(7)
    draws[dev] = (Tensor.rand(3, 5, device=dev).numpy(), Tensor.randn(17, device=dev).numpy())
  np.testing.assert_array_equal(draws["CPU"][0], draws["PYTHON"][0])
  # randn goes through log/sqrt/cos: the two backends may round the last bit differently
  np.testing.assert_allclose(draws["CPU"][1], draws["PYTHON"][1], rtol=1e-6, atol=1e-6)


def test_rand_like_randn_like(device):
  x = Tensor.zeros(2, 3, dtype=dtypes.float16, device=device)
  r, n = x.rand_like(), x.randn_like()
  assert r.shape == n.shape == (2, 3) and r.dtype == n.dtype == dtypes.float16 and r.device == device
  assert np.all((r.numpy() >= 0) & (r.numpy() < 1))
  assert Tensor.zeros(4, dtype=dtypes.int32, device=device).rand_like().dtype == dtypes.float32
