"""The CPU's performance passes: vectorizable exp2/log2/sin (codegen/transcendental.py) and upcasting (codegen/opt.py).

The polynomials are checked in ulps against float64 numpy over wide ranges and at the special
values libm defines; the optimizer must not change any result (NOOPT=1 gives the same bits on
integer-valued data, where every summation order is exact) on awkward matrix shapes.
"""
import numpy as np
import pytest
from picograd import Tensor, Context, dtypes
from picograd.codegen.kernel import render
from picograd.engine.compile import _kernels
from picograd.codegen.lower import lower_kernel
from picograd.codegen.opt import plan_upcasts, split_gated_loops, optimize
from picograd.codegen.linearize import linearize
from picograd.engine.realize import schedule
from picograd.ir.ops import Ops

RNG = np.random.default_rng(0)
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, 1.1754944e-38, 3.4e38, -3.4e38, 1.0, -1.0, 0.5, 2.0]


def ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """Distance of float32 results from float64 references in units of the float32 spacing at the reference."""
  with np.errstate(all="ignore"):
    ref32 = ref.astype(np.float32)
    same = (got == ref32) | (np.isnan(got) & np.isnan(ref32))
    d = np.abs(got.astype(np.float64) - ref) / np.spacing(np.abs(ref32)).astype(np.float64)
  return np.where(same, 0.0, d)


def run(fn: str, x: np.ndarray) -> np.ndarray: return getattr(Tensor(x), fn)().numpy()


def test_exp2_float32():
  edges = [128.0, 127.99999, -149.0, -150.0, -126.5]
  x = np.concatenate([RNG.uniform(-155, 130, 200_000), RNG.uniform(-1, 1, 20_000), SPECIAL, edges]).astype(np.float32)
  with np.errstate(all="ignore"): ref = np.exp2(x.astype(np.float64))
  assert ulps(run("exp2", x), ref).max() <= 1.5  # elementwise code is not FMA-contracted (see codegen/llvm.py)
  np.testing.assert_array_equal(run("exp2", np.array([-np.inf, np.inf, np.nan, 0.0, 200.0, -200.0], np.float32)),
                                [0.0, np.inf, np.nan, 1.0, np.inf, 0.0])


def test_log2_float32():
  x = np.concatenate([np.exp(RNG.uniform(-103, 88.7, 200_000)), RNG.uniform(0.5, 2, 20_000), SPECIAL, -RNG.uniform(0, 10, 100)]).astype(np.float32)
  with np.errstate(all="ignore"): ref = np.log2(x.astype(np.float64))
  assert ulps(run("log2", x), ref).max() <= 1.0
  np.testing.assert_array_equal(run("log2", np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, 1.0, 1e-45], np.float32)),
                                [-np.inf, -np.inf, np.inf, np.nan, np.nan, np.nan, 0.0, -149.0])


def test_sin_float32():
  x = np.concatenate([RNG.uniform(-10, 10, 200_000), RNG.uniform(-1e5, 1e5, 50_000), SPECIAL[:9]]).astype(np.float32)
  with np.errstate(all="ignore"): ref = np.sin(x.astype(np.float64))
  got = run("sin", x)
  assert ulps(got, ref)[np.abs(ref) > 1e-3].max() <= 2.0
  assert np.nanmax(np.abs(got - ref)) <= 1e-7
  assert np.isnan(got[np.isin(x, [np.inf, -np.inf]) | np.isnan(x)]).all()
  # far arguments: accurate below 2^29, then at least bounded
  far = RNG.uniform(-5e8, 5e8, 10_000).astype(np.float32)
  assert np.abs(run("sin", far) - np.sin(far.astype(np.float64))).max() <= 1e-6
  huge = np.array([1e12, -3e20, 3.4e38], np.float32)
  assert (np.abs(run("sin", huge)) <= 1.0).all()


@pytest.mark.parametrize("dtype, tol", [(dtypes.float16, 1e-3), (dtypes.bfloat16, 1e-2), (dtypes.float64, 1e-14)])
def test_other_float_dtypes(dtype, tol):
  x = RNG.uniform(0.1, 8, 1000)
  t = Tensor(x.astype(np.float32)).cast(dtype)
  xs = t.cast(dtypes.float64).numpy()
  for fn, ref in (("exp2", np.exp2), ("log2", np.log2), ("sin", np.sin)):
    np.testing.assert_allclose(getattr(t, fn)().cast(dtypes.float64).numpy(), ref(xs), rtol=tol, atol=tol)


def test_composites_match_numpy():
  x = RNG.standard_normal(10_000).astype(np.float32) * 5
  # exp(x) is exp2(x / ln 2): rounding x / ln 2 to float32 costs |x| ulps whatever exp2 does
  np.testing.assert_allclose(Tensor(x).exp().numpy(), np.exp(x), rtol=2e-6)
  np.testing.assert_allclose(Tensor(x).tanh().numpy(), np.tanh(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(Tensor(np.abs(x)).log().numpy(), np.log(np.abs(x)), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(Tensor(x).cos().numpy(), np.cos(x), atol=1e-6)


def _both(fn):
  """fn() with and without the optimizer."""
  with Context(NOOPT=1): ref = fn()
  return fn(), ref


MATMUL_SHAPES = [(64, 64, 64), (33, 17, 45), (1, 64, 96), (96, 64, 1), (7, 1, 5), (1, 1, 1), (128, 3, 200), (0, 5, 7), (5, 0, 7), (5, 7, 0),
                 (40, 200, 27)]


@pytest.mark.parametrize("m, k, n", MATMUL_SHAPES)
def test_matmul_noopt_identical(m, k, n):
  a = RNG.integers(-4, 5, (m, k)).astype(np.float32)
  b = RNG.integers(-4, 5, (k, n)).astype(np.float32)
  opt, ref = _both(lambda: (Tensor(a) @ Tensor(b)).numpy())
  np.testing.assert_array_equal(opt, ref)
  np.testing.assert_array_equal(opt, a @ b)


def test_matmul_float_close_and_transposed():
  a, b = RNG.standard_normal((96, 80)).astype(np.float32), RNG.standard_normal((80, 128)).astype(np.float32)
  np.testing.assert_allclose((Tensor(a) @ Tensor(b)).numpy(), a @ b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose((Tensor(a.T.copy()).T @ Tensor(b)).numpy(), a @ b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose((Tensor(a) @ Tensor(b.T.copy()).T).numpy(), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_matmul_other_dtypes(dtype):
  a, b = RNG.integers(-9, 9, (48, 24)).astype(dtype), RNG.integers(-9, 9, (24, 64)).astype(dtype)
  opt, ref = _both(lambda: (Tensor(a) @ Tensor(b)).numpy())
  np.testing.assert_array_equal(opt, a @ b)
  np.testing.assert_array_equal(ref, a @ b)


def test_batched_matmul_and_column_sums():
  a, b = RNG.integers(-3, 4, (3, 16, 8)).astype(np.float32), RNG.integers(-3, 4, (3, 8, 32)).astype(np.float32)
  opt, ref = _both(lambda: (Tensor(a) @ Tensor(b)).numpy())
  np.testing.assert_array_equal(opt, a @ b)
  np.testing.assert_array_equal(ref, a @ b)
  c = RNG.integers(-3, 4, (50, 96)).astype(np.float32)
  opt, ref = _both(lambda: (Tensor(c).sum(0), Tensor(c).max(0), (Tensor(c) * 2).sum(0, keepdim=True)))
  for o, r, want in zip(opt, ref, (c.sum(0), c.max(0), 2 * c.sum(0, keepdims=True))):
    np.testing.assert_array_equal(o.numpy(), want)
    np.testing.assert_array_equal(r.numpy(), want)
  # widened tiles (256 columns a block) over a batch loop, and a vector-matrix product
  d, v = RNG.integers(-3, 4, (4, 24, 2048)).astype(np.float32), RNG.integers(-3, 4, (1, 24)).astype(np.float32)
  opt, ref = _both(lambda: (Tensor(d).sum(1).numpy(), (Tensor(v) @ Tensor(d[0])).numpy()))
  for o, r, want in zip(opt, ref, (d.sum(1), v @ d[0])):
    np.testing.assert_array_equal(o, want)
    np.testing.assert_array_equal(r, want)


def _lowered(t: Tensor):
  """The lowered graph and the kernel graph of the one kernel that realizes `t`."""
  (step,) = [s for s in schedule(t) if s.kernel is not None]
  ast = next(key[0] for key, k in _kernels.items() if k is step.kernel)
  return lower_kernel(ast), ast


def test_plans():
  a, b = Tensor.rand(1024, 1024).realize(), Tensor.rand(1024, 1024).realize()
  mm = a @ b
  plan = sorted(f for _, f in plan_upcasts(_lowered(mm)[0]))
  assert plan == [4, 32]  # 4 rows x 32 columns of accumulators
  assert plan_upcasts(_lowered(a.sum(1))[0]) == []  # a row sum reads each element once: nothing to reuse
  assert plan_upcasts(_lowered(a + 1)[0]) == []  # elementwise: the loop vectorizer handles it
  # column sums and a vector-matrix product: one row of vectors across columns, widened (opt.WIDE_VECTORS) so each step
  # of the strided reduction reads a longer contiguous run, while 8 blocks of columns are left for the threads
  assert [f for _, f in plan_upcasts(_lowered(a.sum(0))[0])] == [128]
  assert [f for _, f in plan_upcasts(_lowered(a[:1] @ b)[0])] == [128]
  assert [f for _, f in plan_upcasts(_lowered(a.reshape(64, 16, 1024).sum(1))[0])] == [256]  # at most 16 vectors
  assert [f for _, f in plan_upcasts(_lowered(Tensor.rand(64, 256).realize().sum(0))[0])] == [32]  # 256 columns: 8 blocks of 32
  # a row softmax's or layer_norm's column loop runs after its row's reductions, enclosing none: the loop vectorizer's
  # (copies of its exp for SLP made softmax 5x slower)
  for rows in (a.softmax(1), a.layer_norm((1024,)), a.log_softmax(1)): assert plan_upcasts(_lowered(rows)[0]) == []
  # the upcast matmul keeps one loop over k with all 128 accumulators in it (rendered, a product this large is a GEMM instead)
  program = linearize(optimize(_lowered(mm)[0])[0])
  assert sum(u.op is Ops.DEFINE_ACC for u in program) == 128
  assert render(_lowered(mm)[1], "CPU")[4]["opts"][0].startswith("gemm 1024x1024x1024")
  assert sum(u.op is Ops.RANGE and u.arg[2] == "reduce" for u in program) == 1


def test_plans_odd_widths():
  """The makemore MLP's products: tiles LLVM's SLP vectorizer packs (a 27 x 4 tile stayed scalar, 6x slower)."""
  h, w2, g = Tensor.rand(512, 200).realize(), Tensor.rand(200, 27).realize(), Tensor.rand(512, 27).realize()
  assert [(r.arg[1], f) for r, f in plan_upcasts(_lowered(h @ w2)[0])] == [(27, 27)]  # one row of 27 columns
  # h.T @ g stores 27-wide rows, but h is contiguous along the 200 outputs: 8-lane vectors there, 9 columns of them
  assert [(r.arg[1], f) for r, f in plan_upcasts(_lowered(h.T @ g)[0])] == [(200, 8), (27, 9)]
  np.testing.assert_allclose((h.T @ g).numpy(), h.numpy().T @ g.numpy(), rtol=1e-4)


def _divmods(t: Tensor) -> int: return sum(n.op in (Ops.IDIV, Ops.MOD) for n in _lowered(t)[0].toposort())


def test_gated_load_index_folds():
  """Under a pad's gate the index folds as without the pad: i - 128 >= 0 there, so the reshape's div/mod of it simplify."""
  x = Tensor.rand(4, 32, 16).realize()
  heads = x.permute(1, 0, 2).reshape(32, 64)  # [head, time, dim] -> [time, head * dim], as attention's output
  assert _divmods(heads.pad(((0, 0), (128, 0))) + 1) == _divmods(heads + 1) == 2
  want = np.pad(x.numpy().transpose(1, 0, 2).reshape(32, 64), ((0, 0), (128, 0))) + 1
  np.testing.assert_array_equal((heads.pad(((0, 0), (128, 0))) + 1).numpy(), want)


def _gates(sink) -> int: return sum(n.op is Ops.WHERE for n in sink.toposort())


def test_split_concatenation_loops():
  """The fused q, k, v projection's gradients: a product over a concatenation splits into one gate-free copy per piece."""
  q, k, v = (Tensor(RNG.integers(-3, 4, (48, 64)).astype(np.float32)).realize() for _ in range(3))
  w, x = Tensor(RNG.integers(-3, 4, (192, 64)).astype(np.float32)).realize(), Tensor(RNG.integers(-3, 4, (48, 64)).astype(np.float32)).realize()
  qkv = np.concatenate([q.numpy(), k.numpy(), v.numpy()], 1)
  for make, want in ((lambda: Tensor.cat(q, k, v, dim=1) @ w, qkv @ w.numpy()),  # reduction loop over 192 = 3 x 64
                     (lambda: Tensor.cat(q, k, v, dim=1).T @ x, qkv.T @ x.numpy())):  # output loop over 192
    sink, _ = _lowered(make())
    assert _gates(sink) == 6  # each piece's load index and value
    split = split_gated_loops(sink)
    assert _gates(split) == 0
    assert sorted(r.arg[1] for r in split.toposort() if r.op is Ops.RANGE) == sorted([48, 64, 64])
    opt, ref = _both(lambda: make().numpy())
    np.testing.assert_array_equal(opt, want)
    np.testing.assert_array_equal(ref, want)


def test_plan_follows_the_majority_of_contiguous_loads():
  """Two loads contiguous along the reduction and one along the output: vectors along the reduction (no upcast)."""
  a, b, c = Tensor.rand(256, 64).realize(), Tensor.rand(256, 64).realize(), Tensor.rand(64, 256).realize()
  assert plan_upcasts(_lowered((a * b + c.T).sum(1))[0]) == []
  assert [f for _, f in plan_upcasts(_lowered((a + c.T).sum(1))[0])] == [32]  # one and one: vectors along the output
  np.testing.assert_allclose((a * b + c.T).sum(1).numpy(), (a.numpy() * b.numpy() + c.numpy().T).sum(1), rtol=1e-5)


def test_reduction_kernels_stream():
  """What a reduction at memory speed needs, read from the optimized LLVM IR: a row sum (contiguous along its reduction)
  runs on several independent vector accumulators (the loop vectorizer's, interleaved); a column sum (strided) keeps
  256 columns of accumulators, so each step of its reduction reads 1 KiB of contiguous memory (opt.WIDE_VECTORS)."""
  import re
  from picograd.runtime.device import get_device
  a = Tensor.rand(64, 4096).realize()
  for t, want in ((a.sum(1), None), (a.sum(0), 256)):
    (step,) = [s for s in schedule(t) if s.kernel is not None]
    lanes = [int(n) for n in re.findall(r"= phi <(\d+) x float>", str(get_device("CPU").compiler.optimize(step.kernel.source)))]
    assert all(n >= 8 for n in lanes) and len(lanes) >= 4, lanes
    if want is not None: assert sum(lanes) == want, lanes
    np.testing.assert_allclose(t.numpy(), a.numpy().sum(1 if want is None else 0), rtol=1e-5)
  # short rows: LLVM unrolls the row's loop; the row loop stays scalar (llvm.py _row_loops) so SLP packs each row into
  # vector loads and a horizontal sum, instead of the loop vectorizer's gather per element (6x slower)
  b = Tensor.rand(4096, 16).realize()
  for t in (b.sum(1), b.max(1), b.mean(1)):
    (step,) = [s for s in schedule(t) if s.kernel is not None]
    ir = str(get_device("CPU").compiler.optimize(step.kernel.source))
    assert "masked.gather" not in ir and re.search(r"load <\d+ x float>", ir), step.kernel.name
  np.testing.assert_allclose(b.sum(1).numpy(), b.numpy().sum(1), rtol=1e-6)
  np.testing.assert_array_equal(b.max(1).numpy(), b.numpy().max(1))
  # the sum adds with nsz but reads its accumulator back plus +0.0: a sum of -0.0s is +0.0, as PyTorch's
  assert not np.signbit(Tensor(np.full((64, 16), -0.0, np.float32)).sum(1).numpy()).any()
