"""The eager path's per-call work (issue 11 item 3): hash-consing, the one-walk slotting of a realize's graph, and large
reductions to one value split in two kernels so both CPU threads read the input (engine/schedule.py `_split_reductions`)."""
import gc
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
from picograd.helpers import Context
from picograd.ir.ops import UOp, UOpMeta, Ops
from picograd.engine import realize as engine
from picograd.engine.schedule import SPLIT_REDUCE_MIN


def test_dead_nodes_leave_the_hash_consing_table():
  gc.collect()
  before = len(UOpMeta.live)
  nodes = [UOp(Ops.CONST, dtypes.int32, (), 1_000_000 + i) for i in range(100)]
  assert len(UOpMeta.live) == before + 100 and UOp(Ops.CONST, dtypes.int32, (), 1_000_042) is nodes[42]
  del nodes
  assert len(UOpMeta.live) == before
  # a node built again after its first copy died is a new, live node
  again = UOp(Ops.CONST, dtypes.int32, (), 1_000_007)
  assert again is UOp(Ops.CONST, dtypes.int32, (), 1_000_007) and len(UOpMeta.live) == before + 1


def test_slotting_reads_computed_nodes_but_never_a_root():
  a = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4)).realize()
  y = a * 2 + 1
  graph = y.uop
  y.realize()
  z, w = a * 2 + 1, (a * 2 + 1).sum(1)  # a second tensor of y's graph (the same node: it is alive), and one that reads it
  assert z.uop is graph
  (zn, wn), buffers = engine._normalize([z.uop, w.uop], ["CPU", "CPU"])
  slots = [n for n in picograd.ir.ops.toposort([zn, wn]) if n.op is Ops.BUFFER]
  # z recomputes from a (its own memory); w reads y's buffer in its own slot: slots are numbered in first-visit order
  assert [s.arg[1] for s in slots] == [0, 1] and buffers[0] is engine.buffer_of(a) and buffers[1] is engine.buffer_of(y)
  assert zn.op is not Ops.BUFFER and any(n.op is Ops.MUL for n in picograd.ir.ops.toposort([zn]))
  assert not any(n.op is Ops.MUL for n in picograd.ir.ops.toposort([wn]))
  # without devices nothing computed is read
  (wn_plain,), plain = engine._normalize([w.uop])
  assert len(plain) == 1 and any(n.op is Ops.MUL for n in picograd.ir.ops.toposort([wn_plain]))
  np.testing.assert_allclose(z.numpy(), y.numpy())
  np.testing.assert_allclose(w.numpy(), (np.arange(12).reshape(3, 4) * 2 + 1).sum(1))


def _kernels(t: Tensor) -> int:
  return len(picograd.schedule(t))


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, Tensor]:
  x = np.random.default_rng(0).standard_normal((1024, SPLIT_REDUCE_MIN // 1024)).astype(np.float32)
  return x, Tensor(x).realize()


def test_a_large_reduction_to_one_value_is_split_in_two_kernels(big):
  x, t = big
  x64 = x.astype(np.float64)
  for out, want in ((t.sum(), x64.sum()), (t.max(), x.max()), ((t * t).mean(), (x64 * x64).mean())):
    assert _kernels(out) == 2
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-3)
  hits = engine.stats["cache_hits"]
  t.sum().realize()
  assert engine.stats["cache_hits"] == hits + 1
  with Context(NOOPT=1):
    assert _kernels(t.sum()) == 1
  # rows keep one kernel (their output loop splits), and so do small sums and sizes with no even factor
  assert _kernels(t.sum(1)) == 1 and _kernels(t[:4].sum()) == 1
  odd = Tensor(np.ones(SPLIT_REDUCE_MIN + 1, np.float32))
  assert _kernels(odd.sum()) == 1 and odd.sum().item() == SPLIT_REDUCE_MIN + 1


def test_a_split_integer_sum_is_exact(big):
  x = np.random.default_rng(1).integers(-1000, 1000, SPLIT_REDUCE_MIN * 2, dtype=np.int32)
  t = Tensor(x)
  assert _kernels(t.sum()) == 2
  assert t.sum().item() == int(x.astype(np.int64).sum())


def test_large_kernels_run_in_more_slices_than_threads(big):
  # the threads claim slices in turn, so a worker that starts late leaves one small slice to wait for (runtime/cpu.py _split)
  from picograd.runtime.cpu import SLICES_PER_THREAD, _split
  x, t = big
  (rows,) = picograd.schedule(t.sum(1))
  gemm = picograd.schedule(t[:256, :256] @ t[:256, :256])[-1]
  with Context(THREADS=2):
    n, slices = _split(rows.kernel.program.meta)
    assert n == 2 and 2 < slices <= 2 * SLICES_PER_THREAD
    assert gemm.kernel.program.meta["packs"] and _split(gemm.kernel.program.meta) == (2, 2)  # a GEMM packs per slice
    np.testing.assert_allclose(t.sum(1).numpy(), x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-3)

    @picograd.jit
    def rowsums(a: Tensor) -> Tensor: return a.sum(1) * 2
    for _ in range(3):  # the replay's launch list splits the same way
      np.testing.assert_allclose(rowsums(t).numpy(), 2 * x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-3)
