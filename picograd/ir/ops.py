"""The IR: `Ops`, the hash-consed `UOp`, patterns (`UPat`), `PatternMatcher`, `graph_rewrite` and the graph printers.

One node type serves every stage. At the tensor level a UOp has a shape (computed when it is
built, so deep graphs never recurse); inside a kernel the same class describes loops, loads and
scalar arithmetic. Building the same node twice returns the same object, so identity is
equality and rewrites can be memoized per node.
"""
from __future__ import annotations
import math, weakref
import numpy as np
from enum import Enum, auto
from typing import TYPE_CHECKING, Any, Callable, Iterable
from picograd.dtype import DType, dtypes, round_bf16
from picograd.helpers import prod


class Ops(Enum):
  # leaves
  BUFFER = auto(); CONST = auto(); IOTA = auto()
  # unary
  EXP2 = auto(); LOG2 = auto(); SIN = auto(); SQRT = auto(); RECIPROCAL = auto(); NEG = auto(); CAST = auto(); BITCAST = auto()
  # binary
  ADD = auto(); MUL = auto(); MAX = auto(); CMPLT = auto(); CMPNE = auto(); IDIV = auto(); MOD = auto()
  AND = auto(); OR = auto(); XOR = auto(); SHL = auto(); SHR = auto()
  # ternary
  WHERE = auto()
  # a runtime check: CHECK(value, ok) is `value`, and where `ok` is false the kernel raises the error named by
  # arg = (exception name, message) after it runs. In a lowered kernel it is CHECK(value, bad, bit): `bit` is set
  # in the kernel's error word where `bad` holds (see codegen/lower.py)
  CHECK = auto()
  # reduction over axes: arg = (Ops.ADD | Ops.MAX, axes)
  REDUCE = auto()
  # movement: index remaps, never copies
  RESHAPE = auto(); PERMUTE = auto(); EXPAND = auto(); PAD = auto(); SHRINK = auto(); FLIP = auto()
  # boundaries and effects
  CONTIGUOUS = auto(); DETACH = auto(); COPY = auto(); ASSIGN = auto()
  # one output of a collective over several devices: arg = (kind, reduce op, devices, index, root), the value on
  # devices[index]; src holds one input per device (broadcast: only the root's). kind is "allreduce", "allgather"
  # (flat inputs, concatenated), "reducescatter" (flat inputs, output = this device's 1/n of the sum) or "broadcast"
  COLLECTIVE = auto()
  # AFTER(x, dep) is x, read only once dep is computed (an ordering edge: the recomputation of a checkpoint waits for its
  # gradient). CHECKPOINT(value, *inputs, *other sources) is value; its gradient recomputes value from the first arg inputs
  AFTER = auto(); CHECKPOINT = auto()
  # kernel level: a kernel is SINK(STORE(PARAM, value)); lowering adds loops, loads and accumulators
  SINK = auto(); PARAM = auto(); STORE = auto(); LOAD = auto(); RANGE = auto(); ENDRANGE = auto()
  DEFINE_ACC = auto(); ACCUMULATE = auto()
  # online softmax (codegen/online.py): RUNNING_MAX(x, loop) is, inside `loop`, the max of x over the iterations before
  # this one (-inf at the first); RESCALED(term, scale, loop) sums `term` over `loop`, multiplying the sum so far by
  # `scale` before each step (ACCUMULATE(acc, term, scale, arg=Ops.RESCALED) once linearized)
  RUNNING_MAX = auto(); RESCALED = auto()
  # a reduction's loop RANGE(count, split) runs `count` iterations as two loops (codegen/linearize.py), those before `split`
  # and the rest, adding into the same accumulators; FIRST_PART(loop) is true in the first: each loop's body has it folded
  # (the attention plans' key tiles wholly before the causal diagonal skip the mask the tiles on it need)
  FIRST_PART = auto()
  # GPU kernel level (the mapping passes of codegen/cuda/mapping.py introduce them; see its docstring):
  # SPECIAL(arg=("block"|"thread", n)) is blockIdx.x / threadIdx.x in [0, n); GUARD(ok), a SINK source: threads where
  # `ok` is false leave; DEFINE_LOCAL(arg=(slot, n)) an array of n values in shared memory (arg (slot, n, "reuse"):
  # it may reuse the block's other shared memory, which is no longer read once it is used); GROUP_REDUCE(partial, [local],
  # arg=(op, width)): the partials of `width` neighbouring threads combined, every one of them gets the result;
  # VECTORIZE(*lanes) and GEP(vector, arg=lane) build and take apart short vectors (a LOAD with arg=4 loads four lanes).
  # Cross-block work: DEFINE_GLOBAL(arg=(slot, n)) scratch in device memory that outlives the launch; BARRIER(*after,
  # arg="block"|"device") a block barrier or a device-wide memory fence; ATOMIC_ADD(buf, index, value, gate, *after) the
  # old value. Effects are ordered by sources: a LOAD/STORE/GUARD/BARRIER may take extra sources it must come after.
  # Tensor cores: FRAGMENT(local, base, *after, arg=(role "a"|"b"|"b2", kind "f16"|"bf16"|"tf32", ld, k_rows)) is this lane's
  # part of a warp's operand tile in shared memory (A: 16 rows of m x k16 (k8 for tf32); B: k16 (k8) x 8 columns of n; B2:
  # two such, 16 columns) whose first element is at `base`, rows `ld` apart, k along the rows when k_rows; MMA(a, b,
  # arg=(kind, half)) is this lane's 4 floats of the 16x8 product of the warp's fragments (PTX mma.sync's layout; `half`
  # picks the 8 columns of a B2), read by GEPs (an ACCUMULATE of them is the MMA's accumulate form). The CUDA flash plan
  # (codegen/cuda/flash.py) adds: FRAGMENT(8 float values, arg=("pack", kind, 0, False)), an A fragment packed from this
  # lane's registers (an MMA's C layout of two n8 tiles is the A layout of one k16); MMA(a, b, MMA before it), a chain
  # adding into the same accumulators (a RESCALED ACCUMULATE of it rescales them first); RANGE(bound) whose trip count is
  # the value `bound` (at most arg[1]).
  # ASYNC_COPY(local, index, param, param index, gate, *after, arg=bytes) copies `bytes` from memory into shared memory
  # without waiting (zeros where gate is false); BARRIER(arg="commit") closes a group of copies and BARRIER(arg=("wait",
  # n)) waits until at most n groups are in flight. sm_90 warpgroups: a FRAGMENT of role "desc" is the descriptor of a
  # warpgroup's 128-byte swizzled operand tile at `base` (codegen/cuda/tiling.py:Layout, swizzled); WGMMA(desc a,
  # desc b, [WGMMA before it], arg=(kind, chains left in flight, n)) is this thread's n / 2 floats of the 64 x n product
  # of the m64 x k16 and k16 x n tiles (plus the one before it: a chain of them is one k-step), read by GEPs like an MMA;
  # BARRIER(arg="proxy") is a block barrier after which the tensor cores' reads see every thread's shared-memory writes,
  # BARRIER(arg=("wgmma", n)) waits until at most n chains are in flight. TMA: ASYNC_COPY(local, index, param, mbarriers,
  # stage, gate, *coordinates, *after, arg=helpers.TensorMapSpec) copies one box of a tensor map over `param` into the
  # 128-byte swizzle, completing on mbarrier `stage` of `mbarriers` (a DEFINE_LOCAL of uint64); BARRIER(mbarriers, lead,
  # arg=("init", n)) sets them up (thread `lead`), BARRIER(mbarriers, stage, gate, arg=("expect", bytes)) arrives on one
  # expecting that many bytes, BARRIER(mbarriers, stage, parity, arg="landed") waits until its phase of that parity ends
  SPECIAL = auto(); GUARD = auto(); DEFINE_LOCAL = auto(); GROUP_REDUCE = auto(); VECTORIZE = auto(); GEP = auto()
  DEFINE_GLOBAL = auto(); BARRIER = auto(); ATOMIC_ADD = auto(); FRAGMENT = auto(); MMA = auto(); ASYNC_COPY = auto()
  WGMMA = auto()

  def __repr__(self) -> str: return f"Ops.{self.name}"
  # members are singletons: hash by identity in C (Enum's own __hash__ runs in Python, on every node built and looked up)
  __hash__ = object.__hash__


UNARY = {Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIPROCAL, Ops.NEG}
BINARY = {Ops.ADD, Ops.MUL, Ops.MAX, Ops.CMPLT, Ops.CMPNE, Ops.IDIV, Ops.MOD, Ops.AND, Ops.OR, Ops.XOR, Ops.SHL, Ops.SHR}
COMPARISON = {Ops.CMPLT, Ops.CMPNE}
ALU = UNARY | BINARY | {Ops.WHERE, Ops.CAST, Ops.BITCAST, Ops.CHECK}
ELEMENTWISE = ALU
MOVEMENT = {Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP}
COMMUTATIVE = {Ops.ADD, Ops.MUL, Ops.MAX, Ops.CMPNE, Ops.AND, Ops.OR, Ops.XOR}


# a tensor-level node's shape by its op: leaves from their arg; the others from their first source's shape `s` (dict
# lookups: on Python 3.11 each `Ops.X` read costs ~0.2 us, and a chain of `op is Ops.X` tests took 1.7 us of every node)
_LEAF_SHAPES: dict[Ops, Callable[[Any], tuple[int, ...]]] = {
  Ops.BUFFER: lambda arg: (arg[2],) if isinstance(arg, tuple) else (arg.size,),  # a schedule slot or a Buffer
  Ops.CONST: lambda arg: (), Ops.IOTA: lambda arg: (arg,), Ops.PARAM: lambda arg: (arg[1],)}
_SHAPES: dict[Ops, Callable[[tuple[int, ...], tuple, Any], tuple[int, ...]]] = {
  **{op: (lambda s, src, arg: s) for op in (*ALU, Ops.FLIP, Ops.CONTIGUOUS, Ops.DETACH, Ops.COPY, Ops.AFTER, Ops.CHECKPOINT, Ops.ASSIGN)},
  Ops.REDUCE: lambda s, src, arg: tuple(1 if i in arg[1] else d for i, d in enumerate(s)),
  Ops.RESHAPE: lambda s, src, arg: arg, Ops.EXPAND: lambda s, src, arg: arg,
  Ops.PERMUTE: lambda s, src, arg: tuple(s[i] for i in arg),
  Ops.PAD: lambda s, src, arg: tuple(d + b + a for d, (b, a) in zip(s, arg)),
  Ops.SHRINK: lambda s, src, arg: tuple(e - b for b, e in arg),
  Ops.COLLECTIVE: lambda s, src, arg: (s[0] * len(src),) if arg[0] == "allgather" else (s[0] // len(arg[2]),) if arg[0] == "reducescatter" else s,
}


def _shape_of(op: Ops, src: tuple["UOp", ...], arg: Any) -> tuple[int, ...] | None:
  """The shape of a tensor-level node, from its sources (already known)."""
  if (leaf := _LEAF_SHAPES.get(op)) is not None: return leaf(arg)
  if (rule := _SHAPES.get(op)) is None or not src or (s := src[0].shape) is None: return None
  return rule(s, src, arg)


class _LiveRef(weakref.ref):
  """A weak reference to a live node that knows its hash-consing key, so its callback can drop the entry."""
  __slots__ = ("key",)
  key: tuple


class UOpMeta(type):
  """Hash-consing: UOp(op, dtype, src, arg) returns the existing node when one is alive.

  The table holds weak references (a node lives as long as someone uses it). It is a plain dict of `_LiveRef`s rather than
  a `WeakValueDictionary`, whose get and set run in Python: building a node is on every eager call's path. For the same
  reason a new node's fields are set here, not by an `__init__` called through `type.__call__` (~0.4 us of every node)."""
  live: dict[tuple, _LiveRef] = {}

  def __call__(cls, op: Ops, dtype: DType = dtypes.void, src: tuple = (), arg: Any = None):
    # (0.0 == -0.0 and nan != nan in Python: a float constant is keyed by its exact bits)
    key = (op, dtype, src, ("float", arg.hex()) if isinstance(arg, float) else arg)
    if (ref := UOpMeta.live.get(key)) is not None and (node := ref()) is not None: return node
    new: UOp = object.__new__(cls)  # type: ignore[arg-type]  # (cls is UOp, which the checker sees as a UOpMeta)
    new.op, new.dtype, new.src, new.arg = op, dtype, src, arg
    new.shape = _shape_of(op, src, arg)
    ref = _LiveRef(new, _forget)
    ref.key = key
    UOpMeta.live[key] = ref
    return new


def _forget(ref: _LiveRef) -> None:
  """A node died: drop its entry, unless a new node with the same key already took its place."""
  if UOpMeta.live.get(ref.key) is ref: del UOpMeta.live[ref.key]


class UOp(metaclass=UOpMeta):
  """An immutable IR node: (op, dtype, src, arg). Tensor-level nodes also carry a shape. Built by `UOp(op, dtype, src,
  arg)`, which returns the live node with those fields if there is one (`UOpMeta.__call__` sets a new node's fields)."""
  __slots__ = ("op", "dtype", "src", "arg", "shape", "__weakref__")
  op: Ops
  dtype: DType
  src: tuple["UOp", ...]
  arg: Any
  shape: tuple[int, ...] | None
  if TYPE_CHECKING:  # the arguments `UOp(...)` takes, for the type checker (no __init__ runs)
    def __init__(self, op: Ops, dtype: DType = dtypes.void, src: tuple["UOp", ...] = (), arg: Any = None) -> None: ...

  def __repr__(self) -> str:
    return f"UOp({self.op}, {self.dtype}, arg={self.arg!r}, src=<{len(self.src)}>{', shape='+str(self.shape) if self.shape is not None else ''})"

  def __str__(self) -> str:
    return print_graph(self)

  def __reduce__(self): return (UOp, (self.op, self.dtype, self.src, self.arg))

  # ---- construction helpers (used by the frontend, gradients and lowering alike)
  @staticmethod
  def const(dtype: DType, value: Any) -> "UOp":
    return UOp(Ops.CONST, dtype, (), _cast_scalar(value, dtype))
  def alu(self, op: Ops, *others: "UOp") -> "UOp":
    out = dtypes.bool if op in COMPARISON else (self.dtype if op is not Ops.WHERE else others[0].dtype)
    return UOp(op, out, (self, *others))
  def cast(self, dtype: DType) -> "UOp": return self if dtype == self.dtype else UOp(Ops.CAST, dtype, (self,))
  def bitcast(self, dtype: DType) -> "UOp": return UOp(Ops.BITCAST, dtype, (self,))
  def reshape(self, shape: tuple[int, ...]) -> "UOp": return self if shape == self.shape else UOp(Ops.RESHAPE, self.dtype, (self,), tuple(shape))
  def permute(self, order: tuple[int, ...]) -> "UOp":
    return self if tuple(order) == tuple(range(len(order))) else UOp(Ops.PERMUTE, self.dtype, (self,), tuple(order))
  def expand(self, shape: tuple[int, ...]) -> "UOp": return self if shape == self.shape else UOp(Ops.EXPAND, self.dtype, (self,), tuple(shape))
  def pad(self, padding: tuple[tuple[int, int], ...]) -> "UOp":
    return self if all(p == (0, 0) for p in padding) else UOp(Ops.PAD, self.dtype, (self,), tuple(padding))
  def shrink(self, bounds: tuple[tuple[int, int], ...]) -> "UOp":
    return self if all(b == (0, d) for b, d in zip(bounds, self.tshape)) else UOp(Ops.SHRINK, self.dtype, (self,), tuple(bounds))
  def flip(self, axes: tuple[bool, ...]) -> "UOp": return self if not any(axes) else UOp(Ops.FLIP, self.dtype, (self,), tuple(axes))
  def reduce(self, op: Ops, axes: tuple[int, ...]) -> "UOp":
    axes = tuple(sorted(axes))
    return self if not axes else UOp(Ops.REDUCE, self.dtype, (self,), (op, axes))

  # operator sugar: index arithmetic in lowering and the simplifier, and the gradient rules (`-(grad * (out * out))`)
  def _c(self, x: "UOp | int | float | bool") -> "UOp":
    """`x` as a node beside this one: a Python scalar becomes a CONST of this dtype, broadcast to this node's shape
    (a tensor-level node's constant is a scalar reshaped and expanded, as the frontend makes it)."""
    if isinstance(x, UOp): return x
    const = UOp.const(self.dtype, x)
    return const.reshape((1,) * len(self.shape)).expand(self.shape) if self.shape else const
  def __add__(self, x): return self.alu(Ops.ADD, self._c(x))
  def __radd__(self, x): return self._c(x).alu(Ops.ADD, self)
  def __mul__(self, x): return self.alu(Ops.MUL, self._c(x))
  def __rmul__(self, x): return self._c(x).alu(Ops.MUL, self)
  def __sub__(self, x): return self.alu(Ops.ADD, self._c(x).alu(Ops.NEG))
  def __rsub__(self, x): return self._c(x).alu(Ops.ADD, self.alu(Ops.NEG))
  def __neg__(self): return self.alu(Ops.NEG)
  # true division is floating-point only, spelled as the frontend spells it: a * (1 / b)
  def __truediv__(self, x): return self.alu(Ops.MUL, self._c(x).alu(Ops.RECIPROCAL))
  def __rtruediv__(self, x): return self._c(x).alu(Ops.MUL, self.alu(Ops.RECIPROCAL))
  def reciprocal(self) -> "UOp": return self.alu(Ops.RECIPROCAL)
  def __floordiv__(self, x): return self.alu(Ops.IDIV, self._c(x))
  def __mod__(self, x): return self.alu(Ops.MOD, self._c(x))
  def __lt__(self, x): return self.alu(Ops.CMPLT, self._c(x))
  def __and__(self, x): return self.alu(Ops.AND, self._c(x))
  def ne(self, x): return self.alu(Ops.CMPNE, self._c(x))
  def where(self, a: "UOp", b: "UOp") -> "UOp": return self.alu(Ops.WHERE, a, b)
  def maximum(self, x): return self.alu(Ops.MAX, self._c(x))

  # ---- graph queries
  def toposort(self) -> list["UOp"]: return toposort([self])
  @property
  def tshape(self) -> tuple[int, ...]:
    """The shape of a tensor-level node, for code that only handles those (autograd, scheduling, lowering)."""
    assert self.shape is not None, f"{self.op.name} has no shape: not a tensor-level node"
    return self.shape
  @property
  def size(self) -> int: return prod(self.tshape)
  @property
  def base(self) -> "UOp":
    """Below the movement ops: the node whose data a view reads."""
    x = self
    while x.op in MOVEMENT: x = x.src[0]
    return x
  @property
  def vmin(self) -> int | float: return value_range(self)[0]
  @property
  def vmax(self) -> int | float: return value_range(self)[1]


def _cast_scalar(value: Any, dtype: DType) -> Any:
  if dtype == dtypes.bool: return bool(value)
  if dtype.is_int:
    if isinstance(value, float) and not math.isfinite(value): raise ValueError(f"cannot make an {dtype} constant from {value}")
    # integers wrap to the dtype's width, as the machine (and PyTorch: int32 tensor + 2**40) does
    bits = 8 * dtype.itemsize
    v = int(value) & ((1 << bits) - 1)
    return v - (1 << bits) if not dtype.is_unsigned and v >= 1 << (bits - 1) else v
  return _round_float(float(value), dtype)


def _round_float(value: float, dtype: DType) -> float:
  """`value` rounded to the nearest `dtype` value (a Python float holds it exactly).

  Constants are folded in Python: unless each constant is first rounded to the precision the
  kernel computes in, a fold of float32 arithmetic (the 1.5 * 2**23 rounding trick in exp2) is
  done in float64 and gives a different answer than the kernel would.
  """
  if dtype.itemsize == 8 or not math.isfinite(value): return value
  with np.errstate(over="ignore"):
    if dtype.name == "bfloat16": return float(round_bf16(value))
    return float(dtype.np.type(value))


def strip_reshapes(u: UOp) -> UOp:
  """Below the RESHAPEs: the node a reshape-only view reads."""
  while u.op is Ops.RESHAPE: u = u.src[0]
  return u


def toposort(roots: Iterable[UOp], stop: Callable[[UOp], bool] = lambda _: False) -> list[UOp]:
  """Nodes reachable from `roots`, children first, without Python recursion. `stop` nodes are included but not entered."""
  order, seen = [], set()
  stack: list[tuple[UOp, bool]] = [(r, False) for r in reversed(list(roots))]
  while stack:
    node, expanded = stack.pop()
    if expanded:
      order.append(node)
      continue
    if node in seen: continue
    seen.add(node)
    stack.append((node, True))
    if not stop(node): stack.extend((s, False) for s in reversed(node.src) if s not in seen)
  return order


# ---------------------------------------------------------------- printing: one node per line, each shared node named once (`%3`), children first

def _fmt_arg(u: UOp) -> str:
  if u.arg is None: return ""
  if u.op is Ops.BUFFER: return f" {u.arg!r}"
  if u.op is Ops.REDUCE: return f" {u.arg[0].name} axes={u.arg[1]}" if isinstance(u.arg, tuple) else f" {u.arg.name}"
  return f" {u.arg!r}"


def print_graph(*roots: UOp) -> str:
  """The graph below `roots` as text, one line per node: `%id = OP dtype shape (sources) arg`."""
  names: dict[UOp, str] = {}
  lines = []
  for node in toposort(roots):
    names[node] = f"%{len(names)}"
    srcs = ", ".join(names[s] for s in node.src)
    shape = f" {node.shape}" if node.shape is not None else ""
    lines.append(f"{names[node]:>5} = {node.op.name:<11} {node.dtype.name:<8}{shape}{' (' + srcs + ')' if srcs else ''}{_fmt_arg(node)}")
  return "\n".join(lines)


def print_program(program: list[UOp]) -> str:
  """A linearized kernel as text: one instruction per line, indented by loop depth."""
  names: dict[UOp, str] = {}
  lines, depth = [], 0
  for u in program:
    if u.op is Ops.ENDRANGE: depth -= 1
    names[u] = f"v{len(names)}"
    srcs = ", ".join(names.get(s, "?") for s in u.src)
    lines.append(f"{'  ' * depth}{names[u]:>4} = {u.op.name:<11} {u.dtype.name:<8} ({srcs}){_fmt_arg(u)}")
    if u.op is Ops.RANGE: depth += 1
  return "\n".join(lines)


# ---------------------------------------------------------------- value ranges for integer index arithmetic

_range_cache: "weakref.WeakKeyDictionary[UOp, tuple]" = weakref.WeakKeyDictionary()


def value_range(u: UOp) -> tuple[int | float, int | float]:
  """Inclusive (min, max) bounds of an integer/bool node, for the simplifier. Unknown is (-inf, inf)."""
  if (r := _range_cache.get(u)) is not None: return r
  for node in toposort([u], stop=lambda n: n in _range_cache):
    if node not in _range_cache: _range_cache[node] = _compute_range(node)
  return _range_cache[u]


def _compute_range(u: UOp) -> tuple:
  inf = math.inf
  if u.op is Ops.CONST: return (u.arg, u.arg)
  if u.op in (Ops.RANGE, Ops.SPECIAL): return (0, u.arg[1] - 1)
  if u.dtype == dtypes.bool: return (False, True) if u.op is not Ops.CONST else (u.arg, u.arg)
  if not u.src or u.op in (Ops.LOAD, Ops.ACCUMULATE, Ops.DEFINE_ACC): return (-inf, inf)
  r = [_range_cache.get(s) or value_range(s) for s in u.src]
  if u.op is Ops.ADD: return (r[0][0] + r[1][0], r[0][1] + r[1][1])
  if u.op is Ops.NEG: return (-r[0][1], -r[0][0])
  if u.op is Ops.MUL:
    prods = [a * b for a in r[0] for b in r[1] if not (math.isinf(a) or math.isinf(b)) or (a != 0 and b != 0)]
    if len(prods) < 4: return (-inf, inf)
    return (min(prods), max(prods))
  if u.op is Ops.MAX: return (max(r[0][0], r[1][0]), max(r[0][1], r[1][1]))
  if u.op is Ops.IDIV and u.src[1].op is Ops.CONST and u.src[1].arg > 0 and r[0][0] >= 0:
    c = u.src[1].arg
    return (r[0][0] // c, r[0][1] // c if not math.isinf(r[0][1]) else inf)
  if u.op is Ops.MOD and u.src[1].op is Ops.CONST and u.src[1].arg > 0 and r[0][0] >= 0:
    c = u.src[1].arg
    return (0, min(c - 1, r[0][1]))
  if u.op is Ops.WHERE: return (min(r[1][0], r[2][0]), max(r[1][1], r[2][1]))
  if u.op is Ops.CAST and u.dtype.is_int: return r[0]
  return (-inf, inf)


# ---------------------------------------------------------------- patterns

class UPat:
  """A node shape to match: op(s), dtype(s), sources, arg, and a name under which the match is captured."""
  __slots__ = ("ops", "dtypes", "src", "arg", "name", "allow_any_len")

  def __init__(self, op: Ops | tuple[Ops, ...] | set[Ops] | None = None, dtype: DType | tuple[DType, ...] | None = None,
               src: "UPat | tuple[UPat, ...] | None" = None, arg: Any = None, name: str | None = None, allow_any_len: bool = False):
    self.ops = None if op is None else (frozenset([op]) if isinstance(op, Ops) else frozenset(op))
    self.dtypes = None if dtype is None else (frozenset([dtype]) if isinstance(dtype, DType) else frozenset(dtype))
    self.src = (src,) if isinstance(src, UPat) else src
    self.arg, self.name, self.allow_any_len = arg, name, allow_any_len

  @staticmethod
  def var(name: str | None = None, dtype: DType | tuple[DType, ...] | None = None) -> "UPat": return UPat(dtype=dtype, name=name)
  @staticmethod
  def cvar(name: str | None = None, dtype: DType | tuple[DType, ...] | None = None) -> "UPat": return UPat(Ops.CONST, dtype, name=name)

  def match(self, u: UOp, captures: dict[str, UOp]) -> bool:
    if self.ops is not None and u.op not in self.ops: return False
    if self.dtypes is not None and u.dtype not in self.dtypes: return False
    if self.arg is not None and u.arg != self.arg: return False
    if self.name is not None:
      if self.name in captures and captures[self.name] is not u: return False
      captures[self.name] = u
    if self.src is None: return True
    if len(self.src) != len(u.src) and not (self.allow_any_len and len(u.src) >= len(self.src)): return False
    return all(p.match(s, captures) for p, s in zip(self.src, u.src))

  def __repr__(self) -> str:
    ops = "any" if self.ops is None else "|".join(sorted(o.name for o in self.ops))
    return f"UPat({ops}{', name='+self.name if self.name else ''})"


Rule = tuple[UPat, Callable[..., UOp | None]]


class PatternMatcher:
  """Rules (UPat, fn) indexed by op: only the rules that can match a node's op are tried.

  `fn` receives the named captures as keyword arguments (and `ctx` when the rewrite has one) and
  returns a replacement node, or None to leave the node alone.
  """

  def __init__(self, rules: list[Rule]):
    self.rules = rules
    self.by_op: dict[Ops, list[Rule]] = {}
    self.any_op: list[Rule] = []
    for pat, fn in rules:
      if pat.ops is None: self.any_op.append((pat, fn))
      else:
        for op in pat.ops: self.by_op.setdefault(op, []).append((pat, fn))
    for op in self.by_op: self.by_op[op] = self.by_op[op] + self.any_op

  def __add__(self, other: "PatternMatcher") -> "PatternMatcher": return PatternMatcher(self.rules + other.rules)

  def rewrite(self, u: UOp, ctx: Any = None) -> UOp | None:
    for pat, fn in self.by_op.get(u.op, self.any_op):
      captures: dict[str, UOp] = {}
      if pat.match(u, captures):
        out = fn(ctx=ctx, **captures) if ctx is not None else fn(**captures)
        if out is not None and out is not u: return out
    return None


def graph_rewrite(root: UOp, pm: PatternMatcher, ctx: Any = None) -> UOp:
  """Rewrite every node of `root`'s graph to a fixed point, children before parents, without recursion."""
  return graph_rewrite_many([root], pm, ctx)[0]


def graph_rewrite_many(roots: list[UOp], pm: PatternMatcher, ctx: Any = None) -> list[UOp]:
  done: dict[UOp, UOp] = {}
  # stack items: (node, stage, replacement). stage 0: push sources; 1: rebuild and match; 2: take a rewrite's result
  stack: list[tuple[UOp, int, UOp | None]] = [(r, 0, None) for r in reversed(roots)]
  in_progress: set[UOp] = set()
  while stack:
    node, stage, repl = stack.pop()
    if stage == 0:
      if node in done or node in in_progress: continue
      in_progress.add(node)
      stack.append((node, 1, None))
      stack.extend((s, 0, None) for s in reversed(node.src) if s not in done)
    elif stage == 1:
      new_src = tuple(done[s] for s in node.src)
      rebuilt = node if new_src == node.src else UOp(node.op, node.dtype, new_src, node.arg)
      out = pm.rewrite(rebuilt, ctx)
      if out is None:
        done[node] = rebuilt
        if rebuilt is not node: done.setdefault(rebuilt, rebuilt)
        in_progress.discard(node)
      else:
        stack.append((node, 2, out))
        stack.append((out, 0, None))
    else:
      assert repl is not None, "stage 2 carries the rewrite's result"
      done[node] = done[repl]
      in_progress.discard(node)
  return [done[r] for r in roots]


# called as hook(old, new) when `substitute` rebuilds a node: ir/provenance.py hands the old node's source lines to the new one
rebuild_hooks: list[Callable[[UOp, UOp], None]] = []


def substitute(root: UOp, mapping: dict[UOp, UOp]) -> UOp:
  """Replace nodes by identity everywhere in `root`'s graph (no pattern matching)."""
  if not mapping: return root
  done: dict[UOp, UOp] = {}
  for node in toposort([root], stop=lambda n: n in mapping):
    if node in mapping: done[node] = mapping[node]
    else:
      new_src = tuple(done[s] for s in node.src)
      if new_src == node.src: done[node] = node
      else:
        done[node] = UOp(node.op, node.dtype, new_src, node.arg)
        for hook in rebuild_hooks: hook(node, done[node])
  return done[root]
