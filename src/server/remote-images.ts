/**
 * Fetching `image_url` http(s) URLs, for servers started with --allow-remote-images.
 *
 * A server that fetches URLs for its clients is an SSRF risk: a request could make it read an
 * internal service or a cloud metadata endpoint. So every hop (the URL and each redirect) is
 * checked before a socket is opened: only http and https; the host must be on the allowlist when
 * there is one; and its addresses must all be public (not loopback, private, link-local, CGNAT,
 * multicast, reserved, or an IPv6 form of one of those). The address that was checked is the
 * one connected to (the lookup is pinned), so DNS cannot answer differently a moment later.
 * A host named exactly in the allowlist is trusted to be internal: that is how an operator
 * points the server at an image store on the private network. Redirects are followed by hand, at
 * most `maxRedirects`, each one checked the same way; the body is cut off at `maxBytes`.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import { ApiError } from "./openai.js";

export interface RemoteImageOptions {
  /** Hosts that may be fetched from ("example.com" exactly, "*.example.com" for subdomains); empty: any public host. */
  allowedHosts: readonly string[];
  /** Bytes of one image at most. */
  maxBytes: number;
  /** The whole fetch, redirects included (default 10 s). */
  timeoutMs?: number;
  /** Redirects followed at most (default 3). */
  maxRedirects?: number;
}

// ---------------------------------------------------------------------------------------------
// Addresses

function v4ToInt(ip: string): number {
  return ip.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

/** [network, prefix length] of every IPv4 range that is not the public internet. */
const PRIVATE_V4: [string, number][] = [
  ["0.0.0.0", 8], // "this network"
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // carrier-grade NAT
  ["127.0.0.0", 8],
  ["169.254.0.0", 16], // link-local, cloud metadata
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];

function isPrivateV4(ip: string): boolean {
  const n = v4ToInt(ip);
  return PRIVATE_V4.some(([net, bits]) => {
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return ((n & mask) >>> 0) === ((v4ToInt(net) & mask) >>> 0);
  });
}

/** The eight 16-bit groups of an IPv6 address (with an embedded dotted IPv4 tail expanded). */
function v6Groups(ip: string): number[] {
  let s = ip.toLowerCase();
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (tail) {
    const n = v4ToInt(tail[1]!);
    s = s.slice(0, -tail[1]!.length) + `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, rest] = s.split("::") as [string, string | undefined];
  const a = head ? head.split(":") : [];
  const b = rest ? rest.split(":") : [];
  const fill = rest === undefined ? [] : new Array(8 - a.length - b.length).fill("0");
  return [...a, ...fill, ...b].map((g) => parseInt(g, 16));
}

function isPrivateV6(ip: string): boolean {
  const g = v6Groups(ip);
  if (g.length !== 8 || g.some((x) => !(x >= 0 && x <= 0xffff))) return true; // unparseable: refuse
  const embedded = (hi: number, lo: number) => `${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`;
  if (g.slice(0, 7).every((x) => x === 0)) return true; // :: and ::1
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return isPrivateV4(embedded(g[6]!, g[7]!)); // ::ffff:a.b.c.d
  if (g.slice(0, 6).every((x) => x === 0)) return true; // deprecated IPv4-compatible
  if (g[0] === 0x64 && g[1] === 0xff9b) return isPrivateV4(embedded(g[6]!, g[7]!)); // NAT64
  if (g[0] === 0x2002) return isPrivateV4(embedded(g[1]!, g[2]!)); // 6to4
  if ((g[0]! & 0xfe00) === 0xfc00) return true; // unique local
  if ((g[0]! & 0xffc0) === 0xfe80) return true; // link-local
  if ((g[0]! & 0xffc0) === 0xfec0) return true; // site-local (deprecated)
  if ((g[0]! & 0xff00) === 0xff00) return true; // multicast
  if (g[0] === 0x2001 && g[1] === 0x0db8) return true; // documentation
  if (g[0] === 0x2001 && g[1]! < 0x0200) return true; // IETF protocol assignments (Teredo, benchmarking, ...)
  return false;
}

/** True for an address on the public internet; false for loopback, private and reserved ranges. */
export function isPublicAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 4) return !isPrivateV4(ip);
  if (family === 6) return !isPrivateV6(ip);
  return false;
}

// ---------------------------------------------------------------------------------------------
// Fetching

function refuse(param: string, message: string, code = "image_url_refused"): ApiError {
  return new ApiError(400, `${param}: ${message}`, code, param);
}

function hostAllowed(host: string, allowed: readonly string[]): { allowed: boolean; trusted: boolean } {
  if (allowed.length === 0) return { allowed: true, trusted: false };
  for (const entry of allowed) {
    const e = entry.toLowerCase();
    if (e === host) return { allowed: true, trusted: true };
    if (e.startsWith("*.") && host.endsWith(e.slice(1))) return { allowed: true, trusted: false };
  }
  return { allowed: false, trusted: false };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** dns.lookup that refuses non-public answers (unless trusted) and hands the checked address to the socket. */
function checkedLookup(trusted: boolean, refused: (host: string, address: string) => void) {
  return (hostname: string, options: { all?: boolean; family?: number }, callback: LookupCallback): void => {
    dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (err, addresses) => {
      if (err) return callback(err, "");
      const bad = trusted ? undefined : addresses.find((a) => !isPublicAddress(a.address));
      if (bad || addresses.length === 0) {
        refused(hostname, bad?.address ?? "");
        const e: NodeJS.ErrnoException = new Error(`${hostname} resolves to a non-public address`);
        e.code = "EREFUSED_PRIVATE";
        return callback(e, "");
      }
      if (options.all) return callback(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

interface Hop {
  response: IncomingMessage;
  url: URL;
}

/**
 * Downloads an image for `param` (the request field, for error messages). Every refusal or
 * failure is an ApiError 400 that says why; `signal` aborts (the client went away).
 */
export async function fetchRemoteImage(rawUrl: string, param: string, options: RemoteImageOptions, signal?: AbortSignal): Promise<Uint8Array> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxRedirects = options.maxRedirects ?? 3;
  const deadline = AbortSignal.timeout(timeoutMs);
  const abort = signal ? AbortSignal.any([signal, deadline]) : deadline;
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw refuse(param, "not a valid URL", "invalid_image_url");
  }
  for (let hop = 0; ; hop++) {
    const { response } = await open(url, param, hop > 0, options, abort, timeoutMs);
    const status = response.statusCode ?? 0;
    if (status >= 300 && status < 400 && response.headers.location !== undefined) {
      response.destroy();
      if (hop >= maxRedirects) throw refuse(param, `more than ${maxRedirects} redirects`, "image_fetch_failed");
      try {
        url = new URL(response.headers.location, url);
      } catch {
        throw refuse(param, `redirect to an invalid URL ${JSON.stringify(response.headers.location)}`, "image_fetch_failed");
      }
      continue;
    }
    if (status < 200 || status >= 300) {
      response.destroy();
      throw refuse(param, `fetching ${url.href} failed: HTTP ${status}`, "image_fetch_failed");
    }
    return readBody(response, url, param, options.maxBytes, abort, timeoutMs);
  }
}

function open(url: URL, param: string, redirected: boolean, options: RemoteImageOptions, abort: AbortSignal, timeoutMs: number): Promise<Hop> {
  const what = redirected ? `redirect to ${url.href}` : url.href;
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Promise.reject(refuse(param, `${what}: only http and https URLs are fetched`));
  }
  if (url.username || url.password) return Promise.reject(refuse(param, `${what}: URLs with credentials are not fetched`));
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const { allowed, trusted } = hostAllowed(host, options.allowedHosts);
  if (isIP(host) && !trusted && !isPublicAddress(host)) {
    return Promise.reject(refuse(param, `${what}: ${host} is a loopback, private or reserved address, which is never fetched`));
  }
  if (!allowed) {
    return Promise.reject(refuse(param, `${what}: host ${host} is not on this server's allowed image hosts (--allowed-image-hosts ${options.allowedHosts.join(",")})`));
  }
  return new Promise<Hop>((resolve, reject) => {
    let refusedAddress: string | undefined;
    const request = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, {
      method: "GET",
      agent: false,
      headers: { accept: "image/*", "user-agent": "smolvlm-server" },
      lookup: checkedLookup(trusted, (_h, address) => (refusedAddress = address)) as never,
      signal: abort,
      timeout: timeoutMs,
    });
    request.on("response", (response) => resolve({ response, url }));
    request.on("timeout", () => request.destroy(new Error("timed out")));
    request.on("error", (err: NodeJS.ErrnoException) => {
      if (refusedAddress !== undefined) {
        reject(refuse(param, `${what}: ${host} resolves to ${refusedAddress || "no address"}, a loopback, private or reserved address, which is never fetched`));
      } else if (abort.aborted) {
        reject(refuse(param, `fetching ${url.href} timed out or was cancelled`, "image_fetch_failed"));
      } else {
        reject(refuse(param, `fetching ${url.href} failed: ${err.code ?? err.message}`, "image_fetch_failed"));
      }
    });
    request.end();
  });
}

function readBody(response: IncomingMessage, url: URL, param: string, maxBytes: number, abort: AbortSignal, timeoutMs: number): Promise<Uint8Array> {
  const tooLarge = (n: number | string) =>
    new ApiError(400, `${param}: the image at ${url.href} is ${n} bytes, over this server's limit of ${maxBytes} bytes per image (--max-image-bytes)`, "image_too_large", param);
  const declared = Number(response.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    response.destroy();
    return Promise.reject(tooLarge(declared));
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onAbort = () => response.destroy(new Error("aborted"));
    abort.addEventListener("abort", onAbort, { once: true });
    response.setTimeout(timeoutMs, () => response.destroy(new Error("timed out")));
    response.on("data", (part: Buffer) => {
      size += part.byteLength;
      if (size > maxBytes) {
        response.destroy();
        abort.removeEventListener("abort", onAbort);
        reject(tooLarge(`more than ${maxBytes}`));
        return;
      }
      parts.push(part);
    });
    response.on("end", () => {
      abort.removeEventListener("abort", onAbort);
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const p of parts) {
        bytes.set(p, at);
        at += p.byteLength;
      }
      resolve(bytes);
    });
    response.on("error", (err) => {
      abort.removeEventListener("abort", onAbort);
      reject(refuse(param, `reading ${url.href} failed: ${err.message}`, "image_fetch_failed"));
    });
  });
}
