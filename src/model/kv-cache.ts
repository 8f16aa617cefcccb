/**
 * Keys and values of every layer for the positions seen so far. Storage grows geometrically, so
 * decoding appends without reallocating on every token.
 */
export class KVCache {
  readonly numLayers: number;
  readonly rowSize: number;
  private keys: Float32Array[];
  private values: Float32Array[];
  private capacity: number;
  /** Positions stored (equal for every layer once a forward pass completes). */
  length = 0;

  constructor(numLayers: number, numKvHeads: number, headDim: number, initialCapacity = 256) {
    this.numLayers = numLayers;
    this.rowSize = numKvHeads * headDim;
    this.capacity = initialCapacity;
    this.keys = Array.from({ length: numLayers }, () => new Float32Array(initialCapacity * this.rowSize));
    this.values = Array.from({ length: numLayers }, () => new Float32Array(initialCapacity * this.rowSize));
  }

  /** Makes room for `total` positions in every layer. */
  reserve(total: number): void {
    if (total <= this.capacity) return;
    let cap = this.capacity;
    while (cap < total) cap *= 2;
    const grow = (old: Float32Array) => {
      const next = new Float32Array(cap * this.rowSize);
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
    this.keys[layer]!.set(k.subarray(0, rows * this.rowSize), start * this.rowSize);
    this.values[layer]!.set(v.subarray(0, rows * this.rowSize), start * this.rowSize);
  }

  layerKeys(layer: number): Float32Array {
    return this.keys[layer]!;
  }

  layerValues(layer: number): Float32Array {
    return this.values[layer]!;
  }

  /** Copies the first `length` positions of another cache of the same shape into this one. */
  copyPrefixFrom(other: KVCache, length: number): void {
    if (other.numLayers !== this.numLayers || other.rowSize !== this.rowSize) throw new RangeError("KV caches of different shapes");
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
    return this.capacity * this.rowSize * 4 * 2 * this.numLayers;
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
