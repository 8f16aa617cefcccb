/**
 * The decode benchmarks' shared loop (decode-steps, decode-profile, page-cache): a cache filled with
 * a prompt of fixed token ids, and whole decode steps timed from it. Timings do not depend on the
 * ids; these are the same for every script, so their figures compare.
 */
import type { Idefics3Model } from "../src/model/idefics3.js";
import type { KVCache } from "../src/model/kv-cache.js";

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
