"""Scans, sorting, scatter and einsum (picograd/frontend/scan.py, sort.py) against PyTorch: values, indices and gradients on every device."""
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor
from compare import assert_tensor, rand
from gradcheck import assert_close_to_torch

NAN, INF = float("nan"), float("inf")


def check(fn, *arrays, device, torch_fn=None, rtol=1e-4):
  """Forward and gradient of fn (same PyTorch spelling unless torch_fn is given) against PyTorch."""
  assert_close_to_torch(fn, [np.asarray(a, dtype=np.float32) for a in arrays], torch_fn, device=device, rtol=rtol)


def check_value(fn, *arrays, device, torch_fn=None):
  """Forward only, exact dtype and shape (NaNs must match)."""
  want = (torch_fn or fn)(*[torch.from_numpy(np.array(a)) for a in arrays])
  got = fn(*[Tensor(a, device=device) for a in arrays])
  if isinstance(want, tuple):
    for g, w in zip(got, want): assert_tensor(g, w.numpy())
  else: assert_tensor(got, want.numpy())


# ---------------------------------------------------------------- einsum, prod, all/any, roll, diagonals, meshgrid, repeat_interleave
A, B = rand((3, 4), seed=1), rand((4, 5), seed=2)
BATCH = rand((2, 3, 4), seed=3)
SQUARE = rand((3, 3), seed=4)


@pytest.mark.parametrize("eq, shapes", [
  ("ij,jk->ik", [(3, 4), (4, 5)]),         # matmul
  ("ij,jk", [(3, 4), (4, 5)]),             # implicit output
  ("ii->i", [(3, 3)]),                     # diagonal
  ("ii", [(3, 3)]),                        # trace
  ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
  ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 5)]),  # ellipsis with broadcasting
  ("i,j->ij", [(3,), (4,)]),               # outer product
  ("ij->", [(3, 4)]),
  ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
  ("ba...->...ab", [(3, 4, 2)]),
  ("i,i->", [(0,), (0,)]),                 # size-0 contraction
])
def test_einsum(device, eq, shapes):
  arrays = [rand(s, seed=i + 5) for i, s in enumerate(shapes)]
  check(lambda *xs: picograd.einsum(eq, *xs), *arrays, device=device, torch_fn=lambda *xs: torch.einsum(eq, *xs))


def test_einsum_errors():
  x = Tensor(SQUARE)
  for eq, ops in [("ij,jk->ik", [x]), ("ijk->i", [x]), ("ij->ii", [x]), ("ij->k", [x]), ("i1->i", [x]), ("ij,jk->ik", [x, Tensor(B)])]:
    with pytest.raises(RuntimeError): picograd.einsum(eq, *ops)


def test_prod(device):
  x = rand((3, 4), seed=7)
  x[0, 1] = 0          # one zero in a row: its gradient is the product of the others
  x[2, :2] = 0         # two zeros: all gradients of the row are 0
  for fn in [lambda t: t.prod(1), lambda t: t.prod(0, keepdim=True), lambda t: t.prod(), lambda t: t.prod(-1)]:
    check(fn, x, device=device)
  big = rand((20,), seed=8, low=0.5, high=1.5)  # more than one tree level
  check(lambda t: t.prod(0), big, device=device)
  check(lambda t: t.prod(1), np.zeros((2, 0), np.float32), device=device)
  check_value(lambda t: t.prod(0), np.array([[2, -3], [4, 5]], np.int32), device=device)  # int64 result
  check_value(lambda t: t.prod(), np.array([NAN, 0.0], np.float32), device=device)
  with pytest.raises(IndexError): Tensor(x).prod(2)


def test_all_any(device):
  x = np.array([[0, 1, 2], [3, 4, 5], [0, 0, 0]], np.float32)
  x[1, 1] = NAN  # NaN is nonzero
  for fn in [lambda t: t.any(1), lambda t: t.all(1), lambda t: t.any(), lambda t: t.all(0, keepdim=True), lambda t: t.any(-1, keepdim=True)]:
    check_value(fn, x, device=device)
  check_value(lambda t: t.all(1), np.zeros((2, 0), np.float32), device=device)
  check_value(lambda t: t.any(1), np.zeros((2, 0), bool), device=device)
  check_value(lambda t: t.all(), np.array([True, False]), device=device)
  with pytest.raises(IndexError): Tensor(x).any(3)


def test_roll(device):
  for fn in [lambda t: t.roll(1, 1), lambda t: t.roll(-5, 0), lambda t: t.roll((1, 2), (0, 1)), lambda t: t.roll(4),
             lambda t: t.roll(0, 1), lambda t: t.roll(2, 2)]:
    check(fn, BATCH, device=device)
  check(lambda t: t.roll(3, 1), np.zeros((2, 0), np.float32), device=device)
  with pytest.raises(IndexError): Tensor(BATCH).roll(1, 3)
  with pytest.raises(RuntimeError): Tensor(BATCH).roll((1, 2), (0,))


def test_diagonal_and_diag(device):
  for fn in [lambda t: t.diagonal(), lambda t: t.diagonal(1, 1, 2), lambda t: t.diagonal(-1, 0, 2), lambda t: t.diagonal(2, -1, -2),
             lambda t: t.diagonal(9)]:
    check(fn, BATCH, device=device)
  for k in (0, 1, -2):
    check(lambda t: t.diag(k), A, device=device)
    check(lambda t: t.diag(k), A[0], device=device)
  check(lambda t: t.diag(), np.zeros((0,), np.float32), device=device)
  check(lambda t: t.diag(1), np.ones((1,), np.float32), device=device)
  with pytest.raises(RuntimeError): Tensor(BATCH).diagonal(0, 1, 1)
  with pytest.raises(IndexError): Tensor(BATCH).diagonal(0, 0, 3)
  with pytest.raises(RuntimeError): Tensor(BATCH).diag()


def test_meshgrid(device):
  a, b, c = rand((3,), seed=9), rand((4,), seed=10), rand((1,), seed=11)
  for indexing in ("ij", "xy"):
    def fn(x, y, z, lib=picograd): return lib.stack(lib.meshgrid(x, y, z, indexing=indexing)) if lib is torch else \
      picograd.stack(list(picograd.meshgrid(x, y, z, indexing=indexing)))
    check(fn, a, b, c, device=device, torch_fn=lambda x, y, z: torch.stack(torch.meshgrid(x, y, z, indexing=indexing)))
  with pytest.raises(RuntimeError): picograd.meshgrid(Tensor(a), indexing="ab")


def test_repeat_interleave(device):
  for fn in [lambda t: t.repeat_interleave(2), lambda t: t.repeat_interleave(3, 1), lambda t: t.repeat_interleave(0, 0)]:
    check(fn, A, device=device)
  reps = np.array([1, 0, 3], np.int64)
  check(lambda t: t.repeat_interleave(Tensor(reps, device=device), dim=0), A, device=device,
        torch_fn=lambda t: t.repeat_interleave(torch.from_numpy(reps), dim=0))
  assert_tensor(picograd.repeat_interleave(Tensor(reps, device=device)), torch.repeat_interleave(torch.from_numpy(reps)).numpy())
  with pytest.raises(RuntimeError): Tensor(A).repeat_interleave(Tensor(np.array([1, 2], np.int64)), dim=0)
  with pytest.raises(IndexError): Tensor(A).repeat_interleave(2, 2)


# ---------------------------------------------------------------- scans
def test_cumprod(device):
  x = rand((3, 11), seed=12)
  x[0, 3] = 0  # gradients through a zero (out/x would divide by it)
  x[1, 2] = x[1, 7] = 0
  for fn in [lambda t: t.cumprod(1), lambda t: t.cumprod(0), lambda t: t.cumprod(-1)]:
    check(fn, x, device=device)
  check(lambda t: t.cumprod(0), np.zeros((0, 2), np.float32), device=device)
  check(lambda t: t.cumprod(0), np.array(2.5, np.float32), device=device)
  check_value(lambda t: t.cumprod(0), np.array([2, -3, 4], np.int32), device=device)
  with pytest.raises(IndexError): Tensor(x).cumprod(2)


@pytest.mark.parametrize("op", ["cummax", "cummin"])
def test_cummax_cummin(device, op):
  x = rand((2, 10), seed=13)
  check(lambda t: getattr(t, op)(1).values, x, device=device)
  check(lambda t: getattr(t, op)(0).values, x, device=device)
  check_value(lambda t: tuple(getattr(t, op)(1)), x, device=device)
  ties = np.array([[1, 1, 0, 1, 2, 2, 0, 2], [0, 0, 0, 0, 0, 0, 0, 0]], np.float32)
  check_value(lambda t: tuple(getattr(t, op)(1)), ties, device=device)
  check(lambda t: getattr(t, op)(1).values, ties, device=device)  # the gradient goes to the reported (latest) index
  nan = np.array([1, NAN, 3, NAN, 0, -INF, INF], np.float32)
  check_value(lambda t: tuple(getattr(t, op)(0)), nan, device=device)
  check_value(lambda t: tuple(getattr(t, op)(0)), np.array([3, 1, 4, 1, 5], np.int32), device=device)
  check_value(lambda t: tuple(getattr(t, op)(1)), np.zeros((2, 0), np.float32), device=device)
  with pytest.raises(IndexError): getattr(Tensor(x), op)(-3)


def test_logcumsumexp(device):
  x = rand((2, 9), seed=14, low=-5, high=5)
  check(lambda t: t.logcumsumexp(1), x, device=device)
  check(lambda t: t.logcumsumexp(0), x, device=device)
  # no overflow, no underflow to -inf, infinities and NaN (one shape: one set of kernels)
  special = np.array([[-1000, 0, -INF, 1000, -INF, 3], [-INF, -INF, 1, INF, 2, -INF], [1, NAN, 2, 3, 4, 5]], np.float32)
  check_value(lambda t: t.logcumsumexp(1), special, device=device)
  past_inf = np.array([[2, -INF, 2, -1000, 5, -INF], [-3, 4, -INF, 0, 1, 2]], np.float32)
  check(lambda t: t.logcumsumexp(1), past_inf, device=device)  # finite gradients past -inf
  check(lambda t: t.logcumsumexp(1), np.zeros((3, 0), np.float32), device=device)
  with pytest.raises(IndexError): Tensor(x).logcumsumexp(2)


# ---------------------------------------------------------------- scatter and selection
SELF = rand((3, 5), seed=15)
SRC = rand((2, 4), seed=16)
IDX0 = np.array([[0, 2, 1, 2], [1, 0, 2, 0]], np.int64)  # dim 0: repeats within columns (for reductions)
IDX1 = np.array([[4, 0, 2], [1, 3, 0]], np.int64)         # dim 1: unique per row (plain scatter is deterministic)


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter(device):
  idx = Tensor(IDX1, device=device)
  tidx = torch.from_numpy(IDX1)
  check(lambda s, x: s.scatter(1, idx, x), SELF, SRC[:, :3], device=device, torch_fn=lambda s, x: s.scatter(1, tidx, x))
  # a src larger than the index: only its leading part is used (PyTorch's own gradient fails on this shape)
  check_value(lambda s, x: s.scatter(1, Tensor(IDX1, device=device), x), SELF, SRC, device=device, torch_fn=lambda s, x: s.scatter(1, tidx, x))
  check(lambda s: s.scatter(1, idx, 2.5), SELF, device=device, torch_fn=lambda s: s.scatter(1, tidx, 2.5))
  t0 = torch.from_numpy(IDX0)
  for reduce in ("add", "multiply"):  # PyTorch has no gradient for these (scatter_reduce's cover the same code)
    check_value(lambda s, x: s.scatter(0, Tensor(IDX0, device=device), x, reduce=reduce), SELF, SRC, device=device,
                torch_fn=lambda s, x: s.scatter(0, t0, x, reduce=reduce))
  check_value(lambda s: s.scatter(0, Tensor(np.zeros((0, 5), np.int64), device=device), 1.0), SELF, device=device,
              torch_fn=lambda s: s.scatter(0, torch.zeros((0, 5), dtype=torch.int64), 1.0))
  with pytest.raises(IndexError): Tensor(SELF).scatter(2, Tensor(IDX1), Tensor(SRC))
  with pytest.raises(RuntimeError): Tensor(SELF).scatter(1, Tensor(IDX1.astype(np.float32)), Tensor(SRC))
  with pytest.raises(RuntimeError): Tensor(SELF).scatter(1, Tensor(np.zeros((3, 5), np.int64)), Tensor(SRC))


def test_scatter_add(device):
  i0, t0 = Tensor(IDX0, device=device), torch.from_numpy(IDX0)
  check(lambda s, x: s.scatter_add(0, i0, x), SELF, SRC, device=device, torch_fn=lambda s, x: s.scatter_add(0, t0, x))
  check_value(lambda s, x: s.scatter_add(0, Tensor(IDX0, device=device), x), np.zeros((3, 5), np.int32), SRC.astype(np.int32) * 10,
              device=device, torch_fn=lambda s, x: s.scatter_add(0, t0, x))


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_scatter_reduce(device, reduce):
  i0, t0 = Tensor(IDX0, device=device), torch.from_numpy(IDX0)
  for include_self in (True, False):
    check(lambda s, x: s.scatter_reduce(0, i0, x, reduce, include_self=include_self), SELF, SRC, device=device,
          torch_fn=lambda s, x: s.scatter_reduce(0, t0, x, reduce, include_self=include_self))
  ints = (SRC * 10).astype(np.int32)
  check_value(lambda s, x: s.scatter_reduce(0, Tensor(IDX0, device=device), x, reduce), (SELF * 10).astype(np.int32), ints,
              device=device, torch_fn=lambda s, x: s.scatter_reduce(0, t0, x, reduce))


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_scatter_reduce_ties(device, reduce):
  """Tied extremes share the gradient evenly, the old value included (PyTorch's rule).

  (With include_self=False PyTorch still counts a tied old value when it splits, so the shares do
  not add up to 1; picograd splits among the sources only, and that case is not compared.)
  """
  s, src, idx = np.array([1, 5, 2, 1], np.float32), np.array([5, 5, 1, 3], np.float32), np.array([1, 1, 0, 2])
  if reduce == "amin": s, src = -s, -src
  i, ti = Tensor(idx, device=device), torch.from_numpy(idx)
  check(lambda a, b: a.scatter_reduce(0, i, b, reduce), s, src, device=device, torch_fn=lambda a, b: a.scatter_reduce(0, ti, b, reduce))


def test_scatter_reduce_bad_mode():
  with pytest.raises(RuntimeError): Tensor(SELF).scatter_reduce(0, Tensor(IDX0), Tensor(SRC), "max")


def test_masked_select(device):
  mask = rand((3, 5), np.bool_, seed=17)
  check(lambda x: x.masked_select(Tensor(mask, device=device)), SELF, device=device, torch_fn=lambda x: x.masked_select(torch.from_numpy(mask)))
  row = mask[1]  # broadcast over rows
  check(lambda x: x.masked_select(Tensor(row, device=device)), SELF, device=device, torch_fn=lambda x: x.masked_select(torch.from_numpy(row)))
  none = np.zeros((3, 5), bool)
  check(lambda x: x.masked_select(Tensor(none, device=device)), SELF, device=device, torch_fn=lambda x: x.masked_select(torch.from_numpy(none)))
  with pytest.raises(RuntimeError): Tensor(SELF).masked_select(Tensor(SELF))


def test_nonzero(device):
  x = np.array([[0, 1.5, 0], [NAN, 0, -2]], np.float32)
  for arr in (x, np.zeros((2, 0), np.float32), np.zeros((3,), np.int32), np.array(4.0, np.float32), np.array([True, False, True])):
    check_value(lambda t: t.nonzero(), arr, device=device)
    check_value(lambda t: t.nonzero(as_tuple=True), arr, device=device)


# ---------------------------------------------------------------- sorting
SORT_DATA = rand((3, 7), seed=18)


def test_sort(device):
  for descending in (False, True):
    for dim in (1, 0, -1):
      check(lambda t: t.sort(dim, descending=descending).values, SORT_DATA, device=device)
      check_value(lambda t: tuple(t.sort(dim=dim, descending=descending, stable=True)), SORT_DATA, device=device)
    # ties keep their order (stable), NaN sorts as the largest value, infinities in between
    special = np.array([[2, NAN, -INF, 2, 0, INF, NAN, 2, -1], [1, 1, 1, 1, 1, 1, 1, 1, 1]], np.float32)
    check_value(lambda t: tuple(t.sort(dim=1, descending=descending, stable=True)), special, device=device)
    check_value(lambda t: tuple(t.sort(dim=1, descending=descending, stable=True)), np.array([[3, 1, 3, -7, 0, 1]], np.int32), device=device)
    check_value(lambda t: tuple(t.sort(dim=0, descending=descending, stable=True)), np.array([True, False, True, False]), device=device)
  check(lambda t: t.sort(1).values, np.zeros((2, 0), np.float32), device=device)
  check(lambda t: t.sort(0).values, np.zeros((1, 3), np.float32), device=device)
  check_value(lambda t: tuple(t.sort(0)), np.array(1.5, np.float32), device=device)
  with pytest.raises(IndexError): Tensor(SORT_DATA).sort(2)


def test_bitonic_sort(device, monkeypatch):
  """Long rows sort through the bitonic network; here every row does (7 elements pad to 8 places)."""
  import picograd.frontend.sort as sort
  monkeypatch.setattr(sort, "_RANK_SORT_MAX", 1)
  monkeypatch.setattr(sort, "_RANK_SORT_WORK", 0)
  special = np.array([[2, NAN, -INF, 2, 0, INF, NAN], [1, 3, 1, 0, 1, 3, 1]], np.float32)
  check(lambda t: t.sort(1, descending=True).values, SORT_DATA, device=device)
  for descending in (False, True):
    check_value(lambda t: tuple(t.sort(dim=1, descending=descending, stable=True)), special, device=device)
  check_value(lambda t: t.topk(3, 1, largest=False).values, special, device=device)  # PyTorch's topk is not stable


def test_argsort(device):
  ties = np.array([[0, 1, 0, 1, 0], [5, 4, 3, 2, 1]], np.float32)
  for descending in (False, True):
    check_value(lambda t: t.argsort(dim=1, descending=descending, stable=True), ties, device=device)
    check_value(lambda t: t.argsort(dim=0, descending=descending, stable=True), SORT_DATA, device=device)
  with pytest.raises(IndexError): Tensor(ties).argsort(-3)


def test_topk(device):
  for largest in (True, False):
    for k in (1, 3, 7):
      check(lambda t: t.topk(k, 1, largest=largest).values, SORT_DATA, device=device)
      check_value(lambda t: tuple(t.topk(k, 1, largest=largest)), SORT_DATA, device=device)
    check_value(lambda t: tuple(t.topk(2, 0, largest=largest)), SORT_DATA, device=device)
    nan = np.array([1, NAN, -1, INF, 0], np.float32)
    check_value(lambda t: tuple(t.topk(3, largest=largest)), nan, device=device)
  check(lambda t: t.topk(0, 1).values, SORT_DATA, device=device)
  check_value(lambda t: tuple(t.topk(2)), np.array([4, 9, -3], np.int32), device=device)
  with pytest.raises(RuntimeError): Tensor(SORT_DATA).topk(8, 1)
  with pytest.raises(IndexError): Tensor(SORT_DATA).topk(1, 2)


# ---------------------------------------------------------------- kernels, functional forms
def test_kernel_counts():
  x, w = Tensor(rand((8, 16), seed=19)), Tensor(rand((16, 4), seed=20))
  def kernels(*ts): return len(picograd.schedule(*ts))
  assert kernels(picograd.einsum("ij,jk->ik", x, w)) == 1  # a contraction is one fused multiply-reduce
  assert kernels(x.diagonal(), x.roll(3, 1)) == 2          # movement only: one kernel per output
  assert kernels(x.prod(1)) == 2                           # 16 factors: two levels of 8
  assert kernels(*x.sort(1)) == 3                          # ranks, then values and indices
  assert kernels(x.scatter_add(0, Tensor(np.zeros((2, 16), np.int64)), x)) == 1


def test_functional_forms():
  x = Tensor(SORT_DATA)
  t = torch.from_numpy(SORT_DATA)
  for name, args in [("prod", (1,)), ("cumprod", (1,)), ("logcumsumexp", (0,)), ("roll", (2, 1)), ("diagonal", (1,)), ("argsort", (1,))]:
    assert_tensor(getattr(picograd, name)(x, *args), getattr(torch, name)(t, *args).numpy())
  for name, args in [("cummax", (1,)), ("cummin", (0,)), ("sort", (1,)), ("topk", (2,))]:
    for g, w in zip(getattr(picograd, name)(x, *args), getattr(torch, name)(t, *args)): assert_tensor(g, w.numpy())
  assert_tensor(picograd.diag(x[0]), torch.diag(t[0]).numpy())
  assert_tensor(picograd.nonzero(x > 0), torch.nonzero(t > 0).numpy())
  assert_tensor(picograd.masked_select(x, x > 0), torch.masked_select(t, t > 0).numpy())
  idx = np.array([[2, 0]], np.int64)
  ti = torch.from_numpy(idx)
  assert_tensor(picograd.scatter(x, 1, Tensor(idx), 0.5), torch.scatter(t, 1, ti, 0.5).numpy())
  assert_tensor(picograd.scatter_add(x, 1, Tensor(idx), x), torch.scatter_add(t, 1, ti, t).numpy())
  assert_tensor(picograd.scatter_reduce(x, 1, Tensor(idx), x, "amax"), torch.scatter_reduce(t, 1, ti, t, "amax").numpy())
  assert_tensor(Tensor(1.5).scatter(0, Tensor(0), Tensor(5.0)), torch.tensor(1.5).scatter(0, torch.tensor(0), torch.tensor(5.0)).numpy())
