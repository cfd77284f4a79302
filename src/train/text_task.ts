// The text encoder's training task for the loop (`flux2 train --text-encoder`): the alignment
// step of src/train/text_align.ts over every captioned image, with batches of captions of
// similar token length (so a batch of short captions does not pay for a 128-token graph) in a
// seeded order, as the other tasks.

import type { PromptEncoder } from "../pipeline/flux2.js";
import { batchesPerEpoch, epochBatches, loadBucketed, type Batch, type DataImage, type Sample } from "./data.js";
import type { MicroBatchResult, TrainTask } from "./loop.js";
import { pictureDescriptor, type TextAlignBatch } from "./text_align.js";

/** Token-length buckets: a batch is padded to the smallest of these that holds its longest caption. */
export const LENGTH_BUCKETS = [32, 48, 64, 96, 128, 192, 256, 384, 512];

export interface TextAlignLike {
  readonly params: Map<string, Float32Array>;
  lossAndGrads(b: TextAlignBatch): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
}

export interface CaptionData {
  /** Per sample: its caption's token ids (unpadded, truncated to the maximum length). */
  tokens: number[][];
  /** Per sample: its picture descriptor. */
  descriptors: Float32Array[];
  padId: number;
}

export function lengthBucket(n: number, maxLength: number): number {
  return Math.min(maxLength, LENGTH_BUCKETS.find((b) => b >= n) ?? maxLength);
}

/**
 * Tokenize every sample's caption (the pipeline's own prompt rendering, so the encoder is trained
 * on exactly the token sequences it will see) and compute its picture descriptor.
 */
export async function loadCaptionData(samples: Sample[], images: DataImage[], tokenizer: PromptEncoder, maxLength: number, grid: number): Promise<CaptionData> {
  const tokens: number[][] = [];
  const descriptors: Float32Array[] = [];
  let padId = -1;
  for (const s of samples) {
    const enc = tokenizer.encode([images[s.image].caption], maxLength);
    const ids: number[] = [];
    for (let i = 0; i < enc.length; i++) if (enc.attentionMask[i] === 1n) ids.push(Number(enc.inputIds[i]));
    for (let i = 0; i < enc.length; i++) if (enc.attentionMask[i] === 0n) { padId = Number(enc.inputIds[i]); break; }
    tokens.push(ids);
    const rgb = await loadBucketed(images[s.image].file, s.bucket);
    descriptors.push(pictureDescriptor(rgb, s.bucket.width, s.bucket.height, grid));
  }
  if (padId < 0) padId = Number(tokenizer.encode([""], maxLength).inputIds[maxLength - 1]);
  return { tokens, descriptors, padId };
}

export class TextAlignTask implements TrainTask {
  private epochCache: { epoch: number; batches: Batch[] } | null = null;
  private readonly perEpoch: number;
  private readonly key: (s: Sample, i: number) => string;

  constructor(private trainer: TextAlignLike, private samples: Sample[], private images: DataImage[], private data: CaptionData,
              private o: { seed: number; batchSize: number; gradAccum: number; maxLength: number }) {
    this.key = (_s, i) => String(lengthBucket(data.tokens[i].length, o.maxLength));
    this.perEpoch = batchesPerEpoch(samples, images, o.batchSize, this.key);
  }

  get params(): Map<string, Float32Array> {
    return this.trainer.params;
  }

  async microBatch(step: number, micro: number): Promise<MicroBatchResult> {
    const m = step * this.o.gradAccum + micro;
    const epoch = Math.floor(m / this.perEpoch);
    if (this.epochCache?.epoch !== epoch) this.epochCache = { epoch, batches: epochBatches(this.samples, this.images, this.o.batchSize, this.o.seed, epoch, this.key) };
    const batch = this.epochCache.batches[m % this.perEpoch];
    const B = batch.length;
    const L = Number(this.key(this.samples[batch[0]], batch[0]));
    const K = this.data.descriptors[batch[0]].length;
    const inputIds = new BigInt64Array(B * L).fill(BigInt(this.data.padId));
    const attentionMask = new BigInt64Array(B * L);
    const targets = new Float32Array(B * K);
    batch.forEach((s, b) => {
      this.data.tokens[s].forEach((id, t) => {
        inputIds[b * L + t] = BigInt(id);
        attentionMask[b * L + t] = 1n;
      });
      targets.set(this.data.descriptors[s], b * K);
    });
    const r = await this.trainer.lossAndGrads({ inputIds, attentionMask, B, L, targets });
    return { loss: r.loss, grads: r.grads };
  }
}
