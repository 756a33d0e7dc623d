"""NCCL collectives for the CUDA devices of one process (runtime layer), through ctypes on libnccl.so.2.

One process drives all the GPUs of a host: `ncclCommInitAll` makes one communicator per GPU of a
device tuple (cached), and every collective is issued for all of them between `ncclGroupStart` and
`ncclGroupEnd`, each rank's part on its GPU's own picograd stream (the stream its kernels run on).
So a collective is ordered after the kernels that produced its inputs and before those that read
its outputs without the host waiting, and a JIT replay relaunches it like a kernel.

Why ctypes and not nccl4py (NVIDIA's bindings): picograd needs nine C functions of NCCL's stable ABI
(init, four collectives, group start/end, error strings, version). ctypes loads whichever
libnccl.so.2 the machine has (the `nvidia-nccl-cu12/cu13` wheel that PyTorch depends on, found by
`cuda.pathfinder`, or a system copy), adds no package to pin or to carry onto GPU machines that cannot
download, and keeps `import picograd` working where NCCL is absent (the error comes when a
collective over GPUs is first run). nccl4py is young; its API may still move.

NVLink multicast (NVLS) stays off: `NCCL_NVLS_ENABLE=0` is put into the environment before NCCL
initializes, because the hosts are shared and a multicast object can take their GPUs out of
service. picograd never calls `cuMulticastCreate`.

Several hosts (designed, not built): rank 0 calls `ncclGetUniqueId` and publishes the 128-byte id
through a rendezvous every process can reach (a TCP store at MASTER_ADDR:MASTER_PORT, as
torch.distributed does, or a shared file); each process then calls `ncclCommInitRank(comm,
world_size, id, rank)` inside a group for each GPU it drives, with rank = host_index * gpus_per_host
+ local_gpu. Nothing else here changes: collectives take the same arguments, the group calls still
cover one process's GPUs, and NCCL picks the network (InfiniBand/RoCE through its net plugin) for
the ranks on other hosts. See picograd/nn/parallel.py for what changes in training.
"""
from __future__ import annotations
import ctypes, ctypes.util, glob, os, site, sys, threading
from typing import Any
from picograd.runtime.device import Buffer, DeviceError, get_device

os.environ["NCCL_NVLS_ENABLE"] = "0"  # before any NCCL initializes in this process (see the module docstring)

# ncclDataType_t and ncclRedOp_t (nccl.h)
_DTYPES = {"int8": 0, "bool": 1, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5, "float16": 6, "float32": 7, "float64": 8,
           "bfloat16": 9}
_OPS = {"sum": 0, "max": 2}


class NCCLError(RuntimeError):
  """An NCCL call failed, or libnccl could not be found. `call` names it."""
  def __init__(self, call: str, message: str):
    super().__init__(f"{call} failed: {message}")
    self.call = call


def _candidates() -> list[str]:
  """Where libnccl.so.2 may be: $PICOGRAD_NCCL, the NVIDIA wheels (cu12 and cu13 layouts), then the system's."""
  found = [os.environ["PICOGRAD_NCCL"]] if os.environ.get("PICOGRAD_NCCL") else []
  try:
    from cuda.pathfinder import load_nvidia_dynamic_lib
    found.append(load_nvidia_dynamic_lib("nccl").abs_path)
  except Exception:  # cuda-pathfinder missing or it found nothing: look ourselves
    pass
  for base in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
    found += sorted(glob.glob(os.path.join(base, "nvidia", "nccl", "lib", "libnccl.so.2")))
    found += sorted(glob.glob(os.path.join(base, "nvidia", "cu*", "lib", "libnccl.so.2")))
  if (system := ctypes.util.find_library("nccl")) is not None: found.append(system)
  return [*dict.fromkeys(p for p in found if p), "libnccl.so.2"]


_lib: Any = None
_lib_lock = threading.Lock()


def library() -> Any:
  """libnccl, loaded once, with the prototypes picograd calls. Raises NCCLError naming where it looked."""
  global _lib
  with _lib_lock:
    if _lib is not None: return _lib
    tried = []
    for path in _candidates():
      try:
        lib = ctypes.CDLL(path)
        break
      except OSError as e:
        tried.append(f"{path}: {e}")
    else:
      raise NCCLError("dlopen libnccl.so.2", "NCCL not found (pip install nvidia-nccl-cu13, or set PICOGRAD_NCCL=/path/libnccl.so.2); tried "
                      + "; ".join(tried))
    p, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    for name, args in {"ncclGetVersion": [ctypes.POINTER(i)], "ncclCommInitAll": [ctypes.POINTER(p), i, ctypes.POINTER(i)],
                       "ncclCommDestroy": [p], "ncclGroupStart": [], "ncclGroupEnd": [],
                       "ncclAllReduce": [p, p, sz, i, i, p, p], "ncclAllGather": [p, p, sz, i, p, p],
                       "ncclReduceScatter": [p, p, sz, i, i, p, p], "ncclBroadcast": [p, p, sz, i, i, p, p]}.items():
      fn = getattr(lib, name)
      fn.argtypes, fn.restype = args, ctypes.c_int
    lib.ncclGetErrorString.argtypes, lib.ncclGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p
    _lib = lib
    return lib


def _check(call: str, status: int) -> None:
  if status != 0: raise NCCLError(call, f"{library().ncclGetErrorString(status).decode(errors='replace')} (ncclResult_t {status})")


def version() -> tuple[int, int, int]:
  """NCCL's (major, minor, patch), e.g. (2, 27, 7)."""
  v = ctypes.c_int()
  _check("ncclGetVersion", library().ncclGetVersion(ctypes.byref(v)))
  code = v.value
  return (code // 10000, code // 100 % 100, code % 100) if code >= 10000 else (code // 1000, code // 100 % 10, code % 100)


class Communicator:
  """One NCCL communicator per GPU of `devices` (rank i drives devices[i]), made with ncclCommInitAll in this process."""

  def __init__(self, devices: tuple[str, ...]):
    if len(set(devices)) != len(devices): raise ValueError(f"a communicator needs distinct GPUs, got {devices}")
    self.devices = devices
    self.contexts = [get_device(d).extra["context"] for d in devices]  # opens each GPU (its primary context and stream)
    ordinals = (ctypes.c_int * len(devices))(*(ctx.ordinal for ctx in self.contexts))
    self.comms = (ctypes.c_void_p * len(devices))()
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    _check("ncclCommInitAll", library().ncclCommInitAll(self.comms, len(devices), ordinals))

  def run(self, items: list[tuple[str, str | None, int, list[Buffer], list[Buffer]]]) -> None:
    """Queue collectives (kind, op, root, outputs, inputs) on every rank's stream, as one NCCL group (no host synchronization):
    NCCL launches independent collectives of one group together, once."""
    lib = library()
    _check("ncclGroupStart", lib.ncclGroupStart())
    try:
      for kind, op, root, outs, ins in items: self._enqueue(lib, kind, op, root, outs, ins)
    finally:
      _check("ncclGroupEnd", lib.ncclGroupEnd())

  def _enqueue(self, lib: Any, kind: str, op: str | None, root: int, outs: list[Buffer], ins: list[Buffer]) -> None:
    if (dt := _DTYPES.get(outs[0].dtype.name)) is None:
      raise TypeError(f"{kind}: NCCL has no {outs[0].dtype.name} (picograd sends {', '.join(_DTYPES)})")
    if kind in ("allreduce", "reducescatter") and op not in _OPS: raise ValueError(f"{kind}: unknown reduce op {op!r}")
    if outs[0].dtype.name == "bool": op = "max"  # a sum of bools is their OR (as on the host); NCCL would add the bytes
    for rank, (ctx, comm, out) in enumerate(zip(self.contexts, self.comms, outs)):
      ctx.make_current()
      stream = ctypes.c_void_p(int(ctx.stream))
      send = ins[0 if kind == "broadcast" else rank].handle
      if kind == "allreduce": status = lib.ncclAllReduce(send, out.handle, out.size, dt, _OPS[op], comm, stream)  # type: ignore[index]
      elif kind == "allgather": status = lib.ncclAllGather(send, out.handle, out.size // len(outs), dt, comm, stream)
      elif kind == "reducescatter": status = lib.ncclReduceScatter(send, out.handle, out.size, dt, _OPS[op], comm, stream)  # type: ignore[index]
      else: status = lib.ncclBroadcast(send if rank == root else out.handle, out.handle, out.size, dt, root, comm, stream)
      _check(f"nccl {kind} (rank {rank}, {self.devices[rank]})", status)

  def __del__(self) -> None:
    try:
      for comm in self.comms: _lib.ncclCommDestroy(comm)
    except Exception:  # at interpreter exit NCCL or the contexts may already be gone
      pass


_comms: dict[tuple[str, ...], Communicator] = {}


def communicator(devices: tuple[str, ...]) -> Communicator:
  """The communicator over `devices`, made on first use."""
  if (comm := _comms.get(devices)) is None:
    try:
      comm = _comms[devices] = Communicator(devices)
    except NCCLError as e:
      raise DeviceError(f"NCCL over {', '.join(devices)}: {e}") from e
  return comm


def run(devices: tuple[str, ...], items: list[tuple[str, str | None, int, list[Buffer], list[Buffer]]]) -> None:
  """Collectives over the GPUs `devices`, as one group: items are (kind, op, root, outputs, inputs), see runtime/collective.py."""
  communicator(tuple(devices)).run(items)


__all__ = ["NCCLError", "Communicator", "communicator", "library", "version", "run"]
