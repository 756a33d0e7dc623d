"""Elementwise ops against numpy on every device: unary math, binary arithmetic with broadcasting, comparisons, where, clip."""
import math
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
from compare import assert_tensor, rand, torch_result

# shapes with size-1 and zero-size dimensions
SHAPES = [(), (1,), (5,), (3, 4), (2, 1, 3), (0,), (3, 0), (1, 1)]

UNARY = {  # name: (picograd, numpy oracle, input range)
  "neg": (lambda x: -x, np.negative, (-3, 3)),
  "exp": (Tensor.exp, np.exp, (-5, 5)),
  "exp2": (Tensor.exp2, np.exp2, (-5, 5)),
  "log": (Tensor.log, np.log, (0.01, 10)),
  "log2": (Tensor.log2, np.log2, (0.01, 10)),
  "sqrt": (Tensor.sqrt, np.sqrt, (0, 10)),
  "rsqrt": (Tensor.rsqrt, lambda a: 1 / np.sqrt(a), (0.01, 10)),
  "sin": (Tensor.sin, np.sin, (-6, 6)),
  "cos": (Tensor.cos, np.cos, (-6, 6)),
  "tanh": (Tensor.tanh, np.tanh, (-5, 5)),
  "sigmoid": (Tensor.sigmoid, lambda a: 1 / (1 + np.exp(-a)), (-8, 8)),
  "relu": (Tensor.relu, lambda a: np.maximum(a, 0), (-3, 3)),
  "abs": (Tensor.abs, np.abs, (-3, 3)),
  "reciprocal": (Tensor.reciprocal, np.reciprocal, (0.5, 4)),
  "square": (Tensor.square, np.square, (-3, 3)),
}


@pytest.mark.parametrize("name", list(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary_float32(device, name, shape):
  fn, ref, (lo, hi) = UNARY[name]
  a = rand(shape, np.float32, low=lo, high=hi)
  # the transcendental ones are composed (exp = exp2(x/ln 2), cos = sin(pi/2 - x), ...): a few ulps of slack
  assert_tensor(fn(Tensor(a, device=device)), ref(a.astype(np.float64)).astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "tanh", "sigmoid", "neg", "abs"])
@pytest.mark.parametrize("dt", [dtypes.float16, dtypes.float64])
def test_unary_other_floats(device, name, dt):
  fn, ref, (lo, hi) = UNARY[name]
  a = rand((4, 3), dt.np, low=lo, high=hi)
  rtol = 2e-3 if dt == dtypes.float16 else 1e-12
  assert_tensor(fn(Tensor(a, device=device)), ref(a.astype(np.float64)).astype(dt.np), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "sigmoid"])
def test_unary_math_on_ints_gives_default_float(device, name):
  fn, ref, _ = UNARY[name]
  a = np.array([1, 2, 3], np.int32)
  assert_tensor(fn(Tensor(a, device=device)), ref(a.astype(np.float64)).astype(np.float32))


def test_abs_neg_relu_on_ints(device):
  a = np.array([-3, 0, 2], np.int64)
  x = Tensor(a, device=device)
  assert_tensor(x.abs(), np.abs(a))
  assert_tensor(-x, -a)
  assert_tensor(x.relu(), np.maximum(a, 0))


def test_special_values(device):
  x = Tensor([0.0, -1.0, math.inf, -math.inf, 1000.0, -1000.0], device=device)
  with np.errstate(all="ignore"):
    a = np.array([0.0, -1.0, math.inf, -math.inf, 1000.0, -1000.0], np.float32)
    assert_tensor(x.exp(), np.exp(a))
    assert_tensor(x.log(), np.log(a))
    assert_tensor(x.sqrt(), np.sqrt(a))
    assert_tensor(x.tanh(), np.tanh(a))
    assert_tensor(x.sigmoid(), 1 / (1 + np.exp(-a)))
  assert np.isnan(Tensor([math.nan], device=device).exp().numpy()).all()


BINARY = {
  "add": (lambda x, y: x + y, np.add),
  "sub": (lambda x, y: x - y, np.subtract),
  "mul": (lambda x, y: x * y, np.multiply),
  "div": (lambda x, y: x / y, np.divide),
  "maximum": (lambda x, y: x.maximum(y), np.maximum),
  "minimum": (lambda x, y: x.minimum(y), np.minimum),
  "lt": (lambda x, y: x < y, np.less),
  "le": (lambda x, y: x <= y, np.less_equal),
  "gt": (lambda x, y: x > y, np.greater),
  "ge": (lambda x, y: x >= y, np.greater_equal),
  "eq": (lambda x, y: x == y, np.equal),
  "ne": (lambda x, y: x != y, np.not_equal),
}

BROADCAST = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 3), (4, 1)), ((), (2, 3)), ((1,), (0,)),
             ((0, 3), (1, 3)), ((5,), ())]


@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("sa, sb", BROADCAST)
def test_binary_broadcasting(device, name, sa, sb):
  fn, ref = BINARY[name]
  a, b = rand(sa, seed=1), rand(sb, seed=2)
  b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)  # keep division well-conditioned
  b.flat[:1] = a.flat[:1] if a.size and b.size else b.flat[:1]  # an equal pair exercises ==, <=, >=
  assert_tensor(fn(Tensor(a, device=device), Tensor(b, device=device)), ref(a, b))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "minimum", "lt", "ge", "eq"])
@pytest.mark.parametrize("scalar", [2, -1.5, True])
def test_binary_with_python_scalar(device, name, scalar):
  fn, ref = BINARY[name]
  a = rand((2, 3), seed=3)
  assert_tensor(fn(Tensor(a, device=device), scalar), ref(a, np.float32(scalar)))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_scalar_on_the_left(device, name):
  ops = {"add": lambda s, x: s + x, "sub": lambda s, x: s - x, "mul": lambda s, x: s * x, "div": lambda s, x: s / x}
  a = rand((4,), seed=4, low=0.5, high=3)
  assert_tensor(ops[name](3.0, Tensor(a, device=device)), ops[name](np.float32(3.0), a))


@pytest.mark.parametrize("sa, sb", [((3, 4), (4,)), ((2, 1), (1, 3)), ((), (3,))])
def test_mixed_dtype_broadcasting(device, sa, sb):
  pytest.importorskip("torch")
  a, b = rand(sa, np.int32, seed=5), rand(sb, np.float16, seed=6)
  # PyTorch's rule (numpy would give float64 here): an int tensor times a float16 tensor is float16
  assert_tensor(Tensor(a, device=device) * Tensor(b, device=device), torch_result(lambda x, y: x * y, a, b))
  c = rand(sb, np.int64, seed=7)
  assert_tensor(Tensor(a, device=device) + Tensor(c, device=device), a + c)


@pytest.mark.parametrize("exponent", [0, 1, 2, 3, -1, -2, 0.5, 2.5, -0.5])
def test_pow_scalar_exponent(device, exponent):
  a = rand((3, 4), low=0.2, high=3, seed=8)
  assert_tensor(Tensor(a, device=device) ** exponent, (a.astype(np.float64) ** exponent).astype(np.float32), rtol=1e-5)


def test_pow_negative_base_and_zero(device):
  a = np.array([-2.0, -2.0, -2.0, 0.0, 0.0, 3.0], np.float32)
  b = np.array([3.0, 2.0, 0.5, 0.0, 2.0, 0.0], np.float32)
  with np.errstate(invalid="ignore"):
    assert_tensor(Tensor(a, device=device) ** Tensor(b, device=device), np.power(a, b), rtol=1e-5)
  assert_tensor(Tensor([-2.0, 3.0], device=device) ** 3, np.array([-8.0, 27.0], np.float32))


def test_pow_tensor_broadcast_and_reverse(device):
  a, b = rand((3, 1), low=0.5, high=2, seed=9), rand((4,), low=-2, high=2, seed=10)
  assert_tensor(Tensor(a, device=device) ** Tensor(b, device=device), np.power(a, b), rtol=1e-5)
  assert_tensor(2 ** Tensor(b, device=device), np.power(np.float32(2), b), rtol=1e-5)


def test_pow_integer_keeps_dtype(device):
  pytest.importorskip("torch")
  a, b = np.array([2, 3, -2, 0]), np.array([3, 2, 3, 5])
  assert_tensor(Tensor(a, device=device) ** 2, torch_result(lambda x: x ** 2, a))
  assert_tensor(Tensor(a, device=device) ** Tensor(b, device=device), torch_result(lambda x, y: x ** y, a, b))
  assert_tensor(2 ** Tensor(b, device=device), torch_result(lambda y: 2 ** y, b))
  assert_tensor(Tensor(a, device=device) ** 0.5, torch_result(lambda x: x ** 0.5, a))  # a float exponent gives float


def test_integer_floor_division_and_modulo_follow_python(device):
  a = np.array([7, -7, 7, -7, 0, 6], np.int32)
  b = np.array([2, 2, -2, -2, 3, 3], np.int32)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  assert_tensor(x // y, a // b)
  assert_tensor(x % y, a % b)
  assert_tensor(x.div(y, rounding_mode="trunc"), np.trunc(a / b).astype(np.int32))


def test_float_floor_division_and_modulo(device):
  a, b = rand((5,), seed=11, low=-5, high=5), np.array([2.0, -2.0, 1.5, -0.75, 3.0], np.float32)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  assert_tensor(x // y, np.floor_divide(a, b))
  assert_tensor(x % y, np.mod(a, b), atol=1e-5)


@pytest.mark.parametrize("sc, sx, sy", [((3, 4), (3, 4), (3, 4)), ((3, 1), (4,), ()), ((4,), (2, 1), (1, 4)), ((0, 2), (2,), (1,))])
def test_where_broadcasts(device, sc, sx, sy):
  c, x, y = rand(sc, np.bool_, seed=1), rand(sx, seed=2), rand(sy, seed=3)
  out = picograd.where(Tensor(c, device=device), Tensor(x, device=device), Tensor(y, device=device))
  assert_tensor(out, np.where(c, x, y))


def test_where_scalars_and_promotion(device):
  c = np.array([True, False, True])
  assert_tensor(picograd.where(Tensor(c, device=device), 1.5, 0), np.where(c, 1.5, 0).astype(np.float32))
  assert_tensor(picograd.where(Tensor(c, device=device), Tensor([1, 2, 3], device=device), 0), np.array([1, 0, 3]))
  x = Tensor([1, 2, 3], dtype=dtypes.int32, device=device)
  assert_tensor(picograd.where(Tensor(c, device=device), x, 0.5), np.array([1, 0.5, 3], np.float32))
  # a non-bool condition means "nonzero"
  with pytest.raises(RuntimeError, match="where: the condition must be a bool tensor, not float32"):  # as PyTorch
    picograd.where(Tensor([0.0, 2.0], device=device), 1, 2)
  assert_tensor(Tensor([1.0, 2.0, 3.0], device=device).where(Tensor(c, device=device), -1.0), np.array([1, -1, 3], np.float32))


@pytest.mark.parametrize("lo, hi", [(-0.5, 0.5), (None, 0.0), (0.0, None), (1.0, -1.0)])
def test_clip(device, lo, hi):
  a = rand((3, 5), seed=12)
  # numpy and PyTorch agree when lo > hi: everything becomes hi
  ref = a if lo is None else np.maximum(a, np.float32(lo))
  ref = ref if hi is None else np.minimum(ref, np.float32(hi))
  assert_tensor(Tensor(a, device=device).clip(lo, hi), ref)


def test_clip_with_tensors_and_ints(device):
  a, lo = rand((2, 3), seed=13), rand((3,), seed=14, low=-1, high=0)
  assert_tensor(Tensor(a, device=device).clamp(Tensor(lo, device=device), 0.5), np.clip(a, lo, 0.5))
  assert_tensor(Tensor([1, 5, 9], device=device).clip(2, 6), np.array([2, 5, 6]))


def test_nan_propagation(device):
  x = Tensor([1.0, math.nan, 3.0], device=device)
  assert np.isnan((x + 1).numpy()[1]) and np.isnan(x.maximum(2.0).numpy()[1])
  assert_tensor(x != x, np.array([False, True, False]))
  assert_tensor(x == x, np.array([True, False, True]))
  assert_tensor(x < 2.0, np.array([True, False, False]))
  assert_tensor(x.isnan(), np.array([False, True, False]))


def test_elementwise_chain_with_movement_ops_matches_numpy(device):
  a, b = rand((2, 3, 4), seed=15), rand((4, 3), seed=16)
  x, y = Tensor(a, device=device), Tensor(b, device=device)
  out = ((x.permute(0, 2, 1) * y + 1).exp().flip(1)[:, ::2] - x.sum(2).reshape(2, 1, 3)).relu()
  ref = np.maximum(np.exp(a.transpose(0, 2, 1) * b + 1)[:, ::-1][:, ::2] - a.sum(2).reshape(2, 1, 3), 0)
  assert_tensor(out, ref, rtol=1e-5, atol=1e-5)
