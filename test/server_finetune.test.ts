// Fine-tuning as a server job on the tiny klein-base checkpoint: POST /v1/finetune
// → progress (step, loss, ETA) → Ready with the LoRA in --lora-dir, which then
// loads in a generation request; a server restart mid-training resumes from the
// last checkpoint (not from step 0); a crashed trainer resumes too; a cancel
// stops it; bad requests are refused naming the field.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import sharp from "sharp";
import { api, TINY, TINY_BASE, untilDone, waitFor } from "./helpers/net.js";
import { tempDir, testServer } from "./helpers/server.js";

const loraDir = tempDir("flux2-ft-loras-");
const dataDir = tempDir("flux2-ft-data-");
const models = [{ id: "flux-2-klein-4b", dir: TINY }, { id: "klein-base", dir: TINY_BASE }];
const open: { close(): Promise<void> }[] = [];
after(async () => {
  for (const s of open) await s.close().catch(() => {});
});

async function start() {
  const s = await testServer({ dataDir, loraDir, models });
  open.push(s);
  return s;
}

/** Four 64×64 checkerboards in different colours, as base64, with captions. */
async function images(): Promise<{ image: string; caption: string }[]> {
  const out = [];
  for (const [i, [r, g, b]] of [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]].entries()) {
    const px = Buffer.alloc(64 * 64 * 3);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) {
      const on = ((x >> 3) + (y >> 3)) % 2, k = (y * 64 + x) * 3;
      px[k] = on ? r : 255 - r; px[k + 1] = on ? g : 255 - g; px[k + 2] = on ? b : 255 - b;
    }
    out.push({ image: (await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer()).toString("base64"), caption: `a checkerboard number ${i}` });
  }
  return out;
}

const SETTINGS = { base_model: "klein-base", resolution: 64, rank: 4, learning_rate: 1e-3, checkpoint_every: 1, max_sequence_length: 32, trigger_word: "chk", sample_steps: 2 };

async function status(url: string, id: string) {
  const r = await api(url, "GET", `/v1/finetune/${id}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

test("POST /v1/finetune refuses bad requests, naming the field", async () => {
  const s = await start();
  const none = await api(s.url, "POST", "/v1/finetune", { images: [] });
  assert.equal(none.status, 422);
  assert.deepEqual(none.body.detail[0].loc, ["body", "images"]);
  const bad = await api(s.url, "POST", "/v1/finetune", { images: [{ image: "not an image!", caption: "x" }] });
  assert.equal(bad.status, 422);
  assert.deepEqual(bad.body.detail[0].loc, ["body", "images", 0, "image"]);
  const extra = await api(s.url, "POST", "/v1/finetune", { images: [{ image: "aGk=", caption: "x" }], epochs: 3 });
  assert.equal(extra.status, 422);
  assert.deepEqual(extra.body.detail[0].loc, ["body", "epochs"]);
  const ema = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, ema_decay: 1, images: await images() });
  assert.equal(ema.status, 422);
  assert.deepEqual(ema.body.detail[0].loc, ["body", "ema_decay"]);
  const model = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, base_model: "nope", images: await images() });
  assert.equal(model.status, 422);
  assert.match(model.body.detail[0].msg, /no local model "nope" on this server \(it has flux-2-klein-4b, klein-base\)/);
  await s.close();
});

test("a fine-tuning job survives a server restart: it resumes from its last checkpoint, ends Ready, and its LoRA loads", async () => {
  let s = await start();
  const sub = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, name: "checkers", steps: 30, sample_every: 15, ema_decay: 0.9, images: await images() });
  assert.equal(sub.status, 200, JSON.stringify(sub.body));
  const id = sub.body.id;
  // Progress while it runs: step, loss and (from the second timed step) an ETA.
  const running = await waitFor("step 3", async () => {
    const st = await status(s.url, id);
    assert.notEqual(st.status, "Error", JSON.stringify(st));
    return st.step >= 3 ? st : null;
  }, 120_000, 100);
  assert.equal(running.state, "running");
  assert.equal(running.losses.length, running.step);
  assert.ok(running.losses.every((l: number) => Number.isFinite(l)));
  const gr = await api(s.url, "GET", `/v1/get_result?id=${id}`);
  assert.equal(gr.body.status, "Pending");
  assert.ok(gr.body.progress > 0 && gr.body.progress < 1, `progress ${gr.body.progress}`);

  await s.close(); // the trainer saves a checkpoint and the job goes back to the queue
  const stoppedAt = (JSON.parse(fs.readFileSync(path.join(dataDir, "finetune", id, "status.json"), "utf8")) as { step: number }).step;
  assert.ok(stoppedAt >= 3 && stoppedAt < 30, `stopped at step ${stoppedAt}`);

  s = await start();
  const done = await untilDone(s.url, id, {}, 180_000);
  assert.equal(done.status, "Ready", JSON.stringify(done));
  assert.equal(done.result.finetune.lora, "checkers");
  const st = await status(s.url, id);
  assert.equal(st.resumed_from, stoppedAt, "resumed from the checkpoint saved at shutdown, not from step 0");
  assert.equal(st.settings.ema_decay, 0.9, "the moving average survives the restart (the resumed trainer refuses another decay)");
  assert.equal(st.step, 30);
  assert.equal(st.losses.length, 30, "the loss curve spans the whole run");
  assert.ok(st.samples.some((x: { step: number }) => x.step === 30), JSON.stringify(st.samples));
  const sample = await fetch(st.samples[0].url);
  assert.equal((await sharp(Buffer.from(await sample.arrayBuffer())).metadata()).format, "png");
  const curve = await fetch(st.loss_curve);
  assert.equal(curve.headers.get("content-type"), "image/png");
  assert.ok(fs.existsSync(path.join(loraDir, "checkers.safetensors")));

  // The LoRA loads and applies in a generation request on the base model.
  const gen = await api(s.url, "POST", "/v1/klein-base", { prompt: "chk, a checkerboard", width: 64, height: 64, steps: 2, seed: 1, loras: [{ name: "checkers", strength: 1 }] });
  assert.equal(gen.status, 200, JSON.stringify(gen.body));
  const img = await untilDone(s.url, gen.body.id, {}, 60_000);
  assert.equal(img.status, "Ready", JSON.stringify(img));
  assert.equal(img.result.loras[0].name, "checkers");
  assert.ok(img.result.loras[0].applied > 0, JSON.stringify(img.result.loras));

  // The name is now taken.
  const again = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, name: "checkers", steps: 2, images: await images() });
  assert.equal(again.status, 409);
  await s.close();
});

test("a crashed trainer resumes from its checkpoint on the same server; a cancel stops a run", async () => {
  const s = await start();
  // A webhook receiver: the finished job is POSTed to it as generation results are.
  const hooks: any[] = [];
  const receiver = http.createServer((req, res) => {
    let b = "";
    req.on("data", (c) => (b += c));
    req.on("end", () => { hooks.push(JSON.parse(b)); res.writeHead(204).end(); });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  after(() => receiver.close());
  const hookUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/done`;
  const sub = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, name: "crashy", steps: 30, images: await images(), webhook_url: hookUrl });
  assert.equal(sub.status, 200, JSON.stringify(sub.body));
  const id = sub.body.id;
  await waitFor("step 2", async () => (await status(s.url, id)).step >= 2, 120_000, 100);
  const pid = Number(fs.readFileSync(path.join(dataDir, "finetune", id, "child.pid"), "utf8"));
  process.kill(pid, "SIGKILL");
  const done = await untilDone(s.url, id, {}, 180_000);
  assert.equal(done.status, "Ready", JSON.stringify(done));
  const st = await status(s.url, id);
  assert.ok(st.resumed_from >= 1, `resumed from ${st.resumed_from}`);
  assert.equal(st.attempts, 2);
  assert.ok(fs.existsSync(path.join(loraDir, "crashy.safetensors")));
  await waitFor("the webhook", () => hooks.length >= 1, 15_000);
  assert.equal(hooks[0].id, id);
  assert.equal(hooks[0].status, "Ready");
  assert.equal(hooks[0].result.finetune.lora, "crashy");
  const doc = (await api(s.url, "GET", "/openapi.json")).body;
  assert.ok(doc.paths["/v1/finetune"].post.requestBody.content["application/json"].schema.properties.trigger_word);
  assert.ok(doc.paths["/v1/storyboard"].post.requestBody.content["application/json"].schema.properties.shots);

  const c = await api(s.url, "POST", "/v1/finetune", { ...SETTINGS, name: "cancelled", steps: 500, images: await images() });
  await waitFor("step 1", async () => (await status(s.url, c.body.id)).step >= 1, 120_000, 100);
  const del = await api(s.url, "DELETE", `/v1/jobs/${c.body.id}`);
  assert.equal(del.status, 200, JSON.stringify(del.body));
  const pidFile = path.join(dataDir, "finetune", c.body.id, "child.pid");
  await waitFor("the trainer to stop", () => !fs.existsSync(pidFile), 20_000, 50);
  assert.equal((await status(s.url, c.body.id)).state, "cancelled");
  assert.ok(!fs.existsSync(path.join(loraDir, "cancelled.safetensors")));
  await s.close();
});
