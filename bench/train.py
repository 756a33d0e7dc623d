"""Training throughput: the training step of each example on picograd beside the same model on PyTorch.

For the makemore MLP (SGD), the character GPT (AdamW) and the character LSTM of examples/rnn.py (AdamW), both frameworks run the same
architecture, batch and optimizer for --steps timed steps after --warmup untimed ones (picograd
compiles and captures its JIT then), and the table gives ms per step, tokens per second (a makemore
example predicts one token) and PyTorch's time over picograd's (above 0.5: within 2x of PyTorch).
PyTorch on the CPU is timed with one thread and with one per core, and the faster is shown.

    python bench/train.py                  # CPU: makemore, the small GPT and the LSTM
    DEV=CUDA python bench/train.py         # also on the GPU, with the large GPT
    python bench/train.py --models gpt --gpt-config large --steps 5
    python bench/train.py --devices CUDA --models gpt --precisions   # the GPT in every precision, beside PyTorch's

--precisions adds a table for the GPT: picograd in float32, with TF32 matmuls and under bf16 autocast, PyTorch in float32, TF32, bf16
autocast and bf16 autocast + torch.compile, each timed the same way (CUDA only: TF32 and bf16 are GPU modes).
"""
from __future__ import annotations
import argparse, os, sys, time
from typing import Callable
import numpy as np
import picograd
from picograd import Tensor, nn, optim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import gpt, makemore, rnn  # noqa: E402
from common import jit_train_step  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MAKEMORE = {"vocab": 27, "block_size": 3, "n_embd": 10, "n_hidden": 200, "batch": 32, "lr": 0.1}
# examples/rnn.py's defaults: names padded to 16 characters, 32 of them a step
LSTM = {"vocab": 27, "n_embd": 32, "n_hidden": 128, "batch": 32, "length": 16, "lr": 1e-2}


# ---------------------------------------------------------------- the PyTorch twins
class TorchMLP(torch.nn.Module):
  def __init__(self, vocab: int, block_size: int, n_embd: int, n_hidden: int):
    super().__init__()
    self.emb = torch.nn.Embedding(vocab, n_embd)
    self.hidden, self.out = torch.nn.Linear(block_size * n_embd, n_hidden), torch.nn.Linear(n_hidden, vocab)

  def forward(self, x: torch.Tensor) -> torch.Tensor: return self.out(torch.tanh(self.hidden(self.emb(x).flatten(1))))


class TorchLSTM(torch.nn.Module):
  def __init__(self, vocab: int, n_embd: int, n_hidden: int):
    super().__init__()
    self.emb, self.out = torch.nn.Embedding(vocab, n_embd), torch.nn.Linear(n_hidden, vocab)
    self.rnn = torch.nn.LSTM(n_embd, n_hidden, batch_first=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor: return self.out(self.rnn(self.emb(x))[0])


class TorchBlock(torch.nn.Module):
  def __init__(self, cfg: gpt.Config):
    super().__init__()
    self.n_head, self.dropout = cfg.n_head, cfg.dropout
    self.ln_1, self.ln_2 = torch.nn.LayerNorm(cfg.n_embd), torch.nn.LayerNorm(cfg.n_embd)
    self.c_attn, self.attn_proj = torch.nn.Linear(cfg.n_embd, 3 * cfg.n_embd), torch.nn.Linear(cfg.n_embd, cfg.n_embd)
    self.c_fc, self.mlp_proj = torch.nn.Linear(cfg.n_embd, 4 * cfg.n_embd), torch.nn.Linear(4 * cfg.n_embd, cfg.n_embd)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    B, T, C = x.shape
    q, k, v = [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(self.ln_1(x)).split(C, dim=2)]
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
    x = x + F.dropout(self.attn_proj(y.transpose(1, 2).reshape(B, T, C)), self.dropout, self.training)
    return x + F.dropout(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")), self.dropout, self.training)


class TorchGPT(torch.nn.Module):
  def __init__(self, cfg: gpt.Config, vocab: int):
    super().__init__()
    self.dropout = cfg.dropout
    self.wte, self.wpe = torch.nn.Embedding(vocab, cfg.n_embd), torch.nn.Embedding(cfg.block_size, cfg.n_embd)
    self.blocks = torch.nn.ModuleList([TorchBlock(cfg) for _ in range(cfg.n_layer)])
    self.ln_f, self.lm_head = torch.nn.LayerNorm(cfg.n_embd), torch.nn.Linear(cfg.n_embd, vocab, bias=False)

  def forward(self, idx: torch.Tensor) -> torch.Tensor:
    x = F.dropout(self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device)), self.dropout, self.training)
    for block in self.blocks: x = block(x)
    return self.lm_head(self.ln_f(x))


# ---------------------------------------------------------------- one training step per framework and model
def _batches(steps: int, shape: tuple[int, ...], vocab: int, targets_shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(0)
  return [(rng.integers(0, vocab, shape).astype(np.int32), rng.integers(0, vocab, targets_shape).astype(np.int32)) for _ in range(steps)]


def picograd_step(model_name: str, cfg: gpt.Config, device: str, dtype: str = "float32") -> tuple[Callable[[np.ndarray, np.ndarray], float], int]:
  """The example's jitted training step on picograd (the GPT's matmuls in `dtype`, under autocast), and the tokens one step trains on."""
  if model_name == "makemore":
    model = makemore.MLP(MAKEMORE["vocab"], MAKEMORE["block_size"], MAKEMORE["n_embd"], MAKEMORE["n_hidden"], device=device)
    opt: optim.Optimizer = optim.SGD(nn.get_parameters(model), lr=MAKEMORE["lr"])
    loss_of = lambda x, y: model(x).cross_entropy(y)
    tokens = MAKEMORE["batch"]
  elif model_name == "lstm":
    lstm = rnn.CharRNN(LSTM["vocab"], "lstm", LSTM["n_embd"], LSTM["n_hidden"], device=device)
    opt = optim.AdamW(nn.get_parameters(lstm), lr=LSTM["lr"], weight_decay=0.0)
    loss_of = lambda x, y: lstm(x)[0].flatten(0, 1).cross_entropy(y.flatten(), ignore_index=rnn.PAD)
    tokens = LSTM["batch"] * LSTM["length"]
  else:
    model = gpt.GPT(cfg, 65, device=device)
    opt = optim.AdamW(nn.get_parameters(model), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)
    loss_of = lambda x, y: gpt.loss_fn(model, x, y, dtype)
    tokens = cfg.batch * cfg.block_size

  step = jit_train_step(loss_of, opt, device)
  Tensor.training = model_name == "gpt" and cfg.dropout > 0
  return lambda x, y: step(x, y).item(), tokens  # (batches as arrays, copied into the replay's inputs)


TORCH_MODES = ("float32", "tf32", "bf16", "bf16+compile")


def torch_step(model_name: str, cfg: gpt.Config, device: str, mode: str = "float32") -> tuple[Callable[[np.ndarray, np.ndarray], float], int]:
  """The same step on PyTorch, in one of `TORCH_MODES`: TF32 matmuls allowed, bf16 autocast, and that under torch.compile."""
  if model_name == "makemore":
    model: torch.nn.Module = TorchMLP(MAKEMORE["vocab"], MAKEMORE["block_size"], MAKEMORE["n_embd"], MAKEMORE["n_hidden"]).to(device)
    opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=MAKEMORE["lr"])
    tokens = MAKEMORE["batch"]
  elif model_name == "lstm":
    model = TorchLSTM(LSTM["vocab"], LSTM["n_embd"], LSTM["n_hidden"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LSTM["lr"], weight_decay=0.0)
    tokens = LSTM["batch"] * LSTM["length"]
  else:
    model = TorchGPT(cfg, 65).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)
    tokens = cfg.batch * cfg.block_size
  model.train()
  forward = torch.compile(model) if mode.endswith("+compile") else model
  torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
  autocast = mode.startswith("bf16")

  def step(x: np.ndarray, y: np.ndarray) -> float:
    xt, yt = torch.from_numpy(x).long().to(device), torch.from_numpy(y).long().to(device)
    with torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16, enabled=autocast):
      logits = forward(xt)
      loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), yt.reshape(-1), ignore_index=rnn.PAD)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()
  return step, tokens


def time_steps(step: Callable[[np.ndarray, np.ndarray], float], batches: list, warmup: int) -> float:
  """Seconds per step over the batches after the first `warmup` (every step reads its loss, as the examples do)."""
  for x, y in batches[:warmup]: step(x, y)
  start = time.perf_counter()
  for x, y in batches[warmup:]: step(x, y)
  return (time.perf_counter() - start) / (len(batches) - warmup)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=["makemore", "gpt", "lstm"], choices=["makemore", "gpt", "lstm"])
  parser.add_argument("--devices", nargs="+", default=None, help="default: CPU, and CUDA when DEV=CUDA")
  parser.add_argument("--gpt-config", choices=sorted(gpt.CONFIGS), default=None, help="default: small on CPU, large on CUDA")
  parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 200 for makemore, 20 for gpt)")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--precisions", action="store_true", help="also time the GPT in every precision on each CUDA device (table 2)")
  args = parser.parse_args()
  devices = args.devices or (["CPU", "CUDA"] if os.environ.get("DEV", "CPU").upper().startswith("CUDA") else ["CPU"])

  rows = []
  for device in devices:
    torch_device = "cuda" if device.upper().startswith("CUDA") else "cpu"
    for model_name in args.models:
      cfg = gpt.CONFIGS[args.gpt_config or ("large" if torch_device == "cuda" else "small")]
      steps = args.steps or (200 if model_name == "makemore" else 20)
      shapes = {"makemore": (MAKEMORE["batch"], MAKEMORE["block_size"]), "lstm": (LSTM["batch"], LSTM["length"])}
      shape = shapes.get(model_name, (cfg.batch, cfg.block_size))
      targets = shape[:1] if model_name == "makemore" else shape
      batches = _batches(steps + args.warmup, shape, {"makemore": MAKEMORE["vocab"], "lstm": LSTM["vocab"]}.get(model_name, 65), targets)
      name = model_name if model_name != "gpt" else f"gpt ({'large' if cfg is gpt.CONFIGS['large'] else 'small'})"
      # PyTorch at its best: with one thread and with all of them (on a busy 2-core machine its OpenMP threads
      # can make two threads ten times slower than one)
      torch_times = {}
      for n in sorted({1, os.cpu_count() or 1}) if torch_device == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(n)
        step, tokens = torch_step(model_name, cfg, torch_device)
        torch_times[n] = time_steps(step, batches, args.warmup)
      threads = min(torch_times, key=torch_times.get)
      step, tokens = picograd_step(model_name, cfg, device)
      ours = time_steps(step, batches, args.warmup)
      Tensor.training = False
      rows.append((name, device, tokens, ours, torch_times[threads], threads))
      print(f"  measured {name} on {device}", file=sys.stderr)

  print(f"\n{'model':<12} {'device':<6} {'picograd ms/step':>17} {'pytorch ms/step':>16} {'torch threads':>14} "
        f"{'picograd tok/s':>15} {'pytorch tok/s':>14} {'pytorch/picograd':>17}")
  for name, device, tokens, ours, theirs, threads in rows:
    print(f"{name:<12} {device:<6} {ours * 1e3:17.2f} {theirs * 1e3:16.2f} {threads:>14} {tokens / ours:15,.0f} {tokens / theirs:14,.0f} "
          f"{theirs / ours:17.2f}")
  print(f"\ntorch {torch.__version__}; picograd CPU kernels on up to {os.cpu_count()} cores")
  if args.precisions: precisions(args, [d for d in devices if d.upper().startswith("CUDA")])


def precisions(args: argparse.Namespace, devices: list[str]) -> None:
  """Table 2: the GPT's step on each GPU in every precision, picograd's and PyTorch's, ms per step."""
  for device in devices:
    cfg = gpt.CONFIGS[args.gpt_config or "large"]
    steps = args.steps or 20
    batches = _batches(steps + args.warmup, (cfg.batch, cfg.block_size), 65, (cfg.batch, cfg.block_size))
    times = {}
    for mode in TORCH_MODES:
      step, _ = torch_step("gpt", cfg, "cuda", mode)
      times[f"pytorch {mode}"] = time_steps(step, batches, args.warmup + (5 if mode.endswith("+compile") else 0))
    torch.backends.cuda.matmul.allow_tf32 = False
    for mode in ("float32", "tf32", "bfloat16"):
      # (tf32: float32 with TF32 matmuls, set_float32_matmul_precision("high"), as PyTorch's allow_tf32)
      picograd.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
      try:
        step, _ = picograd_step("gpt", cfg, device, "float32" if mode == "tf32" else mode)
        times[f"picograd {mode}"] = time_steps(step, batches, args.warmup)
      finally:
        picograd.set_float32_matmul_precision("highest")
      Tensor.training = False
    best = times["pytorch bf16+compile"]
    print(f"\nGPT ({'large' if cfg is gpt.CONFIGS['large'] else 'small'}) on {device}, ms per training step (the same batches; "
          "the loss read every step):\n")
    print("| run | ms/step | vs pytorch bf16+compile |\n|---|---|---|")
    for name, t in times.items(): print(f"| {name} | {t * 1e3:.2f} | {best / t:.2f} |")


if __name__ == "__main__":
  main()
