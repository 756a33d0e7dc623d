"""Attention's backward on CUDA without T x T buffers (engine/recompute.py and engine/reassociate.py for 16-bit products,
schedule.TENSOR_CORE_RECOMPUTE_DEVICES) and its kernels on tensor cores (codegen/cuda/flash_bwd.py, the `recomputed` plan):
checked under EMULATE=CUDA on the schedule and against PyTorch's SDPA gradients, and compiled by NVRTC for sm_90."""
import re
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor, dtypes, Context
from picograd.engine import realize, schedule
from picograd.engine.compile import _kernels
from picograd.engine.realize import _normalize
from cuda_marks import cuda_rt, needs_gpu, needs_nvrtc
from picograd.codegen.cuda import render_for_arch

B, H, T, D = 1, 2, 80, 32  # T not a multiple of the 64-row tiles


@pytest.fixture(autouse=True)
def recomputing_on_cuda(monkeypatch):
  """The rule on for CUDA (the default), with no schedule cached without it."""
  monkeypatch.setattr(schedule, "TENSOR_CORE_RECOMPUTE_DEVICES", {"CUDA"})
  monkeypatch.setattr(realize, "_templates", {})


def _arrays(shape: tuple[int, ...] = (B, H, T, D), seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def _attention(q, k, v, how: str):
  with picograd.autocast(dtypes.float16 if how.endswith("f16") else dtypes.bfloat16):
    if how == "by_hand": return ((q @ k.transpose(-2, -1)) * (1 / np.sqrt(q.shape[-1]))).softmax(-1) @ v
    return q.scaled_dot_product_attention(k, v, is_causal=how.startswith("causal"))


def _torch(arrays: list[np.ndarray], how: str) -> list[np.ndarray]:
  q, k, v = (torch.tensor(a, requires_grad=True) for a in arrays[:3])
  out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=how.startswith("causal"))
  (out * torch.tensor(arrays[3])).sum().backward()
  return [out.detach().numpy()] + [t.grad.numpy() for t in (q, k, v)]  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["causal", "plain", "by_hand", "causal_f16"])
def test_attention_training_step_without_score_buffers(how):
  """Forward and backward of autocast's attention, as mapped for the GPU: no B*H*T*T buffer, the softmax gradient's row term
  read from O (sum_d dO * O: one value per query from two B*H*T*D buffers), O with the row max and sum in one kernel (the
  flash plan's running max, storing all three), dQ, and dK with dV in one kernel (two outputs over one pass of the scores)
  on tensor cores (the recomputed plan; causal: tiles past or before the diagonal skipped), values and gradients within
  bfloat16's rounding of PyTorch's float32 SDPA."""
  arrays = _arrays()
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
    q, k, v = (Tensor(a, device="PYTHON", requires_grad=True) for a in arrays[:3])
    out = _attention(q, k, v, how)
    grads = (out.float() * Tensor(arrays[3], device="PYTHON")).sum().gradient(q, k, v)
    steps = picograd.schedule(out, *grads)
    assert all(b.size < B * H * T * T for s in steps for b in s.buffers)
    # O with the max and sum, dO's 16-bit cast, the row term, dQ, dK with dV
    assert len(steps) == 5
    assert any(s.buffers[0].size == B * H * T and sum(b.size == B * H * T * D for b in s.buffers[1:]) == 2 for s in steps)
    _kernels.clear()
    out.realize(*grads)
    got = [out.float().numpy()] + [g.numpy() for g in grads]
  opts = [k.opts for key, k in _kernels.items() if key[1] == "PYTHON" and key[3] == "CUDA"]
  assert sum("emulating the CUDA mapping recomputed" in o for o in opts) == 2, opts
  assert sum(any("2 outputs" in x for x in o) for o in opts) == 1, opts
  assert sum(any("64 columns and 2 row statistics" in x for x in o) for o in opts) == 0, opts  # (D = 32 here)
  assert sum(any("32 columns and 2 row statistics" in x for x in o) for o in opts) == 1, opts
  skipped = [o for o in opts if any("causal diagonal skipped" in x for x in o)]
  assert len(skipped) == (3 if how.startswith("causal") else 0)
  _close_to_torch(got, arrays, how)


def test_row_term_reads_the_16_bit_output():
  """With 16-bit q, k, v and dO (the bench's and the GPT's step), the row term sum_d dO * O reads O as the graph rounds it,
  the bfloat16 output the forward stores anyway. The CUDA schedule: four kernels (O with the max and sum, the row term, dQ,
  dK with dV), no float32 copy of O and no kernel that casts or copies it (lazy empty tensors: scheduled only; dO, an
  empty tensor, is a kernel that reads nothing, left out). Under EMULATE=CUDA, values and gradients as PyTorch's."""
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v, g = (Tensor.empty(64, 6, 256, 64, dtype=dtypes.bfloat16) for _ in range(4))
    for t in (q, k, v): t.requires_grad = True
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    roots, _ = _normalize([out.uop] + [t.uop for t in out.gradient(q, k, v, gradient=g)])
    template = schedule.create_template(roots, ["CUDA"] * len(roots))
  computing = [kern for kern in template.kernels if kern.ast is not None and len(kern.bindings) > kern.outputs]
  assert len(computing) == 4, [[(t.kind, t.index) for t in kern.bindings] for kern in computing]
  assert not any(t.dtype == dtypes.float32 and t.size == 64 * 6 * 256 * 64 for t in template.temps)
  arrays = _arrays()
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
    q, k, v, g = (Tensor(a, device="PYTHON").cast(dtypes.bfloat16).realize() for a in arrays)
    for t in (q, k, v): t.requires_grad = True
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    grads = out.gradient(q, k, v, gradient=g)
    out.realize(*grads)
    got = [out.float().numpy()] + [t.float().numpy() for t in grads]
  _close_to_torch(got, [torch.tensor(a).bfloat16().float().numpy() for a in arrays], "causal")


def test_dropout_matches_the_unmapped_kernels():
  """With dropout (the GPT's training step) the mask is drawn inside every kernel over recomputed scores from the counter RNG:
  the mapped kernels (EMULATE=CUDA) agree with the PYTHON device's own on the same seed (the same values on every device)."""
  arrays = _arrays()
  results = []
  for emulate in ("CUDA", ""):
    with Context(EMULATE=emulate, ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
      Tensor.manual_seed(3)
      q, k, v = (Tensor(a, device="PYTHON", requires_grad=True) for a in arrays[:3])
      with picograd.autocast(dtypes.bfloat16):
        out = q.scaled_dot_product_attention(k, v, is_causal=True, dropout_p=0.3)
      grads = (out.float() * Tensor(arrays[3], device="PYTHON")).sum().gradient(q, k, v)
      _kernels.clear()
      out.realize(*grads)
      results.append([out.float().numpy()] + [g.numpy() for g in grads])
      # (O's weights carry the dropout mask, which the flash plan does not take: O keeps its own kernel beside the row max and
      # sum, dQ, and dK with dV)
      if emulate: assert sum("emulating the CUDA mapping recomputed" in k.opts for k in _kernels.values()) == 3
  for name, a, want in zip(("out", "dq", "dk", "dv"), *results):
    np.testing.assert_allclose(a, want, rtol=3e-2, atol=3e-2 * float(np.abs(want).max()), err_msg=name)


def _close_to_torch(got: list[np.ndarray], arrays: list[np.ndarray], how: str) -> None:
  for name, a, want in zip(("out", "dq", "dk", "dv"), got, _torch(arrays, how)):
    np.testing.assert_allclose(a, want, rtol=3e-2, atol=3e-2 * float(np.abs(want).max()), err_msg=name)


@needs_gpu
@pytest.mark.parametrize("shape,how", [((2, 3, 200, 64), "causal"), ((1, 4, 520, 64), "causal"), ((1, 2, 256, 128), "plain"),
                                       ((2, 2, 96, 64), "by_hand")])
def test_recomputed_plan_gpu(shape, how):
  """On the GPU: forward and backward with the recomputed plan against PyTorch's SDPA (float32, on the CPU) on the same data."""
  _kernels.clear()
  arrays = _arrays(shape)
  with Context(ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0, DEBUG=0):
    q, k, v = (Tensor(a, device="CUDA", requires_grad=True) for a in arrays[:3])
    out = _attention(q, k, v, how)
    grads = (out.float() * Tensor(arrays[3], device="CUDA")).sum().gradient(q, k, v)
    out.realize(*grads)
    got = [out.float().numpy()] + [g.numpy() for g in grads]
  mapped = [k.opts for key, k in _kernels.items() if key[1] == "CUDA" and k.opts and k.opts[0] == "map recomputed"]
  assert len(mapped) == 2 and sum(any("2 outputs" in o for o in opts) for opts in mapped) == 1  # (dK and dV in one kernel)
  assert sum(any("2 row statistics" in o for o in k.opts) for key, k in _kernels.items() if key[1] == "CUDA") == 1
  _close_to_torch(got, arrays, how)


@needs_gpu
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_lone_dv_gpu(dropout):
  """On the GPU: the gradient of v alone (a lone dV kernel, one product sum over tiles from the diagonal on), with and
  without dropout, against the CPU on the same data and seed (the counter RNG draws the same mask on every device). Its
  loop split at the diagonal came out wrong on the H200 (rows 0-7 of every key block; `flash_bwd._splits_at_diagonal`)."""
  arrays = _arrays((2, 3, 256, 64))
  got = []
  for device in ("CUDA", "CPU"):
    _kernels.clear()
    Tensor.manual_seed(3)
    q, k, v = (Tensor(a, device=device, requires_grad=True) for a in arrays[:3])
    with picograd.autocast(dtypes.bfloat16):
      out = q.scaled_dot_product_attention(k, v, is_causal=True, dropout_p=dropout)
    [dv] = (out.float() * Tensor(arrays[3], device=device)).sum().gradient(v)
    got.append(dv.numpy())
  np.testing.assert_allclose(got[0], got[1], rtol=3e-2, atol=3e-2 * float(np.abs(got[1]).max()))


def test_float32_attention_stores_its_scores_on_cuda():
  """Only 16-bit products are recomputed on CUDA (the form a tensor-core plan maps): float32 attention keeps its scores."""
  arrays = _arrays()
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
    q, k, v = (Tensor(a, device="PYTHON", requires_grad=True) for a in arrays[:3])
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    steps = picograd.schedule(*(out * Tensor(arrays[3], device="PYTHON")).sum().gradient(q, k, v))
    assert any(b.size == B * H * T * T for s in steps for b in s.buffers)


def test_head_sizes_the_plan_cannot_take_keep_stored_scores():
  """A head size that is not a multiple of 16 (the MMA's k-step) keeps its scores stored on CUDA."""
  arrays = _arrays((B, H, T, 24))
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
    q, k, v = (Tensor(a, device="PYTHON", requires_grad=True) for a in arrays[:3])
    out = _attention(q, k, v, "causal")
    steps = picograd.schedule(*(out.float() * Tensor(arrays[3], device="PYTHON")).sum().gradient(q, k, v))
    assert any(b.size == B * H * T * T for s in steps for b in s.buffers)


def test_cuda_without_the_rule_stores_scores(monkeypatch):
  """schedule.TENSOR_CORE_RECOMPUTE_DEVICES switches the rule: without CUDA in it the training graph keeps its scores."""
  monkeypatch.setattr(schedule, "TENSOR_CORE_RECOMPUTE_DEVICES", set())
  monkeypatch.setattr(realize, "_templates", {})  # schedules cached with the rule must not be found
  arrays = _arrays()
  with Context(EMULATE="CUDA", ONLINE_SOFTMAX_MIN=0, RECOMPUTE_MIN=0):
    q, k, v = (Tensor(a, device="PYTHON", requires_grad=True) for a in arrays[:3])
    out = _attention(q, k, v, "causal")
    steps = picograd.schedule(*(out.float() * Tensor(arrays[3], device="PYTHON")).sum().gradient(q, k, v))
    assert any(b.size == B * H * T * T for s in steps for b in s.buffers)


@needs_nvrtc
def test_recomputed_plan_compiles():
  """At the bench's shapes (B=64, H=6, T=256, D=64, causal, bfloat16 inputs) the two kernels over recomputed scores (dQ, dK
  with dV) take the plan and O with the row max and sum the flash plan, and their CUDA C compiles with NVRTC for sm_90
  (two product sums, dQ and dK with dV: dynamic shared memory). Lazy empty tensors: no data."""
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v = (Tensor.empty(64, 6, 256, 64, dtype=dtypes.bfloat16).requires_grad_(True) for _ in range(3))
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    grads = (out.float() * Tensor.empty(64, 6, 256, 64)).sum().gradient(q, k, v)
    roots, _ = _normalize([out.uop] + [g.uop for g in grads])
    kernels = [k.ast for k in schedule.create_template(roots, ["CUDA"] * len(roots)).kernels if k.ast is not None]
  plans = []
  for ast in kernels:
    kname, src, dims, meta = render_for_arch(ast, "sm_90")
    plans.append(meta["plan"])
    if meta["plan"] not in ("recomputed", "flash"): continue
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in src and "cp.async" in src and dims.global_size == (64 * 6 * 4,)
    # the per-score work in fast-math forms (codegen/cuda/fast_math.py): one MUFU per exp, no IEEE division per score (the
    # forward's epilogue, O / S once per output, keeps it)
    assert "pg_ex2_approx(" in src and "exp2f(" not in src and ("1.0f /" not in src or meta["plan"] == "flash")
    # the recomputed kernels' loop over s is two: the tiles inside the causal bound (no mask), then those on its diagonal
    key_loops = [n for n in re.findall(r"for \(int r\d+ = 0; r\d+ < (\w+);", src) if n != "1"]
    assert len(key_loops) == (2 if meta["plan"] == "recomputed" else 1), key_loops
    # dP (dO . v) stays the tensor cores' float32 sum inside the loops (flash_bwd._float32_products: no rounding to bf16
    # per value, as FlashAttention keeps it); only the epilogue rounds, the stored outputs
    assert not [line for line in src.splitlines() if line.startswith("    ") and "pg_round_bf16(" in line]
    assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname)).image
  assert plans.count("recomputed") == 2 and plans.count("flash") == 1, plans


def test_dropout_keeps_the_causal_bound():
  """Under dropout the causal gate lies beneath the mask's (which reads the RNG's counter): the recomputed kernels still
  find it and skip the tiles past the diagonal, and all but a lone dV split their loop there (`flash_bwd._splits_at_diagonal`:
  split, that kernel came out wrong on the H200). At the GPT's shapes with dropout the gradient of v alone: O with
  dropout (its statistics in the flash kernel) and dV, each over recomputed scores. Lazy empty tensors: rendered only."""
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v = (Tensor.empty(64, 6, 256, 64, dtype=dtypes.bfloat16).requires_grad_(True) for _ in range(3))
    out = q.scaled_dot_product_attention(k, v, is_causal=True, dropout_p=0.2)
    [dv] = (out.float() * Tensor.empty(64, 6, 256, 64)).sum().gradient(v)
    roots, _ = _normalize([out.uop, dv.uop])
    kernels = [k.ast for k in schedule.create_template(roots, ["CUDA"] * len(roots)).kernels if k.ast is not None]
  loops = {}
  for ast in kernels:
    kname, src, dims, meta = render_for_arch(ast, "sm_90")
    if meta["plan"] != "recomputed": continue
    described = next(o for o in meta["opts"] if o.startswith("recomputed scores"))
    side = "before" if "before the causal diagonal skipped" in described else "past" if "past the causal diagonal skipped" in described else None
    # each loop over tiles of s waits for its tile's copies once an iteration; one more wait drains them before the stores
    loops[side] = src.count("cp.async.wait_group") - 1
  assert loops == {"past": 2, "before": 1}, loops  # O: skipped and split; dV: skipped, one loop


def test_causal_tiles_skipped_with_int64_positions():
  """At B=64, H=6, T=1024 the score tensor has more than 2^31 elements, so lowering indexes with int64 loops and the causal
  gate compares them cast to int32: the flash forward, the training step's forward (flash, storing the row statistics too)
  and its two kernels over recomputed scores still find the diagonal and skip the tiles past (or before) it. Lazy empty
  tensors: rendered only."""
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v = (Tensor.empty(64, 6, 1024, 64, dtype=dtypes.bfloat16).requires_grad_(True) for _ in range(3))
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    grads = (out.float() * Tensor.empty(64, 6, 1024, 64)).sum().gradient(q, k, v)
    kernels = []
    for roots in ([out.uop], [out.uop] + [g.uop for g in grads]):
      normal, _ = _normalize(roots)
      kernels += [k.ast for k in schedule.create_template(normal, ["CUDA"] * len(normal)).kernels if k.ast is not None]
  metas = [render_for_arch(ast, "sm_90")[3] for ast in kernels]
  assert any("long long" in render_for_arch(ast, "sm_90")[1] for ast in kernels)
  attention = [m for m in metas if m["plan"] in ("flash", "recomputed")]
  assert [m["plan"] for m in attention].count("flash") == 2 and [m["plan"] for m in attention].count("recomputed") == 2
  assert all(any("causal diagonal skipped" in o for o in m["opts"]) for m in attention), [m["opts"] for m in attention]
