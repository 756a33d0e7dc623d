"""The CUDA flash plan (codegen/cuda/flash.py): autocast's attention as one kernel of mma.sync tiles, checked under EMULATE=CUDA
against PyTorch's SDPA, compiled by NVRTC for sm_80 and sm_90, and on a GPU when there is one."""
import re
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor, dtypes, Context
from picograd.engine.realize import _normalize
from picograd.engine.schedule import create_template

from cuda_marks import cuda_rt, needs_nvrtc, needs_gpu  # noqa: E402
from picograd.codegen.cuda import render_for_arch  # noqa: E402


def rnd(*shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _float_mask(T):
  return np.where(np.random.default_rng(6).random((T, T)) < 0.8, np.random.default_rng(7).standard_normal((T, T)), -np.inf).astype(np.float32)


def sdpa(q, k, v, how):
  """Attention under autocast: SDPA (causal or not, a bool or an additive float mask; float16 for "causal_f16") or the same
  math by hand."""
  with picograd.autocast(dtypes.float16 if how == "causal_f16" else dtypes.bfloat16):
    if how == "by_hand": return ((q @ k.transpose(-2, -1)) * (1 / np.sqrt(q.shape[-1]))).softmax(-1) @ v
    if how == "mask":
      T = q.shape[-2]
      keep = Tensor(np.random.default_rng(5).random((T, T)) < 0.7, device=q.device)
      return q.scaled_dot_product_attention(k, v, attn_mask=keep)
    if how == "float_mask": return q.scaled_dot_product_attention(k, v, attn_mask=Tensor(_float_mask(q.shape[-2]), device=q.device))
    if how == "heads_merged":  # the GPT's: heads side by side in the output, whose loop lowering merges with the column's
      B, H, T, D = q.shape
      return q.scaled_dot_product_attention(k, v, is_causal=True).transpose(1, 2).reshape(B, T, H * D)
    return q.scaled_dot_product_attention(k, v, is_causal=how.startswith("causal"))


def torch_sdpa(arrays, how):
  q, k, v = (torch.tensor(a) for a in arrays)
  if how == "float_mask":
    mask = torch.tensor(_float_mask(q.shape[-2]))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return torch.where((mask > -torch.inf).any(-1, keepdim=True), out, 0).numpy()
  if how == "mask":
    T = q.shape[-2]
    keep = torch.tensor(np.random.default_rng(5).random((T, T)) < 0.7)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return torch.where(keep.any(-1, keepdim=True), out, 0).numpy()  # picograd gives 0 for a query that sees no key (NOTES)
  if how == "heads_merged":
    B, H, T, D = q.shape
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, H * D).numpy()
  return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=how.startswith("causal")).numpy()


def kernels_for(t: Tensor, device: str) -> list: return kernels_for_roots([t.uop], device)


def kernels_for_roots(uops: list, device: str) -> list:
  roots, _ = _normalize(uops)
  return [k.ast for k in create_template(roots, [device] * len(roots)).kernels if k.ast is not None]


# (B, H, T, D, how, inputs in bfloat16): a T that is not a multiple of the tiles, B * H > 1, head sizes 64, 48, 32 and 16, an
# additive float mask, float16, one query row (decoding), the heads merged in the output; 16-bit inputs are read by 16-byte loads and cp.async (as the stored casts of q, k, v are on CUDA)
SHAPES = [(1, 2, 80, 64, "causal", False), (2, 1, 70, 32, "plain", True), (1, 2, 80, 64, "by_hand", False), (1, 1, 72, 32, "mask", False),
          (1, 1, 130, 32, "causal", True), (1, 2, 66, 16, "float_mask", False), (2, 1, 64, 48, "causal_f16", False),
          (2, 2, 90, 32, "decode", True), (2, 2, 70, 32, "heads_merged", True)]


@pytest.mark.parametrize("B,H,T,D,how,half", SHAPES)
def test_flash_plan_emulated(B, H, T, D, how, half):
  """The kernel as mapped (EMULATE=CUDA: every thread at once, the MMAs from the shared tiles) agrees with PyTorch's SDPA in
  float32 within bfloat16's rounding, in one kernel mapped by the flash plan."""
  from picograd.engine.compile import _kernels
  arrays = [rnd(B, H, T, D, seed=s) for s in range(3)]
  if how == "decode": arrays[0] = arrays[0][..., -1:, :]  # one query row: its loop is dropped in lowering
  if half: arrays = [torch.tensor(a).bfloat16().float().numpy() for a in arrays]
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0):
    q, k, v = (Tensor(a, device="PYTHON") for a in arrays)
    if half: q, k, v = (t.cast(dtypes.bfloat16).realize() for t in (q, k, v))
    _kernels.clear()
    got = sdpa(q, k, v, how).float().numpy()
  np.testing.assert_allclose(got, torch_sdpa(arrays, how), rtol=3e-2, atol=3e-2)
  opts = [k.opts for key, k in _kernels.items() if key[1] == "PYTHON" and key[3] == "CUDA"]
  assert sum("emulating the CUDA mapping flash" in o for o in opts) == 1, opts
  # the query tile of a 16-bit buffer by 16-byte loads, its key tiles by cp.async
  assert any("16-byte load" in o for o in opts) == any("16-byte cp.async copies into shared memory" in o for o in opts) == half


def test_fp32_attention_keeps_stored_scores_on_cuda():
  """Only 16-bit products take the flash plan: float32 attention on CUDA keeps today's kernels (scores stored), as does the
  backward of an autocast one that reads the probabilities."""
  arrays = [rnd(1, 2, 80, 64, seed=s) for s in range(3)]
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v = (Tensor(a) for a in arrays)
    assert len(kernels_for(q.scaled_dot_product_attention(k, v, is_causal=True), "CUDA")) > 1
    fused = kernels_for(sdpa(q, k, v, "causal"), "CUDA")
    # the three 16-bit casts (stored on CUDA: the products read 16-bit tiles; one kernel of three outputs) and the attention
    assert len(fused) == 2 and len(fused[0].src) == 3
    q.requires_grad_(True)
    assert len(kernels_for(sdpa(q, k, v, "causal").float().sum().gradient(q)[0], "CUDA")) > 2


def test_the_scale_joins_the_exp_constant():
  """SDPA's scale (1/8 at D = 64) is not applied to each score: the row max is taken over the unscaled scores and the scale
  joins the exp's FFMA constant (flash._scaled); only the stored row max is multiplied by it (rows g and g + 8 of a lane)."""
  with Context(ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MASKED_MIN=0):
    q, k, v = (Tensor.empty(2, 2, 256, 64, dtype=dtypes.bfloat16).requires_grad_(True) for _ in range(3))
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    grads = (out.float() * Tensor.empty(2, 2, 256, 64)).sum().gradient(q, k, v)
    for roots, stats in (([out.uop], 0), ([out.uop] + [g.uop for g in grads], 2)):
      [flash] = [src for ast in kernels_for_roots(roots, "CUDA") for _, src, _, meta in [render_for_arch(ast, "sm_90")] if meta["plan"] == "flash"]
      assert flash.count("* 0x1.0000000000000p-3f") == stats  # (before: one per score, 32 a lane and key tile)


@pytest.mark.parametrize("longest", [None, "last", "first"])
def test_causal_blocks_run_their_longest_row_tiles_first(longest):
  """Blocks map one to one onto (row tile, head); under a causal bound the heads go in chunks that fit L2 together, and
  within a chunk the longest row tiles (the last ones up to the diagonal, the first ones from it) come first."""
  from picograd.codegen.cuda.flash import row_tiles_in_order, INT, L2_REUSE_BYTES
  from picograd.ir.ops import UOp, graph_rewrite
  from picograd.ir.symbolic import symbolic
  tiles, heads, head_bytes = 4, 6, L2_REUSE_BYTES // 2  # chunks of 2 heads (3 would not fit)
  order = [tuple(graph_rewrite(x, symbolic).arg for x in row_tiles_in_order(UOp.const(INT, b), tiles, heads, head_bytes, longest))
           for b in range(tiles * heads)]
  assert sorted(order) == [(t, h) for t in range(tiles) for h in range(heads)]
  if longest is None: assert order == [(t, h) for h in range(heads) for t in range(tiles)]
  else:
    work = [t + 1 if longest == "last" else tiles - t for t, _ in order]
    for chunk in range(heads // 2):
      part = order[chunk * 2 * tiles:(chunk + 1) * 2 * tiles]
      assert {h for _, h in part} == {2 * chunk, 2 * chunk + 1}
      assert work[chunk * 2 * tiles:(chunk + 1) * 2 * tiles] == sorted(work[chunk * 2 * tiles:(chunk + 1) * 2 * tiles], reverse=True)


@needs_nvrtc
def test_flash_plan_with_int64_loops():
  """At the bench's T = 1024 (64 x 6 heads) the lowered kernel's loops are int64: the plan's int32 tile indices are cast
  where they replace them (a mixed-type index once sent the symbolic rewrite in a circle). Lazy empty tensors: no data."""
  q, k, v = (Tensor.empty(64, 6, 1024, 64, dtype=dtypes.bfloat16) for _ in range(3))
  ast = kernels_for(q.scaled_dot_product_attention(k, v, is_causal=True), "CUDA")[-1]
  kname, src, dims, meta = render_for_arch(ast, "sm_90")
  assert meta["plan"] == "flash" and "long long" in src and dims.global_size == (64 * 6 * 1024 // 64,)
  assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname)).image


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_flash_plan_compiles(arch):
  """The CUDA C of the flash plan compiles with NVRTC (D = 64 in static shared memory, D = 128 in the dynamic block; float16;
  the heads merged in the output)."""
  for T, D, how in ((80, 64, "causal"), (72, 128, "causal"), (70, 32, "causal_f16"), (96, 32, "heads_merged")):
    arrays = [rnd(1, 2, T, D, seed=s) for s in range(3)]
    with Context(ONLINE_SOFTMAX_MIN=0):
      ast = kernels_for(sdpa(*(Tensor(a) for a in arrays), how), "CUDA")[-1]
      kname, src, dims, meta = render_for_arch(ast, arch, sm_count=108 if arch == "sm_80" else 132)
    kind = "f16" if how.endswith("f16") else "bf16"
    assert meta["plan"] == "flash" and f"mma.sync.aligned.m16n8k16.row.col.f32.{kind}.{kind}.f32" in src and "cp.async" in src
    assert dims.local_size == (128,) and dims.global_size == (2 * -(-T // 64),)
    assert re.search(r"for \(int r\d+ = 0; r\d+ < v\d+; r\d+\+\+\)", src)  # the key tiles up to the diagonal
    lib = cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, arch, kname))
    assert lib.kind in ("cubin", "ptx") and lib.image


@needs_gpu
@pytest.mark.parametrize("B,H,T,D,how", [(2, 3, 200, 64, "causal"), (1, 2, 256, 128, "plain"), (2, 2, 96, 64, "by_hand"), (1, 2, 136, 64, "mask"),
                                         (2, 2, 130, 32, "causal_f16"), (1, 2, 100, 64, "float_mask"), (2, 6, 256, 64, "heads_merged")])
def test_flash_plan_gpu(B, H, T, D, how):
  """On the GPU: the flash kernel against PyTorch's SDPA (float32, on the CPU) on the same data."""
  from picograd.engine.compile import _kernels
  _kernels.clear()
  arrays = [rnd(B, H, T, D, seed=s) for s in range(3)]
  with Context(ONLINE_SOFTMAX_MIN=0, DEBUG=0):
    got = sdpa(*(Tensor(a, device="CUDA") for a in arrays), how).float().numpy()
  np.testing.assert_allclose(got, torch_sdpa(arrays, how), rtol=3e-2, atol=3e-2)
  assert any(k.opts and k.opts[0] == "map flash" for key, k in _kernels.items() if key[1] == "CUDA")
