// The output size rule: sides are multiples of 2f (16 for FLUX.2's VAE with f = 8), at
// least four of those, and at most 4 megapixels in all.

import { InvalidRequestError } from "../util/errors.js";

/** Largest output FLUX.2 supports: 4 megapixels. */
export const MAX_PIXELS = 4 * 1024 * 1024;

/** Sides must be multiples of 2f (16 for FLUX.2), at least 4 of those, and ≤ 4 MP in all. */
export function validateSize(width: number, height: number, multiple: number): void {
  const min = multiple * 4;
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new InvalidRequestError(`${name} must be a positive integer, got ${v}`);
    if (v % multiple !== 0) {
      const lo = Math.max(min, Math.floor(v / multiple) * multiple);
      throw new InvalidRequestError(`${name} ${v} is not a multiple of ${multiple}: use ${lo} or ${lo + multiple}`);
    }
    if (v < min) throw new InvalidRequestError(`${name} ${v} is below the minimum of ${min}`);
  }
  if (width * height > MAX_PIXELS) {
    throw new InvalidRequestError(`${width}×${height} is ${(width * height / 1e6).toFixed(1)} MP; FLUX.2 generates at most 4 MP (e.g. 2048×2048)`);
  }
}
