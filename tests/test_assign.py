"""In-place assignment: writes land in the target's buffer, in the right order, without reading overwritten elements."""
import numpy as np
import picograd
from picograd import Tensor


def test_assign_keeps_the_buffer_and_is_one_kernel():
  w = Tensor([1.0, 2.0, 3.0])
  buf = w.uop
  w.assign(w * 2 + 1)
  assert len(picograd.schedule(w)) == 1
  w.realize()
  assert w.uop is buf
  np.testing.assert_array_equal(w.numpy(), [3.0, 5.0, 7.0])


def test_assign_reading_its_target_elsewhere_goes_through_a_temporary():
  w = Tensor([1.0, 2.0, 3.0, 4.0])
  w.assign(w.flip(0) + w)
  assert len(picograd.schedule(w)) == 2  # the value first, then the copy into w
  np.testing.assert_array_equal(w.numpy(), [5.0, 5.0, 5.0, 5.0])
  m = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
  m.assign(m - m.sum(1, keepdim=True))
  np.testing.assert_array_equal(m.numpy(), np.arange(6).reshape(2, 3) - np.array([[3], [12]]))


def test_readers_of_the_old_value_run_before_the_assignment():
  w = Tensor([1.0, 2.0, 3.0])
  old_sum = w.sum()
  w.assign(w * 10)
  Tensor.realize(w, old_sum)
  assert old_sum.item() == 6.0
  np.testing.assert_array_equal(w.numpy(), [10.0, 20.0, 30.0])


def test_a_reader_of_both_the_old_and_the_new_value_reads_a_copy_of_the_old(device):
  # `change` reads w as it was and as assigned: it cannot run before the assignment, so the old w is copied first
  # (it used to read the new value twice); the same when the old value reaches it through a fused product
  w, x = Tensor([1.0, 2.0, 3.0], device=device), Tensor([4.0, 5.0, 6.0], device=device)
  Tensor.realize(w, x)
  old, scaled = w * 1, w * x
  w.assign(w * 10 + scaled)
  change, mixed = w - old, w * scaled
  Tensor.realize(w, change, mixed)
  np.testing.assert_array_equal(w.numpy(), [14.0, 30.0, 48.0])
  np.testing.assert_array_equal(change.numpy(), [13.0, 28.0, 45.0])
  np.testing.assert_array_equal(mixed.numpy(), [56.0, 300.0, 864.0])


def test_a_second_assignment_to_a_buffer_lands_after_the_first(device):
  # the second write must come last although nothing it reads orders it after the first: the first shares a kernel with
  # an assignment to c (engine/outputs.py) that must wait for the second's read of c's old value
  a, b, c = (Tensor(np.arange(4.0) + k, device=device) for k in (0, 10, 20))
  Tensor.realize(a, b, c)
  old_c = c.flip(0) * 2
  c.assign(a * 0.5 + 1)
  b.assign(a * 0.5 + 1)
  b.assign(old_c - old_c.sum(0, keepdim=True))
  Tensor.realize(c, b)
  np.testing.assert_array_equal(c.numpy(), np.arange(4.0) * 0.5 + 1)
  np.testing.assert_array_equal(b.numpy(), (np.arange(20.0, 24.0)[::-1] * 2) - (np.arange(20.0, 24.0) * 2).sum())


def test_two_tensors_from_one_graph_do_not_share_memory():
  a, b = Tensor.zeros(3).realize(), Tensor.zeros(3).realize()
  a.assign(Tensor.ones(3)).realize()
  np.testing.assert_array_equal(b.numpy(), [0.0, 0.0, 0.0])


def test_a_computed_node_is_forgotten_once_its_buffer_is_overwritten():
  x = Tensor([1.0, 2.0, 3.0])
  y = (x * 2).realize()
  y.assign(y + 10).realize()
  np.testing.assert_array_equal((x * 2 + 1).numpy(), [3.0, 5.0, 7.0])


def test_a_realized_loss_keeps_its_value_after_the_update():
  # a tensor that needs gradients points at its graph again after realizing; reading it must give the
  # value it was realized with, not a recomputation from the updated parameters
  w = Tensor([1.0], requires_grad=True)
  loss = (w * 2).sum()
  loss.backward()
  loss.realize()
  w.assign(w - w.grad).realize()
  assert loss.item() == 2.0
  np.testing.assert_array_equal(w.numpy(), [-1.0])
