"""Putting a kernel on the GPU as IR rewrites (codegen layer): the passes that map a lowered kernel's loops onto blocks,
threads and vector lanes, emitting the kernel-level ops of ir/ops.py (SPECIAL, GUARD, DEFINE_LOCAL, GROUP_REDUCE,
VECTORIZE, GEP) so that every decision is in the IR (DEBUG=3 names them, DEBUG=5 prints the program) and the renderer
(`table.py`) only prints ops.

They rewrite the lowered kernel, a SINK of STOREs over RANGE loops (what the CPU optimizer sees too):

- `map_flat`: the output loops become digits of a flat thread index blockIdx.x * B + threadIdx.x (a GUARD lets the
  threads past the end leave); reductions stay loops inside each thread. NOOPT=1 maps every kernel this way.
- `map_lanes`: first `vector_lanes` splits the innermost output loop by four: four neighbouring outputs per thread,
  one 16-byte LOAD (arg=4) taken apart by GEPs where an index moves by one along the loop, and a STORE of a VECTORIZE.
- `map_block`: a block per output. Each top-level reduction is dealt out to the block's threads (`deal_out`:
  iteration j = thread + B * i of a loop i that is B times shorter, gated where B does not divide the size) and the
  partials are combined by a GROUP_REDUCE; the stores then come from thread 0.
- `map_row`: a row reduction broadcast back over its row (softmax, layer_norm): a block per row, or a warp per row
  (eight rows to a block). The row's reductions are dealt out as in `map_block`, and so are its column loops, four
  lanes at a time where an access allows; each thread stores its own columns.

- `map_split` / `map_columns`: few outputs over a huge reduction: several blocks per output (or group of outputs) store
  partials to device scratch (DEFINE_GLOBAL), take tickets (ATOMIC_ADD between fences and barriers) and the last block
  to arrive combines the partials in order (`last_block`). Effects are ordered by sources, so the linearizer keeps them.

Matrix products (SIMT and tensor cores) are the passes of `tiling.py`.
"""
from __future__ import annotations
import itertools
from typing import Callable, Iterator
from picograd.dtype import DType, dtypes
from picograd.helpers import ceildiv, prod
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.lower import reduce_identity
from picograd.codegen.linearize import loop_deps
from picograd.codegen.cuda.analysis import contiguous_in
from picograd.codegen.cuda.emit import BLOCK
from picograd.codegen.cuda.ops import VEC4_TYPES


def special(kind: str, n: int) -> UOp:
  """blockIdx.x ("block", n blocks) or threadIdx.x ("thread", n threads to a block)."""
  return UOp(Ops.SPECIAL, dtypes.int32, (), (kind, n))


def index_type(size: int) -> DType: return dtypes.int64 if size >= 2**31 else dtypes.int32


def digits(ranges: list[UOp], flat: UOp) -> dict[UOp, UOp]:
  """Each loop of `ranges` (outermost first) as its digit of the row-major flat index `flat`."""
  out: dict[UOp, UOp] = {}
  stride = 1
  for r in reversed(ranges):
    d = flat if stride == 1 else flat // stride
    if r is not ranges[0]: d = d % r.arg[1]
    out[r] = d.cast(r.dtype)
    stride *= r.arg[1]
  return out


def _sink(like: UOp, stores: list[UOp], guard: UOp | None = None) -> UOp:
  return UOp(Ops.SINK, like.dtype, ((UOp(Ops.GUARD, dtypes.void, (guard,)),) if guard is not None else ()) + tuple(stores), like.arg)


def _gate(store: UOp, gate: UOp) -> UOp:
  """`store` done only where `gate` holds (a STORE's fourth source)."""
  if len(store.src) == 4: gate = store.src[3] & gate
  return UOp(Ops.STORE, store.dtype, store.src[:3] + (gate,), store.arg)


def _vector_access(u: UOp, inner: UOp, lanes: int = 4) -> bool:
  """A load or store of `lanes` values as one access (four: VEC4_TYPES, 16 bytes or 8 of 16-bit floats; eight: 16 bytes of
  16-bit floats) whose index moves by one along `inner`, with every other term a multiple of `lanes`."""
  if u.op not in (Ops.LOAD, Ops.STORE) or u.src[0].op is not Ops.PARAM or len(u.src) > 3: return False
  fits = u.src[0].dtype in VEC4_TYPES if lanes == 4 else u.src[0].dtype in (dtypes.float16, dtypes.bfloat16)
  return fits and contiguous_in(u.src[1], inner, lanes)


def _quads(roots: list[UOp], inner: UOp, lanes: int = 4) -> tuple[UOp, Callable[[UOp, int], UOp]]:
  """The loop over groups of `lanes` of `inner`, and fn(node, q): the node at lane q, where loads that move by one along
  `inner` are lanes of one vector load."""
  quad = UOp(Ops.RANGE, inner.dtype, (), (inner.arg[0], inner.arg[1] // lanes, inner.arg[2]))
  vec = {ld: UOp(Ops.LOAD, ld.dtype, (ld.src[0], substitute(ld.src[1], {inner: quad * lanes})), lanes)
         for ld in toposort(roots) if ld.op is Ops.LOAD and _vector_access(ld, inner, lanes)}
  def lane(u: UOp, q: int) -> UOp:
    return substitute(u, {inner: quad * lanes + q, **{ld: UOp(Ops.GEP, ld.dtype, (v,), q) for ld, v in vec.items()}})
  return quad, lane


def reduction_lanes(red: UOp) -> UOp:
  """A reduction whose innermost loop is a multiple of four and has a load moving by one along it: four lanes per
  step (one 16-byte load), combined before they are accumulated. Else `red` unchanged."""
  inner = red.src[-1]
  nodes = toposort([red.src[0]])
  deps = loop_deps(nodes)
  # a reduction inside that runs along `inner` would be repeated per lane; one that does not is loop-invariant
  if inner.arg[1] % 4 or any(n.op is Ops.REDUCE and inner in deps[n] for n in nodes) or not any(_vector_access(n, inner) for n in nodes):
    return red
  quad, lane = _quads([red.src[0]], inner)
  value = lane(red.src[0], 0)
  for q in range(1, 4): value = value.alu(red.arg, lane(red.src[0], q))
  return UOp(Ops.REDUCE, red.dtype, (value, *red.src[1:-1], quad), red.arg)


def vectorize_reductions(sink: UOp, outer: list[UOp]) -> UOp:
  """`reduction_lanes` for every reduction inside no loop but the `outer` ones (those a mapping deals out to threads)."""
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  mapped: dict[UOp, UOp] = {}
  for n in nodes:  # children first, so a reduction inside another one's value is replaced there too
    if n.op is Ops.REDUCE and deps[n] <= set(outer): mapped[n] = reduction_lanes(substitute(n, mapped))
  return substitute(sink, mapped)


def vector_lanes(sink: UOp, inner: UOp, lanes: int = 4) -> tuple[UOp, UOp]:
  """Split loop `inner` (a multiple of `lanes` long) into a loop over groups and `lanes` lanes: (new sink, the group loop).

  Loads and stores that move by one along `inner` become one vector access per group; everything else is computed per lane.
  """
  quad, lane = _quads(list(sink.src), inner, lanes)
  first = {inner: quad * lanes}
  stores: list[UOp] = []
  for st in sink.src:
    if _vector_access(st, inner, lanes):
      values = UOp(Ops.VECTORIZE, st.src[2].dtype, tuple(lane(st.src[2], q) for q in range(lanes)), lanes)
      stores.append(UOp(Ops.STORE, st.dtype, (st.src[0], substitute(st.src[1], first), values), st.arg))
    else: stores += [lane(st, q) for q in range(lanes)]
  return _sink(sink, stores), quad


def deal_out(ranges: list[UOp], tid: UOp, group: int, loop_id: int, kind: str, unroll: int) -> tuple[dict[UOp, UOp], UOp | None, UOp]:
  """Loops `ranges` flattened and dealt out to `group` threads: j = tid + group * i over a new loop i.

  Returns each old loop's replacement, the gate j < size (None when `group` divides the size; past the end the
  replacements read index 0, so no load leaves its buffer) and the loop i (arg[3]: how far the renderer unrolls it).
  """
  size = prod(r.arg[1] for r in ranges)
  it = index_type(size + group)
  i = UOp(Ops.RANGE, it, (), (loop_id, ceildiv(size, group), kind, unroll))
  j = tid.cast(it) + i * group
  if size % group == 0: return digits(ranges, j), None, i
  valid = j < size
  return digits(ranges, valid.where(j, UOp.const(it, 0))), valid, i


def _loop_ids(sink: UOp) -> Iterator[int]:
  return itertools.count(max((n.arg[0] for n in toposort([sink]) if n.op is Ops.RANGE), default=-1) + 1)


def _partial(red: UOp, value: UOp, valid: UOp | None, loop: UOp) -> UOp:
  """`red`'s reduction of `value` over a dealt-out `loop`; where `valid` is false (past the end) it adds the identity."""
  if valid is not None: value = valid.where(value, UOp.const(red.dtype, reduce_identity(red.arg, red.dtype)))
  return UOp(Ops.REDUCE, red.dtype, (value, loop), red.arg)


def _combine(red: UOp, partial: UOp, width: int, slot: int) -> UOp:
  """The partials of `width` neighbouring threads combined with `red`'s op (a block's through shared memory)."""
  local = (UOp(Ops.DEFINE_LOCAL, red.dtype, (), (slot, width // 32)),) if width > 32 else ()
  return UOp(Ops.GROUP_REDUCE, red.dtype, (partial, *local), (red.arg, width))


def _top_reduction(sink: UOp) -> UOp:
  """The one reduction of `sink` inside no loop that is left (the split and columns plans are chosen for one)."""
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  [red] = [n for n in nodes if n.op is Ops.REDUCE and not deps[n]]
  return red


def deal_out_reductions(sink: UOp, tid: UOp, group: int, ids: Iterator[int]) -> UOp:
  """Every top-level reduction (inside no loop that is left) dealt out to `group` threads and combined by a GROUP_REDUCE.

  Reductions over the same loops share one new loop, so the linearizer still gives them one loop nest.
  """
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  mapped: dict[UOp, UOp] = {}
  loops: dict[tuple[UOp, ...], tuple[dict[UOp, UOp], UOp | None, UOp]] = {}
  slots = itertools.count()
  for orig in nodes:  # children first: a top-level reduction inside another one's value is mapped before it
    if orig.op is not Ops.REDUCE or deps[orig]: continue  # inside a loop (another reduction's, or a row's columns)
    rngs = orig.src[1:]
    if rngs not in loops: loops[rngs] = deal_out(list(rngs), tid, group, next(ids), "reduce", 4)
    repl, valid, i = loops[rngs]
    mapped[orig] = _combine(orig, _partial(orig, substitute(orig.src[0], {**repl, **mapped}), valid, i), group, next(slots))
  return substitute(sink, mapped)


def _simplified(sink: UOp) -> UOp: return graph_rewrite(sink, symbolic)


def map_flat(sink: UOp, rows: list[UOp]) -> UOp:
  """A thread per element of the loops `rows`; other loops run inside the thread."""
  total = max(prod(r.arg[1] for r in rows), 1)
  block = min(BLOCK, max(32, 1 << (total - 1).bit_length()))
  grid = ceildiv(total, block)
  it = index_type(total + block)
  gid = special("block", grid).cast(it) * block + special("thread", block).cast(it)
  repl = digits(rows, gid)
  return _simplified(_sink(sink, [substitute(st, repl) for st in sink.src], gid < total if grid * block != total else None))


def map_lanes(sink: UOp, glob: list[UOp]) -> UOp:
  """Elementwise: four outputs of the innermost loop per thread, 16-byte loads and stores where the index allows (8-byte
  ones of 16-bit floats); eight where every such access is of 16-bit floats, so that they move 16 bytes too."""
  accesses = [u for u in toposort([sink]) if _vector_access(u, glob[-1])]
  wide = glob[-1].arg[1] % 8 == 0 and bool(accesses) and all(_vector_access(u, glob[-1], 8) for u in accesses)
  sink, quad = vector_lanes(sink, glob[-1], 8 if wide else 4)
  return map_flat(sink, glob[:-1] + [quad])


def _group_stores(sink: UOp, tid: UOp, own: set[UOp], extra: list[UOp] | None = None) -> list[UOp]:
  """Stores inside a dealt-out loop (`own`) are each thread's own; the others are stored by the group's first thread."""
  stores = []
  for st in list(sink.src) + (extra or []):
    if st.op is not Ops.STORE: continue
    stores.append(st if own & set(toposort([st])) else _gate(st, tid < 1))
  return stores


def map_block(sink: UOp, glob: list[UOp]) -> UOp:
  """A block per output (the loops `glob`); its threads share each top-level reduction."""
  total = max(prod(r.arg[1] for r in glob), 1)
  tid = special("thread", BLOCK)
  ids = _loop_ids(sink)
  sink = vectorize_reductions(sink, glob)
  sink = _sink(sink, [substitute(st, digits(glob, special("block", total))) for st in sink.src])
  sink = deal_out_reductions(sink, tid, BLOCK, ids)
  return _simplified(_sink(sink, _group_stores(sink, tid, set())))


def _column_lanes(sink: UOp, cols: list[UOp]) -> bool:
  """Four lanes for the column loops: the innermost is a multiple of four, no reduction runs inside them, and an
  access moves by one along the innermost."""
  if not cols or cols[-1].arg[1] % 4: return False
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  if any(n.op is Ops.REDUCE and deps[n] & set(cols) for n in nodes): return False
  return any(_vector_access(n, cols[-1]) for n in nodes)


def map_row(sink: UOp, rows: list[UOp], cols: list[UOp], group: int) -> UOp:
  """A group of `group` threads per row (the loops `rows`): a warp (eight rows to a block) or a whole block.

  The group shares the row's top-level reductions and then its column loops `cols`, each thread storing its own columns.
  """
  total = max(prod(r.arg[1] for r in rows), 1)
  ids = _loop_ids(sink)
  sink = vectorize_reductions(sink, rows)
  unroll = 4
  if _column_lanes(sink, cols):
    sink, quad = vector_lanes(sink, cols[-1])
    cols, unroll = cols[:-1] + [quad], 2  # a four-lane body is four iterations already
  guard = None
  if group == 32:
    per = BLOCK // 32
    thread = special("thread", BLOCK)
    row, tid = special("block", ceildiv(total, per)) * per + thread // 32, thread % 32
    if total % per: guard = row < total  # a whole warp leaves: its shuffles need no absent lane
  else: row, tid = special("block", total), special("thread", group)
  sink = _sink(sink, [substitute(st, digits(rows, row)) for st in sink.src])
  sink = deal_out_reductions(sink, tid, group, ids)
  own: set[UOp] = set()
  if cols:
    repl, valid, i = deal_out(cols, tid, group, next(ids), "global", unroll)
    own.add(i)
    stores = [substitute(st, repl) for st in sink.src]
    sink = _sink(sink, [_gate(st, valid) if valid is not None and i in toposort([st]) else st for st in stores])
  return _simplified(_sink(sink, _group_stores(sink, tid, own), guard))


def _store(buf: UOp, index: UOp, value: UOp, gate: UOp, *after: UOp) -> UOp: return UOp(Ops.STORE, dtypes.void, (buf, index, value, gate, *after))
def _barrier(after: UOp, scope: str) -> UOp: return UOp(Ops.BARRIER, dtypes.void, (after,), scope)


def last_block(partial_stores: tuple[UOp, ...], tid: UOp, group_index: UOp, groups: int, parts: int, slot: int) -> tuple[UOp, UOp]:
  """After every block of a group of `parts` blocks stored its partials (`partial_stores`): each takes a ticket, and all
  but the last to arrive leave (a GUARD). Returns (a fence that reads of the partials must come after, the counter's
  reset for the next launch: a store the SINK must keep).

  The partials are published with a device-wide fence before the ticket and read after another one, past L1."""
  counter = UOp(Ops.DEFINE_GLOBAL, dtypes.uint32, (), (slot, groups))
  flag = UOp(Ops.DEFINE_LOCAL, dtypes.bool, (), (slot, 1))
  first = tid < 1
  published = _barrier(UOp(Ops.BARRIER, dtypes.void, partial_stores, "device"), "block")
  ticket = UOp(Ops.ATOMIC_ADD, dtypes.uint32, (counter, group_index, UOp.const(dtypes.uint32, 1), first, published))
  is_last = UOp.const(dtypes.uint32, parts - 2) < ticket  # tickets run 0 .. parts - 1 (parts >= 2)
  told = _barrier(_store(flag, UOp.const(dtypes.int32, 0), is_last, first), "block")
  guard = UOp(Ops.GUARD, dtypes.void, (UOp(Ops.LOAD, dtypes.bool, (flag, UOp.const(dtypes.int32, 0), told)), told))
  fence = _barrier(guard, "device")
  return fence, _store(counter, group_index, UOp.const(dtypes.uint32, 0), first, fence)


def _scratch_load(scratch: UOp, index: UOp, after: UOp) -> UOp: return UOp(Ops.LOAD, scratch.dtype, (scratch, index, after))


def map_split(sink: UOp, glob: list[UOp], split: int) -> UOp:
  """Few outputs, a huge reduction (a full sum): `split` blocks per output share its one top-level reduction; each block
  combines its threads' partials and stores its own to scratch, and the last block to finish adds the `split` partials
  in block order (deterministic, one launch) and stores the output."""
  total = max(prod(r.arg[1] for r in glob), 1)
  ids = _loop_ids(sink)
  sink = vectorize_reductions(sink, glob)
  block, tid = special("block", total * split), special("thread", BLOCK)
  out, part = block // split, block % split
  sink = _sink(sink, [substitute(st, digits(glob, out)) for st in sink.src])
  red = _top_reduction(sink)
  repl, valid, i = deal_out(list(red.src[1:]), part * BLOCK + tid, BLOCK * split, next(ids), "reduce", 4)
  partial = _combine(red, _partial(red, substitute(red.src[0], repl), valid, i), BLOCK, 0)
  scratch = UOp(Ops.DEFINE_GLOBAL, red.dtype, (), (0, total * split))
  fence, reset = last_block((_store(scratch, block, partial, tid < 1),), tid, out, total, split, 1)
  # the partials are read by the block's threads in turn: a stand-in loop over them, dealt out
  repl, valid, q = deal_out([UOp(Ops.RANGE, dtypes.int32, (), (-1, split, "reduce"))], tid, BLOCK, next(ids), "reduce", 4)
  j = next(iter(repl.values()))
  combined = _combine(red, _partial(red, _scratch_load(scratch, out * split + j, fence), valid, q), BLOCK, 2)
  sink = substitute(sink, {red: combined})
  return _simplified(_sink(sink, _group_stores(sink, tid, set()) + [reset]))


# loads in flight per thread in `map_columns`: each thread's rows (unrolled, so its loads issue back to back), and the last
# block's sum of the up to 256 partials per output, fully unrolled (at 8 it made 32 round trips to L2). H200, column sums
# of bf16 16384 x 384 / 16384 x 1152 / f32 16384 x 384, us: unroll 4 and 8: 20.1 / 29.7 / 20.7; 8 and 32: 21.0 / 31.0 /
# 21.7; 16 and 64: 26.5 / 33.9 / 28.8; 8 and 256: 17.8 / 23.2 / 18.3
COLUMN_UNROLL = 8
COMBINE_UNROLL = 256


def map_columns(sink: UOp, glob: list[UOp], split: int, held: int = -1) -> UOp:
  """A few hundred or thousand outputs, each summing a long strided column (a bias gradient): a thread per output, so
  a warp reads neighbouring columns of a row together, and `split` blocks per group of outputs, block `part` taking rows
  part, part + split, ...; each thread's partial goes to scratch and the last block of the group adds them in order.
  With `held` (the index of a short output loop no load moves with: the vocabulary of an embedding's one-hot gradient,
  sum over tokens of where(token == v, dx, 0)), each thread sums every value of that loop at once, reading what they
  share once (`held_loop`)."""
  kept = [glob[held]] if held >= 0 else []
  spread = [r for r in glob if r not in kept]
  total = max(prod(r.arg[1] for r in spread), 1)
  values = [{kept[0]: UOp.const(kept[0].dtype, v)} for v in range(kept[0].arg[1])] if kept else [{}]
  width = next(b for b in (BLOCK, 128, 64, 32) if total % b == 0)  # whole blocks: every thread takes part in the ticket
  ids = _loop_ids(sink)
  block, tid = special("block", total // width * split), special("thread", width)
  group, part = block // split, block % split
  gid = group * width + tid
  sink = _sink(sink, [substitute(st, {**digits(spread, gid), **value}) for value in values for st in sink.src])
  nodes = toposort([sink])
  deps = loop_deps(nodes)
  reds = [n for n in nodes if n.op is Ops.REDUCE and not deps[n]]
  # (held: one iteration is already that many sums; unrolled further it took NVRTC most of a second)
  repl, valid, i = deal_out(list(reds[0].src[1:]), part, split, next(ids), "reduce", COLUMN_UNROLL if not kept else 2)
  scratch = UOp(Ops.DEFINE_GLOBAL, reds[0].dtype, (), (0, split * total * len(reds)))
  partials = tuple(_store(scratch, (part * len(reds) + k) * total + gid, _partial(red, substitute(red.src[0], repl), valid, i),
                          UOp.const(dtypes.bool, True)) for k, red in enumerate(reds))
  fence, reset = last_block(partials, tid, group, total // width, split, 1)
  q = UOp(Ops.RANGE, dtypes.int32, (), (next(ids), split, "reduce", COMBINE_UNROLL))
  sink = substitute(sink, {red: UOp(Ops.REDUCE, red.dtype, (_scratch_load(scratch, (q * len(reds) + k) * total + gid, fence), q), red.arg)
                           for k, red in enumerate(reds)})
  return _simplified(_sink(sink, list(sink.src) + [reset]))


def held_loop(program: list[UOp], glob: list[UOp], deps: dict[UOp, frozenset[UOp]], most: int) -> int:
  """The index in `glob` of a short output loop (2 .. `most`) that no load's index moves with, when there are other output
  loops: a columns kernel's thread can then sum all of its values with one read of what they share (-1: none)."""
  loads = [u for u in program if u.op is Ops.LOAD and u.src[0].op is Ops.PARAM]
  return next((k for k, r in enumerate(glob) if 2 <= r.arg[1] <= most and len(glob) > 1 and all(r not in deps[u.src[1]] for u in loads)), -1)


__all__ = ["map_flat", "map_lanes", "map_block", "map_row", "map_split", "map_columns", "held_loop", "last_block", "vector_lanes", "deal_out",
           "deal_out_reductions", "special", "digits"]
