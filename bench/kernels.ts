/**
 * Micro-benchmark of the kernels at SmolVLM-500M shapes: native (float32 and bf16 linear modes)
 * against the TypeScript kernels in the same run. Medians of several runs.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/kernels.js [--reps N] [--ts-budget SECONDS] [--no-ts] [--isa avx2] [--quant-only]
 *
 * SMOLVLM_THREADS sets the native thread count.
 */
import { performance } from "node:perf_hooks";
import { loadNativeKernels, nativeLoadError, type NativeIsa, type NativeKernels } from "../src/backend/native-kernels.js";
import { tsKernels } from "../src/backend/ts-kernels.js";
import { f32ToBf16 } from "../src/backend/dtype.js";
import type { AttentionParams, Kernels } from "../src/backend/kernels.js";
import type { Tensor } from "../src/io/safetensors.js";
import { quantizedBytes } from "../src/quant/format.js";
import { quantizeWeight } from "../src/quant/quantize.js";

const argv = process.argv.slice(2);
function option(name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}
const REPS = Number(option("--reps") ?? 7);
const TS_BUDGET_S = Number(option("--ts-budget") ?? 2);
const RUN_TS = !argv.includes("--no-ts");

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 - 0.5) * 2 * scale;
  }
  return a;
}

function bf16Weight(out: number, inDim: number, seed: number): Tensor {
  const v = randomArray(out * inDim, seed, 0.05);
  const data = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) data[i] = f32ToBf16(v[i]!);
  return { dtype: "BF16", shape: [out, inDim], data };
}

/**
 * Median seconds of `fn`: at least `minReps` runs (after one warm-up), more while under budget.
 * `setup` runs before each, untimed.
 */
function timeIt(fn: () => void, minReps: number, budgetS: number, maxReps = 50, setup?: () => void): number {
  setup?.();
  fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minReps || (times.length < maxReps && performance.now() - start < budgetS * 1000)) {
    setup?.();
    const t0 = performance.now();
    fn();
    times.push((performance.now() - t0) / 1000);
    if (times.length >= 1 && performance.now() - start > budgetS * 1000 && times.length >= Math.min(minReps, 3)) break;
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** TypeScript runs: one timed run when a single one exceeds the budget, else a median. */
function timeTs(fn: () => void, setup?: () => void): number {
  setup?.();
  const t0 = performance.now();
  fn();
  const first = (performance.now() - t0) / 1000;
  if (first > TS_BUDGET_S / 3) return first;
  return timeIt(fn, 3, TS_BUDGET_S, 15, setup);
}

const fmt = (v: number, width = 8, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "-").padStart(width);

interface LinearShape {
  label: string;
  rows: number;
  out: number;
  inDim: number;
  bias?: boolean;
}

const LINEAR: LinearShape[] = [
  { label: "decode q/o", rows: 1, out: 960, inDim: 960 },
  { label: "decode k/v", rows: 1, out: 320, inDim: 960 },
  { label: "decode gate/up", rows: 1, out: 2560, inDim: 960 },
  { label: "decode down", rows: 1, out: 960, inDim: 2560 },
  { label: "decode lm_head", rows: 1, out: 49280, inDim: 960 },
  { label: "prefill 64 gate/up", rows: 64, out: 2560, inDim: 960 },
  { label: "prefill 64 q/o", rows: 64, out: 960, inDim: 960 },
  { label: "connector (64 tokens)", rows: 64, out: 960, inDim: 12288 },
  { label: "prefill 1024 gate/up", rows: 1024, out: 2560, inDim: 960 },
  { label: "prefill 1024 q/o", rows: 1024, out: 960, inDim: 960 },
  { label: "prefill 1024 down", rows: 1024, out: 960, inDim: 2560 },
  { label: "vision q/k/v/o (+bias)", rows: 1024, out: 768, inDim: 768, bias: true },
  { label: "vision fc1 (+bias)", rows: 1024, out: 3072, inDim: 768, bias: true },
  { label: "vision fc2 (+bias)", rows: 1024, out: 768, inDim: 3072, bias: true },
];

function benchLinear(native: NativeKernels): void {
  console.log("\nlinear, bf16 weights: GFLOP/s (decode rows also GB/s of weight streamed)");
  console.log(`${"shape".padEnd(24)} ${"rows".padStart(5)} ${"[out, in]".padEnd(13)} ${"native f32".padStart(10)} ${"native bf16".padStart(11)} ${"typescript".padStart(10)} ${"speedup".padStart(8)}   decode GB/s`);
  for (const s of LINEAR) {
    const x = randomArray(s.rows * s.inDim, s.rows + s.out);
    const w = bf16Weight(s.out, s.inDim, s.out + s.inDim);
    const bias = s.bias ? randomArray(s.out, 3) : null;
    const flops = 2 * s.rows * s.out * s.inDim;
    const tF32 = timeIt(() => native.linearF32(x, s.rows, w, bias), REPS, 1);
    const tBf16 = timeIt(() => native.linearBf16(x, s.rows, w, bias), REPS, 1);
    const tTs = RUN_TS ? timeTs(() => tsKernels.linear(x, s.rows, w, bias)) : NaN;
    const gb = s.rows === 1 ? `${fmt((2 * s.out * s.inDim) / tF32 / 1e9, 7)}` : "";
    console.log(
      `${s.label.padEnd(24)} ${String(s.rows).padStart(5)} ${`[${s.out},${s.inDim}]`.padEnd(13)} ${fmt(flops / tF32 / 1e9, 10)} ${fmt(flops / tBf16 / 1e9, 11)} ${fmt(flops / tTs / 1e9, 10, 2)} ${fmt(tTs / tF32, 7, 0)}x   ${gb}`,
    );
  }
}

const QUANT_LINEAR: LinearShape[] = [
  ...LINEAR.filter((s) => s.rows === 1),
  { label: "decode x4 gate/up", rows: 4, out: 2560, inDim: 960 },
  { label: "decode x4 down", rows: 4, out: 960, inDim: 2560 },
  { label: "decode x8 gate/up", rows: 8, out: 2560, inDim: 960 },
  ...LINEAR.filter((s) => s.rows >= 64 && s.label.includes("1024")),
];

/** bf16 against q8 and q4 weights: ms per call and, for the decode rows, GB/s of weight bytes read. */
function benchQuantLinear(native: NativeKernels): void {
  console.log("\nlinear, bf16 vs q8 vs q4 weights: ms per call (decode: GB/s of weight bytes read); speedups over bf16");
  console.log(`${"shape".padEnd(24)} ${"rows".padStart(5)} ${"[out, in]".padEnd(13)} ${"bf16 ms".padStart(8)} ${"q8 ms".padStart(8)} ${"q4 ms".padStart(8)} ${"q8 x".padStart(6)} ${"q4 x".padStart(6)}   GB/s bf16 / q8 / q4`);
  for (const s of QUANT_LINEAR) {
    const x = randomArray(s.rows * s.inDim, s.rows + s.out);
    const w = bf16Weight(s.out, s.inDim, s.out + s.inDim);
    const q8 = quantizeWeight(w, "q8");
    const q4 = quantizeWeight(w, "q4");
    const bias = s.bias ? randomArray(s.out, 3) : null;
    const t = [w, q8, q4].map((weight) => timeIt(() => native.linear(x, s.rows, weight, bias), REPS, 1));
    const bytes = [w.data.byteLength, quantizedBytes(q8), quantizedBytes(q4)];
    const gbs = s.rows <= 8 ? t.map((ti, i) => fmt(bytes[i]! / ti! / 1e9, 5)).join(" /") : "";
    console.log(
      `${s.label.padEnd(24)} ${String(s.rows).padStart(5)} ${`[${s.out},${s.inDim}]`.padEnd(13)} ${t.map((ti) => fmt(ti * 1e3, 8, 3)).join(" ")} ${fmt(t[0]! / t[1]!, 5, 2)}x ${fmt(t[0]! / t[2]!, 5, 2)}x   ${gbs}`,
    );
  }
}

interface AttnShape {
  label: string;
  seqQ: number;
  seqK: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  offset: number | null;
}

const ATTENTION: AttnShape[] = [
  { label: "vision tile (non-causal)", seqQ: 1024, seqK: 1024, heads: 12, kvHeads: 12, headDim: 64, offset: null },
  { label: "decoder prefill (causal)", seqQ: 1100, seqK: 1100, heads: 15, kvHeads: 5, headDim: 64, offset: 0 },
  { label: "decoder decode step", seqQ: 1, seqK: 1100, heads: 15, kvHeads: 5, headDim: 64, offset: 1099 },
];

function attnFlops(s: AttnShape): number {
  let pairs = 0;
  for (let i = 0; i < s.seqQ; i++) pairs += s.offset === null ? s.seqK : Math.min(s.seqK, s.offset + i + 1);
  return 4 * pairs * s.heads * s.headDim;
}

function benchAttention(native: NativeKernels): void {
  console.log("\nattention: GFLOP/s (4·visible pairs·heads·headDim)");
  console.log(`${"shape".padEnd(26)} ${"native".padStart(8)} ${"typescript".padStart(10)} ${"speedup".padStart(8)}   native ms`);
  for (const s of ATTENTION) {
    const p: AttentionParams = {
      q: randomArray(s.seqQ * s.heads * s.headDim, 1, 2),
      k: randomArray(s.seqK * s.kvHeads * s.headDim, 2, 2),
      v: randomArray(s.seqK * s.kvHeads * s.headDim, 3),
      seqQ: s.seqQ,
      seqK: s.seqK,
      numHeads: s.heads,
      numKvHeads: s.kvHeads,
      headDim: s.headDim,
      scale: 1 / Math.sqrt(s.headDim),
      causalOffset: s.offset,
    };
    const flops = attnFlops(s);
    const tN = timeIt(() => native.attention(p), REPS, 1);
    const tTs = RUN_TS ? timeTs(() => tsKernels.attention(p)) : NaN;
    console.log(`${s.label.padEnd(26)} ${fmt(flops / tN / 1e9)} ${fmt(flops / tTs / 1e9, 10, 2)} ${fmt(tTs / tN, 7, 0)}x   ${fmt(tN * 1e3, 9, 3)}`);
  }
}

function benchElementwise(native: NativeKernels): void {
  console.log("\nelementwise: milliseconds per call");
  console.log(`${"kernel".padEnd(34)} ${"native".padStart(8)} ${"typescript".padStart(10)}`);
  const n = 1024 * 3072;
  const x = randomArray(n, 5, 4);
  const u = randomArray(n, 6);
  const w = randomArray(768, 7);
  const b = randomArray(768, 8);
  const w960 = randomArray(960, 9);
  // In-place kernels work on a copy of the input, refreshed (untimed) before each run.
  const work = new Float32Array(n);
  const refresh = () => work.set(x);
  const cases: [string, (k: Kernels) => void, (() => void)?][] = [
    ["gelu tanh 1024x3072 (in place)", (k) => k.gelu(work, true), refresh],
    ["gelu erf 1024x3072 (in place)", (k) => k.gelu(work, false), refresh],
    ["siluMul 1100x2560 (new output)", (k) => k.siluMul(x.subarray(0, 1100 * 2560), u.subarray(0, 1100 * 2560))],
    ["layerNorm 1024x768 (new output)", (k) => k.layerNorm(x, 1024, w, b, 1e-6)],
    ["rmsNorm 1024x960 (new output)", (k) => k.rmsNorm(x, 1024, w960, 1e-5)],
    ["addInPlace 1024x768", (k) => k.addInPlace(work.subarray(0, 1024 * 768), u), refresh],
  ];
  for (const [label, fn, setup] of cases) {
    const tN = timeIt(() => fn(native), REPS, 0.5, 50, setup);
    const tTs = RUN_TS ? timeTs(() => fn(tsKernels), setup) : NaN;
    console.log(`${label.padEnd(34)} ${fmt(tN * 1e3, 8, 3)} ${fmt(tTs * 1e3, 10, 3)}`);
  }
}

const native = loadNativeKernels();
if (!native) {
  console.error(`native kernels unavailable: ${nativeLoadError()}`);
  process.exit(1);
}
const isa = option("--isa");
if (isa && !native.setIsa(isa as NativeIsa)) {
  console.error(`this CPU cannot run ${isa}; it runs ${native.info().isas.join(", ")}`);
  process.exit(1);
}
const info = native.info();
console.log(
  `native: isa ${info.isa} (available: ${info.isas.join(", ")}), ${info.threads} threads, bf16 mode ${info.bf16Native ? "on vdpbf16ps" : "emulated (rounded activations, float32 kernel)"}; medians of >= ${REPS} runs`,
);
if (argv.includes("--quant-only")) {
  benchQuantLinear(native);
} else {
  benchLinear(native);
  benchQuantLinear(native);
  benchAttention(native);
  benchElementwise(native);
}
