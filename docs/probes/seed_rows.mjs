// Analysis script behind docs/flux2-mini-s28-*.png; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/seed_rows.mjs OUT.png "PROMPT" LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]
// One row per model: PROMPT with seeds 0–7 at the model's own defaults (flux2-mini: 50 steps,
// CFG 4), each shown 2× with nearest-neighbour scaling so that the 64² pixels stay visible.
import { createRequire } from "node:module";
const [outFile, prompt, ...specs] = process.argv.slice(2);
if (!outFile || !prompt || !specs.length || specs.some((s) => !s.includes("="))) {
  console.error('usage: node docs/probes/seed_rows.mjs OUT.png "PROMPT" LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]');
  process.exit(2);
}
const lib = await import(new URL("../../dist/src/index.js", import.meta.url));
const sharp = createRequire(new URL("../../package.json", import.meta.url))("sharp");
const SEEDS = 8, S = 128, PAD = 4, LABEL_W = 150;
const tiles = [], labels = [];
for (const [row, spec] of specs.entries()) {
  const [label, dir] = [spec.slice(0, spec.indexOf("=")), spec.slice(spec.indexOf("=") + 1)];
  labels.push({ label, row });
  const pipe = await lib.load(dir, { threads: 2 });
  for (let seed = 0; seed < SEEDS; seed++) {
    const im = (await lib.generate(pipe, { prompt, seed })).images[0];
    const png = await sharp(Buffer.from(im.rgb), { raw: { width: im.width, height: im.height, channels: 3 } }).resize(S, S, { kernel: "nearest" }).png().toBuffer();
    tiles.push({ input: png, left: LABEL_W + PAD + seed * (S + PAD), top: PAD + row * (S + PAD) });
  }
  await pipe.release();
}
const width = LABEL_W + PAD + SEEDS * (S + PAD), height = PAD + specs.length * (S + PAD);
const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
const svg = `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg">${labels.map(({ label, row }) =>
  `<text x="6" y="${PAD + row * (S + PAD) + S / 2}" font-family="sans-serif" font-size="14">${esc(label)}</text>`).join("")}</svg>`;
await sharp({ create: { width, height, channels: 3, background: "#ffffff" } })
  .composite([{ input: Buffer.from(svg), left: 0, top: 0 }, ...tiles]).png({ compressionLevel: 9 }).toFile(outFile);
console.log(`${outFile}: "${prompt}", seeds 0–${SEEDS - 1}, ${specs.length} row(s)`);
