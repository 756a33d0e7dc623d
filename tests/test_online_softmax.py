"""Online softmax (engine/online_fusion.py, codegen/online.py): attention, from `scaled_dot_product_attention` or written by
hand, runs in one kernel and one pass over the keys, with no B*H*T*T buffer, and matches PyTorch (masks, fully masked
rows, causal) on CPU and PYTHON, with gradients (against PyTorch and float64 central differences)."""
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor
from picograd.helpers import Context
from picograd.engine.schedule import ONLINE_DEVICES
from picograd.codegen.online import KEY_BLOCK, online_softmax
from picograd.codegen.lower import lower_kernel
from picograd.codegen.cuda import CUDATarget, render_cuda
from picograd.ir.ops import Ops
from picograd.runtime import cuda as cuda_rt

NVRTC_ERROR = cuda_rt.nvrtc_unavailable_reason()
from compare import rand
from gradcheck import assert_close_to_torch, assert_matches_finite_differences

B, H, T, D = 2, 3, 16, 8
F = torch.nn.functional


@pytest.fixture(autouse=True)
def _online_at_every_size():
  # the rule is gated to large score tensors by default (ONLINE_SOFTMAX_MIN); these shapes are small
  with Context(ONLINE_SOFTMAX_MIN=0): yield


def _qkv(seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
  return [rand((B, H, T, D), dtype=dtype, seed=seed + i) for i in range(3)]


def _mask(seed: int = 5) -> np.ndarray:
  m = np.random.default_rng(seed).random((T, T)) > 0.4
  m[3] = False            # a query that may attend to no key
  m[5] = np.arange(T) == T - 1  # one that sees only the last key: the running max is -inf for most of the pass
  m[:, 0] = m[:, 0] & (np.arange(T) != 7)
  return m


def _hand(q, k, v, mask, scale: float):
  """softmax(q k^T * s + mask) v written out, for picograd and torch tensors alike."""
  return ((q @ k.transpose(-2, -1)) * scale + mask).softmax(-1) @ v


def _float_mask(m: np.ndarray) -> np.ndarray: return np.where(m, 0.0, -np.inf).astype(np.float32)


def _steps(t: Tensor) -> list:
  return picograd.schedule(t)


def _is_flash(step) -> bool:
  """Is the step's kernel the CPU's tiled flash attention (codegen/cpu_flash.py)? Its pass is printed by its own renderer."""
  return step.kernel is not None and any(o.startswith("flash attention") for o in step.kernel.opts)


def _online(device: str) -> None:
  if device.split(":")[0] not in ONLINE_DEVICES: pytest.skip(f"{device}'s codegen has no online softmax yet (engine/schedule.py ONLINE_DEVICES)")


def test_attention_is_one_pass_without_score_buffers(device):
  _online(device)
  q, k, v = (Tensor(a, device=device) for a in _qkv())
  mask = Tensor(_float_mask(_mask()), device=device)
  for out in (q.scaled_dot_product_attention(k, v), q.scaled_dot_product_attention(k, v, is_causal=True),
              _hand(q, k, v, mask, 0.3)):
    steps = _steps(out)
    assert len(steps) == 1
    assert all(b.size < B * H * T * T for s in steps for b in s.buffers)
    if _is_flash(steps[0]): continue
    # one loop over the keys (in blocks of KEY_BLOCK) holds the running max, the denominator and the D numerators
    program = steps[0].program
    assert program.count(f", {T // KEY_BLOCK}, 'reduce')") == 1 and program.count(f", {T}, 'reduce')") == 0
    rescaled = [line for line in program.splitlines() if "DEFINE_ACC" in line and "Ops.RESCALED" in line]
    assert rescaled and len(rescaled) % (D + 1) == 0  # D + 1 accumulators per row the kernel computes at once


def test_bool_mask_reads_the_mask_once_and_keeps_the_pass(device):
  _online(device)
  q, k, v = (Tensor(a, device=device) for a in _qkv())
  out = q.scaled_dot_product_attention(k, v, attn_mask=Tensor(_mask(), device=device))
  steps = _steps(out)
  assert all(b.size < B * H * T * T for s in steps for b in s.buffers)
  assert sum("Ops.RESCALED" in s.program or _is_flash(s) for s in steps) == 1


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_forward_matches_torch(device, causal):
  arrays = _qkv()
  out = Tensor(arrays[0], device=device).scaled_dot_product_attention(*(Tensor(a, device=device) for a in arrays[1:]), is_causal=causal)
  ref = F.scaled_dot_product_attention(*map(torch.tensor, arrays), is_causal=causal).numpy()
  np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_grouped_heads_and_uneven_shapes_match_torch(device):
  # grouped-query heads (keys and values broadcast over query heads), no head axis, 10 queries over 12 keys, values 5 wide
  rng = np.random.default_rng(2)
  cases = [((2, 6, 16, 8), (2, 2, 16, 8), (2, 2, 16, 8), dict(enable_gqa=True, is_causal=True)), ((4, 10, 8), (4, 12, 8), (4, 12, 5), {})]
  for shapes, kwargs in ((c[:3], c[3]) for c in cases):
    q, k, v = (rng.standard_normal(sh).astype(np.float32) for sh in shapes)
    out = Tensor(q, device=device).scaled_dot_product_attention(Tensor(k, device=device), Tensor(v, device=device), **kwargs)
    if device.split(":")[0] in ONLINE_DEVICES: assert len(_steps(out)) == 1
    ref = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), **kwargs).numpy()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_masks_and_fully_masked_rows_match_torch(device):
  arrays, m = _qkv(3), _mask()
  q, k, v = (Tensor(a, device=device) for a in arrays)
  tq, tk, tv = map(torch.tensor, arrays)
  # SDPA gives zeros where a query sees no key (bool or -inf float mask), as PyTorch's does
  for mask in (m, _float_mask(m)):
    out = q.scaled_dot_product_attention(k, v, attn_mask=Tensor(mask, device=device), scale=0.7).numpy()
    ref = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask), scale=0.7).numpy()
    assert not np.isnan(ref).any() and np.all(ref[:, :, 3] == 0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  # by hand, softmax of a row of -inf is NaN (0/0) in PyTorch, and here
  out = _hand(q, k, v, Tensor(_float_mask(m), device=device), 0.3).numpy()
  ref = _hand(tq, tk, tv, torch.tensor(_float_mask(m)), 0.3).numpy()
  assert np.isnan(ref[:, :, 3]).all() and not np.isnan(np.delete(ref, 3, axis=2)).any()
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_dropout_is_drawn_inside_the_pass(device):
  # dropout's mask comes from the counter RNG: the one-pass kernel draws the same mask as the stored probabilities would
  _online(device)
  arrays = _qkv(7)
  def run(online: bool) -> tuple[np.ndarray, int]:
    with Context(ONLINE_SOFTMAX_MIN=0 if online else 1 << 62):
      Tensor.manual_seed(3)
      q, k, v = (Tensor(a, device=device) for a in arrays)
      out = q.scaled_dot_product_attention(k, v, dropout_p=0.3, is_causal=True)
      steps = len(_steps(out))
      return out.numpy(), steps
  (fused, n_fused), (stored, n_stored) = run(True), run(False)
  assert n_fused == 1 < n_stored
  np.testing.assert_allclose(fused, stored, rtol=1e-5, atol=1e-6)


def test_large_scores_do_not_overflow(device):
  # exp of scores near 80 overflows float32 without the max subtracted; the running max must rescale, not overflow
  q, k, v = _qkv(6)
  q = q * 8
  out = Tensor(q, device=device).scaled_dot_product_attention(Tensor(k, device=device), Tensor(v, device=device), scale=1.0)
  ref = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), scale=1.0).numpy()
  np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_the_size_gate_keeps_small_attention_as_it_was():
  q, k, v = (Tensor(a) for a in _qkv())
  with Context(ONLINE_SOFTMAX_MIN=B * H * T * T + 1):
    assert any(b.size == B * H * T * T for s in _steps(q.scaled_dot_product_attention(k, v)) for b in s.buffers)
  with Context(ONLINE_SOFTMAX_MIN=B * H * T * T): assert len(_steps(q.scaled_dot_product_attention(k, v))) == 1


def test_noopt_gives_the_same_values():
  arrays = _qkv(9)
  def run() -> np.ndarray:
    q, k, v = (Tensor(a) for a in arrays)
    return q.scaled_dot_product_attention(k, v, is_causal=True).numpy()
  with Context(NOOPT=1): plain = run()
  np.testing.assert_allclose(run(), plain, rtol=1e-5, atol=1e-6)


def test_gradients_match_torch(device):
  m = _mask()
  m[3, 1] = True  # every query sees a key: a fully masked row's gradient is NaN by hand and 0 in SDPA
  assert_close_to_torch(lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=True), _qkv(), device=device,
                        torch_fn=lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
  assert_close_to_torch(lambda q, k, v, mask: _hand(q, k, v, mask, 0.3), _qkv(1), device=device,
                        extra=(Tensor(_float_mask(m), device=device),), torch_extra=(torch.tensor(_float_mask(m)),))


def test_gradients_match_finite_differences():
  q, k, v = (a[:1, :2, :6, :4].astype(np.float64) for a in _qkv(4, np.float64))
  assert_matches_finite_differences(lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=True), [q, k, v])


@pytest.mark.skipif(bool(NVRTC_ERROR), reason=f"NVRTC unavailable: {NVRTC_ERROR}")
def test_online_kernel_renders_for_cuda_with_the_flat_plan():
  # CUDA is not in ONLINE_DEVICES yet (its plans deal the max's loop out to threads); the flat plan (NOOPT) renders it
  q, k, v = (Tensor(a) for a in _qkv())
  [step] = _steps(q.scaled_dot_product_attention(k, v, is_causal=True))
  sink = online_softmax(lower_kernel(step.ast))
  assert any(n.op is Ops.RESCALED for n in sink.toposort())
  with Context(NOOPT=1):
    name, src, _, _, meta = render_cuda("attention", sink, CUDATarget())
  assert meta["plan"] == "flat" and " * " in src
  assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", name)).image


def test_flat_gpu_mapping_runs_the_online_kernel():
  # NOOPT=1 maps every CUDA kernel flat, which keeps each row's pass in one thread: the PYTHON device runs it as mapped
  arrays = _qkv(8)
  with Context(NOOPT=1, EMULATE="CUDA"):
    q, k, v = (Tensor(a, device="PYTHON") for a in arrays)
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    [step] = _steps(out)
    assert "Ops.RESCALED" in step.program and "emulating the CUDA mapping flat" in step.kernel.opts
    got = out.numpy()
  np.testing.assert_allclose(got, F.scaled_dot_product_attention(*map(torch.tensor, arrays), is_causal=True).numpy(), rtol=1e-5, atol=1e-6)


def test_flash_blocks_on_the_cpu_match_torch():
  # codegen/cpu_flash.py: more keys than one block with a partial last one (45), a head size and a value width that are
  # not whole vectors (20, 7), rows not a whole number of tiles; large scores (rescaled across blocks), a causal block
  # skipped, a transposed mask (gathered along the keys), rows with no key (-inf) or only the last, dropout
  rng = np.random.default_rng(11)
  t = 45
  q, k = (rng.standard_normal((1, 2, t, 20)).astype(np.float32) * s for s in (4.0, 1.0))
  v = rng.standard_normal((1, 2, t, 7)).astype(np.float32)
  m = rng.random((t, t)) > 0.3
  m[4], m[9] = False, np.arange(t) == t - 1
  tq, tk, tv = map(torch.tensor, (q, k, v))
  pq, pk, pv = map(Tensor, (q, k, v))
  mask_t = Tensor(np.ascontiguousarray(m.T)).transpose(0, 1)  # the same mask through a transposed view
  cases = [(pq.scaled_dot_product_attention(pk, pv, is_causal=True), F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)),
           (pq.scaled_dot_product_attention(pk, pv, attn_mask=mask_t), F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(m))),
           (_hand(pq, pk, pv, Tensor(_float_mask(m)), 0.3), _hand(tq, tk, tv, torch.tensor(_float_mask(m)), 0.3)),
           (Tensor(q[:, :, :1]).scaled_dot_product_attention(pk, pv), F.scaled_dot_product_attention(tq[:, :, :1], tk, tv))]  # one query
  for out, ref in cases:
    assert any(_is_flash(s) for s in _steps(out))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
  def dropped(online: bool) -> np.ndarray:
    with Context(ONLINE_SOFTMAX_MIN=0 if online else 1 << 62):
      Tensor.manual_seed(5)
      out = Tensor(q).scaled_dot_product_attention(Tensor(k), Tensor(v), dropout_p=0.25, is_causal=True)
      assert any(_is_flash(s) for s in _steps(out)) == online
      return out.numpy()
  np.testing.assert_allclose(dropped(True), dropped(False), rtol=1e-4, atol=1e-5)


def test_flash_panels_on_the_heap_match_torch(monkeypatch):
  # packed panels over MAX_STACK_BYTES (long sequences) are allocated on the heap and freed
  from picograd.codegen import cpu_flash
  monkeypatch.setattr(cpu_flash, "MAX_STACK_BYTES", 1024)
  q, k, v = (a[:1, :, :, :6] for a in _qkv(12))
  out = Tensor(q).scaled_dot_product_attention(Tensor(k), Tensor(v), is_causal=True)
  [step] = _steps(out)
  assert _is_flash(step) and "@aligned_alloc" in step.source
  np.testing.assert_allclose(out.numpy(), F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), is_causal=True).numpy(),
                             rtol=1e-5, atol=1e-6)


def test_flash_with_eight_lanes_matches_torch(monkeypatch):
  # a host without AVX-512 gets 8-lane vectors (blocks of 16 keys): the same kernel at that width, run here
  from picograd.codegen import cpu_flash, cpu_tiles
  for module in (cpu_flash, cpu_tiles): monkeypatch.setattr(module, "vector_lanes", lambda: 8)
  q, k, v = (a[:1, :, :13, :5] for a in _qkv(13))
  out = Tensor(q).scaled_dot_product_attention(Tensor(k), Tensor(v), is_causal=True)
  [step] = _steps(out)
  assert _is_flash(step) and "<8 x float>" in step.source and "<16 x float>" not in step.source
  np.testing.assert_allclose(out.numpy(), F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), is_causal=True).numpy(),
                             rtol=1e-5, atol=1e-6)
