// Analysis helper behind docs/flux2-mini.md, session 20; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/layout_focus.mjs OUT_DIR [SIZE] [PLACEMENT]
// Writes OUT_DIR/1_scenes: one picture for every *trained* shape/position pair (the 5 shapes × 5
// positions less the eval's 6 held-out pairs: 19) × every layout colour (18 named colours) × the
// three sizes, on white, captioned exactly in the eval's layout form ("a red star on the left, on a
// white background"), drawn by the data set's own renderer (grid placement by default). 1,026
// pictures: a set on which the transformer can be shown each trained pair many hundreds of times,
// to ask whether drawing a shape at the places it was shown carries to the held-out pairs.
// PLACEMENT: grid (the named position's grid centre, as --placement grid), jitter (its centre plus
// at most ±3% of the side, as the data set) or spread (a seeded random centre anywhere within ±20%
// of the side whose nearest named position (flux2 eval's nearestPosition) is still the named one and
// whose shape stays inside the picture: a star "on the left" may then sit well above or below the
// left's centre, so more of the canvas sees every shape while no picture holds a held-out pair).
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
const [out, sizeArg = "64", placement = "grid"] = process.argv.slice(2);
if (!out) { console.error("usage: node docs/probes/layout_focus.mjs OUT_DIR [SIZE] [jitter|grid]"); process.exit(2); }
const size = Number(sizeArg);
const dist = new URL("../../dist/src/mini/", import.meta.url);
const { SHAPES, renderScene } = await import(new URL("shapes.js", dist));
const { POSITIONS, HELD_OUT_LAYOUTS, LAYOUT_COLOURS, SIZES, GRID_CENTRE, POSITION_CENTRE, layoutPrompt } = await import(new URL("scenes.js", dist));
const { NAMED_COLOURS, parseHex } = await import(new URL("colour.js", dist));
const { nearestPosition } = await import(new URL("../eval/metrics.js", dist));
const { Xoshiro128 } = await import(new URL("../util/random.js", dist));
if (!["grid", "jitter", "spread"].includes(placement)) { console.error(`PLACEMENT must be grid, jitter or spread, got ${placement}`); process.exit(2); }
const rng = new Xoshiro128(20n);
const u = () => rng.nextDouble() * 2 - 1;
const dir = path.join(out, "1_scenes");
fs.mkdirSync(dir, { recursive: true });
const centre = placement === "grid" ? GRID_CENTRE : POSITION_CENTRE;
function place(position, r) {
  const [fx, fy] = centre[position];
  if (placement === "grid") return [fx, fy];
  if (placement === "jitter") return [fx + 0.03 * u(), fy + 0.03 * u()];
  for (;;) {
    const x = fx + 0.2 * u(), y = fy + 0.2 * u();
    if (x - r >= 0 && x + r <= 1 && y - r >= 0 && y + r <= 1 && nearestPosition(x, y) === position) return [x, y];
  }
}
let n = 0;
for (const shape of SHAPES) {
  for (const position of POSITIONS) {
    if (HELD_OUT_LAYOUTS.some((h) => h.shape === shape && h.position === position)) continue;
    for (const colour of LAYOUT_COLOURS) {
      const rgb = parseHex(NAMED_COLOURS.find((c) => c.name === colour).hex);
      for (const sizeName of Object.keys(SIZES)) {
        const [fx, fy] = place(position, SIZES[sizeName]);
        const pixels = renderScene(size, [255, 255, 255], [{ kind: shape, cx: fx * size, cy: fy * size, r: SIZES[sizeName] * size, colour: rgb }]);
        const name = `focus_${String(n++).padStart(5, "0")}`;
        await sharp(Buffer.from(pixels), { raw: { width: size, height: size, channels: 3 } }).png().toFile(path.join(dir, `${name}.png`));
        fs.writeFileSync(path.join(dir, `${name}.txt`), layoutPrompt(colour, shape, position));
      }
    }
  }
}
console.log(`${dir}: ${n} pictures`);
