/**
 * The OpenAI chat-completions wire format: validation of a request body into the library's
 * request and options, and the response, chunk and error shapes.
 *
 * Validation is strict about the fields this server implements (a wrong type is a 400 naming the
 * field) and ignores fields that do not change the answer (`user`, `metadata`, `store`, ...).
 * Images are never passed to the library as strings: a `data:` URI is decoded here, a remote URL
 * is fetched by the server, and the library only ever sees bytes, so a client cannot make it
 * read a local file.
 */
import { randomBytes } from "node:crypto";
import type { ChatMessage, ContentPart } from "../tokenizer/chat-template.js";

// ---------------------------------------------------------------------------------------------
// Errors

export type ErrorType = "invalid_request_error" | "rate_limit_error" | "server_error";

/** An OpenAI-style error: the HTTP status and the `{error: {message, type, param, code}}` body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string,
    readonly param: string | null = null,
    readonly type: ErrorType = status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error",
  ) {
    super(message);
    this.name = "ApiError";
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

function invalid(message: string, param: string | null, code = "invalid_value"): never {
  throw new ApiError(400, message, code, param);
}

// ---------------------------------------------------------------------------------------------
// Limits

/** Per-request limits; each refusal names the limit, its value and the option that sets it. */
export interface RequestLimits {
  /** Bytes of request body (413 beyond). */
  maxBodyBytes: number;
  /** Images in one request. */
  maxImages: number;
  /** Encoded bytes of one image (after base64 decoding, or as downloaded). */
  maxImageBytes: number;
  /** width*height of one image, checked from its header before decoding. */
  maxImagePixels: number;
  /** The largest max_tokens a request may ask for. */
  maxTokens: number;
}

export const DEFAULT_LIMITS: RequestLimits = {
  maxBodyBytes: 20 * 1024 * 1024,
  maxImages: 8,
  maxImageBytes: 10 * 1024 * 1024,
  maxImagePixels: 25_000_000,
  maxTokens: 4096,
};

// ---------------------------------------------------------------------------------------------
// Requests

/** Where one image comes from: bytes already in the request, or a URL the server must fetch. */
export type ImageSource = { kind: "bytes"; bytes: Uint8Array; param: string } | { kind: "remote"; url: string; param: string };

/** The generation options a request sets (the library's GenerateOptions minus the signal). */
export interface WireOptions {
  maxNewTokens?: number;
  greedy?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop?: string[];
  /** Extension (as vLLM's): never stop at end-of-sequence, so exactly max_tokens come out. */
  ignoreEos?: boolean;
}

export interface ParsedChatRequest {
  /** The model the request names, if it names one. */
  model: string | undefined;
  /** The conversation, each image as a bare `{type: "image"}` slot filled from `images` in order. */
  messages: ChatMessage[];
  images: ImageSource[];
  /** false when every image asks for `detail: "low"` (one tile per image, no split). */
  imageSplitting: boolean | undefined;
  stream: boolean;
  includeUsage: boolean;
  options: WireOptions;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const absent = (v: unknown): v is undefined | null => v === undefined || v === null;

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function numberField(body: Record<string, unknown>, name: string, check: (n: number) => boolean, range: string, integer = false): number | undefined {
  const v = body[name];
  if (absent(v)) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) invalid(`${name} must be a number, got ${typeName(v)}`, name, "invalid_type");
  if (integer && !Number.isSafeInteger(v)) invalid(`${name} must be an integer, got ${v}`, name, "invalid_type");
  if (!check(v)) invalid(`${name} must be ${range}, got ${v}`, name);
  return v;
}

function booleanField(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (absent(v)) return undefined;
  if (typeof v !== "boolean") invalid(`${name} must be a boolean, got ${typeName(v)}`, name, "invalid_type");
  return v;
}

const ROLES: Record<string, string> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

/** Matches `data:<mime>[;params];base64,<payload>` (the mime type is checked separately). */
const DATA_URI = /^data:([^;,]*)((?:;[^;,]*)*),/i;

function decodeDataUri(url: string, param: string, limits: RequestLimits): Uint8Array {
  const m = DATA_URI.exec(url);
  if (!m) invalid(`${param} is not a valid data: URI (expected data:image/<type>;base64,<data>)`, param, "invalid_image_url");
  const mime = m[1]!.trim().toLowerCase();
  if (!mime.startsWith("image/")) {
    invalid(`${param} is a data: URI of type ${JSON.stringify(mime || "text/plain")}, not an image (expected data:image/<type>;base64,...)`, param, "invalid_image");
  }
  if (!/;base64$/i.test(m[2]!)) invalid(`${param} must be base64-encoded (data:${mime};base64,...)`, param, "invalid_image_url");
  const payload = url.slice(m[0].length).replace(/\s+/g, "");
  // Refuse before decoding: base64 is 4 characters per 3 bytes.
  const estimate = Math.floor((payload.length * 3) / 4) - (payload.endsWith("==") ? 2 : payload.endsWith("=") ? 1 : 0);
  if (estimate > limits.maxImageBytes) {
    throw new ApiError(400, `${param} holds ${estimate} bytes of image, over this server's limit of ${limits.maxImageBytes} bytes per image (--max-image-bytes)`, "image_too_large", param);
  }
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(payload)) invalid(`${param}: the data: URI's payload is not valid base64`, param, "invalid_image");
  const decoded = Buffer.from(payload, "base64");
  if (decoded.byteLength === 0) invalid(`${param}: the data: URI holds no bytes`, param, "invalid_image");
  // A fresh buffer of its own: small Buffers share a pool, which must not be transferred to the worker.
  const bytes = new Uint8Array(decoded.byteLength);
  bytes.set(decoded);
  return bytes;
}

function parseImagePart(part: Record<string, unknown>, param: string, limits: RequestLimits): { source: ImageSource; low: boolean } {
  const raw = part.image_url;
  const spec = typeof raw === "string" ? { url: raw } : raw;
  if (!isObject(spec)) invalid(`${param}.image_url must be an object {url, detail?}, got ${typeName(raw)}`, `${param}.image_url`, "invalid_type");
  const url = spec.url;
  if (typeof url !== "string" || url.length === 0) invalid(`${param}.image_url.url must be a non-empty string`, `${param}.image_url.url`, "invalid_type");
  const detail = spec.detail;
  if (!absent(detail) && detail !== "auto" && detail !== "low" && detail !== "high") {
    invalid(`${param}.image_url.detail must be "auto", "low" or "high", got ${JSON.stringify(detail)}`, `${param}.image_url.detail`);
  }
  const where = `${param}.image_url.url`;
  if (/^data:/i.test(url)) return { source: { kind: "bytes", bytes: decodeDataUri(url, where, limits), param: where }, low: detail === "low" };
  if (/^https?:\/\//i.test(url)) return { source: { kind: "remote", url, param: where }, low: detail === "low" };
  return invalid(`${where} must be a data: URI or an http(s) URL, got ${JSON.stringify(url.length > 40 ? url.slice(0, 40) + "..." : url)}`, where, "invalid_image_url");
}

/**
 * Validates a chat-completions body. Throws ApiError (400) naming the field for anything wrong;
 * `max_tokens` above the limit and too many images are refused here, image bytes as they are
 * decoded.
 */
export function parseChatRequest(body: unknown, limits: RequestLimits): ParsedChatRequest {
  if (!isObject(body)) invalid(`the request body must be a JSON object, got ${typeName(body)}`, null, "invalid_type");

  const model = body.model;
  if (!absent(model) && typeof model !== "string") invalid(`model must be a string, got ${typeName(model)}`, "model", "invalid_type");

  for (const [name, what] of [
    ["tools", "tool calls"],
    ["functions", "function calls"],
  ] as const) {
    const v = body[name];
    if (!absent(v) && !(Array.isArray(v) && v.length === 0)) invalid(`${name} is not supported: this server does not do ${what}`, name, "unsupported_parameter");
  }
  numberField(body, "n", (x) => x === 1, "1 (one choice per request)", true);
  if (body.logprobs === true) invalid("logprobs is not supported by this server", "logprobs", "unsupported_parameter");
  for (const name of ["frequency_penalty", "presence_penalty"]) {
    numberField(body, name, (x) => x === 0, "0 (not supported; use repetition_penalty)");
  }
  const format = body.response_format;
  if (!absent(format)) {
    if (!isObject(format) || typeof format.type !== "string") invalid("response_format must be an object {type}", "response_format", "invalid_type");
    if (format.type !== "text") invalid(`response_format ${JSON.stringify(format.type)} is not supported (only "text")`, "response_format", "unsupported_parameter");
  }

  // Messages
  const rawMessages = body.messages;
  if (!Array.isArray(rawMessages) || rawMessages.length === 0) {
    invalid(`messages must be a non-empty array, got ${Array.isArray(rawMessages) ? "an empty array" : typeName(rawMessages)}`, "messages", absent(rawMessages) ? "missing_required_parameter" : "invalid_type");
  }
  const images: ImageSource[] = [];
  let lowDetail = 0;
  const messages: ChatMessage[] = rawMessages.map((m, i): ChatMessage => {
    const param = `messages[${i}]`;
    if (!isObject(m)) invalid(`${param} must be an object {role, content}, got ${typeName(m)}`, param, "invalid_type");
    const role = m.role;
    if (typeof role !== "string") invalid(`${param}.role must be a string, got ${typeName(role)}`, `${param}.role`, "invalid_type");
    const mapped = ROLES[role];
    if (!mapped) invalid(`${param}.role ${JSON.stringify(role)} is not supported (system, developer, user or assistant)`, `${param}.role`);
    const content = m.content;
    if (typeof content === "string") return { role: mapped, content: [{ type: "text", text: content }] };
    if (absent(content) && mapped === "assistant") return { role: mapped, content: [{ type: "text", text: "" }] };
    if (!Array.isArray(content)) invalid(`${param}.content must be a string or an array of parts, got ${typeName(content)}`, `${param}.content`, "invalid_type");
    if (content.length === 0) invalid(`${param}.content is an empty array`, `${param}.content`);
    const parts = content.map((p, j): ContentPart => {
      const where = `${param}.content[${j}]`;
      if (!isObject(p) || typeof p.type !== "string") invalid(`${where} must be an object with a string "type"`, where, "invalid_type");
      if (p.type === "text") {
        if (typeof p.text !== "string") invalid(`${where}.text must be a string, got ${typeName(p.text)}`, `${where}.text`, "invalid_type");
        return { type: "text", text: p.text };
      }
      if (p.type === "image_url") {
        if (images.length >= limits.maxImages) {
          throw new ApiError(400, `the request has more than ${limits.maxImages} images, this server's limit per request (--max-images)`, "too_many_images", where);
        }
        const { source, low } = parseImagePart(p, where, limits);
        images.push(source);
        if (low) lowDetail++;
        return { type: "image" };
      }
      return invalid(`${where}.type ${JSON.stringify(p.type)} is not supported (only "text" and "image_url")`, `${where}.type`);
    });
    return { role: mapped, content: parts };
  });

  // Generation options
  const maxCompletion = numberField(body, "max_completion_tokens", (x) => x >= 1, "at least 1", true);
  const maxTokensField = maxCompletion !== undefined ? "max_completion_tokens" : "max_tokens";
  const maxTokens = maxCompletion ?? numberField(body, "max_tokens", (x) => x >= 1, "at least 1", true);
  if (maxTokens !== undefined && maxTokens > limits.maxTokens) {
    throw new ApiError(400, `${maxTokensField} is ${maxTokens}, over this server's limit of ${limits.maxTokens} (--max-tokens)`, "max_tokens_exceeded", maxTokensField);
  }
  const temperature = numberField(body, "temperature", (x) => x >= 0 && x <= 2, "between 0 and 2");
  const options: WireOptions = {
    maxNewTokens: maxTokens,
    temperature: temperature === 0 ? undefined : temperature,
    greedy: temperature === 0 ? true : undefined,
    topP: numberField(body, "top_p", (x) => x > 0 && x <= 1, "in (0, 1]"),
    topK: numberField(body, "top_k", (x) => x >= 0, "a non-negative integer (0 disables)", true),
    minP: numberField(body, "min_p", (x) => x >= 0 && x <= 1, "in [0, 1]"),
    repetitionPenalty: numberField(body, "repetition_penalty", (x) => x > 0, "greater than 0"),
    seed: numberField(body, "seed", () => true, "an integer", true),
    ignoreEos: booleanField(body, "ignore_eos"),
  };
  const stop = body.stop;
  if (!absent(stop)) {
    const list = typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(list) || !list.every((s) => typeof s === "string")) invalid(`stop must be a string or an array of strings, got ${typeName(stop)}`, "stop", "invalid_type");
    if (list.length > 16) invalid(`stop has ${list.length} strings; at most 16`, "stop");
    if (list.some((s) => s.length === 0)) invalid("stop strings must not be empty", "stop");
    options.stop = list;
  }
  for (const key of Object.keys(options) as (keyof WireOptions)[]) if (options[key] === undefined) delete options[key];

  const stream = booleanField(body, "stream") ?? false;
  const streamOptions = body.stream_options;
  let includeUsage = false;
  if (!absent(streamOptions)) {
    if (!stream) invalid("stream_options is only allowed when stream is true", "stream_options");
    if (!isObject(streamOptions)) invalid(`stream_options must be an object, got ${typeName(streamOptions)}`, "stream_options", "invalid_type");
    includeUsage = booleanField(streamOptions, "include_usage") ?? false;
  }

  return {
    model: typeof model === "string" ? model : undefined,
    messages,
    images,
    imageSplitting: images.length > 0 && lowDetail === images.length ? false : undefined,
    stream,
    includeUsage,
    options,
  };
}

// ---------------------------------------------------------------------------------------------
// Responses

export type WireFinishReason = "stop" | "length";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(promptTokens: number, completionTokens: number, cachedTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

export function completionId(): string {
  return `chatcmpl-${randomBytes(12).toString("hex")}`;
}

export function completion(id: string, created: number, model: string, text: string, finish: WireFinishReason, u: Usage) {
  return {
    id,
    object: "chat.completion" as const,
    created,
    model,
    choices: [{ index: 0, message: { role: "assistant" as const, content: text, refusal: null }, logprobs: null, finish_reason: finish }],
    usage: u,
  };
}

export interface Delta {
  role?: "assistant";
  content?: string;
}

export function chunk(id: string, created: number, model: string, delta: Delta, finish: WireFinishReason | null, includeUsage: boolean) {
  return {
    id,
    object: "chat.completion.chunk" as const,
    created,
    model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  };
}

/** The last chunk of a stream with `stream_options.include_usage`: no choices, the usage. */
export function usageChunk(id: string, created: number, model: string, u: Usage) {
  return { id, object: "chat.completion.chunk" as const, created, model, choices: [], usage: u };
}

export function modelObject(id: string, created: number) {
  return { id, object: "model" as const, created, owned_by: "smolvlm" };
}
