// Data-parallel training on one machine (`flux2 train --workers N`): the micro-batches of an
// optimizer step (--grad-accum) are computed at the same time, one per worker.
//
// Why: a small model's operations are too narrow for ONNX Runtime to spread over threads —
// flux2-mini's text encoder (width 64) trains no faster on two threads than on one, and its VAE's
// small convolutions run slower on two (docs/flux2-mini.md). Whole micro-batches side by side,
// each on its own thread with its own one-thread session, keep every core busy instead.
//
// How: the main thread keeps its own task (the optimizer, checkpoints, samples and exports see
// nothing new) and computes micro-batch j itself when j mod N is 0; worker thread w (1 … N−1)
// builds the same task from the same settings (src/train/setup.ts) and computes the micro-batches
// with j mod N = w. Before the first micro-batch of a step the main thread copies the trainable
// tensors into one SharedArrayBuffer; each worker copies them into its own before computing.
// The loop (src/train/loop.ts) sums the gradients in micro-batch order, and a micro-batch is a
// pure function of (seed, step, micro-batch, weights), so a run with N workers computes what the
// same run with one does — bit for bit when every session runs one thread.

import { Worker } from "node:worker_threads";
import type { MicroBatchResult, TrainTask } from "./loop.js";
import type { RowSparseGrad } from "./row_sparse.js";
import type { TaskSettings } from "./setup.js";
import type { MatmulPrecision } from "../backend/backend.js";

/** Where each trainable tensor lives in the shared buffer (float32 offsets). */
export type ParamLayout = [name: string, offset: number, length: number][];

export function paramLayout(params: Map<string, Float32Array>): ParamLayout {
  const out: ParamLayout = [];
  let offset = 0;
  for (const [name, p] of params) {
    out.push([name, offset, p.length]);
    offset += p.length;
  }
  return out;
}

export interface WorkerInit {
  settings: TaskSettings;
  device?: string;
  threads: number;
  /** the training step's matrix products (--matmul) */
  matmul?: MatmulPrecision;
  shared: SharedArrayBuffer;
  layout: ParamLayout;
}

type Reply =
  | { type: "ready" }
  | { type: "result"; id: number; loss: number; grads: [string, Float32Array][]; sparse?: [string, RowSparseGrad][] }
  | { type: "error"; id: number; message: string };

interface Pending {
  resolve: (r: MicroBatchResult) => void;
  reject: (e: Error) => void;
}

/** One worker thread with its own copy of the task. */
class TaskWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failure: Error | null = null;
  readonly ready: Promise<void>;

  constructor(init: WorkerInit, readonly index: number) {
    this.worker = new Worker(new URL("./parallel_worker.js", import.meta.url), { workerData: init });
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.on("message", (m: Reply) => {
        if (m.type === "ready") return resolve();
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.type === "error") p.reject(new Error(`training worker ${this.index}: ${m.message}`));
        else p.resolve({ loss: m.loss, grads: new Map(m.grads), ...(m.sparse ? { sparse: new Map(m.sparse) } : {}) });
      });
      const fail = (e: Error) => {
        this.failure = e;
        reject(e);
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      };
      this.worker.on("error", (e) => fail(new Error(`training worker ${this.index} failed: ${e.message}`)));
      this.worker.on("exit", (code) => {
        if (code !== 0) fail(new Error(`training worker ${this.index} exited with code ${code} (out of memory? lower --workers or --batch-size)`));
      });
    });
    // A worker that fails to start rejects `ready`; the caller awaits it, so the rejection is handled there.
    this.ready.catch(() => {});
  }

  run(step: number, micro: number): Promise<MicroBatchResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ type: "run", id, step, micro });
    });
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}

export class ParallelTask implements TrainTask {
  private readonly shared: Float32Array;
  private readonly layout: ParamLayout;
  private syncedStep = -1;
  private workers: TaskWorker[] = [];

  private constructor(private readonly local: TrainTask, sab: SharedArrayBuffer, layout: ParamLayout) {
    this.shared = new Float32Array(sab);
    this.layout = layout;
  }

  /**
   * Starts `workers − 1` threads beside the main thread's `local` task, each building the task of
   * `settings` with a `threads`-thread session, and waits until all are ready (each reads the data
   * and builds its graph, as the main thread did).
   */
  static async start(local: TrainTask, settings: TaskSettings, workers: number, o: { threads: number; device?: string; matmul?: MatmulPrecision }): Promise<ParallelTask> {
    if (!(Number.isInteger(workers) && workers >= 2)) throw new Error(`a parallel task needs at least 2 workers, got ${workers}`);
    const layout = paramLayout(local.params);
    const total = layout.reduce((n, [, , len]) => n + len, 0);
    const t = new ParallelTask(local, new SharedArrayBuffer(total * 4), layout);
    const init: Omit<WorkerInit, "shared"> = { settings, device: o.device, threads: o.threads, matmul: o.matmul, layout };
    t.workers = Array.from({ length: workers - 1 }, (_, i) => new TaskWorker({ ...init, shared: t.shared.buffer as SharedArrayBuffer }, i + 1));
    try {
      await Promise.all(t.workers.map((w) => w.ready));
    } catch (e) {
      await t.release();
      throw e;
    }
    return t;
  }

  get params(): Map<string, Float32Array> {
    return this.local.params;
  }

  /** How many micro-batches run at once: the main thread and its workers. */
  get width(): number {
    return this.workers.length + 1;
  }

  microBatch(step: number, micro: number): Promise<MicroBatchResult> {
    if (step !== this.syncedStep) {
      // The optimizer has updated the tensors since the last step: publish them once for every worker.
      for (const [name, offset] of this.layout) this.shared.set(this.local.params.get(name)!, offset);
      this.syncedStep = step;
    }
    const w = micro % this.width;
    return w === 0 ? this.local.microBatch(step, micro) : this.workers[w - 1].run(step, micro);
  }

  async release(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
    this.workers = [];
  }
}
