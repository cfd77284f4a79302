// Analysis helper behind docs/training.md ("Data-parallel workers"); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/workers_speed.mjs MODEL_DIR DATA_DIR [vae|text|full ...]
// Times `flux2 train` on flux2-mini's three stages (the recipe's settings and batch sizes) three
// ways: one thread, two threads, and two workers of one thread each (the batch halved, two
// micro-batches a step, so the same images a step). The rate is taken from the arrival times of
// the progress lines between step 20 and step 80, so loading and the first steps do not count.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
const CLI = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;
const [model, data, ...only] = process.argv.slice(2);
if (!model || !data) { console.error("usage: node docs/probes/workers_speed.mjs MODEL_DIR DATA_DIR [vae|text|full ...]"); process.exit(2); }
const STEPS = 80, FROM = 20;
const modes = {
  vae: { args: ["--vae", "--kl-weight", "1e-6", "--chroma-weight", "10", "--lr", "1e-3"], batch: 8 },
  text: { args: ["--text-encoder", "--align-pool", "mean", "--lr", "1e-3", "--weight-decay", "0"], batch: 32 },
  full: { args: ["--full", "--lr", "1e-3", "--caption-dropout", "0.1"], batch: 16 },
};
const configs = [["1 thread", 1, 1], ["2 threads", 2, 1], ["2 workers × 1 thread", 2, 2]];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "workers-speed-"));
for (const [mode, m] of Object.entries(modes)) {
  if (only.length && !only.includes(mode)) continue;
  for (const [label, threads, workers] of configs) {
    const out = path.join(tmp, `${mode}-${threads}-${workers}`);
    const args = [CLI, "train", "--model", model, "--data", data, "--out", out, ...m.args, "--resolution", "64", "--max-sequence-length", "64",
      "--steps", String(STEPS), "--batch-size", String(m.batch / workers), "--grad-accum", String(workers), "--workers", String(workers), "--threads", String(threads), "--save-every", "0"];
    const t = {};
    await new Promise((resolve, reject) => {
      const p = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
      let buf = "";
      p.stderr.on("data", (d) => {
        buf += d;
        for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) {
          const s = /^step (\d+)\//.exec(buf.slice(0, i));
          if (s) t[Number(s[1])] = performance.now();
        }
      });
      p.on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`${mode}, ${label}: flux2 train exited with ${c}`))));
    });
    const rate = (STEPS - FROM) / ((t[STEPS] - t[FROM]) / 1000);
    console.log(`${mode.padEnd(5)} ${label.padEnd(22)} batch ${m.batch / workers} × ${workers}: ${rate.toFixed(2)} steps/s`);
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
