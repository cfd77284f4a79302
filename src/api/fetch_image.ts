// Fetching user-given URLs (input images, webhooks) without letting a request
// reach the server's own network: only http(s); every address the host name
// resolves to must be public (IPv4 and IPv6, including IPv4 embedded in IPv6),
// and the connection goes to the address that was checked (the check runs
// inside the socket's DNS lookup, so DNS rebinding cannot swap it afterwards).
// Redirects are followed by hand and checked again. Time and size are capped.

import * as dns from "node:dns";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";

export interface UrlPolicy {
  /** Allow loopback / private / link-local targets (tests, trusted networks). */
  allowPrivate: boolean;
  timeoutMs: number;
  maxBytes: number;
  maxRedirects?: number;
}

export class FetchError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = "FetchError";
  }
}

// ---------------------------------------------------------------------------
// Address classification

function ipv4Bytes(ip: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return null;
  const b = m.slice(1).map(Number);
  return b.every((x) => x <= 255) ? b : null;
}

/** Eight 16-bit groups of an IPv6 address (a dotted IPv4 tail is allowed). */
export function ipv6Groups(ip: string): number[] | null {
  let s = ip.toLowerCase();
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const lastColon = s.lastIndexOf(":");
  if (lastColon >= 0 && s.slice(lastColon + 1).includes(".")) {
    const v4 = ipv4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    s = `${s.slice(0, lastColon + 1)}${((v4[0] << 8) | v4[1]).toString(16)}:${((v4[2] << 8) | v4[3]).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => (/^[0-9a-f]{1,4}$/.test(g) ? parseInt(g, 16) : NaN)));
  const head = parse(halves[0]);
  let groups = head;
  if (halves.length === 2) {
    const rest = parse(halves[1]);
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return null;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  }
  if (groups.length !== 8 || groups.some((g) => Number.isNaN(g))) return null;
  return groups;
}

function v4Private(b: number[]): boolean {
  const [a, c] = b;
  return (
    a === 0 || a === 10 || a === 127 || a >= 224 || // this network, private, loopback, multicast + reserved + broadcast
    (a === 100 && c >= 64 && c < 128) || // carrier-grade NAT
    (a === 169 && c === 254) || // link-local (cloud metadata lives here)
    (a === 172 && c >= 16 && c < 32) ||
    (a === 192 && c === 168) ||
    (a === 192 && c === 0 && b[2] === 0) || // IETF protocol assignments
    (a === 192 && c === 0 && b[2] === 2) || (a === 198 && c === 51 && b[2] === 100) || (a === 203 && c === 0 && b[2] === 113) || // documentation
    (a === 198 && (c === 18 || c === 19)) // benchmarking
  );
}

function embeddedV4(g: number[]): number[] {
  return [g[6] >> 8, g[6] & 255, g[7] >> 8, g[7] & 255];
}

function v6Private(g: number[]): boolean {
  const zeroPrefix = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeroPrefix(7) && (g[7] === 0 || g[7] === 1)) return true; // :: and ::1
  if (zeroPrefix(5) && g[5] === 0xffff) return v4Private(embeddedV4(g)); // IPv4-mapped
  if (zeroPrefix(6)) return true; // deprecated IPv4-compatible
  if (g[0] === 0x64 && g[1] === 0xff9b) return v4Private(embeddedV4(g)); // NAT64
  if (g[0] === 0x2002) return v4Private([g[1] >> 8, g[1] & 255, g[2] >> 8, g[2] & 255]); // 6to4
  if (g[0] === 0x2001 && g[1] === 0) return true; // Teredo tunnels to arbitrary IPv4
  if (g[0] === 0x2001 && g[1] === 0xdb8) return true; // documentation
  if (g[0] === 0x100 && g[1] === 0 && g[2] === 0 && g[3] === 0) return true; // discard
  return (g[0] & 0xfe00) === 0xfc00 || (g[0] & 0xffc0) === 0xfe80 || (g[0] & 0xffc0) === 0xfec0 || (g[0] & 0xff00) === 0xff00;
}

/** Loopback, private, link-local, multicast, reserved or otherwise not a public unicast address. */
export function isPrivateAddress(ip: string): boolean {
  const family = net.isIP(ip);
  if (family === 4) return v4Private(ipv4Bytes(ip)!);
  if (family === 6) {
    const g = ipv6Groups(ip);
    return g === null || v6Private(g);
  }
  return true;
}

// ---------------------------------------------------------------------------
// Checked URLs and lookups

/** Parse and check the scheme; literal IP hosts are checked here (no lookup happens for them). */
export function checkUrl(raw: string, policy: Pick<UrlPolicy, "allowPrivate">): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FetchError(`not a valid URL: ${raw.slice(0, 100)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new FetchError(`only http and https URLs are fetched, not ${url.protocol}`);
  if (url.username || url.password) throw new FetchError("URLs with credentials are not fetched");
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (net.isIP(host) && !policy.allowPrivate && isPrivateAddress(host)) {
    throw new FetchError(`${url.hostname} is a private, loopback or link-local address`);
  }
  return url;
}

/** Resolve and refuse private addresses: for a quick check at submit time. */
export async function checkResolves(raw: string, policy: Pick<UrlPolicy, "allowPrivate">): Promise<URL> {
  const url = checkUrl(raw, policy);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (policy.allowPrivate || net.isIP(host)) return url;
  let addrs: dns.LookupAddress[];
  try {
    addrs = await dns.promises.lookup(host, { all: true, verbatim: true });
  } catch (e) {
    throw new FetchError(`cannot resolve ${host} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const bad = addrs.find((a) => isPrivateAddress(a.address));
  if (bad) throw new FetchError(`${host} resolves to ${bad.address}, a private, loopback or link-local address`);
  return url;
}

type LookupCb = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/** A socket lookup that refuses private addresses, so the address connected to is the address checked. */
function guardedLookup(allowPrivate: boolean) {
  return (hostname: string, options: dns.LookupOptions, cb: LookupCb) => {
    dns.lookup(hostname, { ...options, all: true, verbatim: true }, (err, addrs) => {
      if (err) return cb(err, "");
      const list = addrs as dns.LookupAddress[];
      const bad = allowPrivate ? undefined : list.find((a) => isPrivateAddress(a.address));
      if (bad) return cb(new FetchError(`${hostname} resolves to ${bad.address}, a private, loopback or link-local address`), "");
      if (list.length === 0) return cb(new FetchError(`${hostname} has no addresses`), "");
      if (options.all) cb(null, list);
      else cb(null, list[0].address, list[0].family);
    });
  };
}

// ---------------------------------------------------------------------------
// Requests

export interface FetchResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  url: string;
}

export interface RequestInit {
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: Buffer | string;
}

/** One request (no redirects followed), with the policy's address check, timeout and size cap. */
function requestOnce(url: URL, policy: UrlPolicy, init: RequestInit, deadline: number): Promise<FetchResult> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === "https:" ? https : http;
    const remaining = Math.max(1, deadline - Date.now());
    const req = mod.request(url, {
      method: init.method ?? "GET",
      headers: { "user-agent": "flux2.ts", ...init.headers },
      lookup: guardedLookup(policy.allowPrivate) as unknown as typeof dns.lookup,
    });
    // Settle once; after that, tear the request down and ignore whatever else it emits.
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e instanceof FetchError ? e : new FetchError(`${url.host}: ${e.message}`));
      req.destroy();
    };
    const timer = setTimeout(() => fail(new FetchError(`timed out after ${policy.timeoutMs} ms`)), remaining);
    req.on("error", fail);
    req.on("response", (res) => {
      res.on("error", fail);
      const declared = Number(res.headers["content-length"] ?? "0");
      if (declared > policy.maxBytes) return fail(new FetchError(`response is ${declared} bytes, more than the limit of ${policy.maxBytes}`));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > policy.maxBytes) fail(new FetchError(`response is more than the limit of ${policy.maxBytes} bytes`));
        else chunks.push(c);
      });
      res.on("end", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), url: url.href });
      });
    });
    req.end(init.body);
  });
}

/** Fetch a URL under the policy, following up to maxRedirects (default 3) redirects for GET. */
export async function fetchChecked(raw: string, policy: UrlPolicy, init: RequestInit = {}): Promise<FetchResult> {
  const deadline = Date.now() + policy.timeoutMs;
  let url = checkUrl(raw, policy);
  for (let hop = 0; ; hop++) {
    const res = await requestOnce(url, policy, init, deadline);
    const loc = res.headers.location;
    if (res.status >= 300 && res.status < 400 && loc && (init.method ?? "GET") === "GET") {
      if (hop >= (policy.maxRedirects ?? 3)) throw new FetchError(`too many redirects (more than ${policy.maxRedirects ?? 3})`);
      url = checkUrl(new URL(loc, url).href, policy);
      continue;
    }
    return res;
  }
}

/** GET an image: 2xx required. */
export async function fetchImage(raw: string, policy: UrlPolicy): Promise<Buffer> {
  const res = await fetchChecked(raw, policy);
  if (res.status < 200 || res.status >= 300) throw new FetchError(`${new URL(raw).host} answered HTTP ${res.status}`, res.status);
  if (res.body.length === 0) throw new FetchError("the URL returned an empty body");
  return res.body;
}
