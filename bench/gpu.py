"""GPU benchmark: picograd on CUDA beside PyTorch eager and torch.compile in one process, as a markdown table.

Rows: fused elementwise `a*b+c` and `(a*b+c).exp()*0.5+a` on 64M float32 (GB/s over the bytes of
the inputs and the output), row sums and the full sum of 8192x8192, row softmax and layer_norm of
8192x8192 (one kernel each, a block per row), float32 and float16 matmuls at 1024 and 4096
(TFLOP/s), a ResNet-stage conv2d (3x3, 64 channels, 56x56, batch 8: forward, and forward + both
gradients, TFLOP/s) and max_pool2d 2x2 of its input, and the first call of a new kernel
(scheduling, NVRTC, loading) beside a cached one. Every GPU time is the median of --runs runs
measured with CUDA events after --warmup runs; picograd's is the sum of its kernels' times for
one realize (the same schedule, run again on the same buffers). "vs eager" is PyTorch eager's
time divided by picograd's: above 1 means picograd is faster.

  python bench/gpu.py                 # print the table
  python bench/gpu.py --no-compile    # skip torch.compile (it takes a while to compile)
  python bench/gpu.py --save          # and append it, with date, device and commit, to bench/RESULTS.md
  python bench/gpu.py --gpt-step      # instead: where one training step of the large GPT spends its GPU time

--gpt-step captures the jitted training step of examples/gpt.py's large config (random tokens), times every
kernel of one replay with CUDA events, and prints the kernels grouped by name (the same compiled kernel in
every layer is one row), the most expensive first, with their plan (codegen/cuda/) and launch grid.
"""
from __future__ import annotations
import argparse, datetime, os, subprocess, sys, time
from typing import Callable
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import picograd  # noqa: E402
from picograd import Tensor, Context, schedule  # noqa: E402
from picograd.runtime.device import get_device  # noqa: E402
from picograd.engine.realize import launch_handles  # noqa: E402
from picograd.engine import realize as engine_realize, schedule as engine_schedule  # noqa: E402
import torch  # noqa: E402


def pg_time(out: Callable[[], Tensor | tuple[Tensor, ...]], runs: int, warmup: int) -> float:
  """Median GPU time (s) of the kernels realizing `out()` (a Tensor or a tuple of them), each timed with CUDA events."""
  outs = out()
  steps = schedule(*(outs if isinstance(outs, tuple) else (outs,)))
  def once() -> float:
    return sum(s.kernel.program([b.handle for b in s.buffers], s.kernel.dims, wait=True) for s in steps if s.kernel is not None)
  for _ in range(warmup): once()
  return float(np.median([once() for _ in range(runs)]))


def torch_time(fn: Callable[[], object], runs: int, warmup: int) -> float:
  for _ in range(warmup): fn()
  torch.cuda.synchronize()
  times = []
  for _ in range(runs):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); fn(); end.record()
    end.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
  return float(np.median(times))


class Row:
  def __init__(self, name: str, pg: float, eager: float, compiled: float | None, work: float, unit: str, target: str, ok: bool):
    self.name, self.pg, self.eager, self.compiled, self.work, self.unit, self.target, self.ok = name, pg, eager, compiled, work, unit, target, ok

  def cells(self) -> list[str]:
    def rate(t: float | None) -> str:
      if t is None: return "n/a"
      return f"{self.work / t / 1e9:,.0f}" if self.unit == "GB/s" else f"{self.work / t / 1e12:.1f}"
    return [self.name, f"{self.pg * 1e3:.3f}", f"{rate(self.pg)} {self.unit}", f"{rate(self.eager)}", rate(self.compiled),
            f"{self.eager / self.pg:.2f}", self.target, "yes" if self.ok else "**no**"]


HEADER = ["workload", "picograd ms", "picograd", "torch eager", "torch.compile", "vs eager", "target", "met"]


def table(rows: list[Row], extra: list[str]) -> str:
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
  return "\n".join(lines + [""] + extra)


def run(args) -> tuple[list[Row], list[str]]:
  rng = np.random.default_rng(0)
  rows: list[Row] = []
  compile_ = (lambda f: torch.compile(f)) if args.compile else None

  def add(name, pg_fn, torch_fn, work, unit, target, check):
    # PyTorch is timed before and after picograd and keeps its faster median: a first timing of a new shape came out 1.5x
    # slower than the same call's second (SDPA's backward at T = 256, H200: 0.46 against 0.30 ms), which flattered picograd
    eager = torch_time(torch_fn, args.runs, args.warmup)
    pg = pg_time(pg_fn, args.runs, args.warmup)
    eager = min(eager, torch_time(torch_fn, args.runs, args.warmup))
    compiled = None
    if compile_ is not None:
      try:
        compiled = torch_time(compile_(torch_fn), args.runs, args.warmup)
      except Exception as e:  # no triton, or inductor cannot compile here: the column reads n/a
        print(f"torch.compile failed for {name}: {type(e).__name__}: {e}", file=sys.stderr)
    rows.append(Row(name, pg, eager, compiled, work, unit, target, check(pg, eager)))
    print("| " + " | ".join(rows[-1].cells()) + " |", flush=True)

  n = 64 * 2**20
  a, b, c = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
  A, B, C = (Tensor(x, device="CUDA").realize() for x in (a, b, c))
  ta, tb, tc = (torch.from_numpy(x).cuda() for x in (a, b, c))
  nb = 4 * n * 4
  add("a*b+c, 64M f32", lambda: A * B + C, lambda: ta * tb + tc, nb, "GB/s", ">= 2500 GB/s", lambda pg, _: nb / pg / 1e9 >= 2500)
  add("(a*b+c).exp()*0.5+a", lambda: (A * B + C).exp() * 0.5 + A, lambda: (ta * tb + tc).exp() * 0.5 + ta, nb, "GB/s", ">= 2500 GB/s",
      lambda pg, _: nb / pg / 1e9 >= 2500)
  A = B = C = ta = tb = tc = None  # frees the device memory: add() has run the lambdas above
  m = rng.standard_normal((8192, 8192), dtype=np.float32)
  M, tm = Tensor(m, device="CUDA").realize(), torch.from_numpy(m).cuda()
  mb = m.nbytes
  add("row sums 8192^2", lambda: M.sum(1), lambda: tm.sum(1), mb, "GB/s", ">= 2200 GB/s", lambda pg, _: mb / pg / 1e9 >= 2200)
  add("full sum 8192^2", lambda: M.sum(), lambda: tm.sum(), mb, "GB/s", ">= 2200 GB/s", lambda pg, _: mb / pg / 1e9 >= 2200)
  add("softmax rows 8192^2", lambda: M.softmax(-1), lambda: tm.softmax(-1), 2 * mb, "GB/s", ">= 1500 GB/s",
      lambda pg, _: 2 * mb / pg / 1e9 >= 1500)
  add("layer_norm rows 8192^2", lambda: M.layer_norm(8192), lambda: torch.nn.functional.layer_norm(tm, (8192,)), 2 * mb, "GB/s",
      "-", lambda pg, _: True)
  M = tm = None  # frees the device memory: add() has run the lambdas above
  for dt, tdt, need in (("float32", torch.float32, 0.5), ("float16", torch.float16, 0.3)):
    for size in (1024, 4096):
      x, y = (rng.standard_normal((size, size), dtype=np.float32).astype(dt) for _ in range(2))
      X, Y = Tensor(x, device="CUDA").realize(), Tensor(y, device="CUDA").realize()
      tx, ty = torch.from_numpy(x).cuda().to(tdt), torch.from_numpy(y).cuda().to(tdt)
      target = f">= {need}x torch" if size == 4096 else "-"
      add(f"matmul {dt} {size}", lambda X=X, Y=Y: X @ Y, lambda tx=tx, ty=ty: tx @ ty, 2 * size**3, "TFLOP/s", target,
          lambda pg, eager, need=need, size=size: size != 4096 or eager / pg >= need)
      if dt == "float32" and size == 4096:  # the same product with TF32 allowed on both sides
        picograd.set_float32_matmul_precision("high")
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
          add("matmul float32 4096, TF32", lambda X=X, Y=Y: X @ Y, lambda tx=tx, ty=ty: tx @ ty, 2 * size**3, "TFLOP/s", "-", lambda pg, eager: True)
        finally:
          picograd.set_float32_matmul_precision("highest")
          torch.backends.cuda.matmul.allow_tf32 = False
  # causal attention in bfloat16 at the GPT's shape (B=64, H=6, D=64) and at T=1024, against PyTorch's SDPA (flash)
  for T in (256, 1024):
    qkv = [rng.standard_normal((64, 6, T, 64), dtype=np.float32) for _ in range(4)]
    Q, K, V, G = (Tensor(v, device="CUDA").cast(picograd.dtypes.bfloat16).realize() for v in qkv)
    for t in (Q, K, V): t.requires_grad = True
    tq, tk, tv = (torch.from_numpy(v).cuda().to(torch.bfloat16).requires_grad_() for v in qkv[:3])
    tg = torch.from_numpy(qkv[3]).cuda().to(torch.bfloat16)
    aflops = 2 * 64 * 6 * T * T * 64  # causal: half of the 4*B*H*T*T*D of the two products
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
      add(f"attention causal bf16 T={T} fwd", lambda Q=Q, K=K, V=V: Q.scaled_dot_product_attention(K, V, is_causal=True),
          lambda tq=tq, tk=tk, tv=tv: sdpa(tq, tk, tv, is_causal=True), aflops, "TFLOP/s", ">= 1.0x torch", lambda pg, eager: eager / pg >= 1.0)
    def pg_attn(Q=Q, K=K, V=V, G=G) -> tuple[Tensor, ...]:
      out = Q.scaled_dot_product_attention(K, V, is_causal=True)
      return (out, *out.gradient(Q, K, V, gradient=G))
    def torch_attn(tq=tq, tk=tk, tv=tv, tg=tg) -> None:
      tq.grad = tk.grad = tv.grad = None
      sdpa(tq, tk, tv, is_causal=True).backward(tg)
    add(f"attention causal bf16 T={T} fwd+bwd", pg_attn, torch_attn, 3.5 * aflops, "TFLOP/s", ">= 1.0x torch", lambda pg, eager: eager / pg >= 1.0)
    # the same with the scores stored (no recomputing rule on CUDA: engine/schedule.py TENSOR_CORE_RECOMPUTE_DEVICES)
    recomputing = set(engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES)
    engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.clear()
    engine_realize._templates.clear()
    try:
      add(f"attention causal bf16 T={T} fwd+bwd, scores stored", pg_attn, torch_attn, 3.5 * aflops, "TFLOP/s", "-", lambda pg, eager: True)
    finally:
      engine_schedule.TENSOR_CORE_RECOMPUTE_DEVICES.update(recomputing)
      engine_realize._templates.clear()
  Q = K = V = G = tq = tk = tv = tg = None
  # a ResNet stage: conv2d 3x3, 64 -> 64 channels, 56x56, batch 8 (padding 1), forward and forward + both gradients; max_pool2d 2x2
  xs, gs = rng.standard_normal((8, 64, 56, 56), dtype=np.float32), rng.standard_normal((8, 64, 56, 56), dtype=np.float32)
  ws = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
  X, W = (Tensor(v, device="CUDA", requires_grad=True).realize() for v in (xs, ws))
  G = Tensor(gs, device="CUDA").realize()
  tx, tw = (torch.from_numpy(v).cuda().requires_grad_() for v in (xs, ws))
  tg = torch.from_numpy(gs).cuda()
  cflops = 2 * 8 * 64 * 56 * 56 * 64 * 9
  def pg_fwd_bwd() -> tuple[Tensor, ...]:
    out = X.conv2d(W, padding=1)
    return (out, *out.gradient(X, W, gradient=G))
  def torch_fwd_bwd() -> None:
    tx.grad = tw.grad = None
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(tg)
  with torch.no_grad():
    add("conv2d 3x3 64ch 56^2 b8 fwd", lambda: X.conv2d(W, padding=1), lambda: torch.nn.functional.conv2d(tx, tw, padding=1), cflops,
        "TFLOP/s", "-", lambda pg, _: True)
    add("max_pool2d 2x2 8x64x56^2", lambda: X.max_pool2d(2), lambda: torch.nn.functional.max_pool2d(tx, 2), xs.nbytes * 5 // 4, "GB/s",
        "-", lambda pg, _: True)
  add("conv2d 3x3 64ch 56^2 b8 fwd+bwd", pg_fwd_bwd, torch_fwd_bwd, 3 * cflops, "TFLOP/s", "-", lambda pg, _: True)
  extra = first_call()
  return rows, extra


def first_call() -> list[str]:
  """Wall time of realizing a kernel never seen before (schedule, NVRTC, load; no disk cache) and of the same graph again."""
  x = Tensor(np.ones((1000, 1000), np.float32), device="CUDA").realize()
  dev = get_device("CUDA")
  stamp = float(time.time() % 1000)  # a constant no earlier run has compiled
  with Context(CACHE=0):
    st = time.perf_counter()
    ((x * stamp + 1.5).sqrt() - 0.25).realize(); dev.synchronize()
    first = time.perf_counter() - st
  cached = []
  for _ in range(5):
    st = time.perf_counter()
    ((x * stamp + 1.5).sqrt() - 0.25).realize(); dev.synchronize()
    cached.append(time.perf_counter() - st)
  ok1, ok2 = first <= 0.150, float(np.median(cached)) <= 0.010
  return [f"first call of a new kernel (NVRTC compile + load): {first * 1e3:.1f} ms (target <= 150 ms: {'yes' if ok1 else 'no'}); "
          f"cached: {np.median(cached) * 1e3:.2f} ms (target <= 10 ms: {'yes' if ok2 else 'no'})"]


def gpt_step_profile(config: str, top: int, device: str = "CUDA", dtype: str = "float32") -> None:
  """Per-kernel GPU time of one replayed GPT training step, summed by kernel, the largest `top` printed."""
  from collections import defaultdict
  from picograd import nn, optim
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
  import gpt  # noqa: E402
  from common import jit_train_step  # noqa: E402
  cfg = gpt.CONFIGS[config]
  Tensor.manual_seed(0)
  model = gpt.GPT(cfg, 65, device=device)
  opt = optim.AdamW(nn.get_parameters(model), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)

  step = jit_train_step(lambda x, y: gpt.loss_fn(model, x, y, dtype), opt)

  rng = np.random.default_rng(0)
  Tensor.training = cfg.dropout > 0
  dev = get_device(device)
  walls = []
  for i in range(5):  # compile, capture, then replays
    x, y = (Tensor(rng.integers(0, 65, (cfg.batch, cfg.block_size)).astype(np.int32), device=device) for _ in range(2))
    st = time.perf_counter()
    step(x, y).item()
    walls.append(time.perf_counter() - st)
  # CPU time per step: the Python work and launches of a replay, without waiting for the GPU (it queues behind the last step)
  cpu = []
  for _ in range(5):
    dev.synchronize()
    st = time.perf_counter()
    step(x, y)
    cpu.append(time.perf_counter() - st)
  dev.synchronize()
  with Context(GRAPH=0):  # the same capture replayed kernel by kernel
    stepwise = []
    for _ in range(3):
      st = time.perf_counter()
      step(x, y).item()
      stepwise.append(time.perf_counter() - st)
  Tensor.training = False
  steps = [s for s in step.capture.steps if s.kernel is not None]
  per: dict[str, list] = defaultdict(lambda: [0, 0.0, None])
  for s in steps:
    k = s.kernel
    t = k.program(launch_handles(k, s.buffers), k.dims, wait=True)
    row = per[k.name]
    row[0] += 1; row[1] += t; row[2] = k
  dev.synchronize()
  total = sum(r[1] for r in per.values())
  print(f"GPT {config} ({dtype} matmuls): {len(steps)} kernel launches, {len(per)} distinct kernels; sum of kernel times {total * 1e3:.2f} ms; "
        f"wall per replayed step {min(walls[2:]) * 1e3:.2f} ms; CPU time per replay {np.median(cpu) * 1e3:.2f} ms "
        f"({'one CUDA graph' if step.replay is not None and step.replay.native else 'kernel by kernel'}); "
        f"kernel by kernel {min(stepwise) * 1e3:.2f} ms")
  print(f"{'kernel':<42} {'plan':<7} {'n':>3} {'total ms':>9} {'%':>5} {'us each':>9} {'GB/s':>7} {'GFLOP/s':>8}  grid x block")
  for name, (n, t, k) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top]:
    each = t / n
    print(f"{name:<42} {k.program.meta.get('plan', '?'):<7} {n:>3} {t * 1e3:9.3f} {100 * t / total:5.1f} {each * 1e6:9.1f} "
          f"{k.bytes / each / 1e9:7.0f} {k.flops / each / 1e9:8.0f}  {k.dims.global_size} x {k.dims.local_size}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--runs", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile column")
  ap.add_argument("--save", action="store_true", help="append the table to bench/RESULTS.md")
  ap.add_argument("--gpt-step", action="store_true", help="profile one training step of the GPT example instead")
  ap.add_argument("--gpt-config", default="large", help="the GPT config --gpt-step trains (examples/gpt.py CONFIGS)")
  ap.add_argument("--top", type=int, default=25, help="kernels --gpt-step lists")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="--gpt-step: matmul precision (autocast)")
  args = ap.parse_args()
  if args.gpt_step: return gpt_step_profile(args.gpt_config, args.top, dtype=args.dtype)
  dev = get_device("CUDA")
  print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER), flush=True)
  rows, extra = run(args)
  text = table(rows, extra)
  print("\n".join(extra))
  if args.save:
    try:
      commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
      commit = "unknown"
    head = (f"\n## GPU: {datetime.date.today()}, {dev.extra['name']} ({dev.extra['arch']}, driver {dev.extra['driver_version']}), "
            f"commit {commit} plus working tree, torch {torch.__version__}\n\n")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "a") as f: f.write(head + text + "\n")


if __name__ == "__main__":
  main()
