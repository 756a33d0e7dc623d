"""Seeing what the compiler did (viz layer: above the engine, beside the frontend; it reads tensors only as handles).

- `to_dot(tensor_or_kernel)`: Graphviz dot text of the fused kernels (clusters), their buffers, shapes and dtypes;
  `to_svg(...)` the same as SVG where Graphviz is installed (else None).
- `VIZ=report.html`, or `start()` then `report(path)`: one self-contained HTML page of the run (viz/report.py).
- `PROFILE=trace.json`, or `start()` then `profile(path)`: a Chrome / Perfetto trace of every launch (viz/trace.py).
- With `DUMP=dir`, besides the stages the engine writes, each kernel gets `<name>.provenance.txt`, `<name>.dot`
  (`<name>.svg` with Graphviz) and `<name>.repro.py`, a script that runs it alone (viz/repro.py).

Recording times every launch (each waits for its device), so it is on only when asked: VIZ or PROFILE set when
picograd is imported, or `start()`. The files named by VIZ and PROFILE are written when the program exits.
"""
from __future__ import annotations
import atexit, importlib, os, sys, types
from typing import TYPE_CHECKING, Any
from picograd.helpers import DUMP, Flag
from picograd.engine import observe
from picograd.engine.realize import ScheduledKernel
from picograd.ir.provenance import PROVENANCE
if TYPE_CHECKING:
  from picograd.viz.dot import to_dot, to_svg, graph_of, graph_dot
  from picograd.viz.record import Recorder, recorder, start, clear

# the submodules load on first use (`import picograd` is on every program's start-up path; most never draw a picture)
_LAZY = {**dict.fromkeys(("to_dot", "to_svg", "graph_of", "graph_dot", "dot_to_svg"), "dot"),
         **dict.fromkeys(("Recorder", "recorder", "start", "clear"), "record"), "write_report": "report", "repro_script": "repro",
         "write_trace": "trace"}


def __getattr__(name: str) -> Any:
  if name not in _LAZY: raise AttributeError(f"module 'picograd.viz' has no attribute {name!r}")
  value = globals()[name] = getattr(importlib.import_module(f"picograd.viz.{_LAZY[name]}"), name)
  return value


class _Package(types.ModuleType):
  """The package's module type: a submodule imported later does not replace the package's function of the same name
  (`report`), as the import system's setattr would; importing the submodules first (eagerly) kept the function too."""
  def __setattr__(self, name: str, value: Any) -> None:
    if isinstance(value, types.ModuleType) and callable(getattr(self, name, None)): return
    super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

VIZ = Flag("VIZ", "")
PROFILE = Flag("PROFILE", "")


def _active(what: str) -> Recorder:
  rec = __getattr__("recorder")()
  if rec is None: raise RuntimeError(f"{what}: nothing was recorded; set VIZ= or PROFILE= before the run, or call picograd.viz.start() first")
  return rec


def report(path: str) -> str:
  """Write the HTML report of what was recorded so far to `path`; returns the path."""
  return __getattr__("write_report")(_active("report"), path)



def profile(path: str) -> str:
  """Write the Chrome trace of the launches recorded so far to `path`; returns the path."""
  return __getattr__("write_trace")(_active("profile"), path)


# ---------------------------------------------------------------- DUMP: the files the engine does not write
_dumped: set[tuple[str, str]] = set()


def dump_kernel(step: ScheduledKernel, folder: str) -> None:
  """Write `step`'s provenance, dot picture (and SVG) and repro script into `folder`, once per kernel."""
  if step.kernel is None or step.ast is None or (folder, step.name) in _dumped: return
  _dumped.add((folder, step.name))
  os.makedirs(folder, exist_ok=True)
  base = os.path.join(folder, step.name)
  dot = __getattr__("to_dot")(step)
  files = {"provenance.txt": "\n".join(step.provenance) + "\n", "dot": dot,
           "repro.py": __getattr__("repro_script")(step.name, step.kernel.device, step.ast, [(b.size, b.dtype, b.device) for b in step.buffers],
                                    step.provenance, step.kernel.ir)}
  if (svg := __getattr__("dot_to_svg")(dot)) is not None: files["svg"] = svg
  for suffix, text in files.items():
    with open(f"{base}.{suffix}", "w") as f: f.write(text)


def _on_schedule(steps: list[Any], cache_hit: bool) -> None:
  if DUMP.value:
    for step in steps: dump_kernel(step, str(DUMP.value))


def _at_exit() -> None:
  if "picograd.viz.record" not in sys.modules or (rec := __getattr__("recorder")()) is None: return  # nothing was recorded
  if VIZ.value: print(f"picograd: wrote the report {__getattr__('write_report')(rec, str(VIZ.value))}")
  if PROFILE.value: print(f"picograd: wrote the trace {__getattr__('write_trace')(rec, str(PROFILE.value))}")


observe.schedule_listeners.append(_on_schedule)
if VIZ.value or PROFILE.value: __getattr__("start")()
atexit.register(_at_exit)

__all__ = ["to_dot", "to_svg", "graph_of", "graph_dot", "report", "profile", "start", "clear", "recorder", "dump_kernel", "VIZ", "PROFILE",
           "PROVENANCE"]
