// Opening checkpoints: variant detection, BFL single files, and clear errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openCheckpoint, transformerConfig } from "../src/pipeline/checkpoint.js";
import { PIPELINE_CLASSES, VARIANT_CARDS, VARIANTS, variantOfPipeline } from "../src/pipeline/variants.js";
import { goldenPath } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

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

test("the variant follows model_index.json's pipeline class and is_distilled, as the variant cards name them", () => {
  const variantOf = (index: Record<string, unknown>) => {
    const dir = copy(distilled);
    const file = path.join(dir, "model_index.json");
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, "utf8")), ...index }));
    return openCheckpoint(dir).variant;
  };
  assert.equal(variantOf({ _class_name: "Flux2KleinPipeline", is_distilled: true }), "klein");
  assert.equal(variantOf({ _class_name: "Flux2KleinPipeline", is_distilled: false }), "klein-base");
  assert.equal(variantOf({ _class_name: "Flux2KleinPipeline", is_distilled: undefined }), "klein-base"); // diffusers' default
  assert.equal(variantOf({ _class_name: "Flux2KleinInpaintPipeline", is_distilled: true }), "klein");
  assert.equal(variantOf({ _class_name: "Flux2KleinKVPipeline", is_distilled: true }), "klein-kv");
  assert.equal(variantOf({ _class_name: "Flux2Pipeline" }), "dev");
  assert.throws(() => variantOf({ _class_name: "FluxPipeline" }), /unknown pipeline class "FluxPipeline" \(expected one of Flux2KleinPipeline, Flux2KleinInpaintPipeline, Flux2KleinKVPipeline, Flux2Pipeline\)/);
  // What `flux2 quantize` writes for each variant reads back as that variant.
  for (const v of VARIANTS) {
    const d = VARIANT_CARDS[v].diffusers;
    assert.equal(variantOfPipeline(d.pipeline, d.isDistilled ?? false), v);
    assert.ok(PIPELINE_CLASSES.includes(d.pipeline));
  }
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
  const a = loadPipeline(distilled);
  const b = loadPipeline(distilled, { transformer: path.join(distilled, "flux-2-klein-tiny.safetensors"), vae: path.join(distilled, "ae.safetensors") });
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
  const pipe = loadPipeline(ck);
  await assert.rejects(pipe.generate({ prompt: "x", width: 32, height: 32 }), /the weights hold 2 double-stream and 2 single-stream blocks but the config says num_layers 3/);
  await pipe.release();
});

/** Write a copy of the distilled checkpoint with one JSON file changed, and return what opening it says. */
function openWith(file: string, change: (raw: any) => any): string {
  const ck = copy(distilled);
  const p = path.join(ck, file);
  fs.writeFileSync(p, JSON.stringify(change(JSON.parse(fs.readFileSync(p, "utf8")))));
  try {
    transformerConfig(openCheckpoint(ck));
  } catch (e) {
    return (e as Error).message;
  }
  return "opened";
}

test("every config is validated before anything is allocated: transformer, VAE, scheduler, model_index.json", () => {
  const t = "transformer/config.json";
  // The hostile cases of issue 16: a billion layers (used to exhaust memory) and a negative count (used to "succeed").
  assert.match(openWith(t, (c) => ({ ...c, num_layers: 1e9 })), /num_layers must be an integer from 0 to 1024, got 1000000000/);
  assert.match(openWith(t, (c) => ({ ...c, num_layers: -3 })), /num_layers must be an integer from 0 to 1024, got -3/);
  assert.match(openWith(t, (c) => ({ ...c, num_attention_heads: 2.5 })), /num_attention_heads must be an integer/);
  assert.match(openWith(t, (c) => ({ ...c, num_attention_heads: "3" })), /num_attention_heads must be an integer from 1 to \d+, got "3"/);
  assert.match(openWith(t, (c) => ({ ...c, axes_dims_rope: [4, 4, 4, 2] })), /axes_dims_rope sums to 14 but attention_head_dim is 16/);
  assert.match(openWith(t, (c) => ({ ...c, mlp_ratio: -1 })), /mlp_ratio must be a number above 0/);
  assert.match(openWith(t, (c) => ({ ...c, eps: 0 })), /eps must be a number above 0/);
  assert.match(openWith(t, (c) => ({ ...c, guidance_embeds: "no" })), /guidance_embeds must be true or false/);
  assert.match(openWith(t, (c) => ({ ...c, out_channels: 8 })), /out_channels must be null or equal to in_channels \(16\)/);
  assert.match(openWith(t, (c) => ({ ...c, patch_size: 2 })), /patch_size must be 1/);
  assert.match(openWith(t, (c) => ({ ...c, use_magic: true })), /unknown field "use_magic"/);
  assert.match(openWith(t, (c) => ({ ...c, num_layers: 0, num_single_layers: 0 })), /at least one block/);
  // Consistent with the other components' configs.
  assert.match(openWith(t, (c) => ({ ...c, joint_attention_dim: 64 })), /joint_attention_dim is 64 but the text encoder gives 3 × 16 = 48/);
  assert.match(openWith(t, (c) => ({ ...c, in_channels: 32 })), /transformer takes 32 input channels but the VAE gives 16/);

  const v = "vae/config.json";
  assert.match(openWith(v, (c) => ({ ...c, layers_per_block: 1e9 })), /layers_per_block must be an integer from 1 to 16/);
  assert.match(openWith(v, (c) => ({ ...c, block_out_channels: [8, -8] })), /block_out_channels must be a list/);
  assert.match(openWith(v, (c) => ({ ...c, latent_channels: 4.5 })), /latent_channels must be an integer/);

  const s = "scheduler/scheduler_config.json";
  assert.match(openWith(s, (c) => ({ ...c, use_karras_sigmas: true })), /use_karras_sigmas is true; this sampler implements only false/);
  assert.match(openWith(s, (c) => ({ ...c, num_train_timesteps: 500 })), /num_train_timesteps is 500/);
  assert.match(openWith(s, (c) => ({ ...c, _class_name: "DDIMScheduler" })), /only FlowMatchEulerDiscreteScheduler/);
  assert.match(openWith(s, (c) => ({ ...c, brand_new_option: 1 })), /unknown field "brand_new_option"/);

  const m = "model_index.json";
  assert.match(openWith(m, (c) => ({ ...c, is_distilled: "yes" })), /is_distilled must be true or false/);
  assert.match(openWith(m, (c) => ({ ...c, vae: ["diffusers", "AutoencoderKL"] })), /vae class "AutoencoderKL" is not supported/);
  assert.match(openWith(m, (c) => ({ ...c, transformer: "Flux2Transformer2DModel" })), /"transformer" must be a \[library, class\] pair/);
  assert.match(openWith(m, (c) => ({ ...c, controlnet: ["diffusers", "X"] })), /unknown component "controlnet"/);
  assert.equal(openWith(m, (c) => c), "opened");
});

test("a VAE config with fewer blocks or layers than its weights is refused, naming the count", async () => {
  const ck = copy(distilled);
  const p = path.join(ck, "vae", "config.json");
  const cfg = JSON.parse(fs.readFileSync(p, "utf8"));
  fs.writeFileSync(p, JSON.stringify({ ...cfg, layers_per_block: cfg.layers_per_block + 1 }));
  const pipe = loadPipeline(ck);
  await assert.rejects(pipe.generate({ prompt: "x", width: 32, height: 32 }), new RegExp(`the weights hold ${cfg.layers_per_block} ResNets in the first encoder block \\(layers_per_block\\) but the config needs ${cfg.layers_per_block + 1}`));
  await pipe.release();
});

test("--transformer takes diffusers weights: a folder, a file beside its config.json, or a file alone (config inferred)", () => {
  const own = transformerConfig(openCheckpoint(distilled));
  const folder = path.join(distilled, "transformer");
  const file = path.join(folder, "diffusion_pytorch_model.safetensors");
  const alone = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-ck-")), "weights.safetensors");
  fs.copyFileSync(file, alone);
  for (const t of [folder, file, alone]) {
    const ck = openCheckpoint(distilled, { transformer: t });
    assert.equal(ck.transformer.format, "diffusers");
    assert.equal(ck.transformer.config === null, t === alone);
    assert.deepEqual(transformerConfig(ck), own, t);
  }
});
