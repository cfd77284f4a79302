// The Qwen3 text encoder of FLUX.2 [klein] (transformers `Qwen3ForCausalLM`): its config
// defaults, state-dict layout and the hidden layers klein stacks (9, 18, 27 of 36). The graph and
// the runnable encoder are the shared decoder LLM of decoder.ts.

import type { Backend, HostTensor } from "../backend/backend.js";
import type { Graph } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import {
  DecoderEncoder, DecoderWeights, applyRopeParameters, buildDecoderGraph, defaultConfigPath, readJsonConfig, validateDecoderConfig,
  type DecoderConfig, type DecoderGraphOptions, type DecoderHiddenStates, type DecoderLayout,
} from "./decoder.js";

export interface Qwen3Config extends DecoderConfig {}

/**
 * transformers `Qwen3Config` defaults. Note head_dim: Qwen3Config declares `head_dim=128`, so a
 * config.json without the field means 128, NOT hidden_size / num_attention_heads (that fallback
 * in the modeling file never fires because the config class always sets the attribute).
 */
export const QWEN3_DEFAULTS: Qwen3Config = {
  vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32,
  num_attention_heads: 32, num_key_value_heads: 32, head_dim: 128, rms_norm_eps: 1e-6,
  rope_theta: 10000, tie_word_embeddings: false, attention_bias: false,
};

/** The hidden-state indices FLUX.2 [klein] stacks into its prompt embeddings. */
export const KLEIN_TEXT_LAYERS = [9, 18, 27];

/** Read a transformers Qwen3 `config.json`, refusing features this encoder does not implement. */
export function readQwen3Config(file: string): Qwen3Config {
  return parseQwen3Config(readJsonConfig(file), file);
}

export function parseQwen3Config(raw: Record<string, any>, where = "text encoder config"): Qwen3Config {
  if (raw.model_type !== undefined && raw.model_type !== "qwen3") {
    throw new Error(`${where}: model_type is "${raw.model_type}", expected "qwen3" (is this the FLUX.2 klein text_encoder folder?)`);
  }
  const cfg = { ...QWEN3_DEFAULTS };
  for (const k of Object.keys(cfg) as (keyof Qwen3Config)[]) if (raw[k] !== undefined && raw[k] !== null) (cfg as any)[k] = raw[k];
  // num_key_value_heads: null means "same as attention heads" (Qwen3Config.__post_init__); absent means 32.
  if (raw.num_key_value_heads === null) cfg.num_key_value_heads = cfg.num_attention_heads;
  applyRopeParameters(cfg, raw, where);
  if (raw.use_sliding_window) throw new Error(`${where}: use_sliding_window is true; sliding-window attention is not supported`);
  if (raw.hidden_act !== undefined && raw.hidden_act !== "silu") throw new Error(`${where}: hidden_act "${raw.hidden_act}" is not supported (Qwen3 uses silu)`);
  validateDecoderConfig(cfg, where);
  return cfg;
}

export const QWEN3_LAYOUT: DecoderLayout = {
  model: "Qwen3", prefix: "model.", lmHead: "lm_head.weight", qkNorm: true,
  shapeHint: " (head_dim defaults to 128 when config.json has none, as in transformers' Qwen3Config)",
};

/** The transformers Qwen3 state dict (`model.*`, with q/k norms). */
export class Qwen3Weights extends DecoderWeights {
  constructor(set: WeightSet) {
    super(set, QWEN3_LAYOUT);
  }
}

export type Qwen3GraphOptions = DecoderGraphOptions;

export function buildQwen3Graph(c: Qwen3Config, w: Qwen3Weights, opts: Qwen3GraphOptions): Graph {
  return buildDecoderGraph(c, w, opts, "qwen3_text_encoder");
}

// ---------------------------------------------------------------------------
// The runnable encoder

export interface Qwen3EncoderOptions {
  /** hidden_states indices the first session outputs (default: FLUX.2 klein's 9, 18, 27). */
  outputLayers?: number[];
  finalNorm?: boolean;
  logits?: boolean;
}

export type Qwen3HiddenStates = DecoderHiddenStates;

export class Qwen3Encoder extends DecoderEncoder {
  declare readonly config: Qwen3Config;
  declare readonly weights: Qwen3Weights;

  private constructor(config: Qwen3Config, weights: Qwen3Weights, backend: Backend) {
    // Right padding (klein) never leaves a row without keys; keep the eager/ORT behaviour for the rest.
    super(config, weights, backend, "uniform", KLEIN_TEXT_LAYERS);
  }

  static async load(backend: Backend, config: Qwen3Config, weights: Qwen3Weights, opts: Qwen3EncoderOptions = {}): Promise<Qwen3Encoder> {
    const enc = new Qwen3Encoder(config, weights, backend);
    await enc.session({ outputLayers: opts.outputLayers ?? KLEIN_TEXT_LAYERS, finalNorm: opts.finalNorm, logits: opts.logits });
    return enc;
  }

  /**
   * Open a transformers Qwen3 checkpoint: `weightsPath` is a `text_encoder/` folder (single file or
   * sharded with `model.safetensors.index.json`), a .safetensors file or an index; `configPath`
   * defaults to `config.json` inside the folder.
   */
  static async fromFiles(backend: Backend, weightsPath: string, configPath: string | null = null, opts: Qwen3EncoderOptions = {}): Promise<Qwen3Encoder> {
    const config = readQwen3Config(defaultConfigPath(weightsPath, configPath));
    const weights = new Qwen3Weights(WeightSet.open(weightsPath));
    return Qwen3Encoder.load(backend, config, weights, opts);
  }

  /**
   * FLUX.2 [klein] prompt embeddings (B, L, layers.length * hidden): per token, hidden_states[k]
   * for k in `layers` concatenated in that order. Padded positions are kept.
   */
  override async promptEmbeds(inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number, layers: number[] = KLEIN_TEXT_LAYERS): Promise<HostTensor> {
    return super.promptEmbeds(inputIds, attentionMask, B, L, layers);
  }
}
