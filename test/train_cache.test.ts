// The training cache encodes captions and images in batches (src/train/cache.ts): each cached
// embedding and latent must equal what encoding that caption or image alone gives, so that a
// run's data does not depend on which other samples share its batch.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { OrtBackend } from "../src/backend/ort.js";
import { encodeData } from "../src/train/cache.js";
import { groupIntoBatches, makeSamples, scanDataset, loadBucketed, type Sample } from "../src/train/data.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { Flux2Vae } from "../src/models/vae.js";
import { toSignedUnit } from "../src/pipeline/conditioning.js";
import { bnNormalize, patchify } from "../src/pipeline/latents.js";
import { VARIANT_CARDS } from "../src/pipeline/variants.js";
import { tensor } from "../src/util/tensor.js";

const MODEL = "testdata/golden/checkpoints/klein_base";

test("groupIntoBatches (the cache's VAE runs and every epoch's batches) groups samples by bucket in first-seen order and cuts each group into batches", () => {
  const s = (width: number, height: number): Sample => ({ image: 0, resolution: 64, bucket: { width, height } } as Sample);
  const samples = [s(64, 64), s(512, 512), s(64, 64), s(96, 64), s(512, 512), s(64, 64)];
  const inOrder = samples.map((_, i) => i);
  assert.deepEqual(groupIntoBatches(inOrder, samples, 4), [[0, 2, 5], [1, 4], [3]]);
  assert.deepEqual(groupIntoBatches(inOrder, samples, 2), [[0, 2], [5], [1, 4], [3]]);
  assert.deepEqual(groupIntoBatches(inOrder, samples, 1), [[0], [2], [5], [1], [4], [3]]);
  assert.deepEqual(groupIntoBatches([5, 4, 3, 2, 1, 0], samples, 4), [[5, 2, 0], [4, 1], [3]], "each group keeps the given order");
  const many = Array.from({ length: 35 }, () => s(64, 64));
  assert.deepEqual(groupIntoBatches(many.map((_, i) => i), many, 16).map((g) => g.length), [16, 16, 3]);
});

test("batched caching gives every caption and image the embeddings and latents it gets alone", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-cache-"));
  const data = path.join(dir, "data");
  fs.mkdirSync(data);
  // 37 captions and pictures (three runs of 16, the last one short) in two buckets, 64×64 and 96×64.
  for (let i = 0; i < 37; i++) {
    const w = i % 3 ? 64 : 96, h = 64;
    const px = Buffer.alloc(w * h * 3);
    for (let k = 0; k < px.length; k++) px[k] = (k * (i + 7) + (k >> 5) * 13) & 255;
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(data, `img${i}.png`));
    fs.writeFileSync(path.join(data, `img${i}.txt`), `picture number ${i}${"!".repeat(i % 5)}`);
  }
  const backend = new OrtBackend({ threads: 1 });
  const ck = openCheckpoint(MODEL);
  const ds = await scanDataset(data);
  const samples = makeSamples(ds, [96]);
  assert.deepEqual(new Set(samples.map((s) => `${s.bucket.width}x${s.bucket.height}`)), new Set(["64x64", "96x64"]));
  const got = await encodeData(ck, ds.images, samples, { runDir: path.join(dir, "run"), maxSequenceLength: 32, withEmpty: true, batchSize: 16, backend, log: () => {} });
  assert.equal(got.embeds.size, 38, "37 captions and the empty one");

  const pipe = loadPipeline(ck.source, { backend, keepLoaded: true });
  const layers = [...VARIANT_CARDS[ck.variant].textLayers];
  for (const [caption, embed] of got.embeds) {
    const alone = await pipe.encodePrompts([caption], 32, layers);
    assert.deepEqual(embed, alone.data as Float32Array, `caption ${JSON.stringify(caption)}`);
  }
  await pipe.release();

  const vae = await Flux2Vae.fromFiles(backend, ck.vae.weights, ck.vae.config!, ck.vae.format);
  const { mean, std } = vae.bnStats();
  for (const [i, s] of samples.entries()) {
    const rgb = await loadBucketed(ds.images[s.image].file, s.bucket);
    const enc = await vae.encode(toSignedUnit({ rgb, width: s.bucket.width, height: s.bucket.height }));
    const alone = bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std);
    assert.deepEqual(got.latentShapes[i], [alone.shape[1], alone.shape[2], alone.shape[3]]);
    assert.deepEqual(got.latents[i], alone.data, `sample ${i} (${s.bucket.width}×${s.bucket.height})`);
  }
  await vae.release();
  fs.rmSync(dir, { recursive: true, force: true });
});
