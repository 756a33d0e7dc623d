"""What the training examples share: command-line flags, a progress bar, and checkpoints that a run can resume from."""
from __future__ import annotations
import argparse, json, os, signal, sys, threading, time
from typing import Any, Callable, TypeVar
import picograd
from picograd import Tensor, nn
from picograd.engine.events import CompileEvent, add_compile_listener, remove_compile_listener
from picograd.nn import datasets

T = TypeVar("T")


def add_training_args(parser: argparse.ArgumentParser, steps: int | None) -> None:
  """The flags every example takes: --device, --steps, --seed, --save, --save-every, --resume, --stop-at, --quiet.

  --steps defaults to None so that a resumed run can tell "not given" (keep the checkpoint's) from a new
  length; the example fills in `steps` (or its config's) afterwards.
  """
  parser.add_argument("--device", default=None, help="device to train on (default: $DEV, else CPU)")
  parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {steps or 'per config'}; "
                      "when resuming, the checkpoint's)")
  parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights, the batches and the samples")
  parser.add_argument("--save", default=None, metavar="PATH",
                      help="write a checkpoint (safetensors) here every --save-every steps, at the end, and when stopped by Ctrl-C")
  parser.add_argument("--save-every", type=int, default=1000, metavar="N")
  parser.add_argument("--resume", default=None, metavar="PATH",
                      help="continue the run a checkpoint was written by, with its settings and schedule (bit-exact); "
                           "it keeps saving there unless --save says otherwise")
  parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                      help="end this session after STEP steps as if interrupted (saving with --save); --resume continues")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


class StopRequest:
  """Ctrl-C during training stops after the current step instead of in the middle of an update.

  Inside the `with` block the first SIGINT only sets `requested` (the loop checks it, saves a
  checkpoint and ends); a second one raises KeyboardInterrupt as usual. Outside the main thread
  signals cannot be caught, and Ctrl-C keeps its usual meaning.
  """

  def __init__(self) -> None:
    self.requested, self._old = False, None

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread(): self._old = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    self.requested = True
    signal.signal(signal.SIGINT, self._old)
    print("\nstopping after this step (Ctrl-C again to abort now)", file=sys.stderr, flush=True)

  def __exit__(self, *exc: Any) -> None:
    if self._old is not None: signal.signal(signal.SIGINT, self._old)


def _duration(s: float) -> str:
  s = int(s)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
  """One status line on stderr for a training loop: steps, rate and ETA, the latest loss, and what the compiler is doing.

  The first steps of a run compile kernels, which can take far longer than a step. While that
  happens the line says so ("compiling 12/38 kernels"), fed by picograd's compile events, and the
  time spent compiling is left out of the rate and the ETA, which then describe training alone. On
  a terminal the line is rewritten in place (at most 5 times a second); into a file or pipe it is
  written as a new line at most every 10 s, and when a batch of compiles starts.
  """

  def __init__(self, total: int, initial: int = 0, desc: str = "train", disable: bool = False):
    self.total, self.initial, self.n, self.desc, self.disable = total, initial, initial, desc, disable
    self.postfix, self.compiling, self.compile_s = "", None, 0.0
    self.start = self.last = time.perf_counter()
    self.tty, self.width, self.shown = sys.stderr.isatty(), 0, ""
    if not disable:
      add_compile_listener(self._on_compile)
      self._draw(force=True)

  def _on_compile(self, event: CompileEvent) -> None:
    if event.finished:
      self.compiling = None
      self.compile_s += event.elapsed
    else: self.compiling = event
    # a log file gets the start of each batch of compiles; a terminal follows every kernel
    self._draw(force=self.tty or event.done == 0)

  def line(self) -> str:
    """The status as text (what the progress line shows now)."""
    now = time.perf_counter()
    head = f"{self.desc}: {self.n:,}/{self.total:,}"
    if self.compiling is not None:
      ev = self.compiling
      return f"{head} | compiling {ev.done}/{ev.total} kernels ({ev.elapsed:.0f} s)... {self.postfix}".rstrip()
    done, train_s = self.n - self.initial, max(now - self.start - self.compile_s, 1e-9)
    pct = f" {100 * self.n // max(self.total, 1):3d}%"
    if done == 0: return f"{head}{pct} | {self.postfix}".rstrip(" |")
    rate = done / train_s
    eta = _duration((self.total - self.n) / rate)
    compiled = f" + {_duration(self.compile_s)} compiling" if self.compile_s >= 1 else ""
    return f"{head}{pct} | {rate:,.1f} steps/s | {_duration(train_s)} training{compiled}, ETA {eta} | {self.postfix}".rstrip(" |")

  def _draw(self, force: bool = False) -> None:
    now = time.perf_counter()
    if self.disable or not (force or now - self.last > (0.2 if self.tty else 10.0) or self.n == self.total): return
    text = self.line()
    if text == self.shown: return
    self.last, self.shown = now, text
    if self.tty:
      print(f"\r{text}{' ' * max(self.width - len(text), 0)}", end="", file=sys.stderr, flush=True)
      self.width = len(text)
    else: print(text, file=sys.stderr, flush=True)

  def update(self, n: int = 1) -> None:
    self.n += n
    self._draw()

  def set_postfix_str(self, s: str) -> None: self.postfix = s

  def close(self) -> None:
    if self.disable: return
    remove_compile_listener(self._on_compile)
    self._draw(force=True)
    if self.tty: print(file=sys.stderr)


def progress(total: int, initial: int = 0, desc: str = "train", disable: bool = False) -> Progress:
  """The progress line of a training loop (see `Progress`): update(n), set_postfix_str(s), close()."""
  return Progress(total, initial, desc, disable)


def jit_train_step(loss_of: Callable[[Tensor, Tensor], Tensor], opt: Any, device: str | None = None) -> Callable[[Any, Any], Tensor]:
  """The training step of the examples under `picograd.jit`: the loss of a batch (x, y), its backward, and the
  optimizer's update realized in the same schedule as the loss; returns the loss. The batch may be numpy arrays (the jit
  copies them onto `device`, with no tensor made per step) or tensors."""
  @picograd.jit(device=device)
  def train_step(x: Tensor, y: Tensor) -> Tensor:
    loss = loss_of(x, y)
    opt.zero_grad()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss
  return train_step


def report_stop(done: int, total: int, save: str | None) -> None:
  """Say where a run that ended before its last step stopped, and how to continue it."""
  if done < total:
    print(f"stopped at step {done} of {total}" +
          (f"; continue with --resume {save}" if save else " (no checkpoint: give --save to be able to resume)"))


def save_checkpoint(path: str, objects: dict[str, Any], step: int, settings: dict[str, Any]) -> None:
  """Save everything a run needs to continue bit-exactly, atomically: every tensor of `objects` (model and optimizer
  state, e.g. {"model": model, "opt": opt}), the step count, the generator's state, and the run's `settings` (the
  hyperparameters and the learning-rate schedule, as JSON)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  metadata = {"step": str(step), "rng_state": json.dumps(Tensor.get_rng_state()), "settings": json.dumps(settings)}
  nn.state.save(nn.state_dict(objects), path, metadata=metadata)


def load_checkpoint(path: str, objects: dict[str, Any]) -> int:
  """Load a checkpoint written by `save_checkpoint` into `objects` in place, restore the generator; return the step."""
  nn.load_state_dict(objects, nn.state.load(path))
  meta = nn.state.load_metadata(path)
  if "rng_state" in meta: Tensor.set_rng_state(json.loads(meta["rng_state"]))
  return int(meta.get("step", 0))


def apply_resume_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, names: list[str]) -> None:
  """With --resume, write the run settings `names` the checkpoint was saved with into `args`.

  A resumed run keeps its settings, so it continues exactly as the uninterrupted run would have. A flag
  given on the command line that disagrees with the checkpoint is an error, except --steps, which
  sets a new length (the learning-rate schedule then follows the new length).
  """
  if not args.resume: return
  if not args.save: args.save = args.resume  # the run goes on saving where it was saved
  try:
    saved = json.loads(nn.state.load_metadata(args.resume).get("settings", "{}"))
  except (OSError, ValueError) as e:
    raise SystemExit(f"{parser.prog}: error: cannot read the checkpoint {args.resume}: {e}") from None
  for name in names:
    if name not in saved: continue
    given = getattr(args, name)
    if name == "steps":
      if given is None: args.steps = saved[name]
      continue
    if given != parser.get_default(name) and given != saved[name]:
      parser.error(f"--{name.replace('_', '-')} {given} differs from the checkpoint's {saved[name]}; a resumed run keeps its settings")
    setattr(args, name, saved[name])


def load_data(loader: Callable[[str | None], T], path: str | None) -> T:
  """`loader(path)` (e.g. `datasets.names`), or exit with one line saying how to supply a missing file (--data, $PICOGRAD_DATA, the download)."""
  try:
    return loader(path)
  except datasets.DataFileError as e:
    raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'picograd'}: error: {e.message('--data PATH')}") from None


def load_names(path: str | None) -> tuple[list[str], datasets.CharVocab, list[str], list[str]]:
  """The names dataset (makemore, rnn): all its words, their character vocabulary, and the train and dev words (see
  `load_data` for `path`)."""
  words = load_data(datasets.names, path)
  train_words, dev_words, _ = datasets.train_dev_test_split(words)
  return words, datasets.CharVocab.from_words(words), train_words, dev_words


def device_name(device: str | None) -> str:
  """The device a tensor created with `device=` lands on (resolving the $DEV default)."""
  return Tensor.zeros(1, device=device).device


def plot_curves(path: str, curves: dict[str, tuple[list[float], list[float]]], ylabel: str) -> bool:
  """Draw named (x, y) curves (per-step losses, evaluations) to the PNG `path`; False when matplotlib is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  fig, ax = plt.subplots(figsize=(7, 4))
  for label, (xs, ys) in curves.items():
    ax.plot(xs, ys, "o-" if len(xs) < 30 else "-", lw=0.8, label=label)
  ax.set_xlabel("step"), ax.set_ylabel(ylabel), ax.legend(), ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True
