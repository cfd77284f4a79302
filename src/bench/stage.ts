// One benchmark stage, run alone in a fresh process (src/bench/stage_main.ts) so that its peak
// resident memory (VmHWM) is its own: load the component the way the pipeline does, run it,
// report seconds, FLOPs and memory.
//
//   text_encode       Qwen3 encoder, one prompt padded to `textLength` tokens (hidden states 9/18/27)
//   transformer_step  one transformer forward at `resolution`² with `textLength` text tokens
//   vae_decode        VAE decode of (1, 32, res/8, res/8) latents
//   quantize          write the int8/int4 cache for the model (so the stages above only load it)
//   generate          the whole pipeline in one process (text → steps → decode), with the
//                     resident memory after every stage: shows that stages release memory
//   gemm              the float32 GEMM peak (an ORT MatMul loop)
//   train_step        one rank-16 LoRA training step (forward + backward, default klein LoRA targets) at
//                     `resolution`² with `textLength` text tokens (src/train/step.ts), optimizer excluded

import * as fs from "node:fs";
import * as path from "node:path";
import { OrtBackend, type OrtBackendOptions } from "../backend/ort.js";
import { WeightSet } from "../io/safetensors.js";
import { Graph, dataSource } from "../onnx/graph.js";
import { Flux2Transformer, readTransformerConfig } from "../models/transformer.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { KLEIN_TEXT_LAYERS, Qwen3Encoder, Qwen3Weights, readQwen3Config } from "../models/qwen3.js";
import { Flux2Vae, readVaeConfig } from "../models/vae.js";
import { latentIds, textIds } from "../pipeline/latents.js";
import { PromptTokenizer } from "../text/tokenizer.js";
import { QUANT_KINDS, drift as driftOf, specFor, type QuantKind, type QuantSpec } from "../models/quantized/blockwise.js";
import type { AccuracyLevel } from "../models/quantized/format.js";
import { quantizeDecoderAtLoad, quantizeTransformerAtLoad } from "../quant/quantize.js";
import { decoderFlops, transformerFlops, vaeDecodeFlops } from "./flops.js";
import { FastNormal, randomTensor } from "./rng.js";
import { median, timed } from "./timer.js";
import { DEFAULT_LORA_TARGETS, TransformerTrainer } from "../train/step.js";
import { measureKernels, type KernelResult } from "./kernels.js";
import { loadPipeline } from "../loaders/pretrained.js";
import { MemorySampler } from "./mem_sampler.js";
import { measureAttention, type AttentionResult } from "./attention.js";

/** Prefix of the result line a stage process prints on stdout. */
export const RESULT_PREFIX = "FLUX2_BENCH_RESULT ";

export type StageName = "text_encode" | "transformer_step" | "vae_decode" | "quantize" | "generate" | "gemm" | "drift" | "kernels" | "attention" | "train_step";
export type WeightsKind = "fp32" | "bf16" | QuantKind;

export interface StageRequest {
  stage: StageName;
  /** diffusers folder */
  model: string;
  weights: WeightsKind;
  /** square output side in pixels */
  resolution: number;
  textLength: number;
  /** timed runs after one warm-up run (0: report the first, cold run itself); the median is reported */
  repeats: number;
  threads?: number;
  blockSize?: number;
  accuracyLevel?: AccuracyLevel;
  ort?: Pick<OrtBackendOptions, "memArena" | "memPattern" | "prepacking" | "config">;
  /** write ORT's optimized graph of the stage's session here (fusion check) */
  optimizedModelPath?: string;
  /** ORT profile file prefix */
  profilePrefix?: string;
  /** denoising steps (generate) */
  steps?: number;
  /** weights compared with `weights` (drift) */
  compare?: WeightsKind[];
  /** components the quantize stage prepares (default both) */
  components?: ("transformer" | "text_encoder")[];
  /** [M, N, K] of the kernels stage */
  kernelShape?: [number, number, number];
  /** [L, H, Dh] of the attention stage */
  attentionShape?: [number, number, number];
  /** GEMM size (gemm) */
  gemmSize?: number;
  /**
   * Measure the float32 GEMM rate (this size³, best of 3) in the stage's process right before its
   * timed runs, so each stage can be compared with the peak under the same machine load.
   */
  calibrate?: number;
  /** train_step: recompute each block in the backward (activation checkpointing) */
  checkpointActivations?: boolean;
}

export interface StageResult {
  stage: StageName;
  weights: WeightsKind;
  resolution: number;
  /** median seconds of one run (forward / encode / decode) */
  seconds: number;
  load_seconds: number;
  /** work of one run, in GFLOP */
  gflop: number;
  /** achieved GFLOP/s */
  gflops: number;
  /** VmHWM: counts a file page once per mapping (src/bench/mem_sampler.ts) */
  peak_rss_bytes: number;
  /** sampled peak of anonymous memory (not the mapped weights) */
  peak_anon_bytes?: number;
  /** sampled peak PSS: each mapped page once, i.e. what the stage takes from the machine */
  peak_pss_bytes?: number;
  /** the PSS sampler's own kernel time: smaps_rollup reads and the seconds they took (src/bench/mem_sampler.ts) */
  pss_reads?: number;
  pss_read_seconds?: number;
  rss_after_load_bytes: number;
  tokens?: number;
  runs: number[];
  /** the cold first run (the weights paged in), before the timed runs */
  first_run_seconds?: number;
  /** GEMM GFLOP/s measured just before the timed runs (calibrate) */
  gemm_gflops_at_stage?: number;
  /** drift of one transformer forward against float32 weights, per weights kind (drift) */
  drift?: { weights: WeightsKind; cosine: number; max_abs: number; rel_l2: number; rel_max: number; seconds: number }[];
  /** GEMM rates of each Linear kernel at one shape (kernels) */
  kernels?: KernelResult[];
  /** speed and accuracy of each attention variant (attention) */
  attention?: AttentionResult[];
  /** per-stage resident memory (generate), and the seconds since the process began the generation */
  memory?: { stage: string; rss_bytes: number; hwm_bytes: number; seconds?: number }[];
  note?: string;
}

export function procStatus(): { rss: number; hwm: number; anon: number; file: number } {
  const s = fs.readFileSync("/proc/self/status", "utf8");
  const kb = (k: string) => Number(s.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM"), anon: kb("RssAnon"), file: kb("RssFile") };
}

export function quantSpecOf(r: StageRequest): QuantSpec | null {
  return (QUANT_KINDS as string[]).includes(r.weights) ? specFor(r.weights as QuantKind, r.blockSize) : null;
}

function backendOf(r: StageRequest): OrtBackend {
  return new OrtBackend({
    threads: r.threads, ...r.ort, foldWeightConversions: r.weights === "fp32",
    optimizedModelPath: r.optimizedModelPath, profilePrefix: r.profilePrefix,
  });
}

let calibration: number | undefined;

let firstRun: number | undefined;

/**
 * The first run of a session is cold (weights paged in from the mapped files, buffers faulted
 * in); a generation runs the transformer once per step, so its steady state is what a step
 * costs. First run reported apart, then `repeats` timed runs.
 */
async function repeat(r: StageRequest, fn: () => Promise<unknown>): Promise<number[]> {
  if (r.calibrate) calibration = (await gemmPeak({ ...r, stage: "gemm", gemmSize: r.calibrate, repeats: 3, calibrate: undefined }, true)).gflops;
  firstRun = (await timed(fn))[1];
  if (r.repeats <= 0) return [firstRun];
  const runs: number[] = [];
  for (let i = 0; i < r.repeats; i++) runs.push((await timed(fn))[1]);
  return runs;
}

function result(r: StageRequest, runs: number[], load: number, flop: number, afterLoad: number, extra: Partial<StageResult> = {}): StageResult {
  const seconds = median(runs);
  return {
    stage: r.stage, weights: r.weights, resolution: r.resolution, seconds, load_seconds: load,
    gflop: flop / 1e9, gflops: flop / 1e9 / seconds, peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: afterLoad, runs,
    ...(calibration ? { gemm_gflops_at_stage: calibration } : {}), ...(firstRun !== undefined ? { first_run_seconds: firstRun } : {}), ...extra,
  };
}

export async function runStage(r: StageRequest): Promise<StageResult> {
  const sampler = new MemorySampler();
  const res = await runStageUnsampled(r).catch(async (e) => {
    await sampler.stop();
    throw e;
  });
  const peaks = await sampler.stop();
  return peaks.pssBytes ? { ...res, peak_anon_bytes: peaks.anonBytes, peak_pss_bytes: peaks.pssBytes, pss_reads: peaks.pssReads, pss_read_seconds: +peaks.pssReadSeconds.toFixed(3) } : res;
}

async function runStageUnsampled(r: StageRequest): Promise<StageResult> {
  switch (r.stage) {
    case "gemm": return gemmPeak(r);
    case "quantize": return prepareQuantized(r);
    case "text_encode": return textEncode(r);
    case "transformer_step": return transformerStep(r);
    case "vae_decode": return vaeDecode(r);
    case "generate": return generate(r);
    case "drift": return transformerDrift(r);
    case "train_step": return trainStep(r);
    case "kernels": return kernelRates(r);
    case "attention": return attentionRates(r);
  }
}

/**
 * One transformer forward with float32 math on the stored weights (the reference), then with
 * each of `compare` (int8 / int4 at the request's accuracy level), on the same random inputs.
 */
async function transformerDrift(r: StageRequest): Promise<StageResult> {
  const dir = path.join(r.model, "transformer");
  const config = readTransformerConfig(path.join(dir, "config.json"));
  const inp = transformerInputs(config, r.resolution, r.textLength);
  const run = async (weights: WeightsKind): Promise<[Float32Array, number]> => {
    const w = new TransformerWeights(WeightSet.open(dir), "diffusers");
    const spec = quantSpecOf({ ...r, weights });
    if (spec) quantizeTransformerAtLoad(w, config, { spec, accuracyLevel: r.accuracyLevel });
    const m = await Flux2Transformer.load(backendOf({ ...r, weights }), config, w);
    const [out, seconds] = await timed(() => m.forward(inp));
    await m.release();
    w.set.close();
    return [out.data as Float32Array, seconds];
  };
  const [ref] = await run(r.weights);
  const drift: NonNullable<StageResult["drift"]> = [];
  for (const weights of r.compare ?? ["int8", "int8-block", "int4"]) {
    const [y, seconds] = await run(weights);
    const d = driftOf(y, ref);
    drift.push({ weights, cosine: d.cosine, max_abs: d.maxAbs, rel_l2: d.relL2, rel_max: d.relMax, seconds });
    process.stderr.write(`drift ${weights} vs ${r.weights}: cosine ${d.cosine.toFixed(6)}, max |err| ${d.maxAbs.toExponential(2)}, relative L2 ${d.relL2.toExponential(2)}\n`);
  }
  return {
    stage: "drift", weights: r.weights, resolution: r.resolution, seconds: 0, load_seconds: 0, gflop: 0, gflops: 0,
    peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: [], drift,
  };
}

async function textEncode(r: StageRequest): Promise<StageResult> {
  const te = path.join(r.model, "text_encoder");
  const config = readQwen3Config(path.join(te, "config.json"));
  const spec = quantSpecOf(r);
  const [enc, load] = await timed(async () => {
    const weights = new Qwen3Weights(WeightSet.open(te));
    if (spec) quantizeDecoderAtLoad(weights, config, { spec, accuracyLevel: r.accuracyLevel });
    return Qwen3Encoder.load(backendOf(r), config, weights);
  });
  const afterLoad = procStatus().rss;
  const tok = await PromptTokenizer.load(path.join(r.model, "tokenizer"));
  const e = tok.encode(["a lighthouse on a rocky coast at sunset, oil painting"], r.textLength);
  const runs = await repeat(r, () => enc.promptEmbeds(e.inputIds, e.attentionMask, e.batch, e.length));
  const flop = decoderFlops(config, Math.max(...KLEIN_TEXT_LAYERS), e.length).total;
  const res = result(r, runs, load, flop, afterLoad, { tokens: e.length });
  await enc.release();
  return res;
}

export function transformerInputs(c: { in_channels: number; joint_attention_dim: number }, resolution: number, textLength: number) {
  const h = resolution / 16, w = resolution / 16;
  return {
    hidden: randomTensor(1, [1, h * w, c.in_channels]),
    text: randomTensor(2, [1, textLength, c.joint_attention_dim]),
    timestep: [1.0], imgIds: latentIds(1, h, w).data, txtIds: textIds(1, textLength).data,
  };
}

async function transformerStep(r: StageRequest): Promise<StageResult> {
  const dir = path.join(r.model, "transformer");
  const config = readTransformerConfig(path.join(dir, "config.json"));
  const spec = quantSpecOf(r);
  const [model, load] = await timed(async () => {
    const weights = new TransformerWeights(WeightSet.open(dir), "diffusers");
    if (spec) quantizeTransformerAtLoad(weights, config, { spec, accuracyLevel: r.accuracyLevel });
    return Flux2Transformer.load(backendOf(r), config, weights);
  });
  const afterLoad = procStatus().rss;
  const inp = transformerInputs(config, r.resolution, r.textLength);
  const runs = await repeat(r, async () => {
    const out = await model.forward(inp);
    const d = out.data as Float32Array;
    for (let i = 0; i < d.length; i += 997) if (!Number.isFinite(d[i])) throw new Error("transformer output is not finite");
  });
  const img = (r.resolution / 16) ** 2;
  const res = result(r, runs, load, transformerFlops(config, img, r.textLength).total, afterLoad, { tokens: img + r.textLength });
  await model.release();
  return res;
}

/**
 * One LoRA training step (rank 16, alpha 16, the klein script's targets): loss and gradients of
 * every LoRA tensor for one image at resolution², random latents, text, noise and σ. The work
 * counted is twice the forward's FLOPs (the forward plus the input-gradient matmuls of the
 * backward; frozen weights get no weight gradient), so "of peak" compares with the forward stage.
 */
async function trainStep(r: StageRequest): Promise<StageResult> {
  if (r.weights !== "bf16" && r.weights !== "fp32") throw new Error(`train_step: weights must be bf16 or fp32 (training on ${r.weights} codes is not supported)`);
  const dir = path.join(r.model, "transformer");
  const config = readTransformerConfig(path.join(dir, "config.json"));
  const [trainer, load] = await timed(() => TransformerTrainer.open(backendOf(r), dir, path.join(dir, "config.json"),
    { kind: "lora", targets: [...DEFAULT_LORA_TARGETS], rank: 16, alpha: 16 }, { checkpointActivations: !!r.checkpointActivations, seed: 0 }));
  const afterLoad = procStatus().rss;
  const h = r.resolution / 16, C = config.in_channels;
  const batch = {
    x0: randomTensor(11, [1, C, h, h]).data, shape: [1, C, h, h] as [number, number, number, number],
    embeds: randomTensor(12, [1, r.textLength, config.joint_attention_dim]).data, embedShape: [1, r.textLength, config.joint_attention_dim] as [number, number, number],
    noise: randomTensor(13, [1, C, h, h]).data, sigmas: Float32Array.of(0.5),
  };
  const runs = await repeat(r, async () => {
    const out = await trainer.lossAndGrads(batch);
    if (!Number.isFinite(out.loss)) throw new Error(`train_step: loss is ${out.loss}`);
  });
  const img = h * h;
  let trainable = 0;
  for (const p of trainer.params.values()) trainable += p.length;
  const res = result(r, runs, load, 2 * transformerFlops(config, img, r.textLength).total, afterLoad, {
    tokens: img + r.textLength, note: `${(trainable / 1e6).toFixed(1)} M LoRA parameters${r.checkpointActivations ? ", activation checkpointing" : ""}; GFLOP = 2 × forward`,
  });
  await trainer.release();
  return res;
}

async function vaeDecode(r: StageRequest): Promise<StageResult> {
  const dir = path.join(r.model, "vae");
  const config = readVaeConfig(path.join(dir, "config.json"));
  const [vae, load0] = await timed(() => Flux2Vae.fromFiles(backendOf(r), dir, path.join(dir, "config.json")));
  const f = 2 ** (config.block_out_channels.length - 1);
  const h = r.resolution / f, w = r.resolution / f;
  const z = randomTensor(3, [1, config.latent_channels, h, w]);
  // The decode session is built on first use: a 1-pixel-latent decode builds it, and counts as load.
  const [, build] = await timed(() => vae.decode(randomTensor(4, [1, config.latent_channels, 1, 1])));
  const afterLoad = procStatus().rss;
  const runs = await repeat(r, () => vae.decode(z));
  const res = result(r, runs, load0 + build, vaeDecodeFlops(config, h, w).total, afterLoad);
  await vae.release();
  return res;
}

async function prepareQuantized(r: StageRequest): Promise<StageResult> {
  const spec = quantSpecOf(r);
  if (!spec) throw new Error(`quantize: weights must be int8 or int4, not ${r.weights}`);
  let last = 0;
  const progress = (what: string) => (done: number, total: number) => {
    const pct = Math.floor((100 * done) / total);
    if (pct >= last + 10 || done === total) {
      last = pct;
      process.stderr.write(`quantize ${what} ${r.weights}: ${pct}%\n`);
    }
  };
  const [, seconds] = await timed(async () => {
    const tdir = path.join(r.model, "transformer");
    const tw = new TransformerWeights(WeightSet.open(tdir), "diffusers");
    last = 0;
    if (!r.components || r.components.includes("transformer")) quantizeTransformerAtLoad(tw, readTransformerConfig(path.join(tdir, "config.json")), { spec, progress: progress("transformer") });
    if (r.components && !r.components.includes("text_encoder")) return;
    const te = path.join(r.model, "text_encoder");
    const qw = new Qwen3Weights(WeightSet.open(te));
    last = 0;
    quantizeDecoderAtLoad(qw, readQwen3Config(path.join(te, "config.json")), { spec, progress: progress("text encoder") });
  });
  return { stage: "quantize", weights: r.weights, resolution: 0, seconds, load_seconds: 0, gflop: 0, gflops: 0, peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: [seconds] };
}

async function generate(r: StageRequest): Promise<StageResult> {
  const spec = quantSpecOf(r);
  const memory: NonNullable<StageResult["memory"]> = [];
  const t0 = performance.now();
  const mark = (stage: string) => {
    const s = procStatus();
    memory.push({ stage, rss_bytes: s.rss, hwm_bytes: s.hwm, seconds: (performance.now() - t0) / 1000 });
    process.stderr.write(`generate: ${stage}: rss ${(s.rss / 2 ** 30).toFixed(2)} GiB, peak ${(s.hwm / 2 ** 30).toFixed(2)} GiB\n`);
  };
  mark("start");
  const pipe = loadPipeline(r.model, { backend: backendOf(r), quantize: spec ? { spec, accuracyLevel: r.accuracyLevel } : undefined });
  const [, seconds] = await timed(() => pipe.generate({
    prompt: "a lighthouse on a rocky coast at sunset, oil painting", width: r.resolution, height: r.resolution,
    steps: r.steps ?? 4, seed: 0, maxSequenceLength: r.textLength,
    onStage: (s) => mark(`before ${s}`),
    onStep: (info) => mark(`after step ${info.step}`),
  }));
  mark("end");
  await pipe.release();
  mark("released");
  return {
    stage: "generate", weights: r.weights, resolution: r.resolution, seconds, load_seconds: 0, gflop: 0, gflops: 0,
    peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: [seconds], memory,
  };
}

/**
 * float32 GEMM peak: n×n×n MatMuls with a constant (prepacked) B, in a loop, for n = gemmSize and
 * (unless it is small) 2·gemmSize; the best rate of any run. Large GEMMs run a little faster
 * than 2048³ on this kind of machine, and a peak the model's own GEMMs exceed would say little.
 */
async function gemmPeak(r: StageRequest, single = false): Promise<StageResult> {
  const n0 = r.gemmSize ?? 2048;
  const sizes = n0 >= 2048 && !single ? [n0, 2 * n0] : [n0];
  let best = { gflops: 0, seconds: 0, n: n0 };
  const all: number[] = [];
  let load = 0;
  for (const n of sizes) {
    const g = new Graph("gemm");
    const a = g.input("a", "F32", [n, n]);
    const b = new Float32Array(n * n);
    new FastNormal(7).fill(b, 1 / Math.sqrt(n));
    g.output(g.matmul(a, g.weight("b", dataSource(b, "F32", [n, n]))), "y", "F32", [n, n]);
    const [session, l] = await timed(() => new OrtBackend({ threads: r.threads }).createSession(g));
    load += l;
    const x = randomTensor(5, [n, n]);
    const runs = await repeat({ ...r, repeats: Math.max(3, n > n0 ? Math.ceil(r.repeats / 4) : r.repeats), calibrate: undefined }, () => session.run({ a: x }));
    await session.release();
    const t = Math.min(...runs);
    const gflops = (2 * n * n * n) / 1e9 / t;
    all.push(...runs);
    if (gflops > best.gflops) best = { gflops, seconds: t, n };
  }
  const flop = 2 * best.n ** 3;
  return {
    stage: "gemm", weights: "fp32", resolution: best.n, seconds: best.seconds, load_seconds: load, gflop: flop / 1e9, gflops: best.gflops,
    peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: all, note: `best run of ${sizes.map((n) => `${n}³`).join(" and ")} MatMuls`,
  };
}

/** The GEMM rate of every Linear kernel at one shape, interleaved (src/bench/kernels.ts). */
async function kernelRates(r: StageRequest): Promise<StageResult> {
  const [M, N, K] = r.kernelShape ?? [1536, 9216, 3072];
  const kernels = await measureKernels(M, N, K, { rounds: Math.max(1, r.repeats), threads: r.threads });
  for (const k of kernels) process.stderr.write(`kernel ${k.kernel} ${M}×${K}·${K}×${N}: ${k.gflops.toFixed(1)} GFLOP/s (best of ${k.runs.length})\n`);
  const best = kernels.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return {
    stage: "kernels", weights: r.weights, resolution: 0, seconds: best.seconds, load_seconds: 0, gflop: (2 * M * N * K) / 1e9, gflops: best.gflops,
    peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: best.runs, kernels,
  };
}

/** Each attention variant ORT's CPU provider offers, at one shape (src/bench/attention.ts). */
async function attentionRates(r: StageRequest): Promise<StageResult> {
  const [L, H, Dh] = r.attentionShape ?? [4608, 24, 128];
  const attention = await measureAttention(L, H, Dh, { rounds: Math.max(1, r.repeats), threads: r.threads });
  for (const a of attention) {
    process.stderr.write(a.error ? `attention ${a.variant}: not run (${a.error})\n`
      : `attention ${a.variant} L=${L}: ${a.seconds!.toFixed(3)} s, ${a.gflops!.toFixed(1)} GFLOP/s, cosine vs mha_fp32 ${a.cosine?.toFixed(6)}, max |err| ${a.max_abs_error?.toExponential(2)}\n`);
  }
  const ran = attention.filter((a) => a.seconds !== undefined);
  const best = ran.reduce((a, b) => (b.gflops! > a.gflops! ? b : a), ran[0]);
  return {
    stage: "attention", weights: r.weights, resolution: r.resolution, seconds: best?.seconds ?? 0, load_seconds: 0,
    gflop: (4 * L * L * H * Dh) / 1e9, gflops: best?.gflops ?? 0, peak_rss_bytes: procStatus().hwm, rss_after_load_bytes: 0, runs: best?.runs ?? [], attention,
  };
}
