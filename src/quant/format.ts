/**
 * Weight-only quantization formats. Both work on blocks of 32 consecutive values along a linear
 * layer's input dimension, with the block's scale (and minimum) stored as IEEE half floats:
 *
 *  - q8 ("Q8_0"): w ≈ d·q with q an int8 in [-127, 127] and d = max|w| / 127: 8.5 bits per weight.
 *  - q4 ("Q4_1"): w ≈ d·q + m with q in [0, 15], m = min(w), d = (max(w) - min(w)) / 15: 5 bits
 *    per weight. The minimum costs half a bit per weight and halves the error of a symmetric
 *    4-bit code on weights whose blocks are not centred on zero (bench/quant.ts measures it).
 *
 * q4 packing, per block of 32: byte j (0..15) holds value j in its low nibble and value j + 16 in
 * its high nibble, so a SIMD kernel unpacks a block with one shift and two masks.
 *
 * On disk (safetensors), a quantized linear `X.weight` of logical shape [out, in] is stored as
 *   X.weight        I8 [out, in] (q8)  or  U8 [out, in / 2] (q4)
 *   X.weight_scale  F16 [out, in / 32]
 *   X.weight_min    F16 [out, in / 32]   (q4 only)
 * and config.json carries `quantization_config: { quant_method: "smolvlm", scheme, block_size }`.
 */

export const QUANT_BLOCK = 32;

export type QuantScheme = "q8" | "q4";
export const QUANT_SCHEMES: readonly QuantScheme[] = ["q8", "q4"];

export interface QuantizedTensor {
  readonly dtype: "Q8_0" | "Q4_1";
  /** Logical shape [out, in]; in is a multiple of QUANT_BLOCK. */
  readonly shape: readonly [number, number];
  /** Q8_0: Int8Array [out * in]; Q4_1: Uint8Array [out * in / 2] (nibble layout above). */
  readonly data: Int8Array | Uint8Array;
  /** Half-float block scales [out * in / 32]. */
  readonly scales: Uint16Array;
  /** Half-float block minimums [out * in / 32] (Q4_1), else null. */
  readonly mins: Uint16Array | null;
}

/**
 * A Q4_1 weight as the native backend repacks it for decoding (native/quant.cc, "Q4_1x4"): the
 * same codes, scales and minimums, interleaved by groups of 4 output rows so that a decode step
 * reads each weight as one stream. Made at load time (Kernels.packForDecoding), read only by the
 * native kernels, never written to a file.
 */
export interface PackedQ4Tensor {
  readonly dtype: "Q4_1x4";
  /** Logical shape [out, in], as the Q4_1 weight it came from. */
  readonly shape: readonly [number, number];
  readonly data: Uint8Array;
}

export function isPackedQ4(w: { dtype: string }): w is PackedQ4Tensor {
  return w.dtype === "Q4_1x4";
}

export function schemeDtype(scheme: QuantScheme): QuantizedTensor["dtype"] {
  return scheme === "q8" ? "Q8_0" : "Q4_1";
}

export function isQuantized(w: { dtype: string }): w is QuantizedTensor {
  return w.dtype === "Q8_0" || w.dtype === "Q4_1";
}

/** Whether a [out, in] linear weight can take a block format (in must split into whole blocks). */
export function quantizable(shape: readonly number[]): boolean {
  return shape.length === 2 && shape[1]! > 0 && shape[1]! % QUANT_BLOCK === 0;
}

/**
 * How a quantized [out, in] weight is stored: its codes (I8 [out, in] for q8, U8 [out, in / 2]
 * for q4) and its per-block F16 tables (scales, and minimums for q4) of shape [out, in / 32].
 */
export function quantizedLayout(scheme: QuantScheme, [out, inDim]: readonly [number, number]): {
  codes: { dtype: "I8" | "U8"; shape: [number, number] };
  table: [number, number];
} {
  const codes = scheme === "q8" ? { dtype: "I8" as const, shape: [out, inDim] as [number, number] } : { dtype: "U8" as const, shape: [out, inDim / 2] as [number, number] };
  return { codes, table: [out, inDim / QUANT_BLOCK] };
}

/** A zeroed quantized tensor of logical shape [out, in], to be filled by a quantizer. */
export function allocateQuantized(scheme: QuantScheme, shape: readonly [number, number]): QuantizedTensor {
  const { codes, table } = quantizedLayout(scheme, shape);
  const codeCount = codes.shape[0] * codes.shape[1];
  const tableCount = table[0] * table[1];
  return {
    dtype: schemeDtype(scheme),
    shape: [shape[0], shape[1]],
    data: codes.dtype === "I8" ? new Int8Array(codeCount) : new Uint8Array(codeCount),
    scales: new Uint16Array(tableCount),
    mins: scheme === "q4" ? new Uint16Array(tableCount) : null,
  };
}

/** Bytes of a quantized tensor (codes, scales, minimums): what decoding reads per use. */
export function quantizedBytes(t: QuantizedTensor): number {
  return t.data.byteLength + t.scales.byteLength + (t.mins?.byteLength ?? 0);
}

/** The names a quantized `X.weight` is stored under. */
export function quantizedNames(weightName: string): { data: string; scale: string; min: string } {
  return { data: weightName, scale: `${weightName}_scale`, min: `${weightName}_min` };
}

/** The config.json entry that marks a quantized checkpoint. */
export interface QuantizationConfig {
  quant_method: "smolvlm";
  scheme: QuantScheme;
  block_size: number;
  /** Layers kept in their source dtype (embeddings, norms, patch embedding...): informative. */
  modules_not_quantized?: string[];
}
