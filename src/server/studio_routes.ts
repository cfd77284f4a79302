// Routes the studio needs beyond BFL's API and the job routes (routes.ts):
//   GET    /v1/loras             the --lora-dir files with format, rank, targets and size
//   GET    /v1/gallery           finished and active jobs, newest first, with filters and the hidden flag
//   POST   /v1/gallery/:id/hide  {hidden: true|false}: keep a job out of the default gallery view
//   DELETE /v1/gallery/:id       delete a finished job and the image files no other job uses
// and each gallery job's batch: the x-flux2-batch header the studio sends with every job of a batch
// (a provider model takes one image per job), recorded by recordBatch, so the batch is one card.
// and the --cors origins (a small onRequest hook).

import * as fs from "node:fs";
import * as path from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { ApiError, unprocessable } from "./errors.js";
import type { JobEvents } from "./events.js";
import type { ImageStore } from "./images.js";
import { isStoreRef, storeName } from "./inputs.js";
import type { JobService } from "./jobs.js";
import { listLoras } from "./loras.js";
import type { JobResult, JobRow, JobStore } from "./store.js";
import { jobView, TERMINAL } from "./views.js";
import { loadLoraFile, type LoraAdapter } from "../lora/formats.js";

export interface StudioRouteDeps {
  loraDir?: string;
  store: JobStore;
  images: ImageStore;
  service: JobService;
  events: JobEvents;
  baseUrl: () => string;
}

function query<T extends z.ZodType>(schema: T, q: unknown): z.infer<T> {
  const r = schema.safeParse(q);
  if (!r.success) throw unprocessable(r.error.issues.map((i) => ({ loc: ["query", ...i.path.map(String)], msg: i.message, type: "value_error" })));
  return r.data;
}

// --- LoRAs -----------------------------------------------------------------

export interface LoraInfo {
  name: string;
  /** File size in bytes. */
  size: number;
  format: string;
  /** Largest rank of its low-rank parts; null when every part is a dense delta (LoKr, LoHa, full diffs). */
  rank: number | null;
  /** Transformer weights it changes, counted, and the distinct module kinds ("attn.to_q", "ff.linear_in", …). */
  weights: number;
  targets: string[];
  /** Why the file cannot be used, when it cannot (then format is "unreadable"). */
  error?: string;
}

/**
 * Describing a file means parsing it with the same loader a job uses (so what the picker says is what a
 * job will apply); parsed once per file version (size + mtime), since a large LoRA takes a moment to read.
 */
const described = new Map<string, { stamp: string; info: LoraInfo }>();

function moduleKind(weight: string): string {
  return weight.replace(/\.weight$/, "").replace(/^(single_)?transformer_blocks\.\d+\./, "");
}

function describeAdapter(name: string, size: number, a: LoraAdapter): LoraInfo {
  let rank: number | null = null;
  for (const d of a.deltas.values()) if (d.kind === "lowrank") rank = Math.max(rank ?? 0, d.rank);
  const targets = [...new Set(a.report.applied.map(moduleKind))].sort();
  return { name, size, format: a.format, rank, weights: a.report.applied.length, targets };
}

export function describeLoras(loraDir: string | undefined): LoraInfo[] {
  return listLoras(loraDir).map((name) => {
    const file = path.join(loraDir!, `${name}.safetensors`);
    const st = fs.statSync(file);
    const stamp = `${st.size}:${st.mtimeMs}`;
    const hit = described.get(file);
    if (hit?.stamp === stamp) return hit.info;
    let info: LoraInfo;
    try {
      info = describeAdapter(name, st.size, loadLoraFile(file, name));
    } catch (e) {
      info = { name, size: st.size, format: "unreadable", rank: null, weights: 0, targets: [], error: (e as Error).message.replace(`${file}: `, "") };
    }
    described.set(file, { stamp, info });
    return info;
  });
}

// --- gallery ---------------------------------------------------------------

const HIDDEN_PREFIX = "hidden:";
const BATCH_PREFIX = "batch:";

/** Remember the batch a submitted job belongs to (routes.ts reads the x-flux2-batch header). */
export function recordBatch(store: JobStore, jobId: string, batch: string): void {
  store.setMeta(BATCH_PREFIX + jobId, batch);
}

const GalleryQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(30),
  before: z.string().min(1).optional(),
  /** exclude (default): hidden jobs left out; include: all; only: just the hidden ones. */
  hidden: z.enum(["exclude", "include", "only"]).default("exclude"),
  model: z.string().min(1).optional(),
  /** Words that must all appear in the prompt (case-insensitive). */
  q: z.string().min(1).max(500).optional(),
  /** Made at or after / before these times (ISO 8601 dates or times, or epoch milliseconds). */
  since: z.string().min(1).optional(),
  until: z.string().min(1).optional(),
});

function timeParam(v: string | undefined, name: string): number | null {
  if (v === undefined) return null;
  const t = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(t)) throw unprocessable([{ loc: ["query", name], msg: `"${v}" is not a date: give an ISO 8601 date (2026-12-02) or time, or epoch milliseconds`, type: "value_error" }]);
  return t;
}

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** Image store names a job refers to: its inputs (references, mask) and its outputs. */
function imagesOf(row: JobRow): string[] {
  const names: string[] = [];
  for (const v of Object.values(JSON.parse(row.request) as Record<string, unknown>)) if (isStoreRef(v)) names.push(storeName(v));
  if (row.result) names.push(...(JSON.parse(row.result) as JobResult).images);
  return names;
}

export function registerStudioRoutes(app: FastifyInstance, d: StudioRouteDeps): void {
  const db = d.store.db;
  const isHidden = (id: string) => d.store.getMeta(HIDDEN_PREFIX + id) !== undefined;

  app.get("/v1/loras", async () => ({
    lora_dir: !!d.loraDir,
    // The request schema's limits (src/api/request.ts): the picker offers no more than a request takes.
    max_loras: 8, strength: { min: -4, max: 4, default: 1 },
    loras: describeLoras(d.loraDir),
  }));

  app.get("/v1/gallery", async (req: FastifyRequest) => {
    const q = query(GalleryQuery, req.query);
    const who = req.principal;
    if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
    const where: string[] = ["(? IS NULL OR j.key_id = ?)"];
    const args: unknown[] = [who.keyId, who.keyId];
    if (q.before) {
      const b = d.store.get(q.before);
      if (!b) return { jobs: [], next_before: null };
      where.push("j.seq < ?"); args.push(b.seq);
    }
    if (q.model) { where.push("j.model = ?"); args.push(q.model); }
    // The prompt lives in the request JSON; each word must appear in it (json_extract keeps the match to the prompt).
    for (const word of (q.q ?? "").split(/\s+/).filter(Boolean)) {
      where.push("lower(json_extract(j.request, '$.prompt')) LIKE ? ESCAPE '\\'"); args.push(`%${escapeLike(word.toLowerCase())}%`);
    }
    const since = timeParam(q.since, "since"), until = timeParam(q.until, "until");
    if (since !== null) { where.push("j.created_at >= ?"); args.push(since); }
    if (until !== null) { where.push("j.created_at < ?"); args.push(until); }
    if (q.hidden === "exclude") where.push("m.k IS NULL");
    if (q.hidden === "only") where.push("m.k IS NOT NULL");
    const rows = db.prepare(`SELECT j.*, m.k IS NOT NULL AS hidden, b.v AS batch FROM jobs j LEFT JOIN meta m ON m.k = '${HIDDEN_PREFIX}' || j.id
      LEFT JOIN meta b ON b.k = '${BATCH_PREFIX}' || j.id
      WHERE ${where.join(" AND ")} ORDER BY j.seq DESC LIMIT ?`).all(...args, q.limit) as (JobRow & { hidden: number; batch: string | null })[];
    const base = d.baseUrl();
    return {
      jobs: rows.map((r) => ({ ...jobView(r, base, d.events), hidden: !!r.hidden, batch: r.batch })),
      next_before: rows.length === q.limit ? rows[rows.length - 1].id : null,
    };
  });

  app.post<{ Params: { id: string } }>("/v1/gallery/:id/hide", async (req) => {
    const row = d.service.get(req.params.id, req.principal);
    if (!row) throw new ApiError(404, "Task not found");
    const body = z.object({ hidden: z.boolean().default(true) }).safeParse(req.body ?? {});
    if (!body.success) throw unprocessable([{ loc: ["body", "hidden"], msg: "hidden must be true or false", type: "value_error" }]);
    if (body.data.hidden) d.store.setMeta(HIDDEN_PREFIX + row.id, String(Date.now()));
    else db.prepare("DELETE FROM meta WHERE k = ?").run(HIDDEN_PREFIX + row.id);
    return { id: row.id, hidden: isHidden(row.id) };
  });

  app.delete<{ Params: { id: string } }>("/v1/gallery/:id", async (req) => {
    const row = d.service.get(req.params.id, req.principal);
    if (!row) throw new ApiError(404, "Task not found");
    if (!TERMINAL.includes(row.state)) throw new ApiError(409, `The task is ${row.state}: cancel it first (DELETE /v1/jobs/${row.id}), then delete it`);
    const names = [...new Set(imagesOf(row))];
    // Images are content-addressed, so another job may hold the same file (a reused reference, an identical output).
    const shared = db.prepare("SELECT 1 FROM jobs WHERE id != ? AND (instr(request, ?) > 0 OR instr(coalesce(result, ''), ?) > 0) LIMIT 1");
    const removed: string[] = [];
    db.transaction(() => {
      db.prepare("DELETE FROM jobs WHERE id = ?").run(row.id);
      db.prepare("DELETE FROM webhooks WHERE job_id = ?").run(row.id);
      db.prepare("DELETE FROM idempotency WHERE job_id = ?").run(row.id);
      db.prepare("DELETE FROM meta WHERE k IN (?, ?)").run(HIDDEN_PREFIX + row.id, BATCH_PREFIX + row.id);
    }).immediate();
    for (const n of names) {
      if (shared.get(row.id, n, n)) continue;
      try {
        fs.rmSync(d.images.path(n), { force: true });
        removed.push(n);
      } catch { /* already gone */ }
    }
    return { id: row.id, deleted: true, files_removed: removed.length, files_kept: names.length - removed.length };
  });
}

// --- CORS ------------------------------------------------------------------

/**
 * --cors ORIGIN: answers preflights and adds Access-Control-Allow-Origin for the listed origins only.
 * Hand-written (a dozen lines) rather than @fastify/cors, which is not a dependency: the policy here is
 * an exact origin list, no credentials, and the request headers the API reads (x-key, content-type,
 * Idempotency-Key, x-flux2-batch).
 */
export function registerCors(app: FastifyInstance, origins: string[] | undefined): void {
  if (!origins?.length) return;
  const allowed = new Set(origins);
  const allow = (req: FastifyRequest, reply: FastifyReply): boolean => {
    const o = req.headers.origin;
    reply.header("vary", "Origin");
    if (typeof o !== "string" || !allowed.has(o)) return false;
    reply.header("access-control-allow-origin", o);
    reply.header("access-control-expose-headers", "x-flux2-warning, retry-after");
    return true;
  };
  app.addHook("onRequest", async (req, reply) => {
    if (!allow(req, reply) || req.method !== "OPTIONS" || !req.headers["access-control-request-method"]) return;
    reply.header("access-control-allow-methods", "GET, POST, DELETE");
    reply.header("access-control-allow-headers", "x-key, content-type, idempotency-key, x-flux2-batch");
    reply.header("access-control-max-age", "600");
    return reply.status(204).send();
  });
}
