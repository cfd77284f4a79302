// The FLUX.2 pipeline: prompt → text encoder → denoising loop → VAE → pixels
// (spec §6). One class serves every variant:
//   klein       distilled, one forward per step, guidance ignored
//   klein-base  true classifier-free guidance with the empty negative prompt
//   dev         guidance fed to the model's guidance embedder
// Reference images (editing, §6.3) are encoded once and appended to the image
// tokens of every step.
//
// Components are loaded when their stage starts and, unless `keepLoaded`,
// released when it ends, so a run needs the largest stage's memory, not the sum.

import type { Backend, HostTensor } from "../backend/backend.js";
import { OrtBackend } from "../backend/ort.js";
import { Flux2Transformer, readTransformerConfig, type TransformerConfig } from "../models/transformer.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { WeightSet } from "../io/safetensors.js";
import { attachRuntimeLoras, type RuntimeLoras } from "../lora/apply.js";
import { loadLoraFile, type LoraReport } from "../lora/formats.js";
import { quantizeTransformerAtLoad } from "../quant/quantize.js";
import { loadQuantOptions, loadQuantizedQwen3, type QuantizeOption } from "../quant/load.js";
import { Flux2KvTransformer, type KvCache } from "../models/transformer_kv.js";
import { Flux2Vae } from "../models/vae.js";
import { KLEIN_TEXT_LAYERS, Qwen3Encoder, type DecoderEncoder } from "../models/qwen3.js";
import { DEV_TEXT_LAYERS, MistralEncoder } from "../models/mistral.js";
import { PromptTokenizer, type EncodedPrompts } from "../text/tokenizer.js";
import { MistralPromptTokenizer } from "../text/mistral_prompt.js";
import { randn } from "../util/random.js";
import { tensor, type Tensor } from "../util/tensor.js";
import { defaultsFor, modelDefaults, sizeFromReference, type ModelDefaults } from "./model_defaults.js";
import { openCheckpoint, transformerConfig, type Checkpoint, type OpenOptions, type Variant } from "./checkpoint.js";
import { toUint8Diffusers } from "./image.js";
import { bnDenormalize, bnNormalize, latentIds, maskToLatent, noiseTo, pack, packRefs, patchify, refIds, textIds, unpackWithIds, unpatchify } from "./latents.js";
import type { ReferenceImage } from "./reference.js";
import { fitPreviewProbe, previewFromLatents, type PreviewImage, type PreviewProbe } from "./preview.js";
import { empiricalMu, eulerStep, img2imgStart, sigmaSchedule } from "./schedule.js";

export type { ReferenceImage };

const f = Math.fround;
type F32 = Tensor<Float32Array>;

/** Largest output FLUX.2 supports: 4 megapixels. */
export const MAX_PIXELS = 4 * 1024 * 1024;

/** img2img / inpainting input (spec §6.5): the image to start from, sized to the output. */
export interface InitImage {
  image: ReferenceImage;
  /** Single-channel mask (H, W), 255 = repaint; absent = repaint everything (img2img). */
  mask?: Uint8Array;
  /** 0 keeps the image, 1 starts from pure noise. */
  strength: number;
}

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
  textEncoderLayers?: number[];
  /** Called after every denoising step. */
  onStep?: (info: StepInfo) => void;
  /** Compute a preview image for onStep (costs a tiny VAE decode once, then nearly nothing). */
  preview?: boolean;
  /** Called with every intermediate tensor, named as in the golden fixtures. */
  trace?: (name: string, t: { data: Float32Array | BigInt64Array | Uint8Array | Float64Array | Int32Array; shape: readonly number[] }) => void;
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

/** How to get each component when its stage begins. */
export interface ComponentSources {
  transformer: () => Promise<Flux2Transformer>;
  kvTransformer?: () => Promise<Flux2KvTransformer>;
  vae: () => Promise<Flux2Vae>;
  textEncoder?: () => Promise<DecoderEncoder>;
  tokenizer?: () => Promise<PromptEncoder>;
  transformerConfig: TransformerConfig;
}

export class InvalidRequestError extends Error {}

/** A LoRA file and its strength. */
export interface LoraUse {
  file: string;
  strength: number;
  name?: string;
}

/** What the pipeline needs of a tokenizer: Qwen3 (klein) and Mistral (dev) prompts differ only inside. */
export interface PromptEncoder {
  encode(prompts: string[], maxLength: number): EncodedPrompts;
}

/** Sides must be multiples of 2f (16 for FLUX.2), at least 4 of those, and ≤ 4 MP in all. */
export function validateSize(width: number, height: number, multiple: number): void {
  const min = multiple * 4;
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new InvalidRequestError(`${name} must be a positive integer, got ${v}`);
    if (v % multiple !== 0) {
      const lo = Math.max(min, Math.floor(v / multiple) * multiple);
      throw new InvalidRequestError(`${name} ${v} is not a multiple of ${multiple}: use ${lo} or ${lo + multiple}`);
    }
    if (v < min) throw new InvalidRequestError(`${name} ${v} is below the minimum of ${min}`);
  }
  if (width * height > MAX_PIXELS) {
    throw new InvalidRequestError(`${width}×${height} is ${(width * height / 1e6).toFixed(1)} MP; FLUX.2 generates at most 4 MP (e.g. 2048×2048)`);
  }
}

export class Flux2Pipeline {
  private loaded: { transformer?: Flux2Transformer; kvTransformer?: Flux2KvTransformer; vae?: Flux2Vae; textEncoder?: DecoderEncoder; tokenizer?: PromptEncoder } = {};
  private probe: PreviewProbe | null = null;

  constructor(
    readonly variant: Variant,
    private sources: ComponentSources,
    readonly options: { keepLoaded?: boolean; checkpoint?: Checkpoint } = {},
  ) {}

  /**
   * Open a diffusers folder (or a BFL single file plus parts), like `from_pretrained`.
   * LoRAs run as a low-rank side path next to the memory-mapped base weights
   * (no fused copy of any weight); their strengths are graph inputs.
   */
  static fromPretrained(source: string, opts: OpenOptions & { backend?: Backend; keepLoaded?: boolean; loras?: LoraUse[]; quantize?: QuantizeOption } = {}): Flux2Pipeline {
    const ck = openCheckpoint(source, opts);
    const backend = opts.backend ?? new OrtBackend();
    const tcfg = transformerConfig(ck);
    const adapters = (opts.loras ?? []).map((l, i) => ({ adapter: loadLoraFile(l.file, l.name ?? `lora${i}`), weight: l.strength }));
    let loraReports: LoraReport[] = [];
    const runtimeLoras: RuntimeLoras[] = [];
    const weights = () => {
      const w = new TransformerWeights(WeightSet.open(ck.transformer.weights), ck.transformer.format);
      w.check(tcfg);
      // int8 / int4 Linear weights (src/quant/): quantized once into the cache, then memory-mapped.
      if (opts.quantize) quantizeTransformerAtLoad(w, tcfg, loadQuantOptions(opts.quantize));
      if (adapters.length) {
        const runtime = attachRuntimeLoras(w, adapters);
        runtimeLoras.push(runtime);
        loraReports = runtime.reports;
      }
      return w;
    };
    // Validate the LoRAs against this model now (shape mismatches are refused before any work).
    if (adapters.length) weights().set.close();
    const pipe = new Flux2Pipeline(ck.variant, {
      transformerConfig: tcfg,
      transformer: () => Flux2Transformer.load(backend, tcfg, weights()),
      kvTransformer: async () => Flux2KvTransformer.create(backend, tcfg, weights()),
      vae: () => Flux2Vae.fromFiles(backend, ck.vae.weights, requireConfig(ck.vae.config, "VAE"), ck.vae.format),
      textEncoder: () => ck.textEncoder.kind === "mistral3"
        ? MistralEncoder.fromFiles(backend, ck.textEncoder.weights, ck.textEncoder.config)
        : opts.quantize ? loadQuantizedQwen3(backend, ck.textEncoder.weights, ck.textEncoder.config, opts.quantize)
        : Qwen3Encoder.fromFiles(backend, ck.textEncoder.weights, ck.textEncoder.config),
      tokenizer: () => ck.textEncoder.kind === "mistral3" ? MistralPromptTokenizer.load(ck.tokenizer) : PromptTokenizer.load(ck.tokenizer),
    }, { keepLoaded: opts.keepLoaded, checkpoint: ck });
    pipe.loraReports = loraReports.map((r, i) => ({ name: adapters[i].adapter.name, file: opts.loras![i].file, strength: adapters[i].weight, format: adapters[i].adapter.format, report: r }));
    // Strengths are graph inputs: a new set reaches every transformer session built so far (and later) without a rebuild.
    pipe.setLoraStrengths = (strengths) => {
      if (strengths.length !== adapters.length) throw new InvalidRequestError(`${strengths.length} LoRA strengths for ${adapters.length} LoRAs`);
      strengths.forEach((x, i) => { adapters[i].weight = x; pipe.loraReports[i].strength = x; });
      for (const r of runtimeLoras) r.setWeights(Object.fromEntries(adapters.map((a) => [a.adapter.name, a.weight])));
    };
    return pipe;
  }

  /** Change the strengths of the LoRAs this pipeline was built with, in order; the next run uses them (no rebuild). */
  setLoraStrengths: (strengths: number[]) => void = (s) => {
    if (s.length) throw new InvalidRequestError("this pipeline was built without LoRAs");
  };

  /** What each LoRA applied, ignored or did not recognise (for the CLI, the API and metadata). */
  loraReports: { name: string; file: string; strength: number; format: string; report: LoraReport }[] = [];

  /** A pipeline from separate transformer and VAE files (prompt embeddings must be given). */
  static fromComponents(variant: Variant, parts: { transformer: { weights: string; config: string }; vae: { weights: string; config: string } }, backend: Backend = new OrtBackend()): Flux2Pipeline {
    return new Flux2Pipeline(variant, {
      transformerConfig: readTransformerConfig(parts.transformer.config),
      transformer: () => Flux2Transformer.fromFiles(backend, parts.transformer.weights, parts.transformer.config),
      vae: () => Flux2Vae.fromFiles(backend, parts.vae.weights, parts.vae.config),
    });
  }

  private modelDefaults?: ModelDefaults;

  /** The variant's defaults refined by the model folder's own (src/pipeline/model_defaults.ts). */
  get defaults(): ModelDefaults {
    const ck = this.options.checkpoint;
    return (this.modelDefaults ??= ck ? modelDefaults(ck) : defaultsFor(this.variant));
  }

  private async component<K extends "transformer" | "kvTransformer" | "vae" | "textEncoder" | "tokenizer">(k: K) {
    if (!this.loaded[k]) {
      const src = this.sources[k];
      if (!src) throw new Error(`this pipeline has no ${k}: pass prompt embeddings instead of prompts`);
      (this.loaded as any)[k] = await src();
    }
    return this.loaded[k]!;
  }

  private async done(k: "transformer" | "kvTransformer" | "vae" | "textEncoder"): Promise<void> {
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

  /** Tokenize and encode prompts: (B, L, 3·hidden) stacked hidden states (spec §2.1). */
  async encodePrompts(prompts: string[], maxLength: number, layers: number[], trace?: GenerateOptions["trace"], prefix = "prompt"): Promise<F32> {
    const tok = await this.component("tokenizer");
    const enc = tok.encode(prompts, maxLength);
    enc.rendered.forEach((s, b) => trace?.(`${prefix}_rendered_${b}`, { data: new TextEncoder().encode(s), shape: [Buffer.byteLength(s)] }));
    trace?.(`${prefix}_input_ids`, { data: enc.inputIds, shape: [enc.batch, enc.length] });
    trace?.(`${prefix}_attention_mask`, { data: enc.attentionMask, shape: [enc.batch, enc.length] });
    const te = await this.component("textEncoder");
    const out = await te.promptEmbeds(enc.inputIds, enc.attentionMask, enc.batch, enc.length, layers);
    return tensor(out.data as Float32Array, out.shape);
  }

  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    const trace = opts.trace;
    const d = this.defaults;
    const steps = opts.steps ?? d.steps;
    const guidance = opts.guidance ?? d.guidance;
    const cfg = d.cfg && guidance > 1;
    const perPrompt = opts.numImagesPerPrompt ?? 1;
    const L = opts.maxSequenceLength ?? d.maxSequenceLength;
    const layers = opts.textEncoderLayers ?? (this.variant === "dev" ? DEV_TEXT_LAYERS : KLEIN_TEXT_LAYERS);
    const prompts = opts.prompt === undefined ? null : Array.isArray(opts.prompt) ? opts.prompt : [opts.prompt];

    // 1. Text.
    opts.onStage?.("encode");
    let embeds = opts.promptEmbeds ?? (prompts ? await this.encodePrompts(prompts, L, layers, trace) : null);
    if (!embeds) throw new InvalidRequestError("give a prompt (or prompt embeddings)");
    let negEmbeds: F32 | null = null;
    if (cfg) {
      const neg = opts.negativePrompt ?? "";
      const negs = Array.isArray(neg) ? neg : new Array(embeds.shape[0]).fill(neg);
      negEmbeds = opts.negativePromptEmbeds ?? await this.encodePrompts(negs, L, layers, trace, "negative");
    }
    if (this.sources.textEncoder) await this.done("textEncoder");
    embeds = repeatRows(embeds, perPrompt);
    if (negEmbeds) negEmbeds = repeatRows(negEmbeds, perPrompt);
    const B = embeds.shape[0];
    trace?.("prompt_embeds", embeds);
    trace?.("txt_ids", textIds(B, embeds.shape[1]));
    if (negEmbeds) {
      trace?.("negative_prompt_embeds", negEmbeds);
      trace?.("negative_txt_ids", textIds(B, negEmbeds.shape[1]));
    }

    // 2. Output size, init image and references (encoded once).
    const vae = await this.component("vae");
    const multiple = 2 * vae.scaleFactor;
    const bn = vae.bnStats();
    const init = opts.init;
    const refs = opts.references ?? [];
    const fromRef = refs[0] ? sizeFromReference(d, refs[0].width, refs[0].height, multiple) : null;
    const width = init ? init.image.width : opts.width ?? fromRef?.width ?? d.width;
    const height = init ? init.image.height : opts.height ?? fromRef?.height ?? d.height;
    validateSize(width, height, multiple);
    const h = height / multiple, w = width / multiple;
    const C = this.sources.transformerConfig.in_channels;
    if (init || refs.length) opts.onStage?.("references");
    const x0 = init ? await this.encodeInit(vae, init, trace) : null;
    const encoded = refs.length ? await this.encodeReferences(vae, refs, multiple, trace) : null;
    const refTokens = x0 ? this.withInitReference(x0, encoded, trace) : encoded;
    if (!opts.preview) await this.done("vae");

    // 3. Noise and schedule (img2img starts part-way, from the noised image).
    const noise = opts.latents ?? seededNoise(opts.seed ?? 0, B, C, h, w);
    if (noise.shape.join(",") !== [B, C, h, w].join(",")) {
      throw new InvalidRequestError(`initial latents have shape [${noise.shape}] but this run needs [${B}, ${C}, ${h}, ${w}]`);
    }
    const ids = latentIds(B, h, w);
    trace?.("latent_ids", ids);
    const mu = empiricalMu(h * w, steps);
    const sched = sigmaSchedule(steps, mu);
    trace?.("mu", { data: Float64Array.of(mu), shape: [1] });
    trace?.("sigmas", { data: sched.sigmas, shape: [steps + 1] });
    trace?.("timesteps", { data: sched.timesteps, shape: [steps] });
    const first = init ? img2imgStart(steps, init.strength) : 0;
    if (first >= steps) throw new InvalidRequestError(`strength ${init!.strength} with ${steps} steps leaves no step to run: raise the strength or the steps`);
    let x: F32;
    if (x0) {
      trace?.("timesteps_used", { data: sched.timesteps.slice(first), shape: [steps - first] });
      trace?.("latent_timestep", { data: sched.timesteps.slice(first, first + 1), shape: [1] });
      const start = tensor(noiseTo(repeatBatch(x0.data, B), noise.data, sched.sigmas[first]), noise.shape);
      trace?.("initial_latents", start);
      x = pack(start);
    } else {
      x = pack(noise);
    }
    const mask = init?.mask ? maskToLatent(init.mask, height, width, h, w) : null;
    if (mask) trace?.("mask_latents", mask);
    const packedX0 = x0 ? pack(tensor(repeatBatch(x0.data, B), [B, C, h, w])) : null;
    const packedNoise = x0 ? pack(noise) : null;

    // 4. Denoise.
    opts.onStage?.("denoise");
    if (opts.preview && !this.probe) this.probe = await fitPreviewProbe(vae);
    const useKv = !!refTokens && (opts.kvCache ?? this.variant === "klein-kv");
    const transformer = useKv ? await this.component("kvTransformer") : await this.component("transformer");
    const targetIds = ids.data.subarray(0, h * w * 4);
    const allIds = refTokens ? concatIds(targetIds, refTokens.ids.data) : targetIds;
    let kv: KvCache | null = null;
    const startTime = Date.now();
    for (let i = 0; i < steps - first; i++) {
      const k = first + i;
      const t = sched.transformerTimesteps[k];
      trace?.(`step${i}_transformer_timestep`, { data: new Float32Array(B).fill(t), shape: [B] });
      trace?.(`step${i}_transformer_input_latents`, x);
      const g = d.embeddedGuidance ? guidance : undefined;
      const run = async (text: F32): Promise<F32> => {
        if (!useKv) return this.velocity(transformer as Flux2Transformer, x, refTokens?.tokens ?? null, text, allIds, t, g, opts.batchSize);
        const kvt = transformer as Flux2KvTransformer;
        const inp = { hidden: x, text, timestep: new Float32Array(B).fill(t), imgIds: targetIds, txtIds: textIds(1, text.shape[1]).data, guidance: g === undefined ? undefined : new Float32Array(B).fill(g) };
        if (kv) return asF32(await kvt.cached(inp, kv));
        const refs = repeatBatch(refTokens!.tokens.data, B);
        const R = refTokens!.tokens.shape[1];
        trace?.("step0_transformer_hidden_states", tensor(concatRows(refs, x.data, B, R, x.shape[1], C), [B, R + x.shape[1], C]));
        trace?.("step0_transformer_img_ids", tensor(concatIds(refTokens!.ids.data, targetIds), [1, R + x.shape[1], 4]));
        const res = await kvt.extract(inp, { data: refs, shape: [B, R, C] }, refTokens!.ids.data);
        kv = res.cache;
        for (const [name, v] of Object.entries(kv.tensors)) trace?.(name, { data: v.data, shape: [v.shape[0], v.shape[1], this.sources.transformerConfig.num_attention_heads, this.sources.transformerConfig.attention_head_dim] });
        return asF32(res.output);
      };
      let v = await run(embeds);
      trace?.(`step${i}_noise_pred_cond`, v);
      if (negEmbeds) {
        if (useKv) throw new InvalidRequestError("the KV cache does not support classifier-free guidance");
        const vNeg = await run(negEmbeds);
        trace?.(`step${i}_noise_pred_uncond`, vNeg);
        v = tensor(Float32Array.from(v.data, (vp, n) => f(vNeg.data[n] + f(guidance * f(vp - vNeg.data[n])))), v.shape);
      }
      const prevX = x;
      x = tensor(eulerStep(x.data, v.data, sched.sigmas[k], sched.sigmas[k + 1]), x.shape);
      if (mask && packedX0 && packedNoise) {
        const last = k === steps - 1;
        const keep = last ? packedX0.data : noiseTo(packedX0.data, packedNoise.data, sched.sigmas[k + 1]);
        if (!last) trace?.(`step${i}_reference_noised`, tensor(keep, x.shape));
        x = tensor(blend(x.data, keep, mask.data, C), x.shape);
      }
      trace?.(`step${i}_latents_after`, x);
      if (opts.onStep) {
        const info: StepInfo = { step: i + 1, steps: steps - first, sigma: sched.sigmas[k + 1], elapsedMs: Date.now() - startTime };
        if (opts.preview && this.probe) info.preview = this.preview(prevX, v, sched.sigmas[k], ids, bn);
        opts.onStep(info);
      }
    }
    await this.done(useKv ? "kvTransformer" : "transformer");

    // 5. Decode.
    opts.onStage?.("decode");
    const latents = toVaeLatents(x, ids, bn);
    trace?.("decoder_input_latents", latents);
    const vaeNow = await this.component("vae");
    const decodedHost = await vaeNow.decode(latents);
    await this.done("vae");
    const decoded = tensor(decodedHost.data as Float32Array, decodedHost.shape);
    trace?.("decoded_raw", decoded);
    const u8 = toUint8Diffusers(decoded.data, B, height, width);
    const images: GeneratedImage[] = [];
    for (let b = 0; b < B; b++) {
      images.push({
        rgb: u8.slice(b * width * height * 3, (b + 1) * width * height * 3), width, height,
        seed: opts.latents ? null : (opts.seed ?? 0) + b,
        prompt: prompts ? prompts[Math.floor(b / perPrompt)] : null,
      });
    }
    return { images, width, height, steps, guidance, variant: this.variant, decoded };
  }

  /** VAE-encode the init image: mode → patchify → BN normalize, (1, 4C, h, w). */
  private async encodeInit(vae: Flux2Vae, init: InitImage, trace?: GenerateOptions["trace"]): Promise<F32> {
    if (!(init.strength >= 0 && init.strength <= 1)) throw new InvalidRequestError(`strength must be between 0 and 1, got ${init.strength}`);
    if (init.mask && init.mask.length !== init.image.width * init.image.height) {
      throw new InvalidRequestError(`the mask has ${init.mask.length} pixels but the image is ${init.image.width}×${init.image.height}; give a mask of the same size`);
    }
    const pixels = toSignedUnit(init.image);
    trace?.("image_preprocessed", pixels);
    const enc = await vae.encode(pixels);
    trace?.("image_latent_mode", enc.mean);
    const { mean, std } = vae.bnStats();
    const x0 = bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std);
    trace?.("image_latents", x0);
    return x0;
  }

  /** The init image's latents become reference 0 (t = 10), before any other reference. */
  private withInitReference(x0: F32, others: { tokens: F32; ids: Tensor<BigInt64Array> } | null, trace?: GenerateOptions["trace"]) {
    const [, , h, w] = x0.shape;
    const tokens = pack(x0);
    const ids = latentIds(1, h, w, 10);
    trace?.("condition_tokens", tokens);
    trace?.("condition_ids", ids);
    if (!others) return { tokens, ids };
    // Shift the other references' t by one slot (20, 30, …).
    const shifted = others.ids.data.map((v, n) => (n % 4 === 0 ? v + 10n : v));
    const C = tokens.shape[2];
    return {
      tokens: tensor(concatF32(tokens.data, others.tokens.data), [1, tokens.shape[1] + others.tokens.shape[1], C]),
      ids: tensor(concatIds(ids.data, shifted), [1, tokens.shape[1] + others.tokens.shape[1], 4]),
    };
  }

  /** One transformer evaluation for all images: returns the target rows of the velocity. */
  private async velocity(tr: Flux2Transformer, x: F32, ref: F32 | null, text: F32, imgIds: BigInt64Array, t: number, guidance: number | undefined, batchSize?: number): Promise<F32> {
    const [B, N, C] = x.shape;
    const chunk = Math.max(1, Math.min(batchSize ?? B, B));
    const out = new Float32Array(B * N * C);
    for (let b0 = 0; b0 < B; b0 += chunk) {
      const nb = Math.min(chunk, B - b0);
      const xs = x.data.subarray(b0 * N * C, (b0 + nb) * N * C);
      const R = ref ? ref.shape[1] : 0;
      const hidden = new Float32Array(nb * (N + R) * C);
      for (let b = 0; b < nb; b++) {
        hidden.set(xs.subarray(b * N * C, (b + 1) * N * C), b * (N + R) * C);
        if (ref) hidden.set(ref.data, (b * (N + R) + N) * C);
      }
      const L = text.shape[1], J = text.shape[2];
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
  }

  private preview(x: F32, v: F32, sigma: number, ids: Tensor<BigInt64Array>, bn: BnStats): PreviewImage {
    const [, N, C] = x.shape;
    const x0 = new Float32Array(N * C);
    for (let k = 0; k < N * C; k++) x0[k] = x.data[k] - sigma * v.data[k];
    const one = tensor(x0, [1, N, C]);
    const lat = toVaeLatents(one, tensor(ids.data.subarray(0, N * 4), [1, N, 4]), bn);
    return previewFromLatents(this.probe!, lat);
  }

  /** VAE-encode references: mode → patchify → BN normalize → pack; ids t = 10, 20, … (spec §6.3). */
  private async encodeReferences(vae: Flux2Vae, refs: ReferenceImage[], multiple: number, trace?: GenerateOptions["trace"]) {
    const { mean, std } = vae.bnStats();
    const latents: F32[] = [];
    for (const [n, r] of refs.entries()) {
      if (r.width % multiple || r.height % multiple) {
        throw new InvalidRequestError(`reference ${n} is ${r.width}×${r.height}; it must be cropped to multiples of ${multiple} first (see prepareReference)`);
      }
      const pixels = toSignedUnit(r);
      trace?.(`ref${n}_preprocessed`, pixels);
      const enc = await vae.encode(pixels);
      trace?.(`ref${n}_latent_mode`, enc.mean);
      latents.push(bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std));
    }
    const tokens = packRefs(latents);
    const ids = refIds(latents.map((l) => ({ h: l.shape[2], w: l.shape[3] })));
    trace?.("ref_tokens", tokens);
    trace?.("ref_ids", ids);
    return { tokens, ids };
  }
}

type BnStats = { mean: Float32Array; std: Float32Array };

/** Packed normalized tokens → VAE-space latents (B, C/4, 2h, 2w): unpack, de-normalize, unpatchify. */
function toVaeLatents(x: F32, ids: Tensor<BigInt64Array>, bn: BnStats): HostTensor {
  return unpatchify(bnDenormalize(unpackWithIds(x, ids), bn.mean, bn.std));
}

function requireConfig(p: string | null, what: string): string {
  if (!p) throw new Error(`no config.json for the ${what}: pass the checkpoint folder as well`);
  return p;
}

/** u8 (H, W, 3) → float32 (1, 3, H, W) in [-1, 1]: u8/255·2 − 1 in float32. */
export function toSignedUnit(r: ReferenceImage): F32 {
  const hw = r.width * r.height;
  const out = new Float32Array(3 * hw);
  for (let p = 0; p < hw; p++)
    for (let c = 0; c < 3; c++) out[c * hw + p] = f(f(f(r.rgb[p * 3 + c] / 255) * 2) - 1);
  return tensor(out, [1, 3, r.height, r.width]);
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

function asF32(t: HostTensor): F32 {
  return tensor(t.data as Float32Array, t.shape);
}

/** One (1, …) tensor's data repeated for B batch rows. */
function repeatBatch(data: Float32Array, B: number): Float32Array {
  if (B === 1) return data;
  const out = new Float32Array(data.length * B);
  for (let b = 0; b < B; b++) out.set(data, b * data.length);
  return out;
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

/** Inpainting blend (1 − m)·keep + m·x per token (mask (1, N, 1) broadcast over batch and channels). */
function blend(x: Float32Array, keep: Float32Array, mask: Float32Array, C: number): Float32Array {
  const N = mask.length;
  const out = new Float32Array(x.length);
  for (let n = 0; n < x.length; n++) {
    const m = mask[Math.floor(n / C) % N];
    out[n] = f(f(f(1 - m) * keep[n]) + f(m * x[n]));
  }
  return out;
}

function concatF32(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function concatIds(a: BigInt64Array, b: BigInt64Array): BigInt64Array {
  const out = new BigInt64Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
