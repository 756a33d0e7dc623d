"""Small shared utilities: environment flags, a context manager to change them, and math helpers.

Every layer may import this file; it imports nothing from picograd.
"""
from __future__ import annotations
import contextlib, functools, operator, os
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, TypeVar

T = TypeVar("T")


class Flag:
  """An integer or string setting read from the environment once, changeable at run time with `Context`."""
  _all: dict[str, "Flag"] = {}

  def __init__(self, name: str, default: int | str):
    self.name, self.default = name, default
    raw = os.environ.get(name)
    self.value: int | str = default if raw is None else (int(raw) if isinstance(default, int) and raw.lstrip("-").isdigit() else raw)
    Flag._all[name] = self

  def __bool__(self) -> bool: return bool(self.value)
  def __int__(self) -> int: return int(self.value)
  def __ge__(self, other: int) -> bool: return int(self.value) >= other
  def __gt__(self, other: int) -> bool: return int(self.value) > other
  def __eq__(self, other: object) -> bool: return self.value == other
  def __hash__(self) -> int: return hash(self.name)
  def __repr__(self) -> str: return f"{self.name}={self.value!r}"


DEBUG = Flag("DEBUG", 0)
NOOPT = Flag("NOOPT", 0)
CACHE = Flag("CACHE", 1)
JIT = Flag("JIT", 1)
GRAPH = Flag("GRAPH", 1)  # 0: a JIT replay launches kernel by kernel (no CPU launch list, no CUDA graph)
DUMP = Flag("DUMP", "")
DEV = Flag("DEV", "CPU")
THREADS = Flag("THREADS", 0)  # CPU worker threads; 0 means one per core
# 1 (default): a compute capability 9.0 GPU compiles for sm_90a, whose 16-bit products then run on warpgroup MMAs (wgmma)
# over 128-byte swizzled tiles (H200: f16 4096 0.47 -> 0.35 ms, x @ W.T 0.075 -> 0.060 against mma.sync); 0: sm_90, mma.sync
WGMMA = Flag("WGMMA", 1)
# 1 (default): on sm_90a the wgmma plan's tiles come by TMA (cp.async.bulk.tensor, mbarrier completion; runtime/cuda.py
# encodes a tensor map per operand at launch) where both operands allow it; 0: copies through registers
TMA = Flag("TMA", 1)
TF32 = Flag("TF32", 0)  # 1: float32 matrix products may use TF32 tensor cores (picograd.set_float32_matmul_precision("high"))
# the least score elements (B*H*T*T) for which attention-like sums run as one online-softmax pass (engine/online_fusion.py);
# on the CPU that pass is tiled flash attention (codegen/cpu_flash.py), faster than the stored scores from the GPT's shapes up
ONLINE_SOFTMAX_MIN = Flag("ONLINE_SOFTMAX_MIN", 1 << 16)
# the least elements of a batched pairwise product with a short inner sum (attention's scores) for which the reductions
# reading it recompute it instead of reading it stored (engine/recompute.py): attention's backward without T x T buffers
RECOMPUTE_MIN = Flag("RECOMPUTE_MIN", 1 << 62)
# the same for a product whose readers see it through a mask computed from positions (causal): their codegen skips the
# masked blocks, and from this size the recomputed backward is faster than the stored one on the CPU (NOTES.md)
RECOMPUTE_MASKED_MIN = Flag("RECOMPUTE_MASKED_MIN", 1 << 20)
EMULATE = Flag("EMULATE", "")  # "CUDA": the PYTHON device runs kernels as mapped onto a GPU (checks the mapping passes without one)


@contextlib.contextmanager
def Context(**settings: int | str) -> Iterator[None]:
  """Temporarily change flags: `with Context(DEBUG=4, NOOPT=1): ...`."""
  unknown = [k for k in settings if k not in Flag._all]
  if unknown: raise KeyError(f"unknown flag(s) {unknown}; known: {sorted(Flag._all)}")
  saved = {k: Flag._all[k].value for k in settings}
  try:
    for k, v in settings.items(): Flag._all[k].value = v
    yield
  finally:
    for k, v in saved.items(): Flag._all[k].value = v


class ShapeError(RuntimeError, ValueError):
  """Shapes that do not fit the operation (broadcasting, matmul, reshape, cat, ...).

  A RuntimeError, as PyTorch raises for shape mismatches; also a ValueError, which it was before
  (and which PyTorch raises for a few of them, such as a loss target's batch size).
  """


def prod(xs: Iterable[int]) -> int: return functools.reduce(operator.mul, xs, 1)
def argsort(xs: list) -> list[int]: return sorted(range(len(xs)), key=xs.__getitem__)
def ceildiv(a: int, b: int) -> int: return -(-a // b)


def cache_dir() -> str:
  """Where compiled kernels and downloaded data live: $XDG_CACHE_HOME/picograd or ~/.cache/picograd."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "picograd")


@dataclass
class LaunchDims:
  """How to run a kernel: `global_size` iterations of the outer loop(s) (CPU) or a grid (GPU), `local_size` a block.

  Plain data shared by codegen (which chooses it) and the runtime (which launches with it); neither imports the other.
  """
  global_size: tuple[int, ...]
  local_size: tuple[int, ...] = (1, 1, 1)
  shared_bytes: int = 0


class TensorMapSpec(NamedTuple):
  """A TMA tensor map over one kernel parameter's buffer, as plain data: codegen puts it in the IR and the program's meta,
  the CUDA runtime encodes it (cuTensorMapEncodeTiled) for each buffer address it launches with. Boxes land in shared
  memory in the 128-byte swizzle (codegen/cuda/tiling.py:Layout)."""
  param: int                # the buffer's position among the kernel's parameters
  itemsize: int
  offset: int               # bytes from the buffer's start to element 0
  dims: tuple[int, ...]     # extents, innermost first
  strides: tuple[int, ...]  # bytes between consecutive indices of dims[1:]
  box: tuple[int, ...]      # elements one copy moves along each dim

  @property
  def box_bytes(self) -> int: return self.itemsize * prod(self.box)


__all__ = ["ShapeError", "Flag", "DEBUG", "NOOPT", "TF32", "WGMMA", "TMA", "TensorMapSpec",
           "ONLINE_SOFTMAX_MIN", "RECOMPUTE_MIN", "RECOMPUTE_MASKED_MIN", "EMULATE",
           "CACHE", "JIT", "DUMP", "DEV", "THREADS", "Context", "prod", "argsort", "ceildiv", "cache_dir", "LaunchDims"]

