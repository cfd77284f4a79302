// Analysis script behind the "#1E90FF circle, seeds 0–7" columns of docs/flux2-mini.md (sessions 16–19);
// not part of the package or the tests.
// Usage (after npm run build): node docs/probes/readme_circle.mjs MODEL [SEEDS]
// The README's first prompt, "a #1E90FF circle on a white background", for seeds 0..SEEDS-1 (default 8),
// each read as test/flux2_mini.test.ts reads it: the eval's shape finder, a white background, and the
// shape's mean colour within 40° of CIELAB hue of #1E90FF with chroma ≥ 15 ("BLUE"). Also prints each
// seed's hue itself, so a drift can be told apart from noise and its direction seen.
const dist = new URL("../../dist/src/", import.meta.url);
const lib = await import(new URL("index.js", dist));
const { findShape } = await import(new URL("eval/metrics.js", dist));
const { deltaE, hexLab, hueChroma, hueDifference } = await import(new URL("mini/colour.js", dist));
const [model, seedsArg = "8"] = process.argv.slice(2);
if (!model) throw new Error("usage: node docs/probes/readme_circle.mjs MODEL [SEEDS]");
const seeds = Number(seedsArg);
if (!Number.isInteger(seeds) || seeds < 1) throw new Error(`SEEDS must be a positive integer, got "${seedsArg}"`);
const PROMPT = "a #1E90FF circle on a white background";
const want = hueChroma(hexLab("#1E90FF"));
const pipe = await lib.load(model, { threads: 2 });
let blue = 0;
const lines = [];
for (let seed = 0; seed < seeds; seed++) {
  const im = (await lib.generate(pipe, { prompt: PROMPT, seed })).images[0];
  const f = findShape({ rgb: im.rgb, width: im.width, height: im.height });
  if (!f.meanColour) {
    lines.push(`seed ${seed}: no shape found`);
    continue;
  }
  const got = hueChroma(f.meanColour);
  const off = hueDifference(got.hue, want.hue);
  const ok = f.whiteBackground && off <= 40 && got.chroma >= 15;
  if (ok) blue++;
  lines.push(`seed ${seed}: hue ${got.hue.toFixed(0)}° (${off.toFixed(0)}° off), ΔE ${deltaE(f.meanColour, hexLab("#1E90FF")).toFixed(1)}` +
    `${f.whiteBackground ? "" : ", background not white"}${ok ? ", BLUE" : ""}`);
}
await pipe.release();
console.log(lines.join("\n"));
console.log(`${blue}/${seeds} blue on white; #1E90FF is at hue ${want.hue.toFixed(0)}°, the named colour blue (#0000FF) at ${hueChroma(hexLab("#0000FF")).hue.toFixed(0)}°`);
