import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixturePath, noise, readF32, readJson, sha16 } from "./helpers.js";
import { decodeImage, type RgbImage } from "../src/image/decode.js";
import { ImageProcessor, longestEdgeSize, visionEncoderSize, type ProcessOverrides } from "../src/image/processor.js";
import { resizeLanczos, resizeLanczosTorch } from "../src/image/resize.js";
import { SmolVLMError } from "../src/errors.js";

interface TileStats {
  mean: number;
  std: number;
  sample: number[];
}
interface ProcessorCase {
  image: string;
  kwargs: { size?: { longest_edge: number }; do_image_splitting?: boolean };
  pixel_values_shape: number[];
  rows: number;
  cols: number;
  tiles: TileStats[];
  pixel_values_file?: string;
}
interface E2ECase {
  images: string[];
  processor_kwargs: ProcessorCase["kwargs"];
  pixel_values_shape?: number[];
  pixel_values_file?: string;
}

/** One 8-bit level after rescale (1/255) and normalise (0.5, 0.5). */
const LEVEL = 2 / 255;

function overridesOf(kw: ProcessorCase["kwargs"]): ProcessOverrides {
  const o: ProcessOverrides = {};
  if (kw.size) o.longestEdge = kw.size.longest_edge;
  if (kw.do_image_splitting !== undefined) o.doImageSplitting = kw.do_image_splitting;
  return o;
}

const decoded = new Map<string, Promise<RgbImage>>();
function load(rel: string): Promise<RgbImage> {
  if (!decoded.has(rel)) decoded.set(rel, decodeImage(fixturePath(rel)));
  return decoded.get(rel)!;
}

/** The acceptance rule: >= 99.9% within 1e-6, none more than one 8-bit level off. */
class Deviation {
  n = 0;
  exact = 0;
  max = 0;
  add(got: number, want: number): void {
    const d = Math.abs(got - want);
    this.n++;
    if (d <= 1e-6) this.exact++;
    if (d > this.max) this.max = d;
  }
  check(what: string): void {
    assert.ok(this.exact / this.n >= 0.999, `${what}: only ${this.exact}/${this.n} values within 1e-6`);
    assert.ok(this.max <= LEVEL + 1e-6, `${what}: a value is ${this.max} away (more than one 8-bit level)`);
  }
  toString(): string {
    return `${((100 * this.exact) / this.n).toFixed(3)}% exact of ${this.n}, max deviation ${this.max.toExponential(2)}`;
  }
}

function meanStd(a: Float32Array): [number, number] {
  let s = 0;
  for (const v of a) s += v;
  const mean = s / a.length;
  let ss = 0;
  for (const v of a) ss += (v - mean) ** 2;
  return [mean, Math.sqrt(ss / a.length)];
}

const cases = readJson<{ cases: ProcessorCase[] }>("processor", "cases.json").cases;
const proc512 = ImageProcessor.fromModelDir(fixturePath("models", "tiny-bf16"));
const proc384 = ImageProcessor.fromModelDir(fixturePath("models", "tiny-384-bf16"));

for (const c of cases) {
  test(`processor matches reference: ${c.image} ${JSON.stringify(c.kwargs)}`, async (t) => {
    const img = await load(c.image);
    const out = proc512.process(img, overridesOf(c.kwargs));
    assert.deepEqual([out.tiles, 3, out.height, out.width], c.pixel_values_shape);
    assert.equal(out.rows, c.rows);
    assert.equal(out.cols, c.cols);
    assert.deepEqual(proc512.grid(img.width, img.height, overridesOf(c.kwargs)), { rows: c.rows, cols: c.cols, tiles: out.tiles });
    const n = 3 * out.height * out.width;
    const dev = new Deviation();
    let maxStat = 0;
    c.tiles.forEach((ref, ti) => {
      const tile = out.pixelValues.subarray(ti * n, (ti + 1) * n);
      const [mean, std] = meanStd(tile);
      maxStat = Math.max(maxStat, Math.abs(mean - ref.mean), Math.abs(std - ref.std));
      assert.ok(Math.abs(mean - ref.mean) <= 1e-4, `tile ${ti} mean ${mean} vs ${ref.mean}`);
      assert.ok(Math.abs(std - ref.std) <= 1e-4, `tile ${ti} std ${std} vs ${ref.std}`);
      // Reference samples are rounded to 6 decimals, well inside the 1e-6 tolerance.
      ref.sample.forEach((v, i) => dev.add(tile[Math.floor((i * n) / 2048)]!, v));
    });
    t.diagnostic(`samples: ${dev}; max |mean|,|std| error ${maxStat.toExponential(2)}`);
    dev.check("samples");
    if (c.pixel_values_file) {
      const ref = readF32(c.pixel_values_file);
      assert.equal(ref.length, out.pixelValues.length);
      const full = new Deviation();
      ref.forEach((v, i) => full.add(out.pixelValues[i]!, v));
      t.diagnostic(`whole array: ${full}`);
      full.check("whole array");
    }
  });
}

const e2eNames = ["describe_nosplit", "document_nosplit", "system"];
for (const model of ["tiny-bf16", "tiny-384-bf16"]) {
  for (const name of e2eNames) {
    test(`processor matches end-to-end pixel_values: ${model}.${name}`, async (t) => {
      const c = readJson<E2ECase>("cases", `${model}.${name}.json`);
      const proc = model === "tiny-bf16" ? proc512 : proc384;
      const out = proc.process(await load(c.images[0]!), overridesOf(c.processor_kwargs));
      assert.deepEqual([1, out.tiles, 3, out.height, out.width], c.pixel_values_shape);
      const ref = readF32(c.pixel_values_file!);
      const dev = new Deviation();
      ref.forEach((v, i) => dev.add(out.pixelValues[i]!, v));
      t.diagnostic(`whole array: ${dev}`);
      dev.check("pixel_values");
    });
  }
}

test("tile counts of every end-to-end case (both geometries)", async () => {
  for (const model of ["tiny-bf16", "tiny-384-bf16"]) {
    const proc = model === "tiny-bf16" ? proc512 : proc384;
    for (const name of ["describe_default", "describe_n2_tall", "interleaved", "multi_turn", "photo_default", "two_images_n1"]) {
      const c = readJson<E2ECase>("cases", `${model}.${name}.json`);
      let tiles = 0;
      for (const rel of c.images) {
        const img = await load(rel);
        tiles += proc.grid(img.width, img.height, overridesOf(c.processor_kwargs)).tiles;
      }
      assert.deepEqual([1, tiles, 3, proc.tileSize, proc.tileSize], c.pixel_values_shape, `${model}.${name}`);
    }
  }
});

test("fromModelDir reads both processor configs", () => {
  assert.equal(proc512.tileSize, 512);
  assert.equal(proc512.imageSeqLen, 64);
  assert.equal(proc512.config.longestEdge, 2048);
  assert.equal(proc384.tileSize, 384);
  assert.equal(proc384.imageSeqLen, 81);
  assert.equal(proc384.config.longestEdge, 1536);
});

test("384-tile geometry: 640x480 at longest edge 1536 is 4x3 tiles + global", async () => {
  const out = proc384.process(await load("images/wide.jpg"));
  assert.equal(out.rows, 3);
  assert.equal(out.cols, 4);
  assert.equal(out.tiles, 13);
  assert.equal(out.pixelValues.length, 13 * 3 * 384 * 384);
});

test("sizes follow the reference rules", () => {
  // longest edge set (upscaling too), short side truncated then made even
  assert.deepEqual(longestEdgeSize(480, 640, 2048), [1536, 2048]);
  assert.deepEqual(longestEdgeSize(700, 300, 2048), [2048, 878]);
  assert.deepEqual(longestEdgeSize(64, 96, 2048), [1366, 2048]);
  assert.deepEqual(longestEdgeSize(100, 100, 512), [512, 512]);
  // clamped to 4096 after the even rule
  assert.deepEqual(longestEdgeSize(1000, 3000, 8192), [1365, 4096]);
  // tiles: both sides rounded up to multiples of the tile
  assert.deepEqual(visionEncoderSize(2048, 878, 512), [2048, 1024]);
  assert.deepEqual(visionEncoderSize(342, 512, 512), [512, 512]);
  assert.deepEqual(visionEncoderSize(1366, 2048, 512), [1536, 2048]);
});

test("bad overrides and configs are clear errors", () => {
  const img: RgbImage = { width: 4, height: 4, data: new Uint8Array(48) };
  assert.throws(() => proc512.process(img, { longestEdge: 0 }), (e: unknown) => e instanceof SmolVLMError && e.code === "bad_request");
  const dir = mkdtempSync(join(tmpdir(), "smolvlm-proc-"));
  assert.throws(() => ImageProcessor.fromModelDir(dir), (e: unknown) => e instanceof SmolVLMError && e.code === "bad_config");
  writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify({ size: { longest_edge: 2048 }, max_image_size: {} }));
  writeFileSync(join(dir, "processor_config.json"), JSON.stringify({ image_seq_len: 64 }));
  assert.throws(
    () => ImageProcessor.fromModelDir(dir),
    (e: unknown) => e instanceof SmolVLMError && e.code === "bad_config" && /max_image_size\.longest_edge/.test(e.message),
  );
  rmSync(dir, { recursive: true, force: true });
});


// sha256 (first 16 hex) of Pillow 13.0.0 `Image.resize(..., LANCZOS)` and of torch 2.14.1 /
// torchvision 0.27.0 `tvF.resize(uint8, ..., LANCZOS, antialias=True)` on noise(w*h*3, 1000+i).
const RESIZE_REFS: Array<[number, number, number, number, string, string]> = [
  [37, 23, 300, 200, "d774ba253caaa7b7", "a17843e5fa3b0c36"],
  [300, 200, 37, 23, "cf6dae76136fd460", "06980cafc08eb2d6"],
  [640, 480, 213, 160, "eb37e0ce7de60387", "80f3ba2fb1e92ae7"],
  [5, 700, 3, 2, "186aa935bd1509c4", "3a74f5c330abdd28"], // Pillow's "over 100x taller" order
  [129, 1, 512, 3, "7016419bf069508c", "2459be0d734bd46b"],
  [97, 61, 512, 342, "485f4bc4ea41a492", "8bda383a3176a0f7"],
  [700, 300, 512, 220, "79863f62dd74d9f1", "fec9e4d82ee3ae26"],
];

test("resizeLanczos is bit-exact with Pillow, resizeLanczosTorch with torch", () => {
  RESIZE_REFS.forEach(([w, h, ow, oh, pil, torch], i) => {
    const img: RgbImage = { width: w, height: h, data: noise(w * h * 3, 1000 + i) };
    assert.equal(sha16(resizeLanczos(img, ow, oh).data), pil, `pillow ${w}x${h} -> ${ow}x${oh}`);
    assert.equal(sha16(resizeLanczosTorch(img, ow, oh).data), torch, `torch ${w}x${h} -> ${ow}x${oh}`);
  });
});

test("same-size resize is a copy; bad sizes throw", () => {
  const img: RgbImage = { width: 3, height: 2, data: noise(18, 5) };
  const same = resizeLanczos(img, 3, 2);
  assert.deepEqual(same.data, img.data);
  assert.notEqual(same.data, img.data);
  assert.throws(() => resizeLanczos(img, 0, 2), RangeError);
  assert.throws(() => resizeLanczosTorch({ width: 3, height: 2, data: new Uint8Array(5) }, 4, 4), RangeError);
});

test("2048x1536 resizes are fast", (t) => {
  const big: RgbImage = { width: 2048, height: 1536, data: noise(2048 * 1536 * 3, 9) };
  const small: RgbImage = { width: 640, height: 480, data: noise(640 * 480 * 3, 10) };
  let t0 = performance.now();
  resizeLanczosTorch(small, 2048, 1536);
  const up = performance.now() - t0;
  t0 = performance.now();
  resizeLanczosTorch(big, 512, 512);
  const down = performance.now() - t0;
  t.diagnostic(`640x480 -> 2048x1536: ${up.toFixed(0)} ms; 2048x1536 -> 512x512: ${down.toFixed(0)} ms`);
  // Generous bound for slow CI machines; typically ~0.2 s each.
  assert.ok(up < 3000 && down < 3000);
});
