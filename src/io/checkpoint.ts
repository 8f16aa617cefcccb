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

/** Every tensor of a checkpoint, read on demand from whichever shard holds it. */
export class WeightStore {
  private readonly files: SafetensorsFile[];
  private readonly location = new Map<string, SafetensorsFile>();

  constructor(files: SafetensorsFile[]) {
    this.files = files;
    for (const f of files) for (const name of f.names()) this.location.set(name, f);
  }

  static fromDir(dir: string): WeightStore {
    const indexPath = join(dir, "model.safetensors.index.json");
    if (existsSync(indexPath)) return WeightStore.fromIndex(dir, indexPath);
    const single = join(dir, "model.safetensors");
    if (!existsSync(single)) {
      throw new SmolVLMError("bad_weights", "no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)", dir);
    }
    return new WeightStore([SafetensorsFile.open(single)]);
  }

  private static fromIndex(dir: string, indexPath: string): WeightStore {
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
    const store = new WeightStore(files);
    for (const name of Object.keys(map as Record<string, unknown>)) {
      if (!store.location.has(name)) throw new SmolVLMError("bad_weights", `index lists tensor "${name}" but its shard does not hold it`, indexPath);
    }
    return store;
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  /** Some exports drop the leading "model." of the published names; accept both. */
  private resolve(name: string): string | undefined {
    if (this.location.has(name)) return name;
    const alt = name.startsWith("model.") ? name.slice("model.".length) : `model.${name}`;
    return this.location.has(alt) ? alt : undefined;
  }

  /** Reads a tensor and checks its shape against what the config implies. */
  get(name: string, shape: readonly number[]): Tensor {
    const key = this.resolve(name);
    if (key === undefined) {
      throw new SmolVLMError("bad_weights", `tensor "${name}" is missing from the checkpoint`, this.files.map((f) => f.path).join(", "));
    }
    const file = this.location.get(key)!;
    const t = file.read(key);
    const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw new SmolVLMError(
        "bad_weights",
        `tensor "${key}" has shape ${JSON.stringify(t.shape)} but the config implies ${JSON.stringify(shape)} (config.json and weights from different models?)`,
        file.path,
      );
    }
    return t;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
