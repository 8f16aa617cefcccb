/**
 * The whole Idefics3 model: vision encoder -> connector -> image tokens merged into the text
 * embeddings at the `<image>` positions -> text decoder.
 */
import type { ModelConfig } from "../io/config.js";
import type { WeightStore } from "../io/checkpoint.js";
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

  constructor(store: WeightStore, config: ModelConfig, kernels: Kernels) {
    this.config = config;
    this.text = new TextDecoder(store, config.text, config.tieWordEmbeddings, kernels);
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
   * Input embeddings for a prompt: token embeddings, with the rows at `<image>` tokens replaced,
   * in order, by the image features.
   */
  embedPrompt(ids: readonly number[], imageFeatures: Float32Array | null): Float32Array {
    const h = this.config.text.hiddenSize;
    const imageId = this.config.imageTokenId;
    const embeds = this.text.embed(ids);
    const slots = ids.reduce((n, id) => (id === imageId ? n + 1 : n), 0);
    const available = imageFeatures ? imageFeatures.length / h : 0;
    if (slots !== available) {
      throw new SmolVLMError("bad_request", `the prompt has ${slots} <image> tokens but the images give ${available} image features`);
    }
    let next = 0;
    for (let i = 0; i < ids.length && imageFeatures; i++) {
      if (ids[i] !== imageId) continue;
      embeds.set(imageFeatures.subarray(next * h, (next + 1) * h), i * h);
      next++;
    }
    return embeds;
  }

  /** Runs new positions through the decoder; see TextDecoder.forward. */
  forward(embeds: Float32Array, rows: number, cache: KVCache, allLogits = false): Float32Array {
    return this.text.forward(embeds, rows, cache, allLogits);
  }
}
