"""The realize loop: schedule the pending graph of some tensors, run its kernels, return the buffers that hold them.

The engine never imports or changes a `Tensor`: it reads a handle's `uop` and `device` (`Handle`)
and returns the buffer view that now holds each value; the Tensor points itself at it.

Before scheduling, nodes that an earlier realize already computed are replaced by their
buffers (so `y.realize(); (y + 1).realize()` does not recompute y), and every input buffer is
replaced by a numbered slot. The slotted graph is the key of the schedule cache: a training
step that builds the same graph over new data reuses the schedule and the compiled kernels.
"""
from __future__ import annotations
import time, weakref
import numpy as np
from dataclasses import dataclass
from typing import Any, Protocol, Sequence
from picograd.helpers import DEBUG, EMULATE, NOOPT, ONLINE_SOFTMAX_MIN, RECOMPUTE_MIN, RECOMPUTE_MASKED_MIN
from picograd.ir.ops import UOp, Ops, toposort, rebuild_hooks
from picograd.engine.schedule import ScheduleTemplate, Binding, create_template, is_contiguous_view, strip_reshapes
from picograd.dtype import dtypes
from picograd.runtime.device import Buffer, get_device, read_buffers
from picograd.engine.compile import CompiledKernel
from picograd.engine.events import compile_kernels
from picograd.engine.capture import record_steps
from picograd.engine import observe
from picograd.ir.provenance import lines_of, short
from picograd.runtime.collective import run_collectives


RELEASE_MIN_BYTES = 1 << 18  # intermediates at least this large (256 KiB) are released after their last reader


class Handle(Protocol):
  """What the engine reads of a tensor: its graph and device. Its identity says whose buffer a computed graph is."""
  uop: UOp
  @property
  def device(self) -> str: ...


# per device: lazy node -> the buffer view that holds its value, for nodes realized earlier
_computed: dict[str, "weakref.WeakKeyDictionary[UOp, UOp]"] = {}
# per device: lazy node -> the handle (tensor) it was realized for. That tensor (and only it: two tensors never share
# memory) may read the buffer back when it points at its graph again (tensors that need gradients do)
_owners: dict[str, "weakref.WeakKeyDictionary[UOp, weakref.ref]"] = {}
_templates: dict[tuple, ScheduleTemplate] = {}
stats = {"schedules": 0, "cache_hits": 0, "kernels_run": 0}


def is_buffer_view(u: UOp) -> bool:
  """A tensor that owns memory it can be assigned into: a buffer (or a pending assignment to one) seen through reshapes."""
  return strip_reshapes(u).op in (Ops.BUFFER, Ops.ASSIGN)


def buffer_of(t: "Handle | UOp") -> Buffer:
  """The buffer behind a realized graph (or a handle's graph)."""
  u = strip_reshapes(t if isinstance(t, UOp) else t.uop)
  assert u.op is Ops.BUFFER, f"tensor is not realized: {u.op}"
  return u.arg


def _buffer_uop(buf: Buffer, shape: tuple[int, ...]) -> UOp:
  return UOp(Ops.BUFFER, buf.dtype, (), buf).reshape(shape)


def _forget_buffers(written: set[Buffer]) -> None:
  """An in-place write changes a buffer's value: nodes computed into it no longer describe it."""
  for table in _computed.values():
    for node, view in list(table.items()):
      if strip_reshapes(view).arg in written: del table[node]


def _normalize(roots: list[UOp], devices: list[str] | None = None) -> tuple[list[UOp], list[Buffer]]:
  """The graphs as the schedule cache sees them, in one walk: with `devices` (each root's), nodes computed earlier *inside*
  the graphs become their buffers (a root itself never does: two tensors realized from the same graph must not share
  memory, as an in-place update of one would change the other); every BUFFER becomes BUFFER(("slot", i, size, device)),
  numbered in first-visit order. Returns the slotted roots and the buffers in slot order."""
  buffers: list[Buffer] = []
  done: dict[UOp, UOp] = {}

  def rebuild(node: UOp) -> UOp:  # its sources are done
    if node.op is Ops.BUFFER and isinstance(node.arg, Buffer):
      buffers.append(node.arg)
      return UOp(Ops.BUFFER, node.dtype, (), ("slot", len(buffers) - 1, node.arg.size, node.arg.device))
    src = tuple(done[s] for s in node.src)
    if src == node.src: return node
    new = UOp(node.op, node.dtype, src, node.arg)
    for hook in rebuild_hooks: hook(node, new)
    return new

  out = []
  for i, root in enumerate(roots):
    known: "weakref.WeakKeyDictionary[UOp, UOp] | dict[UOp, UOp]" = (_computed.get(devices[i]) if devices else None) or {}
    for node in toposort([root], stop=lambda n: n is not root and (n in done or n in known)):
      if node is root or node in done: continue
      if node in known:  # computed earlier: read its buffer view
        view = known[node]
        for v in toposort([view]):
          if v not in done: done[v] = rebuild(v)
        done[node] = done[view]
      else: done[node] = rebuild(node)
    if root in known: out.append(rebuild(root))  # computed for another tensor: this one gets its own memory
    else:
      if root not in done: done[root] = rebuild(root)
      out.append(done[root])
  return out, buffers


@dataclass
class ScheduledKernel:
  """What `picograd.schedule` returns: one step of a realize, with its kernel and text forms."""
  kernel: CompiledKernel | None  # None for a device copy or a collective
  buffers: list[Buffer]
  ast: UOp | None = None  # the fused kernel graph (SINK(STORE(PARAM 0, value), ...)), None for a copy
  nodes: tuple[UOp, ...] = ()  # the graph nodes fused into it
  collective: tuple | None = None  # (kind, reduce op, devices, root): buffers are the outputs, one per device, then the inputs
  frees: tuple[Buffer, ...] = ()  # the schedule's intermediates this step reads last: their memory goes back after it
  outputs: int = 1  # a kernel's first `outputs` buffers are the ones it writes (engine/outputs.py merges kernels)

  @property
  def provenance(self) -> tuple[str, ...]:
    """The user's source lines this kernel came from, `file:line:function` (none under PROVENANCE=0)."""
    return lines_of(self.nodes)

  @property
  def name(self) -> str:
    if self.collective: return f"{self.collective[0]} over {','.join(self.collective[2])}"
    return self.kernel.name if self.kernel else f"copy {self.buffers[1].device} -> {self.buffers[0].device}"
  @property
  def ir(self) -> str: return self.kernel.ir if self.kernel else "COLLECTIVE" if self.collective else "COPY"
  @property
  def source(self) -> str: return self.kernel.source if self.kernel else ""
  @property
  def program(self) -> str: return self.kernel.program_text if self.kernel else ""
  def __repr__(self) -> str: return f"<ScheduledKernel {self.name}>"


@dataclass
class Plan:
  steps: list[ScheduledKernel]
  ready: list[tuple[Handle, UOp]]  # tensors whose graph was already computed for them, and the buffer view
  pending: list[Handle]         # the tensors that need work
  outputs: list[Buffer]         # where each pending tensor's value will be
  reads_memory: list[bool]      # whether each pending tensor's graph reads any buffer
  cache_hit: bool


def plan(tensors: Sequence[Handle]) -> Plan:
  """The kernels that realizing `tensors` would run, the tensors that need work, and their output buffers."""
  pending, ready, seen = [], [], set()
  for t in tensors:
    if is_contiguous_view(t.uop) or id(t) in seen: continue
    seen.add(id(t))
    owner = _owners[t.device].get(t.uop) if t.device in _owners else None
    if owner is not None and owner() is t and t.uop in _computed[t.device]: ready.append((t, _computed[t.device][t.uop]))
    else: pending.append(t)
  if not pending: return Plan([], ready, [], [], [], True)
  devices = [t.device for t in pending]
  roots = [t.uop for t in pending]
  normalized, inputs = _normalize(roots, devices)
  # the flags the scheduler reads (engine/schedule.py ONLINE_DEVICES) are part of what the template depends on
  key = (tuple(normalized), tuple(devices), ONLINE_SOFTMAX_MIN.value, RECOMPUTE_MIN.value, RECOMPUTE_MASKED_MIN.value, EMULATE.value, NOOPT.value)
  template = _templates.get(key)
  hit = template is not None
  if template is None:
    template = create_template(normalized, devices)
    _templates[key] = template
  temps = [Buffer(tb.device, tb.size, tb.dtype) for tb in template.temps]

  def resolve(b: Binding) -> Buffer: return inputs[b.index] if b.kind == "input" else temps[b.index]

  compiled = iter(compile_kernels([(k.ast, k.device) for k in template.kernels if k.ast is not None]))
  outputs = [resolve(b) for b in template.outputs]
  # an intermediate's memory is free for the next kernels once its last reader ran (a checkpoint's forward dies this way;
  # `_release` keeps small ones, and a JIT replay's memory plan reads every intermediate's lifetime from here)
  last = {b.index: i for i, k in enumerate(template.kernels) for b in k.bindings if b.kind == "temp"}
  frees: dict[int, list[Buffer]] = {}
  for i, buf in enumerate(temps):
    if not any(buf is o for o in outputs): frees.setdefault(last[i], []).append(buf)
  steps = [ScheduledKernel(next(compiled) if k.ast is not None else None, [resolve(b) for b in k.bindings], k.ast, k.nodes, k.collective,
                           tuple(frees.get(i, ())), k.outputs) for i, k in enumerate(template.kernels)]
  if observe.schedule_listeners: observe.scheduled(steps, hit)
  return Plan(steps, ready, pending, outputs, [n is not r for n, r in zip(normalized, roots)], hit)


# Error words, zero between runs: on a device that addresses into a block (`memory_view`) one int64 table of
# ERROR_TABLE_WORDS words holds a slot per checked kernel, so reading them all is one copy (a CUDA makemore step read seven
# words of its index-checking kernels as seven synchronous copies, ~100 us); elsewhere each kernel has a word of its own.
ERROR_TABLE_WORDS = 512
_error_slots: dict[tuple[str, str], tuple[Buffer, int, Any]] = {}  # (name, device) -> (table, index in it, the kernel's handle)
_error_tables: dict[str, tuple[Buffer, int]] = {}  # device -> (the table being filled, its first free index)
_EXCEPTIONS: dict[str, type[Exception]] = {"RuntimeError": RuntimeError, "IndexError": IndexError, "ValueError": ValueError}


def _error_slot(k: CompiledKernel) -> tuple[Buffer, int, Any]:
  if (slot := _error_slots.get((k.name, k.device))) is None:
    view = get_device(k.device).extra.get("memory_view")
    if view is None:
      word = Buffer(k.device, 1, dtypes.int64).copyin(np.zeros(1, np.int64))
      slot = (word, 0, word.handle)
    else:
      table, used = _error_tables.get(k.device, (None, ERROR_TABLE_WORDS))
      if table is None or used == ERROR_TABLE_WORDS:
        table, used = Buffer(k.device, ERROR_TABLE_WORDS, dtypes.int64).copyin(np.zeros(ERROR_TABLE_WORDS, np.int64)), 0
      _error_tables[k.device] = (table, used + 1)
      slot = (table, used, view(table.handle, used * 8))
    _error_slots[(k.name, k.device)] = slot
  return slot


def error_handle(k: CompiledKernel) -> Any:
  """The handle a launch of checked kernel `k` passes as its error word (its last argument)."""
  return _error_slot(k)[2]


def _failed_checks(kernels: list[CompiledKernel], reading: tuple[Buffer, ...] = ()) -> tuple[list[tuple[CompiledKernel, int]], list[np.ndarray]]:
  """Read and clear the error words of `kernels` (one copy per table), with the buffers `reading` in the same call (one wait
  on an asynchronous device): (the kernels whose checks failed, with their bits; the data of `reading`)."""
  if not kernels: return [], read_buffers(list(reading)) if reading else []  # (no words: a CPU read is the data alone)
  slots = [_error_slot(k) for k in kernels]
  tables = {id(table): table for table, _, _ in slots}
  data = read_buffers([*reading, *tables.values()])  # (one read per table, not per kernel)
  words = dict(zip(tables, data[len(reading):]))
  failed = [(k, int(words[id(table)][i])) for k, (table, i, _) in zip(kernels, slots) if words[id(table)][i]]
  cleared: dict[int, Buffer] = {}
  for table, i, _ in slots:
    if words[id(table)][i]: words[id(table)][i], cleared[id(table)] = 0, table
  for table in cleared.values(): table.copyin(words[id(table)])  # the words read as they were, these zero again
  return failed, data[:len(reading)]


def _raise_first(failed: list[tuple[CompiledKernel, int]]) -> None:
  if failed:
    k, bits = failed[0]
    exc, message = k.checks[(bits & -bits).bit_length() - 1]
    raise _EXCEPTIONS[exc](message)


# checked kernels that ran on asynchronous devices and whose error words were not read yet
_deferred: dict[tuple[str, str], CompiledKernel] = {}


def defer_checks(kernels: list[CompiledKernel]) -> None:
  """Kernels with checks that were launched on an asynchronous device: their error words are read at `check_errors`."""
  for k in kernels: _deferred[(k.name, k.device)] = k


def check_errors(device: str | None = None) -> None:
  """Raise the first failed check of the kernels that ran on asynchronous devices (all, or `device`'s) since the last look."""
  kernels = [k for k in _deferred.values() if device is None or k.device == device]
  for k in kernels: del _deferred[(k.name, k.device)]
  _raise_first(_failed_checks(kernels)[0])


def read_checked(buf: Buffer) -> np.ndarray:
  """`buf`'s data on the host, read together with the error words of the checked kernels that ran on asynchronous devices
  since the last look (one wait for a CUDA loss read, not two); the first failed check among them is raised."""
  kernels = list(_deferred.values())
  _deferred.clear()
  failed, (host,) = _failed_checks(kernels, (buf,))
  _raise_first(failed)
  return host


def run_steps(steps: list[ScheduledKernel]) -> None:
  """Launch `steps` in order; then raise the first failed runtime check (the lowest bit of the first kernel that failed)."""
  record_steps(steps)
  if observe.batch_listeners: observe.batch(len(steps))
  checked: dict[tuple[str, str], CompiledKernel] = {}
  try:
    _launch(steps, checked)
  except BaseException:
    _failed_checks(list(checked.values()))  # leave no stale error word behind
    raise
  now = []
  for key, k in checked.items():
    if get_device(k.device).extra.get("synchronize") is not None: _deferred[key] = k
    else: now.append(k)
  if now: _raise_first(_failed_checks(now)[0])


def launch_handles(k: CompiledKernel, buffers: list[Buffer]) -> list[Any]:
  """The arguments of a launch of `k` on `buffers`: their device handles, and the kernel's error word if it has checks."""
  return [b.handle for b in buffers] + ([error_handle(k)] if k.checks else [])


def _collective_group(steps: list[ScheduledKernel], i: int) -> list[ScheduledKernel]:
  """steps[i] (a collective) and the collectives right after it over the same devices that neither read nor write what the
  others write or read: NCCL launches one group of them at once. DEBUG=2 times each alone."""
  devices = steps[i].collective[2]  # type: ignore[index]  # the caller checked that steps[i] is a collective
  n = len(devices)  # each collective's first n buffers are its outputs
  written, touched = {id(b) for b in steps[i].buffers[:n]}, {id(b) for b in steps[i].buffers}
  group = [steps[i]]
  for step in steps[i + 1:]:
    if DEBUG >= 2 or step.collective is None or step.collective[2] != devices or not step.buffers[0].size: break
    if any(id(b) in written for b in step.buffers) or any(id(b) in touched for b in step.buffers[:n]): break
    group.append(step)
    written.update(id(b) for b in step.buffers[:n])
    touched.update(id(b) for b in step.buffers)
  return group


def _launch(steps: list[ScheduledKernel], checked: dict[tuple[str, str], CompiledKernel]) -> None:
  i = 0
  while i < len(steps):
    step = steps[i]
    i += 1
    # an empty output means a loop nest of zero iterations: never launch it, on any device (index expressions
    # of an empty dimension, like a flip's n-1-i, point outside every buffer, and a 0-block CUDA grid is an error)
    if step.buffers[0].size == 0:
      _release(step)
      continue
    if step.collective is not None:
      group = _collective_group(steps, i - 1)
      i += len(group) - 1
      st = time.perf_counter()
      run_collectives([(s.collective, s.buffers) for s in group if s.collective is not None])
      for s in group: _release(s)
      if DEBUG >= 2:  # waits for every device of the group, as the kernels' lines wait for theirs
        for d in step.collective[2]: get_device(d).synchronize()
        secs = max(time.perf_counter() - st, 1e-9)
        print(f"  {step.name:<40} {secs * 1e6:9.1f} us  {step.buffers[0].nbytes / secs / 1e9:8.2f} GB/s per device")
      continue
    if step.kernel is None:
      st = time.perf_counter()
      _copy(step.buffers[0], step.buffers[1])
      if observe.timing(): observe.launched(step, st, time.perf_counter() - st)
      _release(step)
      continue
    k = step.kernel
    dev = get_device(k.device)
    handles = launch_handles(k, step.buffers)
    if k.checks: checked[(k.name, k.device)] = k
    if DEBUG >= 2 or observe.timing():
      st = time.perf_counter()
      t = k.program(handles, k.dims, wait=True) or 0.0
      observe.launched(step, st, t)
      secs = max(t, 1e-9)
      if DEBUG >= 2:
        print(f"  {k.name:<40} on {k.device:<6} {t * 1e6:9.1f} us  {k.bytes / secs / 1e9:8.2f} GB/s  {k.flops / secs / 1e9:8.2f} GFLOP/s"
              + _lines_note(step.provenance))
    else:
      k.program(handles, k.dims)
    del dev
    stats["kernels_run"] += 1
    _release(step)


def _release(step: ScheduledKernel) -> None:
  """Give back the intermediates `step` was the last to read. Small ones are kept to the end: giving back and taking again
  costs microseconds a step, and frees almost nothing."""
  for b in step.frees:
    if b.nbytes >= RELEASE_MIN_BYTES: b.release()


def _lines_note(lines: tuple[str, ...]) -> str:
  """DEBUG=2's tail: the first two source lines a kernel came from."""
  if not lines: return ""
  return "  <- " + ", ".join(short(line) for line in lines[:2]) + (f" (+{len(lines) - 2} more)" if len(lines) > 2 else "")


def _copy(dst: Buffer, src: Buffer) -> None:
  """Device to device: through the host unless both sides are CUDA (the same context, or peer to peer)."""
  if dst.device.startswith("CUDA") and dst.device == src.device:
    get_device(dst.device).allocator.copy_device_to_device(dst.handle, src.handle, dst.nbytes)  # type: ignore[attr-defined]  # CUDA's has it
    return
  if dst.device.startswith("CUDA") and src.device.startswith("CUDA"):
    get_device(dst.device).allocator.copy_peer(dst.handle, get_device(src.device).allocator, src.handle, dst.nbytes)  # type: ignore[attr-defined]
    return
  get_device(src.device).synchronize()
  check_errors(src.device)  # the data leaves the device: its kernels' failed checks must not go unnoticed
  dst.copyin(src.numpy())


def realize(tensors: Sequence[Handle]) -> list[UOp]:
  """Compute `tensors`; return, for each, the graph that now holds its value (a buffer view; unchanged if it was one).

  The caller points each tensor at its result: the engine does not change the handles it is given."""
  st = time.perf_counter()
  p = plan(tensors)
  result = {id(t): view for t, view in p.ready}
  if not p.pending: return [result.get(id(t), t.uop) for t in tensors]
  run_steps(p.steps)
  assigned = {b for t, b in zip(p.pending, p.outputs) if t.uop.op is Ops.ASSIGN}
  if assigned: _forget_buffers(assigned)
  for t, buf, reads_memory in zip(p.pending, p.outputs, p.reads_memory):
    old = t.uop
    assert old.shape is not None
    new = result[id(t)] = _buffer_uop(buf, old.shape)
    # remember graphs that read memory, so later graphs containing them reuse the result; a graph of
    # constants is cheaper to recompute than to keep its buffer alive for as long as the node lives
    if reads_memory:
      _computed.setdefault(t.device, weakref.WeakKeyDictionary())[old] = new
      _owners.setdefault(t.device, weakref.WeakKeyDictionary())[old] = weakref.ref(t)
  stats["schedules"] += 1
  stats["cache_hits"] += p.cache_hit
  if DEBUG >= 1:
    print(f"schedule: {len(p.steps)} kernel(s) in {(time.perf_counter() - st) * 1e3:.2f} ms, schedule cache {'hit' if p.cache_hit else 'miss'}")
  return [result.get(id(t), t.uop) for t in tensors]


def schedule(*tensors: Handle) -> list[ScheduledKernel]:
  """The kernels realizing `tensors` would run, in order, without running them (each has .name, .ir, .source)."""
  return plan(list(tensors)).steps
