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

Inputs may also be numpy arrays (as `jax.jit` takes them): the function is called with them as
tensors on the jit's `device` (the default device when none is given), and a replay copies each
array's bytes straight into the buffer its captured tensor had, with no tensor made. A training
loop that feeds its batches as arrays so skips a tensor, two graph nodes and a buffer per input
and step (the host's share of a small step; on the GPU the copy is queued on the replay's stream).

A replay is refused (ValueError) rather than computed wrong when the call does not look like the
captured one: tensor inputs (found anywhere in the arguments, also inside lists, tuples and dicts)
with another shape, dtype or device, arrays with another shape or dtype, a different pattern of
aliasing (the same tensor passed twice where the capture had two, or the other way round), or
other non-tensor arguments (Python numbers and strings by value, other objects by identity),
which the kernels have baked in.

The engine does not import the frontend: `picograd/tensor.py` registers its tensor class (to find
tensors among the arguments; the JIT reads their `uop`, shape, dtype and device and asks them to
`realize`) and its random-number hook with `register_frontend`.
"""
from __future__ import annotations
import dataclasses, functools, inspect
from typing import Any, Callable
import time
import numpy as np
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
          for a in leaves if not isinstance(a, _tensor_types) and type(a) is not np.ndarray]


ARRAY = "numpy"  # the device an array input's signature names (it becomes a tensor on the jit's device)


def _inputs(leaves: list[Any]) -> tuple[list[Any], list[Buffer | None], list[tuple]]:
  """The tensors and arrays among `leaves`, the tensors' buffers (lazy ones are computed now: a replay swaps in whole
  buffers; an array has none yet) and the call's signature: per input (shape, dtype, device, the index of the first input
  with the same buffer)."""
  inputs: list[Any] = [a for a in leaves if isinstance(a, _tensor_types) or type(a) is np.ndarray]
  if lazy := [t for t in inputs if type(t) is not np.ndarray and not is_contiguous_view(t.uop)]: lazy[0].realize(*lazy[1:])
  # one loop, reading each graph's fields directly (a replay's whole Python cost is a few microseconds)
  buffers: list[Buffer | None] = []
  signature: list[tuple] = []
  first: dict[int, int] = {}  # aliasing is part of the signature: a replay maps each captured input buffer to one new buffer
  for i, t in enumerate(inputs):
    if type(t) is np.ndarray:  # copied into its own buffer by each call: aliases nothing
      buffers.append(None)
      signature.append((t.shape, t.dtype, ARRAY, i))
      continue
    u = t.uop
    buffers.append(buf := buffer_of(u))
    signature.append((u.shape, u.dtype, t.device, first.setdefault(id(buf), i)))
  return inputs, buffers, signature


def _describe(signature: list[tuple]) -> str:
  parts = []
  for i, (shape, dtype, device, alias) in enumerate(signature):
    where = "a numpy array" if device == ARRAY else f"on {device}"
    parts.append(f"{shape} {dtype.name} {where}" + (f" (the same tensor as input {alias})" if alias != i else ""))
  return "[" + ", ".join(parts) + "]"


class Jit:
  """A step function that records its kernels on the second call and replays them afterwards."""

  def __init__(self, fn: Callable[..., Any], device: str | None = None):
    self.fn, self.device = fn, device
    self.params = _parameters(fn)
    self.calls = 0
    self.capture: Capture | None = None
    self.input_buffers: list[Buffer] = []  # (an array input's: the buffer its tensor got in the capture)
    self.signature: list[tuple] = []
    self.frozen: list[Any] = []
    self.result: Any = None
    self.replay: Replay | None = None  # built on the first replay
    functools.update_wrapper(self, fn)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    leaves = _leaves(self.params, args, kwargs)
    inputs, buffers, signature = _inputs(leaves)
    frozen = _frozen(leaves)
    if not JIT.value or self.calls == 0:
      self.calls += 1
      return self.fn(*self._as_tensors(args), **self._as_tensors(kwargs))
    if self.calls == 1:
      if any(b is None for b in buffers):  # arrays: captured as the tensors made of them, whose buffers replays write
        args, kwargs = self._as_tensors(args), self._as_tensors(kwargs)
        _, buffers, _ = _inputs(_leaves(self.params, args, kwargs))
      with capture() as captured:
        self.result = self.fn(*args, **kwargs)
        outs: list[Any] = [t for t in _flatten(self.result) if isinstance(t, _tensor_types)]
        if outs: outs[0].realize(*outs[1:])
      self.capture = captured
      self.calls += 1  # only a capture that completed (no failed check, no exception in fn) is replayed
      self.input_buffers = [b for b in buffers if b is not None]  # (every one: the arrays are tensors now)
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
    # an array is copied into its captured buffer (queued after the last replay's readers, as a kernel would be)
    buffers_now = [b if b is not None else self.input_buffers[i].copyin(inputs[i]) for i, b in enumerate(buffers)]
    for counter, n in self.capture.rng_draws:
      assert _draw is not None, "a random draw was captured, so the frontend registered its generator"
      get_device(counter.device).allocator.write_word(counter.handle, _draw(n))  # ordered after the last replay's readers
    # the bound replay, unless someone watches launches one by one (DEBUG=2, listeners) or an outer capture records them
    if GRAPH.value and not DEBUG >= 2 and not observe.timing() and not observe.batch_listeners and capturing() is None:
      if self.replay is None: self.replay = Replay(self.capture.steps, self.input_buffers)
      if self.replay.native:
        if DEBUG >= 1: st = time.perf_counter()
        self.replay.run(buffers_now)
        if DEBUG >= 1: print(f"jit replay: {self.replay.kernels} kernel(s) of {self.fn.__name__} in {(time.perf_counter() - st) * 1e3:.2f} ms")
        return self.result
    new_buffers = {id(old): new for old, new in zip(self.input_buffers, buffers_now)}
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

  def _as_tensors(self, x: Any) -> Any:
    """`x` with every numpy array in it (also inside lists, tuples and dicts) made a tensor on the jit's device."""
    if type(x) is np.ndarray: return _tensor_types[0](x, device=self.device)
    if isinstance(x, dict): return {k: self._as_tensors(v) for k, v in x.items()}
    if isinstance(x, list): return [self._as_tensors(v) for v in x]
    if isinstance(x, tuple): return type(x)(*map(self._as_tensors, x)) if hasattr(x, "_fields") else tuple(map(self._as_tensors, x))
    return x


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


def jit(fn: Callable[..., Any] | None = None, *, device: str | None = None) -> Any:
  """Decorator: `@picograd.jit def step(x, y): ...`, or `@picograd.jit(device="CUDA")` to put numpy array inputs on that
  device (see the module docstring for what a replay sees)."""
  if fn is None: return lambda f: Jit(f, device)
  return Jit(fn, device)
