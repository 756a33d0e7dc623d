"""The CUDA C renderer (codegen layer): a linearized kernel (the same list the LLVM renderer walks) becomes one `__global__` function.

The renderer first picks a *plan*, the way the kernel's loops map onto the GPU, from the shape of
the program; the per-op rendering below is shared by every plan:

- `flat`: one thread per output element; the global loops are recovered from the thread index by
  div/mod and every reduction loop runs sequentially inside its thread. This is the plan `NOOPT=1`
  forces, and the fallback for anything the others do not recognize.
- `lanes`: an elementwise kernel whose innermost loop is a multiple of 4: each thread computes four
  neighbouring outputs, and loads/stores whose index moves by exactly one per output become one
  16-byte vector access (`float4`).
- `block`: one block per output; the threads of the block share each top-level reduction (thread t
  takes iterations t, t+B, ...), then combine with warp shuffles and shared memory. Used when the
  reduction reads contiguous memory, or when there are too few outputs to fill the GPU otherwise.
- `row`: a reduction per row broadcast back over the row (softmax, log_softmax, layer_norm: the
  linearizer emits such reductions once per row, before the column loops open). A block per row,
  or a warp per row for rows of at most 1024: the threads share each row reduction as in `block`
  (a reduction that uses an earlier one's result runs after its combine), then stride over the
  columns to compute and store the outputs; float4 loads and stores where the index allows.
  NOOPT's `flat` plan runs such a kernel with a thread per row, so it stays linear in the size.
- `split`: few outputs, huge reduction (a full sum): each output gets G blocks; each block writes
  its partial to a `__device__` scratch array, and the last block to finish (an atomic ticket)
  combines the G partials in a fixed order, so the result is deterministic and needs one launch.
- `columns`: a few hundred or thousand outputs, each summing a long strided column (a bias
  gradient sums 16384 rows): a thread per output as in `flat`, so a warp reads 32 neighbouring
  columns of a row at once, and G blocks per group of outputs, each taking every G-th row; their
  partials are combined as in `split`.
- `matmul` / `mma`: a reduction of a product X*Y where X depends on output loops M and Y on
  output loops N: tiles of X and Y go through shared memory (double-buffered, with the next tile
  prefetched into registers while the current one is used); SIMT threads compute 8x8 outputs each,
  or, for float16/bfloat16 operands with a float32 accumulator, tensor cores (ldmatrix + mma.sync m16n8k16).
  X, Y and the epilogue are arbitrary sub-programs (casts, padding masks, transposes, a bias),
  rendered at whatever indices the tile needs.

Rendering needs no GPU: `render_for_arch(ast, "sm_90")` gives the source for compile checks.
Register types: float16 values are `__half` (rounded after every op, like the CPU backend);
bfloat16 values live in `float` registers and are rounded at casts and stores, as in llvm.py.

Modules: `target` (the GPU described as data), `ops` (C types, constants and the per-op table),
`prelude` (the pg_* device helpers every kernel includes), `analysis` (facts about the linear
program: range dependences, affine indices, matmul shape), `emit` (writing C: lines, names, cones
of values), `sequential` (flat/block/split/row/columns), `lanes`, `matmul` (matmul/mma, split-K),
`plan` (choosing a plan) and `render` (the entry points).
"""
from picograd.codegen.cuda.target import CUDATarget, target_of
from picograd.codegen.cuda.analysis import find_matmul
from picograd.codegen.cuda.plan import choose_plan
from picograd.codegen.cuda.render import render_cuda, render_for_arch

__all__ = ["CUDATarget", "target_of", "render_cuda", "render_for_arch", "choose_plan", "find_matmul"]
