// The flux2-mini recipe (its stages, in order, with the model's resolution and text length), the
// script that runs it, and packing a trained folder into bf16 within the 40 MB budget.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readRecipe, toArgv } from "../src/mini/recipe.js";
import { packMiniModel } from "../src/mini/pack.js";
import { MINI_MAX_SEQUENCE_LENGTH, MINI_RESOLUTION, writeMiniModel } from "../src/mini/model.js";
import { SafetensorsFile, toFloat32, writeSafetensors } from "../src/io/safetensors.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { repoRoot } from "./golden.js";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "flux2-mini-recipe-"));

test("the recipe trains the VAE, the text encoder, then the transformer on both, at the mini's resolution and text length, within 90 minutes", () => {
  const r = readRecipe(path.join(repoRoot, "recipes", "flux2-mini.json"));
  assert.deepEqual(r.stages.map((s) => s.name), ["vae", "text_encoder", "transformer"]);
  const [vae, te, tr] = r.stages;
  assert.equal(vae.args.vae, true);
  assert.equal(te.args["text-encoder"], true);
  assert.equal(te.args["align-pool"], "mean", "the encoder is aligned on what the transformer reads");
  assert.equal(tr.args.full, true);
  assert.equal(te.args.model, `${vae.args.out}/model`);
  assert.equal(tr.args.model, `${te.args.out}/model`);
  for (const s of r.stages) assert.equal(Number(s.args.resolution), MINI_RESOLUTION);
  for (const s of [te, tr]) assert.equal(Number(s.args["max-sequence-length"]), MINI_MAX_SEQUENCE_LENGTH);
  assert.equal(r.resolution, MINI_RESOLUTION);
  assert.equal(r.max_sequence_length, MINI_MAX_SEQUENCE_LENGTH);
  assert.ok(r.stages.reduce((m, s) => m + (s.budget_minutes ?? 0), 0) <= 90);
  assert.deepEqual(toArgv({ steps: 10, full: true, vae: false, "sample-prompt": ["a b", "c"] }), ["--steps", "10", "--full", "--sample-prompt", "a b", "--sample-prompt", "c"]);
  const dry = spawnSync(process.execPath, [path.join(repoRoot, "dist", "scripts", "train-mini.js"), "--dry-run"], { encoding: "utf8" });
  assert.equal(dry.status, 0, dry.stderr);
  const order = ["[prepare]", "[vae]", "[text_encoder]", "[transformer]", "[lora]", "[evaluate]", "[pack]"].map((t) => dry.stdout.indexOf(t));
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])), dry.stdout);
  assert.match(dry.stdout, /\[text_encoder\] .* train .*--text-encoder --align-pool mean/);
  const bad = spawnSync(process.execPath, [path.join(repoRoot, "dist", "scripts", "train-mini.js"), "--dry-run", "--from", "nope"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--from must be one of prepare, vae, text_encoder, transformer/);
});

test("packing turns float32 trained weights into bf16 within 40 MB, and refuses a model over budget", () => {
  const dir = path.join(tmp(), "trained");
  writeMiniModel(dir, 1);
  // What flux2 train --full writes: the trained component in float32.
  const file = path.join(dir, "transformer", "diffusion_pytorch_model.safetensors");
  const f = SafetensorsFile.open(file);
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [name, info] of f.tensors) tensors[name] = { dtype: "F32", shape: info.shape, data: toFloat32(info.dtype, f.bytes(name)).map((x) => x * 1.001) };
  f.close();
  fs.rmSync(file);
  writeSafetensors(file, tensors);
  const out = path.join(tmp(), "packed");
  const bytes = packMiniModel(dir, out);
  assert.ok(bytes <= 40e6, `${bytes}`);
  const p = SafetensorsFile.open(path.join(out, "transformer", "diffusion_pytorch_model.safetensors"));
  const name = "transformer_blocks.0.attn.to_q.weight";
  assert.equal(p.tensors.get(name)!.dtype, "BF16");
  const got = toFloat32("BF16", p.bytes(name)), want = tensors[name].data;
  p.close();
  for (let i = 0; i < 100; i++) assert.ok(Math.abs(got[i] - want[i]) <= Math.abs(want[i]) / 128, `${got[i]} vs ${want[i]}`);
  assert.equal(openCheckpoint(out).variant, "klein-base");
  assert.throws(() => packMiniModel(dir, path.join(tmp(), "small"), 10e6), /over the 10 MB budget/);
});
