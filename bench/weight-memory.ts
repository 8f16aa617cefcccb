/**
 * Does the memory the weights live in limit decoding? The one-row linear (bf16 mode: the decode
 * step's kernel) over every text-layer weight and the lm_head of the 500M-shaped checkpoint, two
 * ways in one process, passes alternated:
 *   - mapped: the weights as mapFile maps them, in the page cache (how smolvlm decodes);
 *   - anonymous: the same bytes copied into fresh memory on 2 MiB pages (allocPages), the kind of
 *     memory measureBandwidth reads for the decode bound.
 * Prints each one's median pass and rate, their ratio, what the copy cost (fresh memory is faulted
 * in as it is first written), and the rate of a plain read loop (measureBandwidth's) over each of
 * the two memories and over a fresh buffer of its own, as the decode bound reads it, between the
 * passes (BENCHMARKS.md section 17).
 *
 * With `--steps`, whole decode steps instead: two models of the checkpoint in one process, one as
 * smolvlm loads it and one whose decoder weights were copied at load into fresh 2 MiB-page
 * memory (a packForDecoding that copies), decode steps alternated after a prompt of `--context`
 * positions; prints each one's load time and median step.
 *
 *   node dist/bench/weight-memory.js [--model /tmp/smolvlm-500m-shaped] [--passes 21] [--rounds 1]
 *   node dist/bench/weight-memory.js --steps [--context 876] [--rounds 15]
 *
 * `--rounds N` repeats the comparison N times (the machine's bus changes from minute to minute);
 * with `--steps`, the number of alternated rounds of 16 steps.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { allocPages, copyAndRelease, loadNativeKernels, type NativeKernels } from "../src/backend/native-kernels.js";
import { PageArena } from "../src/backend/page-arena.js";
import type { Kernels, LinearWeight } from "../src/backend/kernels.js";
import { SafetensorsFile, type Tensor } from "../src/io/safetensors.js";
import { isPackedQ4, isQuantized } from "../src/quant/format.js";
import { SmolVLM } from "../src/smolvlm.js";
import { alternatedStepMedians, copyToFreshPages, median, prefilledCache } from "./decode-loop.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    passes: { type: "string", default: "21" },
    rounds: { type: "string" },
    steps: { type: "boolean", default: false },
    context: { type: "string", default: "876" },
  },
});
const found = loadNativeKernels();
if (!found) throw new Error("weight-memory needs the native kernels");
const native: NativeKernels = found;
if (!native.info().bf16Native) console.log("(no vdpbf16ps here: bf16 mode runs the float32 kernel on rounded activations)");
native.linearMode = "bf16";

if (v.steps) await compareSteps();
else compareLinears();

/** Decode steps of the checkpoint as loaded against one whose decoder weights were copied to fresh memory. */
async function compareSteps(): Promise<void> {
  const [context, steps, rounds] = [Number(v.context), 16, Number(v.rounds ?? 15)];
  // One block for all the copies (the decoder weights of the 500M geometry are 724 MB).
  const arena = new PageArena(allocPages, 1 << 30);
  const copyToFresh = (w: LinearWeight): LinearWeight => {
    if (isQuantized(w) || isPackedQ4(w)) return w;
    const data = w.data instanceof Float32Array ? arena.take(Float32Array, w.data.length) : arena.take(Uint16Array, w.data.length);
    return copyAndRelease(w.data, data) ? { ...w, data } : w;
  };
  const variants: { name: string; kernels: Kernels }[] = [
    { name: "mapped (as smolvlm loads it)", kernels: native },
    { name: "copied to fresh memory", kernels: { ...native, packForDecoding: copyToFresh } },
  ];
  const cases = [];
  for (const c of variants) {
    const t0 = performance.now();
    const vlm = await SmolVLM.load(v.model!, { dtype: "bf16", kernels: c.kernels });
    cases.push({ ...c, model: vlm.model, loadMs: performance.now() - t0, cache: prefilledCache(vlm.model, context, steps) });
  }
  const medians = alternatedStepMedians(cases, context, steps, rounds);
  cases.forEach((c, i) => {
    const [step, base] = [medians[i]!, medians[0]!];
    console.log(`${c.name}: load ${c.loadMs.toFixed(0)} ms, step ${step.toFixed(2)} ms (${(1000 / step).toFixed(1)} tok/s, ${(base / step).toFixed(3)}x) after ${context} tokens`);
  });
}

/** The one-row linear over the decoder weights, mapped against copied into fresh memory. */
function compareLinears(): void {
  const file = SafetensorsFile.open(join(v.model!, "model.safetensors"));
  const names = file.names().filter((n) => (n.includes("text_model.layers") && n.endsWith("proj.weight")) || n === "lm_head.weight");
  const mapped: Tensor[] = names.map((n) => file.read(n));
  for (const w of mapped) if (w.dtype !== "BF16") throw new Error(`${v.model}: expected a bf16 checkpoint, found ${w.dtype}`);
  const bytes = mapped.reduce((s, w) => s + w.data.byteLength, 0);

  /** The same tensors copied into one block of fresh 2 MiB-page memory, and what the copy took. */
  const anonymousCopy = (): { tensors: Tensor[]; ms: number } => {
    const t0 = performance.now();
    const tensors = copyToFreshPages(mapped);
    return { tensors, ms: performance.now() - t0 };
  };

  const x = new Float32Array(4096).map((_, i) => Math.sin(i) * 0.5);
  const outputs = mapped.map((w) => new Float32Array(w.shape[0]!));
  const pass = (weights: Tensor[]): number => {
    const t0 = performance.now();
    weights.forEach((w, i) => native.linear(x.subarray(0, w.shape[1]), 1, w, null, outputs[i]));
    return performance.now() - t0;
  };
  const rate = (ms: number): string => `${((bytes / ms) * 1e-6).toFixed(1)} GB/s`;
  // The mapped decoder layers' span of the file (the large tensors are views of one mapping).
  const big = mapped.filter((w, i) => names[i] !== "lm_head.weight" && w.data.buffer === mapped[0]!.data.buffer);
  const start = Math.min(...big.map((w) => w.data.byteOffset));
  const end = Math.max(...big.map((w) => w.data.byteOffset + w.data.byteLength));
  const mappedSpan = new Uint8Array(mapped[0]!.data.buffer, start, end - start);
  const readRate = (view: ArrayBufferView | null): number => (view ? native.measureReadBandwidth(view, 0.5)?.gbps ?? NaN : native.measureBandwidth(512 * 1024 * 1024, 0.5).gbps);

  console.log(`${names.length} weights, ${(bytes / 1e6).toFixed(0)} MB of bf16, ${v.passes} passes each, alternating (isa ${native.info().isa}, ${native.info().threads} threads)`);
  for (let r = 0; r < Number(v.rounds ?? 1); r++) {
    const anon = anonymousCopy();
    const anonSpan = new Uint8Array(anon.tensors[0]!.data.buffer);
    const times: [number[], number[]] = [[], []];
    const reads: [number[], number[], number[]] = [[], [], []];
    pass(mapped);
    pass(anon.tensors);
    for (let p = 0; p < Number(v.passes); p++) {
      times[0].push(pass(mapped));
      times[1].push(pass(anon.tensors));
      if (p % 4 === 0) [mappedSpan, anonSpan, null].forEach((view, i) => reads[i]!.push(readRate(view)));
    }
    const [tm, ta] = [median(times[0]), median(times[1])];
    const [rm, ra, rf] = reads.map(median) as [number, number, number];
    const share = (ms: number, gbps: number): string => `${((100 * bytes) / ms / 1e6 / gbps).toFixed(0)}%`;
    console.log(
      `linear: mapped ${tm.toFixed(2)} ms (${rate(tm)}), anonymous ${ta.toFixed(2)} ms (${rate(ta)}): anonymous is ${(tm / ta).toFixed(3)}x; copy ${anon.ms.toFixed(0)} ms\n` +
        `  read loop: over the mapped layers ${rm.toFixed(1)} GB/s, over the copy ${ra.toFixed(1)}, over a fresh buffer ${rf.toFixed(1)} (medians of ${reads[0].length}); ` +
        `the linear at ${share(tm, rm)} / ${share(ta, ra)} of its memory's read rate, ${share(tm, rf)} / ${share(ta, rf)} of the fresh buffer's`,
    );
  }
}
