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
  # a graph of its own: kernels of the same structure built elsewhere in the suite would add their lines to the same nodes
  step = picograd.jit(lambda x, y: ((x @ w.detach()).tanh() * 0.37).sum(1).realize())  # line: debug2
  for _ in range(2): step(x, y)
  out = io.StringIO()
  with Context(DEBUG=2), contextlib.redirect_stdout(out): step(x, y)
  text = out.getvalue()
  assert "jit replay" in text and f"<- test_viz.py:{_line('# line: debug2')}:<lambda>" in text


@pytest.fixture
def recording():
  """Record the test's launches (timed) and stop afterwards, so other tests run untimed."""
  picograd.viz.clear()
  rec = picograd.viz.start()
  try:
    yield rec
  finally:
    picograd.viz.clear()


def _train(steps: int = 4) -> str:
  """A jitted training step run `steps` times; the name of its slowest kernel in the last replay."""
  x, w, y = _model()

  @picograd.jit
  def train_step(x: Tensor, y: Tensor) -> Tensor:
    loss = _loss(x, w, y)
    w.grad = None
    loss.backward()
    w.assign(w - 0.1 * w.grad)
    return loss.realize(w)
  for _ in range(steps): train_step(x, y)
  rec = picograd.viz.recorder()
  assert rec is not None
  return max(rec.last_step(), key=lambda launch: launch.seconds).name


def test_to_dot_draws_kernels_buffers_shapes_and_lines():
  x, w, y = _model()
  h = (x @ w).relu()  # line: dot
  steps = picograd.schedule(h.softmax(-1))
  dot = picograd.viz.to_dot(h.softmax(-1))
  assert dot.startswith("digraph") and dot.count("subgraph cluster_") == len(steps)
  for s in steps: assert s.name in dot
  assert "shape=cylinder" in dot and "buffer float32[128]" in dot and "float32 8x4x16" in dot and "MUL" in dot and "REDUCE" in dot
  assert f"test_viz.py:{_line('# line: dot')}:test_to_dot" in dot
  one = picograd.viz.to_dot(steps[0])
  assert one.count("subgraph cluster_") == 1
  svg = picograd.viz.to_svg(steps[0])  # Graphviz is optional
  assert svg is None or "<svg" in svg
  # without Graphviz the report draws the same graph itself: well-formed SVG with a box per node
  import xml.etree.ElementTree as ET
  from picograd.viz.dot import graph_of, simple_svg
  g = graph_of(steps[0])
  root = ET.fromstring(simple_svg(g))
  assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == len(g.nodes)
  with pytest.raises(TypeError): picograd.viz.to_dot(3)


def test_profile_writes_a_chrome_trace(recording, tmp_path):
  _train()
  trace = json.loads(open(picograd.viz.profile(str(tmp_path / "trace.json"))).read())
  events = trace["traceEvents"]
  assert {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "CPU"}} in events
  launches = [e for e in events if e["ph"] == "X"]
  assert launches and all(e["dur"] >= 0 and e["ts"] >= 0 and e["pid"] == 1 for e in launches)
  # named by the line they came from, then the kernel; replays say whose
  matmul = f"test_viz.py:{_line('# line: matmul')}:_loss"
  assert any(matmul in e["args"]["lines"] and e["name"].startswith(e["args"]["lines"][0] + " ") for e in launches)
  assert any(e["args"]["replay"] == "train_step" for e in launches) and any(e["args"]["replay"] is None for e in launches)
  assert all(e["name"].endswith(e["args"]["kernel"]) for e in launches)


def test_dump_writes_lines_dot_and_a_repro_that_runs(tmp_path):
  x, w, y = _model()
  with Context(DUMP=str(tmp_path)): _loss(x, w, y).realize()
  repros = sorted(tmp_path.glob("*.repro.py"))
  assert repros
  for r in repros:
    name = r.name.removesuffix(".repro.py")
    assert (tmp_path / f"{name}.dot").read_text().startswith("digraph")
    assert "test_viz.py:" in (tmp_path / f"{name}.provenance.txt").read_text()
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE))}
  out = subprocess.run([sys.executable, str(repros[0]), "--runs", "3"], capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith(repros[0].name.removesuffix(".repro.py") + " on CPU: ") and " us (median of 3)" in out.stdout


def test_viz_and_profile_env_write_their_files_at_exit(tmp_path):
  script = "import numpy as np\nfrom picograd import Tensor\n(Tensor(np.ones((4, 4), np.float32)) * 2).sum(1).numpy()\n"
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE)), "VIZ": str(tmp_path / "r.html"), "PROFILE": str(tmp_path / "t.json")}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "<title>picograd report</title>" in (tmp_path / "r.html").read_text()
  assert [e for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"] if e["ph"] == "X"]


def test_report_in_a_browser(recording, tmp_path):
  """The HTML report in headless Chromium: the slowest kernel of the training step links to its page, which names the
  model lines it came from (with their code), shows its measured time, and its source behind the "source" tab."""
  from browser import Browser, find_chromium
  slowest = _train()
  path = picograd.viz.report(str(tmp_path / "report.html"))
  info = recording.kernels[slowest]
  chromium = find_chromium()
  if chromium is None: pytest.skip("no chromium or chrome on PATH (or $CHROMIUM): `apt-get install chromium` to run this test")
  with Browser(chromium) as browser:
    page = browser.open("file://" + path)
    # the step table lists the slowest kernel first; the timeline draws it in orange
    assert page.eval("document.querySelector('#step-kernels tr.slowest a').dataset.kernel") == slowest
    assert page.eval("document.querySelectorAll('article.kernel:not([hidden])').length") == 0
    page.eval("document.querySelector('#step-kernels tr.slowest a').click()")
    assert page.eval("document.querySelector('article.kernel:not([hidden])').id") == f"k-{slowest}"
    assert location_hash(page) == f"#k-{slowest}"
    shown = page.eval("document.querySelector('article.kernel:not([hidden])').innerText")
    assert "Made from" in shown and "measured" in shown and " us" in shown
    for line in info.provenance: assert line in shown
    assert "return h.cross_entropy(y)" in shown or "h = (x @ w).relu()" in shown  # the code on a line it names
    # the source tab shows the generated LLVM IR of this kernel, and nothing else
    page.eval("document.querySelector('article.kernel:not([hidden]) .tabs button[data-stage=\"source\"]').click()")
    visible = page.eval("[...document.querySelectorAll('article.kernel:not([hidden]) pre.stage')].filter(p => !p.hidden).map(p => p.innerText)")
    assert len(visible) == 1 and f"@{slowest}(" in visible[0] and "define" in visible[0]
    assert visible[0].strip() == info.step.kernel.source.strip()
    # the fused graph is drawn, and the timeline's bars link to kernels too
    assert page.eval("document.querySelector('article.kernel:not([hidden]) svg') !== null")
    page.eval(f"document.querySelector('svg.timeline g[data-kernel=\"{slowest}\"]').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    assert page.eval("document.querySelector('article.kernel:not([hidden])').id") == f"k-{slowest}"


def location_hash(page) -> str: return page.eval("location.hash")
