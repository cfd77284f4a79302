// Analysis script behind docs/flux2-mini-s15-vae.png; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/vae_colour_probe.mjs OUT.png LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]
//
// The eval's 72 held-out hex cases ("a #RRGGBB circle/square/triangle on a white background"),
// drawn as the eval draws them, sent through each model's VAE (encode → posterior mean → decode,
// as `flux2 eval --vae-ceiling` does) and scored with the eval's own hexAdherence. Prints every
// case's ΔE per model and the totals; the picture shows the first 24 cases: the drawing, then
// one row per VAE, at 2× with nearest-neighbour scaling.
import { createRequire } from "node:module";
const [outFile, ...specs] = process.argv.slice(2);
if (!outFile || !specs.length || specs.some((s) => !s.includes("="))) {
  console.error("usage: node docs/probes/vae_colour_probe.mjs OUT.png LABEL=MODEL_DIR [LABEL=MODEL_DIR ...]");
  process.exit(2);
}
const dist = (p) => import(new URL(`../../dist/src/${p}`, import.meta.url));
const sharp = createRequire(new URL("../../package.json", import.meta.url))("sharp");
const { openVaeRoundTrip } = await dist("eval/run.js");
const { evalPlan, drawHexCase } = await dist("mini/eval_plan.js");
const { hexAdherence } = await dist("eval/metrics.js");
const { rgbToLab, deltaE } = await dist("mini/colour.js");

const SIZE = 64, SHOWN = 24, S = 2 * SIZE, GAP = 4, LEFT = 170, TOP = 22;
const cases = evalPlan().hex;

async function roundTrips(dir) {
  const roundTrip = await openVaeRoundTrip(dir, SIZE, 1);
  const out = [];
  for (const c of cases) out.push((await roundTrip(drawHexCase(c, SIZE))).rgb);
  return out;
}

const rows = [["drawn", cases.map((c) => drawHexCase(c, SIZE))]];
for (const spec of specs) {
  const i = spec.indexOf("=");
  rows.push([spec.slice(0, i), await roundTrips(spec.slice(i + 1))]);
}
console.log(["case", ...rows.slice(1).map(([l]) => l)].join("\t"));
const totals = rows.slice(1).map(() => ({ pass: 0, sum: 0, ring: 0, ringN: 0 }));
cases.forEach((c, j) => {
  const cells = rows.slice(1).map(([, imgs], r) => {
    const h = hexAdherence({ rgb: imgs[j], width: SIZE, height: SIZE }, c.hex);
    totals[r].pass += h.pass ? 1 : 0;
    totals[r].sum += h.deltaE ?? 100;
    // The outermost pixel ring: how white the round trip keeps the picture's edge.
    for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) if (x === 0 || y === 0 || x === SIZE - 1 || y === SIZE - 1) {
      const i = (y * SIZE + x) * 3;
      totals[r].ring += deltaE(rgbToLab(imgs[j][i], imgs[j][i + 1], imgs[j][i + 2]), [100, 0, 0]);
      totals[r].ringN++;
    }
    return `ΔE ${h.deltaE === null ? "none" : h.deltaE.toFixed(1)}${h.whiteBackground ? "" : " (background not white)"}${h.pass ? " pass" : ""}`;
  });
  console.log([c.prompt, ...cells].join("\t"));
});
rows.slice(1).forEach(([label], r) => console.log(`${label}: ${totals[r].pass}/${cases.length} within ΔE 15 on white; mean ΔE ${(totals[r].sum / cases.length).toFixed(1)}; outer pixel ring ΔE from white ${(totals[r].ring / totals[r].ringN).toFixed(2)}`));

const text = (s, w, h, y, size) => Buffer.from(`<svg width="${w}" height="${h}"><text x="2" y="${y}" font-size="${size}" font-family="sans-serif">${s.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</text></svg>`);
const perRow = 12, tiles = [];
const band = 2 * (S + GAP) * rows.length + TOP;
for (let half = 0; half < 2; half++) {
  const top0 = half * (rows.length * (S + GAP) + TOP);
  for (let k = 0; k < perRow; k++) {
    const j = half * perRow + k;
    tiles.push({ input: text(cases[j].hex, S, TOP, TOP - 6, 12), left: LEFT + k * (S + GAP), top: top0 });
  }
  for (const [r, [label, imgs]] of rows.entries()) {
    tiles.push({ input: text(label, LEFT, S, S / 2, 12), left: 0, top: top0 + TOP + r * (S + GAP) });
    for (let k = 0; k < perRow; k++) {
      const png = await sharp(Buffer.from(imgs[half * perRow + k]), { raw: { width: SIZE, height: SIZE, channels: 3 } }).resize(S, S, { kernel: "nearest" }).png().toBuffer();
      tiles.push({ input: png, left: LEFT + k * (S + GAP), top: top0 + TOP + r * (S + GAP) });
    }
  }
}
await sharp({ create: { width: LEFT + perRow * (S + GAP), height: band, channels: 3, background: "#ffffff" } }).composite(tiles).png().toFile(outFile);
console.log(`wrote ${outFile} (the first ${SHOWN} cases)`);
