/**
 * The decode benchmarks' shared pieces (decode-steps, decode-profile, page-cache, weight-memory,
 * ab-addons): a cache filled with a prompt of fixed token ids, whole decode steps timed from it,
 * several models' steps alternated, and weights copied into fresh memory. Timings do not depend
 * on the ids; these are the same for every script, so their figures compare.
 */
import { parseArgs } from "node:util";
import { allocPages, loadNativeKernels, type NativeKernels } from "../src/backend/native-kernels.js";
import type { Tensor } from "../src/io/safetensors.js";
import type { Idefics3Model } from "../src/model/idefics3.js";
import type { KVCache } from "../src/model/kv-cache.js";
import { linearModeFor, type DTypeMode } from "../src/smolvlm.js";

/** The options of the scripts that time decode steps of one checkpoint (`--model --dtype --context --steps --rounds`), and any positionals. */
export function decodeStepsOptions(defaultDtype: DTypeMode = "bf16"): {
  model: string; dtype: DTypeMode; context: number; steps: number; rounds: number; positionals: string[];
} {
  const { values: v, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
      dtype: { type: "string", default: defaultDtype },
      context: { type: "string", default: "876" },
      steps: { type: "string", default: "16" },
      rounds: { type: "string", default: "15" },
    },
  });
  return { model: v.model!, dtype: v.dtype as DTypeMode, context: Number(v.context), steps: Number(v.steps), rounds: Number(v.rounds), positionals };
}

/** decodeStepsOptions, and the native kernels in the dtype's mode. */
export function decodeStepsSetup(script: string): ReturnType<typeof decodeStepsOptions> & { native: NativeKernels } {
  const options = decodeStepsOptions();
  if (options.positionals.length > 0) throw new Error(`${script} takes options only, not ${options.positionals.join(" ")}`);
  const native = loadNativeKernels();
  if (!native) throw new Error(`${script} needs the native kernels`);
  native.linearMode = linearModeFor(options.dtype, native.info().bf16Native);
  return { ...options, native };
}

/** A cache holding `context` prompt positions (256 per pass), with room for `steps` more. */
export function prefilledCache(model: Idefics3Model, context: number, steps: number): KVCache {
  const cache = model.text.newCache(context + steps + 1);
  for (let s = 0; s < context; s += 256) {
    const ids = Array.from({ length: Math.min(256, context - s) }, (_, i) => 100 + ((s + i) % 1000));
    model.forward(model.embedWithImages(ids, null), ids.length, cache);
  }
  return cache;
}

/** Mean time of one step over `steps` steps, the cache rewound to `context` first. */
export function timeDecodeSteps(model: Idefics3Model, cache: KVCache, context: number, steps: number): number {
  cache.length = context;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) model.forward(model.embedWithImages([300 + i], null), 1, cache);
  return (performance.now() - t0) / steps;
}

export const median = (a: readonly number[]): number => [...a].sort((p, q) => p - q)[a.length >> 1]!;

/**
 * The median step of each model (its own cache, rewound to `context` each round), the models taking
 * turns round by round after one warm-up round, so that all see the same machine.
 */
export function alternatedStepMedians(runs: readonly { model: Idefics3Model; cache: KVCache }[], context: number, steps: number, rounds: number): number[] {
  for (const r of runs) timeDecodeSteps(r.model, r.cache, context, steps);
  const times = runs.map((): number[] => []);
  for (let i = 0; i < rounds; i++) runs.forEach((r, j) => times[j]!.push(timeDecodeSteps(r.model, r.cache, context, steps)));
  return times.map(median);
}

/** The tensors' bytes copied into one block of fresh memory on 2 MiB pages (allocPages), in order. */
export function copyToFreshPages(tensors: readonly Tensor[]): Tensor[] {
  const block = allocPages(tensors.reduce((s, w) => s + w.data.byteLength, 0));
  let offset = 0;
  return tensors.map((w) => {
    const data = w.data instanceof Float32Array ? new Float32Array(block, offset, w.data.length) : new Uint16Array(block, offset, w.data.length);
    data.set(w.data);
    offset += w.data.byteLength;
    return { ...w, data } as Tensor;
  });
}
