/**
 * The issue-4/5 figures on a SmolVLM-500M-shaped checkpoint (random weights, real geometry; make it
 * with `node dist/bench/make-checkpoint.js`), with the machine's limits measured in the same run.
 *
 *   node dist/bench/model-500m.js [--model /tmp/smolvlm-500m-shaped] [--runs 3] [--tokens 128]
 *        [--sections limits,vision,cli,load,turns,server] [--json out.json]
 *
 * Sections (each reports medians and min-max of --runs runs, with the 1-minute load average):
 *   limits  float32 FMA peak (all pool threads, the ISA in use), the bf16 and int8 dot-product
 *           peaks where the CPU has them, and streaming read bandwidth;
 *           measured again at the end of the run, and the median of all measurements is used.
 *   vision  vision encoder + connector throughput (GFLOP/s, FLOPs counted below) for 1 tile and for
 *           17 tiles (square.jpg at defaults), in each of --modes, in this process (library),
 *           against the FMA peak and the peak of the mode's own product (vdpbf16ps, int8).
 *   cli     the CLI as a user runs it, under /usr/bin/time: a 640x480 photo (13 tiles) and a
 *           512x512 one with --image-size 512, 128 tokens ignoring EOS, bf16 and f32 modes:
 *           time to first token, decode tokens/s against the bandwidth bound, peak RSS.
 *   load    process start to ready: wall time of `run` with a text prompt and 1 new token, minus
 *           the reported generation time; and the library's load_ms.
 *   turns   a second turn about the same image through the library: first-turn TTFT against the
 *           second turn's (conversation extended by the first answer and a new question).
 *   server  bench/server-throughput.ts (1, 2, 4, 8 streams) on this checkpoint.
 *   quant   issue 7's memory figures: `smolvlm quantize --dtype q4` into a temporary folder (timed),
 *           then the 512x512 prompt (--image-size 512, 64 tokens) from that folder, and the same
 *           prompt quantizing at load time (--dtype q4 on the source): peak RSS of each.
 *           (Speed of q8/q4 against bf16: the cli section with --modes bf16,q8,q4.)
 *
 * FLOPs of one tile (a multiply-add counts 2), N patches of width D, MLP width F, L layers:
 *   patch embedding 2·N·(C·P²)·D; per layer q/k/v/o 4·2·N·D², QKᵀ 2·N²·D, PV 2·N²·D, MLP 2·2·N·D·F;
 *   connector (pixel shuffle then one linear) 2·(N/s²)·(D·s²)·Dtext. Norms, GELU, softmax and
 *   biases are left out (under 0.5%).
 * Decode bytes per token: every text linear weight and the lm_head in bf16 (2 bytes; q8: 34 bytes
 * per block of 32, q4: 20 bytes per block of 32, scales and minimums included), plus the
 * keys and values of every layer at the mean context length over the decode (cache element size
 * as allocated), over the bandwidth measured in this run: the section's median reading, and
 * (column "per run") each CLI run's own reading taken right after it.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadNativeKernels, type Bandwidth, type PeakFlops } from "../src/backend/native-kernels.js";
import { SmolVLM, type DTypeMode, type GenerationResult } from "../src/smolvlm.js";
import type { ChatMessage } from "../src/tokenizer/chat-template.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "bin", "smolvlm.js");
const IMG_SQUARE = join(ROOT, "bench", "images", "square.jpg");
const IMG_SQUARE512 = join(ROOT, "bench", "images", "square512.jpg");
const IMG_WIDE = join(ROOT, "test", "fixtures", "images", "wide.jpg");

interface Stat {
  median: number;
  min: number;
  max: number;
  values: number[];
}

function stat(values: number[]): Stat {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return { median, min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN, values };
}

const loads: number[] = [];
function noteLoad(): number {
  const l = loadavg()[0]!;
  loads.push(l);
  return l;
}

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)} load ${noteLoad().toFixed(2)}] ${msg}\n`);
}

const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "n/a");
const cell = (s: Stat, digits = 1) => `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;

// ---------------------------------------------------------------------------------------------
// Machine limits

interface Limits {
  peak: PeakFlops[];
  bandwidth: Bandwidth[];
}

function measureLimits(limits: Limits, reps: number): void {
  const native = loadNativeKernels();
  if (!native) throw new Error("the native addon is not built");
  for (let i = 0; i < reps; i++) {
    limits.peak.push(native.measurePeakFlops(1.5));
    limits.bandwidth.push(native.measureBandwidth(1 << 30, 2));
    const p = limits.peak[limits.peak.length - 1]!;
    const b = limits.bandwidth[limits.bandwidth.length - 1]!;
    const dots = [p.bf16Gflops ? `, ${p.bf16Instruction} ${p.bf16Gflops.toFixed(1)} GFLOP/s` : "", p.int8Gops ? `, ${p.int8Instruction} ${p.int8Gops.toFixed(1)} GOP/s` : ""].join("");
    log(`peak ${p.gflops.toFixed(1)} GFLOP/s (${p.isa}, ${p.threads} threads; one thread ${p.gflopsOneThread.toFixed(1)})${dots}, bandwidth ${b.gbps.toFixed(1)} GB/s (best pass ${b.bestGbps.toFixed(1)})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Vision throughput

function visionFlopsPerTile(vlm: SmolVLM): { total: number; parts: Record<string, number> } {
  const v = vlm.config.vision;
  const N = (v.imageSize / v.patchSize) ** 2;
  const D = v.hiddenSize;
  const F = v.intermediateSize;
  const L = v.numLayers;
  const s = vlm.config.scaleFactor;
  const parts = {
    patch_embedding: 2 * N * v.numChannels * v.patchSize * v.patchSize * D,
    qkvo: L * 4 * 2 * N * D * D,
    attention_qk: L * 2 * N * N * D,
    attention_pv: L * 2 * N * N * D,
    mlp: L * 2 * 2 * N * D * F,
    connector: 2 * (N / (s * s)) * (D * s * s) * vlm.config.text.hiddenSize,
  };
  return { total: Object.values(parts).reduce((a, b) => a + b, 0), parts };
}

interface VisionRow {
  mode: DTypeMode;
  tiles: number;
  seconds: Stat;
  gflops: Stat;
}

async function visionSection(model: string, runs: number, modes: DTypeMode[]): Promise<{ rows: VisionRow[]; flopsPerTile: number; parts: Record<string, number> }> {
  const rows: VisionRow[] = [];
  let flopsPerTile = 0;
  let parts: Record<string, number> = {};
  for (const mode of modes) {
    const vlm = await SmolVLM.load(model, { dtype: mode });
    const f = visionFlopsPerTile(vlm);
    flopsPerTile = f.total;
    parts = f.parts;
    const one = await vlm.prepare({ prompt: "Describe.", images: [IMG_SQUARE], imageSplitting: false });
    const many = await vlm.prepare({ prompt: "Describe.", images: [IMG_SQUARE] });
    for (const p of [one, many]) {
      const t = p.tiles!;
      const secs: number[] = [];
      vlm.model.encodeImages({ data: t.data, tiles: 1, size: t.size }); // warm-up: page in the weights
      for (let r = 0; r < runs; r++) {
        const t0 = performance.now();
        vlm.model.encodeImages({ data: t.data, tiles: t.count, size: t.size });
        secs.push((performance.now() - t0) / 1000);
        log(`vision ${mode} ${t.count} tile(s): ${secs[secs.length - 1]!.toFixed(2)} s, ${((t.count * f.total) / secs[secs.length - 1]! / 1e9).toFixed(1)} GFLOP/s`);
      }
      rows.push({ mode, tiles: t.count, seconds: stat(secs), gflops: stat(secs.map((s) => (t.count * f.total) / s / 1e9)) });
    }
  }
  return { rows, flopsPerTile, parts };
}

// ---------------------------------------------------------------------------------------------
// CLI runs

interface CliRun {
  timings: Record<string, number>;
  peakRssMb: number;
  wallMs: number;
  /** Read bandwidth measured right after the run (cli section), for that run's bound. */
  bandwidthAfterGbps?: number;
}

function cliRun(args: string[]): CliRun {
  const cmd = ["/usr/bin/time", "-f", "PEAK_RSS_KB=%M", process.execPath, BIN, "run", ...args, "--greedy", "--ignore-eos", "--json"];
  const t0 = performance.now();
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", maxBuffer: 1 << 26 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`CLI failed (${r.status}): ${r.stderr}`);
  const rss = Number(/PEAK_RSS_KB=(\d+)/.exec(r.stderr)?.[1] ?? 0) / 1024;
  const line = r.stdout.trim().split("\n").find((l) => l.startsWith("{"));
  if (!line) throw new Error(`no JSON from the CLI: ${r.stdout}`);
  return { timings: JSON.parse(line).timings, peakRssMb: rss, wallMs };
}

interface CliCase {
  name: string;
  mode: DTypeMode;
  image: string;
  imageSize?: number;
  runs: CliRun[];
}

function cliSection(model: string, runs: number, tokens: number, modes: DTypeMode[]): CliCase[] {
  const cases: CliCase[] = [];
  for (const mode of modes) {
    cases.push({ name: "640x480 (13 tiles)", mode, image: IMG_WIDE, runs: [] });
    cases.push({ name: "512x512 --image-size 512", mode, image: IMG_SQUARE512, imageSize: 512, runs: [] });
  }
  // Alternate the cases run by run, so machine drift hits them alike.
  for (let r = 0; r < runs; r++) {
    for (const c of cases) {
      const args = ["--model", model, "--image", c.image, "--prompt", "Can you describe this image?", "--max-new-tokens", String(tokens), "--dtype", c.mode];
      if (c.imageSize) args.push("--image-size", String(c.imageSize));
      const run = cliRun(args);
      // The run ends with its decode: a bandwidth reading taken at once is this run's own bound
      // (another tenant on the memory bus moved the reading between 27 and 66 GB/s within one
      // session, so one reading for the whole section can make a run look faster or slower than
      // the memory it actually had).
      run.bandwidthAfterGbps = loadNativeKernels()!.measureBandwidth(512 << 20, 0.5).gbps;
      c.runs.push(run);
      const t = run.timings;
      log(
        `cli ${c.name} ${c.mode} run ${r + 1}: ttft ${t.ttft_ms!.toFixed(0)} ms (vision ${t.vision_ms!.toFixed(0)}, prefill ${t.prefill_ms!.toFixed(0)}, ${t.prompt_tokens} tokens, ${t.image_tiles} tiles), ` +
          `${t.decode_tokens_per_s!.toFixed(1)} tok/s, ${run.peakRssMb.toFixed(0)} MiB, bandwidth after ${run.bandwidthAfterGbps.toFixed(1)} GB/s`,
      );
    }
  }
  return cases;
}

function loadSection(model: string, runs: number): CliRun[] {
  const out: CliRun[] = [];
  for (let r = 0; r < runs; r++) {
    const run = cliRun(["--model", model, "--prompt", "Hi", "--max-new-tokens", "1", "--dtype", "f32"]);
    out.push(run);
    log(`load run ${r + 1}: wall ${run.wallMs.toFixed(0)} ms, load_ms ${run.timings.load_ms!.toFixed(0)}, total_ms ${run.timings.total_ms!.toFixed(0)}`);
  }
  // Node's own start-up, for reference.
  return out;
}

function nodeStartupMs(runs: number): Stat {
  const v: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    execFileSync(process.execPath, ["-e", "0"]);
    v.push(performance.now() - t0);
  }
  return stat(v);
}

// ---------------------------------------------------------------------------------------------
// Second turn

interface TurnRun {
  first: GenerationResult["timings"];
  second: GenerationResult["timings"];
}

async function turnsSection(model: string, runs: number, mode: DTypeMode): Promise<TurnRun[]> {
  const out: TurnRun[] = [];
  for (let r = 0; r < runs; r++) {
    // A fresh model each run, so the first turn finds nothing cached from the previous run.
    const vlm = await SmolVLM.load(model, { dtype: mode });
    const user: ChatMessage = { role: "user", content: [{ type: "image" }, { type: "text", text: "Can you describe this image?" }] };
    const first = await vlm.generate({ messages: [user], images: [IMG_WIDE] }, { maxNewTokens: 32, greedy: true, ignoreEos: true });
    const convo: ChatMessage[] = [
      user,
      { role: "assistant", content: [{ type: "text", text: first.text }] },
      { role: "user", content: [{ type: "text", text: "What colours stand out the most?" }] },
    ];
    const second = await vlm.generate({ messages: convo, images: [IMG_WIDE] }, { maxNewTokens: 32, greedy: true, ignoreEos: true });
    out.push({ first: first.timings, second: second.timings });
    log(`turns run ${r + 1}: first ttft ${first.timings.ttft_ms.toFixed(0)} ms (${first.timings.prompt_tokens} tokens, ${first.timings.cached_tokens} cached), second ttft ${second.timings.ttft_ms.toFixed(0)} ms (${second.timings.prompt_tokens} tokens, ${second.timings.cached_tokens} cached)`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/** Bytes read per weight by a decode step: bf16 checkpoints stay bf16 in f32/bf16 modes. */
const WEIGHT_BYTES: Record<DTypeMode, number> = { f32: 2, bf16: 2, q8: 34 / 32, q4: 20 / 32 };

function decodeBytesPerToken(model: string, promptTokens: number, tokens: number, kvElementBytes: number, mode: DTypeMode): { weights: number; kv: number } {
  const cfg = JSON.parse(readFileSync(join(model, "config.json"), "utf8"));
  const t = cfg.text_config;
  const h = t.hidden_size as number;
  const heads = t.num_attention_heads as number;
  const kvHeads = t.num_key_value_heads as number;
  const hd = (t.head_dim as number | undefined) ?? h / heads;
  const ffn = t.intermediate_size as number;
  const layers = t.num_hidden_layers as number;
  const vocab = t.vocab_size as number;
  const perLayer = h * heads * hd + 2 * h * kvHeads * hd + heads * hd * h + 3 * h * ffn;
  const weights = WEIGHT_BYTES[mode] * (layers * perLayer + vocab * h);
  const meanContext = promptTokens + tokens / 2;
  const kv = 2 * layers * kvHeads * hd * meanContext * kvElementBytes;
  return { weights, kv };
}

async function kvElementBytes(model: string, mode: DTypeMode): Promise<number> {
  const vlm = await SmolVLM.load(model, { dtype: mode });
  const cache = vlm.model.text.newCache() as unknown as { keys?: { BYTES_PER_ELEMENT?: number }[] };
  return cache.keys?.[0]?.BYTES_PER_ELEMENT ?? 4;
}

interface QuantMemory {
  quantizeSeconds: number;
  quantizePeakRssMb: number;
  folderBytes: number;
  fromFolder: CliRun[];
  atLoad: CliRun[];
}

/** Issue 7's memory figures (see the file comment). */
function quantSection(model: string, runs: number): QuantMemory {
  const out = mkdtempSync(join(tmpdir(), "smolvlm-q4-"));
  try {
    const t0 = performance.now();
    const q = spawnSync("/usr/bin/time", ["-f", "PEAK_RSS_KB=%M", process.execPath, BIN, "quantize", "--model", model, "--dtype", "q4", "--out", out, "--force"], { encoding: "utf8" });
    if (q.status !== 0) throw new Error(`quantize failed: ${q.stderr}`);
    const quantizeSeconds = (performance.now() - t0) / 1000;
    const quantizePeakRssMb = Number(/PEAK_RSS_KB=(\d+)/.exec(q.stderr)?.[1] ?? 0) / 1024;
    const folderBytes = readdirSync(out).reduce((n, f) => n + statSync(join(out, f)).size, 0);
    log(`quantize q4: ${quantizeSeconds.toFixed(1)} s, peak ${quantizePeakRssMb.toFixed(0)} MiB, folder ${(folderBytes / 1e6).toFixed(0)} MB`);
    const args = (dir: string) => ["--model", dir, "--image", IMG_SQUARE512, "--image-size", "512", "--prompt", "Can you describe this image?", "--max-new-tokens", "64"];
    const fromFolder: CliRun[] = [];
    const atLoad: CliRun[] = [];
    for (let r = 0; r < runs; r++) {
      fromFolder.push(cliRun(args(out)));
      atLoad.push(cliRun([...args(model), "--dtype", "q4"]));
      log(`q4 512x512 run ${r + 1}: folder ${fromFolder[r]!.peakRssMb.toFixed(0)} MiB (load ${fromFolder[r]!.timings.load_ms!.toFixed(0)} ms), at load ${atLoad[r]!.peakRssMb.toFixed(0)} MiB (load ${atLoad[r]!.timings.load_ms!.toFixed(0)} ms)`);
    }
    return { quantizeSeconds, quantizePeakRssMb, folderBytes, fromFolder, atLoad };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

function lscpu(): Record<string, string> {
  try {
    const out = execFileSync("lscpu", { encoding: "utf8" });
    return Object.fromEntries(out.split("\n").filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")).trim(), l.slice(l.indexOf(":") + 1).trim()]));
  } catch {
    return {};
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: "/tmp/smolvlm-500m-shaped" },
      runs: { type: "string", default: "3" },
      tokens: { type: "string", default: "128" },
      sections: { type: "string", default: "limits,vision,cli,load,turns,server" },
      modes: { type: "string", default: "bf16,f32" },
      json: { type: "string" },
    },
  });
  const model = values.model!;
  const runs = Number(values.runs);
  const tokens = Number(values.tokens);
  const sections = new Set(values.sections!.split(","));
  const modes = values.modes!.split(",") as DTypeMode[];
  if (!existsSync(join(model, "model.safetensors"))) throw new Error(`${model} has no model.safetensors: make it with node dist/bench/make-checkpoint.js`);
  if (!existsSync(IMG_SQUARE512)) throw new Error(`${IMG_SQUARE512} is missing`);
  const cpu = lscpu();
  const report: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { model: cpu["Model name"], cpus: cpus().length, coresPerSocket: cpu["Core(s) per socket"], threadsPerCore: cpu["Thread(s) per core"], memGiB: totalmem() / 2 ** 30, flags: (cpu["Flags"] ?? "").split(" ").filter((f) => /^(avx2|fma|avx512f|avx512_bf16|f16c)$/.test(f)) },
    node: process.version,
    model,
    runs,
    tokens,
  };
  log(`start: ${JSON.stringify(report.machine)}`);
  const limits: Limits = { peak: [], bandwidth: [] };
  if (sections.has("limits") || sections.has("vision") || sections.has("cli")) measureLimits(limits, 2);

  if (sections.has("vision")) {
    const v = await visionSection(model, runs, modes);
    report.vision = v;
    measureLimits(limits, 1);
  }
  if (sections.has("cli")) {
    report.cli = cliSection(model, runs, tokens, modes);
    report.kvElementBytes = Object.fromEntries(await Promise.all(modes.map(async (m) => [m, await kvElementBytes(model, m)] as const)));
    measureLimits(limits, 1);
  }
  if (sections.has("load")) {
    report.load = loadSection(model, runs);
    report.nodeStartupMs = nodeStartupMs(runs);
  }
  if (sections.has("turns")) {
    report.turns = await turnsSection(model, runs, modes.includes("f32") ? "f32" : modes[0]!);
  }
  if (sections.has("quant")) report.quant = quantSection(model, runs);
  if (sections.has("server")) {
    log("server throughput (bench/server-throughput.js)");
    const r = spawnSync(process.execPath, [join(ROOT, "dist", "bench", "server-throughput.js"), model, "--tokens", "64", "--repeat", String(runs)], { encoding: "utf8", maxBuffer: 1 << 26 });
    report.server = { status: r.status, stdout: r.stdout, stderr: r.stderr.slice(-4000) };
    process.stderr.write(r.stdout);
  }
  if (limits.peak.length) measureLimits(limits, 1);
  report.limits = limits;
  report.loadAverage = { during: stat(loads), uptime: execFileSync("uptime", { encoding: "utf8" }).trim() };

  // ----- Summary (markdown) -----
  const peak = stat(limits.peak.map((p) => p.gflops));
  const bw = stat(limits.bandwidth.map((b) => b.gbps));
  const lines: string[] = [];
  if (limits.peak.length) {
    const p0 = limits.peak[0]!;
    const dots = [
      p0.bf16Gflops ? `; ${p0.bf16Instruction} ${cell(stat(limits.peak.map((p) => p.bf16Gflops ?? 0)))} GFLOP/s` : "",
      p0.int8Gops ? `; ${p0.int8Instruction} ${cell(stat(limits.peak.map((p) => p.int8Gops ?? 0)))} GOP/s` : "",
    ].join("");
    lines.push(`Machine limits (measured ${limits.peak.length}x in this run): FMA peak ${cell(peak)} GFLOP/s on ${p0.threads} threads (${p0.isa}; one thread ${cell(stat(limits.peak.map((p) => p.gflopsOneThread)))})${dots}; read bandwidth ${cell(bw)} GB/s (best pass ${cell(stat(limits.bandwidth.map((b) => b.bestGbps)))}).`, "");
  }
  if (report.vision) {
    const v = report.vision as Awaited<ReturnType<typeof visionSection>>;
    // Each mode against the peak of the instruction its linears run on (attention is float32 FMA
    // work in every mode): f32 the FMA peak, bf16 vdpbf16ps where present, q8/q4 the int8 product.
    const modePeak = (mode: DTypeMode): { value: number; name: string } => {
      const p0 = limits.peak[0]!;
      if (mode === "bf16" && p0.bf16Gflops) return { value: stat(limits.peak.map((p) => p.bf16Gflops ?? 0)).median, name: p0.bf16Instruction ?? "bf16" };
      if ((mode === "q8" || mode === "q4") && p0.int8Gops) return { value: stat(limits.peak.map((p) => p.int8Gops ?? 0)).median, name: p0.int8Instruction ?? "int8" };
      return { value: peak.median, name: "FMA" };
    };
    lines.push(`Vision encoder + connector, ${fmt(v.flopsPerTile / 1e9, 1)} GFLOP per tile:`, "", "| mode | tiles | seconds | GFLOP/s | % of FMA peak (median) | % of the mode's peak |", "| --- | --- | --- | --- | --- | --- |");
    for (const r of v.rows) {
      const mp = modePeak(r.mode);
      lines.push(`| ${r.mode} | ${r.tiles} | ${cell(r.seconds, 2)} | ${cell(r.gflops)} | ${fmt((100 * r.gflops.median) / peak.median, 0)}% | ${fmt((100 * r.gflops.median) / mp.value, 0)}% of ${mp.name} (${fmt(mp.value)}) |`);
    }
    lines.push("");
  }
  if (report.cli) {
    const cases = report.cli as CliCase[];
    const kvb = report.kvElementBytes as Record<string, number>;
    lines.push(
      `CLI, ${tokens} new tokens ignoring EOS. "% of bound": decode against the section's median bandwidth; "per run": each run's decode against the bandwidth read right after it, median over runs:`,
      "",
      "| case | mode | tiles | prompt tokens | TTFT ms | vision ms | prefill ms | decode tok/s | bound tok/s | % of bound | per run (bandwidth after) | peak RSS MiB |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const c of cases) {
      const g = (f: string) => stat(c.runs.map((r) => r.timings[f]!));
      const pt = g("prompt_tokens").median;
      const bytes = decodeBytesPerToken(model, pt, tokens, kvb[c.mode] ?? 4, c.mode);
      const perToken = bytes.weights + bytes.kv;
      const bound = (bw.median * 1e9) / perToken;
      const dec = g("decode_tokens_per_s");
      const adjacent = c.runs.filter((r) => r.bandwidthAfterGbps);
      const perRun = adjacent.length
        ? `${fmt(stat(adjacent.map((r) => (100 * r.timings.decode_tokens_per_s! * perToken) / (r.bandwidthAfterGbps! * 1e9))).median, 0)}% (${cell(stat(adjacent.map((r) => r.bandwidthAfterGbps!)))} GB/s)`
        : "-";
      lines.push(
        `| ${c.name} | ${c.mode} | ${g("image_tiles").median} | ${pt} | ${cell(g("ttft_ms"), 0)} | ${cell(g("vision_ms"), 0)} | ${cell(g("prefill_ms"), 0)} | ${cell(dec)} | ${fmt(bound)} (${fmt(bytes.weights / 1e6, 0)} MB weights + ${fmt(bytes.kv / 1e6, 0)} MB KV) | ${fmt((100 * dec.median) / bound, 0)}% | ${perRun} | ${cell(stat(c.runs.map((r) => r.peakRssMb)), 0)} |`,
      );
    }
    lines.push("");
  }
  if (report.load) {
    const l = report.load as CliRun[];
    const wall = stat(l.map((r) => r.wallMs));
    const gen = stat(l.map((r) => r.wallMs - r.timings.total_ms!));
    lines.push(`Load (text prompt, 1 token, f32): process wall ${cell(wall, 0)} ms; wall minus generation ${cell(gen, 0)} ms; load_ms ${cell(stat(l.map((r) => r.timings.load_ms!)), 0)}; bare \`node -e 0\` ${cell(report.nodeStartupMs as Stat, 0)} ms.`, "");
  }
  if (report.turns) {
    const t = report.turns as TurnRun[];
    const f = stat(t.map((r) => r.first.ttft_ms));
    const s = stat(t.map((r) => r.second.ttft_ms));
    const ratio = stat(t.map((r) => r.first.ttft_ms / r.second.ttft_ms));
    lines.push(`Second turn (wide.jpg, 13 tiles): first TTFT ${cell(f, 0)} ms (${t[0]!.first.prompt_tokens} prompt tokens, ${t[0]!.first.cached_tokens} cached); second TTFT ${cell(s, 0)} ms (${t[0]!.second.prompt_tokens} prompt tokens, ${t[0]!.second.cached_tokens} cached); ratio ${cell(ratio)}x (goal >= 5x).`, "");
  }
  if (report.quant) {
    const q = report.quant as QuantMemory;
    const mib = (rs: CliRun[]) => cell(stat(rs.map((r) => r.peakRssMb)), 0);
    const ms = (rs: CliRun[], f: string) => cell(stat(rs.map((r) => r.timings[f]!)), 0);
    lines.push(
      `q4 memory, 512x512 --image-size 512, 64 tokens: from a \`smolvlm quantize --dtype q4\` folder (${fmt(q.folderBytes / 1e6, 0)} MB, written in ${fmt(q.quantizeSeconds)} s at ${fmt(q.quantizePeakRssMb, 0)} MiB peak): peak RSS ${mib(q.fromFolder)} MiB (${fmt((stat(q.fromFolder.map((r) => r.peakRssMb)).median * 2 ** 20) / 1e9, 3)} GB; goal <= 0.7 GB), load ${ms(q.fromFolder, "load_ms")} ms; quantizing at load time (--dtype q4): peak RSS ${mib(q.atLoad)} MiB, load ${ms(q.atLoad, "load_ms")} ms.`,
      "",
    );
  }
  if (report.server) lines.push("Server throughput:", "", "```", String((report.server as { stdout: string }).stdout).trim(), "```", "");
  lines.push(`Load average (1 min) during the run: ${cell(stat(loads), 2)}; at the end: ${(report.loadAverage as { uptime: string }).uptime}`);
  const md = lines.join("\n");
  report.markdown = md;
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2));
  console.log(md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
