"""The plans that render the program in order: flat (a thread per output), block, split, row and columns, whose
reductions are shared by the threads of a group and combined with warp shuffles, shared memory and atomic tickets."""
from __future__ import annotations
from typing import Callable
from picograd.helpers import ceildiv, prod
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import contiguous_in, row_split
from picograd.codegen.cuda.emit import BLOCK, KernelSource, index_of
from picograd.codegen.cuda.ops import REDUCE_FUNCTORS, REG_TYPES, VEC4_TYPES, acc_update, c_const, render_alu, render_load, render_store


class Sequential:
  """Renders the program in order for the flat, block, split, row and columns plans.

  The row loops (every global loop, or those before the first reduction: `row_split`) come from the
  thread index (flat: a thread per row) or the block index (block, split: a block per output; row: a
  block or a warp per row). The plan's *strided* loops, a top-level reduction's loops (block, split,
  row) and the column loops (row), are shared by the `group` threads of a row: thread t takes
  iterations t, t+group, ...; a strided reduction ends with a combine that gives every thread the
  result, so a later reduction or the columns can use it. In the row plan a strided loop whose
  innermost range is a multiple of 4 and which has a 16-byte-aligned contiguous access takes four
  neighbouring iterations per step (`lane` 0..3, the body rendered four times) with float4 loads and
  stores. Every other loop runs sequentially inside its thread. The columns plan has a thread per
  output (a group of one) whose top-level reduction loop is strided over the `split` blocks instead.
  """

  def __init__(self, program: list[UOp], ks: KernelSource, mode: str, split: int = 1, group: int = 0):
    self.program, self.ks, self.w, self.mode, self.split = program, ks, ks.w, mode, split
    self.names: dict[UOp, str] = {}
    self.end = {u.src[0]: i for i, u in enumerate(program) if u.op is Ops.ENDRANGE}  # RANGE -> index of its ENDRANGE
    self.rows, self.cols = row_split(program) if mode in ("flat", "row") else ([u for u in program if u.op is Ops.RANGE and
                                                                                   u.arg[2] == "global"], [])
    self.parallel: set[UOp] = set()    # accumulators of strided reductions, combined across the group at their LOAD
    self.loops = 0                     # loops open around the current instruction (strided or sequential)
    self.strided = 0                   # strided loops open: stores inside them are each thread's own
    self.lane: int | None = None       # which of four vector lanes is being rendered
    self.inner: UOp | None = None      # the range the lanes step along
    self.vectors: dict[UOp, str] = {}  # a vector load's register, issued by lane 0
    self.pending: dict[UOp, tuple[str, list[str]]] = {}  # a vector store: lane 0's index, the lanes' values so far
    self.tid = "threadIdx.x"           # the thread's place in its group
    self.group = self._launch(group)

  def _launch(self, group: int) -> int:
    """Grid, block and the row index; returns how many threads share a row's strided loops."""
    w, ks = self.w, self.ks
    total = max(prod(r.arg[1] for r in self.rows), 1)
    if self.mode == "flat":
      ks.block = min(BLOCK, max(32, 1 << (total - 1).bit_length()))
      ks.grid = (ceildiv(total, ks.block),)
      it = "long long" if total >= 2**31 else "int"
      w(f"const {it} gid = ({it})blockIdx.x * {ks.block} + threadIdx.x;")
      w(f"if (gid >= {total}) return;")
      index_of(self.rows, "gid", w, self.names)
      return 1
    if self.mode == "row" and group == 32:
      per = ks.block // 32  # a warp per row, several rows per block
      ks.grid = (ceildiv(total, per),)
      w(f"const int row = blockIdx.x * {per} + (threadIdx.x >> 5), lane = threadIdx.x & 31;")
      if total % per: w(f"if (row >= {total}) return;  // a whole warp leaves: its shuffles need no absent lane")
      self.tid = "lane"
      index_of(self.rows, "row", w, self.names)
      return 32
    if self.mode == "columns":
      ks.block = next(b for b in (BLOCK, 128, 64, 32) if total % b == 0)  # whole blocks: every thread takes a ticket
      ks.grid = (total // ks.block * self.split,)
      w(f"const int part = blockIdx.x % {self.split}, gid = blockIdx.x / {self.split} * {ks.block} + threadIdx.x;")
      index_of(self.rows, "gid", w, self.names)
      return 1
    if self.mode == "row": ks.block = group
    ks.grid = (total * self.split,)
    w(f"const int out = blockIdx.x{f' / {self.split}' if self.split > 1 else ''};")
    if self.split > 1: w(f"const int part = blockIdx.x % {self.split};")
    index_of(self.rows, "out", w, self.names)
    return ks.block

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
    if u in self.names: return i  # a row loop, or bound by the strided loop around it
    if u.arg[2] == "global" and self.mode == "row": return self.strided_loop(self.cols, i, self.end[u])
    return self.sequential_loop(u, i, self.end[u])

  def _define_acc(self, u: UOp, i: int) -> int:
    acc = self.names[u] = self.w.fresh("acc")
    self.w(f"{REG_TYPES[u.dtype]} {acc} = {c_const(u.arg[0], u.dtype)};")
    if self.mode != "flat" and self.loops == 0:
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
    elif (vec := self.vector_load(u)) is not None: self.names[u] = vec
    else: self._define(u, render_load(u.src[0], self.val(u.src[1])))
    return i

  def _store(self, u: UOp, i: int) -> int:
    self.store(u)
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
    """One loop over all of `ranges` (outermost first), its iterations dealt out to the group's threads."""
    w, size = self.w, prod(r.arg[1] for r in ranges)
    width = 4 if self.mode == "row" and self._vectorizable(ranges, lo, hi) else 1
    it, j = "long long" if size >= 2**31 else "int", w.fresh("j")
    if self.mode == "columns": start, step = "part", self.split
    elif self.split > 1: start, step = f"part * {self.ks.block} + {self.tid}", self.ks.block * self.split
    else: start, step = self.tid, self.group
    w(f"#pragma unroll {2 if width > 1 else 4}")  # a four-lane body is already four iterations
    w.open(f"for ({it} {j} = {start}; {j} < {size // width}; {j} += {step})")
    self.loops += 1
    self.strided += 1
    if width == 1:
      index_of(ranges, j, w, self.names)
      self.walk(lo, hi)
    else:
      inner = self.inner = ranges[-1]
      quad = UOp(Ops.RANGE, inner.dtype, (), (-1, inner.arg[1] // 4, "global"))  # stand-in: which group of four
      env: dict[UOp, str] = {}
      index_of(ranges[:-1] + [quad], j, w, env)
      base = env.pop(quad)
      self.names.update(env)
      for q in range(4):
        self.lane, self.names[inner] = q, f"(({REG_TYPES[inner.dtype]})({base} * 4 + {q}))"
        self.walk(lo, hi)
      self.lane = self.inner = None
      self.vectors.clear()
    self.loops -= 1
    self.strided -= 1
    w.close()
    return hi + 1

  def _vectorizable(self, ranges: list[UOp], lo: int, hi: int) -> bool:
    """Four lanes when the body has no loop of its own and some access moves by one, 16-byte aligned, along the innermost range."""
    body = self.program[lo:hi]
    if ranges[-1].arg[1] % 4 or any(u.op is Ops.DEFINE_ACC or (u.op is Ops.RANGE and u not in ranges) for u in body): return False
    return any(self._vector_access(u, ranges[-1]) for u in body if u.op in (Ops.LOAD, Ops.STORE))

  @staticmethod
  def _vector_access(u: UOp, inner: UOp) -> bool:
    return u.src[0].op is Ops.PARAM and u.src[0].dtype in VEC4_TYPES and contiguous_in(u.src[1], inner, 4)

  def vector_load(self, u: UOp) -> str | None:
    """Lane `lane` of a 16-byte load of four neighbours, issued once by lane 0; None when `u` is not such a load."""
    if self.lane is None or self.inner is None or not self._vector_access(u, self.inner): return None
    if self.lane == 0:
      vec = self.vectors[u] = self.w.fresh("vec")
      vt = VEC4_TYPES[u.src[0].dtype]
      self.w(f"const {vt} {vec} = *reinterpret_cast<const {vt}*>(p{u.src[0].arg[0]} + {self.val(u.src[1])});")
    return f"{self.vectors[u]}.{'xyzw'[self.lane]}"

  def store(self, u: UOp) -> None:
    """A store: by one thread of the group outside strided loops (they all hold the value), one float4 for four lanes."""
    param, idx, value = u.src
    if self.lane is not None and self.inner is not None and self._vector_access(u, self.inner):
      if self.lane == 0: self.pending[u] = (self.val(idx), [])
      self.pending[u][1].append(self.val(value))
      if self.lane == 3:
        at, vals = self.pending.pop(u)
        vt = VEC4_TYPES[param.dtype]
        self.w(f"*reinterpret_cast<{vt}*>(p{param.arg[0]} + {at}) = make_{vt}({', '.join(vals)});")
      return
    line = render_store(param, self.val(idx), self.val(value))
    self.w(f"if ({self.tid} == 0) {line}" if self.mode not in ("flat", "columns") and not self.strided else line)

  def combine(self, acc: UOp) -> None:
    """After a strided reduction loop: combine the group's partials (and, when split, the blocks')."""
    if self.group == 32 and self.mode == "row":
      a = self.names[acc]
      self.w(f"{a} = pg_warp_reduce({a}, {REDUCE_FUNCTORS[acc.arg[1]]});")
    elif self.mode == "columns": self.combine_columns(acc)
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
