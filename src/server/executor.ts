// Local generation off the HTTP event loop: a worker thread (executor_thread.ts)
// owns the loaded models; this side sends it jobs, relays progress messages
// and turns cancellation into a flag the thread reads at every stage. If the
// thread dies, the jobs it had fail with ExecutorCrashed (the queue retries
// them) and a fresh thread is started for the next job.

import { Worker } from "node:worker_threads";
import type { ModelSpec } from "./config.js";
import type { ModerationConfig } from "../moderation/config.js";
import type { ProgressInfo } from "./events.js";
import type { ExecJob, ExecOutput } from "./generate_job.js";

export interface ExecutorData {
  models: ModelSpec[];
  storeRoot: string;
  threads?: number;
  maxPixels: number;
  loraDir?: string;
  /** Invisible watermark on outputs (default on). */
  watermark?: boolean;
  /** Prompt and image checks; the thread loads the classifier on first use. */
  moderation?: ModerationConfig;
  /** Longest prompt_upsampling rewrite (default 512). */
  upsampleTokens?: number;
}

export type ToThread = { type: "run"; seq: number; job: ExecJob; cancel: SharedArrayBuffer };
export type FromThread =
  | { type: "progress"; seq: number; progress: ProgressInfo }
  | { type: "done"; seq: number; output: ExecOutput }
  | { type: "failed"; seq: number; kind: "invalid" | "cancelled" | "internal" | "request_moderated" | "content_moderated"; message: string };

/** A run that failed: `kind` says whether the request was at fault, it was cancelled, or something broke. */
export class ExecError extends Error {
  constructor(readonly kind: "invalid" | "cancelled" | "internal" | "crashed" | "request_moderated" | "content_moderated", message: string) {
    super(message);
    this.name = "ExecError";
  }
}

interface Pending {
  resolve: (o: ExecOutput) => void;
  reject: (e: Error) => void;
  onProgress: (p: ProgressInfo) => void;
}

export class Executor {
  private worker: Worker | null = null;
  private pending = new Map<number, Pending>();
  private seq = 0;
  private closed = false;

  constructor(private data: ExecutorData) {}

  private thread(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL("./executor_thread.js", import.meta.url), { workerData: this.data });
    w.on("message", (m: FromThread) => this.onMessage(m));
    w.on("error", (e) => this.crashed(w, e.message));
    w.on("exit", (code) => this.crashed(w, `the generation thread exited (code ${code})`));
    this.worker = w;
    return w;
  }

  private onMessage(m: FromThread): void {
    const p = this.pending.get(m.seq);
    if (!p) return;
    if (m.type === "progress") return p.onProgress(m.progress);
    this.pending.delete(m.seq);
    if (m.type === "done") p.resolve({ ...m.output, images: m.output.images.map((i) => ({ ext: i.ext, bytes: Buffer.from(i.bytes) })) });
    else p.reject(new ExecError(m.kind, m.message));
  }

  private crashed(w: Worker, why: string): void {
    if (this.worker !== w) return;
    this.worker = null;
    for (const p of this.pending.values()) p.reject(new ExecError("crashed", why));
    this.pending.clear();
  }

  /** Run a job; aborting `signal` stops it at its next check (input decode, resize, stage, step or encode). */
  run(job: ExecJob, opts: { signal?: AbortSignal; onProgress?: (p: ProgressInfo) => void } = {}): Promise<ExecOutput> {
    if (this.closed) return Promise.reject(new ExecError("crashed", "the executor is closed"));
    const cancel = new SharedArrayBuffer(4);
    const flag = new Int32Array(cancel);
    const seq = ++this.seq;
    return new Promise<ExecOutput>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, onProgress: opts.onProgress ?? (() => {}) });
      if (opts.signal?.aborted) Atomics.store(flag, 0, 1);
      opts.signal?.addEventListener("abort", () => Atomics.store(flag, 0, 1), { once: true });
      this.thread().postMessage({ type: "run", seq, job, cancel } satisfies ToThread);
    });
  }

  /**
   * Give up on a thread still busy in a job that would not stop (shutdown
   * past its deadline): it no longer keeps the process alive, and the process
   * exit ends it.
   */
  abandon(): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new ExecError("crashed", "the executor was abandoned at shutdown"));
    this.pending.clear();
    this.worker?.unref();
    this.worker = null;
  }

  /**
   * Stop the thread. Call it when no job runs: terminating a thread inside
   * ONNX Runtime's session.run aborts the whole process (the queue first
   * cancels running jobs, which stop at their next check).
   */
  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    for (const p of this.pending.values()) p.reject(new ExecError("crashed", "the executor is closing"));
    this.pending.clear();
    if (w) await w.terminate();
  }
}
