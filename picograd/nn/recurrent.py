"""Recurrent layers (library layer): RNN (tanh or relu), LSTM and GRU, unrolled over the sequence with Tensor ops.

Arguments, shapes, gate order, initialisation and parameter names are PyTorch's: layer k has
`weight_ih_lk` [G*H, input], `weight_hh_lk` [G*H, H], `bias_ih_lk`, `bias_hh_lk` (G = 1, 4 or 3 gates;
`_reverse` for the backward direction; `weight_hr_lk` for an LSTM with `proj_size`), all drawn
from U(-1/sqrt(H), 1/sqrt(H)). The gates are stacked in PyTorch's order: LSTM input, forget, cell,
output; GRU reset, update, new. So torch state dicts load as they are.

The input projection of a whole sequence is one matrix product (all time steps at once); only the
hidden-to-hidden product runs step by step. The loop is Python, so the graph (and a JIT-captured
step) holds the sequence unrolled. Each step's states and products are kernel boundaries, forward and
backward, so its kernels stay small; those that slice the sequence differ per step (the offset is part
of the kernel), so a sequence of length L compiles O(L) small kernels, once.
"""
from __future__ import annotations
import abc, math
from picograd.dtype import DType
from picograd.tensor import Tensor, stack, cat
from picograd.frontend.scan import _boundary
from picograd.nn.layers import _parameters

__all__ = ["RNN", "LSTM", "GRU"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class _RNNBase(abc.ABC):
  """The parameters, argument checks and layer/direction loop the three recurrent layers share; `_cell` is one time step."""
  mode = ""

  def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
               dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, device: str | None = None, dtype: DType | None = None):
    name = type(self).__name__
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers), ("proj_size", proj_size)):
      if isinstance(value, bool) or not isinstance(value, int): raise TypeError(f"{name}: {arg} should be of type int, got: {type(value).__name__}")
    if hidden_size <= 0: raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0: raise ValueError("num_layers must be greater than zero")
    if isinstance(dropout, bool) or not 0 <= dropout <= 1:
      raise ValueError("dropout should be a number in range [0, 1] representing the probability of an element being zeroed")
    if proj_size < 0: raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size: raise ValueError("proj_size has to be smaller than hidden_size")
    if proj_size and self.mode != "LSTM": raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    self.input_size, self.hidden_size, self.num_layers, self.bias = input_size, hidden_size, num_layers, bias
    self.batch_first, self.dropout, self.bidirectional, self.proj_size = batch_first, float(dropout), bidirectional, proj_size
    gate_size, out_size, bound = _GATES[self.mode] * hidden_size, proj_size or hidden_size, 1 / math.sqrt(hidden_size)
    new = []
    for layer in range(num_layers):
      for suffix in self._suffixes():
        layer_in = input_size if layer == 0 else out_size * self.num_directions
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (gate_size, layer_in), "weight_hh": (gate_size, out_size)}
        if bias: shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
        if proj_size: shapes["weight_hr"] = (proj_size, hidden_size)
        for kind, shape in shapes.items():  # attribute order = PyTorch's state_dict order
          t = Tensor.uniform(*shape, low=-bound, high=bound, device=device, dtype=dtype)
          setattr(self, f"{kind}_l{layer}{suffix}", t)
          new.append(t)
    _parameters(*new)

  @property
  def num_directions(self) -> int: return 2 if self.bidirectional else 1

  def _suffixes(self) -> tuple[str, ...]: return ("", "_reverse") if self.bidirectional else ("",)

  def _weights(self, layer: int, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    names = [f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    return getattr(self, names[0]), getattr(self, names[1]), getattr(self, names[2], None), getattr(self, names[3], None)

  def _zeros(self, size: int, batch: int | None, like: Tensor) -> Tensor:
    shape = (self.num_layers * self.num_directions,) + ((batch,) if batch is not None else ()) + (size,)
    return Tensor.zeros(shape, device=like.device, dtype=like.dtype)

  def _check_state(self, state: Tensor, size: int, batch: int | None, what: str) -> Tensor:
    want = (self.num_layers * self.num_directions,) + ((batch,) if batch is not None else ()) + (size,)
    if state.shape != want: raise RuntimeError(f"Expected {what} size {want}, got {list(state.shape)}")
    return state

  def _sequence(self, x: Tensor) -> tuple[Tensor, int | None]:
    """The input as (L, N, input_size) and the batch size (None for an unbatched (L, input_size) input)."""
    name = type(self).__name__
    if x.ndim not in (2, 3): raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.ndim}D input instead")
    if x.shape[-1] != self.input_size:
      raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}")
    if x.ndim == 2: return x.unsqueeze(1), None
    return (x.transpose(0, 1) if self.batch_first else x), x.shape[0 if self.batch_first else 1]

  def _run(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """All layers and directions over the (L, N, features) sequence `x`; `states` are the per-cell initial states stacked
    over layers and directions (h, and c for an LSTM). Returns the last layer's outputs and the final states, stacked alike."""
    finals: list[list[Tensor]] = [[] for _ in states]
    seq_len = x.shape[0]
    for layer in range(self.num_layers):
      if layer > 0 and self.dropout > 0: x = x.dropout(self.dropout)
      outputs = []
      for d, suffix in enumerate(self._suffixes()):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
        # every time step's input product at once: (L, N, G*H); stored, and its gradient too, so that the products that
        # read that gradient (for weight_ih and the input) read one buffer instead of L padded pieces
        projected = _boundary(x.linear(w_ih, b_ih))
        cell_state = [s[layer * self.num_directions + d] for s in states]
        steps = []
        for t in (reversed(range(seq_len)) if d else range(seq_len)):
          # a kernel boundary around each step's states, in the backward pass too: otherwise the elementwise chain through
          # time fuses into kernels that recompute every earlier step (their size, and compile time, grow with the length)
          # and around both products, so that the weight gradients sum stored per-step gradients of them
          xw, hw = _boundary(projected[t]), _boundary(cell_state[0].linear(w_hh, b_hh))
          cell_state = [_boundary(s) for s in self._cell(xw, hw, cell_state, layer, suffix)]
          steps.append(cell_state[0])
        outputs.append(_boundary(stack(steps[::-1] if d else steps)))  # one buffer for the next layer's or the user's products
        for final, s in zip(finals, cell_state): final.append(s)
      x = outputs[0] if len(outputs) == 1 else cat(outputs, dim=2)
    return x, [stack(f) for f in finals]

  def _output(self, out: Tensor, batch: int | None) -> Tensor:
    if batch is None: return out.squeeze(1)
    return out.transpose(0, 1) if self.batch_first else out

  @abc.abstractmethod
  def _cell(self, xw: Tensor, hw: Tensor, state: list[Tensor], layer: int, suffix: str) -> list[Tensor]:
    """One time step: the input's and the hidden state's products (`xw`, `hw`, biases included) and the states before ->
    the states after (h first)."""


class _HiddenStateRNN(_RNNBase):
  """The layers whose only state is h (RNN, GRU): called with h0 or None, they return (output, h_n)."""

  def __call__(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    seq, batch = self._sequence(x)
    h0 = self._zeros(self.hidden_size, batch, seq) if hx is None else self._check_state(hx, self.hidden_size, batch, "hidden")
    out, (h_n,) = self._run(seq, [h0 if batch is not None else h0.unsqueeze(1)])
    return self._output(out, batch), h_n if batch is not None else h_n.squeeze(1)


class RNN(_HiddenStateRNN):
  """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_(t-1) W_hh^T + b_hh) (or relu). Returns (output, h_n).

  RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0,
  bidirectional=False), positional in PyTorch's order.
  """

  def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
               batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device: str | None = None,
               dtype: DType | None = None, proj_size: int = 0):
    if nonlinearity not in ("tanh", "relu"): raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    self.nonlinearity, self.mode = nonlinearity, "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    # proj_size is accepted only to be refused with torch's ValueError
    super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, device, dtype)

  def _cell(self, xw: Tensor, hw: Tensor, state: list[Tensor], layer: int, suffix: str) -> list[Tensor]:
    pre = xw + hw
    return [pre.tanh() if self.nonlinearity == "tanh" else pre.relu()]


class GRU(_HiddenStateRNN):
  """Gated recurrent unit, PyTorch's equations: r = σ(..), z = σ(..), n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)),
  h' = (1 - z) * n + z * h. Returns (output, h_n)."""
  mode = "GRU"

  def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
               dropout: float = 0.0, bidirectional: bool = False, device: str | None = None, dtype: DType | None = None, proj_size: int = 0):
    super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, device, dtype)

  def _cell(self, xw: Tensor, hw: Tensor, state: list[Tensor], layer: int, suffix: str) -> list[Tensor]:
    h = state[0]
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return [n + z * (h - n)]  # (1 - z) * n + z * h


class LSTM(_RNNBase):
  """Long short-term memory, PyTorch's equations and gate order (i, f, g, o): c' = f * c + i * g, h' = o * tanh(c')
  (times weight_hr^T with `proj_size`). Called with `(h0, c0)` or None; returns (output, (h_n, c_n))."""
  mode = "LSTM"

  def _cell(self, xw: Tensor, hw: Tensor, state: list[Tensor], layer: int, suffix: str) -> list[Tensor]:
    c = state[1]
    i, f, g, o = (xw + hw).chunk(4, dim=-1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    if self.proj_size: h = h.linear(getattr(self, f"weight_hr_l{layer}{suffix}"))
    return [h, c]

  def __call__(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    seq, batch = self._sequence(x)
    out_size = self.proj_size or self.hidden_size
    if hx is None: h0, c0 = self._zeros(out_size, batch, seq), self._zeros(self.hidden_size, batch, seq)
    else:
      if not isinstance(hx, (tuple, list)) or len(hx) != 2: raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
      h0, c0 = self._check_state(hx[0], out_size, batch, "hidden[0]"), self._check_state(hx[1], self.hidden_size, batch, "hidden[1]")
    if batch is None: h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    out, (h_n, c_n) = self._run(seq, [h0, c0])
    if batch is None: h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return self._output(out, batch), (h_n, c_n)
