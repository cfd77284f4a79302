// A bounded load test: 1,000 submits at once to a `flux2 serve` child process
// on loopback. Every one must get an id, none a 5xx; the figures (submits/s,
// p50/p99 latency) are printed. The queued jobs are cancelled afterwards.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { api, serverUrl, spawnCli, stop, TINY, type Child } from "./helpers/net.js";
import { tempDir } from "./helpers/server.js";

const N = 1000;
let server: Child | undefined;

after(async () => {
  if (server) await stop(server);
});

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

test(`${N} concurrent submits: all get ids, no 5xx`, { timeout: 120_000 }, async () => {
  server = spawnCli(["serve", "--port", "0", "--data", tempDir("flux2-load-"), "--model", `flux-2-klein-4b=${TINY}`, "--threads", "1"]);
  const url = await serverUrl(server);
  const body = JSON.stringify({ prompt: "load test", width: 64, height: 64 });
  const deadline = AbortSignal.timeout(60_000);
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: N }, async () => {
    const start = performance.now();
    try {
      const res = await fetch(`${url}/v1/flux-2-klein-4b`, { method: "POST", headers: { "content-type": "application/json" }, body, signal: deadline });
      const json = (await res.json()) as { id?: string };
      return { status: res.status, id: json.id, ms: performance.now() - start };
    } catch (e) {
      return { status: 0, id: undefined, ms: performance.now() - start, error: (e as Error).message };
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  const failed = results.filter((r) => r.status !== 200);
  assert.equal(failed.length, 0, `failures: ${JSON.stringify(failed.slice(0, 3))}`);
  assert.ok(!results.some((r) => r.status >= 500));
  const ids = new Set(results.map((r) => r.id));
  assert.equal(ids.size, N, "every submit got its own id");
  const ms = results.map((r) => r.ms).sort((a, b) => a - b);
  const line = `load: ${N} concurrent submits in ${wall.toFixed(2)} s = ${(N / wall).toFixed(0)} submits/s; latency p50 ${percentile(ms, 50).toFixed(0)} ms, p99 ${percentile(ms, 99).toFixed(0)} ms, max ${ms[ms.length - 1].toFixed(0)} ms`;
  console.log(`# ${line}`);

  // The jobs are durable: all are listed. Cancel what has not run yet.
  const listed = (await api(url, "GET", "/v1/jobs?limit=200")).body.jobs;
  assert.equal(listed.length, 200);
  const cancels = await Promise.all([...ids].map((id) => api(url, "DELETE", `/v1/jobs/${id}`)));
  assert.ok(cancels.every((c) => c.status === 200 || c.status === 409), "cancel answers 200, or 409 for jobs already done");
  assert.ok(cancels.filter((c) => c.status === 200).length > N / 2, "most jobs were still queued");
});
