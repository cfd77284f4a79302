// The durable record of jobs, results, API keys and webhook deliveries: one
// SQLite database (better-sqlite3, WAL) in the data folder.
//
// Exactly-once rules live here, as single SQL statements or transactions:
//  - a job is claimed by one runner at a time (state queued → running, with a
//    lease owner and an attempt number);
//  - a result is recorded only by the claim that is current (same owner and
//    attempt, still running), so a run that lost its lease cannot overwrite
//    or duplicate it; the webhook delivery is queued in the same transaction;
//  - after a crash, running jobs whose owner is gone go back to the queue
//    once (attempt counter) or end in Error.

import Database from "better-sqlite3";
import * as fs from "node:fs";
import * as path from "node:path";

export type JobState = "queued" | "running" | "ready" | "error" | "cancelled" | "request_moderated" | "content_moderated";
/** "finetune": a training job of POST /v1/finetune (src/server/finetune.ts). */
export type JobKind = "local" | "provider" | "redis" | "finetune";
export const ACTIVE_STATES: JobState[] = ["queued", "running"];

export interface JobRow {
  seq: number;
  id: string;
  model: string;
  kind: JobKind;
  key_id: string | null;
  /** The validated request as JSON; images are "store:<name>" references. */
  request: string;
  state: JobState;
  attempts: number;
  lease_owner: string | null;
  lease_expires: number | null;
  not_before: number | null;
  created_at: number;
  started_at: number | null;
  ended_at: number | null;
  /** JobResult as JSON once ready. */
  result: string | null;
  error: string | null;
  /** Provider bookkeeping (BFL task id and polling URL) as JSON. */
  provider: string | null;
}

/** What a finished job produced (stored as JSON in jobs.result). */
export interface JobResult {
  /** Image store names (<sha256>.<ext>), one per image. */
  images: string[];
  width: number;
  height: number;
  seed: number | null;
  steps: number | null;
  guidance: number | null;
  loras?: import("./generate_job.js").LoraSummary[];
  started_at: number;
  ended_at: number;
  /** Who produced it: "local", a worker name, or "bfl". */
  by: string;
  /** The prompt used when it differs from the request's (prompt_upsampling). */
  prompt?: string;
  /** A fine-tuning job's outcome (its images are the last sample images). */
  finetune?: { lora: string; steps: number; final_loss: number | null; resumed_from: number | null };
}

export interface Outcome {
  state: Exclude<JobState, "queued" | "running">;
  result?: JobResult;
  error?: string;
}

export interface Claim {
  owner: string;
  attempt: number;
}

export interface KeyRow {
  id: string;
  name: string;
  hash: string;
  prefix: string;
  created_at: number;
  revoked_at: number | null;
  max_active: number | null;
}

export interface WebhookRow {
  job_id: string;
  url: string;
  secret: string | null;
  body: string;
  attempts: number;
  next_at: number;
  state: "pending" | "delivered" | "failed";
  last_error: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  model TEXT NOT NULL,
  kind TEXT NOT NULL,
  key_id TEXT,
  request TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_expires INTEGER,
  not_before INTEGER,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  ended_at INTEGER,
  result TEXT,
  error TEXT,
  provider TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, kind, seq);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key_id, state);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, kind, not_before);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  max_active INTEGER
);
CREATE TABLE IF NOT EXISTS webhooks (
  job_id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  secret TEXT,
  body TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  state TEXT NOT NULL,
  last_error TEXT,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (state, next_at);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
  scope TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at);
`;

/** How long an Idempotency-Key keeps returning its job. */
export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;

/** An Idempotency-Key of a submit: who sent it (API key id, "" when anonymous), the key, and a hash of the request. */
export interface IdempotencyClaim {
  scope: string;
  key: string;
  requestHash: string;
}

/** A key seen before: its job, and whether the request then was the same. */
export interface IdempotencyHit {
  jobId: string;
  sameRequest: boolean;
}

export type SubmitVerdict = "ok" | "key_limit" | "queue_full" | IdempotencyHit;

export class JobStore {
  readonly db: Database.Database;

  constructor(dataDir: string) {
    fs.mkdirSync(dataDir, { recursive: true });
    this.db = new Database(path.join(dataDir, "flux2.db"));
    this.db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode survives process crashes (kill -9); only a power cut can lose the last commits.
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.exec(SCHEMA);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  private statements = new Map<string, Database.Statement>();

  /** Prepared statements are cached: preparing costs more than running most of these. */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  // -------------------------------------------------------------------------
  // Jobs

  /** Insert a queued job unless the key's active limit or the queue limit is reached (atomically). */
  submit(job: Pick<JobRow, "id" | "model" | "kind" | "key_id" | "request">, limits: { keyMax: number; queueMax: number }, idem?: IdempotencyClaim): SubmitVerdict {
    return this.db.transaction((): SubmitVerdict => {
      // In the same transaction as the insert: two concurrent submits with one key create one job.
      const hit = idem && this.idempotent(idem);
      if (hit) return hit;
      if (job.key_id && limits.keyMax > 0) {
        const n = this.sql("SELECT COUNT(*) AS n FROM jobs WHERE key_id = ? AND state IN ('queued','running')").get(job.key_id) as { n: number };
        if (n.n >= limits.keyMax) return "key_limit";
      }
      if (limits.queueMax > 0) {
        // Counting stops at the limit: the cost does not grow with a long queue.
        const q = this.sql("SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs WHERE state = 'queued' LIMIT ?)").get(limits.queueMax) as { n: number };
        if (q.n >= limits.queueMax) return "queue_full";
      }
      this.sql("INSERT INTO jobs (id, model, kind, key_id, request, state, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)")
        .run(job.id, job.model, job.kind, job.key_id, job.request, Date.now());
      if (idem) {
        this.sql("DELETE FROM idempotency WHERE created_at < ?").run(Date.now() - IDEMPOTENCY_TTL_MS);
        this.sql("INSERT OR REPLACE INTO idempotency (scope, key, request_hash, job_id, created_at) VALUES (?, ?, ?, ?, ?)")
          .run(idem.scope, idem.key, idem.requestHash, job.id, Date.now());
      }
      return "ok";
    }).immediate();
  }

  /** The job an Idempotency-Key created within the last 24 hours, if any. */
  idempotent(idem: IdempotencyClaim): IdempotencyHit | undefined {
    const r = this.sql("SELECT request_hash, job_id FROM idempotency WHERE scope = ? AND key = ? AND created_at >= ?")
      .get(idem.scope, idem.key, Date.now() - IDEMPOTENCY_TTL_MS) as { request_hash: string; job_id: string } | undefined;
    return r && { jobId: r.job_id, sameRequest: r.request_hash === idem.requestHash };
  }

  /** Redis mode: the queue started run number `n` of a job (a worker took over a crashed one). */
  setAttempts(id: string, n: number): void {
    this.sql("UPDATE jobs SET attempts = MAX(attempts, ?) WHERE id = ? AND state IN ('queued','running')").run(n, id);
  }

  get(id: string): JobRow | undefined {
    return this.sql("SELECT * FROM jobs WHERE id = ?").get(id) as JobRow | undefined;
  }

  activeCount(keyId: string): number {
    return (this.sql("SELECT COUNT(*) AS n FROM jobs WHERE key_id = ? AND state IN ('queued','running')").get(keyId) as { n: number }).n;
  }

  /** Newest first; `before` is a job id (exclusive). keyId null: every job. */
  list(opts: { keyId: string | null; limit: number; before?: string }): JobRow[] {
    let beforeSeq = Number.MAX_SAFE_INTEGER;
    if (opts.before) {
      const b = this.get(opts.before);
      if (!b) return [];
      beforeSeq = b.seq;
    }
    return this.sql("SELECT * FROM jobs WHERE (? IS NULL OR key_id = ?) AND seq < ? ORDER BY seq DESC LIMIT ?")
      .all(opts.keyId, opts.keyId, beforeSeq, opts.limit) as JobRow[];
  }

  /** Claim the oldest queued job of a kind that is due: queued → running, attempt + 1. */
  claim(kind: JobKind, owner: string, leaseMs: number): JobRow | undefined {
    const now = Date.now();
    return this.sql(`UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?, lease_expires = ?,
        started_at = COALESCE(started_at, ?), not_before = NULL
      WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' AND kind = ? AND (not_before IS NULL OR not_before <= ?) ORDER BY seq LIMIT 1)
      RETURNING *`).get(owner, now + leaseMs, now, kind, now) as JobRow | undefined;
  }

  /** Soonest not_before among queued jobs of a kind that are not yet due. */
  nextDue(kind: JobKind): number | null {
    const r = this.sql("SELECT MIN(not_before) AS t FROM jobs WHERE state = 'queued' AND kind = ? AND not_before IS NOT NULL").get(kind) as { t: number | null };
    return r.t;
  }

  renewLeases(owner: string, leaseMs: number): void {
    this.sql("UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state = 'running'").run(Date.now() + leaseMs, owner);
  }

  /** Give a claimed job back to the queue (backoff, shutdown); `refund` undoes the attempt count. */
  release(id: string, claim: Claim, opts: { notBefore?: number; refund?: boolean } = {}): boolean {
    const r = this.sql(`UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL, not_before = ?,
        attempts = attempts - ? WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ?`)
      .run(opts.notBefore ?? null, opts.refund ? 1 : 0, id, claim.owner, claim.attempt);
    return r.changes === 1;
  }

  setProviderState(id: string, state: unknown): void {
    this.sql("UPDATE jobs SET provider = ? WHERE id = ?").run(JSON.stringify(state), id);
  }

  /** Redis mode: a worker took the job. */
  markRunning(id: string, at = Date.now()): boolean {
    return this.sql("UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?), attempts = attempts + 1 WHERE id = ? AND state = 'queued'")
      .run(at, id).changes === 1;
  }

  /**
   * Record a terminal outcome once. With a claim, only that claim's run may
   * finish the job; without one (Redis mode, whose queue has already made the
   * run exclusive), any still-active job. `webhook` builds the delivery from the
   * finished row; it is queued in the same transaction.
   */
  finish(id: string, outcome: Outcome, claim: Claim | null, webhook?: (row: JobRow) => Omit<WebhookRow, "attempts" | "state" | "last_error" | "next_at"> | null): JobRow | undefined {
    return this.db.transaction(() => {
      const now = Date.now();
      const row = (claim
        ? this.sql(`UPDATE jobs SET state = ?, result = ?, error = ?, ended_at = ?, lease_owner = NULL, lease_expires = NULL
            WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ? RETURNING *`)
          .get(outcome.state, outcome.result ? JSON.stringify(outcome.result) : null, outcome.error ?? null, now, id, claim.owner, claim.attempt)
        : this.sql(`UPDATE jobs SET state = ?, result = ?, error = ?, ended_at = ?, lease_owner = NULL, lease_expires = NULL
            WHERE id = ? AND state IN ('queued','running') RETURNING *`)
          .get(outcome.state, outcome.result ? JSON.stringify(outcome.result) : null, outcome.error ?? null, now, id)) as JobRow | undefined;
      if (!row) return undefined;
      const hook = webhook?.(row);
      if (hook) {
        this.sql(`INSERT OR IGNORE INTO webhooks (job_id, url, secret, body, attempts, next_at, state, updated_at)
          VALUES (?, ?, ?, ?, 0, ?, 'pending', ?)`).run(hook.job_id, hook.url, hook.secret, hook.body, now, now);
      }
      return row;
    }).immediate();
  }

  /** A cancelled job's run stopped: its error says where ("cancelled during resizing reference 1"). */
  noteCancelled(id: string, error: string): void {
    this.sql("UPDATE jobs SET error = ? WHERE id = ? AND state = 'cancelled' AND error = 'cancelled'").run(error, id);
  }

  /** Cancel a queued or running job; returns the row as it was before, or undefined if not active. */
  cancel(id: string): JobRow | undefined {
    return this.db.transaction(() => {
      const before = this.sql("SELECT * FROM jobs WHERE id = ? AND state IN ('queued','running')").get(id) as JobRow | undefined;
      if (!before) return undefined;
      this.sql("UPDATE jobs SET state = 'cancelled', ended_at = ?, lease_owner = NULL, lease_expires = NULL, error = 'cancelled' WHERE id = ?")
        .run(Date.now(), id);
      return before;
    }).immediate();
  }

  /** Running jobs of these kinds (for crash recovery). */
  running(kinds: JobKind[]): JobRow[] {
    return this.sql(`SELECT * FROM jobs WHERE state = 'running' AND kind IN (${kinds.map(() => "?").join(",")})`).all(...kinds) as JobRow[];
  }

  /** Active jobs sent to Redis, oldest first (for reconciling with the queue). */
  activeRedis(limit: number, afterSeq = 0): JobRow[] {
    return this.sql("SELECT * FROM jobs WHERE kind = 'redis' AND state IN ('queued','running') AND seq > ? ORDER BY seq LIMIT ?")
      .all(afterSeq, limit) as JobRow[];
  }

  // -------------------------------------------------------------------------
  // API keys

  addKey(k: Omit<KeyRow, "revoked_at">): void {
    this.sql("INSERT INTO api_keys (id, name, hash, prefix, created_at, max_active) VALUES (?, ?, ?, ?, ?, ?)")
      .run(k.id, k.name, k.hash, k.prefix, k.created_at, k.max_active);
  }

  keyByHash(hash: string): KeyRow | undefined {
    return this.sql("SELECT * FROM api_keys WHERE hash = ?").get(hash) as KeyRow | undefined;
  }

  listKeys(): KeyRow[] {
    return this.sql("SELECT * FROM api_keys ORDER BY created_at").all() as KeyRow[];
  }

  revokeKey(idOrPrefix: string): KeyRow | undefined {
    return this.sql("UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR prefix = ?) AND revoked_at IS NULL RETURNING *")
      .get(Date.now(), idOrPrefix, idOrPrefix) as KeyRow | undefined;
  }

  keyCount(): number {
    return (this.sql("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL").get() as { n: number }).n;
  }

  // -------------------------------------------------------------------------
  // Webhook deliveries

  dueWebhooks(limit: number): WebhookRow[] {
    return this.sql("SELECT * FROM webhooks WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?").all(Date.now(), limit) as WebhookRow[];
  }

  nextWebhookAt(): number | null {
    return (this.sql("SELECT MIN(next_at) AS t FROM webhooks WHERE state = 'pending'").get() as { t: number | null }).t;
  }

  webhook(jobId: string): WebhookRow | undefined {
    return this.sql("SELECT * FROM webhooks WHERE job_id = ?").get(jobId) as WebhookRow | undefined;
  }

  webhookAttempt(jobId: string, outcome: { delivered: boolean; error?: string; nextAt?: number; failed?: boolean }): void {
    const state = outcome.delivered ? "delivered" : outcome.failed ? "failed" : "pending";
    this.sql("UPDATE webhooks SET attempts = attempts + 1, state = ?, last_error = ?, next_at = ?, updated_at = ? WHERE job_id = ?")
      .run(state, outcome.error ?? null, outcome.nextAt ?? Date.now(), Date.now(), jobId);
  }

  // -------------------------------------------------------------------------
  // Small settings (e.g. the Redis event stream cursor)

  getMeta(k: string): string | undefined {
    return (this.sql("SELECT v FROM meta WHERE k = ?").get(k) as { v: string } | undefined)?.v;
  }

  /** A small write, for health checks: fails as a real write would (full disk, read-only file). */
  probeWrite(): void {
    this.setMeta("health_probe", String(Date.now()));
  }

  setMeta(k: string, v: string): void {
    this.sql("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v").run(k, v);
  }
}
