// Contract tests of the Black Forest Labs provider (src/server/providers/bfl.ts)
// against the fake BFL API of fake_bfl.ts on 127.0.0.1: submit → poll → Ready
// with the sample copied into our store at once, 429 retried with backoff,
// moderation states passed through, a bad key reported, and a restart that
// resumes polling instead of submitting (and paying) twice.
import { test, describe, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BflClient, BflError } from "../src/server/providers/bfl.js";
import { FakeBfl } from "./fake_bfl.js";
import { api, sleep, untilDone, waitFor } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;

describe("BFL provider", () => {
  let fake: FakeBfl;
  let s: Server;
  const dataDir = tempDir("flux2-bfl-");
  const config = () => ({ dataDir, bflKey: fake.apiKey, bflBaseUrl: fake.url, providerPollMs: 20, providerBackoffMs: 20 });

  before(async () => {
    fake = await new FakeBfl().start();
    s = await testServer(config());
  });
  after(async () => {
    await s?.close();
    await fake?.close();
  });
  beforeEach(() => {
    fake.pendingPolls = 2;
    fake.rejectNext = 0;
    fake.sampleTtlMs = 10 * 60 * 1000;
  });

  test("submit → Pending → Ready: the sample is downloaded into our store", async () => {
    // BFL's URLs expire; ours must not. 2 s leaves the provider time to download the sample on a
    // loaded machine (50 ms did not), and the test waits past it before fetching our copy.
    fake.sampleTtlMs = 2000;
    const input = await pngImage(64, 64);
    const sub = await api(s.url, "POST", "/v1/flux-2-pro", {
      prompt: "a lighthouse", width: 96, height: 64, seed: 11, input_image: input.toString("base64"), safety_tolerance: 2,
      webhook_url: "http://127.0.0.1:9/never-forwarded", webhook_secret: "x",
    });
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    const done = await untilDone(s.url, sub.body.id);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    assert.deepEqual([done.result.width, done.result.height, done.result.seed, done.result.prompt], [96, 64, 11, "a lighthouse"]);

    // What BFL received: our x-key, the request fields, the image as base64; not our webhook.
    const last = fake.submitted[fake.submitted.length - 1];
    assert.equal(last.model, "flux-2-pro");
    assert.equal(last.body.prompt, "a lighthouse");
    assert.equal(last.body.seed, 11);
    assert.equal(last.body.safety_tolerance, 2);
    assert.equal(Buffer.from(last.body.input_image, "base64").equals(input), true);
    assert.ok(!("webhook_url" in last.body) && !("webhook_secret" in last.body));
    assert.ok(fake.requests.every((r) => r.url.startsWith("/delivery/") || r.key === fake.apiKey));

    await sleep(2100); // the fake's delivery URL has expired by now
    const img = await fetch(done.result.sample);
    assert.equal(img.status, 200);
    const bytes = Buffer.from(await img.arrayBuffer());
    assert.equal(done.result.sample.split("/").pop(), `${createHash("sha256").update(bytes).digest("hex")}.png`);
  });

  test("progress is reported while BFL says Pending", async () => {
    fake.pendingPolls = 30;
    const id = (await api(s.url, "POST", "/v1/flux-2-max", { prompt: "slowly" })).body.id;
    const p = await waitFor("progress", async () => {
      const r = (await api(s.url, "GET", `/v1/get_result?id=${id}`)).body;
      return r.status === "Pending" && r.progress > 0 ? r.progress : null;
    });
    assert.ok(p > 0 && p < 1);
    assert.equal((await untilDone(s.url, id)).status, "Ready");
  });

  test("429 from BFL is retried with backoff", async () => {
    fake.rejectNext = 2;
    const before = fake.requests.filter((r) => r.url === "/v1/flux-2-flex").length;
    const done = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-flex", { prompt: "busy", steps: 20, guidance: 3 })).body.id);
    assert.equal(done.status, "Ready");
    assert.equal(fake.requests.filter((r) => r.url === "/v1/flux-2-flex").length - before, 3);
    assert.equal(fake.submitted[fake.submitted.length - 1].body.steps, 20);
  });

  test("moderation states pass through; BFL errors become Error with details", async () => {
    const req = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "[request-moderated] x" })).body.id);
    assert.equal(req.status, "Request Moderated");
    assert.equal(req.result, null);
    assert.match(JSON.stringify(req.details), /Derivative Works/);
    const content = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "[content-moderated] x" })).body.id);
    assert.equal(content.status, "Content Moderated");
    const err = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "[error] x" })).body.id);
    assert.equal(err.status, "Error");
    assert.match(err.details.error, /generation failed/);
  });

  test("fields a provider model does not take → 422 before anything is sent", async () => {
    const n = fake.submitted.length;
    const r = await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "x", steps: 30, num_images: 2 });
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.detail.map((d: any) => d.loc[1]).sort(), ["num_images", "steps"]);
    assert.equal(fake.submitted.length, n);
    const models = (await api(s.url, "GET", "/v1/models")).body.models;
    assert.ok(models.find((m: any) => m.id === "flux-2-flex").available);
  });

  test("a restart resumes polling the submitted task instead of submitting again", async () => {
    fake.pendingPolls = 1_000_000; // stays Pending until we say so
    const id = (await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "survive a restart" })).body.id;
    await waitFor("the task to reach BFL", () => fake.submitted.some((x) => x.body.prompt === "survive a restart"));
    await s.close();
    fake.pendingPolls = 0;
    s = await testServer(config());
    const done = await untilDone(s.url, id);
    assert.equal(done.status, "Ready");
    assert.equal(fake.submitted.filter((x) => x.body.prompt === "survive a restart").length, 1);
  });
});

describe("BFL provider with a bad key", () => {
  test("401 from BFL → the task ends in Error saying the key was rejected", async () => {
    const fake = await new FakeBfl().start();
    const s = await testServer({ bflKey: "wrong", bflBaseUrl: fake.url, providerPollMs: 20, providerBackoffMs: 20 });
    try {
      const done = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "x" })).body.id);
      assert.equal(done.status, "Error");
      assert.match(done.details.error, /rejected the API key \(HTTP 401/);
    } finally {
      await s.close();
      await fake.close();
    }
  });

  test("BflClient: 429 is retryable, 401 is not; a too-busy BFL answers 429", async () => {
    const fake = await new FakeBfl().start();
    try {
      fake.maxActive = 1;
      const c = new BflClient({ apiKey: fake.apiKey, baseUrl: fake.url, pollMs: 10 });
      const first = await c.submit("flux-2-pro", { prompt: "one" });
      assert.match(first.polling_url, /\/v1\/get_result\?id=/);
      await assert.rejects(c.submit("flux-2-pro", { prompt: "two" }), (e: BflError) => e.status === 429 && e.retryable);
      await assert.rejects(new BflClient({ apiKey: "bad", baseUrl: fake.url, pollMs: 10 }).submit("flux-2-pro", { prompt: "x" }), (e: BflError) => e.status === 401 && !e.retryable);
      assert.equal((await c.poll(`${fake.url}/v1/get_result?id=nope`)).status, "Task not found");
    } finally {
      await fake.close();
    }
  });
});
