/**
 * Picks the next token from logits: greedy (argmax), or sampling with temperature, top-k, top-p
 * and min-p applied in that order (the order transformers applies its logits warpers), from a
 * seeded generator so a seed reproduces a run.
 */

export interface SamplingOptions {
  /** Argmax when true; every other field is then ignored except the masks. */
  greedy: boolean;
  temperature: number;
  /** 0 disables. */
  topK: number;
  /** 1 disables. */
  topP: number;
  /** 0 disables. */
  minP: number;
  /** 1 disables; >1 discourages tokens already in the context (CTRL-style, as transformers). */
  repetitionPenalty: number;
  seed: number;
}

/** A small, fast, seedable generator (sfc32); Math.random cannot be seeded. */
export class Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! > bestValue) {
      bestValue = logits[i]!;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  readonly options: SamplingOptions;
  private readonly random: Random;
  /** DescendingOrder's room, kept between picks. */
  private orderScratch = new Int32Array(0);

  constructor(options: SamplingOptions) {
    if (!options.greedy && !(options.temperature > 0)) throw new RangeError(`temperature must be > 0 when sampling, got ${options.temperature}`);
    if (options.topP <= 0 || options.topP > 1) throw new RangeError(`top_p must be in (0, 1], got ${options.topP}`);
    if (options.topK < 0 || !Number.isInteger(options.topK)) throw new RangeError(`top_k must be a non-negative integer, got ${options.topK}`);
    if (options.minP < 0 || options.minP > 1) throw new RangeError(`min_p must be in [0, 1], got ${options.minP}`);
    if (!(options.repetitionPenalty > 0)) throw new RangeError(`repetition_penalty must be > 0, got ${options.repetitionPenalty}`);
    this.options = options;
    this.random = new Random(options.seed);
  }

  /**
   * Chooses a token. `banned` ids are never chosen (EOS under ignore-eos); `context` feeds the
   * repetition penalty. `logits` is modified in place.
   */
  pick(logits: Float32Array, banned: readonly number[] = [], context: readonly number[] = []): number {
    for (const id of banned) if (id >= 0 && id < logits.length) logits[id] = -Infinity;
    this.applyRepetitionPenalty(logits, context);
    if (this.options.greedy) return argmax(logits);
    return this.sample(logits);
  }

  private applyRepetitionPenalty(logits: Float32Array, context: readonly number[]): void {
    const p = this.options.repetitionPenalty;
    if (p === 1) return;
    for (const id of new Set(context)) {
      const v = logits[id]!;
      logits[id] = v < 0 ? v * p : v / p;
    }
  }

  private sample(logits: Float32Array): number {
    const { temperature, topK, topP, minP } = this.options;
    // Candidates in descending logit order (ties: lower id first), sorted only as far as needed:
    // a pick usually reads the first few dozen of 49,280, and sorting them all cost 20-36 ms a
    // token, several decode steps.
    if (this.orderScratch.length < logits.length) this.orderScratch = new Int32Array(logits.length);
    const order = new DescendingOrder(logits, temperature, this.orderScratch);
    if (order.count === 0) throw new Error("every token is masked: nothing to sample");
    const count = topK > 0 ? Math.min(topK, order.count) : order.count;
    const max = logits[order.at(0)]! / temperature;
    const weight = (i: number): number => Math.exp(logits[order.at(i)]! / temperature - max);
    // The softmax's denominator over the candidates kept by top-k.
    let total = 0;
    if (count < order.count) {
      for (let i = 0; i < count; i++) total += weight(i);
    } else {
      // Terms below e^-40 (under a fiftieth of the leading term's rounding) are left out: in a
      // trained model's logits that is most of the vocabulary, and each exp costs about 20 ns.
      for (let id = 0; id < logits.length; id++) {
        const z = logits[id]! / temperature - max;
        if (z > -40) total += Math.exp(z);
      }
    }
    const prob = (i: number): number => weight(i) / total;
    let keep = count;
    if (topP < 1) {
      // Keep the smallest prefix whose mass reaches top_p (always at least one token).
      let cumulative = 0;
      for (let i = 0; i < count; i++) {
        cumulative += prob(i);
        if (cumulative >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    if (minP > 0) {
      const floor = prob(0) * minP;
      let above = 1;
      while (above < keep && prob(above) >= floor) above++;
      keep = above;
    }
    let mass = 0;
    if (keep < order.count) {
      for (let i = 0; i < keep; i++) mass += prob(i);
    } else {
      mass = 1; // every candidate kept: their probabilities sum to 1 (up to rounding, which the walk's last step absorbs)
    }
    let r = this.random.next() * mass;
    for (let i = 0; i < keep; i++) {
      r -= prob(i);
      if (r < 0) return order.at(i);
    }
    return order.at(keep - 1);
  }
}

/**
 * The ids with a logit above -Infinity, in descending logit order (ties: lower id first), sorted
 * in bands as they are reached: first those within 4 (in logit / temperature) of the best, then
 * within 12, 30, and the rest. Each band's ids are sorted as numbers: the order's key
 * (descending logit, then id) packed exactly into one double.
 */
class DescendingOrder {
  /** How many ids have a logit above -Infinity. */
  readonly count: number;
  private filled = 0;
  private readonly bits: Uint32Array;
  private readonly max: number;
  private ceiling = Infinity;
  private band = 0;
  private static readonly BANDS = [4, 12, 30, Infinity];

  /** `sorted`: room for every id (reused from pick to pick: a new 200 KB array is fresh memory each time). */
  constructor(private readonly logits: Float32Array, private readonly temperature: number, private readonly sorted: Int32Array) {
    this.bits = new Uint32Array(logits.buffer, logits.byteOffset, logits.length);
    let max = -Infinity;
    let count = 0;
    for (let id = 0; id < logits.length; id++) {
      const v = logits[id]!;
      if (v > -Infinity) {
        count++;
        if (v > max) max = v;
      }
    }
    this.count = count;
    this.max = max;
  }

  /** The i-th id in the order (i < count). */
  at(i: number): number {
    while (this.filled <= i) this.nextBand();
    return this.sorted[i]!;
  }

  private nextBand(): void {
    const width = DescendingOrder.BANDS[this.band++]!;
    const floor = width === Infinity ? -Infinity : this.max - width * this.temperature;
    const ceiling = this.ceiling;
    this.ceiling = floor;
    const inBand = (v: number): boolean => v > -Infinity && v >= floor && (ceiling === Infinity || v < ceiling);
    let n = 0;
    for (let id = 0; id < this.logits.length; id++) if (inBand(this.logits[id]!)) n++;
    if (this.logits.length > ID_SPAN) {
      // Too many ids to pack into a key: sorted by comparison instead.
      const ids: number[] = [];
      for (let id = 0; id < this.logits.length; id++) if (inBand(this.logits[id]!)) ids.push(id);
      ids.sort((x, y) => this.logits[y]! - this.logits[x]! || x - y);
      for (const id of ids) this.sorted[this.filled++] = id;
      return;
    }
    const keys = new Float64Array(n);
    n = 0;
    for (let id = 0; id < this.logits.length; id++) if (inBand(this.logits[id]!)) keys[n++] = this.key(id);
    keys.sort();
    for (const k of keys) this.sorted[this.filled++] = k - Math.floor(k / ID_SPAN) * ID_SPAN;
  }

  /** (descending logit, ascending id) as one double: the float's bits made monotone, times ID_SPAN, plus the id. */
  private key(id: number): number {
    const b = this.logits[id] === 0 ? 0 : this.bits[id]!; // -0 sorts as +0
    const ascending = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    return (0xffffffff - ascending) * ID_SPAN + id;
  }
}

/** Ids below 2^21 (vocabularies up to 2 million): the packed key stays below 2^53, exact in a double. */
const ID_SPAN = 2 ** 21;
