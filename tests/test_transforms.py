"""Function transforms against torch.func: jvp, vjp, jacobian (forward, reverse, auto) and hessian, on random float64 inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import picograd
from picograd import Tensor

X, W = (3, 4), (4,)  # few shapes: every new kernel shape is an LLVM compile on a cold cache

# name -> (picograd function, the same in PyTorch, input shapes)
CASES = {
  "transcendental": (lambda a: a.exp() * a.sin() + (a * a + 1).log() + a.tanh() + a.sigmoid() + (a * a + 1).sqrt() + a.cos() / (a * a + 2),
                     lambda a: a.exp() * a.sin() + (a * a + 1).log() + a.tanh() + a.sigmoid() + (a * a + 1).sqrt() + a.cos() / (a * a + 2),
                     [X]),
  "reductions": (lambda a: a.sum(1, keepdim=True) * a.mean(0, keepdim=True) + a.max(1, keepdim=True) - a.maximum(a.flip(1)).relu(),
                 lambda a: a.sum(1, keepdim=True) * a.mean(0, keepdim=True) + a.amax(1, keepdim=True) - a.maximum(a.flip(1)).relu(),
                 [X]),
  "matmul": (lambda a, w: (a @ w.reshape(4, 1).expand(4, 2)).tanh(), lambda a, w: (a @ w.reshape(4, 1).expand(4, 2)).tanh(), [X, W]),
  "softmax": (lambda a: a.softmax(-1) * a.log_softmax(0), lambda a: a.softmax(-1) * a.log_softmax(0), [X]),
  "layer_norm": (lambda a, w: a.layer_norm(4, w, w * w), lambda a, w: F.layer_norm(a, (4,), w, w * w), [X, W]),
  "movement": (lambda a: (a.reshape(4, 3).permute(1, 0).flip(0)[1:3].pad((1, 2)) * 2).reshape(2, 1, 7).expand(2, 3, 7).sin(),
               lambda a: (F.pad(a.reshape(4, 3).permute(1, 0).flip(0)[1:3], (1, 2)) * 2).reshape(2, 1, 7).expand(2, 3, 7).sin(),
               [X]),
  "where": (lambda a, w: picograd.where(a > 0, a * w, (a * 3).sin()), lambda a, w: torch.where(a > 0, a * w, (a * 3).sin()), [X, W]),
  "cast": (lambda a: (a.float() * 2).exp().double() * a, lambda a: (a.float() * 2).exp().double() * a, [X]),
}
# the cast case computes in float32: its derivatives are float32-accurate
TOL = {"cast": 1e-5}


def _inputs(shapes, seed: int):
  rng = np.random.default_rng(seed)
  return [rng.uniform(-1.5, 1.5, s) for s in shapes]


def _close(got, want, name: str) -> None:
  tol = TOL.get(name, 1e-9)
  np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CASES)
def test_jvp_vjp_jacobian(name: str, device: str):
  f, tf, shapes = CASES[name]
  xs, ts, = _inputs(shapes, 0), _inputs(shapes, 1)
  px, pt = [Tensor(x, device=device) for x in xs], [Tensor(t, device=device) for t in ts]
  tx, tt = [torch.from_numpy(x) for x in xs], [torch.from_numpy(t) for t in ts]

  out, tangent = picograd.jvp(f, tuple(px), tuple(pt))
  want_out, want_tangent = torch.func.jvp(tf, tuple(tx), tuple(tt))
  _close(out, want_out, name)
  _close(tangent, want_tangent, name)

  out, vjp_fn = picograd.vjp(f, *px)
  ct = np.random.default_rng(2).uniform(-1, 1, out.shape)
  grads = vjp_fn(Tensor(ct, device=device))
  _, torch_vjp = torch.func.vjp(tf, *tx)
  assert len(grads) == len(px)
  for g, want in zip(grads, torch_vjp(torch.from_numpy(ct))): _close(g, want, name)

  argnums = tuple(range(len(px)))
  want_jac = torch.func.jacrev(tf, argnums=argnums)(*tx)
  for mode in ("forward", "reverse", "auto"):
    jac = picograd.jacobian(f, tuple(px), mode=mode)
    assert isinstance(jac, tuple) and len(jac) == len(px)
    for j, want in zip(jac, want_jac):
      assert j.shape == tuple(want.shape), (mode, j.shape, want.shape)
      _close(j, want, name)


# scalar functions for the Hessian (forward over reverse) against torch.func.hessian (jacfwd over jacrev)
HESSIAN_CASES = {
  "transcendental": (lambda a: (a.exp() * a.sin()).sum().tanh() + (a * a + 1).log().mean(), lambda a: (a.exp() * a.sin()).sum().tanh() + (a * a + 1).log().mean()),
  "softmax": (lambda a: (a.softmax(-1) * a.flip(0)).sum(), lambda a: (a.softmax(-1) * a.flip(0)).sum()),
  "layer_norm": (lambda a: (a.layer_norm(4) * a.sigmoid()).sum(), lambda a: (F.layer_norm(a, (4,)) * a.sigmoid()).sum()),
}


@pytest.mark.parametrize("name", HESSIAN_CASES)
def test_hessian(name: str, device: str):
  f, tf = HESSIAN_CASES[name]
  (x,) = _inputs([X], 3)
  h = picograd.hessian(f, Tensor(x, device=device))
  want = torch.func.hessian(tf)(torch.from_numpy(x))
  assert h.shape == X + X
  _close(h, want, name)


def test_hessian_of_two_inputs_and_jacobian_structure(device: str):
  """A tuple of inputs gives nested tuples ([input][input] for the Hessian); a tuple of outputs a tuple per output."""
  f = lambda a, w: ((a @ w).tanh() ** 2).sum()
  a, w = _inputs([X, W], 4)
  h = picograd.hessian(f, (Tensor(a, device=device), Tensor(w, device=device)))
  want = torch.func.hessian(f, argnums=(0, 1))(torch.from_numpy(a), torch.from_numpy(w))
  for i in range(2):
    for j in range(2): _close(h[i][j], want[i][j], "matmul")
  two = lambda a: (a.exp(), a.sum(0))
  jac = picograd.jacobian(two, Tensor(a, device=device))
  want_jac = torch.func.jacfwd(two)(torch.from_numpy(a))
  assert isinstance(jac, tuple) and len(jac) == 2
  for j, wj in zip(jac, want_jac): _close(j, wj, "two outputs")


def test_transform_semantics():
  """Closures are constants, a primal passed twice is two variables, outputs are the plain forward's nodes, DETACH stops tangents,
  and the results can be differentiated again by Tensor.gradient (they are graphs over the primals)."""
  x = Tensor(np.array([1.0, 2.0, 3.0]))
  c = Tensor(np.array([0.5, -1.0, 2.0]))
  out, t = picograd.jvp(lambda a: a * x, (x,), (c,))  # x closed over: a constant
  np.testing.assert_allclose(t.numpy(), c.numpy() * x.numpy())
  assert out.uop is (x * x).uop  # the same node as the plain forward: no extra work
  _, t = picograd.jvp(lambda a, b: a * b, (x, x), (c, Tensor.zeros(3, dtype="float64")))
  np.testing.assert_allclose(t.numpy(), c.numpy() * x.numpy())
  _, t = picograd.jvp(lambda a: a.detach() * a, (x,), (c,))
  np.testing.assert_allclose(t.numpy(), c.numpy() * x.numpy())
  w = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
  _, t = picograd.jvp(lambda a: (a * w).exp(), (x,), (c,))
  (g,) = t.sum().gradient(w)  # d/dw sum(c * w * exp(x w)) = c (1 + x w) exp(x w)
  xn, wn, cn = x.numpy(), w.numpy(), c.numpy()
  np.testing.assert_allclose(g.numpy(), cn * (1 + xn * wn) * np.exp(xn * wn))
  # under no_grad the transforms still differentiate (torch.func ignores the outer grad mode too)
  with picograd.no_grad():
    _, t = picograd.jvp(lambda a: a * a, (x,), (c,))
  np.testing.assert_allclose(t.numpy(), 2 * xn * cn)


def test_transform_errors():
  x = Tensor(np.ones(3))
  with pytest.raises(ValueError, match="tangent 0 has shape"): picograd.jvp(lambda a: a, (x,), (Tensor(np.ones(4)),))
  with pytest.raises(ValueError, match="2 primals but 1 tangents"): picograd.jvp(lambda a, b: a, (x, x), (x,))
  with pytest.raises(RuntimeError, match="floating point"): picograd.jvp(lambda a: a, (Tensor([1, 2]),), (Tensor([1, 2]),))
  with pytest.raises(TypeError, match="function's outputs"): picograd.vjp(lambda a: 3.0, x)
  with pytest.raises(ValueError, match="mode must be"): picograd.jacobian(lambda a: a, x, mode="sideways")
  _, vjp_fn = picograd.vjp(lambda a: a.sum(), x)
  with pytest.raises(ValueError, match="cotangent 0 has shape"): vjp_fn(x)


def test_a_traced_function_cannot_read_its_inputs():
  """Reading a traced input's value raises (it is a placeholder without data) instead of reading stray memory."""
  x = Tensor(np.array([1.0, 2.0, 3.0]))
  with pytest.raises(RuntimeError, match="placeholders"):
    picograd.jvp(lambda t: t * float((t * 2).sum().item()), (x,), (Tensor.ones(3, dtype=x.dtype),))
