// The measures of flux2 eval, on the data set's own pictures (they must score ~100%) and on noise
// and wrong pictures (they must score ~0), so each measure can fail.
import { test } from "node:test";
import assert from "node:assert/strict";
import { drawHexCase, drawLayoutCase, evalPlan } from "../src/mini/eval_plan.js";
import { WHITE, hexLab, hueChroma, hueDifference, parseHex } from "../src/mini/colour.js";
import { SIZES } from "../src/mini/scenes.js";
import { renderScene, type ShapeKind } from "../src/mini/shapes.js";
import { emojiRgb, listEmoji } from "../src/mini/emoji.js";
import { paletteFraction, restyle, styleSplit } from "../src/mini/style.js";
import { hexAdherence, layoutAdherence, type Img } from "../src/eval/metrics.js";
import { rankOf, thumbnailFeature } from "../src/eval/retrieval.js";
import { Xoshiro128, randn } from "../src/util/random.js";

const S = 64;
const img = (rgb: Uint8Array): Img => ({ rgb, width: S, height: S });
const shapeImage = (shape: ShapeKind, hex: string, fx = 0.5, fy = 0.5, r: number = SIZES.large, bg = WHITE) =>
  img(renderScene(S, parseHex(bg), [{ kind: shape, cx: fx * S, cy: fy * S, r: r * S, colour: parseHex(hex) }]));

function noise(seed: number): Img {
  const rng = new Xoshiro128(seed);
  return img(Uint8Array.from({ length: S * S * 3 }, () => rng.nextU32() & 255));
}

const plan = evalPlan();

test("hex adherence: 100% on drawn held-out cases, 0 on noise, blank, wrong colour or coloured background", () => {
  assert.equal(plan.hex.length, 72);
  assert.equal(new Set(plan.hex.slice(0, 24).map((c) => c.hex)).size, 24);
  for (const c of plan.hex) {
    const r = hexAdherence(img(drawHexCase(c, S)), c.hex);
    assert.ok(r.pass, c.prompt);
    assert.equal(r.shape, c.shape, `${c.prompt}: the drawn shape is reported`);
  }
  for (let i = 0; i < 20; i++) assert.equal(hexAdherence(noise(i), "#2D5A8E").pass, false);
  assert.equal(hexAdherence(img(new Uint8Array(S * S * 3).fill(255)), "#2D5A8E").pass, false);
  // #2D5A8E (navy blue) drawn, #F39C12 (orange) asked.
  const wrong = hexAdherence(shapeImage("circle", "#2D5A8E"), "#F39C12");
  assert.equal(wrong.pass, false);
  assert.ok(wrong.deltaE! > 15);
  const onGrey = hexAdherence(shapeImage("circle", "#2D5A8E", 0.5, 0.5, SIZES.large, "#C0C0C0"), "#2D5A8E");
  assert.equal(onGrey.pass, false);
  assert.equal(onGrey.whiteBackground, false);
});

test("layout adherence: 100% on drawn held-out cases, 0 on noise, wrong shape or wrong place", () => {
  assert.equal(plan.layout.length, 30);
  for (const c of plan.layout) {
    for (const size of ["small", "medium", "large"] as const) {
      const r = layoutAdherence(img(drawLayoutCase(c, S, size)), c.shape, c.position);
      assert.ok(r.pass, `${c.prompt} (${size}): found ${r.shape} at ${r.position}`);
    }
  }
  for (let i = 0; i < 20; i++) assert.equal(layoutAdherence(noise(100 + i), "star", "top").pass, false);
  assert.equal(layoutAdherence(shapeImage("circle", "#FF0000", 0.5, 0.27), "star", "top").pass, false);
  assert.equal(layoutAdherence(shapeImage("star", "#FF0000", 0.5, 0.73), "star", "top").pass, false);
  assert.equal(layoutAdherence(shapeImage("ring", "#FF0000", 0.73, 0.5, SIZES.medium), "circle", "right").pass, false);
  assert.equal(layoutAdherence(shapeImage("triangle", "#FF0000", 0.27, 0.5, SIZES.small), "star", "left").pass, false);
});

/** What a generator's picture is like next to a drawing: a 3×3 box blur and Gaussian noise (σ in code values). */
function degrade(im: Img, sigma: number, seed: number): Img {
  const n = randn(seed, im.rgb.length), out = new Uint8Array(im.rgb.length);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0, k = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy < 0 || xx < 0 || yy >= S || xx >= S) continue;
            sum += im.rgb[(yy * S + xx) * 3 + c];
            k++;
          }
        }
        const i = (y * S + x) * 3 + c;
        out[i] = Math.max(0, Math.min(255, Math.round(sum / k + sigma * n[i])));
      }
    }
  }
  return img(out);
}

test("hex and layout measures still pass blurred, noisy drawings (a generator's pictures are never crisp)", () => {
  let hex = 0, layout = 0, total = 0;
  const missed: string[] = [];
  plan.hex.forEach((c, i) => { if (hexAdherence(degrade(img(drawHexCase(c, S)), 8, i), c.hex).pass) hex++; });
  plan.layout.forEach((c, i) => {
    for (const size of ["small", "medium", "large"] as const) {
      total++;
      if (layoutAdherence(degrade(img(drawLayoutCase(c, S, size)), 8, 1000 + i), c.shape, c.position).pass) layout++;
      else missed.push(`${size} ${c.shape}`);
    }
  });
  assert.equal(hex, plan.hex.length);
  // A small star (15 px across) blurred by 3 px loses its points and reads as a circle; nothing else may fail.
  assert.ok(layout >= 0.9 * total, `layout ${layout}/${total}`);
  assert.ok(missed.every((m) => m === "small star"), missed.join(", "));
});

test("emoji retrieval: the training image finds itself in the top 5; noise finds nothing", async () => {
  const all = listEmoji();
  const gallery = await Promise.all(all.map(async (e) => thumbnailFeature(img(await emojiRgb(e, S)))));
  assert.equal(plan.emoji.length, 100);
  let hits = 0;
  for (const c of plan.emoji) {
    const t = all.findIndex((e) => e.code === c.code);
    if (rankOf(gallery[t], gallery, t) < 5) hits++;
  }
  assert.ok(hits >= 98, `${hits}/100`);
  let noiseHits = 0;
  for (const [i, c] of plan.emoji.slice(0, 20).entries()) {
    const t = all.findIndex((e) => e.code === c.code);
    if (rankOf(thumbnailFeature(noise(200 + i)), gallery, t) < 5) noiseHits++;
  }
  assert.ok(noiseHits <= 1, `noise retrieved the named emoji ${noiseHits} times in 20`);
});

test("style measure: ~1 on the style set, low on the same emoji unstyled, ~0 on noise", async () => {
  const { train, eval: held } = styleSplit();
  assert.equal(train.length, 25);
  assert.equal(held.length, 10);
  assert.ok(!held.some((e) => train.includes(e)));
  let styled = 0, plain = 0;
  for (const e of train) {
    const rgb = await emojiRgb(e, S);
    styled += paletteFraction(restyle(rgb)) / train.length;
    plain += paletteFraction(rgb) / train.length;
  }
  assert.ok(styled > 0.99, `styled ${styled}`);
  assert.ok(plain < 0.5, `unstyled ${plain}`);
  let n = 0;
  for (let i = 0; i < 10; i++) n += paletteFraction(noise(300 + i).rgb) / 10;
  assert.ok(n < 0.1, `noise ${n}`);
});

test("hue and chroma: CIELAB angles from 0 to 360, differences the short way round", () => {
  const grey = hueChroma(hexLab("#808080"));
  assert.ok(grey.chroma < 0.01, `grey has no chroma (${grey.chroma})`);
  const red = hueChroma(hexLab("#FF0000")), blue = hueChroma(hexLab("#0000FF")), dodger = hueChroma(hexLab("#1E90FF"));
  assert.ok(red.hue > 30 && red.hue < 50, `red's CIELAB hue is about 40 degrees (${red.hue})`);
  assert.ok(blue.hue > 295 && blue.hue < 315, `blue's is about 306 (${blue.hue})`);
  assert.ok(dodger.hue > 270 && dodger.hue < 290 && dodger.chroma > 15, `#1E90FF's is about 279 (${dodger.hue})`);
  assert.equal(hueDifference(350, 10), 20);
  assert.equal(hueDifference(10, 350), 20);
  assert.equal(hueDifference(0, 180), 180);
  assert.equal(hueDifference(-170, 170), 20, "angles outside 0-360 work too");
});
