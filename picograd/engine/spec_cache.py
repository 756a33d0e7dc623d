"""Rendered kernels on disk (engine layer): a new process skips lowering and rendering, not only the compiler.

With a warm compile cache, most of a first training step's start-up was spent re-rendering
kernels in Python (lowering, optimizing, linearizing, printing IR: ~35 ms a kernel) only to
find their objects on disk. This cache keeps each `ProgramSpec`, keyed by the kernel graph's
structure, the device, the render target, the flags that change rendering (NOOPT, TF32, TMA, EMULATE), and a hash of picograd's own source files (a
changed lowering or renderer must never reuse an old spec). Entries use the compile cache's
checked format (runtime/cache.py): a damaged or foreign entry is a miss, and the kernel is rendered.
`CACHE=0` turns it off with the compile cache.
"""
from __future__ import annotations
import functools, hashlib, os, pickle
from typing import Any, Callable
from picograd.helpers import CACHE, EMULATE, NOOPT, TF32, TMA
from picograd.ir.ops import UOp, toposort
from picograd.codegen.kernel import ProgramSpec
from picograd.runtime.cache import cached_payload

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def _code_version() -> str:
  """A hash of every picograd source file: any code change starts a new set of entries."""
  h = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(_PACKAGE)):
    dirs.sort()
    for f in sorted(files):
      if f.endswith(".py"):
        with open(os.path.join(folder, f), "rb") as fh: h.update(f.encode() + b"\0" + fh.read())
  return h.hexdigest()


def _arg(a: Any) -> str:
  """An argument's exact spelling: floats by their bits' hex form (repr would merge NaN payloads)."""
  if isinstance(a, float): return a.hex()
  if isinstance(a, tuple): return "(" + ",".join(_arg(x) for x in a) + ")"
  return repr(a)


def graph_key(ast: UOp) -> str:
  """The kernel graph's structure as text: one line per node (op, dtype, argument, sources by position)."""
  index: dict[UOp, int] = {}
  lines = []
  for n in toposort([ast]):
    index[n] = len(index)
    lines.append(f"{n.op.name} {n.dtype.name} {_arg(n.arg)} {[index[s] for s in n.src]}")
  return "\n".join(lines)


def cached_spec(ast: UOp, device: str, target: Any, render: Callable[[], ProgramSpec], compiler: str = "") -> ProgramSpec:
  """`render()`, or the spec an earlier process rendered for the same kernel, device, target, compiler and code. `compiler`
  is the device compiler's cache key: the CPU's rendering reads the host's vector width (codegen/gemm_match.py)."""
  if not CACHE: return render()
  key = f"spec\0{_code_version()}\0{device}\0{compiler}\0{target!r}\0{bool(NOOPT)}\0{bool(TF32)}\0{bool(TMA)}\0{EMULATE.value}\0{graph_key(ast)}"
  made: list[ProgramSpec] = []
  def make() -> bytes:
    made.append(render())
    return pickle.dumps(made[0])
  payload = cached_payload(key, make)
  if made: return made[0]
  try:
    spec = pickle.loads(payload)
  except Exception:  # an entry from an incompatible pickle: render again (its checksum matched, so it is not damaged)
    return render()
  return spec if isinstance(spec, ProgramSpec) else render()


__all__ = ["cached_spec", "graph_key"]
