// A model's own sampling defaults: its variant's (steps, guidance, CFG) refined by what the
// folder's model_index.json records under "flux2ts" (diffusers ignores unknown keys).
//
// A model trained by this project at a small size (flux2-mini, docs/flux2-mini.md) records
//   "flux2ts": {"resolution": 64, "max_sequence_length": 128}
// and may add "max_resolution", "steps", "guidance" and "text_padding". The CLI, the server, /v1/models and the
// pipeline all take their defaults from here, so the rules live in one place:
//   - width and height default to `resolution` (else 1024);
//   - text length defaults to `max_sequence_length` (else 512);
//   - the sizes the model is made for hold up to `max_resolution`² pixels (else (2 × resolution)²;
//     no limit beyond FLUX.2's 4 MP when no resolution is recorded): the server's max_pixels;
//   - steps and guidance default to the recorded values, else the variant's;
//   - prompts are padded to the text length ("text_padding": "max", FLUX.2's own rule and the
//     default) or to their length bucket, 32/48/64/… up to it ("bucket": a model trained so,
//     `flux2 train --text-padding bucket`, whose transformer has only seen that padding).

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { CheckpointError, VARIANT_DEFAULTS, type Checkpoint, type Variant, type VariantDefaults } from "./checkpoint.js";
import { GUIDANCE_RANGE, STEPS_RANGE } from "./variants.js";
import { DEFAULT_TEXT_PADDING, TEXT_PADDINGS, type TextPadding } from "../text/length.js";

export interface ModelDefaults extends VariantDefaults {
  width: number;
  height: number;
  maxSequenceLength: number;
  /** Largest side the model is made for (null: FLUX.2's own limits only). */
  maxSide: number | null;
  /** Prompts padded to maxSequenceLength (FLUX.2's rule) or to their length bucket up to it ("bucket"). */
  textPadding: TextPadding;
}

/** The "flux2ts" section of model_index.json, checked. */
export interface FolderHints {
  resolution?: number;
  max_sequence_length?: number;
  max_resolution?: number;
  steps?: number;
  guidance?: number;
  text_padding?: TextPadding;
}

const HINT_RANGES: Record<Exclude<keyof FolderHints, "text_padding">, { lo: number; hi: number; integer: boolean }> = {
  resolution: { lo: 64, hi: 4096, integer: true },
  max_resolution: { lo: 64, hi: 4096, integer: true },
  max_sequence_length: { lo: 1, hi: 4096, integer: true },
  steps: { lo: STEPS_RANGE.min, hi: STEPS_RANGE.max, integer: true },
  guidance: { lo: GUIDANCE_RANGE.min, hi: GUIDANCE_RANGE.max, integer: false },
};

/** Read and check a folder's "flux2ts" hints ({} for a single file or a folder without them). */
export function readFolderHints(source: string): FolderHints {
  const file = path.join(source, "model_index.json");
  if (!fs.existsSync(file)) return {};
  const raw = JSON.parse(fs.readFileSync(file, "utf8")).flux2ts;
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new CheckpointError(`${file}: "flux2ts" must be an object`);
  const hints: FolderHints = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === "text_padding") {
      if (!TEXT_PADDINGS.includes(v as TextPadding)) throw new CheckpointError(`${file}: flux2ts.text_padding must be one of ${TEXT_PADDINGS.join(", ")}, got ${JSON.stringify(v)}; fix or remove it`);
      hints.text_padding = v as TextPadding;
      continue;
    }
    const r = HINT_RANGES[k as keyof typeof HINT_RANGES];
    if (!r) continue; // later versions may record more; they do not change sampling here
    if (typeof v !== "number" || !Number.isFinite(v) || (r.integer && !Number.isInteger(v)) || v < r.lo || v > r.hi) {
      throw new CheckpointError(`${file}: flux2ts.${k} must be ${r.integer ? "an integer" : "a number"} from ${r.lo} to ${r.hi}, got ${JSON.stringify(v)}; fix or remove it`);
    }
    hints[k as keyof typeof HINT_RANGES] = v;
  }
  if (hints.resolution !== undefined && hints.max_resolution !== undefined && hints.max_resolution < hints.resolution) {
    throw new CheckpointError(`${file}: flux2ts.max_resolution (${hints.max_resolution}) is below flux2ts.resolution (${hints.resolution})`);
  }
  return hints;
}

/** Defaults for a variant refined by folder hints. */
export function defaultsFor(variant: Variant, hints: FolderHints = {}): ModelDefaults {
  const v = VARIANT_DEFAULTS[variant];
  const res = hints.resolution;
  return {
    ...v,
    steps: hints.steps ?? v.steps,
    guidance: hints.guidance ?? v.guidance,
    width: res ?? 1024,
    height: res ?? 1024,
    maxSequenceLength: hints.max_sequence_length ?? 512,
    maxSide: hints.max_resolution ?? (res !== undefined ? 2 * res : null),
    textPadding: hints.text_padding ?? DEFAULT_TEXT_PADDING,
  };
}

/** A checkpoint's defaults (its variant's, refined by its folder's hints). */
export function modelDefaults(ck: Checkpoint): ModelDefaults {
  const isDir = fs.statSync(ck.source, { throwIfNoEntry: false })?.isDirectory() ?? false;
  return defaultsFor(ck.variant, isDir ? readFolderHints(ck.source) : {});
}

/** A note when a size has more pixels than the model is made for (the CLI runs it anyway; the server refuses it, as /v1/models's max_pixels says). */
export function sizeNote(d: ModelDefaults, width: number, height: number): string | null {
  if (d.maxSide === null || width * height <= d.maxSide * d.maxSide) return null;
  return `this model is made for at most ${d.maxSide}×${d.maxSide} pixels (default ${d.width}×${d.height}); ${width}×${height} will look poor`;
}

/**
 * The output size for a reference image of w×h when no size is given: the image's own size,
 * scaled down (aspect kept, snapped down to `multiple`) when it exceeds the model's largest side,
 * so a small model edits a phone photo at the size it was made for.
 */
export function sizeFromReference(d: ModelDefaults, w: number, h: number, multiple: number): { width: number; height: number } {
  if (d.maxSide === null || (w <= d.maxSide && h <= d.maxSide)) return { width: w, height: h };
  const s = d.maxSide / Math.max(w, h);
  const snap = (v: number) => Math.max(multiple, Math.floor((v * s) / multiple) * multiple);
  return { width: snap(w), height: snap(h) };
}
