"""The PYTHON renderer: a linearized kernel becomes numpy code, the reference the other backends are tested against.

Every RANGE becomes its own broadcast axis, so a loop nest turns into whole-array numpy
operations over the same index expressions the compiled backends use: LOAD is fancy indexing,
ACCUMULATE a numpy reduction over the reduction's axes, STORE an indexed assignment. It runs
the very same lowered kernel, just slowly and obviously. A kernel with CHECKs takes its error word (an int64
array of one) as a last argument `err`.
"""
from __future__ import annotations
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops

NP_BINARY = {Ops.ADD: "np.add", Ops.MUL: "np.multiply", Ops.AND: "np.bitwise_and", Ops.OR: "np.bitwise_or", Ops.XOR: "np.bitwise_xor",
             Ops.CMPLT: "np.less", Ops.CMPNE: "np.not_equal", Ops.SHL: "np.left_shift", Ops.SHR: "np.right_shift",
             Ops.MAX: "np.maximum", Ops.MOD: "c_mod", Ops.IDIV: "c_div"}
NP_UNARY = {Ops.EXP2: "np.exp2", Ops.LOG2: "np.log2", Ops.SIN: "np.sin", Ops.SQRT: "np.sqrt", Ops.RECIPROCAL: "reciprocal", Ops.NEG: "np.negative"}


def _np_dtype(dt) -> str:
  # bfloat16 values live in float32 arrays (rounded at casts and stores); a dtype object, so `.type(v)` makes constants
  return "np.dtype('<f4')" if dt == dtypes.bfloat16 else f"np.dtype({dt.np.str!r})"


def _axes(program: list[UOp]) -> tuple[dict[UOp, int], int]:
  """A broadcast axis for every RANGE, and how many there are. A loop's axis is free again after its ENDRANGE (what was
  computed inside the loop is used after it only through accumulators, which have size 1 there), so a kernel with many
  reductions in sequence stays within numpy's 64 dimensions."""
  axis: dict[UOp, int] = {}
  free: list[int] = []
  ndim = 0
  for u in program:
    if u.op is Ops.RANGE:
      if free: axis[u] = free.pop()
      else: axis[u], ndim = ndim, ndim + 1
    elif u.op is Ops.ENDRANGE: free.append(axis[u.src[0]])
  return axis, ndim


def render_python(name: str, program: list[UOp]) -> str:
  axis, ndim = _axes(program)
  names: dict[UOp, str] = {}
  params = [u for u in program if u.op is Ops.PARAM]
  checked = any(u.op is Ops.CHECK for u in program)
  lines = [f"def {name}({', '.join([f'p{p.arg[0]}' for p in params] + (['err'] if checked else []))}):"]
  for i, u in enumerate(program):
    v = names[u] = f"v{i}"
    src = [names.get(s, "") for s in u.src]
    if u.op is Ops.PARAM:
      names[u] = f"p{u.arg[0]}"
      if u.dtype == dtypes.bfloat16: lines.append(f"  p{u.arg[0]}f = bf16_to_f32(p{u.arg[0]})")
      continue
    if u.op is Ops.CONST: code = f"{_np_dtype(u.dtype)}.type({u.arg!r})"
    elif u.op is Ops.RANGE:
      shape = tuple(u.arg[1] if axis[u] == k else 1 for k in range(ndim))
      code = f"np.arange({u.arg[1]}, dtype={_np_dtype(u.dtype)}).reshape({shape})"
    elif u.op is Ops.ENDRANGE: continue
    elif u.op is Ops.DEFINE_ACC: code = f"None  # accumulator over axes {tuple(axis[r] for r in u.src)}"
    elif u.op is Ops.ACCUMULATE:
      acc, value = u.src
      axes = tuple(axis[r] for r in acc.src)
      fn = "np.sum" if u.arg is Ops.ADD else "np.max"
      extra = f", initial={_np_dtype(acc.dtype)}.type({acc.arg[0]!r})" if u.arg is Ops.MAX else ""
      cast = "" if acc.dtype != dtypes.bool else ".astype(bool)"
      extent = tuple(next((r.arg[1] for r in acc.src if axis[r] == k), 1) for k in range(ndim))
      dtype_arg = f", dtype={_np_dtype(acc.dtype)}" if u.arg is Ops.ADD and acc.dtype != dtypes.bool else ""
      lines.append(f"  {names[acc]} = {fn}(full({src[1]}, {extent}), axis={axes}, keepdims=True{dtype_arg}{extra}){cast}")
      continue
    elif u.op is Ops.LOAD and u.src[0].op is Ops.DEFINE_ACC: code = src[0]
    elif u.op is Ops.LOAD:
      buf = f"p{u.src[0].arg[0]}" + ("f" if u.src[0].dtype == dtypes.bfloat16 else "")
      code = f"load({buf}, {src[1]})"
    elif u.op is Ops.STORE:
      out = u.src[0]
      conv = "f32_to_bf16" if out.dtype == dtypes.bfloat16 else ""
      lines.append(f"  idx, val = np.broadcast_arrays({src[1]}, {src[2]})")
      lines.append(f"  p{out.arg[0]}[idx] = {conv}(val)")
      continue
    elif u.op is Ops.CAST:
      code = f"np.asarray({src[0]}).astype({_np_dtype(u.dtype)})"
      if u.dtype == dtypes.bfloat16: code = f"round_bf16({code})"
      if u.src[0].dtype.is_float and u.dtype.is_int: code = f"float_to_int({src[0]}, {_np_dtype(u.dtype)})"
    elif u.op is Ops.BITCAST: code = f"np.asarray({src[0]}).view({_np_dtype(u.dtype)})"
    elif u.op is Ops.CHECK: code = f"check({src[0]}, {src[1]}, {u.src[2].arg}, err)"
    elif u.op is Ops.WHERE: code = f"np.where({src[0]}, {src[1]}, {src[2]}).astype({_np_dtype(u.dtype)})"
    elif u.op in NP_UNARY: code = f"{NP_UNARY[u.op]}({src[0]})"
    elif u.op in NP_BINARY: code = f"{NP_BINARY[u.op]}({src[0]}, {src[1]})"
    else: raise NotImplementedError(f"PYTHON renderer has no rule for {u.op}")
    lines.append(f"  {v} = {code}")
  return "\n".join(lines)
