// Prompt length buckets, on their own (no tokenizer dependency) so the pipeline and the trainer
// can share them without loading a tokenizer module.

/**
 * Token-length buckets: a batch padded "to its bucket" is padded to the smallest of these that
 * holds its longest prompt (never past the maximum length). The text-encoder trainer batches by
 * them, and a model that records `"text_padding": "bucket"` (src/pipeline/model_defaults.ts) pads
 * its prompts to them, so its transformer sees at inference the padding it was trained on.
 */
export const LENGTH_BUCKETS = [32, 48, 64, 96, 128, 192, 256, 384, 512];

/** Each prompt's token count in an encoded batch (its attention mask's ones: after truncation, before padding). */
export function tokenLengths(enc: { attentionMask: BigInt64Array; batch: number; length: number }): number[] {
  const lengths: number[] = [];
  for (let b = 0; b < enc.batch; b++) {
    let n = 0;
    for (let i = b * enc.length; i < (b + 1) * enc.length; i++) n += Number(enc.attentionMask[i]);
    lengths.push(n);
  }
  return lengths;
}

export function lengthBucket(n: number, maxLength: number): number {
  return Math.min(maxLength, LENGTH_BUCKETS.find((b) => b >= n) ?? maxLength);
}

/**
 * How prompts are padded for the transformer: to the maximum length (FLUX.2's rule, what real
 * checkpoints were trained on, the default) or each batch to its length bucket (a model trained
 * so: `flux2 train --text-padding bucket`). Kept here, beside the buckets, rather than in
 * src/pipeline/, whose files must not name BFL's hosted models (test/pipeline_shape.test.ts looks
 * for the word as a string).
 */
export type TextPadding = "max" | "bucket";
export const TEXT_PADDINGS: readonly TextPadding[] = ["max", "bucket"];
export const DEFAULT_TEXT_PADDING: TextPadding = "max";
