// In-process job events for the server-sent-events endpoint: progress (with
// a small preview), state changes and completion. Local runs, provider polls
// and the Redis event stream all publish here.

import { EventEmitter } from "node:events";

export interface ProgressInfo {
  step: number;
  steps: number;
  fraction: number;
  /** A small PNG data URL of the current estimate. */
  preview?: string;
  /**
   * The stage that just began, on the event sent when it begins (step/steps/fraction are then 0, or
   * the last step for "decode"): "load" (the model's pipeline is being built), "encode" (prompt),
   * "references", "denoise", "decode". Step events carry no stage.
   */
  stage?: string;
}

export type JobEvent =
  | { type: "progress"; data: ProgressInfo }
  /** A stage of a local run begins ("decoding input_image", "resizing reference 1", "denoising", …). */
  | { type: "stage"; data: { stage: string } }
  | { type: "status"; data: { state: string } }
  | { type: "done"; data: { state: string } };

export class JobEvents {
  private emitter = new EventEmitter();
  /** Latest progress of running jobs (ephemeral: not worth a database write per step). */
  private progress = new Map<string, ProgressInfo>();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(jobId: string, e: JobEvent): void {
    if (e.type === "progress") this.progress.set(jobId, e.data);
    if (e.type === "done") this.progress.delete(jobId);
    this.emitter.emit(jobId, e);
  }

  latest(jobId: string): ProgressInfo | undefined {
    return this.progress.get(jobId);
  }

  subscribe(jobId: string, fn: (e: JobEvent) => void): () => void {
    this.emitter.on(jobId, fn);
    return () => this.emitter.off(jobId, fn);
  }
}
