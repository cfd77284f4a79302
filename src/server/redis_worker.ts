// `flux2 worker`: pulls jobs of its models from Redis (BullMQ), runs them on a
// local executor thread, writes the images to the shared content-addressed
// store and returns the result to BullMQ, which records it once: completing
// a job needs the job's lock, so a worker that lost its lock (it stalled and
// the job went to another worker) cannot complete it a second time, and the
// images of a re-run are the same files (same seed, same bytes, same name).

import { UnrecoverableError, Worker, type Job } from "bullmq";
import * as os from "node:os";
import * as path from "node:path";
import type { ModelSpec } from "./config.js";
import { ExecError, Executor } from "./executor.js";
import { ImageStore } from "./images.js";
import { localModel, type AdvertisedModel } from "./models.js";
import { cancelKey, MODELS_KEY, queueName, RedisConnections, type RedisClient } from "./redis_conn.js";
import type { RedisJobData } from "./queue_redis.js";
import { ImageExpiredError, OUTPUT_TTL_S, RedisImages, storedInputs, type ImageTransfer } from "./redis_images.js";
import { S3Images, type S3Settings } from "./s3_images.js";
import { storeOutput } from "./run_local.js";
import type { JobResult } from "./store.js";
import type { GenerationRequest } from "../api/request.js";
import type { ModerationConfig } from "../moderation/config.js";

export interface WorkerOptions {
  url: string;
  models: ModelSpec[];
  /**
   * This worker's data folder: images go to <dataDir>/images. It need not be the server's:
   * images travel through Redis (src/server/redis_images.ts).
   */
  dataDir: string;
  /** Seconds output images stay in Redis for the server to collect (default one hour). */
  imageTtlS?: number;
  /** Images through this S3 bucket instead of Redis (the server's --store); checked at start. */
  s3?: S3Settings;
  threads?: number;
  /** BullMQ lock: a worker silent this long is presumed dead and its job retried. */
  lockMs: number;
  maxPixels: number;
  loraDir?: string;
  moderation?: ModerationConfig;
  watermark?: boolean;
  upsampleTokens?: number;
  name?: string;
  log: (line: string) => void;
}

export interface RunningWorker {
  name: string;
  /** Stop taking jobs and close; false when Redis could not be reached within the deadline (connections dropped). */
  close(deadlineMs?: number): Promise<boolean>;
}

/** How long a closing worker waits for an unreachable Redis before dropping its connections. */
export const CLOSE_DEADLINE_MS = 10_000;

const ADVERT_MS = 5000;

export async function startRedisWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const name = opts.name ?? `${os.hostname()}/${process.pid}`;
  const conns = new RedisConnections(opts.url, (s) => opts.log(JSON.stringify({ event: "warn", message: s })));
  const images = new ImageStore(path.join(opts.dataDir, "images"));
  const s3 = opts.s3 ? new S3Images(opts.s3, images) : undefined;
  try {
    await s3?.check(); // a wrong bucket, endpoint or key stops the worker now, not every job later
  } catch (e) {
    s3?.close();
    throw e;
  }
  const ctl = await conns.plain();
  const adverts = opts.models.map((m) => localModel(m, "redis workers"));
  const executor = new Executor({ models: opts.models, storeRoot: images.root, threads: opts.threads, maxPixels: opts.maxPixels, loraDir: opts.loraDir,
    moderation: opts.moderation, watermark: opts.watermark, upsampleTokens: opts.upsampleTokens });

  const advertise = async () => {
    for (const m of adverts) {
      const a: AdvertisedModel = { id: m.id, variant: m.variant as AdvertisedModel["variant"], multipleOf: m.caps.multipleOf, expires: Date.now() + 3 * ADVERT_MS };
      await ctl.hset(MODELS_KEY, m.id, JSON.stringify(a));
    }
  };
  await advertise();
  const advertTimer = setInterval(() => void advertise().catch(() => {}), ADVERT_MS);
  // A Redis restarted without persistence has forgotten the adverts: advertise again as soon as the
  // connection is back, not at the next tick (up to 5 s later), so the server never lacks the model.
  ctl.on("ready", () => void advertise().catch(() => {}));

  const transfer: ImageTransfer = s3 ?? new RedisImages(ctl, images);
  const processJob = (job: Job<RedisJobData>) => runJob(job, { executor, images, transfer, store: s3?.url, imageTtlS: opts.imageTtlS ?? OUTPUT_TTL_S, ctl, name, log: opts.log });
  const workers = opts.models.map((m) => new Worker<RedisJobData, JobResult>(queueName(m.id), processJob, {
    connection: conns.make() as never, concurrency: 1, lockDuration: opts.lockMs, stalledInterval: opts.lockMs, maxStalledCount: 1,
  }));
  for (const w of workers) w.on("error", (e) => opts.log(JSON.stringify({ event: "warn", message: e.message })));
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  opts.log(JSON.stringify({ event: "ready", worker: name, models: opts.models.map((m) => m.id) }));

  return {
    name,
    async close(deadlineMs = CLOSE_DEADLINE_MS) {
      clearInterval(advertTimer);
      // BullMQ's close finishes the job in hand (as long as it takes) and releases it in Redis, so with Redis
      // unreachable it waits forever (seen: a SIGTERM'd worker kept reconnecting). Once Redis has been
      // unreachable for the deadline, the connections are dropped instead: the job's lock lapses and another
      // worker takes it over, as after a crash.
      const closing = Promise.all(workers.map((w) => w.close())).then(() => true, () => false);
      let downSince: number | null = null;
      let timer: NodeJS.Timeout | undefined;
      const clean = await Promise.race([closing, new Promise<boolean>((resolve) => {
        timer = setInterval(() => {
          if (ctl.status === "ready") downSince = null;
          else if (Date.now() - (downSince ??= Date.now()) >= deadlineMs) resolve(false);
        }, 250);
      })]);
      clearInterval(timer);
      if (!clean) opts.log(JSON.stringify({ event: "warn", message: `could not close: Redis unreachable for ${deadlineMs / 1000} s; connections dropped (a job in hand is taken over by another worker once its lock lapses)` }));
      ctl.disconnect();
      conns.closeAll();
      await executor.close();
      s3?.close();
      return clean;
    },
  };
}

interface JobDeps {
  executor: Executor;
  images: ImageStore;
  transfer: ImageTransfer;
  /** This worker's --store (undefined: Redis). */
  store?: string;
  imageTtlS: number;
  ctl: RedisClient;
  name: string;
  log: (line: string) => void;
}

async function runJob(job: Job<RedisJobData>, d: JobDeps): Promise<JobResult> {
  const { id, model, request } = job.data;
  const cancelled = async () => (await d.ctl.exists(cancelKey(id))) === 1;
  if (await cancelled()) throw new UnrecoverableError("cancelled");
  if (job.data.store !== d.store) {
    throw new UnrecoverableError(`the server keeps this job's images in ${job.data.store ?? "Redis"}, but worker ${d.name} uses ${d.store ?? "Redis"}: start every worker with the server's --store${job.data.store ? ` ${job.data.store}` : " (none)"}`);
  }
  d.log(JSON.stringify({ event: "start", id, worker: d.name, attempt: job.attemptsStarted }));
  // The inputs come from Redis (or the S3 store) unless this worker shares the server's folder.
  try {
    for (const n of storedInputs(request)) await d.transfer.pull(n);
  } catch (e) {
    if (e instanceof ImageExpiredError) throw new UnrecoverableError(`input ${e.message}`);
    throw e; // Redis unreachable: retried
  }
  const ac = new AbortController();
  // The cancel flag is polled while the job runs; the executor stops at the next step.
  const poll = setInterval(() => void cancelled().then((c) => c && ac.abort(), () => {}), 250);
  const started = Date.now();
  try {
    const out = await d.executor.run({ id, model, request: request as GenerationRequest }, {
      signal: ac.signal, onProgress: (p) => void job.updateProgress(p as never).catch(() => {}),
    });
    const result = await storeOutput(d.images, out, started, d.name);
    for (const n of result.images) await d.transfer.push(n, d.imageTtlS);
    d.log(JSON.stringify({ event: "done", id, worker: d.name, attempt: job.attemptsStarted }));
    return result;
  } catch (e) {
    if (!(e instanceof ExecError)) throw e;
    if (e.kind === "cancelled") throw new UnrecoverableError("cancelled");
    if (e.kind === "crashed") throw new Error(e.message); // retried (attempts: 2)
    // The dispatcher (queue_redis.ts) reads the state back from this prefix.
    if (e.kind === "request_moderated" || e.kind === "content_moderated") throw new UnrecoverableError(`${e.kind}: ${e.message}`);
    throw new UnrecoverableError(e.message);
  } finally {
    clearInterval(poll);
  }
}
