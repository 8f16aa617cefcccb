/**
 * The whole Idefics3 model: vision encoder -> connector -> image tokens merged into the text
 * embeddings at the `<image>` positions -> text decoder.
 */
import type { ModelConfig } from "../io/config.js";
import type { WeightStore } from "../io/checkpoint.js";
import type { KVDType } from "./kv-cache.js";
import type { Kernels } from "../backend/kernels.js";
import { SmolVLMError } from "../errors.js";
import { TextDecoder } from "./text-decoder.js";
import { VisionEncoder } from "./vision-encoder.js";
import { Connector } from "./connector.js";
import type { KVCache } from "./kv-cache.js";

/** Pixel values of the tiles of one or more images, [tiles, channels, size, size]. */
export interface TileBatch {
  data: Float32Array;
  tiles: number;
  size: number;
}

export class Idefics3Model {
  readonly config: ModelConfig;
  readonly text: TextDecoder;
  readonly vision: VisionEncoder;
  readonly connector: Connector;

  /** `kvDtype`: the KV cache's element type (bf16 in the speed modes). */
  constructor(store: WeightStore, config: ModelConfig, kernels: Kernels, options: { kvDtype?: KVDType } = {}) {
    this.config = config;
    this.text = new TextDecoder(store, config.text, config.tieWordEmbeddings, kernels, options.kvDtype);
    this.vision = new VisionEncoder(store, config.vision, kernels);
    this.connector = new Connector(store, config.vision.hiddenSize, config.text.hiddenSize, config.scaleFactor, kernels);
  }

  get imageTokensPerTile(): number {
    return (this.vision.patchesPerSide / this.config.scaleFactor) ** 2;
  }

  /** Image features for every tile, in order: [tiles * imageTokensPerTile, textHidden]. */
  encodeImages(batch: TileBatch, onTile?: (done: number, total: number) => void): Float32Array {
    const perTile = this.imageTokensPerTile * this.config.text.hiddenSize;
    const tileValues = this.config.vision.numChannels * batch.size * batch.size;
    const out = new Float32Array(batch.tiles * perTile);
    for (let t = 0; t < batch.tiles; t++) {
      const patches = this.vision.encodeTile(batch.data.subarray(t * tileValues, (t + 1) * tileValues), batch.size);
      out.set(this.connector.project(patches, this.vision.patchesPerSide), t * perTile);
      onTile?.(t + 1, batch.tiles);
    }
    return out;
  }

  /**
   * Gives back the memory pages of the vision encoder's and connector's mapped weights, for when
   * no image is waiting to be encoded (see VisionEncoder.releaseWeights). Returns the bytes.
   */
  releaseVisionWeights(): number {
    return this.vision.releaseWeights() + this.connector.releaseWeights();
  }

  /** `<image>` tokens among ids[0..end). */
  countImageSlots(ids: readonly number[], end = ids.length): number {
    const imageId = this.config.imageTokenId;
    let n = 0;
    for (let i = 0; i < end; i++) if (ids[i] === imageId) n++;
    return n;
  }

  /**
   * Token embeddings for `ids` (a whole prompt or a chunk of one), with the rows at `<image>`
   * tokens replaced, in order, by image feature rows starting at row `firstFeature`.
   */
  embedWithImages(ids: readonly number[], imageFeatures: Float32Array | null, firstFeature = 0): Float32Array {
    const h = this.config.text.hiddenSize;
    const imageId = this.config.imageTokenId;
    const embeds = this.text.embed(ids);
    let next = firstFeature;
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] !== imageId) continue;
      if (!imageFeatures || next < 0 || (next + 1) * h > imageFeatures.length) {
        throw new RangeError("the prompt has more <image> tokens than the images give features for");
      }
      embeds.set(imageFeatures.subarray(next * h, (next + 1) * h), i * h);
      next++;
    }
    return embeds;
  }

  /** Input embeddings for a whole prompt, whose `<image>` tokens must match the features exactly. */
  embedPrompt(ids: readonly number[], imageFeatures: Float32Array | null): Float32Array {
    const slots = this.countImageSlots(ids);
    const available = imageFeatures ? imageFeatures.length / this.config.text.hiddenSize : 0;
    if (slots !== available) {
      throw new SmolVLMError("bad_request", `the prompt has ${slots} <image> tokens but the images give ${available} image features`);
    }
    return this.embedWithImages(ids, imageFeatures);
  }

  /** Runs new positions through the decoder; see TextDecoder.forward. */
  forward(embeds: Float32Array, rows: number, cache: KVCache, allLogits = false): Float32Array {
    return this.text.forward(embeds, rows, cache, allLogits);
  }
}
