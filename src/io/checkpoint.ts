/**
 * A checkpoint folder as published on the Hugging Face Hub: config, generation config, tokenizer
 * and processor files, and safetensors weights (one file, or shards listed in
 * model.safetensors.index.json).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { SmolVLMError } from "../errors.js";
import { SafetensorsFile, type Tensor } from "./safetensors.js";
import { readJsonFile } from "./config.js";
import type { LinearWeight } from "../backend/kernels.js";
import { QUANT_BLOCK, quantizable, quantizedLayout, quantizedNames, schemeDtype, type QuantizedTensor, type QuantScheme } from "../quant/format.js";
import { quantizeAndRelease, quantizeWeight } from "../quant/quantize.js";

export interface WeightStoreOptions {
  /** Quantize float linear weights to this scheme as they load (those whose input dimension allows it). */
  quantize?: QuantScheme;
}

/** Every tensor of a checkpoint, read on demand from whichever shard holds it. */
export class WeightStore {
  /** The load-time quantization scheme, if any. */
  readonly scheme: QuantScheme | undefined;
  private readonly files: SafetensorsFile[];
  private readonly location = new Map<string, SafetensorsFile>();

  constructor(files: SafetensorsFile[], options: WeightStoreOptions = {}) {
    this.files = files;
    this.scheme = options.quantize;
    for (const f of files) for (const name of f.names()) this.location.set(name, f);
  }

  static fromDir(dir: string, options: WeightStoreOptions = {}): WeightStore {
    const indexPath = join(dir, "model.safetensors.index.json");
    if (existsSync(indexPath)) return WeightStore.fromIndex(dir, indexPath, options);
    const single = join(dir, "model.safetensors");
    if (!existsSync(single)) {
      throw new SmolVLMError("bad_weights", "no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)", dir);
    }
    return new WeightStore([SafetensorsFile.open(single)], options);
  }

  private static fromIndex(dir: string, indexPath: string, options: WeightStoreOptions): WeightStore {
    const index = readJsonFile(indexPath);
    const map = index["weight_map"];
    if (typeof map !== "object" || map === null) throw new SmolVLMError("bad_weights", "missing weight_map", indexPath);
    const shardNames = [...new Set(Object.values(map as Record<string, unknown>))];
    if (!shardNames.every((s): s is string => typeof s === "string")) throw new SmolVLMError("bad_weights", "weight_map values must be file names", indexPath);
    const files: SafetensorsFile[] = [];
    try {
      for (const shard of shardNames) files.push(SafetensorsFile.open(join(dir, shard)));
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
    const store = new WeightStore(files, options);
    for (const name of Object.keys(map as Record<string, unknown>)) {
      if (!store.location.has(name)) throw new SmolVLMError("bad_weights", `index lists tensor "${name}" but its shard does not hold it`, indexPath);
    }
    return store;
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  /** Every tensor name, as stored. */
  names(): string[] {
    return [...this.location.keys()];
  }

  /** The weight files, in shard order. */
  paths(): string[] {
    return this.files.map((f) => f.path);
  }

  /** The weight files whose page cache was partly read back at open to get 2 MiB folios (settlePageCache), with how much. */
  pageCacheRepairs(): { path: string; blocks: number; repaired: number }[] {
    return this.files.flatMap((f) => (f.pageCache && f.pageCache.repaired > 0 ? [{ path: f.path, blocks: f.pageCache.blocks, repaired: f.pageCache.repaired }] : []));
  }

  /** A tensor's stored dtype and shape, and the file that holds it, without reading its data. */
  info(name: string): { dtype: string; shape: readonly number[]; file: string } {
    const { key, file } = this.locate(name);
    return { ...file.info(key), file: file.path };
  }

  /** A tensor's bytes exactly as stored (for copying it unchanged). */
  readBytes(name: string): Uint8Array {
    const { key, file } = this.locate(name);
    return file.readBytes(key);
  }

  /** Some exports drop the leading "model." of the published names; accept both. */
  private resolve(name: string): string | undefined {
    if (this.location.has(name)) return name;
    const alt = name.startsWith("model.") ? name.slice("model.".length) : `model.${name}`;
    return this.location.has(alt) ? alt : undefined;
  }

  private locate(name: string): { key: string; file: SafetensorsFile } {
    const key = this.resolve(name);
    if (key === undefined) {
      throw new SmolVLMError("bad_weights", `tensor "${name}" is missing from the checkpoint`, this.files.map((f) => f.path).join(", "));
    }
    return { key, file: this.location.get(key)! };
  }

  /** Reads a float tensor and checks its shape against what the config implies. */
  get(name: string, shape: readonly number[]): Tensor {
    const { key, file } = this.locate(name);
    const t = file.read(key);
    checkShape(key, file.path, t.shape, shape, "the config implies");
    return t;
  }

  /** Whether the checkpoint stores this linear weight quantized (integer codes plus block scales). */
  isQuantized(name: string): boolean {
    const key = this.resolve(name);
    if (key === undefined) return false;
    const dtype = this.location.get(key)!.info(key).dtype;
    return dtype === "I8" || dtype === "U8";
  }

  /**
   * A linear layer's weight [out, in]: as the checkpoint stores it when quantized (views into the
   * file, no copy); else the float tensor, quantized now if the store has a load-time scheme and
   * `in` splits into whole blocks (other layers keep their source dtype).
   */
  getLinear(name: string, shape: readonly [number, number]): LinearWeight {
    if (this.isQuantized(name)) return this.readQuantized(name, shape);
    const t = this.get(name, shape);
    return this.scheme && quantizable(shape) ? quantizeAndRelease(t, this.scheme) : t;
  }

  /**
   * A linear layer that shares its weight with `tied` (the lm_head tied to the token embeddings):
   * the quantized copy a quantized checkpoint stores under `name`, or one made now under a
   * load-time scheme, else `tied` itself. The copy leaves `tied` in place: the embedding lookup
   * still reads it.
   */
  getTiedLinear(name: string, shape: readonly [number, number], tied: Tensor): LinearWeight {
    if (this.isQuantized(name)) return this.readQuantized(name, shape);
    return this.scheme && quantizable(shape) ? quantizeWeight(tied, this.scheme) : tied;
  }

  /** A stored quantized weight, its codes, scales and minimums checked against the logical shape. */
  private readQuantized(name: string, shape: readonly [number, number]): QuantizedTensor {
    const { key, file } = this.locate(name);
    const [out, inDim] = shape;
    if (!quantizable(shape)) {
      throw new SmolVLMError("bad_weights", `tensor "${key}" is stored quantized but its input dimension ${inDim} is not a multiple of ${QUANT_BLOCK}`, file.path);
    }
    const codes = file.readInt(key);
    const scheme: QuantScheme = codes.dtype === "U8" ? "q4" : "q8";
    const layout = quantizedLayout(scheme, shape);
    checkShape(key, file.path, codes.shape, layout.codes.shape, `a ${scheme} weight of logical shape ${JSON.stringify(shape)} needs`);
    const names = quantizedNames(key);
    const scales = this.readBlockTable(names.scale, key, shape, layout.table);
    const mins = scheme === "q4" ? this.readBlockTable(names.min, key, shape, layout.table) : null;
    return { dtype: schemeDtype(scheme), shape: [out, inDim], data: codes.data, scales, mins };
  }

  /** A quantized weight's F16 table of one value per block, `table` = [out, in / 32]. */
  private readBlockTable(name: string, weight: string, [out, inDim]: readonly [number, number], table: readonly number[]): Uint16Array {
    if (!this.location.has(name)) {
      throw new SmolVLMError("bad_weights", `tensor "${weight}" is stored quantized but "${name}" is missing`, this.location.get(weight)!.path);
    }
    const file = this.location.get(name)!;
    const t = file.read(name);
    if (t.dtype !== "F16") throw new SmolVLMError("bad_weights", `tensor "${name}" has dtype ${t.dtype}; quantized block tables are F16`, file.path);
    checkShape(name, file.path, t.shape, table, `a weight of logical shape ${JSON.stringify([out, inDim])} needs`);
    return t.data as Uint16Array;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

function checkShape(name: string, file: string, actual: readonly number[], expected: readonly number[], why: string): void {
  const same = actual.length === expected.length && actual.every((d, i) => d === expected[i]);
  if (!same) {
    throw new SmolVLMError(
      "bad_weights",
      `tensor "${name}" has shape ${JSON.stringify(actual)} but ${why} ${JSON.stringify(expected)} (config.json and weights from different models?)`,
      file,
    );
  }
}
