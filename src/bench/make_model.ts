// Random-weight checkpoints with exactly the real shapes and key names (docs/FLUX2-spec.md §1.2–1.4, §7),
// as a diffusers folder the pipeline loads like a downloaded one:
//
//   model_index.json, scheduler/, tokenizer/ (the golden tiny tokenizer: vocabulary does not
//   matter for speed), transformer/ (bf16, one file), text_encoder/ (bf16, sharded like the Hub
//   repos: model-0000k-of-0000n.safetensors + model.safetensors.index.json), vae/ (fp32).
//
// Values: N(0, 1/fan_in) for Linear/conv weights (so activations stay O(1) through the
// layers), norm scales 1, biases 0, token embeddings N(0, 1). Generated with a seeded fast
// generator (src/bench/rng.ts), streamed tensor by tensor (a few MB in memory at a time), and
// written once: every file is renamed into place when complete, and the folder is marked
// complete by `.flux2-random.json`, so an interrupted run resumes and a finished one is reused.

import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { DTYPE_BYTES, numel, type DType } from "../io/safetensors.js";
import { cacheRoot } from "../backend/ort.js";
import type { TransformerConfig } from "../models/transformer.js";
import { expectedTransformerShapes } from "../models/transformer_weights.js";
import type { Qwen3Config } from "../models/qwen3.js";
import { VAE_DEFAULTS, type VaeConfig } from "../models/vae.js";
import { expectedVaeShapes } from "../models/vae_weights.js";
import { SafetensorsStreamWriter, type PlannedTensor } from "../quant/writer.js";
import { randomChunks, seedFor } from "./rng.js";

/** Which random stand-in checkpoint the benchmark writes (not a pipeline Variant). */
export type BenchModelSize = "klein-4b" | "klein-9b" | "quick";

export interface RandomModelSpec {
  variant: BenchModelSize;
  transformer: TransformerConfig;
  textEncoder: Qwen3Config;
  vae: VaeConfig;
  /** Largest text-encoder shard (the Hub repos use ~4 GB). */
  shardBytes: number;
}

const KLEIN_TRANSFORMER = {
  patch_size: 1, in_channels: 128, out_channels: null, attention_head_dim: 128, timestep_guidance_channels: 256,
  mlp_ratio: 3.0, axes_dims_rope: [32, 32, 32, 32], rope_theta: 2000, eps: 1e-6, guidance_embeds: false,
};

const QWEN3 = {
  vocab_size: 151936, num_hidden_layers: 36, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128,
  rms_norm_eps: 1e-6, rope_theta: 1000000, attention_bias: false,
};

export const MODEL_SPECS: Record<BenchModelSize, RandomModelSpec> = {
  "klein-4b": {
    variant: "klein-4b",
    transformer: { ...KLEIN_TRANSFORMER, num_layers: 5, num_single_layers: 20, num_attention_heads: 24, joint_attention_dim: 7680 },
    textEncoder: { ...QWEN3, hidden_size: 2560, intermediate_size: 9728, tie_word_embeddings: true },
    vae: { ...VAE_DEFAULTS },
    shardBytes: 4e9,
  },
  "klein-9b": {
    variant: "klein-9b",
    transformer: { ...KLEIN_TRANSFORMER, num_layers: 8, num_single_layers: 24, num_attention_heads: 32, joint_attention_dim: 12288 },
    textEncoder: { ...QWEN3, hidden_size: 4096, intermediate_size: 12288, tie_word_embeddings: false },
    vae: { ...VAE_DEFAULTS },
    shardBytes: 4e9,
  },
  // A scaled-down model with the same structure (head dim 128, 28 decoder layers so hidden states
  // 9/18/27 exist, a 4-block VAE), for `flux2 bench --quick` and the tests.
  quick: {
    variant: "quick",
    transformer: { ...KLEIN_TRANSFORMER, num_layers: 1, num_single_layers: 2, num_attention_heads: 2, joint_attention_dim: 384 },
    textEncoder: { ...QWEN3, vocab_size: 4096, hidden_size: 128, intermediate_size: 384, num_hidden_layers: 28, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, tie_word_embeddings: true },
    vae: { ...VAE_DEFAULTS, block_out_channels: [32, 32, 64, 64], layers_per_block: 1 },
    shardBytes: 4e6,
  },
};

/** Bump when the generated content changes (a folder from another version is rewritten). */
const FORMAT_VERSION = 1;
const MARKER = ".flux2-random.json";

export function defaultModelDir(variant: BenchModelSize): string {
  return path.join(cacheRoot(), "random", `FLUX.2-${variant}-random`);
}

/** The tensors of a Qwen3 state dict in transformers' order (docs/FLUX2-spec.md §7.5). */
export function qwen3Tensors(c: Qwen3Config): [string, number[]][] {
  const D = c.hidden_size, Dh = c.head_dim, I = c.intermediate_size;
  const q = c.num_attention_heads * Dh, kv = c.num_key_value_heads * Dh;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [c.vocab_size, D]]];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      [`${p}.input_layernorm.weight`, [D]], [`${p}.mlp.down_proj.weight`, [D, I]], [`${p}.mlp.gate_proj.weight`, [I, D]],
      [`${p}.mlp.up_proj.weight`, [I, D]], [`${p}.post_attention_layernorm.weight`, [D]], [`${p}.self_attn.k_norm.weight`, [Dh]],
      [`${p}.self_attn.k_proj.weight`, [kv, D]], [`${p}.self_attn.o_proj.weight`, [D, q]], [`${p}.self_attn.q_norm.weight`, [Dh]],
      [`${p}.self_attn.q_proj.weight`, [q, D]], [`${p}.self_attn.v_proj.weight`, [kv, D]],
    );
  }
  out.push(["model.norm.weight", [D]]);
  if (!c.tie_word_embeddings) out.push(["lm_head.weight", [c.vocab_size, D]]);
  return out;
}

/** Mean and standard deviation of a random tensor, from its name and shape. */
export function initFor(name: string, shape: number[]): { mean: number; std: number } {
  if (name.endsWith(".bias") || name.endsWith("running_mean")) return { mean: 0, std: 0 };
  if (shape.length === 1) return { mean: 1, std: 0 }; // norm scales, running_var
  if (name.endsWith("embed_tokens.weight")) return { mean: 0, std: 1 };
  return { mean: 0, std: 1 / Math.sqrt(numel(shape.slice(1))) };
}

export function countParams(tensors: [string, number[]][]): number {
  return tensors.reduce((n, [, s]) => n + numel(s), 0);
}

export interface MakeModelOptions {
  seed?: number;
  log?: (s: string) => void;
}

export interface MadeModel {
  dir: string;
  reused: boolean;
  params: { transformer: number; textEncoder: number; vae: number };
  bytes: number;
  seconds: number;
}

/** Folder size of everything make-model writes for a spec, in bytes (before writing). */
export function plannedModelBytes(spec: RandomModelSpec): number {
  const bytes = (t: [string, number[]][], dtype: DType) => t.reduce((n, [, s]) => n + numel(s) * DTYPE_BYTES[dtype], 0);
  return bytes(expectedTransformerShapes(spec.transformer), "BF16") + bytes(qwen3Tensors(spec.textEncoder), "BF16") + bytes(expectedVaeShapes(spec.vae), "F32");
}

function repoRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/src/bench → repository root; src/bench (ts-node style) → root.
  return path.resolve(here, here.split(path.sep).includes("dist") ? "../../.." : "../..");
}

/** Write (or reuse) a random checkpoint of `spec` in `dir`. */
export function makeRandomModel(spec: RandomModelSpec, dir: string, opts: MakeModelOptions = {}): MadeModel {
  const seed = opts.seed ?? 0;
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const params = {
    transformer: countParams(expectedTransformerShapes(spec.transformer)),
    textEncoder: countParams(qwen3Tensors(spec.textEncoder)),
    vae: countParams(expectedVaeShapes(spec.vae)),
  };
  const marker = path.join(dir, MARKER);
  const want = { version: FORMAT_VERSION, seed, spec };
  if (fs.existsSync(marker)) {
    try {
      if (JSON.stringify(JSON.parse(fs.readFileSync(marker, "utf8"))) === JSON.stringify(want)) {
        return { dir, reused: true, params, bytes: plannedModelBytes(spec), seconds: 0 };
      }
    } catch {
      // rewrite below
    }
    fs.rmSync(marker);
    for (const sub of ["transformer", "text_encoder", "vae"]) fs.rmSync(path.join(dir, sub), { recursive: true, force: true });
  }
  fs.mkdirSync(dir, { recursive: true });
  const golden = path.join(repoRoot(), "testdata", "golden", "checkpoints", "klein_distilled");
  const total = plannedModelBytes(spec);
  let written = 0;
  let lastShown = -1;
  const progress = (n: number) => {
    written += n;
    const pct = Math.floor((100 * written) / total);
    if (pct !== lastShown && (pct % 5 === 0 || pct === 100)) {
      lastShown = pct;
      log(`make-model: ${(written / 1e9).toFixed(2)} / ${(total / 1e9).toFixed(2)} GB (${pct}%)`);
    }
  };

  // Small files first (cheap to rewrite every time).
  writeJson(path.join(dir, "model_index.json"), {
    _class_name: "Flux2KleinPipeline", _diffusers_version: "0.40.0.dev0", is_distilled: true,
    scheduler: ["diffusers", "FlowMatchEulerDiscreteScheduler"], text_encoder: ["transformers", "Qwen3ForCausalLM"],
    tokenizer: ["transformers", "Qwen2TokenizerFast"], transformer: ["diffusers", "Flux2Transformer2DModel"],
    vae: ["diffusers", "AutoencoderKLFlux2"],
  });
  copyDir(path.join(golden, "scheduler"), path.join(dir, "scheduler"));
  copyDir(path.join(golden, "tokenizer"), path.join(dir, "tokenizer"));
  writeJson(path.join(dir, "text_encoder", "config.json"), {
    architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", hidden_act: "silu", torch_dtype: "bfloat16",
    max_position_embeddings: 40960, use_sliding_window: false, sliding_window: null, rope_scaling: null, ...spec.textEncoder,
  });
  writeJson(path.join(dir, "vae", "config.json"), { _class_name: "AutoencoderKLFlux2", _diffusers_version: "0.40.0.dev0", ...spec.vae });

  writeRandomTransformer(path.join(dir, "transformer"), spec.transformer, { seed, progress });
  writeSharded(path.join(dir, "text_encoder"), qwen3Tensors(spec.textEncoder), "BF16", spec.shardBytes, seed, progress);
  writeRandomFile(path.join(dir, "vae", "diffusion_pytorch_model.safetensors"), expectedVaeShapes(spec.vae), "F32", seed, progress);
  writeJson(marker, want);
  return { dir, reused: false, params, bytes: total, seconds: (performance.now() - t0) / 1000 };
}

/**
 * A random bf16 transformer/ folder for `config` (config.json + one weights file, diffusers names),
 * the one writer every benchmark uses (flux2 bench, bench-kv, the LoRA bench). Returns the weights file.
 */
export function writeRandomTransformer(dir: string, config: TransformerConfig, opts: { seed?: number; progress?: (n: number) => void } = {}): string {
  writeJson(path.join(dir, "config.json"), { _class_name: "Flux2Transformer2DModel", _diffusers_version: "0.40.0.dev0", ...config });
  const file = path.join(dir, "diffusion_pytorch_model.safetensors");
  writeRandomFile(file, expectedTransformerShapes(config), "BF16", opts.seed ?? 0, opts.progress ?? (() => {}));
  return file;
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

function copyDir(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

/** One safetensors file of random tensors; skipped when it already exists (files appear only when complete). */
function writeRandomFile(file: string, tensors: [string, number[]][], dtype: DType, seed: number, progress: (n: number) => void, metadata?: Record<string, string>): void {
  const size = tensors.reduce((n, [, s]) => n + numel(s) * DTYPE_BYTES[dtype], 0);
  if (fs.existsSync(file)) {
    progress(size);
    return;
  }
  const plan: PlannedTensor[] = tensors.map(([name, shape]) => ({ name, dtype, shape }));
  const w = new SafetensorsStreamWriter(file, plan, metadata ?? { format: "pt" });
  try {
    for (const [name, shape] of tensors) {
      const { mean, std } = initFor(name, shape);
      for (const chunk of randomChunks(numel(shape), dtype, std, mean, seedFor(name, seed))) {
        w.write(name, chunk);
        progress(chunk.byteLength);
      }
    }
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
}

/** transformers-style shards (state-dict order, a new shard when the next tensor would pass `maxBytes`) plus the index. */
function writeSharded(dir: string, tensors: [string, number[]][], dtype: DType, maxBytes: number, seed: number, progress: (n: number) => void): void {
  const shards: [string, number[]][][] = [[]];
  let size = 0, total = 0;
  for (const t of tensors) {
    const b = numel(t[1]) * DTYPE_BYTES[dtype];
    if (size + b > maxBytes && shards[shards.length - 1].length) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += b;
    total += b;
  }
  const n = shards.length;
  const name = (k: number) => `model-${String(k + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
  const weightMap: Record<string, string> = {};
  shards.forEach((s, k) => { for (const [t] of s) weightMap[t] = name(k); });
  shards.forEach((s, k) => writeRandomFile(path.join(dir, name(k)), s, dtype, seed, progress));
  writeJson(path.join(dir, "model.safetensors.index.json"), { metadata: { total_size: total }, weight_map: weightMap });
}
