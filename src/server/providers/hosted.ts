// The cards of BFL's hosted FLUX.2 models (pro, max, flex): what BFL's API
// takes for each. They run at api.bfl.ai (src/server/providers/bfl.ts), not
// here, so their facts live with the provider rather than in the local variant
// cards (src/pipeline/variants.ts).

import { COMMON_FIELDS, type ModelCapabilities } from "../../api/request.js";
import { sizeRuleFor } from "../../pipeline/variants.js";

export type HostedVariant = "pro" | "max" | "flex";

/** pro and max take no steps or guidance; flex takes both; each takes up to 8 references. */
export function hostedCapabilities(variant: HostedVariant): ModelCapabilities {
  const base = { ...sizeRuleFor(16), maxReferences: 8, recommendedReferences: 8 };
  if (variant === "flex") {
    return { ...base, fields: [...COMMON_FIELDS, "steps", "guidance"], steps: { min: 1, max: 50, default: 50 }, guidance: { min: 1.5, max: 10, default: 4.5 } };
  }
  return { ...base, fields: COMMON_FIELDS, steps: null, guidance: null };
}
