// flux2 edit: reference-image editing, img2img, inpainting and outpainting.

import * as path from "node:path";
import { parseArgs } from "node:util";
import { InvalidRequestError } from "../util/errors.js";
import { checkReferenceCount, MAX_REFERENCES } from "../pipeline/reference.js";
import { modelDefaults, sizeNote } from "../pipeline/model_defaults.js";
import { GUIDANCE_RANGE, STEPS_RANGE, sizeRuleFor } from "../pipeline/variants.js";
import type { GenerationRequest } from "../api/request.js";
import { checkRequest, DEFAULT_INPAINT_STRENGTH, DEFAULT_MAX_INPUT_PIXELS, prepareGeneration } from "../api/prepare.js";
import { imageField } from "../api/request.js";
import { imageRecord } from "../api/output.js";
import {
  MODEL_HELP, MODEL_OPTIONS, MODERATION_HELP, PROMPT_FILE_HELP, cliModeration, collectPrompts, checkMemory, intOption, latentMultiple, logger,
  checkModelFields, numOption, openModel, parseCliRequest, requestFormat, runPipeline, warnLongPrompts, writeImages,
} from "./common.js";
import { IMAGE_UPSAMPLING_REFUSED } from "../text/upsample.js";

const HELP = `usage: flux2 edit [--model PATH] -i IMAGE [-i IMAGE ...] --prompt TEXT [options]

Edits with reference images (up to ${MAX_REFERENCES}), or repaints part of an image.

Modes:
  (default)               multi-reference editing: the model sees every -i image;
                          the output size follows the first one unless given
  --mask MASK.png         inpainting: repaint the white part of MASK (same size
                          as the first -i image); other -i images are references.
                          With --mask, --strength or --expand the output is the
                          first image's size (plus the expansion): a --width or
                          --height that differs is refused, never stretched
  --strength S            0..1: how much of the first image to repaint (img2img
                          without --mask, inpainting with it; default with
                          --mask or --expand: ${DEFAULT_INPAINT_STRENGTH}, as diffusers' inpainting)
  --expand T,R,B,L        outpainting: extend the canvas of the first -i image by
                          T,R,B,L pixels (edges copied outward) and paint them in

${MODEL_HELP}

${MODERATION_HELP}

Options:
  -i, --image FILE        a reference image (PNG, JPEG, WebP, ...); repeatable
  --prompt TEXT           what to do (plain text, JSON and hex colours welcome)
${PROMPT_FILE_HELP}
  --width W --height H    output size of a reference edit (multiples of 16, at
                          least 64, at most 4 MP; default: the first image,
                          scaled down to the largest side the model's folder
                          records: 128 px for flux2-mini)
  --steps N --guidance G  as in flux2 generate (defaults per variant)
  --seed S                seed (default 0)
  --kv                    reuse the references' keys/values after step 0 (the
                          klein 9B KV checkpoint does this by default)
  --bfl-pixel-cap         cap a single reference at 2024² pixels as BFL's code
                          does (default: 1024², as diffusers)
  --max-pixels N          refuse input images above N pixels before decoding
                          them (decompression-bomb guard; default 64 MP)
  --out FILE              .png (default edit.png), .jpg or .webp
  --preview-dir DIR       write a preview per step
  --force                 run even if the memory estimate says it will not fit
  --no-watermark          do not embed the invisible watermark (on by default;
                          images under 256x256 pixels are too small to carry it);
                          the EXIF/XMP "AI generated" tags are always written
  --quiet                 no progress output
  -h, --help              this text

References larger than 1 MP are downscaled (Lanczos, as the reference
implementation does) and every reference is centre-cropped to multiples of 16.
Both are reported, and recorded in the output's metadata.`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  image: { type: "string", short: "i", multiple: true }, mask: { type: "string" }, strength: { type: "string" },
  expand: { type: "string" }, kv: { type: "boolean" }, "bfl-pixel-cap": { type: "boolean" }, "max-pixels": { type: "string" },
} as const;

export function parseExpand(s: string): [number, number, number, number] {
  const parts = s.split(",").map((x) => Number(x.trim()));
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 2048)) {
    throw new InvalidRequestError(`--expand takes four pixel counts from 0 to 2048: top,right,bottom,left (got "${s}")`);
  }
  if (parts.every((n) => n === 0)) throw new InvalidRequestError("--expand: at least one side must grow");
  return parts as [number, number, number, number];
}

/** The flags as a GenerationRequest (image fields hold file paths), checked by the same schema as the server's JSON. */
export function editRequest(v: EditArgs, prompt: string, files: string[], out: string): GenerationRequest {
  const images = Object.fromEntries(files.map((f, i) => [imageField(i), f]));
  return parseCliRequest({
    prompt, ...images, mask_image: v.mask, strength: numOption(v.strength, "strength", 0, 1),
    expand: v.expand !== undefined ? parseExpand(v.expand) : undefined,
    width: intOption(v.width, "width", 1, 1 << 16), height: intOption(v.height, "height", 1, 1 << 16),
    steps: intOption(v.steps, "steps", STEPS_RANGE.min, STEPS_RANGE.max), guidance: numOption(v.guidance, "guidance", GUIDANCE_RANGE.min, GUIDANCE_RANGE.max),
    seed: intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0, negative_prompt: v["negative-prompt"],
    output_format: requestFormat(out),
  });
}

type EditArgs = ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; tokens: true }>>["values"];

export async function runEditCommand(argv: string[]): Promise<number> {
  const { values: v, tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, tokens: true });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const prompts = collectPrompts(tokens);
  if (prompts.length !== 1) throw new InvalidRequestError(`give exactly one prompt (--prompt TEXT or --prompt-file FILE); got ${prompts.length}`);
  const files = v.image ?? [];
  if (files.length === 0) throw new InvalidRequestError("give at least one image with -i FILE");
  if (files.length > MAX_REFERENCES) throw new InvalidRequestError(`${files.length} images given; at most ${MAX_REFERENCES} are supported`);
  if (v.mask && v.expand) throw new InvalidRequestError("--mask and --expand cannot be combined (--expand makes its own mask)");
  const out = v.out ?? "edit.png";
  const request = editRequest(v, prompts[0], files, out);
  if (v["upsample-prompt"]) throw new InvalidRequestError(`--upsample-prompt: ${IMAGE_UPSAMPLING_REFUSED}`);
  const moderation = cliModeration(v);
  moderation?.moderator.checkPrompt(prompts[0]);
  const log = logger(v.quiet);
  const ck = openModel(v);
  const d = modelDefaults(ck);
  checkModelFields(request, ck);
  checkRequest(request, sizeRuleFor(latentMultiple(ck)), d);
  await moderation?.moderator.checkPromptWithLlm(prompts[0], ck);
  const warning = checkReferenceCount(files.length, ck.variant);
  if (warning) log(`warning: ${warning}`);
  // Sizes, strengths and references: the request layer, as for the server.
  const prepared = await prepareGeneration(request, {
    defaults: d, latentMultiple: latentMultiple(ck), readInput: (file) => file,
    maxPixels: intOption(v["max-pixels"], "max-pixels", 1, 1 << 30) ?? DEFAULT_MAX_INPUT_PIXELS,
    pixelCap: v["bfl-pixel-cap"] ? "bfl" : "diffusers",
    inspect: async (field, image) => { await moderation?.moderator.checkInputs([{ what: files[fieldIndex(field)] ?? field, image }], moderation.tolerance); },
  });
  for (const n of prepared.notes) log(n);
  const { width, height, steps } = prepared.options;
  const maxLen = intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096) ?? d.maxSequenceLength;
  const note = sizeNote(d, width, height);
  if (note) log(`note: ${note}`);
  const refs = [...(prepared.options.init ? [prepared.options.init.image] : []), ...(prepared.options.references ?? [])];
  checkMemory(ck, v, { width, height, batch: 1, textLength: maxLen, references: refs.map((r) => ({ width: r.width, height: r.height })), kvCache: v.kv || undefined });
  await warnLongPrompts(ck, prompts, maxLen, log);

  const started = Date.now();
  const result = await runPipeline(v, { ...prepared.options, maxSequenceLength: maxLen, kvCache: v.kv || undefined }, steps);
  await writeImages(result, out, (i) => imageRecord(result, i, request, prepared, {
    model: path.basename(path.resolve(v.model!)), variant: ck.variant,
    loras: result.loras.map((l) => ({ name: l.name ?? path.basename(l.file), strength: l.strength })),
  }), log, !v["no-watermark"], moderation);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}

/** input_image → 0, input_image_2 → 1, … */
function fieldIndex(field: string): number {
  return field === "input_image" ? 0 : Number(field.replace("input_image_", "")) - 1;
}
