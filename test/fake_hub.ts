// A fake Hugging Face Hub on 127.0.0.1 (random port) for the `flux2 pull`
// tests. It answers exactly what @huggingface/hub asks on that code path:
//
//   GET  /api/models/{owner}/{name}/tree/{rev}[/{path}]?recursive=&expand=[&cursor=]
//        listFiles: JSON array of {type, oid, size, path[, lfs{oid,size,pointerSize}]},
//        paginated with a `Link: <…>; rel="next"` header (pageSize knob)
//   GET|HEAD /{owner}/{name}/resolve/{rev}/{path}
//        fileDownloadInfo's probe (Range: bytes=0-0) and WebBlob's reads: plain files are served
//        here (200, or 206 with Content-Range), LFS files answer 302 → /cdn/{sha256}?sig=… with
//        X-Linked-Size / X-Linked-ETag, like the real Hub's redirect to its CDN
//   GET|HEAD /cdn/{sha256}
//        the "CDN": LFS content with Range support (206 / 416), no auth (a presigned URL)
//
// Errors carry the Hub's headers: 404 X-Error-Code RepoNotFound / RevisionNotFound /
// EntryNotFound, 401/403 X-Error-Code GatedRepo with a JSON {"error": …} body.
//
// Knobs (plain fields, change them between requests): failOnce (close the socket after
// N body bytes, once), corrupt (flip a byte of the served content), stall (send N bytes,
// then nothing), ignoreRange (answer 200 with the whole file), pageSize, and per repo
// `gated` (accepted tokens). Every request is logged in `requests`.

import * as http from "node:http";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";

export interface FakeFileSpec {
  path: string;
  content: Buffer;
  /** Stored with Git LFS: listed with lfs.oid (sha256), served through the CDN redirect. */
  lfs?: boolean;
}

interface FakeFile extends FakeFileSpec {
  sha256: string;
  gitOid: string;
}

export interface FakeRepo {
  files: Map<string, FakeFile>;
  /** Accepted tokens; undefined: a public repository. */
  gated?: Set<string>;
  revisions: Set<string>;
}

export interface LoggedRequest {
  method: string;
  url: string;
  range: string | null;
  authorization: string | null;
}

function gitBlobOid(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.byteLength}\0`).update(content).digest("hex");
}

function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly requests: LoggedRequest[] = [];
  /** path → bytes of body to send before closing the socket (applies once, to a content request). */
  readonly failOnce = new Map<string, number>();
  /** paths served with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** path → bytes of body to send, then stall (never finish) — for idle timeouts. */
  readonly stall = new Map<string, number>();
  /** Answer ranged content requests (not the bytes=0-0 probe) with 200 and the whole file. */
  ignoreRange = false;
  /** Entries per page of the tree listing. */
  pageSize = 100;

  private constructor(private readonly server: http.Server, readonly url: string) {}

  static async start(): Promise<FakeHub> {
    const server = http.createServer();
    server.keepAliveTimeout = 2000;
    server.requestTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const hub = new FakeHub(server, `http://127.0.0.1:${port}`);
    server.on("request", (req, res) => {
      try {
        hub.handle(req, res);
      } catch (e) {
        res.statusCode = 500;
        res.end(String(e));
      }
    });
    return hub;
  }

  addRepo(id: string, files: FakeFileSpec[], opts: { gated?: string[]; revisions?: string[] } = {}): FakeRepo {
    const repo: FakeRepo = {
      files: new Map(),
      gated: opts.gated ? new Set(opts.gated) : undefined,
      revisions: new Set(opts.revisions ?? ["main"]),
    };
    for (const f of files) this.setFile(repo, f);
    this.repos.set(id, repo);
    return repo;
  }

  /** Add or replace a file (e.g. to simulate a new commit). */
  setFile(repo: FakeRepo, f: FakeFileSpec): void {
    const sha256 = createHash("sha256").update(f.content).digest("hex");
    const gitOid = f.lfs ? gitBlobOid(Buffer.from(lfsPointer(sha256, f.content.byteLength))) : gitBlobOid(f.content);
    repo.files.set(f.path, { ...f, sha256, gitOid });
  }

  /** Requests whose URL contains `fragment`. */
  requestsFor(fragment: string): LoggedRequest[] {
    return this.requests.filter((r) => r.url.includes(fragment));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  private error(res: http.ServerResponse, status: number, code: string, message: string): void {
    this.json(res, status, { error: message }, { "X-Error-Code": code, "X-Error-Message": message });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", this.url);
    this.requests.push({
      method: req.method ?? "",
      url: req.url ?? "",
      range: req.headers.range ?? null,
      authorization: req.headers.authorization ?? null,
    });
    const parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
    if (req.method !== "GET" && req.method !== "HEAD") return this.error(res, 405, "MethodNotAllowed", "method not allowed");

    // GET /api/models/{owner}/{name}/tree/{rev}[/{path}]
    if (parts[0] === "api" && parts[1] === "models" && parts[4] === "tree" && parts.length >= 6) {
      const repoId = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(repoId);
      if (!repo) return this.error(res, 404, "RepoNotFound", "Repository not found");
      const rev = parts[5];
      if (!repo.revisions.has(rev)) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      const prefix = parts.slice(6).join("/");
      const recursive = url.searchParams.get("recursive") === "true";
      const entries = this.treeEntries(repo, prefix, recursive);
      const cursor = Number(url.searchParams.get("cursor") ?? "0");
      const page = entries.slice(cursor, cursor + this.pageSize);
      const headers: Record<string, string> = {};
      if (cursor + this.pageSize < entries.length) {
        const next = new URL(url);
        next.searchParams.set("cursor", String(cursor + this.pageSize));
        headers.Link = `<${next.href}>; rel="next"`;
      }
      return this.json(res, 200, page, headers);
    }

    // GET|HEAD /{owner}/{name}/resolve/{rev}/{path}
    if (parts[2] === "resolve" && parts.length >= 5) {
      const repoId = `${parts[0]}/${parts[1]}`;
      const repo = this.repos.get(repoId);
      if (!repo) return this.error(res, 404, "RepoNotFound", "Repository not found");
      if (repo.gated) {
        const auth = req.headers.authorization;
        const token = auth?.startsWith("Bearer ") ? auth.slice(7) : null;
        if (!token) {
          return this.error(res, 401, "GatedRepo", `Access to model ${repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
        }
        if (!repo.gated.has(token)) {
          return this.error(res, 403, "GatedRepo", `Access to model ${repoId} is restricted and you are not in the authorized list. Visit ${this.url}/${repoId} to ask for access.`);
        }
      }
      const rev = parts[3];
      if (!repo.revisions.has(rev)) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      const file = repo.files.get(parts.slice(4).join("/"));
      if (!file) return this.error(res, 404, "EntryNotFound", "Entry not found");
      if (file.lfs) {
        res.writeHead(302, {
          Location: `/cdn/${file.sha256}?sig=fake&path=${encodeURIComponent(file.path)}`,
          "X-Linked-Size": String(file.content.byteLength),
          "X-Linked-ETag": `"${file.sha256}"`,
          ETag: `"${file.gitOid}"`,
          "Content-Length": 0,
        });
        return void res.end();
      }
      return this.serveContent(req, res, file, `"${file.gitOid}"`);
    }

    // GET|HEAD /cdn/{sha256}
    if (parts[0] === "cdn" && parts.length === 2) {
      for (const repo of this.repos.values()) {
        for (const f of repo.files.values()) {
          if (f.lfs && f.sha256 === parts[1]) return this.serveContent(req, res, f, `"${f.sha256}"`);
        }
      }
      return this.error(res, 404, "NotFound", "no such object");
    }
    return this.error(res, 404, "NotFound", `no route for ${url.pathname}`);
  }

  private treeEntries(repo: FakeRepo, prefix: string, recursive: boolean): unknown[] {
    const dirs = new Set<string>();
    const out: unknown[] = [];
    const base = prefix ? prefix + "/" : "";
    for (const f of [...repo.files.values()].sort((a, b) => (a.path < b.path ? -1 : 1))) {
      if (!f.path.startsWith(base)) continue;
      const rest = f.path.slice(base.length);
      const segs = rest.split("/");
      for (let i = 1; i < segs.length; i++) {
        if (!recursive && i > 1) break;
        dirs.add(base + segs.slice(0, i).join("/"));
      }
      if (!recursive && segs.length > 1) continue;
      const size = f.content.byteLength;
      out.push({
        type: "file",
        oid: f.gitOid,
        size,
        ...(f.lfs && { lfs: { oid: f.sha256, size, pointerSize: Buffer.byteLength(lfsPointer(f.sha256, size)) } }),
        path: f.path,
      });
    }
    const dirEntries = [...dirs].sort().map((d) => ({ type: "directory", oid: createHash("sha1").update(d).digest("hex"), size: 0, path: d }));
    return [...dirEntries, ...out];
  }

  private serveContent(req: http.IncomingMessage, res: http.ServerResponse, file: FakeFile, etag: string): void {
    let content = file.content;
    if (this.corrupt.has(file.path) && content.byteLength > 0) {
      content = Buffer.from(content);
      content[content.byteLength >> 1] ^= 0xff;
    }
    const size = content.byteLength;
    let start = 0;
    let end = size - 1;
    let partial = false;
    const range = req.headers.range;
    if (range && !(this.ignoreRange && range !== "bytes=0-0")) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range);
      if (m) {
        if (m[1] === "") {
          start = Math.max(0, size - Number(m[2]));
        } else {
          start = Number(m[1]);
          if (m[2] !== "") end = Math.min(Number(m[2]), size - 1);
        }
        if (start >= size || start > end) {
          res.writeHead(416, { "Content-Range": `bytes */${size}`, "Content-Length": 0 });
          return void res.end();
        }
        partial = true;
      }
    }
    const body = content.subarray(start, end + 1);
    const headers: Record<string, string | number> = {
      "Content-Type": "application/octet-stream",
      "Content-Length": body.byteLength,
      "Accept-Ranges": "bytes",
      ETag: etag,
    };
    if (partial) headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
    res.writeHead(partial ? 206 : 200, headers);
    if (req.method === "HEAD") return void res.end();
    // Probes (Range: bytes=0-0) never trip the failure knobs; content requests do.
    const cut = body.byteLength > 1 ? this.failOnce.get(file.path) : undefined;
    if (cut !== undefined) {
      this.failOnce.delete(file.path);
      res.write(body.subarray(0, Math.min(cut, body.byteLength)), () => res.socket?.destroy());
      return;
    }
    const stallAt = body.byteLength > 1 ? this.stall.get(file.path) : undefined;
    if (stallAt !== undefined) {
      res.write(body.subarray(0, Math.min(stallAt, body.byteLength)));
      return; // never ends; close() cuts it
    }
    res.end(body);
  }
}

/** A port on 127.0.0.1 that nothing listens on (for connection-refused tests). */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
