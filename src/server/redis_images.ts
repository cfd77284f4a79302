// Images between the API server and `flux2 worker` processes on other
// machines, through the Redis they already share: no shared folder needed.
//
// The server puts a job's input images into Redis when it queues the job; a
// worker copies them into its own image store before running, and puts its
// output images into Redis; the server copies those into its store when the
// job completes, and serves them from there as it serves local results. Every
// key expires (inputs after a day, outputs after --image-ttl, default an
// hour), so Redis memory stays bounded when nobody collects an image. Names
// are content hashes, so a copy is checked against its name and copying twice
// is harmless. Processes that do share a folder skip the copies they already
// have.

import { createHash } from "node:crypto";
import type { RedisClient } from "./redis_conn.js";
import { isImageName, type ImageStore } from "./images.js";
import { isStoreRef, storeName } from "./inputs.js";

export const imageKey = (name: string) => `flux2:image:${name}`;

/** How long queued jobs' input images stay in Redis: a job waiting longer fails, saying so. */
export const INPUT_TTL_S = 24 * 3600;
/** Default lifetime of output images in Redis, for the server to collect them. */
export const OUTPUT_TTL_S = 3600;

export class ImageExpiredError extends Error {
  constructor(name: string, where = "Redis", why = "its time to live passed, or Redis restarted without persistence") {
    super(`image ${name} is no longer in ${where} (${why}); submit the job again`);
    this.name = "ImageExpiredError";
  }
}

/** Where images travel between the server and workers: Redis (the default) or an S3 bucket (src/server/s3_images.ts). */
export interface ImageTransfer {
  /** Make local image `name` available to the other side, for about `ttlS` seconds where the store can expire keys. */
  push(name: string, ttlS: number): Promise<void>;
  /** Copy image `name` into the local store (unless there already); ImageExpiredError when it is gone. */
  pull(name: string): Promise<void>;
}

/**
 * Put bytes that arrived from another machine under content-addressed `name` (<sha256>.<ext>) into
 * the local store, refusing a copy whose hash does not match its name. `where` names the source.
 */
export async function putTransferred(local: ImageStore, name: string, bytes: Uint8Array, where: string): Promise<void> {
  const [hash, ext] = name.split(".");
  if (createHash("sha256").update(bytes).digest("hex") !== hash) throw new Error(`image ${name} in ${where} does not match its name (corrupt copy)`);
  await local.put(bytes, ext);
}

export class RedisImages implements ImageTransfer {
  constructor(private redis: RedisClient, private local: ImageStore) {}

  /** Make local image `name` available to other machines for `ttlS` seconds (refreshing the expiry when already there). */
  async push(name: string, ttlS: number): Promise<void> {
    const key = imageKey(name);
    // Refresh first: when the bytes are there, they need not travel again.
    if ((await this.redis.expire(key, ttlS)) === 1) return;
    await this.redis.set(key, await this.local.read(name), "EX", ttlS);
  }

  /** Copy image `name` from Redis into the local store, unless it is already there. */
  async pull(name: string): Promise<void> {
    if (!isImageName(name)) throw new Error(`not an image name: ${name}`);
    if (this.local.has(name)) return;
    const bytes = await this.redis.getBuffer(imageKey(name));
    if (!bytes) throw new ImageExpiredError(name);
    await putTransferred(this.local, name, bytes, "Redis");
  }
}

/** The image names a stored request refers to ("store:<name>" values of its image fields). */
export function storedInputs(request: unknown): string[] {
  if (!request || typeof request !== "object") return [];
  return Object.values(request as Record<string, unknown>).filter(isStoreRef).map(storeName);
}
