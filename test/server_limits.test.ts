// Budgets, cancellation, shutdown, timeouts and event-stream bounds of
// `flux2 serve` (issue 16, items 1 and 3), against the hostile cases that used
// to work: huge inputs that held the generation thread, cancels that did not
// reach preprocessing, slow clients holding connections, and event streams
// that multiplied preview memory.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import sharp from "sharp";
import { resizeLanczos } from "../src/pipeline/resize.js";
import { MemoryBudget, plannedModelPeak, planMemoryBudget } from "../src/server/budget.js";
import { ApiError } from "../src/server/errors.js";
import { JobEvents, type JobEvent } from "../src/server/events.js";
import { EventStreams, progressFrame } from "../src/server/sse.js";
import { JobStore } from "../src/server/store.js";
import { api, serverUrl, sleep, spawnCli, stop, TINY, waitFor, type Child } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;
const MODEL = "/v1/flux-2-klein-4b";

/** A flat 8000×8000 PNG: about 200 KB to send, 64 MP (192 MB) to decode, seconds to shrink. */
let hugePng: Buffer;
async function huge(): Promise<string> {
  hugePng ??= await sharp({ create: { width: 8000, height: 8000, channels: 3, background: "#808080" } }).png().toBuffer();
  return hugePng.toString("base64");
}

const state = async (url: string, id: string) => (await api(url, "GET", `/v1/jobs/${id}`)).body;

describe("budgets", () => {
  let s: Server;
  before(async () => {
    s = await testServer({ maxRequestPixels: 20_000, memoryBudget: 70_000 });
  });
  after(async () => {
    await s?.close();
  });

  test("a request's images together over the pixel budget → 422 naming the field, before any decode", async () => {
    const img = (await pngImage(128, 128)).toString("base64"); // 16 384 pixels each
    const one = await api(s.url, "POST", MODEL, { prompt: "x", input_image: img });
    assert.equal(one.status, 200, JSON.stringify(one.body));
    const two = await api(s.url, "POST", MODEL, { prompt: "x", input_image: img, input_image_2: img });
    assert.equal(two.status, 422);
    assert.equal(two.body.detail[0].loc.join("."), "body.input_image_2");
    assert.equal(two.body.detail[0].type, "pixel_budget");
    assert.match(two.body.detail[0].msg, /0\.03 MP in all|per-request budget of 0\.0 MP/);
  });

  test("the server-wide decode budget: 503 with Retry-After while it is in use, 413 for an image that can never fit", async () => {
    const img = (await pngImage(128, 128)).toString("base64");
    const release = s.budget.reserve(s.budget.total - 1000, "the test");
    try {
      const busy = await api(s.url, "POST", MODEL, { prompt: "x", input_image: img });
      assert.equal(busy.status, 503);
      assert.equal(busy.headers.get("retry-after"), "2");
      assert.match(busy.body.detail, /busy decoding other requests' images/);
    } finally {
      release();
    }
    assert.equal(s.budget.inUse, 0);
    const ok = await api(s.url, "POST", MODEL, { prompt: "x", input_image: img });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    // 140×140 is within the pixel budget, but 140 × 140 × 4 bytes = 78 400 > the whole 70 000-byte budget.
    const big = await api(s.url, "POST", MODEL, { prompt: "x", input_image: (await pngImage(140, 140)).toString("base64") });
    assert.equal(big.status, 413);
    assert.match(big.body.detail, /more than this server's whole input budget/);
  });

  test("MemoryBudget accounting; the default budget comes from the models' memory plan", () => {
    const b = new MemoryBudget(100);
    const r1 = b.reserve(60, "a");
    assert.throws(() => b.reserve(50, "b"), (e: ApiError) => e.status === 503);
    assert.throws(() => b.reserve(101, "c"), (e: ApiError) => e.status === 413);
    r1();
    r1(); // releasing twice counts once
    assert.equal(b.inUse, 0);
    const models = [{ id: "m", dir: TINY }];
    const peak = plannedModelPeak(models); // its plan at 2048², the largest accepted size
    assert.ok(peak > 0);
    assert.equal(planMemoryBudget(models, undefined, 64 * peak).bytes, 16 * peak); // at most a quarter
    const mid = peak + 1024 ** 3 + 512 * 1024 ** 2; // a quarter of this is more than what is left
    assert.equal(planMemoryBudget(models, undefined, mid).bytes, mid - peak - 1024 ** 3);
    assert.match(planMemoryBudget(models, undefined, mid).why, /planned model peak/);
    assert.equal(planMemoryBudget([], 12345).bytes, 12345);
    assert.equal(planMemoryBudget([{ id: "m", dir: TINY }], undefined, 1024 ** 3).bytes, 256 * 1024 ** 2); // the floor
  });
});

/**
 * Every job event the server publishes, recorded from the start (a stage can be
 * shorter than any poll): `until` waits for one of a job's events to match.
 */
function recordEvents(s: Server) {
  const seen: { id: string; e: JobEvent; cpu: NodeJS.CpuUsage }[] = [];
  const publish = s.events.publish.bind(s.events);
  s.events.publish = (id: string, e: JobEvent) => {
    // The process's CPU time so far (all threads; the server runs in this process), for the cancel bound.
    seen.push({ id, e, cpu: process.cpuUsage() });
    publish(id, e);
  };
  const describeJob = (id: string) => seen.filter((x) => x.id === id)
    .map((x) => x.e.type === "stage" ? `stage ${x.e.data.stage}` : x.e.type === "progress" ? `step ${x.e.data.step}/${x.e.data.steps}` : `${x.e.type} ${JSON.stringify(x.e.data)}`).join("; ");
  return {
    /** What job `id` went through, for a failure message. */
    describe: describeJob,
    /** The process CPU time when job `id` published its first event (undefined before). */
    firstCpu: (id: string) => seen.find((x) => x.id === id)?.cpu,
    until: (what: string, id: string, match: (e: JobEvent) => boolean, timeoutMs: number) =>
      waitFor(what, () => seen.some((x) => x.id === id && match(x.e)), timeoutMs, 5)
        .catch((e: Error) => { throw new Error(`${e.message}; job ${id}: ${describeJob(id) || "no events"}`); }),
  };
}

const isStage = (stage: string) => (e: JobEvent) => e.type === "stage" && e.data.stage === stage;

/** The error a cancelled job ends with once its run has stopped ("cancelled during …"). */
async function stoppedDuring(url: string, id: string, timeoutMs = 60_000): Promise<string> {
  return waitFor(`job ${id}'s run to stop`, async () => {
    const error = (await state(url, id)).details?.error;
    return error && error !== "cancelled" ? error as string : null;
  }, timeoutMs);
}

describe("cancellation reaches every stage", () => {
  let s: Server;
  let ev: ReturnType<typeof recordEvents>;
  before(async () => {
    s = await testServer();
    ev = recordEvents(s);
    // Load the model first: these tests are about the stages of a job, not the first load.
    const warm = await api(s.url, "POST", MODEL, { prompt: "warm", width: 64, height: 64 });
    await waitFor("the warm-up job", async () => (await state(s.url, warm.body.id)).state === "ready", 60_000);
  });
  after(async () => {
    await s?.close();
  });

  test("a resize is abandoned by its check", () => {
    let calls = 0;
    const src = new Uint8Array(512 * 512 * 3);
    assert.throws(() => resizeLanczos(src, 512, 512, 3, 100, 100, () => {
      if (++calls > 3) throw new Error("stop");
    }), /stop/);
    assert.equal(calls, 4);
  });

  // A 64 MP reference takes seconds to decode and to shrink to 1 MP; before, a
  // cancel waited for all of it (57 s for one, minutes for ten). Now the check
  // inside the stage sees it: the job stops in that stage (its error says which)
  // and the next queued job starts. The DELETE is sent when the stage begins (an
  // event, not a guess of how long the earlier stages take: a fixed sleep once
  // landed after the resize, in the reference's VAE encode, on a fast machine).
  // Stopping in the stage, without the thread replacement a stuck thread gets
  // (after CANCEL_GRACE_MS), is what shows the check works on any machine.
  //
  // The ≤ 1 s response (issue 16) is asserted in CPU time, not wall time: from
  // the DELETE to the next job's first event (the generation thread is free),
  // this process may spend at most 1 s of CPU, all threads together. Under load
  // the wall time of that window stretches with the machine's other work, but
  // the CPU it takes does not, so the bound holds on a busy 2-core machine as
  // on an idle one, and it still fails when the check is missing: shrinking the
  // 64 MP reference to 1 MP takes seconds of CPU, and a cancel that waited for
  // it (or for the VAE encode after it) would spend them. (A check that never
  // came would instead end in the thread replacement after 2 s, which the
  // error's wording rules out above.) During the decode, libvips' own threads
  // finish the abandoned decode in the background, so their CPU is not the
  // cancel's: that stage gets the wall-clock delay printed, not bounded.
  for (const stage of ["decoding input_image", "resizing reference 1"]) {
    test(`DELETE during ${stage} stops the job there and frees the generation thread`, { timeout: 180_000 }, async (t) => {
      const a = await api(s.url, "POST", MODEL, { prompt: "huge", input_image: await huge(), width: 64, height: 64 });
      assert.equal(a.status, 200, JSON.stringify(a.body));
      const b = await api(s.url, "POST", MODEL, { prompt: "next", width: 64, height: 64 });
      await ev.until(`the huge job to reach "${stage}"`, a.body.id, isStage(stage), 60_000);
      const t0 = Date.now();
      const cpu0 = process.cpuUsage();
      assert.equal((await api(s.url, "DELETE", `/v1/jobs/${a.body.id}`)).body.state, "cancelled");
      const started = await waitFor("the next job to start", async () => {
        const j = await state(s.url, b.body.id);
        return j.started_at ? j.started_at * 1000 : null;
      }, 60_000, 10).catch((e: Error) => { throw new Error(`${e.message}; cancelled job: ${ev.describe(a.body.id)}`); });
      assert.equal(await stoppedDuring(s.url, a.body.id), `cancelled during ${stage}`, ev.describe(a.body.id));
      const cpu1 = await waitFor("the next job's first event", () => ev.firstCpu(b.body.id), 60_000, 10);
      const cpuMs = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / 1000;
      t.diagnostic(`the next job started ${started - t0} ms after the DELETE during ${stage}; ${cpuMs.toFixed(0)} ms of CPU in between`);
      if (stage.startsWith("resizing")) assert.ok(cpuMs <= 1000, `the cancel took ${cpuMs.toFixed(0)} ms of CPU to free the thread (bound 1000 ms)`);
      await waitFor("the next job", async () => (await state(s.url, b.body.id)).state === "ready", 60_000);
    });
  }
});

describe("a cancel inside one long native call", () => {
  let s: Server;
  let ev: ReturnType<typeof recordEvents>;
  before(async () => {
    // A short grace period: the test needs a native call longer than it on any machine.
    s = await testServer({ cancelGraceMs: 300 });
    ev = recordEvents(s);
    const warm = await api(s.url, "POST", MODEL, { prompt: "warm", width: 64, height: 64 });
    await waitFor("the warm-up job", async () => (await state(s.url, warm.body.id)).state === "ready", 60_000);
  });
  after(async () => {
    await s?.close();
  });

  test("a job cancelled mid-step at 512×512: its thread is replaced, the next job runs on a fresh one (the model loads again)", { timeout: 300_000 }, async () => {
    const a = (await api(s.url, "POST", MODEL, { prompt: "large", width: 512, height: 512, seed: 5 })).body.id;
    const b = (await api(s.url, "POST", MODEL, { prompt: "next", width: 64, height: 64 })).body.id;
    // After step 1's progress the thread is inside step 2's session.run (seconds at 512² on a CPU).
    await ev.until("step 1 of the large job", a, (e) => e.type === "progress" && e.data.step === 1, 120_000);
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/${a}`)).body.state, "cancelled");
    assert.match(await stoppedDuring(s.url, a), /^cancelled during denoising \(inside one long native call; its thread was replaced after 0\.3 s\)$/);
    await waitFor("the next job", async () => (await state(s.url, b)).state === "ready", 120_000)
      .catch((e: Error) => { throw new Error(`${e.message}; next job: ${ev.describe(b)}`); });
    // The replaced thread ends by itself once its step returns (the process must not end before: see Executor).
    await waitFor("the replaced thread to end", () => s.executor!.stuckThreads === 0, 240_000, 100);
    // The fresh thread keeps serving.
    const c = (await api(s.url, "POST", MODEL, { prompt: "after", width: 64, height: 64 })).body.id;
    await waitFor("a later job", async () => (await state(s.url, c)).state === "ready", 60_000);
  });
});

/** Read the job's event stream until the stage begins (or fail after `timeoutMs`, naming what was seen). */
async function untilStage(url: string, id: string, stage: string, timeoutMs: number): Promise<void> {
  const res = await fetch(`${url}/v1/jobs/${id}/events`, { signal: AbortSignal.timeout(timeoutMs) });
  const seen: string[] = [];
  let text = "";
  try {
    for await (const chunk of res.body!) {
      text += Buffer.from(chunk).toString();
      for (const m of text.matchAll(/event: stage\ndata: (.*)\n/g)) seen.push(JSON.parse(m[1]).stage);
      if (seen.includes(stage)) return;
      text = text.slice(text.lastIndexOf("\n\n") + 1);
    }
    throw new Error(`the event stream ended before "${stage}" (stages seen: ${seen.join(", ") || "none"})`);
  } catch (e) {
    if ((e as Error).name === "TimeoutError") throw new Error(`timed out waiting for "${stage}" (stages seen: ${seen.join(", ") || "none"})`);
    throw e;
  } finally {
    await res.body?.cancel().catch(() => {});
  }
}

describe("SIGTERM drains", () => {
  const children: Child[] = [];
  after(async () => {
    for (const c of children) await stop(c);
  });

  test("SIGTERM during a huge reference's preprocessing: exit 0 within the shutdown timeout, the job back in the queue unspent", { timeout: 90_000 }, async (t) => {
    const dir = tempDir("flux2-drain-");
    const c = spawnCli(["serve", "--port", "0", "--data", dir, "--model", `flux-2-klein-4b=${TINY}`, "--threads", "1", "--shutdown-timeout", "5"]);
    children.push(c);
    const url = await serverUrl(c);
    const id = (await api(url, "POST", MODEL, { prompt: "huge", input_image: await huge(), width: 64, height: 64 })).body.id;
    // SIGTERM as the decode begins (an event: a fixed sleep could land past the preprocessing on a fast machine).
    await untilStage(url, id, "decoding input_image", 60_000);
    const t0 = Date.now();
    c.proc.kill("SIGTERM");
    assert.equal(await c.exited, 0, c.err.join("\n"));
    // Exit status 0 is the proof it stopped within --shutdown-timeout: past it the process ends by the signal
    // (next test). The wall-clock time also counts process teardown, which a loaded machine stretches.
    t.diagnostic(`SIGTERM to exit: ${Date.now() - t0} ms`);
    assert.ok(c.err.some((l) => /shutting down within 5 s/.test(l)), c.err.join("\n"));
    const store = new JobStore(dir);
    const row = store.get(id)!;
    store.close();
    assert.deepEqual([row.state, row.attempts], ["queued", 0]);
  });

  test("past --shutdown-timeout the process ends by the signal at once; the job is back in the queue unspent", { timeout: 60_000 }, async () => {
    const dir = tempDir("flux2-drain-");
    const c = spawnCli(["serve", "--port", "0", "--data", dir, "--model", `flux-2-klein-4b=${TINY}`, "--threads", "1", "--shutdown-timeout", "0"]);
    children.push(c);
    const url = await serverUrl(c);
    const id = (await api(url, "POST", MODEL, { prompt: "stuck", width: 512, height: 512 })).body.id;
    await waitFor("the job to start", async () => (await state(url, id)).state === "running", 30_000, 10);
    c.proc.kill("SIGTERM");
    assert.equal(await c.exited, "SIGTERM", c.err.join("\n"));
    assert.ok(c.err.some((l) => /did not stop within 0 s; it was re-queued, exiting/.test(l)), c.err.join("\n"));
    const store = new JobStore(dir);
    const row = store.get(id)!;
    store.close();
    assert.deepEqual([row.state, row.attempts], ["queued", 0]);
  });
});

/** Connect and send `text`; resolves with what the server sent and how long until it closed the connection. */
function rawExchange(port: number, text: string, timeoutMs = 15_000): Promise<{ reply: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = net.connect(port, "127.0.0.1", () => sock.write(text));
    let reply = "";
    sock.on("data", (d) => { reply += d.toString(); });
    const guard = setTimeout(() => { sock.destroy(); reject(new Error(`the server kept the connection open for ${timeoutMs} ms`)); }, timeoutMs);
    sock.on("close", () => { clearTimeout(guard); resolve({ reply, closedAfterMs: Date.now() - t0 }); });
    sock.on("error", () => {});
  });
}

describe("connections are timed", () => {
  let s: Server;
  before(async () => {
    // The idle timeout is well above the request timeout plus Node's 1 s check interval, so the slow body meets
    // the request timeout (408) first instead of a silent idle close (a race seen once in CI).
    s = await testServer({ headersTimeoutMs: 500, requestTimeoutMs: 1000, idleTimeoutMs: 4000, keepAliveTimeoutMs: 500 });
  });
  after(async () => {
    await s?.close();
  });

  test("slow headers, a slow body and an idle connection are all closed", { timeout: 60_000 }, async () => {
    const slowHeaders = rawExchange(s.port, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    const slowBody = rawExchange(s.port, `POST ${MODEL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt":`);
    const idle = rawExchange(s.port, "");
    const [h, b, i] = await Promise.all([slowHeaders, slowBody, idle]);
    assert.match(h.reply, /^HTTP\/1\.1 408|^$/, h.reply);
    assert.match(b.reply, /^HTTP\/1\.1 408/, b.reply);
    assert.match(i.reply, /^HTTP\/1\.1 408|^$/, i.reply);
    // A kept-alive connection after a complete request is closed too.
    const kept = await rawExchange(s.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(kept.reply, /^HTTP\/1\.1 200/);
  });
});

/** Open an event stream (the response stays open until its body is cancelled). */
async function openStream(url: string): Promise<Response> {
  return fetch(url, { signal: AbortSignal.timeout(30_000) });
}

describe("event streams are bounded", () => {
  let s: Server;
  before(async () => {
    s = await testServer({ maxStreamsPerJob: 2, maxStreamsPerKey: 3 });
  });
  after(async () => {
    await s?.close();
  });

  test("per-job and per-client caps → 429; a closed stream frees its place", { timeout: 60_000 }, async () => {
    // A slow job runs; two wait behind it, so all three stay active while streams open.
    const ids: string[] = [];
    for (const seed of [1, 2, 3]) ids.push((await api(s.url, "POST", MODEL, { prompt: "streams", width: 384, height: 384, seed })).body.id);
    const ev = (id: string) => `${s.url}/v1/jobs/${id}/events`;
    const a1 = await openStream(ev(ids[1]));
    const a2 = await openStream(ev(ids[1]));
    assert.equal(a1.status, 200);
    assert.equal(a2.status, 200);
    const a3 = await openStream(ev(ids[1]));
    assert.equal(a3.status, 429);
    assert.match((await a3.json()).detail, /already has 2 open event streams/);
    const b1 = await openStream(ev(ids[2]));
    assert.equal(b1.status, 200);
    const b2 = await openStream(ev(ids[2]));
    assert.equal(b2.status, 429);
    assert.match((await b2.json()).detail, /3 open event streams, the most allowed per API key/);
    await a1.body!.cancel();
    await waitFor("the stream to close", () => s.streams.count === 2);
    const b3 = await openStream(ev(ids[2]));
    assert.equal(b3.status, 200);
    for (const r of [a2, b1, b3]) await r.body!.cancel();
    for (const id of ids) await api(s.url, "DELETE", `/v1/jobs/${id}`);
  });
});

describe("event stream frames", () => {
  test("a progress event is serialized once and shared by every stream", () => {
    const p = { step: 1, steps: 4, fraction: 0.25, preview: "data:image/png;base64," + "A".repeat(1000) };
    assert.equal(progressFrame(p), progressFrame(p));
    assert.match(progressFrame(p).toString(), /^event: progress\ndata: \{"step":1/);
  });

  test("a reader that stops reading is dropped once its buffer passes the bound; a reading one gets everything", { timeout: 60_000 }, async () => {
    const dir = tempDir("flux2-sse-");
    const store = new JobStore(dir);
    store.submit({ id: "job", model: "m", kind: "local", key_id: null, request: "{}" }, { keyMax: 0, queueMax: 0 });
    const events = new JobEvents();
    const streams = new EventStreams(store, events, { perJob: 10, perKey: 10, bufferBytes: 512 * 1024 });
    const server = http.createServer((_req, res) => streams.serve(res, store.get("job")!, "http://x", "test"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    try {
      // The slow reader: a socket that never reads, with a small receive buffer.
      const slow = net.connect({ port, host: "127.0.0.1" }, () => slow.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      slow.pause();
      slow.on("error", () => {});
      let got = 0;
      const reader = http.get(`http://127.0.0.1:${port}/`, (res) => res.on("data", (d: Buffer) => { got += d.length; }));
      reader.on("error", () => {});
      await waitFor("both streams", () => streams.count === 2);
      const preview = "data:image/png;base64," + "B".repeat(256 * 1024);
      let sent = 0;
      // Each event waits for the reading client: only the one that does not read falls behind.
      for (let i = 1; i <= 400 && streams.dropped === 0; i++) {
        const p = { step: i, steps: 400, fraction: i / 400, preview };
        events.publish("job", { type: "progress", data: p });
        sent += progressFrame(p).length;
        await waitFor("the reader", () => got >= sent, 20_000, 1);
      }
      assert.equal(streams.dropped, 1, "the slow reader was dropped");
      assert.equal(streams.count, 1, "the reading stream stays open");
      slow.destroy();
      reader.destroy();
    } finally {
      streams.closeAll();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      store.close();
    }
  });
});
