"""Several GPUs: data-parallel GPT throughput on 1..N GPUs, and all-reduce bus bandwidth beside torch.distributed (NCCL).

Part 1, training: examples/gpt.py's GPT (the large config by default: 6 layers, 6 heads, 384 dims,
context 256) on random tokens, batch --batch per GPU (weak scaling: N GPUs train on N batches a
step), every step jitted, timed after two warm-up steps (compile, capture) over --steps steps.
Rows: plain picograd on one GPU; then `nn.DataParallel` over GPUs 0..n-1 for n = 1..N (with n = 1 it
is the same model with a one-rank NCCL all-reduce of every gradient: its overhead over the plain
row is what the NCCL path costs, the issue's target is under 3%); and with --zero1, ZeRO-1.

Part 2, all-reduce: float32 buffers of --sizes MiB on each of the N GPUs, summed. picograd's time
is its COLLECTIVE step (runtime/nccl.py's group call over all GPUs from this process) launched
--iters times on the GPUs' streams, then synchronized; torch.distributed's is `dist.all_reduce`
with the NCCL backend, one process per GPU (spawned; with one GPU it runs in this process with a
FileStore, world_size=1). Bus bandwidth as nccl-tests defines it: bytes / time
* 2(n-1)/n, which is 0 with one GPU, so the algorithm bandwidth (bytes / time) is printed too.

NVLink multicast stays off (NCCL_NVLS_ENABLE=0, also for the spawned processes); nothing here
calls cuMulticastCreate.

    python bench/multi_gpu.py                        # all visible GPUs
    python bench/multi_gpu.py --gpus 1 --steps 10    # one GPU: the NCCL overhead and a one-rank all-reduce
    python bench/multi_gpu.py --zero1 --sizes 1 64 256
    python bench/multi_gpu.py --kind CPU --gpus 2 --config small --steps 3   # a dry run on virtual CPU devices (no torch column)
"""
from __future__ import annotations
import os
os.environ["NCCL_NVLS_ENABLE"] = "0"  # before torch or picograd loads NCCL, inherited by spawned processes
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
import argparse, sys, tempfile, time
from dataclasses import replace
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import picograd  # noqa: E402
from picograd import Tensor, nn, optim  # noqa: E402
from picograd.runtime.device import Buffer, get_device  # noqa: E402
from picograd.dtype import dtypes  # noqa: E402
import gpt  # noqa: E402


KIND = "CUDA"


def dev(i: int) -> str: return f"{KIND}:{i}"


def gpu_count() -> int:
  if KIND != "CUDA": return int(os.environ.get("CPU_DEVICES", 4))
  from cuda.bindings import driver as cu
  get_device("CUDA")  # initializes the driver, or raises naming what is missing
  _, n = cu.cuDeviceGetCount()
  return int(n)


def time_gpt(devices: list[str] | None, cfg: gpt.Config, steps: int, zero1: bool = False) -> float:
  """Seconds per training step; devices None: plain picograd on one GPU, else DataParallel over `devices`."""
  vocab = 65
  make_opt = lambda params: optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.1)  # noqa: E731
  Tensor.manual_seed(0)
  if devices is None:
    model = gpt.GPT(cfg, vocab, device=dev(0))
    opt = make_opt(nn.get_parameters(model))
    dp = None
  else:
    dp = nn.DataParallel(lambda d: gpt.GPT(cfg, vocab, device=d), devices, zero1=zero1)
    model, opt = dp.model, dp.optimizer(make_opt)

  @picograd.jit
  def step(x: Tensor, y: Tensor) -> Tensor:
    loss = gpt.loss_fn(model, x, y) if dp is None else dp.loss(gpt.loss_fn, x, y)
    opt.zero_grad()
    loss.backward()
    first = loss if dp is None else loss.pieces[0]
    Tensor.realize(first, *opt.schedule_step())
    return first

  n = 1 if devices is None else len(devices)
  rng = np.random.default_rng(0)
  batches = [rng.integers(0, vocab, (2, cfg.batch * n, cfg.block_size)).astype(np.int32) for _ in range(4)]
  Tensor.training = True
  for i in range(2): step(Tensor(batches[i][0], device=dev(0)), Tensor(batches[i][1], device=dev(0))).item()
  st = time.perf_counter()
  for i in range(steps):
    b = batches[i % len(batches)]
    loss = step(Tensor(b[0], device=dev(0)), Tensor(b[1], device=dev(0)))
  loss.item()  # waits for the last step
  Tensor.training = False
  return (time.perf_counter() - st) / steps


def pg_allreduce(n: int, nbytes: int, iters: int) -> float:
  """Seconds per in-place-of-the-next all-reduce of `nbytes` on GPUs 0..n-1 through picograd's NCCL path."""
  from picograd.runtime.collective import run_collective
  devices = tuple(get_device(dev(i)).name for i in range(n))
  size = nbytes // 4
  ins = [Buffer(d, size, dtypes.float32).copyin(np.ones(size, np.float32)) for d in devices]
  outs = [Buffer(d, size, dtypes.float32) for d in devices]
  spec = ("allreduce", "sum", devices, 0)
  for _ in range(3): run_collective(spec, outs + ins)
  for d in devices: get_device(d).synchronize()
  st = time.perf_counter()
  for _ in range(iters): run_collective(spec, outs + ins)  # queued on the streams: the host waits once, at the end
  for d in devices: get_device(d).synchronize()
  return (time.perf_counter() - st) / iters


def _torch_worker(rank: int, world: int, store_path: str, sizes: list[int], iters: int, results) -> None:
  import torch
  import torch.distributed as dist
  torch.cuda.set_device(rank)
  dist.init_process_group("nccl", rank=rank, world_size=world, store=dist.FileStore(store_path, world))
  out = {}
  for nbytes in sizes:
    x = torch.ones(nbytes // 4, device=f"cuda:{rank}")
    for _ in range(3): dist.all_reduce(x)
    torch.cuda.synchronize()
    dist.barrier()
    st = time.perf_counter()
    for _ in range(iters): dist.all_reduce(x)
    torch.cuda.synchronize()
    out[nbytes] = (time.perf_counter() - st) / iters
  if rank == 0: results.put(out)
  dist.destroy_process_group()


def torch_allreduce(n: int, sizes: list[int], iters: int) -> dict[int, float]:
  """Seconds per `dist.all_reduce` of each size over n GPUs (NCCL; one process per GPU)."""
  import torch.multiprocessing as mp
  store = tempfile.NamedTemporaryFile(prefix="pg-store-", delete=False).name
  os.unlink(store)
  if n == 1:
    import queue
    q: queue.Queue = queue.Queue()
    _torch_worker(0, 1, store, sizes, iters, q)
    return q.get()
  ctx = mp.get_context("spawn")
  q = ctx.Queue()
  procs = [ctx.Process(target=_torch_worker, args=(r, n, store, sizes, iters, q)) for r in range(n)]
  for p in procs: p.start()
  out = q.get()
  for p in procs: p.join()
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gpus", type=int, default=None, help="use GPUs 0..N-1 (default: all visible)")
  parser.add_argument("--config", choices=sorted(gpt.CONFIGS), default="large")
  parser.add_argument("--batch", type=int, default=None, help="batch per GPU (default: the config's)")
  parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
  parser.add_argument("--zero1", action="store_true", help="also time ZeRO-1 rows")
  parser.add_argument("--sizes", type=float, nargs="+", default=[1, 16, 128], help="all-reduce sizes in MiB")
  parser.add_argument("--iters", type=int, default=50, help="all-reduces timed per size")
  parser.add_argument("--skip-train", action="store_true")
  parser.add_argument("--kind", choices=["CUDA", "CPU"], default="CUDA", help="CPU: a dry run on virtual CPU devices")
  args = parser.parse_args()
  global KIND
  KIND = args.kind
  n_max = args.gpus or gpu_count()
  cfg = gpt.CONFIGS[args.config]
  if args.batch: cfg = replace(cfg, batch=args.batch)
  cfg = replace(cfg, dropout=0.0)  # dropout's random draws are per device: leave them out of a throughput table
  if KIND == "CUDA":
    from picograd.runtime import nccl
    print(f"# {n_max} x {get_device(dev(0)).extra['name']}; NCCL {'.'.join(map(str, nccl.version()))} (picograd, through ctypes); "
          f"NCCL_NVLS_ENABLE={os.environ['NCCL_NVLS_ENABLE']}\n")
  else: print(f"# {n_max} virtual CPU devices (copy-based collectives)\n")
  if not args.skip_train:
    tokens = cfg.batch * cfg.block_size
    print(f"GPT {args.config}: {cfg.n_layer} layers, {cfg.n_embd} dims, context {cfg.block_size}, batch {cfg.batch} per GPU\n")
    print("| run | GPUs | ms/step | tokens/s | vs plain 1 GPU |\n| --- | ---: | ---: | ---: | ---: |")
    base = time_gpt(None, cfg, args.steps)
    print(f"| plain | 1 | {base * 1e3:.1f} | {tokens / base:,.0f} | 1.00 |")
    for n in range(1, n_max + 1):
      devices = [dev(i) for i in range(n)]
      for zero1 in ([False, True] if args.zero1 else [False]):
        t = time_gpt(devices, cfg, args.steps, zero1)
        label = "DataParallel" + (" ZeRO-1" if zero1 else "")
        print(f"| {label} | {n} | {t * 1e3:.1f} | {n * tokens / t:,.0f} | {(n * tokens / t) / (tokens / base):.2f} |", flush=True)
    print()
  sizes = [int(mb * 2**20) // 4 * 4 for mb in args.sizes]
  for n in range(1, n_max + 1):
    theirs = torch_allreduce(n, sizes, args.iters) if KIND == "CUDA" else {}
    print(f"all-reduce over {n} {KIND} device(s), float32\n")
    print("| MiB | picograd us | picograd algbw GB/s | picograd busbw GB/s | torch.distributed us | torch algbw GB/s | torch busbw GB/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    factor = 2 * (n - 1) / n
    for nbytes in sizes:
      ours = pg_allreduce(n, nbytes, args.iters)
      cells = []
      for t in (ours, theirs.get(nbytes)):
        cells += ["n/a"] * 3 if t is None else [f"{t * 1e6:.1f}", f"{nbytes / t / 1e9:.1f}", f"{nbytes / t / 1e9 * factor:.1f}"]
      print(f"| {nbytes / 2**20:g} | " + " | ".join(cells) + " |", flush=True)
    print()


if __name__ == "__main__":
  main()
