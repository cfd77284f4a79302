// Emoji retrieval for `flux2 eval`: is the prompted emoji among the k nearest training images?
//
// Feature space (documented in docs/flux2-mini.md): the image is box-averaged to 16×16 pixels,
// converted to CIELAB, and the 768 numbers are compared with the Euclidean distance. It is crude
// on purpose: it needs no trained network, it is the same for every model, and at 64 px an emoji
// is mostly its silhouette and its colours, which a 16×16 Lab thumbnail keeps.

import { rgbToLab } from "../mini/colour.js";
import { emojiRgb, type EmojiEntry } from "../mini/emoji.js";
import type { Img } from "./metrics.js";

export const THUMB = 16;

export function thumbnailFeature(img: Img): Float32Array {
  const { width: W, height: H, rgb } = img;
  if (W % THUMB || H % THUMB) throw new Error(`retrieval features need sides that are multiples of ${THUMB}, got ${W}×${H}`);
  const bx = W / THUMB, by = H / THUMB;
  const out = new Float32Array(THUMB * THUMB * 3);
  for (let ty = 0; ty < THUMB; ty++) {
    for (let tx = 0; tx < THUMB; tx++) {
      let r = 0, g = 0, b = 0;
      for (let y = ty * by; y < (ty + 1) * by; y++) {
        for (let x = tx * bx; x < (tx + 1) * bx; x++) {
          const i = (y * W + x) * 3;
          r += rgb[i]; g += rgb[i + 1]; b += rgb[i + 2];
        }
      }
      const n = bx * by;
      out.set(rgbToLab(r / n, g / n, b / n), (ty * THUMB + tx) * 3);
    }
  }
  return out;
}

function dist2(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

/** The features of the training emoji drawn at size×size, in the order of `emoji`: the gallery rankOf searches. */
export async function emojiGallery(emoji: EmojiEntry[], size: number): Promise<Float32Array[]> {
  const gallery: Float32Array[] = [];
  for (const e of emoji) gallery.push(thumbnailFeature({ rgb: await emojiRgb(e, size), width: size, height: size }));
  return gallery;
}

/** Rank (0 = nearest) of `target` among `gallery` for a query feature (ties count against the target). */
export function rankOf(query: Float32Array, gallery: Float32Array[], target: number): number {
  const dt = dist2(query, gallery[target]);
  let rank = 0;
  for (let i = 0; i < gallery.length; i++) if (i !== target && dist2(query, gallery[i]) <= dt) rank++;
  return rank;
}
