// A tiny FLUX.2 [dev] checkpoint folder in the Hub layout, written to os.tmpdir(): the dev_tiny
// transformer and vae_tiny goldens, the tiny klein tokenizer relabelled as a Llama/Mistral one (no chat
// template, so the documented built-in dev chat is used), and a random 30-layer Mistral 3 text encoder
// (hidden 8, so layers 10/20/30 give the transformer's 24-wide text features) with an untied
// lm_head, as the published Mistral3ForConditionalGeneration checkpoint has one.
// There is no dev checkpoint among the golden fixtures; the numerics of each part are proven elsewhere.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { randn } from "../../src/util/random.js";
import { goldenPath } from "../golden.js";

export const DEV_TINY_TEXT = {
  model_type: "mistral", vocab_size: 384, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 30,
  num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, rms_norm_eps: 1e-5, rope_theta: 1e9, tie_word_embeddings: false,
};

/** `lmHead: false` leaves the lm_head out (a text encoder stripped for encoding only). */
export function makeDevFolder(opts: { lmHead?: boolean } = {}): string {
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
  const text = DEV_TINY_TEXT;
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
  // Drawn last, so every other tensor is the same with or without it.
  if (opts.lmHead !== false) add("lm_head.weight", [384, 8], 0.35);
  writeSafetensors(path.join(dir, "text_encoder", "model.safetensors"), tensors);
  return dir;
}

