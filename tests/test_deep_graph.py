"""Deep graphs: every pass walks the IR without Python recursion, so a 10,000-node chain neither overflows the stack
nor needs a raised recursion limit."""
import sys
import numpy as np
import pytest
import picograd
from picograd import Tensor
from picograd.ir.ops import graph_rewrite, toposort
from picograd.ir.symbolic import symbolic

DEPTH = 10_000


def chain(x: Tensor, depth: int) -> Tensor:
  for _ in range(depth): x = x + 1
  return x


@pytest.fixture(autouse=True)
def default_recursion_limit():
  """Run at Python's default limit, so a recursive pass fails here rather than passing by luck."""
  old = sys.getrecursionlimit()
  sys.setrecursionlimit(1000)
  yield
  sys.setrecursionlimit(old)


def test_graph_rewrite_of_a_10000_node_chain():
  y = chain(Tensor(np.zeros(3, np.float32), device="PYTHON"), DEPTH)
  assert len(toposort([y.uop])) > DEPTH
  out = graph_rewrite(y.uop, symbolic)
  assert out.shape == (3,)
  # float additions are not reassociated: the chain is still there after the rewrite
  assert len(toposort([out])) > DEPTH


def test_integer_constant_chain_folds_completely():
  c = picograd.ir.ops.UOp.const(picograd.dtypes.int32, 0)
  for _ in range(DEPTH): c = c + 1
  folded = graph_rewrite(c, symbolic)
  assert folded.op is picograd.ir.ops.Ops.CONST and folded.arg == DEPTH


def test_realize_a_10000_node_chain():
  # on the PYTHON device: the whole path (schedule, lower, simplify, linearize, render) at full depth.
  # (The CPU path runs the same passes; LLVM's optimizer is slow on a 10,000-instruction body, so the
  # CPU test below uses a shorter chain.)
  y = chain(Tensor(np.zeros(3, np.float32), device="PYTHON"), DEPTH)
  assert len(picograd.schedule(y)) == 1
  np.testing.assert_array_equal(y.numpy(), np.full(3, DEPTH, np.float32))


def test_realize_a_deep_chain_on_cpu():
  y = chain(Tensor(np.zeros(3, np.float32), device="CPU"), 1500)
  np.testing.assert_array_equal(y.numpy(), np.full(3, 1500, np.float32))


def test_deep_chain_of_movement_ops():
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  x = Tensor(a, device="PYTHON")
  for _ in range(2000): x = x.T.reshape(3, 4).flip(0)
  ref = a
  for _ in range(2000): ref = np.flip(ref.T.reshape(3, 4), 0)
  np.testing.assert_array_equal(x.numpy(), ref)
