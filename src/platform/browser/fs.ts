// In-memory file system standing in for `node:fs` in the browser bundle.
//
// The engine reads checkpoints with positioned synchronous reads (safetensors headers, then
// tensors on demand) and finds its parts by listing folders (config.json, tokenizer files,
// shards). A browser has no synchronous file API, so the model store (src/browser/model_store.ts)
// downloads a model's files once, keeps them in OPFS (or Cache Storage), and mounts their bytes here; the
// engine's code then runs unchanged. Hand-written because it is a few dozen lines for exactly the
// calls the engine makes (no browser fs library covers synchronous positioned reads over
// in-memory buffers); anything else throws, naming the call.

import { dirname, resolve } from "./path.js";

const files = new Map<string, Uint8Array>();
const dirs = new Set<string>(["/"]);
let mtime = 1;
const mtimes = new Map<string, number>();

function addParents(p: string): void {
  for (let d = dirname(p); !dirs.has(d); d = dirname(d)) dirs.add(d);
}

/** Put a file's bytes at `path` (absolute), creating its folders. */
export function mount(path: string, bytes: Uint8Array): void {
  const p = resolve(path);
  files.set(p, bytes);
  mtimes.set(p, mtime++);
  addParents(p);
}

/** Forget every file under `folder`. */
export function unmount(folder: string): void {
  const root = resolve(folder);
  for (const p of [...files.keys()]) if (p === root || p.startsWith(root + "/")) files.delete(p);
  for (const d of [...dirs]) if (d !== "/" && (d === root || d.startsWith(root + "/"))) dirs.delete(d);
}

function enoent(call: string, p: string): Error {
  const e = new Error(`ENOENT: no such file or directory, ${call} '${p}'`) as Error & { code: string };
  e.code = "ENOENT";
  return e;
}

export interface Stats {
  size: number;
  mtimeMs: number;
  ino: number;
  dev: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

function stats(p: string): Stats | undefined {
  const f = files.get(p);
  if (f) return { size: f.byteLength, mtimeMs: mtimes.get(p) ?? 0, ino: mtimes.get(p) ?? 0, dev: 1, isFile: () => true, isDirectory: () => false };
  if (dirs.has(p)) return { size: 0, mtimeMs: 0, ino: 0, dev: 1, isFile: () => false, isDirectory: () => true };
  return undefined;
}

export function existsSync(path: string): boolean {
  const p = resolve(path);
  return files.has(p) || dirs.has(p);
}

export function statSync(path: string, opts?: { throwIfNoEntry?: boolean }): Stats | undefined {
  const s = stats(resolve(path));
  if (!s && opts?.throwIfNoEntry !== false) throw enoent("stat", path);
  return s;
}

export function realpathSync(path: string): string {
  const p = resolve(path);
  if (!files.has(p) && !dirs.has(p)) throw enoent("realpath", path);
  return p;
}

export function readdirSync(path: string): string[] {
  const p = resolve(path);
  if (!dirs.has(p)) throw enoent("scandir", path);
  const prefix = p === "/" ? "/" : p + "/";
  const names = new Set<string>();
  for (const k of [...files.keys(), ...dirs]) {
    if (k.startsWith(prefix) && k.length > prefix.length) names.add(k.slice(prefix.length).split("/")[0]);
  }
  return [...names].sort();
}

export function readFileSync(path: string, encoding?: string | { encoding?: string }): any {
  const p = resolve(path);
  const f = files.get(p);
  if (!f) throw enoent("open", path);
  const enc = typeof encoding === "string" ? encoding : encoding?.encoding;
  return enc ? new TextDecoder(enc === "utf8" ? "utf-8" : enc).decode(f) : f;
}

export function writeFileSync(path: string, data: Uint8Array | string): void {
  mount(path, typeof data === "string" ? new TextEncoder().encode(data) : data.slice());
}

// Open files: a descriptor is an index into this table.
interface Open { path: string; writable: boolean; chunks?: Uint8Array[] }
const open = new Map<number, Open>();
let nextFd = 3;

export function openSync(path: string, flags: string = "r"): number {
  const p = resolve(path);
  if (flags === "r") {
    if (!files.has(p)) throw enoent("open", path);
    open.set(nextFd, { path: p, writable: false });
  } else if (flags === "w") {
    mount(p, new Uint8Array(0));
    open.set(nextFd, { path: p, writable: true, chunks: [] });
  } else {
    throw new Error(`the browser file system opens files with "r" or "w" only, not "${flags}"`);
  }
  return nextFd++;
}

function descriptor(fd: number): Open {
  const o = open.get(fd);
  if (!o) throw new Error(`EBADF: bad file descriptor ${fd}`);
  return o;
}

export function fstatSync(fd: number): Stats {
  return stats(descriptor(fd).path)!;
}

export function readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number {
  const f = files.get(descriptor(fd).path) ?? new Uint8Array(0);
  const n = Math.max(0, Math.min(length, f.byteLength - position));
  buffer.set(f.subarray(position, position + n), offset);
  return n;
}

export function writeSync(fd: number, buffer: Uint8Array, offset = 0, length = buffer.byteLength - offset): number {
  const o = descriptor(fd);
  if (!o.writable) throw new Error(`EBADF: ${o.path} is open for reading`);
  o.chunks!.push(buffer.slice(offset, offset + length));
  return length;
}

export function ftruncateSync(fd: number, length = 0): void {
  const o = descriptor(fd);
  const all = concat(o.chunks ?? []);
  o.chunks = [all.slice(0, length)];
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out;
}

export function closeSync(fd: number): void {
  const o = descriptor(fd);
  if (o.writable) mount(o.path, concat(o.chunks!));
  open.delete(fd);
}

export function mkdirSync(path: string, _opts?: unknown): void {
  const p = resolve(path);
  dirs.add(p);
  addParents(p);
}

export function renameSync(from: string, to: string): void {
  const a = resolve(from);
  const f = files.get(a);
  if (!f) throw enoent("rename", from);
  files.delete(a);
  mount(to, f);
}

export function rmSync(path: string, opts?: { force?: boolean; recursive?: boolean }): void {
  const p = resolve(path);
  if (files.delete(p)) return;
  if (dirs.has(p) && opts?.recursive) return unmount(p);
  if (!opts?.force) throw enoent("rm", path);
}

export function copyFileSync(from: string, to: string): void {
  const f = files.get(resolve(from));
  if (!f) throw enoent("copyfile", from);
  mount(to, f);
}

export const linkSync = copyFileSync;

export const promises = {
  readFile: async (path: string, encoding?: string) => readFileSync(path, encoding),
};
