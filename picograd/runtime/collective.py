"""Collectives over several devices (runtime layer): all-reduce, all-gather, reduce-scatter and broadcast.

The engine runs one step per collective (a COLLECTIVE node of the graph, DESIGN §4), and consecutive
independent ones over the same devices together: `run_collectives` gets each one's description and
buffers, the n outputs (one per device, in the order of `devices`) then the inputs (one per device;
a broadcast has only the root's).

- All devices CUDA: NCCL (runtime/nccl.py), one communicator per tuple of GPUs, queued on each
  GPU's own stream, so the host does not wait and a JIT replay relaunches it like a kernel.
- Otherwise (virtual CPU devices `CPU:n`, PYTHON): copies through host memory. Every input is read,
  combined in device order (the same order for every output, so all outputs are bit-identical, as
  NCCL's are) and written to every output. This is how CI tests sharding without a GPU.

A collective mixing GPUs with other devices is refused: the engine would have to copy anyway, and
saying so is clearer than a silent slow path.
"""
from __future__ import annotations
import functools
from typing import Any
import numpy as np
from picograd.runtime.device import Buffer, DeviceError, get_device

KINDS = ("allreduce", "allgather", "reducescatter", "broadcast")
REDUCE_OPS = ("sum", "max")


Spec = tuple[str, Any, tuple[str, ...], int]  # (kind, reduce op "sum"|"max"|None, devices, root index)


def run_collective(spec: Spec, buffers: list[Buffer]) -> None:
  """Run the collective `spec` on `buffers` (outputs, then inputs)."""
  run_collectives([(spec, buffers)])


def run_collectives(items: list[tuple[Spec, list[Buffer]]]) -> None:
  """Run independent collectives over the same devices (none reads what another writes); on GPUs as one NCCL group."""
  devices = items[0][0][2]
  for (kind, _, devs, _), _ in items:
    if kind not in KINDS: raise ValueError(f"unknown collective {kind!r}; picograd has {KINDS}")
    if devs != devices: raise ValueError(f"run_collectives: one group runs over one tuple of devices, not {devices} and {devs}")
  cuda = [d.startswith("CUDA") for d in devices]
  if all(cuda):  # one NCCL group: NCCL launches the group's collectives together
    from picograd.runtime import nccl
    nccl.run(devices, [(kind, op, root, bufs[:len(devices)], bufs[len(devices):]) for (kind, op, _, root), bufs in items])
  elif any(cuda):
    raise DeviceError(f"{items[0][0][0]} over {', '.join(devices)}: a collective runs over GPUs only or over no GPU at all")
  else:
    for (kind, op, _, root), bufs in items: _host(kind, op, root, bufs[:len(devices)], bufs[len(devices):])


def _to_float(x: np.ndarray, is_bf16: bool) -> np.ndarray: return (x.astype(np.uint32) << 16).view(np.float32) if is_bf16 else x


def _from_float(x: np.ndarray, is_bf16: bool) -> np.ndarray:
  if not is_bf16: return x
  bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
  return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even, as the frontend does


def _host(kind: str, op: str | None, root: int, outs: list[Buffer], ins: list[Buffer]) -> None:
  """The copy-based collective of virtual devices: read every input, combine in device order, write every output."""
  for d in dict.fromkeys(b.device for b in ins): get_device(d).synchronize()
  bf16 = ins[0].dtype.name == "bfloat16"  # stored as uint16 bits: add the values, not the bits
  arrays = [_to_float(b.numpy(), bf16) for b in ins]
  if kind == "broadcast": values = [arrays[0]] * len(outs)
  elif kind == "allgather": values = [np.concatenate(arrays)] * len(outs)
  else:
    if op not in REDUCE_OPS: raise ValueError(f"{kind}: unknown reduce op {op!r}; picograd has {REDUCE_OPS}")
    with np.errstate(over="ignore"):  # integers wrap, as they do in kernels and in NCCL
      total = functools.reduce(np.add if op == "sum" else np.maximum, arrays).astype(arrays[0].dtype)
    m = outs[0].size
    values = [total] * len(outs) if kind == "allreduce" else [total[i * m:(i + 1) * m] for i in range(len(outs))]
  for b, v in zip(outs, values): b.copyin(_from_float(v, bf16))


__all__ = ["run_collective", "run_collectives", "KINDS", "REDUCE_OPS"]
