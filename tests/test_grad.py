"""Gradients: every differentiable op against PyTorch (float32) and float64 central differences; the autograd API; fusion of backward."""
from __future__ import annotations
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
import picograd.nn.functional as F
from gradcheck import assert_close_to_torch, assert_matches_finite_differences

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def arrays(seed: int, *shapes, low: float = -2.0, high: float = 2.0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.uniform(low, high, size=s).astype(np.float32) for s in shapes]


def dims(seed: int, n: int, low: int = 1, high: int = 4) -> tuple[int, ...]:
  """A random shape: each test case draws its own sizes (seeded, so failures reproduce)."""
  return tuple(int(d) for d in np.random.default_rng(1000 + seed).integers(low, high + 1, size=n))


def pos(seed: int, *shapes) -> list[np.ndarray]: return arrays(seed, *shapes, low=0.5, high=2.0)


# name: (picograd fn, torch fn or None for the same code, inputs). Both frameworks spell most ops alike.
S = dims(0, 3)
CASES = {
  "add_broadcast": (lambda a, b: a + b, None, arrays(1, (S[0], 1, S[2]), (S[1], S[2]))),
  "sub_rsub": (lambda a, b: 2.0 - a - b, None, arrays(2, (S[0], S[1]), (S[1],))),
  "mul_broadcast": (lambda a, b: a * b * 3, None, arrays(3, (S[0], S[1], 1), (S[2],))),
  "div": (lambda a, b: a / b + 1 / b, None, arrays(4, S) + pos(5, S[1:])),
  "neg": (lambda a: -a, None, arrays(6, S)),
  "exp": (lambda a: a.exp(), None, arrays(7, S)),
  "exp2": (lambda a: a.exp2(), None, arrays(8, S)),
  "log": (lambda a: a.log(), None, pos(9, S)),
  "log2": (lambda a: a.log2(), None, pos(10, S)),
  "sin": (lambda a: a.sin(), None, arrays(11, S)),
  "cos": (lambda a: a.cos(), None, arrays(12, S)),
  "tan": (lambda a: a.tan(), None, arrays(13, S, low=-1.2, high=1.2)),
  "sqrt": (lambda a: a.sqrt(), None, pos(14, S)),
  "rsqrt": (lambda a: a.rsqrt(), None, pos(15, S)),
  "reciprocal": (lambda a: a.reciprocal(), None, pos(16, S)),
  "sigmoid": (lambda a: a.sigmoid(), None, arrays(17, S)),
  "tanh": (lambda a: a.tanh(), None, arrays(18, S)),
  "relu": (lambda a: a.relu(), None, arrays(19, S)),
  "leaky_relu": (lambda a: a.leaky_relu(0.1), lambda a: TF.leaky_relu(a, 0.1), arrays(20, S)),
  "abs": (lambda a: a.abs(), None, arrays(21, S)),
  "square": (lambda a: a.square(), None, arrays(22, S)),
  "pow_int": (lambda a: a ** 3, None, arrays(23, S)),
  "pow_float": (lambda a: a ** 1.5, None, pos(24, S)),
  "pow_tensor": (lambda a, b: a ** b, None, pos(25, S, S)),
  "rpow": (lambda a: 2.0 ** a, None, arrays(26, S)),
  "maximum": (lambda a, b: a.maximum(b), None, arrays(27, S, S[1:])),
  "minimum": (lambda a, b: a.minimum(b), None, arrays(28, S, S[1:])),
  "clip": (lambda a: a.clip(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), arrays(29, S)),
  "where": (lambda a, b: picograd.where(a > b, a * 2, b), lambda a, b: torch.where(a > b, a * 2, b), arrays(30, S, S[2:])),
  "sum_all": (lambda a: a.sum(), None, arrays(31, S)),
  "sum_axis": (lambda a: a.sum(1), None, arrays(32, S)),
  "sum_axes_keepdim": (lambda a: a.sum((0, 2), keepdim=True), lambda a: a.sum((0, 2), keepdim=True), arrays(33, S)),
  "mean": (lambda a: a.mean(-1), None, arrays(34, S)),
  "var": (lambda a: a.var(1), None, arrays(35, (S[0], S[1] + 1))),
  "std_biased": (lambda a: a.std(0, correction=0), lambda a: a.std(0, correction=0), arrays(36, (S[0] + 1, S[2]))),
  "max_axis": (lambda a: a.max(1), lambda a: a.amax(1), arrays(37, S)),
  "max_all": (lambda a: a.max(), lambda a: a.amax(), arrays(38, S)),
  "min_axis_keepdim": (lambda a: a.min(0, keepdim=True), lambda a: a.amin(0, keepdim=True), arrays(39, S)),
  "logsumexp": (lambda a: a.logsumexp(1), None, arrays(40, S)),
  "softmax": (lambda a: a.softmax(-1), None, arrays(41, S)),
  "log_softmax": (lambda a: a.log_softmax(0), None, arrays(42, S)),
  "cumsum": (lambda a: a.cumsum(1), None, arrays(43, S)),
  "reshape": (lambda a: a.reshape(S[2], -1) * 1, None, arrays(44, S)),
  "permute": (lambda a: a.permute(2, 0, 1), None, arrays(45, S)),
  "transpose": (lambda a: a.transpose(0, 2), None, arrays(46, S)),
  "expand": (lambda a: a.expand(2, S[0], 3, S[2]), None, arrays(47, (S[0], 1, S[2]))),
  "pad": (lambda a: a.pad((1, 2, 0, 1), value=0.5), lambda a: TF.pad(a, (1, 2, 0, 1), value=0.5), arrays(48, S)),
  "pad_crop": (lambda a: a.pad((-1, 1)), lambda a: TF.pad(a, (-1, 1)), arrays(49, (S[0], S[1] + 1))),
  "flip": (lambda a: a.flip((0, 2)), None, arrays(50, S)),
  "repeat": (lambda a: a.repeat(2, 1, 3), None, arrays(51, S)),
  "split": (lambda a: a.split([1, S[1]], 1)[1] * 2, lambda a: a.split([1, S[1]], 1)[1] * 2, arrays(52, (S[0], S[1] + 1))),
  "chunk": (lambda a: a.chunk(2, 0)[0], None, arrays(53, (4, S[1]))),
  "squeeze_unsqueeze": (lambda a: a.unsqueeze(1).squeeze(0), None, arrays(54, (1, S[1], S[2]))),
  "flatten": (lambda a: a.flatten(1), None, arrays(55, S)),
  "slice_steps": (lambda a: a[::2, 1:, ::-1], lambda a: a[::2, 1:].flip(2), arrays(56, (5, S[1] + 1, S[2]))),
  "slice_int_none": (lambda a: a[1, None, ..., -1], None, arrays(57, (3, S[1], S[2]))),
  "index_tensor_repeats": (lambda a: a[Tensor([0, 2, 0, 0])], lambda a: a[torch.tensor([0, 2, 0, 0])], arrays(58, (3, S[1]))),
  "index_two_tensors": (lambda a: a[Tensor([[1, 0], [1, 1]]), :, Tensor([0, 1])],
                        lambda a: a[torch.tensor([[1, 0], [1, 1]]), :, torch.tensor([0, 1])], arrays(59, (2, S[1], 2))),
  "gather": (lambda a: a.gather(1, Tensor([[0, 0], [1, 0]])), lambda a: a.gather(1, torch.tensor([[0, 0], [1, 0]])), arrays(60, (2, 3))),
  "cat": (lambda a, b: picograd.cat([a, b, a], 1), lambda a, b: torch.cat([a, b, a], 1), arrays(61, (S[0], 2), (S[0], 3))),
  "stack": (lambda a, b: picograd.stack([a, b], 1), lambda a, b: torch.stack([a, b], 1), arrays(62, S, S)),
  "matmul": (lambda a, b: a @ b, None, arrays(63, (S[0], 5), (5, S[1]))),
  "matmul_batched_broadcast": (lambda a, b: a @ b, None, arrays(64, (2, 1, 3, 4), (S[0], 4, 2))),
  "matmul_vector": (lambda a, b: (a @ b) @ a, None, arrays(65, (3,), (3, 3))),
  "linear": (lambda x, w, b: x.linear(w, b), lambda x, w, b: TF.linear(x, w, b), arrays(66, (S[0], 4), (3, 4), (3,))),
  "erf": (lambda a: a.erf(), lambda a: torch.erf(a), arrays(67, (3, 5), low=-4, high=4)),
  "gelu": (lambda a: a.gelu(), lambda a: TF.gelu(a), arrays(68, S, low=-4, high=4)),
  "gelu_tanh": (lambda a: a.gelu(approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh"), arrays(69, S)),
  "silu": (lambda a: a.silu(), lambda a: TF.silu(a), arrays(70, S)),
  "softplus": (lambda a: a.softplus(2.0, 3.0), lambda a: TF.softplus(a, 2.0, 3.0), arrays(71, S)),
  "layer_norm": (lambda x, w, b: F.layer_norm(x, (S[2],), w, b), lambda x, w, b: TF.layer_norm(x, (S[2] + 0,), w, b),
                 arrays(72, (S[0], 2, S[2]), (S[2],), (S[2],))),
  "mse_loss": (lambda a, b: F.mse_loss(a, b), lambda a, b: TF.mse_loss(a, b), arrays(73, S, S)),
  "bce": (lambda p, y: F.binary_cross_entropy(p, y), lambda p, y: TF.binary_cross_entropy(p, y), arrays(74, S, S, low=0.1, high=0.9)),
  "bce_with_logits": (lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=Tensor(np.array([0.5, 2.0, 1.0, 3.0][:S[2]], np.float32))),
                      lambda x, y: TF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([0.5, 2.0, 1.0, 3.0][:S[2]])),
                      arrays(75, S, S)),
  "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), arrays(76, (2, 4, 3), (2, 4, 3), (2, 4, 2))),
}

# the float64 finite-difference check runs on a subset: each case compiles its own kernels, and the suite must stay fast
FD_CASES = ["add_broadcast", "div", "exp", "log", "sin", "sqrt", "reciprocal", "tanh", "pow_tensor", "maximum", "where", "sum_axes_keepdim",
            "var", "max_axis", "logsumexp", "softmax", "log_softmax", "cumsum", "permute", "expand", "pad", "flip", "slice_steps",
            "index_tensor_repeats", "cat", "matmul_batched_broadcast", "erf", "gelu", "layer_norm", "bce_with_logits", "sdpa_causal"]
PYTHON_CASES = ["mul_broadcast", "exp2", "log2", "sin", "sqrt", "reciprocal", "maximum", "where", "max_axis", "sum_axis", "pad", "flip",
                "slice_steps", "matmul", "gelu"]


@pytest.mark.parametrize("name", list(CASES))
def test_against_torch(name):
  fn, torch_fn, inputs = CASES[name]
  assert_close_to_torch(fn, inputs, torch_fn)


@pytest.mark.parametrize("name", FD_CASES)
def test_finite_differences(name):
  fn, _, inputs = CASES[name]
  assert_matches_finite_differences(fn, inputs)


@pytest.mark.parametrize("name", PYTHON_CASES)
def test_against_torch_on_python_device(name):
  fn, torch_fn, inputs = CASES[name]
  assert_close_to_torch(fn, inputs, torch_fn, device="PYTHON")


# ---------------------------------------------------------------- ties: the split rules, where PyTorch splits too
def test_max_ties_split_evenly():
  a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=np.float32)
  assert_close_to_torch(lambda x: x.max(1), [a], lambda x: x.amax(1))
  assert_close_to_torch(lambda x: x.min(), [a], lambda x: x.amin())


def test_maximum_minimum_ties_split():
  a, b = np.array([1.0, 2.0, 3.0], dtype=np.float32), np.array([1.0, 5.0, 3.0], dtype=np.float32)
  assert_close_to_torch(lambda x, y: x.maximum(y) + x.minimum(y) * 3, [a, b], lambda x, y: torch.maximum(x, y) + torch.minimum(x, y) * 3)


# 1/(1+x*x) is recomputed in several kernels: each copy must round alike, or no element equals the max
def test_max_gradient_when_its_input_is_recomputed():
  a = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 3))
  assert_close_to_torch(lambda x: (1 / (1 + x * x)).max(0), [a], lambda x: (1 / (1 + x * x)).amax(0))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "silu", "softplus", "gelu"])
def test_saturated_activations_have_finite_gradients(name):
  # far out, a naive 1/(1+exp(-x)) overflows and its backward multiplies 0 by inf
  a = np.array([-100.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0], dtype=np.float32)
  assert_close_to_torch(lambda x: getattr(x, name)(), [a], lambda x: getattr(TF, name)(x))


def test_bce_with_logits_at_zero_logits():
  # zero-initialized output layers put every logit at exactly 0, where abs() has a zero derivative
  assert_close_to_torch(lambda x: F.binary_cross_entropy_with_logits(x, Tensor(np.array([0.0, 1.0, 0.3], np.float32))),
                        [np.zeros(3, np.float32)], lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor([0.0, 1.0, 0.3])))


# ---------------------------------------------------------------- losses with integer targets
CE_TARGET = np.array([2, 0, 1, 2, 1])


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1}, {"label_smoothing": 0.2},
                                    {"ignore_index": 2, "label_smoothing": 0.1, "reduction": "mean"}])
def test_cross_entropy(kwargs):
  logits = arrays(80, (5, 3))
  assert_close_to_torch(lambda x, t: F.cross_entropy(x, t, **kwargs), logits, lambda x, t: TF.cross_entropy(x, t, **kwargs),
                        extra=[Tensor(CE_TARGET)], torch_extra=[torch.tensor(CE_TARGET)])


def test_cross_entropy_classes_on_dim1_and_probabilities():
  logits, probs = arrays(81, (2, 3, 4), (2, 3, 4))
  target = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
  assert_close_to_torch(lambda x: F.cross_entropy(x, Tensor(target)), [logits], lambda x: TF.cross_entropy(x, torch.tensor(target)))
  probs = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)
  assert_close_to_torch(lambda x, p: F.cross_entropy(x, p, label_smoothing=0.1), [logits, probs],
                        lambda x, p: TF.cross_entropy(x, p, label_smoothing=0.1))
  single = arrays(82, (4,))
  assert_close_to_torch(lambda x: F.cross_entropy(x, Tensor(3)), single, lambda x: TF.cross_entropy(x, torch.tensor(3)))


def test_nll_loss_and_finite_differences():
  logp = arrays(83, (5, 3))
  assert_close_to_torch(lambda x: F.nll_loss(x.log_softmax(1), Tensor(CE_TARGET), ignore_index=0), logp,
                        lambda x: TF.nll_loss(x.log_softmax(1), torch.tensor(CE_TARGET), ignore_index=0))
  assert_matches_finite_differences(lambda x: F.cross_entropy(x, Tensor(CE_TARGET), label_smoothing=0.1), logp)


def test_embedding_scatter_adds_repeated_rows():
  weight = arrays(84, (4, 3))
  idx = np.array([[1, 3, 1], [1, 0, 0]])
  assert_close_to_torch(lambda w: F.embedding(Tensor(idx), w), weight, lambda w: TF.embedding(torch.tensor(idx), w))


def test_sdpa_masks():
  q, k, v = arrays(85, (2, 3, 4), (2, 5, 4), (2, 5, 2))
  bool_mask = np.random.default_rng(0).random((3, 5)) < 0.7
  bool_mask[:, 0] = True  # every query sees at least one key
  float_mask = arrays(86, (3, 5))[0]
  for mask in (bool_mask, float_mask):
    assert_close_to_torch(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=Tensor(mask), scale=0.3), [q, k, v],
                          lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(mask), scale=0.3))


def test_dropout_gradient_is_the_mask():
  x = Tensor(np.ones((64,), dtype=np.float32), requires_grad=True)
  y = F.dropout(x, 0.25)
  y.sum().backward()
  out, grad = y.numpy(), x.grad.numpy()
  np.testing.assert_allclose(grad, out)  # y = x * mask / (1 - p) with x = 1
  assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)} and 0 < (out == 0).sum() < 64
  assert F.dropout(x, 0.5, training=False) is x


def test_cast_passes_gradient_back_in_the_source_dtype():
  x = Tensor(np.array([1.5, -2.0], dtype=np.float32), requires_grad=True)
  (x.double() * x.double()).float().sum().backward()
  assert x.grad.dtype == dtypes.float32
  np.testing.assert_allclose(x.grad.numpy(), [3.0, -4.0])


def test_copy_between_devices():
  x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
  (x.to("PYTHON") * 3).sum().backward()
  assert x.grad.device == "CPU"
  np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


# ---------------------------------------------------------------- second derivatives against closed forms
@pytest.mark.parametrize("fn, second", [
  (lambda x: x ** 3, lambda a: 6 * a),
  (lambda x: x.tanh(), lambda a: -2 * np.tanh(a) * (1 - np.tanh(a) ** 2)),
  (lambda x: x.sin() * x.exp(), lambda a: 2 * np.cos(a) * np.exp(a)),
  (lambda x: x.sigmoid(), lambda a: (s := 1 / (1 + np.exp(-a))) * (1 - s) * (1 - 2 * s)),
])
def test_second_derivative(fn, second):
  a = np.linspace(-1.5, 1.5, 7)
  x = Tensor(a, requires_grad=True)
  (dx,) = fn(x).sum().gradient(x)
  (d2x,) = dx.sum().gradient(x)
  np.testing.assert_allclose(d2x.numpy(), second(a), rtol=1e-9, atol=1e-12)


def test_mixed_second_derivative_and_zero_third():
  x, y = Tensor(np.array([2.0]), requires_grad=True), Tensor(np.array([3.0]), requires_grad=True)
  (dy,) = (x * y * y).sum().gradient(y)  # 2xy
  dxdy, dydy = dy.sum().gradient(x, y)
  assert dxdy.item() == 6.0 and dydy.item() == 4.0
  (d3,) = dxdy.sum().gradient(x)  # 2y does not depend on x: zeros, not an error
  assert d3.item() == 0.0


# ---------------------------------------------------------------- the autograd API
def test_backward_accumulates_and_gradient_has_no_side_effects():
  a = np.array([1.0, -2.0, 3.0], dtype=np.float32)
  x = Tensor(a, requires_grad=True)
  (g,) = (x * x).sum().gradient(x)
  assert x.grad is None
  np.testing.assert_allclose(g.numpy(), 2 * a)
  (x * x).sum().backward()
  (x * 3).sum().backward()
  np.testing.assert_allclose(x.grad.numpy(), 2 * a + 3)
  assert not x.grad.requires_grad  # stored gradients are detached, as in PyTorch


def test_requires_grad_propagates():
  x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
  c = Tensor(np.ones(3, dtype=np.float32))
  y = (x * 2 + c).sum()
  assert x.requires_grad and x.is_leaf and y.requires_grad and not y.is_leaf
  assert not c.requires_grad and not (c * 2).requires_grad and not y.detach().requires_grad
  assert not x.argmax().requires_grad  # integer results carry no gradient


def test_no_grad_results_pass_no_gradient():
  x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
  with picograd.no_grad():
    c = x * 2
    assert not c.requires_grad
  (x * c).sum().backward()  # c is a constant here: d/dx = c, not 4x
  np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
  (x * x.detach()).sum().backward()
  np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0])


def test_lazy_leaves_are_distinct():
  # two Tensor.zeros(3) are one hash-consed UOp; as leaves they must be separate variables
  w, b = Tensor.zeros(3, requires_grad=True), Tensor.zeros(3, requires_grad=True)
  x = Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32))
  (x * w + b).sum().backward()
  np.testing.assert_allclose(w.grad.numpy(), [1.0, 2.0, 3.0])
  np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0, 1.0])


def test_backward_after_the_output_was_realized():
  x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
  loss = (x * x).sum()
  assert loss.item() == 5.0
  loss.backward()
  np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_explicit_gradient_for_a_non_scalar_output():
  x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
  (x * x).backward(gradient=Tensor(np.array([1.0, 10.0], dtype=np.float32)))
  np.testing.assert_allclose(x.grad.numpy(), [2.0, 40.0])


def test_errors():
  x = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
  with pytest.raises(RuntimeError, match="scalar"): (x * 2).backward()
  with pytest.raises(picograd.ShapeError, match="does not match"): (x * 2).backward(gradient=Tensor.ones(3))
  with pytest.raises(RuntimeError, match="floating-point"): x.argmax().backward()
  with pytest.raises(RuntimeError, match="floating-point"): Tensor([1, 2], requires_grad=True)
  with pytest.raises(RuntimeError, match="floating-point"): (x.sum()).gradient(Tensor([1, 2]))
  with pytest.raises(RuntimeError, match="does not require grad"): Tensor.ones(2).sum().backward()


def test_gradient_graph_text():
  x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
  text = (x.exp() * 2).sum().gradient_graph(x)
  assert "EXP2" in text and "MUL" in text and text.splitlines()[-1].startswith("grad[0] = %")


# ---------------------------------------------------------------- fusion of the backward pass
def test_backward_of_an_elementwise_chain_is_one_kernel():
  x = Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
  (x.exp().sin().tanh() * 3 + x.sigmoid()).sum().backward()
  assert len(picograd.schedule(x.grad)) == 1


def test_linear_tanh_cross_entropy_kernel_count():
  rng = np.random.default_rng(0)
  x = Tensor(rng.standard_normal((4, 5)).astype(np.float32))
  w = Tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
  b = Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
  loss = (x @ w + b).tanh().cross_entropy(Tensor([0, 1, 2, 1]))
  loss.backward()
  # 8 kernels for the whole training step, forward and backward in one schedule:
  #   forward:  x @ w (read by several consumers) | the row max and the row sum of exp (each read by the loss and
  #             by the backward, so realized once instead of fused twice) | the count of targets that are not
  #             ignore_index | the target's logit per row (one-hot sum) | the loss itself
  #   backward: d loss / d logits, with w.grad's and b.grad's reductions (batch sums) as the last two
  # The backward reuses the forward's realized reductions instead of recomputing them; the tanh is recomputed
  # inside the kernels that read it (cheap elementwise work is redone rather than stored).
  assert len(picograd.schedule(loss, w.grad, b.grad)) == 8
  tw, tb = torch.tensor(w.numpy(), requires_grad=True), torch.tensor(b.numpy(), requires_grad=True)
  TF.cross_entropy((torch.tensor(x.numpy()) @ tw + tb).tanh(), torch.tensor([0, 1, 2, 1])).backward()
  np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-6)
