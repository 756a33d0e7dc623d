"""What the visualizer remembers of a run (viz layer): each distinct schedule, each kernel, each timed launch.

The realize loop reports to `engine/observe.py`; `Recorder` subscribes there. It keeps plain
descriptions, never a step's buffers (that would keep every training step's memory alive): per
kernel its compiled form, fused graph (AST), provenance and buffer shapes; per schedule the kernel
sequence and how often it ran; per launch its start, duration and whether a JIT replay made it.
A "batch" is one `run_steps` call (a realize, or one JIT replay: one training step under `@jit`).
"""
from __future__ import annotations
import time
from dataclasses import dataclass, field
from picograd.engine import observe
from picograd.engine.realize import ScheduledKernel
from picograd.dtype import DType

MAX_LAUNCHES = 200_000  # a long run keeps its first launches only (the trace says so)


@dataclass
class KernelInfo:
  """One kernel (or device copy) as the report shows it."""
  name: str
  device: str
  step: ScheduledKernel  # the first step seen, its buffers dropped
  args: list[tuple[int, DType, str]]  # per buffer: (size, dtype, device); args[0] is written
  times: list[float] = field(default_factory=list)

  @property
  def total(self) -> float: return sum(self.times)
  @property
  def provenance(self) -> tuple[str, ...]: return self.step.provenance  # read late: later graphs of this kernel add their lines


@dataclass
class ScheduleInfo:
  index: int
  kernels: list[str]  # kernel names in launch order
  runs: int = 0
  cache_hits: int = 0


@dataclass(frozen=True)
class LaunchInfo:
  name: str
  device: str
  start: float  # seconds since the recorder started
  seconds: float
  replay: str | None  # the JIT function whose replay launched it
  batch: int


class Recorder:
  """Subscribes to the engine's schedules and launches until `stop()`."""

  def __init__(self) -> None:
    self.t0 = time.perf_counter()
    self.kernels: dict[str, KernelInfo] = {}
    self.schedules: dict[tuple[str, ...], ScheduleInfo] = {}
    self.launches: list[LaunchInfo] = []
    self.dropped = 0
    self.batch = 0
    self._last_batch_end = 0.0
    observe.schedule_listeners.append(self.on_schedule)
    observe.launch_listeners.append(self.on_launch)
    observe.batch_listeners.append(self.on_batch)

  def stop(self) -> None:
    if self.on_schedule in observe.schedule_listeners: observe.schedule_listeners.remove(self.on_schedule)
    if self.on_launch in observe.launch_listeners: observe.launch_listeners.remove(self.on_launch)
    if self.on_batch in observe.batch_listeners: observe.batch_listeners.remove(self.on_batch)

  def kernel(self, step: ScheduledKernel) -> KernelInfo:
    if (info := self.kernels.get(step.name)) is None:
      args = [(b.size, b.dtype, b.device) for b in step.buffers]
      info = self.kernels[step.name] = KernelInfo(step.name, step.kernel.device if step.kernel else step.buffers[0].device,
                                                  ScheduledKernel(step.kernel, [], step.ast, step.nodes), args)
    return info

  def on_schedule(self, steps: list[ScheduledKernel], cache_hit: bool) -> None:
    names = tuple(self.kernel(s).name for s in steps)
    if (info := self.schedules.get(names)) is None: info = self.schedules[names] = ScheduleInfo(len(self.schedules), list(names))
    info.runs += 1
    info.cache_hits += cache_hit

  def on_batch(self, n_steps: int) -> None:
    self.batch += 1

  def on_launch(self, launch: observe.Launch) -> None:
    info = self.kernel(launch.step)
    info.times.append(launch.seconds)
    if len(self.launches) >= MAX_LAUNCHES:
      self.dropped += 1
      return
    self.launches.append(LaunchInfo(info.name, info.device, launch.start - self.t0, launch.seconds, launch.replay, self.batch))

  def last_step(self) -> list[LaunchInfo]:
    """The launches of the last training step: the last replay of the JIT function with the most kernels (a training step
    launches more than the jitted forward pass of a sampler), else the last batch."""
    batches: dict[int, list[LaunchInfo]] = {}
    for launch in self.launches: batches.setdefault(launch.batch, []).append(launch)
    replays = [b for b in batches.values() if b[0].replay is not None]
    if not replays: return batches[max(batches)] if batches else []
    widest = max(replays, key=len)[0].replay
    return [b for b in replays if b[0].replay == widest][-1]


_recorder: list[Recorder] = []


def recorder() -> Recorder | None:
  """The active recorder, if any."""
  return _recorder[0] if _recorder else None


def start() -> Recorder:
  """Start recording (once per process; a second call returns the same recorder)."""
  if not _recorder: _recorder.append(Recorder())
  return _recorder[0]


def clear() -> None:
  """Stop recording and forget what was recorded."""
  while _recorder: _recorder.pop().stop()


__all__ = ["KernelInfo", "ScheduleInfo", "LaunchInfo", "Recorder", "recorder", "start", "clear"]
