"""--resume continues a run bit-exactly: N steps in one go equal N/2 steps, a stop, and N/2 more from the checkpoint.

The checkpoint holds the model, the optimizer state (Adam's moments and step powers, the learning
rate), the generator state (dropout draws) and the run's settings (so the learning-rate schedule of the
planned length goes on). The runs are tiny configurations of the two examples, called in-process.
"""
import os, signal, sys
import numpy as np
import pytest
from picograd import nn
from conftest import need_data

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(_ROOT, "examples")]
import common, gpt, makemore  # noqa: E402


def _same_weights(a: str, b: str) -> None:
  wa, wb = nn.state.load(a), nn.state.load(b)
  assert wa.keys() == wb.keys()
  for k in wa: np.testing.assert_array_equal(wa[k].numpy(), wb[k].numpy(), err_msg=k)


# the learning rate drops at step int(8 * 0.75) = 6, after the stop at 3: the resumed run must know the planned length
# (batch, sizes and dropout as in test_examples.py: in one pytest process the compiled kernels are shared)
MAKEMORE = ["--steps", "8", "--batch", "64", "--n-hidden", "64", "--decay-at", "0.75", "--lr", "0.5", "--samples", "1", "--quiet"]


def test_makemore_resume_is_bit_exact(tmp_path):
  need_data("names.txt")
  whole, part = str(tmp_path / "whole.safetensors"), str(tmp_path / "part.safetensors")
  straight = makemore.main([*MAKEMORE, "--save", whole])
  first = makemore.main([*MAKEMORE, "--save", part, "--stop-at", "3"])
  assert first["steps"] == 3 and first["losses"] == straight["losses"][:3]
  resumed = makemore.main(["--resume", part, "--quiet", "--samples", "1"])  # settings, schedule and length come from the checkpoint
  assert resumed["steps"] == 5 and resumed["losses"] == straight["losses"][3:]
  assert resumed["dev_loss"] == straight["dev_loss"]
  _same_weights(whole, part)  # the resumed run kept saving into its checkpoint


def test_resume_refuses_changed_settings(tmp_path, capsys):
  need_data("names.txt")
  part = str(tmp_path / "part.safetensors")
  makemore.main([*MAKEMORE, "--save", part, "--stop-at", "1"])
  with pytest.raises(SystemExit):
    makemore.main(["--resume", part, "--lr", "0.2", "--quiet"])
  assert "differs from the checkpoint's 0.5" in capsys.readouterr().err


def test_ctrl_c_stops_after_the_step_and_saves(tmp_path, monkeypatch):
  need_data("names.txt")
  part = str(tmp_path / "part.safetensors")
  update = common.Progress.update

  def interrupt_after_step_2(self, n=1):
    update(self, n)
    if self.n == 2: signal.raise_signal(signal.SIGINT)
  monkeypatch.setattr(common.Progress, "update", interrupt_after_step_2)
  # a process started in the background inherits Ctrl-C ignored; the example only takes over Python's default handler
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    out = makemore.main([*MAKEMORE, "--save", part])
    assert out["steps"] == 2 and nn.state.load_metadata(part)["step"] == "2"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after training
  finally:
    signal.signal(signal.SIGINT, previous)


GPT = ["--config", "small", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch", "16",
       "--lr", "1e-2", "--warmup", "2", "--dropout", "0.1", "--eval-every", "3", "--eval-batches", "1", "--sample-chars", "2",
       "--plot", "", "--quiet", "--steps", "6"]


def test_gpt_resume_is_bit_exact(tmp_path):
  """AdamW's moments and step powers, the cosine schedule and the dropout draws all continue."""
  need_data("tinyshakespeare.txt")
  whole, part = str(tmp_path / "whole.safetensors"), str(tmp_path / "part.safetensors")
  straight = gpt.main([*GPT, "--save", whole])
  gpt.main([*GPT, "--save", part, "--stop-at", "3"])
  resumed = gpt.main(["--resume", part, "--quiet", "--plot", "", "--sample-chars", "2"])
  assert resumed["losses"] == straight["losses"][3:]
  assert resumed["evals"] == straight["evals"][1:] and resumed["sample"] == straight["sample"]
  _same_weights(whole, part)
