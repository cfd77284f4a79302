// The generation request's schema alone: zod and the step/guidance ranges, nothing that touches
// Node or the models, so the studio can type its request body with it (a type-only import that
// its bundle drops). request.ts re-exports it with the per-model rules.
//
// Field names follow Black Forest Labs' API (snake_case) so a BFL client's body validates
// unchanged; the fields after the BFL ones are flux2.ts extensions.

import { z } from "zod";
import { GUIDANCE_RANGE, STEPS_RANGE } from "../pipeline/ranges.js";

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
