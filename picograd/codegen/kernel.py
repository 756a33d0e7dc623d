"""From a scheduled kernel graph to a runnable program: lower, linearize, render for the device, compile, load.

`get_kernel(ast, device)` is cached by (graph, device): hash-consing makes structurally equal
kernels the same object, so a training loop compiles each kernel once. The disk cache (runtime)
makes a new process skip the compiler too. Every stage is kept as text for DEBUG, DUMP and
`picograd.schedule`.
"""
from __future__ import annotations
import hashlib, os
from dataclasses import dataclass
from picograd.helpers import DEBUG, DUMP, NOOPT
from picograd.ir.ops import UOp, Ops, toposort
from picograd.ir.printer import print_graph, print_program
from picograd.codegen.lower import lower_kernel
from picograd.codegen.linearize import linearize
from picograd.codegen.opt import optimize
from picograd.codegen.transcendental import approximate_transcendentals
from picograd.runtime.device import LaunchDims, Program, get_device
from picograd.runtime.cache import cached_compile


@dataclass
class CompiledKernel:
  name: str
  device: str
  ir: str          # the fused UOp graph
  program_text: str  # the linearized program
  source: str      # LLVM IR / CUDA C / numpy code
  program: Program
  dims: LaunchDims
  flops: int       # estimated arithmetic ops per run
  bytes: int       # bytes read and written per run
  # (exception name, message) per bit of the error word, for kernels with CHECKs: they take the word as a last argument
  checks: tuple[tuple[str, str], ...] = ()

  def __repr__(self) -> str: return f"<kernel {self.name} on {self.device}>"


def _kernel_name(ast: UOp, program: list[UOp]) -> str:
  glob = [u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  red = [u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "reduce"]
  kind = "r" if red else "E"
  return f"{kind}_{'_'.join(map(str, glob + red)) or 'scalar'}"


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


_kernels: dict[tuple[UOp, str, bool], CompiledKernel] = {}


def render(ast: UOp, device: str) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """Lower and render `ast` for `device`: (name, source, linear program, launch dims, program meta)."""
  sink = lower_kernel(ast)
  kind = device.split(":")[0]
  if kind == "CPU": sink = optimize(approximate_transcendentals(sink))
  program = linearize(sink)
  base = _kernel_name(ast, program)
  params = [u for u in program if u.op is Ops.PARAM]
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  if kind == "CUDA":
    from picograd.codegen.cuda import render_cuda
    return render_cuda(base, program, get_device(device))
  renderer = {"CPU": "picograd.codegen.llvm:render_llvm", "PYTHON": "picograd.codegen.python:render_python"}[kind]
  module, fn = renderer.split(":")
  render_fn = getattr(__import__(module, fromlist=[fn]), fn)
  # the name carries a hash of the body so different kernels never collide in one process
  digest = hashlib.sha256(render_fn("KERNEL", program).encode()).hexdigest()[:8]
  name = f"{base}_{digest}"
  source = render_fn(name, program)
  outer = glob[0].arg[1] if glob else 0
  work = _ops_executed(program)
  checked = any(u.op is Ops.CHECK for u in program)
  meta = {"n_params": len(params) + checked, "outer": outer, "work": work,
          "param_types": [(p.dtype.np.str if p.dtype.name != "bfloat16" else "<u2", p.arg[1]) for p in params] + [("<i8", 1)] * checked}
  return name, source, program, LaunchDims((outer,)), meta


def is_compiled(ast: UOp, device: str) -> bool:
  """Whether `get_kernel(ast, device)` would return a kernel this process already compiled (under the current NOOPT)."""
  return (ast, device, bool(NOOPT)) in _kernels


def get_kernel(ast: UOp, device: str) -> CompiledKernel:
  key = (ast, device, bool(NOOPT))
  if (k := _kernels.get(key)) is not None: return k
  name, source, program, dims, meta = render(ast, device)
  dev = get_device(device)
  lib = cached_compile(dev.compiler, source, name)
  flops, nbytes = _cost(program)
  k = CompiledKernel(name, device, print_graph(ast), print_program(program), source, dev.program(dev, name, lib, meta), dims, flops, nbytes,
                     kernel_checks(program))
  _kernels[key] = k
  _show(k, dev, lib)
  return k


def _show(k: CompiledKernel, dev, lib: bytes) -> None:
  if DEBUG >= 3: print(f"--- kernel {k.name} on {k.device}: fused graph\n{k.ir}")
  if DEBUG >= 5: print(f"--- {k.name}: linearized\n{k.program_text}")
  if DEBUG >= 4: print(f"--- {k.name}: source\n{k.source}")
  if DEBUG >= 6: print(f"--- {k.name}: compiled\n{_disassemble(dev, lib, k.source)}")
  if DUMP.value:
    folder = str(DUMP.value)
    os.makedirs(folder, exist_ok=True)
    ext = {"CPU": "ll", "CUDA": "cu", "PYTHON": "py"}[k.device.split(":")[0]]
    for suffix, text in (("graph.txt", k.ir), ("linear.txt", k.program_text), (f"src.{ext}", k.source),
                         ("compiled.txt", _disassemble(dev, lib, k.source))):
      with open(os.path.join(folder, f"{k.name}.{suffix}"), "w") as f: f.write(text)


def _disassemble(dev, lib: bytes, source: str) -> str:
  try:
    return dev.compiler.disassemble(lib, source)
  except TypeError:
    return dev.compiler.disassemble(lib)


__all__ = ["get_kernel", "is_compiled", "render", "CompiledKernel", "toposort"]
