// Analysis script behind a number in docs/flux2-mini.md (session 8); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/text_only_colour.mjs MODEL [N=128] [STEPS=1] [GUIDANCE=1]
//   env DATA (default data/flux2-mini/train) is a built data set; MAXLEN (default 128) the text length.
// What does the transformer predict from the text alone? One Euler step from pure noise with guidance 1
// is E[x0 | text]; for "a #RRGGBB <shape> on a white background" the centre of that picture should be
// the prompted colour. Prints the mean CIELAB ΔE between the centre 16×16 pixels and the prompted
// colour over the first N training captions of that form, and the ΔE of always painting their mean.
import * as fs from "node:fs";
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { loadPipeline } = await import(new URL("loaders/pretrained.js", dist));
const { hexLab, deltaE, parseHex, rgbToLab } = await import(new URL("mini/colour.js", dist));
const [model, n = "128", steps = "1", guidance = "1"] = process.argv.slice(2);
if (!model) throw new Error("usage: node docs/probes/text_only_colour.mjs MODEL [N] [STEPS] [GUIDANCE]");
const dir = `${process.env.DATA ?? "data/flux2-mini/train"}/1_scenes`;
const re = /^a (#[0-9A-F]{6}) (circle|square|triangle) on a white background$/;
const cases = [];
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".txt")).sort()) {
  const t = fs.readFileSync(`${dir}/${f}`, "utf8").trim(), m = re.exec(t);
  if (m) cases.push({ prompt: t, hex: m[1] });
  if (cases.length >= Number(n)) break;
}
const pipe = loadPipeline(model, { backend: new OrtBackend({ threads: 1 }), keepLoaded: true });
const centre = (img) => {
  const s = [0, 0, 0];
  for (let y = 24; y < 40; y++) for (let x = 24; x < 40; x++) for (let c = 0; c < 3; c++) s[c] += img.rgb[(y * img.width + x) * 3 + c];
  return s.map((v) => v / 256);
};
const got = [];
for (let i = 0; i < cases.length; i += 8) {
  const part = cases.slice(i, i + 8);
  const r = await pipe.generate({ prompt: part.map((c) => c.prompt), width: 64, height: 64, steps: Number(steps), guidance: Number(guidance), seed: i, maxSequenceLength: Number(process.env.MAXLEN ?? 128) });
  for (const img of r.images) got.push(centre(img));
}
await pipe.release();
const want = cases.map((c) => hexLab(c.hex));
const meanRgb = [0, 1, 2].map((k) => cases.reduce((a, c) => a + parseHex(c.hex)[k], 0) / cases.length);
const avg = (f) => cases.reduce((a, _, i) => a + f(i), 0) / cases.length;
console.log(`${model}: ${cases.length} captions, ${steps} step(s), guidance ${guidance}: mean ΔE ${avg((i) => deltaE(rgbToLab(...got[i]), want[i])).toFixed(1)}; always the captions' mean colour: ${avg((i) => deltaE(rgbToLab(...meanRgb), want[i])).toFixed(1)}`);
