"""The CUDA renderer's entry points: choose a plan, run it, and wrap the body in a `__global__` function with its prelude."""
from __future__ import annotations
import hashlib
from typing import Any, Callable
from picograd.dtype import dtypes
from picograd.helpers import LaunchDims
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import data_values, range_deps
from picograd.codegen.cuda.emit import KernelSource
from picograd.codegen.cuda.lanes import render_lanes
from picograd.codegen.cuda.matmul import render_matmul, render_mma
from picograd.codegen.cuda.ops import MEM_TYPES
from picograd.codegen.cuda.plan import choose_plan
from picograd.codegen.cuda.prelude import HALF_PRELUDE, PRELUDE
from picograd.codegen.cuda.sequential import Sequential
from picograd.codegen.cuda.target import CUDATarget


# plan name -> fn(program, the kernel source to fill, range dependences, the plan's argument from `choose_plan`)
PLANS: dict[str, Callable[[list[UOp], KernelSource, dict[UOp, frozenset[UOp]], Any], None]] = {
  "flat": lambda program, ks, deps, arg: Sequential(program, ks, "flat").render(),
  "block": lambda program, ks, deps, arg: Sequential(program, ks, "block").render(),
  "split": lambda program, ks, deps, split: Sequential(program, ks, "split", split=split).render(),
  "columns": lambda program, ks, deps, split: Sequential(program, ks, "columns", split=split).render(),
  "row": lambda program, ks, deps, group: Sequential(program, ks, "row", group=group).render(),
  "lanes": lambda program, ks, deps, arg: render_lanes(program, ks, deps),
  "matmul": lambda program, ks, deps, mm_split: render_matmul(program, mm_split[0], ks, mm_split[1]),
  "mma": lambda program, ks, deps, mm_split: render_mma(program, mm_split[0], ks, mm_split[1]),
}


def render_program(base_name: str, program: list[UOp], target: CUDATarget) -> tuple[str, str, LaunchDims, dict]:
  """(kernel name, CUDA C source, launch dims, meta) for a linearized program."""
  deps = range_deps(program)
  plan, arg = choose_plan(program, target, deps)
  ks = KernelSource()
  ks.w.wrapping = data_values(program)
  PLANS[plan](program, ks, deps, arg)
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
  return name, src, dims, {"n_params": len(params) + checked, "plan": plan}


def render_cuda(base_name: str, program: list[UOp], target: CUDATarget) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """The hook codegen/kernel.py calls: `target` describes the GPU (arch and limits) as plain data."""
  name, src, dims, meta = render_program(base_name, program, target)
  return name, src, program, dims, meta


def render_for_arch(ast: UOp, arch: str = "sm_90", sm_count: int = 132, max_shared: int = 227 * 1024) -> tuple[str, str, LaunchDims, dict]:
  """Lower, linearize and render a scheduled kernel for `arch` with no GPU: for compile checks and reading the source."""
  from picograd.codegen.lower import lower_kernel
  from picograd.codegen.linearize import linearize, kernel_name
  program = linearize(lower_kernel(ast))
  return render_program(kernel_name(program), program, CUDATarget(arch, sm_count, max_shared))
