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
    // Candidates sorted by logit, highest first; top-k cuts the list before the softmax.
    let order = Array.from({ length: logits.length }, (_, i) => i).filter((i) => logits[i]! > -Infinity);
    if (order.length === 0) throw new Error("every token is masked: nothing to sample");
    order.sort((x, y) => logits[y]! - logits[x]!);
    if (topK > 0 && order.length > topK) order = order.slice(0, topK);
    const max = logits[order[0]!]! / temperature;
    let probs = order.map((i) => Math.exp(logits[i]! / temperature - max));
    const total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
    let keep = probs.length;
    if (topP < 1) {
      // Keep the smallest prefix whose mass reaches top_p (always at least one token).
      let cumulative = 0;
      for (let i = 0; i < probs.length; i++) {
        cumulative += probs[i]!;
        if (cumulative >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    if (minP > 0) {
      const floor = probs[0]! * minP;
      while (keep > 1 && probs[keep - 1]! < floor) keep--;
    }
    const kept = probs.slice(0, keep);
    const mass = kept.reduce((a, b) => a + b, 0);
    let r = this.random.next() * mass;
    for (let i = 0; i < keep; i++) {
      r -= kept[i]!;
      if (r < 0) return order[i]!;
    }
    return order[keep - 1]!;
  }
}
