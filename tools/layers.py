"""picograd's layers (DESIGN §1): which module belongs to which, what each may import, and lines of code per layer.

`python3 tools/layers.py` prints files and lines per layer and any layer violation or import
circle; it exits 1 if there is one. tests/test_layers.py runs the same checks. Imports are read
with `ast` from the source, top-level and inside functions alike (a function-level import is
still a dependency; it only hides a circle until the function runs). Imports under
`if TYPE_CHECKING:` must respect the layers too, but never run, so they make no circle.
"""
from __future__ import annotations
import ast, pathlib, sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "picograd"

# layer -> the modules in it (a module belongs to the layer of its longest matching prefix)
LAYERS: dict[str, tuple[str, ...]] = {
  "base": ("picograd.dtype", "picograd.helpers"),
  "ir": ("picograd.ir",),
  "codegen": ("picograd.codegen",),
  "runtime": ("picograd.runtime",),
  "engine": ("picograd.engine",),
  "frontend": ("picograd.tensor", "picograd.indexing", "picograd.frontend"),
  "library": ("picograd.nn", "picograd.optim"),
  "viz": ("picograd.viz",),  # pictures, the HTML report, traces, repro scripts: reads tensors only as handles
  "api": ("picograd",),  # the package's __init__: the public names, on top of everything
}
# layer -> the layers it may import (its own included). Codegen and the runtime are siblings: the engine joins them.
ALLOWED: dict[str, frozenset[str]] = {
  "base": frozenset({"base"}),
  "ir": frozenset({"base", "ir"}),
  "codegen": frozenset({"base", "ir", "codegen"}),
  "runtime": frozenset({"base", "runtime"}),
  "engine": frozenset({"base", "ir", "codegen", "runtime", "engine"}),
  "frontend": frozenset({"base", "ir", "runtime", "engine", "frontend"}),
  "library": frozenset({"base", "frontend", "library"}),  # no reaching below the Tensor API
  "viz": frozenset({"base", "ir", "codegen", "runtime", "engine", "viz"}),
  "api": frozenset(LAYERS),
}


@dataclass(frozen=True)
class Edge:
  """`module` imports `target` at `path:line` (`typing_only`: under `if TYPE_CHECKING:`)."""
  module: str
  target: str
  path: str
  line: int
  typing_only: bool = False

  def __str__(self) -> str: return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_files(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
  """Every module of the package by dotted name (a package's `__init__.py` is the package itself)."""
  out = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__": parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def layer_of(module: str) -> str:
  best = max(((p, layer) for layer, prefixes in LAYERS.items() for p in prefixes if module == p or module.startswith(p + ".")),
             key=lambda pl: len(pl[0]), default=None)
  if best is None: raise ValueError(f"{module} belongs to no layer: add it to tools/layers.py's LAYERS")
  return best[1]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
  if not node.level: return node.module or ""
  base = module.split(".") if is_package else module.split(".")[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_edges(root: pathlib.Path = ROOT, package: str = PACKAGE) -> list[Edge]:
  """Every import of a package module by a package module, at any depth of the source (functions, TYPE_CHECKING blocks)."""
  files = module_files(root, package)
  edges = []
  for module, path in files.items():
    rel = str(path.relative_to(root))
    tree = ast.parse(path.read_text(), rel)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
      if not isinstance(node, (ast.Import, ast.ImportFrom)): continue
      if isinstance(node, ast.Import): targets = [a.name for a in node.names]
      else:
        base = _resolve(module, path.name == "__init__.py", node)
        # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
      for target in dict.fromkeys(targets):
        if target in files and target != module: edges.append(Edge(module, target, rel, node.lineno, id(node) in typing_only))
  return edges


def violations(edges: list[Edge]) -> list[str]:
  """Each import that points where its layer may not look, with the two layers."""
  return [f"{e} ({layer_of(e.module)} may not import {layer_of(e.target)})" for e in edges
          if layer_of(e.target) not in ALLOWED[layer_of(e.module)]]


def cycles(edges: list[Edge]) -> list[list[str]]:
  """The import circles: strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
  graph: dict[str, list[str]] = {}
  for e in edges:
    if e.typing_only: continue
    graph.setdefault(e.module, []).append(e.target)
    graph.setdefault(e.target, [])
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  out: list[list[str]] = []
  for start in graph:
    if start in index: continue
    work = [(start, 0)]
    while work:
      node, i = work.pop()
      if i == 0:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
      if i < len(graph[node]):
        work.append((node, i + 1))
        nxt = graph[node][i]
        if nxt not in index: work.append((nxt, 0))
        elif nxt in on_stack: low[node] = min(low[node], index[nxt])
        continue
      if low[node] == index[node]:
        comp = []
        while True:
          top = stack.pop()
          on_stack.discard(top)
          comp.append(top)
          if top == node: break
        if len(comp) > 1: out.append(sorted(comp))
      if work: low[work[-1][0]] = min(low[work[-1][0]], low[node])
  return out


def circle_edges(edges: list[Edge], circle: list[str]) -> list[Edge]:
  """The imports that make up a circle, to print."""
  members = set(circle)
  return [e for e in edges if e.module in members and e.target in members and not e.typing_only]


def lines_per_layer(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, tuple[int, int, int]]:
  """layer -> (files, lines, code lines: not blank and not only a comment)."""
  out: dict[str, tuple[int, int, int]] = {layer: (0, 0, 0) for layer in LAYERS}
  for module, path in module_files(root, package).items():
    text = path.read_text().splitlines()
    code = sum(1 for line in text if line.strip() and not line.strip().startswith("#"))
    files, lines, code_lines = out[layer_of(module)]
    out[layer_of(module)] = (files + 1, lines + len(text), code_lines + code)
  return out


def main() -> int:
  table = lines_per_layer()
  print(f"{'layer':<10} {'files':>5} {'lines':>7} {'code':>7}")
  for layer, (files, lines, code) in table.items():
    print(f"{layer:<10} {files:>5} {lines:>7} {code:>7}")
  print(f"{'total':<10} {sum(t[0] for t in table.values()):>5} {sum(t[1] for t in table.values()):>7} {sum(t[2] for t in table.values()):>7}")
  edges = import_edges()
  bad = violations(edges)
  circles = cycles(edges)
  for line in bad: print("layer violation:", line)
  for circle in circles: print("import circle:", " <-> ".join(circle), *[f"\n  {e}" for e in circle_edges(edges, circle)])
  return 1 if bad or circles else 0


if __name__ == "__main__":
  sys.exit(main())
