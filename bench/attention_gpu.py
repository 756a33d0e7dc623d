"""GPU benchmark of attention's training step: causal SDPA of bfloat16 tensors (B=64, H=6, D=64; T=256 and 1024), forward and
backward, with the scores recomputed (codegen/cuda/flash_bwd.py: "CUDA" in engine/schedule.py
TENSOR_CORE_RECOMPUTE_DEVICES, the default) and stored (CUDA taken out of it), beside PyTorch's SDPA (flash) in one
process. Per kernel: its plan and median GPU time (CUDA events, after warm-up); the gradients are checked against PyTorch's on the same data.

  python bench/attention_gpu.py [--runs 20] [--warmup 3] [--T 256 1024]
"""
from __future__ import annotations
import argparse, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import picograd  # noqa: E402
from picograd import Tensor  # noqa: E402
from picograd.engine import realize as engine_realize, schedule as engine_schedule  # noqa: E402
import torch  # noqa: E402
from bench.gpu import torch_time  # noqa: E402


def step_kernels(T: int, arrays: list[np.ndarray], runs: int, warmup: int) -> tuple[list[tuple[str, str, float]], list[np.ndarray]]:
  """[(kernel name, plan, median seconds)] of one forward + backward under bf16 autocast (the GPT's attention) and its
  gradients (dQ, dK, dV) as float32 arrays."""
  Q, K, V = (Tensor(a, device="CUDA", requires_grad=True) for a in arrays[:3])
  G = Tensor(arrays[3], device="CUDA").cast(picograd.dtypes.bfloat16).realize()
  with picograd.autocast(picograd.dtypes.bfloat16):
    out = Q.scaled_dot_product_attention(K, V, is_causal=True)
  grads = out.gradient(Q, K, V, gradient=G)
  steps = picograd.schedule(out, *grads)
  out.realize(*grads)  # (allocates every buffer the steps use)
  rows = []
  for s in steps:
    if s.kernel is None: continue
    def once(s=s) -> float: return s.kernel.program(engine_realize.launch_handles(s.kernel, s.buffers), s.kernel.dims, wait=True)
    for _ in range(warmup): once()
    rows.append((s.kernel.name, s.kernel.opts[0] if s.kernel.opts else "", float(np.median([once() for _ in range(runs)]))))
  return rows, [g.float().numpy() for g in grads]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--runs", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--T", type=int, nargs="+", default=[256, 1024])
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  for T in args.T:
    arrays = [rng.standard_normal((64, 6, T, 64), dtype=np.float32) for _ in range(4)]
    tq, tk, tv = (torch.from_numpy(a).cuda().to(torch.bfloat16).requires_grad_() for a in arrays[:3])
    tg = torch.from_numpy(arrays[3]).cuda().to(torch.bfloat16)
    def torch_step() -> None:
      tq.grad = tk.grad = tv.grad = None
      torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tg)
    sdpa = torch_time(torch_step, args.runs, args.warmup)
    want = [t.grad.float().cpu().numpy() for t in (tq, tk, tv)]  # type: ignore[union-attr]
    recomputing = set(engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES)
    for mode in ("recomputed", "stored"):
      if mode == "stored": engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.clear()
      else: engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.add("CUDA")
      engine_realize._templates.clear()
      try:  # (recomputing unmasked scores is gated off by default by RECOMPUTE_MIN; the GPT's masked ones by RECOMPUTE_MASKED_MIN)
        with picograd.Context(RECOMPUTE_MIN=0 if mode == "recomputed" else 1 << 62):
          rows, got = step_kernels(T, arrays, args.runs, args.warmup)
      finally:
        engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.clear()
        engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.update(recomputing)
        engine_realize._templates.clear()
      total = sum(t for _, _, t in rows)
      errors = ", ".join(f"{n} {np.abs(a - b).max() / np.abs(b).max():.1e}" for n, a, b in zip(("dq", "dk", "dv"), got, want))
      print(f"\nT={T} scores {mode}: {total * 1e3:.3f} ms, torch SDPA fwd+bwd {sdpa * 1e3:.3f} ms: {sdpa / total:.2f}x "
            f"(max error / max |grad| vs torch: {errors})")
      for name, plan, t in rows: print(f"  {t * 1e3:8.3f} ms  {plan:24s} {name}")


if __name__ == "__main__":
  main()
