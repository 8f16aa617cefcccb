/**
 * The BPE model: turns one pre-token (a "word", already in byte-level characters) into ids.
 *
 * Merges are applied lowest rank first, leftmost first among equal ranks, which is what the
 * reference does. A binary heap keyed by (rank, position) keeps a long word near O(n log n)
 * instead of rescanning every pair after each merge; a cache skips repeated words entirely.
 */

export interface BpeOptions {
  vocab: ReadonlyMap<string, number>;
  /** Merge pairs in rank order (index = rank). */
  merges: ReadonlyArray<readonly [string, string]>;
  unkToken: string | null;
  fuseUnk: boolean;
  byteFallback: boolean;
  ignoreMerges: boolean;
}

/** Thrown for a merge that names a token outside the vocabulary; the caller adds the file. */
export class BpeBuildError extends Error {}

const CACHE_LIMIT = 10_000;
const UTF8 = new TextEncoder();
const CACHE_MAX_WORD = 256;

export class Bpe {
  private readonly vocab: ReadonlyMap<string, number>;
  /** Pair key (left * pairBase + right) -> merge rank. */
  private readonly ranks = new Map<number, number>();
  /** Rank -> id of the merged token. */
  private readonly mergedIds: Int32Array;
  private readonly pairBase: number;
  private readonly unkId: number | undefined;
  private readonly cache = new Map<string, readonly number[]>();

  constructor(private readonly opts: BpeOptions) {
    this.vocab = opts.vocab;
    let maxId = 0;
    for (const id of opts.vocab.values()) maxId = Math.max(maxId, id);
    this.pairBase = maxId + 1;
    this.mergedIds = new Int32Array(opts.merges.length);
    opts.merges.forEach(([a, b], rank) => this.addMerge(a, b, rank));
    if (opts.unkToken !== null) {
      this.unkId = opts.vocab.get(opts.unkToken);
      if (this.unkId === undefined) {
        throw new BpeBuildError(`unk_token ${JSON.stringify(opts.unkToken)} is not in the vocab`);
      }
    }
  }

  private addMerge(a: string, b: string, rank: number): void {
    const ia = this.vocab.get(a);
    const ib = this.vocab.get(b);
    const merged = this.vocab.get(a + b);
    if (ia === undefined || ib === undefined || merged === undefined) {
      const missing = ia === undefined ? a : ib === undefined ? b : a + b;
      throw new BpeBuildError(`merge ${rank} (${JSON.stringify(a)} ${JSON.stringify(b)}) uses ${JSON.stringify(missing)}, which is not in the vocab`);
    }
    // A later duplicate of the same pair overrides the earlier one, as in the reference.
    this.ranks.set(ia * this.pairBase + ib, rank);
    this.mergedIds[rank] = merged;
  }

  /** Ids for one word, through the cache. */
  encodeWord(word: string): readonly number[] {
    const hit = this.cache.get(word);
    if (hit !== undefined) return hit;
    const ids = this.encodeUncached(word);
    if (word.length <= CACHE_MAX_WORD) {
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }

  private encodeUncached(word: string): number[] {
    if (this.opts.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const ids = this.initialSymbols(word);
    return ids.length < 2 ? ids : this.mergeAll(ids);
  }

  /** One id per character, with byte fallback and unk handling as the file configures. */
  private initialSymbols(word: string): number[] {
    const out: number[] = [];
    let pendingUnk = false;
    for (const ch of word) {
      const id = this.vocab.get(ch);
      const ids = id !== undefined ? [id] : this.opts.byteFallback ? this.byteFallbackIds(ch) : undefined;
      if (ids !== undefined) {
        if (pendingUnk) out.push(this.unkId!);
        pendingUnk = false;
        out.push(...ids);
      } else if (this.unkId !== undefined) {
        // fuse_unk folds a run of unknown characters into one unk.
        if (pendingUnk && !this.opts.fuseUnk) out.push(this.unkId);
        pendingUnk = true;
      }
      // With neither fallback nor unk the reference drops the character; so do we.
    }
    if (pendingUnk) out.push(this.unkId!);
    return out;
  }

  /** The <0xXX> tokens for a character's UTF-8 bytes, or undefined if any is missing. */
  private byteFallbackIds(ch: string): number[] | undefined {
    const ids: number[] = [];
    for (const b of UTF8.encode(ch)) {
      const id = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      if (id === undefined) return undefined;
      ids.push(id);
    }
    return ids;
  }

  private rankAt(ids: Int32Array, next: Int32Array, i: number): number | undefined {
    const j = next[i]!;
    return j < 0 ? undefined : this.ranks.get(ids[i]! * this.pairBase + ids[j]!);
  }

  /**
   * Applies merges over a doubly linked list of symbols. Heap entries are rank * n + pos, so
   * popping the smallest gives the lowest rank and, on ties, the leftmost pair. An entry is stale
   * (skipped) when its pair was changed by an earlier merge; that is detected by recomputing the
   * pair's rank at pop time.
   */
  private mergeAll(initial: number[]): number[] {
    const n = initial.length;
    const ids = Int32Array.from(initial);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new MinHeap();
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rankAt(ids, next, i);
      if (r !== undefined) heap.push(r * n + i);
    }
    while (heap.size > 0) {
      const key = heap.pop();
      const pos = key % n;
      const rank = (key - pos) / n;
      if (!alive[pos] || this.rankAt(ids, next, pos) !== rank) continue;
      // Merge pos with its right neighbour, which disappears.
      const right = next[pos]!;
      ids[pos] = this.mergedIds[rank]!;
      alive[right] = 0;
      next[pos] = next[right]!;
      if (next[pos]! >= 0) prev[next[pos]!] = pos;
      // Only the pairs touching the new symbol can have changed.
      const left = prev[pos]!;
      if (left >= 0) {
        const r = this.rankAt(ids, next, left);
        if (r !== undefined) heap.push(r * n + left);
      }
      const r = this.rankAt(ids, next, pos);
      if (r !== undefined) heap.push(r * n + pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(ids[i]!);
    return out;
  }
}

/** A plain binary min-heap of numbers. */
class MinHeap {
  private data: number[] = [];

  get size(): number {
    return this.data.length;
  }

  push(v: number): void {
    const d = this.data;
    let i = d.length;
    d.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (d[p]! <= v) break;
      d[i] = d[p]!;
      i = p;
    }
    d[i] = v;
  }

  pop(): number {
    const d = this.data;
    const top = d[0]!;
    const last = d.pop()!;
    if (d.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= d.length) break;
      const c = l + 1 < d.length && d[l + 1]! < d[l]! ? l + 1 : l;
      if (d[c]! >= last) break;
      d[i] = d[c]!;
      i = c;
    }
    d[i] = last;
    return top;
  }
}
