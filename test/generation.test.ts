/** Sampling, stopping and streaming behaviour of the generation loop. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Random, Sampler, argmax } from "../src/generation/sampler.js";
import { referencePick } from "./sampler-reference.js";
import { TextStream } from "../src/generation/text-stream.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { SmolVLM } from "../src/smolvlm.js";
import { SmolVLMError } from "../src/errors.js";
import { fixturePath } from "./helpers.js";

const base = { greedy: false, temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 1 };

function logitsOf(values: number[]): Float32Array {
  return Float32Array.from(values);
}

test("sampling picks what sorting every candidate would, over a 49,280-token vocabulary, with ties and masked tokens", () => {
  const vocab = 49280;
  const settings = [
    { temperature: 1, topK: 0, topP: 1, minP: 0 },
    { temperature: 0.7, topK: 0, topP: 0.9, minP: 0 },
    { temperature: 0.7, topK: 50, topP: 0.95, minP: 0 },
    { temperature: 1.3, topK: 0, topP: 1, minP: 0.05 },
    { temperature: 0.2, topK: 3, topP: 1, minP: 0 },
    { temperature: 2, topK: 0, topP: 0.5, minP: 0.01 },
  ];
  for (const [n, setting] of settings.entries()) {
    const o = { ...base, ...setting, seed: 100 + n };
    const fast = new Sampler(o);
    const reference = new Random(o.seed);
    for (let draw = 0; draw < 12; draw++) {
      // Peaked like a trained model's (a few strong candidates over a flat tail), with exact ties
      // and masked ids; the last draws are flat, so the walk goes deep into the order.
      const peak = draw < 9 ? 6 + draw : 0.01;
      const logits = new Float32Array(vocab).map((_, i) => Math.round(Math.sin(i * 12.9898 + draw) * 43758.5453 % 1 * 40) / 10 + (i % 997 === draw ? peak : 0));
      logits[draw] = -Infinity;
      const want = referencePick(logits, o, reference);
      assert.equal(fast.pick(logits.slice()), want, `setting ${n}, draw ${draw}`);
    }
  }
});

test("a seed reproduces a sample; different seeds differ", () => {
  const draw = (seed: number) => {
    const s = new Sampler({ ...base, seed });
    return Array.from({ length: 50 }, () => s.pick(logitsOf([1, 1.2, 0.8, 1.1, 0.9])));
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
});

test("sampling frequencies follow softmax(logits / temperature)", () => {
  const s = new Sampler({ ...base, temperature: 0.5, seed: 3 });
  const logits = [0, Math.log(2), Math.log(4)];
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.pick(logitsOf(logits))]!++;
  // p ∝ exp(l / 0.5) = 1, 4, 16
  const expected = [1 / 21, 4 / 21, 16 / 21];
  counts.forEach((c, i) => assert.ok(Math.abs(c / n - expected[i]!) < 0.015, `token ${i}: ${c / n} vs ${expected[i]}`));
});

test("top-k 1, a tiny top-p and a high min-p all reduce to the argmax", () => {
  const logits = [0.5, 2, 1.9, -1];
  for (const opts of [{ topK: 1 }, { topP: 1e-6 }, { minP: 0.99 }]) {
    const s = new Sampler({ ...base, ...opts });
    for (let i = 0; i < 20; i++) assert.equal(s.pick(logitsOf(logits)), 1, JSON.stringify(opts));
  }
});

test("top-p keeps the smallest set reaching the mass", () => {
  const s = new Sampler({ ...base, topP: 0.7, seed: 5 });
  const seen = new Set<number>();
  // probabilities 0.5, 0.3, 0.2: the set reaching 0.7 is {0, 1}
  for (let i = 0; i < 2000; i++) seen.add(s.pick(logitsOf([Math.log(0.5), Math.log(0.3), Math.log(0.2)])));
  assert.deepEqual([...seen].sort(), [0, 1]);
});

test("banned ids are never chosen and the repetition penalty lowers seen tokens", () => {
  const greedy = new Sampler({ ...base, greedy: true });
  assert.equal(greedy.pick(logitsOf([0, 5, 1]), [1]), 2);
  const penalised = new Sampler({ ...base, greedy: true, repetitionPenalty: 10 });
  assert.equal(penalised.pick(logitsOf([0, 5, 1]), [], [1]), 2);
  assert.equal(argmax([3, 9, 9]), 1, "first maximum wins, as torch.argmax");
});

test("invalid sampling settings are refused", () => {
  assert.throws(() => new Sampler({ ...base, temperature: 0 }), /temperature/);
  assert.throws(() => new Sampler({ ...base, topP: 0 }), /top_p/);
  assert.throws(() => new Sampler({ ...base, topK: -1 }), /top_k/);
});

test("streamed text never splits a multi-byte character and adds up to the full decode", () => {
  const tok = Tokenizer.fromModelDir(fixturePath("models", "tiny-bf16"));
  const text = "emoji 😀🚀👍🏽 and ❤️, 中文字符 Ünïcödé";
  const ids = tok.encode(text);
  const stream = new TextStream(tok);
  const pieces = ids.map((id) => stream.push(id));
  pieces.push(stream.flush());
  assert.equal(pieces.join(""), text);
  assert.ok(pieces.every((p) => !p.includes("\ufffd")));
  assert.ok(pieces.some((p) => p === ""), "some tokens end inside a character and are held back");
});

test("the library: string content equals one text part; sampling with a seed is reproducible", async () => {
  const vlm = await SmolVLM.load(fixturePath("models", "tiny-bf16"));
  const asString = await vlm.prepare({ messages: [{ role: "user", content: "What is the capital of France?" }] });
  const asParts = await vlm.prepare({ messages: [{ role: "user", content: [{ type: "text", text: "What is the capital of France?" }] }] });
  assert.deepEqual(asString.inputIds, asParts.inputIds);
  const opts = { temperature: 0.9, topP: 0.95, seed: 42, maxNewTokens: 6, ignoreEos: true };
  const a = await vlm.generate({ prompt: "Hi" }, opts);
  const b = await vlm.generate({ prompt: "Hi" }, opts);
  assert.deepEqual(a.tokenIds, b.tokenIds);
  assert.equal(a.tokenIds.length, 6);
  assert.equal(a.finishReason, "length");
});

test("the library: streaming yields the same text as generate, and an abort stops it", async () => {
  const vlm = await SmolVLM.load(fixturePath("models", "tiny-bf16"));
  const opts = { greedy: true, maxNewTokens: 8, ignoreEos: true };
  const full = await vlm.generate({ prompt: "Hello" }, opts);
  let streamed = "";
  for await (const piece of vlm.stream({ prompt: "Hello" }, opts)) streamed += piece;
  assert.equal(streamed, full.text);

  const controller = new AbortController();
  const it = vlm.stream({ prompt: "Hello" }, { ...opts, signal: controller.signal });
  let step = await it.next();
  controller.abort();
  while (!step.done) step = await it.next();
  assert.equal(step.value.finishReason, "abort");
  assert.ok(step.value.tokenIds.length < 8);
});

test("the library: EOS stops generation unless ignored, and bad requests are SmolVLMErrors", async () => {
  const vlm = await SmolVLM.load(fixturePath("models", "tiny-bf16"));
  const free = await vlm.generate({ prompt: "Hello" }, { greedy: true, maxNewTokens: 3, ignoreEos: true });
  // Make the model's own first choice the end-of-sequence token.
  (vlm.generationDefaults.eosTokenIds as number[]).push(free.tokenIds[1]!);
  const stopped = await vlm.generate({ prompt: "Hello" }, { greedy: true, maxNewTokens: 3 });
  assert.equal(stopped.finishReason, "stop");
  assert.deepEqual(stopped.tokenIds, free.tokenIds.slice(0, 1));
  const ignored = await vlm.generate({ prompt: "Hello" }, { greedy: true, maxNewTokens: 3, ignoreEos: true });
  assert.equal(ignored.tokenIds.length, 3);
  assert.ok(!ignored.tokenIds.includes(free.tokenIds[1]!));
  (vlm.generationDefaults.eosTokenIds as number[]).pop();

  await assert.rejects(vlm.generate({ prompt: "x", messages: [] }), SmolVLMError);
  await assert.rejects(vlm.generate({ prompt: "x" }, { maxNewTokens: -1 }), /max_new_tokens/);
  await assert.rejects(vlm.generate({ prompt: "x", images: [new Uint8Array([1, 2, 3])] }), (e: unknown) => e instanceof SmolVLMError && e.code === "bad_image");
  await assert.rejects(vlm.generate({ prompt: "x", images: [fixturePath("images", "wide.jpg")], maxImagePixels: 1000 }), /maxPixels|pixels/);
});
