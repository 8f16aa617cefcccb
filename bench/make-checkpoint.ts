/**
 * Writes a checkpoint folder with the real SmolVLM-500M-Instruct geometry and small files, but
 * random weights (real weights cannot be downloaded on the build machines). Used by the benchmarks:
 * the shapes, dtype (bf16) and file layout are what a real run touches.
 *
 *   node dist/bench/make-checkpoint.js [OUT_DIR]     (default /tmp/smolvlm-500m-shaped)
 *
 * Weights are drawn like a trained model's rather than all-equal, because quantization error
 * depends on it: Gaussian with a log-normal scale per output row and per input column (trained
 * transformers have outlier feature channels), heavy tails (one value in 100 four times larger),
 * norms near 1, small biases; and the projections that write into the residual stream (o_proj,
 * down_proj, out_proj, fc2) scaled by 1/sqrt(2 * layers) as in GPT-2's initialisation, so that each
 * layer changes the residual stream by a fraction of its size, as in trained transformers. Without
 * that scaling a random 32-layer stack is chaotic: bf16 rounding of the activations alone moves its
 * logits by 1.5 %, which says nothing about a real model (bench/quant-accuracy.ts).
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseModelConfig, readJsonFile, type ModelConfig } from "../src/io/config.js";
import { encodeSafetensors, type Tensor } from "../src/io/safetensors.js";
import { f32ToBf16 } from "../src/backend/dtype.js";
import { dropFileCache } from "../src/backend/native-kernels.js";
import { Random } from "../src/generation/sampler.js";

const here = dirname(fileURLToPath(import.meta.url));
const REAL = join(here, "..", "..", "test", "fixtures", "real", "SmolVLM-500M-Instruct");

/** Every tensor the loader reads, with its shape, derived from the config. */
export function tensorShapes(c: ModelConfig): Record<string, number[]> {
  const t = c.text;
  const v = c.vision;
  const s: Record<string, number[]> = {};
  const side = Math.floor(v.imageSize / v.patchSize);
  s["model.vision_model.embeddings.patch_embedding.weight"] = [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize];
  s["model.vision_model.embeddings.patch_embedding.bias"] = [v.hiddenSize];
  s["model.vision_model.embeddings.position_embedding.weight"] = [side * side, v.hiddenSize];
  for (let i = 0; i < v.numLayers; i++) {
    const p = `model.vision_model.encoder.layers.${i}`;
    for (const n of ["layer_norm1", "layer_norm2"]) {
      s[`${p}.${n}.weight`] = [v.hiddenSize];
      s[`${p}.${n}.bias`] = [v.hiddenSize];
    }
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      s[`${p}.self_attn.${n}.weight`] = [v.hiddenSize, v.hiddenSize];
      s[`${p}.self_attn.${n}.bias`] = [v.hiddenSize];
    }
    s[`${p}.mlp.fc1.weight`] = [v.intermediateSize, v.hiddenSize];
    s[`${p}.mlp.fc1.bias`] = [v.intermediateSize];
    s[`${p}.mlp.fc2.weight`] = [v.hiddenSize, v.intermediateSize];
    s[`${p}.mlp.fc2.bias`] = [v.hiddenSize];
  }
  s["model.vision_model.post_layernorm.weight"] = [v.hiddenSize];
  s["model.vision_model.post_layernorm.bias"] = [v.hiddenSize];
  s["model.connector.modality_projection.proj.weight"] = [t.hiddenSize, v.hiddenSize * c.scaleFactor * c.scaleFactor];
  s["model.text_model.embed_tokens.weight"] = [t.vocabSize, t.hiddenSize];
  const q = t.numHeads * t.headDim;
  const kv = t.numKvHeads * t.headDim;
  for (let i = 0; i < t.numLayers; i++) {
    const p = `model.text_model.layers.${i}`;
    s[`${p}.input_layernorm.weight`] = [t.hiddenSize];
    s[`${p}.post_attention_layernorm.weight`] = [t.hiddenSize];
    s[`${p}.self_attn.q_proj.weight`] = [q, t.hiddenSize];
    s[`${p}.self_attn.k_proj.weight`] = [kv, t.hiddenSize];
    s[`${p}.self_attn.v_proj.weight`] = [kv, t.hiddenSize];
    s[`${p}.self_attn.o_proj.weight`] = [t.hiddenSize, q];
    s[`${p}.mlp.gate_proj.weight`] = [t.intermediateSize, t.hiddenSize];
    s[`${p}.mlp.up_proj.weight`] = [t.intermediateSize, t.hiddenSize];
    s[`${p}.mlp.down_proj.weight`] = [t.hiddenSize, t.intermediateSize];
  }
  s["model.text_model.norm.weight"] = [t.hiddenSize];
  if (!c.tieWordEmbeddings) s["lm_head.weight"] = [t.vocabSize, t.hiddenSize];
  return s;
}

function gaussian(rng: Random): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/** Projections whose output is added to the residual stream. */
const RESIDUAL_WRITERS = /(o_proj|down_proj|out_proj|fc2)\.weight$/;

export function drawTensor(name: string, shape: number[], rng: Random, layers: number): Tensor {
  const count = shape.reduce((a, b) => a * b, 1);
  const data = new Uint16Array(count);
  const isNorm = /norm|layernorm/.test(name) && name.endsWith("weight");
  const rows = shape[0]!;
  const cols = count / rows;
  const residualScale = RESIDUAL_WRITERS.test(name) ? 1 / Math.sqrt(2 * layers) : 1;
  const std = name.includes("embed") ? 0.5 : residualScale / Math.sqrt(shape.length > 1 ? cols : 1);
  const matrix = shape.length > 1 && !isNorm;
  const colScale = Float32Array.from({ length: cols }, () => (matrix ? Math.exp(0.4 * gaussian(rng)) : 1));
  for (let r = 0; r < rows; r++) {
    const rowScale = Math.exp(0.3 * gaussian(rng));
    for (let i = 0; i < cols; i++) {
      const tail = matrix && rng.next() < 0.01 ? 4 : 1;
      const g = gaussian(rng) * colScale[i]! * tail;
      const value = isNorm ? 1 + 0.1 * g : name.endsWith("bias") ? 0.05 * g : std * rowScale * g;
      data[r * cols + i] = f32ToBf16(value);
    }
  }
  return { dtype: "BF16", shape, data };
}

export function makeCheckpoint(out: string, seed = 1): void {
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(REAL)) {
    if (f.endsWith(".json") || f.endsWith(".txt")) copyFileSync(join(REAL, f), join(out, f === "config.derived-NOT-OFFICIAL.json" ? "config.json" : f));
  }
  const config = parseModelConfig(readJsonFile(join(out, "config.json")), join(out, "config.json"));
  const rng = new Random(seed);
  const tensors: Record<string, Tensor> = {};
  for (const [name, shape] of Object.entries(tensorShapes(config))) tensors[name] = drawTensor(name, shape, rng, name.includes("vision") ? config.vision.numLayers : config.text.numLayers);
  writeFileSync(join(out, "model.safetensors"), encodeSafetensors(tensors));
  dropFileCache(join(out, "model.safetensors")); // as a download leaves it: read back in 2 MiB folios
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2] ?? "/tmp/smolvlm-500m-shaped";
  if (existsSync(join(out, "model.safetensors"))) {
    console.log(`${out} already has model.safetensors`);
  } else {
    const t = Date.now();
    makeCheckpoint(out);
    console.log(`wrote ${out} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
}
