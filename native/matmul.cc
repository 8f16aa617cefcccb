// linear: the per-ISA float32 GEMM/GEMV (matmul_impl.inc) and, for CPUs with AVX512_BF16, a
// bf16 x bf16 -> f32 GEMM on vdpbf16ps.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"

namespace smolvlm {

#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX512
namespace avx512 {
namespace {
#include "simd_avx512.inc"
#include "microkernel.inc"
#include "matmul_impl.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx512
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX2
namespace avx2 {
namespace {
#include "simd_avx2.inc"
#include "microkernel.inc"
#include "matmul_impl.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx2
SMOLVLM_END_TARGET
#endif

#ifdef SMOLVLM_ARM64
namespace neon {
namespace {
#include "simd_neon.inc"
#include "microkernel.inc"
#include "matmul_impl.inc"
}  // namespace
}  // namespace neon
#endif

namespace scalar {
namespace {
#include "simd_scalar.inc"
#include "microkernel.inc"
#include "matmul_impl.inc"
}  // namespace
}  // namespace scalar

#if defined(SMOLVLM_X86) && (defined(__GNUC__) || defined(__clang__))
#define SMOLVLM_HAVE_BF16_KERNEL 1
// bf16 mode on AVX512_BF16: x rounded to bf16 once; weight panels hold (k, k+1) pairs of bf16 as
// 32-bit words, [kPairs][32 columns]; the 8 x 32 micro-kernel does 16 vdpbf16ps per k pair, each
// 32 multiply-adds with exact products and float32 accumulation.
SMOLVLM_BEGIN_AVX512BF16
namespace avx512bf16 {
namespace {

#include "bf16_ukernel.inc"

struct Bf16Job {
  const uint32_t* xb;  // [M][Kp / 2] pairs of bf16 activations
  size_t M, N, K, Kp;  // Kp: K rounded up to even
  const uint16_t* w;
  const float* bias;
  float* y;
  size_t mc, nc, kcp, nTiles;  // kcp: k pairs per block
};

// The pair (w[n][2p], w[n][2p + 1]) as one 32-bit word; 0 past the end of the row.
inline uint32_t pair(const uint16_t* row, size_t K, size_t p) {
  const size_t k = 2 * p;
  const uint32_t lo = k < K ? row[k] : 0u;
  const uint32_t hi = k + 1 < K ? row[k + 1] : 0u;
  return lo | (hi << 16);
}

// dst[p * NR + c] = pair of w row n0 + c at pair index p0 + p; zero columns past nr.
void pack_panel(const uint16_t* w, size_t K, size_t n0, int nr, size_t p0, int kp, uint32_t* dst) {
  int c0 = 0;
  const size_t fullPairs = K / 2;
  if (p0 + kp <= fullPairs) {
    for (; c0 + 8 <= nr; c0 += 8) {
      int p = 0;
      for (; p + 8 <= kp; p += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
          r[i] = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (n0 + c0 + i) * K + 2 * (p0 + p))));
        }
        // 8x8 transpose of 32-bit words.
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
        const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
        const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
        const __m256 o[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20), _mm256_permute2f128_ps(u2, u6, 0x20),
                             _mm256_permute2f128_ps(u3, u7, 0x20), _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                             _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
        for (int i = 0; i < 8; i++) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + static_cast<size_t>(p + i) * NR + c0), _mm256_castps_si256(o[i]));
        }
      }
      for (; p < kp; p++) {
        for (int i = 0; i < 8; i++) dst[static_cast<size_t>(p) * NR + c0 + i] = pair(w + (n0 + c0 + i) * K, K, p0 + p);
      }
    }
  }
  for (int c = c0; c < NR; c++) {
    for (int p = 0; p < kp; p++) dst[static_cast<size_t>(p) * NR + c] = c < nr ? pair(w + (n0 + c) * K, K, p0 + p) : 0u;
  }
}

void gemm_task(void* ctx, size_t t) {
  const Bf16Job& a = *static_cast<const Bf16Job*>(ctx);
  const size_t m0 = (t / a.nTiles) * a.mc, m1 = std::min(a.M, m0 + a.mc);
  const size_t n0 = (t % a.nTiles) * a.nc, n1 = std::min(a.N, n0 + a.nc);
  const int panels = static_cast<int>((n1 - n0 + NR - 1) / NR);
  const size_t pairs = a.Kp / 2;
  static thread_local ScratchBuffer<uint32_t> scratch;
  uint32_t* packed = scratch.get(static_cast<size_t>(panels) * NR * a.kcp);
  for (size_t p0 = 0; p0 < pairs; p0 += a.kcp) {
    const int kb = static_cast<int>(std::min(a.kcp, pairs - p0));
    for (int p = 0; p < panels; p++) {
      const size_t c = n0 + static_cast<size_t>(p) * NR;
      pack_panel(a.w, a.K, c, static_cast<int>(std::min<size_t>(NR, n1 - c)), p0, kb, packed + static_cast<size_t>(p) * NR * kb);
    }
    const bool accumulate = p0 > 0, last = p0 + kb == pairs;
    for (size_t i = m0; i < m1; i += MR) {
      const int m = static_cast<int>(std::min<size_t>(MR, m1 - i));
      const uint32_t* A = a.xb + i * pairs + p0;
      for (int p = 0; p < panels; p++) {
        const size_t c = n0 + static_cast<size_t>(p) * NR;
        ukernel_rows(m, kb, A, pairs, packed + static_cast<size_t>(p) * NR * kb, a.y + i * a.N + c, a.N,
                     static_cast<int>(std::min<size_t>(NR, n1 - c)), accumulate, last && a.bias ? a.bias + c : nullptr);
      }
    }
  }
}

struct ConvertJob {
  const float* x;
  uint16_t* xb;
  size_t K, Kp;
};

void convert_task(void* ctx, size_t r) {
  const ConvertJob& c = *static_cast<const ConvertJob*>(ctx);
  const float* src = c.x + r * c.K;
  uint16_t* dst = c.xb + r * c.Kp;
  to_bf16_run(src, c.K, dst);
  if (c.Kp > c.K) dst[c.K] = 0;
}

void linear_bf16(const float* x, size_t M, const uint16_t* w, size_t N, size_t K, const float* bias, float* y) {
  const size_t Kp = (K + 1) & ~static_cast<size_t>(1);
  static thread_local ScratchBuffer<uint32_t> xbuf;
  uint32_t* xb = xbuf.get(M * Kp / 2);
  ConvertJob cj{x, reinterpret_cast<uint16_t*>(xb), K, Kp};
  parallel_for(M, convert_task, &cj);
  Bf16Job a{};
  a.xb = xb;
  a.M = M;
  a.N = N;
  a.K = K;
  a.Kp = Kp;
  a.w = w;
  a.bias = bias;
  a.y = y;
  const size_t pairs = Kp / 2;
  const size_t blocks = (pairs + 255) / 256;  // k blocks of up to 512 (256 pairs), as the float32 path
  a.kcp = (pairs + blocks - 1) / blocks;
  // Tiles as in the float32 path (matmul_impl.inc).
  a.mc = M <= 256 ? M : 256;
  const size_t mTiles = (M + a.mc - 1) / a.mc;
  const size_t want = 4 * static_cast<size_t>(pool_threads());
  a.nc = 128;
  if (mTiles * ((N + a.nc - 1) / a.nc) < want) {
    const size_t cols = (N * mTiles + want - 1) / want;
    a.nc = std::max<size_t>(NR, (cols + NR - 1) / NR * NR);
  }
  a.nTiles = (N + a.nc - 1) / a.nc;
  parallel_for(mTiles * a.nTiles, gemm_task, &a);
}

// One input row (a decode step): each weight row as stored, 32 bf16 per vdpbf16ps against x's
// bf16 pairs. The float32 path on rounded x gives the same products (exact either way) but widens
// every weight element first, two instructions per 16 elements; reading them as they are streamed
// the text weights 1.03x faster (BENCHMARKS.md section 15).
// Prefetch as the AVX-512 one-row path's (simd_avx512.inc GEMV_LINE_AHEAD, GEMV_PAGE_AHEAD).
constexpr size_t kGemvLineAhead = avx512::S::GEMV_LINE_AHEAD, kGemvPageAhead = avx512::S::GEMV_PAGE_AHEAD;

struct GemvJob {
  const uint16_t* xb;  // x as bf16, zero-padded to a multiple of 32
  const uint16_t* w;
  size_t N, K;
  const float* bias;
  float* y;
  size_t chunk;
};

void gemv_chunk(const GemvJob& a, size_t c) {
  const size_t o1 = std::min(a.N, (c + 1) * a.chunk), K = a.K;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (K % 32)) - 1);
  for (size_t o = c * a.chunk; o < o1; o++) {
    const uint16_t* row = a.w + o * K;
    const char* bytes = reinterpret_cast<const char*>(row);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 128 <= K; k += 128) {
      prefetch_stream<256, kGemvLineAhead, kGemvPageAhead>(bytes + 2 * k);
      acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(a.xb + k), (__m512bh)_mm512_loadu_si512(row + k));
      acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)_mm512_loadu_si512(a.xb + k + 32), (__m512bh)_mm512_loadu_si512(row + k + 32));
      acc2 = _mm512_dpbf16_ps(acc2, (__m512bh)_mm512_loadu_si512(a.xb + k + 64), (__m512bh)_mm512_loadu_si512(row + k + 64));
      acc3 = _mm512_dpbf16_ps(acc3, (__m512bh)_mm512_loadu_si512(a.xb + k + 96), (__m512bh)_mm512_loadu_si512(row + k + 96));
    }
    for (; k + 32 <= K; k += 32) acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(a.xb + k), (__m512bh)_mm512_loadu_si512(row + k));
    if (k < K) acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)_mm512_loadu_si512(a.xb + k), (__m512bh)_mm512_maskz_loadu_epi16(tail, row + k));
    a.y[o] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3))) + (a.bias ? a.bias[o] : 0.0f);
  }
}

// One input row against 1 to kMaxLinearParts bf16 weights, x rounded once and all the weights'
// chunks in one parallel pass (as matmul_impl.inc gemv_parts).
void gemv_bf16_many(const float* x, size_t K, const FloatLinear* parts, int count) {
  const size_t Kp = (K + 31) / 32 * 32;
  static thread_local ScratchBuffer<uint16_t> xbuf;
  uint16_t* xb = xbuf.get(Kp);
  to_bf16_run(x, K, xb);
  std::fill(xb + K, xb + Kp, uint16_t{0});
  GemvJob jobs[kMaxLinearParts];
  size_t first[kMaxLinearParts + 1] = {0};
  for (int i = 0; i < count; i++) {
    const FloatLinear& p = parts[i];
    jobs[i] = GemvJob{xb, static_cast<const uint16_t*>(p.w), p.N, K, p.bias, p.y, gemv_chunk_outputs(2 * K)};
    first[i + 1] = first[i] + (p.N + jobs[i].chunk - 1) / jobs[i].chunk;
  }
  parallel_part_chunks(first, count, [&](int i, size_t c) { gemv_chunk(jobs[i], c); });
}

}  // namespace
}  // namespace avx512bf16
SMOLVLM_END_TARGET
#endif

namespace {

void linear_f32(Isa isa, const float* x, size_t M, const void* w, int dt, size_t N, size_t K, const float* bias, float* y, size_t ldy) {
  switch (isa) {
#ifdef SMOLVLM_X86
    case Isa::Avx512: avx512::linear_f32(x, M, w, dt, N, K, bias, y, ldy); return;
    case Isa::Avx2: avx2::linear_f32(x, M, w, dt, N, K, bias, y, ldy); return;
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon: neon::linear_f32(x, M, w, dt, N, K, bias, y, ldy); return;
#endif
    default: scalar::linear_f32(x, M, w, dt, N, K, bias, y, ldy); return;
  }
}

// x rounded to bf16 precision (f32_to_bf16 then back: nearest even, NaN to the quiet NaN), split
// over the pool for image-sized inputs (bench/micro.ts bf16-round measures what the rounding costs).
void round_rows_to_bf16(const float* x, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

void round_to_bf16(const float* x, size_t n, float* out) {
  constexpr size_t kChunk = size_t{1} << 16;
  if (n <= kChunk) {
    round_rows_to_bf16(x, n, out);
    return;
  }
  auto task = [&](size_t t) {
    const size_t b = t * kChunk;
    round_rows_to_bf16(x + b, std::min(kChunk, n - b), out + b);
  };
  parallel_for_each((n + kChunk - 1) / kChunk, task);
}

bool gemv_many(Isa isa, const float* x, size_t M, size_t K, int dt, const FloatLinear* parts, int count) {
  switch (isa) {
#ifdef SMOLVLM_X86
    case Isa::Avx512: return avx512::gemv_many(x, M, K, dt, parts, count);
    case Isa::Avx2: return avx2::gemv_many(x, M, K, dt, parts, count);
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon: return neon::gemv_many(x, M, K, dt, parts, count);
#endif
    default: return scalar::gemv_many(x, M, K, dt, parts, count);
  }
}

// Rows up to which linear() takes the few-row path at this ISA (as matmul_impl.inc decides it).
[[maybe_unused]] size_t gemv_max_rows(Isa isa) {
  int dflt = scalar::S::GEMV_MAX_ROWS;
  switch (isa) {
#ifdef SMOLVLM_X86
    case Isa::Avx512: dflt = avx512::S::GEMV_MAX_ROWS; break;
    case Isa::Avx2: dflt = avx2::S::GEMV_MAX_ROWS; break;
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon: dflt = neon::S::GEMV_MAX_ROWS; break;
#endif
    default: break;
  }
  return gemv_max_rows_setting(dflt);
}

}  // namespace

bool linear_bf16_native() {
#ifdef SMOLVLM_HAVE_BF16_KERNEL
  return current_isa() == Isa::Avx512 && cpu_features().avx512bf16;
#else
  return false;
#endif
}

void linear(const float* x, size_t M, const void* w, int dtype, size_t N, size_t K, const float* bias, float* y, LinearMode mode) {
  const Isa isa = current_isa();
  if (mode == LinearMode::Bf16 && dtype == kBF16 && K > 0) {
#ifdef SMOLVLM_HAVE_BF16_KERNEL
    if (linear_bf16_native() && M > gemv_max_rows(isa)) {
      avx512bf16::linear_bf16(x, M, static_cast<const uint16_t*>(w), N, K, bias, y);
      return;
    }
    if (linear_bf16_native() && M == 1) {
      const FloatLinear part{w, dtype, N, bias, y};
      avx512bf16::gemv_bf16_many(x, K, &part, 1);
      return;
    }
#endif
    // Same numbers without the instruction (and for 2 to GEMV_MAX_ROWS rows): bf16 x bf16
    // products are exact in float32, so rounding the activations and running the float32 kernel
    // differs from vdpbf16ps only in the order of the sums.
    static thread_local std::vector<float> rounded;
    rounded.resize(M * K);
    round_to_bf16(x, M * K, rounded.data());
    linear_f32(isa, rounded.data(), M, w, dtype, N, K, bias, y, N);
    return;
  }
  linear_f32(isa, x, M, w, dtype, N, K, bias, y, N);
}

void linear_many(const float* x, size_t M, size_t K, const FloatLinear* parts, int count, LinearMode mode) {
  if (M == 0 || count <= 0) return;
  bool shared = K > 0;
  for (int i = 0; i < count; i++) shared = shared && parts[i].dtype == parts[0].dtype && parts[i].N > 0;
  if (shared) {
    const Isa isa = current_isa();
    const int dt = parts[0].dtype;
    if (mode == LinearMode::Bf16 && dt == kBF16) {
#ifdef SMOLVLM_HAVE_BF16_KERNEL
      if (linear_bf16_native() && M == 1) {
        avx512bf16::gemv_bf16_many(x, K, parts, count);
        return;
      }
#endif
      if (M <= gemv_max_rows(isa)) {  // as linear(): the float32 kernel on rounded x
        static thread_local std::vector<float> rounded;
        rounded.resize(M * K);
        round_to_bf16(x, M * K, rounded.data());
        if (gemv_many(isa, rounded.data(), M, K, dt, parts, count)) return;
      }
    } else if (gemv_many(isa, x, M, K, dt, parts, count)) {
      return;
    }
  }
  for (int i = 0; i < count; i++) linear(x, M, parts[i].w, parts[i].dtype, parts[i].N, K, parts[i].bias, parts[i].y, mode);
}

void linear_f32_strided(const float* x, size_t M, const float* w, size_t N, size_t K, const float* bias, float* y, size_t ldy) {
  linear_f32(current_isa(), x, M, w, kF32, N, K, bias, y, ldy);
}

}  // namespace smolvlm
