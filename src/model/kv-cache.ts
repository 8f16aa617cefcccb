/**
 * Keys and values of every layer for the positions seen so far. Storage grows geometrically, so
 * decoding appends without reallocating on every token.
 *
 * Float32, or bf16 (the speed modes: half the memory and half the bytes attention reads per
 * token; keys and values are rounded to nearest even as they are written, as PyTorch's bf16 cache).
 */
import { roundRowsToBf16 } from "../backend/dtype.js";
import type { RoundRowsToBf16 } from "../backend/kernels.js";

export type KVDType = "F32" | "BF16";

type Storage = Float32Array | Uint16Array;

/**
 * Each layer's keys (and values) are stored head-major, [numKvHeads][capacity][headDim]: one head's
 * positions are contiguous, so decoding, which reads every position of a head group, streams one
 * run of memory per group instead of a short slice every numKvHeads * headDim values (measured
 * about a third less attention time at 876-2000 positions: bench/micro.ts kv-layout, BENCHMARKS.md).
 * `layout()` gives the strides for AttentionParams.
 */
export class KVCache {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rowSize: number;
  readonly dtype: KVDType;
  private keys: Storage[];
  private values: Storage[];
  private capacity: number;
  /** Positions stored (equal for every layer once a forward pass completes). */
  length = 0;

  /** How bf16 writes round: the reference, or a backend's same arithmetic (Kernels.roundRowsToBf16). */
  private readonly round: RoundRowsToBf16;

  constructor(numLayers: number, numKvHeads: number, headDim: number, initialCapacity = 256, dtype: KVDType = "F32", round: RoundRowsToBf16 = roundRowsToBf16) {
    this.round = round;
    this.numLayers = numLayers;
    this.numKvHeads = numKvHeads;
    this.headDim = headDim;
    this.rowSize = numKvHeads * headDim;
    this.dtype = dtype;
    this.capacity = initialCapacity;
    this.keys = Array.from({ length: numLayers }, () => this.allocate(initialCapacity));
    this.values = Array.from({ length: numLayers }, () => this.allocate(initialCapacity));
  }

  private allocate(positions: number): Storage {
    const n = positions * this.rowSize;
    return this.dtype === "BF16" ? new Uint16Array(n) : new Float32Array(n);
  }

  /** A copy of `old` (capacity `from`) with room for `to` positions: each head's first `keep` positions moved. */
  private relayout(old: Storage, from: number, to: number, keep: number): Storage {
    const next = this.allocate(to);
    const D = this.headDim;
    for (let h = 0; h < this.numKvHeads; h++) next.set(old.subarray(h * from * D, (h * from + keep) * D), h * to * D);
    return next;
  }

  /** Makes room for `total` positions in every layer. */
  reserve(total: number): void {
    if (total <= this.capacity) return;
    let cap = this.capacity;
    while (cap < total) cap *= 2;
    const from = this.capacity;
    this.keys = this.keys.map((k) => this.relayout(k, from, cap, this.length));
    this.values = this.values.map((v) => this.relayout(v, from, cap, this.length));
    this.capacity = cap;
  }

  /** Writes `rows` new positions of one layer starting at `start` (k and v: [rows][numKvHeads * headDim]). */
  write(layer: number, start: number, k: Float32Array, v: Float32Array, rows: number): void {
    this.reserve(start + rows);
    this.scatter(this.keys[layer]!, start, k, rows);
    this.scatter(this.values[layer]!, start, v, rows);
  }

  /** Each head's slice of `rows` source rows into that head's positions from `start`. */
  private scatter(dst: Storage, start: number, src: Float32Array, rows: number): void {
    const D = this.headDim;
    for (let h = 0; h < this.numKvHeads; h++) {
      const at = (h * this.capacity + start) * D;
      if (dst instanceof Uint16Array) {
        this.round(src, h * D, this.rowSize, rows, D, dst, at);
      } else {
        for (let r = 0; r < rows; r++) {
          let i = r * this.rowSize + h * D;
          let o = at + r * D;
          for (let d = 0; d < D; d++) dst[o++] = src[i++]!;
        }
      }
    }
  }

  layerKeys(layer: number): Float32Array | Uint16Array {
    return this.keys[layer]!;
  }

  layerValues(layer: number): Float32Array | Uint16Array {
    return this.values[layer]!;
  }

  /** Strides of layerKeys/layerValues for AttentionParams (valid until the cache grows). */
  layout(): { kvRowStride: number; kvHeadStride: number } {
    return { kvRowStride: this.headDim, kvHeadStride: this.capacity * this.headDim };
  }

  /** The stored keys (or values) of one position, all heads, as they were written ([numKvHeads * headDim]). */
  position(layer: number, which: "keys" | "values", t: number): Float32Array | Uint16Array {
    const src = (which === "keys" ? this.keys : this.values)[layer]!;
    const out = this.allocate(1);
    const D = this.headDim;
    for (let h = 0; h < this.numKvHeads; h++) out.set(src.subarray((h * this.capacity + t) * D, (h * this.capacity + t + 1) * D), h * D);
    return out;
  }

  /** Copies the first `length` positions of another cache of the same shape and dtype into this one. */
  copyPrefixFrom(other: KVCache, length: number): void {
    if (other.numLayers !== this.numLayers || other.numKvHeads !== this.numKvHeads || other.headDim !== this.headDim || other.dtype !== this.dtype) {
      throw new RangeError("KV caches of different shapes");
    }
    this.reserve(length);
    const D = this.headDim;
    for (let l = 0; l < this.numLayers; l++) {
      for (let h = 0; h < this.numKvHeads; h++) {
        const from = h * other.capacity * D, to = h * this.capacity * D;
        this.keys[l]!.set(other.keys[l]!.subarray(from, from + length * D), to);
        this.values[l]!.set(other.values[l]!.subarray(from, from + length * D), to);
      }
    }
    this.length = length;
  }

  /** Bytes held by the stored positions' storage. */
  bytesUsed(): number {
    return this.capacity * this.rowSize * (this.dtype === "BF16" ? 2 : 4) * 2 * this.numLayers;
  }

  /**
   * Drops spare capacity (before the cache is kept around in the prefix cache), when it is more
   * than an eighth of the cache. A finished generation leaves one spare position (the last token is
   * never fed back), and copying the whole cache to save it cost a second copy's memory and, on a
   * VM, 5-12 µs per fresh page (40 MB for an 876-token prompt and 128 tokens in bf16).
   */
  shrinkToFit(): void {
    if (this.length === 0 || this.capacity - this.length <= this.capacity / 8) return;
    const from = this.capacity;
    this.keys = this.keys.map((k) => this.relayout(k, from, this.length, this.length));
    this.values = this.values.map((v) => this.relayout(v, from, this.length, this.length));
    this.capacity = this.length;
  }
}
