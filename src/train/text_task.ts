// The text encoder's training task for the loop (`flux2 train --text-encoder`): the alignment
// step of src/train/text_align.ts over every captioned image, in a seeded order as the other
// tasks. With attention pooling, batches hold captions of similar token length (so a batch of
// short captions does not pay for a 128-token graph); with mean pooling, every batch is padded to
// the maximum length. An image with several captions (multiCaption) has one picked per visit, as
// the transformer's task picks them (pickCaptions).

import type { PromptEncoder } from "../pipeline/flux2.js";
import { EpochBatcher, loadBucketed, pickCaptions, type BatchKey, type DataImage, type Sample } from "./data.js";
import type { MicroBatchResult, TrainTask } from "./loop.js";
import type { RowSparseGrad } from "./row_sparse.js";
import { pictureDescriptor, type TextAlignBatch } from "./text_align.js";

import { lengthBucket, tokenLengths } from "../text/length.js";
export { LENGTH_BUCKETS, lengthBucket } from "../text/length.js";

export interface TextAlignLike {
  readonly params: Map<string, Float32Array>;
  /** `sparse`: gradients passed on by their nonzero rows (the token table), absent from `grads`. */
  lossAndGrads(b: TextAlignBatch): Promise<{ loss: number; grads: Map<string, Float32Array>; sparse?: Map<string, RowSparseGrad> }>;
}

export interface CaptionData {
  /** Per sample: its longest caption's token count (truncated to the maximum length), for the length buckets. */
  lengths: number[];
  /** Per sample: its picture descriptor. */
  descriptors: Float32Array[];
}

/**
 * Every sample's longest caption's token count (the pipeline's own prompt rendering) and its
 * picture descriptor. The captions themselves are picked per visit from the images (pickCaptions)
 * and tokenized again per batch by the pipeline's tokenizer, which pads and truncates.
 */
export async function loadCaptionData(samples: Sample[], images: DataImage[], tokenizer: PromptEncoder, maxLength: number, grid: number): Promise<CaptionData> {
  const lengths: number[] = [];
  const descriptors: Float32Array[] = [];
  for (const s of samples) {
    let longest = 0;
    for (const caption of images[s.image].captions) {
      longest = Math.max(longest, tokenLengths(tokenizer.encode([caption], maxLength))[0]);
    }
    lengths.push(longest);
    const rgb = await loadBucketed(images[s.image].file, s.bucket);
    descriptors.push(pictureDescriptor(rgb, s.bucket.width, s.bucket.height, grid));
  }
  return { lengths, descriptors };
}

export class TextAlignTask implements TrainTask {
  private readonly batches: EpochBatcher;
  private readonly key: BatchKey;
  /** The padded lengths its batches use, ascending: one graph each (what the memory plan adds up). */
  readonly paddedLengths: number[];

  constructor(private trainer: TextAlignLike, private tokenizer: PromptEncoder, private samples: Sample[], private images: DataImage[], private data: CaptionData,
              private o: { seed: number; batchSize: number; gradAccum: number; maxLength: number; padToMax?: boolean }) {
    // "mean" pooling reads every position up to the maximum length, as the transformer does, so
    // its batches are all padded to it; "attention" pooling masks padding, so batching captions
    // of similar length only saves work.
    this.key = o.padToMax ? () => String(o.maxLength) : (_s, i) => String(lengthBucket(data.lengths[i], o.maxLength));
    this.batches = new EpochBatcher(samples, images, o, this.key);
    this.paddedLengths = [...new Set(samples.map((s, i) => Number(this.key(s, i))))].sort((a, b) => a - b);
  }

  get params(): Map<string, Float32Array> {
    return this.trainer.params;
  }

  async microBatch(step: number, micro: number): Promise<MicroBatchResult> {
    const batch = this.batches.batch(step, micro);
    const B = batch.length;
    const L = Number(this.key(this.samples[batch[0]], batch[0]));
    const K = this.data.descriptors[batch[0]].length;
    const { inputIds, attentionMask } = this.tokenizer.encode(pickCaptions(this.images, this.samples, batch, this.o.seed, step, micro), L);
    const targets = new Float32Array(B * K);
    batch.forEach((s, b) => targets.set(this.data.descriptors[s], b * K));
    const r = await this.trainer.lossAndGrads({ inputIds, attentionMask, B, L, targets });
    // The token table's gradient comes by its rows: the loop and the workers handle a few hundred
    // rows instead of 151,936 (the same numbers; src/train/row_sparse.ts).
    return { loss: r.loss, grads: r.grads, ...(r.sparse?.size ? { sparse: r.sparse } : {}) };
  }
}
