"""The device registry and what every device provides: an allocator, a compiler, a program launcher.

A device is named `CPU`, `PYTHON`, `CUDA` or `CUDA:n`, or `CPU:n`: a virtual CPU device (its own
allocator and buffers on the same host, CPU_DEVICES of them, default 4), so sharding and
collectives are tested without GPUs. `get_device(name)` opens it on first use
and raises `DeviceError` naming what is missing when it cannot start; there is no silent
fallback. Buffers are untyped device memory plus a dtype and an element count; freed blocks go
back to a per-device cache so a training loop does not allocate (or page-fault) every step.
"""
from __future__ import annotations
import ctypes, importlib, threading
from dataclasses import dataclass, field
from typing import Any
import numpy as np
from picograd.dtype import DType
from picograd.helpers import DEBUG, DEV, Flag, LaunchDims


class DeviceError(RuntimeError):
  """A device could not be opened or used (missing library, no GPU, bad device name)."""


def host_address(view: memoryview) -> int:
  """The address of a contiguous host buffer, for copies through ctypes or a driver."""
  if not view.c_contiguous: raise ValueError("host buffer must be contiguous")
  if view.readonly: return np.frombuffer(view, dtype=np.uint8).ctypes.data  # numpy also takes read-only buffers, which ctypes does not
  return ctypes.addressof(ctypes.c_char.from_buffer(view))  # (a fifth of numpy's ~3 us: a makemore step makes three)


class Allocator:
  """Device memory with a cache of freed blocks, keyed by byte size.

  Subclasses implement `_alloc`, `_free`, `copyin` and `copyout`. When `_alloc` raises
  MemoryError the cache is emptied and the allocation retried once; a second failure raises a
  MemoryError that names the size.
  """

  def __init__(self, device: str):
    self.device = device
    self.cache: dict[int, list[Any]] = {}
    self.lock = threading.Lock()
    # bytes in live buffers ("current") and taken from the device, the cache included ("reserved"), with their peaks
    self.current = self.peak = self.reserved = self.peak_reserved = 0

  def alloc(self, nbytes: int) -> Any:
    with self.lock:
      if blocks := self.cache.get(nbytes):  # (a training step's batch tensors take the blocks the last step's freed)
        self._count(nbytes, 0)
        return blocks.pop()
    try:
      handle = self._alloc(nbytes)
    except MemoryError:
      self.free_cache()
      try:
        handle = self._alloc(nbytes)
      except MemoryError as e:
        raise MemoryError(f"{self.device}: out of memory allocating {nbytes} bytes ({nbytes / 2**20:.1f} MiB)") from e
    with self.lock: self._count(nbytes, nbytes)
    return handle

  def _count(self, used: int, reserved: int) -> None:
    self.current += used
    self.reserved += reserved
    self.peak, self.peak_reserved = max(self.peak, self.current), max(self.peak_reserved, self.reserved)

  def free(self, handle: Any, nbytes: int) -> None:
    with self.lock:
      self.cache.setdefault(nbytes, []).append(handle)
      self.current -= nbytes

  def free_cache(self) -> None:
    with self.lock:
      blocks, self.cache = self.cache, {}
      self.reserved -= sum(nbytes * len(handles) for nbytes, handles in blocks.items())
    for nbytes, handles in blocks.items():
      for h in handles: self._free(h, nbytes)

  def memory(self) -> dict[str, int]:
    """Bytes held by live buffers now and at most since the last reset ("current", "peak"), and taken from the device,
    the cache of freed blocks included ("reserved", "peak_reserved"): PyTorch's memory_allocated and memory_reserved."""
    with self.lock: return {"current": self.current, "peak": self.peak, "reserved": self.reserved, "peak_reserved": self.peak_reserved}

  def reset_peak(self) -> None:
    with self.lock: self.peak, self.peak_reserved = self.current, self.reserved

  # device specific
  def write_word(self, handle: Any, value: int) -> None:
    """Store one 32-bit word (a random-number counter) at the start of a buffer, ordered after the work already queued."""
    self.copyin(handle, np.array([value & 0xFFFFFFFF], dtype=np.uint32).data.cast("B"))

  def _alloc(self, nbytes: int) -> Any: raise NotImplementedError
  def _free(self, handle: Any, nbytes: int) -> None: raise NotImplementedError
  def copyin(self, handle: Any, src: memoryview) -> None: raise NotImplementedError
  def copyout(self, dest: memoryview, handle: Any) -> None: raise NotImplementedError

  def copyout_many(self, pairs: list[tuple[memoryview, Any]]) -> None:
    """Several copyouts; an asynchronous device queues them all and waits once."""
    for dest, handle in pairs: self.copyout(dest, handle)


class Compiler:
  """Turns rendered source into a loadable binary. `cache_key` names the compiler and its options for the disk cache."""
  cache_key: str = ""
  def compile(self, src: str, name: str) -> bytes: raise NotImplementedError
  def disassemble(self, lib: bytes) -> str:
    """What the compiler made of the source (optimized IR, PTX), for DEBUG=6 and the dump."""
    return ""


class Program:
  """A loaded kernel. Called with device buffer handles; returns the run time in seconds when `wait` is set."""
  def __init__(self, device: "Device", name: str, lib: bytes, meta: dict[str, Any]):
    self.device, self.name, self.lib, self.meta = device, name, lib, meta
  def __call__(self, handles: list[Any], dims: LaunchDims, wait: bool = False) -> float | None: raise NotImplementedError


@dataclass
class Device:
  """An opened device: its name, allocator, compiler and program class."""
  name: str
  allocator: Allocator
  compiler: Compiler
  program: type[Program]
  extra: dict[str, Any] = field(default_factory=dict)

  def synchronize(self) -> None:
    if (sync := self.extra.get("synchronize")) is not None: sync()


# modules that open each kind of device; each defines `open_device(name) -> Device`
_BACKENDS = {"CPU": "picograd.runtime.cpu", "PYTHON": "picograd.runtime.interpreter", "CUDA": "picograd.runtime.cuda"}
_SINGLE = ("PYTHON",)  # kinds with one device each: an index other than 0 names nothing
CPU_DEVICES = Flag("CPU_DEVICES", 4)  # how many virtual CPU devices (CPU:0 .. CPU:n-1) there are
_opened: dict[str, Device] = {}
_open_lock = threading.Lock()


_canonical: dict[str, str] = {}  # names seen before (every tensor and buffer asks), but not CPU:n, which CPU_DEVICES bounds


def canonicalize(name: str | None) -> str:
  """'cuda' -> 'CUDA', 'cuda:0' -> 'CUDA', 'CUDA:1' stays; None -> the default device from DEV."""
  if name is None: name = str(DEV.value)
  if (known := _canonical.get(name)) is not None: return known
  out = _canonicalize(name)
  if not out.startswith("CPU:"): _canonical[name] = out
  return out


def _canonicalize(name: str) -> str:
  base, _, idx = str(name).upper().partition(":")
  if base == "GPU": base = "CUDA"
  if base not in _BACKENDS:
    raise DeviceError(f"unknown device {name!r}; picograd knows {sorted(_BACKENDS)} (set DEV= or device=)")
  if (idx or ":" in str(name)) and not idx.isdigit(): raise DeviceError(f"bad device index in {name!r}: expected e.g. CUDA:1")
  # refused here, where the tensor is made, not when a lazy tensor first reaches the device
  if base in _SINGLE and idx not in ("", "0"): raise DeviceError(f"there is only one {base} device, not {name!r}")
  if base == "CPU" and idx and int(idx) >= int(CPU_DEVICES):
    raise DeviceError(f"{name!r}: there are {int(CPU_DEVICES)} virtual CPU devices (CPU:0 .. CPU:{int(CPU_DEVICES) - 1}; set CPU_DEVICES=n)")
  return base if idx in ("", "0") else f"{base}:{idx}"


def get_device(name: str | None = None) -> Device:
  name = canonicalize(name)
  if (dev := _opened.get(name)) is not None: return dev
  with _open_lock:
    if name not in _opened:
      module = importlib.import_module(_BACKENDS[name.split(":")[0]])
      _opened[name] = module.open_device(name)
      if DEBUG >= 1: print(f"opened device {name}")
  return _opened[name]


class Buffer:
  """`size` elements of `dtype` on `device`. Memory is taken on first use and handed back to the cache when freed."""
  __slots__ = ("_handle", "_allocator", "device", "size", "dtype")  # (a training step makes one per batch tensor)

  def __init__(self, device: str, size: int, dtype: DType):
    self._handle: Any = None  # first: `__del__` reads it even when a bad device name raises below
    self.device, self.size, self.dtype = canonicalize(device), size, dtype

  @property
  def nbytes(self) -> int: return self.size * self.dtype.itemsize

  @property
  def handle(self) -> Any:
    if self._handle is None:
      self._allocator = get_device(self.device).allocator
      self._handle = self._allocator.alloc(max(self.nbytes, 1))
    return self._handle

  @property
  def is_allocated(self) -> bool: return self._handle is not None

  def release(self) -> None:
    """Give the memory back to the allocator's cache now (the engine does, after a schedule's last reader of an intermediate);
    the next use takes memory again. Devices run a buffer's kernels in order, so a later owner of the block writes it after them."""
    if self._handle is not None:
      self._allocator.free(self._handle, max(self.nbytes, 1))
      self._handle = None

  # a dying buffer gives its memory back (a `weakref.finalize` per buffer cost ~3 us of every eager realize)
  def __del__(self) -> None: self.release()

  def copyin(self, data: np.ndarray) -> "Buffer":
    data = np.ascontiguousarray(data, dtype=self.dtype.np)
    assert data.size == self.size, f"copyin of {data.size} elements into a buffer of {self.size}"
    if self.size:
      handle = self.handle  # (taking memory sets `_allocator`)
      self._allocator.copyin(handle, data.data.cast("B"))  # (contiguous: its bytes in order)
    return self

  def numpy(self) -> np.ndarray: return read_buffers([self])[0]

  def __repr__(self) -> str: return f"<buf {self.device} {self.dtype.name}[{self.size}] #{id(self) % 10**6}>"


def read_buffers(buffers: list[Buffer]) -> list[np.ndarray]:
  """Each buffer's data on the host, the copies from one device queued together (one wait on an asynchronous device)."""
  out = [np.empty(b.size, dtype=b.dtype.np) for b in buffers]
  by_device: dict[str, list[tuple[memoryview, Any]]] = {}
  for b, host in zip(buffers, out):
    if b.size: by_device.setdefault(b.device, []).append((host.data.cast("B"), b.handle))
  for device, pairs in by_device.items(): get_device(device).allocator.copyout_many(pairs)
  return out


def default_device() -> str: return canonicalize(None)


def device_memory(device: str | None = None) -> dict[str, int]:
  """`device`'s memory in bytes (the default device's when None): "current" and "peak" in live buffers, "reserved" and
  "peak_reserved" taken from the device (freed blocks stay cached). Peaks count since the last `reset_peak_memory`."""
  return get_device(device).allocator.memory()


def reset_peak_memory(device: str | None = None) -> None:
  """Start `device_memory`'s peaks again from the memory in use now."""
  get_device(device).allocator.reset_peak()
