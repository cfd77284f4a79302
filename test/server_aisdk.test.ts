// Real BFL clients against `flux2 serve` on loopback (issue 20): the Vercel AI
// SDK's Black Forest Labs provider (`ai` + `@ai-sdk/black-forest-labs`),
// configured as its users configure it for BFL — their own BFL key and a base
// URL — and driven through every call it offers: text-to-image with size,
// aspect ratio and provider width/height/format; editing with 1 and 3 images
// and a mask; seeds; prompt upsampling and safety tolerance; moderation and
// errors; a cancelled task; webhooks. Local calls run the tiny klein
// checkpoint; flux-2-pro goes through the server's BFL provider to the fake BFL
// API (test/fake_bfl.ts), which is how a moderated result reaches the client.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import sharp from "sharp";
import { generateImage } from "ai";
import { createBlackForestLabs } from "@ai-sdk/black-forest-labs";
import { sizeForAspectRatio } from "../src/api/aspect.js";
import { FakeBfl } from "./fake_bfl.js";
import { api, untilDone, waitFor } from "./helpers/net.js";
import { pngImage, testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;

// The client prints a warning per call for `size` (it derives aspect_ratio from it); the tests check warnings themselves.
(globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;

/** What a user of BFL's API has: their own key (unknown to our server). */
const USER_BFL_KEY = "bfl_4f1c9a7e-user-own-key";

async function size(bytes: Uint8Array) {
  const m = await sharp(Buffer.from(bytes)).metadata();
  return { width: m.width, height: m.height, format: m.format };
}

/** The message of what `fn` throws (the AI SDK's errors carry the server's detail). */
async function failure(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    const err = e as Error & { responseBody?: string; statusCode?: number };
    return `${err.statusCode ?? ""} ${err.message} ${err.responseBody ?? ""}`;
  }
  assert.fail("expected the call to fail");
}

describe("the AI SDK's BFL provider against flux2 serve", () => {
  let fake: FakeBfl;
  let s: Server;
  let bfl: ReturnType<typeof createBlackForestLabs>;
  const klein = () => bfl.image("flux-2-klein-4b");

  before(async () => {
    fake = await new FakeBfl().start();
    // Loopback, no keys configured: the default local server.
    s = await testServer({ bflKey: fake.apiKey, bflBaseUrl: fake.url, providerPollMs: 20, providerBackoffMs: 20, upsampleTokens: 8 });
    assert.equal(s.keysRequired, false);
    bfl = createBlackForestLabs({ baseURL: `${s.url}/v1`, apiKey: USER_BFL_KEY, pollIntervalMillis: 50, pollTimeoutMillis: 60_000 });
  });
  after(async () => {
    await s?.close();
    await fake?.close();
  });

  test("text to image with size: a client with only its own BFL key works; the result carries seed and times", async () => {
    const r = await generateImage({ model: klein(), prompt: "a red fox in the snow", size: "256x192", seed: 11, maxRetries: 0 });
    assert.deepEqual(await size(r.image.uint8Array), { width: 256, height: 192, format: "png" });
    assert.equal(r.image.mediaType, "image/png");
    const meta = (r.providerMetadata.blackForestLabs as { images: Record<string, number>[] }).images[0];
    assert.equal(meta.seed, 11);
    assert.ok(meta.start_time > 1e9 && meta.end_time >= meta.start_time && meta.duration >= 0, JSON.stringify(meta));
    // The client derived aspect_ratio 4:3 from the size and sent it with width and height: accepted.
    assert.ok(r.warnings.some((w) => w.type === "unsupported" && w.feature === "size"));
  });

  test("an unknown key on an open server: served as anonymous, with a warning header", async () => {
    const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", width: 64, height: 64 }, { "x-key": "f2k_not_ours" });
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    assert.match(sub.headers.get("x-flux2-warning") ?? "", /unknown API key ignored/);
    // Anonymous: the task is the anonymous caller's (seen without a key), and a known key sees no warning.
    assert.equal((await api(s.url, "GET", `/v1/jobs/${sub.body.id}`)).status, 200);
    assert.equal((await api(s.url, "GET", "/v1/jobs?limit=1")).headers.get("x-flux2-warning"), null);
    assert.equal((await untilDone(s.url, sub.body.id)).status, "Ready");
  });

  test("aspectRatio: about 1 MP in that shape (forwarded to BFL as width/height); with one side given, the other follows", async () => {
    const pro = await generateImage({ model: bfl.image("flux-2-pro"), prompt: "a wide beach", aspectRatio: "16:9", seed: 3, maxRetries: 0 });
    assert.deepEqual(await size(pro.image.uint8Array), { width: 1360, height: 768, format: "png" });
    const sent = fake.submitted[fake.submitted.length - 1].body;
    assert.deepEqual([sent.width, sent.height, sent.aspect_ratio], [1360, 768, undefined]);

    const local = await generateImage({
      model: klein(), prompt: "a wide beach", aspectRatio: "16:9", seed: 3, maxRetries: 0,
      providerOptions: { blackForestLabs: { width: 256 } },
    });
    assert.deepEqual(await size(local.image.uint8Array), { width: 256, height: 144, format: "png" });

    // Width and height win over a ratio of another shape, and the answer says the ratio was not used.
    const both = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", aspect_ratio: "16:9", width: 64, height: 64 }, { "x-key": "f2k_not_ours" });
    assert.equal(both.status, 200);
    assert.match(both.headers.get("x-flux2-warning") ?? "", /unknown API key ignored.*; aspect_ratio 16:9 not used: width and height \(64x64\) were given/);
    const same = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", aspect_ratio: "4:3", width: 256, height: 192 });
    assert.equal(same.headers.get("x-flux2-warning"), null, "the AI SDK's own ratio of the size it sends is not worth a warning");
    for (const id of [both.body.id, same.body.id]) await untilDone(s.url, id);

    const bad = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", aspect_ratio: "5:1" });
    assert.equal(bad.status, 422);
    assert.deepEqual(bad.body.detail[0].loc, ["body", "aspect_ratio"]);
  });

  test("provider options width, height and outputFormat", async () => {
    const r = await generateImage({
      model: klein(), prompt: "a lighthouse", seed: 5, maxRetries: 0,
      providerOptions: { blackForestLabs: { width: 256, height: 320, outputFormat: "jpeg" } },
    });
    assert.deepEqual(await size(r.image.uint8Array), { width: 256, height: 320, format: "jpeg" });
    assert.equal(r.image.mediaType, "image/jpeg");
  });

  test("editing: prompt.images with 1 and 3 images, and a mask", async () => {
    const a = await pngImage(96, 80), b = await pngImage(64, 64), c = await pngImage(80, 64);
    const one = await generateImage({ model: klein(), prompt: { text: "a red door", images: [a] }, seed: 1, maxRetries: 0 });
    assert.deepEqual(await size(one.image.uint8Array), { width: 96, height: 80, format: "png" }, "the size follows the first image");
    const three = await generateImage({ model: klein(), prompt: { text: "combine them", images: [a, b.toString("base64"), c] }, seed: 1, maxRetries: 0 });
    assert.deepEqual(await size(three.image.uint8Array), { width: 96, height: 80, format: "png" });
    const jobs = (await api(s.url, "GET", "/v1/jobs?limit=2")).body.jobs;
    assert.ok(jobs[0].request.input_image_3 && !jobs[0].request.input_image_4, "three references reached the server");

    // White = repaint: the client sends BFL's `mask` field, taken as our mask_image.
    const mask = await sharp({ create: { width: 96, height: 80, channels: 3, background: "#000" } })
      .composite([{ input: { create: { width: 48, height: 80, channels: 3, background: "#fff" } }, left: 48, top: 0 }]).png().toBuffer();
    const inpaint = await generateImage({ model: klein(), prompt: { text: "a red door", images: [a], mask }, seed: 1, maxRetries: 0 });
    assert.deepEqual(await size(inpaint.image.uint8Array), { width: 96, height: 80, format: "png" });
    // Same prompt, image and seed as `one`: only the mask differs, and it changed the image.
    assert.ok(!Buffer.from(inpaint.image.uint8Array).equals(Buffer.from(one.image.uint8Array)));
    assert.equal((await api(s.url, "GET", "/v1/jobs?limit=1")).body.jobs[0].request.mask_image.startsWith(s.url), true);
    // Refusals name the field the client sent.
    const png = b.toString("base64");
    const refusals: [string, Record<string, unknown>, RegExp][] = [
      ["/v1/flux-2-klein-4b", { prompt: "x", mask: png }, /needs input_image/],
      ["/v1/flux-2-klein-4b", { prompt: "x", input_image: png, mask: png, mask_image: png }, /not both/],
      ["/v1/flux-2-pro", { prompt: "x", input_image: png, mask: png }, /does not take mask/],
    ];
    for (const [model, body, msg] of refusals) {
      const r = await api(s.url, "POST", model, body);
      assert.equal(r.status, 422, JSON.stringify(r.body));
      assert.ok(r.body.detail.some((d: { loc: string[]; msg: string }) => d.loc.join(".") === "body.mask" && msg.test(d.msg)), JSON.stringify(r.body));
    }
  });

  test("seed: the same seed gives the same image, another seed another", async () => {
    const gen = (seed: number) => generateImage({ model: klein(), prompt: "a cat", size: "256x256", seed, maxRetries: 0 });
    const [x, y, z] = [await gen(42), await gen(42), await gen(43)];
    assert.ok(Buffer.from(x.image.uint8Array).equals(Buffer.from(y.image.uint8Array)));
    assert.ok(!Buffer.from(x.image.uint8Array).equals(Buffer.from(z.image.uint8Array)));
  });

  test("promptUpsampling rewrites the prompt with the model's own LLM; a safetyTolerance stricter than an unmoderated server can honour is refused", async () => {
    const plain = await generateImage({ model: klein(), prompt: "a lighthouse", size: "256x256", seed: 3, maxRetries: 0 });
    const up = await generateImage({ model: klein(), prompt: "a lighthouse", size: "256x256", seed: 3, maxRetries: 0, providerOptions: { blackForestLabs: { promptUpsampling: true } } });
    // Same seed and size: only the rewritten prompt can change the picture.
    assert.ok(!Buffer.from(plain.image.uint8Array).equals(Buffer.from(up.image.uint8Array)), "upsampling changed nothing");
    // With input images it would need [dev]'s vision tower: refused naming the field.
    const png = await pngImage(64, 64);
    const withImage = await failure(() => generateImage({ model: klein(), prompt: { text: "x", images: [png] }, seed: 1, maxRetries: 0, providerOptions: { blackForestLabs: { promptUpsampling: true } } }));
    assert.match(withImage, /^422 .*prompt_upsampling/s);
    // This test server has no moderation configured: a stricter tolerance cannot be honoured.
    const strict = await failure(() => generateImage({ model: klein(), prompt: "x", seed: 1, maxRetries: 0, providerOptions: { blackForestLabs: { safetyTolerance: 0 } } }));
    assert.match(strict, /^422 .*safety_tolerance/s);
    // Off, and a tolerance at or above BFL's default, are what the server does anyway.
    const ok = await generateImage({
      model: klein(), prompt: "x", size: "256x256", seed: 1, maxRetries: 0,
      providerOptions: { blackForestLabs: { promptUpsampling: false, safetyTolerance: 4 } },
    });
    assert.equal((await size(ok.image.uint8Array)).width, 256);
    // Provider models forward both to BFL.
    await generateImage({ model: bfl.image("flux-2-pro"), prompt: "x", size: "256x256", maxRetries: 0, providerOptions: { blackForestLabs: { promptUpsampling: true, safetyTolerance: 1 } } });
    const sent = fake.submitted[fake.submitted.length - 1].body;
    assert.deepEqual([sent.prompt_upsampling, sent.safety_tolerance], [true, 1]);
  });

  test("fields of other BFL models (imagePrompt, imagePromptStrength, raw) are refused naming the field", async () => {
    for (const [opt, field] of [[{ imagePrompt: "aGVsbG8=" }, "image_prompt"], [{ imagePromptStrength: 0.5 }, "image_prompt_strength"], [{ raw: true }, "raw"]] as const) {
      const msg = await failure(() => generateImage({ model: klein(), prompt: "x", maxRetries: 0, providerOptions: { blackForestLabs: opt } }));
      assert.match(msg, new RegExp(`^422 .*"loc":\\["body","${field}"\\].*extra_forbidden`, "s"));
    }
  });

  test("a moderated result and errors reach the client as BFL's do", async () => {
    // BFL's Request Moderated is not a final status for this client: it keeps polling until its timeout.
    const short = createBlackForestLabs({ baseURL: `${s.url}/v1`, apiKey: USER_BFL_KEY, pollIntervalMillis: 50, pollTimeoutMillis: 1500 });
    const moderated = await failure(() => generateImage({ model: short.image("flux-2-pro"), prompt: "[request-moderated] x", maxRetries: 0 }));
    assert.match(moderated, /timed out/);
    const polled = (await api(s.url, "GET", "/v1/jobs?limit=1")).body.jobs[0];
    assert.equal((await api(s.url, "GET", `/v1/get_result?id=${polled.id}`)).body.status, "Request Moderated");

    // Content Moderated is not among the statuses this client accepts: its response check fails.
    const content = await failure(() => generateImage({ model: bfl.image("flux-2-pro"), prompt: "[content-moderated] x", maxRetries: 0 }));
    assert.match(content, /Invalid JSON response|Type validation failed/);
    const contentJob = (await api(s.url, "GET", "/v1/jobs?limit=1")).body.jobs[0];
    assert.equal((await api(s.url, "GET", `/v1/get_result?id=${contentJob.id}`)).body.status, "Content Moderated");

    const bflError = await failure(() => generateImage({ model: bfl.image("flux-2-pro"), prompt: "[error] x", maxRetries: 0 }));
    assert.match(bflError, /generation failed/);
    // A mask of the wrong size is refused at submit (422 naming the field), before anything is stored.
    const img = await pngImage(96, 80), mask = await pngImage(64, 64);
    const local = await failure(() => generateImage({ model: klein(), prompt: { text: "x", images: [img], mask }, maxRetries: 0 }));
    assert.match(local, /^422 .*mask_image.*same size/s);
    // An unknown model is refused at submit, with BFL's {detail} body.
    const unknown = await failure(() => generateImage({ model: bfl.image("flux-2-nope"), prompt: "x", maxRetries: 0 }));
    assert.match(unknown, /^404 .*Model not found: flux-2-nope/s);
  });

  test("a task cancelled on the server ends the client's call with an error", async () => {
    const call = failure(() => generateImage({ model: klein(), prompt: "to cancel", providerOptions: { blackForestLabs: { width: 512, height: 512 } }, maxRetries: 0 }));
    const id = await waitFor("the task to run", async () => {
      const j = (await api(s.url, "GET", "/v1/jobs?limit=1")).body.jobs[0];
      return j?.request.prompt === "to cancel" && j.state === "running" ? j.id as string : null;
    });
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/${id}`)).status, 200);
    assert.match(await call, /generation failed/);
    const r = (await api(s.url, "GET", `/v1/get_result?id=${id}`)).body;
    assert.deepEqual([r.status, r.details.cancelled, r.flux2.state], ["Error", true, "cancelled"]);
  });

  test("webhookUrl and webhookSecret: a loopback receiver gets the signed result", async () => {
    const got: { headers: http.IncomingHttpHeaders; body: Buffer }[] = [];
    const receiver = http.createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      got.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.end();
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    try {
      const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
      const r = await generateImage({
        model: klein(), prompt: "hooked", size: "256x256", seed: 9, maxRetries: 0,
        providerOptions: { blackForestLabs: { webhookUrl: hook, webhookSecret: "s3cret" } },
      });
      await waitFor("the webhook", () => got.length > 0);
      const body = JSON.parse(got[0].body.toString());
      assert.equal(body.status, "Ready");
      assert.equal(body.result.seed, 9);
      const image = await fetch(body.result.sample);
      assert.ok(Buffer.from(await image.arrayBuffer()).equals(Buffer.from(r.image.uint8Array)), "the webhook's sample is the image the client got");
      assert.equal(got[0].headers["x-flux2-signature"], `sha256=${createHmac("sha256", "s3cret").update(got[0].body).digest("hex")}`);
    } finally {
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }
  });

  test("get_result speaks BFL's shape: no `state`, `preview` or nulls where BFL has numbers; extras under flux2", async () => {
    const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "shape", width: 64, height: 64, seed: 2 });
    const done = await untilDone(s.url, sub.body.id);
    assert.deepEqual(Object.keys(done).sort(), ["details", "flux2", "id", "progress", "result", "status"]);
    assert.equal(done.flux2.state, "ready");
    for (const k of ["seed", "start_time", "end_time", "duration"]) assert.equal(typeof done.result[k], "number", k);
    assert.match(done.result.sample, /^http:\/\/127\.0\.0\.1:\d+\/v1\/images\/[0-9a-f]{64}\.png$/);
    // The OpenAPI document says the same, and lists BFL's aspect_ratio and mask for the local model.
    const doc = (await api(s.url, "GET", "/openapi.json")).body;
    const shape = doc.paths["/v1/get_result"].get.responses["200"].content["application/json"].schema.properties;
    assert.ok(shape.flux2 && !shape.state && !shape.preview, Object.keys(shape).join());
    const body = doc.paths["/v1/flux-2-klein-4b"].post.requestBody.content["application/json"].schema.properties;
    assert.ok(body.aspect_ratio && body.mask && !body.image_prompt && !body.raw);
    const missing = (await api(s.url, "GET", "/v1/get_result?id=nope")).body;
    assert.deepEqual(missing, { id: "nope", status: "Task not found", result: null, progress: null, details: null });
  });
});

describe("a server that requires keys", () => {
  test("refuses a client's unknown key as before (403), and takes a known one", async () => {
    const s = await testServer({ requireKeys: true });
    try {
      const c = createBlackForestLabs({ baseURL: `${s.url}/v1`, apiKey: USER_BFL_KEY });
      assert.match(await failure(() => generateImage({ model: c.image("flux-2-klein-4b"), prompt: "x", maxRetries: 0 })), /^403 .*Invalid API key/s);
      const res = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x" }, { "x-key": USER_BFL_KEY });
      assert.equal(res.headers.get("x-flux2-warning"), null);
    } finally {
      await s.close();
    }
  });
});

test("aspect ratios map to about 1 MP with sides that are multiples of 16", () => {
  assert.deepEqual(sizeForAspectRatio("1:1"), { width: 1024, height: 1024 });
  assert.deepEqual(sizeForAspectRatio("16:9"), { width: 1360, height: 768 });
  assert.deepEqual(sizeForAspectRatio("9:16"), { width: 768, height: 1360 });
  assert.deepEqual(sizeForAspectRatio("21:9"), { width: 1568, height: 672 });
  for (const r of ["4:3", "3:2", "2:3", "21:9", "9:21", "7:5"]) {
    const { width, height } = sizeForAspectRatio(r);
    const [w, h] = r.split(":").map(Number);
    assert.ok(width % 16 === 0 && height % 16 === 0, r);
    assert.ok(Math.abs(width * height / 2 ** 20 - 1) < 0.06, `${r}: ${width}×${height}`);
    assert.ok(Math.abs(width / height - w / h) / (w / h) < 0.03, `${r}: ${width}×${height}`);
  }
  assert.deepEqual(sizeForAspectRatio("4:3", 16, { width: 256 }), { width: 256, height: 192 });
  assert.throws(() => sizeForAspectRatio("22:9"), /21:9/);
  assert.throws(() => sizeForAspectRatio("0:9"), /positive/);
});
