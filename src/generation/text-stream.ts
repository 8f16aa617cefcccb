/**
 * Turns a growing list of token ids into text deltas. Byte-level BPE tokens can end in the middle
 * of a UTF-8 character; the decoded text then ends in U+FFFD and is held back until the
 * character's remaining bytes arrive.
 */
export interface Decoder {
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
}

export class TextStream {
  private readonly ids: number[] = [];
  /** Ids before this index are fully emitted and never decoded again. */
  private windowStart = 0;

  constructor(private readonly decoder: Decoder, private readonly skipSpecialTokens = true) {}

  /** Adds a token and returns the text that is now certain (possibly ""). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decoder.decode(this.ids.slice(this.windowStart), { skipSpecialTokens: this.skipSpecialTokens });
    if (text.endsWith("\ufffd")) return "";
    // The window's text is complete: emit it and start a new window, so that decoding stays
    // linear in the output length (byte-level decoding of a split list concatenates exactly).
    this.windowStart = this.ids.length;
    return text;
  }

  /** Whatever is still held back (an incomplete character at the very end). */
  flush(): string {
    const text = this.decoder.decode(this.ids.slice(this.windowStart), { skipSpecialTokens: this.skipSpecialTokens });
    this.windowStart = this.ids.length;
    return text;
  }
}
