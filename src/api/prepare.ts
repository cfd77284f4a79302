// The one place that turns a GenerationRequest into pipeline options: it reads
// and decodes the images and the mask, expands the canvas for outpainting,
// decides the strength and the output size, prepares the references, and checks
// every size before anything is loaded. `flux2 generate`, `flux2 edit` and the
// server's job runner all call it, so the same request gives the same pixels
// through each (test/front_doors.test.ts).

import sharp from "sharp";
import type { GenerateOptions, InitImage } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import { decodeImage } from "../pipeline/image.js";
import type { ImageRecord } from "../pipeline/metadata.js";
import type { ModelDefaults } from "../pipeline/model_defaults.js";
import {
  MAX_REFERENCES, prepareInpaintImage, prepareReference, preparedSize, referencePixelCap,
  type PixelCapMode, type PreparedReference, type ReferenceImage,
} from "../pipeline/reference.js";
import { resizeLanczos } from "../pipeline/resize.js";
import { imageField, referenceInputs, type GenerationRequest } from "./request.js";
import { sizeProblem, sizeRuleFor, type SizeRule } from "../pipeline/variants.js";
import type { Tensor } from "../util/tensor.js";

/** Refuse a size that breaks the rule (multiples of 16, at least 64, at most 4 MP), before anything is loaded. */
export function checkSize(width: number, height: number, rule: SizeRule, what?: string): void {
  const problem = sizeProblem(width, height, rule, what);
  if (problem) throw new InvalidRequestError(problem);
}

/**
 * Strength of inpainting and outpainting when the request gives none: 1, the
 * masked area repainted from pure noise. This is diffusers' default for
 * inpainting (StableDiffusionInpaintPipeline and FluxFillPipeline both default
 * `strength=1.0`) and what BFL's FLUX.1 Fill endpoint does (it has no strength;
 * our `mask` field is its spelling). FluxInpaintPipeline's 0.6 is a partial
 * repaint, which a user asks for by giving `strength`. img2img without a mask
 * has no default: giving `strength` is what asks for img2img.
 */
export const DEFAULT_INPAINT_STRENGTH = 1;

/** Largest input image decoded, in pixels, unless the caller says otherwise (decompression bombs). */
export const DEFAULT_MAX_INPUT_PIXELS = 64 * 1024 * 1024;

export interface PrepareEnv {
  /** The model's defaults: steps, guidance, size, largest side (src/pipeline/model_defaults.ts). */
  defaults: ModelDefaults;
  /** 2 · the VAE's scale factor: what references are cropped to (16 for FLUX.2, 4 for the tiny test checkpoints). */
  latentMultiple: number;
  /** Most pixels an input image may have before it is decoded. */
  maxPixels?: number;
  /** The bytes (or a file path) behind an image field's value: a CLI path, or the server's stored copy. */
  readInput: (value: string, field: string) => Buffer | string;
  /** diffusers' reference pixel cap (1024² always) or BFL's (2024² for a single reference). */
  pixelCap?: PixelCapMode;
  /** Called between pieces of work; throws to stop (a cancelled server job). */
  check?: () => void;
  /** Waits on work that cannot be interrupted (a libvips decode); the server stops waiting on cancel. */
  settle?: <T>(work: Promise<T>) => Promise<T>;
  /** Each decoded input image as it arrives (moderation); throws to refuse it. */
  inspect?: (field: string, image: ReferenceImage) => Promise<void>;
  /** Each piece of work as it begins ("decoding input_image", "resizing reference 1"): a cancel can say where it stopped. */
  stage?: (what: string) => void;
}

export interface PreparedGeneration {
  /** Pipeline options; the caller adds its own progress hooks. */
  options: GenerateOptions & { width: number; height: number; steps: number; guidance: number; seed: number };
  /** What the output's metadata records about the inputs. */
  references: ImageRecord["references"];
  strength?: number;
  /** What was done to the inputs (resized, cropped, canvas grown), for the log. */
  notes: string[];
}

/**
 * What a command-line run may ask beyond one HTTP request (`flux2 generate`):
 * several prompts in one run, more images per prompt than the API's 8, and
 * fixed initial noise. prepareGeneration checks them with the request.
 */
export interface RunExtras {
  /** Every prompt of the run, the request's prompt first; image i is seeded seed + i across them all. */
  prompts?: string[];
  /** Images per prompt (1–64); overrides the request's num_images. */
  numImagesPerPrompt?: number;
  /**
   * Initial noise (B, C, H/grid, W/grid) instead of seeded noise, text to image only: it fixes
   * the number of images (B / prompts) and, unless given, the size. Its size is not held to the
   * size rule (the golden fixtures are smaller than 64 px); the pipeline checks it against the grid.
   */
  latents?: Tensor<Float32Array>;
}

/** Does the request repaint its first image (img2img, inpaint, outpaint) rather than use it as a reference? */
export function repaints(r: GenerationRequest): boolean {
  return r.mask_image !== undefined || r.mask !== undefined || r.expand !== undefined || r.strength !== undefined;
}

/**
 * Checks that need no image and no model: combinations, counts, and, for text to
 * image, the size. Run before anything is loaded.
 */
export function checkRequest(r: GenerationRequest, rule: SizeRule, defaults: ModelDefaults, extras: RunExtras = {}): void {
  const refs = referenceInputs(r);
  if (refs.length > MAX_REFERENCES) throw new InvalidRequestError(`${refs.length} input images given; at most ${MAX_REFERENCES} are supported`);
  const mask = r.mask_image ?? r.mask;
  if (r.mask_image !== undefined && r.mask !== undefined) throw new InvalidRequestError("give the mask once: mask (BFL's name) or mask_image, not both");
  for (const [f, v] of [["mask_image", mask], ["strength", r.strength], ["expand", r.expand]] as const) {
    if (v !== undefined && r.input_image === undefined) throw new InvalidRequestError(`${f} needs input_image (the image to repaint)`);
  }
  if (mask !== undefined && r.expand !== undefined) throw new InvalidRequestError("expand makes its own mask: do not combine it with mask_image");
  if (r.expand && r.expand.every((n) => n === 0)) throw new InvalidRequestError("expand: at least one side must grow");
  // An edit's size is checked once its image's size is known (prepareGeneration); text to image's now.
  if (extras.latents) checkLatents(r, extras, refs.length, rule.multipleOf);
  else if (refs.length === 0) checkSize(r.width ?? defaults.width, r.height ?? defaults.height, rule);
  else if (!repaints(r) && r.width !== undefined && r.height !== undefined) checkSize(r.width, r.height, rule);
}

/** Initial latents: text to image only, and a whole number of images per prompt. */
function checkLatents(r: GenerationRequest, extras: RunExtras, references: number, multiple: number): void {
  const t = extras.latents!;
  if (references > 0) throw new InvalidRequestError("initial latents are for text to image: do not give input images with them");
  if (t.shape.length !== 4) throw new InvalidRequestError(`initial latents must be (B, C, H/grid, W/grid), got shape [${t.shape}]`);
  const size = latentsSize(t, multiple);
  if ((r.width !== undefined && r.width !== size.width) || (r.height !== undefined && r.height !== size.height)) {
    throw new InvalidRequestError(`the initial latents stand for ${size.width}×${size.height} (${t.shape[3]}×${t.shape[2]} cells of ${multiple} px); ` +
      `width/height ${r.width ?? "-"}×${r.height ?? "-"} disagree: leave them out`);
  }
  const prompts = extras.prompts?.length ?? 1;
  if (t.shape[0] % prompts !== 0) throw new InvalidRequestError(`the initial latents hold ${t.shape[0]} images, not a multiple of the ${prompts} prompt(s)`);
  const perPrompt = extras.numImagesPerPrompt ?? r.num_images;
  if (perPrompt !== undefined && perPrompt * prompts !== t.shape[0]) {
    throw new InvalidRequestError(`${perPrompt} image(s) per prompt asked, but the initial latents hold ${t.shape[0]} images for ${prompts} prompt(s): leave the image count out`);
  }
}

/** The prompt(s) of a run: the request's, or every prompt of a command-line run (the first must be the request's). */
function runPrompts(r: GenerationRequest, extras: RunExtras): string | string[] {
  const all = extras.prompts;
  if (!all || all.length <= 1) return r.prompt;
  if (all[0] !== r.prompt) throw new Error("internal: the request's prompt must be the first of the run's prompts");
  return all;
}

async function readImage(env: PrepareEnv, value: string, field: string): Promise<ReferenceImage> {
  const settle = env.settle ?? ((p) => p);
  env.stage?.(`decoding ${field}`);
  // Only the decode's own failures become a bad-request error; what `settle` throws (a cancel) passes through.
  const decode = (async () => {
    try {
      return await decodeImage(env.readInput(value, field), { maxPixels: env.maxPixels ?? DEFAULT_MAX_INPUT_PIXELS });
    } catch (e) {
      if (e instanceof InvalidRequestError) throw e;
      throw new InvalidRequestError(`${field}: ${(e as Error).message}`);
    }
  })();
  const d = await settle(decode);
  const image = { rgb: d.rgb, width: d.width, height: d.height };
  await env.inspect?.(field, image);
  return image;
}

/** White = repaint; alpha flattened onto black; one frame only. */
async function readMask(env: PrepareEnv, value: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  const settle = env.settle ?? ((p) => p);
  env.stage?.("decoding mask_image");
  const input = env.readInput(value, "mask_image");
  const limitInputPixels = env.maxPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  const pages = await settle(sharp(input, { limitInputPixels }).metadata().then((m) => m.pages ?? 1, () => 1));
  if (pages > 1) throw new InvalidRequestError(`mask_image is animated (${pages} frames); give a single-frame PNG`);
  const raw = await settle(sharp(input, { limitInputPixels }).flatten({ background: "#000000" }).greyscale().raw().toBuffer({ resolveWithObject: true })
    .catch((e: Error) => { throw new InvalidRequestError(`mask_image: cannot read the mask (${e.message})`); }));
  return { data: new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.info.width * raw.info.height), width: raw.info.width, height: raw.info.height };
}

/**
 * Outpainting canvas: the image with its edges copied outward, and a mask that
 * is white (repaint) on the new border. Extra pixels are added on the right and
 * bottom so both sides reach a multiple of `multiple`.
 */
export async function expandCanvas(img: ReferenceImage, expand: readonly [number, number, number, number], multiple: number) {
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

/**
 * The output size of an img2img / inpaint / outpaint request whose input_image is w×h, from
 * the size alone (the server checks it at submit from the image's header): the image plus
 * the expansion (padded on the right and bottom to the grid), shrunk to 1 MP if larger and
 * floored to the grid, as the pixels will be. A width or height that disagrees is refused.
 */
export function checkRepaintSize(r: GenerationRequest, w: number, h: number, rule: SizeRule): { width: number; height: number } {
  let W = w, H = h;
  if (r.expand) {
    const m = rule.multipleOf;
    W += r.expand[1] + r.expand[3];
    H += r.expand[0] + r.expand[2];
    W += (m - (W % m)) % m;
    H += (m - (H % m)) % m;
  }
  const size = preparedSize(W, H, { multiple: rule.multipleOf });
  if ((r.width !== undefined && r.width !== size.width) || (r.height !== undefined && r.height !== size.height)) {
    throw new InvalidRequestError(`the output follows input_image${r.expand ? " plus expand" : ""}: ${size.width}×${size.height}; ` +
      `width/height ${r.width ?? "-"}×${r.height ?? "-"} would stretch it. Leave width and height out, or resize the image first`);
  }
  checkSize(size.width, size.height, rule, "input_image" + (r.expand ? " plus expand" : ""));
  return size;
}

/**
 * img2img / inpaint / outpaint input from the first image. The output is this
 * image's size (plus the expansion), never a stretch of it: a width or height
 * that disagrees is refused.
 */
async function initImage(r: GenerationRequest, env: PrepareEnv, rule: SizeRule, notes: string[]): Promise<InitImage> {
  let base = await readImage(env, r.input_image!, "input_image");
  const size = checkRepaintSize(r, base.width, base.height, rule);
  let mask: Uint8Array | undefined;
  const maskValue = r.mask_image ?? r.mask;
  if (r.expand) {
    const e = await expandCanvas(base, r.expand as [number, number, number, number], rule.multipleOf);
    base = e.image;
    mask = e.mask;
    notes.push(`canvas expanded to ${base.width}×${base.height} (top,right,bottom,left = ${e.padded.join(",")})`);
  } else if (maskValue !== undefined) {
    const m = await readMask(env, maskValue);
    if (m.width !== base.width || m.height !== base.height) {
      throw new InvalidRequestError(`the mask is ${m.width}×${m.height} but input_image is ${base.width}×${base.height}: give a mask of the same size`);
    }
    mask = m.data;
  }
  env.check?.();
  env.stage?.("resizing input_image");
  const image = prepareInpaintImage(base, { multiple: rule.multipleOf, check: env.check }).image;
  if (image.width !== base.width || image.height !== base.height) {
    notes.push(`image resized from ${base.width}×${base.height} to ${image.width}×${image.height}`);
    if (mask) mask = resizeLanczos(mask, base.width, base.height, 1, image.width, image.height, env.check);
  }
  // The size worked out from the header alone (checkRepaintSize) is the size the pixels got.
  if (image.width !== size.width || image.height !== size.height) throw new Error(`internal: repaint size ${image.width}×${image.height} is not the ${size.width}×${size.height} checked`);
  return { image, mask, strength: r.strength ?? DEFAULT_INPAINT_STRENGTH };
}

function describeReference(i: number, p: PreparedReference): string | null {
  const notes: string[] = [];
  if (p.resizedTo) notes.push(`resized from ${p.original.width}×${p.original.height} to ${p.resizedTo.width}×${p.resizedTo.height} (pixel budget)`);
  if (p.cropped) notes.push(`centre-cropped to ${p.cropped.width}×${p.cropped.height}`);
  return notes.length ? `reference ${i + 1}: ${notes.join(", ")}` : null;
}

/** The references, one at a time: each is decoded, inspected and shrunk before the next is read. */
async function references(r: GenerationRequest, env: PrepareEnv, skipFirst: boolean, notes: string[]): Promise<PreparedReference[]> {
  const inputs = referenceInputs(r);
  const cap = referencePixelCap(inputs.length - (skipFirst ? 1 : 0), env.pixelCap ?? "diffusers");
  const out: PreparedReference[] = [];
  for (let i = skipFirst ? 1 : 0; i < inputs.length; i++) {
    const image = await readImage(env, inputs[i], imageField(i));
    env.check?.();
    env.stage?.(`resizing reference ${out.length + 1}`);
    const p = prepareReference(image, { multiple: env.latentMultiple, pixelCap: cap, label: `reference ${i + 1}`, check: env.check });
    const note = describeReference(i, p);
    if (note) notes.push(note);
    out.push(p);
  }
  return out;
}

/** Output size of a reference edit: as asked, else the first reference's (fitted to the model's largest side). */
function referenceEditSize(r: GenerationRequest, first: ReferenceImage, d: ModelDefaults, rule: SizeRule): { width: number; height: number } {
  let { width, height } = first;
  if (d.maxSide !== null && (width > d.maxSide || height > d.maxSide)) {
    const s = d.maxSide / Math.max(width, height);
    width *= s;
    height *= s;
  }
  const snap = (v: number) => Math.max(rule.multipleOf, Math.floor(v / rule.multipleOf) * rule.multipleOf);
  const size = { width: r.width ?? snap(width), height: r.height ?? snap(height) };
  checkSize(size.width, size.height, rule, r.width === undefined || r.height === undefined ? "the first reference's size" : undefined);
  return size;
}

/** The size initial latents stand for: the grid times their width and height. */
export function latentsSize(latents: Tensor<Float32Array>, multiple: number): { width: number; height: number } {
  return { width: latents.shape[3] * multiple, height: latents.shape[2] * multiple };
}

/** Turn a request into pipeline options (see the top of this file); `extras` are a command-line run's (RunExtras). */
export async function prepareGeneration(r: GenerationRequest, env: PrepareEnv, extras: RunExtras = {}): Promise<PreparedGeneration> {
  const d = env.defaults;
  const rule = sizeRuleFor(env.latentMultiple);
  checkRequest(r, rule, d, extras);
  const notes: string[] = [];
  const init = repaints(r) ? await initImage(r, env, rule, notes) : undefined;
  const refs = await references(r, env, init !== undefined, notes);
  let size: { width: number; height: number };
  if (init) size = { width: init.image.width, height: init.image.height };
  else if (refs.length) size = referenceEditSize(r, refs[0].image, d, rule);
  else if (extras.latents) size = latentsSize(extras.latents, env.latentMultiple);
  else size = { width: r.width ?? d.width, height: r.height ?? d.height };
  const recorded = [
    ...(init ? [{ width: init.image.width, height: init.image.height }] : []),
    ...refs.map((p) => ({ width: p.image.width, height: p.image.height, resizedFrom: p.resizedTo || p.cropped ? `${p.original.width}x${p.original.height}` : undefined })),
  ];
  return {
    options: {
      prompt: runPrompts(r, extras), negativePrompt: r.negative_prompt, ...size, steps: r.steps ?? d.steps, guidance: r.guidance ?? d.guidance,
      seed: r.seed ?? 0, references: refs.map((p) => p.image), init,
      numImagesPerPrompt: extras.latents ? extras.latents.shape[0] / (extras.prompts?.length || 1) : extras.numImagesPerPrompt ?? r.num_images,
      ...(extras.latents ? { latents: extras.latents } : {}),
    },
    references: recorded.length ? recorded : undefined,
    strength: init?.strength,
    notes,
  };
}
