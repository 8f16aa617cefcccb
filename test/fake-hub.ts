/**
 * A fake Hugging Face Hub on 127.0.0.1 (random ports) that answers like the real one, for the hub tests:
 *
 * - GET /api/models/{repo}/revision/{rev}[?blobs=true]: {sha, siblings: [{rfilename, size, blobId, lfs}]}
 * - HEAD/GET /{repo}/resolve/{rev}/{file}: regular files answer 200 with ETag (git blob sha1), X-Repo-Commit and
 *   the bytes; LFS files (*.safetensors, *.bin, *.onnx, *.gguf) answer 302 to a second "CDN" server with
 *   X-Linked-Etag (sha256), X-Linked-Size and X-Repo-Commit. The CDN listens on 127.0.0.1 as well but is
 *   addressed as "localhost", so that clients see another host (huggingface_hub follows same-host redirects).
 * - the CDN honours Range (206 + Content-Range) and can be told to cut a transfer mid-file or corrupt it.
 * - errors carry X-Error-Code like the Hub: RepoNotFound (401 without a token), GatedRepo (401), RevisionNotFound
 *   and EntryNotFound (404), 401 "Invalid credentials in Authorization header" for a wrong token.
 *
 * Every request is logged (method, server, path, Range, Authorization) so tests can assert what went over the wire.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const VALID_TOKEN = "hf_fake_valid_token";

export interface FakeRepoSpec {
  id: string;
  /** commit sha -> files (name -> content). */
  commits: Record<string, Record<string, Buffer | string>>;
  /** branch or tag -> commit sha. */
  refs: Record<string, string>;
  /** Files need a valid token (the listing does not), like a gated model. */
  gated?: boolean;
  /** Everything needs a valid token; without one the repo looks missing. */
  private?: boolean;
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

interface Blob {
  content: Buffer;
  sha256: string;
  gitSha1: string;
  lfs: boolean;
}

export function gitBlobSha1(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

export function sha256(content: Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

export function isLfsName(name: string): boolean {
  return /\.(safetensors|bin|onnx|gguf)$/.test(name);
}

export function randomCommit(): string {
  return randomBytes(20).toString("hex");
}

/** The git blob of an LFS file is its pointer text, not its content. */
function lfsPointer(content: Buffer): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(content)}\nsize ${content.length}\n`);
}

function toBlob(name: string, c: Buffer | string): Blob {
  const content = typeof c === "string" ? Buffer.from(c) : c;
  const lfs = isLfsName(name);
  return { content, sha256: sha256(content), gitSha1: gitBlobSha1(lfs ? lfsPointer(content) : content), lfs };
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  private readonly repos = new Map<string, FakeRepoSpec>();
  private readonly blobsBySha = new Map<string, Blob>();
  /** sha256 -> byte count: the next CDN GET of that blob sends this many bytes and drops the connection. */
  private readonly cuts = new Map<string, number[]>();
  /** sha256 -> byte offsets: the next CDN GET of that blob sends up to the offset, then goes silent. */
  private readonly stalls = new Map<string, number[]>();
  /** sha256 -> how many more CDN GETs of that blob serve flipped bytes. */
  private readonly corrupt = new Map<string, number>();
  /** When true, the CDN ignores Range and always answers 200 with the whole file. */
  ignoreRange = false;

  private constructor(
    private readonly hub: Server,
    private readonly cdn: Server,
  ) {}

  static async start(repos: FakeRepoSpec[] = []): Promise<FakeHub> {
    let self: FakeHub | undefined;
    const hub = createServer((req, res) => self!.handleHub(req, res));
    const cdn = createServer((req, res) => self!.handleCdn(req, res));
    self = new FakeHub(hub, cdn);
    for (const r of repos) self.addRepo(r);
    await Promise.all([listen(hub), listen(cdn)]);
    return self;
  }

  /** HF_ENDPOINT for this hub. */
  get url(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
  }

  /** The "CDN": on 127.0.0.1 too, but named by another host name, as the Hub's CDN is another host. */
  get cdnUrl(): string {
    return `http://localhost:${(this.cdn.address() as AddressInfo).port}`;
  }

  addRepo(spec: FakeRepoSpec): void {
    this.repos.set(spec.id, spec);
    for (const files of Object.values(spec.commits)) {
      for (const [name, c] of Object.entries(files)) {
        const b = toBlob(name, c);
        this.blobsBySha.set(b.sha256, b);
      }
    }
  }

  /** The next `times` CDN downloads of `content` stop at byte offset `afterBytes` (connection destroyed). */
  cutNext(content: Buffer, afterBytes: number, times = 1): void {
    this.cuts.set(sha256(content), Array(times).fill(afterBytes));
  }

  /** The next CDN download of `content` stops sending at byte offset `afterBytes` but keeps the connection open. */
  stallNext(content: Buffer, afterBytes: number): void {
    this.stalls.set(sha256(content), [afterBytes]);
  }

  /** The next `times` CDN downloads of `content` serve a flipped byte. */
  corruptNext(content: Buffer, times = 1): void {
    this.corrupt.set(sha256(content), times);
  }

  /** Requests for file bytes or file metadata (resolve and CDN), as opposed to the listing API. */
  fileRequests(): LoggedRequest[] {
    return this.requests.filter((r) => r.server === "cdn" || r.path.includes("/resolve/"));
  }

  clearLog(): void {
    this.requests.length = 0;
  }

  async close(): Promise<void> {
    for (const s of [this.hub, this.cdn]) s.closeAllConnections();
    await Promise.all([this.hub, this.cdn].map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  private log(server: "hub" | "cdn", req: IncomingMessage): void {
    this.requests.push({
      server,
      method: req.method ?? "GET",
      path: req.url ?? "",
      range: req.headers.range,
      authorization: req.headers.authorization,
    });
  }

  /** Auth state of a request: no token, the valid token, or a wrong one. */
  private auth(req: IncomingMessage): "none" | "valid" | "invalid" {
    const h = req.headers.authorization;
    if (h === undefined) return "none";
    return h === `Bearer ${VALID_TOKEN}` ? "valid" : "invalid";
  }

  private error(res: ServerResponse, status: number, code: string | undefined, message: string, extra: Record<string, string> = {}): void {
    const body = JSON.stringify({ error: message });
    const headers: Record<string, string> = { "Content-Type": "application/json", "X-Error-Message": message, ...extra };
    if (code) headers["X-Error-Code"] = code;
    res.writeHead(status, headers);
    res.end(res.req.method === "HEAD" ? undefined : body);
  }

  /** Common checks; returns the repo and commit, or undefined after answering with an error. */
  private access(req: IncomingMessage, res: ServerResponse, repoId: string, rev: string, files: boolean): { repo: FakeRepoSpec; commit: string } | undefined {
    const auth = this.auth(req);
    if (auth === "invalid") {
      this.error(res, 401, undefined, "Invalid credentials in Authorization header");
      return undefined;
    }
    const repo = this.repos.get(repoId);
    if (!repo || (repo.private && auth !== "valid")) {
      // Like the Hub: without a token, a missing repo and a private one look alike (401).
      this.error(res, auth === "valid" ? 404 : 401, "RepoNotFound", "Repository not found");
      return undefined;
    }
    if (files && repo.gated && auth !== "valid") {
      this.error(res, 401, "GatedRepo", `Access to model ${repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      return undefined;
    }
    const commit = repo.commits[rev] ? rev : repo.refs[rev];
    if (commit === undefined || !repo.commits[commit]) {
      this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      return undefined;
    }
    return { repo, commit };
  }

  private handleHub(req: IncomingMessage, res: ServerResponse): void {
    this.log("hub", req);
    const url = new URL(req.url ?? "/", "http://x");
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (api && req.method === "GET") {
      const repoId = api[1]!;
      const rev = decodeURIComponent(api[2]!);
      const ok = this.access(req, res, repoId, rev, false);
      if (!ok) return;
      const blobs = url.searchParams.get("blobs") === "true";
      const files = ok.repo.commits[ok.commit]!;
      const siblings = Object.entries(files).map(([name, c]) => {
        const b = toBlob(name, c);
        if (!blobs) return { rfilename: name };
        return {
          rfilename: name,
          size: b.content.length,
          blobId: b.gitSha1,
          ...(b.lfs ? { lfs: { sha256: b.sha256, size: b.content.length, pointerSize: lfsPointer(b.content).length } } : {}),
        };
      });
      const body = JSON.stringify({
        _id: "0",
        id: repoId,
        modelId: repoId,
        sha: ok.commit,
        private: ok.repo.private === true,
        gated: ok.repo.gated ? "manual" : false,
        siblings,
      });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve && (req.method === "GET" || req.method === "HEAD")) {
      const repoId = resolve[1]!;
      const rev = decodeURIComponent(resolve[2]!);
      const file = resolve[3]!.split("/").map(decodeURIComponent).join("/");
      const ok = this.access(req, res, repoId, rev, true);
      if (!ok) return;
      const c = ok.repo.commits[ok.commit]![file];
      if (c === undefined) {
        this.error(res, 404, "EntryNotFound", `${file} does not exist on "${rev}"`, { "X-Repo-Commit": ok.commit });
        return;
      }
      const b = toBlob(file, c);
      if (b.lfs) {
        res.writeHead(302, {
          Location: `${this.cdnUrl}/blobs/${b.sha256}?X-Amz-Signature=fake`,
          "X-Repo-Commit": ok.commit,
          "X-Linked-Etag": `"${b.sha256}"`,
          "X-Linked-Size": String(b.content.length),
          ETag: `"${b.gitSha1}"`, // the pointer's git blob id; clients must prefer X-Linked-Etag
          "Content-Length": "0",
        });
        res.end();
        return;
      }
      this.sendBytes(req, res, b.content, { ETag: `"${b.gitSha1}"`, "X-Repo-Commit": ok.commit }, false);
      return;
    }
    this.error(res, 404, undefined, "Not found");
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    this.log("cdn", req);
    const m = /^\/blobs\/([0-9a-f]{64})/.exec(req.url ?? "");
    const blob = m ? this.blobsBySha.get(m[1]!) : undefined;
    if (!blob) {
      res.writeHead(404);
      res.end();
      return;
    }
    let content = blob.content;
    const corrupt = this.corrupt.get(blob.sha256) ?? 0;
    if (req.method === "GET" && corrupt > 0) {
      this.corrupt.set(blob.sha256, corrupt - 1);
      content = Buffer.from(content);
      content[content.length >> 1] = content[content.length >> 1]! ^ 0xff;
    }
    this.sendBytes(req, res, content, { ETag: `"${blob.sha256}"` }, true);
  }

  /** 200 or, with a Range header (and ranges honoured), 206; a pending cut drops the connection mid-body. */
  private sendBytes(req: IncomingMessage, res: ServerResponse, content: Buffer, headers: Record<string, string>, cdn: boolean): void {
    let start = 0;
    let end = content.length - 1;
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined && !(cdn && this.ignoreRange)) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m || Number(m[1]) >= content.length) {
        res.writeHead(416, { "Content-Range": `bytes */${content.length}` });
        res.end();
        return;
      }
      start = Number(m[1]);
      if (m[2] !== "") end = Math.min(end, Number(m[2]));
      status = 206;
      headers = { ...headers, "Content-Range": `bytes ${start}-${end}/${content.length}` };
    }
    const body = content.subarray(start, end + 1);
    res.writeHead(status, { ...headers, "Content-Length": String(body.length), "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream" });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const sha = sha256(content);
    const cuts = cdn ? this.cuts.get(sha) : undefined;
    if (cuts && cuts.length > 0) {
      const after = cuts.shift()!;
      res.write(body.subarray(0, Math.max(0, after - start)), () => {
        // Let the bytes reach the client, then drop the connection as a network failure would.
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    const stalls = cdn ? this.stalls.get(sha) : undefined;
    if (stalls && stalls.length > 0) {
      const after = stalls.shift()!;
      res.write(body.subarray(0, Math.max(0, after - start))); // and nothing more until close() drops it
      return;
    }
    res.end(body);
  }
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
}
