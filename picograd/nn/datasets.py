"""Datasets (library layer): find or download the example data files, and turn text into numpy training arrays.

Files are looked up in this order: an explicit path, `$PICOGRAD_DATA`, `shared/data` beside the
checkout, `../shared/data` from the working directory, the user cache; a known file missing from all of
them is downloaded into the cache and its md5 checked (`PICOGRAD_DOWNLOAD=0` turns downloads off). A
file that cannot be had raises a `DataFileError` whose one-line message names every way to supply it.
Everything here returns plain Python or numpy values; the caller wraps them in Tensors.
"""
from __future__ import annotations
import hashlib, os, random
from typing import Iterable, Sequence
import numpy as np
from picograd.helpers import cache_dir
from picograd.nn.state import atomic_write

__all__ = ["DataFileError", "DataNotFoundError", "DownloadError", "downloads_allowed", "data_path", "names", "tinyshakespeare", "CharVocab",
           "makemore_dataset", "train_dev_test_split"]

# filename -> (public URL, md5 of its content)
_SOURCES: dict[str, tuple[str, str]] = {
  "names.txt": ("https://raw.githubusercontent.com/karpathy/makemore/master/names.txt", "401b3c4cac9e28a586ed15e81256680d"),
  "tinyshakespeare.txt": ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                          "6fb458f1232090904fb40fe944165e91"),
}
_TIMEOUT_S = 30
# picograd/nn/datasets.py -> the repository root, beside which shared/ lives
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DataFileError(Exception):
  """A data file is not available. The message is one line: what went wrong, then every way to supply the file.

  `message(path_option)` renders it with a program's own name for the explicit path (an example passes
  "--data PATH"); `str()` uses the library's (the `path` argument).
  """

  def __init__(self, filename: str, problem: str):
    # not `self.filename`: OSError (a base of DataNotFoundError) prints its own format when that is set
    self.data_file, self.problem = filename, problem
    super().__init__(self.message())

  def __str__(self) -> str: return self.message()

  def message(self, path_option: str = "the `path` argument") -> str:
    ways = [f"pass its path ({path_option})", "set PICOGRAD_DATA to the directory holding it"]
    if self.data_file in _SOURCES:
      url = _SOURCES[self.data_file][0]
      off = "" if downloads_allowed() else " (or unset PICOGRAD_DOWNLOAD=0 to let picograd do it)"
      ways.append(f"download it from {url}{off}")
    return f"{self.problem}; {', '.join(ways[:-1])}, or {ways[-1]}"


class DataNotFoundError(DataFileError, FileNotFoundError):
  """A data file is in none of the places searched, and was not downloaded."""


class DownloadError(DataFileError, RuntimeError):
  """A data file could not be downloaded, or what came down was not the expected file."""


def _download(filename: str, dest: str) -> None:
  import http.client, urllib.request  # imported here: ~14 ms at start-up (ssl, email) that only a download needs
  url, md5 = _SOURCES[filename]
  try:
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r: data = r.read()
  except (OSError, http.client.HTTPException) as e:  # URLError, timeouts and broken connections
    # the reason is in the message; chaining the network stack's traceback would bury it
    raise DownloadError(filename, f"could not download {filename} from {url} ({e})") from None
  got = hashlib.md5(data, usedforsecurity=False).hexdigest()
  if got != md5: raise DownloadError(filename, f"downloaded {filename} from {url} has md5 {got}, expected {md5}")
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  with atomic_write(dest) as f: f.write(data)


def downloads_allowed() -> bool:
  """False when the environment sets PICOGRAD_DOWNLOAD=0 (offline machines, CI): data files are then only looked up."""
  return os.environ.get("PICOGRAD_DOWNLOAD", "1") != "0"


def data_path(filename: str, path: str | None = None, download: bool = True) -> str:
  """The path of data file `filename`, downloading it into the user cache if it is nowhere else.

  `path`, when given, is the file itself or a directory holding it, and must exist. Otherwise the
  search goes `$PICOGRAD_DATA`, `<repo>/../shared/data`, `./../shared/data`, `<cache_dir>/data`; if the
  file is in none of them, is one of the known files, `download` is true and `$PICOGRAD_DOWNLOAD` is
  not 0, it is fetched from its public URL and its md5 verified. Raises `DataNotFoundError` (a
  FileNotFoundError) or `DownloadError`, each with a one-line message naming the ways to supply the file.
  """
  if path is not None:
    found = os.path.join(path, filename) if os.path.isdir(path) else path
    if not os.path.isfile(found): raise DataNotFoundError(filename, f"{filename} not found at the given path {found}")
    return found
  cached = os.path.join(cache_dir(), "data", filename)
  dirs = ([os.environ["PICOGRAD_DATA"]] if os.environ.get("PICOGRAD_DATA") else []) + [
    os.path.join(_REPO_ROOT, "..", "shared", "data"), os.path.join(os.getcwd(), "..", "shared", "data")]
  # dict.fromkeys drops the repeat when the working directory is the checkout itself
  candidates = list(dict.fromkeys([os.path.normpath(os.path.join(d, filename)) for d in dirs] + [cached]))
  for c in candidates:
    if os.path.isfile(c): return c
  if filename not in _SOURCES or not download or not downloads_allowed():
    reason = (f"it is not a known download ({', '.join(_SOURCES)})" if filename not in _SOURCES else
              "downloads are off" + ("" if download else " (download=False)"))
    raise DataNotFoundError(filename, f"{filename} not found in {', '.join(candidates)}, and {reason}")
  _download(filename, cached)
  return cached


def names(path: str | None = None) -> list[str]:
  """The 32,033 first names of makemore's names.txt, one string each."""
  with open(data_path("names.txt", path), encoding="utf-8") as f: return [w for w in f.read().splitlines() if w]


def tinyshakespeare(path: str | None = None) -> str:
  """The 1,115,394 characters of char-rnn's tiny Shakespeare."""
  with open(data_path("tinyshakespeare.txt", path), encoding="utf-8") as f: return f.read()


def _codepoints(s: str) -> np.ndarray:
  return np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)


class CharVocab:
  """A character vocabulary: `itos[i]` is the character with index i, `stoi` the reverse.

  Indices are int32 numpy arrays (picograd's default int). `from_words` builds makemore's vocabulary
  ('.' as index 0, the start/end token, then the sorted characters); `from_text` builds nanoGPT's
  (the sorted characters of a text).
  """

  def __init__(self, chars: Iterable[str]):
    self.itos: list[str] = list(chars)
    if not all(isinstance(c, str) and len(c) == 1 for c in self.itos): raise ValueError("a vocabulary holds single characters")
    self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}
    if len(self.stoi) != len(self.itos): raise ValueError("a vocabulary cannot hold a character twice")
    if not self.itos: raise ValueError("a vocabulary needs at least one character")
    # encode maps a whole string at once: search its code points in the sorted code points of the vocabulary
    cps = _codepoints("".join(self.itos))
    self._order = np.argsort(cps).astype(np.int32)
    self._sorted_cps = cps[self._order]

  @classmethod
  def from_words(cls, words: Iterable[str], special: str = ".") -> CharVocab:
    """makemore's vocabulary: `special` at index 0, then every other character of `words`, sorted."""
    return cls([special] + sorted(set("".join(words)) - {special}))

  @classmethod
  def from_text(cls, text: str) -> CharVocab:
    """The sorted distinct characters of `text`."""
    return cls(sorted(set(text)))

  def __len__(self) -> int: return len(self.itos)
  def __repr__(self) -> str: return f"CharVocab({''.join(self.itos)!r})"

  def encode(self, s: str) -> np.ndarray:
    """The indices of the characters of `s`, as an int32 array; ValueError for a character not in the vocabulary."""
    cps = _codepoints(s)
    pos = np.minimum(np.searchsorted(self._sorted_cps, cps), len(self._sorted_cps) - 1)
    unknown = self._sorted_cps[pos] != cps
    if unknown.any(): raise ValueError(f"character {chr(cps[np.argmax(unknown)])!r} is not in the vocabulary")
    return self._order[pos]

  def decode(self, ids: Iterable[int]) -> str:
    """The string of the characters with indices `ids`."""
    return "".join(self.itos[int(i)] for i in ids)


def makemore_dataset(words: Sequence[str], block_size: int = 3, *, vocab: CharVocab) -> tuple[np.ndarray, np.ndarray]:
  """Context windows and next characters, exactly as makemore's MLP builds them.

  For each word and each of its characters plus the final '.', X gets the `block_size` previous
  indices (padded with index 0 before the word starts) and Y the index to predict. Build `vocab` once
  from all words (`CharVocab.from_words`) and pass the same one for every split. Returns int32 arrays
  X of shape [n, block_size] and Y of shape [n], n = sum(len(w) + 1).
  """
  if block_size < 1: raise ValueError(f"block_size must be at least 1, got {block_size}")
  if not words: return np.zeros((0, block_size), np.int32), np.zeros(0, np.int32)
  pad = vocab.itos[0]
  # Lay every word out as pad*block_size + word + pad in one sequence; every position after a word's
  # padding is a target, and the block_size positions before it are its context.
  seq = vocab.encode("".join(pad * block_size + w + pad for w in words))
  lengths = np.array([block_size + len(w) + 1 for w in words], dtype=np.int64)
  starts = np.cumsum(lengths) - lengths
  pos_in_word = np.arange(len(seq)) - np.repeat(starts, lengths)
  targets = np.flatnonzero(pos_in_word >= block_size)
  windows = np.lib.stride_tricks.sliding_window_view(seq, block_size)
  return np.ascontiguousarray(windows[targets - block_size]), seq[targets]


def train_dev_test_split(words: Sequence[str], seed: int = 42,
                         fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[list[str], list[str], list[str]]:
  """Shuffle a copy of `words` with `random.Random(seed)` and cut it into train, dev and test lists.

  With the defaults this is makemore's split (`random.seed(42); random.shuffle(words)`, cuts at 80% and 90%).
  """
  if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
    raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
  shuffled = list(words)
  random.Random(seed).shuffle(shuffled)
  n1, n2 = int(fractions[0] * len(shuffled)), int((fractions[0] + fractions[1]) * len(shuffled))
  return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]
