"""Seeing the compiler work (issue 14): provenance of kernels, Graphviz pictures, the HTML report, the Chrome trace and
the per-kernel repro scripts. One small training step (a linear layer, softmax cross-entropy, SGD) serves every test,
so a cold cache compiles few kernels."""
import contextlib, io, json, os, subprocess, sys
import numpy as np
import pytest
import picograd
from picograd import Tensor, Context

HERE = os.path.abspath(__file__)


def _line(marker: str) -> int:
  """The line of this file that contains `marker` (tests name lines by a comment, not by number)."""
  with open(HERE) as f:
    return next(i for i, text in enumerate(f, 1) if marker in text and "_line(" not in text)


def _model() -> tuple[Tensor, Tensor, Tensor]:
  rng = np.random.default_rng(0)
  x = Tensor(rng.standard_normal((8, 16)).astype(np.float32))
  w = Tensor(rng.standard_normal((16, 4)).astype(np.float32), requires_grad=True)
  y = Tensor(rng.integers(0, 4, 8).astype(np.int32))
  return x, w, y


def _loss(x: Tensor, w: Tensor, y: Tensor) -> Tensor:
  h = (x @ w).relu()  # line: matmul
  return h.cross_entropy(y)  # line: loss


def test_kernels_name_the_lines_that_built_them():
  x, w, y = _model()
  loss = _loss(x, w, y)
  loss.backward()
  steps = picograd.schedule(loss, w.grad)
  lines = [line for s in steps for line in s.provenance]
  matmul, ce = f"{HERE}:{_line('# line: matmul')}:_loss", f"{HERE}:{_line('# line: loss')}:_loss"
  assert matmul in lines and ce in lines
  # the gradient kernels carry the forward lines they differentiate, marked
  assert f"{matmul} [backward]" in lines
  # every kernel knows where it came from; forward lines come before backward ones
  for s in steps:
    assert s.provenance, s.name
    marks = [line.endswith(" [backward]") for line in s.provenance]
    assert marks == sorted(marks)
  # nothing from inside picograd (nn, frontend) is named
  assert not [line for line in lines if os.sep + "picograd" + os.sep in line]


def test_provenance_off():
  x, w, y = _model()
  with Context(PROVENANCE=0):
    out = ((x * 3).exp() @ w).sum(1)  # a graph no other test builds: nothing recorded lines on these nodes
    assert picograd.schedule(out)[0].provenance == ()
  steps = picograd.schedule(out)
  assert len(steps) == 1 and steps[0].provenance == ()


def test_debug2_names_the_line_and_jit_replays_keep_it():
  x, w, y = _model()
  step = picograd.jit(lambda x, y: _loss(x, w.detach(), y).realize())
  for _ in range(2): step(x, y)
  out = io.StringIO()
  with Context(DEBUG=2), contextlib.redirect_stdout(out): step(x, y)
  text = out.getvalue()
  assert "jit replay" in text and f"<- test_viz.py:{_line('# line: matmul')}:_loss" in text
