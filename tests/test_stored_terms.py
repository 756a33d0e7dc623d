"""A reduction's expensive terms stored into the output and read back by the output loop (codegen/stored_terms.py).

Which CPU kernels take the rewrite (softmax's exp is computed once per element: one exp2 polynomial in the LLVM IR instead
of two), which must not (cheap terms, other dtypes, outputs an in-place assignment may also read, reductions not once per
row), and that results keep their bits (against the kernel without the pass, NOOPT=1) on NaN/inf rows, rows of 1, 3 and
1001 elements, rows split across the CPU's threads, and on the PYTHON renderer running the rewritten program.
"""
import numpy as np
import torch
import picograd
from picograd import Tensor, Context
from picograd.codegen.linearize import linearize
from picograd.codegen.llvm import ll_const
from picograd.codegen.lower import lower_kernel
from picograd.codegen.python import render_python
from picograd.codegen.stored_terms import store_terms, _affine_in
from picograd.codegen.transcendental import EXP2_POLY
from picograd.dtype import dtypes
from picograd.engine.compile import _kernels
from picograd.ir.ops import UOp, Ops, toposort, substitute
from picograd.runtime.cpu import _split, _threads
from picograd.runtime.interpreter import KERNEL_GLOBALS
from gradcheck import assert_close_to_torch

RNG = np.random.default_rng(0)
EXP_MARK = ll_const(EXP2_POLY[-1], dtypes.float32)  # the exp2 polynomial's last coefficient: once per exp2 in the IR


def _kernels_of(t: Tensor) -> list:
  return [s.kernel for s in picograd.schedule(t) if s.kernel is not None]


def _stored(k) -> bool: return any(o.startswith("terms of reduce loop") for o in k.opts)


def _rows() -> np.ndarray:
  """64 rows of 1001: a NaN, +inf, all -inf, some -inf, huge values; the rest normal."""
  x = RNG.standard_normal((64, 1001)).astype(np.float32) * 4
  x[0, 5] = np.nan
  x[1, 7] = np.inf
  x[2] = -np.inf
  x[3, ::3] = -np.inf
  x[4] = RNG.uniform(-3e38, 3e38, 1001).astype(np.float32)
  x[5, [1, 900]] = np.inf
  return x


def _same_bits(fn, x: np.ndarray) -> np.ndarray:
  """fn on x with the pass and without it (NOOPT=1): the same bits (NaNs in the same places). Returns the result."""
  got = fn(Tensor(x)).numpy()
  with Context(NOOPT=1): want = fn(Tensor(x)).numpy()
  np.testing.assert_array_equal(got, want)
  return got


def test_softmax_computes_exp_once():
  for x in (_rows(), RNG.standard_normal((7, 3)).astype(np.float32) * 30):
    (k,) = _kernels_of(Tensor(x).softmax(1))
    assert _stored(k) and k.source.count(EXP_MARK) == 1, k.opts
    with Context(NOOPT=1):
      (plain,) = _kernels_of(Tensor(x).softmax(1))
      assert not _stored(plain) and plain.source.count(EXP_MARK) == 2
    got = _same_bits(lambda t: t.softmax(1), x)
    np.testing.assert_allclose(got, torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-6, atol=1e-7)
  # the 64 rows of 1001 are split across the threads: every row's terms are stored and read back by the same thread
  if _threads() > 1: assert _split(_kernels_of(Tensor(_rows()).softmax(1))[0].program.meta)[1] > 1
  # rows of one element: a loop of one, not rewritten; still right
  one = RNG.standard_normal((5, 1)).astype(np.float32)
  np.testing.assert_array_equal(_same_bits(lambda t: t.softmax(1), one), np.ones((5, 1), np.float32))


def test_other_expensive_terms():
  """Not a softmax pattern: any term with a transcendental, summed along the row and reused at the same element."""
  x = RNG.standard_normal((48, 64)).astype(np.float32)
  cases = [(lambda t: t.exp() / t.exp().sum(1, keepdim=True), lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True)),
           (lambda t: t.sin() * t.sin().sum(1, keepdim=True), lambda a: np.sin(a) * np.sin(a).sum(1, keepdims=True))]
  for fn, ref in cases:
    (k,) = _kernels_of(fn(Tensor(x)))
    assert _stored(k), k.opts
    np.testing.assert_allclose(_same_bits(fn, x), ref(x), rtol=1e-5, atol=1e-5)
  # rows read transposed (a softmax along t's columns, stored row-major): the row loop is upcast too (its 8 sums add in
  # order, as without the pass, and NOOPT's one sum is vectorized: not the same bits), each copy stores its row's terms
  (k,) = _kernels_of(Tensor(x).T.softmax(1))
  assert _stored(k) and any(o.startswith("upcast global loop 0") for o in k.opts), k.opts
  np.testing.assert_allclose(Tensor(x).T.softmax(1).numpy(), torch.softmax(torch.from_numpy(x.T.copy()), 1).numpy(), rtol=1e-6, atol=1e-7)
  # float64: exp2 stays a libm call, as expensive
  x64 = x.astype(np.float64)
  (k,) = _kernels_of(Tensor(x64).softmax(1))
  assert _stored(k) and k.source.count("@llvm.exp2.f64(") == 2  # its declaration and one call
  np.testing.assert_allclose(_same_bits(lambda t: t.softmax(1), x64), torch.softmax(torch.from_numpy(x64), 1).numpy(), rtol=1e-12)


def test_where_it_does_not_apply():
  x = RNG.standard_normal((48, 64)).astype(np.float32)
  t, tt = Tensor(x), torch.from_numpy(x)
  cases = [(t.log_softmax(1), torch.log_softmax(tt, 1)),  # x - max - log(sum): a cheap term, recomputed
           ((t * 2) / (t * 2).sum(1, keepdim=True), (tt * 2) / (tt * 2).sum(1, keepdim=True)),
           (t.exp().flip(1) / t.exp().sum(1, keepdim=True), tt.exp().flip(1) / tt.exp().sum(1, keepdim=True)),  # another element's term
           (t.half().softmax(1), torch.softmax(tt.half().float(), 1).half()),  # computed in float32, stored in float16
           (t.softmax(0), torch.softmax(tt, 0)),  # a column softmax: its reductions are kernels of their own
           (Tensor(x.reshape(4, 12, 64)).softmax(1), torch.softmax(tt.reshape(4, 12, 64), 1))]
  for got, want in cases:
    assert not any(_stored(k) for k in _kernels_of(got))
    np.testing.assert_allclose(got.numpy().astype(np.float32), want.numpy().astype(np.float32), rtol=2e-3, atol=1e-6)
  # an in-place assignment whose value reads its target elementwise: the target is another parameter, maybe the output itself
  y = RNG.standard_normal((48, 64)).astype(np.float32)
  target = Tensor(x.copy()).realize()
  target.assign(Tensor(y).softmax(1) * 3 + target)
  assert not any(_stored(k) for k in _kernels_of(target))
  np.testing.assert_allclose(target.numpy(), torch.softmax(torch.from_numpy(y), 1).numpy() * 3 + x, rtol=1e-5, atol=1e-6)


def _lowered_softmax(x: np.ndarray) -> UOp:
  (k,) = _kernels_of(Tensor(x).softmax(1))
  return lower_kernel(next(key[0] for key, v in _kernels.items() if v is k))


def test_reduction_must_run_once_per_row():
  """The row loop and the output loop swapped (the reduction now inside the loop whose elements it would store): left alone."""
  low = _lowered_softmax(RNG.standard_normal((8, 16)).astype(np.float32))
  assert store_terms(low)[1]
  row, col = sorted((n for n in toposort([low]) if n.op is Ops.RANGE and n.arg[2] == "global"), key=lambda r: r.arg[0])
  swapped = substitute(low, {row: UOp(Ops.RANGE, row.dtype, (), (1, 8, "global")), col: UOp(Ops.RANGE, col.dtype, (), (0, 16, "global"))})
  assert store_terms(swapped) == (swapped, [])


def test_affine_index():
  r, g = UOp(Ops.RANGE, dtypes.int32, (), (0, 8, "global")), UOp(Ops.RANGE, dtypes.int32, (), (1, 16, "global"))
  for idx in (g, r * 16 + g, g * 3, g * 3 + r, g + 5):
    assert _affine_in(idx, g), idx
  for idx in (r * 16, g.alu(Ops.MOD, UOp.const(dtypes.int32, 4)) + r * 16, g + g, UOp(Ops.MUL, dtypes.int32, (g, UOp.const(dtypes.int32, 0)))):
    assert not _affine_in(idx, g), idx


def test_python_renderer_runs_the_rewritten_kernel():
  """Every loop a broadcast axis: the STORE inside the sum's axis writes every term at once, the output loop reads them."""
  x = RNG.standard_normal((8, 16)).astype(np.float32)
  x[1, 3] = np.nan
  x[2] = -np.inf
  low = _lowered_softmax(x)
  outs = []
  for sink in (low, store_terms(low)[0]):
    scope = dict(KERNEL_GLOBALS)
    exec(render_python("kernel", linearize(sink)), scope)
    out = np.zeros(x.size, np.float32)
    with np.errstate(invalid="ignore"): scope["kernel"](out, x.reshape(-1))  # -inf - -inf in the all -inf row
    outs.append(out.reshape(x.shape))
  np.testing.assert_array_equal(outs[1], outs[0])
  np.testing.assert_allclose(outs[1], torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-6, atol=1e-7)


def test_softmax_gradient(device):
  x = RNG.standard_normal((16, 1001)).astype(np.float32)
  assert_close_to_torch(lambda t: t.softmax(1), [x], device=device)
  # the forward realized alone (the rewritten kernel), then its backward
  t, w = Tensor(x, device=device, requires_grad=True), RNG.uniform(0.5, 1.5, x.shape).astype(np.float32)
  y = t.softmax(1).realize()
  (y * Tensor(w, device=device)).sum().backward()
  tt = torch.from_numpy(x).requires_grad_()
  (torch.softmax(tt, 1) * torch.from_numpy(w)).sum().backward()
  np.testing.assert_allclose(y.numpy(), torch.softmax(tt, 1).detach().numpy(), rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-4, atol=1e-7)
