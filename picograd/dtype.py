"""Data types: the `DType` record, the `dtypes` namespace, and numpy/PyTorch-style type promotion."""
from __future__ import annotations
import functools, struct
from dataclasses import dataclass
import numpy as np


@dataclass(frozen=True, eq=False)
class DType:
  """A scalar element type. `priority` orders types for promotion; `fmt` is the struct/numpy code.

  Each type is one object, the attribute of `dtypes` (a copy or an unpickled one is that object again), so types compare
  and hash by identity, in C: every node's hash-consing key hashes one, and `dtype == dtypes.x` is everywhere."""
  name: str
  itemsize: int
  priority: int
  fmt: str
  kind: str  # "b" bool, "i" signed int, "u" unsigned int, "f" float

  def __repr__(self) -> str: return f"dtypes.{self.name}"
  def __reduce__(self) -> tuple: return (getattr, (dtypes, self.name))
  @property
  def is_float(self) -> bool: return self.kind == "f"
  @property
  def is_int(self) -> bool: return self.kind in "iu"
  @property
  def is_unsigned(self) -> bool: return self.kind == "u"
  @functools.cached_property
  def np(self) -> np.dtype:  # (cached: every tensor made from an array asks; a frozen record keeps it in its __dict__)
    # numpy has no bfloat16: keep its bits in uint16 on the host
    return np.dtype(np.uint16) if self.name == "bfloat16" else np.dtype(self.fmt)


# a Python scalar; spelled here because inside `dtypes` the names int, float and bool are dtypes
PyScalar = int | float | bool


class dtypes:
  """The dtypes picograd knows, plus helpers to pick and promote them."""
  void = DType("void", 0, -1, "", "v")  # kernel-level nodes with no value (stores, loop ends)
  bool = DType("bool", 1, 0, "?", "b")
  uint8 = DType("uint8", 1, 1, "B", "u")
  int8 = DType("int8", 1, 2, "b", "i")
  int16 = DType("int16", 2, 3, "h", "i")
  uint16 = DType("uint16", 2, 4, "H", "u")
  int32 = DType("int32", 4, 5, "i", "i")
  uint32 = DType("uint32", 4, 6, "I", "u")
  int64 = DType("int64", 8, 7, "q", "i")
  uint64 = DType("uint64", 8, 8, "Q", "u")
  float16 = DType("float16", 2, 9, "e", "f")
  bfloat16 = DType("bfloat16", 2, 10, "e", "f")
  float32 = DType("float32", 4, 11, "f", "f")
  float64 = DType("float64", 8, 12, "d", "f")
  default_float = float32
  default_int = int32
  half = float16
  float = float32
  double = float64
  long = int64
  int = int32
  short = int16
  char = int8

  @staticmethod
  def all() -> list[DType]:
    return [dtypes.bool, dtypes.uint8, dtypes.int8, dtypes.int16, dtypes.uint16, dtypes.int32, dtypes.uint32, dtypes.int64,
            dtypes.uint64, dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64]

  @staticmethod
  def from_numpy(npdtype: np.dtype | type) -> DType:
    npdtype = np.dtype(npdtype)
    # (a dict: every tensor made from an array asks, and the walk over all dtypes cost ~5 us of a training step's batch)
    if (dt := _FROM_NUMPY.get(npdtype)) is not None: return dt
    raise TypeError(f"numpy dtype {npdtype} is not supported by picograd (supported: {[d.name for d in dtypes.all()]})")

  @staticmethod
  def from_any(x: "DType | str | np.dtype | type") -> DType:
    if isinstance(x, DType): return x
    if isinstance(x, str):
      if hasattr(dtypes, x) and isinstance(getattr(dtypes, x), DType): return getattr(dtypes, x)
      raise TypeError(f"unknown dtype name {x!r}")
    if x is float: return dtypes.default_float
    if x is int: return dtypes.default_int
    if x is bool: return dtypes.bool
    name = getattr(x, "__module__", "")
    if name.startswith("torch") or str(x).startswith("torch."): return dtypes.from_any(str(x).split(".")[-1])
    return dtypes.from_numpy(x)

  @staticmethod
  def of_python(x: object) -> DType:
    """The dtype of a Python scalar, as PyTorch infers it."""
    if isinstance(x, bool): return dtypes.bool
    if isinstance(x, int):  # int64 where int32 cannot hold it (PyTorch makes every int int64)
      if not -2**63 <= x < 2**63: raise ValueError(f"{x} does not fit in int64 (overflow)")
      return dtypes.default_int if -2**31 <= x < 2**31 else dtypes.int64
    if isinstance(x, float): return dtypes.default_float
    raise TypeError(f"cannot make a tensor from {type(x).__name__}")

  @staticmethod
  def min(dt: DType) -> PyScalar:
    if dt == dtypes.bool: return False
    if dt.is_int: return int(np.iinfo(dt.np).min)
    return -float("inf")

  @staticmethod
  def max(dt: DType) -> PyScalar:
    if dt == dtypes.bool: return True
    if dt.is_int: return int(np.iinfo(dt.np).max)
    return float("inf")


# numpy's dtypes by picograd's (bfloat16 has no numpy type: its arrays are uint16 bits)
_FROM_NUMPY = {np.dtype(dt.fmt): dt for dt in dtypes.all() if dt.name != "bfloat16"}


def _holds(big: DType, small: DType) -> bool:
  return dtypes.min(big) <= dtypes.min(small) and dtypes.max(big) >= dtypes.max(small)


def promote(a: DType, b: DType) -> DType:
  """The result type of a binary op on tensors of dtypes a and b (PyTorch's rules for tensor-tensor ops).

  Integers and bool promote to the first type of `_INT_ORDER` that holds both ranges: that is
  PyTorch's table where it has one (uint8 + int8 -> int16, bool + x -> x, int32 + int64 -> int64).
  PyTorch refuses to mix uint16/32/64 with other integers; picograd follows numpy there
  (uint16 + int8 -> int32, uint32 + int32 -> int64), except that uint64 and a signed type
  fit no integer type and raise, as in PyTorch.
  """
  if a == b: return a
  if a.is_float != b.is_float:  # a float beats any int or bool
    return a if a.is_float else b
  if a.is_float:
    if {a.name, b.name} == {"float16", "bfloat16"}: return dtypes.float32
    return a if a.priority > b.priority else b
  for dt in _INT_ORDER:
    if _holds(dt, a) and _holds(dt, b): return dt
  raise RuntimeError(f"promotion of {a.name} and {b.name} is not supported: no integer type holds both (cast one first)")


def result_type_with_scalar(t: DType, scalar: object) -> DType:
  """A Python scalar takes the tensor's dtype unless it is of a higher kind (float with an int tensor, etc.)."""
  if isinstance(scalar, bool): return t
  if isinstance(scalar, int): return t if t != dtypes.bool else dtypes.default_int
  if isinstance(scalar, float): return t if t.is_float else dtypes.default_float
  raise TypeError(f"unsupported scalar {scalar!r} of type {type(scalar).__name__}")


# the integer promotion order: each type's range is checked in turn, the first that holds both operands wins
_INT_ORDER = [dtypes.bool, dtypes.uint8, dtypes.int8, dtypes.int16, dtypes.uint16, dtypes.int32, dtypes.uint32, dtypes.int64, dtypes.uint64]


# ---------------------------------------------------------------- numeric conventions, one home for every backend

def c_div(a: int, b: int) -> int:
  """C's integer division, truncating toward zero (Python's // floors). The caller handles b == 0; the PYTHON device
  applies the same rule to whole arrays (runtime/interpreter.py:_c_div)."""
  q = abs(a) // abs(b)
  return q if (a >= 0) == (b >= 0) else -q


def c_mod(a: int, b: int) -> int:
  """C's remainder: the sign of the dividend, so a == b * c_div(a, b) + c_mod(a, b)."""
  return a - b * c_div(a, b)


def half_bits(value: float) -> int:
  """The float16 bit pattern of `value`, rounded to nearest even; too large a value becomes an infinity (struct refuses it)."""
  try:
    return struct.unpack("<H", struct.pack("<e", value))[0]
  except OverflowError:
    return 0xFC00 if value < 0 else 0x7C00


def round_bf16(x: object) -> np.ndarray:
  """float32 values rounded to the nearest bfloat16 (ties to even), kept in float32; inf and NaN pass unchanged.

  bfloat16 is the upper half of a float32: add half of the dropped half (plus one where the kept part is odd) and truncate.
  """
  f = np.asarray(x, np.float32)
  bits = f.view(np.uint32).astype(np.uint64)
  rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
  return np.where((bits >> 23) & 0xFF == 0xFF, f, rounded)
