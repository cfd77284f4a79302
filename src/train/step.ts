// The training steps (golden-train README): FLUX.2's flow-matching step for the
// transformer (LoRA or full) and the VAE's autoencoder step.
//
// API skeleton: the implementation lands in the following commits (autodiff first).

import type { Backend } from "../backend/backend.js";

export type TrainMode =
  | { kind: "lora"; targets: string[]; rank: number; alpha: number; init?: Map<string, Float32Array> }
  | { kind: "full" };

/**
 * diffusers' train_dreambooth_lora_flux2_klein.py targets: to_k, to_q, to_v, to_out.0,
 * to_qkv_mlp_proj and every single block's attn.to_out. Matching is peft's suffix rule over
 * the transformer's Linear layers only, so "attn.to_out" selects exactly the single blocks'
 * output projections (the double blocks' attn.to_out is a ModuleList, not a Linear).
 */
export const DEFAULT_LORA_TARGETS: readonly string[] = ["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj", "attn.to_out"];

export interface TransformerBatch {
  /** (B, C, h, w) patchified + batch-norm-normalized latents. */
  x0: Float32Array;
  shape: [number, number, number, number];
  /** (B, L, J) prompt embeddings. */
  embeds: Float32Array;
  embedShape: [number, number, number];
  /** Like x0. */
  noise: Float32Array;
  /** (B) flow-matching sigmas in [0, 1]. */
  sigmas: Float32Array;
}

export interface TransformerStepResult {
  loss: number;
  modelPred: Float32Array;
  grads: Map<string, Float32Array>;
}

export interface VaeBatch {
  /** (B, 3, H, W) in [-1, 1]. */
  images: Float32Array;
  shape: [number, number, number, number];
  /** (B, latent_channels, H/f, W/f) standard normal. */
  eps: Float32Array;
  klWeight: number;
}

export interface VaeStepResult {
  loss: number;
  reconLoss: number;
  kl: number;
  reconstruction: Float32Array;
  grads: Map<string, Float32Array>;
}

export class TransformerTrainer {
  readonly params = new Map<string, Float32Array>();
  readonly loraConfig?: { rank: number; alpha: number; targets: string[]; modules: string[] };

  private constructor() {}

  static async open(_backend: Backend, _weights: string, _config: string | null, _mode: TrainMode,
                    _opts: { checkpointActivations?: boolean; seed?: number } = {}): Promise<TransformerTrainer> {
    throw new Error("TransformerTrainer: not implemented yet (API skeleton)");
  }

  async lossAndGrads(_b: TransformerBatch): Promise<TransformerStepResult> {
    throw new Error("TransformerTrainer: not implemented yet (API skeleton)");
  }

  async release(): Promise<void> {}
}

export class VaeTrainer {
  readonly params = new Map<string, Float32Array>();

  private constructor() {}

  static async open(_backend: Backend, _weights: string, _config: string): Promise<VaeTrainer> {
    throw new Error("VaeTrainer: not implemented yet (API skeleton)");
  }

  async lossAndGrads(_b: VaeBatch): Promise<VaeStepResult> {
    throw new Error("VaeTrainer: not implemented yet (API skeleton)");
  }

  async release(): Promise<void> {}
}
