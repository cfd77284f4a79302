// The executor's worker thread: owns the loaded pipelines (kept loaded between
// jobs) and runs one job at a time. ONNX Runtime's session.run blocks the
// thread it runs on, which is why generation lives here and not on the HTTP
// event loop. Cancellation arrives through a SharedArrayBuffer flag, read
// synchronously at every stage: input decodes, resize rows, pipeline stages,
// denoising steps, encodes (a message could not be delivered while the loop
// is busy).

import { parentPort, workerData } from "node:worker_threads";
import { OrtBackend } from "../backend/ort.js";
import { latentMultiple, openCheckpoint } from "../pipeline/checkpoint.js";
import type { Flux2Pipeline } from "../pipeline/flux2.js";
import { InvalidRequestError } from "../util/errors.js";
import { ReferenceImageError } from "../pipeline/reference.js";
import { CancelledError, runGeneration, type ExecJob } from "./generate_job.js";
import { ImageStore } from "./images.js";
import { storeName } from "./inputs.js";
import { LoraNameError, resolveLoras } from "./loras.js";
import type { ExecutorData, ToThread, FromThread } from "./executor.js";
import { ModeratedError, Moderator } from "../moderation/moderator.js";
import { upsamplePrompts } from "../text/upsample.js";
import { loadPipeline } from "../loaders/pretrained.js";

const data = workerData as ExecutorData;
const store = new ImageStore(data.storeRoot);
const backend = new OrtBackend({ threads: data.threads });
// Loads its classifier on first use and keeps it, like the pipelines.
const moderator = data.moderation ? new Moderator(data.moderation, backend) : undefined;
const loaded = new Map<string, { pipe: Flux2Pipeline; multiple: number; loras: string }>();

/**
 * The model's pipeline with the job's LoRA set. Strengths are graph inputs, so
 * the same LoRAs at other strengths reuse the loaded pipeline; a different set
 * of LoRAs rebuilds the transformer session over the same memory-mapped base
 * weights, the previous pipeline of that model released first (one is held).
 */
async function pipeline(model: string, loraList: { name: string; strength: number }[] | undefined) {
  const loras = resolveLoras(data.loraDir, loraList);
  const key = JSON.stringify(loras.map((l) => [l.name, l.file]));
  let p = loaded.get(model);
  if (p && p.loras !== key) {
    await p.pipe.release();
    loaded.delete(model);
    p = undefined;
  }
  if (!p) {
    const spec = data.models.find((m) => m.id === model);
    if (!spec) throw new InvalidRequestError(`model ${model} is not served by this process`);
    const ck = openCheckpoint(spec.dir);
    const multiple = latentMultiple(ck);
    p = { pipe: loadPipeline(spec.dir, { keepLoaded: true, backend, loras }), multiple, loras: key };
    loaded.set(model, p);
  }
  p.pipe.setLoraStrengths(loras.map((l) => l.strength));
  return p;
}

function modelDir(model: string): string {
  const spec = data.models.find((m) => m.id === model);
  if (!spec) throw new InvalidRequestError(`model ${model} is not served by this process`);
  return spec.dir;
}

function post(m: FromThread, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(m, transfer);
}

function classify(e: unknown): "invalid" | "cancelled" | "internal" | "request_moderated" | "content_moderated" {
  if (e instanceof ModeratedError) return e.stage === "request" ? "request_moderated" : "content_moderated";
  if (e instanceof LoraNameError) return "invalid";
  if (e instanceof CancelledError) return "cancelled";
  if (e instanceof InvalidRequestError || e instanceof ReferenceImageError) return "invalid";
  if (e instanceof Error && /cannot (read|decode) image|pixels, more than the limit|animated/.test(e.message)) return "invalid";
  return "internal";
}

async function run(seq: number, job: ExecJob, cancel: Int32Array): Promise<void> {
  const isCancelled = () => Atomics.load(cancel, 0) === 1;
  try {
    if (isCancelled()) throw new CancelledError("the wait in the queue");
    post({ type: "stage", seq, stage: "loading the model" });
    const cached = loaded.get(job.model);
    // Building a pipeline (first use, or another LoRA set) is announced as the "load" stage.
    if (!cached || cached.loras !== JSON.stringify(resolveLoras(data.loraDir, job.request.loras).map((l) => [l.name, l.strength]))) {
      post({ type: "progress", seq, progress: { step: 0, steps: 0, fraction: 0, stage: "load" } });
    }
    const { pipe, multiple } = await pipeline(job.model, job.request.loras);
    if (isCancelled()) throw new CancelledError("loading the model"); // loading can take a while
    const out = await runGeneration(pipe, job, {
      multiple, maxPixels: data.maxPixels, isCancelled, watermark: data.watermark, moderator,
      llmCheck: moderator?.config.llm ? (prompt) => moderator.checkPromptWithLlm(prompt, openCheckpoint(modelDir(job.model))) : undefined,
      // Its own session over the model's text encoder files, released when done.
      upsample: async (prompt, seed) => (await upsamplePrompts(openCheckpoint(modelDir(job.model)), [prompt], {
        backend, seed, sampling: data.upsampleTokens ? { maxNewTokens: data.upsampleTokens } : undefined,
      }))[0],
      readInput: (ref) => store.readSync(storeName(ref)),
      onProgress: (progress) => post({ type: "progress", seq, progress }),
      onStage: (stage) => post({ type: "stage", seq, stage }),
    });
    // Copy into exactly-sized buffers before transferring: a Buffer may share a pooled ArrayBuffer.
    const images = out.images.map((i) => ({ ext: i.ext, bytes: new Uint8Array(i.bytes) }));
    post({ type: "done", seq, output: { ...out, images } }, images.map((i) => i.bytes.buffer as ArrayBuffer));
  } catch (e) {
    post({ type: "failed", seq, kind: classify(e), message: e instanceof ModeratedError ? e.reason : (e as Error).message ?? String(e) });
  }
}

// One job at a time, in arrival order. "retire" (this thread was replaced while
// stuck in a native call) ends the thread once the job in hand has stopped: it
// exits by itself between calls, which is safe, where terminating it from outside
// is not (see Executor.replaceStuck).
let chain: Promise<void> = Promise.resolve();
parentPort!.on("message", (m: ToThread) => {
  if (m.type === "run") chain = chain.then(() => run(m.seq, m.job, new Int32Array(m.cancel)));
  else if (m.type === "retire") chain = chain.then(() => process.exit(0));
});
