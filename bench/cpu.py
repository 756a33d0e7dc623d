"""CPU benchmark: picograd beside numpy (and PyTorch, when installed) in one process, as a markdown table.

Rows: a fused elementwise a*b+c, row sums (4096 and 16 wide), column sums, a full sum, row softmax and layer_norm, float32 matmuls, the first call of a
new fused kernel in a fresh process (compiling, and with a warm disk cache), the time from
`python3 examples/makemore.py` to its first training step (cold, and with a warm disk cache), one training
step of the makemore MLP, eager and under `@picograd.jit`, a ResNet-stage conv2d (forward,
forward + backward) and max_pool2d, what provenance (source lines per node) adds to building a
GPT forward graph, and attention (scores stored, and as one online-softmax pass) beside PyTorch's SDPA.
Each timing is the median of --runs runs after --warmup runs (the reduce group times picograd and PyTorch in
alternating blocks, so their ratio survives a shared machine's slow phases, and takes each block's mean time per call:
one call's Python runs while the previous call's kernel does); inputs
are realized before timing and outputs with `.realize()`, and a picograd time ends when its kernels are done (CPU
launches are asynchronous: the device is synchronized). "ratio" is numpy's time (or
PyTorch's, for the MLP, conv and attention rows) divided by picograd's: above 1 means picograd is faster; "vs torch"
is PyTorch's time divided by picograd's.

  python bench/cpu.py              # print the table
  python bench/cpu.py --only conv  # only the groups whose name contains "conv" (also: elementwise, reduce, matmul,
                                   # first-call, start-up: makemore.py's time to its first training step, mlp,
                                   # provenance, attention)
  python bench/cpu.py --save       # and append it, with date, device and commit, to bench/RESULTS.md
"""
from __future__ import annotations
import argparse, datetime, os, platform, subprocess, sys, tempfile, time
from typing import Callable
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import picograd  # noqa: E402
from picograd import Tensor, dtypes  # noqa: E402
from picograd.runtime.device import get_device  # noqa: E402

try:
  import torch
except ImportError:  # PyTorch is optional: its column reads n/a
  torch = None


def median_time(fn: Callable[[], object], runs: int, warmup: int) -> float:
  """Median wall time of `fn()` in seconds.

  It first sleeps a moment: OpenBLAS (numpy's matmul) and OpenMP (PyTorch) keep their worker
  threads spinning for a while after a call, and on a small machine those spinning threads
  would slow down whatever is timed next.
  """
  time.sleep(0.2)
  for _ in range(warmup): fn()
  times = [per_call(fn, 1) for _ in range(runs)]
  return sorted(times)[len(times) // 2]


def per_call(fn: Callable[[], object], calls: int) -> float:
  """Mean wall time per call of `calls` calls of `fn` in a row, up to when the CPU has run every kernel they launched (a
  picograd launch may return while its kernel runs; the next launch waits for it)."""
  cpu = get_device("CPU")
  cpu.synchronize()
  st = time.perf_counter()
  for _ in range(calls): fn()
  cpu.synchronize()
  return (time.perf_counter() - st) / calls


def paired_times(fns: list[Callable[[], object] | None], runs: int, warmup: int, rounds: int = 4) -> list[float | None]:
  """Median time per call of each of `fns` (None stays None), timed in `rounds` alternating blocks, each after the pause
  `median_time` takes: the slow phases of a shared machine then fall on all of them alike, so their ratio holds. A block
  runs at least 3 groups of 4 calls (`per_call`: the mean of each), after 2 untimed calls (after the pause, PyTorch's
  OpenMP threads and picograd's workers wake from sleep during the first call or two)."""
  groups = max(3, -(-runs // rounds))
  times: list[list[float]] = [[] for _ in fns]
  for r in range(rounds):
    for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
      if (fn := fns[i]) is None: continue
      time.sleep(0.2)
      for _ in range(warmup if r == 0 else 2): fn()
      times[i] += [per_call(fn, 4) for _ in range(groups)]
  return [sorted(t)[len(t) // 2] if t else None for t in times]


class Row:
  """One line of the table: times in seconds (None where a column does not apply) and the work done."""

  def __init__(self, name: str, pg: float | None, np_: float | None, pt: float | None, nbytes: int = 0, flops: int = 0, note: str = ""):
    self.name, self.pg, self.np, self.pt, self.nbytes, self.flops, self.note = name, pg, np_, pt, nbytes, flops, note

  def cells(self) -> list[str]:
    def ms(t: float | None) -> str: return "n/a" if t is None else f"{t * 1e3:.2f}"
    base = self.np if self.np is not None else self.pt
    ratio = f"{base / self.pg:.2f}x" if base is not None and self.pg else "n/a"
    vs_torch = f"{self.pt / self.pg:.2f}x" if self.pt is not None and self.pg else "n/a"
    gbs = f"{self.nbytes / self.pg / 1e9:.1f}" if self.nbytes and self.pg else ""
    gfl = f"{self.flops / self.pg / 1e9:.1f}" if self.flops and self.pg else ""
    return [self.name, self.note or ms(self.pg), ms(self.np), ms(self.pt), ratio, vs_torch, gbs, gfl]


HEADER = ["benchmark", "picograd ms", "numpy ms", "torch ms", "ratio", "vs torch", "picograd GB/s", "picograd GFLOP/s"]


def table(rows: list[Row]) -> str:
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(" --- " for _ in HEADER) + "|"]
  lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
  return "\n".join(lines)


def realized(x: np.ndarray) -> Tensor: return Tensor(x).realize()


def bench_elementwise(runs: int, warmup: int) -> Row:
  n = 1 << 24
  xs = [np.random.rand(n).astype(np.float32) for _ in range(3)]
  a, b, c = (realized(x) for x in xs)
  pg = median_time(lambda: (a * b + c).realize(), runs, warmup)
  npt = median_time(lambda: xs[0] * xs[1] + xs[2], runs, warmup)
  pt = None
  if torch is not None:
    ta, tb, tc = (torch.from_numpy(x) for x in xs)
    pt = median_time(lambda: ta * tb + tc, runs, warmup)
  return Row("a*b+c, 16M float32", pg, npt, pt, nbytes=4 * 4 * n, flops=2 * n)


def bench_rowsum(runs: int, warmup: int) -> Row:
  x = np.random.rand(4096, 4096).astype(np.float32)
  t = realized(x)
  npt = median_time(lambda: x.sum(1), runs, warmup)
  pg, pt = paired_times([lambda: t.sum(1).realize(), (lambda: torch.from_numpy(x).sum(1)) if torch is not None else None], runs, warmup)
  return Row("row sums 4096x4096", pg, npt, pt, nbytes=x.nbytes + 4 * 4096, flops=x.size)


def bench_rowsum_jit(runs: int, warmup: int) -> Row:
  """Row sums through `@picograd.jit`: a replay is one native call, so this is the kernel beside PyTorch's without the
  eager path's Python (which runs from cold caches after the 64 MiB stream: NOTES "Eager overhead")."""
  x = np.random.rand(4096, 4096).astype(np.float32)
  t = realized(x)

  @picograd.jit
  def rowsums(a: Tensor) -> Tensor: return a.sum(1)
  pg, pt = paired_times([lambda: rowsums(t).realize(), (lambda: torch.from_numpy(x).sum(1)) if torch is not None else None], runs, warmup + 2)
  return Row("row sums 4096x4096, @picograd.jit", pg, None, pt, nbytes=x.nbytes + 4 * 4096, flops=x.size)


def bench_rowsum_short(runs: int, warmup: int) -> Row:
  """Row sums of short rows (16 floats, one vector each): the row loop's vectorization is what matters (codegen/llvm.py
  _row_loops)."""
  x = np.random.rand(1 << 20, 16).astype(np.float32)
  t = realized(x)
  npt = median_time(lambda: x.sum(1), runs, warmup)
  pg, pt = paired_times([lambda: t.sum(1).realize(), (lambda: torch.from_numpy(x).sum(1)) if torch is not None else None], runs, warmup)
  return Row("row sums 1Mx16", pg, npt, pt, nbytes=x.nbytes + 4 * x.shape[0], flops=x.size)


def bench_colsum(runs: int, warmup: int) -> Row:
  """Column sums: a reduction that strides through memory, each step reading a run of contiguous columns (codegen/opt.py
  WIDE_VECTORS)."""
  x = np.random.rand(4096, 4096).astype(np.float32)
  t = realized(x)
  npt = median_time(lambda: x.sum(0), runs, warmup)
  pg, pt = paired_times([lambda: t.sum(0).realize(), (lambda: torch.from_numpy(x).sum(0)) if torch is not None else None], runs, warmup)
  return Row("column sums 4096x4096", pg, npt, pt, nbytes=x.nbytes + 4 * 4096, flops=x.size)


def bench_fullsum(runs: int, warmup: int) -> Row:
  x = np.random.rand(4096, 4096).astype(np.float32)
  t = realized(x)
  npt = median_time(lambda: x.sum(), runs, warmup)
  pg, pt = paired_times([lambda: t.sum().realize(), (lambda: torch.from_numpy(x).sum()) if torch is not None else None], runs, warmup)
  return Row("full sum 4096x4096", pg, npt, pt, nbytes=x.nbytes, flops=x.size)


def _np_softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def bench_softmax(runs: int, warmup: int) -> Row:
  x = np.random.randn(4096, 4096).astype(np.float32)
  t = realized(x)
  npt = median_time(lambda: _np_softmax(x), runs, warmup)
  pg, pt = paired_times([lambda: t.softmax(1).realize(), (lambda: torch.softmax(torch.from_numpy(x), 1)) if torch is not None else None],
                        runs, warmup)
  # the least traffic possible: read x once, write the result once
  return Row("softmax rows 4096x4096", pg, npt, pt, nbytes=2 * x.nbytes, flops=5 * x.size)


def bench_layer_norm(runs: int, warmup: int) -> Row:
  x, w, b = np.random.randn(4096, 4096).astype(np.float32), np.random.rand(4096).astype(np.float32), np.random.rand(4096).astype(np.float32)
  t, tw, tb = realized(x), realized(w), realized(b)
  pt_fn = None
  if torch is not None:
    px, pw, pb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    def pt_fn() -> object: return torch.nn.functional.layer_norm(px, (4096,), pw, pb)
  pg, pt = paired_times([lambda: t.layer_norm(4096, tw, tb).realize(), pt_fn], runs, warmup)
  return Row("layer_norm rows 4096x4096", pg, None, pt, nbytes=2 * x.nbytes, flops=8 * x.size)


def bench_matmul(n: int, runs: int, warmup: int, transposed: bool = False) -> Row:
  """a @ b of n x n float32 matrices; `transposed`: x @ W.T (a linear layer's weight, stored out x in)."""
  x, y = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
  a, b = realized(x), realized(y)
  pg = median_time(lambda: (a @ (b.T if transposed else b)).realize(), runs, warmup)
  npt = median_time(lambda: x @ (y.T if transposed else y), runs, warmup)
  pt = median_time(lambda: torch.from_numpy(x) @ (torch.from_numpy(y).T if transposed else torch.from_numpy(y)), runs, warmup) if torch is not None else None
  return Row(f"matmul {n} float32{' x @ W.T' if transposed else ''}", pg, npt, pt, nbytes=3 * 4 * n * n, flops=2 * n ** 3)


# A fresh process: import, realize inputs (their kernels are not the one measured), then time the
# first realize of a fused kernel that no earlier run has seen, from graph to result.
_FIRST_CALL = """
import time, numpy as np
from picograd import Tensor
a = Tensor(np.arange(1000, dtype=np.float32)).realize(); b = Tensor(np.ones(1000, np.float32)).realize()
st = time.perf_counter()
((a * 1.5 + b).sqrt() * 0.25 - a).realize()
print(time.perf_counter() - st)
"""


def _first_call(env: dict[str, str]) -> float:
  out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True, check=True)
  return float(out.stdout.strip().splitlines()[-1])


def _cold_and_warm(run: Callable[[dict[str, str]], float], runs: int) -> tuple[float, float]:
  """Median seconds of `run(env)` in fresh processes: with the disk caches off (picograd's kernels and specs, and Python's
  bytecode: every module is compiled from source), and with all of them warm in a private folder."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, "XDG_CACHE_HOME": cache, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cold = sorted(run({**env, "CACHE": "0", "PYTHONDONTWRITEBYTECODE": "1"}) for _ in range(runs))[runs // 2]
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(cache, "bytecode")  # a warm start reads compiled modules, as an installed package has
    run(env)  # fills the disk caches
    warm = sorted(run(env) for _ in range(runs))[runs // 2]
  return cold, warm


def bench_first_call(runs: int) -> list[Row]:
  cold, warm = _cold_and_warm(_first_call, runs)
  return [Row("first call, new fused kernel, compile (CACHE=0)", cold, None, None),
          Row("first call, new fused kernel, warm disk cache", warm, None, None)]


# `python3 examples/makemore.py` up to the end of its first training step (the loss's .item()), then exit at once:
# interpreter start, imports, data, model, tracing, scheduling, compiling (or loading from the disk cache) and the step.
_START_UP = """
import os, runpy, sys
from picograd import Tensor
item = Tensor.item
def first_item(self):
  item(self)
  os._exit(0)
Tensor.item = first_item
sys.argv = [sys.argv[1], "--quiet"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def bench_start_up(runs: int) -> list[Row]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = os.path.join(root, "examples", "makemore.py")
  def run(env: dict[str, str]) -> float:
    st = time.perf_counter()
    subprocess.run([sys.executable, "-c", _START_UP, script], env=env, check=True, capture_output=True)
    return time.perf_counter() - st
  cold, warm = _cold_and_warm(run, runs)
  return [Row("makemore.py start to first training step, cold (CACHE=0)", cold, None, None),
          Row("makemore.py start to first training step, warm disk cache", warm, None, None)]


# ---------------------------------------------------------------- the makemore MLP training step
VOCAB, CONTEXT, EMBED, HIDDEN, LR = 27, 3, 10, 200, 0.1


def _mlp_params(rng: np.random.Generator) -> list[np.ndarray]:
  return [rng.standard_normal((VOCAB, EMBED)).astype(np.float32),
          (rng.standard_normal((CONTEXT * EMBED, HIDDEN)) * 0.2).astype(np.float32), np.zeros(HIDDEN, np.float32),
          (rng.standard_normal((HIDDEN, VOCAB)) * 0.01).astype(np.float32), np.zeros(VOCAB, np.float32)]


def _mlp_data(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
  return rng.integers(0, VOCAB, (batch, CONTEXT)).astype(np.int32), rng.integers(0, VOCAB, batch).astype(np.int32)


def bench_mlp(batch: int, runs: int, warmup: int) -> list[Row]:
  rng = np.random.default_rng(0)
  init, (xs, ys) = _mlp_params(rng), _mlp_data(rng, batch)
  pt = None
  if torch is not None:
    tp = [torch.tensor(p, requires_grad=True) for p in init]
    tx, ty = torch.from_numpy(xs).long(), torch.from_numpy(ys).long()

    def torch_step() -> None:
      C, W1, b1, W2, b2 = tp
      h = torch.tanh(C[tx].view(batch, -1) @ W1 + b1)
      loss = torch.nn.functional.cross_entropy(h @ W2 + b2, ty)
      for p in tp: p.grad = None
      loss.backward()
      with torch.no_grad():
        for p in tp: p -= LR * p.grad
    pt = median_time(torch_step, runs, warmup)
  name = f"MLP train step, batch {batch}"
  if not hasattr(Tensor, "backward"): return [Row(name, None, None, pt, note="n/a (no backward yet)")]
  params = [Tensor(p, requires_grad=True).realize() for p in init]
  x, y = realized(xs), realized(ys)
  onehot = (y.reshape(batch, 1) == Tensor.arange(VOCAB, dtype=dtypes.int32)).realize()

  def step(x: Tensor, onehot: Tensor) -> Tensor:
    C, W1, b1, W2, b2 = params
    h = (C[x].reshape(batch, CONTEXT * EMBED) @ W1 + b1).tanh()
    loss = -((h @ W2 + b2).log_softmax(1) * onehot).sum(1).mean()
    for p in params: p.grad = None
    loss.backward()
    for p in params: p.assign(p - LR * p.grad)
    return loss.realize(*params)
  # eager: the graph is built, differentiated and looked up in the schedule cache every step; jit: recorded kernels replayed
  jitted = picograd.jit(step)
  return [Row(name + " (eager)", median_time(lambda: step(x, onehot), runs, warmup), None, pt),
          Row(name + " (jit)", median_time(lambda: jitted(x, onehot), runs, warmup), None, pt)]


# ---------------------------------------------------------------- convolution and pooling (a ResNet stage's shapes)
def bench_conv(runs: int, warmup: int) -> list[Row]:
  """conv2d 3x3, 64 -> 64 channels, 56x56, batch 8 (padding 1): forward, forward + both gradients; max_pool2d 2x2 of the same input."""
  rng = np.random.default_rng(0)
  xs, gs = rng.standard_normal((8, 64, 56, 56), dtype=np.float32), rng.standard_normal((8, 64, 56, 56), dtype=np.float32)
  ws = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
  flops = 2 * 8 * 64 * 56 * 56 * 64 * 9
  pt = [None, None, None]
  if torch is not None:
    tx, tw, tg = torch.tensor(xs, requires_grad=True), torch.tensor(ws, requires_grad=True), torch.from_numpy(gs)
    def torch_fwd_bwd() -> None:
      tx.grad = tw.grad = None
      torch.nn.functional.conv2d(tx, tw, padding=1).backward(tg)
    with torch.no_grad():
      pt[0] = median_time(lambda: torch.nn.functional.conv2d(tx, tw, padding=1), runs, warmup)
      pt[2] = median_time(lambda: torch.nn.functional.max_pool2d(tx, 2), runs, warmup)
    pt[1] = median_time(torch_fwd_bwd, runs, warmup)
  x, w, g = Tensor(xs, requires_grad=True).realize(), Tensor(ws, requires_grad=True).realize(), realized(gs)
  def fwd_bwd() -> None:
    out = x.conv2d(w, padding=1)
    out.realize(*out.gradient(x, w, gradient=g))
  return [Row("conv2d 3x3 64->64 56x56 batch 8, forward", median_time(lambda: x.conv2d(w, padding=1).realize(), runs, warmup), None, pt[0],
              nbytes=xs.nbytes * 2 + ws.nbytes, flops=flops),
          Row("conv2d 3x3 64->64 56x56 batch 8, forward + backward", median_time(fwd_bwd, runs, warmup), None, pt[1], flops=3 * flops),
          Row("max_pool2d 2x2 of 8x64x56x56", median_time(lambda: x.max_pool2d(2).realize(), runs, warmup), None, pt[2],
              nbytes=xs.nbytes * 5 // 4)]


# ---------------------------------------------------------------- attention: stored scores against the online softmax pass
def bench_attention(runs: int, warmup: int) -> list[Row]:
  """scaled_dot_product_attention at the GPT's head shapes beside PyTorch's SDPA: picograd with the scores stored
  (ONLINE_SOFTMAX_MIN and the RECOMPUTE flags above their size) and as one online-softmax pass (ONLINE_SOFTMAX_MIN=0; on the
  CPU the tiled flash attention of codegen/cpu_flash.py, the default from 2^16 score elements), in one process. Forward +
  backward rows also time the scores recomputed in every backward kernel (RECOMPUTE_MIN=0, engine/recompute.py, the default
  for causal scores from 2^20 elements; codegen/cpu_flash_bwd.py), with no T x T buffer."""
  rng = np.random.default_rng(0)
  rows = []
  stored = {"ONLINE_SOFTMAX_MIN": 1 << 62, "RECOMPUTE_MIN": 1 << 62, "RECOMPUTE_MASKED_MIN": 1 << 62}
  online = {"ONLINE_SOFTMAX_MIN": 0}  # and the default RECOMPUTE flags: causal scores of 2^20 elements and up are recomputed
  recomputed = {"ONLINE_SOFTMAX_MIN": 0, "RECOMPUTE_MIN": 0}
  for T, causal, backward in ((256, False, False), (256, True, False), (256, False, True), (256, True, True), (1024, False, False),
                              (1024, False, True), (1024, True, True)):
    B, H, D = 4, 6, 64
    arrays = [rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(3)]
    grad = rng.standard_normal((B, H, T, D), dtype=np.float32)
    qkv = [Tensor(a, requires_grad=backward).realize() for a in arrays]
    g = realized(grad)
    def run() -> None:
      out = qkv[0].scaled_dot_product_attention(qkv[1], qkv[2], is_causal=causal)
      out.realize(*(out.gradient(*qkv, gradient=g) if backward else ()))
    pt = None
    if torch is not None:
      tq = [torch.tensor(a, requires_grad=backward) for a in arrays]
      def torch_run() -> None:
        out = torch.nn.functional.scaled_dot_product_attention(*tq, is_causal=causal)
        if backward: torch.autograd.grad(out, tq, torch.from_numpy(grad))
      with torch.set_grad_enabled(backward): pt = median_time(torch_run, runs, warmup)
    flops = 4 * B * H * T * T * D * (3 if backward else 1) // (2 if causal else 1)
    name = f"attention B={B} H={H} T={T} D={D}{' causal' if causal else ''}, {'forward + backward' if backward else 'forward'}"
    labels = (("scores stored", stored), ("online softmax", online)) + ((("recomputed scores", recomputed),) if backward else ())
    for label, flags in labels:
      with picograd.Context(**flags): rows.append(Row(f"{name} ({label})", median_time(run, runs, warmup), None, pt, flops=flops))
  return rows


# ---------------------------------------------------------------- provenance: what remembering source lines costs
def bench_provenance(runs: int) -> list[Row]:
  """Time to build (not run) the graph of examples/gpt.py's small model's forward pass and loss, PROVENANCE=1 against
  PROVENANCE=0, alternating in one process (the median of each; the graph is freed outside the timed part)."""
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
  from gpt import CONFIGS, GPT, loss_fn
  cfg = CONFIGS["small"]
  model = GPT(cfg, 65)
  rng = np.random.default_rng(0)
  x, y = (realized(rng.integers(0, 65, (cfg.batch, cfg.block_size)).astype(np.int32)) for _ in range(2))
  times: dict[int, list[float]] = {1: [], 0: []}
  for _ in range(runs):
    for flag, out in times.items():
      with picograd.Context(PROVENANCE=flag):
        for _ in range(5):
          st = time.perf_counter()
          graph = loss_fn(model, x, y)
          out.append(time.perf_counter() - st)
          del graph
  on, off = (sorted(times[f])[len(times[f]) // 2] for f in (1, 0))
  return [Row("GPT forward graph build, PROVENANCE=0", off, None, None),
          Row(f"GPT forward graph build, PROVENANCE=1 ({(on / off - 1) * 100:+.1f}%)", on, None, None)]


def save(text: str, cores: int, runs: int) -> None:
  """Append `text` to bench/RESULTS.md under a heading naming the date, CPU, load, commit and versions."""
  here = os.path.dirname(os.path.abspath(__file__))
  def git(*a: str) -> str: return subprocess.run(["git", *a], capture_output=True, text=True, cwd=here).stdout.strip()
  commit = git("rev-parse", "--short", "HEAD") or "unknown"
  dirty = " plus uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
  cpu = platform.processor()
  if os.path.exists("/proc/cpuinfo"):
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
  # other work on the machine skews every column: say how busy it was
  load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
  head = (f"\n## CPU: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {cores} cores{load}, commit {commit}{dirty}\n\n"
          f"`python bench/cpu.py`: median of {runs} runs; numpy {np.__version__}, "
          f"torch {torch.__version__ if torch is not None else 'not installed'}, python {platform.python_version()}. "
          "ratio = numpy time / picograd time (PyTorch's for the MLP, conv and attention rows): above 1, picograd is faster; "
          "vs torch = PyTorch time / picograd time.\n\n")
  with open(os.path.join(here, "RESULTS.md"), "a") as f: f.write(head + text + "\n")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", type=int, default=7, help="timed runs per row (median)")
  ap.add_argument("--warmup", type=int, default=2, help="untimed runs first")
  ap.add_argument("--save", action="store_true", help="append the table to bench/RESULTS.md")
  ap.add_argument("--only", default="", help="run only the groups whose name contains this "
                  "(elementwise, reduce, matmul, first-call, start-up, mlp, conv, provenance, attention)")
  args = ap.parse_args()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  if torch is not None: torch.set_num_threads(cores)
  r, w = args.runs, args.warmup
  groups = {"elementwise": lambda: [bench_elementwise(r, w)], "reduce": lambda: [bench_rowsum(r, w), bench_rowsum_jit(r, w), bench_rowsum_short(r, w), bench_colsum(r, w), bench_fullsum(r, w), bench_softmax(r, w),
                                                                                 bench_layer_norm(r, w)],
            "matmul": lambda: [*(bench_matmul(n, r, w) for n in (512, 1024, 2048)), bench_matmul(1024, r, w, transposed=True)], "first-call": lambda: bench_first_call(min(r, 5)),
            "start-up": lambda: bench_start_up(min(r, 3)),
            "mlp": lambda: [*bench_mlp(32, r * 3, w * 5), *bench_mlp(512, r * 3, w * 5)], "conv": lambda: bench_conv(r, w),
            "provenance": lambda: bench_provenance(r * 4), "attention": lambda: bench_attention(r, w)}
  rows = [row for name, make in groups.items() if args.only in name for row in make()]
  text = table(rows)
  print(text)
  if args.save: save(text, cores, r)


if __name__ == "__main__":
  main()
