// Fine-tuning as a server job: POST /v1/finetune takes captioned images and
// training settings, writes them as a dataset folder and queues a job of kind
// "finetune" on the server's durable SQLite queue (the same store, claim/lease,
// recovery, get_result polling and webhooks as generation). The job runs
// `flux2 train` in a child process (src/cli/finetune_child.ts: a front-end entry point, spawned by path) over DATA/finetune/ID/:
//
//   data/NNN.png + NNN.txt   the images and captions as submitted
//   checkpoints/             resumable checkpoints (every `checkpoint_every` steps)
//   samples/, loss.png       written by the trainer while it runs
//   status.json              step, losses, ETA, stored sample images (this file)
//
// Progress (step, loss, ETA) comes from the trainer's --json lines. A job that
// was running when the server stopped — gracefully (the child saves a checkpoint
// on SIGINT) or not (its lease lapses; the child, seeing its parent gone, saves
// and exits) — goes back to the queue and resumes from its newest checkpoint,
// not from step 0. When training ends, the LoRA is copied into --lora-dir, where
// generation requests (`loras: [{name}]`) and GET /v1/loras find it.

import { randomInt, randomUUID } from "node:crypto";
import { fork } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import sharp from "sharp";
import { z } from "zod";
import { ImageInput } from "../api/request.js";
import { STEPS_RANGE } from "../pipeline/variants.js";
import type { ServerConfig } from "./config.js";
import { ApiError, fieldError, unprocessable, zodIssues } from "./errors.js";
import type { JobEvents } from "./events.js";
import { checkResolves, type UrlPolicy } from "../api/fetch_image.js";
import type { ImageStore } from "./images.js";
import { imageValueBytes } from "../api/image_input.js";
import type { Lifecycle } from "./lifecycle.js";
import type { ModelRegistry } from "./models.js";
import { Interrupted, LocalQueue, type JobRunContext, type RunResult } from "./queue_local.js";
import type { JobResult, JobRow, JobStore } from "./store.js";
import { BFL_STATUS, imageUrl, TERMINAL } from "./views.js";
import { listCheckpoints } from "../train/loop.js";

const LORA_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const FinetuneRequest = z.object({
  /** A local model id of this server (GET /v1/models); default: the first local klein-base model, else the first local model. */
  base_model: z.string().min(1).optional(),
  images: z.array(z.object({
    image: ImageInput,
    caption: z.string().max(4000).default("").describe("empty: the trigger word alone"),
  }).strict()).min(1).max(500),
  trigger_word: z.string().regex(/^[^\s,]{1,64}$/, "one word (no spaces or commas), at most 64 characters").optional(),
  /** The LoRA's file name in --lora-dir (without .safetensors); default finetune-<first 8 characters of the job id>. */
  name: z.string().regex(LORA_NAME, "a plain file name: letters, digits, . _ -").optional(),
  steps: z.number().int().min(1).max(100_000).default(1000),
  rank: z.number().int().min(1).max(256).default(16),
  alpha: z.number().positive().max(4096).optional(),
  learning_rate: z.number().positive().max(1).default(1e-4),
  /** Export the exponential moving average of the LoRA weights with this decay (flux2 train --ema-decay). */
  ema_decay: z.number().gt(0).lt(1).optional(),
  resolution: z.number().int().min(64).max(2048).default(512),
  batch_size: z.number().int().min(1).max(16).default(1),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  /** A resumable checkpoint every N steps: what a restart can lose at most. */
  checkpoint_every: z.number().int().min(1).max(100_000).default(50),
  /** Sample images every N steps (0: only at the end). */
  sample_every: z.number().int().min(0).max(100_000).default(0),
  sample_prompts: z.array(z.string().min(1).max(2000)).max(4).optional(),
  sample_steps: z.number().int().min(STEPS_RANGE.min).max(STEPS_RANGE.max).optional(),
  max_sequence_length: z.number().int().min(1).max(4096).optional(),
  webhook_url: z.string().url().optional(),
  webhook_secret: z.string().max(512).optional(),
}).strict();

export type FinetuneRequest = z.infer<typeof FinetuneRequest>;

/** What the job row stores: the settings, the resolved base model folder and the LoRA name (images live in the run folder). */
type StoredRequest = Omit<FinetuneRequest, "images"> & { name: string; seed: number; image_count: number; base_model: string };

/** What status.json holds (and GET /v1/finetune/:id shows). */
interface FinetuneStatus {
  step: number;
  steps: number;
  losses: number[];
  lr: number | null;
  eta_s: number | null;
  /** Seconds per step over this attempt. */
  seconds_per_step: number | null;
  /** Image-store names of the sample images so far, oldest first, with the step each shows. */
  samples: { step: number; image: string }[];
  /** The step the last attempt resumed from (null: it started at step 0). */
  resumed_from: number | null;
  attempts: number;
}

export interface FinetuneDeps {
  cfg: ServerConfig;
  store: JobStore;
  images: ImageStore;
  registry: ModelRegistry;
  lifecycle: Lifecycle;
  events: JobEvents;
  baseUrl: () => string;
  onFault: (what: string, e: unknown) => void;
  log: (s: string) => void;
}

/** How often a running job looks whether it was cancelled (DELETE /v1/jobs/ID). */
const CANCEL_POLL_MS = 250;
/** How long a new attempt waits for a previous attempt's child (after a crash) to save and exit before it is killed. */
const ORPHAN_WAIT_MS = 60_000;

export class Finetuner {
  readonly root: string;
  readonly queue: LocalQueue;

  constructor(private d: FinetuneDeps) {
    this.root = path.join(d.cfg.dataDir, "finetune");
    this.queue = new LocalQueue(d.store, d.lifecycle, d.events, {
      kind: "finetune", concurrency: 1, leaseMs: d.cfg.leaseMs, maxAttempts: Math.max(3, d.cfg.maxAttempts), onFault: d.onFault, faultRetryMs: d.cfg.faultRetryMs,
    }, (ctx) => this.run(ctx));
  }

  runDir(id: string): string {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new ApiError(404, "Task not found");
    return path.join(this.root, id);
  }

  private baseModel(id: string | undefined) {
    const local = this.d.registry.list().filter((m) => m.kind === "local" && m.available && m.dir);
    const m = id ? local.find((x) => x.id === id) : local.find((x) => x.variant === "klein-base") ?? local[0];
    if (!m) throw id ? fieldError("base_model", `no local model "${id}" on this server (it has ${local.map((x) => x.id).join(", ") || "none"})`) : new ApiError(503, "this server has no local model to fine-tune: start it with --model");
    return m;
  }

  /** POST /v1/finetune: validate, write the dataset, queue the job. */
  async submit(body: unknown, keyId: string | null): Promise<string> {
    const parsed = FinetuneRequest.safeParse(body);
    if (!parsed.success) throw unprocessable(zodIssues(parsed.error.issues));
    const r = parsed.data;
    const loraDir = this.d.cfg.loraDir;
    if (!loraDir) throw new ApiError(503, "this server has no LoRA folder for the trained LoRA: start it with --lora-dir DIR");
    const model = this.baseModel(r.base_model);
    const id = randomUUID();
    const name = r.name ?? `finetune-${id.slice(0, 8)}`;
    if (fs.existsSync(path.join(loraDir, `${name}.safetensors`))) throw new ApiError(409, `a LoRA named "${name}" already exists in the server's LoRA folder: choose another name`);
    if (this.activeNames().has(name)) throw new ApiError(409, `a fine-tuning job that will write the LoRA "${name}" is already queued or running: choose another name`);
    const policy: UrlPolicy = { allowPrivate: this.d.cfg.allowPrivateUrls, timeoutMs: this.d.cfg.urlTimeoutMs, maxBytes: this.d.cfg.urlMaxBytes };
    if (r.webhook_url) await checkResolves(r.webhook_url, policy).catch((e: Error) => { throw fieldError("webhook_url", e.message, "url_forbidden"); });

    // The dataset: every image decoded now (a bad one is refused naming it, not found mid-run), stored as PNG.
    const dir = this.runDir(id);
    const data = path.join(dir, "data");
    fs.mkdirSync(data, { recursive: true });
    try {
      for (const [i, item] of r.images.entries()) {
        const field = ["images", i, "image"];
        let bytes: Buffer;
        try {
          bytes = await imageValueBytes(item.image, { policy });
        } catch (e) {
          throw fieldError(field, `cannot read the image: ${(e as Error).message}`, "image_invalid");
        }
        const png = await sharp(bytes, { limitInputPixels: this.d.cfg.maxInputPixels }).rotate().png().toBuffer()
          .catch((e: Error) => { throw fieldError(field, `not a decodable image: ${e.message}`, "image_invalid"); });
        const stem = String(i).padStart(4, "0");
        fs.writeFileSync(path.join(data, `${stem}.png`), png);
        fs.writeFileSync(path.join(data, `${stem}.txt`), item.caption);
      }
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const { images: _images, ...settings } = r;
    const stored: StoredRequest = { ...settings, base_model: model.id, name, seed: r.seed ?? randomInt(0, 2 ** 32 - 1), image_count: r.images.length };
    const verdict = this.d.store.submit({ id, model: model.id, kind: "finetune", key_id: keyId, request: JSON.stringify(stored) }, { keyMax: 0, queueMax: this.d.cfg.maxQueued });
    if (verdict !== "ok") {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new ApiError(429, `The server's queue is full (${this.d.cfg.maxQueued} tasks waiting): try again later`, { "retry-after": "10" });
    }
    this.queue.notify();
    return id;
  }

  /** LoRA names that queued or running fine-tuning jobs will write. */
  private activeNames(): Set<string> {
    const out = new Set<string>();
    for (const row of this.d.store.list({ keyId: null, limit: 1000 })) {
      if (row.kind === "finetune" && !TERMINAL.includes(row.state)) out.add((JSON.parse(row.request) as StoredRequest).name);
    }
    return out;
  }

  readStatus(id: string): FinetuneStatus | null {
    const f = path.join(this.runDir(id), "status.json");
    return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) as FinetuneStatus : null;
  }

  private writeStatus(id: string, s: FinetuneStatus): void {
    const f = path.join(this.runDir(id), "status.json");
    fs.writeFileSync(`${f}.tmp`, JSON.stringify(s));
    fs.renameSync(`${f}.tmp`, f);
  }

  /** Wait for a previous attempt's child (the server crashed under it) to save and exit; kill it past ORPHAN_WAIT_MS. */
  private async awaitOrphan(dir: string): Promise<void> {
    const pidFile = path.join(dir, "child.pid");
    if (!fs.existsSync(pidFile)) return;
    const pid = Number(fs.readFileSync(pidFile, "utf8"));
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const end = Date.now() + ORPHAN_WAIT_MS;
    while (pid > 0 && alive() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    if (pid > 0 && alive()) process.kill(pid, "SIGKILL");
    fs.rmSync(pidFile, { force: true });
  }

  private async run(ctx: JobRunContext): Promise<RunResult> {
    const job = ctx.job;
    const req = JSON.parse(job.request) as StoredRequest;
    const dir = this.runDir(job.id);
    const model = this.d.registry.get(req.base_model);
    if (!model?.dir) return { state: "error", error: `the base model ${req.base_model} is no longer served here: restart the server with it` };
    await this.awaitOrphan(dir);
    const resume = listCheckpoints(path.join(dir, "checkpoints")).length > 0 && fs.existsSync(path.join(dir, "train.json"));
    const args = [
      "--model", model.dir, "--data", path.join(dir, "data"), "--out", dir, "--json",
      "--steps", String(req.steps), "--rank", String(req.rank), "--alpha", String(req.alpha ?? req.rank), "--lr", String(req.learning_rate),
      "--resolution", String(req.resolution), "--batch-size", String(req.batch_size), "--seed", String(req.seed),
      "--save-every", String(req.checkpoint_every), "--keep-checkpoints", "2", "--sample-every", String(req.sample_every),
      ...(req.trigger_word ? ["--trigger", req.trigger_word] : []),
      ...(req.sample_prompts ?? []).flatMap((p) => ["--sample-prompt", p]),
      ...(req.sample_steps ? ["--sample-steps", String(req.sample_steps)] : []),
      ...(req.max_sequence_length ? ["--max-sequence-length", String(req.max_sequence_length)] : []),
      ...(req.ema_decay !== undefined ? ["--ema-decay", String(req.ema_decay)] : []),
      ...(resume ? ["--resume", dir] : []),
    ];
    const before = this.readStatus(job.id);
    const status: FinetuneStatus = {
      step: before?.step ?? 0, steps: req.steps, losses: before?.losses ?? [], lr: null, eta_s: null, seconds_per_step: null,
      samples: before?.samples ?? [], resumed_from: null, attempts: (before?.attempts ?? 0) + 1,
    };
    this.writeStatus(job.id, status);

    const child = fork(new URL("../cli/finetune_child.js", import.meta.url), args, { silent: true, execArgv: [] });
    fs.writeFileSync(path.join(dir, "child.pid"), String(child.pid ?? 0));
    const stderr: string[] = [];
    let final: Record<string, unknown> | null = null;
    let attemptStart: { step: number; at: number } | null = null;
    let shuttingDown = false, cancelled = false;
    // Status writes in order, one at a time (a sample image may take a moment to store).
    let writes: Promise<void> = Promise.resolve();

    const onLine = (line: string) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof msg.step === "number" && typeof msg.loss === "number") {
        const now = Date.now();
        attemptStart ??= { step: msg.step - 1, at: now };
        status.step = msg.step;
        status.losses = [...status.losses.slice(0, msg.step - 1), msg.loss];
        status.lr = typeof msg.lr === "number" ? msg.lr : null;
        const done = msg.step - attemptStart.step;
        // The first step of an attempt includes loading the models: timing starts after it.
        if (done >= 2) {
          status.seconds_per_step = (now - attemptStart.at) / 1000 / (done - 1);
          status.eta_s = status.seconds_per_step * (req.steps - msg.step);
        }
        if (done === 1) attemptStart.at = now;
        writes = writes.then(() => this.collectSamples(dir, status)).then(() => this.writeStatus(job.id, status)).catch((e) => this.d.onFault(`fine-tuning status of ${job.id}`, e));
        ctx.progress({ step: status.step, steps: req.steps, fraction: status.step / req.steps, ...({ loss: msg.loss, eta_s: status.eta_s } as object) });
      } else if (typeof msg.status === "string") {
        final = msg;
      }
    };
    const lines = (stream: NodeJS.ReadableStream | null, fn: (l: string) => void) => {
      let buf = "";
      stream?.on("data", (c: Buffer) => {
        buf += c.toString();
        const parts = buf.split("\n");
        buf = parts.pop()!;
        parts.forEach(fn);
      });
    };
    lines(child.stdout, onLine);
    lines(child.stderr, (l) => {
      stderr.push(l);
      if (stderr.length > 50) stderr.shift();
      const m = /resumed from .* at step (\d+)/.exec(l);
      if (m) {
        status.resumed_from = Number(m[1]);
        status.step = status.resumed_from;
        status.losses = status.losses.slice(0, status.resumed_from);
        this.writeStatus(job.id, status);
      }
    });

    // Shutdown: SIGINT makes the trainer finish its step and save a checkpoint. Cancel: kill at once.
    const onAbort = () => {
      let row: JobRow | undefined;
      try {
        row = this.d.store.get(job.id);
      } catch {
        row = undefined; // a closed store: treat as a shutdown
      }
      if (row?.state === "cancelled") {
        cancelled = true;
        child.kill("SIGKILL");
      } else {
        shuttingDown = true;
        child.kill("SIGINT");
      }
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    const poll = setInterval(() => {
      try {
        if (this.d.store.get(job.id)?.state === "cancelled") onAbort();
      } catch {
        // The store is closed (a shutdown that passed its deadline): the child got SIGINT and stops by itself.
        clearInterval(poll);
      }
    }, CANCEL_POLL_MS);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    clearInterval(poll);
    ctx.signal.removeEventListener("abort", onAbort);
    await writes;
    await new Promise((r) => setImmediate(r)); // the last stdout chunk
    fs.rmSync(path.join(dir, "child.pid"), { force: true });
    this.writeStatus(job.id, status);
    const out = final as Record<string, unknown> | null;

    if (cancelled) return { state: "cancelled", error: "cancelled" };
    if (shuttingDown || out?.status === "interrupted" || exit.signal) {
      throw new Interrupted(shuttingDown ? "the server is shutting down" : `the trainer stopped (${exit.signal ?? "interrupted"}); it resumes from its last checkpoint`);
    }
    if (exit.code !== 0 || out?.status !== "done") {
      const why = out?.status === "nan" ? String(out.message) : stderr.filter((l) => /flux2 train:|error/i.test(l)).slice(-3).join(" ") || stderr.slice(-3).join(" ");
      return { state: "error", error: `training failed (exit ${exit.code}): ${why}` };
    }
    await this.collectSamples(dir, status);
    this.writeStatus(job.id, status);
    // Into the LoRA folder, atomically: the picker never sees half a file.
    const loraDir = this.d.cfg.loraDir!;
    fs.mkdirSync(loraDir, { recursive: true });
    const target = path.join(loraDir, `${req.name}.safetensors`);
    fs.copyFileSync(String(out.lora), `${target}.${job.id}.tmp`);
    fs.renameSync(`${target}.${job.id}.tmp`, target);
    const last = status.samples.filter((s) => s.step === status.step);
    const result: JobResult = {
      images: last.map((s) => s.image), width: req.resolution, height: req.resolution, seed: req.seed, steps: status.step, guidance: null,
      started_at: job.started_at ?? Date.now(), ended_at: Date.now(), by: "local",
      finetune: { lora: req.name, steps: status.step, final_loss: status.losses.at(-1) ?? null, resumed_from: status.resumed_from },
    };
    return { state: "ready", result };
  }

  /** New sample images of the trainer (samples/step-NNNNNN-I.png) into the image store. */
  private async collectSamples(dir: string, status: FinetuneStatus): Promise<void> {
    const sd = path.join(dir, "samples");
    if (!fs.existsSync(sd)) return;
    const seen = new Set(status.samples.map((s) => s.image));
    for (const f of fs.readdirSync(sd).filter((n) => /^step-\d+-\d+\.png$/.test(n)).sort()) {
      const name = await this.d.images.put(fs.readFileSync(path.join(sd, f)), "png");
      if (!seen.has(name)) {
        seen.add(name);
        status.samples.push({ step: Number(/^step-(\d+)/.exec(f)![1]), image: name });
      }
    }
  }

  /** GET /v1/finetune/:id. */
  view(row: JobRow) {
    const req = JSON.parse(row.request) as StoredRequest;
    const st = this.readStatus(row.id);
    const base = this.d.baseUrl();
    const live = row.state === "running" ? this.d.events.latest(row.id) : undefined;
    const result = row.result ? JSON.parse(row.result) as JobResult : null;
    return {
      id: row.id, status: BFL_STATUS[row.state], state: row.state, base_model: req.base_model, name: req.name,
      settings: { steps: req.steps, rank: req.rank, alpha: req.alpha ?? req.rank, learning_rate: req.learning_rate, ema_decay: req.ema_decay ?? null, resolution: req.resolution, batch_size: req.batch_size,
        seed: req.seed, trigger_word: req.trigger_word ?? null, checkpoint_every: req.checkpoint_every, sample_every: req.sample_every, images: req.image_count },
      step: st?.step ?? 0, steps: req.steps, progress: row.state === "ready" ? 1 : live ? live.fraction : (st?.step ?? 0) / req.steps,
      loss: st?.losses.at(-1) ?? null, losses: st?.losses ?? [], eta_s: row.state === "running" ? st?.eta_s ?? null : null, seconds_per_step: st?.seconds_per_step ?? null,
      samples: (st?.samples ?? []).map((s) => ({ step: s.step, url: imageUrl(base, s.image) })),
      loss_curve: st && fs.existsSync(path.join(this.runDir(row.id), "loss.png")) ? `${base}/v1/finetune/${row.id}/loss.png` : null,
      resumed_from: st?.resumed_from ?? null, attempts: row.attempts,
      lora: row.state === "ready" ? result?.finetune?.lora ?? req.name : null,
      error: row.state === "ready" ? null : row.error,
      created_at: row.created_at / 1000, started_at: row.started_at === null ? null : row.started_at / 1000, ended_at: row.ended_at === null ? null : row.ended_at / 1000,
      polling_url: `${base}/v1/get_result?id=${row.id}`,
    };
  }

  register(app: FastifyInstance): void {
    const own = (req: FastifyRequest<{ Params: { id: string } }>): JobRow => {
      const who = req.principal;
      if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
      const row = this.d.store.get(req.params.id);
      if (!row || row.kind !== "finetune" || (who.keyId && row.key_id !== who.keyId)) throw new ApiError(404, "Fine-tuning task not found");
      return row;
    };
    app.post("/v1/finetune", async (req) => {
      const id = await this.submit(req.body, req.principal.keyId);
      return { id, polling_url: `${this.d.baseUrl()}/v1/get_result?id=${encodeURIComponent(id)}`, status_url: `${this.d.baseUrl()}/v1/finetune/${id}` };
    });
    app.get<{ Params: { id: string } }>("/v1/finetune/:id", async (req) => this.view(own(req)));
    app.get<{ Params: { id: string } }>("/v1/finetune/:id/loss.png", async (req, reply) => {
      const file = path.join(this.runDir(own(req).id), "loss.png");
      if (!fs.existsSync(file)) throw new ApiError(404, "No loss curve yet: it appears after the first training step");
      reply.header("content-type", "image/png").header("cache-control", "no-store");
      return reply.send(fs.readFileSync(file));
    });
  }

  /** Child processes outlive nothing: on shutdown the running job's child is told to save and stop (via the queue's abort). */
  close(timeoutMs: number): Promise<boolean> {
    return this.queue.close(timeoutMs);
  }
}

