import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SmolVLMError } from "../src/errors.js";
import { ChatTemplate, countImageParts, normalizeMessages, type ChatMessage } from "../src/tokenizer/chat-template.js";
import { fixturePath, readJson, tempDir } from "./helpers.js";

interface TemplateCase {
  name: string;
  messages: ChatMessage[];
  add_generation_prompt: boolean;
  prompt: string;
}

const MODEL_DIR = fixturePath("models", "tiny-bf16");
const fixture = readJson<{ cases: TemplateCase[] }>("chat_template.json");
const template = ChatTemplate.fromModelDir(MODEL_DIR);

function isSmolErr(code: string, fragment?: string) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof SmolVLMError, `expected SmolVLMError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (fragment !== undefined) assert.ok(e.message.includes(fragment), `"${fragment}" not in: ${e.message}`);
    return true;
  };
}

for (const c of fixture.cases) {
  test(`fixture ${c.name} (add_generation_prompt=${c.add_generation_prompt})`, () => {
    assert.equal(template.render(c.messages, { addGenerationPrompt: c.add_generation_prompt }), c.prompt);
  });
}

test("string content renders like one text part", () => {
  const asString: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "What is the capital of France?" },
  ];
  const asParts: ChatMessage[] = asString.map((m) => ({ role: m.role, content: [{ type: "text", text: m.content as string }] }));
  const prompt = template.render(asString, { addGenerationPrompt: true });
  assert.equal(prompt, template.render(asParts, { addGenerationPrompt: true }));
  assert.equal(prompt, "<|im_start|>System: Be brief.<end_of_utterance>\nUser: What is the capital of France?<end_of_utterance>\nAssistant:");
});

test("every image spelling renders as <image> and is counted", () => {
  const spellings: unknown[] = [
    { type: "image" },
    { type: "image", image: new Uint8Array(10) },
    { type: "image", url: "https://example.com/a.png" },
    { type: "image", path: "a.png" },
    { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
    { type: "image_url", image_url: "a.png" },
  ];
  const expected = "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:";
  for (const part of spellings) {
    const messages = normalizeMessages([{ role: "user", content: [part, { type: "text", text: "Hi" }] }]);
    assert.equal(template.render(messages, { addGenerationPrompt: true }), expected, JSON.stringify(part));
    assert.equal(countImageParts(messages), 1);
  }
  const normalized = normalizeMessages([{ role: "user", content: [{ type: "image_url", image_url: { url: "x.png" } }] }]);
  assert.deepEqual(normalized[0]!.content, [{ type: "image", image: "x.png" }]);
});

test("countImageParts counts across messages and ignores string content", () => {
  const msgs = fixture.cases.find((c) => c.name === "interleaved")!.messages;
  assert.equal(countImageParts(msgs), 2);
  assert.equal(countImageParts([{ role: "user", content: "<image> is just text here" }]), 0);
});

test("messages are validated with bad_request errors", () => {
  const bad: Array<[unknown, string]> = [
    [undefined, "non-empty array"],
    [[], "non-empty array"],
    [["hi"], "messages[0]"],
    [[{ content: "hi" }], "messages[0].role"],
    [[{ role: 3, content: "hi" }], "messages[0].role"],
    [[{ role: "user" }], "messages[0].content"],
    [[{ role: "user", content: 42 }], "messages[0].content"],
    [[{ role: "user", content: [] }], "empty"],
    [[{ role: "user", content: ["hi"] }], "messages[0].content[0]"],
    [[{ role: "user", content: [{ type: "text" }] }], "text"],
    [[{ role: "user", content: "ok" }, { role: "user", content: [{ type: "video" }] }], '"video"'],
  ];
  for (const [messages, fragment] of bad) {
    assert.throws(() => normalizeMessages(messages), isSmolErr("bad_request", fragment), JSON.stringify(messages));
    assert.throws(() => template.render(messages as ChatMessage[]), isSmolErr("bad_request", fragment));
  }
});

test("special tokens from tokenizer_config.json are template variables", () => {
  const dir = tempDir("tpl");
  copyFileSync(join(MODEL_DIR, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
  copyFileSync(join(MODEL_DIR, "special_tokens_map.json"), join(dir, "special_tokens_map.json"));
  const tpl = "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token }}|{{ additional_special_tokens | length }}";
  writeFileSync(join(dir, "chat_template.jinja"), tpl);
  // tokenizer_config.json's eos wins over special_tokens_map.json's, as in transformers.
  assert.equal(ChatTemplate.fromModelDir(dir).render([{ role: "user", content: "x" }]), "<|im_start|>|<end_of_utterance>|<|im_end|>|<|endoftext|>|3");
  assert.equal(ChatTemplate.fromString("{{ bos_token }}{{ messages[0].content[0].text }}", { bos_token: "<s>" }).render([{ role: "user", content: "x" }]), "<s>x");
});

test("template source preference: chat_template.json, then .jinja, then tokenizer_config.json", () => {
  const dir = tempDir("tpl");
  const render = () => ChatTemplate.fromModelDir(dir).render([{ role: "user", content: "x" }]);
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: [{ name: "tool_use", template: "T" }, { name: "default", template: "C" }] }));
  assert.equal(render(), "C");
  writeFileSync(join(dir, "chat_template.jinja"), "J\n");
  assert.equal(render(), "J"); // Jinja drops one trailing newline, as Python's Jinja does.
  writeFileSync(join(dir, "chat_template.json"), JSON.stringify({ chat_template: "A" }));
  assert.equal(render(), "A");
});

test("a missing template is a clear bad_template error", () => {
  const dir = tempDir("tpl");
  assert.throws(() => ChatTemplate.fromModelDir(dir), isSmolErr("bad_template", "no chat template found"));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>" }));
  assert.throws(() => ChatTemplate.fromModelDir(dir), isSmolErr("bad_template", dir));
});

test("broken template files are bad_template errors naming the file", () => {
  const dir = tempDir("tpl");
  const file = join(dir, "chat_template.json");
  writeFileSync(file, "{ nope");
  assert.throws(() => ChatTemplate.fromModelDir(dir), isSmolErr("bad_template", file));
  writeFileSync(file, JSON.stringify({ chat_template: 5 }));
  assert.throws(() => ChatTemplate.fromModelDir(dir), isSmolErr("bad_template", "must be a string"));
  writeFileSync(file, JSON.stringify({ chat_template: "{% for %}" }));
  assert.throws(() => ChatTemplate.fromModelDir(dir), isSmolErr("bad_template", "does not parse"));
  assert.throws(() => ChatTemplate.fromString("{% if %}"), isSmolErr("bad_template"));
});

test("raise_exception in a template is a bad_request; other render failures are bad_template", () => {
  const strict = ChatTemplate.fromString("{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}ok");
  assert.equal(strict.render([{ role: "user", content: "x" }]), "ok");
  const two: ChatMessage[] = [{ role: "user", content: "x" }, { role: "user", content: "y" }];
  assert.throws(() => strict.render(two), isSmolErr("bad_request", "one message only"));
  const broken = ChatTemplate.fromString("{{ messages | no_such_filter }}");
  assert.throws(() => broken.render(two), isSmolErr("bad_template", "rendering"));
});

test("globals transformers provides: range, strftime_now, namespace", () => {
  const t = ChatTemplate.fromString(
    "{% set ns = namespace(n=0) %}{% for i in range(2, 5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ strftime_now('%Y') | length }}",
  );
  assert.equal(t.render([{ role: "user", content: "x" }]), "9 4");
});
