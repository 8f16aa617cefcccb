/**
 * End-to-end benchmark of the CLI as a user runs it: one image prompt, several runs, medians of
 * the `--json` timings and of the peak RSS (from /usr/bin/time). Every configuration given is
 * measured in the same session, alternating runs, so machine drift hits them alike.
 *
 *   node dist/bench/e2e.js --model DIR --image IMG [--runs 3] [--tokens 32] [--dtype f32,bf16] [--image-size N]
 */
import { execFileSync } from "node:child_process";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "smolvlm.js");

interface RunResult {
  timings: Record<string, number>;
  peakRssMb: number;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      model: { type: "string" },
      image: { type: "string" },
      runs: { type: "string", default: "3" },
      tokens: { type: "string", default: "32" },
      dtype: { type: "string", default: "bf16,f32" },
      "image-size": { type: "string" },
    },
  });
  if (!values.model || !values.image) throw new Error("--model and --image are required");
  const dtypes = values.dtype!.split(",");
  const runs = Number(values.runs);
  const results = new Map<string, RunResult[]>(dtypes.map((d) => [d, []]));
  for (let r = 0; r < runs; r++) {
    for (const d of dtypes) {
      // /usr/bin/time writes the peak RSS (KB) as the last stderr line; execFileSync only gives
      // stderr on failure, so run through a shell that folds it into stdout.
      const cmd = ["/usr/bin/time", "-f", "PEAK_RSS_KB=%M", process.execPath, BIN, "run", "--model", values.model, "--image", values.image, "--prompt", "Can you describe this image?", "--greedy", "--ignore-eos", "--max-new-tokens", values.tokens!, "--dtype", d, "--json"];
      if (values["image-size"]) cmd.push("--image-size", values["image-size"]);
      const out = execFileSync("sh", ["-c", `${cmd.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ")} 2>&1`], { encoding: "utf8", maxBuffer: 1 << 26 });
      const lines = out.trim().split("\n");
      const rss = Number(/PEAK_RSS_KB=(\d+)/.exec(out)?.[1] ?? 0) / 1024;
      const json = JSON.parse(lines.find((l) => l.startsWith("{"))!);
      results.get(d)!.push({ timings: json.timings, peakRssMb: rss });
      process.stderr.write(`run ${r + 1}/${runs} ${d}: ttft ${json.timings.ttft_ms.toFixed(0)} ms, ${json.timings.decode_tokens_per_s.toFixed(1)} tok/s, ${rss.toFixed(0)} MB (load avg ${loadavg()[0]!.toFixed(2)})\n`);
    }
  }
  const fields = ["load_ms", "image_decode_ms", "preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "prompt_tokens", "image_tiles"];
  const base = dtypes[0]!;
  console.log(`| metric | ${dtypes.join(" | ")} |\n| --- | ${dtypes.map(() => "---").join(" | ")} |`);
  for (const f of [...fields, "peak_rss_mb"]) {
    const med = dtypes.map((d) => median(results.get(d)!.map((r) => (f === "peak_rss_mb" ? r.peakRssMb : r.timings[f]!))));
    console.log(`| ${f} | ${med.map((v, i) => (i === 0 || dtypes[0] === undefined ? v.toFixed(f.endsWith("_s") ? 1 : 0) : `${v.toFixed(f.endsWith("_s") ? 1 : 0)} (${(v / med[0]!).toFixed(2)}x ${base})`)).join(" | ")} |`);
  }
}

main();
