// Validating a generation request for one model, before anything is queued:
// the shared schema (src/api/request.ts), the fields the model takes, and the
// size limits of the loaded checkpoint. Every problem becomes a 422 entry
// naming its field, as BFL's API does.

import { parseAspectRatio, sizeForAspectRatio } from "../api/aspect.js";
import { GenerationRequest, REFERENCE_FIELDS, referenceInputs } from "../api/request.js";
import { unprocessable, zodIssues, type FieldError } from "./errors.js";
import type { ModelEntry } from "./models.js";

export const IMAGE_FIELDS = [...REFERENCE_FIELDS, "mask_image"] as const;
export type ImageField = (typeof IMAGE_FIELDS)[number];

const KNOWN = new Set(Object.keys(GenerationRequest.shape));

/**
 * Fields of other BFL models that FLUX.2 does not take. BFL answers them with a
 * 422 naming the field on its FLUX.2 endpoints; so do we, saying what to use
 * instead (clients such as the AI SDK send them when asked to).
 */
const OTHER_BFL_FIELDS: Record<string, string> = {
  image_prompt: "image_prompt is a FLUX1.1 [pro] field: FLUX.2 models take reference images as input_image, input_image_2, …",
  image_prompt_strength: "image_prompt_strength is a FLUX1.1 [pro] field: FLUX.2 models take reference images as input_image, input_image_2, …",
  raw: "raw is a FLUX1.1 [pro] Ultra field: FLUX.2 models have no raw mode",
};

/** BFL's default safety_tolerance; lower is stricter. */
const DEFAULT_SAFETY_TOLERANCE = 2;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parse and check a POST /v1/<model> body; throws ApiError(422) listing every
 * problem. What is accepted but not used is said in `warnings`.
 */
export function validateRequest(body: unknown, model: ModelEntry, warnings: string[] = []): GenerationRequest {
  if (!isPlainObject(body)) {
    throw unprocessable([{ loc: ["body"], msg: "Input should be a valid dictionary or object", type: "model_attributes_type" }]);
  }
  // FastAPI clients send null for unset optional fields: treat null as absent.
  const cleaned = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
  const errors: FieldError[] = [];
  for (const k of Object.keys(cleaned)) {
    if (OTHER_BFL_FIELDS[k]) errors.push({ loc: ["body", k], msg: `Extra inputs are not permitted: ${OTHER_BFL_FIELDS[k]}`, type: "extra_forbidden" });
    else if (!KNOWN.has(k)) errors.push({ loc: ["body", k], msg: "Extra inputs are not permitted", type: "extra_forbidden" });
    else if (k !== "output_format" && !model.caps.fields.includes(k as keyof GenerationRequest)) {
      errors.push({ loc: ["body", k], msg: `${model.id} does not take ${k}`, type: "extra_forbidden" });
    }
  }
  const parsed = GenerationRequest.safeParse(cleaned, { reportInput: true });
  if (!parsed.success) {
    const seen = new Set(errors.map((e) => e.loc.join(".")));
    errors.push(...zodIssues(parsed.error.issues).filter((e) => !seen.has(e.loc.join("."))));
  }
  // Size and combination checks need a parsed request; report them with any field errors.
  if (parsed.success) {
    const more = [...normalise(parsed.data, model, warnings), ...semanticErrors(parsed.data, model)];
    errors.push(...more.filter((e) => !errors.some((x) => x.loc.join(".") === e.loc.join("."))));
  }
  if (errors.length) throw unprocessable(errors);
  return parsed.data!;
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/**
 * BFL's spellings → ours, in place: `mask` (BFL's name, sent by the AI SDK) is
 * `mask_image`; `aspect_ratio` without width and height becomes the size of
 * about 1 MP nearest that ratio (given one side, the other follows), so the
 * queued request and the result carry the size actually made.
 */
function normalise(r: GenerationRequest, model: ModelEntry, warnings: string[]): FieldError[] {
  const errors: FieldError[] = [];
  if (r.mask !== undefined) {
    if (r.mask_image !== undefined) errors.push({ loc: ["body", "mask"], msg: "give the mask once: mask (BFL's name) or mask_image, not both", type: "value_error" });
    else if (r.input_image === undefined) errors.push({ loc: ["body", "mask"], msg: "mask needs input_image (the image to repaint)", type: "value_error" });
    else r.mask_image = r.mask;
    delete r.mask;
  }
  if (r.aspect_ratio !== undefined) {
    try {
      const { w, h } = parseAspectRatio(r.aspect_ratio);
      // Clients such as the AI SDK send the ratio of the width and height they also send: only a different shape is worth a word.
      if (r.width !== undefined && r.height !== undefined && Math.abs((r.width * h) / (r.height * w) - 1) > 0.02) {
        warnings.push(`aspect_ratio ${r.aspect_ratio} not used: width and height (${r.width}x${r.height}) were given`);
      }
      if (r.width === undefined || r.height === undefined) {
        // Multiples of 16 (BFL's rule) that the checkpoint also accepts.
        const multiple = (16 * model.caps.multipleOf) / gcd(16, model.caps.multipleOf);
        Object.assign(r, sizeForAspectRatio(r.aspect_ratio, multiple, { width: r.width, height: r.height }));
      }
    } catch (e) {
      errors.push({ loc: ["body", "aspect_ratio"], msg: (e as Error).message, type: "value_error" });
    }
  }
  return errors;
}

function semanticErrors(r: GenerationRequest, model: ModelEntry): FieldError[] {
  const caps = model.caps;
  const errors: FieldError[] = [];
  const err = (field: string, msg: string, type = "value_error") => errors.push({ loc: ["body", field], msg, type });
  for (const side of ["width", "height"] as const) {
    const v = r[side];
    if (v === undefined) continue;
    if (v % caps.multipleOf !== 0) {
      const lo = Math.max(caps.minSide, Math.floor(v / caps.multipleOf) * caps.multipleOf);
      err(side, `${side} ${v} is not a multiple of ${caps.multipleOf}: use ${lo} or ${lo + caps.multipleOf}`, "multiple_of");
    } else if (v < caps.minSide) err(side, `${side} ${v} is below the minimum of ${caps.minSide}`, "greater_than_equal");
  }
  const hasImage = r.input_image !== undefined;
  const w = r.width ?? (hasImage ? undefined : model.defaults.width);
  const h = r.height ?? (hasImage ? undefined : model.defaults.height);
  if (w !== undefined && h !== undefined && w * h > caps.maxPixels) {
    // A small model (flux2-mini) allows a few thousand pixels: say it in pixels, with a square that fits.
    const side = Math.floor(Math.sqrt(caps.maxPixels) / caps.multipleOf) * caps.multipleOf;
    const limit = caps.maxPixels >= 1e6 ? `${(caps.maxPixels / 1e6).toFixed(1)} MP` : `${caps.maxPixels} pixels`;
    err(r.width !== undefined ? "width" : "height", `${w}×${h} is ${w * h} pixels; ${model.id} takes at most ${limit} (e.g. ${side}×${side})`, "less_than_equal");
  }
  if (r.steps !== undefined && caps.steps && (r.steps < caps.steps.min || r.steps > caps.steps.max)) {
    err("steps", `steps must be from ${caps.steps.min} to ${caps.steps.max}`, "less_than_equal");
  }
  if (r.guidance !== undefined && caps.guidance && (r.guidance < caps.guidance.min || r.guidance > caps.guidance.max)) {
    err("guidance", `guidance must be from ${caps.guidance.min} to ${caps.guidance.max}`, "less_than_equal");
  }
  const refs = referenceInputs(r);
  if (refs.length > caps.maxReferences) {
    err(REFERENCE_FIELDS[caps.maxReferences], `${model.id} takes at most ${caps.maxReferences} input images`, "too_long");
  }
  for (const f of ["mask_image", "strength", "expand"] as const) {
    if (r[f] !== undefined && !hasImage) err(f, `${f} needs input_image (the image to repaint)`);
  }
  if (r.mask_image !== undefined && r.expand !== undefined) err("expand", "expand makes its own mask: do not combine it with mask_image");
  if (r.expand && r.expand.every((n) => n === 0)) err("expand", "at least one side must grow");
  // prompt_upsampling and safety_tolerance on local models: src/server/moderation.ts (checkModerationFields).
  if (r.webhook_url !== undefined && !/^https?:\/\//i.test(r.webhook_url)) err("webhook_url", "webhook_url must be an http(s) URL", "url_scheme");
  return errors;
}
