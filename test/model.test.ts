/**
 * The model against the Python reference, apart from preprocessing: fixture input ids and pixel
 * values in, logits and image features out.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadModelConfig } from "../src/io/config.js";
import { WeightStore } from "../src/io/checkpoint.js";
import { Idefics3Model } from "../src/model/idefics3.js";
import { tsKernels } from "../src/backend/ts-kernels.js";
import { loadNativeKernels } from "../src/backend/native-kernels.js";
import { encodeSafetensors, SafetensorsFile, type Tensor } from "../src/io/safetensors.js";
import { argmax } from "../src/generation/sampler.js";
import { fixturePath, randomArray, randomWeight, readF32, readJson, relL2, tempDir, TINY_MODELS } from "./helpers.js";

export interface FixtureCase {
  model: string;
  images: string[];
  processor_kwargs: { size?: { longest_edge: number }; do_image_splitting?: boolean };
  prompt: string;
  conversation: unknown[];
  input_ids: number[];
  pixel_values_shape?: number[];
  pixel_values_file?: string;
  image_hidden_states_file?: string;
  image_hidden_states_shape?: number[];
  logits_last_file: string;
  top5_ids_per_position: number[][];
  greedy: { ids: number[]; text: string; top1_top2_gap_per_step: number[] };
}

const models = new Map<string, Idefics3Model>();
export function tinyModel(name: string): Idefics3Model {
  let m = models.get(name);
  if (!m) {
    const dir = fixturePath("models", name);
    const store = WeightStore.fromDir(dir);
    m = new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), tsKernels);
    store.close();
    models.set(name, m);
  }
  return m;
}

/** Greedy ids must match up to the first step whose reference top-1/top-2 gap is a near-tie. */
export function comparableSteps(c: FixtureCase): number {
  const i = c.greedy.top1_top2_gap_per_step.findIndex((g) => g < 1e-3);
  return i === -1 ? c.greedy.ids.length : i;
}

/** Greedy decoding with EOS masked, as the reference made its 12 tokens. */
export function greedyIds(model: Idefics3Model, ids: number[], features: Float32Array | null, steps: number, eos: number[]): { ids: number[]; lastLogits: Float32Array } {
  const cache = model.text.newCache();
  let logits = model.forward(model.embedPrompt(ids, features), ids.length, cache);
  const lastLogits = logits.slice();
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    for (const e of eos) logits[e] = -Infinity;
    const t = argmax(logits);
    out.push(t);
    logits = model.forward(model.text.embed([t]), 1, cache);
  }
  return { ids: out, lastLogits };
}

for (const name of TINY_MODELS) {
  test(`${name}: text-only logits and greedy ids match the reference`, (t) => {
    const c = readJson<FixtureCase>("cases", `${name}.text_only.json`);
    const model = tinyModel(name);
    const { ids, lastLogits } = greedyIds(model, c.input_ids, null, c.greedy.ids.length, [49279]);
    const err = relL2(lastLogits, readF32(c.logits_last_file));
    t.diagnostic(`logits relL2 ${err.toExponential(2)}`);
    assert.ok(err <= 1e-4, `last-position logits relative L2 ${err} > 1e-4`);
    assert.deepEqual(ids.slice(0, comparableSteps(c)), c.greedy.ids.slice(0, comparableSteps(c)));
  });

  test(`${name}: top-5 ids at every prompt position (teacher forced)`, () => {
    const c = readJson<FixtureCase>("cases", `${name}.text_only.json`);
    const model = tinyModel(name);
    const logits = model.forward(model.embedPrompt(c.input_ids, null), c.input_ids.length, model.text.newCache(), true);
    const vocab = model.config.text.vocabSize;
    for (let p = 0; p < c.input_ids.length; p++) {
      assert.equal(argmax(logits.subarray(p * vocab, (p + 1) * vocab)), c.top5_ids_per_position[p]![0], `position ${p}`);
    }
  });

  for (const caseName of ["describe_nosplit", "document_nosplit", "system"]) {
    test(`${name}.${caseName}: image features from the stored pixel values`, (t) => {
      const c = readJson<FixtureCase>("cases", `${name}.${caseName}.json`);
      const model = tinyModel(name);
      const [, tiles, , size] = c.pixel_values_shape!;
      const features = model.encodeImages({ data: readF32(c.pixel_values_file!), tiles: tiles!, size: c.pixel_values_shape![4]! });
      assert.equal(size, c.pixel_values_shape![4]);
      const err = relL2(features, readF32(c.image_hidden_states_file!));
      assert.ok(err <= 1e-4, `image features relative L2 ${err} > 1e-4`);
      const { ids, lastLogits } = greedyIds(model, c.input_ids, features, c.greedy.ids.length, [49279]);
      const logitErr = relL2(lastLogits, readF32(c.logits_last_file));
      t.diagnostic(`features relL2 ${err.toExponential(2)}, logits relL2 ${logitErr.toExponential(2)}`);
      assert.ok(logitErr <= 1e-4, `logits relative L2 ${logitErr}`);
      assert.deepEqual(ids.slice(0, comparableSteps(c)), c.greedy.ids.slice(0, comparableSteps(c)));
    });
  }
}

test("a batched pass over several sequences equals running each on its own", () => {
  const model = tinyModel("tiny-bf16");
  const prompts = [[1, 11126, 42, 21041], [1, 9519, 9531, 42, 330, 2145, 17], [1, 42]];
  const h = model.config.text.hiddenSize;
  const vocab = model.config.text.vocabSize;
  const alone = prompts.map((p) => {
    const cache = model.text.newCache();
    model.forward(model.text.embed(p.slice(0, -1)), p.length - 1, cache);
    return { cache, logits: model.forward(model.text.embed(p.slice(-1)), 1, cache) };
  });
  // Same again, but the last token of every prompt goes through one batched pass, and the second
  // sequence's prompt is prefilled as a chunk in the same pass as the others' decode steps.
  const caches = prompts.map(() => model.text.newCache());
  model.forward(model.text.embed(prompts[0]!.slice(0, -1)), prompts[0]!.length - 1, caches[0]!);
  model.forward(model.text.embed(prompts[2]!.slice(0, -1)), prompts[2]!.length - 1, caches[2]!);
  const rows = [prompts[0]!.slice(-1), prompts[1]!, prompts[2]!.slice(-1)];
  const embeds = new Float32Array(rows.reduce((n, r) => n + r.length, 0) * h);
  embeds.set(model.text.embed(rows.flat()));
  const batched = model.text.forwardSegments(embeds, rows.map((r, i) => ({ cache: caches[i]!, rows: r.length })));
  alone.forEach((a, i) => {
    assert.ok(relL2(batched.subarray(i * vocab, (i + 1) * vocab), a.logits) < 1e-6, `sequence ${i}`);
    assert.equal(caches[i]!.length, a.cache.length);
  });
});

test("decode steps reuse their layer buffers without changing any result", () => {
  // 24 tokens one at a time (each a 1-row pass on the decoder's reused buffers, the same arrays
  // step after step) against one 24-row pass (above 16 rows: the large buffer set).
  const model = tinyModel("tiny-bf16");
  const ids = Array.from({ length: 24 }, (_, i) => 1 + ((i * 7919) % 4000));
  const vocab = model.config.text.vocabSize;
  const whole = model.text.forward(model.text.embed(ids), ids.length, model.text.newCache(), true);
  const cache = model.text.newCache();
  ids.forEach((id, i) => {
    const step = model.text.forward(model.text.embed([id]), 1, cache);
    assert.ok(relL2(step, whole.subarray(i * vocab, (i + 1) * vocab)) < 1e-6, `position ${i}`);
  });
});

test("prefill chunks share one large buffer set, viewed at smaller sizes, without changing any result", () => {
  // A 40-row chunk allocates the large set; the 19-row chunk after it runs on views of it, and a
  // 50-row chunk then replaces it with a larger one. Against the same prompt in one fresh pass.
  const model = tinyModel("tiny-bf16");
  const ids = Array.from({ length: 109 }, (_, i) => 1 + ((i * 4271) % 4000));
  const vocab = model.config.text.vocabSize;
  const whole = model.text.forward(model.text.embed(ids), ids.length, model.text.newCache(), true);
  const decoder = tinyModel("tiny-bf16").text;
  const cache = decoder.newCache();
  let done = 0;
  for (const chunk of [40, 19, 50]) {
    const part = ids.slice(done, done + chunk);
    const logits = decoder.forward(decoder.embed(part), chunk, cache, true);
    for (const i of [0, chunk - 1]) {
      const at = done + i;
      assert.ok(relL2(logits.subarray(i * vocab, (i + 1) * vocab), whole.subarray(at * vocab, (at + 1) * vocab)) < 1e-5, `position ${at}`);
    }
    done += chunk;
  }
});

test("the vision weights' mapped pages, given back between images, read the same when the next image maps them again", () => {
  // The tiny model with a wider vision MLP, so that fc1 and fc2 (3072 x 48 bf16, 288 KiB) stay
  // views of the mapped file rather than copies (small tensors are copied out at load).
  const dir = tempDir("vision-release");
  const src = fixturePath("models", "tiny-bf16");
  const config = readJson<{ vision_config: { intermediate_size: number } }>("models", "tiny-bf16", "config.json");
  config.vision_config.intermediate_size = 3072;
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const file = SafetensorsFile.open(join(src, "model.safetensors"));
  const tensors: Record<string, Tensor> = {};
  for (const name of file.names()) tensors[name] = file.read(name);
  for (let i = 0; i < 2; i++) {
    const p = `model.vision_model.encoder.layers.${i}.mlp`;
    tensors[`${p}.fc1.weight`] = randomWeight("BF16", 3072, 48, 10 + i);
    tensors[`${p}.fc1.bias`] = { dtype: "F32", shape: [3072], data: randomArray(3072, 20 + i, 0.1) };
    tensors[`${p}.fc2.weight`] = randomWeight("BF16", 48, 3072, 30 + i);
  }
  writeFileSync(join(dir, "model.safetensors"), encodeSafetensors(tensors));
  file.close();
  const store = WeightStore.fromDir(dir);
  const model = new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), loadNativeKernels() ?? tsKernels);
  store.close();
  const tile = { data: randomArray(3 * 512 * 512, 40), tiles: 1, size: 512 };
  const before = model.encodeImages(tile);
  const released = model.releaseVisionWeights();
  if (loadNativeKernels()) assert.ok(released >= 2 * 2 * 3072 * 48 * 2 - 4 * 2 * 4096, `released ${released} bytes`);
  assert.deepEqual(model.encodeImages(tile), before);
});
