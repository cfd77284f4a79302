// Text padding by length bucket for the transformer (`flux2 train --text-padding bucket`,
// `"text_padding": "bucket"` in a folder's flux2ts hints): the cache pads each caption to its own
// bucket, batches hold one text length, caption dropout uses the empty caption at that length, a
// --full run records the rule in its folder, and the pipeline then pads prompts the same way.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { OrtBackend } from "../src/backend/ort.js";
import { encodeData, type EncodedData } from "../src/train/cache.js";
import { makeSamples, scanDataset } from "../src/train/data.js";
import { FlowMatchingTask } from "../src/train/flow_task.js";
import { openCheckpoint, CheckpointError } from "../src/pipeline/checkpoint.js";
import { defaultsFor, readFolderHints } from "../src/pipeline/model_defaults.js";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { VARIANT_CARDS } from "../src/pipeline/variants.js";
import { PromptTokenizer } from "../src/text/tokenizer.js";
import { lengthBucket } from "../src/text/length.js";
import { trainSigmas } from "../src/train/schedule.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-text-padding-"));

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// With the chat template and the tiny checkpoint's tokenizer: "red" is 16 tokens (bucket 32), the
// sentence 43 (48), the list past 64 (cut to 64).
const SHORT = ["red", "a blue square", "green"];
const MEDIUM = "a small orange triangle at the top left of a white picture";
const LONG = Array.from({ length: 40 }, (_, i) => `word${i}`).join(" ");

async function makeData(captions: string[]): Promise<string> {
  const dir = fs.mkdtempSync(path.join(ROOT, "data-"));
  for (const [i, caption] of captions.entries()) {
    const px = Buffer.alloc(64 * 64 * 3);
    for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) + (k >> 6) * 11) & 255;
    await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path.join(dir, `img${i}.png`));
    fs.writeFileSync(path.join(dir, `img${i}.txt`), caption);
  }
  return dir;
}

test("the training cache pads each caption to its length bucket, and keeps the empty caption once per length in use", async () => {
  const captions = [...SHORT, MEDIUM, LONG];
  const data = await makeData(captions);
  const backend = new OrtBackend({ threads: 1 });
  const ck = openCheckpoint(MODEL);
  const ds = await scanDataset(data);
  const samples = makeSamples(ds, [64]);
  const o = { runDir: path.join(ROOT, "cache-run"), maxSequenceLength: 64, textPadding: "bucket" as const, withEmpty: true, batchSize: 2, backend, log: () => {} };
  const got = await encodeData(ck, ds.images, samples, o);

  const tokenizer = await PromptTokenizer.load(ck.tokenizer);
  const expected = new Map(captions.map((c) => [c, lengthBucket(Math.min(tokenizer.tokenCount(c), 64), 64)]));
  assert.deepEqual([...expected.values()].sort(), [32, 32, 32, 48, 64], "the captions span three buckets");
  assert.deepEqual(new Map([...got.embedLengths].sort()), new Map([...expected].sort()));
  assert.deepEqual([...got.emptyByLength.keys()].sort(), [32, 48, 64]);
  assert.ok(!got.embeds.has(""), "the dropout embedding is kept per length, not as a caption");

  const pipe = loadPipeline(ck.source, { backend, keepLoaded: true });
  const layers = [...VARIANT_CARDS[ck.variant].textLayers];
  for (const c of captions) {
    const alone = await pipe.encodePrompts([c], expected.get(c)!, layers);
    assert.deepEqual(got.embeds.get(c), alone.data, `caption ${JSON.stringify(c.slice(0, 20))} alone at its bucket`);
  }
  for (const L of [32, 48, 64]) assert.deepEqual(got.emptyByLength.get(L), (await pipe.encodePrompts([""], L, layers)).data, `the empty caption at ${L}`);
  await pipe.release();

  const again = await encodeData(ck, ds.images, samples, o);
  assert.equal(again.reused, true);
  assert.deepEqual(again.embedLengths, got.embedLengths);
  assert.deepEqual(again.emptyByLength, got.emptyByLength);
  const max = await encodeData(ck, ds.images, samples, { ...o, textPadding: "max" });
  assert.equal(max.reused, false, "max padding is another cache");
  assert.deepEqual(new Set(max.embedLengths.values()), new Set([64]));
  assert.equal(max.embeds.get("")!.length, 64 * max.embedDim, "with max padding the empty caption is one more caption");
});

test("FlowMatchingTask with bucketed captions: every batch has one text length, and a dropped caption is the empty one at that length", async () => {
  const J = 3;
  const lengths = [32, 48, 32, 48, 32, 64, 48, 32];
  const captions = lengths.map((_, i) => `caption ${i}`);
  const images = captions.map((c, i) => ({ file: `img${i}.png`, caption: c, captions: [c], width: 64, height: 64, repeats: 1 }));
  const samples = images.map((_, i) => ({ image: i, resolution: 64, bucket: { width: 64, height: 64 } }));
  const data: EncodedData = {
    latents: samples.map(() => new Float32Array(4)), latentShapes: samples.map(() => [4, 1, 1] as [number, number, number]),
    embeds: new Map(captions.map((c, i) => [c, new Float32Array(lengths[i] * J).fill(i + 1)])),
    embedLengths: new Map(captions.map((c, i) => [c, lengths[i]])),
    emptyByLength: new Map([32, 48, 64].map((L) => [L, new Float32Array(L * J).fill(-L)] as [number, Float32Array])),
    embedDim: J, file: "", reused: false,
  };
  const seen: { shape: number[]; rows: number[] }[] = [];
  const trainer = {
    params: new Map(),
    lossAndGrads: async (b: { embeds: Float32Array; embedShape: number[] }) => {
      const [B, L] = b.embedShape;
      seen.push({ shape: b.embedShape, rows: Array.from({ length: B }, (_, r) => b.embeds[r * L * J]) });
      return { loss: 0, grads: new Map() };
    },
  };
  const task = new FlowMatchingTask(trainer as any, samples as any, images as any, data, { seed: 3, batchSize: 4, gradAccum: 1, captionDropout: 0.3, sigmas: trainSigmas(), sampling: { kind: "uniform" } });
  for (let step = 0; step < 30; step++) await task.microBatch(step, 0);
  let dropped = 0;
  for (const { shape: [B, L], rows } of seen) {
    assert.equal(rows.length, B);
    for (const v of rows) {
      if (v < 0) {
        assert.equal(v, -L, "a dropped caption is the empty caption padded to the batch's length");
        dropped++;
      } else {
        assert.equal(lengths[v - 1], L, `caption ${v - 1} (${lengths[v - 1]} tokens) in a batch of length ${L}`);
      }
    }
  }
  assert.ok(dropped > 0, "caption dropout happened");
  assert.deepEqual(new Set(seen.map((s) => s.shape[1])), new Set([32, 48, 64]));
});

test("flux2 train --full --text-padding bucket: the run trains, its folder records the rule, and generating from it pads prompts to their bucket", async () => {
  const data = await makeData([...SHORT, MEDIUM]);
  const out = path.join(ROOT, "full-bucket");
  const r = run(["train", "--full", "--text-padding", "bucket", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64", "--max-sequence-length", "64",
    "--steps", "4", "--batch-size", "2", "--caption-dropout", "0.5", "--lr", "1e-3", "--save-every", "0", "--threads", "1", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const index = JSON.parse(fs.readFileSync(path.join(out, "model", "model_index.json"), "utf8"));
  assert.equal(index.flux2ts.text_padding, "bucket");
  assert.equal(index.flux2ts.max_sequence_length, 64);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "train.json"), "utf8"))["text-padding"], "bucket");
  assert.equal(readFolderHints(MODEL).text_padding, undefined, "the base folder is untouched");

  const pipe = loadPipeline(path.join(out, "model"), { backend: new OrtBackend({ threads: 1 }) });
  const shapes = new Map<string, number[]>();
  const gen = (prompt: string, extra: object = {}) => pipe.generate({ prompt, width: 64, height: 64, steps: 1, trace: (n, t) => shapes.set(n, [...t.shape]), ...extra });
  await gen("red");
  assert.deepEqual(shapes.get("prompt_embeds")!.slice(0, 2), [1, 32]);
  assert.deepEqual(shapes.get("negative_prompt_embeds")!.slice(0, 2), [1, 32], "the empty negative prompt at its own bucket");
  await gen(MEDIUM);
  assert.deepEqual(shapes.get("prompt_embeds")!.slice(0, 2), [1, 48]);
  assert.deepEqual(shapes.get("negative_prompt_embeds")!.slice(0, 2), [1, 32]);
  await gen(MEDIUM, { maxSequenceLength: 40 });
  assert.deepEqual(shapes.get("prompt_embeds")!.slice(0, 2), [1, 40], "never past the maximum length");
  await gen("red", { textPadding: "max" });
  assert.deepEqual(shapes.get("prompt_embeds")!.slice(0, 2), [1, 64], "the caller may ask for FLUX.2's rule");
  await pipe.release();

  // Trained on from that folder, the rule is kept without being repeated; --text-padding max overrides and clears it.
  const again = path.join(ROOT, "full-bucket-again");
  const r2 = run(["train", "--full", "--model", path.join(out, "model"), "--data", data, "--out", again, "--resolution", "64", "--max-sequence-length", "64",
    "--steps", "1", "--batch-size", "2", "--save-every", "0", "--threads", "1"]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(readFolderHints(path.join(again, "model")).text_padding, "bucket");
  const max = path.join(ROOT, "full-max");
  const r3 = run(["train", "--full", "--text-padding", "max", "--model", path.join(out, "model"), "--data", data, "--out", max, "--resolution", "64", "--max-sequence-length", "64",
    "--steps", "1", "--batch-size", "2", "--save-every", "0", "--threads", "1"]);
  assert.equal(r3.code, 0, r3.stderr);
  assert.equal(readFolderHints(path.join(max, "model")).text_padding, undefined);
});

test("text padding: bad settings and bad folder hints are refused with what to do", async () => {
  const data = await makeData(SHORT);
  const refuse = (extra: string[], re: RegExp) => {
    const r = run(["train", "--model", MODEL, "--data", data, "--out", path.join(ROOT, `bad-${extra.join("")}`), "--steps", "1", ...extra]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, re);
  };
  refuse(["--full", "--text-padding", "short"], /--text-padding must be max or bucket/);
  refuse(["--vae", "--text-padding", "bucket"], /--text-padding is a transformer setting.*--vae reads no text/);
  refuse(["--text-encoder", "--text-padding", "bucket"], /--text-padding is a transformer setting.*--align-padding/);
  refuse(["--full", "--text-padding", "bucket", "--multi-caption"], /one caption per image.*--text-padding max/);

  assert.equal(defaultsFor("klein-base").textPadding, "max", "FLUX.2's rule without a hint");
  assert.equal(defaultsFor("klein-base", { text_padding: "bucket" }).textPadding, "bucket");
  const folder = fs.mkdtempSync(path.join(ROOT, "hint-"));
  fs.writeFileSync(path.join(folder, "model_index.json"), JSON.stringify({ flux2ts: { text_padding: "short" } }));
  assert.throws(() => readFolderHints(folder), (e: Error) => e instanceof CheckpointError && /text_padding must be one of max, bucket, got "short"; fix or remove it/.test(e.message));
});
