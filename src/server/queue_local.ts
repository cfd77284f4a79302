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
import { isStorageError, STORAGE_RETRY_AFTER_S } from "./storage.js";
import type { Claim, JobKind, JobRow, JobStore, Outcome } from "./store.js";

/** Thrown by a runner when its run was cut short by something other than the job (a crashed thread, a shutdown). */
export class Interrupted extends Error {}

/** What a queued job's runner gets (not generate_job.ts's RunContext, which is what one generation needs). */
export interface JobRunContext {
  job: JobRow;
  claim: Claim;
  signal: AbortSignal;
  progress: (p: ProgressInfo) => void;
  /** A stage of the run begins. */
  stage: (stage: string) => void;
}

/** A runner's verdict: an outcome to record, or "try again at retryAt" (rate limits, transient errors). */
export type RunResult = Outcome | { retryAt: number };

export interface LocalQueueOptions {
  kind: JobKind;
  concurrency: number;
  leaseMs: number;
  maxAttempts: number;
  /** A database or disk fault met by background work (a full disk): logged and reported, never thrown out of a timer. */
  onFault?: (what: string, e: unknown) => void;
  /** How long a job whose result could not be stored (a full disk) waits before it runs again (default 30 s). */
  faultRetryMs?: number;
}

/** How often an outcome that could not be recorded (a full disk) is tried again. */
const SETTLE_RETRY_MS = 1000;

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
  /** Outcomes not yet recorded because the store failed; kept (and their jobs left alone by recover) until it works again. */
  private unsettled = new Map<string, { row: JobRow; claim: Claim; result: RunResult | Interrupted }>();
  private settleTimer: NodeJS.Timeout | null = null;

  constructor(
    private store: JobStore,
    private lifecycle: Lifecycle,
    private events: JobEvents,
    private opts: LocalQueueOptions,
    private run: (ctx: JobRunContext) => Promise<RunResult>,
  ) {}

  start(): void {
    this.guard("recovering jobs", () => this.recover());
    this.timers.push(setInterval(() => this.guard("renewing leases", () => this.store.renewLeases(PROCESS_OWNER, this.opts.leaseMs)), Math.max(50, this.opts.leaseMs / 3)));
    this.timers.push(setInterval(() => this.guard("recovering jobs", () => this.recover()), Math.max(100, this.opts.leaseMs / 2)));
    this.guard("claiming jobs", () => this.tick());
  }

  /** Run background work; a failure (a full disk) is reported, not thrown out of a timer where it would end the process. */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (this.opts.onFault) this.opts.onFault(what, e);
      else process.stderr.write(`${what}: ${(e as Error).message}\n`);
    }
  }

  private tickQueued = false;

  /** A job was queued: look for work (a burst of submits costs one look). */
  notify(): void {
    if (this.closing || this.tickQueued) return;
    this.tickQueued = true;
    setImmediate(() => {
      this.tickQueued = false;
      this.guard("claiming jobs", () => this.tick());
    });
  }

  /** Running jobs are re-queued or errored if their owner is gone. */
  recover(): void {
    const now = Date.now();
    for (const row of this.store.running([this.opts.kind])) {
      if (!row.lease_owner || this.active.has(row.id) || this.unsettled.has(row.id)) continue;
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
      this.guard("claiming jobs", () => this.tick());
    }, Math.max(10, due - Date.now()));
  }

  private async launch(row: JobRow): Promise<void> {
    const claim = { owner: PROCESS_OWNER, attempt: row.attempts };
    const ac = new AbortController();
    this.active.set(row.id, { ac, claim });
    this.lifecycle.started(row.id);
    let result: RunResult | Interrupted;
    try {
      result = await this.run({
        job: row, claim, signal: ac.signal,
        progress: (p) => this.events.publish(row.id, { type: "progress", data: p }),
        stage: (stage) => this.events.publish(row.id, { type: "stage", data: { stage } }),
      });
    } catch (e) {
      // A full or read-only disk is not the job's fault: it waits in the queue and runs again later.
      result = e instanceof Interrupted ? e : isStorageError(e) ? { retryAt: Date.now() + (this.opts.faultRetryMs ?? STORAGE_RETRY_AFTER_S * 1000) } : { state: "error", error: (e as Error).message };
      if (isStorageError(e)) this.opts.onFault?.(`storing the result of job ${row.id}`, e);
    } finally {
      this.active.delete(row.id);
    }
    try {
      this.settle(row, claim, result);
    } catch (e) {
      // The outcome could not be recorded (SQLITE_FULL): keep it and try again; the job is not lost.
      this.opts.onFault?.(`recording job ${row.id}`, e);
      this.unsettled.set(row.id, { row, claim, result });
      this.retrySettle();
    }
    if (this.active.size === 0) this.idle.splice(0).forEach((f) => f());
    this.guard("claiming jobs", () => this.tick());
  }

  private retrySettle(): void {
    if (this.settleTimer || this.closing) return; // close() makes the last try
    this.settleTimer = setTimeout(() => {
      this.settleTimer = null;
      for (const [id, u] of this.unsettled) {
        try {
          this.settle(u.row, u.claim, u.result);
          this.unsettled.delete(id);
        } catch (e) {
          this.opts.onFault?.(`recording job ${id}`, e);
        }
      }
      if (this.unsettled.size) this.retrySettle();
    }, SETTLE_RETRY_MS);
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
    } else if (result.state === "cancelled") {
      // The row is cancelled already (by the DELETE); the run adds where it stopped.
      if (result.error) this.store.noteCancelled(row.id, result.error);
    } else {
      this.lifecycle.finish(row.id, result, claim);
    }
  }

  /** Stop a running job at its next check (the job row is already marked cancelled). */
  cancel(id: string): void {
    this.active.get(id)?.ac.abort();
  }

  /**
   * Stop taking jobs; running ones are stopped and go back to the queue.
   * Resolves true when they stopped within `timeoutMs`; otherwise their jobs
   * are put back in the queue now (without using up an attempt) and it
   * resolves false: the caller must not wait for the runs any longer.
   */
  async close(timeoutMs = Infinity): Promise<boolean> {
    this.closing = true;
    this.timers.forEach(clearInterval);
    if (this.wake) clearTimeout(this.wake);
    let stopped = true;
    if (this.active.size > 0) {
      const done = new Promise<boolean>((r) => this.idle.push(() => r(true)));
      for (const a of this.active.values()) a.ac.abort();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((r) => { if (Number.isFinite(timeoutMs)) timer = setTimeout(() => r(false), timeoutMs); });
      stopped = await Promise.race([done, late]);
      clearTimeout(timer);
      if (!stopped) {
        for (const [id, a] of this.active) this.guard(`re-queueing job ${id}`, () => this.store.release(id, a.claim, { refund: true }));
      }
    }
    // A last try for outcomes the store refused (a full disk); what still fails is left
    // as it is in the database (running, under this process's lease) and recovered at the next start.
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = null;
    for (const [id, u] of this.unsettled) {
      this.guard(`recording job ${id} at shutdown (it is recovered at the next start)`, () => {
        this.settle(u.row, u.claim, u.result);
        this.unsettled.delete(id);
      });
    }
    return stopped;
  }
}
