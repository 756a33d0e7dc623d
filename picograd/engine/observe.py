"""Watching the realize loop (engine layer): who wants to see each schedule and each launch's measured time.

The visualizer (`picograd/viz/`: VIZ=report.html, PROFILE=trace.json, DUMP) sits above the
engine and cannot be imported by it, so it subscribes here. The realize loop reports every
schedule it runs (`scheduled`) and, while anyone listens to launches, times every kernel and
copy (a timed launch waits for the device, so timing is only on while someone listens) and
reports it (`launched`), each run of steps opening a batch (`batch`). With no listener each report is one truthiness test.
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Launch:
  """One kernel (or copy) run: the step (a `ScheduledKernel`), when it started (`time.perf_counter()` seconds), how long it ran."""
  step: Any
  start: float
  seconds: float
  replay: str | None  # the name of the JIT function whose replay launched it; None for a realize


ScheduleListener = Callable[[list[Any], bool], None]  # (steps, schedule cache hit)
LaunchListener = Callable[[Launch], None]
BatchListener = Callable[[int], None]  # (number of steps): a batch of launches begins (a realize, or a JIT replay)
schedule_listeners: list[ScheduleListener] = []
launch_listeners: list[LaunchListener] = []
batch_listeners: list[BatchListener] = []
_replaying: list[str | None] = [None]


def timing() -> bool:
  """Whether launches must be timed (someone listens)."""
  return bool(launch_listeners)


def scheduled(steps: list[Any], cache_hit: bool) -> None:
  for fn in list(schedule_listeners): fn(steps, cache_hit)


def batch(n_steps: int) -> None:
  for fn in list(batch_listeners): fn(n_steps)


def launched(step: Any, start: float, seconds: float) -> None:
  launch = Launch(step, start, seconds, _replaying[0])
  for fn in list(launch_listeners): fn(launch)


def set_replaying(function: str | None) -> None:
  """The JIT says whose replay the launches that follow are (None: not a replay)."""
  _replaying[0] = function


__all__ = ["Launch", "schedule_listeners", "launch_listeners", "batch_listeners", "timing", "scheduled", "batch", "launched", "set_replaying"]
