/**
 * Reference quantization arithmetic in TypeScript: weight quantization, dequantization, the int8
 * quantization of activations and the quantized linear layer. The native kernels implement the
 * same float32 steps (each `fround` here is a float32 operation there) and are tested against
 * these.
 *
 * The quantized linear: each row of x is cut into blocks of 32 and quantized to int8 with its own
 * scale dx = max|x| / 127 (round half to even). A block's dot product is then an integer sum,
 *   q8: dw·dx·Σ qw·qx          q4: dw·dx·Σ qw·qx + mw·dx·Σ qx
 * and the blocks' results are added in float32.
 */
import type { Tensor } from "../io/safetensors.js";
import { f16ToF32, f32ToF16, widenRows } from "../backend/dtype.js";
import { allocateQuantized, QUANT_BLOCK, quantizable, type QuantScheme, type QuantizedTensor } from "./format.js";

const fr = Math.fround;

/** Round half to even (what the CPU's default rounding mode does). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Refuses a half float that overflowed. */
function checked(h: number, what: string, v: number): number {
  if ((h & 0x7c00) === 0x7c00) throw new RangeError(`quantize: ${what} ${v} does not fit a half-float scale`);
  return h;
}

/**
 * The smallest half float >= v (v >= 0): scales round up, so max|w| / d never exceeds the
 * largest code and no value is clipped (the error bound is then d / 2 even for tiny blocks, whose
 * scales are subnormal halves).
 */
export function halfAtLeast(v: number, what = "scale"): number {
  let h = f32ToF16(v);
  if (f16ToF32(h) < v) h += 1;
  return checked(h, what, v);
}

/** The largest half float <= v: a minimum rounds down, so no value lies below it. */
export function halfAtMost(v: number, what = "minimum"): number {
  let h = f32ToF16(v);
  if (f16ToF32(h) > v) h = v > 0 ? h - 1 : (h | 0x8000) + 1;
  return checked(h, what, v);
}

/** Quantizes one block of 32 values (float32) into `q` at `qOff`; returns [scaleBits, minBits]. */
function quantizeBlock(scheme: QuantScheme, v: Float32Array, vOff: number, q: Int8Array | Uint8Array, qOff: number): [number, number] {
  if (scheme === "q8") {
    let amax = 0;
    for (let i = 0; i < QUANT_BLOCK; i++) amax = Math.max(amax, Math.abs(v[vOff + i]!));
    const dBits = halfAtLeast(fr(amax / 127));
    const d = f16ToF32(dBits);
    const id = d === 0 ? 0 : fr(1 / d);
    for (let i = 0; i < QUANT_BLOCK; i++) q[qOff + i] = Math.max(-127, Math.min(127, roundHalfEven(fr(v[vOff + i]! * id))));
    return [dBits, 0];
  }
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < QUANT_BLOCK; i++) {
    lo = Math.min(lo, v[vOff + i]!);
    hi = Math.max(hi, v[vOff + i]!);
  }
  const mBits = halfAtMost(lo);
  const m = f16ToF32(mBits);
  const dBits = halfAtLeast(fr(fr(hi - m) / 15));
  const d = f16ToF32(dBits);
  const id = d === 0 ? 0 : fr(1 / d);
  const half = QUANT_BLOCK / 2;
  for (let j = 0; j < half; j++) {
    const a = Math.max(0, Math.min(15, roundHalfEven(fr(fr(v[vOff + j]! - m) * id))));
    const b = Math.max(0, Math.min(15, roundHalfEven(fr(fr(v[vOff + j + half]! - m) * id))));
    q[qOff / 2 + j] = a | (b << 4);
  }
  return [dBits, mBits];
}

/** Quantizes a [out, in] float weight (F32, BF16 or F16) row by row. */
export function quantizeReference(w: Tensor, scheme: QuantScheme): QuantizedTensor {
  if (!quantizable(w.shape)) throw new RangeError(`quantize: shape [${w.shape.join(", ")}] is not [out, in] with in a multiple of ${QUANT_BLOCK}`);
  const [out, inDim] = w.shape as [number, number];
  const blocksPerRow = inDim / QUANT_BLOCK;
  const q = allocateQuantized(scheme, [out, inDim]);
  const { data, scales, mins } = q;
  const row = new Float32Array(inDim);
  for (let o = 0; o < out; o++) {
    widenRows(w, o, 1, row);
    for (let b = 0; b < blocksPerRow; b++) {
      const [d, m] = quantizeBlock(scheme, row, b * QUANT_BLOCK, data, o * inDim + b * QUANT_BLOCK);
      scales[o * blocksPerRow + b] = d;
      if (mins) mins[o * blocksPerRow + b] = m;
    }
  }
  return q;
}

/** Rows [rowStart, rowStart + count) of a quantized weight as float32 (d·q [+ m]). */
export function dequantizeRows(w: QuantizedTensor, rowStart: number, count: number, out: Float32Array): void {
  const inDim = w.shape[1];
  const blocksPerRow = inDim / QUANT_BLOCK;
  const half = QUANT_BLOCK / 2;
  for (let r = 0; r < count; r++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const s = (rowStart + r) * blocksPerRow + b;
      const d = f16ToF32(w.scales[s]!);
      const base = r * inDim + b * QUANT_BLOCK;
      const src = (rowStart + r) * inDim + b * QUANT_BLOCK;
      if (w.dtype === "Q8_0") {
        for (let i = 0; i < QUANT_BLOCK; i++) out[base + i] = fr(d * w.data[src + i]!);
      } else {
        const m = f16ToF32(w.mins![s]!);
        for (let j = 0; j < half; j++) {
          const byte = w.data[src / 2 + j]!;
          out[base + j] = fr(fr(d * (byte & 15)) + m);
          out[base + j + half] = fr(fr(d * (byte >> 4)) + m);
        }
      }
    }
  }
}

/** Activations quantized per block: int8 codes, float32 scales, and each block's dx·Σq. */
export interface QuantizedActivations {
  q: Int8Array;
  scale: Float32Array;
  scaledSum: Float32Array;
}

export function quantizeActivations(x: Float32Array, rows: number, inDim: number): QuantizedActivations {
  const blocks = rows * (inDim / QUANT_BLOCK);
  const q = new Int8Array(rows * inDim);
  const scale = new Float32Array(blocks);
  const scaledSum = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const off = b * QUANT_BLOCK;
    let amax = 0;
    for (let i = 0; i < QUANT_BLOCK; i++) amax = Math.max(amax, Math.abs(x[off + i]!));
    const d = fr(amax / 127);
    const id = d === 0 ? 0 : fr(1 / d);
    let sum = 0;
    for (let i = 0; i < QUANT_BLOCK; i++) {
      const v = roundHalfEven(fr(x[off + i]! * id));
      q[off + i] = v;
      sum += v;
    }
    scale[b] = d;
    scaledSum[b] = fr(d * sum);
  }
  return { q, scale, scaledSum };
}

/** y[rows, out] = quantize(x) · Wᵀ + bias with a quantized W (semantics in the file comment). */
export function linearQuantizedReference(x: Float32Array, rows: number, w: QuantizedTensor, bias?: Float32Array | null): Float32Array {
  const [outDim, inDim] = w.shape;
  if (x.length < rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows}x${inDim}`);
  const blocksPerRow = inDim / QUANT_BLOCK;
  const half = QUANT_BLOCK / 2;
  const act = quantizeActivations(x, rows, inDim);
  const y = new Float32Array(rows * outDim);
  const wq = new Int32Array(inDim); // one weight row's codes, unpacked
  for (let o = 0; o < outDim; o++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const src = o * inDim + b * QUANT_BLOCK;
      if (w.dtype === "Q8_0") {
        for (let i = 0; i < QUANT_BLOCK; i++) wq[b * QUANT_BLOCK + i] = w.data[src + i]!;
      } else {
        for (let j = 0; j < half; j++) {
          const byte = w.data[src / 2 + j]!;
          wq[b * QUANT_BLOCK + j] = byte & 15;
          wq[b * QUANT_BLOCK + j + half] = byte >> 4;
        }
      }
    }
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let b = 0; b < blocksPerRow; b++) {
        let dot = 0;
        const xo = r * inDim + b * QUANT_BLOCK;
        for (let i = 0; i < QUANT_BLOCK; i++) dot += wq[b * QUANT_BLOCK + i]! * act.q[xo + i]!;
        const s = o * blocksPerRow + b;
        const xb = r * blocksPerRow + b;
        acc += f16ToF32(w.scales[s]!) * act.scale[xb]! * dot;
        if (w.mins) acc += f16ToF32(w.mins[s]!) * act.scaledSum[xb]!;
      }
      y[r * outDim + o] = acc + (bias ? bias[o]! : 0);
    }
  }
  return y;
}
