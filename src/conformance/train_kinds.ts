// Case kinds of the training golden set (../shared/golden-train/README.md):
// train_lora_step, train_full_step and vae_train_step. Each runs the set's steps with
// the engine's trainers (src/train/step.ts), clipping and AdamW (src/train/optim.ts).

import { readAll } from "../io/safetensors.js";
import { AdamW, clipGradNorm } from "../train/optim.js";
import { TransformerTrainer, VaeTrainer, type TrainMode } from "../train/step.js";
import type { CaseOutput, KindHandler } from "./kinds.js";
import { input } from "./kinds.js";

type Out = CaseOutput["tensors"];

const scalar = (x: number) => ({ data: Float32Array.of(x), shape: [1] });

function optimizerFor(params: Map<string, Float32Array>, p: Record<string, any>): AdamW {
  const o = p.optimizer;
  if (o?.name !== "adamw") throw new Error(`optimizer "${o?.name}" is not supported (adamw only)`);
  return new AdamW(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
}

function stepCount(p: Record<string, any>): number {
  if (!Number.isSafeInteger(p.steps) || p.steps < 1) throw new Error(`params.steps must be a positive integer, got ${p.steps}`);
  return p.steps;
}

/** grad.<k> (before clipping, step 0) and final.<k> for every parameter except those with no true gradient. */
function paramOutputs(out: Out, firstGrads: Map<string, Float32Array>, params: Map<string, Float32Array>, shapeOf: (k: string) => number[], leftOut: string[]): void {
  const skip = new Set(leftOut);
  for (const [k, g] of firstGrads) if (!skip.has(k)) out.set(`grad.${k}`, { data: g, shape: shapeOf(k) });
  for (const [k, v] of params) if (!skip.has(k)) out.set(`final.${k}`, { data: v.slice(), shape: shapeOf(k) });
}

/** What every training kind records: the trainable tensors, their shapes and one step's loss and gradients. */
interface Trainable {
  params: Map<string, Float32Array>;
  paramShape(key: string): number[];
}

/**
 * The case's clipped AdamW steps: `step(k)` computes step k's loss and gradients before any update
 * (and records what its kind expects of step 0); gradients are clipped, then AdamW steps.
 */
async function clippedSteps(trainer: Trainable, p: Record<string, any>, out: Out,
                            step: (k: number) => Promise<{ loss: number; grads: Map<string, Float32Array> }>): Promise<CaseOutput> {
  const opt = optimizerFor(trainer.params, p);
  let firstGrads = new Map<string, Float32Array>();
  for (let k = 0; k < stepCount(p); k++) {
    const r = await step(k);
    out.set(`loss_${k}`, scalar(r.loss));
    if (k === 0) firstGrads = new Map([...r.grads].map(([n, g]) => [n, g.slice()]));
    const norm = clipGradNorm(r.grads, p.max_grad_norm);
    if (k === 0) out.set("grad_norm_0", scalar(norm));
    opt.step(r.grads);
  }
  paramOutputs(out, firstGrads, trainer.params, (key) => trainer.paramShape(key), p.zero_gradient_parameters_left_out ?? []);
  return { tensors: out };
}

async function transformerSteps(ctx: Parameters<KindHandler>[0], mode: TrainMode): Promise<CaseOutput> {
  const p = ctx.params;
  if (p.loss !== "flow_matching_mse" || p.timestep !== "sigma" || (p.weighting_scheme ?? "none") !== "none") {
    throw new Error(`unsupported step definition (loss ${p.loss}, timestep ${p.timestep}, weighting ${p.weighting_scheme})`);
  }
  const spec = ctx.spec.model.transformer!;
  const trainer = await TransformerTrainer.open(ctx.models.backend, ctx.models.resolve(spec.weights), spec.config ? ctx.models.resolve(spec.config) : null, mode);
  try {
    const x0 = input(ctx, "model_input"), embeds = input(ctx, "prompt_embeds");
    const out: Out = new Map();
    return await clippedSteps(trainer, p, out, async (k) => {
      const r = await trainer.lossAndGrads({
        x0: x0.data as Float32Array, shape: x0.shape as [number, number, number, number],
        embeds: embeds.data as Float32Array, embedShape: embeds.shape as [number, number, number],
        noise: input(ctx, `noise_${k}`).data as Float32Array, sigmas: input(ctx, `sigmas_${k}`).data as Float32Array,
      });
      if (k === 0) out.set("model_pred_0", { data: r.modelPred, shape: x0.shape });
      return r;
    });
  } finally {
    await trainer.release();
  }
}

export const trainLoraStepKind: KindHandler = async (ctx) => {
  const lora = ctx.params.lora;
  if (lora.dropout) throw new Error(`LoRA dropout ${lora.dropout} is not supported (0 only)`);
  const init = new Map<string, Float32Array>();
  for (const [k, t] of readAll(ctx.models.resolve(lora.file))) {
    if (t.dtype !== "F32") throw new Error(`${lora.file}: ${k} is ${t.dtype}, expected F32`);
    init.set(k, t.data as Float32Array);
  }
  return transformerSteps(ctx, { kind: "lora", targets: lora.target_modules, rank: lora.rank, alpha: lora.alpha, init });
};

export const trainFullStepKind: KindHandler = async (ctx) => {
  if (ctx.params.trainable !== "all") throw new Error(`params.trainable "${ctx.params.trainable}" is not supported ("all" only)`);
  return transformerSteps(ctx, { kind: "full" });
};

export const vaeTrainStepKind: KindHandler = async (ctx) => {
  const p = ctx.params;
  if (p.loss !== "mse_plus_kl" || p.trainable !== "all") throw new Error(`unsupported VAE step (loss ${p.loss}, trainable ${p.trainable})`);
  const spec = ctx.spec.model.vae!;
  const trainer = await VaeTrainer.open(ctx.models.backend, ctx.models.resolve(spec.weights), ctx.models.resolve(spec.config!));
  try {
    const images = input(ctx, "images");
    const out: Out = new Map();
    return await clippedSteps(trainer, p, out, async (k) => {
      const r = await trainer.lossAndGrads({
        images: images.data as Float32Array, shape: images.shape as [number, number, number, number],
        eps: input(ctx, `eps_${k}`).data as Float32Array, klWeight: p.kl_weight,
      });
      if (k === 0) {
        out.set("reconstruction_0", { data: r.reconstruction, shape: images.shape });
        out.set("recon_loss_0", scalar(r.reconLoss));
        out.set("kl_0", scalar(r.kl));
      }
      return r;
    });
  } finally {
    await trainer.release();
  }
};

export const TRAIN_KINDS: Record<string, KindHandler> = {
  train_lora_step: trainLoraStepKind,
  train_full_step: trainFullStepKind,
  vae_train_step: vaeTrainStepKind,
};
