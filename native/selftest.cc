// Standalone check of the native kernels without Node: every ISA level this CPU runs against a
// float64 reference, plus a few timings. Not part of the addon; it exists to exercise code paths
// that the test machine's CPU cannot (AVX-512, AVX512_BF16, NEON under an emulator).
//
//   g++ -std=gnu++17 -O3 -pthread native/selftest.cc native/{cpu,threadpool,matmul,attention,elementwise,quant}.cc -o build/selftest
//   build/selftest [--bench]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"

using namespace smolvlm;

// An emulated 16-lane ISA built from AVX2 halves: it runs the ISA-generic code (micro-kernel,
// packing, few-row path, attention, elementwise) with the AVX-512 build's shapes (16 lanes,
// 8 x 32 micro-kernel, groups of 6 rows), so that layout logic is exercised on CPUs without
// AVX-512. The AVX-512 intrinsics themselves are only exercised on AVX-512 hardware.
#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX2
namespace smolvlm {
namespace emu16 {
namespace {
namespace half {
#include "simd_avx2.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace half
#define SMOLVLM_SIMD_X86 1
struct S {
  struct V {
    __m256 lo, hi;
  };
  static constexpr int W = 16;
  static constexpr int MR = 8;
  static constexpr int NV = 2;
  static constexpr int GEMV_MAX_ROWS = 12;
  static constexpr int GEMV_ROWS = 6;
  static constexpr size_t GEMV_LINE_AHEAD = 2048;  // as simd_avx512.inc
  static constexpr size_t GEMV_PAGE_AHEAD = 8192;
  static constexpr int REGS = 32;
  using H = half::S;
  static inline V zero() { return {H::zero(), H::zero()}; }
  static inline void pin(V& v) { H::pin(v.lo), H::pin(v.hi); }
  static inline V set1(float a) { return {H::set1(a), H::set1(a)}; }
  static inline V load(const float* p) { return {H::load(p), H::load(p + 8)}; }
  static inline void store(float* p, V v) { H::store(p, v.lo), H::store(p + 8, v.hi); }
  static inline V load_bf16(const uint16_t* p) { return {H::load_bf16(p), H::load_bf16(p + 8)}; }
  static inline V load_f16(const uint16_t* p) { return {H::load_f16(p), H::load_f16(p + 8)}; }
  static inline V add(V a, V b) { return {H::add(a.lo, b.lo), H::add(a.hi, b.hi)}; }
  static inline V sub(V a, V b) { return {H::sub(a.lo, b.lo), H::sub(a.hi, b.hi)}; }
  static inline V mul(V a, V b) { return {H::mul(a.lo, b.lo), H::mul(a.hi, b.hi)}; }
  static inline V div(V a, V b) { return {H::div(a.lo, b.lo), H::div(a.hi, b.hi)}; }
  static inline V max(V a, V b) { return {H::max(a.lo, b.lo), H::max(a.hi, b.hi)}; }
  static inline V fmadd(V a, V b, V c) { return {H::fmadd(a.lo, b.lo, c.lo), H::fmadd(a.hi, b.hi, c.hi)}; }
  static inline V fnmadd(V a, V b, V c) { return {H::fnmadd(a.lo, b.lo, c.lo), H::fnmadd(a.hi, b.hi, c.hi)}; }
  static inline V abs(V a) { return {H::abs(a.lo), H::abs(a.hi)}; }
  static inline V select_neg(V s, V a, V b) { return {H::select_neg(s.lo, a.lo, b.lo), H::select_neg(s.hi, a.hi, b.hi)}; }
  static inline float hsum(V v) { return H::hsum(H::add(v.lo, v.hi)); }
  static inline void hsum4(V a, V b, V c, V d, float* out) { H::hsum4(H::add(a.lo, a.hi), H::add(b.lo, b.hi), H::add(c.lo, c.hi), H::add(d.lo, d.hi), out); }
  static inline float hmax(V v) { return H::hmax(H::max(v.lo, v.hi)); }
  static inline V exp(V x) { return {H::exp(x.lo), H::exp(x.hi)}; }
  static inline V exp_nonpositive(V x) { return {H::exp_nonpositive(x.lo), H::exp_nonpositive(x.hi)}; }
};
#include "microkernel.inc"
#include "matmul_impl.inc"
#include "attention_impl.inc"
#include "elementwise_impl.inc"
#undef SMOLVLM_SIMD_X86

void linear_emu(const float* x, size_t M, const void* w, int dt, size_t N, size_t K, const float* bias, float* y, LinearMode) {
  linear_f32(x, M, w, dt, N, K, bias, y, N);
}
void rms_emu(const float* x, size_t rows, size_t dim, const float* w, float eps, float* y) { rms_norm_rows(x, dim, w, eps, y, 0, rows); }
void ln_emu(const float* x, size_t rows, size_t dim, const float* w, const float* b, float eps, float* y) { layer_norm_rows(x, dim, w, b, eps, y, 0, rows); }
void rope_emu(float* x, size_t rows, size_t heads, size_t hd, const float* c, const float* s) { rope_rows(x, heads, hd, c, s, 0, rows); }
void silu_emu(const float* g, const float* u, float* y, size_t n) { silu_mul_range(g, u, y, 0, n); }
void gelu_emu(float* x, size_t n, bool approx) { approx ? gelu_tanh_range(x, 0, n) : gelu_erf_range(x, 0, n); }
void add_emu(float* a, const float* b, size_t n) { add_range(a, b, 0, n); }
}  // namespace
}  // namespace emu16
}  // namespace smolvlm
SMOLVLM_END_TARGET
#endif

namespace {

struct Backend {
  void (*linear)(const float*, size_t, const void*, int, size_t, size_t, const float*, float*, LinearMode);
  void (*attention)(const AttentionArgs&);
  void (*rms_norm)(const float*, size_t, size_t, const float*, float, float*);
  void (*layer_norm)(const float*, size_t, size_t, const float*, const float*, float, float*);
  void (*rope)(float*, size_t, size_t, size_t, const float*, const float*);
  void (*silu_mul)(const float*, const float*, float*, size_t);
  void (*gelu)(float*, size_t, bool);
  void (*add_inplace)(float*, const float*, size_t);
  bool bf16Mode;  // whether linear() honours LinearMode::Bf16
};

const Backend kDispatch = {smolvlm::linear, smolvlm::attention, smolvlm::rms_norm, smolvlm::layer_norm, smolvlm::rope,
                           smolvlm::silu_mul, smolvlm::gelu, smolvlm::add_inplace, true};
const Backend* B = &kDispatch;

int failures = 0;
std::mt19937 rng(1234);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_l2(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void check(const std::string& what, double err, double tol) {
  const bool ok = err <= tol && std::isfinite(err);
  if (!ok) failures++;
  std::printf("  %-4s %-58s relL2 %.2e (tol %.0e)\n", ok ? "ok" : "FAIL", what.c_str(), err, tol);
}

struct Weight {
  int dt;
  std::vector<float> f32;     // values as the kernel sees them (after rounding to the dtype)
  std::vector<uint16_t> h16;  // raw 16-bit words for BF16/F16
  const void* data() const { return dt == kF32 ? static_cast<const void*>(f32.data()) : static_cast<const void*>(h16.data()); }
};

uint16_t to_f16(float f) {
  // Round to nearest even via the hardware-independent route: scale into half range by hand.
  const uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int exp = static_cast<int>((x >> 23) & 0xff) - 112;
  uint32_t mant = x & 0x7fffffu;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t kept = mant >> shift, rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1))) kept++;
    return static_cast<uint16_t>(sign | kept);
  }
  uint32_t kept = mant >> 13, rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (kept & 1))) kept++;
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(exp) << 10) + kept));
}

Weight make_weight(int dt, size_t n) {
  Weight w;
  w.dt = dt;
  w.f32 = randn(n, 0.1f);
  if (dt != kF32) {
    w.h16.resize(n);
    for (size_t i = 0; i < n; i++) {
      w.h16[i] = dt == kBF16 ? f32_to_bf16(w.f32[i]) : to_f16(w.f32[i]);
      w.f32[i] = dt == kBF16 ? bf16_to_f32(w.h16[i]) : f16_to_f32(w.h16[i]);
    }
  }
  return w;
}

std::vector<double> ref_linear(const std::vector<float>& x, size_t M, const std::vector<float>& w, size_t N, size_t K, const float* bias, bool roundX) {
  std::vector<double> y(M * N);
  for (size_t r = 0; r < M; r++) {
    for (size_t o = 0; o < N; o++) {
      double s = 0;
      for (size_t k = 0; k < K; k++) {
        const float xv = roundX ? bf16_to_f32(f32_to_bf16(x[r * K + k])) : x[r * K + k];
        s += static_cast<double>(xv) * w[o * K + k];
      }
      y[r * N + o] = s + (bias ? bias[o] : 0.0);
    }
  }
  return y;
}

void test_linear() {
  const size_t shapes[][3] = {{1, 33, 17}, {1, 960, 70}, {1, 300, 129}, {1, 64, 9}, {3, 33, 17}, {70, 33, 17}, {4, 960, 70}, {9, 300, 129}, {300, 64, 40}, {70, 520, 100}, {2, 17, 5}, {5, 1, 3}, {7, 100, 33}, {13, 200, 50}, {12, 64, 9}};
  const char* names[] = {"F32", "BF16", "F16"};
  for (auto& s : shapes) {
    const size_t M = s[0], K = s[1], N = s[2];
    auto x = randn(M * K);
    auto bias = randn(N);
    for (int dt = 0; dt < 3; dt++) {
      Weight w = make_weight(dt, N * K);
      for (int withBias = 0; withBias < 2; withBias++) {
        const float* b = withBias ? bias.data() : nullptr;
        std::vector<float> y(M * N, NAN);
        B->linear(x.data(), M, w.data(), dt, N, K, b, y.data(), LinearMode::F32);
        char what[128];
        std::snprintf(what, sizeof what, "linear %s rows=%zu in=%zu out=%zu%s", names[dt], M, K, N, withBias ? " +bias" : "");
        check(what, rel_l2(y, ref_linear(x, M, w.f32, N, K, b, false)), 1e-5);
        if (dt == kBF16 && B->bf16Mode) {
          std::vector<float> yb(M * N, NAN);
          B->linear(x.data(), M, w.data(), dt, N, K, b, yb.data(), LinearMode::Bf16);
          std::snprintf(what, sizeof what, "linear bf16-mode rows=%zu in=%zu out=%zu%s", M, K, N, withBias ? " +bias" : "");
          check(what, rel_l2(yb, ref_linear(x, M, w.f32, N, K, b, true)), 1e-5);
        }
      }
    }
  }
}

void test_attention() {
  struct Case {
    size_t seqQ, seqK, H, Hkv, D;
    long long off;
    size_t cap;
  };
  const Case cases[] = {{7, 12, 15, 5, 64, 5, 16},   {1, 101, 15, 5, 64, 100, 128}, {70, 70, 4, 2, 16, 0, 80}, {2, 40, 3, 1, 20, 38, 40},
                        {33, 33, 2, 2, 6, -1, 33},   {200, 200, 2, 1, 64, -1, 200}, {13, 300, 6, 2, 32, 287, 300}, {1, 1, 2, 1, 8, 0, 1},
                        {2, 600, 3, 1, 64, 598, 600}, {1, 3000, 2, 1, 20, 2999, 3000}, {1, 1100, 15, 5, 64, 1099, 1100}};
  for (auto& c : cases) {
    auto q = randn(c.seqQ * c.H * c.D), k = randn(c.cap * c.Hkv * c.D), v = randn(c.cap * c.Hkv * c.D);
    // Keys and values on the bf16 grid, so that the float32 and the bf16-cache runs share one reference.
    std::vector<uint16_t> kb(k.size()), vb(v.size());
    for (size_t i = 0; i < k.size(); i++) k[i] = bf16_to_f32(kb[i] = f32_to_bf16(k[i]));
    for (size_t i = 0; i < v.size(); i++) v[i] = bf16_to_f32(vb[i] = f32_to_bf16(v[i]));
    std::vector<float> out(c.seqQ * c.H * c.D, NAN), outB(c.seqQ * c.H * c.D, NAN);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    AttentionArgs a{q.data(), k.data(), v.data(), out.data(), c.seqQ, c.seqK, c.H, c.Hkv, c.D, scale, c.off, kF32};
    B->attention(a);
    AttentionArgs ab{q.data(), kb.data(), vb.data(), outB.data(), c.seqQ, c.seqK, c.H, c.Hkv, c.D, scale, c.off, kBF16};
    B->attention(ab);
    std::vector<double> ref(out.size());
    const size_t group = c.H / c.Hkv, qs = c.H * c.D, ks = c.Hkv * c.D;
    for (size_t h = 0; h < c.H; h++) {
      for (size_t i = 0; i < c.seqQ; i++) {
        const size_t vis = c.off < 0 ? c.seqK : std::min(c.seqK, static_cast<size_t>(c.off) + i + 1);
        std::vector<double> s(vis);
        double mx = -INFINITY;
        for (size_t t = 0; t < vis; t++) {
          double d = 0;
          for (size_t e = 0; e < c.D; e++) d += static_cast<double>(q[i * qs + h * c.D + e]) * k[t * ks + (h / group) * c.D + e];
          s[t] = d * scale;
          mx = std::max(mx, s[t]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (size_t e = 0; e < c.D; e++) {
          double acc = 0;
          for (size_t t = 0; t < vis; t++) acc += s[t] * v[t * ks + (h / group) * c.D + e];
          ref[i * qs + h * c.D + e] = acc / sum;
        }
      }
    }
    char what[128];
    std::snprintf(what, sizeof what, "attention q=%zu k=%zu heads=%zu/%zu d=%zu off=%lld", c.seqQ, c.seqK, c.H, c.Hkv, c.D, c.off);
    check(what, rel_l2(out, ref), 1e-5);
    std::snprintf(what, sizeof what, "attention bf16 KV q=%zu k=%zu heads=%zu/%zu d=%zu", c.seqQ, c.seqK, c.H, c.Hkv, c.D);
    check(what, rel_l2(outB, ref), 1e-5);
  }
}

void test_elementwise() {
  for (size_t dim : {33, 960}) {
    const size_t rows = 70;
    auto x = randn(rows * dim, 3.0f), w = randn(dim), b = randn(dim);
    std::vector<float> y(rows * dim);
    std::vector<double> ref(rows * dim);
    B->rms_norm(x.data(), rows, dim, w.data(), 1e-5f, y.data());
    for (size_t r = 0; r < rows; r++) {
      double ss = 0;
      for (size_t i = 0; i < dim; i++) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1 / std::sqrt(ss / dim + 1e-5);
      for (size_t i = 0; i < dim; i++) ref[r * dim + i] = w[i] * static_cast<double>(static_cast<float>(x[r * dim + i] * inv));
    }
    check("rmsNorm dim=" + std::to_string(dim), rel_l2(y, ref), 1e-6);
    B->layer_norm(x.data(), rows, dim, w.data(), b.data(), 1e-6f, y.data());
    for (size_t r = 0; r < rows; r++) {
      double mean = 0, var = 0;
      for (size_t i = 0; i < dim; i++) mean += x[r * dim + i];
      mean /= dim;
      for (size_t i = 0; i < dim; i++) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
      const double inv = 1 / std::sqrt(var / dim + 1e-6);
      for (size_t i = 0; i < dim; i++) ref[r * dim + i] = (x[r * dim + i] - mean) * inv * w[i] + b[i];
    }
    check("layerNorm dim=" + std::to_string(dim), rel_l2(y, ref), 1e-6);
  }
  for (size_t D : {64, 6}) {
    const size_t rows = 9, H = 5, half = D / 2;
    auto x = randn(rows * H * D), cs = randn(rows * half), sn = randn(rows * half);
    std::vector<double> ref(x.size());
    for (size_t r = 0; r < rows; r++)
      for (size_t h = 0; h < H; h++)
        for (size_t j = 0; j < half; j++) {
          const size_t base = (r * H + h) * D;
          const double a = x[base + j], bb = x[base + j + half], c = cs[r * half + j], s = sn[r * half + j];
          ref[base + j] = a * c - bb * s;
          ref[base + j + half] = bb * c + a * s;
        }
    B->rope(x.data(), rows, H, D, cs.data(), sn.data());
    check("rope headDim=" + std::to_string(D), rel_l2(x, ref), 1e-6);
  }
  for (size_t n : {1, 17, 100003}) {
    auto g = randn(n, 4.0f), u = randn(n);
    if (n > 10) g[3] = -100.0f, g[4] = 100.0f, g[5] = -87.5f, g[6] = 88.5f;
    std::vector<float> y(n);
    std::vector<double> ref(n);
    B->silu_mul(g.data(), u.data(), y.data(), n);
    for (size_t i = 0; i < n; i++) ref[i] = g[i] / (1 + std::exp(-static_cast<double>(g[i]))) * u[i];
    check("siluMul n=" + std::to_string(n), rel_l2(y, ref), 1e-6);
    for (int approx = 0; approx < 2; approx++) {
      auto x = g;
      B->gelu(x.data(), n, approx);
      for (size_t i = 0; i < n; i++) {
        const double v = g[i];
        // Tanh form as v / (1 + e^(-2y)), the same value as 0.5 v (1 + tanh(y)) without its
        // cancellation: for v near -5, 1 + tanh(y) is about 1e-13 and kept only a few digits in
        // double (libm's tanh differs by CPU, so the old reference failed on some machines).
        ref[i] = approx ? v / (1 + std::exp(-2 * 0.7978845608028654 * (v + 0.044715 * v * v * v))) : 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      }
      check(std::string(approx ? "gelu tanh" : "gelu erf") + " n=" + std::to_string(n), rel_l2(x, ref), 2e-6);
    }
    auto a = g;
    B->add_inplace(a.data(), u.data(), n);
    for (size_t i = 0; i < n; i++) ref[i] = static_cast<double>(g[i]) + u[i];
    check("addInPlace n=" + std::to_string(n), rel_l2(a, ref), 1e-7);
  }
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median_time(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> times;
  for (int rep = 0; rep < reps; rep++) {
    const double t0 = now();
    fn();
    times.push_back(now() - t0);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void bench() {
  const size_t shapes[][3] = {{1, 960, 960},    {1, 960, 2560},   {1, 2560, 960},   {1, 960, 49280},  {4, 960, 2560},
                              {8, 960, 2560},   {16, 960, 2560},  {64, 960, 2560},  {64, 12288, 960}, {1024, 960, 2560},
                              {1024, 960, 960}, {1024, 2560, 960}, {1024, 768, 768}, {1024, 768, 3072}, {1024, 3072, 768}};
  for (auto& s : shapes) {
    const size_t M = s[0], K = s[1], N = s[2];
    auto x = randn(M * K);
    Weight w = make_weight(kBF16, N * K);
    std::vector<float> y(M * N);
    const int reps = M * N * K > 1e9 ? 5 : 15;
    const double tf = median_time([&] { linear(x.data(), M, w.data(), kBF16, N, K, nullptr, y.data(), LinearMode::F32); }, reps);
    const double tb = median_time([&] { linear(x.data(), M, w.data(), kBF16, N, K, nullptr, y.data(), LinearMode::Bf16); }, reps);
    std::printf("  linear bf16 w  rows=%-5zu [%5zu,%5zu]: f32-mode %7.1f GFLOP/s  bf16-mode %7.1f GFLOP/s  (f32-mode %.3f ms, %.1f GB/s of weights)\n", M, N, K,
                2.0 * M * N * K / tf / 1e9, 2.0 * M * N * K / tb / 1e9, tf * 1e3, 2.0 * N * K / tf / 1e9);
  }
  struct A {
    const char* name;
    size_t q, k, h, hk;
    long long off;
  } attn[] = {{"vision 1024x1024, 12 heads", 1024, 1024, 12, 12, -1}, {"prefill causal 1100, 15/5 heads", 1100, 1100, 15, 5, 0},
              {"decode 1 x 1100, 15/5 heads", 1, 1100, 15, 5, 1099}};
  for (auto& c : attn) {
    const size_t D = 64;
    auto q = randn(c.q * c.h * D), k = randn(c.k * c.hk * D), v = randn(c.k * c.hk * D);
    std::vector<float> out(c.q * c.h * D);
    const double t = median_time([&] { attention({q.data(), k.data(), v.data(), out.data(), c.q, c.k, c.h, c.hk, D, 0.125f, c.off}); }, 9);
    double pairs = 0;
    for (size_t i = 0; i < c.q; i++) pairs += c.off < 0 ? c.k : std::min<double>(c.k, c.off + i + 1);
    std::printf("  attention %-32s %7.1f GFLOP/s  %.3f ms\n", c.name, 4.0 * pairs * c.h * D / t / 1e9, t * 1e3);
  }
}

}  // namespace

// The quantized few-row linears (and a many-row case) at this ISA against the portable code (the
// scalar level), which the Node tests hold to the TypeScript reference: 1e-5 relative L2 (the
// integer products are exact; only the order of the float sums differs).
void test_quant() {
  if (current_isa() == Isa::Scalar) return;
  const size_t shapes[][3] = {{1, 32, 5}, {1, 64, 7}, {1, 96, 9}, {1, 288, 33}, {1, 960, 63}, {2, 128, 4}, {3, 256, 17}, {4, 320, 66}, {8, 160, 9}, {12, 96, 5}};
  for (int scheme : {8, 4}) {
    for (auto& sh : shapes) {
      const size_t M = sh[0], K = sh[1], N = sh[2];
      auto w = randn(N * K, 0.1f);
      auto x = randn(M * K);
      auto bias = randn(N);
      std::vector<uint8_t> q(scheme == 8 ? N * K : N * K / 2);
      std::vector<uint16_t> scales(N * K / 32), mins(N * K / 32);
      quantize_weights(w.data(), kF32, N, K, scheme, q.data(), scales.data(), scheme == 4 ? mins.data() : nullptr);
      std::vector<float> y(M * N, NAN), yref(M * N, NAN);
      QuantLinear part{q.data(), scales.data(), scheme == 4 ? mins.data() : nullptr, N, bias.data(), y.data()};
      linear_quant_many(x.data(), M, K, scheme, &part, 1);
      const Isa isa = current_isa();
      set_isa(Isa::Scalar);
      part.y = yref.data();
      linear_quant_many(x.data(), M, K, scheme, &part, 1);
      set_isa(isa);
      std::vector<double> ref(yref.begin(), yref.end());
      char what[128];
      std::snprintf(what, sizeof what, "quantized linear q%d rows=%zu in=%zu out=%zu", scheme, M, K, N);
      check(what, rel_l2(y, ref), 1e-5);
    }
  }
}

// RangeChunks hands every chunk out exactly once, whichever threads run which ranges: all ranges
// by the pool, and ranges run out of order by one thread (a late worker's share taken by another).
void test_range_chunks() {
  for (size_t n : {0, 1, 5, 64, 1001}) {
    for (size_t threads : {1, 2, 3, 7}) {
      std::vector<std::atomic<int>> hits(n);
      RangeChunks ranges(n, threads);
      auto task = [&](size_t t) { ranges.run(t, [&](size_t c) { hits[c]++; }); };
      if (threads == 3) {
        for (size_t t = ranges.tasks(); t-- > 0;) task(t);
      } else {
        parallel_for_each(ranges.tasks(), task);
      }
      size_t bad = 0;
      for (auto& h : hits) bad += h.load() != 1;
      check("RangeChunks n=" + std::to_string(n) + " threads=" + std::to_string(threads) + " (chunks not run once)", static_cast<double>(bad), 0);
    }
  }
}

int main(int argc, char** argv) {
  const bool doBench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
  const CpuFeatures& f = cpu_features();
  std::printf("threads %d; avx2 %d avx512 %d avx512bf16 %d neon %d dotprod %d\n", pool_threads(), f.avx2, f.avx512, f.avx512bf16, f.neon, f.dotprod);
  test_range_chunks();
  for (Isa isa : available_isas()) {
    set_isa(isa);
    std::printf("== %s%s\n", isa_name(isa), linear_bf16_native() ? " (bf16 mode on vdpbf16ps)" : "");
    test_linear();
    test_attention();
    test_elementwise();
    test_quant();
    if (doBench && isa != Isa::Scalar) bench();
  }
#ifdef SMOLVLM_X86
  if (f.avx2) {
    set_isa(Isa::Avx2);
    static const Backend emu = {emu16::linear_emu, emu16::attention_isa, emu16::rms_emu, emu16::ln_emu, emu16::rope_emu,
                                emu16::silu_emu,   emu16::gelu_emu,      emu16::add_emu, false};
    B = &emu;
    std::printf("== emulated 16-lane layout (AVX2 halves)\n");
    test_linear();
    test_attention();
    test_elementwise();
    B = &kDispatch;
  }
#endif
  std::printf(failures ? "%d FAILURES\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
