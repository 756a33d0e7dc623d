"""Checkpoints (library layer): save and load state dicts in the safetensors format, and check them against a model.

The format, written and read here without the `safetensors` package: an 8-byte little-endian header
length N, N bytes of JSON `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}`, then the raw little-endian tensor bytes, offsets counted from the end of
the header. Files written here load with `safetensors.numpy.load_file` and the other way round.

Values are handled through numpy only (`v.numpy()` or `np.asarray(v)`), so this file needs nothing from
the Tensor class beyond that, `.shape` and `.dtype`. numpy has no bfloat16: as everywhere in picograd
(`DType.np`), bfloat16 values travel as their uint16 bit patterns, and because picograd has no uint16
type of its own, a uint16 numpy array always means bfloat16 here.
"""
from __future__ import annotations
import contextlib, json, os, secrets, struct
from typing import Any, BinaryIO, Iterator, Mapping
import numpy as np
from picograd.dtype import DType, dtypes
from picograd.helpers import prod

__all__ = ["CheckpointError", "save", "load", "load_metadata", "load_state_dict", "atomic_write"]

# picograd dtype name -> safetensors dtype code
_CODES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "int32": "I32", "uint32": "U32", "int64": "I64",
          "uint64": "U64", "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_FROM_CODE = {code: getattr(dtypes, name) for name, code in _CODES.items()}
_META = "__metadata__"


class CheckpointError(ValueError):
  """A checkpoint file that cannot be read, or a state dict that does not fit the model."""


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
  """Open `path` for binary writing so that readers only ever see the old file or the complete new one.

  The data goes to a temporary file in the same directory (so the final rename stays on one file system),
  is flushed and fsync'ed, and only then renamed over `path`. If the body raises, even with
  KeyboardInterrupt, the temporary file is removed and `path` is untouched.
  """
  directory, base = os.path.split(os.path.abspath(path))
  remove_stale_temporaries(path)
  tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
  # O_EXCL: never clobber a concurrent writer's temp file; mode 0o666 lets the umask give the usual permissions
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
      f.flush()
      # without this a power cut after the rename can leave a renamed but empty file
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError): os.unlink(tmp)
    raise
  _fsync_dir(directory)


def remove_stale_temporaries(path: str) -> list[str]:
  """Delete the temporary files that writers of `path` killed mid-save left behind; returns their paths.

  A temporary file is named after its writer's pid (see atomic_write). Only files whose writer no longer
  runs are removed: a concurrent save by a live process keeps its file.
  """
  directory, base = os.path.split(os.path.abspath(path))
  prefix, removed = f".{base}.", list[str]()
  try:
    names = os.listdir(directory)
  except OSError:
    return removed  # no directory yet: nothing to clean
  for name in names:
    if not (name.startswith(prefix) and name.endswith(".tmp")): continue
    pid_text = name[len(prefix):-len(".tmp")].split(".")[0]
    if not pid_text.isdigit() or _process_alive(int(pid_text)): continue
    with contextlib.suppress(OSError):
      os.unlink(os.path.join(directory, name))
      removed.append(os.path.join(directory, name))
  return removed


def _process_alive(pid: int) -> bool:
  if pid == os.getpid(): return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:
    return True  # it exists but belongs to another user
  return True


def _fsync_dir(directory: str) -> None:
  # makes the rename itself durable; some systems (Windows) cannot open a directory, and the file is complete anyway
  with contextlib.suppress(OSError):
    fd = os.open(directory, os.O_RDONLY)
    try: os.fsync(fd)
    finally: os.close(fd)


def _to_numpy(v: Any) -> np.ndarray:
  """The host value of a Tensor (`v.numpy()`), a numpy array, or anything `np.asarray` takes."""
  return np.asarray(v.numpy()) if hasattr(v, "numpy") else np.asarray(v)


def _dtype_of_numpy(npdtype: np.dtype) -> DType:
  npdtype = npdtype.newbyteorder("=")  # byte order is the writer's business, not part of the type
  # uint16 is how numpy carries bfloat16 (see DType.np); picograd has no real uint16 to confuse it with
  return dtypes.bfloat16 if npdtype == np.uint16 else dtypes.from_numpy(npdtype)


def _describe(v: Any) -> tuple[tuple[int, ...], DType]:
  """Shape and dtype of a value without realizing it when it is a Tensor."""
  dt = getattr(v, "dtype", None)
  if isinstance(dt, DType): return tuple(int(s) for s in v.shape), dt
  arr = np.asarray(v)
  return arr.shape, _dtype_of_numpy(arr.dtype)


def _bfloat16_bits(x: np.ndarray) -> np.ndarray:
  """Round float values to bfloat16 (nearest, ties to even) and return the bits as uint16."""
  f32 = np.asarray(x, dtype=np.float32)
  bits = f32.view(np.uint32)
  rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
  # a NaN whose payload sits only in the low bits would otherwise round to infinity
  return np.where(np.isnan(f32), np.uint32(0x7FC0), rounded).astype(np.uint16)


def _bfloat16_values(bits: np.ndarray) -> np.ndarray:
  """The float32 values of bfloat16 bits (exact: bfloat16 is the top half of a float32)."""
  return (bits.astype(np.uint32) << 16).view(np.float32)


def _host_array(v: Any) -> tuple[np.ndarray, DType]:
  """The little-endian array to write for a state dict value, and the dtype to record for it."""
  arr = _to_numpy(v)
  dt = v.dtype if isinstance(getattr(v, "dtype", None), DType) else _dtype_of_numpy(arr.dtype)
  # Tensor.numpy() gives bfloat16 values as float32 (exactly representable); a uint16 array already holds the bits
  if dt == dtypes.bfloat16 and arr.dtype != np.uint16: arr = _bfloat16_bits(arr)
  return arr.astype(dt.np.newbyteorder("<"), copy=False), dt


def _write_array(f: BinaryIO, arr: np.ndarray) -> None:
  f.write(arr.tobytes(order="C"))


def save(state_dict: Mapping[str, Any], path: str, metadata: Mapping[str, str] | None = None) -> None:
  """Write `state_dict` ({name: Tensor or array}) to `path` as safetensors, atomically.

  `metadata` becomes the optional string-to-string "__metadata__" header entry. The file is replaced only
  once it is complete: a crash or an exception during `save` leaves any previous checkpoint at `path`
  intact. All values are copied to host memory before writing.
  """
  entries: list[tuple[str, np.ndarray, DType]] = []
  for name, v in state_dict.items():
    if not isinstance(name, str): raise TypeError(f"state dict keys must be str, got {name!r}")
    if name == _META: raise ValueError(f"{_META!r} is reserved by the safetensors format and cannot name a tensor")
    try:
      arr, dt = _host_array(v)
    except TypeError as e:
      raise TypeError(f"cannot save {name!r}: {e}") from e
    entries.append((name, arr, dt))
  if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
    raise TypeError("safetensors metadata must map str to str")

  # largest items first keeps every tensor aligned to its item size, because the data starts 8-aligned
  entries.sort(key=lambda e: (-e[2].itemsize, e[0]))
  header: dict[str, Any] = {} if metadata is None else {_META: dict(metadata)}
  offset = 0
  for name, arr, dt in entries:
    header[name] = {"dtype": _CODES[dt.name], "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # pad with spaces (still valid JSON) so the data starts 8-byte aligned, as safetensors does

  with atomic_write(path) as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for _, arr, _ in entries: _write_array(f, arr)


def _read_header(f: BinaryIO, path: str) -> tuple[dict[str, Any], int, int]:
  """Parse the header of an open file: (header dict, offset where the data starts, length of the data)."""
  size = os.fstat(f.fileno()).st_size
  if size < 8: raise CheckpointError(f"{path}: file is too short ({size} bytes) to be a safetensors file")
  (n,) = struct.unpack("<Q", f.read(8))
  if 8 + n > size: raise CheckpointError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
  try:
    header = json.loads(f.read(n).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: header is not valid JSON: {e}") from e
  if not isinstance(header, dict): raise CheckpointError(f"{path}: header must be a JSON object, got {type(header).__name__}")
  meta = header.get(_META, {})
  if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
    raise CheckpointError(f"{path}: {_META} must be an object of strings")
  return header, 8 + n, size - 8 - n


def _is_int(x: Any) -> bool: return isinstance(x, int) and not isinstance(x, bool)


def _parse_entries(header: dict[str, Any], data_len: int, path: str) -> dict[str, tuple[DType, tuple[int, ...], int, int]]:
  """Validate each tensor entry against the data section: {name: (dtype, shape, begin, end)}."""
  out: dict[str, tuple[DType, tuple[int, ...], int, int]] = {}
  for name, info in header.items():
    if name == _META: continue
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
      raise CheckpointError(f"{path}: entry {name!r} must be an object with dtype, shape and data_offsets")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in _FROM_CODE:
      raise CheckpointError(f"{path}: tensor {name!r} has dtype {code!r}, which picograd cannot load (supported: {', '.join(_FROM_CODE)})")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
      raise CheckpointError(f"{path}: tensor {name!r} has invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
      raise CheckpointError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
    dt, (begin, end) = _FROM_CODE[code], offsets
    if not 0 <= begin <= end <= data_len:
      raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}] outside the data section (0 to {data_len} bytes)")
    if end - begin != prod(shape) * dt.itemsize:
      raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}] spanning {end - begin} bytes, "
                            f"but shape {tuple(shape)} of {code} needs {prod(shape) * dt.itemsize}")
    out[name] = (dt, tuple(shape), begin, end)
  spans = sorted((begin, end, name) for name, (_, _, begin, end) in out.items() if end > begin)
  for (_, prev_end, prev), (begin, _, name) in zip(spans, spans[1:]):
    if begin < prev_end: raise CheckpointError(f"{path}: tensors {prev!r} and {name!r} overlap in the data section")
  return out


def _read(path: str) -> dict[str, tuple[np.ndarray, DType]]:
  """Every tensor in the file as (native-endian numpy array, picograd dtype), in file order."""
  with open(path, "rb") as f:
    header, start, data_len = _read_header(f, path)
    entries = _parse_entries(header, data_len, path)
    # one writable buffer for the whole data section; the arrays are views into it, so nothing is copied twice
    data = bytearray(data_len)
    f.seek(start)
    if f.readinto(data) != data_len: raise CheckpointError(f"{path}: file was truncated while reading")
  out = {}
  for name, (dt, shape, begin, end) in entries.items():
    arr = np.frombuffer(data, dtype=dt.np.newbyteorder("<"), count=(end - begin) // dt.itemsize, offset=begin).reshape(shape)
    out[name] = (arr.astype(dt.np, copy=False), dt)  # a no-op on little-endian hosts
  return out


def load(path: str, as_tensor: bool = True) -> dict[str, Any]:
  """Read a safetensors file into {name: Tensor}, or {name: numpy array} with `as_tensor=False`.

  Tensors are built as `Tensor(array, dtype=dtype)`; if picograd's Tensor cannot be imported, numpy
  arrays are returned instead. As numpy arrays, bfloat16 tensors come back as their uint16 bits. A file
  that is not valid safetensors (too short, bad header, offsets out of range, overlapping or not matching
  dtype and shape, a dtype picograd lacks) raises `CheckpointError` naming the file and the problem.
  """
  remove_stale_temporaries(path)
  arrays = _read(path)
  if as_tensor:
    try:
      from picograd.tensor import Tensor
    except ImportError:
      pass  # the frontend is optional for this module; arrays are the next best thing
    else:
      # Tensor takes bfloat16 data as float values and rounds them; the widened bits round back to themselves
      return {name: Tensor(_bfloat16_values(arr) if dt == dtypes.bfloat16 else arr, dtype=dt) for name, (arr, dt) in arrays.items()}
  return {name: arr for name, (arr, _) in arrays.items()}


def load_metadata(path: str) -> dict[str, str]:
  """The "__metadata__" strings of a safetensors file ({} if it has none), read without loading the data."""
  with open(path, "rb") as f:
    header, _, _ = _read_header(f, path)
  return dict(header.get(_META, {}))


def _fmt(shape: tuple[int, ...], dt: DType) -> str: return f"{tuple(shape)} {dt.name}"


def load_state_dict(model_state: Mapping[str, Any], loaded: Mapping[str, Any], strict: bool = True) -> list[tuple[str, Any]]:
  """Check a loaded state dict against a model's and return the (name, value) pairs to assign.

  `model_state` maps names to the model's Tensors (or arrays): only their `.shape` and `.dtype` are read.
  `loaded` maps names to values as `load` returns them (Tensors or numpy arrays; a uint16 array counts as
  bfloat16). Every problem is reported at once in one `CheckpointError`, one line each:

    missing keys: ...             (in the model, not in the checkpoint; ignored when strict=False)
    unexpected keys: ...          (in the checkpoint, not in the model; ignored when strict=False)
    l1.weight: expected (3, 4) float32, got (4, 3) float32

  Shape and dtype mismatches are errors even when strict=False. The result lists the names present in
  both, in the model's order, each with the value from `loaded` unchanged, so the caller assigns them:

    for name, value in load_state_dict(model_state, load(path)): model_state[name].assign(value)
  """
  problems = []
  missing = [k for k in model_state if k not in loaded]
  unexpected = [k for k in loaded if k not in model_state]
  if strict and missing: problems.append(f"missing keys: {', '.join(missing)}")
  if strict and unexpected: problems.append(f"unexpected keys: {', '.join(unexpected)}")
  pairs = []
  for name, target in model_state.items():
    if name not in loaded: continue
    want, got = _describe(target), _describe(loaded[name])
    if want != got: problems.append(f"{name}: expected {_fmt(*want)}, got {_fmt(*got)}")
    pairs.append((name, loaded[name]))
  if problems: raise CheckpointError("state dict does not match the model:\n  " + "\n  ".join(problems))
  return pairs
