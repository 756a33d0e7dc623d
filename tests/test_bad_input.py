"""A table of bad inputs: each is refused at the op with PyTorch's exception type and a message naming the op.

Every row is one call written once against a small torch-like namespace, so the same lambda runs
on picograd (on each device) and on torch itself, and the row checks both: picograd raises an
instance of the row's type, with the message fragment, and torch raises that type too (the type
is PyTorch's, not ours). Where the APIs differ a row gives a (picograd, torch) pair, and where
torch has no equivalent (a second device, a picograd-only argument) the torch side is None.
Errors are raised while the graph is built, so almost no row compiles a kernel.
"""
from __future__ import annotations
import types
import numpy as np
import pytest
import torch
import picograd
import picograd.nn
import picograd.nn.functional as PF
import picograd.optim as POptim
from picograd import Tensor, dtypes

# torch warns about x["a"] before refusing it
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")


class PG:
  """picograd behind the torch names a row uses, on one device."""

  def __init__(self, device: str):
    self.device = device
    self.F, self.optim = PF, POptim
    self.cat, self.stack, self.where = picograd.cat, picograd.stack, picograd.where
    self.long, self.int32, self.float32, self.float64, self.bool = dtypes.int64, dtypes.int32, dtypes.float32, dtypes.float64, dtypes.bool

  def ones(self, *shape, device=None, **kw): return Tensor.ones(*shape, device=device or self.device, **kw)
  def zeros(self, *shape, device=None, **kw): return Tensor.zeros(*shape, device=device or self.device, **kw)
  def empty(self, *shape, device=None, **kw): return Tensor.empty(*shape, device=device or self.device, **kw)
  def rand(self, *shape, device=None, **kw): return Tensor.rand(*shape, device=device or self.device, **kw)
  def randn(self, *shape, device=None, **kw): return Tensor.randn(*shape, device=device or self.device, **kw)
  def full(self, shape, value, **kw): return Tensor.full(shape, value, device=self.device, **kw)
  def eye(self, n, m=None, **kw): return Tensor.eye(n, m, device=self.device, **kw)
  def arange(self, *args, **kw): return Tensor.arange(*args, device=self.device, **kw)
  def randint(self, low, high, size): return Tensor.randint(low, high, size=size, device=self.device)
  def tensor(self, data, dtype=None, requires_grad=None): return Tensor(data, dtype=dtype, device=self.device, requires_grad=requires_grad)


TORCH = types.SimpleNamespace(F=torch.nn.functional, optim=torch.optim, **{k: getattr(torch, k) for k in (
  "ones", "zeros", "empty", "rand", "randn", "full", "eye", "arange", "randint", "tensor", "cat", "stack", "where",
  "long", "int32", "float32", "float64", "bool")})


def x(L): return L.ones(2, 3)
def w(L): return [L.ones(2, requires_grad=True)]  # one trainable parameter
def ints(L, *values): return L.tensor(list(values), dtype=L.long)


ROWS: list[tuple] = []


def row(name: str, call, exc: type[BaseException], message: str) -> None:
  """`call` is a function of the namespace, or a (picograd, torch-or-None) pair of them."""
  ours, theirs = call if isinstance(call, tuple) else (call, call)
  ROWS.append(pytest.param(ours, theirs, exc, message, id=name))


# ---------------------------------------------------------------- dims out of range: IndexError naming the op
DIM_OPS = {
  "sum": lambda t, d: t.sum(d), "mean": lambda t, d: t.mean(d), "max": lambda t, d: t.max(d), "min": lambda t, d: t.min(d),
  "argmax": lambda t, d: t.argmax(d), "argmin": lambda t, d: t.argmin(d), "softmax": lambda t, d: t.softmax(d),
  "log_softmax": lambda t, d: t.log_softmax(d), "logsumexp": lambda t, d: t.logsumexp(d), "cumsum": lambda t, d: t.cumsum(d),
  "var": lambda t, d: t.var(d), "std": lambda t, d: t.std(d), "transpose": lambda t, d: t.transpose(0, d),
  "unsqueeze": lambda t, d: t.unsqueeze(d + (1 if d >= 0 else -1)), "squeeze": lambda t, d: t.squeeze(d), "flip": lambda t, d: t.flip(d),
  "flatten": lambda t, d: t.flatten(d), "size": lambda t, d: t.size(d), "chunk": lambda t, d: t.chunk(2, d), "split": lambda t, d: t.split(1, d),
  "unflatten": lambda t, d: t.unflatten(d, (1, 2)), "sum-keepdim": lambda t, d: t.sum(d, keepdim=True), "mean-tuple": lambda t, d: t.mean((0, d)),
}
for op, fn in DIM_OPS.items():
  for bad in (2, -3, 7):
    row(f"dim-{op}-{bad}", lambda L, fn=fn, bad=bad: fn(x(L), bad), IndexError, "out of range")
for bad in (2, -3):
  row(f"dim-cat-{bad}", lambda L, bad=bad: L.cat([x(L), x(L)], dim=bad), IndexError, "cat: dimension")
  row(f"dim-stack-{bad + (1 if bad > 0 else -1)}", lambda L, bad=bad: L.stack([x(L), x(L)], dim=bad + (1 if bad > 0 else -1)),
      IndexError, "stack: dimension")
  row(f"dim-gather-{bad}", lambda L, bad=bad: x(L).gather(bad, L.zeros(2, 3, dtype=L.long)), IndexError, "gather: dimension")
  row(f"dim-permute-{bad}", lambda L, bad=bad: x(L).permute(0, bad), IndexError, "permute: dimension")
row("dim-0d-softmax", lambda L: L.tensor(1.0).softmax(1), IndexError, "expected to be in range of [-1, 0], but got 1")
row("dim-message", lambda L: x(L).sum(5), IndexError, "expected to be in range of [-2, 1], but got 5")
row("dim-float", lambda L: x(L).softmax(1.5), TypeError, "")

# ---------------------------------------------------------------- dims named twice: RuntimeError
for name, fn in {"sum": lambda t: t.sum((0, 0)), "sum-neg": lambda t: t.sum((1, -1)), "mean": lambda t: t.mean((0, -2)),
                 "var": lambda t: t.var((1, 1)), "std": lambda t: t.std((0, 0)), "logsumexp": lambda t: t.logsumexp((1, 1)),
                 "flip": lambda t: t.flip((0, 0)), "flip-neg": lambda t: t.flip((1, -1)), "permute": lambda t: t.permute(0, 0),
                 "permute-neg": lambda t: t.permute(1, -1)}.items():
  row(f"repeated-dims-{name}", lambda L, fn=fn: fn(x(L)), RuntimeError, "appears multiple times")
row("repeated-dims-max", (lambda L: x(L).max((0, 0)), None), RuntimeError, "appears multiple times")  # torch's max takes one dim
row("repeated-dims-argmax-tuple", (lambda L: x(L).sum((0, 0), keepdim=True), lambda L: x(L).sum((0, 0), keepdim=True)), RuntimeError, "appears")

# ---------------------------------------------------------------- sizes: non-integers TypeError, negatives RuntimeError
for fname in ("zeros", "ones", "rand", "randn", "empty"):
  row(f"size-{fname}-float", lambda L, f=fname: getattr(L, f)(2.5), TypeError, "must be")
  row(f"size-{fname}-float-in-tuple", lambda L, f=fname: getattr(L, f)((2, 2.5)), TypeError, "")
  row(f"size-{fname}-none", lambda L, f=fname: getattr(L, f)(None), TypeError, "")
  row(f"size-{fname}-str", lambda L, f=fname: getattr(L, f)("a"), TypeError, "")
  row(f"size-{fname}-negative", lambda L, f=fname: getattr(L, f)(-2, 3), RuntimeError, "negative dimension")
row("size-full-negative", lambda L: L.full((-1, 2), 1.0), RuntimeError, "negative dimension -1")
row("size-full-float", lambda L: L.full((2.5,), 1.0), TypeError, "")
row("size-full-bad-fill", lambda L: L.full((2,), "a"), TypeError, "fill_value")
row("size-eye-negative", lambda L: L.eye(-1), RuntimeError, "greater or equal to 0, got -1")
row("size-eye-negative-m", lambda L: L.eye(2, -3), RuntimeError, "greater or equal to 0")
row("size-eye-float", lambda L: L.eye(2.5), TypeError, "")
row("size-randint-empty-range", lambda L: L.randint(5, 2, (2,)), RuntimeError, "")
row("size-randint-negative", lambda L: L.randint(0, 5, (-1,)), RuntimeError, "negative dimension")
row("arange-step-zero", lambda L: L.arange(0, 5, 0), RuntimeError, "step must be nonzero")
row("arange-wrong-sign", lambda L: L.arange(0, 5, -1), RuntimeError, "inconsistent with step sign")
row("arange-wrong-sign-down", lambda L: L.arange(5, 0, 1), RuntimeError, "inconsistent with step sign")
row("arange-nan", lambda L: L.arange(0, float("nan")), RuntimeError, "unsupported range")
row("arange-inf", lambda L: L.arange(0, float("inf")), RuntimeError, "unsupported range")
row("arange-str", lambda L: L.arange("a"), TypeError, "")

# ---------------------------------------------------------------- movement ops
row("reshape-numel", lambda L: x(L).reshape(4, 2), RuntimeError, "reshape")
row("reshape-two-minus-one", lambda L: x(L).reshape(-1, -1), RuntimeError, "only one dimension can be -1")
row("reshape-minus-one-no-fit", lambda L: x(L).reshape(-1, 4), RuntimeError, "reshape")
row("reshape-minus-two", lambda L: x(L).reshape(-2, 3), RuntimeError, "invalid shape dimension -2")
row("reshape-zero", lambda L: x(L).reshape(0, -1), RuntimeError, "reshape")
row("reshape-float", (lambda L: x(L).reshape(2.0, 3), lambda L: x(L).reshape((2.0, 3))), TypeError, "")
row("view-numel", lambda L: x(L).view(4), RuntimeError, "reshape")
row("expand-non-one", lambda L: x(L).expand(4, 3), RuntimeError, "cannot expand")
row("expand-fewer-dims", lambda L: x(L).expand(3), RuntimeError, "fewer dimensions")
row("expand-negative", lambda L: x(L).expand(-2, 3), RuntimeError, "expand")
row("expand-inner", lambda L: x(L).expand(2, 6), RuntimeError, "expand")
row("repeat-negative", lambda L: x(L).repeat(-1, 1), RuntimeError, "repeat")
row("repeat-too-few", lambda L: x(L).repeat(2), RuntimeError, "repeat")
row("repeat-float", (lambda L: x(L).repeat(1.5, 1), lambda L: x(L).repeat((1.5, 1))), TypeError, "")
row("chunk-zero", lambda L: x(L).chunk(0), RuntimeError, "chunk")
row("chunk-negative", lambda L: x(L).chunk(-1), RuntimeError, "chunk")
row("split-zero", lambda L: x(L).split(0), RuntimeError, "split")
row("split-negative", lambda L: x(L).split(-1), RuntimeError, "split")
row("split-sizes-sum", lambda L: x(L).split([1, 2]), RuntimeError, "split")
row("split-sizes-negative", lambda L: x(L).split([3, -1]), RuntimeError, "split")
row("permute-too-short", lambda L: x(L).permute(0), RuntimeError, "permute")
row("permute-too-long", lambda L: x(L).permute(0, 1, 2), RuntimeError, "permute")
row("unflatten-product", lambda L: x(L).unflatten(1, (2, 2)), RuntimeError, "")
row("flatten-start-after-end", lambda L: x(L).flatten(1, 0), RuntimeError, "start_dim")
row("gather-index-larger", lambda L: x(L).gather(0, L.zeros(2, 4, dtype=L.long)), RuntimeError, "")
row("tril-1d", lambda L: L.ones(3).tril(), RuntimeError, "at least 2 dimensions")
row("triu-0d", lambda L: L.tensor(1.0).triu(), RuntimeError, "at least 2 dimensions")
row("pad-odd", lambda L: L.F.pad(x(L), (1,)) if hasattr(L.F, "pad") else x(L).pad((1,)), RuntimeError, "pad")
row("pad-too-long", (lambda L: x(L).pad((1, 1, 1, 1, 1, 1)), lambda L: L.F.pad(x(L), (1, 1, 1, 1, 1, 1))), RuntimeError, "pad")
row("pad-crop-too-much", (lambda L: x(L).pad((-5, 0)), lambda L: L.F.pad(x(L), (-5, 0))), RuntimeError, "pad")

# ---------------------------------------------------------------- broadcasting: RuntimeError naming both shapes
BINARY = {
  "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "truediv": lambda a, b: a / b,
  "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b, "pow": lambda a, b: a ** b, "maximum": lambda a, b: a.maximum(b),
  "minimum": lambda a, b: a.minimum(b), "lt": lambda a, b: a < b, "gt": lambda a, b: a > b, "le": lambda a, b: a <= b,
  "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "radd": lambda a, b: b + a,
  "div-trunc": lambda a, b: a.div(b, rounding_mode="trunc"),
}
for name, fn in BINARY.items():
  row(f"broadcast-{name}", lambda L, fn=fn: fn(x(L), L.ones(4)), RuntimeError, "cannot be broadcast")
for name, fn in {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}.items():
  row(f"broadcast-{name}", lambda L, fn=fn: fn(L.ones(2, 3, dtype=L.bool), L.ones(4, dtype=L.bool)), RuntimeError, "cannot be broadcast")
row("broadcast-where-value", lambda L: L.where(x(L) > 0, x(L), L.ones(4)), RuntimeError, "cannot be broadcast")
row("broadcast-where-cond", lambda L: L.where(L.ones(4) > 0, x(L), x(L)), RuntimeError, "cannot be broadcast")
row("broadcast-masked-fill", lambda L: x(L).masked_fill(L.ones(4, dtype=L.bool), 0.0), RuntimeError, "")
row("broadcast-mse", (lambda L: L.F.mse_loss(x(L), L.ones(4)), None), RuntimeError, "cannot be broadcast")
row("broadcast-3d", lambda L: L.ones(2, 3, 4) + L.ones(3, 3, 1), RuntimeError, "cannot be broadcast")
row("broadcast-zero-size", lambda L: L.ones(0, 3) + L.ones(2, 3), RuntimeError, "cannot be broadcast")

# ---------------------------------------------------------------- matmul family
row("matmul-inner", lambda L: x(L) @ x(L), RuntimeError, "")
row("matmul-vector", lambda L: x(L) @ L.ones(2), RuntimeError, "")
row("matmul-vectors", lambda L: L.ones(2) @ L.ones(3), RuntimeError, "")
row("matmul-batch", lambda L: L.ones(2, 3, 4) @ L.ones(3, 4, 5), RuntimeError, "")
row("matmul-0d", lambda L: L.tensor(1.0) @ x(L), RuntimeError, "at least 1")
row("matmul-method", lambda L: x(L).matmul(L.ones(4, 2)), RuntimeError, "")
row("linear-weight", lambda L: L.F.linear(x(L), L.ones(4, 4)), RuntimeError, "")

# ---------------------------------------------------------------- cat / stack
row("cat-shapes", lambda L: L.cat([x(L), L.ones(4, 5)]), RuntimeError, "")
row("cat-ndim", lambda L: L.cat([x(L), L.ones(3)]), RuntimeError, "")
row("cat-dim1-shapes", lambda L: L.cat([x(L), L.ones(3, 3)], dim=1), RuntimeError, "")
row("cat-empty", lambda L: L.cat([]), ValueError, "non-empty")
row("stack-shapes", lambda L: L.stack([x(L), L.ones(3, 2)]), RuntimeError, "")
row("stack-empty", lambda L: L.stack([]), RuntimeError, "non-empty")
row("method-cat-shapes", (lambda L: x(L).cat(L.ones(4, 5)), lambda L: L.cat([x(L), L.ones(4, 5)])), RuntimeError, "")

# ---------------------------------------------------------------- arguments with a fixed set of values
row("div-rounding-mode", lambda L: x(L).div(x(L), rounding_mode="foo"), RuntimeError, "rounding_mode")
row("div-rounding-mode-int", lambda L: ints(L, 1, 2).div(ints(L, 1, 2), rounding_mode="round"), RuntimeError, "rounding_mode")
row("gelu-approximate", lambda L: L.F.gelu(x(L), approximate="foo"), RuntimeError, "approximate")
row("dropout-p-high", lambda L: L.F.dropout(x(L), 1.5), ValueError, "dropout")
row("dropout-p-negative", lambda L: L.F.dropout(x(L), -0.1), ValueError, "dropout")
row("clamp-no-bounds", lambda L: x(L).clamp(), RuntimeError, "at least one of")
row("ce-reduction", lambda L: L.F.cross_entropy(x(L), ints(L, 0, 1), reduction="foo"), ValueError, "reduction")
row("nll-reduction", lambda L: L.F.nll_loss(x(L), ints(L, 0, 1), reduction="avg"), ValueError, "reduction")
row("mse-reduction", lambda L: L.F.mse_loss(x(L), x(L), reduction="foo"), ValueError, "reduction")
row("bce-reduction", lambda L: L.F.binary_cross_entropy(x(L) * 0.5, x(L), reduction="foo"), ValueError, "reduction")
row("ce-label-smoothing-high", lambda L: L.F.cross_entropy(x(L), ints(L, 0, 1), label_smoothing=2.0), RuntimeError, "label_smoothing")
row("ce-label-smoothing-negative", (lambda L: L.F.cross_entropy(x(L), ints(L, 0, 1), label_smoothing=-0.5), None), RuntimeError, "label_smoothing")

# ---------------------------------------------------------------- dtypes that do not fit the op
row("bitwise-float", lambda L: x(L) & x(L), NotImplementedError, "")
row("bitwise-or-float", lambda L: x(L) | x(L), NotImplementedError, "")
row("neg-bool", lambda L: -L.ones(2, dtype=L.bool), RuntimeError, "bool")
row("sub-bool", lambda L: L.ones(2, dtype=L.bool) - L.ones(2, dtype=L.bool), RuntimeError, "bool")
row("requires-grad-int", lambda L: L.ones(2, dtype=L.long).requires_grad_(), RuntimeError, "floating")
row("requires-grad-int-ctor", lambda L: L.tensor([1, 2], requires_grad=True), RuntimeError, "floating")
row("gather-float-index", lambda L: x(L).gather(0, L.zeros(2, 3)), RuntimeError, "gather")
row("gather-index-ndim", lambda L: x(L).gather(0, L.zeros(3, dtype=L.long)), RuntimeError, "gather")
row("embedding-float-index", lambda L: L.F.embedding(L.zeros(2), x(L)), RuntimeError, "")
row("embedding-bool-index", lambda L: L.F.embedding(L.zeros(2, dtype=L.bool), x(L)), RuntimeError, "")
row("one-hot-float", lambda L: L.F.one_hot(L.zeros(2), 3), RuntimeError, "one_hot")
row("nll-float-target", lambda L: L.F.nll_loss(x(L), L.zeros(2)), RuntimeError, "")
row("ce-bool-target", lambda L: L.F.cross_entropy(x(L), L.zeros(2, dtype=L.bool)), RuntimeError, "")
row("masked-fill-float-mask", lambda L: x(L).masked_fill(x(L), 0.0), RuntimeError, "masked_fill")
row("where-float-cond", lambda L: L.where(x(L), x(L), x(L)), RuntimeError, "where")
row("where-int-cond", lambda L: L.where(L.ones(2, 3, dtype=L.long), x(L), x(L)), RuntimeError, "where")
row("add-str", lambda L: x(L) + "a", TypeError, "")
row("masked-fill-str", lambda L: x(L).masked_fill(x(L) > 0, "a"), TypeError, "")
row("clamp-str", lambda L: x(L).clamp(min="a"), TypeError, "")
row("tensor-of-strings", (lambda L: L.tensor(np.array(["a", "b"])), lambda L: L.tensor(np.array(["a", "b"]))), TypeError, "")
row("cast-unknown-dtype", (lambda L: x(L).cast("complex64"), None), TypeError, "complex64")
row("ones-unknown-dtype", (lambda L: L.ones(2, dtype="float31"), lambda L: L.ones(2, dtype="float31")), TypeError, "")
row("mul-list-of-str", lambda L: x(L) * None, TypeError, "")
row("index-float-tensor", lambda L: x(L)[L.tensor([0.5])], IndexError, "")
row("index-float-0d-tensor", lambda L: x(L)[L.tensor(0.0)], IndexError, "")
row("index-float", lambda L: x(L)[0.5], IndexError, "")
row("index-str", lambda L: x(L)["a"], TypeError, "")
row("ragged-data", lambda L: L.tensor([[1, 2], [3]]), ValueError, "")

# ---------------------------------------------------------------- indexing with host values: IndexError at the op
row("index-int-out-of-range", lambda L: x(L)[2], IndexError, "out of bounds")
row("index-int-negative-out-of-range", lambda L: x(L)[:, -4], IndexError, "out of bounds")
row("index-too-many", lambda L: x(L)[0, 0, 0], IndexError, "too many indices")
row("index-too-many-with-none", lambda L: x(L)[None, 0, 0, 0], IndexError, "too many indices")
row("index-list-out-of-range", lambda L: x(L)[[0, 2]], IndexError, "out of bounds")
row("index-list-negative", lambda L: x(L)[[-3]], IndexError, "out of bounds")
row("index-list-dim1", lambda L: x(L)[:, [0, 3]], IndexError, "out of bounds")
row("index-nested-list", lambda L: x(L)[([[0, 1], [1, 2]],)], IndexError, "out of bounds")
row("index-lists-broadcast", lambda L: x(L)[[0, 1], [0, 1, 2]], IndexError, "shape mismatch")
row("index-bool-list-length", lambda L: x(L)[[True, False, True]], IndexError, "mask")
row("index-bool-list-dim1", lambda L: x(L)[:, [True, False]], IndexError, "mask")
row("index-0d-int", lambda L: L.tensor(1.0)[0], IndexError, "")
row("index-empty-dim", lambda L: L.ones(0, 3)[0], IndexError, "out of bounds")

# ---------------------------------------------------------------- scalars from tensors
row("item-many", lambda L: x(L).item(), RuntimeError, "")
row("item-empty", lambda L: L.ones(0).item(), RuntimeError, "")
row("bool-many", lambda L: bool(x(L)), RuntimeError, "ambiguous")
row("bool-empty", lambda L: bool(L.ones(0)), RuntimeError, "")
row("len-0d", lambda L: len(L.tensor(1.0)), TypeError, "len")

# ---------------------------------------------------------------- gradients
# each leaf is an argument of the inner lambda: picograd tracks leaves weakly, so a leaf nobody holds stops requiring grad
row("backward-non-scalar", lambda L: (lambda p: (p * 2).backward())(L.ones(2, requires_grad=True)), RuntimeError, "scalar")
row("backward-no-grad", lambda L: L.ones(1).sum().backward(), RuntimeError, "does not require grad")
row("backward-detached", lambda L: (L.ones(1, requires_grad=True) * 2).detach().sum().backward(), RuntimeError, "does not require grad")
row("backward-int", lambda L: L.ones(1, dtype=L.long).sum().backward(), RuntimeError, "")
row("backward-gradient-shape", lambda L: (lambda p: (p * 2).backward(L.ones(3)))(L.ones(2, requires_grad=True)), RuntimeError, "shape")
row("requires-grad-off-non-leaf", lambda L: (lambda p: (p * 2).requires_grad_(False))(L.ones(2, requires_grad=True)), RuntimeError, "leaf")

# ---------------------------------------------------------------- losses and layers: shapes and arguments
row("ce-target-batch", lambda L: L.F.cross_entropy(x(L), ints(L, 0, 1, 2)), ValueError, "")
row("ce-prob-target-shape", lambda L: L.F.cross_entropy(x(L), L.zeros(2, 2)), RuntimeError, "")
row("ce-weight-shape", lambda L: L.F.cross_entropy(x(L), ints(L, 0, 1), weight=L.ones(4)), RuntimeError, "weight")
row("nll-weight-shape", lambda L: L.F.nll_loss(x(L), ints(L, 0, 1), weight=L.ones(2)), RuntimeError, "weight")
row("nll-weight-2d", lambda L: L.F.nll_loss(x(L), ints(L, 0, 1), weight=L.ones(1, 3)), RuntimeError, "weight")
row("nll-target-shape", lambda L: L.F.nll_loss(x(L), L.zeros(2, 3, dtype=L.long)), RuntimeError, "")
row("layer-norm-shape", lambda L: L.F.layer_norm(x(L), (4,)), RuntimeError, "")
row("layer-norm-shape-2d", lambda L: L.F.layer_norm(x(L), (3, 3)), RuntimeError, "")
row("sdpa-gqa-heads", lambda L: L.F.scaled_dot_product_attention(L.ones(1, 4, 2, 8), L.ones(1, 3, 2, 8), L.ones(1, 3, 2, 8), enable_gqa=True),
    RuntimeError, "enable_gqa")
row("sdpa-heads-without-gqa", lambda L: L.F.scaled_dot_product_attention(L.ones(1, 4, 2, 8), L.ones(1, 2, 2, 8), L.ones(1, 2, 2, 8)),
    RuntimeError, "")
row("sdpa-head-dim", lambda L: L.F.scaled_dot_product_attention(L.ones(1, 4, 2, 8), L.ones(1, 4, 2, 7), L.ones(1, 4, 2, 8)), RuntimeError, "")
row("sdpa-kv-length", (lambda L: L.F.scaled_dot_product_attention(L.ones(1, 4, 2, 8), L.ones(1, 4, 3, 8), L.ones(1, 4, 2, 8)), None),
    RuntimeError, "")  # torch 2.13 returns a value for keys and values of different lengths

# ---------------------------------------------------------------- layers
row("linear-negative-features", (lambda L: picograd.nn.Linear(2, -1), lambda L: torch.nn.Linear(2, -1)), RuntimeError, "negative dimension")
row("linear-float-features", (lambda L: picograd.nn.Linear(2.5, 3), lambda L: torch.nn.Linear(2.5, 3)), TypeError, "")
row("embedding-negative", (lambda L: picograd.nn.Embedding(-1, 2), lambda L: torch.nn.Embedding(-1, 2)), RuntimeError, "negative dimension")
row("layernorm-negative", (lambda L: picograd.nn.LayerNorm(-1), lambda L: torch.nn.LayerNorm(-1)), RuntimeError, "negative dimension")
row("dropout-layer-p", (lambda L: picograd.nn.Dropout(1.5), lambda L: torch.nn.Dropout(1.5)), ValueError, "")
row("linear-layer-input", (lambda L: picograd.nn.Linear(2, 3)(x(L)), lambda L: torch.nn.Linear(2, 3)(x(L))), RuntimeError, "")
row("embedding-layer-float", (lambda L: picograd.nn.Embedding(4, 2)(L.zeros(3)), lambda L: torch.nn.Embedding(4, 2)(L.zeros(3))), RuntimeError, "")
row("layernorm-layer-input", (lambda L: picograd.nn.LayerNorm(4)(x(L)), lambda L: torch.nn.LayerNorm(4)(x(L))), RuntimeError, "")
row("rmsnorm-layer-input", (lambda L: picograd.nn.RMSNorm(4)(x(L)), lambda L: torch.nn.RMSNorm(4)(x(L))), RuntimeError, "")

# ---------------------------------------------------------------- convolution, pooling, scans and math families
def toplevel(name):
  """A top-level function (picograd.einsum, torch.meshgrid, ...) of the row's library."""
  return lambda L: getattr(picograd if isinstance(L, PG) else torch, name)


def img(L): return L.ones(1, 3, 5, 5)
def kern(L, *shape): return L.ones(*shape) if shape else L.ones(4, 3, 3, 3)


for name, call, exc, message in [
  ("conv2d-channels", lambda L: L.F.conv2d(img(L), kern(L, 4, 2, 3, 3)), RuntimeError, "channels"),
  ("conv2d-ndim", lambda L: L.F.conv2d(L.ones(3, 5), kern(L)), RuntimeError, "conv2d"),
  ("conv2d-groups", lambda L: L.F.conv2d(img(L), kern(L), groups=2), RuntimeError, "conv2d"),
  ("conv2d-stride-zero", lambda L: L.F.conv2d(img(L), kern(L), stride=0), RuntimeError, "stride"),
  ("conv2d-padding-negative", lambda L: L.F.conv2d(img(L), kern(L), padding=-1), RuntimeError, "negative padding"),
  ("conv2d-kernel-too-big", lambda L: L.F.conv2d(L.ones(1, 3, 2, 2), kern(L)), RuntimeError, "conv2d"),
  ("conv2d-padding-string", lambda L: L.F.conv2d(img(L), kern(L), padding="foo"), RuntimeError, "padding"),
  ("conv2d-same-strided", lambda L: L.F.conv2d(img(L), kern(L), padding="same", stride=2), RuntimeError, "same"),
  ("conv2d-dilation-zero", lambda L: L.F.conv2d(img(L), kern(L), dilation=0), RuntimeError, "dilation"),
  ("conv1d-bias", lambda L: L.F.conv1d(L.ones(1, 3, 5), kern(L, 4, 3, 3), bias=L.ones(5)), RuntimeError, "bias"),
  ("max-pool-kernel-zero", lambda L: L.F.max_pool2d(L.ones(1, 1, 4, 4), 0), RuntimeError, "max_pool2d"),
  ("max-pool-padding", lambda L: L.F.max_pool2d(L.ones(1, 1, 4, 4), 2, padding=2), RuntimeError, "half"),
  ("max-pool-output-empty", lambda L: L.F.max_pool2d(L.ones(1, 1, 1, 1), 3), RuntimeError, "too small"),
  ("avg-pool-kernel-negative", lambda L: L.F.avg_pool2d(L.ones(1, 1, 4, 4), -1), RuntimeError, "avg_pool2d"),
  ("interpolate-mode", lambda L: L.F.interpolate(L.ones(1, 1, 4, 4), scale_factor=2, mode="foo"), NotImplementedError, "foo"),
  ("interpolate-no-size", lambda L: L.F.interpolate(L.ones(1, 1, 4, 4)), ValueError, "size"),
  ("interpolate-size-and-scale", lambda L: L.F.interpolate(L.ones(1, 1, 4, 4), size=8, scale_factor=2), ValueError, "size"),
  ("interpolate-align-nearest", lambda L: L.F.interpolate(L.ones(1, 1, 4, 4), scale_factor=2, align_corners=True), ValueError, "align_corners"),
  ("pad-reflect-too-big", lambda L: L.F.pad(L.ones(1, 1, 3), (3, 3), mode="reflect"), RuntimeError, "reflect"),
  ("pad-unknown-mode", lambda L: L.F.pad(L.ones(1, 1, 3), (1, 1), mode="foo"), NotImplementedError, "foo"),
  ("sort-dim", lambda L: x(L).sort(5), IndexError, "out of range"),
  ("topk-too-many", lambda L: x(L).topk(4), RuntimeError, "out of range"),
  ("topk-negative", lambda L: x(L).topk(-1), RuntimeError, "out of range"),
  ("roll-lengths", lambda L: x(L).roll((1, 2), (0,)), RuntimeError, "same length"),
  ("roll-dim", lambda L: x(L).roll(1, 5), IndexError, "out of range"),
  ("diag-3d", lambda L: L.ones(2, 3, 4).diag(), RuntimeError, "diag"),
  ("diagonal-same-dims", lambda L: x(L).diagonal(0, 0, 0), RuntimeError, "diagonal"),
  ("cumprod-dim", lambda L: x(L).cumprod(5), IndexError, "out of range"),
  ("repeat-interleave-negative", lambda L: x(L).repeat_interleave(-1), RuntimeError, "non-negative"),
  ("scatter-float-index", lambda L: x(L).scatter(0, L.zeros(2, 3), 1.0), RuntimeError, "scatter"),
  ("scatter-reduce-mode", lambda L: x(L).scatter_reduce(0, L.zeros(2, 3, dtype=L.long), x(L), reduce="foo"), RuntimeError, "reduce"),
  ("masked-select-float-mask", lambda L: x(L).masked_select(x(L)), RuntimeError, "masked_select"),
  ("prod-dim", lambda L: x(L).prod(5), IndexError, "out of range"),
  ("lerp-broadcast", lambda L: x(L).lerp(L.ones(4), 0.5), RuntimeError, "cannot be broadcast"),
  ("fmod-broadcast", lambda L: x(L).fmod(L.ones(4)), RuntimeError, "cannot be broadcast"),
  ("isclose-broadcast", lambda L: x(L).isclose(L.ones(4)), RuntimeError, "cannot be broadcast"),
  ("normalize-dim", lambda L: L.F.normalize(x(L), dim=5), IndexError, "out of range"),
  ("softmin-dim", lambda L: L.F.softmin(x(L), dim=5), IndexError, "out of range"),
  ("hardtanh-bounds", lambda L: L.F.hardtanh(x(L), 1.0, -1.0), ValueError, "max_val"),
  ("shift-float", lambda L: x(L) << 1, NotImplementedError, "shift"),
  ("multinomial-negative", lambda L: L.tensor([0.5, -0.5]).multinomial(1), RuntimeError, "multinomial"),
  ("multinomial-too-many", lambda L: L.tensor([0.5, 0.5]).multinomial(3), RuntimeError, "n_sample"),
  ("multinomial-all-zero", lambda L: L.tensor([0.0, 0.0]).multinomial(1), RuntimeError, "sum of probabilities"),
  ("einsum-sizes", lambda L: toplevel("einsum")(L)("ij,jk->ik", x(L), L.ones(4, 5)), RuntimeError, ""),
  ("einsum-operands", lambda L: toplevel("einsum")(L)("ij,jk", x(L)), RuntimeError, "operand"),
  ("meshgrid-2d", lambda L: toplevel("meshgrid")(L)(x(L), L.ones(2), indexing="ij"), RuntimeError, "meshgrid"),
  ("meshgrid-indexing", lambda L: toplevel("meshgrid")(L)(L.ones(2), L.ones(2), indexing="foo"), RuntimeError, "indexing"),
  ("unfold-size", lambda L: x(L).unfold(1, 5, 1), RuntimeError, "unfold"),
  ("unfold-step-zero", lambda L: x(L).unfold(1, 2, 0), RuntimeError, "step"),
  ("bitcast-sizes", (lambda L: L.ones(3).bitcast(L.float64), lambda L: L.ones(3).view(L.float64)), RuntimeError, ""),
]:
  row(name, call, exc, message)

# ---------------------------------------------------------------- optimizers
row("optim-float-param", lambda L: L.optim.SGD([1.0], lr=0.1), TypeError, "Tensor")
row("optim-tensor-not-list", lambda L: L.optim.SGD(L.ones(2), lr=0.1), TypeError, "")
row("optim-none", lambda L: L.optim.SGD(None, lr=0.1), TypeError, "")
row("optim-adam-list-of-lists", lambda L: L.optim.Adam([[L.ones(2)]]), TypeError, "")
row("optim-empty", lambda L: L.optim.SGD([], lr=0.1), ValueError, "empty")
row("optim-sgd-lr", lambda L: L.optim.SGD(w(L), lr=-1), ValueError, "learning rate")
row("optim-sgd-lr-nan", (lambda L: L.optim.SGD(w(L), lr=float("nan")), None), ValueError, "")  # torch accepts a NaN learning rate
row("optim-sgd-momentum", lambda L: L.optim.SGD(w(L), lr=0.1, momentum=-1), ValueError, "momentum")
row("optim-sgd-weight-decay", lambda L: L.optim.SGD(w(L), lr=0.1, weight_decay=-1), ValueError, "weight_decay")
row("optim-sgd-nesterov", lambda L: L.optim.SGD(w(L), lr=0.1, nesterov=True), ValueError, "esterov")
row("optim-adam-lr", lambda L: L.optim.Adam(w(L), lr=-1), ValueError, "learning rate")
row("optim-adam-beta1", lambda L: L.optim.Adam(w(L), betas=(1.0, 0.9)), ValueError, "0")
row("optim-adam-beta2", lambda L: L.optim.Adam(w(L), betas=(0.9, -0.1)), ValueError, "1")
row("optim-adam-eps", lambda L: L.optim.Adam(w(L), eps=-1), ValueError, "eps")
row("optim-adam-weight-decay", lambda L: L.optim.Adam(w(L), weight_decay=-1), ValueError, "weight_decay")
row("optim-adamw-beta", lambda L: L.optim.AdamW(w(L), betas=(0.9, 1.5)), ValueError, "1")
row("optim-adamw-eps", lambda L: L.optim.AdamW(w(L), eps=-1e-8), ValueError, "eps")
row("optim-adamw-lr", lambda L: L.optim.AdamW(w(L), lr=-0.5), ValueError, "learning rate")

# ---------------------------------------------------------------- devices: RuntimeError naming the devices (no torch equivalent on this machine)
def other(L):
  """The other CPU-side device than the namespace's own."""
  return "PYTHON" if getattr(L, "device", "CPU") == "CPU" else "CPU"


def on_other(L, *shape): return Tensor.ones(*shape, device=other(L))


row("device-unknown", lambda L: L.ones(2, device="tpu"), RuntimeError, "")
row("device-bad-index", lambda L: L.ones(2, device="cpu:abc"), RuntimeError, "")
row("device-empty-index", lambda L: L.ones(2, device="cpu:"), RuntimeError, "")
row("device-to-unknown", lambda L: x(L).to("foo"), RuntimeError, "")
row("device-absurd-index", (lambda L: L.ones(2, device="CPU:99999999999999999999"), None), RuntimeError, "CPU")
row("device-absurd-python-index", (lambda L: L.ones(2, device="PYTHON:3"), None), RuntimeError, "PYTHON")
for name, fn in {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "lt": lambda a, b: a < b, "maximum": lambda a, b: a.maximum(b),
                 "matmul": lambda a, b: a @ b.T, "where": lambda a, b: picograd.where(a > 0, b, 0), "cat": lambda a, b: picograd.cat([a, b]),
                 "assign": lambda a, b: a.contiguous().realize().assign(b)}.items():
  row(f"device-mismatch-{name}", (lambda L, fn=fn: fn(x(L), on_other(L, 2, 3)), None), RuntimeError, "PYTHON")
row("device-mismatch-gather", (lambda L: x(L).gather(0, Tensor.zeros(2, 3, dtype=dtypes.int64, device=other(L))), None), RuntimeError, "PYTHON")
row("device-mismatch-index", (lambda L: x(L)[Tensor([0], device=other(L))], None), RuntimeError, "PYTHON")
row("device-mismatch-ce-target", (lambda L: PF.cross_entropy(x(L), Tensor([0, 1], device=other(L))), None), RuntimeError, "PYTHON")
row("device-mismatch-ce-weight", (lambda L: PF.cross_entropy(x(L), ints(L, 0, 1), weight=on_other(L, 3)), None), RuntimeError, "PYTHON")
row("device-mismatch-backward-gradient", (lambda L: (lambda p: (p * 2).backward(on_other(L, 2)))(L.ones(2, requires_grad=True)), None),
    RuntimeError, "PYTHON")
row("device-mismatch-optimizer", (lambda L: POptim.SGD([L.ones(2), on_other(L, 2)], lr=0.1), None), RuntimeError, "devices")


@pytest.fixture(params=["CPU", "PYTHON"])
def cpu_device(request) -> str:
  """The bad-input checks run before any kernel, so the two host devices are enough (CUDA adds nothing here)."""
  return request.param


def test_enough_rows():
  assert len(ROWS) >= 200, len(ROWS)


@pytest.mark.parametrize("ours, theirs, exc, message", ROWS)
def test_bad_input(cpu_device, ours, theirs, exc, message):
  with pytest.raises(exc) as raised: ours(PG(cpu_device))
  assert message in str(raised.value), f"message {str(raised.value)!r} lacks {message!r}"
  if theirs is not None:
    with pytest.raises(exc): theirs(TORCH)  # the row's type is PyTorch's


# ---------------------------------------------------------------- integers wrap to their dtype on every device, as on the CPU and in PyTorch
@pytest.mark.parametrize("fn", [
  lambda L, a: a + 1, lambda L, a: a * 100000, lambda L, a: a * a, lambda L, a: -a, lambda L, a: a + 2**40, lambda L, a: a * 3 * 2**30,
  lambda L, a: (a.long() * 2**62) * 4, lambda L, a: a.sum(), lambda L, a: a - 2**31 + 1,
], ids=["add", "mul", "square", "neg", "big-constant", "folded-constants", "int64-folded", "sum-int64", "sub-min"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_integers_wrap(cpu_device, fn, dtype):
  info = np.iinfo(dtype)
  values = np.array([info.max, info.min, min(100000, info.max), 7], dtype)
  got = fn(PG(cpu_device), Tensor(values, device=cpu_device))
  want = fn(TORCH, torch.tensor(values))
  assert got.dtype.name == str(want.dtype).removeprefix("torch.")
  np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("dev", ["CPU:7", "PYTHON:1", "CPU:", "TPU", "cuda:x"])
def test_absurd_default_device_is_refused_at_the_first_tensor(dev):
  from picograd import Context
  with Context(DEV=dev):
    with pytest.raises(RuntimeError, match="device"): Tensor([1.0])


@pytest.mark.parametrize("shape", [(2**62,), (2**40, 2**40)], ids=["2^64-bytes", "2^82-bytes"])
def test_absurd_allocation_is_a_memory_error_naming_the_size(cpu_device, shape):
  with pytest.raises(MemoryError, match=rf"{cpu_device}: out of memory allocating {4 * shape[0] * (shape[1] if len(shape) > 1 else 1)} bytes"):
    Tensor.zeros(*shape, device=cpu_device).contiguous().realize()
  np.testing.assert_array_equal((Tensor.ones(3, device=cpu_device) + 1).numpy(), [2, 2, 2])  # and the device still works
