"""Conversions that used to crash or disagree between devices: double -> half, half and bfloat16 round trips, float -> int.

double -> half is rendered inline on the CPU (LLVM's own lowering calls __truncdfhf2, which MCJIT
cannot resolve) and must round once, to nearest even, like numpy. float -> integer follows one
rule on every device: truncate toward zero, saturate to the integer's range, NaN gives 0 (int8/16 and
uint8/16/32 wrap from the saturated int64, as PyTorch's casts do).
"""
import numpy as np
import pytest
from picograd import Tensor, dtypes
from compare import assert_tensor

# doubles at and around half's rounding boundaries: ties, one double ulp past a tie (where rounding through
# float first would land on the tie and round the wrong way), overflow, subnormals, NaN and infinities
HALF_ULP_1 = 2.0 ** -11  # half of half's ulp at 1.0
DOUBLES = np.array([0.0, -0.0, 1.0, 1 + HALF_ULP_1, 1 + 3 * HALF_ULP_1, 1 + HALF_ULP_1 + 2.0 ** -40, 1 + HALF_ULP_1 - 2.0 ** -40,
                    -(1 + HALF_ULP_1 + 2.0 ** -40), 65504.0, 65519.99, 65520.0, 1e10, -1e300, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 + 2.0 ** -60,
                    3 * 2.0 ** -26, 1e-30, np.nan, np.inf, -np.inf, 0.1, -2.5, 1.0 / 3], np.float64)


def test_double_to_half_rounds_once(device):
  with np.errstate(over="ignore"): expected = DOUBLES.astype(np.float16)
  assert_tensor(Tensor(DOUBLES, device=device).half(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("src", [dtypes.float16, dtypes.bfloat16])
def test_half_round_trips(device, src):
  """Every 16-bit pattern of half / bfloat16 survives widening to float32 and float64 and narrowing back."""
  bits = np.arange(0, 2 ** 16, 64, dtype=np.uint16)
  if src == dtypes.float16:
    values = bits.view(np.float16)
    x = Tensor(values, device=device)
  else:
    values = (bits.astype(np.uint32) << 16).view(np.float32)
    x = Tensor(values, device=device).cast(dtypes.bfloat16)
  for wide in (dtypes.float32, dtypes.float64):
    back = x.cast(wide).cast(src).cast(dtypes.float64).numpy()
    np.testing.assert_array_equal(back, values.astype(np.float64))


FLOATS = [np.nan, np.inf, -np.inf, 1e10, -1e10, 2.0 ** 63, -2.0 ** 63, 2.0 ** 31, 300.0, 255.9, -1.0, -0.5, 2.7, -2.7, 0.0]


def _saturated(values: list[float], dt: np.dtype) -> np.ndarray:
  if dt.itemsize < 4 or dt == np.uint32: return _saturated(values, np.dtype(np.int64)).astype(dt)  # these wrap, as in PyTorch
  info = np.iinfo(dt)
  return np.array([0 if np.isnan(v) else max(info.min, min(info.max, int(np.trunc(v)) if np.isfinite(v) else (info.max if v > 0 else info.min)))
                   for v in values], dt)


@pytest.mark.parametrize("dst", [dtypes.uint8, dtypes.int32, dtypes.uint32, dtypes.int64])
@pytest.mark.parametrize("src", [dtypes.float16, dtypes.float32, dtypes.float64])
def test_float_to_int_saturates(device, src, dst):
  with np.errstate(over="ignore"): values = np.array(FLOATS, np.float64).astype(src.np)  # 1e10 is inf in half
  assert_tensor(Tensor(values, device=device).cast(dst), _saturated(values.astype(np.float64).tolist(), dst.np))


def test_cuda_casts_compile():
  """The CUDA renderer's double -> half and saturating float -> int compile with NVRTC (no GPU needed)."""
  cuda_rt = pytest.importorskip("picograd.runtime.cuda")
  if reason := cuda_rt.nvrtc_unavailable_reason(): pytest.skip(f"NVRTC unavailable: {reason}")
  from picograd.codegen.cuda import render_for_arch
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  x = Tensor(DOUBLES)
  out = (x.half().float() + x.cast(dtypes.int64).cast(dtypes.float32) + x.cast(dtypes.uint8).cast(dtypes.float32)
         + x.float().cast(dtypes.int32).float())
  roots, _ = _normalize([out.uop])
  for k in create_template(roots, [out.device]).kernels:
    if k.ast is None: continue
    name, src, _, _ = render_for_arch(k.ast, "sm_90")
    assert "__double2half" in src and "pg_float_to_int" in src
    cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", name))


def test_half_constants_beyond_range_are_infinite(device):
  """A float16 constant too large for half (struct.pack refuses it) is an infinity, as a cast would make it."""
  x = Tensor(np.array([1.0, -2.0], np.float16), device=device)
  assert_tensor(x * 1e5, np.array([np.inf, -np.inf], np.float16))
  assert_tensor(x + 65519.0, np.array([65504.0, 65504.0], np.float16))  # rounds down to the largest half
  assert_tensor(Tensor.full((2,), -70000.0, dtype=dtypes.float16, device=device), np.full(2, -np.inf, np.float16))


def test_bfloat16_arithmetic_with_constants(device):
  """bfloat16 kernels with constants (the PYTHON renderer once spelled their dtype as a bare numpy type)."""
  x = Tensor(np.array([1.5, -2.0, 0.25], np.float32), device=device).cast(dtypes.bfloat16)
  assert_tensor(((x * 3 + 1).exp2()).float(), np.exp2(np.array([1.5, -2.0, 0.25], np.float32) * 3 + 1), rtol=1e-2)
