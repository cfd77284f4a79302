// Conformance handlers for the end-to-end pipeline kinds. The pipeline reports
// every intermediate through its `trace` hook under the golden names; these
// handlers collect them and add the final image in the form each kind expects.

import * as path from "node:path";
import { Flux2Pipeline, type GenerateOptions, type GenerateResult, type ReferenceImage } from "../pipeline/flux2.js";
import { toUnitRange, toUint8Diffusers } from "../pipeline/image.js";
import { tensor } from "../util/tensor.js";
import { readVaeConfig, vaeScaleFactor } from "../models/vae.js";
import { prepareInpaintImage, prepareReferences } from "../pipeline/reference.js";
import { resizeLanczos } from "../pipeline/resize.js";
import type { NamedTensor } from "./cases.js";
import { input, type CaseContext, type CaseImage, type CaseOutput, type KindHandler } from "./kinds.js";
import { loadPipeline } from "../loaders/pretrained.js";

type Out = CaseOutput["tensors"];

function tensorArg(ctx: CaseContext, arg: { tensor: string } | undefined) {
  if (!arg) return undefined;
  const t = input(ctx, arg.tensor);
  return tensor(t.data as Float32Array, t.shape);
}

/** An RGB u8 (H, W, 3) input tensor as a reference image. */
function imageArg(t: NamedTensor): ReferenceImage {
  return { rgb: t.data as Uint8Array, height: t.shape[0], width: t.shape[1] };
}

function collector() {
  const out: Out = new Map();
  const trace: GenerateOptions["trace"] = (name, t) => out.set(name, { data: t.data, shape: [...t.shape] });
  return { out, trace };
}

function callOptions(ctx: CaseContext): GenerateOptions {
  const call = ctx.params.call;
  return {
    width: call.width,
    height: call.height,
    steps: call.num_inference_steps,
    guidance: call.guidance_scale,
    latents: tensorArg(ctx, call.latents),
    maxSequenceLength: call.max_sequence_length,
    textEncoderLayers: call.text_encoder_out_layers,
    promptEmbeds: tensorArg(ctx, call.prompt_embeds),
    negativePromptEmbeds: tensorArg(ctx, call.negative_prompt_embeds),
    prompt: call.prompt,
  };
}

/** The expected image files, each produced from its rule's tensor and batch index. */
function imageFiles(ctx: CaseContext, images: Map<string, { u8: Uint8Array; shape: number[] }>): Map<string, CaseImage> {
  const files = new Map<string, CaseImage>();
  for (const file of ctx.spec.expected_files) {
    const rule = ctx.spec.tolerance.files[file];
    const src = images.get(rule.tensor);
    if (!src) continue;
    const [, H, W] = src.shape;
    files.set(file, { rgb: src.u8.slice(rule.index * H * W * 3, (rule.index + 1) * H * W * 3), width: W, height: H });
  }
  return files;
}

function withU8(ctx: CaseContext, out: Out, res: GenerateResult, name = "image_u8"): CaseOutput {
  const [B] = res.decoded.shape;
  const u8 = toUint8Diffusers(res.decoded.data, B, res.height, res.width);
  const shape = [B, res.height, res.width, 3];
  out.set(name, { data: u8, shape });
  return { tensors: out, images: imageFiles(ctx, new Map([[name, { u8, shape }]])) };
}

/** Klein t2i from given embeddings (CFG when is_distilled is false). */
const fromEmbeddingsKind: KindHandler = async (ctx) => {
  const m = ctx.spec.model;
  const variant = ctx.params.is_distilled === false ? "klein-base" : "klein";
  const pipe = await ctx.models.get(`pipe:${m.transformer!.weights}:${m.vae!.weights}:${variant}`, async () =>
    new KeptPipeline(Flux2Pipeline.fromComponents(variant, {
      transformer: { weights: ctx.models.resolve(m.transformer!.weights), config: ctx.models.resolve(m.transformer!.config!) },
      vae: { weights: ctx.models.resolve(m.vae!.weights), config: ctx.models.resolve(m.vae!.config!) },
    }, ctx.models.backend)));
  const { out, trace } = collector();
  const res = await pipe.p.generate({ ...callOptions(ctx), trace });
  out.set("image", tensor(toUnitRange(res.decoded.data), res.decoded.shape));
  return { tensors: out };
};

/** Dev (embedded guidance) editing from given embeddings and one reference image. */
const editKind: KindHandler = async (ctx) => {
  const m = ctx.spec.model;
  const pipe = await ctx.models.get(`pipe:${m.transformer!.weights}:${m.vae!.weights}:dev`, async () =>
    new KeptPipeline(Flux2Pipeline.fromComponents("dev", {
      transformer: { weights: ctx.models.resolve(m.transformer!.weights), config: ctx.models.resolve(m.transformer!.config!) },
      vae: { weights: ctx.models.resolve(m.vae!.weights), config: ctx.models.resolve(m.vae!.config!) },
    }, ctx.models.backend)));
  const { out, trace } = collector();
  const refs = (ctx.params.call.image as { tensor: string }[]).map((a) => imageArg(input(ctx, a.tensor)));
  const res = await pipe.p.generate({ ...callOptions(ctx), references: refs, trace });
  out.set("guidance", { data: Float32Array.of(ctx.params.call.guidance_scale), shape: [1] });
  for (const [from, to] of [["ref0_preprocessed", "ref_image_preprocessed"], ["ref0_latent_mode", "ref_latent_mode"]]) {
    const t = out.get(from);
    if (t) out.set(to, t);
  }
  out.set("image", tensor(toUnitRange(res.decoded.data), res.decoded.shape));
  return { tensors: out };
};

/** A pipeline kept loaded across the cases that share it, released at the end of the run. */
export class KeptPipeline {
  constructor(readonly p: Flux2Pipeline) {}
  release() {
    return this.p.release();
  }
}

export function checkpointPipeline(ctx: CaseContext): Promise<KeptPipeline> {
  const dir = ctx.spec.model.checkpoint!;
  return ctx.models.get(`ckpt:${dir}`, async () =>
    new KeptPipeline(loadPipeline(path.join(ctx.models.root, dir), { backend: ctx.models.backend, keepLoaded: true })));
}

/** A checkpoint folder from prompt strings to pixels. */
const checkpointT2iKind: KindHandler = async (ctx) => {
  const pipe = await checkpointPipeline(ctx);
  const { out, trace } = collector();
  const res = await pipe.p.generate({ ...callOptions(ctx), trace });
  return withU8(ctx, out, res);
};

/** Multiple of the checkpoint's VAE: 2 × its scale factor (16 for FLUX.2). */
function checkpointMultiple(ctx: CaseContext): number {
  return 2 * vaeScaleFactor(readVaeConfig(path.join(ctx.models.root, ctx.spec.model.checkpoint!, "vae")));
}

/** Editing with several references (cropped as diffusers does), or with the KV cache. */
function referenceEditKind(kvCache: boolean): KindHandler {
  return async (ctx) => {
    const pipe = await checkpointPipeline(ctx);
    const refs = prepareReferences((ctx.params.call.image as { tensor: string }[]).map((a) => imageArg(input(ctx, a.tensor))), { multiple: checkpointMultiple(ctx) });
    const { out, trace } = collector();
    const res = await pipe.p.generate({ ...callOptions(ctx), references: refs.map((r) => r.image), kvCache, trace });
    return withU8(ctx, out, res);
  };
}

/** Inpainting: image + mask + strength, the image also given as reference 0. */
const inpaintKind: KindHandler = async (ctx) => {
  const pipe = await checkpointPipeline(ctx);
  const call = ctx.params.call;
  const img = imageArg(input(ctx, call.image.tensor));
  const maskT = input(ctx, call.mask_image.tensor);
  const prepared = prepareInpaintImage(img, { multiple: checkpointMultiple(ctx) });
  const { width, height } = prepared.image;
  const [mh, mw] = maskT.shape;
  const mask = mh === height && mw === width ? (maskT.data as Uint8Array) : resizeLanczos(maskT.data as Uint8Array, mw, mh, 1, width, height);
  const { out, trace } = collector();
  const res = await pipe.p.generate({
    ...callOptions(ctx), latents: tensorArg(ctx, ctx.params.noise),
    init: { image: prepared.image, mask, strength: call.strength }, trace,
  });
  return withU8(ctx, out, res, "output_u8");
};

export const PIPELINE_KINDS: Record<string, KindHandler> = {
  pipeline_from_embeddings: fromEmbeddingsKind,
  pipeline_edit: editKind,
  checkpoint_t2i: checkpointT2iKind,
  edit_multi_ref: referenceEditKind(false),
  edit_kv: referenceEditKind(true),
  inpaint: inpaintKind,
};
