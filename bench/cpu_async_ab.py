"""Asynchronous CPU launches A/B: eager picograd with CPU_ASYNC=1 and CPU_ASYNC=0 beside PyTorch, in one process.

Each round times the three back to back (the order alternates between rounds), each as the mean per call of 4 calls
ending with a CPU synchronize (picograd's launches may return before their kernels end); the table gives the medians of
the per-round ratios, which cancel the shared host's slow phases better than ratios of medians taken minutes apart.

  python bench/cpu_async_ab.py               # row sums, full sum, softmax, layer_norm of 4096^2, jitted row sums; 30 rounds
  python bench/cpu_async_ab.py 50 "full sum" # 50 rounds of one row
"""
from __future__ import annotations
import os, sys
from typing import Callable
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picograd  # noqa: E402
from picograd import Tensor  # noqa: E402
from picograd.helpers import Context  # noqa: E402
from cpu import per_call  # noqa: E402  (bench/cpu.py: timed up to when the CPU has run the kernels)


def main() -> None:
  rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
  x = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
  t, tx = Tensor(x).realize(), torch.from_numpy(x)
  w, b = Tensor(np.ones(4096, np.float32)).realize(), Tensor(np.zeros(4096, np.float32)).realize()

  @picograd.jit
  def row_sums(a: Tensor) -> Tensor: return a.sum(1)

  rows: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
    "row sums": (lambda: t.sum(1).realize(), lambda: tx.sum(1)), "full sum": (lambda: t.sum().realize(), lambda: tx.sum()),
    "softmax": (lambda: t.softmax(1).realize(), lambda: torch.softmax(tx, 1)),
    "layer_norm": (lambda: t.layer_norm(4096, w, b).realize(), lambda: torch.nn.functional.layer_norm(tx, (4096,))),
    "row sums jit": (lambda: row_sums(t), lambda: tx.sum(1))}
  print(f"| 4096^2, {rounds} rounds | torch / async | torch / sync | async ms | sync ms | torch ms |\n|---|---|---|---|---|---|")
  for name in sys.argv[2:] or list(rows):
    pg, pt = rows[name]
    times: dict[str, list[float]] = {"async": [], "sync": [], "torch": []}
    for r in range(rounds):
      for kind in (["async", "sync", "torch"] if r % 2 == 0 else ["torch", "sync", "async"]):
        fn = pt if kind == "torch" else pg
        with Context(CPU_ASYNC=int(kind == "async")):
          per_call(fn, 2)
          times[kind].append(per_call(fn, 4))
    vs = {k: np.median(np.array(times["torch"]) / np.array(times[k])) for k in ("async", "sync")}
    ms = {k: np.median(v) * 1e3 for k, v in times.items()}
    print(f"| {name} | {vs['async']:.2f}x | {vs['sync']:.2f}x | {ms['async']:.3f} | {ms['sync']:.3f} | {ms['torch']:.3f} |", flush=True)


if __name__ == "__main__":
  main()
