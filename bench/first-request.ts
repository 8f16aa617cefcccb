/**
 * A process's first requests against its later ones: `--requests` image prompts in one process
 * (the 512x512 photo at `--image-size 512`, 128 tokens, greedy, ignoring EOS), the prefix cache
 * off so that every request runs the vision encoder. Prints, per request, the decode time per
 * token, the vision encoder's time, and the CPU time the process's other threads (V8's compiler
 * and GC, and not the kernels' pool, whose two threads are the busiest) took while it decoded.
 *
 *   node dist/bench/first-request.js [--model /tmp/smolvlm-500m-shaped] [--dtype q4] [--requests 3]
 *
 * With `node --trace-opt --trace-deopt`, V8's compiles and deopts print between each request's
 * "decoding" and "decoded" lines.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { SmolVLM, type DTypeMode } from "../src/smolvlm.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
    dtype: { type: "string", default: "q4" },
    requests: { type: "string", default: "3" },
  },
});
const IMAGE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bench", "images", "square512.jpg");

/** CPU time (clock ticks) of each of this process's threads, by thread id (Linux). */
function threadTicks(): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const t of readdirSync("/proc/self/task")) {
    const stat = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks.set(t, Number(fields[11]) + Number(fields[12]));
  }
  return ticks;
}

const vlm = await SmolVLM.load(v.model!, { dtype: v.dtype as DTypeMode, engine: { prefixCacheBytes: 0 } });
const request = { prompt: "Can you describe this image?", images: [IMAGE], imageSize: 512 };
for (let r = 0; r < Number(v.requests); r++) {
  const stream = vlm.stream(request, { maxNewTokens: 128, greedy: true, ignoreEos: true });
  let next = await stream.next();
  console.log(`request ${r}: decoding`);
  const before = threadTicks();
  while (!next.done) next = await stream.next();
  const after = threadTicks();
  console.log(`request ${r}: decoded`);
  // The two busiest threads during the decode are the kernels' (the caller and its pool worker).
  const used = [...after].map(([t, n]) => n - (before.get(t) ?? 0)).sort((a, b) => b - a);
  const others = used.slice(2).reduce((s, n) => s + n, 0) * 10; // ms, at 100 ticks a second
  const t = next.value.timings;
  console.log(`request ${r}: ${(1000 / t.decode_tokens_per_s).toFixed(2)} ms/token, vision ${t.vision_ms.toFixed(0)} ms, other threads ${others} ms while decoding`);
}
