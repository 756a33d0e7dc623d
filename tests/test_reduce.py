"""Reductions against numpy (and PyTorch for its conventions): sum max min mean var std argmax argmin, with axis and keepdim."""
import math
import warnings
import numpy as np
import pytest
from picograd import Tensor, dtypes
from compare import assert_tensor, rand, torch_result

AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2), (), (-1, 0)]


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["sum", "max", "min", "mean"])
def test_reduce_axes(device, name, axis, keepdim):
  a = rand((2, 3, 4), seed=1)
  out = getattr(Tensor(a, device=device), name)(axis, keepdim=keepdim)
  assert_tensor(out, getattr(np, name)(a, axis=axis, keepdims=keepdim), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("correction", [0, 1, 2])
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_correction_matches_torch(device, name, axis, keepdim, correction):
  pytest.importorskip("torch")
  a = rand((4, 5), seed=2)
  dim = axis if axis is not None else (0, 1)
  ref = torch_result(lambda t: getattr(t, name)(dim=dim, keepdim=keepdim, correction=correction), a)
  assert_tensor(getattr(Tensor(a, device=device), name)(axis, keepdim=keepdim, correction=correction), ref, rtol=1e-5)


def test_var_default_is_unbiased_like_torch(device):
  a = rand((6,), seed=3)
  assert_tensor(Tensor(a, device=device).var(), np.var(a, ddof=1))
  assert_tensor(Tensor(a, device=device).std(unbiased=False), np.std(a, ddof=0))
  # one element with correction 1 divides by zero: nan, as in PyTorch
  assert np.isnan(Tensor([2.0], device=device).std().item())


@pytest.mark.parametrize("dt", [dtypes.int32, dtypes.int64, dtypes.bool])
def test_sum_of_ints_and_bools_is_int64(device, dt):
  a = rand((3, 4), dt.np, seed=4)
  assert_tensor(Tensor(a, device=device).sum(), np.sum(a, dtype=np.int64))
  assert_tensor(Tensor(a, device=device).sum(1), np.sum(a, axis=1, dtype=np.int64))


@pytest.mark.parametrize("dt", [dtypes.int32, dtypes.int64, dtypes.bool, dtypes.float16, dtypes.float64])
def test_max_min_keep_dtype(device, dt):
  a = rand((3, 4), dt.np, seed=5)
  assert_tensor(Tensor(a, device=device).max(0), a.max(0))
  assert_tensor(Tensor(a, device=device).min(1, keepdim=True), a.min(1, keepdims=True))


def test_max_of_negated_rows(device):
  # ptxas once dropped a negation folded into a 3-input int32 max (see the CUDA prelude's pg_max)
  a = np.array([[5, -4, 0, 1], [3, 2, -7, 9], [1, 1, 1, 1]], np.int32)
  assert_tensor((-Tensor(a, device=device)).max(1), (-a).max(1))
  assert_tensor((-Tensor(a.astype(np.int64), device=device)).max(1), (-a.astype(np.int64)).max(1))


def test_mean_of_ints_is_float(device):
  a = np.array([[1, 2], [4, 7]], np.int64)
  assert_tensor(Tensor(a, device=device).mean(), np.array(3.5, np.float32))
  assert_tensor(Tensor(a, device=device).mean(0), np.array([2.5, 4.5], np.float32))


def test_dim_keyword(device):
  a = rand((3, 4), seed=6)
  x = Tensor(a, device=device)
  assert_tensor(x.sum(dim=1), a.sum(1))
  assert_tensor(x.max(dim=0, keepdim=True), a.max(0, keepdims=True))
  assert_tensor(x.argmax(dim=1), a.argmax(1))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1), (1, 4), (2, 3, 4)])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(device, name, shape):
  a = rand(shape, seed=7)
  x = Tensor(a, device=device)
  assert_tensor(getattr(x, name)(), getattr(np, name)(a))
  for axis in range(len(shape)):
    assert_tensor(getattr(x, name)(axis), getattr(np, name)(a, axis=axis))
    assert_tensor(getattr(x, name)(axis, keepdim=True), np.expand_dims(getattr(np, name)(a, axis=axis), axis))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_arg_ties_pick_the_first_like_torch(device, name):
  pytest.importorskip("torch")
  a = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, 0, 5, 0]], np.float32)
  for axis in (0, 1):
    assert_tensor(getattr(Tensor(a, device=device), name)(axis), torch_result(lambda t: getattr(t, name)(axis), a))
  ints = a.astype(np.int32)
  assert_tensor(getattr(Tensor(ints, device=device), name)(1), torch_result(lambda t: getattr(t, name)(1), ints))


def test_argmax_with_nan_picks_the_nan_like_torch(device):
  pytest.importorskip("torch")
  a = np.array([1.0, math.nan, 3.0, math.nan], np.float32)
  assert_tensor(Tensor(a, device=device).argmax(), torch_result(lambda t: t.argmax(), a))
  assert_tensor(Tensor(a, device=device).argmin(), torch_result(lambda t: t.argmin(), a))


def test_argmax_bool(device):
  a = np.array([[False, True, True], [False, False, False]])
  assert_tensor(Tensor(a, device=device).argmax(1), np.argmax(a, 1))
  assert_tensor(Tensor(a, device=device).argmin(1), np.argmin(a, 1))


def test_max_propagates_nan(device):
  assert np.isnan(Tensor([1.0, math.nan, 3.0], device=device).max().item())


def test_reductions_with_infinities(device):
  a = np.array([[-math.inf, 1.0], [-math.inf, -math.inf]], np.float32)
  assert_tensor(Tensor(a, device=device).max(1), a.max(1))
  assert_tensor(Tensor(a, device=device).sum(1), a.sum(1))


@pytest.mark.parametrize("shape, axis", [((0,), None), ((0, 3), 0), ((0, 3), 1), ((3, 0), 1), ((2, 0, 2), (0, 1))])
def test_sum_and_mean_over_zero_size(device, shape, axis):
  a = np.zeros(shape, np.float32)
  assert_tensor(Tensor(a, device=device).sum(axis), a.sum(axis))
  with warnings.catch_warnings(), np.errstate(invalid="ignore"):
    warnings.simplefilter("ignore")
    ref = a.mean(axis)  # numpy warns about an empty mean; the value is nan, as in PyTorch
  assert_tensor(Tensor(a, device=device).mean(axis), ref)


def test_max_over_nonempty_axis_of_zero_size_tensor(device):
  a = np.zeros((0, 3), np.float32)
  assert_tensor(Tensor(a, device=device).max(1), a.max(1))
  assert_tensor(Tensor(a, device=device).argmax(1), np.zeros((0,), np.int64))


def test_reduce_of_0d_tensor(device):
  x = Tensor(2.5, device=device)
  assert_tensor(x.sum(), np.array(2.5, np.float32))
  assert_tensor(x.max(), np.array(2.5, np.float32))
  assert_tensor(x.argmax(), np.array(0, np.int64))


def test_large_sum_is_accurate(device):
  a = rand((4, 10000), seed=8, low=0, high=1)
  assert_tensor(Tensor(a, device=device).sum(1), a.astype(np.float64).sum(1).astype(np.float32), rtol=1e-4)
  assert_tensor(Tensor(a, device=device).mean(), np.array(a.astype(np.float64).mean(), np.float32), rtol=1e-4)


def test_sum_of_products_with_infinity_keeps_nan(device):
  """0 * inf is NaN inside a sum: LLVM must not factor the infinite constant out ((a + b) * inf), which `nsz` allowed."""
  x = Tensor(np.array([0.82, -1.38, 0.0, 1.0] * 5, np.float32), device=device)
  assert np.isnan((x * float("inf")).sum().numpy())
  assert np.isnan((x[:2] / 0.0).sum().numpy())
