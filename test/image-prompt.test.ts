import { test } from "node:test";
import assert from "node:assert/strict";
import { fixturePath, readJson, TINY_MODELS } from "./helpers.js";
import { decodeImage } from "../src/image/decode.js";
import { ImageProcessor, type ProcessOverrides } from "../src/image/processor.js";
import { expandImageTokens, imagePromptString, imageTokenCount, type ImageGrid } from "../src/image/prompt.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { SmolVLMError } from "../src/errors.js";

const IMAGE_ID = 49190;
const FAKE_ID = 49189;

test("split form: tiles row by row, newline per row, blank line, then the global image", () => {
  const s = imagePromptString({ rows: 2, cols: 2 }, { imageSeqLen: 2 });
  const I = "<image><image>";
  const F = "<fake_token_around_image>";
  assert.equal(
    s,
    `${F}<row_1_col_1>${I}${F}<row_1_col_2>${I}\n` +
      `${F}<row_2_col_1>${I}${F}<row_2_col_2>${I}\n` +
      `\n${F}<global-img>${I}${F}`,
  );
  assert.equal(imageTokenCount({ rows: 2, cols: 2 }, 2), 10);
});

test("single-tile form (rows = cols = 0): only the wrapped global image", () => {
  const s = imagePromptString({ rows: 0, cols: 0 }, { imageSeqLen: 3 });
  assert.equal(s, "<fake_token_around_image><global-img><image><image><image><fake_token_around_image>");
  assert.equal(imageTokenCount({ rows: 0, cols: 0 }, 3), 3);
});

test("each marker gets its own image's expansion, text around kept; custom tokens", () => {
  const opts = { imageSeqLen: 1, imageToken: "<im>", fakeImageToken: "<f>", globalImageToken: "<g>" };
  const grids = [{ rows: 0, cols: 0 }, { rows: 1, cols: 2 }];
  assert.equal(expandImageTokens("A<im>B<im>C", grids, opts), "A<f><g><im><f>B<f><row_1_col_1><im><f><row_1_col_2><im>\n\n<f><g><im><f>C");
  // with a custom marker, "<image>" is ordinary text and does not count
  assert.throws(() => expandImageTokens("A<image>B<image>C", grids, opts), SmolVLMError);
  assert.equal(expandImageTokens("no images", [], { imageSeqLen: 64 }), "no images");
});

test("marker and image counts must agree", () => {
  const isBad = (re: RegExp) => (e: unknown) => e instanceof SmolVLMError && e.code === "bad_request" && re.test(e.message);
  assert.throws(() => expandImageTokens("<image><image>", [{ rows: 0, cols: 0 }], { imageSeqLen: 4 }), isBad(/2 <image> markers but 1 image was given/));
  assert.throws(() => expandImageTokens("text", [{ rows: 0, cols: 0 }], { imageSeqLen: 4 }), isBad(/0 <image> markers but 1 image was given/));
  assert.throws(() => expandImageTokens("<image>", [], { imageSeqLen: 4 }), isBad(/1 <image> marker but 0 images were given/));
  assert.throws(() => expandImageTokens("<image>", [{ rows: -1, cols: 0 }], { imageSeqLen: 4 }), isBad(/rows and cols/));
  assert.throws(() => expandImageTokens("<image>", [{ rows: 0, cols: 0 }], { imageSeqLen: 0 }), SmolVLMError);
});

interface E2ECase {
  images: string[];
  processor_kwargs: { size?: { longest_edge: number }; do_image_splitting?: boolean };
  prompt: string;
  input_ids: number[];
  pixel_values_shape?: number[];
}

const CASES = ["describe_default", "describe_n2_tall", "describe_nosplit", "document_nosplit", "interleaved", "multi_turn", "photo_default", "system", "text_only", "two_images_n1"];

const count = (s: string, sub: string): number => s.split(sub).length - 1;

for (const model of TINY_MODELS) {
  const dir = fixturePath("models", model);
  const proc = ImageProcessor.fromModelDir(dir);
  const tok = Tokenizer.fromModelDir(dir);
  for (const name of CASES) {
    test(`expanded prompt gives the reference input_ids: ${model}.${name}`, async () => {
      const c = readJson<E2ECase>("cases", `${model}.${name}.json`);
      const o: ProcessOverrides = {};
      if (c.processor_kwargs.size) o.longestEdge = c.processor_kwargs.size.longest_edge;
      if (c.processor_kwargs.do_image_splitting !== undefined) o.doImageSplitting = c.processor_kwargs.do_image_splitting;
      const grids: ImageGrid[] = [];
      for (const rel of c.images) {
        const img = await decodeImage(fixturePath(rel));
        grids.push(proc.grid(img.width, img.height, o));
      }
      const text = expandImageTokens(c.prompt, grids, { imageSeqLen: proc.imageSeqLen });
      const tiles = c.pixel_values_shape?.[1] ?? 0;
      const images = count(text, "<image>");
      assert.equal(images, tiles * proc.imageSeqLen);
      assert.equal(images, grids.reduce((n, g) => n + imageTokenCount(g, proc.imageSeqLen), 0));
      assert.equal(images, c.input_ids.filter((id) => id === IMAGE_ID).length);
      assert.equal(count(text, "<fake_token_around_image>"), c.input_ids.filter((id) => id === FAKE_ID).length);
      assert.equal(count(text, "<global-img>"), c.images.length);
      assert.equal(c.input_ids[0], 1, "the prompt itself starts with <|im_start|>; no BOS is added");
      assert.deepEqual(tok.encode(text), c.input_ids);
    });
  }
}
