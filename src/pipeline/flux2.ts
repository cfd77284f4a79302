// The FLUX.2 pipeline: prompt → text encoder → denoise → VAE → pixels. One class
// serves every variant:
//   klein       distilled, one forward per step, guidance ignored
//   klein-base  true classifier-free guidance with the empty negative prompt
//   dev         guidance fed to the model's guidance embedder
// Reference images (editing) are encoded once and appended to the image tokens of
// every step (src/pipeline/conditioning.ts); the loop itself is src/pipeline/denoise.ts.
//
// Components are loaded when their stage starts and, unless `keepLoaded`,
// released when it ends, so a run needs the largest stage's memory, not the sum.
// Which components a checkpoint has (LoRAs, quantization) is decided by the loader,
// src/loaders/pretrained.ts; the pipeline only calls ComponentSources.

import type { Backend, HostTensor } from "../backend/backend.js";
import { OrtBackend } from "../backend/ort.js";
import { Flux2Transformer, readTransformerConfig, type TransformerConfig } from "../models/transformer.js";
import type { Flux2KvTransformer } from "../models/transformer_kv.js";
import { Flux2Vae, readVaeConfig, vaeScaleFactor } from "../models/vae.js";
import type { DecoderEncoder } from "../models/decoder.js";
import { VARIANT_CARDS } from "./variants.js";
import type { EncodedPrompts } from "../text/tokenizer.js";
import { lengthBucket, tokenLengths, type TextPadding } from "../text/length.js";
import { InvalidRequestError } from "../util/errors.js";
import { randn } from "../util/random.js";
import { tensor, type Tensor } from "../util/tensor.js";
import { defaultsFor, modelDefaults, sizeFromReference, type ModelDefaults } from "./model_defaults.js";
import type { Checkpoint, Variant } from "./checkpoint.js";
import { InpaintMask, encodeInit, encodeReferences, repeatBatch, withInitReference, type InitImage, type ReferenceTokens } from "./conditioning.js";
import { denoise, guided, kvVelocity, transformerVelocity, type Velocity } from "./denoise.js";
import { toUint8Diffusers } from "./image.js";
import { bnDenormalize, latentIds, noiseTo, pack, textIds, unpackWithIds, unpatchify } from "./latents.js";
import type { ReferenceImage } from "./reference.js";
import { fitPreviewProbe, previewFromLatents, type PreviewImage, type PreviewProbe } from "./preview.js";
import { empiricalMu, img2imgStart, sigmaSchedule, type SigmaSchedule } from "./schedule.js";
import { validateSize } from "./size.js";
import { Tap, type TraceListener } from "./tap.js";

export type { ReferenceImage, InitImage };
export { toSignedUnit } from "./conditioning.js";
export { validateSize, MAX_PIXELS } from "./size.js";

type F32 = Tensor<Float32Array>;

export interface GenerateOptions {
  prompt?: string | string[];
  /** Negative prompt for classifier-free guidance (klein base); default "". */
  negativePrompt?: string | string[];
  /** Prompt embeddings given directly (B, L, joint_dim): the text encoder is skipped. */
  promptEmbeds?: F32;
  negativePromptEmbeds?: F32;
  /** Output size; default: the first reference's (fitted to the model's largest side), else the model's (1024, or its folder's resolution). */
  width?: number;
  height?: number;
  steps?: number;
  guidance?: number;
  /** Seed of image i is seed + i (so image 0 of a batch equals the single-image run). */
  seed?: number;
  numImagesPerPrompt?: number;
  /** Images per transformer forward (memory vs speed); default: all at once. */
  batchSize?: number;
  /** Initial noise (B, 4C, h, w) instead of seeded noise. */
  latents?: F32;
  references?: ReferenceImage[];
  /** Reuse the references' keys/values from step 0 (klein KV checkpoints; default: on for klein-kv). */
  kvCache?: boolean;
  /** img2img / inpainting. The image is also given to the model as reference 0. */
  init?: InitImage;
  /** Text tokens; default: the model folder's max_sequence_length, else 512. */
  maxSequenceLength?: number;
  /** Prompts padded to maxSequenceLength or to their length bucket; default: the model folder's text_padding, else FLUX.2's rule (to maxSequenceLength). */
  textPadding?: TextPadding;
  textEncoderLayers?: number[];
  /** Called after every denoising step. */
  onStep?: (info: StepInfo) => void;
  /** Compute a preview image for onStep (costs a tiny VAE decode once, then nearly nothing). */
  preview?: boolean;
  /** Called with every intermediate tensor, named as in the golden fixtures (src/pipeline/tap.ts). */
  trace?: TraceListener;
  /** Called when a stage starts ("encode", "references", "denoise", "decode"); it may throw to stop the run. */
  onStage?: (stage: string) => void;
}

export interface StepInfo {
  step: number;
  steps: number;
  sigma: number;
  elapsedMs: number;
  preview?: PreviewImage;
}

export interface GeneratedImage {
  rgb: Uint8Array;
  width: number;
  height: number;
  seed: number | null;
  prompt: string | null;
}

export interface GenerateResult {
  images: GeneratedImage[];
  width: number;
  height: number;
  steps: number;
  guidance: number;
  variant: Variant;
  /** VAE decoder output (B, 3, H, W) in [-1, 1]. */
  decoded: F32;
}

/** How to get each component when its stage begins (built by src/loaders/pretrained.ts or fromComponents). */
export interface ComponentSources {
  transformer: () => Promise<Flux2Transformer>;
  kvTransformer?: () => Promise<Flux2KvTransformer>;
  vae: () => Promise<Flux2Vae>;
  textEncoder?: () => Promise<DecoderEncoder>;
  tokenizer?: () => Promise<PromptEncoder>;
  transformerConfig: TransformerConfig;
}

/** What the pipeline needs of a tokenizer: Qwen3 (klein) and Mistral (dev) prompts differ only inside. */
export interface PromptEncoder {
  encode(prompts: string[], maxLength: number): EncodedPrompts;
}

/** What one LoRA did to this pipeline's transformer (filled in by the loader). */
export interface LoraSummary {
  name: string;
  file: string;
  strength: number;
  format: string;
  report: { applied: string[]; ignored: string[]; unknown: string[]; unsupportedTextEncoder: string[]; notes: string[] };
}

/** The run's choices once the defaults are applied. */
interface RunSettings {
  steps: number;
  guidance: number;
  cfg: boolean;
  perPrompt: number;
  prompts: string[] | null;
}

/** Text conditioning, one row per output image. */
interface TextConditioning {
  embeds: F32;
  negEmbeds: F32 | null;
}

/** The output in pixels and in latent cells (one cell = `multiple` pixels). */
interface OutputGrid {
  width: number;
  height: number;
  h: number;
  w: number;
  multiple: number;
}

/** Where the sampler starts: packed latents, their ids, the schedule and its first step. */
interface SamplerStart {
  x: F32;
  ids: Tensor<BigInt64Array>;
  schedule: SigmaSchedule;
  first: number;
  inpaint: InpaintMask | null;
}

type ComponentName = "transformer" | "kvTransformer" | "vae" | "textEncoder" | "tokenizer";
type Loaded = { transformer?: Flux2Transformer; kvTransformer?: Flux2KvTransformer; vae?: Flux2Vae; textEncoder?: DecoderEncoder; tokenizer?: PromptEncoder };

export class Flux2Pipeline {
  private loaded: Loaded = {};
  private probe: PreviewProbe | null = null;
  private modelDefaults?: ModelDefaults;
  /** What each LoRA applied, ignored or did not recognise (for the CLI, the API and metadata). */
  loraReports: LoraSummary[] = [];

  constructor(
    readonly variant: Variant,
    private sources: ComponentSources,
    readonly options: { keepLoaded?: boolean; checkpoint?: Checkpoint } = {},
  ) {}

  /**
   * Change the strengths of the LoRAs this pipeline was built with, in order; the next run uses
   * them (no rebuild). The loader (src/loaders/pretrained.ts) replaces this when it attaches LoRAs.
   */
  setLoraStrengths: (strengths: number[]) => void = (s) => {
    if (s.length) throw new InvalidRequestError("this pipeline was built without LoRAs");
  };

  /** A pipeline from separate transformer and VAE files (prompt embeddings must be given). */
  static fromComponents(variant: Variant, parts: { transformer: { weights: string; config: string }; vae: { weights: string; config: string } }, backend: Backend = new OrtBackend()): Flux2Pipeline {
    return new Flux2Pipeline(variant, {
      transformerConfig: readTransformerConfig(parts.transformer.config),
      transformer: () => Flux2Transformer.fromFiles(backend, parts.transformer.weights, parts.transformer.config),
      vae: () => Flux2Vae.fromFiles(backend, parts.vae.weights, parts.vae.config),
    });
  }

  /** Output and reference sides must be multiples of this: 2 × the VAE's scale factor (16 for FLUX.2), read without loading the VAE. */
  get sizeMultiple(): number {
    const cfg = this.options.checkpoint?.vae.config;
    return cfg ? 2 * vaeScaleFactor(readVaeConfig(cfg)) : 16;
  }

  /** The variant's defaults refined by the model folder's own (src/pipeline/model_defaults.ts). */
  get defaults(): ModelDefaults {
    const ck = this.options.checkpoint;
    return (this.modelDefaults ??= ck ? modelDefaults(ck) : defaultsFor(this.variant));
  }

  private async component<K extends ComponentName>(k: K): Promise<NonNullable<Loaded[K]>> {
    if (!this.loaded[k]) {
      const src = this.sources[k];
      if (!src) throw new Error(`this pipeline has no ${k}: pass prompt embeddings instead of prompts`);
      (this.loaded as Record<K, unknown>)[k] = await src();
    }
    return this.loaded[k]!;
  }

  private async done(k: Exclude<ComponentName, "tokenizer">): Promise<void> {
    if (this.options.keepLoaded) return;
    const c = this.loaded[k];
    this.loaded[k] = undefined;
    await c?.release();
  }

  async release(): Promise<void> {
    for (const k of ["transformer", "kvTransformer", "vae", "textEncoder"] as const) {
      await this.loaded[k]?.release();
      this.loaded[k] = undefined;
    }
  }

  /** Tokenize and encode prompts: (B, L, 3·hidden), three hidden layers stacked. */
  async encodePrompts(prompts: string[], maxLength: number, layers: number[], trace?: TraceListener | Tap, prefix = "prompt"): Promise<F32> {
    const tap = trace instanceof Tap ? trace : new Tap(trace);
    const enc = (await this.component("tokenizer")).encode(prompts, maxLength);
    enc.rendered.forEach((s, b) => tap.lazy(`${prefix}_rendered_${b}`, () => {
      const bytes = new TextEncoder().encode(s);
      return { data: bytes, shape: [bytes.length] };
    }));
    tap.emit(`${prefix}_input_ids`, { data: enc.inputIds, shape: [enc.batch, enc.length] });
    tap.emit(`${prefix}_attention_mask`, { data: enc.attentionMask, shape: [enc.batch, enc.length] });
    const te = await this.component("textEncoder");
    const out = await te.promptEmbeds(enc.inputIds, enc.attentionMask, enc.batch, enc.length, layers);
    return tensor(out.data as Float32Array, out.shape);
  }

  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    const tap = new Tap(opts.trace);
    const run = this.settings(opts);
    opts.onStage?.("encode");
    const text = await this.encodeText(opts, run, tap);
    const vae = await this.component("vae");
    const grid = this.outputGrid(opts, 2 * vae.scaleFactor);
    if (opts.init || opts.references?.length) opts.onStage?.("references");
    const x0 = opts.init ? await encodeInit(vae, opts.init, tap) : null;
    const refs = await this.referenceTokens(vae, opts, x0, grid.multiple, tap);
    if (!opts.preview) await this.done("vae");
    const start = this.samplerStart(opts, run, grid, text.embeds.shape[0], x0, tap);
    opts.onStage?.("denoise");
    const x = await this.denoiseStage(opts, run, text, refs, start, tap);
    opts.onStage?.("decode");
    return this.decode(x, start.ids, opts, run, grid, tap);
  }

  private settings(opts: GenerateOptions): RunSettings {
    const d = this.defaults;
    const guidance = opts.guidance ?? d.guidance;
    return {
      steps: opts.steps ?? d.steps,
      guidance,
      cfg: d.cfg && guidance > 1,
      perPrompt: opts.numImagesPerPrompt ?? 1,
      prompts: opts.prompt === undefined ? null : Array.isArray(opts.prompt) ? opts.prompt : [opts.prompt],
    };
  }

  /**
   * The text length prompts are padded to: `maxLength` (FLUX.2's rule), or for a model that
   * records "text_padding": "bucket" the length bucket of the longest prompt, up to `maxLength`
   * (the padding its transformer was trained on; src/pipeline/model_defaults.ts).
   */
  private async paddedLength(prompts: string[], maxLength: number, padding: TextPadding): Promise<number> {
    if (padding !== "bucket") return maxLength;
    const enc = (await this.component("tokenizer")).encode(prompts, maxLength);
    return lengthBucket(Math.max(...tokenLengths(enc)), maxLength);
  }

  /** Prompt (and, with CFG, negative prompt) embeddings, repeated per image; the text encoder is released after. */
  private async encodeText(opts: GenerateOptions, run: RunSettings, tap: Tap): Promise<TextConditioning> {
    const L = opts.maxSequenceLength ?? this.defaults.maxSequenceLength;
    const padding = opts.textPadding ?? this.defaults.textPadding;
    const layers = opts.textEncoderLayers ?? [...VARIANT_CARDS[this.variant].textLayers];
    const given = opts.promptEmbeds ?? (run.prompts ? await this.encodePrompts(run.prompts, await this.paddedLength(run.prompts, L, padding), layers, tap) : null);
    if (!given) throw new InvalidRequestError("give a prompt (or prompt embeddings)");
    let negEmbeds: F32 | null = null;
    if (run.cfg) {
      const neg = opts.negativePrompt ?? "";
      const negs = Array.isArray(neg) ? neg : new Array(given.shape[0]).fill(neg);
      negEmbeds = opts.negativePromptEmbeds ?? await this.encodePrompts(negs, await this.paddedLength(negs, L, padding), layers, tap, "negative");
    }
    if (this.sources.textEncoder) await this.done("textEncoder");
    const embeds = repeatRows(given, run.perPrompt);
    if (negEmbeds) negEmbeds = repeatRows(negEmbeds, run.perPrompt);
    const B = embeds.shape[0];
    tap.emit("prompt_embeds", embeds);
    tap.emit("txt_ids", textIds(B, embeds.shape[1]));
    if (negEmbeds) {
      tap.emit("negative_prompt_embeds", negEmbeds);
      tap.emit("negative_txt_ids", textIds(B, negEmbeds.shape[1]));
    }
    return { embeds, negEmbeds };
  }

  /** The init image's size; else the request's; else the first reference's; else the model's. */
  private outputGrid(opts: GenerateOptions, multiple: number): OutputGrid {
    const d = this.defaults;
    const ref = opts.references?.[0];
    const fromRef = ref ? sizeFromReference(d, ref.width, ref.height, multiple) : null;
    const init = opts.init?.image;
    const width = init ? init.width : opts.width ?? fromRef?.width ?? d.width;
    const height = init ? init.height : opts.height ?? fromRef?.height ?? d.height;
    validateSize(width, height, multiple);
    return { width, height, h: height / multiple, w: width / multiple, multiple };
  }

  /** All reference tokens: the init image first (when there is one), then the references. */
  private async referenceTokens(vae: Flux2Vae, opts: GenerateOptions, x0: F32 | null, multiple: number, tap: Tap): Promise<ReferenceTokens | null> {
    const refs = opts.references ?? [];
    const encoded = refs.length ? await encodeReferences(vae, refs, multiple, tap) : null;
    return x0 ? withInitReference(x0, encoded, tap) : encoded;
  }

  /** Seeded (or given) noise, the shifted schedule, and for img2img the noised init image at its first step. */
  private samplerStart(opts: GenerateOptions, run: RunSettings, grid: OutputGrid, B: number, x0: F32 | null, tap: Tap): SamplerStart {
    const { steps } = run, { h, w } = grid;
    const C = this.sources.transformerConfig.in_channels;
    const noise = opts.latents ?? seededNoise(opts.seed ?? 0, B, C, h, w);
    if (noise.shape.join(",") !== [B, C, h, w].join(",")) {
      throw new InvalidRequestError(`initial latents have shape [${noise.shape}] but this run needs [${B}, ${C}, ${h}, ${w}]`);
    }
    const ids = latentIds(B, h, w);
    tap.emit("latent_ids", ids);
    const mu = empiricalMu(h * w, steps);
    const schedule = sigmaSchedule(steps, mu);
    tap.emit("mu", { data: Float64Array.of(mu), shape: [1] });
    tap.emit("sigmas", { data: schedule.sigmas, shape: [steps + 1] });
    tap.emit("timesteps", { data: schedule.timesteps, shape: [steps] });
    const init = opts.init;
    if (!init || !x0) return { x: pack(noise), ids, schedule, first: 0, inpaint: null };
    const first = img2imgStart(steps, init.strength);
    if (first >= steps) throw new InvalidRequestError(`strength ${init.strength} with ${steps} steps leaves no step to run: raise the strength or the steps`);
    tap.emit("timesteps_used", { data: schedule.timesteps.slice(first), shape: [steps - first] });
    tap.emit("latent_timestep", { data: schedule.timesteps.slice(first, first + 1), shape: [1] });
    const noised = tensor(noiseTo(repeatBatch(x0.data, B), noise.data, schedule.sigmas[first]), noise.shape);
    tap.emit("initial_latents", noised);
    const inpaint = init.mask ? InpaintMask.create(init.mask, x0, noise, grid.height, grid.width, tap) : null;
    return { x: pack(noised), ids, schedule, first, inpaint };
  }

  private async denoiseStage(opts: GenerateOptions, run: RunSettings, text: TextConditioning, refs: ReferenceTokens | null, start: SamplerStart, tap: Tap): Promise<F32> {
    const useKv = !!refs && (opts.kvCache ?? VARIANT_CARDS[this.variant].kvCacheDefault);
    if (useKv && text.negEmbeds) throw new InvalidRequestError("the KV cache does not support classifier-free guidance");
    const velocity = await this.velocity(useKv, run, text, refs, start, opts.batchSize, tap);
    const onStep = opts.onStep ? await this.stepReporter(opts, start) : undefined;
    const x = await denoise(start.x, { schedule: start.schedule, first: start.first, velocity, inpaint: start.inpaint, tap, afterStep: onStep });
    await this.done(useKv ? "kvTransformer" : "transformer");
    return x;
  }

  /** The guided velocity of this run: plain or KV-cached transformer, embedded guidance for dev. */
  private async velocity(useKv: boolean, run: RunSettings, text: TextConditioning, refs: ReferenceTokens | null, start: SamplerStart, batchSize: number | undefined, tap: Tap): Promise<Velocity> {
    const targetIds = start.ids.data.subarray(0, start.x.shape[1] * 4);
    const embedded = this.defaults.embeddedGuidance ? run.guidance : undefined;
    const model = useKv
      ? kvVelocity(await this.component("kvTransformer"), refs!, targetIds, this.sources.transformerConfig, embedded, tap)
      : transformerVelocity(await this.component("transformer"), refs, targetIds, embedded, batchSize);
    return guided(model, text.embeds, text.negEmbeds, run.guidance);
  }

  /** Calls opts.onStep after each step, with a preview when asked (the probe is fitted once per pipeline). */
  private async stepReporter(opts: GenerateOptions, start: SamplerStart) {
    const vae = opts.preview ? await this.component("vae") : null;
    if (vae && !this.probe) this.probe = await fitPreviewProbe(vae);
    const bn = vae?.bnStats();
    const t0 = Date.now();
    const total = start.schedule.transformerTimesteps.length - start.first;
    return (step: number, before: F32, v: F32, k: number) => {
      const sigmas = start.schedule.sigmas;
      const info: StepInfo = { step, steps: total, sigma: sigmas[k + 1], elapsedMs: Date.now() - t0 };
      if (bn && this.probe) info.preview = this.preview(before, v, sigmas[k], start.ids, bn);
      opts.onStep!(info);
    };
  }

  private async decode(x: F32, ids: Tensor<BigInt64Array>, opts: GenerateOptions, run: RunSettings, grid: OutputGrid, tap: Tap): Promise<GenerateResult> {
    const { width, height } = grid;
    const vae = await this.component("vae");
    const latents = toVaeLatents(x, ids, vae.bnStats());
    tap.emit("decoder_input_latents", latents);
    const decodedHost = await vae.decode(latents);
    await this.done("vae");
    const decoded = tensor(decodedHost.data as Float32Array, decodedHost.shape);
    tap.emit("decoded_raw", decoded);
    const B = x.shape[0], px = width * height * 3;
    const u8 = toUint8Diffusers(decoded.data, B, height, width);
    const images: GeneratedImage[] = Array.from({ length: B }, (_, b) => ({
      rgb: u8.slice(b * px, (b + 1) * px), width, height,
      seed: opts.latents ? null : (opts.seed ?? 0) + b,
      prompt: run.prompts ? run.prompts[Math.floor(b / run.perPrompt)] : null,
    }));
    return { images, width, height, steps: run.steps, guidance: run.guidance, variant: this.variant, decoded };
  }

  /** A preview of the clean image the model predicts from this step: x − σ·v, first image only. */
  private preview(x: F32, v: F32, sigma: number, ids: Tensor<BigInt64Array>, bn: BnStats): PreviewImage {
    const [, N, C] = x.shape;
    const x0 = new Float32Array(N * C);
    for (let k = 0; k < N * C; k++) x0[k] = x.data[k] - sigma * v.data[k];
    const lat = toVaeLatents(tensor(x0, [1, N, C]), tensor(ids.data.subarray(0, N * 4), [1, N, 4]), bn);
    return previewFromLatents(this.probe!, lat);
  }
}

type BnStats = { mean: Float32Array; std: Float32Array };

/** Packed normalized tokens → VAE-space latents (B, C/4, 2h, 2w): unpack, de-normalize, unpatchify. */
function toVaeLatents(x: F32, ids: Tensor<BigInt64Array>, bn: BnStats): HostTensor {
  return unpatchify(bnDenormalize(unpackWithIds(x, ids), bn.mean, bn.std));
}

/** Image b gets noise from seed + b: a batch is the same as running its images one by one. */
export function seededNoise(seed: number, B: number, C: number, h: number, w: number): F32 {
  const per = C * h * w;
  const data = new Float32Array(B * per);
  for (let b = 0; b < B; b++) data.set(randn(seed + b, per), b * per);
  return tensor(data, [B, C, h, w]);
}

/** Repeat each row `times` times consecutively ([p0, p0, p1, p1, …]), as num_images_per_prompt does. */
function repeatRows(t: F32, times: number): F32 {
  if (times === 1) return t;
  const [B, ...rest] = t.shape;
  const per = rest.reduce((a, b) => a * b, 1);
  const out = new Float32Array(B * times * per);
  for (let b = 0; b < B; b++) for (let k = 0; k < times; k++) out.set(t.data.subarray(b * per, (b + 1) * per), (b * times + k) * per);
  return tensor(out, [B * times, ...rest]);
}
