// A model's files in the browser: listed by the server (GET <url>/files.json), downloaded once
// in HTTP Range chunks with progress, kept in Cache Storage, and mounted into the in-memory file
// system (src/platform/browser/fs.ts) where the engine opens them like a folder on disk.
//
// Range chunks: a download shows progress per chunk, a dropped connection costs one chunk, and the
// server never streams one multi-gigabyte response. Cache Storage (not OPFS) because it is
// keyed by URL, holds whole responses, and is there in every secure context, headless included.

import { mount, unmount } from "../platform/browser/fs.js";

export interface ModelFile {
  /** Path inside the model folder, "/"-separated (e.g. "transformer/config.json"). */
  path: string;
  size: number;
  /** Changes when the file changes (the server sends size + mtime); part of the cache key. */
  version: string;
}

export interface Manifest {
  model: string;
  files: ModelFile[];
}

export interface DownloadProgress {
  file: string;
  /** Bytes of all files ready so far, and in all. */
  loaded: number;
  total: number;
  fromCache: boolean;
}

export interface DownloadOptions {
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  /** Bytes per Range request (default 8 MiB). */
  chunkBytes?: number;
  /** Sent with every request (e.g. { "x-key": KEY } when the server requires keys). */
  headers?: Record<string, string>;
  /** Cache Storage name (default "flux2-models"); null: do not cache. */
  cacheName?: string | null;
}

export interface DownloadReport {
  /** Where the model is mounted: pass it to loadPipeline (src/loaders/pretrained.ts). */
  folder: string;
  files: number;
  bytes: number;
  downloadedBytes: number;
  cachedBytes: number;
  /** Why nothing was cached, when Cache Storage is not there (e.g. an insecure http:// origin). */
  cacheUnavailable?: string;
}

const CACHE = "flux2-models";

function joinUrl(base: string, rel: string): string {
  return `${base.replace(/\/+$/, "")}/${rel.split("/").map(encodeURIComponent).join("/")}`;
}

/** Fetch `<url>/files.json`, the model's file list. */
export async function fetchManifest(url: string, opts: { signal?: AbortSignal; headers?: Record<string, string> } = {}): Promise<Manifest> {
  const res = await fetch(joinUrl(url, "files.json"), { signal: opts.signal, headers: opts.headers });
  if (!res.ok) throw new Error(`${joinUrl(url, "files.json")}: HTTP ${res.status}; is ${url} a model folder the server shares (GET /v1/files/<model>/files.json)?`);
  const m = await res.json() as Manifest;
  if (!m || !Array.isArray(m.files) || !m.files.every((f) => typeof f.path === "string" && Number.isSafeInteger(f.size))) {
    throw new Error(`${joinUrl(url, "files.json")}: not a model file list ({ model, files: [{ path, size, version }] })`);
  }
  return m;
}

async function openCache(name: string | null): Promise<{ cache: Cache | null; why?: string }> {
  if (name === null) return { cache: null, why: "caching was turned off" };
  if (typeof caches === "undefined") return { cache: null, why: "Cache Storage needs a secure context (https:// or localhost)" };
  try {
    return { cache: await caches.open(name) };
  } catch (e) {
    return { cache: null, why: `Cache Storage refused: ${(e as Error).message}` };
  }
}

/** Download (or take from the cache) every file of the model at `url` and mount it at /models/<id>. */
export async function downloadModel(url: string, opts: DownloadOptions = {}): Promise<DownloadReport> {
  const manifest = await fetchManifest(url, opts);
  const id = manifest.model.replace(/[^A-Za-z0-9._-]/g, "_");
  const folder = `/models/${id}`;
  const { cache, why } = await openCache(opts.cacheName === undefined ? CACHE : opts.cacheName);
  const total = manifest.files.reduce((a, f) => a + f.size, 0);
  let loaded = 0, downloadedBytes = 0, cachedBytes = 0;
  unmount(folder);
  for (const f of manifest.files) {
    if (f.path.split("/").some((p) => p === ".." || p === "")) throw new Error(`files.json lists an unsafe path "${f.path}"`);
    const fileUrl = joinUrl(url, f.path);
    const key = `${fileUrl}?v=${encodeURIComponent(f.version)}`;
    let bytes: Uint8Array | null = null;
    const hit = cache ? await cache.match(key) : undefined;
    if (hit) {
      const b = new Uint8Array(await hit.arrayBuffer());
      if (b.byteLength === f.size) bytes = b;
    }
    const fromCache = bytes !== null;
    if (bytes) {
      cachedBytes += f.size;
      loaded += f.size;
    } else {
      const base = loaded;
      bytes = await downloadFile(fileUrl, f.size, opts, (n) => opts.onProgress?.({ file: f.path, loaded: base + n, total, fromCache: false }));
      downloadedBytes += f.size;
      loaded += f.size;
      if (cache) await cache.put(key, new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": "application/octet-stream", "content-length": String(f.size) } }));
    }
    opts.onProgress?.({ file: f.path, loaded, total, fromCache });
    mount(`${folder}/${f.path}`, bytes);
  }
  return { folder, files: manifest.files.length, bytes: total, downloadedBytes, cachedBytes, ...(why ? { cacheUnavailable: why } : {}) };
}

/** One file in Range chunks (a server without Range support answers 200 with the whole file, which is taken as is). */
async function downloadFile(url: string, size: number, opts: DownloadOptions, progress: (n: number) => void): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  const chunk = opts.chunkBytes ?? 8 * 1024 * 1024;
  for (let at = 0; at < size || (size === 0 && at === 0); ) {
    const end = Math.min(size, at + chunk) - 1;
    const res = await fetch(url, { headers: { ...opts.headers, ...(size ? { range: `bytes=${at}-${end}` } : {}) }, signal: opts.signal });
    if (res.status === 200) {
      const whole = new Uint8Array(await res.arrayBuffer());
      if (whole.byteLength !== size) throw new Error(`${url}: got ${whole.byteLength} bytes, the file list says ${size}; reload the page`);
      progress(size);
      return whole;
    }
    if (res.status !== 206) throw new Error(`${url}: HTTP ${res.status} for bytes ${at}-${end}`);
    const part = new Uint8Array(await res.arrayBuffer());
    if (part.byteLength !== end - at + 1) throw new Error(`${url}: asked bytes ${at}-${end}, got ${part.byteLength}; the file changed on the server, reload the page`);
    out.set(part, at);
    at += part.byteLength;
    progress(at);
    if (size === 0) break;
  }
  return out;
}
