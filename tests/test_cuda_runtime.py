"""The CUDA runtime: NVRTC compile checks (no GPU needed) and, where a GPU is visible, memory and launches."""
import numpy as np
import pytest

cuda = pytest.importorskip("picograd.runtime.cuda")
from picograd.runtime.device import DeviceError, LaunchDims  # noqa: E402

NVRTC_ERROR = cuda.nvrtc_unavailable_reason()
needs_nvrtc = pytest.mark.skipif(bool(NVRTC_ERROR), reason=f"NVRTC unavailable: {NVRTC_ERROR}")

ADD = """extern "C" __global__ void add(float* out, const float* a, const float* b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = a[i] + b[i];
}"""

HALF_FMA = """#include <cuda_fp16.h>
extern "C" __global__ void half_fma(half* out, const half* a, const half* b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __hfma(a[i], b[i], __float2half(1.0f)) + a[i] * b[i];
}"""

# uses dynamic shared memory beyond the 48 KiB a kernel gets without opting in
SHARED_REVERSE = """extern "C" __global__ void shared_reverse(float* out, const float* a) {
  extern __shared__ float tile[];
  int n = blockDim.x * 16;
  for (int j = threadIdx.x; j < n; j += blockDim.x) tile[j] = a[j];
  __syncthreads();
  for (int j = threadIdx.x; j < n; j += blockDim.x) out[j] = tile[n - 1 - j];
}"""


# ------------------------------------------------------------------ compiling: no GPU needed

@needs_nvrtc
def test_compile_add_to_cubin():
  lib = cuda.unpack_lib(cuda.compile_cuda_source(ADD, "sm_90", "add"))
  assert lib.kind == "cubin" and lib.image.startswith(b"\x7fELF") and lib.source == ADD


@needs_nvrtc
def test_compile_half_with_header():
  if not cuda.cuda_include_dirs(): pytest.skip("no CUDA headers found for cuda_fp16.h")
  lib = cuda.unpack_lib(cuda.compile_cuda_source(HALF_FMA, "sm_90", "half_fma"))
  assert lib.kind == "cubin"


@needs_nvrtc
def test_unsupported_sm_falls_back_to_ptx():
  newest = max(cuda.nvrtc_supported_archs())
  lib = cuda.unpack_lib(cuda.compile_cuda_source(ADD, f"sm_{newest + 1}", "add"))
  assert lib.kind == "ptx" and f".target sm_{newest}" in lib.image.decode()


@needs_nvrtc
def test_compile_error_has_numbered_source_and_log():
  bad = ADD.replace("out[i] =", "missing_name[i] =")
  with pytest.raises(cuda.CompileError) as info:
    cuda.compile_cuda_source(bad, "sm_90", "add")
  msg = str(info.value)
  assert "   3 |   missing_name[i] = a[i] + b[i];" in msg  # numbered source
  assert 'identifier "missing_name" is undefined' in msg  # NVRTC log


@needs_nvrtc
def test_compiler_cache_key_and_disassemble():
  compiler = cuda.NVRTCCompiler("sm_90")
  assert "sm_90" in compiler.cache_key and "--std=c++17" in compiler.cache_key
  assert cuda.NVRTCCompiler("sm_80").cache_key != compiler.cache_key
  ptx = compiler.disassemble(compiler.compile(ADD, "add"))
  assert ".entry add(" in ptx and "add.f32" in ptx


def test_lib_roundtrip():
  lib = cuda.pack_lib("ptx", "src", b"image\0")
  assert cuda.unpack_lib(lib) == cuda.CUDALib("ptx", "src", b"image\0")
  with pytest.raises(ValueError): cuda.unpack_lib(b"\0" * 32)


def test_bad_device_names():
  # without a GPU or driver these still raise DeviceError, for that reason
  with pytest.raises(DeviceError): cuda.open_device("CUDA:x")
  with pytest.raises(DeviceError): cuda.open_device("CUDA:999")


# ------------------------------------------------------------------ on a GPU

@pytest.fixture(scope="module")
def dev():
  try:
    return cuda.open_device("CUDA")
  except DeviceError as e:
    pytest.skip(f"no CUDA device: {e}")


def _upload(dev, arr: np.ndarray) -> int:
  handle = dev.allocator.alloc(arr.nbytes)
  dev.allocator.copyin(handle, memoryview(arr).cast("B"))
  return handle


def _download(dev, handle: int, like: np.ndarray) -> np.ndarray:
  out = np.empty_like(like)
  dev.allocator.copyout(memoryview(out).cast("B"), handle)
  return out


def test_device_info(dev):
  assert dev.extra["arch"].startswith("sm_") and dev.extra["sm_count"] > 0 and dev.extra["max_shared"] >= 48 * 1024
  assert isinstance(dev.extra["name"], str) and dev.extra["name"]


def test_index_out_of_range(dev):
  with pytest.raises(DeviceError, match="CUDA:999 requested but"): cuda.open_device("CUDA:999")


def test_copy_roundtrip(dev):
  x = np.arange(1000, dtype=np.float32)
  h = _upload(dev, x)
  np.testing.assert_array_equal(_download(dev, h, x), x)
  h2 = dev.allocator.alloc(x.nbytes)
  dev.allocator.copy_device_to_device(h2, h, x.nbytes)
  np.testing.assert_array_equal(_download(dev, h2, x), x)
  dev.allocator.free(h, x.nbytes)
  dev.allocator.free(h2, x.nbytes)


def test_launch_add(dev):
  n, block = 4096, 256
  a, b = np.random.rand(n).astype(np.float32), np.random.rand(n).astype(np.float32)
  prog = dev.program(dev, "add", dev.compiler.compile(ADD, "add"), {"n_params": 3})
  out = dev.allocator.alloc(a.nbytes)
  assert prog([out, _upload(dev, a), _upload(dev, b)], LaunchDims((n // block,), (block,))) is None
  np.testing.assert_array_equal(_download(dev, out, a), a + b)


def test_launch_half(dev):
  if not cuda.cuda_include_dirs(): pytest.skip("no CUDA headers found for cuda_fp16.h")
  a, b = np.random.rand(128).astype(np.float16), np.random.rand(128).astype(np.float16)
  prog = dev.program(dev, "half_fma", dev.compiler.compile(HALF_FMA, "half_fma"), {"n_params": 3})
  out = dev.allocator.alloc(a.nbytes)
  prog([out, _upload(dev, a), _upload(dev, b)], LaunchDims((1,), (128,)))
  expect = (a.astype(np.float32) * b + 1 + a.astype(np.float32) * b)
  np.testing.assert_allclose(_download(dev, out, a).astype(np.float32), expect, rtol=1e-2)


def test_large_dynamic_shared_memory(dev):
  block = 1024
  n = block * 16  # 64 KiB of floats: above the 48 KiB default
  a = np.random.rand(n).astype(np.float32)
  prog = dev.program(dev, "shared_reverse", dev.compiler.compile(SHARED_REVERSE, "shared_reverse"), {"n_params": 2})
  out = dev.allocator.alloc(a.nbytes)
  prog([out, _upload(dev, a)], LaunchDims((1,), (block,), shared_bytes=a.nbytes))
  np.testing.assert_array_equal(_download(dev, out, a), a[::-1])


def test_timing(dev):
  prog = dev.program(dev, "add", dev.compiler.compile(ADD, "add"), {"n_params": 3})
  bufs = [dev.allocator.alloc(1024 * 4) for _ in range(3)]
  t = prog(bufs, LaunchDims((4,), (256,)), wait=True)
  assert isinstance(t, float) and 0 < t < 1
  dev.synchronize()


def test_allocator_cache_reuse(dev):
  h = dev.allocator.alloc(12345)
  dev.allocator.free(h, 12345)
  assert dev.allocator.alloc(12345) == h


def test_out_of_memory(dev):
  with pytest.raises(MemoryError, match=str(10**15)):
    dev.allocator.alloc(10**15)


def test_launch_from_another_thread(dev):
  # the context is per thread: a fresh thread must get it made current by the runtime
  import threading
  a = np.arange(256, dtype=np.float32)
  prog = dev.program(dev, "add", dev.compiler.compile(ADD, "add"), {"n_params": 3})
  result: list[np.ndarray] = []
  def work():
    out, ha = dev.allocator.alloc(a.nbytes), _upload(dev, a)
    prog([out, ha, ha], LaunchDims((1,), (256,)))
    result.append(_download(dev, out, a))
  t = threading.Thread(target=work)
  t.start()
  t.join()
  np.testing.assert_array_equal(result[0], 2 * a)


def test_buffer_through_registry(dev):
  from picograd.dtype import dtypes
  from picograd.runtime.device import Buffer
  x = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(Buffer("CUDA", 10, dtypes.float32).copyin(x).numpy(), x)
