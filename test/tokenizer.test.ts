import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SmolVLMError } from "../src/errors.js";
import { Bpe } from "../src/tokenizer/bpe.js";
import { BYTE_TO_CHAR, toByteChars } from "../src/tokenizer/byte-level.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { fixturePath, readJson, tempDir } from "./helpers.js";

interface TokCase {
  text: string;
  ids: number[];
  decoded: string;
  decoded_skip_special: string;
}

const MODEL_DIR = fixturePath("models", "tiny-bf16");
const fixture = readJson<{ tokenizer_json_sha256: string; cases: TokCase[] }>("tokenizer.json");
const tok = Tokenizer.fromModelDir(MODEL_DIR);

function isSmolErr(code: string, fileFragment?: string) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof SmolVLMError, `expected SmolVLMError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (fileFragment !== undefined) assert.ok(e.message.includes(fileFragment), `message should name ${fileFragment}: ${e.message}`);
    return true;
  };
}

test("fixture was made from this tokenizer.json", () => {
  const sha = createHash("sha256").update(readFileSync(join(MODEL_DIR, "tokenizer.json"))).digest("hex");
  assert.equal(sha, fixture.tokenizer_json_sha256);
});

for (const c of fixture.cases) {
  test(`fixture ${JSON.stringify(c.text.slice(0, 40))}`, () => {
    assert.deepEqual(tok.encode(c.text), c.ids, "encode");
    assert.equal(tok.decode(c.ids), c.decoded, "decode");
    assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, "decode skip special");
  });
}

test("vocab size, lookups and special flags", () => {
  assert.equal(tok.vocabSize, 49280);
  assert.equal(tok.tokenToId("<image>"), 49190);
  assert.equal(tok.idToToken(49190), "<image>");
  assert.equal(tok.tokenToId("<end_of_utterance>"), 49279);
  assert.equal(tok.isSpecial(49279), true);
  assert.equal(tok.tokenToId("Hello"), tok.encode("Hello")[0]);
  assert.equal(tok.isSpecial(tok.tokenToId("Hello")!), false);
  assert.equal(tok.tokenToId("no such token ~~~"), undefined);
  assert.equal(tok.idToToken(49280), undefined);
  assert.equal(tok.idToToken(-1), undefined);
  assert.equal(tok.idToToken(1.5), undefined);
});

test("round trip on assorted strings", () => {
  const samples = [
    "The quick brown fox jumps over the lazy dog.",
    "  multiple   spaces\tand\ttabs\n\n\nnewlines  ",
    "emoji 👩‍👩‍👧‍👦 flags 🇫🇷 and skin tones 👋🏿",
    "CJK 漢字かなカナ 한국어, RTL עברית العربية",
    "\uFEFFstarts with a byte order mark",
    "control \u0000\u0001\u007f and combining e\u0301",
    "<image> inside <fake_token_around_image> text <end_of_utterance>",
    "numbers ¹²³ ½ Ⅻ ٣٤٥ 1,234.56",
  ];
  for (const s of samples) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
});

test("pre-tokenizer character classes follow the reference's definitions", () => {
  const names = (s: string) => tok.encode(s).map((i) => tok.idToToken(i));
  // Digits splits on Rust's char::is_numeric (any \p{N}), so a space never joins an Arabic digit.
  assert.deepEqual(names(" ٣"), ["Ġ", "Ù", "£"]);
  // Oniguruma's \s includes U+0085 and excludes U+FEFF (JavaScript's \s is the other way round).
  assert.deepEqual(names(" \u0085>"), ["Ġ", "Â", "ħ", ">"]);
  assert.deepEqual(names("   \uFEFFé"), ["ĠĠ", "Ġ", "ï", "»", "¿", "Ã©"]);
});

test("decode rejects ids that are out of range", () => {
  for (const bad of [49280, 1_000_000, -1, 2.5, Number.NaN]) {
    assert.throws(() => tok.decode([1, bad]), isSmolErr("bad_request", String(bad)));
  }
});

test("invalid UTF-8 decodes to U+FFFD like the reference", () => {
  // One emoji is 4 bytes in 3 tokens here; a strict prefix of them is an invalid sequence.
  const ids = tok.encode("😀");
  assert.equal(ids.length, 3);
  assert.equal(tok.decode(ids.slice(0, 1)), "\uFFFD");
  assert.equal(tok.decode(ids.slice(0, 2)), "\uFFFD");
  assert.equal(tok.decode([...ids.slice(0, 2), ...tok.encode("a")]), "\uFFFDa");
  // A lone continuation byte.
  const cont = tok.tokenToId(BYTE_TO_CHAR[0x80]!)!;
  assert.equal(tok.decode([cont, cont]), "\uFFFD\uFFFD");
});

// ---------------------------------------------------------------------------------------------
// Small hand-built tokenizers

/** A byte-level tokenizer.json over a tiny vocab (every byte plus a few merges). */
function tinyJson(opts: { merges: unknown; extra?: Record<string, unknown>; modelExtra?: Record<string, unknown> }) {
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((ch, i) => (vocab[ch] = i));
  for (const t of ["ab", "abc", "Ġab", "Ġabc", "bc"]) vocab[t] = Object.keys(vocab).length;
  return {
    version: "1.0",
    added_tokens: [{ id: 300, content: "<x>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, byte_fallback: false, ignore_merges: false, vocab, merges: opts.merges, ...opts.modelExtra },
    ...opts.extra,
  };
}

const PAIR_MERGES = [["a", "b"], ["ab", "c"], ["Ġ", "ab"], ["Ġab", "c"], ["b", "c"]];
const STRING_MERGES = PAIR_MERGES.map((p) => p.join(" "));

test("merges as pairs and as strings give the same tokenizer", () => {
  const a = Tokenizer.fromJson(tinyJson({ merges: PAIR_MERGES }));
  const b = Tokenizer.fromJson(tinyJson({ merges: STRING_MERGES }));
  const text = "abc abcab bc<x>cab";
  const ids = a.encode(text);
  assert.deepEqual(b.encode(text), ids);
  // " abc": a+b (rank 0) then ab+c (rank 1) run before Ġ+ab (rank 2) could.
  assert.deepEqual(ids.map((i) => a.idToToken(i)), ["abc", "Ġ", "abc", "ab", "Ġ", "bc", "<x>", "c", "ab"]);
  assert.equal(a.decode(ids), text);
  assert.equal(a.vocabSize, 301);
  assert.equal(a.decode(ids, { skipSpecialTokens: true }), "abc abcab bccab");
});

test("merge rank decides between overlapping pairs", () => {
  // "abc": (a,b) rank 0 beats (b,c) rank 4; with the order swapped, b+c wins and a stays.
  const swapped = [["b", "c"], ["a", "b"], ["ab", "c"], ["Ġ", "ab"], ["Ġab", "c"]];
  const t = Tokenizer.fromJson(tinyJson({ merges: swapped }));
  assert.deepEqual(t.encode("abc").map((i) => t.idToToken(i)), ["a", "bc"]);
});

test("ignore_merges takes a whole word found in the vocab", () => {
  // Without merges "abc" could not be built; ignore_merges finds it directly.
  const t = Tokenizer.fromJson(tinyJson({ merges: [], modelExtra: { ignore_merges: true } }));
  assert.deepEqual(t.encode("abc ab ac").map((i) => t.idToToken(i)), ["abc", "Ġab", "Ġ", "a", "c"]);
});

test("added-token flags: lstrip, rstrip, single_word, normalized", () => {
  const json = tinyJson({
    merges: PAIR_MERGES,
    extra: {
      normalizer: { type: "Lowercase" },
      added_tokens: [
        { id: 300, content: "<l>", single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
        { id: 301, content: "<r>", single_word: false, lstrip: false, rstrip: true, normalized: false, special: true },
        { id: 302, content: "word", single_word: true, lstrip: false, rstrip: false, normalized: false, special: false },
        { id: 303, content: "hey", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
      ],
    },
  });
  const t = Tokenizer.fromJson(json);
  const names = (s: string) => t.encode(s).map((i) => t.idToToken(i));
  assert.deepEqual(names("a  <l>b"), ["a", "<l>", "b"]);
  assert.deepEqual(names("a<r> \n b"), ["a", "<r>", "b"]);
  assert.deepEqual(names("word swordfish word"), ["word", "Ġ", "s", "w", "o", "r", "d", "f", "i", "s", "h", "Ġ", "word"]);
  // Matched after lowercasing because it is flagged normalized.
  assert.deepEqual(names("HEY"), ["hey"]);
  assert.equal(t.isSpecial(302), false);
  // <l> swallowed the space before it, so skipping it leaves the words joined.
  assert.equal(t.decode(t.encode("word <l>x"), { skipSpecialTokens: true }), "wordx");
});

test("unknown characters map to unk_token (fused) or are dropped", () => {
  const vocab = { a: 0, b: 1, "<unk>": 2 };
  const base = { pre_tokenizer: null, decoder: null, added_tokens: [] };
  const fused = Tokenizer.fromJson({ ...base, model: { type: "BPE", vocab, merges: [], unk_token: "<unk>", fuse_unk: true } });
  assert.deepEqual(fused.encode("axyb"), [0, 2, 1]);
  const unfused = Tokenizer.fromJson({ ...base, model: { type: "BPE", vocab, merges: [], unk_token: "<unk>", fuse_unk: false } });
  assert.deepEqual(unfused.encode("axyb"), [0, 2, 2, 1]);
  const none = Tokenizer.fromJson({ ...base, model: { type: "BPE", vocab, merges: [] } });
  assert.deepEqual(none.encode("axyb"), [0, 1]);
  // No decoder: the reference joins tokens with spaces.
  assert.equal(none.decode([0, 1]), "a b");
});

test("byte_fallback uses <0xXX> tokens", () => {
  const vocab: Record<string, number> = { a: 0 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = b + 1;
  const t = Tokenizer.fromJson({ pre_tokenizer: null, model: { type: "BPE", vocab, merges: [], byte_fallback: true } });
  assert.deepEqual(t.encode("aé"), [0, 0xc3 + 1, 0xa9 + 1]);
});

/** Classic BPE: repeatedly merge every occurrence of the lowest-ranked adjacent pair. */
function naiveBpe(word: string[], ranks: Map<string, number>): string[] {
  let w = word;
  for (;;) {
    let best: string | undefined;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < w.length; i++) {
      const r = ranks.get(w[i] + " " + w[i + 1]);
      if (r !== undefined && r < bestRank) [best, bestRank] = [w[i] + " " + w[i + 1], r];
    }
    if (best === undefined) return w;
    const out: string[] = [];
    for (let i = 0; i < w.length; i++) {
      if (i + 1 < w.length && w[i] + " " + w[i + 1] === best) out.push(w[i]! + w[++i]!);
      else out.push(w[i]!);
    }
    w = out;
  }
}

test("heap BPE agrees with classic BPE on the real merges", () => {
  const json = JSON.parse(readFileSync(join(MODEL_DIR, "tokenizer.json"), "utf8"));
  const merges: Array<[string, string]> = json.model.merges;
  const vocab = new Map<string, number>(Object.entries(json.model.vocab));
  const ranks = new Map(merges.map(([a, b], i) => [a + " " + b, i] as [string, number]));
  const bpe = new Bpe({ vocab, merges, unkToken: null, fuseUnk: false, byteFallback: false, ignoreMerges: false });
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const alphabet = "etaoinshrdlucmfwypvbgkqjxz  .,'-ééüß中文😀";
  for (let n = 0; n < 3000; n++) {
    const len = 1 + Math.floor(rand() * 24);
    let s = "";
    for (let i = 0; i < len; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
    const word = toByteChars(s);
    const expected = naiveBpe([...word], ranks).map((t) => vocab.get(t)!);
    assert.deepEqual(bpe.encodeWord(word), expected, JSON.stringify(s));
  }
});

// ---------------------------------------------------------------------------------------------
// Errors

function writeTmp(name: string, content: string): string {
  const dir = tempDir("tok");
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

test("malformed tokenizer.json files give clear errors naming the file", () => {
  const cases: Array<[string, string]> = [
    ["{ not json", "not valid JSON"],
    ["[1, 2]", "JSON object"],
    [JSON.stringify({ model: { type: "WordPiece", vocab: {} } }), "model type"],
    [JSON.stringify(tinyJson({ merges: [["a", "zz"]] })), '"zz"'],
    [JSON.stringify(tinyJson({ merges: ["a b c"] })), "model.merges[0]"],
    [JSON.stringify(tinyJson({ merges: [], extra: { pre_tokenizer: { type: "Metaspace" } } })), "Metaspace"],
    [JSON.stringify(tinyJson({ merges: [], extra: { normalizer: { type: "Precompiled" } } })), "Precompiled"],
    [JSON.stringify(tinyJson({ merges: [], extra: { decoder: { type: "WordPiece" } } })), "decoder"],
    [JSON.stringify(tinyJson({ merges: [], extra: { added_tokens: [{ id: -1, content: "x" }] } })), "added_tokens[0]"],
    [JSON.stringify(tinyJson({ merges: [], modelExtra: { dropout: 0.1 } })), "dropout"],
  ];
  for (const [content, fragment] of cases) {
    const path = writeTmp("tokenizer.json", content);
    assert.throws(() => Tokenizer.fromFile(path), (e: unknown) => {
      isSmolErr("bad_tokenizer", path)(e);
      assert.ok((e as Error).message.includes(fragment), `"${fragment}" not in: ${(e as Error).message}`);
      return true;
    });
  }
});

test("a missing tokenizer.json is reported with its path", () => {
  const dir = tempDir("tok");
  assert.throws(() => Tokenizer.fromModelDir(dir), isSmolErr("not_found", join(dir, "tokenizer.json")));
});
