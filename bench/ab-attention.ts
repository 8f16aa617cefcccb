/**
 * Two builds of the native addon compared on attention, in one process, the builds taking turns
 * call by call (the machine is noisy): a vision tile's (1024 queries over 1024 keys, 12 heads of
 * 64, not causal), a text prefill chunk's (512 queries after 629 cached positions, 1141 keys,
 * 15 heads over 5 KV heads, causal) and a decode step's (32 layers' calls of one query over 876
 * keys of a bf16 cache), that last one twice: over one layer's cache (in the CPU's caches) and over
 * 32 layers' caches with a 64 MB read between timings (from memory, as in a decode step, where
 * the weights' stream evicts the cache). Prints each build's median time, B's speed relative to
 * A's, and the relative L2 distance between their outputs.
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
import { median } from "./decode-loop.js";

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { calls: { type: "string", default: "15" }, modes: { type: "string", default: "f32,f32" } },
});
if (positionals.length !== 2) throw new Error("usage: ab-attention.js A.node B.node [--calls 15]");

/** The slice of the addon's raw API this script calls (native-kernels.ts wraps it). */
interface RawAddon {
  attention(
    q: Float32Array, k: Float32Array | Uint16Array, v: Float32Array | Uint16Array, seqQ: number, seqK: number, numHeads: number, numKvHeads: number,
    headDim: number, scale: number, causalOffset: number, out: Float32Array, kvDtype: number, kvRowStride: number | null, kvHeadStride: number | null,
    mode: number,
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

/** bf16 bits of x (truncated: the values only need to be bf16 numbers). */
const bf16 = (x: Float32Array): Uint16Array => new Uint16Array(Uint32Array.from(new Uint32Array(x.buffer), (b) => b >>> 16));

// The decode cases read a head-major bf16 cache (the KV cache's layout in bf16 and q8/q4 modes),
// 32 calls per timing (one per layer of a decode step): the same layer's cache (cache-resident),
// or each layer its own after an eviction (from memory).
const cases = [
  { name: "vision tile, 1024 x 1024, 12 heads", seqQ: 1024, seqK: 1024, heads: 12, kvHeads: 12, causalOffset: -1, bf16Kv: false, repeat: 1 },
  { name: "prefill chunk, 512 queries over 1141 keys, 15/5 heads, causal", seqQ: 512, seqK: 1141, heads: 15, kvHeads: 5, causalOffset: 1141 - 512, bf16Kv: false, repeat: 1 },
  { name: "decode step, 32 x 1 query over 876 keys of a bf16 cache, 15/5 heads", seqQ: 1, seqK: 876, heads: 15, kvHeads: 5, causalOffset: 875, bf16Kv: true, repeat: 32 },
  { name: "decode step from memory, 32 layers' caches", seqQ: 1, seqK: 876, heads: 15, kvHeads: 5, causalOffset: 875, bf16Kv: true, repeat: 32, layers: 32 },
];
const evictionBuffer = new Float64Array(8 << 20); // 64 MB, more than the last-level cache
let evictionSink = 0;
/** Reads the eviction buffer, so that the next call finds its keys and values in memory. */
function evict(): void {
  let s = 0;
  for (let i = 0; i < evictionBuffer.length; i += 8) s += evictionBuffer[i]!;
  evictionSink += s;
}
const D = 64;
for (const c of cases) {
  const q = wave(c.seqQ * c.heads * D, 1);
  const layers = c.layers ?? 1;
  const ks = Array.from({ length: layers }, (_, l) => (c.bf16Kv ? bf16(wave(c.seqK * c.kvHeads * D, 2 + l)) : wave(c.seqK * c.kvHeads * D, 2 + l)));
  const vals = Array.from({ length: layers }, (_, l) => (c.bf16Kv ? bf16(wave(c.seqK * c.kvHeads * D, 3 + l)) : wave(c.seqK * c.kvHeads * D, 3 + l)));
  const [rowStride, headStride] = c.bf16Kv ? [D, c.seqK * D] : [null, null];
  const outs = builds.map(() => new Float32Array(c.seqQ * c.heads * D));
  const times: number[][] = [[], []];
  for (let r = 0; r < calls; r++) {
    for (const b of r % 2 ? [1, 0] : [0, 1]) {
      if (layers > 1) evict();
      const t0 = performance.now();
      for (let i = 0; i < c.repeat; i++) {
        builds[b]!.attention(q, ks[i % layers]!, vals[i % layers]!, c.seqQ, c.seqK, c.heads, c.kvHeads, D, 1 / Math.sqrt(D), c.causalOffset, outs[b]!, c.bf16Kv ? 1 : 0, rowStride, headStride, modes[b]!);
      }
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
if (evictionSink === 1234.5) console.log(""); // keeps the eviction reads
