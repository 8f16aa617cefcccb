/**
 * Quantization accuracy on TRAINED weights. SmolVLM's weights cannot be downloaded here, so the
 * 500M-shaped checkpoint is random; this bench takes a small trained Llama decoder instead (the
 * same architecture as SmolVLM's text model: RMSNorm, grouped-query attention with rotary
 * positions, SiLU-gated MLP): a llama2.c checkpoint such as `stories260K.bin` from
 * huggingface.co/karpathy/tinyllamas (MIT licence; dim 64, 5 layers, 8 heads, 4 KV heads,
 * vocabulary 512, trained on TinyStories). It is not committed: pass its path.
 *
 *   node dist/bench/trained-text.js --llama2c stories260K.bin [--positions 64] [--prompt 64] [--out DIR]
 *
 * The checkpoint is converted into SmolVLM's text-model layout (`model.text_model.*` names, bf16
 * like a published checkpoint; the MLP width padded with zero rows and columns to a multiple of
 * 32 so that down_proj can be quantized; q/k rows permuted from llama2.c's interleaved rotary
 * pairs to the Hugging Face half-split order) and run through smolvlm's own TextDecoder, weight
 * store and native kernels in f32 (the reference), bf16, q8 and q4 modes, exactly as
 * `SmolVLM.load` sets them up. The token sequence is the reference's own greedy story from BOS:
 * the first `--prompt` tokens (BOS included) are the prompt, the next `--positions` are teacher-forced.
 *
 * For contrast it runs the same measurement on a random checkpoint of identical shapes, drawn as
 * bench/make-checkpoint.ts draws the 500M-shaped one (`--random-seed N`, default 1).
 *
 * Checking the conversion: `--weights f32 --out DIR` keeps llama2.c's float32 weights and writes
 * the converted checkpoint and the reference's greedy tokens (DIR/greedy-tokens.json); they should
 * equal the token ids llama2.c's own `run.c` generates at temperature 0 from the same file.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TextConfig } from "../src/io/config.js";
import { encodeSafetensors, type Tensor } from "../src/io/safetensors.js";
import { WeightStore } from "../src/io/checkpoint.js";
import { TextDecoder } from "../src/model/text-decoder.js";
import { linearModeFor } from "../src/smolvlm.js";
import { loadNativeKernels } from "../src/backend/native-kernels.js";
import { f32ToBf16 } from "../src/backend/dtype.js";
import { argmax, Random } from "../src/generation/sampler.js";
import { QUANT_BLOCK, quantizable } from "../src/quant/format.js";
import { relL2, withRoundTrip } from "./accuracy-tools.js";
import { drawTensor } from "./make-checkpoint.js";

const argv = process.argv.slice(2);
function option(name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}
const SOURCE = option("--llama2c", "");
const POSITIONS = Number(option("--positions", "64"));
const PROMPT = Number(option("--prompt", "64"));
const RANDOM_SEED = Number(option("--random-seed", "1"));
const OUT = option("--out", "");
/** --weights f32 keeps llama2.c's float32 weights (to check the conversion against llama2.c itself). */
const WEIGHTS = option("--weights", "bf16");
const BOS = 1;
/**
 * The modes compared with the f32 reference. "q8 weights" and "q4 weights" keep the activations in
 * float32 and only round-trip the weights (withRoundTrip in bench/accuracy-tools.ts): what the weight code
 * alone costs, against the real modes, which also quantize the activations to int8.
 */
const MODES = ["bf16", "q8", "q8 weights", "q4", "q4 weights"] as const;
type Mode = "f32" | (typeof MODES)[number];

interface Converted {
  config: TextConfig;
  tensors: Record<string, Tensor>;
}

/**
 * Reads a llama2.c checkpoint: a header of seven int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len; a negative vocab_size means an untied classifier), then float32
 * arrays in a fixed order, each linear stored [out, in] like torch's nn.Linear.
 */
function readLlama2c(path: string): Converted {
  const file = readFileSync(path);
  const header = new Int32Array(file.buffer.slice(file.byteOffset, file.byteOffset + 28));
  const [dim, hidden, layers, heads, kvHeads, signedVocab, seqLen] = Array.from(header) as [number, number, number, number, number, number, number];
  const vocab = Math.abs(signedVocab);
  const headDim = dim / heads;
  const floats = new Float32Array(file.buffer.slice(file.byteOffset + 28, file.byteOffset + file.length - ((file.length - 28) % 4)));
  let at = 0;
  const take = (n: number): Float32Array => floats.subarray(at, (at += n));
  const embed = take(vocab * dim);
  const attnNorm = take(layers * dim);
  const wq = take(layers * dim * dim);
  const wk = take(layers * kvHeads * headDim * dim);
  const wv = take(layers * kvHeads * headDim * dim);
  const wo = take(layers * dim * dim);
  const ffnNorm = take(layers * dim);
  const w1 = take(layers * hidden * dim);
  const w2 = take(layers * dim * hidden);
  const w3 = take(layers * hidden * dim);
  const finalNorm = take(dim);
  take(seqLen * headDim); // the old rotary tables (cos and sin halves), unused
  const classifier = signedVocab > 0 ? null : take(vocab * dim);
  if (at > floats.length) throw new Error(`${path}: file too short for its header (${dim}, ${hidden}, ${layers}, ${heads}, ${kvHeads}, ${signedVocab}, ${seqLen})`);

  const ffn = Math.ceil(hidden / QUANT_BLOCK) * QUANT_BLOCK;
  const bf16 = (data: Float32Array, shape: number[]): Tensor =>
    WEIGHTS === "f32" ? { dtype: "F32", shape, data: Float32Array.from(data) } : { dtype: "BF16", shape, data: Uint16Array.from(data, f32ToBf16) };
  // llama2.c rotates interleaved pairs (0,1), (2,3)...; Hugging Face Llama rotates (i, i + d/2).
  // Reordering each head's output rows (even ones first, then odd) turns one into the other.
  const halfSplit = (w: Float32Array, nHeads: number): Float32Array => {
    const out = new Float32Array(w.length);
    for (let h = 0; h < nHeads; h++) {
      for (let r = 0; r < headDim; r++) {
        const from = h * headDim + r;
        const to = h * headDim + (r % 2 === 0 ? r / 2 : headDim / 2 + (r - 1) / 2);
        out.set(w.subarray(from * dim, (from + 1) * dim), to * dim);
      }
    }
    return out;
  };
  // Zero rows of gate/up and zero columns of down: silu(0) * 0 adds nothing, so the model is unchanged.
  const padRows = (w: Float32Array): Float32Array => {
    const out = new Float32Array(ffn * dim);
    out.set(w);
    return out;
  };
  const padColumns = (w: Float32Array): Float32Array => {
    const out = new Float32Array(dim * ffn);
    for (let r = 0; r < dim; r++) out.set(w.subarray(r * hidden, (r + 1) * hidden), r * ffn);
    return out;
  };
  const tensors: Record<string, Tensor> = { "model.text_model.embed_tokens.weight": bf16(embed, [vocab, dim]) };
  const kvDim = kvHeads * headDim;
  for (let l = 0; l < layers; l++) {
    const p = `model.text_model.layers.${l}`;
    const slice = (a: Float32Array, n: number) => a.subarray(l * n, (l + 1) * n);
    tensors[`${p}.input_layernorm.weight`] = bf16(slice(attnNorm, dim), [dim]);
    tensors[`${p}.self_attn.q_proj.weight`] = bf16(halfSplit(slice(wq, dim * dim), heads), [dim, dim]);
    tensors[`${p}.self_attn.k_proj.weight`] = bf16(halfSplit(slice(wk, kvDim * dim), kvHeads), [kvDim, dim]);
    tensors[`${p}.self_attn.v_proj.weight`] = bf16(slice(wv, kvDim * dim), [kvDim, dim]);
    tensors[`${p}.self_attn.o_proj.weight`] = bf16(slice(wo, dim * dim), [dim, dim]);
    tensors[`${p}.post_attention_layernorm.weight`] = bf16(slice(ffnNorm, dim), [dim]);
    tensors[`${p}.mlp.gate_proj.weight`] = bf16(padRows(slice(w1, hidden * dim)), [ffn, dim]);
    tensors[`${p}.mlp.up_proj.weight`] = bf16(padRows(slice(w3, hidden * dim)), [ffn, dim]);
    tensors[`${p}.mlp.down_proj.weight`] = bf16(padColumns(slice(w2, dim * hidden)), [dim, ffn]);
  }
  tensors["model.text_model.norm.weight"] = bf16(finalNorm, [dim]);
  if (classifier) tensors["lm_head.weight"] = bf16(classifier, [vocab, dim]);

  const config: TextConfig = {
    hiddenSize: dim, intermediateSize: ffn, numLayers: layers, numHeads: heads, numKvHeads: kvHeads, headDim, vocabSize: vocab,
    rmsNormEps: 1e-5, rope: { theta: 10000, type: "default", factor: 1 }, maxPositionEmbeddings: seqLen, hiddenAct: "silu",
  };
  return { config, tensors };
}

/** The same shapes, drawn at random as the 500M-shaped benchmark checkpoint is. */
function randomLike(model: Converted, seed: number): Converted {
  const rng = new Random(seed);
  const tensors: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(model.tensors)) tensors[name] = drawTensor(name, [...t.shape], rng, model.config.numLayers);
  return { ...model, tensors };
}

const native = loadNativeKernels();
if (!native) throw new Error("this bench needs the native kernels (node scripts/build-native.mjs)");

/**
 * A decoder over the checkpoint in `dir`, set up as SmolVLM.load sets up `mode`: quantized at
 * load time in q8/q4, the float layers (embeddings, norms) and the KV cache as in that mode.
 */
function decoder(dir: string, model: Converted, mode: Mode): TextDecoder {
  const tied = !("lm_head.weight" in model.tensors);
  if (mode === "q8 weights" || mode === "q4 weights") {
    const store = WeightStore.fromDir(dir);
    try {
      return new TextDecoder(store, model.config, tied, withRoundTrip(quantizable, mode === "q8 weights" ? "q8" : "q4"), "F32");
    } finally {
      store.close();
    }
  }
  const k = native!;
  k.linearMode = linearModeFor(mode, k.info().bf16Native);
  const store = WeightStore.fromDir(dir, { quantize: mode === "q8" || mode === "q4" ? mode : undefined });
  try {
    return new TextDecoder(store, model.config, tied, k, mode === "f32" ? "F32" : "BF16");
  } finally {
    store.close();
  }
}

/** Logits [tokens.length, vocab] of every position of `tokens`, prompt and forced continuation alike. */
function forcedLogits(d: TextDecoder, tokens: number[]): Float32Array {
  const cache = d.newCache(tokens.length);
  const prompt = d.forward(d.embed(tokens.slice(0, PROMPT)), PROMPT, cache, true);
  const rest = d.forward(d.embed(tokens.slice(PROMPT)), tokens.length - PROMPT, cache, true);
  const all = new Float32Array(prompt.length + rest.length);
  all.set(prompt);
  all.set(rest, prompt.length);
  return all;
}

/** BOS and the reference's greedy continuation: PROMPT + POSITIONS tokens in all. */
function greedy(d: TextDecoder): number[] {
  const tokens = [BOS];
  const cache = d.newCache(PROMPT + POSITIONS + 1);
  let logits = d.forward(d.embed(tokens), 1, cache);
  while (tokens.length < PROMPT + POSITIONS) {
    tokens.push(argmax(logits));
    logits = d.forward(d.embed(tokens.slice(-1)), 1, cache);
  }
  return tokens;
}

function measure(label: string, model: Converted): void {
  const dir = OUT && label === "trained" ? OUT : join(tmpdir(), `smolvlm-trained-text-${process.pid}-${label}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "model.safetensors"), encodeSafetensors(model.tensors));
  const reference = decoder(dir, model, "f32");
  const tokens = greedy(reference);
  if (OUT && label === "trained") writeFileSync(join(dir, "greedy-tokens.json"), JSON.stringify(tokens));
  const ref = forcedLogits(reference, tokens);
  const v = model.config.vocabSize;
  const row = (a: Float32Array, p: number) => a.subarray(p * v, (p + 1) * v);
  // Mean top-1 probability of the reference over the forced positions: how sure the model is.
  let confidence = 0;
  for (let p = PROMPT; p < PROMPT + POSITIONS; p++) {
    const r = row(ref, p - 1);
    const max = r[argmax(r)]!;
    let sum = 0;
    for (const x of r) sum += Math.exp(x - max);
    confidence += 1 / sum / POSITIONS;
  }
  console.log(`\n${label}: ${model.config.numLayers} layers, hidden ${model.config.hiddenSize}, vocabulary ${v}; prompt ${PROMPT} tokens (BOS, then the reference's greedy story), the next ${POSITIONS} teacher-forced; reference top-1 probability ${confidence.toFixed(2)} on average`);
  console.log(`${"mode".padEnd(10)} ${"last-prompt relL2".padStart(18)} ${"mean relL2".padStart(11)} ${"top-1 agreement".padStart(16)}`);
  for (const mode of MODES) {
    const got = forcedLogits(decoder(dir, model, mode), tokens);
    const last = relL2(row(got, PROMPT - 1), row(ref, PROMPT - 1));
    let sum = 0, agree = 0;
    // Row p - 1 predicts token p: the forced positions are PROMPT .. PROMPT + POSITIONS - 1.
    for (let p = PROMPT; p < PROMPT + POSITIONS; p++) {
      sum += relL2(row(got, p - 1), row(ref, p - 1));
      if (argmax(row(got, p - 1)) === argmax(row(ref, p - 1))) agree++;
    }
    console.log(`${mode.padEnd(10)} ${last.toExponential(2).padStart(18)} ${(sum / POSITIONS).toExponential(2).padStart(11)} ${`${agree}/${POSITIONS}`.padStart(16)}`);
  }
  if (!(OUT && label === "trained")) rmSync(dir, { recursive: true, force: true });
}

if (!SOURCE) throw new Error("pass --llama2c PATH (a llama2.c checkpoint such as stories260K.bin)");
const trained = readLlama2c(SOURCE);
console.log(`${SOURCE}: converted (MLP ${trained.config.intermediateSize} wide after padding); native kernels ${native.info().isa}`);
measure("trained", trained);
measure("random", randomLike(trained, RANDOM_SEED));
