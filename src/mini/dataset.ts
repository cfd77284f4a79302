// Builds the flux2-mini training folder in the kohya / ai-toolkit layout `flux2 train` reads:
// every image NAME.png has its caption in NAME.txt; sub-folders are named REPEATS_name.
//
//   OUT/train/1_scenes/scene_000000.png|.txt   generated shapes (src/mini/scenes.ts)
//   OUT/train/3_emoji/emoji_1f34e.png|.txt     Noto emoji with emojibase names (src/mini/emoji.ts), 3 repeats
//                                              per epoch (--emoji-repeats N names the folder N_emoji):
//                                              each emoji must be remembered, a scene only composed;
//                                              with --emoji-captions all, every caption form on its own line
//                                              (train with flux2 train --multi-caption); with plain, the name alone
//   OUT/train/105_focus/emoji_1f34e.png|.txt   with --focus-group food-drink --focus-repeats 105: that group's
//                                              emoji again, read 105 more times per epoch (version 8's last stage)
//   OUT/style/1_style/style_1f34e.png|.txt     25 emoji in the LoRA demo's palette style
//   OUT/eval.json                              what the eval holds out and asks for
//   OUT/manifest.json                          seed, size, counts, SHA-256 of every file
//   OUT/NOTICE                                 licences of the emoji images and names
//
// Deterministic: the same seed, size and counts give the same bytes (PNGs are encoded by sharp
// with fixed settings; nothing depends on time, order of completion or the machine).

import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { DEFAULT_HEX_TOKEN_SHARE, DEFAULT_SCENE_MIX, HEX_CODES, PLACEMENTS, checkHexTokenShare, drawScene, isDefaultSceneMix, sampleScene, type HexCodes, type Placement, type SceneMix } from "./scenes.js";
import { EMOJI_CAPTION_FORMS, emojiCaptionFile, emojiRgb, listEmoji, type EmojiCaptionForms } from "./emoji.js";
import { restyle, styleCaption, styleSplit } from "./style.js";
import { evalPlan } from "./eval_plan.js";
import { parseFolderName } from "../train/data.js";

export interface BuildOptions {
  out: string;
  seed?: number;
  /** Image side in pixels, 64–128, a multiple of 16. */
  size?: number;
  scenes?: number;
  /** Relative weights of the scene kinds (default DEFAULT_SCENE_MIX, what versions 1–5 trained on). */
  sceneMix?: SceneMix;
  /** Where shapes stand (default "jitter", what versions 1–5 trained on; see Placement). */
  placement?: Placement;
  /** How training hex codes are drawn (default "uniform", what versions 1–6 trained on; see HexCodes). */
  hexCodes?: HexCodes;
  /** With hexCodes "token-runs": the share of codes built around a letter-run token (default DEFAULT_HEX_TOKEN_SHARE, 0.5). */
  hexTokenShare?: number;
  /** Include the emoji (default true). */
  emoji?: boolean;
  /**
   * "one" (default, what versions 1–6 trained on): one caption form per emoji, chosen by its index;
   * "all": every form, one per line, the plain name first (for flux2 train --multi-caption);
   * "plain": the plain name alone ("a red apple"), what the eval and a user type.
   */
  emojiCaptions?: EmojiCaptionForms;
  /**
   * How many times `flux2 train` reads each emoji per epoch: the kohya repeat count in the folder's
   * name, N_emoji (default DEFAULT_EMOJI_REPEATS, 3, what versions 1–7 trained on).
   */
  emojiRepeats?: number;
  /**
   * An emoji group (emojibase's name, "food-drink") whose pictures are written a second time, to
   * train/N_focus with N = focusRepeats, so that `flux2 train` reads them N more times per epoch
   * than the rest (version 8's last stage: a picture needs about 250 passes before its details
   * are drawn, docs/flux2-mini.md session 27, which all 1,906 emoji cannot get on this CPU).
   */
  focusGroup?: string;
  /** With focusGroup: the repeat count of train/N_focus, 1 to MAX_FOCUS_REPEATS. */
  focusRepeats?: number;
  /** Include the LoRA style set (default true). */
  style?: boolean;
  log?: (s: string) => void;
}

export interface BuildResult {
  out: string;
  counts: { scenes: number; emoji: number; style: number };
  /** SHA-256 over the manifest's file list (names and hashes): one number that says "same set". */
  digest: string;
}

export const DEFAULT_SCENES = 8000;
export const DEFAULT_EMOJI_REPEATS = 3;
/** More repeats than this would drown the scenes (8,000 of them against 1,906 emoji per repeat). */
export const MAX_EMOJI_REPEATS = 20;

/** A focus folder read more often than this would be most of every batch (131 food emoji × 200 against 13,718 other pictures an epoch). */
export const MAX_FOCUS_REPEATS = 200;

/** Refuses a focus group that is not an emoji group, a repeat count out of range, or one without the other. */
export function checkFocus(group: string | undefined, repeats: number | undefined, emoji: boolean, groups: string[]): void {
  if (group === undefined && repeats === undefined) return;
  if (group === undefined || repeats === undefined) throw new Error("--focus-group and --focus-repeats go together: give both, or neither");
  if (!emoji) throw new Error("--focus-group needs the emoji: drop --no-emoji, or drop --focus-group");
  checkChoice("--focus-group", group, groups);
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > MAX_FOCUS_REPEATS) {
    throw new Error(`--focus-repeats must be an integer from 1 to ${MAX_FOCUS_REPEATS} (times each picture of the group is read per epoch, besides the emoji folder), got ${repeats}`);
  }
}

/** Refuses a repeat count the trainer would not read as asked, or one given with --no-emoji (which would ignore it). */
export function checkEmojiRepeats(repeats: number | undefined, emoji: boolean): void {
  if (repeats === undefined) return;
  if (!emoji) throw new Error("--emoji-repeats needs the emoji: drop --no-emoji, or drop --emoji-repeats");
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > MAX_EMOJI_REPEATS) {
    throw new Error(`--emoji-repeats must be an integer from 1 to ${MAX_EMOJI_REPEATS} (times each emoji is read per epoch), got ${repeats}`);
  }
}

export function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 64 || size > 128 || size % 16 !== 0) {
    throw new Error(`--size must be 64, 80, 96, 112 or 128 (pixels, a multiple of 16), got ${size}`);
  }
}

/** Fixed PNG settings: the same pixels always give the same bytes with this sharp/libvips. */
export async function encodePng(rgb: Uint8Array, size: number): Promise<Buffer> {
  return sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width: size, height: size, channels: 3 } })
    .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
    .toBuffer();
}

/** Refuses a value outside `choices`, naming them: "--placement must be jitter or grid, got "snap"". */
function checkChoice(option: string, value: string, choices: readonly string[]): void {
  if (choices.includes(value)) return;
  const list = choices.length > 1 ? `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}` : choices[0];
  throw new Error(`${option} must be ${list}, got "${value}"`);
}

export async function buildMiniDataset(opts: BuildOptions): Promise<BuildResult> {
  const seed = opts.seed ?? 0;
  const size = opts.size ?? 64;
  const nScenes = opts.scenes ?? DEFAULT_SCENES;
  const mix = opts.sceneMix ?? DEFAULT_SCENE_MIX;
  const placement = opts.placement ?? "jitter";
  const emojiCaptionForms = opts.emojiCaptions ?? "one";
  const hexCodes = opts.hexCodes ?? "uniform";
  checkChoice("--placement", placement, PLACEMENTS);
  checkChoice("--hex-codes", hexCodes, HEX_CODES);
  checkHexTokenShare(hexCodes, opts.hexTokenShare);
  const hexTokenShare = opts.hexTokenShare ?? DEFAULT_HEX_TOKEN_SHARE;
  checkChoice("--emoji-captions", emojiCaptionForms, EMOJI_CAPTION_FORMS);
  checkEmojiRepeats(opts.emojiRepeats, opts.emoji !== false);
  const emojiRepeats = opts.emojiRepeats ?? DEFAULT_EMOJI_REPEATS;
  const emojiDir = `train/${emojiRepeats}_emoji`;
  const allEmoji = opts.emoji !== false ? listEmoji() : [];
  checkFocus(opts.focusGroup, opts.focusRepeats, opts.emoji !== false, [...new Set(allEmoji.map((e) => e.group))]);
  const log = opts.log ?? (() => {});
  checkSize(size);
  if (!Number.isSafeInteger(seed) || seed < 0 || seed >= 2 ** 31) throw new Error(`--seed must be an integer from 0 to 2^31-1, got ${seed}`);
  if (!Number.isInteger(nScenes) || nScenes < 0) throw new Error(`--scenes must be a non-negative integer, got ${nScenes}`);
  if (fs.existsSync(opts.out) && fs.readdirSync(opts.out).length > 0) {
    throw new Error(`${opts.out} is not empty: give a new or empty folder (the builder never mixes its files with others)`);
  }
  const files = new Map<string, string>(); // relative path → sha256
  const write = (rel: string, data: Buffer | string) => {
    const file = path.join(opts.out, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
    files.set(rel.split(path.sep).join("/"), createHash("sha256").update(data).digest("hex"));
  };

  // Scenes, encoded a few at a time (sharp works off the main thread).
  const BATCH = 16;
  for (let i0 = 0; i0 < nScenes; i0 += BATCH) {
    const ids = Array.from({ length: Math.min(BATCH, nScenes - i0) }, (_, k) => i0 + k);
    const scenes = ids.map((i) => sampleScene(seed, i, mix, hexCodes, hexTokenShare));
    const pngs = await Promise.all(ids.map((i, k) => encodePng(drawScene(scenes[k], size, seed, i, placement), size)));
    ids.forEach((i, k) => {
      const name = `train/1_scenes/scene_${String(i).padStart(6, "0")}`;
      write(`${name}.png`, pngs[k]);
      write(`${name}.txt`, scenes[k].caption + "\n");
    });
    if ((i0 / BATCH) % 50 === 0) log(`scenes: ${i0 + ids.length} / ${nScenes}`);
  }

  let nEmoji = 0;
  if (opts.emoji !== false) {
    const focusDir = opts.focusGroup !== undefined ? `train/${opts.focusRepeats}_focus` : undefined;
    for (let i0 = 0; i0 < allEmoji.length; i0 += BATCH) {
      const part = allEmoji.slice(i0, i0 + BATCH);
      const pngs = await Promise.all(part.map(async (e) => encodePng(await emojiRgb(e, size), size)));
      part.forEach((e, k) => {
        const caption = emojiCaptionFile(e, emojiCaptionForms, i0 + k + seed) + "\n";
        // A focus-group emoji goes to the focus folder too, file for file: only how often it is read changes.
        for (const dir of focusDir && e.group === opts.focusGroup ? [emojiDir, focusDir] : [emojiDir]) {
          write(`${dir}/emoji_${e.code}.png`, pngs[k]);
          write(`${dir}/emoji_${e.code}.txt`, caption);
        }
      });
    }
    nEmoji = allEmoji.length;
    log(`emoji: ${nEmoji}`);
  }

  let nStyle = 0;
  if (opts.style !== false) {
    for (const e of styleSplit().train) {
      write(`style/1_style/style_${e.code}.png`, await encodePng(restyle(await emojiRgb(e, size)), size));
      write(`style/1_style/style_${e.code}.txt`, styleCaption(e) + "\n");
      nStyle++;
    }
    log(`style: ${nStyle}`);
  }

  write("eval.json", JSON.stringify(evalPlan(), null, 2) + "\n");
  write("NOTICE", fs.readFileSync(noticeFile(), "utf8"));
  const list = [...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  const digest = createHash("sha256").update(list.map(([f, h]) => `${h}  ${f}\n`).join("")).digest("hex");
  const counts = { scenes: nScenes, emoji: nEmoji, style: nStyle };
  fs.writeFileSync(path.join(opts.out, "manifest.json"), JSON.stringify({ seed, size, ...(isDefaultSceneMix(mix) ? {} : { sceneMix: mix }), ...(placement === "jitter" ? {} : { placement }), ...(hexCodes === "uniform" ? {} : { hexCodes }), ...(hexTokenShare === DEFAULT_HEX_TOKEN_SHARE ? {} : { hexTokenShare }), ...(emojiCaptionForms === "one" ? {} : { emojiCaptions: emojiCaptionForms }), ...(emojiRepeats === DEFAULT_EMOJI_REPEATS ? {} : { emojiRepeats }), ...(opts.focusGroup === undefined ? {} : { focusGroup: opts.focusGroup, focusRepeats: opts.focusRepeats }), counts, digest, files: Object.fromEntries(list) }, null, 1) + "\n");
  return { out: opts.out, counts, digest };
}

/** The repository's NOTICE (copied into every built set, which redistributes the emoji images). */
function noticeFile(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, "NOTICE")) && fs.existsSync(path.join(dir, "package.json"))) return path.join(dir, "NOTICE");
    dir = path.dirname(dir);
  }
  throw new Error("the repository's NOTICE file was not found next to package.json");
}

/**
 * A picture of a built set for the docs: the first 32 scenes, 16 emoji spread over the list and
 * 8 style images, 8 per row, each shown at twice its size (nearest neighbour, so pixels stay visible).
 */
export async function writeContactSheet(setDir: string, file: string): Promise<void> {
  const list = (sub: string) => {
    const d = path.join(setDir, sub);
    return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith(".png")).sort().map((f) => path.join(d, f)) : [];
  };
  const scenes = list("train/1_scenes").slice(0, 32);
  // The emoji folder under any repeat count, read as flux2 train reads it (--emoji-repeats).
  const trainDir = path.join(setDir, "train");
  const emojiDir = fs.existsSync(trainDir) ? fs.readdirSync(trainDir).find((d) => parseFolderName(d)?.name === "emoji") : undefined;
  const emoji = emojiDir ? list(`train/${emojiDir}`) : [];
  const picked = Array.from({ length: Math.min(16, emoji.length) }, (_, k) => emoji[Math.floor((k * emoji.length) / 16)]);
  const files = [...scenes, ...picked, ...list("style/1_style").slice(0, 8)];
  if (!files.length) throw new Error(`${setDir}: no images to show`);
  const size = (await sharp(files[0]).metadata()).width!;
  const cell = 2 * size + 4, cols = 8, rows = Math.ceil(files.length / cols);
  const tiles = await Promise.all(files.map((f) => sharp(f).resize(2 * size, 2 * size, { kernel: "nearest" }).png().toBuffer()));
  await sharp({ create: { width: cols * cell + 4, height: rows * cell + 4, channels: 3, background: "#888888" } })
    .composite(tiles.map((input, i) => ({ input, left: 4 + (i % cols) * cell, top: 4 + Math.floor(i / cols) * cell })))
    .png({ compressionLevel: 9 })
    .toFile(file);
}
