/**
 * What the engine adds to a decode step: `SmolVLM.generate` (greedy, ignoring EOS, a short text
 * prompt) against bare `forward` steps at the same context, taking turns round by round. The
 * engine's steps reuse one logits array; bare `forward` calls return a new one each step.
 *
 *   node dist/bench/engine-steps.js [--model /tmp/smolvlm-500m-shaped] [--dtype q4] [--tokens 128] [--rounds 7]
 */
import { parseArgs } from "node:util";
import { SmolVLM, type DTypeMode } from "../src/smolvlm.js";
import { median, prefilledCache, timeDecodeSteps } from "./decode-loop.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    dtype: { type: "string", default: "q4" },
    tokens: { type: "string", default: "128" },
    rounds: { type: "string", default: "7" },
  },
});
const tokens = Number(v.tokens);
const vlm = await SmolVLM.load(v.model!, { dtype: v.dtype as DTypeMode });
const request = { prompt: "Tell me a story about a cat." };
const options = { maxNewTokens: tokens, ignoreEos: true, greedy: true };
const first = await vlm.generate(request, options); // warm-up, and the prompt's length
const context = first.timings.prompt_tokens + tokens / 2; // the middle of the engine's decode
const cache = prefilledCache(vlm.model, context, tokens);
const engine: number[] = [], bare: number[] = [];
for (let r = 0; r < Number(v.rounds); r++) {
  const res = await vlm.generate(request, options);
  engine.push(1000 / res.timings.decode_tokens_per_s);
  bare.push(timeDecodeSteps(vlm.model, cache, context, tokens / 2));
}
const [e, b] = [median(engine), median(bare)];
console.log(
  `${v.model}, ${v.dtype}, ${first.timings.prompt_tokens}-token prompt, ${tokens} tokens: engine ${e.toFixed(2)} ms/token (${(1000 / e).toFixed(1)} tok/s), ` +
    `bare forward steps at ${context} tokens ${b.toFixed(2)} ms (${(1000 / b).toFixed(1)} tok/s): the engine adds ${(e - b).toFixed(2)} ms per token`,
);
