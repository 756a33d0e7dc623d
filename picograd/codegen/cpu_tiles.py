"""What the CPU's flash renderers share (codegen layer): `TileRenderer`, the base of cpu_flash.py's forward and
cpu_flash_bwd.py's recomputed-score sums (panels packed once per batch, the function text). Their elementwise work
(a score's mask, dropout's gate) is printed keys along the lanes by cpu_vector.py's `Vector`."""
from __future__ import annotations
from typing import Any, Callable
from picograd.ir.ops import UOp
from picograd.codegen.llvm import LLVMRenderer, ll_type
from picograd.codegen.gemm_match import vector_lanes
from picograd.codegen.cpu_gemm import GemmRenderer


class TileRenderer(GemmRenderer):
  """What the flash renderers share (this module's forward, cpu_flash_bwd's recomputed-score sums): one LLVM function with
  the generic renderer's signature and slice entry, the GEMM renderer's loop and value helpers, packed panels on the stack
  or the heap, packed again only when a tile's batch changes."""

  def __init__(self, name: str, f: Any, params: list[UOp]):  # f: a Flash or a cpu_flash_bwd.Recomputed (`.mr` rows a tile)
    LLVMRenderer.__init__(self, name, [])
    self.f, self.params, self.lanes, self.mr = f, params, vector_lanes(), f.mr
    self.ordered, self.accumulated, self.checked = set(), set(), False
    self.steps: dict[str, int] = {}
    self.freed: list[str] = []  # panels on the heap

  def ptr(self, buf: str, index: str | int) -> str: return self.i64(f"getelementptr inbounds float, ptr {buf}, i64 {index}")

  def splat_f(self, name: str) -> str:
    vt = f"<{self.lanes} x float>"
    one = self.i64(f"insertelement {vt} poison, float {name}, i64 0")
    return self.i64(f"shufflevector {vt} {one}, {vt} poison, <{self.lanes} x i32> zeroinitializer")

  def panel(self, name: str, floats: int, heap: bool) -> None:
    """A buffer of `floats` for packed operands: an alloca, or aligned_alloc'ed (freed at the end) when they are too big."""
    if not heap: return self.allocas.append(f"{name} = alloca [{floats} x float], align 64")
    self.decls |= {"declare ptr @aligned_alloc(i64, i64)", "declare void @free(ptr)"}
    self.allocas.append(f"{name} = call ptr @aligned_alloc(i64 64, i64 {4 * floats})")
    self.freed.append(name)

  def pack_once(self, batch: str, pack: Callable[[], None]) -> None:
    """Pack (`pack`) where this tile's batch is not the one packed last (a thread's tiles run in order: once per batch)."""
    prev = self.i64("load i64, ptr %packed")
    self.emit(f"br i1 {self.i64(f'icmp ne i64 {prev}, {batch}')}, label %repack, label %packed.ok")
    self.label("repack")
    pack()
    self.emit(f"store i64 {batch}, ptr %packed")
    self.emit("br label %packed.ok")
    self.label("packed.ok")

  def pack_panel(self, buf: str, value: UOp, values: dict[UOp, str], s: UOp, d: UOp, spad: int, dpad: int, tag: str) -> None:
    """`value` (along s and d: a row of v, of k, of dO, of q) into buf[s * dpad + d] for the weighted sums' tiles to read a
    block's rows at unit stride; zeros past s's and d's ends. `tag` keeps the loops' labels apart."""
    S, ND = s.arg[1], d.arg[1]
    vs = self.loop(f"vs{tag}", "0", str(S))
    vd = self.loop(f"vd{tag}", "0", str(ND))
    self.emit(f"store float {self._value(value, {**values, s: vs, d: vd})}, ptr {self.ptr(buf, self.add(self.mul(vs, dpad), vd))}")
    self.close(f"vd{tag}")
    if dpad > ND:
      vz = self.loop(f"vz{tag}", str(ND), str(dpad))
      self.emit(f"store float 0.0, ptr {self.ptr(buf, self.add(self.mul(vs, dpad), vz))}")
      self.close(f"vz{tag}", vectorize=False)
    self.close(f"vs{tag}")
    if spad > S:
      wz = self.loop(f"wz{tag}", str(S * dpad), str(spad * dpad))
      self.emit(f"store float 0.0, ptr {self.ptr(buf, wz)}")
      self.close(f"wz{tag}")

  def block_lanes(self, first: str, loop: UOp) -> tuple[list[str], list[str | None]]:
    """`loop`'s values in the two vectors of a block of it starting at `first` (an i64), and which lanes are inside the loop
    (None when every block is whole)."""
    L, lt = self.lanes, ll_type(loop.dtype)
    vecs: list[str] = []
    valid: list[str | None] = []
    for h in range(2):
      vecs.append(self.lane_values(self.narrow(self.add(first, h * L), loop), lt))
      valid.append(self.i64(f"icmp slt <{L} x {lt}> {vecs[h]}, splat ({lt} {loop.arg[1]})") if loop.arg[1] % (2 * L) else None)
    return vecs, valid

  def function(self) -> str:
    """The whole LLVM module text once `lines` hold the body."""
    args = ", ".join(f"ptr noalias align 16 %p{p.arg[0]}" for p in self.params)
    head = [f"define void @{self.name}({args}, i64 %start, i64 %end) #0 {{", "entry:"] + ["  " + a for a in self.allocas]
    attrs = ('attributes #0 = { nounwind "no-trapping-math"="true" "prefer-vector-width"="512" "min-legal-vector-width"="512" '
             '"probe-stack"="inline-asm" }')
    tail = self._slice_entry(len(self.params)) + [attrs] + self.loop_md
    frees = [f"  call void @free(ptr {name})" for name in self.freed]
    return "\n".join(sorted(self.decls) + [""] + head + self.lines + frees + ["  ret void", "}"] + tail)


__all__ = ["TileRenderer"]
