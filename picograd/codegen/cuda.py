"""The CUDA C renderer: a linearized kernel (the same list the LLVM renderer walks) becomes one `__global__` function.

The renderer first picks a *plan*, the way the kernel's loops map onto the GPU, from the shape of
the program; the per-op rendering below is shared by every plan:

- `flat`: one thread per output element; the global loops are recovered from the thread index by
  div/mod and every reduction loop runs sequentially inside its thread. This is the plan `NOOPT=1`
  forces, and the fallback for anything the others do not recognize.
- `lanes`: an elementwise kernel whose innermost loop is a multiple of 4: each thread computes four
  neighbouring outputs, and loads/stores whose index moves by exactly one per output become one
  16-byte vector access (`float4`).
- `block`: one block per output; the threads of the block share each top-level reduction (thread t
  takes iterations t, t+B, ...), then combine with warp shuffles and shared memory. Used when the
  reduction reads contiguous memory, or when there are too few outputs to fill the GPU otherwise.
- `row`: a reduction per row broadcast back over the row (softmax, log_softmax, layer_norm: the
  linearizer emits such reductions once per row, before the column loops open). A block per row,
  or a warp per row for rows of at most 1024: the threads share each row reduction as in `block`
  (a reduction that uses an earlier one's result runs after its combine), then stride over the
  columns to compute and store the outputs; float4 loads and stores where the index allows.
  NOOPT's `flat` plan runs such a kernel with a thread per row, so it stays linear in the size.
- `split`: few outputs, huge reduction (a full sum): each output gets G blocks; each block writes
  its partial to a `__device__` scratch array, and the last block to finish (an atomic ticket)
  combines the G partials in a fixed order, so the result is deterministic and needs one launch.
- `columns`: a few hundred or thousand outputs, each summing a long strided column (a bias
  gradient sums 16384 rows): a thread per output as in `flat`, so a warp reads 32 neighbouring
  columns of a row at once, and G blocks per group of outputs, each taking every G-th row; their
  partials are combined as in `split`.
- `matmul` / `mma`: a reduction of a product X*Y where X depends on output loops M and Y on
  output loops N: tiles of X and Y go through shared memory (double-buffered, with the next tile
  prefetched into registers while the current one is used); SIMT threads compute 8x8 outputs each,
  or, for float16/bfloat16 operands with a float32 accumulator, tensor cores (ldmatrix + mma.sync m16n8k16).
  X, Y and the epilogue are arbitrary sub-programs (casts, padding masks, transposes, a bias),
  rendered at whatever indices the tile needs.

Rendering needs no GPU: `render_for_arch(ast, "sm_90")` gives the source for compile checks.
Register types: float16 values are `__half` (rounded after every op, like the CPU backend);
bfloat16 values live in `float` registers and are rounded at casts and stores, as in llvm.py.
"""
from __future__ import annotations
import hashlib, math, struct
from dataclasses import dataclass
from typing import Any, Callable
from picograd.dtype import DType, dtypes
from picograd.helpers import NOOPT, LaunchDims, ceildiv, prod
from picograd.ir.ops import UOp, Ops, toposort
from picograd.codegen.llvm import half_bits

# ------------------------------------------------------------------------------------------------
# the device the source is for

@dataclass(frozen=True)
class CUDATarget:
  """What the renderer needs to know about a GPU. Defaults describe an H100, for rendering with no GPU."""
  arch: str = "sm_90"
  sm_count: int = 132
  max_shared: int = 227 * 1024

  @property
  def cc(self) -> int: return int("".join(ch for ch in self.arch.split("_")[1] if ch.isdigit()))


def target_of(device: Any) -> CUDATarget:
  """The target of an opened picograd Device (its `extra` holds arch, sm_count, max_shared), or the defaults."""
  extra = getattr(device, "extra", None) or {}
  d = CUDATarget()
  return CUDATarget(extra.get("arch", d.arch), extra.get("sm_count", d.sm_count), extra.get("max_shared", d.max_shared))


# ------------------------------------------------------------------------------------------------
# types, constants and the per-op table

REG_TYPES = {dtypes.bool: "bool", dtypes.uint8: "unsigned char", dtypes.int8: "signed char", dtypes.int16: "short",
             dtypes.uint16: "unsigned short", dtypes.int32: "int", dtypes.uint32: "unsigned int", dtypes.int64: "long long",
             dtypes.uint64: "unsigned long long", dtypes.float16: "__half", dtypes.bfloat16: "float", dtypes.float32: "float",
             dtypes.float64: "double"}
MEM_TYPES = {**REG_TYPES, dtypes.bfloat16: "__nv_bfloat16"}
VEC4_TYPES = {dtypes.float32: "float4", dtypes.int32: "int4", dtypes.uint32: "uint4"}  # 16-byte accesses


def c_const(value: Any, dt: DType) -> str:
  if dt == dtypes.bool: return "true" if value else "false"
  if dt.is_int:
    v = int(value)
    if dt == dtypes.int64: return "(-9223372036854775807LL-1)" if v == -2**63 else f"{v}LL"
    if dt == dtypes.int32: return "(-2147483647-1)" if v == -2**31 else str(v)
    if dt == dtypes.uint64: return f"{v}ull"
    return f"{v}u" if dt == dtypes.uint32 else f"(({REG_TYPES[dt]})({v}))"
  if dt == dtypes.float16: return f"__ushort_as_half((unsigned short){half_bits(value)})"
  if dt == dtypes.float64:
    if math.isfinite(value): return float(value).hex()
    return f"__longlong_as_double({struct.unpack('<q', struct.pack('<d', value))[0]}LL)"
  if math.isfinite(value): return float(value).hex() + "f"
  return f"__int_as_float({struct.unpack('<i', struct.pack('<f', value))[0]})"


_INFIX = {Ops.ADD: "+", Ops.MUL: "*", Ops.IDIV: "/", Ops.MOD: "%", Ops.AND: "&", Ops.OR: "|", Ops.XOR: "^", Ops.SHL: "<<",
          Ops.SHR: ">>", Ops.CMPLT: "<", Ops.CMPNE: "!="}
_MATH = {Ops.EXP2: "exp2", Ops.LOG2: "log2", Ops.SIN: "sin", Ops.SQRT: "sqrt"}


def _float_math(op: Ops, dt: DType, x: list[str]) -> str:
  """Ops without a native __half form, for float/double operands."""
  f = "f" if dt != dtypes.float64 else ""
  if op in _MATH: return f"{_MATH[op]}{f}({x[0]})"
  if op is Ops.RECIPROCAL: return f"(1.0{f} / {x[0]})"
  if op is Ops.MOD: return f"fmod{f}({x[0]}, {x[1]})"
  raise NotImplementedError(op)


_UNSIGNED = {dtypes.int32: "unsigned int", dtypes.int64: "unsigned long long"}


def render_alu(op: Ops, dt: DType, x: list[str], src_dt: DType, wrap: bool = False) -> str:
  """C for one ALU op; `dt` is the result dtype, `src_dt` the first operand's.

  With `wrap`, signed ADD/MUL/NEG go through unsigned arithmetic: in C their overflow is undefined,
  and the compiler may then fold e.g. -max(INT_MIN, -x) into garbage; LLVM's plain add/mul wrap.
  """
  if wrap and dt in _UNSIGNED and op in (Ops.ADD, Ops.MUL, Ops.NEG):
    u = _UNSIGNED[dt]
    if op is Ops.NEG: return f"(({REG_TYPES[dt]})(0u - ({u}){x[0]}))"
    return f"(({REG_TYPES[dt]})(({u}){x[0]} {_INFIX[op]} ({u}){x[1]}))"
  # C promotes short types to int: a uint16 product can overflow int, and a negative value shifted left is undefined
  if op is Ops.MUL and dt == dtypes.uint16: return f"((unsigned short)((unsigned int){x[0]} * (unsigned int){x[1]}))"
  if op is Ops.SHL and dt.kind == "i":
    u = "unsigned long long" if dt.itemsize == 8 else "unsigned int"
    return f"(({REG_TYPES[dt]})(({u}){x[0]} << {x[1]}))"
  if op is Ops.CAST: return render_cast(dt, src_dt, x[0])
  if op is Ops.BITCAST: return f"pg_bitcast<{REG_TYPES[dt]}>({x[0]})"
  if op is Ops.WHERE: return f"({x[0]} ? {x[1]} : {x[2]})"
  if op is Ops.MAX: return f"pg_max({x[0]}, {x[1]})"
  if op is Ops.CHECK: return f"pg_check({x[0]}, {x[1]}, {x[2]}, pg_err)"
  if op is Ops.NEG: return f"(-{x[0]})"
  if op in _MATH or op is Ops.RECIPROCAL or (op is Ops.MOD and dt.is_float):
    if dt == dtypes.float16: return f"__float2half_rn({_float_math(op, dtypes.float32, [f'__half2float({a})' for a in x])})"
    return _float_math(op, dt, x)
  return f"({x[0]} {_INFIX[op]} {x[1]})"


def render_cast(dst: DType, src: DType, x: str) -> str:
  if dst == src: return x
  if dst == dtypes.bool: return f"({x} != {c_const(0, src)})" if src != dtypes.float16 else f"(__half2float({x}) != 0.0f)"
  if src == dtypes.float16: x, src = f"__half2float({x})", dtypes.float32
  # double -> float -> half would round twice; __double2half rounds once
  if dst == dtypes.float16 and src == dtypes.float64: return f"__double2half({x})"
  if dst == dtypes.float16: return f"__float2half_rn({x if src in (dtypes.float32, dtypes.bfloat16) else f'(float){x}'})"
  if dst == dtypes.bfloat16: return f"pg_round_bf16({x if src == dtypes.float32 else f'(float){x}'})"
  if src.is_float and dst.is_int:
    # int8/16, uint8/16/32 wrap from a saturated int64, as PyTorch's casts do (-1.0 -> 255 for uint8)
    wide = dtypes.int64 if dst.itemsize < 4 or dst == dtypes.uint32 else dst
    sat = f"pg_float_to_int<{REG_TYPES[wide]}>({x}, {c_const(dtypes.min(wide), wide)}, {c_const(dtypes.max(wide), wide)})"
    return sat if wide == dst else f"(({REG_TYPES[dst]}){sat})"
  return f"(({REG_TYPES[dst]}){x})"


PRELUDE = """#define PG_INLINE __device__ __forceinline__
template <class T> PG_INLINE T pg_max(T a, T b) { return (a > b || a != a) ? a : b; }  // NaN wins, like torch.maximum
// ptxas (CUDA 13.0, sm_90) folds a negation into a 3-input integer max (VIMNMX3) and drops it, so (-x).max() of int32
// came out wrong: a signed max of int and narrower (promoted to int) is written without a min/max instruction to fuse into
PG_INLINE int pg_max(int a, int b) { return a ^ ((a ^ b) & -(int)(a < b)); }
PG_INLINE short pg_max(short a, short b) { return (short)pg_max((int)a, (int)b); }
PG_INLINE signed char pg_max(signed char a, signed char b) { return (signed char)pg_max((int)a, (int)b); }
// float -> integer saturates and NaN gives 0, the rule of every picograd device (a C cast out of range is undefined)
template <class T, class F> PG_INLINE T pg_float_to_int(F x, T lo, T hi) { return x != x ? (T)0 : x <= (F)lo ? lo : x >= (F)hi ? hi : (T)x; }
// a failed runtime check sets its bit in the kernel's error word (the last argument of kernels with checks)
template <class T> PG_INLINE T pg_check(T v, bool bad, long long bit, unsigned long long* err) {
  if (bad) atomicOr(err, (unsigned long long)bit);
  return v;
}
template <class To, class From> PG_INLINE To pg_bitcast(From x) { To y; memcpy(&y, &x, sizeof(To)); return y; }  // NVRTC rejects __builtin_memcpy
template <class T> PG_INLINE T pg_shfl_xor(T v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
PG_INLINE bool pg_shfl_xor(bool v, int o) { return __shfl_xor_sync(0xffffffffu, (int)v, o) != 0; }
PG_INLINE unsigned char pg_shfl_xor(unsigned char v, int o) { return (unsigned char)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE signed char pg_shfl_xor(signed char v, int o) { return (signed char)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE short pg_shfl_xor(short v, int o) { return (short)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE unsigned short pg_shfl_xor(unsigned short v, int o) { return (unsigned short)__shfl_xor_sync(0xffffffffu, (int)v, o); }
struct PgAdd { template <class T> PG_INLINE T operator()(T a, T b) const { return a + b; } };
struct PgMax { template <class T> PG_INLINE T operator()(T a, T b) const { return pg_max(a, b); } };
// every lane of the warp gets the combined value
template <class T, class Op> PG_INLINE T pg_warp_reduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, pg_shfl_xor(v, o));
  return v;
}
// every thread of the block gets the combined value; `smem` holds one slot per warp
template <class T, class Op> PG_INLINE T pg_block_reduce(T v, Op op, T* smem) {
  v = pg_warp_reduce(v, op);
  const int nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();  // the slots may still be read by an earlier reduction
  if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = v;
  __syncthreads();
  v = smem[0];
  for (int w = 1; w < nwarps; w++) v = op(v, smem[w]);
  return v;
}
"""
HALF_PRELUDE = """#include <cuda_fp16.h>
#include <cuda_bf16.h>
PG_INLINE float pg_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
PG_INLINE bool operator!=(__half a, int b) { return __half2float(a) != (float)b; }
"""


# ------------------------------------------------------------------------------------------------
# analysis of the linear program

def range_deps(program: list[UOp]) -> dict[UOp, frozenset[UOp]]:
  """The RANGEs each instruction's value depends on; an accumulator's LOAD depends on what was accumulated, minus its loops."""
  deps: dict[UOp, frozenset[UOp]] = {}
  for u in program:
    if u.op is Ops.RANGE: deps[u] = frozenset([u])
    elif u.op is Ops.DEFINE_ACC: deps[u] = frozenset()
    elif u.op is Ops.ACCUMULATE:
      acc = u.src[0]
      deps[acc] = deps[acc] | (deps[u.src[1]] - frozenset(acc.src))
      deps[u] = frozenset()
    else: deps[u] = frozenset().union(*(deps[s] for s in u.src)) if u.src else frozenset()
  return deps


def data_values(program: list[UOp]) -> set[UOp]:
  """Instructions whose value depends on memory (a LOAD): integer arithmetic on them must wrap on overflow.

  Index arithmetic (ranges and constants only) cannot overflow its index type, so it keeps C's
  signed semantics, which let the compiler simplify addresses.
  """
  data: set[UOp] = set()
  for u in program:
    if u.op is Ops.LOAD or any(s in data for s in u.src): data.add(u)
  return data


def affine(u: UOp) -> dict[UOp | None, int] | None:
  """`u` as {range: coefficient, None: constant} when it is an integer affine function of RANGEs, else None."""
  if u.op is Ops.RANGE: return {u: 1}
  if u.op is Ops.CONST and u.dtype.is_int: return {None: int(u.arg)}
  if u.op is Ops.ADD:
    a, b = affine(u.src[0]), affine(u.src[1])
    if a is None or b is None: return None
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}
  if u.op is Ops.MUL:
    a, b = affine(u.src[0]), affine(u.src[1])
    if a is None or b is None: return None
    if set(b) == {None}: a, b = b, a
    if set(a) != {None}: return None
    return {k: a[None] * v for k, v in b.items()}
  if u.op is Ops.NEG and (a := affine(u.src[0])) is not None: return {k: -v for k, v in a.items()}
  return None


def contiguous_in(index: UOp, rng: UOp, width: int) -> bool:
  """Whether `index` moves by exactly 1 with `rng` and every other term keeps multiples of `width` aligned."""
  a = affine(index)
  return a is not None and a.get(rng) == 1 and all(v % width == 0 for k, v in a.items() if k is not rng)


@dataclass
class Matmul:
  """A program of the form out[b, m, n] = epilogue(sum_k X[b, m, k] * Y[b, k, n]), found by `find_matmul`.

  k may be several reduction loops (a weight gradient sums over batch and time): they are one
  flattened K, row-major, outermost first.
  """
  acc: UOp
  ks: list[UOp]          # the reduction loops, outermost first
  x: UOp                 # the M-side operand of the product
  y: UOp                 # the N-side operand
  mul: UOp
  m: list[UOp]           # output loops only X depends on
  n: list[UOp]           # output loops only Y depends on
  batch: list[UOp]       # the other output loops
  store: UOp

  @property
  def k(self) -> UOp:
    """The innermost reduction loop: the one along which k-contiguous memory runs."""
    return self.ks[-1]

  @property
  def sizes(self) -> tuple[int, int, int, int]:
    return prod(r.arg[1] for r in self.batch), prod(r.arg[1] for r in self.m), prod(r.arg[1] for r in self.n), \
        prod(r.arg[1] for r in self.ks)


def find_matmul(program: list[UOp], deps: dict[UOp, frozenset[UOp]]) -> Matmul | None:
  accs = [u for u in program if u.op is Ops.DEFINE_ACC]
  stores = [u for u in program if u.op is Ops.STORE]
  if len(accs) != 1 or len(stores) != 1 or accs[0].arg[1] is not Ops.ADD: return None
  acc, ks = accs[0], list(accs[0].src)
  value = next(u.src[1] for u in program if u.op is Ops.ACCUMULATE)
  while value.op is Ops.CAST: value = value.src[0]
  if value.op is not Ops.MUL or not value.dtype.is_float: return None
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  a, b = value.src
  da, db = deps[a] - set(ks), deps[b] - set(ks)
  if not (deps[a] & set(ks)) or not (deps[b] & set(ks)) or not (da | db) <= set(glob): return None
  m, n = [r for r in glob if r in da and r not in db], [r for r in glob if r in db and r not in da]
  if not m or not n: return None
  batch = [r for r in glob if r not in m and r not in n]
  return Matmul(acc, ks, a, b, value, m, n, batch, stores[0])


# ------------------------------------------------------------------------------------------------
# emitting C

class Writer:
  """Lines of C with indentation and fresh names; `wrapping` holds the instructions rendered with wrapping integer ops."""
  def __init__(self) -> None:
    self.wrapping: set[UOp] = set()
    self.lines: list[str] = []
    self.depth = 1
    self.count = 0

  def __call__(self, line: str) -> None: self.lines.append("  " * self.depth + line)
  def open(self, line: str) -> None: self(line + " {"); self.depth += 1
  def close(self, tail: str = "") -> None: self.depth -= 1; self("}" + tail)
  def fresh(self, prefix: str = "t") -> str:
    self.count += 1
    return f"{prefix}{self.count}"


def index_of(ranges: list[UOp], flat: str, w: Writer, base: dict[UOp, str]) -> None:
  """Bind each range of `ranges` (outermost first) to its digit of the flat row-major index `flat`."""
  stride = 1
  for r in reversed(ranges):
    size = r.arg[1]
    e = flat if stride == 1 else f"({flat} / {stride})"
    if r is not ranges[0]: e = f"({e} % {size})"
    name = w.fresh("i")
    w(f"const {REG_TYPES[r.dtype]} {name} = ({REG_TYPES[r.dtype]}){e};")
    base[r] = name
    stride *= size


class Cone:
  """Renders the dependency cone of an instruction at given range values (`env`), one statement per value.

  Nodes that do not depend on any range in `varying` are taken from `shared`, so several cones
  (four vector lanes, a tile's rows) compute loop-invariant values once.
  """

  def __init__(self, w: Writer, env: dict[UOp, str], shared: "Cone | None" = None, varying: frozenset[UOp] = frozenset(),
               deps: dict[UOp, frozenset[UOp]] | None = None, load_hook: Callable[[UOp], str | None] | None = None):
    self.w, self.env, self.shared, self.varying, self.deps, self.load_hook = w, dict(env), shared, varying, deps, load_hook
    self.names: dict[UOp, str] = {}

  def expr(self, root: UOp) -> str:
    for u in toposort([root], stop=lambda x: x in self.env or x in self.names or self._is_shared(x)):
      if u not in self.names and u not in self.env and not self._is_shared(u): self._emit(u)
    return self.val(root)

  def _is_shared(self, u: UOp) -> bool:
    return self.shared is not None and self.deps is not None and not (self.deps[u] & self.varying)

  def val(self, u: UOp) -> str:
    if u in self.env: return self.env[u]
    if u.op is Ops.CONST: return c_const(u.arg, u.dtype)
    if self._is_shared(u): return self.shared.expr(u)  # type: ignore[union-attr]
    return self.names[u]

  def _emit(self, u: UOp) -> None:
    if u.op in (Ops.CONST, Ops.PARAM): return  # inlined where used
    if u.op is Ops.STORE:
      self.w(render_store(u.src[0], self.val(u.src[1]), self.val(u.src[2])))
      self.names[u] = ""
      return
    if u.op is Ops.LOAD:
      if self.load_hook is not None and (e := self.load_hook(u)) is not None: self.names[u] = e; return
      code = render_load(u.src[0], self.val(u.src[1]))
    elif u.op in (Ops.RANGE, Ops.DEFINE_ACC, Ops.ACCUMULATE, Ops.ENDRANGE):
      raise NotImplementedError(f"{u.op} inside a rendered cone")
    else: code = render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in self.w.wrapping)
    name = self.names[u] = self.w.fresh("v")
    self.w(f"const {REG_TYPES[u.dtype]} {name} = {code};")


def render_load(param: UOp, idx: str) -> str:
  p = f"p{param.arg[0]}"
  return f"__bfloat162float({p}[{idx}])" if param.dtype == dtypes.bfloat16 else f"{p}[{idx}]"


def render_store(param: UOp, idx: str, value: str) -> str:
  p = f"p{param.arg[0]}"
  return f"{p}[{idx}] = __float2bfloat16_rn({value});" if param.dtype == dtypes.bfloat16 else f"{p}[{idx}] = {value};"


# ------------------------------------------------------------------------------------------------
# plans: flat, block, split and row share the sequential walk; lanes, matmul and mma render cones

BLOCK = 256


class KernelSource:
  """Everything a plan produces: the body, the launch, and what the preamble must include."""
  def __init__(self) -> None:
    self.w = Writer()
    self.globals: list[str] = []  # file-scope declarations (__device__ scratch)
    self.grid: tuple[int, ...] = (1,)
    self.block = BLOCK
    self.shared_bytes = 0


def _acc_update(op: Ops, dt: DType, acc: str, v: str) -> str:
  if op is Ops.MAX: return f"{acc} = pg_max({acc}, {v});"
  if dt == dtypes.bool: return f"{acc} = {acc} || {v};"
  return f"{acc} = {render_alu(Ops.ADD, dt, [acc, v], dt, wrap=True)};"


def _functor(op: Ops) -> str: return "PgMax()" if op is Ops.MAX else "PgAdd()"


def row_split(program: list[UOp]) -> tuple[list[UOp], list[UOp]]:
  """(rows, columns): the global loops open at the first top-level reduction, and the global loops after it.

  The linearizer opens global loops lazily, outermost first, so a reduction that needs only the outer
  loops (a row's max or sum broadcast back over the row: softmax, layer_norm) comes before the inner
  loops open, and runs once per row. Without such a reduction every global loop is a row loop.
  """
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  opened, depth = 0, 0
  for u in program:
    if u.op is Ops.RANGE:
      if u.arg[2] == "global": opened += 1
      else: depth += 1
    elif u.op is Ops.ENDRANGE and u.src[0].arg[2] == "reduce": depth -= 1
    elif u.op is Ops.DEFINE_ACC and depth == 0: return glob[:opened], glob[opened:]
  return glob, []


class Sequential:
  """Renders the program in order for the flat, block, split, row and columns plans.

  The row loops (every global loop, or those before the first reduction: `row_split`) come from the
  thread index (flat: a thread per row) or the block index (block, split: a block per output; row: a
  block or a warp per row). The plan's *strided* loops, a top-level reduction's loops (block, split,
  row) and the column loops (row), are shared by the `group` threads of a row: thread t takes
  iterations t, t+group, ...; a strided reduction ends with a combine that gives every thread the
  result, so a later reduction or the columns can use it. In the row plan a strided loop whose
  innermost range is a multiple of 4 and which has a 16-byte-aligned contiguous access takes four
  neighbouring iterations per step (`lane` 0..3, the body rendered four times) with float4 loads and
  stores. Every other loop runs sequentially inside its thread. The columns plan has a thread per
  output (a group of one) whose top-level reduction loop is strided over the `split` blocks instead.
  """

  def __init__(self, program: list[UOp], ks: KernelSource, mode: str, split: int = 1, group: int = 0):
    self.program, self.ks, self.w, self.mode, self.split = program, ks, ks.w, mode, split
    self.names: dict[UOp, str] = {}
    self.end = {u.src[0]: i for i, u in enumerate(program) if u.op is Ops.ENDRANGE}  # RANGE -> index of its ENDRANGE
    self.rows, self.cols = row_split(program) if mode in ("flat", "row") else ([u for u in program if u.op is Ops.RANGE and
                                                                                   u.arg[2] == "global"], [])
    self.parallel: set[UOp] = set()    # accumulators of strided reductions, combined across the group at their LOAD
    self.loops = 0                     # loops open around the current instruction (strided or sequential)
    self.strided = 0                   # strided loops open: stores inside them are each thread's own
    self.lane: int | None = None       # which of four vector lanes is being rendered
    self.inner: UOp | None = None      # the range the lanes step along
    self.vectors: dict[UOp, str] = {}  # a vector load's register, issued by lane 0
    self.pending: dict[UOp, tuple[str, list[str]]] = {}  # a vector store: lane 0's index, the lanes' values so far
    self.tid = "threadIdx.x"           # the thread's place in its group
    self.group = self._launch(group)

  def _launch(self, group: int) -> int:
    """Grid, block and the row index; returns how many threads share a row's strided loops."""
    w, ks = self.w, self.ks
    total = max(prod(r.arg[1] for r in self.rows), 1)
    if self.mode == "flat":
      ks.block = min(BLOCK, max(32, 1 << (total - 1).bit_length()))
      ks.grid = (ceildiv(total, ks.block),)
      it = "long long" if total >= 2**31 else "int"
      w(f"const {it} gid = ({it})blockIdx.x * {ks.block} + threadIdx.x;")
      w(f"if (gid >= {total}) return;")
      index_of(self.rows, "gid", w, self.names)
      return 1
    if self.mode == "row" and group == 32:
      per = ks.block // 32  # a warp per row, several rows per block
      ks.grid = (ceildiv(total, per),)
      w(f"const int row = blockIdx.x * {per} + (threadIdx.x >> 5), lane = threadIdx.x & 31;")
      if total % per: w(f"if (row >= {total}) return;  // a whole warp leaves: its shuffles need no absent lane")
      self.tid = "lane"
      index_of(self.rows, "row", w, self.names)
      return 32
    if self.mode == "columns":
      ks.block = next(b for b in (BLOCK, 128, 64, 32) if total % b == 0)  # whole blocks: every thread takes a ticket
      ks.grid = (total // ks.block * self.split,)
      w(f"const int part = blockIdx.x % {self.split}, gid = blockIdx.x / {self.split} * {ks.block} + threadIdx.x;")
      index_of(self.rows, "gid", w, self.names)
      return 1
    if self.mode == "row": ks.block = group
    ks.grid = (total * self.split,)
    w(f"const int out = blockIdx.x{f' / {self.split}' if self.split > 1 else ''};")
    if self.split > 1: w(f"const int part = blockIdx.x % {self.split};")
    index_of(self.rows, "out", w, self.names)
    return ks.block

  def render(self) -> None: self.walk(0, len(self.program))

  def val(self, u: UOp) -> str: return c_const(u.arg, u.dtype) if u.op is Ops.CONST else self.names[u]

  def walk(self, lo: int, hi: int) -> None:
    """Render program[lo:hi]; a loop is rendered with its body, up to its ENDRANGE."""
    w, names, i = self.w, self.names, lo
    while i < hi:
      u = self.program[i]
      i += 1
      if u.op in (Ops.PARAM, Ops.CONST, Ops.ENDRANGE): continue  # (a rendered loop's own ENDRANGE is past its body)
      if u.op is Ops.RANGE:
        if u in names: continue  # a row loop, or bound by the strided loop around it
        if u.arg[2] == "global" and self.mode == "row": i = self.strided_loop(self.cols, i, self.end[u])
        else: i = self.sequential_loop(u, i, self.end[u])
      elif u.op is Ops.DEFINE_ACC:
        acc = names[u] = w.fresh("acc")
        w(f"{REG_TYPES[u.dtype]} {acc} = {c_const(u.arg[0], u.dtype)};")
        if self.mode != "flat" and self.loops == 0:
          self.parallel.add(u)
          # several accumulators over the same loops (unrolled copies) are declared together; the last opens the loop
          if self.program[i] is u.src[0]: i = self.strided_loop(list(u.src), i + len(u.src), self.end[u.src[0]])
      elif u.op is Ops.ACCUMULATE:
        w(_acc_update(u.arg, u.src[0].dtype, names[u.src[0]], self.val(u.src[1])))
      elif u.op is Ops.LOAD and u.src[0].op is Ops.DEFINE_ACC:
        acc = u.src[0]
        if acc in self.parallel: self.combine(acc)
        names[u] = names[acc]
      elif u.op is Ops.STORE: self.store(u)
      elif u.op is Ops.LOAD and (vec := self.vector_load(u)) is not None: names[u] = vec
      else:
        code = render_load(u.src[0], self.val(u.src[1])) if u.op is Ops.LOAD else \
            render_alu(u.op, u.dtype, [self.val(s) for s in u.src], u.src[0].dtype, u in w.wrapping)
        n = names[u] = w.fresh("v")
        w(f"const {REG_TYPES[u.dtype]} {n} = {code};")

  def sequential_loop(self, r: UOp, lo: int, hi: int) -> int:
    """`for` over one range in every thread; returns where the walk goes on (past the ENDRANGE at `hi`)."""
    n = self.names[r] = self.w.fresh("r")
    self.w.open(f"for ({REG_TYPES[r.dtype]} {n} = 0; {n} < {r.arg[1]}; {n}++)")
    self.loops += 1
    self.walk(lo, hi)
    self.loops -= 1
    self.w.close()
    return hi + 1

  def strided_loop(self, ranges: list[UOp], lo: int, hi: int) -> int:
    """One loop over all of `ranges` (outermost first), its iterations dealt out to the group's threads."""
    w, size = self.w, prod(r.arg[1] for r in ranges)
    width = 4 if self.mode == "row" and self._vectorizable(ranges, lo, hi) else 1
    it, j = "long long" if size >= 2**31 else "int", w.fresh("j")
    if self.mode == "columns": start, step = "part", self.split
    elif self.split > 1: start, step = f"part * {self.ks.block} + {self.tid}", self.ks.block * self.split
    else: start, step = self.tid, self.group
    w(f"#pragma unroll {2 if width > 1 else 4}")  # a four-lane body is already four iterations
    w.open(f"for ({it} {j} = {start}; {j} < {size // width}; {j} += {step})")
    self.loops += 1
    self.strided += 1
    if width == 1:
      index_of(ranges, j, w, self.names)
      self.walk(lo, hi)
    else:
      inner = self.inner = ranges[-1]
      quad = UOp(Ops.RANGE, inner.dtype, (), (-1, inner.arg[1] // 4, "global"))  # stand-in: which group of four
      env: dict[UOp, str] = {}
      index_of(ranges[:-1] + [quad], j, w, env)
      base = env.pop(quad)
      self.names.update(env)
      for q in range(4):
        self.lane, self.names[inner] = q, f"(({REG_TYPES[inner.dtype]})({base} * 4 + {q}))"
        self.walk(lo, hi)
      self.lane = self.inner = None
      self.vectors.clear()
    self.loops -= 1
    self.strided -= 1
    w.close()
    return hi + 1

  def _vectorizable(self, ranges: list[UOp], lo: int, hi: int) -> bool:
    """Four lanes when the body has no loop of its own and some access moves by one, 16-byte aligned, along the innermost range."""
    body = self.program[lo:hi]
    if ranges[-1].arg[1] % 4 or any(u.op is Ops.DEFINE_ACC or (u.op is Ops.RANGE and u not in ranges) for u in body): return False
    return any(self._vector_access(u, ranges[-1]) for u in body if u.op in (Ops.LOAD, Ops.STORE))

  @staticmethod
  def _vector_access(u: UOp, inner: UOp) -> bool:
    return u.src[0].op is Ops.PARAM and u.src[0].dtype in VEC4_TYPES and contiguous_in(u.src[1], inner, 4)

  def vector_load(self, u: UOp) -> str | None:
    """Lane `lane` of a 16-byte load of four neighbours, issued once by lane 0; None when `u` is not such a load."""
    if self.lane is None or self.inner is None or not self._vector_access(u, self.inner): return None
    if self.lane == 0:
      vec = self.vectors[u] = self.w.fresh("vec")
      vt = VEC4_TYPES[u.src[0].dtype]
      self.w(f"const {vt} {vec} = *reinterpret_cast<const {vt}*>(p{u.src[0].arg[0]} + {self.val(u.src[1])});")
    return f"{self.vectors[u]}.{'xyzw'[self.lane]}"

  def store(self, u: UOp) -> None:
    """A store: by one thread of the group outside strided loops (they all hold the value), one float4 for four lanes."""
    param, idx, value = u.src
    if self.lane is not None and self.inner is not None and self._vector_access(u, self.inner):
      if self.lane == 0: self.pending[u] = (self.val(idx), [])
      self.pending[u][1].append(self.val(value))
      if self.lane == 3:
        at, vals = self.pending.pop(u)
        vt = VEC4_TYPES[param.dtype]
        self.w(f"*reinterpret_cast<{vt}*>(p{param.arg[0]} + {at}) = make_{vt}({', '.join(vals)});")
      return
    line = render_store(param, self.val(idx), self.val(value))
    self.w(f"if ({self.tid} == 0) {line}" if self.mode not in ("flat", "columns") and not self.strided else line)

  def combine(self, acc: UOp) -> None:
    """After a strided reduction loop: combine the group's partials (and, when split, the blocks')."""
    if self.group == 32 and self.mode == "row":
      a = self.names[acc]
      self.w(f"{a} = pg_warp_reduce({a}, {_functor(acc.arg[1])});")
    elif self.mode == "columns": self.combine_columns(acc)
    else: _block_combine(acc, self.names, self.ks, self.split)

  def combine_columns(self, acc: UOp) -> None:
    """Each thread's partial to scratch; the last of the `split` blocks of a group of outputs adds them in block order."""
    w, ks, a, t, S = self.w, self.ks, self.names[acc], REG_TYPES[acc.dtype], self.split
    total, groups = ks.grid[0] // S * ks.block, ks.grid[0] // S
    part, count, last = w.fresh("pg_part"), w.fresh("pg_count"), w.fresh("last")
    ks.globals += [f"__device__ {t} {part}[{S * total}];", f"__device__ unsigned int {count}[{groups}];"]
    w(f"{part}[part * {total} + gid] = {a};")
    w("__threadfence();  // publish the partials before taking a ticket")
    w("__syncthreads();")
    w(f"__shared__ bool {last};")
    w(f"if (threadIdx.x == 0) {last} = atomicAdd(&{count}[blockIdx.x / {S}], 1u) == {S - 1};")
    w("__syncthreads();")
    w(f"if (!{last}) return;")
    w("__threadfence();")
    w(f"if (threadIdx.x == 0) {count}[blockIdx.x / {S}] = 0;  // ready for the next launch")
    w(f"{a} = {c_const(acc.arg[0], acc.dtype)};")
    w("#pragma unroll 8")
    w(f"for (int q = 0; q < {S}; q++) {_acc_update(acc.arg[1], acc.dtype, a, f'__ldcg(&{part}[q * {total} + gid])')}")


def _block_combine(acc: UOp, names: dict[UOp, str], ks: KernelSource, split: int) -> None:
  """After a block-parallel reduction loop: combine the threads' partials (and, when split, the blocks')."""
  w, a, t, op = ks.w, names[acc], REG_TYPES[acc.dtype], acc.arg[1]
  smem = w.fresh("red")
  w(f"__shared__ {t} {smem}[{ks.block // 32}];")
  w(f"{a} = pg_block_reduce({a}, {_functor(op)}, {smem});")
  names[acc] = a
  if split == 1: return
  total = ks.grid[0]
  part, count = w.fresh("pg_part"), w.fresh("pg_count")
  ks.globals += [f"__device__ {t} {part}[{total}];", f"__device__ unsigned int {count}[{total // split}];"]
  last = w.fresh("last")
  w(f"__shared__ bool {last};")
  w.open("if (threadIdx.x == 0)")
  w(f"{part}[blockIdx.x] = {a};")
  w("__threadfence();  // publish the partial before taking a ticket")
  w(f"{last} = atomicAdd(&{count}[out], 1u) == {split - 1};")
  w.close()
  w("__syncthreads();")
  w(f"if (!{last}) return;")
  w("__threadfence();")
  w(f"{a} = {c_const(acc.arg[0], acc.dtype)};")
  w(f"for (int q = threadIdx.x; q < {split}; q += {ks.block}) {_acc_update(op, acc.dtype, a, f'__ldcg(&{part}[out * {split} + q])')}")
  w(f"{a} = pg_block_reduce({a}, {_functor(op)}, {smem});")
  w(f"if (threadIdx.x == 0) {count}[out] = 0;  // ready for the next launch")


def render_lanes(program: list[UOp], ks: KernelSource, deps: dict[UOp, frozenset[UOp]]) -> None:
  """Elementwise, four outputs of the innermost loop per thread, 16-byte loads/stores where the index allows."""
  w = ks.w
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  inner = glob[-1]
  total = prod(r.arg[1] for r in glob) // 4
  it = "long long" if total * 4 >= 2**31 else "int"
  ks.grid = (ceildiv(total, BLOCK),)
  w(f"const {it} gid = ({it})blockIdx.x * {BLOCK} + threadIdx.x;")
  w(f"if (gid >= {total}) return;")
  env: dict[UOp, str] = {}
  quad = UOp(Ops.RANGE, inner.dtype, (), (-1, inner.arg[1] // 4, "global"))  # stand-in: which group of four
  index_of(glob[:-1] + [quad], "gid", w, env)
  base = env.pop(quad)
  shared = Cone(w, env)
  vectors: dict[UOp, str] = {}
  lanes: list[Cone] = []

  def vector_load(u: UOp, j: int) -> str | None:
    """Lane j of a 16-byte load of four neighbours, issued once (lane 0 renders first, so its index is known)."""
    if u.src[0].dtype not in VEC4_TYPES or not contiguous_in(u.src[1], inner, 4): return None
    if u not in vectors:
      vectors[u] = w.fresh("vec")
      idx = lanes[0].expr(u.src[1])
      vt = VEC4_TYPES[u.src[0].dtype]
      w(f"const {vt} {vectors[u]} = *reinterpret_cast<const {vt}*>(p{u.src[0].arg[0]} + {idx});")
    return f"{vectors[u]}.{'xyzw'[j]}"

  for j in range(4):
    lanes.append(Cone(w, {**env, inner: f"({REG_TYPES[inner.dtype]})({base} * 4 + {j})"}, shared, frozenset([inner]), deps,
                      lambda u, j=j: vector_load(u, j)))
  for store in (u for u in program if u.op is Ops.STORE):
    param, idx, value = store.src
    vals = [lane.expr(value) for lane in lanes]
    if param.dtype in VEC4_TYPES and contiguous_in(idx, inner, 4):
      vt = VEC4_TYPES[param.dtype]
      w(f"*reinterpret_cast<{vt}*>(p{param.arg[0]} + {lanes[0].expr(idx)}) = make_{vt}({', '.join(vals)});")
    else:
      for lane, v in zip(lanes, vals): w(render_store(param, lane.expr(idx), v))


# ---- matrix products

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
    run = "s" if _runs_along(operand, side, k) else "k"
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


def _runs_along(operand: UOp, side: list[UOp], k: UOp) -> bool:
  """Whether the operand's memory is contiguous along its output loop rather than along k."""
  loads = [u for u in toposort([operand]) if u.op is Ops.LOAD]
  if any(contiguous_in(u.src[1], k, 1) for u in loads): return False
  return any(contiguous_in(u.src[1], side[-1], 1) for u in loads)


def _product(program: list[UOp], mm: Matmul, a: str, b: str) -> str:
  """The accumulated term for operands a and b: the MUL and any casts between it and the accumulator."""
  code = render_alu(Ops.MUL, mm.mul.dtype, [a, b], mm.mul.dtype)
  chain, value = [], next(u.src[1] for u in program if u.op is Ops.ACCUMULATE)
  while value is not mm.mul: chain.append(value); value = value.src[0]
  for c in reversed(chain): code = render_cast(c.dtype, c.src[0].dtype, code)
  return code


def render_matmul(program: list[UOp], mm: Matmul, ks: KernelSource, split: int = 1) -> None:
  """SIMT: 128x128 output tiles, k-steps of 8 through double-buffered shared memory, 8x8 outputs per thread."""
  w = ks.w
  at, bt, ct = REG_TYPES[mm.x.dtype], REG_TYPES[mm.y.dtype], REG_TYPES[mm.acc.dtype]
  w(f"__shared__ {at} As[2][8][132];")
  w(f"__shared__ {bt} Bs[2][8][132];")
  w("const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;")
  mw = MatmulWriter(program, mm, ks, (128, 128, 8), split)
  la, sa = mw.tile_loader(mm.x, mm.m, "m0", mw.M, 128, "ra", at, "s")
  lb, sb = mw.tile_loader(mm.y, mm.n, "n0", mw.N, 128, "rb", bt, "s")
  w(f"{ct} acc[8][8];")
  w(f"for (int i = 0; i < 8; i++) for (int j = 0; j < 8; j++) acc[i][j] = {c_const(0, mm.acc.dtype)};")
  w(f"{la}(kbase); {lb}(kbase);")
  w(sa("As[0][@K][@S]") + " " + sb("Bs[0][@K][@S]"))
  w("__syncthreads();")
  mw.k_loop([la, lb])
  w("#pragma unroll")
  w.open("for (int kk = 0; kk < 8; kk++)")
  # rows ty*4.. and 64+ty*4..: each quarter-warp reads 16 consecutive words, so the shared loads do not conflict
  w(f"{at} a[8]; {bt} b[8];")
  w("#pragma unroll")
  w("for (int i = 0; i < 4; i++) { a[i] = As[cur][kk][ty * 4 + i]; a[i + 4] = As[cur][kk][64 + ty * 4 + i]; }")
  w("#pragma unroll")
  w("for (int j = 0; j < 4; j++) { b[j] = Bs[cur][kk][tx * 4 + j]; b[j + 4] = Bs[cur][kk][64 + tx * 4 + j]; }")
  w("#pragma unroll")
  w(f"for (int i = 0; i < 8; i++) for (int j = 0; j < 8; j++) acc[i][j] = acc[i][j] + {_product(program, mm, 'a[i]', 'b[j]')};")
  w.close()
  w(f"if (kt + 1 < {mw.steps}) {{ {sa('As[cur ^ 1][@K][@S]')} {sb('Bs[cur ^ 1][@K][@S]')} }}")
  w("__syncthreads();")
  w.close()
  # this thread's outputs: rows ty*4.. and 64+ty*4.., columns tx*4.. and 64+tx*4.. of the tile
  each = "_Pragma(\"unroll\") for (int i = 0; i < 8; i++) _Pragma(\"unroll\") for (int j = 0; j < 8; j++)"
  local = "const int lm = i < 4 ? ty * 4 + i : 60 + ty * 4 + i, ln = j < 4 ? tx * 4 + j : 60 + tx * 4 + j;"
  value = "acc[i][j]"
  if split > 1:
    mine, parts = mw.split_scratch()
    w(f"{each} {{ {local} {mine}[lm * 128 + ln] = acc[i][j]; }}")
    mw.split_wait()
  w.open(each)
  w(local)
  w("const int gm = m0 + lm, gn = n0 + ln;")
  if split > 1: value = mw.split_sum(parts, "lm * 128 + ln")
  mw.epilogue(value)
  w.close()


MMA_TILE = (128, 128, 32)
_KP, _NP, _CP = 32 + 8, 128 + 8, 128 + 4  # padded rows: 16-byte aligned, and ldmatrix's eight rows hit different banks
MMA_SHARED = max(2 * 128 * _KP * 2 + 2 * 32 * _NP * 2, 128 * _CP * 4)


def render_mma(program: list[UOp], mm: Matmul, ks: KernelSource, split: int = 1) -> None:
  """Tensor cores through `mma.sync.m16n8k16` and `ldmatrix` (inline PTX, so no header is needed): 128x128 tiles, k-steps of 32.

  As[m][k] is k-contiguous and Bs[k][n] n-contiguous, so row-major operands are copied as whole
  16-byte vectors; `ldmatrix` (`.trans` for B) turns eight 16-byte rows into fragment registers.
  Eight warps each own 64x32 outputs: 4x4 fragments of 16x8, four floats per thread each.
  """
  w = ks.w
  BM, BN, BK = MMA_TILE
  et = "__half" if mm.x.dtype == dtypes.float16 else "__nv_bfloat16"
  ptx_t = "f16" if mm.x.dtype == dtypes.float16 else "bf16"
  ks.shared_bytes = MMA_SHARED
  w("extern __shared__ __align__(128) unsigned char smem[];")
  w(f"{et}* As = reinterpret_cast<{et}*>(smem);")
  w(f"{et}* Bs = As + {2 * BM * _KP};")
  w("float* Cs = reinterpret_cast<float*>(smem);  // reused for the epilogue once the tiles are done")
  w("const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4, g = lane / 4, t = lane % 4;")
  w("const int lm = lane >> 3, lr = lane & 7;  // which 8x8 matrix of an ldmatrix.x4 this lane addresses, and its row")
  mw = MatmulWriter(program, mm, ks, MMA_TILE, split)
  la, sa = mw.tile_loader(mm.x, mm.m, "m0", mw.M, BM, "ra", et, "k")
  lb, sb = mw.tile_loader(mm.y, mm.n, "n0", mw.N, BN, "rb", et, "s")
  a_at, b_at = f"As[buf * {BM * _KP} + (@S) * {_KP} + @K]", f"Bs[buf * {BK * _NP} + (@K) * {_NP} + @S]"
  w("float c[4][4][4];")
  w("for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) for (int q = 0; q < 4; q++) c[i][j][q] = 0.0f;")
  w(f"{la}(kbase); {lb}(kbase);")
  w("{ const int buf = 0; " + sa(a_at) + " " + sb(b_at) + " }")
  w("__syncthreads();")
  mw.k_loop([la, lb])
  w("#pragma unroll")
  w.open(f"for (int kk = 0; kk < {BK}; kk += 16)")
  w("unsigned a[4][4], b[4][2];")
  w("#pragma unroll")
  w.open("for (int i = 0; i < 4; i++)")
  w(f"const unsigned addr = (unsigned)__cvta_generic_to_shared(As + cur * {BM * _KP} + (wm * 64 + i * 16 + (lm & 1) * 8 + lr) * {_KP} + kk + (lm >> 1) * 8);")
  w('asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];" '
    ': "=r"(a[i][0]), "=r"(a[i][1]), "=r"(a[i][2]), "=r"(a[i][3]) : "r"(addr));')
  w.close()
  w("#pragma unroll")
  w.open("for (int jj = 0; jj < 2; jj++)")
  w(f"const unsigned addr = (unsigned)__cvta_generic_to_shared(Bs + cur * {BK * _NP} + (kk + (lm & 1) * 8 + lr) * {_NP} + wn * 32 + (jj * 2 + (lm >> 1)) * 8);")
  w('asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];" '
    ': "=r"(b[jj * 2][0]), "=r"(b[jj * 2][1]), "=r"(b[jj * 2 + 1][0]), "=r"(b[jj * 2 + 1][1]) : "r"(addr));')
  w.close()
  w("#pragma unroll")
  w(f"for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.{ptx_t}.{ptx_t}.f32 "
    "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\" : \"+f\"(c[i][j][0]), \"+f\"(c[i][j][1]), \"+f\"(c[i][j][2]), "
    "\"+f\"(c[i][j][3]) : \"r\"(a[i][0]), \"r\"(a[i][1]), \"r\"(a[i][2]), \"r\"(a[i][3]), \"r\"(b[j][0]), \"r\"(b[j][1]));")
  w.close()
  w(f"if (kt + 1 < {mw.steps}) {{ const int buf = cur ^ 1; {sa(a_at)} {sb(b_at)} }}")
  w("__syncthreads();")
  w.close()
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


# ------------------------------------------------------------------------------------------------
# choosing a plan

def _top_level(program: list[UOp]) -> list[UOp]:
  """The top-level reductions: accumulators defined outside every reduction loop."""
  depth, top = 0, []
  for u in program:
    if u.op is Ops.RANGE and u.arg[2] == "reduce": depth += 1
    elif u.op is Ops.ENDRANGE and u.src[0].arg[2] == "reduce": depth -= 1
    elif u.op is Ops.DEFINE_ACC and depth == 0: top.append(u)
  return top


SPLIT_K_CHUNK = 512            # the least k a split-K block takes: its partial tile costs a store and a load per output
SPLIT_K_SCRATCH = 64 * 2**20   # bytes of partial tiles one split-K kernel may keep


def _split_k(mm: Matmul, target: CUDATarget) -> int:
  """How many chunks of k the tiles of a matmul are split into: enough blocks for about two per SM when the
  output alone gives fewer tiles than SMs (a weight gradient, 384x1152 summed over 16384 tokens, has 27)."""
  B, M, N, K = mm.sizes
  tiles = B * ceildiv(M, 128) * ceildiv(N, 128)
  if tiles >= target.sm_count or mm.acc.dtype not in (dtypes.float32, dtypes.float64): return 1
  scratch_cap = SPLIT_K_SCRATCH // (tiles * 128 * 128 * mm.acc.dtype.itemsize)
  return max(1, min(ceildiv(2 * target.sm_count, tiles), K // SPLIT_K_CHUNK, scratch_cap))


def choose_plan(program: list[UOp], target: CUDATarget, deps: dict[UOp, frozenset[UOp]]) -> tuple[str, Any]:
  """(plan name, plan argument). NOOPT=1 always gives ("flat", None)."""
  if NOOPT: return "flat", None
  glob = [u for u in program if u.op is Ops.RANGE and u.arg[2] == "global"]
  outputs = prod(r.arg[1] for r in glob)
  accs = [u for u in program if u.op is Ops.DEFINE_ACC]
  if not accs:
    # four lanes when the innermost loop is a multiple of 4 and at least one access is contiguous in it
    if glob and glob[-1].arg[1] % 4 == 0 and outputs >= 4 * BLOCK and \
        any(u.op in (Ops.LOAD, Ops.STORE) and u.src[0].op is Ops.PARAM and contiguous_in(u.src[1], glob[-1], 4) for u in program):
      return "lanes", None
    return "flat", None
  rows, cols = row_split(program)
  if cols:
    # a reduction per row, broadcast back over the row's columns: a block or a warp per row
    top = _top_level(program)
    length = max([prod(r.arg[1] for r in cols)] + [prod(r.arg[1] for r in a.src) for a in top])
    if length < 32: return "flat", None  # a thread per row: a warp would idle most of its lanes
    if length <= 1024: return "row", 32
    # about eight elements per thread; whole 1024-thread blocks when there are too few rows to fill the GPU
    threads = 1024 if prod(r.arg[1] for r in rows) < 2 * target.sm_count else 1 << (ceildiv(length, 8) - 1).bit_length()
    return "row", min(1024, max(128, threads))
  if (mm := find_matmul(program, deps)) is not None:
    B, M, N, K = mm.sizes
    if M >= 64 and N >= 64 and K >= 16 and B < 65536:
      halfs = mm.x.dtype == mm.y.dtype and mm.x.dtype in (dtypes.float16, dtypes.bfloat16) and mm.acc.dtype == dtypes.float32
      if halfs and target.cc >= 80 and MMA_SHARED <= target.max_shared: return "mma", (mm, _split_k(mm, target))
      return "matmul", (mm, _split_k(mm, target))
  top = _top_level(program)
  rsize = max(prod(r.arg[1] for r in a.src) for a in top)
  work = prod(u.arg[1] for u in program if u.op is Ops.RANGE and u.arg[2] == "reduce")  # nested reductions included
  inner = {a.src[-1] for a in top}
  loads = [u for u in program if u.op is Ops.LOAD and u.src[0].op is Ops.PARAM and deps[u] & inner]
  along = [any(contiguous_in(u.src[1], r, 1) for r in inner) for u in loads]
  if rsize < 32: return "flat", None
  splittable = len(top) == 1 and top[0].dtype in (dtypes.float32, dtypes.float64, dtypes.int32, dtypes.int64, dtypes.uint32)
  if not all(along) and splittable and outputs % 32 == 0 and outputs < target.sm_count * BLOCK and rsize >= 2048:
    # blocks enough for about 2048 threads per SM, each thread at least 64 rows, at most 256 partials per output to combine
    split = min(ceildiv(target.sm_count * 2048, outputs), rsize // 64, 256)
    if split > 1: return "columns", split
  if not all(along) and outputs >= 2048:
    # a thread per output reads coalesced across the threads where the reduction runs over a leading axis;
    # but with a few thousand rows it leaves most of the GPU idle, and a warp per row coalesces whatever runs along the row
    if any(along) and rsize <= 4096 and outputs < 2 * target.sm_count * BLOCK: return "row", 32
    return "flat", None
  if splittable and outputs <= target.sm_count and work >= 1 << 16:
    # about 256 steps of work per thread, at least one iteration of the split loop each
    split = min(ceildiv(work, BLOCK * 256), ceildiv(rsize, BLOCK), max(1, 4 * target.sm_count // max(outputs, 1)), 1024)
    if split > 1: return "split", split
  # short contiguous rows, many of them: a warp per output instead of a block (no block-wide combine, eight rows per block)
  if all(along) and rsize <= 1024 and outputs >= 4 * target.sm_count: return "row", 32
  return "block", None


# ------------------------------------------------------------------------------------------------
# entry points

def render_program(base_name: str, program: list[UOp], target: CUDATarget) -> tuple[str, str, LaunchDims, dict]:
  """(kernel name, CUDA C source, launch dims, meta) for a linearized program."""
  deps = range_deps(program)
  plan, arg = choose_plan(program, target, deps)
  ks = KernelSource()
  ks.w.wrapping = data_values(program)
  if plan == "lanes": render_lanes(program, ks, deps)
  elif plan == "matmul": render_matmul(program, arg[0], ks, arg[1])
  elif plan == "mma": render_mma(program, arg[0], ks, arg[1])
  else: Sequential(program, ks, plan, arg if plan in ("split", "columns") else 1, arg if plan == "row" else 0).render()
  params = [u for u in program if u.op is Ops.PARAM]
  written = {u.src[0] for u in program if u.op is Ops.STORE}
  checked = any(u.op is Ops.CHECK for u in program)
  args = ", ".join([f"{'' if p in written else 'const '}{MEM_TYPES[p.dtype]}* __restrict__ p{p.arg[0]}" for p in params] +
                   ["unsigned long long* __restrict__ pg_err"] * checked)
  uses_half = any(u.dtype in (dtypes.float16, dtypes.bfloat16) for u in program)
  head = [PRELUDE + (HALF_PRELUDE if uses_half else "")]
  body = "\n".join(ks.w.lines)
  digest = hashlib.sha256((plan + body + "".join(ks.globals) + args).encode()).hexdigest()[:8]
  name = f"{base_name}_{digest}"
  src = "\n".join(head + ks.globals + [f'extern "C" __global__ void __launch_bounds__({ks.block}) {name}({args}) {{', body, "}", ""])
  dims = LaunchDims(ks.grid, (ks.block,), ks.shared_bytes)
  return name, src, dims, {"n_params": len(params) + checked, "plan": plan}


def render_cuda(base_name: str, program: list[UOp], target: CUDATarget) -> tuple[str, str, list[UOp], LaunchDims, dict]:
  """The hook codegen/kernel.py calls: `target` describes the GPU (arch and limits) as plain data."""
  name, src, dims, meta = render_program(base_name, program, target)
  return name, src, program, dims, meta


def render_for_arch(ast: UOp, arch: str = "sm_90", sm_count: int = 132, max_shared: int = 227 * 1024) -> tuple[str, str, LaunchDims, dict]:
  """Lower, linearize and render a scheduled kernel for `arch` with no GPU: for compile checks and reading the source."""
  from picograd.codegen.lower import lower_kernel
  from picograd.codegen.linearize import linearize, kernel_name
  program = linearize(lower_kernel(ast))
  return render_program(kernel_name(program), program, CUDATarget(arch, sm_count, max_shared))


__all__ = ["CUDATarget", "target_of", "render_cuda", "render_for_arch", "render_program", "choose_plan", "find_matmul"]
