// GET /v1/files/<model>/… (src/server/files.ts): a local model's files for the in-browser engine,
// with HTTP Range support, and nothing outside the model's folder.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../src/server/app.js";
import { defaultConfig } from "../src/server/config.js";
import { listModelFiles, parseRange, registerFiles } from "../src/server/files.js";
import { registerStatic } from "../src/server/static.js";
import Fastify from "fastify";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const GOLDEN = path.join(ROOT, "testdata/golden/checkpoints/klein_distilled");

describe("model files over HTTP", () => {
  let dir: string;
  let dataDir: string;
  let server: { url: string; close: () => Promise<void> };

  before(async () => {
    // A copy of the tiny checkpoint plus a hidden file that must never be served.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-files-"));
    fs.cpSync(GOLDEN, dir, { recursive: true });
    fs.writeFileSync(path.join(dir, ".secret"), "do not serve");
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-files-data-"));
    server = await startServer(defaultConfig({ host: "127.0.0.1", port: 0, dataDir, models: [{ id: "tiny", dir }] }), () => undefined);
  });

  after(async () => {
    await server?.close();
    for (const d of [dir, dataDir]) fs.rmSync(d, { recursive: true, force: true });
  });

  it("parses single byte ranges and refuses the rest", () => {
    assert.deepEqual(parseRange(undefined, 100), undefined);
    assert.deepEqual(parseRange("bytes=0-9", 100), [0, 9]);
    assert.deepEqual(parseRange("bytes=90-", 100), [90, 99]);
    assert.deepEqual(parseRange("bytes=95-200", 100), [95, 99]);
    assert.deepEqual(parseRange("bytes=-10", 100), [90, 99]);
    for (const bad of ["bytes=100-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=-0", "bytes=-"]) assert.equal(parseRange(bad, 100), null, bad);
  });

  it("lists the model folder's files with sizes, hidden files left out", async () => {
    const res = await fetch(`${server.url}/v1/files/tiny/files.json`);
    assert.equal(res.status, 200);
    const body = await res.json() as { model: string; files: { path: string; size: number; version: string }[] };
    assert.equal(body.model, "tiny");
    assert.deepEqual(body.files, listModelFiles(dir));
    const paths = body.files.map((f) => f.path);
    assert.ok(paths.includes("transformer/config.json") && paths.includes("model_index.json"), paths.join(", "));
    assert.ok(!paths.some((p) => p.startsWith(".") || p.includes("/.")), "no hidden files");
    const st = fs.statSync(path.join(dir, "transformer/config.json"));
    assert.equal(body.files.find((f) => f.path === "transformer/config.json")!.size, st.size);
  });

  it("serves whole files and byte ranges (206 with Content-Range), and 416 for a range past the end", async () => {
    const file = body("vae/config.json");
    const whole = await fetch(`${server.url}/v1/files/tiny/vae/config.json`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get("accept-ranges"), "bytes");
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), file);
    const etag = whole.headers.get("etag");
    assert.match(etag ?? "", /^"\d+-\d+"$/);
    assert.equal((await fetch(`${server.url}/v1/files/tiny/vae/config.json`, { headers: { "if-none-match": etag! } })).status, 304, "revalidation with the ETag");
    const part = await fetch(`${server.url}/v1/files/tiny/vae/config.json`, { headers: { range: "bytes=5-14" } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 5-14/${file.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), file.subarray(5, 15));
    const past = await fetch(`${server.url}/v1/files/tiny/vae/config.json`, { headers: { range: `bytes=${file.length}-` } });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get("content-range"), `bytes */${file.length}`);
    assert.match(((await past.json()) as { detail: string }).detail, /not satisfiable/);
  });

  it("serves nothing outside the model folder, no hidden file, and no unknown model", async () => {
    for (const p of ["/v1/files/tiny/.secret", "/v1/files/tiny/%2e%2e/%2e%2e/etc/passwd", "/v1/files/tiny/..%2f..%2fpackage.json", "/v1/files/tiny/transformer", "/v1/files/nope/files.json"]) {
      const res = await fetch(`${server.url}${p}`);
      assert.equal(res.status, 404, p);
      const text = await res.text();
      assert.ok(!text.includes("do not serve"), p);
    }
    const unknown = await (await fetch(`${server.url}/v1/files/nope/files.json`)).json() as { detail: string };
    assert.match(unknown.detail, /no model "nope".*GET \/v1\/models/);
  });

  function body(rel: string): Buffer {
    return fs.readFileSync(path.join(dir, rel));
  }
});

// WASM threads in "Run in this browser" need a cross-origin isolated page: the studio's files and
// the browser bundle (whose files ORT starts its thread Workers from) carry COOP + COEP.
describe("cross-origin isolation of the studio and the browser bundle", () => {
  it("sends Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: credentialless", async () => {
    const studio = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-studio-"));
    const bundle = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bundle-"));
    fs.mkdirSync(path.join(studio, "assets"));
    fs.writeFileSync(path.join(studio, "index.html"), "<!doctype html><p>studio</p>");
    fs.writeFileSync(path.join(studio, "assets", "app-1234.js"), "export {}");
    fs.writeFileSync(path.join(bundle, "flux2.js"), "export {}");
    const app = Fastify();
    registerFiles(app, { get: () => undefined } as never, bundle);
    registerStatic(app, studio);
    try {
      for (const url of ["/", "/index.html", "/assets/app-1234.js", "/browser/flux2.js"]) {
        const res = await app.inject({ method: "GET", url });
        assert.equal(res.statusCode, 200, url);
        assert.equal(res.headers["cross-origin-opener-policy"], "same-origin", url);
        assert.equal(res.headers["cross-origin-embedder-policy"], "credentialless", url);
      }
      // The API is not isolated (other origins' pages may read it with CORS): no COEP on /v1.
      const api = await app.inject({ method: "GET", url: "/v1/files/nope/files.json" });
      assert.equal(api.headers["cross-origin-embedder-policy"], undefined);
    } finally {
      await app.close();
      for (const d of [studio, bundle]) fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
