// The flux2-mini recipe (its stages, in order, with the model's resolution and text length), the
// script that runs it, and packing a trained folder into bf16 within the 40 MB budget.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readRecipe, recipeBudgetMinutes, toArgv, type MiniRecipe } from "../src/mini/recipe.js";
import { packMiniModel } from "../src/mini/pack.js";
import { MINI_MAX_SEQUENCE_LENGTH, MINI_RESOLUTION, writeMiniModel } from "../src/mini/model.js";
import { SafetensorsFile, toFloat32, writeSafetensors } from "../src/io/safetensors.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { repoRoot } from "./golden.js";
import sharp from "sharp";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "flux2-mini-recipe-"));

test("the recipe trains the VAE beside a first text-encoder stage, continues the encoder, then the transformer on both and its focus stage, at the mini's resolution and text length, budgeted 86 minutes", () => {
  const r = readRecipe(path.join(repoRoot, "recipes", "flux2-mini.json"));
  assert.deepEqual(r.stages.map((s) => s.name), ["vae", "text_encoder", "text_encoder_2", "transformer", "focus"]);
  const [vae, te, te2, tr, focus] = r.stages;
  assert.equal(vae.args.vae, true);
  assert.equal(vae.with_next, true, "the VAE stage runs beside the first text-encoder stage");
  for (const s of [vae, te]) assert.equal(Number(s.args.threads), 1, `${s.name} runs on one thread of the two`);
  for (const s of [te, te2]) {
    assert.equal(s.args["text-encoder"], true);
    assert.equal(s.args["align-pool"], "mean", "the encoder is aligned on what the transformer reads");
  }
  assert.equal(tr.args.full, true);
  assert.equal(te.args.model, "runs/flux2-mini/init");
  assert.equal(te2.args.model, `${te.args.out}/model`);
  assert.equal(te2.args.seed, 1);
  assert.equal(tr.args.model, `${te2.args.out}/model`);
  assert.equal(tr.vae_from, `${vae.args.out}/model`, "the transformer is trained on the VAE stage's latents");
  // Version 6: the transformer reads the same set with its shapes on the image-token grid, which a prepare command builds.
  assert.equal(tr.args.data, "data/flux2-mini-grid/train");
  assert.ok(r.prepare.some((c) => c.includes("build-mini-dataset.js --out data/flux2-mini-grid ") && c.includes("--placement grid")), r.prepare.join("\n"));
  for (const s of [vae, te, te2]) assert.equal(s.args.data, "data/flux2-mini/train", `${s.name} reads the jittered set it was trained on`);
  // Version 7: both sets caption each emoji with its plain name alone ("a red apple"), what the eval and a user type.
  const builds = r.prepare.filter((c) => c.includes("build-mini-dataset.js"));
  assert.equal(builds.length, 3, r.prepare.join("\n"));
  for (const c of builds) assert.match(c, / --emoji-captions plain( |$)/, c);
  // Version 8: the focus stage continues the transformer on the grid set plus the food-drink emoji
  // read 105 more times an epoch (their details need about 250 passes: docs/flux2-mini.md, session 27).
  assert.equal(focus.args.full, true);
  assert.equal(focus.args.model, `${tr.args.out}/model`);
  assert.equal(focus.args.data, "data/flux2-mini-focus/train");
  const focusBuild = builds.find((c) => c.includes("--out data/flux2-mini-focus "));
  assert.ok(focusBuild, r.prepare.join("\n"));
  assert.match(focusBuild, / --placement grid .*--focus-group food-drink --focus-repeats 105( |$)/, "the grid set, plus the focus folder");
  assert.equal(r.lora_demo?.args.model, `${focus.args.out}/model`, "the LoRA demo is trained on the shipped transformer");
  for (const c of r.evaluate) assert.ok(c.includes(`--model ${focus.args.out}/model`), c);
  for (const s of r.stages) assert.equal(Number(s.args.resolution), MINI_RESOLUTION);
  for (const s of [te, te2, tr, focus]) assert.equal(Number(s.args["max-sequence-length"]), MINI_MAX_SEQUENCE_LENGTH);
  assert.equal(r.resolution, MINI_RESOLUTION);
  assert.equal(r.max_sequence_length, MINI_MAX_SEQUENCE_LENGTH);
  // Session 36: bf16 products where the CPU has them after the VAE, and the second encoder stage as
  // two one-thread workers of half its batch of 32 each (the same batch as the first stage's).
  for (const s of [te, te2, tr, focus]) assert.equal(s.args.matmul, "auto", `${s.name} takes bf16 products where the CPU has them`);
  assert.equal(vae.args.matmul, undefined, "the VAE's convolutions stay float32");
  assert.equal(Number(te2.args["batch-size"]) * Number(te2.args["grad-accum"]), Number(te.args["batch-size"]));
  assert.equal(Number(te2.args.workers), 2);
  // The pair counts once: max(20, 24) + 16 + 21 + 25 = 86, within the "about 90" (run whole in
  // session 36: 80.9 minutes of stages, 83.6 with the prepare commands; docs/flux2-mini.md).
  assert.equal(recipeBudgetMinutes(r), 86, `the stages are budgeted ${recipeBudgetMinutes(r)} minutes`);
  assert.deepEqual(toArgv({ steps: 10, full: true, vae: false, "sample-prompt": ["a b", "c"] }), ["--steps", "10", "--full", "--sample-prompt", "a b", "--sample-prompt", "c"]);
  const dry = spawnSync(process.execPath, [path.join(repoRoot, "dist", "scripts", "train-mini.js"), "--dry-run"], { encoding: "utf8" });
  assert.equal(dry.status, 0, dry.stderr);
  const order = ["[prepare]", "[vae]", "[text_encoder]", "[text_encoder_2]", "[transformer]", "[focus]", "[lora]", "[evaluate]", "[pack]"].map((t) => dry.stdout.indexOf(t));
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])), dry.stdout);
  assert.match(dry.stdout, /\[text_encoder\] .* train .*--text-encoder --align-pool mean/);
  assert.match(dry.stdout, /\[vae\] .*\(at the same time as \[text_encoder\]\)/);
  assert.match(dry.stdout, /\[transformer\] vae\/ from runs\/flux2-mini\/vae\/model into runs\/flux2-mini\/text_encoder_2\/model/);
  assert.match(dry.stdout, /stages budgeted 86 min of wall time/);
  const bad = spawnSync(process.execPath, [path.join(repoRoot, "dist", "scripts", "train-mini.js"), "--dry-run", "--from", "nope"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--from must be one of prepare, vae, text_encoder, text_encoder_2, transformer, focus/);
});

test("train-mini runs a with_next pair at once and gives a stage another stage's VAE (vae_from); bad pairs are refused", { timeout: 240_000 }, async () => {
  const model = path.join(repoRoot, "testdata", "golden", "checkpoints", "klein_base");
  const dir = tmp(), data = path.join(dir, "data");
  fs.mkdirSync(data);
  for (const [i, rgb] of [[200, 40, 40], [40, 60, 210]].entries()) {
    const px = new Uint8Array(64 * 64 * 3);
    for (let k = 0; k < 64 * 64; k++) px.set(rgb, k * 3);
    await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path.join(data, `c${i}.png`));
    fs.writeFileSync(path.join(data, `c${i}.txt`), `a picture number ${i}`);
  }
  const common = { data, resolution: "64", steps: 1, "batch-size": 2, "save-every": 0, threads: 1 };
  const recipe = {
    name: "tiny", resolution: 64, max_sequence_length: 16, prepare: [], evaluate: [],
    stages: [
      { name: "vae", with_next: true, args: { ...common, model, out: path.join(dir, "vae"), vae: true } },
      { name: "text_encoder", args: { ...common, model, out: path.join(dir, "te"), "text-encoder": true, "max-sequence-length": 16 } },
      { name: "transformer", vae_from: path.join(dir, "vae", "model"), args: { ...common, model: path.join(dir, "te", "model"), out: path.join(dir, "tr"), full: true, "max-sequence-length": 16 } },
    ],
  };
  const file = path.join(dir, "recipe.json");
  fs.writeFileSync(file, JSON.stringify(recipe));
  const script = path.join(repoRoot, "dist", "scripts", "train-mini.js");
  const r = spawnSync(process.execPath, [script, "--recipe", file, "--pack-to", path.join(dir, "packed")], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /running \[vae\] and \[text_encoder\] at once/);
  assert.match(r.stdout, /\[transformer\] vae\/ from /);
  // Each stage says how long it took, a pair's two included.
  for (const s of ["vae", "text_encoder", "transformer"]) assert.match(r.stdout, new RegExp(`\\[${s}\\] done in \\d+m\\d\\ds \\(\\d+m\\d\\ds since the start\\)`));
  // Each of the pair wrote its own log, and both finished.
  for (const s of ["vae", "te"]) assert.match(fs.readFileSync(path.join(dir, `${s}.log`), "utf8"), /done: 1 steps/);
  // The transformer stage started from the text encoder's folder with the VAE stage's trained VAE:
  // its model folder carries that VAE byte for byte, and its text encoder is the trained one.
  const weights = (d: string, part: string, f: string) => fs.readFileSync(path.join(d, part, f));
  const vaeFile = "diffusion_pytorch_model.safetensors";
  assert.ok(weights(path.join(dir, "tr", "model"), "vae", vaeFile).equals(weights(path.join(dir, "vae", "model"), "vae", vaeFile)));
  assert.ok(!weights(path.join(dir, "vae", "model"), "vae", vaeFile).equals(weights(model, "vae", vaeFile)), "the VAE stage trained its VAE");
  assert.ok(weights(path.join(dir, "tr", "model"), "text_encoder", "model.safetensors").equals(weights(path.join(dir, "te", "model"), "text_encoder", "model.safetensors")));
  // The base checkpoint the text encoder's folder hard-links to is untouched.
  assert.ok(weights(model, "vae", vaeFile).equals(fs.readFileSync(path.join(model, "vae", vaeFile))));
  // The pack: float weights in bf16; the golden VAE's integer counter (bn.num_batches_tracked) kept as it is.
  const packed = SafetensorsFile.open(path.join(dir, "packed", "vae", vaeFile)), trained = SafetensorsFile.open(path.join(dir, "tr", "model", "vae", vaeFile));
  try {
    assert.equal(packed.tensors.get("bn.num_batches_tracked")!.dtype, "I64");
    assert.ok(Buffer.from(packed.bytes("bn.num_batches_tracked")).equals(Buffer.from(trained.bytes("bn.num_batches_tracked"))));
    assert.equal(packed.tensors.get("decoder.conv_out.weight")!.dtype, "BF16");
  } finally {
    packed.close();
    trained.close();
  }
  // Refused: a pair whose second stage reads the first's output, and a pair at the end.
  const refuse = (stages: unknown[], why: RegExp) => {
    fs.writeFileSync(file, JSON.stringify({ ...recipe, stages }));
    const b = spawnSync(process.execPath, [script, "--recipe", file, "--dry-run"], { encoding: "utf8" });
    assert.equal(b.status, 1, b.stdout);
    assert.match(b.stderr, why);
  };
  const [v, t, x] = recipe.stages;
  refuse([v, { ...t, args: { ...t.args, model: path.join(dir, "vae", "model") } }, x], /starts from "vae"'s output, so the two cannot run at the same time/);
  refuse([v, { ...t, vae_from: path.join(dir, "vae", "model") }, x], /starts from "vae"'s output, so the two cannot run at the same time/);
  refuse([v, t, { ...x, with_next: true }], /is the last one, so it has no next stage/);
  // A sibling folder whose name merely starts with the first stage's output is not inside it.
  fs.writeFileSync(file, JSON.stringify({ ...recipe, stages: [v, { ...t, args: { ...t.args, model: path.join(dir, "vae2") } }, x] }));
  assert.equal(spawnSync(process.execPath, [script, "--recipe", file, "--dry-run"], { encoding: "utf8" }).status, 0);
});

test("every recipe in recipes/ is one train-mini reads: each stage budgeted, a flux2 train mode, at the mini's resolution and text length", () => {
  const files = fs.readdirSync(path.join(repoRoot, "recipes")).filter((f) => f.endsWith(".json"));
  assert.ok(files.includes("flux2-mini.json") && files.length >= 2, files.join(", "));
  for (const f of files) {
    const r = readRecipe(path.join(repoRoot, "recipes", f));
    assert.equal(r.resolution, MINI_RESOLUTION, f);
    assert.equal(r.max_sequence_length, MINI_MAX_SEQUENCE_LENGTH, f);
    for (const s of r.stages) {
      assert.ok((s.budget_minutes ?? 0) > 0, `${f}: stage ${s.name} has no budget`);
      assert.equal(["vae", "text-encoder", "full"].filter((m) => s.args[m] === true).length, 1, `${f}: stage ${s.name} trains one part`);
      if (s.args.matmul !== undefined) assert.ok(["fp32", "bf16", "auto"].includes(String(s.args.matmul)), `${f}: stage ${s.name} matmul ${s.args.matmul}`);
    }
    assert.ok(recipeBudgetMinutes(r) <= 120, `${f}: ${recipeBudgetMinutes(r)} minutes`);
  }
});

test("a recipe's budget counts a with_next pair as the longer of the two", () => {
  const stage = (name: string, budget_minutes?: number, with_next?: boolean) => ({ name, budget_minutes, with_next, args: {} });
  const r = (stages: MiniRecipe["stages"]) => ({ name: "t", resolution: 64, max_sequence_length: 64, prepare: [], evaluate: [], stages });
  assert.equal(recipeBudgetMinutes(r([stage("a", 20), stage("b", 35), stage("c", 30)])), 85);
  assert.equal(recipeBudgetMinutes(r([stage("a", 20, true), stage("b", 35), stage("c", 30)])), 65);
  assert.equal(recipeBudgetMinutes(r([stage("a", 40, true), stage("b", 35), stage("c")])), 40);
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
