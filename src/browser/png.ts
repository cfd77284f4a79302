// PNG in the browser: the browser's own PNG codec (OffscreenCanvas) plus the engine's text
// chunk writer, so a PNG made in a tab carries the same "parameters" metadata as one from Node.
import { insertPngText as insertText, readPngText as readText } from "../pipeline/image.js";
import type { ReferenceImage } from "../pipeline/reference.js";

function canvas(width: number, height: number): OffscreenCanvas {
  if (typeof OffscreenCanvas === "undefined") throw new Error("this browser has no OffscreenCanvas, which encodePng / decodeImage need");
  return new OffscreenCanvas(width, height);
}

/** Packed RGB (H, W, 3) → PNG bytes, with `parameters` (A1111 text) as a tEXt/iTXt chunk. */
export async function encodePng(rgb: Uint8Array, width: number, height: number, parameters?: string): Promise<Uint8Array> {
  if (rgb.length !== width * height * 3) throw new RangeError(`encodePng: ${rgb.length} bytes is not ${width}×${height}×3`);
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < width * height; p++) {
    rgba[p * 4] = rgb[p * 3];
    rgba[p * 4 + 1] = rgb[p * 3 + 1];
    rgba[p * 4 + 2] = rgb[p * 3 + 2];
    rgba[p * 4 + 3] = 255;
  }
  const c = canvas(width, height);
  c.getContext("2d")!.putImageData(new ImageData(rgba, width, height), 0, 0);
  const png = new Uint8Array(await (await c.convertToBlob({ type: "image/png" })).arrayBuffer());
  return parameters === undefined ? png : insertPngText(png, "parameters", parameters);
}

/** Any image the browser can decode → packed RGB, e.g. a reference image for editing. */
export async function decodeImage(data: Blob): Promise<ReferenceImage> {
  const bitmap = await createImageBitmap(data, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = canvas(bitmap.width, bitmap.height);
  const ctx = c.getContext("2d")!;
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let p = 0; p < bitmap.width * bitmap.height; p++) {
    rgb[p * 3] = rgba[p * 4];
    rgb[p * 3 + 1] = rgba[p * 4 + 1];
    rgb[p * 3 + 2] = rgba[p * 4 + 2];
  }
  return { rgb, width: bitmap.width, height: bitmap.height };
}

// The Node functions take Buffers; in a page bytes come as Uint8Arrays (fetch, Blob, encodePng).
const asBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** Every tEXt / iTXt entry of a PNG, keyword → text (zTXt is refused in the browser build). */
export function readPngText(png: Uint8Array): Record<string, string> {
  return readText(asBuffer(png));
}

/** A text chunk inserted right after IHDR (tEXt, or UTF-8 iTXt when the text is not Latin-1). */
export function insertPngText(png: Uint8Array, keyword: string, text: string): Uint8Array {
  return new Uint8Array(insertText(asBuffer(png), keyword, text));
}
