// Tests of `flux2 serve` (src/server/) in process, with the tiny klein
// checkpoint: submit → poll → fetch the image, validation (422 naming the
// field), auth and the per-key limit (429), body limit (413), input-image
// limits, URL inputs and their address checks, webhooks with signatures and
// retries, cancellation, server-sent events, job listing, models and OpenAPI.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { readPngText } from "../src/pipeline/image.js";
import { createKey } from "../src/server/auth.js";
import { keysRequired } from "../src/server/config.js";
import { isPrivateAddress, ipv6Groups, checkUrl, fetchImage } from "../src/api/fetch_image.js";
import { decodeBase64Image } from "../src/api/image_input.js";
import { resolveStatic } from "../src/server/static.js";
import { signBody, verifySignature } from "../src/server/webhooks.js";
import { api, sleep, TINY, TINY_BASE, untilDone, waitFor } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;
const MODEL = "/v1/flux-2-klein-4b";

/** A loopback HTTP listener that records requests (raw bodies) and answers with `status()`. */
async function listener(status: (n: number) => number = () => 200) {
  const got: { headers: http.IncomingHttpHeaders; body: Buffer; url: string }[] = [];
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    got.push({ headers: req.headers, body: Buffer.concat(chunks), url: req.url ?? "" });
    res.writeHead(status(got.length));
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { got, url, server, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

describe("flux2 serve (embedded queue, tiny model)", () => {
  let s: Server;
  before(async () => {
    s = await testServer({ models: [{ id: "flux-2-klein-4b", dir: TINY }, { id: "flux-2-klein-base-4b", dir: TINY_BASE }] });
  });
  after(async () => {
    await s?.close();
  });

  test("submit → poll → Ready → the PNG carries its parameters", async () => {
    const sub = await api(s.url, "POST", MODEL, { prompt: "a red fox in the snow", width: 80, height: 64, seed: 7 });
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    assert.match(sub.body.id, /^[0-9a-f-]{36}$/);
    assert.equal(sub.body.polling_url, `${s.url}/v1/get_result?id=${sub.body.id}`);
    const done = await untilDone(s.url, sub.body.id);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    assert.equal(done.progress, 1);
    const r = done.result;
    assert.deepEqual([r.prompt, r.seed, r.width, r.height], ["a red fox in the snow", 7, 80, 64]);
    assert.ok(r.start_time > 1e9 && r.end_time >= r.start_time && r.duration >= 0);
    assert.match(r.sample, new RegExp(`^${s.url}/v1/images/[0-9a-f]{64}\\.png$`));

    const img = await fetch(r.sample);
    assert.equal(img.status, 200);
    assert.equal(img.headers.get("content-type"), "image/png");
    const png = Buffer.from(await img.arrayBuffer());
    // Content-addressed: the file name is the sha256 of the bytes.
    assert.equal(path.basename(r.sample, ".png"), createHash("sha256").update(png).digest("hex"));
    const text = readPngText(png);
    assert.match(text.parameters, /^a red fox in the snow\nSteps: 4, .*Seed: 7, Size: 80x64, Model: flux-2-klein-4b, Variant: klein/);
    assert.equal(JSON.parse(text.flux2).seed, 7);

    // Same request, same seed: the same image (same name), recorded as a second job.
    const again = await untilDone(s.url, (await api(s.url, "POST", MODEL, { prompt: "a red fox in the snow", width: 80, height: 64, seed: 7 })).body.id);
    assert.equal(again.result.sample, r.sample);
  });

  test("klein base takes steps, guidance (CFG) and a negative prompt", async () => {
    const done = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-base-4b", {
      prompt: "a lighthouse", negative_prompt: "blurry", steps: 3, guidance: 3.5, width: 64, height: 64, seed: 4,
    })).body.id);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    assert.deepEqual([done.result.steps, done.result.guidance], [3, 3.5]);
    const text = readPngText(Buffer.from(await (await fetch(done.result.sample)).arrayBuffer())).parameters;
    assert.match(text, /^a lighthouse\nNegative prompt: blurry\nSteps: 3, .*CFG scale: 3.5, .*Variant: klein-base/);
    const bad = await api(s.url, "POST", "/v1/flux-2-klein-base-4b", { prompt: "x", steps: 0, guidance: 20 });
    assert.deepEqual(bad.body.detail.map((d: any) => d.loc[1]).sort(), ["guidance", "steps"]);
  });

  test("a job without a seed gets one, and reports it", async () => {
    const done = await untilDone(s.url, (await api(s.url, "POST", MODEL, { prompt: "seedless", width: 64, height: 64 })).body.id);
    assert.equal(done.status, "Ready");
    assert.ok(Number.isInteger(done.result.seed));
  });

  test("validation: fields klein does not take, sizes, images, unknown fields → 422 naming them", async () => {
    const steps = await api(s.url, "POST", MODEL, { prompt: "x", width: 64, height: 64, steps: 20, guidance: 3 });
    assert.equal(steps.status, 422);
    const locs = steps.body.detail.map((d: any) => d.loc.join("."));
    assert.deepEqual(locs.sort(), ["body.guidance", "body.steps"]);
    assert.equal(steps.body.detail[0].type, "extra_forbidden");

    const cases: [unknown, string, RegExp][] = [
      [{ prompt: "x", width: 66, height: 64 }, "body.width", /multiple of 4/],
      [{ prompt: "x", width: 48, height: 64 }, "body.width", /64/],
      [{ prompt: "x", width: 4096, height: 2048 }, "body.width", /MP/],
      [{ prompt: "x", width: 64, height: 8192 }, "body.height", /4096/],
      [{ width: 64, height: 64 }, "body.prompt", /required/i],
      [{ prompt: "x", colour: "red" }, "body.colour", /Extra inputs/],
      [{ prompt: "x", input_image: "not base64 at all!" }, "body.input_image", /base64/],
      [{ prompt: "x", input_image: Buffer.from("hello, not an image").toString("base64") }, "body.input_image", /not a supported image/],
      [{ prompt: "x", input_image_2: "data:image/png;base64,AAAA" }, "body.input_image_2", /.+/],
      [{ prompt: "x", mask_image: (await pngImage(64, 64)).toString("base64") }, "body.mask_image", /needs input_image/],
      [{ prompt: "x", seed: -1 }, "body.seed", /.+/],
      [{ prompt: "x", output_format: "gif" }, "body.output_format", /.+/],
      [{ prompt: "x", webhook_url: "ftp://example.com/hook" }, "body.webhook_url", /http/],
      [{ prompt: "x", input_image: (await pngImage(32, 64)).toString("base64") }, "body.input_image", /at least 64/],
    ];
    for (const [body, loc, msg] of cases) {
      const r = await api(s.url, "POST", MODEL, body);
      assert.equal(r.status, 422, `${JSON.stringify(body).slice(0, 80)} → ${r.status}`);
      const hit = r.body.detail.find((d: any) => d.loc.join(".") === loc);
      assert.ok(hit, `${loc} not named in ${JSON.stringify(r.body.detail)}`);
      assert.match(hit.msg, msg);
    }
    const notJson = await api(s.url, "POST", MODEL, "{not json", { "content-type": "application/json" });
    assert.equal(notJson.status, 422);
    assert.equal(notJson.body.detail[0].type, "json_invalid");
    const array = await api(s.url, "POST", MODEL, [1, 2]);
    assert.equal(array.status, 422);
  });

  test("unknown model → 404; provider models without a BFL key → 404 saying so", async () => {
    const r = await api(s.url, "POST", "/v1/flux-2-nope", { prompt: "x" });
    assert.equal(r.status, 404);
    assert.match(r.body.detail, /flux-2-nope/);
    const pro = await api(s.url, "POST", "/v1/flux-2-pro", { prompt: "x" });
    assert.equal(pro.status, 404);
    assert.match(pro.body.detail, /--bfl-key/);
    const missing = await api(s.url, "GET", "/v1/get_result?id=00000000-0000-0000-0000-000000000000");
    assert.equal(missing.status, 200);
    assert.equal(missing.body.status, "Task not found");
    assert.equal((await api(s.url, "GET", "/v1/get_result")).status, 422);
  });

  test("edit with a reference image (base64 and data URL), several images per request", async () => {
    const png = await pngImage(80, 72);
    const done = await untilDone(s.url, (await api(s.url, "POST", MODEL, {
      prompt: "make it blue", input_image: png.toString("base64"), input_image_2: `data:image/png;base64,${png.toString("base64")}`, seed: 1, num_images: 2,
    })).body.id);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    // The output follows the first reference, centre-cropped to multiples of 4.
    assert.deepEqual([done.result.width, done.result.height], [80, 72]);
    assert.equal(done.result.samples.length, 2);
    assert.notEqual(done.result.samples[0], done.result.samples[1]);
    const meta = JSON.parse(readPngText(Buffer.from(await (await fetch(done.result.sample)).arrayBuffer())).flux2);
    assert.equal(meta.references.length, 2);

    const inpaint = await untilDone(s.url, (await api(s.url, "POST", MODEL, {
      prompt: "repaint", input_image: png.toString("base64"), mask_image: (await pngImage(80, 72)).toString("base64"), strength: 0.9, output_format: "jpeg",
    })).body.id);
    assert.equal(inpaint.status, "Ready", JSON.stringify(inpaint));
    assert.match(inpaint.result.sample, /\.jpg$/);
  });

  test("URL inputs are fetched (loopback allowed here by allowPrivateUrls)", async () => {
    const png = await pngImage(64, 64);
    const srv = http.createServer((req, res) => {
      if (req.url === "/redirect") return void res.writeHead(302, { location: "/img.png" }).end();
      res.writeHead(200, { "content-type": "image/png" }).end(png);
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/redirect`;
      const done = await untilDone(s.url, (await api(s.url, "POST", MODEL, { prompt: "from a URL", input_image: url, seed: 2 })).body.id);
      assert.equal(done.status, "Ready", JSON.stringify(done));
      // The job's parameters show the stored copy of the input, not the original URL.
      const job = (await api(s.url, "GET", `/v1/jobs/${done.id}`)).body;
      assert.match(job.request.input_image, /\/v1\/images\/[0-9a-f]{64}\.png$/);
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });

  test("cancel: a queued job never runs, a running job stops at its next step", async () => {
    const images = () => fs.readdirSync(path.join(s.dataDir, "images"), { recursive: true }).map(String).filter((f) => /\.(png|jpg)$/.test(f)).length;
    const before = images();
    const slow = { prompt: "slow", width: 384, height: 384, seed: 5 };
    const a = (await api(s.url, "POST", MODEL, slow)).body.id;
    const b = (await api(s.url, "POST", MODEL, { ...slow, seed: 6 })).body.id;
    await waitFor("job a to run", async () => (await api(s.url, "GET", `/v1/get_result?id=${a}`)).body.flux2.state === "running");
    const cb = await api(s.url, "DELETE", `/v1/jobs/${b}`);
    assert.equal(cb.status, 200);
    assert.equal(cb.body.state, "cancelled");
    const t0 = Date.now();
    const ca = await api(s.url, "DELETE", `/v1/jobs/${a}`);
    assert.equal(ca.body.state, "cancelled");
    // The next job can only start once the cancelled one has stopped.
    const next = await untilDone(s.url, (await api(s.url, "POST", MODEL, { prompt: "after", width: 64, height: 64 })).body.id);
    assert.equal(next.status, "Ready");
    assert.ok(Date.now() - t0 < 15_000, `cancel took ${Date.now() - t0} ms`);
    // Only the last job produced an image: the cancelled running job stopped before its end.
    assert.equal(images(), before + 1);
    const jb = (await api(s.url, "GET", `/v1/jobs/${b}`)).body;
    assert.equal(jb.state, "cancelled");
    assert.equal(jb.started_at, null, "the queued job never started");
    assert.equal(jb.attempts, 0);
    const poll = (await api(s.url, "GET", `/v1/get_result?id=${a}`)).body;
    assert.equal(poll.status, "Error");
    assert.equal(poll.details.cancelled, true);
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/${a}`)).status, 409);
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/nope`)).status, 404);
  });

  test("server-sent events: status, progress with a PNG preview, done", async () => {
    const id = (await api(s.url, "POST", MODEL, { prompt: "events", width: 128, height: 128, seed: 3 })).body.id;
    const res = await fetch(`${s.url}/v1/jobs/${id}/events`, { signal: AbortSignal.timeout(20_000) });
    assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const text = await res.text(); // the stream ends after `done`
    const events = text.split("\n\n").filter((b) => b.startsWith("event:")).map((b) => {
      const [ev, data] = b.split("\n");
      return { event: ev.slice(7), data: JSON.parse(data.slice(6)) };
    });
    assert.equal(events[0].event, "status");
    const progress = events.filter((e) => e.event === "progress");
    assert.ok(progress.length >= 1, text.slice(0, 300));
    const last = progress[progress.length - 1].data;
    assert.equal(last.steps, 4);
    assert.ok(last.fraction > 0 && last.fraction <= 1);
    assert.match(last.preview, /^data:image\/png;base64,/);
    assert.ok(Buffer.from(last.preview.split(",")[1], "base64").subarray(1, 4).toString() === "PNG");
    const done = events[events.length - 1];
    assert.equal(done.event, "done");
    assert.equal(done.data.status, "Ready");
    // A finished job's stream answers at once.
    const again = await (await fetch(`${s.url}/v1/jobs/${id}/events`)).text();
    assert.match(again, /event: done/);
  });

  test("job list: newest first, paginated, with parameters and result URLs", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api(s.url, "POST", MODEL, { prompt: `list ${i}`, width: 64, height: 64, seed: 100 + i, webhook_secret: "hidden" })).body.id);
    await untilDone(s.url, ids[2]);
    const page = (await api(s.url, "GET", "/v1/jobs?limit=2")).body;
    assert.deepEqual(page.jobs.map((j: any) => j.id), [ids[2], ids[1]]);
    assert.equal(page.next_before, ids[1]);
    assert.equal(page.jobs[0].request.prompt, "list 2");
    assert.equal(page.jobs[0].request.webhook_secret, "***");
    const older = (await api(s.url, "GET", `/v1/jobs?limit=1&before=${page.next_before}`)).body;
    assert.equal(older.jobs[0].id, ids[0]);
    assert.equal((await api(s.url, "GET", "/v1/jobs?limit=0")).status, 422);
  });

  test("GET /v1/models: variant, real limits and defaults", async () => {
    const models = (await api(s.url, "GET", "/v1/models")).body.models;
    const klein = models.find((m: any) => m.id === "flux-2-klein-4b");
    assert.equal(klein.variant, "klein");
    assert.equal(klein.limits.multiple_of, 4); // the tiny VAE: 2 · scale factor 2
    assert.equal(klein.limits.min_side, 64);
    assert.equal(klein.limits.steps, null);
    assert.equal(klein.defaults.steps, 4);
    assert.ok(!klein.fields.includes("steps"));
    const base = models.find((m: any) => m.id === "flux-2-klein-base-4b");
    assert.equal(base.variant, "klein-base");
    assert.deepEqual(base.limits.steps, { min: 1, max: 50, default: 50 });
    assert.equal(base.defaults.guidance, 4);
    const pro = models.find((m: any) => m.id === "flux-2-pro");
    assert.equal(pro.available, false);
  });

  test("the studio is served at / (when built); nothing outside its folder", async () => {
    const home = await fetch(`${s.url}/`);
    if (home.status === 200) assert.match(home.headers.get("content-type") ?? "", /text\/html/);
    else assert.match((await home.json()).detail, /not built/);
    assert.equal((await fetch(`${s.url}/..%2f..%2fpackage.json`)).status, 404);
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  });

  test("GET /openapi.json: one path per model, bodies from the shared schema", async () => {
    const doc = (await api(s.url, "GET", "/openapi.json")).body;
    assert.equal(doc.openapi, "3.0.3");
    const body = doc.paths["/v1/flux-2-klein-4b"].post.requestBody.content["application/json"].schema;
    assert.ok(body.properties.prompt && body.properties.input_image && !body.properties.steps);
    assert.deepEqual(body.required, ["prompt"]);
    const flex = doc.paths["/v1/flux-2-flex"].post.requestBody.content["application/json"].schema;
    assert.ok(flex.properties.steps);
    assert.ok(doc.paths["/v1/get_result"].get.responses["200"].content["application/json"].schema.properties.status.enum.includes("Request Moderated"));
    assert.ok(doc.paths["/v1/jobs/{id}"].delete);
  });

  test("webhook: signed POST of the result, retried after a failure", async () => {
    const hook = await listener((n) => (n === 1 ? 500 : 204));
    try {
      const secret = "s3cret";
      const id = (await api(s.url, "POST", MODEL, { prompt: "hook", width: 64, height: 64, webhook_url: `${hook.url}/done`, webhook_secret: secret })).body.id;
      await waitFor("two deliveries", () => hook.got.length >= 2, 15_000);
      for (const g of hook.got) {
        assert.equal(g.url, "/done");
        assert.equal(g.headers["content-type"], "application/json");
        assert.equal(g.headers["x-flux2-job-id"], id);
        assert.ok(verifySignature(secret, g.body, g.headers["x-flux2-signature"] as string), "signature");
        assert.equal(g.headers["x-flux2-signature"], signBody(secret, g.body));
        assert.ok(!verifySignature("wrong", g.body, g.headers["x-flux2-signature"] as string));
      }
      assert.deepEqual(hook.got.map((g) => g.headers["x-flux2-attempt"]), ["1", "2"]);
      const body = JSON.parse(hook.got[1].body.toString());
      assert.equal(body.id, id);
      assert.equal(body.status, "Ready");
      assert.match(body.result.sample, /\/v1\/images\/[0-9a-f]{64}\.png$/);
      await sleep(300);
      assert.equal(hook.got.length, 2, "no delivery after a 2xx");
      assert.equal(s.store.webhook(id)?.state, "delivered");
    } finally {
      await hook.close();
    }
  });
});

describe("keys and limits", () => {
  let s: Server;
  let key = "", other = "";
  before(async () => {
    s = await testServer({ requireKeys: true, maxActivePerKey: 2 });
    key = createKey(s.store, "test", null).key;
    other = createKey(s.store, "other", null).key;
  });
  after(async () => {
    await s?.close();
  });

  test("x-key is required; unknown and revoked keys are refused", async () => {
    assert.equal((await api(s.url, "POST", MODEL, { prompt: "x" })).status, 401);
    assert.equal((await api(s.url, "GET", "/v1/jobs")).status, 401);
    assert.equal((await api(s.url, "POST", MODEL, { prompt: "x" }, { "x-key": "f2k_wrong" })).status, 403);
    const temp = createKey(s.store, "temp", null);
    assert.equal((await api(s.url, "GET", "/v1/jobs", undefined, { "x-key": temp.key })).status, 200);
    s.store.revokeKey(temp.row.id);
    assert.equal((await api(s.url, "GET", "/v1/jobs", undefined, { "x-key": temp.key })).status, 403);
    // The events stream also takes the key as ?key= (EventSource cannot send headers).
    assert.equal((await fetch(`${s.url}/v1/jobs/nope/events?key=${key}`)).status, 404);
    assert.equal((await fetch(`${s.url}/v1/jobs/nope/events`)).status, 401);
    // The model list and the OpenAPI document are public.
    assert.equal((await api(s.url, "GET", "/v1/models")).status, 200);
    // Only a hash is stored.
    assert.ok(!fs.readFileSync(path.join(s.dataDir, "flux2.db")).includes(Buffer.from(key)));
  });

  test("more active tasks than the key's limit → 429; other keys cannot see the jobs", async () => {
    const h = { "x-key": key };
    const slow = { prompt: "busy", width: 256, height: 256 };
    const a = await api(s.url, "POST", MODEL, slow, h);
    const b = await api(s.url, "POST", MODEL, slow, h);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    const c = await api(s.url, "POST", MODEL, slow, h);
    assert.equal(c.status, 429);
    assert.match(c.body.detail, /maximum number of active tasks \(2\)/);
    assert.equal(c.headers.get("retry-after"), "5");
    // Another key has its own budget and does not see this key's tasks.
    const o = { "x-key": other };
    assert.equal((await api(s.url, "GET", `/v1/get_result?id=${a.body.id}`, undefined, o)).body.status, "Task not found");
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/${a.body.id}`, undefined, o)).status, 404);
    assert.equal((await api(s.url, "GET", "/v1/jobs", undefined, o)).body.jobs.length, 0);
    // Cancelling frees a slot.
    await api(s.url, "DELETE", `/v1/jobs/${b.body.id}`, undefined, h);
    const d = await api(s.url, "POST", MODEL, { prompt: "fits again", width: 64, height: 64 }, h);
    assert.equal(d.status, 200);
    await api(s.url, "DELETE", `/v1/jobs/${a.body.id}`, undefined, h);
    assert.equal((await untilDone(s.url, d.body.id, h)).status, "Ready");
  });
});

describe("request limits", () => {
  let s: Server;
  before(async () => {
    s = await testServer({ bodyLimit: 200_000, maxInputPixels: 100 * 100, allowPrivateUrls: false });
  });
  after(async () => {
    await s?.close();
  });

  test("a body over the limit → 413", async () => {
    const r = await api(s.url, "POST", MODEL, { prompt: "x".repeat(300_000) });
    assert.equal(r.status, 413);
    assert.match(r.body.detail, /larger than the limit/);
  });

  test("input images over the decoded-pixel cap → 422 (before they are decoded)", async () => {
    const big = await pngImage(128, 128); // 16 384 pixels > 10 000
    const r = await api(s.url, "POST", MODEL, { prompt: "x", input_image: big.toString("base64") });
    assert.equal(r.status, 422);
    assert.equal(r.body.detail[0].loc.join("."), "body.input_image");
    assert.match(r.body.detail[0].msg, /more than the limit/);
  });

  test("a full queue → 429", async () => {
    const q = await testServer({ maxQueued: 1 });
    try {
      const slow = { prompt: "fill", width: 384, height: 384 };
      const a = (await api(q.url, "POST", MODEL, slow)).body.id;
      await waitFor("a to run", async () => (await api(q.url, "GET", `/v1/get_result?id=${a}`)).body.flux2.state === "running");
      const b = await api(q.url, "POST", MODEL, slow);
      assert.equal(b.status, 200);
      const c = await api(q.url, "POST", MODEL, slow);
      assert.equal(c.status, 429);
      assert.match(c.body.detail, /queue is full/);
      await api(q.url, "DELETE", `/v1/jobs/${b.body.id}`);
      await api(q.url, "DELETE", `/v1/jobs/${a}`);
    } finally {
      await q.close();
    }
  });

  test("URLs to loopback, private and link-local addresses are refused", async () => {
    for (const url of ["http://127.0.0.1:1/x.png", "http://[::1]/x.png", "http://169.254.169.254/latest", "http://10.0.0.1/a", "http://[::ffff:127.0.0.1]/a", "http://localhost/x.png", "file:///etc/passwd"]) {
      const r = await api(s.url, "POST", MODEL, { prompt: "x", input_image: url });
      assert.equal(r.status, 422, url);
      assert.equal(r.body.detail[0].loc.join("."), "body.input_image");
    }
    const hook = await api(s.url, "POST", MODEL, { prompt: "x", width: 64, height: 64, webhook_url: "http://127.0.0.1:9/hook" });
    assert.equal(hook.status, 422);
    assert.equal(hook.body.detail[0].loc.join("."), "body.webhook_url");
  });
});

describe("address checks and helpers", () => {
  test("isPrivateAddress covers IPv4, IPv6 and IPv4 inside IPv6", () => {
    for (const ip of ["127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
      "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::", "2001::1", "not an ip"]) {
      assert.equal(isPrivateAddress(ip), true, ip);
    }
    for (const ip of ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808"]) {
      assert.equal(isPrivateAddress(ip), false, ip);
    }
    assert.deepEqual(ipv6Groups("::ffff:1.2.3.4"), [0, 0, 0, 0, 0, 0xffff, 0x102, 0x304]);
    assert.deepEqual(ipv6Groups("1::"), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(ipv6Groups("1:2:3:4:5:6:7:8:9"), null);
    assert.throws(() => checkUrl("http://[::1]:8080/", { allowPrivate: false }), /private/);
    assert.throws(() => checkUrl("http://user:pw@example.com/", { allowPrivate: false }), /credentials/);
    assert.throws(() => checkUrl("gopher://example.com/", { allowPrivate: false }), /http/);
    assert.equal(checkUrl("http://127.0.0.1/", { allowPrivate: true }).hostname, "127.0.0.1");
  });

  test("keys are required beyond loopback or with --require-keys", () => {
    assert.equal(keysRequired({ host: "127.0.0.1", requireKeys: false }), false);
    assert.equal(keysRequired({ host: "::1", requireKeys: false }), false);
    assert.equal(keysRequired({ host: "127.0.0.1", requireKeys: true }), true);
    assert.equal(keysRequired({ host: "0.0.0.0", requireKeys: false }), true);
    assert.equal(keysRequired({ host: "192.168.1.5", requireKeys: false }), true);
  });

  test("URL fetches are bounded in time and size", async () => {
    const srv = http.createServer((req, res) => {
      if (req.url === "/slow") return void setTimeout(() => res.end("late"), 2000);
      if (req.url === "/chunked") {
        // No Content-Length: the cap must apply while reading.
        res.writeHead(200, { "transfer-encoding": "chunked" });
        for (let i = 0; i < 10; i++) res.write(Buffer.alloc(500));
        return void res.end();
      }
      res.writeHead(200, { "content-length": "5000" });
      res.end(Buffer.alloc(5000));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      const policy = { allowPrivate: true, timeoutMs: 10_000, maxBytes: 1000 };
      await assert.rejects(fetchImage(`${base}/slow`, { ...policy, timeoutMs: 300 }), /timed out/);
      await assert.rejects(fetchImage(`${base}/big`, policy), /5000 bytes, more than the limit of 1000/);
      await assert.rejects(fetchImage(`${base}/chunked`, policy), /more than the limit of 1000 bytes/);
      await assert.rejects(fetchImage(`${base}/big`, { ...policy, allowPrivate: false }), /private/);
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });

  test("static files: only inside the studio folder", async () => {
    const root = tempDir("flux2-static-");
    fs.writeFileSync(path.join(root, "index.html"), "<div id=\"root\"></div>");
    fs.mkdirSync(path.join(root, "assets"));
    fs.writeFileSync(path.join(root, "assets", "a.js"), "1");
    assert.equal(resolveStatic(root, "/"), path.join(root, "index.html"));
    assert.equal(resolveStatic(root, "/assets/a.js?v=1"), path.join(root, "assets", "a.js"));
    for (const bad of ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/assets/../../x", "/assets", "/missing.js", "/%00", "/%E0%A4%A"]) {
      assert.equal(resolveStatic(root, bad), null, bad);
    }
  });

  test("base64 inputs are decoded strictly", () => {
    assert.deepEqual(decodeBase64Image("aGVsbG8="), Buffer.from("hello"));
    assert.deepEqual(decodeBase64Image("data:image/png;base64,aGVs\nbG8="), Buffer.from("hello"));
    assert.throws(() => decodeBase64Image("hello world!"), /base64/);
    assert.throws(() => decodeBase64Image("data:image/png,raw"), /base64/);
  });
});

describe("webhook deliveries are durable and bounded", () => {
  test("a pending delivery survives a restart", async () => {
    let fail = true;
    const hook = await listener(() => (fail ? 503 : 200));
    const dataDir = tempDir();
    const cfg = { dataDir, webhookBaseDelayMs: 400, webhookMaxAttempts: 5 };
    let s = await testServer(cfg);
    try {
      const id = (await api(s.url, "POST", MODEL, { prompt: "durable hook", width: 64, height: 64, webhook_url: hook.url, webhook_secret: "k" })).body.id;
      await waitFor("the first (failing) delivery", () => hook.got.length >= 1, 15_000);
      await s.close();
      fail = false;
      s = await testServer(cfg);
      await waitFor("the delivery after the restart", () => s.store.webhook(id)?.state === "delivered", 15_000);
      const last = hook.got[hook.got.length - 1];
      assert.equal(last.headers["x-flux2-attempt"], "2");
      assert.ok(verifySignature("k", last.body, last.headers["x-flux2-signature"] as string));
    } finally {
      await s.close();
      await hook.close();
    }
  });

  test("a receiver that keeps failing gets maxAttempts deliveries, then none", async () => {
    const hook = await listener(() => 500);
    const s = await testServer({ webhookBaseDelayMs: 20, webhookMaxAttempts: 3 });
    try {
      const id = (await api(s.url, "POST", MODEL, { prompt: "bounded", width: 64, height: 64, webhook_url: hook.url })).body.id;
      await waitFor("the delivery to be given up", () => s.store.webhook(id)?.state === "failed", 15_000);
      await sleep(200);
      assert.equal(hook.got.length, 3);
      assert.equal(hook.got[0].headers["x-flux2-signature"], undefined, "no secret, no signature");
      assert.match(s.store.webhook(id)!.last_error!, /HTTP 500/);
    } finally {
      await s.close();
      await hook.close();
    }
  });
});
