"""What a user sees while a program compiles and replays.

Compile events: a schedule's new kernels are announced, counted and timed, cached ones are not, and
the examples' progress line shows them. DEBUG=2 under a JIT replay says that it is a replay.
"""
import os, sys
import numpy as np
import pytest
import picograd
from picograd import Context, Tensor
from picograd.engine.events import compile_stats
from picograd.ir.ops import Ops

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(_ROOT, "examples")]
import common  # noqa: E402


def _graph() -> Tensor:
  # a shape no other test uses, so its kernels are new to this process
  x = Tensor(np.arange(7 * 11, dtype=np.float32).reshape(7, 11))
  return (x.exp2() * 3 + 1).sum(1).softmax(0)


def test_new_kernels_are_announced_then_counted():
  events, before = [], dict(compile_stats)
  with picograd.compile_listener(events.append):
    _graph().realize()
  assert len(events) >= 2 and events[0].done == 0 and not events[0].finished and events[0].name is None
  total = events[0].total
  assert [e.done for e in events] == list(range(total + 1)) and all(e.total == total for e in events)
  assert events[-1].finished and all(e.name for e in events[1:])
  assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)
  assert compile_stats["kernels"] - before["kernels"] == total and compile_stats["seconds"] > before["seconds"]
  # the same graph again compiles nothing, so nothing is announced; a removed listener hears nothing
  with picograd.compile_listener(events.append):
    _graph().realize()
  assert len(events) == total + 1


def test_engine_does_not_know_tensors():
  import picograd.engine.events as ev
  assert "picograd.tensor" not in open(ev.__file__).read()


def test_progress_line_shows_compiling_and_leaves_it_out_of_the_rate(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
  bar = common.Progress(1000, desc="demo", disable=True)  # disabled: no output, but the line is still computed
  bar._on_compile(picograd.CompileEvent(0, 38, 0.0))
  clock[0] += 5
  bar._on_compile(picograd.CompileEvent(12, 38, 5.0, "E_7_11"))
  assert "compiling 12/38 kernels" in bar.line() and "ETA" not in bar.line()
  clock[0] += 55
  bar._on_compile(picograd.CompileEvent(38, 38, 60.0, "r_7_11"))
  clock[0] += 10  # 100 steps in 10 s of training, after 60 s of compiling
  bar.update(100)
  line = bar.line()
  assert "10.0 steps/s" in line and "ETA 01:30" in line and "compiling" in line and "kernels" not in line



def test_debug2_labels_a_jit_replay(capsys):
  w = Tensor(np.ones((4, 3), np.float32)).realize()

  @picograd.jit
  def step(x):
    return (x @ w).tanh().sum().realize()
  with Context(DEBUG=2):
    for _ in range(2): step(Tensor(np.ones((2, 4), np.float32)))
    capsys.readouterr()
    step(Tensor(np.ones((2, 4), np.float32)))
  lines = capsys.readouterr().out.splitlines()
  kernel_lines = [l for l in lines if " us " in l]
  # the header comes first, then the kernels it labels, then the summary
  assert kernel_lines and lines[0] == f"jit replay of step: {len(kernel_lines)} kernel(s)"
  assert lines[1:1 + len(kernel_lines)] == kernel_lines
  assert lines[1 + len(kernel_lines)].startswith(f"jit replay: {len(kernel_lines)} kernel(s) of step in ")


@pytest.mark.parametrize("noopt", [0, 1])
def test_debug3_lists_the_optimizations_applied(capsys, noopt):
  """DEBUG=3 names each kernel's optimizations (CPU: upcasts, gate splits, thread split); NOOPT=1 applies none."""
  a = Tensor(np.arange(64 * 48, dtype=np.float32).reshape(64, 48) / 1000).realize()
  b = Tensor(np.arange(48 * 40, dtype=np.float32).reshape(48, 40) / 1000).realize()
  with Context(DEBUG=3, NOOPT=noopt):
    (a @ b + 0.5).realize()
  out = capsys.readouterr().out
  section = out[out.index(": optimizations\n"):].splitlines()[1:]
  if noopt: assert section[0] == "  none (NOOPT=1)" or section[0].startswith("  outer loop")
  else: assert section[0].startswith("  upcast ") and "by" in section[0]


@pytest.mark.parametrize("noopt", [0, 1])
def test_cuda_kernels_list_their_mapping(noopt):
  """A CUDA kernel's optimizations name the mapping pass, the block and thread indices, the loops dealt out to threads
  and the combines it put in the IR, then grid, block and shared memory (no GPU needed); NOOPT=1 maps a thread per output."""
  from picograd.codegen.kernel import render
  from test_cuda_codegen import asts
  [ast] = asts(Tensor(np.ones((256, 512), np.float32)).sum(1))
  with Context(NOOPT=noopt):
    _, _, program, _, meta = render(ast, "CUDA")
  opts = meta["opts"]
  assert opts[-1].startswith("grid (") and "B dynamic shared memory" in opts[-1]
  if noopt:
    assert opts[:3] == ["map flat", "block index over 1", "thread index over 256"] and len(opts) == 4
    assert not any(u.op is Ops.GROUP_REDUCE for u in program)
  else:
    assert opts[:3] == ["map block", "block index over 256", "thread index over 256"]
    assert "ADD combined across 256 threads" in opts and any("dealt out to a thread group" in o for o in opts)
    assert sum(u.op is Ops.GROUP_REDUCE for u in program) == 1 and sum(u.op is Ops.SPECIAL for u in program) == 2
