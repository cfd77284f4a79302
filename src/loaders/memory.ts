// How much memory a run needs, said before it starts.
//
// Components run one after another (text encoder → transformer → VAE), each
// released when its stage is done, so the peak is the largest stage, not the
// sum. A stage needs its weights as they stay resident (bf16 stays bf16 and is
// converted to float32 just before each use; --quantize stores int8/int4 codes
// and scales) plus its largest activations.

import * as os from "../platform/os.js";
import { residentWeightBytes } from "../quant/memory.js";
import { specFor, type QuantKind } from "../models/quantized/blockwise.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { innerDim, mlpDim, type TransformerConfig } from "../models/transformer.js";

export interface StageEstimate {
  stage: "text_encode" | "denoise" | "vae_decode";
  weightBytes: number;
  activationBytes: number;
}

export interface MemoryPlan {
  stages: StageEstimate[];
  peakBytes: number;
  availableBytes: number;
}

export function planMemory(ck: Checkpoint, cfg: TransformerConfig, width: number, height: number, batch: number, textLength: number, teHidden: number, quantize?: QuantKind): MemoryPlan {
  const spec = quantize ? specFor(quantize) : undefined;
  const D = innerDim(cfg), M = mlpDim(cfg);
  const tokens = (width / 16) * (height / 16) + textLength;
  // The widest live tensors of a single block: the fused qkv+mlp projection and a few D-wide streams.
  const denoiseAct = batch * tokens * (3 * D + 2 * M + 6 * D) * 4;
  const teAct = batch * textLength * teHidden * 4 * 12;
  // VAE decode: a handful of 128-channel full-resolution feature maps.
  const vaeAct = batch * width * height * 128 * 4 * 4;
  const vaeWeights = residentWeightBytes(ck.vae.weights);
  const stages: StageEstimate[] = [
    { stage: "text_encode", weightBytes: residentWeightBytes(ck.textEncoder.weights, spec), activationBytes: teAct },
    { stage: "denoise", weightBytes: residentWeightBytes(ck.transformer.weights, spec), activationBytes: denoiseAct },
    { stage: "vae_decode", weightBytes: vaeWeights, activationBytes: vaeAct },
  ];
  const peakBytes = Math.max(...stages.map((s) => s.weightBytes + s.activationBytes));
  return { stages, peakBytes, availableBytes: os.freemem() };
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

export function describePlan(plan: MemoryPlan): string {
  const lines = plan.stages.map((s) => `  ${s.stage.padEnd(12)} weights ${formatBytes(s.weightBytes).padStart(10)}  activations ~${formatBytes(s.activationBytes)}`);
  lines.push(`  peak ~${formatBytes(plan.peakBytes)} (one stage at a time); available ${formatBytes(plan.availableBytes)}`);
  return lines.join("\n");
}

export class InsufficientMemoryError extends Error {}

/** Refuse a run that cannot fit, with a message that says what to do. */
export function assertFits(plan: MemoryPlan): void {
  if (plan.peakBytes <= plan.availableBytes) return;
  throw new InsufficientMemoryError(
    `this run needs about ${formatBytes(plan.peakBytes)} but only ${formatBytes(plan.availableBytes)} is available:\n${describePlan(plan)}\n` +
    "use a smaller size or batch, quantized weights, or a machine with more memory (--force runs it anyway)",
  );
}
