/**
 * Where a decode step's time goes: every kernel call timed, per step, for S sequences decoding
 * together after a context of N tokens each (random token ids; the 500M-shaped checkpoint).
 * And, with --stream-weights, the rate at which the one-row linear streams every text layer
 * weight once (the memory-bound core of decoding), median of 7 passes.
 *
 *   node dist/bench/decode-profile.js [--model DIR] [--dtype bf16|q8|q4|f32] [--context 80] [--streams 1] [--steps 32]
 *   node dist/bench/decode-profile.js --stream-weights
 *   node dist/bench/decode-profile.js --vision [--dtype q4] [--steps 3]
 *
 * --vision times the kernels of the vision encoder and connector instead, over `--steps` tiles
 * (one warm-up tile first).
 *
 * To compare two builds of the addon, run it with SMOLVLM_NATIVE_PATH pointing at each, in
 * alternation (the machine is noisy).
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { loadNativeKernels, type NativeKernels } from "../src/backend/native-kernels.js";
import type { Kernels } from "../src/backend/kernels.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { linearModeFor, SmolVLM, type DTypeMode } from "../src/smolvlm.js";
import { join } from "node:path";
import { prefilledCache } from "./decode-loop.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    dtype: { type: "string", default: "bf16" },
    context: { type: "string", default: "80" },
    streams: { type: "string", default: "1" },
    steps: { type: "string", default: "32" },
    "stream-weights": { type: "boolean", default: false },
    vision: { type: "boolean", default: false },
  },
});

const native = loadNativeKernels();
if (!native) throw new Error("decode-profile needs the native kernels");

/** The native kernels with every call timed under a label (linears by weight shape). */
function timed(k: NativeKernels, stats: Map<string, { calls: number; ms: number }>): Kernels {
  const time = <T>(label: string, f: () => T): T => {
    const t0 = performance.now();
    const r = f();
    const s = stats.get(label) ?? { calls: 0, ms: 0 };
    s.calls++;
    s.ms += performance.now() - t0;
    stats.set(label, s);
    return r;
  };
  return {
    name: "timed",
    packForDecoding: k.packForDecoding,
    linear: (x, rows, w, bias, out) => time(`linear [${w.shape.join(",")}] ${w.dtype}`, () => k.linear(x, rows, w, bias, out)),
    linearMany: (x, rows, ws, biases, outs) => time(`linearMany ${ws.map((w) => `[${w.shape.join(",")}]`).join(" ")}`, () => k.linearMany(x, rows, ws, biases, outs)),
    rmsNorm: (...a) => time("rmsNorm", () => k.rmsNorm(...a)),
    layerNorm: (...a) => time("layerNorm", () => k.layerNorm(...a)),
    rope: (...a) => time("rope", () => k.rope(...a)),
    attention: (p) => time("attention", () => k.attention(p)),
    siluMul: (...a) => time("siluMul", () => k.siluMul(...a)),
    gelu: (...a) => time("gelu", () => k.gelu(...a)),
    addInPlace: (...a) => time("addInPlace", () => k.addInPlace(...a)),
  };
}

async function profileDecode(): Promise<void> {
  const dtype = v.dtype as DTypeMode;
  const [context, streams, steps] = [Number(v.context), Number(v.streams), Number(v.steps)];
  // The same arithmetic mode SmolVLM.load would pick, then the kernels wrapped.
  native!.linearMode = linearModeFor(dtype, native!.info().bf16Native);
  const stats = new Map<string, { calls: number; ms: number }>();
  const vlm = await SmolVLM.load(v.model!, { dtype, kernels: timed(native!, stats) });
  const m = vlm.model;
  const caches = Array.from({ length: streams }, () => prefilledCache(m, context, steps));
  stats.clear();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const embeds = m.embedWithImages(Array.from({ length: streams }, (_, j) => 300 + i + j), null);
    m.text.forwardSegments(embeds, caches.map((cache) => ({ cache, rows: 1 })));
  }
  const perStep = (performance.now() - t0) / steps;
  let inKernels = 0;
  console.log(`${v.model}, ${dtype}, ${streams} sequence(s) after ${context} tokens, ${steps} steps (isa ${native!.info().isa}):`);
  for (const [label, s] of [...stats].sort((a, b) => b[1].ms - a[1].ms)) {
    inKernels += s.ms;
    console.log(`  ${label.padEnd(44)} ${(s.ms / steps).toFixed(3).padStart(8)} ms/step  ${(s.calls / steps).toFixed(0).padStart(4)} calls`);
  }
  console.log(`  per step ${perStep.toFixed(2)} ms (${((streams * 1000) / perStep).toFixed(1)} tok/s); in kernels ${(inKernels / steps).toFixed(2)} ms`);
}

/** Where a vision tile's time goes: the encoder and connector of one tile, every kernel call timed. */
async function profileVision(): Promise<void> {
  const dtype = v.dtype as DTypeMode;
  const tiles = Number(v.steps);
  native!.linearMode = linearModeFor(dtype, native!.info().bf16Native);
  const stats = new Map<string, { calls: number; ms: number }>();
  const vlm = await SmolVLM.load(v.model!, { dtype, kernels: timed(native!, stats) });
  const size = vlm.model.config.vision.imageSize;
  const pixels = new Float32Array(3 * size * size).map((_, i) => Math.sin(i * 0.37));
  const encode = (): Float32Array => vlm.model.connector.project(vlm.model.vision.encodeTile(pixels, size), vlm.model.vision.patchesPerSide);
  encode();
  stats.clear();
  const t0 = performance.now();
  for (let i = 0; i < tiles; i++) encode();
  const perTile = (performance.now() - t0) / tiles;
  let inKernels = 0;
  console.log(`${v.model}, ${dtype}, vision encoder and connector, ${tiles} tile(s) of ${size}x${size} (isa ${native!.info().isa}):`);
  for (const [label, s] of [...stats].sort((a, b) => b[1].ms - a[1].ms)) {
    inKernels += s.ms;
    console.log(`  ${label.padEnd(44)} ${(s.ms / tiles).toFixed(1).padStart(8)} ms/tile  ${(s.calls / tiles).toFixed(0).padStart(4)} calls`);
  }
  console.log(`  per tile ${perTile.toFixed(0)} ms; in kernels ${(inKernels / tiles).toFixed(0)} ms`);
}

function streamWeights(): void {
  const file = SafetensorsFile.open(join(v.model!, "model.safetensors"));
  const weights = file.names().filter((n) => n.includes("text_model.layers") && n.endsWith("proj.weight")).map((n) => file.read(n));
  const x = new Float32Array(Math.max(...weights.map((w) => w.shape[1]!))).fill(0.5);
  const rates: number[] = [];
  for (let pass = 0; pass < 7; pass++) {
    const t0 = performance.now();
    let bytes = 0;
    for (const w of weights) {
      native!.linearF32(x, 1, w);
      bytes += w.data.byteLength;
    }
    rates.push(bytes / ((performance.now() - t0) / 1000) / 1e9);
  }
  rates.sort((a, b) => a - b);
  console.log(`one-row linear over every text layer weight: median ${rates[3]!.toFixed(1)} GB/s (passes ${rates.map((r) => r.toFixed(1)).join(" ")})`);
}

if (v["stream-weights"]) streamWeights();
else if (v.vision) await profileVision();
else await profileDecode();
