"""Reassociating nested sums (engine layer): sum_j A_ij (sum_d B_id C_jd) = sum_d B_id (sum_j A_ij C_jd), applied when the
inner sum over j on the right already exists in the graph, so a T x T x D sum becomes a T x D one.

Where it pays: the gradient of softmax(x) @ v. Autodiff gives the row term sum_j P_ij dP_ij with dP_ij = sum_d dO_id v_jd
(a product over the keys j and the head dimension d for every query), while the forward already computed
O_id = sum_j P_ij v_jd: the term is sum_d dO_id O_id (flash attention's D_i). The rewrite is general: a sum over one axis j
whose term is a product of factors, one of them a (view of a) sum over other axes d whose own factors split into B (not
varying along j) and C (varying along j); the other factors split into W (constant along j) and A (varying; a dropout
gate where(keep, a, 0) counts as a factor keep there, matched but never rebuilt). An existing
sum R2 over one axis whose factors, up to a renaming of axes, are A and C varying along its axis and W2 constant (W2 a
sub-multiset of W, compared node for node) gives sum_j A C = R2 / W2; then the sum is W / W2 * sum_d B R2, with no
division at all. Factors are found through MUL, NEG, constants and the views that only permute, broadcast or insert and
remove axes of size 1; `reassociate(nodes, ok)` returns {old sum: new node} for the sums on devices `ok` accepts.

Read through casts (autocast), R2 is taken as the graph rounds it where it does: a 16-bit cast of R2 (attention's output,
O in bfloat16) is stored anyway, so the new sum reads that value, as FlashAttention's D_i reads the 16-bit O; reading the
float32 sum instead made the forward store O twice (float32 and its 16-bit cast, a kernel of its own).
"""
from __future__ import annotations
from typing import Callable
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, ALU, strip_reshapes, substitute

# an axis label per axis of a factor: the iteration axis it runs along in the sum's space (None: a size-1 axis)
Labels = tuple[int | None, ...]
Factor = tuple[UOp, Labels]


def _non1(shape: tuple[int, ...]) -> list[int]: return [a for a, s in enumerate(shape) if s != 1]


def view_labels(n: UOp, labels: Labels) -> Labels | None:
  """The labels of a view's source axes, when the view only permutes, broadcasts, or inserts and removes size-1 axes."""
  src = n.src[0].tshape
  if n.op is Ops.PERMUTE:
    out: list[int | None] = [None] * len(src)
    for a, b in enumerate(n.arg): out[b] = labels[a]
    return tuple(out)
  if n.op is Ops.EXPAND: return tuple(None if s == 1 else labels[a] for a, s in enumerate(src))
  if n.op is Ops.RESHAPE:
    dst = n.tshape
    if [src[a] for a in _non1(src)] != [dst[a] for a in _non1(dst)]: return None
    out = [None] * len(src)
    for a, b in zip(_non1(src), _non1(dst)): out[a] = labels[b]
    return tuple(out)
  return None


def _is_zero(u: UOp) -> bool:
  while u.op in (Ops.EXPAND, Ops.RESHAPE): u = u.src[0]
  return u.op is Ops.CONST and u.arg == 0


def product_factors(value: UOp, labels: Labels, casts: bool = False) -> tuple[list[Factor], float]:
  """The factors of a product (through MUL, NEG, DETACH and plain views) with their labels, and its constant; with `casts`,
  through casts between float types too (autocast's 16-bit products: the rewrite then changes where values are rounded)."""
  out: list[Factor] = []
  scale, stack = 1.0, [(value, labels)]
  while stack:
    n, lab = stack.pop()
    if n.op is Ops.MUL: stack.extend((s, lab) for s in n.src)
    elif n.op in (Ops.NEG, Ops.DETACH):
      if n.op is Ops.NEG: scale = -scale
      stack.append((n.src[0], lab))
    elif n.op is Ops.CONST: scale *= float(n.arg)
    elif casts and n.op is Ops.CAST and n.dtype.is_float and n.src[0].dtype.is_float: stack.append((n.src[0], lab))
    elif n.op is Ops.WHERE and _is_zero(n.src[2]):  # where(keep, a, 0) (dropout): the gate keep is a factor of its own
      out.append((n.src[0], lab))
      stack.append((n.src[1], lab))
    elif n.op in (Ops.PERMUTE, Ops.EXPAND, Ops.RESHAPE) and (v := view_labels(n, lab)) is not None: stack.append((n.src[0], v))
    else: out.append((n, lab))
  return out, scale


# how deep `_varies` follows elementwise ops (a deeper factor counts as varying: never matched, so never rebuilt), which
# also bounds the Python recursion of it and of `_rebuilt` (the residual stream's gradient is hundreds of ops deep)
MAX_DEPTH = 32


def _varies(n: UOp, axis: int, memo: dict[tuple[UOp, int], bool], depth: int = 0) -> bool:
  """Can node `n` differ along its axis `axis`? (False when every path to a leaf broadcasts that axis.)"""
  if (n, axis) in memo: return memo[(n, axis)]
  if depth > MAX_DEPTH: return True
  if n.op is Ops.CONST: out = False
  elif n.op is Ops.EXPAND: out = n.src[0].tshape[axis] != 1 and _varies(n.src[0], axis, memo, depth + 1)
  elif n.op is Ops.PERMUTE: out = _varies(n.src[0], n.arg[axis], memo, depth + 1)
  elif n.op is Ops.RESHAPE:
    src, dst = n.src[0].tshape, n.tshape
    if n.tshape[axis] == 1: out = False
    elif [src[a] for a in _non1(src)] == [dst[a] for a in _non1(dst)]: out = _varies(n.src[0], _non1(src)[_non1(dst).index(axis)], memo, depth + 1)
    else: out = True
  elif n.op in ALU or n.op is Ops.DETACH: out = any(_varies(s, axis, memo, depth + 1) for s in n.src)
  else: out = n.tshape[axis] != 1
  memo[(n, axis)] = out
  return out


def _along(f: Factor, label: int, memo: dict[tuple[UOp, int], bool]) -> bool:
  n, lab = f
  return any(x == label and _varies(n, a, memo) for a, x in enumerate(lab))


def _single_sum(r: UOp) -> int | None:
  if r.op is not Ops.REDUCE or r.arg[0] is not Ops.ADD or not r.dtype.is_float or len(r.arg[1]) != 1: return None
  return r.arg[1][0] if r.src[0].tshape[r.arg[1][0]] > 1 else None


def _space(r: UOp, casts: bool = False) -> tuple[Labels, list[Factor], float]:
  """A single-axis sum's labels (its value's axes are 0..n-1), factors and constant (`casts`: see product_factors)."""
  labels = tuple(None if s == 1 else a for a, s in enumerate(r.src[0].tshape))
  return (labels, *product_factors(r.src[0], labels, casts))


def _match(f1: list[Factor], f2: list[Factor], mapping: dict[int, int]) -> bool:
  """Pair every factor of f2 with one of f1 (the same node), extending `mapping` (f2's labels -> f1's) consistently."""
  left = list(f1)
  for n2, lab2 in f2:
    for k, (n1, lab1) in enumerate(left):
      if n1 is not n2: continue
      trial = dict(mapping)
      if all((a is None and b is None) or (a is not None and b is not None and trial.setdefault(a, b) == b) for a, b in zip(lab2, lab1)) \
         and len(set(trial.values())) == len(trial):
        mapping.clear(); mapping.update(trial)
        del left[k]
        break
    else: return False
  return True


def _placed(n: UOp, lab: Labels, order: list[int], shape: tuple[int, ...]) -> UOp:
  """Factor `n` (axes labelled `lab`; unlabelled axes have size 1) as a view of `shape`, whose axes are the labels `order`."""
  keep = [a for a, x in enumerate(lab) if x is not None]
  v = n.reshape(tuple(n.tshape[a] for a in keep))
  pos = sorted(range(len(keep)), key=lambda k: order.index(lab[keep[k]]))  # type: ignore[arg-type]
  v = v.permute(tuple(pos))
  at = {order.index(lab[keep[k]]): n.tshape[keep[k]] for k in pos}  # type: ignore[arg-type]
  return v.reshape(tuple(at.get(a, 1) for a in range(len(shape)))).expand(shape)


def _rebuilt(n: UOp, lab: Labels, j: int, order: list[int], shape: tuple[int, ...], memo: dict | None = None) -> UOp:
  """Factor `n`, constant along label j, recomputed at `shape` (axes `order`, without j): its elementwise ops are rebuilt
  over the views of its leaves, which drop j (a leaf still labelled j is read at j = 0)."""
  memo = {} if memo is None else memo
  if (key := (n, lab)) in memo: return memo[key]
  if n.op in ALU or n.op is Ops.DETACH: out = UOp(n.op, n.dtype, tuple(_rebuilt(s, lab, j, order, shape, memo) for s in n.src), n.arg)
  elif n.op in (Ops.PERMUTE, Ops.EXPAND, Ops.RESHAPE) and (v := view_labels(n, lab)) is not None: out = _rebuilt(n.src[0], v, j, order, shape, memo)
  else:
    if j in lab: n, lab = n.shrink(tuple((0, 1) if x == j else (0, s) for x, s in zip(lab, n.tshape))), tuple(None if x == j else x for x in lab)
    out = _placed(n, lab, order, shape)
  memo[key] = out
  return out


def _rewrite(r: UOp, sums: list[tuple[UOp, int, Labels, list[Factor], float]], memo: dict[tuple[UOp, int], bool],
             casts: bool = False, rounded: dict[UOp, UOp] | None = None) -> UOp | None:
  j = _single_sum(r)
  assert j is not None
  labels, factors, scale = _space(r, casts)
  out_shape = r.tshape
  for k, (inner, lab) in enumerate(factors):
    if inner.op is not Ops.REDUCE or inner.arg[0] is not Ops.ADD or j not in lab or inner.dtype != r.dtype: continue
    # the inner sum's own space: its kept axes carry r's labels, its summed axes fresh ones after r's
    fresh = {a: len(labels) + i for i, a in enumerate(inner.arg[1])}
    inner_labels = tuple(fresh[a] if a in fresh else lab[a] for a in range(len(lab)))
    inner_factors, inner_scale = product_factors(inner.src[0], tuple(None if inner.src[0].tshape[a] == 1 else x for a, x in enumerate(inner_labels)),
                                                 casts)
    b = [f for f in inner_factors if not _along(f, j, memo)]
    c = [f for f in inner_factors if _along(f, j, memo)]
    rest = factors[:k] + factors[k + 1:]
    a = [f for f in rest if _along(f, j, memo)]
    w = [f for f in rest if not _along(f, j, memo)]
    # gates (bool factors) may only be matched, never rebuilt: a * keep is not where(keep, a, 0) when a is inf
    # (with casts, 16-bit factors too: matched as nodes, rebuilt cast to r's type)
    if not b or not c or any(n.dtype != r.dtype and not (casts and n.dtype.is_float) for n, _ in b + w) \
       or any(n.dtype not in (r.dtype, dtypes.bool) and not (casts and n.dtype.is_float) for n, _ in a + c): continue
    for r2, j2, _, f2, scale2 in sums:
      if r2 is r or scale2 == 0: continue
      v2 = [f for f in f2 if _along(f, j2, memo)]
      w2 = [f for f in f2 if not _along(f, j2, memo)]
      if any(n.dtype != r.dtype and not (casts and n.dtype.is_float) for n, _ in w2): continue
      mapping = {j2: j}
      if len(v2) != len(a) + len(c) or not _match(a + c, v2, mapping): continue
      # the constant factors of r2, renamed, must be among r's: r2 = W2 * sum_j A C
      w_left = list(w)
      for n, lab2 in w2:
        if (f := (n, tuple(None if x is None else mapping.get(x, -1) for x in lab2))) not in w_left: break
        w_left.remove(f)
      else: w2 = []
      if w2: continue
      r2_lab = tuple(None if s == 1 or a2 == j2 else mapping.get(a2) for a2, s in enumerate(r2.tshape))
      if any(x is None and s != 1 for x, s in zip(r2_lab, r2.tshape)): continue
      # the new sum runs over r's output axes (j of size 1) and the inner sum's axes, appended
      order = [x if x is not None and x != j else -1 - a for a, x in enumerate(labels)] + [fresh[a] for a in inner.arg[1]]
      shape = out_shape + tuple(inner.src[0].tshape[a] for a in inner.arg[1])
      base = rounded[r2].cast(r2.dtype).reshape(r2.tshape) if casts and rounded and r2 in rounded else r2
      prod = _placed(base, r2_lab, order, shape)
      for n, lab2 in b: prod = prod * _rebuilt(n, lab2, j, order, shape).cast(r.dtype)  # (a factor labelled j is constant along it)
      # W / W2 stays inside the new sum, so the result is one reduction as before; rebuilt at its shape, so no costly
      # elementwise work (1 / S) is broadcast into it (the scheduler would store it)
      for n, lab2 in w_left: prod = prod * _rebuilt(n, lab2, j, order, shape).cast(r.dtype)
      if (factor := scale * inner_scale / scale2) != 1.0: prod = prod * factor
      return prod.reduce(Ops.ADD, tuple(range(len(out_shape), len(shape)))).reshape(out_shape)
  return None


def reassociate(nodes: list[UOp], ok: Callable[[UOp], bool], casts: Callable[[UOp], bool] = lambda r: False) -> dict[UOp, UOp]:
  """{sum: its reassociated form} for the sums of `nodes` that the rewrite above applies to and `ok` accepts; `casts(sum)`:
  are its factors read through float casts (product_factors)."""
  sums = [(r, j, *_space(r, casts(r))) for r in nodes if (j := _single_sum(r)) is not None]
  # the 16-bit casts of float32 sums: the value the graph rounds each to (read instead of the sum, module docstring)
  rounded: dict[UOp, UOp] = {}
  for n in nodes:
    if n.op is Ops.CAST and n.dtype in (dtypes.float16, dtypes.bfloat16) and n.src[0].dtype == dtypes.float32:
      if (below := strip_reshapes(n.src[0])).op is Ops.REDUCE: rounded[below] = n
  memo: dict[tuple[UOp, int], bool] = {}
  out: dict[UOp, UOp] = {}
  for r, *_ in sums:
    # (sums come in graph order: a rewritten sum read by this one's factors, a later layer's row term in the gradient flowing
    # into this layer, is replaced inside the new form too, or the schedule would still compute the old sum there)
    if ok(r) and (new := _rewrite(r, sums, memo, casts(r), rounded)) is not None: out[r] = substitute(new, out)
  return out
