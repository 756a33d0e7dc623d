"""Online softmax fusion (engine layer): which nodes of a lazy graph stay inside one kernel so that a sum rescaled by a
running maximum (flash attention's softmax) is computed in one pass, with no score matrix in memory.

The rule is general: a sum over an axis j whose terms are `exp(x_j - max_j x) * f_j` (where x may itself be a reduction,
q . k_j, and f_j anything elementwise, a row of v) can run over j once, keeping the running max m and the sum rescaled by
exp(m_old - m_new) whenever m grows (codegen/online.py rewrites the lowered kernel so). A quotient by another such sum
sharing the same max (softmax's denominator) joins the same pass. The scheduler's other rules would store x, the max
and the denominator (each is a reduction broadcast back over j, then over f's axes): for such a sum `R` they are kept
in R's kernel instead, when nothing else reads them (a backward pass that reads the probabilities keeps today's
buffers). It applies where x is itself a reduction (whose recomputation per extra pass the online form saves), on the
devices of engine/schedule.py ONLINE_DEVICES, to score tensors of at least ONLINE_SOFTMAX_MIN elements (below that the
kernels are tiny and launch-bound either way: NOTES.md, online softmax).

`online_groups(roots, nodes, consumers, ok)` returns the nodes that must not get a buffer of their own.
"""
from __future__ import annotations
from typing import Callable
from picograd.helpers import ONLINE_SOFTMAX_MIN
from picograd.dtype import DType, dtypes
from picograd.ir.ops import UOp, Ops, ALU, MOVEMENT, toposort

_THROUGH = ALU | MOVEMENT | {Ops.DETACH}


def _body(start: UOp, enter: frozenset[UOp] | set[UOp] = frozenset()) -> tuple[list[UOp], list[UOp]]:
  """(nodes, reductions): what `start` computes through elementwise and movement ops (and the reductions in `enter`,
  which are walked into), and the other reductions it reads, which stop the walk."""
  nodes, reduces, seen, stack = [], [], set(), [start]
  while stack:
    n = stack.pop()
    if n in seen: continue
    seen.add(n)
    if n.op is Ops.REDUCE and n not in enter and n is not start:
      reduces.append(n)
      continue
    if n.op in _THROUGH or n.op is Ops.REDUCE:
      nodes.append(n)
      stack.extend(n.src)
  return nodes, reduces


def _is_zero(u: UOp) -> bool:
  while u.op in (Ops.EXPAND, Ops.RESHAPE): u = u.src[0]
  return u.op is Ops.CONST and u.arg == 0


def exp_factor_reads(value: UOp, target: UOp, casts: bool = False) -> bool:
  """Is `value` (through views) a product with a factor exp2(...) whose argument reads `target`? The lowered sum then has
  the factor codegen/online.py looks for (a CAST between, as a 16-bit weight, is not looked through there either; with
  `casts`, float casts are: the CUDA flash plan rounds the running weights to 16 bits itself, codegen/cuda/flash.py)."""
  stack = [value]
  while stack:
    n = stack.pop()
    while n.op in (Ops.EXPAND, Ops.RESHAPE, Ops.PERMUTE, Ops.DETACH): n = n.src[0]
    if n.op is Ops.MUL and n.dtype.is_float: stack.extend(n.src)
    elif casts and n.op is Ops.CAST and n.dtype.is_float and n.src[0].dtype.is_float: stack.append(n.src[0])
    elif n.op is Ops.WHERE and n.dtype.is_float and _is_zero(n.src[2]): stack.append(n.src[1])  # where(keep, a, 0): dropout
    elif n.op is Ops.EXP2 and target in _body(n.src[0])[1]: return True
  return False


def _reshape_axis(n: UOp, axis: int) -> int | None:
  """The axis of a RESHAPE's source that output `axis` is (same size, same elements before it), if there is one."""
  out, src = n.tshape, n.src[0].tshape
  before = 1
  for a in range(axis): before *= out[a]
  acc = 1
  for b, size in enumerate(src):
    if acc == before and size == out[axis]: return b
    acc *= size
  return None


def _broadcast_along(r: UOp, axis: int, m: UOp, group: set[UOp]) -> bool:
  """Does every read of the max `m` in `r`'s body (walked through the group's reductions) reach it through a broadcast
  along `r`'s reduced axis, onto m's own reduced axis? (The sum then runs along the axis the max is over: softmax's
  weighted sum over keys, not the gradient's sum of the same weights over queries.)"""
  seen, stack, found = set(), [(r.src[0], axis)], False
  while stack:
    n, a = stack.pop()
    if (n, a) in seen: continue
    seen.add((n, a))
    if n is m: return False  # read varying along the axis: not the max broadcast back
    if n.op is Ops.EXPAND and n.src[0].tshape[a] == 1 and n.tshape[a] > 1:
      base = n.src[0]
      while base.op in (Ops.DETACH, Ops.RESHAPE) and (base.op is Ops.DETACH or base.src[0].tshape == base.tshape): base = base.src[0]
      if base is m:
        if a not in m.arg[1]: return False
        found = True
      continue  # constant along the axis from here down
    if n.op in ALU or n.op in (Ops.DETACH, Ops.EXPAND): nxt = [(x, a) for x in n.src]
    elif n.op is Ops.REDUCE and n in group:
      if a in n.arg[1]: return False
      nxt = [(n.src[0], a)]
    elif n.op is Ops.RESHAPE:
      if (b := _reshape_axis(n, a)) is not None: nxt = [(n.src[0], b)]
      elif m in toposort([n]): return False  # the axis is merged or split on the way to the max: not followed
      else: continue  # an input's view (the flat buffer of v)
    elif n.op is Ops.PERMUTE: nxt = [(n.src[0], n.arg[a])]
    elif n.op in (Ops.PAD, Ops.SHRINK, Ops.FLIP):
      if n.src[0].tshape[a] == n.tshape[a] and not (n.op is Ops.FLIP and n.arg[a]): nxt = [(n.src[0], a)]
      elif m in toposort([n]): return False
      else: continue
    else: continue  # a leaf: an input, a constant, a stored node
    stack.extend(nxt)
  return found


def _single_axis(r: UOp) -> int | None:
  return r.arg[1][0] if len(r.arg[1]) == 1 else None


def group_of(r: UOp, casts: bool = False) -> tuple[list[UOp], set[UOp]] | None:
  """(reductions fused into `r`'s kernel, every node of that kernel's fused region) when `r` is a sum of
  exp(x - max x) * f over one axis, else None."""
  if r.arg[0] is not Ops.ADD or not r.dtype.is_float or (axis := _single_axis(r)) is None: return None
  _, level1 = _body(r)
  for m in level1:
    if m.arg[0] is not Ops.MAX or (m_axis := _single_axis(m)) is None or not exp_factor_reads(r.src[0], m, casts): continue
    # a flag (NOTES.md, online softmax): below ONLINE_SOFTMAX_MIN score elements the stored scores are kept
    if m.src[0].tshape[m_axis] != r.src[0].tshape[axis] or m.src[0].size < ONLINE_SOFTMAX_MIN: continue
    _, scores = _body(m)  # the reductions the max reads (q . k): they run inside the pass over j, once per j
    # a loaded x (softmax(x) @ v) is cheaper with x's max and sum stored and the product tiled (codegen/online.py rewrites
    # only sums whose x is a reduction, which more passes would compute again)
    if not scores: continue
    group = [m, *scores]
    for s in level1:  # other sums of exp(x - m) over the same axis (softmax's denominator)
      if s is m or s in group: continue
      _, s_reads = _body(s)
      if s.arg[0] is Ops.ADD and m in s_reads and exp_factor_reads(s.src[0], m, casts) and set(s_reads) <= set(group): group.append(s)
    if not _broadcast_along(r, axis, m, set(group)): continue
    region, _ = _body(r, set(group))
    return group, set(region)
  return None


def _computed_from(r: UOp, region: set[UOp], group: list[UOp]) -> set[UOp]:
  """The nodes of `r`'s region that read a reduction of `group` (and the group): the ones the other rules might store.
  Views of inputs and constants are never stored, and may be shared with the rest of the graph."""
  out = set(group)
  for n in toposort([r], stop=lambda x: x not in region):
    if n in region and any(s in out for s in n.src): out.add(n)
  return out - {r}


def half_product(r: UOp) -> DType | None:
  """The 16-bit type of `r`'s summed product when `r` sums a float32 cast of a 16-bit product (autocast's matmuls), else None."""
  v = r.src[0]
  if v.op is not Ops.CAST or v.dtype != dtypes.float32 or v.src[0].op is not Ops.MUL or v.src[0].dtype not in (dtypes.float16, dtypes.bfloat16):
    return None
  return v.src[0].dtype


def _masked(value: UOp) -> bool:
  """Does a factor of the product `value` (through views and float casts) select by a mask (where(keep, a, 0): dropout)?"""
  stack = [value]
  while stack:
    n = stack.pop()
    while n.op in (Ops.EXPAND, Ops.RESHAPE, Ops.PERMUTE, Ops.DETACH) or (n.op is Ops.CAST and n.dtype.is_float and n.src[0].dtype.is_float):
      n = n.src[0]
    if n.op is Ops.MUL and n.dtype.is_float: stack.extend(n.src)
    elif n.op is Ops.WHERE and n.dtype.is_float and _is_zero(n.src[2]): return True
  return False


def tensor_core_form(r: UOp, m: UOp) -> bool:
  """Whether the online sum `r` with max `m` has the form codegen/cuda/flash.py maps onto tensor cores: one score product
  q . k and the weighted sum, both 16-bit products accumulated in float32 of the same type (autocast's attention), head
  sizes (the score's k, the sum's columns) multiples of 16 up to 128, the softmax in float32 (autocast's; a 16-bit one is
  left as it is) and no mask on the weights (dropout)."""
  _, scores = _body(m)
  if m.dtype != dtypes.float32 or len(scores) != 1 or (dt := half_product(scores[0])) is None: return False
  if half_product(r) != dt or _masked(r.src[0]): return False
  k = scores[0].src[0].tshape[scores[0].arg[1][0]]
  cols = r.tshape[-2] if len(r.tshape) >= 2 else 0
  return all(n % 16 == 0 and 16 <= n <= 128 for n in (k, cols))


def online_groups(roots: list[UOp], nodes: list[UOp], consumers: dict[UOp, set[UOp]], ok: Callable[[UOp], bool],
                  tensor_cores: Callable[[UOp], bool] = lambda n: False) -> set[UOp]:
  """The nodes to keep inside the kernels of online sums (see the module docstring); `ok(node)`: may its device fuse so;
  `tensor_cores(node)`: does its device fuse only the sums of `tensor_core_form` (CUDA: the flash plan takes those)."""
  keep: set[UOp] = set()
  root_set = set(roots)
  for r in nodes:
    if r.op is not Ops.REDUCE or r in keep or not ok(r): continue
    tc = tensor_cores(r)
    if (found := group_of(r, casts=tc)) is None or (tc and not tensor_core_form(r, found[0][0])): continue
    group, region = found
    inner = _computed_from(r, region, group)
    # each of them is read only inside the region: nothing else (a gradient, another output) needs it stored
    if inner & root_set or any(not consumers.get(n, set()) <= region for n in inner): continue
    keep |= inner
  return keep
