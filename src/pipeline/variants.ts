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
}

const STEPS = { min: 1, max: 50 };
const GUIDANCE = { min: 1, max: 10 };

export const VARIANT_CARDS: Readonly<Record<Variant, VariantCard>> = {
  "klein": {
    steps: { ...STEPS, default: 4 }, guidance: { ...GUIDANCE, default: 1 }, guidanceMode: "none",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 4, max: 10 },
  },
  "klein-kv": {
    steps: { ...STEPS, default: 4 }, guidance: { ...GUIDANCE, default: 1 }, guidanceMode: "none",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: true, references: { recommended: 4, max: 10 },
  },
  "klein-base": {
    steps: { ...STEPS, default: 50 }, guidance: { ...GUIDANCE, default: 4 }, guidanceMode: "cfg",
    textLayers: KLEIN_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 4, max: 10 },
  },
  "dev": {
    steps: { ...STEPS, default: 50 }, guidance: { ...GUIDANCE, default: 4 }, guidanceMode: "embedded",
    textLayers: DEV_TEXT_LAYERS, kvCacheDefault: false, references: { recommended: 6, max: 10 },
  },
};

export const VARIANTS = Object.keys(VARIANT_CARDS) as Variant[];

/**
 * The size rule, as the README states it: sides multiples of 16, at least 64,
 * at most 4 MP in all. A checkpoint whose latent grid is coarser than 16 px
 * (none today) raises the multiple; a small model whose folder records a largest
 * size (flux2-mini) lowers the pixel limit where the server enforces it.
 */
export const SIZE_MULTIPLE = 16;
export const MIN_SIDE = 64;
export const MAX_OUTPUT_PIXELS = 4 * 1024 * 1024;

export interface SizeRule {
  multipleOf: number;
  minSide: number;
  maxPixels: number;
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/** The size rule for a checkpoint whose latents cover `latentMultiple` pixels per side (2 · VAE factor). */
export function sizeRuleFor(latentMultiple: number, opts: { maxPixels?: number } = {}): SizeRule {
  return {
    multipleOf: (SIZE_MULTIPLE * latentMultiple) / gcd(SIZE_MULTIPLE, latentMultiple),
    minSide: Math.max(MIN_SIDE, 4 * latentMultiple),
    maxPixels: opts.maxPixels ?? MAX_OUTPUT_PIXELS,
  };
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
