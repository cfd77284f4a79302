// flux2 generate: text to image from a checkpoint folder.

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { readAll } from "../io/safetensors.js";
import { openCheckpoint, transformerConfig, type Variant } from "../pipeline/checkpoint.js";
import { Flux2Pipeline, InvalidRequestError, type GenerateResult } from "../pipeline/flux2.js";
import { encodeImage, insertPngText, type ImageFormat } from "../pipeline/image.js";
import { assertFits, describePlan, planMemory } from "../pipeline/memory.js";
import { formatParameters, type ImageRecord } from "../pipeline/metadata.js";
import { tensor } from "../util/tensor.js";
import { ProgressBar } from "./progress.js";

const HELP = `usage: flux2 generate --model PATH --prompt TEXT [options]

Generates images with a FLUX.2 checkpoint and writes them with their
generation parameters embedded (PNG "parameters" text, as A1111/ComfyUI do).

Model:
  --model PATH            diffusers folder (model_index.json, transformer/, vae/,
                          text_encoder/, tokenizer/), or a BFL single transformer
                          file (then also --vae, --text-encoder, --tokenizer)
  --transformer FILE      use this transformer file instead (BFL or diffusers)
  --vae PATH              VAE folder or ae.safetensors
  --text-encoder DIR      text encoder folder
  --tokenizer DIR         tokenizer folder
  --variant V             klein | klein-base | klein-kv | dev (default: detected)
  --device D              cpu (default) | webgpu | cuda

Prompt:
  --prompt TEXT           the prompt; long, JSON-structured ({"scene": ...}) and
                          hex colours (#FF8800) pass through as written; repeat
                          --prompt for several prompts in one run
  --negative-prompt TEXT  negative prompt (klein base CFG only; default empty)
  --max-sequence-length N text tokens (default 512; longer prompts are cut, with a warning)

Sampling:
  --width W --height H    output size: multiples of 16, at least 64, at most 4 MP
                          (default 1024x1024)
  --steps N               denoising steps, 1-50 (default: 4 klein, 50 base/dev)
  --guidance G            guidance scale 1-10 (klein base: CFG, dev: embedded;
                          ignored by distilled klein; default 4)
  --seed S                seed (default 0); image i of a run uses seed+i, so the
                          same seed and parameters give byte-identical files
  --num-images K          images per prompt (default 1)
  --batch N               images per transformer forward (default: all)
  --initial-latents FILE  start from this noise (.safetensors, tensor
                          "initial_latents" or the only tensor, shape
                          (prompts x K, 128, H/16, W/16), the layout of the golden
                          fixtures) instead of the seed

Output:
  --out FILE              .png (default out.png), .jpg or .webp; with K > 1 the
                          index is added: out-0.png, out-1.png, ...
  --preview-dir DIR       write a small preview PNG after every step
  --force                 run even if the memory estimate says it will not fit
  --quiet                 no progress output
  -h, --help              this text`;

const OPTIONS = {
  model: { type: "string" }, transformer: { type: "string" }, vae: { type: "string" },
  "text-encoder": { type: "string" }, tokenizer: { type: "string" }, variant: { type: "string" },
  device: { type: "string" }, prompt: { type: "string", multiple: true }, "negative-prompt": { type: "string" },
  "max-sequence-length": { type: "string" }, width: { type: "string" }, height: { type: "string" },
  steps: { type: "string" }, guidance: { type: "string" }, seed: { type: "string" },
  "num-images": { type: "string" }, batch: { type: "string" }, "initial-latents": { type: "string" },
  out: { type: "string" }, "preview-dir": { type: "string" }, force: { type: "boolean" },
  quiet: { type: "boolean" }, help: { type: "boolean", short: "h" },
} as const;

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

function readInitialLatents(file: string) {
  const all = readAll(file);
  const t = all.get("initial_latents") ?? (all.size === 1 ? [...all.values()][0] : undefined);
  if (!t) throw new InvalidRequestError(`${file}: expected a tensor named "initial_latents" (or a single tensor); found ${[...all.keys()].join(", ")}`);
  if (t.dtype !== "F32" || t.shape.length !== 4) throw new InvalidRequestError(`${file}: initial latents must be float32 (B, 128, H/16, W/16), got ${t.dtype}[${t.shape}]`);
  return tensor(t.data as Float32Array, t.shape);
}

export async function runGenerateCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.model) throw new InvalidRequestError("--model is required (a FLUX.2 diffusers folder or single file); see flux2 generate --help");
  const prompts = v.prompt ?? [];
  if (prompts.length === 0) throw new InvalidRequestError("--prompt is required");
  const out = v.out ?? "out.png";
  const format = outputFormat(out);
  const log = v.quiet ? () => {} : (s: string) => process.stderr.write(s + "\n");

  const ck = openCheckpoint(v.model, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined,
  });
  const latents = v["initial-latents"] ? readInitialLatents(v["initial-latents"]) : undefined;
  if (latents && latents.shape[0] % prompts.length !== 0) {
    throw new InvalidRequestError(`--initial-latents holds ${latents.shape[0]} images, not a multiple of the ${prompts.length} prompt(s)`);
  }
  const numImages = latents ? latents.shape[0] / prompts.length : intOption(v["num-images"], "num-images", 1, 64) ?? 1;
  const total = numImages * prompts.length;
  const width = intOption(v.width, "width", 1, 1 << 16) ?? (latents ? latents.shape[3] * 16 : 1024);
  const height = intOption(v.height, "height", 1, 1 << 16) ?? (latents ? latents.shape[2] * 16 : 1024);
  const steps = intOption(v.steps, "steps", 1, 50) ?? ck.defaults.steps;
  const guidance = numOption(v.guidance, "guidance", 1, 10) ?? ck.defaults.guidance;
  const seed = intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const maxLen = intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096) ?? 512;
  const batch = intOption(v.batch, "batch", 1, 64);
  if (ck.defaults.distilled && v.guidance !== undefined) log(`note: ${ck.variant} is guidance-distilled; --guidance is ignored`);

  const teHidden = JSON.parse(fs.readFileSync(ck.textEncoder.config!, "utf8")).hidden_size ?? 2560;
  const plan = planMemory(ck, transformerConfig(ck), width, height, batch ?? total, maxLen, teHidden);
  log(`model: ${ck.source} (${ck.variant})\nmemory plan:\n${describePlan(plan)}`);
  if (!v.force) assertFits(plan);

  const pipe = Flux2Pipeline.fromPretrained(v.model, {
    transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer,
    variant: v.variant as Variant | undefined, backend: new OrtBackend({ device: (v.device ?? "cpu") as Device }),
  });
  const tok = await (await import("../text/tokenizer.js")).PromptTokenizer.load(ck.tokenizer);
  for (const p of prompts) {
    if (tok.truncated(p, maxLen)) log(`warning: a prompt is ${tok.tokenCount(p)} tokens; only the first ${maxLen} are used`);
  }

  const bar = v.quiet ? null : new ProgressBar("denoise", steps);
  const previewDir = v["preview-dir"];
  if (previewDir) fs.mkdirSync(previewDir, { recursive: true });
  const started = Date.now();
  let result: GenerateResult;
  try {
    result = await pipe.generate({
      prompt: prompts, numImagesPerPrompt: numImages, negativePrompt: v["negative-prompt"],
      width, height, steps, guidance, seed, latents, maxSequenceLength: maxLen, batchSize: batch,
      preview: !!previewDir,
      onStage: (s) => { if (s !== "denoise") log(`${s}...`); },
      onStep: (info) => {
        bar?.update(info.step);
        if (previewDir && info.preview) {
          const p = info.preview;
          void encodeImage(p.rgb, p.width, p.height, "png").then((b) => fs.writeFileSync(path.join(previewDir, `step-${String(info.step).padStart(2, "0")}.png`), b));
        }
      },
    });
  } finally {
    bar?.done();
    await pipe.release();
  }
  // Seeds are per image: image i has seed + i.
  const paths = outputPaths(out, result.images.length);
  for (const [i, img] of result.images.entries()) {
    const record: ImageRecord = {
      prompt: img.prompt ?? prompts[0], negativePrompt: v["negative-prompt"] ?? null, width, height, steps,
      guidance, seed: latents ? null : seed + i, variant: ck.variant, model: path.basename(path.resolve(v.model)),
      initialLatents: v["initial-latents"] ? path.basename(v["initial-latents"]) : null,
    };
    let buf = await encodeImage(img.rgb, img.width, img.height, format, formatParameters(record));
    if (format === "png") buf = insertPngText(buf, "flux2", JSON.stringify(record));
    fs.mkdirSync(path.dirname(path.resolve(paths[i])), { recursive: true });
    fs.writeFileSync(paths[i], buf);
    log(`wrote ${paths[i]}`);
  }
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
