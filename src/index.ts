// flux2.ts: the front door. Load a model, generate or edit, save the picture:
//
//   import { load, generate, save } from "flux2";
//   const pipe = await load("models/FLUX.2-klein-4B");
//   await save(await generate(pipe, { prompt: "a red fox in the snow", seed: 42 }), "fox.png");
//
// The model classes (transformer, VAE, text encoders, backend) are in "flux2/models", the golden
// conformance runner in "flux2/conformance".

import * as path from "node:path";
import * as fs from "node:fs";
import { loadPipeline, type LoadOptions } from "./loaders/pretrained.js";
import type { Flux2Pipeline, GenerateOptions, GenerateResult, GeneratedImage } from "./pipeline/flux2.js";
import { decodeImage, type ImageFormat } from "./pipeline/image.js";
import { prepareReferences, type ReferenceImage } from "./pipeline/reference.js";
import { encodeGenerated } from "./provenance/provenance.js";
import { InvalidRequestError } from "./util/errors.js";

export type { Flux2Pipeline, GenerateOptions, GenerateResult, GeneratedImage, StepInfo, InitImage, LoraSummary } from "./pipeline/flux2.js";
export type { LoadOptions, LoraUse } from "./loaders/pretrained.js";
export type { ReferenceImage } from "./pipeline/reference.js";
export type { Variant } from "./pipeline/checkpoint.js";
export { InvalidRequestError } from "./util/errors.js";
export { CheckpointError } from "./pipeline/checkpoint.js";

/**
 * Open a model: a diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/)
 * or a BFL single transformer file inside one. Components load when first used.
 */
export async function load(source: string, options: LoadOptions = {}): Promise<Flux2Pipeline> {
  return loadPipeline(source, options);
}

/** Text to image. */
export async function generate(pipe: Flux2Pipeline, options: GenerateOptions): Promise<GenerateResult> {
  return pipe.generate(options);
}

/** An image to read: a file path, encoded bytes (PNG, JPEG, WebP, …) or packed RGB. */
export type ImageInput = string | Uint8Array | ReferenceImage;

export interface EditOptions extends Omit<GenerateOptions, "references"> {
  /** The images to edit or combine (1 to 10); each is shrunk to 1 MP and centre-cropped to the size multiple. */
  images: ImageInput[];
}

/** Edit with reference images: the output size follows the first image unless width/height are given. */
export async function edit(pipe: Flux2Pipeline, options: EditOptions): Promise<GenerateResult> {
  const { images, ...rest } = options;
  if (!images?.length) throw new InvalidRequestError("edit needs at least one image");
  const decoded = await Promise.all(images.map(readImage));
  const references = prepareReferences(decoded, { multiple: pipe.sizeMultiple }).map((p) => p.image);
  return pipe.generate({ ...rest, references });
}

async function readImage(input: ImageInput): Promise<ReferenceImage> {
  if (typeof input === "string" || input instanceof Uint8Array) return decodeImage(typeof input === "string" ? input : Buffer.from(input));
  return input;
}

export interface SaveOptions {
  /** Which image of a batch (default 0). */
  index?: number;
  /** Model name recorded in the image's metadata (default "FLUX.2"). */
  model?: string;
  negativePrompt?: string;
  /** The invisible watermark that marks the image as AI-generated (default on). */
  watermark?: boolean;
}

const FORMATS: Record<string, ImageFormat> = { ".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp" };

/**
 * Write one generated image as PNG, JPEG or WebP (by the file's extension), with its generation
 * parameters (A1111 "parameters" text; PNG also a "flux2" JSON record), the provenance tags and
 * the invisible watermark, as the CLI writes it. Returns the file path.
 */
export async function save(result: GenerateResult, file: string, options: SaveOptions = {}): Promise<string> {
  const format = FORMATS[path.extname(file).toLowerCase()];
  if (!format) throw new InvalidRequestError(`${file}: the extension decides the format; use .png, .jpg or .webp`);
  const index = options.index ?? 0;
  const img: GeneratedImage | undefined = result.images[index];
  if (!img) throw new InvalidRequestError(`image ${index} does not exist: the result has ${result.images.length}`);
  const record = {
    prompt: img.prompt ?? "", negativePrompt: options.negativePrompt ?? null, width: img.width, height: img.height,
    steps: result.steps, guidance: result.guidance, seed: img.seed, variant: result.variant, model: options.model ?? "FLUX.2",
  };
  const { bytes } = await encodeGenerated(img.rgb, img.width, img.height, format, record, options.watermark ?? true);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, bytes);
  return file;
}
