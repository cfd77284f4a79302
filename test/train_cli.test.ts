// `flux2 train` end to end on the tiny klein-base checkpoint: the loss falls and
// the LoRA changes what `flux2 generate --lora` makes; Ctrl-C + --resume equals an
// uninterrupted run; bad input is refused or skipped with a clear message.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { readAll } from "../src/io/safetensors.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
// 96 keeps the 96×64 images at their size and the 64×64 ones too: two buckets.
const COMMON = ["--model", MODEL, "--resolution", "96", "--max-sequence-length", "32"];
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-cli-"));

/** 8 captioned checkerboards (two aspect ratios) and one corrupt file. */
async function makeData(): Promise<string> {
  const dir = path.join(ROOT, "data");
  if (fs.existsSync(dir)) return dir;
  fs.mkdirSync(dir);
  const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [128, 64, 0], [0, 64, 128]];
  for (const [i, [r, g, b]] of colours.entries()) {
    const w = i % 2 ? 96 : 64, h = 64;
    const px = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const on = ((x >> 3) + (y >> 3)) % 2, k = (y * w + x) * 3;
      px[k] = on ? r : 255 - r; px[k + 1] = on ? g : 255 - g; px[k + 2] = on ? b : 255 - b;
    }
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(dir, `img${i}.png`));
    fs.writeFileSync(path.join(dir, `img${i}.txt`), `a checkerboard number ${i}`);
  }
  fs.writeFileSync(path.join(dir, "broken.png"), "not an image");
  return dir;
}

/** A tensor's bytes as text, to compare weights exactly. */
const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function jsonLines(stdout: string): any[] {
  return stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

test("flux2 train on 8 captioned images halves the loss, and the LoRA changes what flux2 generate --lora makes", async () => {
  const data = await makeData();
  const out = path.join(ROOT, "run-a");
  const r = run(["train", ...COMMON, "--data", data, "--out", out, "--steps", "60", "--lr", "1e-2", "--rank", "8", "--alpha", "8",
    "--targets", "to_q,to_k,to_v,to_out.0,to_qkv_mlp_proj,attn.to_out,proj_out,x_embedder,linear_in,linear_out", "--save-every", "0", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipping .*broken\.png/, "the corrupt image is named");
  assert.match(r.stderr, /memory plan/);
  const lines = jsonLines(r.stdout);
  const steps = lines.filter((l) => "loss" in l);
  assert.equal(steps.length, 60);
  assert.deepEqual(Object.keys(steps[0]), ["step", "loss", "lr"]);
  const mean = (a: any[]) => a.reduce((s, l) => s + l.loss, 0) / a.length;
  const first = mean(steps.slice(0, 10)), last = mean(steps.slice(-10));
  assert.ok(last <= first / 2, `loss ${first} → ${last}: not halved`);
  const final = lines[lines.length - 1];
  assert.equal(final.status, "done");
  assert.equal(final.lora, path.join(out, "lora.safetensors"));
  assert.ok(fs.existsSync(final.lora) && fs.existsSync(final.loss_curve) && fs.existsSync(final.checkpoint));
  const meta = await sharp(final.loss_curve).metadata();
  assert.equal(meta.format, "png");

  const gen = (extra: string[], file: string) => {
    const g = run(["generate", "--model", MODEL, "--prompt", "a checkerboard number 0", "--width", "64", "--height", "64", "--steps", "2", "--seed", "1", "--out", file, "--quiet", ...extra]);
    assert.equal(g.code, 0, g.stderr);
    return fs.readFileSync(file);
  };
  const base = await sharp(gen([], path.join(ROOT, "base.png"))).raw().toBuffer();
  const tuned = await sharp(gen(["--lora", final.lora], path.join(ROOT, "tuned.png"))).raw().toBuffer();
  assert.ok(!base.equals(tuned), "the LoRA changes the image");
});

test("flux2 train: Ctrl-C saves a resumable checkpoint, and the resumed run equals an uninterrupted one", async () => {
  const data = await makeData();
  const args = (out: string) => ["train", ...COMMON, "--data", data, "--out", out, "--steps", "6", "--lr", "5e-3", "--rank", "4", "--lr-scheduler", "cosine", "--warmup-steps", "2", "--json"];
  const whole = run(args(path.join(ROOT, "run-whole")));
  assert.equal(whole.code, 0, whole.stderr);

  const out = path.join(ROOT, "run-stopped");
  const child = spawn(process.execPath, [CLI, ...args(out)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  let sent = false;
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on("data", (d) => {
      stdout += d;
      // One Ctrl-C (a second one quits at once).
      if (!sent && stdout.includes('"step":2,')) sent = child.kill("SIGINT");
    });
    child.on("close", (c) => resolve(c));
  });
  assert.equal(code, 130, stderr);
  const last = jsonLines(stdout).at(-1);
  assert.equal(last.status, "interrupted");
  assert.ok(last.step >= 2 && last.step < 6, `stopped at ${last.step}`);
  assert.ok(fs.existsSync(last.checkpoint));
  assert.ok(!fs.existsSync(path.join(out, "lora.safetensors")));

  const resumed = run(["train", "--out", out, "--resume", out, "--json"]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, /reusing the latent and text cache/);
  assert.match(resumed.stderr, new RegExp(`resumed from .* at step ${last.step}`));
  const a = fs.readFileSync(path.join(ROOT, "run-whole", "lora.safetensors"));
  const b = fs.readFileSync(path.join(out, "lora.safetensors"));
  assert.ok(a.equals(b), "the resumed LoRA is byte-identical to the uninterrupted one");
  const lossesWhole = jsonLines(whole.stdout).filter((l) => "loss" in l).map((l) => l.loss);
  const lossesResumed = jsonLines(stdout).concat(jsonLines(resumed.stdout)).filter((l) => "loss" in l).map((l) => l.loss);
  assert.deepEqual(lossesResumed, lossesWhole);

  // Another rank or target list is refused, naming the mismatch.
  const bad = run(["train", "--out", out, "--resume", out, "--rank", "8", "--steps", "8"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /rank: the checkpoint has 4, this run 8/);
  const badTargets = run(["train", "--out", out, "--resume", out, "--targets", "to_q", "--steps", "8"]);
  assert.equal(badTargets.code, 1);
  assert.match(badTargets.stderr, /targets: the checkpoint has/);
});

test("flux2 train: an empty folder is refused, a NaN loss stops keeping the last good checkpoint", async () => {
  const empty = path.join(ROOT, "empty");
  fs.mkdirSync(empty, { recursive: true });
  const e = run(["train", ...COMMON, "--data", empty, "--out", path.join(ROOT, "run-empty")]);
  assert.equal(e.code, 1);
  assert.match(e.stderr, /no images .*same-name \.txt caption/);
  const badInit = run(["train", ...COMMON, "--data", empty, "--out", path.join(ROOT, "run-init"), "--lora-init", "xavier"]);
  assert.equal(badInit.code, 1);
  assert.match(badInit.stderr, /--lora-init must be gaussian or kaiming, got "xavier"/);

  const data = await makeData();
  const out = path.join(ROOT, "run-nan");
  const r = run(["train", ...COMMON, "--data", data, "--out", out, "--steps", "6", "--lr", "1e30", "--save-every", "1", "--max-grad-norm", "0"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /training stopped at step \d: the (loss|gradient norm) is (NaN|Infinity)/);
  assert.match(r.stderr, /Lower --lr/);
  assert.ok(!fs.existsSync(path.join(out, "lora.safetensors")));
});

test("flux2 train --ema-decay: the LoRA written is the moving average kept in the checkpoint, not the last weights", async () => {
  const data = await makeData();
  const out = path.join(ROOT, "run-ema");
  const args = ["train", ...COMMON, "--data", data, "--out", out, "--steps", "5", "--lr", "1e-2", "--rank", "4", "--save-every", "0", "--json"];
  const r = run([...args, "--ema-decay", "0.9"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /× 6 float32 copies \(with the EMA\)/);
  const final = jsonLines(r.stdout).at(-1);
  assert.equal(final.ema_decay, 0.9);
  const ck = readAll(final.checkpoint);
  const ema = new Set([...ck].filter(([k]) => k.startsWith("ema.")).map(([, t]) => bytes(t.data)));
  const raw = new Set([...ck].filter(([k]) => k.startsWith("param.")).map(([, t]) => bytes(t.data)));
  assert.ok(ema.size > 0 && ema.size === raw.size);
  const lora = [...readAll(final.lora).values()].map((t) => bytes(t.data));
  assert.ok(lora.every((b) => ema.has(b)), "every LoRA tensor is one of the checkpoint's averages");
  assert.ok(lora.some((b) => !raw.has(b)), "the averages are not the last weights");

  // Resuming with another decay is refused, naming it; a decay outside (0, 1) is refused up front.
  const bad = run(["train", "--out", out, "--resume", out, "--ema-decay", "0.99", "--steps", "6"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /ema_decay: the checkpoint has 0.9, this run 0.99/);
  const one = run([...args.map((a) => (a === out ? path.join(ROOT, "run-ema-bad") : a)), "--ema-decay", "1"]);
  assert.equal(one.code, 1);
  assert.match(one.stderr, /--ema-decay must be a number above 0 and below 1 \(e\.g\. 0\.999\), got "1"/);
});

test("flux2 train --adam-beta2: the setting reaches AdamW and the run's train.json; a decay of 1 is refused", async () => {
  const data = await makeData();
  const args = (out: string) => ["train", ...COMMON, "--data", data, "--out", out, "--steps", "3", "--lr", "1e-2", "--rank", "4", "--save-every", "0", "--json"];
  const loraBytes = (file: string) => [...readAll(file).values()].map((t) => bytes(t.data)).join();
  const plain = run(args(path.join(ROOT, "run-adam-default")));
  assert.equal(plain.code, 0, plain.stderr);
  const fast = run([...args(path.join(ROOT, "run-adam-05")), "--adam-beta2", "0.5"]);
  assert.equal(fast.code, 0, fast.stderr);
  // AdamW's first step is lr · sign(g) whatever the betas; from the second on beta2 weighs the history.
  assert.notEqual(loraBytes(jsonLines(fast.stdout).at(-1).lora), loraBytes(jsonLines(plain.stdout).at(-1).lora));
  assert.equal(JSON.parse(fs.readFileSync(path.join(ROOT, "run-adam-05", "train.json"), "utf8"))["adam-beta2"], "0.5", "a resumed run keeps the setting");
  const one = run([...args(path.join(ROOT, "run-adam-bad")), "--adam-beta2", "1"]);
  assert.equal(one.code, 1);
  assert.match(one.stderr, /--adam-beta2 must be a number at least 0 and below 1 \(e\.g\. 0\.999\), got "1"/);
});

test("flux2 train --multi-caption: every line of a caption file is encoded, and the run trains on them", async () => {
  const src = await makeData();
  const data = path.join(ROOT, "data-multi");
  fs.mkdirSync(data, { recursive: true });
  for (const i of [0, 1, 2]) {
    fs.copyFileSync(path.join(src, `img${i}.png`), path.join(data, `img${i}.png`));
    fs.writeFileSync(path.join(data, `img${i}.txt`), `a checkerboard number ${i}\nboard ${i}, squares\n`);
  }
  const out = path.join(ROOT, "run-multi");
  const r = run(["train", ...COMMON, "--data", data, "--out", out, "--multi-caption", "--steps", "3", "--lr", "1e-3", "--rank", "4", "--save-every", "0", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /3 image\(s\) in .*, 3 sample\(s\), 6 captions \(--multi-caption\)/);
  const cacheDir = path.join(out, "cache");
  const [cacheFile] = fs.readdirSync(cacheDir).filter((f) => f.endsWith(".safetensors"));
  const meta = JSON.parse(fs.readFileSync(path.join(cacheDir, cacheFile)).subarray(8, 8 + Number(fs.readFileSync(path.join(cacheDir, cacheFile)).readBigUInt64LE(0))).toString("utf8")).__metadata__;
  assert.deepEqual(JSON.parse(meta.flux2_train_cache).captions.sort(), [0, 1, 2].flatMap((i) => [`a checkerboard number ${i}`, `board ${i}, squares`]).sort());
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "train.json"), "utf8"))["multi-caption"], true, "a resumed run keeps the option");
  assert.equal(jsonLines(r.stdout).at(-1).status, "done");
});

test("the training memory plan adds what training allocates to what the process already holds", async () => {
  const { planTrainMemory } = await import("../src/train/memory.js");
  const { openCheckpoint, transformerConfig } = await import("../src/pipeline/checkpoint.js");
  const ck = openCheckpoint(MODEL);
  const cfg = transformerConfig(ck);
  const base = { trainableParams: 1_000_000, batch: 2, width: 64, height: 64, textLength: 32, checkpointActivations: false, vae: false };
  const bare = planTrainMemory(ck, cfg, base);
  const held = planTrainMemory(ck, cfg, { ...base, processBytes: 500 * 2 ** 20 });
  assert.equal(bare.neededBytes, held.neededBytes, "what is still to allocate does not depend on what is held");
  assert.equal(held.peakBytes - bare.peakBytes, 500 * 2 ** 20);
  assert.ok(held.lines.some((l) => /process now +500\.0 MiB/.test(l)), held.lines.join("\n"));
  const ema = planTrainMemory(ck, cfg, { ...base, ema: true });
  assert.equal(ema.neededBytes - bare.neededBytes, 1_000_000 * 4, "--ema-decay: one float32 copy more");
  // The training heap's garbage allowance counts once per thread (src/cli/training_heap.ts).
  const heap = planTrainMemory(ck, cfg, { ...base, jsHeapBytes: 100 * 2 ** 20, workers: 2 });
  const noHeap = planTrainMemory(ck, cfg, { ...base, workers: 2 });
  assert.equal(heap.neededBytes - noHeap.neededBytes, 2 * 100 * 2 ** 20);
  assert.ok(heap.lines.some((l) => /JS heap +up to 100\.0 MiB of garbage a thread/.test(l)), heap.lines.join("\n"));
  // Planned after the data is encoded (as flux2 train does), the encoders' peak is behind it: at
  // 512² the VAE's encode activations outweigh this tiny transformer's training.
  const big = { ...base, trainableParams: 1000, width: 512, height: 512 };
  const before = planTrainMemory(ck, cfg, big), after = planTrainMemory(ck, cfg, { ...big, encoded: true });
  assert.ok(after.neededBytes < before.neededBytes / 2, `${after.neededBytes} vs ${before.neededBytes}`);
  assert.ok(after.lines.some((l) => /encode data +done/.test(l)), after.lines.join("\n"));
});
