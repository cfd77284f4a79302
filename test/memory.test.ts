// The memory plan printed before a run, and the refusal when it cannot fit. Its per-variant
// facts come from the variant cards (src/pipeline/variants.ts), which these tests check by
// opening the same tiny checkpoint as different variants.
import { test } from "node:test";
import assert from "node:assert/strict";
import { latentMultiple, openCheckpoint, transformerConfig } from "../src/pipeline/checkpoint.js";
import { modelDefaults } from "../src/pipeline/model_defaults.js";
import { VARIANT_CARDS } from "../src/pipeline/variants.js";
import { innerDim } from "../src/models/transformer.js";
import { DTYPE_BYTES, WeightSet, numel } from "../src/io/safetensors.js";
import { residentWeightBytes } from "../src/quant/memory.js";
import { assertFits, describePlan, planMemory, InsufficientMemoryError, type MemoryPlan } from "../src/loaders/memory.js";
import { goldenPath } from "./golden.js";

const TINY = goldenPath("checkpoints/klein_distilled");
const stage = (p: MemoryPlan, s: string) => p.stages.find((x) => x.stage === s)!;

test("the plan counts resident weights per stage and the largest stage is the peak", () => {
  const ck = openCheckpoint(TINY);
  const plan = planMemory(ck, { width: 64, height: 64, batch: 1, textLength: 512 });
  const denoise = stage(plan, "denoise");
  // The tiny transformer stores 237,504 bf16 values, resident as bf16 (converted at use).
  assert.equal(denoise.weightBytes, 237504 * 2);
  const int8 = planMemory(ck, { width: 64, height: 64, batch: 1, textLength: 512, quantize: "int8" });
  assert.ok(stage(int8, "denoise").weightBytes < denoise.weightBytes);
  assert.equal(plan.peakBytes, Math.max(...plan.stages.map((s) => s.weightBytes + s.activationBytes)));
  assert.match(describePlan(plan), /denoise\s+weights\s+463\.9 KiB/);
  assert.doesNotThrow(() => assertFits(plan));
});

test("the text encoder counts only the layers up to the card's deepest text layer", () => {
  const ck = openCheckpoint(TINY);
  const depth = Math.max(...VARIANT_CARDS.klein.textLayers); // 27 of the tiny Qwen3's 28
  const set = WeightSet.open(ck.textEncoder.weights);
  let expected = 0;
  for (const k of set.keys()) {
    const layer = /\.layers\.(\d+)\./.exec(k);
    if (k.endsWith("embed_tokens.weight") || (layer && Number(layer[1]) < depth)) expected += numel(set.info(k).shape) * DTYPE_BYTES[set.info(k).dtype];
  }
  set.close();
  const te = stage(planMemory(ck, { width: 64, height: 64, batch: 1 }), "text_encode").weightBytes;
  assert.equal(te, expected);
  assert.ok(te < residentWeightBytes(ck.textEncoder.weights), "layer 27 and the final norm are never read");
});

test("the text length defaults to the model's, and tokens follow the checkpoint's grid", () => {
  const ck = openCheckpoint(TINY);
  const given = planMemory(ck, { width: 64, height: 64, batch: 1, textLength: modelDefaults(ck).maxSequenceLength });
  assert.deepEqual(planMemory(ck, { width: 64, height: 64, batch: 1 }).stages, given.stages);
  const short = planMemory(ck, { width: 64, height: 64, batch: 1, textLength: 8 });
  const m = latentMultiple(ck);
  const perToken = stage(given, "denoise").activationBytes / ((64 / m) * (64 / m) + modelDefaults(ck).maxSequenceLength);
  assert.equal(stage(short, "denoise").activationBytes, perToken * ((64 / m) * (64 / m) + 8));
});

test("references add tokens; the KV variant's card adds their cached keys and values", () => {
  const run = { width: 64, height: 64, batch: 1, textLength: 16, references: [{ width: 64, height: 64 }] };
  const klein = openCheckpoint(TINY), kv = openCheckpoint(TINY, { variant: "klein-kv" });
  const cfg = transformerConfig(klein), m = latentMultiple(klein);
  const plain = stage(planMemory(klein, { ...run, references: [] }), "denoise").activationBytes;
  const withRef = stage(planMemory(klein, run), "denoise").activationBytes;
  assert.ok(withRef > plain);
  const cache = 2 * (cfg.num_layers + cfg.num_single_layers) * ((64 / m) * (64 / m)) * innerDim(cfg) * 4;
  assert.equal(stage(planMemory(kv, run), "denoise").activationBytes, withRef + cache);
  // Asked off, as `flux2 edit` without --kv on klein base would: no cache.
  assert.equal(stage(planMemory(kv, { ...run, kvCache: false }), "denoise").activationBytes, withRef);
  assert.equal(stage(planMemory(klein, { ...run, kvCache: true }), "denoise").activationBytes, withRef + cache);
});

test("a CFG variant (klein base) keeps the negative prompt's velocity too", () => {
  const run = { width: 64, height: 64, batch: 2, textLength: 16 };
  const base = openCheckpoint(TINY, { variant: "klein-base" }), klein = openCheckpoint(TINY);
  const cfg = transformerConfig(klein), m = latentMultiple(klein);
  assert.equal(VARIANT_CARDS["klein-base"].guidanceMode, "cfg");
  assert.equal(stage(planMemory(base, run), "denoise").activationBytes,
    stage(planMemory(klein, run), "denoise").activationBytes + 2 * (64 / m) * (64 / m) * cfg.in_channels * 4);
});

test("a run that cannot fit is refused with the plan and what to do", () => {
  const ck = openCheckpoint(TINY);
  const plan = { ...planMemory(ck, { width: 64, height: 64, batch: 1, textLength: 512 }), availableBytes: 1000 };
  assert.throws(() => assertFits(plan), (e: Error) =>
    e instanceof InsufficientMemoryError && /needs about .* but only 1\.0 KiB is available/.test(e.message) && /use a smaller size/.test(e.message));
});
