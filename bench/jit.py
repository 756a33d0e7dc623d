"""What `@picograd.jit` buys: the same training step timed with its replay on and off (JIT=0).

Without the JIT every step rebuilds the lazy graph in Python, differentiates it, looks its
schedule up in the cache and launches the kernels; a replay only relaunches the kernels it
recorded, with the new batch's buffers swapped in. The kernels are the same either way, so the
ratio is the Python overhead a replay removes. Small models show it most. The steps timed:

- linear: the README's `nn.Linear(10, 3)` with AdamW on a batch of 32 (cross-entropy);
- makemore: the makemore MLP (11,897 parameters) with SGD on a batch of 32.

    python bench/jit.py [--steps 200]
"""
from __future__ import annotations
import argparse, os, sys, time
from typing import Callable
import numpy as np
import picograd
from picograd import Context, Tensor, nn, optim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import makemore  # noqa: E402


def _training_step(model: Callable[[Tensor], Tensor], opt: optim.Optimizer) -> Callable[[Tensor, Tensor], Tensor]:
  """One cross-entropy training step of `model` with `opt`, realizing the loss and the parameter updates together."""
  def step(x: Tensor, y: Tensor) -> Tensor:
    loss = model(x).cross_entropy(y)
    opt.zero_grad(); loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss
  return step


def linear_step() -> tuple[Callable[[Tensor, Tensor], Tensor], Callable[[int], tuple[np.ndarray, np.ndarray]]]:
  model = nn.Linear(10, 3)
  opt = optim.AdamW(nn.get_parameters(model), lr=1e-3)
  step = _training_step(model, opt)

  def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    return rng.standard_normal((32, 10)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
  return step, batch


def makemore_step() -> tuple[Callable[[Tensor, Tensor], Tensor], Callable[[int], tuple[np.ndarray, np.ndarray]]]:
  model = makemore.MLP(27)
  opt = optim.SGD(nn.get_parameters(model), lr=0.1)
  step = _training_step(model, opt)

  def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    return rng.integers(0, 27, (32, 3)).astype(np.int32), rng.integers(0, 27, 32).astype(np.int32)
  return step, batch


def time_step(make: Callable, jit: bool, steps: int, warmup: int = 5) -> float:
  """Seconds per step, the best of three rounds of `steps` steps after `warmup` untimed ones (compiling, capturing)."""
  Tensor.manual_seed(0)
  fn, batch = make()
  with Context(JIT=int(jit)):
    step = picograd.jit(fn)
    for i in range(warmup): step(*map(Tensor, batch(i))).item()
    best = float("inf")
    for _ in range(3):
      data = [tuple(map(Tensor, batch(i))) for i in range(steps)]
      t0 = time.perf_counter()
      for x, y in data: loss = step(x, y)
      loss.item()
      best = min(best, (time.perf_counter() - t0) / steps)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=200)
  args = parser.parse_args()
  print(f"{'step':<10} {'JIT=0 (us)':>11} {'jit (us)':>9} {'speedup':>8}")
  for name, make in (("linear", linear_step), ("makemore", makemore_step)):
    off, on = time_step(make, False, args.steps), time_step(make, True, args.steps)
    print(f"{name:<10} {off * 1e6:11.0f} {on * 1e6:9.0f} {off / on:7.1f}x")


if __name__ == "__main__":
  main()
