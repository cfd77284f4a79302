// Storage faults: a full disk, a read-only or unwritable data folder, an I/O
// error. They are the operator's to fix, not the client's, so a request that
// meets one gets a 503 with Retry-After and a message naming the path and what
// to do; background work (leases, results, webhooks) logs the fault and tries
// again later instead of crashing the process; /health reports it.

import * as fs from "node:fs";
import * as path from "node:path";
import { ApiError } from "./errors.js";
import { formatBytes } from "../loaders/memory.js";

/** Seconds a client is told to wait after a storage fault. */
export const STORAGE_RETRY_AFTER_S = 30;

type FaultKind = "full" | "read-only" | "permission" | "io";

const FS_CODES: Record<string, FaultKind> = { ENOSPC: "full", EDQUOT: "full", EROFS: "read-only", EACCES: "permission", EPERM: "permission", EIO: "io" };

/** better-sqlite3 codes are SQLITE_<primary>[_<extended>]. */
function sqliteKind(code: string): FaultKind | null {
  // SHMSIZE: the WAL index could not grow, which on Linux means no space left.
  if (code.startsWith("SQLITE_FULL") || code === "SQLITE_IOERR_SHMSIZE") return "full";
  if (code.startsWith("SQLITE_READONLY")) return "read-only";
  if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_PERM") || code.startsWith("SQLITE_AUTH")) return "permission";
  if (code.startsWith("SQLITE_IOERR")) return "io";
  return null;
}

function faultKind(e: unknown): FaultKind | null {
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== "string") return null;
  return FS_CODES[code] ?? sqliteKind(code);
}

/** Is this error the disk's fault (full, read-only, no permission, I/O)? */
export function isStorageError(e: unknown): boolean {
  return e instanceof StorageFault || faultKind(e) !== null;
}

export class StorageFault extends ApiError {
  constructor(readonly kind: FaultKind, readonly path: string, readonly code: string, message: string) {
    super(503, message, { "retry-after": String(STORAGE_RETRY_AFTER_S) });
    this.name = "StorageFault";
  }
}

function advice(kind: FaultKind, where: string): string {
  switch (kind) {
    case "full": return `the disk holding ${where} is full: free space there, or restart the server with --data on a larger disk`;
    case "read-only": return `${where} is on a read-only file system: remount it read-write, or restart the server with --data on a writable folder`;
    case "permission": return `${where} is not writable by this user: fix its ownership or permissions, or restart the server with --data on a writable folder`;
    case "io": return `reading or writing ${where} failed with an I/O error: check the disk`;
  }
}

/** A storage fault as a 503 (null if `e` is something else). `fallbackPath`: the data folder, when the error names no file. */
export function storageFault(e: unknown, fallbackPath: string): StorageFault | null {
  if (e instanceof StorageFault) return e;
  const kind = faultKind(e);
  if (!kind) return null;
  const err = e as { code: string; path?: string; message?: string };
  const where = err.path ?? fallbackPath;
  return new StorageFault(kind, where, err.code, `Storage fault (${err.code}): ${advice(kind, where)}. Jobs already accepted are kept; retry in ${STORAGE_RETRY_AFTER_S} s.`);
}

/**
 * mkdir -p, then a write-access check, that report the real cause: Node's
 * recursive mkdir answers ENOENT on a read-only file system, so the last step
 * is retried plainly to get EROFS or EACCES with the path.
 */
export function makeDataDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    fs.mkdirSync(dir);
  }
  // SQLite says only "unable to open database file" (SQLITE_CANTOPEN) for both of these: ask the OS first.
  fs.accessSync(dir, fs.constants.W_OK); // EROFS or EACCES, with the path
}

export interface HealthReport {
  ok: boolean;
  /** Why not, naming the path and what to do. */
  detail?: string;
  free_bytes?: number;
}

/**
 * Watches the data folder. `probe()` writes to the database and checks the
 * image folder is writable with enough free space; `report()` records a fault
 * met by background work, so /health says so until a probe succeeds again.
 */
export class StorageHealth {
  private lastFault: { message: string; at: number } | null = null;

  constructor(
    readonly dataDir: string,
    private writeProbe: () => void,
    private imagesRoot: string,
    /** Below this much free space, submits are refused (503) before anything is written. */
    readonly minFreeBytes: number,
    private log: (s: string) => void = () => {},
  ) {}

  /** Record a fault met by background work (logged once per distinct message). */
  report(what: string, e: unknown): void {
    const f = storageFault(e, this.dataDir);
    const message = f ? f.message : `${what}: ${(e as Error)?.message ?? String(e)}`;
    if (this.lastFault?.message !== message) this.log(`${what}: ${message}`);
    this.lastFault = { message, at: Date.now() };
  }

  /** Free bytes on the data folder's file system (null where statfs is unavailable). */
  freeBytes(): number | null {
    try {
      const s = fs.statfsSync(this.dataDir);
      return s.bavail * s.bsize;
    } catch {
      return null;
    }
  }

  /** Refuse new work while free space is below the floor. */
  assertRoom(): void {
    const free = this.freeBytes();
    // A disk with nothing free at all is full whatever the floor (--min-free 0).
    if (free !== null && free < Math.max(this.minFreeBytes, 1)) {
      const room = free === 0 ? "no free space left" : `${formatBytes(free)} free, less than the ${formatBytes(this.minFreeBytes)} this server keeps in reserve (--min-free)`;
      throw new StorageFault("full", this.dataDir, "ENOSPC", `Storage fault (ENOSPC): the disk holding ${this.dataDir} has ${room}: free space there, or restart the server with --data on a larger disk. Retry in ${STORAGE_RETRY_AFTER_S} s.`);
    }
  }

  /** An active check: a database write, a writable image folder, free space above the floor. */
  probe(): HealthReport {
    const free = this.freeBytes() ?? undefined;
    try {
      this.writeProbe();
      fs.accessSync(this.imagesRoot, fs.constants.W_OK);
      this.assertRoom();
    } catch (e) {
      const f = storageFault(e, e instanceof StorageFault ? e.path : path.join(this.dataDir, "flux2.db"));
      const detail = f ? f.message : `storage check failed: ${(e as Error).message}`;
      this.lastFault = { message: detail, at: Date.now() };
      return { ok: false, detail, free_bytes: free };
    }
    this.lastFault = null;
    return { ok: true, free_bytes: free };
  }

  /** The last recorded fault, if no probe has succeeded since. */
  get fault(): string | null {
    return this.lastFault?.message ?? null;
  }
}
