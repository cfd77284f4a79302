import { test } from "node:test";
import assert from "node:assert/strict";
import { empiricalMu, eulerStep, img2imgStart, sigmaSchedule } from "../src/pipeline/schedule.js";
import { f32ToBf16Bits } from "../src/io/dtype.js";
import { loadParams, loadTensors, maxAbsDiff } from "./golden.js";

function f32(name: string, t: Map<string, { data: ArrayLike<number | bigint> }>): Float32Array {
  const v = t.get(name);
  assert.ok(v, `golden tensor ${name} missing`);
  return v.data as Float32Array;
}

test("golden pipeline/schedule: every entry matches the float32 reference", () => {
  const params = loadParams("pipeline/schedule");
  const exp = loadTensors("pipeline/schedule.expected.safetensors");
  const entries = params.entries as { num_inference_steps: number; image_seq_len: number }[];
  assert.equal(entries.length, 11);
  entries.forEach((e, n) => {
    const mu = empiricalMu(e.image_seq_len, e.num_inference_steps);
    const want = exp.get(`entry${n}_mu`)!.data as Float64Array;
    assert.ok(Math.abs(mu - want[0]) <= 1e-6, `entry ${n} mu ${mu} vs ${want[0]}`);
    const s = sigmaSchedule(e.num_inference_steps, mu);
    assert.equal(s.sigmas.length, e.num_inference_steps + 1);
    assert.equal(s.sigmas[e.num_inference_steps], 0);
    // Aim: bit-exact; the contract bounds are 1e-6 / 1e-3 / 1e-6.
    assert.deepEqual(s.sigmas, f32(`entry${n}_sigmas`, exp), `entry ${n} sigmas`);
    assert.ok(maxAbsDiff(s.timesteps, f32(`entry${n}_timesteps`, exp)) <= 1e-3, `entry ${n} timesteps`);
    assert.deepEqual(s.timesteps, f32(`entry${n}_timesteps`, exp), `entry ${n} timesteps exact`);
    assert.deepEqual(s.transformerTimesteps, f32(`entry${n}_transformer_timestep`, exp), `entry ${n} transformer timesteps`);
  });
});

const bf16 = (x: number) => new Float32Array(new Uint32Array([f32ToBf16Bits(x) << 16]).buffer)[0];

test("docs/FLUX2-spec.md §5.4 worked values", () => {
  const rows: [number, number, number, number[], number[]][] = [
    [4096, 4, 2.291179894115571, [1.0, 0.96738404, 0.90814394, 0.76719993], [1000, 968, 908, 768]],
    [1024, 4, 2.0306897079499455, [1.0, 0.95808536, 0.88398188, 0.71749657], [1000, 960, 884, 716]],
    [4096, 50, 2.0233511571292637, [1.0, 0.99730909, 0.99452138, 0.99163157], [1000, 996, 996, 992]],
    [4080, 50, 2.0216772250989474, [1.0, 0.99730456, 0.99451226, 0.99161768], [1000, 996, 996, 992]],
    [16384, 28, 3.22998634, [1.0, 0.99853706, 0.9969663, 0.99527544], [1000, 1000, 996, 996]],
  ];
  for (const [L, N, mu, sig, bfT] of rows) {
    const m = empiricalMu(L, N);
    assert.ok(Math.abs(m - mu) <= 1e-8, `mu(${L}, ${N}) = ${m}`);
    const s = sigmaSchedule(N, m);
    for (let k = 0; k < 4; k++) {
      assert.ok(Math.abs(s.sigmas[k] - sig[k]) <= 5e-9, `σ_${k}(${L}, ${N}) = ${s.sigmas[k]} vs ${sig[k]}`);
      // What a bf16 diffusers run embeds: bf16(bf16(bf16(1000σ)/1000)·1000).
      assert.equal(bf16(bf16(bf16(s.timesteps[k]) / 1000) * 1000), bfT[k], `bf16 timestep ${k} (${L}, ${N})`);
    }
  }
});

test("mu branches: linear in steps up to 4300 tokens, steps ignored above", () => {
  assert.equal(empiricalMu(6000, 4), empiricalMu(6000, 50));
  assert.notEqual(empiricalMu(4300, 4), empiricalMu(4300, 50));
  // The 200-step anchor is a2·L + b2 (up to float64 rounding of the interpolation).
  assert.ok(Math.abs(empiricalMu(1000, 200) - (0.00016927 * 1000 + 0.45666666)) < 1e-12);
});

test("one step: sigma 1 then 0", () => {
  const s = sigmaSchedule(1, 1.5);
  assert.deepEqual([...s.sigmas], [1, 0]);
  assert.deepEqual([...s.timesteps], [1000]);
  assert.deepEqual([...s.transformerTimesteps], [1]);
  assert.throws(() => sigmaSchedule(0, 1), RangeError);
});

test("img2imgStart follows the inpaint pipeline's int(N − min(N·strength, N))", () => {
  assert.equal(img2imgStart(5, 0.6), 2);
  assert.equal(img2imgStart(50, 1), 0);
  assert.equal(img2imgStart(50, 0), 50);
  assert.equal(img2imgStart(4, 0.3), 2); // 4 − 1.2 = 2.8 → 2
  // float64 quirk kept on purpose: 25·0.56 = 14.000000000000002, so int(25 − 14.000…02) = 10, not 11.
  assert.equal(img2imgStart(25, 0.56), 10);
  assert.throws(() => img2imgStart(5, 1.5), RangeError);
});

test("golden edit/klein_inpaint: schedule, timesteps used and first timestep", () => {
  const params = loadParams("edit/klein_inpaint");
  const exp = loadTensors("edit/klein_inpaint.expected.safetensors");
  const N = params.call.num_inference_steps as number;
  const mu = empiricalMu(192, N);
  assert.ok(Math.abs(mu - (exp.get("mu")!.data as Float64Array)[0]) <= 1e-6);
  const s = sigmaSchedule(N, mu);
  assert.deepEqual(s.sigmas, f32("sigmas", exp));
  const start = img2imgStart(N, params.call.strength);
  assert.equal(start, 2);
  assert.deepEqual(s.timesteps.slice(start), f32("timesteps_used", exp));
  assert.equal(s.timesteps[start], f32("latent_timestep", exp)[0]);
});

test("golden checkpoints/klein_distilled__t2i: Euler steps and transformer timesteps", () => {
  const exp = loadTensors("checkpoints/klein_distilled__t2i.expected.safetensors");
  const s = sigmaSchedule(4, (exp.get("mu")!.data as Float64Array)[0]);
  assert.deepEqual(s.sigmas, f32("sigmas", exp));
  for (let i = 0; i < 4; i++) {
    const x = f32(`step${i}_transformer_input_latents`, exp);
    const v = f32(`step${i}_noise_pred_cond`, exp);
    const got = eulerStep(x, v, s.sigmas[i], s.sigmas[i + 1]);
    assert.ok(maxAbsDiff(got, f32(`step${i}_latents_after`, exp)) <= 1e-6, `step ${i}`);
    const tt = f32(`step${i}_transformer_timestep`, exp);
    for (const t of tt) assert.equal(t, s.transformerTimesteps[i]);
  }
});

test("eulerStep rounds like float32 and checks lengths", () => {
  const out = eulerStep(new Float32Array([1, 2]), new Float32Array([0.5, -1]), 1, 0.75);
  assert.deepEqual([...out], [0.875, 2.25]);
  assert.throws(() => eulerStep(new Float32Array(2), new Float32Array(3), 1, 0), RangeError);
});
