"""DESIGN §1's layers, checked from the source: every import (top-level or inside a function) points down, and no
two modules import each other, directly or around a circle. The rules live in tools/layers.py."""
import importlib.util, pathlib, sys, textwrap
import pytest

_spec = importlib.util.spec_from_file_location("picograd_layers", pathlib.Path(__file__).resolve().parent.parent / "tools" / "layers.py")
layers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = layers  # dataclasses look their module up while the file runs
_spec.loader.exec_module(layers)


def test_every_module_has_a_layer():
  for module in layers.module_files(): assert layers.layer_of(module) in layers.ALLOWED, module


def test_imports_point_down_the_layers():
  bad = layers.violations(layers.import_edges())
  assert not bad, "layer violations (DESIGN §1):\n" + "\n".join(bad)


def test_no_import_circles():
  edges = layers.import_edges()
  circles = layers.cycles(edges)
  assert not circles, "import circles:\n" + "\n".join(
    " <-> ".join(c) + "".join(f"\n  {e}" for e in layers.circle_edges(edges, c)) for c in circles)


def test_the_named_rules():
  # the three: codegen never imports the runtime, the engine never imports the Tensor, the IR nothing above it
  edges = layers.import_edges()
  assert not [e for e in edges if e.module.startswith("picograd.codegen") and e.target.startswith("picograd.runtime")]
  assert not [e for e in edges if e.module.startswith("picograd.engine") and e.target == "picograd.tensor"]
  assert {layers.layer_of(e.target) for e in edges if e.module.startswith("picograd.ir")} <= {"base", "ir"}


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for name, text in files.items():
    path = tmp_path / "picograd" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  return tmp_path


def test_the_checker_finds_violations_and_circles(tmp_path):
  # a made-up package: an upward import hidden in a function, a relative import, a circle through a package's
  # submodule, and a TYPE_CHECKING import (a layer violation, but no circle: it never runs)
  root = _tree(tmp_path, {
    "helpers.py": "",
    "ir/ops.py": "def f():\n  from picograd.engine.realize import realize\n",
    "engine/realize.py": "from . import jit\nfrom picograd.ir.ops import f\n",
    "engine/jit.py": "from picograd.engine import realize\n",
    "codegen/kernel.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from picograd.runtime.device import Buffer\n",
    "runtime/device.py": "import picograd.codegen.kernel\n",
  })
  edges = layers.import_edges(root)
  assert {(e.module, e.target, e.typing_only) for e in edges} == {
    ("picograd.ir.ops", "picograd.engine.realize", False), ("picograd.engine.realize", "picograd.engine.jit", False),
    ("picograd.engine.realize", "picograd.ir.ops", False), ("picograd.engine.jit", "picograd.engine.realize", False),
    ("picograd.codegen.kernel", "picograd.runtime.device", True), ("picograd.runtime.device", "picograd.codegen.kernel", False)}
  bad = layers.violations(edges)
  assert len(bad) == 3 and any("picograd/ir/ops.py:2: picograd.ir.ops imports picograd.engine.realize (ir may not import engine)" in b
                               for b in bad), bad
  assert sorted(layers.cycles(edges)) == [["picograd.engine.jit", "picograd.engine.realize", "picograd.ir.ops"]]


def test_a_module_outside_every_layer_is_an_error():
  with pytest.raises(ValueError, match="belongs to no layer"): layers.layer_of("numpy")
