/**
 * The public entry point: a loaded SmolVLM checkpoint that turns chat messages and images into
 * generated text. The CLI and the server are thin layers over this class.
 *
 * One request flows: messages -> chat template -> images decoded and tiled -> `<image>` markers
 * expanded -> token ids -> vision encoder + connector -> prompt embeddings -> prefill -> decode
 * loop (sampler, stop conditions, streamed text).
 */
import { existsSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { SmolVLMError } from "./errors.js";
import { loadModelConfig, parseGenerationConfig, readJsonFile, type GenerationDefaults, type ModelConfig } from "./io/config.js";
import { WeightStore } from "./io/checkpoint.js";
import { Tokenizer } from "./tokenizer/tokenizer.js";
import { ChatTemplate, normalizeMessages, type ChatMessage, type ContentPart } from "./tokenizer/chat-template.js";
import { decodeImage } from "./image/decode.js";
import { ImageProcessor } from "./image/processor.js";
import { expandImageTokens } from "./image/prompt.js";
import { Idefics3Model } from "./model/idefics3.js";
import type { Kernels } from "./backend/kernels.js";
import { tsKernels } from "./backend/ts-kernels.js";
import { loadNativeKernels, nativeLoadError, type LinearMode } from "./backend/native-kernels.js";
import { QUANT_SCHEMES, type QuantScheme } from "./quant/format.js";
import type { SamplingOptions } from "./generation/sampler.js";
import { Engine, type EngineConfig, type FinishReason, type SequenceResult } from "./generation/engine.js";
import { AsyncQueue } from "./generation/async-queue.js";

/** An image as a file path, a `data:` URI, or encoded bytes (JPEG, PNG, WebP, GIF, TIFF, AVIF). */
export type ImageInput = string | Uint8Array;

/**
 * Arithmetic modes. "f32": activations in float32, weights widened to float32 inside the kernels
 * (the parity mode, what the tests compare with the reference). "bf16": bf16 dot products with
 * float32 accumulation (vdpbf16ps), the speed mode, with the KV cache in bf16 (as are the q8/q4
 * modes'). Weights stay in their checkpoint dtype in both.
 * "q8" / "q4": the linear layers' weights quantized in blocks of 32 (src/quant/format.ts), either
 * as the model loads or ahead of time by `smolvlm quantize`; the layers that stay in float
 * (input dimension not a multiple of 32) run in bf16 mode where the CPU has it, else f32.
 */
export type DTypeMode = "f32" | "bf16" | QuantScheme;

export const DTYPE_MODES: readonly DTypeMode[] = ["f32", "bf16", ...QUANT_SCHEMES];

export interface LoadOptions {
  /**
   * Arithmetic mode (default: a quantized folder's own scheme; else "bf16" where the CPU has bf16
   * dot products, else "f32").
   */
  dtype?: DTypeMode;
  /** Overrides the kernel backend (tests use this to compare backends). */
  kernels?: Kernels;
  /** Batching, prefill chunking and prompt-reuse settings of the generation engine. */
  engine?: Partial<EngineConfig>;
}

export interface ChatRequest {
  /** A conversation in the Hugging Face chat format; or use `prompt` for a single user turn. */
  messages?: ChatMessage[];
  /** One user turn: the images first, then this text (as in the model card). */
  prompt?: string;
  /** Images that fill the conversation's image parts, in order. */
  images?: ImageInput[];
  /** `size.longest_edge` of the image processor (default from the checkpoint). */
  imageSize?: number;
  /** Split large images into tiles plus a global view (default from the checkpoint). */
  imageSplitting?: boolean;
  /** Refuse images with more pixels than this before decoding them. */
  maxImagePixels?: number;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** Greedy decoding; the default follows generation_config.json's do_sample. */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  /** Never choose an EOS id (their logits are masked), so exactly maxNewTokens come out. */
  ignoreEos?: boolean;
  /** Strings that end generation (they may span tokens; the match is not output). */
  stop?: string[];
  signal?: AbortSignal;
  /** Keep the logits of the last prompt position in the result. */
  returnPromptLogits?: boolean;
}

export interface Timings {
  load_ms: number;
  image_decode_ms: number;
  preprocess_ms: number;
  vision_ms: number;
  prefill_ms: number;
  ttft_ms: number;
  decode_ms: number;
  decode_tokens_per_s: number;
  total_ms: number;
  prompt_tokens: number;
  /** Prompt positions reused from an earlier request instead of being prefilled. */
  cached_tokens: number;
  generated_tokens: number;
  image_tiles: number;
}

export type { FinishReason };

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  promptTokenIds: number[];
  finishReason: FinishReason;
  timings: Timings;
  promptLogits?: Float32Array;
}

/** A request made ready for the model: the expanded prompt, its ids and its tiles. */
export interface PreparedPrompt {
  prompt: string;
  inputIds: number[];
  /** Every image's tiles in prompt order; `perImage` says how many tiles each image has. */
  tiles: { data: Float32Array; count: number; size: number; perImage: number[] } | null;
  grids: { rows: number; cols: number }[];
  imageDecodeMs: number;
  preprocessMs: number;
}

const now = () => performance.now();

function isQuantScheme(dtype: DTypeMode | undefined): dtype is QuantScheme {
  return dtype !== undefined && (QUANT_SCHEMES as readonly string[]).includes(dtype);
}

/**
 * The mode a folder is loaded in: a quantized folder runs its own scheme and nothing else (its
 * float weights are gone); any other folder runs what was asked for.
 */
function requestedDtype(options: LoadOptions, config: ModelConfig, dir: string): DTypeMode | undefined {
  const q = config.quantization;
  if (!q) return options.dtype;
  if (options.dtype !== undefined && options.dtype !== q.scheme) {
    throw new SmolVLMError(
      "bad_request",
      `dtype "${options.dtype}" is not available: this folder is quantized with ${q.scheme} and runs only as ${q.scheme}; use the source (unquantized) checkpoint for other modes`,
      dir,
    );
  }
  return q.scheme;
}

/**
 * How the native kernels multiply float weights in a mode: exactly in f32, with bf16 products in
 * bf16, and in q8/q4 (for the layers left in float) with bf16 products only where the CPU has them.
 */
export function linearModeFor(dtype: DTypeMode, bf16Native: boolean): LinearMode {
  return isQuantScheme(dtype) ? (bf16Native ? "bf16" : "f32") : dtype;
}

/**
 * The native kernels when the addon is built, else the TypeScript reference (with a notice).
 * bf16 is the default mode only where the CPU multiplies bf16 natively; in q8/q4 modes the layers
 * left in float use bf16 products there too (the quantized ones already trade that much accuracy).
 */
function chooseKernels(options: LoadOptions, requested: DTypeMode | undefined): { kernels: Kernels; dtype: DTypeMode; notice?: string } {
  if (options.kernels) return { kernels: options.kernels, dtype: requested ?? "f32" };
  const native = process.env.SMOLVLM_KERNELS === "typescript" ? null : loadNativeKernels();
  if (!native) {
    const why = process.env.SMOLVLM_KERNELS === "typescript" ? "SMOLVLM_KERNELS=typescript" : nativeLoadError();
    return { kernels: tsKernels, dtype: requested ?? "f32", notice: `using the TypeScript kernels (slow): ${why}` };
  }
  const bf16 = native.info().bf16Native;
  const dtype = requested ?? (bf16 ? "bf16" : "f32");
  native.linearMode = linearModeFor(dtype, bf16);
  return { kernels: native, dtype };
}

/** The notice for weight files read back into 2 MiB pages at load (settlePageCache), if any were. */
function pageCacheNotice(store: WeightStore): string | undefined {
  const repairs = store.pageCacheRepairs();
  if (repairs.length === 0) return undefined;
  const what = repairs.map((r) => `${basename(r.path)} (${Math.round((100 * r.repaired) / r.blocks)}%)`).join(", ");
  return `read ${what} back from disk into 2 MiB pages: the page cache held it in small ones, which load slower (once)`;
}

export class SmolVLM {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly tokenizer: Tokenizer;
  readonly chatTemplate: ChatTemplate;
  readonly imageProcessor: ImageProcessor;
  readonly generationDefaults: GenerationDefaults;
  readonly model: Idefics3Model;
  readonly engine: Engine;
  readonly loadMs: number;
  /**
   * The kernel backend in use ("native" or "typescript") and the arithmetic mode, and a one-line
   * notice for the user where there is one (the TypeScript kernels in use; weights read back from
   * disk into 2 MiB pages at load).
   */
  readonly backend: { kernels: string; dtype: DTypeMode; notice?: string };

  private constructor(dir: string, options: LoadOptions) {
    const start = now();
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new SmolVLMError("not_found", "model folder not found", dir);
    this.dir = dir;
    this.config = loadModelConfig(join(dir, "config.json"));
    const genPath = join(dir, "generation_config.json");
    this.generationDefaults = parseGenerationConfig(existsSync(genPath) ? readJsonFile(genPath) : undefined, []);
    this.tokenizer = Tokenizer.fromModelDir(dir);
    this.chatTemplate = ChatTemplate.fromModelDir(dir);
    const { kernels, dtype, notice } = chooseKernels(options, requestedDtype(options, this.config, dir));
    this.imageProcessor = ImageProcessor.fromModelDir(dir, kernels.resample);
    const store = WeightStore.fromDir(dir, { quantize: isQuantScheme(dtype) ? dtype : undefined });
    const notices = [notice, pageCacheNotice(store)].filter((n): n is string => n !== undefined);
    this.backend = { kernels: kernels.name, dtype, notice: notices.length > 0 ? notices.join("; ") : undefined };
    try {
      // The speed modes keep keys and values in bf16 (half the cache memory and traffic); f32 is
      // the parity mode and keeps them exact.
      this.model = new Idefics3Model(store, this.config, kernels, { kvDtype: dtype === "f32" ? "F32" : "BF16" });
    } finally {
      store.close();
    }
    if (this.imageProcessor.tileSize !== this.config.vision.imageSize) {
      throw new SmolVLMError(
        "bad_config",
        `the processor makes ${this.imageProcessor.tileSize}px tiles but the vision encoder expects ${this.config.vision.imageSize}px (preprocessor_config.json max_image_size)`,
        dir,
      );
    }
    this.engine = new Engine(this.model, this.tokenizer, options.engine);
    this.loadMs = now() - start;
  }

  /** Loads a checkpoint folder (config, tokenizer, processor files and safetensors weights). */
  static async load(dir: string, options: LoadOptions = {}): Promise<SmolVLM> {
    if (options.dtype !== undefined && !DTYPE_MODES.includes(options.dtype)) {
      throw new SmolVLMError("bad_request", `dtype "${String(options.dtype)}" is not available (available: ${DTYPE_MODES.join(", ")})`);
    }
    return new SmolVLM(dir, options);
  }

  /** The conversation a request describes, with every image part paired with its image. */
  private conversation(request: ChatRequest): { messages: ChatMessage[]; images: ImageInput[] } {
    if ((request.messages === undefined) === (request.prompt === undefined)) {
      throw new SmolVLMError("bad_request", "give either messages or prompt (exactly one)");
    }
    const extra = [...(request.images ?? [])];
    const messages =
      request.messages !== undefined
        ? normalizeMessages(request.messages)
        : [{ role: "user", content: [...extra.map((): ContentPart => ({ type: "image" })), { type: "text" as const, text: request.prompt! }] }];
    const images: ImageInput[] = [];
    let next = 0;
    for (const m of messages) {
      if (typeof m.content === "string") continue;
      for (const part of m.content) {
        if (part.type !== "image") continue;
        const own = part.image;
        if (typeof own === "string" || own instanceof Uint8Array) images.push(own);
        else if (next < extra.length) images.push(extra[next++]!);
        else throw new SmolVLMError("bad_request", `the conversation has more image slots than images: ${extra.length} image(s) given`);
      }
    }
    if (next < extra.length) {
      throw new SmolVLMError("bad_request", `${extra.length} image(s) given but the conversation has only ${next} image slot(s) to put them in`);
    }
    return { messages, images };
  }

  /** Renders, preprocesses and tokenizes a request without running the model. */
  async prepare(request: ChatRequest): Promise<PreparedPrompt> {
    const { messages, images } = this.conversation(request);
    const rendered = this.chatTemplate.render(messages, { addGenerationPrompt: true });
    const t0 = now();
    const decoded = [];
    for (const img of images) decoded.push(await decodeImage(img, { maxPixels: request.maxImagePixels }));
    const t1 = now();
    const overrides = { longestEdge: request.imageSize, doImageSplitting: request.imageSplitting };
    const processed = decoded.map((img) => this.imageProcessor.process(img, overrides));
    const prompt = expandImageTokens(rendered, processed, { imageSeqLen: this.model.imageTokensPerTile });
    const inputIds = this.tokenizer.encode(prompt);
    const t2 = now();
    let tiles: PreparedPrompt["tiles"] = null;
    if (processed.length > 0) {
      const count = processed.reduce((n, p) => n + p.tiles, 0);
      // One image's tiles are used as they are; several are joined (one copy, not per image).
      let data = processed[0]!.pixelValues;
      if (processed.length > 1) {
        data = new Float32Array(processed.reduce((n, p) => n + p.pixelValues.length, 0));
        let offset = 0;
        for (const p of processed) {
          data.set(p.pixelValues, offset);
          offset += p.pixelValues.length;
        }
      }
      tiles = { data, count, size: processed[0]!.height, perImage: processed.map((p) => p.tiles) };
    }
    return { prompt, inputIds, tiles, grids: processed.map((p) => ({ rows: p.rows, cols: p.cols })), imageDecodeMs: t1 - t0, preprocessMs: t2 - t1 };
  }

  private samplingFor(options: GenerateOptions): SamplingOptions {
    const d = this.generationDefaults;
    const asksToSample = options.temperature !== undefined || options.topP !== undefined || options.topK !== undefined || options.minP !== undefined;
    return {
      greedy: options.greedy ?? (asksToSample ? false : !d.doSample),
      temperature: options.temperature ?? d.temperature,
      topK: options.topK ?? d.topK,
      topP: options.topP ?? d.topP,
      minP: options.minP ?? 0,
      repetitionPenalty: options.repetitionPenalty ?? d.repetitionPenalty,
      seed: options.seed ?? Math.floor(Math.random() * 2 ** 32),
    };
  }

  /**
   * Streams the answer as text deltas; the generator's return value is the full result.
   * Text is yielded as soon as it is complete (multi-byte characters are never split). Several
   * concurrent streams on one model are batched together by its engine. Leaving the loop early
   * cancels the request.
   */
  async *stream(request: ChatRequest, options: GenerateOptions = {}): AsyncGenerator<string, GenerationResult, void> {
    const start = now();
    const maxNewTokens = options.maxNewTokens ?? this.generationDefaults.maxNewTokens ?? 512;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new SmolVLMError("bad_request", `max_new_tokens must be a non-negative integer, got ${maxNewTokens}`);
    const sampling = this.samplingFor(options);
    let prepared: PreparedPrompt | null = await this.prepare(request);
    const summary = { ...prepared, tiles: null, tileCount: prepared.tiles?.count ?? 0 };
    // Without an explicit limit, generation simply stops at the end of the context.
    const room = this.config.text.maxPositionEmbeddings - prepared.inputIds.length;
    const limit = options.maxNewTokens === undefined ? Math.max(0, Math.min(maxNewTokens, room)) : maxNewTokens;
    this.checkContext(prepared.inputIds.length, limit);
    const cancel = new AbortController();
    const onAbort = () => cancel.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) cancel.abort();
    const queue = new AsyncQueue<string>();
    let outcome: { result: SequenceResult } | { error: unknown } | undefined;
    this.engine.submit(
      { inputIds: prepared.inputIds, tiles: prepared.tiles },
      {
        maxNewTokens: limit,
        sampling,
        eosTokenIds: this.generationDefaults.eosTokenIds,
        ignoreEos: options.ignoreEos ?? false,
        stop: options.stop ?? [],
        signal: cancel.signal,
        returnPromptLogits: options.returnPromptLogits ?? false,
      },
      {
        onText: (delta) => queue.push(delta),
        onDone: (result) => {
          outcome = { result };
          queue.end();
        },
        onError: (error) => {
          outcome = { error };
          queue.end();
        },
      },
    );
    prepared = null; // the engine owns the pixel values now and drops them after encoding
    try {
      for await (const delta of queue) yield delta;
    } finally {
      cancel.abort(); // no-op when finished; cancels when the consumer left early
      options.signal?.removeEventListener("abort", onAbort);
    }
    if (!outcome) throw new Error("the engine ended a request without a result");
    if ("error" in outcome) throw outcome.error;
    return this.result(outcome.result, summary, start);
  }

  /** The model cannot attend past its trained context: refuse before doing any work. */
  private checkContext(promptTokens: number, maxNewTokens: number): void {
    const context = this.config.text.maxPositionEmbeddings;
    if (promptTokens >= context) {
      throw new SmolVLMError("bad_request", `the prompt has ${promptTokens} tokens but the model's context length is ${context}`);
    }
    if (promptTokens + maxNewTokens > context) {
      throw new SmolVLMError("bad_request", `the prompt (${promptTokens} tokens) plus max_new_tokens (${maxNewTokens}) exceeds the model's context length of ${context}`);
    }
  }

  private result(r: SequenceResult, prepared: Omit<PreparedPrompt, "tiles"> & { tileCount: number }, start: number): GenerationResult {
    const end = now();
    const t = r.timings;
    const decodeMs = r.tokenIds.length > 0 ? t.last_token_at - t.first_token_at : 0;
    return {
      text: r.text,
      tokenIds: r.tokenIds,
      promptTokenIds: prepared.inputIds,
      finishReason: r.finishReason,
      promptLogits: r.promptLogits,
      timings: {
        load_ms: this.loadMs,
        image_decode_ms: prepared.imageDecodeMs,
        preprocess_ms: prepared.preprocessMs,
        vision_ms: t.vision_ms,
        prefill_ms: t.prefill_ms,
        ttft_ms: t.first_token_at > 0 ? t.first_token_at - start : end - start,
        decode_ms: decodeMs,
        decode_tokens_per_s: r.tokenIds.length > 1 && decodeMs > 0 ? ((r.tokenIds.length - 1) * 1000) / decodeMs : 0,
        total_ms: end - start,
        prompt_tokens: prepared.inputIds.length,
        cached_tokens: t.cached_tokens,
        generated_tokens: r.tokenIds.length,
        image_tiles: prepared.tileCount,
      },
    };
  }

  /** Runs a request to completion. */
  async generate(request: ChatRequest, options: GenerateOptions = {}): Promise<GenerationResult> {
    const it = this.stream(request, options);
    for (;;) {
      const step = await it.next();
      if (step.done) return step.value;
    }
  }
}
