"""The CUDA renderer: every plan compile-checked with NVRTC (no GPU needed), and checked against numpy on a GPU when there is one."""
import numpy as np
import pytest
import picograd
from hypothesis import given, settings, strategies as st
from picograd import Tensor, dtypes, Context
from picograd.engine.realize import _normalize
from picograd.engine.schedule import create_template

from cuda_marks import cuda_rt, NVRTC_ERROR, needs_nvrtc, needs_gpu  # noqa: E402
from picograd.codegen.cuda import render_for_arch  # noqa: E402


def asts(t: Tensor) -> list:
  """The kernel graphs realizing `t` would run (rendering them needs no device)."""
  roots, _ = _normalize([t.uop])
  return [k.ast for k in create_template(roots, [t.device]).kernels if k.ast is not None]


def rnd(*shape, dtype=np.float32, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# name -> (builder of a CPU tensor graph, the plan its last kernel should get)
CASES = {
  "elementwise": (lambda: Tensor(rnd(64, 32)) * Tensor(rnd(64, 32, seed=1)) + 1, "lanes"),
  "broadcast": (lambda: Tensor(rnd(64, 32)) + Tensor(rnd(32)), "lanes"),
  "odd_elementwise": (lambda: Tensor(rnd(7, 5)).exp() * 0.5, "flat"),
  "reduce_rows": (lambda: Tensor(rnd(128, 512)).sum(1), "block"),
  "reduce_cols": (lambda: Tensor(rnd(512, 4096)).sum(0), "flat"),
  "reduce_long_cols": (lambda: Tensor(rnd(16, 512, 96)).sum((0, 1)), "columns"),  # a bias gradient
  # an embedding's one-hot gradient (with plan.COLUMN_HELD_MAX, each thread holds all 5 token values of its column)
  "onehot_cols": (lambda: Tensor(rnd(4096, 1, 64)).where(Tensor(np.arange(4096, dtype=np.int32) * 7 % 5).reshape(-1, 1, 1) ==
                                                         Tensor.arange(5).reshape(1, 5, 1), 0.0).sum(0), "columns"),
  "reduce_short_rows": (lambda: Tensor(rnd(1024, 256)).sum(1), "row"),  # a warp per row
  "reduce_mixed_rows": (lambda: (Tensor(rnd(4096, 96)) + Tensor(rnd(96, 4096)).T).sum(1), "row"),  # one operand runs along the row
  "full_sum": (lambda: Tensor(rnd(512, 512)).sum(), "split"),
  "full_max": (lambda: Tensor(rnd(512, 512)).max(), "split"),
  "softmax": (lambda: Tensor(rnd(64, 256)).softmax(-1), "row"),
  "softmax_long": (lambda: Tensor(rnd(8, 4096)).softmax(-1), "row"),
  "softmax_odd": (lambda: Tensor(rnd(13, 1001)).softmax(-1), "row"),
  "softmax_tiny": (lambda: Tensor(rnd(50, 10)).softmax(-1), "flat"),
  "log_softmax": (lambda: Tensor(rnd(300, 2048)).log_softmax(-1), "row"),
  "layer_norm": (lambda: Tensor(rnd(9, 768)).layer_norm(768, Tensor(rnd(768)), Tensor(rnd(768))), "row"),
  "layer_norm_2d": (lambda: Tensor(rnd(2, 6, 256)).layer_norm((6, 256)), "row"),
  "center_all": (lambda: Tensor(rnd(40, 8)) - Tensor(rnd(40, 8)).max(), "flat"),  # the full max is realized first
  "logsumexp": (lambda: Tensor(rnd(64, 256)).logsumexp(-1), "block"),
  "matmul_f32": (lambda: Tensor(rnd(256, 64)) @ Tensor(rnd(64, 128)), "matmul"),
  "matmul_odd": (lambda: Tensor(rnd(100, 70)) @ Tensor(rnd(70, 90)), "matmul"),
  # many k-steps and a partial column tile: the refill's index work shared with the stores after the k-loop
  "matmul_f32_edges": (lambda: Tensor(rnd(256, 128)) @ Tensor(rnd(128, 192)), "matmul"),
  "matmul_bias_T": (lambda: Tensor(rnd(128, 96)).linear(Tensor(rnd(80, 96)), Tensor(rnd(80))), "matmul"),
  "matmul_batched": (lambda: Tensor(rnd(3, 128, 64)) @ Tensor(rnd(3, 64, 96)), "matmul"),
  # a weight gradient: summed over two loops (batch, time), few output tiles: split-K
  "matmul_split_k": (lambda: (Tensor(rnd(4, 512, 96)).unsqueeze(-1) * Tensor(rnd(4, 512, 80)).unsqueeze(-2)).sum((0, 1)), "matmul"),
  "matmul_f16_split_k": (lambda: Tensor(rnd(4096, 64, dtype=np.float16)).T @ Tensor(rnd(4096, 96, dtype=np.float16)), "mma"),
  "matmul_f16": (lambda: Tensor(rnd(256, 64, dtype=np.float16)) @ Tensor(rnd(64, 128, dtype=np.float16)), "mma"),
  "matmul_f16_T": (lambda: Tensor(rnd(128, 96, dtype=np.float16)) @ Tensor(rnd(80, 96, dtype=np.float16)).T, "mma"),
  "matmul_bf16": (lambda: Tensor(rnd(128, 64)).cast(dtypes.bfloat16) @ Tensor(rnd(64, 128)).cast(dtypes.bfloat16), "mma"),
  "casts": (lambda: Tensor(rnd(64, 32)).half().float() + Tensor(rnd(64, 32)).cast(dtypes.int32).cast(dtypes.float32), "lanes"),
  "bf16": (lambda: (Tensor(rnd(64, 32)).cast(dtypes.bfloat16) * 3).exp(), "lanes"),
  "f16_reduce": (lambda: Tensor(rnd(64, 64, dtype=np.float16)).max(1), "block"),
  "int_bool": (lambda: (Tensor(np.arange(64, dtype=np.int32)) % 5 < 3).where(Tensor(np.arange(64, dtype=np.int64)) != 0, 7), "flat"),
  "pad": (lambda: Tensor(rnd(16, 16)).pad(((1, 2), (3, 0))), "flat"),
  "gather": (lambda: Tensor(rnd(10, 8))[Tensor(np.array([3, 1, 4, 1], dtype=np.int32))], None),
}


@needs_nvrtc
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("noopt", [0, 1])
def test_renders_and_compiles(name, noopt):
  build, plan = CASES[name]
  with Context(NOOPT=noopt):
    kernels = asts(build())
    assert kernels
    for i, ast in enumerate(kernels):
      kname, src, dims, meta = render_for_arch(ast, "sm_90")
      lib = cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname))
      assert lib.kind in ("cubin", "ptx") and lib.image
      if noopt: assert meta["plan"] == "flat"
      elif plan is not None and i == len(kernels) - 1: assert meta["plan"] == plan, src


@needs_nvrtc
@pytest.mark.parametrize("noopt", [0, 1])
def test_row_kernel_work_is_linear(noopt):
  # softmax is one kernel whose row reductions run once per row: a block or warp per row, or (NOOPT) a thread per row
  with Context(NOOPT=noopt):
    kernels = asts(Tensor(rnd(100, 4096)).softmax(-1))
    assert len(kernels) == 1
    _, src, dims, meta = render_for_arch(kernels[0], "sm_90")
  threads = dims.global_size[0] * dims.local_size[0]
  if noopt: assert meta["plan"] == "flat" and 100 <= threads < 100 + dims.local_size[0]
  else: assert meta["plan"] == "row" and dims.global_size == (100,) and "float4" in src and src.count("pg_block_reduce(") == 3


@needs_nvrtc
@pytest.mark.parametrize("dtype", [dtypes.float16, dtypes.bfloat16])
def test_16bit_lanes_move_8_bytes(dtype):
  """Four lanes of a 16-bit tensor are one 8-byte access (uint2; stores packed by pg_pack4) in elementwise and row kernels
  (autocast's GELU of a product plus its float32 bias, a softmax of 16-bit scores), and an elementwise kernel whose every
  such access is 16-bit takes eight lanes, 16 bytes (pg_pack8): compiled, and emulated against the CPU."""
  x, b = rnd(64, 96), rnd(96)
  def gelu(dev: str) -> Tensor: return (Tensor(x, device=dev).cast(dtype).realize() + Tensor(b, device=dev)).gelu().cast(dtype)
  def softmax(dev: str) -> Tensor: return Tensor(x, device=dev).cast(dtype).realize().float().softmax(-1)
  def scaled(dev: str) -> Tensor: return (Tensor(x, device=dev).cast(dtype).realize() * 3).exp()
  for fn, plan, accesses, packed in ((gelu, "lanes", ("8-byte load", "16-byte load", "8-byte store"), "pg_pack4("),
                                     (softmax, "row", ("8-byte load",), None), (scaled, "lanes", ("16-byte load", "16-byte store"), "pg_pack8(")):
    kname, src, dims, meta = render_for_arch(asts(fn("CPU"))[-1], "sm_90")
    assert meta["plan"] == plan and all(a in meta["opts"] for a in accesses), meta["opts"]
    body = src[src.index('extern "C"'):]
    assert ("uint4" if packed == "pg_pack8(" else "uint2") in body and (packed is None or packed in body)
    if not NVRTC_ERROR: assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname)).image
    with Context(EMULATE="CUDA"):
      got = fn("PYTHON").float().numpy()
    np.testing.assert_allclose(got, fn("CPU").float().numpy(), rtol=1e-2, atol=1e-3)  # (one 16-bit rounding step apart at most)


@needs_nvrtc
def test_split_k_plan():
  # few output tiles over a long k: the blocks split k and the last one of each tile adds the partials in order
  for name in ("matmul_split_k", "matmul_f16_split_k"):
    _, src, dims, meta = render_for_arch(asts(CASES[name][0]())[-1], "sm_90")
    assert any("split-K over" in o for o in meta["opts"]) and "atomicAdd" in src and "__ldcg" in src, name
  _, src, dims, meta = render_for_arch(asts(CASES["matmul_f32"][0]())[-1], "sm_90", sm_count=1)  # as many tiles as SMs: no split
  assert not any("split-K" in o for o in meta["opts"]) and "atomicAdd" not in src


def test_linearize_emits_outer_loop_work_before_inner_loops():
  # a reduction over two loops: what needs only the outer one (a tile staged once per k-step, here a load) is emitted
  # between the two RANGEs, not inside the inner loop
  from picograd.ir.ops import UOp, Ops
  from picograd.codegen.linearize import linearize
  p0, p1 = (UOp(Ops.PARAM, dtypes.float32, (), (i, 64)) for i in range(2))
  outer, inner = UOp(Ops.RANGE, dtypes.int32, (), (0, 8, "reduce")), UOp(Ops.RANGE, dtypes.int32, (), (1, 8, "reduce"))
  a, b = UOp(Ops.LOAD, dtypes.float32, (p1, outer)), UOp(Ops.LOAD, dtypes.float32, (p1, inner * 8))
  total = UOp(Ops.REDUCE, dtypes.float32, (a * b, outer, inner), Ops.ADD)
  program = linearize(UOp(Ops.SINK, dtypes.void, (UOp(Ops.STORE, dtypes.void, (p0, UOp.const(dtypes.int32, 0), total)),)))
  at = {u: i for i, u in enumerate(program)}
  assert at[outer] < at[a] < at[inner] < at[b]


def test_linearize_splits_a_loop_in_two_parts():
  """A reduction over RANGE(count, split) is two loops adding into one accumulator: the first runs `split` iterations with
  FIRST_PART folded to true, the second the rest, its index offset by `split`, with it false (the attention backward's
  tiles inside the causal bound skip the mask: codegen/cuda/flash.py `split_at_diagonal`)."""
  from picograd.ir.ops import UOp, Ops
  from picograd.codegen.linearize import linearize
  p0, p1, p2 = (UOp(Ops.PARAM, dtypes.float32, (), (i, 64)) for i in range(3))
  count, split = (UOp(Ops.LOAD, dtypes.int32, (UOp(Ops.PARAM, dtypes.int32, (), (3 + i, 1)), UOp.const(dtypes.int32, 0))) for i in range(2))
  loop = UOp(Ops.RANGE, dtypes.int32, (count, split), (0, 16, "reduce"))
  term = UOp(Ops.FIRST_PART, dtypes.bool, (loop,)).where(UOp(Ops.LOAD, dtypes.float32, (p1, loop)), UOp(Ops.LOAD, dtypes.float32, (p2, loop)))
  total = UOp(Ops.REDUCE, dtypes.float32, (term, loop), Ops.ADD)
  program = linearize(UOp(Ops.SINK, dtypes.void, (UOp(Ops.STORE, dtypes.void, (p0, UOp.const(dtypes.int32, 0), total)),)))
  loops = [u for u in program if u.op is Ops.RANGE]
  [acc] = [u for u in program if u.op is Ops.DEFINE_ACC]
  assert len(loops) == 2 and loops[0].src == (split,) and acc.src == tuple(loops)
  assert not any(u.op is Ops.FIRST_PART or u.op is Ops.WHERE for u in program)
  # the first part reads p1 at its own index, the second p2 at its index plus the split
  loads = [u for u in program if u.op is Ops.LOAD and u.src[0] in (p1, p2)]
  assert [(u.src[0], u.src[1]) for u in loads] == [(p1, loops[0]), (p2, loops[1] + split)] or \
    [(u.src[0], u.src[1]) for u in loads] == [(p1, loops[0]), (p2, split + loops[1])]
  accumulates = [u for u in program if u.op is Ops.ACCUMULATE]
  assert len(accumulates) == 2 and all(u.src[0] is acc for u in accumulates)
  at = {u: i for i, u in enumerate(program)}
  assert at[loops[0]] < at[accumulates[0]] < at[loops[1]] < at[accumulates[1]]


def test_matmul_plan_is_an_ir_pass():
  """The SIMT product is mapped in the IR (codegen/cuda/tiling.py): DEBUG=3's list names its tiles, shared memory and
  register tile; the body has one barrier per k-step and 16-byte loads of the row-major operands."""
  _, src, dims, meta = render_for_arch(asts(CASES["matmul_f32"][0]())[-1], "sm_90", sm_count=1)
  opts, body = meta["opts"], src[src.index('extern "C"'):]
  assert meta["plan"] == "matmul" and opts[0] == "map matmul" and "64 accumulators per thread" in opts, opts
  assert sum("shared memory tile of 2112 float32 values" in o for o in opts) == 1 and "block barrier once per k-step" in opts
  assert body.count("__syncthreads();") == 1 and "float4" in body and dims.local_size == (256,) and dims.global_size == (2,)


def test_tensor_core_plan_is_an_ir_pass():
  """The tensor-core products are mapped in the IR too: FRAGMENTs (ldmatrix) and MMAs (mma.sync) over shared tiles laid out
  as the operands lie in memory, the outputs staged through shared memory; long k-loops fetch their 16-bit operands three
  stages ahead by cp.async."""
  for name, trans in (("matmul_f16", ".x4.trans"), ("matmul_f16_T", ".x4.shared")):
    _, src, dims, meta = render_for_arch(asts(CASES[name][0]())[-1], "sm_90")
    body = src[src.index('extern "C"'):]
    assert meta["plan"] == "mma" and meta["opts"][0] == "map mma" and "64 accumulators per thread" in meta["opts"], meta["opts"]
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in body and f"ldmatrix.sync.aligned.m8n8{trans}" in body, name
    # one barrier per k-step, and two around the outputs staged through shared memory on their way out
    assert "double-buffered" in meta["opts"][1] and "cp.async" not in body and body.count("__syncthreads();") == 3
  heads = _heads_weight_grad(Tensor(rnd(2, 64, 96, dtype=np.float16)), Tensor(rnd(2, 2, 64, 64, dtype=np.float16)))
  _, src, dims, meta = render_for_arch(asts(heads)[-1], "sm_90")
  # both tiles k-major (64 x 136 halves), none along k (128 x 72, what the per-head operand got before runs of 64 counted)
  assert "shared memory tile of 17408 float16 values" in meta["opts"] and "shared memory tile of 18432 float16 values" not in meta["opts"]
  assert "16-byte load" in meta["opts"]
  long_k = Tensor(rnd(128, 2048, dtype=np.float16)) @ Tensor(rnd(2048, 128, dtype=np.float16))
  _, src, dims, meta = render_for_arch(asts(long_k)[-1], "sm_90", sm_count=1)  # one tile on one SM, no split: k-steps of 64
  assert "k-steps of 64 through double-buffered" in meta["opts"][1], meta["opts"]
  # split over more SMs (a weight gradient's grid): k-steps of 32, three cp.async stages (8192 / 4 / 32 = 64 steps a block)
  longer_k = Tensor(rnd(128, 8192, dtype=np.float16)) @ Tensor(rnd(8192, 128, dtype=np.float16))
  _, src, dims, meta = render_for_arch(asts(longer_k)[-1], "sm_90", sm_count=2)
  body = src[src.index('extern "C"'):]
  assert "k-steps of 32 through 3 shared-memory stages" in meta["opts"][1] and "split-K over 4" in meta["opts"][1], meta["opts"]
  assert "cp.async.cg.shared.global" in body and "cp.async.wait_group 1;" in body
  assert "cp.async.wait_group 0;" in body  # before the tiles' memory holds the outputs


@pytest.mark.parametrize("transposed", [False, True])
def test_async_stages_emulated(transposed, monkeypatch):
  """The cp.async pipeline's IR (copies fetched two steps ahead, commits, waits, the staged outputs) runs right under
  EMULATE=CUDA, for tiles copied as they lie both ways round. (Shapes no other test uses: the kernel caches do not know
  the step threshold.)"""
  import picograd.codegen.cuda.plan as plan
  from picograd.engine.compile import _kernels
  monkeypatch.setattr(plan, "ASYNC_MIN_STEPS", 1)
  monkeypatch.setattr(plan, "MMA_STEP", 32)
  a, b = rnd(144, 200, dtype=np.float16), rnd(200, 136, dtype=np.float16)
  _kernels.clear()
  with Context(EMULATE="CUDA"):
    x, y = Tensor(a.T.copy() if transposed else a, device="PYTHON"), Tensor(b, device="PYTHON")
    got = ((x.T if transposed else x) @ y).numpy()
    # an operand computed on its way in (relu) keeps the register prefetch, refilling stage (kt + 1) % 3 beside the copies
    masked = ((x.T if transposed else x).relu() @ y).numpy()
  np.testing.assert_allclose(got.astype(np.float32), a.astype(np.float32) @ b.astype(np.float32), rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(masked.astype(np.float32), np.maximum(a, 0).astype(np.float32) @ b.astype(np.float32), rtol=2e-2, atol=2e-2)
  assert any("3 shared-memory stages" in o for k in _kernels.values() for o in k.opts)


def test_emulated_copies_land_at_their_wait(monkeypatch):
  """EMULATE=CUDA lands a cp.async copy only at the wait that covers it (codegen/python.py `_barrier`), the latest a GPU
  may: the 3-stage pipeline is right as planned, and wrong when every wait leaves one more group in flight (a stage read
  before its copy lands)."""
  import picograd.codegen.cuda.plan as plan
  import picograd.codegen.python as python_renderer
  from picograd.engine.compile import _kernels
  from picograd.ir.ops import UOp, Ops
  monkeypatch.setattr(plan, "ASYNC_MIN_STEPS", 1)
  monkeypatch.setattr(plan, "MMA_STEP", 32)
  a, b = rnd(144, 200, dtype=np.float16), rnd(200, 136, dtype=np.float16)
  want = a.astype(np.float32) @ b.astype(np.float32)
  def product() -> np.ndarray:
    _kernels.clear()
    with Context(EMULATE="CUDA", CACHE=0): return (Tensor(a, device="PYTHON") @ Tensor(b, device="PYTHON")).numpy().astype(np.float32)
  np.testing.assert_allclose(product(), want, rtol=2e-2, atol=2e-2)
  render = python_renderer.render_python
  def one_group_short(name, program):
    return render(name, [UOp(u.op, u.dtype, u.src, ("wait", u.arg[1] + 1)) if u.op is Ops.BARRIER and isinstance(u.arg, tuple)
                         and u.arg[0] == "wait" else u for u in program])
  monkeypatch.setattr(python_renderer, "render_python", one_group_short)
  assert not np.allclose(product(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("transposed", [False, True])
def test_tf32_plan_emulated(transposed):
  """TF32 tensor-core tiles run under EMULATE=CUDA: operands rounded to 10-bit mantissas, float32 sums."""
  from picograd.engine.compile import _kernels
  a, b = rnd(96, 130), rnd(96 if transposed else 130, 72, seed=1)
  _kernels.clear()
  try:
    picograd.set_float32_matmul_precision("high")
    with Context(EMULATE="CUDA"):
      x, y = Tensor(a, device="PYTHON"), Tensor(b, device="PYTHON")
      got = ((x.T if transposed else x) @ y).numpy()
  finally:
    picograd.set_float32_matmul_precision("highest")
  ref = (a.T if transposed else a).astype(np.float64) @ b
  np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)
  assert np.abs(got - ref).max() > 1e-5  # rounded to TF32: not the float32 product
  assert any("emulating the CUDA mapping mma_tf32" in o for k in _kernels.values() for o in k.opts)


@needs_nvrtc
@pytest.mark.parametrize("name", ["matmul_f32", "matmul_odd", "matmul_bias_T", "matmul_batched", "matmul_split_k"])
def test_tf32_plan_only_when_allowed(name):
  """float32 products use TF32 tensor cores only after set_float32_matmul_precision("high"), and compile for sm_80/sm_90."""
  import picograd
  ast = asts(CASES[name][0]())[-1]
  assert render_for_arch(ast, "sm_90")[3]["plan"] == "matmul"
  try:
    picograd.set_float32_matmul_precision("high")
    assert picograd.get_float32_matmul_precision() == "high"
    for arch in ("sm_80", "sm_90"):
      kname, src, dims, meta = render_for_arch(ast, arch)
      assert meta["plan"] == "mma_tf32" and "m16n8k8.row.col.f32.tf32.tf32.f32" in src and "cvt.rna.tf32.f32" in src
      cuda_rt.compile_cuda_source(src, arch, kname)
  finally:
    picograd.set_float32_matmul_precision("highest")
  assert render_for_arch(ast, "sm_90")[3]["plan"] == "matmul"
  with pytest.raises(ValueError, match="highest"): picograd.set_float32_matmul_precision("low")


@needs_gpu
def test_gpu_tf32_matmul():
  import picograd
  a, b, c = rnd(300, 200), rnd(200, 130, seed=1), rnd(130, seed=2)
  exact = a.astype(np.float64) @ b.astype(np.float64) + c
  try:
    picograd.set_float32_matmul_precision("high")
    got = (Tensor(a, device="CUDA") @ Tensor(b, device="CUDA") + Tensor(c, device="CUDA")).numpy()
    wgrad = _run(lambda x, y: (x.T @ y), [rnd(3000, 96), rnd(3000, 64, seed=1)], "CUDA")  # split-K
    # sm_90: B N-major by TMA into registers (the tile transposed), and both K-major, over 40 k-steps
    xs, ys = rnd(384, 1280, seed=3), rnd(1280, 256, seed=4)
    nn, nt = (_run(fn, [xs, ys], "CUDA") for fn in (lambda x, y: x @ y, lambda x, y: x @ y.T.contiguous().T))
  finally:
    picograd.set_float32_matmul_precision("highest")
  for out in (nn, nt): np.testing.assert_allclose(out, xs.astype(np.float64) @ ys, rtol=1e-2, atol=0.1)
  np.testing.assert_allclose(got, exact, rtol=1e-2, atol=2e-2)
  assert np.abs(got - exact).max() > 0  # TF32 rounds its inputs: not bit-equal to a float64 product
  np.testing.assert_allclose(wgrad, rnd(3000, 96).T.astype(np.float64) @ rnd(3000, 64, seed=1), rtol=1e-2, atol=0.5)


@needs_nvrtc
def test_compiles_for_older_arch():
  for build, _ in (CASES["matmul_f16"], CASES["full_sum"], CASES["bf16"]):
    for ast in asts(build()):
      kname, src, _, _ = render_for_arch(ast, "sm_80", sm_count=108, max_shared=163 * 1024)
      cuda_rt.compile_cuda_source(src, "sm_80", kname)


# ------------------------------------------------------------------ on the GPU

GPU_CASES = {
  "elementwise": lambda d: (lambda a, b: (a * b + a).exp() * 0.5, [rnd(257, 64), rnd(257, 64, seed=1)]),
  "reduce_rows": lambda d: (lambda a: a.sum(1), [rnd(300, 1000)]),
  "reduce_cols": lambda d: (lambda a: a.sum(0), [rnd(1000, 300)]),
  "max_rows": lambda d: (lambda a: a.max(1), [rnd(64, 4096)]),
  "full_sum": lambda d: (lambda a: a.sum(), [rnd(1024, 1024)]),
  "full_max": lambda d: (lambda a: a.max(), [rnd(999, 1025)]),
  "softmax": lambda d: (lambda a: a.softmax(-1), [rnd(128, 1000)]),
  "softmax_warp_tail": lambda d: (lambda a: a.softmax(-1), [rnd(37, 300)]),
  "softmax_odd": lambda d: (lambda a: a.softmax(-1), [rnd(33, 1001)]),
  "softmax_long": lambda d: (lambda a: a.softmax(-1), [rnd(3, 5000)]),
  "log_softmax": lambda d: (lambda a: a.log_softmax(-1), [rnd(300, 2048)]),
  "layer_norm": lambda d: (lambda a, w, b: a.layer_norm(768, w, b), [rnd(37, 768), rnd(768), rnd(768)]),
  "layer_norm_2d": lambda d: (lambda a: a.layer_norm((6, 256)), [rnd(5, 6, 256)]),
  "center_all": lambda d: (lambda a: a - a.mean(), [rnd(1000, 33)]),
  "softmax_grad": lambda d: (_vjp(lambda t: t.softmax(-1)), [rnd(64, 512), rnd(64, 512, seed=1)]),
  "layer_norm_grad": lambda d: (_vjp(lambda t: t.layer_norm(512)), [rnd(64, 512), rnd(64, 512, seed=1)]),
  "matmul": lambda d: (lambda a, b: a @ b, [rnd(256, 128), rnd(128, 192)]),
  "matmul_odd": lambda d: (lambda a, b: a @ b, [rnd(100, 70), rnd(70, 130)]),
  "matmul_linear": lambda d: (lambda a, w, c: a.linear(w, c).relu(), [rnd(130, 96), rnd(80, 96), rnd(80)]),
  "matmul_batched": lambda d: (lambda a, b: a @ b, [rnd(3, 128, 64), rnd(3, 64, 96)]),
  "matmul_split_k": lambda d: (lambda a, b: (a.unsqueeze(-1) * b.unsqueeze(-2)).sum((0, 1)), [rnd(5, 300, 70), rnd(5, 300, 130)]),
  "matmul_split_k_bias": lambda d: (lambda a, b, c: a.T @ b + c, [rnd(3000, 96), rnd(3000, 64), rnd(64)]),
  "matmul_f16_split_k": lambda d: (lambda a, b: a.T @ b, [rnd(2000, 64, dtype=np.float16), rnd(2000, 72, dtype=np.float16)]),
  "reduce_long_cols": lambda d: (lambda a: a.sum((0, 1)) * 2 + 1, [rnd(16, 300, 96)]),
  "max_long_cols": lambda d: (lambda a: a.max(0), [rnd(5000, 64)]),
  "reduce_short_rows": lambda d: (lambda a: a.max(1), [rnd(1000, 200)]),
  "reduce_mixed_rows": lambda d: (lambda a, b: (a + b.T).sum(1), [rnd(3000, 100), rnd(100, 3000)]),
  "cross_entropy": lambda d: (lambda a: a.log_softmax(-1).sum(), [rnd(4096, 65)]),
  "matmul_f16": lambda d: (lambda a, b: a @ b, [rnd(256, 96, dtype=np.float16), rnd(96, 200, dtype=np.float16)]),
  "matmul_f16_T": lambda d: (lambda a, b: a @ b.T, [rnd(128, 96, dtype=np.float16), rnd(72, 96, dtype=np.float16)]),
  # many k-steps: copies fetched ahead past the last step must land before the tiles' memory is reused for the outputs
  "matmul_f16_long_k": lambda d: (lambda a, b: a @ b, [rnd(256, 1024, dtype=np.float16), rnd(1024, 256, dtype=np.float16)]),
  # the weight gradient of a projection of an attention output stored per head (the GPT's): that operand runs along n in
  # runs of 64 ((n // 64) * T * 64 + n % 64), its tile is copied 16 bytes at a time
  "matmul_f16_heads": lambda d: (_heads_weight_grad, [rnd(2, 64, 96, dtype=np.float16), rnd(2, 2, 64, 64, dtype=np.float16)]),
  "pad": lambda d: (lambda a: a.pad(((1, 2), (3, 0))) * 2, [rnd(16, 16)]),
  # an embedding's one-hot gradient: sum over tokens of where(token == v, dx, 0)
  "onehot_cols": lambda d: (lambda x, tok: x.where(tok.reshape(-1, 1, 1) == Tensor.arange(5, device=x.device).reshape(1, 5, 1), 0.0).sum(0),
                            [rnd(4096, 1, 64), np.arange(4096, dtype=np.int32) * 7 % 5]),
}


def _heads_weight_grad(g: Tensor, x: Tensor) -> Tensor:
  w = Tensor(np.zeros((96, 128), np.float16), device=g.device, requires_grad=True)
  (x.permute(0, 2, 1, 3).reshape(2, 64, 128) @ w.T).backward(g)
  return w.grad


def _vjp(f):
  """fn(a, g): the gradient of f at a along g."""
  def grad(a: Tensor, g: Tensor) -> Tensor:
    a.requires_grad = True
    f(a).backward(g)
    return a.grad
  return grad


def _run(fn, arrays, device):
  return fn(*[Tensor(a, device=device) for a in arrays]).numpy()


@pytest.mark.parametrize("name", list(GPU_CASES))
@pytest.mark.parametrize("noopt", [0, 1])
def test_gpu_mapping_emulated(name, noopt):
  """The GPU mapping passes checked with no GPU: the PYTHON device runs each kernel as mapped onto a GPU, every thread
  at once (EMULATE=CUDA), and agrees with the CPU; kernels of the mapped plans say so in their optimizations."""
  from picograd.engine.compile import _kernels
  fn, arrays = GPU_CASES[name](None)
  ref = _run(fn, arrays, "CPU")
  tol = 2e-2 if any(a.dtype == np.float16 for a in arrays) else 1e-4
  _kernels.clear()  # so that the kernels below are this case's own
  with Context(EMULATE="CUDA", NOOPT=noopt):
    got = _run(fn, arrays, "PYTHON")
  np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=tol, atol=tol)
  emulated = [k for key, k in _kernels.items() if key[1] == "PYTHON" and key[3] == "CUDA"]
  mapped = [k for k in emulated if any(o.startswith("emulating the CUDA mapping") for o in k.opts)]
  assert emulated
  assert len(mapped) == len(emulated), [k.opts for k in emulated]  # every kernel is mapped by an IR pass


@needs_gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_matches_cpu(name):
  fn, arrays = GPU_CASES[name](None)
  ref = _run(fn, arrays, "CPU")
  tol = 2e-2 if any(a.dtype == np.float16 for a in arrays) else 1e-4
  got = _run(fn, arrays, "CUDA")
  np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=tol, atol=tol)
  with Context(NOOPT=1):
    np.testing.assert_allclose(_run(fn, arrays, "CUDA").astype(np.float32), got.astype(np.float32), rtol=tol, atol=tol)


@needs_gpu
def test_gpu_bfloat16_matmul_and_casts():
  a, b = rnd(128, 64), rnd(64, 128, seed=1)
  x, y = Tensor(a, device="CUDA").cast(dtypes.bfloat16), Tensor(b, device="CUDA").cast(dtypes.bfloat16)
  out = (x @ y).float().numpy()
  ref = (Tensor(a).cast(dtypes.bfloat16) @ Tensor(b).cast(dtypes.bfloat16)).float().numpy()
  np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)
  assert (x.float().numpy() == Tensor(a).cast(dtypes.bfloat16).float().numpy()).all()  # rounding matches the CPU exactly


@needs_gpu
def test_gpu_split_reduction_runs_twice():
  # the last-block-finishes scheme must leave its counters ready for the next launch
  a = rnd(2048, 2048)
  t = Tensor(a, device="CUDA")
  first, second = t.sum().numpy(), (t * 1).sum().numpy()
  np.testing.assert_allclose(first, a.sum(dtype=np.float64), rtol=1e-4)
  np.testing.assert_allclose(second, first, rtol=1e-6)


@needs_gpu
def test_gpu_split_k_runs_twice():
  # split-K matmul tiles take tickets: the counters must be ready for the next launch, and the sum is deterministic
  a, b = rnd(4096, 96), rnd(4096, 80, seed=1)
  x, y = Tensor(a, device="CUDA"), Tensor(b, device="CUDA")
  first, second = (x.T @ y).numpy(), (x.T @ y).numpy()
  np.testing.assert_allclose(first, a.T.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
  assert (first == second).all()


@needs_gpu
def test_gpu_columns_reduction_runs_twice():
  # the columns plan's tickets too must be reset for the next launch; the partials are added in a fixed order
  a = rnd(64, 256, 384)
  t = Tensor(a, device="CUDA")
  first, second = t.sum((0, 1)).numpy(), (t * 1).sum((0, 1)).numpy()
  np.testing.assert_allclose(first, a.sum((0, 1), dtype=np.float64), rtol=1e-4, atol=1e-3)
  assert (first == second).all()


@needs_gpu
def test_gpu_to_and_from_device():
  a = rnd(5, 7)
  t = Tensor(a).to("CUDA")
  assert t.device == "CUDA"
  np.testing.assert_allclose((t + 1).to("CPU").numpy(), a + 1, rtol=1e-6)
  with pytest.raises(Exception, match="(?i)device"):
    (t + Tensor(a)).realize()


@needs_gpu
def test_gpu_debug_shows_cuda_source_and_ptx(capsys):
  a = Tensor(rnd(33, 17), device="CUDA")
  with Context(DEBUG=6, CACHE=0):
    (a * 3 - 1.25).sqrt().realize()
  out = capsys.readouterr().out
  assert "__global__" in out and ".entry" in out and "GB/s" in out


_REDUCTIONS = {"sum": lambda t, a: t.sum(a), "max": lambda t, a: t.max(a), "mean": lambda t, a: t.mean(a),
               "softmax": lambda t, a: t.softmax(a), "log_softmax": lambda t, a: t.log_softmax(a), "logsumexp": lambda t, a: t.logsumexp(a),
               "sum_of_squares": lambda t, a: (t * t).sum(a), "scaled_rows": lambda t, a: t * t.sum(a, keepdim=True),
               "full_sum": lambda t, a: t.sum(), "full_max": lambda t, a: t.max(), "leading_sum": lambda t, a: t.reshape(t.shape[0], -1).sum(0)}


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(shape=st.lists(st.sampled_from([1, 3, 4, 31, 32, 64, 100, 257, 1024, 3000]), min_size=1, max_size=3),
       name=st.sampled_from(sorted(_REDUCTIONS)), axis_seed=st.integers(0, 2), seed=st.integers(0, 3))
def test_gpu_mapping_emulated_random_reductions(shape, name, axis_seed, seed):
  """Random reductions (sizes around a warp, a block and a split) through the GPU mapping passes, emulated with no GPU."""
  if np.prod(shape) > 400_000: shape = shape[-2:]
  axis = axis_seed % len(shape)
  a = rnd(*shape, seed=seed)
  ref = _REDUCTIONS[name](Tensor(a, device="CPU"), axis).numpy()
  with Context(EMULATE="CUDA"):
    got = _REDUCTIONS[name](Tensor(a, device="PYTHON"), axis).numpy()
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max(initial=0))))


# both operand layouts of the tiles: K-major (x @ W.T) and MN-major (A contiguous along m, B along n); shapes no other test
# uses (the disk cache of rendered kernels keys an emulated kernel by its graph, not by the patched target)
WGMMA_CASES = {
  "T": (lambda a, b: a @ b.T, [rnd(130, 200, dtype=np.float16), rnd(136, 200, dtype=np.float16)], (False, False)),
  "N": (lambda a, b: a @ b, [rnd(240, 96, dtype=np.float16), rnd(96, 200, dtype=np.float16)], (False, True)),
  "dW": (lambda a, b: a.T @ b, [rnd(300, 96, dtype=np.float16), rnd(300, 136, dtype=np.float16)], (True, True)),
  # a weight gradient's long k over few tiles: split-K (four chunks of 512, partial tiles combined by the last block)
  "dW_split": (lambda a, b: a.T @ b, [rnd(2048, 96, dtype=np.float16), rnd(2048, 136, dtype=np.float16)], (True, True)),
  # attention's output read from its per-head layout (k = head x 64 + d): TMA boxes over 4-dim tensor maps (d, t, head, b)
  "heads": (lambda a, b: (a.permute(0, 2, 1, 3) if isinstance(a, Tensor) else a.transpose(0, 2, 1, 3)).reshape(2, 128, 128) @ b,
            [rnd(2, 2, 128, 64, dtype=np.float16), rnd(128, 136, dtype=np.float16)], (False, True)),
  # N <= 64 (attention's p @ v): tiles of 128 x 64, wgmma m64n64k16
  "pv": (lambda a, b: a @ b, [rnd(2, 130, 200, dtype=np.float16), rnd(2, 200, 64, dtype=np.float16)], (False, True)),
}


# (split-K grids take the wgmma plan only with TMA)
@pytest.mark.parametrize("name,tma", [(name, tma) for name in WGMMA_CASES for tma in (1, 0) if tma or name != "dW_split"])
def test_wgmma_plan(name, tma, monkeypatch):
  """sm_90a (WGMMA=1 on an H100/H200): 16-bit products on warpgroup MMAs over descriptors of core-matrix tiles, checked
  under EMULATE=CUDA (every layout, tiles by TMA or through the threads; three cp.async stages for one, four with a chain
  left running across k-steps for another) and compiled by NVRTC for sm_90a."""
  import picograd.codegen.cuda as cuda_codegen
  import picograd.codegen.cuda.plan as plan
  from picograd.codegen.cuda.target import CUDATarget
  from picograd.engine.compile import _kernels
  fn, arrays, mn_major = WGMMA_CASES[name]
  monkeypatch.setattr(cuda_codegen, "CUDATarget", lambda *a: CUDATarget("sm_90a"))
  if name == "dW": monkeypatch.setattr(plan, "WGMMA_STAGES", 3)
  if name == "N": monkeypatch.setattr(plan, "WGMMA_STAGES", 4); monkeypatch.setattr(plan, "WGMMA_IN_FLIGHT", 1)
  _kernels.clear()
  with Context(EMULATE="CUDA", TMA=tma):
    got = fn(*[Tensor(a, device="PYTHON") for a in arrays]).numpy()
  ref = fn(*[a.astype(np.float32) for a in arrays])
  np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-2, atol=2e-2)
  [kernel] = [k for k in _kernels.values() if any("wgmma" in o for o in k.opts)]
  for side, mn in zip("AB", mn_major): assert f"f16 descriptors of 128-byte swizzled tiles ({'MN' if mn else 'K'}-major)" in kernel.opts, side
  assert any(o.startswith("TMA copies") for o in kernel.opts) == bool(tma)
  assert any("split-K over 4 blocks" in o for o in kernel.opts) == (name == "dW_split")
  if NVRTC_ERROR: return  # no NVRTC here to compile with
  ast = asts(fn(*[Tensor(a) for a in arrays]))[-1]
  with Context(TMA=tma):
    kname, src, dims, meta = render_for_arch(ast, "sm_90a")
  assert meta["plan"] == "wgmma" and src.count("wgmma.mma_async") == 4
  # TMA: copies by the copy engine, completing on mbarriers (a tensor map per operand); else the threads' writes fenced
  assert ("cp.async.bulk.tensor" in src and "mbarrier.try_wait" in src and len(meta["tensor_maps"]) == 2) if tma else \
    "fence.proxy.async.shared::cta" in src
  assert src.count(f"m64n{64 if name == 'pv' else 128}k16") == 4
  if tma and name == "heads": assert meta["tensor_maps"][0].dims == (64, 128, 2, 2) and "cp.async.bulk.tensor.4d" in src
  assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90a", kname)).image
  assert render_for_arch(ast, "sm_90")[3]["plan"] == "mma"  # plain sm_90 keeps mma.sync


# float32 products under TF32: both operands K-major (x @ W.T), tiles by TMA or through the threads, N <= 64; and B N-major
# (x @ W), computed transposed with B's fragments in registers
TF32_WGMMA_CASES = {
  "T": (lambda a, b: a @ b.T, [rnd(130, 200), rnd(136, 200, seed=1)], True),
  "T_threads": (lambda a, b: a @ b.T, [rnd(130, 200), rnd(136, 200, seed=2)], False),
  "n64": (lambda a, b: a @ b.T, [rnd(130, 72), rnd(64, 72, seed=1)], True),
  "N": (lambda a, b: a @ b, [rnd(140, 96), rnd(96, 200, seed=1)], True),
  "N_threads": (lambda a, b: a @ b, [rnd(140, 96), rnd(96, 136, seed=2)], False),
  "N_batched": (lambda a, b: a @ b, [rnd(2, 100, 64), rnd(2, 64, 128, seed=3)], True),
  "N_split": (lambda a, b: a @ b, [rnd(130, 2048), rnd(2048, 136, seed=4)], True),  # split-K over 4 blocks
}


@pytest.mark.parametrize("name", TF32_WGMMA_CASES)
def test_tf32_wgmma_plan(name, monkeypatch):
  """sm_90a: float32 products with TF32 allowed run on wgmma m64nNk8 over K-major swizzled tiles of 32 floats a row,
  checked under EMULATE=CUDA against float64 (the tensor cores read the top 19 bits of each float) and compiled by NVRTC."""
  import picograd.codegen.cuda as cuda_codegen
  from picograd.codegen.cuda.target import CUDATarget
  from picograd.engine.compile import _kernels
  fn, arrays, tma = TF32_WGMMA_CASES[name]
  monkeypatch.setattr(cuda_codegen, "CUDATarget", lambda *a: CUDATarget("sm_90a"))
  _kernels.clear()
  try:
    picograd.set_float32_matmul_precision("high")
    with Context(EMULATE="CUDA", TMA=int(tma)):
      got = fn(*[Tensor(a, device="PYTHON") for a in arrays]).numpy()
    ast = asts(fn(*[Tensor(a) for a in arrays]))[-1]
    with Context(TMA=int(tma)):
      kname, src, dims, meta = render_for_arch(ast, "sm_90a")
  finally:
    picograd.set_float32_matmul_precision("highest")
  ref = fn(*[a.astype(np.float64) for a in arrays])
  np.testing.assert_allclose(got, ref, rtol=2e-2, atol=5e-2)
  assert np.abs(got - ref).max() > 1e-5  # TF32: not the float32 product
  [kernel] = [k for k in _kernels.values() if any("wgmma" in o for o in k.opts)]
  assert "tf32 descriptors of 128-byte swizzled tiles (K-major)" in kernel.opts
  assert ("tf32 fragments of the MN-major B tile in registers, wgmma's A" in kernel.opts) == name.startswith("N")
  assert any(o.startswith("TMA copies") for o in kernel.opts) == tma
  assert any("split-K over 4 blocks" in o for o in kernel.opts) == (name == "N_split")
  k8 = f"wgmma.mma_async.sync.aligned.m64n{64 if name == 'n64' else 128}k8.f32.tf32.tf32"
  assert meta["plan"] == "wgmma" and src.count(k8) == 4  # four k8 steps of one 128-byte row of k
  # (A from registers, a chain left running: waited for before the next step's fragments are loaded into registers)
  if name == "N": assert src.count("wgmma.wait_group.sync.aligned 0") == 4 + 1 and "wgmma.wait_group.sync.aligned 1" in src
  if not NVRTC_ERROR: assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90a", kname)).image


@pytest.mark.parametrize("name", ["T", "N", "f16"])
def test_wgmma_wide_tiles(name, monkeypatch):
  """Large products take tiles twice as wide (`plan.WIDE_MIN_WAVES` and `WIDE_HALF_MIN_K`, lowered here to 0): each
  warpgroup's wgmma is m64n256, over 128 x 256 output tiles (TF32 both K-major; f16 with B N-major, read transposed) or
  256 x 128 computed transposed (TF32 with B N-major, its fragments in registers); the edges of both sides partial.
  Emulated against float64 and compiled by NVRTC."""
  import picograd.codegen.cuda as cuda_codegen
  import picograd.codegen.cuda.plan as plan
  from picograd.codegen.cuda.target import CUDATarget
  from picograd.engine.compile import _kernels
  monkeypatch.setattr(cuda_codegen, "CUDATarget", lambda *a: CUDATarget("sm_90a"))
  monkeypatch.setattr(plan, "WIDE_MIN_WAVES", 0)
  monkeypatch.setattr(plan, "WIDE_HALF_MIN_K", 0)
  fn = (lambda a, b: a @ b.T) if name == "T" else (lambda a, b: a @ b)
  arrays = [rnd(300, 64), rnd(264, 64, seed=1) if name == "T" else rnd(64, 264 if name == "f16" else 200, seed=1)]
  if name == "f16": arrays = [a.astype(np.float16) for a in arrays]
  _kernels.clear()
  try:
    picograd.set_float32_matmul_precision("high")
    with Context(EMULATE="CUDA", CACHE=0):
      got = fn(*[Tensor(a, device="PYTHON") for a in arrays]).numpy().astype(np.float64)
    kname, src, dims, meta = render_for_arch(asts(fn(*[Tensor(a) for a in arrays]))[-1], "sm_90a")
    narrow = [arrays[0][:100], arrays[1]] if name == "N" else [arrays[0], arrays[1][:64] if name == "T" else arrays[1][:, :64]]
    narrow_src = render_for_arch(asts(fn(*[Tensor(a) for a in narrow]))[-1], "sm_90a")[1]
  finally:
    picograd.set_float32_matmul_precision("highest")
  ref = fn(*[a.astype(np.float64) for a in arrays])
  np.testing.assert_allclose(got, ref, rtol=2e-2, atol=5e-2)
  [kernel] = [k for k in _kernels.values() if any("wgmma" in o for o in k.opts)]
  assert any(("256x128 output tiles" if name == "N" else "128x256 output tiles") in o for o in kernel.opts), kernel.opts
  kind = "f16" if name == "f16" else "tf32"
  assert meta["plan"] == "wgmma" and src.count(f"wgmma.mma_async.sync.aligned.m64n256k{16 if name == 'f16' else 8}.f32.{kind}.{kind}") == 4
  assert dims.global_size == ((2 * 2,) if name == "N" else (3 * 2,))
  if not NVRTC_ERROR: assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90a", kname)).image
  # a product narrower than a wide tile keeps the narrow ones (N = 64: 128 x 64 tiles; M = 100 transposed: 128 x 128)
  assert ("m64n128k8" if name == "N" else "m64n64k") in narrow_src and "m64n256" not in narrow_src


def test_columns_thread_holds_a_short_output_loop(monkeypatch):
  """plan.COLUMN_HELD_MAX: a columns kernel whose short output loop no load moves with (the token values of a one-hot
  gradient) holds all its values in each thread, reading the token and dx once for all of them; emulated against the CPU,
  and compiled by NVRTC."""
  import picograd.codegen.cuda.plan as plan
  from picograd.engine.compile import _kernels
  monkeypatch.setattr(plan, "COLUMN_HELD_MAX", 128)
  fn, arrays = GPU_CASES["onehot_cols"](None)
  ref = _run(fn, arrays, "CPU")
  _kernels.clear()
  with Context(EMULATE="CUDA", CACHE=0):
    got = _run(fn, arrays, "PYTHON")
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  assert any(o == "emulating the CUDA mapping columns" for k in _kernels.values() for o in k.opts)
  kname, src, dims, meta = render_for_arch(asts(CASES["onehot_cols"][0]())[-1], "sm_90")
  assert meta["plan"] == "columns" and dims.local_size == (64,) and src.count("float acc") == 2 * 5  # 5 partials, 5 combines
  if not NVRTC_ERROR: assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", kname)).image


@needs_nvrtc
def test_tma_coordinates_of_a_product_indexed_in_64_bits_compile():
  """A product large enough for 64-bit loops (attention's scores at T = 1024: 384 x 1024 x 1024 over 64) passes its TMA
  coordinates as the 32-bit operands cp.async.bulk.tensor takes (NVRTC rejected 64-bit values for them)."""
  a, b = Tensor.empty(384, 1024, 64, dtype=dtypes.bfloat16), Tensor.empty(384, 64, 1024, dtype=dtypes.bfloat16)
  kname, src, dims, meta = render_for_arch(asts(a @ b)[-1], "sm_90a")
  assert meta["plan"] == "wgmma" and len(meta["tensor_maps"]) == 2 and "long long" in src
  assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90a", kname)).image


def test_wgmma_tiles_are_1024_aligned():
  """The hardware applies the 128-byte swizzle by shared-memory address: a wgmma kernel's tile buffers start at multiples
  of 1024 bytes, and the renderer places large buffers so even after a small one (a split-K ticket flag)."""
  import re
  from picograd.codegen.cuda.table import TableRenderer
  from picograd.ir.ops import UOp, Ops
  ast = asts(Tensor(rnd(256, 192, dtype=np.float16)) @ Tensor(rnd(192, 256, dtype=np.float16)))[-1]
  _, src, dims, meta = render_for_arch(ast, "sm_90a")
  assert meta["plan"] == "wgmma" and "__align__(1024) unsigned char pg_smem" in src
  offsets = [int(at) for at in re.findall(r"smem\d+ = reinterpret_cast<__half\*>\(pg_smem \+ (\d+)\)", src)]
  assert len(offsets) == 2 and all(at % 1024 == 0 for at in offsets), offsets
  flag, tile = UOp(Ops.DEFINE_LOCAL, dtypes.bool, (), (0, 1)), UOp(Ops.DEFINE_LOCAL, dtypes.float16, (), (1, 3 * 8192))
  staged = UOp(Ops.DEFINE_LOCAL, dtypes.float32, (), (2, 128 * 132, "reuse"))
  placed = TableRenderer([flag, tile, staged]).offsets
  assert placed[tile] % 1024 == 0 and placed[flag] >= 3 * 8192 * 2 and placed[staged] == 0, placed
