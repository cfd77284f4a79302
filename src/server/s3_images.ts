// Images between the API server and `flux2 worker` processes through an
// S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, s3rver …), for
// deployments that would rather not carry images through Redis: `--store
// s3://BUCKET[/PREFIX]` on the server and on every worker.
//
// It works like the Redis transfer (src/server/redis_images.ts): the server
// puts a job's input images into the bucket when it queues the job, a worker
// copies them into its own data folder, runs, and puts its outputs into the
// bucket; the server copies them into its own store when the job completes
// and serves them from there. Objects are named by content hash
// (PREFIX/<sha256>.<ext>), so a copy is checked against its name and putting
// one twice is skipped. Nothing here deletes objects: their lifetime is the
// bucket's lifecycle rule (docs/server.md shows one), since S3 has no
// per-object expiry to set at upload time.
//
// The client is AWS's own (@aws-sdk/client-s3): endpoint, region and
// credentials come from the standard AWS settings (AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, instance
// roles; AWS_REGION; AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), or from
// --s3-endpoint / --s3-region.

import type { S3Client } from "@aws-sdk/client-s3";
import { IMAGE_TYPES, isImageName, type ImageStore } from "./images.js";
import { ImageExpiredError, putTransferred, type ImageTransfer } from "./redis_images.js";

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slash; "" for the bucket's root. */
  prefix: string;
}

export interface S3Settings {
  /** s3://BUCKET[/PREFIX] */
  url: string;
  /** An S3-compatible endpoint (http(s)://host:port); default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS itself. */
  endpoint?: string;
  /** Default: $AWS_REGION, $AWS_DEFAULT_REGION, the AWS profile's region; us-east-1 for a custom endpoint. */
  region?: string;
}

/** s3://BUCKET[/PREFIX] → bucket and prefix; throws a message saying what to write instead. */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?$/.exec(url);
  if (!m) throw new Error(`--store: "${url}" is not an S3 location; write s3://BUCKET or s3://BUCKET/PREFIX (no query or fragment)`);
  const bucket = m[1];
  // The S3 naming rules (3–63 lower-case letters, digits, dots and hyphens), which every compatible server accepts.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes("..")) {
    throw new Error(`--store: "${bucket}" is not a valid bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit`);
  }
  const prefix = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (prefix.split("/").some((p, i, all) => p === "" && all.length > 1 || p === "." || p === "..")) {
    throw new Error(`--store: "${url}" has an empty, "." or ".." path segment in its prefix`);
  }
  return { bucket, prefix };
}

/** The canonical form of a location (what server and workers compare). */
export const s3Url = (l: S3Location) => `s3://${l.bucket}${l.prefix ? `/${l.prefix}` : ""}`;

/** The endpoint and region a worker or server will use, from flags first, then the standard AWS variables. */
export function s3ClientConfig(s: S3Settings, env: NodeJS.ProcessEnv = process.env): { endpoint?: string; region?: string; forcePathStyle: boolean } {
  const endpoint = s.endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  if (endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch {
      throw new Error(`S3 endpoint "${endpoint}" is not a URL; write http(s)://HOST[:PORT]`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`S3 endpoint "${endpoint}" must be http:// or https://`);
  }
  // Without a region a custom endpoint still needs one for signing; S3-compatible servers accept us-east-1.
  const region = s.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? (endpoint ? "us-east-1" : undefined);
  // Path-style addressing (http://host/bucket/key) for a custom endpoint: MinIO, Ceph and s3rver expect it,
  // and it needs no wildcard DNS. AWS itself gets virtual-host style.
  return { endpoint, region, forcePathStyle: endpoint !== undefined };
}

const httpStatus = (e: unknown) => (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

export class S3Images implements ImageTransfer {
  readonly location: S3Location;
  /** s3://BUCKET[/PREFIX], canonical */
  readonly url: string;
  readonly where: string;
  private sdk: Promise<{ client: S3Client; m: typeof import("@aws-sdk/client-s3") }>;

  constructor(readonly settings: S3Settings, private local: ImageStore, env: NodeJS.ProcessEnv = process.env) {
    this.location = parseS3Url(settings.url);
    this.url = s3Url(this.location);
    const c = s3ClientConfig(settings, env);
    this.where = `${this.url}${c.endpoint ? ` at ${c.endpoint}` : ""}`;
    // Keys in `env` are used as given (what the SDK's own chain does with process.env first); without
    // them the SDK's chain looks further: AWS_PROFILE and ~/.aws, SSO, instance and container roles.
    const credentials = env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
      ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, sessionToken: env.AWS_SESSION_TOKEN }
      : undefined;
    // Loaded on first use: the SDK is large, and only servers and workers with --store need it.
    this.sdk = import("@aws-sdk/client-s3").then((m) => ({
      m,
      client: new m.S3Client({
        endpoint: c.endpoint, region: c.region, forcePathStyle: c.forcePathStyle, credentials,
        // The SDK's default CRC32 checksums on every request are refused by some S3-compatible servers; the
        // content hash in each object's name is checked on every copy instead.
        requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
        maxAttempts: 3,
      }),
    }));
    this.sdk.catch(() => {}); // a failed load is reported by the first use (check() at start-up)
  }

  private key(name: string): string {
    return this.location.prefix ? `${this.location.prefix}/${name}` : name;
  }

  /**
   * Start-up check: the bucket exists and these credentials reach it. Throws a message naming the
   * store and what to do, so a misconfigured server or worker exits instead of failing every job.
   */
  async check(): Promise<void> {
    try {
      const { client, m } = await this.sdk;
      await client.send(new m.HeadBucketCommand({ Bucket: this.location.bucket }));
    } catch (e) {
      const status = httpStatus(e);
      const why = status === 404 ? "the bucket does not exist: create it first"
        : status === 403 || status === 401 ? "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy"
        : /region/i.test((e as Error).message) ? "no region: set AWS_REGION or --s3-region"
        : /credential/i.test((e as Error).message) ? "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        : `cannot reach it (${(e as Error).name}: ${(e as Error).message}); check --s3-endpoint / AWS_ENDPOINT_URL_S3`;
      throw new Error(`S3 store ${this.where}: ${why}`);
    }
  }

  /** Make local image `name` available to the other side (its lifetime is the bucket's lifecycle rule). */
  async push(name: string): Promise<void> {
    const key = this.key(name);
    const { client, m } = await this.sdk;
    try {
      await client.send(new m.HeadObjectCommand({ Bucket: this.location.bucket, Key: key }));
      return; // content-addressed: the same name is the same bytes
    } catch (e) {
      if (httpStatus(e) !== 404) throw e;
    }
    const bytes = await this.local.read(name);
    await client.send(new m.PutObjectCommand({
      Bucket: this.location.bucket, Key: key, Body: bytes, ContentLength: bytes.length,
      ContentType: IMAGE_TYPES[name.split(".")[1]] ?? "application/octet-stream",
    }));
  }

  /** Copy image `name` from the bucket into the local store, unless it is already there. */
  async pull(name: string): Promise<void> {
    if (!isImageName(name)) throw new Error(`not an image name: ${name}`);
    if (this.local.has(name)) return;
    const { client, m } = await this.sdk;
    let bytes: Uint8Array;
    try {
      const r = await client.send(new m.GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }));
      bytes = await r.Body!.transformToByteArray();
    } catch (e) {
      if (httpStatus(e) === 404 || (e as Error).name === "NoSuchKey") throw new ImageExpiredError(name, `the S3 store ${this.where}`, "the bucket's lifecycle rule removed it, or another store was configured");
      throw e;
    }
    await putTransferred(this.local, name, bytes, this.where);
  }

  close(): void {
    void this.sdk.then(({ client }) => client.destroy(), () => {});
  }
}
