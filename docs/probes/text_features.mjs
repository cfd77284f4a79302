// Analysis script behind a table in docs/flux2-mini.md (session 8); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/text_features.mjs MODEL [MODEL ...]
// How a model's frozen text encoder separates prompts (the klein text path: 128 tokens, hidden states
// 9, 18, 27): relative L2 change of the whole embedding for small prompt changes, the mean cosine
// between the first 16 token positions, and the mean cosine between a token's layer-9 and layer-27 state.
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { loadPipeline } = await import(new URL("loaders/pretrained.js", dist));
for (const dir of process.argv.slice(2)) {
  const pipe = loadPipeline(dir, { backend: new OrtBackend({ threads: 1 }), keepLoaded: true });
  const prompts = ["a #2D5A8E circle on a white background", "a #2D5A8F circle on a white background", "a #2D5A8E square on a white background", "a red apple", "a green apple"];
  const L = 128, e = await pipe.encodePrompts(prompts, L, [9, 18, 27]);
  await pipe.release();
  const D = e.shape[2], H = D / 3, seq = (b) => e.data.subarray(b * L * D, (b + 1) * L * D), row = (t) => e.data.subarray(t * D, (t + 1) * D);
  const rel = (a, b) => { let d = 0, n = 0; for (let i = 0; i < a.length; i++) { d += (a[i] - b[i]) ** 2; n += a[i] ** 2; } return Math.sqrt(d / n); };
  const cos = (a, b) => { let s = 0, x = 0, y = 0; for (let i = 0; i < a.length; i++) { s += a[i] * b[i]; x += a[i] ** 2; y += b[i] ** 2; } return s / Math.sqrt(x * y); };
  let positions = 0, k = 0, layers = 0;
  for (let t = 0; t < 16; t++) for (let u = t + 1; u < 16; u++, k++) positions += cos(row(t), row(u));
  for (let t = 0; t < 24; t++) layers += cos(row(t).subarray(0, H), row(t).subarray(2 * H, 3 * H));
  console.log(`${dir}: one hex digit ${rel(seq(0), seq(1)).toFixed(3)}, circle/square ${rel(seq(0), seq(2)).toFixed(3)}, red/green apple ${rel(seq(3), seq(4)).toFixed(3)}, mean cosine between positions ${(positions / k).toFixed(3)}, layer 9 vs 27 ${(layers / 24).toFixed(3)}`);
}
