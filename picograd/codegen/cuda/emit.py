"""Writing CUDA C: indented lines with fresh names, binding loops to digits of a flat index, and `Cone`, which renders
the values an instruction depends on at given loop indices. `KernelSource` collects what a plan produces."""
from __future__ import annotations
from typing import Callable
from picograd.ir.ops import UOp, Ops, toposort
from picograd.codegen.cuda.ops import REG_TYPES, c_const, render_alu, render_load, render_store


class Writer:
  """Lines of C with indentation and fresh names; `wrapping` holds the instructions rendered with wrapping integer ops."""
  def __init__(self) -> None:
    self.wrapping: set[UOp] = set()
    self.lines: list[str] = []
    self.depth = 1
    self.count = 0

  def __call__(self, line: str) -> None: self.lines.append("  " * self.depth + line)
  def open(self, line: str) -> None: self(line + " {"); self.depth += 1
  def close(self, tail: str = "") -> None: self.depth -= 1; self("}" + tail)
  def fresh(self, prefix: str = "t") -> str:
    self.count += 1
    return f"{prefix}{self.count}"


def index_of(ranges: list[UOp], flat: str, w: Writer, base: dict[UOp, str]) -> None:
  """Bind each range of `ranges` (outermost first) to its digit of the flat row-major index `flat`."""
  stride = 1
  for r in reversed(ranges):
    size = r.arg[1]
    e = flat if stride == 1 else f"({flat} / {stride})"
    if r is not ranges[0]: e = f"({e} % {size})"
    name = w.fresh("i")
    w(f"const {REG_TYPES[r.dtype]} {name} = ({REG_TYPES[r.dtype]}){e};")
    base[r] = name
    stride *= size


class Cone:
  """Renders the dependency cone of an instruction at given range values (`env`), one statement per value.

  Nodes that do not depend on any range in `varying` are taken from `shared`, so several cones
  (four vector lanes, a tile's rows) compute loop-invariant values once.
  """

  def __init__(self, w: Writer, env: dict[UOp, str], shared: "Cone | None" = None, varying: frozenset[UOp] = frozenset(),
               deps: dict[UOp, frozenset[UOp]] | None = None, load_hook: Callable[[UOp], str | None] | None = None):
    self.w, self.env, self.shared, self.varying, self.deps, self.load_hook = w, dict(env), shared, varying, deps, load_hook
    self.names: dict[UOp, str] = {}

  def expr(self, root: UOp) -> str:
    for u in toposort([root], stop=lambda x: x in self.env or x in self.names or self._is_shared(x)):
      if u not in self.names and u not in self.env and not self._is_shared(u): self._emit(u)
    return self.val(root)

  def _is_shared(self, u: UOp) -> bool:
    return self.shared is not None and self.deps is not None and not (self.deps[u] & self.varying)

  def val(self, u: UOp) -> str:
    if u in self.env: return self.env[u]
    if u.op is Ops.CONST: return c_const(u.arg, u.dtype)
    if self._is_shared(u): return self.shared.expr(u)  # type: ignore[union-attr]
    return self.names[u]

  def _emit(self, u: UOp) -> None:
    if u.op in (Ops.CONST, Ops.PARAM): return  # inlined where used
    if u.op is Ops.STORE:
      self.w(render_store(u.src[0], self.val(u.src[1]), self.val(u.src[2])))
      self.names[u] = ""
      return
    if u.op is Ops.LOAD:
      if self.load_hook is not None and (e := self.load_hook(u)) is not None: self.names[u] = e; return
      code = render_load(u.src[0], self.val(u.src[1]))
    elif u.op in (Ops.RANGE, Ops.DEFINE_ACC, Ops.ACCUMULATE, Ops.ENDRANGE):
      raise NotImplementedError(f"{u.op} inside a rendered cone")
    else: code = render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in self.w.wrapping)
    name = self.names[u] = self.w.fresh("v")
    self.w(f"const {REG_TYPES[u.dtype]} {name} = {code};")


BLOCK = 256


class KernelSource:
  """Everything a plan produces: the body, the launch, and what the preamble must include."""
  def __init__(self) -> None:
    self.w = Writer()
    self.globals: list[str] = []  # file-scope declarations (__device__ scratch)
    self.grid: tuple[int, ...] = (1,)
    self.block = BLOCK
    self.shared_bytes = 0
