// flux-2-pro / max / flex through Black Forest Labs' API: submit
// POST {base}/v1/<model> (x-key header), poll the returned polling_url until
// the task ends, and download the sample at once (BFL's delivery URLs expire
// after 10 minutes) into our content-addressed store. BFL's states map onto
// ours; moderation states pass through; 429 (too many active tasks) and 5xx
// are retried with exponential backoff, a bounded number of times, and the
// retry count is kept in the job row so a restart does not reset it. Once
// submitted, the BFL task id and polling URL are saved, so a restarted server
// resumes polling instead of paying for a second generation.

import sharp from "sharp";
import type { GenerationRequest } from "../../api/request.js";
import type { ImageStore } from "../images.js";
import { extFor } from "../images.js";
import { isStoreRef, storeName } from "../inputs.js";
import type { JobRunContext, RunResult } from "../queue_local.js";
import type { JobStore } from "../store.js";

export interface BflOptions {
  apiKey: string;
  baseUrl: string;
  pollMs: number;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Submits tried in all when BFL answers 429 / 5xx (default 6). */
  maxSubmitAttempts?: number;
  /** First backoff delay (doubles each time; default 1 s). */
  backoffMs?: number;
  /** Largest sample accepted (default 64 MB). */
  maxBytes?: number;
}

export class BflError extends Error {
  constructor(message: string, readonly status: number, readonly retryable: boolean) {
    super(message);
    this.name = "BflError";
  }
}

export interface BflResult {
  id: string;
  status: string;
  result?: { sample?: string; seed?: number; prompt?: string } | null;
  progress?: number | null;
  details?: unknown;
}

/**
 * Fields BFL's API does not take (ours: webhooks stay with this server), and
 * aspect_ratio, already turned into the width and height sent instead.
 */
const NOT_FORWARDED = new Set(["aspect_ratio", "webhook_url", "webhook_secret", "negative_prompt", "mask_image", "strength", "expand", "num_images", "loras", "output_format"]);

function detailText(body: unknown): string {
  if (body && typeof body === "object" && "detail" in body) {
    const d = (body as { detail: unknown }).detail;
    return typeof d === "string" ? d : JSON.stringify(d);
  }
  return typeof body === "string" ? body.slice(0, 300) : JSON.stringify(body)?.slice(0, 300) ?? "";
}

export class BflClient {
  constructor(private opts: BflOptions) {}

  private async call(url: string, init: RequestInit = {}): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(url, {
        ...init,
        headers: { accept: "application/json", "x-key": this.opts.apiKey, ...(init.body ? { "content-type": "application/json" } : {}) },
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 30_000),
      });
    } catch (e) {
      throw new BflError(`cannot reach BFL (${(e as Error).message})`, 0, true);
    }
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch { /* keep the text */ }
    if (res.ok) return body;
    const why = detailText(body);
    if (res.status === 401 || res.status === 403) throw new BflError(`BFL rejected the API key (HTTP ${res.status}${why ? `: ${why}` : ""})`, res.status, false);
    if (res.status === 402) throw new BflError(`BFL: insufficient credits (${why})`, res.status, false);
    if (res.status === 429) throw new BflError(`BFL: too many active tasks (${why})`, res.status, true);
    throw new BflError(`BFL answered HTTP ${res.status}: ${why}`, res.status, res.status >= 500);
  }

  async submit(model: string, body: Record<string, unknown>): Promise<{ id: string; polling_url: string }> {
    const r = (await this.call(`${this.opts.baseUrl.replace(/\/$/, "")}/v1/${model}`, { method: "POST", body: JSON.stringify(body) })) as { id?: string; polling_url?: string };
    if (!r?.id) throw new BflError("BFL's answer has no task id", 502, false);
    return { id: r.id, polling_url: r.polling_url ?? `${this.opts.baseUrl.replace(/\/$/, "")}/v1/get_result?id=${encodeURIComponent(r.id)}` };
  }

  async poll(pollingUrl: string): Promise<BflResult> {
    return (await this.call(pollingUrl)) as BflResult;
  }

  async download(url: string): Promise<Buffer> {
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.opts.timeoutMs ?? 30_000) });
    } catch (e) {
      throw new BflError(`cannot download the sample (${(e as Error).message})`, 0, true);
    }
    if (!res.ok) throw new BflError(`downloading the sample failed: HTTP ${res.status}`, res.status, res.status >= 500);
    const buf = Buffer.from(await res.arrayBuffer());
    if (buf.length > (this.opts.maxBytes ?? 64 * 1024 * 1024)) throw new BflError("the sample is too large", 502, false);
    return buf;
  }
}

/** Our request → BFL's body: stored images become base64 again, server-side fields stay here. */
export async function bflBody(r: GenerationRequest, images: ImageStore): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) {
    if (v === undefined || NOT_FORWARDED.has(k)) continue;
    out[k] = isStoreRef(v) ? (await images.read(storeName(v))).toString("base64") : v;
  }
  if (r.output_format && r.output_format !== "webp") out.output_format = r.output_format;
  return out;
}

interface ProviderState {
  bfl_id?: string;
  polling_url?: string;
  submit_attempts?: number;
}

/** Wait `ms`, or less if the job is cancelled. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export function providerRunner(client: BflClient, images: ImageStore, store: JobStore, opts: BflOptions) {
  const maxSubmits = opts.maxSubmitAttempts ?? 6;
  const backoff = (n: number) => (opts.backoffMs ?? 1000) * 2 ** Math.max(0, n - 1);

  return async (ctx: JobRunContext): Promise<RunResult> => {
    const job = ctx.job;
    const request = JSON.parse(job.request) as GenerationRequest;
    const state: ProviderState = job.provider ? JSON.parse(job.provider) : {};
    if (!state.polling_url) {
      try {
        const sub = await client.submit(job.model, await bflBody(request, images));
        Object.assign(state, { bfl_id: sub.id, polling_url: sub.polling_url });
        store.setProviderState(job.id, state);
      } catch (e) {
        if (!(e instanceof BflError)) throw e;
        state.submit_attempts = (state.submit_attempts ?? 0) + 1;
        store.setProviderState(job.id, state);
        if (e.retryable && state.submit_attempts < maxSubmits) return { retryAt: Date.now() + backoff(state.submit_attempts) };
        return { state: "error", error: e.retryable ? `${e.message}; gave up after ${state.submit_attempts} attempts` : e.message };
      }
    }
    return pollUntilDone(client, images, ctx, state.polling_url!, request, opts, backoff);
  };
}

async function pollUntilDone(client: BflClient, images: ImageStore, ctx: JobRunContext, url: string, request: GenerationRequest, opts: BflOptions, backoff: (n: number) => number): Promise<RunResult> {
  const started = Date.now();
  let failures = 0;
  while (!ctx.signal.aborted) {
    let r: BflResult;
    try {
      r = await client.poll(url);
      failures = 0;
    } catch (e) {
      if (!(e instanceof BflError) || !e.retryable || ++failures >= (opts.maxSubmitAttempts ?? 6)) return { state: "error", error: (e as Error).message };
      await sleep(backoff(failures), ctx.signal);
      continue;
    }
    switch (r.status) {
      case "Ready":
        return ready(client, images, r, request, started);
      case "Request Moderated":
        return { state: "request_moderated", error: detailText({ detail: r.details ?? "flagged by BFL's moderation" }) };
      case "Content Moderated":
        return { state: "content_moderated", error: detailText({ detail: r.details ?? "flagged by BFL's moderation" }) };
      case "Error":
      case "Failed":
        return { state: "error", error: `BFL: ${detailText({ detail: r.details ?? "generation failed" })}` };
      case "Task not found":
        return { state: "error", error: "BFL no longer knows this task (it expired)" };
      default:
        if (typeof r.progress === "number") ctx.progress({ step: 0, steps: 0, fraction: r.progress });
        await sleep(opts.pollMs, ctx.signal);
    }
  }
  return { state: "cancelled", error: "cancelled" };
}

async function ready(client: BflClient, images: ImageStore, r: BflResult, request: GenerationRequest, started: number): Promise<RunResult> {
  const sample = r.result?.sample;
  if (!sample) return { state: "error", error: "BFL reported Ready without a sample URL" };
  let bytes: Buffer | undefined;
  for (let attempt = 1; !bytes; attempt++) {
    try {
      bytes = await client.download(sample);
    } catch (e) {
      // The URL expires 10 minutes after Ready: a few quick retries, then give up.
      if (!(e instanceof BflError) || !e.retryable || attempt >= 3) return { state: "error", error: (e as Error).message };
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  const meta = await sharp(bytes).metadata().catch(() => null);
  if (!meta?.width || !meta.height) return { state: "error", error: "BFL's sample is not a readable image" };
  const name = await images.put(bytes, extFor(meta.format));
  return {
    state: "ready",
    result: {
      images: [name], width: meta.width, height: meta.height, seed: r.result?.seed ?? request.seed ?? null,
      steps: request.steps ?? null, guidance: request.guidance ?? null, started_at: started, ended_at: Date.now(), by: "bfl",
    },
  };
}
