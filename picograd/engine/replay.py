"""A JIT replay bound once (engine layer): the captured kernels as device launch lists, intermediates in one memory plan.

`engine/jit.py` captures a step's launches (`ScheduledKernel`s); replaying them through `run_steps`
pays Python work per launch (argument lists, thread counts, error words, releases). A `Replay` does
that work once: each run of consecutive kernels on one device becomes that device's launch list
(`Device.extra["launch_list"]`: on the CPU one native call runs the whole run, runtime/cpu.py
`LaunchList`; on a GPU one CUDA graph, runtime/cuda.py `CUDALaunchList`), built from (program, handles,
checked, launch dims). A replay then rebinds the arguments that read the call's input buffers and calls
the lists in order; a list returns nonzero when an error word is set, and only then are the words read
(the first failed check raises, as `run_steps` does).

Static memory plan: a schedule's intermediates (`ScheduledKernel.frees`: each is freed after its
last reader) live from their first launch to their last reader. On a device that offers
`extra["memory_view"]` (a handle at an offset of another), they are packed into one block, those
with disjoint lifetimes at the same offsets, and their own memory is released: a replay allocates
and frees nothing. Everything else (parameters, outputs, gradients, error words, random counters)
keeps the buffers the capture used.

A device adds replay support by providing the two hooks; a capture with a copy or a collective, or a
kernel on a device without `launch_list`, is replayed step by step (`native` is False).
"""
from __future__ import annotations
from typing import Any
from picograd.dtype import dtypes
from picograd.runtime.device import Buffer, get_device
from picograd.engine.realize import ScheduledKernel, defer_checks, error_handle, _failed_checks, _raise_first, stats

ALIGN = 64  # bytes: each intermediate in the memory plan starts on a cache line (and any vector width the kernels use)


def plan_memory(steps: list[ScheduledKernel]) -> tuple[dict[Buffer, int], int]:
  """Offsets for the intermediates of `steps` in one block and the block's size: buffers whose lifetimes (first launch
  to last reader) overlap never overlap in memory. Greedy: largest first, each at the lowest offset that fits."""
  first: dict[Buffer, int] = {}
  last: dict[Buffer, int] = {}
  for i, step in enumerate(steps):
    for b in step.buffers: first.setdefault(b, i)
    for b in step.frees: last[b] = i
  live = sorted(last, key=lambda b: (-b.nbytes, first[b]))
  placed: list[tuple[int, int, int, int]] = []  # (start, end, first, last)
  offsets: dict[Buffer, int] = {}
  for b in live:
    size = -(-max(b.nbytes, 1) // ALIGN) * ALIGN
    lo, hi = first[b], last[b]
    clashes = sorted((s, e) for s, e, f, t in placed if f <= hi and lo <= t)
    at = 0
    for s, e in clashes:
      if at + size <= s: break
      at = max(at, e)
    offsets[b] = at
    placed.append((at, at + size, lo, hi))
  return offsets, max((e for _, e, _, _ in placed), default=0)


Region = tuple[int, int, int]  # (the memory's identity, first byte, end): a buffer of its own, or its bytes of a planned block


def launch_order(steps: list[ScheduledKernel], regions: dict[Buffer, Region]) -> list[list[int]]:
  """For each step, the earlier steps it must run after: those that last wrote memory it reads or writes, and those that
  read memory it writes since it was last written (intermediates sharing a block conflict where their bytes overlap).
  Launches of one program run in order too: a split-K kernel's partials and tickets live in the program's own scratch.
  Error words are ORed atomically and order nothing. A device that runs a list in order keeps all of it; a CUDA graph
  lets independent kernels (a bias's gradient beside a weight's) run side by side."""
  writers: dict[int, list[tuple[int, int, int]]] = {}  # memory -> [(first byte, end, step)] written, latest last
  readers: dict[int, list[tuple[int, int, int]]] = {}  # memory -> [(first byte, end, step)] read since
  last_of_program: dict[int, int] = {}
  out: list[list[int]] = []
  for j, s in enumerate(steps):
    after: set[int] = set()
    if s.kernel is not None and (i := last_of_program.get(id(s.kernel.program))) is not None: after.add(i)
    if s.kernel is not None: last_of_program[id(s.kernel.program)] = j
    touched = [(regions.get(b, (id(b), 0, max(b.nbytes, 1))), n < s.outputs) for n, b in enumerate(s.buffers)]
    for (mem, lo, hi), writes in touched:
      after.update(i for a, e, i in writers.get(mem, ()) if a < hi and lo < e)
      if writes: after.update(i for a, e, i in readers.get(mem, ()) if a < hi and lo < e)
    for (mem, lo, hi), writes in touched:
      if writes:
        # what this write covers needs no older record: later steps order after this one, which ordered after those
        writers[mem] = [w for w in writers.get(mem, ()) if not (lo <= w[0] and w[1] <= hi)] + [(lo, hi, j)]
        readers[mem] = [r for r in readers.get(mem, ()) if not (lo <= r[0] and r[1] <= hi)]
      else: readers.setdefault(mem, []).append((lo, hi, j))
    out.append(sorted(after))
  return out


class Replay:
  """The captured `steps` bound for replays whose input buffers replace `inputs` (see the module docstring)."""

  def __init__(self, steps: list[ScheduledKernel], inputs: list[Buffer]):
    self.steps, self.inputs = steps, inputs
    run = [s for s in steps if s.buffers[0].size]  # an empty output is never launched (see realize._launch)
    self.native = bool(run) and all(s.kernel is not None and "launch_list" in get_device(s.kernel.device).extra for s in run)
    self.lists: list[Any] = []
    self.bindings: list[list[tuple[Any, int, int]]] = [[] for _ in inputs]  # per input: (launch list, launch, argument)
    # per input, the handle its arguments hold now: a call whose input has the same memory (the allocator's cache hands
    # a step's new batch tensor the block the last one freed) rebinds nothing
    self.bound: list[Any] = []
    checked = {(s.kernel.name, s.kernel.device): s.kernel for s in run if s.kernel is not None and s.kernel.checks}
    # as in run_steps: error words of asynchronous devices are read later (check_errors), the others after the replay
    self.deferred = {key: k for key, k in checked.items() if get_device(k.device).extra.get("synchronize") is not None}
    self.checked = [k for key, k in checked.items() if key not in self.deferred]
    self.kernels = len(run)
    self.blocks: list[Buffer] = []
    if not self.native: return
    handles, regions = self._memory_plan(run)
    where = {id(b): i for i, b in enumerate(inputs)}
    groups: list[list[ScheduledKernel]] = []
    for s in run:
      if groups and groups[-1][0].kernel.device == s.kernel.device: groups[-1].append(s)  # type: ignore[union-attr]  # native: kernels
      else: groups.append([s])
    for group in groups:
      launches = []
      for s in group:
        k = s.kernel
        assert k is not None
        args = [handles[b] if b in handles else b.handle for b in s.buffers] + ([error_handle(k)] if k.checks else [])
        launches.append((k.program, args, bool(k.checks), k.dims))
      ll = get_device(group[0].kernel.device).extra["launch_list"](launches, launch_order(group, regions))  # type: ignore[union-attr]
      self.lists.append(ll)
      for j, s in enumerate(group):
        for a, b in enumerate(s.buffers):
          if id(b) in where: self.bindings[where[id(b)]].append((ll, j, a))
    self.bound = [b.handle for b in inputs]

  def _memory_plan(self, run: list[ScheduledKernel]) -> tuple[dict[Buffer, Any], dict[Buffer, Region]]:
    """Per device with `memory_view`: one block for the intermediates; their handles in it, and the bytes each takes of
    it (`Region`). Their own memory goes back."""
    handles: dict[Buffer, Any] = {}
    regions: dict[Buffer, Region] = {}
    for device in dict.fromkeys(b.device for s in run for b in s.frees):
      view = get_device(device).extra.get("memory_view")
      if view is None: continue
      offsets, size = plan_memory([ScheduledKernel(s.kernel, s.buffers, frees=tuple(b for b in s.frees if b.device == device)) for s in run])
      block = Buffer(device, size, dtypes.uint8)
      self.blocks.append(block)
      for b, at in offsets.items():
        handles[b] = view(block.handle, at)
        regions[b] = (id(block), at, at + max(b.nbytes, 1))
        b.release()  # a step-by-step replay (DEBUG=2, listeners) takes memory for it again
    return handles, regions

  def run(self, inputs: list[Buffer]) -> None:
    """Launch every captured kernel with `inputs` in place of the captured inputs; raise the first failed check."""
    for i, b in enumerate(inputs):
      if (handle := b.handle) != self.bound[i]:
        for ll, launch, arg in self.bindings[i]: ll.set_handle(launch, arg, handle)
        self.bound[i] = handle
    failed = 0
    for ll in self.lists: failed |= ll()
    stats["kernels_run"] += self.kernels
    if self.deferred: defer_checks(list(self.deferred.values()))
    if failed: _raise_first(_failed_checks(self.checked)[0])
