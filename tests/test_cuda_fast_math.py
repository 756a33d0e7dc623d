"""The attention plans' fast-math rewrites (codegen/cuda/fast_math.py): each rule on small graphs, the integer one checked by
evaluating both sides, and the approximate forms in the rendered C."""
import itertools, math
from picograd.dtype import dtypes
from picograd.ir.ops import UOp, Ops, graph_rewrite, toposort
from picograd.ir.symbolic import symbolic
from picograd.codegen.cuda.fast_math import exact, fast_terms, unrounded
from picograd.codegen.cuda.ops import APPROX, render_alu

F32, BF16, I32 = dtypes.float32, dtypes.bfloat16, dtypes.int32
LOG2E, LN2 = 1 / math.log(2), math.log(2)


def var(name: str, dtype=F32) -> UOp: return UOp(Ops.PARAM, dtype, (), (name, 1))


def c(v: float, dtype=F32) -> UOp: return UOp.const(dtype, v)


def rewrite(u: UOp, rules=fast_terms) -> UOp: return graph_rewrite(u, symbolic + rules)


def test_transcendentals_take_their_approximate_forms_in_float32_terms_only():
  x, y = var("x"), var("y")
  for u in (UOp(Ops.EXP2, F32, (x,)), UOp(Ops.RECIPROCAL, F32, (x,))):
    assert rewrite(u).arg == APPROX and rewrite(u, exact).arg is None
  assert rewrite(UOp(Ops.EXP2, dtypes.float64, (var("d", dtypes.float64),))).arg is None
  assert rewrite(x.alu(Ops.MAX, y)).arg is None  # a max in a term keeps NaN (only the flash plan's row max is fmaxf)
  assert render_alu(Ops.EXP2, F32, ["v"], F32, approx=True) == "pg_ex2_approx(v)"
  assert render_alu(Ops.RECIPROCAL, F32, ["v"], F32, approx=True) == "pg_rcp_approx(v)"
  assert render_alu(Ops.EXP2, F32, ["v"], F32) == "exp2f(v)"


def test_constants_combine_and_the_exp_gradient_loses_ln2_times_log2e():
  p, e = var("p"), var("e")
  assert rewrite((p * c(0.125)) * c(LOG2E)) is p * c(0.125 * LOG2E)
  assert rewrite((p * (e * c(LN2))) * c(LOG2E)) is p * e  # ln 2 * log2 e rounds to 1 in float32


def test_a_sum_times_a_constant_distributes_into_one_ffma():
  x, m = var("x"), var("m")
  out = rewrite((x + -m) * c(LOG2E))
  assert out.op is Ops.ADD and {s.op for s in out.src} == {Ops.MUL}


def test_widened_16_bit_selects_and_power_of_two_products_are_exact():
  s, g = var("s", BF16), var("g", dtypes.bool)
  score = g.where(s * c(0.125, BF16), c(-math.inf, BF16)).cast(F32)
  out = rewrite(score, exact)
  assert out.op is Ops.WHERE and out.dtype == F32 and out.src[2].op is Ops.CONST and out.src[2].arg == -math.inf
  assert out.src[1] is s.cast(F32) * c(0.125)
  # the recomputed plan's term: the scale then joins log2 e inside the select
  assert rewrite(score * c(LOG2E)).src[1] is s.cast(F32) * c(0.125 * LOG2E)
  # a float16 product can overflow or round where float32's would not: left as it is
  h = var("h", dtypes.float16)
  assert rewrite((h * c(2.0, dtypes.float16)).cast(F32), exact).src[0].op is Ops.MUL


def test_a_rounding_the_pack_repeats_is_dropped():
  x, g = var("x"), var("g", dtypes.bool)
  packed = g.where(x.cast(BF16).cast(F32) * c(0.125), c(0.0))
  assert unrounded(packed, BF16) is g.where(x * c(0.125), c(0.0))
  kept = g.where(x.cast(BF16).cast(F32) * c(0.3), c(0.0))  # not a power of two: the product rounds differently
  assert unrounded(kept, BF16) is kept


def _evaluate(u: UOp, env: dict[UOp, int]) -> int | bool:
  vals: dict[UOp, int | bool] = {}
  for n in toposort([u]):
    if n.op is Ops.CONST: vals[n] = n.arg
    elif n in env: vals[n] = env[n]
    elif n.op is Ops.ADD: vals[n] = vals[n.src[0]] + vals[n.src[1]]
    elif n.op is Ops.MUL: vals[n] = vals[n.src[0]] * vals[n.src[1]]
    elif n.op is Ops.NEG: vals[n] = -vals[n.src[0]]
    elif n.op is Ops.CAST: vals[n] = vals[n.src[0]]
    elif n.op is Ops.CMPLT: vals[n] = vals[n.src[0]] < vals[n.src[1]]
    else: raise AssertionError(n.op)
  return vals[u]


def test_position_comparisons_move_the_variables_to_one_side():
  """i < (j * 64 + t * 2 + 9) as i - j * 64 - t * 2 < 9, through an int64 round trip, equal on every value."""
  i, j, t = (UOp(Ops.RANGE, I32, (), (n, size, "global")) for n, size in ((0, 200), (1, 4), (2, 4)))
  key = (j * c(64, I32) + t * c(2, I32) + c(9, I32)).cast(dtypes.int64).cast(I32)
  out = rewrite(i.alu(Ops.CMPLT, key), exact)
  assert out.op is Ops.CMPLT and out.src[1].op is Ops.CONST and out.src[1].arg == 9
  for iv, jv, tv in itertools.product(range(0, 200, 7), range(4), range(4)):
    env = {i: iv, j: jv, t: tv}
    assert _evaluate(out, env) == (iv < jv * 64 + tv * 2 + 9)


def test_comparisons_that_could_overflow_are_left_alone():
  a, b = (UOp(Ops.PARAM, I32, (), (n, 1)) for n in ("a", "b"))  # unknown ranges: a - b may overflow int32
  u = a.alu(Ops.CMPLT, b + c(1, I32))
  assert rewrite(u, exact) is u

