/**
 * Decode steps over the same checkpoint cached two ways, in one process (section 16 of
 * BENCHMARKS.md): a copy as writing leaves it (4 KiB page-cache folios) and a copy dropped from the
 * cache with dropFileCache and read back through mapFile's mapping (2 MiB folios, mapped 2 MiB at
 * a time where the kernel and filesystem allow). Prints load, first prefill and the median step of
 * each, and how much of each copy is mapped 2 MiB at a time (FilePmdMapped, Linux).
 *
 *   node dist/bench/page-cache.js [--model /tmp/smolvlm-500m-shaped] [--dtype bf16] [--context 876] [--steps 16] [--rounds 15]
 *
 * The two copies (about 1 GB each at the 500M geometry) go to a temporary folder, removed at the
 * end. In one process the two models also compete for the TLB; whole CLI runs in separate
 * processes (model-500m.js --model DIR) are what a user sees.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dropFileCache } from "../src/backend/native-kernels.js";
import { SmolVLM } from "../src/smolvlm.js";
import type { KVCache } from "../src/model/kv-cache.js";
import { alternatedStepMedians, decodeStepsSetup, prefilledCache } from "./decode-loop.js";

const { model, dtype, context, steps, rounds, native } = decodeStepsSetup("page-cache");

/** MiB of this process's file mappings mapped 2 MiB at a time. */
function pmdMappedMiB(): number {
  const m = /FilePmdMapped:\s+(\d+)/.exec(readFileSync("/proc/self/smaps_rollup", "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

interface Case {
  name: string;
  vlm: SmolVLM;
  cache: KVCache;
  loadMs: number;
  prefillMs: number;
  pmdMiB: number;
}

async function prepare(name: string, dir: string): Promise<Case> {
  const before = pmdMappedMiB();
  const t0 = performance.now();
  const vlm = await SmolVLM.load(dir, { dtype, kernels: native });
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  const cache = prefilledCache(vlm.model, context, steps);
  return { name, vlm, cache, loadMs, prefillMs: performance.now() - t1, pmdMiB: pmdMappedMiB() - before };
}

const dir = mkdtempSync(join(tmpdir(), "smolvlm-page-cache-"));
try {
  const small = join(dir, "as-written"), huge = join(dir, "read-back");
  cpSync(model, small, { recursive: true });
  cpSync(model, huge, { recursive: true });
  if (!dropFileCache(join(huge, "model.safetensors"))) console.log("(dropFileCache did nothing here: both copies stay as written)");
  const cases = [await prepare("4 KiB folios (as written)", small), await prepare("read back after dropFileCache", huge)];
  const medians = alternatedStepMedians(cases.map((c) => ({ model: c.vlm.model, cache: c.cache })), context, steps, rounds);
  cases.forEach((c, i) => {
    const [step, base] = [medians[i]!, medians[0]!];
    console.log(
      `${c.name}: ${c.pmdMiB} MiB mapped 2 MiB at a time; load ${c.loadMs.toFixed(0)} ms, first prefill (${context} tokens) ${c.prefillMs.toFixed(0)} ms, ` +
        `${dtype} step ${step.toFixed(2)} ms (${(1000 / step).toFixed(1)} tok/s), ${(base / step).toFixed(3)}x`,
    );
  });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
