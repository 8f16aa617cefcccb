/**
 * The native kernels (C++ addon build/Release/smolvlm_native.node, built by
 * scripts/build-native.mjs on `npm install`), wrapped as a `Kernels` object named "native".
 *
 * The addon picks its instruction set at load time from the CPU (AVX-512, AVX2+FMA, NEON or a
 * scalar fallback; SMOLVLM_ISA overrides) and runs large kernels on its own thread pool (one
 * thread per physical core; SMOLVLM_THREADS overrides). Results match the TypeScript reference
 * (ts-kernels.ts) to about 1e-6 relative L2: float32 accumulation instead of float64.
 *
 * `loadNativeKernels()` returns null when the addon is missing or fails to load;
 * `nativeLoadError()` then says why.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PageArena } from "./page-arena.js";
import { outputArray, type AttentionParams, type Kernels, type LinearWeight } from "./kernels.js";
import type { DType, Tensor } from "../io/safetensors.js";
import { allocateQuantized, isPackedQ4, isQuantized, QUANT_BLOCK, type PackedQ4Tensor, type QuantizedTensor, type QuantScheme } from "../quant/format.js";

/** The addon's raw functions: every output array is allocated here and filled in place. */
interface NativeAddon {
  linear(x: Float32Array, rows: number, w: Float32Array | Uint16Array, dtype: number, outDim: number, inDim: number, bias: Float32Array | null, y: Float32Array, mode: number): void;
  /** Then, per weight (1 to 4): data, dtype code, outDim, bias | null, y. */
  linearMany(x: Float32Array, rows: number, inDim: number, mode: number, ...parts: (Float32Array | Uint16Array | number | null)[]): void;
  /** Then, per weight (1 to 4): codes (or the packed Q4_1x4 bytes), scales | null, mins | null, outDim, bias | null, y. */
  linearQuant(x: Float32Array, rows: number, inDim: number, scheme: number, ...parts: (Int8Array | Uint8Array | Uint16Array | Float32Array | number | null)[]): void;
  q4x4Bytes(rows: number, cols: number): number;
  packQ4x4(q: Uint8Array, scales: Uint16Array, mins: Uint16Array, rows: number, cols: number, out: Uint8Array): void;
  quantize(w: Float32Array | Uint16Array, dtype: number, rows: number, cols: number, scheme: number, q: Int8Array | Uint8Array, scales: Uint16Array, mins: Uint16Array | null): void;
  releasePages(view: ArrayBufferView): number;
  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, y: Float32Array): void;
  layerNorm(x: Float32Array, rows: number, weight: Float32Array, bias: Float32Array, eps: number, y: Float32Array): void;
  rope(x: Float32Array, rows: number, numHeads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  attention(
    q: Float32Array, k: Float32Array | Uint16Array, v: Float32Array | Uint16Array, seqQ: number, seqK: number, numHeads: number, numKvHeads: number,
    headDim: number, scale: number, causalOffset: number, out: Float32Array, kvDtype: number, kvRowStride: number | null, kvHeadStride: number | null,
    mode?: number,
  ): void;
  siluMul(gate: Float32Array, up: Float32Array, y: Float32Array): void;
  gelu(x: Float32Array, approximate: boolean): void;
  addInPlace(a: Float32Array, b: Float32Array): void;
  roundRowsToBf16(src: Float32Array, from: number, srcStride: number, rows: number, cols: number, dst: Uint16Array, at: number): void;
  resampleHorizontal(src: Uint8Array, inWidth: number, y0: number, y1: number, outWidth: number, bounds: Int32Array, kk: Int32Array, ksize: number, precision: number, out: Uint8Array): void;
  resampleVertical(src: Uint8Array, width: number, outHeight: number, bounds: Int32Array, kk: Int32Array, ksize: number, precision: number, shift: number, out: Uint8Array): void;
  info(): NativeInfo;
  setIsa(isa: string): boolean;
  setQuantDot(name: string): boolean;
  mapFile(path: string): ArrayBuffer;
  /** Zeroed memory on a 2 MiB boundary, with transparent huge pages asked for (Linux). */
  allocPages(bytes: number): ArrayBuffer;
  dropFileCache(path: string): boolean;
  settlePageCache?(view: Uint8Array, path: string): PageCacheReport;
  copyAndRelease(src: ArrayBufferView, dst: ArrayBufferView): boolean;
  measurePeakFlops(seconds: number): PeakFlops;
  measureBandwidth(bytes: number, seconds: number): Bandwidth;
  measureReadBandwidth?(view: ArrayBufferView, seconds: number): Bandwidth;
}

/** measurePeakFlops(): a float32 FMA-bound loop on every pool thread, at the ISA in use, then the
 * bf16 and int8 dot products where the CPU has them. */
export interface PeakFlops {
  /** GFLOP/s (an FMA counts as 2) on all `threads` together. */
  gflops: number;
  /** GFLOP/s of one thread alone. */
  gflopsOneThread: number;
  threads: number;
  isa: NativeIsa;
  /** Floats per vector register. */
  vectorWidth: number;
  /** Independent FMA chains per thread. */
  accumulators: number;
  /** bf16 dot-product peak (vdpbf16ps, 2 flops per product), where the CPU has it at this ISA. */
  bf16Gflops?: number;
  bf16GflopsOneThread?: number;
  bf16Instruction?: string;
  /** The int8 GEMM's product peak (ops: 2 per byte product), where the CPU has one at this ISA. */
  int8Gops?: number;
  int8GopsOneThread?: number;
  int8Instruction?: string;
  /** Seconds each loop was measured for. */
  seconds: number;
}

/** measureBandwidth(): repeated multi-threaded streaming reads of one large buffer. */
export interface Bandwidth {
  /** GB/s (1e9 bytes) over all measured passes. */
  gbps: number;
  /** GB/s of the fastest pass. */
  bestGbps: number;
  threads: number;
  /** Buffer size (rounded up to 1 MiB). */
  bytes: number;
  passes: number;
  seconds: number;
}

export type NativeIsa = "avx512" | "avx2" | "neon" | "scalar";

export interface NativeInfo {
  /** The instruction set in use. */
  isa: NativeIsa;
  /** Every instruction set this CPU can run, best first. */
  isas: NativeIsa[];
  /** Threads that run a large kernel (the calling one included). */
  threads: number;
  /** Whether bf16 linear mode runs on vdpbf16ps (AVX512_BF16) at the current ISA. */
  bf16Native: boolean;
  /** Whether packForDecoding repacks Q4_1 weights at the current ISA (x86 with AVX2 or better). */
  packedQ4: boolean;
  /**
   * avx512vnni / avxvnni: vpdpbusd (the q8/q4 decode kernels use it at the avx512 / avx2 level);
   * dotprod: arm64 SDOT (used at the neon level).
   */
  features: { avx2: boolean; avx512: boolean; avx512bf16: boolean; avx512vnni: boolean; avxvnni: boolean; neon: boolean; dotprod: boolean };
}

export type LinearMode = "f32" | "bf16";
export type QuantDot = "auto" | "maddubs" | "vnni-emulated";

export interface NativeKernels extends Kernels {
  /**
   * How `linear` multiplies bf16 weights. "f32" (default): exact float32 arithmetic, as the
   * reference. "bf16": activations rounded to bf16 first, products on vdpbf16ps where the CPU has
   * AVX512_BF16 (elsewhere the float32 kernel on the rounded activations: same numbers, no gain);
   * about 1e-3 relative error. F32 and F16 weights always use float32 arithmetic.
   */
  linearMode: LinearMode;
  /** linear in bf16 mode, whatever `linearMode` says. */
  linearBf16(x: Float32Array, rows: number, weight: LinearWeight, bias?: Float32Array | null, out?: Float32Array): Float32Array;
  /** linear in float32 mode, whatever `linearMode` says. */
  linearF32(x: Float32Array, rows: number, weight: LinearWeight, bias?: Float32Array | null, out?: Float32Array): Float32Array;
  info(): NativeInfo;
  /**
   * A Q4_1 weight repacked as Q4_1x4 (PackedQ4Tensor), whatever the CPU; packForDecoding does it
   * only where it is faster (info().packedQ4). Every instruction set runs packed weights.
   */
  packQ4(w: QuantizedTensor): PackedQ4Tensor;
  /** Switches the instruction set (for tests and benchmarks); false if this CPU cannot run it. */
  setIsa(isa: NativeIsa): boolean;
  /**
   * The integer dot product of the x86 q8/q4 decode kernels: "auto" (vpdpbusd on VNNI CPUs, else
   * vpmaddubsw), "maddubs", or "vnni-emulated" (the VNNI kernels' code with vpdpbusd emulated in
   * AVX2: for tests on CPUs without VNNI). Returns false for an unknown name.
   */
  setQuantDot(name: QuantDot): boolean;
  /** Float32 FMA peak of this machine at the current ISA, measured for about `seconds` (benchmarks). */
  measurePeakFlops(seconds?: number): PeakFlops;
  /** Streaming read bandwidth over a buffer of `bytes`, measured for about `seconds` (benchmarks). */
  measureBandwidth(bytes?: number, seconds?: number): Bandwidth;
  /**
   * The same reads over memory the caller has (its first whole MiBs, never written), e.g. weights
   * in a mapped checkpoint; null with an addon built before it.
   */
  measureReadBandwidth(view: ArrayBufferView, seconds?: number): Bandwidth | null;
}

const DTYPE_CODE: Record<DType, number> = { F32: 0, BF16: 1, F16: 2 };
const ADDON_FILE = "smolvlm_native.node";

let addon: NativeAddon | null | undefined;
let loadError: string | undefined;

/** Where the addon may be: SMOLVLM_NATIVE_PATH, else build/Release in the package root. */
function candidatePaths(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const paths: string[] = [];
  if (process.env.SMOLVLM_NATIVE_PATH) paths.push(resolve(process.env.SMOLVLM_NATIVE_PATH));
  // dist/src/backend -> package root is three levels up; src/backend (run from source) two.
  for (const up of [["..", "..", ".."], ["..", ".."]]) paths.push(join(here, ...up, "build", "Release", ADDON_FILE));
  return paths;
}

function loadAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  const tried = candidatePaths();
  const found = tried.find((p) => existsSync(p));
  if (!found) {
    loadError = `native addon not built (looked for ${tried.join(", ")}); run \`node scripts/build-native.mjs\``;
    addon = null;
    return addon;
  }
  try {
    const require = createRequire(import.meta.url);
    addon = require(found) as NativeAddon;
  } catch (e) {
    loadError = `native addon ${found} failed to load: ${(e as Error).message}`;
    addon = null;
  }
  return addon;
}

/**
 * The whole file as an ArrayBuffer over a private memory mapping, or null when the addon is
 * unavailable (the caller then reads the file). Throws if the file cannot be mapped.
 */
export function mapFile(path: string): ArrayBuffer | null {
  const a = loadAddon();
  return a ? a.mapFile(path) : null;
}

/**
 * What settlePageCache did: `blocks` whole 2 MiB blocks of the file checked, `repaired` of them
 * dropped from the page cache and read back in 2 MiB folios, `small` left in small folios. state:
 * "huge" (the cache already held the file in 2 MiB folios), "repaired", "small" (more than an
 * eighth of the blocks left small: the filesystem or free memory makes no large folios) or
 * "unknown" (not Linux, a kernel before 6.7).
 */
export interface PageCacheReport {
  state: "huge" | "repaired" | "small" | "unknown";
  blocks: number;
  small: number;
  repaired: number;
}

/**
 * For a file just mapped by mapFile (`view`: the whole mapping), before anything reads it: makes
 * the page cache hold it in 2 MiB folios, reading in what it lacks, and dropping and reading back
 * the blocks it holds in small ones (as writing a file leaves them: a download, a copy). With
 * small folios every first touch faults per 4 KiB: about 0.4 s more per GB in the first pass
 * (BENCHMARKS.md section 19). Costs about 16 ms per GB when the cache is already right. Null
 * without the addon.
 */
export function settlePageCache(view: Uint8Array, path: string): PageCacheReport | null {
  const a = loadAddon();
  return a && typeof a.settlePageCache === "function" ? a.settlePageCache(view, path) : null;
}

/**
 * `bytes` of zeroed memory on a 2 MiB boundary with transparent huge pages asked for (Linux), from
 * the addon; a plain ArrayBuffer without it (or with an addon built before allocPages).
 */
export function allocPages(bytes: number): ArrayBuffer {
  const a = loadAddon();
  return a && typeof a.allocPages === "function" ? a.allocPages(bytes) : new ArrayBuffer(bytes);
}

/** Scheme codes shared with the addon. */
const SCHEME_CODE: Record<QuantizedTensor["dtype"] | PackedQ4Tensor["dtype"], number> = { Q8_0: 8, Q4_1: 4, Q4_1x4: 5 };

/**
 * Quantizes a [out, in] float weight with the addon (many times faster than the reference, same
 * codes), or returns null when the addon is unavailable.
 */
export function nativeQuantize(w: Tensor, scheme: QuantScheme): QuantizedTensor | null {
  const a = loadAddon();
  if (!a || typeof a.quantize !== "function") return null; // an addon built before quantization
  const { outDim, inDim, code } = weightArgs(w, "quantize");
  if (inDim % QUANT_BLOCK !== 0) throw new RangeError(`quantize: input dimension ${inDim} is not a multiple of ${QUANT_BLOCK}`);
  const q = allocateQuantized(scheme, [outDim, inDim]);
  a.quantize(w.data, code, outDim, inDim, SCHEME_CODE[q.dtype], q.data, q.scales, q.mins);
  return q;
}

/**
 * Gives back the memory pages under an array that views a memory-mapped file (the page cache
 * keeps the file; a later read maps it in again). Returns the bytes released; 0 without the addon
 * or for an array that is not mapped.
 */
export function releasePages(view: ArrayBufferView): number {
  const a = loadAddon();
  return a && typeof a.releasePages === "function" ? a.releasePages(view) : 0;
}

/**
 * releasePages for each array of a linear weight (a quantized one's codes, scales and minimums):
 * the bytes given back, 0 for a weight that is not mapped from a file (a copy, a quantized-at-load
 * weight).
 */
export function releaseWeightPages(w: LinearWeight): number {
  let released = releasePages(w.data);
  if ("scales" in w) released += releasePages(w.scales) + (w.mins ? releasePages(w.mins) : 0);
  return released;
}

/**
 * dst <- src's bytes when src views a file mapped by mapFile, and the mapping's 2 MiB blocks around
 * src unmapped again (the page cache keeps them); false (dst untouched) otherwise or without the
 * addon. For small tensors (norms, biases): mapFile maps weights 2 MiB at a time where it can, so
 * a view would keep whole blocks of neighbours resident (over 100 MiB of released weights for a
 * model quantized at load at the 500M geometry; BENCHMARKS.md section 16).
 */
export function copyAndRelease(src: ArrayBufferView, dst: ArrayBufferView): boolean {
  const a = loadAddon();
  return a !== null && typeof a.copyAndRelease === "function" ? a.copyAndRelease(src, dst) : false;
}

/**
 * For a weights file this package has just written (a download, `smolvlm quantize`): writes it
 * out and drops its pages from the page cache, so that the first mapFile reads it back in 2 MiB
 * folios, which every later process then maps with huge pages. Writing leaves the cache in 4 KiB
 * pages, and with those a 512x512 prompt's prefill at the 500M geometry took twice as long
 * (BENCHMARKS.md section 16). Returns whether it did (false without the addon, off Linux, or on
 * an error: nothing else changes then).
 */
export function dropFileCache(path: string): boolean {
  const a = loadAddon();
  return a !== null && typeof a.dropFileCache === "function" ? a.dropFileCache(path) : false;
}

/** Why the native kernels are unavailable (undefined when they loaded, or were not tried yet). */
export function nativeLoadError(): string | undefined {
  return loadError;
}

function weightArgs(weight: Tensor, fn: string): { outDim: number; inDim: number; code: number } {
  if (weight.shape.length !== 2) throw new RangeError(`${fn}: weight must be 2-D, got shape [${weight.shape.join(", ")}]`);
  const [outDim, inDim] = weight.shape as [number, number];
  const code = DTYPE_CODE[weight.dtype];
  if (code === undefined) throw new RangeError(`${fn}: unsupported weight dtype ${weight.dtype as string}`);
  const wantF32 = weight.dtype === "F32";
  if (wantF32 !== weight.data instanceof Float32Array) {
    throw new TypeError(`${fn}: ${weight.dtype} weight data must be a ${wantF32 ? "Float32Array" : "Uint16Array"}`);
  }
  return { outDim, inDim, code };
}

/*
 * The decoding path's small helpers below take one kind of array at every call, so that the
 * optimizing compiler's code for the linears is not thrown away in the middle of a process's first
 * generation: an absent list and a list read through the same `?.[i]`, or arrays made by `map` and
 * by a literal, had each done that, and every recompile (15-60 ms of V8's background work) took a
 * core from the kernels' two threads (BENCHMARKS.md section 18).
 */
const NO_ARRAYS: readonly null[] = [null, null, null, null];

/** `count` output arrays, each `outs[i]` if given (checked for its size) or a new one. */
function outputArrays(count: number, size: (i: number) => number, outs?: readonly (Float32Array | undefined)[]): Float32Array[] {
  const given = outs ?? NO_ARRAYS;
  const ys: Float32Array[] = [];
  for (let i = 0; i < count; i++) ys.push(outputArray(given[i] ?? undefined, size(i), "linear"));
  return ys;
}

/** biases[i], or null where there is none. */
function biasOf(biases?: readonly (Float32Array | null | undefined)[]): (i: number) => Float32Array | null {
  const given = biases ?? NO_ARRAYS;
  return (i) => given[i] ?? null;
}

/** The native kernels, or null when the addon is unavailable (see nativeLoadError()). */
export function loadNativeKernels(): NativeKernels | null {
  const a = loadAddon();
  if (!a) return null;

  /** A weight's arrays as linearQuant passes them: a packed Q4_1x4 weight has no separate tables. */
  const tables = (w: QuantizedTensor | PackedQ4Tensor) => (isPackedQ4(w) ? { data: w.data, scales: null, mins: null, shape: w.shape } : w);

  /** Quantized weights of one scheme and input size reading the same x, in one native call. */
  const linearQuant = (
    x: Float32Array, rows: number, ws: readonly (QuantizedTensor | PackedQ4Tensor)[], biases?: readonly (Float32Array | null | undefined)[], outs?: readonly (Float32Array | undefined)[],
  ): Float32Array[] => {
    const inDim = ws[0]!.shape[1];
    if (x.length < rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows}x${inDim}`);
    const ys = outputArrays(ws.length, (i) => rows * ws[i]!.shape[0], outs);
    const code = SCHEME_CODE[ws[0]!.dtype];
    // Fixed-arity calls for the common counts: a spread call over a built argument list costs a
    // few microseconds, a tenth of a small decode-time linear.
    const w0 = tables(ws[0]!), w1 = ws.length > 1 ? tables(ws[1]!) : w0, w2 = ws.length > 2 ? tables(ws[2]!) : w0;
    const b = biasOf(biases);
    if (ws.length === 1) {
      a.linearQuant(x, rows, inDim, code, w0!.data, w0!.scales, w0!.mins, w0!.shape[0], b(0), ys[0]!);
    } else if (ws.length === 2) {
      a.linearQuant(x, rows, inDim, code, w0!.data, w0!.scales, w0!.mins, w0!.shape[0], b(0), ys[0]!, w1!.data, w1!.scales, w1!.mins, w1!.shape[0], b(1), ys[1]!);
    } else if (ws.length === 3) {
      a.linearQuant(
        x, rows, inDim, code,
        w0!.data, w0!.scales, w0!.mins, w0!.shape[0], b(0), ys[0]!,
        w1!.data, w1!.scales, w1!.mins, w1!.shape[0], b(1), ys[1]!,
        w2!.data, w2!.scales, w2!.mins, w2!.shape[0], b(2), ys[2]!,
      );
    } else {
      a.linearQuant(x, rows, inDim, code, ...ws.map(tables).flatMap((w, i) => [w.data, w.scales, w.mins, w.shape[0], b(i), ys[i]!]));
    }
    return ys;
  };

  /**
   * Float weights reading the same x in one native call (one fork-join for all of them on the
   * decoding path), each one's output as `kernels.linear` gives it.
   */
  const linearFloat = (
    mode: number, x: Float32Array, rows: number, ws: readonly Tensor[], biases?: readonly (Float32Array | null | undefined)[], outs?: readonly (Float32Array | undefined)[],
  ): Float32Array[] => {
    const args: ReturnType<typeof weightArgs>[] = [];
    for (const w of ws) args.push(weightArgs(w, "linear"));
    const inDim = args[0]!.inDim;
    if (x.length < rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows}x${inDim}`);
    const ys = outputArrays(ws.length, (i) => rows * args[i]!.outDim, outs);
    const b = biasOf(biases);
    const w0 = ws[0]!, w1 = ws[1 % ws.length]!, w2 = ws[2 % ws.length]!;
    const a0 = args[0]!, a1 = args[1 % ws.length]!, a2 = args[2 % ws.length]!;
    // Fixed-arity calls for the counts the decoder makes (as linearQuant).
    if (ws.length === 2) {
      a.linearMany(x, rows, inDim, mode, w0!.data as Float32Array, a0!.code, a0!.outDim, b(0), ys[0]!, w1!.data as Float32Array, a1!.code, a1!.outDim, b(1), ys[1]!);
    } else if (ws.length === 3) {
      a.linearMany(
        x, rows, inDim, mode,
        w0!.data as Float32Array, a0!.code, a0!.outDim, b(0), ys[0]!,
        w1!.data as Float32Array, a1!.code, a1!.outDim, b(1), ys[1]!,
        w2!.data as Float32Array, a2!.code, a2!.outDim, b(2), ys[2]!,
      );
    } else {
      a.linearMany(x, rows, inDim, mode, ...ws.flatMap((w, i) => [w.data as Float32Array, args[i]!.code, args[i]!.outDim, b(i), ys[i]!]));
    }
    return ys;
  };

  const quantOrPacked = (w: LinearWeight): w is QuantizedTensor | PackedQ4Tensor => isQuantized(w) || isPackedQ4(w);
  /** Whether `ws` can share one quantized call: same scheme and input size, at most 4. */
  const shareable = (ws: readonly LinearWeight[]): ws is readonly (QuantizedTensor | PackedQ4Tensor)[] =>
    ws.length > 0 && ws.length <= 4 && ws.every((w) => quantOrPacked(w) && w.dtype === ws[0]!.dtype && w.shape[1] === ws[0]!.shape[1]);
  /** Whether `ws` can share one float call: 2 to 4 unquantized weights of one input size. */
  const shareableFloat = (ws: readonly LinearWeight[]): ws is readonly Tensor[] =>
    ws.length >= 2 && ws.length <= 4 && ws.every((w) => !quantOrPacked(w) && w.shape[1] === ws[0]!.shape[1]);

  const linearWith = (mode: number, x: Float32Array, rows: number, weight: LinearWeight, bias?: Float32Array | null, out?: Float32Array): Float32Array => {
    if (quantOrPacked(weight)) return linearQuant(x, rows, [weight], [bias], [out])[0]!;
    const { outDim, inDim, code } = weightArgs(weight, "linear");
    if (x.length < rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows}x${inDim}`);
    const y = outputArray(out, rows * outDim, "linear");
    a.linear(x, rows, weight.data, code, outDim, inDim, bias ?? null, y, mode);
    return y;
  };

  /** Q4_1 repacked as Q4_1x4 into `allocate(bytes)`. */
  const packQ4Into = (w: QuantizedTensor, allocate: (bytes: number) => Uint8Array): PackedQ4Tensor => {
    if (w.dtype !== "Q4_1" || !w.mins) throw new TypeError(`packQ4: expects a Q4_1 weight, got ${w.dtype}`);
    const [rows, cols] = w.shape;
    const data = allocate(a.q4x4Bytes(rows, cols));
    a.packQ4x4(w.data as Uint8Array, w.scales, w.mins, rows, cols, data);
    return { dtype: "Q4_1x4", shape: [rows, cols], data };
  };
  // Repacked q4 weights on huge pages (page-arena.ts).
  const decodeArena = new PageArena(allocPages);

  const kernels: NativeKernels = {
    name: "native",
    linearMode: "f32",
    linear: (x, rows, weight, bias, out) => linearWith(kernels.linearMode === "bf16" ? 1 : 0, x, rows, weight, bias, out),
    linearMany: (x, rows, weights, biases, outs) => {
      if (shareable(weights)) return linearQuant(x, rows, weights, biases, outs);
      // (An addon built before linearMany takes one call per weight.)
      if (shareableFloat(weights) && typeof a.linearMany === "function") return linearFloat(kernels.linearMode === "bf16" ? 1 : 0, x, rows, weights, biases, outs);
      return weights.map((w, i) => kernels.linear(x, rows, w, biases?.[i], outs?.[i]));
    },
    linearBf16: (x, rows, weight, bias, out) => linearWith(1, x, rows, weight, bias, out),
    linearF32: (x, rows, weight, bias, out) => linearWith(0, x, rows, weight, bias, out),
    packQ4: (w) => packQ4Into(w, (bytes) => new Uint8Array(bytes)),
    packForDecoding: (w) => {
      if (!isQuantized(w) || w.dtype !== "Q4_1" || !a.info().packedQ4) return w;
      const packed = packQ4Into(w, (bytes) => decodeArena.take(Uint8Array, bytes));
      // The canonical copy is not read again: a file-mapped one gives its pages back (a quantized
      // checkpoint); one made at load is garbage once the caller drops it.
      for (const view of [w.data, w.scales, w.mins!]) releasePages(view);
      return packed;
    },
    rmsNorm: (x, rows, weight, eps, out) => {
      const y = outputArray(out, rows * weight.length, "rmsNorm");
      a.rmsNorm(x, rows, weight, eps, y);
      return y;
    },
    layerNorm: (x, rows, weight, bias, eps, out) => {
      const y = outputArray(out, rows * weight.length, "layerNorm");
      a.layerNorm(x, rows, weight, bias, eps, y);
      return y;
    },
    rope: (x, rows, numHeads, headDim, cos, sin) => a.rope(x, rows, numHeads, headDim, cos, sin),
    attention: (p: AttentionParams) => {
      const out = outputArray(p.out, p.seqQ * p.numHeads * p.headDim, "attention");
      const offset = p.causalOffset === null ? -1 : p.causalOffset;
      if (p.k instanceof Uint16Array !== p.v instanceof Uint16Array) throw new TypeError("attention: k and v must have the same element type");
      // bf16 mode: bf16 products in attention too, where the addon runs bf16 mode on vdpbf16ps.
      const mode = kernels.linearMode === "bf16" ? 1 : 0;
      a.attention(p.q, p.k, p.v, p.seqQ, p.seqK, p.numHeads, p.numKvHeads, p.headDim, p.scale, offset, out, p.k instanceof Uint16Array ? 1 : 0, p.kvRowStride ?? null, p.kvHeadStride ?? null, mode);
      return out;
    },
    siluMul: (gate, up, out) => {
      const y = outputArray(out, gate.length, "siluMul");
      a.siluMul(gate, up, y);
      return y;
    },
    gelu: (x, approximate) => a.gelu(x, approximate),
    addInPlace: (x, b) => a.addInPlace(x, b),
    roundRowsToBf16: (src, from, srcStride, rows, cols, dst, at) => a.roundRowsToBf16(src, from, srcStride, rows, cols, dst, at),
    resample: {
      horizontal: (src, inWidth, y0, y1, outWidth, c, out) => a.resampleHorizontal(src, inWidth, y0, y1, outWidth, c.bounds, c.kk, c.ksize, c.precision, out),
      vertical: (src, width, outHeight, c, shift, out) => a.resampleVertical(src, width, outHeight, c.bounds, c.kk, c.ksize, c.precision, shift, out),
    },
    info: () => a.info(),
    setIsa: (isa) => a.setIsa(isa),
    setQuantDot: (name) => a.setQuantDot(name),
    measurePeakFlops: (seconds = 1) => a.measurePeakFlops(seconds),
    measureBandwidth: (bytes = 512 * 1024 * 1024, seconds = 2) => a.measureBandwidth(bytes, seconds),
    measureReadBandwidth: (view, seconds = 2) => (typeof a.measureReadBandwidth === "function" ? a.measureReadBandwidth(view, seconds) : null),
  };
  return kernels;
}
