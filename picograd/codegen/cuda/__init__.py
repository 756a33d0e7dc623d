"""The CUDA backend of the codegen layer: a lowered kernel becomes one `__global__` function.

First a *plan* is chosen from the shape of the kernel (`plan.py`): how its loops map onto the GPU.
Every plan is an IR pass (`mapping.py`, `tiling.py`) that rewrites the lowered kernel with kernel-level
ops, and the table renderer (`table.py`) prints the linearized result op by op:

- `flat`: one thread per output element; the output loops are digits of the flat thread index and
  every reduction loop runs inside its thread. This is the plan `NOOPT=1` forces, and the fallback.
- `lanes`: an elementwise kernel whose innermost loop is a multiple of 4: four neighbouring outputs
  per thread, 16-byte (`float4`) loads and stores where an index moves by one along that loop.
- `block`: one block per output; the block's threads share each top-level reduction and combine
  their partials (GROUP_REDUCE: warp shuffles and shared memory).
- `row`: a reduction per row broadcast back over the row (softmax, log_softmax, layer_norm): a block
  per row, or a warp per row for rows of at most 1024; the threads share the row's reductions, then
  its columns, with float4 loads and stores where the index allows.
- `split` and `columns`: few outputs over a huge reduction (a full sum; a bias gradient summing 16384
  rows): G blocks per output (or per group of outputs) store partials to `__device__` scratch
  (DEFINE_GLOBAL); each takes a ticket (ATOMIC_ADD after a fence), and the last block to arrive
  combines the partials in a fixed order (GUARD, BARRIER), so the result is deterministic in one launch.
- `matmul`, `mma`, `mma_tf32`, `wgmma` (`tiling.py`): a reduction of a product X*Y as 128x128 output tiles
  per block, operand tiles staged through shared memory once per k-step (DEFINE_LOCAL, BARRIER; on sm_90a
  copied by TMA), 64 outputs per thread (an 8x8 register tile, or tensor cores: FRAGMENT + MMA, printed as
  ldmatrix + mma.sync m16n8k16 for float16/bfloat16, m16n8k8 TF32 for float32 when allowed; on sm_90a
  warpgroup MMAs on swizzled tiles, 16-bit or TF32), split-K over blocks for few output tiles, the epilogue
  at each output.

Rendering needs no GPU: `render_for_arch(ast, "sm_90")` gives the source for compile checks, and
`EMULATE=CUDA` runs the mapped kernels on the PYTHON device (every thread at once) to check the passes.
Register types: float16 values are `__half` (rounded after every op, like the CPU backend);
bfloat16 values live in `float` registers and are rounded at casts and stores, as in llvm.py.

Modules: `target` (the GPU described as data), `ops` (C types, constants and the per-op table),
`prelude` (the pg_* device helpers every kernel includes), `analysis` (facts about the linear
program: range dependences, affine indices, matmul shape), `mapping` (the IR passes), `tiling` (the
matrix-product IR passes), `table` (the op-by-op renderer), `emit` (lines of C with fresh names),
`plan` (choosing a plan) and `render` (the entry points).
"""
from picograd.codegen.cuda.target import CUDATarget, target_of
from picograd.codegen.cuda.analysis import find_matmul
from picograd.codegen.cuda.plan import choose_plan
from picograd.codegen.cuda.render import render_cuda, render_for_arch

__all__ = ["CUDATarget", "target_of", "render_cuda", "render_for_arch", "choose_plan", "find_matmul"]
