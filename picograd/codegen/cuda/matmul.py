"""The tensor-core matrix-product plans, still written as C (the SIMT plan is the IR pass of `tiling.py`): `mma` (float16 and
bfloat16) and `mma_tf32`, through double-buffered shared memory, with split-K over blocks for few output tiles, and an
arbitrary epilogue."""
from __future__ import annotations
from typing import Callable
from picograd.dtype import dtypes
from picograd.helpers import ceildiv
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import Matmul, contiguous_in
from picograd.codegen.cuda.emit import BLOCK, Cone, KernelSource, Writer, index_of
from picograd.codegen.cuda.ops import MEM_TYPES, REG_TYPES, c_const
from picograd.codegen.cuda.tiling import runs_along


class MatmulWriter:
  """Shared pieces of the tiled plans: operand tiles loaded into registers, the k-steps, and the epilogue at an output element.

  With `split` > 1 (split-K, for few output tiles over a long k: a weight gradient summed over every
  token), blockIdx.z also picks one of `split` chunks of k; each block stores its partial tile to a
  `__device__` scratch array, and the last block of a tile to finish (an atomic ticket) adds the
  partials in chunk order and runs the epilogue: deterministic, and one launch.
  """

  def __init__(self, program: list[UOp], mm: Matmul, ks: KernelSource, tile: tuple[int, int, int], split: int = 1):
    self.program, self.mm, self.ks, self.w = program, mm, ks, ks.w
    self.BM, self.BN, self.BK = tile
    B, self.M, self.N, self.K = mm.sizes
    self.split = split
    self.chunk = ceildiv(ceildiv(self.K, split), self.BK) * self.BK  # k per block, whole k-steps
    self.steps = self.chunk // self.BK
    ks.grid = (ceildiv(self.N, self.BN), ceildiv(self.M, self.BM), B * split)
    self.w(f"const int m0 = blockIdx.y * {self.BM}, n0 = blockIdx.x * {self.BN};")
    if split > 1: self.w(f"const int part = blockIdx.z % {split}, kbase = part * {self.chunk};")
    else: self.w("const int kbase = 0;")
    self.batch_env: dict[UOp, str] = {}
    if mm.batch: index_of(mm.batch, "blockIdx.z" if split == 1 else f"(blockIdx.z / {split})", self.w, self.batch_env)

  def bind(self, ranges: list[UOp], flat: str, env: dict[UOp, str]) -> None:
    if len(ranges) == 1: env[ranges[0]] = f"({REG_TYPES[ranges[0].dtype]})({flat})"
    else: index_of(ranges, flat, self.w, env)

  def tile_loader(self, operand: UOp, side: list[UOp], origin: str, size: int, tile: int, reg: str, smem_type: str,
                  smem_run: str) -> tuple[str, Callable[[str], str]]:
    """Declare registers `reg` and a lambda `load_<reg>(k0)` filling them with one (tile x BK) tile of `operand`;
    and a function giving the code that stores the registers to shared memory at `dst`, a template in @S and @K.

    Consecutive threads take consecutive elements along the axis the operand's memory runs along (k, or
    its output loop), so global loads coalesce whether or not the matrix is transposed. When the operand
    is a plain load of the shared-memory type and 16-byte groups stay aligned and in bounds, each thread
    moves whole 16-byte vectors (`smem_run` says which axis is contiguous in shared memory: "k" or "s").
    Outside the matrix the tile holds zeros.
    """
    w, BK, K, k = self.w, self.BK, self.K, self.mm.k
    run = "s" if runs_along(operand, side, k) else "k"
    width = 16 // operand.src[0].dtype.itemsize if operand.op is Ops.LOAD else 1
    # a vector along k stays inside the innermost reduction loop (k may be several loops flattened)
    aligned = operand.op is Ops.LOAD and MEM_TYPES[operand.src[0].dtype] == smem_type and \
        contiguous_in(operand.src[1], side[-1] if run == "s" else k, width) and (side[-1] if run == "s" else k).arg[1] % width == 0
    vec = width if aligned else 1
    per = tile * BK // BLOCK // vec
    if run == "s": coords = f"const int s = flat % {tile // vec} * {vec}, kk = flat / {tile // vec};"
    else: coords = f"const int s = flat / {BK // vec}, kk = flat % {BK // vec} * {vec};"
    w(f"{'uint4' if vec > 1 else REG_TYPES[operand.dtype]} {reg}[{per}];")
    w.open(f"auto load_{reg} = [&](int k0)")
    w("#pragma unroll")
    w.open(f"for (int e = 0; e < {per}; e++)")
    w(f"const int flat = threadIdx.x + e * {BLOCK};")
    w(coords)
    w(f"const int gs = {origin} + s, gk = k0 + kk;")
    env = dict(self.batch_env)
    self.bind(side, "gs", env)
    self.bind(self.mm.ks, "gk", env)
    guard = " && ".join(([f"gs < {size}"] if size % tile else []) + ([f"gk < {K}"] if self.split * self.chunk != K else []))
    if guard: w.open(f"if ({guard})")
    if vec > 1:
      idx = Cone(w, env).expr(operand.src[1])
      w(f"{reg}[e] = *reinterpret_cast<const uint4*>(p{operand.src[0].arg[0]} + {idx});")
    else: w(f"{reg}[e] = {Cone(w, env).expr(operand)};")
    if guard: w.close(f" else {reg}[e] = {'make_uint4(0, 0, 0, 0)' if vec > 1 else c_const(0, operand.dtype)};")
    w.close()
    w.close(";")
    head = f"_Pragma(\"unroll\") for (int e = 0; e < {per}; e++) {{ const int flat = threadIdx.x + e * {BLOCK}; {coords} "
    def at(dst: str, s_: str = "s", k_: str = "kk") -> str: return dst.replace("@S", s_).replace("@K", k_)
    if vec == 1:
      value = f"__float2bfloat16_rn({reg}[e])" if operand.dtype == dtypes.bfloat16 and smem_type != "float" else f"{reg}[e]"
      return f"load_{reg}", lambda dst: head + f"{at(dst)} = {value}; }}"
    if run == smem_run: return f"load_{reg}", lambda dst: head + f"*reinterpret_cast<uint4*>(&{at(dst)}) = {reg}[e]; }}"
    # contiguous in memory along one axis, in shared memory along the other: scatter the vector's elements
    scatter = f"const {smem_type}* h = reinterpret_cast<const {smem_type}*>(&{reg}[e]); _Pragma(\"unroll\") for (int q = 0; q < {vec}; q++) "
    moved = ("(s + q)", "kk") if run == "s" else ("s", "(kk + q)")
    return f"load_{reg}", lambda dst: head + scatter + f"{at(dst, *moved)} = h[q]; }}"

  def k_loop(self, loaders: list[str]) -> None:
    """Open the loop over this block's k-steps; the next step's tiles are fetched into registers first."""
    w, kt = self.w, self.steps
    w.open(f"for (int kt = 0; kt < {kt}; kt++)")
    w("const int cur = kt & 1;")
    w(f"if (kt + 1 < {kt}) {{ {' '.join(f'{ld}(kbase + (kt + 1) * {self.BK});' for ld in loaders)} }}")

  def split_scratch(self) -> tuple[str, str]:
    """Declare the split-K scratch; returns (this block's partial tile, the first partial of its output tile)."""
    gx, gy, _ = self.ks.grid
    tiles, t = gx * gy * (self.ks.grid[2] // self.split), REG_TYPES[self.mm.acc.dtype]
    part, self.count = self.w.fresh("pg_part"), self.w.fresh("pg_count")
    self.ks.globals += [f"__device__ {t} {part}[{tiles * self.split * self.BM * self.BN}];",
                        f"__device__ unsigned int {self.count}[{tiles}];"]
    self.w(f"const int tile = (blockIdx.z / {self.split}) * {gx * gy} + blockIdx.y * {gx} + blockIdx.x;")
    self.w(f"{t}* const tile_parts = {part} + (size_t)tile * {self.split * self.BM * self.BN};")
    return f"(tile_parts + part * {self.BM * self.BN})", "tile_parts"

  def split_wait(self) -> None:
    """After every thread stored its partials: the blocks of a tile take tickets, and all but the last leave."""
    w = self.w
    w("__threadfence();  // publish the partials before taking a ticket")
    w("__syncthreads();")
    w("__shared__ bool last;")
    w(f"if (threadIdx.x == 0) last = atomicAdd(&{self.count}[tile], 1u) == {self.split - 1};")
    w("__syncthreads();")
    w("if (!last) return;")
    w("__threadfence();")
    w(f"if (threadIdx.x == 0) {self.count}[tile] = 0;  // ready for the next launch")

  def split_sum(self, parts: str, local: str) -> str:
    """The sum, in chunk order, of the tile's partials at local offset `local` (read past L1: other SMs wrote them)."""
    t, name = REG_TYPES[self.mm.acc.dtype], self.w.fresh("sum")
    self.w(f"{t} {name} = {c_const(0, self.mm.acc.dtype)};")
    self.w(f"for (int q = 0; q < {self.split}; q++) {name} = {name} + __ldcg(&{parts}[q * {self.BM * self.BN} + {local}]);")
    return name

  def epilogue(self, acc_value: str) -> None:
    """Everything after the reduction (casts, a bias, the store) for output (gm, gn), skipped outside the matrix."""
    w, mm = self.w, self.mm
    guard = " && ".join(([f"gm < {self.M}"] if self.M % self.BM else []) + ([f"gn < {self.N}"] if self.N % self.BN else []))
    w.open(f"if ({guard or 'true'})")
    env = dict(self.batch_env)
    self.bind(mm.m, "gm", env)
    self.bind(mm.n, "gn", env)
    acc_load = next(u for u in self.program if u.op is Ops.LOAD and u.src[0] is mm.acc)
    Cone(w, {**env, acc_load: acc_value}).expr(mm.store)
    w.close()


MMA_TILE = (128, 128, 32)
_KP, _NP, _CP = 32 + 8, 128 + 8, 128 + 4  # padded rows: 16-byte aligned, and ldmatrix's eight rows hit different banks
# a 16-bit operand tile in shared memory, double-buffered, either way round: 128 rows of k (padded) or 32 rows of 128 (padded)
_TILE16 = 2 * max(128 * _KP, 32 * _NP) * 2
MMA_SHARED = max(2 * _TILE16, 128 * _CP * 4)


def _tensor_core_tiles(program: list[UOp], mm: Matmul, ks: KernelSource, split: int, elem: str, pads: tuple[int, int], k_step: int,
                       setup: list[str], fragments: Callable[[Writer], None], mma: str, turned: tuple[bool, bool] = (False, False)) -> None:
  """The kernel both tensor-core plans share: 128x128 tiles through double-buffered shared memory, eight warps of 64x32
  outputs (4x4 fragments of 16x8, four floats per thread each), and the epilogue. `fragments(w)` fills a[4][4] and b[4][2]
  for the k-step at `kk`; `mma` is the PTX.

  The tiles are As[m][k] (k-contiguous, rows padded to pads[0]) and Bs[k][n] (n-contiguous, rows padded to pads[1]), or,
  where `turned` says so for an operand whose memory runs the other way, As[k][m] (rows of BM + 8) and Bs[n][k] (rows of
  BK + 8): the tiles are then copied as they lie in memory, and the fragments read them transposed."""
  w = ks.w
  BM, BN, BK = MMA_TILE
  kp, np_ = pads
  a_rows, b_rows = (BM + 8 if turned[0] else kp), (BK + 8 if turned[1] else np_)  # row length of each tile in shared memory
  a_size, b_size = (BK if turned[0] else BM) * a_rows, (BN if turned[1] else BK) * b_rows
  w("extern __shared__ __align__(128) unsigned char smem[];")
  w(f"{elem}* As = reinterpret_cast<{elem}*>(smem);")
  w(f"{elem}* Bs = As + {2 * a_size};")
  w("float* Cs = reinterpret_cast<float*>(smem);  // reused for the epilogue once the tiles are done")
  w("const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4, g = lane / 4, t = lane % 4;")
  for line in setup: w(line)
  mw = MatmulWriter(program, mm, ks, MMA_TILE, split)
  la, sa = mw.tile_loader(mm.x, mm.m, "m0", mw.M, BM, "ra", elem, "s" if turned[0] else "k")
  lb, sb = mw.tile_loader(mm.y, mm.n, "n0", mw.N, BN, "rb", elem, "k" if turned[1] else "s")
  a_at = f"As[buf * {a_size} + (@K) * {a_rows} + @S]" if turned[0] else f"As[buf * {a_size} + (@S) * {a_rows} + @K]"
  b_at = f"Bs[buf * {b_size} + (@S) * {b_rows} + @K]" if turned[1] else f"Bs[buf * {b_size} + (@K) * {b_rows} + @S]"
  w("float c[4][4][4];")
  w("for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) for (int q = 0; q < 4; q++) c[i][j][q] = 0.0f;")
  w(f"{la}(kbase); {lb}(kbase);")
  w("{ const int buf = 0; " + sa(a_at) + " " + sb(b_at) + " }")
  w("__syncthreads();")
  mw.k_loop([la, lb])
  w(f"const {elem}* A = As + cur * {a_size};")
  w(f"const {elem}* B = Bs + cur * {b_size};")
  w("#pragma unroll")
  w.open(f"for (int kk = 0; kk < {BK}; kk += {k_step})")
  w("unsigned a[4][4], b[4][2];")
  fragments(w)
  w("#pragma unroll")
  w(f"for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) asm volatile(\"{mma} "
    "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\" : \"+f\"(c[i][j][0]), \"+f\"(c[i][j][1]), \"+f\"(c[i][j][2]), "
    "\"+f\"(c[i][j][3]) : \"r\"(a[i][0]), \"r\"(a[i][1]), \"r\"(a[i][2]), \"r\"(a[i][3]), \"r\"(b[j][0]), \"r\"(b[j][1]));")
  w.close()
  w(f"if (kt + 1 < {mw.steps}) {{ const int buf = cur ^ 1; {sa(a_at)} {sb(b_at)} }}")
  w("__syncthreads();")
  w.close()
  _mma_epilogue(w, mw, split)


def render_mma(program: list[UOp], mm: Matmul, ks: KernelSource, split: int = 1) -> None:
  """Tensor cores through `mma.sync.m16n8k16` and `ldmatrix` (inline PTX, so no header is needed): 128x128 tiles, k-steps of 32.

  As[m][k] is k-contiguous and Bs[k][n] n-contiguous, so row-major operands are copied as whole
  16-byte vectors; `ldmatrix` (`.trans` for B) turns eight 16-byte rows into fragment registers.
  """
  et = "__half" if mm.x.dtype == dtypes.float16 else "__nv_bfloat16"
  ptx_t = "f16" if mm.x.dtype == dtypes.float16 else "bf16"
  ks.shared_bytes = MMA_SHARED
  BM, _, BK = MMA_TILE
  # each tile lies in shared memory as its operand lies in memory: A m-contiguous (a weight gradient's dY^T) is As[k][m],
  # B k-contiguous (the weight of x @ W.T) is Bs[n][k]; ldmatrix's .trans turns the fragments the right way round
  turned = (runs_along(mm.x, mm.m, mm.k), not runs_along(mm.y, mm.n, mm.k))
  # matrix lm of an ldmatrix.x4 covers rows (lm & 1) * 8 of a 16-row A fragment and k (lm >> 1) * 8; each lane gives one row's address
  a_addr = f"A + (kk + (lm >> 1) * 8 + lr) * {BM + 8} + wm * 64 + i * 16 + (lm & 1) * 8" if turned[0] else \
      f"A + (wm * 64 + i * 16 + (lm & 1) * 8 + lr) * {_KP} + kk + (lm >> 1) * 8"
  # for B: k (lm & 1) * 8 of the n8 fragment jj * 2 + (lm >> 1)
  b_addr = f"B + (wn * 32 + (jj * 2 + (lm >> 1)) * 8 + lr) * {BK + 8} + kk + (lm & 1) * 8" if turned[1] else \
      f"B + (kk + (lm & 1) * 8 + lr) * {_NP} + wn * 32 + (jj * 2 + (lm >> 1)) * 8"

  def fragments(w: Writer) -> None:
    w("#pragma unroll")
    w.open("for (int i = 0; i < 4; i++)")
    w(f"const unsigned addr = (unsigned)__cvta_generic_to_shared({a_addr});")
    w(f'asm volatile("ldmatrix.sync.aligned.m8n8.x4{".trans" if turned[0] else ""}.shared.b16 {{%0, %1, %2, %3}}, [%4];" '
      ': "=r"(a[i][0]), "=r"(a[i][1]), "=r"(a[i][2]), "=r"(a[i][3]) : "r"(addr));')
    w.close()
    w("#pragma unroll")
    w.open("for (int jj = 0; jj < 2; jj++)")
    w(f"const unsigned addr = (unsigned)__cvta_generic_to_shared({b_addr});")
    w(f'asm volatile("ldmatrix.sync.aligned.m8n8.x4{"" if turned[1] else ".trans"}.shared.b16 {{%0, %1, %2, %3}}, [%4];" '
      ': "=r"(b[jj * 2][0]), "=r"(b[jj * 2][1]), "=r"(b[jj * 2 + 1][0]), "=r"(b[jj * 2 + 1][1]) : "r"(addr));')
    w.close()
  _tensor_core_tiles(program, mm, ks, split, et, (_KP, _NP), 16,
                     ["const int lm = lane >> 3, lr = lane & 7;  // which 8x8 matrix of an ldmatrix.x4 this lane addresses, and its row"],
                     fragments, f"mma.sync.aligned.m16n8k16.row.col.f32.{ptx_t}.{ptx_t}.f32", turned)


def _mma_epilogue(w: Writer, mw: MatmulWriter, split: int) -> None:
  """The warps' fragments through shared memory (Cs), then the epilogue per output element (after split-K's combine)."""
  BM, BN, _ = MMA_TILE
  w.open("for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++)")
  w("const int r = wm * 64 + i * 16 + g, col = wn * 32 + j * 8 + t * 2;")
  w(f"Cs[r * {_CP} + col] = c[i][j][0]; Cs[r * {_CP} + col + 1] = c[i][j][1];")
  w(f"Cs[(r + 8) * {_CP} + col] = c[i][j][2]; Cs[(r + 8) * {_CP} + col + 1] = c[i][j][3];")
  w.close()
  w("__syncthreads();")
  value = f"Cs[(e / {BN}) * {_CP} + e % {BN}]"
  if split > 1:
    mine, parts = mw.split_scratch()
    w(f"for (int e = threadIdx.x; e < {BM * BN}; e += {BLOCK}) {mine}[e] = {value};")
    mw.split_wait()
  w.open(f"for (int e = threadIdx.x; e < {BM * BN}; e += {BLOCK})")
  w(f"const int gm = m0 + e / {BN}, gn = n0 + e % {BN};")
  if split > 1: value = mw.split_sum(parts, "e")
  mw.epilogue(value)
  w.close()


_KT, _NT = 32 + 4, 128 + 4  # float rows padded so a warp's fragment loads hit 32 different banks
TF32_SHARED = max(2 * 128 * _KT * 4 + 2 * 32 * _NT * 4, 128 * _CP * 4)


def render_mma_tf32(program: list[UOp], mm: Matmul, ks: KernelSource, split: int = 1) -> None:
  """float32 operands on tensor cores as TF32 (10-bit mantissas, float32 accumulation), when the user allowed it
  (`picograd.set_float32_matmul_precision("high")`): `mma.sync.m16n8k8` on fragments read from float tiles in shared
  memory and rounded with `cvt.rna.tf32.f32`; the tiles, warps and epilogue as in `render_mma`.
  """
  ks.shared_bytes = TF32_SHARED

  def fragments(w: Writer) -> None:
    w("#pragma unroll")
    w.open("for (int i = 0; i < 4; i++)")
    w(f"const float* r0 = A + (wm * 64 + i * 16 + g) * {_KT} + kk + t;")
    w(f"a[i][0] = tf32(r0[0]); a[i][1] = tf32(r0[8 * {_KT}]); a[i][2] = tf32(r0[4]); a[i][3] = tf32(r0[8 * {_KT} + 4]);")
    w.close()
    w("#pragma unroll")
    w.open("for (int j = 0; j < 4; j++)")
    w(f"const float* c0 = B + (kk + t) * {_NT} + wn * 32 + j * 8 + g;")
    w(f"b[j][0] = tf32(c0[0]); b[j][1] = tf32(c0[4 * {_NT}]);")
    w.close()
  _tensor_core_tiles(program, mm, ks, split, "float", (_KT, _NT), 8,
                     ["auto tf32 = [](float x) { unsigned r; asm(\"cvt.rna.tf32.f32 %0, %1;\" : \"=r\"(r) : \"f\"(x)); return r; };"],
                     fragments, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32")
