/**
 * Checkpoint loading: both config styles, single and sharded safetensors in F32/BF16/F16, and a
 * clear error naming the problem and the file for every kind of broken input.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadModelConfig, parseModelConfig } from "../src/io/config.js";
import { WeightStore } from "../src/io/checkpoint.js";
import { SafetensorsFile, encodeSafetensors, type Tensor } from "../src/io/safetensors.js";
import { Idefics3Model } from "../src/model/idefics3.js";
import { tsKernels } from "../src/backend/ts-kernels.js";
import { f32ToF16, toFloat32 } from "../src/backend/dtype.js";
import { SmolVLMError } from "../src/errors.js";
import { fixturePath, readJson, relL2, readF32, tempDir } from "./helpers.js";

const TINY = fixturePath("models", "tiny-bf16");

function tempModelDir(): string {
  const dir = tempDir("ckpt");
  for (const f of readdirSync(TINY)) if (f !== "model.safetensors") copyFileSync(join(TINY, f), join(dir, f));
  return dir;
}

function allTensors(): Record<string, Tensor> {
  const file = SafetensorsFile.open(join(TINY, "model.safetensors"));
  const out: Record<string, Tensor> = {};
  for (const name of file.names()) out[name] = file.read(name);
  file.close();
  return out;
}

function convert(t: Tensor, dtype: "F32" | "F16"): Tensor {
  const f = toFloat32(t);
  if (dtype === "F32") return { dtype, shape: t.shape, data: f };
  return { dtype, shape: t.shape, data: Uint16Array.from(f, (v) => f32ToF16(v)) };
}

function lastLogits(dir: string): Float32Array {
  const store = WeightStore.fromDir(dir);
  const model = new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), tsKernels);
  store.close();
  const c = readJson<{ input_ids: number[] }>("cases", "tiny-bf16.text_only.json");
  return model.forward(model.embedPrompt(c.input_ids, null), c.input_ids.length, model.text.newCache());
}

function expectError(fn: () => unknown, pattern: RegExp, file?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmolVLMError, `expected SmolVLMError, got ${String(e)}`);
    assert.match(e.message, pattern);
    if (file) assert.ok(e.message.includes(file), `message "${e.message}" should name ${file}`);
    return true;
  });
}

test("both config styles (rope_theta and rope_parameters) parse to the same model config", () => {
  for (const name of ["tiny-bf16", "tiny-384-bf16"]) {
    const published = loadModelConfig(fixturePath("models", name, "config.json"));
    const v5 = loadModelConfig(fixturePath("configs", name, "config.json"));
    assert.deepEqual(v5, published);
    assert.equal(published.text.rope.theta, 100000);
  }
});

test("the real SmolVLM-256M config parses with its own sizes", () => {
  const real = JSON.parse(readFileSync(fixturePath("real", "SmolVLM-256M-Instruct", "config.json"), "utf8"));
  const cfg = parseModelConfig(real, "config.json");
  assert.equal(cfg.text.hiddenSize, 576);
  assert.equal(cfg.vision.hiddenSize, 768);
  assert.equal(cfg.text.numKvHeads, 3);
});

test("F32 single file and F16 sharded checkpoints load and agree with BF16", () => {
  const tensors = allTensors();
  const reference = readF32("cases", "tiny-bf16.text_only.logits_last.f32");

  const f32Dir = tempModelDir();
  const f32 = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, convert(t, "F32")]));
  writeFileSync(join(f32Dir, "model.safetensors"), encodeSafetensors(f32));
  assert.ok(relL2(lastLogits(f32Dir), reference) < 1e-4);

  const f16Dir = tempModelDir();
  const names = Object.keys(tensors);
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeFileSync(join(f16Dir, file), encodeSafetensors(Object.fromEntries(shard.map((n) => [n, convert(tensors[n]!, "F16")]))));
    for (const n of shard) weightMap[n] = file;
  });
  writeFileSync(join(f16Dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const err = relL2(lastLogits(f16Dir), reference);
  assert.ok(err < 2e-2, `F16 logits relative L2 ${err}`); // half precision rounds the weights
});

test("missing weights file", () => {
  const dir = tempModelDir();
  expectError(() => WeightStore.fromDir(dir), /no model\.safetensors/, dir);
});

test("truncated safetensors file", () => {
  const dir = tempModelDir();
  const bytes = readFileSync(join(TINY, "model.safetensors"));
  writeFileSync(join(dir, "model.safetensors"), bytes.subarray(0, bytes.length - 1000));
  const store = WeightStore.fromDir(dir);
  expectError(() => new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), tsKernels), /past the end|truncated/, "model.safetensors");
});

test("a file shorter than its header, and a header whose length runs past the end", () => {
  const dir = tempModelDir();
  const path = join(dir, "model.safetensors");
  writeFileSync(path, new Uint8Array(5));
  expectError(() => SafetensorsFile.open(path), /not a safetensors file/, path);
  const bad = new Uint8Array(16);
  new DataView(bad.buffer).setBigUint64(0, 1000n, true);
  writeFileSync(path, bad);
  expectError(() => SafetensorsFile.open(path), /header length 1000 runs past the end/, path);
});

test("a header that is not JSON, and offsets that run past the end of the file", () => {
  const dir = tempModelDir();
  const path = join(dir, "model.safetensors");
  const junk = new TextEncoder().encode("{not json}");
  const bytes = new Uint8Array(8 + junk.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(junk.length), true);
  bytes.set(junk, 8);
  writeFileSync(path, bytes);
  expectError(() => SafetensorsFile.open(path), /header is not valid JSON/, path);

  const header = new TextEncoder().encode(JSON.stringify({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }));
  const short = new Uint8Array(8 + header.length + 8);
  new DataView(short.buffer).setBigUint64(0, BigInt(header.length), true);
  short.set(header, 8);
  writeFileSync(path, short);
  expectError(() => SafetensorsFile.open(path).read("w"), /past the end/, path);
});

test("a tensor whose shape does not fit the config", () => {
  const dir = tempModelDir();
  const tensors = allTensors();
  const name = "model.text_model.layers.0.self_attn.q_proj.weight";
  tensors[name] = { dtype: "BF16", shape: [32, 64], data: new Uint16Array(32 * 64) };
  writeFileSync(join(dir, "model.safetensors"), encodeSafetensors(tensors));
  const store = WeightStore.fromDir(dir);
  expectError(() => new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), tsKernels), /q_proj\.weight" has shape \[32,64\] but the config implies \[64,64\]/, "model.safetensors");
});

test("unknown model_type and non-JSON config", () => {
  const dir = tempModelDir();
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  cfg.model_type = "llava";
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
  expectError(() => loadModelConfig(join(dir, "config.json")), /unknown model_type "llava"/, "config.json");
  writeFileSync(join(dir, "config.json"), "{ this is not json");
  expectError(() => loadModelConfig(join(dir, "config.json")), /not valid JSON/, "config.json");
  expectError(() => loadModelConfig(join(dir, "nope.json")), /file not found/, "nope.json");
});

test("model_type smolvlm is read as the same architecture", () => {
  const cfg = JSON.parse(readFileSync(join(TINY, "config.json"), "utf8"));
  cfg.model_type = "smolvlm";
  assert.equal(parseModelConfig(cfg, "config.json").text.hiddenSize, 64);
});
