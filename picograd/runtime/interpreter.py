"""The PYTHON device: runs kernels rendered as numpy code (codegen/python.py). Slow, simple, and the test oracle.

Its memory is numpy byte arrays; its "compiler" just checks the source parses; a program is
the rendered function, executed with the buffers viewed as typed 1-D arrays.
"""
from __future__ import annotations
import time, warnings
from typing import Any
import numpy as np
from picograd.runtime.device import Allocator, Compiler, Device, DeviceError, LaunchDims, Program


class NumpyAllocator(Allocator):
  def _alloc(self, nbytes: int) -> np.ndarray: return np.zeros(nbytes, dtype=np.uint8)
  def _free(self, handle: np.ndarray, nbytes: int) -> None: pass
  def copyin(self, handle: np.ndarray, src: memoryview) -> None: handle[:src.nbytes] = np.frombuffer(src, np.uint8)
  def copyout(self, dest: memoryview, handle: np.ndarray) -> None: np.frombuffer(dest, np.uint8)[:] = handle[:dest.nbytes]


class PythonCompiler(Compiler):
  cache_key = "python-numpy"
  def compile(self, src: str, name: str) -> bytes:
    compile(src, f"<kernel {name}>", "exec")  # syntax errors surface here, with the source
    return src.encode()


def _c_div(a, b):
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype.kind == "f": return a / b
  b = np.where(b == 0, 1, b)
  q = a // b  # floor division, then a step towards zero; np.abs would overflow at INT_MIN
  return np.where((q * b != a) & ((a < 0) != (b < 0)), q + 1, q).astype(a.dtype)


def _c_mod(a, b):
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype.kind == "f": return np.fmod(a, b)
  return np.fmod(a, np.where(b == 0, 1, b)).astype(a.dtype)


def _round_bf16(x):
  bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
  return bits.astype(np.uint32).view(np.float32)


def _float_to_int(x, dt):
  with np.errstate(invalid="ignore"):
    t = np.trunc(np.nan_to_num(np.asarray(x), nan=0.0, posinf=0.0, neginf=0.0))
    # types narrower than 64 bits go through int64 and wrap (-1.0 -> 255 for uint8), as the compiled backends do
    return t.astype(dt) if np.dtype(dt).itemsize == 8 else t.astype(np.int64).astype(dt)


def _load(buf: np.ndarray, idx):
  # numpy evaluates every loop's index expression, also where the compiled loop nest would not run
  # (an empty output dimension) or the load is masked (padding an empty input): an empty buffer reads zeros
  if buf.size == 0: return np.zeros(np.shape(idx), buf.dtype)
  return buf[idx]


KERNEL_GLOBALS = {
  "np": np, "inf": float("inf"), "nan": float("nan"), "c_div": _c_div, "c_mod": _c_mod, "reciprocal": lambda x: np.float64(1.0).astype(np.asarray(x).dtype) / x,
  # a reduction must see every element of its loops, also when the value does not vary along them
  "full": lambda v, extent: np.broadcast_to(v, np.broadcast_shapes(np.shape(v), extent)),
  "bf16_to_f32": lambda b: (b.astype(np.uint32) << 16).view(np.float32), "round_bf16": _round_bf16,
  "f32_to_bf16": lambda x: (_round_bf16(x).view(np.uint32) >> 16).astype(np.uint16), "float_to_int": _float_to_int, "load": _load,
}


class PythonProgram(Program):
  """meta: params, a list of (dtype numpy str) per parameter, to view the byte buffers as typed arrays."""

  def __init__(self, device: Device, name: str, lib: bytes, meta: dict[str, Any]):
    super().__init__(device, name, lib, meta)
    scope = dict(KERNEL_GLOBALS)
    exec(compile(lib.decode(), f"<kernel {name}>", "exec"), scope)
    self.fn = scope[name]

  def __call__(self, handles: list[Any], dims: LaunchDims, wait: bool = False) -> float | None:
    # slice the bytes before viewing: an empty buffer is one spare byte, which no wider dtype can view
    arrays = [h[:n * np.dtype(dt).itemsize].view(np.dtype(dt)) for h, (dt, n) in zip(handles, self.meta["param_types"])]
    st = time.perf_counter()
    # an empty output means the compiled loop nest runs zero times; numpy would still evaluate every
    # index expression, and those of an empty dimension (a flip of size 0 gives -1 - i) point anywhere
    if arrays[0].size == 0: return 0.0 if wait else None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
      warnings.simplefilter("ignore")
      self.fn(*arrays)
    return time.perf_counter() - st if wait else None


def open_device(name: str) -> Device:
  if name != "PYTHON": raise DeviceError(f"there is only one PYTHON device, not {name}")
  return Device(name, NumpyAllocator(name), PythonCompiler(), PythonProgram)
