"""The on-disk compile cache: binaries keyed by compiler, options and source, so a new process skips compiling.

Entries live under the user cache directory (`~/.cache/picograd/kernels`). `CACHE=0` turns the
cache off. Writes are atomic (temporary file + rename), so concurrent processes never read a
half-written entry.
"""
from __future__ import annotations
import hashlib, os, tempfile
from picograd.helpers import CACHE, cache_dir
from picograd.runtime.device import Compiler


def _path(key: str) -> str:
  digest = hashlib.sha256(key.encode()).hexdigest()
  return os.path.join(cache_dir(), "kernels", digest[:2], digest[2:])


def cached_compile(compiler: Compiler, src: str, name: str) -> bytes:
  """`compiler.compile(src, name)`, looked up on disk first and stored there after."""
  if not CACHE: return compiler.compile(src, name)
  path = _path(f"{compiler.cache_key}\0{name}\0{src}")
  try:
    with open(path, "rb") as f: return f.read()
  except OSError:
    pass
  lib = compiler.compile(src, name)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f: f.write(lib)
    os.replace(tmp, path)
  except OSError:
    pass  # a read-only or full cache directory only costs a recompile next time
  return lib
