/**
 * The Hugging Face Hub cache, laid out exactly as huggingface_hub lays it out, so that a model fetched by
 * either tool is found by the other:
 *
 *   $HF_HUB_CACHE/models--org--name/
 *     blobs/<etag>                 file contents, named by etag (git sha1, or sha256 for LFS files)
 *     blobs/<etag>.incomplete      a download in progress (resumed with an HTTP Range request)
 *     snapshots/<commit>/<file>    relative symlink ../../blobs/<etag> (a copy where symlinks are unavailable)
 *     refs/<branch or tag>         the commit the revision pointed to, no trailing newline
 *
 * This module also reads the environment variables huggingface_hub reads, and implements `ls` and `rm`.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  type Stats,
} from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { SmolVLMError } from "../errors.js";

export const DEFAULT_ENDPOINT = "https://huggingface.co";
export const DEFAULT_REVISION = "main";
const COMMIT_RE = /^[0-9a-f]{40}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const TRUE_VALUES = new Set(["1", "ON", "YES", "TRUE"]);

/** Same rule as huggingface_hub's constants._is_true. */
export function envTrue(value: string | undefined): boolean {
  return value !== undefined && TRUE_VALUES.has(value.toUpperCase());
}

/** os.path.expanduser + os.path.expandvars, the way huggingface_hub applies them to HF_HOME and friends. */
function expandPath(p: string, env: NodeJS.ProcessEnv): string {
  let out = p.replace(/\$(\w+)|\$\{([^}]+)\}/g, (m, a: string | undefined, b: string | undefined) => env[(a ?? b)!] ?? m);
  if (out === "~" || out.startsWith("~/")) out = join(env.HOME || homedir(), out.slice(1));
  return out;
}

export interface HubEnv {
  /** $HF_HOME (default $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface). */
  home: string;
  /** $HF_HUB_CACHE (default $HF_HOME/hub); the folder holding models--org--name. */
  cacheDir: string;
  /** $HF_ENDPOINT without a trailing slash (default https://huggingface.co). */
  endpoint: string;
  /** $HF_TOKEN, else the token file; undefined when neither is set. */
  token: string | undefined;
  /** Where the token came from, for messages ("HF_TOKEN" or the file path). */
  tokenSource: string | undefined;
  /** The token file huggingface_hub reads ($HF_TOKEN_PATH, default $HF_HOME/token). */
  tokenPath: string;
  /** $HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is true: never touch the network. */
  offline: boolean;
  /** $HF_HUB_DISABLE_SYMLINKS: store copies instead of symlinks in snapshots/. */
  disableSymlinks: boolean;
  /** Seconds to wait for metadata (HEAD, API) answers: $HF_HUB_ETAG_TIMEOUT, default 10. */
  etagTimeoutS: number;
  /** Seconds a download may stall before it is retried: $HF_HUB_DOWNLOAD_TIMEOUT, default 10. */
  downloadTimeoutS: number;
}

function cleanToken(t: string | undefined): string | undefined {
  if (t === undefined) return undefined;
  const c = t.replace(/[\r\n]/g, "").trim();
  return c === "" ? undefined : c;
}

function positiveNumber(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && value.trim() !== "" && Number.isFinite(n) && n > 0 ? n : fallback;
}

/** Reads the Hub settings from the environment, with huggingface_hub's names, defaults and precedence. */
export function hubEnv(env: NodeJS.ProcessEnv = process.env): HubEnv {
  const xdg = env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");
  const home = resolve(expandPath(env.HF_HOME || join(xdg, "huggingface"), env));
  const cacheDir = resolve(expandPath(env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(home, "hub"), env));
  const tokenPath = resolve(expandPath(env.HF_TOKEN_PATH || join(home, "token"), env));
  let token = cleanToken(env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN);
  let tokenSource: string | undefined = token !== undefined ? (env.HF_TOKEN ? "HF_TOKEN" : "HUGGING_FACE_HUB_TOKEN") : undefined;
  if (token === undefined) {
    try {
      token = cleanToken(readFileSync(tokenPath, "utf8"));
      if (token !== undefined) tokenSource = tokenPath;
    } catch {
      // no token file: anonymous access
    }
  }
  return {
    home,
    cacheDir,
    endpoint: (env.HF_ENDPOINT || DEFAULT_ENDPOINT).replace(/\/+$/, ""),
    token,
    tokenSource,
    tokenPath,
    offline: envTrue(env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE),
    disableSymlinks: envTrue(env.HF_HUB_DISABLE_SYMLINKS),
    etagTimeoutS: positiveNumber(env.HF_HUB_ETAG_TIMEOUT, 10),
    downloadTimeoutS: positiveNumber(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Model references

export interface RepoRef {
  repoId: string;
  /** The revision asked for (branch, tag or commit); "main" when none was given. */
  revision: string;
  /** Whether the reference named a revision explicitly. */
  explicitRevision: boolean;
}

const NAME_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Checks a repo id the way huggingface_hub's validate_repo_id does (for the org/name form). */
export function isRepoId(id: string): boolean {
  const parts = id.split("/");
  if (parts.length !== 2) return false;
  return parts.every(
    (p) => p.length > 0 && p.length <= 96 && NAME_PART.test(p) && !p.includes("--") && !p.includes("..") && !p.endsWith(".") && !p.endsWith("-"),
  ) && !id.endsWith(".git");
}

/** A branch, tag or commit: anything git allows that cannot escape refs/ or snapshots/ on disk. */
export function isSafeRevision(rev: string): boolean {
  return (
    rev.length > 0 &&
    rev.length <= 255 &&
    !rev.startsWith("/") &&
    !rev.endsWith("/") &&
    !rev.includes("\\") &&
    !rev.includes("\0") &&
    !rev.split("/").some((s) => s === "" || s === "." || s === "..") &&
    !/[\s~^:?*[]/.test(rev)
  );
}

export function isCommitHash(rev: string): boolean {
  return COMMIT_RE.test(rev);
}

/**
 * Parses `org/name[@revision]`. Returns undefined when `ref` does not have that shape (so the caller can treat it
 * as a path); throws bad_request when it has the shape but a part is invalid.
 */
export function parseRepoRef(ref: string): RepoRef | undefined {
  const at = ref.indexOf("@");
  const id = at < 0 ? ref : ref.slice(0, at);
  if (!isRepoId(id)) return undefined;
  if (at < 0) return { repoId: id, revision: DEFAULT_REVISION, explicitRevision: false };
  const revision = ref.slice(at + 1);
  if (!isSafeRevision(revision)) {
    throw new SmolVLMError("bad_request", `"${revision}" is not a valid revision (a branch, tag or 40-hex commit) in "${ref}"`);
  }
  return { repoId: id, revision, explicitRevision: true };
}

// ---------------------------------------------------------------------------------------------------------
// Layout

/** models--org--name, as huggingface_hub's repo_folder_name names it. */
export function repoFolderName(repoId: string): string {
  return ["models", ...repoId.split("/")].join("--");
}

/** The inverse of repoFolderName, or undefined for a folder that is not a model repo. */
export function repoIdFromFolder(folder: string): string | undefined {
  if (!folder.startsWith("models--")) return undefined;
  const id = folder.slice("models--".length).split("--").join("/");
  return id.length > 0 ? id : undefined;
}

/** huggingface_hub's _normalize_etag: W/"x" and "x" both become x. */
export function normalizeEtag(etag: string | null | undefined): string | undefined {
  if (etag === null || etag === undefined) return undefined;
  let e = etag.trim();
  if (e.startsWith("W/")) e = e.slice(2);
  e = e.replace(/^"+|"+$/g, "");
  return e === "" ? undefined : e;
}

/** What kind of content hash an etag is: "sha256" (LFS files), "sha1" (git blob id), or none we can check. */
export function etagKind(etag: string): "sha256" | "sha1" | undefined {
  if (SHA256_RE.test(etag)) return "sha256";
  if (COMMIT_RE.test(etag)) return "sha1";
  return undefined;
}

/** A file name from the Hub must stay inside the snapshot folder. */
export function isSafeRepoFile(name: string): boolean {
  return (
    name.length > 0 &&
    !name.startsWith("/") &&
    !name.includes("\\") &&
    !name.includes("\0") &&
    !name.split("/").some((s) => s === "" || s === "." || s === "..")
  );
}

/** Paths of one repo inside the cache. */
export class RepoCache {
  readonly storage: string;
  readonly lockDir: string;

  constructor(
    readonly cacheDir: string,
    readonly repoId: string,
  ) {
    this.storage = join(cacheDir, repoFolderName(repoId));
    this.lockDir = join(cacheDir, ".locks", repoFolderName(repoId));
  }

  blobPath(etag: string): string {
    if (!/^[A-Za-z0-9._+=-]+$/.test(etag) || etag.startsWith(".")) {
      throw new SmolVLMError("bad_weights", `the Hub sent an etag that cannot name a file: "${etag}"`);
    }
    return join(this.storage, "blobs", etag);
  }

  snapshotDir(commit: string): string {
    return join(this.storage, "snapshots", commit);
  }

  pointerPath(commit: string, file: string): string {
    if (!isSafeRepoFile(file)) throw new SmolVLMError("bad_request", `unsafe file name from the Hub: "${file}"`);
    return join(this.snapshotDir(commit), ...file.split("/"));
  }

  refPath(revision: string): string {
    return join(this.storage, "refs", ...revision.split("/"));
  }

  /** The commit a branch or tag pointed to when last resolved, from refs/<revision>. */
  readRef(revision: string): string | undefined {
    try {
      const c = readFileSync(this.refPath(revision), "utf8").trim();
      return isCommitHash(c) ? c : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records revision -> commit (atomically; no trailing newline, since huggingface_hub reads the file verbatim). */
  writeRef(revision: string, commit: string): void {
    if (revision === commit) return;
    if (this.readRef(revision) === commit) return;
    const path = this.refPath(revision);
    mkdirSync(dirname(path), { recursive: true });
    atomicWriteFile(path, commit);
  }

  /** The commit for a revision as far as the cache knows: the revision itself if it is a commit, else its ref. */
  cachedCommit(revision: string): string | undefined {
    return isCommitHash(revision) ? revision : this.readRef(revision);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Small file-system helpers

function tmpName(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(4).toString("hex")}.tmp`);
}

/** Writes a small file so that readers see either the old content or the new one, never a part. */
export function atomicWriteFile(path: string, content: string | Uint8Array): void {
  const tmp = tmpName(path);
  const fd = openSync(tmp, "w");
  try {
    writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

const symlinkSupport = new Map<string, boolean>();

/** Whether symlinks can be made in `dir` (checked once per folder, like huggingface_hub). */
export function symlinksSupported(dir: string): boolean {
  const known = symlinkSupport.get(dir);
  if (known !== undefined) return known;
  let ok = false;
  mkdirSync(dir, { recursive: true });
  const src = join(dir, `.symlink-probe-${randomBytes(4).toString("hex")}`);
  const dst = `${src}-link`;
  try {
    writeFileSync(src, "");
    symlinkSync(basename(src), dst);
    ok = true;
  } catch {
    ok = false;
  } finally {
    rmSync(dst, { force: true });
    rmSync(src, { force: true });
  }
  symlinkSupport.set(dir, ok);
  return ok;
}

/**
 * Makes snapshots/<commit>/<file> point at a blob: a relative symlink (../../blobs/<etag>) swapped in atomically,
 * or, without symlinks, the blob itself (moved when `newBlob`, as huggingface_hub does, else copied).
 */
export function linkPointer(blob: string, pointer: string, options: { useSymlinks: boolean; newBlob: boolean }): void {
  mkdirSync(dirname(pointer), { recursive: true });
  const tmp = tmpName(pointer);
  try {
    if (options.useSymlinks) {
      symlinkSync(relative(dirname(pointer), blob), tmp);
    } else if (options.newBlob) {
      renameSync(blob, tmp);
    } else {
      copyFileSync(blob, tmp);
      const fd = openSync(tmp, "r+");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    renameSync(tmp, pointer);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** stat() that follows symlinks and returns undefined for a missing file or a broken link. */
export function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

const CACHEDIR_TAG =
  "Signature: 8a477f597d28d172789f06886806bc55\n" +
  "# This file is a cache directory tag created by huggingface_hub.\n" +
  "# For information about cache directory tags, see:\n" +
  "#\thttps://bford.info/cachedir/\n";

/** Tags the cache folder for backup tools, with the same content huggingface_hub writes. */
export function ensureCachedirTag(cacheDir: string): void {
  const tag = join(cacheDir, "CACHEDIR.TAG");
  if (existsSync(tag)) return;
  try {
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(tag, CACHEDIR_TAG, { flag: "wx" });
  } catch {
    // best effort, as in huggingface_hub
  }
}

// ---------------------------------------------------------------------------------------------------------
// ls / rm

export interface CachedRevision {
  commit: string;
  refs: string[];
  path: string;
  files: number;
  /** Bytes of the distinct files this snapshot uses. */
  size: number;
}

export interface CachedModel {
  repoId: string;
  path: string;
  /** Bytes on disk of the distinct files all snapshots use (a blob shared by two revisions counts once). */
  size: number;
  /** Bytes in unfinished downloads (blobs/*.incomplete). */
  incompleteSize: number;
  revisions: CachedRevision[];
  /** Refs whose snapshot folder is missing (a damaged or half-removed cache). */
  danglingRefs: string[];
  lastModified: Date;
}

function walkFiles(dir: string, out: string[] = []): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walkFiles(p, out);
    else out.push(p);
  }
  return out;
}

/** Scans one models--org--name folder (huggingface_hub's scan_cache_dir, tolerant of damage). */
export function scanRepo(cacheDir: string, repoId: string): CachedModel | undefined {
  const repo = new RepoCache(cacheDir, repoId);
  const st = statOrUndefined(repo.storage);
  if (!st?.isDirectory()) return undefined;

  const refsByCommit = new Map<string, string[]>();
  const refsDir = join(repo.storage, "refs");
  for (const f of walkFiles(refsDir)) {
    let commit: string;
    try {
      commit = readFileSync(f, "utf8").trim();
    } catch {
      continue;
    }
    const name = relative(refsDir, f).split(sep).join("/");
    refsByCommit.set(commit, [...(refsByCommit.get(commit) ?? []), name]);
  }

  const seen = new Map<string, number>(); // real path (dev:ino) -> size
  const revisions: CachedRevision[] = [];
  let lastModified = st.mtime;
  const snapDir = join(repo.storage, "snapshots");
  let snaps: string[] = [];
  try {
    snaps = readdirSync(snapDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    snaps = [];
  }
  for (const commit of snaps.sort()) {
    const files = walkFiles(join(snapDir, commit));
    const mine = new Map<string, number>();
    for (const f of files) {
      const fst = statOrUndefined(f);
      if (!fst?.isFile()) continue; // broken link
      const key = `${fst.dev}:${fst.ino}`;
      mine.set(key, fst.size);
      seen.set(key, fst.size);
      if (fst.mtime > lastModified) lastModified = fst.mtime;
    }
    revisions.push({
      commit,
      refs: (refsByCommit.get(commit) ?? []).sort(),
      path: join(snapDir, commit),
      files: mine.size,
      size: [...mine.values()].reduce((a, b) => a + b, 0),
    });
    refsByCommit.delete(commit);
  }
  let incompleteSize = 0;
  for (const f of walkFiles(join(repo.storage, "blobs"))) {
    if (!f.endsWith(".incomplete")) continue;
    incompleteSize += statOrUndefined(f)?.size ?? 0;
  }
  return {
    repoId,
    path: repo.storage,
    size: [...seen.values()].reduce((a, b) => a + b, 0),
    incompleteSize,
    revisions,
    danglingRefs: [...refsByCommit.values()].flat().sort(),
    lastModified,
  };
}

/** Every model repo in the cache, sorted by repo id. */
export function listCachedModels(cacheDir: string): CachedModel[] {
  let names: string[];
  try {
    names = readdirSync(cacheDir);
  } catch {
    return [];
  }
  const out: CachedModel[] = [];
  for (const name of names.sort()) {
    const id = repoIdFromFolder(name);
    if (id === undefined) continue;
    const m = scanRepo(cacheDir, id);
    if (m) out.push(m);
  }
  return out.sort((a, b) => a.repoId.localeCompare(b.repoId));
}

/** Deletes a model from the cache (its folder and its lock folder); returns what was removed. */
export function removeCachedModel(cacheDir: string, repoId: string): CachedModel {
  if (!isRepoId(repoId)) throw new SmolVLMError("bad_request", `"${repoId}" is not a repo id (expected org/name)`);
  const info = scanRepo(cacheDir, repoId);
  if (!info) throw new SmolVLMError("not_found", `${repoId} is not in the cache (${cacheDir})`);
  // Rename first so that a crash mid-delete never leaves a half model under the real name. The trash lives in
  // .locks/, which huggingface_hub's cache scan skips; leftovers of an earlier crash are cleared here too.
  const trashDir = join(cacheDir, ".locks");
  mkdirSync(trashDir, { recursive: true });
  const trash = join(trashDir, `.smolvlm-trash-${randomBytes(4).toString("hex")}`);
  try {
    renameSync(info.path, trash);
  } catch {
    rmSync(info.path, { recursive: true, force: true });
  }
  for (const name of readdirSync(trashDir)) {
    if (name.startsWith(".smolvlm-trash-")) rmSync(join(trashDir, name), { recursive: true, force: true });
  }
  rmSync(new RepoCache(cacheDir, repoId).lockDir, { recursive: true, force: true });
  return info;
}
