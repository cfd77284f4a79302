// Analysis script behind session 27's passes probe in docs/flux2-mini.md; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/eval_emoji_subset.mjs DATA OUT
// Copies the pictures and captions of the eval's 100 emoji (DATA/eval.json, from build-mini-dataset) out of
// DATA/train/*_emoji/ into OUT/1_emoji/, a kohya folder for flux2 train: a set small enough to be seen
// hundreds of times in minutes, to measure how many passes over a picture this transformer needs to draw it.
import * as fs from "node:fs";
import * as path from "node:path";
const { parseFolderName } = await import(new URL("../../dist/src/train/data.js", import.meta.url));
const [data, out] = process.argv.slice(2);
if (!out) throw new Error("usage: node docs/probes/eval_emoji_subset.mjs DATA OUT");
// The emoji folder under any repeat count, read as flux2 train reads it (--emoji-repeats).
const emojiDir = fs.readdirSync(path.join(data, "train")).find((d) => parseFolderName(d)?.name === "emoji");
if (!emojiDir) throw new Error(`${data}/train has no N_emoji folder: pass a build-mini-dataset output`);
const { emoji } = JSON.parse(fs.readFileSync(path.join(data, "eval.json"), "utf8"));
fs.mkdirSync(path.join(out, "1_emoji"), { recursive: true });
for (const { code } of emoji) for (const ext of ["png", "txt"]) {
  fs.copyFileSync(path.join(data, "train", emojiDir, `emoji_${code}.${ext}`), path.join(out, "1_emoji", `emoji_${code}.${ext}`));
}
console.log(`${emoji.length} emoji → ${out}/1_emoji`);
