// Analysis helper behind docs/flux2-mini.md, session 20; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/layout_focus.mjs OUT_DIR [SIZE] [PLACEMENT]
// Writes OUT_DIR/1_scenes: one picture for every *trained* shape/position pair (the 5 shapes × 5
// positions less the eval's 6 held-out pairs: 19) × every layout colour (18 named colours) × the
// three sizes, on white, captioned exactly in the eval's layout form ("a red star on the left, on a
// white background"), drawn by the data set's own renderer (grid placement by default). 1,026
// pictures: a set on which the transformer can be shown each trained pair many hundreds of times,
// to ask whether drawing a shape at the places it was shown carries to the held-out pairs.
// PLACEMENT: grid or jitter place and draw each picture exactly as the data set builder does
// (drawScene, --placement grid or the default), or spread (a seeded random centre anywhere within ±20%
// of the side whose nearest named position (flux2 eval's nearestPosition) is still the named one and
// whose shape stays inside the picture: a star "on the left" may then sit well above or below the
// left's centre, so more of the canvas sees every shape while no picture holds a held-out pair).
import * as fs from "node:fs";
import * as path from "node:path";
const [out, sizeArg = "64", placement = "grid"] = process.argv.slice(2);
if (!out) { console.error("usage: node docs/probes/layout_focus.mjs OUT_DIR [SIZE] [grid|jitter|spread]"); process.exit(2); }
const size = Number(sizeArg);
const dist = new URL("../../dist/src/mini/", import.meta.url);
const { SHAPES, renderScene } = await import(new URL("shapes.js", dist));
const { POSITIONS, HELD_OUT_LAYOUTS, LAYOUT_COLOURS, SIZES, POSITION_CENTRE, drawScene, layoutPrompt } = await import(new URL("scenes.js", dist));
const { NAMED_COLOURS, WHITE, parseHex } = await import(new URL("colour.js", dist));
const { encodePng } = await import(new URL("dataset.js", dist));
const { nearestPosition } = await import(new URL("../eval/metrics.js", dist));
const { Xoshiro128 } = await import(new URL("../util/random.js", dist));
if (!["grid", "jitter", "spread"].includes(placement)) { console.error(`PLACEMENT must be grid, jitter or spread, got ${placement}`); process.exit(2); }
const rng = new Xoshiro128(20n);
const u = () => rng.nextDouble() * 2 - 1;
const dir = path.join(out, "1_scenes");
fs.mkdirSync(dir, { recursive: true });
// Spread is this probe's own placement (a negative result, session 20, so not a builder option);
// it spreads around the named position's centre as the eval places it (POSITION_CENTRE).
function spreadCentre(position, r) {
  const [fx, fy] = POSITION_CENTRE[position];
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
      const hex = NAMED_COLOURS.find((c) => c.name === colour).hex;
      for (const sizeName of Object.keys(SIZES)) {
        const caption = layoutPrompt(colour, shape, position);
        let pixels;
        if (placement === "spread") {
          const [fx, fy] = spreadCentre(position, SIZES[sizeName]);
          pixels = renderScene(size, parseHex(WHITE), [{ kind: shape, cx: fx * size, cy: fy * size, r: SIZES[sizeName] * size, colour: parseHex(hex) }]);
        } else {
          const scene = {
            kind: "single", subjects: [{ shape, colour: { hex, word: colour }, position, size: sizeName, saySize: false }],
            background: { hex: WHITE, word: "white" }, relation: null, json: false, caption,
          };
          pixels = drawScene(scene, size, 0, n, placement);
        }
        const name = `focus_${String(n++).padStart(5, "0")}`;
        fs.writeFileSync(path.join(dir, `${name}.png`), await encodePng(pixels, size));
        fs.writeFileSync(path.join(dir, `${name}.txt`), caption);
      }
    }
  }
}
console.log(`${dir}: ${n} pictures`);
