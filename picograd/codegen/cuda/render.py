"""The CUDA renderer's entry points: choose a plan, map the kernel with its IR pass (or, for the plans not yet moved
into the IR, render it with the plan's C writer), and wrap the body in a `__global__` function with its prelude."""
from __future__ import annotations
import hashlib
from typing import Any, Callable
from picograd.dtype import dtypes
from picograd.helpers import LaunchDims
from picograd.ir.ops import UOp, Ops
from picograd.codegen.linearize import linearize
from picograd.codegen.cuda.analysis import data_values, range_deps, row_split
from picograd.codegen.cuda.emit import KernelSource
from picograd.codegen.cuda.mapping import map_block, map_columns, map_flat, map_lanes, map_row, map_split
from picograd.codegen.cuda.matmul import render_mma, render_mma_tf32
from picograd.codegen.cuda.tiling import describe_matmul, map_matmul
from picograd.codegen.cuda.ops import MEM_TYPES
from picograd.codegen.cuda.plan import choose_plan
from picograd.codegen.cuda.prelude import HALF_PRELUDE, PRELUDE
from picograd.codegen.cuda.table import TableRenderer
from picograd.codegen.cuda.target import CUDATarget


def _globals(program: list[UOp]) -> list[UOp]: return [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]


# plan name -> fn(lowered kernel, its linear program, the plan's argument from `choose_plan`) -> the kernel mapped onto the GPU
MAPPINGS: dict[str, Callable[[UOp, list[UOp], Any], UOp]] = {
  "flat": lambda sink, program, arg: map_flat(sink, row_split(program)[0]),
  "lanes": lambda sink, program, arg: map_lanes(sink, _globals(program)),
  "block": lambda sink, program, arg: map_block(sink, _globals(program)),
  "row": lambda sink, program, group: map_row(sink, *row_split(program), group),
  "split": lambda sink, program, split: map_split(sink, _globals(program), split),
  "columns": lambda sink, program, split: map_columns(sink, _globals(program), split),
  "matmul": lambda sink, program, mm_split: map_matmul(sink, *mm_split),
}

# the plans that still decide while printing C: fn(program, the kernel source to fill, the plan's argument)
PLANS: dict[str, Callable[[list[UOp], KernelSource, Any], None]] = {
  "mma": lambda program, ks, mm_split: render_mma(program, mm_split[0], ks, mm_split[1]),
  "mma_tf32": lambda program, ks, mm_split: render_mma_tf32(program, mm_split[0], ks, mm_split[1]),
}


def _describe(plan: str, arg: Any, program: list[UOp]) -> list[str]:
  """What DEBUG=3 lists for a mapped kernel: the launch, each loop the mapping dealt out or vectorized, shared memory,
  and for a matrix product its tiles."""
  opts = [describe_matmul(*arg)] if plan == "matmul" else []
  accumulators = sum(u.op is Ops.DEFINE_ACC for u in program)
  for u in program:
    if u.op is Ops.SPECIAL: opts.append(f"{u.arg[0]} index over {u.arg[1]}")
    elif u.op is Ops.RANGE and len(u.arg) > 3 and plan == "matmul": opts.append(f"loop {u.arg[0]} ({u.arg[2]}, {u.arg[1]} steps) unrolled")
    elif u.op is Ops.RANGE and len(u.arg) > 3: opts.append(f"loop {u.arg[0]} ({u.arg[2]}, {u.arg[1]} steps) dealt out to a thread group")
    elif u.op is Ops.DEFINE_LOCAL and plan == "matmul": opts.append(f"shared memory tile of {u.arg[1]} {u.dtype.name} values")
    elif u.op is Ops.BARRIER and u.arg == "block" and plan == "matmul": opts.append("block barrier once per k-step")
    elif u.op is Ops.GROUP_REDUCE: opts.append(f"{u.arg[0].name} combined across {u.arg[1]} threads")
    elif u.op is Ops.LOAD and u.arg == 4: opts.append("16-byte load")
    elif u.op is Ops.STORE and u.src[2].op is Ops.VECTORIZE: opts.append("16-byte store")
  if plan == "matmul": opts.append(f"{accumulators} accumulators per thread")
  return [f"map {plan}"] + sorted(set(opts), key=opts.index)


def map_kernel(sink: UOp, program: list[UOp], target: CUDATarget) -> tuple[str, Any, list[UOp] | None]:
  """(plan, its argument, the linear program of the kernel mapped onto the GPU by the plan's pass: None for a plan still
  in `PLANS`)."""
  plan, arg = choose_plan(program, target, range_deps(program))
  return plan, arg, (linearize(MAPPINGS[plan](sink, program, arg)) if plan in MAPPINGS else None)


def render_cuda(base_name: str, sink: UOp, target: CUDATarget) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """(kernel name, CUDA C source, the program rendered, launch dims, meta) for a lowered kernel: the hook
  codegen/kernel.py calls. `target` describes the GPU (arch and limits) as plain data."""
  program = linearize(sink)
  plan, arg, mapped = map_kernel(sink, program, target)
  ks = KernelSource()
  if mapped is not None:
    program = mapped
    table = TableRenderer(program)
    ks.w = table.w
    table.render()
    ks.grid, ks.block = table.launch()
    ks.globals = table.globals
    opts = _describe(plan, arg, program)
  else:
    ks.w.wrapping = data_values(program)
    mm, split = arg
    PLANS[plan](program, ks, arg)
    B, M, N, K = mm.sizes
    tiles = {"mma": "128x128 tiles, k-steps of 32, 8 warps of 64x32 on mma.sync m16n8k16 (ldmatrix)",
             "mma_tf32": "128x128 tiles, k-steps of 32, 8 warps of 64x32 on mma.sync m16n8k8 TF32"}[plan]
    opts = [f"plan {plan} (written as C, not yet an IR pass): {B}x{M}x{N}, k={K}; {tiles}" + (f"; split-K over {split} blocks" if split > 1 else "")]
  params = [u for u in program if u.op is Ops.PARAM]
  written = {u.src[0] for u in program if u.op is Ops.STORE}
  checked = any(u.op is Ops.CHECK for u in program)
  args = ", ".join([f"{'' if p in written else 'const '}{MEM_TYPES[p.dtype]}* __restrict__ p{p.arg[0]}" for p in params] +
                   ["unsigned long long* __restrict__ pg_err"] * checked)
  uses_half = any(u.dtype in (dtypes.float16, dtypes.bfloat16) for u in program)
  head = [PRELUDE + (HALF_PRELUDE if uses_half else "")]
  body = "\n".join(ks.w.lines)
  digest = hashlib.sha256((plan + body + "".join(ks.globals) + args).encode()).hexdigest()[:8]
  name = f"{base_name}_{digest}"
  src = "\n".join(head + ks.globals + [f'extern "C" __global__ void __launch_bounds__({ks.block}) {name}({args}) {{', body, "}", ""])
  dims = LaunchDims(ks.grid, (ks.block,), ks.shared_bytes)
  opts.append(f"grid {dims.global_size}, block {dims.local_size}, {dims.shared_bytes} B dynamic shared memory")
  return name, src, program, dims, {"n_params": len(params) + checked, "plan": plan, "opts": opts}


def render_for_arch(ast: UOp, arch: str = "sm_90", sm_count: int = 132, max_shared: int = 227 * 1024) -> tuple[str, str, LaunchDims, dict]:
  """Lower and render a scheduled kernel for `arch` with no GPU: for compile checks and reading the source."""
  from picograd.codegen.lower import lower_kernel
  from picograd.codegen.linearize import kernel_name
  sink = lower_kernel(ast)
  name, src, _, dims, meta = render_cuda(kernel_name(linearize(sink)), sink, CUDATarget(arch, sm_count, max_shared))
  return name, src, dims, meta
