"""Shared test setup: the devices every op is checked on.

CPU and PYTHON (the numpy reference interpreter) always run. CUDA runs only when
`get_device("CUDA")` opens a GPU; otherwise its cases are reported as skipped, with the reason.
"""
import pytest
from picograd.runtime.device import get_device


def _cuda_error() -> str:
  try:
    get_device("CUDA")
    return ""
  except Exception as e:  # DeviceError (no driver, no GPU) or ImportError (no cuda-python)
    return f"{type(e).__name__}: {e}"


CUDA_ERROR = _cuda_error()
DEVICES = ["CPU", "PYTHON"] + (["CUDA"] if not CUDA_ERROR else [])
DEVICE_PARAMS = ["CPU", "PYTHON", pytest.param("CUDA", marks=pytest.mark.skipif(bool(CUDA_ERROR), reason=f"no CUDA: {CUDA_ERROR}"))]


@pytest.fixture(params=DEVICE_PARAMS)
def device(request) -> str:
  """Each available device in turn (CUDA is skipped cleanly when it cannot open)."""
  return request.param


def need_data(filename: str) -> None:
  """Skip the test when the data file is neither in ../shared/data nor downloadable (downloads off)."""
  from picograd.nn import datasets
  try: datasets.data_path(filename, download=False)
  except FileNotFoundError: pytest.skip(f"{filename} is not available offline")


@pytest.fixture(autouse=True)
def _restore_training_flag():
  """Examples switch Tensor.training on; each test starts and ends with it off."""
  yield
  from picograd import Tensor
  Tensor.training = False
