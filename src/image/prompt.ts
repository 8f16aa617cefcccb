/**
 * Prompt expansion for Idefics3 / SmolVLM: every `<image>` marker in the chat prompt becomes the
 * token string the reference processor (transformers' Idefics3Processor) writes for that image,
 * which the tokenizer then turns into ids. The processor adds no BOS of its own: SmolVLM prompts
 * already begin with `<|im_start|>` from the chat template, and the tokenizer has no post-processor.
 */
import { SmolVLMError } from "../errors.js";

/** The tile grid of one image; rows = cols = 0 means a single tile (no splitting). */
export interface ImageGrid {
  rows: number;
  cols: number;
}

export interface ExpandOptions {
  /** `<image>` tokens per tile (processor_config.json image_seq_len). */
  imageSeqLen: number;
  imageToken?: string;
  fakeImageToken?: string;
  globalImageToken?: string;
}

export const IMAGE_TOKEN = "<image>";
export const FAKE_IMAGE_TOKEN = "<fake_token_around_image>";
export const GLOBAL_IMAGE_TOKEN = "<global-img>";

function tokens(opts: ExpandOptions): { image: string; fake: string; global: string; seq: number } {
  const seq = opts.imageSeqLen;
  if (!Number.isInteger(seq) || seq < 1) {
    throw new SmolVLMError("bad_config", `image_seq_len must be a positive integer, got ${seq}`);
  }
  return {
    image: opts.imageToken ?? IMAGE_TOKEN,
    fake: opts.fakeImageToken ?? FAKE_IMAGE_TOKEN,
    global: opts.globalImageToken ?? GLOBAL_IMAGE_TOKEN,
    seq,
  };
}

function checkGrid(g: ImageGrid, index: number): void {
  const ok = (n: number): boolean => Number.isInteger(n) && n >= 0;
  if (!ok(g.rows) || !ok(g.cols)) {
    throw new SmolVLMError("bad_request", `image ${index + 1}: rows and cols must be integers >= 0, got ${g.rows}x${g.cols}`);
  }
}

/**
 * The reference's string for one image. Split form: each tile is the fake token, `<row_r_col_c>`
 * and the image tokens; each row ends in a newline; then a blank line and the global image
 * wrapped in fake tokens. Single-tile form: only the wrapped global image.
 */
export function imagePromptString(grid: ImageGrid, opts: ExpandOptions): string {
  const t = tokens(opts);
  const run = t.image.repeat(t.seq);
  const globalBlock = `${t.fake}${t.global}${run}${t.fake}`;
  if (grid.rows === 0 && grid.cols === 0) return globalBlock;
  let s = "";
  for (let r = 1; r <= grid.rows; r++) {
    for (let c = 1; c <= grid.cols; c++) s += `${t.fake}<row_${r}_col_${c}>${run}`;
    s += "\n";
  }
  return `${s}\n${globalBlock}`;
}

/** How many image tokens (the positions the vision features fill) an image with this grid takes. */
export function imageTokenCount(grid: ImageGrid, imageSeqLen: number): number {
  return imageSeqLen * (grid.rows === 0 && grid.cols === 0 ? 1 : grid.rows * grid.cols + 1);
}

/**
 * Replaces the i-th `<image>` of `prompt` with the expansion for `grids[i]`.
 * The number of markers must equal the number of images (SmolVLMError "bad_request" otherwise).
 */
export function expandImageTokens(prompt: string, grids: readonly ImageGrid[], opts: ExpandOptions): string {
  const t = tokens(opts);
  const parts = prompt.split(t.image);
  const markers = parts.length - 1;
  if (markers !== grids.length) {
    throw new SmolVLMError(
      "bad_request",
      `the prompt has ${markers} ${t.image} marker${markers === 1 ? "" : "s"} but ${grids.length} ` +
        `image${grids.length === 1 ? " was" : "s were"} given; each image needs exactly one marker`,
    );
  }
  grids.forEach(checkGrid);
  let out = parts[0]!;
  grids.forEach((g, i) => {
    out += imagePromptString(g, opts) + parts[i + 1]!;
  });
  return out;
}
