// The VAE's training task for the loop (`flux2 train --vae`): the autoencoder
// step of src/train/step.ts (reconstruction MSE + kl_weight · KL) over the
// bucketed images, with the same seeded batch order as the transformer task and
// the posterior noise ε of micro-batch j of step k seeded by (seed, k, j).

import { toSignedUnit } from "../pipeline/conditioning.js";
import { randn } from "../util/random.js";
import { EpochBatcher, loadBucketed, type DataImage, type Sample } from "./data.js";
import type { MicroBatchResult, TrainTask } from "./loop.js";
import { streamSeed } from "./schedule.js";
import type { VaeBatch } from "./step.js";

export interface VaeLikeTrainer {
  readonly params: Map<string, Float32Array>;
  lossAndGrads(b: VaeBatch): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
}

const EPS = 5;

export class VaeTask implements TrainTask {
  private readonly batches: EpochBatcher;

  /** `pixels[i]`: sample i as (1, 3, H, W) in [-1, 1] (see loadPixels). */
  constructor(private trainer: VaeLikeTrainer, private samples: Sample[], images: DataImage[], private pixels: Float32Array[],
              private o: { seed: number; batchSize: number; gradAccum: number; klWeight: number; colorWeight?: number; chromaWeight?: number; posterior?: "sample" | "mode"; latentChannels: number; scaleFactor: number }) {
    this.batches = new EpochBatcher(samples, images, o);
  }

  get params(): Map<string, Float32Array> {
    return this.trainer.params;
  }

  async microBatch(step: number, micro: number): Promise<MicroBatchResult> {
    const batch = this.batches.batch(step, micro);
    const { width: W, height: H } = this.samples[batch[0]].bucket;
    const B = batch.length, per = 3 * H * W;
    const images = new Float32Array(B * per);
    batch.forEach((s, b) => images.set(this.pixels[s], b * per));
    const f = this.o.scaleFactor;
    const count = B * this.o.latentChannels * (H / f) * (W / f);
    // "mode" decodes the posterior's mean (ε = 0), which is what the pipelines decode: a decoder
    // fine-tuned on it learns exact colours instead of colours averaged over the posterior noise.
    const eps = this.o.posterior === "mode" ? new Float32Array(count) : randn(streamSeed(this.o.seed, EPS, step, micro), count);
    const r = await this.trainer.lossAndGrads({ images, shape: [B, 3, H, W], eps, klWeight: this.o.klWeight, colorWeight: this.o.colorWeight ?? 0, chromaWeight: this.o.chromaWeight ?? 0 });
    return { loss: r.loss, grads: r.grads };
  }
}

/** Every sample's bucketed pixels in [-1, 1], (1, 3, H, W). */
export async function loadPixels(samples: Sample[], images: DataImage[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const s of samples) {
    const rgb = await loadBucketed(images[s.image].file, s.bucket);
    out.push(toSignedUnit({ rgb, width: s.bucket.width, height: s.bucket.height }).data);
  }
  return out;
}
