/**
 * The SmolLM2 / Llama text decoder: token embeddings, pre-norm blocks of grouped-query attention
 * with rotary positions and a SiLU-gated MLP, a final RMSNorm and the language-model head.
 */
import type { TextConfig } from "../io/config.js";
import type { WeightStore } from "../io/checkpoint.js";
import type { Tensor } from "../io/safetensors.js";
import type { Kernels, LinearWeight } from "../backend/kernels.js";
import { toFloat32, widenRows } from "../backend/dtype.js";
import { releasePages } from "../backend/native-kernels.js";
import { RotaryTable } from "./rope.js";
import { KVCache, type KVDType } from "./kv-cache.js";

interface DecoderLayer {
  inputNorm: Float32Array;
  q: LinearWeight;
  k: LinearWeight;
  v: LinearWeight;
  o: LinearWeight;
  postAttentionNorm: Float32Array;
  gate: LinearWeight;
  up: LinearWeight;
  down: LinearWeight;
}

const PREFIX = "model.text_model";

/** mapFile's unit of mapping: a 2 MiB page. */
const HUGE_PAGE = 2 * 2 ** 20;
/** Embedding-table blocks that lookups may keep mapped (16 MiB) before the table's pages are given back. */
const EMBEDDING_BLOCKS_KEPT = 8;

/** Passes of at most this many rows (decode steps, small batches) keep a buffer set per row count. */
const STEP_BUFFER_MAX_ROWS = 16;

/**
 * The intermediate arrays of one layer for a pass of `rows` rows. Every layer overwrites them in
 * turn, and later passes reuse them, so a pass allocates almost nothing: with a new array per
 * kernel call, a q4 decode step spent about a tenth of its time allocating (Kernels, `out`), and a
 * 512-row prefill chunk allocated about 900 MB at the 500M geometry.
 */
class LayerBuffers {
  private constructor(
    readonly rows: number,
    readonly normed: Float32Array,
    readonly q: Float32Array,
    readonly k: Float32Array,
    readonly v: Float32Array,
    readonly attention: Float32Array,
    readonly hidden: Float32Array,
    readonly gate: Float32Array,
    readonly up: Float32Array,
    readonly act: Float32Array,
  ) {}

  static allocate(rows: number, c: TextConfig): LayerBuffers {
    const f = (width: number): Float32Array => new Float32Array(rows * width);
    const [h, q, kv, ffn] = [c.hiddenSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.intermediateSize];
    return new LayerBuffers(rows, f(h), f(q), f(kv), f(kv), f(q), f(h), f(ffn), f(ffn), f(ffn));
  }

  /** The first `rows` rows of every array (rows <= this.rows). */
  view(rows: number): LayerBuffers {
    const part = (a: Float32Array): Float32Array => a.subarray(0, (a.length / this.rows) * rows);
    return new LayerBuffers(rows, part(this.normed), part(this.q), part(this.k), part(this.v), part(this.attention), part(this.hidden), part(this.gate), part(this.up), part(this.act));
  }
}

/** A linear weight in the layout the kernels decode fastest from (Kernels.packForDecoding). */
type Linear = (name: string, shape: readonly [number, number]) => LinearWeight;

function loadLayer(store: WeightStore, linear: Linear, c: TextConfig, i: number): DecoderLayer {
  const p = `${PREFIX}.layers.${i}`;
  const h = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  return {
    inputNorm: toFloat32(store.get(`${p}.input_layernorm.weight`, [h])),
    q: linear(`${p}.self_attn.q_proj.weight`, [qDim, h]),
    k: linear(`${p}.self_attn.k_proj.weight`, [kvDim, h]),
    v: linear(`${p}.self_attn.v_proj.weight`, [kvDim, h]),
    o: linear(`${p}.self_attn.o_proj.weight`, [h, qDim]),
    postAttentionNorm: toFloat32(store.get(`${p}.post_attention_layernorm.weight`, [h])),
    gate: linear(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, h]),
    up: linear(`${p}.mlp.up_proj.weight`, [c.intermediateSize, h]),
    down: linear(`${p}.mlp.down_proj.weight`, [h, c.intermediateSize]),
  };
}

export class TextDecoder {
  readonly config: TextConfig;
  private readonly kernels: Kernels;
  private readonly embedTokens: Tensor;
  /** Whether embedding lookups are the table's only reader (an untied or quantized lm_head). */
  private readonly sparseEmbeddings: boolean;
  private readonly layers: DecoderLayer[];
  private readonly finalNorm: Float32Array;
  private readonly lmHead: LinearWeight;
  private readonly rotary: RotaryTable;
  /** Element type of the caches this decoder makes. */
  readonly kvDtype: KVDType;
  private readonly buffers = new Map<number, LayerBuffers>();
  /** The buffers of the largest pass above STEP_BUFFER_MAX_ROWS so far, viewed for smaller ones. */
  private largeBuffers: LayerBuffers | undefined;
  /** The 2 MiB blocks of the embedding table read since its pages were last given back. */
  private readonly embeddingBlocks = new Set<number>();

  constructor(store: WeightStore, config: TextConfig, tieWordEmbeddings: boolean, kernels: Kernels, kvDtype: KVDType = "F32") {
    this.config = config;
    this.kernels = kernels;
    this.kvDtype = kvDtype;
    const h = config.hiddenSize;
    this.embedTokens = store.get(`${PREFIX}.embed_tokens.weight`, [config.vocabSize, h]);
    // Every linear here is read once per decoded token: in the kernels' decoding layout.
    const forDecoding = (w: LinearWeight): LinearWeight => kernels.packForDecoding?.(w) ?? w;
    const linear: Linear = (name, shape) => forDecoding(store.getLinear(name, shape));
    this.layers = Array.from({ length: config.numLayers }, (_, i) => loadLayer(store, linear, config, i));
    this.finalNorm = toFloat32(store.get(`${PREFIX}.norm.weight`, [h]));
    // A checkpoint with tied embeddings has no lm_head tensor (a quantized one stores its own
    // quantized copy); some untied exports omit it too.
    const untied = !tieWordEmbeddings && store.has("lm_head.weight");
    this.lmHead = untied ? linear("lm_head.weight", [config.vocabSize, h]) : forDecoding(store.getTiedLinear("lm_head.weight", [config.vocabSize, h], this.embedTokens));
    // Unless the lm_head streams the whole table every token, lookups read a few rows, and give
    // the table's pages back now and then (releaseEmbeddingBlocks).
    this.sparseEmbeddings = this.lmHead !== this.embedTokens;
    this.rotary = new RotaryTable(config.headDim, config.rope);
  }

  /** An empty cache; `capacity` positions are allocated up front (it grows beyond if needed). */
  newCache(capacity = 256): KVCache {
    return new KVCache(this.config.numLayers, this.config.numKvHeads, this.config.headDim, Math.max(1, capacity), this.kvDtype, this.kernels.roundRowsToBf16);
  }

  /** Embedding rows for the given token ids: [ids.length, hidden]. */
  embed(ids: readonly number[]): Float32Array {
    const h = this.config.hiddenSize;
    const out = new Float32Array(ids.length * h);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.config.vocabSize})`);
      widenRows(this.embedTokens, id, 1, out.subarray(i * h, (i + 1) * h));
    }
    if (this.sparseEmbeddings) this.releaseEmbeddingBlocks(ids);
    return out;
  }

  /**
   * Where mapFile maps the file 2 MiB at a time, each row read makes its whole block resident (50
   * MiB for one short prompt at the 500M geometry): the mapped table's pages are given back once
   * lookups have touched more than EMBEDDING_BLOCKS_KEPT blocks since the last time. Not after
   * every lookup: giving them back costs a decode step 0.1-0.15 ms (a TLB shootdown across the
   * kernels' threads) and the next lookup a fault, 0.2-0.25 ms of a 5 ms q4 step in all.
   */
  private releaseEmbeddingBlocks(ids: readonly number[]): void {
    const data = this.embedTokens.data;
    const rowBytes = this.config.hiddenSize * data.BYTES_PER_ELEMENT;
    for (const id of ids) {
      const first = data.byteOffset + id * rowBytes;
      this.embeddingBlocks.add(Math.floor(first / HUGE_PAGE));
      this.embeddingBlocks.add(Math.floor((first + rowBytes - 1) / HUGE_PAGE));
    }
    if (this.embeddingBlocks.size <= EMBEDDING_BLOCKS_KEPT) return;
    releasePages(data);
    this.embeddingBlocks.clear();
  }

  /**
   * Runs `rows` new positions (input embeddings [rows, hidden]) after the `cache.length` already
   * cached, appends their keys and values, and returns the logits of the last position, or of
   * every position when `allLogits` is set ([rows or 1, vocab]).
   */
  forward(embeds: Float32Array, rows: number, cache: KVCache, allLogits = false): Float32Array {
    return this.forwardSegments(embeds, [{ cache, rows }], allLogits);
  }

  /**
   * Runs several sequences in one pass: the rows of `embeds` are split into segments, each the
   * next `rows` positions of its own cache (a prefill chunk, or one decode step). The linear
   * layers see every row at once, so each weight is read once for the whole batch; attention is
   * per segment. Returns the last row's logits of each segment ([segments, vocab]), or every
   * row's logits when `allLogits` is set ([rows, vocab]), in `logitsOut` if given (its size).
   */
  forwardSegments(embeds: Float32Array, segments: readonly Segment[], allLogits = false, logitsOut?: Float32Array): Float32Array {
    const k = this.kernels;
    const h = this.config.hiddenSize;
    const rows = segments.reduce((n, s) => n + s.rows, 0);
    const positions: number[] = [];
    for (const s of segments) for (let i = 0; i < s.rows; i++) positions.push(s.cache.length + i);
    const { cos, sin } = this.rotary.tablesFor(positions);
    const x = embeds.slice(0, rows * h);
    const b = this.layerBuffers(rows);
    const eps = this.config.rmsNormEps;
    for (let l = 0; l < this.layers.length; l++) {
      const layer = this.layers[l]!;
      const attn = this.attention(layer, l, k.rmsNorm(x, rows, layer.inputNorm, eps, b.normed), segments, cos, sin, b);
      k.addInPlace(x, attn);
      const normed = k.rmsNorm(x, rows, layer.postAttentionNorm, eps, b.normed);
      const [gate, up] = k.linearMany(normed, rows, [layer.gate, layer.up], undefined, [b.gate, b.up]);
      const act = k.siluMul(gate!, up!, b.act);
      k.addInPlace(x, k.linear(act, rows, layer.down, null, b.hidden));
    }
    for (const s of segments) s.cache.length += s.rows;
    const tail = allLogits ? x : lastRows(x, segments, h);
    const tailRows = allLogits ? rows : segments.length;
    return k.linear(k.rmsNorm(tail, tailRows, this.finalNorm, eps), tailRows, this.lmHead, null, logitsOut);
  }

  /**
   * Reused buffers for a pass of `rows` rows: a set per row count for decode steps and small
   * batches, and for larger passes (prefill chunks) views of one set sized for the largest so far.
   */
  private layerBuffers(rows: number): LayerBuffers {
    if (rows <= STEP_BUFFER_MAX_ROWS) {
      let b = this.buffers.get(rows);
      if (!b) this.buffers.set(rows, (b = LayerBuffers.allocate(rows, this.config)));
      return b;
    }
    if (!this.largeBuffers || this.largeBuffers.rows < rows) this.largeBuffers = LayerBuffers.allocate(rows, this.config);
    return this.largeBuffers.rows === rows ? this.largeBuffers : this.largeBuffers.view(rows);
  }

  private attention(
    layer: DecoderLayer, index: number, x: Float32Array, segments: readonly Segment[], cos: Float32Array, sin: Float32Array, b: LayerBuffers,
  ): Float32Array {
    const c = this.config;
    const k = this.kernels;
    const rows = x.length / c.hiddenSize;
    const [q, key, value] = k.linearMany(x, rows, [layer.q, layer.k, layer.v], undefined, [b.q, b.k, b.v]) as [Float32Array, Float32Array, Float32Array];
    k.rope(q, rows, c.numHeads, c.headDim, cos, sin);
    k.rope(key, rows, c.numKvHeads, c.headDim, cos, sin);
    const qStride = c.numHeads * c.headDim;
    const kvStride = c.numKvHeads * c.headDim;
    const out = b.attention;
    let row = 0;
    for (const s of segments) {
      const start = s.cache.length;
      s.cache.write(index, start, key.subarray(row * kvStride), value.subarray(row * kvStride), s.rows);
      const target = segments.length === 1 ? out : out.subarray(row * qStride, (row + s.rows) * qStride);
      const o = k.attention({
        out: target,
        q: q.subarray(row * qStride, (row + s.rows) * qStride),
        k: s.cache.layerKeys(index),
        v: s.cache.layerValues(index),
        seqQ: s.rows,
        seqK: start + s.rows,
        numHeads: c.numHeads,
        numKvHeads: c.numKvHeads,
        headDim: c.headDim,
        scale: 1 / Math.sqrt(c.headDim),
        causalOffset: start,
        ...s.cache.layout(),
      });
      if (o !== target) target.set(o); // from a wrapper that ignored `out`
      row += s.rows;
    }
    return k.linear(out, rows, layer.o, null, b.hidden);
  }
}

/** One sequence's share of a batched forward pass. */
export interface Segment {
  cache: KVCache;
  rows: number;
}

function lastRows(x: Float32Array, segments: readonly Segment[], h: number): Float32Array {
  const out = new Float32Array(segments.length * h);
  let row = 0;
  segments.forEach((s, i) => {
    row += s.rows;
    out.set(x.subarray((row - 1) * h, row * h), i * h);
  });
  return out;
}
