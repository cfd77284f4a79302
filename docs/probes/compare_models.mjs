// Analysis script behind docs/flux2-mini-s14-compare.png; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/compare_models.mjs OUT.png LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]
// One row per model, one column per prompt below: seed 0 and each model's own defaults (flux2-mini:
// 50 steps, CFG 4), shown 2× with nearest-neighbour scaling so the 64² pixels stay visible.
import { createRequire } from "node:module";
const [outFile, ...specs] = process.argv.slice(2);
if (!outFile || !specs.length || specs.some((s) => !s.includes("="))) {
  console.error("usage: node docs/probes/compare_models.mjs OUT.png LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]");
  process.exit(2);
}
const lib = await import(new URL("../../dist/src/index.js", import.meta.url));
const sharp = createRequire(new URL("../../package.json", import.meta.url))("sharp");
const columns = [
  ["#1E90FF circle", "a #1E90FF circle on a white background"],
  ["red apple", "a red apple"],
  ["blue star, top", "a blue star at the top, on a white background"],
  ["green circle, bottom", "a green circle at the bottom, on a white background"],
  ["purple triangle, left", "a purple triangle on the left, on a white background"],
];
const S = 128, GAP = 6, LEFT = 150, TOP = 40;
const text = (s, w, h, y, size) => Buffer.from(`<svg width="${w}" height="${h}"><text x="2" y="${y}" font-size="${size}" font-family="sans-serif">${s.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</text></svg>`);
const tiles = [];
for (const [r, spec] of specs.entries()) {
  const [label, dir] = [spec.slice(0, spec.indexOf("=")), spec.slice(spec.indexOf("=") + 1)];
  const pipe = await lib.load(dir, { threads: 2 });
  for (const [c, [, prompt]] of columns.entries()) {
    const im = (await lib.generate(pipe, { prompt, seed: 0 })).images[0];
    const png = await sharp(Buffer.from(im.rgb), { raw: { width: im.width, height: im.height, channels: 3 } }).resize(S, S, { kernel: "nearest" }).png().toBuffer();
    tiles.push({ input: png, left: LEFT + c * (S + GAP), top: TOP + r * (S + GAP) });
  }
  await pipe.release();
  tiles.push({ input: text(label, LEFT, S, S / 2, 14), left: 0, top: TOP + r * (S + GAP) });
}
columns.forEach(([label], c) => tiles.push({ input: text(label, S, TOP, TOP - 8, 12), left: LEFT + c * (S + GAP), top: 0 }));
const width = LEFT + columns.length * (S + GAP), height = TOP + specs.length * (S + GAP);
await sharp({ create: { width, height, channels: 3, background: "#ffffff" } }).composite(tiles).png().toFile(outFile);
console.log(`wrote ${outFile}`);
