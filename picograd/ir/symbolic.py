"""Symbolic simplification: a PatternMatcher that folds constants and the div/mod arithmetic reshapes create.

Integer sums are normalized into linear forms {atom: coefficient} + constant, which makes the
key identities one-liners: `(c*q + r) // c == q` when 0 <= r < c (value-range analysis decides),
`(x//s)*(k*s) + (x%s)*k == x*k` (merging two loop dimensions back into one), and so on.
Division and modulo follow C (truncation); the div/mod rules only fire on non-negative operands.
"""
from __future__ import annotations
from typing import Callable
from picograd.dtype import DType, c_div, c_mod, dtypes
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, value_range


def _wrap(dtype: DType, v):
  """Fold a Python result back into the dtype's range (integers wrap like machine arithmetic)."""
  if dtype == dtypes.bool: return bool(v)
  if dtype.is_int:
    bits = 8 * dtype.itemsize
    v = int(v) & ((1 << bits) - 1)
    return v - (1 << bits) if not dtype.is_unsigned and v >= 1 << (bits - 1) else v
  return float(v)  # UOp.const rounds it to the dtype


PYTHON_ALU: dict[Ops, Callable] = {
  Ops.ADD: lambda a, b: a + b, Ops.MUL: lambda a, b: a * b, Ops.MAX: lambda a, b: a if a != a or a > b else b, Ops.NEG: lambda a: -a,
  Ops.CMPLT: lambda a, b: a < b, Ops.CMPNE: lambda a, b: a != b, Ops.IDIV: lambda a, b: c_div(a, b) if b != 0 else 0,
  Ops.MOD: lambda a, b: c_mod(a, b) if b != 0 else 0, Ops.AND: lambda a, b: a & b, Ops.OR: lambda a, b: a | b,
  Ops.XOR: lambda a, b: a ^ b, Ops.SHL: lambda a, b: a << b, Ops.SHR: lambda a, b: a >> b,
  Ops.WHERE: lambda c, a, b: a if c else b,
}


def fold_constants(x: UOp) -> UOp | None:
  if x.op not in PYTHON_ALU or not all(s.op is Ops.CONST for s in x.src): return None
  if x.op in (Ops.IDIV, Ops.MOD) and not x.dtype.is_int: return None
  args = [s.arg for s in x.src]
  if x.op is Ops.SHR and x.dtype.is_unsigned: args[0] &= (1 << (8 * x.dtype.itemsize)) - 1
  return UOp.const(x.dtype, _wrap(x.dtype, PYTHON_ALU[x.op](*args)))


# ---------------------------------------------------------------- linear forms

def linear(x: UOp) -> tuple[dict[UOp, int], int]:
  """Decompose an integer expression into ({atom: coefficient}, constant), looking through ADD, NEG and MUL by constants."""
  terms: dict[UOp, int] = {}
  const = 0
  stack = [(x, 1)]
  while stack:
    node, k = stack.pop()
    if node.op is Ops.CONST: const += k * node.arg
    elif node.op is Ops.ADD: stack.extend([(node.src[1], k), (node.src[0], k)])
    elif node.op is Ops.NEG: stack.append((node.src[0], -k))
    elif node.op is Ops.MUL and node.src[1].op is Ops.CONST: stack.append((node.src[0], k * node.src[1].arg))
    elif node.op is Ops.MUL and node.src[0].op is Ops.CONST: stack.append((node.src[1], k * node.src[0].arg))
    else: terms[node] = terms.get(node, 0) + k
  return {a: c for a, c in terms.items() if c != 0}, const


def from_linear(terms: dict[UOp, int], const: int, dtype: DType) -> UOp:
  out: UOp | None = None
  for atom, k in terms.items():
    t = atom if k == 1 else atom * UOp.const(dtype, k)
    out = t if out is None else out.alu(Ops.ADD, t)
  if out is None: return UOp.const(dtype, const)
  return out if const == 0 else out.alu(Ops.ADD, UOp.const(dtype, const))


def _merge_divmod_pairs(terms: dict[UOp, int]) -> dict[UOp, int]:
  """(x//s)*(k*s) + (x%s)*k  ->  x*k: undoes the split of one loop index into two dimensions."""
  changed = True
  while changed:
    changed = False
    for atom, k in list(terms.items()):
      if atom.op is not Ops.MOD or atom.src[1].op is not Ops.CONST or atom not in terms: continue
      inner, s = atom.src[0], atom.src[1].arg
      div = inner.alu(Ops.IDIV, atom.src[1])
      if terms.get(div) == k * s and inner.vmin >= 0:
        del terms[atom], terms[div]
        inner_terms, inner_const = linear(inner)
        for a, c in inner_terms.items(): terms[a] = terms.get(a, 0) + c * k
        terms = {a: c for a, c in terms.items() if c != 0}
        terms[_CONST_KEY] = terms.get(_CONST_KEY, 0) + inner_const * k
        changed = True
        break
  return terms


_CONST_KEY = UOp(Ops.CONST, dtypes.void, (), "linear-constant")


def normalize_sum(x: UOp) -> UOp | None:
  if not x.dtype.is_int: return None
  terms, const = linear(x)
  terms = _merge_divmod_pairs(terms)
  const += terms.pop(_CONST_KEY, 0)
  out = from_linear(terms, const, x.dtype)
  return None if out is x else out


def _split_by(x: UOp, c: int) -> tuple[UOp, UOp] | None:
  """x == c*q + r with every term non-negative; returns (q, r) or None when that split is not safe."""
  terms, const = linear(x)
  if const < 0 or any(k < 0 or a.vmin < 0 for a, k in terms.items()): return None
  q_terms, r_terms = {}, {}
  for a, k in terms.items():
    qk, rk = divmod(k, c)
    if qk: q_terms[a] = qk
    if rk: r_terms[a] = rk
  qc, rc = divmod(const, c)
  return from_linear(q_terms, qc, x.dtype), from_linear(r_terms, rc, x.dtype)


def _common_factor(x: UOp, c: int) -> tuple[UOp, UOp, int] | None:
  """x == g*y + r with g > 1 dividing c, every term non-negative and 0 <= r < g: (y, r, g), the largest such g among x's
  coefficients; else None. ((k*64 + i) // 2048 with i < 64 is k // 32: a reshape that merged two axes, split again.)"""
  terms, const = linear(x)
  if const < 0 or any(k < 0 or a.vmin < 0 for a, k in terms.items()): return None
  for g in sorted({k for k in terms.values() if 1 < k and c % k == 0}, reverse=True):
    big = {a: k // g for a, k in terms.items() if k % g == 0}
    rest = {a: k for a, k in terms.items() if k % g != 0}
    r = from_linear(rest, const, x.dtype)
    if big and r.vmax < g: return from_linear(big, 0, x.dtype), r, g
  return None


def simplify_div(x: UOp, c: UOp) -> UOp | None:
  if not x.dtype.is_int or c.arg <= 0: return None
  if c.arg == 1: return x
  if x.vmin >= 0 and x.vmax < c.arg: return UOp.const(x.dtype, 0)
  if x.op is Ops.IDIV and x.src[1].op is Ops.CONST and x.src[1].arg > 0 and x.src[0].vmin >= 0:
    return x.src[0].alu(Ops.IDIV, UOp.const(x.dtype, x.src[1].arg * c.arg))
  if (split := _split_by(x, c.arg)) is None: return None
  q, r = split
  if r.vmax < c.arg: return q
  if q.op is Ops.CONST and q.arg == 0:  # nothing divides out: a factor common to x and c may
    if (common := _common_factor(x, c.arg)) is None: return None
    y, _, g = common
    return y.alu(Ops.IDIV, UOp.const(x.dtype, c.arg // g))
  return q.alu(Ops.ADD, r.alu(Ops.IDIV, c))


def simplify_mod(x: UOp, c: UOp) -> UOp | None:
  if not x.dtype.is_int or c.arg <= 0: return None
  if c.arg == 1: return UOp.const(x.dtype, 0)
  if x.vmin >= 0 and x.vmax < c.arg: return x
  if x.op is Ops.MOD and x.src[1].op is Ops.CONST and x.src[1].arg % c.arg == 0 and x.src[0].vmin >= 0:
    return x.src[0].alu(Ops.MOD, c)
  if (split := _split_by(x, c.arg)) is None: return None
  _, r = split
  if r is x:  # nothing reduced: a factor common to x and c: (g*y + r) % c = (y % (c / g)) * g + r
    if (common := _common_factor(x, c.arg)) is None: return None
    y, rem, g = common
    return y.alu(Ops.MOD, UOp.const(x.dtype, c.arg // g)).alu(Ops.MUL, UOp.const(x.dtype, g)).alu(Ops.ADD, rem)
  return r if r.vmax < c.arg else r.alu(Ops.MOD, c)


def simplify_lt(x: UOp, c: UOp) -> UOp | None:
  lo, hi = value_range(x)
  if hi < c.arg: return UOp.const(dtypes.bool, True)
  if lo >= c.arg: return UOp.const(dtypes.bool, False)
  return None


symbolic = PatternMatcher([
  (UPat(name="x"), fold_constants),
  # identities that hold for every dtype
  (UPat(Ops.ADD, src=(UPat.var("x"), UPat.cvar("c"))), lambda x, c: x if c.arg == 0 and x.dtype.is_int else None),
  (UPat(Ops.MUL, src=(UPat.var("x"), UPat.cvar("c"))), lambda x, c: x if c.arg == 1 else (c if c.arg == 0 and x.dtype.is_int else None)),
  (UPat(Ops.MUL, src=(UPat.cvar("c"), UPat.var("x"))), lambda x, c: x if c.arg == 1 else (c if c.arg == 0 and x.dtype.is_int else None)),
  (UPat(Ops.WHERE, src=(UPat.cvar("c"), UPat.var("a"), UPat.var("b"))), lambda c, a, b: a if c.arg else b),
  (UPat(Ops.WHERE, src=(UPat.var(), UPat.var("a"), UPat.var("b")), name="w"), lambda w, a, b: a if a is b else None),
  (UPat(Ops.AND, dtype=dtypes.bool, src=(UPat.var("x"), UPat.cvar("c"))), lambda x, c: x if c.arg else c),
  (UPat(Ops.AND, dtype=dtypes.bool, src=(UPat.cvar("c"), UPat.var("x"))), lambda x, c: x if c.arg else c),
  (UPat(Ops.AND, dtype=dtypes.bool, src=(UPat.var("x"), UPat.var("y"))), lambda x, y: x if x is y else None),
  # a runtime check whose failure condition folded to false checks nothing
  (UPat(Ops.CHECK, src=(UPat.var("x"), UPat.cvar("bad"), UPat.cvar())), lambda x, bad: None if bad.arg else x),
  # integer index arithmetic
  (UPat((Ops.ADD, Ops.MUL, Ops.NEG), name="x"), normalize_sum),
  (UPat(Ops.IDIV, src=(UPat.var("x"), UPat.cvar("c"))), simplify_div),
  (UPat(Ops.MOD, src=(UPat.var("x"), UPat.cvar("c"))), simplify_mod),
  (UPat(Ops.CMPLT, src=(UPat.var("x"), UPat.cvar("c"))), lambda x, c: simplify_lt(x, c) if x.dtype.is_int else None),
])


def simplify(x: UOp) -> UOp:
  from picograd.ir.ops import graph_rewrite
  return graph_rewrite(x, symbolic)


__all__ = ["symbolic", "simplify", "linear", "PYTHON_ALU"]
