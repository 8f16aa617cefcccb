// N-API glue: argument checking and conversion only. Every function writes into arrays the
// caller allocated (src/backend/native-kernels.ts owns the shapes and the allocation).
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"
#include "mmap.h"

namespace smolvlm {
namespace {

struct Array {
  void* data = nullptr;
  size_t length = 0;  // elements
  napi_typedarray_type type = napi_float32_array;
};

class Args {
 public:
  Args(napi_env env, napi_callback_info info, size_t expected, const char* fn) : env_(env), fn_(fn) {
    argc_ = kMax;
    napi_get_cb_info(env, info, &argc_, argv_, nullptr, nullptr);
    if (argc_ < expected) fail("expects " + std::to_string(expected) + " arguments, got " + std::to_string(argc_));
  }

  bool ok() const { return ok_; }
  size_t argc() const { return argc_; }
  napi_env env() const { return env_; }

  bool is_nullish(size_t i) {
    napi_valuetype t = napi_undefined;
    if (i < argc_) napi_typeof(env_, argv_[i], &t);
    return t == napi_null || t == napi_undefined;
  }

  Array array(size_t i, napi_typedarray_type want, const char* what) {
    Array a;
    if (!ok_) return a;
    bool is = false;
    if (napi_is_typedarray(env_, argv_[i], &is) != napi_ok || !is) {
      fail(std::string(what) + " must be a " + type_name(want));
      return a;
    }
    napi_value buffer;
    size_t offset = 0;
    napi_get_typedarray_info(env_, argv_[i], &a.type, &a.length, &a.data, &buffer, &offset);
    if (a.type != want) fail(std::string(what) + " must be a " + type_name(want));
    return a;
  }

  // A Float32Array, or nullptr for null/undefined.
  const float* optional_f32(size_t i, size_t minLength, const char* what) {
    if (!ok_ || is_nullish(i)) return nullptr;
    Array a = array(i, napi_float32_array, what);
    need(a, minLength, what);
    return static_cast<const float*>(a.data);
  }

  double number(size_t i, const char* what) {
    double v = 0;
    if (!ok_) return v;
    if (napi_get_value_double(env_, argv_[i], &v) != napi_ok || !std::isfinite(v)) fail(std::string(what) + " must be a finite number");
    return v;
  }

  size_t count(size_t i, const char* what) {
    const double v = number(i, what);
    if (ok_ && (v < 0 || v != std::floor(v) || v > 9007199254740991.0)) fail(std::string(what) + " must be a whole number >= 0");
    return ok_ ? static_cast<size_t>(v) : 0;
  }

  bool boolean(size_t i, const char* what) {
    bool v = false;
    if (ok_ && napi_get_value_bool(env_, argv_[i], &v) != napi_ok) fail(std::string(what) + " must be a boolean");
    return v;
  }

  void need(const Array& a, size_t minLength, const char* what) {
    if (ok_ && a.length < minLength) {
      fail(std::string(what) + " has " + std::to_string(a.length) + " elements, needs at least " + std::to_string(minLength));
    }
  }

  void fail(const std::string& msg) {
    if (!ok_) return;
    ok_ = false;
    const std::string full = std::string("smolvlm native ") + fn_ + ": " + msg;
    napi_throw_range_error(env_, nullptr, full.c_str());
  }

 private:
  static const char* type_name(napi_typedarray_type t) {
    switch (t) {
      case napi_float32_array: return "Float32Array";
      case napi_uint16_array: return "Uint16Array";
      case napi_int8_array: return "Int8Array";
      case napi_uint8_array: return "Uint8Array";
      case napi_int32_array: return "Int32Array";
      default: return "typed array";
    }
  }
  static constexpr size_t kMax = 28;
  napi_env env_;
  const char* fn_;
  size_t argc_ = 0;
  napi_value argv_[kMax] = {};
  bool ok_ = true;
};

size_t mul(size_t a, size_t b) { return a * b; }

// linear(x, rows, w, dtype(0 F32 | 1 BF16 | 2 F16), outDim, inDim, bias|null, y, mode(0 f32 | 1 bf16))
napi_value Linear(napi_env env, napi_callback_info info) {
  Args a(env, info, 9, "linear");
  const size_t rows = a.count(1, "rows");
  const size_t dtype = a.count(3, "dtype");
  const size_t outDim = a.count(4, "outDim"), inDim = a.count(5, "inDim");
  const size_t mode = a.count(8, "mode");
  if (a.ok() && dtype > 2) a.fail("dtype must be 0 (F32), 1 (BF16) or 2 (F16)");
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(rows, inDim), "x");
  Array w = a.array(2, dtype == kF32 ? napi_float32_array : napi_uint16_array, "weight data");
  a.need(w, mul(outDim, inDim), "weight data");
  const float* bias = a.optional_f32(6, outDim, "bias");
  Array y = a.array(7, napi_float32_array, "y");
  a.need(y, mul(rows, outDim), "y");
  if (!a.ok()) return nullptr;
  linear(static_cast<const float*>(x.data), rows, w.data, static_cast<int>(dtype), outDim, inDim, bias, static_cast<float*>(y.data),
         mode == 1 ? LinearMode::Bf16 : LinearMode::F32);
  return nullptr;
}

// linearMany(x, rows, inDim, mode, then per weight (1 to 4): w, dtype, outDim, bias|null, y)
napi_value LinearMany(napi_env env, napi_callback_info info) {
  Args a(env, info, 9, "linearMany");
  const size_t rows = a.count(1, "rows"), inDim = a.count(2, "inDim");
  const size_t mode = a.count(3, "mode");
  const size_t parts = (a.argc() - 4) / 5;
  if (a.ok() && (parts < 1 || parts > static_cast<size_t>(kMaxLinearParts) || (a.argc() - 4) % 5 != 0)) {
    a.fail("expects 1 to 4 groups of (w, dtype, outDim, bias, y)");
  }
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(rows, inDim), "x");
  FloatLinear ws[kMaxLinearParts] = {};
  for (size_t i = 0; i < parts && a.ok(); i++) {
    const size_t at = 4 + 5 * i;
    const size_t dtype = a.count(at + 1, "dtype"), outDim = a.count(at + 2, "outDim");
    if (a.ok() && dtype > 2) a.fail("dtype must be 0 (F32), 1 (BF16) or 2 (F16)");
    Array w = a.array(at, dtype == kF32 ? napi_float32_array : napi_uint16_array, "weight data");
    a.need(w, mul(outDim, inDim), "weight data");
    const float* bias = a.optional_f32(at + 3, outDim, "bias");
    Array y = a.array(at + 4, napi_float32_array, "y");
    a.need(y, mul(rows, outDim), "y");
    ws[i] = {w.data, static_cast<int>(dtype), outDim, bias, static_cast<float*>(y.data)};
  }
  if (!a.ok()) return nullptr;
  linear_many(static_cast<const float*>(x.data), rows, inDim, ws, static_cast<int>(parts), mode == 1 ? LinearMode::Bf16 : LinearMode::F32);
  return nullptr;
}

// A quantized weight's arrays (format.ts), checked against [rows][cols] and the scheme.
struct QuantArrays {
  Array q, scales, mins;
};

QuantArrays quant_arrays(Args& a, size_t codesAt, size_t scalesAt, size_t minsAt, size_t scheme, size_t rows, size_t cols) {
  QuantArrays out;
  if (scheme == kQ4x4) {  // one packed array (kernels.h); scales and mins are null
    out.q = a.array(codesAt, napi_uint8_array, "packed Q4_1x4 weight");
    a.need(out.q, q4x4_bytes(rows, cols), "packed Q4_1x4 weight");
    return out;
  }
  out.q = a.array(codesAt, scheme == 8 ? napi_int8_array : napi_uint8_array, "codes");
  a.need(out.q, scheme == 8 ? mul(rows, cols) : mul(rows, cols) / 2, "codes");
  out.scales = a.array(scalesAt, napi_uint16_array, "scales");
  a.need(out.scales, mul(rows, cols) / 32, "scales");
  if (scheme == 4) {
    out.mins = a.array(minsAt, napi_uint16_array, "mins");
    a.need(out.mins, mul(rows, cols) / 32, "mins");
  }
  return out;
}

// linearQuant(x, rows, inDim, scheme (8 | 4 | 5: Q4_1x4), then for each of 1 to 4 weights reading x:
//             q (Int8Array | Uint8Array; Q4_1x4: the packed Uint8Array), scales|null, mins|null, outDim, bias|null, y)
napi_value LinearQuant(napi_env env, napi_callback_info info) {
  Args a(env, info, 10, "linearQuant");
  const size_t rows = a.count(1, "rows");
  const size_t inDim = a.count(2, "inDim");
  const size_t scheme = a.count(3, "scheme");
  const size_t groups = (a.argc() - 4) / 6;
  if (a.ok() && scheme != 8 && scheme != 4 && scheme != static_cast<size_t>(kQ4x4)) a.fail("scheme must be 8 (Q8_0), 4 (Q4_1) or 5 (Q4_1x4)");
  if (a.ok() && inDim % 32 != 0) a.fail("inDim must be a multiple of 32");
  if (a.ok() && (groups < 1 || groups > static_cast<size_t>(kMaxQuantParts) || (a.argc() - 4) % 6 != 0)) a.fail("expects 1 to 4 groups of (q, scales, mins, outDim, bias, y)");
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(rows, inDim), "x");
  QuantLinear parts[kMaxQuantParts] = {};
  for (size_t g = 0; g < groups && a.ok(); g++) {
    const size_t at = 4 + 6 * g;
    const size_t outDim = a.count(at + 3, "outDim");
    const QuantArrays w = quant_arrays(a, at, at + 1, at + 2, scheme, outDim, inDim);
    const float* bias = a.optional_f32(at + 4, outDim, "bias");
    Array y = a.array(at + 5, napi_float32_array, "y");
    a.need(y, mul(rows, outDim), "y");
    parts[g] = {w.q.data, static_cast<const uint16_t*>(w.scales.data), static_cast<const uint16_t*>(w.mins.data), outDim, bias, static_cast<float*>(y.data)};
  }
  if (!a.ok()) return nullptr;
  linear_quant_many(static_cast<const float*>(x.data), rows, inDim, static_cast<int>(scheme), parts, static_cast<int>(groups));
  return nullptr;
}

// q4x4Bytes(rows, cols) -> bytes of a Q4_1 [rows][cols] weight repacked as Q4_1x4 (kernels.h)
napi_value Q4x4Bytes(napi_env env, napi_callback_info info) {
  Args a(env, info, 2, "q4x4Bytes");
  const size_t rows = a.count(0, "rows"), cols = a.count(1, "cols");
  if (a.ok() && cols % 32 != 0) a.fail("cols must be a multiple of 32");
  if (!a.ok()) return nullptr;
  napi_value v;
  napi_create_double(env, static_cast<double>(q4x4_bytes(rows, cols)), &v);
  return v;
}

// packQ4x4(q, scales, mins, rows, cols, out): a Q4_1 weight repacked as Q4_1x4 into out
napi_value PackQ4x4(napi_env env, napi_callback_info info) {
  Args a(env, info, 6, "packQ4x4");
  const size_t rows = a.count(3, "rows"), cols = a.count(4, "cols");
  if (a.ok() && cols % 32 != 0) a.fail("cols must be a multiple of 32");
  const QuantArrays w = quant_arrays(a, 0, 1, 2, 4, rows, cols);
  Array out = a.array(5, napi_uint8_array, "out");
  a.need(out, q4x4_bytes(rows, cols), "out");
  if (!a.ok()) return nullptr;
  prepare_output_pages(out.data, q4x4_bytes(rows, cols));
  pack_q4x4(static_cast<const uint8_t*>(w.q.data), static_cast<const uint16_t*>(w.scales.data), static_cast<const uint16_t*>(w.mins.data), rows, cols,
            static_cast<uint8_t*>(out.data));
  return nullptr;
}

// quantize(w, dtype (0 F32 | 1 BF16 | 2 F16), rows, cols, scheme (8 | 4), q, scales, mins|null)
napi_value Quantize(napi_env env, napi_callback_info info) {
  Args a(env, info, 8, "quantize");
  const size_t dtype = a.count(1, "dtype");
  const size_t rows = a.count(2, "rows"), cols = a.count(3, "cols");
  const size_t scheme = a.count(4, "scheme");
  if (a.ok() && dtype > 2) a.fail("dtype must be 0 (F32), 1 (BF16) or 2 (F16)");
  if (a.ok() && scheme != 8 && scheme != 4) a.fail("scheme must be 8 (Q8_0) or 4 (Q4_1)");
  if (a.ok() && cols % 32 != 0) a.fail("cols must be a multiple of 32");
  Array w = a.array(0, dtype == kF32 ? napi_float32_array : napi_uint16_array, "weight data");
  a.need(w, mul(rows, cols), "weight data");
  const QuantArrays out = quant_arrays(a, 5, 6, 7, scheme, rows, cols);
  if (!a.ok()) return nullptr;
  prepare_output_pages(out.q.data, scheme == 8 ? mul(rows, cols) : mul(rows, cols) / 2);
  if (!quantize_weights(w.data, static_cast<int>(dtype), rows, cols, static_cast<int>(scheme), out.q.data, static_cast<uint16_t*>(out.scales.data),
                        static_cast<uint16_t*>(out.mins.data))) {
    a.fail("a block's scale or minimum does not fit a half float (weights beyond +-65504?)");
  }
  return nullptr;
}

// rmsNorm(x, rows, weight, eps, y)
napi_value RmsNorm(napi_env env, napi_callback_info info) {
  Args a(env, info, 5, "rmsNorm");
  const size_t rows = a.count(1, "rows");
  Array w = a.array(2, napi_float32_array, "weight");
  const double eps = a.number(3, "eps");
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(rows, w.length), "x");
  Array y = a.array(4, napi_float32_array, "y");
  a.need(y, mul(rows, w.length), "y");
  if (!a.ok()) return nullptr;
  rms_norm(static_cast<const float*>(x.data), rows, w.length, static_cast<const float*>(w.data), static_cast<float>(eps), static_cast<float*>(y.data));
  return nullptr;
}

// layerNorm(x, rows, weight, bias, eps, y)
napi_value LayerNorm(napi_env env, napi_callback_info info) {
  Args a(env, info, 6, "layerNorm");
  const size_t rows = a.count(1, "rows");
  Array w = a.array(2, napi_float32_array, "weight");
  Array b = a.array(3, napi_float32_array, "bias");
  a.need(b, w.length, "bias");
  const double eps = a.number(4, "eps");
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(rows, w.length), "x");
  Array y = a.array(5, napi_float32_array, "y");
  a.need(y, mul(rows, w.length), "y");
  if (!a.ok()) return nullptr;
  layer_norm(static_cast<const float*>(x.data), rows, w.length, static_cast<const float*>(w.data), static_cast<const float*>(b.data),
             static_cast<float>(eps), static_cast<float*>(y.data));
  return nullptr;
}

// rope(x, rows, numHeads, headDim, cos, sin)
napi_value Rope(napi_env env, napi_callback_info info) {
  Args a(env, info, 6, "rope");
  const size_t rows = a.count(1, "rows"), heads = a.count(2, "numHeads"), headDim = a.count(3, "headDim");
  Array x = a.array(0, napi_float32_array, "x");
  a.need(x, mul(mul(rows, heads), headDim), "x");
  Array c = a.array(4, napi_float32_array, "cos");
  a.need(c, mul(rows, headDim / 2), "cos");
  Array s = a.array(5, napi_float32_array, "sin");
  a.need(s, mul(rows, headDim / 2), "sin");
  if (!a.ok()) return nullptr;
  rope(static_cast<float*>(x.data), rows, heads, headDim, static_cast<const float*>(c.data), static_cast<const float*>(s.data));
  return nullptr;
}

// attention(q, k, v, seqQ, seqK, numHeads, numKvHeads, headDim, scale, causalOffset (-1: none), out
//           [, kvDtype (0 F32 | 1 BF16), kvRowStride, kvHeadStride, mode (0 f32 | 1 bf16)])
// k and v are Float32Arrays, or Uint16Arrays of bf16 bits when kvDtype is 1; the strides default to
// position-major rows (kernels.h AttentionArgs).
napi_value Attention(napi_env env, napi_callback_info info) {
  Args a(env, info, 11, "attention");
  const size_t seqQ = a.count(3, "seqQ"), seqK = a.count(4, "seqK");
  const size_t heads = a.count(5, "numHeads"), kvHeads = a.count(6, "numKvHeads"), headDim = a.count(7, "headDim");
  const double scale = a.number(8, "scale");
  const double offset = a.number(9, "causalOffset");
  const size_t kvDtype = a.is_nullish(11) ? 0 : a.count(11, "kvDtype");
  // Optional strides (kernels.h AttentionArgs); the default is position-major rows.
  const size_t rowStride = a.is_nullish(12) ? mul(kvHeads, headDim) : a.count(12, "kvRowStride");
  const size_t headStride = a.is_nullish(13) ? headDim : a.count(13, "kvHeadStride");
  const size_t mode = a.is_nullish(14) ? 0 : a.count(14, "mode");
  // Elements k and v must hold: the last head's last position's row.
  const size_t kvExtent = seqK == 0 || kvHeads == 0 ? 0 : mul(seqK - 1, rowStride) + mul(kvHeads - 1, headStride) + headDim;
  if (a.ok() && kvDtype > 1) a.fail("kvDtype must be 0 (F32) or 1 (BF16)");
  if (a.ok() && mode > 1) a.fail("mode must be 0 (f32) or 1 (bf16)");
  if (a.ok() && (kvHeads == 0 || heads % kvHeads != 0)) a.fail("numHeads must be a multiple of numKvHeads");
  if (a.ok() && offset != std::floor(offset)) a.fail("causalOffset must be a whole number (or -1 for none)");
  const napi_typedarray_type kvType = kvDtype == 1 ? napi_uint16_array : napi_float32_array;
  Array q = a.array(0, napi_float32_array, "q");
  a.need(q, mul(seqQ, mul(heads, headDim)), "q");
  Array k = a.array(1, kvType, "k");
  a.need(k, kvExtent, "k");
  Array v = a.array(2, kvType, "v");
  a.need(v, kvExtent, "v");
  Array out = a.array(10, napi_float32_array, "out");
  a.need(out, mul(seqQ, mul(heads, headDim)), "out");
  if (!a.ok()) return nullptr;
  AttentionArgs args{static_cast<const float*>(q.data),
                     k.data,
                     v.data,
                     static_cast<float*>(out.data),
                     seqQ,
                     seqK,
                     heads,
                     kvHeads,
                     headDim,
                     static_cast<float>(scale),
                     offset < 0 ? -1 : static_cast<long long>(offset),
                     kvDtype == 1 ? kBF16 : kF32,
                     rowStride,
                     headStride,
                     mode == 1};
  attention(args);
  return nullptr;
}

// siluMul(gate, up, y)
napi_value SiluMul(napi_env env, napi_callback_info info) {
  Args a(env, info, 3, "siluMul");
  Array g = a.array(0, napi_float32_array, "gate");
  Array u = a.array(1, napi_float32_array, "up");
  a.need(u, g.length, "up");
  Array y = a.array(2, napi_float32_array, "y");
  a.need(y, g.length, "y");
  if (!a.ok()) return nullptr;
  silu_mul(static_cast<const float*>(g.data), static_cast<const float*>(u.data), static_cast<float*>(y.data), g.length);
  return nullptr;
}

// gelu(x, approximate)
napi_value Gelu(napi_env env, napi_callback_info info) {
  Args a(env, info, 2, "gelu");
  Array x = a.array(0, napi_float32_array, "x");
  const bool approximate = a.boolean(1, "approximate");
  if (!a.ok()) return nullptr;
  gelu(static_cast<float*>(x.data), x.length, approximate);
  return nullptr;
}

// addInPlace(a, b)
napi_value AddInPlace(napi_env env, napi_callback_info info) {
  Args a(env, info, 2, "addInPlace");
  Array x = a.array(0, napi_float32_array, "a");
  Array b = a.array(1, napi_float32_array, "b");
  a.need(b, x.length, "b");
  if (!a.ok()) return nullptr;
  add_inplace(static_cast<float*>(x.data), static_cast<const float*>(b.data), x.length);
  return nullptr;
}

// The weights of one resize axis (image/resize.ts AxisCoefficients) for outSize outputs, each
// range checked to lie inside inSize inputs once `shift` is taken off its start.
struct Axis {
  const int32_t* bounds = nullptr;
  const int32_t* kk = nullptr;
  size_t ksize = 0;
  int precision = 0;
};

Axis axis_arg(Args& a, size_t at, size_t outSize, size_t inSize, size_t shift) {
  Axis ax;
  Array bounds = a.array(at, napi_int32_array, "bounds");
  a.need(bounds, mul(2, outSize), "bounds");
  Array kk = a.array(at + 1, napi_int32_array, "kk");
  ax.ksize = a.count(at + 2, "ksize");
  a.need(kk, mul(outSize, ax.ksize), "kk");
  const double precision = a.number(at + 3, "precision");
  if (a.ok() && !(precision >= 1 && precision <= 30 && precision == std::floor(precision))) a.fail("precision must be a whole number from 1 to 30");
  if (!a.ok()) return ax;
  const int32_t* b = static_cast<const int32_t*>(bounds.data);
  for (size_t i = 0; i < outSize; i++) {
    const int64_t start = static_cast<int64_t>(b[2 * i]) - static_cast<int64_t>(shift), count = b[2 * i + 1];
    if (start < 0 || count < 0 || static_cast<size_t>(count) > ax.ksize || static_cast<size_t>(start + count) > inSize) {
      a.fail("output " + std::to_string(i) + " reads inputs [" + std::to_string(start) + ", " + std::to_string(start + count) + ") of " + std::to_string(inSize) +
             " with " + std::to_string(ax.ksize) + " weights");
      return ax;
    }
  }
  ax.bounds = b;
  ax.kk = static_cast<const int32_t*>(kk.data);
  ax.precision = static_cast<int>(precision);
  return ax;
}

// resampleHorizontal(src, inWidth, y0, y1, outWidth, bounds, kk, ksize, precision, out): rows
// [y0, y1) of an RGB image inWidth wide, resampled to outWidth.
napi_value ResampleHorizontal(napi_env env, napi_callback_info info) {
  Args a(env, info, 10, "resampleHorizontal");
  const size_t inWidth = a.count(1, "inWidth"), y0 = a.count(2, "y0"), y1 = a.count(3, "y1"), outWidth = a.count(4, "outWidth");
  if (a.ok() && y1 < y0) a.fail("y1 must be >= y0");
  Array src = a.array(0, napi_uint8_array, "src");
  a.need(src, mul(mul(y1, inWidth), 3), "src");
  const Axis ax = axis_arg(a, 5, outWidth, inWidth, 0);
  Array out = a.array(9, napi_uint8_array, "out");
  a.need(out, mul(mul(y1 - y0, outWidth), 3), "out");
  if (!a.ok()) return nullptr;
  resample_horizontal(static_cast<const uint8_t*>(src.data), inWidth, y0, y1, outWidth, ax.bounds, ax.kk, ax.ksize, ax.precision, static_cast<uint8_t*>(out.data));
  return nullptr;
}

// resampleVertical(src, width, outHeight, bounds, kk, ksize, precision, shift, out): an RGB image
// `width` wide whose first row is input row `shift`, resampled to outHeight rows.
napi_value ResampleVertical(napi_env env, napi_callback_info info) {
  Args a(env, info, 9, "resampleVertical");
  const size_t width = a.count(1, "width"), outHeight = a.count(2, "outHeight"), shift = a.count(7, "shift");
  Array src = a.array(0, napi_uint8_array, "src");
  if (a.ok() && width == 0) a.fail("width must be positive");
  const size_t inRows = a.ok() ? src.length / (width * 3) : 0;
  const Axis ax = axis_arg(a, 3, outHeight, inRows, shift);
  Array out = a.array(8, napi_uint8_array, "out");
  a.need(out, mul(mul(outHeight, width), 3), "out");
  if (!a.ok()) return nullptr;
  resample_vertical(static_cast<const uint8_t*>(src.data), width, outHeight, ax.bounds, ax.kk, ax.ksize, ax.precision, shift, static_cast<uint8_t*>(out.data));
  return nullptr;
}

// roundRowsToBf16(src, from, srcStride, rows, cols, dst, at): dst[at + r * cols + c] =
// bf16(src[from + r * srcStride + c]) for r < rows, c < cols.
napi_value RoundRowsToBf16(napi_env env, napi_callback_info info) {
  Args a(env, info, 7, "roundRowsToBf16");
  const size_t from = a.count(1, "from"), stride = a.count(2, "srcStride"), rows = a.count(3, "rows"), cols = a.count(4, "cols"), at = a.count(6, "at");
  if (a.ok() && rows > 1 && stride < cols) a.fail("srcStride must be at least cols");
  Array src = a.array(0, napi_float32_array, "src");
  if (rows > 0) a.need(src, from + (rows - 1) * stride + cols, "src");
  Array dst = a.array(5, napi_uint16_array, "dst");
  a.need(dst, at + mul(rows, cols), "dst");
  if (!a.ok() || rows == 0) return nullptr;
  round_rows_to_bf16_bits(static_cast<const float*>(src.data) + from, stride, rows, cols, static_cast<uint16_t*>(dst.data) + at);
  return nullptr;
}

napi_value make_string(napi_env env, const char* s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

napi_value make_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

// info() -> { isa, isas, threads, bf16Native, packedQ4, features: { avx2, avx512, avx512bf16, avx512vnni, avxvnni, neon, dotprod } }
napi_value Info(napi_env env, napi_callback_info) {
  napi_value o, isas, features, threads;
  napi_create_object(env, &o);
  napi_set_named_property(env, o, "isa", make_string(env, isa_name(current_isa())));
  const auto list = available_isas();
  napi_create_array_with_length(env, list.size(), &isas);
  for (size_t i = 0; i < list.size(); i++) napi_set_element(env, isas, static_cast<uint32_t>(i), make_string(env, isa_name(list[i])));
  napi_set_named_property(env, o, "isas", isas);
  napi_create_int32(env, pool_threads(), &threads);
  napi_set_named_property(env, o, "threads", threads);
  napi_set_named_property(env, o, "bf16Native", make_bool(env, linear_bf16_native()));
  napi_set_named_property(env, o, "packedQ4", make_bool(env, q4x4_preferred()));
  const CpuFeatures& f = cpu_features();
  napi_create_object(env, &features);
  napi_set_named_property(env, features, "avx2", make_bool(env, f.avx2));
  napi_set_named_property(env, features, "avx512", make_bool(env, f.avx512));
  napi_set_named_property(env, features, "avx512bf16", make_bool(env, f.avx512bf16));
  napi_set_named_property(env, features, "avx512vnni", make_bool(env, f.avx512vnni));
  napi_set_named_property(env, features, "avxvnni", make_bool(env, f.avxvnni));
  napi_set_named_property(env, features, "dotprod", make_bool(env, f.dotprod));
  napi_set_named_property(env, features, "neon", make_bool(env, f.neon));
  napi_set_named_property(env, o, "features", features);
  return o;
}

// The one string argument of a setter (up to 31 bytes) into buf; false (with a TypeError thrown)
// when there is none.
bool read_name(napi_env env, napi_callback_info info, const char* fn, char (&buf)[32]) {
  napi_value argv[1];
  size_t argc = 1, len = 0;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, nullptr, (std::string("smolvlm native ") + fn + ": expects a name").c_str());
    return false;
  }
  return true;
}

// setIsa(name) -> boolean (false: unknown or not supported by this CPU; nothing changes)
napi_value SetIsa(napi_env env, napi_callback_info info) {
  char buf[32] = {0};
  if (!read_name(env, info, "setIsa", buf)) return nullptr;
  Isa isa;
  return make_bool(env, parse_isa(buf, &isa) && set_isa(isa));
}

// setQuantDot(name) -> boolean: "auto", "maddubs" or "vnni-emulated" (kernels.h set_quant_dot).
napi_value SetQuantDot(napi_env env, napi_callback_info info) {
  char buf[32] = {0};
  if (!read_name(env, info, "setQuantDot", buf)) return nullptr;
  return make_bool(env, set_quant_dot(buf));
}

}  // namespace

// peak.cc: machine limits for benchmarks.
napi_value MeasurePeakFlops(napi_env env, napi_callback_info info);
napi_value MeasureBandwidth(napi_env env, napi_callback_info info);
napi_value MeasureReadBandwidth(napi_env env, napi_callback_info info);
}  // namespace smolvlm

NAPI_MODULE_INIT() {
  using namespace smolvlm;
  const napi_property_descriptor props[] = {
      {"linear", nullptr, Linear, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rmsNorm", nullptr, RmsNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNorm", nullptr, LayerNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rope", nullptr, Rope, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attention", nullptr, Attention, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"siluMul", nullptr, SiluMul, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"addInPlace", nullptr, AddInPlace, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"roundRowsToBf16", nullptr, RoundRowsToBf16, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"resampleHorizontal", nullptr, ResampleHorizontal, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"resampleVertical", nullptr, ResampleVertical, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setIsa", nullptr, SetIsa, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setQuantDot", nullptr, SetQuantDot, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"linearMany", nullptr, LinearMany, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"linearQuant", nullptr, LinearQuant, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"q4x4Bytes", nullptr, Q4x4Bytes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"packQ4x4", nullptr, PackQ4x4, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"quantize", nullptr, Quantize, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"releasePages", nullptr, ReleasePages, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"allocPages", nullptr, AllocPages, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"copyAndRelease", nullptr, CopyAndRelease, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dropFileCache", nullptr, DropFileCache, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"mapFile", nullptr, MapFile, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"settlePageCache", nullptr, SettlePageCache, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"measurePeakFlops", nullptr, MeasurePeakFlops, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"measureBandwidth", nullptr, MeasureBandwidth, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"measureReadBandwidth", nullptr, MeasureReadBandwidth, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
