"""Multi-output kernels (engine/outputs.py): elementwise kernels of one loop shape merged into one kernel that stores several outputs.

Each merge is checked three ways: kernel counts (the policy), results bit-identical to the unmerged schedule (the same
arithmetic, one launch), and the values against numpy or PyTorch.
"""
import re
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes, Context
from picograd.engine import outputs, realize as engine
from picograd.optim import AdamW

torch = pytest.importorskip("torch")

SHAPES = [(8, 16), (16,), (16, 4), (4,), (16,), (16,)]  # two layers, a layer norm's weight and bias


@pytest.fixture
def unmerged(monkeypatch):
  """Turn merging off: no device takes multi-output kernels (and cached schedules are forgotten)."""
  def off() -> None:
    monkeypatch.setattr(outputs, "MULTI_OUTPUT_DEVICES", set())
    monkeypatch.setattr(engine, "_templates", {})
  return off


def _train(device: str, steps: int = 2, dtype=dtypes.float32):
  """A small MLP with a layer norm trained by AdamW: kernels per step, then every parameter and moment."""
  rng = np.random.default_rng(0)
  params = [Tensor(rng.standard_normal(s).astype(np.float32), device=device).cast(dtype).contiguous() for s in SHAPES]
  Tensor.realize(*params)
  w1, b1, w2, b2, g, b = params
  opt = AdamW(params, lr=0.01)
  x = Tensor(rng.standard_normal((32, 8)).astype(np.float32), device=device)
  counts = []
  for _ in range(steps):
    h = ((x.cast(dtype) @ w1 + b1).relu().float().layer_norm((16,)) * g.float() + b.float())
    loss = (h @ w2.float() + b2.float()).square().mean()
    opt.zero_grad()
    loss.backward()
    todo = [loss, *opt.schedule_step()]
    counts.append(picograd.schedule(*todo))
    Tensor.realize(*todo)
  return counts, [t.float().numpy() for t in params + opt.m + opt.v]


@pytest.mark.parametrize("device", ["CPU", "PYTHON"])
def test_adamw_step_merges_updates(device, unmerged):
  steps, merged = _train(device)
  assert sum(s.outputs for s in steps[-1]) == len(steps[-1]) + 15, [(s.name, s.outputs) for s in steps[-1]]
  # each parameter's m, v and new value are one kernel; the three (16,) parameters' updates one more; b1^t and b2^t one
  updates = sorted(s.outputs for s in steps[-1] if s.outputs > 1)
  assert updates == [2, 3, 3, 3, 9], updates
  unmerged()
  plain_steps, plain = _train(device)
  assert len(plain_steps[-1]) == len(steps[-1]) + 15 and all(s.outputs == 1 for s in plain_steps[-1])
  for a, b in zip(merged, plain): np.testing.assert_array_equal(a, b)  # the same arithmetic, bit for bit


def test_adamw_matches_torch():
  _, got = _train("CPU", steps=2)
  rng = np.random.default_rng(0)
  params = [torch.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in SHAPES]
  w1, b1, w2, b2, g, b = params
  opt = torch.optim.AdamW(params, lr=0.01)
  x = torch.tensor(rng.standard_normal((32, 8)).astype(np.float32))
  for _ in range(2):
    h = torch.nn.functional.layer_norm((x @ w1 + b1).relu(), (16,)) * g + b
    loss = (h @ w2 + b2).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
  want = [p.detach().numpy() for p in params] + [opt.state[p][k].numpy() for k in ("exp_avg", "exp_avg_sq") for p in params]
  for a, w in zip(got, want): np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-6)


def test_bfloat16_masters_update_in_one_kernel(unmerged):
  """A 16-bit parameter's master, moments and rounded copy are four outputs of one kernel (the cast reads the new master)."""
  steps, merged = _train("CPU", dtype=dtypes.bfloat16)
  assert sorted(s.outputs for s in steps[-1] if s.outputs > 1) == [2, 4, 4, 4, 12]
  unmerged()
  _, plain = _train("CPU", dtype=dtypes.bfloat16)
  for a, b in zip(merged, plain): np.testing.assert_array_equal(a, b)


def test_outputs_read_in_place_fuse_and_views_do_not(device):
  rng = np.random.default_rng(1)
  xn, yn = rng.standard_normal((5, 5)).astype(np.float32), rng.standard_normal((5, 5)).astype(np.float32)
  x, y = Tensor(xn, device=device), Tensor(yn, device=device)
  a = x * 2 + y
  b = (a * y).relu()  # reads a where it is computed: a's value, not its buffer
  c = a.T + 1          # reads a transposed: a is stored first
  steps = picograd.schedule(a, b, c)
  assert sorted(s.outputs for s in steps) == [1, 2]
  Tensor.realize(a, b, c)
  an = xn * 2 + yn
  np.testing.assert_allclose(a.numpy(), an, rtol=1e-6)
  np.testing.assert_allclose(b.numpy(), np.maximum(an * yn, 0), rtol=1e-6)
  np.testing.assert_allclose(c.numpy(), an.T + 1, rtol=1e-6)


def test_old_values_are_read_before_they_are_overwritten(device):
  """A kernel reading a buffer's old value never shares a kernel with the ASSIGN that overwrites it, whether it reads it at
  the same position or elsewhere; readers of the new value do."""
  xn = np.arange(12, dtype=np.float32).reshape(3, 4)
  x = Tensor(xn.copy(), device=device)
  Tensor.realize(x)
  same, shifted = x + 1, x.flip(0) * 3
  x.assign(x * 2)
  after = x - 5  # the new value, where it is computed
  steps = picograd.schedule(same, shifted, x, after)
  # the two readers of the old value share a kernel (they read one input), the ASSIGN and the reader of its value another
  assert sorted(s.outputs for s in steps) == [2, 2], [(s.name, s.outputs) for s in steps]
  Tensor.realize(same, shifted, x, after)
  np.testing.assert_array_equal(same.numpy(), xn + 1)
  np.testing.assert_array_equal(shifted.numpy(), xn[::-1] * 3)
  np.testing.assert_array_equal(x.numpy(), xn * 2)
  np.testing.assert_array_equal(after.numpy(), xn * 2 - 5)


def test_small_siblings_merge_large_unrelated_ones_do_not():
  rng = np.random.default_rng(2)
  small = [Tensor(rng.standard_normal(384).astype(np.float32)) for _ in range(4)]
  assert [s.outputs for s in picograd.schedule(small[0].exp(), small[1].sin(), small[2] * 3, small[3] + 1)] == [4]
  n = outputs.SMALL_OUTPUT
  big = [Tensor.ones(n).contiguous() for _ in range(2)]
  Tensor.realize(*big)
  assert len(picograd.schedule(big[0] * 2, big[1] + 1)) == 2  # nothing shared: two kernels
  assert len(picograd.schedule(big[0] * 2, big[0] + 1)) == 1  # one input read once for both


def test_merged_step_replays_under_jit():
  """A JIT replay launches the merged kernels with all their outputs (the AdamW step of the MLP, as eager)."""
  eager_steps, eager = _train("CPU", steps=3)
  rng = np.random.default_rng(0)
  params = [Tensor(rng.standard_normal(s).astype(np.float32)).contiguous() for s in SHAPES]
  Tensor.realize(*params)
  w1, b1, w2, b2, g, b = params
  opt = AdamW(params, lr=0.01)
  x = Tensor(rng.standard_normal((32, 8)).astype(np.float32))

  @picograd.jit
  def step(x: Tensor) -> Tensor:
    h = ((x @ w1 + b1).relu().layer_norm((16,)) * g + b)
    loss = (h @ w2 + b2).square().mean()
    opt.zero_grad()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss

  for _ in range(3): step(x)
  for a, e in zip([t.numpy() for t in params + opt.m + opt.v], eager): np.testing.assert_array_equal(a, e)


def test_cuda_mapping_of_multi_output_kernels_emulated():
  """The CUDA mapping (lanes and flat plans) stores every output: the AdamW step run as mapped (EMULATE=CUDA) agrees with the CPU."""
  from picograd.engine.compile import _kernels
  _, want = _train("CPU")
  _kernels.clear()
  with Context(EMULATE="CUDA"):
    steps, got = _train("PYTHON")
  assert sorted(s.outputs for s in steps[-1] if s.outputs > 1) == [2, 3, 3, 3, 9]
  for a, w in zip(got, want): np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)
  mapped = [k for key, k in _kernels.items() if key[1] == "PYTHON" and key[3] == "CUDA" and k.name.startswith("E_")]
  assert mapped and all(any(o.startswith("emulating the CUDA mapping") for o in k.opts) for k in mapped)


@pytest.mark.parametrize("shape, plan", [((64, 32), "lanes"), ((384,), "flat")])
def test_cuda_multi_output_compiles(shape, plan):
  """NVRTC compiles a three-output elementwise kernel (no GPU needed); each output has its store."""
  cuda_rt = pytest.importorskip("picograd.runtime.cuda")
  if reason := cuda_rt.nvrtc_unavailable_reason(): pytest.skip(f"NVRTC unavailable: {reason}")
  from picograd.codegen.cuda import render_for_arch
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  rng = np.random.default_rng(3)
  x, y = Tensor(rng.standard_normal(shape).astype(np.float32)), Tensor(rng.standard_normal(shape).astype(np.float32))
  a = x * 2 + y
  roots, _ = _normalize([a.uop, (a.exp() * y).uop, (x - y).half().uop])
  (k,) = create_template(roots, ["CUDA"] * 3).kernels
  assert k.outputs == 3
  kname, src, dims, meta = render_for_arch(k.ast, "sm_90")
  assert meta["plan"] == plan and all(re.search(rf"(\*reinterpret_cast<\w+\*>\(p{i} \+ \w+\)|p{i}\[\w+\]) = ", src) for i in range(3)), src
  assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname)).image


@pytest.mark.skipif(bool(__import__("conftest").CUDA_ERROR), reason="no CUDA GPU")
def test_cuda_adamw_step_matches_cpu():
  _, want = _train("CPU")
  steps, got = _train("CUDA")
  assert sorted(s.outputs for s in steps[-1] if s.outputs > 1) == [2, 3, 3, 3, 9]
  for a, w in zip(got, want): np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)


def _random_program(seed: int, device: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """A random program over three buffers of one square shape (views that transpose, flip and reshape; contiguous(); row and
  column reductions broadcast back; in-place assignments, several to one buffer, reading their own target and other values,
  before and after), realized in one schedule: its outputs, and numpy's (each value computed when it was written, as eager
  code would)."""
  import random
  rnd, rng = random.Random(seed), np.random.default_rng(seed)
  arrays = [rng.standard_normal((5, 5)).astype(np.float32) for _ in range(3)]
  bufs = [Tensor(a.copy(), device=device) for a in arrays]
  Tensor.realize(*bufs)
  values: list[tuple[Tensor, np.ndarray]] = []
  outs: list[tuple[Tensor, object]] = []  # (tensor, its numpy value or the index of the buffer it was assigned into)
  f32 = np.float32

  def pick() -> tuple[Tensor, np.ndarray]:
    if values and rnd.random() < 0.6: return rnd.choice(values)
    i = rnd.randrange(3)
    return bufs[i], arrays[i]
  for _ in range(rnd.randrange(3, 10)):
    if rnd.random() < 0.3:  # a buffer may be assigned several times: each assignment writes after the one before
      i = rnd.randrange(3)
      (t, n), how, old = pick(), rnd.randrange(4), arrays[i]
      bufs[i].assign([lambda: t * 0.5 + 1, lambda: t.flip(1) - bufs[i], lambda: bufs[i] * 2 + t.T, lambda: t - t.sum(1, keepdim=True)][how]())
      arrays[i] = [lambda: n * f32(0.5) + f32(1), lambda: n[:, ::-1] - old, lambda: old * f32(2) + n.T, lambda: n - n.sum(1, keepdims=True)][how]()
      outs.append((bufs[i], i))
      continue
    (a, an), (b, bn) = pick(), pick()
    make = [lambda: (a + b, an + bn), lambda: (a * b, an * bn), lambda: (a.T - b, an.T - bn), lambda: (a.flip(0) * 2, an[::-1] * f32(2)),
            lambda: (a.where(a > b, b * 3), np.where(an > bn, an, bn * f32(3))),
            lambda: (a.reshape(25).reshape(5, 5) + 1, an + f32(1)), lambda: ((a.exp() + b).contiguous(), np.exp(an) + bn),
            lambda: (a.sum(0, keepdim=True) * b, an.sum(0, keepdims=True) * bn), lambda: (a.max(1, keepdim=True) - b, an.max(1, keepdims=True) - bn)]
    values.append(make[rnd.randrange(len(make))]())
    if rnd.random() < 0.5: outs.append(values[-1])
  if outs: Tensor.realize(*(t for t, _ in outs))
  return [t.numpy() for t, _ in outs], [arrays[w] if isinstance(w, int) else w for _, w in outs]


def test_random_programs_merged_are_bit_identical(unmerged):
  """Merged and unmerged schedules of random programs with assignments give the same bits, and numpy's values (the PYTHON
  device: no compiles)."""
  seeds = range(60)
  merged = [_random_program(s, "PYTHON") for s in seeds]
  unmerged()
  for s, (got, want) in zip(seeds, merged):
    for a, b, w in zip(got, _random_program(s, "PYTHON")[0], want):
      np.testing.assert_array_equal(a, b, err_msg=f"seed {s}")
      with np.errstate(all="ignore"): np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-4, err_msg=f"seed {s}")
