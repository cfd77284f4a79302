// The emoji part of the flux2-mini data set: Google's Noto Emoji images as shipped by the npm
// package emoji-datasource-google (64 px PNGs), captioned with the English names and keywords of
// emojibase-data. Licences: see NOTICE (images Apache-2.0 from Noto Emoji, flags public domain;
// both packages' data and code MIT).
//
// Only fully-qualified base emoji are used: no skin-tone variants, no "component" group entries
// (skin-tone swatches, hair parts), which have no picture of their own.

import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";
import sharp from "sharp";

export interface EmojiEntry {
  /** Unicode code points, lower-case, dash separated ("1f34e"): the image file's name. */
  code: string;
  /** The CLDR short name ("red apple"). */
  label: string;
  tags: string[];
  /** emojibase group name ("food-drink"). */
  group: string;
  image: string;
}

const require = createRequire(import.meta.url);

function packageDir(name: string): string {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    throw new Error(`the npm package ${name} is not installed; run npm install (it is a devDependency of flux2)`);
  }
}

let cached: EmojiEntry[] | null = null;

/** Every usable emoji, in the order of emoji-datasource's sort_order (stable across builds). */
export function listEmoji(): EmojiEntry[] {
  if (cached) return cached;
  const ds = packageDir("emoji-datasource-google");
  const eb = packageDir("emojibase-data");
  const sheet = JSON.parse(fs.readFileSync(path.join(ds, "emoji.json"), "utf8")) as any[];
  const names = JSON.parse(fs.readFileSync(path.join(eb, "en", "data.json"), "utf8")) as any[];
  const groups = JSON.parse(fs.readFileSync(path.join(eb, "meta", "groups.json"), "utf8")).groups as Record<string, string>;
  const byCode = new Map<string, any>(names.map((n) => [n.hexcode, n]));
  const out: EmojiEntry[] = [];
  for (const e of [...sheet].sort((a, b) => a.sort_order - b.sort_order)) {
    if (!e.has_img_google) continue;
    const meta = byCode.get(e.unified) ?? byCode.get(e.non_qualified ?? "") ?? byCode.get(e.unified.replace(/-FE0F/g, ""));
    if (!meta || meta.group === 2 || meta.group === undefined) continue;
    const image = path.join(ds, "img", "google", "64", e.image);
    if (!fs.existsSync(image)) continue;
    out.push({ code: e.image.replace(/\.png$/, ""), label: meta.label, tags: meta.tags ?? [], group: groups[String(meta.group)], image });
  }
  cached = out;
  return out;
}

const article = (w: string) => (/^[aeiou]/i.test(w) ? "an" : "a");

/** The prompt that names an emoji: "a red apple" (flags and labels with a colon are kept as written). */
export function emojiPrompt(e: EmojiEntry): string {
  if (e.label.includes(":") || /^(the|a|an) /i.test(e.label)) return e.label;
  return `${article(e.label)} ${e.label}`;
}

/**
 * The training captions, one per line of the emoji's .txt (read with flux2 train --multi-caption):
 * the plain name first, as a user writes it ("a red apple"), then the name with "emoji", with
 * keywords, and "an emoji of …". The shipped versions (1–3) were trained with one of these per emoji,
 * chosen by its index (--emoji-captions one), so three emoji in four were never trained on their
 * plain name (docs/flux2-mini.md, sessions 12–13).
 */
export function emojiCaptions(e: EmojiEntry): string[] {
  return [...new Set([0, 1, 2, 3].map((v) => emojiCaption(e, v)))];
}

/**
 * Which captions an emoji's .txt holds (build-mini-dataset --emoji-captions): "one" form chosen by
 * the emoji's index (versions 1–6), "all" of them one per line (for flux2 train --multi-caption), or
 * the "plain" name alone, the caption the eval and a user type. Session 22 (docs/flux2-mini.md)
 * trained the transformer stage alone on "all" and on "plain" and both lost emoji passes: the
 * picture reaches the transformer through the text encoder's alignment on its own captions, so
 * "plain" is for the text-encoder and transformer stages together: version 7's recipe builds both
 * sets with it (emoji 49/100 against version 6's 35, session 24).
 */
export type EmojiCaptionForms = "one" | "all" | "plain";
export const EMOJI_CAPTION_FORMS: EmojiCaptionForms[] = ["one", "all", "plain"];

/** The text of an emoji's caption file (without the final newline); `index` picks the "one" form. */
export function emojiCaptionFile(e: EmojiEntry, forms: EmojiCaptionForms, index: number): string {
  if (forms === "all") return emojiCaptions(e).join("\n");
  if (forms === "plain") return emojiPrompt(e);
  return emojiCaption(e, index);
}

/** One training caption: the name, with "emoji" or keywords, or "an emoji of …" (by `variant` mod 4). */
export function emojiCaption(e: EmojiEntry, variant: number): string {
  const name = emojiPrompt(e);
  const tags = e.tags.filter((t) => !e.label.includes(t)).slice(0, 4);
  switch (variant % 4) {
    case 0: return name;
    case 1: return `${name}, emoji`;
    case 2: return tags.length ? `${name}, ${tags.join(", ")}` : `${name}, emoji`;
    default: return `an emoji of ${name}`;
  }
}

/** The emoji on white at `size`×`size`, packed RGB (alpha composited; resized with Lanczos when size ≠ 64). */
export async function emojiRgb(e: EmojiEntry, size: number): Promise<Uint8Array> {
  let img = sharp(e.image).flatten({ background: "#ffffff" });
  if (size !== 64) img = img.resize(size, size, { kernel: "lanczos3" });
  const { data, info } = await img.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== size || info.height !== size || info.channels !== 3) {
    throw new Error(`${e.image}: expected a ${size}×${size} RGB image after compositing, got ${info.width}×${info.height}×${info.channels}`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
