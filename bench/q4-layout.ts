/**
 * The Q4_1x4 decoding layout (native/quant.cc) against canonical Q4_1, in one process so that both
 * see the same machine: the 500M-shaped checkpoint loaded twice with --dtype q4, once with the
 * native kernels' packForDecoding (the library's default on x86) and once without it.
 *
 *   node dist/bench/q4-layout.js [--model /tmp/smolvlm-500m-shaped] [--contexts 80,876] [--repeats 9]
 *
 * Prints, each a median over alternating repeats:
 *  - one pass over every text-layer linear (1 and 4 input rows), ms and GB/s of weights;
 *  - decode steps after a context of N tokens (blocks of 8 steps, the two models taking turns).
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { loadNativeKernels, type NativeKernels } from "../src/backend/native-kernels.js";
import type { LinearWeight } from "../src/backend/kernels.js";
import { linearModeFor, SmolVLM } from "../src/smolvlm.js";
import type { Idefics3Model } from "../src/model/idefics3.js";
import { median } from "./decode-loop.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    contexts: { type: "string", default: "80,876" },
    repeats: { type: "string", default: "9" },
  },
});
const repeats = Number(v.repeats);

async function load(packed: boolean): Promise<{ model: Idefics3Model; kernels: NativeKernels }> {
  const kernels = loadNativeKernels();
  if (!kernels) throw new Error("q4-layout needs the native kernels");
  if (!kernels.info().packedQ4) throw new Error(`the native kernels do not repack Q4_1 at this ISA (${kernels.info().isa})`);
  kernels.linearMode = linearModeFor("q4", kernels.info().bf16Native);
  if (!packed) delete kernels.packForDecoding;
  const vlm = await SmolVLM.load(v.model!, { dtype: "q4", kernels });
  return { model: vlm.model, kernels };
}

/** Every text-layer linear weight of a model, in layer order (the decoder's private fields). */
function textLinears(m: Idefics3Model): LinearWeight[] {
  const layers = (m.text as unknown as { layers: Record<string, LinearWeight | Float32Array>[] }).layers;
  return layers.flatMap((l) => ["q", "k", "v", "o", "gate", "up", "down"].map((n) => l[n] as LinearWeight));
}

const variants = [
  { name: "canonical Q4_1", ...(await load(false)) },
  { name: "Q4_1x4 (packed)", ...(await load(true)) },
];
console.log(`${v.model}, q4, ${variants[1]!.kernels.info().isa}, ${variants[1]!.kernels.info().threads} threads; ${repeats} repeats, the layouts taking turns`);

const weights = variants.map((x) => textLinears(x.model));
const bytes = 0.625 * weights[0]!.reduce((s, w) => s + w.shape[0] * w.shape[1], 0); // 20 bytes per 32 weights
for (const rows of [1, 4]) {
  const x = Float32Array.from({ length: rows * 4096 }, (_, i) => Math.sin(i) * 0.5);
  const times: number[][] = [[], []];
  for (let r = 0; r < repeats; r++) {
    for (const i of r % 2 ? [1, 0] : [0, 1]) {
      const t0 = performance.now();
      for (const w of weights[i]!) variants[i]!.kernels.linear(x, rows, w);
      times[i]!.push(performance.now() - t0);
    }
  }
  const line = variants.map((x, i) => `${x.name} ${median(times[i]!).toFixed(2)} ms (${(bytes / median(times[i]!) / 1e6).toFixed(1)} GB/s)`);
  console.log(`linears, ${rows} row(s): ${line.join(", ")}: packed ${(median(times[0]!) / median(times[1]!)).toFixed(3)}x`);
}

for (const context of v.contexts!.split(",").map(Number)) {
  const caches = variants.map(({ model }) => {
    const cache = model.text.newCache(context + 8 * repeats + 1);
    for (let s = 0; s < context; s += 256) {
      const ids = Array.from({ length: Math.min(256, context - s) }, (_, i) => 100 + ((s + i) % 1000));
      model.forward(model.embedWithImages(ids, null), ids.length, cache);
    }
    return cache;
  });
  const times: number[][] = [[], []];
  for (let r = 0; r < repeats; r++) {
    for (const i of r % 2 ? [1, 0] : [0, 1]) {
      const { model } = variants[i]!;
      caches[i]!.length = context;
      const t0 = performance.now();
      for (let s = 0; s < 8; s++) model.text.forwardSegments(model.embedWithImages([300 + s], null), [{ cache: caches[i]!, rows: 1 }]);
      times[i]!.push((performance.now() - t0) / 8);
    }
  }
  const line = variants.map((x, i) => `${x.name} ${median(times[i]!).toFixed(2)} ms`);
  console.log(`decode step after ${context} tokens: ${line.join(", ")}: packed ${(median(times[0]!) / median(times[1]!)).toFixed(3)}x`);
}
