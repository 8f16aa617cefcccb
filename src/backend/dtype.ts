/** Conversions between the checkpoint's 16-bit formats and float32. */
import type { Tensor } from "../io/safetensors.js";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(bits: number): number {
  u32[0] = bits << 16;
  return f32[0]!;
}

/** The bf16 bits of float32 bits `x`, rounded to nearest even; NaN stays (a quiet) NaN. */
function bf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return 0x7fc0; // NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Rounds to nearest even, as PyTorch's .to(torch.bfloat16) does. */
export function f32ToBf16(value: number): number {
  f32[0] = value;
  return bf16Bits(u32[0]!);
}

/**
 * Rows of a strided source, rounded to bf16 into consecutive rows of dst:
 * dst[at + r * cols + c] = bf16(src[from + r * srcStride + c]) for r < rows, c < cols.
 */
export function roundRowsToBf16(src: Float32Array, from: number, srcStride: number, rows: number, cols: number, dst: Uint16Array, at: number): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let r = 0; r < rows; r++) {
    let i = from + r * srcStride;
    let o = at + r * cols;
    for (let c = 0; c < cols; c++) dst[o++] = bf16Bits(bits[i++]!);
  }
}

let f16Table: Float32Array | undefined;

/** All 65536 half-precision values, decoded once: exact and fast. */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  f16Table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    f16Table[h] = sign * v;
  }
  return f16Table;
}

export function f16ToF32(bits: number): number {
  return halfTable()[bits]!;
}

/** Round-to-nearest-even float32 -> half bits (used by tests and tools to write F16 files). */
export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  if ((x & 0x7fffffff) > 0x7f800000) return sign | 0x7e00;
  const exp = ((x >>> 23) & 0xff) - 112;
  let mant = x & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    return sign | roundShift(mant, shift);
  }
  return sign | ((exp << 10) + roundShift(mant, 13)); // a carry out of the mantissa bumps the exponent, as it should
}

function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return rest > halfway || (rest === halfway && (kept & 1) === 1) ? kept + 1 : kept;
}

/** Widens rows [rowStart, rowStart + rowCount) of a 2-D weight into `out` as float32. */
export function widenRows(w: Tensor, rowStart: number, rowCount: number, out: Float32Array): void {
  const cols = w.shape[w.shape.length - 1]!;
  const begin = rowStart * cols;
  const n = rowCount * cols;
  if (w.dtype === "F32") {
    out.set((w.data as Float32Array).subarray(begin, begin + n));
  } else if (w.dtype === "BF16") {
    const src = w.data as Uint16Array;
    const dst = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) dst[i] = src[begin + i]! << 16;
  } else {
    const src = w.data as Uint16Array;
    const table = halfTable();
    for (let i = 0; i < n; i++) out[i] = table[src[begin + i]!]!;
  }
}

/** A whole tensor as float32 (for the small ones: norms, biases, position tables). */
export function toFloat32(t: Tensor): Float32Array {
  if (t.dtype === "F32") return t.data as Float32Array;
  const n = t.data.length;
  const out = new Float32Array(n);
  widenRows({ dtype: t.dtype, shape: [1, n], data: t.data }, 0, 1, out);
  return out;
}
