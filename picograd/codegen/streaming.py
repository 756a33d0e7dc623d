"""Streaming stores for the CPU (codegen layer): large elementwise and row-kernel outputs are written past the caches.

A plain store first reads the cache line it writes (write-allocate), so `a*b+c` over 16M floats
moves five arrays' worth of bytes for four. Non-temporal stores write whole lines straight to
memory. An output that large is evicted before anyone reads it again anyway, so nothing is lost.

LLVM's loop vectorizer refuses non-temporal stores it cannot prove aligned to the vector (its
scalar store has the element's alignment), so the pass upcasts the loop by one cache line of
elements itself and marks the copies `STORE(arg=("nontemporal", align))`: the first copy of each
line is 64-byte aligned (output buffers that large are page-aligned mappings, and the thread pool
splits the shortened loop at whole iterations), and the SLP vectorizer packs the copies into one
vector store that the backend emits as a streaming store (`vmovntps`). The renderer
(codegen/llvm.py) only prints the mark. A row kernel (layer_norm: per row its reductions, then a loop
over the row that stores) gets the same treatment on its row loop, the rows' reductions shared by
the copies (layer_norm 4096^2 ~20% faster, in-process A/B).
"""
from __future__ import annotations
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, substitute, toposort

LINE = 64  # bytes: one cache line, the widest vector store
STREAM_MIN_BYTES = 16 << 20  # outputs at least this large (past a core's share of the last-level cache) stream
MAX_BODY_OPS = 48  # a larger body is compute-bound (and 16 copies of it compile slowly): its stores stay plain


def plan_streaming(sink: UOp) -> UOp | None:
  """The kernel with its store upcast by a cache line and marked non-temporal, or None when the pass does not apply: one
  contiguous store over one loop (an elementwise kernel after loop merging) of at least STREAM_MIN_BYTES, no reduction;
  or a row kernel's (`_plan_row_streaming`)."""
  if len(sink.src) != 1 or sink.src[0].op is not Ops.STORE or len(sink.src[0].src) != 3: return None
  store = sink.src[0]
  param, index, value = store.src
  nodes = toposort([sink])
  ranges = [n for n in nodes if n.op is Ops.RANGE]
  if any(n.op is Ops.REDUCE for n in nodes): return _plan_row_streaming(sink, nodes)
  if len(ranges) != 1 or index is not ranges[0]: return None
  if value.dtype in (dtypes.bool, dtypes.bfloat16) or len(toposort([value])) > MAX_BODY_OPS: return None
  rng = ranges[0]
  # the loop index only addresses memory (same-shape operands), so every address becomes a 64-bit `line * lanes + c` and
  # the SLP vectorizer sees consecutive elements (32-bit indices are sign-extended, which hides it)
  if any(rng in n.src and not (n.op in (Ops.LOAD, Ops.STORE) and n.src[1] is rng and rng not in n.src[2:]) for n in nodes): return None
  itemsize = param.dtype.itemsize
  lanes = LINE // itemsize
  if rng.arg[1] * itemsize < STREAM_MIN_BYTES or rng.arg[1] % lanes: return None
  short = UOp(Ops.RANGE, dtypes.int64, (), (rng.arg[0], rng.arg[1] // lanes, rng.arg[2]))
  base = short * lanes
  at = [base + c if c else base for c in range(lanes)]
  stores = [UOp(Ops.STORE, store.dtype, (param, i, substitute(value, {rng: i})), ("nontemporal", LINE if c == 0 else itemsize))
            for c, i in enumerate(at)]
  return UOp(Ops.SINK, sink.dtype, tuple(stores), sink.arg)


def _line_multiple(u: UOp, lanes: int) -> bool:
  """Is integer expression `u` a multiple of `lanes` for every value of its loops (a row's first element, line-aligned)?"""
  if u.op is Ops.CONST: return u.arg % lanes == 0
  if u.op is Ops.MUL: return any(s.op is Ops.CONST and s.arg % lanes == 0 for s in u.src)
  return u.op is Ops.ADD and all(_line_multiple(s, lanes) for s in u.src)


def _plan_row_streaming(sink: UOp, nodes: list[UOp]) -> UOp | None:
  """A row kernel (layer_norm): per outer iteration its reductions, then a loop j over the row storing at `row + j`. The
  j loop is upcast by a cache line and its stores marked non-temporal, as for one loop, when the output is at least
  STREAM_MIN_BYTES, rows are whole lines (`row` a multiple of a line's elements), no reduction reads j, j only addresses
  memory (directly or as `row + j`; those indices become 64-bit) and the body is cheap: a transcendental body (softmax's
  exp) copied per lane is packed worse by SLP than the loop vectorizer does it, and is compute-bound anyway."""
  store = sink.src[0]
  param, index, value = store.src
  itemsize = param.dtype.itemsize
  lanes = LINE // itemsize
  if param.arg[1] * itemsize < STREAM_MIN_BYTES or value.dtype in (dtypes.bool, dtypes.bfloat16): return None
  # a row whose terms codegen/stored_terms.py stored is in cache when the output loop reads it back: the write-allocate is
  # paid already, and streaming the stores was no faster (softmax 4096^2, in-process A/B)
  if any(n.op is Ops.LOAD and n.src[0] is param for n in nodes): return None
  if index.op is Ops.RANGE: rng = index
  elif index.op is Ops.ADD and index.src[1].op is Ops.RANGE: rng = index.src[1]
  else: return None
  body = toposort([value], stop=lambda n: n.op is Ops.REDUCE)
  if rng.arg[1] % lanes or any(n.op in (Ops.EXP2, Ops.LOG2, Ops.SIN) for n in body) or len(body) > MAX_BODY_OPS: return None
  rows: dict[UOp, UOp] = {}  # row + j -> row
  for n in nodes:
    if rng not in n.src: continue
    if n.op is Ops.ADD and n.src[1] is rng and rng not in toposort([n.src[0]]) and _line_multiple(n.src[0], lanes): rows[n] = n.src[0]
    elif not (n.op in (Ops.LOAD, Ops.STORE) and n.src[1] is rng and rng not in n.src[2:]): return None
  def address_only(n: UOp) -> bool: return n.op in (Ops.LOAD, Ops.STORE) and n.src[1] in rows and not any(s in rows for s in n.src[2:])
  if any(any(s in rows for s in n.src) and not address_only(n) for n in nodes): return None
  if any(n.op is Ops.REDUCE and rng in toposort([n]) for n in nodes): return None
  short = UOp(Ops.RANGE, dtypes.int64, (), (rng.arg[0], rng.arg[1] // lanes, rng.arg[2]))
  base = short * lanes
  stores = []
  for c in range(lanes):
    at = base + c if c else base
    mapping = {rng: at, **{n: row.cast(dtypes.int64) + at for n, row in rows.items()}}
    stores.append(UOp(Ops.STORE, store.dtype, (param, mapping[index], substitute(value, mapping)), ("nontemporal", LINE if c == 0 else itemsize)))
  return UOp(Ops.SINK, sink.dtype, tuple(stores), sink.arg)
