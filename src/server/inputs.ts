// Input images of a request (base64, data: URL or http(s) URL) are fetched and
// checked when the job is submitted, so a bad image is a 422 at once, and
// stored content-addressed: the queued job holds "store:<sha256>.<ext>"
// references instead of megabytes of base64, and a retried job reads the same
// bytes.

import sharp from "sharp";
import type { GenerationRequest } from "../api/request.js";
import { decodeImage } from "../pipeline/image.js";
import { validateReference } from "../pipeline/reference.js";
import { fieldError } from "./errors.js";
import { fetchImage, type UrlPolicy } from "./fetch_image.js";
import { extFor, IMAGE_TYPES, type ImageStore } from "./images.js";
import { IMAGE_FIELDS, type ImageField } from "./validate.js";

export const STORE_PREFIX = "store:";

export function isStoreRef(v: unknown): v is string {
  return typeof v === "string" && v.startsWith(STORE_PREFIX);
}

export function storeName(ref: string): string {
  return ref.slice(STORE_PREFIX.length);
}

const BASE64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** base64 or a data: URL → bytes (strict: stray characters are an error, not silently dropped). */
export function decodeBase64Image(s: string): Buffer {
  let data = s;
  if (/^data:/i.test(s)) {
    const comma = s.indexOf(",");
    if (comma < 0 || !/;base64$/i.test(s.slice(0, comma))) throw new Error("data: URLs must be base64 (data:image/png;base64,...)");
    data = s.slice(comma + 1);
  }
  data = data.replace(/\s+/g, "");
  if (!BASE64_RE.test(data)) throw new Error("not valid base64 (or an http(s) URL)");
  const buf = Buffer.from(data, data.includes("-") || data.includes("_") ? "base64url" : "base64");
  if (buf.length === 0) throw new Error("empty image");
  return buf;
}

export interface InputOptions {
  policy: UrlPolicy;
  maxPixels: number;
}

/** Bytes of one image input, checked: a supported format, not a bomb, not animated. */
async function loadInput(field: ImageField, value: string, opts: InputOptions): Promise<{ bytes: Buffer; ext: string; width: number; height: number }> {
  let bytes: Buffer;
  try {
    bytes = /^https?:\/\//i.test(value) ? await fetchImage(value, opts.policy) : decodeBase64Image(value);
  } catch (e) {
    throw fieldError(field, `cannot read the image: ${(e as Error).message}`, "image_invalid");
  }
  const meta = await sharp(bytes, { limitInputPixels: false }).metadata().catch(() => null);
  const ext = extFor(meta?.format);
  if (!meta || !IMAGE_TYPES[ext]) throw fieldError(field, `not a supported image (PNG, JPEG, WebP, GIF, AVIF, TIFF or HEIF)`, "image_invalid");
  let size: { width: number; height: number };
  try {
    const d = await decodeImage(bytes, { maxPixels: opts.maxPixels });
    if (field !== "mask_image") validateReference(d.width, d.height, field);
    size = { width: d.width, height: d.height };
  } catch (e) {
    throw fieldError(field, (e as Error).message.replace(/^image buffer: /, ""), "image_invalid");
  }
  return { bytes, ext, ...size };
}

/** Replace every image field by a store reference; throws ApiError(422) naming the bad field. */
export async function storeInputs(r: GenerationRequest, store: ImageStore, opts: InputOptions): Promise<GenerationRequest> {
  const out: Record<string, unknown> = { ...r };
  const src = r as Record<string, unknown>;
  const fields = IMAGE_FIELDS.filter((f) => typeof src[f] === "string");
  const loaded = await Promise.all(fields.map((f) => loadInput(f, src[f] as string, opts)));
  // Checked before anything is stored, so a refused request leaves no files behind.
  const mask = loaded[fields.indexOf("mask_image")], image = loaded[fields.indexOf("input_image")];
  if (mask && image && (mask.width !== image.width || mask.height !== image.height)) {
    throw fieldError("mask_image", `the mask is ${mask.width}×${mask.height} but input_image is ${image.width}×${image.height}: give a mask of the same size`, "image_invalid");
  }
  await Promise.all(fields.map(async (f, i) => {
    out[f] = STORE_PREFIX + (await store.put(loaded[i].bytes, loaded[i].ext));
  }));
  return out as GenerationRequest;
}

