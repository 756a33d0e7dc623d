"""Pictures of fused kernels (viz layer): Graphviz dot text, an SVG through Graphviz, and a built-in SVG without it.

`to_dot(x)` takes a tensor (the kernels realizing it would run: `picograd.schedule`) or one
scheduled kernel. Each kernel is a cluster labelled with its name and source lines; inside it are
its fused nodes (op, dtype, shape, arg); the buffers it reads and writes sit outside, as cylinders
(size, dtype, device), so a buffer written by one kernel and read by the next joins the two.
`to_svg(x)` renders that dot through the `graphviz` package or the `dot` program, and returns
None when neither is installed; the HTML report then draws the same graph with `simple_svg`, a
layered layout of its own.
"""
from __future__ import annotations
import html, shutil, subprocess
from dataclasses import dataclass, field
from typing import Any
from picograd.engine.realize import ScheduledKernel, schedule
from picograd.ir.ops import UOp, Ops, toposort
from picograd.ir.provenance import short


@dataclass
class Graph:
  """A drawing: nodes (id -> label lines, cluster or None, shape), edges, and cluster labels."""
  nodes: dict[str, tuple[list[str], int | None, str]] = field(default_factory=dict)
  edges: list[tuple[str, str]] = field(default_factory=list)
  clusters: dict[int, list[str]] = field(default_factory=dict)


def _arg_text(u: UOp) -> str:
  if u.arg is None or u.op in (Ops.PARAM, Ops.BUFFER): return ""
  if u.op is Ops.REDUCE: return f"{u.arg[0].name} axes={u.arg[1]}"
  text = repr(u.arg)
  return text if len(text) <= 40 else text[:37] + "..."


def _node_label(u: UOp) -> list[str]:
  shape = "" if u.shape is None else " " + "x".join(map(str, u.shape)) if u.shape else " scalar"
  return [x for x in (u.op.name, f"{u.dtype.name}{shape}", _arg_text(u)) if x]


def _steps_of(x: Any) -> list[ScheduledKernel]:
  if isinstance(x, ScheduledKernel): return [x]
  if isinstance(x, (list, tuple)) and all(isinstance(s, ScheduledKernel) for s in x): return list(x)
  if hasattr(x, "uop") and hasattr(x, "device"): return schedule(x)
  raise TypeError(f"to_dot: expected a Tensor, a scheduled kernel or a list of them, not {type(x).__name__}")


def graph_of(x: Any, args: list[tuple[int, Any, str]] | None = None) -> Graph:
  """The drawing of `x`'s kernels. `args` describes one kernel's buffers where the step no longer holds them (the report's)."""
  g = Graph()
  for ki, step in enumerate(_steps_of(x)):
    lines = [step.name] + [short(line) for line in step.provenance[:4]] + ([f"(+{len(step.provenance) - 4} more lines)"]
                                                                          if len(step.provenance) > 4 else [])
    g.clusters[ki] = lines
    bufs = [(id(b), b.size, b.dtype, b.device) for b in step.buffers] if step.buffers else \
           [(ki * 1000 + i, size, dtype, dev) for i, (size, dtype, dev) in enumerate(args or [])]

    def buffer_node(i: int) -> str:
      if i >= len(bufs): return f"k{ki}_param{i}"
      key, size, dtype, dev = bufs[i]
      name = f"b{key}"
      if name not in g.nodes: g.nodes[name] = ([f"buffer {dtype.name}[{size}]", dev], None, "cylinder")
      return name

    if step.ast is None:  # a device copy
      g.nodes[f"k{ki}_copy"] = (["COPY"], ki, "box")
      g.edges += [(buffer_node(1), f"k{ki}_copy"), (f"k{ki}_copy", buffer_node(0))]
      continue
    names: dict[UOp, str] = {}
    for n in toposort([step.ast]):
      if n.op is Ops.SINK: continue
      if n.op is Ops.PARAM:
        names[n] = buffer_node(n.arg[0])
        if n.arg[0] >= len(bufs): g.nodes[names[n]] = ([f"PARAM {n.arg[0]}", f"{n.dtype.name}[{n.arg[1]}]"], None, "cylinder")
        continue
      names[n] = f"k{ki}_{len(names)}"
      if n.op is Ops.STORE:
        g.nodes[names[n]] = (["STORE"], ki, "box")
        g.edges += [(names[n.src[1]], names[n]), (names[n], names[n.src[0]])]
        continue
      g.nodes[names[n]] = (_node_label(n), ki, "box")
      g.edges += [(names[s], names[n]) for s in n.src]
  return g


def _q(lines: list[str]) -> str:
  """A quoted dot label of several lines (dot's `\\n` centers each)."""
  return '"' + "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in lines) + '"'


def to_dot(x: Any) -> str:
  """Graphviz dot text of a tensor's kernels (`picograd.schedule(tensor)`) or of one scheduled kernel."""
  return graph_dot(graph_of(x))


def graph_dot(g: Graph) -> str:
  out = ["digraph picograd {", '  rankdir=TB; node [fontname="monospace", fontsize=10]; edge [color="#555555"];']
  for ci, label in g.clusters.items():
    out.append(f"  subgraph cluster_{ci} {{")
    out.append(f'    label={_q(label)}; style="rounded,filled"; fillcolor="#eef3ff"; color="#7a8fc0"; fontname="monospace";')
    out += [f"    {name} [label={_q(lab)}, shape={shape}];" for name, (lab, c, shape) in g.nodes.items() if c == ci]
    out.append("  }")
  out += [f'  {name} [label={_q(lab)}, shape={shape}, style=filled, fillcolor="#fff4d6"];'
          for name, (lab, c, shape) in g.nodes.items() if c is None]
  out += [f"  {a} -> {b};" for a, b in g.edges]
  out.append("}")
  return "\n".join(out) + "\n"


def to_svg(x: Any) -> str | None:
  """The dot picture of `x` as SVG through Graphviz (the `graphviz` package, or the `dot` program); None without either."""
  return dot_to_svg(to_dot(x))


def dot_to_svg(dot: str) -> str | None:
  if shutil.which("dot") is None: return None  # the `graphviz` package needs the program too
  try:
    import graphviz  # type: ignore[import-not-found]  # optional
    return graphviz.Source(dot).pipe(format="svg").decode()
  except ImportError:
    pass
  result = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
  return result.stdout if result.returncode == 0 else None


# ---------------------------------------------------------------- a layered drawing without Graphviz

def simple_svg(g: Graph) -> str:
  """An SVG of `g` laid out in layers (a node one layer below its lowest source), for when Graphviz is not installed."""
  preds: dict[str, list[str]] = {n: [] for n in g.nodes}
  for a, b in g.edges:
    if a in preds and b in preds: preds[b].append(a)
  layer: dict[str, int] = {}
  for n in _topo(preds): layer[n] = 1 + max((layer[p] for p in preds[n]), default=-1)
  rows: dict[int, list[str]] = {}
  for n in sorted(g.nodes, key=lambda n: layer[n]): rows.setdefault(layer[n], []).append(n)
  char_w, line_h, pad, gap_x, gap_y = 6.6, 13, 6, 18, 34
  size = {n: (max(len(t) for t in lab) * char_w + 2 * pad, len(lab) * line_h + 2 * pad) for n, (lab, _, _) in g.nodes.items()}
  pos: dict[str, tuple[float, float]] = {}
  y, width = 10.0, 0.0
  for r in sorted(rows):
    # order a row by where its sources sit, so edges cross less
    row = sorted(rows[r], key=lambda n: sum(pos[p][0] for p in preds[n]) / len(preds[n]) if preds[n] else 0.0)
    x = 10.0
    for n in row:
      pos[n] = (x + size[n][0] / 2, y)
      x += size[n][0] + gap_x
    width = max(width, x)
    y += max(size[n][1] for n in row) + gap_y
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" height="{y:.0f}" viewBox="0 0 {width:.0f} {y:.0f}">',
         '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto">'
         '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
  for a, b in g.edges:
    if a in pos and b in pos:
      (xa, ya), (xb, yb) = pos[a], pos[b]
      out.append(f'<line x1="{xa:.0f}" y1="{ya + size[a][1]:.0f}" x2="{xb:.0f}" y2="{yb:.0f}" stroke="#555" marker-end="url(#arrow)"/>')
  for n, (lab, cluster, shape) in g.nodes.items():
    (cx, top), (w, h) = pos[n], size[n]
    fill = "#fff4d6" if cluster is None else "#eef3ff"
    out.append(f'<rect x="{cx - w / 2:.0f}" y="{top:.0f}" width="{w:.0f}" height="{h:.0f}" rx="{8 if shape == "cylinder" else 3}" '
               f'fill="{fill}" stroke="#7a8fc0"/>')
    for i, text in enumerate(lab):
      out.append(f'<text x="{cx:.0f}" y="{top + pad + (i + 1) * line_h - 3:.0f}" text-anchor="middle" font-family="monospace" '
                 f'font-size="11">{html.escape(text)}</text>')
  out.append("</svg>")
  return "\n".join(out)


def _topo(preds: dict[str, list[str]]) -> list[str]:
  order, seen = [], set()
  for start in preds:
    stack = [(start, False)]
    while stack:
      n, done = stack.pop()
      if done:
        order.append(n)
        continue
      if n in seen: continue
      seen.add(n)
      stack.append((n, True))
      stack.extend((p, False) for p in preds[n] if p not in seen)
  return order


__all__ = ["Graph", "graph_of", "graph_dot", "to_dot", "to_svg", "dot_to_svg", "simple_svg"]
