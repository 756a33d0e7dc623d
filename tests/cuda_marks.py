"""What the CUDA tests share: the CUDA runtime module (its NVRTC compiles CUDA C without a GPU) and the skip marks for
tests that need NVRTC or a GPU."""
import pytest
from conftest import CUDA_ERROR

cuda_rt = pytest.importorskip("picograd.runtime.cuda")
NVRTC_ERROR = cuda_rt.nvrtc_unavailable_reason()
needs_nvrtc = pytest.mark.skipif(bool(NVRTC_ERROR), reason=f"NVRTC unavailable: {NVRTC_ERROR}")
needs_gpu = pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA GPU: {CUDA_ERROR}")
