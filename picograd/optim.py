"""Optimizers (library layer): SGD, Adam and AdamW with PyTorch's update rules, and a cosine learning-rate schedule.

An update step is a lazy graph: for every parameter, the new optimizer state and the new value
are `assign`ed into their existing buffers, and `step()` realizes all of them in one schedule, so
the whole update fuses into a few kernels and memory does not grow from step to step. To keep
the forward pass from running twice, realize the loss in the same schedule:

    loss = model(x, y); opt.zero_grad(); loss.backward()
    Tensor.realize(loss, *opt.schedule_step())

Parameters of a 16-bit float type (a model cast with `nn.to_dtype(model, dtypes.bfloat16)`) get float32 "master"
copies: the update and the optimizer state are computed in float32 and the parameter is the master rounded, so updates
smaller than a bfloat16 step still add up.

Values that change from step to step live in one-element buffers, never in constants: the
learning rate (written when `opt.lr` is set, outside the step) and Adam's powers of beta (advanced
inside the step's graph). So a new learning rate every step reuses the cached schedule and the
compiled kernels, and a `picograd.jit` replay of the step sees both.
"""
from __future__ import annotations
import math
from typing import Iterable
import numpy as np
from picograd.dtype import dtypes
from picograd.tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "cosine_warmup"]


class Optimizer:
  """Holds the parameters and the learning rate; subclasses give the update of one parameter."""

  def __init__(self, params: Iterable[Tensor], lr: float):
    name = type(self).__name__
    _check_number(name, "learning rate", lr)
    if isinstance(params, Tensor):
      raise TypeError(f"{name}: params must be an iterable of Tensors (e.g. model.parameters() or [w, b]), not a single Tensor")
    try:
      params = list(params)
    except TypeError:
      raise TypeError(f"{name}: params must be an iterable of Tensors, not {type(params).__name__}") from None
    unique: dict[int, Tensor] = {}
    for p in params:
      if not isinstance(p, Tensor): raise TypeError(f"{name}: can only optimize Tensors, but one of the params is {type(p).__name__}")
      unique.setdefault(id(p), p)
    self.params = list(unique.values())
    if not self.params: raise ValueError(f"{name}: got an empty list of parameters")
    self.device = self.params[0].device
    if any(p.device != self.device for p in self.params):
      devices = sorted({p.device for p in self.params})
      raise RuntimeError(f"{type(self).__name__}: parameters are on several devices ({devices}); use one optimizer per device")
    for p in self.params: p.requires_grad = True
    # parameters must own buffers before the first update assigns into them
    Tensor.realize(*self.params)
    # float32 masters of 16-bit parameters: the update runs on them, and the parameter is the master rounded
    self.masters: list[Tensor | None] = [p.cast(dtypes.float32).contiguous() if p.dtype in (dtypes.float16, dtypes.bfloat16) else None
                                         for p in self.params]
    for m in self.masters:
      if m is not None: m.realize()
    self._lr = self._scalar_buffer(lr)

  @property
  def lr(self) -> float:
    """The learning rate. Setting it writes the value into a buffer the update reads: no recompilation."""
    return float(self._lr.item())

  @lr.setter
  def lr(self, value: float) -> None:
    _check_number(type(self).__name__, "learning rate", value)
    self._lr.assign(self._scalar_buffer(value)).realize()

  def zero_grad(self) -> None:
    """Forget the gradients of the last backward pass (the next `backward()` fills `.grad` afresh)."""
    for p in self.params: p.grad = None

  def step(self) -> None:
    """Update every parameter that has a gradient, in one schedule.

    Read the loss before this (or realize it with the update, see the module docstring): a loss still
    unrealized afterwards would be computed from the updated parameters.
    """
    Tensor.realize(*self.schedule_step())

  def schedule_step(self) -> list[Tensor]:
    """Assign the updates lazily and return the tensors to realize: parameters and optimizer state."""
    out = self._advance()
    for i, p in enumerate(self.params):
      if p.grad is None: continue
      if (master := self.masters[i]) is None: out.extend(self._update(i, p, p.grad.cast(p.dtype)))
      else:
        updates = self._update(i, master, p.grad.cast(dtypes.float32))  # the master's new value comes last
        out.extend(updates + [p.assign(updates[-1])])
    return out

  def _advance(self) -> list[Tensor]:
    """Assign the per-step state shared by all parameters (none here); return it."""
    return []

  def _update(self, i: int, p: Tensor, g: Tensor) -> list[Tensor]:
    """Assign the new state and value of parameter `i` (`p`: the parameter or its float32 master); the new value last."""
    raise NotImplementedError

  def _scalar_buffer(self, value: float) -> Tensor:
    # float64, as PyTorch computes its step sizes in Python floats: 1 - 0.999**t is inexact in float32
    return Tensor(np.array([value], dtype=np.float64), device=self.device)

  def _state(self) -> list[Tensor]:
    """A zero buffer shaped like each parameter, in its master's type (for momentum and moment estimates)."""
    state = [Tensor.zeros(p.shape, dtype=p.dtype if m is None else m.dtype, device=p.device).contiguous()
             for p, m in zip(self.params, self.masters)]
    Tensor.realize(*state)
    return state


def _check_number(optimizer: str, what: str, value: float, below: float | None = None) -> None:
  """A hyperparameter must be a real number >= 0 (and < `below` where given): ValueError otherwise, as in torch.optim."""
  if isinstance(value, Tensor) or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise TypeError(f"{optimizer}: {what} must be a number, not {type(value).__name__}")
  if not (value >= 0 and (below is None or value < below)):  # also refuses NaN
    raise ValueError(f"{optimizer}: invalid {what} = {value}: must be " + ("non-negative" if below is None else f"in [0, {below})"))


def _broadcast(scalar: Tensor, like: Tensor) -> Tensor:
  """A one-element tensor broadcast to `like` in its dtype: a single load inside the fused update kernel."""
  return scalar.cast(like.dtype).reshape((1,) * like.ndim).expand(like.shape)


class SGD(Optimizer):
  """Stochastic gradient descent as in PyTorch: optional momentum (classical or Nesterov) and L2 weight decay."""

  def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
    _check_number("SGD", "momentum", momentum)
    _check_number("SGD", "weight_decay", weight_decay)
    if nesterov and momentum <= 0: raise ValueError("SGD: Nesterov momentum needs momentum > 0")
    super().__init__(params, lr)
    self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
    # buffers start at zero, so the first step's momentum * 0 + g equals PyTorch's first buffer, g
    self.bufs = self._state() if momentum else []

  def _update(self, i: int, p: Tensor, g: Tensor) -> list[Tensor]:
    if self.weight_decay: g = g + self.weight_decay * p
    lr = _broadcast(self._lr, p)
    if not self.momentum: return [p.assign(p - lr * g)]
    buf = self.bufs[i].assign(self.momentum * self.bufs[i] + g)
    direction = g + self.momentum * buf if self.nesterov else buf
    return [buf, p.assign(p - lr * direction)]


class Adam(Optimizer):
  """Adam (Kingma and Ba) as in PyTorch; `weight_decay` is L2 added to the gradient (use AdamW for decoupled decay)."""
  decoupled = False

  def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.0):
    name = type(self).__name__
    if not isinstance(betas, (tuple, list)) or len(betas) != 2: raise TypeError(f"{name}: betas must be a pair of numbers, got {betas!r}")
    for i, b in enumerate(betas): _check_number(name, f"betas[{i}]", b, below=1.0)
    _check_number(name, "epsilon", eps)
    _check_number(name, "weight_decay", weight_decay)
    super().__init__(params, lr)
    self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
    self.m, self.v = self._state(), self._state()
    # beta1**t and beta2**t, advanced inside the step's graph so that a JIT replay advances them too. They are
    # shared: a parameter left without a gradient for a step still counts that step (PyTorch counts per parameter).
    self.b1_t, self.b2_t = self._scalar_buffer(1.0), self._scalar_buffer(1.0)

  def _advance(self) -> list[Tensor]:
    self.b1_t.assign(self.b1_t * self.betas[0])
    self.b2_t.assign(self.b2_t * self.betas[1])
    return [self.b1_t, self.b2_t]

  def _update(self, i: int, p: Tensor, g: Tensor) -> list[Tensor]:
    b1, b2 = self.betas
    if self.weight_decay and not self.decoupled: g = g + self.weight_decay * p
    m = self.m[i].assign(b1 * self.m[i] + (1 - b1) * g)
    v = self.v[i].assign(b2 * self.v[i] + (1 - b2) * g * g)
    # as torch.optim.Adam: p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), the scalars in double precision
    step_size = _broadcast(self._lr / (1 - self.b1_t), p)
    denom = v.sqrt() * _broadcast((1 - self.b2_t).rsqrt(), p) + self.eps
    # decoupled decay shrinks the old value before the Adam step, as torch.optim.AdamW does
    base = p * _broadcast(1 - self._lr * self.weight_decay, p) if self.weight_decay and self.decoupled else p
    return [m, v, p.assign(base - step_size * m / denom)]


class AdamW(Adam):
  """Adam with decoupled weight decay (Loshchilov and Hutter), as torch.optim.AdamW: p *= 1 - lr * weight_decay each step."""
  decoupled = True

  def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 1e-2):
    super().__init__(params, lr, betas, eps, weight_decay)


def cosine_warmup(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
  """The learning rate for `step` (counting from 0): linear warm-up to `max_lr`, then a cosine decay to `min_lr` at `total_steps`.

  Steps after `total_steps` stay at `min_lr`. Set it each step with `opt.lr = cosine_warmup(step, ...)`.
  """
  if step < warmup_steps: return max_lr * (step + 1) / warmup_steps
  if step >= total_steps: return min_lr
  progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
  return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
