/**
 * Models by name from the Hugging Face Hub, against a fake Hub on 127.0.0.1: the huggingface_hub cache layout,
 * first download, a second run without file requests, offline mode, resume after a cut, corrupted blobs, gated
 * repos, a cache laid down by huggingface_hub being reused, and the pull / ls / rm commands.
 * Every test uses its own HF_HOME in a temp folder and passes its environment explicitly; ~/.cache is never used.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { FakeHub, VALID_TOKEN, gitBlobSha1, randomCommit, sha256 } from "./fake-hub.js";
import { resolveModel, pullModel, missingEssentials, type ResolveOptions } from "../src/hub/resolve.js";
import { hubEnv, listCachedModels, parseRepoRef, repoFolderName, normalizeEtag } from "../src/hub/cache.js";
import { StreamProgress, type ProgressSink } from "../src/hub/progress.js";
import { pull, ls, rm, type CommandIO } from "../src/cli/hub-commands.js";
import { SmolVLMError } from "../src/errors.js";
import { fixturePath, tempDir } from "./helpers.js";

// A safety net: nothing in this file may fall back to the real ~/.cache.
const SAFETY_HOME = tempDir("hub-safety");
process.env.HF_HOME = SAFETY_HOME;
delete process.env.HF_HUB_CACHE;
delete process.env.HUGGINGFACE_HUB_CACHE;
delete process.env.HF_TOKEN;
delete process.env.HF_HUB_OFFLINE;

const T = { timeout: 30_000 };

// ------------------------------------------------------------------------------------------------ fixtures

const ORG = "test-org";
const WEIGHTS = randomBytes(1 << 20); // 1 MiB, an LFS file
const WEIGHTS_V2 = randomBytes(300_000);
const SHARD1 = randomBytes(200_000);
const SHARD2 = randomBytes(150_000);
const CONFIG = JSON.stringify({ model_type: "idefics3", note: "fake" });
const TOKENIZER = JSON.stringify({ model: { type: "BPE" } });

function modelFiles(weights: Buffer = WEIGHTS): Record<string, Buffer | string> {
  return {
    "config.json": CONFIG,
    "generation_config.json": JSON.stringify({ eos_token_id: 2 }),
    "tokenizer.json": TOKENIZER,
    "tokenizer_config.json": JSON.stringify({ bos_token: "<s>" }),
    "special_tokens_map.json": "{}",
    "chat_template.json": JSON.stringify({ chat_template: "{{ messages }}" }),
    "preprocessor_config.json": JSON.stringify({ size: { longest_edge: 512 } }),
    "processor_config.json": JSON.stringify({ image_seq_len: 64 }),
    "model.safetensors": weights,
    // Not needed for inference: never fetched.
    "pytorch_model.bin": randomBytes(5000),
    "onnx/model.onnx": randomBytes(3000),
    "model-q4.gguf": randomBytes(2000),
    "README.md": "# a model\n",
    ".gitattributes": "*.safetensors filter=lfs\n",
  };
}

const NEEDED = [
  "chat_template.json",
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "preprocessor_config.json",
  "processor_config.json",
  "special_tokens_map.json",
  "tokenizer.json",
  "tokenizer_config.json",
];

const C1 = randomCommit();
const C2 = randomCommit();
const C_SHARDED = randomCommit();
const C_GATED = randomCommit();
const C_BIN = randomCommit();

let hub: FakeHub;

before(async () => {
  hub = await FakeHub.start([
    {
      id: `${ORG}/tiny`,
      commits: { [C1]: modelFiles(), [C2]: { ...modelFiles(WEIGHTS_V2), "config.json": CONFIG.replace("fake", "fake v2") } },
      refs: { main: C2, "v1.0": C1, "refs/pr/1": C1 },
    },
    {
      id: `${ORG}/sharded`,
      commits: {
        [C_SHARDED]: {
          ...Object.fromEntries(Object.entries(modelFiles()).filter(([k]) => k !== "model.safetensors")),
          "model.safetensors.index.json": JSON.stringify({
            metadata: { total_size: SHARD1.length + SHARD2.length },
            weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors", c: "model-00001-of-00002.safetensors" },
          }),
          "model-00001-of-00002.safetensors": SHARD1,
          "model-00002-of-00002.safetensors": SHARD2,
          "model-00001-of-00003.safetensors": randomBytes(100), // a stale shard the index does not name
        },
      },
      refs: { main: C_SHARDED },
    },
    { id: `${ORG}/gated`, commits: { [C_GATED]: modelFiles() }, refs: { main: C_GATED }, gated: true },
    { id: `${ORG}/private`, commits: { [C_GATED]: modelFiles() }, refs: { main: C_GATED }, private: true },
    {
      id: `${ORG}/bin-only`,
      commits: { [C_BIN]: { "config.json": CONFIG, "tokenizer.json": TOKENIZER, "pytorch_model.bin": randomBytes(100) } },
      refs: { main: C_BIN },
    },
  ]);
});

after(async () => {
  await hub.close();
  const leaked = existsSync(join(SAFETY_HOME, "hub"));
  assert.equal(leaked, false, "a test used the process environment's cache instead of its own HF_HOME");
});

/** A fresh HF_HOME and the environment a test runs with (nothing inherited from the real one). */
function freshEnv(extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; home: string; cache: string } {
  const home = tempDir("hub");
  return { env: { HF_HOME: home, HF_ENDPOINT: hub.url, HOME: home, ...extra }, home, cache: join(home, "hub") };
}

/** An endpoint on a port nothing listens on (a server opened and closed again). */
async function deadEndpoint(): Promise<string> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

class Recorder implements ProgressSink {
  lines: string[] = [];
  bytes = 0;
  beginFile(name: string, total: number, initial: number) {
    this.lines.push(`begin ${name} ${total} ${initial}`);
    this.bytes = initial;
  }
  advance(n: number) {
    this.bytes += n;
  }
  endFile(ok: boolean) {
    this.lines.push(`end ${ok}`);
  }
  note(text: string) {
    this.lines.push(text);
  }
}

function opts(env: NodeJS.ProcessEnv, more: ResolveOptions = {}): ResolveOptions {
  return { env, progress: new Recorder(), retryDelayMs: 5, ...more };
}

function storage(cache: string, repo: string): string {
  return join(cache, repoFolderName(`${ORG}/${repo}`));
}

async function rejects(p: Promise<unknown>, code: string, pattern: RegExp): Promise<SmolVLMError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SmolVLMError, `expected a SmolVLMError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return e;
  }
  assert.fail("expected a rejection");
}

function captureIO(env: NodeJS.ProcessEnv): CommandIO & { out: () => string; err: () => string } {
  let out = "";
  let err = "";
  return {
    env,
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s), isTTY: false },
    out: () => out,
    err: () => err,
  };
}

// ------------------------------------------------------------------------------------------------ tests

describe("model references and environment", () => {
  test("a local folder is used as it is; bad references fail clearly", T, async () => {
    const dir = tempDir("local");
    assert.equal(await resolveModel(dir), dir);
    await rejects(resolveModel(join(dir, "missing")), "not_found", /no model folder/);
    await rejects(resolveModel("./nope"), "not_found", /no model folder at \.\/nope/);
    await rejects(resolveModel("justaname"), "not_found", /no model folder/);
    writeFileSync(join(dir, "file.txt"), "x");
    await rejects(resolveModel(join(dir, "file.txt")), "bad_request", /must be a folder/);
    await rejects(resolveModel("org/name@../../etc"), "bad_request", /not a valid revision/);
    assert.deepEqual(parseRepoRef("HuggingFaceTB/SmolVLM-256M-Instruct"), {
      repoId: "HuggingFaceTB/SmolVLM-256M-Instruct",
      revision: "main",
      explicitRevision: false,
    });
    assert.equal(parseRepoRef("a/b@refs/pr/1")?.revision, "refs/pr/1");
    assert.equal(parseRepoRef("a/b/c"), undefined);
    assert.equal(parseRepoRef("a--x/b"), undefined);
  });

  test("environment variables follow huggingface_hub", () => {
    const e1 = hubEnv({ HOME: "/h" });
    assert.equal(e1.home, "/h/.cache/huggingface");
    assert.equal(e1.cacheDir, "/h/.cache/huggingface/hub");
    assert.equal(e1.endpoint, "https://huggingface.co");
    assert.equal(e1.tokenPath, "/h/.cache/huggingface/token");
    assert.equal(e1.offline, false);
    const e2 = hubEnv({ HOME: "/h", XDG_CACHE_HOME: "/x" });
    assert.equal(e2.cacheDir, "/x/huggingface/hub");
    const e3 = hubEnv({ HF_HOME: "~/hf", HOME: "/h", HF_HUB_CACHE: "$HOME/c", HF_ENDPOINT: "http://mirror/", HF_HUB_OFFLINE: "yes", HF_TOKEN: " hf_x\n" });
    assert.equal(e3.home, "/h/hf");
    assert.equal(e3.cacheDir, "/h/c");
    assert.equal(e3.endpoint, "http://mirror");
    assert.equal(e3.offline, true);
    assert.equal(e3.token, "hf_x");
    assert.equal(hubEnv({ HOME: "/h", HF_HUB_OFFLINE: "0" }).offline, false);
    assert.equal(hubEnv({ HOME: "/h", TRANSFORMERS_OFFLINE: "1" }).offline, true);
    const { home } = freshEnv();
    writeFileSync(join(home, "token"), "hf_from_file\n");
    assert.equal(hubEnv({ HF_HOME: home }).token, "hf_from_file");
    assert.equal(hubEnv({ HF_HOME: home }).tokenSource, join(home, "token"));
    assert.equal(hubEnv({ HF_HOME: home, HF_TOKEN: "hf_env" }).token, "hf_env");
    assert.equal(normalizeEtag('W/"abc"'), "abc");
    assert.equal(normalizeEtag('"abc"'), "abc");
  });
});

describe("downloads into the huggingface_hub cache layout", () => {
  test("first download: only the inference files, blobs by etag, relative symlinks, refs/main", T, async () => {
    const { env, cache } = freshEnv();
    hub.clearLog();
    const progress = new Recorder();
    const dir = await resolveModel(`${ORG}/tiny`, { ...opts(env), progress });
    const repo = storage(cache, "tiny");
    assert.equal(dir, join(repo, "snapshots", C2));
    assert.deepEqual(readdirSync(dir).sort(), NEEDED);
    assert.equal(readFileSync(join(repo, "refs", "main"), "utf8"), C2); // no newline, as huggingface_hub writes it

    const files = modelFiles(WEIGHTS_V2);
    for (const f of NEEDED) {
      const expected = f === "config.json" ? Buffer.from(CONFIG.replace("fake", "fake v2")) : Buffer.from(files[f]!);
      assert.deepEqual(readFileSync(join(dir, f)), expected, f);
      const etag = f.endsWith(".safetensors") ? sha256(expected) : gitBlobSha1(expected);
      assert.ok(lstatSync(join(dir, f)).isSymbolicLink(), `${f} is a symlink`);
      assert.equal(readlinkSync(join(dir, f)), `../../blobs/${etag}`, f);
    }
    assert.equal(readdirSync(join(repo, "blobs")).length, NEEDED.length);
    assert.ok(existsSync(join(cache, "CACHEDIR.TAG")));

    // Over the wire: one listing, a HEAD per file, a GET per file; LFS bytes from the CDN; no .bin/.onnx/.gguf.
    const paths = hub.requests.map((r) => `${r.server} ${r.method} ${r.path}`);
    assert.equal(paths.filter((p) => p.includes("/api/models/")).length, 1);
    assert.equal(hub.requests.filter((r) => r.method === "HEAD").length, NEEDED.length);
    assert.ok(paths.some((p) => p.startsWith("cdn GET /blobs/" + sha256(WEIGHTS_V2))));
    assert.ok(!paths.some((p) => /\.bin|onnx|gguf|README/.test(p)), paths.join("\n"));
    assert.ok(progress.lines.includes(`begin model.safetensors ${WEIGHTS_V2.length} 0`));
  });

  test("second run: no request for the files; a commit revision: no request at all", T, async () => {
    const { env } = freshEnv();
    const first = await resolveModel(`${ORG}/tiny`, opts(env));
    hub.clearLog();
    const again = await resolveModel(`${ORG}/tiny`, opts(env));
    assert.equal(again, first);
    assert.deepEqual(hub.fileRequests(), []);
    assert.equal(hub.requests.length, 1); // the listing that maps main to its commit
    hub.clearLog();
    assert.equal(await resolveModel(`${ORG}/tiny@${C2}`, opts(env)), first);
    assert.deepEqual(hub.requests, []);
  });

  test("offline mode answers from the cache alone and fails clearly when the model is absent", T, async () => {
    const { env } = freshEnv();
    const dir = await resolveModel(`${ORG}/tiny`, opts(env));
    hub.clearLog();
    const offline = { ...env, HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" };
    assert.equal(await resolveModel(`${ORG}/tiny`, opts(offline)), dir);
    assert.equal(await resolveModel(`${ORG}/tiny@${C2}`, opts(offline)), dir);
    assert.deepEqual(hub.requests, []);
    await rejects(resolveModel(`${ORG}/tiny@v1.0`, opts(offline)), "not_found", /HF_HUB_OFFLINE is set and test-org\/tiny@v1\.0 is not in the cache.*smolvlm pull/);
    await rejects(resolveModel(`${ORG}/sharded`, opts(offline)), "not_found", /HF_HUB_OFFLINE/);
    // A cached snapshot missing its weights is reported as incomplete, not returned.
    rmSync(join(dir, "model.safetensors"));
    await rejects(resolveModel(`${ORG}/tiny`, opts(offline)), "not_found", /incomplete: missing model\.safetensors/);
    assert.deepEqual(hub.requests, []);
  });

  test("an unreachable Hub falls back to a complete cached snapshot, else says so", T, async () => {
    const { env } = freshEnv();
    const dir = await resolveModel(`${ORG}/tiny`, opts(env));
    const down = { ...env, HF_ENDPOINT: await deadEndpoint(), HF_HUB_ETAG_TIMEOUT: "2" };
    const progress = new Recorder();
    assert.equal(await resolveModel(`${ORG}/tiny`, { ...opts(down), progress }), dir);
    assert.match(progress.lines.join("\n"), /could not reach the Hub.*using the cached snapshot/);
    await rejects(resolveModel(`${ORG}/sharded`, opts(down)), "not_found", /could not reach the Hub.*not in the cache/);
  });

  test("branches, tags, pr refs and commits; blobs shared between revisions are not fetched twice", T, async () => {
    const { env, cache } = freshEnv();
    const repo = storage(cache, "tiny");
    const v1 = await resolveModel(`${ORG}/tiny@v1.0`, opts(env));
    assert.equal(v1, join(repo, "snapshots", C1));
    assert.equal(readFileSync(join(repo, "refs", "v1.0"), "utf8"), C1);
    assert.deepEqual(readFileSync(join(v1, "model.safetensors")), WEIGHTS);

    hub.clearLog();
    const result = await pullModel(`${ORG}/tiny`, opts(env));
    assert.equal(result.commit, C2);
    // Only the two files that differ between C1 and C2 are downloaded; the rest link to existing blobs.
    assert.deepEqual(result.downloaded.sort(), ["config.json", "model.safetensors"]);
    assert.equal(hub.fileRequests().filter((r) => r.method === "GET").length, 2);

    assert.equal(await resolveModel(`${ORG}/tiny@refs/pr/1`, opts(env)), v1);
    assert.equal(readFileSync(join(repo, "refs", "refs", "pr", "1"), "utf8"), C1);
    assert.equal(await resolveModel(`${ORG}/tiny@${C1}`, opts(env)), v1);
    await rejects(resolveModel(`${ORG}/tiny@nope`, opts(env)), "not_found", /revision "nope" not found/);
  });

  test("a sharded checkpoint: the index and the shards it names, nothing else", T, async () => {
    const { env } = freshEnv();
    hub.clearLog();
    const dir = await resolveModel(`${ORG}/sharded`, opts(env));
    const got = readdirSync(dir).sort();
    assert.ok(got.includes("model.safetensors.index.json"));
    assert.ok(got.includes("model-00001-of-00002.safetensors"));
    assert.ok(got.includes("model-00002-of-00002.safetensors"));
    assert.ok(!got.includes("model-00001-of-00003.safetensors"));
    assert.deepEqual(readFileSync(join(dir, "model-00002-of-00002.safetensors")), SHARD2);
    assert.deepEqual(missingEssentials(dir), []);
  });

  test("a repo without safetensors weights is refused with the reason", T, async () => {
    const { env } = freshEnv();
    await rejects(resolveModel(`${ORG}/bin-only`, opts(env)), "bad_weights", /no model\.safetensors.*pytorch_model\.bin.*only safetensors/);
  });

  test("without symlinks (HF_HUB_DISABLE_SYMLINKS) snapshots hold copies", T, async () => {
    const { env } = freshEnv({ HF_HUB_DISABLE_SYMLINKS: "1" });
    const dir = await resolveModel(`${ORG}/tiny`, opts(env));
    for (const f of NEEDED) assert.ok(lstatSync(join(dir, f)).isFile() && !lstatSync(join(dir, f)).isSymbolicLink(), f);
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS_V2);
    hub.clearLog();
    assert.equal(await resolveModel(`${ORG}/tiny`, opts(env)), dir);
    assert.deepEqual(hub.fileRequests(), []);
    const verified = await pullModel(`${ORG}/tiny`, opts(env, { verify: true }));
    assert.deepEqual(verified.repaired, []);
    assert.equal(verified.cached.length, NEEDED.length);
  });
});

describe("interrupted and damaged downloads", () => {
  test("a download cut mid-file resumes with Range after the process gave up", T, async () => {
    const { env, cache } = freshEnv();
    const id = `${ORG}/resume-a`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    const cutAt = 400_000;
    hub.cutNext(WEIGHTS, cutAt);
    hub.clearLog();
    await rejects(resolveModel(id, opts(env, { retries: 0 })), "not_found", /interrupted at .* run the same command again to resume/);
    const blobs = join(cache, repoFolderName(id), "blobs");
    const partial = join(blobs, `${sha256(WEIGHTS)}.incomplete`);
    assert.ok(existsSync(partial), "the partial download is kept");
    assert.equal(readFileSync(partial).length, cutAt);
    assert.ok(!existsSync(join(blobs, sha256(WEIGHTS))), "no blob under its final name");
    assert.ok(!existsSync(join(cache, repoFolderName(id), "snapshots", commit, "model.safetensors")));

    hub.clearLog();
    const progress = new Recorder();
    const dir = await resolveModel(id, { ...opts(env), progress });
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);
    const gets = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    assert.equal(gets.length, 1);
    assert.equal(gets[0]!.range, `bytes=${cutAt}-`);
    assert.ok(progress.lines.includes(`begin model.safetensors ${WEIGHTS.length} ${cutAt}`));
    assert.ok(!existsSync(partial));
  });

  test("a transfer cut twice is resumed within the same call", T, async () => {
    const { env } = freshEnv();
    const id = `${ORG}/resume-b`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    hub.cutNext(WEIGHTS, 100_000);
    hub.clearLog();
    const progress = new Recorder();
    const dir = await resolveModel(id, { ...opts(env, { retries: 3 }), progress });
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);
    const gets = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    assert.deepEqual(gets.map((g) => g.range), [undefined, "bytes=100000-"]);
    assert.match(progress.lines.join("\n"), /resuming at/);
    assert.equal(progress.bytes, WEIGHTS.length);
  });

  test("a stalled transfer times out (HF_HUB_DOWNLOAD_TIMEOUT) and resumes", T, async () => {
    const { env } = freshEnv({ HF_HUB_DOWNLOAD_TIMEOUT: "0.3" });
    const id = `${ORG}/stall`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    hub.stallNext(WEIGHTS, 250_000);
    hub.clearLog();
    const progress = new Recorder();
    const started = Date.now();
    const dir = await resolveModel(id, { ...opts(env), progress });
    assert.ok(Date.now() - started < 10_000);
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);
    assert.match(progress.lines.join("\n"), /no data for 0\.3 s; resuming at 250\.0 kB/);
    const gets = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    assert.deepEqual(gets.map((g) => g.range), [undefined, "bytes=250000-"]);
  });

  test("a server that ignores Range restarts the file from zero", T, async () => {
    const { env } = freshEnv();
    const id = `${ORG}/resume-c`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    hub.cutNext(WEIGHTS, 300_000);
    hub.ignoreRange = true;
    try {
      const progress = new Recorder();
      const dir = await resolveModel(id, { ...opts(env, { retries: 2 }), progress });
      assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);
      assert.equal(progress.bytes, WEIGHTS.length);
    } finally {
      hub.ignoreRange = false;
    }
  });

  test("bytes that do not match the etag are fetched again, and refused if they stay wrong", T, async () => {
    const { env, cache } = freshEnv();
    const id = `${ORG}/corrupt-transfer`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    hub.corruptNext(WEIGHTS, 1);
    const dir = await resolveModel(id, opts(env));
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);

    const { env: env2 } = freshEnv();
    const id2 = `${ORG}/corrupt-transfer-2`;
    hub.addRepo({ id: id2, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    hub.corruptNext(WEIGHTS, 2);
    await rejects(resolveModel(id2, opts(env2)), "bad_weights", /model\.safetensors .* failed verification twice \(sha256/);
    const blobs = join(env2.HF_HOME!, "hub", repoFolderName(id2), "blobs");
    assert.deepEqual(readdirSync(blobs).filter((f) => f.startsWith(sha256(WEIGHTS))), [], "nothing half-made is left");
    void cache;
  });

  test("a corrupted blob in the cache is detected and fetched again", T, async () => {
    const { env, cache } = freshEnv();
    const dir = await resolveModel(`${ORG}/tiny`, opts(env));
    const blob = join(storage(cache, "tiny"), "blobs", sha256(WEIGHTS_V2));

    // Same size, one byte flipped: pull re-hashes every cached file and repairs it.
    const bytes = readFileSync(blob);
    bytes[12345] = bytes[12345]! ^ 1;
    writeFileSync(blob, bytes);
    hub.clearLog();
    const result = await pullModel(`${ORG}/tiny`, opts(env, { verify: true }));
    assert.deepEqual(result.repaired, ["model.safetensors"]);
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS_V2);
    assert.equal(hub.fileRequests().filter((r) => r.method === "GET").length, 1);

    // Truncated: even a plain run notices (size against the listing) and re-fetches.
    truncateSync(blob, 1000);
    const progress = new Recorder();
    await resolveModel(`${ORG}/tiny`, { ...opts(env), progress });
    assert.match(progress.lines.join("\n"), /model\.safetensors: the cached copy is damaged \(size 1000 instead of 300000\)/);
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS_V2);

    // A broken symlink (blob deleted by hand) is repaired too.
    rmSync(blob);
    await resolveModel(`${ORG}/tiny`, opts(env));
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS_V2);
  });

  test("two concurrent resolutions of the same model both succeed", T, async () => {
    const { env } = freshEnv();
    const id = `${ORG}/concurrent`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    const [a, b] = await Promise.all([resolveModel(id, opts(env)), resolveModel(id, opts(env))]);
    assert.equal(a, b);
    assert.deepEqual(readFileSync(join(a, "model.safetensors")), WEIGHTS);
  });
});

describe("a cache laid down by huggingface_hub", () => {
  /** Builds models--org--name the way huggingface_hub's hf_hub_download does, by hand. */
  function pythonCache(cache: string, id: string, commit: string, files: Record<string, Buffer | string>, omit: string[] = []): string {
    const repo = join(cache, repoFolderName(id));
    mkdirSync(join(repo, "blobs"), { recursive: true });
    mkdirSync(join(repo, "refs"), { recursive: true });
    const snap = join(repo, "snapshots", commit);
    mkdirSync(snap, { recursive: true });
    writeFileSync(join(repo, "refs", "main"), commit);
    for (const [name, c] of Object.entries(files)) {
      if (omit.includes(name) || name.includes("/")) continue;
      const content = Buffer.from(c);
      const etag = /\.(safetensors|bin|gguf)$/.test(name) ? sha256(content) : gitBlobSha1(content);
      writeFileSync(join(repo, "blobs", etag), content);
      symlinkSync(`../../blobs/${etag}`, join(snap, name));
    }
    mkdirSync(join(cache, ".locks", repoFolderName(id)), { recursive: true });
    return snap;
  }

  test("is reused without downloading, online and offline", T, async () => {
    const { env, cache } = freshEnv();
    const id = `${ORG}/from-python`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    const snap = pythonCache(cache, id, commit, modelFiles());
    hub.clearLog();
    assert.equal(await resolveModel(id, opts(env)), snap);
    assert.deepEqual(hub.fileRequests(), []);
    assert.equal(await resolveModel(id, opts({ ...env, HF_HUB_OFFLINE: "1" })), snap);
    // The full check agrees with huggingface_hub's etags, so nothing is "repaired".
    const verified = await pullModel(id, opts(env, { verify: true }));
    assert.deepEqual(verified.repaired, []);
    assert.deepEqual(verified.downloaded, []);
  });

  test("a partial one gets only its missing files", T, async () => {
    const { env, cache } = freshEnv();
    const id = `${ORG}/from-python-partial`;
    const commit = randomCommit();
    hub.addRepo({ id, commits: { [commit]: modelFiles() }, refs: { main: commit } });
    const snap = pythonCache(cache, id, commit, modelFiles(), ["processor_config.json", "tokenizer.json"]);
    hub.clearLog();
    const result = await pullModel(id, opts(env));
    assert.equal(result.path, snap);
    assert.deepEqual(result.downloaded.sort(), ["processor_config.json", "tokenizer.json"]);
    assert.equal(hub.fileRequests().filter((r) => r.method === "GET").length, 2);
    assert.equal(readlinkSync(join(snap, "tokenizer.json")), `../../blobs/${gitBlobSha1(Buffer.from(TOKENIZER))}`);
  });
});

describe("gated, private and missing repos", () => {
  test("a gated repo without a token says how to give one", T, async () => {
    const { env, home } = freshEnv();
    const e = await rejects(resolveModel(`${ORG}/gated`, opts(env)), "not_found", /gated model: a Hugging Face access token is needed/);
    assert.match(e.message, /HF_TOKEN=/);
    assert.ok(e.message.includes(join(home, "token")), e.message);
    assert.match(e.message, new RegExp(`Accept its conditions at ${hub.url}/${ORG}/gated; then create a token at ${hub.url}/settings/tokens`));
  });

  test("HF_TOKEN opens it; the token goes to the Hub but never to the CDN", T, async () => {
    const { env } = freshEnv({ HF_TOKEN: VALID_TOKEN });
    hub.clearLog();
    const dir = await resolveModel(`${ORG}/gated`, opts(env));
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), WEIGHTS);
    const hubReqs = hub.requests.filter((r) => r.server === "hub");
    const cdnReqs = hub.requests.filter((r) => r.server === "cdn");
    assert.ok(hubReqs.length > 0 && hubReqs.every((r) => r.authorization === `Bearer ${VALID_TOKEN}`));
    assert.ok(cdnReqs.length > 0 && cdnReqs.every((r) => r.authorization === undefined));
  });

  test("the token file at $HF_HOME/token is read as huggingface_hub reads it", T, async () => {
    const { env, home } = freshEnv();
    writeFileSync(join(home, "token"), `${VALID_TOKEN}\n`);
    const dir = await resolveModel(`${ORG}/private`, opts(env));
    assert.ok(existsSync(join(dir, "config.json")));
  });

  test("private, missing, and a wrong token", T, async () => {
    const { env } = freshEnv();
    await rejects(resolveModel(`${ORG}/private`, opts(env)), "not_found", /not found on the Hub.*private or gated.*HF_TOKEN/);
    await rejects(resolveModel(`${ORG}/does-not-exist`, opts(env)), "not_found", /test-org\/does-not-exist was not found/);
    await rejects(resolveModel(`${ORG}/tiny`, opts({ ...env, HF_TOKEN: "hf_wrong" })), "not_found", /rejected your token \(token from HF_TOKEN\) as invalid/);
  });
});

describe("pull, ls and rm", () => {
  test("pull prints the snapshot folder; plain progress lines when not a terminal", T, async () => {
    const { env, cache } = freshEnv();
    const io = captureIO(env);
    assert.equal(await pull([`${ORG}/tiny@v1.0`], io), 0, io.err());
    assert.equal(io.out(), join(storage(cache, "tiny"), "snapshots", C1) + "\n");
    assert.match(io.err(), /downloading model\.safetensors \(1\.0 MB\)/);
    assert.match(io.err(), /done: model\.safetensors: 1\.0 MB in/);
    assert.match(io.err(), new RegExp(`is commit ${C1}: 9 downloaded`));
    assert.ok(!io.err().includes("\r"), "no terminal control characters in a log");

    const again = captureIO(env);
    assert.equal(await pull([`${ORG}/tiny@v1.0`], again), 0);
    assert.match(again.err(), /0 downloaded \(0 B\), 9 already cached/);

    const bad = captureIO(env);
    assert.equal(await pull([], bad), 2);
    assert.match(bad.err(), /usage:/);
    const missing = captureIO(env);
    assert.equal(await pull([`${ORG}/nothing-here`], missing), 1);
    assert.match(missing.err(), /^smolvlm: test-org\/nothing-here was not found/);
  });

  test("ls lists cached models with sizes; rm removes one", T, async () => {
    const { env, cache } = freshEnv();
    const empty = captureIO(env);
    assert.equal(await ls([], empty), 0);
    assert.match(empty.out(), /no models in the cache/);

    await resolveModel(`${ORG}/tiny@v1.0`, opts(env));
    await resolveModel(`${ORG}/tiny`, opts(env));
    await resolveModel(`${ORG}/sharded`, opts(env));
    const list = captureIO(env);
    assert.equal(await ls([], list), 0);
    const lines = list.out().split("\n");
    assert.match(lines[0]!, /^REPO ID\s+SIZE\s+REVISIONS\s+MODIFIED$/);
    const tinyLine = lines.find((l) => l.startsWith(`${ORG}/tiny `))!;
    assert.ok(tinyLine, list.out());
    assert.match(tinyLine, /main/);
    assert.match(tinyLine, /v1\.0/);
    assert.match(list.out(), /2 models, .* in /);

    const models = listCachedModels(cache);
    const tiny = models.find((m) => m.repoId === `${ORG}/tiny`)!;
    // Blobs shared by the two revisions count once.
    const distinct = new Set<string>();
    let expected = 0;
    for (const [name, c] of [...Object.entries(modelFiles()), ...Object.entries(modelFiles(WEIGHTS_V2)), ["config.json", CONFIG.replace("fake", "fake v2")] as const]) {
      if (!NEEDED.includes(name)) continue;
      const key = sha256(Buffer.from(c));
      if (!distinct.has(key)) {
        distinct.add(key);
        expected += Buffer.from(c).length;
      }
    }
    assert.equal(tiny.size, expected);
    assert.equal(tiny.revisions.length, 2);

    const json = captureIO(env);
    assert.equal(await ls(["--json"], json), 0);
    const parsed = JSON.parse(json.out()) as { cache_dir: string; models: Array<{ repo_id: string; size: number }> };
    assert.equal(parsed.cache_dir, cache);
    assert.deepEqual(parsed.models.map((m) => m.repo_id), [`${ORG}/sharded`, `${ORG}/tiny`]);

    const removed = captureIO(env);
    assert.equal(await rm([`${ORG}/tiny`], removed), 0, removed.err());
    assert.match(removed.out(), /removed test-org\/tiny \(/);
    assert.ok(!existsSync(storage(cache, "tiny")));
    assert.deepEqual(listCachedModels(cache).map((m) => m.repoId), [`${ORG}/sharded`]);

    const again = captureIO(env);
    assert.equal(await rm([`${ORG}/tiny`], again), 1);
    assert.match(again.err(), /test-org\/tiny is not in the cache/);
    const withRev = captureIO(env);
    assert.equal(await rm([`${ORG}/sharded@main`], withRev), 2);
  });
});

describe("progress display", () => {
  test("on a terminal: one redrawn line with bar, bytes, speed and time left", () => {
    let out = "";
    let t = 0;
    const p = new StreamProgress({ write: (s: string) => (out += s), isTTY: true, columns: 120 }, { now: () => t });
    p.beginFile("model.safetensors", 10_000_000, 0);
    for (let i = 0; i < 10; i++) {
      t += 500;
      p.advance(500_000);
    }
    assert.match(out, /\r\x1b\[Kmodel\.safetensors \[#+\.+\]\s+50% 5\.0 MB\/10\.0 MB 1\.0 MB\/s 00:05 left/);
    p.endFile(true);
    assert.match(out, /✓ model\.safetensors: 5\.0 MB in 5\.0 s/);
  });
});

describe("end to end", () => {
  test("a real tiny checkpoint from the fake Hub loads like the local folder", { timeout: 60_000 }, async () => {
    const src = fixturePath("models", "tiny-bf16");
    const files: Record<string, Buffer> = {};
    for (const f of readdirSync(src)) files[f] = readFileSync(join(src, f));
    const commit = randomCommit();
    const id = `${ORG}/tiny-real`;
    hub.addRepo({ id, commits: { [commit]: files }, refs: { main: commit } });
    const { env } = freshEnv();
    const dir = await resolveModel(id, opts(env));
    assert.deepEqual(readdirSync(dir).sort(), readdirSync(src).sort());
    const { SmolVLM } = await import("../src/smolvlm.js");
    const vlm = await SmolVLM.load(dir);
    assert.equal(vlm.dir, dir);
  });
});
