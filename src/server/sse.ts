// GET /v1/jobs/:id/events: server-sent events for one job.
//   event: status    {state, status}         now, then on every change
//   event: stage     {stage}                 as each stage of a local run begins
//                                            ("decoding input_image", "resizing reference 1", "denoising", …)
//   event: progress  {step, steps, fraction, preview}   after each denoising step
//   event: done      the get_result body      then the stream ends
// A comment line every 15 s keeps proxies from closing an idle stream.
//
// Bounded: a progress event (with its preview PNG) is serialized once into a
// buffer that every stream of the job writes, never once per stream; the open
// streams per job and per key (or per client address when keys are off) are
// capped (429 beyond); and a stream whose unsent bytes pass a bound (a reader
// that stopped reading) is closed rather than buffered without end.

import type { ServerResponse } from "node:http";
import { ApiError } from "./errors.js";
import type { JobEvent, JobEvents, ProgressInfo } from "./events.js";
import type { JobRow, JobStore } from "./store.js";
import { BFL_STATUS, resultView, TERMINAL } from "./views.js";

export interface StreamLimits {
  perJob: number;
  perKey: number;
  /** Unsent bytes a stream may hold from earlier events; past this, it is closed at the next event. */
  bufferBytes: number;
}

const HEARTBEAT_MS = 15_000;

export function frame(event: string, data: unknown): Buffer {
  return Buffer.from(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** Progress frames by progress record: the same record (one per step) gives the same buffer to every stream. */
const progressFrames = new WeakMap<ProgressInfo, Buffer>();

export function progressFrame(p: ProgressInfo): Buffer {
  let f = progressFrames.get(p);
  if (!f) {
    f = frame("progress", p);
    progressFrames.set(p, f);
  }
  return f;
}

export class EventStreams {
  /** Open streams and how to end each. */
  private open = new Map<ServerResponse, () => void>();
  private perJob = new Map<string, number>();
  private perOwner = new Map<string, number>();
  /** Streams closed because their reader fell behind. */
  dropped = 0;

  constructor(private store: JobStore, private events: JobEvents, private limits: StreamLimits) {}

  get count(): number {
    return this.open.size;
  }

  /** Refuse (429) a stream over the per-job or per-key cap; call before taking over the response. */
  admit(jobId: string, owner: string): void {
    if ((this.perJob.get(jobId) ?? 0) >= this.limits.perJob) {
      throw new ApiError(429, `This task already has ${this.limits.perJob} open event streams, the most allowed: close one, or poll GET /v1/get_result instead`, { "retry-after": "5" });
    }
    if ((this.perOwner.get(owner) ?? 0) >= this.limits.perKey) {
      throw new ApiError(429, `You have ${this.limits.perKey} open event streams, the most allowed per API key: close some, or poll GET /v1/get_result instead`, { "retry-after": "5" });
    }
  }

  private count_(map: Map<string, number>, k: string, d: number): void {
    const n = (map.get(k) ?? 0) + d;
    if (n > 0) map.set(k, n);
    else map.delete(k);
  }

  /** Serve the stream; `owner` is the API key id, or the client address when keys are off. */
  serve(res: ServerResponse, row: JobRow, base: string, owner: string): void {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    const id = row.id;
    let closed = false;
    let unsubscribe = () => {};
    const heartbeat = setInterval(() => write(Buffer.from(": ping\n\n")), HEARTBEAT_MS);
    const cleanup = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      this.open.delete(res);
      this.count_(this.perJob, id, -1);
      this.count_(this.perOwner, owner, -1);
    };
    const write = (buf: Buffer) => {
      if (closed) return;
      // Still holding more than the bound from earlier events: the reader is not
      // keeping up, so its stream ends instead of queueing every preview for it.
      if (res.writableLength > this.limits.bufferBytes) {
        this.dropped++;
        cleanup();
        res.destroy();
        return;
      }
      res.write(buf);
    };
    const finish = () => {
      const now = this.store.get(id);
      if (now) {
        // Without the events table the view's flux2.preview is null: the done frame stays small.
        write(frame("done", resultView(now, base)));
      }
      cleanup();
      res.end();
    };
    this.open.set(res, () => {
      cleanup();
      res.end();
    });
    this.count_(this.perJob, id, 1);
    this.count_(this.perOwner, owner, 1);
    res.on("close", cleanup);
    write(frame("status", { state: row.state, status: BFL_STATUS[row.state] }));
    if (TERMINAL.includes(row.state)) return finish();
    const latest = this.events.latest(id);
    if (latest && row.state === "running") write(progressFrame(latest));
    // No await between reading the row and subscribing, so no event can slip through.
    unsubscribe = this.events.subscribe(id, (e: JobEvent) => {
      if (e.type === "progress") write(progressFrame(e.data));
      else if (e.type === "stage") write(frame("stage", e.data));
      else if (e.type === "status") write(frame("status", { state: e.data.state, status: BFL_STATUS[e.data.state as keyof typeof BFL_STATUS] ?? "Pending" }));
      else finish();
    });
  }

  /** End every open stream (server shutdown). */
  closeAll(): void {
    for (const end of [...this.open.values()]) end();
  }
}
