// Shared plumbing for the per-ISA kernel code: headers, the pragmas that compile a region of code
// for one instruction set, scalar 16-bit float conversions and an aligned scratch buffer.
//
// Each kernel file (matmul.cc, attention.cc, elementwise.cc) includes its ISA-generic body
// (*_impl.inc) once per instruction set, each time inside its own namespace and target region,
// after the matching simd_<isa>.inc that defines the vector traits `S`. Everything in a region
// sits in an anonymous namespace, so no function compiled for AVX-512 can be merged by the linker
// with a baseline one and run on a CPU without it.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* is "used uninitialized",
// GCC bug 105593) at every inlined use; the warnings say nothing about this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#define SMOLVLM_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#define SMOLVLM_ARM64 1
#include <arm_neon.h>
#endif

#if defined(__clang__)
#define SMOLVLM_BEGIN_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define SMOLVLM_BEGIN_AVX512 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c\"))), apply_to = function)")
#define SMOLVLM_BEGIN_AVX512BF16 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c\"))), apply_to = function)")
#define SMOLVLM_BEGIN_AVX512VNNI \
  _Pragma("clang attribute push(__attribute__((target(\"avx512vnni,avx512vl,avx512f,avx512bw,avx512dq,avx2,fma,f16c\"))), apply_to = function)")
#define SMOLVLM_BEGIN_AVXVNNI _Pragma("clang attribute push(__attribute__((target(\"avxvnni,avx2,fma,f16c\"))), apply_to = function)")
#define SMOLVLM_BEGIN_DOTPROD _Pragma("clang attribute push(__attribute__((target(\"dotprod\"))), apply_to = function)")
#define SMOLVLM_END_TARGET _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define SMOLVLM_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define SMOLVLM_BEGIN_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c\")")
#define SMOLVLM_BEGIN_AVX512BF16 \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c\")")
#define SMOLVLM_BEGIN_AVX512VNNI \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512vnni,avx512vl,avx512f,avx512bw,avx512dq,avx2,fma,f16c\")")
#define SMOLVLM_BEGIN_AVXVNNI _Pragma("GCC push_options") _Pragma("GCC target(\"avxvnni,avx2,fma,f16c\")")
#define SMOLVLM_BEGIN_DOTPROD _Pragma("GCC push_options") _Pragma("GCC target(\"arch=armv8.2-a+dotprod\")")
#define SMOLVLM_END_TARGET _Pragma("GCC pop_options")
#else
// MSVC compiles intrinsics anywhere; the dispatcher alone keeps them off CPUs without them.
#define SMOLVLM_BEGIN_AVX2
#define SMOLVLM_BEGIN_AVX512
#define SMOLVLM_BEGIN_AVX512BF16
#define SMOLVLM_BEGIN_AVX512VNNI
#define SMOLVLM_BEGIN_DOTPROD
#define SMOLVLM_END_TARGET
#endif
// AVX-VNNI (the VEX vpdpbusd intrinsics) needs GCC 11 or clang 12; older compilers build without it.
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define SMOLVLM_HAVE_AVXVNNI 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SMOLVLM_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#define SMOLVLM_UNROLL _Pragma("GCC unroll 16")
#define SMOLVLM_RESTRICT __restrict__
#else
#define SMOLVLM_PREFETCH(p) ((void)0)
#define SMOLVLM_UNROLL
#define SMOLVLM_RESTRICT
#endif

namespace smolvlm {

// Software prefetch for a weight stream read STEP bytes per loop step, called at the step that
// reads [p, p + STEP): every line LINE_AHEAD bytes ahead, and the first two lines of each 4 KiB
// page PAGE_AHEAD bytes ahead (exactly one step per page sees its start within STEP bytes). The
// page prefetch starts the page's address translation and the hardware prefetchers there before
// the line prefetches arrive. On Zen 5 the two together streamed the one-row kernels' weights
// 1.2x faster from the page cache than every line 4 KiB ahead alone, and 1.4x from fresh memory;
// either alone did not (BENCHMARKS.md section 17).
// The first two lines of the 4 KiB page starting within [ahead, ahead + step), if one does.
inline void prefetch_if_page_start(uintptr_t ahead, size_t step) {
  if ((ahead & 4095) < step) {
    const char* page = reinterpret_cast<const char*>(ahead & ~static_cast<uintptr_t>(4095));
    SMOLVLM_PREFETCH(page);
    SMOLVLM_PREFETCH(page + 64);
  }
}

template <size_t STEP, size_t PAGE_AHEAD>
inline void prefetch_page_start(const void* p, size_t step = STEP) {
  if constexpr (PAGE_AHEAD == 0) return;  // no page prefetch (ISAs where it was not measured)
  prefetch_if_page_start(reinterpret_cast<uintptr_t>(p) + PAGE_AHEAD, step);
}

// prefetch_stream with run-time sizes: for streams whose step depends on the shapes (a head's
// keys and values in a head-major KV cache). No page prefetch where pageAhead is 0.
inline void prefetch_stream_rt(const void* p, size_t step, size_t lineAhead, size_t pageAhead) {
  const char* c = static_cast<const char*>(p);
  for (size_t l = 0; l < step; l += 64) SMOLVLM_PREFETCH(c + lineAhead + l);
  if (pageAhead != 0) prefetch_if_page_start(reinterpret_cast<uintptr_t>(c) + pageAhead, step);
}

template <size_t STEP, size_t LINE_AHEAD, size_t PAGE_AHEAD>
inline void prefetch_stream(const void* p) {
  const char* c = static_cast<const char*>(p);
  SMOLVLM_UNROLL
  for (size_t l = 0; l < (STEP + 63) / 64; l++) SMOLVLM_PREFETCH(c + LINE_AHEAD + 64 * l);
  prefetch_page_start<STEP, PAGE_AHEAD>(c);
}

// Weight element types, as passed from JavaScript.
enum WeightType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

inline float bits_to_f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest even, as PyTorch's .to(torch.bfloat16); NaN becomes the quiet NaN. A select,
// not a branch, so that loops over it vectorize (the KV cache's and bf16 mode's rounding).
inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
}

// IEEE half -> float, exact (subnormals, infinities and NaN included).
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_to_f32(sign);
  // Subnormal half: value = mant * 2^-24, normalise it.
  int e = 113;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    e--;
  }
  return bits_to_f32(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3ffu) << 13));
}

// SMOLVLM_GEMV_MAX_ROWS overrides the row count up to which linear() takes the few-row path (a
// tuning knob; the default is per instruction set).
inline size_t gemv_max_rows_setting(int dflt) {
  if (const char* env = std::getenv("SMOLVLM_GEMV_MAX_ROWS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 0) return static_cast<size_t>(v);
  }
  return static_cast<size_t>(dflt);
}

// Outputs per chunk on the few-row path (float and quantized linears), for weight rows of rowBytes
// bytes: about kGemvChunkBytes of weights, a multiple of 4, at least 4. The chunks are handed out
// by RangeChunks (threadpool.h), whose claims are cheap, so they can be short: a thread that
// finishes early then takes a share of the last ones. With a shared task counter instead (a few
// hundred ns per claim on a line both threads write), q4's chunks of 12 to 38 KB streamed
// 1.11-1.14x slower than 256 KiB ones, and those left one thread finishing a long chunk alone
// (BENCHMARKS.md section 15).
constexpr size_t kGemvChunkBytes = 32 * 1024;
inline size_t gemv_chunk_outputs(size_t rowBytes) {
  const size_t rows = kGemvChunkBytes / (rowBytes ? rowBytes : 1);
  return rows < 4 ? 4 : (rows + 3) / 4 * 4;
}

template <int DT>
inline float widen1(const void* w, size_t i) {
  if (DT == kF32) return static_cast<const float*>(w)[i];
  if (DT == kBF16) return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
  return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
}

// Scratch memory aligned to a cache line; grows, never shrinks. One per thread (thread_local).
template <class T>
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { release(); }
  T* get(size_t n) {
    if (n > cap_) {
      release();
      size_t want = std::max<size_t>(n, 1024);
      void* p = nullptr;
#if defined(_MSC_VER)
      p = _aligned_malloc(want * sizeof(T), 64);
#else
      if (posix_memalign(&p, 64, want * sizeof(T)) != 0) p = nullptr;
#endif
      if (!p) std::abort();
      ptr_ = static_cast<T*>(p);
      cap_ = want;
    }
    return ptr_;
  }

 private:
  void release() {
#if defined(_MSC_VER)
    _aligned_free(ptr_);
#else
    std::free(ptr_);
#endif
    ptr_ = nullptr;
    cap_ = 0;
  }
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace smolvlm
