// flux2 generate: text to image from a checkpoint folder.

import * as path from "node:path";
import { parseArgs } from "node:util";
import { readAll } from "../io/safetensors.js";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { UPSAMPLE_MAX_NEW_TOKENS, upsamplePrompts } from "../text/upsample.js";
import { InvalidRequestError } from "../util/errors.js";
import { modelDefaults, sizeNote } from "../pipeline/model_defaults.js";
import { tensor } from "../util/tensor.js";
import { sizeRuleFor } from "../pipeline/variants.js";
import { checkSize } from "../api/prepare.js";
import { MODEL_HELP, MODEL_OPTIONS, MODERATION_HELP, PROMPT_FILE_HELP, cliModeration, collectPrompts, checkMemory, intOption, latentMultiple, logger, numOption, openModel, outputFormat, runPipeline, warnLongPrompts, writeImages } from "./common.js";

const HELP = `usage: flux2 generate [--model PATH] --prompt TEXT [options]

Generates images with a FLUX.2 checkpoint and writes them with their
generation parameters embedded (PNG "parameters" text, as A1111/ComfyUI do).

${MODEL_HELP}

Prompt:
  --prompt TEXT           the prompt; long, JSON-structured ({"scene": ...}) and
                          hex colours (#FF8800) pass through as written; repeat
                          --prompt for several prompts in one run
${PROMPT_FILE_HELP}
  --negative-prompt TEXT  negative prompt (klein base CFG only; default empty)
  --max-sequence-length N text tokens (default: the model's, 512 for FLUX.2, 128
                          for flux2-mini; longer prompts are cut, with a warning)
  --upsample-prompt       rewrite each prompt into a detailed one with the model's own
                          text encoder LLM first (diffusers' Flux2Pipeline system
                          message, temperature 0.15, seeded by --seed); the rewrite is
                          printed and recorded in the image (the original too)
  --upsample-tokens N     longest rewrite in tokens (default 512, as diffusers)

Sampling:
  --width W --height H    output size: multiples of 16, at least 64, at most 4 MP
                          (default 1024x1024, or the size the model folder
                          records: 64x64 for flux2-mini)
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

${MODERATION_HELP}

Output:
  --out FILE              .png (default out.png), .jpg or .webp; with K > 1 the
                          index is added: out-0.png, out-1.png, ...
  --preview-dir DIR       write a small preview PNG after every step
  --force                 run even if the memory estimate says it will not fit
  --no-watermark          do not embed the invisible watermark (on by default;
                          images under 256x256 pixels are too small to carry it);
                          the EXIF/XMP "AI generated" tags are always written
  --quiet                 no progress output
  -h, --help              this text`;

const OPTIONS = { ...MODEL_OPTIONS, "initial-latents": { type: "string" } } as const;

function readInitialLatents(file: string) {
  const all = readAll(file);
  const t = all.get("initial_latents") ?? (all.size === 1 ? [...all.values()][0] : undefined);
  if (!t) throw new InvalidRequestError(`${file}: expected a tensor named "initial_latents" (or a single tensor); found ${[...all.keys()].join(", ")}`);
  if (t.dtype !== "F32" || t.shape.length !== 4) throw new InvalidRequestError(`${file}: initial latents must be float32 (B, 128, H/16, W/16), got ${t.dtype}[${t.shape}]`);
  return tensor(t.data as Float32Array, t.shape);
}

export async function runGenerateCommand(argv: string[]): Promise<number> {
  const { values: v, tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, tokens: true });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const prompts = collectPrompts(tokens);
  if (prompts.length === 0) throw new InvalidRequestError("--prompt TEXT or --prompt-file FILE is required");
  const out = v.out ?? "out.png";
  outputFormat(out);
  const moderation = cliModeration(v);
  for (const p of prompts) moderation?.moderator.checkPrompt(p);
  const log = logger(v.quiet);
  const ck = openModel(v);
  const latents = v["initial-latents"] ? readInitialLatents(v["initial-latents"]) : undefined;
  if (latents && latents.shape[0] % prompts.length !== 0) {
    throw new InvalidRequestError(`--initial-latents holds ${latents.shape[0]} images, not a multiple of the ${prompts.length} prompt(s)`);
  }
  const d = modelDefaults(ck);
  const width = intOption(v.width, "width", 1, 1 << 16) ?? (latents ? latents.shape[3] * 16 : d.width);
  const height = intOption(v.height, "height", 1, 1 << 16) ?? (latents ? latents.shape[2] * 16 : d.height);
  // The size rule (src/pipeline/variants.ts) before any model is loaded. Initial latents fix the
  // size themselves (the golden fixtures' tiny sizes): the pipeline checks them against the grid.
  if (!latents) checkSize(width, height, sizeRuleFor(latentMultiple(ck)));
  // Rewrite the prompts first (their own session over the text encoder files, released after).
  const originals = new Map<string, string>();
  if (v["upsample-prompt"]) {
    log("upsampling the prompt with the text encoder...");
    const rewritten = await upsamplePrompts(ck, prompts, {
      backend: new OrtBackend({ device: (v.device ?? "cpu") as Device }), seed: intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0,
      sampling: { maxNewTokens: intOption(v["upsample-tokens"], "upsample-tokens", 1, 4096) ?? UPSAMPLE_MAX_NEW_TOKENS },
    });
    rewritten.forEach((p, i) => {
      log(`upsampled prompt${prompts.length > 1 ? ` ${i + 1}` : ""}: ${p}`);
      moderation?.moderator.checkPrompt(p);
      originals.set(p, prompts[i]);
      prompts[i] = p;
    });
  }
  for (const p of prompts) await moderation?.moderator.checkPromptWithLlm(p, ck);
  const numImages = latents ? latents.shape[0] / prompts.length : intOption(v["num-images"], "num-images", 1, 64) ?? 1;
  const steps = intOption(v.steps, "steps", 1, 50) ?? d.steps;
  const guidance = numOption(v.guidance, "guidance", 1, 10) ?? d.guidance;
  const seed = intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const maxLen = intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096) ?? d.maxSequenceLength;
  const batch = intOption(v.batch, "batch", 1, 64);
  if (ck.defaults.distilled && v.guidance !== undefined) log(`note: ${ck.variant} is guidance-distilled; --guidance is ignored`);
  const note = sizeNote(d, width, height);
  if (note) log(`note: ${note}`);
  checkMemory(ck, v, width, height, batch ?? numImages * prompts.length, maxLen);
  await warnLongPrompts(ck, prompts, maxLen, log);

  const started = Date.now();
  const result = await runPipeline(v, {
    prompt: prompts, numImagesPerPrompt: numImages, negativePrompt: v["negative-prompt"],
    width, height, steps, guidance, seed, latents, maxSequenceLength: maxLen, batchSize: batch,
  }, steps);
  await writeImages(result, out, (i) => ({
    prompt: result.images[i].prompt ?? prompts[0], upsampledFrom: originals.get(result.images[i].prompt ?? prompts[0]), negativePrompt: v["negative-prompt"] ?? null,
    width: result.width, height: result.height, steps, guidance, seed: result.images[i].seed,
    variant: ck.variant, model: path.basename(path.resolve(v.model!)),
    loras: result.loras.map((l) => ({ name: l.name ?? path.basename(l.file), strength: l.strength })),
    initialLatents: v["initial-latents"] ? path.basename(v["initial-latents"]) : null,
  }), log, !v["no-watermark"], moderation);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
