/**
 * The OpenAI-compatible server, driven by the official `openai` client: text and image requests,
 * streamed and not, must give what the library itself gives for the same seed; cancellation frees
 * the slot; a dead worker fails its requests with 500 and is restarted.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI, { APIError } from "openai";
import { SmolVLM, type GenerateOptions } from "../src/smolvlm.js";
import { startServer, type RunningServer } from "../src/server/http.js";
import type { ChatMessage } from "../src/tokenizer/chat-template.js";
import { fixturePath } from "./helpers.js";

const MODEL = fixturePath("models", "tiny-bf16");
const IMAGE = readFileSync(fixturePath("images", "small.png"));
const DATA_URI = `data:image/png;base64,${IMAGE.toString("base64")}`;

let server: RunningServer;
let client: OpenAI;
let vlm: SmolVLM;

before(async () => {
  server = await startServer({ modelDir: MODEL, servedModelName: "tiny", port: 0, maxBatch: 4, imageSize: 512, log: () => {} });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  vlm = await SmolVLM.load(MODEL, { engine: { prefixCacheBytes: 0 } });
});

after(async () => {
  await server.close();
});

async function health(): Promise<{ status: string; worker: { restarts: number; state: string }; requests: { in_flight: number; active: number } }> {
  return (await (await fetch(`${server.url}/health`)).json()) as never;
}

async function waitIdle(): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    const h = await health();
    if (h.requests.in_flight === 0 && h.requests.active === 0) return;
    if (Date.now() > end) assert.fail(`the server did not become idle: ${JSON.stringify(h)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Extension fields (top_k, min_p, repetition_penalty) are not in the client's types. */
type Params = OpenAI.ChatCompletionCreateParamsNonStreaming & Record<string, unknown>;
type StreamParams = OpenAI.ChatCompletionCreateParamsStreaming & Record<string, unknown>;

test("/v1/models lists the served model, and /health answers", async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.deepEqual(
    models.map((m) => [m.id, m.object, m.owned_by]),
    [["tiny", "model", "smolvlm"]],
  );
  assert.equal((await client.models.retrieve("tiny")).id, "tiny");
  const h = await health();
  assert.equal(h.status, "ok");
});

test("a greedy text completion matches the library, with usage and finish_reason", async () => {
  const messages: ChatMessage[] = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Hello there" },
  ];
  const expected = await vlm.generate({ messages }, { maxNewTokens: 12, greedy: true });
  const r = await client.chat.completions.create({
    model: "tiny",
    messages: [
      { role: "developer", content: "You are terse." },
      { role: "user", content: [{ type: "text", text: "Hello there" }] },
    ],
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, "tiny");
  assert.equal(typeof r.created, "number");
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0]!.index, 0);
  assert.equal(r.choices[0]!.message.role, "assistant");
  assert.equal(r.choices[0]!.message.content, expected.text);
  assert.equal(r.choices[0]!.finish_reason, expected.finishReason);
  assert.deepEqual(
    [r.usage!.prompt_tokens, r.usage!.completion_tokens, r.usage!.total_tokens],
    [expected.promptTokenIds.length, expected.tokenIds.length, expected.promptTokenIds.length + expected.tokenIds.length],
  );
});

test("a seeded, sampled stream matches the library, chunk shapes and include_usage", async () => {
  const options: GenerateOptions = { maxNewTokens: 16, temperature: 0.9, topP: 0.95, topK: 40, minP: 0.01, repetitionPenalty: 1.1, seed: 1234 };
  const expected = await vlm.generate({ messages: [{ role: "user", content: "Tell me a story" }] }, options);
  const stream = await client.chat.completions.create({
    model: "tiny",
    messages: [{ role: "user", content: "Tell me a story" }],
    max_completion_tokens: 16,
    temperature: 0.9,
    top_p: 0.95,
    top_k: 40,
    min_p: 0.01,
    repetition_penalty: 1.1,
    seed: 1234,
    stream: true,
    stream_options: { include_usage: true },
  } as StreamParams);
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const c of stream) chunks.push(c);
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1);
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.model, "tiny");
  }
  assert.equal(chunks[0]!.choices[0]!.delta.role, "assistant");
  const last = chunks[chunks.length - 1]!;
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage!.completion_tokens, expected.tokenIds.length);
  assert.equal(last.usage!.prompt_tokens, expected.promptTokenIds.length);
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  for (const c of withChoices) assert.equal(c.usage, null);
  const text = withChoices.map((c) => c.choices[0]!.delta.content ?? "").join("");
  assert.equal(text, expected.text);
  const finishes = withChoices.map((c) => c.choices[0]!.finish_reason).filter((f) => f !== null);
  assert.deepEqual(finishes, ["length"]);
  assert.ok(withChoices.length >= 3, "the text comes in several chunks");
});

test("stop strings end the answer where the library ends it (finish_reason stop)", async () => {
  const plain = await vlm.generate({ prompt: "Hello" }, { maxNewTokens: 12, greedy: true });
  // A stop string that spans a token boundary in the middle of the answer.
  const stop = plain.text.slice(Math.floor(plain.text.length / 2) - 2, Math.floor(plain.text.length / 2) + 2);
  const expected = await vlm.generate({ prompt: "Hello" }, { maxNewTokens: 12, greedy: true, stop: [stop] });
  assert.equal(expected.finishReason, "stop");
  const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hello" }], max_tokens: 12, stop: [stop, "never-seen"] });
  assert.equal(r.choices[0]!.message.content, expected.text);
  assert.equal(r.choices[0]!.finish_reason, "stop");
  const single = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hello" }], max_tokens: 12, stop });
  assert.equal(single.choices[0]!.message.content, expected.text);
});

test("an image as a data: URI, streamed and not, matches the library (and the repeat reuses the prompt)", async () => {
  const question = "What is in this image?";
  const expected = await vlm.generate(
    { messages: [{ role: "user", content: [{ type: "image" }, { type: "text", text: question }] }], images: [new Uint8Array(IMAGE)], imageSize: 512 },
    { maxNewTokens: 6, greedy: true },
  );
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: "user", content: [{ type: "image_url", image_url: { url: DATA_URI } }, { type: "text", text: question }] },
  ];
  const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 6 });
  assert.equal(r.choices[0]!.message.content, expected.text);
  assert.equal(r.usage!.prompt_tokens, expected.promptTokenIds.length);

  const stream = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 6, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const c of stream) {
    text += c.choices[0]?.delta.content ?? "";
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, expected.text);
  assert.ok((usage as { prompt_tokens_details?: { cached_tokens?: number } }).prompt_tokens_details!.cached_tokens! > 0, "the second request reuses the first's KV cache");
});

test("a client that disconnects mid-stream frees its slot at once", async () => {
  const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Count forever" }], max_tokens: 4000, stream: true });
  let n = 0;
  for await (const c of stream) {
    if (c.choices[0]?.delta.content && ++n === 3) {
      stream.controller.abort();
      break;
    }
  }
  const t0 = Date.now();
  await waitIdle();
  assert.ok(Date.now() - t0 < 2000, `freed after ${Date.now() - t0} ms`);
  // The server still answers.
  const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 });
  assert.equal(r.choices[0]!.finish_reason, "length");
});

test("a worker that dies fails its requests with 500, is restarted, and the server keeps serving", async () => {
  const long = client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Go on" }], max_tokens: 4000 } as Params);
  const longStream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Go on and on" }], max_tokens: 4000, stream: true });
  const it = longStream[Symbol.asyncIterator]();
  await it.next(); // the stream has started
  for (let i = 0; (await health()).requests.in_flight < 2; i++) {
    assert.ok(i < 200, "both requests reach the worker");
    await new Promise((r) => setTimeout(r, 25));
  }
  await server.worker.kill();
  await assert.rejects(long, (e: unknown) => e instanceof APIError && e.status === 500 && (e.error as { code?: string }).code === "worker_crashed");
  await assert.rejects(
    (async () => {
      for (let s = await it.next(); !s.done; s = await it.next());
    })(),
    (e: unknown) => e instanceof APIError && /stopped unexpectedly/.test(e.message),
  );
  const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hello there" }], max_tokens: 3, temperature: 0 });
  assert.equal(r.choices[0]!.message.content, (await vlm.generate({ prompt: "Hello there" }, { maxNewTokens: 3, greedy: true })).text);
  const h = await health();
  assert.equal(h.worker.restarts, 1);
  assert.equal(h.status, "ok");
});
