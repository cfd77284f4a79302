// `flux2 bench`: speed and memory of FLUX.2 [klein] at real shapes on this machine.
//
// Every measurement runs in its own child process (src/bench/stage_main.ts), so each stage's
// peak resident memory (VmHWM) is its own and stages do not warm each other's caches. The
// model is a random-weight checkpoint with the real shapes (src/bench/make_model.ts), written
// once into $FLUX2_CACHE/random/. Quantized variants are prepared once ($FLUX2_CACHE/quant/).

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runForJson } from "./child.js";
import { fileURLToPath } from "node:url";
import { WeightSet } from "../io/safetensors.js";
import { buildTransformerGraph, readTransformerConfig } from "../models/transformer.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { QUANT_KINDS, specFor, type QuantKind } from "../models/quantized/blockwise.js";
import { quantizeTransformerAtLoad } from "../quant/quantize.js";
import { MODEL_SPECS, defaultModelDir, makeRandomModel, type BenchModelSize } from "./make_model.js";
import { FUSED_OPS, optimizedOpCounts } from "./onnx_ops.js";
import { RESULT_PREFIX, type StageName, type StageRequest, type StageResult, type WeightsKind } from "./stage.js";
import { chooseWeights, cpuFeatures, type CpuFeatures, type WeightsChoice } from "../backend/cpu.js";
import type { KernelResult } from "./kernels.js";
import type { AttentionResult } from "./attention.js";
import { REFERENCE_BLAS_HINT, TORCH_INSTALL_HINT, findTorchPython, isReferenceBlas, torchMatmul, torchStep, type TorchDtype, type TorchStepResult } from "./torch.js";

export type MeasuredStage = "text_encode" | "transformer_step" | "vae_decode" | "train_step";
export const MEASURED_STAGES: MeasuredStage[] = ["text_encode", "transformer_step", "vae_decode", "train_step"];

export interface BenchOptions {
  quick: boolean;
  variant: BenchModelSize;
  dir?: string;
  weights: WeightsKind[];
  resolutions: number[];
  stages: MeasuredStage[];
  textLength: number;
  repeats: number;
  threads?: number;
  /** Also run a whole generation in one process at this resolution (per-stage memory). */
  generation?: { resolution: number; steps: number; weights: WeightsKind[] };
  /** Also run the same transformer step in PyTorch (src/bench/torch_step.py), interleaved. */
  compareTorch?: TorchDtype[];
  /** Time each Linear kernel at one GEMM shape (src/bench/kernels.ts). */
  kernels?: boolean;
  /** Time each attention variant ORT offers on the CPU at the largest resolution's token count (src/bench/attention.ts). */
  attention?: boolean;
  log: (s: string) => void;
  command: string;
}

export interface TorchReport {
  /** null: PyTorch not found (then `hint` says how to install it) */
  python: string | null;
  version?: string;
  hint?: string;
  runs: (TorchStepResult & { seconds: number })[];
  /** flux2.ts step seconds / PyTorch step seconds, per resolution and weights (below 1: flux2.ts is faster) */
  ratios: { resolution: number; weights: WeightsKind; torch_dtype: TorchDtype; ratio: number }[];
  /**
   * A whole flux2.ts generation (text encoding, the steps, decode; --generation) against PyTorch's
   * step time × the number of steps at that resolution: a lower bound of PyTorch's generation,
   * which leaves out its text encoder and VAE, so the ratio flatters PyTorch.
   */
  generation_ratios?: { resolution: number; weights: WeightsKind; steps: number; torch_dtype: TorchDtype; flux2_seconds: number; torch_steps_seconds: number; ratio: number }[];
}

export interface StageReport {
  seconds: number;
  gflops: number;
  fraction_of_peak: number;
  /** The cold first run (weights paged in from disk / page cache, buffers faulted in). */
  first_run_seconds?: number;
  /** The same GEMM measured in the stage's process just before it ran (other load on the machine shows here). */
  gemm_gflops_at_stage?: number;
  /** VmHWM; a training step maps its weights more than once and RSS counts each mapping (src/bench/mem_sampler.ts) */
  peak_rss_bytes: number;
  /** sampled peak PSS (each mapped page once): the memory the stage takes from the machine */
  peak_pss_bytes?: number;
  /** sampled peak anonymous memory (everything but the mapped weights) */
  peak_anon_bytes?: number;
  load_seconds: number;
  gflop: number;
  /** Measured once and shared by several runs (the text encoder does not depend on the resolution, the VAE not on the weights). */
  shared?: boolean;
}

export interface RunReport {
  model: string;
  resolution: number;
  weights: WeightsKind;
  stages: Partial<Record<MeasuredStage, StageReport>>;
  /** The largest stage peak: what a whole generation needs when every stage releases its memory. */
  generation_peak_rss_bytes: number;
}

export interface BenchReport {
  date: string;
  command: string;
  machine: { cpu: string; cores: number; memory_bytes: number; os: string; node: string; onnxruntime: string; load_average: number[] };
  gemm_peak_gflops: number;
  /** The GEMM loop at the start (size³, best seconds) and the rates measured inside each stage's process. */
  gemm: { size: number; seconds: number; measured_in_stages: number[] };
  model: { variant: BenchModelSize; dir: string; transformer_params: number; text_encoder_params: number; vae_params: number; text_length: number };
  runs: RunReport[];
  quantize_seconds: Partial<Record<WeightsKind, number>>;
  fusions: Partial<Record<WeightsKind, { emitted: Record<string, number>; optimized: Record<string, number> }>>;
  generations: StageResult[];
  /** The weights `--quantize auto` picks on this machine for this model, and why (src/backend/cpu.ts). */
  choice: WeightsChoice & { cpu: CpuFeatures };
  /** GEMM rates of each Linear kernel at one shape (--kernels). */
  kernels?: KernelResult[];
  /** Speed and accuracy (against mha_fp32) of each attention variant (--attention). */
  attention?: AttentionResult[];
  /** PyTorch's step on the same checkpoint (--compare torch). */
  torch?: TorchReport;
  total_seconds: number;
}

function stageMain(): string {
  return path.join(path.dirname(fileURLToPath(import.meta.url)), "stage_main.js");
}

/** Run one stage in a fresh node process; its stderr (progress) is passed through when `echo`. */
export function runChild(req: StageRequest, echo: (s: string) => void): Promise<StageResult> {
  return runForJson(process.execPath, [stageMain(), JSON.stringify(req)], `bench stage ${req.stage} (${req.weights}, ${req.resolution})`, echo,
    (out) => out.split("\n").find((l) => l.startsWith(RESULT_PREFIX))?.slice(RESULT_PREFIX.length));
}

export function machineInfo(): BenchReport["machine"] {
  const cpus = os.cpus();
  let ortVersion = "unknown";
  try {
    const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../../node_modules/onnxruntime-node/package.json");
    ortVersion = JSON.parse(fs.readFileSync(pkg, "utf8")).version;
  } catch {
    // left unknown
  }
  return {
    cpu: cpus[0]?.model ?? "unknown", cores: cpus.length, memory_bytes: os.totalmem(),
    os: `${os.type()} ${os.release()}`, node: process.version, onnxruntime: ortVersion,
    // Other processes competing for the cores skew every number: recorded with the report.
    load_average: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const t0 = performance.now();
  const spec = MODEL_SPECS[o.variant];
  const dir = o.dir ?? defaultModelDir(o.variant);
  o.log(`model: ${o.variant} random-weight checkpoint in ${dir}`);
  const made = makeRandomModel(spec, dir, { log: o.log });
  if (!made.reused) o.log(`model written in ${made.seconds.toFixed(0)} s (${(made.bytes / 1e9).toFixed(1)} GB)`);

  const base = { model: dir, textLength: o.textLength, repeats: o.repeats, threads: o.threads, calibrate: o.quick ? undefined : 2048 };
  const echo = (s: string) => o.log(s);

  o.log("GEMM peak (float32 MatMul)...");
  const gemmSize = o.quick ? 1024 : 2048;
  const gemm = await runChild({ ...base, stage: "gemm", weights: "fp32", resolution: 0, gemmSize, repeats: o.quick ? 3 : 10 }, echo);
  let peak = gemm.gflops;
  o.log(`GEMM peak: ${peak.toFixed(1)} GFLOP/s (${gemm.resolution}³, ${gemm.seconds.toFixed(3)} s)`);

  const quantizeSeconds: BenchReport["quantize_seconds"] = {};
  for (const w of new Set([...o.weights, ...(o.generation?.weights ?? [])])) {
    if (!(QUANT_KINDS as string[]).includes(w)) continue;
    o.log(`preparing ${w} weights (once; cached in $FLUX2_CACHE/quant)...`);
    const components: ("transformer" | "text_encoder")[] = [];
    // Only what this run uses: a generation needs both components, but only for its own weights.
    const generates = !!o.generation?.weights.includes(w);
    if (o.stages.includes("transformer_step") || generates) components.push("transformer");
    if (o.stages.includes("text_encode") || generates) components.push("text_encoder");
    const q = await runChild({ ...base, stage: "quantize", weights: w, resolution: 0, components }, echo);
    quantizeSeconds[w] = q.seconds;
  }

  const report = (r: StageResult, shared = false): StageReport => ({
    seconds: r.seconds, gflops: r.gflops, fraction_of_peak: r.gflops / peak, peak_rss_bytes: r.peak_rss_bytes,
    ...(r.peak_pss_bytes ? { peak_pss_bytes: r.peak_pss_bytes, peak_anon_bytes: r.peak_anon_bytes } : {}),
    load_seconds: r.load_seconds, gflop: r.gflop, ...(r.gemm_gflops_at_stage ? { gemm_gflops_at_stage: r.gemm_gflops_at_stage } : {}),
    ...(r.first_run_seconds !== undefined ? { first_run_seconds: r.first_run_seconds } : {}),
    ...(shared ? { shared: true } : {}),
  });
  const runs: RunReport[] = [];
  const calibrations: number[] = [];
  const textByWeights = new Map<WeightsKind, StageResult>();
  const vaeByRes = new Map<number, StageResult>();
  const measure = async (stage: StageName, weights: WeightsKind, resolution: number) => {
    o.log(`${stage} ${weights} ${stage === "text_encode" ? `${o.textLength} tokens` : `${resolution}²`}...`);
    // A LoRA step at real size fits only with activation checkpointing (docs/training.md), which is
    // how it is trained; measured so.
    const r = await runChild({ ...base, stage, weights, resolution, ...(stage === "train_step" ? { checkpointActivations: true } : {}) }, echo);
    o.log(`  ${r.seconds.toFixed(2)} s, ${r.gflops.toFixed(1)} GFLOP/s (${((100 * r.gflops) / peak).toFixed(0)}% of peak), peak RSS ${gib(r.peak_rss_bytes)}` +
      (r.peak_pss_bytes ? ` (PSS ${gib(r.peak_pss_bytes)}, anonymous ${gib(r.peak_anon_bytes ?? 0)})` : "") +
      (r.gemm_gflops_at_stage ? `; GEMM in the same process: ${r.gemm_gflops_at_stage.toFixed(1)} GFLOP/s` : ""));
    // The peak is the best GEMM rate seen at any point of the run.
    if (r.gemm_gflops_at_stage) {
      calibrations.push(r.gemm_gflops_at_stage);
      if (r.gemm_gflops_at_stage > peak) peak = r.gemm_gflops_at_stage;
    }
    return r;
  };
  const choice = { ...chooseWeights(cpuFeatures(), made.params.transformer), cpu: cpuFeatures() };
  o.log(`auto choice for this CPU and model: ${choice.weights} (${choice.reason})`);

  let torch: TorchReport | undefined;
  const py = o.compareTorch?.length || o.kernels ? findTorchPython() : null;

  let kernels: KernelResult[] | undefined;
  if (o.kernels) {
    const shape: [number, number, number] = o.quick ? [256, 1024, 512] : [1536, 9216, 3072];
    o.log(`GEMM kernels at ${shape[0]}×${shape[2]} · ${shape[2]}×${shape[1]} (interleaved, best of ${o.quick ? 2 : 3})...`);
    kernels = (await runChild({ ...base, stage: "kernels", weights: "fp32", resolution: 0, kernelShape: shape, repeats: o.quick ? 2 : 3 }, echo)).kernels;
    if (py) {
      // The same product in PyTorch (oneDNN's bf16 kernels, its BLAS for float32), right after.
      const t = await torchMatmul(py, shape[0], shape[1], shape[2], { rounds: o.quick ? 2 : 3, threads: o.threads }, echo);
      kernels = [...kernels!, ...t.kernels];
      o.log(`  PyTorch ${t.kernels.map((k) => `${k.kernel} ${k.gflops.toFixed(0)} GFLOP/s`).join(", ")} (BLAS: ${t.blas ?? "unknown"})`);
      if (isReferenceBlas(t.blas)) o.log(REFERENCE_BLAS_HINT);
    }
  }

  if (o.compareTorch?.length) {
    torch = py ? { python: py.python, version: py.version, runs: [], ratios: [] } : { python: null, hint: TORCH_INSTALL_HINT, runs: [], ratios: [] };
    o.log(py ? `PyTorch ${py.version} (${py.python}): the same step in ${o.compareTorch.join(", ")}, after flux2.ts's at each resolution` : TORCH_INSTALL_HINT);
  }

  let attention: AttentionResult[] | undefined;
  if (o.attention) {
    // The transformer's attention at the largest resolution: every image token plus the text.
    const config = readTransformerConfig(path.join(dir, "transformer", "config.json"));
    const L = (Math.max(...o.resolutions) / 16) ** 2 + o.textLength;
    const shape: [number, number, number] = [L, config.num_attention_heads, config.attention_head_dim];
    o.log(`attention variants at L = ${L}, ${shape[1]} heads × ${shape[2]} (interleaved, best of ${o.quick ? 2 : 3})...`);
    attention = (await runChild({ ...base, stage: "attention", weights: "fp32", resolution: 0, attentionShape: shape, repeats: o.quick ? 2 : 3 }, echo)).attention;
  }

  // Resolution by resolution, every weights kind and then PyTorch back to back: interleaved, so
  // load on a shared machine falls on all of them alike.
  for (const resolution of o.resolutions) {
    for (const weights of o.weights) {
      const stages: RunReport["stages"] = {};
      if (o.stages.includes("text_encode")) {
        const had = textByWeights.get(weights);
        const r = had ?? await measure("text_encode", weights, resolution);
        textByWeights.set(weights, r);
        stages.text_encode = report(r, !!had);
      }
      if (o.stages.includes("transformer_step")) stages.transformer_step = report(await measure("transformer_step", weights, resolution));
      // Training needs float weights (bf16 / fp32 frozen weights; no int8/int4 training).
      if (o.stages.includes("train_step") && (weights === "bf16" || weights === "fp32")) stages.train_step = report(await measure("train_step", weights, resolution));
      if (o.stages.includes("vae_decode")) {
        // The VAE is float32 whatever the transformer's weights: measured once per resolution.
        const had = vaeByRes.get(resolution);
        const r = had ?? await measure("vae_decode", weights, resolution);
        vaeByRes.set(resolution, r);
        stages.vae_decode = report(r, !!had);
      }
      // A generation runs the inference stages only (training has its own peak, in its row).
      const peakRss = Math.max(0, ...(["text_encode", "transformer_step", "vae_decode"] as const).map((s) => stages[s]?.peak_rss_bytes ?? 0));
      runs.push({ model: o.variant, resolution, weights, stages, generation_peak_rss_bytes: peakRss });
    }
    if (torch && py && o.stages.includes("transformer_step")) {
      for (const dtype of o.compareTorch!) {
        o.log(`PyTorch transformer_step ${dtype} ${resolution}²...`);
        const t = await torchStep(py, dir, { dtype, resolution, textLength: o.textLength, repeats: o.repeats, threads: o.threads }, echo);
        const seconds = median(t.runs);
        torch.runs.push({ ...t, seconds });
        o.log(`  ${seconds.toFixed(2)} s (1st run ${t.first_run_seconds.toFixed(2)} s), peak RSS ${gib(t.peak_rss_bytes)}`);
        if (dtype === "fp32" && isReferenceBlas(t.blas)) o.log(REFERENCE_BLAS_HINT);
        for (const run of runs) {
          const st = run.resolution === resolution ? run.stages.transformer_step : undefined;
          if (st) torch.ratios.push({ resolution, weights: run.weights, torch_dtype: dtype, ratio: st.seconds / seconds });
        }
      }
    }
  }

  // Fractions against the best GEMM rate seen during the whole run (the initial loop and the
  // calibration in every stage process), so a busy moment at the start does not inflate them.
  for (const run of runs) for (const st of Object.values(run.stages)) st!.fraction_of_peak = st!.gflops / peak;

  // Fusions: ORT's optimized graph of the transformer, on the quick model (same graph structure
  // as the real one at a size whose optimized graph fits in memory and on disk).
  const fusions: BenchReport["fusions"] = {};
  const quickDir = o.variant === "quick" ? dir : defaultModelDir("quick");
  makeRandomModel(MODEL_SPECS.quick, quickDir);
  for (const w of o.weights) fusions[w] = await transformerFusions(quickDir, w);
  const f = fusions[o.weights[0]];
  if (f) o.log(`fusions (${o.weights[0]}, optimized graph of the quick model): ${FUSED_OPS.filter((k) => f.optimized[k]).map((k) => `${k} ${f.optimized[k]}`).join(", ")}`);

  const generations: StageResult[] = [];
  if (o.generation) {
    for (const w of o.generation.weights) {
      o.log(`whole generation ${w} ${o.generation.resolution}², ${o.generation.steps} steps, one process...`);
      generations.push(await runChild({ ...base, stage: "generate", weights: w, resolution: o.generation.resolution, steps: o.generation.steps, repeats: 1 }, echo));
    }
  }

  if (torch && o.generation) {
    torch.generation_ratios = [];
    for (const g of generations) {
      for (const t of torch.runs.filter((t) => t.resolution === g.resolution)) {
        const steps = o.generation.steps;
        torch.generation_ratios.push({ resolution: g.resolution, weights: g.weights, steps, torch_dtype: t.dtype, flux2_seconds: g.seconds,
          torch_steps_seconds: steps * t.seconds, ratio: g.seconds / (steps * t.seconds) });
      }
    }
  }

  return {
    date: new Date().toISOString(), command: o.command, machine: machineInfo(),
    gemm_peak_gflops: peak, gemm: { size: gemm.resolution, seconds: gemm.seconds, measured_in_stages: calibrations },
    model: {
      variant: o.variant, dir, transformer_params: made.params.transformer, text_encoder_params: made.params.textEncoder,
      vae_params: made.params.vae, text_length: o.textLength,
    },
    runs, quantize_seconds: quantizeSeconds, fusions, generations, choice, ...(kernels ? { kernels } : {}), ...(attention ? { attention } : {}), ...(torch ? { torch } : {}),
    total_seconds: (performance.now() - t0) / 1000,
  };
}

/** Op counts of the transformer graph as emitted and as ORT optimized it. */
export async function transformerFusions(modelDir: string, weights: WeightsKind): Promise<{ emitted: Record<string, number>; optimized: Record<string, number> }> {
  const dir = path.join(modelDir, "transformer");
  const config = readTransformerConfig(path.join(dir, "config.json"));
  const w = new TransformerWeights(WeightSet.open(dir), "diffusers");
  if ((QUANT_KINDS as string[]).includes(weights)) quantizeTransformerAtLoad(w, config, { spec: specFor(weights as QuantKind) });
  w.check(config);
  const graph = buildTransformerGraph(config, w);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-fusion-")), "optimized.onnx");
  try {
    return await optimizedOpCounts(graph, file, { foldWeightConversions: weights === "fp32" });
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    w.set.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export function gib(n: number): string {
  return `${(n / 2 ** 30).toFixed(2)} GiB`;
}

/** The human-readable table. */
export function formatReport(r: BenchReport): string {
  const m = r.machine;
  const lines = [
    `flux2 bench — ${r.date.slice(0, 10)} — ${m.cpu}, ${m.cores} cores, ${gib(m.memory_bytes)} RAM, ${m.os}, node ${m.node}, onnxruntime-node ${m.onnxruntime}`,
    `command: ${r.command} (load average at the end: ${m.load_average.join(", ")})`,
    `model: ${r.model.variant} (random weights, real shapes: transformer ${(r.model.transformer_params / 1e9).toFixed(3)}B, text encoder ${(r.model.text_encoder_params / 1e9).toFixed(3)}B, VAE ${(r.model.vae_params / 1e6).toFixed(1)}M), ${r.model.text_length} text tokens`,
    `GEMM peak (float32 MatMul, best run): ${r.gemm_peak_gflops.toFixed(1)} GFLOP/s` +
      (r.gemm.measured_in_stages.length ? ` (2048³ in each stage's process: ${Math.min(...r.gemm.measured_in_stages).toFixed(0)}–${Math.max(...r.gemm.measured_in_stages).toFixed(0)})` : ""),
    "",
    `${"weights".padEnd(8)}${"res".padStart(6)}  ${"stage".padEnd(17)}${"seconds".padStart(9)}${"1st run".padStart(9)}${"load s".padStart(8)}${"GFLOP".padStart(10)}${"GFLOP/s".padStart(9)}${"of peak".padStart(9)}${"peak RSS".padStart(12)}${"peak PSS".padStart(12)}`,
  ];
  for (const run of r.runs) {
    for (const s of MEASURED_STAGES) {
      const st = run.stages[s];
      if (!st) continue;
      const ratio = s === "train_step" && run.stages.transformer_step ? `  (${(st.seconds / run.stages.transformer_step.seconds).toFixed(2)}× the forward step)` : "";
      lines.push(`${run.weights.padEnd(8)}${String(run.resolution).padStart(6)}  ${s.padEnd(17)}${st.seconds.toFixed(2).padStart(9)}${(st.first_run_seconds ?? st.seconds).toFixed(2).padStart(9)}${st.load_seconds.toFixed(1).padStart(8)}${st.gflop.toFixed(0).padStart(10)}${st.gflops.toFixed(1).padStart(9)}${`${(100 * st.fraction_of_peak).toFixed(0)}%`.padStart(9)}${gib(st.peak_rss_bytes).padStart(12)}${st.peak_pss_bytes ? `${gib(st.peak_pss_bytes).padStart(12)}` : "".padStart(12)}${st.shared ? "  (shared)" : ""}${ratio}`);
    }
    lines.push(`${"".padEnd(8)}${"".padStart(6)}  ${"whole generation".padEnd(17)} peak RSS = largest stage: ${gib(run.generation_peak_rss_bytes)}`);
  }
  const q = Object.entries(r.quantize_seconds);
  if (q.length) lines.push("", `quantization (once, then cached in $FLUX2_CACHE/quant): ${q.map(([k, v]) => `${k} ${v! < 1 ? "cached" : `${v!.toFixed(0)} s`}`).join(", ")}`);
  const quick = MODEL_SPECS.quick.transformer;
  lines.push(`ORT's optimized transformer graph (quick model: ${quick.num_layers} double + ${quick.num_single_layers} single blocks, the same per-block ops as ${r.model.variant}):`);
  for (const [w, f] of Object.entries(r.fusions)) {
    lines.push(`  ${w.padEnd(5)} ${FUSED_OPS.filter((k) => f!.optimized[k]).map((k) => `${k} ${f!.optimized[k]}`).join(", ")}; Cast ${f!.optimized.Cast ?? 0}`);
  }
  for (const g of r.generations) {
    lines.push("", `whole generation in one process (${g.weights}, ${g.resolution}², ${g.runs.length ? g.seconds.toFixed(0) : "?"} s): peak RSS ${gib(g.peak_rss_bytes)}`);
    for (const m2 of g.memory ?? []) lines.push(`  ${m2.stage.padEnd(18)} rss ${gib(m2.rss_bytes).padStart(10)}  peak so far ${gib(m2.hwm_bytes)}${m2.seconds !== undefined ? `  at ${m2.seconds.toFixed(1)} s` : ""}`);
  }
  if (r.kernels) {
    const k0 = r.kernels[0];
    lines.push("", `GEMM kernels, ${k0.M}×${k0.K} · ${k0.K}×${k0.N} (best of ${k0.runs.length}, interleaved): ${r.kernels.map((k) => `${k.kernel} ${k.gflops.toFixed(0)} GFLOP/s`).join(", ")}`);
  }
  if (r.attention) {
    const a0 = r.attention[0];
    lines.push("", `attention variants, L = ${a0.L}, ${a0.H} heads × ${a0.Dh} (best of 3, interleaved; accuracy against mha_fp32):`);
    for (const a of r.attention) {
      lines.push(a.error ? `  ${a.variant.padEnd(16)} not run: ${a.error}`
        : `  ${a.variant.padEnd(16)} ${a.seconds!.toFixed(3).padStart(8)} s ${a.gflops!.toFixed(0).padStart(6)} GFLOP/s  cosine ${a.cosine?.toFixed(6)}  max |err| ${a.max_abs_error?.toExponential(2)}`);
    }
  }
  if (r.torch) {
    lines.push("");
    if (!r.torch.python) lines.push(r.torch.hint!);
    else {
      lines.push(`PyTorch ${r.torch.version} (${r.torch.python}), the same transformer step (src/bench/torch_step.py), run after flux2.ts's at each resolution:`);
      for (const t of r.torch.runs) lines.push(`  torch ${t.dtype.padEnd(5)} ${String(t.resolution).padStart(5)}²  ${t.seconds.toFixed(2)} s (1st run ${t.first_run_seconds.toFixed(2)} s, ${t.threads} threads), peak RSS ${gib(t.peak_rss_bytes)}${t.dtype === "fp32" ? `, BLAS ${t.blas ?? "unknown"}` : ""}`);
      if (r.torch.runs.some((t) => t.dtype === "fp32" && isReferenceBlas(t.blas))) lines.push(`  ${REFERENCE_BLAS_HINT}`);
      for (const q of r.torch.ratios) lines.push(`  flux2.ts ${q.weights} / torch ${q.torch_dtype} at ${q.resolution}²: ${q.ratio.toFixed(2)}×`);
      for (const q of r.torch.generation_ratios ?? []) {
        lines.push(`  whole generation flux2.ts ${q.weights} (${q.flux2_seconds.toFixed(1)} s) / ${q.steps} × torch ${q.torch_dtype} step (${q.torch_steps_seconds.toFixed(1)} s, no text encoder or VAE) at ${q.resolution}²: ${q.ratio.toFixed(2)}×`);
      }
    }
  }
  lines.push("", `auto choice (--quantize auto) for this CPU and model: ${r.choice.weights}: ${r.choice.reason}`);
  lines.push("", `total ${(r.total_seconds / 60).toFixed(1)} min`);
  return lines.join("\n");
}
