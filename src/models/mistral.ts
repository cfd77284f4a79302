// The Mistral text encoder of FLUX.2 [dev] (transformers `Mistral3ForConditionalGeneration`, text model
// only), docs/FLUX2-spec.md §1.4, §2.2, §2.4, §7.5.
//
// The language model of Mistral Small 3.x is the same pre-norm decoder as Qwen3 (qwen3.ts builds
// the graph for both) without the per-head q/k RMSNorm, with rope_theta 1e9, rms_norm_eps 1e-5 and an
// explicit head_dim (128 with hidden 5120 and 32 heads, so the attention width 4096 ≠ hidden).
// FLUX.2 [dev] stacks hidden states 10, 20, 30 of its 40 layers → (B, 512, 3·5120); the graph stops
// at layer 30, and the Pixtral vision tower, the projector and the lm_head are never read.
//
// Fully masked query rows. The dev prompt is LEFT-padded (docs/FLUX2-spec.md §2.2), so the pad rows at the start have
// no visible key (causal ∧ key-not-padding). transformers with PyTorch ≥ 2.5 hands SDPA a boolean
// mask, and SDPA returns a ZERO attention output on such rows; ONNX Runtime's MultiHeadAttention
// instead softmaxes the all-MASKED row uniformly (the mean of all values, like eager attention with a
// finite mask). By default ("zero") the host computes a per-row flag (`attention_row_scale`: 0 for
// rows without any visible key, 1 otherwise) and the graph replaces the attention output of flagged
// rows by zeros before o_proj (a Where, so even a NaN from some kernel is cleared), so pad rows evolve
// as x ← x + 0; x ← x + MLP(RMSNorm(x)). `fullyMaskedRows: "uniform"` keeps ORT's mean instead (what
// eager attention computes). Note that PyTorch < 2.5 with transformers' `allow_torch_fix` gives yet
// another result (the row attends to every key with real scores); not offered.
// [verify] against a real transformers run of FLUX.2-dev with left padding: no golden fixture covers
// the Mistral encoder yet.

import type { Backend, HostTensor } from "../backend/backend.js";
import { WeightSet } from "../io/safetensors.js";
import type { Graph } from "../onnx/graph.js";
import {
  applyRopeParameters, buildDecoderGraph, DecoderEncoder, DecoderWeights, defaultConfigPath, readJsonConfig, validateDecoderConfig,
  type DecoderConfig, type DecoderGraphOptions, type DecoderLayout, type FullyMaskedRows,
} from "./decoder.js";

export interface MistralConfig extends DecoderConfig {
  sliding_window: number | null;
}

/**
 * transformers `MistralConfig` defaults (used for every field a `text_config` / config.json leaves
 * out). head_dim absent or null means hidden_size // num_attention_heads.
 */
export const MISTRAL_DEFAULTS: Omit<MistralConfig, "head_dim"> & { head_dim: number | null } = {
  vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
  num_attention_heads: 32, num_key_value_heads: 8, head_dim: null, rms_norm_eps: 1e-6,
  rope_theta: 10000, tie_word_embeddings: false, attention_bias: false, sliding_window: 4096,
};

/**
 * `Mistral3Config`'s text config when the file has no `text_config` at all (Mistral Small 3.1):
 * the values FLUX.2 [dev] uses, docs/FLUX2-spec.md §1.4.
 */
export const MISTRAL3_DEFAULT_TEXT_CONFIG: Record<string, unknown> = {
  model_type: "mistral", vocab_size: 131072, hidden_size: 5120, intermediate_size: 32768, num_hidden_layers: 40,
  num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, rms_norm_eps: 1e-5, rope_theta: 1e9,
  sliding_window: null, max_position_embeddings: 131072,
};

/** The hidden-state indices FLUX.2 [dev] stacks into its prompt embeddings (→ 3 × 5120 = 15360). */
export const DEV_TEXT_LAYERS = [10, 20, 30];

/** Read a transformers Mistral 3 (`text_config` inside) or plain Mistral `config.json`. */
export function readMistralConfig(file: string): MistralConfig {
  return parseMistralConfig(readJsonConfig(file), file);
}

export function parseMistralConfig(raw: Record<string, any>, where = "text encoder config"): MistralConfig {
  let text: Record<string, any> = raw;
  let at = where;
  if (raw.model_type === "mistral3" || raw.text_config !== undefined) {
    if (raw.text_config != null && (typeof raw.text_config !== "object" || Array.isArray(raw.text_config))) {
      throw new Error(`${where}: text_config must be an object`);
    }
    // Absent or null: Mistral3Config's built-in text config.
    text = raw.text_config ?? MISTRAL3_DEFAULT_TEXT_CONFIG;
    at = `${where} (text_config)`;
  }
  const type = text.model_type ?? (text === raw ? undefined : "mistral");
  if (type !== undefined && type !== "mistral") {
    throw new Error(`${at}: model_type is "${type}", expected "mistral" or "mistral3" with a mistral text_config (is this the FLUX.2 dev text_encoder folder?)`);
  }
  const cfg: any = { ...MISTRAL_DEFAULTS };
  for (const k of Object.keys(cfg)) if (text[k] !== undefined && text[k] !== null) cfg[k] = text[k];
  if (text.sliding_window === null) cfg.sliding_window = null;
  if (text.num_key_value_heads === null) cfg.num_key_value_heads = cfg.num_attention_heads;
  if (cfg.head_dim === null) cfg.head_dim = Math.floor(cfg.hidden_size / cfg.num_attention_heads);
  // The Mistral attention has no biases whatever the file says (nn.Linear(..., bias=False)).
  cfg.attention_bias = false;
  applyRopeParameters(cfg, text, at);
  if (text.hidden_act !== undefined && text.hidden_act !== "silu") throw new Error(`${at}: hidden_act "${text.hidden_act}" is not supported (Mistral uses silu)`);
  validateDecoderConfig(cfg, at);
  return cfg as MistralConfig;
}

// ---------------------------------------------------------------------------
// Weights

const MISTRAL_HINT = " (head_dim is config.json's value, else hidden_size / num_attention_heads as in transformers' MistralConfig)";

/** The key layouts a Mistral text model is found under, most specific first. */
export const MISTRAL_LAYOUTS: readonly DecoderLayout[] = [
  // Mistral3ForConditionalGeneration, current transformers.
  { model: "Mistral", prefix: "model.language_model.", lmHead: "lm_head.weight", qkNorm: false, shapeHint: MISTRAL_HINT },
  // Mistral3ForConditionalGeneration, older transformers (mapped ^language_model.model → model.language_model on load).
  { model: "Mistral", prefix: "language_model.model.", lmHead: "language_model.lm_head.weight", qkNorm: false, shapeHint: MISTRAL_HINT },
  // MistralForCausalLM.
  { model: "Mistral", prefix: "model.", lmHead: "lm_head.weight", qkNorm: false, shapeHint: MISTRAL_HINT },
];

/** Which layout a weight set uses: the first whose embedding table or decoder layers are present. */
export function detectMistralLayout(set: WeightSet): DecoderLayout {
  const keys = set.keys();
  for (const layout of MISTRAL_LAYOUTS) {
    const layers = `${layout.prefix}layers.`;
    if (set.has(`${layout.prefix}embed_tokens.weight`) || keys.some((k) => k.startsWith(layers))) return layout;
  }
  throw new Error(
    `${set.source}: no Mistral language-model weights found: expected "model.language_model.embed_tokens.weight" ` +
      `(transformers Mistral3ForConditionalGeneration), "language_model.model.embed_tokens.weight" (older layout) or ` +
      `"model.embed_tokens.weight" (MistralForCausalLM) and the matching "…layers.N.*" tensors`,
  );
}

/** A Mistral text-model state dict under one of `MISTRAL_LAYOUTS` (detected unless given). */
export class MistralWeights extends DecoderWeights {
  constructor(set: WeightSet, layout: DecoderLayout = detectMistralLayout(set)) {
    super(set, layout);
  }

  protected override layoutNote(): string {
    return `, layout "${this.layout.prefix}*"`;
  }
}

/** The graph for a Mistral text model (see buildDecoderGraph; `rowScale` adds the fully-masked-row input). */
export function buildMistralGraph(c: MistralConfig, w: MistralWeights, opts: DecoderGraphOptions): Graph {
  return buildDecoderGraph(c, w, opts, "mistral_text_encoder");
}

// ---------------------------------------------------------------------------
// The runnable encoder

export interface MistralEncoderOptions {
  /** hidden_states indices the first session outputs (default: FLUX.2 dev's 10, 20, 30). */
  outputLayers?: number[];
  finalNorm?: boolean;
  logits?: boolean;
  /** Attention output of query rows without any visible key (default "zero", PyTorch SDPA ≥ 2.5). */
  fullyMaskedRows?: FullyMaskedRows;
}

export class MistralEncoder extends DecoderEncoder {
  declare readonly config: MistralConfig;
  declare readonly weights: MistralWeights;

  private constructor(config: MistralConfig, weights: MistralWeights, backend: Backend, rows: FullyMaskedRows) {
    super(config, weights, backend, rows, DEV_TEXT_LAYERS);
  }

  static async load(backend: Backend, config: MistralConfig, weights: MistralWeights, opts: MistralEncoderOptions = {}): Promise<MistralEncoder> {
    const rows = opts.fullyMaskedRows ?? "zero";
    if (rows !== "zero" && rows !== "uniform") throw new Error(`Mistral text encoder: fullyMaskedRows must be "zero" or "uniform", got ${JSON.stringify(rows)}`);
    const enc = new MistralEncoder(config, weights, backend, rows);
    await enc.session({ outputLayers: opts.outputLayers ?? DEV_TEXT_LAYERS, finalNorm: opts.finalNorm, logits: opts.logits });
    return enc;
  }

  /**
   * Open a FLUX.2 [dev] `text_encoder/` folder (sharded with `model.safetensors.index.json` or single
   * file), a .safetensors file or an index. `configPath` defaults to `config.json` next to the weights
   * (a `Mistral3ForConditionalGeneration` config with `text_config`, or a plain `MistralForCausalLM` one).
   */
  static async fromFiles(backend: Backend, dir: string, configPath: string | null = null, opts: MistralEncoderOptions = {}): Promise<MistralEncoder> {
    const config = readMistralConfig(defaultConfigPath(dir, configPath));
    const set = WeightSet.open(dir);
    let weights: MistralWeights;
    try {
      weights = new MistralWeights(set);
    } catch (e) {
      set.close();
      throw e;
    }
    return MistralEncoder.load(backend, config, weights, opts);
  }

  /**
   * FLUX.2 [dev] prompt embeddings (B, L, layers.length · hidden): per token, hidden_states[k] for k
   * in `layers` (default 10, 20, 30) concatenated in that order. Padded positions are kept.
   */
  override async promptEmbeds(inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number, layers: number[] = DEV_TEXT_LAYERS): Promise<HostTensor> {
    return super.promptEmbeds(inputIds, attentionMask, B, L, layers);
  }
}
