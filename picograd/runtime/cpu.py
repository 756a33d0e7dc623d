"""The CPU device: LLVM IR compiled by llvmlite for the host CPU, loaded with MCJIT, called through ctypes.

Compiling parses and verifies the IR, optimizes it at O3 with the loop and SLP vectorizers for
the host's exact CPU, and emits an object file; that object is what the disk cache keeps, so a
second process only links it. Kernels take (buffers..., start, end) and the launcher splits
the outer loop across threads when there is enough work (ctypes releases the GIL).
Large buffers are mmap-ed with huge pages and reused through the allocator's cache, because a
fresh page-faulting output costs more than the arithmetic.
"""
from __future__ import annotations
import ctypes, mmap, os, threading, time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
import numpy as np
from picograd.helpers import THREADS
from picograd.runtime.device import Allocator, Compiler, Device, DeviceError, LaunchDims, Program

try:
  import llvmlite.binding as llvm
except ImportError as e:  # pragma: no cover - llvmlite is a hard dependency
  raise DeviceError("the CPU device needs llvmlite (pip install llvmlite)") from e

HUGE_PAGE = 2 << 20
# Handing a slice to a pool thread costs tens of microseconds, and waiting on it more when the other
# core is busy: the small kernels of a training step (a few million instructions, ~150 us) run faster
# on one thread; large elementwise kernels, reductions and matmuls still split.
THREAD_MIN_WORK = 1 << 24


class CPUMemory:
  """A block of host memory and its address. Large blocks are anonymous mmaps advised to use huge pages."""
  __slots__ = ("addr", "keep")

  def __init__(self, nbytes: int):
    if nbytes >= HUGE_PAGE:
      try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
      except (OSError, OverflowError) as e:  # ENOMEM or beyond the address space: the allocator names the size
        raise MemoryError(str(e)) from e
      if hasattr(m, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"): m.madvise(mmap.MADV_HUGEPAGE)
      self.keep: Any = m
      self.addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    else:
      self.keep = (ctypes.c_char * max(nbytes, 64))()
      self.addr = ctypes.addressof(self.keep)


class CPUAllocator(Allocator):
  def _alloc(self, nbytes: int) -> CPUMemory: return CPUMemory(nbytes)
  def _free(self, handle: CPUMemory, nbytes: int) -> None: pass  # dropping the reference returns the memory
  def copyin(self, handle: CPUMemory, src: memoryview) -> None:
    ctypes.memmove(handle.addr, np.frombuffer(src, np.uint8).ctypes.data, src.nbytes)
  def copyout(self, dest: memoryview, handle: CPUMemory) -> None:
    ctypes.memmove(np.frombuffer(dest, np.uint8).ctypes.data, handle.addr, dest.nbytes)


_llvm_lock = threading.Lock()
_target_machine = None


def _llvm() -> Any:
  """The target machine for this host's exact CPU (and its vector features)."""
  global _target_machine
  with _llvm_lock:
    if _target_machine is None:
      llvm.initialize_native_target()
      llvm.initialize_native_asmprinter()
      target = llvm.Target.from_default_triple()
      _target_machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                                      opt=3, reloc="pic", codemodel="jitdefault")
  return _target_machine


class LLVMCompiler(Compiler):
  def __init__(self):
    _llvm()  # initializes LLVM's native target, which the host CPU queries below need
    self.cache_key = f"llvm-{llvm.llvm_version_info} {llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()} O3"

  def optimize(self, src: str) -> Any:
    tm = _llvm()
    try:
      mod = llvm.parse_assembly(src)
      mod.verify()
    except RuntimeError as e:
      numbered = "\n".join(f"{i + 1:4d} | {line}" for i, line in enumerate(src.splitlines()))
      raise RuntimeError(f"LLVM rejected the generated IR:\n{numbered}\n--- LLVM says ---\n{e}") from None
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pto.loop_interleaving = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod

  def compile(self, src: str, name: str) -> bytes:
    return _llvm().emit_object(self.optimize(src))

  def disassemble(self, lib: bytes, src: str = "") -> str:
    return str(self.optimize(src)) if src else ""


_pool: ThreadPoolExecutor | None = None
# object file -> (its MCJIT engine, the kernel's address). One engine per object: objects added
# to a shared engine after the first were not relocated correctly.
_loaded: dict[bytes, tuple[Any, int]] = {}


# the cores this process may run on (a taskset or container limit counts), asked once: a syscall per launch shows in small kernels
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _threads() -> int:
  """Worker threads: THREADS, else every core this process may run on."""
  return int(THREADS) or _CORES


class CPUProgram(Program):
  """A kernel linked by MCJIT. meta: n_params, outer (outer loop size, 0 if none), work (instructions executed per run)."""

  def __init__(self, device: Device, name: str, lib: bytes, meta: dict[str, Any]):
    super().__init__(device, name, lib, meta)
    tm = _llvm()
    with _llvm_lock:
      if lib not in _loaded:
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        engine.add_object_file(llvm.ObjectFileRef.from_data(lib))
        engine.finalize_object()
        _loaded[lib] = (engine, engine.get_function_address(name))
      addr = _loaded[lib][1]
    if not addr: raise RuntimeError(f"CPU: kernel {name} was not found in its compiled object")
    argtypes = [ctypes.c_void_p] * meta["n_params"] + [ctypes.c_int64, ctypes.c_int64]
    self.fn = ctypes.CFUNCTYPE(None, *argtypes)(addr)

  def __call__(self, handles: list[Any], dims: LaunchDims, wait: bool = False) -> float | None:
    global _pool
    # a wrong count would pass a pointer as the loop bounds: fail loudly instead
    if len(handles) != self.meta["n_params"]: raise RuntimeError(f"{self.name}: {len(handles)} buffers for {self.meta['n_params']} parameters")
    ptrs = [h.addr for h in handles]
    outer = self.meta["outer"]
    st = time.perf_counter() if wait else 0.0
    n = min(_threads(), outer) if self.meta["work"] >= THREAD_MIN_WORK else 1
    if n <= 1: self.fn(*ptrs, 0, max(outer, 1))
    else:
      if _pool is None: _pool = ThreadPoolExecutor(_threads(), thread_name_prefix="picograd-cpu")
      bounds = [outer * i // n for i in range(n + 1)]
      futures = [_pool.submit(self.fn, *ptrs, bounds[i], bounds[i + 1]) for i in range(1, n)]
      self.fn(*ptrs, bounds[0], bounds[1])
      for f in futures: f.result()
    return time.perf_counter() - st if wait else None


def open_device(name: str) -> Device:
  if name != "CPU": raise DeviceError(f"there is only one CPU device, not {name}")
  return Device(name, CPUAllocator(name), LLVMCompiler(), CPUProgram)
