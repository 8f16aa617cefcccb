/**
 * The two Hub requests huggingface_hub makes before a download: the repo listing
 * (GET {endpoint}/api/models/{repo}/revision/{rev}) and the per-file metadata
 * (HEAD {endpoint}/{repo}/resolve/{commit}/{file}, following only same-host redirects), and the mapping of Hub
 * error answers (X-Error-Code) to messages that say what to do.
 */
import { SmolVLMError } from "../errors.js";
import { normalizeEtag, type HubEnv } from "./cache.js";

export const USER_AGENT = `smolvlm/0.1.0; node/${process.versions.node}`;

/** One file of the repo listing (`siblings`; size and hashes come with ?blobs=true). */
export interface RepoSibling {
  rfilename: string;
  size?: number;
  blobId?: string;
  lfs?: { sha256?: string; size?: number };
}

export interface RepoInfo {
  sha: string;
  siblings: RepoSibling[];
  gated: unknown;
  private: boolean;
}

export interface FileMetadata {
  commit: string;
  etag: string;
  size: number;
  /** Where to GET the bytes: the CDN location of an LFS file, else the resolve URL. */
  location: string;
  /** Whether the Authorization header may go to `location` (same host as the endpoint only). */
  sendAuth: boolean;
}

/** A network-level failure (refused, reset, timed out): the caller may fall back to the cache. */
export class HubUnreachableError extends SmolVLMError {
  constructor(
    readonly url: string,
    readonly reason: string,
  ) {
    super("not_found", `could not reach the Hub (${url}): ${reason}`);
  }
}

/** A Hub answer that is an error (4xx/5xx), kept with its status and X-Error-Code. */
export class HubHttpError extends SmolVLMError {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
    message: string,
  ) {
    super("not_found", message);
  }
}

export function encodePathSegments(file: string): string {
  return file.split("/").map(encodeURIComponent).join("/");
}

export function resolveUrl(endpoint: string, repoId: string, revision: string, file: string): string {
  return `${endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${encodePathSegments(file)}`;
}

export function authHeaders(env: HubEnv): Record<string, string> {
  const h: Record<string, string> = { "User-Agent": USER_AGENT };
  if (env.token !== undefined) h.Authorization = `Bearer ${env.token}`;
  return h;
}

function describeCause(e: unknown): string {
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return "timed out";
  const cause = err?.cause;
  if (cause?.code) return cause.code;
  if (cause?.message) return cause.message;
  return err?.message ?? String(e);
}

/** fetch() with a time limit; network failures become HubUnreachableError. */
export async function hubFetch(url: string, init: RequestInit, timeoutS: number): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(timeoutS * 1000) });
  } catch (e) {
    throw new HubUnreachableError(url, describeCause(e));
  }
}

function tokenHelp(env: HubEnv): string {
  return (
    `create a token at ${env.endpoint}/settings/tokens and either set HF_TOKEN=hf_... ` +
    `or save it in ${env.tokenPath} (where \`hf auth login\` puts it)`
  );
}

/** Turns a Hub error answer into a message naming the problem and, for access problems, the fix. */
export async function hubError(res: Response, env: HubEnv, what: { repoId: string; revision: string; file?: string }): Promise<HubHttpError> {
  const code = res.headers.get("x-error-code") ?? undefined;
  const serverMessage = res.headers.get("x-error-message") ?? undefined;
  await res.body?.cancel().catch(() => undefined);
  const { repoId, revision, file } = what;
  const page = `${env.endpoint}/${repoId}`;
  const withToken = env.token !== undefined ? ` (token from ${env.tokenSource})` : "";
  let msg: string;
  if (code === "GatedRepo") {
    msg =
      env.token === undefined
        ? `${repoId} is a gated model: a Hugging Face access token is needed. Accept its conditions at ${page}; then ${tokenHelp(env)}`
        : `${repoId} is a gated model and your token${withToken} has no access to it yet: accept its conditions at ${page}` +
          ` (and check the token has read access)`;
  } else if (code === "RevisionNotFound") {
    msg = `revision "${revision}" not found in ${repoId} (give a branch, a tag or a 40-hex commit)`;
  } else if (code === "EntryNotFound") {
    msg = `${file ?? "a file"} not found in ${repoId} at revision ${revision}`;
  } else if (res.status === 401 && serverMessage === "Invalid credentials in Authorization header") {
    msg = `the Hub rejected your token${withToken} as invalid: ${tokenHelp(env)}`;
  } else if (code === "RepoNotFound" || res.status === 401 || res.status === 404) {
    msg =
      env.token === undefined
        ? `${repoId} was not found on the Hub (${env.endpoint}). If it is private or gated, a Hugging Face access token is needed: ${tokenHelp(env)}`
        : `${repoId} was not found on the Hub (${env.endpoint}), or your token${withToken} cannot read it`;
  } else if (res.status === 403) {
    msg = `access to ${repoId} was refused${withToken}: ${serverMessage ?? "forbidden"}; make sure your token has read access`;
  } else if (res.status === 429) {
    msg = `the Hub is rate-limiting requests (429); try again later${env.token === undefined ? " or use a token" : ""}`;
  } else {
    msg = `the Hub answered ${res.status} ${res.statusText}${serverMessage ? `: ${serverMessage}` : ""} for ${res.url || page}`;
  }
  return new HubHttpError(res.status, code, msg);
}

function isTransient(e: unknown): boolean {
  return e instanceof HubUnreachableError || (e instanceof HubHttpError && (e.status >= 500 || e.status === 429 || e.status === 408));
}

/** Runs `fn`, retrying transient failures (network errors, 5xx, 429) `retries` times with a short backoff. */
export async function withRetries<T>(fn: () => Promise<T>, retries: number, delayMs: number): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= retries || !isTransient(e)) throw e;
      await new Promise((r) => setTimeout(r, delayMs * 2 ** attempt));
    }
  }
}

/** GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true: the commit a revision points to and its files. */
export async function fetchRepoInfo(env: HubEnv, repoId: string, revision: string): Promise<RepoInfo> {
  const url = `${env.endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}?blobs=true`;
  const res = await hubFetch(url, { headers: authHeaders(env) }, env.etagTimeoutS);
  if (!res.ok) throw await hubError(res, env, { repoId, revision });
  let body: unknown;
  try {
    body = await res.json();
  } catch (e) {
    throw new HubUnreachableError(url, `the answer is not JSON (${(e as Error).message})`);
  }
  const b = body as { sha?: unknown; siblings?: unknown; gated?: unknown; private?: unknown };
  if (typeof b?.sha !== "string" || !/^[0-9a-f]{40}$/.test(b.sha) || !Array.isArray(b.siblings)) {
    throw new SmolVLMError("not_found", `unexpected answer from ${url}: no commit sha or file list`);
  }
  const siblings: RepoSibling[] = [];
  for (const s of b.siblings as unknown[]) {
    const o = s as RepoSibling;
    if (typeof o?.rfilename === "string") siblings.push(o);
  }
  return { sha: b.sha, siblings, gated: b.gated, private: b.private === true };
}

/**
 * HEAD {endpoint}/{repo}/resolve/{revision}/{file}, as huggingface_hub's get_hf_file_metadata: identity
 * encoding, relative (same-host) redirects followed, the etag from X-Linked-Etag (LFS) or ETag, the size from
 * X-Linked-Size or Content-Length, the commit from X-Repo-Commit.
 */
export async function fetchFileMetadata(env: HubEnv, repoId: string, revision: string, file: string): Promise<FileMetadata> {
  const first = resolveUrl(env.endpoint, repoId, revision, file);
  let url = first;
  for (let hop = 0; ; hop++) {
    const res = await hubFetch(url, { method: "HEAD", redirect: "manual", headers: { ...authHeaders(env), "Accept-Encoding": "identity" } }, env.etagTimeoutS);
    const isRedirect = res.status >= 300 && res.status < 400;
    if (!isRedirect && !res.ok) throw await hubError(res, env, { repoId, revision, file });
    const location = res.headers.get("location");
    const target = isRedirect && location !== null ? new URL(location, url).toString() : url;
    // Redirects that stay on the Hub (a renamed repo) are followed; one to another host (the CDN or storage
    // holding an LFS file) is where to GET, and the metadata is on this very answer.
    if (isRedirect && location !== null && isHubHost(env, url, target) && hop < 10) {
      url = target;
      continue;
    }
    const commit = res.headers.get("x-repo-commit");
    const etag = normalizeEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
    const sizeHeader = res.headers.get("x-linked-size") ?? (isRedirect ? null : res.headers.get("content-length"));
    const size = sizeHeader === null ? NaN : Number(sizeHeader);
    if (commit === null || etag === undefined || !Number.isInteger(size) || size < 0) {
      const missing = [commit === null && "X-Repo-Commit", etag === undefined && "ETag", !Number.isInteger(size) && "size"].filter(Boolean);
      throw new SmolVLMError(
        "not_found",
        `${first} did not answer like the Hugging Face Hub (no ${missing.join(", ")}); check HF_ENDPOINT, proxy and firewall settings`,
      );
    }
    return { commit, etag, size, location: target, sendAuth: isHubHost(env, first, target) };
  }
}

const HUB_HOSTS = ["huggingface.co", "hf.co", "hub-ci.huggingface.co"];

/** Same host name as `from`, or a Hub host (as huggingface_hub decides whether to follow and send the token). */
export function isHubHost(env: HubEnv, from: string, to: string): boolean {
  const host = new URL(to).hostname.toLowerCase();
  return host === new URL(from).hostname.toLowerCase() || host === new URL(env.endpoint).hostname.toLowerCase() || HUB_HOSTS.includes(host);
}
