"""Writing CUDA C (codegen layer): indented lines with fresh names, and the threads of a block."""
from __future__ import annotations
from picograd.ir.ops import UOp


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


BLOCK = 256  # threads of a block, for the plans that do not choose their own
