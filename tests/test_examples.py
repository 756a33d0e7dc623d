"""The training examples: a short run of each (tiny config) learns, and a missing data file ends in one line (resuming: test_resume.py)."""
import os, sys
import numpy as np
import pytest
from picograd import Tensor
from conftest import need_data

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(_ROOT, "examples"), os.path.join(_ROOT, "bench")]
import cnn, gpt, makemore, rnn  # noqa: E402


def _falls(losses: list[float], n: int = 10) -> bool:
  return float(np.mean(losses[-n:])) < float(np.mean(losses[:n])) - 0.3


MAKEMORE = ["--batch", "64", "--lr", "0.3", "--n-hidden", "64", "--samples", "3", "--quiet"]


def test_missing_data_exits_with_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv("PICOGRAD_DOWNLOAD", "0")
  for example in (makemore, gpt):
    with pytest.raises(SystemExit) as e: example.main(["--data", str(tmp_path / "none.txt"), "--quiet"])
    msg = str(e.value.code)
    assert "\n" not in msg and "--data PATH" in msg and "PICOGRAD_DATA" in msg and "https://" in msg


def test_makemore_learns():
  need_data("names.txt")
  out = makemore.main(["--steps", "80", *MAKEMORE])
  assert len(out["losses"]) == 80 and _falls(out["losses"])
  assert out["dev_loss"] < 2.8 and out["train_loss"] < 2.8  # uniform guessing is ln 27 = 3.30
  assert len(out["samples"]) == 3 and all(isinstance(s, str) for s in out["samples"])


def test_gpt_learns(tmp_path):
  need_data("tinyshakespeare.txt")
  tiny = ["--config", "small", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch", "16",
          "--lr", "1e-2", "--warmup", "5", "--eval-every", "40", "--eval-batches", "2", "--sample-chars", "5", "--plot", "", "--quiet"]
  out = gpt.main(["--steps", "40", "--dropout", "0.1", "--save", str(tmp_path / "gpt.safetensors"), *tiny])
  assert len(out["losses"]) == 40 and _falls(out["losses"])
  assert out["val_loss"] < 3.4  # uniform guessing over the 65 characters is ln 65 = 4.17
  assert out["tokens_per_s"] > 0 and len(out["sample"]) == 6
  resumed = gpt.main(["--steps", "42", "--resume", str(tmp_path / "gpt.safetensors"), *tiny])
  assert len(resumed["losses"]) == 2


def test_gpt_matches_its_pytorch_twin():
  """The example's GPT and bench/train.py's PyTorch GPT are the same function: same loss, same gradients."""
  torch = pytest.importorskip("torch")
  from dataclasses import replace
  from picograd import nn
  import train as bench
  cfg = replace(gpt.CONFIGS["small"], n_layer=1, n_head=2, n_embd=32, block_size=16, batch=16)
  ours, theirs = gpt.GPT(cfg, 65), bench.TorchGPT(cfg, 65)
  rename = {"attn.c_attn": "c_attn", "attn.c_proj": "attn_proj", "mlp.c_fc": "c_fc", "mlp.c_proj": "mlp_proj"}
  def torch_name(name: str) -> str:
    for a, b in rename.items(): name = name.replace(a, b)
    return name
  theirs.load_state_dict({torch_name(k): torch.from_numpy(v.numpy().copy()) for k, v in nn.state_dict(ours).items()})
  rng = np.random.default_rng(0)
  x, y = rng.integers(0, 65, (16, 16)).astype(np.int32), rng.integers(0, 65, (16, 16)).astype(np.int32)
  loss = gpt.loss_fn(ours, Tensor(x), Tensor(y))
  loss.backward()
  tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x).long()).reshape(-1, 65), torch.from_numpy(y).long().reshape(-1))
  tloss.backward()
  assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
  tparams = dict(theirs.named_parameters())
  for name, p in nn.state_dict(ours).items():
    np.testing.assert_allclose(p.grad.numpy(), tparams[torch_name(name)].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_lstm_matches_its_pytorch_twin():
  """examples/rnn.py's LSTM model and bench/train.py's PyTorch LSTM are the same function (the same parameter names):
  same loss with padded targets ignored, same gradients."""
  torch = pytest.importorskip("torch")
  from picograd import nn
  import train as bench
  ours, theirs = rnn.CharRNN(27, "lstm", 8, 16), bench.TorchLSTM(27, 8, 16)
  theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in nn.state_dict(ours).items()})
  rng = np.random.default_rng(0)
  x, y = rng.integers(0, 27, (4, 10)).astype(np.int32), rng.integers(0, 27, (4, 10)).astype(np.int32)
  y[:, 7:] = rnn.PAD
  loss = ours(Tensor(x))[0].flatten(0, 1).cross_entropy(Tensor(y).flatten(), ignore_index=rnn.PAD)
  loss.backward()
  tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x).long()).reshape(-1, 27), torch.from_numpy(y).long().reshape(-1),
                                            ignore_index=rnn.PAD)
  tloss.backward()
  assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
  tparams = dict(theirs.named_parameters())
  for name, p in nn.state_dict(ours).items():
    np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_cnn_without_sklearn_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # the import fails as if scikit-learn were missing
  with pytest.raises(SystemExit) as e: cnn.main(["--quiet"])
  assert "scikit-learn" in str(e.value.code) and "pip install" in str(e.value.code)


def test_cnn_learns():
  pytest.importorskip("sklearn")
  out = cnn.main(["--steps", "30", "--batch", "32", "--lr", "1e-2", "--c1", "4", "--c2", "8", "--eval-every", "30", "--plot", "", "--quiet"])
  assert len(out["losses"]) == 30 and _falls(out["losses"], 5)
  assert out["test_accuracy"] > 0.5  # chance is 10%


def test_rnn_learns():
  need_data("names.txt")
  out = rnn.main(["--steps", "40", "--batch", "32", "--n-embd", "8", "--n-hidden", "16", "--eval-every", "40", "--samples", "3", "--plot", "",
                  "--quiet"])
  assert len(out["losses"]) == 40 and _falls(out["losses"])
  assert out["dev_loss"] < 3.0  # uniform guessing is ln 27 = 3.30
  assert out["compiles_after_capture"] == 0  # the unrolled step compiles in its first two calls, then only replays
  assert len(out["samples"]) == 3 and all(isinstance(s, str) for s in out["samples"])
