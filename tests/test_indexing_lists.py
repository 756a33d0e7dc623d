"""Lists, tuples and bool lists inside `__getitem__`, against PyTorch: values and gradients on every device.

The same Python index is applied to a picograd tensor and to a torch tensor, so every row is a
direct comparison: integer lists (negative and repeated entries, nested), several lists that
broadcast, lists mixed with ints, slices, None and Ellipsis, bool lists as masks, empty lists and
empty dims. Out-of-range entries are host values, so they raise IndexError at the op.
"""
import numpy as np
import pytest
import torch
from picograd import Tensor
from gradcheck import assert_close_to_torch

DATA = np.random.default_rng(5).standard_normal((3, 4, 5)).astype(np.float32)
S = slice(None)

INDICES = {
  "list": ([0, 2],),
  "negative-repeated": ([-1, 0, -1, -1],),
  "nested": ([[0, 1], [2, 2]],),
  "two-lists": ([0, 2], [1, 3]),
  "three-lists-broadcast": ([[0], [2]], [1, 3], [-1, 0]),
  "separated-lists": ([0, 2], S, [1, 4]),
  "slice-then-list": (S, [3, 0]),
  "ellipsis-list": (Ellipsis, [4, 0, 4]),
  "none-list": (None, [1, 2], S, [0, -2]),
  "int-list-slice": (1, [0, 2], slice(1, 4)),
  "list-int": ([0, 1], 2),
  "step-slice-list": (slice(None, None, 2), [3, 1]),
  "tuple-in-tuple": ((0, 2), S, 1),
  "bool-list": ([True, False, True],),
  "bool-list-dim1": (S, [True, False, True, True]),
  "bool-2d": ([[True, False, False, True], [False, False, False, False], [True, True, False, False]],),
  "bool-and-int-list": ([True, False, True], S, [0, 4]),
  "all-false": ([False, False, False],),
  "empty-list": ([],),
}


@pytest.mark.parametrize("index", list(INDICES.values()), ids=list(INDICES))
def test_list_index_matches_torch(device, index):
  assert_close_to_torch(lambda x: x[index], [DATA], device=device)


def test_nan_and_inf_pass_through_only_where_picked(device):
  data = DATA.copy()
  data[0, 1, 2], data[2, 3, 4], data[1, 0, 0] = np.nan, np.inf, -np.inf
  assert_close_to_torch(lambda x: x[[2, 0, 1], [3, 1, 1]], [data], device=device)


def test_empty_dim(device):
  empty = np.zeros((0, 4), np.float32)
  assert_close_to_torch(lambda x: x[:, [0, 3, 3]], [empty], device=device)


def test_integer_tensor_with_list_index(device):
  x = np.arange(12, dtype=np.int32).reshape(3, 4)
  got = Tensor(x, device=device)[[2, -3], [True, False, True, False]]
  assert got.dtype.name == "int32"
  np.testing.assert_array_equal(got.numpy(), torch.tensor(x)[[2, -3], [True, False, True, False]].numpy())


BAD = {
  "out-of-range": ([0, 3],),
  "negative-out-of-range": (S, [-5]),
  "nested-out-of-range": ([[0, 1], [1, 7]],),
  "second-list-out-of-range": ([0, 1], [0, 4]),
  "not-broadcastable": ([0, 1], [0, 1, 2]),
  "mask-too-long": ([True, False, True, False],),
  "mask-2d-wrong-shape": ([[True, False], [False, True]],),
}


@pytest.mark.parametrize("index", list(BAD.values()), ids=list(BAD))
def test_bad_list_index_raises_index_error_at_the_op(device, index):
  x = Tensor(DATA, device=device)
  with pytest.raises(IndexError) as ours: x[index]
  with pytest.raises(IndexError): torch.tensor(DATA)[index]
  assert "out of bounds" in str(ours.value) or "mask" in str(ours.value) or "shape mismatch" in str(ours.value)


def test_out_of_range_message_names_index_dim_and_size():
  with pytest.raises(IndexError, match=r"index 7 is out of bounds for dimension 1 with size 4 \(shape \(3, 4, 5\)\)"): Tensor(DATA)[:, [1, 7]]
  with pytest.raises(IndexError, match=r"index -4 is out of bounds for dimension 0 with size 3"): Tensor(DATA)[[-4]]


def test_ragged_and_float_lists():
  # a list is always one index (numpy's rule, and PyTorch's once its deprecated reading of x[[[0, 1], [1]]] as x[[0, 1], [1]] is gone)
  with pytest.raises(ValueError, match="ragged"): Tensor(DATA)[[[0, 1], [1]]]
  with pytest.raises(IndexError, match="must be long, int, byte or bool"): Tensor(DATA)[[0.5, 1.0]]
