// The routes the studio adds (src/server/studio_routes.ts): the LoRA list, the gallery with its
// filters, hide and delete (files removed unless another job holds them), --cors, and the stage
// events (load, encode, denoise, decode) of a job's event stream.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { api, untilDone } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";
import { goldenPath } from "./golden.js";
import { corsFlag } from "../src/cli/serve.js";

const loraDir = tempDir();
fs.copyFileSync(goldenPath("lora/lora_kohya.safetensors"), path.join(loraDir, "style.safetensors"));
fs.copyFileSync(goldenPath("lora/lora_bfl.safetensors"), path.join(loraDir, "detail.safetensors"));
fs.writeFileSync(path.join(loraDir, "broken.safetensors"), "not a safetensors file");
const ORIGIN = "http://studio.example";
const server = testServer({ loraDir, corsOrigins: [ORIGIN] });
after(async () => (await server).close());
const MODEL = "flux-2-klein-4b";

async function make(prompt: string, extra: Record<string, unknown> = {}) {
  const s = await server;
  const sub = await api(s.url, "POST", `/v1/${MODEL}`, { prompt, width: 64, height: 64, seed: 1, ...extra });
  assert.equal(sub.status, 200, JSON.stringify(sub.body));
  const done = await untilDone(s.url, sub.body.id);
  assert.equal(done.status, "Ready", JSON.stringify(done));
  return sub.body.id as string;
}

test("GET /v1/loras lists the folder with format, rank, targets and size; an unreadable file says why", async () => {
  const s = await server;
  const r = await api(s.url, "GET", "/v1/loras");
  assert.equal(r.status, 200);
  assert.equal(r.body.max_loras, 8);
  const by = Object.fromEntries(r.body.loras.map((l: any) => [l.name, l]));
  assert.deepEqual(Object.keys(by), ["broken", "detail", "style"]);
  assert.equal(by.style.format, "kohya");
  assert.equal(by.detail.format, "ai-toolkit");
  assert.equal(by.style.size, fs.statSync(path.join(loraDir, "style.safetensors")).size);
  for (const l of [by.style, by.detail]) {
    assert.ok(Number.isInteger(l.rank) && l.rank > 0, JSON.stringify(l));
    assert.ok(l.weights > 0 && l.targets.length > 0, JSON.stringify(l));
    assert.ok(l.targets.every((t: string) => !/^\d|blocks\.\d/.test(t)), `module kinds, not per-block names: ${l.targets}`);
  }
  assert.equal(by.broken.format, "unreadable");
  assert.ok(by.broken.error);
});

test("the gallery filters by model, prompt words and date, hides and shows, and deletes a job with its files", async () => {
  const s = await server;
  const sharp = (await import("sharp")).default;
  // A white square on black (not the reference's bytes: each is its own file).
  const mask = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#000" } })
    .composite([{ input: { create: { width: 32, height: 32, channels: 3, background: "#fff" } }, left: 16, top: 16 }]).png().toBuffer();
  const a = await make("a red fox in the snow");
  const b = await make("a blue whale", { input_image: (await pngImage(64, 64)).toString("base64"), mask_image: mask.toString("base64") });
  const list = async (q: string) => (await api(s.url, "GET", `/v1/gallery${q}`)).body;
  assert.deepEqual((await list("?q=FOX%20snow")).jobs.map((j: any) => j.id), [a]);
  assert.deepEqual((await list("?q=fox%20whale")).jobs, []);
  assert.equal((await list(`?model=${MODEL}&limit=200`)).jobs.length >= 2, true);
  assert.deepEqual((await list("?model=other")).jobs, []);
  assert.deepEqual((await list(`?since=${Date.now() + 60_000}`)).jobs, []);
  assert.ok((await list("?since=2020-01-01")).jobs.some((j: any) => j.id === a));
  assert.equal((await api(s.url, "GET", "/v1/gallery?since=yesterday")).status, 422);

  // Hide: gone from the default view, listed with hidden=only / include.
  const hid = await api(s.url, "POST", `/v1/gallery/${a}/hide`, { hidden: true });
  assert.deepEqual(hid.body, { id: a, hidden: true });
  assert.ok(!(await list("?limit=200")).jobs.some((j: any) => j.id === a));
  assert.deepEqual((await list("?hidden=only")).jobs.map((j: any) => [j.id, j.hidden]), [[a, true]]);
  await api(s.url, "POST", `/v1/gallery/${a}/hide`, { hidden: false });
  assert.ok((await list("?limit=200")).jobs.some((j: any) => j.id === a && j.hidden === false));

  // Delete: the job and the files only it used (output, reference, mask) go.
  const job = (await api(s.url, "GET", `/v1/jobs/${b}`)).body;
  const names = [job.result.sample, job.request.input_image, job.request.mask_image].map((u: string) => u.split("/").pop()!);
  const file = (n: string) => path.join(s.dataDir, "images", n.slice(0, 2), n);
  assert.ok(names.every((n) => fs.existsSync(file(n))));
  const del = await api(s.url, "DELETE", `/v1/gallery/${b}`);
  assert.equal(del.status, 200, JSON.stringify(del.body));
  assert.equal(del.body.files_removed, 3);
  assert.ok(names.every((n) => !fs.existsSync(file(n))));
  assert.equal((await api(s.url, "GET", `/v1/jobs/${b}`)).status, 404);
  assert.equal((await fetch(job.result.sample)).status, 404);
  assert.equal((await api(s.url, "DELETE", `/v1/gallery/${b}`)).status, 404);

  // A file another job also holds stays (identical outputs share one content-addressed file).
  const c1 = await make("same", { seed: 5 });
  const c2 = await make("same", { seed: 5 });
  const sample = (await api(s.url, "GET", `/v1/jobs/${c2}`)).body.result.sample;
  assert.equal((await api(s.url, "DELETE", `/v1/gallery/${c1}`)).body.files_kept, 1);
  assert.equal((await fetch(sample)).status, 200);
});

test("x-flux2-batch: the jobs of one batch carry its id in the gallery; a malformed id is refused; delete forgets it", async () => {
  const s = await server;
  const sub = async (seed: number, headers: Record<string, string>) => api(s.url, "POST", `/v1/${MODEL}`, { prompt: "a batch of owls", width: 64, height: 64, seed }, headers);
  const ids: string[] = [];
  for (const seed of [7, 8]) {
    const r = await sub(seed, { "x-flux2-batch": "b-123_x" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    ids.push(r.body.id);
  }
  const alone = await sub(9, {});
  assert.equal(alone.status, 200);
  for (const id of [...ids, alone.body.id]) assert.equal((await untilDone(s.url, id)).status, "Ready");
  const bad = await sub(10, { "x-flux2-batch": "no spaces allowed" });
  assert.equal(bad.status, 400);
  assert.match(bad.body.detail, /x-flux2-batch/);
  const jobs = (await api(s.url, "GET", "/v1/gallery?q=owls")).body.jobs as any[];
  const batchOf = Object.fromEntries(jobs.map((j) => [j.id, j.batch]));
  assert.deepEqual(batchOf, { [ids[0]]: "b-123_x", [ids[1]]: "b-123_x", [alone.body.id]: null });
  assert.equal((await api(s.url, "DELETE", `/v1/gallery/${ids[0]}`)).status, 200);
  assert.equal(s.store.getMeta(`batch:${ids[0]}`), undefined, "the deleted job's batch tag is gone");
  assert.equal(s.store.getMeta(`batch:${ids[1]}`), "b-123_x");
});

test("an active job cannot be deleted, only cancelled", async () => {
  const s = await server;
  const sub = await api(s.url, "POST", `/v1/${MODEL}`, { prompt: "slow", width: 512, height: 512, seed: 2 });
  const r = await api(s.url, "DELETE", `/v1/gallery/${sub.body.id}`);
  // It may already have finished on a fast machine; otherwise the answer says to cancel first.
  if (r.status === 409) assert.match(r.body.detail, /cancel it first/);
  else assert.equal(r.status, 200);
  await api(s.url, "DELETE", `/v1/jobs/${sub.body.id}`);
});

test("--cors: preflight and responses allow the listed origin only", async () => {
  const s = await server;
  const pre = await fetch(`${s.url}/v1/jobs`, { method: "OPTIONS", headers: { origin: ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "x-key, content-type" } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), ORIGIN);
  assert.match(pre.headers.get("access-control-allow-headers") ?? "", /x-key/);
  assert.match(pre.headers.get("access-control-allow-headers") ?? "", /x-flux2-batch/, "the studio's batch header passes a preflight");
  const get = await fetch(`${s.url}/v1/models`, { headers: { origin: ORIGIN } });
  assert.equal(get.headers.get("access-control-allow-origin"), ORIGIN);
  const other = await fetch(`${s.url}/v1/models`, { headers: { origin: "http://evil.example" } });
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  assert.deepEqual(corsFlag(["https://a.example:8443"]), ["https://a.example:8443"]);
  assert.throws(() => corsFlag(["https://a.example/path"]), /origin/);
  assert.throws(() => corsFlag(["*"]), /origin/);
});

test("the event stream names the stages: load, encode, denoise steps, decode", async () => {
  const s = await server;
  // A LoRA set the executor has not built yet, so the "load" stage happens in this job.
  const id = (await api(s.url, "POST", `/v1/${MODEL}`, { prompt: "stages", width: 64, height: 64, seed: 3, loras: [{ name: "style", strength: 0.5 }] })).body.id;
  const text = await (await fetch(`${s.url}/v1/jobs/${id}/events`, { signal: AbortSignal.timeout(30_000) })).text();
  const stages = text.split("\n\n").filter((b) => b.startsWith("event: progress")).map((b) => JSON.parse(b.split("\n")[1].slice(6)))
    .map((p) => p.stage ?? `step ${p.step}/${p.steps}`);
  // The stream may open after the first events: what it shows is in order and ends with the decode.
  const order = ["load", "encode", "denoise", "step 1/4", "step 2/4", "step 3/4", "step 4/4", "decode"];
  const seen = stages.filter((x) => order.includes(x));
  assert.deepEqual(seen, order.slice(order.length - seen.length), text.slice(0, 400));
  assert.equal(seen[seen.length - 1], "decode");
});
