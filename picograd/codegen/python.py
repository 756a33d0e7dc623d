"""The PYTHON renderer: a linearized kernel becomes numpy code, the reference the other backends are tested against.

Every RANGE becomes its own broadcast axis, so a loop nest turns into whole-array numpy
operations over the same index expressions the compiled backends use: LOAD is fancy indexing,
ACCUMULATE a numpy reduction over the reduction's axes, STORE an indexed assignment. It runs
the very same lowered kernel, just slowly and obviously. A kernel with CHECKs takes its error word (an int64
array of one) as a last argument `err`.

It also runs kernels mapped onto a GPU (codegen/cuda/mapping.py), every thread at once: a SPECIAL (block or thread
index) is one more broadcast axis, a GROUP_REDUCE reduces groups of neighbouring threads along the thread axis, a
GUARD masks what later loads read and stores write, 16-byte loads are four (or eight) loads, shared memory has one array per
block, barriers are implicit (each statement runs for all threads before the next), a cp.async copy lands at the wait
that covers it (as late as a GPU may: a read of its slot before then sees the old contents), an ATOMIC_ADD serves the
threads in index order, and an MMA (WGMMA) computes each lane's outputs from the shared tiles its FRAGMENTs name. A loop that
holds a BARRIER (a matrix product's k-steps, which reuse their shared-memory tiles) runs as a Python loop, one
iteration at a time; its accumulators add each iteration's part. Tests use it to check the GPU mapping passes with no GPU.
"""
from __future__ import annotations
from typing import Callable
from picograd.dtype import dtypes
from picograd.helpers import TensorMapSpec
from picograd.ir.ops import UOp, Ops

NP_BINARY = {Ops.ADD: "np.add", Ops.MUL: "np.multiply", Ops.AND: "np.bitwise_and", Ops.OR: "np.bitwise_or", Ops.XOR: "np.bitwise_xor",
             Ops.CMPLT: "np.less", Ops.CMPNE: "np.not_equal", Ops.SHL: "np.left_shift", Ops.SHR: "np.right_shift",
             Ops.MAX: "np.maximum", Ops.MOD: "c_mod", Ops.IDIV: "c_div"}
NP_UNARY = {Ops.EXP2: "np.exp2", Ops.LOG2: "np.log2", Ops.SIN: "np.sin", Ops.SQRT: "np.sqrt", Ops.RECIPROCAL: "reciprocal", Ops.NEG: "np.negative"}


def _np_dtype(dt) -> str:
  # bfloat16 values live in float32 arrays (rounded at casts and stores); a dtype object, so `.type(v)` makes constants
  return "np.dtype('<f4')" if dt == dtypes.bfloat16 else f"np.dtype({dt.np.str!r})"


def _serial_loops(program: list[UOp]) -> set[UOp]:
  """The loops holding a BARRIER: their iterations share memory in turn, so they run one at a time."""
  open_loops: list[UOp] = []
  serial: set[UOp] = set()
  for u in program:
    if u.op is Ops.RANGE: open_loops.append(u)
    elif u.op is Ops.ENDRANGE: open_loops.pop()
    elif u.op is Ops.BARRIER: serial.update(open_loops)
  return serial


def _axes(program: list[UOp], serial: set[UOp]) -> tuple[dict[UOp, int], int]:
  """A broadcast axis for every RANGE (but the `serial` ones) and SPECIAL, and how many there are. A loop's axis is free
  again after its ENDRANGE (what was computed inside the loop is used after it only through accumulators, which have size
  1 there), so a kernel with many reductions in sequence stays within numpy's 64 dimensions."""
  axis: dict[UOp, int] = {}
  free: list[int] = []
  ndim = 0
  for u in program:
    if u.op is Ops.RANGE and u in serial: continue
    if u.op in (Ops.RANGE, Ops.SPECIAL):
      if free: axis[u] = free.pop()
      else: axis[u], ndim = ndim, ndim + 1
    elif u.op is Ops.ENDRANGE and u.src[0] in axis: free.append(axis[u.src[0]])
  return axis, ndim


class _Writer:
  """The state of one rendering: names of values, broadcast axes, the lines, and the GUARD mask so far."""
  def __init__(self, program: list[UOp]):
    self.serial = _serial_loops(program)
    self.axis, self.ndim = _axes(program, self.serial)
    self.depth = 1  # indentation: one more inside each serial loop
    self.open_serial: list[UOp] = []  # the serial loops around the instruction being written, outermost first
    self.alive_outside: list[str] = []  # `alive` outside each open serial loop (inside one with a trip count, blocks past it are not)
    self.names: dict[UOp, str] = {}
    self.lines: list[str] = []
    self.alive = "True"  # where the threads that a GUARD let through are (mapped kernels)

  def shape_along(self, u: UOp) -> tuple[int, ...]: return tuple(u.arg[1] if self.axis[u] == k else 1 for k in range(self.ndim))
  def src(self, u: UOp) -> list[str]: return [self.names.get(s, "") for s in u.src]


def _param(w: _Writer, u: UOp, v: str) -> str | None:
  w.names[u] = f"p{u.arg[0]}"
  if u.dtype == dtypes.bfloat16: w.lines.append(f"  p{u.arg[0]}f = bf16_to_f32(p{u.arg[0]})")
  return None


def _accumulate(w: _Writer, u: UOp, v: str) -> str | None:
  acc, value = u.src[:2]
  axes = tuple(w.axis[r] for r in acc.src if r in w.axis)
  if u.arg is Ops.RESCALED and w.serial & set(acc.src):
    # a loop run one iteration at a time (the CUDA flash plan's key tiles): the sum so far rescaled, then the term added
    a = w.names[acc]
    w.lines.append(f"  {a} = " + _live(w, acc, f"{w.names[value]} if {a} is None else {a} * {w.names[u.src[2]]} + {w.names[value]}"))
    return None
  if u.arg is Ops.RESCALED:
    # acc = acc * scale_j + term_j over the loop: the sum of each term times the scales of the steps after it
    (axis,), n = axes, acc.src[0].arg[1]
    extent = w.shape_along(acc.src[0])
    w.lines.append(f"  after = np.flip(np.cumprod(np.flip(full({w.names[u.src[2]]}, {extent}), {axis}), axis={axis}), {axis})")
    w.lines.append(f"  after = np.concatenate([np.take(after, np.arange(1, {n}), axis={axis}), "
                   f"np.ones_like(np.take(after, [0], axis={axis}))], axis={axis})")
    w.lines.append(f"  {w.names[acc]} = np.sum(full({w.names[value]}, {extent}) * after, axis={axis}, keepdims=True)")
    return None
  fn = "np.sum" if u.arg is Ops.ADD else "np.max"
  extra = f", initial={_np_dtype(acc.dtype)}.type({acc.arg[0]!r})" if u.arg is Ops.MAX else ""
  cast = "" if acc.dtype != dtypes.bool else ".astype(bool)"
  extent = tuple(next((r.arg[1] for r in acc.src if w.axis.get(r) == k), 1) for k in range(w.ndim))
  dtype_arg = f", dtype={_np_dtype(acc.dtype)}" if u.arg is Ops.ADD and acc.dtype != dtypes.bool else ""
  part = f"{fn}(full({w.names[value]}, {extent}), axis={axes}, keepdims=True{dtype_arg}{extra}){cast}"
  if not w.serial & set(acc.src): w.lines.append(f"  {w.names[acc]} = {part}")
  else:  # inside a serial loop: this iteration's part joins the iterations before it
    both = "np.maximum" if u.arg is Ops.MAX else "np.logical_or" if acc.dtype == dtypes.bool else "np.add"
    w.lines.append(f"  {w.names[acc]} = " + _live(w, acc, f"{part} if {w.names[acc]} is None else {both}({w.names[acc]}, {part})"))
  return None


def _live(w: _Writer, acc: UOp, update: str) -> str:
  """An accumulator's update in a serial loop whose trip count is a value (RANGE with a source: it differs between blocks):
  blocks past their count keep what they have (the identity before their first iteration)."""
  live = [f"{w.names[r]}_live" for r in w.open_serial if r in acc.src and r.src]  # (a split loop's accumulator: the part running)
  if not live: return update
  a = w.names[acc]
  return f"np.where({' & '.join(live)}, {update}, {_np_dtype(acc.dtype)}.type({acc.arg[0]!r}) if {a} is None else {a})"


def _block_index(w: _Writer) -> str:
  """The block index of every thread (shared memory is per block), 0 in a kernel without blocks."""
  return next((w.names[s] for s in w.axis if s.op is Ops.SPECIAL and s.arg[0] == "block"), "0")


def _load(w: _Writer, u: UOp, v: str) -> str | None:
  if u.src[0].op is Ops.DEFINE_ACC and len(u.src) > 1 and u.src[0].src[0] in w.serial:
    return f"np.float32(-np.inf) if {w.names[u.src[0]]} is None else {w.names[u.src[0]]}"  # RUNNING_MAX, one iteration at a time
  if u.src[0].op is Ops.DEFINE_ACC and len(u.src) > 1:
    # RUNNING_MAX inside the max's loop: the max of x over the iterations before each one (-inf at the first)
    loop = u.src[0].src[0]
    axis, n = w.axis[loop], loop.arg[1]
    w.lines.append(f"  seen = np.maximum.accumulate(full({w.names[u.src[1]]}, {w.shape_along(loop)}), axis={axis})")
    return f"np.concatenate([np.full_like(np.take(seen, [0], axis={axis}), -np.inf), np.take(seen, np.arange({n - 1}), axis={axis})], axis={axis})"
  if u.src[0].op is Ops.DEFINE_ACC: return w.names[u.src[0]]
  if u.src[0].op is Ops.DEFINE_GLOBAL: return f"{w.names[u.src[0]]}[{w.names[u.src[1]]}]"
  if u.src[0].op is Ops.DEFINE_LOCAL: return f"{w.names[u.src[0]]}[{_block_index(w)}, {w.names[u.src[1]]}]"
  buf = f"p{u.src[0].arg[0]}" + ("f" if u.src[0].dtype == dtypes.bfloat16 else "")
  idx = w.names[u.src[1]] if w.alive == "True" else f"np.where({w.alive}, {w.names[u.src[1]]}, 0)"
  return f"[load({buf}, {idx} + q) for q in range({u.arg})]" if u.arg is not None else f"load({buf}, {idx})"


def _store(w: _Writer, u: UOp, v: str) -> str | None:
  out, idx, value = u.src[:3]
  gate = u.src[3:4]  # sources after it only order the store
  conv = "f32_to_bf16" if out.dtype == dtypes.bfloat16 else ""
  mask = " & ".join([w.names[g] for g in gate] + ([w.alive] if w.alive != "True" else [])) or "True"
  lanes = [(f"{w.names[idx]} + {q}", w.names[x]) for q, x in enumerate(value.src)] if value.op is Ops.VECTORIZE else \
      [(w.names[idx], w.names[value])]
  if out.op is Ops.DEFINE_LOCAL: lanes = [(f"{_block_index(w)}, {at}", val) for at, val in lanes]
  for at, val in lanes:
    if out.op in (Ops.DEFINE_GLOBAL, Ops.DEFINE_LOCAL):
      w.lines.append(f"  *at, val, ok = np.broadcast_arrays({at}, {val}, {mask})")
      w.lines.append(f"  {w.names[out]}[tuple(a[ok] for a in at)] = val[ok]")
    elif mask == "True":
      w.lines.append(f"  idx, val = np.broadcast_arrays({at}, {val})")
      w.lines.append(f"  p{out.arg[0]}[idx] = {conv}(val)")
    else:
      w.lines.append(f"  idx, val, ok = np.broadcast_arrays({at}, {val}, {mask})")
      w.lines.append(f"  p{out.arg[0]}[idx[ok]] = {conv}(val[ok])")
  return None


def _guard(w: _Writer, u: UOp, v: str) -> str | None:
  w.alive = w.names[u.src[0]] if w.alive == "True" else f"({w.alive} & {w.names[u.src[0]]})"
  return None


def _group_reduce(w: _Writer, u: UOp, v: str) -> str | None:
  op, width = u.arg
  thread = next(s for s in w.axis if s.op is Ops.SPECIAL and s.arg[0] == "thread")
  return f"group_reduce({w.names[u.src[0]]}, {w.axis[thread]}, {w.shape_along(thread)}, {width}, {'np.sum' if op is Ops.ADD else 'np.max'})"


def _cast(w: _Writer, u: UOp, v: str) -> str | None:
  x = w.names[u.src[0]]
  if u.src[0].dtype.is_float and u.dtype.is_int: return f"float_to_int({x}, {_np_dtype(u.dtype)})"
  code = f"np.asarray({x}).astype({_np_dtype(u.dtype)})"
  return f"round_bf16({code})" if u.dtype == dtypes.bfloat16 else code


def _thread_extent(w: _Writer) -> tuple[int, ...]:
  """The shape of all threads (block and thread axes; 1 along loops): an atomic runs once per thread."""
  return tuple(next((s.arg[1] for s, a in w.axis.items() if a == k and s.op is Ops.SPECIAL), 1) for k in range(w.ndim))


def _define_local(w: _Writer, u: UOp, v: str) -> str | None:
  blocks = next((s.arg[1] for s in w.axis if s.op is Ops.SPECIAL and s.arg[0] == "block"), 1)
  return f"np.zeros(({blocks}, {u.arg[1]}), {_np_dtype(u.dtype)})  # shared memory: one array per block"


def _async_copy(w: _Writer, u: UOp, v: str) -> str | None:
  """An ASYNC_COPY: a cp.async copy's values are read now and written at the wait that covers it (`_barrier`); a TMA box
  is copied at once (its mbarrier waits are then no-ops, like the block barriers here)."""
  if isinstance(u.arg, TensorMapSpec):
    local, idx, param, _, _, gate, *rest = u.src
    coords = ", ".join(w.names[c] for c in rest[:len(u.arg.dims)])
    mask = w.names[gate] if w.alive == "True" else f"({w.alive} & {w.names[gate]})"
    buf = f"p{param.arg[0]}" + ("f" if param.dtype == dtypes.bfloat16 else "")
    w.lines.append(f"  tma_load({w.names[local]}, {_block_index(w)}, {w.names[idx]}, {buf}, [{coords}], {mask}, {tuple(u.arg)!r})")
    return None
  local, idx, param, at, gate, *_ = u.src
  lanes = u.arg // param.dtype.itemsize
  buf = f"p{param.arg[0]}" + ("f" if param.dtype == dtypes.bfloat16 else "")
  for q in range(lanes):
    # zeros where the gate is false; nothing at all for threads not running (a GUARD, a block past its loop's count)
    value = f"np.where({w.names[gate]}, load({buf}, {w.names[at]} + {q}), 0)"
    w.lines.append(f"  *at, val, ok = np.broadcast_arrays({_block_index(w)}, {w.names[idx]} + {q}, {value}, {w.alive})")
    w.lines.append(f"  copies.append(({w.names[local]}, tuple(a[ok] for a in at), val[ok]))")
  return None


def _barrier(w: _Writer, u: UOp, v: str) -> str | None:
  """Barriers are implicit (every statement runs for all threads before the next), but cp.async copies land only at the
  wait that covers them (`copies` pending, `groups` committed): a read of their slot before that sees what was there."""
  if u.arg == "commit": w.lines += ["  groups.append(copies)", "  copies = []"]
  elif isinstance(u.arg, tuple) and u.arg[0] == "wait":
    w.lines += [f"  for group in groups[:max(len(groups) - {u.arg[1]}, 0)]:", "    for local, at, val in group: local[at] = val",
                f"  groups = groups[max(len(groups) - {u.arg[1]}, 0):]"]
  return None


def _fragment(w: _Writer, u: UOp, v: str) -> str | None:
  role, kind, ld, k_rows = u.arg
  if role == "pack": return f"[{', '.join(w.names[s] for s in u.src)}]  # an A fragment from registers: mma_packed reads it"
  return f"({w.names[u.src[0]]}, {_block_index(w)}, {w.names[u.src[1]]}, {ld}, {k_rows}, {kind!r})  # tile {role}: the MMA reads it"


def _mma(w: _Writer, u: UOp, v: str) -> str | None:
  thread = next(s for s in w.axis if s.op is Ops.SPECIAL and s.arg[0] == "thread")
  if u.src[0].arg[0] == "pack":  # A from the lanes' registers (the flash plan's P), maybe after an MMA it adds to
    before = w.names[u.src[2]] if len(u.src) > 2 else "None"
    return f"mma_packed({w.names[u.src[0]]}, {w.names[u.src[1]]}, {w.names[thread]}, {w.axis[thread]}, {u.arg[1]}, {u.arg[0]!r}, {before})"
  before = f", {w.names[u.src[2]]}" if len(u.src) > 2 else ""  # a chain: added to the MMA before it
  return f"mma({w.names[u.src[0]]}, {w.names[u.src[1]]}, {w.names[thread]} % 32, {u.arg[1]}{before})"


def _wgmma(w: _Writer, u: UOp, v: str) -> str | None:
  thread = next(s for s in w.axis if s.op is Ops.SPECIAL and s.arg[0] == "thread")
  before = w.names[u.src[2]] if len(u.src) > 2 else "None"
  return f"wgmma({w.names[u.src[0]]}, {w.names[u.src[1]]}, {w.names[thread]} % 128, {before}, {u.arg[2]})"


# op -> fn(writer, instruction, its value's name) -> numpy expression for the value, or None when it wrote its own lines
RULES: dict[Ops, Callable[[_Writer, UOp, str], str | None]] = {
  Ops.PARAM: _param, Ops.ENDRANGE: lambda w, u, v: None, Ops.DEFINE_LOCAL: _define_local, Ops.BARRIER: _barrier,
  Ops.DEFINE_GLOBAL: lambda w, u, v: f"np.zeros({u.arg[1]}, {_np_dtype(u.dtype)})  # device scratch",
  Ops.ATOMIC_ADD: lambda w, u, v: f"atomic_add({', '.join(w.src(u)[:4])}, {_thread_extent(w)})",
  Ops.CONST: lambda w, u, v: f"{_np_dtype(u.dtype)}.type({u.arg!r})",
  Ops.RANGE: lambda w, u, v: f"np.arange({u.arg[1]}, dtype={_np_dtype(u.dtype)}).reshape({w.shape_along(u)})",
  Ops.SPECIAL: lambda w, u, v: f"np.arange({u.arg[1]}, dtype=np.int32).reshape({w.shape_along(u)})",
  Ops.DEFINE_ACC: lambda w, u, v: f"None  # accumulator over axes {tuple(w.axis.get(r) for r in u.src)}",
  Ops.ACCUMULATE: _accumulate, Ops.LOAD: _load, Ops.STORE: _store, Ops.GUARD: _guard, Ops.GROUP_REDUCE: _group_reduce,
  Ops.FRAGMENT: _fragment, Ops.MMA: _mma, Ops.WGMMA: _wgmma, Ops.ASYNC_COPY: _async_copy,
  Ops.GEP: lambda w, u, v: f"{w.names[u.src[0]]}[{u.arg}]", Ops.VECTORIZE: lambda w, u, v: None,
  Ops.CAST: _cast,
  Ops.BITCAST: lambda w, u, v: f"np.asarray({w.names[u.src[0]]}).view({_np_dtype(u.dtype)})",
  Ops.CHECK: lambda w, u, v: f"check({w.names[u.src[0]]}, {w.names[u.src[1]]}, {u.src[2].arg}, err)",
  Ops.WHERE: lambda w, u, v: f"np.where({', '.join(w.src(u))}).astype({_np_dtype(u.dtype)})",
  **{op: (lambda fn: lambda w, u, v: f"{fn}({w.names[u.src[0]]})")(fn) for op, fn in NP_UNARY.items()},
  **{op: (lambda fn: lambda w, u, v: f"{fn}({', '.join(w.src(u))})")(fn) for op, fn in NP_BINARY.items()},
}


def render_python(name: str, program: list[UOp]) -> str:
  w = _Writer(program)
  params = [u for u in program if u.op is Ops.PARAM]
  checked = any(u.op is Ops.CHECK for u in program)
  w.lines.append(f"def {name}({', '.join([f'p{p.arg[0]}' for p in params] + (['err'] if checked else []))}):")
  w.lines += ["  copies, groups = [], []  # cp.async copies issued and committed, not yet landed (_barrier)"]
  for i, u in enumerate(program):
    if u.op not in RULES: raise NotImplementedError(f"PYTHON renderer has no rule for {u.op}")
    v = w.names[u] = f"v{i}"
    start = len(w.lines)
    if u.op is Ops.RANGE and u in w.serial:
      w.lines += [f"  for {v}_i in range({u.arg[1]}):", f"    {v} = {_np_dtype(u.dtype)}.type({v}_i)"]
      # a trip count given as a value (u.src[0]: the flash plan's key tiles up to a causal diagonal) may differ between
      # blocks: all run every iteration, and the accumulators of those past their count keep their values (`_live`)
      if u.src: w.lines.append(f"    {v}_live = {v} < {w.names[u.src[0]]}")
      # (and their copies and stores into shared memory do not happen: a later loop may read what it holds)
      w.alive_outside.append(w.alive)
      if u.src: w.alive = f"{v}_live" if w.alive == "True" else f"({w.alive} & {v}_live)"
      code: str | None = None
    elif u.op is Ops.ENDRANGE and u.src[0] in w.serial:
      w.depth -= 1
      w.open_serial.pop()
      w.alive = w.alive_outside.pop()
      continue
    else: code = RULES[u.op](w, u, v)
    if code is not None: w.lines.append(f"  {v} = {code}")
    w.lines[start:] = ["  " * (w.depth - 1) + line for line in w.lines[start:]]
    if u.op is Ops.RANGE and u in w.serial: w.depth, w.open_serial = w.depth + 1, [*w.open_serial, u]
  return "\n".join(w.lines)
