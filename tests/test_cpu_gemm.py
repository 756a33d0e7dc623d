"""The CPU's blocked GEMM form of matrix products (codegen/gemm_match.py, cpu_gemm.py): which kernels take it, and that they compute right.

Results are compared with float64 numpy (odd sizes leave partial row tiles and zero-padded b panels;
transposed, broadcast and batched operands; fused epilogues; NaN and inf) and, forward and
gradient, with PyTorch on CPU and PYTHON. Integer-valued data sums exactly in any order, so there the
GEMM must give the same bits as the generic loop nest under NOOPT=1.
"""
import re
import numpy as np
import pytest
import picograd
from picograd import Tensor, Context
from picograd.codegen.gemm_match import match_gemm, MR, MIN_MACS, KC
from picograd.codegen.kernel import render
from picograd.codegen.lower import lower_kernel
from picograd.codegen.transcendental import approximate_transcendentals
from picograd.engine.compile import _kernels
from picograd.engine.realize import schedule
from gradcheck import assert_close_to_torch

RNG = np.random.default_rng(0)


def _ast(t: Tensor, last: bool = False):
  """The kernel graph of the one kernel that realizes `t` (with `last`: of the last of its kernels), as the compile cache keys it."""
  steps = [s for s in schedule(t) if s.kernel is not None]
  if not last: (step,) = steps
  return next(key[0] for key, k in _kernels.items() if k is steps[-1].kernel)


def _opts(t: Tensor, last: bool = False) -> list[str]: return render(_ast(t, last), "CPU")[4]["opts"]


def _ref(a: np.ndarray, b: np.ndarray) -> np.ndarray: return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


def _rand(*shape: int) -> np.ndarray: return RNG.standard_normal(shape).astype(np.float32)


def test_which_kernels_are_gemms():
  a, b = Tensor(_rand(64, 48)).realize(), Tensor(_rand(48, 96)).realize()
  # (the panels are 32 columns wide with AVX-512, 16 with AVX2)
  assert re.match(r"gemm 64x96x48: b packed in 48x(16|32) panels", _opts(a @ b)[0]) and "a read in place" in _opts(a @ b)[0]
  assert "a packed k-major" in _opts(a.T.contiguous().realize().T @ b)[0]  # a transposed
  assert _opts((a @ b + 1).relu())[0].startswith("gemm")  # elementwise work after the sum is the epilogue
  assert _opts(Tensor(_rand(3, 64, 48)) @ b)[0].startswith("gemm 192x96x48")  # the batch merged into the rows
  assert _opts(Tensor(_rand(3, 64, 48)) @ Tensor(_rand(3, 48, 96)))[0].startswith("gemm 3 x 64x96x48")
  assert not any(o.startswith("gemm") for o in _opts(Tensor(_rand(8, 8)) @ Tensor(_rand(8, 8))))  # too small: upcast tiles
  assert not any(o.startswith("gemm") for o in _opts(a.sum(1)))
  d = a.unsqueeze(1) - b.T.unsqueeze(0)
  assert not any(o.startswith("gemm") for o in _opts((d * d).sum(-1)))  # squared distances: no factor without j
  # elementwise work on an operand is computed while packing it: relu(b), a relu gradient's mask on a
  for t, want, how in (((a @ b.relu()), a.numpy() @ np.maximum(b.numpy(), 0), "b computed"),
                       ((a * (a > 0.5)) @ b, (a.numpy() * (a.numpy() > 0.5)) @ b.numpy(), "a computed")):
    assert _opts(t)[0].startswith("gemm 64x96x48") and how in _opts(t)[0]
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-4, atol=1e-4)
  i = Tensor(RNG.integers(-3, 3, (64, 48)).astype(np.int32)).realize()
  assert not any(o.startswith("gemm") for o in _opts(i @ i.T))  # int32: the generic loop nest
  assert match_gemm(approximate_transcendentals(lower_kernel(_ast((a @ b).exp())))) is not None
  with Context(NOOPT=1): assert render(_ast(a @ b), "CPU")[4]["opts"] == ["outer loop of 64 splittable across threads (the runtime splits from enough work)"]
  assert 64 * 96 * 48 >= MIN_MACS > 8 * 8 * 8


# (m, k, n): a partial row tile and a partial panel, fewer rows than a tile, one reduction step, a 1000^3 product with remainders everywhere
SHAPES = [(129, 65, 257), (MR - 1, 256, 250), (100, 1, 4000), (2 * MR + 1, 1024, 31), (1000, 1000, 1000)]


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_gemm_matches_numpy(m, k, n):
  a, b = _rand(m, k), _rand(k, n)
  x, y = Tensor(a), Tensor(b)
  tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(k))
  np.testing.assert_allclose((x @ y).numpy(), _ref(a, b), **tol)
  if m * n * k > 10 ** 8: return
  np.testing.assert_allclose((x @ Tensor(b.T.copy()).T).numpy(), _ref(a, b), **tol)  # x @ W.T
  np.testing.assert_allclose((Tensor(a.T.copy()).T @ y).numpy(), _ref(a, b), **tol)  # a.T @ g
  np.testing.assert_allclose((x @ y).T.numpy(), _ref(a, b).T, **tol)


def test_gemm_epilogue_batches_and_views():
  x, w, bias = _rand(4, 50, 48), _rand(96, 48), _rand(96)
  ref = _ref(x.reshape(200, 48), w.T).reshape(4, 50, 96) + bias
  np.testing.assert_allclose((Tensor(x) @ Tensor(w).T + Tensor(bias)).relu().numpy(), np.maximum(ref, 0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose((Tensor(x).linear(Tensor(w), Tensor(bias)) * 2).half().float().numpy(),
                             (2 * ref).astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)
  a, b = _rand(3, 64, 48), _rand(3, 48, 96)
  np.testing.assert_allclose((Tensor(a) @ Tensor(b)).numpy(), _ref(a, b), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose((Tensor(a) @ Tensor(b[0])).numpy(), _ref(a, b[0]), rtol=1e-4, atol=1e-4)  # b broadcast
  np.testing.assert_allclose((Tensor(a[0]) @ Tensor(b)).numpy(), _ref(a[0], b), rtol=1e-4, atol=1e-4)  # a broadcast
  c, d = _rand(2, 3, 40, 72), _rand(2, 1, 72, 96)
  np.testing.assert_allclose((Tensor(c) @ Tensor(d)).numpy(), _ref(c, d), rtol=1e-4, atol=1e-4)
  # flipped rows of a and k of b (negative strides); b batched over the inner batch only, which a batches over too
  e = _rand(3, 72, 96)
  t = Tensor(c)[:, :, ::-1] @ Tensor(e)[:, ::-1]
  assert _opts(t)[0].startswith("gemm 2x3 x 40x96x72")
  np.testing.assert_allclose(t.numpy(), _ref(c[:, :, ::-1], e[:, ::-1]), rtol=1e-4, atol=1e-4)
  # sliced and strided operands
  e, f = _rand(90, 70), _rand(80, 300)
  np.testing.assert_allclose((Tensor(e)[::2, 3:67] @ Tensor(f)[5:69, 1::3]).numpy(), _ref(e[::2, 3:67], f[5:69, 1::3]), rtol=1e-4, atol=1e-4)


def test_gemm_exact_and_nan_inf():
  a, b = RNG.integers(-4, 5, (77, 70)).astype(np.float32), RNG.integers(-4, 5, (70, 60)).astype(np.float32)
  got = (Tensor(a) @ Tensor(b)).numpy()
  with Context(NOOPT=1): ref = (Tensor(a) @ Tensor(b)).numpy()
  np.testing.assert_array_equal(got, a @ b)
  np.testing.assert_array_equal(got, ref)
  a[3, 5], a[76, 0], b[7, 44] = np.nan, np.inf, np.inf  # a NaN row, an inf row, an inf column (inf * 0 is NaN)
  b[0, 2] = 0.0
  with np.errstate(invalid="ignore"): want = a.astype(np.float64) @ b.astype(np.float64)
  np.testing.assert_array_equal(np.isnan((Tensor(a) @ Tensor(b)).numpy()), np.isnan(want))
  np.testing.assert_array_equal((Tensor(a) @ Tensor(b)).numpy()[~np.isnan(want)], want[~np.isnan(want)].astype(np.float32))


def test_linear_relu_grads_match_torch(device):
  torch = pytest.importorskip("torch")
  x, w, bias = _rand(2, 40, 48), _rand(72, 48), _rand(72)
  assert_close_to_torch(lambda x, w, b: (x @ w.T + b).relu(), [x, w, bias],
                        lambda x, w, b: torch.relu(x @ w.T + b), device=device, rtol=1e-4)


def test_gemm_with_avx2_vectors(monkeypatch):
  """Hosts without AVX-512 get 8-lane vectors (this one has AVX-512: LLVM runs the 8-lane kernel just as well)."""
  import picograd.codegen.gemm_match as gemm_match
  monkeypatch.setattr(gemm_match, "vector_lanes", lambda: 8)
  a, b, c = _rand(37, 283), _rand(283, 29), _rand(29)
  with Context(CACHE=0):  # a fresh render: the disk's spec cache does not know the lanes
    t = (Tensor(a) @ Tensor(b) + Tensor(c)) * 3  # a shape no other test builds, so no kernel of another width is reused
    (step,) = [s for s in schedule(t) if s.kernel is not None]
    assert "<8 x float>" in step.kernel.source and "<16 x float>" not in step.kernel.source
    np.testing.assert_allclose(t.numpy(), (_ref(a, b) + c) * 3, rtol=1e-4, atol=1e-4)


def test_sum_over_two_loops_is_one_k():
  """A weight gradient sums over batch and time: two reduction loops the operands step through as one (K = 8 * 16)."""
  x, g = _rand(8, 16, 40), _rand(8, 16, 64)
  t = (Tensor(g).unsqueeze(-1) * Tensor(x).unsqueeze(-2)).sum((0, 1))
  assert _opts(t)[0].startswith("gemm 64x40x128")
  np.testing.assert_allclose(t.numpy(), _ref(g.reshape(128, 64).T, x.reshape(128, 40)), rtol=1e-4, atol=1e-4)
  # over a padded time axis the loads are gated: both operands are computed while packing, the loops as they are
  pad = ((0, 0), (0, 2), (0, 0))
  t = (Tensor(g).pad(pad).unsqueeze(-1) * Tensor(x).pad(pad).unsqueeze(-2)).sum((0, 1))
  assert _opts(t)[0].startswith("gemm 64x40x144")
  np.testing.assert_allclose(t.numpy(), _ref(g.reshape(128, 64).T, x.reshape(128, 40)), rtol=1e-4, atol=1e-4)


def test_convolution_as_one_gemm():
  """A 3x3 convolution is a sum of 9 shifted-view products: on the CPU one GEMM over K = 9 x C_in, the pad gates computed
  while packing (its gradients are checked against PyTorch in tests/test_conv.py)."""
  torch = pytest.importorskip("torch")
  x, w, bias = _rand(2, 16, 14, 40), _rand(48, 16, 3, 3), _rand(48)
  t = Tensor(x).conv2d(Tensor(w), Tensor(bias), padding=1).relu()
  assert _opts(t)[0].startswith("gemm 2x14 x 40x48x144 (9 sums)")
  want = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias), padding=1)).numpy()
  np.testing.assert_allclose(t.numpy(), want, rtol=1e-4, atol=1e-4)


def test_long_sums_run_in_k_blocks():
  """Sums longer than KC run in equal K blocks (the last shorter), each tile's partial sums kept between them and the
  epilogue applied after the last: K = 2 * KC + 77 is 3 blocks. In k order throughout, so integer-valued data gives
  the loop nest's bits."""
  m, k, n = 40, 2 * KC + 77, 50
  a, b, c = _rand(m, k), _rand(k, n), _rand(n)
  tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(k))
  t = (Tensor(a) @ Tensor(b) + Tensor(c)).relu()
  assert f"K in blocks of {-(-k // 3)}" in _opts(t)[0] and "a read in place" in _opts(t)[0]
  np.testing.assert_allclose(t.numpy(), np.maximum(_ref(a, b) + c, 0), **tol)
  t = Tensor(a.T.copy()).T @ Tensor(b)  # a transposed: packed k-major a block at a time
  assert "a packed k-major" in _opts(t)[0]
  np.testing.assert_allclose(t.numpy(), _ref(a, b), **tol)
  np.testing.assert_allclose((Tensor(a) @ Tensor(b.T.copy()).T).numpy(), _ref(a, b), **tol)  # x @ W.T
  # b batched: packed again for each batch in each K block
  a3, b3 = _rand(2, 33, k), _rand(2, k, 40)
  np.testing.assert_allclose((Tensor(a3) @ Tensor(b3)).numpy(), _ref(a3, b3), **tol)
  # a weight gradient summed over batch and time (K = 4 * 600)
  x, g = _rand(4, 600, 36), _rand(4, 600, 40)
  t = (Tensor(g).unsqueeze(-1) * Tensor(x).unsqueeze(-2)).sum((0, 1))
  assert _opts(t)[0].startswith("gemm 40x36x2400") and "K in blocks of 800" in _opts(t)[0]
  np.testing.assert_allclose(t.numpy(), _ref(g.reshape(2400, 40).T, x.reshape(2400, 36)), rtol=1e-4, atol=1e-4 * np.sqrt(2400))
  ia, ib = RNG.integers(-4, 5, (m, k)).astype(np.float32), RNG.integers(-4, 5, (k, n)).astype(np.float32)
  got = (Tensor(ia) @ Tensor(ib)).numpy()
  with Context(NOOPT=1): ref = (Tensor(ia) @ Tensor(ib)).numpy()
  np.testing.assert_array_equal(got, ia @ ib)
  np.testing.assert_array_equal(got, ref)


def test_k_blocks_cut_through_a_convolutions_sums(monkeypatch):
  """A block boundary inside one of a convolution's 9 sums (KC = 40: K = 9 x 7 = 63 in blocks of 32 and 31): each block
  packs the parts of the terms it holds, pad gates computed."""
  torch = pytest.importorskip("torch")
  import picograd.codegen.gemm_match as gemm_match
  monkeypatch.setattr(gemm_match, "KC", 40)
  x, w, bias = _rand(2, 7, 9, 37), _rand(120, 7, 3, 3), _rand(120)
  with Context(CACHE=0):  # a fresh render (the disk's spec cache does not know KC), of shapes no other test builds
    t = Tensor(x).conv2d(Tensor(w), Tensor(bias), padding=1).relu()
    assert _opts(t)[0].startswith("gemm 2x9 x 37x120x63 (9 sums)") and "K in blocks of 32" in _opts(t)[0]
    want = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias), padding=1)).numpy()
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-4, atol=1e-4)


def test_convolution_input_gradient_as_gemm():
  """A padded 3x3 convolution's input gradient is 9 sums, each zero where its view of dy falls in the padding: one GEMM
  over K = 9 x C_out whose row operand carries the gate (the weight's loads lose the gate lowering gave them: their index
  never leaves the weight). Integer-valued data: exact. Padding zeros take part in products, as in the forward: a weight
  of inf gives NaN where its window reaches the padding (PyTorch leaves those terms out: inf there)."""
  torch = pytest.importorskip("torch")
  x, g, w = (RNG.integers(-3, 4, shape).astype(np.float32) for shape in ((2, 32, 28, 29), (2, 48, 28, 29), (48, 32, 3, 3)))
  xt = Tensor(x, requires_grad=True).realize()
  gx = xt.conv2d(Tensor(w), padding=1).gradient(xt, gradient=Tensor(g))[0]
  assert _opts(gx)[0].startswith("gemm 2x28 x 29x32x432 (9 sums)"), _opts(gx)
  tx = torch.from_numpy(x).double().requires_grad_(True)
  torch.nn.functional.conv2d(tx, torch.from_numpy(w).double(), padding=1).backward(torch.from_numpy(g).double())
  np.testing.assert_array_equal(gx.numpy(), tx.grad.numpy().astype(np.float32))
  w[0, 0, 0, 0] = np.inf
  got = xt.conv2d(Tensor(w), padding=1).gradient(xt, gradient=Tensor(g))[0].numpy()
  tx.grad = None
  torch.nn.functional.conv2d(tx, torch.from_numpy(w).double(), padding=1).backward(torch.from_numpy(g).double())
  want = tx.grad.numpy().astype(np.float32)
  extra = np.isnan(got) & ~np.isnan(want)  # offset (0, 0) reads dy at (y + 1, x + 1): padding at the last row and column
  border = np.zeros_like(extra)
  border[:, 0, -1, :] = border[:, 0, :, -1] = True
  assert extra.any() and not (extra & ~border).any()
  np.testing.assert_array_equal(got[~extra], want[~extra])


def test_convolution_weight_gradient_as_gemm():
  """A 3x3 convolution's weight gradient is 9 sums, each padded into its kernel offset: a GEMM batched over the offsets,
  each offset's tiles summing only its own term (K = 2 x 28 x 29 = 1624: two K blocks). dy, the same in every term, is
  b (packed once for all offsets; the shifted input, which differs, is a): rows are the 16 input channels. Integer-valued
  data: exact, and the loop nest's bits under NOOPT=1."""
  torch = pytest.importorskip("torch")
  x, g = RNG.integers(-3, 4, (2, 16, 28, 29)).astype(np.float32), RNG.integers(-3, 4, (2, 48, 28, 29)).astype(np.float32)
  w = Tensor(_rand(48, 16, 3, 3), requires_grad=True).realize()
  xt, gt = Tensor(x).realize(), Tensor(g).realize()
  gw = xt.conv2d(w, padding=1).gradient(w, gradient=gt)[0]
  assert _opts(gw)[0].startswith("gemm 3x3 x 16x48x1624 (9 sums, one a batch value by its gate, b the same for all)"), _opts(gw)
  assert "K in blocks of 812" in _opts(gw)[0]
  tx, tw = torch.from_numpy(x).double(), torch.zeros(48, 16, 3, 3, dtype=torch.float64, requires_grad=True)
  torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.from_numpy(g).double())
  got = gw.numpy()
  np.testing.assert_array_equal(got, tw.grad.numpy().astype(np.float32))
  with Context(NOOPT=1): np.testing.assert_array_equal(got, xt.conv2d(w, padding=1).gradient(w, gradient=gt)[0].numpy())


@pytest.mark.parametrize("lanes", [8, 16])
def test_convolution_packs_vectors_at_odd_sizes(monkeypatch, lanes):
  """The computed operands of a convolution's three GEMMs are packed as vector code (`cpu_vector.Vector`, pad gates as
  masked loads): the forward's and input gradient's shifted views a tile's rows along the lanes (45 rows: a partial last
  tile), the weight gradient's k along the lanes in runs of the 45-wide rows (K = 2 x 13 x 45 in two blocks of 585, which
  cut the runs), weights and dy columns along them (40 and 20 columns: partial panels). For 8 and 16 lanes (AVX2 and
  AVX-512 layouts; LLVM splits 16-lane vectors on a host without AVX-512). Integer-valued data: exact."""
  torch = pytest.importorskip("torch")
  import picograd.codegen.gemm_match as gemm_match
  monkeypatch.setattr(gemm_match, "vector_lanes", lambda: lanes)
  x, w, g = (RNG.integers(-3, 4, s).astype(np.float32) for s in ((2, 20, 13, 45), (40, 20, 3, 3), (2, 40, 13, 45)))
  with Context(CACHE=0):  # a fresh render: the disk's spec cache does not know the lanes
    xt, wt = Tensor(x, requires_grad=True).realize(), Tensor(w, requires_grad=True).realize()
    out = xt.conv2d(wt, padding=1)
    gx, gw = out.gradient(xt, wt, gradient=Tensor(g))
    assert _opts(out)[0].startswith("gemm 2x13 x 45x40x180 (9 sums)"), _opts(out)
    assert _opts(gx)[0].startswith("gemm 2x13 x 45x20x360 (9 sums)"), _opts(gx)
    assert _opts(gw)[0].startswith("gemm 3x3 x 20x40x1170 (9 sums, one a batch value by its gate, b the same for all)"), _opts(gw)
    tx, tw = (torch.from_numpy(v).double().requires_grad_(True) for v in (x, w))
    want = torch.nn.functional.conv2d(tx, tw, padding=1)
    want.backward(torch.from_numpy(g).double())
    for got, ref in ((out, want), (gx, tx.grad), (gw, tw.grad)): np.testing.assert_array_equal(got.numpy(), ref.detach().numpy().astype(np.float32))


def test_short_runs_of_k_pack_rows_along_the_lanes():
  """A computed operand whose loads step along k (a weight gradient over a padded time axis of 4 steps) packs k along the
  lanes in runs of the innermost reduction loop; runs shorter than a vector take a tile's rows along the lanes instead.
  Integer-valued data: the loop nest's bits."""
  x, g = (RNG.integers(-3, 4, s).astype(np.float32) for s in ((40, 3, 36), (40, 3, 64)))
  pad = ((0, 0), (0, 1), (0, 0))
  t = (Tensor(g).pad(pad).unsqueeze(-1) * Tensor(x).pad(pad).unsqueeze(-2)).sum((0, 1))
  assert _opts(t)[0].startswith("gemm 64x36x160"), _opts(t)
  got = t.numpy()
  np.testing.assert_array_equal(got, g.reshape(120, 64).T @ x.reshape(120, 36))
  with Context(NOOPT=1): np.testing.assert_array_equal(got, (Tensor(g).pad(pad).unsqueeze(-1) * Tensor(x).pad(pad).unsqueeze(-2)).sum((0, 1)).numpy())


def test_one_hot_sums_as_masked_gemm():
  """An embedding's gradient sums where(index == v, dy, 0) over the tokens: a GEMM whose one operand is the mask's bits and
  whose tile adds `and`s of them with dy's. In k order as the loop nest adds, so the same bits (integer data); a NaN or
  inf in dy reaches only its token's row, as the select gives (and PyTorch's index_add); the where written with the
  value in the false branch too."""
  torch = pytest.importorskip("torch")
  V, D = 65, 64
  idx = RNG.integers(0, V, (32, 32)).astype(np.int32)
  w, g = _rand(V, D), RNG.integers(-3, 4, (32, 32, D)).astype(np.float32)
  g[3, 5, 7], g[10, 1, 2] = np.nan, np.inf
  wt, it, gt = Tensor(w, requires_grad=True).realize(), Tensor(idx).realize(), Tensor(g).realize()
  gw = wt[it].gradient(wt, gradient=gt)[0]
  assert _opts(gw, last=True)[0].startswith(f"gemm {V}x{D}x1024 of where(mask, value, 0)"), _opts(gw, last=True)  # after the indices' wrap
  got = gw.numpy()
  tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
  tw[torch.from_numpy(idx).long()].backward(torch.from_numpy(g).double())
  np.testing.assert_array_equal(got, tw.grad.numpy().astype(np.float32))
  assert np.isnan(got).sum() == 1 and np.isinf(got).sum() == 1
  with Context(NOOPT=1): np.testing.assert_array_equal(got, wt[it].gradient(wt, gradient=gt)[0].numpy())
  others = (it.unsqueeze(0) != Tensor(np.arange(V, dtype=np.int32)).reshape(V, 1, 1)).unsqueeze(-1).realize()
  t = picograd.where(others, 0.0, gt.unsqueeze(0)).sum((1, 2))
  assert "of where(mask, value, 0)" in _opts(t)[0], _opts(t)
  np.testing.assert_array_equal(t.numpy(), got)


def test_few_rows_against_a_large_b_take_the_other_side_as_rows():
  """A 27-class output layer's weight gradient, dlogits.T @ h (27 x 512 against 512 x 200): 27 rows would each have every
  thread pack all 102,400 elements of h, so the product runs with h's 200 columns as the rows and dlogits as b (the loop
  nest took 0.75 ms of makemore's 1.3 ms batch-512 step). Integer-valued data: exact."""
  dl, h = RNG.integers(-3, 4, (512, 27)).astype(np.float32), RNG.integers(-3, 4, (512, 200)).astype(np.float32)
  t = Tensor(dl).T @ Tensor(h)
  assert _opts(t)[0].startswith("gemm 200x27x512"), _opts(t)
  np.testing.assert_array_equal(t.numpy(), dl.T @ h)


def test_a_batch_sharing_b_counts_its_products_together():
  """x @ W over a batch of sequences whose view keeps the batch a loop of its own (a permuted view: 32 rows a batch value,
  32 x 64 x 64 = 131,072 multiply-adds each, under MIN_MACS alone): W is packed once for all batch values, so their
  products count together and the kernel is a GEMM (the GPT's attention output projection was a loop nest)."""
  x, w = RNG.integers(-3, 4, (32, 32, 64)).astype(np.float32), RNG.integers(-3, 4, (64, 64)).astype(np.float32)
  assert 32 * 64 * 64 < MIN_MACS
  t = Tensor(x).permute(1, 0, 2) @ Tensor(w)
  assert _opts(t)[0].startswith("gemm 32 x 32x64x64"), _opts(t)
  np.testing.assert_array_equal(t.numpy(), x.transpose(1, 0, 2) @ w)


def test_reshaped_sequences_are_plain_loads():
  """A weight gradient over (batch, time) reshaped to rows, q.reshape(1024, 64).T @ x.reshape(1024, 64): the lowered index
  ((k*64 + i) // 2048) * 2048 + (k % 32) * 64 + i simplifies to k*64 + i, so both operands are plain strided loads (before,
  both were computed, a's through LLVM's scalarized gathers: 2-3x slower)."""
  q, x = _rand(32, 32, 64), _rand(32, 32, 64)
  t = Tensor(q).reshape(1024, 64).T @ Tensor(x).reshape(1024, 64)
  assert _opts(t)[0].startswith("gemm 64x64x1024: b packed") and "a packed k-major" in _opts(t)[0], _opts(t)
  np.testing.assert_allclose(t.numpy(), _ref(q.reshape(1024, 64).T, x.reshape(1024, 64)), rtol=1e-4, atol=1e-3)
