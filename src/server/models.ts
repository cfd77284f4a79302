// The models a server offers: local checkpoints (`--model ID=DIR`), models
// advertised by Redis workers, and Black Forest Labs' hosted models.
//
// Limits come from the checkpoint itself: sides must be multiples of
// 2 · the VAE's scale factor (16 for FLUX.2, 4 for the tiny test models).

import { modelCapabilities, type ModelCapabilities } from "../api/request.js";
import { latentMultiple, openCheckpoint, VARIANT_DEFAULTS, type Variant } from "../pipeline/checkpoint.js";
import { modelDefaults } from "../pipeline/model_defaults.js";
import { hostedCapabilities } from "./providers/hosted.js";
import type { ModelSpec } from "./config.js";
import { textLlmProblem } from "../text/upsample.js";

export const PROVIDER_MODELS = ["flux-2-pro", "flux-2-max", "flux-2-flex"] as const;
export type ProviderModel = (typeof PROVIDER_MODELS)[number];

export type ModelVariant = Variant | "pro" | "max" | "flex";

export interface ModelEntry {
  id: string;
  kind: "local" | "provider";
  variant: ModelVariant;
  caps: ModelCapabilities;
  defaults: { steps: number | null; guidance: number | null; width: number; height: number };
  /** Checkpoint folder (local models served by this process). */
  dir?: string;
  /** Where it runs: "this process", "redis workers", or "api.bfl.ai". */
  runs: string;
  /**
   * Local checkpoints read here: why `prompt_upsampling` cannot be honoured (the text encoder has no
   * lm_head), or null when it can. Absent where this process cannot tell (worker-advertised models:
   * the worker refuses the job with the same message).
   */
  upsamplingProblem?: string | null;
}

const ID_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Parse `ID=DIR`. */
export function parseModelSpec(s: string): ModelSpec {
  const eq = s.indexOf("=");
  if (eq <= 0 || eq === s.length - 1) throw new Error(`--model takes ID=DIR (e.g. flux-2-klein-4b=/models/FLUX.2-klein-4B), got "${s}"`);
  const id = s.slice(0, eq), dir = s.slice(eq + 1);
  if (!ID_RE.test(id)) throw new Error(`model id "${id}": use lower-case letters, digits, ".", "_" and "-"`);
  if ((PROVIDER_MODELS as readonly string[]).includes(id)) throw new Error(`model id "${id}" is reserved for Black Forest Labs' API`);
  return { id, dir };
}

/** Capabilities with the checkpoint's real size multiple and minimum side (local: the variant cards; hosted: the provider's). */
export function capsFor(variant: ModelVariant, multiple: number): ModelCapabilities {
  return variant === "pro" || variant === "max" || variant === "flex" ? hostedCapabilities(variant) : modelCapabilities(variant, multiple);
}

/**
 * Read a checkpoint folder's variant, limits and defaults (configs only; no weights are loaded).
 * A folder that records the size it was made for (flux2-mini: 64 px, up to 128) defaults to that
 * size and refuses more pixels than its largest side squared (src/pipeline/model_defaults.ts).
 */
export function localModel(spec: ModelSpec, runs = "this process"): ModelEntry {
  const ck = openCheckpoint(spec.dir);
  const multiple = latentMultiple(ck);
  const d = modelDefaults(ck);
  const caps = capsFor(ck.variant, multiple);
  if (d.maxSide !== null) caps.maxPixels = Math.min(caps.maxPixels, d.maxSide * d.maxSide);
  if (caps.steps) caps.steps = { ...caps.steps, default: d.steps };
  if (caps.guidance) caps.guidance = { ...caps.guidance, default: d.guidance };
  return {
    id: spec.id, kind: "local", variant: ck.variant, caps, dir: spec.dir, runs, upsamplingProblem: textLlmProblem(ck),
    defaults: { steps: d.steps, guidance: caps.guidance ? d.guidance : null, width: d.width, height: d.height },
  };
}

export function providerModel(id: ProviderModel): ModelEntry {
  const variant = id.slice("flux-2-".length) as "pro" | "max" | "flex";
  const caps = capsFor(variant, 16);
  return {
    id, kind: "provider", variant, caps, runs: "Black Forest Labs API",
    defaults: { steps: caps.steps?.default ?? null, guidance: caps.guidance?.default ?? null, width: 1024, height: 1024 },
  };
}

/** What a Redis worker advertises about a model it serves. */
export interface AdvertisedModel {
  id: string;
  variant: Variant;
  multipleOf: number;
  /** Epoch ms after which the advertisement is stale (the worker stopped refreshing it). */
  expires: number;
}

export function advertisedModel(a: AdvertisedModel): ModelEntry {
  const d = VARIANT_DEFAULTS[a.variant];
  const caps = capsFor(a.variant, a.multipleOf);
  return {
    id: a.id, kind: "local", variant: a.variant, caps, runs: "redis workers",
    defaults: { steps: d.steps, guidance: caps.guidance ? d.guidance : null, width: 1024, height: 1024 },
  };
}

export class ModelRegistry {
  private local = new Map<string, ModelEntry>();
  private remote = new Map<string, ModelEntry>();

  constructor(specs: ModelSpec[], readonly providersEnabled: boolean, runs = "this process") {
    for (const s of specs) {
      if (this.local.has(s.id)) throw new Error(`model id "${s.id}" given twice`);
      this.local.set(s.id, localModel(s, runs));
    }
  }

  /** Replace the set of models advertised by workers. */
  setRemote(list: ModelEntry[]): void {
    this.remote = new Map(list.map((m) => [m.id, m]));
  }

  get(id: string): ModelEntry | undefined {
    if ((PROVIDER_MODELS as readonly string[]).includes(id)) return this.providersEnabled ? providerModel(id as ProviderModel) : undefined;
    return this.local.get(id) ?? this.remote.get(id);
  }

  isProvider(id: string): boolean {
    return (PROVIDER_MODELS as readonly string[]).includes(id);
  }

  list(): (ModelEntry & { available: boolean })[] {
    const out: (ModelEntry & { available: boolean })[] = [];
    for (const m of this.local.values()) out.push({ ...m, available: true });
    for (const m of this.remote.values()) if (!this.local.has(m.id)) out.push({ ...m, available: true });
    for (const id of PROVIDER_MODELS) out.push({ ...providerModel(id), available: this.providersEnabled });
    return out;
  }
}
