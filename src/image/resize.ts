/**
 * Lanczos resampling of 8-bit RGB, bit for bit as the two references do it:
 * - `resizeLanczos`: Pillow's `Image.resize(size, Image.LANCZOS)` (22-bit fixed-point weights);
 * - `resizeLanczosTorch`: torch's `interpolate(mode="lanczos", antialias=True)` on uint8, which is
 *   what transformers 5's default (torchvision) Idefics3 image processor runs.
 * Both share Pillow's coefficient rules (support widened by the downscale factor, centre and bounds
 * rounding, normalisation to sum 1) and two separable passes with the intermediate image rounded
 * and clipped to 8 bits; they differ only in the fixed-point precision of the weights, which moves
 * ~1-2% of pixels by one level. Checked against Pillow 13.0.0 and torch 2.14.1 / torchvision 0.27.
 */
import type { RgbImage } from "./types.js";

/** Pillow's PRECISION_BITS for 8-bit images: 32 bits minus 8 for the value and 2 for overflow. */
const PRECISION_BITS = 22;
const LANCZOS_SUPPORT = 3;

/** One axis: output i reads `count` input pixels from `start` with weights kk[i*ksize ..]. */
export interface AxisCoefficients {
  ksize: number;
  /** [start, count] per output index. */
  bounds: Int32Array;
  /** Fixed-point weights, ksize per output index (unused tail is 0). */
  kk: Int32Array;
  /** Fraction bits of kk. */
  precision: number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczos(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** Both libraries round half away from zero when converting a weight to fixed point. */
function toFixed(k: number, one: number): number {
  return k < 0 ? Math.trunc(-0.5 + k * one) : Math.trunc(0.5 + k * one);
}

/** Normalised float weights of one axis, before the conversion to fixed point. */
interface FloatCoefficients {
  ksize: number;
  bounds: Int32Array;
  weights: Float64Array;
  /** The largest weight of the whole axis (torch sizes its fixed point from it). */
  wmax: number;
}

/** Pillow's precompute_coeffs for the whole input range (box 0..inSize); torch's aa weights agree. */
function floatCoefficients(inSize: number, outSize: number): FloatCoefficients {
  const scale = inSize / outSize;
  // Upscaling keeps the kernel at its natural width; downscaling widens it to low-pass first.
  const filterscale = scale < 1 ? 1 : scale;
  const support = LANCZOS_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterscale = 1 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Float64Array(outSize * ksize);
  let wmax = 0;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C casts truncate toward zero; the clamps then keep the taps inside the image.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5));
    const count = xmax - xmin;
    const w = weights.subarray(xx * ksize, xx * ksize + count);
    let ww = 0;
    for (let x = 0; x < count; x++) {
      w[x] = lanczos((x + xmin - center + 0.5) * invFilterscale);
      ww += w[x]!;
    }
    if (ww !== 0) {
      for (let x = 0; x < count; x++) w[x] = w[x]! / ww;
    }
    for (let x = 0; x < count; x++) wmax = Math.max(wmax, w[x]!);
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = count;
  }
  return { ksize, bounds, weights, wmax };
}

function quantize(f: FloatCoefficients, precision: number): AxisCoefficients {
  const one = 2 ** precision;
  const kk = new Int32Array(f.weights.length);
  for (let i = 0; i < kk.length; i++) kk[i] = toFixed(f.weights[i]!, one);
  return { ksize: f.ksize, bounds: f.bounds, kk, precision };
}

/**
 * torch's compute_index_ranges_int16_weights: the most fraction bits (at most 22) such that the
 * largest weight, doubled, still fits in an int16; so each axis gets its own precision.
 */
function torchPrecision(wmax: number): number {
  let p = 0;
  for (; p < 22; p++) {
    if (Math.trunc(0.5 + wmax * 2 ** (p + 1)) >= 1 << 15) break;
  }
  return p;
}

/** Pillow's coefficients: 22 fraction bits for every axis. */
export function lanczosCoefficients(inSize: number, outSize: number): AxisCoefficients {
  return quantize(floatCoefficients(inSize, outSize), PRECISION_BITS);
}

/** torch's uint8 antialiased coefficients: int16 weights with a per-axis precision. */
export function torchLanczosCoefficients(inSize: number, outSize: number): AxisCoefficients {
  const f = floatCoefficients(inSize, outSize);
  return quantize(f, torchPrecision(f.wmax));
}

/** Drop the fraction bits (arithmetic shift) and clamp to 0..255, as both libraries do. */
function clip8(acc: number, precision: number): number {
  const v = acc >> precision;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * The two passes of a separable resize over 8-bit RGB. `typescriptPasses` below is the reference;
 * a backend may supply the same arithmetic natively (`Kernels.resample`), bit for bit.
 */
export interface ResamplePasses {
  /** Rows [y0, y1) of `src` (`inWidth` pixels wide) resampled to `outWidth`: (y1 - y0) rows into `out`. */
  horizontal(src: Uint8Array, inWidth: number, y0: number, y1: number, outWidth: number, c: AxisCoefficients, out: Uint8Array): void;
  /** `outHeight` rows into `out`; output row i reads rows c.bounds[2i] - shift .. of `src` (`width` pixels wide). */
  vertical(src: Uint8Array, width: number, outHeight: number, c: AxisCoefficients, shift: number, out: Uint8Array): void;
}

export const typescriptPasses: ResamplePasses = {
  horizontal(src, inWidth, y0, y1, outWidth, c, out) {
    const { ksize, bounds, kk, precision } = c;
    // Every accumulator starts at one half so that the final shift rounds to nearest.
    const half = 2 ** (precision - 1);
    let o = 0;
    for (let y = y0; y < y1; y++) {
      const rowStart = y * inWidth * 3;
      for (let xx = 0; xx < outWidth; xx++) {
        const count = bounds[xx * 2 + 1]!;
        const kOff = xx * ksize;
        let p = rowStart + bounds[xx * 2]! * 3;
        let s0 = half;
        let s1 = half;
        let s2 = half;
        for (let x = 0; x < count; x++, p += 3) {
          const k = kk[kOff + x]!;
          s0 += src[p]! * k;
          s1 += src[p + 1]! * k;
          s2 += src[p + 2]! * k;
        }
        out[o++] = clip8(s0, precision);
        out[o++] = clip8(s1, precision);
        out[o++] = clip8(s2, precision);
      }
    }
  },

  vertical(src, width, outHeight, c, shift, out) {
    const { ksize, bounds, kk, precision } = c;
    const rowLen = width * 3;
    // Accumulate whole rows at a time: the same integer sums as the per-pixel loops, cache friendly.
    const acc = new Float64Array(rowLen);
    for (let yy = 0; yy < outHeight; yy++) {
      acc.fill(2 ** (precision - 1));
      const ymin = bounds[yy * 2]! - shift;
      const count = bounds[yy * 2 + 1]!;
      for (let y = 0; y < count; y++) {
        const k = kk[yy * ksize + y]!;
        const off = (ymin + y) * rowLen;
        for (let i = 0; i < rowLen; i++) acc[i] += src[off + i]! * k;
      }
      const o = yy * rowLen;
      for (let i = 0; i < rowLen; i++) out[o + i] = clip8(acc[i]!, precision);
    }
  },
};

/** Horizontal pass over input rows [y0, y1). */
function resampleHorizontal(img: RgbImage, outWidth: number, c: AxisCoefficients, y0: number, y1: number, passes: ResamplePasses): RgbImage {
  const out = new Uint8Array(outWidth * (y1 - y0) * 3);
  passes.horizontal(img.data, img.width, y0, y1, outWidth, c, out);
  return { width: outWidth, height: y1 - y0, data: out };
}

/** Vertical pass; `shift` is subtracted from the row bounds (the first input row kept). */
function resampleVertical(img: RgbImage, outHeight: number, c: AxisCoefficients, shift: number, passes: ResamplePasses): RgbImage {
  const out = new Uint8Array(img.width * 3 * outHeight);
  passes.vertical(img.data, img.width, outHeight, c, shift, out);
  return { width: img.width, height: outHeight, data: out };
}

function checkSize(img: RgbImage, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`resize target must be positive integers, got ${width}x${height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`image buffer holds ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
}

type CoefficientsFn = (inSize: number, outSize: number) => AxisCoefficients;

/** Horizontal pass then vertical pass, each only if its dimension changes. */
function separable(img: RgbImage, width: number, height: number, coeffs: CoefficientsFn, passes: ResamplePasses): RgbImage {
  const needH = width !== img.width;
  const needV = height !== img.height;
  if (!needH && !needV) return { width, height, data: img.data.slice() };
  if (!needH) return resampleVertical(img, height, coeffs(img.height, height), 0, passes);
  const hc = coeffs(img.width, width);
  if (!needV) return resampleHorizontal(img, width, hc, 0, img.height, passes);
  const vc = coeffs(img.height, height);
  // The horizontal pass only needs the input rows the vertical taps read.
  const yFirst = vc.bounds[0]!;
  const yLast = vc.bounds[(height - 1) * 2]! + vc.bounds[(height - 1) * 2 + 1]!;
  return resampleVertical(resampleHorizontal(img, width, hc, yFirst, yLast, passes), height, vc, yFirst, passes);
}

/**
 * Pillow's `im.resize((width, height), Image.LANCZOS)` on an RGB image, bit for bit.
 * Only the passes that change a dimension run; the same size returns a copy.
 */
export function resizeLanczos(img: RgbImage, width: number, height: number, passes: ResamplePasses = typescriptPasses): RgbImage {
  checkSize(img, width, height);
  // Pillow >= 12.2 resizes images over 100x taller than wide vertically first.
  if (img.height > img.width * 100 && height < img.height && width !== img.width) {
    const tall = resampleVertical(img, height, lanczosCoefficients(img.height, height), 0, passes);
    return resampleHorizontal(tall, width, lanczosCoefficients(img.width, width), 0, height, passes);
  }
  return separable(img, width, height, lanczosCoefficients, passes);
}

/**
 * torch's `interpolate(mode="lanczos", antialias=True)` on a uint8 image (what torchvision's
 * resize and so transformers' torchvision image processors run), bit for bit: Pillow's kernel
 * with int16 weights whose precision is chosen per axis, horizontal pass first.
 */
export function resizeLanczosTorch(img: RgbImage, width: number, height: number, passes: ResamplePasses = typescriptPasses): RgbImage {
  checkSize(img, width, height);
  return separable(img, width, height, torchLanczosCoefficients, passes);
}
