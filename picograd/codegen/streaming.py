"""Streaming stores for the CPU (codegen layer): large elementwise outputs are written past the caches.

A plain store first reads the cache line it writes (write-allocate), so `a*b+c` over 16M floats
moves five arrays' worth of bytes for four. Non-temporal stores write whole lines straight to
memory. An output that large is evicted before anyone reads it again anyway, so nothing is lost.

LLVM's loop vectorizer refuses non-temporal stores it cannot prove aligned to the vector (its
scalar store has the element's alignment), so the pass upcasts the loop by one cache line of
elements itself and marks the copies `STORE(arg=("nontemporal", align))`: the first copy of each
line is 64-byte aligned (output buffers that large are page-aligned mappings, and the thread pool
splits the shortened loop at whole iterations), and the SLP vectorizer packs the copies into one
vector store that the backend emits as a streaming store (`vmovntps`). The renderer
(codegen/llvm.py) only prints the mark.
"""
from __future__ import annotations
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, substitute, toposort

LINE = 64  # bytes: one cache line, the widest vector store
STREAM_MIN_BYTES = 16 << 20  # outputs at least this large (past a core's share of the last-level cache) stream
MAX_BODY_OPS = 48  # a larger body is compute-bound (and 16 copies of it compile slowly): its stores stay plain


def plan_streaming(sink: UOp) -> UOp | None:
  """The kernel with its store upcast by a cache line and marked non-temporal, or None when the pass does not apply: one
  contiguous store over one loop (an elementwise kernel after loop merging) of at least STREAM_MIN_BYTES, no reduction."""
  if len(sink.src) != 1 or sink.src[0].op is not Ops.STORE or len(sink.src[0].src) != 3: return None
  store = sink.src[0]
  param, index, value = store.src
  nodes = toposort([sink])
  ranges = [n for n in nodes if n.op is Ops.RANGE]
  if len(ranges) != 1 or index is not ranges[0] or any(n.op is Ops.REDUCE for n in nodes): return None
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
