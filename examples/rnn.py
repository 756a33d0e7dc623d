"""rnn: a character-level recurrent language model (LSTM, GRU or plain RNN) on 32,033 names, trained with AdamW on picograd.

The names of makemore (the same loader and the same 80/10/10 train/dev/test split as
examples/makemore.py) are read one character at a time: each name becomes a sequence that starts
with '.', and at every position the model predicts the next character ('.' ends the name).
Names are padded to one length, and the padding is left out of the loss (`ignore_index`). The
model embeds each character, runs it through `nn.LSTM` (or `--cell gru|rnn`), and a linear layer
gives the logits. The loss is the mean per character, as makemore's MLP reports it, so the numbers
compare: the defaults (2,000 steps of 32 names) reach a dev loss of about 2.0 for the LSTM (makemore's MLP example: 2.13).

    python examples/rnn.py                    # LSTM; --cell gru|rnn, --help for the rest
    python examples/rnn.py --cell gru --steps 2000

The training step is wrapped in `picograd.jit`: the whole sequence is unrolled in its graph
(forward and backward through time); the first two calls compile and capture its kernels (each
time step reuses the same ones), and every later step only relaunches them, at a steady rate.
"""
from __future__ import annotations
import argparse, math, os, sys, time
import numpy as np
import picograd
from picograd import Tensor, nn, optim
from picograd.nn import datasets
from picograd.engine.events import compile_stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (StopRequest, add_training_args, apply_resume_settings, device_name, jit_train_step, load_checkpoint,  # noqa: E402
                    load_names, plot_curves, progress, report_stop, save_checkpoint)

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
PAD = -1  # the target of padding positions: ignored by the loss


def sequences(words: list[str], vocab: datasets.CharVocab, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets), both [len(words), length] int32: '.' then the name, and the name then '.', padded (targets with PAD)."""
  x = np.zeros((len(words), length), dtype=np.int32)
  y = np.full((len(words), length), PAD, dtype=np.int32)
  for i, w in enumerate(words):
    ids = vocab.encode(w)[:length - 1]
    x[i, 1:len(ids) + 1] = ids
    y[i, :len(ids)] = ids
    y[i, len(ids)] = 0  # the end token '.'
  return x, y


class CharRNN:
  """Embedding -> recurrent layer (batch first) -> linear logits over the vocabulary."""

  def __init__(self, vocab_size: int, cell: str = "lstm", n_embd: int = 32, n_hidden: int = 128, device: str | None = None):
    self.emb = nn.Embedding(vocab_size, n_embd, device=device)
    self.rnn = CELLS[cell](n_embd, n_hidden, batch_first=True, device=device)
    self.out = nn.Linear(n_hidden, vocab_size, device=device)

  def __call__(self, idx: Tensor, state=None) -> tuple[Tensor, object]:
    """[batch, time] character indices (and the recurrent state) -> [batch, time, vocab] logits and the state after."""
    h, state = self.rnn(self.emb(idx), state)
    return self.out(h), state


@picograd.no_grad()
def evaluate(model: CharRNN, x: np.ndarray, y: np.ndarray, device: str | None, chunk: int = 1024) -> float:
  """The mean cross-entropy per character over a whole split; every chunk has one shape (padded rows have no targets)."""
  total, count = 0.0, int((y != PAD).sum())
  for start in range(0, len(x), chunk):
    xs, ys = np.zeros((chunk, x.shape[1]), np.int32), np.full((chunk, y.shape[1]), PAD, np.int32)
    xs[:len(x) - start], ys[:len(x) - start] = x[start:start + chunk], y[start:start + chunk]
    logits, _ = model(Tensor(xs, device=device))
    total += logits.flatten(0, 1).cross_entropy(Tensor(ys.reshape(-1), device=device), ignore_index=PAD, reduction="sum").item()
  return total / count


@picograd.no_grad()
def sample(model: CharRNN, vocab: datasets.CharVocab, n: int, max_len: int, rng: np.random.Generator, device: str | None) -> list[str]:
  """n names drawn one character at a time, all n in one batch, carrying the recurrent state from step to step."""
  idx, state = np.zeros((n, 1), dtype=np.int32), None
  out: list[list[int]] = [[] for _ in range(n)]
  done = np.zeros(n, dtype=bool)
  for _ in range(max_len):
    logits, state = model(Tensor(idx, device=device), state)
    state = tuple(s.realize() for s in state) if isinstance(state, tuple) else state.realize()
    probs = logits[:, -1].softmax(-1).numpy().astype(np.float64)
    nxt = (probs.cumsum(1) < rng.random((n, 1)) * probs.sum(1, keepdims=True)).sum(1).clip(0, probs.shape[1] - 1)  # inverse CDF
    for i in np.flatnonzero(~done):
      if nxt[i] == 0: done[i] = True
      else: out[i].append(int(nxt[i]))
    if done.all(): break
    idx = nxt[:, None].astype(np.int32)
  return [vocab.decode(ids) for ids in out]


# what defines a run: a checkpoint keeps these, so that --resume continues the same run and learning-rate schedule
SETTINGS = ["steps", "seed", "cell", "batch", "lr", "n_embd", "n_hidden"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_training_args(parser, steps=2000)
  parser.add_argument("--cell", choices=sorted(CELLS), default="lstm", help="the recurrent layer")
  parser.add_argument("--batch", type=int, default=32, help="names per step")
  parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (cosine decay to a tenth of it)")
  parser.add_argument("--n-embd", type=int, default=32, help="embedding size per character")
  parser.add_argument("--n-hidden", type=int, default=128, help="hidden units of the recurrent layer")
  parser.add_argument("--samples", type=int, default=10, help="names to sample at the end")
  parser.add_argument("--eval-every", type=int, default=500, help="steps between dev-set evaluations")
  parser.add_argument("--plot", default="rnn_loss.png", help="where to draw the loss curve (needs matplotlib; '' for none)")
  parser.add_argument("--data", default=None, help="path of names.txt (default: found or downloaded by picograd.nn.datasets)")
  args = parser.parse_args(argv)
  apply_resume_settings(parser, args, SETTINGS)
  if args.steps is None: args.steps = 2000
  return args


def main(argv: list[str] | None = None) -> dict:
  """Train, evaluate and sample; return the summary (losses, step times, samples) that is also printed."""
  args = parse_args(argv)
  words, vocab, train_words, dev_words = load_names(args.data)
  length = max(len(w) for w in words) + 1  # room for the start token
  xtr, ytr = sequences(train_words, vocab, length)
  xdev, ydev = sequences(dev_words, vocab, length)

  Tensor.manual_seed(args.seed)
  model = CharRNN(len(vocab), args.cell, args.n_embd, args.n_hidden, device=args.device)
  opt = optim.AdamW(nn.get_parameters(model), lr=args.lr, weight_decay=0.0)
  start = load_checkpoint(args.resume, {"model": model, "opt": opt}) if args.resume else 0
  n_params = sum(p.numel() for p in opt.params)
  print(f"rnn ({args.cell}): {n_params:,} parameters, {len(xtr):,} training names of up to {length} characters, on {device_name(args.device)}")

  def loss_of(x: Tensor, y: Tensor) -> Tensor: return model(x)[0].flatten(0, 1).cross_entropy(y.flatten(), ignore_index=PAD)
  train_step = jit_train_step(loss_of, opt, args.device)

  end = args.steps if args.stop_at is None else max(start, min(args.stop_at, args.steps))
  settings = {name: getattr(args, name) for name in SETTINGS}
  losses: list[float] = []
  step_times: list[float] = []
  evals: list[tuple[int, float]] = []  # (step, dev loss)
  bar = progress(args.steps, start, desc=f"rnn {args.cell}", disable=args.quiet)
  t0, compiles_before = time.perf_counter(), dict(compile_stats)
  compiles_after_capture = 0
  with StopRequest() as stop:
    for step in range(start, end):
      opt.lr = args.lr * (0.55 + 0.45 * math.cos(math.pi * step / args.steps))  # cosine from lr to lr/10
      # the batch depends only on (seed, step), so a resumed run sees the batches the full run would have
      ix = np.random.default_rng((args.seed, step)).integers(0, len(xtr), args.batch)
      kernels_before, ts = compile_stats["kernels"], time.perf_counter()
      loss = train_step(xtr[ix], ytr[ix]).item()
      step_times.append(time.perf_counter() - ts)
      if step >= start + 2: compiles_after_capture += compile_stats["kernels"] - kernels_before
      losses.append(loss)
      bar.update()
      if step % 50 == 0: bar.set_postfix_str(f"loss {loss:.3f}" + (f" dev {evals[-1][1]:.3f}" if evals else ""))
      if (step + 1) % args.eval_every == 0 or step + 1 == end: evals.append((step + 1, evaluate(model, xdev, ydev, args.device)))
      last = step + 1 == end or stop.requested
      if args.save and ((step + 1) % args.save_every == 0 or last):
        save_checkpoint(args.save, {"model": model, "opt": opt}, step + 1, settings)
      if stop.requested: break
  bar.close()
  train_time = time.perf_counter() - t0
  compile_s, n_compiled = compile_stats["seconds"] - compiles_before["seconds"], compile_stats["kernels"] - compiles_before["kernels"]
  report_stop(start + len(losses), args.steps, args.save)

  replayed = np.array(step_times[2:]) * 1e3  # the first two calls run, compile and capture; the rest replay
  summary = {"steps": len(losses), "train_time_s": train_time, "compile_time_s": compile_s, "losses": losses, "evals": evals,
             "compiles_after_capture": compiles_after_capture, "step_ms_median": float(np.median(replayed)) if len(replayed) else math.nan,
             "step_ms_p90": float(np.percentile(replayed, 90)) if len(replayed) else math.nan,
             "dev_loss": evals[-1][1] if evals else evaluate(model, xdev, ydev, args.device)}
  summary["samples"] = sample(model, vocab, args.samples, length, np.random.default_rng(args.seed), args.device)
  print(f"trained {len(losses)} steps of batch {args.batch} in {train_time:.1f} s, {compile_s:.1f} s of it compiling {n_compiled} kernels "
        f"({compiles_after_capture} after the second step); a replayed step takes {summary['step_ms_median']:.1f} ms "
        f"(median; 90th percentile {summary['step_ms_p90']:.1f} ms)")
  print("step   dev loss")
  for s, dl in evals: print(f"{s:>5}   {dl:8.4f}")
  print(f"dev loss {summary['dev_loss']:.4f}")
  if args.plot and losses and plot_curves(args.plot, {"train (per step)": (list(range(start + 1, start + len(losses) + 1)), losses),
                                                       "dev": ([s for s, _ in evals], [v for _, v in evals])}, "cross-entropy per character"):
    print(f"loss curve drawn to {args.plot}")
  print("samples:", ", ".join(summary["samples"]))
  return summary


if __name__ == "__main__":
  main()
