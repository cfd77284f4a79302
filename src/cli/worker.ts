// flux2 worker: runs jobs from Redis for `flux2 serve --queue`.

import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig, defaultDataDir } from "../server/config.js";
import { parseModelSpec } from "../server/models.js";
import { redisOptions } from "../server/redis_conn.js";
import { startRedisWorker } from "../server/redis_worker.js";
import { numFlag, s3Flags, untilSignal } from "./serve.js";
import { loadModerationConfig } from "../moderation/config.js";

const HELP = `usage: flux2 worker --queue redis://HOST:PORT --model ID=DIR [--model ID=DIR ...]
                    [--data DIR] [--store s3://BUCKET/PREFIX] [options]

Pulls jobs of its models from Redis (BullMQ) for \`flux2 serve --queue\`, runs
them with the models kept loaded, and writes the images to the store that the
server reads. Run as many workers as you like, on one machine or several. A
job whose worker dies is retried once by another worker; its result is
recorded once.

  --queue URL             the server's --queue: redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://...
                          (TLS) or redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]
                          (rediss+sentinel:// for TLS); the password may instead
                          be in $FLUX2_REDIS_PASSWORD. Reconnects with backoff
  --model ID=DIR          a model to serve, as for flux2 serve (repeatable)
  --data DIR              this worker's data folder; images go to DIR/images
                          (default ${defaultDataDir()}). It need not be shared
                          with the server: images travel through Redis
  --image-ttl S           seconds output images stay in Redis for the server to
                          collect (default 3600; not with --store)
  --store s3://BUCKET[/PREFIX]
                          images travel through this S3-compatible bucket
                          instead of Redis: give the server's --store. Endpoint,
                          region and credentials as for flux2 serve (the
                          standard AWS variables, or the flags below). Objects
                          are never deleted by flux2: give the bucket a
                          lifecycle rule (docs/server.md)
  --s3-endpoint URL       an S3-compatible server (MinIO, Ceph, ...); path-style
  --s3-region R           the bucket's region (default $AWS_REGION; us-east-1
                          with a custom endpoint)
  --threads N             ONNX Runtime threads (default: all cores)
  --lock S                seconds without a heartbeat before a job counts as
                          abandoned and is retried (default 30)
  --max-input-pixels N    decoded-pixel cap for input images (default 67108864)
  --lora-dir DIR          folder of the LoRA files requests may name (as in serve)
  --name NAME             worker name in logs and results (default host/pid)
  --moderation FILE       the prompt and image checks (give the server's file:
                          the server checks safety_tolerance, workers run checks)
  --no-watermark          no invisible watermark (as flux2 serve --no-watermark)
  --upsample-tokens N     longest prompt_upsampling rewrite (default 512)
  -h, --help              this text

Logs one JSON line per event on stdout: ready, start and done (id, worker,
attempt), warn. On SIGTERM or SIGINT it stops taking jobs, finishes the one in
hand and exits 0; if Redis stays unreachable for 10 s meanwhile, it drops the
connections and exits 1 (another worker takes the job over). A second signal
exits at once.`;

const OPTIONS = {
  queue: { type: "string" }, model: { type: "string", multiple: true }, data: { type: "string" }, store: { type: "string" }, "s3-endpoint": { type: "string" }, "s3-region": { type: "string" },
  threads: { type: "string" }, lock: { type: "string" }, "image-ttl": { type: "string" }, "max-input-pixels": { type: "string" }, "lora-dir": { type: "string" }, name: { type: "string" },
  help: { type: "boolean", short: "h" }, moderation: { type: "string" }, "no-watermark": { type: "boolean" },
  "upsample-tokens": { type: "string" },
} as const;

export async function runWorkerCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.queue) throw new Error("--queue redis://HOST:PORT is required (the same URL as the server's)");
  redisOptions(v.queue); // a bad URL is refused now, with what to write instead
  if (!v.model?.length) throw new Error("give at least one --model ID=DIR");
  const s3 = s3Flags(v.store, v["s3-endpoint"], v["s3-region"]);
  if (s3 && v["image-ttl"] !== undefined) throw new Error("--image-ttl sets how long images stay in Redis; with --store s3://… their lifetime is the bucket's lifecycle rule (docs/server.md): drop --image-ttl");
  const lock = numFlag(v.lock, "lock", 1, 3600, false);
  const stopped = untilSignal();
  const worker = await startRedisWorker({
    url: v.queue, models: v.model.map(parseModelSpec), dataDir: path.resolve(v.data ?? defaultDataDir()),
    threads: numFlag(v.threads, "threads", 1, 1024), lockMs: (lock ?? 30) * 1000,
    maxPixels: numFlag(v["max-input-pixels"], "max-input-pixels", 1, 2 ** 31) ?? defaultConfig().maxInputPixels,
    s3, loraDir: v["lora-dir"], imageTtlS: numFlag(v["image-ttl"], "image-ttl", 10, 30 * 86400),
    moderation: v.moderation ? loadModerationConfig(v.moderation) : undefined, watermark: !v["no-watermark"],
    upsampleTokens: numFlag(v["upsample-tokens"], "upsample-tokens", 1, 4096),
    name: v.name, log: (line) => console.log(line),
  });
  await stopped;
  if (await worker.close()) return 0;
  // Dropped connections may still hold timers: end now (the job in hand, if any, is taken over elsewhere).
  console.error("flux2 worker: Redis could not be reached to close cleanly; exiting");
  process.exit(1);
}
