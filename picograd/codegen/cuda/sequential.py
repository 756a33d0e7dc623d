"""The plans that still render the program in order while deciding (split and columns: reductions shared by several
blocks, combined through `__device__` scratch and atomic tickets). Flat, lanes, block and row are IR passes now (mapping.py)."""
from __future__ import annotations
from typing import Callable
from picograd.helpers import prod
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.emit import BLOCK, KernelSource, index_of
from picograd.codegen.cuda.ops import REDUCE_FUNCTORS, REG_TYPES, acc_update, c_const, render_alu, render_load, render_store


class Sequential:
  """Renders the program in order for the split and columns plans.

  Every global loop comes from the block index (split: G blocks per output) or from the thread index
  and the block index (columns: a thread per output, G blocks per group of outputs). A top-level
  reduction's loops are *strided*: split deals them out to all threads of the output's G blocks
  (thread t of block part takes iterations part*B + t, part*B + t + B*G, ...), columns to the output's
  G blocks (block part takes rows part, part + G, ...); the partials are combined through `__device__`
  scratch by the last block to finish (an atomic ticket). Every other loop runs sequentially inside its thread.
  """

  def __init__(self, program: list[UOp], ks: KernelSource, mode: str, split: int):
    self.program, self.ks, self.w, self.mode, self.split = program, ks, ks.w, mode, split
    self.names: dict[UOp, str] = {}
    self.end = {u.src[0]: i for i, u in enumerate(program) if u.op is Ops.ENDRANGE}  # RANGE -> index of its ENDRANGE
    self.rows = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
    self.parallel: set[UOp] = set()    # accumulators of strided reductions, combined across blocks at their LOAD
    self.loops = 0                     # loops open around the current instruction (strided or sequential)
    self.strided = 0                   # strided loops open: stores inside them are each thread's own
    self._launch()

  def _launch(self) -> None:
    """Grid, block and the output index."""
    w, ks = self.w, self.ks
    total = max(prod(r.arg[1] for r in self.rows), 1)
    if self.mode == "columns":
      ks.block = next(b for b in (BLOCK, 128, 64, 32) if total % b == 0)  # whole blocks: every thread takes a ticket
      ks.grid = (total // ks.block * self.split,)
      w(f"const int part = blockIdx.x % {self.split}, gid = blockIdx.x / {self.split} * {ks.block} + threadIdx.x;")
      index_of(self.rows, "gid", w, self.names)
      return
    ks.grid = (total * self.split,)
    w(f"const int out = blockIdx.x / {self.split}, part = blockIdx.x % {self.split};")
    index_of(self.rows, "out", w, self.names)

  def render(self) -> None: self.walk(0, len(self.program))

  def val(self, u: UOp) -> str: return c_const(u.arg, u.dtype) if u.op is Ops.CONST else self.names[u]

  def walk(self, lo: int, hi: int) -> None:
    """Render program[lo:hi]; a loop is rendered with its body, up to its ENDRANGE (so a rendered loop's own ENDRANGE is skipped)."""
    i = lo
    while i < hi:
      u = self.program[i]
      i = self._RENDER.get(u.op, Sequential._value)(self, u, i + 1)

  def _skip(self, u: UOp, i: int) -> int: return i  # PARAM and CONST are inlined where used

  def _range(self, u: UOp, i: int) -> int:
    if u in self.names: return i  # an output loop, or bound by the strided loop around it
    return self.sequential_loop(u, i, self.end[u])

  def _define_acc(self, u: UOp, i: int) -> int:
    acc = self.names[u] = self.w.fresh("acc")
    self.w(f"{REG_TYPES[u.dtype]} {acc} = {c_const(u.arg[0], u.dtype)};")
    if self.loops == 0:
      self.parallel.add(u)
      # several accumulators over the same loops (unrolled copies) are declared together; the last opens the loop
      if self.program[i] is u.src[0]: return self.strided_loop(list(u.src), i + len(u.src), self.end[u.src[0]])
    return i

  def _accumulate(self, u: UOp, i: int) -> int:
    self.w(acc_update(u.arg, u.src[0].dtype, self.names[u.src[0]], self.val(u.src[1])))
    return i

  def _load(self, u: UOp, i: int) -> int:
    if u.src[0].op is Ops.DEFINE_ACC:
      acc = u.src[0]
      if acc in self.parallel: self.combine(acc)
      self.names[u] = self.names[acc]
    else: self._define(u, render_load(u.src[0], self.val(u.src[1])))
    return i

  def _store(self, u: UOp, i: int) -> int:
    line = render_store(u.src[0], self.val(u.src[1]), self.val(u.src[2]))
    self.w(f"if (threadIdx.x == 0) {line}" if self.mode == "split" and not self.strided else line)
    return i

  def _value(self, u: UOp, i: int) -> int:
    """Any ALU op, from the ALU table."""
    self._define(u, render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in self.w.wrapping))
    return i

  def _define(self, u: UOp, code: str) -> None:
    n = self.names[u] = self.w.fresh("v")
    self.w(f"const {REG_TYPES[u.dtype]} {n} = {code};")

  # op -> handler(self, instruction, index after it) -> index where the walk goes on; ALU ops fall to `_value`
  _RENDER: dict[Ops, Callable[["Sequential", UOp, int], int]] = {
    Ops.PARAM: _skip, Ops.CONST: _skip, Ops.ENDRANGE: _skip, Ops.RANGE: _range, Ops.DEFINE_ACC: _define_acc,
    Ops.ACCUMULATE: _accumulate, Ops.LOAD: _load, Ops.STORE: _store}

  def sequential_loop(self, r: UOp, lo: int, hi: int) -> int:
    """`for` over one range in every thread; returns where the walk goes on (past the ENDRANGE at `hi`)."""
    n = self.names[r] = self.w.fresh("r")
    self.w.open(f"for ({REG_TYPES[r.dtype]} {n} = 0; {n} < {r.arg[1]}; {n}++)")
    self.loops += 1
    self.walk(lo, hi)
    self.loops -= 1
    self.w.close()
    return hi + 1

  def strided_loop(self, ranges: list[UOp], lo: int, hi: int) -> int:
    """One loop over all of `ranges` (outermost first), its iterations dealt out to the blocks (and split's threads)."""
    w, size = self.w, prod(r.arg[1] for r in ranges)
    it, j = "long long" if size >= 2**31 else "int", w.fresh("j")
    if self.mode == "columns": start, step = "part", self.split
    else: start, step = f"part * {self.ks.block} + threadIdx.x", self.ks.block * self.split
    w("#pragma unroll 4")
    w.open(f"for ({it} {j} = {start}; {j} < {size}; {j} += {step})")
    self.loops += 1
    self.strided += 1
    index_of(ranges, j, w, self.names)
    self.walk(lo, hi)
    self.loops -= 1
    self.strided -= 1
    w.close()
    return hi + 1

  def combine(self, acc: UOp) -> None:
    """After a strided reduction loop: combine the partials of the threads and blocks."""
    if self.mode == "columns": self.combine_columns(acc)
    else: _block_combine(acc, self.names, self.ks, self.split)

  def combine_columns(self, acc: UOp) -> None:
    """Each thread's partial to scratch; the last of the `split` blocks of a group of outputs adds them in block order."""
    w, ks, a, t, S = self.w, self.ks, self.names[acc], REG_TYPES[acc.dtype], self.split
    total, groups = ks.grid[0] // S * ks.block, ks.grid[0] // S
    part, count, last = w.fresh("pg_part"), w.fresh("pg_count"), w.fresh("last")
    ks.globals += [f"__device__ {t} {part}[{S * total}];", f"__device__ unsigned int {count}[{groups}];"]
    w(f"{part}[part * {total} + gid] = {a};")
    w("__threadfence();  // publish the partials before taking a ticket")
    w("__syncthreads();")
    w(f"__shared__ bool {last};")
    w(f"if (threadIdx.x == 0) {last} = atomicAdd(&{count}[blockIdx.x / {S}], 1u) == {S - 1};")
    w("__syncthreads();")
    w(f"if (!{last}) return;")
    w("__threadfence();")
    w(f"if (threadIdx.x == 0) {count}[blockIdx.x / {S}] = 0;  // ready for the next launch")
    w(f"{a} = {c_const(acc.arg[0], acc.dtype)};")
    w("#pragma unroll 8")
    w(f"for (int q = 0; q < {S}; q++) {acc_update(acc.arg[1], acc.dtype, a, f'__ldcg(&{part}[q * {total} + gid])')}")


def _block_combine(acc: UOp, names: dict[UOp, str], ks: KernelSource, split: int) -> None:
  """After a block-parallel reduction loop: combine the threads' partials (and, when split, the blocks')."""
  w, a, t, op = ks.w, names[acc], REG_TYPES[acc.dtype], acc.arg[1]
  smem = w.fresh("red")
  w(f"__shared__ {t} {smem}[{ks.block // 32}];")
  w(f"{a} = pg_block_reduce({a}, {REDUCE_FUNCTORS[op]}, {smem});")
  names[acc] = a
  if split == 1: return
  total = ks.grid[0]
  part, count = w.fresh("pg_part"), w.fresh("pg_count")
  ks.globals += [f"__device__ {t} {part}[{total}];", f"__device__ unsigned int {count}[{total // split}];"]
  last = w.fresh("last")
  w(f"__shared__ bool {last};")
  w.open("if (threadIdx.x == 0)")
  w(f"{part}[blockIdx.x] = {a};")
  w("__threadfence();  // publish the partial before taking a ticket")
  w(f"{last} = atomicAdd(&{count}[out], 1u) == {split - 1};")
  w.close()
  w("__syncthreads();")
  w(f"if (!{last}) return;")
  w("__threadfence();")
  w(f"{a} = {c_const(acc.arg[0], acc.dtype)};")
  w(f"for (int q = threadIdx.x; q < {split}; q += {ks.block}) {acc_update(op, acc.dtype, a, f'__ldcg(&{part}[out * {split} + q])')}")
  w(f"{a} = pg_block_reduce({a}, {REDUCE_FUNCTORS[op]}, {smem});")
  w(f"if (threadIdx.x == 0) {count}[out] = 0;  // ready for the next launch")
