"""The bound JIT replay (engine/replay.py): one launch list per device, intermediates in a static memory plan."""
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
from picograd.engine import observe
from picograd.engine.realize import ScheduledKernel
from picograd.engine.replay import ALIGN, launch_order, plan_memory
from picograd.runtime.device import Buffer
from conftest import CUDA_ERROR


def test_memory_plan_shares_disjoint_lifetimes():
  a, b, c, d = (Buffer("CPU", n, dtypes.float32) for n in (100, 50, 100, 10))
  out = Buffer("CPU", 4, dtypes.float32)
  # a: steps 0-1, b: 1-2, c: 2-3, d: 0-3 (lifetimes from the first launch that names a buffer to the step that frees it)
  steps = [ScheduledKernel(None, [a, d]), ScheduledKernel(None, [b, a], frees=(a,)), ScheduledKernel(None, [c, b], frees=(b,)),
           ScheduledKernel(None, [out, c, d], frees=(c, d))]
  offsets, size = plan_memory(steps)
  assert set(offsets) == {a, b, c, d}
  assert offsets[a] == offsets[c] == 0  # a dies at step 1, c is born at step 2
  spans = {x: (offsets[x], offsets[x] + x.nbytes) for x in offsets}
  for x, y in [(a, b), (b, c), (a, d), (b, d), (c, d)]:  # overlapping lifetimes: disjoint memory
    assert spans[x][1] <= spans[y][0] or spans[y][1] <= spans[x][0], (x, y, spans)
  assert all(o % ALIGN == 0 for o in offsets.values())
  assert size == 448 + 256 + 64  # a/c, b, d rounded up to cache lines


def test_launch_order_follows_conflicting_memory_only():
  """A replay's graph orders a kernel after the last writer of what it reads or writes and after the readers of what it
  overwrites (planned intermediates by their overlapping bytes); independent kernels carry no edge between them."""
  x, w, b, gw, gb, p = (Buffer("CPU", 8, dtypes.float32) for _ in range(6))
  t1, t2 = Buffer("CPU", 8, dtypes.float32), Buffer("CPU", 4, dtypes.float32)
  regions = {t1: (7, 0, 32), t2: (7, 16, 32)}  # two intermediates of one block, t2 over t1's upper half
  steps = [ScheduledKernel(None, [t1, x, w]),  # 0: t1 = f(x, w)
           ScheduledKernel(None, [gw, t1, x]),  # 1: reads t1
           ScheduledKernel(None, [gb, t1]),  # 2: reads t1, independent of 1
           ScheduledKernel(None, [t2, b]),  # 3: overwrites bytes of t1 (written by 0) that 1 and 2 read
           ScheduledKernel(None, [w, w, gw]),  # 4: updates w in place: after 1 (its gw) and 0 (read w)
           ScheduledKernel(None, [p, b])]  # 5: touches nothing the others write
  assert launch_order(steps, regions) == [[], [0], [0], [0, 1, 2], [0, 1], []]
  # outputs beyond the first (merged kernels) count as written; a later reader of any follows the writer
  two = [ScheduledKernel(None, [gw, gb, x], outputs=2), ScheduledKernel(None, [p, gb])]
  assert launch_order(two, {}) == [[], [0]]


def test_launch_order_orders_every_conflict():
  """Random steps over a few buffers and planned regions: every pair that touches common bytes, one of them writing,
  is ordered by the edges (through a path), and no edge points forward."""
  rng = np.random.default_rng(0)
  for _ in range(200):
    bufs = [Buffer("CPU", 8, dtypes.float32) for _ in range(6)]
    # the first four are planned into one block at random offsets (overlapping or not); the others stand alone
    regions = {b: (1, int(at), int(at) + 32) for b, at in zip(bufs[:4], rng.integers(0, 64, 4))}
    steps = []
    for _ in range(int(rng.integers(2, 12))):
      touched = [bufs[i] for i in rng.choice(6, size=int(rng.integers(1, 4)), replace=False)]
      steps.append(ScheduledKernel(None, touched, outputs=int(rng.integers(1, len(touched) + 1))))
    order = launch_order(steps, regions)
    reach = [set(a) for a in order]
    for j, a in enumerate(order):
      assert all(i < j for i in a)
      for i in a: reach[j] |= reach[i]

    def spans(s):
      return [(regions.get(b, (id(b), 0, 32)), n < s.outputs) for n, b in enumerate(s.buffers)]
    for j in range(len(steps)):
      for i in range(j):
        conflict = any(m1 == m2 and a1 < e2 and a2 < e1 and (w1 or w2)
                       for ((m1, a1, e1), w1) in spans(steps[i]) for ((m2, a2, e2), w2) in spans(steps[j]))
        if conflict: assert i in reach[j], (i, j, order)


def _mlp_step(device=None):
  rng = np.random.default_rng(0)
  w1 = Tensor(rng.standard_normal((6, 32)).astype(np.float32), requires_grad=True, device=device)
  w2 = Tensor(rng.standard_normal((32, 5)).astype(np.float32), requires_grad=True, device=device)
  emb = Tensor(rng.standard_normal((9, 2)).astype(np.float32), requires_grad=True, device=device)
  params = [emb, w1, w2]

  def step(idx, y):
    loss = (emb[idx].reshape(idx.shape[0], 6) @ w1).tanh().__matmul__(w2).cross_entropy(y)
    for p in params: p.grad = None
    loss.backward()
    for p in params: p.assign(p - 0.1 * p.grad)
    return loss.realize(*params)
  return params, step


def _data(n):
  rng = np.random.default_rng(1)
  return [(rng.integers(0, 9, (4, 3)).astype(np.int32), rng.integers(0, 5, 4).astype(np.int32)) for _ in range(n)]


def test_bound_replay_matches_step_by_step_and_allocates_nothing():
  data = _data(6)
  runs = {}
  for bound in (True, False):
    params, step = _mlp_step()
    jitted = picograd.jit(step)
    listener = lambda n: None  # noqa: E731  # a batch listener makes replays go step by step
    if not bound: observe.batch_listeners.append(listener)
    try:
      losses = []
      for i, (x, y) in enumerate(data):
        if i == 3: memory = picograd.device_memory("CPU")
        losses.append(jitted(Tensor(x), Tensor(y)).item())
      if bound:
        assert jitted.replay is not None and jitted.replay.native and jitted.replay.blocks, "a CPU replay is bound with a memory plan"
        after = picograd.device_memory("CPU")
        # replays 4-6 took no memory: the inputs' buffers (made by the caller) come and go, intermediates stay in the plan
        assert after["reserved"] == memory["reserved"], (memory, after)
      runs[bound] = (losses, [p.numpy() for p in params])
    finally:
      if not bound: observe.batch_listeners.remove(listener)
  assert runs[True][0] == runs[False][0]
  for a, b in zip(runs[True][1], runs[False][1]): np.testing.assert_array_equal(a, b)


def test_bound_replay_reads_new_inputs_and_raises_failed_checks():
  w = Tensor(np.arange(8, dtype=np.float32).reshape(4, 2))
  step = picograd.jit(lambda idx: ((w[idx] * 2).sum(1) + 1).realize())
  for i in range(3): np.testing.assert_array_equal(step(Tensor(np.array([i, 3], np.int32))).numpy(), [8 * i + 3, 27])
  assert step.replay is not None and step.replay.native
  with pytest.raises(IndexError):
    step(Tensor(np.array([0, 7], np.int32)))
  np.testing.assert_array_equal(step(Tensor(np.array([1, 0], np.int32))).numpy(), [11, 3])  # the error word was cleared


def test_bound_replay_rebinds_only_inputs_whose_memory_changed():
  w = Tensor(np.arange(4, dtype=np.float32))
  step = picograd.jit(lambda a, b: (a * w + b).realize())
  xs = [Tensor(np.full(4, i, np.float32)) for i in range(3)]  # held: each keeps its own memory
  for i in range(3): np.testing.assert_array_equal(step(xs[i], xs[0]).numpy(), np.arange(4) * i)
  assert step.replay is not None and step.replay.native
  ll = step.replay.lists[0]
  rebound = []
  set_handle = ll.set_handle
  ll.set_handle = lambda launch, arg, handle: (rebound.append(arg), set_handle(launch, arg, handle))
  for a, b in [(2, 0), (2, 0), (1, 0), (1, 2), (0, 2), (0, 2)]:
    rebound.clear()
    before = [h for h in step.replay.bound]
    np.testing.assert_array_equal(step(xs[a], xs[b]).numpy(), np.arange(4) * a + b)
    assert len(rebound) == sum(x.uop.arg.handle is not h for x, h in zip((xs[a], xs[b]), before)), (a, b, rebound)
  # a new tensor in the memory the last one freed: nothing to rebind, its new values are read
  for i in range(3):
    assert step(Tensor(np.full(4, i, np.float32)), xs[1]).numpy().tolist() == (np.arange(4) * i + 1).tolist()


@pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA GPU: {CUDA_ERROR}")
def test_cuda_graph_replay_with_independent_kernels_side_by_side():
  """On CUDA a replay is one graph whose kernels follow only those they conflict with in memory (the weight updates
  beside the backward's other kernels): the losses and parameters match the replay kernel by kernel, bit for bit."""
  data = _data(6)
  runs = {}
  for bound in (True, False):
    params, step = _mlp_step("CUDA")
    jitted = picograd.jit(step)
    listener = lambda n: None  # noqa: E731  # a batch listener makes replays go step by step
    if not bound: observe.batch_listeners.append(listener)
    try:
      losses = [jitted(Tensor(x, device="CUDA"), Tensor(y, device="CUDA")).item() for x, y in data]
      if bound:
        assert jitted.replay is not None and jitted.replay.native
        assert jitted.capture is not None
        order = launch_order([s for s in jitted.capture.steps if s.kernel is not None], {})
        assert any(j and j - 1 not in a for j, a in enumerate(order)), order  # not a chain
      runs[bound] = (losses, [p.numpy() for p in params])
    finally:
      if not bound: observe.batch_listeners.remove(listener)
  assert runs[True][0] == runs[False][0]
  for a, b in zip(runs[True][1], runs[False][1]): np.testing.assert_array_equal(a, b)
