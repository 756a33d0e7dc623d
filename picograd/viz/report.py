"""The HTML report (viz layer): one self-contained file showing what the compiler did with a run.

`VIZ=report.html` (or `picograd.viz.report(path)`) writes it. It opens on the timeline of a training
step (the last JIT replay, else the last realize) and that step's kernels, slowest first; every
kernel name links to the kernel's page: the source lines it came from (with the code on them), its
fused graph as a picture, launch shape, measured times, and each stage of its compilation (fused
graph, lowered loops, the CPU optimizer's result, linearized program, generated source, what the
compiler made of it). A section lists each distinct schedule with its kernels and lines. No file
beside it is needed: styles, script and pictures are inline.
"""
from __future__ import annotations
import datetime, html, linecache, os, sys
from picograd.codegen.lower import lower_kernel
from picograd.codegen.kernel import optimize_cpu
from picograd.codegen.online import online_softmax
from picograd.ir.ops import print_graph
from picograd.ir.provenance import short, BACKWARD
from picograd.runtime.cache import cached_compile
from picograd.runtime.device import get_device
from picograd.viz.dot import graph_of, graph_dot, dot_to_svg, simple_svg
from picograd.viz.record import KernelInfo, Recorder, LaunchInfo

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}
header{background:#243b6b;color:#fff;padding:10px 18px}header h1{margin:0;font-size:20px}
nav{padding:6px 18px;background:#e8edf7}nav a{margin-right:14px}
main{padding:8px 18px}h2{border-bottom:1px solid #ccd;padding-bottom:2px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccd;padding:2px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.slowest{background:#fff1e0}
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#f6f7fb;border:1px solid #dde;padding:6px;overflow:auto;max-height:600px}
.tabs button{margin:0 4px 4px 0;padding:3px 10px;border:1px solid #99a;background:#fff;cursor:pointer}
.tabs button.on{background:#243b6b;color:#fff}
.lines li{margin-bottom:4px}.lines pre{margin:2px 0;max-height:none}
.back{color:#8a4b00}svg.timeline rect{cursor:pointer}
"""

_JS = """
function show(name){
  document.querySelectorAll('article.kernel').forEach(a=>{a.hidden=(a.id!=='k-'+name);});
  const art=document.getElementById('k-'+name); if(!art) return;
  art.scrollIntoView(); stage(art, art.dataset.first);
}
function stage(art, which){
  art.querySelectorAll('pre.stage').forEach(p=>{p.hidden=(p.dataset.stage!==which);});
  art.querySelectorAll('.tabs button').forEach(b=>{b.classList.toggle('on', b.dataset.stage===which);});
}
document.addEventListener('click', e=>{
  const link=e.target.closest('[data-kernel]');
  if(link){e.preventDefault(); history.replaceState(null,'','#k-'+link.dataset.kernel); show(link.dataset.kernel); return;}
  const tab=e.target.closest('.tabs button');
  if(tab){stage(tab.closest('article'), tab.dataset.stage);}
});
window.addEventListener('load', ()=>{ if(location.hash.startsWith('#k-')) show(location.hash.slice(3)); });
"""


def _e(text: object) -> str: return html.escape(str(text))


def _us(seconds: float) -> str: return f"{seconds * 1e6:,.1f} us"


def _klink(name: str) -> str: return f'<a href="#k-{_e(name)}" data-kernel="{_e(name)}">{_e(name)}</a>'


def _lines_cell(lines: tuple[str, ...], n: int = 2) -> str:
  shown = ", ".join(f'<code class="{"back" if line.endswith(BACKWARD) else ""}">{_e(short(line))}</code>' for line in lines[:n])
  return shown + (f" (+{len(lines) - n})" if len(lines) > n else "")


def _source_text(line: str) -> str:
  """The code on a provenance line (`file:line:function`), from the file."""
  path, lineno, _ = line.removesuffix(BACKWARD).rsplit(":", 2)
  return linecache.getline(path, int(lineno)).rstrip() if lineno.isdigit() else ""


def kernel_stages(info: KernelInfo) -> dict[str, str]:
  """Each stage of a kernel's compilation as text, in order (the lowering and CPU optimization are redone here: the engine
  keeps only the fused graph, the linearized program and the source)."""
  k, ast = info.step.kernel, info.step.ast
  if k is None or ast is None: return {}
  stages = {"fused graph": k.ir}
  try:
    lowered = lower_kernel(ast)
    stages["lowered"] = print_graph(lowered)
    if k.device.split(":")[0] == "CPU": stages["optimized"] = print_graph(optimize_cpu(online_softmax(lowered))[0])
  except Exception as e:  # a report shows what it can: the kernel itself compiled and ran
    stages["lowered"] = f"(could not redo the lowering here: {type(e).__name__}: {e})"
  stages["optimizations"] = "\n".join(k.opts) or "none"
  stages["linearized"] = k.program_text
  stages["source"] = k.source
  try:
    dev = get_device(k.device)
    lib = cached_compile(dev.compiler, k.source, k.name)
    try:
      stages["compiled"] = dev.compiler.disassemble(lib, k.source)  # type: ignore[call-arg]  # the CPU's takes the source too
    except TypeError:
      stages["compiled"] = dev.compiler.disassemble(lib)
  except Exception as e:  # the device or its compiler may be gone by now; the other stages still show
    stages["compiled"] = f"(not available: {type(e).__name__}: {e})"
  return stages


def _timeline(step: list[LaunchInfo]) -> str:
  if not step: return "<p>No kernel was launched while recording.</p>"
  t0 = min(launch.start for launch in step)
  span = max(launch.start + launch.seconds for launch in step) - t0 or 1e-9
  lanes = sorted({launch.device for launch in step})
  width, lane_h, left = 1000, 26, 70
  out = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width + left + 10}" height="{len(lanes) * lane_h + 24}">']
  for i, d in enumerate(lanes): out.append(f'<text x="4" y="{i * lane_h + 17}" font-size="12">{_e(d)}</text>')
  slowest = max(step, key=lambda launch: launch.seconds)
  for launch in step:
    x = left + (launch.start - t0) / span * width
    w = max(launch.seconds / span * width, 1.0)
    y = lanes.index(launch.device) * lane_h + 3
    color = "#d9480f" if launch is slowest else "#4c6ef5"
    out.append(f'<g data-kernel="{_e(launch.name)}"><title>{_e(launch.name)} {_us(launch.seconds)}</title>'
               f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 6}" fill="{color}"/></g>')
  out.append(f'<text x="{left}" y="{len(lanes) * lane_h + 18}" font-size="11">0</text>'
             f'<text x="{left + width}" y="{len(lanes) * lane_h + 18}" font-size="11" text-anchor="end">{_us(span)}</text></svg>')
  return "\n".join(out)


def _step_table(rec: Recorder, step: list[LaunchInfo]) -> str:
  total = sum(launch.seconds for launch in step) or 1e-9
  rows = ['<table id="step-kernels"><tr><th>#</th><th>kernel</th><th>time</th><th>share</th><th>made from</th></tr>']
  for i, launch in enumerate(sorted(step, key=lambda launch: -launch.seconds)):
    rows.append(f'<tr class="{"slowest" if i == 0 else ""}"><td class="num">{i + 1}</td><td>{_klink(launch.name)}</td>'
                f'<td class="num">{_us(launch.seconds)}</td><td class="num">{launch.seconds / total:.1%}</td>'
                f'<td>{_lines_cell(rec.kernels[launch.name].provenance)}</td></tr>')
  rows.append("</table>")
  return "\n".join(rows)


def _kernel_table(rec: Recorder) -> str:
  rows = ['<table id="all-kernels"><tr><th>kernel</th><th>device</th><th>runs</th><th>total</th><th>mean</th><th>made from</th></tr>']
  for info in sorted(rec.kernels.values(), key=lambda i: -i.total):
    mean = _us(info.total / len(info.times)) if info.times else "-"
    rows.append(f'<tr><td>{_klink(info.name)}</td><td>{_e(info.device)}</td><td class="num">{len(info.times)}</td>'
                f'<td class="num">{_us(info.total)}</td><td class="num">{mean}</td><td>{_lines_cell(info.provenance, 3)}</td></tr>')
  rows.append("</table>")
  return "\n".join(rows)


def _schedules(rec: Recorder) -> str:
  out = []
  for names, s in rec.schedules.items():
    items = "".join(f"<li>{_klink(n)} <small>{_lines_cell(rec.kernels[n].provenance, 3)}</small></li>" for n in names)
    out.append(f"<details><summary>schedule {s.index}: {len(names)} kernel(s), planned {s.runs} time(s) "
               f"({s.cache_hits} schedule-cache hits)</summary><ol>{items}</ol></details>")
  return "\n".join(out) or "<p>No schedule was recorded.</p>"


def _kernel_page(info: KernelInfo) -> str:
  k = info.step.kernel
  parts = [f'<article class="kernel" id="k-{_e(info.name)}" hidden data-first="source">', f"<h2>{_e(info.name)}</h2><table>"]
  rows = [("device", info.device), ("buffers", ", ".join(f"{dt.name}[{n}]" for n, dt, _ in info.args) + " (the first is written)")]
  if k is not None:
    rows += [("launch", f"global {k.dims.global_size}, local {k.dims.local_size}, {k.dims.shared_bytes} B shared memory"),
             ("work", f"{k.flops:,} flops, {k.bytes:,} bytes per run")]
  if info.times:
    ts = sorted(info.times)
    mean = sum(ts) / len(ts)
    rows.append(("measured", f"{len(ts)} run(s): median {_us(ts[len(ts) // 2])}, min {_us(ts[0])}, mean {_us(mean)}, total {_us(sum(ts))}"
                 + (f"; {k.bytes / mean / 1e9:.2f} GB/s, {k.flops / mean / 1e9:.2f} GFLOP/s" if k is not None and mean > 0 else "")))
  parts += [f"<tr><th>{_e(a)}</th><td>{_e(b)}</td></tr>" for a, b in rows] + ["</table>", "<h3>Made from</h3>"]
  if info.provenance:
    parts.append('<ul class="lines">' + "".join(
      f'<li><code class="{"back" if line.endswith(BACKWARD) else ""}">{_e(line)}</code><pre>{_e(_source_text(line))}</pre></li>'
      for line in info.provenance) + "</ul>")
  else: parts.append("<p>No source lines were recorded (PROVENANCE=0, or the graph was not built through the Tensor API).</p>")
  graph = graph_of(info.step, info.args)
  dot = graph_dot(graph)
  svg = dot_to_svg(dot)
  svg = svg[svg.find("<svg"):] if svg else simple_svg(graph)  # inline in HTML: no XML declaration or doctype
  parts += ["<h3>Fused graph</h3>", svg, f"<details><summary>Graphviz dot</summary><pre>{_e(dot)}</pre></details>"]
  stages = kernel_stages(info)
  if stages:
    parts.append("<h3>Stages</h3><div class=\"tabs\">" + "".join(f'<button data-stage="{_e(s)}">{_e(s)}</button>' for s in stages) + "</div>")
    parts += [f'<pre class="stage" data-stage="{_e(s)}" hidden>{_e(text)}</pre>' for s, text in stages.items()]
  parts.append("</article>")
  return "\n".join(parts)


def render_report(rec: Recorder) -> str:
  """The report of everything `rec` saw, as one HTML page."""
  step = rec.last_step()
  devices = sorted({i.device for i in rec.kernels.values()})
  summary = (f"{_e(' '.join(sys.argv) or 'python')} &middot; {datetime.datetime.now():%Y-%m-%d %H:%M} &middot; devices {_e(', '.join(devices))} "
             f"&middot; {len(rec.schedules)} distinct schedule(s), {len(rec.kernels)} kernel(s), {len(rec.launches)} timed launch(es)")
  which = f"the last JIT replay of {_e(step[0].replay)}" if step and step[0].replay else "the last realize"
  body = [f"<header><h1>picograd report</h1><div>{summary}</div></header>",
          '<nav><a href="#step">training step</a><a href="#kernels">all kernels</a><a href="#schedules">schedules</a></nav><main>',
          f'<section id="step"><h2>Timeline of a training step</h2><p>{len(step)} launch(es) of {which}, '
          f'{_us(sum(launch.seconds for launch in step))} of kernel time; click a kernel to see where it came from and what it became. '
          "The slowest is orange.</p>", _timeline(step), _step_table(rec, step), "</section>",
          '<section id="kernels"><h2>All kernels</h2>', _kernel_table(rec), "</section>",
          '<section id="schedules"><h2>Schedules</h2>', _schedules(rec), "</section>",
          '<section id="detail">', *(_kernel_page(info) for info in rec.kernels.values()), "</section></main>"]
  return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>picograd report</title><style>{_CSS}</style></head><body>\n"
          + "\n".join(body) + f"\n<script>{_JS}</script></body></html>\n")


def write_report(rec: Recorder, path: str) -> str:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path, "w") as f: f.write(render_report(rec))
  return path


__all__ = ["render_report", "write_report", "kernel_stages"]
