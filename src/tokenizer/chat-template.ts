/**
 * The checkpoint's own Jinja chat template, rendered the way transformers renders it: messages
 * in HF chat format, the tokenizer's special tokens as variables, and add_generation_prompt.
 *
 * Messages are validated and normalized first: string content becomes one text part (the
 * published SmolVLM template iterates over parts and would silently drop a plain string), and
 * the image spellings the HF ecosystem uses all become `{type: "image"}` parts, the only one the
 * template recognises.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { SmolVLMError } from "../errors.js";
import { templateGlobals } from "./jinja-globals.js";

export type ContentPart = { type: "text"; text: string } | { type: "image"; image?: unknown };

export interface ChatMessage {
  role: string;
  content: string | ContentPart[];
}

export interface RenderOptions {
  addGenerationPrompt?: boolean;
}

/** Special-token variables: strings, plus the list `additional_special_tokens`. */
export type SpecialTokens = Record<string, string | readonly string[]>;

/** The special-token names transformers passes to a template (its special_tokens_map). */
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

// ---------------------------------------------------------------------------------------------
// Messages

function badRequest(message: string): never {
  throw new SmolVLMError("bad_request", message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Where an image part keeps its source, in the spellings the HF ecosystem uses. */
function imageSource(part: Record<string, unknown>): unknown {
  if (part.type === "image_url") {
    const v = part.image_url;
    return isObject(v) ? v.url : v;
  }
  return part.image ?? part.url ?? part.path;
}

function normalizePart(part: unknown, where: string): ContentPart {
  if (!isObject(part) || typeof part.type !== "string") {
    return badRequest(`${where} must be an object with a string "type" ("text" or "image")`);
  }
  if (part.type === "text") {
    if (typeof part.text !== "string") badRequest(`${where} is a text part, so its "text" must be a string`);
    return { type: "text", text: part.text };
  }
  if (part.type === "image" || part.type === "image_url") {
    const image = imageSource(part);
    return image === undefined ? { type: "image" } : { type: "image", image };
  }
  return badRequest(`${where} has type ${JSON.stringify(part.type)}; only "text" and "image" (or "image_url") parts are supported`);
}

function normalizeMessage(message: unknown, i: number): ChatMessage {
  const where = `messages[${i}]`;
  if (!isObject(message)) badRequest(`${where} must be an object with "role" and "content"`);
  const { role, content } = message;
  if (typeof role !== "string" || role.length === 0) badRequest(`${where}.role must be a non-empty string`);
  if (typeof content === "string") return { role, content: [{ type: "text", text: content }] };
  if (!Array.isArray(content)) badRequest(`${where}.content must be a string or an array of parts`);
  // The template reads content[0]; an empty list would fail inside it with a less clear error.
  if (content.length === 0) badRequest(`${where}.content is an empty array; give at least one part`);
  return { role, content: content.map((p, j) => normalizePart(p, `${where}.content[${j}]`)) };
}

/** Validates HF chat messages and returns them with every content as an array of parts. */
export function normalizeMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    badRequest("messages must be a non-empty array of {role, content} objects");
  }
  return messages.map(normalizeMessage);
}

/** How many image parts the messages hold (each becomes one <image> in the prompt). */
export function countImageParts(messages: readonly ChatMessage[]): number {
  let n = 0;
  for (const m of messages) {
    if (typeof m.content !== "string") n += m.content.filter((p) => p.type === "image").length;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Template loading

function badTemplate(message: string, file?: string): never {
  throw new SmolVLMError("bad_template", message, file);
}

function readJsonFile(path: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    return badTemplate(`cannot read as JSON: ${(e as Error).message}`, path);
  }
  if (!isObject(json)) badTemplate("must hold a JSON object", path);
  return json;
}

/** A chat_template value: a string, or a list of named templates of which we take "default". */
function pickTemplate(value: unknown, file: string): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const found = value.find((t) => isObject(t) && t.name === "default");
    if (isObject(found) && typeof found.template === "string") return found.template;
    return badTemplate('chat_template is a list with no {"name": "default", "template": "..."} entry', file);
  }
  return badTemplate("chat_template must be a string", file);
}

/** The template text and the file it came from, in the brief's order of preference. */
function findTemplate(dir: string): { text: string; file: string } {
  const jsonFile = join(dir, "chat_template.json");
  if (existsSync(jsonFile)) return { text: pickTemplate(readJsonFile(jsonFile).chat_template, jsonFile), file: jsonFile };
  const jinjaFile = join(dir, "chat_template.jinja");
  if (existsSync(jinjaFile)) return { text: readFileSync(jinjaFile, "utf8"), file: jinjaFile };
  const configFile = join(dir, "tokenizer_config.json");
  if (existsSync(configFile)) {
    const value = readJsonFile(configFile).chat_template;
    if (value !== undefined && value !== null) return { text: pickTemplate(value, configFile), file: configFile };
  }
  return badTemplate(
    "no chat template found (looked for chat_template.json, chat_template.jinja and a chat_template entry in tokenizer_config.json)",
    dir,
  );
}

/** A token entry is a string or an AddedToken-like object with "content". */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/** Special tokens from one config file, for the keys it sets. */
function specialTokensFrom(path: string): SpecialTokens {
  if (!existsSync(path)) return {};
  const json = readJsonFile(path);
  const out: SpecialTokens = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const t = tokenText(json[key]);
    if (t !== undefined) out[key] = t;
  }
  const extra = json.additional_special_tokens;
  if (Array.isArray(extra)) out.additional_special_tokens = extra.map(tokenText).filter((t): t is string => t !== undefined);
  return out;
}

/**
 * tokenizer_config.json wins over special_tokens_map.json: transformers reads the latter only
 * for legacy files without added_tokens_decoder. (They disagree in SmolVLM on eos_token:
 * "<end_of_utterance>" vs "<|im_end|>"; the published template uses neither.)
 */
function loadSpecialTokens(dir: string): SpecialTokens {
  return { ...specialTokensFrom(join(dir, "special_tokens_map.json")), ...specialTokensFrom(join(dir, "tokenizer_config.json")) };
}

// ---------------------------------------------------------------------------------------------
// Rendering

export class ChatTemplate {
  private constructor(
    private readonly template: Template,
    private readonly specialTokens: SpecialTokens,
    private readonly source: string | undefined,
  ) {}

  /** The model folder's template and special tokens. */
  static fromModelDir(dir: string): ChatTemplate {
    const { text, file } = findTemplate(dir);
    return ChatTemplate.compile(text, loadSpecialTokens(dir), file);
  }

  static fromString(template: string, specialTokens: SpecialTokens = {}): ChatTemplate {
    return ChatTemplate.compile(template, specialTokens, undefined);
  }

  private static compile(text: string, specialTokens: SpecialTokens, source: string | undefined): ChatTemplate {
    if (typeof text !== "string") badTemplate("the chat template must be a string", source);
    try {
      return new ChatTemplate(new Template(text), specialTokens, source);
    } catch (e) {
      return badTemplate(`the chat template does not parse: ${(e as Error).message}`, source);
    }
  }

  /** The prompt string for the messages (validated and normalized first). */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    const normalized = normalizeMessages(messages);
    const variables: Record<string, unknown> = {
      ...templateGlobals(),
      ...this.specialTokens,
      messages: normalized.map(forTemplate),
      add_generation_prompt: options.addGenerationPrompt === true,
    };
    try {
      return this.run(variables);
    } catch (e) {
      if (e instanceof SmolVLMError) throw e;
      return badTemplate(`rendering the chat template failed: ${(e as Error).message}`, this.source);
    }
  }

  /** Template.render, but with our globals (see jinja-globals.ts for why). */
  private run(variables: Record<string, unknown>): string {
    const env = new Environment();
    for (const [key, value] of Object.entries(variables)) env.set(key, value);
    const result = new Interpreter(env).run(this.template.parsed);
    return String(result.value);
  }
}

/**
 * What the template sees of a message: image payloads (buffers, paths) are left out, since the
 * template only looks at the part type and converting a large buffer into Jinja values is slow.
 */
function forTemplate(m: ChatMessage): { role: string; content: ContentPart[] } {
  const content = typeof m.content === "string" ? [{ type: "text" as const, text: m.content }] : m.content;
  return { role: m.role, content: content.map((p) => (p.type === "image" ? { type: "image" } : p)) };
}
