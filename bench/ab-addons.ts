/**
 * Two builds of the native addon, compared in one process: every text-layer weight of the
 * 500M-shaped checkpoint through the decode-time linear (R rows), the builds taking turns pass by
 * pass so that both see the same machine (this one is shared and noisy: separate runs of the two
 * builds differ by more than the changes being measured). Prints the median time of a pass over
 * all the weights for each build and B's rate relative to A's.
 *
 *   node dist/bench/ab-addons.js A.node B.node [--rows 1,4] [--dtype bf16|q8|q4|q4x4] [--passes 31]
 *        [--weights text|vision] [--model /tmp/smolvlm-500m-shaped] [--mode f32|bf16] [--memory mapped|fresh]
 *
 * `--mode bf16` runs bf16 weights in bf16 mode (vdpbf16ps where the CPU has it) instead of the
 * default f32 mode (weights widened to float32).
 *
 * `--memory fresh` copies the float weights out of the mapped checkpoint into fresh anonymous memory
 * on 2 MiB pages first (allocPages): the page cache and fresh memory stream at different rates on
 * some machines (bench/weight-memory.ts).
 *
 * `--weights vision` takes the vision encoder's linears instead (with `--rows 1024`: one tile's
 * worth of them, the many-row path).
 *
 * Make the builds with `node scripts/build-native.mjs` and copy build/Release/smolvlm_native.node
 * aside between them. Quantized weights are quantized once, by A (q4x4: q4 repacked as Q4_1x4 by A,
 * the layout decoding reads on x86).
 */
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { SafetensorsFile, type Tensor } from "../src/io/safetensors.js";
import type { PackedQ4Tensor, QuantizedTensor } from "../src/quant/format.js";
import { allocateQuantized, isPackedQ4, isQuantized, quantizedBytes } from "../src/quant/format.js";
import { copyToFreshPages, median } from "./decode-loop.js";

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    rows: { type: "string", default: "1,4" },
    dtype: { type: "string", default: "bf16" },
    passes: { type: "string", default: "31" },
    weights: { type: "string", default: "text" },
    mode: { type: "string", default: "f32" },
    memory: { type: "string", default: "mapped" },
  },
});
if (positionals.length !== 2) throw new Error("usage: ab-addons.js A.node B.node [--rows 1,4] [--dtype bf16|q8|q4|q4x4] [--passes 31]");

/** The slice of the addon's raw API this script calls (native-kernels.ts wraps the rest). */
interface RawAddon {
  linear(x: Float32Array, rows: number, w: Uint16Array, dtype: number, outDim: number, inDim: number, bias: null, y: Float32Array, mode: number): void;
  linearQuant(x: Float32Array, rows: number, inDim: number, scheme: number, q: Int8Array | Uint8Array, scales: Uint16Array | null, mins: Uint16Array | null, outDim: number, bias: null, y: Float32Array): void;
  quantize(w: Uint16Array, dtype: number, rows: number, cols: number, scheme: number, q: Int8Array | Uint8Array, scales: Uint16Array, mins: Uint16Array | null): unknown;
  q4x4Bytes(rows: number, cols: number): number;
  packQ4x4(q: Uint8Array, scales: Uint16Array, mins: Uint16Array, rows: number, cols: number, out: Uint8Array): void;
}

const require = createRequire(import.meta.url);
const builds = positionals.map((p) => require(resolve(p)) as RawAddon);
const scheme = v.dtype === "q8" ? 8 : v.dtype === "q4" || v.dtype === "q4x4" ? 4 : 0;
const packed = v.dtype === "q4x4";
const Q4X4_SCHEME = 5; // the addon's scheme code of a packed Q4_1x4 weight (native/kernels.h kQ4x4)
const passes = Number(v.passes);

const file = SafetensorsFile.open(join(v.model!, "model.safetensors"));
const isLinear = (n: string): boolean =>
  v.weights === "vision"
    ? n.includes("vision_model.encoder.layers") && /(proj|fc1|fc2)\.weight$/.test(n)
    : n.includes("text_model.layers") && n.endsWith("proj.weight");
if (v.weights !== "text" && v.weights !== "vision") throw new Error(`--weights: text or vision, not ${v.weights}`);
const names = file.names().filter(isLinear);
const weights: (Tensor | QuantizedTensor | PackedQ4Tensor)[] = names.map((n) => {
  const w = file.read(n);
  if (w.dtype !== "BF16") throw new Error(`${n}: expected a bf16 checkpoint, got ${w.dtype}`);
  if (!scheme) return w;
  const [rows, cols] = w.shape as [number, number];
  const q = allocateQuantized(scheme === 8 ? "q8" : "q4", [rows, cols]);
  builds[0]!.quantize(w.data as Uint16Array, 1, rows, cols, scheme, q.data, q.scales, q.mins);
  if (!packed) return q;
  const data = new Uint8Array(builds[0]!.q4x4Bytes(rows, cols));
  builds[0]!.packQ4x4(q.data as Uint8Array, q.scales, q.mins!, rows, cols, data);
  return { dtype: "Q4_1x4", shape: [rows, cols], data };
});
if (v.memory !== "mapped" && v.memory !== "fresh") throw new Error(`--memory: mapped or fresh, not ${v.memory}`);
if (v.memory === "fresh" && !scheme) weights.splice(0, weights.length, ...copyToFreshPages(weights as Tensor[]));
const bytes = weights.reduce((s, w) => s + (isQuantized(w) ? quantizedBytes(w) : w.data.byteLength), 0);

if (v.mode !== "f32" && v.mode !== "bf16") throw new Error(`--mode: f32 or bf16, not ${v.mode}`);
const linearMode = v.mode === "bf16" ? 1 : 0;

function pass(a: RawAddon, rows: number, x: Float32Array, ys: Float32Array[]): number {
  const t0 = performance.now();
  weights.forEach((w, i) => {
    const [outDim, inDim] = w.shape as [number, number];
    if (isPackedQ4(w)) a.linearQuant(x, rows, inDim, Q4X4_SCHEME, w.data, null, null, outDim, null, ys[i]!);
    else if (isQuantized(w)) a.linearQuant(x, rows, inDim, scheme, w.data, w.scales, w.mins, outDim, null, ys[i]!);
    else a.linear(x, rows, w.data as Uint16Array, 1, outDim, inDim, null, ys[i]!, linearMode);
  });
  return performance.now() - t0;
}

console.log(`${names.length} ${v.weights} weights, ${(bytes / 1e6).toFixed(0)} MB as ${v.dtype}; A ${positionals[0]}, B ${positionals[1]}; ${passes} passes each, alternating`);
for (const rows of v.rows!.split(",").map(Number)) {
  const x = new Float32Array(rows * 4096).map((_, i) => Math.sin(i) * 0.5);
  const ys = weights.map((w) => new Float32Array(rows * w.shape[0]!));
  const times: number[][] = [[], []];
  for (let p = 0; p < passes; p++) {
    for (const b of p % 2 ? [1, 0] : [0, 1]) times[b]!.push(pass(builds[b]!, rows, x, ys));
  }
  const [ta, tb] = [median(times[0]!), median(times[1]!)];
  const rate = (ms: number): string => `${((bytes / ms) * 1e-6).toFixed(1)} GB/s`;
  console.log(`rows ${rows}: A ${ta.toFixed(2)} ms (${rate(ta)}), B ${tb.toFixed(2)} ms (${rate(tb)}): B is ${(ta / tb).toFixed(3)}x A`);
}
