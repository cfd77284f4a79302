// The memory plan of a training run, printed before the first step (the
// training counterpart of src/loaders/memory.ts).
//
// Two stages run one after the other: encoding the data (the text encoder, then
// the VAE; both released) and training. Training holds the transformer's frozen
// weights as stored (memory-mapped, bf16 stays bf16), four float32 copies of
// every trainable tensor (value, gradient, AdamW m and v) plus the accumulated
// gradient (and the EMA with --ema-decay), and the activations the backward pass needs: every block's
// intermediate tensors (about the widest live tensors of a forward block, kept
// for each block, times ACTIVATION_FACTOR), or one block's with activation
// checkpointing.

import * as os from "node:os";
import { innerDim, mlpDim, type TransformerConfig } from "../models/transformer.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { formatBytes } from "../loaders/memory.js";
import { residentWeightBytes } from "../quant/memory.js";

/**
 * Measured calibration: a rank-16 LoRA step at klein-4B shapes with 128 tokens took 2.0 GB of
 * anonymous memory (bench stage train_step, docs/performance.md) where the bare per-block count
 * gives 0.6 GB of activations + 0.3 GB of optimizer copies: the backward's transients (attention
 * scores, gradients of every intermediate) roughly double to triple what the forward keeps.
 */
const ACTIVATION_FACTOR = 2.5;

export interface TrainMemoryPlan {
  lines: string[];
  /** The process's expected peak RSS: processBytes + what training adds. */
  peakBytes: number;
  /** What training adds to the process: compared with the free memory. */
  neededBytes: number;
  availableBytes: number;
}

/**
 * What the process holds before any data: Node with flux2 train's modules, ONNX Runtime and sharp
 * loaded (86 MiB RSS, measured 2026-12-06 by importing dist/src/cli/train.js, onnxruntime-node and
 * sharp). A worker thread shares it; the rest of the process's memory is data each worker copies.
 */
const NODE_BASELINE_BYTES = 86 * 2 ** 20;

export function planTrainMemory(ck: Checkpoint, cfg: TransformerConfig, o: {
  trainableParams: number; batch: number; width: number; height: number; textLength: number; checkpointActivations: boolean; vae: boolean;
  /** --ema-decay: one more float32 copy of every trainable tensor. */
  ema?: boolean;
  /**
   * What the process holds when the plan is made (its RSS): Node, ONNX Runtime and the data
   * loaded for training — the cached latents and prompt embeddings, which stay in memory for
   * the whole run (flux2-mini: 0.6 GB), or the token ids and thumbnails. Training comes on top.
   */
  processBytes?: number;
  /** The data is already encoded and the encoders released (flux2 train plans after its cache): only training is to come. */
  encoded?: boolean;
  /** Training the text encoder (--text-encoder): its config and the padded lengths its batches use. */
  textEncoder?: { hidden_size: number; intermediate_size: number; num_hidden_layers: number; num_attention_heads: number; vocab_size: number };
  textLengths?: number[];
  /**
   * --workers N: N − 1 worker threads beside the main one, each with its own copy of the data
   * (the process's share above Node's own), the frozen weights, the trainable tensors and their
   * gradients, and the activations of one micro-batch.
   */
  workers?: number;
  /**
   * How far each thread's JavaScript heap may grow with garbage before its first full collection:
   * the training process's initial old-generation size less what is live (src/cli/training_heap.ts).
   */
  jsHeapBytes?: number;
}): TrainMemoryPlan {
  const te = residentWeightBytes(ck.textEncoder.weights);
  const vae = residentWeightBytes(ck.vae.weights);
  const encode = o.textEncoder ? 0 : Math.max(te, vae) + o.batch * o.width * o.height * 128 * 4 * 4;
  const D = innerDim(cfg), M = mlpDim(cfg);
  const blocks = cfg.num_layers + cfg.num_single_layers;
  const tokens = (o.width / 16) * (o.height / 16) + o.textLength;
  const perBlock = o.batch * tokens * (3 * D + 2 * M + 6 * D) * 4;
  const t = o.textEncoder;
  // Per layer and token: the residual, the norms, q/k/v/attention output, the MLP's three
  // intermediates, and a (heads × L) row of attention scores; plus the loop's vocabulary-sized sum
  // of the embedding table's gradient rows (the graph gives them by lookup since session 36; it
  // scattered them into a dense table before). Each padded length has its own graph,
  // and ONNX Runtime keeps each graph's arena at its peak, so the lengths add up (measured: 5.2 GB
  // peak RSS for batch 32 over lengths 32–128 on flux2-mini, where this gives 4.9 GB + the process).
  const textActivations = (enc: NonNullable<typeof t>) => (o.textLengths ?? [o.textLength]).reduce((a, L) =>
    a + ACTIVATION_FACTOR * o.batch * L * enc.num_hidden_layers * (8 * enc.hidden_size + 3 * enc.intermediate_size + enc.num_attention_heads * L) * 4, 0) + enc.vocab_size * enc.hidden_size * 4;
  const activations = t ? textActivations(t) : o.vae ? o.batch * o.width * o.height * 128 * 4 * 12 : ACTIVATION_FACTOR * (o.checkpointActivations ? 2 * perBlock + blocks * o.batch * tokens * D * 4 : blocks * perBlock);
  const frozen = o.vae || t ? 0 : residentWeightBytes(ck.transformer.weights);
  const copies = o.ema ? 6 : 5;
  const optimizer = o.trainableParams * 4 * copies;
  const extraWorkers = Math.max(0, (o.workers ?? 1) - 1);
  const perWorker = Math.max(0, (o.processBytes ?? 0) - NODE_BASELINE_BYTES) + frozen + o.trainableParams * 4 * 2 + activations;
  const heap = (1 + extraWorkers) * (o.jsHeapBytes ?? 0);
  const train = frozen + optimizer + activations + extraWorkers * perWorker + heap;
  const now = o.processBytes ?? 0;
  const needed = o.encoded ? train : Math.max(encode, train);
  const lines = [
    t ? "  prepare data   token ids and an 8×8 thumbnail per caption (a few kB each; no encoder pass)"
      : o.encoded ? `  encode data    done (text encoder ${formatBytes(te)} then VAE ${formatBytes(vae)}, released)`
      : `  encode data    text encoder ${formatBytes(te)} then VAE ${formatBytes(vae)} (released before training)`,
    `  train          ${o.vae || t ? "" : `frozen weights ${formatBytes(frozen)}, `}${(o.trainableParams / 1e6).toFixed(2)} M trainable × ${copies} float32 copies${o.ema ? " (with the EMA)" : ""} ${formatBytes(optimizer)}, ` +
      `activations ~${formatBytes(activations)} (${t ? `${o.batch} captions, one graph per length ${(o.textLengths ?? [o.textLength]).join(", ")}` : `${o.batch}×${o.width}×${o.height}`}${o.checkpointActivations ? ", checkpointed" : ""})`,
    ...(extraWorkers ? [`  workers        ${extraWorkers} more thread(s), each ~${formatBytes(perWorker)} (its own data, weights, gradients and activations)`] : []),
    ...(heap ? [`  JS heap        up to ${formatBytes(o.jsHeapBytes!)} of garbage a thread before V8's first full collection (FLUX2_TRAIN_HEAP_MB)`] : []),
    ...(o.processBytes !== undefined ? [`  process now    ${formatBytes(now)} (Node, ONNX Runtime and the data loaded for training)`] : []),
    `  peak ~${formatBytes(now + needed)}; available ${formatBytes(os.freemem())}`,
  ];
  // What is still to be allocated is what must fit in the free memory (the process's own is taken).
  return { lines, peakBytes: now + needed, neededBytes: needed, availableBytes: os.freemem() };
}
