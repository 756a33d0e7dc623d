"""The Tensor handle: realize, numpy, item, tolist, shape, dtype, device, contiguous, detach, to(), len/iter/bool, and laziness."""
import numpy as np
import pytest
from picograd import Tensor, dtypes
from compare import assert_tensor, rand


def test_shape_dtype_device_ndim_numel(device):
  x = Tensor.zeros(2, 3, 4, dtype=dtypes.float16, device=device)
  assert x.shape == (2, 3, 4) and isinstance(x.shape, tuple)
  assert x.dtype == dtypes.float16 and x.device == device
  assert x.ndim == x.dim() == 3 and x.numel() == 24
  assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
  y = x.sum(1) + 1
  assert y.shape == (2, 4) and y.device == device  # known before anything runs


def test_realize_returns_self_and_numpy_is_a_copy(device):
  x = Tensor([1.0, 2.0], device=device)
  y = x * 2
  assert y.realize() is y
  host = y.numpy()
  host[0] = 100.0
  assert_tensor(y, np.array([2.0, 4.0], np.float32))


def test_realize_several_at_once(device):
  x = Tensor(rand((3,), seed=1), device=device)
  a, b = x + 1, x * 3
  a.realize(b)
  assert_tensor(a, x.numpy() + 1)
  assert_tensor(b, x.numpy() * 3)


@pytest.mark.parametrize("value, dtype", [(3.5, dtypes.float32), (-2, dtypes.int32), (7, dtypes.int64), (True, dtypes.bool), (0.25, dtypes.float16)])
def test_item_gives_python_scalars(device, value, dtype):
  for shape in [(), (1,), (1, 1, 1)]:
    out = Tensor.full(shape, value, dtype=dtype, device=device).item()
    assert out == value and type(out) is type(value)


def test_tolist(device):
  a = np.arange(6).reshape(2, 3)
  assert Tensor(a, device=device).tolist() == a.tolist()
  assert Tensor(2.5, device=device).tolist() == 2.5
  assert Tensor([True, False], device=device).tolist() == [True, False]
  assert Tensor(np.zeros((2, 0)), device=device).tolist() == [[], []]


def test_len_iter_bool(device):
  x = Tensor(np.arange(6).reshape(3, 2), device=device)
  assert len(x) == 3
  assert [row.tolist() for row in x] == [[0, 1], [2, 3], [4, 5]]
  assert bool(Tensor([2.0], device=device)) is True and bool(Tensor(0, device=device)) is False


def test_contiguous_copies_a_view(device):
  a = rand((3, 4), seed=2)
  x = Tensor(a, device=device)
  y = x.T[::2].contiguous()
  assert_tensor(y, a.T[::2])
  assert_tensor(x.clone(), a)


def test_detach_keeps_values_and_drops_grad_tracking(device):
  x = Tensor([1.0, 2.0], device=device, requires_grad=True)
  d = (x * 2).detach()
  assert_tensor(d, np.array([2.0, 4.0], np.float32))
  assert not d.requires_grad


@pytest.mark.parametrize("dst", ["CPU", "PYTHON"])
def test_to_moves_between_devices(device, dst):
  a = rand((2, 3), seed=3)
  moved = (Tensor(a, device=device) * 2).to(dst)
  assert moved.device == dst
  assert_tensor(moved + 1, a * 2 + 1)
  assert_tensor(Tensor(a, device=device).to(dst, dtypes.float64), a.astype(np.float64))


def test_to_dtype_only(device):
  assert_tensor(Tensor([1.5], device=device).to(dtype=dtypes.int32), np.array([1], np.int32))


def test_results_computed_on_device_agree_with_python_oracle(device):
  a, b = rand((4, 5), seed=4), rand((5, 3), seed=5)
  on_device = ((Tensor(a, device=device) @ Tensor(b, device=device)).relu().sum(0)).numpy()
  oracle = ((Tensor(a, device="PYTHON") @ Tensor(b, device="PYTHON")).relu().sum(0)).numpy()
  np.testing.assert_allclose(on_device, oracle, rtol=1e-5, atol=1e-6)


def test_realized_tensor_is_not_recomputed(device):
  """A realized intermediate is read from its buffer by later graphs, so its value is fixed."""
  import picograd
  Tensor.manual_seed(5)
  r = Tensor.rand(4, device=device)
  first = r.numpy()
  np.testing.assert_array_equal((r + 0).numpy(), first)
  np.testing.assert_array_equal(r.numpy(), first)
  assert picograd.schedule(r) == []


def test_repr_names_shape_dtype_device(device):
  text = repr(Tensor.zeros(2, 3, device=device))
  assert "(2, 3)" in text and "float32" in text and device in text
