/** The `smolvlm` command as a user runs it: stdout contracts, files written, error exits. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fixturePath, readF32, readJson, relL2, tempDir } from "./helpers.js";
import type { FixtureCase } from "./model.test.js";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "smolvlm.js");
const MODEL = fixturePath("models", "tiny-bf16");

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      resolve({ code: typeof code === "number" ? code : 1, stdout, stderr });
    });
  });
}

const tmp = tempDir("cli");

test("run --json: one JSON line with the reference's greedy ids, and --logits-out", async () => {
  const c = readJson<FixtureCase>("cases", "tiny-bf16.text_only.json");
  const logitsFile = join(tmp, "logits.f32");
  // --dtype f32: the parity mode. The default is bf16 on CPUs with AVX512_BF16, whose rounding
  // flips greedy choices of this random-weight model's nearly flat logits.
  const r = await cli(["run", "--model", MODEL, "--prompt", "What is the capital of France?", "--dtype", "f32", "--greedy", "--ignore-eos", "--max-new-tokens", "12", "--json", "--logits-out", logitsFile]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, "stdout carries exactly one line");
  const out = JSON.parse(lines[0]!);
  assert.deepEqual(out.prompt_token_ids, c.input_ids);
  assert.deepEqual(out.token_ids, c.greedy.ids);
  assert.equal(out.text, c.greedy.text);
  for (const k of ["load_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s"]) assert.equal(typeof out.timings[k], "number", k);
  const buf = readFileSync(logitsFile);
  const logits = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  assert.ok(relL2(logits, readF32(c.logits_last_file)) <= 1e-4);
});

test("run --messages with an image: ids and logits of the multi-turn reference", async () => {
  const c = readJson<FixtureCase>("cases", "tiny-bf16.multi_turn.json");
  const file = join(tmp, "messages.json");
  writeFileSync(file, JSON.stringify(c.conversation));
  const r = await cli(["run", "--model", MODEL, "--messages", file, "--image", fixturePath(c.images[0]!), "--image-size", "1024", "--max-new-tokens", "1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).prompt_token_ids, c.input_ids);
});

test("run streams text to stdout and notices to stderr", async () => {
  const r = await cli(["run", "--model", MODEL, "--prompt", "Hello", "--max-new-tokens", "4", "--ignore-eos", "--seed", "1", "--temperature", "0.7"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.trim().length > 0);
  assert.match(r.stderr, /tokens\/s/);
});

test("preprocess writes the processor's pixel values and prints the grid", async () => {
  const out = join(tmp, "pv.f32");
  const r = await cli(["preprocess", "--model", MODEL, "--image", fixturePath("images", "wide.jpg"), "--no-image-splitting", "--out", out]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { shape: [1, 3, 512, 512], rows: 0, cols: 0 });
  const buf = readFileSync(out);
  const got = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  assert.equal(relL2(got, readF32("processor", "wide.nosplit.pixel_values.f32")), 0);
  const grid = await cli(["preprocess", "--model", MODEL, "--image", fixturePath("images", "wide.jpg"), "--out", out]);
  assert.deepEqual(JSON.parse(grid.stdout), { shape: [13, 3, 512, 512], rows: 3, cols: 4 });
});

test("bad inputs: one clear line on stderr, a non-zero exit, no stack trace", async () => {
  const corrupt = join(tmp, "corrupt.jpg");
  writeFileSync(corrupt, readFileSync(fixturePath("images", "rocket.jpg")).subarray(0, 2000));
  const empty = join(tmp, "empty.png");
  writeFileSync(empty, "");
  const cases: [string[], RegExp][] = [
    [["run", "--model", MODEL, "--prompt", "hi", "--image", corrupt], /corrupt\.jpg/],
    [["run", "--model", MODEL, "--prompt", "hi", "--image", empty], /empty\.png/],
    [["run", "--model", MODEL, "--messages", join(tmp, "missing.json")], /missing\.json/],
    [["run", "--model", join(tmp, "no-model"), "--prompt", "hi"], /no model folder at .*no-model/],
    [["run", "--model", MODEL, "--prompt", "hi", "--max-new-tokens", "x"], /--max-new-tokens expects an integer/],
    [["run", "--model", MODEL, "--prompt", "hi", "--bogus"], /bogus/],
    [["run", "--model", MODEL, "--prompt", "hi", "--dtype", "q3"], /--dtype q3 is not available/],
    [["frobnicate"], /unknown command/],
    [["run", "--model", MODEL, "--prompt", "hi", "--image", fixturePath("images", "wide.jpg"), "--max-image-pixels", "1000"], /640x480 = 307200 pixels, over the limit of 1000 .*--max-image-pixels/],
  ];
  for (const [args, pattern] of cases) {
    const r = await cli(args);
    assert.notEqual(r.code, 0, args.join(" "));
    assert.match(r.stderr, pattern, args.join(" "));
    assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace for ${args.join(" ")}`);
  }
});

test("more images than image slots, and more slots than images, are refused with counts", async () => {
  const file = join(tmp, "one-slot.json");
  writeFileSync(file, JSON.stringify([{ role: "user", content: [{ type: "image" }, { type: "text", text: "hi" }] }]));
  const img = fixturePath("images", "small.png");
  const tooMany = await cli(["run", "--model", MODEL, "--messages", file, "--image", img, "--image", img]);
  assert.notEqual(tooMany.code, 0);
  assert.match(tooMany.stderr, /2 image\(s\) given but the conversation has only 1 image slot/);
  const tooFew = await cli(["run", "--model", MODEL, "--messages", file]);
  assert.match(tooFew.stderr, /more image slots than images: 0 image\(s\) given/);
});
