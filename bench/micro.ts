/**
 * Small kernel-level measurements behind figures in BENCHMARKS.md section 9, each a median of
 * alternating repeats in one process:
 *
 *   node dist/bench/micro.js overhead     microseconds per call of a tiny linear (4 x 64 and 4 x 960)
 *                                         through the library's wrapper: q4, q8 and bf16 weights
 *   node dist/bench/micro.js bf16-round   vision-sized bf16-weight linears in f32 mode against bf16
 *                                         mode (which rounds the activations first on CPUs without
 *                                         vdpbf16ps): what the rounding costs
 *   node dist/bench/micro.js kv-layout [--keys 876,2000]
 *                                         one decode step's attention over 32 layers' bf16 caches
 *                                         (500M geometry: 15 heads, 5 KV heads, headDim 64), with
 *                                         the cache position-major ([position][kvHead][64]) against
 *                                         head-major ([kvHead][capacity][64], the KV cache's layout)
 *   node dist/bench/micro.js decode-attention [--keys 81,876,2000] [--mode f32|bf16]
 *                                         one decode step's attention over 32 layers' head-major bf16
 *                                         caches: each layer's call after 64 MB of other reads (after
 *                                         eviction, as in a decode step), the 32 back to back (from
 *                                         memory, partly from L3), and one layer's cache 32 times
 *                                         (cache-resident). To compare two builds of the addon, run
 *                                         it with SMOLVLM_NATIVE_PATH pointing at each, in turn.
 *   node dist/bench/micro.js kv-round     the bf16 KV cache's rounding, dtype.ts's TypeScript against the
 *                                         addon's: one 1139-token prefill's 64 layer-writes (5 heads
 *                                         of 64) and one decode step's 320 writes
 *   node dist/bench/micro.js bandwidth-noise
 *                                         how far the two rates of the decode goal move apart: nine
 *                                         times in a row, the read bandwidth for 0.3 s, then the best
 *                                         of three one-row passes over 755 MB of bf16 weights, and
 *                                         their ratio
 */
import { parseArgs } from "node:util";
import { loadNativeKernels } from "../src/backend/native-kernels.js";
import type { LinearWeight, RoundRowsToBf16 } from "../src/backend/kernels.js";
import { roundRowsToBf16 } from "../src/backend/dtype.js";
import { quantizeWeight } from "../src/quant/quantize.js";
import type { Tensor } from "../src/io/safetensors.js";
import { median } from "./decode-loop.js";

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { keys: { type: "string", default: "876,2000" }, mode: { type: "string", default: "f32" } },
});
const native = loadNativeKernels();
if (!native) throw new Error("micro needs the native kernels");
const k = native;

const bf16Weight = (out: number, inDim: number): Tensor => ({
  dtype: "BF16",
  shape: [out, inDim],
  data: Uint16Array.from({ length: out * inDim }, (_, i) => 0x3c00 + ((i * 2654435761) >>> 24)),
});
const input = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5);

/** Median over `repeats` of the mean time of `calls` calls of each function, the functions taking turns. */
function alternate(fns: (() => unknown)[], calls: number, repeats: number): number[] {
  const times = fns.map(() => [] as number[]);
  for (const f of fns) for (let i = 0; i < calls; i++) f(); // warm-up
  for (let r = 0; r < repeats; r++) {
    fns.forEach((f, j) => {
      const t0 = performance.now();
      for (let i = 0; i < calls; i++) f();
      times[j]!.push((performance.now() - t0) / calls);
    });
  }
  return times.map(median);
}

function overhead(): void {
  for (const inDim of [64, 960]) {
    const w = bf16Weight(4, inDim);
    const weights: [string, LinearWeight][] = [["q4", quantizeWeight(w, "q4")], ["q8", quantizeWeight(w, "q8")], ["bf16", w]];
    const x = input(inDim);
    const us = alternate(weights.map(([, wt]) => () => k.linear(x, 1, wt)), 20000, 9);
    console.log(`linear 1 x ${inDim} -> 4: ${weights.map(([name], i) => `${name} ${(us[i]! * 1000).toFixed(2)} µs`).join(", ")} per call`);
  }
}

function bf16Round(): void {
  for (const [rows, inDim, out] of [[1024, 768, 768], [1024, 3072, 768], [1024, 768, 3072]] as const) {
    const w = bf16Weight(out, inDim);
    const x = input(rows * inDim);
    const [f32, bf16] = alternate([() => k.linearF32(x, rows, w), () => k.linearBf16(x, rows, w)], 1, 9);
    console.log(`linear ${rows} x ${inDim} -> ${out}, bf16 weights: f32 mode ${f32!.toFixed(2)} ms, bf16 mode ${bf16!.toFixed(2)} ms (${((bf16! / f32! - 1) * 100).toFixed(1)}%)`);
  }
}

/** 32 layers' bf16 KV caches of the 500M geometry (15 heads, 5 KV heads, headDim 64, 2048 positions), and a query row. */
const DECODE = { heads: 15, kvHeads: 5, D: 64, layers: 32, capacity: 2048 };
interface LayerCache {
  k: Uint16Array;
  v: Uint16Array;
}
function decodeCaches(): { caches: LayerCache[]; q: Float32Array } {
  const { heads, kvHeads, D, layers, capacity } = DECODE;
  const bits = (n: number, seed: number) => Uint16Array.from({ length: n }, (_, i) => 0x3c00 + (((i + seed) * 2654435761) >>> 24));
  const caches = Array.from({ length: layers }, (_, l) => ({ k: bits(capacity * kvHeads * D, 2 * l), v: bits(capacity * kvHeads * D, 2 * l + 1) }));
  return { caches, q: input(heads * D) };
}

/** One decode step's attention for one layer over `seqK` keys, the cache read with the given strides. */
function attendStep(c: LayerCache, q: Float32Array, seqK: number, strides: { kvRowStride: number; kvHeadStride: number }): void {
  const { heads, kvHeads, D } = DECODE;
  k.attention({ q, k: c.k, v: c.v, seqQ: 1, seqK, numHeads: heads, numKvHeads: kvHeads, headDim: D, scale: 0.125, causalOffset: seqK - 1, ...strides });
}

function kvLayout(): void {
  const { kvHeads, D, layers, capacity } = DECODE;
  const { caches, q } = decodeCaches();
  for (const seqK of v.keys!.split(",").map(Number)) {
    const step = (strides: { kvRowStride: number; kvHeadStride: number }) => () => caches.forEach((c) => attendStep(c, q, seqK, strides));
    // The same arrays read in either layout: the timings depend on the access pattern, not the values.
    const [pm, hm] = alternate([step({ kvRowStride: kvHeads * D, kvHeadStride: D }), step({ kvRowStride: D, kvHeadStride: capacity * D })], 1, 21);
    console.log(`attention, ${seqK} keys x ${layers} layers: position-major ${pm!.toFixed(2)} ms, head-major ${hm!.toFixed(2)} ms (${((1 - hm! / pm!) * 100).toFixed(0)}% less)`);
  }
}

function decodeAttention(): void {
  const { D, layers, capacity } = DECODE;
  if (v.mode !== "f32" && v.mode !== "bf16") throw new Error(`--mode: f32 or bf16, not ${v.mode}`);
  k.linearMode = v.mode;
  const { caches, q } = decodeCaches();
  const headMajor = { kvRowStride: D, kvHeadStride: capacity * D };
  // As in a decode step, where a layer's weights (23 MB at bf16) stream through the caches between
  // two layers' attention: before each layer's call (not timed), a one-row linear over 64 MB.
  const flush = bf16Weight(32768, 1024);
  const flushX = input(1024);
  const flushOut = new Float32Array(32768);
  const evicted = (seqK: number) => () => {
    let ms = 0;
    for (const c of caches) {
      k.linear(flushX, 1, flush, null, flushOut);
      const t0 = performance.now();
      attendStep(c, q, seqK, headMajor);
      ms += performance.now() - t0;
    }
    return ms;
  };
  for (const seqK of v.keys!.split(",").map(Number)) {
    const [fromMemory, resident] = alternate(
      [() => caches.forEach((c) => attendStep(c, q, seqK, headMajor)), () => caches.forEach(() => attendStep(caches[0]!, q, seqK, headMajor))],
      1,
      21,
    );
    const run = evicted(seqK);
    run();
    const afterEviction = median(Array.from({ length: 21 }, run));
    console.log(
      `decode attention, ${v.mode} mode, ${seqK} keys x ${layers} layers (${native!.info().threads} threads): after eviction ${afterEviction.toFixed(2)} ms, ` +
        `from memory ${fromMemory!.toFixed(2)} ms, cache-resident ${resident!.toFixed(2)} ms`,
    );
  }
}

function kvRound(): void {
  const [D, heads, rows] = [64, 5, 1139];
  const rowSize = heads * D;
  const src = input(rows * rowSize);
  const dst = new Uint16Array(rows * rowSize);
  const writes = (round: RoundRowsToBf16, n: number) => () => {
    for (let l = 0; l < 64; l++) for (let h = 0; h < heads; h++) round(src, h * D, rowSize, n, D, dst, h * n * D);
  };
  const [tsPrefill, nativePrefill] = alternate([writes(roundRowsToBf16, rows), writes(k.roundRowsToBf16!, rows)], 1, 15);
  const [tsStep, nativeStep] = alternate([writes(roundRowsToBf16, 1), writes(k.roundRowsToBf16!, 1)], 200, 15);
  console.log(`KV rounding, a ${rows}-token prefill: TypeScript ${tsPrefill!.toFixed(1)} ms, addon ${nativePrefill!.toFixed(1)} ms`);
  console.log(`KV rounding, one decode step: TypeScript ${(tsStep! * 1000).toFixed(0)} us, addon ${(nativeStep! * 1000).toFixed(0)} us`);
}

function bandwidthNoise(): void {
  const rows = 393216;
  const w = bf16Weight(rows, 960);
  const x = input(960);
  const out = new Float32Array(rows);
  const bytes = w.data.byteLength;
  const ratios: number[] = [];
  for (let i = 0; i < 9; i++) {
    const bw = native!.measureBandwidth(1 << 30, 0.3).gbps;
    let best = Infinity;
    for (let p = 0; p < 3; p++) {
      const t0 = performance.now();
      k.linear(x, 1, w, null, out);
      best = Math.min(best, performance.now() - t0);
    }
    const gemv = bytes / best / 1e6;
    ratios.push(gemv / bw);
    console.log(`read bandwidth ${bw.toFixed(1)} GB/s, one-row linear ${gemv.toFixed(1)} GB/s, ratio ${(gemv / bw).toFixed(2)}`);
  }
  console.log(`median ratio ${median(ratios).toFixed(3)}`);
}

const modes: Record<string, () => void> = {
  overhead,
  "bf16-round": bf16Round,
  "kv-layout": kvLayout,
  "decode-attention": decodeAttention,
  "kv-round": kvRound,
  "bandwidth-noise": bandwidthNoise,
};
const run = modes[positionals[0] ?? ""];
if (!run) throw new Error(`usage: micro.js ${Object.keys(modes).join(" | ")}`);
run();
