/**
 * Two builds of the native addon compared on attention, in one process, the builds taking turns
 * call by call (the machine is noisy): a vision tile's (1024 queries over 1024 keys, 12 heads of
 * 64, not causal) and a text prefill chunk's (512 queries after 629 cached positions, 1141 keys,
 * 15 heads over 5 KV heads, causal). Prints each build's median time, B's speed relative to A's,
 * and the relative L2 distance between their outputs.
 *
 *   node dist/bench/ab-attention.js A.node B.node [--calls 15] [--modes f32,f32]
 *
 * --modes gives A's and B's attention mode: `--modes f32,bf16` with the same build twice compares
 * bf16 mode's attention (vdpbf16ps, where the CPU has AVX512_BF16) with float32's.
 *
 * Make the builds with `node scripts/build-native.mjs`, copying build/Release/smolvlm_native.node
 * aside between them.
 */
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { calls: { type: "string", default: "15" }, modes: { type: "string", default: "f32,f32" } },
});
if (positionals.length !== 2) throw new Error("usage: ab-attention.js A.node B.node [--calls 15]");

/** The slice of the addon's raw API this script calls (native-kernels.ts wraps it). */
interface RawAddon {
  attention(
    q: Float32Array, k: Float32Array, v: Float32Array, seqQ: number, seqK: number, numHeads: number, numKvHeads: number, headDim: number,
    scale: number, causalOffset: number, out: Float32Array, kvDtype: number, kvRowStride: null, kvHeadStride: null, mode: number,
  ): void;
}

const require = createRequire(import.meta.url);
const builds = positionals.map((p) => require(resolve(p)) as RawAddon);
const calls = Number(v.calls);
const modes = v.modes!.split(",").map((m) => {
  if (m !== "f32" && m !== "bf16") throw new Error(`--modes: two of f32 and bf16, not ${v.modes}`);
  return m === "bf16" ? 1 : 0;
});
if (modes.length !== 2) throw new Error(`--modes: two of f32 and bf16, not ${v.modes}`);
const wave = (n: number, phase: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + phase) * 1.5);
const median = (a: number[]): number => [...a].sort((p, q) => p - q)[a.length >> 1]!;

const cases = [
  { name: "vision tile, 1024 x 1024, 12 heads", seqQ: 1024, seqK: 1024, heads: 12, kvHeads: 12, causalOffset: -1 },
  { name: "prefill chunk, 512 queries over 1141 keys, 15/5 heads, causal", seqQ: 512, seqK: 1141, heads: 15, kvHeads: 5, causalOffset: 1141 - 512 },
];
const D = 64;
for (const c of cases) {
  const q = wave(c.seqQ * c.heads * D, 1);
  const k = wave(c.seqK * c.kvHeads * D, 2);
  const val = wave(c.seqK * c.kvHeads * D, 3);
  const outs = builds.map(() => new Float32Array(c.seqQ * c.heads * D));
  const times: number[][] = [[], []];
  for (let r = 0; r < calls; r++) {
    for (const b of r % 2 ? [1, 0] : [0, 1]) {
      const t0 = performance.now();
      builds[b]!.attention(q, k, val, c.seqQ, c.seqK, c.heads, c.kvHeads, D, 1 / Math.sqrt(D), c.causalOffset, outs[b]!, 0, null, null, modes[b]!);
      times[b]!.push(performance.now() - t0);
    }
  }
  let diff = 0;
  let norm = 0;
  outs[0]!.forEach((a, i) => {
    diff += (a - outs[1]![i]!) ** 2;
    norm += a * a;
  });
  const [ta, tb] = [median(times[0]!), median(times[1]!)];
  console.log(`${c.name}: A ${ta.toFixed(2)} ms, B ${tb.toFixed(2)} ms: B is ${(ta / tb).toFixed(3)}x A; outputs differ by ${Math.sqrt(diff / norm).toExponential(2)} relative L2`);
}
