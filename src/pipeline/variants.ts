// The variant cards: every fact about a local FLUX.2 variant in one table.
// checkpoint.ts (sampling defaults), the request layer (src/api/: ranges,
// sizes, references), the server's /v1/models (and through it the studio) and
// the memory plan read it; nothing else writes these numbers down. BFL's hosted
// models (pro, max, flex) are not run here: their cards live with the provider
// (src/server/providers/).
//
// It sits in pipeline/ because checkpoint.ts reads it and imports run downward
// (api/ → pipeline/).

import { KLEIN_TEXT_LAYERS } from "../models/qwen3.js";
import { DEV_TEXT_LAYERS } from "../models/mistral.js";
import { GUIDANCE_RANGE, STEPS_RANGE } from "./ranges.js";

/** The widest step and guidance ranges of the cards (every card shares them): what a request is held to before its model is known. */
export { GUIDANCE_RANGE, STEPS_RANGE };

export type Variant = "klein" | "klein-base" | "klein-kv" | "dev";

/** How guidance enters the model: CFG (two forwards, a negative prompt), embedded (a guidance input, dev), or none (distilled). */
export type GuidanceMode = "cfg" | "embedded" | "none";

export interface Range {
  min: number;
  max: number;
  default: number;
}

export interface VariantCard {
  /** Denoising steps; distilled klein is made for its default and the API does not take steps for it. */
  steps: Range;
  /** Guidance scale; ignored (and not taken by the API) with mode "none". */
  guidance: Range;
  guidanceMode: GuidanceMode;
  /** Decoder layers whose hidden states make the prompt embedding. */
  textLayers: readonly number[];
  /** Reuse the references' keys/values after step 0 unless asked otherwise (the klein KV checkpoint). */
  kvCacheDefault: boolean;
  references: { recommended: number; max: number };
  /**
   * How diffusers names it in model_index.json: the pipeline class it is written with (and
   * others it is read from) and its is_distilled flag (klein and klein base share a class).
   */
  diffusers: { pipeline: string; alsoReadFrom?: readonly string[]; isDistilled?: boolean };
}

export const VARIANT_CARDS: Readonly<Record<Variant, VariantCard>> = {
  "klein": {
    steps: { ...STEPS_RANGE, default: 4 }, guidance: { ...GUIDANCE_RANGE, default: 1 }, guidanceMode: "none",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 4, max: 10 },
    diffusers: { pipeline: "Flux2KleinPipeline", alsoReadFrom: ["Flux2KleinInpaintPipeline"], isDistilled: true },
  },
  "klein-kv": {
    steps: { ...STEPS_RANGE, default: 4 }, guidance: { ...GUIDANCE_RANGE, default: 1 }, guidanceMode: "none",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: true, references: { recommended: 4, max: 10 },
    diffusers: { pipeline: "Flux2KleinKVPipeline", isDistilled: true },
  },
  "klein-base": {
    steps: { ...STEPS_RANGE, default: 50 }, guidance: { ...GUIDANCE_RANGE, default: 4 }, guidanceMode: "cfg",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 4, max: 10 },
    diffusers: { pipeline: "Flux2KleinPipeline", alsoReadFrom: ["Flux2KleinInpaintPipeline"], isDistilled: false },
  },
  "dev": {
    steps: { ...STEPS_RANGE, default: 50 }, guidance: { ...GUIDANCE_RANGE, default: 4 }, guidanceMode: "embedded",
    textLayers: DEV_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 6, max: 10 },
    diffusers: { pipeline: "Flux2Pipeline" },
  },
};

export const VARIANTS = Object.keys(VARIANT_CARDS) as Variant[];

/** Every pipeline class a variant is read from (model_index.json's _class_name). */
export const PIPELINE_CLASSES: readonly string[] = [...new Set(VARIANTS.flatMap((v) => [VARIANT_CARDS[v].diffusers.pipeline, ...(VARIANT_CARDS[v].diffusers.alsoReadFrom ?? [])]))];

/**
 * The variant a diffusers folder holds, from its pipeline class and is_distilled (absent counts
 * as false, as diffusers' default: klein base); null for a class no card names.
 */
export function variantOfPipeline(cls: string, isDistilled: boolean): Variant | null {
  const named = VARIANTS.filter((v) => {
    const d = VARIANT_CARDS[v].diffusers;
    return d.pipeline === cls || (d.alsoReadFrom ?? []).includes(cls);
  });
  if (named.length <= 1) return named[0] ?? null;
  return named.find((v) => (VARIANT_CARDS[v].diffusers.isDistilled ?? false) === isDistilled) ?? null;
}

/**
 * The size rule, the same for the CLI, the server and the request layer: sides
 * are multiples of the checkpoint's latent grid (2 · the VAE's scale factor:
 * 16 for every FLUX.2 checkpoint, as the README says; 8 for flux2-mini and 4
 * for the tiny test checkpoints), at least 64 (and 4 grid cells), at most 4 MP
 * in all (less for a small model whose folder records its largest size; the
 * server refuses above that, the CLI warns).
 */
export const MIN_SIDE = 64;
export const MAX_OUTPUT_PIXELS = 4 * 1024 * 1024;

export interface SizeRule {
  multipleOf: number;
  minSide: number;
  maxPixels: number;
}

/** The size rule for a checkpoint whose latents cover `latentMultiple` pixels per side (2 · VAE factor). */
export function sizeRuleFor(latentMultiple: number, opts: { maxPixels?: number } = {}): SizeRule {
  return { multipleOf: latentMultiple, minSide: Math.max(MIN_SIDE, 4 * latentMultiple), maxPixels: opts.maxPixels ?? MAX_OUTPUT_PIXELS };
}

/** What is wrong with a size under the rule (a message that says what to use), or null; `what` names where it came from. */
export function sizeProblem(width: number, height: number, rule: SizeRule, what?: string): string | null {
  const from = what ? ` (${what})` : "";
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v <= 0) return `${name} must be a positive integer, got ${v}${from}`;
    if (v % rule.multipleOf !== 0) {
      const lo = Math.max(rule.minSide, Math.floor(v / rule.multipleOf) * rule.multipleOf);
      return `${name} ${v}${from} is not a multiple of ${rule.multipleOf}: use ${lo} or ${lo + rule.multipleOf}`;
    }
    if (v < rule.minSide) return `${name} ${v}${from} is below the minimum of ${rule.minSide}`;
  }
  if (width * height > rule.maxPixels) {
    const side = Math.floor(Math.sqrt(rule.maxPixels) / rule.multipleOf) * rule.multipleOf;
    const limit = rule.maxPixels >= 1e6 ? `${(rule.maxPixels / 1024 / 1024).toFixed(0)} MP` : `${rule.maxPixels} pixels`;
    return `${width}×${height}${from} is ${width * height} pixels; at most ${limit} are generated (e.g. ${side}×${side})`;
  }
  return null;
}
