// Usage (after npm run build): node docs/probes/train_layout.mjs MODEL_DIR DATA_DIR [PER_SHAPE] [STRENGTHS] [GUIDANCE]
// Layout adherence on *training* captions: for each shape, up to PER_SHAPE (default 8) captions of
// the eval's form "a COLOUR SHAPE POSITION, on a white background" taken from DATA_DIR/1_scenes, the
// training picture itself and the model's picture (seed 0) scored with flux2 eval's layoutAdherence.
// Tells apart "the transformer cannot draw the shape" from "it cannot carry it to held-out pairs".
// STRENGTHS (e.g. 0.5,0.7,0.9) also starts img2img from each training picture at those strengths
// and scores the result: the noise level from which the model still keeps the shape it is shown.
// GUIDANCE (default: the model's) is the CFG scale of every picture; 1 turns CFG off, for a model
// trained without caption dropout (session 17's overfitting runs).
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
const [model, data, per = "8", strengthList = "", guidanceArg = ""] = process.argv.slice(2);
const guidance = guidanceArg ? { guidance: Number(guidanceArg) } : {};
const strengths = strengthList ? strengthList.split(",").map(Number) : [];
if (!model || !data) { console.error("usage: node docs/probes/train_layout.mjs MODEL_DIR DATA_DIR [PER_SHAPE]"); process.exit(2); }
const lib = await import("../../dist/src/index.js");
const { layoutAdherence } = await import("../../dist/src/eval/metrics.js");
// The caption form as the data set builder writes it (src/mini/shapes.ts, src/mini/scenes.ts).
const { SHAPES } = await import(new URL("../../dist/src/mini/shapes.js", import.meta.url));
const { POSITION_PHRASE } = await import(new URL("../../dist/src/mini/scenes.js", import.meta.url));
const form = new RegExp(`^an? [a-z]+ (${SHAPES.join("|")}) (${Object.values(POSITION_PHRASE).join("|")}), on a white background$`);
const place = Object.fromEntries(Object.entries(POSITION_PHRASE).map(([position, phrase]) => [phrase, position]));
const dir = path.join(data, "1_scenes");
const picked = new Map();
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".txt")).sort()) {
  const caption = fs.readFileSync(path.join(dir, f), "utf8").trim();
  const m = form.exec(caption);
  if (!m) continue;
  const list = picked.get(m[1]) ?? [];
  if (list.length < Number(per) && !list.some((c) => c.caption === caption)) list.push({ caption, shape: m[1], position: place[m[2]], png: path.join(dir, f.replace(/\.txt$/, ".png")) });
  picked.set(m[1], list);
}
const pipe = await lib.load(model, { threads: 2 });
const read = async (file) => { const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true }); return { rgb: new Uint8Array(data), width: info.width, height: info.height }; };
for (const [shape, list] of picked) {
  let truth = 0, drawn = 0, placed = 0; const got = {}; const kept = strengths.map(() => 0);
  for (const c of list) {
    const picture = await read(c.png);
    if (layoutAdherence(picture, c.shape, c.position).pass) truth++;
    for (const [k, strength] of strengths.entries()) {
      const im = (await lib.generate(pipe, { prompt: c.caption, seed: 0, ...guidance, init: { image: picture, strength } })).images[0];
      if (layoutAdherence({ rgb: im.rgb, width: im.width, height: im.height }, c.shape, c.position).pass) kept[k]++;
    }
    const r = await lib.generate(pipe, { prompt: c.caption, seed: 0, ...guidance });
    const im = r.images[0];
    const l = layoutAdherence({ rgb: im.rgb, width: im.width, height: im.height }, c.shape, c.position);
    if (l.pass) drawn++;
    if (l.position === c.position) placed++;
    got[l.shape] = (got[l.shape] ?? 0) + 1;
  }
  console.log(`${shape}: ${list.length} training captions; the training pictures pass ${truth}, the model's ${drawn} (in the named place ${placed}); drawn as ${JSON.stringify(got)}${strengths.map((st, k) => `; img2img ${st}: ${kept[k]}`).join("")}`);
}
await pipe.release();
