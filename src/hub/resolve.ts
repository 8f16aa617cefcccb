/**
 * Model references: a local folder is used as it is; `org/name[@revision]` is resolved through the Hugging Face
 * Hub cache (downloading what is missing) and becomes the path of snapshots/<commit>/ in that cache.
 *
 * Online, a branch or tag costs one API request (GET /api/models/{repo}/revision/{rev}) to learn its commit and
 * file list; files already in the cache cost nothing more. A 40-hex commit whose snapshot is complete costs no
 * request at all. Offline (HF_HUB_OFFLINE=1), or when the Hub cannot be reached, the cache alone answers.
 */
import { mkdirSync, readFileSync, readlinkSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve as resolvePath, sep } from "node:path";
import { SmolVLMError } from "../errors.js";
import { fetchFileMetadata, fetchRepoInfo, HubHttpError, HubUnreachableError, withRetries, type RepoInfo, type RepoSibling } from "./api.js";
import {
  ensureCachedirTag,
  hubEnv,
  isCommitHash,
  isSafeRepoFile,
  linkPointer,
  lstatOrUndefined,
  parseRepoRef,
  removeFile,
  RepoCache,
  statOrUndefined,
  symlinksSupported,
  type HubEnv,
  type RepoRef,
} from "./cache.js";
import { checkFile, downloadBlob } from "./download.js";
import { silentProgress, stderrProgress, type ProgressSink } from "./progress.js";

/** The files inference reads, besides the weights. Everything else in a repo (.bin, ONNX, GGUF, ...) is skipped. */
export const MODEL_FILES = [
  "config.json",
  "generation_config.json",
  "preprocessor_config.json",
  "processor_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "chat_template.json",
  "chat_template.jinja",
] as const;

export const WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX = "model.safetensors.index.json";

export interface ResolveOptions {
  /** Environment to read HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Cache only, no network (default: HF_HUB_OFFLINE). */
  offline?: boolean;
  /** Where progress goes: a sink, or false for none (default: stderr, a bar on a terminal, lines elsewhere). */
  progress?: ProgressSink | false;
  /** Re-hash cached files against their etags and re-fetch any that do not match (pull does this). */
  verify?: boolean;
  /** Retries after an interrupted transfer or a transient Hub error (default 5). */
  retries?: number;
  /** Pause before a retry, in ms (default 1000). */
  retryDelayMs?: number;
  /** Symlinks in snapshots/ (default: unless HF_HUB_DISABLE_SYMLINKS or the filesystem cannot). */
  symlinks?: boolean;
}

export interface PullResult {
  /** snapshots/<commit> folder: the model folder to load. */
  path: string;
  repoId: string;
  revision: string;
  commit: string;
  /** Files fetched from the Hub in this call. */
  downloaded: string[];
  /** Files that were already in the cache. */
  cached: string[];
  /** Files found damaged in the cache and fetched again. */
  repaired: string[];
  /** Bytes fetched (whole files, including resumed parts fetched earlier). */
  downloadedBytes: number;
  /** Whether the answer came from the cache alone (offline, or the Hub unreachable). */
  fromCacheOnly: boolean;
}

/**
 * A model reference to a local folder: an existing folder is returned as given; `org/name[@revision]` is
 * resolved through the Hub cache (downloaded on first use) and its snapshot folder returned.
 */
export async function resolveModel(ref: string, options: ResolveOptions = {}): Promise<string> {
  const local = localFolder(ref);
  if (local !== undefined) return local;
  const parsed = parseRepoRef(ref);
  if (!parsed) throw notAReference(ref);
  return (await pullModel(parsed, options)).path;
}

function looksLikePath(ref: string): boolean {
  return ref.startsWith(".") || ref.startsWith("~") || isAbsolute(ref) || ref.includes("\\") || ref.split("@")[0]!.split("/").length !== 2;
}

function notAReference(ref: string): SmolVLMError {
  return new SmolVLMError(
    "not_found",
    looksLikePath(ref)
      ? `no model folder at ${ref}`
      : `"${ref}" is neither a folder nor a Hub model reference (org/name or org/name@revision)`,
  );
}

/** The folder itself when `ref` names an existing path; undefined when it does not exist. */
function localFolder(ref: string): string | undefined {
  const st = statOrUndefined(ref);
  if (st === undefined) {
    if (looksLikePath(ref) && !parseRepoRef(ref)) throw notAReference(ref);
    return undefined;
  }
  if (!st.isDirectory()) throw new SmolVLMError("bad_request", "a model reference must be a folder (or org/name[@revision])", ref);
  return ref;
}

interface Context {
  env: HubEnv;
  repo: RepoCache;
  ref: RepoRef;
  progress: ProgressSink;
  verify: boolean;
  retries: number;
  retryDelayMs: number;
  useSymlinks: boolean;
  result: PullResult;
}

/** Resolves (and downloads what is missing of) a Hub model; the engine behind `smolvlm pull` and resolveModel. */
export async function pullModel(reference: string | RepoRef, options: ResolveOptions = {}): Promise<PullResult> {
  const ref = typeof reference === "string" ? parseRepoRef(reference) : reference;
  if (!ref) throw new SmolVLMError("bad_request", `"${String(reference)}" is not a Hub model reference (expected org/name or org/name@revision)`);
  const env = hubEnv(options.env ?? process.env);
  const offline = options.offline ?? env.offline;
  const repo = new RepoCache(env.cacheDir, ref.repoId);
  const progress = options.progress === false ? silentProgress : (options.progress ?? stderrProgress());

  const cachedCommit = repo.cachedCommit(ref.revision);
  const fromCache = (commit: string): PullResult => ({
    path: repo.snapshotDir(commit),
    repoId: ref.repoId,
    revision: ref.revision,
    commit,
    downloaded: [],
    cached: [],
    repaired: [],
    downloadedBytes: 0,
    fromCacheOnly: true,
  });
  const label = `${ref.repoId}${ref.explicitRevision ? `@${ref.revision}` : ""}`;

  if (offline) {
    if (cachedCommit === undefined) {
      throw new SmolVLMError(
        "not_found",
        `HF_HUB_OFFLINE is set and ${label} is not in the cache (${env.cacheDir}); ` +
          `run \`smolvlm pull ${label}\` with network access first, or unset HF_HUB_OFFLINE`,
      );
    }
    const missing = missingEssentials(repo.snapshotDir(cachedCommit));
    if (missing.length > 0) {
      throw new SmolVLMError(
        "not_found",
        `HF_HUB_OFFLINE is set and the cached snapshot of ${label} (${cachedCommit}) is incomplete: missing ${missing.join(", ")}; ` +
          `run \`smolvlm pull ${label}\` with network access first`,
      );
    }
    return fromCache(cachedCommit);
  }

  // A commit is immutable: a complete snapshot needs no request at all.
  if (isCommitHash(ref.revision) && !options.verify && missingEssentials(repo.snapshotDir(ref.revision)).length === 0) {
    return { ...fromCache(ref.revision), fromCacheOnly: false };
  }

  const retries = options.retries ?? 5;
  const retryDelayMs = options.retryDelayMs ?? 1000;
  let info: RepoInfo;
  try {
    // With a complete snapshot to fall back on, fail fast as huggingface_hub does; else retry transient errors.
    const canFallBack = cachedCommit !== undefined && missingEssentials(repo.snapshotDir(cachedCommit)).length === 0;
    info = await withRetries(() => fetchRepoInfo(env, ref.repoId, ref.revision), canFallBack ? 0 : Math.min(retries, 2), retryDelayMs);
  } catch (e) {
    // As huggingface_hub: a Hub that cannot be reached (or refuses) falls back to a complete cached snapshot.
    const fallback = e instanceof HubUnreachableError || (e instanceof HubHttpError && e.errorCode !== "RevisionNotFound");
    if (fallback && cachedCommit !== undefined && missingEssentials(repo.snapshotDir(cachedCommit)).length === 0) {
      progress.note(`smolvlm: ${(e as Error).message.split("\n")[0]}; using the cached snapshot ${cachedCommit.slice(0, 12)} of ${label}`);
      return fromCache(cachedCommit);
    }
    if (e instanceof HubUnreachableError) {
      throw new SmolVLMError(
        "not_found",
        `${e.message}, and ${label} is not in the cache (${env.cacheDir}); check the connection (or HF_ENDPOINT), then try again`,
      );
    }
    throw e;
  }

  const commit = info.sha;
  const ctx: Context = {
    env,
    repo,
    ref,
    progress,
    verify: options.verify === true,
    retries,
    retryDelayMs,
    useSymlinks: options.symlinks ?? (!env.disableSymlinks && symlinksSupported(join(repo.storage, "blobs"))),
    result: { ...fromCache(commit), fromCacheOnly: false },
  };
  ensureCachedirTag(env.cacheDir);
  mkdirSync(repo.snapshotDir(commit), { recursive: true });
  repo.writeRef(ref.revision, commit);

  const siblings = new Map<string, RepoSibling>();
  for (const s of info.siblings) siblings.set(s.rfilename, s);
  if (!siblings.has("config.json")) {
    throw new SmolVLMError("not_found", `${label} has no config.json: it is not a transformers model repository`);
  }

  // The index first: it names the shards.
  let weights: string[];
  if (siblings.has(WEIGHTS_INDEX)) {
    await ensureFile(ctx, WEIGHTS_INDEX, siblings.get(WEIGHTS_INDEX)!);
    weights = shardsOf(repo.pointerPath(commit, WEIGHTS_INDEX));
    for (const s of weights) {
      if (!siblings.has(s)) throw new SmolVLMError("bad_weights", `${WEIGHTS_INDEX} of ${label} names ${s}, which the repo does not have`);
    }
  } else if (siblings.has(WEIGHTS_FILE)) {
    weights = [WEIGHTS_FILE];
  } else {
    const others = [...siblings.keys()].filter((f) => /\.(bin|pt|pth|onnx|gguf|h5|msgpack|safetensors)$/.test(f));
    throw new SmolVLMError(
      "bad_weights",
      `${label} has no ${WEIGHTS_FILE} or ${WEIGHTS_INDEX} at its top level` +
        (others.length > 0 ? ` (it has ${others.slice(0, 4).join(", ")}${others.length > 4 ? ", ..." : ""}; only safetensors weights are read)` : ""),
    );
  }

  const files = [...MODEL_FILES.filter((f) => siblings.has(f)), ...weights];
  for (const f of files) {
    if (f === WEIGHTS_INDEX) continue;
    await ensureFile(ctx, f, siblings.get(f)!);
  }
  return ctx.result;
}

function sizeOf(s: RepoSibling): number | undefined {
  const n = s.lfs?.size ?? s.size;
  return typeof n === "number" && Number.isInteger(n) && n >= 0 ? n : undefined;
}

function etagOf(s: RepoSibling): string | undefined {
  const e = s.lfs?.sha256 ?? s.blobId;
  return typeof e === "string" && /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(e) ? e : undefined;
}

/** The shard files a model.safetensors.index.json names, checked to stay inside the snapshot. */
export function shardsOf(indexPath: string): string[] {
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, "utf8"));
  } catch (e) {
    throw new SmolVLMError("bad_weights", `cannot read the weights index: ${(e as Error).message}`, indexPath);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (map === null || typeof map !== "object") throw new SmolVLMError("bad_weights", "the weights index has no weight_map", indexPath);
  const shards = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const s of shards) {
    if (typeof s !== "string" || !isSafeRepoFile(s)) throw new SmolVLMError("bad_weights", `the weights index names an unsafe shard file: ${String(s)}`, indexPath);
  }
  return (shards as string[]).sort();
}

/**
 * What a snapshot folder lacks to be loaded, judged without the Hub's file list: config.json, tokenizer.json and
 * the weights (model.safetensors, or the index and every shard it names).
 */
export function missingEssentials(dir: string): string[] {
  const has = (f: string) => statOrUndefined(join(dir, ...f.split("/")))?.isFile() === true;
  const missing = ["config.json", "tokenizer.json"].filter((f) => !has(f));
  if (has(WEIGHTS_INDEX)) {
    try {
      missing.push(...shardsOf(join(dir, WEIGHTS_INDEX)).filter((s) => !has(s)));
    } catch {
      missing.push(`${WEIGHTS_INDEX} (unreadable)`);
    }
  } else if (!has(WEIGHTS_FILE)) {
    missing.push(WEIGHTS_FILE);
  }
  return missing;
}

/** The blob a snapshot symlink points at, if it is one inside this repo's blobs/. */
function linkedBlob(repo: RepoCache, pointer: string): string | undefined {
  const lst = lstatOrUndefined(pointer);
  if (!lst?.isSymbolicLink()) return undefined;
  try {
    const target = resolvePath(dirname(pointer), readlinkSync(pointer));
    const blobs = join(repo.storage, "blobs") + sep;
    return target.startsWith(blobs) ? target : undefined;
  } catch {
    return undefined;
  }
}

/** Makes snapshots/<commit>/<file> present and sound, from the cache when possible, else from the Hub. */
async function ensureFile(ctx: Context, file: string, sibling: RepoSibling): Promise<void> {
  const { repo, env, result } = ctx;
  const commit = result.commit;
  const pointer = repo.pointerPath(commit, file);
  const expectedSize = sizeOf(sibling);
  let expectedEtag = etagOf(sibling);
  let damaged = false;

  // 1. Already in this snapshot?
  const lst = lstatOrUndefined(pointer);
  if (lst !== undefined) {
    const blob = linkedBlob(repo, pointer);
    // The blob's own name is the etag it was verified against when it was fetched (by us or by huggingface_hub).
    const etag = blob !== undefined ? basename(blob) : expectedEtag;
    const problem = ctx.verify ? await checkFile(pointer, etag, expectedSize) : await checkFile(pointer, undefined, expectedSize);
    if (problem === undefined) {
      result.cached.push(file);
      return;
    }
    damaged = true;
    ctx.progress.note(`${file}: the cached copy is damaged (${problem}); fetching it again`);
    removeFile(pointer);
    if (blob !== undefined && problem !== "missing") removeFile(blob);
  }

  // 2. The same content cached for another revision (blobs are shared): link it, no request.
  if (expectedEtag !== undefined) {
    const blob = repo.blobPath(expectedEtag);
    if (statOrUndefined(blob) !== undefined) {
      const problem = await checkFile(blob, ctx.verify ? expectedEtag : undefined, expectedSize);
      if (problem === undefined) {
        linkPointer(blob, pointer, { useSymlinks: ctx.useSymlinks, newBlob: false });
        (damaged ? result.repaired : result.cached).push(file);
        return;
      }
      removeFile(blob);
    }
  }

  // 3. Ask the Hub where the bytes are, then fetch them.
  const meta = await withRetries(() => fetchFileMetadata(env, repo.repoId, commit, file), Math.min(ctx.retries, 2), ctx.retryDelayMs);
  if (expectedSize !== undefined && meta.size !== expectedSize) {
    throw new SmolVLMError("bad_weights", `the Hub disagrees with itself about the size of ${file} (${meta.size} vs ${expectedSize} in the file list)`);
  }
  expectedEtag = meta.etag;
  const blob = repo.blobPath(meta.etag);
  let newBlob = false;
  if ((await checkFile(blob, ctx.verify ? meta.etag : undefined, meta.size)) !== undefined) {
    if (statOrUndefined(blob) !== undefined) removeFile(blob);
    await downloadBlob({ env, repo, file, meta, progress: ctx.progress, retries: ctx.retries, retryDelayMs: ctx.retryDelayMs });
    newBlob = true;
    result.downloadedBytes += meta.size;
  }
  linkPointer(blob, pointer, { useSymlinks: ctx.useSymlinks, newBlob });
  (damaged ? result.repaired : newBlob ? result.downloaded : result.cached).push(file);
}
