/**
 * Added tokens (special or not) are found in the text before anything else, so that the text
 * between them is BPE'd on its own and the tokens themselves map straight to their ids.
 */

export interface AddedToken {
  id: number;
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** A piece of text after splitting: either an added token's id or text still to tokenize. */
export type Piece = { id: number } | { text: string };

/** Rust's char::is_whitespace (the White_Space property), used by lstrip/rstrip. */
const WHITESPACE = /\p{White_Space}/u;
/** A "word" character for single_word: alphanumeric or underscore. */
const WORD_CHAR = /[\p{Alphabetic}\p{N}_]/u;

/** Escapes only syntax characters: the `u` flag rejects any other escape. */
function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/gu, "\\$&");
}

export class AddedTokenMatcher {
  private readonly pattern: RegExp | null;
  private readonly byContent = new Map<string, AddedToken>();

  constructor(tokens: readonly AddedToken[]) {
    for (const t of tokens) if (t.content.length > 0) this.byContent.set(t.content, t);
    // Longest first: a regex alternation takes the first alternative that matches, so this
    // gives the leftmost-longest match that the reference's Aho-Corasick search gives.
    const contents = [...this.byContent.keys()].sort((a, b) => b.length - a.length);
    this.pattern = contents.length === 0 ? null : new RegExp(contents.map(escapeRegExp).join("|"), "gu");
  }

  /** Splits text into added-token ids and the text around them (empty text is dropped). */
  split(text: string): Piece[] {
    if (this.pattern === null || text.length === 0) return text.length === 0 ? [] : [{ text }];
    const out: Piece[] = [];
    let done = 0; // end of the last accepted match
    for (const m of text.matchAll(this.pattern)) {
      const span = this.accept(text, m.index!, m.index! + m[0].length, done);
      if (span === null) continue;
      if (span.start > done) out.push({ text: text.slice(done, span.start) });
      out.push({ id: this.byContent.get(m[0])!.id });
      done = span.end;
    }
    if (done < text.length) out.push({ text: text.slice(done) });
    return out;
  }

  /** Applies single_word / lstrip / rstrip to one match; null if the match is rejected. */
  private accept(text: string, start: number, end: number, done: number): { start: number; end: number } | null {
    const tok = this.byContent.get(text.slice(start, end))!;
    // A match that begins inside whitespace already swallowed by an rstrip is not taken.
    if (start < done) return null;
    if (tok.singleWord && (endsWithWordChar(text, start) || startsWithWordChar(text, end))) return null;
    if (tok.lstrip) {
      while (start > done && WHITESPACE.test(charBefore(text, start))) start -= charBefore(text, start).length;
    }
    if (tok.rstrip) {
      while (end < text.length && WHITESPACE.test(charAt(text, end))) end += charAt(text, end).length;
    }
    return { start, end };
  }
}

function charAt(text: string, i: number): string {
  return String.fromCodePoint(text.codePointAt(i)!);
}

function charBefore(text: string, i: number): string {
  const low = text.charCodeAt(i - 1);
  const isPairTail = low >= 0xdc00 && low <= 0xdfff && i >= 2;
  return isPairTail ? text.slice(i - 2, i) : text.slice(i - 1, i);
}

function endsWithWordChar(text: string, i: number): boolean {
  return i > 0 && WORD_CHAR.test(charBefore(text, i));
}

function startsWithWordChar(text: string, i: number): boolean {
  return i < text.length && WORD_CHAR.test(charAt(text, i));
}
