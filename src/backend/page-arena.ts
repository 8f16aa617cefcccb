/**
 * Arrays carved out of large blocks of memory that the native addon maps on 2 MiB boundaries and
 * asks transparent huge pages for (`allocPages`): for weights made at load (q4 repacked for
 * decoding), which a decode step streams once per token.
 *
 * Why: on 4 KiB pages each page costs its own TLB entry and the hardware prefetchers stop at every
 * page boundary (BENCHMARKS.md section 16). A tensor smaller than 2 MiB (most q4 ones at the 500M
 * geometry) only lands on huge pages when it shares a block with others, hence an arena rather
 * than one allocation per tensor.
 *
 * The arena holds its current block weakly: the arrays it handed out keep their block alive, and
 * a block no array uses any more is unmapped by the garbage collector (the addon's finalizer),
 * so a model that is dropped gives its weights back.
 */

/** Typed arrays the arena copies; each is viewed over the arena's blocks with the same type. */
type ArenaArray = Uint8Array | Uint16Array | Float32Array;

interface ArenaArrayKind<T extends ArenaArray> {
  new (buffer: ArrayBuffer, byteOffset: number, length: number): T;
}

/** Start of every array: a cache line, so that vector loads of a row never split one. */
const ALIGN = 64;

export class PageArena {
  private block: WeakRef<ArrayBuffer> | undefined;
  private used = 0;

  /** `allocate(bytes)`: zeroed memory on 2 MiB boundaries; `blockBytes`: the size of a shared block. */
  constructor(
    private readonly allocate: (bytes: number) => ArrayBuffer,
    private readonly blockBytes = 64 << 20,
  ) {}

  /** `count` zeroed elements of `Kind` in the arena. */
  take<T extends ArenaArray>(Kind: ArenaArrayKind<T> & { BYTES_PER_ELEMENT: number }, count: number): T {
    const bytes = count * Kind.BYTES_PER_ELEMENT;
    // An array at least a block's size gets a block of its own, so the shared one keeps its room.
    if (bytes >= this.blockBytes) return new Kind(this.allocate(bytes), 0, count);
    let block = this.block?.deref();
    let at = Math.ceil(this.used / ALIGN) * ALIGN;
    if (!block || at + bytes > block.byteLength) {
      block = this.allocate(this.blockBytes);
      this.block = new WeakRef(block);
      at = 0;
    }
    this.used = at + bytes;
    return new Kind(block, at, count);
  }
}
