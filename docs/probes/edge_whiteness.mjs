// Analysis script behind docs/flux2-mini.md, session 15; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/edge_whiteness.mjs MODEL_DIR
// Four prompts × seeds 0–3 with the model's defaults: how far from white (CIELAB ΔE) the
// outermost ring of pixels is, on average, in the corners, and at worst.
const [model] = process.argv.slice(2);
if (!model) { console.error("usage: node docs/probes/edge_whiteness.mjs MODEL_DIR"); process.exit(2); }
const lib = await import(new URL("../../dist/src/index.js", import.meta.url));
const { rgbToLab, deltaE } = await import(new URL("../../dist/src/mini/colour.js", import.meta.url));
const pipe = await lib.load(model, { threads: 1 });
const prompts = ["a #1E90FF circle on a white background", "a #8E44AD square on a white background", "a red star on the left, on a white background", "a red apple"];
let ring = 0, N = 0, worst = 0, corner = 0;
for (const p of prompts) for (const seed of [0, 1, 2, 3]) {
  const im = (await lib.generate(pipe, { prompt: p, seed })).images[0]; const S = im.width, o = im.rgb;
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) if (x === 0 || y === 0 || x === S - 1 || y === S - 1) {
    const i = y * S + x; const d = deltaE(rgbToLab(o[i*3], o[i*3+1], o[i*3+2]), [100, 0, 0]); ring += d; N++; worst = Math.max(worst, d);
    if ((x === 0 || x === S - 1) && (y === 0 || y === S - 1)) corner += d / 4 / 16; }
}
console.log(`${model}: outer ring ΔE from white, mean ${(ring / N).toFixed(2)}, corners mean ${corner.toFixed(1)}, worst ${worst.toFixed(1)}`);
await pipe.release();
