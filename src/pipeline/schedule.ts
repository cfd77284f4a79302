// The FLUX.2 noise schedule (docs/FLUX2-spec.md §5) and the Euler sampler step, reproducing the
// float32 rounding of diffusers' FlowMatchEulerDiscreteScheduler bit for bit.
//
// Rounding model: a float32 op in NumPy / PyTorch is the exact result rounded
// once to float32. Computing the op in float64 on float32 inputs and rounding
// with Math.fround gives the same value for +, −, ×, ÷ and sqrt (float64 has
// more than 2·24+2 bits, so the double rounding is harmless).

const f = Math.fround;

/**
 * compute_empirical_mu (diffusers / BFL), in float64 as the pipelines compute it
 * in Python floats. `imageSeqLen` counts the noisy target tokens only.
 */
export function empiricalMu(imageSeqLen: number, steps: number): number {
  const a1 = 8.73809524e-5, b1 = 1.89833333;
  const a2 = 0.00016927, b2 = 0.45666666;
  if (imageSeqLen > 4300) return a2 * imageSeqLen + b2;
  const m200 = a2 * imageSeqLen + b2;
  const m10 = a1 * imageSeqLen + b1;
  const a = (m200 - m10) / 190.0;
  const b = m200 - 200 * a;
  return a * steps + b;
}

/** np.linspace(1, 1/N, N) in float64, element k, with NumPy's formula (start + k·step, exact end point). */
function linspaceDown(n: number, k: number): number {
  if (n === 1) return 1.0;
  if (k === n - 1) return 1 / n;
  const step = (1 / n - 1) / (n - 1);
  return k * step + 1.0;
}

export interface SigmaSchedule {
  /** steps + 1 shifted sigmas, the last one 0. */
  sigmas: Float32Array;
  /** sigmas × 1000 (float32), one per step: the scheduler's timesteps. */
  timesteps: Float32Array;
  /** timesteps / 1000 (float32): what the pipelines pass to the transformer; may differ from sigma by one ulp. */
  transformerTimesteps: Float32Array;
}

/**
 * The shifted schedule: base = float32(linspace(1, 1/N, N)), then the exponential
 * time shift e^mu / (e^mu + (1/s − 1)) in float32. NumPy evaluates it on a float32
 * array with the Python float e^mu, which it rounds to float32 first (a Python
 * scalar never widens a float32 array), so every step is a float32 op.
 */
export function sigmaSchedule(steps: number, mu: number): SigmaSchedule {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const em = f(Math.exp(mu));
  const sigmas = new Float32Array(steps + 1); // terminal entry stays 0
  const timesteps = new Float32Array(steps);
  const transformerTimesteps = new Float32Array(steps);
  for (let k = 0; k < steps; k++) {
    const s = f(linspaceDown(steps, k));
    const shifted = f(em / f(em + f(f(1 / s) - 1)));
    sigmas[k] = shifted;
    timesteps[k] = f(shifted * 1000);
    transformerTimesteps[k] = f(timesteps[k] / 1000);
  }
  return { sigmas, timesteps, transformerTimesteps };
}

/**
 * First step index used by img2img / inpainting for a given strength, as
 * Flux2KleinInpaintPipeline.get_timesteps computes it:
 * init = min(N·strength, N); t_start = int(max(N − init, 0)) (truncation toward 0).
 */
export function img2imgStart(steps: number, strength: number): number {
  if (!(strength >= 0 && strength <= 1)) throw new RangeError(`strength must be in [0, 1], got ${strength}`);
  const init = Math.min(steps * strength, steps);
  return Math.trunc(Math.max(steps - init, 0));
}

/** One Euler step x + (σ_next − σ)·v, every op rounded to float32 like the scheduler's float32 step. */
export function eulerStep(x: Float32Array, v: Float32Array, sigma: number, sigmaNext: number): Float32Array {
  if (x.length !== v.length) throw new RangeError(`eulerStep: x has ${x.length} values, v has ${v.length}`);
  const dt = f(f(sigmaNext) - f(sigma));
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + f(dt * v[i]);
  return out;
}

/**
 * What this sampler implements of diffusers' FlowMatchEulerDiscreteScheduler: the FLUX.2
 * settings. Fields that would change the schedule must have these values (a scheduler_config.json
 * asking for Karras sigmas, say, is refused rather than silently sampled the FLUX.2 way).
 * base_shift, max_shift, base_image_seq_len, max_image_seq_len and shift are not used: with
 * dynamic shifting the FLUX.2 pipelines compute mu themselves (empiricalMu), as here.
 */
const SCHEDULER_FIXED: Record<string, unknown> = {
  num_train_timesteps: 1000, use_dynamic_shifting: true, time_shift_type: "exponential",
  invert_sigmas: false, shift_terminal: null, stochastic_sampling: false,
  use_karras_sigmas: false, use_exponential_sigmas: false, use_beta_sigmas: false,
};
const SCHEDULER_UNUSED = ["base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "shift"];

/** Validate a scheduler_config.json object against what the sampler implements; `where` names it in errors. */
export function validateSchedulerConfig(raw: unknown, where = "scheduler config"): void {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  const r = raw as Record<string, unknown>;
  if (r._class_name !== undefined && r._class_name !== "FlowMatchEulerDiscreteScheduler") {
    throw new Error(`${where}: _class_name is "${String(r._class_name)}"; only FlowMatchEulerDiscreteScheduler (the FLUX.2 sampler) is implemented`);
  }
  for (const [k, v] of Object.entries(r)) {
    if (k.startsWith("_")) continue;
    if (k in SCHEDULER_FIXED) {
      const want = SCHEDULER_FIXED[k];
      if (v !== want) {
        throw new Error(`${where}: ${k} is ${JSON.stringify(v)}; this sampler implements only ${JSON.stringify(want)} (the FLUX.2 schedule)`);
      }
    } else if (SCHEDULER_UNUSED.includes(k)) {
      if (v !== null && !(typeof v === "number" && Number.isFinite(v))) throw new Error(`${where}: ${k} must be a number, got ${JSON.stringify(v)}`);
    } else {
      throw new Error(`${where}: unknown field "${k}"; FlowMatchEulerDiscreteScheduler fields this sampler knows: ${[...Object.keys(SCHEDULER_FIXED), ...SCHEDULER_UNUSED].join(", ")}`);
    }
  }
  if (r.use_dynamic_shifting === undefined) throw new Error(`${where}: use_dynamic_shifting is missing; FLUX.2 needs true`);
}
