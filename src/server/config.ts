// Server settings with their defaults. The CLI (src/cli/serve.ts) fills these
// from flags; tests build them directly.

import * as os from "node:os";
import * as path from "node:path";
import type { ModerationConfig } from "../moderation/config.js";
import type { S3Settings } from "./s3_images.js";

export interface ModelSpec {
  /** API model id, e.g. flux-2-klein-4b (POST /v1/<id>). */
  id: string;
  /** Checkpoint folder; the variant comes from the folder. */
  dir: string;
}

export interface ServerConfig {
  host: string;
  port: number;
  /** SQLite database and content-addressed image store live here. */
  dataDir: string;
  models: ModelSpec[];
  /** redis://host:port: jobs of local models go to BullMQ workers instead of this process. */
  queue?: string;
  /** With queue: images travel between server and workers through this S3-compatible bucket instead of Redis. */
  store?: S3Settings;
  /** Require x-key even on loopback (always required on other addresses). */
  requireKeys: boolean;
  bflKey?: string;
  bflBaseUrl: string;
  /** Queued + running jobs one API key may have (BFL allows 24). 0: no limit. */
  maxActivePerKey: number;
  /** Queued jobs the whole server accepts before answering 429. */
  maxQueued: number;
  /** Largest request body in bytes (413 beyond). */
  bodyLimit: number;
  /** Decoded-pixel cap for input images (decompression-bomb guard). */
  maxInputPixels: number;
  /** Decoded-pixel budget over all input images of one request. */
  maxRequestPixels: number;
  /** Server-wide bytes for decoding input images at submit; default derived from the models' memory plan (src/server/budget.ts). */
  memoryBudget?: number;
  /** Time to receive a whole request (headers and body); 408 beyond. */
  requestTimeoutMs: number;
  /** Time to receive a request's headers. */
  headersTimeoutMs: number;
  /** An idle kept-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic at all (no request in progress, or a stalled one) is closed after this. */
  idleTimeoutMs: number;
  /** Open event streams allowed per job, and per API key (or per client address without keys). */
  maxStreamsPerJob: number;
  maxStreamsPerKey: number;
  /** An event stream whose unsent bytes pass this is closed (a reader too slow to keep up). */
  streamBufferBytes: number;
  /** Submits are refused (503) while the data folder's disk has less free space than this. */
  minFreeBytes: number;
  /** A job whose result could not be stored (a full disk) runs again after this. */
  faultRetryMs: number;
  /** On SIGTERM: how long a running job may take to stop before the process exits anyway (it is re-queued either way). */
  shutdownTimeoutMs: number;
  /** A cancelled job whose thread does not stop within this (it is inside one long native call) gets its thread replaced. */
  cancelGraceMs: number;
  /** Let URL inputs and webhooks reach loopback / private / link-local addresses. */
  allowPrivateUrls: boolean;
  urlTimeoutMs: number;
  urlMaxBytes: number;
  /** Base of the URLs in results and webhooks; default: from the request's Host (or the listen address). */
  publicUrl?: string;
  /** A running job's lease; a job whose lease lapses (its process died) is retried or errored. */
  leaseMs: number;
  /** Runs a job gets in all (the first plus retries after interruptions). */
  maxAttempts: number;
  webhookMaxAttempts: number;
  webhookBaseDelayMs: number;
  webhookTimeoutMs: number;
  /** Provider polling interval (BFL recommends about 0.5 s). */
  providerPollMs: number;
  /** First delay before resubmitting to a provider that answered 429 / 5xx (doubles each time). */
  providerBackoffMs: number;
  /** ONNX Runtime intra-op threads for local generation (default: ORT's choice). */
  threads?: number;
  /** Log one line per request to stderr. */
  log: boolean;
  /** Folder of LoRA files; a request's `loras[].name` is a file name (without .safetensors) in it. */
  loraDir?: string;
  /** Browser origins (scheme://host[:port]) that may call the API from another page (--cors); none by default. */
  corsOrigins?: string[];
  /** Invisible watermark on generated images (src/provenance/); off with --no-watermark. */
  watermark: boolean;
  /** Prompt and image checks (--moderation FILE, src/moderation/); undefined: none, said at start-up and in /v1/models. */
  moderation?: ModerationConfig;
  /** Longest prompt_upsampling rewrite in tokens (default 512, as diffusers). */
  upsampleTokens?: number;
}

/** Where jobs and images are kept when --data is not given: $FLUX2_DATA, else XDG data home. */
export function defaultDataDir(): string {
  if (process.env.FLUX2_DATA) return process.env.FLUX2_DATA;
  const xdg = process.env.XDG_DATA_HOME || path.join(os.homedir(), ".local", "share");
  return path.join(xdg, "flux2ts");
}

export function defaultConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return {
    host: "127.0.0.1",
    port: 8080,
    dataDir: defaultDataDir(),
    models: [],
    requireKeys: false,
    bflKey: process.env.BFL_API_KEY || undefined,
    bflBaseUrl: process.env.BFL_BASE_URL || "https://api.bfl.ai",
    maxActivePerKey: 24,
    maxQueued: 10_000,
    bodyLimit: 64 * 1024 * 1024,
    maxInputPixels: 64 * 1024 * 1024,
    maxRequestPixels: 64 * 1024 * 1024,
    requestTimeoutMs: 60_000,
    headersTimeoutMs: 10_000,
    keepAliveTimeoutMs: 5_000,
    idleTimeoutMs: 60_000,
    maxStreamsPerJob: 16,
    maxStreamsPerKey: 32,
    streamBufferBytes: 1024 * 1024,
    shutdownTimeoutMs: 10_000,
    cancelGraceMs: 2_000,
    minFreeBytes: 64 * 1024 * 1024,
    faultRetryMs: 30_000,
    allowPrivateUrls: false,
    urlTimeoutMs: 15_000,
    urlMaxBytes: 50 * 1024 * 1024,
    leaseMs: 30_000,
    maxAttempts: 2,
    webhookMaxAttempts: 8,
    webhookBaseDelayMs: 1_000,
    webhookTimeoutMs: 10_000,
    providerPollMs: 500,
    providerBackoffMs: 1_000,
    log: false,
    watermark: true,
    ...overrides,
  };
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1"]);

/** Listening only on loopback? (Anything else requires API keys.) */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Keys are required with --require-keys or when listening beyond loopback. */
export function keysRequired(cfg: Pick<ServerConfig, "host" | "requireKeys">): boolean {
  return cfg.requireKeys || !isLoopbackHost(cfg.host);
}
