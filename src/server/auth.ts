// API keys (header x-key, as on BFL's API). Only a SHA-256 of each key is
// stored: keys are 32 random bytes, so a plain hash is enough (no password
// stretching needed) and lookups are one indexed query, which also makes a
// revocation take effect on the next request.

import { createHash, randomBytes } from "node:crypto";
import { ApiError } from "./errors.js";
import type { JobStore, KeyRow } from "./store.js";

export interface Principal {
  /** null: anonymous (allowed only when keys are not required). */
  keyId: string | null;
  maxActive: number | null;
  /** Said to the client in the x-flux2-warning header (an unknown key on an open server). */
  warning?: string;
}

/** The answer header that carries `Principal.warning`. */
export const WARNING_HEADER = "x-flux2-warning";

export function hashKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** A new key: the secret is shown once; the row keeps its hash and a short prefix to recognise it by. */
export function createKey(store: JobStore, name: string, maxActive: number | null): { key: string; row: KeyRow } {
  const id = `k_${randomBytes(6).toString("hex")}`;
  const key = `f2k_${randomBytes(32).toString("base64url")}`;
  const row: KeyRow = { id, name, hash: hashKey(key), prefix: key.slice(0, 10), created_at: Date.now(), revoked_at: null, max_active: maxActive };
  store.addKey(row);
  return { key, row };
}

/**
 * Who is calling: throws 401/403 when a key is required and missing, unknown or
 * revoked. When keys are not required, an unknown key is ignored and the call
 * is served as anonymous, with a warning: BFL clients always send a key (their
 * own BFL key), and a local server without keys must still answer them. A
 * revoked key stays refused: someone took it away on purpose.
 */
export function authenticate(store: JobStore, header: string | string[] | undefined, required: boolean): Principal {
  const key = Array.isArray(header) ? header[0] : header;
  if (!key) {
    if (required) throw new ApiError(401, "Not authenticated: send your API key in the x-key header", { "www-authenticate": "x-key" });
    return { keyId: null, maxActive: null };
  }
  const row = store.keyByHash(hashKey(key));
  if (!row && !required) return { keyId: null, maxActive: null, warning: "unknown API key ignored: this server does not require keys, so the request is served as anonymous" };
  if (!row) throw new ApiError(403, "Invalid API key");
  if (row.revoked_at !== null) throw new ApiError(403, "This API key has been revoked");
  return { keyId: row.id, maxActive: row.max_active };
}
