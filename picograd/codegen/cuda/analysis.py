"""Facts about a linearized kernel that the CUDA plans decide on: range dependences, data-dependent values,
affine indices and contiguity, the row/column structure of row reductions, and the shape of a matrix product."""
from __future__ import annotations
from dataclasses import dataclass
from picograd.helpers import prod
from picograd.ir.ops import UOp, Ops


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


def index_terms(u: UOp) -> list[tuple[int, UOp | None]] | None:
  """`u` as a sum of coefficient x (RANGE, RANGE // c or RANGE % c; None: 1), else None."""
  if u.op is Ops.ADD:
    a, b = index_terms(u.src[0]), index_terms(u.src[1])
    return None if a is None or b is None else a + b
  if u.op is Ops.MUL and u.src[1].op is Ops.CONST and (a := index_terms(u.src[0])) is not None: return [(c * u.src[1].arg, t) for c, t in a]
  if u.op is Ops.CONST and u.dtype.is_int: return [(int(u.arg), None)]
  if u.op is Ops.RANGE or (u.op in (Ops.IDIV, Ops.MOD) and u.src[0].op is Ops.RANGE and u.src[1].op is Ops.CONST): return [(1, u)]
  return None


def contiguous_in(index: UOp, rng: UOp, width: int) -> bool:
  """Whether `index` moves by exactly 1 with `rng` and every other term keeps multiples of `width` aligned; for width > 1,
  also where it does so only within aligned runs of `rng` (a loop over heads x 64 merged in the output, read from a
  per-head layout: (n // 64) * T * 64 + n % 64), as a `width`-lane vector access needs."""
  a = affine(index)
  if a is not None: return a.get(rng) == 1 and all(v % width == 0 for k, v in a.items() if k is not rng)
  if width == 1 or (terms := index_terms(index)) is None: return False
  of_rng = [(c, t) for c, t in terms if t is not None and t.op is not Ops.RANGE and t.src[0] is rng]  # rng // d, rng % d
  moving = [(c, t) for c, t in of_rng if t.op is Ops.MOD] + [(c, t) for c, t in terms if t is rng]
  return len(moving) == 1 and moving[0][0] == 1 and all(t.src[1].arg % width == 0 for _, t in of_rng) and \
    all(c % width == 0 for c, t in terms if (c, t) not in moving)


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


def top_level(program: list[UOp]) -> list[UOp]:
  """The top-level reductions: accumulators defined outside every reduction loop."""
  depth, top = 0, []
  for u in program:
    if u.op is Ops.RANGE and u.arg[2] == "reduce": depth += 1
    elif u.op is Ops.ENDRANGE and u.src[0].arg[2] == "reduce": depth -= 1
    elif u.op is Ops.DEFINE_ACC and depth == 0: top.append(u)
  return top
