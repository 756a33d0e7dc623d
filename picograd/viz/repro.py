"""Per-kernel repro scripts (viz layer): a small Python file that runs one kernel alone on random inputs and prints its time.

DUMP writes one per kernel (`<name>.repro.py`) beside the kernel's other stages. The script holds
the kernel's fused graph (its AST, pickled, with the readable graph in a comment) and its buffers'
sizes and dtypes; it compiles the graph exactly as the engine does (`get_kernel`: the disk cache
makes that instant after a run), fills the inputs with random values of the right dtype, runs the
kernel `--runs` times and prints the median. Integer inputs get small values (0..3), so index
arguments stay in range; a kernel with runtime checks gets its error word.
"""
from __future__ import annotations
import base64, pickle
from typing import Any
from picograd.ir.ops import UOp
from picograd.ir.provenance import short

_TEMPLATE = '''"""Run picograd kernel {name} alone on {device} with random inputs and print its time (written by DUMP).

Made from:
{lines}
Fused graph:
{graph}
"""
import argparse, base64, pickle, time
import numpy as np
from picograd.dtype import dtypes
from picograd.engine.compile import get_kernel
from picograd.runtime.device import Buffer

NAME, DEVICE = {name!r}, {device!r}
AST = pickle.loads(base64.b64decode({ast!r}))
ARGS = {args!r}  # (elements, dtype) per kernel argument; the first is written


def random_input(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
  if dtype.is_float: return rng.standard_normal(n).astype(np.float32).astype(dtype.np if dtype.name != "bfloat16" else np.float32)
  if dtype.name == "bool": return rng.integers(0, 2, n).astype(np.bool_)
  return rng.integers(0, 4, n).astype(dtype.np)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", type=int, default=20)
  ap.add_argument("--device", default=DEVICE)
  runs, device = ap.parse_args().runs, ap.parse_args().device
  kernel = get_kernel(AST, device)
  rng = np.random.default_rng(0)
  buffers = []
  for n, dtype_name in ARGS:
    dtype = getattr(dtypes, dtype_name)
    host = random_input(rng, n, dtype)
    if dtype.name == "bfloat16": host = (host.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    buffers.append(Buffer(device, n, dtype).copyin(host))
  if kernel.checks: buffers.append(Buffer(device, 1, dtypes.int64).copyin(np.zeros(1, np.int64)))
  handles = [b.handle for b in buffers]
  kernel.program(handles, kernel.dims, wait=True)  # warm up
  times = sorted(kernel.program(handles, kernel.dims, wait=True) or 0.0 for _ in range(runs))
  t = times[len(times) // 2]
  print(f"{{NAME}} on {{device}}: {{t * 1e6:.1f}} us (median of {{runs}}), {{kernel.bytes / max(t, 1e-9) / 1e9:.2f}} GB/s, "
        f"{{kernel.flops / max(t, 1e-9) / 1e9:.2f}} GFLOP/s")


if __name__ == "__main__":
  main()
'''


def repro_script(name: str, device: str, ast: UOp, args: list[tuple[int, Any, str]], provenance: tuple[str, ...], graph: str) -> str:
  """The text of a script that runs kernel `name` (graph `ast`, buffers `args`: (size, dtype, device)) alone and prints its time."""
  lines = "\n".join(f"  {short(line)}" for line in provenance) or "  (no source lines recorded)"
  return _TEMPLATE.format(name=name, device=device, lines=lines, graph="\n".join("  " + line for line in graph.splitlines()),
                          ast=base64.b64encode(pickle.dumps(ast)).decode(), args=[(size, dtype.name) for size, dtype, _ in args])


__all__ = ["repro_script"]
