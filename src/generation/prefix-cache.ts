/**
 * Keeps the KV caches of recent conversations so that a follow-up turn does not encode its images
 * or prefill the shared prefix again. Entries are keyed by the prompt's token ids with every
 * `<image>` position replaced by an id of the image's content, so the same text around a
 * different image never matches. Bounded by bytes; least recently used entries go first.
 */
import type { KVCache } from "../model/kv-cache.js";

interface Entry {
  key: number[];
  cache: KVCache;
  bytes: number;
  lastUsed: number;
}

export class PrefixCache {
  private entries: Entry[] = [];
  private clock = 0;
  private usedBytes = 0;

  constructor(private readonly maxBytes: number, private readonly minPrefix = 16) {}

  get bytes(): number {
    return this.usedBytes;
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * The cached KV entries of the longest stored prefix of `key`, copied into a fresh cache,
   * never covering the whole key (the last position must run to give logits). null if no
   * stored prefix reaches `minPrefix` tokens.
   */
  lookup(key: readonly number[], fresh: () => KVCache): { cache: KVCache; length: number } | null {
    let best: Entry | null = null;
    let bestLength = 0;
    for (const e of this.entries) {
      const n = commonPrefix(e.key, key, Math.min(e.cache.length, key.length - 1));
      if (n > bestLength) {
        best = e;
        bestLength = n;
      }
    }
    if (!best || bestLength < this.minPrefix) return null;
    best.lastUsed = ++this.clock;
    const cache = fresh();
    cache.copyPrefixFrom(best.cache, bestLength);
    return { cache, length: bestLength };
  }

  /** Stores a finished sequence's cache under its key (the ids of its cached positions). */
  store(key: readonly number[], cache: KVCache): void {
    if (this.maxBytes <= 0 || cache.length < this.minPrefix) return;
    cache.shrinkToFit();
    const bytes = cache.bytesUsed();
    if (bytes > this.maxBytes) return;
    // A stored entry that this one extends is redundant.
    this.entries = this.entries.filter((e) => {
      const redundant = e.key.length <= key.length && commonPrefix(e.key, key, e.key.length) === e.key.length;
      if (redundant) this.usedBytes -= e.bytes;
      return !redundant;
    });
    this.entries.push({ key: key.slice(0, cache.length), cache, bytes, lastUsed: ++this.clock });
    this.usedBytes += bytes;
    while (this.usedBytes > this.maxBytes) this.evictOldest();
  }

  private evictOldest(): void {
    let oldest = 0;
    for (let i = 1; i < this.entries.length; i++) if (this.entries[i]!.lastUsed < this.entries[oldest]!.lastUsed) oldest = i;
    this.usedBytes -= this.entries[oldest]!.bytes;
    this.entries.splice(oldest, 1);
  }
}

function commonPrefix(a: readonly number[], b: readonly number[], limit: number): number {
  const n = Math.min(a.length, b.length, limit);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
