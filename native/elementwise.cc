// rmsNorm, layerNorm, rope, siluMul, gelu, addInPlace: per-ISA bodies (elementwise_impl.inc) and
// the split of large calls over the thread pool.
#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"

namespace smolvlm {

namespace {
struct ElemFns {
  void (*rms)(const float*, size_t, const float*, float, float*, size_t, size_t);
  void (*ln)(const float*, size_t, const float*, const float*, float, float*, size_t, size_t);
  void (*rope)(float*, size_t, size_t, const float*, const float*, size_t, size_t);
  void (*silu)(const float*, const float*, float*, size_t, size_t);
  void (*gelu_tanh)(float*, size_t, size_t);
  void (*gelu_erf)(float*, size_t, size_t);
  void (*add)(float*, const float*, size_t, size_t);
};
}  // namespace

#define SMOLVLM_ELEM_TABLE \
  const ElemFns fns = {rms_norm_rows, layer_norm_rows, rope_rows, silu_mul_range, gelu_tanh_range, gelu_erf_range, add_range};

#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX512
namespace avx512 {
namespace {
#include "simd_avx512.inc"
using V = S::V;
constexpr int W = S::W;
#include "elementwise_impl.inc"
SMOLVLM_ELEM_TABLE
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx512
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX2
namespace avx2 {
namespace {
#include "simd_avx2.inc"
using V = S::V;
constexpr int W = S::W;
#include "elementwise_impl.inc"
SMOLVLM_ELEM_TABLE
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx2
SMOLVLM_END_TARGET
#endif

#ifdef SMOLVLM_ARM64
namespace neon {
namespace {
#include "simd_neon.inc"
using V = S::V;
constexpr int W = S::W;
#include "elementwise_impl.inc"
SMOLVLM_ELEM_TABLE
}  // namespace
}  // namespace neon
#endif

namespace scalar {
namespace {
#include "simd_scalar.inc"
using V = S::V;
constexpr int W = S::W;
#include "elementwise_impl.inc"
SMOLVLM_ELEM_TABLE
}  // namespace
}  // namespace scalar

namespace {

const ElemFns& fns() {
  switch (current_isa()) {
#ifdef SMOLVLM_X86
    case Isa::Avx512: return avx512::fns;
    case Isa::Avx2: return avx2::fns;
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon: return neon::fns;
#endif
    default: return scalar::fns;
  }
}

// Below this many floats a call runs on the calling thread: waking the pool costs more.
constexpr size_t kParallelMin = 1 << 15;

// Calls body(begin, end) over [0, n) in pieces, in parallel when the work (n * cost floats) is
// large enough.
template <class F>
void split(size_t n, size_t cost, F body) {
  const size_t threads = static_cast<size_t>(pool_threads());
  if (n <= 1 || threads == 1 || n * cost < kParallelMin) {
    body(size_t{0}, n);
    return;
  }
  const size_t pieces = std::min(n, threads * 4);
  const size_t step = (n + pieces - 1) / pieces;
  auto task = [&](size_t t) {
    const size_t b = t * step;
    if (b < n) body(b, std::min(n, b + step));
  };
  parallel_for_each((n + step - 1) / step, task);
}

// Element ranges are cut at multiples of 64 so every piece but the last is whole vectors.
template <class F>
void split_elements(size_t n, F body) {
  const size_t threads = static_cast<size_t>(pool_threads());
  if (threads == 1 || n < kParallelMin) {
    body(size_t{0}, n);
    return;
  }
  const size_t blocks = (n + 63) / 64;
  split(blocks, 64, [&](size_t b0, size_t b1) { body(b0 * 64, std::min(n, b1 * 64)); });
}

}  // namespace

void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps, float* y) {
  const ElemFns& f = fns();
  split(rows, dim, [&](size_t r0, size_t r1) { f.rms(x, dim, weight, eps, y, r0, r1); });
}

void layer_norm(const float* x, size_t rows, size_t dim, const float* weight, const float* bias, float eps, float* y) {
  const ElemFns& f = fns();
  split(rows, dim, [&](size_t r0, size_t r1) { f.ln(x, dim, weight, bias, eps, y, r0, r1); });
}

void rope(float* x, size_t rows, size_t heads, size_t head_dim, const float* cos, const float* sin) {
  const ElemFns& f = fns();
  split(rows, heads * head_dim, [&](size_t r0, size_t r1) { f.rope(x, heads, head_dim, cos, sin, r0, r1); });
}

void silu_mul(const float* gate, const float* up, float* y, size_t n) {
  const ElemFns& f = fns();
  split_elements(n, [&](size_t i0, size_t i1) { f.silu(gate, up, y, i0, i1); });
}

void gelu(float* x, size_t n, bool approximate) {
  const ElemFns& f = fns();
  auto fn = approximate ? f.gelu_tanh : f.gelu_erf;
  split_elements(n, [&](size_t i0, size_t i1) { fn(x, i0, i1); });
}

void add_inplace(float* a, const float* b, size_t n) {
  const ElemFns& f = fns();
  split_elements(n, [&](size_t i0, size_t i1) { f.add(a, b, i0, i1); });
}

void round_rows_to_bf16_bits(const float* src, size_t srcStride, size_t rows, size_t cols, uint16_t* dst) {
  for (size_t r = 0; r < rows; r++) {
    const float* x = src + r * srcStride;
    uint16_t* y = dst + r * cols;
    for (size_t c = 0; c < cols; c++) y[c] = f32_to_bf16(x[c]);
  }
}

}  // namespace smolvlm
