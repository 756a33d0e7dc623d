"""Convolution, pooling, interpolation, unfolding and the pad modes against PyTorch: values and gradients, kernel counts, bad arguments.

Each case is one function of a functional namespace `F`, run once with picograd.nn.functional and
once with torch.nn.functional, so the two calls cannot drift apart.
"""
import numpy as np
import pytest
import picograd
import picograd.nn.functional as PF
from picograd import Tensor, nn
from compare import rand
from gradcheck import assert_close_to_torch, assert_matches_finite_differences

torch = pytest.importorskip("torch")
TF = torch.nn.functional


# name: (F -> function of the inputs, input shapes); every input gets a gradient
CASES = {
  "conv2d groups stride padding bias": (lambda F: lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), groups=2),
                                        [(2, 4, 5, 6), (6, 2, 3, 2), (6,)]),
  "conv2d dilation same": (lambda F: lambda x, w: F.conv2d(x, w, padding="same", dilation=2), [(1, 3, 6, 5), (2, 3, 3, 2)]),
  "conv2d size-1 dims valid": (lambda F: lambda x, w: F.conv2d(x, w, padding="valid"), [(1, 1, 1, 4), (3, 1, 1, 2)]),
  "conv2d depthwise stride 3": (lambda F: lambda x, w: F.conv2d(x, w, stride=3, padding=2, groups=3), [(1, 3, 7, 7), (3, 1, 3, 3)]),
  "conv1d stride padding dilation": (lambda F: lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2, dilation=2), [(2, 3, 9), (4, 3, 3), (4,)]),
  "conv2d empty batch": (lambda F: lambda x, w: F.conv2d(x, w, padding=1), [(0, 2, 3, 3), (3, 2, 3, 3)]),
  "conv1d wide kernel": (lambda F: lambda x, w: F.conv1d(x, w, stride=2, padding=1), [(1, 2, 12), (2, 2, 5)]),  # a view of windows
  "conv1d unbatched": (lambda F: lambda x, w: F.conv1d(x, w), [(2, 5), (3, 2, 2)]),
  "conv3d": (lambda F: lambda x, w: F.conv3d(x, w, padding=1, stride=(1, 2, 1)), [(1, 2, 3, 4, 3), (2, 2, 2, 3, 1)]),
  "conv_transpose2d": (lambda F: lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2),
                       [(1, 4, 3, 4), (4, 3, 3, 2), (6,)]),
  "conv_transpose2d dilation": (lambda F: lambda x, w: F.conv_transpose2d(x, w, stride=(2, 3), padding=(2, 1), dilation=2),
                                [(1, 2, 3, 3), (2, 2, 3, 2)]),
  "conv_transpose1d": (lambda F: lambda x, w: F.conv_transpose1d(x, w, stride=3, padding=1, output_padding=2), [(2, 3, 5), (3, 2, 3)]),
  "max_pool2d ceil padding": (lambda F: lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), [(2, 3, 7, 6)]),
  "max_pool2d dilation": (lambda F: lambda x: F.max_pool2d(x, (2, 3), stride=(1, 2), dilation=2), [(1, 2, 6, 7)]),
  "max_pool1d": (lambda F: lambda x: F.max_pool1d(x, 2), [(2, 3, 5)]),
  "max_pool1d empty batch": (lambda F: lambda x: F.max_pool1d(x, 2), [(0, 3, 5)]),
  "avg_pool2d ceil no pad count": (lambda F: lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                                   [(1, 2, 6, 7)]),
  "avg_pool2d divisor_override": (lambda F: lambda x: F.avg_pool2d(x, 2, divisor_override=3), [(1, 2, 4, 5)]),
  "avg_pool1d": (lambda F: lambda x: F.avg_pool1d(x, 3, stride=1, padding=1), [(2, 2, 5)]),
  "interpolate nearest": (lambda F: lambda x: F.interpolate(x, size=(5, 2)), [(1, 2, 3, 4)]),
  "interpolate bilinear": (lambda F: lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), [(1, 2, 3, 4)]),
  "interpolate bilinear align_corners": (lambda F: lambda x: F.interpolate(x, size=(4, 7), mode="bilinear", align_corners=True), [(2, 1, 3, 4)]),
  "interpolate linear": (lambda F: lambda x: F.interpolate(x, scale_factor=0.5, mode="linear"), [(1, 2, 7)]),
  "unfold (im2col)": (lambda F: lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=2), [(1, 2, 5, 6)]),
  "pad reflect": (lambda F: lambda x: F.pad(x, (2, 1, 1, 3), mode="reflect"), [(1, 2, 4, 5)]),
  "pad replicate": (lambda F: lambda x: F.pad(x, (2, 0, 1, 3), mode="replicate"), [(1, 2, 3, 4)]),
  "pad circular": (lambda F: lambda x: F.pad(x, (1, 2, 3, 0), mode="circular"), [(1, 2, 3, 4)]),
}


@pytest.mark.parametrize("name", CASES)
def test_against_torch(name, device):
  make, shapes = CASES[name]
  arrays = [rand(s, seed=i) for i, s in enumerate(shapes)]
  assert_close_to_torch(make(PF), arrays, make(TF), device=device)


def test_tensor_unfold(device):
  assert_close_to_torch(lambda x: x.unfold(1, 3, 2), [rand((2, 7, 3))], device=device)
  assert_close_to_torch(lambda x: x.unfold(-1, 1, 1), [rand((2, 1))], device=device)
  assert Tensor(rand((5,)), device=device).unfold(0, 0, 2).shape == (3, 0)


def test_conv2d_float64_matches_finite_differences():
  assert_matches_finite_differences(lambda x, w: x.conv2d(w, stride=(1, 2), padding=1, dilation=(2, 1)),
                                    [rand((1, 2, 4, 5)), rand((3, 2, 2, 3), seed=1)])


def test_max_pool_indices(device):
  x = rand((2, 3, 7, 6))
  for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=(2, 3), dilation=2)):
    out, idx = PF.max_pool2d(Tensor(x, device=device), return_indices=True, **kw)
    want, want_idx = TF.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    np.testing.assert_array_equal(out.numpy(), want.numpy())
    assert idx.numpy().dtype == np.int64
    np.testing.assert_array_equal(idx.numpy(), want_idx.numpy())


def test_max_unpool2d(device):
  idx = TF.max_pool2d(torch.from_numpy(rand((1, 2, 5, 4), seed=9)), 2, return_indices=True)[1]
  assert_close_to_torch(lambda x, i: PF.max_unpool2d(x, i, 2, output_size=(5, 4)), [rand((1, 2, 2, 2))],
                        lambda x, i: TF.max_unpool2d(x, i, 2, output_size=(5, 4)), device=device,
                        extra=[Tensor(idx.numpy(), device=device)], torch_extra=[idx])


def test_max_pool_nan_and_inf(device):
  x = rand((1, 1, 4, 4))
  x[0, 0, 0, 1], x[0, 0, 3, 3] = np.inf, -np.inf
  np.testing.assert_array_equal(PF.max_pool2d(Tensor(x, device=device), 2).numpy(), TF.max_pool2d(torch.from_numpy(x), 2).numpy())


# ---------------------------------------------------------------- fusion: no im2col buffer
def test_conv2d_forward_is_one_kernel():
  x, w, b = Tensor(rand((2, 8, 10, 10))).realize(), Tensor(rand((4, 8, 3, 3))).realize(), Tensor(rand((4,))).realize()
  assert len(picograd.schedule(x.conv2d(w, padding=1))) == 1
  assert len(picograd.schedule(x.conv2d(w, b, stride=2, padding=1).relu())) == 1  # bias and activation fuse into it
  assert len(picograd.schedule(x.relu().max_pool2d(2))) == 1


def test_conv2d_backward_kernels():
  x, w, g = (Tensor(rand(s, seed=i), requires_grad=True).realize() for i, s in enumerate([(2, 8, 10, 10), (4, 8, 3, 3), (2, 4, 10, 10)]))
  gx, gw = (x.conv2d(w, padding=1) * g).sum().gradient(x, w)
  assert len(picograd.schedule(gx, gw)) == 2  # one kernel for each gradient, no stored windows


def test_conv2d_cpu_tile_reuses_input_vectors_across_output_channels():
  # 8 contiguous output columns in vectors, times 4 output channels that share each loaded input vector
  from picograd.engine.compile import _kernels
  from picograd.codegen.lower import lower_kernel
  from picograd.codegen.opt import plan_upcasts
  x, w = Tensor(rand((1, 8, 56, 56))).realize(), Tensor(rand((16, 8, 3, 3))).realize()
  (step,) = picograd.schedule(x.conv2d(w, padding=1))
  ast = next(key[0] for key, k in _kernels.items() if k is step.kernel)
  assert sorted((r.arg[1], f) for r, f in plan_upcasts(lower_kernel(ast))) == [(16, 4), (56, 8)]


def test_conv2d_forward_and_backward_compile_for_cuda():
  # the CUDA renderer gets the same kernels (NVRTC needs no GPU); the lead's GPU run checks the values
  cuda_rt = pytest.importorskip("picograd.runtime.cuda")
  if (reason := cuda_rt.nvrtc_unavailable_reason()): pytest.skip(f"NVRTC unavailable: {reason}")
  from picograd.codegen.cuda import render_for_arch
  from picograd.engine.realize import _normalize
  from picograd.engine.schedule import create_template
  x, w, g = (Tensor(rand(s, seed=i), requires_grad=True) for i, s in enumerate([(1, 4, 6, 6), (2, 4, 3, 3), (1, 2, 3, 3)]))
  out = x.conv2d(w, stride=2, padding=1)
  outs = [out, *out.gradient(x, w, gradient=g)]
  roots, _ = _normalize([t.uop for t in outs])
  for k in create_template(roots, [t.device for t in outs]).kernels:
    if k.ast is None: continue
    name, src, _, _ = render_for_arch(k.ast, "sm_90")
    assert cuda_rt.unpack_lib(cuda_rt.compile_cuda_source(src, "sm_90", name)).image


# ---------------------------------------------------------------- layers
def test_layers_match_functional():
  Tensor.manual_seed(0)
  conv, convt = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.ConvTranspose2d(6, 4, 2, stride=2)
  x = Tensor(rand((1, 4, 6, 6)))
  y = conv(x)
  want = TF.conv2d(torch.from_numpy(x.numpy()), torch.from_numpy(conv.weight.numpy()), torch.from_numpy(conv.bias.numpy()), 2, 1, 1, 2)
  np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
  assert convt.weight.shape == (6, 4, 2, 2) and convt(y).shape == (1, 4, 6, 6)
  assert abs(conv.weight.numpy()).max() <= 1 / np.sqrt(2 * 9)  # PyTorch's bound 1/sqrt(fan_in)
  assert nn.MaxPool2d(2)(x).shape == nn.AvgPool2d(3, 1, 1)(x).shape[:2] + (3, 3)
  assert nn.Upsample(scale_factor=2, mode="bilinear")(x).shape == (1, 4, 12, 12)
  assert nn.Conv1d(4, 2, 3)(Tensor(rand((1, 4, 5)))).shape == (1, 2, 3)


# ---------------------------------------------------------------- bad arguments: PyTorch's exception types
BAD = {
  "channel mismatch": lambda F, T: F.conv2d(T(rand((1, 3, 5, 5))), T(rand((2, 4, 3, 3)))),
  "groups do not divide": lambda F, T: F.conv2d(T(rand((1, 4, 5, 5))), T(rand((3, 2, 3, 3))), groups=2),
  "weight dims": lambda F, T: F.conv2d(T(rand((1, 3, 5, 5))), T(rand((2, 3, 3)))),
  "input dims": lambda F, T: F.conv2d(T(rand((5, 5))), T(rand((2, 1, 3, 3)))),
  "kernel larger than input": lambda F, T: F.conv2d(T(rand((1, 1, 2, 2))), T(rand((1, 1, 3, 3)))),
  "same with stride": lambda F, T: F.conv2d(T(rand((1, 1, 5, 5))), T(rand((1, 1, 3, 3))), stride=2, padding="same"),
  "unknown padding string": lambda F, T: F.conv1d(T(rand((1, 1, 5))), T(rand((1, 1, 3))), padding="full"),
  "bias size": lambda F, T: F.conv1d(T(rand((1, 1, 5))), T(rand((2, 1, 3))), T(rand((3,)))),
  "transpose channel mismatch": lambda F, T: F.conv_transpose2d(T(rand((1, 3, 4, 4))), T(rand((2, 3, 3, 3)))),
  "output_padding too large": lambda F, T: F.conv_transpose1d(T(rand((1, 1, 4))), T(rand((1, 1, 3))), stride=2, output_padding=2),
  "pool padding over half the kernel": lambda F, T: F.max_pool2d(T(rand((1, 1, 5, 5))), 2, padding=2),
  "pool larger than input": lambda F, T: F.avg_pool1d(T(rand((1, 1, 2))), 3),
  "reflect pad too large": lambda F, T: F.pad(T(rand((1, 1, 3))), (3, 0), mode="reflect"),
  "interpolate both size and scale": lambda F, T: F.interpolate(T(rand((1, 1, 3))), size=4, scale_factor=2),
  "bilinear on 3d input": lambda F, T: F.interpolate(T(rand((1, 1, 3))), size=4, mode="bilinear"),
  "interpolate to size 0": lambda F, T: F.interpolate(T(rand((1, 1, 3))), size=0),
  "nearest with align_corners": lambda F, T: F.interpolate(T(rand((1, 1, 3))), size=4, align_corners=True),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_arguments_raise_like_torch(name):
  with pytest.raises(Exception) as want:
    BAD[name](TF, torch.from_numpy)
  with pytest.raises(type(want.value)):
    BAD[name](PF, Tensor)
