"""Randomized tests (hypothesis): random chains of movement and elementwise ops, broadcasting, slicing and reductions
checked against numpy, and the symbolic simplifier checked against direct evaluation of index arithmetic.

Examples are small and few so the suite stays fast; `PICOGRAD_HYPOTHESIS_EXAMPLES=500` explores more.
"""
import itertools
import os
import warnings
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
import picograd
from picograd import Tensor, dtypes
from picograd.ir.ops import UOp, Ops, toposort
from picograd.ir.symbolic import simplify, PYTHON_ALU
from conftest import DEVICES  # CPU, PYTHON, and CUDA where a GPU opens

SETTINGS = settings(max_examples=int(os.environ.get("PICOGRAD_HYPOTHESIS_EXAMPLES", 30)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def data_for(shape: tuple[int, ...], draw) -> np.ndarray:
  seed = draw(st.integers(0, 2**16))
  return np.random.default_rng(seed).uniform(-2, 2, size=shape).astype(np.float32)


# ---------------------------------------------------------------- one random step: (name, apply to Tensor, apply to numpy)

UNARY = [
  ("neg", lambda t: -t, np.negative), ("relu", Tensor.relu, lambda a: np.maximum(a, 0)), ("abs", Tensor.abs, np.abs),
  ("sin", Tensor.sin, np.sin), ("tanh", Tensor.tanh, np.tanh), ("sigmoid", Tensor.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
  ("add1", lambda t: t + 1.0, lambda a: a + np.float32(1)), ("half", lambda t: t * 0.5, lambda a: a * np.float32(0.5)),
]


@st.composite
def step(draw, shape: tuple[int, ...]):
  """A random op valid for `shape`: returns (description, tensor fn, numpy fn, new shape, extra numpy input or None)."""
  nd = len(shape)
  kinds = ["unary", "binary", "reshape", "permute", "flip", "pad", "slice", "expand"]
  kind = draw(st.sampled_from(kinds))
  if kind == "unary":
    name, f, g = draw(st.sampled_from(UNARY))
    return name, lambda t, o: f(t), lambda a, o: g(a).astype(np.float32), shape, None
  if kind == "binary":
    # the other operand broadcasts: some dims 1, maybe fewer dims
    drop = draw(st.integers(0, nd))
    oshape = tuple(1 if draw(st.booleans()) else d for d in shape[drop:])
    other = data_for(oshape, draw)
    op = draw(st.sampled_from(["add", "mul", "sub", "maximum", "where"]))
    tf = {"add": lambda t, o: t + o, "mul": lambda t, o: t * o, "sub": lambda t, o: t - o, "maximum": lambda t, o: t.maximum(o),
          "where": lambda t, o: picograd.where(t > o, t, o * 2)}[op]
    nf = {"add": np.add, "mul": np.multiply, "sub": np.subtract, "maximum": np.maximum,
          "where": lambda a, o: np.where(a > o, a, o * np.float32(2))}[op]
    return f"{op} {oshape}", tf, lambda a, o, nf=nf: nf(a, o).astype(np.float32), shape, other
  if kind == "reshape":
    n = int(np.prod(shape))
    choices = [(n,)] + ([(1, n), (n, 1)] if n else [(0, 3)]) + [tuple(reversed(shape))] if shape else [(1,), ()]
    if n and n % 2 == 0: choices.append((2, n // 2))
    new = draw(st.sampled_from([c for c in choices if int(np.prod(c)) == n]))
    return f"reshape {new}", lambda t, o: t.reshape(new), lambda a, o: a.reshape(new), new, None
  if kind == "permute" and nd:
    order = tuple(draw(st.permutations(range(nd))))
    return f"permute {order}", lambda t, o: t.permute(order), lambda a, o: a.transpose(order), tuple(shape[i] for i in order), None
  if kind == "flip" and nd:
    dims = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1))))
    return f"flip {dims}", lambda t, o: t.flip(dims), lambda a, o: np.flip(a, dims), shape, None
  if kind == "pad" and nd:
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
    return f"pad {pads}", lambda t, o: t.pad(pads), lambda a, o: np.pad(a, pads), tuple(d + b + e for d, (b, e) in zip(shape, pads)), None
  if kind == "slice" and nd:
    index = []
    for d in shape:
      start, stop = draw(st.integers(-d - 1, d + 1)), draw(st.integers(-d - 1, d + 1))
      index.append(slice(start, stop, draw(st.sampled_from([1, 2, 3, -1, -2]))))
    index = tuple(index)
    new = np.empty(shape)[index].shape
    return f"slice {index}", lambda t, o: t[index], lambda a, o: a[index], new, None
  if kind == "expand":
    axis = draw(st.integers(0, nd))
    size = draw(st.integers(0, 3))
    new = shape[:axis] + (size,) + shape[axis:]
    return (f"expand at {axis} to {size}", lambda t, o: t.unsqueeze(axis).expand(new),
            lambda a, o: np.broadcast_to(np.expand_dims(a, axis), new), new, None)
  return "identity", lambda t, o: t, lambda a, o: a, shape, None


@st.composite
def chains(draw, max_len: int = 6):
  shape = draw(shapes)
  a = data_for(shape, draw)
  steps = []
  for _ in range(draw(st.integers(1, max_len))):
    s = draw(step(shape))
    steps.append(s)
    shape = s[3]
  return a, steps


def run_chain(a: np.ndarray, steps, device: str) -> tuple[Tensor, np.ndarray]:
  t, ref = Tensor(a, device=device), a
  for _, tf, nf, _, other in steps:
    o = Tensor(other, device=device) if other is not None else None
    t, ref = tf(t, o), nf(ref, other)
    assert t.shape == ref.shape
  return t, ref


def assert_matches(t: Tensor, ref: np.ndarray, steps) -> None:
  got = t.numpy()
  where = " -> ".join(s[0] for s in steps)
  assert got.shape == ref.shape and got.dtype == np.float32, where
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=where)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(chain=chains())
def test_random_elementwise_and_movement_chain(device, chain):
  a, steps = chain
  t, ref = run_chain(a, steps, device)
  assert_matches(t, ref, steps)
  assert len(picograd.schedule(t)) <= 1  # no reductions: the whole chain is at most one kernel


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(chain=chains(max_len=4), data=st.data())
def test_random_chain_then_reduce(device, chain, data):
  a, steps = chain
  t, ref = run_chain(a, steps, device)
  if t.ndim == 0: return
  axis = data.draw(st.integers(-t.ndim, t.ndim - 1))
  keepdim = data.draw(st.booleans())
  names = ["sum", "mean"] + (["max", "min"] if t.shape[axis] else [])
  name = data.draw(st.sampled_from(names))
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")  # the mean of an empty axis is nan, with a warning from numpy
    expected = getattr(np, name)(ref, axis=axis, keepdims=keepdim)
  assert_matches(getattr(t, name)(axis, keepdim=keepdim), expected.astype(np.float32), steps + [(f"{name} {axis}",)])


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(base=nonempty_shapes, data=st.data())
def test_broadcasting_binary_ops(device, base, data):
  sa = tuple(1 if data.draw(st.booleans()) else d for d in base[data.draw(st.integers(0, len(base))):])
  sb = tuple(1 if data.draw(st.booleans()) else d for d in base[data.draw(st.integers(0, len(base))):])
  a, b = data_for(sa, data.draw), data_for(sb, data.draw)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  np.testing.assert_allclose((x * y - x).numpy(), a * b - a, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal((x < y).numpy(), a < b)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(shape=nonempty_shapes, data=st.data())
def test_matmul_random_shapes(device, shape, data):
  k = data.draw(st.integers(1, 5))
  a = data_for(shape[:-1] + (k,), data.draw)
  b = data_for((k, data.draw(st.integers(1, 4))), data.draw)
  np.testing.assert_allclose((Tensor(a, device=device) @ Tensor(b, device=device)).numpy(), a @ b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the symbolic simplifier

def evaluate(u: UOp, env: dict[UOp, int]) -> int:
  vals: dict[UOp, int] = {}
  for n in toposort([u]):
    if n.op is Ops.CONST: vals[n] = n.arg
    elif n.op is Ops.RANGE: vals[n] = env[n]
    else: vals[n] = PYTHON_ALU[n.op](*[vals[s] for s in n.src])
  return vals[u]


@st.composite
def index_expressions(draw):
  ranges = [UOp(Ops.RANGE, dtypes.int32, (), (i, draw(st.integers(1, 7)), "global")) for i in range(2)]
  leaves = st.sampled_from(ranges) | st.integers(0, 9).map(lambda c: UOp.const(dtypes.int32, c))

  def extend(children):
    c = st.integers(1, 9).map(lambda c: UOp.const(dtypes.int32, c))
    return st.one_of(
      st.tuples(children, children).map(lambda p: p[0] + p[1]),
      st.tuples(children, c).map(lambda p: p[0] * p[1]),
      st.tuples(children, c).map(lambda p: p[0] // p[1]),
      st.tuples(children, c).map(lambda p: p[0] % p[1]),
    )
  expr = draw(st.recursive(leaves, extend, max_leaves=8))
  return expr, ranges


@settings(max_examples=200, deadline=None)
@given(case=index_expressions())
def test_simplify_preserves_index_arithmetic(case):
  """Reshapes create div/mod of loop indices; every rewrite must keep the value at every point of the loops."""
  expr, ranges = case
  simple = simplify(expr)
  for point in itertools.product(*(range(r.arg[1]) for r in ranges)):
    env = dict(zip(ranges, point))
    assert evaluate(simple, env) == evaluate(expr, env), f"{expr}\n  simplified to\n{simple}\n  differs at {point}"


def test_merged_axes_split_again_simplify_to_an_affine_index():
  """(32, 32, 64) viewed as (1024, 64) and read back with the rows split: ((k*64 + i) // 2048) * 2048 + (k % 32) * 64 + i
  is k*64 + i (a common factor of the sum and the divisor, then the div/mod pair), so the CPU GEMM reads it as a plain load.
  (k*64 + i) % 2048 is (k % 32) * 64 + i; with i up to 64 no factor is common and nothing changes."""
  k, i = (UOp(Ops.RANGE, dtypes.int32, (), (n, size, "global")) for n, size in ((0, 1024), (1, 64)))
  c = lambda v: UOp.const(dtypes.int32, v)  # noqa: E731
  flat = k * c(64) + i
  expr = (flat // c(2048)) * c(2048) + (k % c(32)) * c(64) + i
  simple = simplify(expr)
  assert not any(n.op in (Ops.IDIV, Ops.MOD) for n in toposort([simple])), simple
  assert simplify(flat % c(2048)) is simplify((k % c(32)) * c(64) + i)
  wide = UOp(Ops.RANGE, dtypes.int32, (), (2, 65, "global"))
  assert any(n.op is Ops.IDIV for n in toposort([simplify((k * c(64) + wide) // c(2048))]))
  for point in itertools.product(range(0, 1024, 37), range(64)):
    env = dict(zip((k, i), point))
    assert evaluate(simple, env) == evaluate(expr, env) == point[0] * 64 + point[1]
    assert evaluate(simplify(flat % c(2048)), env) == (point[0] * 64 + point[1]) % 2048
