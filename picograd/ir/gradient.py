"""Reverse-mode differentiation (IR layer): chain rules as a PatternMatcher table, and the driver that applies them.

Each rule matches one primitive and receives `grad`, the gradient of the loss with respect to
the matched node, which is the op's *output* (captured as `out`); it returns one gradient per
source of `out`, in order, with None for a source that gets none. Every rule builds plain UOps,
so the gradient is itself a lazy graph: it is fused, scheduled and compiled like the forward
pass, and it can be differentiated again. The rules use UOp's operators (a Python number becomes
a constant broadcast to the node's shape), so they read like the math: `-(grad * (out * out))`.

Only floating-point nodes carry gradient. Comparisons, bitwise and integer arithmetic, IOTA and
constants therefore need no rule: the driver never asks. DETACH is where the flow stops.

This file works on UOps only; `Tensor.backward` and `Tensor.gradient` sit on top of it.
"""
from __future__ import annotations
import math
from typing import Any, Callable, cast
from picograd.dtype import dtypes
from picograd.helpers import argsort
from picograd.ir.ops import UOp, Ops, UPat, PatternMatcher, toposort, print_graph, substitute
from picograd.ir.provenance import derive

Grads = tuple[UOp | None, ...]


def _full_like(u: UOp, value: float) -> UOp:
  """A constant broadcast to `u`'s shape (tensor-level constants are scalars reshaped and expanded, as the frontend makes them)."""
  return UOp.const(u.dtype, value).reshape((1,) * len(u.tshape)).expand(u.tshape)


def _zeros_like(a: UOp) -> UOp: return _full_like(a, 0.0)


def _sum_to(grad: UOp, axes: tuple[int, ...]) -> UOp:
  """Sum `grad` over `axes`, keeping them as size-1 dims. Half types accumulate in float32, as the forward sum does."""
  if grad.dtype in (dtypes.float16, dtypes.bfloat16):
    return grad.cast(dtypes.float32).reduce(Ops.ADD, axes).cast(grad.dtype)
  return grad.reduce(Ops.ADD, axes)


def _max_grads(grad: UOp, out: UOp) -> Grads:
  a, b = out.src
  # PyTorch's maximum: the smaller side gets nothing, a tie splits the gradient in half, and where either side is
  # NaN (unordered: neither smaller nor equal) both sides take all of it
  share = a.ne(b).where(grad, grad * 0.5)
  return ((a < b).where(_zeros_like(grad), share), (b < a).where(_zeros_like(grad), share))


def _reduce_grads(grad: UOp, out: UOp) -> Grads:
  x = out.src[0]
  op, axes = out.arg
  if op is Ops.ADD: return (grad.expand(x.tshape),)
  # REDUCE MAX (PyTorch's amax): every position equal to the max shares the gradient evenly
  is_max = x.ne(out.expand(x.tshape)).where(_zeros_like(x), _full_like(x, 1.0))
  count = _sum_to(is_max, axes)
  return (is_max * (grad / count).expand(x.shape),)


def _moved(grad: UOp, src_device: str, dst_device: str) -> UOp:
  return grad if src_device == dst_device else UOp(Ops.COPY, grad.dtype, (grad,), (src_device, dst_device))


def _collective_grads(grad: UOp, out: UOp) -> Grads:
  """A collective's output on devices[index] sends its gradient back to each input's device: an all-reduce's sum to
  every input (a max's only where that input holds the max), an all-gather's slice j to input j, a reduce-scatter's
  slice to its place in every input, a broadcast's to the root."""
  kind, op, devices, index, root = out.arg
  here = devices[index]
  if kind == "broadcast": return (_moved(grad, here, devices[root]),)
  if kind == "allgather":
    m = out.src[0].tshape[0]
    return tuple(_moved(grad.shrink(((j * m, (j + 1) * m),)), here, d) for j, d in enumerate(devices))
  if kind == "reducescatter":
    m, total = out.tshape[0], out.src[0].tshape[0]
    return tuple(_moved(grad.pad(((index * m, total - (index + 1) * m),)), here, d) for d in devices)
  if op == "sum": return tuple(_moved(grad, here, d) for d in devices)
  # MAX: ties between devices each take the whole gradient (PyTorch has no cross-device max to compare with)
  outs = [UOp(Ops.COLLECTIVE, out.dtype, out.src, (kind, op, devices, j, root)) for j in range(len(devices))]
  return tuple(x.ne(o).where(_zeros_like(x), _moved(grad, here, d)) for x, o, d in zip(out.src, outs, devices))


def _expand_grads(grad: UOp, out: UOp) -> Grads:
  x = out.src[0]
  return (_sum_to(grad, tuple(i for i, (a, b) in enumerate(zip(x.tshape, out.tshape)) if a != b)),)


def _fmod_grads(grad: UOp, out: UOp) -> Grads:
  """fmod: out = a - trunc(a / b) b. trunc(q) is q - fmod(q, 1), or q itself where that is NaN (q infinite), as PyTorch's."""
  a, b = out.src
  q = a / b
  frac = q % 1.0
  trunc = frac.ne(frac).where(q, q - frac)
  return (grad, -(grad * trunc))


def _checkpoint_grads(grad: UOp, out: UOp) -> Grads:
  """CHECKPOINT(value, *inputs, *shared) with arg = len(inputs): differentiate a *recomputation* of value, not value itself.

  The copy reads each input through AFTER(input, grad), so its nodes are new (the forward's are not
  read again: they die with the forward) and its kernels wait until this gradient exists (the
  recomputation happens in the backward). `shared` are the sources the copy keeps (parameters);
  they get their gradients through it like the inputs.
  """
  value, inputs, shared = out.src[0], out.src[1:1 + out.arg], out.src[1 + out.arg:]
  later = {x: UOp(Ops.AFTER, x.dtype, (x, grad)) for x in inputs}
  targets = [later[x] for x in inputs if x.dtype.is_float] + list(shared)
  # the caller's walk carries the targets' gradients on from here: the walk must not also go below them (into the checkpoint
  # before this one, whose sources share parameters with this one's)
  grads = compute_gradient(substitute(value, later), grad, targets, leaves=True)
  return (None, *(grads.get(later[x]) for x in inputs), *(grads.get(s) for s in shared))


def _rule(op: Ops, fn: Callable[[UOp, UOp], Grads]) -> tuple[UPat, Callable[..., Any]]:
  """A table entry: PatternMatcher passes the rewrite context (here, the output's gradient) as `ctx`."""
  return (UPat(op, name="out"), lambda ctx, out: fn(ctx, out))


LN2 = math.log(2)

# one rule per differentiable primitive: (grad of out, out) -> grads of out.src
gradient_rules = PatternMatcher([
  _rule(Ops.ADD, lambda grad, out: (grad, grad)),
  _rule(Ops.MUL, lambda grad, out: (grad * out.src[1], grad * out.src[0])),
  _rule(Ops.NEG, lambda grad, out: (-grad,)),
  # d/dx 2^x = 2^x ln 2: reuse the output instead of recomputing it
  _rule(Ops.EXP2, lambda grad, out: (grad * (out * LN2),)),
  _rule(Ops.LOG2, lambda grad, out: (grad * (out.src[0].reciprocal() * (1 / LN2)),)),
  # cos x = sin(pi/2 - x): SIN is the only trigonometric primitive
  _rule(Ops.SIN, lambda grad, out: (grad * (math.pi / 2 - out.src[0]).alu(Ops.SIN),)),
  _rule(Ops.SQRT, lambda grad, out: (grad * (out.reciprocal() * 0.5),)),
  _rule(Ops.RECIPROCAL, lambda grad, out: (-(grad * (out * out)),)),
  _rule(Ops.MAX, _max_grads),
  _rule(Ops.MOD, _fmod_grads),
  _rule(Ops.WHERE, lambda grad, out: (None, out.src[0].where(grad, _zeros_like(grad)), out.src[0].where(_zeros_like(grad), grad))),
  _rule(Ops.CAST, lambda grad, out: (grad.cast(out.src[0].dtype),)),
  _rule(Ops.REDUCE, _reduce_grads),
  _rule(Ops.RESHAPE, lambda grad, out: (grad.reshape(out.src[0].tshape),)),
  _rule(Ops.PERMUTE, lambda grad, out: (grad.permute(tuple(argsort(list(out.arg)))),)),
  _rule(Ops.EXPAND, _expand_grads),
  _rule(Ops.PAD, lambda grad, out: (grad.shrink(tuple((b, b + d) for (b, _), d in zip(out.arg, out.src[0].tshape))),)),
  _rule(Ops.SHRINK, lambda grad, out: (grad.pad(tuple((b, d - e) for (b, e), d in zip(out.arg, out.src[0].tshape))),)),
  _rule(Ops.FLIP, lambda grad, out: (grad.flip(out.arg),)),
  # CONTIGUOUS(arg="backward") is a kernel boundary in the backward pass too (scans and sorting networks, whose
  # unbounded fused gradients would read 2^steps values per element)
  _rule(Ops.CONTIGUOUS, lambda grad, out: (UOp(Ops.CONTIGUOUS, grad.dtype, (grad,), out.arg) if out.arg == "backward" else grad,)),
  _rule(Ops.CHECK, lambda grad, out: (grad, None)),  # the value passes through; its condition has no gradient
  # a copy's gradient travels back the other way: arg is (source device, destination device)
  _rule(Ops.COPY, lambda grad, out: (UOp(Ops.COPY, grad.dtype, (grad,), (out.arg[1], out.arg[0])),)),
  _rule(Ops.COLLECTIVE, _collective_grads),
  # ASSIGN(target, value) holds value: the old contents of the target do not reach the output
  _rule(Ops.ASSIGN, lambda grad, out: (None, grad)),
  _rule(Ops.AFTER, lambda grad, out: (grad, None)),  # AFTER(x, dep) is x
  _rule(Ops.CHECKPOINT, _checkpoint_grads),
])


def _carries_gradient(u: UOp) -> bool: return u.dtype.is_float


def nodes_between(root: UOp, targets: set[UOp], leaves: bool = False) -> list[UOp]:
  """The nodes on a path from `root` down to any of `targets`, children first. Paths end at DETACH and at non-float nodes,
  and with `leaves` at the targets (nothing below a target is visited)."""
  order = toposort([root], stop=lambda n: n.op is Ops.DETACH or (leaves and n in targets))
  on_path: set[UOp] = set()
  for node in order:
    if node in targets or (node.op is not Ops.DETACH and _carries_gradient(node) and any(s in on_path for s in node.src)):
      on_path.add(node)
  return [n for n in order if n in on_path]


def compute_gradient(root: UOp, root_grad: UOp, targets: list[UOp], leaves: bool = False) -> dict[UOp, UOp]:
  """Gradients of `root` (seeded with `root_grad`, same shape) with respect to each of `targets` reached from it.

  Targets that `root` does not depend on are missing from the result. Visits the nodes between
  the root and the targets in reverse topological order, so each node's gradient is complete
  (summed over all its consumers) before its rule runs. With `leaves`, a target's gradient counts
  only the paths that do not pass through another target (the walk stops at targets).
  """
  if root_grad.shape != root.shape: raise ValueError(f"gradient: seed shape {root_grad.shape} does not match output shape {root.shape}")
  wanted = set(targets)
  path = nodes_between(root, wanted, leaves)
  on_path = set(path)
  grads: dict[UOp, UOp] = {root: root_grad} if root in on_path else {}
  for node in reversed(path):
    grad = grads.get(node)
    if grad is None or not node.src or (leaves and node in wanted): continue
    # a target may itself sit above another target, so the walk continues through it
    src_grads = cast("Grads | None", gradient_rules.rewrite(node, ctx=grad))  # this table's rules return Grads, not a node
    if src_grads is None: raise NotImplementedError(f"gradient: no chain rule for {node.op.name} ({node.dtype.name})")
    derive(node, src_grads)  # the gradient nodes remember the forward lines they came from
    for src, g in zip(node.src, src_grads):
      if g is None or src not in on_path: continue
      grads[src] = g if src not in grads else grads[src] + g
  return {t: grads[t] for t in targets if t in grads}


def gradient_graph_text(root: UOp, root_grad: UOp, targets: list[UOp]) -> str:
  """The gradient graph (before scheduling) as text: one node per line, each target's gradient named at the end."""
  grads = compute_gradient(root, root_grad, targets)
  roots = [grads[t] for t in targets if t in grads]
  text = print_graph(*roots) if roots else "(no target is reached from the output)"
  names = {node: f"%{i}" for i, node in enumerate(toposort(roots))}
  tail = [f"grad[{i}] = {names[grads[t]] if t in grads else 'zeros (not reached)'}" for i, t in enumerate(targets)]
  return "\n".join([text, *tail])


__all__ = ["gradient_rules", "compute_gradient", "nodes_between", "gradient_graph_text"]
