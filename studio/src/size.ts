// Output size: aspect presets × megapixels, snapped to the model's multiple,
// and the inline validation of custom sizes. A megapixel here is 2^20 pixels,
// so "1 MP, 1:1" is 1024×1024 and the 4 MP cap equals the server's maxPixels.

export const ASPECTS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"] as const;
export type Aspect = (typeof ASPECTS)[number];
export const MEGAPIXELS = [0.25, 0.5, 1, 1.5, 2, 3, 4] as const;
export const MP = 1024 * 1024;
/** The request schema's per-side maximum. */
export const MAX_SIDE = 4096;

export interface SizeLimits { minSide: number; multipleOf: number; maxPixels: number }

function ratio(a: string): number {
  const [w, h] = a.split(":").map(Number);
  return w / h;
}

/** The size for an aspect ratio and pixel budget, snapped to `multipleOf` and within the limits. */
export function presetSize(aspect: string, megapixels: number, l: SizeLimits): { width: number; height: number } {
  const m = l.multipleOf;
  const r = ratio(aspect);
  const pixels = Math.min(megapixels * MP, l.maxPixels);
  const floorTo = (v: number) => Math.max(l.minSide, Math.floor(v / m) * m);
  let width = Math.max(l.minSide, Math.round(Math.sqrt(pixels * r) / m) * m);
  let height = Math.max(l.minSide, Math.round(Math.sqrt(pixels / r) / m) * m);
  width = Math.min(width, floorTo(MAX_SIDE));
  height = Math.min(height, floorTo(MAX_SIDE));
  // Rounding to the nearest multiple can overshoot the cap: shrink the longer side.
  while (width * height > l.maxPixels) {
    if (width >= height) width -= m; else height -= m;
  }
  return { width, height };
}

/**
 * Megapixel choices a model allows (up to its maxPixels, at most 4 MP). A small model whose cap is
 * below the smallest standard choice (flux2-mini: 128×128) gets a quarter of its cap and the cap
 * itself (64×64 and 128×128 at 1:1).
 */
export function megapixelChoices(l: SizeLimits): number[] {
  const standard = MEGAPIXELS.filter((mp) => mp * MP <= l.maxPixels);
  return standard.length ? standard : [l.maxPixels / 4 / MP, l.maxPixels / MP];
}

/** A megapixel choice as a label: "1 MP", or the side of the square for tiny ones ("64² px"). */
export function megapixelLabel(mp: number): string {
  return mp >= 0.25 ? `${mp} MP` : `${Math.round(Math.sqrt(mp * MP))}² px`;
}

/** The choice nearest a model's default size (so choosing flux2-mini starts at its 64×64). */
export function nearestMegapixels(l: SizeLimits, width: number, height: number): number {
  const want = (width * height) / MP;
  return megapixelChoices(l).reduce((best, mp) => (Math.abs(Math.log(mp / want)) < Math.abs(Math.log(best / want)) ? mp : best));
}

export function snap(v: number, m: number): number {
  return Math.round(v / m) * m;
}

/** Why a width/height pair cannot be submitted; empty when it can. Keyed by field. */
export function validateSize(width: number, height: number, l: SizeLimits): { width?: string; height?: string; size?: string } {
  const out: { width?: string; height?: string; size?: string } = {};
  const side = (v: number, name: string): string | undefined => {
    if (!Number.isFinite(v) || !Number.isInteger(v)) return `${name} must be a whole number of pixels.`;
    if (v < l.minSide) return `${name} must be at least ${l.minSide} px.`;
    if (v > MAX_SIDE) return `${name} must be at most ${MAX_SIDE} px.`;
    if (v % l.multipleOf !== 0) {
      const lo = Math.max(l.minSide, Math.floor(v / l.multipleOf) * l.multipleOf);
      const hi = lo + l.multipleOf;
      return `${name} must be a multiple of ${l.multipleOf} (try ${lo} or ${hi}).`;
    }
    return undefined;
  };
  const w = side(width, "Width");
  const h = side(height, "Height");
  if (w) out.width = w;
  if (h) out.height = h;
  if (!w && !h && width * height > l.maxPixels) {
    out.size = l.maxPixels < 0.25 * MP // a small model (flux2-mini): in pixels, with the largest square
      ? `${width}×${height} is ${width * height} pixels; the model allows at most ${l.maxPixels} (${Math.floor(Math.sqrt(l.maxPixels))}² px).`
      : `${width}×${height} is ${(width * height / MP).toFixed(2)} MP; the model allows at most ${(l.maxPixels / MP).toFixed(2).replace(/\.?0+$/, "")} MP.`;
  }
  return out;
}

export function describeSize(width: number, height: number): string {
  const mp = width * height / MP;
  return `${width}×${height} · ${mp < 0.1 ? mp.toFixed(3) : mp.toFixed(2)} MP`;
}
