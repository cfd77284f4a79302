// The ViT image classifier graph (src/models/vit.ts) against a direct
// transcription of transformers' ViTForImageClassification forward in float64
// (below), on a tiny random checkpoint written by the test in the Falconsai layout.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import { VitClassifier, readVitConfig, vitPixels } from "../src/models/vit.js";
import { D, FF, HEADS, L, LABELS, P, S, rng, writeTinyVit } from "./helpers/vit.js";

// -- reference forward, float64, one plain loop per formula of modeling_vit.py ----

function linear(x: number[][], w: Float32Array, b: Float32Array | null, out: number): number[][] {
  const inn = x[0].length;
  return x.map((row) => Array.from({ length: out }, (_, o) => {
    let s = b ? b[o] : 0;
    for (let i = 0; i < inn; i++) s += row[i] * w[o * inn + i];
    return s;
  }));
}

function layerNorm(x: number[][], w: Float32Array, b: Float32Array, eps = 1e-12): number[][] {
  return x.map((row) => {
    const mean = row.reduce((a, v) => a + v, 0) / row.length;
    const varr = row.reduce((a, v) => a + (v - mean) ** 2, 0) / row.length;
    return row.map((v, i) => ((v - mean) / Math.sqrt(varr + eps)) * w[i] + b[i]);
  });
}

// erf by its Taylor series, exact to ~1e-10 for |x| ≤ 4 in float64 (the largest term is ~1e6);
// beyond 4, 1 − |erf(x)| < 2e-8, so the sign is exact enough.
function erf(x: number): number {
  if (Math.abs(x) > 4) return Math.sign(x);
  let sum = 0, term = x;
  for (let n = 0; n < 100; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

function referenceLogits(t: Record<string, Float32Array>, pixels: Float32Array): number[] {
  // Patch embedding: conv with kernel = stride = P, patches in row-major order.
  const g = S / P;
  const patches: number[][] = [];
  const W = t["vit.embeddings.patch_embeddings.projection.weight"], Bc = t["vit.embeddings.patch_embeddings.projection.bias"];
  for (let py = 0; py < g; py++) for (let px = 0; px < g; px++) {
    patches.push(Array.from({ length: D }, (_, o) => {
      let s = Bc[o];
      for (let c = 0; c < 3; c++) for (let ky = 0; ky < P; ky++) for (let kx = 0; kx < P; kx++) {
        s += W[((o * 3 + c) * P + ky) * P + kx] * pixels[(c * S + py * P + ky) * S + px * P + kx];
      }
      return s;
    }));
  }
  const pos = t["vit.embeddings.position_embeddings"];
  let x = [Array.from(t["vit.embeddings.cls_token"]), ...patches].map((row, i) => row.map((v, d) => v + pos[i * D + d]));
  const Dh = D / HEADS;
  for (let l = 0; l < L; l++) {
    const p = `vit.encoder.layer.${l}`;
    const h = layerNorm(x, t[`${p}.layernorm_before.weight`], t[`${p}.layernorm_before.bias`]);
    const q = linear(h, t[`${p}.attention.attention.query.weight`], t[`${p}.attention.attention.query.bias`], D);
    const k = linear(h, t[`${p}.attention.attention.key.weight`], t[`${p}.attention.attention.key.bias`], D);
    const v = linear(h, t[`${p}.attention.attention.value.weight`], t[`${p}.attention.attention.value.bias`], D);
    const ctx = x.map(() => new Array(D).fill(0));
    for (let hd = 0; hd < HEADS; hd++) {
      for (let i = 0; i < x.length; i++) {
        const scores = x.map((_, j) => {
          let s = 0;
          for (let d = 0; d < Dh; d++) s += q[i][hd * Dh + d] * k[j][hd * Dh + d];
          return s / Math.sqrt(Dh);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < x.length; j++) for (let d = 0; d < Dh; d++) ctx[i][hd * Dh + d] += (e[j] / z) * v[j][hd * Dh + d];
      }
    }
    const attn = linear(ctx, t[`${p}.attention.output.dense.weight`], t[`${p}.attention.output.dense.bias`], D);
    x = x.map((row, i) => row.map((val, d) => val + attn[i][d]));
    const h2 = layerNorm(x, t[`${p}.layernorm_after.weight`], t[`${p}.layernorm_after.bias`]);
    const ff = linear(h2, t[`${p}.intermediate.dense.weight`], t[`${p}.intermediate.dense.bias`], FF).map((row) => row.map((u) => 0.5 * u * (1 + erf(u / Math.SQRT2))));
    const out = linear(ff, t[`${p}.output.dense.weight`], t[`${p}.output.dense.bias`], D);
    x = x.map((row, i) => row.map((val, d) => val + out[i][d]));
  }
  const cls = layerNorm([x[0]], t["vit.layernorm.weight"], t["vit.layernorm.bias"]);
  return linear(cls, t["classifier.weight"], t["classifier.bias"], LABELS.length)[0];
}

test("readVitConfig reads the Falconsai layout and refuses what it cannot run", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-vit-"));
  writeTinyVit(dir);
  const c = readVitConfig(dir);
  assert.deepEqual([c.hidden_size, c.num_hidden_layers, c.image_size, c.patch_size, c.labels], [D, L, S, P, LABELS]);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ model_type: "vit", hidden_act: "relu", id2label: { 0: "a" } }));
  assert.throws(() => readVitConfig(dir), /hidden_act "relu" is not supported/);
  assert.throws(() => readVitConfig(os.tmpdir() + "/no-such-vit"), /no config.json; give the folder of a ViTForImageClassification checkpoint/);
});

test("the graph's logits match the float64 reference forward; probabilities are their softmax", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-vit-"));
  const t = writeTinyVit(dir, 3);
  const vit = await VitClassifier.open(dir, new OrtBackend());
  try {
    const r = rng(9);
    for (let trial = 0; trial < 3; trial++) {
      const pixels = Float32Array.from({ length: 3 * S * S }, () => 2 * r());
      const want = referenceLogits(t, pixels);
      const probs = await vit.probabilities(pixels);
      const wantProbs = want.map((l) => Math.exp(l)).map((e, _, a) => e / a.reduce((x, y) => x + y, 0));
      for (const [i, label] of LABELS.entries()) assert.ok(Math.abs(probs[label] - wantProbs[i]) < 1e-5, `${label}: ${probs[label]} vs ${wantProbs[i]}`);
      // The logits differ between the two images (the test can fail on a constant output).
      assert.ok(Math.abs(want[0] - want[1]) > 1e-3);
    }
    // Preprocessing: a uniform image of value v gives (v/255 − 0.5)/0.5 everywhere.
    const px = await vitPixels(new Uint8Array(50 * 40 * 3).fill(51), 50, 40, vit.config);
    assert.equal(px.length, 3 * S * S);
    assert.ok(px.every((x) => Math.abs(x - (51 / 255 - 0.5) / 0.5) < 1e-6));
  } finally {
    await vit.release();
  }
});
