// Images through an S3-compatible store (issue 16 item 8): `flux2 serve
// --queue … --store s3://…` and a `flux2 worker` with the same --store, each
// in its own data folder, against s3rver (an S3-compatible server in Node, a
// dev dependency) on loopback and a real redis-server. The images must reach
// the bucket and come back from it, never through Redis, and the server must
// serve them from its own folder.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import S3rver from "s3rver";
import { ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Redis } from "ioredis";
import { api, serverUrl, spawnCli, stop, TINY, untilDone, waitFor, type Child } from "./helpers/net.js";
import { redisAvailable, startRedis, type TestRedis } from "./helpers/redis.js";
import { pngImage, tempDir } from "./helpers/server.js";
import { ImageStore } from "../src/server/images.js";
import { redisOptions } from "../src/server/redis_conn.js";
import { parseS3Url, s3ClientConfig, S3Images } from "../src/server/s3_images.js";
import { serveConfig } from "../src/cli/serve.js";

const MODEL = "flux-2-klein-4b";
const BUCKET = "flux2-test";
// s3rver's fixed credentials.
const KEYS = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" };

function events(c: Child, kind: string): { id: string }[] {
  return c.out.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((e) => e.event === kind);
}

async function exitOf(c: Child): Promise<{ code: number | string; text: string }> {
  const code = await c.exited;
  return { code, text: [...c.err, ...c.out].join("\n") };
}

describe("--store s3:// (parsing, refusals)", () => {
  test("locations are read strictly and said back in one canonical form", () => {
    assert.deepEqual(parseS3Url("s3://flux2-test"), { bucket: "flux2-test", prefix: "" });
    assert.deepEqual(parseS3Url("s3://flux2-test/a/b/"), { bucket: "flux2-test", prefix: "a/b" });
    for (const bad of ["flux2-test", "s3:/x", "https://b/x", "s3://UPPER", "s3://ab", "s3://b..c", "s3://bucket/a//b", "s3://bucket/../x", "s3://bucket/x?y=1"]) {
      assert.throws(() => parseS3Url(bad), /--store: .*(S3 location|bucket name|path segment)/, bad);
    }
  });

  test("endpoint and region: flags first, then the standard AWS variables; path style for a custom endpoint", () => {
    assert.deepEqual(s3ClientConfig({ url: "s3://b1b" }, {}), { endpoint: undefined, region: undefined, forcePathStyle: false });
    assert.deepEqual(s3ClientConfig({ url: "s3://b1b" }, { AWS_ENDPOINT_URL_S3: "http://s3.local:9000", AWS_ENDPOINT_URL: "http://other" }),
      { endpoint: "http://s3.local:9000", region: "us-east-1", forcePathStyle: true });
    assert.deepEqual(s3ClientConfig({ url: "s3://b1b", region: "eu-west-3" }, { AWS_ENDPOINT_URL: "http://minio:9000", AWS_REGION: "x" }),
      { endpoint: "http://minio:9000", region: "eu-west-3", forcePathStyle: true });
    assert.equal(s3ClientConfig({ url: "s3://b1b" }, { AWS_DEFAULT_REGION: "ap-south-1" }).region, "ap-south-1");
    assert.throws(() => s3ClientConfig({ url: "s3://b1b", endpoint: "minio:9000" }, {}), /must be http:\/\/ or https:\/\/|not a URL/);
  });

  test("flux2 serve: --store needs --queue; the S3 flags need --store", () => {
    assert.throws(() => serveConfig(["--store", "s3://flux2-test"]), /needs --queue/);
    assert.throws(() => serveConfig(["--queue", "redis://127.0.0.1:1", "--s3-endpoint", "http://x"]), /go with --store/);
    const cfg = serveConfig(["--queue", "redis://127.0.0.1:1", "--store", "s3://flux2-test/p/", "--s3-endpoint", "http://127.0.0.1:9"])!;
    assert.deepEqual(cfg.store, { url: "s3://flux2-test/p/", endpoint: "http://127.0.0.1:9", region: undefined });
  });
});

describe("worker and server on separate data folders, images through an S3 store (s3rver)", { skip: redisAvailable() ? false : "redis-server is not installed", timeout: 900_000 }, () => {
  let redis: TestRedis;
  let s3: S3rver;
  let endpoint = "";
  let env: Record<string, string> = {};
  let server: Child;
  let worker: Child | undefined;
  let url = "";
  const serverDir = tempDir("flux2-s3srv-"), workerDir = tempDir("flux2-s3wrk-");
  const files = (dir: string) => fs.readdirSync(path.join(dir, "images"), { recursive: true }).map(String).filter((f) => /\.(png|jpg)$/.test(f)).map((f) => path.basename(f));
  const client = () => new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
  const startWorker = (name: string, store: string[]) =>
    spawnCli(["worker", "--queue", redis.url, "--model", `${MODEL}=${TINY}`, "--data", workerDir, "--threads", "1", "--name", name, ...store], env);
  const untilReady = (w: Child) => waitFor("the worker", () => events(w, "ready").length > 0 || (w.proc.exitCode !== null && Promise.reject(new Error(w.err.join("\n")))), 60_000);

  before(async () => {
    s3 = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory: tempDir("flux2-s3rver-"), configureBuckets: [{ name: BUCKET, configs: [] }] });
    const addr = await s3.run();
    endpoint = `http://127.0.0.1:${addr.port}`;
    // Only the standard AWS variables: no flags, as a deployment would set them.
    env = { ...KEYS, AWS_ENDPOINT_URL_S3: endpoint };
    redis = await startRedis();
    server = spawnCli(["serve", "--port", "0", "--data", serverDir, "--queue", redis.url, "--store", `s3://${BUCKET}/run1`], env);
    url = await serverUrl(server, 60_000);
    // The same store spelled with a trailing slash: compared in canonical form.
    worker = startWorker("s3-worker", ["--store", `s3://${BUCKET}/run1/`]);
    await untilReady(worker);
    await waitFor("the model to be advertised", async () => (await api(url, "GET", "/v1/models")).body.models.some((m: any) => m.id === MODEL && m.available), 15_000);
  });

  after(async () => {
    if (worker) await stop(worker);
    if (server) await stop(server);
    await redis?.stop();
    await s3?.close();
  });

  test("text to image and an edit: images go through the bucket, not Redis, and the server serves them from its own folder", async () => {
    const t2i = await untilDone(url, (await api(url, "POST", `/v1/${MODEL}`, { prompt: "far away", width: 64, height: 64, seed: 1 })).body.id, {}, 90_000);
    assert.equal(t2i.status, "Ready", JSON.stringify(t2i));
    const input = await pngImage(80, 64);
    const sub = await api(url, "POST", `/v1/${MODEL}`, { prompt: "edit it", input_image: input.toString("base64"), seed: 2 });
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    const edit = await untilDone(url, sub.body.id, {}, 90_000);
    assert.equal(edit.status, "Ready", JSON.stringify(edit));

    const c = client();
    const listed = await c.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: "run1/" }));
    c.destroy();
    const objects = (listed.Contents ?? []).map((o) => o.Key);
    const inputName = `${createHash("sha256").update(input).digest("hex")}.png`;
    for (const r of [t2i, edit]) {
      const name = path.basename(new URL(r.result.sample).pathname);
      assert.ok(r.result.sample.startsWith(url), `served by the API server: ${r.result.sample}`);
      const img = await fetch(r.result.sample);
      assert.equal(img.status, 200);
      assert.equal(createHash("sha256").update(Buffer.from(await img.arrayBuffer())).digest("hex"), name.split(".")[0]);
      // Written by the worker in its folder, put into the bucket, copied into the server's folder.
      assert.ok(files(workerDir).includes(name) && files(serverDir).includes(name), name);
      assert.ok(objects.includes(`run1/${name}`), `run1/${name} in ${objects.join(", ")}`);
    }
    // The input went the other way: submitted to the server, put into the bucket, read from it by the worker.
    assert.ok(objects.includes(`run1/${inputName}`));
    assert.ok(files(serverDir).includes(inputName) && files(workerDir).includes(inputName));
    // Nothing travelled through Redis.
    const r = new Redis(redisOptions(redis.url, {}));
    try {
      assert.deepEqual(await r.keys("flux2:image:*"), []);
    } finally {
      r.disconnect();
    }
  });

  test("copies are checked against their names, and a missing object says where it was looked for", async () => {
    const a = new ImageStore(path.join(tempDir(), "images")), b = new ImageStore(path.join(tempDir(), "images"));
    const settings = { url: `s3://${BUCKET}/unit` };
    const e = { ...KEYS, AWS_ENDPOINT_URL_S3: endpoint };
    const sa = new S3Images(settings, a, e), sb = new S3Images(settings, b, e);
    try {
      const name = await a.put(await pngImage(8, 8), "png");
      await sa.push(name);
      await sa.push(name); // already there: skipped
      await sb.pull(name);
      assert.ok(b.has(name));
      const other = `${"0".repeat(64)}.png`;
      const c = client();
      await c.send(new PutObjectCommand({ Bucket: BUCKET, Key: `unit/${other}`, Body: "not those bytes" }));
      c.destroy();
      await assert.rejects(sb.pull(other), /does not match its name \(corrupt copy\)/);
      assert.ok(!b.has(other));
      await assert.rejects(sb.pull(`${"1".repeat(64)}.png`), new RegExp(`no longer in the S3 store s3://${BUCKET}/unit at ${endpoint}.*submit the job again`));
    } finally {
      sa.close();
      sb.close();
    }
  });

  test("start-up refuses a missing bucket, wrong credentials and --image-ttl, naming the store and what to do", { timeout: 300_000 }, async () => {
    const base = ["worker", "--queue", redis.url, "--model", `${MODEL}=${TINY}`, "--data", tempDir()];
    // All at once: each is a process start, slow on a loaded machine. (A wrong access key id, not a wrong
    // secret: s3rver checks that the key exists but does not verify SigV4 signatures.)
    const [missing, denied, ttl, srv] = await Promise.all([
      exitOf(spawnCli([...base, "--store", "s3://no-such-bucket"], env)),
      exitOf(spawnCli([...base, "--store", `s3://${BUCKET}`], { ...env, AWS_ACCESS_KEY_ID: "NOT-A-KEY" })),
      exitOf(spawnCli([...base, "--store", `s3://${BUCKET}`, "--image-ttl", "60"], env)),
      exitOf(spawnCli(["serve", "--port", "0", "--data", tempDir(), "--queue", redis.url, "--store", "s3://no-such-bucket"], env)),
    ]);
    assert.equal(missing.code, 1, missing.text);
    assert.match(missing.text, /S3 store s3:\/\/no-such-bucket at http:\/\/127\.0\.0\.1:\d+: the bucket does not exist: create it first/);
    assert.equal(denied.code, 1, denied.text);
    assert.match(denied.text, /access denied: check AWS_ACCESS_KEY_ID/);
    assert.equal(ttl.code, 1, ttl.text);
    assert.match(ttl.text, /--image-ttl .* lifecycle rule/);
    assert.equal(srv.code, 1, srv.text);
    assert.match(srv.text, /the bucket does not exist/);
    assert.doesNotMatch(srv.text, /listening on/);
  });

  test("a worker without the server's --store refuses its jobs, saying which --store to give", async () => {
    await stop(worker!);
    worker = startWorker("redis-worker", []);
    await untilReady(worker);
    const r = await untilDone(url, (await api(url, "POST", `/v1/${MODEL}`, { prompt: "mismatch", width: 64, height: 64, seed: 3 })).body.id, {}, 60_000);
    assert.equal(r.status, "Error", JSON.stringify(r));
    assert.match(JSON.stringify(r), /images in s3:\/\/flux2-test\/run1, but worker redis-worker uses Redis: start every worker with the server's --store s3:\/\/flux2-test\/run1/);
  });
});
