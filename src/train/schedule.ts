// Learning-rate schedules and the flow-matching σ sampler of training, as
// diffusers' `train_dreambooth_lora_flux2_klein.py` does them.
//
// Learning rate (diffusers `get_scheduler`, a torch LambdaLR): optimizer step k
// (0-based) uses lr · λ(k), the scheduler being stepped after the optimizer, so
// with a warmup the first step runs at lr 0, as in the script.
//   constant               λ = 1
//   constant_with_warmup   λ = min(1, k / warmup)
//   linear                 warmup, then (total − k) / (total − warmup) down to 0
//   cosine                 warmup, then 0.5·(1 + cos(π·progress)) (half a cycle)
//
// σ (the script, "Sample a random timestep for each image"): the scheduler's
// training table has timesteps t_i = 1000, 999, …, 1 and σ_i = t_i / 1000 (times
// `shift` via σ' = shift·σ / (1 + (shift − 1)·σ) when the scheduler config does
// not use dynamic shifting; klein's does, so its table is unshifted);
// u ~ U[0, 1) (or sigmoid(N(mean, std)) for logit-normal, or the SD3 "mode"
// density), index = floor(u · 1000), σ = σ_index. The transformer gets timestep
// σ (the pipeline's t / 1000).
//
// Randomness is not a stream: the σ of optimizer step k, micro-batch j comes
// from a generator seeded by (seed, k, j) (see `streamSeed`), so a resumed run
// draws exactly what an uninterrupted one would without saving any RNG state.

import * as fs from "node:fs";
import { Xoshiro128 } from "../util/random.js";

export type LrScheduler = "constant" | "constant_with_warmup" | "linear" | "cosine";
export const LR_SCHEDULERS: LrScheduler[] = ["constant", "constant_with_warmup", "linear", "cosine"];

export interface LrSchedule {
  scheduler: LrScheduler;
  lr: number;
  warmupSteps: number;
  totalSteps: number;
}

/** Learning rate of optimizer step k (0-based). */
export function learningRate(s: LrSchedule, k: number): number {
  const warm = s.warmupSteps;
  if (s.scheduler === "constant") return s.lr;
  if (k < warm) return s.lr * (k / Math.max(1, warm));
  if (s.scheduler === "constant_with_warmup") return s.lr;
  const progress = (k - warm) / Math.max(1, s.totalSteps - warm);
  if (s.scheduler === "linear") return s.lr * Math.max(0, (s.totalSteps - k) / Math.max(1, s.totalSteps - warm));
  return s.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

export type SigmaSampling = { kind: "uniform" } | { kind: "logit_normal"; mean: number; std: number } | { kind: "mode"; scale: number };

/** The scheduler's training σ table (index 0 = σ 1). */
export interface TrainSigmas {
  numTrainTimesteps: number;
  sigmas: Float32Array;
}

/** FlowMatchEulerDiscreteScheduler.__init__'s σ table, in float32 as torch computes it. */
export function trainSigmas(numTrainTimesteps = 1000, shift = 1, dynamicShifting = true): TrainSigmas {
  const f = Math.fround;
  const N = numTrainTimesteps;
  const sigmas = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    // np.linspace(1, N, N)[::-1] in float32: exact integers N − i.
    let s = f((N - i) / N);
    if (!dynamicShifting && shift !== 1) s = f(f(shift * s) / f(1 + f((shift - 1) * s)));
    sigmas[i] = s;
  }
  return { numTrainTimesteps: N, sigmas };
}

/** The σ table of a diffusers scheduler folder (scheduler/scheduler_config.json), or the default. */
export function readTrainSigmas(configFile: string | null): TrainSigmas {
  if (!configFile || !fs.existsSync(configFile)) return trainSigmas();
  const c = JSON.parse(fs.readFileSync(configFile, "utf8"));
  return trainSigmas(Number(c.num_train_timesteps ?? 1000), Number(c.shift ?? 1), c.use_dynamic_shifting !== false);
}

/** A 64-bit seed for one stream (what, step, micro-batch) of a run's seed. */
export function streamSeed(seed: number, ...parts: number[]): bigint {
  let z = BigInt.asUintN(64, BigInt(seed));
  for (const p of parts) {
    // SplitMix64 finaliser over (z + golden·(p + 1)): distinct parts give unrelated seeds.
    z = BigInt.asUintN(64, z + 0x9e3779b97f4a7c15n * BigInt(p + 1));
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    z ^= z >> 31n;
  }
  return z;
}

/** B σ values for one micro-batch from its generator, as the script samples them. */
export function sampleSigmas(table: TrainSigmas, sampling: SigmaSampling, rng: Xoshiro128, B: number): Float32Array {
  const out = new Float32Array(B);
  const N = table.numTrainTimesteps;
  for (let b = 0; b < B; b++) {
    let u: number;
    if (sampling.kind === "logit_normal") {
      u = 1 / (1 + Math.exp(-(sampling.mean + sampling.std * normal(rng))));
    } else if (sampling.kind === "mode") {
      const v = rng.nextDouble();
      u = 1 - v - sampling.scale * (Math.cos((Math.PI * v) / 2) ** 2 - 1 + v);
    } else {
      u = rng.nextDouble();
    }
    // (u · N).long() truncates toward zero; u < 1, but keep the index in the table.
    const index = Math.min(N - 1, Math.max(0, Math.trunc(u * N)));
    out[b] = table.sigmas[index];
  }
  return out;
}

/** One standard normal (Box–Muller, as src/util/random.ts does). */
function normal(rng: Xoshiro128): number {
  const u1 = 1 - rng.nextDouble(), u2 = rng.nextDouble();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}
