// Storyboards over HTTP: POST /v1/storyboard turns a board (src/storyboard/board.ts)
// into one ordinary generation job per shot, on the same queue, with the same
// references, size and seeds; the board itself is a small JSON record in the data
// folder (DATA/storyboards/ID.json) naming its jobs. One shot can be re-made
// (POST /v1/storyboard/ID/shots/SHOT): a new job replaces that shot's, the others
// keep their jobs and so their images byte for byte. Once every panel is ready the
// contact sheet (PNG, PDF) and the frames manifest are built from the stored images.

import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Principal } from "./auth.js";
import { ApiError, unprocessable, zodIssues, type FieldError } from "./errors.js";
import type { ImageStore } from "./images.js";
import type { JobService } from "./jobs.js";
import type { ModelRegistry } from "./models.js";
import type { JobResult, JobRow } from "./store.js";
import { BFL_STATUS, imageUrl } from "./views.js";
import { planShots, shotRequest, StoryboardError, StoryboardShot, StoryboardSpec, type ShotPlan } from "../storyboard/board.js";
import { contactSheetPdf, contactSheetPng, ffconcat, manifest, type Panel } from "../storyboard/sheet.js";

export const StoryboardRequest = StoryboardSpec.extend({
  /** A local model id of this server (GET /v1/models); default: the first local one. */
  model: z.string().min(1).optional(),
});

const RegenerateRequest = z.object({
  /** A new seed for this shot (default: the one it had). */
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  /** A new text for this shot (its references are attached again from it). */
  prompt: StoryboardShot.shape.prompt.optional(),
}).strict();

interface ShotRecord extends ShotPlan {
  job_id: string;
  /** Jobs this shot had before it was re-made, oldest first. */
  previous_jobs: string[];
}

interface BoardRecord {
  id: string;
  key_id: string | null;
  model: string;
  created_at: number;
  /** The board as submitted, with its reference images as given (re-made shots send them again). */
  board: StoryboardSpec;
  shots: ShotRecord[];
}

export interface StoryboardDeps {
  service: JobService;
  images: ImageStore;
  registry: ModelRegistry;
  dataDir: string;
  baseUrl: () => string;
}

const ID = /^[0-9a-f-]{36}$/;

class BoardFiles {
  constructor(private dir: string) {}

  file(id: string): string {
    if (!ID.test(id)) throw new ApiError(404, "Storyboard not found");
    return path.join(this.dir, `${id}.json`);
  }

  read(id: string, who: Principal): BoardRecord {
    if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
    const f = this.file(id);
    if (!fs.existsSync(f)) throw new ApiError(404, "Storyboard not found");
    const rec = JSON.parse(fs.readFileSync(f, "utf8")) as BoardRecord;
    if (who.keyId && rec.key_id !== who.keyId) throw new ApiError(404, "Storyboard not found");
    return rec;
  }

  /** Atomic (temporary file + rename): a crash never leaves half a record. */
  write(rec: BoardRecord): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const f = this.file(rec.id);
    fs.writeFileSync(`${f}.tmp`, JSON.stringify(rec));
    fs.renameSync(`${f}.tmp`, f);
  }
}

/** A submit's 422 about a shot's request, located at that shot. */
function atShot(e: unknown, index: number): unknown {
  if (!(e instanceof ApiError) || e.status !== 422 || typeof e.detail === "string") return e;
  const detail: FieldError[] = e.detail.map((d) => ({ ...d, loc: ["body", "shots", index, ...d.loc.slice(1)] }));
  return unprocessable(detail);
}

export function registerStoryboardRoutes(app: FastifyInstance, d: StoryboardDeps): void {
  const files = new BoardFiles(path.join(d.dataDir, "storyboards"));

  const pickModel = (id: string | undefined) => {
    const local = d.registry.list().filter((m) => m.kind === "local" && m.available);
    const m = id ? local.find((x) => x.id === id) : local[0];
    if (!m) throw new ApiError(id ? 404 : 503, id ? `Model not found among this server's local models: ${id} (it has ${local.map((x) => x.id).join(", ") || "none"})` : "this server has no local model to draw storyboards with: start it with --model");
    return m;
  };

  const submitShot = async (rec: BoardRecord, plan: ShotPlan, who: Principal): Promise<string> => {
    try {
      return (await d.service.submit(rec.model, shotRequest(rec.board, plan), who)).id;
    } catch (e) {
      throw atShot(e, plan.index);
    }
  };

  app.post("/v1/storyboard", async (req) => {
    const parsed = StoryboardRequest.safeParse(req.body);
    if (!parsed.success) throw unprocessable(zodIssues(parsed.error.issues));
    const { model: modelId, ...board } = parsed.data;
    const model = pickModel(modelId);
    let plans: ShotPlan[];
    try {
      plans = planShots(board, model.caps.maxReferences);
    } catch (e) {
      if (e instanceof StoryboardError) throw unprocessable([{ loc: ["body", "shots"], msg: e.message, type: "value_error" }]);
      throw e;
    }
    const rec: BoardRecord = { id: randomUUID(), key_id: req.principal.keyId, model: model.id, created_at: Date.now(), board, shots: [] };
    // Shots are submitted in order; if one is refused, those already queued are cancelled, so a board is all or nothing.
    try {
      for (const plan of plans) rec.shots.push({ ...plan, job_id: await submitShot(rec, plan, req.principal), previous_jobs: [] });
    } catch (e) {
      for (const s of rec.shots) await d.service.cancel(s.job_id, req.principal).catch(() => {});
      throw e;
    }
    files.write(rec);
    return view(rec, req);
  });

  app.get<{ Params: { id: string } }>("/v1/storyboard/:id", async (req) => view(files.read(req.params.id, req.principal), req));

  app.post<{ Params: { id: string; shot: string } }>("/v1/storyboard/:id/shots/:shot", async (req) => {
    const rec = files.read(req.params.id, req.principal);
    const parsed = RegenerateRequest.safeParse(req.body ?? {});
    if (!parsed.success) throw unprocessable(zodIssues(parsed.error.issues));
    const at = rec.shots.findIndex((s) => s.id === req.params.shot);
    if (at < 0) throw new ApiError(404, `The storyboard has no shot "${req.params.shot}" (it has ${rec.shots.map((s) => s.id).join(", ")})`);
    const old = rec.shots[at];
    // Re-plan the whole board with this shot changed, so its references are attached by the same rules.
    const shots = rec.board.shots.map((s, i) => (i === at ? { ...s, ...(parsed.data.prompt ? { prompt: parsed.data.prompt, references: undefined } : {}), ...(parsed.data.seed !== undefined ? { seed: parsed.data.seed } : {}) } : s));
    let plan: ShotPlan;
    try {
      plan = planShots({ ...rec.board, shots }, d.registry.get(rec.model)?.caps.maxReferences ?? 10)[at];
    } catch (e) {
      if (e instanceof StoryboardError) throw unprocessable([{ loc: ["body", "prompt"], msg: e.message, type: "value_error" }]);
      throw e;
    }
    const jobId = await submitShot(rec, plan, req.principal);
    // A shot still running is not needed any more.
    await d.service.cancel(old.job_id, req.principal).catch(() => {});
    rec.board = { ...rec.board, shots };
    rec.shots[at] = { ...plan, job_id: jobId, previous_jobs: [...old.previous_jobs, old.job_id] };
    files.write(rec);
    return view(rec, req);
  });

  const sendExport = (kind: "png" | "pdf" | "manifest" | "ffconcat") => async (req: FastifyRequest<{ Params: { id: string } }>, reply: { header(k: string, v: string): unknown; send(b: unknown): unknown }) => {
    const rec = files.read(req.params.id, req.principal);
    const panels = readyPanels(rec, req);
    const info = { title: rec.board.title, brief: rec.board.brief, model: rec.model };
    if (kind === "manifest") {
      const m = manifest(panels, info);
      // Over HTTP, each frame also says where to download it (its file name is where a folder export puts it).
      const urls = new Map(rec.shots.map((s) => [s.id, imageUrl(d.baseUrl(), panelImage(d.service.get(s.job_id, req.principal)!)!)]));
      return { ...m, id: rec.id, contact_sheet: { png: `${d.baseUrl()}/v1/storyboard/${rec.id}/contact_sheet.png`, pdf: `${d.baseUrl()}/v1/storyboard/${rec.id}/contact_sheet.pdf` },
        frames: m.frames.map((f) => ({ ...f, url: urls.get(f.id) })) };
    }
    if (kind === "ffconcat") {
      reply.header("content-type", "text/plain; charset=utf-8");
      return reply.send(ffconcat(panels));
    }
    reply.header("content-type", kind === "png" ? "image/png" : "application/pdf");
    reply.header("content-disposition", `inline; filename="storyboard-${rec.id.slice(0, 8)}.${kind}"`);
    return reply.send(kind === "png" ? await contactSheetPng(panels, info) : await contactSheetPdf(panels, info));
  };
  app.get<{ Params: { id: string } }>("/v1/storyboard/:id/contact_sheet.png", sendExport("png"));
  app.get<{ Params: { id: string } }>("/v1/storyboard/:id/contact_sheet.pdf", sendExport("pdf"));
  app.get<{ Params: { id: string } }>("/v1/storyboard/:id/manifest.json", sendExport("manifest"));
  app.get<{ Params: { id: string } }>("/v1/storyboard/:id/frames.ffconcat", sendExport("ffconcat"));

  function panelImage(row: JobRow | undefined): string | undefined {
    if (!row || row.state !== "ready" || !row.result) return undefined;
    return (JSON.parse(row.result) as JobResult).images[0];
  }

  /** Every panel's image; 409 while some are not ready, naming them. */
  function readyPanels(rec: BoardRecord, req: FastifyRequest): Panel[] {
    const panels: Panel[] = [];
    const waiting: string[] = [];
    for (const s of rec.shots) {
      const row = d.service.get(s.job_id, req.principal);
      const name = panelImage(row);
      if (!name) {
        waiting.push(`${s.id} (${row?.state ?? "missing"})`);
        continue;
      }
      const r = JSON.parse(row!.result!) as JobResult;
      panels.push({ index: s.index, id: s.id, text: s.text, prompt: s.prompt, references: s.references, seed: s.seed, width: r.width, height: r.height, png: fs.readFileSync(d.images.path(name)) });
    }
    if (waiting.length) throw new ApiError(409, `not every panel is ready: ${waiting.join(", ")}; poll GET /v1/storyboard/${rec.id} (re-make a failed shot with POST /v1/storyboard/${rec.id}/shots/SHOT)`);
    return panels;
  }

  function view(rec: BoardRecord, req: FastifyRequest) {
    const base = d.baseUrl();
    const shots = rec.shots.map((s) => {
      const row = d.service.get(s.job_id, req.principal);
      const image = panelImage(row);
      return {
        id: s.id, index: s.index, text: s.text, prompt: s.prompt, references: s.references, seed: s.seed, job_id: s.job_id,
        status: row ? BFL_STATUS[row.state] : "Task not found", state: row?.state ?? null, image: image ? imageUrl(base, image) : null,
        error: row?.error ?? null, previous_jobs: s.previous_jobs,
      };
    });
    const states = shots.map((s) => s.state);
    const status = states.every((s) => s === "ready") ? "Ready" : states.some((s) => s === "queued" || s === "running") ? "Pending" : "Error";
    const at = `${base}/v1/storyboard/${rec.id}`;
    return {
      id: rec.id, status, model: rec.model, created_at: rec.created_at / 1000, title: rec.board.title ?? null, brief: rec.board.brief ?? null,
      references: rec.board.references.map((r) => ({ name: r.name, kind: r.kind, description: r.description ?? null })),
      shots, polling_url: at,
      exports: status === "Ready" ? { contact_sheet_png: `${at}/contact_sheet.png`, contact_sheet_pdf: `${at}/contact_sheet.pdf`, manifest: `${at}/manifest.json`, ffconcat: `${at}/frames.ffconcat` } : null,
    };
  }
}
