// Scale-out mode (--queue redis://…), server side: jobs of local models are
// added to a BullMQ queue per model (job id = our id, so adding twice is a
// no-op) and run by `flux2 worker` processes. Their outcomes come back
// through BullMQ's event stream (QueueEvents) and are recorded in SQLite with
// the same once-only rule as local jobs; a periodic sweep reads the job state
// from Redis for anything the stream did not deliver (the server was down, the
// stream was trimmed) and re-adds jobs that never reached Redis (a crash
// between the SQLite insert and the add).

import { Queue, QueueEvents } from "bullmq";
import type { JobEvents, ProgressInfo } from "./events.js";
import type { Lifecycle } from "./lifecycle.js";
import { advertisedModel, type AdvertisedModel, type ModelRegistry } from "./models.js";
import { cancelKey, MODELS_KEY, queueName, RedisConnections, type RedisClient } from "./redis_conn.js";
import type { JobResult, JobRow, JobStore } from "./store.js";
import type { ImageStore } from "./images.js";
import { INPUT_TTL_S, RedisImages, storedInputs, type ImageTransfer } from "./redis_images.js";
import type { S3Images } from "./s3_images.js";

export interface RedisJobData {
  id: string;
  model: string;
  request: unknown;
  /**
   * Where the job's images travel: the server's --store URL (s3://…), absent for Redis. A worker
   * configured for another store refuses the job, saying so, instead of waiting for images that never come.
   */
  store?: string;
}

/** BullMQ options every job gets: one retry after a crash (a stalled job), results kept a week for the sweep. */
export const JOB_OPTIONS = { attempts: 2, backoff: { type: "fixed", delay: 500 }, removeOnComplete: { age: 7 * 86400 }, removeOnFail: { age: 7 * 86400 } };

export class RedisDispatcher {
  private conns: RedisConnections;
  private queues = new Map<string, { queue: Queue; events: QueueEvents }>();
  private ctl: RedisClient | null = null;
  private transfer: ImageTransfer | null = null;
  private timers: NodeJS.Timeout[] = [];
  private sweepAfter = 0;
  /** The latest advert seen per model (src/server/models.ts AdvertisedModel). */
  private adverts = new Map<string, AdvertisedModel>();
  private closed = false;

  constructor(
    url: string,
    private store: JobStore,
    private lifecycle: Lifecycle,
    private events: JobEvents,
    private registry: ModelRegistry,
    private log: (s: string) => void,
    private images: ImageStore,
    /** --store s3://…: images go through this bucket instead of Redis. */
    private objectStore?: S3Images,
  ) {
    this.conns = new RedisConnections(url, log);
  }

  async start(localIds: string[]): Promise<void> {
    this.ctl = await this.conns.plain();
    this.transfer = this.objectStore ?? new RedisImages(this.ctl, this.images);
    for (const id of localIds) this.ensure(id);
    await this.refreshModels();
    await this.sweep();
    this.timers.push(setInterval(() => void this.refreshModels().catch((e) => this.log(`redis: ${e.message}`)), 2000));
    this.timers.push(setInterval(() => void this.sweep().catch((e) => this.log(`redis sweep: ${e.message}`)), 3000));
  }

  /**
   * Models that live workers advertise become available (and get a queue). An advert stays valid
   * until its own expiry even when Redis no longer has it: a Redis restarted without persistence
   * forgets every advert, and until the workers advertise again (at once when they reconnect,
   * src/server/redis_worker.ts) submits for their models must not get "Model not found".
   */
  async refreshModels(): Promise<void> {
    if (!this.ctl) return;
    const adverts = await this.ctl.hgetall(MODELS_KEY);
    for (const raw of Object.values(adverts)) {
      const a = JSON.parse(raw) as AdvertisedModel;
      const known = this.adverts.get(a.id);
      if (!known || a.expires > known.expires) this.adverts.set(a.id, a);
    }
    const now = Date.now();
    const list = [];
    for (const [id, a] of this.adverts) {
      if (a.expires > now) list.push(advertisedModel(a));
      else this.adverts.delete(id);
    }
    this.registry.setRemote(list);
    for (const m of list) this.ensure(m.id);
  }

  private ensure(model: string) {
    let q = this.queues.get(model);
    if (q) return q;
    const name = queueName(model);
    const queue = new Queue(name, { connection: this.conns.make() as never });
    const key = `redis-events:${name}`;
    const events = new QueueEvents(name, { connection: this.conns.make() as never, lastEventId: this.store.getMeta(key) ?? "0" });
    const seen = (eventId: string) => this.store.setMeta(key, eventId);
    events.on("active", ({ jobId }, id) => { seen(id); this.activated(model, jobId); });
    events.on("progress", ({ jobId, data }, id) => { seen(id); this.events.publish(jobId, { type: "progress", data: data as ProgressInfo }); });
    events.on("completed", ({ jobId, returnvalue }, id) => { seen(id); void this.completed(jobId, returnvalue); });
    events.on("failed", ({ jobId }, id) => { seen(id); void this.checkFailed(model, jobId); });
    events.on("error", (e) => this.log(`redis events: ${e.message}`));
    q = { queue, events };
    this.queues.set(model, q);
    return q;
  }

  /**
   * A worker took the job: the first time it starts running; a later time is a takeover of a run
   * whose worker died, and BullMQ's count of started runs becomes the job's attempts.
   */
  private activated(model: string, jobId: string): void {
    if (this.store.markRunning(jobId)) this.lifecycle.started(jobId);
    void this.ensure(model).queue.getJob(jobId).then((job) => {
      if (job && job.attemptsStarted > 1) this.store.setAttempts(jobId, job.attemptsStarted);
    }).catch((e: Error) => this.log(`redis: ${e.message}`));
  }

  /** A worker finished: its images are copied from Redis (or the S3 store) into our store (unless we share its folder), then the job is Ready. */
  private async completed(jobId: string, returnvalue: unknown): Promise<void> {
    const result = (typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue) as JobResult;
    this.store.markRunning(jobId, result.started_at);
    try {
      for (const name of result.images) await this.transfer!.pull(name);
    } catch (e) {
      // Redis unreachable: the sweep tries again. Gone from Redis: the job cannot be finished as Ready.
      if ((e as Error).name !== "ImageExpiredError") return this.log(`redis: fetching the images of ${jobId}: ${(e as Error).message}`);
      this.lifecycle.finish(jobId, { state: "error", error: (e as Error).message }, null);
      return;
    }
    this.lifecycle.finish(jobId, { state: "ready", result }, null);
  }

  /** 'failed' also fires for attempts that will be retried: only a job in the failed set is finished. */
  private async checkFailed(model: string, jobId: string): Promise<void> {
    const job = await this.ensure(model).queue.getJob(jobId);
    if (!job || (await job.getState()) !== "failed") return;
    const moderated = /^(request|content)_moderated: /.exec(job.failedReason ?? "");
    if (moderated) this.lifecycle.finish(jobId, { state: `${moderated[1] as "request" | "content"}_moderated`, error: job.failedReason.slice(moderated[0].length) }, null);
    else this.lifecycle.finish(jobId, { state: job.failedReason === "cancelled" ? "cancelled" : "error", error: job.failedReason }, null);
  }

  async enqueue(row: Pick<JobRow, "id" | "model" | "request">): Promise<void> {
    const data: RedisJobData = { id: row.id, model: row.model, request: JSON.parse(row.request), ...(this.objectStore ? { store: this.objectStore.url } : {}) };
    // Inputs first, so a worker on another machine finds them when it takes the job.
    for (const name of storedInputs(data.request)) await this.transfer!.push(name, INPUT_TTL_S);
    await this.ensure(row.model).queue.add(row.model, data, { ...JOB_OPTIONS, jobId: row.id });
  }

  /** Remove a waiting job; a running one is told to stop through a flag its worker polls. */
  async cancel(row: JobRow): Promise<void> {
    await this.ctl?.set(cancelKey(row.id), "1", "EX", 86400);
    const job = await this.ensure(row.model).queue.getJob(row.id);
    if (job && ["waiting", "delayed", "prioritized"].includes(await job.getState())) await job.remove().catch(() => {});
  }

  /** Bring SQLite in line with Redis for a batch of active jobs (round-robin over all of them). */
  async sweep(): Promise<void> {
    if (this.closed) return;
    const rows = this.store.activeRedis(200, this.sweepAfter);
    this.sweepAfter = rows.length === 200 ? rows[rows.length - 1].seq : 0;
    for (const row of rows) {
      const job = await this.ensure(row.model).queue.getJob(row.id);
      if (!job) {
        await this.enqueue(row);
        continue;
      }
      const state = await job.getState();
      if (state === "completed") await this.completed(row.id, job.returnvalue);
      else if (state === "failed") await this.checkFailed(row.model, row.id);
      else if (state === "active") this.activated(row.model, row.id);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.timers.forEach(clearInterval);
    for (const { queue, events } of this.queues.values()) {
      await events.close().catch(() => {});
      await queue.close().catch(() => {});
    }
    this.ctl?.disconnect();
    this.conns.closeAll();
    this.objectStore?.close();
  }
}
