/**
 * Parsers for the parts of a tokenizer.json: the normalizer, pre-tokenizer, decoder, model and
 * added tokens. Each returns a plain function or value and throws SmolVLMError("bad_tokenizer")
 * naming the file for anything malformed or not implemented, rather than tokenizing wrongly.
 */
import { SmolVLMError } from "../errors.js";
import type { AddedToken } from "./added-tokens.js";
import { Bpe, BpeBuildError } from "./bpe.js";
import { gpt2Split, tokenBytes, toByteChars } from "./byte-level.js";

export type Normalizer = (text: string) => string;
export type PreTokenizer = (text: string) => string[];
export type Decoder = (tokens: readonly string[]) => Uint8Array | string;

type Json = Record<string, unknown>;

function fail(file: string, message: string): never {
  throw new SmolVLMError("bad_tokenizer", message, file);
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads an optional boolean field, defaulting to `dflt` when absent or null. */
function optBool(obj: Json, key: string, dflt: boolean, file: string, where: string): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "boolean") fail(file, `${where}.${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function typeOf(obj: unknown, file: string, where: string): string {
  if (!isObject(obj) || typeof obj.type !== "string") fail(file, `${where} must be an object with a string "type"`);
  return obj.type;
}

// ---------------------------------------------------------------------------------------------
// Normalizer

const UNICODE_FORMS = new Set(["NFC", "NFD", "NFKC", "NFKD"]);

export function parseNormalizer(json: unknown, file: string, where = "normalizer"): Normalizer | null {
  if (json === null || json === undefined) return null;
  const type = typeOf(json, file, where);
  const obj = json as Json;
  if (UNICODE_FORMS.has(type)) return (s) => s.normalize(type);
  // Per character, as the reference lowercases (no context-dependent final sigma).
  if (type === "Lowercase") return (s) => Array.from(s, (c) => c.toLowerCase()).join("");
  if (type === "Sequence") {
    if (!Array.isArray(obj.normalizers)) fail(file, `${where}.normalizers must be an array`);
    const steps = obj.normalizers.map((n, i) => parseNormalizer(n, file, `${where}.normalizers[${i}]`));
    return (s) => steps.reduce((acc, f) => (f === null ? acc : f(acc)), s);
  }
  return fail(file, `${where} type "${type}" is not supported (supported: null, NFC, NFD, NFKC, NFKD, Lowercase, Sequence)`);
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer

const INDIVIDUAL_DIGITS = /\p{N}|\P{N}+/gu;
const CONTIGUOUS_DIGITS = /\p{N}+|\P{N}+/gu;

/** A pre-tokenizer that applies to each piece and flattens the results; empty pieces drop. */
function perPiece(f: (piece: string) => string[]): PreTokenizer {
  return (text) => f(text).filter((p) => p.length > 0);
}

function byteLevelPreTokenizer(obj: Json, file: string, where: string): PreTokenizer {
  const addPrefixSpace = optBool(obj, "add_prefix_space", true, file, where);
  const useRegex = optBool(obj, "use_regex", true, file, where);
  return perPiece((piece) => {
    // The reference prefixes each piece it is given, not only the start of the text.
    const text = addPrefixSpace && !piece.startsWith(" ") ? " " + piece : piece;
    return (useRegex ? gpt2Split(text) : [text]).map(toByteChars);
  });
}

/** Runs one step over every piece, flattening; a plain loop because flatMap was a hot spot. */
function applyToEach(pieces: string[], step: PreTokenizer): string[] {
  const out: string[] = [];
  for (const piece of pieces) for (const p of step(piece)) out.push(p);
  return out;
}

export function parsePreTokenizer(json: unknown, file: string, where = "pre_tokenizer"): PreTokenizer {
  if (json === null || json === undefined) return perPiece((p) => [p]);
  const type = typeOf(json, file, where);
  const obj = json as Json;
  switch (type) {
    case "ByteLevel":
      return byteLevelPreTokenizer(obj, file, where);
    case "Digits": {
      const re = optBool(obj, "individual_digits", false, file, where) ? INDIVIDUAL_DIGITS : CONTIGUOUS_DIGITS;
      return perPiece((p) => p.match(re) ?? []);
    }
    case "Sequence": {
      if (!Array.isArray(obj.pretokenizers)) fail(file, `${where}.pretokenizers must be an array`);
      const steps = obj.pretokenizers.map((p, i) => parsePreTokenizer(p, file, `${where}.pretokenizers[${i}]`));
      return (text) => steps.reduce<string[]>(applyToEach, [text]);
    }
    default:
      return fail(file, `${where} type "${type}" is not supported (supported: null, ByteLevel, Digits, Sequence)`);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoder

/** Bytes of each token, concatenated; the caller turns them into text. */
function byteLevelDecoder(tokens: readonly string[]): Uint8Array {
  const parts = tokens.map(tokenBytes);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function parseDecoder(json: unknown, file: string): Decoder {
  // Without a decoder the reference joins the tokens with spaces.
  if (json === null || json === undefined) return (tokens) => tokens.join(" ");
  const type = typeOf(json, file, "decoder");
  if (type === "ByteLevel") return byteLevelDecoder;
  return fail(file, `decoder type "${type}" is not supported (supported: null, ByteLevel)`);
}

// ---------------------------------------------------------------------------------------------
// Model

function parseVocab(json: unknown, file: string): Map<string, number> {
  if (!isObject(json)) fail(file, "model.vocab must be an object of token -> id");
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(json)) {
    if (!Number.isInteger(id) || (id as number) < 0) fail(file, `model.vocab[${JSON.stringify(tok)}] must be a non-negative integer id`);
    vocab.set(tok, id as number);
  }
  return vocab;
}

/** Merges come either as "a b" strings (older files) or as ["a", "b"] pairs (newer files). */
function parseMerges(json: unknown, file: string): Array<[string, string]> {
  if (!Array.isArray(json)) fail(file, "model.merges must be an array");
  return json.map((m, i): [string, string] => {
    if (typeof m === "string") {
      const parts = m.split(" ");
      if (parts.length === 2) return [parts[0]!, parts[1]!];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      return [m[0], m[1]];
    }
    return fail(file, `model.merges[${i}] must be "a b" or ["a", "b"], got ${JSON.stringify(m)}`);
  });
}

/** Rejects the BPE options that would change results and are not implemented here. */
function checkUnsupportedBpeOptions(model: Json, file: string): void {
  if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) {
    fail(file, `model.dropout ${JSON.stringify(model.dropout)} is not supported (inference needs null)`);
  }
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    const v = model[key];
    if (v !== undefined && v !== null && v !== "") fail(file, `model.${key} ${JSON.stringify(v)} is not supported`);
  }
}

export function parseModel(json: unknown, file: string): { bpe: Bpe; vocab: Map<string, number> } {
  if (!isObject(json)) fail(file, 'missing "model" object');
  // Old files may omit the type; a vocab plus merges is then a BPE model.
  const type = json.type ?? (json.merges !== undefined ? "BPE" : undefined);
  if (type !== "BPE") fail(file, `model type ${JSON.stringify(type)} is not supported (only BPE)`);
  checkUnsupportedBpeOptions(json, file);
  const unk = json.unk_token;
  if (unk !== undefined && unk !== null && typeof unk !== "string") fail(file, "model.unk_token must be a string or null");
  const vocab = parseVocab(json.vocab, file);
  try {
    const bpe = new Bpe({
      vocab,
      merges: parseMerges(json.merges, file),
      unkToken: typeof unk === "string" ? unk : null,
      fuseUnk: optBool(json, "fuse_unk", false, file, "model"),
      byteFallback: optBool(json, "byte_fallback", false, file, "model"),
      ignoreMerges: optBool(json, "ignore_merges", false, file, "model"),
    });
    return { bpe, vocab };
  } catch (e) {
    if (e instanceof BpeBuildError) fail(file, `model: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Added tokens

export function parseAddedTokens(json: unknown, file: string): AddedToken[] {
  if (json === undefined || json === null) return [];
  if (!Array.isArray(json)) fail(file, "added_tokens must be an array");
  return json.map((t, i): AddedToken => {
    const where = `added_tokens[${i}]`;
    if (!isObject(t)) fail(file, `${where} must be an object`);
    if (!Number.isInteger(t.id) || (t.id as number) < 0) fail(file, `${where}.id must be a non-negative integer`);
    if (typeof t.content !== "string" || t.content.length === 0) fail(file, `${where}.content must be a non-empty string`);
    const special = optBool(t, "special", false, file, where);
    return {
      id: t.id as number,
      content: t.content,
      special,
      singleWord: optBool(t, "single_word", false, file, where),
      lstrip: optBool(t, "lstrip", false, file, where),
      rstrip: optBool(t, "rstrip", false, file, where),
      // The reference's default: special tokens are matched on the raw text.
      normalized: optBool(t, "normalized", !special, file, where),
    };
  });
}
