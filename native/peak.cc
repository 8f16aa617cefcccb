// Machine limits measured in-process, for benchmarks: the float32 FMA peak of the instruction set
// in use on every pool thread, and the streaming read bandwidth of main memory.
//
//   measurePeakFlops(seconds) -> { gflops, gflopsOneThread, threads, isa, vectorWidth, accumulators, seconds }
//   measureBandwidth(bytes, seconds) -> { gbps, bestGbps, threads, bytes, passes, seconds }
//
// The per-ISA loops are the body at the end of this file, compiled once per instruction set (the
// file includes itself, as matmul.cc includes matmul_impl.inc), inside that set's target region.
#ifndef SMOLVLM_PEAK_BODY

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "cpu.h"
#include "simd.h"
#include "threadpool.h"
#include "mmap.h"

namespace smolvlm {

struct PeakImpl {
  // acc = acc * a + b on `accumulators` independent vector chains, `iters` times; returns a sum
  // of the accumulators (so nothing is optimised away).
  float (*fma_loop)(size_t iters, float seed);
  // Sum of n floats (n a multiple of 64), read with vector loads.
  float (*read_sum)(const float* p, size_t n);
  int width;         // floats per vector
  int accumulators;  // independent FMA chains
};

// A peak loop of another kind of multiply-add (bf16 pairs, int8 quads): `loop` runs `iters`
// iterations of `ops_per_iter` operations (a multiply-add counts 2) on independent chains.
struct DotPeak {
  float (*loop)(size_t iters, float seed);
  double ops_per_iter;
  const char* instruction;
};

#define SMOLVLM_PEAK_BODY 1
#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX512
namespace avx512 {
namespace {
#include "simd_avx512.inc"
constexpr int kAcc = 24;  // 32 zmm registers
#include "peak.cc"
#undef SMOLVLM_SIMD_X86
}  // namespace
PeakImpl peak_impl() { return {fma_loop, read_sum, S::W, kAcc}; }
}  // namespace avx512
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX2
namespace avx2 {
namespace {
#include "simd_avx2.inc"
constexpr int kAcc = 12;  // 16 ymm registers: 12 chains + the two operands
#include "peak.cc"
#undef SMOLVLM_SIMD_X86
}  // namespace
PeakImpl peak_impl() { return {fma_loop, read_sum, S::W, kAcc}; }
}  // namespace avx2
SMOLVLM_END_TARGET
#endif

#ifdef SMOLVLM_ARM64
namespace neon {
namespace {
#include "simd_neon.inc"
constexpr int kAcc = 24;
#include "peak.cc"
}  // namespace
PeakImpl peak_impl() { return {fma_loop, read_sum, S::W, kAcc}; }
}  // namespace neon
#endif

namespace scalar {
namespace {
#include "simd_scalar.inc"
constexpr int kAcc = 8;
#include "peak.cc"
}  // namespace
PeakImpl peak_impl() { return {fma_loop, read_sum, S::W, kAcc}; }
}  // namespace scalar
#undef SMOLVLM_PEAK_BODY

#ifdef SMOLVLM_X86
// The products bf16 mode and the quantized GEMMs are built on, each on 24 (zmm) or 12 (ymm)
// independent chains, fully unrolled. The operands are constants kept in registers: the loops
// measure the execution units, as fma_loop does.
#if defined(__GNUC__) || defined(__clang__)
#define SMOLVLM_UNROLL_ALL _Pragma("GCC unroll 32")
#else
#define SMOLVLM_UNROLL_ALL
#endif

SMOLVLM_BEGIN_AVX512BF16
namespace avx512bf16 {
// vdpbf16ps zmm: 16 lanes x 2 bf16 products each = 64 flops per instruction.
float dp_loop(size_t iters, float seed) {
  constexpr int kAcc = 24;
  __m512 acc[kAcc];
  for (int i = 0; i < kAcc; i++) acc[i] = _mm512_set1_ps(seed + 0.01f * static_cast<float>(i));
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
  for (size_t it = 0; it < iters; it++) {
    SMOLVLM_UNROLL_ALL
    for (int i = 0; i < kAcc; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAcc; i++) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
DotPeak peak() { return {dp_loop, 24.0 * 64.0, "vdpbf16ps zmm"}; }
}  // namespace avx512bf16
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX512
namespace avx512bw {
// vpmaddubsw zmm then vpaddw, as the zmm int8 GEMM sums a Q4_1 block (quant_gemm_zmm.inc): 64
// byte pairs into 32 int16 sums, 128 ops per pair of instructions.
float dp_loop(size_t iters, float seed) {
  constexpr int kAcc = 24;
  __m512i acc[kAcc];
  for (int i = 0; i < kAcc; i++) acc[i] = _mm512_set1_epi16(static_cast<short>(static_cast<int>(seed) + i));
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(-1);  // wraps harmlessly
  for (size_t it = 0; it < iters; it++) {
    SMOLVLM_UNROLL_ALL
    for (int i = 0; i < kAcc; i++) acc[i] = _mm512_add_epi16(acc[i], _mm512_maddubs_epi16(a, b));
  }
  __m512i s = acc[0];
  for (int i = 1; i < kAcc; i++) s = _mm512_add_epi16(s, acc[i]);
  return static_cast<float>(static_cast<int16_t>(_mm_extract_epi16(_mm512_castsi512_si128(s), 0)));
}
DotPeak peak() { return {dp_loop, 24.0 * 128.0, "vpmaddubsw zmm"}; }
}  // namespace avx512bw
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX2
namespace avx2 {
// vpmaddubsw ymm then vpaddw: 32 byte pairs into 16 int16 sums, as the AVX2 int8 GEMM sums a
// block: 64 ops per pair of instructions.
float dp_loop(size_t iters, float seed) {
  constexpr int kAcc = 12;
  __m256i acc[kAcc];
  for (int i = 0; i < kAcc; i++) acc[i] = _mm256_set1_epi16(static_cast<short>(static_cast<int>(seed) + i));
  const __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8(-1);  // wraps harmlessly
  for (size_t it = 0; it < iters; it++) {
    SMOLVLM_UNROLL_ALL
    for (int i = 0; i < kAcc; i++) acc[i] = _mm256_add_epi16(acc[i], _mm256_maddubs_epi16(a, b));
  }
  __m256i s = acc[0];
  for (int i = 1; i < kAcc; i++) s = _mm256_add_epi16(s, acc[i]);
  return static_cast<float>(_mm256_extract_epi16(s, 0));
}
DotPeak peak() { return {dp_loop, 12.0 * 64.0, "vpmaddubsw ymm"}; }
}  // namespace avx2
SMOLVLM_END_TARGET
#undef SMOLVLM_UNROLL_ALL
#endif

namespace {

PeakImpl current_impl() {
  switch (current_isa()) {
#ifdef SMOLVLM_X86
    case Isa::Avx512:
      return avx512::peak_impl();
    case Isa::Avx2:
      return avx2::peak_impl();
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon:
      return neon::peak_impl();
#endif
    default:
      return scalar::peak_impl();
  }
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

volatile float g_sink = 0;

// Rate of one thread, G op/s, over about `seconds`.
double one_thread_rate(const DotPeak& impl, double seconds, size_t* iters_per_20ms) {
  size_t iters = 1 << 12;
  double t = 0;
  for (;;) {  // grow until one call takes at least 2 ms
    const auto t0 = Clock::now();
    g_sink = g_sink + impl.loop(iters, 1.0f);
    t = seconds_since(t0);
    if (t >= 2e-3 || iters >= (size_t(1) << 34)) break;
    iters *= 4;
  }
  const double rate = iters * impl.ops_per_iter / t;  // op/s
  *iters_per_20ms = std::max<size_t>(1, static_cast<size_t>(rate * 0.02 / impl.ops_per_iter));
  // Measure for the requested time.
  const size_t n = std::max<size_t>(1, static_cast<size_t>(rate * seconds / impl.ops_per_iter));
  const auto t0 = Clock::now();
  g_sink = g_sink + impl.loop(n, 1.0f);
  return n * impl.ops_per_iter / seconds_since(t0) / 1e9;
}

struct Rates {
  double all, one;  // G op/s on every pool thread, and on one
};

// The loop on every pool thread in tasks of about 20 ms each, handed out dynamically.
Rates measure_rates(const DotPeak& impl, double seconds) {
  const int threads = pool_threads();
  size_t iters20 = 0;
  const double one = one_thread_rate(impl, std::min(0.25, seconds / 4), &iters20);
  const size_t tasks = std::max<size_t>(threads, static_cast<size_t>(std::ceil(seconds / 0.02)) * threads);
  std::vector<float> sums(tasks, 0.0f);
  auto body = [&](size_t i) { sums[i] = impl.loop(iters20, 1.0f + 1e-3f * static_cast<float>(i % 7)); };
  const auto t0 = Clock::now();
  parallel_for_each(tasks, body);
  const double t = seconds_since(t0);
  float s = 0;
  for (float v : sums) s += v;
  g_sink = g_sink + s;
  return {static_cast<double>(tasks) * iters20 * impl.ops_per_iter / t / 1e9, one};
}

// The bf16 and int8 products this CPU's GEMMs use at the current ISA level (null loop: none).
DotPeak bf16_peak() {
#ifdef SMOLVLM_X86
  if (current_isa() == Isa::Avx512 && cpu_features().avx512bf16) return avx512bf16::peak();
#endif
  return {nullptr, 0, ""};
}
DotPeak int8_peak() {
#ifdef SMOLVLM_X86
  if (current_isa() == Isa::Avx512) return avx512bw::peak();
  if (current_isa() == Isa::Avx2) return avx2::peak();
#endif
  return {nullptr, 0, ""};
}

napi_value set_number(napi_env env, napi_value o, const char* name, double v) {
  napi_value x;
  napi_create_double(env, v, &x);
  napi_set_named_property(env, o, name, x);
  return o;
}

bool read_args(napi_env env, napi_callback_info info, size_t want, double* out, const char* fn) {
  napi_value argv[2];
  size_t argc = 2;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  for (size_t i = 0; i < want; i++) {
    double v = 0;
    if (i >= argc || napi_get_value_double(env, argv[i], &v) != napi_ok || !std::isfinite(v) || v <= 0) {
      const std::string msg = std::string("smolvlm native ") + fn + ": expects " + std::to_string(want) + " positive number argument(s)";
      napi_throw_type_error(env, nullptr, msg.c_str());
      return false;
    }
    out[i] = v;
  }
  return true;
}

}  // namespace

// measurePeakFlops(seconds): FMA-bound loop on every pool thread, for the ISA in use; then, where
// this CPU has them at that ISA, the bf16 dot product (vdpbf16ps) and the int8 one the quantized
// GEMM uses (vpmaddubsw on zmm or ymm), each for the same time: bf16Gflops / int8Gops (and
// their one-thread rates and instruction names), absent where the CPU has no such instruction.
napi_value MeasurePeakFlops(napi_env env, napi_callback_info info) {
  double seconds = 1;
  if (!read_args(env, info, 1, &seconds, "measurePeakFlops")) return nullptr;
  seconds = std::min(seconds, 60.0);
  const PeakImpl impl = current_impl();
  const DotPeak fma{impl.fma_loop, 2.0 * impl.width * impl.accumulators, ""};
  const Rates f = measure_rates(fma, seconds);

  napi_value o, isa;
  napi_create_object(env, &o);
  set_number(env, o, "gflops", f.all);
  set_number(env, o, "gflopsOneThread", f.one);
  set_number(env, o, "threads", pool_threads());
  napi_create_string_utf8(env, isa_name(current_isa()), NAPI_AUTO_LENGTH, &isa);
  napi_set_named_property(env, o, "isa", isa);
  set_number(env, o, "vectorWidth", impl.width);
  set_number(env, o, "accumulators", impl.accumulators);
  const struct {
    DotPeak impl;
    const char *all, *one, *name;
  } dots[] = {{bf16_peak(), "bf16Gflops", "bf16GflopsOneThread", "bf16Instruction"},
              {int8_peak(), "int8Gops", "int8GopsOneThread", "int8Instruction"}};
  for (const auto& d : dots) {
    if (!d.impl.loop) continue;
    const Rates r = measure_rates(d.impl, seconds);
    set_number(env, o, d.all, r.all);
    set_number(env, o, d.one, r.one);
    napi_value name;
    napi_create_string_utf8(env, d.impl.instruction, NAPI_AUTO_LENGTH, &name);
    napi_set_named_property(env, o, d.name, name);
  }
  set_number(env, o, "seconds", seconds);
  return o;
}

namespace {

constexpr size_t kReadChunkFloats = size_t(1) << 18;  // 1 MiB per task

// Reads n floats at p (n a multiple of kReadChunkFloats) on every pool thread, 1 MiB per task,
// once unmeasured and then until `seconds` have passed; the result as measureBandwidth returns it.
napi_value timed_reads(napi_env env, const float* p, size_t n, double seconds) {
  const size_t tasks = n / kReadChunkFloats;
  const PeakImpl impl = current_impl();
  std::vector<float> sums(tasks, 0.0f);
  auto read = [&](size_t t) { sums[t] += impl.read_sum(p + t * kReadChunkFloats, kReadChunkFloats); };
  parallel_for_each(tasks, read);  // warm-up pass

  double total = 0, best = 0;
  int passes = 0;
  const auto t0 = Clock::now();
  do {
    const auto t1 = Clock::now();
    parallel_for_each(tasks, read);
    const double dt = seconds_since(t1);
    best = std::max(best, n * sizeof(float) / dt / 1e9);
    passes++;
    total = seconds_since(t0);
  } while (total < seconds || passes < 2);
  float s = 0;
  for (float v : sums) s += v;
  g_sink = g_sink + s;

  napi_value o;
  napi_create_object(env, &o);
  set_number(env, o, "gbps", static_cast<double>(passes) * n * sizeof(float) / total / 1e9);
  set_number(env, o, "bestGbps", best);
  set_number(env, o, "threads", pool_threads());
  set_number(env, o, "bytes", static_cast<double>(n * sizeof(float)));
  set_number(env, o, "passes", passes);
  set_number(env, o, "seconds", total);
  return o;
}

}  // namespace

// measureBandwidth(bytes, seconds): repeated multi-threaded reads of one buffer of `bytes`
// (first touched in parallel, then read once unmeasured), until `seconds` have passed.
napi_value MeasureBandwidth(napi_env env, napi_callback_info info) {
  double args[2] = {0, 0};
  if (!read_args(env, info, 2, args, "measureBandwidth")) return nullptr;
  const double seconds = std::min(args[1], 60.0);
  size_t n = static_cast<size_t>(args[0] / sizeof(float));
  n = std::max(kReadChunkFloats, (n + kReadChunkFloats - 1) / kReadChunkFloats * kReadChunkFloats);
  const size_t tasks = n / kReadChunkFloats;
  ScratchBuffer<float> buf;
  float* p = buf.get(n);
  // On 2 MiB pages, as mapFile maps weights where it can: over 4 KiB pages this loop read 60-63
  // GB/s where it reads 76 on 2 MiB ones (BENCHMARKS.md section 16), and the bound would be low.
  prepare_output_pages(p, n * sizeof(float));
  auto touch = [&](size_t t) {
    float* q = p + t * kReadChunkFloats;
    for (size_t i = 0; i < kReadChunkFloats; i++) q[i] = static_cast<float>((t + i) & 15);
  };
  parallel_for_each(tasks, touch);
  return timed_reads(env, p, n, seconds);
}

// measureReadBandwidth(view, seconds): the same reads over memory the caller has (a typed array,
// e.g. weights in a mapped checkpoint: is the page cache as fast as fresh memory?), its first whole
// MiBs, never written. The bytes are summed as float32 whatever they hold.
napi_value MeasureReadBandwidth(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char* data = nullptr;
  size_t bytes = 0;
  double seconds = 0;
  if (argc < 2 || !typed_array_bytes(env, argv[0], &data, &bytes) || napi_get_value_double(env, argv[1], &seconds) != napi_ok || !std::isfinite(seconds) ||
      seconds <= 0) {
    napi_throw_type_error(env, nullptr, "smolvlm native measureReadBandwidth: expects a typed array and a positive number of seconds");
    return nullptr;
  }
  const size_t n = bytes / sizeof(float) / kReadChunkFloats * kReadChunkFloats;
  if (n == 0 || reinterpret_cast<uintptr_t>(data) % sizeof(float) != 0) {
    napi_throw_range_error(env, nullptr, "smolvlm native measureReadBandwidth: needs at least 1 MiB, 4-byte aligned");
    return nullptr;
  }
  return timed_reads(env, reinterpret_cast<const float*>(data), n, std::min(seconds, 60.0));
}

}  // namespace smolvlm

#else  // SMOLVLM_PEAK_BODY: the per-ISA loops, compiled inside a target region with `S` defined.

float fma_loop(size_t iters, float seed) {
  S::V acc[kAcc];
  for (int i = 0; i < kAcc; i++) acc[i] = S::set1(seed + 0.01f * static_cast<float>(i));
  const S::V a = S::set1(0.999f), b = S::set1(1e-3f);  // converges to 1: no overflow, no denormals
  for (size_t it = 0; it < iters; it++) {
    // Fully unrolled (AVX-512 has 24 chains, more than SMOLVLM_UNROLL's 16): otherwise the
    // chains live on the stack and the loop measures store forwarding, not the FMA units.
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC unroll 32
#endif
    for (int i = 0; i < kAcc; i++) acc[i] = S::fmadd(acc[i], a, b);
  }
  S::V s = acc[0];
  for (int i = 1; i < kAcc; i++) s = S::add(s, acc[i]);
  return S::hsum(s);
}

float read_sum(const float* p, size_t n) {
  constexpr int U = 64 / S::W > 0 ? 64 / S::W : 1;  // one 256-byte stretch per step, 4 chains
  S::V s0 = S::zero(), s1 = S::zero(), s2 = S::zero(), s3 = S::zero();
  for (size_t i = 0; i < n; i += 64) {
    SMOLVLM_UNROLL
    for (int u = 0; u < U; u += 4) {
      s0 = S::add(s0, S::load(p + i + (u + 0) * S::W));
      if (u + 1 < U) s1 = S::add(s1, S::load(p + i + (u + 1) * S::W));
      if (u + 2 < U) s2 = S::add(s2, S::load(p + i + (u + 2) * S::W));
      if (u + 3 < U) s3 = S::add(s3, S::load(p + i + (u + 3) * S::W));
    }
  }
  return S::hsum(S::add(S::add(s0, s1), S::add(s2, s3)));
}

#endif  // SMOLVLM_PEAK_BODY
