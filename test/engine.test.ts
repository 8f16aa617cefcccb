/** The engine: batching concurrent requests, prompt reuse across turns, stop strings. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { SmolVLM } from "../src/smolvlm.js";
import { StopStringFilter } from "../src/generation/stop-strings.js";
import type { ChatMessage } from "../src/tokenizer/chat-template.js";
import { fixturePath, relL2 } from "./helpers.js";

const MODEL = fixturePath("models", "tiny-bf16");
const IMAGE = fixturePath("images", "small.png");

test("stop strings spanning pieces are cut, text that only looks like a start is released", () => {
  const f = new StopStringFilter(["<END>", "\n\n"]);
  assert.equal(f.push("Hello <E"), "Hello ");
  assert.equal(f.push("xtra"), "<Extra");
  assert.equal(f.push(" and <EN"), " and ");
  assert.equal(f.push("D> more"), "");
  assert.ok(f.hasStopped);
  const g = new StopStringFilter(["\n\n"]);
  assert.equal(g.push("a\n"), "a");
  assert.equal(g.flush(), "\n");
});

test("concurrent requests are batched and give the same answers as one at a time", async () => {
  const vlm = await SmolVLM.load(MODEL, { engine: { prefixCacheBytes: 0 } });
  const prompts = ["Hello there", "What is the capital of France?", "Describe a cat.", "1 2 3 4"];
  const opts = { greedy: true, maxNewTokens: 10, ignoreEos: true };
  const alone: { tokenIds: number[] }[] = [];
  for (const p of prompts) alone.push(await vlm.generate({ prompt: p }, opts));
  const withImage = vlm.generate({ prompt: "What is this?", images: [IMAGE], imageSize: 512 }, opts);
  const together = await Promise.all(prompts.map((p) => vlm.generate({ prompt: p }, opts)));
  together.forEach((r, i) => assert.deepEqual(r.tokenIds, alone[i]!.tokenIds, prompts[i]));
  const imageAlone = await vlm.generate({ prompt: "What is this?", images: [IMAGE], imageSize: 512 }, opts);
  assert.deepEqual((await withImage).tokenIds, imageAlone.tokenIds);
});

test("a follow-up turn reuses the image and the shared prefix, with the same logits", async () => {
  const cached = await SmolVLM.load(MODEL);
  const fresh = await SmolVLM.load(MODEL, { engine: { prefixCacheBytes: 0 } });
  const first: ChatMessage[] = [{ role: "user", content: [{ type: "image" }, { type: "text", text: "What is in the image?" }] }];
  const opts = { greedy: true, maxNewTokens: 6, ignoreEos: true, returnPromptLogits: true };
  const turn1 = await cached.generate({ messages: first, images: [IMAGE] }, opts);
  assert.equal(turn1.timings.cached_tokens, 0);
  const second: ChatMessage[] = [...first, { role: "assistant", content: turn1.text }, { role: "user", content: "And the colours?" }];
  const reused = await cached.generate({ messages: second, images: [IMAGE] }, opts);
  const recomputed = await fresh.generate({ messages: second, images: [IMAGE] }, opts);
  assert.ok(reused.timings.cached_tokens > turn1.promptTokenIds.length - 1, `cached ${reused.timings.cached_tokens}`);
  assert.equal(reused.timings.vision_ms, 0, "the image is not encoded again");
  assert.ok(recomputed.timings.vision_ms > 0);
  assert.ok(relL2(reused.promptLogits!, recomputed.promptLogits!) < 1e-5);
  assert.deepEqual(reused.tokenIds, recomputed.tokenIds);
});

test("a different image after the same text is not mistaken for the cached one", async () => {
  const vlm = await SmolVLM.load(MODEL);
  const opts = { greedy: true, maxNewTokens: 2, ignoreEos: true, returnPromptLogits: true };
  await vlm.generate({ prompt: "What is this?", images: [IMAGE] }, opts);
  const other = await vlm.generate({ prompt: "What is this?", images: [fixturePath("images", "rgba.png")] }, opts);
  assert.ok(other.timings.cached_tokens < 10, `cached ${other.timings.cached_tokens}`);
  assert.ok(other.timings.vision_ms > 0);
});

test("stop strings end generation through the library", async () => {
  const vlm = await SmolVLM.load(MODEL);
  const free = await vlm.generate({ prompt: "Hello" }, { greedy: true, maxNewTokens: 8, ignoreEos: true });
  const stopAt = free.text.slice(3, 6);
  const stopped = await vlm.generate({ prompt: "Hello" }, { greedy: true, maxNewTokens: 8, ignoreEos: true, stop: [stopAt] });
  assert.equal(stopped.finishReason, "stop");
  assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(stopAt)));
});
