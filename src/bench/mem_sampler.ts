// Peak anonymous and proportional memory of this process, sampled from a worker thread.
//
// The kernel keeps only VmHWM (peak RSS), and RSS counts a file page once per mapping: a
// training step maps its bf16 weights up to three times (the forward, the backward's and the
// recomputation's conversions read their own initializers over the same file bytes; see
// src/train/autodiff.ts), so VmHWM reports up to three times the weights that the page cache
// holds once. PSS (/proc/self/smaps_rollup) divides each page by its mappings, which is what the
// step takes from the machine. Neither has a kernel-kept peak, so a worker samples them: a
// worker, because onnxruntime-node runs a session on the main thread and blocks its timers.
//
// Reading smaps_rollup walks every page table entry of the process under its mmap lock: at
// klein-4B's 1024² LoRA step (12 GB anonymous + 8 GB mapped weights) one read costs about 0.2 s
// of kernel time and holds up the step's page faults meanwhile. Read every 250 ms, it took about a
// third of the step's CPU samples (perf: smaps_pte_range, smaps_account, vm_normal_page), and the
// step's stage spent 30% of its CPU time in the kernel against 5% for a small slice, slowing the
// measurement it was there to watch. So PSS is read at most 1% of the time (the next read waits
// 100 × the last read's duration), and sooner only when RssAnon (cheap: /proc/self/status) has
// grown by 256 MiB since the last PSS read, which is when a new PSS peak can appear.

import { Worker } from "node:worker_threads";

const WORKER = `
const { workerData } = require("node:worker_threads");
const fs = require("node:fs");
const peaks = new Float64Array(workerData.buffer);
const kb = (text, key) => Number((text.match(new RegExp("^" + key + ":\\\\s+(\\\\d+)", "m")) || [])[1] || 0) * 1024;
let nextPss = 0, anonAtPss = -Infinity;
const sample = () => {
  try {
    const status = fs.readFileSync("/proc/self/status", "utf8");
    const anon = kb(status, "RssAnon");
    peaks[0] = Math.max(peaks[0], anon);
    const now = performance.now();
    if (now < nextPss && anon < anonAtPss + 256 * 2 ** 20) return;
    const rollup = fs.readFileSync("/proc/self/smaps_rollup", "utf8");
    const took = performance.now() - now;
    peaks[1] = Math.max(peaks[1], kb(rollup, "Pss"));
    peaks[2] += 1;
    peaks[3] += took;
    nextPss = now + 100 * took;
    anonAtPss = anon;
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
  /** How often smaps_rollup was read, and the seconds those reads took (the sampler's own cost). */
  pssReads: number;
  pssReadSeconds: number;
}

export class MemorySampler {
  /** [peak RssAnon, peak PSS, smaps_rollup reads, milliseconds spent in them] */
  private peaks = new Float64Array(new SharedArrayBuffer(32));
  private worker: Worker;

  constructor(intervalMs = 250) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { buffer: this.peaks.buffer, intervalMs } });
    this.worker.unref();
  }

  /** Stop sampling; the peaks seen (0 where /proc could not be read). */
  async stop(): Promise<MemoryPeaks> {
    await this.worker.terminate();
    return { anonBytes: this.peaks[0], pssBytes: this.peaks[1], pssReads: this.peaks[2], pssReadSeconds: this.peaks[3] / 1000 };
  }
}
