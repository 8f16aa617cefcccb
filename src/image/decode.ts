/**
 * Image loading: a file path, raw bytes or a `data:` URI in, 8-bit RGB out, with the pixel values
 * the Python reference sees. sharp (libvips) only decodes, to straight RGBA with the raw sample
 * values (no ICC transform, as Pillow); its JPEG, PNG, WebP, GIF and TIFF decoding was checked
 * equal to Pillow 13's bit for bit. What happens to alpha and CMYK is decided here.
 *
 * Known differences from Pillow: AVIF (libheif's YUV->RGB rounding differs from libavif's by one
 * level on some pixels) and 16-bit greyscale PNG, which Pillow's "I;16" -> "RGB" conversion clips
 * (every value above 255 becomes white); here the high byte is kept, as for 16-bit colour.
 *
 * The reference (transformers 5 `convert_to_rgb`, and `load_image`) calls Pillow's
 * `image.convert("RGB")`, which simply drops alpha: the colour stored under a transparent pixel is
 * what the model sees. That is the default here, and the processor fixtures confirm it bit for bit.
 * transformers 4.x Idefics3 instead composited onto white (`Image.alpha_composite`); that is
 * available as `alpha: "white"`, with Pillow's integer arithmetic.
 */
import { readFile } from "node:fs/promises";
import sharp, { type Metadata } from "sharp";
import { SmolVLMError } from "../errors.js";
import type { RgbImage } from "./types.js";

export type { RgbImage } from "./types.js";

/** 100 megapixels: far above what the processor keeps (it resizes to at most 4096 px a side). */
export const DEFAULT_MAX_PIXELS = 100_000_000;

export interface DecodeOptions {
  /** Refuse images whose header says width*height exceeds this (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** "drop" (default): Pillow's convert("RGB"), as the reference; "white": composite over white. */
  alpha?: "drop" | "white";
}

interface Source {
  bytes: Uint8Array;
  /** Named in error messages: the path, or a description of the bytes. */
  label: string;
}

/** A bad_image (or other) error that names the file, or says what kind of input it was. */
function fail(src: { label: string }, code: "bad_image" | "image_too_large", message: string): SmolVLMError {
  return new SmolVLMError(code, message, src.label);
}

const DATA_URI = { label: "data: URI" };

function parseDataUri(uri: string): Uint8Array {
  const comma = uri.indexOf(",");
  const header = comma < 0 ? "" : uri.slice(5, comma);
  if (comma < 0 || !/;base64$/i.test(header)) {
    throw fail(DATA_URI, "bad_image", "must be of the form data:<type>;base64,<data>");
  }
  const payload = uri.slice(comma + 1).replace(/\s+/g, "");
  // Buffer.from silently skips bad characters; a damaged URI must fail here, not as a bad decode.
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(payload)) throw fail(DATA_URI, "bad_image", "payload is not valid base64");
  return new Uint8Array(Buffer.from(payload, "base64"));
}

async function readSource(input: string | Uint8Array): Promise<Source> {
  if (typeof input !== "string") return { bytes: input, label: `image bytes (${input.byteLength})` };
  if (input.startsWith("data:")) return { bytes: parseDataUri(input), label: DATA_URI.label };
  try {
    return { bytes: new Uint8Array(await readFile(input)), label: input };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : (err as Error).message;
    throw fail({ label: input }, "bad_image", `cannot read image: ${why}`);
  }
}

/** Reads the header only, so an oversized image is refused before any pixel is decoded. */
async function checkHeader(src: Source, maxPixels: number): Promise<Metadata> {
  let meta: Metadata;
  try {
    meta = await sharp(src.bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw fail(src, "bad_image", `not a readable image (${(err as Error).message.trim()})`);
  }
  const { width, height } = meta;
  if (!width || !height) throw fail(src, "bad_image", "image header has no size");
  if (width * height > maxPixels) {
    throw fail(
      src,
      "image_too_large",
      `image is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels} ` +
        `(a guard against decompression bombs); if the image is trusted, raise it (CLI: --max-image-pixels N; library: maxImagePixels / maxPixels)`,
    );
  }
  return meta;
}

interface Rgba {
  rgba: Uint8Array;
  width: number;
  height: number;
}

/**
 * Decodes the first frame to straight (unpremultiplied) 8-bit RGBA, EXIF orientation applied.
 * CMYK stays CMYK through libvips (whose default is an ICC transform) and is converted with
 * Pillow's formula, since Pillow is what the reference uses.
 */
async function decodeRgba(src: Source, maxPixels: number, cmyk: boolean): Promise<Rgba> {
  try {
    let pipeline = sharp(src.bytes, {
      // 'error' also covers truncation: a cut-off file must fail, not come back half grey.
      failOn: "error",
      limitInputPixels: Number.isFinite(maxPixels) ? Math.floor(maxPixels) : false,
      // Pillow ignores embedded ICC profiles, so the raw sample values must be kept.
      ignoreIcc: true,
      page: 0,
      pages: 1,
    }).autoOrient();
    pipeline = cmyk
      ? pipeline.pipelineColourspace("cmyk").toColourspace("cmyk")
      : pipeline.toColourspace("srgb").ensureAlpha();
    const { data, info } = await pipeline.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (cmyk) return { rgba: cmykToRgba(bytes, info.width * info.height, info.channels), width: info.width, height: info.height };
    if (info.channels !== 4) throw new Error(`unexpected ${info.channels} channels after decode`);
    return { rgba: bytes, width: info.width, height: info.height };
  } catch (err) {
    throw fail(src, "bad_image", `cannot decode image (${(err as Error).message.trim()})`);
  }
}

/** Pillow's cmyk2rgb: each channel (255-K) - C*(255-K)/255, its rounded divide, opaque. */
function cmykToRgba(cmyk: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels < 4) throw new Error(`CMYK image decoded to ${channels} channels`);
  const out = new Uint8Array(pixels * 4);
  for (let i = 0; i < pixels; i++) {
    const nk = 255 - cmyk[i * channels + 3]!;
    for (let c = 0; c < 3; c++) {
      const t = cmyk[i * channels + c]! * nk + 128;
      out[i * 4 + c] = nk - (((t >> 8) + t) >> 8);
    }
    out[i * 4 + 3] = 255;
  }
  return out;
}

/** Pillow's `convert("RGB")` of RGBA: the colour channels as stored, alpha ignored. */
export function dropAlpha(rgba: Uint8Array, width: number, height: number): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n * 4; i += 4, j += 3) {
    out[j] = rgba[i]!;
    out[j + 1] = rgba[i + 1]!;
    out[j + 2] = rgba[i + 2]!;
  }
  return { width, height, data: out };
}

/**
 * Pillow's `Image.alpha_composite(white, im).convert("RGB")`, transformers 4.x Idefics3's `convert_to_rgb`.
 * With an opaque white destination Pillow's weights reduce to src*a*128 + 255*(255-a)*128,
 * followed by its rounded divide by 255 (SHIFTFORDIV255) and a shift by its 7 precision bits.
 */
export function compositeOnWhite(rgba: Uint8Array, width: number, height: number): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3]!;
    for (let c = 0; c < 3; c++) {
      if (a === 0) {
        out[i * 3 + c] = 255;
        continue;
      }
      const tmp = rgba[i * 4 + c]! * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7);
      out[i * 3 + c] = (((tmp >> 8) + tmp) >> 8) >> 7;
    }
  }
  return { width, height, data: out };
}

/**
 * Decodes an image (JPEG, PNG, WebP, GIF first frame, TIFF, AVIF) to 8-bit RGB.
 * Grey and palette images are expanded, alpha is handled as `options.alpha` says (dropped, as the
 * reference does, by default), and EXIF orientation is applied as transformers' load_image does.
 * Bad input is a SmolVLMError("bad_image") naming the file; an image over `maxPixels` is
 * SmolVLMError("image_too_large"), refused from its header before any decoding.
 */
export async function decodeImage(input: string | Uint8Array, options: DecodeOptions = {}): Promise<RgbImage> {
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(maxPixels > 0)) throw new SmolVLMError("bad_request", `maxPixels must be positive, got ${maxPixels}`);
  const src = await readSource(input);
  if (src.bytes.byteLength === 0) throw fail(src, "bad_image", "empty file (0 bytes), not an image");
  const meta = await checkHeader(src, maxPixels);
  const { rgba, width, height } = await decodeRgba(src, maxPixels, meta.space === "cmyk");
  return options.alpha === "white" ? compositeOnWhite(rgba, width, height) : dropAlpha(rgba, width, height);
}
