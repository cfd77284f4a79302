// Putting the server together: storage, queues, webhooks and the fastify app.

import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import * as path from "node:path";
import { MemoryBudget, planMemoryBudget } from "./budget.js";
import { authenticate, WARNING_HEADER } from "./auth.js";
import { keysRequired as needKeys, type ServerConfig } from "./config.js";
import { ApiError } from "./errors.js";
import { JobEvents } from "./events.js";
import { Executor } from "./executor.js";
import { ImageStore } from "./images.js";
import { JobService, type Queues } from "./jobs.js";
import { Lifecycle } from "./lifecycle.js";
import { ModelRegistry } from "./models.js";
import { BflClient, providerRunner } from "./providers/bfl.js";
import { LocalQueue } from "./queue_local.js";
import { RedisDispatcher } from "./queue_redis.js";
import { S3Images } from "./s3_images.js";
import { registerRoutes } from "./routes.js";
import { recordBatch, registerCors, registerStudioRoutes } from "./studio_routes.js";
import { registerStoryboardRoutes } from "./storyboard.js";
import { Finetuner } from "./finetune.js";
import { EventStreams } from "./sse.js";
import { registerStatic } from "./static.js";
import { registerFiles } from "./files.js";
import { localRunner } from "./run_local.js";
import { makeDataDir, StorageHealth, storageFault } from "./storage.js";
import { JobStore } from "./store.js";
import { WebhookSender } from "./webhooks.js";
import { VERSION } from "../pipeline/metadata.js";

export interface RunningServer {
  app: FastifyInstance;
  /** http://host:port as listened on. */
  url: string;
  port: number;
  store: JobStore;
  /** Whether requests must carry an API key. */
  keysRequired: boolean;
  health: StorageHealth;
  budget: MemoryBudget;
  streams: EventStreams;
  /** Job events (progress, stages, state changes) as the event streams see them. */
  events: JobEvents;
  /** The local generation thread's owner (absent without local models). */
  executor?: Executor;
  /** Every route registered (method and fastify pattern), as /openapi.json must document them (test/server_openapi.test.ts). */
  routes: { method: string; url: string }[];
  /**
   * Stop: no new requests (503), open event streams end, the running job
   * stops and goes back to the queue. `clean` is false when a job would not
   * stop within cfg.shutdownTimeoutMs, or a thread replaced inside a long
   * native call had not ended by then: the job was re-queued anyway, but a
   * thread is still busy, so the caller should end the process by its signal.
   */
  shutdown(): Promise<{ clean: boolean }>;
  close(): Promise<void>;
}

/** BFL allows 24 active tasks per key; the provider queue runs that many at once. */
const PROVIDER_CONCURRENCY = 24;

function errorHandler(bodyLimit: number, health: StorageHealth, log: (s: string) => void) {
  return (err: FastifyError | ApiError, _req: unknown, reply: { status(n: number): { headers(h: Record<string, string>): { send(b: unknown): void } } }) => {
    // A full, read-only or unwritable data folder: 503 naming the path and what to do.
    const fault = storageFault(err, health.dataDir);
    if (fault) {
      health.report("request", err);
      return reply.status(fault.status).headers(fault.headers).send(fault.body);
    }
    if (err instanceof ApiError) return reply.status(err.status).headers(err.headers).send(err.body);
    const code = (err as FastifyError).code ?? "";
    const status = (err as FastifyError).statusCode ?? 500;
    if (code === "FST_ERR_REQUEST_TIMEOUT" || status === 408) return reply.status(408).headers({ connection: "close" }).send({ detail: "The request took too long to arrive: send it again" });
    if (code === "FST_ERR_CTP_BODY_TOO_LARGE") return reply.status(413).headers({}).send({ detail: `Request body is larger than the limit of ${bodyLimit} bytes` });
    if (code.startsWith("FST_ERR_CTP_") && status === 400) {
      return reply.status(422).headers({}).send({ detail: [{ loc: ["body"], msg: `JSON decode error: ${err.message}`, type: "json_invalid" }] });
    }
    if (status < 500) return reply.status(status).headers({}).send({ detail: err.message });
    log(`error: ${err.stack ?? err.message}`);
    return reply.status(500).headers({}).send({ detail: "Internal Server Error" });
  };
}

/** Routes anyone may GET: the model list and images (their names are content hashes, like BFL's signed delivery URLs). */
const PUBLIC_ROUTES = new Set(["/v1/models", "/v1/images/:name"]);

/** The matched route's pattern; for an unmatched request its decoded path (an undecodable one counts as under /v1/: checked). */
function routePath(pattern: string | undefined, url: string): string {
  if (pattern) return pattern;
  try {
    return decodeURIComponent(url.split("?")[0]);
  } catch {
    return "/v1/";
  }
}

export async function startServer(cfg: ServerConfig, log: (s: string) => void = (s) => process.stderr.write(s + "\n")): Promise<RunningServer> {
  // Models first: a bad --model fails before anything is opened.
  const registry = new ModelRegistry(cfg.models, !!cfg.bflKey, cfg.queue ? "redis workers" : "this process");
  const { store, images, health } = openStorage(cfg, log);
  // Inputs are decoded by this process; generation runs here too unless workers do it.
  const budgetPlan = planMemoryBudget(cfg.queue ? [] : cfg.models, cfg.memoryBudget);
  const budget = new MemoryBudget(budgetPlan.bytes);
  const onFault = (what: string, e: unknown) => health.report(what, e);
  const events = new JobEvents();
  let listenUrl = "";
  const baseFor = () => (cfg.publicUrl ?? listenUrl).replace(/\/$/, "");
  const policy = { allowPrivate: cfg.allowPrivateUrls, timeoutMs: cfg.webhookTimeoutMs, maxBytes: 1024 * 1024 };
  const webhooks = new WebhookSender(store, { policy, maxAttempts: cfg.webhookMaxAttempts, baseDelayMs: cfg.webhookBaseDelayMs }, log);
  const lifecycle = new Lifecycle(store, events, baseFor, () => webhooks.poke());

  const queues: Queues = {};
  let executor: Executor | undefined;
  if (!cfg.queue && cfg.models.length) {
    executor = new Executor({ models: cfg.models, storeRoot: images.root, threads: cfg.threads, maxPixels: cfg.maxInputPixels, loraDir: cfg.loraDir, watermark: cfg.watermark, moderation: cfg.moderation, upsampleTokens: cfg.upsampleTokens },
      { cancelGraceMs: cfg.cancelGraceMs, log });
    queues.local = new LocalQueue(store, lifecycle, events, { kind: "local", concurrency: 1, leaseMs: cfg.leaseMs, maxAttempts: cfg.maxAttempts, onFault, faultRetryMs: cfg.faultRetryMs }, localRunner(executor, images));
  }
  if (cfg.bflKey) {
    const bfl = { apiKey: cfg.bflKey, baseUrl: cfg.bflBaseUrl, pollMs: cfg.providerPollMs, backoffMs: cfg.providerBackoffMs };
    queues.provider = new LocalQueue(store, lifecycle, events, { kind: "provider", concurrency: PROVIDER_CONCURRENCY, leaseMs: cfg.leaseMs, maxAttempts: cfg.maxAttempts + 3, onFault, faultRetryMs: cfg.faultRetryMs },
      providerRunner(new BflClient(bfl), images, store, bfl));
  }
  // Fine-tuning runs in this process's queue (child processes) whenever it serves local models.
  const finetuner = !cfg.queue && cfg.models.length ? new Finetuner({ cfg, store, images, registry, lifecycle, events, baseUrl: baseFor, onFault, log }) : undefined;
  if (cfg.store && !cfg.queue) throw new Error("--store s3://… is where workers and the server exchange images: it needs --queue redis://…");
  const objectStore = cfg.store ? new S3Images(cfg.store, images) : undefined;
  if (cfg.queue) queues.redis = new RedisDispatcher(cfg.queue, store, lifecycle, events, registry, log, images, objectStore);

  const keysRequired = needKeys(cfg);
  const service = new JobService(cfg, store, images, registry, lifecycle, queues, budget, health);
  const streams = new EventStreams(store, events, { perJob: cfg.maxStreamsPerJob, perKey: cfg.maxStreamsPerKey, bufferBytes: cfg.streamBufferBytes });
  const app = Fastify({
    bodyLimit: cfg.bodyLimit, logger: false, forceCloseConnections: true, return503OnClosing: true,
    // Slow clients cannot hold connections: whole request, headers, idle keep-alive and idle sockets are all timed.
    requestTimeout: cfg.requestTimeoutMs, connectionTimeout: cfg.idleTimeoutMs, keepAliveTimeout: cfg.keepAliveTimeoutMs,
    // Node checks the request and header deadlines on this interval (30 s by default, which would stretch them).
    http: { headersTimeout: cfg.headersTimeoutMs, connectionsCheckingInterval: Math.min(1000, cfg.headersTimeoutMs) },
  });
  app.decorateRequest("principal", null as never);
  const routes: { method: string; url: string }[] = [];
  app.addHook("onRoute", (r) => { for (const method of [r.method].flat()) routes.push({ method, url: r.url }); });
  // Before the key check: a browser's CORS preflight carries no key.
  registerCors(app, cfg.corsOrigins);
  app.addHook("onRequest", async (req, reply) => {
    // Decide on the route the router matched, which it found after decoding the path, never on the
    // raw URL: "/%761/jobs/ID" is routed to /v1/jobs/:id and must be checked like it.
    const route = routePath(req.routeOptions.url, req.url);
    if (!route.startsWith("/v1/") || (req.method === "GET" && PUBLIC_ROUTES.has(route))) return;
    // Browsers' EventSource cannot send headers: the events stream also takes ?key=.
    const key = req.headers["x-key"] ?? (route.endsWith("/events") ? (req.query as { key?: string }).key : undefined);
    req.principal = authenticate(store, key, keysRequired);
    if (req.principal.warning) reply.header(WARNING_HEADER, req.principal.warning);
  });
  if (cfg.log) app.addHook("onResponse", async (req, reply) => log(`${req.method} ${req.url.split("?")[0]} ${reply.statusCode} ${reply.elapsedTime.toFixed(1)} ms`));
  app.setErrorHandler(errorHandler(cfg.bodyLimit, health, log) as never);
  app.setNotFoundHandler((_req, reply) => void reply.status(404).send({ detail: "Not Found" }));
  registerRoutes(app, { cfg, service, images, registry, events, streams, health, version: VERSION, baseUrl: baseFor, tagBatch: (id, batch) => recordBatch(store, id, batch) });
  registerStudioRoutes(app, { loraDir: cfg.loraDir, store, images, service, events, baseUrl: baseFor });
  registerStoryboardRoutes(app, { service, images, registry, dataDir: cfg.dataDir, baseUrl: baseFor });
  if (finetuner) finetuner.register(app);
  else {
    // The same routes as a Finetuner's, each saying why this server does not fine-tune.
    const noFinetune = async () => { throw new ApiError(503, cfg.queue ? "fine-tuning runs on a server with local models, not with --queue (Redis workers)" : "this server has no local model to fine-tune: start it with --model"); };
    app.post("/v1/finetune", noFinetune);
    app.get("/v1/finetune/:id", noFinetune);
    app.get("/v1/finetune/:id/loss.png", noFinetune);
  }
  registerFiles(app, registry);
  registerStatic(app);

  let port = cfg.port;
  try {
    // A wrong bucket, endpoint or key stops the server before it listens, not every job later.
    await objectStore?.check();
    // A deep accept backlog: bursts of connections (a thousand clients at once) are not refused.
    await app.listen({ host: cfg.host, port: cfg.port, backlog: 4096 });
    const addr = app.server.address();
    port = typeof addr === "object" && addr ? addr.port : cfg.port;
    const shownHost = cfg.host === "0.0.0.0" || cfg.host === "::" ? "127.0.0.1" : cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host;
    listenUrl = `http://${shownHost}:${port}`;
    // After listen, so results recorded by the first sweep link to the right address.
    await queues.redis?.start(cfg.models.map((m) => m.id));
  } catch (e) {
    await app.close();
    await queues.redis?.close();
    await executor?.close();
    store.close();
    throw e;
  }
  if (cfg.log) log(`input decode budget ${budgetPlan.why}`);
  queues.local?.start();
  queues.provider?.start();
  finetuner?.queue.start();
  webhooks.start();

  let closing: Promise<{ clean: boolean }> | null = null;
  const shutdown = () => closing ??= (async () => {
    streams.closeAll();
    await app.close();
    // Running jobs are cancelled at their next check and re-queued; past the deadline they are re-queued regardless.
    const deadline = Date.now() + cfg.shutdownTimeoutMs;
    const localStopped = (await queues.local?.close(cfg.shutdownTimeoutMs)) ?? true;
    await queues.provider?.close(Math.max(0, deadline - Date.now()));
    // The training child saves a checkpoint and exits; past the deadline the job is re-queued anyway and resumes from a checkpoint.
    await finetuner?.close(Math.max(0, deadline - Date.now()));
    // Terminating a thread inside ONNX Runtime aborts the process: a thread that did not stop is left to the exit.
    if (localStopped) await executor?.close();
    else executor?.abandon();
    // A thread replaced inside a long native call (its job was answered and re-queued) ends when the call
    // returns: wait for it until the deadline; past it, the process must end by the signal (see flux2 serve).
    let stuckThreads = 0;
    if (executor?.stuckThreads) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([executor.retired(), new Promise((r) => { timer = setTimeout(r, Math.max(0, deadline - Date.now())); })]);
      clearTimeout(timer);
      stuckThreads = executor.stuckThreads;
    }
    await queues.redis?.close();
    await webhooks.close();
    store.close();
    return { clean: localStopped && stuckThreads === 0 };
  })();
  return {
    app, url: listenUrl, port, store, keysRequired, health, budget, streams, events, executor, routes, shutdown,
    close: () => shutdown().then(() => undefined),
  };
}

/**
 * Open the job database and image folder and check they take writes. A data
 * folder that cannot be written (full, read-only, no permission) stops the
 * start with a message naming the path and what to do: the server never
 * listens, and never says "ok", on storage that cannot hold a job.
 */
function openStorage(cfg: ServerConfig, log: (s: string) => void): { store: JobStore; images: ImageStore; health: StorageHealth } {
  const dbPath = path.join(cfg.dataDir, "flux2.db");
  let store: JobStore | undefined;
  try {
    makeDataDir(cfg.dataDir);
    store = new JobStore(cfg.dataDir);
    const images = new ImageStore(path.join(cfg.dataDir, "images"));
    const health = new StorageHealth(cfg.dataDir, () => store!.probeWrite(), images.root, cfg.minFreeBytes, log);
    const h = health.probe();
    if (!h.ok) throw new Error(h.detail);
    return { store, images, health };
  } catch (e) {
    store?.close();
    const reason = storageFault(e, dbPath)?.message ?? (e as Error).message;
    // At start-up no job was accepted yet: drop the "retry" advice meant for clients.
    throw new Error(`cannot use the data folder ${cfg.dataDir}: ${reason.replace(/ (Jobs already accepted|Retry in).*$/, "")}`);
  }
}
