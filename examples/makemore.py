"""makemore: the MLP character language model of Bengio et al. (2003) on 32,033 names, trained with SGD on picograd.

This is part 2 of Karpathy's makemore: each name is read one character at a time; the three
previous characters are embedded (10 numbers each), concatenated, passed through a 200-unit tanh
layer, and a linear layer gives the logits of the next character ('.' ends a name). The names are
split 80/10/10 into train/dev/test as in makemore. Training is plain SGD with a step decay of the
learning rate. The defaults (50,000 steps of 32 examples) reach a dev loss of about 2.13 in about 20 s
on a 2-core CPU (makemore's lecture reports 2.17 after 200,000 steps), then sample ten new names.

    python examples/makemore.py                     # defaults; --help for the rest
    python examples/makemore.py --save mm.safetensors --steps 5000   # Ctrl-C stops after a step and saves
    python examples/makemore.py --resume mm.safetensors             # continue that run to step 5000, bit-exactly

The training step (forward, backward, SGD update) is wrapped in `picograd.jit`: after two calls,
each step only relaunches its compiled kernels on the new batch.
"""
from __future__ import annotations
import argparse, os, sys, time
import numpy as np
import picograd
from picograd import Tensor, nn, optim
from picograd.nn import datasets
from picograd.engine.events import compile_stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (StopRequest, add_training_args, apply_resume_settings, device_name, jit_train_step, load_checkpoint,  # noqa: E402
                    load_names, progress, report_stop, save_checkpoint)


class MLP:
  """Embed `block_size` characters, one tanh hidden layer, logits over the vocabulary."""

  def __init__(self, vocab_size: int, block_size: int = 3, n_embd: int = 10, n_hidden: int = 200, device: str | None = None):
    self.emb = nn.Embedding(vocab_size, n_embd, device=device)
    self.hidden = nn.Linear(block_size * n_embd, n_hidden, device=device)
    self.out = nn.Linear(n_hidden, vocab_size, device=device)

  def __call__(self, context: Tensor) -> Tensor:
    """[batch, block_size] character indices -> [batch, vocab_size] logits."""
    return self.out(self.hidden(self.emb(context).flatten(1)).tanh())


@picograd.no_grad()
def evaluate(model: MLP, X: np.ndarray, Y: np.ndarray, device: str | None, chunk: int = 65536) -> float:
  """The mean cross-entropy over a whole split, in chunks so that memory stays small."""
  total = 0.0
  for start in range(0, len(X), chunk):
    x, y = Tensor(X[start:start + chunk], device=device), Tensor(Y[start:start + chunk], device=device)
    total += model(x).cross_entropy(y, reduction="sum").item()
  return total / len(X)


@picograd.no_grad()
def sample(model: MLP, vocab: datasets.CharVocab, block_size: int, n: int, rng: np.random.Generator, device: str | None,
           max_len: int = 30) -> list[str]:
  """n names drawn one character at a time from the model's distribution, all n in one batch."""
  context = np.zeros((n, block_size), dtype=np.int32)  # index 0 is '.', the start (and end) token
  out: list[list[int]] = [[] for _ in range(n)]
  done = np.zeros(n, dtype=bool)
  for _ in range(max_len):
    probs = model(Tensor(context, device=device)).softmax(-1).numpy().astype(np.float64)
    # inverse-CDF sampling, one uniform draw per row
    nxt = (probs.cumsum(1) < rng.random((n, 1)) * probs.sum(1, keepdims=True)).sum(1).clip(0, probs.shape[1] - 1)
    for i in np.flatnonzero(~done):
      if nxt[i] == 0: done[i] = True
      else: out[i].append(int(nxt[i]))
    if done.all(): break
    context = np.concatenate([context[:, 1:], nxt[:, None].astype(np.int32)], axis=1)
  return [vocab.decode(ids) for ids in out]


# what defines a run: a checkpoint keeps these, so that --resume continues the same run and learning-rate schedule
SETTINGS = ["steps", "seed", "batch", "lr", "lr_final", "decay_at", "block_size", "n_embd", "n_hidden"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_training_args(parser, steps=50000)
  parser.add_argument("--batch", type=int, default=32, help="examples per step")
  parser.add_argument("--lr", type=float, default=0.1, help="learning rate for the first --decay-at of the steps")
  parser.add_argument("--lr-final", type=float, default=0.01, help="learning rate for the rest")
  parser.add_argument("--decay-at", type=float, default=0.75, help="fraction of the steps after which --lr-final applies")
  parser.add_argument("--block-size", type=int, default=3, help="characters of context")
  parser.add_argument("--n-embd", type=int, default=10, help="embedding size per character")
  parser.add_argument("--n-hidden", type=int, default=200, help="hidden units")
  parser.add_argument("--samples", type=int, default=10, help="names to sample at the end")
  parser.add_argument("--data", default=None, help="path of names.txt (default: found or downloaded by picograd.nn.datasets)")
  args = parser.parse_args(argv)
  apply_resume_settings(parser, args, SETTINGS)
  if args.steps is None: args.steps = 50000
  return args


def main(argv: list[str] | None = None) -> dict:
  """Train, evaluate and sample; return the summary (losses, timings, samples) that is also printed."""
  args = parse_args(argv)
  _, vocab, train_words, dev_words = load_names(args.data)
  Xtr, Ytr = datasets.makemore_dataset(train_words, args.block_size, vocab=vocab)
  Xdev, Ydev = datasets.makemore_dataset(dev_words, args.block_size, vocab=vocab)

  Tensor.manual_seed(args.seed)
  model = MLP(len(vocab), args.block_size, args.n_embd, args.n_hidden, device=args.device)
  opt = optim.SGD(nn.get_parameters(model), lr=args.lr)
  start = load_checkpoint(args.resume, {"model": model, "opt": opt}) if args.resume else 0
  n_params = sum(p.numel() for p in opt.params)
  print(f"makemore MLP: {n_params:,} parameters, {len(Xtr):,} training examples, on {device_name(args.device)}")

  train_step = jit_train_step(lambda x, y: model(x).cross_entropy(y), opt, args.device)

  decay_step = int(args.steps * args.decay_at)
  end = args.steps if args.stop_at is None else max(start, min(args.stop_at, args.steps))
  settings = {name: getattr(args, name) for name in SETTINGS}
  losses: list[float] = []
  bar = progress(args.steps, start, desc="makemore", disable=args.quiet)
  t0, compiles_before = time.perf_counter(), dict(compile_stats)
  with StopRequest() as stop:
    for step in range(start, end):
      if step in (start, decay_step): opt.lr = args.lr if step < decay_step else args.lr_final
      # the batch depends only on (seed, step), so a resumed run sees the batches the full run would have
      ix = np.random.default_rng((args.seed, step)).integers(0, len(Xtr), args.batch)
      loss = train_step(Xtr[ix], Ytr[ix]).item()
      losses.append(loss)
      bar.update()
      if step % 100 == 0: bar.set_postfix_str(f"loss {loss:.3f}")
      last = step + 1 == end or stop.requested
      if args.save and ((step + 1) % args.save_every == 0 or last):
        save_checkpoint(args.save, {"model": model, "opt": opt}, step + 1, settings)
      if stop.requested: break
  bar.close()
  train_time = time.perf_counter() - t0
  compile_s, n_compiled = compile_stats["seconds"] - compiles_before["seconds"], compile_stats["kernels"] - compiles_before["kernels"]
  report_stop(start + len(losses), args.steps, args.save)

  summary = {"steps": len(losses), "train_time_s": train_time, "compile_time_s": compile_s, "losses": losses,
             "train_loss": evaluate(model, Xtr, Ytr, args.device), "dev_loss": evaluate(model, Xdev, Ydev, args.device)}
  summary["samples"] = sample(model, vocab, args.block_size, args.samples, np.random.default_rng(args.seed), args.device)
  steps_per_s = summary["steps"] / max(train_time - compile_s, 1e-9)
  print(f"trained {summary['steps']} steps of batch {args.batch} in {train_time:.1f} s, {compile_s:.1f} s of it compiling "
        f"{n_compiled} kernels ({steps_per_s:.0f} steps/s, {steps_per_s * args.batch:,.0f} examples/s after that)")
  print(f"train loss {summary['train_loss']:.4f}   dev loss {summary['dev_loss']:.4f}")
  print("samples:", ", ".join(summary["samples"]))
  return summary


if __name__ == "__main__":
  main()
