"""From a scheduled kernel graph to source plus launch metadata (codegen layer): lower, optimize, linearize, render.

`render_spec(ast, device, target)` returns a `ProgramSpec`: plain data (name, source, launch dims,
what the loader needs, cost estimates, text of every stage) that the engine compiles and loads
through the runtime (engine/compile.py). Codegen never imports the runtime: what it needs to
know about a GPU comes in as a target description (`codegen/cuda.py:CUDATarget`).
"""
from __future__ import annotations
import hashlib
from dataclasses import dataclass
from typing import Any
from picograd.helpers import EMULATE, NOOPT, LaunchDims
from picograd.ir.ops import UOp, Ops, print_graph, print_program
from picograd.codegen.lower import lower_kernel
from picograd.codegen.linearize import linearize, kernel_name
from picograd.codegen.opt import optimize
from picograd.codegen.online import online_softmax
from picograd.codegen.transcendental import approximate_transcendentals
from picograd.codegen.gemm_match import Gemm, match_gemm, describe, row_tiles
from picograd.codegen.cpu_gemm import render_gemm
from picograd.codegen.cpu_flash import match_flash, render_flash, describe_flash, flash_tiles, flash_flops
from picograd.codegen.cpu_flash_bwd import match_recomputed, render_recomputed, describe_recomputed, recomputed_tiles, recomputed_flops


@dataclass(frozen=True)
class ProgramSpec:
  """A rendered kernel, ready for a device's compiler: everything the engine needs to compile, load and launch it."""
  name: str
  device: str        # the device it was rendered for
  ir: str            # the fused UOp graph
  program_text: str  # the linearized program
  source: str        # LLVM IR / CUDA C / numpy code
  dims: LaunchDims
  meta: dict[str, Any]  # what the device's loader needs (parameter count and types, outer loop size, work)
  flops: int         # estimated arithmetic ops per run
  bytes: int         # bytes read and written per run
  # (exception name, message) per bit of the error word, for kernels with CHECKs: they take the word as a last argument
  checks: tuple[tuple[str, str], ...] = ()


def _cost(program: list[UOp]) -> tuple[int, int]:
  """Rough flops and bytes of one run, for DEBUG=2's GFLOP/s and GB/s."""
  depth_mult, flops, nbytes = 1, 0, 0
  stack = []
  for u in program:
    if u.op is Ops.RANGE:
      stack.append(depth_mult); depth_mult *= max(u.arg[1], 1)
    elif u.op is Ops.ENDRANGE: depth_mult = stack.pop()
    elif u.op in (Ops.LOAD, Ops.STORE) and u.src[0].op is Ops.PARAM: nbytes += depth_mult * u.src[0].dtype.itemsize
    elif u.dtype.is_float and u.op not in (Ops.CONST, Ops.LOAD, Ops.DEFINE_ACC, Ops.PARAM): flops += depth_mult
  # loads inside reduction loops often hit cache; count each buffer at most once as its size
  params = [u for u in program if u.op is Ops.PARAM]
  nbytes = min(nbytes, sum(p.arg[1] * p.dtype.itemsize for p in params)) if params else nbytes
  return flops, nbytes


def _ops_executed(program: list[UOp]) -> int:
  """Instructions one run executes (each op times its loops' trip counts): the CPU runtime's measure of whether threads pay."""
  mult, total, stack = 1, 0, []
  for u in program:
    if u.op is Ops.RANGE:
      stack.append(mult); mult *= max(u.arg[1], 1)
    elif u.op is Ops.ENDRANGE: mult = stack.pop()
    elif u.op not in (Ops.CONST, Ops.PARAM): total += mult
  return total


def kernel_checks(program: list[UOp]) -> tuple[tuple[str, str], ...]:
  """What each bit of the kernel's error word means, from its CHECKs (lowering numbered them)."""
  bits = {u.src[2].arg.bit_length() - 1: u.arg for u in program if u.op is Ops.CHECK}
  return tuple(bits.get(i, ("RuntimeError", "a check failed")) for i in range(max(bits, default=-1) + 1))


def optimize_cpu(sink: UOp) -> tuple[UOp, list[str], Gemm | None]:
  """The CPU's passes over lowered kernel `sink`: the optimized sink, what was applied (DEBUG=3), and the GEMM form when it is one.

  A matrix product gets the blocked GEMM form (codegen/gemm_match.py, cpu_gemm.py), rendered from the sink as it is; other kernels the
  generic loop nest, split at gates and upcast (codegen/opt.py). NOOPT=1: neither."""
  sink = approximate_transcendentals(sink)
  if (gemm := None if NOOPT else match_gemm(sink)) is not None: return sink, describe(gemm), gemm
  return *optimize(sink), None


def render(ast: UOp, device: str, target: Any = None) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """Lower and render `ast` for `device`: (name, source, linear program, launch dims, program meta).

  `target` describes the device where the renderer needs more than its kind (CUDA: a `CUDATarget`; None renders for an H100)."""
  kind = device.split(":")[0]
  # sums rescaled by a running max in one pass (codegen/online.py); of the CUDA mapping passes only the flat plan (NOOPT) keeps
  # a max's loop whole in each thread, as the running max needs
  on_gpu = kind == "CUDA" or EMULATE == "CUDA"
  lowered = lower_kernel(ast)
  # on the CPU an online-softmax kernel whose scores are a product sum is rendered as tiled flash attention (codegen/cpu_flash.py)
  flash = match_flash(lowered) if kind == "CPU" and not NOOPT else None
  # and a reduction over recomputed scores (engine/recompute.py: attention's backward) as tiles of them (codegen/cpu_flash_bwd.py)
  rec = match_recomputed(lowered) if kind == "CPU" and not NOOPT and flash is None else None
  sink = lowered if flash is not None or rec is not None or (on_gpu and not NOOPT) else online_softmax(lowered)
  applied: list[str] = describe_flash(flash) if flash is not None else describe_recomputed(rec) if rec is not None else []
  gemm = None
  if kind == "CPU" and flash is None and rec is None: sink, applied, gemm = optimize_cpu(sink)
  program = linearize(sink)
  base = kernel_name(program)
  params = [u for u in program if u.op is Ops.PARAM]
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  cost = _cost(program)  # of the loops as lowered: a GPU mapping turns them into thread indices
  # (the flash kernel computes each score once, where its lowered loops compute it once per sum and column)
  if flash is not None: cost = (flash_flops(flash), sum(p.arg[1] * p.dtype.itemsize for p in params))
  if rec is not None: cost = (recomputed_flops(rec), sum(p.arg[1] * p.dtype.itemsize for p in params))
  if kind == "CUDA":
    from picograd.codegen.cuda import CUDATarget, render_cuda
    name, source, program, dims, meta = render_cuda(base, sink, target if target is not None else CUDATarget())
    return name, source, program, dims, {**meta, "cost": cost}
  if kind == "PYTHON" and EMULATE == "CUDA":
    # the PYTHON device runs the kernel as the CUDA mapping pass puts it on a GPU, every thread at once
    from picograd.codegen.cuda import CUDATarget
    from picograd.codegen.cuda.render import describe_mapping, map_kernel
    plan, arg, program = map_kernel(sink, program, target if target is not None else CUDATarget())
    applied = [f"emulating the CUDA mapping {plan}", *describe_mapping(plan, arg, program)[1:]]
  renderer = {"CPU": "picograd.codegen.llvm:render_llvm", "PYTHON": "picograd.codegen.python:render_python"}[kind]
  module, fn = renderer.split(":")
  render_fn = getattr(__import__(module, fromlist=[fn]), fn)
  if gemm is not None: render_fn = lambda name, program: render_gemm(name, gemm, params)  # noqa: E731
  if flash is not None: render_fn = lambda name, program: render_flash(name, flash, params)  # noqa: E731
  if rec is not None: render_fn = lambda name, program: render_recomputed(name, rec, params)  # noqa: E731
  # the name carries a hash of the body so different kernels never collide in one process
  digest = hashlib.sha256(render_fn("KERNEL", program).encode()).hexdigest()[:8]
  name = f"{base}_{digest}"
  source = render_fn(name, program)
  outer = row_tiles(gemm) if gemm is not None else flash_tiles(flash) if flash is not None else \
    recomputed_tiles(rec) if rec is not None else glob[0].arg[1] if glob else 0
  work = _ops_executed(program)
  checked = any(u.op is Ops.CHECK for u in program)
  if kind == "CPU" and outer > 1: applied.append(f"outer loop of {outer} splittable across threads (the runtime splits from enough work)")
  # packs: each slice of the outer loop packs its operands first (a GEMM), so the runtime splits it no finer than its threads
  meta = {"n_params": len(params) + checked, "outer": outer, "work": work, "opts": applied, "cost": cost, "packs": gemm is not None,
          "param_types": [(p.dtype.np.str if p.dtype.name != "bfloat16" else "<u2", p.arg[1]) for p in params] + [("<i8", 1)] * checked}
  return name, source, program, LaunchDims((outer,)), meta


def render_spec(ast: UOp, device: str, target: Any = None) -> ProgramSpec:
  """Lower and render `ast` for `device` (see `render`) into a `ProgramSpec`, with the text of every stage and its cost."""
  name, source, program, dims, meta = render(ast, device, target)
  flops, nbytes = meta["cost"]
  return ProgramSpec(name, device, print_graph(ast), print_program(program), source, dims, meta, flops, nbytes, kernel_checks(program))


__all__ = ["ProgramSpec", "render", "render_spec", "kernel_checks", "optimize_cpu"]
