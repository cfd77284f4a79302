// The training loop without a model: schedules, σ sampling, the dataset folder,
// buckets and order, and the loop's accumulation / checkpoint / resume / NaN
// behaviour with a small analytic task (the gradient engine is tested elsewhere).

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { randn, Xoshiro128 } from "../src/util/random.js";
import { learningRate, readTrainSigmas, sampleSigmas, streamSeed, trainSigmas } from "../src/train/schedule.js";
import { applyTrigger, batchesPerEpoch, bucketFor, DataError, epochBatches, makeSamples, parseFolderName, pickCaptions, scanDataset } from "../src/train/data.js";
import { FlowMatchingTask } from "../src/train/flow_task.js";
import { TextAlignTask } from "../src/train/text_task.js";
import { listCheckpoints, ResumeError, trainLoop, type LoopOptions, type TrainTask } from "../src/train/loop.js";

function tmp(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `flux2-${name}-`));
}

test("learning-rate schedules follow diffusers' get_scheduler (step k uses λ(k))", () => {
  const s = (scheduler: any, warmupSteps = 0) => ({ scheduler, lr: 1e-4, warmupSteps, totalSteps: 100 });
  assert.equal(learningRate(s("constant", 10), 0), 1e-4);
  assert.equal(learningRate(s("constant_with_warmup", 10), 0), 0);
  assert.equal(learningRate(s("constant_with_warmup", 10), 5), 0.5e-4);
  assert.equal(learningRate(s("constant_with_warmup", 10), 50), 1e-4);
  assert.equal(learningRate(s("linear", 10), 10), 1e-4);
  assert.ok(Math.abs(learningRate(s("linear", 10), 55) - 0.5e-4) < 1e-12);
  assert.equal(learningRate(s("linear", 10), 100), 0);
  assert.ok(Math.abs(learningRate(s("cosine", 0), 50) - 0.5e-4) < 1e-12);
  assert.ok(Math.abs(learningRate(s("cosine", 0), 0) - 1e-4) < 1e-12);
  assert.ok(learningRate(s("cosine", 0), 100) < 1e-12);
});

test("σ table and sampling follow the klein script's FlowMatchEulerDiscreteScheduler", () => {
  const t = readTrainSigmas("testdata/golden/checkpoints/klein_base/scheduler/scheduler_config.json");
  // klein base uses dynamic shifting: the training table is unshifted, σ_i = (1000 − i) / 1000.
  assert.equal(t.sigmas.length, 1000);
  assert.equal(t.sigmas[0], 1);
  assert.equal(t.sigmas[999], Math.fround(0.001));
  assert.equal(t.sigmas[500], Math.fround(0.5));
  // Without dynamic shifting the shift applies: σ' = 3σ / (1 + 2σ).
  const shifted = trainSigmas(1000, 3, false);
  assert.ok(Math.abs(shifted.sigmas[500] - 0.75) < 1e-6);
  // Uniform: index floor(u·1000) of the table, u from the generator.
  const rng = new Xoshiro128(streamSeed(7, 3, 0, 0));
  const copy = new Xoshiro128(streamSeed(7, 3, 0, 0));
  const got = sampleSigmas(t, { kind: "uniform" }, rng, 64);
  for (let b = 0; b < 64; b++) assert.equal(got[b], t.sigmas[Math.trunc(copy.nextDouble() * 1000)]);
  // Logit-normal concentrates around σ = 0.5 (mean 0, std 1: about 68% within sigmoid(±1)).
  const ln = sampleSigmas(t, { kind: "logit_normal", mean: 0, std: 1 }, new Xoshiro128(1n), 4000);
  const inside = ln.filter((s) => s > 0.269 && s < 0.731).length / ln.length;
  assert.ok(inside > 0.64 && inside < 0.72, `logit-normal mass within ±1: ${inside}`);
  // The direction of --logit-mean (diffusers': u indexes the table from σ 1 down): a negative mean
  // favours high noise, a positive one low noise. docs/flux2-mini.md once had this backwards.
  const avg = (mean: number) => sampleSigmas(t, { kind: "logit_normal", mean, std: 1 }, new Xoshiro128(2n), 4000).reduce((a, s) => a + s, 0) / 4000;
  const noisy = avg(-1), clean = avg(1);
  assert.ok(noisy > 0.66 && noisy < 0.74, `mean −1: average σ ${noisy}`);
  assert.ok(clean > 0.26 && clean < 0.34, `mean +1: average σ ${clean}`);
  assert.notEqual(streamSeed(1, 2, 3, 4), streamSeed(1, 2, 4, 3));
});

async function png(file: string, w: number, h: number, rgb: [number, number, number]) {
  await sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toFile(file);
}

test("dataset folder: captions, kohya repeat folders, trigger word, corrupt images skipped with a warning", async () => {
  const dir = tmp("data");
  await png(path.join(dir, "a.png"), 96, 64, [255, 0, 0]);
  fs.writeFileSync(path.join(dir, "a.txt"), "a red square\n");
  fs.mkdirSync(path.join(dir, "3_blue_thing"));
  await png(path.join(dir, "3_blue_thing", "b.png"), 64, 64, [0, 0, 255]);
  fs.writeFileSync(path.join(dir, "broken.png"), "this is not a png");
  const warnings: string[] = [];
  const ds = await scanDataset(dir, { trigger: "sks", warn: (s) => warnings.push(s) });
  assert.equal(ds.images.length, 2);
  assert.deepEqual(ds.images.map((i) => [path.basename(i.file), i.caption, i.repeats]), [["b.png", "sks, blue thing", 3], ["a.png", "sks, a red square", 1]]);
  assert.equal(ds.skipped.length, 1);
  assert.ok(warnings.some((w) => w.includes("broken.png")), warnings.join("\n"));
  assert.equal(ds.uncaptioned, 1);
  assert.deepEqual(parseFolderName("10_my_char"), { repeats: 10, name: "my char" });
  assert.equal(parseFolderName("photos"), null);
  assert.equal(applyTrigger("a photo of [trigger] at night", "ohwx"), "a photo of ohwx at night");
  assert.equal(applyTrigger("ohwx on a beach", "ohwx"), "ohwx on a beach");
});

test("dataset folder: --multi-caption reads one caption per line, and each visit picks one of them, seeded", async () => {
  const dir = tmp("multicap");
  await png(path.join(dir, "a.png"), 64, 64, [255, 0, 0]);
  fs.writeFileSync(path.join(dir, "a.txt"), "a red square\n\n  a crimson block \r\nred box\n");
  await png(path.join(dir, "b.png"), 64, 64, [0, 0, 255]);
  fs.writeFileSync(path.join(dir, "b.txt"), "a blue square\n");
  const plain = await scanDataset(dir);
  assert.deepEqual(plain.images.map((i) => i.captions), [["a red square\n\n  a crimson block \r\nred box"], ["a blue square"]], "without the option a file is one caption");
  const multi = await scanDataset(dir, { multiCaption: true, trigger: "sks" });
  assert.deepEqual(multi.images.map((i) => i.captions), [["sks, a red square", "sks, a crimson block", "sks, red box"], ["sks, a blue square"]]);
  assert.equal(multi.images[0].caption, "sks, a red square");

  const samples = makeSamples(multi, [64]);
  const picks = Array.from({ length: 300 }, (_, k) => pickCaptions(multi.images, samples, [0, 1], 7, k, 0));
  assert.deepEqual(pickCaptions(multi.images, samples, [0, 1], 7, 5, 0), picks[5], "a pure function of (seed, step, micro-batch)");
  assert.ok(picks.every((p) => p[1] === "sks, a blue square"), "an image with one caption always gets it");
  const counts = new Map<string, number>();
  for (const p of picks) counts.set(p[0], (counts.get(p[0]) ?? 0) + 1);
  assert.equal(counts.size, 3);
  for (const [c, n] of counts) assert.ok(n > 70 && n < 130, `${c} picked ${n} times of 300`);
  const other = Array.from({ length: 300 }, (_, k) => pickCaptions(multi.images, samples, [0, 1], 8, k, 0)[0]);
  assert.notDeepEqual(other, picks.map((p) => p[0]), "another seed picks otherwise");

  // Both tasks train on the picked caption: the transformer gets its cached embedding, the text encoder its tokens.
  const embeds = new Map<string, Float32Array>(multi.images.flatMap((i) => i.captions).map((c, j) => [c, new Float32Array([j])]));
  const data = { latents: [new Float32Array(4), new Float32Array(4)], latentShapes: [[4, 1, 1], [4, 1, 1]] as [number, number, number][], embeds, embedLengths: new Map([...embeds.keys()].map((c) => [c, 1])), emptyByLength: new Map(), embedDim: 1, file: "", reused: false };
  const seen: number[][] = [];
  const flowTrainer = { params: new Map(), lossAndGrads: async (b: { embeds: Float32Array }) => (seen.push([...b.embeds]), { loss: 0, grads: new Map() }) };
  const flow = new FlowMatchingTask(flowTrainer as any, samples, multi.images, data, { seed: 7, batchSize: 2, gradAccum: 1, captionDropout: 0, sigmas: trainSigmas(), sampling: { kind: "uniform" } });
  const tokenized: string[][] = [];
  const tokenizer = { encode: (prompts: string[], L: number) => (tokenized.push(prompts), { inputIds: new BigInt64Array(prompts.length * L), attentionMask: new BigInt64Array(prompts.length * L).fill(1n) }) };
  const textTrainer = { params: new Map(), lossAndGrads: async () => ({ loss: 0, grads: new Map() }) };
  const captionData = { lengths: [4, 4], descriptors: [new Float32Array(3), new Float32Array(3)] };
  const text = new TextAlignTask(textTrainer, tokenizer as any, samples, multi.images, captionData, { seed: 7, batchSize: 2, gradAccum: 1, maxLength: 8, padToMax: true });
  for (let k = 0; k < 40; k++) {
    const batch = flow.batchOf(k, 0);
    const expected = pickCaptions(multi.images, samples, batch, 7, k, 0);
    await flow.microBatch(k, 0);
    assert.deepEqual(seen[k], expected.map((c) => embeds.get(c)![0]), `flow step ${k}`);
    await text.microBatch(k, 0);
    assert.deepEqual(tokenized[k], expected, `text step ${k}`);
  }
  assert.equal(new Set(seen.flat()).size, 4, "every caption of the data reached the transformer");
});

test("dataset folder: an empty folder and images too small for a bucket are refused, saying what to do", async () => {
  const empty = tmp("empty");
  await assert.rejects(scanDataset(empty), (e: Error) => e instanceof DataError && /no images/.test(e.message) && /\.txt caption/.test(e.message));
  const small = tmp("small");
  await png(path.join(small, "tiny.png"), 40, 200, [0, 255, 0]);
  const ds = await scanDataset(small);
  assert.throws(() => makeSamples(ds, [512]), (e: Error) => e instanceof DataError && /tiny\.png/.test(e.message) && /at least 64 px/.test(e.message));
});

test("buckets keep the aspect ratio at about R² pixels, sides multiples of 16, never upscaled", () => {
  assert.deepEqual(bucketFor(1024, 1024, 512), { width: 512, height: 512 });
  const b = bucketFor(1920, 1080, 1024);
  assert.equal(b.width % 16, 0);
  assert.equal(b.height % 16, 0);
  assert.ok(b.width * b.height <= 1024 * 1024 && b.width * b.height > 0.9 * 1024 * 1024, `${b.width}x${b.height}`);
  assert.ok(Math.abs(b.width / b.height - 1920 / 1080) < 0.03);
  assert.deepEqual(bucketFor(100, 80, 1024), { width: 96, height: 80 });
});

test("epoch order: every sample × repeats once per epoch, one bucket per batch, a pure function of (seed, epoch)", () => {
  const images = [0, 1, 2, 3, 4].map((i) => ({ file: `${i}.png`, caption: "", captions: [""], repeats: i === 4 ? 2 : 1, width: i % 2 ? 128 : 64, height: 64 }));
  const samples = images.map((img, i) => ({ image: i, resolution: 64, bucket: { width: img.width === 128 ? 128 : 64, height: 64 } }));
  const e0 = epochBatches(samples, images, 2, 5, 0);
  assert.equal(e0.length, batchesPerEpoch(samples, images, 2));
  const flat = e0.flat().sort();
  assert.deepEqual(flat, [0, 1, 2, 3, 4, 4]);
  for (const b of e0) assert.equal(new Set(b.map((s) => samples[s].bucket.width)).size, 1);
  assert.deepEqual(epochBatches(samples, images, 2, 5, 0), e0);
  assert.notDeepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((e) => epochBatches(samples, images, 2, 5, e)), [0, 1, 2, 3, 4, 5, 6, 7].map(() => e0));
});

/** loss = mean over 8 seeded targets t of (w − t)², w a 4-vector: gradients are exact. */
class QuadraticTask implements TrainTask {
  readonly params = new Map([["w", new Float32Array([1, -2, 3, 0.5])]]);
  calls: [number, number][] = [];
  constructor(private seed: number, private nanAt = -1) {}
  async microBatch(step: number, micro: number) {
    this.calls.push([step, micro]);
    const t = randn(streamSeed(this.seed, 9, step, micro), 4);
    const w = this.params.get("w")!;
    let loss = 0;
    const g = new Float32Array(4);
    for (let i = 0; i < 4; i++) {
      loss += (w[i] - t[i]) ** 2 / 4;
      g[i] = (2 * (w[i] - t[i])) / 4;
    }
    return { loss: step === this.nanAt ? NaN : loss, grads: new Map([["w", g]]) };
  }
}

function loopOptions(runDir: string, over: Partial<LoopOptions> = {}): LoopOptions {
  return {
    steps: 6, gradAccum: 2, maxGradNorm: 1, adam: { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-4 },
    schedule: { scheduler: "cosine", lr: 0.1, warmupSteps: 1, totalSteps: 6 }, runDir, saveEvery: 0, keepCheckpoints: 2,
    identity: { model: "m", rank: 4, targets: ["to_q"] }, ...over,
  };
}

test("training loop: accumulation visits every micro-batch, loss falls, an interrupted + resumed run equals an uninterrupted one bit for bit", async () => {
  const whole = new QuadraticTask(3);
  const a = await trainLoop(whole, loopOptions(tmp("run-a")));
  assert.equal(a.status, "done");
  assert.equal(whole.calls.length, 12);
  assert.deepEqual(whole.calls.slice(0, 3), [[0, 0], [0, 1], [1, 0]]);
  assert.ok(a.losses[5] < a.losses[0], `losses ${a.losses}`);

  const runDir = tmp("run-b");
  const first = new QuadraticTask(3);
  const stop = { stop: false };
  const b1 = await trainLoop(first, loopOptions(runDir, { stopSignal: stop, onStep: (s) => { if (s.step === 3) stop.stop = true; } }));
  assert.equal(b1.status, "interrupted");
  assert.equal(b1.step, 3);
  assert.ok(b1.lastCheckpoint && fs.existsSync(b1.lastCheckpoint));
  const second = new QuadraticTask(3);
  const b2 = await trainLoop(second, loopOptions(runDir, { resume: runDir }));
  assert.equal(b2.status, "done");
  assert.deepEqual(second.calls[0], [3, 0]);
  assert.deepEqual(second.params.get("w"), whole.params.get("w"));
  assert.deepEqual(b2.losses, a.losses);
  // keepCheckpoints = 2: the step-3 and step-6 checkpoints remain.
  assert.deepEqual(listCheckpoints(path.join(runDir, "checkpoints")).map((f) => path.basename(f)), ["step-000003.safetensors", "step-000006.safetensors"]);
});

test("training loop: resuming a run of another rank or target list is refused naming the mismatch", async () => {
  const runDir = tmp("run-c");
  await trainLoop(new QuadraticTask(1), loopOptions(runDir, { steps: 2, schedule: { scheduler: "constant", lr: 0.1, warmupSteps: 0, totalSteps: 2 } }));
  await assert.rejects(trainLoop(new QuadraticTask(1), loopOptions(runDir, { resume: runDir, identity: { model: "m", rank: 8, targets: ["to_q"] } })),
    (e: Error) => e instanceof ResumeError && /rank: the checkpoint has 4, this run 8/.test(e.message));
  await assert.rejects(trainLoop(new QuadraticTask(1), loopOptions(runDir, { resume: runDir, identity: { model: "m", rank: 4, targets: ["to_k"] } })),
    (e: Error) => e instanceof ResumeError && /targets/.test(e.message));
  await assert.rejects(trainLoop(new QuadraticTask(1), loopOptions(runDir, { resume: path.join(runDir, "nothing") })), /no such file/);
  // Other data is allowed, with a warning that the order changed.
  const other = tmp("run-c2");
  await trainLoop(new QuadraticTask(1), loopOptions(other, { steps: 1, dataFingerprint: "aaa" }));
  const logs: string[] = [];
  const r = await trainLoop(new QuadraticTask(1), loopOptions(other, { steps: 2, resume: other, dataFingerprint: "bbb", log: (s) => logs.push(s) }));
  assert.equal(r.status, "done");
  assert.ok(logs.some((l) => /the data changed/.test(l)), logs.join("\n"));
});

test("training loop: a NaN loss stops the run with a clear message and keeps the last good checkpoint", async () => {
  const runDir = tmp("run-d");
  const task = new QuadraticTask(2, 3);
  const r = await trainLoop(task, loopOptions(runDir, { saveEvery: 2 }));
  assert.equal(r.status, "nan");
  assert.equal(r.step, 3);
  assert.match(r.message!, /step 4: the loss is NaN/);
  assert.match(r.message!, /step-000002\.safetensors is kept/);
  assert.deepEqual(listCheckpoints(path.join(runDir, "checkpoints")).map((f) => path.basename(f)), ["step-000002.safetensors"]);
});

test("training loop: --ema-decay keeps diffusers' moving average, exports it, and resumes it bit for bit", async () => {
  // The reference: the weights after every step (onStep), averaged here with the formula written out.
  const steps = 8, decay = 0.5;
  const opts = (runDir: string, over: Partial<LoopOptions> = {}) => loopOptions(runDir, { steps, gradAccum: 1, emaDecay: decay, schedule: { scheduler: "constant", lr: 0.1, warmupSteps: 0, totalSteps: steps }, ...over });
  const task = new QuadraticTask(2);
  const after: Float32Array[] = [];
  const r = await trainLoop(task, opts(tmp("run-ema"), { onStep: () => { after.push(task.params.get("w")!.slice()); } }));
  assert.equal(r.status, "done");
  const want = new Float64Array(after[0].length);
  after.forEach((w, k) => {
    // (1 + k) / (10 + k) is below 0.5 until k = 8: the warm-up governs the first steps, the decay the last.
    const d = k === 0 ? 0 : Math.min(decay, (1 + k) / (10 + k));
    for (let i = 0; i < w.length; i++) want[i] = Math.fround(d * Math.fround(want[i]) + (1 - d) * w[i]);
  });
  const ema = r.ema!.get("w")!;
  for (let i = 0; i < ema.length; i++) assert.ok(Math.abs(ema[i] - want[i]) < 1e-6, `ema[${i}] ${ema[i]} vs ${want[i]}`);
  // The average is not the last weights (the test could not tell them apart otherwise).
  assert.ok(ema.some((x, i) => Math.abs(x - after[steps - 1][i]) > 1e-4));

  // Interrupted at step 3 and resumed: the same average as the uninterrupted run.
  const runDir = tmp("run-ema-b");
  const stop = { stop: false };
  await trainLoop(new QuadraticTask(2), opts(runDir, { stopSignal: stop, onStep: (s) => { if (s.step === 3) stop.stop = true; } }));
  const resumed = await trainLoop(new QuadraticTask(2), opts(runDir, { resume: runDir }));
  assert.deepEqual(resumed.ema!.get("w"), r.ema!.get("w"));

  // A checkpoint saved without the average cannot continue one; a bad decay is refused.
  const plain = tmp("run-ema-c");
  await trainLoop(new QuadraticTask(2), opts(plain, { emaDecay: undefined, steps: 2 }));
  await assert.rejects(trainLoop(new QuadraticTask(2), opts(plain, { resume: plain })), (e: Error) => e instanceof ResumeError && /no moving average/.test(e.message));
  await assert.rejects(trainLoop(new QuadraticTask(2), opts(tmp("run-ema-d"), { emaDecay: 1 })), /between 0 and 1/);
});
