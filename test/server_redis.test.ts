// Scale-out through Redis (BullMQ): a real redis-server on loopback, one
// `flux2 serve --queue` and two `flux2 worker` child processes sharing a data
// folder, the real tiny model. 200 jobs are drained with none lost and none
// run twice; a worker killed mid-job has its job finished by the other one,
// recorded once.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { api, serverUrl, spawnCli, stop, TINY, untilDone, waitFor, type Child } from "./helpers/net.js";
import { redisAvailable, startRedis, type TestRedis } from "./helpers/redis.js";
import { tempDir } from "./helpers/server.js";
import { RespClient } from "../src/server/redis_resp.js";

const MODEL = "flux-2-klein-4b";

function events(c: Child, kind: string): { id: string; worker: string; attempt: number }[] {
  return c.out.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((e) => e.event === kind);
}

describe("redis queue with two workers", { skip: redisAvailable() ? false : "redis-server is not installed", timeout: 180_000 }, () => {
  let redis: TestRedis;
  let server: Child;
  let workers: Child[] = [];
  let url = "";
  const dir = tempDir("flux2-redis-");

  const startWorker = (name: string) => spawnCli(["worker", "--queue", redis.url, "--model", `${MODEL}=${TINY}`, "--data", dir, "--threads", "1", "--lock", "2", "--name", name]);

  before(async () => {
    redis = await startRedis();
    server = spawnCli(["serve", "--port", "0", "--data", dir, "--queue", redis.url]);
    url = await serverUrl(server);
    workers = [startWorker("w0"), startWorker("w1")];
    for (const w of workers) await waitFor("a worker to be ready", () => events(w, "ready").length > 0 || (w.proc.exitCode !== null && Promise.reject(new Error(w.err.join("\n")))), 30_000);
    // The server learns the model from the workers' adverts.
    await waitFor("the model to be advertised", async () => (await api(url, "GET", "/v1/models")).body.models.some((m: any) => m.id === MODEL && m.available), 15_000);
  });

  after(async () => {
    for (const w of workers) await stop(w);
    if (server) await stop(server);
    await redis?.stop();
  });

  test("200 jobs on 2 workers: every job Ready, each run exactly once", async () => {
    const started = Date.now();
    const subs = await Promise.all(Array.from({ length: 200 }, (_, i) => api(url, "POST", `/v1/${MODEL}`, { prompt: `job ${i}`, width: 64, height: 64, seed: i })));
    for (const s of subs) assert.equal(s.status, 200, JSON.stringify(s.body));
    const ids = subs.map((s) => s.body.id as string);
    const jobs = await waitFor("200 jobs to finish", async () => {
      const list = (await api(url, "GET", "/v1/jobs?limit=200")).body.jobs as any[];
      return list.length === 200 && list.every((j) => j.status !== "Pending") ? list : null;
    }, 120_000, 250);
    const elapsed = (Date.now() - started) / 1000;
    for (const j of jobs) assert.equal(j.status, "Ready", JSON.stringify(j));
    assert.deepEqual(new Set(jobs.map((j) => j.id)), new Set(ids));

    // Each job ran once, on one of the two workers.
    const done = workers.flatMap((w) => events(w, "done"));
    const runs = new Map<string, number>();
    for (const d of done) runs.set(d.id, (runs.get(d.id) ?? 0) + 1);
    for (const id of ids) assert.equal(runs.get(id), 1, `job ${id} ran ${runs.get(id) ?? 0} times`);
    assert.equal(done.length, 200);
    const perWorker = workers.map((w) => events(w, "done").length);
    assert.ok(perWorker.every((n) => n > 0), `both workers took jobs: ${perWorker}`);
    assert.ok(workers.flatMap((w) => events(w, "start")).every((e) => e.attempt === 1));

    // 200 distinct images in the shared store, each served by the server.
    const samples = new Set(jobs.map((j) => j.result.sample));
    assert.equal(samples.size, 200);
    const files = fs.readdirSync(path.join(dir, "images"), { recursive: true }).map(String).filter((f) => f.endsWith(".png"));
    assert.equal(files.length, 200);
    assert.equal((await fetch([...samples][0])).status, 200);
    console.log(`# redis: 200 jobs on 2 workers in ${elapsed.toFixed(1)} s (${perWorker.join(" + ")})`);
  });

  test("a worker killed mid-job: the other finishes it, the result is recorded once", async () => {
    const id = (await api(url, "POST", `/v1/${MODEL}`, { prompt: "survivor", width: 320, height: 320, seed: 99 })).body.id;
    const victim = await waitFor("the job to start", () => workers.find((w) => events(w, "start").some((e) => e.id === id)), 20_000, 10);
    victim.proc.kill("SIGKILL");
    await victim.exited;
    const r = await untilDone(url, id, {}, 60_000);
    assert.equal(r.status, "Ready", JSON.stringify(r));
    const survivor = workers.find((w) => w !== victim)!;
    assert.equal(events(survivor, "done").filter((e) => e.id === id).length, 1);
    assert.equal(events(victim, "done").filter((e) => e.id === id).length, 0);
    const job = (await api(url, "GET", `/v1/jobs/${id}`)).body;
    assert.equal(job.state, "ready");
    // Restart the victim so `after` stops a live process set.
    workers = [survivor, startWorker("w2")];
  });

  test("cancel through Redis: a waiting job is removed, a running one stops", async () => {
    const slow = { prompt: "slow", width: 384, height: 384 };
    const a = (await api(url, "POST", `/v1/${MODEL}`, { ...slow, seed: 1 })).body.id;
    const b = (await api(url, "POST", `/v1/${MODEL}`, { ...slow, seed: 2 })).body.id;
    const c = (await api(url, "POST", `/v1/${MODEL}`, { ...slow, seed: 3 })).body.id;
    await waitFor("a job to run", async () => (await api(url, "GET", `/v1/get_result?id=${a}`)).body.flux2.state === "running", 20_000);
    for (const id of [a, b, c]) assert.equal((await api(url, "DELETE", `/v1/jobs/${id}`)).status, 200);
    const next = await untilDone(url, (await api(url, "POST", `/v1/${MODEL}`, { prompt: "after", width: 64, height: 64 })).body.id, {}, 30_000);
    assert.equal(next.status, "Ready");
    for (const id of [a, b, c]) assert.equal((await api(url, "GET", `/v1/jobs/${id}`)).body.state, "cancelled");
    const finished = workers.flatMap((w) => events(w, "done")).map((e) => e.id);
    assert.ok(![a, b, c].some((id) => finished.includes(id)), "no cancelled job completed");
  });
});

describe("RESP client", { skip: redisAvailable() ? false : "redis-server is not installed" }, () => {
  test("replies of every type, binary-safe arguments, errors, and reconnecting after a Redis restart", async () => {
    let redis = await startRedis();
    const c = new RespClient(redis.url, { autoReconnect: true });
    try {
      await c.connect();
      assert.equal(await c.send("PING"), "PONG");
      assert.equal(await c.send("SET", ["k", Buffer.from([0xe2, 0x82, 0xac])]), "OK");
      assert.equal(await c.send("GET", ["k"]), "€");
      assert.equal(await c.send("GET", ["missing"]), null);
      assert.equal(await c.send("INCR", ["n"]), 1);
      await c.send("RPUSH", ["l", "a", "b"]);
      assert.deepEqual(await c.send("LRANGE", ["l", 0, -1]), ["a", "b"]);
      assert.deepEqual(await Promise.all([c.send("INCR", ["n"]), c.send("INCR", ["n"]), c.send("INCR", ["n"])]), [2, 3, 4]); // pipelined, in order
      await assert.rejects(c.send("INCR", ["l"]), /WRONGTYPE/);
      const port = redis.port;
      await redis.stop();
      await assert.rejects(c.send("PING"), /Connection closed|cannot reach/);
      redis = await startRedis(port);
      assert.equal(await c.send("PING"), "PONG");
    } finally {
      c.close();
      await redis.stop();
    }
  });
});
