"""Function transforms (frontend layer): `jvp`, `vjp`, `jacobian`, `hessian` and `checkpoint`, as in torch.func and JAX.

The transforms of a function trace it once on *placeholders*: fresh tensors over buffers that
are never allocated, so they are nodes no other graph shares (UOps are hash-consed, and two
primals, or a primal and a tensor the function closes over, may otherwise be one node). The
derivative graphs are built on the traced graph (ir/tangent.py pushes tangents forward,
ir/gradient.py pulls gradients back) and every placeholder is then replaced by its primal. So
the results are ordinary lazy graphs over the primals: the outputs are the very nodes `f(x)`
would build, the derivatives share the forward's work and fuse with it, and the results can be
transformed again (`hessian` is forward over reverse). Like JAX's tracers, a traced function
cannot read its inputs' values (`item()`, `numpy()`): the placeholders hold no data.

`checkpoint(fn, *args)` marks fn's output so that its gradient recomputes fn from its inputs
(ir/gradient.py's CHECKPOINT rule) instead of reading the forward's intermediates, which the
engine then frees as soon as the forward is done with them.
"""
from __future__ import annotations
from typing import Any, Callable, Sequence
import numpy as np
from picograd.ir.ops import UOp, Ops, toposort, substitute
from picograd.ir.gradient import compute_gradient
from picograd.ir.tangent import compute_tangent
from picograd.runtime.device import Buffer
from picograd.tensor import Tensor
from picograd.frontend.movement import stack

Outputs = Tensor | tuple[Tensor, ...] | list[Tensor]


def _as_tensors(xs: Any, what: str, op: str) -> tuple[Tensor, ...]:
  """A Tensor or a sequence of Tensors, as a tuple."""
  items = (xs,) if isinstance(xs, Tensor) else tuple(xs) if isinstance(xs, (tuple, list)) else None
  if items is None or not all(isinstance(t, Tensor) for t in items):
    raise TypeError(f"{op}: {what} must be a Tensor or a tuple of Tensors, not {type(xs).__name__}")
  return items


def _check_float(ts: Sequence[Tensor], what: str, op: str) -> None:
  for t in ts:
    if not t.dtype.is_float: raise RuntimeError(f"{op}: {what} must be floating point to be differentiated, not {t.dtype.name}")


class _Placeholder(Buffer):
  """The memory of a traced input: it holds no data, so a kernel that would read it raises (a traced function that
  calls `item()` or `numpy()` on what depends on its inputs) instead of reading whatever the allocator had."""

  @property
  def handle(self) -> Any:
    raise RuntimeError("a function being transformed (jvp, vjp, jacobian, hessian) read its inputs' values (item(), numpy(), "
                       "or a realize): its inputs are placeholders that hold no data; compute with them lazily instead")


class _Trace:
  """`f` applied to placeholders for `primals`: the traced outputs, and the way back to graphs over the primals."""

  def __init__(self, f: Callable[..., Any], primals: tuple[Tensor, ...], op: str):
    self.primals = primals
    self.holders = [p._new(UOp(Ops.BUFFER, p.dtype, (), _Placeholder(p.device, p.numel(), p.dtype)).reshape(p.shape)) for p in primals]
    saved, Tensor.no_grad = Tensor.no_grad, False  # the transform differentiates whatever the caller's grad mode
    try:
      out = f(*self.holders)
    finally:
      Tensor.no_grad = saved
    self.single = isinstance(out, Tensor)
    self.container = type(out)
    self.outputs = _as_tensors(out, "the function's outputs", op)
    # the frontend reaches a tensor's graph only through its node (it never strips a reshape), so placeholder nodes are the whole story
    self.binding = {h.uop: p.uop for h, p in zip(self.holders, self.primals)}

  def bind(self, like: Tensor, u: UOp) -> Tensor:
    """A tensor over `u` with the primals in place of the placeholders (on `like`'s device)."""
    return like._new(substitute(u, self.binding))

  def pack(self, outs: list[Tensor]) -> Outputs:
    """`outs` in the structure the function returned (a Tensor, a tuple or a list)."""
    return outs[0] if self.single else self.container(outs)

  def tangents(self, seeds: dict[int, UOp]) -> list[Tensor]:
    """The outputs' tangents when input i moves along seeds[i] (the other inputs stay put); zeros where they do not move."""
    ts = compute_tangent([o.uop for o in self.outputs], {self.holders[i].uop: s for i, s in seeds.items()})
    return [self.bind(o, t) if t is not None else o.zeros_like() for o, t in zip(self.outputs, ts)]

  def gradients(self, cotangents: Sequence[Tensor]) -> list[Tensor]:
    """The vector-Jacobian product: for each input, the sum over outputs of cotangent times d(output)/d(input)."""
    targets = [h.uop for h in self.holders]
    total: dict[UOp, UOp] = {}
    for o, ct in zip(self.outputs, cotangents):
      if not o.dtype.is_float: continue
      for t, g in compute_gradient(o.uop, ct.uop.cast(o.dtype), targets).items():
        total[t] = total[t] + g if t in total else g
    return [self.bind(p, total[h.uop]) if h.uop in total else p.zeros_like() for h, p in zip(self.holders, self.primals)]


def jvp(f: Callable[..., Any], primals: Tensor | Sequence[Tensor], tangents: Tensor | Sequence[Tensor]) -> tuple[Outputs, Outputs]:
  """Forward mode, as `torch.func.jvp`: `(f(*primals), J_f(primals) @ tangents)`, the outputs' tangents in f's output structure.

  One tangent per primal, of its shape; the tangent graph is lazy and fuses with the forward it reads.
  """
  ps = _as_tensors(primals, "primals", "jvp")
  ts = _as_tensors(tangents, "tangents", "jvp")
  if len(ps) != len(ts): raise ValueError(f"jvp: {len(ps)} primals but {len(ts)} tangents")
  for i, (p, t) in enumerate(zip(ps, ts)):
    if p.shape != t.shape: raise ValueError(f"jvp: tangent {i} has shape {t.shape}, its primal {p.shape}")
    if p.device != t.device: raise RuntimeError(f"jvp: tangent {i} is on {t.device}, its primal on {p.device}")
  _check_float(ps, "primals", "jvp")
  trace = _Trace(f, ps, "jvp")
  outs = [trace.bind(o, o.uop) for o in trace.outputs]
  tangent_outs = trace.tangents({i: t.uop.cast(p.dtype) for i, (p, t) in enumerate(zip(ps, ts))})
  return trace.pack(outs), trace.pack(tangent_outs)


def vjp(f: Callable[..., Any], *primals: Tensor) -> tuple[Outputs, Callable[[Any], tuple[Tensor, ...]]]:
  """Reverse mode, as `torch.func.vjp`: `(f(*primals), vjp_fn)`; `vjp_fn(cotangents)` (in f's output structure: a Tensor
  for one output) returns one gradient per primal, the cotangents pulled back through f."""
  ps = _as_tensors(primals, "primals", "vjp")
  _check_float(ps, "primals", "vjp")
  trace = _Trace(f, ps, "vjp")
  outs = [trace.bind(o, o.uop) for o in trace.outputs]

  def vjp_fn(cotangents: Any) -> tuple[Tensor, ...]:
    cts = _as_tensors(cotangents, "cotangents", "vjp_fn")
    if len(cts) != len(outs): raise ValueError(f"vjp_fn: {len(cts)} cotangents for {len(outs)} outputs")
    for i, (o, ct) in enumerate(zip(outs, cts)):
      if o.shape != ct.shape: raise ValueError(f"vjp_fn: cotangent {i} has shape {ct.shape}, its output {o.shape}")
    return tuple(trace.gradients(cts))

  return trace.pack(outs), vjp_fn


def _basis(like: Tensor) -> list[Tensor]:
  """The unit vectors of `like`'s shape, each its own buffer: every tangent graph has one structure, so its kernels compile once."""
  return [Tensor(row.reshape(like.shape), dtype=like.dtype, device=like.device) for row in np.eye(like.numel())]


def jacobian(f: Callable[..., Any], x: Tensor | Sequence[Tensor], mode: str = "auto") -> Any:
  """The Jacobian of f at x, of shape `output.shape + input.shape`, as torch.func's jacfwd / jacrev.

  `mode="forward"` pushes one tangent per input element (a column each), `"reverse"` pulls one
  cotangent per output element (a row each); `"auto"` picks forward when the inputs have fewer
  elements than the outputs, as one chooses between JAX's jacfwd and jacrev. With a tuple of
  inputs the result is a tuple per input; with a tuple of outputs, a tuple per output of those.
  """
  if mode not in ("auto", "forward", "reverse"): raise ValueError(f"jacobian: mode must be 'auto', 'forward' or 'reverse', not {mode!r}")
  xs = _as_tensors(x, "x", "jacobian")
  _check_float(xs, "x", "jacobian")
  trace = _Trace(f, xs, "jacobian")
  outs = trace.outputs
  if mode == "auto": mode = "forward" if sum(t.numel() for t in xs) < sum(o.numel() for o in outs) else "reverse"
  blocks: list[list[Tensor]] = [[] for _ in outs]  # [output][input]
  if mode == "forward":
    for i, xi in enumerate(xs):
      columns = [trace.tangents({i: e.uop}) for e in _basis(xi)]  # [element of xi][output]
      for k, o in enumerate(outs):
        blocks[k].append(stack([c[k].contiguous() for c in columns], dim=-1).reshape(o.shape + xi.shape) if columns else
                         Tensor.zeros(o.shape + xi.shape, dtype=o.dtype, device=o.device))
  else:
    for k, o in enumerate(outs):
      zeros = [t.zeros_like() for t in outs]
      rows = [trace.gradients([e if j == k else z for j, z in enumerate(zeros)]) for e in _basis(o)]  # [element of o][input]
      for i, xi in enumerate(xs):
        blocks[k].append(stack([r[i].contiguous() for r in rows]).reshape(o.shape + xi.shape) if rows else
                         Tensor.zeros(o.shape + xi.shape, dtype=xi.dtype, device=xi.device))
  per_output = [b[0] if isinstance(x, Tensor) else tuple(b) for b in blocks]
  return per_output[0] if trace.single else tuple(per_output)


def hessian(f: Callable[..., Any], x: Tensor | Sequence[Tensor]) -> Any:
  """Second derivatives of f at x, shape `output.shape + input.shape + input.shape`, as `torch.func.hessian`: forward over reverse
  (the forward-mode Jacobian of the reverse-mode one: one gradient graph, one tangent per input element through it)."""
  return jacobian(lambda *a: jacobian(f, a[0] if isinstance(x, Tensor) else a, mode="reverse"), x, mode="forward")


def checkpoint(fn: Callable[..., Any], *args: Any) -> Any:
  """`fn(*args)`, whose backward recomputes fn from its tensor arguments instead of keeping its intermediates (torch.utils.checkpoint).

  The forward runs as usual. The gradient of each output is taken through a second copy of fn's
  graph that waits for that gradient (ir/gradient.py), so the schedule recomputes fn during the
  backward and the forward's intermediates die with the forward: memory for fn's inputs only.
  Parameters fn closes over get their gradients as usual; random draws (dropout) repeat exactly,
  because the copy reads the same counters. Gradients equal those without the checkpoint.
  """
  out = fn(*args)
  if Tensor.no_grad: return out
  inputs = list(dict.fromkeys(a.uop for a in args if isinstance(a, Tensor)))
  outs = _as_tensors(out, "fn's outputs", "checkpoint")
  marked = [o._new(UOp(Ops.CHECKPOINT, o.dtype, (o.uop, *inputs, *_frontier(o.uop, set(inputs))), len(inputs))) if o.dtype.is_float else o
            for o in outs]
  return marked[0] if isinstance(out, Tensor) else type(out)(marked)


def _frontier(value: UOp, inputs: set[UOp]) -> list[UOp]:
  """The nodes the recomputation of `value` shares with the forward: float sources of the part of value's graph that depends
  on `inputs`, themselves independent of them and reading memory (parameters fn closes over, and views of them)."""
  depends: dict[UOp, bool] = {}
  reads: dict[UOp, bool] = {}
  for n in toposort([value], stop=lambda n: n in inputs):
    depends[n] = n in inputs or any(depends[s] for s in n.src)
    reads[n] = n in inputs or n.op is Ops.BUFFER or any(reads[s] for s in n.src)
  return list(dict.fromkeys(s for n, d in depends.items() if d and n not in inputs for s in n.src
                            if not depends[s] and reads[s] and s.dtype.is_float))


__all__ = ["jvp", "vjp", "jacobian", "hessian", "checkpoint"]
