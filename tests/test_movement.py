"""Movement ops and indexing against numpy: reshape view permute transpose .T expand squeeze unsqueeze flatten pad flip cat
stack repeat, __getitem__."""
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
from compare import assert_tensor, rand

A = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize("shape, new", [((2, 3, 4), (6, 4)), ((2, 3, 4), (24,)), ((2, 3, 4), (4, -1)), ((2, 3, 4), (1, 2, 1, 12)),
                                        ((6,), (3, 2)), ((1,), ()), ((), (1, 1)), ((0, 3), (3, 0)), ((0, 3), (-1,)), ((4, 1), (2, 2))])
def test_reshape_and_view(device, shape, new):
  a = rand(shape, seed=1)
  assert_tensor(Tensor(a, device=device).reshape(new), a.reshape(new))
  assert_tensor(Tensor(a, device=device).view(*new), a.reshape(new))


def test_reshape_of_a_permuted_tensor(device):
  x = Tensor(A, device=device)
  assert_tensor(x.permute(2, 0, 1).reshape(4, 6), A.transpose(2, 0, 1).reshape(4, 6))
  assert_tensor(x.T.reshape(-1)[::5], A.T.reshape(-1)[::5])


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0), (-1, 0, 1)])
def test_permute(device, order):
  assert_tensor(Tensor(A, device=device).permute(order), A.transpose(order))
  assert_tensor(Tensor(A, device=device).permute(*order), A.transpose(order))


@pytest.mark.parametrize("d0, d1", [(0, 1), (0, 2), (-1, -2), (1, 1)])
def test_transpose(device, d0, d1):
  assert_tensor(Tensor(A, device=device).transpose(d0, d1), np.swapaxes(A, d0, d1))


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4)])
def test_T_reverses_all_dims(device, shape):
  a = rand(shape, seed=2)
  assert_tensor(Tensor(a, device=device).T, a.T)


@pytest.mark.parametrize("shape, target", [((3, 1), (3, 4)), ((1,), (5,)), ((), (2, 3)), ((3, 1), (2, 3, 5)), ((1, 4), (-1, 4)),
                                           ((3, 1), (2, -1, 0)), ((2, 1), (2, 1))])
def test_expand(device, shape, target):
  a = rand(shape, seed=3)
  full = tuple(s if t == -1 else t for s, t in zip((1,) * (len(target) - len(shape)) + shape, target))
  assert_tensor(Tensor(a, device=device).expand(*target), np.broadcast_to(a, full))
  assert_tensor(Tensor(a, device=device).expand_as(Tensor.zeros(*full)), np.broadcast_to(a, full))


@pytest.mark.parametrize("shape, dim", [((1, 3, 1), None), ((1, 3, 1), 0), ((1, 3, 1), -1), ((1, 3, 1), 1), ((1, 3, 1), (0, 2)),
                                        ((1,), None), ((), None), ((2, 3), None)])
def test_squeeze(device, shape, dim):
  a = rand(shape, seed=4)
  # PyTorch: squeezing a dim that is not 1 is a no-op (numpy raises)
  ref_axes = tuple(d for d in ((dim,) if isinstance(dim, int) else dim or range(a.ndim)) if a.shape[d] == 1)
  assert_tensor(Tensor(a, device=device).squeeze(dim), np.squeeze(a, axis=ref_axes))


@pytest.mark.parametrize("shape, dim", [((), 0), ((3,), 0), ((3,), 1), ((3,), -1), ((2, 3), 1), ((2, 3), -2)])
def test_unsqueeze(device, shape, dim):
  a = rand(shape, seed=5)
  assert_tensor(Tensor(a, device=device).unsqueeze(dim), np.expand_dims(a, dim))


@pytest.mark.parametrize("start, end", [(0, -1), (1, -1), (0, 1), (1, 2), (2, 2), (-2, -1)])
def test_flatten(device, start, end):
  a = rand((2, 3, 4), seed=6)
  e = end % 3
  assert_tensor(Tensor(a, device=device).flatten(start, end), a.reshape(a.shape[:start % 3] + (-1,) + a.shape[e + 1:]))


def test_flatten_0d(device):
  assert_tensor(Tensor(3.0, device=device).flatten(), np.array([3.0], np.float32))


@pytest.mark.parametrize("padding", [(1, 2), (0, 0, 1, 0), (2, 1, 0, 3, 1, 1), (-1, 2), (1, -2, -1, 1)])
def test_pad_torch_order(device, padding):
  torch = pytest.importorskip("torch")
  assert_tensor(Tensor(A, device=device).pad(padding), torch.nn.functional.pad(torch.from_numpy(A), padding).numpy())


def test_pad_pairs_and_value(device):
  assert_tensor(Tensor(A, device=device).pad(((1, 0), (0, 0), (2, 1)), value=-1.5),
                np.pad(A, ((1, 0), (0, 0), (2, 1)), constant_values=-1.5))
  ints = np.arange(3)
  assert_tensor(Tensor(ints, device=device).pad((1, 1), value=7), np.pad(ints, 1, constant_values=7))
  assert_tensor(Tensor([1.0], device=device).pad((2, 0), value=float("-inf")), np.array([-np.inf, -np.inf, 1.0], np.float32))


def test_pad_zero_size_input(device):
  assert_tensor(Tensor(np.zeros((0, 2), np.float32), device=device).pad((1, 1, 1, 1)), np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("dims", [0, 1, -1, (0, 2), (0, 1, 2), ()])
def test_flip(device, dims):
  assert_tensor(Tensor(A, device=device).flip(dims), np.flip(A, dims) if dims != () else A)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(device, dim):
  parts = [rand((2, 3, 4), seed=7), rand((2, 3, 4), seed=8)]
  parts.append(rand(tuple(1 if i == dim % 3 else s for i, s in enumerate((2, 3, 4))), seed=9))
  ts = [Tensor(p, device=device) for p in parts]
  assert_tensor(picograd.cat(ts, dim), np.concatenate(parts, dim))
  assert_tensor(ts[0].cat(*ts[1:], dim=dim), np.concatenate(parts, dim))


def test_cat_promotes_and_handles_empty_and_special_values(device):
  out = picograd.cat([Tensor([1, 2], device=device), Tensor([3.5], device=device)])
  assert_tensor(out, np.array([1, 2, 3.5], np.float32))
  assert_tensor(picograd.cat([Tensor(np.zeros((0, 3), np.float32), device=device), Tensor(np.ones((2, 3), np.float32), device=device)]),
                np.ones((2, 3), np.float32))
  # cat sums zero-padded pieces: inf and nan must still come through unchanged
  assert_tensor(picograd.cat([Tensor([np.inf], device=device), Tensor([np.nan, -np.inf], device=device)]),
                np.array([np.inf, np.nan, -np.inf], np.float32))
  assert_tensor(picograd.cat([Tensor([True], device=device), Tensor([False, True], device=device)]), np.array([True, False, True]))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(device, dim):
  parts = [rand((2, 3), seed=s) for s in range(3)]
  assert_tensor(picograd.stack([Tensor(p, device=device) for p in parts], dim), np.stack(parts, dim))


@pytest.mark.parametrize("shape, reps", [((2, 3), (2, 1)), ((2, 3), (1, 3)), ((3,), (2, 2)), ((2, 1), (1, 1, 2)), ((2, 3), (0, 1)), ((), (3,))])
def test_repeat_is_tile(device, shape, reps):
  a = rand(shape, seed=10)
  assert_tensor(Tensor(a, device=device).repeat(*reps), np.tile(a, reps))


# ---------------------------------------------------------------- __getitem__

BASIC_INDICES = [
  0, -1, 1, (1, 2), (1, 2, 3), (-1, -2, -3),
  slice(None), slice(1, None), slice(None, 1), (slice(None), slice(1, 3)), (slice(None), slice(None), slice(1, -1)),
  (slice(None, None, 2),), (slice(None), slice(None, None, 2), slice(1, None, 3)), (slice(None), slice(2, 0, -1)),
  (slice(None, None, -1),), (slice(None), slice(None), slice(None, None, -3)), (Ellipsis, slice(3, 0, -2)), (slice(5, None),),
  (slice(0, 0),), (None,), (None, 0), (0, None, slice(1, 3), None), (Ellipsis, None), (Ellipsis, 1), (1, Ellipsis),
  (Ellipsis,), (0, Ellipsis, 0), (slice(None), None, Ellipsis, None), (slice(-100, 100),),
]


@pytest.mark.parametrize("index", BASIC_INDICES, ids=repr)
def test_getitem_basic(device, index):
  assert_tensor(Tensor(A, device=device)[index], A[index])


@pytest.mark.parametrize("start, stop, step", [(None, None, 3), (8, 1, -3), (None, None, -4), (1, None, 20), (-2, -9, -2), (3, 3, 1), (9, 0, 2)])
def test_getitem_slice_steps_1d(device, start, stop, step):
  a = np.arange(10)
  assert_tensor(Tensor(a, device=device)[start:stop:step], a[start:stop:step])


def test_getitem_0d_and_chained(device):
  assert_tensor(Tensor(2.0, device=device)[None], np.array([2.0], np.float32))
  assert_tensor(Tensor(2.0, device=device)[...], np.array(2.0, np.float32))
  assert_tensor(Tensor(A, device=device)[1][2][::-1], A[1][2][::-1])


TENSOR_INDICES = [  # numpy's placement rules for the result dims
  lambda t: (t([1, 0, 1, -1]),),
  lambda t: (t([[1, 0], [0, 1]]),),
  lambda t: (slice(None), t([2, 0, -1])),
  lambda t: (slice(None), slice(None), t([[3, 0], [1, 2]])),
  lambda t: (t([1, 0]), slice(None), t([3, 1])),          # separated: the index dims go first
  lambda t: (slice(None), t([0, 2]), t([1, 3])),          # adjacent: they stay in place
  lambda t: (t(1), slice(1, 3)),                          # a 0-d tensor index
  lambda t: (Ellipsis, t([0, 0, 3])),
  lambda t: (slice(1, None), t([2, 0]), slice(None, None, 2)),
  lambda t: (None, t([1]), 0),
  lambda t: (t(np.zeros((0,), np.int64)),),               # an empty index
]


@pytest.mark.parametrize("make", TENSOR_INDICES, ids=[f"idx{i}" for i in range(len(TENSOR_INDICES))])
def test_getitem_integer_tensor(device, make):
  index = make(lambda v: Tensor(np.asarray(v), device=device))
  ref = make(np.asarray)
  assert_tensor(Tensor(A, device=device)[index], A[ref])


@pytest.mark.parametrize("dt", [dtypes.int32, dtypes.int64, dtypes.bool, dtypes.float16])
def test_getitem_tensor_index_keeps_data_dtype(device, dt):
  a = rand((5, 2), dt.np, seed=11)
  idx = np.array([4, 0, 0])
  assert_tensor(Tensor(a, device=device)[Tensor(idx, dtype=dtypes.int32, device=device)], a[idx])


def test_getitem_python_list_index(device):
  assert_tensor(Tensor(A, device=device)[[1, 0]], A[[1, 0]])


def test_getitem_int64_values_survive_gather(device):
  a = np.array([2**40, -3, 2**50 + 1], np.int64)
  assert_tensor(Tensor(a, device=device)[Tensor([2, 0], device=device)], a[[2, 0]])
