import type { Random, SamplingOptions } from "../src/generation/sampler.js";

/**
 * The sampler as first written: every candidate sorted by comparison, then the warpers in order.
 * What the faster Sampler must pick (test/generation.test.ts), and the baseline of bench/sampler.ts.
 */
export function referencePick(logits: Float32Array, o: SamplingOptions, random: Random): number {
  let order = Array.from({ length: logits.length }, (_, i) => i).filter((i) => logits[i]! > -Infinity);
  order.sort((x, y) => logits[y]! - logits[x]!);
  if (o.topK > 0 && order.length > o.topK) order = order.slice(0, o.topK);
  const max = logits[order[0]!]! / o.temperature;
  let probs = order.map((i) => Math.exp(logits[i]! / o.temperature - max));
  const total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  let keep = probs.length;
  if (o.topP < 1) {
    let cumulative = 0;
    for (let i = 0; i < probs.length; i++) {
      cumulative += probs[i]!;
      if (cumulative >= o.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  if (o.minP > 0) {
    const floor = probs[0]! * o.minP;
    while (keep > 1 && probs[keep - 1]! < floor) keep--;
  }
  const kept = probs.slice(0, keep);
  let r = random.next() * kept.reduce((a, b) => a + b, 0);
  for (let i = 0; i < keep; i++) {
    r -= kept[i]!;
    if (r < 0) return order[i]!;
  }
  return order[keep - 1]!;
}
