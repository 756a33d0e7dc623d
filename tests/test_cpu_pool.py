"""The CPU device's native thread pool (runtime/cpu_pool.py): split kernels give one thread's results, run each
slice once, report failed checks from worker slices, survive forks and concurrent Python threads, and never hang exit."""
import os, subprocess, sys, textwrap, threading
import numpy as np
import pytest
import picograd.runtime.cpu as cpu
from picograd import Tensor, nn
from picograd.helpers import Context
import picograd.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def split_everything(monkeypatch):
  """Every kernel with an outer loop goes to the pool, on 3 threads (more than this machine's 2 cores: the pool grows)."""
  monkeypatch.setattr(cpu, "THREAD_MIN_WORK", 0)
  pool_run, split = cpu._pool.run, []
  def counted(*args):
    split.append(ran := pool_run(*args))
    return ran
  monkeypatch.setattr(cpu._pool, "run", counted)
  with Context(THREADS=3): yield
  assert any(split), "no kernel was split across threads"


def _program(x: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
  a, b = Tensor(x), Tensor(w)
  return [(a * 2 + 1).exp().numpy(), a.sum(1).numpy(), a.softmax(1).numpy(), (a @ b).numpy(), a.max().numpy()]


def test_split_matches_one_thread(split_everything):
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((37, 29), dtype=np.float32), rng.standard_normal((29, 11), dtype=np.float32)
  split = _program(x, w)
  with Context(THREADS=1): alone = _program(x, w)
  for s, a in zip(split, alone): np.testing.assert_array_equal(s, a)
  np.testing.assert_allclose(split[3], x @ w, rtol=1e-5, atol=1e-5)


def test_each_slice_runs_once(split_everything):
  # an in-place add reads its own target: a slice run twice (or by two threads) would add twice
  x = Tensor(np.zeros((101, 7), np.float32)).realize()
  for _ in range(50): x += 1
  np.testing.assert_array_equal(x.numpy(), np.full((101, 7), 50, np.float32))


def test_checks_fail_in_worker_slices(split_everything):
  w = Tensor(np.arange(20, dtype=np.float32).reshape(10, 2))
  bad = np.zeros(64, np.int64)
  bad[-1] = 10  # in the last slice, which a worker runs
  with pytest.raises(IndexError, match="index out of range in self"): F.embedding(Tensor(bad), w).numpy()
  np.testing.assert_array_equal(F.embedding(Tensor(np.full(64, 3)), w).numpy(), np.tile([6, 7], (64, 1)))
  emb = nn.Embedding(10, 2)
  with pytest.raises(IndexError): emb(Tensor(bad.reshape(8, 8))).numpy()


def test_concurrent_python_threads(split_everything):
  # one job at a time: a thread that finds the pool busy (or another thread's kernel queued) waits its turn, same results
  rng = np.random.default_rng(1)
  xs = [rng.standard_normal((64, 48), dtype=np.float32) for _ in range(4)]
  results: dict[int, np.ndarray] = {}
  def work(i: int) -> None:
    out = Tensor(xs[i])
    for _ in range(20): out = (out * 0.5 + 1).realize()
    results[i] = out.numpy()
  threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
  for t in threads: t.start()
  for t in threads: t.join(timeout=120)
  for i, x in enumerate(xs):
    want = x
    for _ in range(20): want = want * np.float32(0.5) + np.float32(1)
    np.testing.assert_array_equal(results[i], want)


CHILD = """
import os, sys, numpy as np
import picograd.runtime.cpu as cpu
from picograd import Tensor
cpu.THREAD_MIN_WORK = 0
x = np.arange(4000, dtype=np.float32).reshape(100, 40)
assert float(Tensor(x).sum().numpy()) == x.sum()
pid = os.fork()
if pid == 0:  # the child has no workers (fork copies one thread): it starts its own
  ok = np.array_equal(Tensor(x).sum(1).numpy(), x.sum(1)) and np.array_equal((Tensor(x) * 3).numpy(), x * 3)
  os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert status == 0, status
print((Tensor(x) + 1).numpy()[99, 39])
"""


def test_fork_and_exit_do_not_hang(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=str(tmp_path), THREADS="2")
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD)], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip() == "4000.0"


LATE = """
import atexit, numpy as np
import picograd.runtime.cpu as cpu
from picograd import Tensor
cpu.THREAD_MIN_WORK = 0
x = np.arange(4000, dtype=np.float32).reshape(100, 40)
def late():  # registered before the pool's own handler, so it runs after the workers were stopped
  print(float(Tensor(x).sum(1).sum().numpy()))
atexit.register(late)
print(float(Tensor(x).sum(1).sum().numpy()))
"""


def test_kernels_after_the_pool_stopped(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=str(tmp_path), THREADS="2")
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(LATE)], capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ["7998000.0", "7998000.0"]
