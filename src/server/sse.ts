// GET /v1/jobs/:id/events: server-sent events for one job.
//   event: status    {state, status}         now, then on every change
//   event: progress  {step, steps, fraction, preview}   after each denoising step
//   event: done      the get_result body      then the stream ends
// A comment line every 15 s keeps proxies from closing an idle stream.

import type { ServerResponse } from "node:http";
import type { JobEvents } from "./events.js";
import type { JobRow, JobStore } from "./store.js";
import { BFL_STATUS, resultView, TERMINAL } from "./views.js";

export class EventStreams {
  private open = new Set<ServerResponse>();

  constructor(private store: JobStore, private events: JobEvents) {}

  serve(res: ServerResponse, row: JobRow, base: string): void {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const id = row.id;
    let unsubscribe = () => {};
    const heartbeat = setInterval(() => res.write(": ping\n\n"), 15_000);
    const cleanup = () => {
      clearInterval(heartbeat);
      unsubscribe();
      this.open.delete(res);
    };
    const finish = () => {
      const now = this.store.get(id);
      if (now) {
        send("done", resultView(now, base));
      }
      cleanup();
      res.end();
    };
    this.open.add(res);
    res.on("close", cleanup);
    send("status", { state: row.state, status: BFL_STATUS[row.state] });
    if (TERMINAL.includes(row.state)) return finish();
    const latest = this.events.latest(id);
    if (latest && row.state === "running") send("progress", latest);
    // No await between reading the row and subscribing, so no event can slip through.
    unsubscribe = this.events.subscribe(id, (e) => {
      if (e.type === "progress") send("progress", e.data);
      else if (e.type === "status") send("status", { state: e.data.state, status: BFL_STATUS[e.data.state as keyof typeof BFL_STATUS] ?? "Pending" });
      else finish();
    });
  }

  /** End every open stream (server shutdown). */
  closeAll(): void {
    for (const res of [...this.open]) res.end();
    this.open.clear();
  }
}
