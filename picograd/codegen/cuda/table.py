"""CUDA C from a mapped program (codegen layer): one statement per instruction, from an `{Ops: fn}` table.

The mapping passes (`mapping.py`) decided how the kernel runs (blocks, threads, dealt-out loops, lanes, combines);
this file only prints what the linearized program says, in order. Values are `const` locals named once; constants
and parameters are inlined where used; a 16-byte load is a vector local whose lanes (GEP) are read as `.x` .. `.w` (or
as the elements of eight 16-bit ones). Shared memory is static, or carved out of the dynamic block when it exceeds the
static limit. Tensor cores: a FRAGMENT is `ldmatrix` (16-bit) or TF32-rounded loads into registers, and an MMA is printed
where the ACCUMULATEs of its four lanes are, as one `mma.sync` accumulating into them. On sm_90 a FRAGMENT "desc" is a
wgmma descriptor (of a tile in the 128-byte swizzle, whose groups of 8 rows must be 1024-byte aligned: the dynamic block is),
and a chain of WGMMAs is printed where the ACCUMULATEs of the last one's 64 lanes are: a fence, one
`wgmma.mma_async` per link accumulating into them, then a commit and a wait for it (the k-step's product is complete there).
An ASYNC_COPY whose argument is a tensor map is a TMA copy (`cp.async.bulk.tensor`) of one box from a kernel parameter
`tmN` (a `__grid_constant__` tensor map the runtime encodes at launch, `tensor_maps`) completing on an mbarrier.
"""
from __future__ import annotations
from typing import Callable
from picograd.ir.ops import UOp, Ops
from picograd.codegen.cuda.analysis import data_values
from picograd.codegen.cuda.emit import Writer
from picograd.codegen.cuda.tiling import Layout, swizzle_row, wgmma_k
from picograd.dtype import dtypes
from picograd.helpers import TensorMapSpec
from picograd.codegen.cuda.ops import APPROX, MEM_TYPES, REDUCE_FUNCTORS, REG_TYPES, acc_update, c_const, render_alu, render_load, render_store, \
  vector_type

_SPECIAL_C = {"block": "blockIdx.x", "thread": "threadIdx.x"}
STATIC_SHARED = 48 * 1024  # more shared memory than this must be dynamic (and the launch asks for it)
_MMA_PTX = {"f16": "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "bf16": "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "tf32": "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"}


def _lanes_of(value: UOp) -> UOp | None:
  """The vector LOAD whose lanes, in order, a VECTORIZE is (then it is stored as the loaded vector), else None."""
  first = value.src[0]
  if first.op is not Ops.GEP or first.src[0].op is not Ops.LOAD: return None
  vec = first.src[0]
  return vec if value.src == tuple(UOp(Ops.GEP, vec.dtype, (vec,), i) for i in range(vec.arg)) else None


class TableRenderer:
  """Walks a linear program once; `launch` gives (grid, block) from its SPECIALs."""

  def __init__(self, program: list[UOp]):
    self.program = program
    self.w = Writer()
    self.w.wrapping = data_values(program)
    self.names: dict[UOp, str] = {}
    self.globals: list[str] = []  # file-scope declarations (`__device__` scratch)
    own = [u for u in program if u.op is Ops.DEFINE_LOCAL and len(u.arg) == 2]
    reuse = [u for u in program if u.op is Ops.DEFINE_LOCAL and len(u.arg) > 2]  # arg (slot, n, "reuse"): used after the others
    # the largest first, each 1024-byte aligned when it is that large: a 128-byte swizzled tile's groups of 8 rows must be
    # (the hardware swizzles by address), and a small buffer placed before it (a split-K ticket flag) moved it off
    own.sort(key=lambda u: -u.arg[1] * u.dtype.itemsize)
    starts, end = [], 0
    for u in own:
      size = u.arg[1] * u.dtype.itemsize
      starts.append(-(-end // (1024 if size >= 1024 else 16)) * (1024 if size >= 1024 else 16))
      end = starts[-1] + size
    total = max([end] + [u.arg[1] * u.dtype.itemsize for u in reuse])
    # offsets into the dynamic block when the buffers do not fit in static shared memory or one reuses the others' memory;
    # its size goes to the launch
    dynamic = total > STATIC_SHARED or bool(reuse)
    self.offsets = {**dict(zip(own, starts)), **{u: 0 for u in reuse}} if dynamic else {}
    self.dynamic_shared = total if dynamic else 0
    self.mma_lanes: dict[UOp, dict[int, str]] = {}  # an MMA's (WGMMA's) accumulators, by lane, until all are known
    self.declared = False  # the dynamic block
    self.tensor_maps: dict[tuple[UOp, TensorMapSpec], str] = {}  # (parameter, map) -> the kernel parameter holding it

  def launch(self) -> tuple[tuple[int, ...], int]:
    sizes = {u.arg[0]: u.arg[1] for u in self.program if u.op is Ops.SPECIAL}
    return (sizes.get("block", 1),), sizes.get("thread", 1)

  def render(self) -> list[str]:
    for u in self.program: self._RENDER.get(u.op, TableRenderer._alu)(self, u)
    return self.w.lines

  def val(self, u: UOp) -> str: return c_const(u.arg, u.dtype) if u.op is Ops.CONST else self.names[u]

  def _define(self, u: UOp, code: str, prefix: str = "v") -> None:
    n = self.names[u] = self.w.fresh(prefix)
    self.w(f"const {REG_TYPES[u.dtype]} {n} = {code};")

  def _skip(self, u: UOp) -> None: pass  # PARAM and CONST are inlined where used
  def _alu(self, u: UOp) -> None:
    self._define(u, render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in self.w.wrapping, u.arg == APPROX))
  def _special(self, u: UOp) -> None: self._define(u, f"(int){_SPECIAL_C[u.arg[0]]}", "i")
  def _later(self, u: UOp) -> None: self.names[u] = ""  # an MMA, its lanes, a VECTORIZE: printed where they are used
  def _guard(self, u: UOp) -> None: self.w(f"if (!{self.val(u.src[0])}) return;")

  def _range(self, u: UOp) -> None:
    n = self.names[u] = self.w.fresh("r")
    if len(u.arg) > 3: self.w(f"#pragma unroll {u.arg[3]}")
    # a loop whose trip count is a value (the flash plan's key tiles up to a causal diagonal) has it as its source
    self.w.open(f"for ({REG_TYPES[u.dtype]} {n} = 0; {n} < {self.val(u.src[0]) if u.src else u.arg[1]}; {n}++)")

  def _endrange(self, u: UOp) -> None: self.w.close()

  def _define_acc(self, u: UOp) -> None:
    acc = self.names[u] = self.w.fresh("acc")
    self.w(f"{REG_TYPES[u.dtype]} {acc} = {c_const(u.arg[0], u.dtype)};")

  def _accumulate(self, u: UOp) -> None:
    term = u.src[1]
    if term.op is Ops.GEP and term.src[0].op in (Ops.MMA, Ops.WGMMA):
      acc = self.names[u.src[0]]
      # (the flash plan's O += P V: the sum so far rescaled, then the chain of MMAs added into it)
      if u.arg is Ops.RESCALED: self.w(f"{acc} *= {self.val(u.src[2])};")
      return (self._mma if term.src[0].op is Ops.MMA else self._wgmma)(term.src[0], term.arg, acc)
    if u.arg is Ops.RESCALED:  # online softmax (codegen/online.py): the sum so far rescaled, then the term added
      acc = self.names[u.src[0]]
      self.w(f"{acc} = {acc} * {self.val(u.src[2])} + {self.val(u.src[1])};")
    else: self.w(acc_update(u.arg, u.src[0].dtype, self.names[u.src[0]], self.val(u.src[1])))

  def _load(self, u: UOp) -> None:
    param, *idx = u.src
    if param.op is Ops.DEFINE_ACC: self.names[u] = self.names[param]
    elif param.op is Ops.DEFINE_GLOBAL: self._define(u, f"__ldcg(&{self.names[param]}[{self.val(idx[0])}])")  # written by other SMs
    elif param.op is Ops.DEFINE_LOCAL:
      at = f"{self.names[param]}[{self.val(idx[0])}]"
      self._define(u, f"__bfloat162float({at})" if param.dtype == dtypes.bfloat16 else at)
    elif u.arg is not None:  # four lanes (16 bytes of 32-bit ones, 8 of 16-bit ones) or eight 16-bit lanes
      vt = vector_type(param.dtype, u.arg)
      n = self.names[u] = self.w.fresh("vec")
      self.w(f"const {vt} {n} = *reinterpret_cast<const {vt}*>(p{param.arg[0]} + {self.val(idx[0])});")
    else: self._define(u, render_load(param, self.val(idx[0])))

  def _gep(self, u: UOp) -> None:
    vec = u.src[0]
    if vec.op in (Ops.MMA, Ops.WGMMA): return self._later(u)
    if vec.arg == 4 and vec.dtype.itemsize == 4: self.names[u] = f"{self.names[vec]}.{'xyzw'[u.arg]}"
    else:
      lane = f"reinterpret_cast<const {MEM_TYPES[vec.dtype]}*>(&{self.names[vec]})[{u.arg}]"
      self.names[u] = f"__bfloat162float({lane})" if vec.dtype == dtypes.bfloat16 else lane

  def _store(self, u: UOp) -> None:
    param, idx, value, *gate = u.src
    buf = f"p{param.arg[0]}" if param.op is Ops.PARAM else self.names[param]
    if value.op is Ops.VECTORIZE and (vec := _lanes_of(value)) is not None and MEM_TYPES[vec.dtype] == MEM_TYPES[param.dtype]:
      vt = vector_type(vec.dtype, vec.arg)  # the bytes loaded, stored as they are
      lines = [f"*reinterpret_cast<{vt}*>({buf} + {self.val(idx)}) = {self.names[vec]};"]
    elif value.op is Ops.VECTORIZE and param.op is Ops.PARAM:
      vt = vector_type(param.dtype, len(value.src))
      pack = f"pg_pack{len(value.src)}" if param.dtype.itemsize == 2 else f"make_{vt}"
      lines = [f"*reinterpret_cast<{vt}*>({buf} + {self.val(idx)}) = {pack}({', '.join(self.val(s) for s in value.src)});"]
    else:
      lanes = list(value.src) if value.op is Ops.VECTORIZE else [value]
      at = [self.val(idx) if i == 0 else f"{self.val(idx)} + {i}" for i in range(len(lanes))]
      if param.op is Ops.PARAM: lines = [render_store(param, a, self.val(v)) for a, v in zip(at, lanes)]
      elif param.dtype == dtypes.bfloat16: lines = [f"{buf}[{a}] = __float2bfloat16_rn({self.val(v)});" for a, v in zip(at, lanes)]
      else: lines = [f"{buf}[{a}] = {self.val(v)};" for a, v in zip(at, lanes)]
    gated = gate and not (gate[0].op is Ops.CONST and gate[0].arg)
    if gated and len(lines) > 1: lines = [f"if ({self.val(gate[0])}) {{ {' '.join(lines)} }}"]
    elif gated: lines = [f"if ({self.val(gate[0])}) {lines[0]}"]
    for line in lines: self.w(line)

  def _define_local(self, u: UOp) -> None:
    n, t = self.w.fresh("smem"), MEM_TYPES[u.dtype]
    self.names[u] = n
    if not self.offsets: return self.w(f"__shared__ __align__(16) {t} {n}[{u.arg[1]}];")
    if not self.declared: self.w("extern __shared__ __align__(1024) unsigned char pg_smem[];")
    self.declared = True
    self.w(f"{t}* const {n} = reinterpret_cast<{t}*>(pg_smem + {self.offsets[u]});")

  def _fragment(self, u: UOp) -> None:
    """This lane's registers of a tensor-core operand tile: ldmatrix.x4 for 16-bit tiles (A, or B of two column groups: lane
    l gives the address of row l % 8 of matrix l / 8; .trans where the tile lies k-major the other way), TF32-rounded loads
    of its elements for float ones (A, or B of one column group)."""
    role, kind, ld, k_rows = u.arg
    if role == "pack": return self._pack(u)
    local, base = self.names[u.src[0]], self.val(u.src[1])
    if role == "desc":
      # start address, LBO and SBO (in 16-byte units) and the 128-byte swizzle mode (1 in bits 62-63) of a swizzled tile
      lbo, sbo = Layout(k_rows, ld, swizzled=True, row=swizzle_row(kind)).strides()
      n = self.names[u] = self.w.fresh("desc")
      self.w(f"const unsigned long long {n} = (unsigned long long)((__cvta_generic_to_shared({local} + {base}) >> 4) & 0x3FFF) | "
             f"({lbo >> 4}ull << 16) | ({sbo >> 4}ull << 32) | (1ull << 62);")
      return
    n = self.names[u] = self.w.fresh("frag")
    count = 2 if role == "b" else 4
    self.w(f"unsigned {n}[{count}];")
    if role == "wa":
      # wgmma's A from registers (TF32 m64k8): warp v of the warpgroup holds rows (s) v * 16 + g, + 8 and k t, t + 4 of an
      # MN-major swizzled tile whose base has no swizzle bits (s a multiple of 32, k of 8): the lane's offsets swizzle alone.
      # A chain left running from the step before still reads its A registers, which the compiler takes as free after each
      # wgmma: it is waited for first (4096 x 4096 came out wrong on the H200 without)
      w = swizzle_row(kind)
      self.w('asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");')
      self.w.open("")
      self.w("const int v = (threadIdx.x >> 5) & 3, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;")
      for i, (s, q) in enumerate([("v * 16 + g", "t"), ("v * 16 + g + 8", "t"), ("v * 16 + g", "t + 4"), ("v * 16 + g + 8", "t + 4")]):
        at = f"(({s}) / {w}) * {ld} + ({q}) * {w} + ((({s}) % {w}) ^ ((({q}) & 7) * {w // 8}))"
        self.w(f"{n}[{i}] = __float_as_uint({local}[{base} + {at}]);")
      self.w.close()
      return
    if kind == "tf32":
      # A (m16 x k8): (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); B (k8 x n8): (t, g), (t + 4, g); g = lane / 4, t = lane % 4
      spots = [("g", "t"), ("g + 8", "t"), ("g", "t + 4"), ("g + 8", "t + 4")] if role == "a" else [("t", "g"), ("t + 4", "g")]
      self.w.open("")
      self.w("const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;")
      for i, (r, c) in enumerate(spots):
        # element (r, c) of the fragment (A: m, k; B: k, n); k runs along the tile's rows when k_rows
        k, other = (c, r) if role == "a" else (r, c)
        at = f"({k}) * {ld} + {other}" if k_rows else f"({other}) * {ld} + {k}"
        self.w(f'asm("cvt.rna.tf32.f32 %0, %1;" : "=r"({n}[{i}]) : "f"({local}[{base} + {at}]));')
      self.w.close()
      return
    # x4. A: matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15); B2: (k 0-7, n 0-7), (k 8-15, n 0-7),
    # (k 0-7, n 8-15), (k 8-15, n 8-15). Lane l addresses row l % 8 of matrix l / 8, along whichever axis the tile's rows run
    low_bit_rows = (role == "a") != k_rows  # matrix lm's block along the tile's rows is lm & 1 (else lm >> 1)
    row = f"((lm & 1) * 8 + lr) * {ld} + (lm >> 1) * 8" if low_bit_rows else f"((lm >> 1) * 8 + lr) * {ld} + (lm & 1) * 8"
    trans = k_rows
    regs = ", ".join(f"%{i}" for i in range(count))
    outs = ", ".join(f'"=r"({n}[{i}])' for i in range(count))
    self.w.open("")
    self.w("const int lm = (threadIdx.x & 31) >> 3, lr = threadIdx.x & 7;")
    self.w(f"const unsigned addr = (unsigned)__cvta_generic_to_shared({local} + {base} + {row});")
    self.w(f'asm volatile("ldmatrix.sync.aligned.m8n8.x{count}{".trans" if trans else ""}.shared.b16 {{{regs}}}, [%{count}];" : {outs} : "r"(addr));')
    self.w.close()

  def _mma(self, mma: UOp, lane: int, acc: str) -> None:
    """One accumulator of the last MMA of a chain (MMA(a, b[, MMA before it]): one link, or the flash plan's chains over
    k); with the fourth, one mma.sync per link, each adding its product of fragments into all four."""
    lanes = self.mma_lanes.setdefault(mma, {})
    lanes[lane] = acc
    if len(lanes) < 4: return
    chain = [mma]
    while len(chain[-1].src) > 2: chain.append(chain[-1].src[2])
    for link in reversed(chain):
      (a, b), (kind, half) = (self.names[f] for f in link.src[:2]), link.arg
      self.w(f'asm volatile("{_MMA_PTX[kind]} {{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, {{%0, %1, %2, %3}};" : '
             + ", ".join(f'"+f"({lanes[q]})' for q in range(4)) + " : "
             + ", ".join([f'"r"({a}[{i}])' for i in range(4)] + [f'"r"({b}[{2 * half + i}])' for i in range(2)]) + ");")

  def _pack(self, u: UOp) -> None:
    """An A fragment from this lane's registers (FRAGMENT "pack"): four registers of two 16-bit values each, the first in
    the low half (m16n8k16's A layout: rows g, g + 8, then the same for columns 8 on)."""
    n = self.names[u] = self.w.fresh("frag")
    pair = "__floats2bfloat162_rn" if u.arg[1] == "bf16" else "__floats2half2_rn"
    self.w(f"unsigned {n}[4];")
    for i in range(4):
      self.w(f"{n}[{i}] = pg_bitcast<unsigned>({pair}({self.val(u.src[2 * i])}, {self.val(u.src[2 * i + 1])}));")

  def _wgmma(self, wgmma: UOp, lane: int, acc: str) -> None:
    """One accumulator of the last WGMMA of a chain; with the last of its n / 2, the chain: each link's wgmma adds its
    product into all of them (the operand tiles MN-major are read transposed), then they are committed and waited for
    (down to arg[1] chains left running)."""
    lanes = self.mma_lanes.setdefault(wgmma, {})
    lanes[lane] = acc
    kind, in_flight, n = wgmma.arg
    count = n // 2
    if len(lanes) < count: return
    chain = [wgmma]
    while len(chain[-1].src) > 2: chain.append(chain[-1].src[2])
    regs = ", ".join(f"%{i}" for i in range(count))
    outs = ", ".join(f'"+f"({lanes[i]})' for i in range(count))
    self.w('asm volatile("wgmma.fence.sync.aligned;" ::: "memory");')
    for link in reversed(chain):
      da, db = link.src[:2]
      # (16-bit tiles say whether each is read transposed, MN-major; TF32 ones are K-major and take no such immediates)
      tnsp = "" if kind == "tf32" else f", {int(da.arg[3])}, {int(db.arg[3])}"
      shape = f"wgmma.mma_async.sync.aligned.m64n{n}k{wgmma_k(kind)}.f32.{kind}.{kind}"
      if da.arg[0] == "wa":  # A from four registers
        a_regs = ", ".join(f"%{count + i}" for i in range(4))
        self.w(f'asm volatile("{{ .reg .pred p; setp.ne.b32 p, %{count + 5}, 0; {shape} {{{regs}}}, {{{a_regs}}}, %{count + 4}, p, 1, 1; }}" : '
               f'{outs} : ' + ", ".join(f'"r"({self.names[da]}[{i}])' for i in range(4)) + f', "l"({self.names[db]}), "r"(1) : "memory");')
        continue
      self.w(f'asm volatile("{{ .reg .pred p; setp.ne.b32 p, %{count + 2}, 0; {shape} '
             f'{{{regs}}}, %{count}, %{count + 1}, p, 1, 1{tnsp}; }}" : {outs} : "l"({self.names[da]}), "l"({self.names[db]}), "r"(1) : "memory");')
    self.w('asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");')
    self.w(f'asm volatile("wgmma.wait_group.sync.aligned {in_flight};" ::: "memory");')

  def _define_global(self, u: UOp) -> None:
    n = self.names[u] = self.w.fresh("pg_scratch")
    self.globals.append(f"__device__ {REG_TYPES[u.dtype]} {n}[{u.arg[1]}];")

  def _shared_address(self, local: UOp, index: UOp) -> str:
    return f"(unsigned)__cvta_generic_to_shared({self.names[local]} + {self.val(index)})"

  def _barrier(self, u: UOp) -> None:
    if u.arg == "block": self.w("__syncthreads();")
    elif u.arg == "proxy":
      self.w('asm volatile("fence.proxy.async.shared::cta;" ::: "memory");')
      self.w("__syncthreads();")
    elif u.arg == "device": self.w("__threadfence();")
    elif u.arg == "commit": self.w('asm volatile("cp.async.commit_group;" ::: "memory");')
    elif u.arg == "landed":  # every thread waits until its stage's mbarrier completes the phase of this parity
      mbar, stage, parity = u.src[:3]
      self.w.open("")
      self.w("unsigned landed = 0;")
      self.w(f'do asm volatile("{{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }}" : '
             f'"=r"(landed) : "r"({self._shared_address(mbar, stage)}), "r"((unsigned){self.val(parity)}) : "memory"); while (!landed);')
      self.w.close()
    elif u.arg[0] == "init":  # one arrival (the copying thread's) completes each stage's phase, with the bytes it expects
      mbar, lead = u.src[:2]
      self.w.open(f"if ({self.val(lead)})")
      self.w(f'for (int s = 0; s < {u.arg[1]}; s++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: '
             f'"r"((unsigned)__cvta_generic_to_shared({self.names[mbar]} + s)) : "memory");')
      self.w('asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");')
      self.w.close()
    elif u.arg[0] == "expect":
      mbar, stage, gate = u.src[:3]
      self.w(f'if ({self.val(gate)}) asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], {u.arg[1]};" :: '
             f'"r"({self._shared_address(mbar, stage)}) : "memory");')
    elif u.arg[0] == "wgmma": self.w(f'asm volatile("wgmma.wait_group.sync.aligned {u.arg[1]};" ::: "memory");')
    else: self.w(f'asm volatile("cp.async.wait_group {u.arg[1]};" ::: "memory");')  # ("wait", n)

  def _tma_copy(self, u: UOp) -> None:
    """One box of a tensor map into shared memory, completing on an mbarrier (its bytes counted there)."""
    local, idx, param, mbar, stage, gate, *rest = u.src
    spec: TensorMapSpec = u.arg
    coords = rest[:len(spec.dims)]
    tmap = self.tensor_maps.setdefault((param, spec), f"tm{len(self.tensor_maps)}")
    places = ", ".join(f"%{3 + i}" for i in range(len(coords)))
    self.w(f'if ({self.val(gate)}) asm volatile("cp.async.bulk.tensor.{len(coords)}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes '
           f'[%0], [%1, {{{places}}}], [%2];" :: "r"({self._shared_address(local, idx)}), "l"((unsigned long long)&{tmap}), '
           f'"r"({self._shared_address(mbar, stage)}), ' + ", ".join(f'"r"((int){self.val(c)})' for c in coords) + ' : "memory");')

  def _async_copy(self, u: UOp) -> None:
    if isinstance(u.arg, TensorMapSpec): return self._tma_copy(u)
    local, idx, param, at, gate, *_ = u.src
    size = f"({self.val(gate)} ? {u.arg} : 0)" if not (gate.op is Ops.CONST and gate.arg) else str(u.arg)
    self.w(f'asm volatile("cp.async.cg.shared.global [%0], [%1], {u.arg}, %2;" :: "r"((unsigned)__cvta_generic_to_shared('
           f'{self.names[local]} + {self.val(idx)})), "l"(p{param.arg[0]} + {self.val(at)}), "r"({size}) : "memory");')

  def _atomic_add(self, u: UOp) -> None:
    buf, idx, value, gate, *_ = u.src
    self._define(u, f"{self.val(gate)} ? atomicAdd(&{self.names[buf]}[{self.val(idx)}], {self.val(value)}) : {c_const(0, u.dtype)}")

  def _group_reduce(self, u: UOp) -> None:
    op, width = u.arg
    partial, *local = u.src
    if width < 32:  # neighbouring lanes (a quad of an MMA's row): shuffles over the lane bits below `width`
      v, o = self.val(partial), width // 2
      while o:
        self._define(u, f"{REDUCE_FUNCTORS[op]}({v}, pg_shfl_xor({v}, {o}))")
        v, o = self.names[u], o // 2
    elif width == 32: self._define(u, f"pg_warp_reduce({self.val(partial)}, {REDUCE_FUNCTORS[op]})")
    else: self._define(u, f"pg_block_reduce({self.val(partial)}, {REDUCE_FUNCTORS[op]}, {self.names[local[0]]})")

  # op -> how it is printed; every ALU op falls to `_alu` (the ALU table of ops.py)
  _RENDER: dict[Ops, Callable[["TableRenderer", UOp], None]] = {
    Ops.PARAM: _skip, Ops.CONST: _skip, Ops.SPECIAL: _special, Ops.GUARD: _guard, Ops.RANGE: _range, Ops.ENDRANGE: _endrange,
    Ops.DEFINE_ACC: _define_acc, Ops.ACCUMULATE: _accumulate, Ops.LOAD: _load, Ops.GEP: _gep, Ops.VECTORIZE: _later,
    Ops.FRAGMENT: _fragment, Ops.MMA: _later, Ops.WGMMA: _later, Ops.ASYNC_COPY: _async_copy,
    Ops.STORE: _store, Ops.DEFINE_LOCAL: _define_local, Ops.GROUP_REDUCE: _group_reduce, Ops.DEFINE_GLOBAL: _define_global,
    Ops.BARRIER: _barrier, Ops.ATOMIC_ADD: _atomic_add}
