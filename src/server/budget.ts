// Budgets checked before any work is done on a request's input images:
//  - a per-request pixel budget over all of a request's images together (the
//    per-image cap alone let ten 64 MP images through in one 2.7 MB body);
//  - a server-wide memory budget for decoding inputs at submit time, so a burst
//    of big submits waits its turn (503 + Retry-After) instead of decoding at
//    once and multiplying the server's memory.
// The memory budget is derived from the memory plan of the models this process
// runs: what the machine has, less the largest model's planned peak (the
// generation thread may hold it at any time), less a reserve for the rest.

import * as os from "node:os";
import { openCheckpoint } from "../pipeline/checkpoint.js";
import { localModel } from "./models.js";
import { formatBytes, planMemory } from "../loaders/memory.js";
import type { ModelSpec } from "./config.js";
import { ApiError } from "./errors.js";

/** Decoded bytes per input pixel we count: 8-bit RGB out plus libvips' working copy of a row band (an estimate). */
export const DECODE_BYTES_PER_PIXEL = 4;
/** Kept free for the HTTP side, SQLite and the runtime itself. */
const RESERVE_BYTES = 1024 ** 3;
const MIN_BUDGET = 256 * 1024 ** 2;

export interface MemoryBudgetPlan {
  bytes: number;
  /** One line saying how the number was reached (printed at start-up, shown in /health). */
  why: string;
}

/**
 * Planned peak of the largest model served by this process, at its largest accepted size (the
 * square under its size rule: 2048² for FLUX.2's 4 MP, less for a small model whose folder
 * records its largest size) and its own text length, without references.
 */
export function plannedModelPeak(models: ModelSpec[]): number {
  let peak = 0;
  for (const m of models) {
    const ck = openCheckpoint(m.dir);
    const side = largestSide(m);
    peak = Math.max(peak, planMemory(ck, { width: side, height: side, batch: 1 }).peakBytes);
  }
  return peak;
}

/** The side of the largest square a model accepts (its /v1/models limits: the size rule and the folder's largest size). */
function largestSide(m: ModelSpec): number {
  const caps = localModel(m).caps;
  return Math.floor(Math.sqrt(caps.maxPixels) / caps.multipleOf) * caps.multipleOf;
}

/**
 * The server-wide memory budget for input decoding: machine memory − the
 * largest planned model peak − 1 GiB, at most a quarter of the machine and at
 * least 256 MiB. `override` (bytes, --memory-budget) wins.
 */
export function planMemoryBudget(models: ModelSpec[], override?: number, total = os.totalmem()): MemoryBudgetPlan {
  if (override !== undefined) return { bytes: override, why: `${formatBytes(override)} (--memory-budget)` };
  const peak = plannedModelPeak(models);
  const bytes = Math.max(MIN_BUDGET, Math.min(total / 4, total - peak - RESERVE_BYTES));
  return {
    bytes: Math.floor(bytes),
    why: `${formatBytes(bytes)}: ${formatBytes(total)} of memory − ${formatBytes(peak)} planned model peak − ${formatBytes(RESERVE_BYTES)} reserve (at most a quarter, at least ${formatBytes(MIN_BUDGET)})`,
  };
}

/** Bytes in use against a fixed total; a reservation that does not fit is refused at once (no waiting in the request). */
export class MemoryBudget {
  private used = 0;

  constructor(readonly total: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Reserve `bytes` for `what`; returns the release function. Throws a 413 if it can never fit, a 503 if it does not fit now. */
  reserve(bytes: number, what: string): () => void {
    if (bytes > this.total) {
      throw new ApiError(413, `${what} needs about ${formatBytes(bytes)} to decode, more than this server's whole input budget of ${formatBytes(this.total)}: send smaller images`);
    }
    if (this.used + bytes > this.total) {
      throw new ApiError(503, `The server is busy decoding other requests' images (${formatBytes(this.used)} of its ${formatBytes(this.total)} input budget in use; ${what} needs ${formatBytes(bytes)}): retry in a few seconds`, { "retry-after": "2" });
    }
    this.used += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= bytes;
    };
  }
}
