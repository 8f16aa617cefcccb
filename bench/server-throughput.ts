/**
 * Aggregate decode throughput of `smolvlm serve` with 1, 2, 4 and 8 concurrent streams.
 *
 *   node dist/bench/server-throughput.js MODEL_DIR [--tokens 64] [--repeat 2] [--levels 1,2,4,8] [--image-size N] [--worker-niceness N]
 *
 * The server runs in this process (its model in its worker thread, as in production) and is
 * driven over loopback HTTP with streaming requests that set `ignore_eos`, so every stream decodes
 * exactly --tokens tokens. A stream's decode rate is (tokens - 1) / (last token time - first token
 * time); the aggregate rate of a level is the sum over its streams (they decode concurrently), and
 * each level is reported as a ratio to the 1-stream rate measured in the same run. The best of
 * --repeat runs per level is kept. Prompts differ per stream and are of similar length.
 */
import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";
import { startServer } from "../src/server/http.js";

interface StreamStats {
  tokens: number;
  ttftMs: number;
  decodeMs: number;
}

async function oneStream(url: string, model: string, prompt: string, tokens: number, t0: number): Promise<StreamStats> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model,
      messages: [{ role: "user", content: prompt }],
      max_tokens: tokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = 0;
  let last = 0;
  let completion = 0;
  let buffered = "";
  const decoder = new TextDecoder();
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(part, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const chunk = JSON.parse(event.slice(6)) as { choices: { delta: { content?: string } }[]; usage?: { completion_tokens: number } | null; error?: { message: string } };
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.choices[0]?.delta.content) {
        const now = performance.now();
        if (first === 0) first = now;
        last = now;
      }
      if (chunk.usage) completion = chunk.usage.completion_tokens;
    }
  }
  return { tokens: completion, ttftMs: first - t0, decodeMs: last - first };
}

async function level(url: string, model: string, streams: number, tokens: number) {
  const t0 = performance.now();
  const stats = await Promise.all(
    Array.from({ length: streams }, (_, i) => oneStream(url, model, `Stream ${i + 1} of ${streams}: write a long story about the number ${(i + 1) * 37}.`, tokens, t0)),
  );
  const wallMs = performance.now() - t0;
  const rate = stats.reduce((sum, s) => sum + (s.decodeMs > 0 ? ((s.tokens - 1) * 1000) / s.decodeMs : 0), 0);
  const generated = stats.reduce((n, s) => n + s.tokens, 0);
  return { rate, wallMs, endToEnd: (generated * 1000) / wallMs, ttftMs: Math.max(...stats.map((s) => s.ttftMs)) };
}

async function main(): Promise<void> {
  const { values: v, positionals } = parseArgs({
    allowPositionals: true,
    options: { tokens: { type: "string" }, repeat: { type: "string" }, levels: { type: "string" }, "image-size": { type: "string" }, "worker-niceness": { type: "string" } },
  });
  if (positionals.length !== 1) {
    process.stderr.write("usage: node dist/bench/server-throughput.js MODEL_DIR [--tokens 64] [--repeat 2] [--levels 1,2,4,8]\n");
    process.exitCode = 2;
    return;
  }
  const dir = resolve(positionals[0]!);
  const tokens = Number(v.tokens ?? 64);
  const repeat = Number(v.repeat ?? 2);
  const levels = (v.levels ?? "1,2,4,8").split(",").map(Number);
  const model = basename(dir);
  const workerNiceness = v["worker-niceness"] === undefined ? undefined : Number(v["worker-niceness"]);
  const server = await startServer({ modelDir: dir, servedModelName: model, port: 0, maxBatch: Math.max(...levels), maxQueue: 0, log: () => {}, workerNiceness });
  try {
    process.stdout.write(`model ${dir}, ${tokens} tokens per stream, best of ${repeat}, server ${server.url}\n`);
    await level(server.url, model, 1, Math.min(tokens, 16)); // warm-up
    const rows: { streams: number; rate: number; endToEnd: number; wallMs: number; ttftMs: number }[] = [];
    for (const streams of levels) {
      let best: Awaited<ReturnType<typeof level>> | undefined;
      for (let r = 0; r < repeat; r++) {
        const result = await level(server.url, model, streams, tokens);
        if (!best || result.rate > best.rate) best = result;
      }
      rows.push({ streams, ...best! });
    }
    const base = rows.find((r) => r.streams === 1)?.rate ?? rows[0]!.rate;
    process.stdout.write(`\nstreams  decode tok/s (sum)  ratio to 1   end-to-end tok/s   slowest first token   wall\n`);
    for (const r of rows) {
      process.stdout.write(
        `${String(r.streams).padStart(7)}  ${r.rate.toFixed(1).padStart(18)}  ${(r.rate / base).toFixed(2).padStart(10)}x  ${r.endToEnd.toFixed(1).padStart(16)}  ${r.ttftMs.toFixed(0).padStart(17)} ms  ${(r.wallMs / 1000).toFixed(1).padStart(5)} s\n`,
      );
    }
  } finally {
    await server.close();
  }
}

await main();
