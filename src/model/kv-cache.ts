/**
 * Keys and values of every layer for the positions seen so far. Storage grows geometrically, so
 * decoding appends without reallocating on every token.
 *
 * Float32, or bf16 (the speed modes: half the memory and half the bytes attention reads per
 * token; keys and values are rounded to nearest even as they are written, as PyTorch's bf16 cache).
 */
import { roundToBf16 } from "../backend/dtype.js";

export type KVDType = "F32" | "BF16";

type Storage = Float32Array | Uint16Array;

export class KVCache {
  readonly numLayers: number;
  readonly rowSize: number;
  readonly dtype: KVDType;
  private keys: Storage[];
  private values: Storage[];
  private capacity: number;
  /** Positions stored (equal for every layer once a forward pass completes). */
  length = 0;

  constructor(numLayers: number, numKvHeads: number, headDim: number, initialCapacity = 256, dtype: KVDType = "F32") {
    this.numLayers = numLayers;
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

  /** Makes room for `total` positions in every layer. */
  reserve(total: number): void {
    if (total <= this.capacity) return;
    let cap = this.capacity;
    while (cap < total) cap *= 2;
    const grow = (old: Storage) => {
      const next = this.allocate(cap);
      next.set(old.subarray(0, this.length * this.rowSize));
      return next;
    };
    this.keys = this.keys.map(grow);
    this.values = this.values.map(grow);
    this.capacity = cap;
  }

  /** Writes `rows` new positions of one layer starting at `start`. */
  write(layer: number, start: number, k: Float32Array, v: Float32Array, rows: number): void {
    this.reserve(start + rows);
    const n = rows * this.rowSize;
    const at = start * this.rowSize;
    store(this.keys[layer]!, at, k, n);
    store(this.values[layer]!, at, v, n);
  }

  layerKeys(layer: number): Float32Array | Uint16Array {
    return this.keys[layer]!;
  }

  layerValues(layer: number): Float32Array | Uint16Array {
    return this.values[layer]!;
  }

  /** Copies the first `length` positions of another cache of the same shape and dtype into this one. */
  copyPrefixFrom(other: KVCache, length: number): void {
    if (other.numLayers !== this.numLayers || other.rowSize !== this.rowSize || other.dtype !== this.dtype) {
      throw new RangeError("KV caches of different shapes");
    }
    this.reserve(length);
    const n = length * this.rowSize;
    for (let l = 0; l < this.numLayers; l++) {
      this.keys[l]!.set(other.keys[l]!.subarray(0, n));
      this.values[l]!.set(other.values[l]!.subarray(0, n));
    }
    this.length = length;
  }

  /** Bytes held by the stored positions' storage. */
  bytesUsed(): number {
    return this.capacity * this.rowSize * (this.dtype === "BF16" ? 2 : 4) * 2 * this.numLayers;
  }

  /** Drops spare capacity (before the cache is kept around in the prefix cache). */
  shrinkToFit(): void {
    if (this.capacity === this.length || this.length === 0) return;
    const n = this.length * this.rowSize;
    this.keys = this.keys.map((k) => k.slice(0, n));
    this.values = this.values.map((v) => v.slice(0, n));
    this.capacity = this.length;
  }
}

/** dst[at .. at + n) = src[0 .. n), rounded to bf16 (nearest even) for a bf16 cache. */
function store(dst: Storage, at: number, src: Float32Array, n: number): void {
  if (dst instanceof Float32Array) dst.set(src.subarray(0, n), at);
  else roundToBf16(src, n, dst, at);
}
