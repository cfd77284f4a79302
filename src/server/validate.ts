// Validating a generation request for one model, before anything is queued:
// the shared schema (src/api/request.ts), the fields the model takes, and the
// size limits of the loaded checkpoint. Every problem becomes a 422 entry
// naming its field, as BFL's API does.

import { GenerationRequest, referenceInputs } from "../api/request.js";
import { unprocessable, zodIssues, type FieldError } from "./errors.js";
import type { ModelEntry } from "./models.js";

export const REFERENCE_FIELDS = ["input_image", ...Array.from({ length: 9 }, (_, i) => `input_image_${i + 2}`)] as const;
export const IMAGE_FIELDS = [...REFERENCE_FIELDS, "mask_image"] as const;
export type ImageField = (typeof IMAGE_FIELDS)[number];

const KNOWN = new Set(Object.keys(GenerationRequest.shape));

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parse and check a POST /v1/<model> body; throws ApiError(422) listing every problem. */
export function validateRequest(body: unknown, model: ModelEntry): GenerationRequest {
  if (!isPlainObject(body)) {
    throw unprocessable([{ loc: ["body"], msg: "Input should be a valid dictionary or object", type: "model_attributes_type" }]);
  }
  // FastAPI clients send null for unset optional fields: treat null as absent.
  const cleaned = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
  const errors: FieldError[] = [];
  for (const k of Object.keys(cleaned)) {
    if (!KNOWN.has(k)) errors.push({ loc: ["body", k], msg: "Extra inputs are not permitted", type: "extra_forbidden" });
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
  if (parsed.success) errors.push(...semanticErrors(parsed.data, model).filter((e) => !errors.some((x) => x.loc.join(".") === e.loc.join("."))));
  if (errors.length) throw unprocessable(errors);
  return parsed.data!;
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
  if (r.webhook_url !== undefined && !/^https?:\/\//i.test(r.webhook_url)) err("webhook_url", "webhook_url must be an http(s) URL", "url_scheme");
  return errors;
}
