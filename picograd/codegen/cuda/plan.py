"""Choosing a CUDA plan from the shape of a linearized kernel (see the package docstring for what each plan does)."""
from __future__ import annotations
import math
from typing import Any
from picograd.dtype import dtypes
from picograd.helpers import NOOPT, TF32, TMA, ceildiv, prod
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import Matmul, contiguous_in, find_matmul, row_split, top_level
from picograd.codegen.cuda.emit import BLOCK
from picograd.codegen.cuda.mapping import held_loop
from picograd.codegen.cuda.tiling import plan_for, runs_along, shared_bytes, tma_ready
from picograd.codegen.cuda.target import CUDATarget


# the longest output loop a columns kernel's thread may hold (mapping.held_loop; 0: none): the GPT's one-hot embedding
# gradient (65 values) went from 0.37 to 0.16 ms a step on the H200
COLUMN_HELD_MAX = 128
SPLIT_K_CHUNK = 512            # the least k a split-K block takes: its partial tile costs a store and a load per output
SPLIT_K_SCRATCH = 64 * 2**20   # bytes of partial tiles one split-K kernel may keep
BLOCKS_PER_SM = 2              # tiled-product blocks an SM runs at once (256 threads of ~128 registers; ncu on the H200)
ASYNC_STAGES = 3               # shared-memory buffers per operand of the tensor-core plans (cp.async fetches stages - 1 ahead)
# k-steps per block from which the tensor-core plans fetch by cp.async (H200, k-steps of 32: three stages made the weight
# gradients (52 steps) 1.8x and TF32 4096 (128) 1.45x faster than two, but x @ W.T with K = 384 (12 steps) 2.1x slower)
ASYNC_MIN_STEPS = 32
# k per step of the 16-bit tensor-core plans: 64 halves the barriers and gives the refill loads four inner steps to land
# (H200: f16 4096 0.55 -> 0.47 ms, x @ W.T at K = 384 0.112 -> 0.076 ms), except a split-K grid (about one wave of blocks,
# so no other block hides a block's load latency), which keeps steps of 32 with three cp.async stages (0.111 ms against
# 0.136 with steps of 64 for the GPT's weight gradient; three stages of 64, 110.6 KB of tiles a block, lost: f16 4096 0.68)
MMA_STEP = 64
WGMMA_STAGES = 2               # shared-memory buffers per operand of the wgmma plan
WGMMA_IN_FLIGHT = 0            # wgmma chains left running into the next k-step (each holds a stage: needs stages >= 3)
# the wgmma plan with its tiles by TMA (H200, f16 4096): 3 stages give 2 blocks an SM (0.237 ms; 4 stages 0.275), and one
# chain left running into the next step 0.206 (4 stages with one 0.234, with two 0.279); split-K grids take it too (the
# GPT's fc weight gradient 0.095 -> 0.055 ms against mma.sync's cp.async stages)
TMA_STAGES = 3
TMA_IN_FLIGHT = 1
TMA_SPLIT_K = True
# products with 128 x 256 tiles enough for this many waves of one block an SM take them (`tiling.wgmma_plan` wide:
# m64n256 per warpgroup, half the shared-memory reads of the narrow operand per product), in WIDE_STAGES TMA stages: TF32
# (H200, 4096 x 4096: x @ y 0.409 -> 0.362 ms, x @ y.T 0.411 -> 0.362, cuBLAS 0.359-0.364; three stages 0.385 and 0.362),
# and 16-bit ones over k of at least WIDE_HALF_MIN_K (f16 4096: 0.204 -> 0.195 ms, cuBLAS 0.192; k = 1536: 0.042 both
# ways; k = 384, the GPT's q/k/v and fc products: 0.042 -> 0.068, the stages' fill not amortized)
WIDE_MIN_WAVES = 2
WIDE_STAGES = 4
WIDE_HALF_MIN_K = 2048


def _split_k(mm: Matmul, target: CUDATarget) -> int:
  """How many chunks of k the tiles of a matmul are split into when the output alone gives fewer tiles than SMs (a
  weight gradient, 384x1152 summed over 16384 tokens, has 27): as many as fill the GPU's BLOCKS_PER_SM x SMs block slots
  in one wave, never more. A few blocks past the slots make a second wave that costs as long as the first (the GPT's
  weight gradients had 270 and 288 blocks for 264 slots)."""
  B, M, N, K = mm.sizes
  tiles = B * ceildiv(M, 128) * ceildiv(N, 128)
  if tiles >= target.sm_count or mm.acc.dtype not in (dtypes.float32, dtypes.float64): return 1
  scratch_cap = SPLIT_K_SCRATCH // (tiles * 128 * 128 * mm.acc.dtype.itemsize)
  return max(1, min(BLOCKS_PER_SM * target.sm_count // tiles, K // SPLIT_K_CHUNK, scratch_cap))


def choose_plan(program: list[UOp], target: CUDATarget, deps: dict[UOp, frozenset[UOp]]) -> tuple[str, Any]:
  """(plan name, plan argument). NOOPT=1 always gives ("flat", None)."""
  if NOOPT: return "flat", None
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  outputs = prod(r.arg[1] for r in glob)
  accs = [u for u in program if u.op is Ops.DEFINE_ACC]
  if not accs:
    # four lanes when the innermost loop is a multiple of 4 and at least one access is contiguous in it
    if glob and glob[-1].arg[1] % 4 == 0 and outputs >= 4 * BLOCK and \
        any(u.op in (Ops.LOAD, Ops.STORE) and u.src[0].op is Ops.PARAM and contiguous_in(u.src[1], glob[-1], 4) for u in program):
      return "lanes", None
    return "flat", None
  rows, cols = row_split(program)
  if cols:
    # a reduction per row, broadcast back over the row's columns: a block or a warp per row
    top = top_level(program)
    length = max([prod(r.arg[1] for r in cols)] + [prod(r.arg[1] for r in a.src) for a in top])
    if length < 32: return "flat", None  # a thread per row: a warp would idle most of its lanes
    if length <= 1024: return "row", 32
    # about eight elements per thread; whole 1024-thread blocks when there are too few rows to fill the GPU
    threads = 1024 if prod(r.arg[1] for r in rows) < 2 * target.sm_count else 1 << (ceildiv(length, 8) - 1).bit_length()
    return "row", min(1024, max(128, threads))
  if (mm := find_matmul(program, deps)) is not None:
    B, M, N, K = mm.sizes
    if M >= 64 and N >= 64 and K >= 16 and B < 65536:
      halfs = mm.x.dtype == mm.y.dtype and mm.x.dtype in (dtypes.float16, dtypes.bfloat16) and mm.acc.dtype == dtypes.float32
      floats = mm.x.dtype == mm.y.dtype == mm.acc.dtype == dtypes.float32
      split = _split_k(mm, target)
      # sm_90a (an H100/H200, WGMMA=1): warpgroup MMAs on 16-bit tiles through descriptors, k-steps of 64, not for
      # 64 < N < 128 (tiles of 128 x 64 take N <= 64, 128 x 128 the rest). Split-K grids only with TMA: with copies through
      # the threads their long chunks ran faster on mma.sync's three cp.async stages (the GPT's weight gradients: 124
      # against 290 us)
      # TF32 too (float32 operands the user allowed it for), where A lies K-major: wgmma reads TF32 tiles K-major only, so
      # a B lying N-major (x @ W) is wgmma's A, read into registers, computing the tile transposed (turned K-major by the
      # threads copying it instead, 4096 x 4096 took 1.82 ms on the H200, against 1.1 on mma.sync and 0.41 K-major)
      tf32 = TF32 and floats and not runs_along(mm.x, mm.m, mm.k) and (N >= 128 or not runs_along(mm.y, mm.n, mm.k))
      if (halfs or tf32) and target.wgmma and (N >= 128 or N <= 64):
        step = 32 if floats else 64  # one 128-byte swizzled row of k
        if (tf32 or (halfs and K >= WIDE_HALF_MIN_K)) and TMA and split == 1:
          plan, tile_dtype = plan_for("wgmma", mm, step, wide=True)
          # (only where the product fills whole wide tiles: N <= 64 would waste most of a 256-wide one)
          fills = M >= plan.tile_m and N >= plan.tile_n and \
            B * ceildiv(M, plan.tile_m) * ceildiv(N, plan.tile_n) >= WIDE_MIN_WAVES * target.sm_count
          stages = next((n for n in (WIDE_STAGES, 3) if shared_bytes(plan, tile_dtype, n) + 8 * n <= target.max_shared), None)
          if fills and stages is not None and tma_ready(mm, plan, tile_dtype):
            return "wgmma", (mm, split, stages, step, TMA_IN_FLIGHT if stages - 1 - TMA_IN_FLIGHT >= 1 else 0, True, True)
        plan, tile_dtype = plan_for("wgmma", mm, step)
        # TMA: the tiles copied by the copy engine into stages, with no thread in between (and 8 bytes of mbarrier a stage)
        if TMA and (split == 1 or TMA_SPLIT_K) and tma_ready(mm, plan, tile_dtype):
          stages = next((n for n in (TMA_STAGES, 3) if shared_bytes(plan, tile_dtype, n) + 8 * n <= target.max_shared), None)
          if stages is not None: return "wgmma", (mm, split, stages, step, TMA_IN_FLIGHT if stages - 1 - TMA_IN_FLIGHT >= 1 else 0, True)
        stages = next((n for n in (WGMMA_STAGES, 2) if shared_bytes(plan, tile_dtype, n) <= target.max_shared), None)
        if stages is not None and split == 1:
          return "wgmma", (mm, split, stages, step, WGMMA_IN_FLIGHT if stages - 1 - WGMMA_IN_FLIGHT >= 1 else 0, False)
      for name, fits in (("mma", halfs), ("mma_tf32", TF32 and floats)):
        if not fits or target.cc < 80: continue
        # cp.async stages for long k-loops when they fit in shared memory (sm_80 and newer copy global to shared memory
        # asynchronously); 16-bit tiles take k-steps of MMA_STEP where that wins (see there)
        deep = ceildiv(ceildiv(K, split), 32) >= ASYNC_MIN_STEPS
        step = 32 if name == "mma_tf32" or (split > 1 and deep) else MMA_STEP
        plan, tile_dtype = plan_for(name, mm, step)
        choices = (ASYNC_STAGES, 2) if deep and step == 32 else (2,)
        stages = next((n for n in choices if shared_bytes(plan, tile_dtype, n) <= target.max_shared), None)
        if stages is not None: return name, (mm, split, stages, step)
      return "matmul", (mm, split, 2, 8)
  top = top_level(program)
  rsize = max(prod(r.arg[1] for r in a.src) for a in top)
  work = prod(u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "reduce")  # nested reductions included
  inner = {a.src[-1] for a in top}
  loads = [u for u in program if u.op is Ops.LOAD and u.src[0].op is Ops.PARAM and deps[u] & inner]
  along = [any(contiguous_in(u.src[1], r, 1) for r in inner) for u in loads]
  if rsize < 32: return "flat", None
  splittable = len(top) == 1 and top[0].dtype in (dtypes.float32, dtypes.float64, dtypes.int32, dtypes.int64, dtypes.uint32)
  if not all(along) and splittable and outputs % 32 == 0 and outputs < target.sm_count * BLOCK and rsize >= 2048:
    # a thread per output, or per output of the other loops when a short one no load moves with is held in each thread
    # (an embedding's one-hot gradient: 65 x 384 outputs, each reading the same dx and token for every value of v)
    held = held_loop(program, glob, deps, COLUMN_HELD_MAX)
    threads = outputs // glob[held].arg[1] if held >= 0 else outputs
    if threads % 32: held, threads = -1, outputs
    # blocks enough for about 2048 threads per SM, each thread at least 64 rows, at most 256 partials per output to combine
    # (held: the last block of each group combines every partial of every held value, so the rows a thread sums and the
    # partials balance; H200, the GPT's one-hot gradient (16384 rows): 256 partials 225 us, 128 139 us, 64 164 us)
    split = min(ceildiv(target.sm_count * 2048, threads), rsize // 64, 256 if held < 0 else math.isqrt(rsize))
    if split > 1: return "columns", (split, held)
  if not all(along) and outputs >= 2048:
    # a thread per output reads coalesced across the threads where the reduction runs over a leading axis;
    # but with a few thousand rows it leaves most of the GPU idle, and a warp per row coalesces whatever runs along the row
    if any(along) and rsize <= 4096 and outputs < 2 * target.sm_count * BLOCK: return "row", 32
    return "flat", None
  if splittable and outputs <= target.sm_count and work >= 1 << 16:
    # about 256 steps of work per thread, at least one iteration of the split loop each
    split = min(ceildiv(work, BLOCK * 256), ceildiv(rsize, BLOCK), max(1, 4 * target.sm_count // max(outputs, 1)), 1024)
    if split > 1: return "split", split
  # short contiguous rows, many of them: a warp per output instead of a block (no block-wide combine, eight rows per block)
  if all(along) and rsize <= 1024 and outputs >= 4 * target.sm_count: return "row", 32
  return "block", None
