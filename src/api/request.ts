// One generation request, shared by the CLI, the HTTP server and the providers.
//
// Field names follow Black Forest Labs' API (snake_case) so a BFL client's
// body validates unchanged; the fields after the BFL ones are flux2.ts
// extensions. Which fields a model accepts is decided per model
// (`modelCapabilities`, from the variant cards): klein takes no steps or guidance, as on BFL's API.

import { VARIANT_CARDS, sizeRuleFor, type Variant } from "../pipeline/variants.js";
import { GenerationRequest } from "./request_schema.js";

export { ImageInput, GenerationRequest } from "./request_schema.js";

/** The request field of the i-th input image: input_image, input_image_2, … */
export function imageField(i: number): string {
  return i === 0 ? "input_image" : `input_image_${i + 1}`;
}

/** The reference image fields, in order: input_image, input_image_2, … input_image_10. */
export const REFERENCE_FIELDS: readonly string[] = Array.from({ length: 10 }, (_, i) => imageField(i));

/** The reference images of a request, in order (input_image, input_image_2, …). */
export function referenceInputs(r: GenerationRequest): string[] {
  return REFERENCE_FIELDS.map((k) => r[k as keyof GenerationRequest] as string | undefined).filter((x): x is string => !!x);
}

export interface ModelCapabilities {
  /** Request fields this model accepts (others are rejected with 422, as BFL does). */
  fields: (keyof GenerationRequest)[];
  maxReferences: number;
  recommendedReferences: number;
  steps: { min: number; max: number; default: number } | null;
  guidance: { min: number; max: number; default: number } | null;
  minSide: number;
  multipleOf: number;
  maxPixels: number;
}

/** Fields every model takes, BFL's hosted ones included. */
export const COMMON_FIELDS: (keyof GenerationRequest)[] = [
  "prompt", "input_image", "input_image_2", "input_image_3", "input_image_4", "input_image_5", "input_image_6",
  "input_image_7", "input_image_8", "input_image_9", "input_image_10", "aspect_ratio", "width", "height", "seed", "output_format",
  "webhook_url", "webhook_secret", "safety_tolerance", "prompt_upsampling",
];
const LOCAL_EXTRAS: (keyof GenerationRequest)[] = ["mask_image", "mask", "strength", "expand", "num_images", "loras"];

/**
 * What a local variant takes, read off its card (src/pipeline/variants.ts): distilled klein
 * takes no steps or guidance (as on BFL's API), klein base adds a negative prompt (CFG).
 * BFL's hosted models have theirs in src/server/providers/bfl.ts.
 */
export function modelCapabilities(variant: Variant, latentMultiple = 16): ModelCapabilities {
  const card = VARIANT_CARDS[variant];
  const tunable = card.guidanceMode !== "none";
  return {
    ...sizeRuleFor(latentMultiple),
    fields: [...COMMON_FIELDS, ...LOCAL_EXTRAS, ...(tunable ? ["steps", "guidance"] as const : []), ...(card.guidanceMode === "cfg" ? ["negative_prompt"] as const : [])],
    maxReferences: card.references.max, recommendedReferences: card.references.recommended,
    steps: tunable ? { ...card.steps } : null, guidance: tunable ? { ...card.guidance } : null,
  };
}

/** Fields present in the request that the model does not take. */
export function unsupportedFields(r: Record<string, unknown>, caps: ModelCapabilities): string[] {
  return Object.keys(r).filter((k) => r[k] !== undefined && !caps.fields.includes(k as keyof GenerationRequest) && k !== "output_format");
}
