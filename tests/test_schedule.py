"""Kernel counts for the fusion policy of DESIGN §4, laziness, and the schedule cache.

`picograd.schedule(t)` lists the kernels realizing `t` would run, without running them.
"""
import numpy as np
import pytest
import picograd
from picograd import Tensor, dtypes
from picograd.engine import realize as engine
from compare import rand

DEV = "CPU"


def kernels(*tensors: Tensor) -> int:
  return len(picograd.schedule(*tensors))


@pytest.fixture
def x() -> Tensor: return Tensor(rand((4, 6), seed=1), device=DEV)
@pytest.fixture
def y() -> Tensor: return Tensor(rand((6, 4), seed=2), device=DEV)


def test_elementwise_chain_with_movement_ops_between_is_one_kernel(x, y):
  out = ((x + 1).T * y).exp().reshape(24).flip(0)[::2].reshape(3, 4).pad((1, 1)) - 1
  assert kernels(out) == 1
  assert kernels((x * 2).permute(1, 0).expand(2, 6, 4) + y) == 1


def test_elementwise_producers_fuse_into_their_reduction(x):
  assert kernels((x * x).sum(1)) == 1
  assert kernels((x.exp() + 1).max(0)) == 1


def test_matmul_is_one_kernel(x, y):
  assert kernels(x @ y) == 1
  assert kernels(Tensor(rand((2, 4, 6)), device=DEV) @ y) == 1  # batched
  assert kernels((x + 1) @ y.relu()) == 1  # with elementwise producers on both sides


def test_elementwise_consumers_of_a_reduction_fuse_into_it(x):
  assert kernels(x.sum(1) * 2 + 1) == 1
  assert kernels((x @ x.T).relu() * 0.5) == 1


def test_row_softmax_is_one_kernel(x):
  # the row max and the row sum of exp are broadcast back over the rows they reduced (the trailing
  # axis), so the kernel computes each once per row, before the loop over the row's elements
  assert kernels(x.softmax(-1)) == 1
  assert kernels(x.log_softmax(-1)) == 1
  assert kernels(x.layer_norm((x.shape[-1],))) == 1


def test_function_of_a_stored_reduction_is_stored_by_its_kernel():
  """A stored reduction read only through an elementwise function of it and constants (a layer norm's 1 / sqrt(var / n +
  eps), which its forward and its backward both read) is computed by the kernel that stores the function: no kernel of
  per-row values alone."""
  x = Tensor(rand((64, 96), seed=2), device=DEV, requires_grad=True)
  w, b = (Tensor(rand((96,), seed=s), device=DEV, requires_grad=True) for s in (4, 5))
  y = x.layer_norm((96,), w, b)
  steps = picograd.schedule(y, *(y * Tensor(rand((64, 96), seed=3), device=DEV)).sum().gradient(x, w, b))
  assert not any(all(b.size == 64 for b in s.buffers) for s in steps), [[b.size for b in s.buffers] for s in steps]


def test_reduction_broadcast_back_over_a_leading_axis_is_realized_first(x):
  # a column mean broadcast over the rows would be needed inside the inner loop: realize it first
  assert kernels(x - x.mean(0, keepdim=True)) == 2
  # max and sum of exp over axis 0, then the divide
  assert kernels(x.softmax(0)) == 3
  # a transposed consumer iterates the rows innermost: no fusion either
  assert kernels(x.softmax(-1).T) == 3


def test_concatenation_read_by_a_reduction_is_stored_first_on_cuda(x):
  # the gradient of three slices of one product (q, k, v of a fused projection) is a sum of three padded pieces. On CUDA the
  # weight gradient reads it from its own buffer, not through a gate per piece at every load; the CPU's optimizer splits
  # the product's loop into one gate-free loop per piece instead (tests/test_cpu_perf_passes.py), so it keeps one kernel
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  w = Tensor(rand((6, 12), seed=3), device=DEV, requires_grad=True)
  q, k, v = (x @ w).split(4, dim=1)
  ((q * k).relu() * v).sum().backward()
  roots, _ = _normalize([w.grad.uop])
  cuda, cpu = (create_template(roots, [kind]).kernels for kind in ("CUDA", "CPU"))
  concat = [k for k in cuda if k.ast is not None and "PAD" in str(k.ast)]
  assert len(cuda) == len(cpu) + 1 and len(concat) == 1 and "REDUCE" not in str(concat[0].ast)
  cat = picograd.cat([x, x * 2], dim=1)
  for t, n in ((cat, 1), (cat @ Tensor(rand((12, 3)), device=DEV), 2)):  # stored only when a reduction reads it
    assert len(create_template(_normalize([t.uop])[0], ["CUDA"]).kernels) == n


def test_autocast_operands_are_stored_in_16_bits_on_cuda(x):
  # under autocast a float32 weight is cast for its product and again for its gradient's, through other views: on CUDA
  # the cast goes below the views (one node) and is stored once in 16 bits, so every product reads 16-bit buffers (its
  # tiles are copied as they are); the CPU keeps the casts inside its products (its GEMM converts while it packs)
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  from picograd.ir.ops import Ops, toposort
  w = Tensor(rand((12, 16), seed=4), device=DEV, requires_grad=True)
  a = Tensor(rand((8, 12), seed=5), device=DEV, requires_grad=True)
  with picograd.autocast(dtypes.bfloat16):
    ((a @ w).float().relu() * Tensor(rand((8, 16), seed=6), device=DEV)).sum().backward()
  roots, _ = _normalize([a.grad.uop, w.grad.uop])

  def product_operands(k) -> list:
    muls = [n for n in toposort([k.ast]) if n.op is Ops.REDUCE for m in [n.src[0]] if m.op in (Ops.MUL, Ops.CAST)]
    return [s for r in muls for s in toposort([r.src[0]]) if s.op is Ops.CAST and s.dtype == dtypes.bfloat16]
  cuda, cpu = (create_template(roots, [kind] * 2).kernels for kind in ("CUDA", "CPU"))
  casts = [k for k in cuda if k.ast is not None and not any(n.op is Ops.REDUCE for n in toposort([k.ast]))
           and any(n.op is Ops.CAST and n.dtype == dtypes.bfloat16 for n in toposort([k.ast]))]
  assert casts and all(not product_operands(k) for k in cuda if k.ast is not None)
  assert any(product_operands(k) for k in cpu if k.ast is not None) and len(cuda) > len(cpu)


def test_autocast_products_store_their_16_bit_result_on_cuda(x):
  # under autocast a product's float32 sum is read only as bf16 (its cast): on CUDA the product kernel stores the cast,
  # so its output and every kernel reading it move half the bytes; the values read are the same. The CPU keeps float32
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  from picograd.ir.ops import Ops, toposort
  w = Tensor(rand((6, 16), seed=4), device=DEV)
  with picograd.autocast(dtypes.bfloat16):
    h = x @ w
  outs = [h.float().relu(), (h.float() * 2).exp()]  # two kernels read the product
  roots, _ = _normalize([t.uop for t in outs])
  for kind, stored in (("CUDA", dtypes.bfloat16), ("CPU", dtypes.float32)):
    kernels = [k.ast for k in create_template(roots, [kind] * 2).kernels if k.ast is not None]
    [product] = [a for a in kernels if any(n.op is Ops.REDUCE for n in toposort([a]))]
    assert product.src[0].src[0].dtype == stored, kind
  got = [t.numpy() for t in outs]
  with picograd.autocast(dtypes.bfloat16):
    ref = (x @ w).float()
  np.testing.assert_array_equal(got[0], ref.relu().numpy())


def test_autocast_linear_stores_its_bias_for_the_products_reading_it_on_cuda(x):
  # attention's q, k and v are views of one linear's bf16 output plus its bias, read by several products: on CUDA the
  # linear's kernel adds the bias (its epilogue) and stores the sum, so the products read plain 16-bit loads (their tiles
  # then come by TMA) instead of adding the bias at every tile; the CPU adds it where it is read
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  from picograd.ir.ops import Ops, toposort
  w, b = Tensor(rand((24, 6), seed=4), device=DEV), Tensor(rand((24,), seed=5), device=DEV)
  with picograd.autocast(dtypes.bfloat16):
    q, k = x.linear(w, b).reshape(-1, 2, 12).transpose(0, 1).split(6, dim=2)  # the bias added in bf16, as nn.Linear does
    outs = [q @ k.transpose(1, 2), q.transpose(1, 2) @ k]
  roots, _ = _normalize([t.uop for t in outs])
  for kind in ("CUDA", "CPU"):
    kernels = [k.ast for k in create_template(roots, [kind] * 2).kernels if k.ast is not None]
    products = [a for a in kernels if any(n.op is Ops.REDUCE for n in toposort([a]))]
    biased = [a for a in products if any(n.op is Ops.ADD for n in toposort([a]))]
    assert (len(products), len(biased)) == ((3, 1) if kind == "CUDA" else (3, 2)), kind
  got = [t.numpy() for t in outs]
  ref = (x.numpy() @ w.numpy().T + b.numpy()).reshape(-1, 2, 12).transpose(1, 0, 2)
  want = ref[..., :6] @ ref[..., 6:].transpose(0, 2, 1)
  np.testing.assert_allclose(got[0], want, rtol=2e-2, atol=2e-2 * np.abs(want).max())  # bf16 operands


def test_autocast_gelu_gradient_is_its_products_epilogue_on_cuda(x):
  # under autocast an MLP's gelu gradient (bf16) is read by two products (the weight's and the input's gradients) and by the
  # bias's sum. On CUDA it is the epilogue of the product that computes the gradient reaching it, stored once: gelu is
  # evaluated in two kernels (its forward, that epilogue), not also inside the bias's sum; the CPU recomputes it where read
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  from picograd.ir.ops import Ops, toposort
  w1 = Tensor(rand((16, 6), seed=4), device=DEV, requires_grad=True)
  b1 = Tensor(rand((16,), seed=5), device=DEV, requires_grad=True)
  w2 = Tensor(rand((6, 16), seed=6), device=DEV, requires_grad=True)
  with picograd.autocast(dtypes.bfloat16):
    loss = x.linear(w1, b1).gelu().linear(w2).float().square().sum()
  loss.backward()
  roots, _ = _normalize([b1.grad.uop, w1.grad.uop, w2.grad.uop])
  gelus = {}
  for kind in ("CUDA", "CPU"):  # (kernel evaluates gelu, its reductions) of each kernel evaluating it
    kernels = [k.ast for k in create_template(roots, [kind] * 3).kernels if k.ast is not None]
    gelus[kind] = sorted((True, sum(n.op is Ops.REDUCE for n in toposort([a]))) for a in kernels if any(n.op is Ops.EXP2 for n in toposort([a])))
  assert gelus["CUDA"] == [(True, 0), (True, 1)] and len(gelus["CPU"]) > 2, gelus
  import torch
  tw1, tb1, tw2 = (torch.tensor(t.numpy(), requires_grad=True) for t in (w1, b1, w2))
  (torch.nn.functional.gelu(torch.tensor(x.numpy()) @ tw1.T + tb1, approximate="tanh") @ tw2.T).square().sum().backward()
  for got, want in ((b1.grad, tb1.grad), (w1.grad, tw1.grad)):  # bf16 products against float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=5e-2, atol=5e-2 * float(want.abs().max()))


def test_long_shared_elementwise_chain_is_cut():
  # a running sum read at every step (a residual stream's gradient through many layers): each step's kernel would recompute
  # the whole sum so far, reading every buffer added before it; a value read by several nodes whose fused graph reads more
  # than SHARED_INPUTS_MAX buffers is stored once, so no kernel reads more than a few
  from picograd.engine.schedule import SHARED_INPUTS_MAX
  pieces = [rand((8, 16), seed=10 + i) for i in range(30)]
  total, outs = None, []
  for p in pieces:
    total = Tensor(p, device=DEV) if total is None else total + Tensor(p, device=DEV)
    outs.append(total.sum(1))
  steps = picograd.schedule(*outs)
  bound = 2 * SHARED_INPUTS_MAX + 2
  # (a kernel storing several of the sums, engine/outputs.py, reads each buffer once for all of them)
  assert bound < len(pieces) and max(len(s.buffers) / s.outputs for s in steps) <= bound
  Tensor.realize(*outs)
  for out, want in zip(outs, np.cumsum(pieces, 0)):
    np.testing.assert_allclose(out.numpy(), want.sum(1), rtol=1e-5)


def test_checked_index_read_by_a_large_reduction_is_checked_once():
  # an embedding lookup is a one-hot sum over the table's rows: with the index's range check inside, every term checks it;
  # above CHECKED_REDUCE_MIN terms the checked indices get a kernel (and a buffer) of their own, below it the check stays
  def checked(rows: int, n: int) -> list[bool]:
    table = Tensor(rand((rows, 64)), device=DEV)
    idx = Tensor(np.arange(n, dtype=np.int32) % rows, device=DEV)
    steps = picograd.schedule(table[idx])
    assert (table[idx].numpy() == table.numpy()[np.arange(n) % rows]).all()
    return [("REDUCE" in str(s.ast)) for s in steps if s.kernel is not None and s.kernel.checks]
  assert checked(512, 4096) == [False]  # 134M terms: checked once per index
  assert checked(10, 3) == [True]  # 1,920 terms: inside the sum


def test_contiguous_is_a_boundary(x):
  assert kernels((x + 1) * 2) == 1
  assert kernels((x + 1).contiguous() * 2) == 2


def test_movement_ops_alone_on_a_realized_tensor(x):
  # a reshape of a realized buffer is a view of it: nothing to run
  assert kernels(x.reshape(24)) == 0 and kernels(x.reshape(2, 3, 4)) == 0
  # realizing a strided view makes a copy (one kernel) ...
  assert kernels(x.T) == 1 and kernels(x[1:, ::2]) == 1
  # ... but a consumer reads the view directly: no copy kernel first
  assert kernels(x.T + 1) == 1
  assert kernels(x.permute(1, 0).reshape(2, 12)[:, 1:].exp()) == 1


def test_building_a_graph_runs_nothing(x, y):
  before = engine.stats["kernels_run"]
  out = ((x @ y).softmax(-1) + 1).sum()
  assert out.shape == ()
  assert engine.stats["kernels_run"] == before
  assert kernels(out) > 0
  assert engine.stats["kernels_run"] == before  # schedule() does not run the kernels either


def test_after_realize_there_is_nothing_to_schedule(x):
  t = (x * 2 + 1).sum(0)
  assert kernels(t) == 1
  t.realize()
  assert picograd.schedule(t) == []
  before = engine.stats["kernels_run"]
  t.numpy()
  assert engine.stats["kernels_run"] == before


def test_realized_intermediate_is_an_input_of_later_kernels(x):
  h = (x * 2).sum(1).realize()
  assert kernels(h + 1) == 1
  assert kernels(h.reshape(2, 2) * h.reshape(2, 2)) == 1


def test_several_outputs_share_one_schedule(x):
  a, b = x + 1, x * 2
  # elementwise outputs of one shape that read the same input are one kernel storing both (engine/outputs.py)
  (k,) = picograd.schedule(a, b)
  assert k.outputs == 2


def test_scheduled_kernels_carry_their_text_forms(x, y):
  (k,) = picograd.schedule((x @ y).relu())
  assert k.name and k.ir and k.source
  assert "define" in k.source  # LLVM IR for the CPU


def test_same_graph_on_new_data_hits_the_schedule_cache():
  def step(data: np.ndarray) -> np.ndarray:
    t = Tensor(data, device=DEV)
    return ((t * 3).sum(0) + t.max()).numpy()

  a, b = rand((5, 7), seed=10), rand((5, 7), seed=11)
  step(a)  # the first time may miss
  hits = engine.stats["cache_hits"]
  out = step(b)
  assert engine.stats["cache_hits"] == hits + 1
  np.testing.assert_allclose(out, (b * 3).sum(0) + b.max(), rtol=1e-5)
  # a graph of another shape is a different schedule
  step(rand((5, 8), seed=12))
  assert engine.stats["cache_hits"] == hits + 1


def test_a_root_that_reshapes_a_stored_value_shares_its_buffer(x):
  """s is stored (read along both axes by c); realizing c and s.reshape too runs two kernels, not a third copying s."""
  s = x.sum(1)
  c = s.reshape(1, 4) + s.reshape(4, 1)
  view = s.reshape(2, 2)
  assert kernels(c, view) == 2
  c.realize(view)
  expected = x.numpy().sum(1)
  np.testing.assert_allclose(view.numpy(), expected.reshape(2, 2), rtol=1e-6)
  np.testing.assert_allclose(c.numpy(), expected[None, :] + expected[:, None], rtol=1e-6)


def test_a_reshaped_assignment_root_keeps_its_own_buffer():
  """A root reshaping an assignment is not the assigned variable's buffer: the variable's later updates leave it alone."""
  var = Tensor(np.zeros(4, np.float32), device=DEV).realize()
  seen = var.assign(var + 1).reshape(2, 2)
  seen.realize()
  var.assign(var + 10).realize()
  np.testing.assert_array_equal(seen.numpy(), np.ones((2, 2), np.float32))
