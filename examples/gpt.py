"""A character-level GPT on tiny Shakespeare, trained with AdamW on picograd, then sampled.

The model is nanoGPT's: token and position embeddings, pre-LayerNorm blocks of causal
multi-head self-attention and a GELU MLP, each with a residual connection, a final LayerNorm, and
a linear language-model head. (nanoGPT ties the head to the token embedding; with PyTorch's default
N(0, 1) embedding init that would start the logits far too large, so the head has its own weight.)
The text's first 90% trains, the rest validates. The learning rate warms up linearly and then
follows a cosine to a tenth of its peak.

    python examples/gpt.py                        # the small CPU config: ~1.5 min on 2 cores, val loss ~1.94
    DEV=CUDA python examples/gpt.py               # the large config (6 layers, 6 heads, 384 dims, context 256)
    python examples/gpt.py --config large --steps 200 --save gpt.safetensors
    python examples/gpt.py --resume gpt.safetensors              # continue that run to step 200, bit-exactly
    DEV=CUDA python examples/gpt.py --devices 2 [--zero1]         # data-parallel on CUDA:0 and CUDA:1 (CPU: virtual devices)
    python examples/gpt.py --checkpoint           # recompute each block in the backward: less memory, more time

Each training step (forward, backward, AdamW) runs under `picograd.jit`, so after the first two
steps only the compiled kernels are relaunched. With `--devices N` (picograd.nn.parallel) each
device holds a replica and trains on 1/N of every batch; the gradients are all-reduced, so the
replicas stay identical; `--zero1` shards AdamW's state instead of replicating it. The summary reports tokens per second and the loss
curve, also drawn to a PNG (--plot) when matplotlib is installed.
"""
from __future__ import annotations
import argparse, math, os, sys, time
from dataclasses import asdict, dataclass, replace
import numpy as np
import picograd
from picograd import Tensor, nn, optim
from picograd.nn import datasets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (StopRequest, add_training_args, apply_resume_settings, device_name, load_checkpoint, load_data,  # noqa: E402
                    progress, report_stop, save_checkpoint)


@dataclass(frozen=True)
class Config:
  n_layer: int
  n_head: int
  n_embd: int
  block_size: int  # context length in characters
  batch: int
  steps: int
  lr: float
  warmup: int
  dropout: float
  eval_every: int
  eval_batches: int


CONFIGS = {
  # small enough for a 2-core CPU: a few minutes to a validation loss under 2.0
  "small": Config(n_layer=2, n_head=4, n_embd=64, block_size=32, batch=32, steps=1600, lr=5e-3, warmup=100, dropout=0.0,
                  eval_every=400, eval_batches=20),
  # nanoGPT's shakespeare_char "baby GPT", for a GPU
  "large": Config(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=64, steps=5000, lr=1e-3, warmup=100, dropout=0.2,
                  eval_every=500, eval_batches=20),
}


class CausalSelfAttention:
  def __init__(self, cfg: Config, device: str | None):
    self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
    self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, device=device)  # queries, keys and values in one matmul
    self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, device=device)
    self.dropout = cfg.dropout

  def __call__(self, x: Tensor) -> Tensor:
    B, T, C = x.shape
    q, k, v = [t.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2)]
    y = q.scaled_dot_product_attention(k, v, is_causal=True, dropout_p=self.dropout if Tensor.training else 0.0)
    return self.c_proj(y.transpose(1, 2).reshape(B, T, C)).dropout(self.dropout)


class MLP:
  def __init__(self, cfg: Config, device: str | None):
    self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, device=device)
    self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, device=device)
    self.dropout = cfg.dropout

  # the tanh approximation of GPT-2: the exact erf form costs a long series per element
  def __call__(self, x: Tensor) -> Tensor: return self.c_proj(self.c_fc(x).gelu(approximate="tanh")).dropout(self.dropout)


class Block:
  def __init__(self, cfg: Config, device: str | None):
    self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd, device=device), CausalSelfAttention(cfg, device)
    self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd, device=device), MLP(cfg, device)

  def __call__(self, x: Tensor) -> Tensor:
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT:
  def __init__(self, cfg: Config, vocab_size: int, device: str | None = None, checkpoint: bool = False):
    self.block_size, self.device = cfg.block_size, device
    self.checkpoint = checkpoint  # recompute each block in the backward instead of keeping its activations
    self.wte = nn.Embedding(vocab_size, cfg.n_embd, device=device)
    self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd, device=device)
    self.blocks = [Block(cfg, device) for _ in range(cfg.n_layer)]
    self.ln_f = nn.LayerNorm(cfg.n_embd, device=device)
    self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False, device=device)
    self.dropout = cfg.dropout

  def __call__(self, idx: Tensor) -> Tensor:
    """[batch, time] character indices -> [batch, time, vocab] logits."""
    T = idx.shape[1]
    x = (self.wte(idx) + self.wpe(Tensor.arange(T, device=self.device))).dropout(self.dropout)
    for block in self.blocks: x = picograd.checkpoint(block, x) if self.checkpoint else block(x)
    return self.lm_head(self.ln_f(x))


def loss_fn(model: GPT, x: Tensor, y: Tensor, dtype: str = "float32") -> Tensor:
  """Mean cross-entropy of the next characters; with a 16-bit `dtype`, under autocast (matmuls in it, the loss in float32)."""
  low = picograd.dtypes.from_any(dtype)
  with picograd.autocast(low if low != picograd.dtypes.float32 else picograd.dtypes.bfloat16, enabled=low != picograd.dtypes.float32):
    logits = model(x)
    return logits.reshape(-1, logits.shape[-1]).cross_entropy(y.reshape(-1))


def get_batch(data: np.ndarray, block_size: int, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`batch` random windows of the text and the same windows shifted by one character (the targets)."""
  starts = rng.integers(0, len(data) - block_size - 1, batch)
  x = np.stack([data[s:s + block_size] for s in starts])
  y = np.stack([data[s + 1:s + block_size + 1] for s in starts])
  return x, y


@picograd.no_grad()
def estimate_loss(model: GPT, data: np.ndarray, cfg: Config, seed: int, device: str | None, dtype: str = "float32") -> float:
  """Mean loss over `cfg.eval_batches` random batches (the same batches at every evaluation)."""
  rng = np.random.default_rng(seed)
  losses = []
  for _ in range(cfg.eval_batches):
    x, y = get_batch(data, cfg.block_size, cfg.batch, rng)
    losses.append(loss_fn(model, Tensor(x, device=device), Tensor(y, device=device), dtype).item())
  return float(np.mean(losses))


@picograd.no_grad()
def generate(model: GPT, vocab: datasets.CharVocab, prompt: str, n_chars: int, rng: np.random.Generator, device: str | None,
             temperature: float = 1.0) -> str:
  """Sample `n_chars` characters after `prompt`, one at a time.

  The model always sees a full window of `block_size` characters (the context, zero-padded on the
  right while it is shorter): one input shape means one compiled forward pass, and with causal
  attention the padding cannot change the logits at the last real position.
  """
  logits_of = picograd.jit(lambda window: model(window))
  ids = list(vocab.encode(prompt))
  T = model.block_size
  for _ in range(n_chars):
    context = ids[-T:]
    window = np.zeros((1, T), dtype=np.int32)
    window[0, :len(context)] = context
    logits = logits_of(Tensor(window, device=device)).numpy()[0, len(context) - 1].astype(np.float64) / temperature
    probs = np.exp(logits - logits.max())
    ids.append(int(rng.choice(len(probs), p=probs / probs.sum())))
  return vocab.decode(ids)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_training_args(parser, steps=None)
  parser.add_argument("--config", choices=sorted(CONFIGS), default=None, help="model size (default: large on CUDA, small elsewhere)")
  for field in ("n_layer", "n_head", "n_embd", "block_size", "batch", "warmup", "eval_every", "eval_batches"):
    parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=None, help=f"override the config's {field}")
  for field in ("lr", "dropout"): parser.add_argument(f"--{field}", type=float, default=None, help=f"override the config's {field}")
  parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                      help="matmul precision: 16-bit types train under picograd.autocast (default: bfloat16 on CUDA, float32 elsewhere)")
  parser.add_argument("--sample-chars", type=int, default=300, help="characters to generate at the end")
  parser.add_argument("--plot", default="gpt_loss.png", help="where to draw the loss curve (needs matplotlib; '' for none)")
  parser.add_argument("--data", default=None, help="path of tinyshakespeare.txt (default: found or downloaded by picograd.nn.datasets)")
  parser.add_argument("--viz", default="", help="write an HTML report of the training (kernels, the lines they came from, sources, times) "
                      "here; every launch is timed, so use it for a few steps")
  parser.add_argument("--devices", type=int, default=1, help="data-parallel over this many devices of --device's kind (CPU: virtual)")
  parser.add_argument("--zero1", action="store_true", help="with --devices: shard the optimizer state (ZeRO-1)")
  parser.add_argument("--checkpoint", action="store_true", help="gradient checkpointing: recompute each block in the backward (less memory)")
  args = parser.parse_args(argv)
  # a checkpoint keeps the whole config (and so the learning-rate schedule): --resume continues the same run
  apply_resume_settings(parser, args, ["config", "seed", "dtype", "devices", "zero1", *Config.__dataclass_fields__])
  if args.devices < 1: parser.error("--devices must be at least 1")
  if args.dtype is None: args.dtype = "bfloat16" if device_name(args.device).startswith("CUDA") else "float32"
  return args


def config_name(args: argparse.Namespace) -> str:
  return args.config or ("large" if device_name(args.device).startswith("CUDA") else "small")


def make_config(args: argparse.Namespace) -> Config:
  name = config_name(args)
  overrides = {f: getattr(args, f) for f in Config.__dataclass_fields__ if getattr(args, f, None) is not None}
  return replace(CONFIGS[name], **overrides)


def plot_losses(path: str, train: list[float], evals: list[tuple[int, float, float]]) -> bool:
  """Draw the loss curve to `path`; False when matplotlib is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(range(len(train)), train, lw=0.6, alpha=0.6, label="train (per step)")
  ax.plot([s for s, _, _ in evals], [v for _, _, v in evals], "o-", label="validation")
  ax.set_xlabel("step"), ax.set_ylabel("cross-entropy"), ax.legend(), ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def main(argv: list[str] | None = None) -> dict:
  """Train, evaluate and sample; return the summary (loss curve, timings, sample) that is also printed."""
  args = parse_args(argv)
  if args.viz: picograd.viz.start()
  cfg = make_config(args)
  text = load_data(datasets.tinyshakespeare, args.data)
  vocab = datasets.CharVocab.from_text(text)
  data = vocab.encode(text)
  split = int(0.9 * len(data))
  train_data, val_data = data[:split], data[split:]

  Tensor.manual_seed(args.seed)
  make_opt = lambda params: optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)  # noqa: E731
  dp = None
  if args.devices > 1 or args.zero1:
    kind = device_name(args.device).split(":")[0]
    dp = nn.DataParallel(lambda device: GPT(cfg, len(vocab), device=device, checkpoint=args.checkpoint),
                         [f"{kind}:{i}" for i in range(args.devices)], zero1=args.zero1)
    model, opt = dp.model, dp.optimizer(make_opt)
  else:
    model = GPT(cfg, len(vocab), device=args.device, checkpoint=args.checkpoint)
    opt = make_opt(nn.get_parameters(model))
  start = load_checkpoint(args.resume, {"model": model, "opt": opt}) if args.resume else 0
  n_params = sum(p.numel() for p in nn.get_parameters(model))
  on = device_name(args.device) if dp is None else f"{', '.join(dp.devices)} (data-parallel{', ZeRO-1' if args.zero1 else ''})"
  print(f"GPT: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} dims, context {cfg.block_size}, batch {cfg.batch}; "
        f"{n_params:,} parameters; on {on}, matmuls in {args.dtype}")

  def step_loss(m: GPT, x: Tensor, y: Tensor) -> Tensor: return loss_fn(m, x, y, args.dtype)

  @picograd.jit(device=args.device)  # the batches come as arrays: a replay copies them into its input buffers
  def train_step(x: Tensor, y: Tensor) -> Tensor:
    loss = step_loss(model, x, y) if dp is None else dp.loss(step_loss, x, y)
    opt.zero_grad()
    loss.backward()
    first = loss if dp is None else loss.pieces[0]  # a data-parallel loss is replicated: every device holds the global mean
    Tensor.realize(first, *opt.schedule_step())
    return first

  train_losses: list[float] = []
  evals: list[tuple[int, float, float]] = []  # (step, train loss, validation loss)
  tokens_per_step = cfg.batch * cfg.block_size
  settings = {"config": config_name(args), "seed": args.seed, "dtype": args.dtype, "devices": args.devices, "zero1": args.zero1, **asdict(cfg)}
  end = cfg.steps if args.stop_at is None else max(start, min(args.stop_at, cfg.steps))
  bar = progress(cfg.steps, start, desc="gpt", disable=args.quiet)
  train_time, timed_steps = 0.0, 0
  with StopRequest() as stop:
    for step in range(start, end):
      opt.lr = optim.cosine_warmup(step, cfg.lr, cfg.warmup, cfg.steps, min_lr=cfg.lr / 10)
      x, y = get_batch(train_data, cfg.block_size, cfg.batch, np.random.default_rng((args.seed, step)))
      t0 = time.perf_counter()
      Tensor.training = True
      loss = train_step(x, y).item()
      Tensor.training = False
      # the first two steps compile and capture the kernels: leave them out of the throughput
      if step >= start + 2: train_time, timed_steps = train_time + time.perf_counter() - t0, timed_steps + 1
      train_losses.append(loss)
      bar.update()
      bar.set_postfix_str(f"loss {loss:.3f}")
      if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
        evals.append((step + 1, estimate_loss(model, train_data, cfg, args.seed, args.device, args.dtype),
                      estimate_loss(model, val_data, cfg, args.seed + 1, args.device, args.dtype)))
        bar.set_postfix_str(f"loss {loss:.3f} val {evals[-1][2]:.3f}")
      last = step + 1 == end or stop.requested
      if args.save and ((step + 1) % args.save_every == 0 or last):
        save_checkpoint(args.save, {"model": model, "opt": opt}, step + 1, settings)
      if stop.requested: break
  bar.close()
  if args.viz: print(f"report of the training written to {picograd.viz.report(args.viz)}")
  report_stop(start + len(train_losses), cfg.steps, args.save)

  tok_s = timed_steps * tokens_per_step / train_time if timed_steps else float("nan")
  sample = generate(model, vocab, "\n", args.sample_chars, np.random.default_rng(args.seed), args.device)
  print(f"trained {len(train_losses)} steps, {tok_s:,.0f} tokens/s ({1e3 * train_time / max(timed_steps, 1):.1f} ms/step)")
  print("step   train loss   val loss")
  for step, tl, vl in evals: print(f"{step:>5}   {tl:10.4f}   {vl:8.4f}")
  if args.plot and train_losses and plot_losses(args.plot, train_losses, evals): print(f"loss curve drawn to {args.plot}")
  print("sample:\n" + sample)
  return {"config": cfg, "losses": train_losses, "evals": evals, "tokens_per_s": tok_s, "train_time_s": train_time, "sample": sample,
          "val_loss": evals[-1][2] if evals else math.nan}


if __name__ == "__main__":
  main()
