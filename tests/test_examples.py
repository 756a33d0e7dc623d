"""The training examples: a short run of each (tiny config) learns, and a run resumed from a checkpoint matches an unbroken one."""
import os, sys
import numpy as np
import pytest
from picograd import Tensor
from picograd.nn import datasets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import gpt, makemore  # noqa: E402


def _need(filename: str) -> None:
  try: datasets.data_path(filename, download=False)
  except FileNotFoundError: pytest.skip(f"{filename} is not available offline")


@pytest.fixture(autouse=True)
def _restore_training_flag():
  yield
  Tensor.training = False


def _falls(losses: list[float], n: int = 10) -> bool:
  return float(np.mean(losses[-n:])) < float(np.mean(losses[:n])) - 0.3


MAKEMORE = ["--batch", "64", "--lr", "0.3", "--n-hidden", "64", "--samples", "3", "--quiet"]


def test_makemore_learns():
  _need("names.txt")
  out = makemore.main(["--steps", "80", *MAKEMORE])
  assert len(out["losses"]) == 80 and _falls(out["losses"])
  assert out["dev_loss"] < 2.8 and out["train_loss"] < 2.8  # uniform guessing is ln 27 = 3.30
  assert len(out["samples"]) == 3 and all(isinstance(s, str) for s in out["samples"])


def test_makemore_resume_matches_unbroken_run(tmp_path):
  _need("names.txt")
  path = str(tmp_path / "mm.safetensors")
  constant_lr = ["--decay-at", "1.0", *MAKEMORE]  # the learning-rate schedule then does not depend on --steps
  straight = makemore.main(["--steps", "30", *constant_lr])
  makemore.main(["--steps", "20", "--save", path, *constant_lr])
  resumed = makemore.main(["--steps", "30", "--resume", path, *constant_lr])
  assert resumed["steps"] == 10
  np.testing.assert_allclose(resumed["losses"], straight["losses"][20:], rtol=1e-5)
  assert resumed["dev_loss"] == pytest.approx(straight["dev_loss"], rel=1e-5)


def test_gpt_learns(tmp_path):
  _need("tinyshakespeare.txt")
  tiny = ["--config", "small", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch", "16",
          "--lr", "1e-2", "--warmup", "5", "--eval-every", "40", "--eval-batches", "2", "--sample-chars", "5", "--plot", "", "--quiet"]
  out = gpt.main(["--steps", "40", "--dropout", "0.1", "--save", str(tmp_path / "gpt.safetensors"), *tiny])
  assert len(out["losses"]) == 40 and _falls(out["losses"])
  assert out["val_loss"] < 3.4  # uniform guessing over the 65 characters is ln 65 = 4.17
  assert out["tokens_per_s"] > 0 and len(out["sample"]) == 6
  resumed = gpt.main(["--steps", "42", "--resume", str(tmp_path / "gpt.safetensors"), *tiny])
  assert len(resumed["losses"]) == 2
