// The studio (built by vite into dist/studio/) served at `/` from the same
// origin as the API, so the browser needs no CORS and sends its key to the
// server it was loaded from. Only files inside that folder are served.

import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import { ApiError } from "./errors.js";

/** dist/studio/, next to dist/src/ where this file is compiled to. */
export const STUDIO_DIR = fileURLToPath(new URL("../../studio/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
  ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
  ".ico": "image/x-icon", ".webp": "image/webp", ".woff2": "font/woff2", ".txt": "text/plain; charset=utf-8",
};

/**
 * Cross-origin isolation for the studio and the browser bundle: with these, the page may use
 * SharedArrayBuffer, so the in-browser engine runs WASM with threads (issue 17). "credentialless"
 * rather than "require-corp": the studio may show images from another flux2 server or a provider's
 * delivery URL, which send no Cross-Origin-Resource-Policy; credentialless loads them without
 * cookies instead of blocking them (the API uses an x-key header, not cookies). Browsers without
 * credentialless (Safari) are simply not isolated and run WASM on one thread; nothing breaks.
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "credentialless",
};

/** A file under `root` for a URL path, or null (missing, a folder, or outside root). */
export function resolveStatic(root: string, urlPath: string): string | null {
  let rel: string;
  try {
    rel = decodeURIComponent(urlPath.split("?")[0]);
  } catch {
    return null;
  }
  if (rel.includes("\0")) return null;
  const file = path.resolve(root, `.${rel === "/" ? "/index.html" : rel}`);
  if (!file.startsWith(path.resolve(root) + path.sep)) return null;
  const st = fs.statSync(file, { throwIfNoEntry: false });
  return st?.isFile() ? file : null;
}

export function registerStatic(app: FastifyInstance, root = STUDIO_DIR): void {
  const serve = async (url: string, reply: { header(k: string, v: string): unknown; type(t: string): unknown; send(b: unknown): unknown }) => {
    const file = resolveStatic(root, url);
    if (!file) {
      if (url === "/" || url.startsWith("/?")) throw new ApiError(404, "The studio is not built (vite build --config studio/vite.config.ts writes dist/studio/); the API is under /v1");
      throw new ApiError(404, "Not Found");
    }
    // Vite's assets/ names carry a content hash; index.html must be re-read to pick up new ones.
    reply.header("cache-control", url.startsWith("/assets/") ? "public, max-age=31536000, immutable" : "no-cache");
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) reply.header(k, v);
    reply.type(TYPES[path.extname(file)] ?? "application/octet-stream");
    return reply.send(fs.createReadStream(file));
  };
  app.get("/", (req, reply) => serve(req.url, reply));
  app.get("/*", (req, reply) => serve(req.url, reply));
}
