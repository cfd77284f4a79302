// flux2 train: LoRA fine-tuning (default), full training (--full) or VAE
// training (--vae) of a FLUX.2 diffusers checkpoint on a folder of captioned
// images. The parts: src/train/data.ts (folder, buckets, order), cache.ts
// (latents + text embeddings, once), flow_task.ts / vae_task.ts (what a
// micro-batch is), setup.ts (the data, trainer and task of a run's settings),
// parallel.ts (--workers), loop.ts (optimizer, checkpoints, resume), export.ts (files).

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { autoTrainingMatmul, openTrainingBackend } from "../backend/ort_native.js";
import { MATMUL_PRECISIONS, type Backend, type Device, type MatmulPrecision } from "../backend/backend.js";
import { openCheckpoint, transformerConfig, type Checkpoint } from "../pipeline/checkpoint.js";
import { modelDefaults } from "../pipeline/model_defaults.js";
import { TEXT_PADDINGS, type TextPadding } from "../text/length.js";
import type { Flux2Pipeline } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import { encodeImage } from "../pipeline/image.js";
import { captionIdentity, type DataImage, type Sample } from "../train/data.js";
import { ALIGN_POOLINGS, type AlignPooling } from "../train/text_align.js";
import { readQwen3Config } from "../models/qwen3.js";
import { ParallelTask } from "../train/parallel.js";
import { setupTask, type TaskSettings, type TrainModeName } from "../train/setup.js";
import { trainLoop, type LoopResult, type RunIdentity, type StepLog, type TrainTask } from "../train/loop.js";
import { LR_SCHEDULERS, type LrScheduler, type SigmaSampling } from "../train/schedule.js";
import { saveLora, saveModelFolder, type LoraExportFormat } from "../train/export.js";
import { LossPlotter, smoothed } from "../train/loss_plot.js";
import { planTrainMemory } from "../train/memory.js";
import { trainingHeapBytes } from "./training_heap.js";
import { writeLatentStats } from "../train/vae_stats.js";
import { DEFAULT_LORA_TARGETS } from "../train/step.js";
import { LORA_INITS, type LoraInit } from "../train/lora.js";
import { intOption, numOption } from "./common.js";
import { loadPipeline } from "../loaders/pretrained.js";
import { formatDuration } from "../util/duration.js";

const HELP = `usage: flux2 train --model PATH --data DIR --out RUN_DIR [options]

Fine-tunes a FLUX.2 checkpoint (diffusers folder; klein base is the one made for
training) on a folder of images with same-name .txt captions. Writes
RUN_DIR/lora.safetensors (or RUN_DIR/model/ with --full / --vae / --text-encoder), resumable
checkpoints under RUN_DIR/checkpoints/, RUN_DIR/loss.png and samples.

Data (--data DIR):
  DIR/photo.png + DIR/photo.txt        an image and its caption
  DIR/10_name/...                      kohya folder: repeated 10 times per epoch
  images without a .txt get the folder's name (after N_) as caption
  --trigger WORD          put WORD into every caption ("[trigger]" is replaced; else
                          "WORD, " is put in front)
  --multi-caption         each non-empty line of a .txt is one caption of the image, and
                          every visit picks one at random (seeded; kohya's --enable_wildcard).
                          Without it the whole file is one caption, line breaks included
  --caption-dropout P     train with the empty caption with probability P (default 0)
  --resolution R[,R...]   training resolutions: aspect-ratio buckets of about R²
                          pixels, sides multiples of 16 (default 512; e.g. 512,768,1024)
  --max-sequence-length N text tokens (default 512)

What to train:
  --rank N, --alpha A     LoRA rank and alpha (default 16, 16; scale alpha/rank)
  --lora-init I           how lora_A starts (lora_B starts at 0): gaussian (N(0, 1/rank²), as
                          diffusers' klein script; default) or kaiming (peft's default,
                          U(±1/√in_features))
  --targets LIST          comma-separated module suffixes, PEFT's matching (default:
                          ${DEFAULT_LORA_TARGETS.join(",")})
  --full                  train every transformer parameter (from scratch or full fine-tune)
  --vae                   train the VAE as an autoencoder (MSE + --kl-weight · KL, default 1e-6)
  --color-weight W        with --vae: add W · the squared error of 8×8-block mean colours, which
                          weighs flat colours that pixel MSE lets drift (default 0)
  --chroma-weight W       with --vae: add W · the squared error of each pixel's colour with its
                          brightness taken out, so that hues rare in the data (greens, purples)
                          are learned as early as brightness (default 0)
  --posterior P           with --vae: sample (default; z = mean + std·ε, as diffusers trains
                          an AutoencoderKL) or mode (z = mean, what the pipelines decode: for a
                          decoder fine-tune with the encoder frozen)
  --freeze PREFIXES       with --vae: comma-separated parameter-name prefixes kept frozen, e.g.
                          encoder.,quant_conv. to train the decoder alone, so that the latent
                          space (and a transformer trained on it) stays valid
  --text-encoder          train the Qwen3 text encoder so that its prompt embeddings predict each
                          caption's picture (an 8×8 CIELAB thumbnail, read through a small
                          attention-pooling head that is then dropped; src/train/text_align.ts):
                          for a model whose encoder was never pretrained, such as flux2-mini
  --align-pool P          with --text-encoder: how the head reads the embeddings: attention
                          (default: learned queries over the caption's tokens) or mean (the
                          average over all --max-sequence-length positions, padding included,
                          the sequence the transformer attends to; docs/flux2-mini.md, session 10)
  --align-padding P       with --align-pool mean: max (default: every batch padded to
                          --max-sequence-length) or bucket (batches of captions of similar
                          length, each padded to its length bucket, 32/48/64/…, and the mean
                          taken over those positions: cheaper when most captions are short)
  --text-padding P        with --full or a LoRA: how captions are padded for the transformer:
                          max (FLUX.2's rule: every caption to --max-sequence-length) or bucket
                          (each to its length bucket, 32/48/64/…: fewer text tokens when most
                          captions are short); default: the model's "text_padding" (model_index.json
                          "flux2ts"), else max. A --full run records it in its model folder, so that
                          generating pads prompts the way the transformer was trained
  --checkpoint-activations recompute each block in the backward (less memory, slower)

Optimization (AdamW, as diffusers' klein LoRA script):
  --steps N               optimizer steps (default 1000)
  --lr LR                 learning rate (default 1e-4)
  --lr-scheduler S        ${LR_SCHEDULERS.join(" | ")} (default constant)
  --warmup-steps N        warmup steps of the schedule (default 0)
  --batch-size N          images per micro-batch, one bucket each (default 1)
  --grad-accum N          micro-batches per optimizer step (default 1)
  --weight-decay W        AdamW decoupled weight decay (default 1e-4)
  --max-grad-norm X       clip the gradient's total norm (default 1; 0 = off)
  --adam-beta1 B          AdamW's first-moment decay (default 0.9, as diffusers' scripts)
  --adam-beta2 B          AdamW's second-moment decay (default 0.999)
  --adam-epsilon E        AdamW's epsilon (default 1e-8)
  --ema-decay D           keep an exponential moving average of the trained weights (e.g. 0.999;
                          diffusers' EMAModel warm-up: min(D, (1+k)/(10+k)) at step k) and export
                          it (model folder or LoRA) and sample with it; the last checkpoint also
                          holds the raw weights (param.*). Default: off
  --timestep-sampling S   uniform (default) | logit_normal (--logit-mean 0, --logit-std 1). As in
                          diffusers, u = sigmoid(N(mean, std)) indexes the σ table from σ 1 down,
                          so a NEGATIVE mean draws more high-noise σ (--logit-mean=-1, with '=':
                          average σ 0.70)
  --seed S                seed of the data order, noise, σ and LoRA init (default 0)

Output:
  --out RUN_DIR           run folder (required)
  --format F              peft (diffusers, default) | comfyui (BFL names, fused qkv)
  --save-every N          resumable checkpoint every N steps (default 250; also at the end and on Ctrl-C)
  --keep-checkpoints N    keep the newest N checkpoints (default 3)
  --resume PATH           continue from RUN_DIR (its newest checkpoint) or a checkpoint
                          file; the run's settings (train.json) are reused, a checkpoint
                          for another model, rank or target list is refused
  --sample-every N        write sample images every N steps (and at the end)
  --sample-prompt TEXT    sample prompt, repeatable (default: the first caption)
  --sample-steps N        denoising steps of the samples (default: the model's)
  --device D              cpu (default) | webgpu | cuda
  --threads N             ONNX Runtime intra-op threads (default: one per core; 1 keeps a shared machine usable)
  --matmul P              fp32 (default) | bf16 | auto: the training step's matrix products in bfloat16
                          (inputs rounded, float32 sums, as PyTorch's bf16 autocast), through
                          flux2.ts's native addon; on CPUs with AVX-512 BF16 (Zen 4, Sapphire
                          Rapids) the products run 1.5-1.9x faster and a step 1.1-1.3x; refused
                          elsewhere; auto takes bf16 where it is accepted and fp32 elsewhere.
                          Samples, caches and saved weights stay float32
                          (docs/training.md, "bf16 matrix products")
  --workers N             compute N micro-batches of a step at once, each in its own thread with
                          --threads/N threads (default 1). Needs --grad-accum N (or a multiple):
                          --batch-size 8 --grad-accum 2 --workers 2 trains on 16 images a step, as
                          --batch-size 8 --grad-accum 2 does, and computes the same numbers. It pays
                          where operations are too narrow for threads to share (flux2-mini's VAE:
                          1.9x over one thread; its text encoder: 1.07x over two threads); each
                          worker holds its own copy of the data and the model
  --json                  one JSON line per step {"step","loss","lr"}, then the outputs
  --force                 run even if the memory plan says it will not fit
  --quiet                 no progress output
  -h, --help              this text`;

const OPTIONS = {
  model: { type: "string" }, data: { type: "string" }, out: { type: "string" }, steps: { type: "string" },
  rank: { type: "string" }, alpha: { type: "string" }, "lora-init": { type: "string" }, lr: { type: "string" }, "batch-size": { type: "string" },
  resolution: { type: "string" }, targets: { type: "string" }, full: { type: "boolean" }, vae: { type: "boolean" }, "text-encoder": { type: "boolean" }, "align-pool": { type: "string" }, "align-padding": { type: "string" }, "text-padding": { type: "string" },
  "save-every": { type: "string" }, "keep-checkpoints": { type: "string" }, "sample-every": { type: "string" },
  "sample-prompt": { type: "string", multiple: true }, "sample-steps": { type: "string" }, resume: { type: "string" },
  seed: { type: "string" }, json: { type: "boolean" }, "grad-accum": { type: "string" }, "lr-scheduler": { type: "string" },
  "warmup-steps": { type: "string" }, trigger: { type: "string" }, "multi-caption": { type: "boolean" }, "caption-dropout": { type: "string" }, format: { type: "string" },
  "max-sequence-length": { type: "string" }, "weight-decay": { type: "string" }, "max-grad-norm": { type: "string" },
  "adam-beta1": { type: "string" }, "adam-beta2": { type: "string" }, "adam-epsilon": { type: "string" },
  "ema-decay": { type: "string" }, "timestep-sampling": { type: "string" }, "logit-mean": { type: "string" }, "logit-std": { type: "string" },
  "kl-weight": { type: "string" }, "color-weight": { type: "string" }, "chroma-weight": { type: "string" }, freeze: { type: "string" }, posterior: { type: "string" }, "checkpoint-activations": { type: "boolean" }, device: { type: "string" }, threads: { type: "string" }, workers: { type: "string" }, matmul: { type: "string" },
  force: { type: "boolean" }, quiet: { type: "boolean" }, help: { type: "boolean", short: "h" },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

/** Settings that a resumed run takes from RUN_DIR/train.json unless given again. */
const SAVED = ["model", "data", "steps", "matmul", "rank", "alpha", "lora-init", "lr", "batch-size", "resolution", "targets", "full", "vae", "text-encoder", "save-every",
  "keep-checkpoints", "sample-every", "sample-prompt", "sample-steps", "seed", "grad-accum", "lr-scheduler", "warmup-steps", "trigger",
  "multi-caption", "caption-dropout", "format", "max-sequence-length", "align-pool", "align-padding", "text-padding", "weight-decay", "max-grad-norm", "adam-beta1", "adam-beta2", "adam-epsilon", "ema-decay", "timestep-sampling", "logit-mean", "logit-std",
  "kl-weight", "color-weight", "chroma-weight", "freeze", "posterior", "checkpoint-activations"];

export async function runTrainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let v: Values = values as Values;
  if (!v.out) throw new InvalidRequestError("--out RUN_DIR is required (the run folder); see --help");
  const runDir = v.out as string;
  const settingsFile = path.join(runDir, "train.json");
  if (v.resume && fs.existsSync(settingsFile)) {
    const saved = JSON.parse(fs.readFileSync(settingsFile, "utf8")) as Values;
    v = { ...saved, ...Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined)) };
  }
  if (!v.model) throw new InvalidRequestError("--model PATH is required (a FLUX.2 diffusers folder); see --help");
  if (!v.data) throw new InvalidRequestError("--data DIR is required (a folder of images with same-name .txt captions); see --help");
  const json = !!v.json;
  const quiet = !!v.quiet;
  const log = quiet ? () => {} : (s: string) => process.stderr.write(s + "\n");
  const say = (s: string) => (json ? process.stderr.write(s + "\n") : console.log(s));

  // Settings.
  const mode: TrainModeName = v["text-encoder"] ? "text" : v.vae ? "vae" : v.full ? "full" : "lora";
  if ([v.full, v.vae, v["text-encoder"]].filter(Boolean).length > 1) throw new InvalidRequestError("--full, --vae and --text-encoder train different models; give one of them");
  const steps = intOption(v.steps as string, "steps", 1, 10_000_000) ?? 1000;
  const rank = intOption(v.rank as string, "rank", 1, 4096) ?? 16;
  const alpha = numOption(v.alpha as string, "alpha", 1e-6, 1e6) ?? 16;
  const lr = numOption(v.lr as string, "lr", 0, 1e30) ?? 1e-4;
  const batchSize = intOption(v["batch-size"] as string, "batch-size", 1, 1024) ?? 1;
  const gradAccum = intOption(v["grad-accum"] as string, "grad-accum", 1, 4096) ?? 1;
  const warmup = intOption(v["warmup-steps"] as string, "warmup-steps", 0, 10_000_000) ?? 0;
  const seed = intOption(v.seed as string, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const saveEvery = intOption(v["save-every"] as string, "save-every", 0, 10_000_000) ?? 250;
  const keep = intOption(v["keep-checkpoints"] as string, "keep-checkpoints", 1, 1000) ?? 3;
  const sampleEvery = intOption(v["sample-every"] as string, "sample-every", 0, 10_000_000) ?? 0;
  const sampleSteps = intOption(v["sample-steps"] as string, "sample-steps", 1, 100);
  const captionDropout = numOption(v["caption-dropout"] as string, "caption-dropout", 0, 1) ?? 0;
  const maxLen = intOption(v["max-sequence-length"] as string, "max-sequence-length", 1, 4096) ?? 512;
  const weightDecay = numOption(v["weight-decay"] as string, "weight-decay", 0, 10) ?? 1e-4;
  const maxGradNorm = numOption(v["max-grad-norm"] as string, "max-grad-norm", 0, 1e9) ?? 1;
  // AdamW decay rates may be 0 but not 1 (1 never forgets, and its bias correction divides by 0).
  const adamBeta = (name: string, fallback: number) => numOption(v[name] as string | undefined, name, 0, 1, { hi: true, example: fallback }) ?? fallback;
  const adamBetas: [number, number] = [adamBeta("adam-beta1", 0.9), adamBeta("adam-beta2", 0.999)];
  const adamEps = numOption(v["adam-epsilon"] as string, "adam-epsilon", 0, 1, { lo: true, example: 1e-8 }) ?? 1e-8; // 0 would divide by 0 where a gradient has been 0
  const emaDecay = numOption(v["ema-decay"] as string, "ema-decay", 0, 1, { lo: true, hi: true, example: 0.999 });
  const klWeight = numOption(v["kl-weight"] as string, "kl-weight", 0, 1e6) ?? 1e-6;
  const colorWeight = numOption(v["color-weight"] as string, "color-weight", 0, 1e6) ?? 0;
  const chromaWeight = numOption(v["chroma-weight"] as string, "chroma-weight", 0, 1e6) ?? 0;
  const freeze = v.freeze ? (v.freeze as string).split(",").map((t) => t.trim()).filter(Boolean) : [];
  const posterior = ((v.posterior as string | undefined) ?? "sample") as "sample" | "mode";
  if (posterior !== "sample" && posterior !== "mode") throw new InvalidRequestError(`--posterior must be sample or mode, got "${posterior}"`);
  if (mode !== "vae" && (v["color-weight"] !== undefined || v["chroma-weight"] !== undefined || freeze.length || v.posterior !== undefined)) throw new InvalidRequestError("--color-weight, --chroma-weight, --freeze and --posterior are VAE settings; use them with --vae");
  const scheduler = (v["lr-scheduler"] as string | undefined) ?? "constant";
  if (!LR_SCHEDULERS.includes(scheduler as LrScheduler)) throw new InvalidRequestError(`--lr-scheduler must be one of ${LR_SCHEDULERS.join(", ")}, got "${scheduler}"`);
  const format = ((v.format as string | undefined) ?? "peft") as LoraExportFormat;
  if (format !== "peft" && format !== "comfyui") throw new InvalidRequestError(`--format must be peft or comfyui, got "${format}"`);
  if (format === "comfyui" && mode !== "lora") throw new InvalidRequestError("--format comfyui is for LoRAs; --full, --vae and --text-encoder write a diffusers model folder");
  const resolutions = ((v.resolution as string | undefined) ?? "512").split(",").map((r) => intOption(r.trim(), "resolution", 64, 4096)!);
  const targets = v.targets ? (v.targets as string).split(",").map((t) => t.trim()).filter(Boolean) : [...DEFAULT_LORA_TARGETS];
  if (mode !== "lora" && (values.rank || values.alpha || values.targets || values["lora-init"])) throw new InvalidRequestError("--rank, --alpha, --targets and --lora-init are LoRA settings; they do not apply with --full, --vae or --text-encoder");
  const loraInit = ((v["lora-init"] as string | undefined) ?? "gaussian") as LoraInit;
  if (!LORA_INITS.includes(loraInit)) throw new InvalidRequestError(`--lora-init must be ${LORA_INITS.join(" or ")}, got "${loraInit}"`);
  const ts = (v["timestep-sampling"] as string | undefined) ?? "uniform";
  let sampling: SigmaSampling;
  if (ts === "uniform") sampling = { kind: "uniform" };
  else if (ts === "logit_normal") sampling = { kind: "logit_normal", mean: numOption(v["logit-mean"] as string, "logit-mean", -10, 10) ?? 0, std: numOption(v["logit-std"] as string, "logit-std", 1e-6, 10) ?? 1 };
  else throw new InvalidRequestError(`--timestep-sampling must be uniform or logit_normal, got "${ts}"`);
  if (sampleEvery && (mode === "vae" || mode === "text")) throw new InvalidRequestError(`--sample-every is not supported with --${mode === "vae" ? "vae" : "text-encoder"} (samples need a transformer being trained)`);
  if (mode === "text" && captionDropout > 0) throw new InvalidRequestError("--caption-dropout is a transformer setting: an empty caption has no picture for the text encoder to learn");
  if (mode === "text" && (v["timestep-sampling"] !== undefined || v["logit-mean"] !== undefined || v["logit-std"] !== undefined)) throw new InvalidRequestError("--timestep-sampling, --logit-mean and --logit-std are flow-matching settings; --text-encoder has no timesteps");
  const alignPool = ((v["align-pool"] as string | undefined) ?? "attention") as AlignPooling;
  if (!ALIGN_POOLINGS.includes(alignPool)) throw new InvalidRequestError(`--align-pool must be ${ALIGN_POOLINGS.join(" or ")}, got "${alignPool}"`);
  if (mode !== "text" && v["align-pool"] !== undefined) throw new InvalidRequestError("--align-pool is a --text-encoder setting");
  // Attention pooling masks the padding, so it always pads to the length bucket; mean pooling pads to the maximum unless told.
  // The same two paddings as the transformer's --text-padding: to the maximum length or to the batch's length bucket.
  const alignPadding = ((v["align-padding"] as string | undefined) ?? (alignPool === "mean" ? "max" : "bucket")) as TextPadding;
  if (!TEXT_PADDINGS.includes(alignPadding)) throw new InvalidRequestError(`--align-padding must be ${TEXT_PADDINGS.join(" or ")}, got "${alignPadding}"`);
  if (v["align-padding"] !== undefined && (mode !== "text" || alignPool !== "mean")) {
    throw new InvalidRequestError("--align-padding is a setting of --text-encoder --align-pool mean (attention pooling masks the padding and always pads a batch to its length bucket)");
  }
  const ck = openCheckpoint(v.model as string);
  // The transformer's text padding: the model's own (a model trained with bucket padding has only seen that), unless told.
  const textPadding = ((v["text-padding"] as string | undefined) ?? (mode === "full" || mode === "lora" ? modelDefaults(ck).textPadding : "max")) as TextPadding;
  if (!TEXT_PADDINGS.includes(textPadding)) throw new InvalidRequestError(`--text-padding must be ${TEXT_PADDINGS.join(" or ")}, got "${textPadding}"`);
  if (v["text-padding"] !== undefined && mode !== "full" && mode !== "lora") {
    throw new InvalidRequestError(`--text-padding is a transformer setting (--full or a LoRA); ${mode === "vae" ? "--vae reads no text" : "for --text-encoder see --align-padding"}`);
  }
  if (textPadding === "bucket" && v["multi-caption"]) {
    throw new InvalidRequestError("--text-padding bucket needs one caption per image (a batch shares one text length), so it cannot be used with --multi-caption; use --text-padding max");
  }
  if (mode === "text" && v["checkpoint-activations"]) throw new InvalidRequestError("--checkpoint-activations is not implemented for --text-encoder (its graphs are small: lower --batch-size or --max-sequence-length to save memory)");
  const device = v.device as Device | undefined;
  if (device && !["cpu", "webgpu", "cuda"].includes(device)) throw new InvalidRequestError(`--device must be cpu, webgpu or cuda, got "${device}"`);

  const threads = numOption(v.threads as string | undefined, "threads", 1, 1024);
  if (threads !== undefined && !Number.isInteger(threads)) throw new InvalidRequestError(`--threads must be a whole number, got "${v.threads}"`);

  const matmulAsked = (v.matmul as string | undefined) ?? "fp32";
  if (matmulAsked !== "auto" && !MATMUL_PRECISIONS.includes(matmulAsked as MatmulPrecision)) {
    throw new InvalidRequestError(`--matmul must be ${MATMUL_PRECISIONS.join(", ")} or auto, got "${matmulAsked}"`);
  }
  let matmul = matmulAsked as MatmulPrecision;
  if (matmulAsked === "auto") {
    const auto = autoTrainingMatmul(device);
    matmul = auto.matmul;
    v.matmul = matmul; // train.json records what ran, so --resume on this machine takes the same products
    say(`--matmul auto: ${matmul} (${auto.reason})`);
  }
  const workers = intOption(v.workers as string | undefined, "workers", 1, 256) ?? 1;
  if (workers > 1 && device && device !== "cpu") throw new InvalidRequestError(`--workers is for training on the CPU (each worker a one-core session); with --device ${device} leave it out`);
  if (workers > gradAccum) {
    throw new InvalidRequestError(`--workers ${workers} computes ${workers} micro-batches of a step at once, but a step has --grad-accum ${gradAccum}: ` +
      `give --grad-accum ${workers} (or a multiple) and divide --batch-size by it for the same images per step, e.g. --batch-size ${Math.max(1, Math.floor(batchSize / workers))} --grad-accum ${workers} --workers ${workers}`);
  }
  // The cores shared out: each session gets its share of --threads (default: every core).
  const threadsPerWorker = Math.max(1, Math.floor((threads ?? os.availableParallelism()) / workers));
  if (!v.resume && fs.existsSync(path.join(runDir, "checkpoints")) && fs.readdirSync(path.join(runDir, "checkpoints")).length) {
    throw new InvalidRequestError(`${runDir} already holds checkpoints of a run: continue it with --resume ${runDir}, or choose another --out`);
  }
  fs.mkdirSync(runDir, { recursive: true });
  const toSave = Object.fromEntries(SAVED.filter((k) => v[k] !== undefined).map((k) => [k, v[k]]));
  fs.writeFileSync(settingsFile, JSON.stringify(toSave, null, 2) + "\n");

  let backend: Backend;
  try {
    backend = openTrainingBackend({ device, threads: workers > 1 ? threadsPerWorker : threads, matmul });
  } catch (e) {
    throw new InvalidRequestError((e as Error).message);
  }
  const settings: TaskSettings = {
    mode, model: v.model as string, data: v.data as string, runDir, trigger: v.trigger as string | undefined, multiCaption: !!v["multi-caption"], resolutions, seed,
    batchSize, gradAccum, maxLen, captionDropout, sampling, rank, alpha, targets, loraInit, checkpointActivations: !!v["checkpoint-activations"],
    klWeight, colorWeight, chromaWeight, posterior, freeze, alignPool, alignPadToMax: alignPadding === "max", textPadding,
  };
  // Data, trainer and task (src/train/setup.ts; --workers builds the same in every worker thread).
  const setup = await setupTask(settings, backend, log);
  const { images, samples, trainSamples, vaePixels, vaeTrainsEncoder, textParams, textLengths } = setup;
  const buckets = new Map<string, number>();
  for (const s of samples) buckets.set(`${s.bucket.width}×${s.bucket.height}`, (buckets.get(`${s.bucket.width}×${s.bucket.height}`) ?? 0) + 1);
  const nCaptions = images.reduce((n, img) => n + img.captions.length, 0);
  log(`data: ${images.length} image(s) in ${v.data}${setup.skipped ? ` (${setup.skipped} skipped)` : ""}, ${samples.length} sample(s)` +
    `${nCaptions > images.length ? `, ${nCaptions} captions (--multi-caption)` : ""}; ` +
    `buckets ${[...buckets].map(([b, n]) => `${b}: ${n}`).join(", ")}${setup.uncaptioned ? `; ${setup.uncaptioned} without a .txt caption` : ""}`);

  const identity: RunIdentity = {
    model: path.resolve(ck.transformer.weights), mode, seed, resolution: resolutions.join(","), batch_size: batchSize, grad_accum: gradAccum,
    ...(emaDecay !== undefined ? { ema_decay: emaDecay } : {}),
    ...(mode === "lora" ? { rank, alpha, targets } : {}),
    ...((mode === "lora" || mode === "full") && textPadding === "bucket" ? { text_padding: textPadding } : {}),
    ...(mode === "vae" ? { vae: path.resolve(ck.vae.weights), ...(freeze.length ? { freeze } : {}) } : {}),
    ...(mode === "text" ? { text_encoder: path.resolve(ck.textEncoder.weights), max_sequence_length: maxLen, ...(alignPool !== "attention" ? { align_pool: alignPool } : {}), ...(alignPool === "mean" && alignPadding === "bucket" ? { align_padding: alignPadding } : {}) } : {}),
  };

  let task: TrainTask = setup.task;
  let release = setup.release;
  let trainableCount = 0;
  const stop = { stop: false };
  for (const p of task.params.values()) trainableCount += p.length;

  // Memory plan, before the first step.
  const largest = samples.reduce((a, s) => (s.bucket.width * s.bucket.height > a.bucket.width * a.bucket.height ? s : a), samples[0]);
  const plan = planTrainMemory(ck, transformerConfig(ck), {
    trainableParams: trainableCount, batch: batchSize, width: largest.bucket.width, height: largest.bucket.height,
    textLength: maxLen, checkpointActivations: !!v["checkpoint-activations"], vae: mode === "vae", ema: emaDecay !== undefined, processBytes: process.memoryUsage().rss, encoded: true, textEncoder: mode === "text" ? readQwen3Config(ck.textEncoder.config!) : undefined, textLengths, workers,
    jsHeapBytes: Math.max(0, trainingHeapBytes() - process.memoryUsage().heapUsed),
  });
  log(`memory plan (${mode}, ${(trainableCount / 1e6).toFixed(2)} M trainable parameters):\n${plan.lines.join("\n")}`);
  if (plan.neededBytes > plan.availableBytes && !v.force) {
    await release();
    throw new InvalidRequestError(`this run needs about ${(plan.neededBytes / 2 ** 30).toFixed(1)} GiB more but ${(plan.availableBytes / 2 ** 30).toFixed(1)} GiB is free: ` +
      `use a smaller --resolution or --batch-size, --checkpoint-activations${workers > 1 ? ", fewer --workers" : ""}, or --force to try anyway`);
  }
  if (workers > 1) {
    log(`starting ${workers - 1} worker thread(s): ${workers} micro-batches at once, ${threadsPerWorker} thread(s) each; each worker reads the data and builds the graph again`);
    let parallel: ParallelTask;
    try {
      parallel = await ParallelTask.start(setup.task, settings, workers, { threads: threadsPerWorker, device, matmul });
    } catch (e) {
      await setup.release();
      throw e;
    }
    task = parallel;
    release = async () => {
      await parallel.release();
      await setup.release();
    };
  }

  // Ctrl-C: finish the step, save a resumable checkpoint; a second Ctrl-C quits at once.
  const onSigint = () => {
    if (stop.stop) process.exit(130);
    stop.stop = true;
    process.stderr.write("\nstopping after this step to save a resumable checkpoint (Ctrl-C again to quit now)\n");
  };
  process.on("SIGINT", onSigint);

  const lossPng = path.join(runDir, "loss.png");
  const plotter = new LossPlotter(lossPng, `${mode} loss, ${path.basename(runDir)}`, (m) => process.stderr.write(`flux2 train: ${m}\n`));
  const samplesWritten: string[] = [];
  const started = Date.now();
  let firstStep: number | null = null;
  let lastPlot = 0;
  // Samples show what the run would export: the moving average when there is one.
  let sampleWeights = task.params;
  const sampleFn = async (step: number) => samplesWritten.push(...await writeSamples(ck, runDir, sampleWeights, mode, { rank, alpha, targets }, step, {
    prompts: (v["sample-prompt"] as string[] | undefined) ?? [images[0].caption], steps: sampleSteps, seed, size: largest.bucket, maxSequenceLength: maxLen, textPadding, backend, log,
  }));
  let result: LoopResult;
  try {
    result = await trainLoop(task, {
      steps, gradAccum, maxGradNorm, adam: { betas: adamBetas, eps: adamEps, weightDecay },
      schedule: { scheduler: scheduler as LrScheduler, lr, warmupSteps: warmup, totalSteps: steps },
      runDir, saveEvery, keepCheckpoints: keep, identity, parallel: workers, dataFingerprint: dataFingerprint(images, trainSamples), resume: v.resume as string | undefined, stopSignal: stop, log,
      emaDecay, onEma: (ema) => { sampleWeights = ema; },
      onStep: async (s: StepLog) => {
        firstStep ??= s.step - 1;
        if (json) console.log(JSON.stringify({ step: s.step, loss: s.loss, lr: s.lr }));
        progress(s, steps, started, firstStep, log);
        // Redrawn every 15 s: sharp's rasterising takes CPU from the training threads (redrawn every
        // 2 s, it was 4% of the main thread's time in a --cpu-prof of 60 flux2-mini steps, on top
        // of libvips' own threads); the end of the run always draws.
        if (Date.now() - lastPlot > 15_000) {
          lastPlot = Date.now();
          plotter.update(s.losses);
        }
        if (sampleEvery && s.step % sampleEvery === 0) await sampleFn(s.step);
      },
    });
  } catch (e) {
    await release();
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
  }
  const plotted = await plotter.finish(result.losses);
  // A redraw stuck inside sharp keeps a libuv work item, and with it the process, alive after
  // the command has finished; leave once the output below is written.
  if (!plotted) setTimeout(() => process.exit(), 2000).unref();

  if (result.status === "nan") {
    await release();
    process.stderr.write(`flux2 train: ${result.message}\n`);
    if (json) console.log(JSON.stringify({ status: "nan", step: result.step, checkpoint: result.lastCheckpoint, loss_curve: lossPng, message: result.message }));
    return 1;
  }
  if (result.status === "interrupted") {
    await release();
    say(`${result.message}; continue with: flux2 train --out ${runDir} --resume ${runDir}`);
    if (json) console.log(JSON.stringify({ status: "interrupted", step: result.step, checkpoint: result.lastCheckpoint, loss_curve: lossPng }));
    return 130;
  }

  // Outputs.
  const outputs: Record<string, unknown> = { status: "done", step: result.step, checkpoint: result.lastCheckpoint, loss_curve: lossPng, ...(result.ema ? { ema_decay: emaDecay } : {}) };
  // With --ema-decay the exported weights are the moving average (the checkpoint keeps the raw ones).
  const trained = result.ema ?? task.params;
  if (mode === "lora") {
    const file = path.join(runDir, "lora.safetensors");
    saveLora(file, trained, { rank, alpha, targets }, format);
    outputs.lora = file;
  } else if (mode === "full") {
    saveModelFolder(path.join(runDir, "model"), ck.source, "transformer", trained, ck.transformer.weights, { maxSequenceLength: maxLen, textPadding });
    outputs.model = path.join(runDir, "model");
  } else if (mode === "text") {
    saveModelFolder(path.join(runDir, "model"), ck.source, "text_encoder", textParams(result.ema), ck.textEncoder.weights, { maxSequenceLength: maxLen });
    outputs.model = path.join(runDir, "model");
  } else {
    saveModelFolder(path.join(runDir, "model"), ck.source, "vae", trained, ck.vae.weights);
    outputs.model = path.join(runDir, "model");
    if (vaeTrainsEncoder) {
      // The trained encoder has moved the latent space: new batch-norm statistics over the data.
      const st = await writeLatentStats(backend, path.join(runDir, "model", "vae"), samples.map((s, i) => ({ data: vaePixels[i], width: s.bucket.width, height: s.bucket.height })));
      log(`latent batch-norm statistics recomputed over ${samples.length} image(s), ${st.count} latent positions`);
    } else {
      // A frozen encoder leaves the latent space where it was: the base's statistics stay, bit for
      // bit, so a transformer trained on the base's latents still fits this VAE.
      log("latent batch-norm statistics kept from the base (the encoder was frozen)");
    }
  }
  if (sampleEvery && result.step % sampleEvery !== 0) await sampleFn(result.step);
  await release();
  if (samplesWritten.length) outputs.samples = samplesWritten;
  const first = result.losses.slice(0, 10), last = result.losses.slice(-10);
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);
  say(`done: ${result.step} steps; loss ${mean(first).toFixed(4)} (first ${first.length}) → ${mean(last).toFixed(4)} (last ${last.length}); ` +
    `${outputs.lora ?? outputs.model}, loss curve ${lossPng}`);
  if (json) console.log(JSON.stringify(outputs));
  return 0;
}

function progress(s: StepLog, total: number, started: number, firstStep: number, log: (s: string) => void): void {
  const done = s.step - firstStep;
  const secs = (Date.now() - started) / 1000;
  const rate = done / Math.max(1e-9, secs);
  const eta = (total - s.step) / Math.max(1e-9, rate);
  const smooth = smoothed([...s.losses]).at(-1)!;
  log(`step ${s.step}/${total}  loss ${s.loss.toFixed(4)} (smoothed ${smooth.toFixed(4)})  lr ${s.lr.toExponential(2)}  grad norm ${s.gradNorm.toPrecision(3)}  ` +
    `${rate >= 1 ? `${rate.toFixed(2)} steps/s` : `${(1 / rate).toFixed(1)} s/step`}  ETA ${formatDuration(eta)}`);
}

/** Hash of what the batch order depends on: each sample's file, caption, repeats and bucket. */
function dataFingerprint(images: DataImage[], samples: Sample[]): string {
  const h = createHash("sha256");
  h.update(JSON.stringify(samples.map((s) => {
    const img = images[s.image];
    return [img.file, captionIdentity(img), img.repeats, s.bucket.width, s.bucket.height];
  })));
  return h.digest("hex").slice(0, 16);
}

/** Sample images with the current weights: the LoRA (or model) written to RUN_DIR/samples/, then the pipeline. */
async function writeSamples(ck: Checkpoint, runDir: string, params: Map<string, Float32Array>, mode: TrainModeName, lora: { rank: number; alpha: number; targets: string[] }, step: number,
                            o: { prompts: string[]; steps?: number; seed: number; size: Sample["bucket"]; maxSequenceLength: number; textPadding: TextPadding; backend: Backend; log: (s: string) => void }): Promise<string[]> {
  const dir = path.join(runDir, "samples");
  fs.mkdirSync(dir, { recursive: true });
  let pipe: Flux2Pipeline;
  const tag = `step-${String(step).padStart(6, "0")}`;
  if (mode === "lora") {
    const file = path.join(dir, "current_lora.safetensors");
    saveLora(file, params, lora, "peft");
    pipe = loadPipeline(ck.source, { backend: o.backend, loras: [{ file, strength: 1 }] });
  } else {
    const model = path.join(dir, "current_model");
    saveModelFolder(model, ck.source, "transformer", params, ck.transformer.weights);
    pipe = loadPipeline(model, { backend: o.backend });
  }
  const files: string[] = [];
  try {
    for (const [i, prompt] of o.prompts.entries()) {
      // At the text length being trained, not the folder's default: the model has seen no other.
      const r = await pipe.generate({ prompt, width: o.size.width, height: o.size.height, steps: o.steps, seed: o.seed + i, maxSequenceLength: o.maxSequenceLength, textPadding: o.textPadding });
      const file = path.join(dir, `${tag}-${i}.png`);
      const img = r.images[0];
      fs.writeFileSync(file, await encodeImage(img.rgb, img.width, img.height, "png", `${prompt}\nSteps: ${r.steps}, Seed: ${o.seed + i}, training step ${step}`));
      files.push(file);
    }
  } finally {
    await pipe.release();
  }
  o.log(`samples at step ${step}: ${files.join(", ")}`);
  return files;
}

