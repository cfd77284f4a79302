// One generation request, shared by the CLI, the HTTP server and the providers.
//
// Field names follow Black Forest Labs' API (snake_case) so a BFL client's
// body validates unchanged; the fields after the BFL ones are flux2.ts
// extensions. Which fields a model accepts is decided per model
// (`modelCapabilities`, from the variant cards): klein takes no steps or guidance, as on BFL's API.

import { z } from "zod";
import { GUIDANCE_RANGE, STEPS_RANGE, VARIANT_CARDS, sizeRuleFor, type Variant } from "../pipeline/variants.js";

/** An image as BFL's API takes it: base64 (optionally a data: URL) or an http(s) URL. */
export const ImageInput = z.string().min(1).describe("base64-encoded image, data: URL, or http(s) URL");

export const GenerationRequest = z.object({
  prompt: z.string().max(100_000).describe("the prompt; plain text, JSON-structured, hex colours allowed"),
  input_image: ImageInput.optional(),
  input_image_2: ImageInput.optional(),
  input_image_3: ImageInput.optional(),
  input_image_4: ImageInput.optional(),
  input_image_5: ImageInput.optional(),
  input_image_6: ImageInput.optional(),
  input_image_7: ImageInput.optional(),
  input_image_8: ImageInput.optional(),
  input_image_9: ImageInput.optional(),
  input_image_10: ImageInput.optional(),
  aspect_ratio: z.string().regex(/^\d{1,3}:\d{1,3}$/, "aspect_ratio is W:H, e.g. 16:9").optional()
    .describe("W:H; without width and height, the size of about 1 MP nearest this ratio (sides multiples of 16)"),
  width: z.number().int().min(64).max(4096).optional(),
  height: z.number().int().min(64).max(4096).optional(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  steps: z.number().int().min(STEPS_RANGE.min).max(STEPS_RANGE.max).optional(),
  guidance: z.number().min(GUIDANCE_RANGE.min).max(GUIDANCE_RANGE.max).optional().describe("guidance scale; BFL's models take 1.5 to 10, local ones 1 (CFG off) to 10"),
  output_format: z.enum(["png", "jpeg", "webp"]).default("png"),
  webhook_url: z.string().url().optional(),
  webhook_secret: z.string().max(512).optional(),
  safety_tolerance: z.number().int().min(0).max(6).optional(),
  prompt_upsampling: z.boolean().optional(),
  // flux2.ts extensions
  negative_prompt: z.string().max(100_000).optional(),
  mask_image: ImageInput.optional().describe("inpainting mask (white = repaint), same size as input_image"),
  mask: ImageInput.optional().describe("BFL's name for mask_image (FLUX.1 Fill; the AI SDK sends it): the same mask"),
  strength: z.number().min(0).max(1).optional().describe("img2img / inpainting strength"),
  expand: z.array(z.number().int().min(0).max(2048)).length(4).optional().describe("outpaint: pixels to add [top, right, bottom, left]"),
  num_images: z.number().int().min(1).max(8).optional(),
  loras: z.array(z.object({ name: z.string().min(1), strength: z.number().min(-4).max(4).default(1) })).max(8).optional(),
}).strict();

export type GenerationRequest = z.infer<typeof GenerationRequest>;

/** The reference images of a request, in order (input_image, input_image_2, …). */
export function referenceInputs(r: GenerationRequest): string[] {
  const keys = ["input_image", ...Array.from({ length: 9 }, (_, i) => `input_image_${i + 2}`)] as const;
  return keys.map((k) => r[k as keyof GenerationRequest] as string | undefined).filter((x): x is string => !!x);
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
