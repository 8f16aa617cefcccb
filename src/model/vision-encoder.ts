/**
 * The SigLIP vision encoder of Idefics3: a strided-convolution patch embedding, learned position
 * embeddings, pre-norm transformer blocks (bidirectional attention, GELU-tanh MLP) and a final
 * layer norm. Each tile is encoded on its own; the processor always hands over full square tiles,
 * so every patch is real and position ids are simply 0..patches-1.
 */
import type { VisionConfig } from "../io/config.js";
import type { WeightStore } from "../io/checkpoint.js";
import type { Tensor } from "../io/safetensors.js";
import type { Kernels, LinearWeight } from "../backend/kernels.js";
import { toFloat32 } from "../backend/dtype.js";
import { releaseWeightPages } from "../backend/native-kernels.js";

interface Linear {
  weight: LinearWeight;
  bias: Float32Array;
}

interface EncoderLayer {
  norm1: { weight: Float32Array; bias: Float32Array };
  q: Linear;
  k: Linear;
  v: Linear;
  out: Linear;
  norm2: { weight: Float32Array; bias: Float32Array };
  fc1: Linear;
  fc2: Linear;
}

const PREFIX = "model.vision_model";

/**
 * The intermediate arrays of one encoder layer for one tile. Every layer and every tile overwrites
 * them in turn: new arrays for each kernel call came to about 430 MB of allocation per 512x512
 * tile at the 500M geometry, and zeroing and first-touching them took over a tenth of a q4 tile.
 */
class TileBuffers {
  readonly normed: Float32Array;
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly attention: Float32Array;
  readonly projected: Float32Array;
  readonly hidden: Float32Array;

  constructor(patches: number, c: VisionConfig) {
    const f = (width: number): Float32Array => new Float32Array(patches * width);
    this.normed = f(c.hiddenSize);
    this.q = f(c.hiddenSize);
    this.k = f(c.hiddenSize);
    this.v = f(c.hiddenSize);
    this.attention = f(c.hiddenSize);
    this.projected = f(c.hiddenSize);
    this.hidden = f(c.intermediateSize);
  }
}

function linear(store: WeightStore, name: string, outDim: number, inDim: number): Linear {
  return { weight: store.getLinear(`${name}.weight`, [outDim, inDim]), bias: toFloat32(store.get(`${name}.bias`, [outDim])) };
}

function norm(store: WeightStore, name: string, dim: number): { weight: Float32Array; bias: Float32Array } {
  return { weight: toFloat32(store.get(`${name}.weight`, [dim])), bias: toFloat32(store.get(`${name}.bias`, [dim])) };
}

function loadLayer(store: WeightStore, c: VisionConfig, i: number): EncoderLayer {
  const p = `${PREFIX}.encoder.layers.${i}`;
  const h = c.hiddenSize;
  return {
    norm1: norm(store, `${p}.layer_norm1`, h),
    q: linear(store, `${p}.self_attn.q_proj`, h, h),
    k: linear(store, `${p}.self_attn.k_proj`, h, h),
    v: linear(store, `${p}.self_attn.v_proj`, h, h),
    out: linear(store, `${p}.self_attn.out_proj`, h, h),
    norm2: norm(store, `${p}.layer_norm2`, h),
    fc1: linear(store, `${p}.mlp.fc1`, c.intermediateSize, h),
    fc2: linear(store, `${p}.mlp.fc2`, h, c.intermediateSize),
  };
}

export class VisionEncoder {
  readonly config: VisionConfig;
  /** Patches per side of a tile (the remainder of imageSize / patchSize is dropped, as the convolution does). */
  readonly patchesPerSide: number;
  private readonly kernels: Kernels;
  /** A convolution, used as a linear layer over patches: it keeps its checkpoint dtype. */
  private readonly patchEmbedding: { weight: Tensor; bias: Float32Array };
  private readonly positionEmbedding: Float32Array;
  private readonly layers: EncoderLayer[];
  private readonly postNorm: { weight: Float32Array; bias: Float32Array };
  private buffers: TileBuffers | undefined;

  constructor(store: WeightStore, config: VisionConfig, kernels: Kernels) {
    this.config = config;
    this.kernels = kernels;
    const h = config.hiddenSize;
    const p = config.patchSize;
    this.patchesPerSide = Math.floor(config.imageSize / p);
    const patchWeight = store.get(`${PREFIX}.embeddings.patch_embedding.weight`, [h, config.numChannels, p, p]);
    // The convolution's kernel, flattened to [hidden, channels*p*p], is a plain linear layer over patches.
    this.patchEmbedding = {
      weight: { dtype: patchWeight.dtype, shape: [h, config.numChannels * p * p], data: patchWeight.data },
      bias: toFloat32(store.get(`${PREFIX}.embeddings.patch_embedding.bias`, [h])),
    };
    this.positionEmbedding = toFloat32(store.get(`${PREFIX}.embeddings.position_embedding.weight`, [this.patchesPerSide ** 2, h]));
    this.layers = Array.from({ length: config.numLayers }, (_, i) => loadLayer(store, config, i));
    this.postNorm = norm(store, `${PREFIX}.post_layernorm`, h);
  }

  /**
   * Gives back the memory pages of the weights that views of a mapped checkpoint hold (the page
   * cache keeps them; the next tile maps them again, 2 MiB at a time): between images, the
   * encoder's 190 MB at the 500M geometry need not count in the process's memory while the text
   * decoder works. Returns the bytes given back.
   */
  releaseWeights(): number {
    let released = releaseWeightPages(this.patchEmbedding.weight);
    for (const l of this.layers) for (const w of [l.q, l.k, l.v, l.out, l.fc1, l.fc2]) released += releaseWeightPages(w.weight);
    return released;
  }

  get patchesPerTile(): number {
    return this.patchesPerSide * this.patchesPerSide;
  }

  /** Encodes one tile given as [channels, size, size] float32; returns [patches, hidden]. */
  encodeTile(pixels: Float32Array, size: number): Float32Array {
    const k = this.kernels;
    const c = this.config;
    const n = this.patchesPerTile;
    const x = k.linear(this.patchify(pixels, size), n, this.patchEmbedding.weight, this.patchEmbedding.bias);
    k.addInPlace(x, this.positionEmbedding);
    const b = (this.buffers ??= new TileBuffers(n, c));
    for (const layer of this.layers) {
      k.addInPlace(x, this.attention(layer, k.layerNorm(x, n, layer.norm1.weight, layer.norm1.bias, c.layerNormEps, b.normed), b));
      const normed = k.layerNorm(x, n, layer.norm2.weight, layer.norm2.bias, c.layerNormEps, b.normed);
      const hidden = k.linear(normed, n, layer.fc1.weight, layer.fc1.bias, b.hidden);
      k.gelu(hidden, c.hiddenAct === "gelu_pytorch_tanh");
      k.addInPlace(x, k.linear(hidden, n, layer.fc2.weight, layer.fc2.bias, b.projected));
    }
    // A new array: the caller keeps the tile's patches while the buffers serve the next tile.
    return k.layerNorm(x, n, this.postNorm.weight, this.postNorm.bias, c.layerNormEps);
  }

  /** Gathers each patch as a row [channel][ky][kx], the order of the convolution kernel. */
  private patchify(pixels: Float32Array, size: number): Float32Array {
    const { patchSize: p, numChannels: ch } = this.config;
    const side = this.patchesPerSide;
    if (pixels.length !== ch * size * size || Math.floor(size / p) !== side) {
      throw new RangeError(`tile of ${pixels.length} values (size ${size}) does not fit the vision encoder (${ch}x${this.config.imageSize}x${this.config.imageSize})`);
    }
    const rowLen = ch * p * p;
    const out = new Float32Array(side * side * rowLen);
    // Each pixel row read once, front to back, its p-value runs going to side patches. Plain
    // loops: a subarray per run (49k per tile) cost more than the copying.
    for (let py = 0; py < side; py++) {
      for (let c = 0; c < ch; c++) {
        for (let ky = 0; ky < p; ky++) {
          let src = c * size * size + (py * p + ky) * size;
          for (let px = 0; px < side; px++) {
            let o = (py * side + px) * rowLen + (c * p + ky) * p;
            for (let kx = 0; kx < p; kx++) out[o++] = pixels[src++]!;
          }
        }
      }
    }
    return out;
  }

  private attention(layer: EncoderLayer, x: Float32Array, b: TileBuffers): Float32Array {
    const k = this.kernels;
    const n = this.patchesPerTile;
    const heads = this.config.numHeads;
    const headDim = this.config.hiddenSize / heads;
    // One call for the three projections of the same input: quantized weights quantize it once.
    const weights = [layer.q.weight, layer.k.weight, layer.v.weight];
    const [q, key, value] = k.linearMany(x, n, weights, [layer.q.bias, layer.k.bias, layer.v.bias], [b.q, b.k, b.v]);
    const out = k.attention({
      out: b.attention,
      q: q!,
      k: key!,
      v: value!,
      seqQ: n,
      seqK: n,
      numHeads: heads,
      numKvHeads: heads,
      headDim,
      scale: 1 / Math.sqrt(headDim),
      causalOffset: null,
    });
    return k.linear(out, n, layer.out.weight, layer.out.bias, b.projected);
  }
}
