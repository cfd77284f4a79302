// Prompt length buckets, on their own (no tokenizer dependency) so the pipeline and the trainer
// can share them without loading a tokenizer module.

/**
 * Token-length buckets: a batch padded "to its bucket" is padded to the smallest of these that
 * holds its longest prompt (never past the maximum length). The text-encoder trainer batches by
 * them, and a model that records `"text_padding": "bucket"` (src/pipeline/model_defaults.ts) pads
 * its prompts to them, so its transformer sees at inference the padding it was trained on.
 */
export const LENGTH_BUCKETS = [32, 48, 64, 96, 128, 192, 256, 384, 512];

export function lengthBucket(n: number, maxLength: number): number {
  return Math.min(maxLength, LENGTH_BUCKETS.find((b) => b >= n) ?? maxLength);
}
