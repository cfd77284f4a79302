// flux2 edit: reference-image editing, img2img, inpainting and outpainting.

import * as path from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import type { InitImage } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import { decodeImage } from "../pipeline/image.js";
import { checkReferenceCount, MAX_REFERENCES, prepareInpaintImage, prepareReferences, type PreparedReference, type ReferenceImage } from "../pipeline/reference.js";
import { resizeLanczos } from "../pipeline/resize.js";
import { modelDefaults, sizeFromReference, sizeNote } from "../pipeline/model_defaults.js";
import { readVaeConfig, vaeScaleFactor } from "../models/vae.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { MODEL_HELP, MODEL_OPTIONS, MODERATION_HELP, PROMPT_FILE_HELP, cliModeration, collectPrompts, checkMemory, intOption, logger, numOption, openModel, outputFormat, runPipeline, warnLongPrompts, writeImages } from "./common.js";
import { IMAGE_UPSAMPLING_REFUSED } from "../text/upsample.js";

const HELP = `usage: flux2 edit [--model PATH] -i IMAGE [-i IMAGE ...] --prompt TEXT [options]

Edits with reference images (up to ${MAX_REFERENCES}), or repaints part of an image.

Modes:
  (default)               multi-reference editing: the model sees every -i image;
                          the output size follows the first one unless given
  --mask MASK.png         inpainting: repaint the white part of MASK (same size
                          as the first -i image); other -i images are references
  --strength S            0..1: how much of the first image to repaint (img2img
                          without --mask, inpainting with it; default 0.8)
  --expand T,R,B,L        outpainting: extend the canvas of the first -i image by
                          T,R,B,L pixels (edges copied outward) and paint them in

${MODEL_HELP}

${MODERATION_HELP}

Options:
  -i, --image FILE        a reference image (PNG, JPEG, WebP, ...); repeatable
  --prompt TEXT           what to do (plain text, JSON and hex colours welcome)
${PROMPT_FILE_HELP}
  --width W --height H    output size (multiples of 16; default: the first image,
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

const DEFAULT_MAX_INPUT_PIXELS = 64 * 1024 * 1024;

async function readImage(file: string, maxPixels: number): Promise<ReferenceImage> {
  const d = await decodeImage(file, { maxPixels });
  return { rgb: d.rgb, width: d.width, height: d.height };
}

async function readMask(file: string, maxPixels: number): Promise<{ data: Uint8Array; width: number; height: number }> {
  let raw: { data: Buffer; info: { width: number; height: number } };
  // sharp reads the first frame of an animation: a mask must be one image, as every input is.
  const pages = await sharp(file, { limitInputPixels: maxPixels }).metadata().then((m) => m.pages ?? 1, () => 1);
  if (pages > 1) throw new InvalidRequestError(`${file}: the mask is animated (${pages} frames); give a single-frame PNG`);
  try {
    raw = await sharp(file, { limitInputPixels: maxPixels }).flatten({ background: "#000000" }).greyscale().raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new InvalidRequestError(`${file}: cannot read the mask (${(e as Error).message})`);
  }
  return { data: new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.info.width * raw.info.height), width: raw.info.width, height: raw.info.height };
}

export function parseExpand(s: string): [number, number, number, number] {
  const parts = s.split(",").map((x) => Number(x.trim()));
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 4096)) {
    throw new InvalidRequestError(`--expand takes four non-negative pixel counts: top,right,bottom,left (got "${s}")`);
  }
  if (parts.every((n) => n === 0)) throw new InvalidRequestError("--expand: at least one side must grow");
  return parts as [number, number, number, number];
}

/**
 * Outpainting canvas: the image with its edges copied outward, and a mask that
 * is white (repaint) on the new border. Extra pixels are added on the right and
 * bottom so both sides reach a multiple of `multiple`.
 */
export async function expandCanvas(img: ReferenceImage, expand: [number, number, number, number], multiple: number) {
  let [top, right, bottom, left] = expand;
  const W = img.width + left + right, H = img.height + top + bottom;
  right += (multiple - (W % multiple)) % multiple;
  bottom += (multiple - (H % multiple)) % multiple;
  const width = img.width + left + right, height = img.height + top + bottom;
  const canvas = await sharp(Buffer.from(img.rgb), { raw: { width: img.width, height: img.height, channels: 3 } })
    .extend({ top, right, bottom, left, extendWith: "copy" }).raw().toBuffer();
  const mask = new Uint8Array(width * height).fill(255);
  for (let y = 0; y < img.height; y++) mask.fill(0, (y + top) * width + left, (y + top) * width + left + img.width);
  return { image: { rgb: new Uint8Array(canvas), width, height }, mask, padded: [top, right, bottom, left] as const };
}

function describeReference(i: number, r: PreparedReference): string | null {
  const notes: string[] = [];
  if (r.resizedTo) notes.push(`resized from ${r.original.width}×${r.original.height} to ${r.resizedTo.width}×${r.resizedTo.height} (pixel budget)`);
  if (r.cropped) notes.push(`centre-cropped to ${r.cropped.width}×${r.cropped.height}`);
  return notes.length ? `reference ${i + 1}: ${notes.join(", ")}` : null;
}

function checkpointMultiple(ck: Checkpoint): number {
  if (!ck.vae.config) return 16;
  return 2 * vaeScaleFactor(readVaeConfig(ck.vae.config));
}

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
  outputFormat(out);
  if (v["upsample-prompt"]) throw new InvalidRequestError(`--upsample-prompt: ${IMAGE_UPSAMPLING_REFUSED}`);
  const moderation = cliModeration(v);
  moderation?.moderator.checkPrompt(prompts[0]);
  const log = logger(v.quiet);
  const ck = openModel(v);
  await moderation?.moderator.checkPromptWithLlm(prompts[0], ck);
  const multiple = checkpointMultiple(ck);
  const maxPixels = intOption(v["max-pixels"], "max-pixels", 1, 1 << 30) ?? DEFAULT_MAX_INPUT_PIXELS;
  const images = await Promise.all(files.map((f) => readImage(f, maxPixels)));
  await moderation?.moderator.checkInputs(images.map((image, i) => ({ what: files[i], image })), moderation.tolerance);
  const warning = checkReferenceCount(files.length, ck.variant);
  if (warning) log(`warning: ${warning}`);

  const strength = numOption(v.strength, "strength", 0, 1);
  let init: InitImage | undefined;
  let refs: PreparedReference[];
  const notes: string[] = [];
  if (v.mask || v.expand || strength !== undefined) {
    // The first image is repainted; the others are references.
    let base = images[0];
    let mask: Uint8Array | undefined;
    if (v.expand) {
      const e = await expandCanvas(base, parseExpand(v.expand), multiple);
      base = e.image;
      mask = e.mask;
      notes.push(`canvas expanded to ${base.width}×${base.height} (top,right,bottom,left = ${e.padded.join(",")})`);
    } else if (v.mask) {
      const m = await readMask(v.mask, maxPixels);
      if (m.width !== base.width || m.height !== base.height) {
        throw new InvalidRequestError(`the mask is ${m.width}×${m.height} but the image is ${base.width}×${base.height}: give a mask of the same size`);
      }
      mask = m.data;
    }
    const prepared = prepareInpaintImage(base, { multiple });
    if (prepared.image.width !== base.width || prepared.image.height !== base.height) {
      notes.push(`image resized from ${base.width}×${base.height} to ${prepared.image.width}×${prepared.image.height}`);
      if (mask) mask = resizeLanczos(mask, base.width, base.height, 1, prepared.image.width, prepared.image.height);
    }
    init = { image: prepared.image, mask, strength: strength ?? (v.expand ? 1 : 0.8) };
    refs = prepareReferences(images.slice(1), { multiple, pixelCap: v["bfl-pixel-cap"] ? "bfl" : "diffusers" });
  } else {
    refs = prepareReferences(images, { multiple, pixelCap: v["bfl-pixel-cap"] ? "bfl" : "diffusers" });
  }
  refs.forEach((r, i) => {
    const d = describeReference(i + (init ? 1 : 0), r);
    if (d) notes.push(d);
  });
  for (const n of notes) log(n);

  const d = modelDefaults(ck);
  const first = init?.image ?? refs[0].image;
  const fitted = init ? first : sizeFromReference(d, first.width, first.height, multiple);
  const width = init ? first.width : intOption(v.width, "width", 1, 1 << 16) ?? fitted.width;
  const height = init ? first.height : intOption(v.height, "height", 1, 1 << 16) ?? fitted.height;
  const steps = intOption(v.steps, "steps", 1, 50) ?? d.steps;
  const guidance = numOption(v.guidance, "guidance", 1, 10) ?? d.guidance;
  const seed = intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const maxLen = intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096) ?? d.maxSequenceLength;
  const note = sizeNote(d, width, height);
  if (note) log(`note: ${note}`);
  checkMemory(ck, v, width, height, 1, maxLen);
  await warnLongPrompts(ck, prompts, maxLen, log);

  const started = Date.now();
  const result = await runPipeline(v, {
    prompt: prompts[0], width, height, steps, guidance, seed, maxSequenceLength: maxLen,
    negativePrompt: v["negative-prompt"], references: refs.map((r) => r.image), init, kvCache: v.kv || undefined,
  }, steps);
  const references = [
    ...(init ? [{ width: init.image.width, height: init.image.height }] : []),
    ...refs.map((r) => ({
      width: r.image.width, height: r.image.height,
      resizedFrom: r.resizedTo || r.cropped ? `${r.original.width}x${r.original.height}` : undefined,
    })),
  ];
  await writeImages(result, out, (i) => ({
    prompt: prompts[0], negativePrompt: v["negative-prompt"] ?? null, width: result.width, height: result.height,
    steps, guidance, seed: result.images[i].seed, variant: ck.variant, model: path.basename(path.resolve(v.model!)),
    loras: result.loras.map((l) => ({ name: l.name ?? path.basename(l.file), strength: l.strength })),
    references, strength: init?.strength,
  }), log, !v["no-watermark"], moderation);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
