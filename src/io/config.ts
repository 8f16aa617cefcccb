/**
 * Model configuration: reads an Idefics3-family config.json in either file style (the published
 * transformers-4 files with `rope_theta` in `text_config`, or transformers-5 files with
 * `rope_parameters`) and turns it into one normalised, validated shape. Every size comes from the
 * file: nothing here knows about 256M, 500M or 2.2B.
 */
import { existsSync, readFileSync } from "node:fs";
import { SmolVLMError } from "../errors.js";
import { QUANT_BLOCK, QUANT_SCHEMES, type QuantizationConfig, type QuantScheme } from "../quant/format.js";

export interface RopeConfig {
  theta: number;
  /** "default" or "linear" (positions divided by `factor`). */
  type: "default" | "linear";
  factor: number;
}

export interface TextConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  rope: RopeConfig;
  maxPositionEmbeddings: number;
  hiddenAct: "silu";
}

export type VisionActivation = "gelu_pytorch_tanh" | "gelu";

export interface VisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numChannels: number;
  patchSize: number;
  imageSize: number;
  layerNormEps: number;
  hiddenAct: VisionActivation;
}

export interface ModelConfig {
  /** As written in the file: "idefics3" or "smolvlm". */
  modelType: string;
  text: TextConfig;
  vision: VisionConfig;
  scaleFactor: number;
  imageTokenId: number;
  tieWordEmbeddings: boolean;
  /** Set when the folder was written by `smolvlm quantize` (its linear weights are q8 or q4). */
  quantization: QuantizationConfig | null;
}

const SUPPORTED_MODEL_TYPES = ["idefics3", "smolvlm"];

type Json = Record<string, unknown>;

export function readJsonFile(path: string, code: "bad_config" | "bad_tokenizer" = "bad_config"): Json {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    throw new SmolVLMError(code, errno === "ENOENT" ? "file not found" : `cannot read (${errno})`, path);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new SmolVLMError(code, `not valid JSON (${(e as Error).message})`, path);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new SmolVLMError(code, "expected a JSON object", path);
  return value as Json;
}

/** Like readJsonFile, but a missing file is an empty object (for optional config files). */
export function readOptionalJsonFile(path: string): Json {
  if (!existsSync(path)) return {};
  return readJsonFile(path);
}

class FieldReader {
  constructor(private readonly obj: Json, private readonly where: string, private readonly file: string) {}

  int(key: string, fallback?: number): number {
    const v = this.obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw new SmolVLMError("bad_config", `${this.where}.${key} must be a positive integer, got ${JSON.stringify(this.obj[key])}`, this.file);
    }
    return v;
  }

  num(key: string, fallback?: number): number {
    const v = this.obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new SmolVLMError("bad_config", `${this.where}.${key} must be a number, got ${JSON.stringify(this.obj[key])}`, this.file);
    }
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.obj[key] ?? fallback;
    if (typeof v !== "string") throw new SmolVLMError("bad_config", `${this.where}.${key} must be a string`, this.file);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.obj[key];
    return typeof v === "boolean" ? v : fallback;
  }

  sub(key: string): FieldReader {
    const v = this.obj[key];
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new SmolVLMError("bad_config", `${this.where}.${key} is missing or not an object`, this.file);
    }
    return new FieldReader(v as Json, `${this.where}.${key}`, this.file);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  fail(message: string): never {
    throw new SmolVLMError("bad_config", `${this.where}: ${message}`, this.file);
  }
}

function parseRope(text: FieldReader): RopeConfig {
  // transformers 5 writes rope_parameters {rope_theta, rope_type}; the published files write
  // rope_theta (and maybe rope_scaling) at the text config's top level.
  const params = text.raw("rope_parameters");
  const scaling = text.raw("rope_scaling");
  const source = (typeof params === "object" && params !== null ? params : scaling ?? {}) as Json;
  const theta = typeof source["rope_theta"] === "number" ? source["rope_theta"] : text.num("rope_theta", 10000);
  const type = String(source["rope_type"] ?? source["type"] ?? "default");
  if (type === "default") return { theta, type, factor: 1 };
  if (type === "linear") return { theta, type, factor: Number(source["factor"] ?? 1) };
  return text.fail(`rope type "${type}" is not supported (supported: default, linear)`);
}

function parseText(text: FieldReader, topVocab: unknown): TextConfig {
  const hiddenSize = text.int("hidden_size");
  const numHeads = text.int("num_attention_heads");
  const numKvHeads = text.int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) text.fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const headDim = text.raw("head_dim") == null ? hiddenSize / numHeads : text.int("head_dim");
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) text.fail(`head_dim ${headDim} must be an even integer`);
  const act = text.str("hidden_act", "silu");
  if (act !== "silu") text.fail(`hidden_act "${act}" is not supported (supported: silu)`);
  return {
    hiddenSize,
    intermediateSize: text.int("intermediate_size"),
    numLayers: text.int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: text.int("vocab_size", typeof topVocab === "number" ? topVocab : undefined),
    rmsNormEps: text.num("rms_norm_eps", 1e-6),
    rope: parseRope(text),
    maxPositionEmbeddings: text.int("max_position_embeddings", 8192),
    hiddenAct: "silu",
  };
}

function parseVision(vision: FieldReader): VisionConfig {
  const act = vision.str("hidden_act", "gelu_pytorch_tanh");
  const hiddenAct: VisionActivation = act === "gelu_pytorch_tanh" || act === "gelu_new" ? "gelu_pytorch_tanh" : act === "gelu" ? "gelu" : vision.fail(`hidden_act "${act}" is not supported`);
  const hiddenSize = vision.int("hidden_size");
  const numHeads = vision.int("num_attention_heads");
  if (hiddenSize % numHeads !== 0) vision.fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  return {
    hiddenSize,
    intermediateSize: vision.int("intermediate_size"),
    numLayers: vision.int("num_hidden_layers"),
    numHeads,
    numChannels: vision.int("num_channels", 3),
    patchSize: vision.int("patch_size"),
    imageSize: vision.int("image_size"),
    layerNormEps: vision.num("layer_norm_eps", 1e-6),
    hiddenAct,
  };
}

/** Parses an already-read config object; `file` is used in error messages. */
export function parseModelConfig(json: Json, file: string): ModelConfig {
  const top = new FieldReader(json, "config", file);
  const modelType = json["model_type"];
  if (typeof modelType !== "string" || !SUPPORTED_MODEL_TYPES.includes(modelType)) {
    throw new SmolVLMError(
      "bad_config",
      `unknown model_type ${JSON.stringify(modelType)}: smolvlm runs Idefics3-family models (model_type ${SUPPORTED_MODEL_TYPES.map((t) => `"${t}"`).join(" or ")})`,
      file,
    );
  }
  const textReader = top.sub("text_config");
  const text = parseText(textReader, json["vocab_size"]);
  const vision = parseVision(top.sub("vision_config"));
  const scaleFactor = top.int("scale_factor", 2);
  const patchesPerSide = Math.floor(vision.imageSize / vision.patchSize);
  if (patchesPerSide % scaleFactor !== 0) top.fail(`${patchesPerSide} patches per side is not divisible by scale_factor ${scaleFactor}`);
  const tie = json["tie_word_embeddings"] ?? textReader.raw("tie_word_embeddings") ?? false;
  return {
    modelType,
    text,
    vision,
    scaleFactor,
    imageTokenId: top.int("image_token_id", 49190),
    tieWordEmbeddings: tie === true,
    quantization: parseQuantization(top),
  };
}

/**
 * `quantization_config`: only this package's own format is read. Checkpoints quantized by other
 * tools (bitsandbytes, GPTQ, AWQ, ...) store their weights in layouts these kernels do not run,
 * so they are refused by name rather than failing later on a tensor's dtype.
 */
function parseQuantization(top: FieldReader): QuantizationConfig | null {
  const raw = top.raw("quantization_config");
  if (raw === undefined || raw === null) return null;
  const q = top.sub("quantization_config");
  const method = q.raw("quant_method");
  if (method !== "smolvlm") {
    q.fail(
      `quant_method ${JSON.stringify(method)} is not supported: this folder was quantized by another tool, and smolvlm only reads its own q8/q4 format (quant_method "smolvlm"); ` +
        "use the unquantized checkpoint (`smolvlm quantize` makes a q8/q4 copy of it)",
    );
  }
  const scheme = q.raw("scheme");
  if (typeof scheme !== "string" || !QUANT_SCHEMES.includes(scheme as QuantScheme)) {
    q.fail(`scheme ${JSON.stringify(scheme)} is not supported (supported: ${QUANT_SCHEMES.join(", ")})`);
  }
  const blockSize = q.raw("block_size") ?? QUANT_BLOCK;
  if (blockSize !== QUANT_BLOCK) q.fail(`block_size ${JSON.stringify(blockSize)} is not supported (only ${QUANT_BLOCK})`);
  const kept = q.raw("modules_not_quantized");
  if (kept !== undefined && !(Array.isArray(kept) && kept.every((m) => typeof m === "string"))) q.fail("modules_not_quantized must be a list of module names");
  return { quant_method: "smolvlm", scheme: scheme as QuantScheme, block_size: QUANT_BLOCK, ...(kept ? { modules_not_quantized: kept as string[] } : {}) };
}

export function loadModelConfig(path: string): ModelConfig {
  return parseModelConfig(readJsonFile(path), path);
}

export interface GenerationDefaults {
  eosTokenIds: number[];
  bosTokenId: number | undefined;
  padTokenId: number | undefined;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  maxNewTokens: number | undefined;
  repetitionPenalty: number;
}

function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

/** generation_config.json, with transformers' defaults for fields it leaves out. */
export function parseGenerationConfig(json: Json | undefined, fallbackEos: number[]): GenerationDefaults {
  const g = json ?? {};
  const eos = idList(g["eos_token_id"]);
  const num = (k: string, d: number) => (typeof g[k] === "number" ? (g[k] as number) : d);
  return {
    eosTokenIds: eos.length > 0 ? eos : fallbackEos,
    bosTokenId: typeof g["bos_token_id"] === "number" ? g["bos_token_id"] : undefined,
    padTokenId: typeof g["pad_token_id"] === "number" ? g["pad_token_id"] : undefined,
    doSample: g["do_sample"] === true,
    temperature: num("temperature", 1),
    topK: num("top_k", 50),
    topP: num("top_p", 1),
    maxNewTokens: typeof g["max_new_tokens"] === "number" ? g["max_new_tokens"] : undefined,
    repetitionPenalty: num("repetition_penalty", 1),
  };
}
