"""Several devices: device names with an index, sharded tensors (MultiTensor), collectives, data-parallel and ZeRO-1 training.

Everything runs on virtual CPU devices (CPU:0, CPU:1, CPU:2), whose collectives are host copies, so the
semantics are checked on every commit. The `cuda` tests run the same collectives through NCCL with a
one-rank communicator (and a real peer copy where two GPUs are visible); they skip without a GPU.
"""
import numpy as np
import pytest
import torch
import picograd
from picograd import Tensor, nn, optim, MultiTensor, all_reduce, all_gather, reduce_scatter, broadcast
from picograd.runtime.device import DeviceError, canonicalize
from conftest import CUDA_ERROR

D2 = ("CPU:0", "CPU:1")
D3 = ("CPU:0", "CPU:1", "CPU:2")
needs_cuda = pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA: {CUDA_ERROR}")
RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 6)).astype(np.float32)   # 5 rows: uneven shards over 2 and 3 devices
W = RNG.standard_normal((6, 3)).astype(np.float32)


def close(a, b, tol=1e-5): np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_device_names_with_an_index():
  assert canonicalize("cpu:0") == "CPU" and canonicalize("CPU:1") == "CPU:1" and canonicalize("cuda:0") == "CUDA"
  with pytest.raises(DeviceError, match="virtual CPU devices"): canonicalize("CPU:99")
  t = Tensor(X, requires_grad=True)
  moved = t.to("CPU:1")
  assert moved.device == "CPU:1"
  close(moved.numpy(), X)
  (moved * moved).sum().backward()  # the gradient travels back to CPU:0
  assert t.grad is not None and t.grad.device == "CPU"
  close(t.grad.numpy(), 2 * X)
  with pytest.raises(RuntimeError, match="different devices"): Tensor(X) + moved


@pytest.mark.parametrize("devices", [D2, D3], ids=["2dev", "3dev"])
def test_sharded_elementwise_and_gather(devices):
  s = Tensor(X).shard(devices, axis=0)
  assert isinstance(s, MultiTensor) and s.shape == X.shape and s.devices == tuple(canonicalize(d) for d in devices)
  assert [p.shape[0] for p in s.pieces] == ([3, 2] if len(devices) == 2 else [2, 2, 1])
  r = Tensor(X[0]).shard(devices)  # replicated, broadcast along the rows
  out = (s * 2 + r).exp() - Tensor(X)  # a plain tensor is replicated, then sliced to match
  close(out.to("CPU").numpy(), np.exp(X * 2 + X[0]) - X)
  close(s.to("CPU:1").numpy(), X)
  c = Tensor(X).shard(devices, axis=1) / Tensor(X).shard(devices, axis=1).abs().maximum(0.5)
  close(c.numpy(), X / np.maximum(np.abs(X), 0.5))
  with pytest.raises(NotImplementedError, match="different axes"): s + Tensor(X).shard(devices, axis=1)


def test_reductions_over_sharded_and_unsharded_axes():
  s = Tensor(X).shard(D3, axis=1)
  total = s.sum()
  assert total.axis is None and total.shape == ()
  close(total.item(), X.sum())
  close(s.sum(0).numpy(), X.sum(0))                  # not the sharded axis: stays sharded
  assert s.sum(0).axis == 0 and s.sum(0, keepdim=True).axis == 1
  close(s.sum(1, keepdim=True).numpy(), X.sum(1, keepdims=True))
  close(s.max(1).numpy(), X.max(1))                  # an all-reduce with max
  close(s.mean().item(), X.mean())
  close(s.softmax(0).numpy(), torch.tensor(X).softmax(0).numpy())
  with pytest.raises(NotImplementedError, match="sharded axis"): s.softmax(1)


def test_matmul_contracting_a_sharded_axis():
  a, b = Tensor(X).shard(D2, axis=1), Tensor(W).shard(D2, axis=0)
  out = a @ b
  assert out.axis is None
  close(out.to("CPU").numpy(), X @ W)
  close((a @ Tensor(W)).numpy(), X @ W)                  # the replicated side is sliced to match
  rows = Tensor(X).shard(D2, axis=0) @ Tensor(W)         # rows sharded: no collective, stays sharded
  assert rows.axis == 0
  close(rows.numpy(), X @ W)
  cols = Tensor(X).shard(D2) @ Tensor(W).shard(D2, axis=1)
  assert cols.axis == 1
  close(cols.numpy(), X @ W)
  assert any("allreduce" in k.name for k in picograd.schedule(*out.pieces))


def test_reshape_and_permute_keep_the_layout():
  s = Tensor(X.reshape(5, 2, 3)).shard(D2, axis=0)
  close(s.reshape(10, 3).numpy(), X.reshape(10, 3))
  assert s.reshape(-1).axis == 0
  close(s.permute(2, 0, 1).numpy(), X.reshape(5, 2, 3).transpose(2, 0, 1))
  assert s.permute(2, 0, 1).axis == 1
  merged = Tensor(X.reshape(5, 2, 3)).shard(D2, axis=1).reshape(5, 6)  # the sharded axis merges with the one after it
  assert merged.axis == 1
  close(merged.numpy(), X)
  with pytest.raises(NotImplementedError, match="split"): Tensor(X).shard(D2, axis=1).reshape(30)


def test_backward_through_sharded_ops_matches_torch():
  x, w = Tensor(X, requires_grad=True), Tensor(W, requires_grad=True)
  xs, ws = x.shard(D3, axis=1), w.shard(D3, axis=0)
  loss = (xs @ ws).tanh().sum() * 0.5 + xs.max(1).mean() + (xs * xs).sum(0).sum()
  loss.backward()
  tx, tw = torch.tensor(X, requires_grad=True), torch.tensor(W, requires_grad=True)
  tl = (tx @ tw).tanh().sum() * 0.5 + tx.max(1).values.mean() + (tx * tx).sum(0).sum()
  tl.backward()
  close(loss.item(), tl.item())
  close(x.grad.numpy(), tx.grad.numpy())
  close(w.grad.numpy(), tw.grad.numpy())
  # a replicated leaf: each piece's gradient is its graph's part; backward() all-reduces them
  wr = Tensor(W).shard(D2)
  wr.requires_grad = True
  (Tensor(X).shard(D2, axis=0) @ wr).square().mean().backward()
  tw.grad = None
  (torch.tensor(X) @ tw).square().mean().backward()
  for g in wr.grad.pieces: close(g.numpy(), tw.grad.numpy())


def test_collectives_and_their_jit_replay():
  pieces = [Tensor(X * (i + 1), device=d) for i, d in enumerate(D3)]
  for out in all_reduce(pieces): close(out.numpy(), 6 * X)
  for out in all_reduce(pieces, "max"): close(out.numpy(), np.maximum(X, 3 * X))
  gathered = all_gather([Tensor(X[:, :2] + i, device=d) for i, d in enumerate(D3)])
  for out in gathered: close(out.numpy(), np.concatenate([(X[:, :2] + i).reshape(-1) for i in range(3)]))
  scattered = reduce_scatter([Tensor(X[:, :3] * (i + 1), device=d) for i, d in enumerate(D3)])
  for i, out in enumerate(scattered): close(out.numpy(), (6 * X[:, :3]).reshape(-1)[5 * i:5 * (i + 1)])
  for d, out in zip(D3, broadcast(Tensor(X, device="CPU:1"), D3)):
    assert out.device == canonicalize(d)
    close(out.numpy(), X)
  with pytest.raises(picograd.ShapeError, match="equal blocks"): reduce_scatter([Tensor(X[:, :2], device=d) for d in D3])

  @picograd.jit
  def step(a, b):
    return [t * 2 for t in all_reduce([a + 1, b])]
  for i in range(4):  # call 2 captures, 3 and 4 replay the collective on new inputs
    a, b = Tensor(X + i), Tensor(X * i, device="CPU:1")
    outs = step(a, b)
    for o in outs: close(o.numpy(), 2 * (X + i + 1 + X * i))
  assert step.calls == 2


def test_independent_collectives_launch_as_one_group_dependent_ones_do_not():
  from picograd.engine.realize import _collective_group
  a, b = Tensor(X, device="CPU:0"), Tensor(X * 2, device="CPU:1")
  first = all_reduce([a + 1, b + 1])
  second = all_reduce([a * 3, b * 3])
  steps = [s for s in picograd.schedule(*first, *second) if s.collective]
  assert len(steps) == 2 and len(_collective_group(steps, 0)) == 2
  chained = all_reduce(all_reduce([a + 1, b + 1]))  # the second reads what the first writes
  steps = picograd.schedule(*chained)
  assert [s.collective is not None for s in steps] == [False, False, True, True] and len(_collective_group(steps, 2)) == 1
  for t in chained: close(t.numpy(), 2 * (3 * X + 2))


class _MLP:
  def __init__(self, device):
    self.l1, self.l2 = nn.Linear(8, 16, device=device), nn.Linear(16, 4, device=device)
  def __call__(self, x): return self.l2(self.l1(x).tanh())


def _mlp_loss(model, x, y): return model(x).cross_entropy(y)


def _train(devices, zero1=False, steps=20, plain_device="CPU"):
  """Losses and final parameters of every replica after `steps` AdamW steps under the JIT (devices None: plain, on plain_device)."""
  rng = np.random.default_rng(1)
  xs, ys = rng.standard_normal((steps, 8, 8)).astype(np.float32), rng.integers(0, 4, (steps, 8))
  Tensor.manual_seed(3)
  if devices is None:
    model = _MLP(plain_device)
    opt = optim.AdamW(nn.get_parameters(model), lr=1e-2)
    replicas, loss_of = [model], lambda x, y: _mlp_loss(model, x, y)
  else:
    dp = nn.DataParallel(_MLP, devices, zero1=zero1)
    opt = dp.optimizer(lambda params: optim.AdamW(params, lr=1e-2))
    replicas, loss_of = dp.replicas, lambda x, y: dp.loss(_mlp_loss, x, y)

  @picograd.jit
  def step(x, y):
    loss = loss_of(x, y)
    opt.zero_grad()
    loss.backward()
    first = loss if devices is None else loss.pieces[0]
    Tensor.realize(first, *opt.schedule_step())
    return first

  home = plain_device if devices is None else devices[0]
  losses = [step(Tensor(xs[i], device=home), Tensor(ys[i], device=home)).item() for i in range(steps)]
  assert step.calls == 2  # replayed from the third step on
  return losses, [[p.numpy() for p in nn.get_parameters(r)] for r in replicas]


def test_data_parallel_and_zero1_match_single_device_training():
  base_losses, (base,) = _train(None)
  for zero1 in (False, True):
    losses, replicas = _train(D2, zero1)
    close(losses, base_losses)
    for params in replicas:
      for got, want in zip(params, base): close(got, want)
    for a, b in zip(replicas[0], replicas[1]): np.testing.assert_array_equal(a, b)  # identical weights on every device
  with pytest.raises(ValueError, match="evenly"): nn.DataParallel(_MLP, D3).loss(_mlp_loss, Tensor(X[:4]), Tensor([0, 1, 2, 3]))


# ---------------------------------------------------------------------------------------------- CUDA: NCCL with one rank

@needs_cuda
def test_cuda_nccl_one_rank_collectives():
  from picograd.runtime import nccl
  assert nccl.version() >= (2, 0, 0)
  x = Tensor(X, device="CUDA")
  (r,) = all_reduce([x])
  close(r.numpy(), X)
  (m,) = all_reduce([x * 2], "max")
  close(m.numpy(), 2 * X)
  (g,) = all_gather([x])
  close(g.numpy(), X.reshape(-1))
  (s,) = reduce_scatter([x + 1])
  close(s.numpy(), (X + 1).reshape(-1))
  (b,) = broadcast(x - 1, ["CUDA"])
  close(b.numpy(), X - 1)
  assert any("allreduce" in k.name for k in picograd.schedule(*all_reduce([x + 3])))


@needs_cuda
def test_cuda_jit_replays_a_collective():
  @picograd.jit
  def step(a):
    (out,) = all_reduce([a * 2 + 1])
    return out.sum()
  for i in range(4):
    close(step(Tensor(X + i, device="CUDA")).item(), (2 * (X + i) + 1).sum(), 1e-4)
  assert step.calls == 2 and any(s.collective for s in step.capture.steps)


@needs_cuda
def test_cuda_data_parallel_one_gpu_matches_plain_training():
  base_losses, (base,) = _train(None, plain_device="CUDA")
  for zero1 in (False, True):  # one-rank NCCL all-reduces (plain), reduce-scatters and all-gathers (ZeRO-1)
    losses, (params,) = _train(["CUDA"], zero1=zero1)
    close(losses, base_losses)
    for got, want in zip(params, base): close(got, want)


@needs_cuda
def test_cuda_peer_copy_between_two_gpus():
  from picograd.runtime.device import get_device
  try: get_device("CUDA:1")
  except DeviceError as e: pytest.skip(str(e))
  t = Tensor(X, device="CUDA") * 2
  moved = (t.to("CUDA:1") + 1).to("CUDA")
  close(moved.numpy(), 2 * X + 1)
  for out in all_reduce([Tensor(X, device="CUDA"), Tensor(X, device="CUDA:1")]): close(out.numpy(), 2 * X)


def test_one_graph_realized_for_two_tensors_gives_two_buffers():
  # found through ZeRO-1, whose flat optimizer blocks of equal size got Adam moments sharing one buffer; plain Adam did
  # the same for parameters of one shape (layer norms' weights and biases)
  from picograd.engine.realize import buffer_of
  a, b = Tensor.zeros(4).contiguous(), Tensor.zeros(4).contiguous()
  Tensor.realize(a, b)
  assert buffer_of(a) is not buffer_of(b)
  params = [Tensor.ones(3).contiguous(), Tensor.ones(3).contiguous()]
  opt = optim.Adam(params, lr=0.1)
  assert buffer_of(opt.m[0]) is not buffer_of(opt.m[1])
  params[0].grad, params[1].grad = Tensor([1.0, 1.0, 1.0]), Tensor([-1.0, -1.0, -1.0])
  opt.step()
  close(params[0].numpy(), [0.9] * 3)
  close(params[1].numpy(), [1.1] * 3)


def test_gpt_example_trains_data_parallel_like_one_device():
  import sys, os
  from conftest import need_data
  need_data("tinyshakespeare.txt")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
  import gpt
  tiny = ["--config", "small", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch", "16", "--lr", "1e-2",
          "--warmup", "5", "--eval-every", "6", "--eval-batches", "1", "--sample-chars", "0", "--plot", "", "--quiet", "--steps", "6"]
  one = gpt.main(tiny)
  for extra in (["--devices", "2"], ["--devices", "2", "--zero1"]):
    out = gpt.main([*tiny, *extra])
    close(out["losses"], one["losses"])
    close(out["val_loss"], one["val_loss"])
