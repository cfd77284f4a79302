// Analysis helper behind docs/flux2-mini.md, session 22; not part of the package or the tests.
// Usage: node docs/probes/emoji_split.mjs EMOJI_DIR EVAL.json [EVAL.json ...]
// Splits `flux2 eval --json`'s 100 emoji cases by whether the prompt is, word for word, the caption
// the emoji has in EMOJI_DIR (a one-caption build's train/3_emoji, e.g. data/flux2-mini-grid/train/3_emoji):
// in the default build a quarter of the emoji are captioned with their plain name, which is what the
// eval (and a user) types, and the rest with another form ("an emoji of a red apple"). For each file it
// prints the top-5 count and median rank of each part, and the apple emoji's rank for "a red apple".
import fs from "node:fs";
const [dir, ...files] = process.argv.slice(2);
if (!dir || !files.length) { console.error("usage: node docs/probes/emoji_split.mjs EMOJI_DIR EVAL.json [EVAL.json ...]"); process.exit(2); }
const captions = new Set(fs.readdirSync(dir).filter((f) => f.endsWith(".txt")).map((f) => fs.readFileSync(`${dir}/${f}`, "utf8").split("\n")[0].trim()));
const median = (cases) => {
  const r = cases.map((c) => c.rank).sort((a, b) => a - b);
  return r.length ? (r[(r.length - 1) >> 1] + r[r.length >> 1]) / 2 : NaN;
};
const summary = (cases) => `${cases.filter((c) => c.pass).length}/${cases.length} (median rank ${median(cases)})`;
for (const file of files) {
  const report = JSON.parse(fs.readFileSync(file, "utf8"));
  const emoji = report.cases.filter((c) => c.measure === "emoji").map((c) => ({ prompt: c.prompt, pass: c.pass, rank: Number(/rank (\d+)/.exec(c.detail)[1]) }));
  const verbatim = emoji.filter((c) => captions.has(c.prompt)), other = emoji.filter((c) => !captions.has(c.prompt));
  const apple = emoji.find((c) => c.prompt === "a red apple");
  console.log(`${file}: emoji ${summary(emoji)}; captioned with the prompt ${summary(verbatim)}; the others ${summary(other)}; "a red apple" rank ${apple ? apple.rank : "-"}`);
}
