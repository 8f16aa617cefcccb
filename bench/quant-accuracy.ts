/**
 * What quantization costs in accuracy: the same image prompt through the model in f32 (the
 * checkpoint's own bf16 weights, exact float32 arithmetic: the reference), bf16 mode, q8 and q4,
 * teacher-forced over the reference's own greedy continuation.
 *
 * Reports, against the reference: relative L2 error of the last prompt position's logits, the
 * mean relative L2 over the continuation's positions, and top-1 agreement at each of the N
 * teacher-forced positions (does the model pick the token the reference picked?).
 *
 *   node dist/bench/quant-accuracy.js [--model DIR] [--image FILE] [--image-size 512] [--positions 64] [--layers 0,15,31]
 *   node dist/bench/quant-accuracy.js [--model DIR] --groups q4
 *
 * Defaults: the 500M-shaped checkpoint from bench/make-checkpoint.ts (weights drawn like a
 * trained model's) and bench/images/square512.jpg at 512 px (one tile).
 *
 * It also prints the weights' own round-trip error (relative L2 of dequantized against original,
 * over every linear weight of the text layers in --layers) for q8, q4 (with a per-block minimum)
 * and a symmetric 4-bit code without the minimum (q = round(w / d) in [-8, 7], d = max|w| / 8, as
 * GGML's Q4_0): what the minimum buys.
 *
 * With --groups q8|q4 it instead measures where the logits error comes from: a text-only prompt
 * through the f32 model with only one group of text weights replaced by their quantize-dequantize
 * round trip (float32 activations, so the weights' error alone), group by group, against the
 * unquantized model. Groups are told apart by shape (lm_head [vocab, h], gate/up [ffn, h], down
 * [h, ffn], q/o and k/v by their head counts), as in SmolVLM's text decoder. A last line runs the
 * real mode (int8 activations as well) on the same prompt, to compare with the "all" line.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SmolVLM, type DTypeMode } from "../src/smolvlm.js";
import { argmax } from "../src/generation/sampler.js";
import { WeightStore } from "../src/io/checkpoint.js";
import { loadModelConfig } from "../src/io/config.js";
import { widenRows } from "../src/backend/dtype.js";
import { QUANT_BLOCK } from "../src/quant/format.js";
import { dequantizeRows, quantizeReference } from "../src/quant/reference.js";
import type { Tensor } from "../src/io/safetensors.js";
import { tensorShapes } from "./make-checkpoint.js";
import type { Kernels } from "../src/backend/kernels.js";
import { relL2, withRoundTrip } from "./accuracy-tools.js";
import type { QuantScheme } from "../src/quant/format.js";

const argv = process.argv.slice(2);
function option(name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}
const here = dirname(fileURLToPath(import.meta.url));
const MODEL = option("--model", "/tmp/smolvlm-500m-shaped");
const IMAGE = option("--image", join(here, "..", "..", "bench", "images", "square512.jpg"));
/** --image-size 0: the checkpoint's own default. */
const IMAGE_SIZE = Number(option("--image-size", "512")) || undefined;
const POSITIONS = Number(option("--positions", "64"));
const MODES = option("--modes", "bf16,q8,q4").split(",") as DTypeMode[];
const PROMPT = "Describe this image in detail.";

interface Run {
  /** [POSITIONS + 1, vocab]: the last prompt position, then each continuation position. */
  logits: Float32Array;
  vocab: number;
}

/** Prompt logits then teacher-forced logits over `continuation` (or the model's own greedy choice). */
async function run(dtype: DTypeMode, continuation: number[] | null): Promise<{ run: Run; tokens: number[] }> {
  const vlm = await SmolVLM.load(MODEL, { dtype, engine: { prefixCacheBytes: 0 } });
  const prepared = await vlm.prepare({ prompt: PROMPT, images: [IMAGE], imageSize: IMAGE_SIZE });
  const model = vlm.model;
  const features = prepared.tiles ? model.encodeImages({ data: prepared.tiles.data, tiles: prepared.tiles.count, size: prepared.tiles.size }) : null;
  const ids = prepared.inputIds;
  const cache = model.text.newCache(ids.length + POSITIONS + 1);
  const vocab = model.config.text.vocabSize;
  const logits = new Float32Array((POSITIONS + 1) * vocab);
  logits.set(model.forward(model.embedPrompt(ids, features), ids.length, cache));
  const tokens: number[] = [];
  if (continuation) {
    // All continuation positions in one pass: teacher forcing.
    const forced = model.forward(model.embedWithImages(continuation.slice(0, POSITIONS), null), POSITIONS, cache, true);
    logits.set(forced, vocab);
  } else {
    for (let p = 0; p < POSITIONS; p++) {
      const next = argmax(logits.subarray(p * vocab, (p + 1) * vocab));
      tokens.push(next);
      logits.set(model.forward(model.embedWithImages([next], null), 1, cache), (p + 1) * vocab);
    }
  }
  return { run: { logits, vocab }, tokens };
}

/** Symmetric 4-bit round trip (no minimum), for comparison only. */
function symmetric4(w: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let b = 0; b < w.length; b += QUANT_BLOCK) {
    let amax = 0, signed = 0;
    for (let i = b; i < b + QUANT_BLOCK; i++) if (Math.abs(w[i]!) > amax) [amax, signed] = [Math.abs(w[i]!), w[i]!];
    const d = signed / -8; // the largest magnitude maps to -8, the code with the most room
    for (let i = b; i < b + QUANT_BLOCK; i++) out[i] = d === 0 ? 0 : Math.max(-8, Math.min(7, Math.round(w[i]! / d))) * d;
  }
  return out;
}

function weightErrors(layers: number[]): void {
  const config = loadModelConfig(join(MODEL, "config.json"));
  const store = WeightStore.fromDir(MODEL);
  const sums = { q8: [0, 0], q4: [0, 0], q4sym: [0, 0] };
  const add = (key: keyof typeof sums, a: Float32Array, b: Float32Array) => {
    for (let i = 0; i < b.length; i++) {
      sums[key][0] += (a[i]! - b[i]!) ** 2;
      sums[key][1] += b[i]! ** 2;
    }
  };
  // Every 2-D weight of the listed text layers, with the shapes the config implies.
  const prefixes = layers.map((l) => `model.text_model.layers.${l}.`);
  const weights = Object.entries(tensorShapes(config)).filter(([name, shape]) => shape.length === 2 && prefixes.some((p) => name.startsWith(p)));
  for (const [name, shape] of weights) {
    const [out, inDim] = shape as [number, number];
    const w: Tensor = store.get(name, shape);
    const exact = new Float32Array(out * inDim);
    widenRows(w, 0, out, exact);
    for (const scheme of ["q8", "q4"] as const) {
      const back = new Float32Array(out * inDim);
      dequantizeRows(quantizeReference(w, scheme), 0, out, back);
      add(scheme, back, exact);
    }
    add("q4sym", symmetric4(exact), exact);
  }
  store.close();
  const rel = (k: keyof typeof sums) => Math.sqrt(sums[k][0] / sums[k][1]).toExponential(2);
  console.log(`weight round trip, text layers ${layers.join(",")}: q8 ${rel("q8")}, q4 (scale + minimum) ${rel("q4")}, symmetric 4-bit (scale only) ${rel("q4sym")}`);
}

async function groupErrors(scheme: QuantScheme): Promise<void> {
  const t = loadModelConfig(join(MODEL, "config.json")).text;
  const [h, q, kv, ffn] = [t.hiddenSize, t.numHeads * t.headDim, t.numKvHeads * t.headDim, t.intermediateSize];
  const is = (s: readonly number[], a: number, b: number) => s[0] === a && s[1] === b;
  const groups: Record<string, (s: readonly number[]) => boolean> = {
    lm_head: (s) => is(s, t.vocabSize, h),
    "gate/up": (s) => is(s, ffn, h),
    down: (s) => is(s, h, ffn),
    "q/o": (s) => is(s, q, h) || is(s, h, q),
    "k/v": (s) => is(s, kv, h),
    all: (s) => s.length === 2 && s[1]! % QUANT_BLOCK === 0,
  };
  const logits = async (kernels?: Kernels) => {
    const vlm = await SmolVLM.load(MODEL, kernels ? { dtype: "f32", kernels } : { dtype: scheme });
    const ids = (await vlm.prepare({ prompt: PROMPT })).inputIds;
    return vlm.model.forward(vlm.model.embedPrompt(ids, null), ids.length, vlm.model.text.newCache(ids.length));
  };
  const reference = await logits(withRoundTrip(() => false, scheme));
  console.log(`model ${MODEL}, text-only prompt, last-position logits relL2 with one group of text weights round-tripped through ${scheme}:`);
  for (const [name, select] of Object.entries(groups)) console.log(`${name.padEnd(8)} ${relL2(await logits(withRoundTrip(select, scheme)), reference).toExponential(2)}`);
  // The real mode quantizes the activations to int8 as well: compare with "all".
  console.log(`${`${scheme} mode`.padEnd(8)} ${relL2(await logits(), reference).toExponential(2)} (every weight, and int8 activations)`);
}

const GROUPS = option("--groups", "");
if (GROUPS) {
  if (GROUPS !== "q8" && GROUPS !== "q4") throw new Error(`--groups takes q8 or q4, not ${GROUPS}`);
  await groupErrors(GROUPS);
  process.exit(0);
}

const LAYERS = option("--layers", "0,15,31").split(",").map(Number);
if (LAYERS.every((l) => Number.isInteger(l) && l >= 0 && l < loadModelConfig(join(MODEL, "config.json")).text.numLayers)) weightErrors(LAYERS);
const reference = await run("f32", null);
console.log(`model ${MODEL}, image ${IMAGE} at ${IMAGE_SIZE ?? "default "}px, ${POSITIONS} teacher-forced positions; reference: f32 arithmetic on the checkpoint's weights`);
console.log(`${"mode".padEnd(6)} ${"last-prompt relL2".padStart(18)} ${"mean relL2".padStart(11)} ${"top-1 agreement".padStart(16)}`);
for (const mode of MODES) {
  const { run: r } = await run(mode, reference.tokens);
  const v = r.vocab;
  const last = relL2(r.logits.subarray(0, v), reference.run.logits.subarray(0, v));
  let sum = 0, agree = 0;
  for (let p = 0; p < POSITIONS; p++) {
    // Position p of the continuation predicts token p + 1; row p + 1 of the forced logits.
    const a = r.logits.subarray((p + 1) * v, (p + 2) * v);
    const b = reference.run.logits.subarray((p + 1) * v, (p + 2) * v);
    sum += relL2(a, b);
    if (argmax(a) === argmax(b)) agree++;
  }
  console.log(`${mode.padEnd(6)} ${last.toExponential(2).padStart(18)} ${(sum / POSITIONS).toExponential(2).padStart(11)} ${`${agree}/${POSITIONS}`.padStart(16)}`);
}
