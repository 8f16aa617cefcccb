/**
 * `smolvlm quantize`: writes a q8 or q4 copy of a checkpoint folder. The linear layers the model
 * loads through `WeightStore.getLinear` (text attention and MLP, vision attention and MLP, the
 * connector's projection, lm_head) are quantized where their input dimension splits into blocks
 * of 32; every other tensor is copied in its source dtype. A tied lm_head gets a quantized copy of
 * the embeddings, stored as `lm_head.weight`, while the embeddings themselves stay in float.
 *
 * Memory: the output is planned first (every shape follows from the source's, so the header can
 * be written before any data), then each tensor is read, quantized, written and dropped in turn:
 * neither the source model nor the quantized one is ever held whole.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { SmolVLMError } from "../errors.js";
import { parseModelConfig, readJsonFile } from "../io/config.js";
import { WeightStore } from "../io/checkpoint.js";
import { BYTES_PER_ELEMENT, isFloat, type StoredDType } from "../io/safetensors.js";
import { writeSafetensors, type TensorSpec } from "../io/safetensors-writer.js";
import { MODEL_FILES, WEIGHTS_FILE, WEIGHTS_INDEX } from "../hub/resolve.js";
import { dropFileCache, releasePages } from "../backend/native-kernels.js";
import { QUANT_BLOCK, QUANT_SCHEMES, quantizable, quantizedLayout, quantizedNames, type QuantizationConfig, type QuantScheme } from "./format.js";
import { quantizeAndRelease } from "./quantize.js";

export interface QuantizeCheckpointOptions {
  /** The source checkpoint folder (unquantized). */
  source: string;
  /** The folder to write; it must not exist or be empty, unless `force`. */
  out: string;
  /** "q8" or "q4" (checked: the CLI passes what the user typed). */
  scheme: string;
  /** Write into an existing, non-empty folder (files of the same names are replaced). */
  force?: boolean;
  /** Called after each source tensor is written. */
  onProgress?: (progress: { done: number; total: number; name: string }) => void;
}

export interface QuantizeCheckpointResult {
  out: string;
  scheme: QuantScheme;
  /** Tensors in the written file (a quantized weight counts as its 2 or 3 stored tensors). */
  tensors: number;
  /** Linear weights quantized. */
  quantized: number;
  /** Size of the source's weight files and of the written one. */
  bytesBefore: number;
  bytesAfter: number;
  seconds: number;
}

/**
 * The weights the model takes through `getLinear` (see src/model/): the only ones quantized. The
 * leading "model." is optional because some exports drop it (the loader accepts both).
 */
const LINEAR_WEIGHTS = [
  /^(model\.)?text_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/,
  /^(model\.)?vision_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.weight$/,
  /^(model\.)?connector\.modality_projection\.proj\.weight$/,
  /^(model\.)?lm_head\.weight$/,
];

const LM_HEAD = "lm_head.weight";
const LM_HEAD_RE = /^(model\.)?lm_head\.weight$/;
const EMBED_TOKENS = "model.text_model.embed_tokens.weight";

/** One source tensor's fate: copied as stored, or quantized from `from` and stored as `name`. */
type PlanEntry =
  | { kind: "copy"; name: string; dtype: StoredDType; shape: readonly number[] }
  | { kind: "quantize"; name: string; from: string; shape: readonly [number, number] };

function isLinearWeight(name: string): boolean {
  return LINEAR_WEIGHTS.some((re) => re.test(name));
}

export function quantizeCheckpoint(options: QuantizeCheckpointOptions): QuantizeCheckpointResult {
  const start = performance.now();
  const scheme = checkScheme(options.scheme);
  const source = resolve(options.source);
  const out = resolve(options.out);
  const configPath = join(source, "config.json");
  const configJson = readJsonFile(configPath);
  const config = parseModelConfig(configJson, configPath);
  if (config.quantization) {
    throw new SmolVLMError("bad_request", `already quantized (${config.quantization.scheme}): quantize the source checkpoint instead`, source);
  }
  prepareOutDir(source, out, options.force === true);

  const store = WeightStore.fromDir(source);
  try {
    const plan = planTensors(store, config.tieWordEmbeddings);
    const specs = plan.flatMap((p) => specsOf(p, scheme));
    const bytesBefore = store.paths().reduce((n, p) => n + statSync(p).size, 0);
    const metadata = { format: "pt", quant_method: "smolvlm", scheme };
    const bytesAfter = writeSafetensors(join(out, WEIGHTS_FILE), specs, tensorData(store, plan, scheme, options.onProgress), metadata);
    dropFileCache(join(out, WEIGHTS_FILE)); // read back in 2 MiB folios (native-kernels.ts)
    copyInferenceFiles(source, out);
    const quantization: QuantizationConfig = { quant_method: "smolvlm", scheme, block_size: QUANT_BLOCK, modules_not_quantized: keptModules(plan) };
    writeFileSync(join(out, "config.json"), JSON.stringify({ ...configJson, quantization_config: quantization }, null, 2) + "\n");
    const quantized = plan.filter((p) => p.kind === "quantize").length;
    return { out, scheme, tensors: specs.length, quantized, bytesBefore, bytesAfter, seconds: (performance.now() - start) / 1000 };
  } finally {
    store.close();
  }
}

function checkScheme(scheme: string): QuantScheme {
  if (!(QUANT_SCHEMES as readonly string[]).includes(scheme)) {
    throw new SmolVLMError("bad_request", `quantization scheme "${scheme}" is not available (available: ${QUANT_SCHEMES.join(", ")})`);
  }
  return scheme as QuantScheme;
}

/** Creates the output folder; refuses the source itself, a file, or a non-empty folder without `force`. */
function prepareOutDir(source: string, out: string, force: boolean): void {
  if (out === source || (existsSync(out) && realpathSync(out) === realpathSync(source))) throw new SmolVLMError("bad_request", "the output folder is the source folder: write the quantized copy elsewhere", out);
  if (existsSync(out)) {
    if (!statSync(out).isDirectory()) throw new SmolVLMError("bad_request", "the output path exists and is not a folder", out);
    if (readdirSync(out).length > 0 && !force) {
      throw new SmolVLMError("bad_request", "the output folder exists and is not empty (force / --force writes into it anyway)", out);
    }
    removeStaleShards(out);
  }
  mkdirSync(out, { recursive: true });
}

/**
 * A sharded checkpoint left in the output folder would shadow the new model.safetensors (the
 * loader prefers the index), so its index and the shards it lists go.
 */
function removeStaleShards(out: string): void {
  const index = join(out, WEIGHTS_INDEX);
  if (!existsSync(index)) return;
  const map = readJsonFile(index)["weight_map"];
  const shards = typeof map === "object" && map !== null ? Object.values(map as Record<string, unknown>) : [];
  for (const shard of new Set(shards)) {
    if (typeof shard === "string" && shard === basename(shard)) rmSync(join(out, shard), { force: true });
  }
  rmSync(index, { force: true });
}

/**
 * What becomes of each source tensor, in the order the file stores them (see `fileGroup`). The
 * lm_head the model uses is the embeddings when they are tied (or when an export left lm_head
 * out): then a quantized copy of them is written as lm_head, which the loader prefers.
 */
function planTensors(store: WeightStore, tied: boolean): PlanEntry[] {
  const headKey = store.names().find((n) => LM_HEAD_RE.test(n));
  const headFromEmbeddings = tied || headKey === undefined;
  const entries = store
    .names()
    .filter((n) => !(headFromEmbeddings && n === headKey)) // a tied checkpoint's own lm_head is never read
    .map((name) => planTensor(store, name));
  if (headFromEmbeddings && store.has(EMBED_TOKENS)) {
    const shape = store.info(EMBED_TOKENS).shape;
    if (quantizable(shape)) entries.push({ kind: "quantize", name: headKey ?? LM_HEAD, from: EMBED_TOKENS, shape: [shape[0]!, shape[1]!] });
  }
  return entries
    .map((p, i) => ({ p, i }))
    .sort((a, b) => fileGroup(a.p) - fileGroup(b.p) || a.i - b.i)
    .map(({ p }) => p);
}

/**
 * F32 copies first, then 16-bit copies, then the quantized weights (F16 scales and minimums, then
 * 8-bit codes: an even number of bytes in all), then 8-bit copies. Every tensor's offset is then
 * a multiple of its element size, so each loads as a view into the mapped file, not as a copy.
 */
function fileGroup(p: PlanEntry): number {
  if (p.kind === "quantize") return 2;
  const width = BYTES_PER_ELEMENT[p.dtype];
  return width === 4 ? 0 : width === 2 ? 1 : 3;
}

function planTensor(store: WeightStore, name: string): PlanEntry {
  const { dtype, shape, file } = store.info(name);
  if (!(dtype in BYTES_PER_ELEMENT)) {
    throw new SmolVLMError("bad_weights", `tensor "${name}" has dtype ${dtype}; supported: ${Object.keys(BYTES_PER_ELEMENT).join(", ")}`, file);
  }
  if (isFloat(dtype) && isLinearWeight(name) && quantizable(shape)) return { kind: "quantize", name, from: name, shape: [shape[0]!, shape[1]!] };
  return { kind: "copy", name, dtype: dtype as StoredDType, shape };
}

/** The stored tensors of a plan entry, in the order `tensorData` yields their bytes. */
function specsOf(p: PlanEntry, scheme: QuantScheme): TensorSpec[] {
  if (p.kind === "copy") return [{ name: p.name, dtype: p.dtype, shape: p.shape }];
  const names = quantizedNames(p.name);
  const { codes, table } = quantizedLayout(scheme, p.shape);
  const specs: TensorSpec[] = [{ name: names.scale, dtype: "F16", shape: table }];
  if (scheme === "q4") specs.push({ name: names.min, dtype: "F16", shape: table });
  specs.push({ name: names.data, ...codes });
  return specs;
}

/** Each stored tensor's bytes, made one source tensor at a time and dropped once written. */
function* tensorData(store: WeightStore, plan: readonly PlanEntry[], scheme: QuantScheme, onProgress: QuantizeCheckpointOptions["onProgress"]): Generator<ArrayBufferView> {
  for (let i = 0; i < plan.length; i++) {
    const p = plan[i]!;
    if (p.kind === "copy") {
      const bytes = store.readBytes(p.name);
      yield bytes;
      releasePages(bytes); // the mapped source pages are not needed again
    } else {
      const q = quantizeAndRelease(store.get(p.from, p.shape), scheme);
      yield q.scales;
      if (q.mins) yield q.mins;
      yield q.data;
    }
    onProgress?.({ done: i + 1, total: plan.length, name: p.name });
  }
}

/** config.json's informative list: the modules whose weight matrices stay in float. */
function keptModules(plan: readonly PlanEntry[]): string[] {
  return plan.filter((p) => p.kind === "copy" && p.shape.length >= 2 && p.name.endsWith(".weight")).map((p) => p.name.slice(0, -".weight".length));
}

/** Everything else inference reads (tokenizer, processor, chat template, generation config). */
function copyInferenceFiles(source: string, out: string): void {
  for (const file of MODEL_FILES) {
    if (file === "config.json") continue; // written with quantization_config added
    const from = join(source, file);
    if (existsSync(from)) copyFileSync(from, join(out, file));
  }
}
