// The sampler: flow-matching Euler steps from the starting latents to the clean ones.
//
//   for each step k:  v = velocity(x, t_k)               (the model, guided)
//                     x = x + (σ_{k+1} − σ_k) · v         (Euler)
//                     x = inpaint.apply(x)                (keep the unmasked latents)
//
// The velocity is a function built once per run from the small pieces below: the plain
// transformer (references appended to every step), the reference-KV-cached transformer
// (references run once, at step 0), and classifier-free guidance around either.

import type { HostTensor } from "../backend/backend.js";
import type { Flux2Transformer, TransformerConfig } from "../models/transformer.js";
import type { Flux2KvTransformer, KvCache } from "../models/transformer_kv.js";
import { tensor, type Tensor } from "../util/tensor.js";
import { concat, repeatBatch, type InpaintMask, type ReferenceTokens } from "./conditioning.js";
import { textIds } from "./latents.js";
import { eulerStep, type SigmaSchedule } from "./schedule.js";
import type { Tap } from "./tap.js";

const f = Math.fround;
type F32 = Tensor<Float32Array>;

/** The model's velocity for packed latents x (B, N, C) at transformer timestep t, conditioned on `text`. */
export type VelocityModel = (x: F32, t: number, text: F32) => Promise<F32>;
/** The velocity the sampler steps with (text and guidance already chosen). */
export type Velocity = (x: F32, t: number, tap: Tap) => Promise<F32>;

export interface DenoiseRun {
  schedule: SigmaSchedule;
  /** First step index (img2img starts part-way). */
  first: number;
  velocity: Velocity;
  inpaint: InpaintMask | null;
  tap: Tap;
  /** After each step: its number (from 1), the latents before it and the velocity used. */
  afterStep?: (step: number, before: F32, v: F32, k: number) => void;
}

export async function denoise(x: F32, run: DenoiseRun): Promise<F32> {
  const { schedule: s, first } = run;
  const steps = s.transformerTimesteps.length;
  const B = x.shape[0];
  for (let i = 0, k = first; k < steps; i++, k++) {
    const tap = run.tap.step(i);
    const t = s.transformerTimesteps[k];
    tap.emit("transformer_timestep", { data: new Float32Array(B).fill(t), shape: [B] });
    tap.emit("transformer_input_latents", x);
    const v = await run.velocity(x, t, tap);
    const before = x;
    x = tensor(eulerStep(x.data, v.data, s.sigmas[k], s.sigmas[k + 1]), x.shape);
    if (run.inpaint) x = run.inpaint.apply(x, k, s.sigmas, k === steps - 1, tap);
    tap.emit("latents_after", x);
    run.afterStep?.(i + 1, before, v, k);
  }
  return x;
}

/**
 * Classifier-free guidance: v = v_uncond + scale·(v_cond − v_uncond), each in float32.
 * Without negative embeddings it is the conditional velocity alone.
 */
export function guided(model: VelocityModel, embeds: F32, negEmbeds: F32 | null, scale: number): Velocity {
  return async (x, t, tap) => {
    const v = await model(x, t, embeds);
    tap.emit("noise_pred_cond", v);
    if (!negEmbeds) return v;
    const vNeg = await model(x, t, negEmbeds);
    tap.emit("noise_pred_uncond", vNeg);
    return tensor(Float32Array.from(v.data, (vp, n) => f(vNeg.data[n] + f(scale * f(vp - vNeg.data[n])))), v.shape);
  };
}

/**
 * The plain transformer: each image's target tokens followed by the reference tokens, in
 * chunks of `batchSize` images; returns the target rows of the output.
 */
export function transformerVelocity(tr: Flux2Transformer, refs: ReferenceTokens | null, targetIds: BigInt64Array, guidance: number | undefined, batchSize?: number): VelocityModel {
  const imgIds = refs ? concat(targetIds, refs.ids.data) : targetIds;
  const R = refs ? refs.tokens.shape[1] : 0;
  return async (x, t, text) => {
    const [B, N, C] = x.shape;
    const L = text.shape[1], J = text.shape[2];
    const chunk = Math.max(1, Math.min(batchSize ?? B, B));
    const out = new Float32Array(B * N * C);
    for (let b0 = 0; b0 < B; b0 += chunk) {
      const nb = Math.min(chunk, B - b0);
      const hidden = new Float32Array(nb * (N + R) * C);
      for (let b = 0; b < nb; b++) {
        hidden.set(x.data.subarray((b0 + b) * N * C, (b0 + b + 1) * N * C), b * (N + R) * C);
        if (refs) hidden.set(refs.tokens.data, (b * (N + R) + N) * C);
      }
      const res = await tr.forward({
        hidden: { data: hidden, shape: [nb, N + R, C] },
        text: { data: text.data.subarray(b0 * L * J, (b0 + nb) * L * J), shape: [nb, L, J] },
        timestep: new Float32Array(nb).fill(t),
        imgIds, txtIds: textIds(1, L).data,
        guidance: guidance === undefined ? undefined : new Float32Array(nb).fill(guidance),
      });
      const o = res.data as Float32Array;
      for (let b = 0; b < nb; b++) out.set(o.subarray(b * (N + R) * C, (b * (N + R) + N) * C), (b0 + b) * N * C);
    }
    return tensor(out, [B, N, C]);
  };
}

/**
 * The reference-KV-cached transformer (klein KV): the first call runs the references with
 * the target and keeps their keys/values; later calls run the target alone against them.
 * The cache belongs to one conditioning, so this model serves one text (no CFG).
 */
export function kvVelocity(kvt: Flux2KvTransformer, refs: ReferenceTokens, targetIds: BigInt64Array, cfg: TransformerConfig, guidance: number | undefined, tap: Tap): VelocityModel {
  let cache: KvCache | null = null;
  return async (x, t, text) => {
    const [B, N, C] = x.shape;
    const inp = {
      hidden: x, text, timestep: new Float32Array(B).fill(t), imgIds: targetIds, txtIds: textIds(1, text.shape[1]).data,
      guidance: guidance === undefined ? undefined : new Float32Array(B).fill(guidance),
    };
    if (cache) return asF32(await kvt.cached(inp, cache));
    const refRows = repeatBatch(refs.tokens.data, B);
    const R = refs.tokens.shape[1];
    tap.lazy("step0_transformer_hidden_states", () => tensor(concatRows(refRows, x.data, B, R, N, C), [B, R + N, C]));
    tap.lazy("step0_transformer_img_ids", () => tensor(concat(refs.ids.data, targetIds), [1, R + N, 4]));
    const res = await kvt.extract(inp, { data: refRows, shape: [B, R, C] }, refs.ids.data);
    cache = res.cache;
    for (const [name, v] of Object.entries(cache.tensors)) tap.emit(name, { data: v.data, shape: [v.shape[0], v.shape[1], cfg.num_attention_heads, cfg.attention_head_dim] });
    return asF32(res.output);
  };
}

function asF32(t: HostTensor): F32 {
  return tensor(t.data as Float32Array, t.shape);
}

/** Per batch row: R rows of `a` then N rows of `b` (C features each). */
function concatRows(a: Float32Array, b: Float32Array, B: number, R: number, N: number, C: number): Float32Array {
  const out = new Float32Array(B * (R + N) * C);
  for (let i = 0; i < B; i++) {
    out.set(a.subarray(i * R * C, (i + 1) * R * C), i * (R + N) * C);
    out.set(b.subarray(i * N * C, (i + 1) * N * C), (i * (R + N) + R) * C);
  }
  return out;
}
