// FLUX.2 [dev] end to end on a tiny folder built here: Mistral 3 text encoder
// (layers 10/20/30, left padding, system message), embedded guidance, and a
// reference image. There is no dev checkpoint among the golden fixtures, so
// this proves the plumbing; the numerics of each part are proven elsewhere
// (dev transformer goldens, the Mistral reference test, the VAE goldens).
import { test } from "node:test";
import assert from "node:assert/strict";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { Flux2Pipeline } from "../src/pipeline/flux2.js";
import { makeDevFolder } from "./helpers/dev.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

test("a dev folder opens as dev with embedded guidance and the Mistral encoder", async () => {
  const dir = makeDevFolder();
  const ck = openCheckpoint(dir);
  assert.equal(ck.variant, "dev");
  assert.equal(ck.textEncoder.kind, "mistral3");
  assert.deepEqual([ck.defaults.embeddedGuidance, ck.defaults.cfg], [true, false]);

  const pipe = loadPipeline(dir, { keepLoaded: true });
  const traced = new Map<string, { data: ArrayLike<number | bigint>; shape: readonly number[] }>();
  const opts = { prompt: "a red fox [IMG] in the snow", width: 16, height: 16, steps: 2, seed: 9, guidance: 3.5, maxSequenceLength: 400, trace: (n: string, t: any) => traced.set(n, t) };
  const a = await pipe.generate(opts);
  // Left padding: the pad tokens come first and the mask starts with zeros.
  const mask = traced.get("prompt_attention_mask")!.data as BigInt64Array;
  assert.equal(mask[0], 0n);
  assert.equal(mask[mask.length - 1], 1n);
  const rendered = Buffer.from(traced.get("prompt_rendered_0")!.data as Uint8Array).toString("utf8");
  assert.ok(rendered.includes("You are an AI that reasons about image descriptions."));
  assert.ok(!rendered.includes("[IMG]"));
  assert.deepEqual(traced.get("prompt_embeds")!.shape, [1, 400, 24]);
  // Guidance changes the image (it is embedded, not ignored), and a run is reproducible.
  const b = await pipe.generate({ ...opts, trace: undefined });
  assert.deepEqual([...a.images[0].rgb], [...b.images[0].rgb]);
  const c = await pipe.generate({ ...opts, guidance: 8, trace: undefined });
  assert.notDeepEqual([...a.images[0].rgb], [...c.images[0].rgb]);
  // And dev edits with a reference image.
  const ref = { rgb: new Uint8Array(16 * 16 * 3).fill(200), width: 16, height: 16 };
  const e = await pipe.generate({ ...opts, references: [ref], trace: undefined });
  assert.equal(e.images[0].width, 16);
  await pipe.release();
});
