"""Flags that must not change results: NOOPT=1 gives bit-identical outputs, CACHE=0 compiles without the disk cache."""
import numpy as np
import pytest
from picograd import Tensor, Context
from picograd.helpers import NOOPT, CACHE
from compare import rand

GRAPHS = {
  "matmul": lambda a, b: a @ b,
  "matmul_relu_bias": lambda a, b: (a @ b).relu() + b.sum(0),
  "batched_matmul": lambda a, b: a.reshape(2, 8, 8) @ b.reshape(2, 8, 8)[:, :, :5],
  "softmax": lambda a, b: a.softmax(-1),
  "reductions": lambda a, b: a.sum(0) * a.max(0) + a.mean(0),
  "argmax": lambda a, b: a.argmax(1),
  "movement_chain": lambda a, b: (a.T[::2, 1:] * 2).flip(0).pad((1, 1)).exp(),
  "gather": lambda a, b: a[Tensor([3, 0, 7], device=a.device)],
}


# On the CPU a lone accumulator's adds carry `reassoc` (so the loop vectorizer splits the sum into lanes),
# while the optimizer's upcast tiles add in order: the two orders of float addition differ in the last bits.
# The policy (NOTES.md): NOOPT is bit-identical for elementwise, integer and movement kernels, and equal up to
# float rounding for reassociated float reductions on the CPU.
CPU_REASSOCIATED = {"matmul", "matmul_relu_bias", "reductions"}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_noopt_gives_identical_results(device, name):
  a, b = Tensor(rand((8, 16), seed=1), device=device), Tensor(rand((16, 8), seed=2), device=device)
  optimized = GRAPHS[name](a, b).numpy()
  with Context(NOOPT=1):
    plain = GRAPHS[name](a, b).numpy()
  if device == "CPU" and name in CPU_REASSOCIATED: np.testing.assert_allclose(plain, optimized, rtol=1e-5, atol=1e-6)
  else: np.testing.assert_array_equal(plain, optimized)


def test_cache_off_compiles_and_runs(device):
  a = rand((5, 6), seed=3)
  with Context(CACHE=0):
    out = (Tensor(a, device=device) * 1.5 - 0.25).sum(1).numpy()
  np.testing.assert_allclose(out, (a * 1.5 - 0.25).sum(1), rtol=1e-5)


def test_context_restores_flags():
  before = (NOOPT.value, CACHE.value)
  with Context(NOOPT=1, CACHE=0):
    assert NOOPT.value == 1 and CACHE.value == 0
  assert (NOOPT.value, CACHE.value) == before
  with pytest.raises(ZeroDivisionError):
    with Context(NOOPT=1): 1 / 0
  assert NOOPT.value == before[0]
