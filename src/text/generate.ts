// Text generation with the text encoder's LLM (Qwen3 for klein, Mistral for dev):
// the same decoder graph the pipeline encodes prompts with (src/models/qwen3.ts),
// built with its KV-cache option, run one token at a time on the same backend.
//
// Sampling follows transformers' generate(): greedy when temperature is 0, else
// logits / temperature → top-k (the k most likely tokens) → softmax → top-p (the
// smallest set of most likely tokens whose probability reaches top_p) → one draw from a seeded xoshiro128** stream
// (src/util/random.ts), so the same seed gives the same text. Generation stops at
// a stop token (not included in the output) or after maxNewTokens.

import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { buildDecoderGraph, qwen3RopeTables, MASKED, type DecoderConfig, type DecoderWeights } from "../models/decoder.js";
import { Xoshiro128 } from "../util/random.js";

export interface SamplingOptions {
  /** Tokens to generate at most (the limit). */
  maxNewTokens: number;
  /** 0 (default): greedy. */
  temperature?: number;
  /** Nucleus sampling mass, (0, 1]; 1 (default) keeps every token. */
  topP?: number;
  /** Keep only the k most likely tokens before top-p (transformers' top_k); 0 or absent keeps every token. */
  topK?: number;
  seed?: number;
  /** Token ids that end generation (e.g. <|im_end|>, </s>). */
  stopTokens?: number[];
}

export interface GeneratedText {
  tokens: number[];
  /** "stop": a stop token ended it; "length": maxNewTokens was reached. */
  finish: "stop" | "length";
}

/** Why a text encoder checkpoint cannot generate, or null. */
export function lmHeadProblem(c: DecoderConfig, w: DecoderWeights): string | null {
  if (c.tie_word_embeddings || w.has(w.layout.lmHead)) return null;
  return `${w.set.source}: this text encoder has no lm_head ("${w.layout.lmHead}") and does not tie it to the embeddings (tie_word_embeddings is false), ` +
    "so it cannot generate text; prompt upsampling needs the full causal LM checkpoint (the text_encoder folder of the model as published)";
}

/** One sampling decision from next-token logits. */
export function sampleToken(logits: Float32Array, opts: Pick<SamplingOptions, "temperature" | "topP" | "topK">, rng: Xoshiro128): number {
  const t = opts.temperature ?? 0;
  if (!(t >= 0)) throw new RangeError(`temperature must be 0 or more, got ${t}`);
  const topP = opts.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${topP}`);
  const topK = opts.topK ?? 0;
  if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`top_k must be a whole number, 0 (off) or more, got ${topK}`);
  if (t === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l / t);
  const probs = Float64Array.from(logits, (l) => Math.exp(l / t - max));
  const sorted = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  // top-k first (transformers' TopKLogitsWarper), then top-p renormalised over what top-k kept.
  const order = topK > 0 ? sorted.slice(0, topK) : sorted;
  const total = order.reduce((a, i) => a + probs[i], 0);
  const kept: number[] = [];
  let mass = 0;
  for (const i of order) {
    kept.push(i);
    mass += probs[i] / total;
    if (mass >= topP) break;
  }
  let u = rng.nextDouble() * kept.reduce((a, i) => a + probs[i], 0);
  for (const i of kept) {
    u -= probs[i];
    if (u < 0) return i;
  }
  return kept[kept.length - 1];
}

/** Autoregressive decoding on one decoder checkpoint; keeps one session, releases it on release(). */
export class TextGenerator {
  private constructor(readonly config: DecoderConfig, private session: Session) {}

  static async create(config: DecoderConfig, weights: DecoderWeights, backend: Backend): Promise<TextGenerator> {
    const problem = lmHeadProblem(config, weights);
    if (problem) throw new Error(problem);
    const graph = buildDecoderGraph(config, weights, { outputLayers: [], kvCache: true }, `${weights.layout.model.toLowerCase()}_generate`);
    return new TextGenerator(config, await backend.createSession(graph));
  }

  /** A fresh cache: nothing seen yet. */
  newCache(): KvCache {
    return { length: 0, keys: [], values: [] };
  }

  /**
   * Feed `tokens` after what `cache` holds; returns the next-token logits (vocab) and
   * extends the cache. With an empty cache this is the prompt's prefill.
   */
  async forward(tokens: number[], cache: KvCache): Promise<Float32Array> {
    const c = this.config, P = cache.length, L = tokens.length, T = P + L;
    if (L === 0) throw new Error("text generation: no tokens to feed");
    for (const id of tokens) if (!Number.isInteger(id) || id < 0 || id >= c.vocab_size) throw new Error(`text generation: token id ${id} is outside the vocabulary (0..${c.vocab_size - 1})`);
    const { cos, sin, half } = qwen3RopeTables(T, c.head_dim, c.rope_theta);
    // Query q (absolute position P+q) sees keys 0..P+q: the cache and the causal part of this step;
    // with a sliding window (Mistral configs may set one) only the last `window` of them, as in
    // causalPaddingBias for the uncached graph.
    const window = c.sliding_window ?? null;
    const bias = new Float32Array(L * T);
    for (let q = 0; q < L; q++) {
      for (let k = 0; k < T; k++) if (k > P + q || (window !== null && P + q - k >= window)) bias[q * T + k] = MASKED;
    }
    const kv = c.num_key_value_heads * c.head_dim;
    const feeds: Record<string, HostTensor> = {
      input_ids: { data: BigInt64Array.from(tokens, BigInt), shape: [1, L] },
      position_ids: { data: BigInt64Array.from({ length: L }, (_, i) => BigInt(P + i)), shape: [1, L] },
      rope_cos: { data: cos, shape: [T, half] },
      rope_sin: { data: sin, shape: [T, half] },
      attention_bias: { data: bias, shape: [1, 1, L, T] },
    };
    for (let i = 0; i < c.num_hidden_layers; i++) {
      feeds[`past_key_${i}`] = { data: cache.keys[i] ?? new Float32Array(0), shape: [1, P, kv] };
      feeds[`past_value_${i}`] = { data: cache.values[i] ?? new Float32Array(0), shape: [1, P, kv] };
    }
    const out = await this.session.run(feeds);
    for (let i = 0; i < c.num_hidden_layers; i++) {
      cache.keys[i] = out[`present_key_${i}`].data as Float32Array;
      cache.values[i] = out[`present_value_${i}`].data as Float32Array;
    }
    cache.length = T;
    return out.logits.data as Float32Array;
  }

  /** Generate after `prompt` (token ids, chat template already applied). */
  async generate(prompt: number[], opts: SamplingOptions): Promise<GeneratedText> {
    if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 1) throw new RangeError(`maxNewTokens must be a positive integer, got ${opts.maxNewTokens}`);
    const rng = new Xoshiro128(opts.seed ?? 0);
    const stop = new Set(opts.stopTokens ?? []);
    const cache = this.newCache();
    let logits = await this.forward(prompt, cache);
    const tokens: number[] = [];
    while (tokens.length < opts.maxNewTokens) {
      const next = sampleToken(logits, opts, rng);
      if (stop.has(next)) return { tokens, finish: "stop" };
      tokens.push(next);
      if (tokens.length === opts.maxNewTokens) break;
      logits = await this.forward([next], cache);
    }
    return { tokens, finish: "length" };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Keys and values (after RoPE) of every position fed so far, per layer: (1, length, KV·Dh). */
export interface KvCache {
  length: number;
  keys: Float32Array[];
  values: Float32Array[];
}
