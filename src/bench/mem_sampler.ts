// Peak anonymous and proportional memory of this process, sampled from a worker thread.
//
// The kernel keeps only VmHWM (peak RSS), and RSS counts a file page once per mapping: a
// training step maps its bf16 weights up to three times (the forward, the backward's and the
// recomputation's conversions read their own initializers over the same file bytes; see
// src/train/autodiff.ts), so VmHWM reports up to three times the weights that the page cache
// holds once. PSS (/proc/self/smaps_rollup) divides each page by its mappings, which is what the
// step takes from the machine. Neither has a kernel-kept peak, so a worker samples them: a
// worker, because onnxruntime-node runs a session on the main thread and blocks its timers.

import { Worker } from "node:worker_threads";

const WORKER = `
const { workerData } = require("node:worker_threads");
const fs = require("node:fs");
const peaks = new Float64Array(workerData.buffer);
const kb = (text, key) => Number((text.match(new RegExp("^" + key + ":\\\\s+(\\\\d+)", "m")) || [])[1] || 0) * 1024;
const sample = () => {
  try {
    const status = fs.readFileSync("/proc/self/status", "utf8");
    peaks[0] = Math.max(peaks[0], kb(status, "RssAnon"));
    const rollup = fs.readFileSync("/proc/self/smaps_rollup", "utf8");
    peaks[1] = Math.max(peaks[1], kb(rollup, "Pss"));
  } catch {
    // /proc not readable (not Linux): the peaks stay 0 and are not reported
  }
};
sample();
setInterval(sample, workerData.intervalMs);
`;

export interface MemoryPeaks {
  /** Largest RssAnon seen (activations, arenas, copies; not the mapped weights). */
  anonBytes: number;
  /** Largest PSS seen (each mapped file page counted once). */
  pssBytes: number;
}

export class MemorySampler {
  private peaks = new Float64Array(new SharedArrayBuffer(16));
  private worker: Worker;

  constructor(intervalMs = 250) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { buffer: this.peaks.buffer, intervalMs } });
    this.worker.unref();
  }

  /** Stop sampling; the peaks seen (0 where /proc could not be read). */
  async stop(): Promise<MemoryPeaks> {
    await this.worker.terminate();
    return { anonBytes: this.peaks[0], pssBytes: this.peaks[1] };
  }
}
