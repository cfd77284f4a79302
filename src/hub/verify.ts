// Checksums of downloaded files, computed while streaming (an 8 GB shard is
// never held in memory): the sha256 the Hub lists for LFS files (`lfs.oid`),
// and for plain git files the git blob id, sha1("blob <size>\0" + content).

import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";

export interface Expected {
  size: number;
  /** LFS files: hex sha256 of the content. */
  sha256?: string;
  /** Plain git files: hex git blob sha1. */
  gitSha1?: string;
}

export interface Digest {
  size: number;
  sha256?: string;
  gitSha1?: string;
}

/** Incremental hasher for exactly the checksums `expected` names. */
export class FileHasher {
  private sha256: Hash | null = null;
  private sha1: Hash | null = null;
  private bytes = 0;

  constructor(private readonly expected: Expected) {
    this.reset();
  }

  /** Start over (e.g. when a server ignored our Range request and sent the file from byte 0). */
  reset(): void {
    this.bytes = 0;
    this.sha256 = this.expected.sha256 ? createHash("sha256") : null;
    this.sha1 = null;
    if (this.expected.gitSha1) {
      this.sha1 = createHash("sha1");
      this.sha1.update(`blob ${this.expected.size}\0`);
    }
  }

  update(chunk: Uint8Array): void {
    this.bytes += chunk.byteLength;
    this.sha256?.update(chunk);
    this.sha1?.update(chunk);
  }

  get size(): number {
    return this.bytes;
  }

  digest(): Digest {
    return {
      size: this.bytes,
      ...(this.sha256 && { sha256: this.sha256.digest("hex") }),
      ...(this.sha1 && { gitSha1: this.sha1.digest("hex") }),
    };
  }
}

/** Feed the first `length` bytes of `file` (all of it if omitted) into `hasher`. */
export async function hashFileInto(hasher: FileHasher, file: string, length?: number, onBytes?: (n: number) => void): Promise<void> {
  if (length === 0) return;
  const stream = fs.createReadStream(file, {
    highWaterMark: 4 << 20,
    ...(length !== undefined && { start: 0, end: length - 1 }),
  });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hasher.update(chunk);
    onBytes?.(chunk.byteLength);
  }
}

/** Hash a whole file for `expected`. */
export async function hashFile(file: string, expected: Expected, onBytes?: (n: number) => void): Promise<Digest> {
  const h = new FileHasher(expected);
  await hashFileInto(h, file, undefined, onBytes);
  return h.digest();
}

/** null when `got` matches `expected`, else a sentence naming the first difference. */
export function checksumProblem(expected: Expected, got: Digest): string | null {
  if (got.size !== expected.size) return `expected ${expected.size} bytes, got ${got.size}`;
  if (expected.sha256 && got.sha256 !== expected.sha256.toLowerCase()) {
    return `expected sha256 ${expected.sha256}, got ${got.sha256}`;
  }
  if (expected.gitSha1 && got.gitSha1 !== expected.gitSha1.toLowerCase()) {
    return `expected git blob sha1 ${expected.gitSha1}, got ${got.gitSha1}`;
  }
  return null;
}

/** The git blob id of an in-memory buffer (for tests and small files). */
export function gitBlobSha1(content: Uint8Array): string {
  return createHash("sha1").update(`blob ${content.byteLength}\0`).update(content).digest("hex");
}
