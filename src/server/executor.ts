// Local generation off the HTTP event loop: a worker thread (executor_thread.ts)
// owns the loaded models; this side sends it jobs, relays progress and stage
// messages and turns cancellation into a flag the thread reads at every stage.
// If the thread dies, the jobs it had fail with ExecutorCrashed (the queue
// retries them) and a fresh thread is started for the next job.
//
// A cancel the thread does not acknowledge within the grace period means it is
// inside one long native call (an ONNX Runtime session.run: a denoising step or
// a VAE pass at a large size can take minutes on a CPU). Such a thread is
// replaced: the cancelled job is answered at once, the next job gets a fresh
// thread (which loads the model again), and the stuck thread is told to retire:
// it sees the cancel flag when its call returns and exits by itself. It cannot
// be stopped sooner: Worker.terminate() only takes effect when the call returns,
// and then aborts the whole process (ONNX Runtime's binding throws a C++
// exception into a terminating isolate; seen with onnxruntime-node 1.30).

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

export interface ExecutorOptions {
  /** How long a cancelled job's thread may take to stop before it is replaced (default 2000 ms). */
  cancelGraceMs?: number;
  /** Where a replaced thread is reported. */
  log?: (line: string) => void;
}

/** The default grace period: far above the longest pause between two checks outside native calls (a few ms). */
export const CANCEL_GRACE_MS = 2000;

export type ToThread = { type: "run"; seq: number; job: ExecJob; cancel: SharedArrayBuffer } | { type: "retire" };
export type FromThread =
  | { type: "progress"; seq: number; progress: ProgressInfo }
  | { type: "stage"; seq: number; stage: string }
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
  onStage: (stage: string) => void;
  /** The thread that has the job. */
  worker: Worker;
  /** Its cancel flag (shared with the thread). */
  flag: Int32Array;
  /** The stage it last reported. */
  stage: string;
}

export class Executor {
  private worker: Worker | null = null;
  private pending = new Map<number, Pending>();
  private seq = 0;
  private closed = false;
  /** Replaced threads still inside their native call; each exits by itself when the call returns. */
  private retiring = new Map<Worker, Promise<void>>();
  private graceMs: number;

  constructor(private data: ExecutorData, private opts: ExecutorOptions = {}) {
    this.graceMs = opts.cancelGraceMs ?? CANCEL_GRACE_MS;
  }

  /** How many replaced threads are still running their last native call. */
  get stuckThreads(): number {
    return this.retiring.size;
  }

  /** Resolves when every replaced thread has ended (they end when their native call returns). */
  async retired(): Promise<void> {
    await Promise.all(this.retiring.values());
  }

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
    if (!p) return; // a replaced thread's late word on a job already answered
    if (m.type === "progress") return p.onProgress(m.progress);
    if (m.type === "stage") {
      p.stage = m.stage;
      return p.onStage(m.stage);
    }
    this.pending.delete(m.seq);
    if (m.type === "done") p.resolve({ ...m.output, images: m.output.images.map((i) => ({ ext: i.ext, bytes: Buffer.from(i.bytes) })) });
    else p.reject(new ExecError(m.kind, m.message));
  }

  private crashed(w: Worker, why: string): void {
    if (this.worker !== w) return;
    this.worker = null;
    for (const [seq, p] of this.pending) {
      if (p.worker !== w) continue;
      this.pending.delete(seq);
      p.reject(new ExecError("crashed", why));
    }
  }

  /** Run a job; aborting `signal` stops it at its next check (input decode, resize, stage, step or encode). */
  run(job: ExecJob, opts: { signal?: AbortSignal; onProgress?: (p: ProgressInfo) => void; onStage?: (stage: string) => void } = {}): Promise<ExecOutput> {
    if (this.closed) return Promise.reject(new ExecError("crashed", "the executor is closed"));
    const cancel = new SharedArrayBuffer(4);
    const flag = new Int32Array(cancel);
    const seq = ++this.seq;
    return new Promise<ExecOutput>((resolve, reject) => {
      const worker = this.thread();
      this.pending.set(seq, { resolve, reject, onProgress: opts.onProgress ?? (() => {}), onStage: opts.onStage ?? (() => {}), worker, flag, stage: "the wait in the queue" });
      const cancelNow = () => {
        Atomics.store(flag, 0, 1);
        // Not acknowledged within the grace period: the thread is inside one long native call.
        setTimeout(() => this.replaceStuck(seq), this.graceMs).unref();
      };
      if (opts.signal?.aborted) cancelNow();
      else opts.signal?.addEventListener("abort", cancelNow, { once: true });
      worker.postMessage({ type: "run", seq, job, cancel } satisfies ToThread);
    });
  }

  /**
   * Job `seq` was cancelled and its thread has not answered within the grace
   * period: answer the cancel now, retire the thread (it ends itself when its
   * native call returns) and let the next job start on a fresh one. Other jobs
   * waiting on that thread are cancelled there too and come back as "crashed",
   * so their queue runs them again.
   */
  private replaceStuck(seq: number): void {
    const p = this.pending.get(seq);
    if (!p) return; // it stopped in time
    const w = p.worker;
    if (this.worker === w) this.worker = null;
    for (const [s, q] of this.pending) {
      if (q.worker !== w) continue;
      this.pending.delete(s);
      Atomics.store(q.flag, 0, 1);
      if (s === seq) q.reject(new ExecError("cancelled", `cancelled during ${q.stage} (inside one long native call; its thread was replaced after ${this.graceMs / 1000} s)`));
      else q.reject(new ExecError("crashed", "the generation thread was replaced while this job waited for it"));
    }
    if (this.retiring.has(w)) return;
    this.retiring.set(w, new Promise<void>((resolve) => w.once("exit", () => {
      this.retiring.delete(w);
      this.opts.log?.(`executor: a replaced generation thread ended (it finished its native call during ${p.stage})`);
      resolve();
    })));
    w.unref(); // it no longer keeps the process alive
    w.postMessage({ type: "retire" } satisfies ToThread);
    this.opts.log?.(`executor: a cancelled job did not stop within ${this.graceMs / 1000} s (inside one native call during ${p.stage}): its thread was replaced; the next job loads the model again`);
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
   * cancels running jobs, which stop at their next check). Replaced threads
   * are left to end by themselves (see `retired`).
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
