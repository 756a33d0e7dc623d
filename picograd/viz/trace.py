"""The Chrome trace (viz layer): `PROFILE=trace.json` writes every timed launch in the Trace Event format.

Open the file in chrome://tracing or https://ui.perfetto.dev. Each device is a process and each of its
streams a thread (picograd queues all work of a device on one stream; the CPU's is the host thread),
each launch a complete event ("ph": "X") named by the first source line it came from and the kernel,
with the other lines, the kernel name and whether a JIT replay launched it in its arguments.
Times are microseconds since recording started.
"""
from __future__ import annotations
import json
from typing import Any
from picograd.ir.provenance import short
from picograd.viz.record import Recorder


def trace_events(rec: Recorder) -> dict[str, Any]:
  """The trace of everything `rec` saw, as the JSON object Chrome's trace viewer and Perfetto read."""
  devices = sorted({launch.device for launch in rec.launches})
  pid = {d: i + 1 for i, d in enumerate(devices)}
  events: list[dict[str, Any]] = []
  for d in devices:
    events.append({"name": "process_name", "ph": "M", "pid": pid[d], "tid": 0, "args": {"name": d}})
    events.append({"name": "thread_name", "ph": "M", "pid": pid[d], "tid": 0, "args": {"name": "host thread" if d.startswith("CPU") else "stream 0"}})
  for launch in rec.launches:
    info = rec.kernels[launch.name]
    lines = info.provenance
    title = f"{short(lines[0])} {launch.name}" if lines else launch.name
    events.append({"name": title, "cat": "copy" if info.step.ast is None else "kernel", "ph": "X", "pid": pid[launch.device], "tid": 0,
                   "ts": round(launch.start * 1e6, 3), "dur": round(launch.seconds * 1e6, 3),
                   "args": {"kernel": launch.name, "lines": [short(line) for line in lines], "replay": launch.replay, "batch": launch.batch}})
  meta: dict[str, Any] = {"launches": len(rec.launches)}
  if rec.dropped: meta["dropped_launches"] = rec.dropped
  return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def write_trace(rec: Recorder, path: str) -> str:
  with open(path, "w") as f: json.dump(trace_events(rec), f)
  return path


__all__ = ["trace_events", "write_trace"]
