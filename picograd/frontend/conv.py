"""Convolution, pooling, interpolation and unfolding (conv1d/2d/3d, conv_transpose, max/avg pool, interpolate) (frontend layer).

Everything here is a view plus a reduction. A convolution with a small kernel (at most 3x3x3) is a
sum over kernel offsets of one product of a shifted (and strided) view of the padded input with that
offset's weights, each summed over the input channels: all of it fuses into one kernel without an
im2col buffer, and the index arithmetic stays affine (no div/mod) forward and backward. Larger kernels
and pooling use `_windows`, which turns the last n dims of a tensor into (output positions...,
kernel offsets...) with movement ops only (pad, reshape, expand, shrink, permute), reduced over the
offsets. Gradients come from the movement ops' and the reductions' rules.

How `_windows` makes the sliding windows of one dim of size i (kernel k, stride s, dilation d) from
movement ops: tile x r times (a reshape and an expand) and read the tiles as rows of length
L = f*i + d. Element m of row kk is then x[(kk*L + m) mod i] = x[m + kk*d] while m + kk*d < i, i.e.
row kk is x shifted left by kk*d. Taking every s-th column m = o*s (a reshape to (o, s) and a shrink
to the first column) gives window[o, kk] = x[o*s + kk*d]. f is the smallest integer with L >= o*s.
The lowering turns it back into the index (kk*d + o*s), since the simplifier folds the mod away.
"""
from __future__ import annotations
import itertools, math
from typing import Any, Sequence
import numpy as np
from picograd.dtype import dtypes, promote
from picograd.helpers import prod
from picograd.frontend.autocast import autocast, autocast_dtype, lower_precision


# Kernels with at most this many offsets (3x3x3), at most 4 along each dim, are convolved as a sum of one product per
# offset over shifted views of the input: no div/mod in the index arithmetic, forward or backward. The weight's gradient
# is then a concatenation of one reduction per offset, which the CPU codegen splits into gate-free pieces when each
# kernel dim has at most 4 offsets (codegen/opt.py MAX_REGIONS). Larger kernels reduce over a view of windows.
MAX_SHIFTED_TERMS, MAX_SHIFTED_SIDE = 27, 4


def _ntuple(v: int | Sequence[int], n: int, op: str, name: str) -> tuple[int, ...]:
  """An int or a sequence of n ints, as a tuple of n ints."""
  t = (v,) * n if isinstance(v, (int, np.integer)) else tuple(v)
  if len(t) == 1 and n > 1: t = t * n
  if len(t) != n or not all(isinstance(e, (int, np.integer)) for e in t):
    raise ValueError(f"{op}: {name} must be an int or {n} ints, got {v!r}")
  return tuple(int(e) for e in t)


def _out_size(i: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
  """Number of windows of kernel k (dilation d, stride s) over i elements padded by lo and hi."""
  return (i + lo + hi - d * (k - 1) - 1) // s + 1


class ConvMixin:
  """Mixed into `Tensor` (which keeps __slots__, so a mixin adds none)."""
  __slots__ = ()

  # ---------------------------------------------------------------- sliding windows
  def _windows(self: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> Any:
    """(..., i_1..i_n) -> (..., o_1..o_n, k_1..k_n): window[o, kk] = x[o*s + kk*d] along each of the last n dims (see the module docstring)."""
    n = len(kernel)
    lead, sizes = self.shape[:-n], self.shape[-n:]
    outs = [_out_size(i, k, s, d, 0, 0) for i, k, s, d in zip(sizes, kernel, stride, dilation)]
    if any(o <= 0 for o in outs):
      raise RuntimeError(f"sliding windows: kernel {tuple(kernel)} with dilation {tuple(dilation)} does not fit the input size {sizes}")
    nl = len(lead)
    if all(k <= s for k, s in zip(kernel, stride)) and all(d == 1 for d in dilation):
      # windows that do not overlap: cut each dim into o blocks of s and keep the first k of each
      x = self.pad(tuple((0, 0) for _ in lead) + tuple((0, max(o * s - i, 0)) for o, s, i in zip(outs, stride, sizes)))
      x = x.shrink(tuple((0, e) for e in lead) + tuple((0, o * s) for o, s in zip(outs, stride)))
      x = x.reshape(*lead, *[v for o, s in zip(outs, stride) for v in (o, s)])
      x = x.shrink(tuple((0, e) for e in lead) + tuple(v for o, k in zip(outs, kernel) for v in ((0, o), (0, k))))
      return x.permute(*range(nl), *[nl + 2 * j for j in range(n)], *[nl + 2 * j + 1 for j in range(n)])
    rows = [max(1, -(-(o * s - d) // i)) * i + d for i, o, s, d in zip(sizes, outs, stride, dilation)]  # L = f*i + d >= o*s
    reps = [-(-(k * L) // i) for k, L, i in zip(kernel, rows, sizes)]
    x = self.reshape(*lead, *[v for i in sizes for v in (1, i)])
    x = x.expand(*lead, *[v for r, i in zip(reps, sizes) for v in (r, i)])
    x = x.reshape(*lead, *[r * i for r, i in zip(reps, sizes)])
    x = x.shrink(tuple((0, e) for e in lead) + tuple((0, k * L) for k, L in zip(kernel, rows)))
    x = x.reshape(*lead, *[v for k, L in zip(kernel, rows) for v in (k, L)])
    x = x.shrink(tuple((0, e) for e in lead) + tuple(v for k, o, s in zip(kernel, outs, stride) for v in ((0, k), (0, o * s))))
    x = x.reshape(*lead, *[v for k, o, s in zip(kernel, outs, stride) for v in (k, o, s)])
    x = x.shrink(tuple((0, e) for e in lead) + tuple(v for k, o in zip(kernel, outs) for v in ((0, k), (0, o), (0, 1))))
    x = x.reshape(*lead, *[v for k, o in zip(kernel, outs) for v in (k, o)])
    return x.permute(*range(nl), *[nl + 2 * j + 1 for j in range(n)], *[nl + 2 * j for j in range(n)])

  def _strided_last(self: Any, starts: Sequence[int], counts: Sequence[int], steps: Sequence[int]) -> Any:
    """x[..., start : start + (count-1)*step + 1 : step] along each of the last len(starts) dims (a shrink, and for steps > 1 a reshape)."""
    n = len(starts)
    lead = [(0, e) for e in self.shape[:-n]]
    if all(s == 1 for s in steps): return self.shrink(lead + [(b, b + c) for b, c in zip(starts, counts)])
    # cut count*step elements (padding the end where the last block runs past it), view them as (count, step), keep column 0
    x = self._pad_last([(0, max(0, b + c * s - i)) for b, c, s, i in zip(starts, counts, steps, self.shape[-n:])])
    x = x.shrink(lead + [(b, b + c * s) for b, c, s in zip(starts, counts, steps)])
    x = x.reshape(*self.shape[:-n], *[v for c, s in zip(counts, steps) for v in (c, s)])
    x = x.shrink(lead + [v for c in counts for v in ((0, c), (0, 1))])
    return x.reshape(*self.shape[:-n], *counts)

  def _pad_last(self: Any, pads: Sequence[tuple[int, int]], value: float = 0.0) -> Any:
    """Pad the last len(pads) dims by (before, after) pairs."""
    if all(p == (0, 0) for p in pads): return self
    return self.pad(tuple((0, 0) for _ in range(self.ndim - len(pads))) + tuple(pads), value=value)

  # ---------------------------------------------------------------- convolution
  def _conv_args(self: Any, op: str, weight: Any, n: int, groups: int) -> None:
    """PyTorch's checks, with its RuntimeError: (N, C, *spatial) input, (C_out, C/groups, *kernel) weight."""
    if self.ndim not in (n + 1, n + 2):
      raise RuntimeError(f"{op}: expected a {n + 1}D (unbatched) or {n + 2}D (batched) input, got shape {self.shape}")
    if weight.ndim != n + 2: raise RuntimeError(f"{op}: expected a {n + 2}D weight, got shape {weight.shape}")
    if not isinstance(groups, int) or groups < 1: raise RuntimeError(f"{op}: groups must be a positive integer, got {groups!r}")

  def _convnd(self: Any, n: int, op: str, weight: Any, bias: Any = None, stride: int | Sequence[int] = 1,
              padding: int | str | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1) -> Any:
    self._conv_args(op, weight, n, groups)
    if (low := autocast_dtype()) is not None and promote(self.dtype, weight.dtype) == dtypes.float32:
      # under autocast: 16-bit operands accumulated in float32, a 16-bit result (as PyTorch's convolutions)
      x16, w16, b16 = lower_precision(self, weight, bias)
      with autocast(low, enabled=False):
        out = x16.float()._convnd(n, op, w16.float(), None if b16 is None else b16.float(), stride, padding, dilation, groups)
      return out.cast(low)
    if self.ndim == n + 1: return self.unsqueeze(0)._convnd(n, op, weight, bias, stride, padding, dilation, groups).squeeze(0)
    st, dl = _ntuple(stride, n, op, "stride"), _ntuple(dilation, n, op, "dilation")
    if any(v <= 0 for v in st + dl): raise RuntimeError(f"{op}: stride and dilation must be positive, got {st} and {dl}")
    bsz, cin, *sizes = self.shape
    cout, cin_g, *kernel = weight.shape
    if cin != cin_g * groups:
      raise RuntimeError(f"{op}: expected input {self.shape} to have {cin_g * groups} channels (weight {weight.shape}, groups={groups}), got {cin}")
    if cout % groups: raise RuntimeError(f"{op}: {cout} output channels (weight {weight.shape}) are not divisible by groups={groups}")
    if bias is not None and bias.shape != (cout,): raise RuntimeError(f"{op}: bias of shape {bias.shape} does not fit {cout} output channels")
    if isinstance(padding, str):
      if padding == "valid": pads = [(0, 0)] * n
      elif padding == "same":
        if any(s != 1 for s in st): raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions")
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dl)]  # the odd one goes after, as in PyTorch
      else: raise RuntimeError(f"{op}: invalid padding string {padding!r}, should be one of 'valid' or 'same'")
    else:
      pads = [(p, p) for p in _ntuple(padding, n, op, "padding")]
      if any(p < 0 for p, _ in pads): raise RuntimeError(f"{op}: negative padding {padding!r}")
    if any(_out_size(i, k, s, d, *p) <= 0 for i, k, s, d, p in zip(sizes, kernel, st, dl, pads)):
      padded = tuple(i + a + b for i, (a, b) in zip(sizes, pads))
      raise RuntimeError(f"{op}: kernel {tuple(kernel)} (dilation {dl}) is larger than the padded input {padded}")
    dt = promote(self.dtype, weight.dtype)
    x, w = self.cast(dt)._pad_last(pads), weight.cast(dt)
    outs = [_out_size(i, k, s, d, *p) for i, k, s, d, p in zip(sizes, kernel, st, dl, pads)]
    cout_g = cout // groups
    if prod(kernel) <= MAX_SHIFTED_TERMS and max(kernel) <= MAX_SHIFTED_SIDE:
      # one product summed over C/G per kernel offset, the offsets added: (N, G, 1, C/G, *o) * (1, G, C_out/G, C/G, 1..)
      x = x.reshape(bsz, groups, 1, cin_g, *x.shape[2:])
      w = w.reshape(groups, cout_g, cin_g, *kernel)
      out = None
      for offset in itertools.product(*[range(k) for k in kernel]):
        tap = x._strided_last([o * d for o, d in zip(offset, dl)], outs, st)
        term = (tap * w.shrink([None, None, None, *[(o, o + 1) for o in offset]]).reshape(1, groups, cout_g, cin_g, *([1] * n))).sum(3)
        out = term if out is None else out + term
      assert out is not None, "a kernel has at least one offset"
    else:
      x = x._windows(kernel, st, dl)  # (N, C, *o, *k)
      # (N, G, 1, *o, C/G, *k) times (1, G, C_out/G, 1.., C/G, *k), summed over (C/G, *k)
      x = x.reshape(bsz, groups, cin_g, *outs, *kernel).permute(0, 1, *range(3, 3 + n), 2, *range(3 + n, 3 + 2 * n)).unsqueeze(2)
      out = (x * w.reshape(1, groups, cout_g, *([1] * n), cin_g, *kernel)).sum(tuple(range(3 + n, 4 + 2 * n)))
    out = out.reshape(bsz, cout, *outs)
    return out + bias.cast(dt).reshape(cout, *([1] * n)) if bias is not None else out

  def conv1d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Any:
    return self._convnd(1, "conv1d", weight, bias, stride, padding, dilation, groups)
  def conv2d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Any:
    """PyTorch's conv2d (cross-correlation): input (N, C, H, W), weight (C_out, C/groups, kH, kW); padding an int, a pair, 'same' or 'valid'."""
    return self._convnd(2, "conv2d", weight, bias, stride, padding, dilation, groups)
  def conv3d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Any:
    return self._convnd(3, "conv3d", weight, bias, stride, padding, dilation, groups)

  def _conv_transposend(self: Any, n: int, op: str, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                        output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Any:
    """The gradient of a convolution with respect to its input, as a convolution: spread the input out by the stride
    (stride-1 zeros between elements), pad by d*(k-1)-p (plus output_padding after), and correlate with the
    flipped kernel whose in and out channels are swapped."""
    self._conv_args(op, weight, n, groups)
    if self.ndim == n + 1:
      return self.unsqueeze(0)._conv_transposend(n, op, weight, bias, stride, padding, output_padding, groups, dilation).squeeze(0)
    st, pd = _ntuple(stride, n, op, "stride"), _ntuple(padding, n, op, "padding")
    op_, dl = _ntuple(output_padding, n, op, "output_padding"), _ntuple(dilation, n, op, "dilation")
    if any(v <= 0 for v in st + dl) or any(p < 0 for p in pd): raise RuntimeError(f"{op}: bad stride {st}, dilation {dl} or padding {pd}")
    if any(o >= s and o >= d for o, s, d in zip(op_, st, dl)) or any(o < 0 for o in op_):
      raise RuntimeError(f"{op}: output_padding {op_} must be smaller than either stride {st} or dilation {dl}")
    bsz, cin, *sizes = self.shape
    wcin, cout_g, *kernel = weight.shape
    if cin != wcin: raise RuntimeError(f"{op}: expected input {self.shape} to have {wcin} channels (weight {weight.shape}), got {cin}")
    if cin % groups: raise RuntimeError(f"{op}: {cin} input channels are not divisible by groups={groups}")
    x = self
    if any(s > 1 for s in st):  # (..., i) -> (..., i, s) zero-padded after each element -> (..., i*s) -> the first (i-1)*s+1
      x = x.reshape(bsz, cin, *[v for i in sizes for v in (i, 1)])
      x = x.pad(((0, 0), (0, 0)) + tuple(p for s in st for p in ((0, 0), (0, s - 1))))
      x = x.reshape(bsz, cin, *[i * s for i, s in zip(sizes, st)])
      x = x.shrink(((0, bsz), (0, cin)) + tuple((0, (i - 1) * s + 1) for i, s in zip(sizes, st)))
    cin_g = cin // groups
    w = weight.reshape(groups, cin_g, cout_g, *kernel).permute(0, 2, 1, *range(3, 3 + n)).reshape(groups * cout_g, cin_g, *kernel)
    w = w.flip(tuple(range(2, 2 + n)))
    pads = [(d * (k - 1) - p, d * (k - 1) - p + o) for k, d, p, o in zip(kernel, dl, pd, op_)]
    # negative amounts crop (padding larger than d*(k-1) removes outputs)
    x = x.pad(((0, 0), (0, 0)) + tuple(pads))
    return x._convnd(n, op, w, bias, 1, 0, dl, groups)

  def conv_transpose1d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                       groups: int = 1, dilation: Any = 1) -> Any:
    return self._conv_transposend(1, "conv_transpose1d", weight, bias, stride, padding, output_padding, groups, dilation)
  def conv_transpose2d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                       groups: int = 1, dilation: Any = 1) -> Any:
    """PyTorch's conv_transpose2d: weight (C_in, C_out/groups, kH, kW)."""
    return self._conv_transposend(2, "conv_transpose2d", weight, bias, stride, padding, output_padding, groups, dilation)
  def conv_transpose3d(self: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                       groups: int = 1, dilation: Any = 1) -> Any:
    return self._conv_transposend(3, "conv_transpose3d", weight, bias, stride, padding, output_padding, groups, dilation)

  # ---------------------------------------------------------------- pooling
  def _pool_geometry(self: Any, n: int, op: str, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool):
    """Kernel, stride, dilation, (before, after) padding per dim, and the extra padding after that ceil_mode adds."""
    if self.ndim not in (n + 1, n + 2): raise RuntimeError(f"{op}: expected a {n + 1}D or {n + 2}D input, got shape {self.shape}")
    k = _ntuple(kernel_size, n, op, "kernel_size")
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _ntuple(stride, n, op, "stride")
    p, d = _ntuple(padding, n, op, "padding"), _ntuple(dilation, n, op, "dilation")
    if any(v <= 0 for v in k + s + d): raise RuntimeError(f"{op}: kernel_size {k}, stride {s} and dilation {d} must be positive")
    if any(pp < 0 or 2 * pp > kk for pp, kk in zip(p, k)): raise RuntimeError(f"{op}: padding {p} should be at most half the kernel size {k}")
    sizes = self.shape[-n:]
    extra = []
    for i, kk, ss, dd, pp in zip(sizes, k, s, d, p):
      span = i + 2 * pp - dd * (kk - 1) - 1
      if span < 0: raise RuntimeError(f"{op}: output size is too small for input {self.shape}, kernel {k}, padding {p}, dilation {d}")
      o = (-(-span // ss) if ceil_mode else span // ss) + 1
      if ceil_mode and (o - 1) * ss >= i + pp: o -= 1  # the last window must start inside the input or its left padding
      extra.append(max(0, (o - 1) * ss + dd * (kk - 1) + 1 - (i + 2 * pp)))
    return k, s, d, [(pp, pp) for pp in p], extra

  def _max_poolnd(self: Any, n: int, op: str, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
                  return_indices: bool) -> Any:
    k, s, d, pads, extra = self._pool_geometry(n, op, kernel_size, stride, padding, dilation, ceil_mode)
    low = float("-inf") if self.dtype.is_float else dtypes.min(self.dtype)
    full = [(a, b + e) for (a, b), e in zip(pads, extra)]
    win = self._pad_last(full, low)._windows(k, s, d)
    axes = tuple(range(win.ndim - n, win.ndim))
    out = win.max(axes)
    if not return_indices: return out
    # the flat input position of each window's first maximum (PyTorch's index), padding marked -1
    sizes = self.shape[-n:]
    pos = type(self).arange(prod(sizes), dtype=dtypes.int32, device=self.device).reshape(*sizes)._pad_last(full, -1)._windows(k, s, d)
    hit = win == out.reshape(*out.shape, *([1] * n))
    big = prod(sizes)
    idx = pos.where(hit, big).min(axes)
    return out, idx.cast(dtypes.int64)

  def max_pool1d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                 return_indices: bool = False) -> Any:
    return self._max_poolnd(1, "max_pool1d", kernel_size, stride, padding, dilation, ceil_mode, return_indices)
  def max_pool2d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                 return_indices: bool = False) -> Any:
    """PyTorch's max_pool2d: -inf padding; with return_indices, also the flat (h*W + w) input position of each maximum (int64)."""
    return self._max_poolnd(2, "max_pool2d", kernel_size, stride, padding, dilation, ceil_mode, return_indices)
  def max_pool3d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                 return_indices: bool = False) -> Any:
    return self._max_poolnd(3, "max_pool3d", kernel_size, stride, padding, dilation, ceil_mode, return_indices)

  def _avg_poolnd(self: Any, n: int, op: str, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool,
                  divisor_override: int | None) -> Any:
    k, s, d, pads, extra = self._pool_geometry(n, op, kernel_size, stride, padding, 1, ceil_mode)
    x = self._float()
    win = x._pad_last([(a, b + e) for (a, b), e in zip(pads, extra)])._windows(k, s, d)
    total = win.sum(tuple(range(win.ndim - n, win.ndim)))
    if divisor_override is not None:
      if divisor_override == 0: raise RuntimeError(f"{op}: divisor must be not zero")
      return total / divisor_override
    # the divisor depends only on the shapes: per dim, how many of a window's elements PyTorch counts (the
    # padding too when count_include_pad, never the extra ceil_mode positions); the product over dims
    div = np.ones((), np.float64)
    for i, kk, ss, (a, b), e, o in zip(self.shape[-n:], k, s, pads, extra, total.shape[-n:]):
      counted = np.concatenate([np.full(a, count_include_pad), np.ones(i, bool), np.full(b, count_include_pad), np.zeros(e, bool)])
      per_window = np.array([counted[j * ss:j * ss + kk].sum() for j in range(o)], np.float64)
      div = np.multiply.outer(div, per_window)
    if np.all(div == div.flat[0]): return total * (1.0 / float(div.flat[0]))
    return total / type(self)(div.astype(x.dtype.np), device=self.device)

  def avg_pool1d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True) -> Any:
    return self._avg_poolnd(1, "avg_pool1d", kernel_size, stride, padding, ceil_mode, count_include_pad, None)
  def avg_pool2d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> Any:
    return self._avg_poolnd(2, "avg_pool2d", kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
  def avg_pool3d(self: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> Any:
    return self._avg_poolnd(3, "avg_pool3d", kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

  def max_unpool2d(self: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, output_size: Any = None) -> Any:
    """The inverse of max_pool2d: each value written at its flat (h*W + w) output position, zeros elsewhere."""
    if self.shape != indices.shape: raise RuntimeError(f"max_unpool2d: indices of shape {indices.shape} do not match the input {self.shape}")
    if self.ndim not in (3, 4): raise RuntimeError(f"max_unpool2d: expected a 3D or 4D input, got shape {self.shape}")
    if indices.dtype.is_float: raise RuntimeError(f"max_unpool2d: indices must be integers, not {indices.dtype.name}")
    k, p = _ntuple(kernel_size, 2, "max_unpool2d", "kernel_size"), _ntuple(padding, 2, "max_unpool2d", "padding")
    s = k if stride is None else _ntuple(stride, 2, "max_unpool2d", "stride")
    if output_size is None: size = tuple((i - 1) * ss - 2 * pp + kk for i, ss, pp, kk in zip(self.shape[-2:], s, p, k))
    else: size = tuple(output_size)[-2:]
    n_out = prod(size)
    flat_x, flat_i = self.flatten(-2), indices.flatten(-2)
    # one-hot over the output positions (as gather does): out[..., j] = sum_p x[..., p] * (index[..., p] == j)
    hit = flat_i.unsqueeze(-1) == type(self).arange(n_out, dtype=indices.dtype, device=self.device)
    out = flat_x.unsqueeze(-1).where(hit, 0).sum(-2, dtype=self.dtype)
    return out.reshape(*self.shape[:-2], *size)

  # ---------------------------------------------------------------- unfolding
  def unfold(self: Any, dim: int, size: int, step: int) -> Any:
    """PyTorch's Tensor.unfold: every slice of `size` elements along `dim`, `step` apart, as a new last dim."""
    if self.ndim == 0:
      if size > 1: raise RuntimeError(f"unfold: size {size} exceeds the size 1 of a 0-d tensor")
      return self.reshape(1)
    if dim < -self.ndim or dim >= self.ndim: raise IndexError(f"unfold: dimension {dim} is out of range for a tensor with {self.ndim} dimension(s)")
    dim %= self.ndim
    if step <= 0: raise RuntimeError(f"unfold: step must be positive, got {step}")
    if size < 0 or size > self.shape[dim]: raise RuntimeError(f"unfold: size {size} exceeds the size {self.shape[dim]} of dimension {dim}")
    if size == 0:  # PyTorch: (n // step + 1) empty slices
      return type(self).zeros(*self.shape[:dim], self.shape[dim] // step + 1, *self.shape[dim + 1:], 0, dtype=self.dtype, device=self.device)
    order = [i for i in range(self.ndim) if i != dim] + [dim]
    win = self.permute(*order)._windows((size,), (step,), (1,))  # (..others, o, size)
    back = list(range(self.ndim - 1))
    back.insert(dim, self.ndim - 1)
    return win.permute(*back, self.ndim)

  def im2col(self: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Any:
    """PyTorch's F.unfold: (N, C, H, W) -> (N, C*kH*kW, L), one column per window position."""
    if self.ndim not in (3, 4): raise RuntimeError(f"unfold: expected a 3D or 4D input, got shape {self.shape}")
    if self.ndim == 3: return self.unsqueeze(0).im2col(kernel_size, dilation, padding, stride).squeeze(0)
    k, d = _ntuple(kernel_size, 2, "unfold", "kernel_size"), _ntuple(dilation, 2, "unfold", "dilation")
    p, s = _ntuple(padding, 2, "unfold", "padding"), _ntuple(stride, 2, "unfold", "stride")
    if any(_out_size(i, kk, ss, dd, pp, pp) <= 0 for i, kk, ss, dd, pp in zip(self.shape[2:], k, s, d, p)):
      raise RuntimeError(f"unfold: kernel {k} does not fit the padded input {self.shape}")
    win = self._pad_last([(pp, pp) for pp in p])._windows(k, s, d)  # (N, C, oh, ow, kh, kw)
    bsz, c, oh, ow = win.shape[:4]
    return win.permute(0, 1, 4, 5, 2, 3).reshape(bsz, c * k[0] * k[1], oh * ow)

  # ---------------------------------------------------------------- padding modes
  def _pad_mode(self: Any, pairs: Sequence[tuple[int, int]], mode: str) -> Any:
    """reflect, replicate and circular padding, one dim at a time, by concatenating slices (flipped for reflect)."""
    if mode not in ("reflect", "replicate", "circular"):
      raise NotImplementedError(f"pad: unknown mode {mode!r} (constant, reflect, replicate or circular)")
    x = self
    for dim, (before, after) in enumerate(pairs):
      if before == after == 0: continue
      n = x.shape[dim]
      # negative amounts crop, as in constant mode
      if before < 0 or after < 0:
        x = x.shrink(tuple((max(-before, 0), n - max(-after, 0)) if i == dim else (0, e) for i, e in enumerate(x.shape)))
        before, after, n = max(before, 0), max(after, 0), x.shape[dim]
      limit = {"reflect": n - 1, "replicate": float("inf") if n else 0, "circular": n}[mode]
      if before > limit or after > limit:
        raise RuntimeError(f"pad: {mode} padding ({before}, {after}) is too large for dimension {dim} of size {n}")

      def piece(lo: int, hi: int) -> Any: return x.shrink(tuple((lo, hi) if i == dim else (0, e) for i, e in enumerate(x.shape)))
      if mode == "reflect": left, right = piece(1, before + 1).flip(dim), piece(n - 1 - after, n - 1).flip(dim)
      elif mode == "circular": left, right = piece(n - before, n), piece(0, after)
      else:
        left = piece(0, 1).expand(*[before if i == dim else e for i, e in enumerate(x.shape)])
        right = piece(n - 1, n).expand(*[after if i == dim else e for i, e in enumerate(x.shape)])
      x = left.cat(x, right, dim=dim)
    return x

  # ---------------------------------------------------------------- interpolation
  def interpolate(self: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: bool | None = None) -> Any:
    """PyTorch's F.interpolate for modes nearest, nearest-exact, linear, bilinear and trilinear.

    Each spatial dim is resampled by a constant (out, in) matrix built from the shapes (one or two
    nonzero weights a row), so the result is a small fused contraction with gradients.
    """
    n = self.ndim - 2
    need = {"linear": 1, "bilinear": 2, "trilinear": 3}
    if mode not in ("nearest", "nearest-exact", *need): raise NotImplementedError(f"interpolate: mode {mode!r} is not supported")
    if not 1 <= n <= 3: raise NotImplementedError(f"interpolate: expected a 3D, 4D or 5D input (N, C, spatial...), got shape {self.shape}")
    if mode in need and need[mode] != n:
      raise NotImplementedError(f"interpolate: mode {mode!r} needs a {need[mode] + 2}D input, got shape {self.shape}")
    if mode.startswith("nearest") and align_corners is not None:
      raise ValueError("interpolate: align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | trilinear")
    if (size is None) == (scale_factor is None): raise ValueError("interpolate: exactly one of size and scale_factor must be given")
    ins = self.shape[2:]
    scales: list[Any]  # per spatial dim: the user's scale factor, or None when `size` was given
    if size is not None:
      if not isinstance(size, int) and len(size) != n: raise ValueError(f"interpolate: size {size!r} must have {n} values for input {self.shape}")
      outs, scales = _ntuple(size, n, "interpolate", "size"), [None] * n
    else:
      scales = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * n
      if len(scales) != n: raise ValueError(f"interpolate: scale_factor {scale_factor!r} must have {n} values")
      outs = tuple(int(math.floor(i * float(sc))) for i, sc in zip(ins, scales))
    if any(o <= 0 for o in outs): raise RuntimeError(f"interpolate: output size {outs} must be positive")
    x = self._float()
    for j, (i, o, sc) in enumerate(zip(ins, outs, scales)):
      if i == o and (align_corners or sc is None or float(sc) == 1.0): continue  # the identity
      m = type(self)(_resample_matrix(i, o, sc, mode, bool(align_corners)).astype(x.dtype.np), device=self.device)
      axis = 2 + j
      moved = x.transpose(axis, -1)
      x = (moved.unsqueeze(-2) * m).sum(-1).transpose(axis, -1)
    return x


def _resample_matrix(i: int, o: int, scale: float | None, mode: str, align_corners: bool) -> np.ndarray:
  """The (o, i) matrix that maps one input line to one output line, with PyTorch's source-coordinate rules."""
  m = np.zeros((o, i), np.float64)
  dst = np.arange(o, dtype=np.float64)
  ratio = i / o if scale is None else 1.0 / float(scale)  # PyTorch uses the given scale factor, not the rounded sizes
  if mode == "nearest":
    m[np.arange(o), np.minimum(np.floor(dst * ratio).astype(np.int64), i - 1)] = 1
    return m
  if mode == "nearest-exact":
    m[np.arange(o), np.minimum(np.floor((dst + 0.5) * ratio).astype(np.int64), i - 1)] = 1
    return m
  if align_corners: src = dst * ((i - 1) / (o - 1)) if o > 1 else np.zeros(o)
  else: src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), i - 1)
  hi = np.minimum(lo + 1, i - 1)
  frac = src - lo
  np.add.at(m, (np.arange(o), lo), 1 - frac)
  np.add.at(m, (np.arange(o), hi), frac)
  return m
