"""Faults picograd must survive without crashing: a damaged compile cache, a save killed mid-write, garbage
collection of compiled kernels, kernels that need symbols nobody provides, absurd allocations.

What could kill the interpreter runs in a subprocess, so a crash shows up as a failing test instead of
taking pytest down with it.
"""
import os, signal, subprocess, sys, textwrap, time
import numpy as np
import pytest
from picograd import Tensor
from picograd.runtime import cache
from picograd.runtime.device import get_device
from conftest import DEVICES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *args: str, cache_home: str | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if cache_home is not None: env["XDG_CACHE_HOME"] = cache_home
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=env, timeout=300)


def _ok(r: subprocess.CompletedProcess) -> str:
  why = "signal " + signal.Signals(-r.returncode).name if r.returncode < 0 else "error"
  assert r.returncode == 0, f"exit status {r.returncode} ({why})\n{r.stderr[-3000:]}"
  return r.stdout


# ---------------------------------------------------------------- the disk compile cache

# several kernels (a cast chain, a reduction, an integer one), each realized on its own
PROGRAM = """
import sys
import numpy as np
from picograd import Tensor, dtypes
dev = sys.argv[1]
x = Tensor(np.linspace(-3, 3, 24).reshape(4, 6), device=dev)
print((x.half().float() * 2).numpy().tolist())
print(x.exp().sum(1).numpy().tolist())
print((x.cast(dtypes.int32) * 3 + 1).numpy().tolist())
"""


def _entries(cache_home: str) -> list[str]:
  root = os.path.join(cache_home, "picograd", "kernels")
  return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if not f.startswith("."))


def _swap_key(blob: bytes) -> bytes:
  """A well-formed entry, but for another key (a file copied to the wrong name)."""
  return cache.pack_entry("another key", blob[cache.HEADER_SIZE:])


def _old_format(blob: bytes) -> bytes:
  """A well-formed entry of another format version (written by an older or newer picograd)."""
  version_at = len(cache.MAGIC)
  return blob[:version_at] + (cache.FORMAT_VERSION + 1).to_bytes(4, "little") + blob[version_at + 4:]


# damage -> what it does to an entry's bytes (None: delete the entry)
DAMAGE = {
  "truncated": lambda b: b[:len(b) // 2],
  "header_only": lambda b: b[:cache.HEADER_SIZE],
  "empty": lambda b: b"",
  "flipped_payload_byte": lambda b: b[:-1] + bytes([b[-1] ^ 0x55]),
  "garbage": lambda b: os.urandom(len(b)),
  "old_format": _old_format,
  "payload_without_header": lambda b: b[cache.HEADER_SIZE:],
  "other_key": _swap_key,
  "missing": None,
}


@pytest.mark.parametrize("dev", DEVICES)
def test_damaged_cache_is_recompiled(dev, tmp_path):
  """A warm cache gives the same results (each backend gets the payload, not the header); then every kind of
  damage is detected, recompiled and rewritten, never loaded."""
  home = str(tmp_path)
  expected = _ok(_python(PROGRAM, dev, cache_home=home))
  entries = _entries(home)
  assert entries, "the program wrote no cache entries"
  assert _ok(_python(PROGRAM, dev, cache_home=home)) == expected  # served from the cache
  modes = list(DAMAGE)
  rounds = -(-len(modes) // len(entries))  # every damage applied to some entry
  for r in range(rounds):
    for i, path in enumerate(entries):
      damage = DAMAGE[modes[(r * len(entries) + i) % len(modes)]]
      with open(path, "rb") as f: blob = f.read()
      if damage is None: os.unlink(path)
      else:
        with open(path, "wb") as f: f.write(damage(blob))
    assert _ok(_python(PROGRAM, dev, cache_home=home)) == expected
    for path in _entries(home):  # rewritten whole
      with open(path, "rb") as f: blob = f.read()
      assert cache.read_entry(blob) is not None


def _compilers() -> list:
  out = [get_device(d).compiler for d in ("CPU", "PYTHON")]
  cuda_rt = pytest.importorskip("picograd.runtime.cuda")
  if not cuda_rt.nvrtc_unavailable_reason(): out.append(cuda_rt.NVRTCCompiler("sm_90"))
  return out


SOURCES = {
  "llvm": "define void @{name}(ptr %p0, i64 %start, i64 %end) {{\n  ret void\n}}",
  "python": "def {name}(p0):\n  p0[0] = 1",
  "nvrtc": 'extern "C" __global__ void {name}(float* p0) {{ p0[0] = 1.0f; }}',
}


def test_cached_compile_returns_the_payload(tmp_path, monkeypatch):
  """Miss and hit both hand every compiler's own bytes back: the header never leaves the cache module."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  for compiler in _compilers():
    name = f"k_{compiler.cache_key.split('-')[0]}_{time.time_ns()}"
    src = SOURCES[compiler.cache_key.split("-")[0]].format(name=name)
    direct = compiler.compile(src, name)
    miss, hit = cache.cached_compile(compiler, src, name), cache.cached_compile(compiler, src, name)
    assert miss == hit and not hit.startswith(cache.MAGIC) and len(hit) == len(direct)


def test_stale_temporaries_are_removed(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  compiler = get_device("PYTHON").compiler
  name = "k_stale"
  src = SOURCES["python"].format(name=name)
  directory = os.path.dirname(cache.entry_path(f"{compiler.cache_key}\0{name}\0{src}"))
  os.makedirs(directory)
  stale, fresh = os.path.join(directory, ".tmp-dead-writer"), os.path.join(directory, ".tmp-live-writer")
  for p in (stale, fresh): open(p, "wb").close()
  os.utime(stale, (time.time() - 3600, time.time() - 3600))
  cache.cached_compile(compiler, src, name)
  assert not os.path.exists(stale) and os.path.exists(fresh)
  assert [f for f in os.listdir(directory) if not f.startswith(".")], "the entry itself was written"


# ---------------------------------------------------------------- checkpoints

KILLED_SAVE = """
import os, signal, sys
import numpy as np
from picograd.nn import state
# die after the data is written, before the rename: the moment a kill leaves a temporary file
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
state.save({"w": np.full(1 << 16, 2.0, np.float32)}, sys.argv[1])
"""


def test_killed_save_leaves_old_checkpoint_and_next_save_cleans_up(tmp_path):
  from picograd.nn import state
  path = str(tmp_path / "model.safetensors")
  state.save({"w": np.ones(4, np.float32)}, path)
  r = _python(KILLED_SAVE, path)
  assert r.returncode == -signal.SIGKILL, r.stderr
  leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  assert leftovers, "the killed save left no temporary file: the test did not kill it mid-write"
  np.testing.assert_array_equal(state.load(path, as_tensor=False)["w"], np.ones(4, np.float32))  # old file intact
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], "load removes a dead writer's temporary file"
  _python(KILLED_SAVE, path)
  state.save({"w": np.zeros(2, np.float32)}, path)
  assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
  np.testing.assert_array_equal(state.load(path, as_tensor=False)["w"], np.zeros(2, np.float32))


def test_live_writers_temporary_is_kept(tmp_path):
  from picograd.nn import state
  path = str(tmp_path / "m.safetensors")
  live = tmp_path / f".m.safetensors.{os.getpid()}.abcd1234.tmp"
  live.write_bytes(b"partial")
  assert state.remove_stale_temporaries(path) == [] and live.exists()


# ---------------------------------------------------------------- compiled code and its lifetime

GC_STRESS = """
import gc
import numpy as np
from picograd import Tensor
from picograd.engine import compile as kernel
import picograd.runtime.cpu as cpu

def results():
  return [((Tensor(np.arange(n, dtype=np.float32)) * 0.5).exp2() + n).sum().item() for n in range(3, 15)]

first = results()
cpu._loaded.clear()  # the programs must keep their engines (and each engine its target machine) alive
gc.collect()
assert results() == first
kernel._kernels.clear()  # now the programs go too: their engines are freed, in whatever order the GC picks
gc.collect()
assert results() == first
print("ok")
"""


def test_gc_of_compiled_kernels_never_crashes(tmp_path):
  assert _ok(_python(GC_STRESS, cache_home=str(tmp_path))).strip() == "ok"


MISSING = "picograd_no_such_helper"
NEEDS_MISSING = f"""declare void @{MISSING}()
define void @k(ptr %p0, i64 %start, i64 %end) {{
  call void @{MISSING}()
  ret void
}}"""


def test_undefined_symbol_is_an_error_not_a_jump_to_zero():
  import picograd.runtime.cpu as cpu
  dev = get_device("CPU")
  with pytest.raises(RuntimeError, match=MISSING) as e: dev.compiler.compile(NEEDS_MISSING, "k")
  assert f"call void @{MISSING}()" in str(e.value), "the error shows the IR"
  obj = cpu._llvm().emit_object(dev.compiler.optimize(NEEDS_MISSING))  # such an object from elsewhere (a cache)
  with pytest.raises(RuntimeError, match=MISSING): dev.program(dev, "k", obj, {"n_params": 1, "outer": 0, "work": 0})


# ---------------------------------------------------------------- allocations and IR

@pytest.mark.parametrize("shape", [(2 ** 62,), (2 ** 31, 2 ** 31)])
def test_absurd_allocation_is_a_memory_error(device, shape):
  nbytes = int(np.prod(shape, dtype=object)) * 4
  with pytest.raises(MemoryError, match=str(nbytes)): Tensor.empty(*shape, device=device).realize()
  with pytest.raises(MemoryError, match=str(nbytes)): (Tensor.randn(*shape, device=device) + 1).realize()


@pytest.mark.parametrize("pad", [((0, 0), (1, 2)), ((1, 2), (0, 0)), ((1, 1), (2, 0))])
def test_padded_matrix_vector_products(device, pad):
  """LLVM once rejected the IR of a padded (4, 1) matrix times its transpose."""
  a = np.random.default_rng(0).standard_normal((4, 1)).astype(np.float32)
  p = np.pad(a, pad)
  x = Tensor(a, device=device).pad(pad)
  np.testing.assert_allclose((x @ x.T).numpy(), p @ p.T, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose((x.T @ x).numpy(), p.T @ p, rtol=1e-5, atol=1e-6)
  v = np.arange(p.shape[1], dtype=np.float32)
  np.testing.assert_allclose((x @ Tensor(v, device=device)).numpy(), p @ v, rtol=1e-5, atol=1e-6)
