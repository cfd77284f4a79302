// A model's files in the browser: listed by the server (GET <url>/files.json), downloaded once
// in HTTP Range chunks with progress, kept in the Origin Private File System (OPFS) or, where
// that cannot be written, Cache Storage, and mounted into the in-memory file system
// (src/platform/browser/fs.ts) where the engine opens them like a folder on disk.
//
// Range chunks: a download shows progress per chunk, a dropped connection costs one chunk, and the
// server never streams one multi-gigabyte response. OPFS first because it is made for big files
// (a file is read back as a File, not a Response held by the HTTP cache machinery, and it counts
// against the origin's storage quota the same way); Cache Storage where OPFS is missing or cannot
// be written from the page (e.g. browsers without FileSystemFileHandle.createWritable).
// The two stores are a few dozen lines over the platform APIs, no library needed.

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
  /** Where files are kept: "auto" (default: OPFS, else Cache Storage), "opfs", "cache", or "none". */
  storage?: StorageChoice;
  /** Cache Storage name, and the OPFS folder (default "flux2-models"); null: do not cache (as storage "none"). */
  cacheName?: string | null;
}

export type StorageKind = "opfs" | "cache";
export type StorageChoice = "auto" | StorageKind | "none";

export interface DownloadReport {
  /** Where the model is mounted: pass it to loadPipeline (src/loaders/pretrained.ts). */
  folder: string;
  files: number;
  bytes: number;
  downloadedBytes: number;
  cachedBytes: number;
  /** Where the files are kept for the next visit ("opfs" or "cache"), or null when nowhere. */
  storage: StorageKind | null;
  /** Why nothing (or not everything) was cached: no store (e.g. an insecure http:// origin), storage full, ... */
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

/** A place that keeps a model's files between visits. */
interface Store {
  kind: StorageKind;
  get(key: FileKey): Promise<Uint8Array | null>;
  put(key: FileKey, bytes: Uint8Array): Promise<void>;
}

/** A file of a model: its URL (Cache Storage's key), its path in the folder and its version (OPFS's name). */
interface FileKey { url: string; path: string; version: string; size: number }

async function sha256Hex(text: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(d.slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** OPFS: <name>/<sha256 of the model URL>/<path, URI-encoded>~<version>; older versions of a file are deleted when a new one is written. */
async function openOpfs(name: string, modelUrl: string): Promise<Store> {
  const storage = (globalThis.navigator as Navigator | undefined)?.storage;
  if (!storage?.getDirectory) throw new Error("this browser has no Origin Private File System (navigator.storage.getDirectory)");
  if (typeof FileSystemFileHandle === "undefined" || !("createWritable" in FileSystemFileHandle.prototype)) {
    throw new Error("this browser cannot write OPFS files from a page (no FileSystemFileHandle.createWritable)");
  }
  const root = await storage.getDirectory();
  const top = await root.getDirectoryHandle(name, { create: true });
  const dir = await top.getDirectoryHandle(await sha256Hex(new URL(modelUrl, globalThis.location?.href).href), { create: true });
  const fileName = (k: FileKey) => `${encodeURIComponent(k.path)}~${encodeURIComponent(k.version)}`;
  return {
    kind: "opfs",
    async get(k) {
      try {
        const file = await (await dir.getFileHandle(fileName(k))).getFile();
        if (file.size !== k.size) return null;
        return new Uint8Array(await file.arrayBuffer());
      } catch (e) {
        if ((e as DOMException).name === "NotFoundError") return null;
        throw e;
      }
    },
    async put(k, bytes) {
      const h = await dir.getFileHandle(fileName(k), { create: true });
      const w = await h.createWritable();
      try {
        await w.write(bytes as Uint8Array<ArrayBuffer>);
        await w.close();
      } catch (e) {
        await w.abort().catch(() => undefined);
        await dir.removeEntry(fileName(k)).catch(() => undefined);
        throw e;
      }
      const stale = `${encodeURIComponent(k.path)}~`;
      for await (const entry of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) {
        if (entry.startsWith(stale) && entry !== fileName(k)) await dir.removeEntry(entry).catch(() => undefined);
      }
    },
  };
}

async function openCacheStorage(name: string): Promise<Store> {
  if (typeof caches === "undefined") throw new Error("Cache Storage needs a secure context (https:// or localhost)");
  let cache: Cache;
  try {
    cache = await caches.open(name);
  } catch (e) {
    throw new Error(`Cache Storage refused: ${(e as Error).message}`);
  }
  const url = (k: FileKey) => `${k.url}?v=${encodeURIComponent(k.version)}`;
  return {
    kind: "cache",
    async get(k) {
      const hit = await cache.match(url(k));
      if (!hit) return null;
      const b = new Uint8Array(await hit.arrayBuffer());
      return b.byteLength === k.size ? b : null;
    },
    async put(k, bytes) {
      await cache.put(url(k), new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": "application/octet-stream", "content-length": String(k.size) } }));
    },
  };
}

/** The store to use: OPFS, else Cache Storage ("auto"), or the one asked for; with the reasons when none. */
async function openStore(choice: StorageChoice, name: string | null, modelUrl: string): Promise<{ store: Store | null; why?: string }> {
  if (name === null || choice === "none") return { store: null, why: "caching was turned off" };
  const why: string[] = [];
  if (choice === "auto" || choice === "opfs") {
    try {
      return { store: await openOpfs(name, modelUrl) };
    } catch (e) {
      why.push(`OPFS: ${(e as Error).message}`);
      if (choice === "opfs") return { store: null, why: why.join("; ") };
    }
  }
  try {
    return { store: await openCacheStorage(name) };
  } catch (e) {
    why.push((e as Error).message);
    return { store: null, why: why.join("; ") };
  }
}

/** Download (or take from the cache) every file of the model at `url` and mount it at /models/<id>. */
export async function downloadModel(url: string, opts: DownloadOptions = {}): Promise<DownloadReport> {
  const manifest = await fetchManifest(url, opts);
  const id = manifest.model.replace(/[^A-Za-z0-9._-]/g, "_");
  const folder = `/models/${id}`;
  const choice = opts.storage ?? "auto";
  if (!["auto", "opfs", "cache", "none"].includes(choice)) throw new Error(`storage "${choice}": use "auto", "opfs", "cache" or "none"`);
  const { store, why: noStore } = await openStore(choice, opts.cacheName === undefined ? CACHE : opts.cacheName, url);
  let why = noStore;
  let writable = store !== null;
  const total = manifest.files.reduce((a, f) => a + f.size, 0);
  let loaded = 0, downloadedBytes = 0, cachedBytes = 0;
  unmount(folder);
  for (const f of manifest.files) {
    if (f.path.split("/").some((p) => p === ".." || p === "")) throw new Error(`files.json lists an unsafe path "${f.path}"`);
    const fileUrl = joinUrl(url, f.path);
    const key: FileKey = { url: fileUrl, path: f.path, version: String(f.version), size: f.size };
    let bytes = store ? await store.get(key) : null;
    const fromCache = bytes !== null;
    if (bytes) {
      cachedBytes += f.size;
      loaded += f.size;
    } else {
      const base = loaded;
      bytes = await downloadFile(fileUrl, f.size, opts, (n) => opts.onProgress?.({ file: f.path, loaded: base + n, total, fromCache: false }));
      downloadedBytes += f.size;
      loaded += f.size;
      if (store && writable) {
        // A full disk (QuotaExceededError) or a refused write costs the next visit a download, not this one its model.
        try {
          await store.put(key, bytes);
        } catch (e) {
          writable = false;
          why = `could not keep ${f.path} in ${store.kind === "opfs" ? "OPFS" : "Cache Storage"} (${(e as Error).name}: ${(e as Error).message}); it will be downloaded again next time`;
        }
      }
    }
    opts.onProgress?.({ file: f.path, loaded, total, fromCache });
    mount(`${folder}/${f.path}`, bytes);
  }
  return { folder, files: manifest.files.length, bytes: total, downloadedBytes, cachedBytes, storage: store?.kind ?? null, ...(why ? { cacheUnavailable: why } : {}) };
}

/** One file in Range chunks (a server without Range support answers 200 with the whole file, which is taken as is). */
async function downloadFile(url: string, size: number, opts: DownloadOptions, progress: (n: number) => void): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  const chunk = opts.chunkBytes ?? 8 * 1024 * 1024;
  for (let at = 0; at < size || (size === 0 && at === 0); ) {
    const end = Math.min(size, at + chunk) - 1;
    // no-store: the files are kept in OPFS / Cache Storage; the browser's HTTP cache would hold a second copy of every byte.
    const res = await fetch(url, { headers: { ...opts.headers, ...(size ? { range: `bytes=${at}-${end}` } : {}) }, signal: opts.signal, cache: "no-store" });
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
