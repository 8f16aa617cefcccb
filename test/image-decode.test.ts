import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import sharp, { type Sharp } from "sharp";
import { fixturePath, noise, sha16, tempDir } from "./helpers.js";
import { compositeOnWhite, decodeImage, type RgbImage } from "../src/image/decode.js";
import { SmolVLMError } from "../src/errors.js";

const tmp = tempDir("decode");


function raw(data: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): Sharp {
  return sharp(Buffer.from(data), { raw: { width, height, channels } });
}

/** Asserts a SmolVLMError with this code whose message names `name` and matches `re`. */
async function rejectsWith(p: Promise<unknown>, code: string, name: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof SmolVLMError, `expected SmolVLMError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.includes(name), `message should name ${name}: ${e.message}`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

test("bad files are bad_image errors that name the file", async () => {
  const jpg = readFileSync(fixturePath("images", "rocket.jpg"));
  const png = readFileSync(fixturePath("images", "small.png"));
  const cases: Array<[string, Uint8Array | string, RegExp]> = [
    ["truncated.jpg", jpg.subarray(0, jpg.length >> 1), /decode/],
    ["truncated.png", png.subarray(0, png.length >> 1), /decode/],
    ["notes.png", "these are not the pixels you are looking for\n", /not a readable image/],
    ["empty.jpg", new Uint8Array(0), /empty/],
  ];
  for (const [name, bytes, re] of cases) {
    const path = join(tmp, name);
    writeFileSync(path, bytes);
    await rejectsWith(decodeImage(path), "bad_image", path, re);
  }
  await rejectsWith(decodeImage(join(tmp, "missing.png")), "bad_image", "missing.png", /no such file/);
  await rejectsWith(decodeImage(tmp), "bad_image", tmp, /directory/);
  await rejectsWith(decodeImage(new Uint8Array([1, 2, 3])), "bad_image", "image bytes");
});

/** A PNG whose header claims width x height; the pixel data is a token, never reached. */
function pngHeaderOnly(width: number, height: number): Uint8Array {
  const chunk = (type: string, data: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const sig = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  return Buffer.concat([sig, chunk("IHDR", ihdr), chunk("IDAT", Buffer.from([120, 156, 3, 0, 0, 0, 0, 1])), chunk("IEND", Buffer.alloc(0))]);
}

test("decompression bombs are refused from the header, before decoding", async () => {
  const path = join(tmp, "bomb.png");
  writeFileSync(path, pngHeaderOnly(60000, 60000));
  const t0 = performance.now();
  await rejectsWith(decodeImage(path), "image_too_large", path, /60000x60000 = 3600000000 pixels, over the limit of 100000000.*maxPixels/);
  assert.ok(performance.now() - t0 < 1000);
  // a lower limit applies to ordinary images too
  await rejectsWith(decodeImage(fixturePath("images", "small.png"), { maxPixels: 96 * 64 - 1 }), "image_too_large", "small.png");
  const ok = await decodeImage(fixturePath("images", "small.png"), { maxPixels: 96 * 64 });
  assert.equal(ok.width * ok.height, 96 * 64);
  await assert.rejects(decodeImage(path, { maxPixels: 0 }), (e: unknown) => e instanceof SmolVLMError && e.code === "bad_request");
});

test("path, bytes and data: URI give the same pixels", async () => {
  const path = fixturePath("images", "wide.jpg");
  const bytes = readFileSync(path);
  const a = await decodeImage(path);
  const b = await decodeImage(new Uint8Array(bytes));
  const c = await decodeImage(`data:image/jpeg;base64,${bytes.toString("base64")}`);
  assert.equal(a.width, 640);
  assert.equal(a.height, 480);
  assert.equal(a.data.length, 640 * 480 * 3);
  assert.deepEqual(b, a);
  assert.deepEqual(c, a);
  await rejectsWith(decodeImage("data:image/png;base64,@@@@"), "bad_image", "data: URI", /base64/);
  await rejectsWith(decodeImage("data:image/png,rawbytes"), "bad_image", "data: URI", /base64/);
});

test("RGBA: alpha dropped like the reference's convert('RGB'), or composited like Pillow", async () => {
  const rgba = noise(40 * 30 * 4, 77);
  const path = join(tmp, "noise-rgba.png");
  await raw(rgba, 40, 30, 4).png().toFile(path);
  // sha256 of Pillow 13's im.convert("RGB") and alpha_composite(white, im).convert("RGB")
  assert.equal(sha16((await decodeImage(path)).data), "bb09ff03151a46b0");
  assert.equal(sha16((await decodeImage(path, { alpha: "white" })).data), "2185dd551aea9e92");
  assert.equal(sha16(compositeOnWhite(rgba, 40, 30).data), "2185dd551aea9e92");
  // the fixture image: colour channels as stored (the processor fixtures check the rest)
  const fixture = fixturePath("images", "rgba.png");
  const { data } = await sharp(fixture).raw().toBuffer({ resolveWithObject: true });
  const img = await decodeImage(fixture);
  for (let i = 0; i < 256 * 256; i += 97) {
    assert.deepEqual([...img.data.subarray(i * 3, i * 3 + 3)], [...data.subarray(i * 4, i * 4 + 3)]);
  }
});

test("composite edge cases: transparent is white, opaque is unchanged", () => {
  const px = new Uint8Array([10, 20, 30, 0, 10, 20, 30, 255, 200, 100, 0, 128]);
  assert.deepEqual([...compositeOnWhite(px, 3, 1).data], [255, 255, 255, 10, 20, 30, 227, 177, 127]);
});

test("grey and grey+alpha images become RGB with equal channels", async () => {
  const grey = noise(31 * 17, 3);
  for (const [name, channels, bytes] of [
    ["grey.png", 1, grey],
    ["grey-alpha.png", 2, noise(31 * 17 * 2, 4)],
  ] as const) {
    const path = join(tmp, name);
    await raw(bytes, 31, 17, channels).png().toFile(path);
    const img = await decodeImage(path);
    assert.equal(img.width, 31);
    for (let i = 0; i < 31 * 17; i++) {
      const v = bytes[i * channels]!;
      assert.deepEqual([...img.data.subarray(i * 3, i * 3 + 3)], [v, v, v], `${name} pixel ${i}`);
    }
  }
  // a grey JPEG decodes to grey RGB too
  const jpg = join(tmp, "grey.jpg");
  await raw(grey, 31, 17, 1).jpeg({ quality: 90 }).toFile(jpg);
  const img = await decodeImage(jpg);
  for (let i = 0; i < img.data.length; i += 3) assert.ok(img.data[i] === img.data[i + 1] && img.data[i] === img.data[i + 2]);
});

/** Rotates 90 degrees clockwise: what EXIF orientation 6 asks a viewer to do. */
function rotateCw(img: RgbImage): RgbImage {
  const { width: w, height: h } = img;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < w; y++) {
    for (let x = 0; x < h; x++) out.set(img.data.subarray(((h - 1 - x) * w + y) * 3, ((h - 1 - x) * w + y) * 3 + 3), (y * h + x) * 3);
  }
  return { width: h, height: w, data: out };
}

test("EXIF orientation is applied", async () => {
  const path = join(tmp, "exif6.jpg");
  await raw(noise(48 * 32 * 3, 6), 48, 32, 3).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(path);
  assert.equal((await sharp(path).metadata()).orientation, 6);
  const stored = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  const asStored: RgbImage = { width: stored.info.width, height: stored.info.height, data: new Uint8Array(stored.data) };
  const img = await decodeImage(path);
  assert.equal(img.width, 32);
  assert.equal(img.height, 48);
  assert.deepEqual(img, rotateCw(asStored));
});

test("lossless formats round-trip exactly: PNG 16-bit, WebP, TIFF, GIF; first GIF frame", async () => {
  const rgb = noise(29 * 19 * 3, 8);
  for (const [name, make] of [
    ["x.webp", (s: Sharp) => s.webp({ lossless: true })],
    ["x.tif", (s: Sharp) => s.tiff({ compression: "lzw" })],
  ] as const) {
    const path = join(tmp, name);
    await make(raw(rgb, 29, 19, 3)).toFile(path);
    assert.deepEqual((await decodeImage(path)).data, rgb, name);
  }
  // 16-bit PNG: Pillow keeps the high byte
  const wide = new Uint16Array(29 * 19 * 3).map((_, i) => (i * 7919) & 0xffff);
  const p16 = join(tmp, "x16.png");
  // a Uint16Array input is read as 16-bit samples
  await sharp(wide, { raw: { width: 29, height: 19, channels: 3 } }).toColourspace("rgb16").png().toFile(p16);
  assert.equal((await sharp(p16).metadata()).depth, "ushort");
  assert.deepEqual((await decodeImage(p16)).data, Uint8Array.from(wide, (v) => v >> 8));
  // GIF: few colours so the palette is exact; an animated GIF yields its first frame
  const flat = Uint8Array.from(rgb, (v) => (v >> 6) * 85);
  const gif = join(tmp, "x.gif");
  await raw(flat, 29, 19, 3).gif().toFile(gif);
  assert.deepEqual((await decodeImage(gif)).data, flat);
  const frames = Buffer.concat([Buffer.from(flat), Buffer.alloc(flat.length, 255)]);
  const anim = join(tmp, "anim.gif");
  await sharp(frames, { raw: { width: 29, height: 38, channels: 3, pageHeight: 19 } }).gif().toFile(anim);
  const first = await decodeImage(anim);
  assert.equal(first.height, 19);
  assert.deepEqual(first.data, flat);
});

test("lossy WebP and AVIF decode to the right size and close values", async () => {
  const flat = new Uint8Array(64 * 48 * 3).fill(90);
  for (const [name, make] of [
    ["y.webp", (s: Sharp) => s.webp({ quality: 90 })],
    ["y.avif", (s: Sharp) => s.avif({ quality: 90 })],
  ] as const) {
    const path = join(tmp, name);
    await make(raw(flat, 64, 48, 3)).toFile(path);
    const img = await decodeImage(path);
    assert.deepEqual([img.width, img.height], [64, 48], name);
    assert.ok(img.data.every((v) => Math.abs(v - 90) <= 3), name);
  }
});

test("CMYK JPEG uses Pillow's CMYK to RGB formula, not an ICC transform", async () => {
  // sharp stores this sRGB image as CMYK through its ICC profile; what matters is how it reads back.
  const path = join(tmp, "cmyk.jpg");
  await raw(noise(16 * 16 * 3, 12), 16, 16, 3).toColourspace("cmyk").jpeg({ quality: 90 }).toFile(path);
  assert.equal((await sharp(path).metadata()).space, "cmyk");
  const stored = await sharp(path).pipelineColourspace("cmyk").toColourspace("cmyk").raw().toBuffer();
  const img = await decodeImage(path);
  for (let i = 0; i < 16 * 16; i++) {
    const [c, m, y, k] = stored.subarray(i * 4, i * 4 + 4);
    const nk = 255 - k!;
    // Pillow's cmyk2rgb: nk - round(v * nk / 255), its rounding being (t + (t >> 8)) >> 8 of t = v*nk + 128
    const want = [c!, m!, y!].map((v) => nk - ((((v * nk + 128) >> 8) + v * nk + 128) >> 8));
    assert.deepEqual([...img.data.subarray(i * 3, i * 3 + 3)], want, `pixel ${i}`);
  }
  const icc = await sharp(path).raw().toBuffer();
  assert.notDeepEqual(new Uint8Array(icc), img.data);
});
