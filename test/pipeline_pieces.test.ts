// The small pieces the denoising loop is made of (src/pipeline/denoise.ts, conditioning.ts, tap.ts),
// each checked against the formula it implements, with stand-in velocities instead of a model.

import { test } from "node:test";
import assert from "node:assert/strict";
import { denoise, guided, type VelocityModel } from "../src/pipeline/denoise.js";
import { InpaintMask } from "../src/pipeline/conditioning.js";
import { sigmaSchedule } from "../src/pipeline/schedule.js";
import { Tap, type TraceTensor } from "../src/pipeline/tap.js";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { InvalidRequestError } from "../src/util/errors.js";
import { tensor } from "../src/util/tensor.js";
import { TINY_BASE } from "./helpers/net.js";

const f = Math.fround;
const F = (data: number[], shape: number[]) => tensor(Float32Array.from(data), shape);

test("denoise: Euler steps from the first step on, each traced under its step name", async () => {
  const s = sigmaSchedule(4, 0.5);
  const seen: string[] = [];
  const tap = new Tap((name) => seen.push(name));
  const v = F([1, -2], [1, 1, 2]);
  const x = await denoise(F([0.5, 0.25], [1, 1, 2]), { schedule: s, first: 1, velocity: async () => v, inpaint: null, tap });
  // Three Euler steps with a constant velocity: x + Σ (σ_{k+1} − σ_k)·v, each step in float32.
  let want = [0.5, 0.25];
  for (let k = 1; k < 4; k++) want = want.map((xi, j) => f(xi + f(f(s.sigmas[k + 1] - s.sigmas[k]) * v.data[j])));
  assert.deepEqual([...x.data], want);
  assert.deepEqual(seen.filter((n) => n.endsWith("latents_after")), ["step0_latents_after", "step1_latents_after", "step2_latents_after"]);
});

test("guided: uncond + scale·(cond − uncond), and the conditional velocity alone without negatives", async () => {
  const model: VelocityModel = async (x, _t, text) => F([...x.data].map((xi) => xi * text.data[0]), x.shape);
  const x = F([1, 2], [1, 1, 2]);
  const names: string[] = [];
  const tap = new Tap((n) => names.push(n));
  const v = await guided(model, F([3], [1, 1, 1]), F([1], [1, 1, 1]), 4)(x, 0.5, tap);
  assert.deepEqual([...v.data], [1 + 4 * (3 - 1), 2 + 4 * (6 - 2)]);
  assert.deepEqual(names, ["noise_pred_cond", "noise_pred_uncond"]);
  const plain = await guided(model, F([3], [1, 1, 1]), null, 4)(x, 0.5, new Tap());
  assert.deepEqual([...plain.data], [3, 6]);
});

test("InpaintMask keeps the unmasked latents at the init image (noised to the next sigma, clean at the end)", () => {
  // One 2×2-pixel image → a 1×1 latent grid of 2 channels; the mask repaints nothing.
  const x0 = F([0.5, -0.5], [1, 2, 1, 1]);
  const noise = F([1, 1], [1, 2, 1, 1]);
  const traced = new Map<string, TraceTensor>();
  const tap = new Tap((n, t) => traced.set(n, t));
  const mask = InpaintMask.create(new Uint8Array(4), x0, noise, 2, 2, tap);
  const sigmas = Float32Array.of(1, 0.5, 0);
  const x = F([9, 9], [1, 1, 2]);
  assert.deepEqual([...mask.apply(x, 0, sigmas, false, tap).data], [f(0.5 * 0.5 + 0.5), f(0.5 * -0.5 + 0.5)]);
  assert.deepEqual([...mask.apply(x, 1, sigmas, true, tap).data], [0.5, -0.5]);
  assert.ok(traced.has("mask_latents") && traced.has("reference_noised"));
});

test("Tap: step prefixes, and lazy tensors are built only when someone listens", () => {
  const names: string[] = [];
  new Tap((n) => names.push(n)).step(3).emit("x", F([1], [1]));
  assert.deepEqual(names, ["step3_x"]);
  let built = 0;
  new Tap().lazy("y", () => (built++, F([1], [1])));
  assert.equal(built, 0);
});

test("the KV cache with classifier-free guidance is refused with a clear error, before decoding", async () => {
  const pipe = loadPipeline(TINY_BASE, { keepLoaded: true });
  try {
    const ref = { rgb: new Uint8Array(64 * 64 * 3).fill(128), width: 64, height: 64 };
    const stages: string[] = [];
    await assert.rejects(
      pipe.generate({ prompt: "x", references: [ref], kvCache: true, guidance: 4, steps: 2, maxSequenceLength: 16, onStage: (s) => stages.push(s) }),
      (e: Error) => e instanceof InvalidRequestError && /KV cache does not support classifier-free guidance/.test(e.message),
    );
    assert.ok(!stages.includes("decode"));
  } finally {
    await pipe.release();
  }
});
