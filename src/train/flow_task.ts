// The transformer's training task for the loop: which cached samples make
// micro-batch j of step k, their noise, σ and caption dropout, all seeded by
// (seed, k, j) so that a resumed run draws what an uninterrupted one would.
//
// Micro-batch m = k·G + j of the whole run is batch (m mod E) of epoch
// floor(m / E), E the batches per epoch (src/train/data.ts epochBatches).
//
// With captions padded to their length bucket (EncodedData, src/train/cache.ts), a batch holds
// samples of one image size and one padded text length, so its embeddings stack.

import { randn, Xoshiro128 } from "../util/random.js";
import { EpochBatcher, pickCaptions, type Batch, type DataImage, type Sample } from "./data.js";
import type { EncodedData } from "./cache.js";
import type { MicroBatchResult, TrainTask } from "./loop.js";
import { sampleSigmas, streamSeed, type SigmaSampling, type TrainSigmas } from "./schedule.js";
import type { TransformerBatch } from "./step.js";

/** What the task needs of a trainer (TransformerTrainer in src/train/step.ts). */
export interface FlowTrainer {
  readonly params: Map<string, Float32Array>;
  lossAndGrads(b: TransformerBatch): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
}

export interface FlowTaskOptions {
  seed: number;
  batchSize: number;
  gradAccum: number;
  captionDropout: number;
  sigmas: TrainSigmas;
  sampling: SigmaSampling;
}

// Stream ids for streamSeed(seed, id, …): each kind of randomness its own stream.
const NOISE = 2, SIGMA = 3, DROPOUT = 4;

export class FlowMatchingTask implements TrainTask {
  private readonly batches: EpochBatcher;

  constructor(private trainer: FlowTrainer, private samples: Sample[], private images: DataImage[], private data: EncodedData, private o: FlowTaskOptions) {
    // Batched by image size and text length. With "max" padding every caption has the same length,
    // so the groups are the image sizes'; with "bucket" padding an image has one caption (setup
    // refuses --multi-caption then), so the sample's text length is its caption's.
    this.batches = new EpochBatcher(samples, images, o, (s) => `${s.bucket.width}x${s.bucket.height}:${data.embedLengths.get(images[s.image].caption)}`);
  }

  get params(): Map<string, Float32Array> {
    return this.trainer.params;
  }

  /** The sample indices of micro-batch j of step k. */
  batchOf(step: number, micro: number): Batch {
    return this.batches.batch(step, micro);
  }

  async microBatch(step: number, micro: number): Promise<MicroBatchResult> {
    const batch = this.batchOf(step, micro);
    const B = batch.length;
    const [C, h, w] = this.data.latentShapes[batch[0]];
    const per = C * h * w;
    const x0 = new Float32Array(B * per);
    const drop = new Xoshiro128(streamSeed(this.o.seed, DROPOUT, step, micro));
    const captions = pickCaptions(this.images, this.samples, batch, this.o.seed, step, micro);
    const J = this.data.embedDim;
    const L = this.data.embedLengths.get(captions[0])!;
    const embeds = new Float32Array(B * L * J);
    batch.forEach((s, b) => {
      x0.set(this.data.latents[s], b * per);
      const dropped = this.o.captionDropout > 0 && drop.nextDouble() < this.o.captionDropout;
      const embed = dropped ? (this.data.emptyByLength.get(L) ?? this.data.embeds.get(""))! : this.data.embeds.get(captions[b])!;
      if (embed.length !== L * J) throw new Error(`internal: caption "${captions[b]}" has ${embed.length / J} cached tokens, its batch ${L}`);
      embeds.set(embed, b * L * J);
    });
    const noise = randn(streamSeed(this.o.seed, NOISE, step, micro), B * per);
    const sigmas = sampleSigmas(this.o.sigmas, this.o.sampling, new Xoshiro128(streamSeed(this.o.seed, SIGMA, step, micro)), B);
    const r = await this.trainer.lossAndGrads({ x0, shape: [B, C, h, w], embeds, embedShape: [B, L, J], noise, sigmas });
    return { loss: r.loss, grads: r.grads };
  }
}
