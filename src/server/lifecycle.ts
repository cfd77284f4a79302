// State changes every queue shares: recording a terminal outcome once (with
// its webhook delivery, in one transaction) and telling event listeners.

import type { JobEvents } from "./events.js";
import type { Claim, JobRow, JobStore, Outcome } from "./store.js";
import { resultView } from "./views.js";

export class Lifecycle {
  constructor(
    private store: JobStore,
    private events: JobEvents,
    /** Base URL for result links in webhook bodies. */
    private baseUrl: () => string,
    private onWebhook: () => void = () => {},
  ) {}

  started(id: string): void {
    this.events.publish(id, { type: "status", data: { state: "running" } });
  }

  /** Record the outcome unless the job already ended (or `claim` is no longer current). */
  finish(id: string, outcome: Outcome, claim: Claim | null): JobRow | undefined {
    let hooked = false;
    const row = this.store.finish(id, outcome, claim, (r) => {
      const req = JSON.parse(r.request) as { webhook_url?: string; webhook_secret?: string };
      if (!req.webhook_url || r.state === "cancelled") return null;
      hooked = true;
      return { job_id: r.id, url: req.webhook_url, secret: req.webhook_secret ?? null, body: JSON.stringify(resultView(r, this.baseUrl())) };
    });
    if (!row) return undefined;
    this.events.publish(id, { type: "status", data: { state: row.state } });
    this.events.publish(id, { type: "done", data: { state: row.state } });
    if (hooked) this.onWebhook();
    return row;
  }

  cancelled(id: string): void {
    this.events.publish(id, { type: "status", data: { state: "cancelled" } });
    this.events.publish(id, { type: "done", data: { state: "cancelled" } });
  }
}
