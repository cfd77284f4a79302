import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bnDenormalize, bnNormalize, bnStd, latentIds, maskToLatent, noiseTo, pack, packRefs,
  patchify, refIds, textIds, unpack, unpackWithIds, unpatchify,
} from "../src/pipeline/latents.js";
import { sigmaSchedule, empiricalMu, img2imgStart } from "../src/pipeline/schedule.js";
import { tensor, type Tensor } from "../src/util/tensor.js";
import { goldenPath, loadParams, loadTensors, maxAbsDiff, type Loaded } from "./golden.js";
import { readAll } from "../src/io/safetensors.js";

function get(t: Map<string, Loaded>, name: string): Loaded {
  const v = t.get(name);
  assert.ok(v, `golden tensor ${name} missing`);
  return v;
}
const f32 = (t: Map<string, Loaded>, name: string): Tensor<Float32Array> => {
  const v = get(t, name);
  return tensor(v.data as Float32Array, v.shape);
};
const i64 = (t: Map<string, Loaded>, name: string) => get(t, name).data as BigInt64Array;

function assertClose(got: Tensor, want: Loaded | Tensor, tol: number, what: string): void {
  assert.deepEqual(got.shape, want.shape, `${what} shape`);
  const d = maxAbsDiff(got.data, want.data as ArrayLike<number | bigint>);
  assert.ok(d <= tol, `${what}: max |diff| ${d} > ${tol}`);
}

test("golden pipeline/layout: packing, ids, references and patchify are exact", () => {
  const inp = loadTensors("pipeline/layout.inputs.safetensors");
  const exp = loadTensors("pipeline/layout.expected.safetensors");
  const latents = f32(inp, "latents");
  const [B, , h, w] = latents.shape;
  const packed = pack(latents);
  assertClose(packed, get(exp, "packed"), 0, "packed");
  const ids = latentIds(B, h, w);
  assertClose(ids, get(exp, "latent_ids"), 0, "latent_ids");
  assert.deepEqual(unpack(packed, h, w), latents);
  assert.deepEqual(unpackWithIds(packed, ids), latents);

  const [tb, L] = get(inp, "text_dummy").shape;
  assertClose(textIds(tb, L), get(exp, "text_ids"), 0, "text_ids");

  const nRefs = loadParams("pipeline/layout").num_refs as number;
  const refs = Array.from({ length: nRefs }, (_, i) => f32(inp, `ref_${i}`));
  assertClose(packRefs(refs), get(exp, "ref_packed"), 0, "ref_packed");
  assertClose(refIds(refs.map((r) => ({ h: r.shape[2], w: r.shape[3] }))), get(exp, "ref_ids"), 0, "ref_ids");

  const plain = f32(inp, "plain_latents");
  const patched = patchify(plain);
  assertClose(patched, get(exp, "patchified"), 0, "patchified");
  assert.deepEqual(unpatchify(patched), plain);
});

test("golden pipeline/bn_norm: patchify, normalise, pack and the inverse", () => {
  const exp = loadTensors("pipeline/bn_norm.expected.safetensors");
  const vae = readAll(goldenPath("vae/vae_tiny.safetensors"));
  const mean = get(vae, "bn.running_mean").data as Float32Array;
  const std = bnStd(get(vae, "bn.running_var").data as Float32Array, 1e-4);
  assertClose(tensor(mean, [mean.length]), get(exp, "bn_mean"), 0, "bn_mean");
  assertClose(tensor(std, [std.length]), get(exp, "bn_std"), 1e-4, "bn_std");
  assert.deepEqual(std, get(exp, "bn_std").data, "bn_std exact");

  const patched = patchify(f32(exp, "latent_mode"));
  assertClose(patched, get(exp, "patchified"), 1e-4, "patchified");
  const normalized = bnNormalize(patched, mean, std);
  assertClose(normalized, get(exp, "normalized"), 1e-4, "normalized");
  const [, , h, w] = normalized.shape;
  const packed = pack(normalized);
  assertClose(packed, get(exp, "normalized_packed"), 1e-4, "normalized_packed");
  assertClose(latentIds(1, h, w), get(exp, "normalized_ids"), 0, "normalized_ids");

  // The inverse starts from the stored packed tokens and ids, as the pipelines do.
  const tokens = f32(exp, "normalized_packed");
  const ids = tensor(i64(exp, "normalized_ids"), get(exp, "normalized_ids").shape);
  const denorm = bnDenormalize(unpackWithIds(tokens, ids), mean, std);
  assertClose(denorm, get(exp, "denormalized"), 1e-4, "denormalized");
  const plain = unpatchify(denorm);
  assertClose(plain, get(exp, "denormalized_unpatchified"), 1e-4, "denormalized_unpatchified");
  assertClose(plain, get(exp, "latent_mode"), 1e-4, "round trip to latent_mode");
});

test("golden edit/klein_inpaint: mask latents, initial latents and re-noised references", () => {
  const inp = loadTensors("edit/klein_inpaint.inputs.safetensors");
  const exp = loadTensors("edit/klein_inpaint.expected.safetensors");
  const [H, W] = get(inp, "mask_u8").shape;
  const noise = f32(inp, "noise");
  const [, , h, w] = noise.shape;
  const mask = maskToLatent(get(inp, "mask_u8").data as Uint8Array, H, W, h, w);
  assertClose(mask, get(exp, "mask_latents"), 0, "mask_latents");

  const params = loadParams("edit/klein_inpaint");
  const N = params.call.num_inference_steps as number;
  const s = sigmaSchedule(N, empiricalMu(h * w, N));
  const start = img2imgStart(N, params.call.strength);
  const x0 = f32(exp, "image_latents");
  const init = tensor(noiseTo(x0.data, noise.data, s.sigmas[start]), x0.shape);
  assertClose(init, get(exp, "initial_latents"), 1e-6, "initial_latents");

  assertClose(pack(x0), get(exp, "condition_tokens"), 0, "condition_tokens");
  assertClose(latentIds(1, h, w, 10), get(exp, "condition_ids"), 0, "condition_ids");
  for (let i = 0; start + i + 1 < N; i++) {
    const ref = tensor(noiseTo(pack(x0).data, pack(noise).data, s.sigmas[start + i + 1]), [1, h * w, x0.shape[1]]);
    assertClose(ref, get(exp, `step${i}_reference_noised`), 1e-6, `step${i}_reference_noised`);
  }
});

test("maskToLatent: binarises at 0.5 and averages the central pixels of each cell", () => {
  // 4×4 pixels → 2×2 cells; torch samples pixels 0.5 and 2.5 → taps (0,1) and (2,3) at ½ each.
  const m = new Uint8Array([
    255, 0, 128, 128,
    0, 0, 128, 127,
    200, 200, 0, 0,
    200, 200, 0, 255,
  ]);
  const got = maskToLatent(m, 4, 4, 2, 2);
  assert.deepEqual(got.shape, [1, 4, 1]);
  assert.deepEqual([...got.data], [0.25, 0.75, 1, 0.25]);
  // Non-integer scale: 3 pixels → 2 cells, src = 1.5·(j + ½) − ½ = 0.25, 1.75.
  const row = maskToLatent(new Uint8Array([255, 0, 255]), 1, 3, 1, 2);
  assert.deepEqual([...row.data], [0.75, 0.75]);
  assert.throws(() => maskToLatent(new Uint8Array(5), 2, 3, 1, 1), RangeError);
});

test("round trips and shape checks", () => {
  const data = Float32Array.from({ length: 2 * 3 * 4 * 6 }, (_, i) => i * 0.5 - 7);
  const x = tensor(data, [2, 3, 4, 6]);
  assert.deepEqual(unpack(pack(x), 4, 6), x);
  assert.deepEqual(unpatchify(patchify(x)), x);
  const p = patchify(x);
  assert.deepEqual(p.shape, [2, 12, 2, 3]);
  // Channel 4c + 2dy + dx at (y, x) = input (c, 2y + dy, 2x + dx): c=1, dy=1, dx=0, y=1, x=2.
  assert.equal(p.data[((0 * 12 + 4 + 2) * 2 + 1) * 3 + 2], data[((0 * 3 + 1) * 4 + 3) * 6 + 4]);
  const mean = new Float32Array([0.5, -1, 2]);
  const std = bnStd(new Float32Array([1, 0.5, 2]), 1e-4);
  const back = bnDenormalize(bnNormalize(x, mean, std), mean, std);
  assert.ok(maxAbsDiff(back.data, data) < 1e-5);
  assert.throws(() => patchify(tensor(new Float32Array(9), [1, 1, 3, 3])), RangeError);
  assert.throws(() => pack(tensor(new Float32Array(4), [4])), RangeError);
  assert.throws(() => bnNormalize(x, new Float32Array(2), std), RangeError);
  assert.throws(() => tensor(new Float32Array(3), [2, 2]), RangeError);
});

test("ids: text (0,0,0,l), image (t,y,x,0), references t = 10, 20, …", () => {
  assert.deepEqual([...textIds(1, 3).data], [0n, 0n, 0n, 0n, 0n, 0n, 0n, 1n, 0n, 0n, 0n, 2n]);
  assert.deepEqual([...latentIds(1, 1, 2, 5).data], [5n, 0n, 0n, 0n, 5n, 0n, 1n, 0n]);
  const r = refIds([{ h: 1, w: 1 }, { h: 1, w: 2 }]);
  assert.deepEqual(r.shape, [1, 3, 4]);
  assert.deepEqual([...r.data], [10n, 0n, 0n, 0n, 20n, 0n, 0n, 0n, 20n, 0n, 1n, 0n]);
});
