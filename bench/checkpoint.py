"""Gradient checkpointing benchmark: one jitted training step of examples/gpt.py with and without a checkpoint per block.

For each mode it builds the model (same seed), compiles and captures the step, then replays it
--runs times on random tokens, and reports the peak device memory of a replayed step (bytes in
live buffers, as `torch.cuda.max_memory_allocated`; parameters, gradients and optimizer state
included) and the median wall time of a step (ending in `loss.item()`, so the device is done).
Both modes run in this one process, one after the other; the ratios are the numbers to read.

  python bench/checkpoint.py                          # the small config on the CPU
  python bench/checkpoint.py --n-layer 6                # the small config's widths, the large config's depth
  python bench/checkpoint.py --device CUDA --config large
"""
from __future__ import annotations
import argparse, gc, os, sys, time
from dataclasses import replace
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import picograd  # noqa: E402
from picograd import Tensor, nn, optim  # noqa: E402
from picograd.runtime.device import canonicalize  # noqa: E402
import gpt  # noqa: E402
from common import jit_train_step  # noqa: E402


def measure(cfg: gpt.Config, device: str, checkpoint: bool, runs: int) -> tuple[int, int, float, float]:
  """(bytes live before a step, peak bytes during it, median step seconds, loss of the first step) of the jitted GPT step."""
  Tensor.manual_seed(0)
  model = gpt.GPT(cfg, 65, device=device, checkpoint=checkpoint)
  opt = optim.AdamW(nn.get_parameters(model), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)

  step = jit_train_step(lambda x, y: gpt.loss_fn(model, x, y), opt)

  rng = np.random.default_rng(0)
  Tensor.training = cfg.dropout > 0
  first, peaks, times, before = 0.0, [], [], 0
  for i in range(2 + runs):  # compile, capture, then replays
    x, y = (Tensor(rng.integers(0, 65, (cfg.batch, cfg.block_size)).astype(np.int32), device=device) for _ in range(2))
    x.realize(y)
    before = picograd.device_memory(device)["current"]
    picograd.reset_peak_memory(device)
    st = time.perf_counter()
    loss = step(x, y).item()
    if i == 0: first = loss
    if i >= 2: times.append(time.perf_counter() - st); peaks.append(picograd.device_memory(device)["peak"])
  Tensor.training = False
  return before, max(peaks), float(np.median(times)), first


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--device", default=None, help="device (default: $DEV, else CPU)")
  ap.add_argument("--config", default=None, help="examples/gpt.py config (default: large on CUDA, small elsewhere)")
  ap.add_argument("--runs", type=int, default=5, help="replayed steps timed per mode")
  ap.add_argument("--n-layer", type=int, default=None, help="override the config's number of blocks")
  args = ap.parse_args()
  device = canonicalize(args.device)
  name = args.config or ("large" if device.startswith("CUDA") else "small")
  cfg = gpt.CONFIGS[name] if args.n_layer is None else replace(gpt.CONFIGS[name], n_layer=args.n_layer)
  rows = []
  for checkpoint in (False, True):
    rows.append(measure(cfg, device, checkpoint, args.runs))
    gc.collect()
  print(f"GPT {name} on {device}: batch {cfg.batch}, context {cfg.block_size}, {cfg.n_layer} layers; median of {args.runs} replayed steps")
  print(f"{'mode':<12} {'live before MiB':>15} {'peak MiB':>9} {'peak - before':>14} {'step ms':>8} {'first loss':>11}")
  for label, (before, peak, secs, loss) in zip(("none", "per block"), rows):
    print(f"{label:<12} {before / 2**20:15.1f} {peak / 2**20:9.1f} {(peak - before) / 2**20:14.1f} {secs * 1e3:8.1f} {loss:11.6f}")
  (b0, p0, t0, l0), (b1, p1, t1, l1) = rows
  print(f"checkpointing: peak {100 * (1 - p1 / p0):.1f}% lower (target >= 40%), activations {100 * (1 - (p1 - b1) / (p0 - b0)):.1f}% lower, "
        f"step time {100 * (t1 / t0 - 1):+.1f}% (target <= +35%); first losses differ by {abs(l1 - l0) / abs(l0):.1e} (relative: kernels fused "
        "differently round differently)")


if __name__ == "__main__":
  main()
