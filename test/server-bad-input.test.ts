/**
 * Hostile and broken requests: each gets the right 4xx with an OpenAI-style error body that names
 * the field or the limit, and the server keeps serving the others. Remote image URLs are tried
 * against a loopback image server, including redirects to loopback and private addresses.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { deflateSync } from "node:zlib";
import OpenAI, { APIError } from "openai";
import { startServer, type RunningServer } from "../src/server/http.js";
import { fetchRemoteImage, isPublicAddress } from "../src/server/remote-images.js";
import { ApiError } from "../src/server/openai.js";
import { fixturePath } from "./helpers.js";

const MODEL = fixturePath("models", "tiny-bf16");
const IMAGE = readFileSync(fixturePath("images", "small.png"));
const dataUri = (bytes: Uint8Array, type = "image/png") => `data:${type};base64,${Buffer.from(bytes).toString("base64")}`;

const LIMITS = { maxBodyBytes: 256 * 1024, maxImages: 2, maxImageBytes: 64 * 1024, maxImagePixels: 1_000_000, maxTokens: 64 };

let plain: RunningServer; // data: URIs only, small limits, one slot plus one in the queue
let remote: RunningServer; // --allow-remote-images --allowed-image-hosts localhost
let images: Server; // the loopback image host
let imagesPort: number;
let client: OpenAI;
let remoteClient: OpenAI;

before(async () => {
  plain = await startServer({ modelDir: MODEL, servedModelName: "tiny", port: 0, maxBatch: 1, maxQueue: 1, imageSize: 512, limits: LIMITS, log: () => {} });
  remote = await startServer({
    modelDir: MODEL,
    servedModelName: "tiny",
    port: 0,
    imageSize: 512,
    limits: LIMITS,
    allowRemoteImages: true,
    allowedImageHosts: ["localhost"],
    log: () => {},
  });
  images = createServer((req, res) => {
    const to = (location: string) => {
      res.writeHead(302, { location });
      res.end();
    };
    switch (req.url) {
      case "/ok.png":
        res.writeHead(200, { "content-type": "image/png" });
        return res.end(IMAGE);
      case "/to-loopback":
        return to(`http://127.0.0.1:${imagesPort}/ok.png`);
      case "/to-private":
        return to("http://10.0.0.1/ok.png");
      case "/to-metadata":
        return to("http://169.254.169.254/latest/meta-data/");
      case "/to-mapped":
        return to(`http://[::ffff:127.0.0.1]:${imagesPort}/ok.png`);
      case "/to-decimal":
        return to(`http://2130706433:${imagesPort}/ok.png`);
      case "/to-file":
        return to("file:///etc/passwd");
      case "/loop":
        return to("/loop");
      case "/big":
        res.writeHead(200, { "content-type": "image/png", "content-length": String(LIMITS.maxImageBytes + 1) });
        return res.end(Buffer.alloc(LIMITS.maxImageBytes + 1));
      case "/big-chunked":
        res.writeHead(200, { "content-type": "image/png" });
        res.write(Buffer.alloc(LIMITS.maxImageBytes));
        return res.end(Buffer.alloc(1024));
      case "/html":
        res.writeHead(200, { "content-type": "text/html" });
        return res.end("<html>not an image</html>");
      default:
        res.writeHead(404);
        res.end();
    }
  });
  await new Promise<void>((r) => images.listen(0, "127.0.0.1", r));
  imagesPort = (images.address() as AddressInfo).port;
  client = new OpenAI({ baseURL: `${plain.url}/v1`, apiKey: "unused", maxRetries: 0 });
  remoteClient = new OpenAI({ baseURL: `${remote.url}/v1`, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await Promise.all([plain.close(), remote.close(), new Promise((r) => images.close(r))]);
});

/** Raw POST (the client cannot send malformed JSON); returns the status, headers and parsed body. */
async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/v1/chat/completions`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string } } };
}

/** Asserts an OpenAI-style error: status, code, and (when given) the param and a message pattern. */
function isError(e: unknown, status: number, code: string, message?: RegExp, param?: string | null): boolean {
  assert.ok(e instanceof APIError, `expected an APIError, got ${String(e)}`);
  assert.equal(e.status, status, e.message);
  const body = e.error as { code?: string; param?: string | null; type?: string; message?: string };
  assert.equal(body.code, code, e.message);
  assert.equal(typeof body.type, "string");
  assert.equal(typeof body.message, "string");
  if (message) assert.match(body.message!, message);
  if (param !== undefined) assert.equal(body.param, param);
  return true;
}

const userImage = (url: string): OpenAI.ChatCompletionMessageParam[] => [
  { role: "user", content: [{ type: "image_url", image_url: { url } }, { type: "text", text: "What is this?" }] },
];

function crc32(bytes: Uint8Array): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

/** A decompression bomb: a few hundred bytes that claim 40000x40000 RGB pixels (4.8 GB decoded). */
function pngBomb(): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(40000, 0);
  ihdr.writeUInt32BE(40000, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = deflateSync(Buffer.alloc((40000 * 3 + 1) * 8)); // the first rows, all zero
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk("IHDR", ihdr), pngChunk("IDAT", rows), pngChunk("IEND", Buffer.alloc(0))]);
}

test("malformed JSON and bodies that are not an object", async () => {
  for (const body of ["{bad json", "", "[1, 2]", "null", '"text"']) {
    const r = await post(plain.url, body);
    assert.equal(r.status, 400, body);
    assert.equal(r.body.error.type, "invalid_request_error");
    assert.ok(["invalid_json", "invalid_type"].includes(r.body.error.code), r.body.error.code);
  }
});

test("wrong types are refused with the field named", async () => {
  const base = { model: "tiny", messages: [{ role: "user", content: "hi" }] };
  const cases: [Record<string, unknown>, string][] = [
    [{ messages: "hello" }, "messages"],
    [{ messages: [] }, "messages"],
    [{ messages: [{ role: "user" }] }, "messages[0].content"],
    [{ messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
    [{ messages: [{ role: "user", content: [{ type: "audio", data: "x" }] }] }, "messages[0].content[0].type"],
    [{ messages: [{ role: "user", content: [{ type: "text", text: 5 }] }] }, "messages[0].content[0].text"],
    [{ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }, "messages[0].content[0].image_url.url"],
    [{ model: 42 }, "model"],
    [{ temperature: "hot" }, "temperature"],
    [{ temperature: 3 }, "temperature"],
    [{ top_p: 0 }, "top_p"],
    [{ top_k: 1.5 }, "top_k"],
    [{ min_p: 2 }, "min_p"],
    [{ repetition_penalty: -1 }, "repetition_penalty"],
    [{ max_tokens: 1.5 }, "max_tokens"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ max_completion_tokens: "10" }, "max_completion_tokens"],
    [{ seed: "abc" }, "seed"],
    [{ stop: 5 }, "stop"],
    [{ stop: ["ok", 3] }, "stop"],
    [{ stream: "yes" }, "stream"],
    [{ ignore_eos: 1 }, "ignore_eos"],
    [{ stream_options: { include_usage: true } }, "stream_options"],
    [{ stream: true, stream_options: { include_usage: "yes" } }, "include_usage"],
    [{ n: 2 }, "n"],
    [{ tools: [{ type: "function", function: { name: "f" } }] }, "tools"],
    [{ response_format: { type: "json_schema" } }, "response_format"],
    [{ presence_penalty: 1 }, "presence_penalty"],
  ];
  for (const [patch, param] of cases) {
    const r = await post(plain.url, JSON.stringify({ ...base, ...patch }));
    assert.equal(r.status, 400, `${JSON.stringify(patch)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.param, param, JSON.stringify(patch));
    assert.equal(r.body.error.type, "invalid_request_error");
  }
});

test("an unknown model is a 404 model_not_found", async () => {
  await assert.rejects(client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }), (e) =>
    isError(e, 404, "model_not_found", /gpt-4o/, "model"),
  );
  await assert.rejects(client.models.retrieve("gpt-4o"), (e) => isError(e, 404, "model_not_found"));
});

test("unknown paths and wrong methods", async () => {
  assert.equal((await fetch(`${plain.url}/v1/completions`, { method: "POST", body: "{}" })).status, 404);
  const r = await fetch(`${plain.url}/v1/chat/completions`);
  assert.equal(r.status, 405);
  assert.equal(r.headers.get("allow"), "POST");
});

test("an oversized body is a 413 naming the limit, whether declared or streamed", async () => {
  const huge = "x".repeat(LIMITS.maxBodyBytes + 10);
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: huge }], max_tokens: 2 }), (e) =>
    isError(e, 413, "request_too_large", new RegExp(`limit of ${LIMITS.maxBodyBytes} bytes`)),
  );
  // Without a Content-Length (chunked): cut off while reading.
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(`${plain.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "transfer-encoding": "chunked" } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on("error", reject);
    for (let i = 0; i < 8; i++) req.write("x".repeat(64 * 1024));
    req.end();
  });
  assert.equal(status, 413);
});

test("too many images, too many image bytes, too many pixels, a bomb", async () => {
  const uri = dataUri(IMAGE);
  await assert.rejects(
    client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: [1, 2, 3].map(() => ({ type: "image_url" as const, image_url: { url: uri } })) }],
      max_tokens: 2,
    }),
    (e) => isError(e, 400, "too_many_images", /limit per request \(--max-images\)/, "messages[0].content[2]"),
  );
  const big = Buffer.concat([IMAGE, Buffer.alloc(LIMITS.maxImageBytes)]);
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: userImage(dataUri(big)), max_tokens: 2 }), (e) =>
    isError(e, 400, "image_too_large", new RegExp(`limit of ${LIMITS.maxImageBytes} bytes per image`), "messages[0].content[0].image_url.url"),
  );
  const bomb = pngBomb();
  assert.ok(bomb.byteLength < 2048);
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: userImage(dataUri(bomb)), max_tokens: 2 }), (e) =>
    isError(e, 400, "image_too_many_pixels", /40000x40000 = 1600000000 pixels, over this server's limit of 1000000/),
  );
});

test("data: URIs that are not images", async () => {
  const cases: [string, string][] = [
    ["data:text/plain;base64,aGVsbG8gd29ybGQ=", "invalid_image"],
    ["data:application/pdf;base64,JVBERi0xLjQK", "invalid_image"],
    ["data:,hello", "invalid_image"],
    ["data:image/png,rawbytes", "invalid_image_url"],
    ["data:image/png;base64,!!!not-base64!!!", "invalid_image"],
    [dataUri(Buffer.from("this is plain text pretending to be a PNG")), "invalid_image"],
    [dataUri(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'), "image/svg+xml"), "invalid_image"],
    ["file:///etc/passwd", "invalid_image_url"],
    ["/etc/passwd", "invalid_image_url"],
  ];
  for (const [url, code] of cases) {
    await assert.rejects(client.chat.completions.create({ model: "tiny", messages: userImage(url), max_tokens: 2 }), (e) => isError(e, 400, code), url);
  }
  // A truncated PNG passes the header check and fails in the worker's decoder: still a 400.
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: userImage(dataUri(IMAGE.subarray(0, 400))), max_tokens: 2 }), (e) =>
    isError(e, 400, "invalid_image"),
  );
});

test("max_tokens over the limit, and a prompt longer than the context", async () => {
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 65 }), (e) =>
    isError(e, 400, "max_tokens_exceeded", /max_tokens is 65, over this server's limit of 64/, "max_tokens"),
  );
  const long = "hello ".repeat(9000);
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: long }], max_tokens: 2 }), (e) =>
    isError(e, 400, "context_length_exceeded", /context length is 8192/, "messages"),
  );
});

test("a full queue is a 429 with Retry-After", async () => {
  // A streamed answer's headers come with its first token, so the two are not awaited here.
  const held = [new AbortController(), new AbortController()];
  const pending = held.map((c) =>
    client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Keep going" }], max_tokens: 64, stream: true }, { signal: c.signal }).catch(() => null),
  );
  for (let i = 0; ; i++) {
    const h = (await (await fetch(`${plain.url}/health`)).json()) as { requests: { in_flight: number } };
    if (h.requests.in_flight === 2) break;
    assert.ok(i < 400, "the two requests are taken");
    await new Promise((r) => setTimeout(r, 5));
  }
  const r = await post(plain.url, JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }));
  assert.equal(r.status, 429);
  assert.equal(r.body.error.code, "queue_full");
  assert.match(r.body.error.message, /--max-queue 1/);
  assert.ok(Number(r.headers.get("retry-after")) >= 1);
  for (const c of held) c.abort();
  await Promise.all(pending);
  // Cancelled, they give their slots back at once.
  for (let i = 0; ; i++) {
    const h = (await (await fetch(`${plain.url}/health`)).json()) as { requests: { in_flight: number } };
    if (h.requests.in_flight === 0) break;
    assert.ok(i < 100, "the slots are given back");
    await new Promise((r) => setTimeout(r, 10));
  }
});

test("remote image URLs need --allow-remote-images", async () => {
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages: userImage(`http://localhost:${imagesPort}/ok.png`), max_tokens: 2 }), (e) =>
    isError(e, 400, "remote_images_disabled", /--allow-remote-images/, "messages[0].content[0].image_url.url"),
  );
});

test("remote images: the allowed host is fetched; redirects to loopback or private addresses are refused", async () => {
  const ok = await remoteClient.chat.completions.create({ model: "tiny", messages: userImage(`http://localhost:${imagesPort}/ok.png`), max_tokens: 2 });
  assert.equal(ok.choices[0]!.finish_reason, "length");
  const refused: [string, string, RegExp][] = [
    [`http://localhost:${imagesPort}/to-loopback`, "image_url_refused", /redirect to http:\/\/127\.0\.0\.1.*loopback, private or reserved/],
    [`http://localhost:${imagesPort}/to-private`, "image_url_refused", /10\.0\.0\.1 is a loopback, private or reserved address/],
    [`http://localhost:${imagesPort}/to-metadata`, "image_url_refused", /169\.254\.169\.254/],
    [`http://localhost:${imagesPort}/to-mapped`, "image_url_refused", /::ffff:7f00:1|::ffff:127/],
    [`http://localhost:${imagesPort}/to-decimal`, "image_url_refused", /127\.0\.0\.1/],
    [`http://localhost:${imagesPort}/to-file`, "image_url_refused", /only http and https/],
    [`http://127.0.0.1:${imagesPort}/ok.png`, "image_url_refused", /loopback, private or reserved/],
    ["http://example.com/cat.png", "image_url_refused", /not on this server's allowed image hosts/],
    [`http://localhost:${imagesPort}/loop`, "image_fetch_failed", /more than 3 redirects/],
    [`http://localhost:${imagesPort}/missing.png`, "image_fetch_failed", /HTTP 404/],
    [`http://localhost:${imagesPort}/big`, "image_too_large", /limit of 65536 bytes per image/],
    [`http://localhost:${imagesPort}/big-chunked`, "image_too_large", /limit of 65536 bytes per image/],
    [`http://localhost:${imagesPort}/html`, "invalid_image", /not a readable image/],
  ];
  for (const [url, code, message] of refused) {
    await assert.rejects(remoteClient.chat.completions.create({ model: "tiny", messages: userImage(url), max_tokens: 2 }), (e) => isError(e, 400, code, message), url);
  }
});

test("remote images: without an allowlist, a name that resolves to loopback is refused too", async () => {
  await assert.rejects(fetchRemoteImage(`http://localhost:${imagesPort}/ok.png`, "url", { allowedHosts: [], maxBytes: 1 << 20 }), (e: unknown) => {
    assert.ok(e instanceof ApiError);
    assert.match(e.message, /localhost resolves to .*loopback, private or reserved/);
    return true;
  });
  const publicOnes = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"];
  const privateOnes = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::"];
  for (const ip of publicOnes) assert.ok(isPublicAddress(ip), ip);
  for (const ip of privateOnes) assert.ok(!isPublicAddress(ip), ip);
});

test("after all that, both servers still serve", async () => {
  for (const [c, s] of [
    [client, plain],
    [remoteClient, remote],
  ] as const) {
    const r = await c.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hello" }], max_tokens: 3 });
    assert.equal(r.choices[0]!.finish_reason, "length");
    const h = (await (await fetch(`${s.url}/health`)).json()) as { status: string; worker: { restarts: number } };
    assert.equal(h.status, "ok");
    assert.equal(h.worker.restarts, 0);
  }
});
