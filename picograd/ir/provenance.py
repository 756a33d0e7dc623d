"""Provenance (IR layer): which lines of the user's program built each UOp, kept beside the graph, not in it.

UOps are hash-consed and immutable: two lines that build the same node get the same object, so a
source line cannot be part of a node's identity. This module keeps a side table instead, from node
(weakly: a node's entry dies with it) to a short tuple of lines `"file:line:function"`. A line is
the first frame outside the picograd package, found by walking `sys._getframe` (no `inspect`, which
reads source files).

Who fills the table: the frontend calls `record(uop)` for every tensor it makes, which tags the
new node and every untagged node below it with the caller's line (interior nodes of an op, such as
a broadcast's reshape and expand, get the op's line); `derive(out, grads)` gives the gradient
nodes of `out` its lines marked `[backward]`; `carry(old, new)` hands a node's lines to the node
that replaces it when a graph is rebuilt (`substitute`'s hook: the engine's normalized graphs). The
engine asks `lines_of(nodes)` for a kernel's lines. `PROVENANCE=0` turns all of it off.
"""
from __future__ import annotations
import os, sys, weakref
from typing import Any, Iterable
from picograd.helpers import Flag
from picograd.ir.ops import UOp, Ops, rebuild_hooks

PROVENANCE = Flag("PROVENANCE", 1)
BACKWARD = " [backward]"
# views and constants compute nothing: they are not recorded, and a kernel's lines leave them out. By enum value: an
# Enum member's hash is a Python-level call, and this test runs for every tensor made
_UNRECORDED = frozenset(op._value_ for op in (Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP, Ops.CONST))
MAX_LINES = 8  # a node built from many places (a shared constant) keeps the first few: enough to find it

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class _Entry(weakref.ref):
  """A node's lines, held on a weak reference to it; the reference's callback removes the entry when the node dies."""
  __slots__ = ("key", "lines")
  key: int
  lines: tuple[str, ...]


def _drop(entry: _Entry) -> None:
  if _table.get(entry.key) is entry: del _table[entry.key]


# id(node) -> its entry. Keyed by id, with dead nodes' entries removed by the callback before their id can be reused:
# a WeakKeyDictionary costs a Python-level call per lookup, which made building a graph 40% slower
_table: dict[int, _Entry] = {}
# file names of picograd's own modules and of everything else (filled as frames are met): set membership of a file
# name, whose hash is cached, is the cheapest test per frame. And (id of a code object, bytecode offset) -> (the code
# object, the line there formatted as a 1-tuple): keyed by offset, as f_lineno decodes the line table (a microsecond in
# a long function), and by id, as a code object's hash is recomputed from its contents every time
_own: set[str] = set()
_foreign: set[str] = set()
_formatted: dict[tuple[int, int], tuple[Any, tuple[str]]] = {}


def _user_line(frame: Any) -> tuple[str] | None:
  """The line of the first frame outside picograd, from `frame` up, as a 1-tuple."""
  own, foreign = _own, _foreign
  while frame is not None:
    filename = frame.f_code.co_filename
    if filename in own:
      frame = frame.f_back
      continue
    if filename not in foreign:
      (own if filename.startswith(_PACKAGE) else foreign).add(filename)
      continue
    code = frame.f_code
    if (entry := _formatted.get((id(code), frame.f_lasti))) is None or entry[0] is not code:
      entry = _formatted[(id(code), frame.f_lasti)] = (code, (f"{filename}:{frame.f_lineno}:{code.co_name}",))
    return entry[1]
  return None


def user_line(depth: int = 1) -> str | None:
  """`file:line:function` of the first frame outside the picograd package, from `depth` frames above this one (None if none)."""
  try:
    line = _user_line(sys._getframe(depth))
  except ValueError:
    return None
  return line[0] if line is not None else None


def _get(u: UOp) -> tuple[str, ...] | None:
  entry = _table.get(id(u))
  return entry.lines if entry is not None else None


def _set(u: UOp, lines: tuple[str, ...]) -> None:
  if (entry := _table.get(id(u))) is None:
    entry = _table[id(u)] = _Entry(u, _drop)
    entry.key = id(u)
  entry.lines = lines


def _merge(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
  extra = tuple(line for line in new if line not in old)
  return (old + extra)[:MAX_LINES] if extra else old


def _tag_below(root: UOp, lines: tuple[str, ...]) -> None:
  """Give `lines` to `root` (merged) and to every node below it that has none yet (the walk stops at tagged nodes)."""
  old = _get(root)
  if old is None: _set(root, lines)
  elif old is not lines and lines[0] not in old: _set(root, _merge(old, lines))
  table, stack = _table, list(root.src)
  while stack:
    node = stack.pop()
    if id(node) in table: continue
    _set(node, lines)
    stack.extend(node.src)


def record(uop: UOp, skip: int = 0) -> None:
  """A tensor was made from `uop`: tag it with the user's line. `skip`: how many frames above the caller's are known to be
  picograd's (the walk starts above them).

  Views and constants are left out (the frontend makes one or two per operation to broadcast, and they compute nothing,
  so no kernel needs their lines), and so are the nodes below: every tensor op's result is recorded itself."""
  if PROVENANCE.value and uop.op._value_ not in _UNRECORDED and (line := _user_line(sys._getframe(2 + skip))) is not None:
    if (entry := _table.get(id(uop))) is None: _set(uop, line)
    elif line[0] not in entry.lines: entry.lines = _merge(entry.lines, line)


def derive(out: UOp, grads: Iterable[UOp | None]) -> None:
  """The gradients flowing into `out`'s sources were built from it: their new nodes get `out`'s lines, marked backward."""
  if not PROVENANCE.value or (lines := _get(out)) is None: return
  marked = tuple(line if line.endswith(BACKWARD) else line + BACKWARD for line in lines)
  for g in grads:
    if g is not None and _get(g) is None: _tag_below(g, marked)


def carry(old: UOp, new: UOp) -> None:
  """`new` replaces `old` in a rebuilt graph: it inherits `old`'s lines."""
  if not PROVENANCE.value or (lines := _get(old)) is None: return
  have = _get(new)
  if have is None: _set(new, lines)
  elif have is not lines: _set(new, _merge(have, lines))


rebuild_hooks.append(carry)


def lines(uop: UOp) -> tuple[str, ...]:
  """The source lines that built `uop` (empty if unknown or PROVENANCE=0)."""
  return _get(uop) or ()


def lines_of(nodes: Iterable[UOp]) -> tuple[str, ...]:
  """The lines of the nodes that compute among `nodes` (a kernel's), each once: forward lines first, each part by file and line."""
  if not PROVENANCE.value: return ()
  seen: dict[str, None] = {}
  for n in nodes:
    if n.op._value_ in _UNRECORDED: continue  # a view or constant may carry the lines of a gradient built over it
    for line in _get(n) or (): seen.setdefault(line, None)
  return tuple(sorted(seen, key=_order))


def _order(line: str) -> tuple[bool, str, int]:
  """Forward lines before backward ones, then by file and line number."""
  path, lineno, _ = line.rsplit(":", 2)
  return (line.endswith(BACKWARD), path, int(lineno) if lineno.isdigit() else 0)


def short(line: str) -> str:
  """`dir/file.py:12:fn` -> `file.py:12:fn`, for one-line displays."""
  parts = line.rsplit(":", 2)
  return ":".join([os.path.basename(parts[0]), *parts[1:]]) if len(parts) == 3 else line


__all__ = ["PROVENANCE", "BACKWARD", "user_line", "record", "derive", "carry", "lines", "lines_of", "short"]
