// One handler per case kind: compute a case's expected tensors from its inputs
// and params with the engine. Handlers only translate between the golden
// set's naming and the engine's API; the engine does the work.

import * as path from "node:path";
import type { Backend, HostTensor } from "../backend/backend.js";
import type { TypedArray } from "../io/safetensors.js";
import { Flux2Transformer } from "../models/transformer.js";
import { Flux2Vae } from "../models/vae.js";
import { Qwen3Encoder } from "../models/qwen3.js";
import { empiricalMu, sigmaSchedule } from "../pipeline/schedule.js";
import { bnDenormalize, bnNormalize, latentIds, pack, packRefs, patchify, refIds, textIds, unpackWithIds, unpatchify } from "../pipeline/latents.js";
import { tensor } from "../util/tensor.js";
import { PIPELINE_KINDS } from "./pipeline_kinds.js";
import { loraForwardKind, loraFuseKind } from "./lora_kinds.js";
import { TRAIN_KINDS } from "./train_kinds.js";
import type { CaseSet, CaseSpec, ComponentSpec, NamedTensor } from "./cases.js";

export interface CaseContext {
  set: CaseSet;
  spec: CaseSpec;
  params: Record<string, any>;
  inputs: Map<string, NamedTensor>;
  models: ModelCache;
}

export interface CaseImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface CaseOutput {
  tensors: Map<string, { shape: number[]; data: TypedArray }>;
  /** Images by the expected file path they correspond to. */
  images?: Map<string, CaseImage>;
}

export type KindHandler = (ctx: CaseContext) => Promise<CaseOutput>;

/** Loaded models shared by the cases of one run (many cases use the same weights). */
export class ModelCache {
  private cache = new Map<string, Promise<{ release(): Promise<void> }>>();

  constructor(readonly root: string, readonly backend: Backend) {}

  resolve(rel: string): string {
    return path.join(this.root, rel);
  }

  get<T extends { release(): Promise<void> }>(key: string, load: () => Promise<T>): Promise<T> {
    let p = this.cache.get(key);
    if (!p) {
      p = load();
      this.cache.set(key, p);
    }
    return p as Promise<T>;
  }

  transformer(spec: ComponentSpec): Promise<Flux2Transformer> {
    return this.get(`transformer:${spec.weights}:${spec.config}:${spec.format}`, () =>
      Flux2Transformer.fromFiles(this.backend, this.resolve(spec.weights), spec.config ? this.resolve(spec.config) : null, spec.format ?? "diffusers"));
  }

  vae(spec: ComponentSpec): Promise<Flux2Vae> {
    return this.get(`vae:${spec.weights}:${spec.config}:${spec.format}`, () =>
      Flux2Vae.fromFiles(this.backend, this.resolve(spec.weights), this.resolve(spec.config!), spec.format === "bfl" ? "bfl" : "diffusers"));
  }

  textEncoder(spec: ComponentSpec, outputLayers: number[]): Promise<Qwen3Encoder> {
    return this.get(`te:${spec.weights}:${spec.config}`, () =>
      Qwen3Encoder.fromFiles(this.backend, this.resolve(spec.weights), spec.config ? this.resolve(spec.config) : null, { outputLayers }));
  }

  async release(): Promise<void> {
    for (const p of this.cache.values()) await (await p.catch(() => null))?.release();
    this.cache.clear();
  }
}

export function input(ctx: CaseContext, name: string): NamedTensor {
  const t = ctx.inputs.get(name);
  if (!t) throw new Error(`case ${ctx.spec.name}: input tensor "${name}" missing from ${ctx.spec.inputs}`);
  return t;
}

export function host(t: NamedTensor): HostTensor {
  return { data: t.data as HostTensor["data"], shape: t.shape };
}

/** Position ids are given per batch element; the model reads element 0. */
function firstBatch(t: NamedTensor): BigInt64Array {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return (t.data as BigInt64Array).subarray(0, per);
}

const transformerKind: KindHandler = async (ctx) => {
  const model = await ctx.models.transformer(ctx.spec.model.transformer!);
  const output = await model.forward({
    hidden: host(input(ctx, "hidden_states")),
    text: host(input(ctx, "encoder_hidden_states")),
    timestep: input(ctx, "timestep").data as Float32Array,
    imgIds: firstBatch(input(ctx, "img_ids")),
    txtIds: firstBatch(input(ctx, "txt_ids")),
    guidance: ctx.inputs.get("guidance")?.data as Float32Array | undefined,
  });
  return { tensors: new Map([["output", output]]) };
};

type Out = CaseOutput["tensors"];

function f32(t: NamedTensor) {
  return tensor(t.data as Float32Array, t.shape);
}

const vaeEncodeKind: KindHandler = async (ctx) => {
  const vae = await ctx.models.vae(ctx.spec.model.vae!);
  const enc = await vae.encode(host(input(ctx, "image")));
  return { tensors: new Map([["moments", enc.moments], ["latent_mean", enc.mean], ["latent_logvar", enc.logvar]]) as Out };
};

const vaeDecodeKind: KindHandler = async (ctx) => {
  const vae = await ctx.models.vae(ctx.spec.model.vae!);
  return { tensors: new Map([["sample", await vae.decode(host(input(ctx, "latents")))]]) as Out };
};

const layoutKind: KindHandler = async (ctx) => {
  const latents = f32(input(ctx, "latents"));
  const [B, , h, w] = latents.shape;
  const refs = Array.from({ length: ctx.params.num_refs as number }, (_, n) => f32(input(ctx, `ref_${n}`)));
  const text = input(ctx, "text_dummy");
  const out: Out = new Map();
  out.set("packed", pack(latents));
  out.set("latent_ids", latentIds(B, h, w));
  out.set("text_ids", textIds(text.shape[0], text.shape[1]));
  out.set("ref_packed", packRefs(refs));
  out.set("ref_ids", refIds(refs.map((r) => ({ h: r.shape[2], w: r.shape[3] }))));
  out.set("patchified", patchify(f32(input(ctx, "plain_latents"))));
  return { tensors: out };
};

const scheduleKind: KindHandler = async (ctx) => {
  const out: Out = new Map();
  (ctx.params.entries as { num_inference_steps: number; image_seq_len: number }[]).forEach((e, n) => {
    const mu = empiricalMu(e.image_seq_len, e.num_inference_steps);
    const s = sigmaSchedule(e.num_inference_steps, mu);
    out.set(`entry${n}_mu`, { data: Float64Array.of(mu), shape: [1] });
    out.set(`entry${n}_sigmas`, { data: s.sigmas, shape: [s.sigmas.length] });
    out.set(`entry${n}_timesteps`, { data: s.timesteps, shape: [s.timesteps.length] });
    out.set(`entry${n}_transformer_timestep`, { data: s.transformerTimesteps, shape: [s.transformerTimesteps.length] });
  });
  return { tensors: out };
};

const bnNormKind: KindHandler = async (ctx) => {
  const vae = await ctx.models.vae(ctx.spec.model.vae!);
  const enc = await vae.encode(host(input(ctx, "image")));
  const { mean, std } = vae.bnStats();
  const mode = tensor(enc.mean.data as Float32Array, enc.mean.shape);
  const patched = patchify(mode);
  const normalized = bnNormalize(patched, mean, std);
  const packed = pack(normalized);
  const [B, , h, w] = normalized.shape;
  const ids = latentIds(B, h, w);
  const denormalized = bnDenormalize(unpackWithIds(packed, ids), mean, std);
  const out: Out = new Map();
  out.set("latent_mode", mode);
  out.set("patchified", patched);
  out.set("bn_mean", { data: mean, shape: [mean.length] });
  out.set("bn_std", { data: std, shape: [std.length] });
  out.set("normalized", normalized);
  out.set("normalized_packed", packed);
  out.set("normalized_ids", ids);
  out.set("denormalized", denormalized);
  out.set("denormalized_unpatchified", unpatchify(denormalized));
  return { tensors: out };
};

const textEncoderKind: KindHandler = async (ctx) => {
  const layers = ctx.params.hidden_states_layers as number[];
  const te = await ctx.models.textEncoder(ctx.spec.model.text_encoder!, layers);
  const ids = input(ctx, "input_ids"), mask = input(ctx, "attention_mask");
  const [B, L] = ids.shape;
  const all = Array.from({ length: te.config.num_hidden_layers + 1 }, (_, i) => i);
  const hs = await te.hiddenStates(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, all, { logits: true });
  const per = hs.hiddenStates[0].data.length;
  const stacked = new Float32Array(per * hs.hiddenStates.length);
  hs.hiddenStates.forEach((t, i) => stacked.set(t.data as Float32Array, i * per));
  const embeds = await te.promptEmbeds(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, layers);
  const out: Out = new Map();
  out.set("hidden_states", { data: stacked, shape: [hs.hiddenStates.length, ...hs.hiddenStates[0].shape] });
  out.set("logits", hs.logits!);
  out.set("prompt_embeds", embeds);
  return { tensors: out };
};

export const KINDS: Record<string, KindHandler> = {
  transformer: transformerKind,
  vae_encode: vaeEncodeKind,
  vae_decode: vaeDecodeKind,
  layout: layoutKind,
  schedule: scheduleKind,
  bn_norm: bnNormKind,
  text_encoder: textEncoderKind,
  ...PIPELINE_KINDS,
  lora_forward: loraForwardKind,
  lora_fuse: loraFuseKind,
  ...TRAIN_KINDS,
};
