"""Asynchronous CPU launches (runtime/cpu.py, runtime/cpu_pool.py): a split kernel is queued and the caller goes on; every
read of its memory (numpy, item, copies to other devices, a JIT replay, the next kernel), a fork and interpreter exit wait
for it, and a buffer freed while a queued kernel reads it keeps its memory until the kernel is done."""
import gc, os, subprocess, sys, textwrap, threading
import numpy as np
import pytest
import picograd
import picograd.runtime.cpu as cpu
import picograd.nn.functional as F
from picograd import Tensor
from picograd.helpers import Context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not cpu._pool.available, reason="the native pool needs Linux (futex, pthread)")


@pytest.fixture
def split_async(monkeypatch):
  """Every kernel with an outer loop is split over 2 threads and queued (CPU_ASYNC=1)."""
  monkeypatch.setattr(cpu, "THREAD_MIN_WORK", 0)
  with Context(THREADS=2, CPU_ASYNC=1): yield
  cpu._pool.wait()


def _queued() -> bool: return cpu._pool._inflight is not None


def test_output_read_right_after_realize(split_async):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((64, 256), dtype=np.float32)
  t = Tensor(x).realize()
  out = (t * 2 + 1).sum(1).realize()
  assert _queued(), "the split kernel was not queued"
  np.testing.assert_allclose(out.numpy(), (x * 2 + 1).sum(1), rtol=1e-5, atol=1e-4)
  assert not _queued()
  s = (t * 2 + 1).sum(1).sum().realize()  # the row sums queued, then a one-thread kernel that reads them
  np.testing.assert_allclose(s.item(), (x * 2 + 1).sum(), rtol=1e-4)
  with Context(CPU_ASYNC=0):
    (t * 3).realize()
    assert not _queued()


def test_in_place_chains(split_async):
  # each += reads the buffer the previous (queued) one writes; a kernel run before the previous one finished adds too little
  x = Tensor(np.zeros((101, 64), np.float32)).realize()
  y = Tensor(np.ones((101, 64), np.float32)).realize()
  for i in range(30):
    x += y
    x.realize()
    if i % 10 == 0: y.assign(y * 2).realize()  # written after x read it, queued before x reads it next
  assert _queued()
  want = 1 + 2 * 10 + 4 * 10 + 8 * 9
  np.testing.assert_array_equal(x.numpy(), np.full((101, 64), want, np.float32))
  np.testing.assert_array_equal(y.numpy(), np.full((101, 64), 8, np.float32))


def test_copies_and_jit_read_after_the_queued_kernel(split_async):
  x = np.arange(64 * 256, dtype=np.float32).reshape(64, 256) / 1000
  t = Tensor(x).realize()

  @picograd.jit
  def step(a: Tensor) -> Tensor: return (a * 2).sum(1)

  for i in range(5):  # the JIT captures on the second call and replays from the third
    a = (t + i).realize()
    assert _queued()
    out = step(a)
    if i >= 2: assert _queued(), "the replay did not queue its (split, unchecked) last kernel"
    if i != 3: np.testing.assert_allclose(out.numpy(), ((x + i) * 2).sum(1), rtol=1e-5)  # 3: the next replay rebinds a queued one
  for device in ("PYTHON", "CPU:1"):
    b = (t - 1).realize()
    assert _queued()
    np.testing.assert_allclose(b.to(device).numpy(), x - 1, rtol=1e-6)


def test_checks_raise_at_the_realize(split_async):
  w = Tensor(np.arange(20, dtype=np.float32).reshape(10, 2)).realize()
  bad = np.zeros(64, np.int64)
  bad[-1] = 10  # in the last slice
  big = Tensor(np.ones((64, 256), np.float32)).realize()
  pending = (big * 3).realize()
  assert _queued()
  with pytest.raises(IndexError, match="index out of range in self"): F.embedding(Tensor(bad), w).realize()
  np.testing.assert_array_equal(F.embedding(Tensor(np.full(64, 3)), w).numpy(), np.tile([6, 7], (64, 1)))
  np.testing.assert_array_equal(pending.numpy(), np.full((64, 256), 3, np.float32))


def test_freed_input_keeps_its_memory(split_async):
  # the queued kernel reads `a`: dropping every reference and emptying the allocator's cache must not unmap its memory
  # (huge-page mmaps from 2 MiB), and a new tensor that takes the same size must not overwrite it before the kernel ran
  x = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
  a = Tensor(x).realize()
  out = a.sum(1).realize()
  assert _queued()
  allocator = picograd.runtime.device.get_device("CPU").allocator
  del a
  gc.collect()
  allocator.free_cache()
  Tensor(np.full((1024, 1024), 1e6, np.float32)).realize()
  np.testing.assert_allclose(out.numpy(), x.sum(1), rtol=1e-4, atol=1e-3)


def test_one_thread_kernels_after_a_queued_one(split_async, monkeypatch):
  # kernels too small to split must start after the queued one (~ms of sin/exp) they read: the first is attached to it
  # (a worker runs it after the last slice) unless the job finished first, the next runs on this thread once both are done
  monkeypatch.setattr(cpu, "THREAD_MIN_WORK", 1 << 12)
  rng = np.random.default_rng(2)
  xs = [rng.standard_normal((1024, 1024), dtype=np.float32) for _ in range(5)]  # new values each round: stale memory
  inputs = [Tensor(x).realize() for x in xs]                                      # holds the last round's
  wants = [(np.sin(x) * np.exp(x)).sum(1) for x in xs]
  for want, a in zip(wants, inputs):  # the first round compiles (the queued kernel finishes meanwhile); later ones race
    rows = (a.sin() * a.exp()).sum(1).realize()
    assert _queued()
    top = rows.max().realize()
    low = rows.min().realize()
    np.testing.assert_allclose([top.item(), low.item()], [want.max(), want.min()], rtol=1e-4)
  np.testing.assert_allclose(rows.numpy(), wants[-1], rtol=1e-4, atol=1e-3)


GATE = """
define void @gate.slice(ptr %args, i64 %lo, i64 %hi) {
entry:
  %flag = load ptr, ptr %args
  br label %spin
spin:
  %v = load atomic i64, ptr %flag acquire, align 8
  %open = icmp ne i64 %v, 0
  br i1 %open, label %out, label %spin
out:
  ret void
}
"""


def test_small_kernel_attached_to_an_open_job():
  # a queued job whose slices spin until a flag is set cannot finish early: a small kernel launched meanwhile is attached
  # to it (deterministically) and runs after the last slice, before anyone can read its output
  gate = cpu._load(cpu._pool._compile(GATE, "gate")).engine.get_function_address("gate.slice")
  flag = (cpu.ctypes.c_int64 * 1)(0)
  args = (cpu.ctypes.c_void_p * 1)(cpu.ctypes.addressof(flag))
  x = np.random.default_rng(3).standard_normal(16).astype(np.float32)
  a = Tensor(x).realize()
  opener = threading.Timer(20, lambda: flag.__setitem__(0, 1))  # should anything wait before the gate opens: fail, not hang
  opener.start()
  with Context(THREADS=2, CPU_ASYNC=1):
    assert cpu._pool.run(gate, args, 2, 2, 2, (flag, args)), "the pool took no job"
    out = (a * 3 + 1).realize()
    attached = cpu._pool._inflight is not None and cpu._pool._inflight[2]
    flag[0] = 1  # open the gate before anything waits: a thread that joined would spin on it
    np.testing.assert_allclose(out.numpy(), x * 3 + 1, rtol=1e-6)
  opener.cancel()
  assert attached, "the small kernel was not attached to the open job"


SCRIPT = """
import atexit, os, numpy as np
import picograd.runtime.cpu as cpu
from picograd import Tensor
x = np.ones((2048, 1024), np.float32)
t = Tensor(x).realize()
out = (t * 2).sum(1).realize()
assert cpu._pool._inflight is not None
pid = os.fork()  # waits for the queued kernel first: the child has no workers to finish it
if pid == 0:
  ok = np.array_equal(out.numpy(), np.full(2048, 2048, np.float32)) and np.array_equal((t * 3).sum(1).numpy(), np.full(2048, 3072, np.float32))
  os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert status == 0, status
def late():  # runs after the pool's own exit handler: a kernel then runs on this thread
  print(float((t + 1).sum(1).numpy()[0]))
atexit.register(late)
print(float(out.numpy()[0]))
keep = (t * 5).sum(1).realize()  # still queued at exit, and its input freed on the way out
assert cpu._pool._inflight is not None
"""


def test_fork_and_exit_with_a_queued_kernel(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=str(tmp_path), THREADS="2", CPU_ASYNC="1")
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ["2048.0", "2048.0"]
