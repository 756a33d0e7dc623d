"""The CPU device's thread pool (runtime layer): native worker threads that split a kernel's outer loop.

A Python pool thread takes 60-100 us to pick up a slice, so mid-size kernels stayed on one core.
These workers are native: a small module of LLVM IR (below) compiled once, like a kernel, and
linked by MCJIT. Workers are created with pthread_create and never run Python. A job is n slices
of the outer loop; the caller publishes it by bumping a generation counter, and the caller and
the workers claim slices from an atomic counter until none is left, so a worker the OS has not
scheduled yet (a loaded machine) never holds the caller up: the caller runs the slices itself.
The caller then waits only for slices already claimed. Workers spin on the generation for a
while (PAUSE between reads), then sleep on it with a futex; a caller that waits long sleeps too,
on a futex the last slice wakes. A hand-off to a spinning worker costs about a microsecond.

The generation is odd while the caller rewrites a job's fields, and a worker announces itself
(an `active` count) and re-reads the generation before it reads the fields, so no worker reads a
half-written job or claims a slice of a job it did not see whole. Kernels reach the pool through
their `<name>.slice(ptr args, i64 start, i64 end)` entry (codegen/llvm.py), which loads the buffer
pointers from an array and calls the kernel; its int64 error word is one of them, set with an atomic
OR, so checks work from any thread.

A job may also be queued without the caller (`pg_pool_submit`): the caller returns to Python, builds
the next graph while the workers stream, and joins the job (`pg_pool_join`: it claims the slices
left, then waits for the claimed ones) before its next launch or any host access of the memory:
asynchronous launches, as on a CUDA stream of depth one. Only one job is published at a time, and
Python threads take turns (a lock), so launches run in the order they were made. At interpreter
exit the job in flight is joined and the workers are stopped and joined before the module's code
could be freed; a fork waits for the job first, and a forked child starts its own workers on first
use (the parent's are not copied by fork). Linux only (futex, pthread); elsewhere kernels run on one thread.
"""
from __future__ import annotations
import atexit, ctypes, os, platform, sys, threading
from typing import Any

# Spin this many PAUSEs (about 40 ns each on Zen 4) before sleeping: ~0.5 ms, longer than the gap between the
# kernels of a training step, so a step's hand-offs never pay a futex wake-up (tens of microseconds).
SPIN = 1 << 14
MAX_WORKERS = 255
_SYSCALL_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
FUTEX_WAIT, FUTEX_WAKE = 128, 129  # the _PRIVATE forms: the words are never shared with another process
_RECORD = "{ ptr, ptr, i64, i64, ptr }"  # one launch of pg_run_list: slice function, argument array, outer, slices, error word
_TAIL = "{ ptr, ptr, i64 }"  # a job's tail (pg_pool_attach): slice function, argument array, outer


def _pause() -> str:
  return "call void @llvm.x86.sse2.pause()" if platform.machine() == "x86_64" else "call void asm sideeffect \"yield\", \"\"()"


def pool_source() -> str:
  """The pool's LLVM IR: pg_pool_start(n), pg_pool_run(fn, args, outer, nslices) (= pg_pool_submit, then pg_pool_join(nslices)),
  pg_pool_attach(tail), pg_run_list(records, count, single), pg_pool_stop(), pg_pool_reset()."""
  futex = f"call i64 (i64, ...) @syscall(i64 {_SYSCALL_FUTEX}"
  tids = f"[{MAX_WORKERS + 1} x i64]"
  return f"""
@gen = internal global i32 0
@active = internal global i32 0
@next = internal global i32 0
@done = internal global i32 0
@sleepers = internal global i32 0
@waiting = internal global i32 0
@stop = internal global i32 0
@job_fn = internal global ptr null
@job_args = internal global ptr null
@job_outer = internal global i64 0
@job_n = internal global i32 0
@tail = internal global ptr null
@workers = internal global i64 0
@tids = internal global {tids} zeroinitializer

declare i64 @syscall(i64, ...)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_join(i64, ptr)
declare i32 @sched_yield()
{"declare void @llvm.x86.sse2.pause()" if platform.machine() == "x86_64" else ""}

; claim and run slices of the published job until none is left; whoever finishes the last slice closes the job to tails
; and runs the one attached, if any (counting it as slice n + 1), and wakes a sleeping caller
define internal void @claim() {{
entry:
  %n = load i32, ptr @job_n
  %fn = load ptr, ptr @job_fn
  %args = load ptr, ptr @job_args
  %outer = load i64, ptr @job_outer
  %n64 = zext i32 %n to i64
  br label %loop
loop:
  %s = atomicrmw add ptr @next, i32 1 seq_cst
  %mine = icmp ult i32 %s, %n
  br i1 %mine, label %run, label %out
run:
  %s64 = zext i32 %s to i64
  %lo.m = mul i64 %outer, %s64
  %lo = udiv i64 %lo.m, %n64
  %s1 = add i64 %s64, 1
  %hi.m = mul i64 %outer, %s1
  %hi = udiv i64 %hi.m, %n64
  call void %fn(ptr %args, i64 %lo, i64 %hi)
  %d = atomicrmw add ptr @done, i32 1 seq_cst
  %d1 = add i32 %d, 1
  %last = icmp eq i32 %d1, %n
  br i1 %last, label %close, label %loop
close:
  %t = atomicrmw xchg ptr @tail, ptr inttoptr (i64 1 to ptr) seq_cst
  %has.tail = icmp ne ptr %t, null
  br i1 %has.tail, label %run.tail, label %maybe.wake
run.tail:
  %t.fn.p = getelementptr {_TAIL}, ptr %t, i64 0, i32 0
  %t.fn = load ptr, ptr %t.fn.p
  %t.args.p = getelementptr {_TAIL}, ptr %t, i64 0, i32 1
  %t.args = load ptr, ptr %t.args.p
  %t.outer.p = getelementptr {_TAIL}, ptr %t, i64 0, i32 2
  %t.outer = load i64, ptr %t.outer.p
  call void %t.fn(ptr %t.args, i64 0, i64 %t.outer)
  %d.t = atomicrmw add ptr @done, i32 1 seq_cst
  br label %maybe.wake
maybe.wake:
  %sleeping = load atomic i32, ptr @waiting seq_cst, align 4
  %wake = icmp ne i32 %sleeping, 0
  br i1 %wake, label %wake.caller, label %loop
wake.caller:
  %woke = {futex}, ptr @done, i32 {FUTEX_WAKE}, i32 1, ptr null)
  br label %loop
out:
  ret void
}}

; worker i, started at generation g (arg = g << 32 | i, not read from @gen: a job may be published before the thread
; first runs): wait for a new even generation, announce itself, check the generation again, claim slices
define internal ptr @pg_worker(ptr %arg) {{
entry:
  %packed = ptrtoint ptr %arg to i64
  %g0.64 = lshr i64 %packed, 32
  %g0 = trunc i64 %g0.64 to i32
  br label %spin
spin:
  %seen = phi i32 [%g0, %entry], [%seen, %spin.next], [%seen, %slept], [%seen, %retry], [%cur, %finished]
  %k = phi i32 [0, %entry], [%k1, %spin.next], [0, %slept], [0, %retry], [0, %finished]
  %cur = load atomic i32, ptr @gen acquire, align 4
  %new = icmp ne i32 %cur, %seen
  %odd = and i32 %cur, 1
  %whole = icmp eq i32 %odd, 0
  %go = and i1 %new, %whole
  br i1 %go, label %enter, label %spin.next
spin.next:
  {_pause()}
  %k1 = add i32 %k, 1
  %more = icmp ult i32 %k1, {SPIN}
  br i1 %more, label %spin, label %sleep
sleep:
  %s0 = atomicrmw add ptr @sleepers, i32 1 seq_cst
  %w = {futex}, ptr @gen, i32 {FUTEX_WAIT}, i32 %cur, ptr null)
  %s1 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  br label %slept
slept:
  br label %spin
enter:
  %a0 = atomicrmw add ptr @active, i32 1 seq_cst
  %again = load atomic i32, ptr @gen seq_cst, align 4
  %same = icmp eq i32 %again, %cur
  br i1 %same, label %job, label %retry
retry:
  %a1 = atomicrmw sub ptr @active, i32 1 seq_cst
  br label %spin
job:
  %stop = load atomic i32, ptr @stop acquire, align 4
  %quit = icmp ne i32 %stop, 0
  br i1 %quit, label %exit, label %work
work:
  call void @claim()
  %a2 = atomicrmw sub ptr @active, i32 1 seq_cst
  br label %finished
finished:
  br label %spin
exit:
  %a3 = atomicrmw sub ptr @active, i32 1 seq_cst
  ret ptr null
}}

; start workers up to n (n <= {MAX_WORKERS}); returns how many run
define i64 @pg_pool_start(i64 %n) {{
entry:
  %have = load i64, ptr @workers
  br label %loop
loop:
  %i = phi i64 [%have, %entry], [%i1, %made]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %make, label %out
make:
  %i1 = add i64 %i, 1
  %slot = getelementptr {tids}, ptr @tids, i64 0, i64 %i1
  %g = load atomic i32, ptr @gen acquire, align 4
  %g.64 = zext i32 %g to i64
  %g.hi = shl i64 %g.64, 32
  %packed = or i64 %g.hi, %i1
  %arg = inttoptr i64 %packed to ptr
  %rc = call i32 @pthread_create(ptr %slot, ptr null, ptr @pg_worker, ptr %arg)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %made, label %out
made:
  store i64 %i1, ptr @workers
  br label %loop
out:
  %got = load i64, ptr @workers
  ret i64 %got
}}

; forget workers that do not exist (in a forked child: fork copies only the calling thread)
define void @pg_pool_reset() {{
  store i32 0, ptr @gen
  store i64 0, ptr @workers
  store i32 0, ptr @active
  store i32 0, ptr @waiting
  store i32 0, ptr @sleepers
  store i32 0, ptr @stop
  ret void
}}

; make the generation odd and wait until no worker is between announcing itself and leaving: the fields are free
define internal void @begin_write() {{
entry:
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  br label %check
check:
  %k = phi i32 [0, %entry], [%k1, %wait], [%k1, %yield]
  %a = load atomic i32, ptr @active seq_cst, align 4
  %idle = icmp eq i32 %a, 0
  br i1 %idle, label %out, label %wait
wait:
  {_pause()}
  %k1 = add i32 %k, 1
  %long = icmp ugt i32 %k1, {SPIN}
  br i1 %long, label %yield, label %check
yield:
  %y = call i32 @sched_yield()
  br label %check
out:
  ret void
}}

; make the generation even again (the job is whole) and wake sleeping workers
define internal void @publish() {{
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  %s = load atomic i32, ptr @sleepers seq_cst, align 4
  %asleep = icmp ne i32 %s, 0
  br i1 %asleep, label %wake, label %out
wake:
  %woke = {futex}, ptr @gen, i32 {FUTEX_WAKE}, i32 2147483647, ptr null)
  br label %out
out:
  ret void
}}

; wait until every slice is done: spin, then sleep on @done
define internal void @wait_done(i32 %n) {{
entry:
  br label %spin
spin:
  %k = phi i32 [0, %entry], [%k1, %spin.next]
  %d = load atomic i32, ptr @done acquire, align 4
  %all = icmp eq i32 %d, %n
  br i1 %all, label %out, label %spin.next
spin.next:
  {_pause()}
  %k1 = add i32 %k, 1
  %more = icmp ult i32 %k1, {SPIN}
  br i1 %more, label %spin, label %sleep
sleep:
  store atomic i32 1, ptr @waiting seq_cst, align 4
  br label %check
check:
  %q = load atomic i32, ptr @done seq_cst, align 4
  %finished = icmp eq i32 %q, %n
  br i1 %finished, label %woken, label %block
block:
  %r = {futex}, ptr @done, i32 {FUTEX_WAIT}, i32 %q, ptr null)
  br label %check
woken:
  store atomic i32 0, ptr @waiting seq_cst, align 4
  br label %out
out:
  ret void
}}

; publish fn(args, start, end) over [0, outer) in n slices for the workers and return at once (the previous job must be
; joined: its slices are all done)
define void @pg_pool_submit(ptr %fn, ptr %args, i64 %outer, i64 %n) {{
  call void @begin_write()
  %n32 = trunc i64 %n to i32
  store ptr %fn, ptr @job_fn
  store ptr %args, ptr @job_args
  store i64 %outer, ptr @job_outer
  store i32 %n32, ptr @job_n
  store i32 0, ptr @next
  store i32 0, ptr @done
  store ptr null, ptr @tail
  call void @publish()
  ret void
}}

; attach tail record %t (fn(args, 0, outer) on one thread) to the published job: it runs after the job's last slice.
; Returns 1, or 0 when that slice is done already (the job is closed) or another tail is attached
define i64 @pg_pool_attach(ptr %t) {{
  %r = cmpxchg ptr @tail, ptr null, ptr %t seq_cst seq_cst
  %ok = extractvalue {{ ptr, i1 }} %r, 1
  %ok64 = zext i1 %ok to i64
  ret i64 %ok64
}}

; claim the published job's slices that no worker took yet, then wait until its n slices (and its tail: n + 1) are done
define void @pg_pool_join(i64 %n) {{
  %n32 = trunc i64 %n to i32
  call void @claim()
  call void @wait_done(i32 %n32)
  ret void
}}

; run fn(args, start, end) over [0, outer) in n slices, claimed by this thread and the workers
define void @pg_pool_run(ptr %fn, ptr %args, i64 %outer, i64 %n) {{
  call void @pg_pool_submit(ptr %fn, ptr %args, i64 %outer, i64 %n)
  call void @pg_pool_join(i64 %n)
  ret void
}}

; run `count` launch records in order (a JIT replay: runtime/cpu.py LaunchList), each {{slice fn, args, outer, n, error word}}:
; n > 1 splits through the pool (the caller started the workers), else (or when %single is set) the slice runs here over
; [0, outer). Returns the OR of the records' error words (null: none) after the last launch.
define i64 @pg_run_list(ptr %recs, i64 %count, i64 %single) {{
entry:
  %alone = icmp ne i64 %single, 0
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %more = icmp ult i64 %i, %count
  br i1 %more, label %body, label %errs
body:
  %r = getelementptr {_RECORD}, ptr %recs, i64 %i
  %fn.p = getelementptr {_RECORD}, ptr %r, i64 0, i32 0
  %fn = load ptr, ptr %fn.p
  %args.p = getelementptr {_RECORD}, ptr %r, i64 0, i32 1
  %args = load ptr, ptr %args.p
  %outer.p = getelementptr {_RECORD}, ptr %r, i64 0, i32 2
  %outer = load i64, ptr %outer.p
  %n.p = getelementptr {_RECORD}, ptr %r, i64 0, i32 3
  %n = load i64, ptr %n.p
  %multi = icmp ugt i64 %n, 1
  %split = xor i1 %alone, true
  %pool = and i1 %multi, %split
  br i1 %pool, label %par, label %seq
par:
  call void @pg_pool_run(ptr %fn, ptr %args, i64 %outer, i64 %n)
  br label %next
seq:
  call void %fn(ptr %args, i64 0, i64 %outer)
  br label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
errs:
  %j = phi i64 [0, %loop], [%j1, %errs.next]
  %acc = phi i64 [0, %loop], [%acc1, %errs.next]
  %emore = icmp ult i64 %j, %count
  br i1 %emore, label %errs.body, label %out
errs.body:
  %er = getelementptr {_RECORD}, ptr %recs, i64 %j, i32 4
  %ep = load ptr, ptr %er
  %has = icmp ne ptr %ep, null
  br i1 %has, label %errs.read, label %errs.next
errs.read:
  %ev = load atomic i64, ptr %ep acquire, align 8
  br label %errs.next
errs.next:
  %got = phi i64 [0, %errs.body], [%ev, %errs.read]
  %acc1 = or i64 %acc, %got
  %j1 = add i64 %j, 1
  br label %errs
out:
  ret i64 %acc
}}

; stop and join every worker
define void @pg_pool_stop() {{
entry:
  call void @begin_write()
  store i32 0, ptr @job_n
  store atomic i32 1, ptr @stop seq_cst, align 4
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  %woke = {futex}, ptr @gen, i32 {FUTEX_WAKE}, i32 2147483647, ptr null)
  %n = load i64, ptr @workers
  br label %loop
loop:
  %i = phi i64 [1, %entry], [%i1, %join]
  %more = icmp ule i64 %i, %n
  br i1 %more, label %join, label %out
join:
  %slot = getelementptr {tids}, ptr @tids, i64 0, i64 %i
  %tid = load i64, ptr %slot
  %rc = call i32 @pthread_join(i64 %tid, ptr null)
  %i1 = add i64 %i, 1
  br label %loop
out:
  store i64 0, ptr @workers
  store atomic i32 0, ptr @stop seq_cst, align 4
  ret void
}}
"""


class _Tail(ctypes.Structure):
  """A job's tail, as pg_pool_attach reads it."""
  _fields_ = [("fn", ctypes.c_void_p), ("args", ctypes.c_void_p), ("outer", ctypes.c_int64)]


class Pool:
  """The process's worker threads, started on first use. `run` splits one kernel call, or queues it (`keep` given) and
  returns while the workers run it: an asynchronous launch, as on a CUDA stream. At most one job is in flight; every
  other use of the pool (the next launch, a launch list, `stop`, a fork) first joins it, the caller claiming the slices
  no worker took yet, and `wait` joins it for whoever reads or writes host memory (runtime/cpu.py's allocator). `run`
  returns False when the pool cannot take the job (not available here, or fewer than 2 threads)."""

  def __init__(self, compile_object: Any, load_object: Any):
    self._compile, self._load = compile_object, load_object
    self._lock = threading.Lock()
    self._fns: dict[str, Any] | None = None
    self._workers = 0
    # the job in flight: the slices to wait for (its tail counts as one), what keeps its memory alive (buffer handles,
    # argument arrays, the tail record) and whether a tail is attached; None when there is none
    self._inflight: tuple[int, Any, bool] | None = None
    self.available = _SYSCALL_FUTEX is not None and sys.platform.startswith("linux")
    # a fork copies only the calling thread: the job must be done before, or the child would wait for slices no one runs
    if hasattr(os, "register_at_fork"): os.register_at_fork(before=self.wait, after_in_child=self._after_fork)

  def _functions(self) -> dict[str, Any]:
    if self._fns is None:
      lib = self._compile(pool_source(), "pg_pool")
      self._loaded = self._load(lib)  # kept for the life of the process: the workers run its code
      addr = self._loaded.engine.get_function_address
      job = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
      self._fns = {"start": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr("pg_pool_start")),
                   "run": job(addr("pg_pool_run")), "submit": job(addr("pg_pool_submit")),
                   "join": ctypes.CFUNCTYPE(None, ctypes.c_int64)(addr("pg_pool_join")),
                   "attach": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(addr("pg_pool_attach")),
                   "stop": ctypes.CFUNCTYPE(None)(addr("pg_pool_stop")), "reset": ctypes.CFUNCTYPE(None)(addr("pg_pool_reset")),
                   "run_list": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(addr("pg_run_list"))}
      atexit.register(self.stop)
    return self._fns

  def _join(self) -> None:
    """Finish the job in flight (the caller holds the lock)."""
    if self._inflight is not None:
      self._fns["join"](self._inflight[0])  # type: ignore[index]  # a job was queued, so the functions exist
      self._inflight = None

  def wait(self) -> None:
    """Return once no job is in flight: every kernel launched so far has run."""
    if self._inflight is None: return
    with self._lock: self._join()

  def run(self, fn: int, args: Any, outer: int, n: int, slices: int = 0, keep: Any = None) -> bool:
    """Run slice function `fn(args, start, end)` over [0, outer) on n threads (this one included), in `slices` slices
    (default n) that the threads claim in turn, after the job in flight. With `keep` (what must stay alive while the job
    runs: its memory) the job is only queued for the workers: this thread returns and claims what is left at the next
    `wait` or launch."""
    if not self.available: return False
    with self._lock:  # another thread's job, or its launch in progress, goes first: launches run in order
      self._join()
      fns = self._functions()
      if self._workers < n - 1: self._workers = fns["start"](min(n - 1, MAX_WORKERS))
      if self._workers < n - 1: n = self._workers + 1  # the system refused more threads: use those it gave
      if n <= 1: return False
      if keep is None: fns["run"](fn, args, outer, max(slices, n))
      else:
        fns["submit"](fn, args, outer, max(slices, n))
        self._inflight = (max(slices, n), keep, False)
      return True

  def attach(self, fn: int, ptrs: list[int], outer: int, keep: Any) -> bool:
    """Queue slice function `fn` over [0, outer) with buffer addresses `ptrs` (a kernel too small to split) to run on one
    thread right after the job in flight, by whichever thread finishes its last slice; the caller goes on. False when
    there is no job to attach to: none in flight, its last slice done already, or another kernel attached (then the caller
    waits and runs it itself)."""
    if self._inflight is None: return False
    with self._lock:
      if self._inflight is None or self._inflight[2]: return False
      args = (ctypes.c_void_p * len(ptrs))(*ptrs)
      tail = _Tail(fn, ctypes.addressof(args), outer)
      if not self._fns["attach"](ctypes.addressof(tail)): return False  # type: ignore[index]  # a job is in flight
      n, held, _ = self._inflight
      self._inflight = (n + 1, (held, keep, args, tail), True)
      return True

  def run_list(self, records: Any, count: int, threads: int, keep: Any = None) -> int:
    """Run `count` launch records (pg_run_list's layout) in order after the job in flight, those with more than one slice
    on up to `threads` threads; return the OR of their error words. Unavailable pool: every record runs on this thread.
    With `keep` (what must stay alive while the last record runs) the last record, which the caller made sure has several
    slices and no error word, is queued like `run`'s jobs, and the OR covers the others."""
    fns = self._functions()
    if not self.available: return fns["run_list"](records, count, 1)
    with self._lock:
      self._join()
      if threads > 1 and self._workers < threads - 1: self._workers = fns["start"](min(threads - 1, MAX_WORKERS))
      single = int(threads <= 1 or self._workers < threads - 1)  # too few workers: one thread
      if keep is None or single: return fns["run_list"](records, count, single)
      failed = fns["run_list"](records, count - 1, 0) if count > 1 else 0
      last = records[count - 1]
      fns["submit"](last.fn, last.args, last.outer, last.n)
      self._inflight = (last.n, keep, False)
      return failed

  def stop(self) -> None:
    """Stop and join the workers for good (at exit: they must not run in code that finalization frees). Kernels
    launched later (from atexit handlers that run after this one) run on one thread."""
    if self._fns is None or not self._lock.acquire(timeout=5): return
    try:
      self._join()
      if self._workers: self._fns["stop"]()
      self._workers = 0
      self.available = False
    finally:
      self._lock.release()

  def _after_fork(self) -> None:
    self._lock = threading.Lock()
    self._inflight = None  # joined before the fork
    self._workers = 0
    if self._fns is not None: self._fns["reset"]()
