"""What a JIT capture records (engine layer): the launches of one traced call and the random-number counters it drew.

The realize loop reports every batch of launches here and the frontend every random draw; both
are kept only while `capture()` is active. `engine/jit.py` replays what was recorded.
"""
from __future__ import annotations
import contextlib
from typing import Any, Iterator
from picograd.runtime.device import Buffer


class Capture:
  """What one traced call launched, in order, and the random-number counters it consumed."""
  def __init__(self) -> None:
    self.steps: list[Any] = []
    self.rng_draws: list[tuple[Buffer, int]] = []  # (counter buffer, how many numbers the draw took)


_capturing: Capture | None = None


def capturing() -> Capture | None: return _capturing


@contextlib.contextmanager
def capture() -> Iterator[Capture]:
  """Record the launches and random draws made inside the block into the yielded `Capture`."""
  global _capturing
  _capturing = Capture()
  try:
    yield _capturing
  finally:
    _capturing = None


def record_steps(steps: list[Any]) -> None:
  if _capturing is not None: _capturing.steps.extend(steps)


def record_rng_draw(counter: Buffer, n: int) -> None:
  if _capturing is not None: _capturing.rng_draws.append((counter, n))


__all__ = ["Capture", "capture", "capturing", "record_steps", "record_rng_draw"]
