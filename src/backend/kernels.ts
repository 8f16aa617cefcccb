/**
 * The kernel interface: the only place the model code touches arithmetic on big arrays. The
 * TypeScript backend (ts-kernels.ts) is the reference; a native backend implements the same
 * interface and is tested against it.
 *
 * Layouts are row-major. Activations are float32; weights stay in their checkpoint dtype and are
 * widened inside the kernel.
 */
import type { Tensor } from "../io/safetensors.js";
import type { PackedQ4Tensor, QuantizedTensor } from "../quant/format.js";
import type { ResamplePasses } from "../image/resize.js";

/**
 * A linear layer's weight: a float tensor in its checkpoint dtype, a block-quantized one, or a
 * Q4_1 weight a native backend repacked for decoding (packForDecoding).
 */
export type LinearWeight = Tensor | QuantizedTensor | PackedQ4Tensor;

export interface AttentionParams {
  /** [seqQ, numHeads * headDim] */
  q: Float32Array;
  /**
   * Keys of seqK positions of numKvHeads heads (laid out as kvRowStride / kvHeadStride say; by
   * default [seqK, numKvHeads * headDim]). Float32, or a Uint16Array of bf16 bits (a bf16 KV
   * cache), widened exactly as they are read.
   */
  k: Float32Array | Uint16Array;
  v: Float32Array | Uint16Array;
  seqQ: number;
  seqK: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
  /**
   * Causal masking: query i sits at absolute position `causalOffset + i` and sees keys
   * 0..causalOffset+i. null means every query sees every key (the vision encoder).
   */
  causalOffset: number | null;
  /**
   * Element strides of k and v: position t of KV head h starts at t * kvRowStride + h * kvHeadStride.
   * Default (omitted): position-major rows, kvRowStride = numKvHeads * headDim and kvHeadStride =
   * headDim. A head-major cache ([head][capacity][headDim], each head's positions contiguous, which
   * decoding reads faster) passes headDim and capacity * headDim.
   */
  kvRowStride?: number;
  kvHeadStride?: number;
  /** Where to write the result (exactly seqQ * numHeads * headDim values); see `Kernels`. */
  out?: Float32Array;
}

/**
 * Results are new arrays, or the `out` array a caller passes (exactly the result's length), which
 * is then filled and returned: a decode step reuses its buffers that way instead of allocating a
 * dozen arrays per layer (each allocation of a few kilobytes costs microseconds, which adds up to
 * about a tenth of a q4 decode step). A wrapper may ignore `out`, so callers use the returned array.
 */
export interface Kernels {
  readonly name: string;
  /**
   * y[rows, out] = x[rows, in] · Wᵀ + bias, with W of shape [out, in]. A quantized W multiplies
   * int8-quantized activations (src/quant/reference.ts says exactly how).
   */
  linear(x: Float32Array, rows: number, weight: LinearWeight, bias?: Float32Array | null, out?: Float32Array): Float32Array;
  /**
   * Several linears of the same input (q/k/v, gate/up): the same results as calling `linear` on
   * each, in one pass where the backend can share the work (the native quantized path quantizes
   * x once and runs them in one fork-join).
   */
  linearMany(x: Float32Array, rows: number, weights: readonly LinearWeight[], biases?: readonly (Float32Array | null)[], outs?: readonly Float32Array[]): Float32Array[];
  /**
   * The weight in the layout this backend decodes fastest from (a few input rows, every step), or
   * the weight itself. The native backend repacks Q4_1 weights on x86 (PackedQ4Tensor, the same
   * numbers) and gives back the memory pages of a file-mapped original. Optional: a backend
   * without it uses weights as they are.
   */
  packForDecoding?(weight: LinearWeight): LinearWeight;
  /**
   * The image resize's two Lanczos passes (image/resize.ts, whose typescriptPasses are the
   * reference), bit for bit. Optional: without it the image processor runs the reference.
   */
  readonly resample?: ResamplePasses;
  /** Row-wise RMSNorm (Llama): x / sqrt(mean(x²) + eps) * weight. */
  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array;
  /** Row-wise LayerNorm with affine weight and bias. */
  layerNorm(x: Float32Array, rows: number, weight: Float32Array, bias: Float32Array, eps: number, out?: Float32Array): Float32Array;
  /**
   * Rotary embedding in place, "rotate half" layout: for each head, pairs (j, j + headDim/2) are
   * rotated by cos/sin[row, j] (tables [rows, headDim/2]).
   */
  rope(x: Float32Array, rows: number, numHeads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  /** Scaled dot-product attention with grouped KV heads; returns [seqQ, numHeads * headDim]. */
  attention(p: AttentionParams): Float32Array;
  /** silu(gate) * up, elementwise; gate and up have the same length. */
  siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array;
  /** GELU in place: the tanh approximation, or the exact erf form. */
  gelu(x: Float32Array, approximate: boolean): void;
  /** a += b, elementwise. */
  addInPlace(a: Float32Array, b: Float32Array): void;
  /**
   * The bf16 KV cache's writes: rows of a strided float32 source rounded to bf16 into consecutive
   * rows of dst, as dtype.ts roundRowsToBf16 (the reference) does them. Optional: without it the
   * cache uses the reference.
   */
  readonly roundRowsToBf16?: RoundRowsToBf16;
}

/** dst[at + r * cols + c] = bf16(src[from + r * srcStride + c]) for r < rows, c < cols. */
export type RoundRowsToBf16 = (src: Float32Array, from: number, srcStride: number, rows: number, cols: number, dst: Uint16Array, at: number) => void;

/** `out` checked to hold exactly `length` values, or a new array when there is none. */
export function outputArray(out: Float32Array | undefined, length: number, fn: string): Float32Array {
  if (!out) return new Float32Array(length);
  if (out.length !== length) throw new RangeError(`${fn}: the output array has ${out.length} values, expected ${length}`);
  return out;
}
