// A local model's files over HTTP, for the in-browser engine (issue 17; src/browser/model_store.ts):
//   GET /v1/files/<model>/files.json   the folder's file list (path, size, version)
//   GET /v1/files/<model>/<path>       one file, with Range support (206 / 416)
// and the browser bundle itself (dist/browser/: flux2.js and ONNX Runtime Web's .wasm) at
// /browser/. Only files inside the model's folder are served; hidden files are not.

import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ISOLATION_HEADERS } from "./static.js";
import { ApiError } from "./errors.js";
import type { ModelRegistry } from "./models.js";

/** dist/browser/, next to dist/src/ where this file is compiled to. */
export const BROWSER_DIR = fileURLToPath(new URL("../../browser/", import.meta.url));

export interface FileEntry {
  path: string;
  size: number;
  version: string;
}

/** Every non-hidden file under `dir` (following the folder's own symlinks), "/"-separated and sorted. */
export function listModelFiles(dir: string): FileEntry[] {
  const out: FileEntry[] = [];
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      if (name.startsWith(".")) continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.statSync(path.join(dir, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) out.push({ path: r, size: st.size, version: `${st.size}-${Math.round(st.mtimeMs)}` });
    }
  };
  walk("");
  return out;
}

/** `bytes=a-b` / `bytes=a-` / `bytes=-n` → [start, end] inclusive; null when unsatisfiable; undefined when absent. */
export function parseRange(header: string | undefined, size: number): [number, number] | null | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null; // several ranges or a malformed one: refused
  let start: number, end: number;
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0) return null;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return start <= end && start < size ? [start, end] : null;
}

const TYPES: Record<string, string> = {
  ".json": "application/json", ".js": "text/javascript; charset=utf-8", ".map": "application/json",
  ".wasm": "application/wasm", ".txt": "text/plain; charset=utf-8", ".jinja": "text/plain; charset=utf-8",
};

function sendFile(file: string, req: FastifyRequest, reply: FastifyReply, cache: string) {
  const st = fs.statSync(file);
  const size = st.size;
  // Size + mtime as the validator: a reload revalidates with a 304 instead of a new download
  // (for the 28 MB .wasm this also lets the browser reuse its compiled-code cache).
  const etag = `"${size}-${Math.round(st.mtimeMs)}"`;
  reply.header("accept-ranges", "bytes");
  reply.header("cache-control", cache);
  reply.header("etag", etag);
  if (req.headers["if-none-match"] === etag) return reply.status(304).send();
  reply.type(TYPES[path.extname(file)] ?? "application/octet-stream");
  const range = parseRange(req.headers.range, size);
  if (range === null) {
    throw new ApiError(416, `Range "${req.headers.range}" is not satisfiable for a ${size}-byte file; ask for one range, bytes=START-END, inside it`, { "content-range": `bytes */${size}` });
  }
  if (range === undefined) {
    reply.header("content-length", String(size));
    return reply.send(fs.createReadStream(file));
  }
  const [start, end] = range;
  reply.status(206);
  reply.header("content-range", `bytes ${start}-${end}/${size}`);
  reply.header("content-length", String(end - start + 1));
  return reply.send(fs.createReadStream(file, { start, end }));
}

/** `rel` under `root`, or null when it leaves it, is hidden, or is not a file. */
function inside(root: string, rel: string): string | null {
  if (rel.includes("\0") || rel.split("/").some((p) => p.startsWith("."))) return null;
  const file = path.resolve(root, rel);
  if (!file.startsWith(path.resolve(root) + path.sep)) return null;
  return fs.statSync(file, { throwIfNoEntry: false })?.isFile() ? file : null;
}

export function registerFiles(app: FastifyInstance, registry: ModelRegistry, browserDir = BROWSER_DIR): void {
  const modelDir = (id: string): string => {
    const m = registry.get(id);
    if (!m) throw new ApiError(404, `no model "${id}" on this server; GET /v1/models lists them`);
    if (m.kind !== "local" || !m.dir) throw new ApiError(404, `model "${id}" runs elsewhere (${m.kind}); only models in this server's folders can be downloaded`);
    return m.dir;
  };
  app.get("/v1/files/:model/files.json", async (req) => {
    const { model } = req.params as { model: string };
    return { model, files: listModelFiles(modelDir(model)) };
  });
  app.get("/v1/files/:model/*", async (req, reply) => {
    const { model, "*": rel } = req.params as { model: string; "*": string };
    const file = inside(modelDir(model), rel);
    if (!file) throw new ApiError(404, `model "${model}" has no file "${rel}"; GET /v1/files/${model}/files.json lists them`);
    // The file list carries size + mtime, so a cached copy is checked by the client; revalidate here.
    return sendFile(file, req, reply, "no-cache");
  });
  app.get("/browser/*", async (req, reply) => {
    const rel = (req.params as { "*": string })["*"];
    const file = inside(browserDir, rel);
    if (!file) throw new ApiError(404, `no "${rel}" in the browser bundle (npm run build writes dist/browser/)`);
    // ONNX Runtime Web starts its WASM threads as Workers from these files: they carry the studio's isolation too.
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) reply.header(k, v);
    return sendFile(file, req, reply, "no-cache");
  });
}
