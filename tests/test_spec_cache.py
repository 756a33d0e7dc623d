"""Rendered kernels on disk (engine/spec_cache.py): a second process with a warm cache renders no kernel and gets the
same results; keys tell apart graphs that differ only in a constant's sign or a shape."""
import os, subprocess, sys, textwrap
from picograd import Tensor
from picograd.engine.spec_cache import graph_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import sys, numpy as np
import picograd.engine.compile as compile
if sys.argv[1] == "warm":
  def refuse(*args, **kwargs): raise AssertionError("a kernel was rendered with a warm cache")
  compile.render_spec = refuse
from picograd import Tensor
x = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
print(((x * 2 - 1).exp().sum(1) + x.max()).numpy().tolist(), (x.softmax(1) * 3).numpy().sum())
"""


def _run(mode: str, cache: str) -> str:
  env = dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=cache)
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(PROGRAM), mode], capture_output=True, text=True, env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return r.stdout


def test_warm_process_renders_nothing(tmp_path):
  cold = _run("cold", str(tmp_path))
  assert _run("warm", str(tmp_path)) == cold


def test_keys_see_signs_and_shapes():
  a, b = Tensor.ones(4), Tensor.ones(5)
  keys = {graph_key((t + 1).uop) for t in (a * 0.0, a * -0.0, b * 0.0, a * 0.0)}
  assert len(keys) == 3
