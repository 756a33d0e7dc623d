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

A replay is refused (ValueError) rather than computed wrong when the call does not look like the
captured one: tensor inputs (found anywhere in the arguments, also inside lists, tuples and dicts)
with another shape, dtype or device, a different pattern of aliasing (the same tensor passed twice
where the capture had two, or the other way round), or other non-tensor arguments (Python
numbers and strings by value, other objects by identity), which the kernels have baked in.

The engine does not import the frontend: `picograd/tensor.py` registers its tensor class (to find
tensors among the arguments; the JIT reads their `uop`, shape, dtype and device and asks them to
`realize`) and its random-number hook with `register_frontend`.
"""
from __future__ import annotations
import dataclasses, functools, inspect
from typing import Any, Callable
import time
from picograd.helpers import JIT, DEBUG, GRAPH
from picograd.runtime.device import Buffer, get_device
from picograd.engine.capture import Capture, capture, capturing
from picograd.engine.realize import buffer_of, run_steps
from picograd.engine.schedule import is_contiguous_view
from picograd.engine.replay import Replay
from picograd.engine import observe

# registered by the frontend: the class of its lazy tensors, and the RNG hook: `draw(n)` takes n numbers from the
# counter-based generator and returns the counter they start at (a replay rewrites each captured draw's counter with it)
_tensor_types: tuple[type, ...] = ()  # (a tuple for isinstance: nothing is a tensor before the frontend registers)
_draw: Callable[[int], int] | None = None


def register_frontend(tensor_type: type, draw: Callable[[int], int]) -> None:
  """Called once by the frontend: what a tensor is, and how to advance its random-number counter."""
  global _tensor_types, _draw
  _tensor_types, _draw = (tensor_type,), draw


def _parameters(fn: Callable[..., Any]) -> inspect.Signature | None:
  try:
    return inspect.signature(fn)
  except (TypeError, ValueError):  # a builtin or C function without a signature
    return None


def _leaves(params: inspect.Signature | None, args: tuple, kwargs: dict) -> list[Any]:
  """Every argument in the order of the function's parameters (however it was passed), containers flattened, dicts by key."""
  if not kwargs: return _flatten(list(args), sort_dicts=True)  # positional arguments bind in the parameters' order
  try:
    values = list(params.bind(*args, **kwargs).arguments.values()) if params is not None else None
  except TypeError:  # a call that does not fit the signature: the function itself will say so
    values = None
  if values is None: values = list(args) + [kwargs[k] for k in sorted(kwargs)]
  return _flatten(values, sort_dicts=True)


def _frozen(leaves: list[Any]) -> list[Any]:
  """What the capture baked in from the non-tensor arguments: numbers and strings by value, other objects by identity."""
  return [(type(a), a) if isinstance(a, (int, float, complex, str, bytes, type(None))) else ("object", id(a))
          for a in leaves if not isinstance(a, _tensor_types)]


def _inputs(leaves: list[Any]) -> tuple[list[Buffer], list[tuple]]:
  """The buffers of the tensors among `leaves` (lazy ones are computed now: a replay swaps in whole buffers) and the call's
  signature: per input (shape, dtype, device, the index of the first input with the same buffer)."""
  inputs: list[Any] = [a for a in leaves if isinstance(a, _tensor_types)]
  if lazy := [t for t in inputs if not is_contiguous_view(t.uop)]: lazy[0].realize(*lazy[1:])
  # one loop, reading each graph's fields directly (a replay's whole Python cost is a few microseconds)
  buffers: list[Buffer] = []
  signature: list[tuple] = []
  first: dict[int, int] = {}  # aliasing is part of the signature: a replay maps each captured input buffer to one new buffer
  for i, t in enumerate(inputs):
    u = t.uop
    buffers.append(buf := buffer_of(u))
    signature.append((u.shape, u.dtype, t.device, first.setdefault(id(buf), i)))
  return buffers, signature


def _describe(signature: list[tuple]) -> str:
  parts = []
  for i, (shape, dtype, device, alias) in enumerate(signature):
    parts.append(f"{shape} {dtype.name} on {device}" + (f" (the same tensor as input {alias})" if alias != i else ""))
  return "[" + ", ".join(parts) + "]"


class Jit:
  """A step function that records its kernels on the second call and replays them afterwards."""

  def __init__(self, fn: Callable[..., Any]):
    self.fn = fn
    self.params = _parameters(fn)
    self.calls = 0
    self.capture: Capture | None = None
    self.input_buffers: list[Buffer] = []
    self.signature: list[tuple] = []
    self.frozen: list[Any] = []
    self.result: Any = None
    self.replay: Replay | None = None  # built on the first replay
    functools.update_wrapper(self, fn)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    leaves = _leaves(self.params, args, kwargs)
    buffers, signature = _inputs(leaves)
    frozen = _frozen(leaves)
    if not JIT.value or self.calls == 0:
      self.calls += 1
      return self.fn(*args, **kwargs)
    if self.calls == 1:
      with capture() as captured:
        self.result = self.fn(*args, **kwargs)
        outs: list[Any] = [t for t in _flatten(self.result) if isinstance(t, _tensor_types)]
        if outs: outs[0].realize(*outs[1:])
      self.capture = captured
      self.calls += 1  # only a capture that completed (no failed check, no exception in fn) is replayed
      self.input_buffers = buffers
      self.signature, self.frozen = signature, frozen
      if DEBUG >= 1: print(f"jit: captured {len(self.capture.steps)} kernel(s) of {self.fn.__name__}")
      return self.result
    if signature != self.signature:
      raise ValueError(f"jit: {self.fn.__name__} was captured for inputs {_describe(self.signature)}, called with {_describe(signature)}; "
                       "a replay cannot change shapes, dtypes, devices or which inputs are the same tensor (use a new jit for each)")
    if frozen != self.frozen:
      raise ValueError(f"jit: {self.fn.__name__} was called with non-tensor arguments that differ from the capture's; a replay "
                       "would use the captured values (pass values that change as tensors)")
    assert self.capture is not None, "calls >= 2: the first call's capture completed"
    for counter, n in self.capture.rng_draws:
      assert _draw is not None, "a random draw was captured, so the frontend registered its generator"
      get_device(counter.device).allocator.write_word(counter.handle, _draw(n))  # ordered after the last replay's readers
    # the bound replay, unless someone watches launches one by one (DEBUG=2, listeners) or an outer capture records them
    if GRAPH.value and not DEBUG >= 2 and not observe.timing() and not observe.batch_listeners and capturing() is None:
      if self.replay is None: self.replay = Replay(self.capture.steps, self.input_buffers)
      if self.replay.native:
        if DEBUG >= 1: st = time.perf_counter()
        self.replay.run(buffers)
        if DEBUG >= 1: print(f"jit replay: {self.replay.kernels} kernel(s) of {self.fn.__name__} in {(time.perf_counter() - st) * 1e3:.2f} ms")
        return self.result
    new_buffers = {id(old): new for old, new in zip(self.input_buffers, buffers)}
    steps = [_rebind(step, new_buffers) for step in self.capture.steps]
    # a replay skips `realize`, so it says what it is: DEBUG=2's per-kernel lines follow a header naming the replay,
    # and DEBUG=1 gets a summary line where a schedule would print one
    if DEBUG >= 2: print(f"jit replay of {self.fn.__name__}: {len(steps)} kernel(s)")
    st = time.perf_counter()
    observe.set_replaying(self.fn.__name__)
    try:
      run_steps(steps)
    finally:
      observe.set_replaying(None)
    if DEBUG >= 1: print(f"jit replay: {len(steps)} kernel(s) of {self.fn.__name__} in {(time.perf_counter() - st) * 1e3:.2f} ms")
    return self.result


def _rebind(step: Any, new_buffers: dict[int, Buffer]) -> Any:
  if not any(id(b) in new_buffers for b in step.buffers): return step
  return dataclasses.replace(step, buffers=[new_buffers.get(id(b), b) for b in step.buffers])


def _flatten(x: Any, sort_dicts: bool = False) -> list[Any]:
  if isinstance(x, dict):
    keys = sorted(x, key=repr) if sort_dicts else list(x)
    return [y for k in keys for y in _flatten(x[k], sort_dicts)]
  if not isinstance(x, (list, tuple)): return [x]
  out: list[Any] = []
  for item in x:  # (containers recurse; plain leaves, the usual arguments, are appended without a call each)
    if isinstance(item, (list, tuple, dict)): out += _flatten(item, sort_dicts)
    else: out.append(item)
  return out


def jit(fn: Callable[..., Any]) -> Jit:
  """Decorator: `@picograd.jit def step(x, y): ...` (see the module docstring for what a replay sees)."""
  return Jit(fn)
