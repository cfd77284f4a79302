// LoRAs named in API requests: resolved inside --lora-dir, switched between
// jobs on one running server, recorded in the output, refused when unknown.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { readPngText } from "../src/pipeline/image.js";
import { api, untilDone } from "./helpers/net.js";
import { tempDir, testServer } from "./helpers/server.js";
import { goldenPath } from "./golden.js";

const loraDir = tempDir();
fs.copyFileSync(goldenPath("lora/lora_kohya.safetensors"), path.join(loraDir, "style.safetensors"));
fs.copyFileSync(goldenPath("lora/lora_bfl.safetensors"), path.join(loraDir, "detail.safetensors"));
const server = testServer({ loraDir });
after(async () => (await server).close());

async function run(body: Record<string, unknown>) {
  const s = await server;
  const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "a fox", width: 64, height: 64, seed: 11, ...body });
  assert.equal(sub.status, 200, JSON.stringify(sub.body));
  const done = await untilDone(s.url, sub.body.id);
  assert.equal(done.status, "Ready", JSON.stringify(done));
  lastResult = done.result;
  return Buffer.from(await (await fetch(done.result.sample)).arrayBuffer());
}
let lastResult: any;

test("jobs switch LoRA sets on one server; strength 0 equals no LoRA; metadata records them", async () => {
  const base = await run({});
  const styled = await run({ loras: [{ name: "style", strength: 0.8 }, { name: "detail", strength: 1 }] });
  // The API reports what each LoRA applied.
  assert.deepEqual(lastResult.loras.map((l: any) => [l.name, l.format, l.applied > 0, l.unknown.length]), [["style", "kohya", true, 0], ["detail", "ai-toolkit", true, 0]]);
  const zero = await run({ loras: [{ name: "style", strength: 0 }] });
  const baseAgain = await run({});
  assert.ok(!styled.equals(base));
  assert.deepEqual(JSON.parse(readPngText(styled).flux2).loras, [{ name: "style", strength: 0.8 }, { name: "detail", strength: 1 }]);
  // Pixels of a zero-strength LoRA equal the base image (metadata differs).
  const sharp = (await import("sharp")).default;
  const px = (b: Buffer) => sharp(b).raw().toBuffer();
  assert.ok((await px(zero)).equals(await px(base)));
  assert.ok(baseAgain.equals(base));
});

test("an unknown LoRA, or a path instead of a name, is a 422 naming the field", async () => {
  const s = await server;
  for (const name of ["missing", "../etc/passwd"]) {
    const r = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", loras: [{ name, strength: 1 }] });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.deepEqual(r.body.detail[0].loc, ["body", "loras"]);
  }
});

test("a LoRA strength change reuses the loaded pipeline and gives the pixels a fresh pipeline gives", async () => {
  const { loadPipeline } = await import("../src/loaders/pretrained.js");
  const { TINY } = await import("./helpers/net.js");
  const style = path.join(loraDir, "style.safetensors");
  const opts = { prompt: "a fox", width: 64, height: 64, seed: 11 };
  const reused = loadPipeline(TINY, { keepLoaded: true, loras: [{ file: style, strength: 0.8, name: "style" }] });
  const fresh = loadPipeline(TINY, { loras: [{ file: style, strength: 0.3, name: "style" }] });
  try {
    const at08 = (await reused.generate(opts)).images[0].rgb;
    reused.setLoraStrengths([0.3]);
    const at03 = (await reused.generate(opts)).images[0].rgb;
    assert.equal(reused.loraReports[0].strength, 0.3);
    assert.ok(Buffer.from(at03).equals(Buffer.from((await fresh.generate(opts)).images[0].rgb)), "reused pipeline at 0.3 differs from a fresh one");
    assert.ok(!Buffer.from(at03).equals(Buffer.from(at08)), "the strength change had no effect");
    assert.throws(() => reused.setLoraStrengths([1, 1]), /2 LoRA strengths for 1 LoRAs/);
  } finally {
    await reused.release();
    await fresh.release();
  }
  // Through the server: 0.8 → 0.3 → 0.8 again on one loaded pipeline gives the first image again.
  const a = await run({ loras: [{ name: "style", strength: 0.8 }] });
  const b = await run({ loras: [{ name: "style", strength: 0.3 }] });
  const c = await run({ loras: [{ name: "style", strength: 0.8 }] });
  assert.ok(!a.equals(b));
  assert.ok(a.equals(c));
});
