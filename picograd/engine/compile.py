"""Compiling kernels (engine layer): codegen renders a `ProgramSpec`, the runtime compiles it (disk cache) and loads it.

`get_kernel(ast, device)` is cached by (graph, device, NOOPT): hash-consing makes structurally
equal kernels the same object, so a training loop compiles each kernel once. The disk cache
(`runtime/cache.py`) makes a new process skip the compiler too, and `engine/spec_cache.py` the rendering. Every stage is kept as text for
DEBUG, DUMP and `picograd.schedule`. This is where codegen and the runtime meet: neither imports
the other.
"""
from __future__ import annotations
import os
from dataclasses import dataclass
from typing import Any
from picograd.helpers import DEBUG, DUMP, EMULATE, NOOPT, TF32, TMA, LaunchDims
from picograd.ir.ops import UOp
from picograd.codegen.kernel import ProgramSpec, render_spec
from picograd.runtime.device import Device, Program, get_device
from picograd.runtime.cache import cached_compile
from picograd.engine.spec_cache import cached_spec


@dataclass
class CompiledKernel:
  """A loaded program with the spec it came from."""
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
  opts: tuple[str, ...] = ()  # the optimizations codegen applied, one line each (DEBUG=3)

  def __repr__(self) -> str: return f"<kernel {self.name} on {self.device}>"


_kernels: dict[tuple[UOp, str, bool, str, bool, bool], CompiledKernel] = {}


def render_target(dev: Device) -> Any:
  """What the renderer must know about an opened device beyond its kind, as plain data (None where nothing)."""
  if dev.name.split(":")[0] != "CUDA": return None
  from picograd.codegen.cuda import target_of
  return target_of(dev)


def is_compiled(ast: UOp, device: str) -> bool:
  """Whether `get_kernel(ast, device)` would return a kernel this process already compiled (under the current NOOPT)."""
  return (ast, device, bool(NOOPT), str(EMULATE.value), bool(TF32), bool(TMA)) in _kernels


def get_kernel(ast: UOp, device: str) -> CompiledKernel:
  key = (ast, device, bool(NOOPT), str(EMULATE.value), bool(TF32), bool(TMA))
  if (k := _kernels.get(key)) is not None: return k
  dev = get_device(device)
  target = render_target(dev)
  spec: ProgramSpec = cached_spec(ast, device, target, lambda: render_spec(ast, device, target), dev.compiler.cache_key)
  lib = cached_compile(dev.compiler, spec.source, spec.name)
  k = CompiledKernel(spec.name, device, spec.ir, spec.program_text, spec.source, dev.program(dev, spec.name, lib, spec.meta), spec.dims,
                     spec.flops, spec.bytes, spec.checks, tuple(spec.meta.get("opts", ())))
  _kernels[key] = k
  _show(k, dev, lib)
  return k


def _show(k: CompiledKernel, dev: Device, lib: bytes) -> None:
  if DEBUG >= 3:
    print(f"--- kernel {k.name} on {k.device}: fused graph\n{k.ir}")
    print(f"--- {k.name}: optimizations\n" + ("\n".join(f"  {o}" for o in k.opts) if k.opts else "  none" + (" (NOOPT=1)" if NOOPT else "")))
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


def _disassemble(dev: Device, lib: bytes, source: str) -> str:
  try:
    return dev.compiler.disassemble(lib, source)  # type: ignore[call-arg]
  except TypeError:
    return dev.compiler.disassemble(lib)


__all__ = ["CompiledKernel", "get_kernel", "is_compiled", "render_target"]
