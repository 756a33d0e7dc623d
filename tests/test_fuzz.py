"""A random-program fuzzer (hypothesis): programs mixing every op family run on CPU and PYTHON and are checked against PyTorch.

A program starts from one random input (float32, int32 or bool; any of its dims may be 0 or 1; floats may hold
NaN and ±inf) and applies random steps: elementwise unary and binary ops (comparisons and where included, the
second operand broadcasting), casts, reductions over random axes, movement ops (reshape, permute, expand, pad,
shrink, flip, strided and negative slicing), matmul, softmax, cumsum and integer-tensor indexing. The same steps
run on torch tensors; picograd's result must match in shape, dtype and values (NaN where torch has NaN, within a
tolerance that depends on the dtype, on the elements where torch in float32 and in float64 agree), and where torch
raises (integer division by zero, an index out of range) picograd must raise the same exception type when the
program's steps are realized one by one (a lazy program computes only the elements its result needs).

CI runs PICOGRAD_FUZZ_EXAMPLES (60 by default) programs; set it to 10000 to hunt locally.
"""
from __future__ import annotations
import math, os
from dataclasses import dataclass, field
from typing import Any, Callable
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from picograd import Context, Tensor, dtypes

EXAMPLES = int(os.environ.get("PICOGRAD_FUZZ_EXAMPLES", 60))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 60, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# the third runs the PYTHON device with every kernel mapped onto a GPU by the CUDA passes (EMULATE=CUDA): it checks those
# passes (blocks, threads, dealt-out loops, combines, 16-byte lanes) on random programs with no GPU
BACKENDS = ["CPU", "PYTHON", "EMULATE=CUDA"]
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.int32): torch.int32, np.dtype(np.bool_): torch.bool,
                np.dtype(np.int64): torch.int64, np.dtype(np.float16): torch.float16}
PG_DTYPES = {torch.float32: dtypes.float32, torch.int32: dtypes.int32, torch.bool: dtypes.bool, torch.int64: dtypes.int64,
             torch.float16: dtypes.float16}


@dataclass
class Program:
  """The inputs (numpy arrays) and the steps; a step maps (framework, current value, inputs) to the next value."""
  inputs: list[np.ndarray] = field(default_factory=list)
  steps: list[tuple[str, Callable[[str, Any, list[Any]], Any]]] = field(default_factory=list)
  has_nan: bool = False
  # KNOWN (this fuzzer found it; open): the sign of a zero is not torch's after an integer-tensor index or gather (a
  # one-hot sum: -0.0 + 0.0 is +0.0) and in cross_entropy's loss (-0.0 where torch has 0.0); 1 / x shows it (inf vs
  # -inf). Programs with such a step get +0.0 for -0.0 in their inputs and no reciprocal or division after it.
  signless_zeros: bool = False

  def run(self, fw: str, device: str = "CPU", eager: bool = False) -> Any:
    """`fw`: "picograd" (on `device`), "torch", or "torch64": torch with float inputs in float64, the conditioning reference.
    `eager` realizes every step's picograd result, so every op computes all its elements, as torch's do."""
    inputs = [np.array(a + 0.0 if self.signless_zeros and a.dtype.kind == "f" else a, a.dtype) for a in self.inputs]  # -0.0 + 0.0 is +0.0
    if fw == "torch": xs = [torch.from_numpy(a) for a in inputs]
    elif fw == "torch64": xs = [torch.from_numpy(a.astype(np.float64) if a.dtype.kind == "f" else a) for a in inputs]
    else: xs = [Tensor(a, device=device) for a in inputs]
    x = xs[0]
    for _, f in self.steps:
      x = f(fw, x, xs)
      if eager: x.realize()
    return x

  def __repr__(self) -> str:
    shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.inputs)
    return f"Program(inputs: {shapes}; steps: {' -> '.join(name for name, _ in self.steps)})"


# ---------------------------------------------------------------- random data

def draw_array(draw, shape: tuple[int, ...], dtype: np.dtype, specials: bool) -> np.ndarray:
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  if dtype == np.bool_: return np.asarray(rng.random(shape) < 0.5)
  if dtype.kind == "i": return np.asarray(rng.integers(-6, 7, size=shape), dtype)
  a = np.asarray(rng.uniform(-3, 3, size=shape), dtype)
  if specials and a.size:
    mask = rng.random(shape) < 0.2
    a[mask] = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype), size=int(mask.sum()))
  return a


shapes = st.lists(st.sampled_from([0, 1, 1, 2, 3, 4, 5]), min_size=0, max_size=3).map(tuple)


def dtype_of(x: Any) -> np.dtype:
  return np.dtype(x.dtype.np) if isinstance(x, Tensor) else np.dtype(torch.empty(0, dtype=x.dtype).numpy().dtype)


# ---------------------------------------------------------------- the steps, per family. Each returns (name, fn) or None

def _new_input(draw, prog: Program, shape: tuple[int, ...], dtype: np.dtype) -> int:
  prog.inputs.append(draw_array(draw, shape, dtype, prog.has_nan))
  return len(prog.inputs) - 1


def broadcast_partner(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
  """A shape that broadcasts with `shape` to `shape`: some dims 1, maybe fewer leading dims."""
  drop = draw(st.integers(0, len(shape)))
  return tuple(1 if draw(st.booleans()) else d for d in shape[drop:])


FLOAT_UNARY: dict[str, Callable[[Any], Any]] = {
  "neg": lambda x: -x, "exp": lambda x: x.exp(), "log": lambda x: x.log(), "sqrt": lambda x: x.sqrt(), "sin": lambda x: x.sin(),
  "tanh": lambda x: x.tanh(), "sigmoid": lambda x: x.sigmoid(), "abs": lambda x: x.abs(), "reciprocal": lambda x: x.reciprocal(),
  "square": lambda x: x * x, "trunc": lambda x: x.trunc(), "exp_neg_sq": lambda x: (-(x * x)).exp(), "sign": lambda x: x.sign(),
  "relu": lambda x: x.relu(), "floor": lambda x: x.floor(), "ceil": lambda x: x.ceil(), "round": lambda x: x.round(),
  "clip": lambda x: x.clip(-1.5, 2.0),
}
# ops that make NaN (log and sqrt of negatives) or infinities (whose sums and products make NaN) out of finite values:
# after them a float -> int cast is undefined (torch gives INT_MIN for NaN), so cast_step leaves int32 out
NAN_SOURCES = {"log", "sqrt", "reciprocal", "exp", "div", "matmul", "log_softmax"}

BINARY: dict[str, Callable[[Any, Any], Any]] = {
  "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
  "maximum": lambda a, b: a.maximum(b), "minimum": lambda a, b: a.minimum(b),
  "lt": lambda a, b: a < b, "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "ge": lambda a, b: a >= b,
  "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
}
INT_BINARY: dict[str, Callable[[Any, Any], Any]] = {
  "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "floordiv": lambda a, b: a // b,
  "mod": lambda a, b: a % b, "maximum": lambda a, b: a.maximum(b), "lt": lambda a, b: a < b, "eq": lambda a, b: a == b,
  "and": lambda a, b: a & b, "xor": lambda a, b: a ^ b,
}


def unary_step(draw, prog: Program, shape, dt):
  if dt.kind != "f": return None
  name = draw(st.sampled_from([n for n in FLOAT_UNARY if not (prog.signless_zeros and n == "reciprocal")]))
  if name in NAN_SOURCES: prog.has_nan = True
  return name, shape, dt, lambda fw, x, xs: FLOAT_UNARY[name](x)


def binary_step(draw, prog: Program, shape, dt):
  table = BINARY if dt.kind == "f" else INT_BINARY if dt.kind == "i" else {"and": INT_BINARY["and"], "xor": INT_BINARY["xor"], "eq": BINARY["eq"]}
  name = draw(st.sampled_from([n for n in table if not (prog.signless_zeros and n == "div")]))
  k = _new_input(draw, prog, broadcast_partner(draw, shape), dt)
  reverse = draw(st.booleans())
  out_dt = np.dtype(np.bool_) if name in ("lt", "gt", "le", "ge", "eq", "ne") else dt
  if name in NAN_SOURCES and dt.kind == "f": prog.has_nan = True
  f = table[name]
  return f"{name}{'(r)' if reverse else ''}", shape, out_dt, (lambda fw, x, xs: f(xs[k], x)) if reverse else (lambda fw, x, xs: f(x, xs[k]))


def scalar_step(draw, prog: Program, shape, dt):
  """An op with a Python scalar: integer division and modulo by any small int, 0 included, and float arithmetic."""
  if dt.kind == "b": return None
  if dt.kind == "i":
    c = draw(st.integers(-3, 3))
    name = draw(st.sampled_from(["floordiv", "mod", "mul", "add"]))
  else:
    c = draw(st.sampled_from([0.5, -2.0, 3.0, 0.0]))
    name = draw(st.sampled_from(["mul", "add", "div"]))
    if name == "div": prog.has_nan = True
  f = {"floordiv": lambda x: x // c, "mod": lambda x: x % c, "mul": lambda x: x * c, "add": lambda x: x + c, "div": lambda x: x / c}[name]
  return f"{name} {c}", shape, dt, lambda fw, x, xs: f(x)


def where_step(draw, prog: Program, shape, dt):
  cond = _new_input(draw, prog, broadcast_partner(draw, shape), np.dtype(np.bool_))
  other = _new_input(draw, prog, broadcast_partner(draw, shape), dt)
  return "where", shape, dt, lambda fw, x, xs: (torch.where(xs[cond], x, xs[other]) if fw != "picograd" else x.where(xs[cond], xs[other]))


def cast_step(draw, prog: Program, shape, dt):
  options = {"f": ["bool", "float16"], "i": ["float32", "bool", "int64"], "b": ["float32", "int32"]}[dt.kind]
  if dt.kind == "f" and not prog.has_nan: options.append("int32")  # float -> int of NaN/inf is undefined (torch gives INT_MIN)
  to = draw(st.sampled_from(options))
  tdt = {"bool": torch.bool, "float16": torch.float16, "float32": torch.float32, "int32": torch.int32, "int64": torch.int64}[to]
  if to == "float16":  # round trip: float16 arithmetic itself is not what this step tests
    return ("cast float16 and back", shape, dt,
            lambda fw, x, xs: x.to(tdt).to(x.dtype) if fw != "picograd" else x.cast(dtypes.float16).cast(dtypes.float32))
  out = np.dtype(torch.empty(0, dtype=tdt).numpy().dtype)
  def f(fw, x, xs):
    if fw == "picograd": return x.cast(PG_DTYPES[tdt])
    return x.to(torch.float64 if fw == "torch64" and tdt == torch.float32 else tdt)
  return f"cast {to}", shape, out, f


def reduce_step(draw, prog: Program, shape, dt):
  if not shape: return None
  axes = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
  keepdim = draw(st.booleans())
  kinds = ["sum"] + (["mean"] if dt.kind == "f" else []) + (["max"] if dt.kind != "b" else [])
  kind = draw(st.sampled_from(kinds))
  out_shape = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdim else tuple(d for i, d in enumerate(shape) if i not in axes)
  out_dt = np.dtype(np.int64) if kind == "sum" and dt.kind in "ib" else dt
  def f(fw, x, xs):
    if kind == "sum": return x.sum(axes, keepdim=keepdim)
    if kind == "mean": return x.mean(axes, keepdim=keepdim)
    return x.amax(axes, keepdim=keepdim) if fw != "picograd" else x.max(axes, keepdim=keepdim)
  return f"{kind}{axes}{' keepdim' if keepdim else ''}", out_shape, out_dt, f


def _factorizations(n: int) -> list[tuple[int, ...]]:
  out = [(n,), (1, n), (n, 1)]
  for a in range(2, n):
    if n % a == 0: out.append((a, n // a))
  if n == 0: out += [(0, 3), (2, 0, 1)]
  return out


def reshape_step(draw, prog: Program, shape, dt):
  n = math.prod(shape)
  new = draw(st.sampled_from(_factorizations(n) + [()] * (n == 1)))
  return f"reshape{new}", new, dt, lambda fw, x, xs: x.reshape(new)


def permute_step(draw, prog: Program, shape, dt):
  if len(shape) < 2: return None
  order = tuple(draw(st.permutations(range(len(shape)))))
  return f"permute{order}", tuple(shape[i] for i in order), dt, lambda fw, x, xs: x.permute(order)


def expand_step(draw, prog: Program, shape, dt):
  ones = [i for i, d in enumerate(shape) if d == 1]
  if not ones: return None
  new = tuple(draw(st.sampled_from([0, 1, 3])) if i in ones else d for i, d in enumerate(shape))
  return f"expand{new}", new, dt, lambda fw, x, xs: x.expand(new)


def pad_step(draw, prog: Program, shape, dt):
  if not shape: return None
  flat = []
  new = list(shape)
  for i in range(draw(st.integers(1, len(shape)))):
    d = len(shape) - 1 - i
    before, after = draw(st.integers(-min(shape[d], 1), 2)), draw(st.integers(0, 2))
    flat += [before, after]
    new[d] = shape[d] + before + after
  value = draw(st.sampled_from([0.0, 1.0, -2.5])) if dt.kind == "f" else (draw(st.sampled_from([0, 3])) if dt.kind == "i" else False)
  def f(fw, x, xs):
    return torch.nn.functional.pad(x, flat, value=value) if fw != "picograd" else x.pad(flat, value=value)
  return f"pad{flat} value={value}", tuple(new), dt, f


def slice_step(draw, prog: Program, shape, dt):
  if not shape: return None
  index, new = [], []
  for d in shape:
    kind = draw(st.sampled_from(["all", "range", "int", "none"] if d else ["all", "range", "none"]))
    if kind == "all": index.append(slice(None)); new.append(d)
    elif kind == "none": index.append(None); new.append(1); index.append(slice(None)); new.append(d)
    elif kind == "int": index.append(draw(st.integers(-d, d - 1)))
    else:
      start, stop = draw(st.integers(-d - 1, d + 1)), draw(st.integers(-d - 1, d + 1))
      step = draw(st.sampled_from([1, 2, 3, -1, -2]))
      s = slice(start, stop, step)
      index.append(s)
      new.append(len(range(*s.indices(d))))
  index = tuple(index)
  # torch has no negative steps: flip, then slice forwards, is what x[::-k] means
  def f(fw, x, xs):
    if fw == "picograd": return x[index]
    out, dim = x, 0
    for item in index:
      if item is None: out = out.unsqueeze(dim); dim += 1
      elif isinstance(item, int): out = out.select(dim, item)
      else:
        idx = torch.tensor(list(range(*item.indices(out.shape[dim]))), dtype=torch.int64)
        out = out.index_select(dim, idx); dim += 1
    return out
  return f"getitem{index}", tuple(new), dt, f


def flip_step(draw, prog: Program, shape, dt):
  if not shape: return None
  dims = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
  return f"flip{dims}", shape, dt, lambda fw, x, xs: x.flip(dims)


def matmul_step(draw, prog: Program, shape, dt):
  if dt.kind != "f" or not shape: return None
  n = draw(st.sampled_from([0, 1, 3]))
  other_shape = (shape[-1], n) if len(shape) >= 1 and draw(st.booleans()) else (shape[-1],)
  k = _new_input(draw, prog, other_shape, dt)
  prog.has_nan = True  # inf * 0 in the products
  out = shape[:-1] + other_shape[1:]
  return f"matmul{other_shape}", out, dt, lambda fw, x, xs: x @ xs[k]


def softmax_step(draw, prog: Program, shape, dt):
  if dt.kind != "f" or not shape: return None
  axis = draw(st.integers(0, len(shape) - 1))
  kind = draw(st.sampled_from(["softmax", "log_softmax", "cumsum"]))
  if kind == "log_softmax": prog.has_nan = True
  return f"{kind}({axis})", shape, dt, lambda fw, x, xs: getattr(x, kind)(axis)


def index_step(draw, prog: Program, shape, dt):
  """Integer-tensor indexing of one dim (in range, negative included; sometimes out of range: both must raise)."""
  if not shape or shape[0] == 0: return None
  n = shape[0]
  m = draw(st.integers(0, 4))
  lo, hi = (-n, n - 1) if draw(st.integers(0, 9)) else (-n - 2, n + 1)
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  prog.inputs.append(rng.integers(lo, hi + 1, size=(m,)).astype(np.int64))
  prog.signless_zeros = True
  k = len(prog.inputs) - 1
  return f"index[{lo}..{hi}]", (m,) + shape[1:], dt, lambda fw, x, xs: x[xs[k]]


def lookup_step(draw, prog: Program, shape, dt):
  """gather along dim 0, cross_entropy with class targets (ignore_index included), one_hot: indices sometimes out of range."""
  kind = draw(st.sampled_from(["gather", "cross_entropy"] if dt.kind == "f" else ["one_hot"] if dt.kind == "i" else [None]))
  if kind == "one_hot":
    if math.prod(shape) * 7 > 4096: return None
    return ("one_hot(7)", shape + (7,), np.dtype(np.int64),
            lambda fw, x, xs: torch.nn.functional.one_hot(x.long(), 7) if fw != "picograd" else x.one_hot(7))
  if kind is None or not shape or shape[0] == 0: return None
  n = shape[0]
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  lo, hi = (0, n - 1) if draw(st.integers(0, 4)) else (-1, n)
  if kind == "gather":
    m = draw(st.integers(0, 3))
    prog.inputs.append(rng.integers(lo, hi + 1, size=(m,) + shape[1:]).astype(np.int64))
    k = len(prog.inputs) - 1
    prog.signless_zeros = True  # a one-hot sum too (see Program)
    return "gather(0)", (m,) + shape[1:], dt, lambda fw, x, xs: x.gather(0, xs[k])
  # classes on dim 1 of an (n, c) view; targets over the n rows, with ignore_index (-100) now and then
  c = math.prod(shape[1:])
  if c == 0: return None
  targets = rng.integers(0, c, size=(n,)) if draw(st.integers(0, 4)) else rng.integers(-1, c + 1, size=(n,))
  targets[rng.random(n) < 0.2] = -100
  prog.inputs.append(targets.astype(np.int64))
  k = len(prog.inputs) - 1
  prog.has_nan = True
  prog.signless_zeros = True
  def f(fw, x, xs):
    logits = x.reshape(n, c)
    return torch.nn.functional.cross_entropy(logits, xs[k]) if fw != "picograd" else logits.cross_entropy(xs[k])
  return "cross_entropy", (), dt, f


STEPS = [lookup_step, unary_step, binary_step, scalar_step, where_step, cast_step, reduce_step, reshape_step, permute_step, expand_step,
         pad_step, slice_step, flip_step, matmul_step, softmax_step, index_step]


@st.composite
def programs(draw) -> Program:
  dt = np.dtype(draw(st.sampled_from([np.float32, np.float32, np.float32, np.int32, np.bool_])))
  shape = draw(shapes)
  prog = Program(has_nan=dt.kind == "f" and draw(st.booleans()))
  prog.inputs.append(draw_array(draw, shape, dt, prog.has_nan))
  for _ in range(draw(st.integers(1, 6))):
    made = draw(st.sampled_from(STEPS))(draw, prog, shape, dt)
    if made is None: continue
    name, shape, dt, f = made
    prog.steps.append((name, f))
    if math.prod(shape) > 4096: break
  return prog


# ---------------------------------------------------------------- checking

TOL = {np.dtype(np.float32): (2e-4, 2e-5), np.dtype(np.float16): (2e-3, 2e-3), np.dtype(np.float64): (1e-9, 1e-12)}


def _close(a: np.ndarray, b: np.ndarray, dtype: np.dtype, scale: float) -> np.ndarray:
  if dtype.kind != "f": return a == b
  rtol, atol = TOL[dtype]
  return np.isclose(a, b, rtol=rtol, atol=atol * scale, equal_nan=True)


def compare(prog: Program, want: np.ndarray, want64: np.ndarray, got: Tensor, device: str) -> None:
  """picograd's result against torch's, on the elements where the program is well conditioned: torch in float32 and in
  float64 agree there. Elsewhere (sin of 2e6, a comparison of two nearly equal values) one ulp decides the answer."""
  assert got.shape == want.shape, f"{device}: shape {got.shape} != torch {want.shape}\n{prog}"
  out = got.numpy()
  assert out.dtype == want.dtype, f"{device}: dtype {out.dtype} != torch {want.dtype}\n{prog}"
  # chains of transcendental ops compound picograd's few-ulp approximations: scale atol by the values' magnitude
  scale = float(np.max(np.abs(want[np.isfinite(want)]), initial=1.0)) if want.dtype.kind == "f" else 1.0
  with np.errstate(all="ignore"):
    stable = _close(want, want64.astype(want.dtype), want.dtype, scale)
  if want.dtype.kind != "f": np.testing.assert_array_equal(np.where(stable, out, want), want, err_msg=f"{device}\n{prog}")
  else:
    rtol, atol = TOL[want.dtype]
    np.testing.assert_allclose(np.where(stable, out, want), want, rtol=rtol, atol=atol * scale, equal_nan=True, err_msg=f"{device}\n{prog}")


def check_program(prog: Program) -> None:
  try:
    with np.errstate(all="ignore"):
      want, want64 = prog.run("torch").numpy(), prog.run("torch64").numpy()
    error: type[Exception] | None = None
  except (RuntimeError, IndexError) as e:
    want, want64, error = None, None, type(e)
  for backend in BACKENDS:
    device, emulate = ("PYTHON", "CUDA") if backend == "EMULATE=CUDA" else (backend, "")
    with Context(EMULATE=emulate):
      if error is not None:
        # a lazy program computes only the elements its result needs: (a // 0)[:0] has nothing to divide. Step by
        # step, each op computes all of its elements, as torch's do, and must raise what torch raised
        with pytest.raises(error):
          prog.run("picograd", device, eager=True)
        continue
      compare(prog, want, want64, prog.run("picograd", device), backend)


def test_padded_row_reduction_compiles():
  """Found by this fuzzer: the CPU optimizer split the padded row's max into a loop outside the global loops and one
  inside, over the same RANGE, and LLVM rejected the IR (each reduction now gets its own loop nest)."""
  a = np.full((1, 3), 0.82, np.float32)
  for device in ("CPU", "PYTHON"):
    got = Tensor(a, device=device).pad((0, 1)).log_softmax(1).sum(1).mean().numpy()
    np.testing.assert_allclose(got, torch.nn.functional.pad(torch.from_numpy(a), (0, 1)).log_softmax(1).sum(1).mean().numpy(), rtol=1e-6)


@SETTINGS
@given(programs())
def test_random_programs(prog: Program):
  check_program(prog)
