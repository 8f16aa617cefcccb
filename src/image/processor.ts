/**
 * The Idefics3 image processor: resize the longest edge, round up to whole tiles, cut the tiles
 * row by row, append a squashed global image, then rescale and normalise in float32.
 *
 * The reference is what transformers 5 loads for `"image_processor_type": "Idefics3ImageProcessor"`
 * when torchvision is installed (as it was for the fixtures): the torchvision backend, whose
 * LANCZOS resize is torch's uint8 antialiased Lanczos (int16 weights, per-axis precision), not
 * Pillow's 22-bit one; the two differ by one level on ~1-2% of pixels. Every resize works on the
 * previous 8-bit result, as in the reference. (The PIL backend, Idefics3ImageProcessorPil, uses the
 * same sizes with Pillow's resize, `resizeLanczos`, and numpy's unfused rescale/normalise.)
 */
import { join } from "node:path";
import { SmolVLMError } from "../errors.js";
import { readJsonFile, readOptionalJsonFile } from "../io/config.js";
import { resizeLanczosTorch, typescriptPasses, type ResamplePasses } from "./resize.js";
import type { RgbImage } from "./types.js";

/** The reference clamps the resized longest edge to 4k (MAX_IMAGE_SIZE). */
export const MAX_IMAGE_SIZE = 4096;

export interface ImageProcessorConfig {
  longestEdge: number;
  tileSize: number;
  doImageSplitting: boolean;
  doResize: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: readonly [number, number, number];
  imageStd: readonly [number, number, number];
  imageSeqLen: number;
}

export interface ProcessOverrides {
  /** size.longest_edge */
  longestEdge?: number;
  /** do_image_splitting */
  doImageSplitting?: boolean;
}

export interface ProcessedImage {
  /** [tiles, 3, height, width], float32, channel planes. */
  pixelValues: Float32Array;
  tiles: number;
  /** Tile grid; 0 and 0 when the image is a single tile (the prompt then uses the short form). */
  rows: number;
  cols: number;
  height: number;
  width: number;
}

type Json = Record<string, unknown>;

function posInt(v: unknown, what: string, file: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new SmolVLMError("bad_config", `${what} must be a positive integer, got ${JSON.stringify(v)}`, file);
  }
  return v;
}

function bool(v: unknown, dflt: boolean, what: string, file: string): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw new SmolVLMError("bad_config", `${what} must be true or false`, file);
  return v;
}

function triple(v: unknown, what: string, file: string): readonly [number, number, number] {
  const arr = typeof v === "number" ? [v, v, v] : v;
  if (!Array.isArray(arr) || arr.length !== 3 || !arr.every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw new SmolVLMError("bad_config", `${what} must be a number or 3 numbers`, file);
  }
  return [arr[0], arr[1], arr[2]] as const;
}

function edge(obj: unknown, what: string, file: string): number {
  const le = (obj as Json | undefined)?.["longest_edge"];
  return posInt(le, `${what}.longest_edge`, file);
}

/** Reads preprocessor_config.json (+ image_seq_len from processor_config.json) of a model folder. */
export function loadProcessorConfig(dir: string): ImageProcessorConfig {
  const ppPath = join(dir, "preprocessor_config.json");
  const pp = readJsonFile(ppPath);
  const pcPath = join(dir, "processor_config.json");
  const pc = readOptionalJsonFile(pcPath);
  // Older model folders keep image_seq_len in preprocessor_config.json only.
  const seq = pc["image_seq_len"] ?? pp["image_seq_len"];
  if (pp["resample"] !== undefined && pp["resample"] !== 1) {
    throw new SmolVLMError("bad_config", `only resample 1 (LANCZOS) is supported, got ${JSON.stringify(pp["resample"])}`, ppPath);
  }
  const rescale = pp["rescale_factor"] ?? 1 / 255;
  if (typeof rescale !== "number" || !(rescale > 0)) throw new SmolVLMError("bad_config", "rescale_factor must be a positive number", ppPath);
  return {
    longestEdge: edge(pp["size"], "size", ppPath),
    tileSize: edge(pp["max_image_size"], "max_image_size", ppPath),
    doImageSplitting: bool(pp["do_image_splitting"], true, "do_image_splitting", ppPath),
    doResize: bool(pp["do_resize"], true, "do_resize", ppPath),
    doRescale: bool(pp["do_rescale"], true, "do_rescale", ppPath),
    rescaleFactor: rescale,
    doNormalize: bool(pp["do_normalize"], true, "do_normalize", ppPath),
    imageMean: triple(pp["image_mean"] ?? 0.5, "image_mean", ppPath),
    imageStd: triple(pp["image_std"] ?? 0.5, "image_std", ppPath),
    imageSeqLen: posInt(seq, "image_seq_len", pcPath),
  };
}

/** Python's int(): truncation toward zero. */
const pyInt = Math.trunc;

/**
 * The reference's longest-edge size: the longest side becomes `maxLen` (upscaling too), the other
 * keeps the aspect ratio, truncated then bumped to even; then clamped to MAX_IMAGE_SIZE.
 * Returns [height, width].
 */
export function longestEdgeSize(height: number, width: number, maxLen: number): [number, number] {
  let h = height;
  let w = width;
  const aspect = w / h;
  if (w >= h) {
    w = maxLen;
    h = pyInt(w / aspect);
    if (h % 2 !== 0) h += 1;
  } else {
    h = maxLen;
    w = pyInt(h * aspect);
    if (w % 2 !== 0) w += 1;
  }
  h = Math.max(h, 1);
  w = Math.max(w, 1);
  // _resize_output_size_scale_below_upper_bound with MAX_IMAGE_SIZE
  const aspect2 = w / h;
  if (w >= h && w > MAX_IMAGE_SIZE) {
    w = MAX_IMAGE_SIZE;
    h = pyInt(w / aspect2);
  } else if (h > w && h > MAX_IMAGE_SIZE) {
    h = MAX_IMAGE_SIZE;
    w = pyInt(h * aspect2);
  }
  return [Math.max(h, 1), Math.max(w, 1)];
}

/** resize_for_vision_encoder: both sides rounded up to whole tiles, the short one via the aspect ratio. */
export function visionEncoderSize(height: number, width: number, tile: number): [number, number] {
  let h = height;
  let w = width;
  const aspect = w / h;
  if (w >= h) {
    w = Math.ceil(w / tile) * tile;
    h = pyInt(w / aspect);
    h = Math.ceil(h / tile) * tile;
  } else {
    h = Math.ceil(h / tile) * tile;
    w = pyInt(h * aspect);
    w = Math.ceil(w / tile) * tile;
  }
  return [h, w];
}

function crop(img: RgbImage, x0: number, y0: number, size: number): RgbImage {
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((y0 + y) * img.width + x0) * 3;
    out.set(img.data.subarray(from, from + size * 3), y * size * 3);
  }
  return { width: size, height: size, data: out };
}

/** split_images: tiles row by row then the global image, or the image alone if it is one tile. */
function splitTiles(img: RgbImage, tile: number, passes: ResamplePasses): { frames: RgbImage[]; rows: number; cols: number } {
  if (img.height <= tile && img.width <= tile) return { frames: [img], rows: 0, cols: 0 };
  const rows = Math.floor((img.height - tile) / tile) + 1;
  const cols = Math.floor((img.width - tile) / tile) + 1;
  const frames: RgbImage[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) frames.push(crop(img, c * tile, r * tile, tile));
  }
  frames.push(resizeLanczosTorch(img, tile, tile, passes));
  return { frames, rows, cols };
}

export class ImageProcessor {
  readonly config: ImageProcessorConfig;
  /** Per-channel value tables, built on first use. */
  private tables: Float32Array[] = [];

  /** Who runs the resize passes: the TypeScript reference, or a backend's same arithmetic. */
  private readonly passes: ResamplePasses;

  constructor(config: ImageProcessorConfig, passes: ResamplePasses = typescriptPasses) {
    this.config = config;
    this.passes = passes;
  }

  static fromModelDir(dir: string, passes?: ResamplePasses): ImageProcessor {
    return new ImageProcessor(loadProcessorConfig(dir), passes);
  }

  get imageSeqLen(): number {
    return this.config.imageSeqLen;
  }

  get tileSize(): number {
    return this.config.tileSize;
  }

  private longestEdge(overrides: ProcessOverrides): number {
    const longest = overrides.longestEdge ?? this.config.longestEdge;
    if (!Number.isInteger(longest) || longest < 1) {
      throw new SmolVLMError("bad_request", `longestEdge must be a positive integer, got ${longest}`);
    }
    return longest;
  }

  private splitting(overrides: ProcessOverrides): boolean {
    return overrides.doImageSplitting ?? this.config.doImageSplitting;
  }

  /**
   * The tile grid for an image of this size, without touching pixels (for counting prompt
   * tokens before decoding). Same rules as `tiles`.
   */
  grid(width: number, height: number, overrides: ProcessOverrides = {}): { rows: number; cols: number; tiles: number } {
    const tile = this.config.tileSize;
    let [h, w] = [height, width];
    if (this.config.doResize) [h, w] = longestEdgeSize(h, w, this.longestEdge(overrides));
    if (!this.splitting(overrides)) return { rows: 0, cols: 0, tiles: 1 };
    [h, w] = visionEncoderSize(h, w, tile);
    if (h <= tile && w <= tile) return { rows: 0, cols: 0, tiles: 1 };
    const rows = Math.floor((h - tile) / tile) + 1;
    const cols = Math.floor((w - tile) / tile) + 1;
    return { rows, cols, tiles: rows * cols + 1 };
  }

  /** The 8-bit tiles (and grid) the reference would produce, before rescale/normalise. */
  tiles(image: RgbImage, overrides: ProcessOverrides = {}): { frames: RgbImage[]; rows: number; cols: number } {
    const cfg = this.config;
    const longest = this.longestEdge(overrides);
    const tile = cfg.tileSize;
    let img = image;
    if (cfg.doResize) {
      const [h, w] = longestEdgeSize(img.height, img.width, longest);
      img = resizeLanczosTorch(img, w, h, this.passes);
    }
    if (!this.splitting(overrides)) {
      // The reference squashes the whole image into one square tile, ignoring the aspect ratio.
      return { frames: [resizeLanczosTorch(img, tile, tile, this.passes)], rows: 0, cols: 0 };
    }
    const [h, w] = visionEncoderSize(img.height, img.width, tile);
    return splitTiles(resizeLanczosTorch(img, w, h, this.passes), tile, this.passes);
  }

  process(image: RgbImage, overrides: ProcessOverrides = {}): ProcessedImage {
    const { frames, rows, cols } = this.tiles(image, overrides);
    const { width, height } = frames[0]!;
    // Every path yields tile x tile frames; a guard, since the layout below depends on it.
    if (frames.some((f) => f.width !== width || f.height !== height)) throw new Error("tiles of different sizes");
    const plane = width * height;
    const pixelValues = new Float32Array(frames.length * 3 * plane);
    frames.forEach((f, t) => this.normalizeInto(f, pixelValues, t * 3 * plane));
    return { pixelValues, tiles: frames.length, rows, cols, height, width };
  }

  /** rescale + normalize through a 256-entry table per channel (see channelTable). */
  private normalizeInto(f: RgbImage, out: Float32Array, offset: number): void {
    const plane = f.width * f.height;
    for (let c = 0; c < 3; c++) {
      const lut = this.channelTable(c);
      const base = offset + c * plane;
      for (let i = 0; i < plane; i++) out[base + i] = lut[f.data[i * 3 + c]!]!;
    }
  }

  /**
   * The reference's float32 arithmetic for one 8-bit value. transformers' torchvision backend fuses
   * rescale into normalize: mean and std are multiplied by 1/rescale_factor (float32 tensors times
   * a scalar cast to float32), then (x - mean) / std in float32.
   */
  private channelTable(c: number): Float32Array {
    const cached = this.tables[c];
    if (cached) return cached;
    const { doRescale, rescaleFactor, doNormalize, imageMean, imageStd } = this.config;
    const f = Math.fround;
    const inv = doRescale ? f(1 / rescaleFactor) : 1;
    const mean = f(f(imageMean[c]!) * inv);
    const std = f(f(imageStd[c]!) * inv);
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      if (doNormalize) lut[v] = f(f(v - mean) / std);
      else lut[v] = doRescale ? f(v * f(rescaleFactor)) : v;
    }
    this.tables[c] = lut;
    return lut;
  }
}
