"""Bad input: each mistake raises a clear exception type right where the op is written, and the message names the op and shapes."""
import numpy as np
import pytest
import picograd
from picograd import Tensor, ShapeError, Context
from picograd.runtime.device import DeviceError, canonicalize


@pytest.fixture
def x() -> Tensor: return Tensor.ones(2, 3)


def test_broadcast_mismatch(x):
  with pytest.raises(ShapeError, match=r"add: shapes \(2, 3\) and \(4, 5\) cannot be broadcast"): x + Tensor.ones(4, 5)
  with pytest.raises(ShapeError, match=r"mul: .*\(2, 3\).*\(2,\)"): x * Tensor.ones(2)
  with pytest.raises(ShapeError, match=r"where: .*\(2, 3\)"): picograd.where(x > 0, Tensor.ones(4), 0)


def test_shape_error_is_a_runtime_error_and_a_value_error(x):
  with pytest.raises(RuntimeError): x + Tensor.ones(3, 2)  # PyTorch's type
  with pytest.raises(ValueError): x + Tensor.ones(3, 2)  # picograd's type before it followed PyTorch


def test_matmul_inner_dims(x):
  with pytest.raises(ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\).*inner dimensions 3 and 4"): x @ Tensor.ones(4, 5)
  with pytest.raises(ShapeError, match=r"matmul.*\(2,\) and \(3,\) cannot be broadcast"): Tensor.ones(2, 3, 4) @ Tensor.ones(3, 4, 5)
  with pytest.raises(ShapeError, match=r"matmul: both operands need at least 1 dimension"): x @ Tensor(2.0)


def test_reshape_size(x):
  with pytest.raises(ShapeError, match=r"reshape: cannot reshape tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"): x.reshape(4, 2)
  with pytest.raises(ShapeError, match=r"reshape: cannot reshape \(2, 3\) into \(-1, 4\)"): x.reshape(-1, 4)
  with pytest.raises(ShapeError, match=r"only one dimension can be -1"): x.reshape(-1, -1)


@pytest.mark.parametrize("op", [
  lambda t: t.sum(2), lambda t: t.max(-3), lambda t: t.mean((0, 5)), lambda t: t.argmax(2), lambda t: t.softmax(3),
  lambda t: t.log_softmax(-3), lambda t: t.logsumexp(2), lambda t: t.transpose(0, 2), lambda t: t.unsqueeze(4), lambda t: t.flip(2),
  lambda t: t.squeeze(7), lambda t: t.var(2), lambda t: picograd.cat([t, t], dim=2),
], ids=["sum", "max", "mean", "argmax", "softmax", "log_softmax", "logsumexp", "transpose", "unsqueeze", "flip", "squeeze", "var", "cat"])
def test_bad_axis_names_the_op(x, op):
  with pytest.raises(IndexError, match=r"^\w+: dimension -?\d+ is out of range for a tensor with \d dimension.*"
                                       r"\(expected to be in range of \[-\d, \d\], but got -?\d\)"): op(x)


def test_bad_axis_message_names_the_callers_op(x):
  with pytest.raises(IndexError, match="^softmax:"): x.softmax(3)
  with pytest.raises(IndexError, match="^logsumexp:"): x.logsumexp(2)


def test_repeated_axis(x):
  with pytest.raises(RuntimeError, match=r"sum: dim 0 appears multiple times in the list of dims \(0, 0\)"): x.sum((0, 0))
  with pytest.raises(RuntimeError, match=r"flip: dim 1 appears multiple times in the list of dims \(1, -1\)"): x.flip((1, -1))


def test_permute_not_a_permutation(x):
  with pytest.raises(ShapeError, match=r"permute: dim 0 appears multiple times"): x.permute(0, 0)
  with pytest.raises(ShapeError, match=r"permute: \(0,\) is not a permutation of the 2 dimensions of \(2, 3\)"): x.permute(0)


def test_cat_and_stack_mismatched_shapes(x):
  with pytest.raises(ShapeError, match=r"cat: shapes \[\(2, 3\), \(4, 5\)\] differ outside dimension 0"): picograd.cat([x, Tensor.ones(4, 5)])
  with pytest.raises(ShapeError, match=r"cat: shapes \[\(2, 3\), \(3,\)\]"): picograd.cat([x, Tensor.ones(3)])
  with pytest.raises(ShapeError, match=r"stack: all tensors must have the same shape"): picograd.stack([x, Tensor.ones(3, 2)])
  with pytest.raises(ValueError, match="cat: expected a non-empty list"): picograd.cat([])


def test_expand_pad_repeat_shrink(x):
  with pytest.raises(ShapeError, match=r"expand: cannot expand shape \(2, 3\) to \(4, 3\)"): x.expand(4, 3)
  with pytest.raises(ShapeError, match=r"expand: target \(3,\) has fewer dimensions"): x.expand(3)
  with pytest.raises(ShapeError, match=r"pad: padding \(1,\) does not fit a tensor of shape \(2, 3\)"): x.pad((1,))
  with pytest.raises(ShapeError, match=r"pad: .* crops more than the shape \(2, 3\)"): x.pad((-5, 0))
  with pytest.raises(ShapeError, match=r"repeat: 1 repeat counts for a tensor of shape \(2, 3\)"): x.repeat(2)
  with pytest.raises(ShapeError, match=r"shrink: bounds .* do not fit shape \(2, 3\)"): x.shrink(((0, 5), None))


@pytest.mark.parametrize("make", [
  lambda a, b: a + b, lambda a, b: a @ b.T, lambda a, b: a.maximum(b), lambda a, b: picograd.where(a > 0, b, 0),
  lambda a, b: picograd.where(b > 0, a, 0), lambda a, b: picograd.cat([a, b]), lambda a, b: a < b,
], ids=["add", "matmul", "maximum", "where-value", "where-condition", "cat", "lt"])
def test_mixing_devices_is_an_error(make):
  a, b = Tensor.ones(2, 3, device="CPU"), Tensor.ones(2, 3, device="PYTHON")
  with pytest.raises(RuntimeError, match=r"different devices \((CPU and PYTHON|PYTHON and CPU)\)"): make(a, b)


def test_index_tensor_on_another_device(x):
  with pytest.raises(RuntimeError, match=r"getitem: index tensor on PYTHON cannot index a tensor on CPU"): x[Tensor([0], device="PYTHON")]


@pytest.mark.parametrize("name", ["TPU", "cuda:x", "", "CPU:abc"])
def test_unknown_device(name):
  with pytest.raises(DeviceError, match="device"): canonicalize(name)


def test_unknown_default_device_from_dev_flag():
  with Context(DEV="TPU"):
    with pytest.raises(DeviceError, match="unknown device 'TPU'"): Tensor([1.0])


def test_unknown_device_names_the_known_ones():
  with pytest.raises(DeviceError, match=r"unknown device 'TPU'; picograd knows \['CPU', 'CUDA', 'PYTHON'\]"): Tensor([1.0], device="TPU")


def test_item_of_many_elements(x):
  with pytest.raises(RuntimeError, match=r"item: only a tensor with one element .* not shape \(2, 3\)"): x.item()
  with pytest.raises(RuntimeError, match=r"shape \(0,\)"): Tensor.ones(0).item()


def test_truth_value_of_many_elements(x):
  with pytest.raises(RuntimeError, match=r"truth value of a tensor of shape \(2, 3\) is ambiguous"): bool(x)


def test_boolean_mask_indexing_is_unsupported(x):
  with pytest.raises(IndexError, match="boolean mask indexing is not supported; use where"): x[x > 0]
  with pytest.raises(IndexError, match="boolean mask indexing is not supported"): x[Tensor([True, False])]


def test_bad_indices(x):
  with pytest.raises(IndexError, match=r"index 2 is out of bounds for dimension 0 with size 2 \(shape \(2, 3\)\)"): x[2]
  with pytest.raises(IndexError, match=r"index -4 is out of bounds for dimension 1 with size 3"): x[:, -4]
  with pytest.raises(IndexError, match=r"too many indices for tensor of shape \(2, 3\)"): x[0, 0, 0]
  with pytest.raises(IndexError, match="single ellipsis"): x[..., ...]
  with pytest.raises(IndexError, match="must be integer, not float32"): x[Tensor([0.5])]
  with pytest.raises(IndexError, match="unsupported index 0.5"): x[0.5]
  with pytest.raises(TypeError, match="unsupported index 'a' of type str"): x["a"]


def test_item_assignment_is_unsupported(x):
  with pytest.raises(TypeError, match="do not support item assignment"): x[0] = 1


def test_bad_data_and_dtypes():
  with pytest.raises(ValueError, match=r"Tensor: cannot make a tensor from ragged data \[\[1, 2\], \[3\]\]"): Tensor([[1, 2], [3]])
  with pytest.raises(TypeError, match=r"numpy dtype complex64 is not supported"): Tensor(np.ones(2, np.complex64))
  with pytest.raises(TypeError, match=r"unknown dtype name 'complex64'"): Tensor([1], dtype="complex64")
  with pytest.raises(TypeError, match="add: unsupported operand of type str"): Tensor([1]) + "a"


def test_ops_undefined_for_bool_or_float():
  # PyTorch's types: RuntimeError for bool negation and subtraction, NotImplementedError where no kernel exists for the dtype
  with pytest.raises(RuntimeError, match="neg: negation of a bool tensor"): -Tensor([True])
  with pytest.raises(RuntimeError, match="sub: subtraction of bool tensors"): Tensor([True]) - Tensor([False])
  with pytest.raises(NotImplementedError, match="bitwise_and: bitwise operations need integer or bool tensors, not float32"):
    Tensor([1.0]) & Tensor([1.0])


def test_bad_creation_arguments():
  with pytest.raises(RuntimeError, match=r"full: Trying to create tensor with negative dimension -1: \[-1, 2\]"): Tensor.full((-1, 2), 1.0)
  with pytest.raises(RuntimeError, match="zeros: .*negative dimension"): Tensor.zeros(-1)
  with pytest.raises(TypeError, match=r"zeros: sizes must be ints, not float \(2.5\)"): Tensor.zeros(2.5)
  with pytest.raises(RuntimeError, match="arange: step must be nonzero"): Tensor.arange(0, 5, 0)


def test_empty_reductions_without_identity():
  with pytest.raises(RuntimeError, match=r"max: expected reduction dim to be specified for an empty tensor of shape \(0,\)"): Tensor.ones(0).max()
  with pytest.raises(IndexError, match=r"max: expected reduction dim 0 to have non-zero size \(shape \(0,\)\)"): Tensor.ones(0).max(0)
  with pytest.raises(IndexError, match=r"argmax: expected reduction dim 0 to have non-zero size \(shape \(0, 2\)\)"): Tensor.ones(0, 2).argmax(0)


def test_len_of_0d_and_clip_without_bounds():
  with pytest.raises(TypeError, match="len"): len(Tensor(1.0))
  with pytest.raises(RuntimeError, match="clip: at least one of min and max"): Tensor([1.0]).clip()


def test_assign_checks_shape():
  with pytest.raises(ShapeError, match=r"assign: shape \(3,\) does not match the target's \(2, 3\)"):
    Tensor.ones(2, 3).contiguous().realize().assign(Tensor.ones(3))


def test_unknown_flag():
  with pytest.raises(KeyError, match=r"unknown flag\(s\) \['FOO'\]"):
    with Context(FOO=1): pass


def test_errors_are_raised_eagerly_not_at_realize(x):
  """The failing line is the op, not a later .numpy(): nothing lazy hides the mistake."""
  y = x + 1
  with pytest.raises(ShapeError): y.reshape(7)
  np.testing.assert_array_equal(y.numpy(), np.full((2, 3), 2.0, np.float32))  # the graph is still usable
