// Webhook deliveries. When a job with a webhook_url ends, its result JSON is
// queued in SQLite in the same transaction that records the outcome, then
// POSTed here, signed with HMAC-SHA256 over the exact body bytes:
//
//   X-Flux2-Signature: sha256=<hex of HMAC-SHA256(webhook_secret, body)>
//
// Failed deliveries (network errors, non-2xx) are retried with exponential
// backoff up to a bounded number of attempts. Pending deliveries survive
// restarts; a delivery cut off by a crash is sent again (at-least-once:
// receivers should de-duplicate by the job id in the body, also sent as
// X-Flux2-Job-Id).

import { createHmac, timingSafeEqual } from "node:crypto";
import { fetchChecked, type UrlPolicy } from "../api/fetch_image.js";
import type { JobStore, WebhookRow } from "./store.js";

export const SIGNATURE_HEADER = "x-flux2-signature";

export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** For receivers: constant-time check of a signature header against the raw body. */
export function verifySignature(secret: string, body: string | Buffer, header: string | undefined): boolean {
  if (!header) return false;
  const want = Buffer.from(signBody(secret, body));
  const got = Buffer.from(header);
  return want.length === got.length && timingSafeEqual(want, got);
}

export interface WebhookOptions {
  policy: UrlPolicy;
  maxAttempts: number;
  baseDelayMs: number;
  /** Longest wait between attempts. */
  maxDelayMs?: number;
}

/** How long deliveries pause after the store refused to record one. */
const STORE_FAULT_PAUSE_MS = 30_000;

export class WebhookSender {
  private timer: NodeJS.Timeout | null = null;
  private inflight = new Set<string>();
  private closed = false;
  /** After the store refused a write, no delivery before this time. */
  private pausedUntil = 0;
  private running: Promise<void>[] = [];

  constructor(private store: JobStore, private opts: WebhookOptions, private log: (s: string) => void = () => {}) {}

  start(): void {
    this.poke();
  }

  /** Something was queued (or became due): deliver what is due now, then sleep until the next one. */
  poke(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.deliverDue(), 0);
  }

  private deliverDue(): void {
    this.timer = null;
    if (this.closed) return;
    if (Date.now() < this.pausedUntil) {
      this.timer = setTimeout(() => this.deliverDue(), this.pausedUntil - Date.now());
      return;
    }
    for (const row of this.store.dueWebhooks(32)) {
      if (this.inflight.has(row.job_id)) continue;
      this.inflight.add(row.job_id);
      // Recording the attempt can fail (a full disk): logged, and deliveries pause
      // for a while instead of re-sending at once in a loop (at-least-once holds).
      const p = this.deliver(row).catch((e: Error) => {
        this.log(`webhook for ${row.job_id}: ${e.message}`);
        this.pausedUntil = Date.now() + STORE_FAULT_PAUSE_MS;
      }).finally(() => {
        this.inflight.delete(row.job_id);
        this.running = this.running.filter((x) => x !== p);
        this.poke();
      });
      this.running.push(p);
    }
    const next = this.store.nextWebhookAt();
    if (next !== null && this.inflight.size === 0) this.timer = setTimeout(() => this.deliverDue(), Math.max(10, next - Date.now()));
  }

  private async deliver(row: WebhookRow): Promise<void> {
    const headers: Record<string, string> = { "content-type": "application/json", "x-flux2-job-id": row.job_id, "x-flux2-attempt": String(row.attempts + 1) };
    if (row.secret) headers[SIGNATURE_HEADER] = signBody(row.secret, row.body);
    let error: string | undefined;
    try {
      const res = await fetchChecked(row.url, { ...this.opts.policy, maxRedirects: 0 }, { method: "POST", headers, body: row.body });
      if (res.status >= 200 && res.status < 300) return this.store.webhookAttempt(row.job_id, { delivered: true });
      error = `HTTP ${res.status}`;
    } catch (e) {
      error = (e as Error).message;
    }
    if (this.closed) return;
    const attempts = row.attempts + 1;
    if (attempts >= this.opts.maxAttempts) {
      this.log(`webhook for ${row.job_id} failed ${attempts} times, giving up: ${error}`);
      return this.store.webhookAttempt(row.job_id, { delivered: false, failed: true, error });
    }
    const delay = Math.min(this.opts.baseDelayMs * 2 ** (attempts - 1), this.opts.maxDelayMs ?? 3_600_000);
    this.store.webhookAttempt(row.job_id, { delivered: false, error, nextAt: Date.now() + delay });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.allSettled(this.running);
  }
}
