// What a training run trains on, built from its settings: the data, the trainer (the model's
// training graph) and the task that turns (step, micro-batch) into a loss and gradients.
//
// `flux2 train` builds it once in the main thread; with --workers N each worker thread builds its
// own from the same settings (src/train/parallel.ts), so the settings are plain data that can be
// posted to a thread, and building twice gives the same task.

import * as path from "node:path";
import type { Backend } from "../backend/backend.js";
import { openCheckpoint, type Checkpoint } from "../pipeline/checkpoint.js";
import { VARIANT_CARDS } from "../pipeline/variants.js";
import type { TextPadding } from "../text/length.js";
import { readVaeConfig, vaeScaleFactor } from "../models/vae.js";
import { PromptTokenizer } from "../text/tokenizer.js";
import { InvalidRequestError } from "../util/errors.js";
import { encodeData } from "./cache.js";
import { makeSamples, scanDataset, type DataImage, type Sample } from "./data.js";
import { FlowMatchingTask } from "./flow_task.js";
import type { TrainTask } from "./loop.js";
import type { LoraInit } from "./lora.js";
import { readTrainSigmas, type SigmaSampling } from "./schedule.js";
import { TransformerTrainer, VaeTrainer } from "./step.js";
import { ALIGN_GRID, TextEncoderAligner, alignHead, type AlignPooling } from "./text_align.js";
import { TextAlignTask, loadCaptionData } from "./text_task.js";
import { VaeTask, loadPixels } from "./vae_task.js";

export type TrainModeName = "lora" | "full" | "vae" | "text";

/** Everything that decides what micro-batch (k, j) computes: plain data (posted to worker threads). */
export interface TaskSettings {
  mode: TrainModeName;
  model: string;
  data: string;
  runDir: string;
  trigger?: string;
  multiCaption: boolean;
  resolutions: number[];
  seed: number;
  batchSize: number;
  gradAccum: number;
  maxLen: number;
  captionDropout: number;
  sampling: SigmaSampling;
  rank: number;
  alpha: number;
  targets: string[];
  loraInit: LoraInit;
  checkpointActivations: boolean;
  klWeight: number;
  colorWeight: number;
  chromaWeight: number;
  posterior: "sample" | "mode";
  freeze: string[];
  alignPool: AlignPooling;
  /** Text-encoder batches padded to maxLen (mean pooling's default) rather than to their length bucket. */
  alignPadToMax: boolean;
  /** --full / LoRA: captions padded to maxLen ("max") or each to its length bucket ("bucket"). */
  textPadding: TextPadding;
}

export interface TaskSetup {
  ck: Checkpoint;
  images: DataImage[];
  /** Every sample of the data (image × bucket). */
  samples: Sample[];
  /** The samples the task trains on (--text-encoder leaves out uncaptioned ones). */
  trainSamples: Sample[];
  skipped: number;
  uncaptioned: number;
  task: TrainTask;
  release: () => Promise<void>;
  /** --vae: every sample's pixels (the latent statistics are recomputed over them at the end). */
  vaePixels: Float32Array[];
  vaeTrainsEncoder: boolean;
  /** --text-encoder: the encoder's own tensors (the alignment head dropped), from `from` or the live ones. */
  textParams: (from?: Map<string, Float32Array>) => Map<string, Float32Array>;
  /** --text-encoder: the padded lengths its batches use. */
  textLengths?: number[];
}

/**
 * Reads the data and opens the trainer for the settings' mode. `quietData` (worker threads) skips
 * the data warnings the main thread has already printed.
 */
export async function setupTask(s: TaskSettings, backend: Backend, log: (s: string) => void, quietData = false): Promise<TaskSetup> {
  const ck = openCheckpoint(s.model);
  const ds = await scanDataset(s.data, { trigger: s.trigger, multiCaption: s.multiCaption, warn: quietData ? () => {} : (m) => process.stderr.write(m + "\n") });
  const samples = makeSamples(ds, s.resolutions);
  const base = { ck, images: ds.images, samples, skipped: ds.skipped.length, uncaptioned: ds.uncaptioned };
  if (s.mode === "text") {
    if (ck.textEncoder.kind !== "qwen3") throw new InvalidRequestError("--text-encoder trains a Qwen3 text encoder (klein checkpoints); this checkpoint's is Mistral");
    const trainSamples = samples.filter((x) => ds.images[x.image].caption.trim() !== "");
    if (!trainSamples.length) throw new InvalidRequestError(`--text-encoder needs captioned images; none of the ${ds.images.length} in ${s.data} has a caption`);
    if (trainSamples.length < samples.length) log(`text encoder: ${samples.length - trainSamples.length} sample(s) without a caption are left out`);
    const tokenizer = await PromptTokenizer.load(ck.tokenizer);
    log(`tokenizing ${trainSamples.length} caption(s) and drawing their ${ALIGN_GRID}×${ALIGN_GRID} thumbnails`);
    const data = await loadCaptionData(trainSamples, ds.images, tokenizer, s.maxLen, ALIGN_GRID);
    const trainer = TextEncoderAligner.open(backend, ck.textEncoder.weights, ck.textEncoder.config, [...VARIANT_CARDS[ck.variant].textLayers], alignHead(ALIGN_GRID, s.alignPool), s.seed);
    const task = new TextAlignTask(trainer, tokenizer, trainSamples, ds.images, data, { seed: s.seed, batchSize: s.batchSize, gradAccum: s.gradAccum, maxLength: s.maxLen, padToMax: s.alignPadToMax });
    return {
      ...base, trainSamples, task, release: () => trainer.release(), vaePixels: [], vaeTrainsEncoder: false,
      textParams: (from) => trainer.encoderParams(from), textLengths: task.paddedLengths,
    };
  }
  const noText = () => new Map<string, Float32Array>();
  if (s.mode === "vae") {
    const pixels = await loadPixels(samples, ds.images);
    const vcfg = readVaeConfig(ck.vae.config!);
    const trainer = await VaeTrainer.open(backend, ck.vae.weights, ck.vae.config!, { freeze: s.freeze });
    if (s.freeze.length) log(`frozen: ${s.freeze.join(", ")} (${trainer.trainsEncoder ? "the encoder still trains" : "the encoder is frozen: the latent space does not move"})`);
    const task = new VaeTask(trainer, samples, ds.images, pixels, {
      seed: s.seed, batchSize: s.batchSize, gradAccum: s.gradAccum, klWeight: s.klWeight, colorWeight: s.colorWeight, chromaWeight: s.chromaWeight,
      posterior: s.posterior, latentChannels: vcfg.latent_channels, scaleFactor: vaeScaleFactor(vcfg),
    });
    return { ...base, trainSamples: samples, task, release: () => trainer.release(), vaePixels: pixels, vaeTrainsEncoder: trainer.trainsEncoder, textParams: noText };
  }
  const data = await encodeData(ck, ds.images, samples, { runDir: s.runDir, maxSequenceLength: s.maxLen, textPadding: s.textPadding, withEmpty: s.captionDropout > 0, batchSize: s.batchSize, backend, log });
  const trainer = await TransformerTrainer.open(backend, ck.transformer.weights, ck.transformer.config,
    s.mode === "lora" ? { kind: "lora", targets: s.targets, rank: s.rank, alpha: s.alpha, initMethod: s.loraInit } : { kind: "full" },
    { checkpointActivations: s.checkpointActivations, seed: s.seed });
  if (s.mode === "lora" && trainer.params.size === 0) {
    await trainer.release();
    throw new InvalidRequestError(`--targets ${s.targets.join(",")} matches no Linear layer of the transformer; use module suffixes such as to_q, to_k, to_v, to_out.0`);
  }
  const sigmas = readTrainSigmas(path.join(ck.source, "scheduler", "scheduler_config.json"));
  const task = new FlowMatchingTask(trainer, samples, ds.images, data, {
    seed: s.seed, batchSize: s.batchSize, gradAccum: s.gradAccum, captionDropout: s.captionDropout, sigmas, sampling: s.sampling,
  });
  return { ...base, trainSamples: samples, task, release: () => trainer.release(), vaePixels: [], vaeTrainsEncoder: true, textParams: noText };
}
