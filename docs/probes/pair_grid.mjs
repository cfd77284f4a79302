// Analysis helper behind docs/flux2-mini.md, session 20; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/pair_grid.mjs MODEL_DIR [COLOURS] [SEEDS] [OUT.png] [THREADS]
// Every shape at every position (the 5 × 5 pairs, the eval's 6 held-out ones among them), in the
// eval's layout form "a red star at the top, on a white background", for each colour of COLOURS
// (default red,blue,green,purple,orange: the eval's five) and seed of SEEDS (default 0), scored by
// flux2 eval's own layoutAdherence. Prints a shape × position table of passes, the trained pairs'
// and the held-out pairs' totals, and what shape the misses were drawn as. OUT.png (optional)
// gets every picture: one row per shape, the positions left to right (each with its colours and seeds).
// It asks whether a model that draws a shape where it was shown it also draws it where it was not.
import sharp from "sharp";
const [model, colourList = "red,blue,green,purple,orange", seedList = "0", out = "", threads = "2"] = process.argv.slice(2);
if (!model) { console.error("usage: node docs/probes/pair_grid.mjs MODEL_DIR [COLOURS] [SEEDS] [OUT.png] [THREADS]"); process.exit(2); }
const dist = new URL("../../dist/src/", import.meta.url);
const lib = await import(new URL("index.js", dist));
const { layoutAdherence } = await import(new URL("eval/metrics.js", dist));
const { SHAPES } = await import(new URL("mini/shapes.js", dist));
const { POSITIONS, HELD_OUT_LAYOUTS, layoutPrompt } = await import(new URL("mini/scenes.js", dist));
const colours = colourList.split(","), seeds = seedList.split(",").map(Number);
const heldOut = (shape, position) => HELD_OUT_LAYOUTS.some((h) => h.shape === shape && h.position === position);
const pipe = await lib.load(model, { threads: Number(threads) });
const tiles = [];
const table = {}, drawnAs = {};
let trained = [0, 0], held = [0, 0];
for (const shape of SHAPES) {
  for (const position of POSITIONS) {
    let pass = 0, n = 0;
    for (const colour of colours) {
      for (const seed of seeds) {
        const im = (await lib.generate(pipe, { prompt: layoutPrompt(colour, shape, position), seed })).images[0];
        const r = layoutAdherence({ rgb: im.rgb, width: im.width, height: im.height }, shape, position);
        n++;
        if (r.pass) pass++;
        else drawnAs[`${shape}→${r.shape}`] = (drawnAs[`${shape}→${r.shape}`] ?? 0) + 1;
        tiles.push(im);
      }
    }
    table[`${shape} ${position}`] = `${pass}/${n}${heldOut(shape, position) ? " (held out)" : ""}`;
    const acc = heldOut(shape, position) ? held : trained;
    acc[0] += pass; acc[1] += n;
  }
}
await pipe.release();
console.log(`${model}`);
for (const shape of SHAPES) console.log(`  ${shape.padEnd(8)} ${POSITIONS.map((p) => `${p}: ${table[`${shape} ${p}`]}`).join("  ")}`);
console.log(`  trained pairs ${trained[0]}/${trained[1]}, held-out pairs ${held[0]}/${held[1]}`);
console.log(`  misses drawn as ${JSON.stringify(drawnAs)}`);
if (out) {
  const per = POSITIONS.length * colours.length * seeds.length, w = tiles[0].width, h = tiles[0].height;
  const composite = await Promise.all(tiles.map(async (im, i) => ({
    input: await sharp(Buffer.from(im.rgb), { raw: { width: w, height: h, channels: 3 } }).png().toBuffer(),
    left: (i % per) * w, top: Math.floor(i / per) * h,
  })));
  await sharp({ create: { width: per * w, height: (tiles.length / per) * h, channels: 3, background: "#ffffff" } }).composite(composite).png().toFile(out);
  console.log(`  wrote ${out}`);
}
