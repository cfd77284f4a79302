// The transformer's training task for the loop: which cached samples make
// micro-batch j of step k, their noise, σ and caption dropout, all seeded by
// (seed, k, j) so that a resumed run draws what an uninterrupted one would.
//
// Micro-batch m = k·G + j of the whole run is batch (m mod E) of epoch
// floor(m / E), E the batches per epoch (src/train/data.ts epochBatches).

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
    this.batches = new EpochBatcher(samples, images, o);
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
    const [L, J] = this.data.embedShape;
    const per = C * h * w;
    const x0 = new Float32Array(B * per);
    const embeds = new Float32Array(B * L * J);
    const drop = new Xoshiro128(streamSeed(this.o.seed, DROPOUT, step, micro));
    const captions = pickCaptions(this.images, this.samples, batch, this.o.seed, step, micro);
    batch.forEach((s, b) => {
      x0.set(this.data.latents[s], b * per);
      const dropped = this.o.captionDropout > 0 && drop.nextDouble() < this.o.captionDropout;
      const caption = dropped ? "" : captions[b];
      embeds.set(this.data.embeds.get(caption)!, b * L * J);
    });
    const noise = randn(streamSeed(this.o.seed, NOISE, step, micro), B * per);
    const sigmas = sampleSigmas(this.o.sigmas, this.o.sampling, new Xoshiro128(streamSeed(this.o.seed, SIGMA, step, micro)), B);
    const r = await this.trainer.lossAndGrads({ x0, shape: [B, C, h, w], embeds, embedShape: [B, L, J], noise, sigmas });
    return { loss: r.loss, grads: r.grads };
  }
}
