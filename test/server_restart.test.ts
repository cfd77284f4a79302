// Crash recovery of the embedded queue: `flux2 serve` runs as a child process
// and is killed with SIGKILL in the middle of a job, then restarted on the
// same data folder. Every job must end Ready exactly once (the interrupted one
// retried once, the queued ones run, nothing lost or run twice); a job
// interrupted on both of its attempts ends in Error instead of looping.
import { test, afterEach, beforeEach } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { api, serverUrl, spawnCli, stop, untilDone, waitFor, type Child } from "./helpers/net.js";
import { goldenPath } from "./golden.js";
import { tempDir } from "./helpers/server.js";

// klein base (CFG, steps chosen per job), so a job lasts long enough to be caught mid-run on a fast
// idle machine as well as on a loaded one: distilled klein's 4 steps can finish between two polls.
const BASE = goldenPath("checkpoints/klein_base");
const children: Child[] = [];
// Each test has its own data folder, and its servers are stopped when it ends: a server left from
// an earlier test on the same folder would claim this test's jobs (it did, and the test waited for
// progress that the other process made).
let dir = "";

async function start(): Promise<string> {
  const c = spawnCli(["serve", "--port", "0", "--data", dir, "--model", `flux-2-klein-4b=${BASE}`, "--threads", "1"]);
  children.push(c);
  return serverUrl(c);
}

async function kill9(): Promise<void> {
  const c = children[children.length - 1];
  c.proc.kill("SIGKILL");
  await c.exited;
}

/** Wait until the job is running and has done at least one step. */
async function midJob(url: string, id: string): Promise<void> {
  let last = "";
  await waitFor(`job ${id} to be mid-run`, async () => {
    const r = (await api(url, "GET", `/v1/get_result?id=${id}`)).body;
    if (r.status !== "Pending") throw new Error(`job ended before it could be interrupted: ${JSON.stringify(r)}`);
    last = `${r.flux2.state}, progress ${r.progress}`;
    return r.flux2.state === "running" && r.progress > 0;
  }, 30_000, 10).catch((e) => {
    const c = children[children.length - 1];
    throw new Error(`${(e as Error).message}; last seen: ${last}; server output:\n${c.out.slice(-20).join("\n")}`);
  });
}

function storedImages(): string[] {
  const root = path.join(dir, "images");
  return fs.readdirSync(root, { recursive: true }).map(String).filter((f) => /\.png$/.test(f));
}

beforeEach(() => {
  dir = tempDir("flux2-restart-");
});

afterEach(async () => {
  for (const c of children.splice(0)) await stop(c);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("kill -9 mid-job: after a restart every job ends Ready exactly once", { timeout: 120_000 }, async () => {
  let url = await start();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    // Only job 1 is interrupted, so only it needs to last (about 3 s at 192², 12 steps with CFG on a
    // 2-vCPU Zen 3); the others are small, so the test spends its time on the crash and not on denoising.
    const size = i === 1 ? { width: 192, height: 192, steps: 12 } : { width: 64, height: 64, steps: 2 };
    const r = await api(url, "POST", "/v1/flux-2-klein-4b", { prompt: `restart ${i}`, ...size, seed: 1000 + i });
    assert.equal(r.status, 200);
    ids.push(r.body.id);
  }
  await midJob(url, ids[1]);
  await kill9();
  const before = storedImages().length;
  assert.ok(before <= 1, `${before} images before the crash`);

  url = await start();
  const results = [];
  for (const id of ids) results.push(await untilDone(url, id, {}, 60_000));
  for (const r of results) assert.equal(r.status, "Ready", JSON.stringify(r));

  const jobs = (await api(url, "GET", "/v1/jobs?limit=100")).body.jobs;
  assert.equal(jobs.length, 5);
  assert.deepEqual(new Set(jobs.map((j: any) => j.id)), new Set(ids));
  const attempts = Object.fromEntries(jobs.map((j: any) => [j.id, j.attempts]));
  assert.equal(attempts[ids[0]], 1);
  assert.equal(attempts[ids[1]], 2, "the interrupted job ran a second time");
  for (const id of ids.slice(2)) assert.equal(attempts[id], 1, "queued jobs ran once");
  // One image per job (distinct seeds), none twice: the retried run produced the same file.
  const samples = results.map((r) => r.result.sample);
  assert.equal(new Set(samples).size, 5);
  assert.equal(storedImages().length, 5);
  for (const s of samples) assert.equal((await fetch(s)).status, 200);
});

test("a job interrupted on both attempts ends in Error; the queue goes on", { timeout: 120_000 }, async () => {
  let url = await start();
  const id = (await api(url, "POST", "/v1/flux-2-klein-4b", { prompt: "doomed", width: 256, height: 256, seed: 7, steps: 40 })).body.id;
  const next = (await api(url, "POST", "/v1/flux-2-klein-4b", { prompt: "next", width: 64, height: 64, seed: 8, steps: 2 })).body.id;
  await midJob(url, id);
  await kill9();
  url = await start();
  await midJob(url, id);
  await kill9();
  url = await start();
  const r = await untilDone(url, id, {}, 30_000);
  assert.equal(r.status, "Error");
  assert.match(r.details.error, /interrupted 2 times/);
  assert.equal((await untilDone(url, next, {}, 30_000)).status, "Ready");
});

test("SIGTERM: the running job goes back to the queue without using up an attempt", { timeout: 150_000 }, async () => {
  let url = await start();
  const id = (await api(url, "POST", "/v1/flux-2-klein-4b", { prompt: "graceful", width: 192, height: 192, seed: 9, steps: 16 })).body.id;
  await midJob(url, id);
  const c = children[children.length - 1];
  const t0 = Date.now();
  c.proc.kill("SIGTERM");
  assert.equal(await c.exited, 0);
  assert.ok(Date.now() - t0 < 10_000, `shutdown took ${Date.now() - t0} ms`);
  url = await start();
  const r = await untilDone(url, id, {}, 90_000);
  assert.equal(r.status, "Ready");
  assert.equal((await api(url, "GET", `/v1/jobs/${id}`)).body.attempts, 1);
});
