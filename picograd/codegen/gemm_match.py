"""Which CPU kernels are matrix products, and how the blocked GEMM cuts them (codegen layer); `cpu_gemm.py` renders them.

`match_gemm(sink)` recognizes a lowered kernel whose one STORE holds one float32 sum of a product
a[.., i, k] * b[.., k, j]: a runs along loops b does not (the rows i) and b along loops a does not
(the columns j); the other output loops are a batch and the reduction loops are k (several are
flattened into one; several such sums added, as a 3x3 convolution's 9 shifted-view products, are one
sum over their loops in turn; several sums each gated to one setting of output loops, as its weight gradient's 9
kernel offsets, are a GEMM batched over those loops whose tiles sum only the term of their batch value; several sums each
zero at the output positions where its gate fails, as its input gradient's 9 offsets at the padding, are one sum of
terms whose row operand carries the gate).
The factors are loads with affine indices (any strides: `x @ W.T`, `a.T @ g`, batched or broadcast operands)
or elementwise work on loads (a relu's mask, pad gates, a cast);
any elementwise work around the sum (a bias, an activation, a cast) is the epilogue. The sizes of the register tile,
the packed panels and the K blocks are decided here too (`k_block`, `_panel_sizes`), as what DEBUG=3 says (`describe`).
"""
from __future__ import annotations
import functools
from dataclasses import dataclass
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.opt import _evaluate

# Rows of the register tile and vectors per row: MR * NR / lanes accumulators (12 of 32 AVX-512 registers)
# hide the FMA latency on two FMA pipes with room for the b vectors and broadcasts.
MR = 6
VECTORS = 2
# Bytes of a packed b block (K x NC floats): a block and the MR rows of a being read fit in a 1 MiB L2.
PACK_BYTES = 1 << 19
# Sums longer than KC run in K blocks of at most KC (equal blocks), each row tile's partial sums kept between blocks in
# a stack buffer of at most C_BYTES for a group of the thread's tiles: the tile's 6 rows of a block of a (24 KiB) stay
# in L1 across the panels. 2-core Zen 5, against one block of all of K: 2048^3 439 -> 458 GFLOP/s, a.T @ b 2048
# 265 -> 348, x.T @ dy over 8192 rows 107 -> 321 (KC 512: 206, 2048: 239, 4096: 124 at 32768 rows).
KC = 1024
C_BYTES = 1 << 18
# Bytes of packed rows of a transposed a: the tiles packed together, a few of a thread's next ones.
A_GROUP_BYTES = 1 << 18
# Each thread packs all of b for its rows: with fewer rows than this and a b of more elements, packing costs more than
# it saves (8 x 512 x 512: 64 us against the loop nest's 42; 12 x 128 x 384: 23 against 52).
FEW_ROWS, SMALL_B = 32, 1 << 16
# Below this many multiply-adds the generic loop nest's upcast tiles do about as well (64^3: 17.7 us either way, the
# makemore MLP's 32 x 200 x 27: 18 against 22) and compile faster (~30 ms less a kernel: cold start-up).
MIN_MACS = 1 << 18
# Sums gated by the batch (a convolution's weight gradient) are matched where the batch has at most this many values:
# the term each batch value reads is a table in the kernel.
MAX_GATED_BATCH = 64


@functools.cache
def vector_lanes() -> int:
  """float32 lanes of the host's vector registers: 16 with AVX-512, else 8 (AVX2; LLVM splits wider types elsewhere)."""
  import llvmlite.binding as llvm
  return 16 if "+avx512f" in llvm.get_host_cpu_features().flatten().split(",") else 8


def _affine(index: UOp) -> tuple[int, dict[UOp, int]] | None:
  """`index` as constant + sum of coefficient * loop, or None when it is not affine in the loops (div, mod, a load)."""
  if index.op is Ops.CONST: return int(index.arg), {}
  if index.op is Ops.RANGE: return 0, {index: 1}
  if index.op is Ops.ADD:
    a, b = _affine(index.src[0]), _affine(index.src[1])
    if a is None or b is None: return None
    terms = dict(a[1])
    for r, c in b[1].items(): terms[r] = terms.get(r, 0) + c
    return a[0] + b[0], terms
  if index.op is Ops.MUL and Ops.CONST in (index.src[0].op, index.src[1].op):
    x, c = (index.src[1], index.src[0].arg) if index.src[0].op is Ops.CONST else (index.src[0], index.src[1].arg)
    if (ax := _affine(x)) is None: return None
    return ax[0] * int(c), {r: v * int(c) for r, v in ax[1].items()}
  return None


Offsets = tuple[int, dict[UOp, int]]  # constant + coefficient per loop, in elements


@dataclass(frozen=True)
class Gemm:
  """A matched product: the loops by role and the two operands, with the strides of those that are plain loads."""
  store: UOp
  total: UOp                # the REDUCE (or the ADD of the REDUCEs): the epilogue reads its value from the tile
  a: UOp                    # the left operand's value a[.., i, k] (of the first term): a load, or elementwise work on loads
  b: UOp                    # the right operand's value b[.., k, j]
  batch: tuple[UOp, ...]    # global loops other than i and j, outermost first
  i: UOp
  j: UOp
  ks: tuple[UOp, ...]       # the reduction loops, outermost first
  k: UOp                    # they as one loop (a stand-in RANGE when there are several, or several terms)
  a_off: Offsets | None     # a plain load's offsets along i, k and the batch loops; None: computed from `a` while packing
  b_off: Offsets | None
  # (a, b, reduction loops) of each product summed (a convolution's shifted views): k runs through the terms in turn
  terms: tuple[tuple[UOp, UOp, tuple[UOp, ...]], ...]
  # the REDUCEs (one a term) and, for sums each gated by the batch (exactly one on for each batch value), the term on
  # for each flattened batch value: then k runs through that term alone
  sums: tuple[UOp, ...] = ()
  select: tuple[int, ...] | None = None
  # with `select`: every term's b is the same operand (up to its reduction loops), so b is packed once for all batch values
  b_shared: bool = False
  # sums of where(mask, value, 0): one operand is the mask's bits (ALL_ONES or 0), and the tile adds `and`s of the bits
  masked: bool = False

  @property
  def sizes(self) -> tuple[int, int, int]: return self.i.arg[1], self.j.arg[1], self.k.arg[1]


def _merge_k(ks: tuple[UOp, ...], k: UOp, off: Offsets) -> Offsets | None:
  """A load's offsets with the reduction loops `ks` (outermost first) as the one loop `k` over their row-major
  flattening, where the load steps through them as through one loop (a weight gradient summing over batch and time:
  k1 * T * C + k2 * C); None where it does not (or does not run along k at all)."""
  if any(off[1].get(outer, 0) != off[1].get(inner, 0) * inner.arg[1] for outer, inner in zip(ks, ks[1:])): return None
  if off[1].get(ks[-1], 0) == 0: return None
  return off[0], {**{r: c for r, c in off[1].items() if r not in ks}, k: off[1][ks[-1]]}


def _loads_offsets(x: UOp, ks: tuple[UOp, ...], k: UOp) -> Offsets | None:
  """The offsets of operand `x` when it is a plain float32 load with an affine index that runs along k, else None."""
  if x.op is not Ops.LOAD or len(x.src) != 2 or x.src[0].op is not Ops.PARAM: return None
  off = _affine(x.src[1])
  return None if off is None else _merge_k(ks, k, off)


def _unit_loads(x: UOp, r: UOp) -> int:
  """How many loads in operand `x` step by one element along loop `r` (a pad's gated load by its index when valid)."""
  n = 0
  for ld in toposort([x]):
    if ld.op is not Ops.LOAD or len(ld.src) < 2: continue
    idx = ld.src[1].src[1] if ld.src[1].op is Ops.WHERE else ld.src[1]
    if (off := _affine(idx)) is not None and abs(off[1].get(r, 0)) == 1: n += 1
  return n


def _size(ks: tuple[UOp, ...]) -> int:
  out = 1
  for r in ks: out *= r.arg[1]
  return out


def _sum_of(value: UOp, totals: set[UOp]) -> UOp | None:
  """The smallest ADD in `value` whose tree of ADDs has exactly the REDUCEs `totals` as leaves, if any."""
  leaves: dict[UOp, frozenset[UOp] | None] = {}
  for n in toposort([value]):
    if n in totals: leaves[n] = frozenset([n])
    elif n.op is Ops.ADD and (l := leaves.get(n.src[0])) is not None and (r := leaves.get(n.src[1])) is not None: leaves[n] = l | r
    else: leaves[n] = None
    if n.op is Ops.ADD and leaves[n] == totals: return n
  return None


def _gated_sum_of(value: UOp, totals: set[UOp]) -> tuple[UOp, dict[UOp, UOp]] | None:
  """The smallest ADD in `value` whose tree of ADDs has as leaves WHERE(gate, R, 0) (or R, gated by true) for exactly the
  REDUCEs R in `totals` (a convolution's weight gradient: each kernel offset's sum padded into its place; its input
  gradient: each offset's sum zero where its view is padding, the centre's nowhere), with each R's gate."""
  leaves: dict[UOp, frozenset[UOp] | None] = {}
  gates: dict[UOp, UOp] = {}
  for n in toposort([value]):
    if n.op is Ops.WHERE and n.src[1] in totals and n.src[2].op is Ops.CONST and n.src[2].arg == 0:
      leaves[n], gates[n.src[1]] = frozenset([n.src[1]]), n.src[0]
    elif n in totals: leaves[n], gates[n] = frozenset([n]), UOp.const(dtypes.bool, True)
    elif n.op is Ops.ADD and (l := leaves.get(n.src[0])) is not None and (r := leaves.get(n.src[1])) is not None: leaves[n] = l | r
    else: leaves[n] = None
    if n.op is Ops.ADD and leaves[n] == totals: return n, gates
  return None


def _pins(gates: list[UOp]) -> list[dict[UOp, int]] | None:
  """For each of `gates`, the one setting of the (global) loops they read where it holds, where every setting of those
  loops has exactly one gate on (a convolution's weight gradient: each kernel offset's sum at its offset); else None."""
  loops = sorted(set().union(*(_loops(x) for x in gates)), key=lambda r: r.arg[0])
  if any(r.arg[2] != "global" for r in loops) or _size(tuple(loops)) > MAX_GATED_BATCH: return None
  pins: list[list[dict[UOp, int]]] = [[] for _ in gates]
  for flat in range(_size(tuple(loops))):
    env, rest = {}, flat
    for r in reversed(loops): env[r], rest = rest % r.arg[1], rest // r.arg[1]
    on = [t for t, x in enumerate(gates) if _evaluate(x, env)]
    if len(on) != 1: return None
    pins[on[0]].append(env)
  return [p[0] for p in pins] if all(len(p) == 1 for p in pins) else None


def _loops(x: UOp) -> set[UOp]: return {n for n in toposort([x]) if n.op is Ops.RANGE}


# a mask's `true` as the bits of a float: all ones, so `and` with a value's bits gives the value (cpu_gemm's masked sums)
ALL_ONES = UOp(Ops.BITCAST, dtypes.float32, (UOp.const(dtypes.int32, -1),))


def _factors(body: UOp) -> tuple[UOp, UOp, bool] | None:
  """(a, b, masked) of a sum's term: a float32 product a * b, or where(c, v, 0) (a one-hot selection: an embedding's
  gradient sums where(index == v, dy, 0) over tokens) as the mask c in float bits (ALL_ONES or 0) and v, masked True."""
  if body.op is Ops.MUL and all(f.dtype == dtypes.float32 for f in body.src): return body.src[0], body.src[1], False
  if body.op is Ops.WHERE and body.dtype == dtypes.float32:
    c, on, off = body.src
    if off.op is Ops.CONST and off.arg == 0: return c.where(ALL_ONES, UOp.const(dtypes.float32, 0.0)), on, True
    if on.op is Ops.CONST and on.arg == 0: return c.where(UOp.const(dtypes.float32, 0.0), ALL_ONES), off, True
  return None


def _unclamped(x: UOp) -> UOp:
  """`x` with each load whose index is where(gate, idx, 0) reading idx itself where idx stays inside the buffer for every
  value of its loops (lowering gates every load under a pad's gate; a weight's index never leaves the weight)."""
  swap = {}
  for ld in toposort([x]):
    if ld.op is not Ops.LOAD or len(ld.src) != 2 or ld.src[0].op is not Ops.PARAM or ld.src[1].op is not Ops.WHERE: continue
    idx = ld.src[1].src[1]
    if ld.src[1].src[2].op is Ops.CONST and 0 <= idx.vmin and idx.vmax < ld.src[0].arg[1]: swap[ld] = UOp(Ops.LOAD, ld.dtype, (ld.src[0], idx))
  return substitute(x, swap) if swap else x


def _gated_terms(totals: list[UOp], gates: dict[UOp, UOp]) -> list[tuple[UOp, UOp, tuple[UOp, ...]]] | None:
  """Sums of products each zero where its gate on the output loops fails, where(g, sum_k a * b, 0), as terms sum_k where(g, a, 0) * b
  with the gate on the one factor that runs along its loops (a convolution's input gradient: the shifted view of dy); None
  where a factor other than that one reads the gate's loops. Bit for bit the same sums where b is finite (0 * inf is NaN)."""
  positions = set().union(*(_loops(g) for g in gates.values()))
  if not positions or any(r.arg[2] != "global" for r in positions): return None
  terms = []
  for x in totals:
    g, ks = gates[x], tuple(sorted(x.src[1:], key=lambda r: r.arg[0]))
    fa, fb = (_unclamped(f) for f in x.src[0].src)
    along = [f for f in (fa, fb) if _loops(f) & positions]
    if len(along) != 1: return None
    rows, cols = along[0], (fb if along[0] is fa else fa)
    terms.append((rows if g.op is Ops.CONST and g.arg is True else g.where(rows, UOp.const(dtypes.float32, 0.0)), cols, ks))
  return terms


def _same_operand(terms: list[tuple[UOp, UOp, tuple[UOp, ...]]], side: int) -> bool:
  """Whether every term's operand on `side` (0: a, 1: b) is the first term's up to the names of its reduction loops."""
  operands = [t[0] if side == 0 else t[1] for t in terms]
  first_ks = terms[0][2]
  for x, (_, _, ks) in zip(operands[1:], terms[1:]):
    if [r.arg[1] for r in ks] != [r.arg[1] for r in first_ks]: return False
    if substitute(x, dict(zip(ks, first_ks))) is not operands[0]: return False
  return True


def match_gemm(sink: UOp) -> Gemm | None:
  """The GEMM form of lowered kernel `sink`, or None when it is not one float32 sum of a product (see the module doc)."""
  if len(sink.src) != 1 or (st := sink.src[0]).op is not Ops.STORE or len(st.src) != 3: return None
  nodes = toposort([sink])
  if any(n.op is Ops.CHECK for n in nodes): return None
  totals = [n for n in toposort([st.src[2]]) if n.op is Ops.REDUCE]
  if not totals or any(x.arg is not Ops.ADD or x.dtype != dtypes.float32 for x in totals): return None
  # several sums added (a 3x3 convolution: one per kernel offset) are one sum over their loops in turn; several each gated
  # by the batch (its weight gradient) one GEMM a batch value over the sum it reads
  gates: dict[UOp, UOp] | None = None
  if (total := totals[0] if len(totals) == 1 else _sum_of(st.src[2], set(totals))) is None:
    if (gated := _gated_sum_of(st.src[2], set(totals))) is None: return None
    total, gates = gated
  if any(n.op is Ops.REDUCE and n is not total for n in toposort([st.src[2]], stop=lambda x: x is total)): return None
  # gated sums: each term is read only at its gate's setting of the loops, so its operands are simplified there (the pad's
  # index arithmetic then no longer mentions the output's other loops); or each is zero where its gate fails
  factors: list[tuple[UOp, UOp, bool]] = []
  for x in totals:
    if (f := _factors(x.src[0])) is None or any(r.arg[1] == 0 for r in x.src[1:]): return None
    factors.append(f)
  if len({f[2] for f in factors}) != 1: return None
  masked = factors[0][2]
  pins = None if gates is None else _pins([gates[x] for x in totals])
  terms: list[tuple[UOp, UOp, tuple[UOp, ...]]]
  if gates is not None and pins is None:
    if masked or (gated_terms := _gated_terms(totals, gates)) is None: return None
    terms, gates = gated_terms, None
  else:
    terms = []
    for t, x in enumerate(totals):
      fa, fb, _ = factors[t]
      if pins is not None:
        fixed = {r: UOp.const(r.dtype, v) for r, v in pins[t].items()}
        fa, fb = (graph_rewrite(substitute(f, fixed), symbolic) for f in (fa, fb))
      terms.append((fa, fb, tuple(sorted(x.src[1:], key=lambda r: r.arg[0]))))
  size = sum(_size(t[2]) for t in terms) if gates is None else _size(terms[0][2])
  if gates is not None and any(_size(t[2]) != size for t in terms): return None
  glob = sorted((n for n in nodes if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  if any(n.op is Ops.RANGE and n.arg[2] != "global" and not any(n in t[2] for t in terms) for n in nodes): return None
  deps = (set().union(*(_loops(t[0]) for t in terms)), set().union(*(_loops(t[1]) for t in terms)))
  only = [[g for g in glob if g in deps[x] and g not in deps[1 - x]] for x in (0, 1)]
  if not only[0] or not only[1]: return None
  # rows and columns: the innermost loop only a (only b) runs along; any others (a batch of a that b is broadcast over)
  # join the batch loops
  i, j = only[0][-1], only[1][-1]
  batch = tuple(g for g in glob if g is not i and g is not j)

  def varies(side: int) -> bool:
    """Whether that side's operand changes with the batch: reads its loops, or differs between the terms batch values read."""
    return (pins is not None and not _same_operand(terms, side)) or any(r in deps[side] for r in batch)
  # b is packed once a thread where it stays the same across the batch (a convolution's weight gradient: dy, the same for
  # every kernel offset, where the shifted input differs), so the operand that changes with the batch is a; and where too
  # few rows would pack a large b (a 27-class output layer's weight gradient, 27 x 512 against 512 x 200), the other way
  def few_rows(i: UOp, j: UOp, b_side: int) -> bool:
    """Too few rows for each thread to pack all of b (counting the rows of every batch value b stays the same across)."""
    return i.arg[1] * (1 if varies(b_side) else _size(batch)) < FEW_ROWS and size * j.arg[1] > SMALL_B
  swap = (varies(1) and not varies(0)) or (few_rows(i, j, 1) and not few_rows(j, i, 0) and not (varies(0) and not varies(1)))
  if swap: terms, deps, i, j = [(fb, fa, ks) for fa, fb, ks in terms], (deps[1], deps[0]), j, i
  a, b, ks = terms[0]
  # a stand-in RANGE (never rendered) names the flattened loop in the operands' offsets
  k = ks[0] if len(terms) == 1 and len(ks) == 1 else UOp(Ops.RANGE, ks[-1].dtype, (), (ks[-1].arg[0], size, "reduce"))
  if any(r.arg[1] == 0 for r in glob): return None
  # (the batch values' products count together where b is packed once for all of them: x @ W over a batch of sequences)
  if i.arg[1] * j.arg[1] * k.arg[1] * (1 if varies(1) else _size(batch)) < MIN_MACS or i.arg[1] < 2 or j.arg[1] < 2 or few_rows(i, j, 1):
    return None
  select = None
  if pins is not None:
    # the term each flattened batch value (innermost fastest) reads
    if not set(pins[0]) <= set(batch) or _size(batch) > MAX_GATED_BATCH: return None
    table = []
    for flat in range(_size(batch)):
      env, rest = {}, flat
      for r in reversed(batch): env[r], rest = rest % r.arg[1], rest // r.arg[1]
      table.append(next(t for t, p in enumerate(pins) if all(env[r] == v for r, v in p.items())))
    select = tuple(table)
  a_off, b_off = (_loads_offsets(a, ks, k), _loads_offsets(b, ks, k)) if len(terms) == 1 else (None, None)
  return Gemm(st, total, a, b, batch, i, j, ks, k, a_off, b_off, tuple(terms), tuple(totals), select,
              select is not None and _same_operand(terms, 1), masked)


def describe(g: Gemm) -> list[str]:
  """What DEBUG=3 lists for a kernel rendered as a GEMM."""
  lanes, (m, n, k) = vector_lanes(), g.sizes
  nr, nc = _panel_sizes(g)
  batch = "x".join(str(b.arg[1]) for b in g.batch)
  a = "read in place" if g.a_off is not None and abs(g.a_off[1][g.k]) == 1 else "packed k-major" if g.a_off is not None else "computed k-major"
  shared = ", b the same for all" if g.b_shared else ""
  sums = f" ({len(g.terms)} sums{', one a batch value by its gate' + shared if g.select is not None else ''})" if len(g.terms) > 1 else ""
  kc = k_block(g)
  blocks = f" (K in blocks of {kc}, partial sums kept between them)" if kc < k else ""
  masked = " of where(mask, value, 0)" if g.masked else ""
  return [f"gemm {batch + ' x ' if batch else ''}{m}x{n}x{k}{sums}{masked}: b {'packed' if g.b_off is not None else 'computed'} in {kc}x{nr} panels, "
          f"blocks of {nc} columns{blocks}; a {a}; {MR}x{nr} register tile of <{lanes} x float> fmuladds; batch x row tiles split across threads"]


def k_block(g: Gemm) -> int:
  """The length of the K blocks (the last may be shorter): all of K up to KC, else K cut into equal blocks of at most KC."""
  k = g.sizes[2]
  return -(-k // -(-k // KC))


def _panel_sizes(g: Gemm) -> tuple[int, int]:
  """(NR, NC): the register tile's columns and the packed block's columns (a multiple of NR, at most N rounded up)."""
  nr = VECTORS * vector_lanes()
  n, kc = g.sizes[1], k_block(g)
  nc = max(nr, PACK_BYTES // (4 * kc) // nr * nr)
  return nr, min(nc, -(-n // nr) * nr)


def row_tiles(g: Gemm) -> int:
  """The outer loop the runtime splits across threads: every batch's row tiles."""
  batches = 1
  for b in g.batch: batches *= b.arg[1]
  return batches * -(-g.sizes[0] // MR)


__all__ = ["Gemm", "match_gemm", "describe", "row_tiles", "vector_lanes", "k_block"]
