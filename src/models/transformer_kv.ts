// Reference-KV-cached transformer forwards (docs/FLUX2-spec.md §6.4, `Flux2KleinKVPipeline`).
//
// Step 0 ("extract") runs on [text ; references ; target] where reference
// tokens are modulated with the embedding of t = 0 and attend only to
// themselves, while text and target tokens attend to everything. Every block's
// reference keys (after QK-norm and RoPE) and values are returned. Later steps
// ("cached") run on [text ; target] only, with the cached reference K/V
// inserted between text and target keys. References are never recomputed.
//
// The three streams (text, reference, target) are kept apart through the whole
// graph: each gets its own modulation, and the restricted attention of the
// reference queries is a second, smaller attention call instead of a mask
// over the full sequence.

import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Graph, Value } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import {
  attention, feedForward, graphContext, headNorm, hostFeeds, innerDim, joinIds, linear, modulate, modulation, outputLayer,
  readTransformerConfig, rope, timeEmbedding, timestepFeatures, withLoraFeeds, type Ctx, type TransformerConfig,
} from "./transformer.js";
import { TransformerWeights } from "./transformer_weights.js";

export type KvMode = "extract" | "cached";

const END = Number.MAX_SAFE_INTEGER;

/** Per-stream modulation vectors: [shift, scale, gate] (×2 for double blocks). */
interface Mods {
  txt: Value[];
  img: Value[];
  ref: Value[];
  singleTxtImg: Value[];
  singleRef: Value[];
}

/** Split a [txt ; ref ; img] (or [txt ; img]) sequence into its streams by dynamic lengths. */
function splitSeq(g: Graph, v: Value, txtLen: Value, refEnd: Value | null) {
  const zero = g.constant([0]);
  const txt = g.sliceDyn(v, 1, zero, txtLen);
  if (!refEnd) return { txt, ref: null, img: g.sliceDyn(v, 1, txtLen, g.constant([END])) };
  return { txt, ref: g.sliceDyn(v, 1, txtLen, refEnd), img: g.sliceDyn(v, 1, refEnd, g.constant([END])) };
}

interface Streams {
  c: Value;
  x: Value;
  r: Value | null;
}

interface BlockIo {
  txtLen: Value;
  refEnd: Value | null;
  /** Cached reference K/V of this block (cached mode). */
  cached: { k: Value; v: Value } | null;
  /** Collects the reference K/V of this block (extract mode). */
  store: (k: Value, v: Value) => void;
}

/**
 * Joint attention of the streams. q/k/v per stream are already projected and
 * head-normed; RoPE is applied over the joint order [txt ; ref ; img].
 */
function kvAttention(ctx: Ctx, io: BlockIo, q: Streams, k: Streams, v: Streams): Streams {
  const { g } = ctx;
  const order = (s: Streams) => g.concat(s.r ? [s.c, s.r, s.x] : [s.c, s.x], 1);
  const Q = splitSeq(g, rope(ctx, order(q)), io.txtLen, io.refEnd);
  const K = splitSeq(g, rope(ctx, order(k)), io.txtLen, io.refEnd);
  if (K.ref) io.store(K.ref, v.r!);
  const keys = io.cached ? g.concat([K.txt, io.cached.k, K.img], 1) : g.concat(K.ref ? [K.txt, K.ref, K.img] : [K.txt, K.img], 1);
  const vals = io.cached ? g.concat([v.c, io.cached.v, v.x], 1) : g.concat(v.r ? [v.c, v.r, v.x] : [v.c, v.x], 1);
  const a = attention(ctx, g.concat([Q.txt, Q.img], 1), keys, vals);
  const out = splitSeq(g, a, io.txtLen, null);
  const r = K.ref ? attention(ctx, Q.ref!, K.ref, v.r!) : null;
  return { c: out.txt, x: out.img, r };
}

function doubleBlock(ctx: Ctx, i: number, s: Streams, mods: Mods, io: BlockIo): Streams {
  const { g } = ctx;
  const p = `transformer_blocks.${i}`;
  const img = (x: Value, m: Value[]) => modulate(ctx, x, m[0], m[1]);
  const ca = img(s.c, mods.txt), xa = img(s.x, mods.img), ra = s.r ? img(s.r, mods.ref) : null;
  const proj = (x: Value, w: string, norm?: string) => {
    const y = linear(ctx, x, `${p}.attn.${w}`);
    return norm ? headNorm(ctx, y, `${p}.attn.${norm}`) : y;
  };
  const q = { c: proj(ca, "add_q_proj", "norm_added_q"), x: proj(xa, "to_q", "norm_q"), r: ra && proj(ra, "to_q", "norm_q") };
  const k = { c: proj(ca, "add_k_proj", "norm_added_k"), x: proj(xa, "to_k", "norm_k"), r: ra && proj(ra, "to_k", "norm_k") };
  const v = { c: proj(ca, "add_v_proj"), x: proj(xa, "to_v"), r: ra && proj(ra, "to_v") };
  const a = kvAttention(ctx, io, q, k, v);

  const imageStream = (x: Value, att: Value, m: Value[]) => {
    x = g.add(x, g.mul(m[2], linear(ctx, att, `${p}.attn.to_out.0`)));
    return g.add(x, g.mul(m[5], feedForward(ctx, modulate(ctx, x, m[3], m[4]), `${p}.ff`)));
  };
  let c = g.add(s.c, g.mul(mods.txt[2], linear(ctx, a.c, `${p}.attn.to_add_out`)));
  c = g.add(c, g.mul(mods.txt[5], feedForward(ctx, modulate(ctx, c, mods.txt[3], mods.txt[4]), `${p}.ff_context`)));
  return { c, x: imageStream(s.x, a.x, mods.img), r: s.r ? imageStream(s.r, a.r!, mods.ref) : null };
}

function singleBlock(ctx: Ctx, i: number, s: Streams, mods: Mods, io: BlockIo): Streams {
  const { g, D, M } = ctx;
  const p = `single_transformer_blocks.${i}.attn`;
  const parts = (h: Value, m: Value[]) => {
    const [q, k, v, gate, value] = g.split(linear(ctx, modulate(ctx, h, m[0], m[1]), `${p}.to_qkv_mlp_proj`), -1, [D, D, D, M, M]);
    return { q: headNorm(ctx, q, `${p}.norm_q`), k: headNorm(ctx, k, `${p}.norm_k`), v, mlp: g.mul(g.silu(gate), value) };
  };
  const c = parts(s.c, mods.singleTxtImg), x = parts(s.x, mods.singleTxtImg), r = s.r ? parts(s.r, mods.singleRef) : null;
  const a = kvAttention(ctx, io, { c: c.q, x: x.q, r: r?.q ?? null }, { c: c.k, x: x.k, r: r?.k ?? null }, { c: c.v, x: x.v, r: r?.v ?? null });
  const out = (h: Value, att: Value, mlp: Value, m: Value[]) => g.add(h, g.mul(m[2], linear(ctx, g.concat([att, mlp], -1), `${p}.to_out`)));
  return { c: out(s.c, a.c, c.mlp, mods.singleTxtImg), x: out(s.x, a.x, x.mlp, mods.singleTxtImg), r: r ? out(s.r!, a.r!, r.mlp, mods.singleRef) : null };
}

export function buildKvTransformerGraph(c: TransformerConfig, w: TransformerWeights, mode: KvMode): Graph {
  const g = new Graph(`flux2_transformer_kv_${mode}`);
  const D = innerDim(c);
  const T = c.timestep_guidance_channels;
  const ctx = graphContext(g, c, w);
  const hidden = g.input("hidden_states", "F32", ["batch", "img_seq", c.in_channels]);
  const text = g.input("encoder_hidden_states", "F32", ["batch", "txt_seq", c.joint_attention_dim]);
  const embed = (feats: Value, guidance: Value | null) => {
    let t = timeEmbedding(ctx, feats, "time_guidance_embed.timestep_embedder");
    if (guidance) t = g.add(t, timeEmbedding(ctx, guidance, "time_guidance_embed.guidance_embedder"));
    return g.silu(t);
  };
  const guidance = c.guidance_embeds ? g.input("guidance_features", "F32", ["batch", T]) : null;
  const sTemb = embed(g.input("timestep_features", "F32", ["batch", T]), guidance);
  const imgMods = modulation(ctx, sTemb, "double_stream_modulation_img", 2);
  const singleMods = modulation(ctx, sTemb, "single_stream_modulation", 1);
  const mods: Mods = {
    txt: modulation(ctx, sTemb, "double_stream_modulation_txt", 2), img: imgMods, ref: imgMods,
    singleTxtImg: singleMods, singleRef: singleMods,
  };

  let s: Streams = { c: linear(ctx, text, "context_embedder"), x: linear(ctx, hidden, "x_embedder"), r: null };
  const txtLen = g.op("Shape", [text], { start: 1, end: 2 })[0];
  let refEnd: Value | null = null;
  if (mode === "extract") {
    const ref = g.input("ref_hidden_states", "F32", ["batch", "ref_seq", c.in_channels]);
    const refTemb = embed(g.input("ref_timestep_features", "F32", ["batch", T]), guidance);
    mods.ref = modulation(ctx, refTemb, "double_stream_modulation_img", 2);
    mods.singleRef = modulation(ctx, refTemb, "single_stream_modulation", 1);
    s.r = linear(ctx, ref, "x_embedder");
    refEnd = g.add(txtLen, g.op("Shape", [ref], { start: 1, end: 2 })[0]);
  }
  const blockIo = (name: string): BlockIo => ({
    txtLen, refEnd,
    cached: mode === "cached"
      ? { k: g.input(`${name}_k`, "F32", ["batch", "ref_seq", D]), v: g.input(`${name}_v`, "F32", ["batch", "ref_seq", D]) }
      : null,
    store: (k, v) => {
      g.output(k, `${name}_k`, "F32", ["batch", "ref_seq", D]);
      g.output(v, `${name}_v`, "F32", ["batch", "ref_seq", D]);
    },
  });
  for (let i = 0; i < c.num_layers; i++) s = g.scope(`double.${i}`, () => doubleBlock(ctx, i, s, mods, blockIo(`kv_double${i}`)));
  for (let i = 0; i < c.num_single_layers; i++) s = g.scope(`single.${i}`, () => singleBlock(ctx, i, s, mods, blockIo(`kv_single${i}`)));

  outputLayer(ctx, s.x, sTemb);
  return g;
}

/** Reference K/V of every block, (B, R, heads·head_dim) each. */
export interface KvCache {
  refTokens: number;
  tensors: Record<string, HostTensor>;
}

export interface KvInputs {
  hidden: HostTensor; // (B, N, C) target tokens
  text: HostTensor; // (B, L, J)
  timestep: ArrayLike<number>;
  imgIds: ArrayLike<bigint | number>; // (N, 4)
  txtIds: ArrayLike<bigint | number>; // (L, 4)
  guidance?: ArrayLike<number>;
}

export class Flux2KvTransformer {
  private sessions: Partial<Record<KvMode, Promise<Session>>> = {};

  private constructor(private backend: Backend, readonly config: TransformerConfig, private weights: TransformerWeights) {}

  static fromFiles(backend: Backend, weightsPath: string, configPath: string | null, format: "diffusers" | "bfl" = "diffusers") {
    const weights = new TransformerWeights(WeightSet.open(weightsPath), format);
    const config = configPath ? readTransformerConfig(configPath) : weights.inferConfig();
    return Flux2KvTransformer.create(backend, config, weights);
  }

  /** Sessions are built on first use (extract and cached separately). */
  static create(backend: Backend, config: TransformerConfig, weights: TransformerWeights) {
    weights.check(config);
    return new Flux2KvTransformer(backend, config, weights);
  }

  private session(mode: KvMode): Promise<Session> {
    this.sessions[mode] ??= this.backend.createSession(buildKvTransformerGraph(this.config, this.weights, mode))
      .then((s) => withLoraFeeds(s, this.weights.lora));
    return this.sessions[mode]!;
  }

  private feeds(inp: KvInputs, ids: BigInt64Array, seq: number): Record<string, HostTensor> {
    const feeds = hostFeeds(this.config, inp.hidden.shape[0], ids, seq, inp.timestep, inp.guidance);
    return { ...feeds, hidden_states: inp.hidden, encoder_hidden_states: inp.text };
  }

  /** Step 0: the forward with references, returning the target rows and the reference K/V cache. */
  async extract(inp: KvInputs, ref: HostTensor, refIds: ArrayLike<bigint | number>, refTimestep = 0): Promise<{ output: HostTensor; cache: KvCache }> {
    const L = inp.text.shape[1], R = ref.shape[1], N = inp.hidden.shape[1];
    const ids = joinIds([inp.txtIds, refIds, inp.imgIds]);
    const feeds = this.feeds(inp, ids, L + R + N);
    const B = inp.hidden.shape[0];
    feeds.ref_hidden_states = ref;
    feeds.ref_timestep_features = { data: timestepFeatures(new Float32Array(B).fill(refTimestep), this.config.timestep_guidance_channels), shape: [B, this.config.timestep_guidance_channels] };
    const out = await (await this.session("extract")).run(feeds);
    const { output, ...tensors } = out;
    return { output, cache: { refTokens: R, tensors } };
  }

  /** Steps ≥ 1: target tokens only, attending to the cached reference K/V. */
  async cached(inp: KvInputs, cache: KvCache): Promise<HostTensor> {
    const L = inp.text.shape[1], N = inp.hidden.shape[1];
    const feeds = { ...this.feeds(inp, joinIds([inp.txtIds, inp.imgIds]), L + N), ...cache.tensors };
    return (await (await this.session("cached")).run(feeds)).output;
  }

  async release(): Promise<void> {
    for (const s of Object.values(this.sessions)) await (await s)?.release();
    this.sessions = {};
  }
}
