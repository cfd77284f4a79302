// Submitting, reading and cancelling jobs: the steps every route shares,
// whichever queue runs the job (this process, Redis workers, or BFL).

import { createHash, randomInt, randomUUID } from "node:crypto";
import type { GenerationRequest } from "../api/request.js";
import type { Principal } from "./auth.js";
import type { MemoryBudget } from "./budget.js";
import type { StorageHealth } from "./storage.js";
import type { ServerConfig } from "./config.js";
import { ApiError, fieldError } from "./errors.js";
import { checkResolves, type UrlPolicy } from "../api/fetch_image.js";
import type { ImageStore } from "./images.js";
import { storeInputs } from "./inputs.js";
import { checkRepaintSize, repaints } from "../api/prepare.js";
import { sizeRuleFor } from "../pipeline/variants.js";
import { InvalidRequestError } from "../util/errors.js";
import type { Lifecycle } from "./lifecycle.js";
import type { ModelRegistry } from "./models.js";
import type { LocalQueue } from "./queue_local.js";
import type { RedisDispatcher } from "./queue_redis.js";
import type { IdempotencyClaim, IdempotencyHit, JobKind, JobRow, JobStore } from "./store.js";
import { validateRequest } from "./validate.js";
import { LoraNameError, resolveLoras } from "./loras.js";
import { TERMINAL } from "./views.js";
import { checkModerationFields } from "./moderation.js";

export interface Queues {
  local?: LocalQueue;
  provider?: LocalQueue;
  redis?: RedisDispatcher;
}

/** BFL-like 429 for a key at its limit of queued + running tasks. */
function tooManyActive(max: number): ApiError {
  return new ApiError(429, `You have reached the maximum number of active tasks (${max}) for this API key: wait for some to finish (or cancel them) and try again`, { "retry-after": "5" });
}

/**
 * An Idempotency-Key header (as in the IETF draft and Stripe's API): 1 to 255 visible ASCII
 * characters, scoped to the API key that sent it, remembered for 24 hours with a hash of the
 * request so that reusing a key for a different request is refused instead of answered wrongly.
 */
function idempotencyClaim(key: string, who: Principal, modelId: string, body: unknown): IdempotencyClaim {
  if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw new ApiError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)");
  }
  const requestHash = createHash("sha256").update(modelId).update("\0").update(JSON.stringify(body ?? null)).digest("hex");
  return { scope: who.keyId ?? "", key, requestHash };
}

function replay(hit: IdempotencyHit): { id: string } {
  if (!hit.sameRequest) {
    throw new ApiError(422, "This Idempotency-Key was already used for a different request in the last 24 hours: use a new key for a new request");
  }
  return { id: hit.jobId };
}

/** How long a submit waits for Redis to take the job before answering anyway (the sweep adds it later). */
export const ENQUEUE_WAIT_MS = 2000;

export class JobService {
  constructor(
    private cfg: ServerConfig,
    private store: JobStore,
    private images: ImageStore,
    private registry: ModelRegistry,
    private lifecycle: Lifecycle,
    private queues: Queues,
    private budget?: MemoryBudget,
    private health?: StorageHealth,
  ) {}

  get policy(): UrlPolicy {
    return { allowPrivate: this.cfg.allowPrivateUrls, timeoutMs: this.cfg.urlTimeoutMs, maxBytes: this.cfg.urlMaxBytes };
  }

  private async model(id: string) {
    let m = this.registry.get(id);
    if (!m && this.queues.redis) {
      await this.queues.redis.refreshModels().catch(() => {}); // a worker may have just come up
      m = this.registry.get(id);
    }
    if (m) return m;
    if (this.registry.isProvider(id)) throw new ApiError(404, `Model ${id} runs on Black Forest Labs' API: start the server with --bfl-key (or BFL_API_KEY) to use it`);
    const known = this.registry.list().filter((x) => x.available).map((x) => x.id);
    throw new ApiError(404, `Model not found: ${id} (this server has ${known.join(", ") || "no models"})`);
  }

  /** Validate, store inputs, insert (within the caller's limits) and hand to a queue. */
  async submit(modelId: string, body: unknown, who: Principal, idempotencyKey?: string): Promise<{ id: string; warnings: string[] }> {
    if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
    const idem = idempotencyKey === undefined ? undefined : idempotencyClaim(idempotencyKey, who, modelId, body);
    // A retried submit (the connection dropped before the answer) gets its first job back, with no new work.
    const seen = idem && this.store.idempotent(idem);
    if (seen) return { ...replay(seen), warnings: [] };
    const model = await this.model(modelId);
    const keyMax = who.keyId ? who.maxActive ?? this.cfg.maxActivePerKey : 0;
    // Cheap early refusal before fetching and decoding images; the insert below re-checks atomically.
    if (who.keyId && keyMax > 0 && this.store.activeCount(who.keyId) >= keyMax) throw tooManyActive(keyMax);
    const warnings: string[] = [];
    const request: GenerationRequest = validateRequest(body, model, warnings);
    if (model.kind === "local") checkModerationFields(request, this.cfg.moderation, model.upsamplingProblem);
    // Nothing is written on a disk without room: a clear 503 now instead of a half-stored job.
    this.health?.assertRoom();
    try {
      resolveLoras(this.cfg.loraDir, request.loras);
    } catch (e) {
      if (e instanceof LoraNameError) throw fieldError("loras", e.message);
      throw e;
    }
    if (request.webhook_url) {
      await checkResolves(request.webhook_url, this.policy).catch((e: Error) => { throw fieldError("webhook_url", e.message, "url_forbidden"); });
    }
    // The seed is fixed now, so a retried run produces the same image.
    request.seed ??= randomInt(0, 2 ** 32);
    const stored = await storeInputs(request, this.images, {
      policy: this.policy, maxPixels: this.cfg.maxInputPixels, requestPixels: this.cfg.maxRequestPixels, budget: this.budget,
      // An edit's output size follows its image: checked from the header now (a 422), not when the job runs.
      checkSizes: (sizes) => {
        if (model.kind !== "local" || !repaints(request) || !sizes.input_image) return;
        try {
          checkRepaintSize(request, sizes.input_image.width, sizes.input_image.height, sizeRuleFor(model.caps.multipleOf));
        } catch (e) {
          if (e instanceof InvalidRequestError) throw fieldError(request.width !== undefined || request.height !== undefined ? (request.width !== undefined ? "width" : "height") : "input_image", e.message);
          throw e;
        }
      },
    });
    const kind: JobKind = model.kind === "provider" ? "provider" : this.cfg.queue ? "redis" : "local";
    if (kind === "local" && !this.queues.local) throw new ApiError(503, `no local executor for ${modelId}`);
    const id = randomUUID();
    const row = { id, model: modelId, kind, key_id: who.keyId, request: JSON.stringify(stored) };
    const verdict = this.store.submit(row, { keyMax, queueMax: this.cfg.maxQueued }, idem);
    if (typeof verdict === "object") return { ...replay(verdict), warnings: [] }; // a concurrent submit with the same key won
    if (verdict === "key_limit") throw tooManyActive(keyMax);
    if (verdict === "queue_full") throw new ApiError(429, `The server's queue is full (${this.cfg.maxQueued} tasks waiting): try again later`, { "retry-after": "10" });
    await this.dispatch(row);
    return { id, warnings };
  }

  private async dispatch(row: Pick<JobRow, "id" | "model" | "kind" | "request">): Promise<void> {
    if (row.kind === "local") return this.queues.local!.notify();
    if (row.kind === "provider") return this.queues.provider!.notify();
    // If Redis cannot be reached now, the row stays queued and the sweep adds it once Redis is back.
    // BullMQ's connection holds commands while it reconnects (it must, for its blocking reads), so the
    // add could wait for as long as Redis is away: the answer waits at most ENQUEUE_WAIT_MS for it.
    const added = this.queues.redis!.enqueue(row).catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([added, new Promise((r) => { timer = setTimeout(r, ENQUEUE_WAIT_MS); })]);
    clearTimeout(timer);
  }

  /** A job the caller may see: its own, or any when the caller is anonymous (keys not required). */
  get(id: string, who: Principal): JobRow | undefined {
    // Fail closed: a route reached without an identity (a bug in the auth hook) answers 401, never a job.
    if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
    const row = this.store.get(id);
    if (!row || (who.keyId && row.key_id !== who.keyId)) return undefined;
    return row;
  }

  list(who: Principal, limit: number, before?: string): JobRow[] {
    if (!who) throw new ApiError(401, "Not authenticated: send your API key in the x-key header");
    return this.store.list({ keyId: who.keyId, limit, before });
  }

  /** Cancel: a queued job never runs; a running one stops at its next check (decode, resize, each stage and step). */
  async cancel(id: string, who: Principal): Promise<JobRow> {
    const row = this.get(id, who);
    if (!row) throw new ApiError(404, "Task not found");
    if (TERMINAL.includes(row.state)) throw new ApiError(409, `The task already ended (${row.state})`);
    const before = this.store.cancel(id);
    if (!before) throw new ApiError(409, "The task ended before it could be cancelled");
    this.lifecycle.cancelled(id);
    if (before.kind === "local") this.queues.local?.cancel(id);
    else if (before.kind === "provider") this.queues.provider?.cancel(id);
    else await this.queues.redis?.cancel(before).catch(() => {});
    return this.store.get(id)!;
  }
}
