/**
 * Reference kernels in plain TypeScript. Sums are accumulated in float64 (JavaScript numbers) and
 * rounded once to float32 on store, so these are at least as accurate as PyTorch's float32 path;
 * every native kernel is tested against them.
 */
import { outputArray, type AttentionParams, type Kernels, type LinearWeight } from "./kernels.js";
import { toFloat32, widenRows } from "./dtype.js";
import { isPackedQ4, isQuantized } from "../quant/format.js";
import { linearQuantizedReference } from "../quant/reference.js";

/** Output rows of the weight widened to float32 at a time: reused by every input row. */
const WEIGHT_BLOCK_ROWS = 32;

function linear(x: Float32Array, rows: number, weight: LinearWeight, bias?: Float32Array | null, out?: Float32Array): Float32Array {
  if (isPackedQ4(weight)) throw new TypeError("linear: a Q4_1x4 weight (repacked by the native backend for decoding) needs the native kernels");
  if (isQuantized(weight)) {
    const r = linearQuantizedReference(x, rows, weight, bias);
    if (!out) return r;
    outputArray(out, r.length, "linear").set(r);
    return out;
  }
  const [outDim, inDim] = weight.shape as [number, number];
  if (x.length < rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows}x${inDim}`);
  const y = outputArray(out, rows * outDim, "linear");
  const block = new Float32Array(WEIGHT_BLOCK_ROWS * inDim);
  for (let o0 = 0; o0 < outDim; o0 += WEIGHT_BLOCK_ROWS) {
    const count = Math.min(WEIGHT_BLOCK_ROWS, outDim - o0);
    widenRows(weight, o0, count, block);
    for (let r = 0; r < rows; r++) {
      const xOff = r * inDim;
      for (let j = 0; j < count; j++) {
        const wOff = j * inDim;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        let i = 0;
        for (; i + 3 < inDim; i += 4) {
          s0 += x[xOff + i]! * block[wOff + i]!;
          s1 += x[xOff + i + 1]! * block[wOff + i + 1]!;
          s2 += x[xOff + i + 2]! * block[wOff + i + 2]!;
          s3 += x[xOff + i + 3]! * block[wOff + i + 3]!;
        }
        for (; i < inDim; i++) s0 += x[xOff + i]! * block[wOff + i]!;
        const o = o0 + j;
        y[r * outDim + o] = s0 + s1 + s2 + s3 + (bias ? bias[o]! : 0);
      }
    }
  }
  return y;
}

function rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array {
  const dim = weight.length;
  const y = outputArray(out, rows * dim, "rmsNorm");
  for (let r = 0; r < rows; r++) {
    const off = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[off + i]! * x[off + i]!;
    // Llama casts the normalised value to float32 before the weight multiply.
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[off + i] = weight[i]! * Math.fround(x[off + i]! * inv);
  }
  return y;
}

function layerNorm(x: Float32Array, rows: number, weight: Float32Array, bias: Float32Array, eps: number, out?: Float32Array): Float32Array {
  const dim = weight.length;
  const y = outputArray(out, rows * dim, "layerNorm");
  for (let r = 0; r < rows; r++) {
    const off = r * dim;
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[off + i]!;
    mean /= dim;
    let variance = 0;
    for (let i = 0; i < dim; i++) {
      const d = x[off + i]! - mean;
      variance += d * d;
    }
    const inv = 1 / Math.sqrt(variance / dim + eps);
    for (let i = 0; i < dim; i++) y[off + i] = (x[off + i]! - mean) * inv * weight[i]! + bias[i]!;
  }
  return y;
}

function rope(x: Float32Array, rows: number, numHeads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < numHeads; h++) {
      const base = (r * numHeads + h) * headDim;
      for (let j = 0; j < half; j++) {
        const c = cos[r * half + j]!;
        const s = sin[r * half + j]!;
        const a = x[base + j]!;
        const b = x[base + j + half]!;
        x[base + j] = a * c - b * s;
        x[base + j + half] = b * c + a * s;
      }
    }
  }
}

/** A bf16 KV array's first `values` widened to float32 (the rows attention reads); float32 ones as they are. */
function widenKv(a: Float32Array | Uint16Array, values: number): Float32Array {
  return a instanceof Float32Array ? a : toFloat32({ dtype: "BF16", shape: [values], data: a.subarray(0, values) });
}

/** One query row against its visible keys: online softmax in two passes over a score buffer. */
function attention(p: AttentionParams): Float32Array {
  const { q, seqQ, seqK, numHeads, numKvHeads, headDim, scale, causalOffset } = p;
  const kvStride = p.kvRowStride ?? numKvHeads * headDim;
  const headStride = p.kvHeadStride ?? headDim;
  const extent = seqK === 0 ? 0 : (seqK - 1) * kvStride + (numKvHeads - 1) * headStride + headDim;
  if (p.k.length < extent || p.v.length < extent) throw new RangeError(`attention: k and v need ${extent} values, got ${p.k.length} and ${p.v.length}`);
  const k = widenKv(p.k, extent);
  const v = widenKv(p.v, extent);
  const out = outputArray(p.out, seqQ * numHeads * headDim, "attention");
  const group = numHeads / numKvHeads;
  const qStride = numHeads * headDim;
  const scores = new Float64Array(seqK);
  const acc = new Float64Array(headDim);
  for (let h = 0; h < numHeads; h++) {
    const kvOff = Math.floor(h / group) * headStride;
    for (let i = 0; i < seqQ; i++) {
      const visible = causalOffset === null ? seqK : Math.min(seqK, causalOffset + i + 1);
      const qOff = i * qStride + h * headDim;
      let max = -Infinity;
      for (let t = 0; t < visible; t++) {
        const kOff = t * kvStride + kvOff;
        let s = 0;
        for (let d = 0; d < headDim; d++) s += q[qOff + d]! * k[kOff + d]!;
        s *= scale;
        scores[t] = s;
        if (s > max) max = s;
      }
      acc.fill(0);
      let sum = 0;
      for (let t = 0; t < visible; t++) {
        const w = Math.exp(scores[t]! - max);
        sum += w;
        const vOff = t * kvStride + kvOff;
        for (let d = 0; d < headDim; d++) acc[d] += w * v[vOff + d]!;
      }
      for (let d = 0; d < headDim; d++) out[qOff + d] = acc[d]! / sum;
    }
  }
  return out;
}

function siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array {
  const y = outputArray(out, gate.length, "siluMul");
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    y[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
  return y;
}

/** erf from the Chebyshev fit of erfc in Numerical Recipes: fractional error below 1.2e-7. */
function erf(x: number): number {
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + 0.5 * a);
  const y =
    1 -
    t *
      Math.exp(
        -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
      );
  return sign * y;
}

function gelu(x: Float32Array, approximate: boolean): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    x[i] = approximate ? 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v * v * v))) : 0.5 * v * (1 + erf(v / Math.SQRT2));
  }
}

function addInPlace(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}

function linearMany(x: Float32Array, rows: number, weights: readonly LinearWeight[], biases?: readonly (Float32Array | null)[], outs?: readonly Float32Array[]): Float32Array[] {
  return weights.map((w, i) => linear(x, rows, w, biases?.[i], outs?.[i]));
}

export const tsKernels: Kernels = { name: "typescript", linear, linearMany, rmsNorm, layerNorm, rope, attention, siluMul, gelu, addInPlace };
