"""The CUDA renderer's entry points: choose a plan, map the kernel with its IR pass, render the mapped program op by op,
and wrap the body in a `__global__` function with its prelude."""
from __future__ import annotations
import hashlib
from typing import Any, Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import NOOPT, LaunchDims, TensorMapSpec
from picograd.ir.ops import UOp, Ops
from picograd.codegen.linearize import linearize
from picograd.codegen.cuda.analysis import range_deps, row_split
from picograd.codegen.cuda.mapping import map_block, map_columns, map_flat, map_lanes, map_row, map_split
from picograd.codegen.cuda.tiling import Plan, describe_tiled, map_tiled, plan_for
from picograd.codegen.cuda.flash import FORWARD_BLOCKS_PER_SM, describe_flash_cuda, map_flash, match_flash_cuda
from picograd.codegen.cuda.flash_bwd import describe_recomputed_cuda, map_recomputed, match_recomputed_cuda
from picograd.codegen.cuda.ops import MEM_TYPES
from picograd.codegen.cuda.plan import choose_plan
from picograd.codegen.cuda.prelude import HALF_PRELUDE, PRELUDE, TENSOR_MAP_PRELUDE
from picograd.codegen.cuda.table import TableRenderer
from picograd.codegen.cuda.target import CUDATarget


def _globals(program: list[UOp]) -> list[UOp]: return [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]


# the plans of tiling.py: their argument is (product, split, stages, k-step[, wgmma chains left in flight, TMA, wide tiles])
TILED = ("matmul", "mma", "mma_tf32", "wgmma")


def _tiled_plan(name: str, arg: Any) -> tuple[Plan, DType | None]:
  """(tiling.Plan, the tiles' type) of a tiled plan's argument."""
  return plan_for(name, arg[0], arg[3], *arg[6:])


# plan name -> fn(lowered kernel, its linear program, the plan's argument from `choose_plan`) -> the kernel mapped onto the GPU
MAPPINGS: dict[str, Callable[[UOp, list[UOp], Any], UOp]] = {
  "flat": lambda sink, program, arg: map_flat(sink, row_split(program)[0]),
  "lanes": lambda sink, program, arg: map_lanes(sink, _globals(program)),
  "block": lambda sink, program, arg: map_block(sink, _globals(program)),
  "row": lambda sink, program, group: map_row(sink, *row_split(program), group),
  "split": lambda sink, program, split: map_split(sink, _globals(program), split),
  "columns": lambda sink, program, arg: map_columns(sink, _globals(program), *arg),
  **{name: (lambda name: lambda sink, program, arg: map_tiled(sink, arg[0], arg[1], *_tiled_plan(name, arg), *arg[2:3], *arg[4:6]))(name)
     for name in TILED},
  "flash": lambda sink, program, fl: map_flash(sink, fl),  # online-softmax kernels of 16-bit products (flash.py)
  "recomputed": lambda sink, program, fr: map_recomputed(sink, fr),  # sums over recomputed 16-bit scores (flash_bwd.py)
}

def _loop_note(u: UOp, tiled: bool) -> str | None:
  if len(u.arg) <= 3: return None
  return f"loop {u.arg[0]} ({u.arg[2]}, {u.arg[1]} steps) " + ("unrolled" if tiled else "dealt out to a thread group")


def _barrier_note(u: UOp, tiled: bool) -> str | None:
  if u.arg == "block": return "block barrier once per k-step" if tiled else None
  if u.arg == "proxy": return "shared-memory writes fenced for the tensor cores, block barrier once per k-step"
  if isinstance(u.arg, tuple) and u.arg[0] == "wgmma": return "the wgmma chains waited for after the k-loop"
  if u.arg == "landed" or isinstance(u.arg, tuple) and u.arg[0] in ("init", "expect"): return "one mbarrier per stage, waited on by every thread"
  return "cp.async groups committed and waited for" if u.arg == "commit" or isinstance(u.arg, tuple) else None


# op -> fn(instruction, whether the kernel is a tiled product) -> what DEBUG=3 says of it, or None
_NOTES: dict[Ops, Callable[[UOp, bool], str | None]] = {
  Ops.SPECIAL: lambda u, tiled: f"{u.arg[0]} index over {u.arg[1]}",
  Ops.RANGE: _loop_note,
  Ops.DEFINE_LOCAL: lambda u, tiled: None if not tiled or u.dtype == dtypes.bool else  # (bool: the split-K ticket flag)
    f"shared memory {'for the outputs (over the tiles)' if len(u.arg) > 2 else 'tile'} of {u.arg[1]} {u.dtype.name} values",
  Ops.BARRIER: _barrier_note,
  Ops.GROUP_REDUCE: lambda u, tiled: f"{u.arg[0].name} combined across {u.arg[1]} threads",
  Ops.LOAD: lambda u, tiled: f"{u.arg * u.dtype.itemsize}-byte load" if u.arg is not None and u.src[0].op is Ops.PARAM else None,
  Ops.STORE: lambda u, tiled: f"{len(u.src[2].src) * u.src[0].dtype.itemsize}-byte store" if u.src[2].op is Ops.VECTORIZE else None,
  Ops.ASYNC_COPY: lambda u, tiled: f"TMA copies of {'x'.join(map(str, u.arg.box))} boxes into 128-byte swizzled stages, mbarrier completion"
    if isinstance(u.arg, TensorMapSpec) else "16-byte cp.async copies into shared memory",
  Ops.FRAGMENT: lambda u, tiled: f"{u.arg[1]} descriptors of 128-byte swizzled tiles ({'MN' if u.arg[3] else 'K'}-major)"
    if u.arg[0] == "desc" else f"{u.arg[1]} A fragments packed from registers" if u.arg[0] == "pack" else \
    f"{u.arg[1]} fragments of the MN-major B tile in registers, wgmma's A" if u.arg[0] == "wa" else \
    f"{u.arg[1]} fragments ({'TF32-rounded loads' if u.arg[1] == 'tf32' else 'ldmatrix'})",
  Ops.WGMMA: lambda u, tiled: None if len(u.src) > 2 else "a chain of wgmma.mma_async per k-step, committed, " + (
    "the step's chain waited for" if u.arg[1] == 0 else f"up to {u.arg[1]} chain(s) left running into the next step"),
}


def describe_mapping(plan: str, arg: Any, program: list[UOp]) -> list[str]:
  """What DEBUG=3 lists for a mapped kernel: the launch, each loop the mapping dealt out or vectorized, shared memory,
  and for a matrix product its tiles."""
  tiled = plan in TILED
  opts = [describe_tiled(_tiled_plan(plan, arg)[0], *arg[:3], *arg[5:6])] if tiled else [describe_flash_cuda(arg)] if plan == "flash" else \
    [describe_recomputed_cuda(arg)] if plan == "recomputed" else []
  # (the flash plans' loops, tiles and barriers are a tiled kernel's too)
  opts += [note for u in program if u.op in _NOTES and (note := _NOTES[u.op](u, tiled or plan in ("flash", "recomputed"))) is not None]
  if tiled:
    first = next(u.src for u in program if u.op is Ops.DEFINE_ACC)
    opts.append(f"{sum(u.op is Ops.DEFINE_ACC and u.src == first for u in program)} accumulators per thread")  # of the product's loop nest
  return [f"map {plan}"] + sorted(set(opts), key=opts.index)


def map_kernel(sink: UOp, program: list[UOp], target: CUDATarget) -> tuple[str, Any, list[UOp]]:
  """(plan, its argument, the linear program of the kernel mapped onto the GPU by the plan's pass)."""
  # an online-softmax kernel of 16-bit products (autocast's attention) is flash attention on tensor cores
  fl = None if NOOPT else match_flash_cuda(sink, target)
  # so is a sum over recomputed 16-bit scores (attention's backward, engine/recompute.py)
  fr = None if NOOPT or fl is not None else match_recomputed_cuda(sink, target)
  plan, arg = ("flash", fl) if fl is not None else ("recomputed", fr) if fr is not None else choose_plan(program, target, range_deps(program))
  return plan, arg, linearize(MAPPINGS[plan](sink, program, arg))


def render_cuda(base_name: str, sink: UOp, target: CUDATarget) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """(kernel name, CUDA C source, the program rendered, launch dims, meta) for a lowered kernel: the hook
  codegen/kernel.py calls. `target` describes the GPU (arch and limits) as plain data."""
  plan, arg, program = map_kernel(sink, linearize(sink), target)
  table = TableRenderer(program)
  lines = table.render()
  grid, block = table.launch()
  opts = describe_mapping(plan, arg, program)
  params = [u for u in program if u.op is Ops.PARAM]
  written = {u.src[0] for u in program if u.op is Ops.STORE}
  checked = any(u.op is Ops.CHECK for u in program)
  # TMA tensor maps come after the buffers, each a 64-byte aligned 128-byte kernel parameter the runtime encodes at launch
  args = ", ".join([f"{'' if p in written else 'const '}{MEM_TYPES[p.dtype]}* __restrict__ p{p.arg[0]}" for p in params] +
                   ["unsigned long long* __restrict__ pg_err"] * checked +
                   [f"const __grid_constant__ pg_tensor_map {name}" for name in table.tensor_maps.values()])
  uses_half = any(u.dtype in (dtypes.float16, dtypes.bfloat16) for u in program)
  head = [PRELUDE + (HALF_PRELUDE if uses_half else "") + (TENSOR_MAP_PRELUDE if table.tensor_maps else "")]
  body = "\n".join(lines)
  bounds = f"{block}, {FORWARD_BLOCKS_PER_SM}" if plan == "flash" else f"{block}"  # (flash.py: registers capped for occupancy)
  digest = hashlib.sha256((plan + bounds + body + "".join(table.globals) + args).encode()).hexdigest()[:8]
  name = f"{base_name}_{digest}"
  src = "\n".join(head + table.globals + [f'extern "C" __global__ void __launch_bounds__({bounds}) {name}({args}) {{', body, "}", ""])
  dims = LaunchDims(grid, (block,), table.dynamic_shared)
  opts.append(f"grid {dims.global_size}, block {dims.local_size}, {dims.shared_bytes} B dynamic shared memory")
  maps = [spec._replace(param=next(i for i, p in enumerate(params) if p is param)) for param, spec in table.tensor_maps]
  return name, src, program, dims, {"n_params": len(params) + checked, "plan": plan, "opts": opts, "tensor_maps": maps}


def render_for_arch(ast: UOp, arch: str = "sm_90", sm_count: int = 132, max_shared: int = 227 * 1024) -> tuple[str, str, LaunchDims, dict]:
  """Lower and render a scheduled kernel for `arch` with no GPU: for compile checks and reading the source."""
  from picograd.codegen.lower import lower_kernel
  from picograd.codegen.linearize import kernel_name
  sink = lower_kernel(ast)
  name, src, _, dims, meta = render_cuda(kernel_name(linearize(sink)), sink, CUDATarget(arch, sm_count, max_shared))
  return name, src, dims, meta
