// `flux2 train --text-encoder` (src/train/text_align.ts, src/train/text_task.ts): the picture
// descriptor, the length-bucketed batches, and the command end to end on the tiny klein-base
// checkpoint: the loss falls, the saved encoder changes only the tensors the prompt embeddings
// depend on, the folder loads in `flux2 generate`, and bad settings are refused.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { pictureDescriptor } from "../src/train/text_align.js";
import { lengthBucket } from "../src/train/text_task.js";
import { rgbToLab } from "../src/util/colour.js";
import { readAll, WeightSet } from "../src/io/safetensors.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-te-"));

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("pictureDescriptor: each cell is its mean colour in scaled CIELAB; sizes that do not divide are refused", () => {
  const W = 16, H = 8, rgb = new Uint8Array(W * H * 3);
  // Left half red, right half a blue; one cell of the red half is half white, half red.
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) rgb.set(x < 8 ? [200, 30, 40] : [20, 60, 180], (y * W + x) * 3);
  for (let y = 0; y < 2; y++) for (let x = 0; x < 4; x++) rgb.set([255, 255, 255], (y * W + x) * 3);
  const d = pictureDescriptor(rgb, W, H, 4); // cells of 4 × 2 pixels
  const cell = (cx: number, cy: number) => [0, 1, 2].map((c) => d[(cy * 4 + cx) * 3 + c]);
  const scaled = (r: number, g: number, b: number) => { const [L, a, bb] = rgbToLab(r, g, b); return [(L - 50) / 50, a / 50, bb / 50]; };
  const close = (a: number[], b: number[]) => a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5, `${a} vs ${b}`));
  close(cell(1, 2), scaled(200, 30, 40));
  close(cell(3, 0), scaled(20, 60, 180));
  close(cell(0, 0), scaled(255, 255, 255)); // the white corner cell
  assert.equal(d.length, 4 * 4 * 3);
  assert.throws(() => pictureDescriptor(rgb, W, H, 3), /does not divide/);
  assert.throws(() => pictureDescriptor(rgb.subarray(3), W, H, 4), /is not 16×8 RGB/);
});

test("lengthBucket: the smallest bucket that holds the caption, never past the maximum length", () => {
  assert.equal(lengthBucket(14, 128), 32);
  assert.equal(lengthBucket(33, 128), 48);
  assert.equal(lengthBucket(120, 128), 128);
  assert.equal(lengthBucket(20, 24), 24);
  assert.equal(lengthBucket(600, 512), 512);
});

/** The --json lines of a run's stdout that report a step. */
const stepLines = (stdout: string) => stdout.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => "loss" in l);

/** The mean loss of the last five steps must be under a third of the first five's. */
function assertLossFellToAThird(steps: { loss: number }[]): void {
  const mean = (a: { loss: number }[]) => a.reduce((s, l) => s + l.loss, 0) / a.length;
  const first = mean(steps.slice(0, 5)), last = mean(steps.slice(-5));
  assert.ok(last < first / 3, `loss ${first} → ${last}: did not fall to a third`);
}

/** 8 flat-colour pictures captioned with their colour's name (the names differ in their tokens). */
async function makeData(): Promise<string> {
  const dir = path.join(ROOT, "data");
  fs.mkdirSync(dir, { recursive: true });
  const colours: [string, number[]][] = [["red", [230, 20, 20]], ["green", [20, 200, 40]], ["blue", [20, 40, 230]], ["yellow", [240, 230, 20]],
    ["black", [10, 10, 10]], ["white", [250, 250, 250]], ["purple", [140, 40, 170]], ["orange", [250, 140, 20]]];
  for (const [i, [name, rgb]] of colours.entries()) {
    const px = Buffer.alloc(64 * 64 * 3);
    for (let k = 0; k < 64 * 64; k++) px.set(rgb, k * 3);
    await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path.join(dir, `c${i}.png`));
    fs.writeFileSync(path.join(dir, `c${i}.txt`), `a picture that is ${name} all over`);
  }
  return dir;
}

test("flux2 train --text-encoder: the loss falls, only the tensors the prompt embeddings read are changed, and the model folder generates", async () => {
  const data = await makeData();
  const out = path.join(ROOT, "run");
  const r = run(["train", "--text-encoder", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64", "--max-sequence-length", "32",
    "--steps", "40", "--batch-size", "8", "--lr", "3e-3", "--save-every", "0", "--threads", "1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /memory plan \(text/);
  assert.match(r.stderr, /8×8 thumbnails/);
  assert.match(r.stderr, /one graph per length 32\b/, "the plan counts the padded lengths in use");
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  const steps = lines.filter((l) => "loss" in l);
  assert.equal(steps.length, 40);
  assertLossFellToAThird(steps);
  const final = lines[lines.length - 1];
  assert.equal(final.status, "done");
  assert.equal(final.model, path.join(out, "model"));

  // The tiny encoder has 28 layers and klein reads hidden states 9, 18 and 27: layers 0–26 and the
  // embedding train; layer 27 and the final norm are not in the graph and are kept bit for bit.
  const base = WeightSet.open(path.join(MODEL, "text_encoder")); // sharded in two files
  const trained = readAll(path.join(out, "model", "text_encoder", "model.safetensors"));
  assert.deepEqual([...trained.keys()].sort(), [...base.keys()].sort(), "every tensor of the base is written, nothing else (no head)");
  const same = (k: string) => Buffer.from((trained.get(k)!.data as Float32Array).buffer).equals(Buffer.from(base.float32(k).buffer));
  assert.ok(!same("model.embed_tokens.weight"), "the embedding table trained");
  assert.ok(!same("model.layers.0.self_attn.q_proj.weight"));
  assert.ok(!same("model.layers.26.mlp.down_proj.weight"));
  assert.ok(same("model.layers.27.mlp.down_proj.weight"), "layer 27 feeds no output klein reads");
  assert.ok(same("model.norm.weight"));
  base.close();
  for (const part of ["transformer", "vae", "tokenizer", "scheduler", "model_index.json"]) assert.ok(fs.existsSync(path.join(out, "model", part)), part);
  // The folder generates at the length it was trained at; the base folder's index is untouched.
  const index = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, "model_index.json"), "utf8"));
  assert.equal(index(path.join(out, "model")).flux2ts.max_sequence_length, 32);
  assert.equal(index(MODEL).flux2ts?.max_sequence_length, undefined);

  const png = path.join(ROOT, "gen.png");
  const g = run(["generate", "--model", path.join(out, "model"), "--prompt", "a picture that is red all over", "--width", "64", "--height", "64", "--steps", "2", "--out", png, "--quiet"]);
  assert.equal(g.code, 0, g.stderr);
  assert.equal((await sharp(png).metadata()).width, 64);
});

test("flux2 train --text-encoder --align-pool mean: every batch is padded to the maximum length, the loss falls, and the mean embedding now tells the colours apart", async () => {
  const data = await makeData();
  const out = path.join(ROOT, "run-mean");
  const r = run(["train", "--text-encoder", "--align-pool", "mean", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64",
    "--max-sequence-length", "40", "--steps", "40", "--batch-size", "8", "--lr", "3e-3", "--save-every", "0", "--threads", "1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  // Mean pooling pads every batch to the maximum length, 40 (the captions are 33–34 tokens with the chat template).
  assert.match(r.stderr, /one graph per length 40\b/);
  const steps = stepLines(r.stdout);
  assertLossFellToAThird(steps);
  // What the head read (the average prompt embedding over all 40 positions) must now differ more
  // between "red" and "green" captions, relative to its size, than the untrained encoder's did.
  const { OrtBackend } = await import("../src/backend/ort.js");
  const { loadPipeline } = await import("../src/loaders/pretrained.js");
  const { KLEIN_TEXT_LAYERS } = await import("../src/models/qwen3.js");
  const spread = async (model: string) => {
    const pipe = loadPipeline(model, { backend: new OrtBackend({ threads: 1 }), keepLoaded: true });
    const e = await pipe.encodePrompts(["a picture that is red all over", "a picture that is green all over"], 40, [...KLEIN_TEXT_LAYERS]);
    await pipe.release();
    const [n, J] = [e.shape[1], e.shape[2]];
    const avg = (b: number) => { const m = new Float64Array(J); for (let t = 0; t < n; t++) for (let j = 0; j < J; j++) m[j] += e.data[(b * n + t) * J + j] / n; return m; };
    const [a, b] = [avg(0), avg(1)];
    let d = 0, s = 0;
    for (let j = 0; j < J; j++) { d += (a[j] - b[j]) ** 2; s += a[j] ** 2 + b[j] ** 2; }
    return Math.sqrt(d / s);
  };
  const before = await spread(MODEL), after = await spread(path.join(out, "model"));
  // Measured: 0.062 → 0.80 here; the same 40 steps with attention pooling reach 0.32 (the head
  // can read a few caption tokens instead, so the average moves less).
  assert.ok(after > 6 * before, `relative distance of the mean embeddings ${before.toFixed(4)} → ${after.toFixed(4)}`);
});

test("flux2 train --text-encoder --align-pool mean --align-padding bucket: batches are padded to their length bucket, and the loss falls", async () => {
  const data = await makeData();
  const out = path.join(ROOT, "run-mean-bucket");
  const r = run(["train", "--text-encoder", "--align-pool", "mean", "--align-padding", "bucket", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64",
    "--max-sequence-length", "64", "--steps", "40", "--batch-size", "8", "--lr", "3e-3", "--save-every", "0", "--threads", "1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  // The captions are 33–34 tokens with the chat template: the 48 bucket, where --align-padding max would pad to 64.
  assert.match(r.stderr, /one graph per length 48\b/);
  assert.doesNotMatch(r.stderr, /length 64\b/);
  const steps = stepLines(r.stdout);
  assertLossFellToAThird(steps);
  // The setting is saved with the run, so that --resume trains on as it started.
  const settings = JSON.parse(fs.readFileSync(path.join(out, "train.json"), "utf8"));
  assert.equal(settings["align-padding"], "bucket");
});

test("flux2 train --text-encoder refuses settings it cannot honour", async () => {
  const data = await makeData();
  const refuse = (extra: string[], re: RegExp) => {
    const r = run(["train", "--text-encoder", "--model", MODEL, "--data", data, "--out", path.join(ROOT, `bad-${extra.join("")}`), "--steps", "1", ...extra]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, re);
  };
  refuse(["--full"], /--full, --vae and --text-encoder train different models/);
  refuse(["--caption-dropout", "0.1"], /empty caption has no picture/);
  refuse(["--sample-every", "5"], /--sample-every is not supported with --text-encoder/);
  refuse(["--rank", "4"], /LoRA settings/);
  refuse(["--timestep-sampling", "logit_normal"], /no timesteps/);
  refuse(["--checkpoint-activations"], /not implemented for --text-encoder/);
  refuse(["--align-pool", "max"], /--align-pool must be attention or mean/);
  refuse(["--align-pool", "mean", "--align-padding", "short"], /--align-padding must be max or bucket/);
  refuse(["--align-padding", "bucket"], /--align-padding is a setting of --text-encoder --align-pool mean/);
  const r = run(["train", "--full", "--align-pool", "mean", "--model", MODEL, "--data", data, "--out", path.join(ROOT, "bad-pool-full"), "--steps", "1"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--align-pool is a --text-encoder setting/);
});
