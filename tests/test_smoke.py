"""A first end-to-end check on every available device: a fused elementwise chain, a reduction, a matmul."""
import numpy as np
import pytest
from picograd import Tensor


@pytest.mark.parametrize("device", ["CPU", "PYTHON"])
def test_end_to_end(device):
  a = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
  b = np.random.default_rng(1).standard_normal((7, 3)).astype(np.float32)
  x, w = Tensor(a, device=device), Tensor(b, device=device)
  np.testing.assert_allclose((x * 2 + 1).exp().numpy(), np.exp(a * 2 + 1), rtol=1e-5)
  np.testing.assert_allclose(x.sum(1).numpy(), a.sum(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose((x @ w).numpy(), a @ b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(x.softmax(-1).numpy().sum(-1), np.ones(5), rtol=1e-5)
