"""Streaming (non-temporal) stores for large elementwise outputs on the CPU (codegen/streaming.py)."""
import numpy as np
import picograd
from picograd import Tensor, Context
from picograd.codegen.streaming import STREAM_MIN_BYTES

N = STREAM_MIN_BYTES // 4  # the smallest float32 / int32 output that streams


def test_large_elementwise_streams_and_matches_numpy():
  rng = np.random.default_rng(0)
  xs = [rng.standard_normal(N).astype(np.float32) for _ in range(3)]
  a, b, c = (Tensor(x).realize() for x in xs)
  (step,) = picograd.schedule(a * b + c)
  assert any("streaming" in o for o in step.kernel.opts), step.kernel.opts
  assert "!nontemporal" in step.source and "sfence" in step.source
  want = xs[0] * xs[1] + xs[2]
  np.testing.assert_array_equal((a * b + c).numpy(), want)  # split across the pool's threads: each slice whole cache lines
  with Context(NOOPT=1): np.testing.assert_array_equal((a * b + c).numpy(), want)
  ints = [rng.integers(-1000, 1000, N).astype(np.int32) for _ in range(2)]
  np.testing.assert_array_equal((Tensor(ints[0]) * 3 - Tensor(ints[1])).numpy(), ints[0] * 3 - ints[1])


def test_what_does_not_stream():
  small, big = Tensor(np.ones(N // 2, np.float32)), Tensor(np.ones(N, np.float32))
  row = Tensor(np.arange(16, dtype=np.float32))
  for out in (small * 2 + 1,  # below the size
              big.reshape(N // 16, 16) + row,  # a broadcast operand: its index is not the loop's
              big[: N - 8] * 2):  # not whole cache lines
    (step,) = picograd.schedule(out)
    assert not any("streaming" in o for o in step.kernel.opts) and "!nontemporal" not in step.source
  np.testing.assert_array_equal((big.reshape(N // 16, 16) + row).numpy()[-1], np.arange(16) + 1)


def test_row_kernel_streams_its_output_loop():
  # layer_norm: per row its mean and variance, then a loop over the row storing at row + j (codegen/streaming.py
  # `_plan_row_streaming`); rows of 1024 floats are whole cache lines
  import torch
  rng = np.random.default_rng(1)
  x, w, b = rng.standard_normal((N // 1024, 1024)).astype(np.float32), rng.random(1024).astype(np.float32), rng.random(1024).astype(np.float32)
  t, tw, tb = Tensor(x).realize(), Tensor(w).realize(), Tensor(b).realize()
  (step,) = picograd.schedule(t.layer_norm(1024, tw, tb))
  assert any("streaming" in o for o in step.kernel.opts) and "!nontemporal" in step.source
  want = torch.nn.functional.layer_norm(torch.from_numpy(x), (1024,), torch.from_numpy(w), torch.from_numpy(b)).numpy()
  np.testing.assert_allclose(t.layer_norm(1024, tw, tb).numpy(), want, rtol=1e-4, atol=1e-5)
  # what keeps plain stores: an exp per element (softmax: SLP packs 16 copies of it worse than the loop vectorizer), rows
  # that are not whole lines, and outputs below the size
  odd = Tensor(rng.standard_normal((N // 1000 + 1, 1000)).astype(np.float32))
  for out in (t.softmax(1), odd - odd.mean(1, keepdim=True), t[: t.shape[0] // 2] - t[: t.shape[0] // 2].mean(1, keepdim=True)):
    (step,) = picograd.schedule(out)
    assert not any("streaming" in o for o in step.kernel.opts) and "!nontemporal" not in step.source
  np.testing.assert_allclose(t.softmax(1).numpy()[:2], torch.softmax(torch.from_numpy(x[:2]), 1).numpy(), rtol=1e-5, atol=1e-7)
