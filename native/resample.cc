// The two passes of image/resize.ts's separable Lanczos resize, bit for bit, on the pool's threads.
// resize.ts's resampleHorizontal / resampleVertical are the reference: the same fixed-point weights
// (precomputed there), accumulators that start at one half, and a shift and clamp to 0..255.
// JavaScript adds in doubles (exact here) and `>>` takes the sum modulo 2^32; unsigned 32-bit
// sums wrap the same way, so the results are identical even in a sum no real image reaches.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "threadpool.h"

namespace smolvlm {
namespace {

inline uint8_t clip8(uint32_t acc, int precision) {
  const int32_t v = static_cast<int32_t>(acc) >> precision;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

struct HorizontalJob {
  const uint8_t* src;
  size_t inWidth, y0, outWidth;
  const int32_t* bounds;
  const int32_t* kk;
  size_t ksize;
  int precision;
  uint8_t* out;
};

void horizontal_row(void* ctx, size_t r) {
  const HorizontalJob& j = *static_cast<const HorizontalJob*>(ctx);
  const uint8_t* row = j.src + (j.y0 + r) * j.inWidth * 3;
  uint8_t* out = j.out + r * j.outWidth * 3;
  const uint32_t half = uint32_t{1} << (j.precision - 1);
  for (size_t xx = 0; xx < j.outWidth; xx++) {
    const uint8_t* p = row + static_cast<size_t>(j.bounds[2 * xx]) * 3;
    const int32_t* k = j.kk + xx * j.ksize;
    const int32_t count = j.bounds[2 * xx + 1];
    uint32_t s0 = half, s1 = half, s2 = half;
    for (int32_t x = 0; x < count; x++, p += 3) {
      const uint32_t w = static_cast<uint32_t>(k[x]);
      s0 += p[0] * w;
      s1 += p[1] * w;
      s2 += p[2] * w;
    }
    out[3 * xx] = clip8(s0, j.precision);
    out[3 * xx + 1] = clip8(s1, j.precision);
    out[3 * xx + 2] = clip8(s2, j.precision);
  }
}

struct VerticalJob {
  const uint8_t* src;
  size_t rowLen;  // width * 3
  const int32_t* bounds;
  const int32_t* kk;
  size_t ksize, shift;
  int precision;
  uint8_t* out;
};

// Whole rows at a time (the loop over i vectorizes), as resize.ts does.
void vertical_row(void* ctx, size_t yy) {
  const VerticalJob& j = *static_cast<const VerticalJob*>(ctx);
  static thread_local std::vector<uint32_t> acc;
  acc.assign(j.rowLen, uint32_t{1} << (j.precision - 1));
  uint32_t* a = acc.data();
  const size_t first = static_cast<size_t>(j.bounds[2 * yy]) - j.shift;
  const int32_t count = j.bounds[2 * yy + 1];
  for (int32_t y = 0; y < count; y++) {
    const uint32_t w = static_cast<uint32_t>(j.kk[yy * j.ksize + y]);
    const uint8_t* s = j.src + (first + y) * j.rowLen;
    for (size_t i = 0; i < j.rowLen; i++) a[i] += s[i] * w;
  }
  uint8_t* out = j.out + yy * j.rowLen;
  for (size_t i = 0; i < j.rowLen; i++) out[i] = clip8(a[i], j.precision);
}

}  // namespace

void resample_horizontal(const uint8_t* src, size_t inWidth, size_t y0, size_t y1, size_t outWidth, const int32_t* bounds, const int32_t* kk,
                         size_t ksize, int precision, uint8_t* out) {
  HorizontalJob j{src, inWidth, y0, outWidth, bounds, kk, ksize, precision, out};
  parallel_for(y1 - y0, horizontal_row, &j);
}

void resample_vertical(const uint8_t* src, size_t width, size_t outHeight, const int32_t* bounds, const int32_t* kk, size_t ksize, int precision,
                       size_t shift, uint8_t* out) {
  VerticalJob j{src, width * 3, bounds, kk, ksize, shift, precision, out};
  parallel_for(outHeight, vertical_row, &j);
}

}  // namespace smolvlm
