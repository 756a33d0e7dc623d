"""Size-0 tensors through every op family (elementwise, movement, reduce, matmul), forward and gradient, against PyTorch.

A kernel whose output has no elements must never launch: its loops would run zero times, but index
expressions over an empty dimension (a flip's n-1-i) point outside every buffer. A reduction over an
empty axis gives the identity (sum 0). Few shapes, many checks: each new shape is a compile.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from picograd import Tensor
from picograd.engine.realize import stats
from compare import assert_tensor, torch_result

SHAPES = [(0, 2, 5), (3, 0, 4)]

# name -> (picograd op, the same in PyTorch)
OPS = {
  "add": (lambda x: x + 1, lambda x: x + 1),
  "exp_mul": (lambda x: x.exp() * x, lambda x: x.exp() * x),
  "flip": (lambda x: x.flip(2) + 1, lambda x: x.flip(2) + 1),
  "flip_all": (lambda x: x.flip((0, 1, 2)) * 2, lambda x: x.flip((0, 1, 2)) * 2),
  "permute": (lambda x: x.permute(2, 0, 1) - 1, lambda x: x.permute(2, 0, 1) - 1),
  "expand": (lambda x: x.reshape(1, *x.shape).expand(3, *x.shape) + 0, lambda x: x.reshape(1, *x.shape).expand(3, *x.shape) + 0),
  "shrink": (lambda x: x[:, :, 1:3] * 3, lambda x: x[:, :, 1:3] * 3),
  # padding an empty dimension gives a non-empty result made only of the pad value
  "pad": (lambda x: x.pad(((1, 2), (1, 0), (0, 0)), value=2.0) + 1, lambda x: F.pad(x, (0, 0, 1, 0, 1, 2), value=2.0) + 1),
  "sum0": (lambda x: x.sum(0), lambda x: x.sum(0)),
  "sum1": (lambda x: x.sum(1) + 1, lambda x: x.sum(1) + 1),
  "sum_all": (lambda x: x.sum(), lambda x: x.sum()),
  "mean1": (lambda x: x.mean(1), lambda x: x.mean(1)),
  "max2": (lambda x: x.max(2), lambda x: x.amax(2)),
  "matmul": (lambda x: x @ x.permute(0, 2, 1), lambda x: x @ x.permute(0, 2, 1)),
  "matmul_k0": (lambda x: x.permute(0, 2, 1) @ x, lambda x: x.permute(0, 2, 1) @ x),
  "cast_half": (lambda x: x.half().float() + 1, lambda x: x.half().float() + 1),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", list(OPS))
def test_empty_forward(device, shape, op):
  fn, ref = OPS[op]
  a = np.ones(shape, np.float32)
  try:
    expected = torch_result(ref, a)
  except (RuntimeError, IndexError):  # PyTorch refuses (a max over an empty axis): so must picograd
    with pytest.raises((RuntimeError, IndexError, ValueError)): fn(Tensor(a, device=device)).numpy()
    return
  assert_tensor(fn(Tensor(a, device=device)), expected)


@pytest.mark.parametrize("op", ["flip", "pad", "sum1", "matmul_k0"])
def test_empty_gradient(device, op):
  fn, ref = OPS[op]
  a = np.ones((3, 0, 4), np.float32)
  x = Tensor(a, device=device, requires_grad=True)
  fn(x).sum().backward()
  xt = torch.tensor(a, requires_grad=True)
  ref(xt).sum().backward()
  assert_tensor(x.grad, xt.grad.numpy())


def test_issue_example_never_launches(device):
  """The issue's crash: a kernel over an empty tensor with a flip of a large axis. No kernel runs at all."""
  before = stats["kernels_run"]
  out = Tensor.randn(0, 2, 100000, device=device).flip(2) + 1
  assert out.numpy().shape == (0, 2, 100000)
  assert stats["kernels_run"] == before
