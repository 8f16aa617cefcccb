/**
 * Two builds of the native addon compared on whole decode steps in one process: two models each
 * (the same checkpoint; q4 weights are repacked once per model), loaded in the order A, B, B, A,
 * a cache prefilled with `--context` token ids each, and rounds of `--steps` steps taken in turn
 * after a warm-up round (decode-loop.ts alternatedStepMedians). Each build's time is the mean of
 * its two models' medians: the same build loaded twice measured 2-8% apart by load order alone
 * (the second bf16 model slower, the second q4 model faster). Separate processes differ by more
 * than a few percent on this shared machine; this sees both builds under the same bus.
 *
 *   node dist/bench/ab-steps.js A.node B.node [--model DIR] [--dtype q4] [--context 876] [--steps 16] [--rounds 15]
 */
import { resolve } from "node:path";
import type { NativeKernels } from "../src/backend/native-kernels.js";
import { linearModeFor, SmolVLM } from "../src/smolvlm.js";
import { alternatedStepMedians, decodeStepsOptions, prefilledCache } from "./decode-loop.js";

const { model, dtype, context, steps, rounds, positionals } = decodeStepsOptions("q4");
if (positionals.length !== 2) throw new Error("usage: ab-steps.js A.node B.node [--dtype q4] [--context 876] [--rounds 15]");

const kernels: NativeKernels[] = [];
for (const [i, path] of positionals.entries()) {
  // A second instance of the kernels module (its own addon) per build: the query string makes it one.
  process.env.SMOLVLM_NATIVE_PATH = resolve(path);
  const mod = (await import(`../src/backend/native-kernels.js?build=${i}`)) as { loadNativeKernels(): NativeKernels | null };
  const native = mod.loadNativeKernels();
  if (!native) throw new Error(`${path}: the addon did not load`);
  native.linearMode = linearModeFor(dtype, native.info().bf16Native);
  kernels.push(native);
}
const runs = [];
for (const native of [kernels[0]!, kernels[1]!, kernels[1]!, kernels[0]!]) {
  const vlm = await SmolVLM.load(model, { dtype, kernels: native });
  runs.push({ model: vlm.model, cache: prefilledCache(vlm.model, context, steps) });
}
const [a1, b1, b2, a2] = alternatedStepMedians(runs, context, steps, rounds);
const [a, b] = [(a1! + a2!) / 2, (b1! + b2!) / 2];
console.log(
  `${dtype}, ${steps} steps after ${context} tokens: A ${a.toFixed(3)} ms/step (${a1!.toFixed(3)}, ${a2!.toFixed(3)}), ` +
    `B ${b.toFixed(3)} ms/step (${b1!.toFixed(3)}, ${b2!.toFixed(3)}): B is ${(a / b).toFixed(3)}x A`,
);
