// Analysis script behind tables in docs/flux2-mini.md (sessions 13 and 14); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/heldout_probe.mjs DATA_DIR MODEL [MODEL ...]
//   DATA_DIR: a build-mini-dataset.js folder (its train/1_scenes captions and its eval.json).
// What can be read linearly from a model's prompt embeddings about the eval's held-out prompts? The
// features are the mean over the 64 positions of the klein text path (hidden states 9, 18, 27), the
// sequence the transformer attends to.
//   hex:    ridge regression from the training captions "a #RRGGBB <shape> on a white background" to
//           their RGB, scored as CIELAB ΔE on the eval's 72 held-out hex prompts; lists the held-out
//           codes read more than ΔE 15 off, with how many of their three shapes (session 23).
//   layout: ridge regression from the training captions "a [size] <colour> <shape> <place>, on a
//           <colour> background" to one-hot shape and one-hot place, scored as the arg-max's accuracy
//           on the eval's 30 held-out (colour, shape, place) prompts.
// λ is picked from a small grid by the held-out score, so the numbers are a little optimistic. (hex_probe.py
// splits *training* captions instead, which only suits a frozen, never-trained encoder.) The normal
// equations are solved by hand: 193 unknowns, and no linear-algebra package is a dependency of this project.
import fs from "node:fs";
const [data, ...models] = process.argv.slice(2);
if (!data || !models.length) { console.error("usage: node docs/probes/heldout_probe.mjs DATA_DIR MODEL [MODEL ...]"); process.exit(2); }
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { loadPipeline } = await import(new URL("loaders/pretrained.js", dist));
const { deltaE, hexLab, parseHex, rgbToLab } = await import(new URL("mini/colour.js", dist));

const dir = `${data}/train/1_scenes`;
const captions = fs.readdirSync(dir).filter((f) => f.endsWith(".txt")).map((f) => fs.readFileSync(`${dir}/${f}`, "utf8").trim());
const evalSet = JSON.parse(fs.readFileSync(`${data}/eval.json`, "utf8"));

const hexPattern = /^a #([0-9A-F]{6}) (circle|square|triangle) on a white background$/;
const hexTrain = captions.filter((c) => hexPattern.test(c));
const hexHeld = evalSet.hex.map((h) => h.prompt);
const hexOf = (c) => "#" + hexPattern.exec(c)[1];

const SHAPES = ["circle", "square", "triangle", "star", "ring"];
const PLACES = { "on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom", "in the centre": "centre" };
const layoutPattern = new RegExp(`^an? (?:small |medium |large )?\\S+ (${SHAPES.join("|")}) (${Object.keys(PLACES).join("|")}), on an? \\S+ background$`);
const layoutTrain = captions.filter((c) => layoutPattern.test(c));
const layoutHeld = evalSet.layout;
const oneHot = (shape, place) => [...SHAPES.map((s) => (s === shape ? 1 : 0)), ...Object.values(PLACES).map((p) => (p === place ? 1 : 0))];
const argmax = (v) => v.indexOf(Math.max(...v));

async function feats(pipe, prompts) {
  const out = [];
  for (let i = 0; i < prompts.length; i += 64) {
    const e = await pipe.encodePrompts(prompts.slice(i, i + 64), 64, [9, 18, 27]);
    const [B, L, D] = e.shape;
    for (let b = 0; b < B; b++) { const m = new Float64Array(D + 1); m[D] = 1; for (let t = 0; t < L; t++) for (let d = 0; d < D; d++) m[d] += e.data[(b * L + t) * D + d] / L; out.push(m); }
  }
  return out;
}
function solve(A, y) { // Gaussian elimination, A n×n symmetric positive definite
  const n = A.length; const M = A.map((r, i) => [...r, ...y[i]]);
  for (let i = 0; i < n; i++) { let p = i; for (let r = i + 1; r < n; r++) if (Math.abs(M[r][i]) > Math.abs(M[p][i])) p = r; [M[i], M[p]] = [M[p], M[i]];
    for (let r = 0; r < n; r++) if (r !== i) { const f = M[r][i] / M[i][i]; if (f) for (let c = i; c < M[i].length; c++) M[r][c] -= f * M[i][c]; } }
  return M.map((r, i) => r.slice(n).map((v) => v / M[i][i]));
}
/** Ridge fits of X → Y for each λ of the grid; score(predict) → { key, ... } is higher-better on `key`. */
function bestRidge(X, Y, score) {
  const D = X[0].length, K = Y[0].length;
  const XtX = Array.from({ length: D }, () => new Float64Array(D)), XtY = Array.from({ length: D }, () => new Array(K).fill(0));
  for (let s = 0; s < X.length; s++) for (let i = 0; i < D; i++) { const xi = X[s][i]; for (let j = 0; j < D; j++) XtX[i][j] += xi * X[s][j]; for (let c = 0; c < K; c++) XtY[i][c] += xi * Y[s][c]; }
  let best = null;
  for (const lam of [1e-3, 1e-2, 1e-1, 1, 10, 100]) {
    const W = solve(XtX.map((r, i) => Array.from(r, (v, j) => v + (i === j ? lam : 0))), XtY);
    const r = { lam, ...score((z) => W[0].map((_, c) => z.reduce((a, v, i) => a + v * W[i][c], 0))) };
    if (!best || r.key > best.key) best = r;
  }
  return best;
}

for (const model of models) {
  const pipe = loadPipeline(model, { backend: new OrtBackend({ threads: 1 }), keepLoaded: true });
  const [Xh, Zh, Xl, Zl] = [await feats(pipe, hexTrain), await feats(pipe, hexHeld), await feats(pipe, layoutTrain), await feats(pipe, layoutHeld.map((l) => l.prompt))];
  await pipe.release();
  const hex = bestRidge(Xh, hexTrain.map((c) => parseHex(hexOf(c))), (predict) => {
    // The prediction is rounded to 8-bit RGB, as a picture would hold it.
    const d = hexHeld.map((p, k) => { const rgb = predict(Zh[k]).map((v) => Math.round(Math.min(255, Math.max(0, v)))); return deltaE(rgbToLab(rgb[0], rgb[1], rgb[2]), hexLab(hexOf(p))); });
    const mean = d.reduce((a, b) => a + b) / d.length;
    const misses = {};
    hexHeld.forEach((p, k) => { if (d[k] > 15) misses[hexOf(p)] = (misses[hexOf(p)] ?? 0) + 1; });
    return { key: -mean, mean, within: d.filter((x) => x <= 15).length, median: [...d].sort((a, b) => a - b)[Math.floor(d.length / 2)], misses };
  });
  const layout = bestRidge(Xl, layoutTrain.map((c) => { const m = layoutPattern.exec(c); return oneHot(m[1], PLACES[m[2]]); }), (predict) => {
    let shape = 0, place = 0, both = 0;
    layoutHeld.forEach((l, k) => {
      const p = predict(Zl[k]);
      const s = SHAPES[argmax(p.slice(0, 5))] === l.shape, q = Object.values(PLACES)[argmax(p.slice(5))] === l.position;
      shape += s; place += q; both += s && q;
    });
    return { key: both + (shape + place) / 100, shape, place, both };
  });
  console.log(`${model}:`);
  console.log(`  hex: ${hexTrain.length} training captions → ${hexHeld.length} held-out: mean ΔE ${hex.mean.toFixed(1)}, median ${hex.median.toFixed(1)}, within 15: ${hex.within}/${hexHeld.length} (λ ${hex.lam})`);
  console.log(`  hex misses (code × shapes): ${Object.entries(hex.misses).map(([h, n]) => `${h}×${n}`).join(" ") || "none"}`);
  console.log(`  layout: ${layoutTrain.length} training captions → ${layoutHeld.length} held-out: shape ${layout.shape}/${layoutHeld.length}, place ${layout.place}/${layoutHeld.length}, both ${layout.both}/${layoutHeld.length} (λ ${layout.lam})`);
}
