"""Dtypes: PyTorch's promotion rules for tensor-tensor and tensor-scalar ops, casts, and arithmetic in every dtype."""
import itertools
import numpy as np
import pytest
from picograd import Tensor, dtypes
from picograd.dtype import promote
from compare import assert_tensor, rand

DTYPES = [dtypes.bool, dtypes.int32, dtypes.int64, dtypes.float16, dtypes.float32, dtypes.float64]


@pytest.mark.parametrize("a, b", list(itertools.product(DTYPES, DTYPES)))
def test_tensor_tensor_promotion_matches_torch(a, b):
  torch = pytest.importorskip("torch")
  want = torch.result_type(torch.zeros(1, dtype=getattr(torch, a.name)), torch.zeros(1, dtype=getattr(torch, b.name)))
  assert promote(a, b).name == str(want).split(".")[1]
  assert (Tensor.ones(2, dtype=a, device="PYTHON") + Tensor.ones(2, dtype=b, device="PYTHON")).dtype == promote(a, b)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_tensor_scalar_promotion(dt, scalar):
  """A Python scalar never widens a tensor of its own kind or higher (float16 + 2.5 stays float16)."""
  torch = pytest.importorskip("torch")
  got = (Tensor.ones(2, dtype=dt) * scalar).dtype
  want = str((torch.ones(2, dtype=getattr(torch, dt.name)) * scalar).dtype).split(".")[1]
  if dt == dtypes.bool and isinstance(scalar, int) and not isinstance(scalar, bool):
    # deliberate difference: picograd's default int is int32 where PyTorch's is int64
    assert got == dtypes.default_int
  else:
    assert got.name == want


@pytest.mark.parametrize("dt", [dtypes.int32, dtypes.int64, dtypes.float16, dtypes.float64])
def test_reverse_ops_with_scalars_keep_dtype(device, dt):
  x = Tensor([1, 2, 4], dtype=dt, device=device)
  a = np.array([1, 2, 4], dt.np)
  assert_tensor(3 - x, np.array(3, dt.np) - a)
  assert_tensor(2 * x + 1, 2 * a + np.array(1, dt.np))


@pytest.mark.parametrize("dt", [dtypes.float16, dtypes.float32, dtypes.float64, dtypes.int32, dtypes.int64])
def test_arithmetic_in_each_dtype(device, dt):
  a, b = rand((3, 4), dt.np, seed=1), rand((3, 4), dt.np, seed=2)
  if dt.is_int: b = np.where(b == 0, 1, b).astype(dt.np)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  assert_tensor(x + y, a + b)
  assert_tensor(x - y, a - b)
  assert_tensor(x * y, a * b)
  assert_tensor(x.maximum(y), np.maximum(a, b))
  assert_tensor(-x, -a)
  assert_tensor(x < y, a < b)
  if dt.is_float: assert_tensor(x / y, a / b)
  else:  # true division of integers gives the default float, as in PyTorch
    assert_tensor(x / y, (a.astype(np.float64) / b).astype(np.float32))
    assert_tensor(x // y, a // b)
    assert_tensor(x % y, a % b)


def test_bool_logic(device):
  a, b = rand((4, 3), np.bool_, seed=1), rand((4, 3), np.bool_, seed=2)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  assert_tensor(x & y, a & b)
  assert_tensor(x | y, a | b)
  assert_tensor(x ^ y, a ^ b)
  assert_tensor(~x, ~a)
  assert_tensor(x == y, a == b)
  assert_tensor(x + y, a | b)                         # PyTorch: bool + bool is logical or
  assert_tensor(x * y, a & b)
  assert_tensor(x.maximum(y), a | b)
  assert_tensor(x.minimum(y), a & b)
  assert_tensor(x + 1, a.astype(np.int32) + 1)        # bool + int scalar -> default int


def test_int64_values_beyond_int32(device):
  a = np.array([2**40, -(2**35) - 3, 2**62], dtype=np.int64)
  x = Tensor(a, device=device)
  assert_tensor(x + 1, a + 1)
  assert_tensor(x // 3, a // 3)
  assert_tensor(x.max(), a.max())


def test_float64_keeps_precision(device):
  a = np.array([1e-300, 1.0 + 1e-15, 1e300], dtype=np.float64)
  x = Tensor(a, device=device)
  np.testing.assert_array_equal((x * 1.0).numpy(), a)
  assert_tensor((x - 1.0) * 2.0, (a - 1.0) * 2.0, rtol=0, atol=0)


def test_float16_rounds_like_numpy(device):
  a = np.array([1.0, 1e-3, 1000.0, 65504.0, 2049.0], dtype=np.float16)
  with np.errstate(over="ignore"): expected = a * np.float16(3)  # 65504 * 3 overflows to inf in both
  assert_tensor(Tensor(a, device=device) * 3, expected, rtol=0, atol=0)
  # sums of half accumulate in float32 and round once (PyTorch's behaviour)
  big = np.ones(3000, np.float16)
  assert_tensor(Tensor(big, device=device).sum(), np.array(3000, np.float16), rtol=0, atol=0)


# ---------------------------------------------------------------- casts

@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_cast_matches_numpy(device, src, dst):
  vals = {"b": [True, False, True, True], "i": [-3, 0, 1, 100], "f": [-2.75, 0.0, 0.5, 100.25]}[src.kind]
  a = np.array(vals, dtype=src.np)
  # float -> int truncates toward zero (C and PyTorch); numpy's astype does the same for in-range values
  assert_tensor(Tensor(a, device=device).cast(dst), a.astype(dst.np))


def test_cast_helpers(device):
  x = Tensor([1.5, -2.5], device=device)
  assert x.half().dtype == dtypes.float16 and x.double().dtype == dtypes.float64
  assert_tensor(x.int(), np.array([1, -2], np.int32))
  assert_tensor(x.long(), np.array([1, -2], np.int64))
  assert_tensor(x.bool(), np.array([True, True]))
  assert_tensor(Tensor([1, 0], device=device).float(), np.array([1, 0], np.float32))
  assert x.cast("float32") is x  # a no-op cast adds no node
