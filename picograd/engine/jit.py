"""JIT capture and replay: run a step function's kernels again without rebuilding, differentiating or scheduling its graph.

`@picograd.jit` wraps a function whose tensor inputs are passed as arguments. The first call
runs normally (compiling its kernels); the second call runs normally too, recording every
kernel launch and device copy with its buffers; later calls only relaunch the recorded
kernels, with the buffers of the new input tensors put where the captured inputs were.
Buffers the function allocated (intermediates, gradients, outputs) are reused; parameters it
updates in place are updated in place again. Random numbers advance as they would have:
each captured random draw's counter buffer is rewritten before the replay.

What a replay cannot see: Python values computed inside the function (they are frozen at
capture; pass changing values such as a learning rate as tensors), and tensors returned from a
previous call (their buffers are overwritten by the next call). `JIT=0` turns replay off.
"""
from __future__ import annotations
import functools
from typing import Any, Callable
import time
import numpy as np
from picograd.helpers import JIT, DEBUG
from picograd.runtime.device import Buffer

_capturing: "Capture | None" = None


class Capture:
  """What one traced call launched, in order, and the random-number counters it consumed."""
  def __init__(self) -> None:
    self.steps: list[Any] = []
    self.rng_draws: list[tuple[Buffer, int]] = []  # (counter buffer, how many numbers the draw took)


def capturing() -> "Capture | None": return _capturing


def record_steps(steps: list[Any]) -> None:
  if _capturing is not None: _capturing.steps.extend(steps)


def record_rng_draw(counter: Buffer, n: int) -> None:
  if _capturing is not None: _capturing.rng_draws.append((counter, n))


def _tensor_args(args: tuple, kwargs: dict) -> list[Any]:
  from picograd.tensor import Tensor
  return [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]


class Jit:
  """A step function that records its kernels on the second call and replays them afterwards."""

  def __init__(self, fn: Callable[..., Any]):
    self.fn = fn
    self.calls = 0
    self.capture: Capture | None = None
    self.input_buffers: list[Buffer] = []
    self.signature: list[tuple] = []
    self.result: Any = None
    functools.update_wrapper(self, fn)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    global _capturing
    from picograd.engine.realize import buffer_of, run_steps
    from picograd.tensor import Tensor
    inputs = _tensor_args(args, kwargs)
    if inputs: inputs[0].realize(*inputs[1:])  # every input is now a whole buffer the replay can swap in
    signature = [(t.shape, t.dtype, t.device) for t in inputs]
    if not JIT or self.calls == 0:
      self.calls += 1
      return self.fn(*args, **kwargs)
    if self.calls == 1:
      self.calls += 1
      _capturing = Capture()
      try:
        self.result = self.fn(*args, **kwargs)
        outs = [t for t in _flatten(self.result) if isinstance(t, Tensor)]
        if outs: Tensor.realize(*outs)
        self.capture = _capturing
      finally:
        _capturing = None
      self.input_buffers = [buffer_of(t) for t in inputs]
      self.signature = signature
      if DEBUG >= 1: print(f"jit: captured {len(self.capture.steps)} kernel(s) of {self.fn.__name__}")
      return self.result
    if signature != self.signature:
      raise ValueError(f"jit: {self.fn.__name__} was captured for inputs {self.signature}, called with {signature}")
    new_buffers = {id(old): buffer_of(t) for old, t in zip(self.input_buffers, inputs)}
    for counter, n in self.capture.rng_draws:
      counter.copyin(np.array([Tensor._rng_counter & 0xFFFFFFFF], dtype=np.uint32))
      Tensor._rng_counter += n
    steps = [_rebind(step, new_buffers) for step in self.capture.steps]
    # a replay skips `realize`, so it says what it is: DEBUG=2's per-kernel lines follow a header naming the replay,
    # and DEBUG=1 gets a summary line where a schedule would print one
    if DEBUG >= 2: print(f"jit replay of {self.fn.__name__}: {len(steps)} kernel(s)")
    st = time.perf_counter()
    run_steps(steps)
    if DEBUG >= 1: print(f"jit replay: {len(steps)} kernel(s) of {self.fn.__name__} in {(time.perf_counter() - st) * 1e3:.2f} ms")
    return self.result


def _rebind(step: Any, new_buffers: dict[int, Buffer]) -> Any:
  if not any(id(b) in new_buffers for b in step.buffers): return step
  return type(step)(step.kernel, [new_buffers.get(id(b), b) for b in step.buffers])


def _flatten(x: Any) -> list[Any]:
  if isinstance(x, (list, tuple)): return [y for item in x for y in _flatten(item)]
  if isinstance(x, dict): return [y for item in x.values() for y in _flatten(item)]
  return [x]


def jit(fn: Callable[..., Any]) -> Jit:
  """Decorator: `@picograd.jit def step(x, y): ...` (see the module docstring for what a replay sees)."""
  return Jit(fn)
