// Builds the flux2-mini data set (see docs/flux2-mini.md):
//
//   npx tsc -p tsconfig.json && node dist/scripts/build-mini-dataset.js --out data/flux2-mini [--seed 0] [--size 64] [--scenes 8000]
//
// The same seed, size and counts give the same bytes; the digest printed at the end says so.

import { parseArgs } from "node:util";
import { DEFAULT_EMOJI_REPEATS, DEFAULT_SCENES, MAX_EMOJI_REPEATS, MAX_FOCUS_REPEATS, buildMiniDataset, writeContactSheet } from "../src/mini/dataset.js";
import { DEFAULT_SCENE_MIX, parseSceneMix, type HexCodes } from "../src/mini/scenes.js";
import type { EmojiCaptionForms } from "../src/mini/emoji.js";

const HELP = `usage: node dist/scripts/build-mini-dataset.js --out DIR [options]

Writes the flux2-mini training set in the kohya/ai-toolkit layout (NAME.png + NAME.txt):
DIR/train/1_scenes (generated shapes), DIR/train/3_emoji (Noto emoji), DIR/style/1_style
(the LoRA demo set), DIR/eval.json, DIR/manifest.json, DIR/NOTICE.

  --out DIR       a new or empty folder (required)
  --seed S        0 to 2^31-1 (default 0)
  --size PX       image side: 64, 80, 96, 112 or 128 (default 64)
  --scenes N      number of generated scenes (default ${DEFAULT_SCENES})
  --scene-mix H,S,P,R
                  relative weights of the scene kinds: hex-form, single shape, pair, row of
                  three (default ${Object.values(DEFAULT_SCENE_MIX).join(",")})
  --placement jitter|grid
                  where shapes stand: the named place plus a small random offset (default), or
                  exactly on the image-token grid (a quarter, half, three quarters of the side)
  --hex-codes uniform|token-runs
                  training hex codes uniformly random (default; what versions 1-6 trained on),
                  or a share of them (--hex-token-share, default half) built around one of the
                  105 letter runs the tokenizer reads as one token ("ACE" in #34ACE0), each drawn
                  as often, so that all are learned
  --hex-token-share F
                  with --hex-codes token-runs: the share of codes built around a letter run,
                  above 0 and at most 1 (default 0.5; the rest uniform)
  --no-emoji      leave out the emoji
  --emoji-captions one|all|plain
                  one caption form per emoji, chosen by its index (default; what versions 1-6
                  trained on), all of them, one per line, the plain name first (train with
                  --multi-caption), or the plain name alone ("a red apple")
  --emoji-repeats N
                  times each emoji is read per epoch, 1 to ${MAX_EMOJI_REPEATS}: the emoji folder becomes
                  train/N_emoji (default ${DEFAULT_EMOJI_REPEATS}; what versions 1-7 trained on)
  --focus-group G --focus-repeats N
                  also write the emoji of emojibase group G (food-drink, animals-nature, ...)
                  to train/N_focus, so that flux2 train reads each of them N more times per
                  epoch than the rest (1 to ${MAX_FOCUS_REPEATS}; version 8: food-drink, 105)
  --no-style      leave out the LoRA style set
  --sheet FILE    also write a PNG overview of the set (docs/flux2-mini-data.png)
  -h, --help      this text`;

async function main(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv, allowPositionals: false,
    options: {
      out: { type: "string" }, seed: { type: "string" }, size: { type: "string" }, scenes: { type: "string" }, "scene-mix": { type: "string" }, placement: { type: "string" }, "hex-codes": { type: "string" }, "hex-token-share": { type: "string" },
      "no-emoji": { type: "boolean" }, "emoji-captions": { type: "string" }, "emoji-repeats": { type: "string" }, "focus-group": { type: "string" }, "focus-repeats": { type: "string" }, "no-style": { type: "boolean" }, sheet: { type: "string" }, help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.out) throw new Error("--out DIR is required (see --help)");
  const num = (s: string | undefined, name: string) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isInteger(n)) throw new Error(`--${name} must be an integer, got "${s}"`);
    return n;
  };
  const share = (s: string | undefined) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (s.trim() === "" || !Number.isFinite(n)) throw new Error(`--hex-token-share must be a number above 0 and at most 1, got "${s}"`);
    return n;
  };
  const t0 = Date.now();
  const r = await buildMiniDataset({
    out: v.out, seed: num(v.seed, "seed"), size: num(v.size, "size"), scenes: num(v.scenes, "scenes"),
    sceneMix: v["scene-mix"] === undefined ? undefined : parseSceneMix(v["scene-mix"] as string),
    placement: v.placement as "jitter" | "grid" | undefined, hexCodes: v["hex-codes"] as HexCodes | undefined,
    hexTokenShare: share(v["hex-token-share"]),
    emoji: !v["no-emoji"], emojiCaptions: v["emoji-captions"] as EmojiCaptionForms | undefined, emojiRepeats: num(v["emoji-repeats"], "emoji-repeats"),
    focusGroup: v["focus-group"] as string | undefined, focusRepeats: num(v["focus-repeats"], "focus-repeats"), style: !v["no-style"], log: (s) => process.stderr.write(s + "\n"),
  });
  if (v.sheet) await writeContactSheet(r.out, v.sheet);
  console.log(`${r.out}: ${r.counts.scenes} scenes, ${r.counts.emoji} emoji, ${r.counts.style} style images in ${((Date.now() - t0) / 1000).toFixed(1)} s; digest ${r.digest}`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: Error) => {
    console.error(`build-mini-dataset: ${e.message}`);
    process.exitCode = 1;
  },
);
