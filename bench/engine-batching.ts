/**
 * Aggregate decode throughput of the engine alone (no HTTP): N concurrent `generate` calls on one
 * loaded model, greedy, EOS ignored, for N = 1, 2, 4, 8; ratios to the 1-stream figure of the
 * same run. Time to the last first token is subtracted so only decoding is counted.
 *
 *   node dist/bench/engine-batching.js MODEL_DIR [TOKENS=64]
 */
import { SmolVLM } from "../src/smolvlm.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: engine-batching.js MODEL_DIR [TOKENS]");
const tokens = Number(process.argv[3] ?? 64);
const vlm = await SmolVLM.load(dir, { engine: { prefixCacheBytes: 0 } });
const opts = { greedy: true, maxNewTokens: tokens, ignoreEos: true };
await vlm.generate({ prompt: "warm up" }, { ...opts, maxNewTokens: 4 });
let base = 0;
for (const n of [1, 2, 4, 8]) {
  const start = performance.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => vlm.generate({ prompt: `Tell me a story number ${i}` }, opts)));
  const lastFirstToken = Math.max(...results.map((r) => r.timings.ttft_ms));
  const perSecond = (n * tokens) / ((performance.now() - start - lastFirstToken) / 1000);
  if (n === 1) base = perSecond;
  console.log(`${n} streams: ${perSecond.toFixed(1)} tok/s (${(perSecond / base).toFixed(2)}x)`);
}
