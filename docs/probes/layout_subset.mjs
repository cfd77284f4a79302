// Analysis helper behind docs/flux2-mini.md, session 17; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/layout_subset.mjs DATA_TRAIN_DIR OUT_DIR [PER_SHAPE]
// Copies the first PER_SHAPE (default 8) training scenes of each shape whose caption has the eval's
// layout form ("a COLOUR SHAPE POSITION, on a white background") into OUT_DIR/1_scenes: a set small
// enough to overfit, to tell "the transformer cannot draw shapes" from "it has not seen enough".
import * as fs from "node:fs";
import * as path from "node:path";
const [data, out, per = "8"] = process.argv.slice(2);
if (!data || !out) { console.error("usage: node docs/probes/layout_subset.mjs DATA_TRAIN_DIR OUT_DIR [PER_SHAPE]"); process.exit(2); }
// The caption form as the data set builder writes it (src/mini/shapes.ts, src/mini/scenes.ts).
const { SHAPES } = await import(new URL("../../dist/src/mini/shapes.js", import.meta.url));
const { POSITION_PHRASE } = await import(new URL("../../dist/src/mini/scenes.js", import.meta.url));
const form = new RegExp(`^an? [a-z]+ (${SHAPES.join("|")}) (${Object.values(POSITION_PHRASE).join("|")}), on a white background$`);
const src = path.join(data, "1_scenes"), dst = path.join(out, "1_scenes");
fs.mkdirSync(dst, { recursive: true });
const count = {};
for (const f of fs.readdirSync(src).filter((f) => f.endsWith(".txt")).sort()) {
  const m = form.exec(fs.readFileSync(path.join(src, f), "utf8").trim());
  if (!m || (count[m[1]] ?? 0) >= Number(per)) continue;
  count[m[1]] = (count[m[1]] ?? 0) + 1;
  for (const name of [f, f.replace(/\.txt$/, ".png")]) fs.copyFileSync(path.join(src, name), path.join(dst, name));
}
console.log(`${dst}: ${JSON.stringify(count)}`);
