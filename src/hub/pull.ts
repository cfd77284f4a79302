// `flux2 pull`: download a FLUX.2 repository from the Hugging Face Hub into a
// plain folder (the layout `flux2 generate --model DIR` opens), with
// resumable, checksum-verified transfers.
//
// The Hub is talked to through @huggingface/hub only:
//  - listFiles({ recursive: true }) lists the tree (GET /api/models/{repo}/tree/{rev}?recursive=true,
//    following Link pagination), with each file's size, git blob id (`oid`) and, for LFS files, sha256 (`lfs.oid`);
//  - downloadFile({ xet: false }) probes the file (GET /{repo}/resolve/{rev}/{path} with Range: bytes=0-0,
//    which also surfaces 401/403 of gated repositories) and returns a WebBlob whose slice(offset).stream()
//    fetches `Range: bytes=offset-(size-1)`. That is the library's ranged read, and it is how an
//    interrupted download continues from DIR/<path>.incomplete.
//    xet is off on purpose: the resolve URL serves every file, xet-backed or not, as plain HTTP with byte
//    ranges (the Hub redirects to its CDN / xet bridge), which is what the .incomplete-file resume needs; the
//    library's XetBlob reassembles chunks in memory and cannot append to a partial file on disk.
//
// Files already complete are recognised by a small manifest, DIR/.flux2-pull.json, written after each
// verified download (size, checksum, mtime): a re-run lists the repository and stats the files, nothing
// more. A file without a manifest entry (copied in by hand, or a manifest deleted) is hashed once.

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { downloadFile, listFiles, HUB_URL, type ListFileEntry } from "@huggingface/hub";
import { PullError } from "./errors.js";
import { HubHttp, toPullError, type ErrorContext } from "./http.js";
import { Progress, formatBytes } from "./progress.js";
import { selectFiles } from "./select.js";
import { FileHasher, checksumProblem, hashFile, hashFileInto, type Expected } from "./verify.js";

export interface PullOptions {
  /** Repository id, e.g. "black-forest-labs/FLUX.2-klein-4B". */
  repo: string;
  /** Target folder; default: the repository name in the current folder (./FLUX.2-klein-4B). */
  dir?: string;
  /** Branch, tag or commit; default "main". */
  revision?: string;
  /** Globs choosing the files (see select.ts); default: every file a flux2.ts run may need. */
  include?: string[];
  /** Hub access token; default $HF_TOKEN. */
  token?: string;
  /** Hub address; default $HF_ENDPOINT, else https://huggingface.co. */
  hubUrl?: string;
  /** Automatic resumes of a broken transfer within one run (default 3); 0: fail at once (the next run resumes). */
  retries?: number;
  /** Wait before the first automatic resume, doubled each time (default 2000 ms). */
  retryDelayMs?: number;
  /** Longest wait for the answer to one request (default 30 s). */
  requestTimeoutMs?: number;
  /** Longest silence in the middle of a download before it counts as broken (default 60 s). */
  idleTimeoutMs?: number;
  /** Progress and messages; default process.stderr; null for none. */
  progress?: NodeJS.WritableStream | null;
  /** Redraw one status line (default: whether `progress` is a TTY). */
  tty?: boolean;
  /** List what would be downloaded and stop. */
  dryRun?: boolean;
  /** The fetch the library uses underneath (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Stops the pull (partial files are kept for the next run). */
  signal?: AbortSignal;
}

export type PulledStatus =
  /** Fetched from byte 0 in this run. */
  | "downloaded"
  /** Continued from a .incomplete file left by an earlier run. */
  | "resumed"
  /** Already there; the manifest vouched for it. */
  | "present"
  /** Already there without a manifest entry; hashed and found correct. */
  | "verified"
  /** Dry run: would be downloaded. */
  | "planned";

export interface PulledFile {
  path: string;
  size: number;
  status: PulledStatus;
}

export interface PullResult {
  repo: string;
  revision: string;
  hubUrl: string;
  dir: string;
  files: PulledFile[];
  /** Files of the repository left out (default rules or --include), with why. */
  skipped: { path: string; size: number; reason: string }[];
  /** Bytes that came over the network in this run. */
  downloadedBytes: number;
}

export const MANIFEST_NAME = ".flux2-pull.json";
const FLUSH_BYTES = 8 << 20;

interface RepoFile {
  path: string;
  size: number;
  expected: Expected;
}

interface ManifestEntry {
  size: number;
  sha256?: string;
  gitSha1?: string;
  mtimeMs: number;
}

interface Manifest {
  version: 1;
  repo: string;
  revision: string;
  files: Record<string, ManifestEntry>;
}

const isHex = (s: unknown, len: number): s is string => typeof s === "string" && s.length === len && /^[0-9a-f]+$/i.test(s);

function toRepoFile(e: ListFileEntry): RepoFile {
  const size = e.lfs?.size ?? e.size;
  const expected: Expected = { size };
  if (e.lfs) {
    if (isHex(e.lfs.oid, 64)) expected.sha256 = e.lfs.oid.toLowerCase();
  } else if (isHex(e.oid, 40)) {
    expected.gitSha1 = e.oid.toLowerCase();
  }
  return { path: e.path, size, expected };
}

function checkRelativePath(p: string): void {
  const parts = p.split("/");
  if (!p || p.startsWith("/") || p.includes("\\") || p.includes("\0") || parts.some((s) => s === ".." || s === "." || s === "") || /^[a-zA-Z]:/.test(p)) {
    throw new PullError("http", `the Hub listed a file with an unsafe path: ${JSON.stringify(p)}`);
  }
}

function fileSize(p: string): number | null {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  return st ? st.size : null;
}

const secs = (ms: number) => (ms < 10_000 ? (ms / 1000).toFixed(1).replace(/\.0$/, "") : String(Math.round(ms / 1000)));

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0) return resolve();
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function resolveToken(opts: PullOptions): string | undefined {
  const fromFlag = opts.token !== undefined && opts.token !== "";
  const token = fromFlag ? opts.token : process.env.HF_TOKEN || undefined;
  if (token !== undefined && !token.startsWith("hf_")) {
    throw new PullError(
      "usage",
      `the token from ${fromFlag ? "--token" : "HF_TOKEN"} does not look like a Hugging Face access token (they start with "hf_"); create one at https://huggingface.co/settings/tokens`,
    );
  }
  return token;
}

function resolveHubUrl(opts: PullOptions): string {
  const raw = opts.hubUrl || process.env.HF_ENDPOINT || HUB_URL;
  try {
    const u = new URL(raw);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw new PullError("usage", `the Hub address ${JSON.stringify(raw)} (${opts.hubUrl ? "--endpoint" : "HF_ENDPOINT"}) is not an http(s) URL`);
  }
  return raw.replace(/\/+$/, "");
}

function checkRepoId(repo: string): void {
  const ok = /^(datasets\/)?[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/.test(repo) && !repo.includes("..") && !repo.startsWith("models/");
  if (!ok) throw new PullError("usage", `"${repo}" is not a Hub repository id (expected owner/name, e.g. black-forest-labs/FLUX.2-klein-4B)`);
}

class ManifestStore {
  private data: Manifest;
  private readonly file: string;

  constructor(dir: string, repo: string, revision: string, private readonly warn?: (line: string) => void) {
    this.file = path.join(dir, MANIFEST_NAME);
    this.data = { version: 1, repo, revision, files: {} };
    try {
      const raw = JSON.parse(fs.readFileSync(this.file, "utf8"));
      if (raw?.version === 1 && raw.files && typeof raw.files === "object") this.data.files = raw.files;
    } catch {
      // No manifest yet (or an unreadable one): every present file gets hashed once.
    }
    this.data.repo = repo;
    this.data.revision = revision;
  }

  /** Whether `file` (at `abs`) is recorded as verified with the same checksum and is untouched since. */
  vouches(f: RepoFile, abs: string): boolean {
    const e = this.data.files[f.path];
    const st = fs.statSync(abs, { throwIfNoEntry: false });
    if (!e || !st || !st.isFile()) return false;
    return e.size === f.size && st.size === f.size && e.mtimeMs === st.mtimeMs && e.sha256 === f.expected.sha256 && e.gitSha1 === f.expected.gitSha1;
  }

  async record(f: RepoFile, abs: string): Promise<void> {
    const st = await fsp.stat(abs);
    this.data.files[f.path] = {
      size: f.size,
      mtimeMs: st.mtimeMs,
      ...(f.expected.sha256 && { sha256: f.expected.sha256 }),
      ...(f.expected.gitSha1 && { gitSha1: f.expected.gitSha1 }),
    };
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      await fsp.writeFile(tmp, JSON.stringify(this.data, null, 1) + "\n");
      await fsp.rename(tmp, this.file);
    } catch (e) {
      // Not fatal: without the record the next run hashes the file once more.
      await fsp.rm(tmp, { force: true }).catch(() => {});
      this.warn?.(`warning: cannot update ${this.file} (${(e as Error).message}); the next run will re-check ${f.path}`);
    }
  }
}

interface Ctx {
  opts: PullOptions;
  repo: string;
  revision: string;
  dir: string;
  token: string | undefined;
  http: HubHttp;
  progress: Progress;
  retries: number;
  retryDelayMs: number;
  idleTimeoutMs: number;
  downloadedBytes: number;
}

function errCtx(ctx: Ctx, file?: string): ErrorContext {
  return { http: ctx.http, repo: ctx.repo, revision: ctx.revision, tokenSent: ctx.token !== undefined, file };
}

function diskError(e: unknown, inc: string, size: number): PullError {
  const code = (e as NodeJS.ErrnoException)?.code;
  const kept = fileSize(inc) ?? 0;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new PullError(
      "disk_full",
      `no space left on the device while writing ${inc} (${formatBytes(kept)} of ${formatBytes(size)} kept): free some space and run pull again — it continues from there`,
      { cause: e },
    );
  }
  return new PullError("io", `cannot write ${inc}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, off, buf.byteLength - off);
    off += bytesWritten;
  }
}

/**
 * One request for the rest of `f` after the `hasher.size` bytes already in `inc`,
 * appending to `inc` and hashing as the bytes come.
 */
async function transferOnce(ctx: Ctx, f: RepoFile, inc: string, hasher: FileHasher): Promise<void> {
  const { http } = ctx;
  let offset = hasher.size;
  http.lastFailure = null;
  let blob: Blob | null;
  try {
    blob = await downloadFile({
      repo: ctx.repo,
      path: f.path,
      revision: ctx.revision,
      hubUrl: http.hubUrl,
      accessToken: ctx.token,
      fetch: http.fetch,
      xet: false,
    });
  } catch (e) {
    throw toPullError(e, errCtx(ctx, f.path));
  }
  if (!blob) {
    throw new PullError("not_found", `${ctx.repo}: ${f.path} is listed but not found at revision "${ctx.revision}" — did the repository change meanwhile? Run pull again`);
  }
  if (blob.size !== f.size) {
    throw new PullError("checksum", `${f.path}: the listing says ${f.size} bytes but the Hub serves ${blob.size} — the repository may have changed meanwhile; run pull again`);
  }
  // WebBlob.slice(offset) → its stream() sends `Range: bytes=offset-(size-1)`.
  const reader = (offset > 0 ? blob.slice(offset) : blob).stream().getReader();
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(inc, offset > 0 ? "a" : "w");
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw diskError(e, inc, f.size);
  }
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    if (pendingBytes === 0) return;
    const buf = Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    await writeAll(fh, buf);
  };
  let timedOut = false;
  const idle = setTimeout(() => {
    timedOut = true;
    http.abortAll(new PullError("interrupted", `no data for ${secs(ctx.idleTimeoutMs)} s`, { retryable: true }));
    reader.cancel().catch(() => {});
  }, ctx.idleTimeoutMs);
  let failure: unknown = null;
  let writeFailed = false;
  let first = true;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      idle.refresh();
      if (first) {
        first = false;
        const res = http.lastResponse;
        if (offset > 0 && res && res.range && res.status === 200) {
          // The server ignored our Range request and sends the file from byte 0: start the file over.
          ctx.progress.note(`  ${f.path}: the server does not resume (ignored Range); starting this file over`);
          await fh.truncate(0);
          hasher.reset();
          ctx.progress.advance(-offset);
          offset = 0;
        }
      }
      hasher.update(value);
      ctx.progress.advance(value.byteLength);
      ctx.downloadedBytes += value.byteLength;
      if (hasher.size > f.size) {
        throw new PullError("checksum", `${f.path}: the Hub sent more than the listed ${f.size} bytes`);
      }
      pending.push(value);
      pendingBytes += value.byteLength;
      if (pendingBytes >= FLUSH_BYTES) {
        try {
          await flush();
        } catch (e) {
          writeFailed = true;
          throw e;
        }
      }
    }
  } catch (e) {
    failure = e;
  }
  clearTimeout(idle);
  if (failure !== null) await reader.cancel().catch(() => {});
  // Keep every byte that arrived (the next attempt resumes after them), unless it was the write that failed.
  if (!writeFailed && !(failure instanceof PullError && failure.kind === "checksum")) {
    try {
      await flush();
    } catch (e) {
      failure = e;
      writeFailed = true;
    }
  }
  await fh.close().catch(() => {});
  if (timedOut) {
    throw new PullError("interrupted", `downloading ${f.path}: no data for ${secs(ctx.idleTimeoutMs)} s`, { retryable: true });
  }
  if (failure !== null) {
    if (writeFailed) throw diskError(failure, inc, f.size);
    if ((failure as NodeJS.ErrnoException)?.code && ["ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO"].includes((failure as NodeJS.ErrnoException).code!)) {
      throw diskError(failure, inc, f.size);
    }
    throw toPullError(failure, errCtx(ctx, f.path));
  }
  if (hasher.size < f.size) {
    throw new PullError("interrupted", `downloading ${f.path}: the transfer ended after ${hasher.size} of ${f.size} bytes`, { retryable: true });
  }
}

/** Download `f` into DIR/<path> through DIR/<path>.incomplete; returns whether an earlier run's partial file was continued. */
async function downloadOne(ctx: Ctx, f: RepoFile): Promise<"downloaded" | "resumed"> {
  const final = path.join(ctx.dir, ...f.path.split("/"));
  const inc = `${final}.incomplete`;
  try {
    await fsp.mkdir(path.dirname(final), { recursive: true });
  } catch (e) {
    throw new PullError("io", `cannot create ${path.dirname(final)}: ${(e as Error).message}`, { cause: e });
  }
  let partial = fileSize(inc) ?? 0;
  if (partial > f.size) {
    await fsp.rm(inc, { force: true });
    partial = 0;
  }
  const resumedFromEarlierRun = partial > 0;
  let startedOver = false;
  ctx.progress.fileStart(f.path, f.size, partial);
  let hasher: FileHasher | null = null;
  for (let attempt = 0; ; ) {
    partial = fileSize(inc) ?? 0;
    if (partial > f.size) {
      await fsp.rm(inc, { force: true });
      partial = 0;
    }
    if (!hasher || hasher.size !== partial) {
      hasher = new FileHasher(f.expected);
      try {
        if (partial > 0) await hashFileInto(hasher, inc, partial);
      } catch (e) {
        throw new PullError("io", `cannot read ${inc}: ${(e as Error).message}`, { cause: e });
      }
    }
    try {
      if (f.size > 0) await transferOnce(ctx, f, inc, hasher);
      else await fsp.writeFile(inc, "");
    } catch (e) {
      const pe = e instanceof PullError ? e : toPullError(e, errCtx(ctx, f.path));
      if (pe.kind === "checksum") {
        await fsp.rm(inc, { force: true });
        throw new PullError("checksum", `${pe.message}; the bad download was deleted`);
      }
      if (pe.retryable && attempt < ctx.retries && !ctx.opts.signal?.aborted) {
        attempt++;
        const wait = ctx.retryDelayMs * 2 ** (attempt - 1);
        ctx.progress.note(`  ${pe.message}; resuming (attempt ${attempt} of ${ctx.retries}) from ${formatBytes(fileSize(inc) ?? 0)}${wait > 0 ? ` in ${(wait / 1000).toFixed(1)} s` : ""}`);
        await sleep(wait, ctx.opts.signal);
        continue;
      }
      if (pe.retryable || pe.kind === "interrupted") {
        const kept = fileSize(inc) ?? 0;
        throw new PullError(
          pe.kind === "http" ? "http" : "interrupted",
          `${pe.message}${attempt > 0 ? ` (gave up after ${attempt} resume${attempt > 1 ? "s" : ""})` : ""}; ${formatBytes(kept)} of ${formatBytes(f.size)} kept in ${inc} — run pull again to continue from there`,
          { cause: pe },
        );
      }
      throw pe;
    }
    const problem = checksumProblem(f.expected, hasher.digest());
    hasher = null;
    if (problem) {
      await fsp.rm(inc, { force: true });
      if (resumedFromEarlierRun && !startedOver) {
        // The partial file may come from another version of the repository: one clean try.
        startedOver = true;
        ctx.progress.note(`  ${f.path}: checksum mismatch after resuming an earlier partial download (${problem}); discarded it, downloading from the start`);
        ctx.progress.restartFile();
        continue;
      }
      throw new PullError(
        "checksum",
        `checksum mismatch for ${f.path}: ${problem}; the bad download was deleted — run pull again (if it happens again, the file on the Hub or something between you and it is at fault)`,
      );
    }
    try {
      await fsp.rename(inc, final);
    } catch (e) {
      throw new PullError("io", `cannot move ${inc} to ${final}: ${(e as Error).message}`, { cause: e });
    }
    return resumedFromEarlierRun && !startedOver ? "resumed" : "downloaded";
  }
}

/** Download (or bring up to date) a Hub repository in a local folder. */
export async function pull(opts: PullOptions): Promise<PullResult> {
  const repo = opts.repo.trim().replace(/^https?:\/\/[^/]+\//, "").replace(/\/+$/, "");
  checkRepoId(repo);
  const revision = opts.revision || "main";
  const token = resolveToken(opts);
  const hubUrl = resolveHubUrl(opts);
  const dir = path.resolve(opts.dir ?? repo.split("/").pop()!);
  const out = opts.progress === undefined ? process.stderr : opts.progress;
  const tty = opts.tty ?? !!(out && (out as NodeJS.WriteStream).isTTY);
  const progress = new Progress({ out, tty });
  const http = new HubHttp(hubUrl, opts.fetch ?? globalThis.fetch, opts.requestTimeoutMs ?? 30_000, opts.signal);
  const ctx: Ctx = {
    opts, repo, revision, dir, token, http, progress,
    retries: Math.max(0, opts.retries ?? 3),
    retryDelayMs: opts.retryDelayMs ?? 2000,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
    downloadedBytes: 0,
  };

  // 1. The listing.
  const listed: RepoFile[] = [];
  try {
    for await (const e of listFiles({
      repo,
      revision: encodeURIComponent(revision),
      recursive: true,
      hubUrl,
      accessToken: token,
      fetch: http.fetch,
    })) {
      if (e.type !== "file") continue;
      checkRelativePath(e.path);
      listed.push(toRepoFile(e));
    }
  } catch (e) {
    throw toPullError(e, errCtx(ctx));
  }
  listed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (listed.length === 0) throw new PullError("not_found", `${repo} at revision "${revision}" has no files`);

  // 2. The choice of files.
  const { selected, skipped } = selectFiles(listed, opts.include);
  if (selected.length === 0) {
    throw new PullError("usage", `no file of ${repo} matches --include ${opts.include!.join(" ")} (it has ${listed.length} files, e.g. ${listed.slice(0, 3).map((f) => f.path).join(", ")})`);
  }
  const result: PullResult = {
    repo, revision, hubUrl, dir, files: [],
    skipped: skipped.map((s) => ({ path: s.file.path, size: s.file.size, reason: s.reason })),
    downloadedBytes: 0,
  };
  progress.note(`pulling ${repo}@${revision} from ${hubUrl} into ${dir}: ${selected.length} files, ${formatBytes(selected.reduce((a, f) => a + f.size, 0))}`);
  if (skipped.length > 0) {
    const bytes = skipped.reduce((a, s) => a + s.file.size, 0);
    const n = `${skipped.length} file${skipped.length > 1 ? "s" : ""} (${formatBytes(bytes)})`;
    if (opts.include?.length) {
      progress.note(`leaving out ${n} not matched by --include`);
    } else {
      progress.note(`leaving out ${n} flux2.ts does not need (--include '*' takes everything):`);
      for (const s of skipped.slice(0, 20)) progress.note(`  - ${s.file.path} (${formatBytes(s.file.size)}): ${s.reason}`);
    }
    if (!opts.include?.length && skipped.length > 20) progress.note(`  … and ${skipped.length - 20} more`);
  }

  // 3. What is there already.
  const manifest = new ManifestStore(dir, repo, revision, (l) => progress.note(l));
  const todo: RepoFile[] = [];
  for (const f of selected) {
    const final = path.join(dir, ...f.path.split("/"));
    const st = fs.statSync(final, { throwIfNoEntry: false });
    if (manifest.vouches(f, final)) {
      result.files.push({ path: f.path, size: f.size, status: "present" });
      if (!opts.dryRun) await fsp.rm(`${final}.incomplete`, { force: true });
      continue;
    }
    if (st?.isFile() && st.size === f.size && opts.dryRun) {
      result.files.push({ path: f.path, size: f.size, status: "present" });
      progress.note(`  ${f.path} is there but not yet checked (a real run hashes it once)`);
      continue;
    }
    if (st?.isFile() && st.size === f.size) {
      progress.note(`checking ${f.path} (${formatBytes(f.size)}), already in ${dir}`);
      const problem = checksumProblem(f.expected, await hashFile(final, f.expected));
      if (!problem) {
        await manifest.record(f, final);
        await fsp.rm(`${final}.incomplete`, { force: true });
        result.files.push({ path: f.path, size: f.size, status: "verified" });
        continue;
      }
      progress.note(`  ${f.path} differs from the Hub's version (${problem}); downloading it again`);
    } else if (st && !st.isFile()) {
      throw new PullError("io", `${final} exists and is not a file; move it away and run pull again`);
    } else if (st && !opts.dryRun) {
      progress.note(`  ${f.path} has ${st.size} bytes, the Hub's version ${f.size}; downloading it again`);
    }
    todo.push(f);
  }

  if (opts.dryRun) {
    for (const f of todo) {
      result.files.push({ path: f.path, size: f.size, status: "planned" });
      progress.note(`  would download ${f.path} (${formatBytes(f.size)})`);
    }
    progress.note(`dry run: ${todo.length} file${todo.length === 1 ? "" : "s"} to download, ${result.files.length - todo.length} present`);
    return result;
  }

  // 4. The downloads, one file at a time.
  if (todo.length > 0) {
    const needed = todo.reduce((a, f) => a + f.size - Math.min(f.size, fileSize(path.join(dir, ...f.path.split("/")) + ".incomplete") ?? 0), 0);
    try {
      await fsp.mkdir(dir, { recursive: true });
      const sfs = await fsp.statfs(dir);
      const free = sfs.bavail * sfs.bsize;
      if (free < needed) progress.note(`warning: ${formatBytes(needed)} to download but only ${formatBytes(free)} free in ${dir}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOSYS") {
        if (!fs.existsSync(dir)) throw new PullError("io", `cannot create ${dir}: ${(e as Error).message}`, { cause: e });
      }
    }
    progress.begin(todo.length, todo.reduce((a, f) => a + f.size, 0));
  }
  const onAbort = () => http.abortAll(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (const f of todo) {
      if (opts.signal?.aborted) {
        throw new PullError("interrupted", `stopped before ${f.path}; run pull again to continue`);
      }
      const t0 = Date.now();
      const before = ctx.downloadedBytes;
      const status = await downloadOne(ctx, f);
      await manifest.record(f, path.join(dir, ...f.path.split("/")));
      const s = (Date.now() - t0) / 1000;
      const got = ctx.downloadedBytes - before;
      const check = f.expected.sha256 ? "sha256 ok" : f.expected.gitSha1 ? "git sha1 ok" : "size ok";
      progress.fileEnd(`  ${status === "resumed" ? "resumed and finished" : "done"} ${f.path} (${formatBytes(f.size)}, ${check}${s > 0.5 ? `, ${formatBytes(got / s)}/s` : ""})`);
      result.files.push({ path: f.path, size: f.size, status });
    }
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    progress.end();
    result.downloadedBytes = ctx.downloadedBytes;
  }
  result.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const fetched = result.files.filter((f) => f.status === "downloaded" || f.status === "resumed").length;
  progress.note(
    `${repo}: ${fetched} file${fetched === 1 ? "" : "s"} downloaded (${formatBytes(ctx.downloadedBytes)}), ${result.files.length - fetched} already present — ${dir}`,
  );
  return result;
}
