// flux2 worker: runs jobs from Redis for `flux2 serve --queue`.

import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig, defaultDataDir } from "../server/config.js";
import { parseModelSpec } from "../server/models.js";
import { redisOptions } from "../server/redis_conn.js";
import { startRedisWorker } from "../server/redis_worker.js";
import { numFlag, untilSignal } from "./serve.js";
import { loadModerationConfig } from "../moderation/config.js";

const HELP = `usage: flux2 worker --queue redis://HOST:PORT --model ID=DIR [--model ID=DIR ...]
                    [--data DIR | --store s3://BUCKET/PREFIX] [options]

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
                          collect (default 3600)
  --store URL             s3://... object storage: not implemented (no S3 client
                          is a dependency); images travel through Redis
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
attempt), warn.`;

const OPTIONS = {
  queue: { type: "string" }, model: { type: "string", multiple: true }, data: { type: "string" }, store: { type: "string" },
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
  if (v.store) throw new Error("--store s3://... is not implemented: images travel through Redis (see --image-ttl), so no shared folder is needed");
  const lock = numFlag(v.lock, "lock", 1, 3600, false);
  const stopped = untilSignal();
  const worker = await startRedisWorker({
    url: v.queue, models: v.model.map(parseModelSpec), dataDir: path.resolve(v.data ?? defaultDataDir()),
    threads: numFlag(v.threads, "threads", 1, 1024), lockMs: (lock ?? 30) * 1000,
    maxPixels: numFlag(v["max-input-pixels"], "max-input-pixels", 1, 2 ** 31) ?? defaultConfig().maxInputPixels,
    loraDir: v["lora-dir"], imageTtlS: numFlag(v["image-ttl"], "image-ttl", 10, 30 * 86400),
    moderation: v.moderation ? loadModerationConfig(v.moderation) : undefined, watermark: !v["no-watermark"],
    upsampleTokens: numFlag(v["upsample-tokens"], "upsample-tokens", 1, 4096),
    name: v.name, log: (line) => console.log(line),
  });
  await stopped;
  await worker.close();
  return 0;
}
