/**
 * The generation engine: one loop that advances every active sequence together. Each iteration
 * does one unit of slow work for one sequence (a vision tile, or a prefill chunk) in the same
 * batched decoder pass as one decode step of every sequence already generating, so a new image
 * request never freezes the others' output, and concurrent decode steps share each weight read.
 *
 * The loop yields to the event loop between iterations; it is synchronous arithmetic otherwise,
 * so servers run it in a worker thread.
 */
import { createHash } from "node:crypto";
import type { Idefics3Model } from "../model/idefics3.js";
import type { KVCache } from "../model/kv-cache.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { Sampler, type SamplingOptions } from "./sampler.js";
import { TextStream } from "./text-stream.js";
import { StopStringFilter } from "./stop-strings.js";
import { PrefixCache } from "./prefix-cache.js";

export type FinishReason = "stop" | "length" | "abort";

/** What the engine needs of a request: the expanded prompt's ids and its images' tiles. */
export interface EngineInput {
  inputIds: number[];
  /** Tiles of every image, in prompt order, with how many tiles each image has. */
  tiles: { data: Float32Array; count: number; size: number; perImage: number[] } | null;
}

export interface EngineOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  eosTokenIds: readonly number[];
  ignoreEos: boolean;
  stop: readonly string[];
  signal?: AbortSignal;
  returnPromptLogits: boolean;
}

export interface SequenceTimings {
  vision_ms: number;
  prefill_ms: number;
  /** Positions taken from the prefix cache instead of being prefilled. */
  cached_tokens: number;
  first_token_at: number;
  last_token_at: number;
}

export interface SequenceResult {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  promptLogits?: Float32Array;
  timings: SequenceTimings;
}

export interface SequenceListener {
  onText(delta: string): void;
  onDone(result: SequenceResult): void;
  onError(error: unknown): void;
}

export interface EngineConfig {
  /** Sequences decoded together at most; further requests wait. */
  maxBatch: number;
  /** Prompt positions prefilled per iteration (interleaved with the others' decode steps). */
  prefillChunk: number;
  /** Bytes of KV cache kept for prompt reuse across requests (0 disables). */
  prefixCacheBytes: number;
}

export const DEFAULT_ENGINE_CONFIG: EngineConfig = { maxBatch: 8, prefillChunk: 512, prefixCacheBytes: 512 * 1024 * 1024 };

type Phase = "vision" | "prefill" | "decode" | "done";

class Sequence {
  phase: Phase = "vision";
  cache!: KVCache;
  /** Prompt positions already in the cache. */
  prefilled = 0;
  /** Image features for the prompt's `<image>` slots from `firstSlot` on. */
  features: Float32Array | null = null;
  firstSlot = 0;
  nextTile = 0;
  logits: Float32Array | null = null;
  readonly generated: number[] = [];
  readonly context: number[];
  readonly sampler: Sampler;
  readonly text: TextStream;
  readonly stops: StopStringFilter;
  output = "";
  promptLogits: Float32Array | undefined;
  readonly timings: SequenceTimings = { vision_ms: 0, prefill_ms: 0, cached_tokens: 0, first_token_at: 0, last_token_at: 0 };
  /** The prompt's key for the prefix cache (image slots replaced by image-content ids). */
  key: number[] = [];

  /** The prompt's tiles until the vision encoder has consumed them (then released). */
  tiles: EngineInput["tiles"];
  readonly inputIds: number[];

  constructor(input: EngineInput, readonly options: EngineOptions, readonly listener: SequenceListener, tokenizer: Tokenizer) {
    this.inputIds = input.inputIds;
    this.tiles = input.tiles;
    this.context = [...input.inputIds];
    this.sampler = new Sampler(options.sampling);
    this.text = new TextStream(tokenizer);
    this.stops = new StopStringFilter(options.stop);
  }

  get promptLength(): number {
    return this.inputIds.length;
  }
}

const now = () => performance.now();
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Engine {
  readonly config: EngineConfig;
  readonly prefixCache: PrefixCache;
  private readonly waiting: Sequence[] = [];
  private readonly active: Sequence[] = [];
  private logitsBuffer = new Float32Array(0);
  private running = false;

  constructor(private readonly model: Idefics3Model, private readonly tokenizer: Tokenizer, config: Partial<EngineConfig> = {}) {
    this.config = { ...DEFAULT_ENGINE_CONFIG, ...config };
    this.prefixCache = new PrefixCache(this.config.prefixCacheBytes);
  }

  /** Sequences admitted and generating, and those waiting for a slot. */
  get load(): { active: number; waiting: number } {
    return { active: this.active.length, waiting: this.waiting.length };
  }

  submit(input: EngineInput, options: EngineOptions, listener: SequenceListener): void {
    let seq: Sequence;
    try {
      seq = new Sequence(input, options, listener, this.tokenizer);
    } catch (e) {
      listener.onError(e);
      return;
    }
    this.waiting.push(seq);
    if (!this.running) {
      this.running = true;
      void this.loop();
    }
  }

  private async loop(): Promise<void> {
    try {
      while (this.waiting.length > 0 || this.active.length > 0) {
        this.admit();
        this.step();
        await yieldToEventLoop();
      }
    } finally {
      this.running = false;
    }
  }

  private admit(): void {
    while (this.active.length < this.config.maxBatch && this.waiting.length > 0) {
      const seq = this.waiting.shift()!;
      if (seq.options.signal?.aborted) {
        this.finish(seq, "abort");
        continue;
      }
      this.guard(seq, () => this.start(seq));
      if (seq.phase !== "done") this.active.push(seq);
    }
  }

  /** Reuses a cached prefix if one matches, and decides which tiles still need encoding. */
  private start(seq: Sequence): void {
    seq.key = this.promptKey(seq.inputIds, seq.tiles);
    // Allocating the whole sequence's cache at once avoids repeated grow-and-copy (and its peak).
    const capacity = Math.min(seq.promptLength + seq.options.maxNewTokens, this.model.config.text.maxPositionEmbeddings);
    const hit = this.prefixCache.lookup(seq.key, () => this.model.text.newCache(capacity));
    seq.cache = hit?.cache ?? this.model.text.newCache(capacity);
    seq.prefilled = hit?.length ?? 0;
    seq.timings.cached_tokens = seq.prefilled;
    const slotsBefore = this.model.countImageSlots(seq.inputIds, seq.prefilled);
    const perTile = this.model.imageTokensPerTile;
    seq.nextTile = Math.floor(slotsBefore / perTile);
    seq.firstSlot = seq.nextTile * perTile;
    const tiles = seq.tiles?.count ?? 0;
    seq.features = new Float32Array(Math.max(0, tiles - seq.nextTile) * perTile * this.model.config.text.hiddenSize);
    seq.phase = seq.nextTile < tiles ? "vision" : "prefill";
    if (seq.phase === "prefill") seq.tiles = null;
  }

  /** One iteration: one tile or prefill chunk, batched with one decode step of every decoder. */
  private step(): void {
    for (const seq of [...this.active]) if (seq.options.signal?.aborted) this.finish(seq, "abort");
    const encoding = this.active.find((s) => s.phase === "vision");
    if (encoding) this.guard(encoding, () => this.encodeTile(encoding));

    const decoding = this.active.filter((s) => s.phase === "decode");
    for (const seq of decoding) this.guard(seq, () => this.sample(seq));
    const feeding = decoding.filter((s) => s.phase === "decode");
    const prefilling = this.active.find((s) => s.phase === "prefill");
    if (feeding.length === 0 && !prefilling) return;

    const h = this.model.config.text.hiddenSize;
    const chunk = prefilling ? Math.min(this.config.prefillChunk, prefilling.promptLength - prefilling.prefilled) : 0;
    const rows = feeding.length + chunk;
    const embeds = new Float32Array(rows * h);
    feeding.forEach((s, i) => embeds.set(this.model.text.embed([s.generated[s.generated.length - 1]!]), i * h));
    const segments = feeding.map((s) => ({ cache: s.cache, rows: 1 }));
    const t0 = now();
    if (prefilling) {
      try {
        embeds.set(this.prefillEmbeds(prefilling, chunk), feeding.length * h);
        segments.push({ cache: prefilling.cache, rows: chunk });
      } catch (e) {
        this.fail(prefilling, e);
      }
    }
    let logits: Float32Array;
    try {
      logits = this.model.text.forwardSegments(embeds.subarray(0, segments.reduce((n, s) => n + s.rows, 0) * h), segments, false, this.logitsFor(segments.length));
    } catch (e) {
      for (const s of [...feeding, ...(prefilling ? [prefilling] : [])]) this.fail(s, e);
      return;
    }
    const vocab = this.model.config.text.vocabSize;
    // Views, not copies, into the reused logits array: each is consumed by sample() at the start of
    // the next step, before the next pass overwrites it; a finished prefill copies its row.
    feeding.forEach((s, i) => (s.logits = logits.subarray(i * vocab, (i + 1) * vocab)));
    if (prefilling && prefilling.phase === "prefill") {
      prefilling.timings.prefill_ms += now() - t0;
      prefilling.prefilled += chunk;
      if (prefilling.prefilled === prefilling.promptLength) {
        prefilling.logits = logits.slice(feeding.length * vocab, (feeding.length + 1) * vocab);
        if (prefilling.options.returnPromptLogits) prefilling.promptLogits = prefilling.logits.slice();
        prefilling.phase = "decode";
        prefilling.features = null;
      }
    }
  }

  /**
   * The logits array of a pass with `rows` outputs, one array reused from step to step rather than
   * a new 49,280-float array per step: bf16 decoding 1.01-1.02x faster, q4 unchanged (BENCHMARKS.md
   * section 18). The lm_head alone into fresh memory measured 0.6 ms slower; in the loop the
   * allocator mostly recycles the pages.
   */
  private logitsFor(rows: number): Float32Array {
    const n = rows * this.model.config.text.vocabSize;
    if (this.logitsBuffer.length < n) this.logitsBuffer = new Float32Array(n);
    return this.logitsBuffer.subarray(0, n);
  }

  private encodeTile(seq: Sequence): void {
    const t0 = now();
    const tiles = seq.tiles!;
    const tileValues = 3 * tiles.size * tiles.size;
    const t = seq.nextTile;
    const features = this.model.encodeImages({ data: tiles.data.subarray(t * tileValues, (t + 1) * tileValues), tiles: 1, size: tiles.size });
    seq.features!.set(features, (t * this.model.imageTokensPerTile - seq.firstSlot) * this.model.config.text.hiddenSize);
    seq.nextTile++;
    if (seq.nextTile === tiles.count) {
      seq.phase = "prefill";
      seq.tiles = null; // pixel values are no longer needed: let them go before the prefill
      // Nor, until the next image, the encoder's weights: their pages leave the process's
      // memory (the page cache keeps them), 190 MB at the 500M geometry, before the prefill maps
      // the text decoder's.
      if (!this.active.some((s) => s.phase === "vision")) this.model.releaseVisionWeights();
    }
    seq.timings.vision_ms += now() - t0;
  }

  /** Embeddings of the next chunk of prompt positions, image features in their slots. */
  private prefillEmbeds(seq: Sequence, chunk: number): Float32Array {
    const ids = seq.inputIds.slice(seq.prefilled, seq.prefilled + chunk);
    const slot = this.model.countImageSlots(seq.inputIds, seq.prefilled);
    return this.model.embedWithImages(ids, seq.features, slot - seq.firstSlot);
  }

  /** Picks the next token from the last logits and streams its text. */
  private sample(seq: Sequence): void {
    const o = seq.options;
    if (seq.generated.length >= o.maxNewTokens) return this.finish(seq, "length");
    const token = seq.sampler.pick(seq.logits!, o.ignoreEos ? o.eosTokenIds : [], seq.context);
    seq.logits = null;
    const t = now();
    if (seq.generated.length === 0) seq.timings.first_token_at = t;
    seq.timings.last_token_at = t;
    if (!o.ignoreEos && o.eosTokenIds.includes(token)) return this.finish(seq, "stop");
    seq.generated.push(token);
    seq.context.push(token);
    this.emit(seq, seq.stops.push(seq.text.push(token)));
    if (seq.stops.hasStopped) return this.finish(seq, "stop");
    if (seq.generated.length >= o.maxNewTokens) this.finish(seq, "length");
  }

  private emit(seq: Sequence, delta: string): void {
    if (!delta) return;
    seq.output += delta;
    try {
      seq.listener.onText(delta);
    } catch {
      // A listener that throws (a closed connection) must not stop the engine.
    }
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    if (seq.phase === "done") return;
    this.emit(seq, seq.stops.push(seq.text.flush()));
    this.emit(seq, seq.stops.flush());
    seq.phase = "done";
    this.remove(seq);
    if (seq.cache && seq.cache.length > 0 && seq.prefilled === seq.promptLength) {
      const key = [...seq.key, ...seq.generated].slice(0, seq.cache.length);
      this.prefixCache.store(key, seq.cache);
    }
    seq.features = null;
    const result: SequenceResult = { text: seq.output, tokenIds: seq.generated, finishReason: reason, promptLogits: seq.promptLogits, timings: seq.timings };
    try {
      seq.listener.onDone(result);
    } catch {
      // as in emit
    }
  }

  private fail(seq: Sequence, error: unknown): void {
    if (seq.phase === "done") return;
    seq.phase = "done";
    this.remove(seq);
    try {
      seq.listener.onError(error);
    } catch {
      // as in emit
    }
  }

  /** Runs one sequence's work; an error fails that sequence only. */
  private guard(seq: Sequence, work: () => void): void {
    try {
      work();
    } catch (e) {
      this.fail(seq, e);
    }
  }

  private remove(seq: Sequence): void {
    const i = this.active.indexOf(seq);
    if (i !== -1) this.active.splice(i, 1);
    const w = this.waiting.indexOf(seq);
    if (w !== -1) this.waiting.splice(w, 1);
  }

  /** Prompt ids with each image slot replaced by a negative id of that image's pixel content. */
  private promptKey(inputIds: readonly number[], tiles: EngineInput["tiles"]): number[] {
    const key = [...inputIds];
    if (!tiles) return key;
    const imageId = this.model.config.imageTokenId;
    const tileValues = 3 * tiles.size * tiles.size;
    const perTile = this.model.imageTokensPerTile;
    const slotOwner: number[] = [];
    let tile = 0;
    for (const count of tiles.perImage) {
      const pixels = tiles.data.subarray(tile * tileValues, (tile + count) * tileValues);
      // 48 bits of the content hash, negative so it can never equal a real token id.
      const id = -1 - parseInt(createHash("sha256").update(new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength)).digest("hex").slice(0, 12), 16);
      for (let s = 0; s < count * perTile; s++) slotOwner.push(id);
      tile += count;
    }
    let slot = 0;
    for (let i = 0; i < key.length; i++) if (key[i] === imageId) key[i] = slotOwner[slot++] ?? key[i]!;
    return key;
  }
}
