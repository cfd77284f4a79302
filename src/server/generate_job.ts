// One job on a loaded pipeline: the request (with stored input images) → the
// request layer (src/api/prepare.ts: references, img2img / inpaint / outpaint,
// sizes) → generate → the request layer's writer (src/api/output.ts). Runs inside
// the executor's worker thread; what is the server's own here is cancellation,
// progress events and moderation.

import { referenceInputs, type GenerationRequest } from "../api/request.js";
import { prepareGeneration } from "../api/prepare.js";
import { encodeOutputs, imageFormat, imageRecord } from "../api/output.js";
import type { Flux2Pipeline } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import type { Moderator } from "../moderation/moderator.js";
import { IMAGE_UPSAMPLING_REFUSED } from "../text/upsample.js";
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

/** The pipeline's stage names (Flux2Pipeline.generate's onStage) as a client reads them. */
const PIPELINE_STAGES: Record<string, string> = {
  encode: "the text encoder", references: "the reference encode (VAE)", denoise: "denoising", decode: "the VAE decode",
};

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
  ctx.moderator?.checkPrompt(r.prompt);
  await ctx.llmCheck?.(r.prompt);
  // The request layer reads the stored inputs one at a time, each checked and shrunk right
  // after its decode: only one full-size input is in memory at once.
  const prepared = await prepareGeneration(r, {
    defaults: pipe.defaults, latentMultiple: ctx.multiple, maxPixels: ctx.maxPixels, readInput: (ref) => ctx.readInput(ref),
    check: () => check(ctx), settle: (work) => unlessCancelled(ctx, work),
    stage: (what) => enter(ctx, what),
    inspect: async (field, image) => { await ctx.moderator?.checkInputs([{ what: field, image }], r.safety_tolerance); },
  });
  const steps = prepared.options.steps;
  // The last step reported (img2img runs fewer steps than asked) and its preview, repeated on the decode stage's event.
  let last: { step: number; steps: number; preview?: string } = { step: 0, steps };
  const result = await pipe.generate({
    ...prepared.options, preview: true,
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
  // A cancel seen here arrived during the VAE decode (or the output check): say so, not "encoding".
  check(ctx);
  enter(ctx, "encoding the output");
  check(ctx);
  return {
    images: (await encodeOutputs(result, imageFormat(r.output_format), (i) => imageRecord(result, i, r, prepared, {
      model: job.model, variant: pipe.variant, upsampledFrom, loras: r.loras?.map((l) => ({ name: l.name, strength: l.strength })),
    }), { watermark: ctx.watermark !== false, settle: (work) => unlessCancelled(ctx, work) })).map((e) => ({ bytes: e.bytes, ext: e.ext })),
    ...(upsampledFrom !== undefined ? { prompt: r.prompt } : {}),
    width: result.width, height: result.height, seed: prepared.options.seed, steps: result.steps, guidance: result.guidance,
    loras: pipe.loraReports.length ? pipe.loraReports.map((l) => ({
      name: l.name, strength: l.strength, format: l.format, applied: l.report.applied.length,
      ignored: l.report.ignored, unknown: l.report.unknown, unsupported_text_encoder: l.report.unsupportedTextEncoder,
    })) : undefined,
  };
}
