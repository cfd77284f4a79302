// How much memory a run needs, said before it starts.
//
// Components run one after another (text encoder → transformer → VAE), each
// released when its stage is done, so the peak is the largest stage, not the
// sum. A stage needs its weights as they stay resident (bf16 stays bf16 and is
// converted to float32 just before each use; --quantize stores int8/int4 codes
// and scales) plus its largest activations.

import * as os from "../platform/os.js";
import { residentWeightBytes } from "../quant/memory.js";
import { specFor, type QuantKind } from "../models/quantized/blockwise.js";
import { latentMultiple, transformerConfig, type Checkpoint } from "../pipeline/checkpoint.js";
import { modelDefaults } from "../pipeline/model_defaults.js";
import { VARIANT_CARDS } from "../pipeline/variants.js";
import { innerDim, mlpDim } from "../models/transformer.js";
import { WeightSet } from "../io/safetensors.js";

export interface StageEstimate {
  stage: "text_encode" | "denoise" | "vae_decode";
  weightBytes: number;
  activationBytes: number;
}

export interface MemoryPlan {
  stages: StageEstimate[];
  peakBytes: number;
  availableBytes: number;
}

/** One run as the plan needs it; what is left out is the model's own (its variant card and folder defaults). */
export interface PlannedRun {
  width: number;
  height: number;
  /** Images per transformer forward. */
  batch: number;
  /** Text tokens; default: the model's (max_sequence_length in its folder, else 512). */
  textLength?: number;
  /** The prepared reference images (an img2img / inpaint image included), as the transformer sees them. */
  references?: readonly { width: number; height: number }[];
  /** Reuse the references' keys/values after step 0; default: the variant card's (on for klein KV). */
  kvCache?: boolean;
  quantize?: QuantKind;
}

/** The text encoder as a run reads it: which tensors, and its width (from the embedding table). */
interface TextEncoderRead {
  read: (key: string) => boolean;
  hidden: number;
}

/**
 * The text encoder runs up to the deepest layer its variant card takes the prompt embedding
 * from (klein: 27 of Qwen3-4B's 36, dev: 30 of Mistral Small's 40); the layers after it, the
 * final norm, the lm_head and Mistral's vision tower are never read (src/models/decoder.ts).
 */
function textEncoderRead(ck: Checkpoint): TextEncoderRead {
  const depth = Math.max(...VARIANT_CARDS[ck.variant].textLayers);
  const set = WeightSet.open(ck.textEncoder.weights);
  try {
    const keys = set.keys().filter((k) => !/(^|\.)(vision_tower|multi_modal_projector)\./.test(k));
    const embed = keys.find((k) => /(^|\.)embed_tokens\.weight$/.test(k));
    const layerOf = (k: string) => Number(/(^|\.)layers\.(\d+)\./.exec(k)?.[2] ?? NaN);
    const layers = Math.max(0, ...keys.map(layerOf).filter(Number.isFinite)) + 1;
    const all = depth >= layers; // the final-norm output is asked for: every layer and the norm
    const kept = new Set(keys.filter((k) => k === embed || layerOf(k) < depth || (all && /(^|\.)norm\.weight$/.test(k) && !/layers\./.test(k))));
    return { read: (k) => kept.has(k), hidden: embed ? set.info(embed).shape[1] : 0 };
  } finally {
    set.close();
  }
}

/**
 * The plan of one run. The per-variant facts come from the variant card
 * (src/pipeline/variants.ts): the text layers (how deep the text encoder runs),
 * the guidance mode (CFG runs its two forwards one after the other, so it only
 * keeps a second velocity), and whether the references' keys/values are cached.
 */
export function planMemory(ck: Checkpoint, run: PlannedRun): MemoryPlan {
  const card = VARIANT_CARDS[ck.variant];
  const cfg = transformerConfig(ck);
  const spec = run.quantize ? specFor(run.quantize) : undefined;
  const te = textEncoderRead(ck);
  const textLength = run.textLength ?? modelDefaults(ck).maxSequenceLength;
  const m = latentMultiple(ck), B = run.batch;
  const D = innerDim(cfg), M = mlpDim(cfg);
  const imageTokens = (run.width / m) * (run.height / m);
  const refTokens = (run.references ?? []).reduce((n, r) => n + (r.width / m) * (r.height / m), 0);
  // Step 0 runs over the image, the text and every reference (with or without the cache).
  const tokens = imageTokens + textLength + refTokens;
  // The widest live tensors of a single block: the fused qkv+mlp projection and a few D-wide streams.
  let denoiseAct = B * tokens * (3 * D + 2 * M + 6 * D) * 4;
  if (card.guidanceMode === "cfg") denoiseAct += B * imageTokens * cfg.in_channels * 4; // the negative prompt's velocity
  if (refTokens && (run.kvCache ?? card.kvCacheDefault)) denoiseAct += 2 * (cfg.num_layers + cfg.num_single_layers) * B * refTokens * D * 4; // K and V of every block
  const teAct = B * textLength * te.hidden * 4 * 12;
  // VAE: a handful of 128-channel full-resolution feature maps (decode; encoding references is smaller).
  const vaeAct = B * run.width * run.height * 128 * 4 * 4;
  const stages: StageEstimate[] = [
    { stage: "text_encode", weightBytes: residentWeightBytes(ck.textEncoder.weights, spec, te.read), activationBytes: teAct },
    { stage: "denoise", weightBytes: residentWeightBytes(ck.transformer.weights, spec), activationBytes: denoiseAct },
    { stage: "vae_decode", weightBytes: residentWeightBytes(ck.vae.weights), activationBytes: vaeAct },
  ];
  const peakBytes = Math.max(...stages.map((s) => s.weightBytes + s.activationBytes));
  return { stages, peakBytes, availableBytes: os.freemem() };
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

export function describePlan(plan: MemoryPlan): string {
  const lines = plan.stages.map((s) => `  ${s.stage.padEnd(12)} weights ${formatBytes(s.weightBytes).padStart(10)}  activations ~${formatBytes(s.activationBytes)}`);
  lines.push(`  peak ~${formatBytes(plan.peakBytes)} (one stage at a time); available ${formatBytes(plan.availableBytes)}`);
  return lines.join("\n");
}

export class InsufficientMemoryError extends Error {}

/** Refuse a run that cannot fit, with a message that says what to do. */
export function assertFits(plan: MemoryPlan): void {
  if (plan.peakBytes <= plan.availableBytes) return;
  throw new InsufficientMemoryError(
    `this run needs about ${formatBytes(plan.peakBytes)} but only ${formatBytes(plan.availableBytes)} is available:\n${describePlan(plan)}\n` +
    "use a smaller size or batch, quantized weights, or a machine with more memory (--force runs it anyway)",
  );
}
