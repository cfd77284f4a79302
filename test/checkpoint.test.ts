// Opening checkpoints: variant detection, BFL single files, and clear errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openCheckpoint, transformerConfig } from "../src/pipeline/checkpoint.js";
import { Flux2Pipeline } from "../src/pipeline/flux2.js";
import { goldenPath } from "./golden.js";

const distilled = goldenPath("checkpoints/klein_distilled");
const base = goldenPath("checkpoints/klein_base");

function copy(src: string) {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-ck-")), "ck");
  fs.cpSync(src, dir, { recursive: true });
  return dir;
}

test("variants and their defaults come from model_index.json", () => {
  const k = openCheckpoint(distilled);
  assert.equal(k.variant, "klein");
  assert.deepEqual([k.defaults.steps, k.defaults.cfg], [4, false]);
  const b = openCheckpoint(base);
  assert.equal(b.variant, "klein-base");
  assert.deepEqual([b.defaults.steps, b.defaults.guidance, b.defaults.cfg], [50, 4, true]);
  assert.equal(b.textEncoder.kind, "qwen3");
});

test("a BFL single file inside its repository uses the folder's other parts", () => {
  const ck = openCheckpoint(path.join(distilled, "flux-2-klein-tiny.safetensors"));
  assert.equal(ck.transformer.format, "bfl");
  assert.equal(ck.transformer.config, null);
  assert.equal(transformerConfig(ck).num_attention_heads, 3);
  assert.ok(ck.tokenizer.endsWith("tokenizer"));
});

test("a BFL single file alone needs its parts and says which", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bfl-"));
  const file = path.join(dir, "flux-2-klein-tiny.safetensors");
  fs.copyFileSync(path.join(distilled, "flux-2-klein-tiny.safetensors"), file);
  assert.throws(() => openCheckpoint(file), /also pass --text-encoder PATH/);
  const ck = openCheckpoint(file, {
    textEncoder: path.join(distilled, "text_encoder"), tokenizer: path.join(distilled, "tokenizer"),
    vae: path.join(distilled, "ae.safetensors"),
  });
  assert.equal(ck.vae.format, "bfl");
  assert.equal(ck.variant, "klein");
});

test("a BFL transformer and ae.safetensors generate the same image as the diffusers folder", async () => {
  const opts = { prompt: "a lighthouse", width: 32, height: 32, seed: 3 };
  const a = Flux2Pipeline.fromPretrained(distilled);
  const b = Flux2Pipeline.fromPretrained(distilled, { transformer: path.join(distilled, "flux-2-klein-tiny.safetensors"), vae: path.join(distilled, "ae.safetensors") });
  const ra = await a.generate(opts);
  const rb = await b.generate(opts);
  assert.deepEqual([...ra.images[0].rgb], [...rb.images[0].rgb]);
});

test("unknown pipeline or component classes, and missing parts, are clear errors", () => {
  const ck = copy(distilled);
  const index = JSON.parse(fs.readFileSync(path.join(ck, "model_index.json"), "utf8"));
  fs.writeFileSync(path.join(ck, "model_index.json"), JSON.stringify({ ...index, _class_name: "FluxPipeline" }));
  assert.throws(() => openCheckpoint(ck), /unknown pipeline class "FluxPipeline"/);
  fs.writeFileSync(path.join(ck, "model_index.json"), JSON.stringify(index));

  const cfgPath = path.join(ck, "vae", "config.json");
  const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"));
  fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, _class_name: "AutoencoderKL" }));
  assert.throws(() => openCheckpoint(ck), /unknown vae class "AutoencoderKL"/);
  fs.writeFileSync(cfgPath, JSON.stringify(cfg));

  fs.rmSync(path.join(ck, "text_encoder"), { recursive: true });
  assert.throws(() => openCheckpoint(ck), /text encoder folder "text_encoder\/" is missing/);
  assert.throws(() => openCheckpoint(path.join(ck, "nope")), /no such file or folder/);
  assert.throws(() => openCheckpoint(path.join(ck, "vae")), /no model_index\.json/);
});

test("a transformer config that does not match the weights is refused before running", async () => {
  const ck = copy(distilled);
  const cfgPath = path.join(ck, "transformer", "config.json");
  const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"));
  fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, num_layers: cfg.num_layers + 1 }));
  const pipe = Flux2Pipeline.fromPretrained(ck);
  await assert.rejects(pipe.generate({ prompt: "x", width: 32, height: 32 }), /missing tensor "transformer_blocks\.2\./);
  await pipe.release();
});
