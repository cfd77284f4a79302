// What `flux2 generate` and `flux2 edit` share: model options, number
// parsing, the memory plan, running the pipeline with progress, and writing
// images with their parameters.

import * as fs from "node:fs";
import * as path from "node:path";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { requireDefaultModel } from "../pipeline/default_model.js";
import { openCheckpoint, transformerConfig, type Checkpoint, type Variant } from "../pipeline/checkpoint.js";
import type { GenerateOptions, GenerateResult } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import { VARIANTS } from "../pipeline/variants.js";
import { encodeImage, type ImageFormat } from "../pipeline/image.js";
import { assertFits, describePlan, planMemory, type PlannedRun } from "../loaders/memory.js";
import type { ImageRecord } from "../pipeline/metadata.js";
import { WATERMARK_NAME } from "../provenance/provenance.js";
import { GenerationRequest, modelCapabilities, unsupportedFields } from "../api/request.js";
import { encodeOutputs } from "../api/output.js";
import { loadModerationConfig, safetyToleranceProblem } from "../moderation/config.js";
import { Moderator } from "../moderation/moderator.js";
import { PromptTokenizer } from "../text/tokenizer.js";
import { MistralPromptTokenizer } from "../text/mistral_prompt.js";
import { ProgressBar } from "./progress.js";
import { QUANT_KINDS, specFor, type QuantKind } from "../models/quantized/blockwise.js";
import { chooseWeights, cpuFeatures, integerGemmExact } from "../backend/cpu.js";
import { WeightSet, numel } from "../io/safetensors.js";
import type { LoadQuantOptions } from "../quant/quantize.js";
import { loadPipeline, type LoraUse } from "../loaders/pretrained.js";

export const MODEL_HELP = `Model:
  --model PATH            diffusers folder (model_index.json, transformer/, vae/,
                          text_encoder/, tokenizer/), or a BFL single transformer
                          file (then also --vae, --text-encoder, --tokenizer).
                          Default: the bundled flux2-mini (models/flux2-mini in
                          the package, docs/flux2-mini.md), or the folder named
                          by the environment variable FLUX2_DEFAULT_MODEL
  --transformer FILE      use this transformer file instead (BFL or diffusers)
  --vae PATH              VAE folder or ae.safetensors
  --text-encoder DIR      text encoder folder
  --tokenizer DIR         tokenizer folder
  --variant V             ${VARIANTS.join(" | ")} (default: detected)
  --device D              cpu (default) | webgpu | cuda
  --quantize auto|none|int8|int8-mixed|int8-block|int4   quantize the
                          transformer and text-encoder Linear weights at load
                          (written once to $FLUX2_CACHE/quant, then memory-mapped):
                          int8 per channel on ORT's integer GEMM, int8-mixed the
                          same with the SwiGLU-output layers as int8-block,
                          int8-block / int4 in blocks for MatMulNBits; none:
                          weights as stored. Default auto: int8
                          on CPUs with int8 dot products (AMX, VNNI, Arm dotprod/
                          i8mm) for transformers of 1B+ parameters, else none; the
                          choice and its reason are printed. See docs/performance.md
  --lora FILE[:STRENGTH]  apply a LoRA (kohya, diffusers/PEFT, BFL/ai-toolkit/fal,
                          DiffSynth, LoKr/LoHa); repeatable to stack; strength
                          default 1. What each one applied is printed`;

export const MODEL_OPTIONS = {
  model: { type: "string" }, transformer: { type: "string" }, vae: { type: "string" },
  "text-encoder": { type: "string" }, tokenizer: { type: "string" }, variant: { type: "string" },
  device: { type: "string" }, prompt: { type: "string", multiple: true }, "negative-prompt": { type: "string" },
  "max-sequence-length": { type: "string" }, width: { type: "string" }, height: { type: "string" },
  steps: { type: "string" }, guidance: { type: "string" }, seed: { type: "string" },
  "num-images": { type: "string" }, batch: { type: "string" },
  out: { type: "string" }, "preview-dir": { type: "string" }, force: { type: "boolean" },
  quiet: { type: "boolean" }, help: { type: "boolean", short: "h" }, lora: { type: "string", multiple: true },
  quantize: { type: "string" }, "prompt-file": { type: "string", multiple: true },
  "no-watermark": { type: "boolean" }, moderation: { type: "string" }, "safety-tolerance": { type: "string" },
  "upsample-prompt": { type: "boolean" }, "upsample-tokens": { type: "string" },
} as const;

export const PROMPT_FILE_HELP = `  --prompt-file FILE      read a prompt from FILE (UTF-8, one trailing newline
                          dropped); "-" reads standard input. Repeatable and
                          mixable with --prompt, in command-line order. Use it for
                          long prompts: a command line is limited by the system`;

/** Largest prompt file read; the text encoder sees at most 4,096 tokens of it anyway. */
const MAX_PROMPT_FILE_BYTES = 1024 * 1024;

/** One parsed command-line option, as node:util parseArgs({ tokens: true }) reports it. */
interface OptionToken { kind: string; name?: string; value?: string | undefined }

/**
 * The prompts in command-line order: each --prompt TEXT as given and each --prompt-file FILE
 * read whole ("-" is standard input, read once).
 */
export function collectPrompts(tokens: OptionToken[] | undefined): string[] {
  const prompts: string[] = [];
  let stdinUsed = false;
  for (const t of tokens ?? []) {
    if (t.kind !== "option" || t.value === undefined) continue;
    if (t.name === "prompt") prompts.push(t.value);
    if (t.name !== "prompt-file") continue;
    if (t.value === "-") {
      if (stdinUsed) throw new InvalidRequestError("--prompt-file - (standard input) can be given only once");
      stdinUsed = true;
    }
    prompts.push(readPromptFile(t.value));
  }
  return prompts;
}

function readPromptFile(file: string): string {
  const label = file === "-" ? "standard input" : file;
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file === "-" ? 0 : file);
  } catch (e) {
    throw new InvalidRequestError(`--prompt-file ${file}: cannot read ${label} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (bytes.length > MAX_PROMPT_FILE_BYTES) {
    throw new InvalidRequestError(`--prompt-file ${file}: ${label} is ${bytes.length} bytes; prompts are limited to ${MAX_PROMPT_FILE_BYTES} bytes (the model reads at most --max-sequence-length tokens)`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new InvalidRequestError(`--prompt-file ${file}: ${label} is not valid UTF-8; save it as UTF-8`);
  }
  // An editor ends a file with a newline that is not part of the prompt.
  return text.replace(/\r?\n$/, "");
}

export interface ModelArgs {
  model?: string;
  transformer?: string;
  vae?: string;
  "text-encoder"?: string;
  tokenizer?: string;
  variant?: string;
  device?: string;
  force?: boolean;
  quiet?: boolean;
  "preview-dir"?: string;
  lora?: string[];
  quantize?: string;
}

/** --quantize as pipeline options, printing progress the first time a component is quantized (then it is cached). */
export function quantizeOptions(q: QuantKind | undefined, log: (s: string) => void): LoadQuantOptions | undefined {
  if (!q) return undefined;
  let last = -1;
  return {
    spec: specFor(q),
    progress: (done, total, name) => {
      const pct = Math.floor((100 * done) / total);
      if (pct < last) last = -1; // the next component
      if (pct >= last + 10 || done === total) log(`quantizing ${name.includes("layers.") ? "the text encoder" : "the transformer"} to ${q} (once, cached): ${(last = pct)}%`);
    },
  };
}

/** --quantize as given: a format, "none", or "auto" (also when absent). */
export function quantizeArg(v: string | undefined): QuantKind | "none" | "auto" {
  if (v === undefined || v === "auto" || v === "none") return v ?? "auto";
  if (!(QUANT_KINDS as string[]).includes(v)) throw new InvalidRequestError(`--quantize must be auto, none or one of ${QUANT_KINDS.join(", ")}, got "${v}"`);
  return v as QuantKind;
}

const resolved = new WeakMap<ModelArgs, QuantKind | undefined>();

/**
 * The quantization a run uses: --quantize when it names one, else (auto) the choice for this CPU
 * and model (src/backend/cpu.ts), printed once with its reason. undefined: weights as stored.
 */
export function resolveQuantize(v: ModelArgs, ck?: Checkpoint): QuantKind | undefined {
  if (resolved.has(v)) return resolved.get(v);
  const q = quantizeArg(v.quantize);
  let out: QuantKind | undefined;
  if (q === "none") out = undefined;
  else if (q !== "auto") {
    out = q;
    if ((q === "int8" || q === "int8-mixed") && (v.device ?? "cpu") === "cpu" && !integerGemmExact()) {
      logger(v.quiet)(`weights: ${q} on a CPU without int8 dot products (no VNNI/AMX): ORT's integer GEMM would saturate here, so the int8 codes are ` +
        "dequantized at use and multiplied in float32 (int8's memory, float's speed); --quantize int8-block runs MatMulNBits instead");
    }
  } else {
    const set = WeightSet.open((ck ?? openModel(v)).transformer.weights);
    const params = set.keys().reduce((n, k) => n + numel(set.info(k).shape), 0);
    set.close();
    const choice = chooseWeights(cpuFeatures(), params, v.device ?? "cpu");
    logger(v.quiet)(`weights: ${choice.weights === "int8" ? "int8 (--quantize auto)" : "as stored (--quantize auto)"}: ${choice.reason}; --quantize forces a choice`);
    out = choice.weights === "int8" ? "int8" : undefined;
  }
  resolved.set(v, out);
  return out;
}

/** --lora FILE[:STRENGTH] (a Windows drive letter or a colon in the path is kept when no number follows). */
export function parseLoraArg(arg: string): LoraUse {
  const m = arg.match(/^(.*):(-?\d+(?:\.\d+)?)$/);
  const file = m ? m[1] : arg;
  const strength = m ? Number(m[2]) : 1;
  if (!fs.existsSync(file)) throw new InvalidRequestError(`--lora ${arg}: no such file "${file}"`);
  if (!(strength >= -4 && strength <= 4)) throw new InvalidRequestError(`--lora ${arg}: strength must be between -4 and 4`);
  return { file, strength, name: path.basename(file).replace(/\.safetensors$/, "") };
}

export function intOption(v: string | undefined, name: string, lo: number, hi: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new InvalidRequestError(`--${name} must be an integer from ${lo} to ${hi}, got "${v}"`);
  return n;
}

/** Bounds are inclusive unless `open` says otherwise (an AdamW beta may be 0 but not 1; an EMA decay neither). */
export interface Openness {
  lo?: boolean;
  hi?: boolean;
  /** A typical value, quoted in the error. */
  example?: number;
}

export function numOption(v: string | undefined, name: string, lo: number, hi: number, open: Openness = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  const ok = Number.isFinite(n) && (open.lo ? n > lo : n >= lo) && (open.hi ? n < hi : n <= hi);
  if (ok) return n;
  const range = open.lo || open.hi ? `${open.lo ? "above" : "at least"} ${lo} and ${open.hi ? "below" : "at most"} ${hi}` : `from ${lo} to ${hi}`;
  throw new InvalidRequestError(`--${name} must be a number ${range}${open.example === undefined ? "" : ` (e.g. ${open.example})`}, got "${v}"`);
}

export function outputFormat(file: string): ImageFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === ".png") return "png";
  if (ext === ".jpg" || ext === ".jpeg") return "jpg";
  if (ext === ".webp") return "webp";
  throw new InvalidRequestError(`--out ${file}: use a .png, .jpg or .webp file name`);
}

/** --out's extension as the request's output_format. */
export function requestFormat(file: string): GenerationRequest["output_format"] {
  const f = outputFormat(file);
  return f === "jpg" ? "jpeg" : f;
}

/**
 * Command-line values as a GenerationRequest, through the same schema the server parses JSON
 * with; a value it refuses is named as the field (the flags' own checks ran before).
 */
export function parseCliRequest(fields: Record<string, unknown>): GenerationRequest {
  const defined = Object.fromEntries(Object.entries(fields).filter(([, x]) => x !== undefined));
  const parsed = GenerationRequest.safeParse(defined);
  if (!parsed.success) {
    throw new InvalidRequestError(parsed.error.issues.map((i) => `${i.path.join(".") || "request"}: ${i.message}`).join("; "));
  }
  return parsed.data;
}

/** Why a model does not take a request field, and what to do instead (for checkModelFields). */
const REFUSED_BECAUSE: Record<string, string> = {
  guidance: "it is guidance-distilled and has no guidance scale; drop --guidance (klein base takes one, as CFG)",
  negative_prompt: "it samples without CFG, so a negative prompt has nothing to act on; drop --negative-prompt or use a klein base checkpoint",
};

/**
 * The fields the model takes, by the server's rule (modelCapabilities, read off the variant cards):
 * a flag the model cannot honour is refused before loading, never ignored. One difference, on
 * purpose: a command line may set --steps on distilled klein (the pipeline runs any step count, and
 * tests and previews use fewer), where the server, like BFL's API, takes no steps for klein.
 */
export function checkModelFields(request: GenerationRequest, ck: Checkpoint): void {
  const refused = unsupportedFields(request, modelCapabilities(ck.variant)).filter((f) => f !== "steps");
  if (refused.length === 0) return;
  const flag = (f: string) => `--${f.replace(/_/g, "-")}`;
  throw new InvalidRequestError(refused.map((f) => `${ck.variant} does not take ${flag(f)}: ${REFUSED_BECAUSE[f] ?? "the server refuses it for this model too"}`).join("; "));
}

export { latentMultiple } from "../pipeline/checkpoint.js";

export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = path.extname(out);
  const base = out.slice(0, out.length - ext.length);
  return Array.from({ length: count }, (_, i) => `${base}-${i}${ext}`);
}

export function logger(quiet?: boolean): (s: string) => void {
  return quiet ? () => {} : (s: string) => process.stderr.write(s + "\n");
}

export function openModel(v: ModelArgs): Checkpoint {
  // No --model: the bundled default (src/pipeline/default_model.ts); later steps read v.model.
  if (!v.model) {
    v.model = requireDefaultModel();
    logger(v.quiet)(`no --model given: using ${v.model}`);
  }
  if (v.variant !== undefined && !(VARIANTS as string[]).includes(v.variant)) {
    throw new InvalidRequestError(`--variant must be one of ${VARIANTS.join(", ")} (the variant cards), got "${v.variant}"; leave it out to detect it from the model`);
  }
  return openCheckpoint(v.model, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined,
  });
}

/** Print the memory plan and refuse (unless --force) a run that cannot fit. */
export function checkMemory(ck: Checkpoint, v: ModelArgs, run: Omit<PlannedRun, "quantize">): void {
  const log = logger(v.quiet);
  const plan = planMemory(ck, { ...run, quantize: resolveQuantize(v, ck) });
  log(`model: ${ck.source} (${ck.variant})\nmemory plan:\n${describePlan(plan)}`);
  if (!v.force) assertFits(plan);
}

export async function warnLongPrompts(ck: Checkpoint, prompts: string[], maxLen: number, log: (s: string) => void): Promise<void> {
  const tok = ck.textEncoder.kind === "mistral3" ? await MistralPromptTokenizer.load(ck.tokenizer) : await PromptTokenizer.load(ck.tokenizer);
  for (const p of prompts) {
    if (tok.truncated(p, maxLen)) log(`warning: a prompt is ${tok.tokenCount(p)} tokens; only the first ${maxLen} are used`);
  }
}

/** Run the pipeline with a progress bar (and per-step previews), releasing models at the end. */
export async function runPipeline(v: ModelArgs, opts: GenerateOptions, steps: number): Promise<GenerateResult & { loras: LoraUse[] }> {
  const log = logger(v.quiet);
  const loras = (v.lora ?? []).map(parseLoraArg);
  const pipe = loadPipeline(v.model!, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined, backend: new OrtBackend({ device: (v.device ?? "cpu") as Device }), loras,
    quantize: quantizeOptions(resolveQuantize(v), log),
  });
  for (const l of pipe.loraReports) {
    const r = l.report;
    log(`lora ${l.name} (${l.format}, strength ${l.strength}): ${r.applied.length} weights applied, ${r.ignored.length} keys ignored, ${r.unknown.length} unknown` +
      (r.unsupportedTextEncoder.length ? `, ${r.unsupportedTextEncoder.length} text-encoder keys not supported` : ""));
    if (r.unknown.length) log(`  unknown: ${r.unknown.slice(0, 5).join(", ")}${r.unknown.length > 5 ? ", ..." : ""}`);
    for (const n of r.notes) log(`  ${n}`);
  }
  const bar = v.quiet ? null : new ProgressBar("denoise", steps);
  const previewDir = v["preview-dir"];
  if (previewDir) fs.mkdirSync(previewDir, { recursive: true });
  const writes: Promise<void>[] = [];
  try {
    const result = await pipe.generate({
      ...opts,
      preview: !!previewDir,
      onStage: (s) => { if (s !== "denoise") log(`${s}...`); },
      onStep: (info) => {
        bar?.update(info.step);
        const p = info.preview;
        if (previewDir && p) {
          const file = path.join(previewDir, `step-${String(info.step).padStart(2, "0")}.png`);
          writes.push(encodeImage(p.rgb, p.width, p.height, "png").then((b) => fs.writeFileSync(file, b)));
        }
      },
    });
    return { ...result, loras };
  } finally {
    bar?.done();
    await Promise.all(writes);
    await pipe.release();
  }
}

/**
 * Write each image with its provenance marks (invisible watermark unless
 * --no-watermark, EXIF/XMP "AI generated" tags), its A1111 "parameters" text and,
 * for PNG, a "flux2" JSON chunk.
 */
export async function writeImages(result: GenerateResult, out: string, record: (i: number) => ImageRecord, log: (s: string) => void, watermark = true,
                                  moderation?: CliModeration): Promise<string[]> {
  const format = outputFormat(out);
  const paths = outputPaths(out, result.images.length);
  // All images are checked before any is written: a moderated run leaves no file.
  try {
    await moderation?.moderator.checkOutputs(result.images, moderation.tolerance);
  } finally {
    await moderation?.moderator.release();
  }
  for (const [i, { bytes, record: r }] of (await encodeOutputs(result, format, record, { watermark })).entries()) {
    fs.mkdirSync(path.dirname(path.resolve(paths[i])), { recursive: true });
    fs.writeFileSync(paths[i], bytes);
    log(`wrote ${paths[i]}${r.watermark === WATERMARK_NAME ? "" : ` (watermark: ${r.watermark})`}`);
  }
  return paths;
}

export const MODERATION_HELP = `Moderation (docs/server.md):
  --moderation FILE       check the prompt (word and regex lists), input images and
                          outputs (a ViT classifier) per the JSON file; a hit stops
                          with "Request Moderated" / "Content Moderated" and writes
                          no image
  --safety-tolerance N    0 (strictest) .. 6; picks the classifier threshold
                          (default 2; below 2 needs an image classifier)`;

export interface CliModeration {
  moderator: Moderator;
  tolerance: number | undefined;
}

/** --moderation / --safety-tolerance; refuses a tolerance that nothing would honour. */
export function cliModeration(v: { moderation?: string; "safety-tolerance"?: string }): CliModeration | undefined {
  const tolerance = intOption(v["safety-tolerance"], "safety-tolerance", 0, 6);
  const config = v.moderation ? loadModerationConfig(v.moderation) : undefined;
  const problem = safetyToleranceProblem(tolerance, config);
  if (problem) throw new InvalidRequestError(`--safety-tolerance: ${problem.replace("this server has", "there is").replace("start the server with ", "give ")}`);
  return config ? { moderator: new Moderator(config, new OrtBackend()), tolerance } : undefined;
}
