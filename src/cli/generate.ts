// flux2 generate: text to image from a checkpoint folder.

import * as path from "node:path";
import { parseArgs } from "node:util";
import { readAll } from "../io/safetensors.js";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { UPSAMPLE_MAX_NEW_TOKENS, upsamplePrompts } from "../text/upsample.js";
import { InvalidRequestError } from "../util/errors.js";
import { modelDefaults, sizeNote } from "../pipeline/model_defaults.js";
import { tensor, type Tensor } from "../util/tensor.js";
import { GUIDANCE_RANGE, STEPS_RANGE, sizeRuleFor } from "../pipeline/variants.js";
import { checkRequest, checkSize, latentsSize, prepareGeneration, type RunExtras } from "../api/prepare.js";
import { imageRecord } from "../api/output.js";
import {
  MODEL_HELP, MODEL_OPTIONS, MODERATION_HELP, PROMPT_FILE_HELP, cliModeration, collectPrompts, checkMemory, intOption, latentMultiple, logger, numOption,
  checkModelFields, openModel, outputFormat, parseCliRequest, requestFormat, runPipeline, warnLongPrompts, writeImages,
} from "./common.js";

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
                          default 4); refused by distilled klein, which has none
  --seed S                seed (default 0); image i of a run uses seed+i, so the
                          same seed and parameters give byte-identical files
  --num-images K          images per prompt (default 1)
  --batch N               images per transformer forward (default: all)
  --initial-latents FILE  start from this noise (.safetensors, tensor
                          "initial_latents" or the only tensor, shape
                          (prompts x K, C, H/g, W/g) for the model's grid g:
                          (.., 128, H/16, W/16) for FLUX.2, the layout of the
                          golden fixtures) instead of the seed; it fixes the
                          size and the image count

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
  if (t.dtype !== "F32" || t.shape.length !== 4) throw new InvalidRequestError(`${file}: initial latents must be float32 (B, C, H/grid, W/grid), got ${t.dtype}[${t.shape}]`);
  return tensor(t.data as Float32Array, t.shape);
}

/** --width/--height given with --initial-latents must be the size the latents stand for. */
function checkLatentsSize(latents: Tensor<Float32Array>, multiple: number, width?: number, height?: number): void {
  const size = latentsSize(latents, multiple);
  if ((width !== undefined && width !== size.width) || (height !== undefined && height !== size.height)) {
    throw new InvalidRequestError(`--initial-latents stand for ${size.width}×${size.height}; --width/--height ${width ?? "-"}×${height ?? "-"} disagree: leave them out`);
  }
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
  const d = modelDefaults(ck);
  const numImages = intOption(v["num-images"], "num-images", 1, 64);
  // The flags as one GenerationRequest (the server's schema) plus what only a command line asks
  // (several prompts, up to 64 images each, initial noise); the request layer checks them all, the
  // size rule included, before any model is loaded, and again once upsampling has rewritten the prompts.
  const width = intOption(v.width, "width", 1, 1 << 16), height = intOption(v.height, "height", 1, 1 << 16);
  if (latents) checkLatentsSize(latents, latentMultiple(ck), width, height);
  else checkSize(width ?? d.width, height ?? d.height, sizeRuleFor(latentMultiple(ck))); // the rule's own message, before the schema's bounds
  const request = (prompt: string) => parseCliRequest({
    prompt, negative_prompt: v["negative-prompt"], output_format: requestFormat(out),
    // Initial latents fix the size (the golden fixtures' are under the 64 px minimum); the flags, if given, must agree.
    width: latents ? undefined : width, height: latents ? undefined : height,
    steps: intOption(v.steps, "steps", STEPS_RANGE.min, STEPS_RANGE.max), guidance: numOption(v.guidance, "guidance", GUIDANCE_RANGE.min, GUIDANCE_RANGE.max),
    seed: intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0,
  });
  const extras = (all: string[]): RunExtras => ({ prompts: all, numImagesPerPrompt: numImages, latents });
  const first = request(prompts[0]);
  checkModelFields(first, ck);
  checkRequest(first, sizeRuleFor(latentMultiple(ck)), d, extras(prompts));
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
  const req = request(prompts[0]);
  const prepared = await prepareGeneration(req, { defaults: d, latentMultiple: latentMultiple(ck), readInput: (file) => file }, extras(prompts));
  const { steps } = prepared.options;
  const maxLen = intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096) ?? d.maxSequenceLength;
  const batch = intOption(v.batch, "batch", 1, 64);
  const note = sizeNote(d, prepared.options.width, prepared.options.height);
  if (note) log(`note: ${note}`);
  checkMemory(ck, v, { width: prepared.options.width, height: prepared.options.height, batch: batch ?? (prepared.options.numImagesPerPrompt ?? 1) * prompts.length, textLength: maxLen });
  await warnLongPrompts(ck, prompts, maxLen, log);

  const started = Date.now();
  const result = await runPipeline(v, { ...prepared.options, maxSequenceLength: maxLen, batchSize: batch }, steps);
  await writeImages(result, out, (i) => {
    const prompt = result.images[i].prompt ?? prompts[0];
    return imageRecord(result, i, { ...req, prompt }, prepared, {
      model: path.basename(path.resolve(v.model!)), variant: ck.variant, upsampledFrom: originals.get(prompt),
      loras: result.loras.map((l) => ({ name: l.name ?? path.basename(l.file), strength: l.strength })),
      initialLatents: v["initial-latents"] ? path.basename(v["initial-latents"]) : null,
    });
  }, log, !v["no-watermark"], moderation);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
