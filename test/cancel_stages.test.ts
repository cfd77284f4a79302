// Issue 16 item 1: cancellation reaches every stage of a job (input decode,
// resize, text encoder, reference encode, each denoising step, VAE decode,
// output encode). For each stage an uncancelled run goes through, the same job
// is run again with a cancel that arrives as that stage begins; it must stop in
// that stage (its error names it) and begin no later stage, and a cancel in the
// denoising loop must run no further step. This counts work done after the
// cancel instead of timing it, so it holds on a loaded machine as on an idle one.
import { test } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { CancelledError, runGeneration, type RunContext } from "../src/server/generate_job.js";
import type { GenerationRequest } from "../src/api/request.js";
import { TINY } from "./helpers/net.js";

test("a cancel as each stage begins stops the job in that stage; no later stage or step runs", { timeout: 300_000 }, async () => {
  const pipe = loadPipeline(TINY, { keepLoaded: true });
  // Small, so every stage is quick with the tiny model (a 1 MP reference's VAE encode takes minutes on a
  // loaded machine); the "resizing reference 1" stage is entered whatever the size (the resize's own
  // row checks are tested in server_limits with a 64 MP reference).
  const input = await sharp({ create: { width: 96, height: 80, channels: 3, background: "#3060a0" } }).png().toBuffer();
  const request = { prompt: "stages", input_image: "store:input.png", width: 64, height: 64, seed: 1, steps: 3, output_format: "png" } as unknown as GenerationRequest;
  const run = async (cancelAt?: string) => {
    const stages: string[] = [];
    const steps: number[] = [];
    let cancelled = false;
    const ctx: RunContext = {
      multiple: 16, maxPixels: 64e6, watermark: false,
      readInput: () => input,
      isCancelled: () => cancelled,
      onStage: (s) => {
        stages.push(s);
        if (s === cancelAt) cancelled = true;
      },
      onProgress: (p) => {
        if (p.stage === undefined && p.step > 0) steps.push(p.step);
      },
    };
    try {
      await runGeneration(pipe, { id: "j", model: "m", request: structuredClone(request) }, ctx);
      return { stages, steps, error: undefined };
    } catch (e) {
      if (!(e instanceof CancelledError)) throw e;
      return { stages, steps, error: e.message };
    }
  };
  try {
    const full = await run();
    assert.equal(full.error, undefined);
    // Every stage the issue names is there, in order.
    for (const s of ["decoding input_image", "resizing reference 1", "the text encoder", "the reference encode (VAE)", "denoising", "the VAE decode", "encoding the output"]) {
      assert.ok(full.stages.includes(s), `stage "${s}" in ${full.stages.join(", ")}`);
    }
    assert.deepEqual(full.steps, [1, 2, 3]);
    for (const stage of full.stages) {
      const r = await run(stage);
      assert.equal(r.error, `cancelled during ${stage}`, `cancelled as "${stage}" began; stages: ${r.stages.join(", ")}`);
      assert.equal(r.stages.at(-1), stage, `no stage after the cancel: ${r.stages.join(", ")}`);
      // In the denoising loop the cancel is seen after the step in hand: no second step starts.
      if (stage === "denoising") assert.deepEqual(r.steps, [], `steps reported after the cancel: ${r.steps.join(", ")}`);
    }
  } finally {
    await pipe.release();
  }
});
