// The memory plan printed before a run, and the refusal when it cannot fit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { openCheckpoint, transformerConfig } from "../src/pipeline/checkpoint.js";
import { assertFits, describePlan, planMemory, InsufficientMemoryError } from "../src/loaders/memory.js";
import { goldenPath } from "./golden.js";

test("the plan counts float32 weights per stage and the largest stage is the peak", () => {
  const ck = openCheckpoint(goldenPath("checkpoints/klein_distilled"));
  const plan = planMemory(ck, transformerConfig(ck), 64, 64, 1, 512, 16);
  const denoise = plan.stages.find((s) => s.stage === "denoise")!;
  // The tiny transformer stores 237,504 bf16 values, resident as bf16 (converted at use).
  assert.equal(denoise.weightBytes, 237504 * 2);
  const int8 = planMemory(ck, transformerConfig(ck), 64, 64, 1, 512, 16, "int8");
  assert.ok(int8.stages.find((s) => s.stage === "denoise")!.weightBytes < denoise.weightBytes);
  assert.equal(plan.peakBytes, Math.max(...plan.stages.map((s) => s.weightBytes + s.activationBytes)));
  assert.match(describePlan(plan), /denoise\s+weights\s+463\.9 KiB/);
  assert.doesNotThrow(() => assertFits(plan));
});

test("a run that cannot fit is refused with the plan and what to do", () => {
  const ck = openCheckpoint(goldenPath("checkpoints/klein_distilled"));
  const plan = { ...planMemory(ck, transformerConfig(ck), 64, 64, 1, 512, 16), availableBytes: 1000 };
  assert.throws(() => assertFits(plan), (e: Error) =>
    e instanceof InsufficientMemoryError && /needs about .* but only 1\.0 KiB is available/.test(e.message) && /use a smaller size/.test(e.message));
});
