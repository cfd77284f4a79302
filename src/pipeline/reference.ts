// Reference-image preparation for FLUX.2 editing (docs/FLUX2-spec.md §6.3) and the inpaint
// image's size handling (docs/FLUX2-spec.md §6.5 step 1).
//
// diffusers (Flux2Pipeline / Flux2KleinPipeline, Flux2ImageProcessor), per reference:
//  1. validate: both sides ≥ 64 px, aspect max(w/h, h/w) ≤ 8;
//  2. if w·h > 1024²: Pillow LANCZOS resize to (int(w·s), int(h·s)),
//     s = sqrt(1024² / (w·h))  — see resize.ts for the bit-exact resampler;
//  3. centre crop (no resize) to (m·floor(w/m), m·floor(h/m)), m = 2·vae_scale_factor
//     (16 for the real VAE), left = (w − w')//2, top = (h − h')//2;
//  4. RGB (inputs here are already RGB).
// BFL's reference code does the same but caps at 2024² pixels when there is exactly
// one reference (1024² with several): `pixelCap: "bfl"`.
// The inpaint pipeline instead resizes (Lanczos, no crop) to the floored size.

import { VARIANT_CARDS, type Variant } from "./variants.js";
import { resizeLanczos, type ResizeCheck } from "./resize.js";

/** A reference image: packed 8-bit RGB, (H, W, 3) row-major. */
export interface ReferenceImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** Most references accepted (BFL playground limit; the model code sets none). */
export const MAX_REFERENCES = 10;
export const MIN_REFERENCE_SIDE = 64;
export const MAX_REFERENCE_ASPECT = 8;
/** diffusers' pixel cap, and BFL's with several references. */
export const REFERENCE_PIXEL_CAP = 1024 * 1024;
/** BFL's pixel cap when there is exactly one reference. */
export const BFL_SINGLE_REFERENCE_PIXEL_CAP = 2024 * 2024;

export type PixelCapMode = "diffusers" | "bfl";

export interface Size {
  width: number;
  height: number;
}

export interface PreparedReference {
  image: ReferenceImage;
  original: Size;
  /** Size after the pixel-cap Lanczos resize; null when no resize was needed. */
  resizedTo: Size | null;
  /** Crop window in the (possibly resized) image; null when nothing was cut off. */
  cropped: { left: number; top: number; width: number; height: number } | null;
}

export interface PrepareOptions {
  /** Crop to multiples of this (2 · vae_scale_factor: 16 for FLUX.2). */
  multiple: number;
  /** Most pixels before the Lanczos shrink (default 1024²; see referencePixelCap). */
  pixelCap?: number;
  /** Name used in error messages, e.g. "reference 2" (default "reference"). */
  label?: string;
  /** Called during resizes; throws to stop (a cancelled server job). */
  check?: ResizeCheck;
}

export class ReferenceImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReferenceImageError";
  }
}

/** Pixel cap for `count` references: diffusers 1024² always; BFL 2024² for a single one. */
export function referencePixelCap(count: number, mode: PixelCapMode = "diffusers"): number {
  if (mode === "bfl" && count === 1) return BFL_SINGLE_REFERENCE_PIXEL_CAP;
  return REFERENCE_PIXEL_CAP;
}

/** Refuse references diffusers refuses (Flux2ImageProcessor.check_image_input). */
export function validateReference(width: number, height: number, label = "reference"): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ReferenceImageError(`${label} has an invalid size ${width}×${height}`);
  }
  if (width < MIN_REFERENCE_SIDE || height < MIN_REFERENCE_SIDE) {
    throw new ReferenceImageError(`${label} is ${width}×${height}: both sides must be at least ${MIN_REFERENCE_SIDE} px`);
  }
  const aspect = Math.max(width / height, height / width);
  if (aspect > MAX_REFERENCE_ASPECT) {
    throw new ReferenceImageError(
      `${label} is ${width}×${height}: aspect ratio ${aspect.toFixed(1)}:1 is more than the maximum ${MAX_REFERENCE_ASPECT}:1`,
    );
  }
}

/** Size after the pixel cap: unchanged when w·h ≤ cap, else (int(w·s), int(h·s)), s = sqrt(cap/(w·h)). */
export function cappedSize(width: number, height: number, pixelCap: number = REFERENCE_PIXEL_CAP): Size {
  if (width * height <= pixelCap) return { width, height };
  const s = Math.sqrt(pixelCap / (width * height));
  return { width: Math.trunc(width * s), height: Math.trunc(height * s) };
}

/** Largest multiple of `multiple` not above each side. */
export function flooredSize(width: number, height: number, multiple: number): Size {
  return { width: Math.floor(width / multiple) * multiple, height: Math.floor(height / multiple) * multiple };
}

/** The final size `prepareReference` gives an image of this size (no pixels touched). */
export function preparedSize(width: number, height: number, opts: PrepareOptions): Size {
  const c = cappedSize(width, height, opts.pixelCap ?? REFERENCE_PIXEL_CAP);
  return flooredSize(c.width, c.height, opts.multiple);
}

function checkImage(img: ReferenceImage, label: string): void {
  if (img.rgb.length !== img.width * img.height * 3) {
    throw new ReferenceImageError(`${label}: buffer has ${img.rgb.length} bytes, expected ${img.width}×${img.height}×3`);
  }
}

function checkMultiple(multiple: number): void {
  if (!Number.isInteger(multiple) || multiple < 1) throw new RangeError(`multiple must be a positive integer, got ${multiple}`);
}

/** Crop an RGB image to the window (left, top, width, height). */
export function cropRgb(img: ReferenceImage, left: number, top: number, width: number, height: number): ReferenceImage {
  if (left < 0 || top < 0 || left + width > img.width || top + height > img.height || width < 1 || height < 1) {
    throw new RangeError(`crop ${width}×${height}+${left}+${top} is outside the ${img.width}×${img.height} image`);
  }
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * img.width + left) * 3;
    out.set(img.rgb.subarray(from, from + width * 3), y * width * 3);
  }
  return { rgb: out, width, height };
}

/** Pillow `Image.resize((width, height), LANCZOS)` of an RGB image (a copy when the size is unchanged). */
export function resizeExact(img: ReferenceImage, width: number, height: number, check?: ResizeCheck): ReferenceImage {
  return { rgb: resizeLanczos(img.rgb, img.width, img.height, 3, width, height, check), width, height };
}

/** Shrink to the pixel cap (Lanczos) if needed, and the size floored to the multiple. */
function capAndFloor(img: ReferenceImage, opts: PrepareOptions, label: string) {
  const cap = cappedSize(img.width, img.height, opts.pixelCap ?? REFERENCE_PIXEL_CAP);
  let cur = img;
  let resizedTo: Size | null = null;
  if (cap.width !== img.width || cap.height !== img.height) {
    cur = resizeExact(img, cap.width, cap.height, opts.check);
    resizedTo = cap;
  }
  const target = flooredSize(cur.width, cur.height, opts.multiple);
  if (target.width < 1 || target.height < 1) {
    throw new ReferenceImageError(`${label} is ${cur.width}×${cur.height}: smaller than one ${opts.multiple}-pixel block`);
  }
  return { cur, resizedTo, target };
}

/**
 * diffusers' reference preprocessing (docs/FLUX2-spec.md §6.3 steps 1–3): validate, Lanczos-shrink to
 * the pixel cap if needed, centre-crop to multiples of `opts.multiple`.
 * The returned image never aliases the input.
 */
export function prepareReference(img: ReferenceImage, opts: PrepareOptions): PreparedReference {
  const label = opts.label ?? "reference";
  checkMultiple(opts.multiple);
  checkImage(img, label);
  validateReference(img.width, img.height, label);
  const original = { width: img.width, height: img.height };
  const { cur, resizedTo, target } = capAndFloor(img, opts, label);
  if (target.width === cur.width && target.height === cur.height) {
    return { image: cur === img ? { rgb: img.rgb.slice(), width: img.width, height: img.height } : cur, original, resizedTo, cropped: null };
  }
  const left = Math.floor((cur.width - target.width) / 2);
  const top = Math.floor((cur.height - target.height) / 2);
  return {
    image: cropRgb(cur, left, top, target.width, target.height),
    original,
    resizedTo,
    cropped: { left, top, width: target.width, height: target.height },
  };
}

/**
 * Prepare 1–10 references in order. Labels are 1-based ("reference 1" is the first).
 * `pixelCap` picks diffusers' (1024² always, default) or BFL's (2024² for a single
 * reference) rule.
 */
export function prepareReferences(
  imgs: readonly ReferenceImage[],
  opts: { multiple: number; pixelCap?: PixelCapMode; check?: ResizeCheck },
): PreparedReference[] {
  if (imgs.length > MAX_REFERENCES) {
    throw new ReferenceImageError(`${imgs.length} reference images given; at most ${MAX_REFERENCES} are supported`);
  }
  // Validate every reference before any (possibly slow) resizing.
  imgs.forEach((r, i) => validateReference(r.width, r.height, `reference ${i + 1}`));
  const cap = referencePixelCap(imgs.length, opts.pixelCap ?? "diffusers");
  return imgs.map((r, i) => prepareReference(r, { multiple: opts.multiple, pixelCap: cap, label: `reference ${i + 1}`, check: opts.check }));
}

export interface PreparedInpaintImage {
  image: ReferenceImage;
  original: Size;
  /** Size after the pixel-cap Lanczos resize; null when no cap resize was needed. */
  resizedTo: Size | null;
}

/**
 * The inpaint pipeline's image handling (docs/FLUX2-spec.md §6.5 step 1): Lanczos-shrink to the pixel
 * cap if needed, then a plain Lanczos resize (not a crop) to multiples of
 * `opts.multiple` — two separate resizes, as in diffusers.
 */
export function prepareInpaintImage(img: ReferenceImage, opts: PrepareOptions): PreparedInpaintImage {
  const label = opts.label ?? "image";
  checkMultiple(opts.multiple);
  checkImage(img, label);
  const original = { width: img.width, height: img.height };
  const { cur, resizedTo, target } = capAndFloor(img, opts, label);
  return { image: resizeExact(cur, target.width, target.height, opts.check), original, resizedTo };
}

/** References a variant is recommended with (its card: klein 4, dev 6); more cost memory and time. */
export function recommendedReferences(variant: Variant): number {
  return VARIANT_CARDS[variant].references.recommended;
}

/**
 * Throws for 0 > n or n > MAX_REFERENCES; returns a warning when n is above the
 * variant's recommended count, otherwise null.
 */
export function checkReferenceCount(n: number, variant: Variant): string | null {
  if (!Number.isInteger(n) || n < 0) throw new ReferenceImageError(`invalid number of reference images: ${n}`);
  if (n > MAX_REFERENCES) {
    throw new ReferenceImageError(`${n} reference images given; at most ${MAX_REFERENCES} are supported`);
  }
  const rec = recommendedReferences(variant);
  if (n > rec) {
    return `${n} reference images given; FLUX.2 ${variant} is recommended with at most ${rec} (more cost memory and time and may lower quality)`;
  }
  return null;
}
