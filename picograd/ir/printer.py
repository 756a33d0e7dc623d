"""Readable text for UOp graphs: one node per line, each shared node named once (`%3`), children first."""
from __future__ import annotations
from picograd.ir.ops import UOp, Ops, toposort


def _fmt_arg(u: UOp) -> str:
  if u.arg is None: return ""
  if u.op is Ops.BUFFER: return f" {u.arg!r}"
  if u.op is Ops.REDUCE: return f" {u.arg[0].name} axes={u.arg[1]}" if isinstance(u.arg, tuple) else f" {u.arg.name}"
  return f" {u.arg!r}"


def print_graph(*roots: UOp) -> str:
  """The graph below `roots` as text, one line per node: `%id = OP dtype shape (sources) arg`."""
  names: dict[UOp, str] = {}
  lines = []
  for node in toposort(roots):
    names[node] = f"%{len(names)}"
    srcs = ", ".join(names[s] for s in node.src)
    shape = f" {node.shape}" if node.shape is not None else ""
    lines.append(f"{names[node]:>5} = {node.op.name:<11} {node.dtype.name:<8}{shape}{' (' + srcs + ')' if srcs else ''}{_fmt_arg(node)}")
  return "\n".join(lines)


def print_program(program: list[UOp]) -> str:
  """A linearized kernel as text: one instruction per line, indented by loop depth."""
  names: dict[UOp, str] = {}
  lines, depth = [], 0
  for u in program:
    if u.op is Ops.ENDRANGE: depth -= 1
    names[u] = f"v{len(names)}"
    srcs = ", ".join(names.get(s, "?") for s in u.src)
    lines.append(f"{'  ' * depth}{names[u]:>4} = {u.op.name:<11} {u.dtype.name:<8} ({srcs}){_fmt_arg(u)}")
    if u.op is Ops.RANGE: depth += 1
  return "\n".join(lines)
