"""Matrix products put on the GPU as IR rewrites (codegen layer): the tiled plans `matmul` (SIMT), `mma` / `mma_tf32`
(tensor cores) and `wgmma` (sm_90a warpgroups).

A kernel of the form out[b, m, n] = epilogue(sum_k X[b, m, k] * Y[b, k, n]) (`analysis.Matmul`) becomes:

- a block per 128x128 output tile (SPECIAL block: n-tiles fastest, then m-tiles, then batch x split-K parts) of 256
  threads (SPECIAL thread), each owning 64 outputs: 64 REDUCEs over the same two loops;
- the reduction as k-steps (loop `kt`) around the steps inside one k-step (loop `kk`, unrolled). The operands' tiles go
  through shared memory, two DEFINE_LOCAL buffers each (or `stages`), laid out as the operand lies in memory (`Layout`), moved by
  16-byte loads (LOAD arg=lanes) where an operand is a plain load (or a cast of one) contiguous along k or along its
  output loop. Before the loop each thread stores its part of step 0; each k-step begins with a BARRIER, loads its part of
  the next step from global memory into registers (ordinary values at the `kt` level, so they are issued before the inner
  loop), and stores them into the other buffer at the end of the last iteration of the inner loop (a STORE gated by
  that iteration and placed in the SINK: the linearizer writes such a store after the loop body's accumulations), so
  the global loads overlap the step's multiply-adds and one barrier per step suffices: the buffer a step fills was last
  read in the step before, which every thread finished before this step's barrier. With three stages (long k-loops,
  `plan.py`), operands copied as they lie go by cp.async instead, two steps ahead (ASYNC_COPY, groups closed by BARRIER
  "commit" and waited for by BARRIER ("wait", 1) before each step's barrier);
- SIMT (`matmul`): k-steps of 8; each thread owns an 8x8 register tile (rows ty*4.. and 64 + ty*4.., the same columns
  of tx), reading its 8 + 8 operands from shared memory per step of k;
- tensor cores (`mma`: float16/bfloat16 operands; `mma_tf32`: float32 operands rounded to TF32 when the user allowed it):
  k-steps of 32 or 64 (`plan.py`); eight warps of 64x32 outputs, 4x4 MMAs of 16x8 per k16 (k8) step, on FRAGMENTs of
  the shared tiles; their outputs then pass through shared memory (a buffer over the dead tiles, after the copies in
  flight are drained) and come out row by row, so a warp stores consecutive outputs;
- warpgroups (`wgmma`, 16-bit operands, or float32 as TF32, on sm_90a): k-steps of one 128-byte row (64 16-bit
  elements, 32 floats) with no inner loop; tiles in PTX's 128-byte swizzle (`Layout(swizzled=True)`), two warpgroups of
  64x128 outputs (64x64 for N <= 64; 64x256 for large products, `wide`: plan.py), each k-step one chain of four WGMMAs
  (m64n128k16, m64n64k16; k8 for TF32) on descriptors of the tiles (FRAGMENT "desc"); the step's barrier fences the
  threads' shared-memory writes for the tensor cores (BARRIER "proxy"); outputs as for `mma`. TF32 tiles are K-major
  only: with B lying N-major the tile is computed transposed, B's tile read into registers as wgmma's A
  (`_wgmma_swapped_products`; wide: 256x128 tiles);
- with split-K (few output tiles over a long k), the block index also picks one of `split` chunks of k; each block
  stores its partial tile to device scratch and the last block of a tile to finish (`mapping.last_block`) adds the
  partials in chunk order: deterministic, in one launch;
- the kernel's own store (its epilogue: casts, a bias, an activation) at each of the thread's outputs, gated at the
  matrix's edges. Operand rows and columns past the matrix are read clamped to index 0 (they only reach outputs that are
  not stored); k past its end reads zeros.
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import TensorMapSpec, ceildiv
from picograd.ir.ops import UOp, Ops, toposort, substitute, graph_rewrite
from picograd.ir.symbolic import symbolic
from picograd.codegen.cuda.analysis import Matmul, contiguous_in, index_terms
from picograd.codegen.cuda.emit import BLOCK
from picograd.codegen.cuda.mapping import digits, last_block, special

TILE = 128          # outputs per block along m and along n
INT = dtypes.int32
Reader = Callable[[UOp], UOp]  # an index into a tile buffer -> the value read there (a LOAD or a FRAGMENT)


@dataclass(frozen=True)
class Layout:
  """An operand tile in shared memory: rows of k (`k_rows`: element (s, q) at q * ld + s) or rows along the output loop
  (at s * ld + q), each `ld` elements long (padded: 16-byte aligned rows whose reads spread over the banks).

  With `swizzled` (the wgmma plan), PTX's 128-byte swizzle: 128-byte rows (`row` elements: 64 of a 16-bit type, 32 of
  float32) along the axis the operand's memory runs along (k, K-major; or s, MN-major, in atoms of `row` along s that are
  `ld` apart), in groups of 8 rows (1024 bytes, 1024-aligned) within which row r's 16-byte chunk c lies at chunk c ^ r. A
  warp's cp.async copies then read whole 128-byte lines and write every bank once per eight threads."""
  k_rows: bool
  ld: int
  swizzled: bool = False
  row: int = 64

  def at(self, s: UOp | int, q: UOp | int) -> UOp:
    if self.swizzled:
      # the unswizzled element index, then its 16-byte chunk's bits XOR its row-in-group bits
      w = self.row
      e = (s // w) * self.ld + q * w + s % w if self.k_rows else s * w + q
      row = e // w % 8 * (w // 8)
      return e.alu(Ops.XOR, row) if isinstance(e, UOp) else e ^ row  # type: ignore[arg-type,operator,return-value]
    return (q * self.ld + s) if self.k_rows else (s * self.ld + q)  # type: ignore[return-value]

  def elements(self, step: int, extent: int = TILE) -> int:
    """Elements of one buffer of a tile of `extent` rows (or columns) by `step` of k."""
    if self.swizzled: return extent * step
    return step * self.ld if self.k_rows else extent * self.ld

  def strides(self) -> tuple[int, int]:
    """(LBO, SBO) of a wgmma descriptor of a swizzled tile, in bytes: LBO the stride between `row`-wide atoms along s
    (MN-major; unused K-major, where one wgmma's 32 bytes of k lie within a row), SBO between groups of 8 rows."""
    return (128 // self.row * self.ld if self.k_rows else 16, 1024)


def swizzle_row(kind: str) -> int:
  """Elements of a tensor-core kind in one 128-byte swizzled row."""
  return 32 if kind == "tf32" else 64


@dataclass(frozen=True)
class Plan:
  """What differs between the tiled plans: k per step, each operand's layout, its tile's type in shared memory, and the
  per-thread products (fn(tiles, A tile reader, B tile reader, the inner loop) -> [(accumulated value, tile row, tile column)])."""
  step: int
  inner: int          # iterations of the loop inside a k-step
  layouts: tuple[Layout, Layout]
  products: Callable[["_Tiles", "Reader", "Reader", UOp], list[tuple[UOp, UOp, UOp]]]
  describe: str
  kind: str = ""      # a wgmma plan's operand kind ("f16", "bf16", "tf32"): its tiles are read through descriptors
  tile_n: int = TILE  # outputs per block along n (the wgmma plan takes 64 for N <= 64, 256 for wide TF32 products)
  tile_m: int = TILE  # outputs per block along m (256 for wide TF32 products computed transposed)
  swapped: bool = False  # a wgmma plan computing the tile transposed: B's tile is wgmma's A, read into registers


def _all(conds: list[UOp]) -> UOp | None:
  out = None
  for c in conds: out = c if out is None else out & c
  return out


def runs_along(operand: UOp, side: list[UOp], k: UOp) -> bool:
  """Whether the operand's memory is contiguous along its output loop (or in runs of 8 along it) rather than along k:
  consecutive threads then take consecutive elements along that loop, so the global loads coalesce either way."""
  loads = [u for u in toposort([operand]) if u.op is Ops.LOAD]
  if any(contiguous_in(u.src[1], k, 1) for u in loads): return False
  return any(contiguous_in(u.src[1], side[-1], 1) or contiguous_in(u.src[1], side[-1], 8) for u in loads)


@dataclass
class _Operand:
  """One side of the product: its value, the output loops it runs along, and its double-buffered tile in shared memory."""
  value: UOp
  side: list[UOp]
  origin: UOp          # the tile's first row (m0) or column (n0)
  size: int            # M or N
  extent: int          # the tile's rows (or columns): the plan's tile_m for A, tile_n for B
  layout: Layout
  local: UOp           # DEFINE_LOCAL of two buffers
  along: bool          # memory runs along the output loop (else along k)


def _store(buf: UOp, index: UOp, value: UOp, gate: UOp, *after: UOp) -> UOp:
  return UOp(Ops.STORE, dtypes.void, (buf, index, value, gate, *after))


Digit = tuple[int, int]  # (extent, stride in elements) of one tensor-map dim


def _digits(loops: list[UOp], terms: dict[UOp | None, int]) -> list[Digit] | None:
  """How a flat index over `loops` (outermost first) steps through memory, as digits, innermost first: each loop is one
  digit (a term r * stride) or two (r % d and r // d: a loop over heads x 64 read from a per-head layout), and neighbours
  that step as one merge. None when a loop appears otherwise or does not move the address."""
  digits: list[Digit] = []
  for r in reversed(loops):
    parts = {t.op: (t.src[1].arg, c) for t, c in terms.items() if t is not None and t.op in (Ops.MOD, Ops.IDIV) and t.src[0] is r}
    if parts:
      if r in terms or set(parts) != {Ops.MOD, Ops.IDIV} or parts[Ops.MOD][0] != parts[Ops.IDIV][0] or r.arg[1] % parts[Ops.MOD][0]: return None
      d = parts[Ops.MOD][0]
      digits += [(d, parts[Ops.MOD][1]), (r.arg[1] // d, parts[Ops.IDIV][1])]
    else: digits.append((r.arg[1], terms.get(r, 0)))
  merged: list[Digit] = []
  for extent, stride in digits:
    if extent == 1: continue
    if merged and stride == merged[-1][1] * merged[-1][0]: merged[-1] = (merged[-1][0] * extent, merged[-1][1])
    else: merged.append((extent, stride))
  return merged if merged and all(stride > 0 for _, stride in merged) else None


def _coords(digits: list[Digit], flat: UOp) -> list[UOp]:
  """Each digit's coordinate of the flat index `flat` (the innermost first)."""
  out, inner = [], 1
  for i, (extent, _) in enumerate(digits):
    c = flat // inner if inner > 1 else flat
    out.append(c % extent if i < len(digits) - 1 else c)
    inner *= extent
  return out


@dataclass(frozen=True)
class _Box:
  """One TMA copy of an operand's k-step: its tensor map, where it lands in the tile buffer, its first element's offset
  along the tile's rows (s) or columns, and the digits of the axes its coordinates come from (the operand's memory run
  first, the other axis, then each batch loop it moves with)."""
  spec: TensorMapSpec
  at: int
  s0: int
  run: tuple[Digit, ...]
  other: tuple[Digit, ...]
  batch: tuple[tuple[UOp, tuple[Digit, ...]], ...]


class _Tiles:
  """The pieces of one tiled kernel's rewrite shared by the plans."""

  part: UOp | None

  def __init__(self, mm: Matmul, plan: Plan, split: int, block: UOp, reduce: UOp, in_flight: int = 0):
    self.mm, self.plan, self.split, self.reduce, self.in_flight = mm, plan, split, reduce, in_flight
    B, self.M, self.N, self.K = mm.sizes
    self.chunk = ceildiv(ceildiv(self.K, split), plan.step) * plan.step  # k per block, whole k-steps
    self.steps = self.chunk // plan.step
    self.gx, self.gy = ceildiv(self.N, plan.tile_n), ceildiv(self.M, plan.tile_m)
    self.tid = special("thread", BLOCK)
    self.bx, self.by, bz = block % self.gx, block // self.gx % self.gy, block // (self.gx * self.gy)
    self.whole, self.part = (bz // split, bz % split) if split > 1 else (bz, None)  # this block's batch, and its chunk of k
    self.batch = digits(mm.batch, self.whole) if mm.batch else {}
    self.k_base = UOp.const(INT, 0) if self.part is None else self.part * self.chunk

  def buffer(self, op: "_Operand") -> int:
    """Elements of one of an operand's tile buffers."""
    return op.layout.elements(self.plan.step, op.extent)

  def width(self, op: _Operand) -> int:
    """Lanes of a 16-byte load when the operand is a plain load (or a cast of one) moving by one along the axis its memory
    runs along, else 1."""
    v = op.value.src[0] if op.value.op is Ops.CAST else op.value
    along = op.side[-1] if op.along else self.mm.k
    if v.op is not Ops.LOAD or v.src[0].op is not Ops.PARAM or v.src[0].dtype.itemsize not in (2, 4): return 1
    lanes = 16 // v.src[0].dtype.itemsize
    whole = along.arg[1] % lanes == 0 and self.plan.step % lanes == 0 and op.extent * self.plan.step % (BLOCK * lanes) == 0  # every thread a vector
    return lanes if whole and contiguous_in(v.src[1], along, lanes) else 1

  def _spots(self, op: _Operand, k0: UOp, step_ok: UOp | None, width: int) -> list[tuple[UOp, UOp, dict[UOp, UOp], UOp | None]]:
    """(s, q, the operand's loops at that element, k in bounds) for each of this thread's elements (or 16-byte vectors) of
    the k-step starting at `k0`: consecutive threads take consecutive elements along the axis the operand's memory runs
    along. Rows and columns past the matrix, and steps past the last (`step_ok` false), are read at index 0 (their values
    reach no stored output); k past its end must read 0 (the last item, when k can run past it)."""
    step = self.plan.step
    out = []
    for e in range(op.extent * step // BLOCK // width):
      flat = self.tid + e * BLOCK
      across = op.extent if op.along else step  # the tile's extent along the axis its memory runs along
      run, other = flat % (across // width) * width, flat // (across // width)
      s, q = (run, other) if op.along else (other, run)
      gs, gk = op.origin + s, k0 + q
      k_ok = gk < self.K if self.split * self.chunk != self.K else None
      inside = _all([c for c in ((gs < op.size) if op.size % op.extent else None, k_ok, step_ok) if c is not None])
      if inside is not None: gs, gk = inside.where(gs, UOp.const(INT, 0)), inside.where(gk, UOp.const(INT, 0))
      out.append((s, q, {**self.batch, **digits(op.side, gs), **digits(self.mm.ks, gk)}, k_ok))
    return out

  def elements(self, op: _Operand, k0: UOp, step_ok: UOp | None) -> list[tuple[UOp, UOp]]:
    """(offset in a buffer, value) of what this thread moves for the k-step starting at `k0` (see `_spots`): single
    elements, or a VECTORIZE of the lanes of a 16-byte load where they land on consecutive elements of the tile."""
    width = self.width(op)
    out: list[tuple[UOp, UOp]] = []
    for s, q, at, k_ok in self._spots(op, k0, step_ok, width):
      if width == 1: lanes = [substitute(op.value, at)]
      else:
        ld = op.value.src[0] if op.value.op is Ops.CAST else op.value
        vec = UOp(Ops.LOAD, ld.dtype, (ld.src[0], substitute(ld.src[1], at)), width)
        lanes = [UOp(Ops.GEP, ld.dtype, (vec,), lane) for lane in range(width)]
        if op.value.op is Ops.CAST: lanes = [v.cast(op.value.dtype) for v in lanes]
      if k_ok is not None: lanes = [k_ok.where(v, UOp.const(v.dtype, 0)) for v in lanes]
      if width > 1 and op.along == op.layout.k_rows: out.append((op.layout.at(s, q), UOp(Ops.VECTORIZE, lanes[0].dtype, tuple(lanes), width)))
      else: out += [(op.layout.at(s + lane, q) if op.along else op.layout.at(s, q + lane), v) for lane, v in enumerate(lanes)]
    return out

  def copies_async(self, op: _Operand) -> bool:
    """Whether the operand's tiles can be copied as they are, 16 bytes at a time, into the tile (a plain load of the tile's
    type, contiguous along the tile's rows): then cp.async moves them with no registers in between."""
    return self.width(op) > 1 and op.value.op is Ops.LOAD and op.along == op.layout.k_rows and op.value.dtype == op.local.dtype

  def boxes(self, op: _Operand) -> list[_Box] | None:
    """The TMA copies of one k-step of a swizzled tile (the wgmma plan), when its operand is a plain load whose index
    steps through memory as a tensor of at most five dims (`_digits` of the axis the operand's memory runs along, of the
    other axis, of each batch loop) with 16-byte aligned start and strides, the box's two spans each within one dim; else
    None. A K-major tile is one box of (step of k) x (tile rows); an MN-major one a box of `row` x (step of k) per atom of
    `row` along s, `ld` apart, as `Layout` lays them out. Dims after the first two are copied one index at a time."""
    v, mm, step, w = op.value, self.mm, self.plan.step, op.layout.row
    size = v.dtype.itemsize
    if not (op.layout.swizzled and v.op is Ops.LOAD and v.src[0].op is Ops.PARAM and v.dtype == op.local.dtype and size * w == 128):
      return None
    listed = index_terms(v.src[1])
    if listed is None: return None
    terms: dict[UOp | None, int] = {}
    for c, t in listed: terms[t] = terms.get(t, 0) + c
    if any(t is not None and (t if t.op is Ops.RANGE else t.src[0]) not in (*op.side, *mm.ks, *mm.batch) for t in terms): return None
    side, k = _digits(op.side, terms), _digits(mm.ks, terms)
    batch = [(r, d) for r in mm.batch if any(t is not None and r in (t, *t.src) for t in terms) for d in [_digits([r], terms)]]
    if side is None or k is None or any(d is None for _, d in batch): return None
    (run, run_span), (other, other_span) = ((side, w), (k, step)) if op.along else ((k, step), (side, op.extent))
    digits = [run[0], other[0], *run[1:], *other[1:], *(d for _, ds in batch for d in ds or ())]
    offset = size * terms.get(None, 0)
    # each span within its axis's innermost digit (or that digit is the whole axis: past its end reads zeros)
    fits = all(ds[0][0] % span == 0 or len(ds) == 1 for ds, span in ((run, run_span), (other, other_span)))
    if not fits or run[0][1] != 1 or len(digits) > 5 or offset < 0 or offset % 16 or \
       any(size * st % 16 or size * st >= 2**40 or e >= 2**32 for e, st in digits[1:]): return None
    spec = TensorMapSpec(v.src[0].arg[0], size, offset, tuple(e for e, _ in digits), tuple(size * st for _, st in digits[1:]),
                         (run_span, other_span) + (1,) * (len(digits) - 2))
    keep = tuple((r, tuple(ds or ())) for r, ds in batch)
    if not op.along: return [_Box(spec, 0, 0, tuple(run), tuple(other), keep)]
    return [_Box(spec, atom * op.layout.ld, atom * w, tuple(run), tuple(other), keep) for atom in range(op.extent // w)]

  def tma_copies(self, op: _Operand, boxes: list[_Box], buf: UOp, k0: UOp, mbar: UOp, stage: UOp, gate: UOp, *after: UOp) -> list[UOp]:
    """The ASYNC_COPYs (arg: the tensor map) of the operand's k-step starting at `k0` into buffer offset `buf`, completing
    on mbarrier `stage` of `mbar`; issued where `gate` holds (one thread)."""
    out = []
    for box in boxes:
      run, other = (_coords(list(box.run), op.origin + box.s0), _coords(list(box.other), k0)) if op.along else \
        (_coords(list(box.run), k0), _coords(list(box.other), op.origin))
      coords = [run[0], other[0], *run[1:], *other[1:], *(c for r, ds in box.batch for c in _coords(list(ds), self.batch[r]))]
      src = (op.local, buf + box.at, op.value.src[0], mbar, stage, gate, *coords, *after)
      out.append(UOp(Ops.ASYNC_COPY, dtypes.void, src, box.spec))
    return out

  def async_copies(self, op: _Operand, buf: UOp, k0: UOp, step_ok: UOp | None, *after: UOp) -> list[UOp]:
    """ASYNC_COPYs of this thread's 16-byte pieces of the k-step starting at `k0` into buffer offset `buf`; k past its end
    is filled with zeros (the copy's gate)."""
    width, param = self.width(op), op.value.src[0]
    return [UOp(Ops.ASYNC_COPY, dtypes.void, (op.local, buf + op.layout.at(s, q), param, substitute(op.value.src[1], at),
                                             k_ok if k_ok is not None else UOp.const(dtypes.bool, True), *after), 16)
            for s, q, at, k_ok in self._spots(op, k0, step_ok, width)]


def _simt_products(t: _Tiles, reads_a: Reader, reads_b: Reader, kk: UOp) -> list[tuple[UOp, UOp, UOp]]:
  """An 8x8 register tile per thread: rows ty*4.. and 64 + ty*4.., columns tx*4.. and 64 + tx*4.. (each quarter-warp then
  reads 16 consecutive words of a tile row: no bank conflicts), multiply-adds of the k-major tiles at step kk."""
  tx, ty = t.tid % 16, t.tid // 16
  rows = [ty * 4 + i for i in range(4)] + [ty * 4 + TILE // 2 + i for i in range(4)]
  cols = [tx * 4 + i for i in range(4)] + [tx * 4 + TILE // 2 + i for i in range(4)]
  red, mm = t.reduce, t.mm
  a = [reads_a(t.plan.layouts[0].at(r, kk)) for r in rows]
  b = [reads_b(t.plan.layouts[1].at(c, kk)) for c in cols]
  return [(substitute(red.src[0], {mm.mul: UOp(Ops.MUL, mm.mul.dtype, (x, y))}), r, c) for x, r in zip(a, rows) for y, c in zip(b, cols)]


def _mma_products(kind: str) -> Callable[[_Tiles, Reader, Reader, UOp], list[tuple[UOp, UOp, UOp]]]:
  """Eight warps of 64x32 outputs: warp w owns rows (w // 4) * 64.. and columns (w % 4) * 32..; per k-step of 16 (8 for
  TF32) 4 A fragments, B fragments for the 4 column groups of 8 (16-bit: two groups to a fragment, one ldmatrix.x4) and
  their 16 MMAs, whose 4 floats per lane are rows g, g + 8 and columns 2t, 2t + 1 of each 16x8 output (g = lane / 4,
  t = lane % 4)."""
  k, per_b = (8, 1) if kind == "tf32" else (16, 2)

  def products(t: _Tiles, frag_a: Reader, frag_b: Reader, kk: UOp) -> list[tuple[UOp, UOp, UOp]]:
    warp, lane = t.tid // 32, t.tid % 32
    wm, wn, g, tq = warp // 4, warp % 4, lane // 4, lane % 4
    la, lb = t.plan.layouts
    a = [frag_a(la.at(wm * 64 + i * 16, kk * k)) for i in range(4)]
    b = [frag_b(lb.at(wn * 32 + j * 8 * per_b, kk * k)) for j in range(4 // per_b)]
    out = []
    for i, fa in enumerate(a):
      for j in range(4):
        mma = UOp(Ops.MMA, dtypes.float32, (fa, b[j // per_b]), (kind, j % per_b))
        out += [(UOp(Ops.GEP, dtypes.float32, (mma,), q), wm * 64 + i * 16 + g + 8 * (q // 2), wn * 32 + j * 8 + tq * 2 + q % 2) for q in range(4)]
    return out
  return products


def _wgmma_products(t: _Tiles, desc_a: Reader, desc_b: Reader, kk: UOp) -> list[tuple[UOp, UOp, UOp]]:
  """Two warpgroups of 64 x n outputs (n = the plan's tile_n, 128 or 64): warpgroup w owns rows w * 64..; per k-step one
  chain of wgmma m64nNk16 (k8 for TF32: 32 bytes of k either way), one per 16 (8) of k, on descriptors of the shared tiles
  (FRAGMENT "desc"), each adding to the one before. Lane l of warp v of the warpgroup gets, for each 8 columns j, rows
  v * 16 + g and + 8, columns 8j + 2t and + 1 (g = l / 4, t = l % 4)."""
  wg, warp, lane = t.tid // 128, t.tid // 32 % 4, t.tid % 32
  g, tq = lane // 4, lane % 4
  la, lb = t.plan.layouts
  chain: UOp | None = None
  k = wgmma_k(t.plan.kind)
  for kq in range(t.plan.step // k):
    descs = (desc_a(la.at(wg * 64, kq * k)), desc_b(lb.at(0, kq * k)))
    chain = UOp(Ops.WGMMA, dtypes.float32, descs + ((chain,) if chain is not None else ()), (t.plan.kind, t.in_flight, t.plan.tile_n))
  assert chain is not None
  return [(UOp(Ops.GEP, dtypes.float32, (chain,), 4 * j + q), wg * 64 + warp * 16 + g + 8 * (q // 2), 8 * j + 2 * tq + q % 2)
          for j in range(t.plan.tile_n // 8) for q in range(4)]


def _wgmma_swapped_products(t: _Tiles, desc_a: Reader, regs_b: Reader, kk: UOp) -> list[tuple[UOp, UOp, UOp]]:
  """The tile transposed, C^T = B^T A^T (TF32 with B lying N-major, which wgmma reads from shared memory only K-major):
  wgmma's A is B^T from registers (FRAGMENT "wa": warp v of warpgroup w holds its columns w * 64 + v * 16.., rows g, g + 8
  and k t, t + 4 of each k8, g = l / 4, t = l % 4), its B is A^T, the product's K-major A tile through a descriptor. Per
  k-step a chain of wgmma m64nMk8 (M = the plan's tile_m); lane l gets, for each 8 rows j of the tile, columns
  w * 64 + v * 16 + g and + 8, rows 8j + 2t and + 1."""
  wg, warp, lane = t.tid // 128, t.tid // 32 % 4, t.tid % 32
  g, tq = lane // 4, lane % 4
  la, lb = t.plan.layouts
  chain: UOp | None = None
  for kq in range(t.plan.step // 8):
    operands = (regs_b(lb.at(wg * 64, kq * 8)), desc_a(la.at(0, kq * 8)))
    chain = UOp(Ops.WGMMA, dtypes.float32, operands + ((chain,) if chain is not None else ()), (t.plan.kind, t.in_flight, t.plan.tile_m))
  assert chain is not None
  return [(UOp(Ops.GEP, dtypes.float32, (chain,), 4 * j + q), 8 * j + 2 * tq + q % 2, wg * 64 + warp * 16 + g + 8 * (q // 2))
          for j in range(t.plan.tile_m // 8) for q in range(4)]


SIMT = Plan(8, 8, (Layout(True, TILE + 4), Layout(True, TILE + 4)), _simt_products, "an 8x8 register tile per thread")


def wgmma_k(kind: str) -> int:
  """k of one wgmma of a tensor-core kind: 32 bytes of each operand's row."""
  return 8 if kind == "tf32" else 16


def wgmma_plan(kind: str, turned: tuple[bool, bool], step: int = 64, tile_n: int = TILE, wide: bool = False) -> Plan:
  """The sm_90 warpgroup plan for `kind` with k-steps of `step` (one 128-byte swizzled row of k: 64 of a 16-bit type, 32
  of TF32): swizzled tiles laid out as the operands lie in memory (K-major, or MN-major read transposed by the tensor
  cores; TF32 has no transposed form, so its operands are both K-major), read by wgmma through descriptors. `wide`: each
  warpgroup's wgmma is n256 (tiles of 128 x 256, or 256 x 128 computed transposed), half the shared-memory reads of the
  narrow side per product."""
  row = swizzle_row(kind)
  assert step == row, "a k-step is one swizzled row of k"
  k_rows = (turned[0], not turned[1])
  layouts = tuple(Layout(rows, row * step if rows else row, swizzled=True, row=row) for rows in k_rows)
  if kind == "tf32" and k_rows[1]:  # B N-major: the tile transposed, B from registers
    assert not k_rows[0] and tile_n == TILE, "TF32 tiles need A K-major, and B N-major 128-wide tiles"
    tile_m = 2 * TILE if wide else TILE
    return Plan(step, 1, (layouts[0], layouts[1]), _wgmma_swapped_products,
                f"2 warpgroups of {tile_m}x64 on wgmma m64n{tile_m}k8 tf32 computing the tile transposed, B's fragments in registers",
                kind, tile_n, tile_m, True)
  assert kind != "tf32" or k_rows == (False, False), "wgmma reads TF32 tiles K-major only"
  if wide: tile_n = 2 * TILE
  return Plan(step, 1, (layouts[0], layouts[1]), _wgmma_products,
              f"2 warpgroups of 64x{tile_n} on wgmma m64n{tile_n}k{wgmma_k(kind)} {kind}", kind, tile_n)


def tensor_core_plan(kind: str, turned: tuple[bool, bool], step: int = 32) -> Plan:
  """The tensor-core plan for `kind` ("f16", "bf16", "tf32") with k-steps of `step`: each tile lies in shared memory as its
  operand lies in memory (`turned`: A contiguous along m is A[k][m], B contiguous along k is B[n][k]); rows padded so
  fragment reads hit different banks (16-bit: 8 elements, which keeps ldmatrix's 16-byte rows aligned)."""
  k_rows = (turned[0], not turned[1])
  short = step + (4 if kind == "tf32" else 8)  # a row of k: TF32 fragments read rows g and columns t, 16-bit ones ldmatrix rows
  layouts = (Layout(k_rows[0], TILE + 8 if k_rows[0] else short), Layout(k_rows[1], TILE + 8 if k_rows[1] else short))
  shape = "m16n8k8 TF32" if kind == "tf32" else f"m16n8k16 {kind}"
  return Plan(step, step // (8 if kind == "tf32" else 16), layouts, _mma_products(kind), f"8 warps of 64x32 on mma.sync {shape}")


KIND_DTYPES = {"f16": dtypes.float16, "bf16": dtypes.bfloat16, "tf32": dtypes.float32}  # tensor-core kinds: their tiles' type


def shared_bytes(plan: Plan, dtype: DType | None, stages: int = 2) -> int:
  """Shared memory the plan's tiles take with `stages` buffers each (`dtype` None: counted as float32)."""
  return sum(stages * lay.elements(plan.step, extent) * (dtype or dtypes.float32).itemsize
             for lay, extent in zip(plan.layouts, (plan.tile_m, plan.tile_n)))


def _operands(t: _Tiles, tile_dtype: DType | None, stages: int) -> list[_Operand]:
  """The product's two sides, each with `stages` tile buffers in shared memory (of `tile_dtype`, or its own type)."""
  mm, plan = t.mm, t.plan
  la, lb = plan.layouts
  return [_Operand(mm.x, mm.m, t.by * plan.tile_m, t.M, plan.tile_m, la,
                   UOp(Ops.DEFINE_LOCAL, tile_dtype or mm.x.dtype, (), (0, stages * la.elements(plan.step, plan.tile_m))),
                   runs_along(mm.x, mm.m, mm.k)),
          _Operand(mm.y, mm.n, t.bx * plan.tile_n, t.N, plan.tile_n, lb,
                   UOp(Ops.DEFINE_LOCAL, tile_dtype or mm.y.dtype, (), (1, stages * lb.elements(plan.step, plan.tile_n))),
                   runs_along(mm.y, mm.n, mm.k))]


def tma_ready(mm: Matmul, plan: Plan, tile_dtype: DType | None) -> bool:
  """Whether both tiles of a wgmma plan can come by TMA (`_Tiles.boxes`)."""
  t = _Tiles(mm, plan, 1, special("block", 1), mm.acc)
  return all(t.boxes(op) for op in _operands(t, tile_dtype, 2))


def _register_pipeline(t: _Tiles, ops: list[_Operand], asyncs: list[_Operand], kt: UOp, kk: UOp, stages: int, ahead_by: int,
                       slot: Callable[[UOp, _Operand], UOp]) -> tuple[UOp, list[UOp], list[UOp]]:
  """The k-loop's copies through the threads: (the step's barrier, what readers come after, the refill stores for the
  SINK). Operands copied by cp.async (`asyncs`) go `ahead_by` steps ahead; the others are loaded into registers during a
  step and stored into the next step's buffer at its end."""
  plan = t.plan
  # step 0 before the loop (and with cp.async, steps 1 .. stages - 2 too, one group each); each step starts at a barrier
  # (after it, the buffer filled for this step may be read, and the one read last step may be refilled)
  true = UOp.const(dtypes.bool, True)
  first = [_store(op.local, at, v, true) for op in ops if op not in asyncs for at, v in t.elements(op, t.k_base, None)]
  groups: list[UOp] = []
  for n in range(ahead_by if asyncs else 0):  # every group is committed, also empty ones: the waits count groups
    prologue = [c for op in asyncs if n < t.steps
                for c in t.async_copies(op, UOp.const(INT, n * t.buffer(op)), t.k_base + n * plan.step, None)]
    groups.append(UOp(Ops.BARRIER, dtypes.void, tuple(prologue) + tuple(groups[-1:]), "commit"))
  wait = (UOp(Ops.BARRIER, dtypes.void, (kt, *groups), ("wait", ahead_by - 1)),) if asyncs else ()
  # (wgmma reads shared memory through the async proxy: each thread's writes are fenced for it before the barrier)
  barrier = UOp(Ops.BARRIER, dtypes.void, (kt, *first, *wait), "proxy" if plan.kind else "block")
  after: list[UOp] = []
  if asyncs:
    ahead = kt + ahead_by
    copies = [c for op in asyncs for c in t.async_copies(op, slot(ahead, op), t.k_base + ahead * plan.step, ahead < t.steps, barrier)]
    after.append(UOp(Ops.BARRIER, dtypes.void, tuple(copies), "commit"))
  refills: list[UOp] = []
  if t.steps > 1:
    more = kt < t.steps - 1
    last_kk = UOp.const(INT, plan.inner - 2) < kk if plan.inner > 1 else UOp.const(dtypes.bool, True)
    # SINK sources inside the k-loops: the linearizer issues their global loads once per k-step, before the inner loop, and
    # writes them after the last inner step's multiply-adds, which hide the loads' latency. Gated by the inner loop only:
    # a refill gated by `more` too let the compiler sink the loads into its branch (the last step stores what no step reads)
    refills = [_store(op.local, slot(kt + 1, op) + at, v, last_kk, barrier)
               for op in ops if op not in asyncs for at, v in t.elements(op, t.k_base + (kt + 1) * plan.step, more)]
  return barrier, after, refills


def _tma_pipeline(t: _Tiles, ops: list[_Operand], boxes: list[list[_Box]], kt: UOp, stages: int, ahead_by: int,
                  slot: Callable[[UOp, _Operand], UOp]) -> tuple[UOp, list[UOp]]:
  """The k-loop's copies by TMA (see `map_tiled`): (the step's barrier, the wait for its stage's mbarrier)."""
  lead = t.tid < 1  # the thread that sets up the mbarriers and issues the copies
  mbar = UOp(Ops.DEFINE_LOCAL, dtypes.uint64, (), (3, stages))
  ready = UOp(Ops.BARRIER, dtypes.void, (UOp(Ops.BARRIER, dtypes.void, (mbar, lead), ("init", stages)),), "block")
  nbytes = sum(b.spec.box_bytes for bs in boxes for b in bs)

  def fetch(step: UOp, gate: UOp, *after: UOp) -> list[UOp]:
    stage = step % stages
    expect = UOp(Ops.BARRIER, dtypes.void, (mbar, stage, gate, *after), ("expect", nbytes))
    return [c for op, bs in zip(ops, boxes) for c in t.tma_copies(op, bs, slot(step, op), t.k_base + step * t.plan.step, mbar, stage, gate, expect)]
  first = [c for n in range(min(ahead_by, t.steps)) for c in fetch(UOp.const(INT, n), lead, ready)]
  # (after it every thread is done with the step before, whose stage the lead thread then refills)
  barrier = UOp(Ops.BARRIER, dtypes.void, (kt, ready, *first), "block")
  ahead = kt + ahead_by
  refill = fetch(ahead, lead & (ahead < t.steps), barrier)
  landed = UOp(Ops.BARRIER, dtypes.void, (mbar, kt % stages, (kt // stages) & 1, barrier, *refill), "landed")
  return barrier, [landed]


def map_tiled(sink: UOp, mm: Matmul, split: int, plan: Plan, tile_dtype: DType | None = None, stages: int = 2, in_flight: int = 0,
              tma: bool = False) -> UOp:
  """The tiled plan `plan` (see the module docstring) for a lowered kernel `sink` whose linear program is `mm`; the tiles
  are of `tile_dtype` in shared memory (default: each operand's type), `stages` buffers each. With more than two, operands
  that can be copied as they are (`copies_async`) are fetched `stages` - 1 steps ahead by cp.async (ASYNC_COPY, groups
  closed by BARRIER "commit", waited for by BARRIER ("wait", n) before each step's barrier); the others as with two.
  wgmma: `in_flight` chains may still run when the next step begins (wgmma.wait_group in_flight): each holds its stage, so
  copies go `stages` - 1 - in_flight steps ahead, and the chains are waited for after the k-loop (BARRIER ("wgmma", 0)).
  `tma` (wgmma, both operands `_Tiles.boxes`): thread 0 fetches each step's tiles by TMA into a stage whose mbarrier
  counts the bytes landing (BARRIER ("expect", bytes)); after each step's block barrier it refills the stage the step
  before read, and every thread waits on the mbarrier of its step's stage (BARRIER "landed", phase parity (kt / stages) & 1):
  no thread copies, fences or waits for copies of its own."""
  B, M, N, K = mm.sizes
  nodes = toposort([sink])
  red = next(n for n in nodes if n.op is Ops.REDUCE and mm.mul in toposort([n.src[0]]))
  [out_store] = [s for s in sink.src if s.op is Ops.STORE]
  next_id = max((n.arg[0] for n in nodes if n.op is Ops.RANGE), default=-1) + 1
  tm, tn = plan.tile_m, plan.tile_n
  block = special("block", ceildiv(N, tn) * ceildiv(M, tm) * B * split)
  t = _Tiles(mm, plan, split, block, red, in_flight)
  ahead_by = stages - 1 - in_flight  # k-steps the copies run ahead of the step that reads them
  ops = _operands(t, tile_dtype, stages)
  boxes = [t.boxes(op) for op in ops] if tma else []
  assert not tma or all(boxes), "TMA needs both operands in tensor maps (tiling.tma_ready)"
  asyncs = [op for op in ops if stages > 2 and t.copies_async(op)] if not tma else []
  kt = UOp(Ops.RANGE, INT, (), (next_id, t.steps, "reduce"))
  kk = UOp(Ops.RANGE, INT, (), (next_id + 1, plan.inner, "reduce", plan.inner))
  loops = (kt, kk) if plan.inner > 1 else (kt,)

  def slot(step: UOp, op: _Operand) -> UOp: return ((step & 1) if stages == 2 else (step % stages)) * t.buffer(op)
  true = UOp.const(dtypes.bool, True)
  refills: list[UOp] = []
  if tma: barrier, after = _tma_pipeline(t, ops, [b for b in boxes if b is not None], kt, stages, ahead_by, slot)
  else: barrier, after, refills = _register_pipeline(t, ops, asyncs, kt, kk, stages, ahead_by, slot)

  def reader(op: _Operand, role: str) -> Reader:
    cur = slot(kt, op)
    if plan is SIMT: return lambda at: UOp(Ops.LOAD, op.local.dtype, (op.local, cur + at, barrier, *after))
    kind = next(k for k, dt in KIND_DTYPES.items() if dt == op.local.dtype)
    return lambda at: UOp(Ops.FRAGMENT, op.local.dtype, (op.local, cur + at, barrier, *after), (role, kind, op.layout.ld, op.layout.k_rows))
  roles = ("desc", "wa" if plan.swapped else "desc") if plan.kind else ("a", "b" if tile_dtype == dtypes.float32 else "b2")
  per_thread = plan.products(t, reader(ops[0], roles[0]), reader(ops[1], roles[1]), kk)
  acc = [(UOp(Ops.REDUCE, red.dtype, (value, *loops), Ops.ADD), r, c) for value, r, c in per_thread]
  if plan is not SIMT:
    # the fragments' outputs (two neighbouring columns per lane, rows 8 apart) go through shared memory, which the tiles no
    # longer need (the buffer reuses theirs), and come back out row by row: consecutive threads then store consecutive
    # outputs, and each does its share of the epilogue once per output
    # copies still in flight (the stages fetched past the last step) would land in the reused memory: wait for them all
    drained = (UOp(Ops.BARRIER, dtypes.void, tuple(a for a, _, _ in acc), ("wait", 0)),) if asyncs else ()
    # (and chains left running must finish before their accumulators are read)
    chains = (UOp(Ops.BARRIER, dtypes.void, tuple(a for a, _, _ in acc), ("wgmma", 0)),) if in_flight else ()
    done = UOp(Ops.BARRIER, dtypes.void, tuple(a for a, _, _ in acc) + drained + chains, "block")
    staged = UOp(Ops.DEFINE_LOCAL, red.dtype, (), (2, tm * (tn + 4), "reuse"))
    put = UOp(Ops.BARRIER, dtypes.void, tuple(_store(staged, r * (tn + 4) + c, a, true, done) for a, r, c in acc), "block")
    spots = [(t.tid + e * BLOCK) for e in range(tm * tn // BLOCK)]
    acc = [(UOp(Ops.LOAD, red.dtype, (staged, f // tn * (tn + 4) + f % tn, put)), f // tn, f % tn) for f in spots]
  extra: list[UOp] = refills
  if split > 1:
    tiles = B * t.gx * t.gy
    tile = t.whole * (t.gx * t.gy) + t.by * t.gx + t.bx
    scratch = UOp(Ops.DEFINE_GLOBAL, red.dtype, (), (0, tiles * split * tm * tn))
    mine = (tile * split + t.part) * (tm * tn)
    partials = tuple(_store(scratch, mine + r * tn + c, a, UOp.const(dtypes.bool, True)) for a, r, c in acc)
    fence, reset = last_block(partials, t.tid, tile, tiles, split, 1)
    q = UOp(Ops.RANGE, INT, (), (next_id + 2, split, "reduce", 8))
    first_part = tile * split * (tm * tn)
    acc = [(UOp(Ops.REDUCE, red.dtype, (UOp(Ops.LOAD, red.dtype, (scratch, first_part + q * (tm * tn) + r * tn + c, fence)), q), Ops.ADD),
            r, c) for _, r, c in acc]
    extra.append(reset)
  stores: list[UOp] = []
  for a, r, c in acc:
    gm, gn = t.by * tm + r, t.bx * tn + c
    ok = _all(([gm < M] if M % tm else []) + ([gn < N] if N % tn else []))
    if ok is not None: gm, gn = ok.where(gm, UOp.const(INT, 0)), ok.where(gn, UOp.const(INT, 0))
    out = substitute(out_store, {**t.batch, **digits(mm.m, gm), **digits(mm.n, gn), red: a})
    stores.append(out if ok is None else UOp(Ops.STORE, out.dtype, out.src[:3] + ((out.src[3] & ok) if len(out.src) > 3 else ok,), out.arg))
  # the epilogue's loads from memory (a bias, a residual, an activation's input) all before the first store: issued one
  # output at a time, each output waited for its own (a GELU gradient's epilogue took 4x its product's time)
  early = tuple(dict.fromkeys(u for st in stores for u in toposort([st.src[2]]) if u.op is Ops.LOAD and u.src[0].op is Ops.PARAM))
  if early: stores = [UOp(Ops.STORE, st.dtype, st.src[:3] + (st.src[3] if len(st.src) > 3 else true,) + st.src[4:] + early, st.arg) for st in stores]
  return graph_rewrite(UOp(Ops.SINK, sink.dtype, tuple(stores + extra), sink.arg), symbolic)


def plan_for(name: str, mm: Matmul, step: int = 32, wide: bool = False) -> tuple[Plan, DType | None]:
  """The plan `name` ("matmul", "mma", "mma_tf32", "wgmma") for product `mm` (tensor cores: k-steps of `step`), and the type of its
  tiles in shared memory (None: each operand's own). A tensor-core tile lies in shared memory as its operand lies in
  memory: A contiguous along m (a weight gradient's dY^T) is A[k][m], B contiguous along k (the weight of x @ W.T) is B[n][k]."""
  if name == "matmul": return SIMT, None
  kind = next(k for k, dt in KIND_DTYPES.items() if dt == mm.x.dtype)  # float32 operands: TF32 (plan.py allows it)
  turned = (runs_along(mm.x, mm.m, mm.k), not runs_along(mm.y, mm.n, mm.k))
  # (the wgmma plan's tiles are 128 x 64 for N <= 64: attention's p @ v, whose 128-wide tiles were half unused)
  plan = wgmma_plan(kind, turned, step, 64 if mm.sizes[2] <= 64 else TILE, wide) if name == "wgmma" else tensor_core_plan(kind, turned, step)
  return plan, KIND_DTYPES[kind]


def describe_tiled(plan: Plan, mm: Matmul, split: int, stages: int, tma: bool = False) -> str:
  B, M, N, K = mm.sizes
  buffers = f"{stages} shared-memory stages filled by TMA" if tma else "double-buffered shared memory" if stages == 2 else \
    f"{stages} shared-memory stages (cp.async where an operand is copied as it is)"
  return (f"tiled product {B}x{M}x{N}, k={K}: {plan.tile_m}x{plan.tile_n} output tiles, k-steps of {plan.step} through {buffers}, "
          f"{plan.describe}" + (f", split-K over {split} blocks" if split > 1 else ""))


__all__ = ["map_tiled", "plan_for", "tma_ready", "swizzle_row", "wgmma_k",
           "describe_tiled", "runs_along", "shared_bytes", "tensor_core_plan", "wgmma_plan", "SIMT", "Layout", "Plan"]
