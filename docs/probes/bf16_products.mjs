// The table "bf16 matrix products" in docs/training.md: one product at a time, through an ONNX
// Runtime session, as FusedMatMul (float32, MLAS) and as ai.flux2ts::BfMatMul (the native addon),
// the best of 8 interleaved rounds of 10 runs. Not part of the package or the tests.
// Usage (after npm run build, from the repository root): node docs/probes/bf16_products.mjs [THREADS]
import * as path from "node:path";
import { pathToFileURL } from "node:url";

const dist = (p) => pathToFileURL(path.resolve("dist/src", p)).href;
const { NativeOrtBackend } = await import(dist("backend/ort_native.js"));
const { Graph } = await import(dist("onnx/graph.js"));
const threads = Number(process.argv[2] ?? 2);
// [label, A shape, B shape, transA, transB]: flux2-mini's transformer at batch 16 × 128 tokens
// (width 192, MLP 576), and attention's batched products, which the trainer leaves float32.
const cases = [
  ["forward x·Wᵀ", [16, 128, 192], [576, 192], 0, 1],
  ["input gradient dY·W", [16, 128, 576], [576, 192], 0, 0],
  ["weight gradient dYᵀ·X", [2048, 576], [2048, 192], 1, 0],
  ["attention QKᵀ (batched)", [16, 6, 128, 32], [16, 6, 128, 32], 0, 1],
  ["attention PV (batched)", [16, 6, 128, 128], [16, 6, 128, 32], 0, 0],
];
const backend = new NativeOrtBackend({ threads });
const random = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
console.log(`threads ${threads}`);
for (const [label, sa, sb, transA, transB] of cases) {
  // Both sessions first, then their runs interleaved round by round, so that load on a shared
  // machine falls on both alike; the best round counts.
  const sessions = [];
  for (const bf16 of [false, true]) {
    const g = new Graph("product");
    const a = g.input("a", "F32", sa), b = g.input("b", "F32", sb);
    const y = bf16
      ? g.op("BfMatMul", [a, b], { transA, transB }, { domain: "ai.flux2ts" })[0]
      : g.op("FusedMatMul", [a, b], { transA, transB }, { domain: "com.microsoft" })[0];
    if (bf16) g.opsets["ai.flux2ts"] = 1;
    g.output(y, "y");
    sessions.push(await backend.createSession(g));
  }
  const feeds = { a: { data: random(sa.reduce((x, y) => x * y)), shape: sa }, b: { data: random(sb.reduce((x, y) => x * y)), shape: sb } };
  for (const s of sessions) for (let i = 0; i < 10; i++) await s.run(feeds);
  const ms = [Infinity, Infinity];
  for (let r = 0; r < 8; r++) {
    for (const [k, s] of sessions.entries()) {
      const t = performance.now();
      for (let i = 0; i < 10; i++) await s.run(feeds);
      ms[k] = Math.min(ms[k], (performance.now() - t) / 10);
    }
  }
  for (const s of sessions) await s.release();
  const M = (transA ? sa.at(-1) : sa.at(-2)) * sa.slice(0, -2).reduce((x, y) => x * y, 1), K = transA ? sa.at(-2) : sa.at(-1), N = transB ? sb.at(-2) : sb.at(-1);
  const gflop = (2 * M * K * N) / 1e9;
  console.log(`${label.padEnd(26)} float32 ${ms[0].toFixed(2)} ms (${(gflop / ms[0] * 1e3).toFixed(0)} GFLOP/s)  bf16 ${ms[1].toFixed(2)} ms (${(gflop / ms[1] * 1e3).toFixed(0)} GFLOP/s)  ${(ms[0] / ms[1]).toFixed(2)}x`);
}
