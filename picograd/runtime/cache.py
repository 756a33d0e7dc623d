"""The on-disk compile cache: binaries keyed by compiler, options and source, so a new process skips compiling.

Entries live under the user cache directory (`~/.cache/picograd/kernels`). `CACHE=0` turns the
cache off. An entry is a header and the compiled payload:

  magic "picograd-kernel\\0" (16 bytes) | format version (u32) | sha256 of the key (32 bytes)
  | payload length (u64) | sha256 of the payload (32 bytes) | payload

A loaded CPU object is linked and jumped into, so a truncated, corrupted, foreign or old-format
entry must never reach a loader: any mismatch in the header counts as a miss, and the entry is
recompiled and rewritten. Only the payload leaves this module; the header never does. Writes go
to a temporary file renamed into place, so concurrent processes never read a half-written entry;
temporary files a killed process left behind are removed when their directory is next written.
"""
from __future__ import annotations
import hashlib, os, struct, tempfile, time
from typing import Callable
from picograd.helpers import CACHE, cache_dir
from picograd.runtime.device import Compiler

MAGIC = b"picograd-kernel\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct(f"<{len(MAGIC)}sI32sQ32s")
HEADER_SIZE = _HEADER.size
_TMP_PREFIX = ".tmp-"
# a temporary file older than this belongs to a writer that died (a live one renames within milliseconds)
_STALE_TMP_S = 600.0


def entry_path(key: str) -> str:
  """Where the entry for `key` lives."""
  digest = hashlib.sha256(key.encode()).hexdigest()
  return os.path.join(cache_dir(), "kernels", digest[:2], digest[2:])


def pack_entry(key: str, payload: bytes) -> bytes:
  """An entry's bytes: the header, then the payload."""
  return _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.sha256(key.encode()).digest(), len(payload), hashlib.sha256(payload).digest()) + payload


def read_entry(blob: bytes) -> tuple[bytes, bytes] | None:
  """(sha256 of the key, payload) of an intact entry of this format, or None when it is truncated, corrupt or foreign."""
  if len(blob) < HEADER_SIZE: return None
  magic, version, key_hash, length, digest = _HEADER.unpack_from(blob)
  payload = blob[HEADER_SIZE:]
  if magic != MAGIC or version != FORMAT_VERSION or length != len(payload) or digest != hashlib.sha256(payload).digest(): return None
  return key_hash, payload


def unpack_entry(key: str, blob: bytes) -> bytes | None:
  """The payload of an intact entry for `key`, or None (a damaged entry, or one for another key)."""
  entry = read_entry(blob)
  return entry[1] if entry is not None and entry[0] == hashlib.sha256(key.encode()).digest() else None


def _remove_stale_temporaries(directory: str) -> None:
  now = time.time()
  for entry in os.scandir(directory):
    try:
      if entry.name.startswith(_TMP_PREFIX) and now - entry.stat().st_mtime > _STALE_TMP_S: os.unlink(entry.path)
    except OSError:
      pass  # another process removed or renamed it first


def _write_entry(path: str, blob: bytes) -> None:
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  _remove_stale_temporaries(directory)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
  try:
    with os.fdopen(fd, "wb") as f: f.write(blob)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def cached_payload(key: str, make: Callable[[], bytes]) -> bytes:
  """The payload stored for `key`, or `make()`'s, stored for the next process. Caller checks CACHE."""
  path = entry_path(key)
  try:
    with open(path, "rb") as f: payload = unpack_entry(key, f.read())
    if payload is not None: return payload
  except OSError:
    pass  # a missing or unreadable entry is a miss
  payload = make()
  try:
    _write_entry(path, pack_entry(key, payload))
  except OSError:
    pass  # a read-only or full cache directory only costs a recompile next time
  return payload


def cached_compile(compiler: Compiler, src: str, name: str) -> bytes:
  """`compiler.compile(src, name)`, looked up on disk first and stored there after. Returns the payload only."""
  if not CACHE: return compiler.compile(src, name)
  return cached_payload(f"{compiler.cache_key}\0{name}\0{src}", lambda: compiler.compile(src, name))
