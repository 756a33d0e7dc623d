"""Recomputed products (engine layer): a large batched pairwise product with a short inner sum, read only by reductions, is
computed again inside each reduction that reads it instead of being stored.

Attention's scores x_ij = q_i . k_j (and in its backward dP_ij = dO_i . v_j) are B*H*T*T values, each a sum of only D
(the head size) products. Stored, they cost T x T memory and its traffic per kernel that reads them; recomputed, D
multiply-adds per read. The rule (general, not per function): a REDUCE(ADD) `r` over at most RECOMPUTE_INNER_MAX terms
whose product has two factors that share a batch axis of the output and each have one of their own (scores between two
sets per batch: q . k, dO . v; a layer's x @ W has no such shared axis, and stays stored), whose value flows through
elementwise and movement ops into reductions only (no output, no stored node reads it), and that has at least
RECOMPUTE_MIN elements (a flag, off by default), or RECOMPUTE_MASKED_MIN (2^20) when every path to its readers passes a
mask computed from positions alone (where(causal, x, -inf): the codegen skips the blocks above the diagonal, and only
then is the recomputed backward the faster one on the CPU, NOTES.md). Then `r` and the elementwise nodes between it and
those reductions get no buffer of their own: each reading kernel computes them (the softmax's weights exp(x - M) / S in
the kernels of O, dV, dQ and dK, with M and S stored: T values each). Devices: engine/schedule.py RECOMPUTE_DEVICES; the
CPU renders those kernels as register tiles (codegen/cpu_flash_bwd.py; the generic loop nest would recompute a score
once per output column, D times too often).

`recomputed(roots, nodes, consumers, ok)` returns the nodes to keep inside their readers' kernels.
"""
from __future__ import annotations
from typing import Callable
from picograd.helpers import RECOMPUTE_MIN, RECOMPUTE_MASKED_MIN, prod
from picograd.ir.ops import UOp, Ops, ALU, MOVEMENT, toposort
from picograd.engine.reassociate import product_factors

RECOMPUTE_INNER_MAX = 128  # terms of the inner sum (the head size D): recomputing costs this many multiply-adds per read


def _pairwise(r: UOp, through_cast: bool = False) -> bool:
  """Is `r` a sum of a product of two factors that share an output axis (a batch) and each have one the other lacks? With
  `through_cast`, of a float cast of such a product (autocast's: float32 sums of 16-bit products)."""
  value = r.src[0]
  if through_cast and value.op is Ops.CAST and value.dtype.is_float and value.src[0].dtype.is_float: value = value.src[0]
  shape = value.tshape
  labels = tuple(None if s == 1 else a for a, s in enumerate(shape))
  factors, _ = product_factors(value, labels)
  varying = [{x for x in lab if x is not None and x not in r.arg[1]} for _, lab in factors]
  varying = [v for v in varying if v]
  if len(varying) != 2: return False
  a, b = varying
  return bool(a & b) and bool(a - b) and bool(b - a)


def _region(r: UOp, consumers: dict[UOp, set[UOp]], roots: set[UOp]) -> set[UOp] | None:
  """The elementwise and movement nodes between `r` and the reductions reading it (with r), or None when one of them is an
  output or read by anything else (CONTIGUOUS, a copy, an assignment)."""
  region, stack = {r}, [r]
  while stack:
    n = stack.pop()
    if n in roots: return None
    for c in consumers.get(n, ()):
      if c.op is Ops.REDUCE or c in region: continue
      if c.op not in ALU and c.op not in MOVEMENT and c.op is not Ops.DETACH: return None
      region.add(c)
      stack.append(c)
  return region


def _strip_views(u: UOp) -> UOp:
  while u.op in (Ops.EXPAND, Ops.RESHAPE): u = u.src[0]
  return u


def _positional(gate: UOp) -> bool:
  """Is `gate` computed from positions alone (iotas and constants: causal, a window), reading no buffer and no reduction?"""
  return not any(n.op in (Ops.BUFFER, Ops.REDUCE, Ops.PARAM, Ops.AFTER) for n in toposort([gate]))


def _masked(r: UOp, region: set[UOp], consumers: dict[UOp, set[UOp]]) -> bool:
  """Does every path from `r` to the reductions reading it pass the value of a where(gate, value, constant) with a positional
  gate? (Then their codegen skips the blocks where the gate never holds: above a causal diagonal.)"""
  stack, seen = [r], {r}
  while stack:
    n = stack.pop()
    for c in consumers.get(n, ()):
      if c in seen: continue
      if c.op is Ops.WHERE and c.src[0] is not n and _strip_views(c.src[2]).op is Ops.CONST and _positional(c.src[0]): continue
      if c not in region: return False  # a reduction reached without the mask
      seen.add(c)
      stack.append(c)
  return True


def recomputed(roots: list[UOp], nodes: list[UOp], consumers: dict[UOp, set[UOp]], ok: Callable[[UOp], bool],
               through_cast: Callable[[UOp], bool] = lambda n: False) -> set[UOp]:
  """The nodes that stay inside the reductions reading them (see the module docstring); `ok(node)`: may its device recompute;
  `through_cast(node)`: is its product read through a float cast (CUDA: 16-bit products summed in float32)."""
  keep: set[UOp] = set()
  root_set = set(roots)
  least, masked_least = int(RECOMPUTE_MIN), int(RECOMPUTE_MASKED_MIN)
  for r in nodes:
    if r.op is not Ops.REDUCE or r.arg[0] is not Ops.ADD or not r.dtype.is_float or not ok(r): continue
    if prod(r.src[0].tshape[a] for a in r.arg[1]) > RECOMPUTE_INNER_MAX or r.size < min(least, masked_least) \
       or not _pairwise(r, through_cast(r)) or (region := _region(r, consumers, root_set)) is None: continue
    if r.size >= least or (r.size >= masked_least and _masked(r, region, consumers)): keep |= region
  return keep
