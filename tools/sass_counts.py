"""SASS instruction counts of attention's CUDA kernels, with no GPU: what each warp issues per tile of its key loop.

Renders the causal bf16 SDPA training step (B=64, H=6, T, D=64) for sm_90, compiles each flash / recomputed kernel to a
CUBIN with NVRTC (ptxas's register and spill report beside it), disassembles it with nvdisasm, and counts the opcodes in
the largest loop that holds the HMMAs (a label and the branch back to it). The per-score work of these kernels decides
their speed where they issue more than the tensor cores take (codegen/cuda/fast_math.py); this is how session 13
measured it between GPU runs.

  python3 tools/sass_counts.py [T]          # default T = 1024
  nvdisasm: `pip download nvidia-cuda-nvdisasm --no-deps`, unzip the wheel, and set NVDISASM to its bin/nvdisasm
"""
from __future__ import annotations
import collections, os, re, subprocess, sys, tempfile
from picograd import Tensor, dtypes, Context
from picograd.engine import schedule
from picograd.engine.realize import _normalize
from picograd.codegen.cuda import render_for_arch
from picograd.runtime import cuda

NVDISASM = os.environ.get("NVDISASM", "nvdisasm")


def training_kernels(T: int) -> list:
  """The scheduled kernels of one causal SDPA forward + backward of bf16 tensors (lazy empty tensors: no data)."""
  with Context(ONLINE_SOFTMAX_MIN=0):
    q, k, v, g = (Tensor.empty(64, 6, T, 64, dtype=dtypes.bfloat16) for _ in range(4))
    for t in (q, k, v): t.requires_grad = True
    out = q.scaled_dot_product_attention(k, v, is_causal=True)
    roots, _ = _normalize([out.uop] + [t.uop for t in out.gradient(q, k, v, gradient=g)])
    return [kern.ast for kern in schedule.create_template(roots, ["CUDA"] * len(roots)).kernels if kern.ast is not None]


def cubin(src: str, name: str) -> tuple[bytes, str]:
  """The CUBIN for sm_90 and ptxas's report (registers, spills)."""
  from cuda.bindings import nvrtc
  prog = cuda._rtc("nvrtcCreateProgram", src.encode(), f"{name}.cu".encode(), 0, [], [])
  opts = [b"--gpu-architecture=sm_90", b"--ptxas-options=-v", *(o.encode() for o in cuda.default_options())]
  nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
  log = bytearray(cuda._rtc("nvrtcGetProgramLogSize", prog))
  cuda._rtc("nvrtcGetProgramLog", prog, log)
  image = bytearray(cuda._rtc("nvrtcGetCUBINSize", prog))
  cuda._rtc("nvrtcGetCUBIN", prog, image)
  return bytes(image), log.decode(errors="replace")


def loop_opcodes(sass: str) -> list[collections.Counter]:
  """Opcode counts of each loop holding HMMAs (from a label to a branch back to it), in program order: a key loop split at
  the causal diagonal (codegen/linearize.py) is two, the tiles inside the mask first."""
  instructions: list[tuple[str, str]] = []
  labels: dict[str, int] = {}
  for line in sass.splitlines():
    if (label := re.match(r"\s*\.(L_x_\d+):", line)): labels[label.group(1)] = len(instructions)
    if (m := re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)(.*)", line)):
      instructions.append((m.group(1).split(".")[0], m.group(2)))
  loops = []
  for at, (op, rest) in enumerate(instructions):
    target = re.search(r"\.(L_x_\d+)", rest)
    if op == "BRA" and target and labels.get(target.group(1), at + 1) <= at:
      body = [o for o, _ in instructions[labels[target.group(1)]:at + 1]]
      if "HMMA" in body: loops.append(collections.Counter(body))
  return loops


def main(T: int) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    for ast in training_kernels(T):
      name, src, _, meta = render_for_arch(ast, "sm_90")
      if meta["plan"] not in ("flash", "recomputed"): continue
      image, log = cubin(src, name)
      path = os.path.join(tmp, f"{name}.cubin")
      with open(path, "wb") as f: f.write(image)
      sass = subprocess.run([NVDISASM, "-c", path], capture_output=True, text=True, check=True).stdout
      report = " ".join(re.findall(r"Used \d+ registers|\d+ bytes spill stores", log))
      print(f"{meta['plan']:10s} {name}: {report}")
      for loop in loop_opcodes(sass):
        print(f"    loop {sum(loop.values())} instructions, HMMA {loop['HMMA']}, MUFU {loop['MUFU']}: " +
              " ".join(f"{op}:{n}" for op, n in loop.most_common()))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
