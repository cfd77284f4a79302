// The decoder-only LLM graph FLUX.2's text encoders share: Qwen3 for [klein] (qwen3.ts) and
// Mistral Small 3 for [dev] (mistral.ts). Only the forward pass is needed, never generation
// (src/text/generate.ts adds a KV cache for prompt upsampling): the pipeline takes a few hidden
// states and concatenates them per token. The graph is therefore built only as deep as the
// deepest requested hidden state; the final norm and the (tied) lm_head are added only when asked.
//
// As in transformer.ts, what depends only on positions and the padding mask is
// computed here in TypeScript and fed as graph inputs: the rotate-half RoPE
// cos/sin tables (float32, as transformers rounds them) and the additive
// attention bias (causal ∧ key-not-padding).
//
// `DecoderConfig`, `DecoderLayout`, `DecoderWeights`, `buildDecoderGraph` and `DecoderEncoder`
// cover both Llama-style encoders: pre-norm RMSNorm decoder layers, GQA with an explicit head_dim
// (Mistral Small: 32·128 ≠ 5120), rotate-half RoPE and a SwiGLU MLP. What differs is described by
// a `DecoderLayout`: the key prefix of the decoder stack (`model.` for Qwen3,
// `model.language_model.` / `language_model.model.` for Mistral 3), whether q/k get a per-head
// RMSNorm (Qwen3 only) and what a query row without any visible key yields.

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Graph, Value, fileSource } from "../onnx/graph.js";
import { WeightSet, type TensorInfo } from "../io/safetensors.js";
import { QuantizedLinears } from "./quantized/format.js";

/** The transformers config fields a Llama-style decoder needs (Qwen3Config / MistralConfig names). */
export interface DecoderConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  /** Sliding-window attention width (key k visible from q only if q - k < window); null/absent: none. */
  sliding_window?: number | null;
}

/** Parse a config.json file into a plain object, naming the file on failure. */
export function readJsonConfig(file: string): Record<string, any> {
  try {
    const raw = JSON.parse(fs.readFileSync(file, "utf8"));
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new Error("not a JSON object");
    return raw;
  } catch (e) {
    throw new Error(`${file}: cannot read the text encoder config (${(e as Error).message})`);
  }
}

/** Newer transformers files keep rope_theta inside rope_parameters; only the default rotary embedding is implemented. */
export function applyRopeParameters(cfg: DecoderConfig, raw: Record<string, any>, where: string): void {
  const rope = raw.rope_parameters ?? raw.rope_scaling;
  if (rope && typeof rope === "object") {
    const type = rope.rope_type ?? rope.type ?? "default";
    if (type !== "default") throw new Error(`${where}: RoPE scaling "${type}" is not supported (only the default rotary embedding)`);
    if (raw.rope_theta === undefined && typeof rope.rope_theta === "number") cfg.rope_theta = rope.rope_theta;
  }
}

/** Sizes are positive integers, heads group evenly, head_dim is even. */
export function validateDecoderConfig(cfg: DecoderConfig, where: string): void {
  for (const k of ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new Error(`${where}: ${k} must be a positive integer, got ${JSON.stringify(cfg[k])}`);
  }
  if (cfg.num_attention_heads % cfg.num_key_value_heads !== 0) {
    throw new Error(`${where}: num_attention_heads (${cfg.num_attention_heads}) is not a multiple of num_key_value_heads (${cfg.num_key_value_heads})`);
  }
  if (cfg.head_dim % 2 !== 0) throw new Error(`${where}: head_dim (${cfg.head_dim}) must be even for rotary embeddings`);
  if (!(typeof cfg.rms_norm_eps === "number" && cfg.rms_norm_eps > 0)) throw new Error(`${where}: rms_norm_eps must be a positive number, got ${JSON.stringify(cfg.rms_norm_eps)}`);
  if (!(typeof cfg.rope_theta === "number" && cfg.rope_theta > 0)) throw new Error(`${where}: rope_theta must be a positive number, got ${JSON.stringify(cfg.rope_theta)}`);
  const w = cfg.sliding_window;
  if (w !== undefined && w !== null && (!Number.isInteger(w) || w <= 0)) throw new Error(`${where}: sliding_window must be null or a positive integer, got ${JSON.stringify(w)}`);
}

// ---------------------------------------------------------------------------
// Host-side inputs: rotary tables and the attention bias

/**
 * Rotate-half RoPE tables (L, head_dim/2) for positions 0..L-1, rounded like transformers'
 * float32 computation: inv_freq_k = 1 / θ^(2k/d) in float32, angle = f32(pos · inv_freq_k),
 * cos/sin of the float32 angle rounded to float32.
 */
export function qwen3RopeTables(seq: number, headDim: number, theta: number) {
  const f = Math.fround;
  const half = headDim / 2;
  const invFreq = new Float32Array(half);
  for (let k = 0; k < half; k++) invFreq[k] = f(1 / f(f(theta) ** f((2 * k) / headDim)));
  const cos = new Float32Array(seq * half);
  const sin = new Float32Array(seq * half);
  for (let p = 0; p < seq; p++) {
    for (let k = 0; k < half; k++) {
      const angle = f(p * invFreq[k]);
      cos[p * half + k] = Math.cos(angle);
      sin[p * half + k] = Math.sin(angle);
    }
  }
  return { cos, sin, half };
}

/** The same tables under a model-neutral name (Qwen3 θ = 1e6, Mistral Small θ = 1e9). */
export const rotaryTables = qwen3RopeTables;

/** The most negative float32 (torch.finfo(float32).min), what transformers adds for a masked key. */
export const MASKED = -3.4028234663852886e38;

/**
 * Additive attention bias (B, 1, L, L): 0 where key k is visible from query q (k <= q and
 * attention_mask[b, k] = 1, and q - k < window when a sliding window is given), MASKED elsewhere.
 * With right padding every query sees key 0, so no row is fully masked; a fully masked row (left
 * padding, an all-zero mask) gets the reference's eager behaviour: every score rounds to MASKED and
 * softmax spreads uniformly over all keys (see `fullyMaskedRowScale` for the SDPA behaviour).
 */
export function causalPaddingBias(attentionMask: ArrayLike<bigint | number>, B: number, L: number, window: number | null = null): Float32Array {
  const bias = new Float32Array(B * L * L);
  for (let b = 0; b < B; b++) {
    for (let q = 0; q < L; q++) {
      const row = (b * L + q) * L;
      for (let k = 0; k < L; k++) {
        if (k > q || Number(attentionMask[b * L + k]) === 0 || (window !== null && q - k >= window)) bias[row + k] = MASKED;
      }
    }
  }
  return bias;
}

/**
 * Per query row (B, L, 1): 1 where the row of `bias` (from causalPaddingBias) has at least one
 * visible key, 0 where every key is masked. Zeroing the attention output where it is 0 reproduces
 * PyTorch SDPA ≥ 2.5, which returns zeros for fully masked rows, where ONNX Runtime's
 * MultiHeadAttention (like eager attention with a finite mask) averages all values instead.
 */
export function fullyMaskedRowScale(bias: Float32Array, B: number, L: number): Float32Array {
  const scale = new Float32Array(B * L);
  for (let r = 0; r < B * L; r++) {
    const row = r * L;
    for (let k = 0; k < L; k++) {
      if (bias[row + k] === 0) {
        scale[r] = 1;
        break;
      }
    }
  }
  return scale;
}

// ---------------------------------------------------------------------------
// Weights

/** How a decoder's state dict is laid out and which variant of the layer it uses. */
export interface DecoderLayout {
  /** Model name for messages ("Qwen3", "Mistral"). */
  model: string;
  /** Prefix of `embed_tokens`, `layers.N.*` and `norm` (e.g. "model.", "model.language_model."). */
  prefix: string;
  /** Full key of the untied lm_head. */
  lmHead: string;
  /** Per-head RMSNorm of q and k before RoPE (`self_attn.{q,k}_norm`, Qwen3). */
  qkNorm: boolean;
  /** Appended to shape-mismatch errors of attention weights. */
  shapeHint?: string;
}

/** A transformers decoder-LLM state dict, checked against a config. */
export class DecoderWeights {
  /** Block-quantized Linear weights (src/quant/): in the checkpoint itself, or attached at load (`--quantize`). */
  quant: QuantizedLinears | null;

  constructor(readonly set: WeightSet, readonly layout: DecoderLayout) {
    this.quant = QuantizedLinears.detect(set);
  }

  /** A weight's shape, quantized or stored. */
  shapeOf(name: string): number[] {
    return this.quant?.has(name) ? this.quant.shape(name) : this.info(name).shape;
  }

  /** The full key of a tensor of the decoder stack ("layers.0.mlp.up_proj.weight" → "model.layers.0.mlp.up_proj.weight"). */
  key(rel: string): string {
    return this.layout.prefix + rel;
  }

  info(name: string): TensorInfo {
    if (!this.set.has(name)) {
      throw new Error(`${this.set.source}: missing tensor "${name}" — the file is incomplete or not a ${this.layout.model} text encoder (transformers key names${this.layoutNote()})`);
    }
    return this.set.info(name);
  }

  protected layoutNote(): string {
    return "";
  }

  has(name: string): boolean {
    return this.set.has(name) || !!this.quant?.has(name);
  }

  /** A graph value for a weight, in float32. */
  value(g: Graph, name: string): Value {
    return g.weight(name, fileSource(this.info(name)));
  }

  /** A graph value for a weight in its stored dtype (no Cast). */
  raw(g: Graph, name: string): { value: Value; dtype: TensorInfo["dtype"] } {
    const info = this.info(name);
    return { value: g.weight(name, fileSource(info), info.dtype), dtype: info.dtype };
  }

  /**
   * Every weight a graph of `layers` decoder layers (plus the final norm / lm_head when asked)
   * needs exists with the shape the config implies; otherwise name the tensor.
   */
  check(c: DecoderConfig, layers: number, extra: { norm?: boolean; lmHead?: boolean } = {}): void {
    const D = c.hidden_size, Dh = c.head_dim, I = c.intermediate_size;
    const qDim = c.num_attention_heads * Dh, kvDim = c.num_key_value_heads * Dh;
    const want: [string, number[]][] = [[this.key("embed_tokens.weight"), [c.vocab_size, D]]];
    for (let i = 0; i < layers; i++) {
      const p = this.key(`layers.${i}`);
      want.push(
        [`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]],
        [`${p}.self_attn.q_proj.weight`, [qDim, D]], [`${p}.self_attn.k_proj.weight`, [kvDim, D]],
        [`${p}.self_attn.v_proj.weight`, [kvDim, D]], [`${p}.self_attn.o_proj.weight`, [D, qDim]],
      );
      if (this.layout.qkNorm) want.push([`${p}.self_attn.q_norm.weight`, [Dh]], [`${p}.self_attn.k_norm.weight`, [Dh]]);
      want.push([`${p}.mlp.gate_proj.weight`, [I, D]], [`${p}.mlp.up_proj.weight`, [I, D]], [`${p}.mlp.down_proj.weight`, [D, I]]);
      if (c.attention_bias) {
        want.push([`${p}.self_attn.q_proj.bias`, [qDim]], [`${p}.self_attn.k_proj.bias`, [kvDim]],
                  [`${p}.self_attn.v_proj.bias`, [kvDim]], [`${p}.self_attn.o_proj.bias`, [D]]);
      }
    }
    if (extra.norm || extra.lmHead) want.push([this.key("norm.weight"), [D]]);
    if (extra.lmHead && !c.tie_word_embeddings) want.push([this.layout.lmHead, [c.vocab_size, D]]);
    for (const [name, shape] of want) {
      const got = this.shapeOf(name);
      if (got.join(",") !== shape.join(",")) {
        const hint = name.includes(".self_attn.") ? this.layout.shapeHint ?? "" : "";
        throw new Error(`${this.set.source}: text encoder weight "${name}" has shape [${got}] but the config needs [${shape}] — the weights do not match this config (wrong model size or config.json?)${hint}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The graph

export interface DecoderGraphOptions {
  /**
   * `hidden_states` indices to output as `hidden_state_<k>` (B, L, hidden): 0 = token embeddings,
   * k = output of decoder layer k (1-based); k = num_hidden_layers is the final-norm output, as
   * transformers reports the last hidden state.
   */
  outputLayers: number[];
  /** Also output `last_hidden_state`, the final-norm output (B, L, hidden). */
  finalNorm?: boolean;
  /** Also output `logits` (B, L, vocab) of the lm_head (tied to the embedding when configured). */
  logits?: boolean;
  /**
   * Add a graph input `attention_row_scale` (B, L, 1) (see `fullyMaskedRowScale`): every attention
   * output row whose scale is 0 is replaced by zeros before o_proj (fully masked query rows).
   */
  rowScale?: boolean;
  /**
   * Autoregressive decoding with a KV cache (src/text/generate.ts): inputs `past_key_<i>` /
   * `past_value_<i>` (B, P, KV·Dh) per layer, outputs `present_key_<i>` / `present_value_<i>`
   * (B, P+L, KV·Dh) (keys after RoPE); `attention_bias` is then (B, 1, L, P+L), the rope tables
   * cover positions 0..P+L-1, and `logits` (which this option implies) are for the last
   * position only, (B, 1, vocab).
   */
  kvCache?: boolean;
}

interface Ctx {
  g: Graph;
  w: DecoderWeights;
  c: DecoderConfig;
  H: number; // query heads
  KV: number; // key/value heads
  Dh: number; // head dim
  rope: { pos: Value; cos: Value; sin: Value };
  bias: Value; // (B, 1, L, L) additive attention bias
  headBias: Value; // the same, expanded to (B, H, L, L) for MultiHeadAttention
  rowScale: Value | null; // (B, L, 1) multiplier of the attention output
  kvCache: boolean;
}

function linear(ctx: Ctx, x: Value, name: string, withBias = false): Value {
  const { g, w } = ctx;
  const bias = withBias ? w.value(g, `${name}.bias`) : null;
  // Block-quantized weights (src/quant/) multiply with MatMulNBits.
  const q = w.quant?.linear(g, x, `${name}.weight`);
  if (q) return bias ? g.add(q, bias) : q;
  return g.linear(x, w.value(g, `${name}.weight`), bias);
}

function rmsNorm(ctx: Ctx, x: Value, name: string): Value {
  return ctx.g.rmsNorm(x, ctx.w.value(ctx.g, `${name}.weight`), ctx.c.rms_norm_eps);
}

/** RMSNorm over each head's dims, for (B, L, heads*Dh). */
function headNorm(ctx: Ctx, x: Value, heads: number, name: string): Value {
  const { g } = ctx;
  const n = rmsNorm(ctx, g.reshape(x, [0, 0, heads, ctx.Dh]), name);
  return g.reshape(n, [0, 0, heads * ctx.Dh]);
}

/** Rotate-half RoPE: x·cos + rotate_half(x)·sin, rotate_half([x1, x2]) = [-x2, x1]. */
function rope(ctx: Ctx, x: Value, heads: number): Value {
  const { g, rope } = ctx;
  return g.op("RotaryEmbedding", [x, rope.pos, rope.cos, rope.sin], { interleaved: 0, num_heads: heads }, { domain: "com.microsoft" })[0];
}

/** Grouped-query attention: KV head j serves query heads j*rep .. j*rep+rep-1; repeat it for each. */
function repeatKv(ctx: Ctx, x: Value): Value {
  const { g, H, KV, Dh } = ctx;
  if (H === KV) return x;
  const perHead = g.reshape(x, [0, 0, KV, 1, Dh]);
  const repeated = g.op("Expand", [perHead, g.constant([1, 1, 1, H / KV, 1])])[0];
  return g.reshape(repeated, [0, 0, H * Dh]);
}

function attention(ctx: Ctx, x: Value, p: string, layer: number): Value {
  const { g, c, H, KV, Dh } = ctx;
  const b = c.attention_bias;
  let q = linear(ctx, x, `${p}.q_proj`, b);
  let k = linear(ctx, x, `${p}.k_proj`, b);
  if (ctx.w.layout.qkNorm) {
    q = headNorm(ctx, q, H, `${p}.q_norm`);
    k = headNorm(ctx, k, KV, `${p}.k_norm`);
  }
  q = rope(ctx, q, H);
  k = rope(ctx, k, KV);
  let v = linear(ctx, x, `${p}.v_proj`, b);
  if (ctx.kvCache) {
    // The cache holds post-RoPE keys and values of every earlier position; this step appends its own.
    k = g.concat([g.input(`past_key_${layer}`, "F32", ["batch", "past", KV * Dh]), k], 1);
    v = g.concat([g.input(`past_value_${layer}`, "F32", ["batch", "past", KV * Dh]), v], 1);
    g.output(k, `present_key_${layer}`, "F32", ["batch", "total", KV * Dh]);
    g.output(v, `present_value_${layer}`, "F32", ["batch", "total", KV * Dh]);
  }
  let a = g.op("MultiHeadAttention", [q, repeatKv(ctx, k), repeatKv(ctx, v), null, null, ctx.headBias],
    { num_heads: H, scale: { float: 1 / Math.sqrt(Dh) } }, { domain: "com.microsoft" })[0];
  // Where, not Mul: a kernel that turns a fully masked row into NaN (0·NaN = NaN) is zeroed too.
  if (ctx.rowScale) a = g.op("Where", [g.op("Greater", [ctx.rowScale, g.scalar(0.5)])[0], a, g.scalar(0)])[0];
  return linear(ctx, a, `${p}.o_proj`, b);
}

/** down(silu(gate(x)) * up(x)) */
function mlp(ctx: Ctx, x: Value, p: string): Value {
  const { g } = ctx;
  return linear(ctx, g.mul(g.silu(linear(ctx, x, `${p}.gate_proj`)), linear(ctx, x, `${p}.up_proj`)), `${p}.down_proj`);
}

function decoderLayer(ctx: Ctx, i: number, x: Value): Value {
  const { g } = ctx;
  const p = ctx.w.key(`layers.${i}`);
  x = g.add(x, attention(ctx, rmsNorm(ctx, x, `${p}.input_layernorm`), `${p}.self_attn`, i));
  return g.add(x, mlp(ctx, rmsNorm(ctx, x, `${p}.post_attention_layernorm`), `${p}.mlp`));
}

/** Check requested hidden-state indices; return how many decoder layers and whether the final norm is needed. */
export function graphDepth(c: DecoderConfig, opts: DecoderGraphOptions, model = "Qwen3"): { layers: number; norm: boolean } {
  const N = c.num_hidden_layers;
  if (!opts.outputLayers.length && !opts.finalNorm && !opts.logits && !opts.kvCache) throw new Error(`${model} graph: nothing to output (no layers, final norm or logits requested)`);
  for (const k of opts.outputLayers) {
    if (!Number.isInteger(k) || k < 0 || k > N) {
      throw new Error(`text encoder hidden-state layer ${k} is out of range: this ${model} has ${N} decoder layers, so valid indices are 0..${N} (${N} = final-norm output)`);
    }
  }
  const norm = !!opts.finalNorm || !!opts.logits || !!opts.kvCache || opts.outputLayers.includes(N);
  return { layers: norm ? N : Math.max(...opts.outputLayers), norm };
}

/** The decoder graph for any layout (inputs: input_ids, position_ids, rope_cos/sin, attention_bias[, attention_row_scale]). */
export function buildDecoderGraph(c: DecoderConfig, w: DecoderWeights, opts: DecoderGraphOptions, name = `${w.layout.model.toLowerCase()}_text_encoder`): Graph {
  const depth = graphDepth(c, opts, w.layout.model);
  w.check(c, depth.layers, { norm: depth.norm, lmHead: !!opts.logits || !!opts.kvCache });
  const g = new Graph(name);
  const D = c.hidden_size;
  const ctx: Ctx = {
    g, w, c, H: c.num_attention_heads, KV: c.num_key_value_heads, Dh: c.head_dim,
    rope: {
      pos: g.input("position_ids", "I64", ["batch", "seq"]),
      cos: g.input("rope_cos", "F32", [opts.kvCache ? "total" : "seq", c.head_dim / 2]),
      sin: g.input("rope_sin", "F32", [opts.kvCache ? "total" : "seq", c.head_dim / 2]),
    },
    bias: g.input("attention_bias", "F32", ["batch", 1, "seq", opts.kvCache ? "total" : "seq"]),
    headBias: null as never, // set below, from bias
    rowScale: opts.rowScale ? g.input("attention_row_scale", "F32", ["batch", "seq", 1]) : null,
    kvCache: !!opts.kvCache,
  };
  // One (B, H, S, T) copy of the (B, 1, S, T) bias, shared by every layer: ONNX Runtime Web's WebGPU
  // MultiHeadAttention takes no head-broadcast bias (the CPU kernels do, with the same result).
  ctx.headBias = g.op("Expand", [ctx.bias, g.constant([1, ctx.H, 1, 1])])[0];
  const ids = g.input("input_ids", "I64", ["batch", "seq"]);

  // Gather rows in the stored dtype, then cast only the gathered rows: the vocabulary table is
  // never converted as a whole (a full float32 copy would cost 1.5 GB for Qwen3-4B, 2.7 GB for Mistral Small).
  const table = w.raw(g, w.key("embed_tokens.weight"));
  const gathered = g.op("Gather", [table.value, ids], { axis: 0 })[0];
  let x = table.dtype === "F32" ? gathered : g.op("Cast", [gathered], { to: 1 /* FLOAT */ })[0];

  const want = new Set(opts.outputLayers);
  const emit = (k: number, v: Value) => { if (want.has(k)) g.output(v, `hidden_state_${k}`, "F32", ["batch", "seq", D]); };
  emit(0, x);
  for (let i = 0; i < depth.layers; i++) {
    x = g.scope(`layer.${i}`, () => decoderLayer(ctx, i, x));
    if (i + 1 < c.num_hidden_layers) emit(i + 1, x);
  }
  if (!depth.norm) return g;

  const normed = rmsNorm(ctx, x, w.key("norm"));
  emit(c.num_hidden_layers, normed);
  if (opts.finalNorm) g.output(normed, "last_hidden_state", "F32", ["batch", "seq", D]);
  if (opts.logits || opts.kvCache) {
    // Tied: the lm_head is the embedding table itself (here the whole table is cast to float32;
    // only the logits need it, FLUX.2 never asks for them).
    const head = c.tie_word_embeddings
      ? (table.dtype === "F32" ? table.value : g.op("Cast", [table.value], { to: 1 /* FLOAT */ })[0])
      : w.value(g, w.layout.lmHead);
    // Decoding needs the next-token distribution only: the last position, not (L, vocab).
    const rows = opts.kvCache ? g.slice(normed, 1, -1, Number.MAX_SAFE_INTEGER) : normed;
    g.output(g.linear(rows, head), "logits", "F32", ["batch", opts.kvCache ? 1 : "seq", c.vocab_size]);
  }
  return g;
}

export interface DecoderHiddenStates {
  /** One (B, L, hidden) tensor per requested index, in the order requested. */
  hiddenStates: HostTensor[];
  /** (B, L, hidden), when requested. */
  lastHiddenState: HostTensor | null;
  /** (B, L, vocab), when requested. */
  logits: HostTensor | null;
}

/**
 * What a query row with no visible key (left padding) yields: "uniform" = softmax over all-equal
 * MASKED scores, the mean of all values (eager attention with a finite mask, ORT's behaviour);
 * "zero" = a zero attention output (PyTorch SDPA ≥ 2.5 with transformers' boolean masks).
 */
export type FullyMaskedRows = "uniform" | "zero";

interface Built {
  layers: Set<number>;
  finalNorm: boolean;
  logits: boolean;
  session: Session;
}

/**
 * The host-side inputs of a decoder graph for right- or left-padded ids: positions 0..L-1 (padding
 * does not shift them), the rotary tables and the causal + padding attention bias. Shared by the
 * runnable encoder and the text-encoder trainer (src/train/text_align.ts).
 */
export function decoderFeeds(c: DecoderConfig, inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number): Record<string, HostTensor> {
  const { cos, sin, half } = qwen3RopeTables(L, c.head_dim, c.rope_theta);
  const positions = new BigInt64Array(B * L);
  for (let i = 0; i < B * L; i++) positions[i] = BigInt(i % L);
  return {
    input_ids: { data: inputIds, shape: [B, L] },
    position_ids: { data: positions, shape: [B, L] },
    rope_cos: { data: cos, shape: [L, half] },
    rope_sin: { data: sin, shape: [L, half] },
    attention_bias: { data: causalPaddingBias(attentionMask, B, L, c.sliding_window ?? null), shape: [B, 1, L, L] },
  };
}

/** A runnable decoder encoder: sessions built on demand, host-side feeds, stacked prompt embeddings. */
export class DecoderEncoder {
  private built: Built | null = null;

  protected constructor(readonly config: DecoderConfig, readonly weights: DecoderWeights, private backend: Backend,
                        readonly fullyMaskedRows: FullyMaskedRows, readonly defaultLayers: number[]) {}

  /** A session that outputs at least what is asked; rebuilt (replacing the old one) when it does not. */
  protected async session(opts: DecoderGraphOptions): Promise<Session> {
    const b = this.built;
    if (b && opts.outputLayers.every((k) => b.layers.has(k)) && (!opts.finalNorm || b.finalNorm) && (!opts.logits || b.logits)) return b.session;
    const graph = buildDecoderGraph(this.config, this.weights, { ...opts, rowScale: this.fullyMaskedRows === "zero" });
    if (b) {
      this.built = null;
      await b.session.release();
    }
    const session = await this.backend.createSession(graph);
    this.built = { layers: new Set(opts.outputLayers), finalNorm: !!opts.finalNorm, logits: !!opts.logits, session };
    return session;
  }

  private feeds(inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number): Record<string, HostTensor> {
    const c = this.config;
    if (!Number.isInteger(B) || !Number.isInteger(L) || B < 1 || L < 1) throw new Error(`text encoder: invalid batch ${B} / length ${L}`);
    if (inputIds.length !== B * L) throw new Error(`text encoder: input_ids has ${inputIds.length} values, expected B*L = ${B}*${L}`);
    if (attentionMask.length !== B * L) throw new Error(`text encoder: attention_mask has ${attentionMask.length} values, expected B*L = ${B}*${L}`);
    for (let i = 0; i < inputIds.length; i++) {
      const id = inputIds[i];
      if (id < 0n || id >= BigInt(c.vocab_size)) throw new Error(`text encoder: token id ${id} at [${Math.floor(i / L)}, ${i % L}] is outside the vocabulary (0..${c.vocab_size - 1})`);
    }
    for (let i = 0; i < attentionMask.length; i++) {
      if (attentionMask[i] !== 0n && attentionMask[i] !== 1n) throw new Error(`text encoder: attention_mask must be 0 or 1, got ${attentionMask[i]} at [${Math.floor(i / L)}, ${i % L}]`);
    }
    const feeds = decoderFeeds(c, inputIds, attentionMask, B, L);
    if (this.fullyMaskedRows === "zero") feeds.attention_row_scale = { data: fullyMaskedRowScale(feeds.attention_bias.data as Float32Array, B, L), shape: [B, L, 1] };
    return feeds;
  }

  /** transformers `hidden_states[k]` for each k of `layers` (default: all), plus final norm / logits when asked. */
  async hiddenStates(inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number,
                     layers: number[] = Array.from({ length: this.config.num_hidden_layers + 1 }, (_, k) => k),
                     opts: { finalNorm?: boolean; logits?: boolean } = {}): Promise<DecoderHiddenStates> {
    const session = await this.session({ outputLayers: layers, ...opts });
    const names = [...new Set(layers)].map((k) => `hidden_state_${k}`);
    if (opts.finalNorm) names.push("last_hidden_state");
    if (opts.logits) names.push("logits");
    const out = await session.run(this.feeds(inputIds, attentionMask, B, L), names);
    return {
      hiddenStates: layers.map((k) => out[`hidden_state_${k}`]),
      lastHiddenState: opts.finalNorm ? out.last_hidden_state : null,
      logits: opts.logits ? out.logits : null,
    };
  }

  /**
   * FLUX.2 prompt embeddings (B, L, layers.length * hidden): per token, hidden_states[k] for k in
   * `layers` concatenated in that order (the model's default layers when omitted). Padded positions are kept.
   */
  async promptEmbeds(inputIds: BigInt64Array, attentionMask: BigInt64Array, B: number, L: number, layers: number[] = this.defaultLayers): Promise<HostTensor> {
    if (!layers.length) throw new Error("text encoder: promptEmbeds needs at least one layer");
    const { hiddenStates } = await this.hiddenStates(inputIds, attentionMask, B, L, layers);
    const D = this.config.hidden_size, n = layers.length;
    const out = new Float32Array(B * L * n * D);
    hiddenStates.forEach((h, j) => {
      const src = h.data as Float32Array;
      for (let t = 0; t < B * L; t++) out.set(src.subarray(t * D, (t + 1) * D), (t * n + j) * D);
    });
    return { data: out, shape: [B, L, n * D] };
  }

  async release(): Promise<void> {
    const b = this.built;
    this.built = null;
    if (b) await b.session.release();
  }
}

/** The config file next to a weights folder / file, unless given explicitly. */
export function defaultConfigPath(weightsPath: string, configPath: string | null): string {
  const cfgFile = configPath ?? path.join(fs.statSync(weightsPath, { throwIfNoEntry: false })?.isDirectory() ? weightsPath : path.dirname(weightsPath), "config.json");
  if (!fs.existsSync(cfgFile)) throw new Error(`${cfgFile}: no text encoder config.json; pass its path explicitly`);
  return cfgFile;
}
