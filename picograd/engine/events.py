"""Compile events (engine layer): tell whoever listens that kernels are being compiled, and how far along that is.

A first training step can compile dozens of kernels for seconds or minutes. Rather than leave a
progress bar frozen on an absurd ETA, the realize loop compiles a schedule's new kernels through
`compile_kernels`, which announces the batch (`done == 0`), then each kernel as it finishes; the
last event of a batch has `done == total`. Listeners are plain callables taking a `CompileEvent`
(the examples' progress line subscribes with `compile_listener`); the engine knows nothing about them.
"""
from __future__ import annotations
import contextlib, time
from dataclasses import dataclass
from typing import Callable, Iterator
from picograd.ir.ops import UOp
from picograd.engine.compile import CompiledKernel, get_kernel, is_compiled

__all__ = ["CompileEvent", "add_compile_listener", "remove_compile_listener", "compile_listener", "compile_kernels", "compile_stats"]


@dataclass(frozen=True)
class CompileEvent:
  """Where a batch of compiles stands: `done` of `total` kernels after `elapsed` seconds; `name` is the kernel just compiled."""
  done: int
  total: int
  elapsed: float
  name: str | None = None

  @property
  def finished(self) -> bool: return self.done == self.total


Listener = Callable[[CompileEvent], None]
_listeners: list[Listener] = []
# every compile of this process: how many kernels, and the seconds they took (lowering, rendering, compiling, loading)
compile_stats = {"kernels": 0, "seconds": 0.0}


def add_compile_listener(fn: Listener) -> Listener:
  _listeners.append(fn)
  return fn


def remove_compile_listener(fn: Listener) -> None:
  if fn in _listeners: _listeners.remove(fn)


@contextlib.contextmanager
def compile_listener(fn: Listener) -> Iterator[Listener]:
  """`with compile_listener(show): ...` calls `show(event)` for every compile event inside the block."""
  add_compile_listener(fn)
  try:
    yield fn
  finally:
    remove_compile_listener(fn)


def _emit(event: CompileEvent) -> None:
  for fn in list(_listeners): fn(event)


def compile_kernels(jobs: list[tuple[UOp, str]]) -> list[CompiledKernel]:
  """The compiled kernel of each (kernel AST, device), compiling the ones not compiled yet with events around them."""
  new = [job for job in dict.fromkeys(jobs) if not is_compiled(*job)]
  if new:
    start = time.perf_counter()
    _emit(CompileEvent(0, len(new), 0.0))
    for i, job in enumerate(new):
      k = get_kernel(*job)
      _emit(CompileEvent(i + 1, len(new), time.perf_counter() - start, k.name))
    compile_stats["kernels"] += len(new)
    compile_stats["seconds"] += time.perf_counter() - start
  return [get_kernel(*job) for job in jobs]
