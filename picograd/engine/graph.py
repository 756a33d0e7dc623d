"""A JIT capture replayed as one device graph (CUDA graphs): one driver call launches every kernel of a training step.

A replay through `run_steps` pays a Python loop and a driver call per kernel (hundreds in a GPT step); a graph pays one.
A graph keeps the arguments its launches were recorded with, so nothing can be swapped into it afterwards:

- the JIT's inputs change every call: the graph reads them from staging buffers of its own. A replay queues a copy of
  each new input into its staging buffer, launches the graph, and copies back the inputs the step writes in place;
- intermediates stay allocated at one address for as long as the graph lives (the capture's steps stop releasing them);
- steps the graph cannot hold (host copies, collectives, several devices) make `build` return None: the JIT replays
  step by step, as on the CPU. DEBUG=2 and launch listeners time each kernel, so they replay step by step too.

Random-number counters are rewritten before each launch by the JIT, with a store queued on the same stream.
"""
from __future__ import annotations
import dataclasses
from dataclasses import dataclass
from typing import Any
from picograd.helpers import DEBUG, GRAPH
from picograd.runtime.device import Buffer, get_device
from picograd.engine.compile import CompiledKernel
from picograd.engine.realize import ScheduledKernel, launch_handles, defer_checks, stats
from picograd.engine import observe


@dataclass
class DeviceGraph:
  """A captured step list as one graph on `device`, reading input i from `staging[i]` (None: the step never reads it)."""
  device: str
  graph: Any
  staging: list[Buffer | None]
  written: list[bool]  # per input: does the step write it in place (it is copied back after each launch)
  checked: list[CompiledKernel]
  steps: list[ScheduledKernel]  # the recorded steps: they hold the buffers the graph names
  launches: int

  def replay(self, inputs: list[Buffer]) -> None:
    allocator = get_device(self.device).allocator
    for buf, stage in zip(inputs, self.staging):
      if stage is not None: allocator.copy_device_to_device(stage.handle, buf.handle, buf.nbytes)  # type: ignore[attr-defined]
    self.graph.launch()
    for buf, stage, written in zip(inputs, self.staging, self.written):
      if stage is not None and written: allocator.copy_device_to_device(buf.handle, stage.handle, buf.nbytes)  # type: ignore[attr-defined]
    defer_checks(self.checked)
    stats["kernels_run"] += self.launches


def usable() -> bool:
  """May a replay launch a graph now? Not while kernels are timed one by one (DEBUG=2, launch listeners)."""
  return bool(GRAPH) and not DEBUG >= 2 and not observe.timing()


def build(steps: list[ScheduledKernel], inputs: list[Buffer]) -> DeviceGraph | None:
  """Record `steps` (a JIT capture reading `inputs`) as one graph, or None where a graph cannot hold them.

  The steps stop releasing their intermediates (`frees`): the graph names their addresses for as long as it lives."""
  live = [s for s in steps if s.buffers[0].size]
  devices = {b.device for s in live for b in s.buffers}
  if len(devices) != 1 or any(s.collective is not None for s in live): return None
  device = devices.pop()
  make = get_device(device).extra.get("graph")
  if make is None: return None
  read = {id(b) for s in live for b in s.buffers}
  written = {id(s.buffers[0]) for s in live}
  staging = [Buffer(b.device, b.size, b.dtype) if id(b) in read else None for b in inputs]
  swap = {id(b): stage for b, stage in zip(inputs, staging) if stage is not None}
  recorded = [dataclasses.replace(s, buffers=[swap.get(id(b), b) for b in s.buffers], frees=()) for s in live]
  allocator = get_device(device).allocator
  for s in recorded:  # take every address before recording: the allocator's cache hands back released blocks now, not inside
    for b in s.buffers: b.handle  # noqa: B018

  def record() -> None:
    for s in recorded:
      if s.kernel is None: allocator.copy_device_to_device(s.buffers[0].handle, s.buffers[1].handle, s.buffers[0].nbytes)  # type: ignore[attr-defined]
      else: s.kernel.program(launch_handles(s.kernel, s.buffers), s.kernel.dims)
  graph = make(record)
  checked = list({(s.kernel.name, s.kernel.device): s.kernel for s in recorded if s.kernel is not None and s.kernel.checks}.values())
  if DEBUG >= 1: print(f"jit: recorded {len(recorded)} step(s) as one graph on {device}")
  return DeviceGraph(device, graph, staging, [id(b) in written for b in inputs], checked, recorded,
                     sum(s.kernel is not None for s in recorded))


def keep_buffers(steps: list[ScheduledKernel]) -> list[ScheduledKernel]:
  """The same steps without releasing intermediates: a graph recorded from them names their addresses."""
  return [dataclasses.replace(s, frees=()) if s.frees else s for s in steps]
