// HTTP routes: BFL's (POST /v1/<model>, GET /v1/get_result) and ours
// (jobs, events, models, images, OpenAPI).

import * as fs from "node:fs";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { WARNING_HEADER, type Principal } from "./auth.js";
import type { ServerConfig } from "./config.js";
import { ApiError, unprocessable } from "./errors.js";
import type { JobEvents } from "./events.js";
import { IMAGE_TYPES, isImageName, type ImageStore } from "./images.js";
import type { JobService } from "./jobs.js";
import type { ModelEntry, ModelRegistry } from "./models.js";
import { buildOpenApi } from "./openapi.js";
import type { EventStreams } from "./sse.js";
import type { StorageHealth } from "./storage.js";
import { jobView, notFoundView, resultView } from "./views.js";
import { moderationInfo } from "./moderation.js";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal;
  }
}

export interface RouteDeps {
  cfg: ServerConfig;
  service: JobService;
  images: ImageStore;
  registry: ModelRegistry;
  events: JobEvents;
  streams: EventStreams;
  health: StorageHealth;
  version: string;
  /**
   * Base of the URLs we hand out: --public-url, else the listen address. Never the request's
   * Host header, which any client sets: echoed, it would let one poison the links others get.
   */
  baseUrl: () => string;
  /** Records the studio's batch tag of a submitted job (x-flux2-batch; see studio_routes.ts). */
  tagBatch?: (jobId: string, batch: string) => void;
}

/** x-flux2-batch: the studio's id for the jobs of one batch (a provider batch is one job per image), so the gallery shows them as one card. */
export const BATCH_HEADER = "x-flux2-batch";
const BATCH_ID = /^[A-Za-z0-9_-]{1,64}$/;

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(20),
  before: z.string().min(1).optional(),
});

function query<T extends z.ZodType>(schema: T, q: unknown): z.infer<T> {
  const r = schema.safeParse(q);
  if (!r.success) throw unprocessable(r.error.issues.map((i) => ({ loc: ["query", ...i.path.map(String)], msg: i.message, type: "value_error" })));
  return r.data;
}

export function describeModel(m: ModelEntry & { available: boolean }) {
  const c = m.caps;
  return {
    id: m.id, kind: m.kind, variant: m.variant, available: m.available, runs: m.runs,
    limits: {
      multiple_of: c.multipleOf, min_side: c.minSide, max_pixels: c.maxPixels, max_references: c.maxReferences,
      recommended_references: c.recommendedReferences, steps: c.steps, guidance: c.guidance,
    },
    fields: c.fields, defaults: m.defaults,
    prompt_upsampling: m.upsamplingProblem === undefined ? null : { available: !m.upsamplingProblem, reason: m.upsamplingProblem ?? null },
  };
}

export function registerRoutes(app: FastifyInstance, d: RouteDeps): void {
  const base = (_req: FastifyRequest) => d.baseUrl();

  // Unhealthy (503) when the data folder cannot take a write: a load balancer stops sending work here.
  app.get("/health", async (_req, reply) => {
    const h = d.health.probe();
    const queue = d.cfg.queue ? "redis" : "embedded";
    if (!h.ok) return reply.status(503).header("retry-after", "30").send({ status: "unhealthy", queue, detail: h.detail, free_bytes: h.free_bytes ?? null });
    return { status: "ok", queue, free_bytes: h.free_bytes ?? null };
  });
  app.get("/openapi.json", async () => buildOpenApi(d.registry, d.version));
  app.get("/v1/models", async () => ({ models: d.registry.list().map(describeModel), moderation: moderationInfo(d.cfg.moderation) }));

  app.post<{ Params: { model: string } }>("/v1/:model", async (req, reply) => {
    const idem = req.headers["idempotency-key"];
    if (Array.isArray(idem)) throw new ApiError(400, "send one Idempotency-Key header");
    const batch = req.headers[BATCH_HEADER];
    if (batch !== undefined && (Array.isArray(batch) || !BATCH_ID.test(batch))) {
      throw new ApiError(400, `${BATCH_HEADER} must be one id of 1 to 64 letters, digits, "-" or "_" (the same for every job of a batch)`);
    }
    const { id, warnings } = await d.service.submit(req.params.model, req.body, req.principal, idem);
    if (typeof batch === "string") d.tagBatch?.(id, batch);
    // Accepted but not used: said in the same header as an ignored key (BFL's body has no place for it).
    const said = reply.getHeader(WARNING_HEADER);
    if (warnings.length) reply.header(WARNING_HEADER, [...(said ? [String(said)] : []), ...warnings].join("; "));
    return { id, polling_url: `${base(req)}/v1/get_result?id=${encodeURIComponent(id)}` };
  });

  app.get<{ Querystring: { id?: string | string[] } }>("/v1/get_result", async (req) => {
    const id = req.query.id;
    if (Array.isArray(id)) throw new ApiError(400, `get_result takes one id; ${id.length} were given (id=...&id=...)`);
    if (!id) throw unprocessable([{ loc: ["query", "id"], msg: "Field required", type: "missing" }]);
    const row = d.service.get(id, req.principal);
    return row ? resultView(row, base(req), d.events) : notFoundView(id);
  });

  app.get("/v1/jobs", async (req) => {
    const q = query(ListQuery, req.query);
    const rows = d.service.list(req.principal, q.limit, q.before);
    return { jobs: rows.map((r) => jobView(r, base(req), d.events)), next_before: rows.length === q.limit ? rows[rows.length - 1].id : null };
  });

  app.get<{ Params: { id: string } }>("/v1/jobs/:id", async (req) => {
    const row = d.service.get(req.params.id, req.principal);
    if (!row) throw new ApiError(404, "Task not found");
    return jobView(row, base(req), d.events);
  });

  app.delete<{ Params: { id: string } }>("/v1/jobs/:id", async (req) => {
    const row = await d.service.cancel(req.params.id, req.principal);
    return jobView(row, base(req), d.events);
  });

  app.get<{ Params: { id: string } }>("/v1/jobs/:id/events", async (req, reply) => {
    const row = d.service.get(req.params.id, req.principal);
    if (!row) throw new ApiError(404, "Task not found");
    const owner = req.principal.keyId ?? `address ${req.ip}`;
    d.streams.admit(row.id, owner);
    reply.hijack();
    d.streams.serve(reply.raw, row, base(req), owner);
  });

  app.get<{ Params: { name: string } }>("/v1/images/:name", async (req, reply) => {
    const name = req.params.name;
    if (!isImageName(name) || !d.images.has(name)) throw new ApiError(404, "Image not found");
    const ext = name.slice(name.lastIndexOf(".") + 1);
    reply.header("content-type", IMAGE_TYPES[ext]);
    // The name is the content's hash: it never changes.
    reply.header("cache-control", "public, max-age=31536000, immutable");
    reply.header("etag", `"${name.slice(0, 64)}"`);
    return reply.send(fs.createReadStream(d.images.path(name)));
  });
}
