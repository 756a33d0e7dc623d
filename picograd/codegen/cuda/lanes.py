"""The lanes plan: an elementwise kernel with four outputs per thread and 16-byte (float4) loads and stores."""
from __future__ import annotations
from functools import partial
from picograd.helpers import ceildiv, prod
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import contiguous_in
from picograd.codegen.cuda.emit import BLOCK, Cone, KernelSource, index_of
from picograd.codegen.cuda.ops import REG_TYPES, VEC4_TYPES, render_store


def render_lanes(program: list[UOp], ks: KernelSource, deps: dict[UOp, frozenset[UOp]]) -> None:
  """Elementwise, four outputs of the innermost loop per thread, 16-byte loads/stores where the index allows."""
  w = ks.w
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  inner = glob[-1]
  total = prod(r.arg[1] for r in glob) // 4
  it = "long long" if total * 4 >= 2**31 else "int"
  ks.grid = (ceildiv(total, BLOCK),)
  w(f"const {it} gid = ({it})blockIdx.x * {BLOCK} + threadIdx.x;")
  w(f"if (gid >= {total}) return;")
  env: dict[UOp, str] = {}
  quad = UOp(Ops.RANGE, inner.dtype, (), (-1, inner.arg[1] // 4, "global"))  # stand-in: which group of four
  index_of(glob[:-1] + [quad], "gid", w, env)
  base = env.pop(quad)
  shared = Cone(w, env)
  vectors: dict[UOp, str] = {}
  lanes: list[Cone] = []

  def vector_load(u: UOp, j: int) -> str | None:
    """Lane j of a 16-byte load of four neighbours, issued once (lane 0 renders first, so its index is known)."""
    if u.src[0].dtype not in VEC4_TYPES or not contiguous_in(u.src[1], inner, 4): return None
    if u not in vectors:
      vectors[u] = w.fresh("vec")
      idx = lanes[0].expr(u.src[1])
      vt = VEC4_TYPES[u.src[0].dtype]
      w(f"const {vt} {vectors[u]} = *reinterpret_cast<const {vt}*>(p{u.src[0].arg[0]} + {idx});")
    return f"{vectors[u]}.{'xyzw'[j]}"

  for j in range(4):
    lanes.append(Cone(w, {**env, inner: f"({REG_TYPES[inner.dtype]})({base} * 4 + {j})"}, shared, frozenset([inner]), deps,
                      partial(vector_load, j=j)))
  for store in (u for u in program if u.op is Ops.STORE):
    param, idx, value = store.src
    vals = [lane.expr(value) for lane in lanes]
    if param.dtype in VEC4_TYPES and contiguous_in(idx, inner, 4):
      vt = VEC4_TYPES[param.dtype]
      w(f"*reinterpret_cast<{vt}*>(p{param.arg[0]} + {lanes[0].expr(idx)}) = make_{vt}({', '.join(vals)});")
    else:
      for lane, v in zip(lanes, vals): w(render_store(param, lane.expr(idx), v))
