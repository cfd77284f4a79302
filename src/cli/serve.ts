// flux2 serve: the HTTP API (a superset of Black Forest Labs' API).

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_ID, defaultModelPath, requireDefaultModel } from "../pipeline/default_model.js";
import { defaultConfig, defaultDataDir, isLoopbackHost, type ServerConfig } from "../server/config.js";
import { startServer } from "../server/app.js";
import { redisOptions } from "../server/redis_conn.js";
import { parseS3Url, s3ClientConfig, type S3Settings } from "../server/s3_images.js";
import { parseModelSpec } from "../server/models.js";
import { SIGNATURE_HEADER } from "../server/webhooks.js";
import { describeModeration, loadModerationConfig } from "../moderation/config.js";

const HELP = `usage: flux2 serve [--port P] [--host H] [--model ID=DIR ...] [--data DIR]
                   [--queue redis://HOST:PORT] [--require-keys] [--bfl-key K] [options]

Serves FLUX.2 over HTTP with Black Forest Labs' API (POST /v1/<model>, then
poll GET /v1/get_result?id=...) plus jobs, cancellation, server-sent progress
events, webhooks and an OpenAPI document at /openapi.json. See docs/server.md.

Listening:
  --port P                port (default 8080; 0 picks a free one)
  --host H                address (default 127.0.0.1). On anything but loopback
                          every request needs an API key (x-key header)
  --public-url URL        base of the URLs in results and webhooks, e.g.
                          https://flux.example.com (default: the listen address;
                          the request's Host header is never used)

Models:
  --model ID=DIR          serve the checkpoint folder DIR as model ID, e.g.
                          flux-2-klein-4b=/models/FLUX.2-klein-4B (repeatable;
                          the variant, steps/guidance and size limits come from
                          the folder). Known ids: flux-2-klein-4b, flux-2-klein-9b,
                          flux-2-klein-base-4b, flux-2-klein-base-9b, flux-2-dev.
                          Default (without --queue): the bundled model as
                          ${DEFAULT_MODEL_ID} (models/flux2-mini in the package, or
                          the folder in $FLUX2_DEFAULT_MODEL)
  --bfl-key K             Black Forest Labs API key: enables flux-2-pro, flux-2-max
                          and flux-2-flex (default: $BFL_API_KEY)
  --bfl-url URL           BFL API base URL (default https://api.bfl.ai or $BFL_BASE_URL)
  --threads N             ONNX Runtime threads for local generation (default: all cores)

Storage and queue:
  --data DIR              jobs database (SQLite) and image store (default
                          $FLUX2_DATA, else $XDG_DATA_HOME/flux2ts, i.e.
                          ${defaultDataDir()})
  --queue URL             run local models on \`flux2 worker\` processes through
                          Redis (BullMQ) instead of in this process. URL:
                          redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://...
                          (TLS) or redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]
                          (rediss+sentinel:// for TLS); the password may instead
                          be in $FLUX2_REDIS_PASSWORD. Reconnects with backoff
  --store s3://BUCKET[/PREFIX]
                          with --queue: images travel between this server and
                          the workers through this S3-compatible bucket instead
                          of Redis (give the workers the same --store). Endpoint,
                          region and credentials: the standard AWS variables
                          (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID,
                          AWS_SECRET_ACCESS_KEY, AWS_PROFILE ...) or the flags below
  --s3-endpoint URL       an S3-compatible server (MinIO, Ceph, ...); path-style
  --s3-region R           the bucket's region (default $AWS_REGION; us-east-1
                          with a custom endpoint)
  --lease S               seconds before a silent running job counts as
                          interrupted (default 30)
  --max-attempts N        runs a job gets when interrupted by crashes (default 2:
                          retried once, then Error)

Keys and limits:
  --require-keys          require an API key even on loopback (manage keys with
                          \`flux2 keys add|list|revoke\`). Without it, a key the
                          server does not know (a BFL client's own key) is
                          ignored: served as anonymous, with an x-flux2-warning
  --max-active N          queued + running tasks per API key (default 24, as BFL;
                          0 = no limit); 429 beyond
  --max-queue N           queued tasks in all before 429 (default 10000)
  --body-limit MB         largest request body (default 64); 413 beyond
  --max-input-pixels N    decoded-pixel cap for input images (default 67108864)
  --lora-dir DIR          folder of LoRA .safetensors files that requests may name
                          in "loras": [{"name": FILE_NAME, "strength": 0.8}]
                          (GET /v1/loras lists them for the studio's picker)
  --cors ORIGIN           let pages from ORIGIN (e.g. https://studio.example.com)
                          call the API from the browser; repeat for more origins
  --allow-private-urls    let image URLs and webhooks reach loopback, private and
                          link-local addresses (refused by default)
  --url-timeout S         time limit for fetching an image URL (default 15)

Budgets and timeouts (see "Limits and failure modes" in docs/server.md):
  --max-request-pixels N  decoded pixels over all input images of one request
                          (default 67108864); 422 beyond
  --memory-budget MB      memory for decoding input images at submit, all
                          requests together (default: machine memory less the
                          models' planned peak less 1 GiB); 503 when in use
  --request-timeout S     time to receive a whole request (default 60); 408
  --headers-timeout S     time to receive the request headers (default 10)
  --idle-timeout S        a connection idle this long is closed (default 60)
  --max-streams-per-job N open event streams per task (default 16); 429 beyond
  --max-streams-per-key N open event streams per API key or, without keys, per
                          client address (default 32); 429 beyond
  --min-free MB           refuse submits (503) while the data folder's disk has
                          less free space than this (default 64)
  --shutdown-timeout S    on SIGTERM, how long the running job may take to stop
                          before the process exits anyway (default 10); it goes
                          back to the queue either way. A second signal exits at once

Webhooks (POST of the result JSON to webhook_url, HMAC-SHA256 of the raw body
with webhook_secret in the ${SIGNATURE_HEADER} header as sha256=<hex>):
  --webhook-attempts N    deliveries tried before giving up (default 8)
  --webhook-backoff MS    first retry delay, doubling each time (default 1000)

Moderation (docs/server.md):
  --moderation FILE       check prompts (word and regex lists) and input/output
                          images (a ViT classifier such as Falconsai's) per the
                          JSON file; flagged jobs end as "Request Moderated" or
                          "Content Moderated" with no image. Without it the server
                          says so, and refuses safety_tolerance below 2

Prompt upsampling (prompt_upsampling: true; text-to-image only):
  --upsample-tokens N     longest rewrite in tokens (default 512, as diffusers)

Provenance (docs/server.md):
  --no-watermark          do not embed the invisible watermark in generated images
                          (the EXIF/XMP "AI generated" tags are still written)

Other:
  --poll-interval MS      how often provider tasks are polled (default 500)
  --log                   one line per request on stderr
  -h, --help              this text`;

const OPTIONS = {
  port: { type: "string" }, host: { type: "string" }, "public-url": { type: "string" },
  model: { type: "string", multiple: true }, "bfl-key": { type: "string" }, "bfl-url": { type: "string" }, threads: { type: "string" },
  data: { type: "string" }, queue: { type: "string" }, store: { type: "string" }, "s3-endpoint": { type: "string" }, "s3-region": { type: "string" }, lease: { type: "string" }, "max-attempts": { type: "string" },
  "require-keys": { type: "boolean" }, "max-active": { type: "string" }, "max-queue": { type: "string" },
  "body-limit": { type: "string" }, "max-input-pixels": { type: "string" }, "allow-private-urls": { type: "boolean" }, "lora-dir": { type: "string" },
  "url-timeout": { type: "string" }, "max-request-pixels": { type: "string" }, "memory-budget": { type: "string" },
  "request-timeout": { type: "string" }, "headers-timeout": { type: "string" }, "idle-timeout": { type: "string" },
  "max-streams-per-job": { type: "string" }, "max-streams-per-key": { type: "string" }, "min-free": { type: "string" },
  "shutdown-timeout": { type: "string" }, "webhook-attempts": { type: "string" }, "webhook-backoff": { type: "string" },
  "poll-interval": { type: "string" }, log: { type: "boolean" }, help: { type: "boolean", short: "h" },
  "no-watermark": { type: "boolean" }, moderation: { type: "string" }, "upsample-tokens": { type: "string" },
  cors: { type: "string", multiple: true },
} as const;

/** --cors ORIGIN: a browser origin such as https://studio.example.com (scheme, host, optional port; nothing else). */
export function corsFlag(values: string[] | undefined): string[] | undefined {
  if (!values?.length) return undefined;
  return values.map((v) => {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      throw new Error(`--cors takes an origin such as https://studio.example.com, got "${v}"`);
    }
    if ((u.protocol !== "http:" && u.protocol !== "https:") || u.origin !== v.replace(/\/$/, "")) {
      throw new Error(`--cors takes an origin (scheme://host[:port], no path), got "${v}"; give the flag once per origin`);
    }
    return u.origin;
  });
}

/** A number flag within [lo, hi]. */
export function numFlag(v: string | undefined, name: string, lo: number, hi: number, integer = true): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < lo || n > hi) throw new Error(`--${name} must be ${integer ? "an integer" : "a number"} from ${lo} to ${hi}, got "${v}"`);
  return n;
}

/** --public-url: an absolute http(s) URL without query or fragment (a path prefix is kept). */
function publicUrlFlag(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new Error(`--public-url takes an absolute URL such as https://flux.example.com, got "${v}"`);
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || u.search || u.hash || u.username || u.password) {
    throw new Error(`--public-url must be an http(s) URL with no query, fragment or credentials, got "${v}"`);
  }
  return u.href.replace(/\/$/, "");
}

/** --store / --s3-endpoint / --s3-region → S3 settings (validated now); the S3 flags without --store are refused. */
export function s3Flags(store: string | undefined, endpoint: string | undefined, region: string | undefined): S3Settings | undefined {
  if (!store) {
    if (endpoint !== undefined || region !== undefined) throw new Error("--s3-endpoint and --s3-region go with --store s3://BUCKET[/PREFIX]");
    return undefined;
  }
  const s: S3Settings = { url: store, endpoint, region };
  parseS3Url(store);
  s3ClientConfig(s);
  return s;
}

export function serveConfig(argv: string[]): ServerConfig | null {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) return null;
  if (v.queue) redisOptions(v.queue); // a bad URL is refused now, with what to write instead
  const store = s3Flags(v.store, v["s3-endpoint"], v["s3-region"]);
  if (store && !v.queue) throw new Error("--store s3://… is where workers and the server exchange images: it needs --queue redis://… (without --queue, images stay in --data)");
  const d = defaultConfig();
  const body = numFlag(v["body-limit"], "body-limit", 1, 4096, false);
  const lease = numFlag(v.lease, "lease", 1, 86400, false);
  const urlTimeout = numFlag(v["url-timeout"], "url-timeout", 1, 600, false);
  const seconds = (name: string, lo: number, hi: number) => {
    const n = numFlag(v[name as keyof typeof v] as string | undefined, name, lo, hi, false);
    return n === undefined ? undefined : Math.round(n * 1000);
  };
  const mb = (name: string, lo: number, hi: number) => {
    const n = numFlag(v[name as keyof typeof v] as string | undefined, name, lo, hi, false);
    return n === undefined ? undefined : Math.round(n * 1024 * 1024);
  };
  const cfg = defaultConfig({
    host: v.host ?? d.host,
    port: numFlag(v.port, "port", 0, 65535) ?? d.port,
    publicUrl: publicUrlFlag(v["public-url"]),
    models: (v.model ?? []).map(parseModelSpec),
    bflKey: v["bfl-key"] ?? d.bflKey,
    bflBaseUrl: v["bfl-url"] ?? d.bflBaseUrl,
    threads: numFlag(v.threads, "threads", 1, 1024),
    dataDir: v.data ?? d.dataDir,
    queue: v.queue,
    store,
    leaseMs: lease !== undefined ? lease * 1000 : d.leaseMs,
    maxAttempts: numFlag(v["max-attempts"], "max-attempts", 1, 100) ?? d.maxAttempts,
    requireKeys: !!v["require-keys"],
    maxActivePerKey: numFlag(v["max-active"], "max-active", 0, 1_000_000) ?? d.maxActivePerKey,
    maxQueued: numFlag(v["max-queue"], "max-queue", 0, 100_000_000) ?? d.maxQueued,
    bodyLimit: body !== undefined ? Math.round(body * 1024 * 1024) : d.bodyLimit,
    maxInputPixels: numFlag(v["max-input-pixels"], "max-input-pixels", 1, 2 ** 31) ?? d.maxInputPixels,
    maxRequestPixels: numFlag(v["max-request-pixels"], "max-request-pixels", 1, 2 ** 34) ?? d.maxRequestPixels,
    memoryBudget: mb("memory-budget", 1, 1024 * 1024),
    requestTimeoutMs: seconds("request-timeout", 1, 3600) ?? d.requestTimeoutMs,
    headersTimeoutMs: seconds("headers-timeout", 1, 600) ?? d.headersTimeoutMs,
    idleTimeoutMs: seconds("idle-timeout", 1, 3600) ?? d.idleTimeoutMs,
    maxStreamsPerJob: numFlag(v["max-streams-per-job"], "max-streams-per-job", 1, 100_000) ?? d.maxStreamsPerJob,
    maxStreamsPerKey: numFlag(v["max-streams-per-key"], "max-streams-per-key", 1, 100_000) ?? d.maxStreamsPerKey,
    minFreeBytes: mb("min-free", 0, 1024 * 1024) ?? d.minFreeBytes,
    shutdownTimeoutMs: seconds("shutdown-timeout", 0, 3600) ?? d.shutdownTimeoutMs,
    allowPrivateUrls: !!v["allow-private-urls"],
    urlTimeoutMs: urlTimeout !== undefined ? urlTimeout * 1000 : d.urlTimeoutMs,
    webhookMaxAttempts: numFlag(v["webhook-attempts"], "webhook-attempts", 1, 100) ?? d.webhookMaxAttempts,
    webhookBaseDelayMs: numFlag(v["webhook-backoff"], "webhook-backoff", 1, 3_600_000) ?? d.webhookBaseDelayMs,
    providerPollMs: numFlag(v["poll-interval"], "poll-interval", 1, 60_000) ?? d.providerPollMs,
    log: !!v.log,
    loraDir: v["lora-dir"],
    corsOrigins: corsFlag(v.cors),
    watermark: !v["no-watermark"],
    moderation: v.moderation ? loadModerationConfig(v.moderation) : undefined,
    upsampleTokens: numFlag(v["upsample-tokens"], "upsample-tokens", 1, 4096),
  });
  // No --model: serve the bundled default as flux2-mini (the studio lists it). Not with --queue,
  // where workers bring their own models; not when it is missing but a BFL key gives models.
  if (cfg.models.length === 0 && !cfg.queue && !(cfg.bflKey && !fs.existsSync(path.join(defaultModelPath().path, "model_index.json")))) {
    cfg.models = [{ id: DEFAULT_MODEL_ID, dir: requireDefaultModel() }];
  }
  return cfg;
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(sig);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

/**
 * End the process by the signal's default action. process.exit() would wait
 * for the generation thread, and a thread inside a long ONNX Runtime call
 * cannot be stopped (terminating it waits for the call to return); the kernel
 * ends the process at once. Everything worth keeping is in SQLite already.
 */
function dieBy(sig: string): never {
  process.removeAllListeners(sig);
  process.kill(process.pid, sig as NodeJS.Signals);
  // The signal is delivered asynchronously: wait for it here.
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}

export async function runServeCommand(argv: string[]): Promise<number> {
  const cfg = serveConfig(argv);
  if (!cfg) {
    console.log(HELP);
    return 0;
  }
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const stopped = untilSignal();
  const server = await startServer(cfg, log);
  const models = cfg.models.map((m) => m.id).concat(cfg.bflKey ? ["flux-2-pro", "flux-2-max", "flux-2-flex"] : []);
  console.log(`flux2 serve: listening on ${server.url} (data ${cfg.dataDir}, queue ${cfg.queue ?? "embedded"}${cfg.store ? `, images through ${cfg.store.url}` : ""}, models ${models.join(", ") || "none"})`);
  if (!cfg.publicUrl && (cfg.host === "0.0.0.0" || cfg.host === "::")) {
    log(`note: result and polling URLs start with ${server.url}; give --public-url with the address clients use to reach this server`);
  }
  if (cfg.models.length) log(`flux2 serve: ${describeModeration(cfg.moderation)}`);
  if (server.keysRequired && server.store.keyCount() === 0) {
    log(`warning: API keys are required ${isLoopbackHost(cfg.host) ? "(--require-keys)" : `(listening on ${cfg.host})`} but none exist: create one with flux2 keys add --data ${cfg.dataDir}`);
  }
  const sig = await stopped;
  log(`flux2 serve: ${sig}, shutting down within ${cfg.shutdownTimeoutMs / 1000} s (no new jobs; running jobs go back to the queue; a second signal exits at once)`);
  const again = (second: string) => {
    log(`flux2 serve: second signal (${second}), exiting now (a running job is re-queued at the next start)`);
    dieBy(second);
  };
  process.once("SIGINT", again);
  process.once("SIGTERM", again);
  const { clean } = await server.shutdown();
  if (!clean) {
    // A job stuck in an uninterruptible ONNX Runtime call: it is back in the queue already.
    log(`flux2 serve: a running job did not stop within ${cfg.shutdownTimeoutMs / 1000} s; it was re-queued, exiting`);
    dieBy(sig);
  }
  return 0;
}
