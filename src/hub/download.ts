/**
 * Fetching one blob into the cache: GET with resume (HTTP Range on blobs/<etag>.incomplete, as huggingface_hub
 * did), a stall timeout, retries that pick up where the bytes stopped, verification of size and hash against
 * the etag (sha256 for LFS files, the git blob sha1 otherwise), fsync, and an atomic rename to blobs/<etag>.
 * A crash at any point leaves at most a .incomplete file, never a partial blob under its final name.
 */
import { createHash, type Hash } from "node:crypto";
import { randomBytes } from "node:crypto";
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { SmolVLMError } from "../errors.js";
import { authHeaders, hubError, HubHttpError, HubUnreachableError, hubFetch, type FileMetadata } from "./api.js";
import { etagKind, removeFile, statOrUndefined, type HubEnv, type RepoCache } from "./cache.js";
import { formatSize, type ProgressSink } from "./progress.js";
import { dropFileCache } from "../backend/native-kernels.js";

// ---------------------------------------------------------------------------------------------------------
// Hashing

/** A hasher for what an etag names: sha256 of the bytes (LFS) or git's blob sha1 ("blob <size>\0" + bytes). */
export function etagHasher(etag: string, size: number): Hash | undefined {
  const kind = etagKind(etag);
  if (kind === "sha256") return createHash("sha256");
  if (kind === "sha1") return createHash("sha1").update(`blob ${size}\0`);
  return undefined;
}

async function hashFileInto(hash: Hash, path: string, end?: number): Promise<void> {
  if (end === 0) return;
  const stream = createReadStream(path, end === undefined ? {} : { start: 0, end: end - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
}

/**
 * Whether a file's content matches an etag: size first (cheap), then the hash when the etag is one.
 * Returns a reason string when it does not match, undefined when it does.
 */
export async function checkFile(path: string, etag: string | undefined, size: number | undefined): Promise<string | undefined> {
  const st = statOrUndefined(path);
  if (!st?.isFile()) return "missing";
  if (size !== undefined && st.size !== size) return `size ${st.size} instead of ${size}`;
  if (etag === undefined) return undefined;
  const h = etagHasher(etag, st.size);
  if (!h) return undefined;
  await hashFileInto(h, path);
  const got = h.digest("hex");
  return got === etag ? undefined : `${etagKind(etag)} ${got} instead of ${etag}`;
}

// ---------------------------------------------------------------------------------------------------------
// Locking (between smolvlm processes; huggingface_hub's flock is not reachable from Node without an addon)

const heldLocks = new Set<string>();

function lockIsStale(path: string): boolean {
  let pid = NaN;
  let host = "";
  try {
    [pid, host] = ((s) => [Number(s[0]), s[1] ?? ""] as [number, string])(readFileSync(path, "utf8").split("\n"));
  } catch {
    return true;
  }
  if (host !== hostname()) {
    // Another machine sharing the cache: trust the lock for an hour.
    const age = Date.now() - (statOrUndefined(path)?.mtimeMs ?? 0);
    return age > 3600_000;
  }
  if (!Number.isInteger(pid) || pid <= 0) return true;
  if (pid === process.pid) return !heldLocks.has(path);
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/** Takes `path` as a lock file (O_EXCL); returns a release function, or undefined when another live process holds it. */
export function tryLock(path: string): (() => void) | undefined {
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      try {
        writeSync(fd, `${process.pid}\n${hostname()}\n`);
      } finally {
        closeSync(fd);
      }
      heldLocks.add(path);
      return () => {
        heldLocks.delete(path);
        removeFile(path);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      if (!lockIsStale(path)) return undefined;
      removeFile(path);
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Download

export interface BlobDownloadOptions {
  env: HubEnv;
  repo: RepoCache;
  /** The repo file, for messages and progress. */
  file: string;
  meta: FileMetadata;
  progress: ProgressSink;
  /** Further attempts after an interrupted transfer (each resumes where the bytes stopped). Default 5. */
  retries?: number;
  /** Pause before a retry, in ms (default 1000). */
  retryDelayMs?: number;
}

class Interrupted extends Error {}

/** Downloads meta's blob into the cache unless it is there; resolves to the blob path. */
export async function downloadBlob(o: BlobDownloadOptions): Promise<string> {
  const { repo, meta } = o;
  const blob = repo.blobPath(meta.etag);
  mkdirSync(dirname(blob), { recursive: true });
  const release = tryLock(join(repo.lockDir, `${meta.etag}.smolvlm.lock`));
  try {
    if (statOrUndefined(blob)?.size === meta.size) return blob; // another process finished it meanwhile
    // Without the lock, another process is appending to <etag>.incomplete: use a private file (no resume).
    const incomplete = release ? `${blob}.incomplete` : `${blob}.${randomBytes(4).toString("hex")}.incomplete`;
    try {
      await fetchVerified(o, incomplete);
    } catch (e) {
      if (!release) removeFile(incomplete);
      throw e;
    }
    renameSync(incomplete, blob);
    if (o.file.endsWith(".safetensors")) dropFileCache(blob); // read back in 2 MiB folios (native-kernels.ts)
    return blob;
  } finally {
    release?.();
  }
}

/** Fills `incomplete` with the verified bytes of meta, resuming and retrying as needed. */
async function fetchVerified(o: BlobDownloadOptions, incomplete: string): Promise<void> {
  const { meta, progress, file } = o;
  const retries = o.retries ?? 5;
  const delayMs = o.retryDelayMs ?? 1000;
  let failures = 0;
  let hashFailures = 0;
  let have = statOrUndefined(incomplete)?.size ?? 0;
  if (have > meta.size) {
    await truncate(incomplete);
    have = 0;
  }
  progress.beginFile(file, meta.size, have);
  let ok = false;
  try {
    for (;;) {
      have = statOrUndefined(incomplete)?.size ?? 0;
      try {
        if (have < meta.size) await transfer(o, incomplete, have);
      } catch (e) {
        if (!(e instanceof Interrupted)) throw e;
        const now = statOrUndefined(incomplete)?.size ?? 0;
        if (now > have) failures = 0; // bytes arrived: the retry budget counts stalls in a row, as in huggingface_hub
        if (++failures > retries) {
          throw new HubUnreachableError(
            meta.location,
            `download of ${file} interrupted at ${formatSize(now)} of ${formatSize(meta.size)} (${e.message}); run the same command again to resume`,
          );
        }
        progress.note(`${file}: ${e.message}; resuming at ${formatSize(now)} (retry ${failures} of ${retries})`);
        await new Promise((r) => setTimeout(r, delayMs));
        continue;
      }
      const problem = await checkFile(incomplete, meta.etag, meta.size);
      if (problem === undefined) {
        await syncFile(incomplete);
        ok = true;
        return;
      }
      // Wrong bytes: start over once from zero (the resumed part may be what is wrong), then give up.
      const bad = statOrUndefined(incomplete)?.size ?? 0;
      if (++hashFailures > 1) {
        removeFile(incomplete);
        throw new SmolVLMError(
          "bad_weights",
          `${file} from ${o.repo.repoId} failed verification twice (${problem}); the download was discarded`,
        );
      }
      await truncate(incomplete);
      progress.advance(-bad);
      progress.note(`${file}: the downloaded bytes do not match the Hub's etag (${problem}); fetching again`);
    }
  } finally {
    progress.endFile(ok);
  }
}

async function truncate(path: string): Promise<void> {
  const fh = await open(path, "w");
  await fh.close();
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** One GET from `have` to the end, appended to `incomplete`. Network trouble throws Interrupted. */
async function transfer(o: BlobDownloadOptions, incomplete: string, have: number): Promise<void> {
  const { env, meta, progress } = o;
  const headers: Record<string, string> = { ...authHeaders(env), "Accept-Encoding": "identity" };
  if (!meta.sendAuth) delete headers.Authorization; // a signed CDN URL: the token stays with the Hub
  if (have > 0) headers.Range = `bytes=${have}-`;
  const controller = new AbortController();
  const stallMs = env.downloadTimeoutS * 1000;
  let timer = setTimeout(() => controller.abort(), stallMs);
  const kick = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(), stallMs);
  };
  let fh: FileHandle | undefined;
  try {
    let res: Response;
    try {
      res = await hubFetch(meta.location, { headers, signal: controller.signal, redirect: "follow" }, env.downloadTimeoutS);
    } catch (e) {
      throw new Interrupted(e instanceof HubUnreachableError ? e.reason : String(e));
    }
    kick();
    if (res.status === 416 && have > 0) {
      await res.body?.cancel().catch(() => undefined);
      await truncate(incomplete);
      progress.advance(-have);
      throw new Interrupted("the server refused to resume (416)");
    }
    if (!res.ok) {
      const err = await hubError(res, env, { repoId: o.repo.repoId, revision: meta.commit, file: o.file });
      if (err instanceof HubHttpError && (err.status >= 500 || err.status === 429 || err.status === 408)) throw new Interrupted(err.message);
      throw err;
    }
    let flags = "a";
    if (have > 0 && res.status !== 206) {
      // The server ignored Range and sends everything: start the file over.
      flags = "w";
      progress.advance(-have);
    } else if (have > 0) {
      const m = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel().catch(() => undefined);
        await truncate(incomplete);
        progress.advance(-have);
        throw new Interrupted(`the server resumed at the wrong offset (${res.headers.get("content-range")})`);
      }
    }
    fh = await open(incomplete, flags);
    if (!res.body) throw new Interrupted("empty answer");
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        kick();
        await fh.write(chunk);
        progress.advance(chunk.byteLength);
      }
    } catch (e) {
      throw new Interrupted(controller.signal.aborted ? `no data for ${env.downloadTimeoutS} s` : describe(e));
    }
  } finally {
    clearTimeout(timer);
    await fh?.close();
  }
  const size = statSync(incomplete).size;
  if (size < meta.size) throw new Interrupted(`connection closed early (${formatSize(size)} of ${formatSize(meta.size)})`);
}

function describe(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}
