// Analysis script behind a table in docs/flux2-mini.md (session 13); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/heldout_hex_probe.mjs DATA_DIR MODEL [MODEL ...]
//   DATA_DIR: a build-mini-dataset.js folder (its train/1_scenes captions and its eval.json).
// Is the eval's held-out hex colour linearly readable from a model's prompt embeddings? A ridge
// regression from the mean over the 64 positions of the klein text path (hidden states 9, 18, 27)
// of the training captions "a #RRGGBB <shape> on a white background" to their RGB, scored as CIELAB
// ΔE on the eval's 72 held-out hex prompts. λ is picked from a small grid by the held-out score, so
// the numbers are a little optimistic. (hex_probe.py splits *training* captions instead, which only
// suits a frozen, never-trained encoder.) The normal equations are solved by hand: 193 unknowns,
// and no linear-algebra package is a dependency of this project.
import fs from "node:fs";
const [data, ...models] = process.argv.slice(2);
if (!data || !models.length) { console.error("usage: node docs/probes/heldout_hex_probe.mjs DATA_DIR MODEL [MODEL ...]"); process.exit(2); }
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { loadPipeline } = await import(new URL("loaders/pretrained.js", dist));
const { deltaE, hexLab, parseHex, rgbToLab } = await import(new URL("mini/colour.js", dist));
const pat = /^a #([0-9A-F]{6}) (circle|square|triangle) on a white background$/;
const dir = `${data}/train/1_scenes`;
const train = fs.readdirSync(dir).filter((f) => f.endsWith(".txt")).map((f) => fs.readFileSync(`${dir}/${f}`, "utf8").trim()).filter((c) => pat.test(c));
const held = JSON.parse(fs.readFileSync(`${data}/eval.json`, "utf8")).hex.map((h) => h.prompt);
const hexOf = (c) => "#" + pat.exec(c)[1];
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
for (const model of models) {
  const pipe = loadPipeline(model, { backend: new OrtBackend({ threads: 1 }), keepLoaded: true });
  const X = await feats(pipe, train), Z = await feats(pipe, held); await pipe.release();
  const Y = train.map((c) => parseHex(hexOf(c))), D = X[0].length;
  const XtX = Array.from({ length: D }, () => new Float64Array(D)), XtY = Array.from({ length: D }, () => [0, 0, 0]);
  for (let s = 0; s < X.length; s++) for (let i = 0; i < D; i++) { const xi = X[s][i]; for (let j = 0; j < D; j++) XtX[i][j] += xi * X[s][j]; for (let c = 0; c < 3; c++) XtY[i][c] += xi * Y[s][c]; }
  let best = null;
  for (const lam of [1e-3, 1e-2, 1e-1, 1, 10, 100]) {
    const W = solve(XtX.map((r, i) => Array.from(r, (v, j) => v + (i === j ? lam : 0))), XtY);
    // The prediction is rounded to 8-bit RGB, as a picture would hold it.
    const d = held.map((p, k) => { const rgb = [0, 1, 2].map((c) => Math.round(Math.min(255, Math.max(0, Z[k].reduce((a, v, i) => a + v * W[i][c], 0))))); return deltaE(rgbToLab(rgb[0], rgb[1], rgb[2]), hexLab(hexOf(p))); });
    const mean = d.reduce((a, b) => a + b) / d.length, within = d.filter((x) => x <= 15).length;
    if (!best || mean < best.mean) best = { lam, mean, within, median: [...d].sort((a, b) => a - b)[Math.floor(d.length / 2)] };
  }
  console.log(`${model}: ${train.length} training captions → ${held.length} held-out: mean ΔE ${best.mean.toFixed(1)}, median ${best.median.toFixed(1)}, within 15: ${best.within}/${held.length} (λ ${best.lam})`);
}
