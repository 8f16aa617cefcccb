// The kernels behind the addon, as plain C++ (no N-API): each dispatches at run time to the
// implementation for current_isa(). Semantics follow src/backend/ts-kernels.ts.
#pragma once
#include <cstddef>
#include <cstdint>

namespace smolvlm {

enum class LinearMode { F32 = 0, Bf16 = 1 };

// y[M][N] = x[M][K] · w[N][K]ᵀ (+ bias[N]); w is float32, bf16 or f16 (WeightType in simd.h).
// Bf16 mode: activations are rounded to bf16 and, on CPUs with AVX512_BF16, multiplied with
// vdpbf16ps (one row, as in a decode step, and above the few-row matrix-vector threshold; 2 to
// GEMV_MAX_ROWS rows take the float32 kernel on the rounded activations). It applies to bf16
// weights only: float32 and f16 weights always take the float32 path.
void linear(const float* x, size_t M, const void* w, int dtype, size_t N, size_t K, const float* bias, float* y, LinearMode mode);
// One weight of linear_many: y[M][N] = x[M][K] · wᵀ (+ bias), w of WeightType dtype.
struct FloatLinear {
  const void* w;
  int dtype;
  size_t N;
  const float* bias;
  float* y;
};
constexpr int kMaxLinearParts = 4;
// linear for 1 to kMaxLinearParts weights reading the same x (q, k and v; gate and up), with the
// same numbers as one linear per weight. On the few-row path (decoding) weights of one dtype share
// one parallel pass over all their chunks: one fork-join instead of one per weight, and each
// thread's stream runs on from one weight into the next.
void linear_many(const float* x, size_t M, size_t K, const FloatLinear* parts, int count, LinearMode mode);
// linear with float32 weights into a column block of a wider output: row r of y starts at y + r * ldy.
void linear_f32_strided(const float* x, size_t M, const float* w, size_t N, size_t K, const float* bias, float* y, size_t ldy);
// True when bf16 mode runs on vdpbf16ps on this CPU (at the current ISA level).
bool linear_bf16_native();

// Block quantization (src/quant/format.ts; scheme 8 = Q8_0 int8 codes, 4 = Q4_1 packed nibbles
// plus minimums; half-float scales per block of 32 along K). quantize_weights fills q, scales
// (and mins for Q4_1) from a [rows][cols] F32/BF16/F16 weight; false if a scale overflows a half.
bool quantize_weights(const void* w, int dtype, size_t rows, size_t cols, int scheme, void* q, uint16_t* scales, uint16_t* mins);
// One quantized linear of linear_quant_many: y[M][N] = quantize_int8(x[M][K]) · Wᵀ (+ bias).
struct QuantLinear {
  const void* wq;
  const uint16_t* scales;
  const uint16_t* mins;  // Q4_1 only
  size_t N;
  const float* bias;
  float* y;
};
constexpr int kMaxQuantParts = 4;
// Q4_1 weights repacked for decoding ("Q4_1x4", quant.cc): q4x4_bytes(N, K) bytes, filled by
// pack_q4x4 from a canonical Q4_1 weight's codes, scales and minimums. linear_quant_many takes them
// as scheme kQ4x4, with QuantLinear::wq the packed bytes and scales and mins null. q4x4_preferred:
// whether decoding reads them faster than the canonical layout here (x86 with AVX2 or better;
// elsewhere a portable loop runs them, correct but slower).
constexpr int kQ4x4 = 5;
size_t q4x4_bytes(size_t N, size_t K);
void pack_q4x4(const uint8_t* q, const uint16_t* scales, const uint16_t* mins, size_t N, size_t K, uint8_t* out);
bool q4x4_preferred();
// Up to kMaxQuantParts quantized linears of one scheme that read the same x (K % 32 == 0): x is
// quantized once and all of them run in one fork-join.
void linear_quant_many(const float* x, size_t M, size_t K, int scheme, const QuantLinear* parts, int count);
// The integer dot product of the x86 few-row quantized kernels: "auto" (vpdpbusd where the CPU has
// VNNI, else vpmaddubsw), "maddubs", or "vnni-emulated" (the VNNI kernels' code with vpdpbusd
// emulated in AVX2, for tests on CPUs without VNNI). False for an unknown name.
bool set_quant_dot(const char* name);

// The two passes of an 8-bit RGB Lanczos resize (resample.cc; image/resize.ts is the reference).
// Output index i reads bounds[2i + 1] input pixels (rows) from bounds[2i] with the fixed-point
// weights kk[i * ksize ..], precision fraction bits (1..30). The caller checks that every range
// lies inside the input: horizontal reads rows [y0, y1) of a inWidth-wide image, vertical reads
// rows bounds[2i] - shift of src.
void resample_horizontal(const uint8_t* src, size_t inWidth, size_t y0, size_t y1, size_t outWidth, const int32_t* bounds, const int32_t* kk,
                         size_t ksize, int precision, uint8_t* out);
void resample_vertical(const uint8_t* src, size_t width, size_t outHeight, const int32_t* bounds, const int32_t* kk, size_t ksize, int precision,
                       size_t shift, uint8_t* out);

void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps, float* y);
void layer_norm(const float* x, size_t rows, size_t dim, const float* weight, const float* bias, float eps, float* y);
void rope(float* x, size_t rows, size_t heads, size_t head_dim, const float* cos, const float* sin);
void silu_mul(const float* gate, const float* up, float* y, size_t n);
void gelu(float* x, size_t n, bool approximate);
void add_inplace(float* a, const float* b, size_t n);
// rows x cols values of src (row stride srcStride) rounded to bf16 bits (nearest even, NaN to the
// quiet NaN) into consecutive rows of dst: the bf16 KV cache's writes (dtype.ts roundRowsToBf16).
void round_rows_to_bf16_bits(const float* src, size_t srcStride, size_t rows, size_t cols, uint16_t* dst);

struct AttentionArgs {
  const float* q;  // [seqQ][numHeads * headDim]
  const void* k;   // [>= seqK][numKvHeads * headDim], float32 or bf16 (kvDtype)
  const void* v;
  float* out;      // [seqQ][numHeads * headDim]
  size_t seqQ, seqK, numHeads, numKvHeads, headDim;
  float scale;
  long long causalOffset;  // < 0: no mask
  int kvDtype;             // kF32 or kBF16 (a bf16 KV cache)
  // Element strides of k and v: position t, KV head h starts at t * kvRowStride + h * kvHeadStride.
  // 0 means the position-major default: kvRowStride = numKvHeads * headDim, kvHeadStride = headDim.
  // A head-major cache ([head][capacity][headDim]) passes headDim and capacity * headDim.
  size_t kvRowStride = 0, kvHeadStride = 0;
  // bf16 mode: where bf16 mode's linears run on vdpbf16ps, so do attention's two products for more
  // than 2 queries, and for 1 or 2 (decoding) over a bf16 cache with headDim a multiple of 32
  // (queries, keys and softmax numerators rounded to bf16; float32 sums). Elsewhere, and when
  // false, float32 products.
  bool bf16 = false;
};
void attention(const AttentionArgs& a);

}  // namespace smolvlm
