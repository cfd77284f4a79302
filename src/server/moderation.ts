// What the HTTP server needs from moderation at request time: the 422 for a
// safety_tolerance it cannot honour, and the description in GET /v1/models.

import { referenceInputs, type GenerationRequest } from "../api/request.js";
import { IMAGE_UPSAMPLING_REFUSED } from "../text/upsample.js";
import { fieldError } from "./errors.js";
import { DEFAULT_SAFETY_TOLERANCE, describeModeration, safetyToleranceProblem, type ModerationConfig } from "../moderation/config.js";

/** Refuse (422 naming the field) what moderation cannot honour for a local model. */
export function checkModerationFields(r: GenerationRequest, c: ModerationConfig | undefined, upsamplingProblem?: string | null): void {
  const problem = safetyToleranceProblem(r.safety_tolerance, c);
  if (problem) throw fieldError("safety_tolerance", problem, "not_supported");
  // Upsampling with images would need dev's vision tower: refused at submit, not after queueing.
  if (r.prompt_upsampling && referenceInputs(r).length) throw fieldError("prompt_upsampling", IMAGE_UPSAMPLING_REFUSED, "not_supported");
  // A text encoder without an lm_head cannot rewrite the prompt: refused, never run without it.
  if (r.prompt_upsampling && upsamplingProblem) throw fieldError("prompt_upsampling", upsamplingProblem, "not_supported");
}

/** The `moderation` object of GET /v1/models (local models; BFL's hosted models moderate on BFL's side). */
export function moderationInfo(c: ModerationConfig | undefined) {
  return {
    configured: !!c,
    prompt_lists: !!c && (c.prompt.words.length > 0 || c.prompt.patterns.length > 0),
    image_classifier: c?.image ? { label: c.image.label, inputs: c.image.checkInputs, outputs: c.image.checkOutputs, thresholds: c.image.thresholds } : null,
    llm_check: c?.llm ? { system: c.llm.system, prompt: c.llm.prompt, yes: c.llm.yes, no: c.llm.no } : null,
    default_safety_tolerance: DEFAULT_SAFETY_TOLERANCE,
    min_safety_tolerance: c?.image ? 0 : DEFAULT_SAFETY_TOLERANCE,
    description: describeModeration(c),
  };
}
