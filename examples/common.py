"""What the training examples share: command-line flags, a progress bar, and checkpoints that a run can resume from."""
from __future__ import annotations
import argparse, os, sys, time
from typing import Any, Callable, TypeVar
from picograd import Tensor, nn
from picograd.nn import datasets

T = TypeVar("T")


def add_training_args(parser: argparse.ArgumentParser, steps: int | None) -> None:
  """The flags every example takes: --device, --steps (None: the example picks), --seed, --save, --save-every, --resume."""
  parser.add_argument("--device", default=None, help="device to train on (default: $DEV, else CPU)")
  parser.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps or 'per config'})")
  parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights, the batches and the samples")
  parser.add_argument("--save", default=None, metavar="PATH", help="write a checkpoint (safetensors) here every --save-every steps and at the end")
  parser.add_argument("--save-every", type=int, default=1000, metavar="N")
  parser.add_argument("--resume", default=None, metavar="PATH", help="continue from a checkpoint written by --save")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


class _PlainProgress:
  """A stand-in for tqdm: one status line, rewritten at most every half second."""

  def __init__(self, total: int, initial: int, desc: str, disable: bool):
    self.total, self.n, self.desc, self.disable = total, initial, desc, disable
    self.postfix, self.last, self.start = "", 0.0, time.perf_counter()

  def update(self, n: int = 1) -> None:
    self.n += n
    now = time.perf_counter()
    if not self.disable and (now - self.last > 0.5 or self.n == self.total):
      self.last = now
      print(f"\r{self.desc}: {self.n}/{self.total} [{now - self.start:.0f}s] {self.postfix}", end="", file=sys.stderr, flush=True)

  def set_postfix_str(self, s: str) -> None: self.postfix = s

  def close(self) -> None:
    if not self.disable: print(file=sys.stderr)


def progress(total: int, initial: int = 0, desc: str = "train", disable: bool = False) -> Any:
  """A progress bar with update(n), set_postfix_str(s) and close(): tqdm's when it is installed, a plain line otherwise."""
  try:
    from tqdm import tqdm
  except ImportError:
    return _PlainProgress(total, initial, desc, disable)
  return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True)


def save_checkpoint(path: str, objects: dict[str, Any], step: int) -> None:
  """Save every tensor of `objects` (e.g. {"model": model, "opt": opt}) and the step count, atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  nn.state.save(nn.state_dict(objects), path, metadata={"step": str(step)})


def load_checkpoint(path: str, objects: dict[str, Any]) -> int:
  """Load a checkpoint written by `save_checkpoint` into `objects` in place; return the step it was saved at."""
  nn.load_state_dict(objects, nn.state.load(path))
  return int(nn.state.load_metadata(path).get("step", 0))


def load_data(loader: Callable[[str | None], T], path: str | None) -> T:
  """`loader(path)` (e.g. `datasets.names`), or exit with one line saying how to supply a missing file (--data, $PICOGRAD_DATA, the download)."""
  try:
    return loader(path)
  except datasets.DataFileError as e:
    raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'picograd'}: error: {e.message('--data PATH')}") from None


def device_name(device: str | None) -> str:
  """The device a tensor created with `device=` lands on (resolving the $DEV default)."""
  return Tensor.zeros(1, device=device).device
