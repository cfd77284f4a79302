// The smaller server defects of issue 16, each with its hostile case: the auth hook
// on encoded paths, repeated query ids, the Host header, --public-url, masks of the
// wrong size, and Idempotency-Key on submits (persisted across a restart).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { createKey } from "../src/server/auth.js";
import { api, untilDone } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

const MODEL = "/v1/flux-2-klein-4b";

/** A raw GET with any Host header (fetch does not let a caller choose it). */
function getWithHost(url: string, p: string, host: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: u.hostname, port: u.port, path: p, method: "POST", headers: { host, "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || "null") }));
    });
    req.on("error", reject);
    req.end(JSON.stringify({ prompt: "host check", width: 64, height: 64 }));
  });
}

describe("auth on decoded paths, fail closed, no existence leak", () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  let mine = "", theirs = "";
  before(async () => {
    s = await testServer({ requireKeys: true });
    mine = createKey(s.store, "mine", null).key;
    theirs = createKey(s.store, "theirs", null).key;
  });
  after(async () => s?.close());

  test("/%761/jobs/ID is checked like /v1/jobs/ID; a job of another key looks exactly like no job", async () => {
    const id = (await api(s.url, "POST", MODEL, { prompt: "private", width: 64, height: 64 }, { "x-key": mine })).body.id;
    assert.match(id, /^[0-9a-f-]{36}$/);
    for (const p of [`/%761/jobs/${id}`, `/v%31/jobs/${id}`, `/%76%31/jobs/${id}/events`, `/%761/get_result?id=${id}`, `/%761/jobs`]) {
      const r = await api(s.url, "GET", p);
      assert.equal(r.status, 401, `${p}: ${JSON.stringify(r.body)}`);
      assert.equal(r.headers.get("www-authenticate"), "x-key");
    }
    assert.equal((await api(s.url, "DELETE", `/%761/jobs/${id}`)).status, 401);
    // Another key: the existing job and a made-up id give the same answer.
    const other = await api(s.url, "GET", `/%761/jobs/${id}`, undefined, { "x-key": theirs });
    const none = await api(s.url, "GET", `/%761/jobs/00000000-0000-0000-0000-000000000000`, undefined, { "x-key": theirs });
    assert.equal(other.status, 404);
    assert.deepEqual(other.body, none.body);
    assert.equal((await api(s.url, "GET", `/%761/jobs/${id}`, undefined, { "x-key": mine })).status, 200);
    // Public routes stay public when encoded too.
    assert.equal((await api(s.url, "GET", "/%761/models")).status, 200);
    assert.equal((await untilDone(s.url, id, { "x-key": mine })).status, "Ready");
  });

  test("get_result with the id twice → 400, not a 500", async () => {
    const r = await api(s.url, "GET", "/v1/get_result?id=a&id=b", undefined, { "x-key": mine });
    assert.equal(r.status, 400);
    assert.match(r.body.detail, /one id; 2 were given/);
  });
});

describe("returned URLs never echo the Host header", () => {
  test("default: the listen address; --public-url: that base", async () => {
    const s = await testServer();
    try {
      const r = await getWithHost(s.url, MODEL, "evil.example:666");
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.polling_url, `${s.url}/v1/get_result?id=${r.body.id}`);
      const done = await untilDone(s.url, r.body.id);
      assert.ok(done.result.sample.startsWith(`${s.url}/v1/images/`), done.result.sample);
    } finally {
      await s.close();
    }
    const p = await testServer({ publicUrl: "https://flux.example.com/api" });
    try {
      const r = await getWithHost(p.url, MODEL, "evil.example");
      assert.equal(r.body.polling_url, `https://flux.example.com/api/v1/get_result?id=${r.body.id}`);
      assert.ok((await untilDone(p.url, r.body.id)).result.sample.startsWith("https://flux.example.com/api/v1/images/"));
    } finally {
      await p.close();
    }
  });
});

describe("submit checks", () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  const dataDir = tempDir();
  before(async () => {
    s = await testServer({ dataDir });
  });
  after(async () => s?.close());

  test("a mask of the wrong size is refused at submit (422), and nothing is stored", async () => {
    const before = fs.readdirSync(path.join(dataDir, "images"), { recursive: true }).length;
    const r = await api(s.url, "POST", MODEL, {
      prompt: "repaint", input_image: (await pngImage(80, 64)).toString("base64"), mask_image: (await pngImage(64, 64)).toString("base64"),
    });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.deepEqual(r.body.detail[0].loc, ["body", "mask_image"]);
    assert.match(r.body.detail[0].msg, /the mask is 64×64 but input_image is 80×64/);
    assert.equal(fs.readdirSync(path.join(dataDir, "images"), { recursive: true }).length, before);
  });

  test("Idempotency-Key: the same key gives the same job, also after a restart; a different request with it → 422", async () => {
    const body = { prompt: "once only", width: 64, height: 64, seed: 3 };
    const h = { "idempotency-key": "retry-7f3a" };
    const [a, b] = await Promise.all([api(s.url, "POST", MODEL, body, h), api(s.url, "POST", MODEL, body, h)]);
    assert.equal(a.status, 200);
    assert.equal(b.body.id, a.body.id);
    assert.equal((await untilDone(s.url, a.body.id)).status, "Ready");
    const c = await api(s.url, "POST", MODEL, body, h);
    assert.equal(c.body.id, a.body.id);
    assert.equal(c.body.polling_url, a.body.polling_url);
    // Without a key, or with another key, it is a new job.
    assert.notEqual((await api(s.url, "POST", MODEL, body)).body.id, a.body.id);
    assert.notEqual((await api(s.url, "POST", MODEL, body, { "idempotency-key": "other" })).body.id, a.body.id);
    const changed = await api(s.url, "POST", MODEL, { ...body, seed: 4 }, h);
    assert.equal(changed.status, 422);
    assert.match(changed.body.detail, /already used for a different request/);
    assert.equal((await api(s.url, "POST", MODEL, body, { "idempotency-key": "" })).status, 400);
    assert.equal((await api(s.url, "POST", MODEL, body, { "idempotency-key": "x".repeat(256) })).status, 400);
    const jobs = (await api(s.url, "GET", "/v1/jobs?limit=200")).body.jobs.filter((j: any) => j.result?.prompt === "once only" || j.id === a.body.id);
    assert.equal(jobs.filter((j: any) => j.id === a.body.id).length, 1);

    // Documented in the OpenAPI document.
    const doc = (await api(s.url, "GET", "/openapi.json")).body;
    assert.ok(doc.paths[MODEL].post.parameters.some((p: any) => p.name === "Idempotency-Key" && p.in === "header"));

    // Persisted: a restarted server still answers the key with the first job.
    await s.close();
    s = await testServer({ dataDir });
    assert.equal((await api(s.url, "POST", MODEL, body, h)).body.id, a.body.id);
  });
});
