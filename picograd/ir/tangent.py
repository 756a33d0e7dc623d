"""Forward-mode differentiation (IR layer): tangent rules as a PatternMatcher table, and the driver that pushes tangents up a graph.

Where the gradient table (ir/gradient.py) maps an output's gradient back to its sources, this
table maps the sources' tangents forward to the output's: the directional derivative of the op
along the inputs' tangents (a dual number's second half, propagated one primitive at a time).
Each rule matches one primitive (`out`) and receives the tangents of its sources, in order, with
None for a source whose tangent is zero: zeros stay symbolic, so a constant operand costs
nothing and `inf * 0` never turns into NaN. A rule returns the tangent of `out`.

The rules build plain UOps with UOp's operators (a Python number becomes a constant broadcast to
the node's shape), so they read like the math: d(1/x) = -(dx * out * out). The tangent graph is
therefore lazy like everything else: it is fused with the primal computation it reads,
scheduled and compiled like any graph, and it can itself be differentiated (forward over reverse
gives Hessian-vector products).

Only floating-point nodes carry a tangent; DETACH is where the flow stops. `frontend/transforms.py`
builds `jvp`, `jacobian` and `hessian` on top of `compute_tangent`.
"""
from __future__ import annotations
import math
from typing import Callable
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, toposort

Tangent = UOp | None
LN2 = math.log(2)


def _zeros_like(u: UOp) -> UOp: return UOp.const(u.dtype, 0.0).reshape((1,) * len(u.tshape)).expand(u.tshape)


def _sum(*terms: Tangent) -> Tangent:
  """The sum of the nonzero terms (None when all are zero)."""
  out: Tangent = None
  for t in terms:
    if t is not None: out = t if out is None else out + t
  return out


def _mul(out: UOp, ta: Tangent, tb: Tangent) -> Tangent:
  a, b = out.src
  return _sum(ta and ta * b, tb and a * tb)


def _max(out: UOp, ta: Tangent, tb: Tangent) -> Tangent:
  """maximum: the larger side's tangent; at a tie the mean of both (the gradient table's even split, and PyTorch's)."""
  a, b = out.src
  def share(t: UOp, loses: UOp) -> UOp: return loses.where(_zeros_like(t), a.ne(b).where(t, t * 0.5))
  return _sum(ta and share(ta, a < b), tb and share(tb, b < a))


def _fmod(out: UOp, ta: Tangent, tb: Tangent) -> Tangent:
  """fmod: out = a - trunc(a / b) b, so d out = da - trunc(a / b) db (the gradient table's trunc, NaN-safe for infinite q)."""
  a, b = out.src
  if tb is None: return ta
  q = a / b
  frac = q % 1.0
  return _sum(ta, -(tb * frac.ne(frac).where(q, q - frac)))


def _where(out: UOp, tc: Tangent, ta: Tangent, tb: Tangent) -> Tangent:
  if ta is None and tb is None: return None
  cond = out.src[0]
  return cond.where(ta if ta is not None else _zeros_like(out), tb if tb is not None else _zeros_like(out))


def _reduce(out: UOp, t: Tangent) -> Tangent:
  assert t is not None, "the driver calls one-source rules only with a tangent"
  op, axes = out.arg
  if op is Ops.ADD: return t.reduce(Ops.ADD, axes)
  # REDUCE MAX (amax): the mean of the tangents at the positions equal to the max, as PyTorch's amax and the gradient split it
  x = out.src[0]
  is_max = x.ne(out.expand(x.tshape)).where(_zeros_like(x), _zeros_like(x) + 1.0)
  return (is_max * t).reduce(Ops.ADD, axes) / is_max.reduce(Ops.ADD, axes)


def _same_op(out: UOp, t: Tangent) -> Tangent:
  """Linear ops whose tangent is the op applied to the tangent: movement ops (PAD pads with zeros), copies, boundaries."""
  assert t is not None, "the driver calls one-source rules only with a tangent"
  return UOp(out.op, t.dtype, (t,), out.arg)


def _rule(op: Ops, fn: Callable[..., Tangent]) -> tuple[UPat, Callable[..., Tangent]]:
  """A table entry: PatternMatcher passes the rewrite context (here, the sources' tangents) as `ctx`."""
  return (UPat(op, name="out"), lambda ctx, out: fn(out, *ctx))


# one rule per differentiable primitive: (out, tangents of out.src) -> tangent of out
tangent_rules = PatternMatcher([
  _rule(Ops.ADD, lambda out, ta, tb: _sum(ta, tb)),
  _rule(Ops.MUL, _mul),
  _rule(Ops.NEG, lambda out, t: -t),
  # d 2^x = 2^x ln 2 dx: reuse the output instead of recomputing it
  _rule(Ops.EXP2, lambda out, t: t * (out * LN2)),
  _rule(Ops.LOG2, lambda out, t: t * (out.src[0].reciprocal() * (1 / LN2))),
  # cos x = sin(pi/2 - x): SIN is the only trigonometric primitive
  _rule(Ops.SIN, lambda out, t: t * (math.pi / 2 - out.src[0]).alu(Ops.SIN)),
  _rule(Ops.SQRT, lambda out, t: t * (out.reciprocal() * 0.5)),
  _rule(Ops.RECIPROCAL, lambda out, t: -(t * (out * out))),
  _rule(Ops.MAX, _max),
  _rule(Ops.MOD, _fmod),
  _rule(Ops.WHERE, _where),
  _rule(Ops.CAST, lambda out, t: t.cast(out.dtype)),
  _rule(Ops.REDUCE, _reduce),
  *[_rule(op, _same_op) for op in (Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP, Ops.CONTIGUOUS, Ops.COPY)],
  _rule(Ops.CHECK, lambda out, t, tok: t),  # the value passes through; its condition has no tangent
  # ASSIGN(target, value) holds value
  _rule(Ops.ASSIGN, lambda out, ttarget, tvalue: tvalue),
  # AFTER(x, dep) is x; CHECKPOINT(value, *inputs) is value (its other sources only feed the backward's recomputation)
  _rule(Ops.AFTER, lambda out, t, tdep: t),
  _rule(Ops.CHECKPOINT, lambda out, t, *_: t),
])


def compute_tangent(roots: list[UOp], seeds: dict[UOp, UOp]) -> list[UOp | None]:
  """The tangent of each of `roots` when each node in `seeds` moves along its tangent (same shape), or None where it is zero.

  Visits the nodes below the roots children first (not below a seeded node or a DETACH), so every
  source's tangent is complete before its consumer's rule runs. A seeded node's tangent is its
  seed, whatever lies below it: seeds are independent variables.
  """
  for node, seed in seeds.items():
    if seed.shape != node.shape: raise ValueError(f"tangent: seed shape {seed.shape} does not match its input's shape {node.shape}")
  tangents: dict[UOp, UOp] = dict(seeds)
  for node in toposort(roots, stop=lambda n: n.op is Ops.DETACH or n in seeds):
    if node in tangents or node.op is Ops.DETACH or not node.dtype.is_float: continue
    src_tangents = tuple(tangents.get(s) for s in node.src)
    if all(t is None for t in src_tangents): continue
    if node.op not in tangent_rules.by_op: raise NotImplementedError(f"tangent: no rule for {node.op.name} ({node.dtype.name})")
    # a rule's None is a zero tangent (a WHERE whose branches are both constant, an ASSIGN of a constant value)
    if (out := tangent_rules.rewrite(node, ctx=src_tangents)) is not None: tangents[node] = out
  return [tangents.get(r) for r in roots]


__all__ = ["tangent_rules", "compute_tangent"]
