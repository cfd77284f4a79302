// Running a queued job on this machine's executor and storing its images.

import { ExecError, type Executor } from "./executor.js";
import type { ImageStore } from "./images.js";
import { Interrupted, type JobRunContext, type RunResult } from "./queue_local.js";
import type { JobResult } from "./store.js";
import type { ExecOutput } from "./generate_job.js";

/** Store the images (content-addressed) and describe the result. */
export async function storeOutput(images: ImageStore, out: ExecOutput, startedAt: number, by: string): Promise<JobResult> {
  const names: string[] = [];
  for (const img of out.images) names.push(await images.put(img.bytes, img.ext));
  return {
    images: names, width: out.width, height: out.height, seed: out.seed, steps: out.steps, guidance: out.guidance, loras: out.loras,
    started_at: startedAt, ended_at: Date.now(), by, ...(out.prompt !== undefined ? { prompt: out.prompt } : {}),
  };
}

export function localRunner(executor: Executor, images: ImageStore) {
  return async (ctx: JobRunContext): Promise<RunResult> => {
    const started = Date.now();
    try {
      const out = await executor.run({ id: ctx.job.id, model: ctx.job.model, request: JSON.parse(ctx.job.request) }, { signal: ctx.signal, onProgress: ctx.progress, onStage: ctx.stage });
      return { state: "ready", result: await storeOutput(images, out, started, "local") };
    } catch (e) {
      if (!(e instanceof ExecError)) throw e;
      if (e.kind === "cancelled") return { state: "cancelled", error: e.message };
      if (e.kind === "crashed") throw new Interrupted(e.message);
      // Moderated: no image was stored; the reason goes to details.moderation.
      if (e.kind === "request_moderated" || e.kind === "content_moderated") return { state: e.kind, error: e.message };
      return { state: "error", error: e.message };
    }
  };
}
