/**
 * End to end through the public API, from the fixtures' conversations and image files: exact
 * input ids, image features and last-position logits within 1e-3, greedy ids identical up to the
 * first near-tie of the reference.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { SmolVLM } from "../src/smolvlm.js";
import { TINY_MODELS, fixturePath, readF32, readJson, relL2, requestFor } from "./helpers.js";
import type { FixtureCase } from "./model.test.js";

const loaded = new Map<string, Promise<SmolVLM>>();
function vlm(name: string): Promise<SmolVLM> {
  // f32 is the parity mode; the default (bf16 where the CPU has it) is tested below with its own tolerance.
  if (!loaded.has(name)) loaded.set(name, SmolVLM.load(fixturePath("models", name), { dtype: "f32" }));
  return loaded.get(name)!;
}

function comparableSteps(c: FixtureCase): number {
  const i = c.greedy.top1_top2_gap_per_step.findIndex((g) => g < 1e-3);
  return i === -1 ? c.greedy.ids.length : i;
}

const caseFiles = readdirSync(fixturePath("cases")).filter((f) => f.endsWith(".json"));

for (const name of TINY_MODELS) {
  for (const file of caseFiles.filter((f) => f.startsWith(`${name}.`))) {
    test(`${file.replace(/\.json$/, "")}: from the image files to the greedy answer`, async (t) => {
      const c = readJson<FixtureCase>("cases", file);
      const model = await vlm(name);
      const request = requestFor(c);
      const prepared = await model.prepare(request);
      assert.equal(prepared.prompt.length > 0, true);
      assert.deepEqual(prepared.inputIds, c.input_ids, "input ids");
      const notes: string[] = [];
      if (c.image_hidden_states_file) {
        assert.equal(prepared.tiles?.count, c.pixel_values_shape![1], "tile count");
        const features = model.model.encodeImages({ data: prepared.tiles!.data, tiles: prepared.tiles!.count, size: prepared.tiles!.size });
        const err = relL2(features, readF32(c.image_hidden_states_file));
        notes.push(`features ${err.toExponential(2)}`);
        assert.ok(err <= 1e-3, `image features relative L2 ${err} > 1e-3`);
      }
      const result = await model.generate(request, { greedy: true, maxNewTokens: c.greedy.ids.length, ignoreEos: true, returnPromptLogits: true });
      const logitErr = relL2(result.promptLogits!, readF32(c.logits_last_file));
      notes.push(`logits ${logitErr.toExponential(2)}`);
      t.diagnostic(notes.join(", "));
      assert.ok(logitErr <= 1e-3, `last-position logits relative L2 ${logitErr} > 1e-3`);
      assert.equal(result.tokenIds.length, c.greedy.ids.length);
      const n = comparableSteps(c);
      assert.deepEqual(result.tokenIds.slice(0, n), c.greedy.ids.slice(0, n));
      assert.deepEqual(result.promptTokenIds, c.input_ids);
      if (n === c.greedy.ids.length) assert.equal(result.text, c.greedy.text);
    });
  }
}

test("the backend under test is the native one when it is built (CI builds it)", async () => {
  const model = await vlm("tiny-bf16");
  if (process.env.CI) assert.equal(model.backend.kernels, "native", model.backend.notice);
  assert.equal(model.backend.dtype, "f32");
});

for (const name of TINY_MODELS) {
  test(`${name}: bf16 mode stays within 3e-2 of the reference logits`, async (t) => {
    const model = await SmolVLM.load(fixturePath("models", name), { dtype: "bf16" });
    assert.equal(model.model.text.kvDtype, "BF16", "bf16 mode keeps its KV cache in bf16");
    for (const file of [`${name}.describe_nosplit.json`, `${name}.text_only.json`]) {
      const c = readJson<FixtureCase>("cases", file);
      const result = await model.generate(requestFor(c), { greedy: true, maxNewTokens: 1, returnPromptLogits: true });
      const err = relL2(result.promptLogits!, readF32(c.logits_last_file));
      t.diagnostic(`${file}: bf16 logits relL2 ${err.toExponential(2)}`);
      assert.ok(err <= 3e-2, `${file}: bf16 logits relative L2 ${err} > 3e-2`);
    }
  });
}
