/**
 * One sampled token's pick over a 49,280-token vocabulary: the Sampler against the first version
 * (every candidate sorted by comparison, test/sampler-reference.ts), the two taking turns, for
 * logits shaped like a trained model's (a few hundred strong candidates over a long tail) and flat
 * ones (a random-weight checkpoint's). Prints each one's median time and the ratio.
 *
 *   node dist/bench/sampler.js [--picks 31]
 */
import { parseArgs } from "node:util";
import { Random, Sampler, type SamplingOptions } from "../src/generation/sampler.js";
import { referencePick } from "../test/sampler-reference.js";
import { median } from "./decode-loop.js";

const { values: v } = parseArgs({ options: { picks: { type: "string", default: "31" } } });
const picks = Number(v.picks);
const vocab = 49280;
const shapes: Record<string, Float32Array> = {
  // Logits spread over about 30 units with a few hundred ids near the top, as a trained model's.
  peaked: new Float32Array(vocab).map((_, i) => -10 + 6 * Math.sin(i * 12.9898) + (i % 97 === 0 ? 14 : 0)),
  flat: new Float32Array(vocab).map((_, i) => 0.5 * Math.sin(i * 12.9898)),
};
const settings: Partial<SamplingOptions>[] = [
  { temperature: 0.7 },
  { temperature: 0.7, topP: 0.9 },
  { temperature: 0.7, topK: 50, topP: 0.9 },
  { temperature: 1, minP: 0.05 },
];
const base: SamplingOptions = { greedy: false, temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 1 };

for (const [shape, logits] of Object.entries(shapes)) {
  for (const setting of settings) {
    const o = { ...base, ...setting };
    const fast = new Sampler(o);
    const random = new Random(o.seed);
    const a: number[] = [], b: number[] = [];
    for (let i = 0; i < picks; i++) {
      let l = logits.slice();
      let t0 = performance.now();
      referencePick(l, o, random);
      a.push(performance.now() - t0);
      l = logits.slice();
      t0 = performance.now();
      fast.pick(l);
      b.push(performance.now() - t0);
    }
    const [ref, now] = [median(a), median(b)];
    console.log(`${shape.padEnd(6)} ${JSON.stringify(setting).padEnd(40)} first version ${ref.toFixed(2)} ms, Sampler ${now.toFixed(2)} ms: ${(ref / now).toFixed(1)}x`);
  }
}
