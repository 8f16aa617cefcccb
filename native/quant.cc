// Block-quantized weights (src/quant/format.ts): quantizing a float weight, and the quantized
// linear layer. Every float step follows src/quant/reference.ts, so codes are identical and
// outputs agree to float32 rounding.
//
// The linear layer quantizes its input rows per block of 32 to int8 (scale max|x| / 127, round
// half to even), then:
//  * few rows (decoding, memory-bound): integer dot products straight from the packed codes,
//    32 per block (AVX2: vpmaddubsw + vpmaddwd; a portable loop elsewhere), scaled per block;
//  * many rows (vision tiles, prefill chunks: compute-bound):
//    - on x86 with AVX2: an integer GEMM (quant_gemm.inc): Q4_1 with vpmaddubsw, whose sums stay
//      in int16 for a whole block (about twice the float32 GEMM's rate), Q8_0 with vpmaddwd on
//      codes widened to int16;
//    - elsewhere: the quantized input and a chunk of weight rows are expanded to float32 and
//      multiplied by the float32 GEMM.
//    Both compute the same numbers (dx·qx times dw·qw) up to float32 rounding.
#include <atomic>
#include <string>
#include <vector>

#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"

namespace smolvlm {
namespace {

constexpr size_t QB = 32;  // values per block

// Rounds to the nearest integer, ties to even, for |v| < 2^22 (the CPU's default rounding, as the
// reference's roundHalfEven): adding 1.5 * 2^23 pushes the fraction out of the mantissa.
// (Without -ffast-math, which this project never uses, the compiler may not fold (v + c) - c.)
inline float round_even(float v) {
  constexpr float big = 12582912.0f;
  return (v + big) - big;
}

// Float32 -> IEEE half bits, round to nearest even (as dtype.ts f32ToF16).
uint16_t f32_to_f16(float value) {
  const uint32_t x = f32_to_bits(value);
  const uint32_t sign = (x >> 16) & 0x8000u;
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  const int exp = static_cast<int>((x >> 23) & 0xffu) - 112;
  uint32_t mant = x & 0x7fffffu;
  auto round_shift = [](uint32_t v, int shift) {
    const uint32_t kept = v >> shift, rest = v & ((1u << shift) - 1), half = 1u << (shift - 1);
    return rest > half || (rest == half && (kept & 1u)) ? kept + 1 : kept;
  };
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    return static_cast<uint16_t>(sign | round_shift(mant, 14 - exp));
  }
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(exp) << 10) + round_shift(mant, 13)));
}

// The smallest half >= v (v >= 0) and the largest half <= v, as reference.ts halfAtLeast/AtMost:
// scales round up and minimums down, so no value of a block is clipped.
uint16_t half_at_least(float v) {
  uint16_t h = f32_to_f16(v);
  if (f16_to_f32(h) < v) h++;
  return h;
}

uint16_t half_at_most(float v) {
  uint16_t h = f32_to_f16(v);
  if (f16_to_f32(h) > v) h = v > 0 ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>((h | 0x8000u) + 1);
  return h;
}

// ---- weight quantization -------------------------------------------------------------------

struct QuantizeJob {
  const void* w;
  int dtype;
  size_t cols;
  int scheme;
  void* q;
  uint16_t* scales;
  uint16_t* mins;
  bool overflow;
};

template <int DT>
void widen_row(const void* w, size_t row, size_t cols, float* out) {
  for (size_t i = 0; i < cols; i++) out[i] = widen1<DT>(w, row * cols + i);
}

void quantize_block_q8(const float* v, int8_t* q, uint16_t* scale, bool* overflow) {
  float amax = 0;
  for (size_t i = 0; i < QB; i++) amax = std::max(amax, std::fabs(v[i]));
  const uint16_t dBits = half_at_least(amax / 127.0f);
  if ((dBits & 0x7c00u) == 0x7c00u) *overflow = true;
  const float d = f16_to_f32(dBits);
  const float id = d == 0 ? 0.0f : 1.0f / d;
  for (size_t i = 0; i < QB; i++) q[i] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, round_even(v[i] * id))));
  *scale = dBits;
}

void quantize_block_q4(const float* v, uint8_t* q, uint16_t* scale, uint16_t* min, bool* overflow) {
  float lo = v[0], hi = v[0];
  for (size_t i = 1; i < QB; i++) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  const uint16_t mBits = half_at_most(lo);
  const float m = f16_to_f32(mBits);
  const uint16_t dBits = half_at_least((hi - m) / 15.0f);
  if ((mBits & 0x7c00u) == 0x7c00u || (dBits & 0x7c00u) == 0x7c00u) *overflow = true;
  const float d = f16_to_f32(dBits);
  const float id = d == 0 ? 0.0f : 1.0f / d;
  auto code = [&](float x) { return static_cast<uint8_t>(std::max(0.0f, std::min(15.0f, round_even((x - m) * id)))); };
  for (size_t j = 0; j < QB / 2; j++) q[j] = static_cast<uint8_t>(code(v[j]) | (code(v[j + QB / 2]) << 4));
  *scale = dBits;
  *min = mBits;
}

void quantize_row_task(void* ctx, size_t row) {
  QuantizeJob& j = *static_cast<QuantizeJob*>(ctx);
  static thread_local std::vector<float> buf;
  buf.resize(j.cols);
  if (j.dtype == kF32) widen_row<kF32>(j.w, row, j.cols, buf.data());
  else if (j.dtype == kBF16) widen_row<kBF16>(j.w, row, j.cols, buf.data());
  else widen_row<kF16>(j.w, row, j.cols, buf.data());
  const size_t blocks = j.cols / QB;
  bool overflow = false;
  for (size_t b = 0; b < blocks; b++) {
    const size_t s = row * blocks + b;
    if (j.scheme == 8) {
      quantize_block_q8(buf.data() + b * QB, static_cast<int8_t*>(j.q) + row * j.cols + b * QB, j.scales + s, &overflow);
    } else {
      quantize_block_q4(buf.data() + b * QB, static_cast<uint8_t*>(j.q) + (row * j.cols + b * QB) / 2, j.scales + s, j.mins + s, &overflow);
    }
  }
  if (overflow) j.overflow = true;  // benign race: any writer stores true
}

// ---- activation quantization ---------------------------------------------------------------

// Rows of x quantized per block: codes, scales and (for Q4_1's minimum term) scale * sum of codes.
struct QuantizedRows {
  std::vector<int8_t> q;
  std::vector<float> scale, scaledSum;
  // The Q4_1 AVX2 kernel's copy of q: blocks taken in pairs (2p, 2p + 1), each pair's 64 codes
  // ordered as the two blocks' first halves then their second halves (how one 32-byte load of
  // two packed Q4_1 blocks unpacks), an odd last block as it is; and per pair the scales
  // [dx(2p) x4, dx(2p+1) x4].
  std::vector<int8_t> qPairs;
  std::vector<float> scalePairs;
  // The one-row kernel's scales, per group of 4 pairs (8 blocks): the even blocks' dx then the odd
  // blocks' ([dx0 dx2 dx4 dx6 | dx1 dx3 dx5 dx7]), so that an in-lane shuffle spreads pair k's two
  // scales over the lanes that hold its two blocks.
  std::vector<float> scaleQuads;
  // The Q4_1x4 kernels' copy (pair_rows_x4): pairs as in qPairs with an odd last block paired with
  // zeros, each row np * 64 codes; per pair [dx(2p) x4 | dx(2p+1) x4] and the same of dx·Σqx.
  std::vector<int8_t> x4q;
  std::vector<float> x4dx, x4sx;
  // The many-row Q8_0 kernel's copy of q, widened to int16 (quant_gemm.inc).
  std::vector<int16_t> q16;
};

void pair_blocks(QuantizedRows& a, size_t M, size_t K) {
  const size_t nb = K / QB, np = nb / 2;
  a.qPairs.resize(M * K);
  a.scalePairs.resize(M * np * 8);
  for (size_t r = 0; r < M; r++) {
    const int8_t* src = a.q.data() + r * K;
    int8_t* dst = a.qPairs.data() + r * K;
    for (size_t p = 0; p < np; p++) {
      const int8_t* b0 = src + 2 * p * QB;
      const int8_t* b1 = b0 + QB;
      int8_t* d = dst + 2 * p * QB;
      std::memcpy(d, b0, 16);
      std::memcpy(d + 16, b1, 16);
      std::memcpy(d + 32, b0 + 16, 16);
      std::memcpy(d + 48, b1 + 16, 16);
      float* s = a.scalePairs.data() + (r * np + p) * 8;
      for (int i = 0; i < 4; i++) {
        s[i] = a.scale[r * nb + 2 * p];
        s[4 + i] = a.scale[r * nb + 2 * p + 1];
      }
    }
    if (nb % 2) std::memcpy(dst + (nb - 1) * QB, src + (nb - 1) * QB, QB);
  }
  const size_t nq = np / 4;
  a.scaleQuads.resize(M * nq * 8);
  for (size_t r = 0; r < M; r++) {
    for (size_t g = 0; g < nq; g++) {
      const float* d = a.scale.data() + r * nb + 8 * g;
      float* s = a.scaleQuads.data() + (r * nq + g) * 8;
      for (int i = 0; i < 4; i++) {
        s[i] = d[2 * i];
        s[4 + i] = d[2 * i + 1];
      }
    }
  }
}

void quantize_activation_block(const float* x, int8_t* q, float* scale, float* scaledSum) {
  float amax = 0;
  for (size_t i = 0; i < QB; i++) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d == 0 ? 0.0f : 1.0f / d;
  int sum = 0;
  for (size_t i = 0; i < QB; i++) {
    const int v = static_cast<int>(round_even(x[i] * id));
    q[i] = static_cast<int8_t>(v);
    sum += v;
  }
  *scale = d;
  *scaledSum = d * static_cast<float>(sum);
}

void quantize_activations(const float* x, size_t M, size_t K, QuantizedRows& out) {
  const size_t blocks = M * K / QB;
  out.q.resize(M * K);
  out.scale.resize(blocks);
  out.scaledSum.resize(blocks);
  for (size_t b = 0; b < blocks; b++) quantize_activation_block(x + b * QB, out.q.data() + b * QB, &out.scale[b], &out.scaledSum[b]);
}

// ---- Q4_1x4: Q4_1 weights interleaved for decoding ------------------------------------------------
//
// Canonical Q4_1 (format.ts) keeps a weight's codes, scales and minimums in three arrays, so a
// decode kernel that takes four output rows at a time reads four code streams and eight short
// table streams, and pays per output for a horizontal sum and the minimums' term. Repacked (once,
// at load), rows go in groups of 4 and blocks in pairs; each (group, pair) is one 160-byte unit:
//   codes  4 x 32 bytes: row j's blocks 2p and 2p + 1 as stored (16 packed bytes each)
//   scales 8 halves: block 2p of rows 0-3, then block 2p + 1 of rows 0-3
//   mins   8 halves, in the same order
// A thread then reads one sequential stream, and the 4 rows' integer dot products of a pair,
// reduced with two rounds of horizontal adds, land in the scales' lane order: one multiply-add per
// pair for all 4 rows. Rows past N (N % 4) and the block after an odd last one are zeros (scale 0,
// minimum 0: they add nothing).
constexpr size_t X4_ROWS = 4, X4_UNIT = 160;

size_t x4_pairs(size_t K) { return (K / QB + 1) / 2; }

struct PackX4Job {
  const uint8_t* q;
  const uint16_t* scales;
  const uint16_t* mins;
  size_t N, K;
  uint8_t* out;
};

void pack_x4_group(void* ctx, size_t g) {
  const PackX4Job& j = *static_cast<const PackX4Job*>(ctx);
  const size_t nb = j.K / QB, np = x4_pairs(j.K);
  uint8_t* unit = j.out + g * np * X4_UNIT;
  std::memset(unit, 0, np * X4_UNIT);
  for (size_t p = 0; p < np; p++, unit += X4_UNIT) {
    uint16_t s[8] = {}, m[8] = {};
    for (size_t r = 0; r < X4_ROWS && g * X4_ROWS + r < j.N; r++) {
      const size_t row = g * X4_ROWS + r;
      for (size_t h = 0; h < 2 && 2 * p + h < nb; h++) {
        const size_t b = 2 * p + h;
        std::memcpy(unit + 32 * r + 16 * h, j.q + (row * j.K + b * QB) / 2, QB / 2);
        s[4 * h + r] = j.scales[row * nb + b];
        m[4 * h + r] = j.mins[row * nb + b];
      }
    }
    std::memcpy(unit + 128, s, sizeof s);
    std::memcpy(unit + 144, m, sizeof m);
  }
}

// x's codes and scales as the Q4_1x4 kernels read them (QuantizedRows::x4q, x4dx, x4sx).
void pair_rows_x4(QuantizedRows& a, size_t M, size_t K) {
  const size_t nb = K / QB, np = x4_pairs(K);
  a.x4q.assign(M * np * 64, 0);
  a.x4dx.assign(M * np * 8, 0.0f);
  a.x4sx.assign(M * np * 8, 0.0f);
  for (size_t r = 0; r < M; r++) {
    for (size_t b = 0; b < nb; b++) {
      const size_t p = b / 2, h = b % 2, at = r * np + p;
      const int8_t* src = a.q.data() + r * K + b * QB;
      std::memcpy(a.x4q.data() + at * 64 + 16 * h, src, 16);
      std::memcpy(a.x4q.data() + at * 64 + 32 + 16 * h, src + 16, 16);
      for (size_t i = 0; i < 4; i++) {
        a.x4dx[at * 8 + 4 * h + i] = a.scale[r * nb + b];
        a.x4sx[at * 8 + 4 * h + i] = a.scaledSum[r * nb + b];
      }
    }
  }
}

// Where row n's block b of a quantized weight lives: its codes (Q8_0: 32 bytes; Q4_1: 16 bytes),
// scale and minimum, in any of the three layouts.
struct QuantSource {
  const uint8_t* wq;
  const uint16_t* scales;
  const uint16_t* mins;
  int scheme;  // 8, 4 or kQ4x4 (scales and mins inside the units)
  size_t K;

  const uint8_t* codes(size_t n, size_t b) const {
    if (scheme == 8) return wq + n * K + b * QB;
    if (scheme == 4) return wq + (n * K + b * QB) / 2;
    return unit(n, b) + 32 * (n % X4_ROWS) + 16 * (b % 2);
  }
  uint16_t scale(size_t n, size_t b) const { return scheme == kQ4x4 ? unit_half(n, b, 128) : scales[n * (K / QB) + b]; }
  uint16_t min(size_t n, size_t b) const { return scheme == kQ4x4 ? unit_half(n, b, 144) : mins[n * (K / QB) + b]; }

 private:
  const uint8_t* unit(size_t n, size_t b) const { return wq + ((n / X4_ROWS) * x4_pairs(K) + b / 2) * X4_UNIT; }
  uint16_t unit_half(size_t n, size_t b, size_t at) const {
    uint16_t h;
    std::memcpy(&h, unit(n, b) + at + 2 * (4 * (b % 2) + n % X4_ROWS), 2);
    return h;
  }
};

// ---- few rows: integer dot products ------------------------------------------------------------

struct QuantJob {
  const QuantizedRows* xq;
  size_t M, N, K;
  const void* wq;
  const uint16_t* scales;
  const uint16_t* mins;
  int scheme;
  const float* bias;
  float* y;
  size_t chunk;  // outputs per task (a multiple of 4)
};

using QuantTaskFn = void (*)(const QuantJob&, size_t);

// Σ over blocks of mw·(dx·Σqx): the Q4_1 minimum's share of one output, a short float dot product.
float min_term(const QuantJob& a, size_t r, size_t o) {
  const size_t nb = a.K / QB;
  const uint16_t* m = a.mins + o * nb;
  const float* s = a.xq->scaledSum.data() + r * nb;
  float acc = 0;
  for (size_t b = 0; b < nb; b++) acc += f16_to_f32(m[b]) * s[b];
  return acc;
}

namespace portable {

// One output against one row, block by block, in integers then scaled.
float dot_row(const QuantJob& a, size_t r, size_t o) {
  const size_t nb = a.K / QB;
  const int8_t* xq = a.xq->q.data() + r * a.K;
  const float* xd = a.xq->scale.data() + r * nb;
  float acc = 0;
  for (size_t b = 0; b < nb; b++) {
    int dot = 0;
    if (a.scheme == 8) {
      const int8_t* w = static_cast<const int8_t*>(a.wq) + o * a.K + b * QB;
      for (size_t i = 0; i < QB; i++) dot += w[i] * xq[b * QB + i];
    } else {
      const uint8_t* w = static_cast<const uint8_t*>(a.wq) + (o * a.K + b * QB) / 2;
      for (size_t j = 0; j < QB / 2; j++) dot += (w[j] & 15) * xq[b * QB + j] + (w[j] >> 4) * xq[b * QB + j + QB / 2];
    }
    acc += f16_to_f32(a.scales[o * nb + b]) * xd[b] * static_cast<float>(dot);
  }
  if (a.scheme == 4) acc += min_term(a, r, o);
  return acc;
}

void gemv_task(const QuantJob& a, size_t t) {
  const size_t o1 = std::min(a.N, (t + 1) * a.chunk);
  for (size_t o = t * a.chunk; o < o1; o++) {
    for (size_t r = 0; r < a.M; r++) a.y[r * a.N + o] = dot_row(a, r, o) + (a.bias ? a.bias[o] : 0.0f);
  }
}

// Q4_1x4: every row against the 4 outputs of each group of the chunk, in integers then scaled.
void gemv_x4_task(const QuantJob& a, size_t t) {
  const size_t np = x4_pairs(a.K), o1 = std::min(a.N, (t + 1) * a.chunk);
  const uint8_t* w = static_cast<const uint8_t*>(a.wq);
  for (size_t g = t * a.chunk / X4_ROWS; g * X4_ROWS < o1; g++) {
    for (size_t r = 0; r < a.M; r++) {
      float acc[X4_ROWS] = {};
      for (size_t p = 0; p < np; p++) {
        const uint8_t* u = w + (g * np + p) * X4_UNIT;
        const int8_t* x = a.xq->x4q.data() + (r * np + p) * 64;
        const float* dx = a.xq->x4dx.data() + (r * np + p) * 8;
        const float* sx = a.xq->x4sx.data() + (r * np + p) * 8;
        for (size_t j = 0; j < X4_ROWS; j++) {
          for (size_t h = 0; h < 2; h++) {
            int dot = 0;
            for (size_t i = 0; i < 16; i++) {
              const uint8_t c = u[32 * j + 16 * h + i];
              dot += (c & 15) * x[16 * h + i] + (c >> 4) * x[32 + 16 * h + i];
            }
            uint16_t sb, mb;
            std::memcpy(&sb, u + 128 + 2 * (4 * h + j), 2);
            std::memcpy(&mb, u + 144 + 2 * (4 * h + j), 2);
            acc[j] += f16_to_f32(sb) * dx[4 * h] * static_cast<float>(dot) + f16_to_f32(mb) * sx[4 * h];
          }
        }
      }
      for (size_t j = 0; j < X4_ROWS && g * X4_ROWS + j < a.N; j++) {
        const size_t o = g * X4_ROWS + j;
        a.y[r * a.N + o] = acc[j] + (a.bias ? a.bias[o] : 0.0f);
      }
    }
  }
}

}  // namespace portable

#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX2
namespace avx2 {

// vpmaddubsw (u8 x s8 -> pairs summed into int16) then vpmaddwd with ones (pairs into int32).
inline __m256i dot_u8s8(__m256i a, __m256i b) { return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)); }
inline __m256i dot2_u8s8(__m256i a1, __m256i b1, __m256i a2, __m256i b2) {
  return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a1, b1), _mm256_maddubs_epi16(a2, b2)), _mm256_set1_epi16(1));
}
// Products summed into int32 lanes on top of acc (the int8 GEMM's form; it keeps int16 sums here).
inline __m256i dot_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, dot_u8s8(a, b)); }
// int16 pairs multiplied and summed into int32 lanes on top of acc (the Q8_0 GEMM; vpdpwssd on VNNI CPUs).
inline __m256i dot16_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
constexpr bool kInt16Sums = true;
// How far ahead the one-row Q4_1x4 kernel prefetches its weight stream (simd.h prefetch_stream), in bytes: Zen 3 (AVX2).
constexpr size_t kLineAhead = 1024, kPageAhead = 0;
#include "quant_gemv_impl.inc"

// quantize_activation_block with AVX2: the same codes, scale and scaled sum.
void quantize_block(const float* x, int8_t* q, float* scale, float* scaledSum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (size_t i = 0; i < QB; i += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float d = _mm_cvtss_f32(m4) / 127.0f;
  const __m256 id = _mm256_set1_ps(d == 0 ? 0.0f : 1.0f / d);
  __m256i v[4];
  for (int i = 0; i < 4; i++) {
    v[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // The sum of the codes, and the codes as bytes: the packs interleave 4-value runs across the
  // two 128-bit lanes, and the permute puts them back in order.
  const __m256i s = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  *scale = d;
  *scaledSum = d * static_cast<float>(_mm_cvtsi128_si32(s4));
}

}  // namespace avx2
SMOLVLM_END_TARGET

// The same kernels with vpdpbusd (u8 x s8, four products summed into each int32 lane, no
// intermediate int16): on ymm registers, EVEX-encoded for AVX512-VNNI CPUs (AVX512VL) and
// VEX-encoded for AVX-VNNI ones (Alder Lake and later, Zen 5 and later).
SMOLVLM_BEGIN_AVX512VNNI
namespace avx512vnni {
inline __m256i dot_u8s8(__m256i a, __m256i b) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b); }
inline __m256i dot2_u8s8(__m256i a1, __m256i b1, __m256i a2, __m256i b2) {
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a1, b1), a2, b2);
}
inline __m256i dot_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpbusd_epi32(acc, a, b); }
// int16 pairs multiplied and summed into int32 lanes on top of acc (the Q8_0 GEMM).
inline __m256i dot16_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
constexpr bool kInt16Sums = false;
// How far ahead the one-row Q4_1x4 kernel prefetches its weight stream (simd.h prefetch_stream), in
// bytes: on Zen 5, lines 4 KiB ahead with page starts 8 KiB ahead 1.17-1.21x faster than lines 4
// KiB ahead alone (which had been 1.15x faster than 1 KiB), and 1.05-1.07x faster than lines 2 KiB
// ahead, the bf16 kernel's distance: q4 spends longer on each byte (bench/ab-addons.ts --dtype q4x4).
constexpr size_t kLineAhead = 4096, kPageAhead = 8192;
// The Q4_1x4 group kernel on zmm registers (its own, replacing quant_gemv_impl.inc's): rows j and
// j + 1 of a unit in one register (one load, one unpack, two vpdpbusd with x's pair broadcast to
// both halves), and no horizontal adds per pair. Each 128-bit lane of the integer sums holds 4
// partial sums of one (row, block); it is scaled as it stands by that block's dw·dx, spread over
// the lane by one permute, and the lanes are summed once per output at the end. From L2, one
// thread, 1.06-1.14x the ymm kernel with horizontal adds (scratch program, 500M shapes).
#define SMOLVLM_X4_GROUP 1
inline void gemv_x4_group(const QuantJob& a, size_t g);
#include "quant_gemv_impl.inc"
#undef SMOLVLM_X4_GROUP
inline void gemv_x4_group(const QuantJob& a, size_t g) {
  const size_t np = x4_pairs(a.K);
  const __m512i low = _mm512_set1_epi8(0x0f);
  // The unit's scales are [block 2p of rows 0-3 | block 2p + 1 of rows 0-3]; rows (0, 1) and
  // (2, 3) hold their lanes as [row j block 2p | row j block 2p + 1 | row j + 1 ... | ...].
  const __m512i rows01 = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5);
  const __m512i rows23 = _mm512_setr_epi32(2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7);
  for (size_t r = 0; r < a.M; r++) {
    const uint8_t* u = static_cast<const uint8_t*>(a.wq) + g * np * X4_UNIT;
    const int8_t* x = a.xq->x4q.data() + r * np * 64;
    const float* dx = a.xq->x4dx.data() + r * np * 8;
    const float* sx = a.xq->x4sx.data() + r * np * 8;
    __m512 acc01 = _mm512_setzero_ps(), acc23 = _mm512_setzero_ps();
    __m256 accMin = _mm256_setzero_ps();
    for (size_t p = 0; p < np; p++, u += X4_UNIT, x += 64) {
      if (r == 0) prefetch_stream<X4_UNIT, kLineAhead, kPageAhead>(u);  // later rows read from cache
      const __m512i xa = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
      const __m512i xb = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32)));
      const __m512i v01 = _mm512_loadu_si512(u), v23 = _mm512_loadu_si512(u + 64);
      const __m512i s01 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v01, low), xa),
                                              _mm512_and_si512(_mm512_srli_epi16(v01, 4), low), xb);
      const __m512i s23 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v23, low), xa),
                                              _mm512_and_si512(_mm512_srli_epi16(v23, 4), low), xb);
      const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 128))), _mm256_loadu_ps(dx + 8 * p));
      const __m512 scale16 = _mm512_castps256_ps512(scale);
      acc01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s01), _mm512_permutexvar_ps(rows01, scale16), acc01);
      acc23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s23), _mm512_permutexvar_ps(rows23, scale16), acc23);
      accMin = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 144))), _mm256_loadu_ps(sx + 8 * p), accMin);
    }
    float out[X4_ROWS];
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(accMin), _mm256_extractf128_ps(accMin, 1)));
    out[0] += hsum(_mm512_castps512_ps256(acc01));
    out[1] += hsum(_mm512_extractf32x8_ps(acc01, 1));
    out[2] += hsum(_mm512_castps512_ps256(acc23));
    out[3] += hsum(_mm512_extractf32x8_ps(acc23, 1));
    for (size_t j = 0; j < X4_ROWS && g * X4_ROWS + j < a.N; j++) {
      const size_t o = g * X4_ROWS + j;
      a.y[r * a.N + o] = out[j] + (a.bias ? a.bias[o] : 0.0f);
    }
  }
}
}  // namespace avx512vnni
SMOLVLM_END_TARGET

#ifdef SMOLVLM_HAVE_AVXVNNI
SMOLVLM_BEGIN_AVXVNNI
namespace avxvnni {
inline __m256i dot_u8s8(__m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b); }
inline __m256i dot2_u8s8(__m256i a1, __m256i b1, __m256i a2, __m256i b2) {
  return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a1, b1), a2, b2);
}
inline __m256i dot_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
inline __m256i dot16_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_avx_epi32(acc, a, b); }
constexpr bool kInt16Sums = false;
// How far ahead the one-row Q4_1x4 kernel prefetches its weight stream, in bytes: not measured on AVX-VNNI hardware.
constexpr size_t kLineAhead = 1024, kPageAhead = 0;
#include "quant_gemv_impl.inc"
}  // namespace avxvnni
SMOLVLM_END_TARGET
#endif

// vpdpbusd emulated exactly with AVX2 (even and odd bytes widened to 16 bits, multiplied, then
// adjacent pairs summed into int32): the VNNI builds' code path, runnable on any AVX2 CPU so that
// tests cover it where no VNNI hardware is at hand (setQuantDot("vnni-emulated")). Not used otherwise.
SMOLVLM_BEGIN_AVX2
namespace vnniemu {
inline __m256i dot_u8s8(__m256i a, __m256i b) {
  const __m256i aEven = _mm256_and_si256(a, _mm256_set1_epi16(0x00ff)), aOdd = _mm256_srli_epi16(a, 8);
  const __m256i bEven = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8), bOdd = _mm256_srai_epi16(b, 8);
  const __m256i ones = _mm256_set1_epi16(1);
  return _mm256_add_epi32(_mm256_madd_epi16(_mm256_mullo_epi16(aEven, bEven), ones), _mm256_madd_epi16(_mm256_mullo_epi16(aOdd, bOdd), ones));
}
inline __m256i dot2_u8s8(__m256i a1, __m256i b1, __m256i a2, __m256i b2) { return _mm256_add_epi32(dot_u8s8(a1, b1), dot_u8s8(a2, b2)); }
inline __m256i dot_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, dot_u8s8(a, b)); }
// int16 pairs multiplied and summed into int32 lanes on top of acc (the Q8_0 GEMM; vpdpwssd on VNNI CPUs).
inline __m256i dot16_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
constexpr bool kInt16Sums = false;
// How far ahead the one-row Q4_1x4 kernel prefetches its weight stream, in bytes: tests only.
constexpr size_t kLineAhead = 1024, kPageAhead = 0;
#include "quant_gemv_impl.inc"
}  // namespace vnniemu
SMOLVLM_END_TARGET
#endif

// Which integer dot product the x86 few-row kernels use: chosen from the CPU (QuantDot::Auto) or
// forced by tests (setQuantDot).
enum class QuantDot { Auto, Maddubs, VnniEmulated };
std::atomic<QuantDot> g_quantDot{QuantDot::Auto};

#ifdef SMOLVLM_X86
// The x86 kernels' integer dot product now: the setting, then the CPU (AVX512-VNNI at the avx512
// level, AVX-VNNI where built and present, else vpmaddubsw).
enum class DotKind { Maddubs, VnniEmulated, Avx512Vnni, AvxVnni };
DotKind x86_dot_kind() {
  const QuantDot dot = g_quantDot.load(std::memory_order_relaxed);
  const CpuFeatures& f = cpu_features();
  if (dot == QuantDot::VnniEmulated) return DotKind::VnniEmulated;
  if (dot == QuantDot::Auto && current_isa() == Isa::Avx512 && f.avx512vnni) return DotKind::Avx512Vnni;
#ifdef SMOLVLM_HAVE_AVXVNNI
  if (dot == QuantDot::Auto && f.avxvnni) return DotKind::AvxVnni;
#endif
  return DotKind::Maddubs;
}
#endif

// Several weights that multiply the same input (q/k/v, gate/up) in one fork-join: the input is
// quantized once and the threads share out the chunks of all of them.
struct MultiJob {
  QuantJob parts[kMaxQuantParts];
  size_t firstTask[kMaxQuantParts + 1];
  int count;
  QuantTaskFn run;
};

// ---- many rows without AVX2: float32 GEMM over expanded codes -----------------------------------

struct ExpandJob {
  QuantSource w;
  size_t row0;
  float* out;
};

// One weight row as float32: d·q (+ m), as reference.ts dequantizeRows.
void expand_row_task(void* ctx, size_t i) {
  const ExpandJob& e = *static_cast<const ExpandJob*>(ctx);
  const size_t row = e.row0 + i, nb = e.w.K / QB;
  float* out = e.out + i * e.w.K;
  for (size_t b = 0; b < nb; b++) {
    const float d = f16_to_f32(e.w.scale(row, b));
    if (e.w.scheme == 8) {
      const int8_t* q = reinterpret_cast<const int8_t*>(e.w.codes(row, b));
      for (size_t k = 0; k < QB; k++) out[b * QB + k] = d * static_cast<float>(q[k]);
    } else {
      const float m = f16_to_f32(e.w.min(row, b));
      const uint8_t* q = e.w.codes(row, b);
      for (size_t j = 0; j < QB / 2; j++) {
        out[b * QB + j] = d * static_cast<float>(q[j] & 15) + m;
        out[b * QB + j + QB / 2] = d * static_cast<float>(q[j] >> 4) + m;
      }
    }
  }
}

#ifdef SMOLVLM_ARM64
// The few-row kernel with the Armv8.2 dot-product instructions (sdot: 4 int8 products summed into
// each int32 lane), compiled for that extension and used only on CPUs that have it.
SMOLVLM_BEGIN_DOTPROD
namespace armdot {

// A block's integer dot product with x's codes, as 4 partial sums. Q4_1: the low nibbles are the
// block's first 16 codes and the high nibbles the last 16 (format.ts), both 0-15, so they can be
// taken as signed bytes.
template <int SCHEME>
inline int32x4_t block_dot(const QuantJob& a, size_t o, size_t b, const int8_t* x) {
  const int32x4_t zero = vdupq_n_s32(0);
  if constexpr (SCHEME == 8) {
    const int8_t* w = static_cast<const int8_t*>(a.wq) + o * a.K + b * QB;
    return vdotq_s32(vdotq_s32(zero, vld1q_s8(w), vld1q_s8(x)), vld1q_s8(w + 16), vld1q_s8(x + 16));
  } else {
    const uint8x16_t p = vld1q_u8(static_cast<const uint8_t*>(a.wq) + (o * a.K + b * QB) / 2);
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(p, vdupq_n_u8(15)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(p, 4));
    return vdotq_s32(vdotq_s32(zero, lo, vld1q_s8(x)), hi, vld1q_s8(x + 16));
  }
}

// Four half floats from p as floats.
inline float32x4_t halves4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// min_term, four blocks at a time.
inline float min_term_dot(const QuantJob& a, size_t r, size_t o) {
  const size_t nb = a.K / QB;
  const uint16_t* m = a.mins + o * nb;
  const float* s = a.xq->scaledSum.data() + r * nb;
  float32x4_t acc = vdupq_n_f32(0.0f);
  size_t b = 0;
  for (; b + 4 <= nb; b += 4) acc = vfmaq_f32(acc, halves4(m + b), vld1q_f32(s + b));
  float v = vaddvq_f32(acc);
  for (; b < nb; b++) v += f16_to_f32(m[b]) * s[b];
  return v;
}

// One output against every row: four blocks per step, their sums reduced pairwise into one vector
// and scaled by the four blocks' dw·dx at once; leftover blocks one by one.
template <int SCHEME>
void gemv_output(const QuantJob& a, size_t o) {
  const size_t K = a.K, nb = K / QB;
  const uint16_t* dw = a.scales + o * nb;
  for (size_t r = 0; r < a.M; r++) {
    const int8_t* x = a.xq->q.data() + r * K;
    const float* dx = a.xq->scale.data() + r * nb;
    float32x4_t acc = vdupq_n_f32(0.0f);
    size_t b = 0;
    for (; b + 4 <= nb; b += 4) {
      const int32x4_t s01 = vpaddq_s32(block_dot<SCHEME>(a, o, b, x + b * QB), block_dot<SCHEME>(a, o, b + 1, x + (b + 1) * QB));
      const int32x4_t s23 = vpaddq_s32(block_dot<SCHEME>(a, o, b + 2, x + (b + 2) * QB), block_dot<SCHEME>(a, o, b + 3, x + (b + 3) * QB));
      acc = vfmaq_f32(acc, vcvtq_f32_s32(vpaddq_s32(s01, s23)), vmulq_f32(halves4(dw + b), vld1q_f32(dx + b)));
    }
    float v = vaddvq_f32(acc);
    for (; b < nb; b++) v += f16_to_f32(dw[b]) * dx[b] * static_cast<float>(vaddvq_s32(block_dot<SCHEME>(a, o, b, x + b * QB)));
    if constexpr (SCHEME == 4) v += min_term_dot(a, r, o);
    a.y[r * a.N + o] = v + (a.bias ? a.bias[o] : 0.0f);
  }
}

template <int SCHEME>
void gemv_task(const QuantJob& a, size_t t) {
  const size_t o1 = std::min(a.N, (t + 1) * a.chunk);
  for (size_t o = t * a.chunk; o < o1; o++) gemv_output<SCHEME>(a, o);
}

}  // namespace armdot
SMOLVLM_END_TARGET

// Whether this CPU takes the dot-product kernel (the neon level on a CPU with FEAT_DotProd).
bool use_dotprod() { return current_isa() == Isa::Neon && cpu_features().dotprod; }
#endif

// Whether this CPU takes the AVX2 code of this file (AVX-512 CPUs run it too).
bool use_avx2() {
#ifdef SMOLVLM_X86
  return current_isa() == Isa::Avx2 || current_isa() == Isa::Avx512;
#else
  return false;
#endif
}

// The input rows as the integer path sees them, dx·qx, in float32 (M x K into xr).
void round_trip_rows(const float* x, size_t M, size_t K, std::vector<float>& xr) {
  xr.resize(M * K);
  struct RoundRows {
    const float* x;
    float* out;
    size_t K;
  } rr{x, xr.data(), K};
  auto round_row = [](void* c, size_t r) {
    const RoundRows& j = *static_cast<const RoundRows*>(c);
    int8_t q[QB];
    for (size_t b = 0; b < j.K / QB; b++) {
      float d, s;
      const size_t off = r * j.K + b * QB;
      quantize_activation_block(j.x + off, q, &d, &s);
      for (size_t i = 0; i < QB; i++) j.out[off + i] = d * static_cast<float>(q[i]);
    }
  };
  parallel_for(M, round_row, &rr);
}

// y = xr · Wᵀ (+ bias) for round-tripped input rows xr: weight rows in chunks of about 16 MiB of
// float32 (at least 128 rows: wide enough for the GEMM to tile well), each expanded once and
// multiplied by every input row.
void linear_quant_gemm(const float* xr, size_t M, const QuantJob& a) {
  const size_t K = a.K, N = a.N;
  const size_t chunk = std::min(N, std::max<size_t>(128, (16u << 20) / (4 * K) / 32 * 32));
  std::vector<float> wf(chunk * K);
  for (size_t n0 = 0; n0 < N; n0 += chunk) {
    const size_t nc = std::min(chunk, N - n0);
    ExpandJob e{{static_cast<const uint8_t*>(a.wq), a.scales, a.mins, a.scheme, K}, n0, wf.data()};
    parallel_for(nc, expand_row_task, &e);
    linear_f32_strided(xr, M, wf.data(), nc, K, a.bias ? a.bias + n0 : nullptr, a.y + n0, N);
  }
}

#ifdef SMOLVLM_X86
// x quantized per block for the many-row path on x86 with AVX2, rows in parallel (the same numbers
// as quantize_activations); with wide, also the codes as int16 (QuantizedRows::q16).
void quantize_activations_parallel(const float* x, size_t M, size_t K, QuantizedRows& out, bool wide) {
  out.q.resize(M * K);
  out.scale.resize(M * K / QB);
  out.scaledSum.resize(M * K / QB);
  out.q16.resize(wide ? M * K : 0);
  struct Rows {
    const float* x;
    QuantizedRows* out;
    size_t K;
    bool wide;
  } rows{x, &out, K, wide};
  auto row = [](void* c, size_t r) {
    const Rows& j = *static_cast<const Rows*>(c);
    for (size_t b = r * j.K / QB; b < (r + 1) * j.K / QB; b++) {
      int8_t* q = j.out->q.data() + b * QB;
      avx2::quantize_block(j.x + b * QB, q, &j.out->scale[b], &j.out->scaledSum[b]);
      if (j.wide) std::copy(q, q + QB, j.out->q16.data() + b * QB);
    }
  };
  parallel_for(M, row, &rows);
}
#endif

// The few-row path's input quantized per block: with the AVX2 block code where the CPU has it, the
// same codes as the portable loop, 3.6-3.9x faster (0.24 against 0.94 us for a 960-wide row, paid by
// every decoding linear, about 130 calls per token).
void quantize_few_rows(const float* x, size_t M, size_t K, QuantizedRows& out) {
#ifdef SMOLVLM_X86
  if (use_avx2()) return quantize_activations_parallel(x, M, K, out, false);
#endif
  quantize_activations(x, M, K, out);
}

#include "quant_gemm.inc"

}  // namespace

size_t q4x4_bytes(size_t N, size_t K) { return (N + X4_ROWS - 1) / X4_ROWS * x4_pairs(K) * X4_UNIT; }

void pack_q4x4(const uint8_t* q, const uint16_t* scales, const uint16_t* mins, size_t N, size_t K, uint8_t* out) {
  PackX4Job j{q, scales, mins, N, K, out};
  parallel_for((N + X4_ROWS - 1) / X4_ROWS, pack_x4_group, &j);
}

bool q4x4_preferred() { return use_avx2(); }

bool set_quant_dot(const char* name) {
  const std::string n = name;
  if (n == "auto") {
    g_quantDot = QuantDot::Auto;
  } else if (n == "maddubs") {
    g_quantDot = QuantDot::Maddubs;
  } else if (n == "vnni-emulated") {
    g_quantDot = QuantDot::VnniEmulated;
  } else {
    return false;
  }
  return true;
}

bool quantize_weights(const void* w, int dtype, size_t rows, size_t cols, int scheme, void* q, uint16_t* scales, uint16_t* mins) {
  QuantizeJob j{w, dtype, cols, scheme, q, scales, mins, false};
  parallel_for(rows, quantize_row_task, &j);
  return !j.overflow;
}

// Bytes of one weight row of a scheme, codes and tables (for gemv_chunk_outputs).
size_t quant_row_bytes(int scheme, size_t K) {
  if (scheme == kQ4x4) return x4_pairs(K) * X4_UNIT / X4_ROWS;
  return scheme == 8 ? K + K / QB * 2 : K / 2 + K / QB * 4;
}

void linear_quant_many(const float* x, size_t M, size_t K, int scheme, const QuantLinear* parts, int count) {
  if (M == 0 || count <= 0) return;
  // Up to 16 rows the few-row kernels win: the GEMM repacks the whole weight per call, which
  // 12 to 18 rows pay back (BENCHMARKS.md section 12).
  static const size_t gemvMax = gemv_max_rows_setting(16);
  auto job = [&](const QuantLinear& p) { return QuantJob{nullptr, M, p.N, K, p.wq, p.scales, p.mins, scheme, p.bias, p.y, 0}; };
  if (M > gemvMax) {
#ifdef SMOLVLM_X86
    if (use_avx2()) {
      QuantizedRows xq;  // not kept: a vision batch's codes are megabytes
      quantize_activations_parallel(x, M, K, xq, scheme == 8);
      for (int i = 0; i < count; i++) {
        if (parts[i].N) quant_gemm(xq, M, K, scheme, parts[i]);
      }
      return;
    }
#endif
    std::vector<float> xr;  // the input is round-tripped once for all the weights
    round_trip_rows(x, M, K, xr);
    for (int i = 0; i < count; i++) {
      if (parts[i].N) linear_quant_gemm(xr.data(), M, job(parts[i]));
    }
    return;
  }
  static thread_local QuantizedRows xq;
  quantize_few_rows(x, M, K, xq);
  MultiJob m{};
  m.count = count;
  m.firstTask[0] = 0;
  for (int i = 0; i < count; i++) {
    QuantJob& a = m.parts[i] = job(parts[i]);
    a.xq = &xq;
    a.chunk = gemv_chunk_outputs(quant_row_bytes(scheme, K));
    m.firstTask[i + 1] = m.firstTask[i] + (a.N + a.chunk - 1) / a.chunk;
  }
  if (scheme == kQ4x4) pair_rows_x4(xq, M, K);
  m.run = scheme == kQ4x4 ? portable::gemv_x4_task : portable::gemv_task;
#ifdef SMOLVLM_ARM64
  if (use_dotprod() && scheme != kQ4x4) m.run = scheme == 8 ? armdot::gemv_task<8> : armdot::gemv_task<4>;
#endif
#ifdef SMOLVLM_X86
  if (use_avx2()) {
    if (scheme == 4) pair_blocks(xq, M, K);
    switch (x86_dot_kind()) {
      case DotKind::VnniEmulated: m.run = vnniemu::task_for(scheme); break;
      case DotKind::Avx512Vnni: m.run = avx512vnni::task_for(scheme); break;
#ifdef SMOLVLM_HAVE_AVXVNNI
      case DotKind::AvxVnni: m.run = avxvnni::task_for(scheme); break;
#endif
      default: m.run = avx2::task_for(scheme); break;
    }
  }
#endif
  // All the parts' chunks in order, one range per thread.
  parallel_part_chunks(m.firstTask, count, [&](int i, size_t c) { m.run(m.parts[i], c); });
}

}  // namespace smolvlm
