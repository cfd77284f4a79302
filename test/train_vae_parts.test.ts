// `flux2 train --vae --freeze PREFIXES --color-weight W --chroma-weight W`: training the decoder
// alone keeps the latent space (encoder, quant_conv and the latent batch-norm statistics stay bit
// for bit); the colour term is exactly W × the squared error of 8×8-block mean colours and the
// chroma term W × the squared error with each pixel's brightness taken out, both computed here
// independently from the step's own reconstruction.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { OrtBackend } from "../src/backend/ort.js";
import { WeightSet } from "../src/io/safetensors.js";
import { COLOR_BLOCK, VaeTrainer } from "../src/train/step.js";
import { randn } from "../src/util/random.js";
import { vaeScaleFactor } from "../src/models/vae.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
const VAE = path.join(MODEL, "vae");
const ENCODER_SIDE = ["encoder.", "quant_conv."];
const backend = new OrtBackend();

function batch(seed: number, B: number, H: number, W: number, latentChannels: number, factor: number) {
  return {
    images: randn(seed, B * 3 * H * W).map((v) => Math.tanh(v)),
    shape: [B, 3, H, W] as [number, number, number, number],
    eps: randn(seed + 1, B * latentChannels * (H / factor) * (W / factor)),
    klWeight: 1e-3,
  };
}

/** Mean over blocks and channels of the squared mean of (rec − image) over each COLOR_BLOCK² block. */
function blockColourError(rec: Float32Array, images: Float32Array, [B, C, H, W]: number[]): number {
  const k = COLOR_BLOCK;
  let sum = 0, n = 0;
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let by = 0; by < H / k; by++) for (let bx = 0; bx < W / k; bx++) {
    let m = 0;
    for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) {
      const i = ((b * C + c) * H + by * k + y) * W + bx * k + x;
      m += rec[i] - images[i];
    }
    m /= k * k;
    sum += m * m;
    n++;
  }
  return sum / n;
}

test("--color-weight adds W × the 8×8-block mean colour error; freezing the encoder side leaves the decoder's gradients unchanged", async () => {
  const cfgFile = path.join(VAE, "config.json");
  const weights = VAE;
  const all = await VaeTrainer.open(backend, weights, cfgFile);
  const dec = await VaeTrainer.open(backend, weights, cfgFile, { freeze: ENCODER_SIDE });
  try {
    assert.ok(all.trainsEncoder);
    assert.ok(!dec.trainsEncoder);
    assert.ok(dec.params.size > 0 && dec.params.size < all.params.size);
    for (const k of dec.params.keys()) assert.ok(!ENCODER_SIDE.some((p) => k.startsWith(p)), `${k} is frozen`);
    const c = all.config;
    const factor = vaeScaleFactor(c);
    const b = batch(7, 2, 16, 24, c.latent_channels, factor);
    const plain = await all.lossAndGrads(b);
    const coloured = await all.lossAndGrads({ ...b, colorWeight: 3 });
    const expected = blockColourError(plain.reconstruction, b.images, b.shape);
    assert.ok(expected > 0);
    assert.ok(Math.abs(plain.colorLoss - expected) < 1e-5 * Math.max(1, expected), `colour loss ${plain.colorLoss} vs ${expected} computed here`);
    assert.ok(Math.abs(coloured.loss - (plain.loss + 3 * expected)) < 1e-4 * coloured.loss, `loss ${coloured.loss} vs ${plain.loss} + 3 × ${expected}`);
    // The colour term has a gradient: some decoder parameter's gradient moves.
    const key = [...dec.params.keys()].find((k) => k.startsWith("decoder.conv_out.weight"))!;
    const moved = plain.grads.get(key)!.some((v, i) => Math.abs(v - coloured.grads.get(key)![i]) > 1e-6 * (Math.abs(v) + 1e-6));
    assert.ok(moved, "the colour term changes the decoder's gradient");
    // The frozen encoder is read from the file (not fed): the decoder's gradients are the same.
    const frozen = await dec.lossAndGrads({ ...b, colorWeight: 3 });
    assert.ok(Math.abs(frozen.loss - coloured.loss) < 1e-6 * coloured.loss, `loss ${frozen.loss} vs ${coloured.loss}`);
    assert.deepEqual([...frozen.grads.keys()].sort(), [...dec.params.keys()].sort());
    for (const [k, g] of frozen.grads) {
      const ref = coloured.grads.get(k)!;
      // An absolute floor of 1e-8: some gradients are zero in exact arithmetic (a key bias under
      // softmax) and only rounding noise of ~1e-10 in both runs.
      const scale = Math.max(...ref.map(Math.abs));
      for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i] - ref[i]) <= 1e-5 * scale + 1e-8, `${k}[${i}]: ${g[i]} vs ${ref[i]}`);
    }
    await assert.rejects(VaeTrainer.open(backend, weights, cfgFile, { freeze: ["nothing."] }), /"nothing\." matches no VAE parameter/);
    await assert.rejects(VaeTrainer.open(backend, weights, cfgFile, { freeze: ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."] }), /leaves no VAE parameter to train/);
  } finally {
    await all.release();
    await dec.release();
  }
});

/** Mean over pixels and channels of the squared error with each pixel's mean over R, G, B taken out. */
function chromaError(rec: Float32Array, images: Float32Array, [B, C, H, W]: number[]): number {
  let sum = 0;
  for (let b = 0; b < B; b++) for (let p = 0; p < H * W; p++) {
    const e: number[] = [];
    for (let c = 0; c < C; c++) e.push(rec[(b * C + c) * H * W + p] - images[(b * C + c) * H * W + p]);
    const grey = e.reduce((x, y) => x + y, 0) / C;
    for (const v of e) sum += (v - grey) ** 2;
  }
  return sum / (B * C * H * W);
}

test("--chroma-weight adds W × the squared error of each pixel's colour apart from its brightness, and moves the gradients", async () => {
  const trainer = await VaeTrainer.open(backend, VAE, path.join(VAE, "config.json"));
  try {
    const b = batch(11, 2, 16, 16, trainer.config.latent_channels, vaeScaleFactor(trainer.config));
    const plain = await trainer.lossAndGrads(b);
    const weighted = await trainer.lossAndGrads({ ...b, chromaWeight: 4 });
    const expected = chromaError(plain.reconstruction, b.images, b.shape);
    assert.ok(expected > 0 && expected < plain.reconLoss, `chroma error ${expected} is part of the pixel error ${plain.reconLoss}`);
    assert.ok(Math.abs(plain.chromaLoss - expected) < 1e-5 * Math.max(1, expected), `chroma loss ${plain.chromaLoss} vs ${expected} computed here`);
    assert.ok(Math.abs(weighted.loss - (plain.loss + 4 * expected)) < 1e-4 * weighted.loss, `loss ${weighted.loss} vs ${plain.loss} + 4 × ${expected}`);
    const key = [...trainer.params.keys()].find((k) => k.startsWith("encoder.conv_in.weight"))!;
    const moved = plain.grads.get(key)!.some((v, i) => Math.abs(v - weighted.grads.get(key)![i]) > 1e-6 * (Math.abs(v) + 1e-6));
    assert.ok(moved, "the chroma term reaches the encoder's first layer");
    await assert.rejects(trainer.lossAndGrads({ ...b, chromaWeight: -1 }), /chromaWeight must be a non-negative number/);
  } finally {
    await trainer.release();
  }
});

test("flux2 train --vae --freeze encoder.,quant_conv.: the encoder side and the batch-norm statistics are kept bit for bit, the decoder is trained", async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-vae-parts-"));
  const data = path.join(root, "data");
  fs.mkdirSync(data);
  for (let i = 0; i < 4; i++) {
    const rgb = [[220, 40, 40], [40, 200, 60], [30, 60, 220], [240, 200, 30]][i];
    await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 255, g: 255, b: 255 } } })
      .composite([{ input: { create: { width: 32, height: 32, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }, left: 8 * i, top: 16 }])
      .png().toFile(path.join(data, `s${i}.png`));
    fs.writeFileSync(path.join(data, `s${i}.txt`), `a square number ${i}`);
  }
  const out = path.join(root, "run");
  const r = spawnSync(process.execPath, [CLI, "train", "--model", MODEL, "--data", data, "--out", out, "--vae", "--freeze", ENCODER_SIDE.join(","),
    "--color-weight", "5", "--chroma-weight", "2", "--posterior", "mode", "--resolution", "64", "--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--save-every", "0", "--threads", "1"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /the encoder is frozen: the latent space does not move/);
  assert.match(r.stderr, /statistics kept from the base/);
  const base = WeightSet.open(VAE), trained = WeightSet.open(path.join(out, "model", "vae"));
  try {
    let changed = 0;
    for (const name of base.keys()) {
      const same = Buffer.from(base.bytes(name)).equals(Buffer.from(trained.bytes(name)));
      if (ENCODER_SIDE.some((p) => name.startsWith(p)) || name.startsWith("bn.")) assert.ok(same, `${name} must be kept as it was`);
      else if (!same) changed++;
    }
    assert.ok(changed > 0, "the decoder was trained");
  } finally {
    base.close();
    trained.close();
  }
  const bad = spawnSync(process.execPath, [CLI, "train", "--model", MODEL, "--data", data, "--out", path.join(root, "run-b"), "--full", "--freeze", "encoder."], { encoding: "utf8" });
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /--color-weight, --chroma-weight, --freeze and --posterior are VAE settings; use them with --vae/);
});
