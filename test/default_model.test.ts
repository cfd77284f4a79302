// The bundled default model (issue 12): `flux2 generate`, `flux2 edit` and `flux2 serve` without
// --model use it, with the size and text length its folder records. A random-init flux2-mini
// folder (built once, a few seconds) stands in for the trained one via FLUX2_DEFAULT_MODEL.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { writeMiniModel } from "../src/mini/model.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { DEFAULT_MODEL_ID, defaultModelPath, requireDefaultModel } from "../src/pipeline/default_model.js";
import { readPngText } from "../src/pipeline/image.js";
import { modelDefaults, readFolderHints, sizeFromReference } from "../src/pipeline/model_defaults.js";
import { serveConfig } from "../src/cli/serve.js";
import { api, TINY, untilDone } from "./helpers/net.js";
import { pngImage, testServer } from "./helpers/server.js";
import { repoRoot } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-default-"));
const mini = path.join(tmp, "mini");
writeMiniModel(mini, 0);
const missing = path.join(tmp, "no-such-model");
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
function flux2(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: tmp, encoding: "utf8", timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("the default model is models/flux2-mini in the package root, or $FLUX2_DEFAULT_MODEL", () => {
  assert.equal(defaultModelPath({}).path, path.join(repoRoot, "models", "flux2-mini"));
  assert.equal(defaultModelPath({ FLUX2_DEFAULT_MODEL: mini }).path, mini);
  assert.equal(requireDefaultModel({ FLUX2_DEFAULT_MODEL: mini }), mini);
  assert.throws(() => requireDefaultModel({ FLUX2_DEFAULT_MODEL: missing }), (e: Error) =>
    e.message.includes(missing) && e.message.includes("--model PATH") && e.message.includes("FLUX2_DEFAULT_MODEL"));
});

test("a folder's flux2ts hints set the defaults; a real klein folder keeps FLUX.2's", () => {
  const d = modelDefaults(openCheckpoint(mini));
  assert.deepEqual([d.width, d.height, d.maxSequenceLength, d.maxSide, d.steps, d.guidance, d.cfg], [64, 64, 64, 128, 50, 4, true]);
  const t = modelDefaults(openCheckpoint(TINY));
  assert.deepEqual([t.width, t.height, t.maxSequenceLength, t.maxSide, t.steps], [1024, 1024, 512, null, 4]);
  // A reference larger than the model's largest side is fitted (aspect kept, multiples of 8).
  assert.deepEqual(sizeFromReference(d, 256, 192, 8), { width: 128, height: 96 });
  assert.deepEqual(sizeFromReference(d, 96, 64, 8), { width: 96, height: 64 });
  assert.deepEqual(sizeFromReference(t, 2000, 1000, 16), { width: 2000, height: 1000 });
});

test("bad flux2ts hints are refused with the key and the range", () => {
  const dir = path.join(tmp, "bad");
  fs.mkdirSync(dir);
  const index = JSON.parse(fs.readFileSync(path.join(mini, "model_index.json"), "utf8"));
  for (const [hints, re] of [[{ resolution: "64" }, /flux2ts\.resolution must be an integer from 64/], [{ steps: 0 }, /flux2ts\.steps/],
    [{ resolution: 128, max_resolution: 64 }, /max_resolution \(64\) is below/], [[64], /must be an object/]] as const) {
    fs.writeFileSync(path.join(dir, "model_index.json"), JSON.stringify({ ...index, flux2ts: hints }));
    assert.throws(() => readFolderHints(dir), re);
  }
  fs.writeFileSync(path.join(dir, "model_index.json"), JSON.stringify({ ...index, flux2ts: { resolution: 96, steps: 8, guidance: 2.5, model: "x" } }));
  assert.deepEqual(readFolderHints(dir), { resolution: 96, steps: 8, guidance: 2.5 });
});

test("the pipeline uses the folder's size and text length when none is given", async () => {
  const pipe = loadPipeline(mini);
  const shapes = new Map<string, readonly number[]>();
  try {
    const r = await pipe.generate({ prompt: "a #1E90FF circle on a white background", steps: 1, trace: (n, t) => shapes.set(n, t.shape) });
    assert.deepEqual([r.width, r.height], [64, 64]);
    assert.deepEqual(shapes.get("prompt_input_ids"), [1, 64]);
    assert.deepEqual(shapes.get("negative_input_ids"), [1, 64], "klein base: CFG with an empty negative prompt");
  } finally {
    await pipe.release();
  }
});

test("flux2 generate without --model uses the default model at its own size and steps", { timeout: 120_000 }, async () => {
  const r = flux2(["generate", "--prompt", "a red apple", "--steps", "2", "--out", "g.png"], { FLUX2_DEFAULT_MODEL: mini });
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, new RegExp(`no --model given: using ${mini.replace(/[/\\]/g, ".")}`));
  const meta = await sharp(path.join(tmp, "g.png")).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 64]);
  const rec = JSON.parse(readPngText(fs.readFileSync(path.join(tmp, "g.png"))).flux2);
  assert.deepEqual([rec.steps, rec.guidance, rec.variant, rec.model], [2, 4, "klein-base", "mini"]);
  // A size beyond what the model is made for runs, with a note.
  const big = flux2(["generate", "--prompt", "x", "--steps", "1", "--width", "192", "--height", "128", "--out", "b.png"], { FLUX2_DEFAULT_MODEL: mini });
  assert.equal(big.code, 0, big.err);
  assert.match(big.err, /note: this model is made for at most 128×128 pixels \(default 64×64\); 192×128 will look poor/);
  assert.equal((await sharp(path.join(tmp, "b.png")).metadata()).width, 192);
});

test("flux2 generate and edit say what to do when the default model is missing", () => {
  for (const args of [["generate", "--prompt", "x"], ["edit", "-i", "x.png", "--prompt", "x"]]) {
    const r = flux2(args, { FLUX2_DEFAULT_MODEL: missing });
    assert.equal(r.code, 1);
    assert.match(r.err, /^flux2: FLUX2_DEFAULT_MODEL is .*no-such-model, which is not a FLUX\.2 diffusers folder.*Pass --model PATH/m);
  }
});

test("flux2 edit without --model fits a large reference to the model's size", { timeout: 120_000 }, async () => {
  fs.writeFileSync(path.join(tmp, "in.png"), await pngImage(256, 192));
  const r = flux2(["edit", "-i", "in.png", "--prompt", "make it red", "--steps", "1", "--out", "e.png"], { FLUX2_DEFAULT_MODEL: mini });
  assert.equal(r.code, 0, r.err);
  const meta = await sharp(path.join(tmp, "e.png")).metadata();
  assert.deepEqual([meta.width, meta.height], [128, 96]);
});

test("flux2 serve without --model serves the default model as flux2-mini", async () => {
  const saved = process.env.FLUX2_DEFAULT_MODEL;
  try {
    process.env.FLUX2_DEFAULT_MODEL = mini;
    assert.deepEqual(serveConfig(["--port", "0"])!.models, [{ id: DEFAULT_MODEL_ID, dir: mini }]);
    assert.deepEqual(serveConfig(["--model", `k=${TINY}`])!.models.map((m) => m.id), ["k"]);
    assert.deepEqual(serveConfig(["--queue", "redis://127.0.0.1:1"])!.models, [], "with --queue, workers bring the models");
    process.env.FLUX2_DEFAULT_MODEL = missing;
    assert.throws(() => serveConfig([]), /Pass --model PATH/);
    assert.deepEqual(serveConfig(["--bfl-key", "k"])!.models, [], "a BFL key alone still serves the provider models");
  } finally {
    if (saved === undefined) delete process.env.FLUX2_DEFAULT_MODEL; else process.env.FLUX2_DEFAULT_MODEL = saved;
  }
});

test("/v1/models reports the mini's real limits and defaults; larger sizes are refused", async () => {
  const s = await testServer({ models: [{ id: DEFAULT_MODEL_ID, dir: mini }] });
  try {
    const m = (await api(s.url, "GET", "/v1/models")).body.models.find((x: any) => x.id === DEFAULT_MODEL_ID);
    assert.equal(m.variant, "klein-base");
    assert.deepEqual(m.defaults, { steps: 50, guidance: 4, width: 64, height: 64 });
    assert.deepEqual([m.limits.min_side, m.limits.multiple_of, m.limits.max_pixels], [64, 8, 128 * 128]);
    assert.equal(m.limits.steps.default, 50);
    const big = await api(s.url, "POST", `/v1/${DEFAULT_MODEL_ID}`, { prompt: "x", width: 256, height: 256 });
    assert.equal(big.status, 422);
    assert.match(JSON.stringify(big.body), /at most 16384 pixels \(e\.g\. 128×128\)/);
    // No size: the model's 64×64, made through the server's pipeline.
    const sub = await api(s.url, "POST", `/v1/${DEFAULT_MODEL_ID}`, { prompt: "a red apple", steps: 1, seed: 3 });
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    const done = await untilDone(s.url, sub.body.id, {}, 60_000);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    assert.deepEqual([done.result.width, done.result.height], [64, 64]);
  } finally {
    await s.close();
  }
});
