"""The C every CUDA kernel starts with: the pg_* device helpers (NaN-propagating max, saturating casts, runtime checks,
warp and block reductions) and, for kernels with float16/bfloat16 values, the half-precision headers."""

PRELUDE = """#define PG_INLINE __device__ __forceinline__
template <class T> PG_INLINE T pg_max(T a, T b) { return (a > b || a != a) ? a : b; }  // NaN wins, like torch.maximum
// ptxas (CUDA 13.0, sm_90) folds a negation into a 3-input integer max (VIMNMX3) and drops it, so (-x).max() of int32
// came out wrong: a signed max of int and narrower (promoted to int) is written without a min/max instruction to fuse into
PG_INLINE int pg_max(int a, int b) { return a ^ ((a ^ b) & -(int)(a < b)); }
PG_INLINE short pg_max(short a, short b) { return (short)pg_max((int)a, (int)b); }
PG_INLINE signed char pg_max(signed char a, signed char b) { return (signed char)pg_max((int)a, (int)b); }
// float -> integer saturates and NaN gives 0, the rule of every picograd device (a C cast out of range is undefined)
template <class T, class F> PG_INLINE T pg_float_to_int(F x, T lo, T hi) { return x != x ? (T)0 : x <= (F)lo ? lo : x >= (F)hi ? hi : (T)x; }
// a failed runtime check sets its bit in the kernel's error word (the last argument of kernels with checks)
template <class T> PG_INLINE T pg_check(T v, bool bad, long long bit, unsigned long long* err) {
  if (bad) atomicOr(err, (unsigned long long)bit);
  return v;
}
// the approximate float32 forms (MUFU.EX2 / MUFU.RCP, subnormals flushed) the attention plans ask for (fast_math.py)
PG_INLINE float pg_ex2_approx(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
PG_INLINE float pg_rcp_approx(float x) { float y; asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
template <class To, class From> PG_INLINE To pg_bitcast(From x) { To y; memcpy(&y, &x, sizeof(To)); return y; }  // NVRTC rejects __builtin_memcpy
template <class T> PG_INLINE T pg_shfl_xor(T v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
PG_INLINE bool pg_shfl_xor(bool v, int o) { return __shfl_xor_sync(0xffffffffu, (int)v, o) != 0; }
PG_INLINE unsigned char pg_shfl_xor(unsigned char v, int o) { return (unsigned char)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE signed char pg_shfl_xor(signed char v, int o) { return (signed char)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE short pg_shfl_xor(short v, int o) { return (short)__shfl_xor_sync(0xffffffffu, (int)v, o); }
PG_INLINE unsigned short pg_shfl_xor(unsigned short v, int o) { return (unsigned short)__shfl_xor_sync(0xffffffffu, (int)v, o); }
struct PgAdd { template <class T> PG_INLINE T operator()(T a, T b) const { return a + b; } };
struct PgMax { template <class T> PG_INLINE T operator()(T a, T b) const { return pg_max(a, b); } };
// every lane of the warp gets the combined value
template <class T, class Op> PG_INLINE T pg_warp_reduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, pg_shfl_xor(v, o));
  return v;
}
// every thread of the block gets the combined value; `smem` holds one slot per warp
template <class T, class Op> PG_INLINE T pg_block_reduce(T v, Op op, T* smem) {
  v = pg_warp_reduce(v, op);
  const int nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();  // the slots may still be read by an earlier reduction
  if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = v;
  __syncthreads();
  v = smem[0];
  for (int w = 1; w < nwarps; w++) v = op(v, smem[w]);
  return v;
}
"""
HALF_PRELUDE = """#include <cuda_fp16.h>
#include <cuda_bf16.h>
PG_INLINE float pg_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
PG_INLINE bool operator!=(__half a, int b) { return __half2float(a) != (float)b; }
// four 16-bit lanes as one 8-byte store (rounded to nearest even, as a store of each would be)
PG_INLINE uint2 pg_pack4(float a, float b, float c, float d) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  return make_uint2(pg_bitcast<unsigned>(lo), pg_bitcast<unsigned>(hi));
}
PG_INLINE uint2 pg_pack4(__half a, __half b, __half c, __half d) {
  return make_uint2(pg_bitcast<unsigned>(__halves2half2(a, b)), pg_bitcast<unsigned>(__halves2half2(c, d)));
}
// eight as one 16-byte store
template <class T> PG_INLINE uint4 pg_pack8(T a, T b, T c, T d, T e, T f, T g, T h) {
  const uint2 lo = pg_pack4(a, b, c, d), hi = pg_pack4(e, f, g, h);
  return make_uint4(lo.x, lo.y, hi.x, hi.y);
}
"""

# a TMA tensor map as a kernel parameter (CUtensorMap's size and alignment; its bits are the driver's, encoded at launch)
TENSOR_MAP_PRELUDE = """struct __align__(64) pg_tensor_map { unsigned long long bits[16]; };
"""
