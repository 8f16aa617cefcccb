/**
 * Whole decode steps of the 500M-shaped checkpoint, timed without per-kernel wrappers: one model,
 * one cache prefilled with `--context` token ids, then `--rounds` rounds that each rewind the
 * cache to that length and time `--steps` steps. Prints the median step time and its quartiles.
 * To compare two builds of the addon, run it with SMOLVLM_NATIVE_PATH pointing at each, in
 * alternation (separate runs of one build differ by a few percent on this shared machine, so only
 * larger differences show; bench/ab-addons.ts and bench/ab-attention.ts compare kernels in one
 * process).
 *
 *   node dist/bench/decode-steps.js [--model DIR] [--dtype bf16|q8|q4|f32] [--context 876] [--steps 16] [--rounds 15]
 */
import { SmolVLM } from "../src/smolvlm.js";
import { decodeStepsSetup, prefilledCache, timeDecodeSteps } from "./decode-loop.js";

const { model, dtype, context, steps, rounds, native } = decodeStepsSetup("decode-steps");
const vlm = await SmolVLM.load(model, { dtype, kernels: native });
const cache = prefilledCache(vlm.model, context, steps);
const decode = (): number => timeDecodeSteps(vlm.model, cache, context, steps);

decode(); // warm-up
const times = Array.from({ length: rounds }, decode).sort((p, q) => p - q);
const median = times[rounds >> 1]!;
console.log(
  `${model}, ${dtype}, ${steps} steps after ${context} tokens, ${rounds} rounds (isa ${native.info().isa}, ${native.info().threads} threads): ` +
    `${median.toFixed(2)} ms/step (${(1000 / median).toFixed(1)} tok/s; quartiles ${times[rounds >> 2]!.toFixed(2)}-${times[(3 * rounds) >> 2]!.toFixed(2)})`,
);
