/**
 * Byte-level helpers shared by the ByteLevel pre-tokenizer and decoder (the GPT-2 scheme).
 *
 * Byte-level BPE works on bytes, but its vocabulary is stored as text, so every byte 0..255 is
 * given a printable stand-in character: printable Latin-1 bytes stand for themselves and the
 * rest (controls, space, a few others) are moved to U+0100 and up, in byte order.
 */

/** True for the bytes that GPT-2 leaves as their own character. */
function isPrintableByte(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/** BYTE_TO_CHAR[b] is the stand-in character for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array<string>(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(isPrintableByte(b) ? b : next++);
  }
  return out;
})();

/** CHAR_TO_BYTE maps a stand-in character's code point back to its byte. */
export const CHAR_TO_BYTE: ReadonlyMap<number, number> = new Map(
  BYTE_TO_CHAR.map((ch, b) => [ch.charCodeAt(0), b] as [number, number]),
);

const UTF8 = new TextEncoder();

/**
 * The stand-in string for the UTF-8 bytes of `text`. Encodes by hand because a TextEncoder call
 * per word dominated encode time; a lone surrogate becomes U+FFFD's bytes, as TextEncoder does.
 */
export function toByteChars(text: string): string {
  const M = BYTE_TO_CHAR;
  let out = "";
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp < 0x80) {
      out += M[cp];
      continue;
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = surrogateCodePoint(text, i);
    if (cp > 0xffff) i++; // consumed a surrogate pair
    if (cp < 0x800) {
      out += M[0xc0 | (cp >> 6)]! + M[0x80 | (cp & 0x3f)]!;
    } else if (cp < 0x10000) {
      out += M[0xe0 | (cp >> 12)]! + M[0x80 | ((cp >> 6) & 0x3f)]! + M[0x80 | (cp & 0x3f)]!;
    } else {
      out += M[0xf0 | (cp >> 18)]! + M[0x80 | ((cp >> 12) & 0x3f)]! + M[0x80 | ((cp >> 6) & 0x3f)]! + M[0x80 | (cp & 0x3f)]!;
    }
  }
  return out;
}

/** The code point of the surrogate at i: a full pair's, or U+FFFD for a lone half. */
function surrogateCodePoint(text: string, i: number): number {
  const hi = text.charCodeAt(i);
  const lo = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
  if (hi <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) return 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
  return 0xfffd;
}

/**
 * The bytes a token stands for, as the reference ByteLevel decoder computes them: the mapped
 * bytes when every character is a stand-in, else the token's own UTF-8 bytes (so added tokens
 * such as "<image>" or ones holding raw spaces come out as written).
 */
export function tokenBytes(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  let n = 0;
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0)!);
    if (b === undefined) return UTF8.encode(token);
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/**
 * Whitespace as the reference's Oniguruma `\s` sees it in Unicode mode: U+0009..U+000D, U+0085
 * and the Z categories. JavaScript's own `\s` differs (it adds U+FEFF and drops U+0085).
 */
const WS = String.raw`[\t-\r\u0085\p{Z}]`;
const NOT_WS = String.raw`[^\t-\r\u0085\p{Z}]`;

/** The GPT-2 split pattern, with `\s` spelled as above. */
export const GPT2_SPLIT = new RegExp(
  [
    "'s|'t|'re|'ve|'m|'ll|'d",
    String.raw` ?\p{L}+`,
    String.raw` ?\p{N}+`,
    String.raw` ?[^\t-\r\u0085\p{Z}\p{L}\p{N}]+`,
    `${WS}+(?!${NOT_WS})`,
    `${WS}+`,
  ].join("|"),
  "gu",
);

/** Splits text into the GPT-2 pre-tokens. Every character falls in some alternative, so the
 * matches tile the whole text and nothing between them is lost. */
export function gpt2Split(text: string): string[] {
  return text.match(GPT2_SPLIT) ?? [];
}
