"""The CUDA device: NVRTC compiles CUDA C, the driver API allocates, loads and launches.

Everything goes through NVIDIA's `cuda-bindings` package: `cuda.bindings.nvrtc` compiles and
`cuda.bindings.driver` does the rest. Every status is checked; a failed call raises `CUDAError`
naming the call and the error.

Compiling needs NVRTC only (the `nvidia-cuda-nvrtc` wheel), not a GPU or a driver, so CI can
compile-check rendered kernels with `compile_cuda_source`. Kernels are compiled to a CUBIN for the
device's exact architecture; PTX is the fallback when NVRTC cannot target that architecture.

What `NVRTCCompiler.compile` returns (and the disk cache stores) is a small blob:

    struct "<6sBcI": magic b"PGCUDA", format version 1, kind (b"C" cubin / b"P" PTX), source length
    then the CUDA C source (UTF-8), then the image (a CUBIN, or NUL-terminated PTX text)

The source is kept so `disassemble` can produce PTX for a cached CUBIN. `unpack_lib` reads it.

Headers such as cuda_fp16.h come from, in order: the copy bundled inside NVRTC (13.x and newer;
extracted once under the picograd cache directory), the `nvidia-cuda-runtime` wheel or a CUDA
toolkit (found by `cuda.pathfinder`), then $CUDA_HOME/include and /usr/local/cuda/include.
Without headers, kernels that include none still compile.
"""
from __future__ import annotations
import ctypes, functools, os, re, struct, threading
from typing import Any, NamedTuple
from picograd.helpers import WGMMA, cache_dir, LaunchDims, TensorMapSpec
from picograd.runtime.device import Allocator, Compiler, Device, DeviceError, Program, host_address

try:
  from cuda.bindings import driver as cu, nvrtc
except ImportError as _e:  # the module must still import so open_device can say what is missing
  cu = nvrtc = None
  _IMPORT_ERROR: ImportError | None = _e
else:
  _IMPORT_ERROR = None


class CUDAError(RuntimeError):
  """A CUDA driver or NVRTC call failed. `call` names it; `code` is the status (None when a library could not load)."""
  def __init__(self, call: str, code: Any, message: str):
    super().__init__(f"{call} failed: {message}")
    self.call, self.code, self.detail = call, code, message


class CompileError(RuntimeError):
  """NVRTC rejected a kernel. The message holds the source with line numbers and the NVRTC log."""


# ---------------------------------------------------------------------------------------------
# status checking

def _require_bindings() -> None:
  if _IMPORT_ERROR is not None:
    raise CUDAError("import cuda.bindings", None, f"cuda-bindings is not installed (pip install cuda-bindings): {_IMPORT_ERROR}")


def _driver_error(call: str, code: Any) -> CUDAError:
  name, desc = getattr(code, "name", str(code)), ""
  try:  # asking the driver for the text may itself fail, e.g. once it is deinitialized
    err, text = cu.cuGetErrorString(code)
    if err == cu.CUresult.CUDA_SUCCESS and text: desc = f" ({text.decode(errors='replace')})"
  except Exception:
    pass
  return CUDAError(call, code, f"{name}{desc}")


def _cu(call: str, *args: Any) -> Any:
  """Call `cuda.bindings.driver.<call>(*args)`, raise CUDAError unless it succeeded, return its outputs."""
  err, *out = getattr(cu, call)(*args)
  if err != cu.CUresult.CUDA_SUCCESS: raise _driver_error(call, err)
  return out[0] if len(out) == 1 else tuple(out) or None


def _rtc(call: str, *args: Any) -> Any:
  """Like `_cu`, for `cuda.bindings.nvrtc`."""
  err, *out = getattr(nvrtc, call)(*args)
  if err != nvrtc.nvrtcResult.NVRTC_SUCCESS: raise CUDAError(call, err, err.name)  # nvrtcGetErrorString says no more than the name
  return out[0] if len(out) == 1 else tuple(out) or None


# ---------------------------------------------------------------------------------------------
# compiling (NVRTC only: works without a GPU or a driver)

@functools.cache
def nvrtc_version() -> tuple[int, int]:
  """NVRTC's (major, minor). Raises CUDAError when cuda-bindings or the NVRTC library cannot be loaded."""
  _require_bindings()
  try:
    return _rtc("nvrtcVersion")
  except CUDAError:
    raise
  except Exception as e:  # cuda.pathfinder raises its own errors when libnvrtc.so is nowhere to be found
    raise CUDAError("nvrtcVersion", None, f"cannot load NVRTC (pip install nvidia-cuda-nvrtc): {e}") from e


def nvrtc_unavailable_reason() -> str:
  """Why NVRTC cannot compile here, or "" when it can (for skipping compile checks cleanly)."""
  try:
    nvrtc_version()
    return ""
  except CUDAError as e:
    return str(e)


@functools.cache
def nvrtc_supported_archs() -> tuple[int, ...]:
  """The compute capabilities this NVRTC can compile for, e.g. (75, 80, ..., 90, 100, 120)."""
  nvrtc_version()
  return tuple(_rtc("nvrtcGetSupportedArchs"))


def _has_fp16_header(d: str | None) -> bool:
  return bool(d and os.path.isfile(os.path.join(d, "cuda_fp16.h")))


def _bundled_headers() -> str | None:
  """Extract the headers NVRTC carries inside itself (NVRTC 13+) into the cache directory, once per NVRTC version."""
  major, minor = nvrtc_version()
  dest = os.path.join(cache_dir(), "cuda-include", f"nvrtc-{major}.{minor}")
  try:
    if not _rtc("nvrtcGetBundledHeadersInfo")[0].available: return None
    _rtc("nvrtcInstallBundledHeaders", dest.encode(), nvrtc.NVRTC_INSTALL_HEADERS_SKIP_IF_EXISTS)
  except Exception:  # an older NVRTC lacks these entry points, or the cache directory is not writable
    return None
  return dest if _has_fp16_header(dest) else None


def _toolkit_headers() -> str | None:
  """Headers of the nvidia-cuda-runtime wheel or an installed CUDA toolkit."""
  try:
    from cuda.pathfinder import find_nvidia_header_directory
    if _has_fp16_header(found := find_nvidia_header_directory("cudart")): return found
  except Exception:  # cuda-pathfinder missing or too old: fall through to the usual places
    pass
  for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
    if root and _has_fp16_header(d := os.path.join(root, "include")): return d
  return None


@functools.cache
def cuda_include_dirs() -> tuple[str, ...]:
  """The -I directories passed to NVRTC: one holding cuda_fp16.h / cuda_bf16.h, plus its cccl/ when present. May be empty."""
  d = _bundled_headers() or _toolkit_headers()
  if d is None: return ()
  return (d, os.path.join(d, "cccl")) if os.path.isdir(os.path.join(d, "cccl")) else (d,)


def default_options() -> tuple[str, ...]:
  """NVRTC options picograd compiles with. No --use_fast_math: results must match the CPU backend."""
  return ("--std=c++17", "-default-device", *(f"-I{d}" for d in cuda_include_dirs()))


_LIB_HEADER = struct.Struct("<6sBcI")
_LIB_MAGIC, _LIB_VERSION = b"PGCUDA", 1


class CUDALib(NamedTuple):
  """A compiled kernel library, unpacked: kind is "cubin" or "ptx"."""
  kind: str
  source: str
  image: bytes


def pack_lib(kind: str, source: str, image: bytes) -> bytes:
  src = source.encode()
  return _LIB_HEADER.pack(_LIB_MAGIC, _LIB_VERSION, b"C" if kind == "cubin" else b"P", len(src)) + src + image


def unpack_lib(lib: bytes) -> CUDALib:
  magic, version, kind, srclen = _LIB_HEADER.unpack_from(lib)
  if magic != _LIB_MAGIC or version != _LIB_VERSION: raise ValueError("not a picograd CUDA library (bad header)")
  start = _LIB_HEADER.size
  return CUDALib("cubin" if kind == b"C" else "ptx", lib[start:start + srclen].decode(), lib[start + srclen:])


_NO_HEADERS_HINT = "\n(no CUDA headers were found: install nvidia-cuda-nvrtc 13+ or nvidia-cuda-runtime, or set CUDA_HOME)"


def _numbered(src: str) -> str:
  return "\n".join(f"{i:4d} | {line}" for i, line in enumerate(src.splitlines(), 1))


def _nvrtc_compile(src: str, name: str, target: str, options: tuple[str, ...]) -> bytes:
  """Compile with NVRTC for `target` (sm_XY gives a CUBIN, compute_XY gives PTX). Source errors raise CompileError."""
  prog = _rtc("nvrtcCreateProgram", src.encode(), f"{name}.cu".encode(), 0, [], [])
  try:
    opts = [f"--gpu-architecture={target}".encode(), *(o.encode() for o in options)]
    status, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
      log = bytearray(_rtc("nvrtcGetProgramLogSize", prog))
      _rtc("nvrtcGetProgramLog", prog, log)
      log_text = log.rstrip(bytes(1)).decode(errors="replace").rstrip()
      if status != nvrtc.nvrtcResult.NVRTC_ERROR_COMPILATION:  # e.g. an option or arch this NVRTC rejects
        raise CUDAError("nvrtcCompileProgram", status, f"{status.name}: {log_text}")
      hint = "" if cuda_include_dirs() else _NO_HEADERS_HINT
      raise CompileError(f"NVRTC could not compile {name!r} for {target} with {' '.join(options)}\n"
                         f"--- source ---\n{_numbered(src)}\n--- NVRTC log ---\n{log_text}{hint}")
    get_size, get = ("nvrtcGetCUBINSize", "nvrtcGetCUBIN") if target.startswith("sm_") else ("nvrtcGetPTXSize", "nvrtcGetPTX")
    image = bytearray(_rtc(get_size, prog))
    _rtc(get, prog, image)
    return bytes(image)
  finally:
    nvrtc.nvrtcDestroyProgram(prog)


def _parse_arch(arch: str) -> tuple[int, str]:
  if not (m := re.fullmatch(r"(?:sm|compute)_(\d+)([a-z]?)", arch)): raise ValueError(f"bad CUDA arch {arch!r}: expected e.g. 'sm_90'")
  return int(m.group(1)), m.group(2)


def _ptx_target(cc: int, suffix: str) -> str:
  """PTX for the newest virtual architecture NVRTC knows that the device can run (the driver JIT-compiles it)."""
  if cc in nvrtc_supported_archs(): return f"compute_{cc}{suffix}"
  if not (older := [a for a in nvrtc_supported_archs() if a <= cc]):
    raise CUDAError("nvrtcCompileProgram", None, f"NVRTC {'.'.join(map(str, nvrtc_version()))} cannot target sm_{cc} "
                    f"(it supports {', '.join(f'sm_{a}' for a in nvrtc_supported_archs())})")
  return f"compute_{max(older)}"


def compile_cuda_source(src: str, arch: str = "sm_90", name: str = "kernel", options: tuple[str, ...] | None = None) -> bytes:
  """Compile CUDA C to a picograd CUDA library (see the module docstring) for `arch`, without needing a GPU.

  A CUBIN for `arch` when NVRTC supports it, else PTX. Raises CompileError for a bad source, CUDAError when NVRTC is missing.
  """
  nvrtc_version()
  options = default_options() if options is None else options
  cc, suffix = _parse_arch(arch)
  if cc in nvrtc_supported_archs():
    try:
      return pack_lib("cubin", src, _nvrtc_compile(src, name, f"sm_{cc}{suffix}", options))
    except CUDAError:
      pass  # NVRTC could not make a CUBIN (not a source error): PTX below may still work
  return pack_lib("ptx", src, _nvrtc_compile(src, name, _ptx_target(cc, suffix), options))


def cuda_source_to_ptx(src: str, arch: str = "sm_90", name: str = "kernel", options: tuple[str, ...] | None = None) -> str:
  """PTX text for `src`, for DEBUG=6 and the dump."""
  nvrtc_version()
  options = default_options() if options is None else options
  return _nvrtc_compile(src, name, _ptx_target(*_parse_arch(arch)), options).rstrip(bytes(1)).decode()


class NVRTCCompiler(Compiler):
  """Compiles CUDA C for one architecture; `cache_key` names NVRTC's version, the arch and the options."""

  def __init__(self, arch: str, options: tuple[str, ...] | None = None):
    _parse_arch(arch)
    self.arch, self.options = arch, default_options() if options is None else options
    self.cache_key = f"nvrtc-{'.'.join(map(str, nvrtc_version()))} {arch} {' '.join(self.options)}"

  def compile(self, src: str, name: str) -> bytes: return compile_cuda_source(src, self.arch, name, self.options)

  def disassemble(self, lib: bytes) -> str:
    kind, source, image = unpack_lib(lib)
    if kind == "ptx": return image.rstrip(bytes(1)).decode()
    return cuda_source_to_ptx(source, self.arch, options=self.options)


# ---------------------------------------------------------------------------------------------
# the device: context, memory, programs

_bound = threading.local()  # the CUDAContext each thread last bound through picograd


class CUDAContext:
  """One GPU's primary context and the stream all of picograd's work on it goes to."""

  def __init__(self, ordinal: int):
    self.ordinal = ordinal
    self.device = _cu("cuDeviceGet", ordinal)
    self.context = _cu("cuDevicePrimaryCtxRetain", self.device)
    self.make_current()
    # non-blocking: no implicit ordering with the legacy default stream, which other libraries may use
    self.stream = _cu("cuStreamCreate", cu.CUstream_flags.CU_STREAM_NON_BLOCKING.value)
    self.event: Any = None  # marks a point of the stream another GPU's stream waits for (peer copies)

  def make_current(self) -> None:
    """Bind the context to the calling thread: contexts are per thread, and picograd may call from any thread. Each thread's
    binding is remembered, so only a change of GPU costs a driver call (a makemore step made five binding calls for one
    GPU); code outside picograd that binds another GPU's context in between must bind it back."""
    if getattr(_bound, "context", None) is not self:
      _cu("cuCtxSetCurrent", self.context)
      _bound.context = self

  def attribute(self, attr: str) -> int: return _cu("cuDeviceGetAttribute", getattr(cu.CUdevice_attribute, attr), self.device)

  def synchronize(self) -> None:
    self.make_current()
    _cu("cuStreamSynchronize", self.stream)

  def wait_for(self, other: "CUDAContext") -> None:
    """Work queued on this stream from now on waits for the work queued on `other`'s so far (no host wait)."""
    if other is self: return
    other.make_current()
    if other.event is None: other.event = _cu("cuEventCreate", cu.CUevent_flags.CU_EVENT_DISABLE_TIMING.value)
    _cu("cuEventRecord", other.event, other.stream)
    self.make_current()
    _cu("cuStreamWaitEvent", self.stream, other.event, 0)


STAGED_COPY_MAX = 64 * 1024  # host-to-device copies up to this size go through pinned memory, with no wait
_STAGING_BYTES = 1 << 20


class CUDAAllocator(Allocator):
  """cuMemAlloc'd device memory; handles are device addresses (ints). Copies are ordered on the device's stream.

  A small host-to-device copy (a training step's batch) is copied into a ring of pinned host memory and queued from there:
  the caller's buffer is free at once and the host does not wait for the stream (the copy of a large one does). The ring
  starts over after a wait for the stream, when it is full."""

  def __init__(self, device: str, ctx: CUDAContext):
    super().__init__(device)
    self.ctx = ctx
    self.peers: set[CUDAContext] = set()  # source GPUs whose memory this one was allowed to read directly
    self.staging: int | None = None  # the pinned ring (cuMemHostAlloc), taken at the first small copy; freed with the process
    self.staged = 0  # bytes of it queued since the stream was last waited for

  def _alloc(self, nbytes: int) -> int:
    self.ctx.make_current()
    try:
      return int(_cu("cuMemAlloc", nbytes))
    except OverflowError as e:  # more bytes than a size_t holds
      raise MemoryError(f"{self.device}: cuMemAlloc of {nbytes} bytes: {e}") from e
    except CUDAError as e:
      if e.code == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY: raise MemoryError(f"{self.device}: cuMemAlloc of {nbytes} bytes: {e}") from e
      raise

  def _free(self, handle: int, nbytes: int) -> None:
    self.ctx.make_current()
    _cu("cuMemFree", handle)

  def copyin(self, handle: int, src: memoryview) -> None:
    if not src.nbytes: return
    self.ctx.make_current()
    if src.nbytes <= STAGED_COPY_MAX:
      if self.staging is None: self.staging = int(_cu("cuMemHostAlloc", _STAGING_BYTES, 0))
      if self.staged + src.nbytes > _STAGING_BYTES:  # the ring's earlier copies must be done before it is written again
        _cu("cuStreamSynchronize", self.ctx.stream)
        self.staged = 0
      at = self.staging + self.staged
      ctypes.memmove(at, host_address(src), src.nbytes)
      _cu("cuMemcpyHtoDAsync", handle, at, src.nbytes, self.ctx.stream)
      self.staged += -(-src.nbytes // 256) * 256
      return
    _cu("cuMemcpyHtoDAsync", handle, host_address(src), src.nbytes, self.ctx.stream)
    _cu("cuStreamSynchronize", self.ctx.stream)  # the caller may free or reuse `src` as soon as we return

  def copyout(self, dest: memoryview, handle: int) -> None: self.copyout_many([(dest, handle)])

  def copyout_many(self, pairs: list[tuple[memoryview, Any]]) -> None:
    """Queue every copy, wait for the stream once. Small ones (a loss and the error words read with it) land in the pinned
    ring, after the bytes its queued writes still use, and are moved to their destinations after the wait."""
    pairs = [(dest, handle) for dest, handle in pairs if dest.nbytes]
    if not pairs: return
    if any(dest.readonly for dest, _ in pairs): raise ValueError("copyout needs a writable host buffer")
    self.ctx.make_current()
    staged: list[tuple[memoryview, int]] = []
    for dest, handle in pairs:
      if dest.nbytes <= STAGED_COPY_MAX and self.staged + dest.nbytes <= _STAGING_BYTES:
        if self.staging is None: self.staging = int(_cu("cuMemHostAlloc", _STAGING_BYTES, 0))
        at = self.staging + self.staged
        self.staged += -(-dest.nbytes // 256) * 256
        staged.append((dest, at))
      else: at = host_address(dest)
      _cu("cuMemcpyDtoHAsync", at, handle, dest.nbytes, self.ctx.stream)
    _cu("cuStreamSynchronize", self.ctx.stream)
    self.staged = 0  # the stream is idle: every copy through the ring is done
    for dest, at in staged: ctypes.memmove(host_address(dest), at, dest.nbytes)

  def write_word(self, handle: int, value: int) -> None:
    """Queue a 32-bit store on the stream: kernels queued before it still read the old value, no host wait."""
    self.ctx.make_current()
    _cu("cuMemsetD32Async", handle, value & 0xFFFFFFFF, 1, self.ctx.stream)

  def copy_device_to_device(self, dst: int, src: int, nbytes: int) -> None:
    """Queue a copy on the stream; it runs after the kernels already queued, so no host synchronization is needed."""
    if not nbytes: return
    self.ctx.make_current()
    _cu("cuMemcpyDtoDAsync", dst, src, nbytes, self.ctx.stream)

  def copy_peer(self, dst: int, src_allocator: "CUDAAllocator", src: int, nbytes: int) -> None:
    """Queue a copy from another GPU's memory on this GPU's stream (cuMemcpyPeerAsync): it starts after the source GPU's
    queued work (which produced the data), and the source GPU's later work (which may overwrite it) waits for it."""
    if not nbytes: return
    if src_allocator.ctx not in self.peers:  # direct access over NVLink/PCIe where the GPUs allow it; else the driver stages the copy
      self.peers.add(src_allocator.ctx)
      if _cu("cuDeviceCanAccessPeer", self.ctx.device, src_allocator.ctx.device):
        self.ctx.make_current()
        err, = cu.cuCtxEnablePeerAccess(src_allocator.ctx.context, 0)
        if err not in (cu.CUresult.CUDA_SUCCESS, cu.CUresult.CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED):
          raise _driver_error("cuCtxEnablePeerAccess", err)
    self.ctx.wait_for(src_allocator.ctx)
    _cu("cuMemcpyPeerAsync", dst, self.ctx.context, src, src_allocator.ctx.context, nbytes, self.ctx.stream)
    src_allocator.ctx.wait_for(self.ctx)


_DEFAULT_DYNAMIC_SHARED = 48 * 1024  # what a kernel may use without opting in through a function attribute


def _pad3(dims: tuple[int, ...], what: str) -> tuple[int, int, int]:
  if not 1 <= len(dims) <= 3: raise ValueError(f"{what} must have 1 to 3 dimensions, got {dims}")
  return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))  # type: ignore[return-value]


class CUDAProgram(Program):
  """A kernel loaded with cuModuleLoadData. Every parameter is a device pointer; `global_size` is the grid in blocks."""

  def __init__(self, device: Device, name: str, lib: bytes, meta: dict[str, Any]):
    super().__init__(device, name, lib, meta)
    self.ctx: CUDAContext = device.extra["context"]
    self.max_shared: int = device.extra["max_shared"]
    kind, _, image = unpack_lib(lib)
    self.ctx.make_current()
    try:
      self.module = _cu("cuModuleLoadData", image)
    except CUDAError as e:
      raise CUDAError(e.call, e.code, f"{e.detail} (loading {kind} of kernel {name!r}; the driver "
                      f"{device.extra['driver_version']} may be older than NVRTC {'.'.join(map(str, nvrtc_version()))})") from e
    self.function = _cu("cuModuleGetFunction", self.module, name.encode())
    self.shared_allowed = _DEFAULT_DYNAMIC_SHARED
    self.events: tuple[Any, Any] | None = None

  def __call__(self, handles: list[Any], dims: LaunchDims, wait: bool = False) -> float | None:
    # the launch reads one pointer per parameter: a short list would make the driver read past it
    if len(handles) != self.meta["n_params"]: raise RuntimeError(f"{self.name}: {len(handles)} buffers for {self.meta['n_params']} parameters")
    grid, block = _pad3(dims.global_size, "global_size"), _pad3(dims.local_size, "local_size")
    self.ctx.make_current()
    self.allow_shared(dims.shared_bytes)
    values, pointers = _kernel_params(handles, self.meta.get("tensor_maps", ()))
    if wait:
      if self.events is None: self.events = (_cu("cuEventCreate", 0), _cu("cuEventCreate", 0))
      _cu("cuEventRecord", self.events[0], self.ctx.stream)
    _cu("cuLaunchKernel", self.function, *grid, *block, dims.shared_bytes, self.ctx.stream, ctypes.addressof(pointers), 0)
    if not wait: return None
    assert self.events is not None
    _cu("cuEventRecord", self.events[1], self.ctx.stream)
    _cu("cuEventSynchronize", self.events[1])
    return _cu("cuEventElapsedTime", *self.events) / 1e3

  def allow_shared(self, nbytes: int) -> None:
    """Opt the kernel in to `nbytes` of dynamic shared memory (beyond 48 KiB a launch must ask first)."""
    if nbytes > self.shared_allowed:
      if nbytes > self.max_shared:
        raise ValueError(f"kernel {self.name!r} asks for {nbytes} bytes of shared memory; the device allows {self.max_shared}")
      _cu("cuFuncSetAttribute", self.function, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, nbytes)
      self.shared_allowed = nbytes

  def __del__(self) -> None:
    try:
      self.ctx.make_current()
      for event in self.events or (): cu.cuEventDestroy(event)
      cu.cuModuleUnload(self.module)
    except Exception:  # at interpreter exit the bindings or the context may already be gone; the process frees it all anyway
      pass


@functools.lru_cache(maxsize=4096)
def _tensor_map(address: int, spec: TensorMapSpec) -> Any:
  """The TMA tensor map (CUtensorMap) of `spec` over the buffer at device address `address`: boxes land in shared memory
  in the 128-byte swizzle, elements past the tensor's edges read 0. Encoded once per buffer address and map."""
  start = address + spec.offset
  if start % 16: raise ValueError(f"a TMA tensor must start 16-byte aligned: buffer {address:#x} + {spec.offset} bytes is not")
  kinds = {1: "UINT8", 2: "UINT16", 4: "UINT32", 8: "UINT64"}
  rank = len(spec.dims)
  return _cu("cuTensorMapEncodeTiled", getattr(cu.CUtensorMapDataType, f"CU_TENSOR_MAP_DATA_TYPE_{kinds[spec.itemsize]}"), rank, start,
             [cu.cuuint64_t(d) for d in spec.dims], [cu.cuuint64_t(b) for b in spec.strides], [cu.cuuint32_t(b) for b in spec.box],
             [cu.cuuint32_t(1)] * rank, cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
             cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B, cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)


def _kernel_params(handles: list[Any], maps: list[TensorMapSpec] | tuple = ()) -> tuple[Any, Any]:
  """(values, pointers): kernelParams is a void** whose entries point at each argument's value: each device pointer, then
  each tensor map's 128 bytes (`maps`, over the buffers they name), encoded for these buffers."""
  values = (ctypes.c_void_p * len(handles))(*(int(h) for h in handles))
  tensor_maps = [_tensor_map(int(handles[m.param]), m) for m in maps]
  step = ctypes.sizeof(ctypes.c_void_p)
  addresses = [ctypes.addressof(values) + i * step for i in range(len(handles))] + [int(t.getPtr()) for t in tensor_maps]
  return (values, tensor_maps), (ctypes.c_void_p * len(addresses))(*addresses)


class CUDALaunchList:
  """Kernel launches bound once and replayed as one CUDA graph (a JIT replay; the device's `extra["launch_list"]`): one
  driver call launches them all, each after the launches it must follow (`after`, engine/replay.py:launch_order), instead
  of a Python call and a cuLaunchKernel per kernel.

  Each launch is (program, handles, checked, launch dims). `set_handle` rebinds one argument (a new input buffer): the
  node's parameters in the executable graph are updated before the next launch (running launches keep theirs). Error words
  are read later, by `check_errors`, as for any launch on the GPU, so calling the list returns 0."""

  def __init__(self, ctx: CUDAContext, launches: list[tuple[CUDAProgram, list[Any], bool, LaunchDims]], after: list[list[int]] | None = None):
    self.ctx, self.exec, self.graph = ctx, None, None
    self.launches = [(prog, list(handles)) for prog, handles, _, _ in launches]
    self.values: list[Any] = []
    self.params: list[Any] = []
    self.nodes: list[Any] = []
    self.dirty: set[int] = set()
    ctx.make_current()
    # the graph lives as long as its executable form: node handles (for parameter updates) belong to it
    self.graph = graph = _cu("cuGraphCreate", 0)
    # each node after the launches it must follow (`after`; by default each after the one before): the graph runs
    # independent kernels side by side
    order = after if after is not None else [[j - 1] if j else [] for j in range(len(launches))]
    for (prog, handles, _, dims), deps in zip(launches, order):
      if len(handles) != prog.meta["n_params"]: raise RuntimeError(f"{prog.name}: {len(handles)} buffers for {prog.meta['n_params']} parameters")
      prog.allow_shared(dims.shared_bytes)
      values, pointers = _kernel_params(handles, prog.meta.get("tensor_maps", ()))
      params = cu.CUDA_KERNEL_NODE_PARAMS()
      params.func = prog.function
      params.gridDimX, params.gridDimY, params.gridDimZ = _pad3(dims.global_size, "global_size")
      params.blockDimX, params.blockDimY, params.blockDimZ = _pad3(dims.local_size, "local_size")
      params.sharedMemBytes = dims.shared_bytes
      params.kernelParams = ctypes.addressof(pointers)
      self.values.append((values, pointers))  # the driver reads the arguments through these when a node is set
      self.params.append(params)
      before = [self.nodes[i] for i in deps]
      self.nodes.append(_cu("cuGraphAddKernelNode", graph, before, len(before), params))
    self.exec = _cu("cuGraphInstantiate", graph, 0)

  def set_handle(self, launch: int, arg: int, handle: Any) -> None:
    handles = self.launches[launch][1]
    if int(handles[arg]) != int(handle):
      handles[arg] = handle
      self.dirty.add(launch)

  def __call__(self) -> int:
    self.ctx.make_current()
    for i in self.dirty:  # new arguments (and tensor maps over the new buffers) for the nodes whose buffers changed
      prog, handles = self.launches[i]
      self.values[i] = _kernel_params(handles, prog.meta.get("tensor_maps", ()))
      self.params[i].kernelParams = ctypes.addressof(self.values[i][1])
    stale = [i for i in self.dirty if cu.cuGraphExecKernelNodeSetParams(self.exec, self.nodes[i], self.params[i])[0] != cu.CUresult.CUDA_SUCCESS]
    if stale:  # a change the executable graph cannot take in place: change the graph and instantiate it again, with every
      # node's current arguments (earlier in-place updates live only in the executable graph)
      for node, params in zip(self.nodes, self.params): _cu("cuGraphKernelNodeSetParams", node, params)
      cu.cuGraphExecDestroy(self.exec)
      self.exec = _cu("cuGraphInstantiate", self.graph, 0)
    self.dirty.clear()
    _cu("cuGraphLaunch", self.exec, self.ctx.stream)
    return 0

  def __del__(self) -> None:
    try:
      if self.exec is not None: cu.cuGraphExecDestroy(self.exec)
      if self.graph is not None: cu.cuGraphDestroy(self.graph)
    except Exception:  # at interpreter exit the bindings may already be gone
      pass


def open_device(name: str) -> Device:
  """Open "CUDA" or "CUDA:n" (n counts the GPUs visible to this process, so CUDA_VISIBLE_DEVICES applies)."""
  base, _, idx = name.upper().partition(":")
  if base != "CUDA" or (idx and not idx.isdigit()): raise DeviceError(f"bad CUDA device name {name!r}: expected CUDA or CUDA:n")
  ordinal = int(idx or 0)
  if _IMPORT_ERROR is not None: raise DeviceError(f"{name}: cuda-bindings is not installed (pip install cuda-bindings): {_IMPORT_ERROR}")
  try:
    _cu("cuInit", 0)
  except CUDAError as e:
    if e.code == cu.CUresult.CUDA_ERROR_NO_DEVICE:
      raise DeviceError(f"{name}: no CUDA GPU visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})") from e
    raise DeviceError(f"{name}: the CUDA driver failed to initialize: {e}") from e
  except (RuntimeError, OSError) as e:  # cuda.pathfinder could not find or load libcuda.so
    raise DeviceError(f"{name}: cannot load the CUDA driver (libcuda.so; is an NVIDIA driver installed?): {e}") from e
  if ordinal >= (count := _cu("cuDeviceGetCount")):
    if not count: raise DeviceError(f"{name}: no CUDA GPU visible")
    raise DeviceError(f"{name} requested but {count} device{'' if count == 1 else 's'} visible")
  ctx = CUDAContext(ordinal)
  cc = (ctx.attribute("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR"), ctx.attribute("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR"))
  # compute capability 9.0 compiles for sm_90a (WGMMA=1, the default): its warpgroup MMAs exist only there (and such code
  # runs on 9.0 only)
  arch = f"sm_{cc[0]}{cc[1]}" + ("a" if cc == (9, 0) and WGMMA else "")
  driver = _cu("cuDriverGetVersion")
  extra = {
    "context": ctx, "synchronize": ctx.synchronize,
    # a JIT replay: its kernels as one CUDA graph, its intermediates at offsets of one block (device addresses are ints)
    "launch_list": lambda launches, after=None: CUDALaunchList(ctx, launches, after), "memory_view": lambda handle, at: handle + at,
    "arch": arch, "compute_capability": cc,
    "name": _cu("cuDeviceGetName", 256, ctx.device).split(b"\0", 1)[0].decode(),
    "sm_count": ctx.attribute("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"),
    "max_shared": ctx.attribute("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
    "max_threads_per_block": ctx.attribute("CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK"),
    "warp_size": ctx.attribute("CU_DEVICE_ATTRIBUTE_WARP_SIZE"),
    "total_memory": _cu("cuDeviceTotalMem", ctx.device),
    "driver_version": f"{driver // 1000}.{driver % 1000 // 10}",
  }
  try:
    compiler = NVRTCCompiler(arch)
  except CUDAError as e:
    raise DeviceError(f"{name}: {e}") from e
  return Device(name, CUDAAllocator(name, ctx), compiler, CUDAProgram, extra)


__all__ = ["CUDAError", "CompileError", "CUDALib", "CUDAContext", "CUDALaunchList", "CUDAAllocator", "CUDAProgram", "NVRTCCompiler", "open_device",
           "compile_cuda_source", "cuda_source_to_ptx", "cuda_include_dirs", "default_options", "nvrtc_version",
           "nvrtc_supported_archs", "pack_lib", "unpack_lib"]
