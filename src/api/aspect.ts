// BFL's `aspect_ratio` ("16:9") → a width and height. BFL's models that take
// an aspect ratio (ultra, kontext) answer with about one megapixel in that
// shape; clients such as the AI SDK's provider send `aspect_ratio` to every
// model, so every model here takes it and picks the size the same way.

/** BFL's accepted range (kontext, ultra): from 21:9 to 9:21. */
const WIDEST = 21 / 9;

/** About 1 MP, as BFL's aspect-ratio models produce. */
export const ASPECT_PIXELS = 1024 * 1024;

export function parseAspectRatio(s: string): { w: number; h: number } {
  const m = /^(\d{1,3}):(\d{1,3})$/.exec(s);
  if (!m || Number(m[1]) === 0 || Number(m[2]) === 0) throw new Error(`aspect_ratio "${s}" is not W:H with positive whole numbers (e.g. 16:9)`);
  const w = Number(m[1]), h = Number(m[2]);
  if (w / h > WIDEST * (1 + 1e-9) || h / w > WIDEST * (1 + 1e-9)) throw new Error(`aspect_ratio ${s} is outside 21:9 … 9:21 (BFL's range)`);
  return { w, h };
}

/**
 * The size for an aspect ratio: sides are multiples of `multiple` and the area
 * is as close to `pixels` as rounding allows. Given one side (`width` or
 * `height`), the other follows from the ratio.
 */
export function sizeForAspectRatio(ratio: string, multiple = 16, opts: { width?: number; height?: number; pixels?: number } = {}): { width: number; height: number } {
  const { w, h } = parseAspectRatio(ratio);
  const snap = (v: number) => Math.max(multiple, Math.round(v / multiple) * multiple);
  if (opts.width !== undefined) return { width: opts.width, height: snap((opts.width * h) / w) };
  if (opts.height !== undefined) return { width: snap((opts.height * w) / h), height: opts.height };
  const pixels = opts.pixels ?? ASPECT_PIXELS;
  return { width: snap(Math.sqrt((pixels * w) / h)), height: snap(Math.sqrt((pixels * h) / w)) };
}
