/**
 * A byte-level BPE tokenizer read from a Hugging Face tokenizer.json, matching the reference
 * `tokenizers` library for the files SmolVLM ships (and failing clearly on features it lacks).
 *
 * encode: added tokens are split out first (on the raw text, then on the normalized text for
 * the ones flagged `normalized`); each remaining piece is normalized, pre-tokenized into words
 * and BPE'd. No special tokens are added around the result.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SmolVLMError } from "../errors.js";
import { AddedTokenMatcher, type AddedToken } from "./added-tokens.js";
import type { Bpe } from "./bpe.js";
import {
  parseAddedTokens,
  parseDecoder,
  parseModel,
  parseNormalizer,
  parsePreTokenizer,
  type Decoder,
  type Normalizer,
  type PreTokenizer,
} from "./components.js";

/** Lossy like the reference (U+FFFD for bad bytes), and keeps a leading BOM as the reference does. */
const UTF8_DECODER = new TextDecoder("utf-8", { ignoreBOM: true });

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export class Tokenizer {
  readonly vocabSize: number;
  private readonly rawMatcher: AddedTokenMatcher;
  private readonly normalizedMatcher: AddedTokenMatcher;
  /** id -> token text, added tokens taking precedence over the model vocab. */
  private readonly idToTokenTable: (string | undefined)[];
  private readonly specialIds = new Set<number>();
  private readonly addedByContent = new Map<string, number>();

  private constructor(
    private readonly bpe: Bpe,
    private readonly vocab: ReadonlyMap<string, number>,
    addedTokens: readonly AddedToken[],
    private readonly normalizer: Normalizer | null,
    private readonly preTokenizer: PreTokenizer,
    private readonly decoder: Decoder,
  ) {
    this.rawMatcher = new AddedTokenMatcher(addedTokens.filter((t) => !t.normalized));
    this.normalizedMatcher = new AddedTokenMatcher(addedTokens.filter((t) => t.normalized));
    this.idToTokenTable = [];
    for (const [tok, id] of vocab) this.idToTokenTable[id] = tok;
    for (const t of addedTokens) {
      this.idToTokenTable[t.id] = t.content;
      this.addedByContent.set(t.content, t.id);
      if (t.special) this.specialIds.add(t.id);
    }
    this.vocabSize = this.idToTokenTable.length;
  }

  /** Reads a tokenizer.json; every error names the file. */
  static fromFile(path: string): Tokenizer {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (e) {
      throw new SmolVLMError("not_found", `cannot read tokenizer file: ${(e as Error).message}`, path);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new SmolVLMError("bad_tokenizer", `not valid JSON: ${(e as Error).message}`, path);
    }
    return Tokenizer.fromJson(json, path);
  }

  /** The tokenizer of a model folder (its tokenizer.json, which holds the added tokens too). */
  static fromModelDir(dir: string): Tokenizer {
    return Tokenizer.fromFile(join(dir, "tokenizer.json"));
  }

  /** Builds from parsed tokenizer.json content; `source` names it in error messages. */
  static fromJson(json: unknown, source = "tokenizer.json"): Tokenizer {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new SmolVLMError("bad_tokenizer", "tokenizer.json must hold a JSON object", source);
    }
    const obj = json as Record<string, unknown>;
    const { bpe, vocab } = parseModel(obj.model, source);
    return new Tokenizer(
      bpe,
      vocab,
      parseAddedTokens(obj.added_tokens, source),
      parseNormalizer(obj.normalizer, source),
      parsePreTokenizer(obj.pre_tokenizer, source),
      parseDecoder(obj.decoder, source),
    );
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of this.rawMatcher.split(text)) {
      if ("id" in piece) ids.push(piece.id);
      else this.encodeNormalizedPiece(piece.text, ids);
    }
    return ids;
  }

  /** Normalizes text that holds no raw added token, then splits out the normalized ones. */
  private encodeNormalizedPiece(text: string, ids: number[]): void {
    const normalized = this.normalizer === null ? text : this.normalizer(text);
    for (const piece of this.normalizedMatcher.split(normalized)) {
      if ("id" in piece) {
        ids.push(piece.id);
        continue;
      }
      for (const word of this.preTokenizer(piece.text)) {
        for (const id of this.bpe.encodeWord(word)) ids.push(id);
      }
    }
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens === true;
    const tokens: string[] = [];
    for (const id of ids) {
      const tok = this.idToToken(id);
      if (tok === undefined) {
        throw new SmolVLMError("bad_request", `cannot decode token id ${id}: not an id of this tokenizer (vocab size ${this.vocabSize})`);
      }
      if (!(skip && this.specialIds.has(id))) tokens.push(tok);
    }
    const out = this.decoder(tokens);
    return typeof out === "string" ? out : UTF8_DECODER.decode(out);
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token) ?? this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.idToTokenTable[id] : undefined;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}
