// The embedded durable queue: jobs wait in SQLite and this process claims
// them (queued → running with a lease), runs them, and records the outcome
// through the claim. A heartbeat renews the leases of running jobs; after a
// crash, `recover` finds running jobs whose owner is gone (its process no
// longer exists, or its lease lapsed) and queues them again once, or ends
// them in Error after maxAttempts runs.

import { randomBytes } from "node:crypto";
import * as os from "node:os";
import type { JobEvents, ProgressInfo } from "./events.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Claim, JobKind, JobRow, JobStore, Outcome } from "./store.js";

/** Thrown by a runner when its run was cut short by something other than the job (a crashed thread, a shutdown). */
export class Interrupted extends Error {}

export interface RunContext {
  job: JobRow;
  claim: Claim;
  signal: AbortSignal;
  progress: (p: ProgressInfo) => void;
}

/** A runner's verdict: an outcome to record, or "try again at retryAt" (rate limits, transient errors). */
export type RunResult = Outcome | { retryAt: number };

export interface LocalQueueOptions {
  kind: JobKind;
  concurrency: number;
  leaseMs: number;
  maxAttempts: number;
}

/** This process's lease-owner id: host/pid/nonce (the nonce tells a restarted process with a reused pid apart). */
export const PROCESS_OWNER = `${os.hostname()}/${process.pid}/${randomBytes(4).toString("hex")}`;

/** Is the process that owns a lease certainly gone? (Only decidable on this host.) */
export function ownerIsDead(owner: string): boolean {
  const [host, pidText] = owner.split("/");
  if (host !== os.hostname()) return false;
  const pid = Number(pidText);
  if (owner === PROCESS_OWNER) return false;
  if (pid === process.pid) return true; // our pid, another nonce: a previous process
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export class LocalQueue {
  private active = new Map<string, { ac: AbortController; claim: Claim }>();
  private timers: NodeJS.Timeout[] = [];
  private wake: NodeJS.Timeout | null = null;
  private closing = false;
  private idle: (() => void)[] = [];

  constructor(
    private store: JobStore,
    private lifecycle: Lifecycle,
    private events: JobEvents,
    private opts: LocalQueueOptions,
    private run: (ctx: RunContext) => Promise<RunResult>,
  ) {}

  start(): void {
    this.recover();
    this.timers.push(setInterval(() => this.store.renewLeases(PROCESS_OWNER, this.opts.leaseMs), Math.max(50, this.opts.leaseMs / 3)));
    this.timers.push(setInterval(() => this.recover(), Math.max(100, this.opts.leaseMs / 2)));
    this.tick();
  }

  private tickQueued = false;

  /** A job was queued: look for work (a burst of submits costs one look). */
  notify(): void {
    if (this.closing || this.tickQueued) return;
    this.tickQueued = true;
    setImmediate(() => {
      this.tickQueued = false;
      this.tick();
    });
  }

  /** Running jobs are re-queued or errored if their owner is gone. */
  recover(): void {
    const now = Date.now();
    for (const row of this.store.running([this.opts.kind])) {
      if (!row.lease_owner || this.active.has(row.id)) continue;
      const lapsed = (row.lease_expires ?? 0) < now;
      if (!lapsed && !ownerIsDead(row.lease_owner)) continue;
      const claim = { owner: row.lease_owner, attempt: row.attempts };
      if (row.attempts < this.opts.maxAttempts) this.store.release(row.id, claim);
      else this.lifecycle.finish(row.id, { state: "error", error: `interrupted ${row.attempts} times (the server stopped while it ran)` }, claim);
    }
    this.tick();
  }

  private tick(): void {
    if (this.closing) return;
    while (this.active.size < this.opts.concurrency) {
      const row = this.store.claim(this.opts.kind, PROCESS_OWNER, this.opts.leaseMs);
      if (!row) break;
      void this.launch(row);
    }
    this.scheduleDue();
  }

  /** Wake up when the next backed-off job becomes due. */
  private scheduleDue(): void {
    const due = this.store.nextDue(this.opts.kind);
    if (due === null || this.wake) return;
    this.wake = setTimeout(() => {
      this.wake = null;
      this.tick();
    }, Math.max(10, due - Date.now()));
  }

  private async launch(row: JobRow): Promise<void> {
    const claim = { owner: PROCESS_OWNER, attempt: row.attempts };
    const ac = new AbortController();
    this.active.set(row.id, { ac, claim });
    this.lifecycle.started(row.id);
    let result: RunResult | Interrupted;
    try {
      result = await this.run({ job: row, claim, signal: ac.signal, progress: (p) => this.events.publish(row.id, { type: "progress", data: p }) });
    } catch (e) {
      result = e instanceof Interrupted ? e : { state: "error", error: (e as Error).message };
    } finally {
      this.active.delete(row.id);
    }
    this.settle(row, claim, result);
    if (this.active.size === 0) this.idle.splice(0).forEach((f) => f());
    this.tick();
  }

  private settle(row: JobRow, claim: Claim, result: RunResult | Interrupted): void {
    const finished = !(result instanceof Interrupted) && "state" in result && result.state !== "cancelled";
    if (this.closing && !finished) {
      // Shutting down: the job goes back to the queue without using up an attempt.
      this.store.release(row.id, claim, { refund: true });
      return;
    }
    if (result instanceof Interrupted) {
      if (claim.attempt < this.opts.maxAttempts) this.store.release(row.id, claim);
      else this.lifecycle.finish(row.id, { state: "error", error: `interrupted ${claim.attempt} times: ${result.message}` }, claim);
    } else if ("retryAt" in result) {
      this.store.release(row.id, claim, { notBefore: result.retryAt, refund: true });
    } else {
      this.lifecycle.finish(row.id, result, claim);
    }
  }

  /** Stop a running job at its next step (the job row is already marked cancelled). */
  cancel(id: string): void {
    this.active.get(id)?.ac.abort();
  }

  /** Stop taking jobs; running ones are stopped and go back to the queue. */
  async close(): Promise<void> {
    this.closing = true;
    this.timers.forEach(clearInterval);
    if (this.wake) clearTimeout(this.wake);
    if (this.active.size === 0) return;
    const done = new Promise<void>((r) => this.idle.push(r));
    for (const a of this.active.values()) a.ac.abort();
    await done;
  }
}
