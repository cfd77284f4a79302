// FLUX.2 [dev] end to end on a tiny folder built here: Mistral 3 text encoder
// (layers 10/20/30, left padding, system message), embedded guidance, and a
// reference image. There is no dev checkpoint among the golden fixtures, so
// this proves the plumbing; the numerics of each part are proven elsewhere
// (dev transformer goldens, the Mistral reference test, the VAE goldens).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSafetensors } from "../src/io/safetensors.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { Flux2Pipeline } from "../src/pipeline/flux2.js";
import { randn } from "../src/util/random.js";
import { goldenPath } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

function makeDevFolder(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-dev-"));
  const json = (p: string, v: unknown) => { fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true }); fs.writeFileSync(path.join(dir, p), JSON.stringify(v)); };
  json("model_index.json", {
    _class_name: "Flux2Pipeline", scheduler: ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    text_encoder: ["transformers", "Mistral3ForConditionalGeneration"], tokenizer: ["transformers", "PixtralProcessor"],
    transformer: ["diffusers", "Flux2Transformer2DModel"], vae: ["diffusers", "AutoencoderKLFlux2"],
  });
  // The dev_tiny transformer takes 24-wide text features: 3 layers × hidden 8.
  fs.mkdirSync(path.join(dir, "transformer"));
  fs.copyFileSync(goldenPath("transformer/dev_tiny.config.json"), path.join(dir, "transformer", "config.json"));
  fs.copyFileSync(goldenPath("transformer/dev_tiny.safetensors"), path.join(dir, "transformer", "diffusion_pytorch_model.safetensors"));
  fs.mkdirSync(path.join(dir, "vae"));
  const vaeCfg = JSON.parse(fs.readFileSync(goldenPath("vae/vae_tiny.config.json"), "utf8"));
  json("vae/config.json", vaeCfg);
  fs.copyFileSync(goldenPath("vae/vae_tiny.safetensors"), path.join(dir, "vae", "diffusion_pytorch_model.safetensors"));
  fs.cpSync(goldenPath("checkpoints/klein_distilled/tokenizer"), path.join(dir, "tokenizer"), { recursive: true });
  const tc = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer", "tokenizer_config.json"), "utf8"));
  delete tc.chat_template;
  json("tokenizer/tokenizer_config.json", { ...tc, tokenizer_class: "LlamaTokenizerFast", pad_token: "<|endoftext|>" });
  const text = { model_type: "mistral", vocab_size: 384, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 30,
    num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, rms_norm_eps: 1e-5, rope_theta: 1e9, tie_word_embeddings: false };
  json("text_encoder/config.json", { architectures: ["Mistral3ForConditionalGeneration"], model_type: "mistral3", text_config: text });
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  let seed = 1;
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors[name] = { dtype: "F32", shape, data: Float32Array.from(randn(seed++, n), (x) => offset + x * scale) };
  };
  const p = "model.language_model.";
  add(`${p}embed_tokens.weight`, [384, 8], 1);
  for (let i = 0; i < 30; i++) {
    const l = `${p}layers.${i}.`;
    add(`${l}input_layernorm.weight`, [8], 0.1, 1);
    add(`${l}post_attention_layernorm.weight`, [8], 0.1, 1);
    add(`${l}self_attn.q_proj.weight`, [8, 8], 0.35);
    add(`${l}self_attn.k_proj.weight`, [4, 8], 0.35);
    add(`${l}self_attn.v_proj.weight`, [4, 8], 0.35);
    add(`${l}self_attn.o_proj.weight`, [8, 8], 0.35);
    add(`${l}mlp.gate_proj.weight`, [16, 8], 0.35);
    add(`${l}mlp.up_proj.weight`, [16, 8], 0.35);
    add(`${l}mlp.down_proj.weight`, [8, 16], 0.25);
  }
  add(`${p}norm.weight`, [8], 0.1, 1);
  writeSafetensors(path.join(dir, "text_encoder", "model.safetensors"), tensors);
  return dir;
}

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
