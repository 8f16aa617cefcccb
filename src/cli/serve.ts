/**
 * `smolvlm serve`: the OpenAI-compatible HTTP server (src/server/) from the command line. It runs
 * until SIGINT or SIGTERM, then closes connections and the worker and resolves to exit code 0.
 */
import { DTYPE_MODES, type DTypeMode } from "../smolvlm.js";
import { existsSync, statSync } from "node:fs";
import { basename, resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { SmolVLMError } from "../errors.js";
import { startServer, type RunningServer, type ServerOptions } from "../server/http.js";
import { DEFAULT_LIMITS } from "../server/openai.js";
import { resolveModel } from "../hub/resolve.js";
import { parseRepoRef } from "../hub/cache.js";

export const SERVE_USAGE = `usage:
  smolvlm serve --model MODEL [options]     (MODEL: a checkpoint folder or a Hub id org/name[@revision])

serve options:
  --host HOST               address to listen on (default 127.0.0.1)
  --port N                  port (default 8080; 0 picks a free one)
  --served-model-name NAME  the model id clients use (default: the Hub id, or the folder's name)
  --max-batch N             requests decoded together (default 8)
  --max-queue N             requests waiting beyond the batch; more get 429 (default 32)
  --prefill-chunk N         prompt positions prefilled per engine step (default 512)
  --dtype f32|bf16|q8|q4    arithmetic mode (default: a quantized folder's own mode, else bf16 where
                            the CPU has bf16 dot products, else f32); q8/q4 quantize the linear
                            weights as the model loads
  --prefix-cache-mb N       KV cache kept for reusing earlier prompts (default 512; 0 disables)
  --image-size N            longest edge images are resized to (default from the checkpoint)
  --no-image-splitting      one tile per image (faster, less detail)
  --allow-remote-images     fetch http(s) image URLs (default: data: URIs only)
  --allowed-image-hosts H   comma-separated hosts remote images may come from ("*.example.com" for
                            subdomains); a host named exactly may be on a private network
limits (each refusal is a 4xx that names the limit):
  --max-body-bytes N        request body size (default ${DEFAULT_LIMITS.maxBodyBytes}; 413 beyond)
  --max-images N            images per request (default ${DEFAULT_LIMITS.maxImages})
  --max-image-bytes N       encoded bytes per image (default ${DEFAULT_LIMITS.maxImageBytes})
  --max-image-pixels N      width*height per image, checked before decoding (default ${DEFAULT_LIMITS.maxImagePixels})
  --max-tokens N            the largest max_tokens a request may ask for (default ${DEFAULT_LIMITS.maxTokens})

endpoints: POST /v1/chat/completions, GET /v1/models, GET /health. Besides the OpenAI fields, a
request may set top_k, min_p, repetition_penalty and ignore_eos; image_url detail "low" (on every
image) encodes each image as one tile.
`;

const SERVE_OPTIONS = {
  model: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  "served-model-name": { type: "string" },
  "max-batch": { type: "string" },
  "max-queue": { type: "string" },
  "prefill-chunk": { type: "string" },
  "prefix-cache-mb": { type: "string" },
  dtype: { type: "string" },
  "image-size": { type: "string" },
  "no-image-splitting": { type: "boolean" },
  "allow-remote-images": { type: "boolean" },
  "allowed-image-hosts": { type: "string" },
  "max-body-bytes": { type: "string" },
  "max-images": { type: "string" },
  "max-image-bytes": { type: "string" },
  "max-image-pixels": { type: "string" },
  "max-tokens": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

export interface ServeHooks {
  /** Turns --model into a folder and a default model id (default: a folder, or a Hub reference via the cache). */
  resolveModel?: (ref: string) => Promise<{ dir: string; id: string }>;
  /** Called once the server listens (tests use it); default: nothing. */
  onListening?: (server: RunningServer) => void;
}

function int(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < min) {
    throw new SmolVLMError("bad_request", `--${name} expects an integer of at least ${min}, got "${value}"`);
  }
  return n;
}

/** A folder is served as its base name; a Hub reference (org/name[@rev]) is fetched into the cache and served as org/name. */
async function defaultResolve(ref: string): Promise<{ dir: string; id: string }> {
  const dir = resolve(await resolveModel(ref));
  const isFolder = existsSync(ref) && statSync(ref).isDirectory();
  return { dir, id: isFolder ? basename(resolve(ref)) : (parseRepoRef(ref)?.repoId ?? basename(dir)) };
}

/** Runs the server until SIGINT/SIGTERM; resolves to the exit code. */
export async function serve(args: string[], hooks: ServeHooks = {}): Promise<number> {
  const { values: v } = parseArgs({ args, options: SERVE_OPTIONS, strict: true, allowPositionals: false });
  if (v.help) {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  if (v.model === undefined) {
    process.stderr.write(`smolvlm: --model is required\n\n${SERVE_USAGE}`);
    return 2;
  }
  const prefixMb = int("prefix-cache-mb", v["prefix-cache-mb"], 0);
  const model = await (hooks.resolveModel ?? defaultResolve)(v.model);
  if (v.dtype !== undefined && !DTYPE_MODES.includes(v.dtype as DTypeMode)) {
    process.stderr.write(`smolvlm: --dtype ${v.dtype} is not available (available: ${DTYPE_MODES.join(", ")})\n`);
    return 2;
  }
  const options: ServerOptions = {
    modelDir: model.dir,
    dtype: v.dtype as DTypeMode | undefined,
    servedModelName: v["served-model-name"] ?? model.id,
    host: v.host ?? "127.0.0.1",
    port: int("port", v.port, 0) ?? 8080,
    maxBatch: int("max-batch", v["max-batch"], 1),
    maxQueue: int("max-queue", v["max-queue"], 0),
    engine: {
      ...(v["prefill-chunk"] !== undefined ? { prefillChunk: int("prefill-chunk", v["prefill-chunk"], 1) } : {}),
      ...(prefixMb !== undefined ? { prefixCacheBytes: prefixMb * 1024 * 1024 } : {}),
    },
    imageSize: int("image-size", v["image-size"], 1),
    imageSplitting: v["no-image-splitting"] ? false : undefined,
    allowRemoteImages: v["allow-remote-images"] === true,
    allowedImageHosts: (v["allowed-image-hosts"] ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h.length > 0),
    limits: {
      ...(v["max-body-bytes"] !== undefined ? { maxBodyBytes: int("max-body-bytes", v["max-body-bytes"], 1) } : {}),
      ...(v["max-images"] !== undefined ? { maxImages: int("max-images", v["max-images"], 0) } : {}),
      ...(v["max-image-bytes"] !== undefined ? { maxImageBytes: int("max-image-bytes", v["max-image-bytes"], 1) } : {}),
      ...(v["max-image-pixels"] !== undefined ? { maxImagePixels: int("max-image-pixels", v["max-image-pixels"], 1) } : {}),
      ...(v["max-tokens"] !== undefined ? { maxTokens: int("max-tokens", v["max-tokens"], 1) } : {}),
    },
  };
  if (options.allowedImageHosts!.length > 0 && !options.allowRemoteImages) {
    process.stderr.write("smolvlm: note: --allowed-image-hosts has no effect without --allow-remote-images\n");
  }

  const server = await startServer(options);
  process.stderr.write(`smolvlm: serving ${model.dir} as "${options.servedModelName}" on ${server.url}/v1 (listening on ${server.url})\n`);
  hooks.onListening?.(server);

  await new Promise<void>((done) => {
    const stop = (signal: string) => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      process.stderr.write(`smolvlm: ${signal}, shutting down\n`);
      done();
    };
    const onInt = () => stop("SIGINT");
    const onTerm = () => stop("SIGTERM");
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
  });
  await server.close();
  return 0;
}
