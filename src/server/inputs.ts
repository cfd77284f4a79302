// Input images of a request (base64, data: URL or http(s) URL, read by the
// request layer: src/api/image_input.ts) are fetched and checked when the job is submitted, so a bad image is a 422 at once, and
// stored content-addressed: the queued job holds "store:<sha256>.<ext>"
// references instead of megabytes of base64, and a retried job reads the same
// bytes.

import sharp from "sharp";
import type { GenerationRequest } from "../api/request.js";
import { decodeImage } from "../pipeline/image.js";
import { validateReference } from "../pipeline/reference.js";
import { fieldError } from "./errors.js";
import { DECODE_BYTES_PER_PIXEL, type MemoryBudget } from "./budget.js";
import type { UrlPolicy } from "../api/fetch_image.js";
import { imageValueBytes } from "../api/image_input.js";
import { extFor, IMAGE_TYPES, type ImageStore } from "./images.js";
import { IMAGE_FIELDS, type ImageField } from "./validate.js";

export const STORE_PREFIX = "store:";

export function isStoreRef(v: unknown): v is string {
  return typeof v === "string" && v.startsWith(STORE_PREFIX);
}

export function storeName(ref: string): string {
  return ref.slice(STORE_PREFIX.length);
}

export interface InputOptions {
  policy: UrlPolicy;
  /** Decoded-pixel cap per image (decompression bombs). */
  maxPixels: number;
  /** Decoded-pixel budget over all of a request's images together. */
  requestPixels: number;
  /** Server-wide memory for decoding inputs; a submit that does not fit now gets a 503. */
  budget?: MemoryBudget;
  /** Checks of the images' sizes from their headers, before anything is decoded or stored (throws ApiError). */
  checkSizes?: (sizes: Partial<Record<ImageField, { width: number; height: number }>>) => void;
}

interface LoadedInput {
  field: ImageField;
  bytes: Buffer;
  ext: string;
  /** From the header only: nothing is decoded yet. */
  pixels: number;
  width: number;
  height: number;
}

/** Bytes and header of one image input: a supported format within the per-image cap. Nothing is decoded. */
async function loadInput(field: ImageField, value: string, opts: InputOptions): Promise<LoadedInput> {
  let bytes: Buffer;
  try {
    bytes = await imageValueBytes(value, { policy: opts.policy });
  } catch (e) {
    throw fieldError(field, `cannot read the image: ${(e as Error).message}`, "image_invalid");
  }
  const meta = await sharp(bytes, { limitInputPixels: false }).metadata().catch(() => null);
  const ext = extFor(meta?.format);
  if (!meta || !IMAGE_TYPES[ext] || !meta.width || !meta.height) throw fieldError(field, `not a supported image (PNG, JPEG, WebP, GIF, AVIF, TIFF or HEIF)`, "image_invalid");
  const pixels = meta.width * meta.height;
  if (pixels > opts.maxPixels) {
    throw fieldError(field, `image is ${meta.width}×${meta.height} = ${pixels} pixels, more than the limit of ${opts.maxPixels}: send a smaller image`, "image_invalid");
  }
  return { field, bytes, ext, pixels, width: meta.width, height: meta.height };
}

/** Decode fully (a truncated or corrupt file is refused now, not when the job runs) and check the reference rules. */
async function checkDecodes(input: LoadedInput, opts: InputOptions): Promise<void> {
  try {
    const d = await decodeImage(input.bytes, { maxPixels: opts.maxPixels });
    if (input.field !== "mask_image") validateReference(d.width, d.height, input.field);
  } catch (e) {
    throw fieldError(input.field, (e as Error).message.replace(/^image buffer: /, ""), "image_invalid");
  }
}

/** The request's images together must fit the per-request pixel budget (checked from the headers, before any decode). */
function checkRequestPixels(inputs: LoadedInput[], budget: number): void {
  let sum = 0;
  for (const i of inputs) {
    sum += i.pixels;
    if (sum > budget) {
      const sizes = inputs.map((x) => `${x.field} ${(x.pixels / 1e6).toFixed(1)} MP`).join(", ");
      throw fieldError(i.field, `the request's images have ${(inputs.reduce((a, x) => a + x.pixels, 0) / 1e6).toFixed(1)} MP in all (${sizes}), more than the per-request budget of ${(budget / 1e6).toFixed(1)} MP: send fewer or smaller images`, "pixel_budget");
    }
  }
}

/** Replace every image field by a store reference; throws ApiError(422) naming the bad field, 503 when the decode budget is spent. */
export async function storeInputs(r: GenerationRequest, store: ImageStore, opts: InputOptions): Promise<GenerationRequest> {
  const out: Record<string, unknown> = { ...r };
  const src = r as Record<string, unknown>;
  const fields = IMAGE_FIELDS.filter((f) => typeof src[f] === "string");
  if (!fields.length) return r;
  const inputs = await Promise.all(fields.map((f) => loadInput(f, src[f] as string, opts)));
  checkRequestPixels(inputs, opts.requestPixels);
  opts.checkSizes?.(Object.fromEntries(inputs.map((i) => [i.field, { width: i.width, height: i.height }])));
  // Checked before anything is stored, so a refused request leaves no files behind.
  const mask = inputs.find((i) => i.field === "mask_image"), image = inputs.find((i) => i.field === "input_image");
  if (mask && image && (mask.width !== image.width || mask.height !== image.height)) {
    throw fieldError("mask_image", `the mask is ${mask.width}×${mask.height} but input_image is ${image.width}×${image.height}: give a mask of the same size`, "image_invalid");
  }
  // Decoded one at a time, so the largest image is what this request holds at once.
  const release = opts.budget?.reserve(Math.max(...inputs.map((i) => i.pixels)) * DECODE_BYTES_PER_PIXEL, "this request's largest image") ?? (() => {});
  try {
    for (const i of inputs) await checkDecodes(i, opts);
  } finally {
    release();
  }
  for (const i of inputs) out[i.field] = STORE_PREFIX + (await store.put(i.bytes, i.ext));
  return out as GenerationRequest;
}
