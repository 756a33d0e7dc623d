"""The CPU device: LLVM IR compiled by llvmlite for the host CPU, loaded with MCJIT, called through ctypes.

Compiling parses and verifies the IR, optimizes it at O3 with the loop and SLP vectorizers for
the host's exact CPU, and emits an object file; that object is what the disk cache keeps, so a
second process only links it. Kernels take (buffers..., start, end) and the launcher splits
the outer loop across threads when there is enough work (ctypes releases the GIL).
Launches are asynchronous (CPU_ASYNC=1, the default): a kernel split across threads is queued to
the pool's workers and the call returns, so Python builds the next graph while they stream. The
next launch, and every host access of memory (the allocator's copies, error words, a fork, exit),
first joins the job in flight; the job holds its buffers' memory, so freeing a buffer early is safe.
Large buffers are mmap-ed with huge pages and reused through the allocator's cache, because a
fresh page-faulting output costs more than the arithmetic.
"""
from __future__ import annotations
import ctypes, functools, mmap, os, struct, threading, time
from typing import Any
from picograd.helpers import THREADS, Flag, LaunchDims
from picograd.runtime.device import Allocator, Compiler, Device, DeviceError, Program, host_address
from picograd.runtime.cache import cached_compile
from picograd.runtime.cpu_pool import Pool

try:
  import llvmlite.binding as llvm
except ImportError as e:  # pragma: no cover - llvmlite is a hard dependency
  raise DeviceError("the CPU device needs llvmlite (pip install llvmlite)") from e

HUGE_PAGE = 2 << 20
# Kernels that execute fewer instructions than this run on the calling thread alone. The native pool (cpu_pool.py)
# hands a slice over in about a microsecond, but each split launch wakes (or keeps spinning) a worker that a loaded
# core may not run at once; measured on the 2-core CI machine (makemore MLP step at batch 512, jit: 1.0 ms at 2^24,
# 0.55-0.64 ms at 2^18, no better at 2^15 or 2^17), 2^18 (~0.1 ms of work) is where splitting starts to pay.
THREAD_MIN_WORK = 1 << 18
# A kernel of several times that work is cut into more slices than threads (up to SLICES_PER_THREAD each, every slice at
# least THREAD_MIN_WORK), which the threads claim in turn: a worker that starts late (preempted while it spun, on a loaded
# machine) then leaves one small slice to wait for, not half the kernel. Row sums of 4096^2 on the loaded 2-core machine:
# median 1.6-1.8 ms in 2 slices, 1.35-1.55 in 16 (PyTorch 1.4-1.5). Not for kernels that pack operands per slice (GEMM).
SLICES_PER_THREAD = 8
# 1: a kernel split across threads is queued and runs while the caller goes on (joined at the next launch or host access);
# 0: every launch returns when its kernel is done
CPU_ASYNC = Flag("CPU_ASYNC", 1)


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


class MemoryView:
  """`offset` bytes into a block of memory (a JIT replay's intermediates share one block): a handle like `CPUMemory`."""
  __slots__ = ("addr", "keep")

  def __init__(self, block: CPUMemory, offset: int):
    self.keep, self.addr = block, block.addr + offset


class CPUAllocator(Allocator):
  def _alloc(self, nbytes: int) -> CPUMemory:
    try:
      return CPUMemory(nbytes)
    except (OverflowError, OSError) as e:  # more than the address space (OverflowError) or than the system grants (ENOMEM)
      raise MemoryError(str(e)) from e
  def _free(self, handle: CPUMemory, nbytes: int) -> None: pass  # dropping the reference returns the memory
  def free_cache(self) -> None:
    _pool.wait()  # the kernel in flight holds the blocks it uses: they return to the system only once it is done
    super().free_cache()
  # the host touches memory only here (and in write_word, a copyin): the kernel in flight may read or write it, so wait
  def copyin(self, handle: CPUMemory, src: memoryview) -> None:
    _pool.wait()
    ctypes.memmove(handle.addr, host_address(src), src.nbytes)
  def copyout(self, dest: memoryview, handle: CPUMemory) -> None:
    _pool.wait()
    ctypes.memmove(host_address(dest), handle.addr, dest.nbytes)


_llvm_lock = threading.Lock()
_target_machine = None


@functools.cache
def _host() -> tuple[Any, str, str]:
  """LLVM's target for this host, its exact CPU and its features (asked once: each engine builds a target machine)."""
  llvm.initialize_native_target()
  llvm.initialize_native_asmprinter()
  return llvm.Target.from_default_triple(), llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def _new_target_machine() -> Any:
  """A target machine for this host's exact CPU (and its vector features)."""
  target, cpu, features = _host()
  return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic", codemodel="jitdefault")


def _llvm() -> Any:
  """The compiler's target machine. It is never handed to an MCJIT engine: an engine takes ownership of its target
  machine and deletes it with itself, which would free this shared one while the compiler still uses it."""
  global _target_machine
  with _llvm_lock:
    if _target_machine is None: _target_machine = _new_target_machine()
  return _target_machine


_PROCESS = ctypes.CDLL(None)  # the symbols of this process and the libraries it loaded


def _undefined_symbols(obj: bytes) -> list[str]:
  """The symbols an ELF object file needs from outside itself, read from its symbol table.

  LLVM turns some operations into calls to runtime helpers (compiler-rt/libgcc, e.g. __truncdfhf2 for
  double -> half). MCJIT resolves external symbols against the running process; one it cannot find
  becomes address 0 and the kernel jumps there. Objects that are not 64-bit little-endian ELF are not inspected.
  """
  if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1: return []
  shoff, = struct.unpack_from("<Q", obj, 0x28)
  shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
  sections = [struct.unpack_from("<IIQQQQII", obj, shoff + i * shentsize) for i in range(shnum)]
  names = []
  for _, kind, _, _, offset, size, link, _ in sections:
    if kind != 2: continue  # SHT_SYMTAB
    strtab = sections[link][4]
    for at in range(offset, offset + size, 24):
      name_at, _, _, shndx = struct.unpack_from("<IBBH", obj, at)
      if shndx == 0 and name_at:  # SHN_UNDEF with a name
        names.append(obj[strtab + name_at:obj.index(b"\0", strtab + name_at)].decode())
  return names


def unresolved_symbols(obj: bytes) -> list[str]:
  """The undefined symbols of `obj` that this process cannot provide (MCJIT would call address 0 for them)."""
  # MCJIT looks symbols up in the process (what dlsym finds) and among those added to LLVM; it builds the GOT itself
  return [s for s in _undefined_symbols(obj) if s != "_GLOBAL_OFFSET_TABLE_" and not llvm.address_of_symbol(s) and not hasattr(_PROCESS, s)]


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
    obj = _llvm().emit_object(self.optimize(src))
    if missing := unresolved_symbols(obj):
      numbered = "\n".join(f"{i + 1:4d} | {line}" for i, line in enumerate(src.splitlines()))
      raise RuntimeError(f"CPU: kernel {name} needs {', '.join(missing)}, which this process cannot provide "
                         f"(LLVM lowered an operation to a runtime library call):\n{numbered}")
    return obj

  def disassemble(self, lib: bytes, src: str = "") -> str:
    return str(self.optimize(src)) if src else ""


class _LoadedObject:
  """An object file linked by its own MCJIT engine, and everything that engine needs kept alive.

  One engine per object: objects added to a shared engine after the first were not relocated correctly.
  Each engine gets its own target machine, because the engine owns (and deletes) it. The object's
  bytes and its ObjectFileRef stay referenced for as long as the engine, so no collection order can
  free memory the engine still points into.
  """
  __slots__ = ("lib", "objref", "target_machine", "engine")

  def __init__(self, lib: bytes):
    self.lib = lib
    self.target_machine = _new_target_machine()
    self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.target_machine)
    self.objref = llvm.ObjectFileRef.from_data(lib)
    self.engine.add_object_file(self.objref)
    self.engine.finalize_object()


# object file -> its loaded form. Entries live as long as the process: a program's function pointer points into them.
_loaded: dict[bytes, _LoadedObject] = {}


# the cores this process may run on (a taskset or container limit counts), asked once: a syscall per launch shows in small kernels
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _threads() -> int:
  """Worker threads: THREADS, else every core this process may run on."""
  return int(THREADS) or _CORES


def _split(meta: dict[str, Any]) -> tuple[int, int]:
  """How many threads run a kernel, and in how many slices of its outer loop."""
  outer, work = meta["outer"], meta["work"]
  n = min(_threads(), outer) if work >= THREAD_MIN_WORK else 1
  if n <= 1 or meta.get("packs"): return n, n
  return n, min(outer, n * SLICES_PER_THREAD, max(n, work // max(THREAD_MIN_WORK, 1)))


class CPUProgram(Program):
  """A kernel linked by MCJIT. meta: n_params, outer (outer loop size, 0 if none), work (instructions executed per run)."""

  def __init__(self, device: Device, name: str, lib: bytes, meta: dict[str, Any]):
    super().__init__(device, name, lib, meta)
    _llvm()  # initializes LLVM's native target
    # a cached or foreign object calling a helper this process lacks would jump to address 0: refuse to link it
    if missing := unresolved_symbols(lib):
      raise RuntimeError(f"CPU: kernel {name}'s object needs {', '.join(missing)}, which this process cannot provide")
    self.loaded = _load(lib)
    with _llvm_lock: addr = self.loaded.engine.get_function_address(name)
    if not addr: raise RuntimeError(f"CPU: kernel {name} was not found in its compiled object")
    argtypes = [ctypes.c_void_p] * meta["n_params"] + [ctypes.c_int64, ctypes.c_int64]
    self.fn = ctypes.CFUNCTYPE(None, *argtypes)(addr)
    with _llvm_lock: self.slice_fn = self.loaded.engine.get_function_address(name + ".slice")  # 0 in objects made elsewhere

  def __call__(self, handles: list[Any], dims: LaunchDims, wait: bool = False) -> float | None:
    # a wrong count would pass a pointer as the loop bounds: fail loudly instead
    if len(handles) != self.meta["n_params"]: raise RuntimeError(f"{self.name}: {len(handles)} buffers for {self.meta['n_params']} parameters")
    ptrs = [h.addr for h in handles]
    outer = self.meta["outer"]
    if wait: _pool.wait()  # time this kernel alone
    st = time.perf_counter() if wait else 0.0
    n, slices = _split(self.meta) if self.slice_fn else (1, 1)
    if n > 1:
      args = (ctypes.c_void_p * len(ptrs))(*ptrs)
      # queued: the job keeps the handles (their memory) and its argument array alive until it is joined
      if _pool.run(self.slice_fn, args, outer, n, slices, (handles, args) if CPU_ASYNC.value and not wait else None):
        return time.perf_counter() - st if wait else None
    # too small to split: queued to run right after the kernel in flight (which it may read) when there is one
    if CPU_ASYNC.value and not wait and self.slice_fn and _pool.attach(self.slice_fn, ptrs, max(outer, 1), handles): return None
    _pool.wait()  # this thread runs the kernel: after the one in flight, whose output it may read
    self.fn(*ptrs, 0, max(outer, 1))
    return time.perf_counter() - st if wait else None


class _Record(ctypes.Structure):
  """One launch of a launch list, as cpu_pool.py's pg_run_list reads it."""
  _fields_ = [("fn", ctypes.c_void_p), ("args", ctypes.c_void_p), ("outer", ctypes.c_int64), ("n", ctypes.c_int64), ("err", ctypes.c_void_p)]


class LaunchList:
  """Kernel launches bound once and run in order by one native call (a JIT replay; the device's `extra["launch_list"]`).

  Each launch is (program, handles, checked, launch dims): its buffers' memory, the error word last for checked kernels.
  Argument arrays and thread counts are fixed here; `set_handle` rebinds one argument (a new input buffer), and calling
  the list returns the OR of the error words after the last launch, so a replay without failed checks reads nothing else."""

  def __init__(self, launches: list[tuple[CPUProgram, list[Any], bool, Any]], after: list[list[int]] | None = None):
    # (`after`, what each launch must follow, holds: the launches run in order)
    self.args = []
    self.records = (_Record * len(launches))()
    self.threads = 1
    for rec, (prog, handles, checked, _) in zip(self.records, launches):
      if len(handles) != prog.meta["n_params"]: raise RuntimeError(f"{prog.name}: {len(handles)} buffers for {prog.meta['n_params']} parameters")
      if not prog.slice_fn: raise RuntimeError(f"{prog.name}: its object has no slice entry to launch from a list")
      args = (ctypes.c_void_p * len(handles))(*[h.addr for h in handles])
      self.args.append(args)
      outer = prog.meta["outer"]
      n, slices = _split(prog.meta)
      rec.fn, rec.args, rec.n = prog.slice_fn, ctypes.addressof(args), slices
      rec.outer = outer if n > 1 else max(outer, 1)
      rec.err = handles[-1].addr if checked else None
      self.threads = max(self.threads, n)
    # the last kernel may be queued (CPU_ASYNC) when it is split and no launch has checks (their words are read at return)
    self.queue_last = bool(launches) and self.records[len(launches) - 1].n > 1 and not any(checked for _, _, checked, _ in launches)

  def set_handle(self, launch: int, arg: int, handle: Any) -> None:
    _pool.wait()  # the list's last kernel may still be reading this argument array
    self.args[launch][arg] = handle.addr

  def __call__(self) -> int:
    return _pool.run_list(self.records, len(self.records), self.threads, self if self.queue_last and CPU_ASYNC.value else None)


def _load(lib: bytes) -> _LoadedObject:
  with _llvm_lock:
    if lib not in _loaded: _loaded[lib] = _LoadedObject(lib)
    return _loaded[lib]


_pool = Pool(lambda src, name: cached_compile(LLVMCompiler(), src, name), _load)


class CPUDevice(Device):
  """A CPU device: `synchronize` waits for the kernel in flight. It sets no `extra["synchronize"]`, which marks a device
  whose failed checks are read late (CUDA's, engine/realize.py): a CPU realize reads its error words at once (a copyout,
  which waits), so it raises where the op ran."""
  def synchronize(self) -> None: _pool.wait()


def open_device(name: str) -> Device:
  if name.split(":")[0] != "CPU": raise DeviceError(f"not a CPU device: {name}")  # CPU:n are virtual devices on the same host
  # a JIT replay runs its kernels as one LaunchList and its intermediates live at offsets of one block (`MemoryView`)
  extra: dict[str, Any] = {"launch_list": LaunchList, "memory_view": MemoryView} if _pool.available else {}
  return CPUDevice(name, CPUAllocator(name), LLVMCompiler(), CPUProgram, extra)
