/**
 * The OpenAI-compatible HTTP server: routing, request limits, the bounded queue, SSE streaming
 * and cancellation. It runs on node:http, and the model lives in a worker thread (worker.ts), so
 * this thread only parses, validates, fetches and writes: /health and new connections are
 * answered while the worker spends seconds on an image.
 *
 * Endpoints: POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id}, GET /health.
 *
 * A request's life: the body is read up to --max-body-bytes (413 past it), parsed and validated
 * (400 naming the field), its model name checked (404 model_not_found), a slot taken in the
 * bounded queue (429 with Retry-After when all --max-batch + --max-queue slots are taken), its
 * images fetched and checked from their headers (count, bytes, pixels, format), and it is
 * handed to the worker. A streamed answer starts its SSE response at the first token, so an error
 * found while the worker prepares the prompt (a prompt longer than the context, say) is still a
 * proper 4xx. When the client disconnects, the request is cancelled in the worker at once.
 */
import type { DTypeMode } from "../smolvlm.js";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import sharp, { type Metadata } from "sharp";
import {
  ApiError,
  chunk,
  completion,
  completionId,
  DEFAULT_LIMITS,
  modelObject,
  parseChatRequest,
  usage,
  usageChunk,
  type ParsedChatRequest,
  type RequestLimits,
  type WireFinishReason,
} from "./openai.js";
import { fetchRemoteImage } from "./remote-images.js";
import { WorkerClient, type JobSummary, type SerializedError, type WorkerJob } from "./worker-client.js";
import type { EngineConfig } from "../generation/engine.js";

export interface ServerOptions {
  /** The model folder the worker loads. */
  modelDir: string;
  /** Arithmetic mode of the model (default: the library's). */
  dtype?: DTypeMode;
  /** The id /v1/models lists and requests must name. */
  servedModelName: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Sequences decoded together (the engine's batch). */
  maxBatch?: number;
  /** Requests allowed to wait beyond the batch; more are refused with 429. */
  maxQueue?: number;
  /** Other engine settings (prefill chunk, prefix cache bytes). */
  engine?: Partial<Omit<EngineConfig, "maxBatch">>;
  limits?: Partial<RequestLimits>;
  allowRemoteImages?: boolean;
  /** Hosts remote images may come from (empty: any public host). */
  allowedImageHosts?: string[];
  /** Longest edge images are resized to (default from the checkpoint). */
  imageSize?: number;
  /** false: every image is one tile (no split into sub-images). */
  imageSplitting?: boolean;
  /** Nice levels the inference thread runs below the HTTP thread (Linux; default 5, 0 disables). */
  workerNiceness?: number;
  /** Where log lines go (default: stderr). */
  log?: (line: string) => void;
}

export interface RunningServer {
  /** http://host:port */
  url: string;
  port: number;
  server: Server;
  worker: WorkerClient;
  close(): Promise<void>;
}

/** The image formats accepted (what decodeImage is checked against); SVG, PDF and the like are refused. */
const IMAGE_FORMATS = new Set(["jpeg", "png", "webp", "gif", "tiff", "heif", "avif"]);

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const limits: RequestLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const maxBatch = options.maxBatch ?? 8;
  const maxQueue = options.maxQueue ?? 32;
  const modelName = options.servedModelName;
  const started = Date.now();
  const createdAt = Math.floor(started / 1000);

  const worker = new WorkerClient({ modelDir: options.modelDir, dtype: options.dtype, engine: { ...options.engine, maxBatch }, niceness: options.workerNiceness ?? 5 });
  worker.on("log", log);
  await worker.start();

  /** Requests holding a slot: validated and not yet finished (fetching images, queued or generating). */
  let slots = 0;
  /** How long this thread's event loop was kept from answering (it must stay short while the worker computes). */
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  function sendError(res: ServerResponse, e: ApiError, headers: Record<string, string> = {}): void {
    sendJson(res, e.status, e.body(), headers);
  }

  function health(res: ServerResponse, query: URLSearchParams): void {
    if (query.get("gc") === "1") worker.collectGarbage();
    const m = process.memoryUsage();
    const ok = worker.state === "ready";
    sendJson(res, ok ? 200 : 503, {
      status: ok ? "ok" : worker.state,
      model: modelName,
      uptime_s: Math.round((Date.now() - started) / 1000),
      worker: { state: worker.state, restarts: worker.restarts, context_length: worker.contextLength },
      requests: { in_flight: slots, active: worker.engineLoad.active, waiting: worker.engineLoad.waiting, max_batch: maxBatch, max_queue: maxQueue },
      memory: {
        rss: m.rss,
        heap_used: m.heapUsed,
        external: m.external,
        array_buffers: m.arrayBuffers,
        worker: { heap_used: worker.workerMemory.heapUsed, external: worker.workerMemory.external, array_buffers: worker.workerMemory.arrayBuffers },
      },
      event_loop_delay_ms: { max: round1(loopDelay.max / 1e6), p99: round1(loopDelay.percentile(99) / 1e6) },
    });
  }

  async function chatCompletions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req, res, limits.maxBodyBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, "invalid_json");
    }
    const parsed = parseChatRequest(body, limits);
    if (parsed.model !== undefined && parsed.model !== modelName) {
      throw new ApiError(404, `The model \`${parsed.model}\` does not exist; this server serves \`${modelName}\``, "model_not_found", "model");
    }
    const remoteImage = parsed.images.find((i) => i.kind === "remote");
    if (remoteImage && !options.allowRemoteImages) {
      throw new ApiError(400, `${remoteImage.param}: remote image URLs are not enabled on this server (start it with --allow-remote-images); send the image as a data: URI`, "remote_images_disabled", remoteImage.param);
    }
    if (slots >= maxBatch + maxQueue) {
      const retry = String(Math.max(1, Math.ceil(slots / maxBatch)));
      throw Object.assign(
        new ApiError(429, `the server is busy: ${slots} requests are running or queued, its limit (--max-batch ${maxBatch} + --max-queue ${maxQueue}); retry after ${retry} s`, "queue_full"),
        { retryAfter: retry },
      );
    }
    slots++;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        slots--;
      }
    };
    try {
      await generate(parsed, req, res, release);
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Fetches and checks the images, submits to the worker, and answers; calls release() once the slot is free. */
  async function generate(parsed: ParsedChatRequest, req: IncomingMessage, res: ServerResponse, release: () => void): Promise<void> {
    const gone = new AbortController();
    let jobId: number | undefined;
    res.on("close", () => {
      if (res.writableFinished) return;
      gone.abort();
      if (jobId !== undefined) worker.cancel(jobId);
    });
    if (res.destroyed || req.socket.destroyed) gone.abort();

    const images: Uint8Array[] = [];
    for (const source of parsed.images) {
      let bytes: Uint8Array;
      if (source.kind === "bytes") {
        bytes = source.bytes;
      } else {
        bytes = await fetchRemoteImage(source.url, source.param, { allowedHosts: options.allowedImageHosts ?? [], maxBytes: limits.maxImageBytes }, gone.signal);
      }
      if (bytes.byteLength > limits.maxImageBytes) {
        throw new ApiError(400, `${source.param}: the image is ${bytes.byteLength} bytes, over this server's limit of ${limits.maxImageBytes} bytes per image (--max-image-bytes)`, "image_too_large", source.param);
      }
      await checkImageHeader(bytes, source.param, limits.maxImagePixels);
      images.push(bytes);
    }
    if (gone.signal.aborted) {
      release();
      return;
    }

    const job: WorkerJob = {
      request: {
        messages: parsed.messages,
        images,
        imageSize: options.imageSize,
        imageSplitting: parsed.imageSplitting ?? options.imageSplitting,
        maxImagePixels: limits.maxImagePixels,
      },
      options: { ...parsed.options },
      maxTokensCap: limits.maxTokens,
    };

    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    let text = "";
    let streaming = false;
    const write = (obj: unknown) => {
      if (!res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const startStream = () => {
      if (streaming || res.destroyed) return;
      streaming = true;
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
      write(chunk(id, created, modelName, { role: "assistant", content: "" }, null, parsed.includeUsage));
    };

    await new Promise<void>((resolve) => {
      jobId = worker.submit(job, {
        onDelta(delta) {
          if (!parsed.stream) {
            text += delta;
            return;
          }
          startStream();
          write(chunk(id, created, modelName, { content: delta }, null, parsed.includeUsage));
        },
        onDone(summary: JobSummary) {
          release();
          resolve();
          log(
            `${id} ${summary.finishReason}: ${summary.promptTokens} prompt tokens (${summary.cachedTokens} cached), ${summary.completionTokens} generated, ` +
              `first token ${summary.ttftMs.toFixed(0)} ms, total ${summary.totalMs.toFixed(0)} ms`,
          );
          if (res.destroyed || gone.signal.aborted) return;
          const finish: WireFinishReason = summary.finishReason === "length" ? "length" : "stop";
          const u = usage(summary.promptTokens, summary.completionTokens, summary.cachedTokens);
          if (!parsed.stream) {
            sendJson(res, 200, completion(id, created, modelName, text, finish, u));
            return;
          }
          startStream();
          write(chunk(id, created, modelName, {}, finish, parsed.includeUsage));
          if (parsed.includeUsage) write(usageChunk(id, created, modelName, u));
          res.end("data: [DONE]\n\n");
        },
        onError(error: SerializedError) {
          release();
          resolve();
          const apiError = fromWorkerError(error);
          log(`${id} failed (${apiError.status} ${apiError.code}): ${error.message}`);
          if (res.destroyed || gone.signal.aborted) return;
          if (!streaming) return sendError(res, apiError);
          // Headers are sent: the error goes in the stream (the openai client raises it).
          write(apiError.body());
          res.end();
        },
      });
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const method = req.method ?? "GET";
    const only = (allowed: string) => {
      if (method === allowed || (allowed === "GET" && method === "HEAD")) return true;
      sendJson(res, 405, new ApiError(405, `${method} is not allowed on ${path} (use ${allowed})`, "method_not_allowed").body(), { allow: allowed });
      return false;
    };
    if (path === "/health") {
      if (only("GET")) health(res, url.searchParams);
    } else if (path === "/v1/models") {
      if (only("GET")) sendJson(res, 200, { object: "list", data: [modelObject(modelName, createdAt)] });
    } else if (path.startsWith("/v1/models/")) {
      if (!only("GET")) return;
      const name = decodeURIComponent(path.slice("/v1/models/".length));
      if (name === modelName) sendJson(res, 200, modelObject(modelName, createdAt));
      else sendError(res, new ApiError(404, `The model \`${name}\` does not exist; this server serves \`${modelName}\``, "model_not_found", "model"));
    } else if (path === "/v1/chat/completions") {
      if (only("POST")) await chatCompletions(req, res);
    } else {
      sendError(res, new ApiError(404, `no such endpoint: ${method} ${path} (try POST /v1/chat/completions, GET /v1/models, GET /health)`, "not_found"));
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof ApiError) {
        log(`${req.method} ${req.url} ${e.status} ${e.code}: ${e.message}`);
        const retry = (e as ApiError & { retryAfter?: string }).retryAfter;
        sendError(res, e, retry ? { "retry-after": retry } : {});
        return;
      }
      log(`internal error on ${req.method} ${req.url}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      if (!res.headersSent) sendError(res, new ApiError(500, "internal server error", "internal_error"));
      else res.destroy();
    });
  });
  server.requestTimeout = 120_000;
  server.headersTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8080, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    server,
    worker,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      loopDelay.disable();
      await worker.close();
    },
  };
}

/**
 * Reads the body up to `limit` bytes. Past it, the request is refused with 413 at once; the rest
 * of the upload is read and discarded (closing a socket that still has unread data would reset
 * it, and the client might never see the 413), and the connection is closed after the answer.
 */
function readBody(req: IncomingMessage, res: ServerResponse, limit: number): Promise<Buffer> {
  const tooLarge = (size: string) =>
    new ApiError(413, `the request body is ${size} bytes, over this server's limit of ${limit} bytes (--max-body-bytes)`, "request_too_large");
  const refuse = (e: ApiError) => {
    res.setHeader("connection", "close");
    req.resume();
    // A client that keeps sending long after the refusal is cut off.
    setTimeout(() => req.destroy(), 10_000).unref();
    return e;
  };
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(refuse(tooLarge(String(declared))));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let done = false;
    const onData = (part: Buffer) => {
      size += part.byteLength;
      if (size > limit) {
        done = true;
        req.off("data", onData);
        parts.length = 0;
        reject(refuse(tooLarge(`more than ${limit}`)));
        return;
      }
      parts.push(part);
    };
    req.on("data", onData);
    req.on("end", () => {
      if (!done) resolve(Buffer.concat(parts, size));
    });
    req.on("error", (e) => {
      if (!done) reject(e);
    });
  });
}

/** Reads an image's header only (no pixels are decoded): its format and its size against the pixel limit. */
async function checkImageHeader(bytes: Uint8Array, param: string, maxPixels: number): Promise<void> {
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new ApiError(400, `${param}: not a readable image (${(e as Error).message.trim()})`, "invalid_image", param);
  }
  if (!meta.format || !IMAGE_FORMATS.has(meta.format)) {
    throw new ApiError(400, `${param}: image format ${JSON.stringify(meta.format ?? "unknown")} is not accepted (JPEG, PNG, WebP, GIF, TIFF, AVIF)`, "invalid_image", param);
  }
  const { width, height } = meta;
  if (!width || !height) throw new ApiError(400, `${param}: the image header has no size`, "invalid_image", param);
  if (width * height > maxPixels) {
    throw new ApiError(
      400,
      `${param}: the image is ${width}x${height} = ${width * height} pixels, over this server's limit of ${maxPixels} pixels per image (--max-image-pixels)`,
      "image_too_many_pixels",
      param,
    );
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** The HTTP answer for an error the worker reported. */
function fromWorkerError(e: SerializedError): ApiError {
  switch (e.code) {
    case "bad_request":
      return /context length/.test(e.message)
        ? new ApiError(400, e.message, "context_length_exceeded", "messages")
        : new ApiError(400, e.message, "invalid_request");
    case "bad_image":
      return new ApiError(400, e.message, "invalid_image", "messages");
    case "image_too_large":
      return new ApiError(400, e.message, "image_too_many_pixels", "messages");
    case "worker_crashed":
      return new ApiError(500, e.message, "worker_crashed");
    case "worker_restarting":
    case "shutting_down":
      return new ApiError(503, e.message, e.code);
  }
  if (e.name === "RangeError") return new ApiError(400, e.message, "invalid_value");
  return new ApiError(500, `internal error: ${e.message}`, "internal_error");
}
