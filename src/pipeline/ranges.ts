// The step and guidance ranges every local variant shares (variants.ts spreads them into each
// card). They live in a file with no imports so that the request schema (src/api/request_schema.ts),
// and through it the studio's type-only import of the request, do not pull in the models.

/** Denoising steps a request may ask for, before its model is known. */
export const STEPS_RANGE = { min: 1, max: 50 } as const;
/** Guidance scales a request may ask for, before its model is known. */
export const GUIDANCE_RANGE = { min: 1, max: 10 } as const;
