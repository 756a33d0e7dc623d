"""CUDA C from a mapped program (codegen layer): one statement per instruction, from an `{Ops: fn}` table.

The mapping passes (`mapping.py`) decided how the kernel runs (blocks, threads, dealt-out loops, lanes, combines);
this file only prints what the linearized program says, in order. Values are `const` locals named once; constants
and parameters are inlined where used; a 16-byte load is a vector local whose lanes (GEP) are read as `.x` .. `.w`.
"""
from __future__ import annotations
from typing import Callable
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import data_values
from picograd.codegen.cuda.emit import Writer
from picograd.codegen.cuda.ops import REDUCE_FUNCTORS, REG_TYPES, VEC4_TYPES, acc_update, c_const, render_alu, render_load, render_store

_SPECIAL_C = {"block": "blockIdx.x", "thread": "threadIdx.x"}


class TableRenderer:
  """Walks a linear program once; `launch` gives (grid, block) from its SPECIALs."""

  def __init__(self, program: list[UOp]):
    self.program = program
    self.w = Writer()
    self.w.wrapping = data_values(program)
    self.names: dict[UOp, str] = {}
    self.globals: list[str] = []  # file-scope declarations (`__device__` scratch)

  def launch(self) -> tuple[tuple[int, ...], int]:
    sizes = {u.arg[0]: u.arg[1] for u in self.program if u.op is Ops.SPECIAL}
    return (sizes.get("block", 1),), sizes.get("thread", 1)

  def render(self) -> list[str]:
    for u in self.program: self._RENDER.get(u.op, TableRenderer._alu)(self, u)
    return self.w.lines

  def val(self, u: UOp) -> str: return c_const(u.arg, u.dtype) if u.op is Ops.CONST else self.names[u]

  def _define(self, u: UOp, code: str, prefix: str = "v") -> None:
    n = self.names[u] = self.w.fresh(prefix)
    self.w(f"const {REG_TYPES[u.dtype]} {n} = {code};")

  def _skip(self, u: UOp) -> None: pass  # PARAM and CONST are inlined where used
  def _alu(self, u: UOp) -> None:
    self._define(u, render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in self.w.wrapping))
  def _special(self, u: UOp) -> None: self._define(u, f"(int){_SPECIAL_C[u.arg[0]]}", "i")
  def _guard(self, u: UOp) -> None: self.w(f"if (!{self.val(u.src[0])}) return;")

  def _range(self, u: UOp) -> None:
    n = self.names[u] = self.w.fresh("r")
    if len(u.arg) > 3: self.w(f"#pragma unroll {u.arg[3]}")
    self.w.open(f"for ({REG_TYPES[u.dtype]} {n} = 0; {n} < {u.arg[1]}; {n}++)")

  def _endrange(self, u: UOp) -> None: self.w.close()

  def _define_acc(self, u: UOp) -> None:
    acc = self.names[u] = self.w.fresh("acc")
    self.w(f"{REG_TYPES[u.dtype]} {acc} = {c_const(u.arg[0], u.dtype)};")

  def _accumulate(self, u: UOp) -> None:
    if u.arg is Ops.RESCALED:  # online softmax (codegen/online.py): the sum so far rescaled, then the term added
      acc = self.names[u.src[0]]
      self.w(f"{acc} = {acc} * {self.val(u.src[2])} + {self.val(u.src[1])};")
    else: self.w(acc_update(u.arg, u.src[0].dtype, self.names[u.src[0]], self.val(u.src[1])))

  def _load(self, u: UOp) -> None:
    param, *idx = u.src
    if param.op is Ops.DEFINE_ACC: self.names[u] = self.names[param]
    elif param.op is Ops.DEFINE_GLOBAL: self._define(u, f"__ldcg(&{self.names[param]}[{self.val(idx[0])}])")  # written by other SMs
    elif param.op is Ops.DEFINE_LOCAL: self._define(u, f"{self.names[param]}[{self.val(idx[0])}]")
    elif u.arg == 4:
      vt = VEC4_TYPES[param.dtype]
      n = self.names[u] = self.w.fresh("vec")
      self.w(f"const {vt} {n} = *reinterpret_cast<const {vt}*>(p{param.arg[0]} + {self.val(idx[0])});")
    else: self._define(u, render_load(param, self.val(idx[0])))

  def _gep(self, u: UOp) -> None: self.names[u] = f"{self.names[u.src[0]]}.{'xyzw'[u.arg]}"
  def _vectorize(self, u: UOp) -> None: self.names[u] = f"make_{VEC4_TYPES[u.dtype]}({', '.join(self.val(s) for s in u.src)})"

  def _store(self, u: UOp) -> None:
    param, idx, value, *gate = u.src
    if value.op is Ops.VECTORIZE:
      vt, at = VEC4_TYPES[param.dtype], f"p{param.arg[0]}" if param.op is Ops.PARAM else self.names[param]
      line = f"*reinterpret_cast<{vt}*>({at} + {self.val(idx)}) = {self.val(value)};"
    elif param.op in (Ops.DEFINE_GLOBAL, Ops.DEFINE_LOCAL): line = f"{self.names[param]}[{self.val(idx)}] = {self.val(value)};"
    else: line = render_store(param, self.val(idx), self.val(value))
    self.w(f"if ({self.val(gate[0])}) {line}" if gate and not (gate[0].op is Ops.CONST and gate[0].arg) else line)

  def _define_local(self, u: UOp) -> None:
    n = self.names[u] = self.w.fresh("red")
    self.w(f"__shared__ __align__(16) {REG_TYPES[u.dtype]} {n}[{u.arg[1]}];")

  def _define_global(self, u: UOp) -> None:
    n = self.names[u] = self.w.fresh("pg_scratch")
    self.globals.append(f"__device__ {REG_TYPES[u.dtype]} {n}[{u.arg[1]}];")

  def _barrier(self, u: UOp) -> None: self.w("__syncthreads();" if u.arg == "block" else "__threadfence();")

  def _atomic_add(self, u: UOp) -> None:
    buf, idx, value, gate, *_ = u.src
    self._define(u, f"{self.val(gate)} ? atomicAdd(&{self.names[buf]}[{self.val(idx)}], {self.val(value)}) : {c_const(0, u.dtype)}")

  def _group_reduce(self, u: UOp) -> None:
    op, width = u.arg
    partial, *local = u.src
    if width == 32: self._define(u, f"pg_warp_reduce({self.val(partial)}, {REDUCE_FUNCTORS[op]})")
    else: self._define(u, f"pg_block_reduce({self.val(partial)}, {REDUCE_FUNCTORS[op]}, {self.names[local[0]]})")

  # op -> how it is printed; every ALU op falls to `_alu` (the ALU table of ops.py)
  _RENDER: dict[Ops, Callable[["TableRenderer", UOp], None]] = {
    Ops.PARAM: _skip, Ops.CONST: _skip, Ops.SPECIAL: _special, Ops.GUARD: _guard, Ops.RANGE: _range, Ops.ENDRANGE: _endrange,
    Ops.DEFINE_ACC: _define_acc, Ops.ACCUMULATE: _accumulate, Ops.LOAD: _load, Ops.GEP: _gep, Ops.VECTORIZE: _vectorize,
    Ops.STORE: _store, Ops.DEFINE_LOCAL: _define_local, Ops.GROUP_REDUCE: _group_reduce, Ops.DEFINE_GLOBAL: _define_global,
    Ops.BARRIER: _barrier, Ops.ATOMIC_ADD: _atomic_add}
