"""Edge-case semantics against PyTorch: NaN and ±inf, integer limits, empty axes, dtypes of results, half precision.

One table of cases, each run on CPU and PYTHON: a picograd function and the PyTorch function it
should match (the same lambda where the APIs agree), the inputs, and whether the gradient is
compared too. Values must agree in dtype, shape and value, NaN for NaN; gradients likewise.
A few behaviours that are not a value (exceptions, dtypes of creation functions) follow the table.
"""
from __future__ import annotations
import math
from typing import Callable
import numpy as np
import pytest
from picograd import Tensor, dtypes

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore:.*degrees of freedom")  # PyTorch warns where var/std divide by 0: those are the cases

nan, inf = math.nan, math.inf
# the special values every float op meets: NaN, both infinities, signed zeros, halves (rounding ties), ordinary numbers
SPECIAL = np.array([nan, inf, -inf, -3.5, -2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 3.7, -1e30, 1e30], np.float32)
INT_MIN, INT_MAX = -2**31, 2**31 - 1
INTS = np.array([INT_MIN, INT_MIN + 1, -7, -1, 0, 1, 7, INT_MAX], np.int32)
ROWS = np.array([[1.0, nan, 3.0, nan], [2.0, 5.0, 5.0, -1.0], [-inf, -inf, -inf, -inf]], np.float32)  # NaN rows, ties, -inf
TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
EMPTY = np.zeros((2, 0), np.float32)


def f32(*v) -> np.ndarray: return np.array(v, np.float32)


# (id, picograd function, torch function or None for the same, inputs, compare gradients)
CASES: list[tuple[str, Callable, Callable | None, list[np.ndarray], bool]] = [
  # a pad value under fused elementwise ops, pads of pads, pads under reductions
  ("pad_value_exp", lambda x: x.pad((1, 1), value=1.0).exp(), lambda x: F.pad(x, (1, 1), value=1.0).exp(), [f32(0.5, -0.25)], True),
  ("pad_value_binary", lambda x: x.pad((2, 1), value=-3.0) * 2 + x.pad((1, 2), value=0.5).sigmoid(),
   lambda x: F.pad(x, (2, 1), value=-3.0) * 2 + F.pad(x, (1, 2), value=0.5).sigmoid(), [f32(0.5, -0.25, 2.0)], True),
  ("pad_of_pad", lambda x: x.pad((1, 0), value=2.0).pad((0, 2), value=-1.5).log2().abs(),
   lambda x: F.pad(F.pad(x, (1, 0), value=2.0), (0, 2), value=-1.5).log2().abs(), [f32(0.5, 4.0)], True),
  ("pad_then_reduce", lambda x: x.pad(((1, 1), (0, 2)), value=1.5).exp().sum(1),
   lambda x: F.pad(x, (0, 2, 1, 1), value=1.5).exp().sum(1), [np.ones((2, 3), np.float32)], True),
  ("pad_nan_value", lambda x: x.pad((1, 1), value=nan) + 1, lambda x: F.pad(x, (1, 1), value=nan) + 1, [f32(1.0, 2.0)], False),
  ("pad_int_value", lambda x: x.pad((1, 1), value=7) * 3, lambda x: F.pad(x, (1, 1), value=7) * 3, [np.array([1, 2], np.int32)], False),
  # rounding and comparisons of special values
  ("floor", lambda x: x.floor(), None, [SPECIAL], False),
  ("ceil", lambda x: x.ceil(), None, [SPECIAL], False),
  ("round", lambda x: x.round(), None, [SPECIAL], False),
  ("trunc", lambda x: x.trunc(), None, [SPECIAL], False),
  ("floor_f64", lambda x: x.floor() + x.ceil() + x.round() + x.trunc(), None, [SPECIAL.astype(np.float64)], False),
  ("lt", lambda x, y: x < y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("le", lambda x, y: x <= y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("gt", lambda x, y: x > y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("ge", lambda x, y: x >= y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("eq", lambda x, y: x == y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("ne", lambda x, y: x != y, None, [SPECIAL, SPECIAL[::-1].copy()], False),
  ("cmp_scalar_nan", lambda x: (x <= nan).int() + (x >= 1.0).int() * 2 + (x == x).int() * 4, None, [SPECIAL], False),
  ("sign", lambda x: x.sign(), None, [SPECIAL], False),
  ("where_nan", lambda x: x.where(x > 0, -x) + x.where(x != x, 1.0), None, [SPECIAL], False),
  # NaN through relu, abs, maximum, minimum, clip, reductions
  ("erf", lambda x: x.erf(), None, [SPECIAL], True),
  ("relu", lambda x: x.relu(), None, [SPECIAL], True),
  ("abs", lambda x: x.abs(), None, [SPECIAL], True),
  ("maximum", lambda x, y: x.maximum(y), None, [SPECIAL, SPECIAL[::-1].copy()], True),
  ("minimum", lambda x, y: x.minimum(y), None, [SPECIAL, SPECIAL[::-1].copy()], True),
  ("clip", lambda x: x.clip(-1.5, 2.5), lambda x: x.clamp(-1.5, 2.5), [SPECIAL], True),
  ("clip_min_only", lambda x: x.clamp(min=-0.5), None, [SPECIAL], True),
  ("clip_max_only", lambda x: x.clip(max=0.5), None, [SPECIAL], True),
  ("clip_tensor_bounds", lambda x, lo, hi: x.clip(lo, hi), lambda x, lo, hi: x.clamp(lo, hi),
   [f32(-2, -1, 0, 1, 2, nan), f32(-1, -1, -1, -1, -1, -1), f32(1, 1, 1, 1, 1, 1)], True),
  ("max_rows", lambda x: x.max(1), lambda x: x.amax(1), [ROWS], True),
  ("min_rows", lambda x: x.min(1), lambda x: x.amin(1), [ROWS], True),
  ("max_ties", lambda x: x.max(1, keepdim=True), lambda x: x.amax(1, keepdim=True), [TIES], True),
  ("max_all", lambda x: x.max(), lambda x: x.amax(), [TIES], True),
  ("min_ties", lambda x: x.min(), lambda x: x.amin(), [TIES], True),
  ("argmax_rows", lambda x: x.argmax(1), None, [ROWS], False),
  ("argmin_rows", lambda x: x.argmin(1), None, [ROWS], False),
  # bool through masking and movement
  ("tril_bool", lambda x: x.tril(), None, [np.ones((3, 4), np.bool_)], False),
  ("triu_bool", lambda x: x.triu(1), None, [np.ones((3, 4), np.bool_)], False),
  ("tril_int", lambda x: x.tril(-1), None, [np.arange(12, dtype=np.int32).reshape(3, 4)], False),
  ("bool_movement", lambda x: x.flip(0).transpose(0, 1).pad((1, 1)), lambda x: F.pad(x.flip(0).transpose(0, 1), (1, 1)),
   [np.eye(3, dtype=np.bool_)], False),
  # integer limits
  ("abs_int", lambda x: x.abs(), None, [INTS], False),
  ("neg_int", lambda x: -x, None, [INTS], False),
  ("minimum_int", lambda x, y: x.minimum(y), None, [INTS, INTS[::-1].copy()], False),
  ("maximum_int", lambda x, y: x.maximum(y), None, [INTS, INTS[::-1].copy()], False),
  ("min_int", lambda x: x.min(), lambda x: x.amin(), [INTS], False),
  ("max_int", lambda x: x.max(), lambda x: x.amax(), [INTS], False),
  ("min_int64", lambda x: x.min(), lambda x: x.amin(), [np.array([-2**63, 5], np.int64)], False),
  ("min_int_rows", lambda x: x.min(1) + x.max(1) + x.argmin(1) + x.argmax(1), lambda x: x.amin(1) + x.amax(1) + x.argmin(1) + x.argmax(1),
   [np.array([[INT_MAX, INT_MAX], [INT_MIN, INT_MIN], [0, INT_MIN]], np.int32)], False),
  ("clip_int", lambda x: x.clip(-7, 7), lambda x: x.clamp(-7, 7), [INTS], False),
  # integer powers are exact
  ("pow_int_scalar", lambda x: x ** 3, None, [np.array([-1290, -3, 0, 1, 7, 1290], np.int32)], False),
  ("pow_int_big", lambda x: x ** 13, None, [np.array([-5, -3, 2, 3, 5], np.int64)], False),
  ("pow_int_tensor", lambda x, y: x ** y, None, [np.array([3, -3, 7, 2, 0, -1], np.int32), np.array([19, 5, 0, 30, 0, 7], np.int32)], False),
  ("pow_int_wrap", lambda x: x ** 5, None, [np.array([100, -100], np.int32)], False),
  ("rpow_int", lambda x: 3 ** x, None, [np.array([0, 1, 5, 19], np.int32)], False),
  ("pow_int_float", lambda x: x ** 0.5, None, [np.array([0, 4, 9], np.int32)], False),
  # float powers at 0, ±inf and negative bases
  ("pow_special", lambda x, y: x ** y, None, [np.repeat(f32(0.0, -0.0, 2.0, -2.0, inf, -inf, nan, 1.0), 8),
                                             np.tile(f32(0.0, -1.0, 2.0, 3.0, 0.5, -2.5, inf, -inf), 8)], False),
  ("pow_scalar_exponents", lambda x: x ** 3 + x ** -2 + x ** 0 + x ** 2.0 + x ** 10, None, [f32(-2.0, -0.5, 0.0, 1.5, inf, -inf, nan)], False),
  ("pow_integer_valued_exponents", lambda x: x ** 5.0 + x ** 7 + x ** -3.0 + x ** 33, None,
   [f32(3.0, -3.0, 1.5, -0.5, 1.0, 0.0, inf, -inf, nan)], False),
  ("pow_int_tensor_float_exponent", lambda x: x ** 2.0 + x ** 5.0, None, [np.array([3, -7, 0, 11], np.int32)], False),
  ("pow_exponent_grad", lambda x: x ** 6 + x ** -5.0, None, [f32(1.5, -2.0, 0.7)], True),
  ("pow_grad", lambda x, y: x ** y, None, [f32(0.0, 0.0, 0.0, 0.0, 2.0, 1.5, 1.0), f32(2.0, 1.0, 3.0, 0.0, 3.0, 0.0, 2.5)], True),
  ("pow_grad_root_at_zero", lambda x: x ** 0.5, None, [f32(0.0, 1.0, 4.0)], True),
  ("pow_grad_negative_at_zero", lambda x: x ** -1.5, None, [f32(0.0, 1.0, 4.0)], True),
  ("pow_grad_negative_base", lambda x: x ** 3.0 + x ** 2.0 + x ** 5 + x ** -3, None, [f32(-2.0, -0.5, 1.5)], True),
  ("pow_grad_scalar", lambda x: x ** 2.5 + x ** 1.0 + x ** 0.0, None, [f32(0.0, 1.0, 4.0)], True),
  ("rpow_grad", lambda x: 2.0 ** x + 0.5 ** x, None, [f32(-1.0, 0.0, 2.0, 3.0)], True),
  ("rpow_negative_base", lambda x: (-2.0) ** x, None, [f32(-1.0, 0.0, 2.0, 3.0, 0.5, inf, -inf, nan)], False),
  # division and modulo of negatives (division by zero is another file's business)
  ("true_div_int", lambda x, y: x / y, None, [np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)], False),
  ("floordiv_int", lambda x, y: x // y, None, [np.array([7, -7, 7, -7, 6, -6], np.int32), np.array([2, 2, -2, -2, 3, 3], np.int32)], False),
  ("mod_int", lambda x, y: x % y, None, [np.array([7, -7, 7, -7, 6, -6], np.int32), np.array([2, 2, -2, -2, 3, 3], np.int32)], False),
  ("divmod_int_limits", lambda x, y: (x // y) * 3 + x % y, None, [INTS, np.array([3, -1, 2, -2, 5, -3, -7, 2], np.int32)], False),
  ("divmod_int64_limits", lambda x, y: (x // y) ^ (x % y), None, [np.array([-2**63, -2**63 + 1, 2**63 - 1, -9], np.int64),
                                                                  np.array([3, 7, -2, 4], np.int64)], False),
  ("mod_float", lambda x, y: x % y, None, [f32(7.5, -7.5, 7.5, -7.5, 6.0, -6.0), f32(2.0, 2.0, -2.0, -2.0, 3.0, 3.0)], False),
  ("floordiv_float", lambda x, y: x // y, None, [f32(7.5, -7.5, 7.5, -7.5, 6.0, -6.0), f32(2.0, 2.0, -2.0, -2.0, 3.0, 3.0)], False),
  ("mod_float_special", lambda x, y: x % y, None, [f32(5, -5, inf, -inf, nan, 5, 0, -0.0, 7.5, 1e10, -1e10, 3e-30),
                                                    # d/db at a=±inf: -inf here, NaN in PyTorch
                                                    f32(inf, inf, 3, 3, 3, nan, 3, 3, -2, 3, 3, 7)], False),
  ("floordiv_float_special", lambda x, y: x // y, None, [f32(5, -5, inf, -inf, nan, 5, 0, 7.5, 1e10, -1e10, 5, -5, 0),
                                                         f32(inf, inf, 3, 3, 3, nan, 3, -2, 3, 3, 0, 0, 0)], False),
  ("maximum_mixed", lambda x, y: x.maximum(y) + x.minimum(y), None, [np.array([1, -2, 3], np.int32), f32(0.5, nan, 3.0)], False),
  # empty axes
  ("sum_empty", lambda x: x.sum(1), None, [EMPTY], False),
  ("mean_empty", lambda x: x.mean(1), None, [EMPTY], False),
  ("softmax_empty", lambda x: x.softmax(1), None, [EMPTY], False),
  ("log_softmax_empty", lambda x: x.log_softmax(1), None, [EMPTY], False),
  ("cumsum_empty", lambda x: x.cumsum(1), None, [EMPTY], False),
  ("cumsum_empty_other", lambda x: x.cumsum(0), None, [EMPTY], False),
  ("logsumexp_empty", lambda x: x.logsumexp(1), None, [EMPTY], False),
  ("var_empty", lambda x: x.var(1), None, [EMPTY], False),
  ("max_nonempty_axis_of_empty", lambda x: x.T.max(1), lambda x: x.T.amax(1), [EMPTY], False),
  # var and std with large corrections
  ("var_correction_n", lambda x: x.var(1, correction=4), None, [TIES], True),
  ("var_correction_big", lambda x: x.var(1, correction=6), None, [TIES], False),
  ("std_correction_big", lambda x: x.std(0, correction=2), None, [TIES], False),
  ("var_one", lambda x: x.std(0), None, [f32(3.0)], False),
  ("var_keepdim", lambda x: x.var(0, keepdim=True, correction=0) + x.std(dim=1, keepdim=True, unbiased=False).sum(),
   lambda x: x.var(0, keepdim=True, correction=0) + x.std(dim=1, keepdim=True, unbiased=False).sum(), [ROWS[1:2].repeat(3, 0)], True),
  # half precision accumulates in float32
  ("half_mean", lambda x: x.mean(), None, [np.ones(70000, np.float16)], False),
  ("half_sum", lambda x: x.sum(), None, [np.full(5000, 0.1, np.float16)], False),
  ("half_var", lambda x: x.var() + x.std(), None, [np.linspace(0, 60, 3001).astype(np.float16)], False),
  ("half_wide_scalars", lambda x: (x * 1e5 + 1e-8 - 1e-4) / 1e5 + 3.0 / (x + 1e-6), None, [np.array([1e-3, 0.5, 2.0, 0], np.float16)], False),
  ("half_softmax", lambda x: x.softmax(0), None, [np.zeros(70000, np.float16)], False),
  ("argmin_int", lambda x: x.argmin(), None, [np.array([2**40 + 1, 2**40, 2**40 + 1, -2**63 + 1, -2**63], np.int64)], False),
  ("argmin_int32", lambda x: x.argmin() + x.argmax(), None, [INTS], False),
]


def _run_picograd(fn: Callable, arrays: list[np.ndarray], device: str, grad: bool):
  xs = [Tensor(a, device=device, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
  out = fn(*xs)
  if not grad: return out, []
  weight = np.random.default_rng(0).uniform(0.5, 1.5, out.shape).astype(np.float32)
  (out * Tensor(weight, device=device)).sum().backward()
  return out, [x.grad for x in xs if x.requires_grad]


def _run_torch(fn: Callable, arrays: list[np.ndarray], grad: bool):
  xs = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
  out = fn(*xs)
  if not grad: return out, []
  weight = np.random.default_rng(0).uniform(0.5, 1.5, tuple(out.shape)).astype(np.float32)
  (out * torch.tensor(weight)).sum().backward()
  return out, [x.grad for x in xs if x.requires_grad]


def _assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
  assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
  assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
  if want.dtype.kind == "f":
    tol = 2e-3 if want.dtype == np.float16 else 2e-6
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, equal_nan=True, err_msg=what)
  else: np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("name,fn,torch_fn,arrays,grad", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(device, name, fn, torch_fn, arrays, grad):
  want, want_grads = _run_torch(torch_fn or fn, arrays, grad)
  got, got_grads = _run_picograd(fn, arrays, device, grad)
  _assert_same(got.numpy(), want.detach().numpy(), "value")
  for i, (g, w) in enumerate(zip(got_grads, want_grads)):
    assert g is not None, f"gradient {i} is missing"
    _assert_same(g.numpy(), w.numpy(), f"gradient {i}")


# ---------------------------------------------------------------- behaviours that are not a value

def test_python_ints_beyond_int32_are_int64(device):
  for v in (2**40, -2**40, 2**63 - 1, 2**31, -2**31 - 1):
    t = Tensor(v, device=device)
    assert t.dtype == dtypes.int64 and t.item() == v
  assert Tensor(2**31 - 1, device=device).dtype == dtypes.int32
  assert Tensor([2**40, 1], device=device).numpy().tolist() == [2**40, 1]
  assert Tensor.full((2,), 2**40, device=device).numpy().tolist() == [2**40] * 2
  assert (Tensor([1, 2], dtype=dtypes.int64, device=device) + 2**40).numpy().tolist() == [2**40 + 1, 2**40 + 2]
  assert Tensor(1.5e300, device=device).dtype == dtypes.float32  # floats stay the default float (inf, as in PyTorch)
  for v in (2**63, -2**63 - 1, [2**63, 2**64 - 1]):
    with pytest.raises(ValueError, match="int64"): Tensor(v, device=device)


def test_bfloat16_reductions_accumulate_in_float32(device):
  x = Tensor.ones(70000, dtype=dtypes.bfloat16, device=device)
  assert x.mean().dtype == dtypes.bfloat16 and x.mean().item() == 1.0
  assert x.sum().item() == 70144.0  # the float32 sum 70000, rounded to bfloat16 once (PyTorch gives the same)


def test_signed_zeros(device):
  """1 / f(x) tells -0.0 from +0.0: rounding keeps the sign of the input, abs gives +0.0 (PyTorch). (relu(-0.0) is +0.0 here, -0.0 in PyTorch.)"""
  x = f32(-0.0, 0.0, -0.4, 0.4, -0.5, 0.5, -0.7, -1e-30)
  for name, fn in [("trunc", lambda t: t.trunc()), ("floor", lambda t: t.floor()), ("ceil", lambda t: t.ceil()), ("round", lambda t: t.round()),
                   ("abs", lambda t: t.abs())]:
    want = np.signbit(fn(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(np.signbit(fn(Tensor(x, device=device)).numpy()), want, err_msg=name)


def test_negative_integer_power_raises(device):
  x = Tensor([1, 2, 3], device=device)
  with pytest.raises(RuntimeError, match="negative integer powers"): x ** -1
  with pytest.raises(RuntimeError, match="negative integer powers"): x.pow(-2)
  assert (x ** 0).numpy().tolist() == [1, 1, 1]
  assert (x ** -1.0).dtype == dtypes.float32  # a float exponent gives a float result


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float32, torch.float64])
def test_linspace_dtypes(device, dtype):
  for args in [(0, 10, 5), (-1, 1, 5), (2.5, -3.5, 7), (0, 1, 1), (3, 3, 0), (-7, 9, 9), (-7.5, 9.5, 5)]:
    want = torch.linspace(*args, dtype=dtype).numpy()
    got = Tensor.linspace(*args, dtype=dtypes.from_any(str(dtype).split(".")[-1]), device=device)
    _assert_same(got.numpy(), want, f"linspace{args}")


def test_linspace_rejects_negative_steps(device):
  with pytest.raises(RuntimeError, match="steps"): Tensor.linspace(0, 1, -1, device=device)


def test_arange_edges(device):
  for args, kw in [((5,), {}), ((0,), {}), ((1, 1), {}), ((0, 1, 0.1), {}), ((10, 0, -3), {}), ((0.5, 3),{}), ((1, 2.5, 0.5), {}),
                   ((0, 5), {"dtype": torch.float32}), ((-3, 3, 2), {"dtype": torch.int32}), ((0, 5, 1.5), {"dtype": torch.int32}),
                   ((-2.5, 2, 1.5), {"dtype": torch.int32}), ((0, 1, 0.1), {"dtype": torch.float64}), ((2**40, 2**40 + 3), {})]:
    want = torch.arange(*args, **kw).numpy()
    pkw = {"dtype": dtypes.from_any(str(kw["dtype"]).split(".")[-1])} if kw else {}
    _assert_same(Tensor.arange(*args, **pkw, device=device).numpy(), want, f"arange{args}")
  with pytest.raises(RuntimeError): Tensor.arange(0, 5, -1, device=device)
  with pytest.raises(RuntimeError): Tensor.arange(1, 0, device=device)
  with pytest.raises(RuntimeError): Tensor.arange(0, 1, 0, device=device)


def test_empty_reductions_raise_like_torch(device):
  x = Tensor(EMPTY, device=device)
  for op in (lambda t: t.max(1), lambda t: t.min(1), lambda t: t.argmax(1), lambda t: t.argmin(1), lambda t: t.max()):
    with pytest.raises((IndexError, RuntimeError)): op(x)
