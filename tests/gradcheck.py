"""Helpers the gradient tests share: picograd's gradients against PyTorch's, and against float64 central differences."""
from __future__ import annotations
from typing import Callable, Sequence
import numpy as np
from picograd import Tensor


def picograd_grads(fn: Callable, arrays: Sequence[np.ndarray], weight: np.ndarray | None = None, device: str = "CPU",
                   extra: Sequence = ()) -> tuple[np.ndarray, list[np.ndarray]]:
  """fn(*tensors, *extra) and d sum(fn * weight) / d input for each array (the weight makes every output element count differently)."""
  xs = [Tensor(a, device=device, requires_grad=True) for a in arrays]
  out = fn(*xs, *extra)
  loss = (out * Tensor(weight, device=device)).sum() if weight is not None else out.sum()
  loss.backward()
  return out.numpy(), [x.grad.numpy() if x.grad is not None else np.zeros_like(a) for x, a in zip(xs, arrays)]


def torch_grads(fn: Callable, arrays: Sequence[np.ndarray], weight: np.ndarray | None = None,
                extra: Sequence = ()) -> tuple[np.ndarray, list[np.ndarray]]:
  import torch
  xs = [torch.tensor(a, requires_grad=True) for a in arrays]
  out = fn(*xs, *extra)
  loss = (out * torch.tensor(weight)).sum() if weight is not None else out.sum()
  loss.backward()
  return out.detach().numpy(), [x.grad.numpy() if x.grad is not None else np.zeros_like(a) for x, a in zip(xs, arrays)]


def assert_close_to_torch(fn: Callable, arrays: Sequence[np.ndarray], torch_fn: Callable | None = None, device: str = "CPU",
                          extra: Sequence = (), torch_extra: Sequence | None = None, rtol: float = 1e-4, seed: int = 0) -> None:
  """Values and gradients of `fn` match `torch_fn` (default: the same function) to `rtol`, with a small absolute floor."""
  out_shape = np.shape(torch_grads(torch_fn or fn, arrays, extra=extra if torch_extra is None else torch_extra)[0])
  weight = np.random.default_rng(seed).uniform(0.5, 1.5, size=out_shape).astype(arrays[0].dtype)
  got, got_grads = picograd_grads(fn, arrays, weight, device, extra)
  want, want_grads = torch_grads(torch_fn or fn, arrays, weight, extra if torch_extra is None else torch_extra)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max(initial=0))) * 0.1)
  for i, (g, w) in enumerate(zip(got_grads, want_grads)):
    assert g.shape == w.shape, f"gradient {i}: shape {g.shape} != {w.shape}"
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.abs(w).max(initial=0))) * 0.1, err_msg=f"gradient {i}")


def assert_matches_finite_differences(fn: Callable, arrays: Sequence[np.ndarray], device: str = "CPU", extra: Sequence = (),
                                      rtol: float = 1e-6, h: float = 1e-6, directions: int = 2, seed: int = 0) -> None:
  """Directional derivatives of sum(fn * weight), in float64: <grad, v> == (f(x + h v) - f(x - h v)) / 2h for random v.

  A directional check costs two forward evaluations per direction (they reuse one cached
  schedule), where an element-by-element one would cost two per element.
  """
  arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
  rng = np.random.default_rng(seed)
  weight = rng.uniform(0.5, 1.5, size=fn(*[Tensor(a, device=device) for a in arrays], *extra).shape)  # shapes are known without running
  out, grads = picograd_grads(fn, arrays, weight, device, extra)

  def f(arrs: list[np.ndarray]) -> float:
    return float((fn(*[Tensor(a, device=device) for a in arrs], *extra) * Tensor(weight, device=device)).sum().item())

  for _ in range(directions):
    vs = [rng.standard_normal(a.shape) for a in arrays]
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, vs))
    numeric = (f([a + h * v for a, v in zip(arrays, vs)]) - f([a - h * v for a, v in zip(arrays, vs)])) / (2 * h)
    # the floor covers rounding in f itself: about 1e-16 |f| / h
    scale = max(abs(numeric), 1e-3 * max(1.0, abs(f(arrays))))
    assert abs(analytic - numeric) <= rtol * scale, f"directional derivative {analytic!r} != finite difference {numeric!r}"
