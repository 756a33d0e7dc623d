"""Runtime checks (Ops.CHECK): integer division by zero and out-of-range indices raise PyTorch's exceptions when the
kernel has run, on every backend and under JIT replay; MIN // -1 wraps like PyTorch; no input kills the process.

The exception types and messages follow PyTorch 2.x on the CPU: `RuntimeError: ZeroDivisionError` for integer
division and modulo by zero, `RuntimeError` for gather and one_hot, `IndexError` for embedding, cross_entropy/nll_loss
targets and tensor indices. On CUDA a failed check surfaces where the host waits for the GPU anyway (reading a
tensor, a copy), as PyTorch's device-side asserts do; so the tests read results with .numpy().
"""
import numpy as np
import pytest
import torch
import picograd
import picograd.nn.functional as F
from picograd import Tensor, dtypes, nn

INT_TYPES = [(np.int32, torch.int32), (np.int64, torch.int64)]


def T(values, device, dtype=None) -> Tensor: return Tensor(np.array(values, dtype=dtype), device=device)


# ---------------------------------------------------------------- integer division

@pytest.mark.parametrize("np_dt,torch_dt", INT_TYPES)
def test_integer_division_matches_torch(device, np_dt, torch_dt):
  """Floor division, truncation and modulo over every sign combination, MIN // -1 and MIN % -1 included (no SIGFPE)."""
  lo = np.iinfo(np_dt).min
  a = np.array([7, -7, 7, -7, 0, lo, lo, lo, lo, 5, -1], np_dt)
  b = np.array([2, 2, -2, -2, 3, -1, 1, -1, 2, -1, -1], np_dt)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  np.testing.assert_array_equal((x // y).numpy(), (ta // tb).numpy())
  np.testing.assert_array_equal((x % y).numpy(), (ta % tb).numpy())
  # torch's own trunc division of MIN by -1 traps (SIGFPE); C's truncation wraps to MIN, which is what picograd gives
  with np.errstate(invalid="ignore"):  # the where's other branch casts 2**31 (MIN / -1) to int32
    want_trunc = np.where(b == -1, -a, np.trunc(a.astype(np.float64) / b).astype(np_dt))
  np.testing.assert_array_equal(x.div(y, rounding_mode="trunc").numpy(), want_trunc)
  np.testing.assert_array_equal((x // -1).numpy(), (ta // -1).numpy())
  np.testing.assert_array_equal((x % -1).numpy(), (ta % -1).numpy())


@pytest.mark.parametrize("np_dt", [np.int32, np.int64, np.uint8])
def test_division_by_zero_raises(device, np_dt):
  if np_dt == np.uint8 and not hasattr(dtypes, "uint8"): pytest.skip("no uint8")
  x = Tensor(np.array([5, 1, 3], np_dt), device=device)
  zero_in_tensor = Tensor(np.array([1, 0, 1], np_dt), device=device)
  for make in (lambda: x // zero_in_tensor, lambda: x % zero_in_tensor, lambda: x.div(zero_in_tensor, rounding_mode="trunc"),
               lambda: x // 0, lambda: x % 0, lambda: 7 // zero_in_tensor,
               lambda: (x // zero_in_tensor) * 0):  # folding the quotient away keeps its check
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
      make().numpy()
  # the error does not stick: the next division is fine
  np.testing.assert_array_equal((x // Tensor(np.array([2, 1, 3], np_dt), device=device)).numpy(), [2, 1, 1])


def test_float_division_by_zero_is_not_checked(device):
  x = Tensor(np.array([1.0, -1.0, 0.0], np.float32), device=device)
  out = (x / 0).numpy()
  assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])
  np.testing.assert_array_equal((x // 0.0).numpy()[:2], [np.inf, -np.inf])
  ast = [s for s in picograd.schedule(x / Tensor(np.ones(3, np.float32), device=device))][0]
  assert not ast.kernel.checks  # float kernels carry no checks, nor their error word


def test_division_checks_only_where_needed():
  """A constant nonzero divisor needs no check; a divisor read from memory does."""
  x = Tensor(np.arange(6, dtype=np.int32))
  assert not picograd.schedule(x // 3)[0].kernel.checks
  assert picograd.schedule(x // Tensor(np.ones(6, np.int32)))[0].kernel.checks == (("RuntimeError", "ZeroDivisionError"),)


def test_division_by_zero_in_padding_is_not_reported(device):
  """Padded elements read stand-in data; a zero there must not raise (the check carries the pad's validity)."""
  b = Tensor(np.array([0, 2, 4], np.int32), device=device)
  a = Tensor(np.array([8, 8, 8], np.int32), device=device)
  out = (a[1:] // b[1:]).pad((1, 1)).numpy()
  np.testing.assert_array_equal(out, [0, 4, 2, 0])


# ---------------------------------------------------------------- indices

def test_gather_out_of_range(device):
  x = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), device=device)
  for bad in ([[3, 0, 0, 0]], [[-1, 0, 0, 0]]):
    with pytest.raises(RuntimeError, match="out of bounds for dimension 0 with size 3"):
      x.gather(0, T(bad, device)).numpy()
  np.testing.assert_array_equal(x.gather(1, T([[3], [0], [1]], device)).numpy(), [[3], [4], [9]])


@pytest.mark.parametrize("op", ["scatter", "scatter_add", "scatter_reduce"])
def test_scatter_out_of_range(device, op):
  x = Tensor.zeros(3, device=device)
  call = {"scatter": lambda i: x.scatter(0, i, Tensor.ones(1, device=device)),
          "scatter_add": lambda i: x.scatter_add(0, i, Tensor.ones(1, device=device)),
          "scatter_reduce": lambda i: x.scatter_reduce(0, i, Tensor.ones(1, device=device), "amax")}[op]
  for bad in ([3], [-1]):
    with pytest.raises(RuntimeError, match="out of bounds for dimension 0 with size 3"): call(T(bad, device)).numpy()
  np.testing.assert_array_equal(call(T([2], device)).numpy(), [0, 0, 1])


def test_embedding_out_of_range(device):
  w = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device)
  for bad in ([3], [-1], [0, 7]):
    with pytest.raises(IndexError, match="index out of range in self"):
      F.embedding(T(bad, device), w).numpy()
  emb = nn.Embedding(3, 2, device=device)
  with pytest.raises(IndexError, match="index out of range in self"):
    emb(T([[0, 3]], device)).numpy()
  np.testing.assert_array_equal(F.embedding(T([2, 0], device), w).numpy(), [[4, 5], [0, 1]])


def test_one_hot_out_of_range(device):
  with pytest.raises(RuntimeError, match="smaller than num_classes"):
    T([0, 3], device).one_hot(3).numpy()
  with pytest.raises(RuntimeError, match="non-negative"):
    T([0, -1], device).one_hot(3).numpy()
  np.testing.assert_array_equal(T([2, 0], device).one_hot(3).numpy(), [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_loss_targets_out_of_range(device, loss):
  logits = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
  x = Tensor(logits, device=device)
  for bad in ([4, 0, 0], [-1, 0, 0]):
    with pytest.raises(IndexError, match="Target is out of bounds"):
      getattr(x, loss)(T(bad, device)).numpy()
  # ignore_index may lie outside the classes
  want = getattr(torch.nn.functional, loss)(torch.from_numpy(logits), torch.tensor([-100, 1, 3]))
  np.testing.assert_allclose(getattr(x, loss)(T([-100, 1, 3], device)).numpy(), want.numpy(), rtol=1e-5)


def test_tensor_index_out_of_range(device):
  x = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), device=device)
  for index in ((T([3], device),), (T([-4], device),), (slice(None), T([4], device)), (T([0], device), T([-5], device))):
    with pytest.raises(IndexError, match="out of bounds"):
      x[index].numpy()
  np.testing.assert_array_equal(x[T([-3, 2], device)].numpy(), [[0, 1, 2, 3], [8, 9, 10, 11]])
  np.testing.assert_array_equal(x[T([0], device), T([-1], device)].numpy(), [3])


def test_index_gradient_still_flows(device):
  """The check passes the gradient through to the indexed tensor (the index itself has none)."""
  x = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device, requires_grad=True)
  x[T([2, 2, 0], device)].sum().backward()
  np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [0, 0], [2, 2]])


# ---------------------------------------------------------------- under the JIT and the engine

def test_checks_run_on_every_jit_replay(device):
  w = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device)
  step = picograd.jit(lambda idx, d: (F.embedding(idx, w).sum() + (idx // d).sum().cast(dtypes.float32)).realize())
  for _ in range(3): step(T([0, 2], device), T([1, 1], device))  # run, capture, replay
  with pytest.raises(IndexError, match="index out of range"):
    step(T([0, 3], device), T([1, 1], device)).numpy()
  with pytest.raises(RuntimeError, match="ZeroDivisionError"):
    step(T([0, 2], device), T([1, 0], device)).numpy()
  assert step(T([1, 2], device), T([1, 1], device)).item() == 2 + 3 + 4 + 5 + 1 + 2


def test_error_words_share_a_table(device, monkeypatch):
  """Checked kernels of a device that addresses into a block (CPU, CUDA) keep their error words in one table, read with one
  copy: a failed check reports its own kernel, clears only its word, and leaves the other kernels' words alone."""
  from picograd.engine import realize
  monkeypatch.setattr(realize, "_error_slots", {})  # a fresh table, whatever this process checked before
  monkeypatch.setattr(realize, "_error_tables", {})
  _error_slots = realize._error_slots
  w = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device)
  x = T([6, 4], device, np.int32)
  np.testing.assert_array_equal(F.embedding(T([0, 2], device), w).sum(1).numpy(), [1, 9])  # two kernels, each with its word
  np.testing.assert_array_equal((x // T([3, 2], device, np.int32)).numpy(), [2, 2])
  slots = [slot for (name, dev), slot in _error_slots.items() if dev == w.device]
  if device != "PYTHON": assert len(slots) >= 2 and len({id(table) for table, _, _ in slots}) == 1
  with pytest.raises(IndexError, match="index out of range"):
    F.embedding(T([0, 5], device), w).sum(1).numpy()
  with pytest.raises(RuntimeError, match="ZeroDivisionError"):
    (x // T([0, 2], device, np.int32)).numpy()
  np.testing.assert_array_equal((x // T([3, 2], device, np.int32)).numpy(), [2, 2])
  assert all(not table.numpy()[i] for table, i, _ in _error_slots.values())
  # two checked kernels run together: their words are read with one copy of the table (a CUDA step read one per kernel)
  reads, read_buffers = [], realize.read_buffers
  monkeypatch.setattr(realize, "read_buffers", lambda buffers: (reads.append(buffers), read_buffers(buffers))[1])
  a, b = F.embedding(T([0, 1], device), w).sum(1), x // T([2, 1], device, np.int32)
  a.realize(b)
  realize.check_errors()  # (a GPU's words are read here, a CPU's when its launches return)
  if device != "PYTHON": assert [len(r) for r in reads] == [1], reads
  # and a tensor read from a GPU takes its kernels' error words along, in the same copies (one wait)
  reads.clear()
  (F.embedding(T([0, 1], device), w).sum(1) * 2).numpy()
  if device == "CUDA": assert [len(r) for r in reads] == [2], reads


def test_failed_realize_leaves_tensors_usable(device):
  x = Tensor(np.array([4, 6], np.int32), device=device)
  bad = x // Tensor(np.array([0, 1], np.int32), device=device)
  with pytest.raises(RuntimeError):
    bad.numpy()
  np.testing.assert_array_equal((x // 2).numpy(), [2, 3])


def _asts(t: Tensor) -> list:
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  roots, _ = _normalize([t.uop])
  return [k.ast for k in create_template(roots, [t.device]).kernels if k.ast is not None]


def test_renderers_emit_the_error_word():
  """Kernels with checks take one more argument, the error word: CPU (LLVM), PYTHON and CUDA C alike."""
  def last_kernel(device: str):
    x = Tensor(np.ones((3, 2), np.float32), device=device)
    return picograd.schedule(x[Tensor(np.array([0, 1], np.int32), device=device)])[-1].kernel
  cpu = last_kernel("CPU")
  assert "ptr noalias %err" in cpu.source and "atomicrmw or" in cpu.source
  assert cpu.checks == (("IndexError", "index out of bounds for dimension 0 with size 3"),)
  py = last_kernel("PYTHON")
  assert "err):" in py.source and "check(" in py.source
  from picograd.codegen.cuda import render_for_arch
  _, src, _, meta = render_for_arch(_asts(Tensor(np.ones((3, 2), np.float32))[Tensor(np.array([0, 1], np.int32))])[-1])
  assert "unsigned long long* __restrict__ pg_err" in src and "pg_check(" in src.split("__global__")[1]


def test_cuda_checked_kernels_compile():
  """NVRTC compiles the checked kernels of a division, a division inside a reduction, an embedding and a loss (no GPU needed)."""
  cuda_rt = pytest.importorskip("picograd.runtime.cuda")
  if reason := cuda_rt.nvrtc_unavailable_reason(): pytest.skip(f"NVRTC unavailable: {reason}")
  from picograd.codegen.cuda import render_for_arch
  rng = np.random.default_rng(0)
  a, b = Tensor(rng.integers(-9, 9, (64, 300)).astype(np.int32)), Tensor(rng.integers(1, 9, (64, 300)).astype(np.int32))
  idx = Tensor(rng.integers(0, 50, (64,)))
  w = Tensor(rng.standard_normal((50, 32)).astype(np.float32), requires_grad=True)
  emb = F.embedding(idx, w)
  loss = emb.cross_entropy(idx % 32)
  loss.backward()
  for t in (a // b, (a % b).sum(1), emb, loss, w.grad):
    checked = [src for src in (render_for_arch(ast)[1] for ast in _asts(t)) if "pg_err" in src]
    assert checked
    for src in checked:
      name = src.split("void __launch_bounds__")[1].split(")", 1)[1].split("(")[0].strip()
      cuda_rt.compile_cuda_source(src, "sm_90", name)


def test_failed_check_during_jit_capture(device):
  """A check that fails while the JIT records leaves no half capture behind: the next call captures again."""
  w = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device)
  step = picograd.jit(lambda idx: F.embedding(idx, w).sum().realize())
  step(T([0], device))
  with pytest.raises(IndexError):
    step(T([5], device)).numpy()
  for i in range(3): assert step(T([i], device)).item() == 4 * i + 1


def test_python_backend_reuses_loop_axes():
  """The PYTHON interpreter gives each loop a numpy axis; axes of finished loops are reused, so a kernel with more than
  64 loops in sequence (found by tests/test_fuzz.py: chained row reductions) still runs."""
  def many_sums(device: str) -> Tensor:
    x = Tensor(np.arange(80, dtype=np.float32), device=device)
    t = x[0:1].sum()
    for i in range(1, 70): t = t + x[i:].sum()  # one kernel, 70 reduction loops
    return t
  steps = picograd.schedule(many_sums("PYTHON"))
  assert len(steps) == 1 and sum(" RANGE " in line for line in steps[0].program.splitlines()) > 64
  assert many_sums("PYTHON").item() == many_sums("CPU").item() == sum(sum(range(i, 80)) for i in range(1, 70))
