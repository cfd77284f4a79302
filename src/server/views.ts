// JSON views of jobs: BFL's get_result shape and the fuller job record of
// /v1/jobs. get_result carries BFL's fields with BFL's meanings only; our
// extras live under `flux2`, a name BFL does not use (real clients read every
// BFL name: the AI SDK takes a top-level `state` as an alias of `status`, and
// BFL's `preview` is an object, not our data URL).

import type { JobEvents } from "./events.js";
import { isStoreRef, storeName } from "./inputs.js";
import type { JobResult, JobRow, JobState } from "./store.js";

/** Our states → BFL's status strings. A cancelled job reads as Error (BFL has no such state); `flux2.state` says which. */
export const BFL_STATUS: Record<JobState, string> = {
  queued: "Pending", running: "Pending", ready: "Ready", error: "Error", cancelled: "Error",
  request_moderated: "Request Moderated", content_moderated: "Content Moderated",
};

export const TERMINAL: JobState[] = ["ready", "error", "cancelled", "request_moderated", "content_moderated"];

export function imageUrl(base: string, name: string): string {
  return `${base}/v1/images/${name}`;
}

export interface ResultView {
  id: string;
  status: string;
  result: Record<string, unknown> | null;
  progress: number | null;
  details: Record<string, unknown> | null;
  /** flux2.ts extensions: the finer state, and a PNG data URL of the current estimate while running. */
  flux2: { state: JobState; preview: string | null };
}

function seconds(ms: number | null): number | null {
  return ms === null ? null : ms / 1000;
}

export function resultBody(row: JobRow, base: string): Record<string, unknown> | null {
  if (row.state !== "ready" || !row.result) return null;
  const r = JSON.parse(row.result) as JobResult;
  const req = JSON.parse(row.request) as { prompt?: string };
  const samples = r.images.map((n) => imageUrl(base, n));
  // BFL's result fields are numbers when present (clients validate them so): absent, never null.
  const present = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined));
  return {
    // The prompt the images were made from: the rewritten one when prompt_upsampling was on (as BFL returns it).
    sample: samples[0], samples, prompt: r.prompt ?? req.prompt ?? "",
    ...present({ seed: r.seed, start_time: seconds(r.started_at), end_time: seconds(r.ended_at) }),
    duration: (r.ended_at - r.started_at) / 1000,
    width: r.width, height: r.height, steps: r.steps, guidance: r.guidance, ...(r.loras ? { loras: r.loras } : {}),
    ...(r.finetune ? { finetune: r.finetune } : {}),
  };
}

/** GET /v1/get_result. */
export function resultView(row: JobRow, base: string, events?: JobEvents): ResultView {
  const live = row.state === "running" ? events?.latest(row.id) : undefined;
  const progress = row.state === "ready" ? 1 : row.state === "running" ? live?.fraction ?? 0 : row.state === "queued" ? 0 : null;
  let details: Record<string, unknown> | null = null;
  if (row.state === "error" || row.state === "cancelled") details = { error: row.error ?? "error", ...(row.state === "cancelled" ? { cancelled: true } : {}) };
  if (row.state === "request_moderated" || row.state === "content_moderated") details = { moderation: row.error ?? "flagged by content moderation" };
  return { id: row.id, status: BFL_STATUS[row.state], result: resultBody(row, base), progress, details, flux2: { state: row.state, preview: live?.preview ?? null } };
}

export const notFoundView = (id: string) => ({ id, status: "Task not found", result: null, progress: null, details: null });

/** The request as submitted, with stored images as URLs and the webhook secret hidden. */
export function publicRequest(json: string, base: string): Record<string, unknown> {
  const r = JSON.parse(json) as Record<string, unknown>;
  for (const [k, v] of Object.entries(r)) if (isStoreRef(v)) r[k] = imageUrl(base, storeName(v));
  if (r.webhook_secret !== undefined) r.webhook_secret = "***";
  return r;
}

/** One entry of GET /v1/jobs. */
export function jobView(row: JobRow, base: string, events?: JobEvents) {
  const v = resultView(row, base, events);
  return {
    id: row.id, model: row.model, status: v.status, state: row.state, attempts: row.attempts,
    created_at: seconds(row.created_at), started_at: seconds(row.started_at), ended_at: seconds(row.ended_at),
    request: publicRequest(row.request, base), result: v.result, progress: v.progress, details: v.details,
  };
}
