"""Tests for picograd/nn/datasets.py: the file search order, downloads (from file:// URLs, never the network),
the vocabulary, makemore's context windows and split."""
import hashlib, os, random, urllib.request
import numpy as np
import pytest
from picograd.nn import datasets
from picograd.nn.datasets import CharVocab, DownloadError, data_path, makemore_dataset, train_dev_test_split


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No $PICOGRAD_DATA, a cache under tmp_path, and a working directory with no ../shared/data."""
  monkeypatch.delenv("PICOGRAD_DATA", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  return tmp_path


def write(path, text: str) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def local_data(filename: str) -> str:
  """The real data file if it is already on this machine; these tests never download it."""
  try:
    return data_path(filename, download=False)
  except FileNotFoundError:
    pytest.skip(f"{filename} is not available locally")


# ---- finding and downloading files


def test_explicit_path_file_or_directory(isolated):
  f = write(isolated / "mine" / "x.txt", "hi")
  assert data_path("x.txt", f) == f
  assert data_path("x.txt", str(isolated / "mine")) == f
  with pytest.raises(FileNotFoundError, match="given path"): data_path("x.txt", str(isolated / "nowhere.txt"))


def test_env_var_beats_shared_and_cache(isolated, monkeypatch):
  env = write(isolated / "env" / "names.txt", "a\n")
  monkeypatch.setenv("PICOGRAD_DATA", str(isolated / "env"))
  assert data_path("names.txt") == env


def test_shared_beside_checkout():
  shared = os.path.join(datasets._REPO_ROOT, "..", "shared", "data", "names.txt")
  if not os.path.isfile(shared): pytest.skip("no shared/data beside this checkout")
  assert os.path.samefile(data_path("names.txt", download=False), shared) or os.environ.get("PICOGRAD_DATA")


def test_shared_beside_working_directory(isolated, monkeypatch):
  monkeypatch.setattr(datasets, "_REPO_ROOT", str(isolated / "elsewhere"))
  f = write(isolated / "shared" / "data" / "only_here.txt", "x")
  assert os.path.samefile(data_path("only_here.txt"), f)


def test_unknown_file_is_not_downloaded(isolated):
  with pytest.raises(FileNotFoundError, match="not a known download"): data_path("nope.txt")


@pytest.fixture
def fake_source(isolated, monkeypatch):
  """A known download called fake.txt, served from a file:// URL."""
  content = b"alpha\nbeta\n"
  src = isolated / "server" / "fake.txt"
  src.parent.mkdir()
  src.write_bytes(content)
  monkeypatch.setitem(datasets._SOURCES, "fake.txt", (src.as_uri(), hashlib.md5(content).hexdigest()))
  return src


def test_download_into_cache(isolated, fake_source):
  with pytest.raises(FileNotFoundError, match="downloads are off"): data_path("fake.txt", download=False)
  got = data_path("fake.txt")
  assert got == str(isolated / "cache" / "picograd" / "data" / "fake.txt")
  assert open(got, "rb").read() == fake_source.read_bytes()
  assert os.listdir(os.path.dirname(got)) == ["fake.txt"]  # no temp file left
  fake_source.unlink()  # the second call uses the cache
  assert data_path("fake.txt") == got


def test_download_md5_mismatch(isolated, fake_source, monkeypatch):
  monkeypatch.setitem(datasets._SOURCES, "fake.txt", (fake_source.as_uri(), "0" * 32))
  with pytest.raises(DownloadError, match="expected 0{32}"): data_path("fake.txt")
  assert not (isolated / "cache" / "picograd" / "data" / "fake.txt").exists()


def test_download_offline(isolated, monkeypatch):
  monkeypatch.setitem(datasets._SOURCES, "fake.txt", ((isolated / "missing.txt").as_uri(), "0" * 32))
  with pytest.raises(DownloadError, match="could not download fake.txt"): data_path("fake.txt")


def test_download_uses_timeout(isolated, fake_source, monkeypatch):
  seen = {}

  def fake_urlopen(url, timeout=None):
    seen["timeout"] = timeout
    raise TimeoutError("timed out")
  monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
  with pytest.raises(DownloadError, match="timed out"): data_path("fake.txt")
  assert seen["timeout"] == datasets._TIMEOUT_S


def test_download_env_off(isolated, fake_source, monkeypatch):
  monkeypatch.setenv("PICOGRAD_DOWNLOAD", "0")
  with pytest.raises(datasets.DataNotFoundError, match="downloads are off") as e: data_path("fake.txt")
  assert "unset PICOGRAD_DOWNLOAD=0" in str(e.value) and fake_source.as_uri() in str(e.value)
  monkeypatch.setenv("PICOGRAD_DOWNLOAD", "1")
  assert open(data_path("fake.txt"), "rb").read() == fake_source.read_bytes()


def test_missing_file_message_is_one_line_naming_every_remedy(isolated, monkeypatch):
  monkeypatch.setenv("PICOGRAD_DOWNLOAD", "0")
  monkeypatch.setattr(datasets, "_REPO_ROOT", str(isolated / "elsewhere"))
  with pytest.raises(FileNotFoundError) as e: data_path("names.txt")
  msg = e.value.message("--data PATH")
  assert "\n" not in msg and e.value.__cause__ is None
  for needle in ("--data PATH", "PICOGRAD_DATA", datasets._SOURCES["names.txt"][0]): assert needle in msg
  # a failed download says the same, without the network stack's traceback attached
  monkeypatch.setenv("PICOGRAD_DOWNLOAD", "1")
  monkeypatch.setitem(datasets._SOURCES, "names.txt", ((isolated / "gone.txt").as_uri(), "0" * 32))
  with pytest.raises(DownloadError) as e: data_path("names.txt")
  assert e.value.__cause__ is None and e.value.__suppress_context__ and "PICOGRAD_DATA" in str(e.value)


# ---- the real files


def test_names():
  words = datasets.names(local_data("names.txt"))
  assert len(words) == 32033 and words[:3] == ["emma", "olivia", "ava"]


def test_tinyshakespeare():
  text = datasets.tinyshakespeare(local_data("tinyshakespeare.txt"))
  assert len(text) == 1115394 and text.startswith("First Citizen:")


def test_md5s_match_local_copies():
  for filename, (_, md5) in datasets._SOURCES.items():
    with open(local_data(filename), "rb") as f: assert hashlib.md5(f.read()).hexdigest() == md5, filename


# ---- vocabulary, windows, split


def test_char_vocab_makemore():
  v = CharVocab.from_words(["emma", "ava", "zoe"])
  assert v.itos == [".", "a", "e", "m", "o", "v", "z"] and v.stoi["."] == 0 and len(v) == 7
  ids = v.encode("emma.")
  assert ids.dtype == np.int32 and ids.tolist() == [2, 3, 3, 1, 0]
  assert v.decode(ids) == "emma." and v.decode([6, 4, 2]) == "zoe"
  with pytest.raises(ValueError, match="'q' is not in the vocabulary"): v.encode("aqa")
  assert v.encode("").shape == (0,)


def test_char_vocab_unsorted_and_unicode():
  v = CharVocab(["z", "é", "a", "\n"])
  assert v.encode("aé\nz").tolist() == [2, 1, 3, 0]
  assert CharVocab.from_text("hello").itos == ["e", "h", "l", "o"]
  with pytest.raises(ValueError, match="twice"): CharVocab("aa")
  with pytest.raises(ValueError, match="at least one"): CharVocab("")


def makemore_reference(words, block_size, stoi):
  """makemore's MLP dataset loop, verbatim in spirit."""
  X, Y = [], []
  for w in words:
    context = [0] * block_size
    for ch in w + ".":
      ix = stoi[ch]
      X.append(context)
      Y.append(ix)
      context = context[1:] + [ix]
  return np.array(X), np.array(Y)


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_makemore_dataset_matches_reference(block_size):
  words = ["emma", "olivia", "ava", "x", "isabella"]
  v = CharVocab.from_words(words)
  X, Y = makemore_dataset(words, block_size, vocab=v)
  Xr, Yr = makemore_reference(words, block_size, v.stoi)
  assert X.shape == (sum(len(w) + 1 for w in words), block_size) and X.dtype == Y.dtype == np.int32
  np.testing.assert_array_equal(X, Xr)
  np.testing.assert_array_equal(Y, Yr)


def test_makemore_dataset_edges():
  v = CharVocab.from_words(["ab"])
  X, Y = makemore_dataset([], 3, vocab=v)
  assert X.shape == (0, 3) and Y.shape == (0,)
  X, Y = makemore_dataset([""], 2, vocab=v)
  assert X.tolist() == [[0, 0]] and Y.tolist() == [0]
  with pytest.raises(ValueError, match="block_size"): makemore_dataset(["ab"], 0, vocab=v)


def test_makemore_dataset_real_names():
  words = datasets.names(local_data("names.txt"))
  v = CharVocab.from_words(words)
  X, Y = makemore_dataset(words, 3, vocab=v)
  assert len(v) == 27 and X.shape == (228146, 3) and Y.shape == (228146,)
  Xr, Yr = makemore_reference(words[:500], 3, v.stoi)
  np.testing.assert_array_equal(X[:len(Xr)], Xr)
  np.testing.assert_array_equal(Y[:len(Yr)], Yr)


def test_train_dev_test_split():
  words = [f"w{i}" for i in range(1000)]
  tr, dev, te = train_dev_test_split(words)
  assert (len(tr), len(dev), len(te)) == (800, 100, 100)
  assert sorted(tr + dev + te) == sorted(words) and words[0] == "w0"  # input untouched
  expected = list(words)
  random.Random(42).shuffle(expected)
  assert tr + dev + te == expected
  assert train_dev_test_split(words, seed=1) != (tr, dev, te)
  assert [len(s) for s in train_dev_test_split(words, fractions=(0.5, 0.5, 0.0))] == [500, 500, 0]
  with pytest.raises(ValueError, match="summing to 1"): train_dev_test_split(words, fractions=(0.8, 0.1, 0.2))


def test_split_of_real_names_matches_makemore():
  words = datasets.names(local_data("names.txt"))
  tr, dev, te = train_dev_test_split(words)
  assert (len(tr), len(dev), len(te)) == (25626, 3203, 3204)
  assert tr[:3] == ["yuheng", "diondre", "xavien"]  # makemore's first shuffled names with random.seed(42)
