// The studio's client for the flux2 HTTP API. Everything the UI needs goes
// through here, so the shapes the server returns are normalised in one place.
// Paths are relative ("v1/models", not "/v1/models"), so the studio works
// wherever it is served, also behind a reverse proxy's path prefix; a server
// address set in the Server panel sends the calls to another origin instead
// (that server needs --cors with this page's origin).

import type { GenerationRequest } from "../../src/api/request_schema";

export interface Range { min: number; max: number; default: number }

export interface Limits {
  maxReferences: number;
  recommendedReferences: number;
  steps: Range | null;
  guidance: Range | null;
  minSide: number;
  multipleOf: number;
  maxPixels: number;
  /** Request fields the model accepts, when the server says (else inferred). */
  fields: string[] | null;
}

export interface ModelInfo {
  id: string;
  kind: "local" | "provider";
  variant: string;
  /** Where it runs ("this process", "redis workers", "Black Forest Labs API"). */
  description: string;
  /** False for provider models when the server has no provider key. */
  available: boolean;
  limits: Limits;
  defaults: Record<string, unknown>;
}

export interface JobResult {
  sample: string | null;
  samples: string[];
  prompt: string;
  seed: number | null;
  width: number | null;
  height: number | null;
  raw: Record<string, unknown>;
}

export interface Job {
  id: string;
  model: string;
  status: string;
  createdAt: number | null;
  /** The request body the job was made from (prompt, width, seed, …). */
  params: Record<string, unknown>;
  result: JobResult | null;
  error: string | null;
  progress: number | null;
  /** Latest step preview (PNG data URL) of a running job, where the server gives one. */
  preview: string | null;
  /** Hidden from the default gallery view (POST v1/gallery/:id/hide). */
  hidden: boolean;
  startedAt: number | null;
  endedAt: number | null;
  /** The x-flux2-batch id it was submitted with (the jobs of a provider batch share one), or null. */
  batch: string | null;
  /** A gallery card of a batch (batches.ts): the batch's jobs, oldest first. */
  members?: Job[];
}

export interface FieldError { field: string; msg: string }

export class ApiError extends Error {
  constructor(message: string, readonly status: number, readonly fields: FieldError[] = []) { super(message); }
}

export interface ProgressEvent { step: number; steps: number; fraction: number; preview: string | null; stage: string | null }

const KEY_STORAGE = "flux2.studio.key";
const SERVER_STORAGE = "flux2.studio.server";

/** The server address set in the Server panel ("" = the server this page came from). */
export function serverAddress(): string {
  try { return localStorage.getItem(SERVER_STORAGE) ?? ""; } catch { return ""; }
}
/** Set (or with "" clear) the server address; refuses anything but an absolute http(s) URL. */
export function setServerAddress(a: string): void {
  const v = a.trim().replace(/\/+$/, "");
  if (v && !/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(v)) throw new Error("give an address such as https://flux.example.com (or leave it empty for this server)");
  try { v ? localStorage.setItem(SERVER_STORAGE, v) : localStorage.removeItem(SERVER_STORAGE); } catch { /* private mode */ }
}
/** The URL of an API path such as "v1/models": relative to the page, or under the configured server address. */
export function apiUrl(p: string): string {
  const rel = p.replace(/^\/+/, "");
  const base = serverAddress();
  return base ? `${base}/${rel}` : rel;
}

export function apiKey(): string {
  try { return localStorage.getItem(KEY_STORAGE) ?? ""; } catch { return ""; }
}
export function setApiKey(k: string): void {
  try { k ? localStorage.setItem(KEY_STORAGE, k) : localStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
}

function headers(json = false): Record<string, string> {
  const h: Record<string, string> = { accept: "application/json" };
  const k = apiKey();
  if (k) h["x-key"] = k;
  if (json) h["content-type"] = "application/json";
  return h;
}

async function errorFrom(res: Response): Promise<ApiError> {
  let body: unknown = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const detail = (body as { detail?: unknown } | null)?.detail;
  if (Array.isArray(detail)) {
    const fields = detail.map((d: { loc?: unknown[]; msg?: string }) => {
      const loc = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
      return { field: loc, msg: String(d.msg ?? "invalid") };
    });
    return new ApiError(fields.map((f) => (f.field ? `${f.field}: ${f.msg}` : f.msg)).join("; "), res.status, fields);
  }
  const msg = typeof detail === "string" ? detail
    : typeof (body as { error?: unknown } | null)?.error === "string" ? (body as { error: string }).error
    : typeof (body as { message?: unknown } | null)?.message === "string" ? (body as { message: string }).message
    : `${res.status} ${res.statusText}`;
  return new ApiError(msg, res.status);
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { headers: headers() });
  if (!res.ok) throw await errorFrom(res);
  return (await res.json()) as T;
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string => (typeof v === "string" ? v : "");
const obj = (v: unknown): Record<string, unknown> => (v && typeof v === "object" && !Array.isArray(v) ? v as Record<string, unknown> : {});

function range(v: unknown): Range | null {
  const r = obj(v);
  if (num(r.min) === null || num(r.max) === null) return null;
  return { min: r.min as number, max: r.max as number, default: num(r.default) ?? (r.min as number) };
}

export function normaliseModel(m: Record<string, unknown>): ModelInfo {
  const l = obj(m.limits ?? m.capabilities ?? m.caps);
  const fields = Array.isArray(l.fields) ? l.fields.map(String) : Array.isArray(m.fields) ? (m.fields as unknown[]).map(String) : null;
  return {
    id: str(m.id) || str(m.name),
    kind: m.kind === "provider" ? "provider" : "local",
    variant: str(m.variant),
    description: str(m.runs) || str(m.description) || str(m.provider),
    available: m.available !== false,
    limits: {
      maxReferences: num(l.maxReferences ?? l.max_references) ?? 0,
      recommendedReferences: num(l.recommendedReferences ?? l.recommended_references) ?? num(l.maxReferences) ?? 0,
      steps: range(l.steps),
      guidance: range(l.guidance),
      minSide: num(l.minSide ?? l.min_side) ?? 64,
      multipleOf: num(l.multipleOf ?? l.multiple_of) ?? 16,
      maxPixels: num(l.maxPixels ?? l.max_pixels) ?? 4 * 1024 * 1024,
      fields,
    },
    defaults: obj(m.defaults),
  };
}

/**
 * The body of POST /v1/<model>, typed by the server's own schema (src/api/request_schema.ts; a
 * type-only import, so nothing of it reaches the bundle): a field the server renamed or dropped
 * fails the studio's type check instead of being sent and refused.
 */
export type RequestBody = Partial<GenerationRequest> & { prompt: string };
export type RequestField = keyof GenerationRequest;
/** input_image, input_image_2, … input_image_10. */
export type ImageField = Extract<RequestField, `input_image${string}`>;
export const imageField = (i: number): ImageField => (i === 0 ? "input_image" : `input_image_${i + 1}`) as ImageField;

/** Whether a model takes a request field (steps, guidance, mask_image, …). */
export function accepts(m: ModelInfo, field: RequestField): boolean {
  if (m.limits.fields) return m.limits.fields.includes(field);
  switch (field) {
    case "steps": return m.limits.steps !== null;
    case "guidance": return m.limits.guidance !== null;
    case "negative_prompt": return m.limits.guidance !== null && m.variant.includes("base");
    case "mask_image": case "strength": case "expand": case "num_images": case "loras": return m.kind === "local";
    default: return true;
  }
}

export async function listModels(): Promise<ModelInfo[]> {
  const body = await getJson<unknown>(apiUrl("v1/models"));
  const list = Array.isArray(body) ? body : (obj(body).data ?? obj(body).models ?? []);
  return (list as Record<string, unknown>[]).map(normaliseModel).filter((m) => m.id);
}

/** `batch`: the x-flux2-batch id shared by the jobs of one batch (batches.ts), so the gallery shows them as one card. */
export async function submit(model: string, body: RequestBody, batch?: string): Promise<{ id: string; pollingUrl: string }> {
  const h = headers(true);
  if (batch) h["x-flux2-batch"] = batch;
  const res = await fetch(apiUrl(`v1/${encodeURIComponent(model)}`), { method: "POST", headers: h, body: JSON.stringify(body) });
  if (!res.ok) throw await errorFrom(res);
  const r = obj(await res.json());
  return { id: str(r.id), pollingUrl: str(r.polling_url) || apiUrl(`v1/get_result?id=${encodeURIComponent(str(r.id))}`) };
}

/**
 * This server's image URLs through apiUrl: the server builds absolute URLs from --public-url or
 * its listen address (never the Host header), which a browser that reached it by another name,
 * or through a proxy's path prefix, may not resolve.
 */
export function sameOrigin(url: string): string {
  const m = /^(?:https?:\/\/[^/]+)?(?:\/.*)?\/(v1\/images\/[0-9a-f]{64}\.[a-z]+)$/.exec(url);
  return m ? apiUrl(m[1]) : url;
}

function normaliseResult(v: unknown): JobResult | null {
  if (!v || typeof v !== "object") return null;
  const r = obj(v);
  const samples = Array.isArray(r.samples) ? r.samples.map((x) => sameOrigin(String(x))) : [];
  const sample = (str(r.sample) && sameOrigin(str(r.sample))) || samples[0] || null;
  return {
    sample, samples: samples.length ? samples : sample ? [sample] : [],
    prompt: str(r.prompt), seed: num(r.seed), width: num(r.width), height: num(r.height), raw: r,
  };
}

function time(v: unknown): number | null {
  if (typeof v === "number") return v < 1e12 ? v * 1000 : v;
  if (typeof v === "string") { const t = Date.parse(v); return Number.isNaN(t) ? null : t; }
  return null;
}

export function normaliseJob(j: Record<string, unknown>): Job {
  const params = obj(j.params ?? j.request ?? j.parameters ?? j.body);
  const details = obj(j.details);
  // get_result keeps flux2.ts's extras under `flux2` (BFL's own names keep BFL's meanings); /v1/jobs has `state`.
  const ext = obj(j.flux2);
  const err = j.error ?? details.error ?? details.moderation ?? (Object.keys(details).length ? details : null);
  return {
    id: str(j.id),
    model: str(j.model) || str(params.model),
    // `state` (queued, running, cancelled…) is finer than BFL's `status` (a cancelled job reads "Error").
    status: normaliseStatus(str(ext.state) || str(j.state) || str(j.status) || "Pending"),
    createdAt: time(j.created_at ?? j.createdAt ?? j.submitted_at),
    params,
    result: normaliseResult(j.result),
    error: typeof err === "string" ? err : err ? JSON.stringify(err) : null,
    progress: num(j.progress),
    preview: str(ext.preview) || null,
    hidden: j.hidden === true,
    startedAt: time(j.started_at), endedAt: time(j.ended_at),
    batch: typeof j.batch === "string" && j.batch ? j.batch : null,
  };
}

export async function getResult(id: string): Promise<Job> {
  return normaliseJob(await getJson<Record<string, unknown>>(apiUrl(`v1/get_result?id=${encodeURIComponent(id)}`)));
}

export async function getJob(id: string): Promise<Job> {
  try {
    return normaliseJob(await getJson<Record<string, unknown>>(apiUrl(`v1/jobs/${encodeURIComponent(id)}`)));
  } catch {
    return getResult(id);
  }
}

export async function listJobs(limit = 30, before?: string): Promise<{ jobs: Job[]; next: string | null }> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (before) q.set("before", before);
  const body = await getJson<unknown>(apiUrl(`v1/jobs?${q}`));
  const b = obj(body);
  const list = (Array.isArray(body) ? body : b.jobs ?? b.data ?? b.items ?? []) as Record<string, unknown>[];
  const jobs = list.map(normaliseJob);
  const next = typeof b.next === "string" ? b.next : typeof b.next_before === "string" ? b.next_before
    : jobs.length === limit ? jobs[jobs.length - 1].id : null;
  return { jobs, next };
}

export async function cancelJob(id: string): Promise<void> {
  const res = await fetch(apiUrl(`v1/jobs/${encodeURIComponent(id)}`), { method: "DELETE", headers: headers() });
  if (!res.ok && res.status !== 404 && res.status !== 409) throw await errorFrom(res);
}

const STATUS: Record<string, string> = {
  queued: "Pending", pending: "Pending", running: "Running", ready: "Ready", error: "Error", failed: "Error",
  cancelled: "Cancelled", canceled: "Cancelled", request_moderated: "Request Moderated", content_moderated: "Content Moderated",
  "request moderated": "Request Moderated", "content moderated": "Content Moderated", "task not found": "Task not found",
};
/** BFL's status words (Pending, Ready, Error, …) whatever case or spelling the server uses. */
export function normaliseStatus(s: string): string {
  return STATUS[s.toLowerCase()] ?? s;
}

export const FINAL = new Set(["Ready", "Error", "Cancelled", "Content Moderated", "Request Moderated", "Task not found"]);

/**
 * Follow a job's server-sent events. Read with fetch (not EventSource) so the
 * optional x-key header can be sent. Resolves when the stream ends (`done`,
 * a final status, or the server closing it); `signal` stops it early.
 */
export async function followEvents(
  id: string,
  on: { progress?: (p: ProgressEvent) => void; status?: (s: string, data: Record<string, unknown>) => void },
  signal?: AbortSignal,
): Promise<void> {
  const res = await fetch(apiUrl(`v1/jobs/${encodeURIComponent(id)}/events`), { headers: { ...headers(), accept: "text/event-stream" }, signal });
  if (!res.ok || !res.body) throw await errorFrom(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let finished = false;
  const dispatch = (block: string) => {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const k = i < 0 ? line : line.slice(0, i);
      const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (k === "event") event = v;
      else if (k === "data") data.push(v);
    }
    if (!data.length) return;
    let d: Record<string, unknown> = {};
    try { d = obj(JSON.parse(data.join("\n"))); } catch { d = { value: data.join("\n") }; }
    if (event === "progress") {
      const step = num(d.step) ?? 0;
      const steps = num(d.steps) ?? 0;
      on.progress?.({ step, steps, fraction: num(d.fraction) ?? (steps ? step / steps : 0), preview: str(d.preview) || null, stage: str(d.stage) || null });
    } else if (event === "status" || event === "done" || event === "message") {
      const raw = str(obj(d.flux2).state) || str(d.state) || str(d.status);
      const s = raw ? normaliseStatus(raw) : event === "done" ? "done" : "";
      if (s) on.status?.(s, d);
      if (event === "done" || FINAL.has(s)) finished = true;
    }
  };
  try {
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let at: number;
      while ((at = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at).replace(/^\r?\n\r?\n/, "");
        dispatch(block);
      }
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

export interface GalleryFilter { model?: string; q?: string; since?: string; until?: string; hidden?: "exclude" | "include" | "only" }

/** The server's jobs for the gallery (GET v1/gallery), newest first, filtered on the server. */
export async function listGallery(limit = 30, before?: string, f: GalleryFilter = {}): Promise<{ jobs: Job[]; next: string | null }> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (before) q.set("before", before);
  for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
  // "To" a day includes that day: the server's `until` is exclusive.
  if (f.until && /^\d{4}-\d{2}-\d{2}$/.test(f.until)) q.set("until", new Date(Date.parse(f.until) + 86_400_000).toISOString().slice(0, 10));
  const b = obj(await getJson<unknown>(apiUrl(`v1/gallery?${q}`)));
  const jobs = ((b.jobs ?? []) as Record<string, unknown>[]).map(normaliseJob);
  return { jobs, next: typeof b.next_before === "string" ? b.next_before : null };
}

async function send(method: string, p: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(apiUrl(p), { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw await errorFrom(res);
  return obj(await res.json());
}

export const hideJob = (id: string, hidden: boolean) => send("POST", `v1/gallery/${encodeURIComponent(id)}/hide`, { hidden });
/** Deletes a finished job and the image files no other job uses. */
export const deleteJob = (id: string) => send("DELETE", `v1/gallery/${encodeURIComponent(id)}`);

export interface LoraInfo { name: string; size: number; format: string; rank: number | null; weights: number; targets: string[]; error?: string }
export interface LoraList { loraDir: boolean; max: number; strength: Range; loras: LoraInfo[] }

export async function listLoras(): Promise<LoraList> {
  const b = obj(await getJson<unknown>(apiUrl("v1/loras")));
  return {
    loraDir: b.lora_dir === true, max: num(b.max_loras) ?? 8, strength: range(b.strength) ?? { min: -4, max: 4, default: 1 },
    loras: ((b.loras ?? []) as LoraInfo[]),
  };
}
