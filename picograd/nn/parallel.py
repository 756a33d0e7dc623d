"""Data-parallel training over several devices (library layer), with an optional ZeRO-1 optimizer.

    dp = nn.DataParallel(lambda device: GPT(cfg, vocab, device=device), ["CUDA:0", "CUDA:1"])
    opt = dp.optimizer(lambda params: optim.AdamW(params, lr=1e-3))         # or DataParallel(..., zero1=True)
    loss = dp.loss(loss_fn, x, y)            # the batch is sharded along axis 0, one replica per device
    opt.zero_grad(); loss.backward()         # gradients are all-reduced: every replica gets the same
    Tensor.realize(loss.pieces[0], *opt.schedule_step())

Replicas: `make_model(device)` builds one model per device; replica 0's weights are broadcast to the
others, so all start identical. Each parameter is a replicated `MultiTensor` whose pieces are the
replicas' tensors. The forward and backward of each replica are ordinary picograd graphs on its
device; `dp.loss` all-reduces the per-device mean losses into the global mean, and the backward
pass through that all-reduce reaches every replica. Plain data parallelism then all-reduces every
gradient (`MultiTensor.backward`) and runs one optimizer per device on identical gradients, so the
weights stay identical (the same kernels on the same values). Everything is one lazy graph: the
whole step is one schedule, and `picograd.jit` replays it, collectives included.

ZeRO-1 (`zero1=True`): the optimizer state is sharded. Each parameter is flattened and padded to a
multiple of n; device i keeps a master copy of block i only and an optimizer over those blocks,
so each device holds 1/n of Adam's moments. A step reduce-scatters the gradients (device i gets
the summed gradient of its block), updates its blocks, and all-gathers the updated blocks into
every replica's parameters. The arithmetic per element is the same as without sharding, so ZeRO-1
training equals plain data parallelism (and single-device training) up to the order of the sums.

Several hosts (designed, not built). What changes is who drives which device, not the math:
- one process per host (it keeps driving all of its GPUs with group calls) or per GPU; each knows
  its rank, the world size and a rendezvous address (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
  as torchrun sets them). Rank 0 creates the NCCL unique id and serves it over a small TCP store;
  the others fetch it and call ncclCommInitRank (runtime/nccl.py's docstring), so the communicator
  spans the hosts and NCCL carries the inter-host traffic over InfiniBand or sockets.
- a MultiTensor's pieces then include devices this process does not drive. Each process builds
  only its own pieces' graphs; a COLLECTIVE node carries the global device list and the process's
  ranks, and the scheduler launches the local part of the group. Replicas on other hosts are
  built by their own processes from the same seed and receive rank 0's weights by a broadcast.
- the data loader shards by global rank (each rank reads its slice of every batch), and only rank 0
  logs, evaluates and saves checkpoints (the parameters are identical everywhere; with ZeRO-1 the
  optimizer state is gathered to rank 0 first, or each rank saves its shard).
- gradients are all-reduced in buckets as the backward pass produces them to overlap communication
  with compute across the slower links (one schedule already orders them; buckets need the scheduler
  to launch each collective as soon as its inputs are ready, which it does in topological order).
"""
from __future__ import annotations
from typing import Any, Callable, Sequence
from picograd.tensor import Tensor
from picograd.frontend.multi import MultiTensor, all_gather, all_reduce, broadcast, reduce_scatter, device_tuple
from picograd.helpers import ceildiv
from picograd.nn.module import get_parameters, state_dict
from picograd.optim import Optimizer

__all__ = ["DataParallel", "ParallelOptimizer"]


class DataParallel:
  """One replica of a model per device, trained data-parallel (see the module docstring)."""

  def __init__(self, make_model: Callable[[str], Any], devices: Sequence[str], zero1: bool = False):
    self.devices = device_tuple("DataParallel", devices)
    self.zero1 = zero1
    self.replicas = [make_model(d) for d in self.devices]
    states = [state_dict(r) for r in self.replicas]
    if any(s.keys() != states[0].keys() for s in states): raise RuntimeError("DataParallel: make_model built models of different structure")
    copies = []
    for name, t in states[0].items():  # every replica starts from replica 0's weights
      for s, piece in zip(states[1:], broadcast(t, self.devices)[1:]): copies.append(s[name].assign(piece))
    if copies: Tensor.realize(*copies)
    per_replica = [get_parameters(r) for r in self.replicas]
    self.params = [MultiTensor(list(pieces), None) for pieces in zip(*per_replica)]
    for m in self.params:
      if zero1:
        for p in m.pieces: p.requires_grad = True  # gradients stay per replica: the optimizer reduce-scatters them
      else: m.requires_grad = True                 # backward() all-reduces them

  @property
  def model(self) -> Any:
    """Replica 0: evaluate, sample and save with it (all replicas hold the same weights)."""
    return self.replicas[0]

  def shard_batch(self, t: "Tensor | MultiTensor") -> MultiTensor:
    """A batch split along axis 0, one block per device (the batch size must divide evenly: every device weighs alike)."""
    if isinstance(t, MultiTensor): return t
    if t.shape[0] % len(self.devices):
      raise ValueError(f"DataParallel: a batch of {t.shape[0]} does not split evenly over {len(self.devices)} devices")
    return MultiTensor.from_tensor(t, self.devices, 0)

  def loss(self, loss_fn: Callable[..., Tensor], *batch: "Tensor | MultiTensor") -> MultiTensor:
    """The mean over devices of `loss_fn(replica, *batch shard)` (each a mean over its shard): the global batch mean, replicated."""
    shards = [self.shard_batch(b) for b in batch]
    losses = [loss_fn(r, *(s.pieces[i] for s in shards)) for i, r in enumerate(self.replicas)]
    return MultiTensor(all_reduce(losses), None) * (1.0 / len(self.devices))

  def optimizer(self, make_opt: Callable[[list[Tensor]], Optimizer]) -> "ParallelOptimizer":
    """`make_opt(params)` builds one optimizer per device: over the replica's parameters, or (ZeRO-1) over its blocks of them."""
    return ParallelOptimizer(self, make_opt)


class ParallelOptimizer:
  """The per-device optimizers of a DataParallel model, stepped together (one schedule)."""

  def __init__(self, dp: DataParallel, make_opt: Callable[[list[Tensor]], Optimizer]):
    self.dp, n = dp, len(dp.devices)
    if not dp.zero1:
      self.opts = [make_opt([m.pieces[i] for m in dp.params]) for i in range(n)]
      return
    # ZeRO-1: device i's master copy of block i of each flattened, padded parameter
    self.blocks: list[list[Tensor]] = []
    for m in dp.params:
      size = ceildiv(m.numel(), n)
      flat = [_padded_flat(p, size * n) for p in m.pieces]
      self.blocks.append([flat[i].shrink(((i * size, (i + 1) * size),)).contiguous() for i in range(n)])
    Tensor.realize(*(b for blocks in self.blocks for b in blocks))
    self.opts = [make_opt([blocks[i] for blocks in self.blocks]) for i in range(n)]

  @property
  def lr(self) -> float: return self.opts[0].lr
  @lr.setter
  def lr(self, value: float) -> None:
    for o in self.opts: o.lr = value

  def zero_grad(self) -> None:
    for m in self.dp.params:
      for p in m.pieces: p.grad = None
    for o in self.opts: o.zero_grad()

  def schedule_step(self) -> list[Tensor]:
    """Assign the updates lazily (ZeRO-1: reduce-scatter, update the blocks, all-gather); return the tensors to realize."""
    if not self.dp.zero1: return [t for o in self.opts for t in o.schedule_step()]
    n = len(self.dp.devices)
    for m, blocks in zip(self.dp.params, self.blocks):
      if all(p.grad is None for p in m.pieces): continue
      grads = [_padded_flat(p.grad if p.grad is not None else p.zeros_like(), blocks[0].numel() * n) for p in m.pieces]
      for b, g in zip(blocks, reduce_scatter(grads)): b.grad = g
    out = [t for o in self.opts for t in o.schedule_step()]
    for m, blocks in zip(self.dp.params, self.blocks):
      if blocks[0].grad is None: continue
      for p, full in zip(m.pieces, all_gather(blocks)): out.append(p.assign(full.shrink(((0, p.numel()),)).reshape(p.shape)))
    return out

  def step(self) -> None: Tensor.realize(*self.schedule_step())


def _padded_flat(t: Tensor, size: int) -> Tensor:
  flat = t.reshape(-1)
  return flat.pad(((0, size - flat.numel()),)) if size > flat.numel() else flat
