// What `flux2 generate` and `flux2 edit` share: model options, number
// parsing, the memory plan, running the pipeline with progress, and writing
// images with their parameters.

import * as fs from "node:fs";
import * as path from "node:path";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { requireDefaultModel } from "../pipeline/default_model.js";
import { openCheckpoint, transformerConfig, type Checkpoint, type Variant } from "../pipeline/checkpoint.js";
import { Flux2Pipeline, InvalidRequestError, type GenerateOptions, type GenerateResult, type LoraUse } from "../pipeline/flux2.js";
import { encodeImage, insertPngText, type ImageFormat } from "../pipeline/image.js";
import { assertFits, describePlan, planMemory } from "../pipeline/memory.js";
import { formatParameters, type ImageRecord } from "../pipeline/metadata.js";
import { PromptTokenizer } from "../text/tokenizer.js";
import { MistralPromptTokenizer } from "../text/mistral_prompt.js";
import { ProgressBar } from "./progress.js";
import { specFor } from "../quant/blockwise.js";
import type { LoadQuantOptions } from "../quant/quantize.js";

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
  --variant V             klein | klein-base | klein-kv | dev (default: detected)
  --device D              cpu (default) | webgpu | cuda
  --quantize int8|int4    block-quantize the transformer and text-encoder Linear
                          weights at load (written once to $FLUX2_CACHE/quant,
                          then memory-mapped); see docs/performance.md
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
  quantize: { type: "string" },
} as const;

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
export function quantizeOptions(v: string | undefined, log: (s: string) => void): LoadQuantOptions | undefined {
  const q = quantizeArg(v);
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

/** --quantize int8|int4 (undefined when absent). */
export function quantizeArg(v: string | undefined): "int8" | "int4" | undefined {
  if (v === undefined) return undefined;
  if (v !== "int8" && v !== "int4") throw new InvalidRequestError(`--quantize must be int8 or int4, got "${v}"`);
  return v;
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

export function numOption(v: string | undefined, name: string, lo: number, hi: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < lo || n > hi) throw new InvalidRequestError(`--${name} must be a number from ${lo} to ${hi}, got "${v}"`);
  return n;
}

export function outputFormat(file: string): ImageFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === ".png") return "png";
  if (ext === ".jpg" || ext === ".jpeg") return "jpg";
  if (ext === ".webp") return "webp";
  throw new InvalidRequestError(`--out ${file}: use a .png, .jpg or .webp file name`);
}

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
  return openCheckpoint(v.model, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined,
  });
}

/** Print the memory plan and refuse (unless --force) a run that cannot fit. */
export function checkMemory(ck: Checkpoint, v: ModelArgs, width: number, height: number, batch: number, maxLen: number): void {
  const log = logger(v.quiet);
  const teHidden = JSON.parse(fs.readFileSync(ck.textEncoder.config!, "utf8")).hidden_size ?? 2560;
  const plan = planMemory(ck, transformerConfig(ck), width, height, batch, maxLen, teHidden, quantizeArg(v.quantize));
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
  const pipe = Flux2Pipeline.fromPretrained(v.model!, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined, backend: new OrtBackend({ device: (v.device ?? "cpu") as Device }), loras,
    quantize: quantizeOptions(v.quantize, log),
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

/** Write each image with its A1111 "parameters" text (and, for PNG, a "flux2" JSON chunk). */
export async function writeImages(result: GenerateResult, out: string, record: (i: number) => ImageRecord, log: (s: string) => void): Promise<string[]> {
  const format = outputFormat(out);
  const paths = outputPaths(out, result.images.length);
  for (const [i, img] of result.images.entries()) {
    const r = record(i);
    let buf = await encodeImage(img.rgb, img.width, img.height, format, formatParameters(r));
    if (format === "png") buf = insertPngText(buf, "flux2", JSON.stringify(r));
    fs.mkdirSync(path.dirname(path.resolve(paths[i])), { recursive: true });
    fs.writeFileSync(paths[i], buf);
    log(`wrote ${paths[i]}`);
  }
  return paths;
}
