// flux2 bench: real-shape speed and memory (src/bench/), and the random-weight checkpoints it uses.

import * as fs from "node:fs";
import * as os from "node:os";
import { parseArgs } from "node:util";
import { runBench, runChild, formatReport, machineInfo, type MeasuredStage, MEASURED_STAGES } from "../bench/bench.js";
import { MODEL_SPECS, defaultModelDir, makeRandomModel, plannedModelBytes, type BenchModelSize } from "../bench/make_model.js";
import type { WeightsKind } from "../bench/stage.js";
import type { TorchDtype } from "../bench/torch.js";
import { InvalidRequestError } from "../util/errors.js";
import { intOption, logger } from "./common.js";
import { formatBrowserReport, runBrowserBench } from "./bench_browser.js";
import { requireDefaultModel } from "../pipeline/default_model.js";

const HELP = `usage: flux2 bench [--quick] [--json] [options]
       flux2 bench --make-model [--variant klein-4b|klein-9b] [--dir DIR]

Measures FLUX.2 [klein] at its real shapes on this machine, with random weights
(a checkpoint with the exact shapes and key names is written once; klein-4B:
16.1 GB of disk, klein-9B: 34.9 GB): the float32 GEMM peak of ONNX Runtime,
then for each weight format the text encoder (512 tokens), one transformer step
per resolution, the VAE decode and one rank-16 LoRA training step (forward +
backward; bf16/fp32 weights only), each in its own process: seconds, achieved
GFLOP/s and fraction of the GEMM peak, and peak resident memory (VmHWM). Also
the fusions ORT applied to the transformer graph. About 20 minutes on a 2-core
machine; --quick runs a scaled-down model in about a minute.

  --quick                scaled-down model (same structure), 256², 64 text tokens
  --json                 print one JSON object instead of the table
  --out FILE             also write the JSON report to FILE
  --variant V            klein-4b (default) | klein-9b
  --dir DIR              model folder (default $FLUX2_CACHE/random/FLUX.2-<variant>-random)
  --weights LIST         of bf16 (stored bf16, converted at use), fp32 (ORT holds
                         float32 copies), int8 (per channel, integer GEMM),
                         int8-block, int4 (MatMulNBits) (default
                         bf16,int8,int8-block,int4)
  --resolutions LIST     transformer-step resolutions (default 512,1024)
  --stages LIST          of text_encode, transformer_step, vae_decode, train_step
                         (default all)
  --text-length N        text tokens (default 512)
  --repeats N            timed runs per stage after one warm-up run (default 1; 0:
                         time the cold first run only)
  --threads N            ORT intra-op threads (default: all cores)
  --generation RES       also run a whole generation (text, steps, decode) in one
                         process at RES², printing resident memory after every stage
  --generation-weights L weights for --generation (default int8)
  --steps N              steps of --generation (default 4)
  --drift                instead: one transformer forward with int8, int8-block and int4 weights
                         against float32 (cosine, max error) at the first of
                         --resolutions (default 512); --dir may be any diffusers
                         folder (e.g. testdata/golden/checkpoints/klein_distilled)
  --accuracy 0|4         MatMulNBits accuracy level for --drift (default 4: int8
                         activations, what generation uses; 0: float32 math);
                         int8 (per channel) always quantizes activations
  --compare torch[:LIST]  also run the same transformer step in PyTorch (Debian's
                         python3-torch; LIST of bf16, fp32, default both) after
                         flux2.ts's at each resolution, and print the time ratios;
                         without PyTorch, says how to install it and goes on
  --kernels              also time each Linear kernel (float32 MatMul, MatMulNBits,
                         DynamicQuantizeMatMul, MatMulIntegerToFloat) at one GEMM shape
  --browser              instead: time per image and peak memory of one model (--dir, default the
                         bundled flux2-mini) in headless Chromium (onnxruntime-web, WASM) next to
                         Node (onnxruntime-node), in the same run; --resolutions (default 64),
                         --steps (default 4), --repeats (default 3), --threads: the browser's WASM
                         thread counts, one run each (default 1 and all cores, at most 8);
                         Chromium from $CHROMIUM or
                         /usr/bin/chromium; needs the browser bundle (npm run build)
  --attention            also time each attention variant ORT's CPU provider offers
                         (MultiHeadAttention, ONNX Attention, float16, MatMul-Softmax-MatMul
                         in float32 and int8) at the largest resolution's token count, with
                         its error against the float32 MultiHeadAttention
  --make-model           only write the random checkpoint (reused if complete)
  -h, --help             this text`;

const OPTIONS = {
  quick: { type: "boolean" }, json: { type: "boolean" }, out: { type: "string" }, variant: { type: "string" },
  dir: { type: "string" }, weights: { type: "string" }, resolutions: { type: "string" }, stages: { type: "string" },
  "text-length": { type: "string" }, repeats: { type: "string" }, threads: { type: "string" },
  generation: { type: "string" }, "generation-weights": { type: "string" }, steps: { type: "string" },
  compare: { type: "string" }, kernels: { type: "boolean" }, attention: { type: "boolean" },
  "make-model": { type: "boolean" }, drift: { type: "boolean" }, browser: { type: "boolean" }, accuracy: { type: "string" }, help: { type: "boolean", short: "h" },
} as const;

const WEIGHTS: WeightsKind[] = ["fp32", "bf16", "int8", "int8-block", "int8-mixed", "int4"];

function list<T extends string>(v: string | undefined, allowed: readonly T[], name: string, dflt: T[]): T[] {
  if (v === undefined) return dflt;
  const items = v.split(",").map((s) => s.trim()).filter(Boolean);
  for (const i of items) if (!allowed.includes(i as T)) throw new InvalidRequestError(`--${name}: "${i}" is not one of ${allowed.join(", ")}`);
  if (!items.length) throw new InvalidRequestError(`--${name} is empty`);
  return items as T[];
}

function resolutions(v: string | undefined, dflt: number[]): number[] {
  if (v === undefined) return dflt;
  return v.split(",").map((s) => intOption(s.trim(), "resolutions", 64, 2048)!).map((r) => {
    if (r % 16) throw new InvalidRequestError(`--resolutions: ${r} is not a multiple of 16`);
    return r;
  });
}

/** --threads with --browser: WASM thread counts, "1,2" (default: 1 and every core, at most 8). */
function browserThreads(v: string | undefined): number[] {
  const cores = Math.min(8, os.availableParallelism());
  const ts = v === undefined ? [1, cores] : v.split(",").map((s) => intOption(s.trim(), "threads", 1, 64)!);
  return [...new Set(ts)];
}

export async function runBenchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const variant = (v.quick ? "quick" : v.variant ?? "klein-4b") as BenchModelSize;
  if (!MODEL_SPECS[variant] || (variant === "quick" && !v.quick)) throw new InvalidRequestError(`--variant must be klein-4b or klein-9b, got "${v.variant}"`);
  const log = v.json ? (s: string) => process.stderr.write(s + "\n") : logger(false);

  if (v["make-model"]) {
    const dir = v.dir ?? defaultModelDir(variant);
    log(`writing a random ${variant} checkpoint (${(plannedModelBytes(MODEL_SPECS[variant]) / 1e9).toFixed(1)} GB) to ${dir}`);
    const m = makeRandomModel(MODEL_SPECS[variant], dir, { log });
    const msg = m.reused ? "already complete" : `written in ${m.seconds.toFixed(0)} s`;
    const p = m.params;
    console.log(`${dir}: ${msg}; transformer ${(p.transformer / 1e9).toFixed(3)}B, text encoder ${(p.textEncoder / 1e9).toFixed(3)}B, VAE ${(p.vae / 1e6).toFixed(1)}M parameters, ${(m.bytes / 1e9).toFixed(2)} GB`);
    return 0;
  }

  if (v.drift) {
    const dir = v.dir ?? defaultModelDir(variant);
    if (!v.dir) makeRandomModel(MODEL_SPECS[variant], dir, { log });
    const accuracy = intOption(v.accuracy, "accuracy", 0, 4) ?? 4;
    if (accuracy !== 0 && accuracy !== 4) throw new InvalidRequestError("--accuracy must be 0 or 4");
    const resolution = resolutions(v.resolutions, [v.quick ? 256 : 512])[0];
    const textLength = intOption(v["text-length"], "text-length", 1, 4096) ?? (v.quick ? 64 : 512);
    const r = await runChild({
      stage: "drift", model: dir, weights: "bf16", resolution, textLength, repeats: 1, accuracyLevel: accuracy,
      compare: list(v.weights, WEIGHTS, "weights", ["int8", "int8-block", "int4"]),
    }, log);
    const report = { date: new Date().toISOString(), command: `flux2 bench ${argv.join(" ")}`, machine: machineInfo(), model: dir, resolution, text_length: textLength, accuracy_level: accuracy, drift: r.drift };
    if (v.out) fs.writeFileSync(v.out, JSON.stringify(report, null, 2) + "\n");
    if (v.json) console.log(JSON.stringify(report));
    else {
      console.log(`transformer forward drift against float32 (bf16 weights computed in float32): ${dir}, ${resolution}², ${textLength} text tokens, MatMulNBits accuracy level ${accuracy}`);
      for (const d of r.drift ?? []) console.log(`  ${d.weights.padEnd(10)} cosine ${d.cosine.toFixed(6)}  max |err| ${d.max_abs.toExponential(2)}  max |err| / max |ref| ${d.rel_max.toExponential(2)}  relative L2 ${d.rel_l2.toExponential(2)}  (${d.seconds.toFixed(1)} s)`);
    }
    return 0;
  }

  if (v.browser) {
    const r = await runBrowserBench({
      modelDir: v.dir ?? requireDefaultModel(), size: resolutions(v.resolutions, [64])[0],
      steps: intOption(v.steps, "steps", 1, 100) ?? 4, repeats: intOption(v.repeats, "repeats", 1, 100) ?? 3,
      threads: browserThreads(v.threads),
      chromium: process.env.CHROMIUM ?? "/usr/bin/chromium", log,
    });
    const report = { date: new Date().toISOString(), command: `flux2 bench ${argv.join(" ")}`, machine: machineInfo(), browser: r };
    if (v.out) fs.writeFileSync(v.out, JSON.stringify(report, null, 2) + "\n");
    if (v.json) console.log(JSON.stringify(report));
    else console.log(formatBrowserReport(r));
    return 0;
  }

  let compareTorch: TorchDtype[] | undefined;
  if (v.compare !== undefined) {
    const [what, dtypes] = v.compare.split(":");
    if (what !== "torch") throw new InvalidRequestError(`--compare: only "torch" is supported, got "${v.compare}"`);
    compareTorch = list<TorchDtype>(dtypes, ["bf16", "fp32"], "compare torch:", ["bf16", "fp32"]);
  }
  const quick = !!v.quick;
  const genRes = v.generation !== undefined ? resolutions(v.generation, [])[0] : undefined;
  const report = await runBench({
    quick, variant, dir: v.dir,
    weights: list(v.weights, WEIGHTS, "weights", ["bf16", "int8", "int8-block", "int4"]),
    resolutions: resolutions(v.resolutions, quick ? [256] : [512, 1024]),
    stages: list<MeasuredStage>(v.stages, MEASURED_STAGES, "stages", [...MEASURED_STAGES]),
    textLength: intOption(v["text-length"], "text-length", 1, 4096) ?? (quick ? 64 : 512),
    repeats: intOption(v.repeats, "repeats", 0, 100) ?? (quick ? 2 : 1),
    threads: intOption(v.threads, "threads", 1, 256),
    generation: genRes ? {
      resolution: genRes, steps: intOption(v.steps, "steps", 1, 50) ?? 4,
      weights: list(v["generation-weights"], WEIGHTS, "generation-weights", ["int8"]),
    } : undefined,
    compareTorch, kernels: !!v.kernels, attention: !!v.attention,
    log, command: `flux2 bench ${argv.join(" ")}`.trim(),
  });
  if (v.out) fs.writeFileSync(v.out, JSON.stringify(report, null, 2) + "\n");
  console.log(v.json ? JSON.stringify(report) : formatReport(report));
  return 0;
}
