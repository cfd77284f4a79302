// One job on a loaded pipeline: the request (with stored input images) →
// references / img2img / inpaint / outpaint inputs → generate → encoded images
// with their parameters embedded. Runs inside the executor's worker thread.

import sharp from "sharp";
import { referenceInputs, type GenerationRequest } from "../api/request.js";
import { expandCanvas } from "../cli/edit.js";
import { Flux2Pipeline, InvalidRequestError, type GenerateResult, type InitImage } from "../pipeline/flux2.js";
import { decodeImage, type ImageFormat } from "../pipeline/image.js";
import type { ImageRecord } from "../pipeline/metadata.js";
import { encodeGenerated } from "../provenance/provenance.js";
import type { Moderator } from "../moderation/moderator.js";
import { IMAGE_UPSAMPLING_REFUSED } from "../text/upsample.js";
import { prepareInpaintImage, prepareReference, referencePixelCap, resizeExact, type ReferenceImage } from "../pipeline/reference.js";
import { resizeLanczos } from "../pipeline/resize.js";
import type { ProgressInfo } from "./events.js";
import { pngDataUrl } from "./png.js";

export interface ExecJob {
  id: string;
  model: string;
  /** Validated request; image fields hold "store:<name>" references. */
  request: GenerationRequest;
}

export interface ExecImage {
  bytes: Uint8Array;
  ext: string;
}

export interface ExecOutput {
  images: ExecImage[];
  width: number;
  height: number;
  seed: number | null;
  steps: number;
  guidance: number;
  /** What each LoRA applied, ignored or did not recognise. */
  loras?: LoraSummary[];
  /** The rewritten prompt, when prompt_upsampling was on. */
  prompt?: string;
}

export interface LoraSummary {
  name: string;
  strength: number;
  format: string;
  applied: number;
  ignored: string[];
  unknown: string[];
  unsupported_text_encoder: string[];
}

export class CancelledError extends Error {
  /** `stage`: where the cancel was seen (it ends up in the job's error, so a client sees where it stopped). */
  constructor(readonly stage?: string) {
    super(stage ? `cancelled during ${stage}` : "cancelled");
    this.name = "CancelledError";
  }
}

export interface RunContext {
  multiple: number;
  maxPixels: number;
  readInput: (ref: string) => Buffer;
  onProgress: (p: ProgressInfo) => void;
  isCancelled: () => boolean;
  /** The invisible watermark on outputs (default on; `flux2 serve --no-watermark` turns it off). */
  watermark?: boolean;
  /** Prompt and image checks (`flux2 serve --moderation`); throws ModeratedError. */
  moderator?: Moderator;
  /** Rewrite a prompt with the model's text encoder (prompt_upsampling); seed as the request's. */
  upsample?: (prompt: string, seed: number | undefined) => Promise<string>;
  /** The moderation's yes/no LLM check of a prompt with this model's text encoder; throws ModeratedError. */
  llmCheck?: (prompt: string) => Promise<void>;
  /** Told each stage as it begins ("decoding input_image", "resizing reference 1", "denoising", …). */
  onStage?: (stage: string) => void;
}

/** The stage each job is in, for the cancel message (a WeakMap: RunContext stays a plain caller-made object). */
const stages = new WeakMap<RunContext, string>();

/** A new stage begins: remembered for the cancel message and reported to the caller. */
function enter(ctx: RunContext, stage: string): void {
  stages.set(ctx, stage);
  ctx.onStage?.(stage);
}

/** Stop here if the job was cancelled (a DELETE, or the server shutting down). */
function check(ctx: RunContext): void {
  if (ctx.isCancelled()) throw new CancelledError(stages.get(ctx));
}

/** How often a wait on uninterruptible work looks at the cancellation flag. */
const CANCEL_POLL_MS = 20;

/**
 * Wait for work that cannot be interrupted (a libvips decode or encode runs on
 * its own threads), but stop waiting as soon as the job is cancelled: the work
 * ends in the background and its result is dropped, so a cancel is answered at
 * once instead of after a multi-second decode of a huge input.
 */
async function unlessCancelled<T>(ctx: RunContext, work: Promise<T>): Promise<T> {
  check(ctx);
  let timer: NodeJS.Timeout | undefined;
  const cancelled = new Promise<never>((_, reject) => {
    timer = setInterval(() => ctx.isCancelled() && reject(new CancelledError(stages.get(ctx))), CANCEL_POLL_MS);
  });
  try {
    return await Promise.race([work, cancelled]);
  } finally {
    clearInterval(timer);
    work.catch(() => {}); // an abandoned decode's failure is of no interest
  }
}

async function readImage(ctx: RunContext, ref: string, field: string): Promise<ReferenceImage> {
  enter(ctx, `decoding ${field}`);
  const d = await unlessCancelled(ctx, decodeImage(ctx.readInput(ref), { maxPixels: ctx.maxPixels }));
  return { rgb: d.rgb, width: d.width, height: d.height };
}

/** White = repaint; alpha flattened onto black, as `flux2 edit --mask` reads masks. */
async function readMask(ctx: RunContext, ref: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  enter(ctx, "decoding mask_image");
  const raw = await unlessCancelled(ctx, sharp(ctx.readInput(ref), { limitInputPixels: ctx.maxPixels }).flatten({ background: "#000000" }).greyscale().raw()
    .toBuffer({ resolveWithObject: true }));
  return { data: new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.info.width * raw.info.height), width: raw.info.width, height: raw.info.height };
}

/** img2img / inpaint / outpaint input from the first image (others stay references). */
async function initImage(r: GenerationRequest, ctx: RunContext): Promise<InitImage> {
  let base = await readImage(ctx, r.input_image!, "input_image");
  let mask: Uint8Array | undefined;
  if (r.expand) {
    const e = await expandCanvas(base, r.expand as [number, number, number, number], ctx.multiple);
    base = e.image;
    mask = e.mask;
  } else if (r.mask_image) {
    const m = await readMask(ctx, r.mask_image);
    if (m.width !== base.width || m.height !== base.height) {
      throw new InvalidRequestError(`mask_image is ${m.width}×${m.height} but input_image is ${base.width}×${base.height}: give a mask of the same size`);
    }
    mask = m.data;
  }
  const stop = () => check(ctx);
  enter(ctx, "resizing input_image");
  let image = prepareInpaintImage(base, { multiple: ctx.multiple, check: stop }).image;
  if (r.width !== undefined && r.height !== undefined && (r.width !== image.width || r.height !== image.height)) image = resizeExact(image, r.width, r.height, stop);
  if (mask && (image.width !== base.width || image.height !== base.height)) mask = resizeLanczos(mask, base.width, base.height, 1, image.width, image.height, stop);
  return { image, mask, strength: r.strength ?? (r.expand || r.mask_image ? 1 : 0.8) };
}

/** The pipeline's stage names (Flux2Pipeline.generate's onStage) as a client reads them. */
const PIPELINE_STAGES: Record<string, string> = {
  encode: "the text encoder", references: "the reference encode (VAE)", denoise: "denoising", decode: "the VAE decode",
};

/** The request field of the i-th input image: input_image, input_image_2, … */
function referenceField(i: number): string {
  return i === 0 ? "input_image" : `input_image_${i + 1}`;
}

export async function runGeneration(pipe: Flux2Pipeline, job: ExecJob, ctx: RunContext): Promise<ExecOutput> {
  let r = job.request;
  let upsampledFrom: string | undefined;
  if (r.prompt_upsampling) {
    if (referenceInputs(r).length) throw new InvalidRequestError(IMAGE_UPSAMPLING_REFUSED);
    if (!ctx.upsample) throw new InvalidRequestError("prompt_upsampling is not available in this executor");
    enter(ctx, "prompt upsampling");
    // The user's prompt is checked before any work, the rewrite (below, with the other checks) before use.
    ctx.moderator?.checkPrompt(r.prompt);
    upsampledFrom = r.prompt;
    r = { ...r, prompt: await ctx.upsample(r.prompt, r.seed) };
  }
  const d = pipe.defaults;
  const repaint = r.mask_image !== undefined || r.expand !== undefined || r.strength !== undefined;
  ctx.moderator?.checkPrompt(r.prompt);
  await ctx.llmCheck?.(r.prompt);
  const init = repaint ? await initImage(r, ctx) : undefined;
  if (init) await ctx.moderator?.checkInputs([{ what: "input_image", image: init.image }], r.safety_tolerance);
  // One reference at a time, each checked and shrunk right after its decode: only one
  // full-size input is in memory at once (the count and sizes were validated at submit).
  const inputs = referenceInputs(r).slice(repaint ? 1 : 0);
  const cap = referencePixelCap(inputs.length);
  const refs = [];
  for (const [i, ref] of inputs.entries()) {
    const field = referenceField(i + (init ? 1 : 0));
    const image = await readImage(ctx, ref, field);
    await ctx.moderator?.checkInputs([{ what: field, image }], r.safety_tolerance);
    enter(ctx, `resizing reference ${i + 1}`);
    refs.push(prepareReference(image, { multiple: ctx.multiple, pixelCap: cap, label: `reference ${i + 1}`, check: () => check(ctx) }));
  }
  const steps = r.steps ?? d.steps;
  // The last step reported (img2img runs fewer steps than asked) and its preview, repeated on the decode stage's event.
  let last: { step: number; steps: number; preview?: string } = { step: 0, steps };
  const guidance = r.guidance ?? d.guidance;
  const result = await pipe.generate({
    prompt: r.prompt, negativePrompt: r.negative_prompt, width: r.width, height: r.height, steps, guidance,
    seed: r.seed, numImagesPerPrompt: r.num_images, references: refs.map((x) => x.image), init, preview: true,
    // Between stages (text encoder, reference encode, denoise, VAE decode) as well as between steps.
    // Each stage is also announced, so a client can say "Encoding prompt" or "Decoding" rather than show an idle bar,
    // and a cancel can say where the job stopped.
    onStage: (stage) => {
      check(ctx);
      enter(ctx, PIPELINE_STAGES[stage] ?? stage);
      ctx.onProgress(stage === "decode" ? { ...last, fraction: last.steps ? last.step / last.steps : 1, stage } : { step: 0, steps, fraction: 0, stage });
    },
    onStep: (info) => {
      // Cancellation is checked between steps: throwing here stops the run.
      check(ctx);
      const p = info.preview;
      last = { step: info.step, steps: info.steps, preview: p ? pngDataUrl(p.rgb, p.width, p.height) : undefined };
      ctx.onProgress({ ...last, fraction: info.step / info.steps });
    },
  });
  // Before encoding: a moderated image is never written anywhere.
  await ctx.moderator?.checkOutputs(result.images, r.safety_tolerance);
  const references = [
    ...(init ? [{ width: init.image.width, height: init.image.height }] : []),
    ...refs.map((x) => ({ width: x.image.width, height: x.image.height, resizedFrom: x.resizedTo || x.cropped ? `${x.original.width}x${x.original.height}` : undefined })),
  ];
  enter(ctx, "encoding the output");
  check(ctx);
  return {
    images: await encodeAll(ctx, result, r, job.model, pipe.variant, references, init?.strength, ctx.watermark !== false, upsampledFrom),
    ...(upsampledFrom !== undefined ? { prompt: r.prompt } : {}),
    width: result.width, height: result.height, seed: r.seed ?? 0, steps: result.steps, guidance: result.guidance,
    loras: pipe.loraReports.length ? pipe.loraReports.map((l) => ({
      name: l.name, strength: l.strength, format: l.format, applied: l.report.applied.length,
      ignored: l.report.ignored, unknown: l.report.unknown, unsupported_text_encoder: l.report.unsupportedTextEncoder,
    })) : undefined,
  };
}

async function encodeAll(ctx: RunContext, result: GenerateResult, r: GenerationRequest, model: string, variant: string, references: ImageRecord["references"],
                         strength: number | undefined, watermark: boolean, upsampledFrom?: string): Promise<ExecImage[]> {
  const format: ImageFormat = r.output_format === "jpeg" ? "jpg" : r.output_format === "webp" ? "webp" : "png";
  const out: ExecImage[] = [];
  for (const img of result.images) {
    const record: ImageRecord = {
      prompt: r.prompt, negativePrompt: r.negative_prompt ?? null, width: img.width, height: img.height,
      steps: result.steps, guidance: result.guidance, seed: img.seed, variant, model,
      references: references?.length ? references : undefined, strength,
      loras: r.loras?.length ? r.loras.map((l) => ({ name: l.name, strength: l.strength })) : undefined,
      upsampledFrom,
    };
    const { bytes } = await unlessCancelled(ctx, encodeGenerated(img.rgb, img.width, img.height, format, record, watermark));
    out.push({ bytes, ext: format });
  }
  return out;
}
