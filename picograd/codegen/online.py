"""Online softmax (codegen layer): a lowered kernel's sums of exp(x - max x) * f become one pass with a running max.

After lowering, softmax-weighted sums look like this (j a reduction loop; x may hold a reduction of its own, q . k_j):

    M = REDUCE(MAX, x(j'), j')                          the row max, one pass over j'
    S = REDUCE(ADD, exp2((x(j'') - M) * c), j'')        the denominator, another pass
    R = REDUCE(ADD, exp2((x(j) - M) * c) * f(j), j)     the numerator, a third pass (per output column d)

Each such sum (a REDUCE(ADD) over one loop with a factor exp2((x - M) * c), c > 0, M the max of the same x over a loop of
the same size, x itself a reduction) becomes `RESCALED(term, scale, jb)` over blocks jb of KEY_BLOCK keys (unrolled):

    m = RUNNING_MAX(bmax, jb)   (bmax = the max of the block's x; m = the max over the blocks before this one, -inf first)
    m' = max(m, bmax);  s = m' if m' != -inf else 0      (a row that is -inf so far adds exp2(-inf) = 0, never -inf - -inf)
    term = sum over the block of exp2((x - s) * c) * f;  scale = exp2((m - s) * c);   acc = acc * scale + term

which at the end is sum_j exp2((x_j - M) * c) f_j: the same value in one pass, M not needed first (the max's own
accumulator over jb still gives it, for rows that are all -inf: NaN, as exp(-inf - -inf) gave). Factors that do not vary
along j (softmax's 1 / S) move out of the sum. Only sums whose x is a reduction are rewritten (their extra passes would
compute it again); a loaded x (a row softmax) keeps its plain passes. All sums of one max share its block loop and x
(hash-consed), so linearize runs them in one loop nest with the max's accumulator, which RUNNING_MAX reads before the
update. An output loop the sums vary along but x does not (attention's column d) is unrolled (`opt.upcast`, up to
MAX_COLUMNS), so every column shares the pass, and ROWS rows run in one pass, sharing each key and value they load.
Key blocks and rows are optimizations: NOOPT=1 takes one key and one row per step.
"""
from __future__ import annotations
import math
from picograd.helpers import NOOPT
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.opt import upcast

# columns unrolled into one pass: 64 accumulators (attention's head size) stay in four AVX-512 registers
MAX_COLUMNS = 64
# keys per step of the pass (a divisor of their count): one running-max update and one rescale per block of keys; and rows
# per pass. Measured on the 2-core Zen 4 (attention B=4 H=6 T=256 D=64): 1 x 1 26.8 ms, 8 x 1 13.2, 4 x 4 8.6, 16 x 4 worse
KEY_BLOCK = 4
ROWS = 4


def _factors(u: UOp) -> list[UOp]:
  """The operands of a product tree; `where(c, a, 0)` (dropout's mask) counts as the product of a and where(c, 1, 0)."""
  out, stack = [], [u]
  while stack:
    n = stack.pop()
    if n.op is Ops.MUL and n.dtype.is_float: stack.extend(n.src)
    elif _is_mask(n): stack.extend([n.src[1], n.src[0].where(UOp.const(n.dtype, 1.0), UOp.const(n.dtype, 0.0))])
    else: out.append(n)
  return out


def _is_mask(n: UOp) -> bool:
  return n.op is Ops.WHERE and n.dtype.is_float and n.src[2].op is Ops.CONST and n.src[2].arg == 0.0 and \
    not (n.src[1].op is Ops.CONST and n.src[1].arg == 1.0)


def _product(factors: list[UOp], dtype) -> UOp:
  out = UOp.const(dtype, 1.0)
  for f in factors: out = f if out.op is Ops.CONST and out.arg == 1.0 else out * f
  return out


def _exp_of_shifted(e: UOp) -> tuple[UOp, UOp, float] | None:
  """(x, M, c) when `e` is exp2((x - M) * c) with c > 0 and M a REDUCE(MAX) over one loop."""
  if e.op is not Ops.EXP2: return None
  arg, c = e.src[0], 1.0
  if arg.op is Ops.MUL and arg.src[1].op is Ops.CONST: arg, c = arg.src[0], arg.src[1].arg
  if not (isinstance(c, float) and c > 0) or arg.op is not Ops.ADD or arg.src[1].op is not Ops.NEG: return None
  x, m = arg.src[0], arg.src[1].src[0]
  if m.op is not Ops.REDUCE or m.arg is not Ops.MAX or len(m.src) != 2: return None
  return x, m, c


def _canonical(u: UOp, loop: UOp) -> UOp:
  """`u` with `loop` and the loops of the reductions inside it renamed by order of appearance: two lowerings of the same
  expression (each REDUCE gets fresh loops) become the same node."""
  inner = [r for n in toposort([u]) if n.op is Ops.REDUCE for r in n.src[1:]]
  names = {r: UOp(Ops.RANGE, r.dtype, (), (-1 - i, r.arg[1], "canonical")) for i, r in enumerate([loop, *dict.fromkeys(inner)])}
  return substitute(u, names)


def _rewrite_one(r: UOp, sink: UOp, blocks: dict[UOp, UOp]) -> UOp | None:
  """The online form of REDUCE(ADD) `r` of `sink` (see the module docstring), or None when it is not a rescaled sum. `blocks`: the
  loop over blocks of keys made for each max's loop, shared by every sum of that max."""
  if r.arg is not Ops.ADD or len(r.src) != 2 or not r.dtype.is_float: return None
  j = r.src[1]
  factors = _factors(r.src[0])
  for k, e in enumerate(factors):
    if (found := _exp_of_shifted(e)) is None: continue
    x, m, c = found
    j2 = m.src[1]
    if j2.arg[1] != j.arg[1] or _canonical(x, j) is not _canonical(m.src[0], j2): continue
    rest = factors[:k] + factors[k + 1:]
    varying = [f for f in rest if j in toposort([f])]
    outside = [f for f in rest if j not in toposort([f])]
    # only where x is itself a reduction (q . k): then each extra pass over the row would compute it again. A loaded x (a row
    # softmax, its gradient's sum of p * g) is cheaper in the passes it has, one max and one plain sum
    if not any(n.op is Ops.REDUCE for n in toposort([x])): continue
    x2, inf = m.src[0], UOp.const(r.dtype, -math.inf)
    # keys in blocks of `kb` (unrolled): one max, one rescale per block, and kb independent scores to overlap
    kb = max(d for d in range(1, min(j2.arg[1], 1 if NOOPT else KEY_BLOCK) + 1) if j2.arg[1] % d == 0)
    if kb > 1 and j2 not in blocks:  # a loop id of its own: the max's loop may still run elsewhere in the kernel
      blocks[j2] = UOp(Ops.RANGE, j2.dtype, (), (1 + max(n.arg[0] for n in toposort([sink]) if n.op is Ops.RANGE), j2.arg[1] // kb, "reduce"))
    loop = blocks[j2] if kb > 1 else j2
    keys = [{j2: loop * UOp.const(j2.dtype, kb) + UOp.const(j2.dtype, t)} if kb > 1 else {} for t in range(kb)]
    xs = [substitute(x2, key) for key in keys]
    block_max = xs[0]
    for xk in xs[1:]: block_max = block_max.alu(Ops.MAX, xk)
    running = UOp(Ops.RUNNING_MAX, r.dtype, (block_max, loop))
    new_max = running.alu(Ops.MAX, block_max)
    safe = new_max.ne(inf).where(new_max, UOp.const(r.dtype, 0.0))
    scale_c = UOp.const(r.dtype, c)
    rescale = UOp(Ops.EXP2, r.dtype, ((running + -safe) * scale_c,))
    term: UOp | None = None
    for xk, key in zip(xs, keys):
      p = UOp(Ops.EXP2, r.dtype, ((xk + -safe) * scale_c,))
      part = _product([p, *(substitute(substitute(f, {j: j2}), key) for f in varying)], r.dtype)
      term = part if term is None else term + part
    assert term is not None
    total = UOp(Ops.RESCALED, r.dtype, (term, rescale, loop))
    row_max = UOp(Ops.REDUCE, r.dtype, (block_max, loop), Ops.MAX)
    return row_max.ne(inf).where(_product([*outside, total], r.dtype), UOp.const(r.dtype, math.nan))
  return None


def online_softmax(sink: UOp) -> UOp:
  """`sink` with every rescaled sum in online form and the output loops its sums vary along unrolled (module docstring)."""
  changed = False
  blocks: dict[UOp, UOp] = {}
  while True:
    found = next(((r, new) for r in toposort([sink]) if r.op is Ops.REDUCE and (new := _rewrite_one(r, sink, blocks)) is not None), None)
    if found is None: break
    sink, changed = substitute(sink, {found[0]: found[1]}), True
  if not changed: return sink
  sink = graph_rewrite(sink, symbolic)
  # output loops (columns) a sum's terms vary along but its running max does not: unrolled, so they share the pass
  done: set[int] = set()
  while True:
    nodes = toposort([sink])
    loops = {g for n in nodes if n.op is Ops.RESCALED for g in _globals(n.src[0]) - _globals(n.src[1]) if g.arg[0] not in done}
    if not loops: break
    g = max(loops, key=lambda r: r.arg[0])
    done.add(g.arg[0])
    factor = max(d for d in range(1, min(g.arg[1], MAX_COLUMNS) + 1) if g.arg[1] % d == 0)
    if factor > 1: sink = graph_rewrite(upcast(sink, g, factor), symbolic)
  # rows: the innermost output loop the running max varies along, unrolled by ROWS; the rows share each loaded key and
  # value, and their independent chains (scores, max, exps) overlap where one row alone waits on each step's latency
  rows = sorted({g for n in toposort([sink]) if n.op is Ops.RESCALED for g in _globals(n.src[1]) if g.arg[1] % ROWS == 0},
                key=lambda r: r.arg[0])
  if rows and not NOOPT: sink = graph_rewrite(upcast(sink, rows[-1], ROWS), symbolic)
  return sink


def _globals(u: UOp) -> set[UOp]:
  return {n for n in toposort([u]) if n.op is Ops.RANGE and n.arg[2] == "global"}


def identity_gates(u: UOp, zero: bool, products: set[UOp]) -> list[UOp]:
  """Bools g reading none of `products` where u is a reduction's identity (0 when `zero`, else -inf) wherever g is false:
  where(g, a, identity) (and a's), a product with such a factor (each factor's: attention's causal mask and its dropout
  mask), exp2 of a -inf such, a sum with one or a positive multiple of one, through float casts. The sums over
  recomputed scores (cpu_flash_bwd.py, cuda/flash_bwd.py) skip the tiles where a positional one fails everywhere."""
  if u.op is Ops.CAST and u.dtype.is_float and u.src[0].dtype.is_float: return identity_gates(u.src[0], zero, products)
  if u.op is Ops.WHERE and u.src[2].op is Ops.CONST and u.src[2].arg == (0.0 if zero else -math.inf):
    return ([] if products & set(toposort([u.src[0]])) else [u.src[0]]) + identity_gates(u.src[1], zero, products)
  if zero and u.op is Ops.EXP2: return identity_gates(u.src[0], False, products)
  if u.op is Ops.MUL:
    const = [x for x in u.src if x.op is Ops.CONST]
    if not zero and not (len(const) == 1 and const[0].arg > 0): return []
    return [g for x in u.src if x.op is not Ops.CONST for g in identity_gates(x, zero, products)]
  if not zero and u.op is Ops.ADD: return [g for x in u.src for g in identity_gates(x, False, products)]
  return []


def outer_sum(value: UOp) -> UOp | None:
  """The one reduction of `value` that reads another (the sum over s of terms built from product sums), or None."""
  outer = [n for n in toposort([value]) if n.op is Ops.REDUCE and any(x.op is Ops.REDUCE for x in toposort([n.src[0]]))]
  return outer[0] if len(outer) == 1 and len(outer[0].src) == 2 else None


def inner_sums(value: UOp) -> list[UOp]:
  """The reductions under `value` that read no other (a recomputed score's product sum), in graph order."""
  return [n for n in toposort([value]) if n.op is Ops.REDUCE and not any(x.op is Ops.REDUCE for x in toposort([n.src[0]]))]


def product_key(p: UOp) -> tuple:
  """Product sum `p` up to the name of its inner loop and the order of its factors."""
  body = substitute(p.src[0], {p.src[1]: UOp(Ops.RANGE, p.src[1].dtype, (), (-1, p.src[1].arg[1], "reduce"))})
  return (p.arg, frozenset(body.src) if body.op is Ops.MUL else frozenset([body]))


def merge_equal_sums(sink: UOp) -> UOp:
  """`sink` with each product sum equal to an earlier one (`product_key`) replaced by it: lowered separately, the stores of
  one kernel (dK and dV) each have their own copy of q . k."""
  firsts: dict[tuple, UOp] = {}
  same = {p: firsts.setdefault(product_key(p), p) for p in inner_sums(sink)}
  return substitute(sink, {p: q for p, q in same.items() if p is not q})


def one_loop(sink: UOp) -> UOp | None:
  """A kernel of several stores (dK and dV: engine/schedule.py merges the reductions over one recomputed product) with the
  stores' sums over one loop s, and equal product sums as one node; None where the stores' sums run over loops of
  different sizes."""
  outers = [outer_sum(st.src[2]) for st in sink.src]
  if any(o is None for o in outers): return None
  s = outers[0].src[1]  # type: ignore[union-attr]
  if any(o.src[1].arg[1] != s.arg[1] for o in outers): return None  # type: ignore[union-attr]
  return merge_equal_sums(substitute(sink, {o.src[1]: s for o in outers[1:]}))  # type: ignore[union-attr]


__all__ = ["online_softmax", "MAX_COLUMNS", "identity_gates", "outer_sum", "one_loop", "inner_sums", "product_key", "merge_equal_sums"]
