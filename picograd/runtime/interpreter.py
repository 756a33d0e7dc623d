"""The PYTHON device: runs kernels rendered as numpy code (codegen/python.py). Slow, simple, and the test oracle.

Its memory is numpy byte arrays; its "compiler" just checks the source parses; a program is
the rendered function, executed with the buffers viewed as typed 1-D arrays.
"""
from __future__ import annotations
import time, warnings
from typing import Any
import numpy as np
from picograd.dtype import round_bf16
from picograd.helpers import LaunchDims
from picograd.runtime.device import Allocator, Compiler, Device, DeviceError, Program


class NumpyAllocator(Allocator):
  def _alloc(self, nbytes: int) -> np.ndarray:
    try:
      return np.zeros(nbytes, dtype=np.uint8)
    except ValueError as e:  # "array is too big": beyond what numpy can address, so out of memory by any measure
      raise MemoryError(str(e)) from e
  def _free(self, handle: np.ndarray, nbytes: int) -> None: pass
  def copyin(self, handle: np.ndarray, src: memoryview) -> None: handle[:src.nbytes] = np.frombuffer(src, np.uint8)
  def copyout(self, dest: memoryview, handle: np.ndarray) -> None: np.frombuffer(dest, np.uint8)[:] = handle[:dest.nbytes]


class PythonCompiler(Compiler):
  cache_key = "python-numpy"
  def compile(self, src: str, name: str) -> bytes:
    compile(src, f"<kernel {name}>", "exec")  # syntax errors surface here, with the source
    return src.encode()


def _c_div(a, b):
  """C division (truncating). A divisor of 0 gives a (the kernel's CHECK reports it); MIN / -1 wraps to MIN. Through
  numpy's floor division, which handles both without faulting; abs() would overflow at MIN."""
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype.kind == "f": return a / b
  b = np.where(b == 0, 1, b).astype(b.dtype)
  q = np.floor_divide(a, b)
  # floor and truncation differ by one where the division is inexact and the signs differ
  return np.where((q * b != a) & ((a < 0) != (b < 0)), q + 1, q).astype(a.dtype)


def _c_mod(a, b):
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype.kind == "f": return np.fmod(a, b)
  return np.fmod(a, np.where(b == 0, 1, b).astype(b.dtype)).astype(a.dtype)


def _check(value, bad, bit: int, err: np.ndarray):
  """A CHECK: `value`, with `bit` set in the kernel's error word where `bad` holds anywhere."""
  if np.any(bad): err[0] |= bit
  return value


def _float_to_int(x, dt):
  """float -> integer, the rule of every picograd device: truncate, saturate to the integer's range, NaN gives 0.
  int8/16 and uint8/16/32 wrap from the saturated int64, as PyTorch's casts do (-1.0 -> 255 for uint8)."""
  if np.dtype(dt).itemsize < 4 or np.dtype(dt) == np.uint32: return _float_to_int(x, np.int64).astype(dt)
  info = np.iinfo(dt)
  t = np.trunc(np.where(np.isnan(x), 0, x)).astype(np.float64)  # float64 holds every float value exactly
  # float(info.max) of a 64-bit type rounds up to 2^63 or 2^64: a value at or above it saturates
  hi, lo = t >= float(info.max), t <= float(info.min)
  inside = np.where(hi | lo, 0, t).astype(dt)
  return np.where(hi, info.max, np.where(lo, info.min, inside)).astype(dt)


def _load(buf: np.ndarray, idx):
  # numpy evaluates every loop's index expression, also where the compiled loop nest would not run
  # (an empty output dimension) or the load is masked (padding an empty input): an empty buffer reads zeros
  if buf.size == 0: return np.zeros(np.shape(idx), buf.dtype)
  # (numpy would read a negative index from the end; a GPU reads before the buffer, so the emulator must not accept it)
  if np.size(idx) and np.min(idx) < 0: raise IndexError(f"load at index {np.min(idx)}, before the buffer")
  return buf[idx]


def _group_reduce(x, axis: int, extent: tuple[int, ...], width: int, fn):
  """A GROUP_REDUCE on the thread axis `axis`: every run of `width` neighbouring threads gets their combined value."""
  x = np.broadcast_to(x, np.broadcast_shapes(np.shape(x), extent))
  groups = x.reshape(x.shape[:axis] + (x.shape[axis] // width, width) + x.shape[axis + 1:])
  combined = fn(groups, axis=axis + 1, keepdims=True).astype(x.dtype)
  return np.broadcast_to(combined, groups.shape).reshape(x.shape)


def _atomic_add(buf: np.ndarray, idx, value, gate, threads: tuple[int, ...]):
  """An ATOMIC_ADD by every thread at once (`threads`: their shape): those where `gate` holds add in index order; each
  gets the old value."""
  idx, value, gate, _ = np.broadcast_arrays(idx, value, gate, np.empty(threads, np.bool_))
  old = np.zeros(idx.shape, buf.dtype)
  flat_old, flat_idx, flat_value = old.reshape(-1), idx.reshape(-1), value.reshape(-1)
  for k in np.flatnonzero(gate):
    flat_old[k] = buf[flat_idx[k]]
    buf[flat_idx[k]] += flat_value[k]
  return old


def _round_tf32(x):
  """float32 to TF32 as cvt.rna does: 10 mantissa bits, ties away from zero."""
  bits = np.asarray(x, np.float32).view(np.uint32)
  return np.where(np.isfinite(x), ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32), x)


def _mma(a: tuple, b: tuple, lane, half: int, before: list | None = None):
  """An MMA of two FRAGMENTs, each (shared buffer, block index, base index, row length, k_rows, kind), computed by every
  lane from the tiles themselves: lane l gets rows g, g + 8 and columns 2t, 2t + 1 of the warp's 16x8 product of the
  m16 x k (A) and k x n8 (B: columns 8 * half.. of its fragment) tiles, g = l // 4, t = l % 4 (k = 16, or 8 for TF32,
  whose operands are rounded first)."""
  (sa, block, base_a, lda, rows_a, kind), (sb, _, base_b, ldb, rows_b, _) = a, b
  g, t = lane // 4, lane % 4
  def at(buf, base, ld, k_rows, k, other):
    v = buf[block, base + (k * ld + other if k_rows else other * ld + k)].astype(np.float32)
    return _round_tf32(v) if kind == "tf32" else v
  out = []
  for q in range(4):
    row, col = g + 8 * (q // 2), 8 * half + 2 * t + q % 2
    terms = [at(sa, base_a, lda, rows_a, k, row) * at(sb, base_b, ldb, rows_b, k, col) for k in range(8 if kind == "tf32" else 16)]
    value = np.sum(np.stack(np.broadcast_arrays(*terms)), axis=0, dtype=np.float32)
    out.append(value if before is None else before[q] + value)  # a chain: added to the MMA before it
  return out


def _mma_packed(a: list, b: tuple, thread, axis: int, half: int, kind: str, before: list | None):
  """An MMA whose A fragment is packed from registers (FRAGMENT "pack": lane l's 8 values, rows g, g + 8 and columns
  2t, 2t + 1, 2t + 8, 2t + 9 of the warp's m16 x k16 tile, g = l // 4, t = l % 4, rounded to `kind`) and whose B is a tile
  FRAGMENT, computed by every lane: A's element (row, k) is gathered along the thread axis `axis` from the lane holding it;
  added to `before`'s four floats (the MMA before it in a chain)."""
  sb, block, base_b, ldb, rows_b, _ = b
  lane = thread % 32
  g, t = lane // 4, lane % 4
  rnd = round_bf16 if kind == "bf16" else (lambda x: np.asarray(x).astype(np.float16).astype(np.float32))

  def a_at(half_row: int, k: int):
    holder = thread - lane + 4 * g + (k % 8) // 2  # the lane of this warp holding (row g + 8 * half_row, k)
    v = np.asarray(a[2 * (half_row + 2 * (k // 8)) + k % 2], np.float32)
    shape = np.broadcast_shapes(v.shape, np.shape(holder))
    return rnd(np.take_along_axis(np.broadcast_to(v, shape), np.broadcast_to(holder, shape), axis))

  def b_at(k: int, col):
    return sb[block, base_b + (k * ldb + col if rows_b else col * ldb + k)].astype(np.float32)
  out = []
  for q in range(4):
    col = 8 * half + 2 * t + q % 2
    terms = [a_at(q // 2, k) * b_at(k, col) for k in range(16)]
    value = np.sum(np.stack(np.broadcast_arrays(*terms)), axis=0, dtype=np.float32)
    out.append(value if before is None else before[q] + value)
  return out


def _wgmma(a: tuple, b: tuple, thread, before: list | None, n: int):
  """A WGMMA of two descriptor FRAGMENTs (shared buffer, block index, base index, ld, k_rows, kind) of tiles in the 128-byte
  swizzle (codegen/cuda/tiling.py:Layout: rows of w = 64 elements, 32 for TF32; chunk c of row r of each group of 8 at
  chunk c ^ r; MN-major atoms of w along s `ld` apart), computed by every thread of the warpgroup from the tiles: thread
  t's n / 2 floats are rows v * 16 + g, + 8 and columns 8j + 2c, + 1 of the 64 x n product of the m64 x k and k x n tiles
  (k = 32 bytes: 16 elements, or 8 TF32 ones, which the tensor cores read as their top 19 bits), for j < n / 8 (v = t // 32,
  g = t % 32 // 4, c = t % 4), added to `before`'s (the chain's link before it)."""
  (sa, block, base_a, lda, rows_a, kind), (sb, _, base_b, ldb, rows_b, _) = a, b
  warp, g, c = thread // 32, thread % 32 // 4, thread % 4
  w = 32 if kind == "tf32" else 64
  chunk = w // 8

  def at(buf, base, ld, k_rows, s, k):
    e = base + ((s // w) * ld + k * w + s % w if k_rows else s * w + k)
    v = buf[block, e ^ (((e // w) & 7) * chunk)].astype(np.float32)
    return (v.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32) if kind == "tf32" else v
  out = []
  for i in range(n // 2):
    row, col = warp * 16 + g + 8 * (i % 4 // 2), 8 * (i // 4) + 2 * c + i % 2
    terms = [at(sa, base_a, lda, rows_a, row, k) * at(sb, base_b, ldb, rows_b, col, k) for k in range(w // 4)]
    value = np.sum(np.stack(np.broadcast_arrays(*terms)), axis=0, dtype=np.float32)
    out.append(value if before is None else before[i] + value)
  return out


def _tma_load(local: np.ndarray, block, dst, src: np.ndarray, coords: list, gate, spec: tuple) -> None:
  """A TMA copy (codegen/cuda/tiling.py:_Tiles.boxes) by every thread where `gate` holds (one per block): the box of the
  tensor map `spec` (TensorMapSpec's fields) at `coords` into block `block`'s shared buffer `local` from element `dst` on,
  in the 128-byte swizzle (16-byte chunk c of each 128-byte row r of a group of 8 at chunk c ^ r); elements past the
  tensor's edges read 0."""
  _, itemsize, offset, dims, strides, box = spec
  block, dst, gate, *coords = (a.reshape(-1) for a in np.broadcast_arrays(block, dst, gate, *coords))
  grid = np.indices(box[::-1]).reshape(len(box), -1)[::-1]  # each box element's index along each dim, dim 0 fastest
  byte = np.arange(grid.shape[1]) * itemsize
  placed = (byte ^ (((byte >> 7) & 7) << 4)) // itemsize
  steps = [1] + [s // itemsize for s in strides]
  for i in np.flatnonzero(gate):
    at = [coords[d][i] + grid[d] for d in range(len(box))]
    inside = np.logical_and.reduce([(a >= 0) & (a < n) for a, n in zip(at, dims)])
    flat = offset // itemsize + sum(a.astype(np.int64) * s for a, s in zip(at, steps))
    local[block[i], dst[i] + placed] = np.where(inside, src[np.where(inside, flat, 0)], 0)


KERNEL_GLOBALS = {
  "np": np, "inf": float("inf"), "nan": float("nan"), "c_div": _c_div, "c_mod": _c_mod,
  "reciprocal": lambda x: np.float64(1.0).astype(np.asarray(x).dtype) / x,
  # a reduction must see every element of its loops, also when the value does not vary along them
  "full": lambda v, extent: np.broadcast_to(v, np.broadcast_shapes(np.shape(v), extent)),
  "bf16_to_f32": lambda b: (b.astype(np.uint32) << 16).view(np.float32), "round_bf16": round_bf16,
  "f32_to_bf16": lambda x: (round_bf16(x).view(np.uint32) >> 16).astype(np.uint16), "float_to_int": _float_to_int, "load": _load,
  "check": _check, "group_reduce": _group_reduce, "atomic_add": _atomic_add, "mma": _mma, "wgmma": _wgmma, "mma_packed": _mma_packed,
  "tma_load": _tma_load,
}


class PythonProgram(Program):
  """meta: params, a list of (dtype numpy str) per parameter, to view the byte buffers as typed arrays."""

  def __init__(self, device: Device, name: str, lib: bytes, meta: dict[str, Any]):
    super().__init__(device, name, lib, meta)
    scope: dict[str, Any] = dict(KERNEL_GLOBALS)
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
