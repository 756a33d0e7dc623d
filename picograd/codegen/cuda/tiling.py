"""Matrix products put on the GPU as an IR rewrite (codegen layer): `map_matmul`, the SIMT tiled plan.

A kernel of the form out[b, m, n] = epilogue(sum_k X[b, m, k] * Y[b, k, n]) (`analysis.Matmul`) becomes:

- a block per 128x128 output tile (SPECIAL block: n-tiles fastest, then m-tiles, then batch x split-K parts) of 256
  threads (SPECIAL thread), each owning an 8x8 register tile of outputs: 64 REDUCEs over the same two loops;
- the reduction as k-steps of 8 (loop `kt`) around the 8 steps of one k-step (loop `kk`, unrolled). The operands' tiles
  go through shared memory (two DEFINE_LOCAL buffers each, [k][128 + 4] floats), moved as 16-byte loads (LOAD arg=4)
  where an operand is a plain float32 load contiguous along k or along its output loop: before the loop each thread
  stores its four elements of step 0; each k-step begins with a BARRIER, loads its four elements of the next step from global memory
  into registers (ordinary values at the `kt` level, so they are issued before the inner loop), and stores them into
  the other buffer in the last iteration of the inner loop (a gated STORE that the tile loads must come after), so the
  global loads overlap the step's multiply-adds and one barrier per step suffices: the buffer a step fills was last
  read in the step before, which every thread finished before this step's barrier;
- with split-K (few output tiles over a long k), blockIdx also picks one of `split` chunks of k; each block stores its
  partial tile to device scratch and the last block of a tile to finish (`mapping.last_block`) adds the partials in
  chunk order: deterministic, in one launch;
- the kernel's own store (its epilogue: casts, a bias, an activation) at each of the thread's outputs, gated at the
  matrix's edges. Outside the matrix the operand tiles hold zeros.
"""
from __future__ import annotations
from dataclasses import dataclass
from picograd.dtype import dtypes
from picograd.helpers import ceildiv
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.cuda.analysis import Matmul, contiguous_in
from picograd.codegen.cuda.emit import BLOCK
from picograd.codegen.cuda.ops import VEC4_TYPES
from picograd.codegen.cuda.mapping import digits, last_block, special

TILE = 128          # outputs per block along m and along n
STEP = 8            # k per k-step
ROW = TILE + 4      # a shared-memory row of a tile, padded so the threads' stores of a k-major tile spread over the banks
PER_THREAD = 8      # outputs per thread along m and along n
INT = dtypes.int32


def _all(conds: list[UOp]) -> UOp | None:
  out = None
  for c in conds: out = c if out is None else out & c
  return out


def runs_along(operand: UOp, side: list[UOp], k: UOp) -> bool:
  """Whether the operand's memory is contiguous along its output loop rather than along k: consecutive threads then take
  consecutive elements along that loop, so the global loads coalesce either way."""
  loads = [u for u in toposort([operand]) if u.op is Ops.LOAD]
  if any(contiguous_in(u.src[1], k, 1) for u in loads): return False
  return any(contiguous_in(u.src[1], side[-1], 1) for u in loads)


@dataclass
class _Operand:
  """One side of the product: its value, the output loops it runs along, and its double-buffered tile in shared memory."""
  value: UOp
  side: list[UOp]
  origin: UOp          # the tile's first row (m0) or column (n0)
  size: int            # M or N
  local: UOp           # DEFINE_LOCAL of 2 x STEP x ROW values
  along: bool          # memory runs along the output loop (else along k)


class _Tiles:
  """The pieces of one matmul kernel's rewrite."""

  def __init__(self, mm: Matmul, split: int, batch: dict[UOp, UOp]):
    self.mm, self.split, self.batch = mm, split, batch
    B, self.M, self.N, self.K = mm.sizes
    self.chunk = ceildiv(ceildiv(self.K, split), STEP) * STEP  # k per block, whole k-steps
    self.steps = self.chunk // STEP
    self.tid = special("thread", BLOCK)

  def width(self, op: _Operand) -> int:
    """4 when the operand is a plain float32 load moving by one along the axis its memory runs along (16-byte loads), else 1."""
    v = op.value
    along = op.side[-1] if op.along else self.mm.k
    return 4 if v.op is Ops.LOAD and v.src[0].op is Ops.PARAM and v.src[0].dtype in VEC4_TYPES and along.arg[1] % 4 == 0 and \
        contiguous_in(v.src[1], along, 4) else 1

  def elements(self, op: _Operand, k0: UOp, step_ok: UOp | None) -> list[tuple[UOp, UOp]]:
    """(offset in a buffer, value) of what this thread moves for the k-step starting at `k0`: single elements, or a VECTORIZE
    of four where a 16-byte load lands on four consecutive words of the tile. Zero outside the matrix and past k; where
    `step_ok` is false (a step past the last) or out of bounds, indices are clamped to 0, so no load leaves its buffer."""
    width = self.width(op)
    out: list[tuple[UOp, UOp]] = []
    for e in range(TILE * STEP // BLOCK // width):
      flat = self.tid + e * BLOCK
      s, q = (flat % (TILE // width) * width, flat // (TILE // width)) if op.along else (flat // (STEP // width), flat % (STEP // width) * width)
      gs, gk = op.origin + s, k0 + q
      ok = _all(([gs < op.size] if op.size % TILE else []) + ([gk < self.K] if self.split * self.chunk != self.K else []))
      # past the last step the values are never read: only their indices are kept in bounds
      inside = _all([c for c in (ok, step_ok) if c is not None])
      if inside is not None: gs, gk = inside.where(gs, UOp.const(INT, 0)), inside.where(gk, UOp.const(INT, 0))
      at = {**self.batch, **digits(op.side, gs), **digits(self.mm.ks, gk)}
      if width == 1: lanes = [substitute(op.value, at)]
      else:
        vec = UOp(Ops.LOAD, op.value.dtype, (op.value.src[0], substitute(op.value.src[1], at)), 4)
        lanes = [UOp(Ops.GEP, op.value.dtype, (vec,), lane) for lane in range(4)]
      if ok is not None: lanes = [ok.where(v, UOp.const(v.dtype, 0)) for v in lanes]
      if width > 1 and op.along: out.append((q * ROW + s, UOp(Ops.VECTORIZE, lanes[0].dtype, tuple(lanes), 4)))
      else: out += [((q + lane) * ROW + s if width > 1 else q * ROW + s, v) for lane, v in enumerate(lanes)]
    return out


def _store(buf: UOp, index: UOp, value: UOp, gate: UOp, *after: UOp) -> UOp:
  return UOp(Ops.STORE, dtypes.void, (buf, index, value, gate, *after))


def _thread_rows(t: UOp) -> list[UOp]:
  """The 8 rows (or columns) of a tile thread t of 16 owns: t*4.. and 64 + t*4..; each quarter-warp then reads 16
  consecutive words of a tile row, so the shared loads do not conflict."""
  return [t * 4 + i for i in range(4)] + [t * 4 + TILE // 2 + i for i in range(4)]


def map_matmul(sink: UOp, mm: Matmul, split: int) -> UOp:
  """The SIMT tiled plan (see the module docstring) for a lowered kernel `sink` whose linear program is `mm`."""
  B, M, N, K = mm.sizes
  gx, gy = ceildiv(N, TILE), ceildiv(M, TILE)
  nodes = toposort([sink])
  red = next(n for n in nodes if n.op is Ops.REDUCE and mm.mul in toposort([n.src[0]]))
  [out_store] = [s for s in sink.src if s.op is Ops.STORE]
  next_id = max((n.arg[0] for n in nodes if n.op is Ops.RANGE), default=-1) + 1
  block = special("block", gx * gy * B * split)
  bx, by, bz = block % gx, block // gx % gy, block // (gx * gy)
  whole, part = (bz // split, bz % split) if split > 1 else (bz, None)
  batch = digits(mm.batch, whole) if mm.batch else {}
  t = _Tiles(mm, split, batch)
  k_base = UOp.const(INT, 0) if part is None else part * t.chunk
  size = 2 * STEP * ROW
  ops = [_Operand(mm.x, mm.m, by * TILE, M, UOp(Ops.DEFINE_LOCAL, mm.x.dtype, (), (0, size)), runs_along(mm.x, mm.m, mm.k)),
         _Operand(mm.y, mm.n, bx * TILE, N, UOp(Ops.DEFINE_LOCAL, mm.y.dtype, (), (1, size)), runs_along(mm.y, mm.n, mm.k))]
  kt = UOp(Ops.RANGE, INT, (), (next_id, t.steps, "reduce"))
  kk = UOp(Ops.RANGE, INT, (), (next_id + 1, STEP, "reduce", STEP))
  # step 0 before the loop; each step starts at a barrier (after it, the buffer filled last step may be read, and the one
  # read last step may be refilled)
  first = [_store(op.local, at, v, UOp.const(dtypes.bool, True)) for op in ops for at, v in t.elements(op, k_base, None)]
  barrier = UOp(Ops.BARRIER, dtypes.void, (kt, *first), "block")
  refills: list[UOp] = []
  if t.steps > 1:
    more = kt < t.steps - 1
    last_kk = UOp.const(INT, STEP - 2) < kk
    nxt = ((kt + 1) & 1) * (STEP * ROW)
    # gated by the inner loop only: a refill gated by `more` too let the compiler sink the global loads into its branch,
    # after the step's multiply-adds, where nothing hides their latency (the last step stores zeros no step reads)
    refills = [_store(op.local, nxt + at, v, last_kk, barrier)
               for op in ops for at, v in t.elements(op, k_base + (kt + 1) * STEP, more)]
  cur = (kt & 1) * (STEP * ROW) + kk * ROW
  tx, ty = t.tid % 16, t.tid // 16
  rows, cols = _thread_rows(ty), _thread_rows(tx)
  a = [UOp(Ops.LOAD, mm.x.dtype, (ops[0].local, cur + r, barrier, *refills)) for r in rows]
  b = [UOp(Ops.LOAD, mm.y.dtype, (ops[1].local, cur + c, barrier, *refills)) for c in cols]
  acc = [[UOp(Ops.REDUCE, red.dtype, (substitute(red.src[0], {mm.mul: UOp(Ops.MUL, mm.mul.dtype, (x, y))}), kt, kk), Ops.ADD)
          for y in b] for x in a]
  m0, n0 = by * TILE, bx * TILE
  extra: list[UOp] = []
  if split > 1:
    tiles = B * gx * gy
    tile = whole * (gx * gy) + by * gx + bx
    scratch = UOp(Ops.DEFINE_GLOBAL, red.dtype, (), (0, tiles * split * TILE * TILE))
    mine = (tile * split + part) * (TILE * TILE)
    partials = [_store(scratch, mine + r * TILE + c, acc[i][j], UOp.const(dtypes.bool, True))
                for i, r in enumerate(rows) for j, c in enumerate(cols)]
    fence, reset = last_block(tuple(partials), t.tid, tile, tiles, split, 1)
    q = UOp(Ops.RANGE, INT, (), (next_id + 2, split, "reduce", 8))
    first_part = tile * split * (TILE * TILE)
    acc = [[UOp(Ops.REDUCE, red.dtype, (UOp(Ops.LOAD, red.dtype, (scratch, first_part + q * (TILE * TILE) + r * TILE + c, fence)), q), Ops.ADD)
            for c in cols] for r in rows]
    extra.append(reset)
  stores = []
  for i, r in enumerate(rows):
    for j, c in enumerate(cols):
      gm, gn = m0 + r, n0 + c
      ok = _all(([gm < M] if M % TILE else []) + ([gn < N] if N % TILE else []))
      if ok is not None: gm, gn = ok.where(gm, UOp.const(INT, 0)), ok.where(gn, UOp.const(INT, 0))
      st = substitute(out_store, {**batch, **digits(mm.m, gm), **digits(mm.n, gn), red: acc[i][j]})
      stores.append(st if ok is None else UOp(Ops.STORE, st.dtype, st.src[:3] + ((st.src[3] & ok) if len(st.src) > 3 else ok,), st.arg))
  return graph_rewrite(UOp(Ops.SINK, sink.dtype, tuple(stores + extra), sink.arg), symbolic)


def describe_matmul(mm: Matmul, split: int) -> str:
  B, M, N, K = mm.sizes
  return (f"tiled product {B}x{M}x{N}, k={K}: 128x128 output tiles, k-steps of {STEP} through double-buffered shared memory, "
          f"an 8x8 register tile per thread" + (f", split-K over {split} blocks" if split > 1 else ""))


__all__ = ["map_matmul", "describe_matmul", "runs_along"]
