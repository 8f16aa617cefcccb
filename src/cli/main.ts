/**
 * The `smolvlm` command: a thin layer over the library. Generated text goes to stdout (or, with
 * --json, exactly one JSON line); notices and progress go to stderr.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { SmolVLMError } from "../errors.js";
import { DTYPE_MODES, SmolVLM, type ChatRequest, type DTypeMode, type GenerateOptions } from "../smolvlm.js";
import { ImageProcessor } from "../image/processor.js";
import { loadNativeKernels } from "../backend/native-kernels.js";
import { decodeImage } from "../image/decode.js";
import { serve } from "./serve.js";
import { HUB_USAGE, ls, pull, rm } from "./hub-commands.js";
import { resolveModel } from "../hub/resolve.js";
import { quantizeCheckpoint } from "../quant/quantize-model.js";
import { QUANT_SCHEMES, type QuantScheme } from "../quant/format.js";

const USAGE = `usage:
  smolvlm run --model MODEL (--prompt TEXT | --messages FILE.json) [options]
  smolvlm preprocess --model DIR --image PATH --out FILE [--image-size N] [--no-image-splitting]
  smolvlm serve --model MODEL [--host H] [--port N] [options]   (OpenAI-compatible server; serve --help)
  smolvlm quantize --model MODEL --dtype q8|q4 --out DIR [--force]   (write a quantized copy of a checkpoint)

${HUB_USAGE}
MODEL is a local checkpoint folder or a Hugging Face Hub id org/name[@revision] (downloaded once
into the Hugging Face cache, shared with Python's huggingface_hub).

run options:
  --image PATH            an image (repeatable); fills the conversation's image slots in order
  --image-size N          longest edge images are resized to (size.longest_edge)
  --no-image-splitting    encode each image as one tile, without the split into sub-images
  --max-image-pixels N    refuse images with more pixels than this before decoding (default 100000000)
  --max-new-tokens N      tokens to generate at most (default 512)
  --greedy                always pick the most likely token
  --temperature T         sample with this temperature (also --top-k, --top-p, --min-p)
  --repetition-penalty R  discourage repeating tokens of the context (>1)
  --seed N                seed for sampling
  --ignore-eos            never stop at end-of-sequence: exactly --max-new-tokens tokens
  --dtype MODE            f32 (exact, as the reference), bf16 (bf16 dot products, faster; the default
                          where the CPU has them), q8 or q4 (linear weights quantized as they load:
                          8.5 or 5 bits per weight instead of 16); a folder written by \`smolvlm quantize\`
                          runs in its own mode without this option
  --json                  print one JSON line {text, token_ids, prompt_token_ids, timings}
  --logits-out FILE       write the last prompt position's logits as raw float32 (little-endian)
`;

const RUN_OPTIONS = {
  model: { type: "string" },
  prompt: { type: "string" },
  messages: { type: "string" },
  image: { type: "string", multiple: true },
  "image-size": { type: "string" },
  "no-image-splitting": { type: "boolean" },
  "max-image-pixels": { type: "string" },
  "max-new-tokens": { type: "string" },
  greedy: { type: "boolean" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
  "ignore-eos": { type: "boolean" },
  dtype: { type: "string" },
  json: { type: "boolean" },
  "logits-out": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

const QUANTIZE_OPTIONS = {
  model: { type: "string" },
  dtype: { type: "string" },
  out: { type: "string" },
  force: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

const PREPROCESS_OPTIONS = {
  model: { type: "string" },
  image: { type: "string" },
  out: { type: "string" },
  "image-size": { type: "string" },
  "no-image-splitting": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

class UsageError extends Error {}

function number(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} expects ${integer ? "an integer" : "a number"}, got "${value}"`);
  }
  return n;
}

function required(name: string, value: string | undefined): string {
  if (value === undefined) throw new UsageError(`--${name} is required`);
  return value;
}

function readMessages(path: string): ChatRequest["messages"] {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new SmolVLMError("bad_request", `cannot read messages: ${(e as Error).message}`, path);
  }
  if (!Array.isArray(value)) throw new SmolVLMError("bad_request", "expected a JSON array of chat messages", path);
  return value as ChatRequest["messages"];
}

async function run(args: string[]): Promise<number> {
  const { values: v } = parseArgs({ args, options: RUN_OPTIONS, strict: true, allowPositionals: false });
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const model = required("model", v.model);
  if ((v.prompt === undefined) === (v.messages === undefined)) throw new UsageError("give exactly one of --prompt and --messages");
  if (v.dtype !== undefined && !DTYPE_MODES.includes(v.dtype as DTypeMode)) throw new UsageError(`--dtype ${v.dtype} is not available (available: ${DTYPE_MODES.join(", ")})`);
  const request: ChatRequest = {
    prompt: v.prompt,
    messages: v.messages !== undefined ? readMessages(v.messages) : undefined,
    images: v.image ?? [],
    imageSize: number("image-size", v["image-size"], true),
    imageSplitting: v["no-image-splitting"] ? false : undefined,
    maxImagePixels: number("max-image-pixels", v["max-image-pixels"], true),
  };
  const options: GenerateOptions = {
    maxNewTokens: number("max-new-tokens", v["max-new-tokens"], true),
    greedy: v.greedy ? true : undefined,
    temperature: number("temperature", v.temperature, false),
    topK: number("top-k", v["top-k"], true),
    topP: number("top-p", v["top-p"], false),
    minP: number("min-p", v["min-p"], false),
    repetitionPenalty: number("repetition-penalty", v["repetition-penalty"], false),
    seed: number("seed", v.seed, true),
    ignoreEos: v["ignore-eos"] === true,
    returnPromptLogits: v["logits-out"] !== undefined,
  };
  // One request per process: keeping its KV cache for reuse would only raise the peak memory.
  const vlm = await SmolVLM.load(await resolveModel(model), { dtype: v.dtype as DTypeMode | undefined, engine: { prefixCacheBytes: 0 } });
  if (vlm.backend.notice) process.stderr.write(`smolvlm: ${vlm.backend.notice}\n`);
  if (!v.json) process.stderr.write(`loaded ${model} in ${vlm.loadMs.toFixed(0)} ms (${vlm.backend.kernels} kernels, ${vlm.backend.dtype})\n`);

  const stream = vlm.stream(request, options);
  let step = await stream.next();
  while (!step.done) {
    if (!v.json) process.stdout.write(step.value);
    step = await stream.next();
  }
  const result = step.value;
  if (v["logits-out"] !== undefined && result.promptLogits) {
    const l = result.promptLogits;
    writeFileSync(v["logits-out"], new Uint8Array(l.buffer, l.byteOffset, l.byteLength));
  }
  if (v.json) {
    process.stdout.write(
      JSON.stringify({
        text: result.text,
        token_ids: result.tokenIds,
        prompt_token_ids: result.promptTokenIds,
        finish_reason: result.finishReason,
        timings: result.timings,
      }) + "\n",
    );
  } else {
    process.stdout.write("\n");
    const t = result.timings;
    process.stderr.write(
      `${t.prompt_tokens} prompt tokens (${t.image_tiles} image tiles), ${t.generated_tokens} generated; ` +
        `vision ${t.vision_ms.toFixed(0)} ms, prefill ${t.prefill_ms.toFixed(0)} ms, first token ${t.ttft_ms.toFixed(0)} ms, ${t.decode_tokens_per_s.toFixed(1)} tokens/s\n`,
    );
  }
  return 0;
}

async function preprocess(args: string[]): Promise<number> {
  const { values: v } = parseArgs({ args, options: PREPROCESS_OPTIONS, strict: true, allowPositionals: false });
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  // The same bytes either way; the addon's resize passes are faster when it is built.
  const processor = ImageProcessor.fromModelDir(required("model", v.model), loadNativeKernels()?.resample);
  const image = await decodeImage(required("image", v.image));
  const out = processor.process(image, {
    longestEdge: number("image-size", v["image-size"], true),
    doImageSplitting: v["no-image-splitting"] ? false : undefined,
  });
  const pv = out.pixelValues;
  writeFileSync(required("out", v.out), new Uint8Array(pv.buffer, pv.byteOffset, pv.byteLength));
  process.stdout.write(JSON.stringify({ shape: [out.tiles, 3, out.height, out.width], rows: out.rows, cols: out.cols }) + "\n");
  return 0;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

async function quantize(args: string[]): Promise<number> {
  const { values: v } = parseArgs({ args, options: QUANTIZE_OPTIONS, strict: true, allowPositionals: false });
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const dtype = required("dtype", v.dtype);
  if (!QUANT_SCHEMES.includes(dtype as QuantScheme)) throw new UsageError(`--dtype ${dtype} is not available for quantize (available: ${QUANT_SCHEMES.join(", ")})`);
  const out = required("out", v.out);
  const source = await resolveModel(required("model", v.model));
  const tty = process.stderr.isTTY === true;
  const r = quantizeCheckpoint({
    source,
    out,
    scheme: dtype,
    force: v.force === true,
    onProgress: tty ? ({ done, total }) => process.stderr.write(`\rquantizing: ${done}/${total} tensors`) : undefined,
  });
  if (tty) process.stderr.write("\n");
  process.stdout.write(
    `wrote ${r.out}: ${r.tensors} tensors (${r.quantized} weights quantized to ${r.scheme}), ` +
      `${mb(r.bytesBefore)} -> ${mb(r.bytesAfter)}, in ${r.seconds.toFixed(1)} s\n`,
  );
  return 0;
}

/** Runs the CLI; resolves to the process exit code. User errors print one line, never a stack. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "run":
        return await run(rest);
      case "preprocess":
        return await preprocess(rest);
      case "serve":
        return await serve(rest);
      case "quantize":
        return await quantize(rest);
      case "pull":
        return await pull(rest);
      case "ls":
        return await ls(rest);
      case "rm":
        return await rm(rest);
      case undefined:
      case "-h":
      case "--help":
      case "help":
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS"))) {
      process.stderr.write(`smolvlm: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof SmolVLMError || e instanceof RangeError) {
      process.stderr.write(`smolvlm: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
