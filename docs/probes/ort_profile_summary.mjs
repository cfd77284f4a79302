// Sums an ONNX Runtime profile (from docs/probes/ort_profile_train.mjs) by op type: time per run,
// calls per run and time per call. Not part of the package or the tests.
// Usage: node docs/probes/ort_profile_summary.mjs PROFILE.json
import * as fs from "node:fs";

const events = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
const kernels = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
const byOp = new Map();
let total = 0;
for (const e of kernels) {
  const t = byOp.get(e.args.op_name) ?? { us: 0, calls: 0 };
  t.us += e.dur; t.calls++; total += e.dur;
  byOp.set(e.args.op_name, t);
}
const runUs = runs.reduce((a, e) => a + e.dur, 0);
console.log(`model_run: ${runs.length} runs, ${(runUs / runs.length / 1000).toFixed(1)} ms each; ${(kernels.length / runs.length).toFixed(0)} kernel calls a run`);
for (const [op, t] of [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, 18)) {
  console.log(`${op.padEnd(30)} ${(100 * t.us / total).toFixed(1).padStart(5)}%  ${(t.calls / runs.length).toFixed(0).padStart(5)} calls a run, ${(t.us / t.calls).toFixed(0)} µs each`);
}
