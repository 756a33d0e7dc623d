"""Helpers the op tests share: compare a Tensor with a numpy (or PyTorch) result in values, shape and dtype."""
from __future__ import annotations
import numpy as np
from picograd import Tensor

# float tolerances by result dtype: picograd composes exp/log/tanh/... from exp2/log2/sin, so allow a few ulps
TOL = {np.dtype(np.float16): (2e-3, 2e-3), np.dtype(np.float32): (2e-5, 2e-6), np.dtype(np.float64): (1e-10, 1e-12)}


def assert_tensor(out: Tensor, expected, dtype: np.dtype | type | None = None, rtol: float | None = None, atol: float | None = None) -> np.ndarray:
  """`out` has `expected`'s shape, dtype (or `dtype` when given) and values. NaNs must match NaNs. Returns out.numpy()."""
  expected = np.asarray(expected)
  want_dtype = np.dtype(dtype) if dtype is not None else expected.dtype
  assert out.shape == expected.shape, f"shape {out.shape} != expected {expected.shape}"
  got = out.numpy()
  assert got.shape == expected.shape, f"numpy() shape {got.shape} != expected {expected.shape}"
  assert got.dtype == want_dtype, f"dtype {got.dtype} != expected {want_dtype}"
  assert out.dtype.np == want_dtype, f"Tensor.dtype {out.dtype} != expected {want_dtype}"
  if want_dtype.kind == "f":
    r, a = TOL.get(want_dtype, (1e-5, 1e-6))
    np.testing.assert_allclose(got, expected.astype(want_dtype), rtol=r if rtol is None else rtol, atol=a if atol is None else atol, equal_nan=True)
  else:
    np.testing.assert_array_equal(got, expected.astype(want_dtype))
  return got


def torch_result(fn, *arrays: np.ndarray) -> np.ndarray:
  """Run `fn` on torch tensors made from `arrays` and return a numpy array (the PyTorch oracle)."""
  import torch
  out = fn(*[torch.from_numpy(np.array(a)) for a in arrays])  # np.array keeps 0-d arrays 0-d
  return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def rand(shape, dtype=np.float32, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
  """Deterministic test data of any dtype."""
  rng = np.random.default_rng(seed)
  dtype = np.dtype(dtype)
  if dtype == np.bool_: return rng.random(shape) < 0.5
  if dtype.kind in "iu": return rng.integers(int(low) * 5, int(high) * 5 + 1, size=shape).astype(dtype)
  return rng.uniform(low, high, size=shape).astype(dtype)
