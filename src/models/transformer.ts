// The FLUX.2 transformer (diffusers `Flux2Transformer2DModel`), docs/FLUX2-spec.md §4.
//
// buildTransformerGraph() writes the forward pass as an ONNX graph whose
// weights point into the checkpoint files. The parts that depend only on
// positions and timesteps (RoPE tables, sinusoidal timestep features) are
// computed here in TypeScript and fed as graph inputs: they are cheap, and
// computing them on the host lets us reproduce the reference's float32
// rounding exactly.

import * as fs from "../platform/fs.js";
import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Graph, Value } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import { TransformerWeights, type LoraGraphHook } from "./transformer_weights.js";

export interface TransformerConfig {
  patch_size: number;
  in_channels: number;
  out_channels: number | null;
  num_layers: number;
  num_single_layers: number;
  attention_head_dim: number;
  num_attention_heads: number;
  joint_attention_dim: number;
  timestep_guidance_channels: number;
  mlp_ratio: number;
  axes_dims_rope: number[];
  rope_theta: number;
  eps: number;
  guidance_embeds: boolean;
}

/** diffusers class defaults (= FLUX.2 dev). */
export const TRANSFORMER_DEFAULTS: TransformerConfig = {
  patch_size: 1, in_channels: 128, out_channels: null, num_layers: 8, num_single_layers: 48,
  attention_head_dim: 128, num_attention_heads: 48, joint_attention_dim: 15360,
  timestep_guidance_channels: 256, mlp_ratio: 3.0, axes_dims_rope: [32, 32, 32, 32],
  rope_theta: 2000, eps: 1e-6, guidance_embeds: true,
};

export function readTransformerConfig(file: string): TransformerConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read the transformer config (${(e as Error).message})`);
  }
  return parseTransformerConfig(raw, file);
}

/**
 * Upper bounds far above every released FLUX.2 model (dev: 8 + 48 blocks, width 6144, text
 * width 15360) and low enough that a typo such as `num_layers: 1e9` is refused here instead of
 * exhausting memory while the weight list or the graph is built.
 */
const MAX_BLOCKS = 1024;
const MAX_WIDTH = 1 << 17;

/** Defaults filled in and every field validated before anything is allocated; `where` names the source in errors. */
export function parseTransformerConfig(raw: unknown, where = "transformer config"): TransformerConfig {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  const r = raw as Record<string, unknown>;
  if (r._class_name !== undefined && r._class_name !== "Flux2Transformer2DModel") {
    throw new Error(`${where}: _class_name is "${String(r._class_name)}", expected "Flux2Transformer2DModel" (is this a FLUX.2 transformer folder?)`);
  }
  // A field this engine does not know would change the model in a way it cannot honour: refuse it.
  const unknown = Object.keys(r).filter((k) => !k.startsWith("_") && !(k in TRANSFORMER_DEFAULTS));
  if (unknown.length) {
    throw new Error(`${where}: unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `"${k}"`).join(", ")}; Flux2Transformer2DModel takes ${Object.keys(TRANSFORMER_DEFAULTS).join(", ")}`);
  }
  const c: TransformerConfig = { ...TRANSFORMER_DEFAULTS };
  for (const k of Object.keys(c) as (keyof TransformerConfig)[]) if (r[k] !== undefined) (c as any)[k] = r[k];

  const bad = (field: string, why: string) => new Error(`${where}: ${field} ${why}`);
  const intIn = (k: keyof TransformerConfig, lo: number, hi: number) => {
    const v = c[k];
    if (!Number.isSafeInteger(v) || (v as number) < lo || (v as number) > hi) throw bad(k, `must be an integer from ${lo} to ${hi}, got ${JSON.stringify(v)}`);
  };
  const positive = (k: keyof TransformerConfig, hi: number) => {
    const v = c[k];
    if (typeof v !== "number" || !(v > 0 && v <= hi)) throw bad(k, `must be a number above 0 and at most ${hi}, got ${JSON.stringify(v)}`);
  };
  if (c.patch_size !== 1) throw bad("patch_size", `must be 1 (every FLUX.2 transformer; the pipeline packs 2×2 latent patches itself), got ${JSON.stringify(c.patch_size)}`);
  for (const k of ["in_channels", "attention_head_dim", "num_attention_heads", "joint_attention_dim", "timestep_guidance_channels"] as const) intIn(k, 1, MAX_WIDTH);
  intIn("num_layers", 0, MAX_BLOCKS);
  intIn("num_single_layers", 0, MAX_BLOCKS);
  if (c.num_layers + c.num_single_layers === 0) throw bad("num_layers", "and num_single_layers are both 0: the model needs at least one block");
  if (c.out_channels !== null && c.out_channels !== c.in_channels) {
    throw bad("out_channels", `must be null or equal to in_channels (${c.in_channels}): the sampler adds the prediction to the latents, got ${JSON.stringify(c.out_channels)}`);
  }
  if (c.timestep_guidance_channels % 2 !== 0) throw bad("timestep_guidance_channels", `must be even (cosine and sine halves), got ${c.timestep_guidance_channels}`);
  const inner = c.num_attention_heads * c.attention_head_dim;
  if (inner > MAX_WIDTH) throw bad("num_attention_heads × attention_head_dim", `is ${inner}, above the limit of ${MAX_WIDTH}`);
  positive("mlp_ratio", 64);
  if (Math.floor(inner * c.mlp_ratio) < 1) throw bad("mlp_ratio", `(${c.mlp_ratio}) gives an MLP width of 0`);
  const axes = c.axes_dims_rope;
  if (!Array.isArray(axes) || axes.length !== 4 || !axes.every((a) => Number.isSafeInteger(a) && a > 0 && a % 2 === 0)) {
    throw bad("axes_dims_rope", `must be four positive even integers (rotary dimensions of the t, h, w, l position axes), got ${JSON.stringify(axes)}`);
  }
  const sum = axes.reduce((a, b) => a + b, 0);
  if (sum !== c.attention_head_dim) throw bad("axes_dims_rope", `sums to ${sum} but attention_head_dim is ${c.attention_head_dim}; they must be equal`);
  positive("rope_theta", 1e12);
  positive("eps", 0.1);
  if (typeof c.guidance_embeds !== "boolean") throw bad("guidance_embeds", `must be true or false, got ${JSON.stringify(c.guidance_embeds)}`);
  return c;
}

export function innerDim(c: TransformerConfig) {
  return c.num_attention_heads * c.attention_head_dim;
}

export function mlpDim(c: TransformerConfig) {
  return Math.floor(innerDim(c) * c.mlp_ratio);
}

// ---------------------------------------------------------------------------
// Host-side inputs: timestep features and rotary tables

/**
 * Sinusoidal features of `1000 * t` (diffusers `Timesteps(flip_sin_to_cos=True,
 * downscale_freq_shift=0)`): [cos(τ f_k), sin(τ f_k)], f_k = exp(-ln(10000) k / half).
 * Every step rounds to float32 as the reference's float32 tensors do.
 */
export function timestepFeatures(t: ArrayLike<number>, channels: number): Float32Array {
  const f = Math.fround;
  const half = channels / 2;
  const freqs = new Float32Array(half);
  const negLog = f(-Math.log(10000));
  for (let k = 0; k < half; k++) freqs[k] = f(Math.exp(f(f(negLog * k) / half)));
  const out = new Float32Array(t.length * channels);
  for (let b = 0; b < t.length; b++) {
    const tau = f(f(t[b]) * 1000);
    for (let k = 0; k < half; k++) {
      const a = f(tau * freqs[k]);
      out[b * channels + k] = f(Math.cos(a));
      out[b * channels + half + k] = f(Math.sin(a));
    }
  }
  return out;
}

/**
 * Rotary tables for position ids (S, n_axes): for axis a with d_a dims, frequencies
 * θ^(-2k/d_a), k < d_a/2; one (cos, sin) per rotated pair, axes concatenated in order.
 * Angles in float64 and then rounded to float32, as diffusers does.
 */
export function ropeTables(ids: ArrayLike<bigint | number>, seq: number, axesDims: number[], theta: number) {
  const nAxes = axesDims.length;
  const stride = ids.length / seq;
  const pairs = axesDims.reduce((a, d) => a + d / 2, 0);
  const cos = new Float32Array(seq * pairs);
  const sin = new Float32Array(seq * pairs);
  for (let s = 0; s < seq; s++) {
    let m = 0;
    for (let a = 0; a < nAxes; a++) {
      const pos = Math.fround(Number(ids[s * stride + a]));
      const d = axesDims[a];
      for (let k = 0; k < d / 2; k++, m++) {
        const freq = 1 / theta ** ((2 * k) / d);
        const angle = pos * freq;
        cos[s * pairs + m] = Math.cos(angle);
        sin[s * pairs + m] = Math.sin(angle);
      }
    }
  }
  return { cos, sin, pairs };
}

// ---------------------------------------------------------------------------
// The graph

export interface Ctx {
  g: Graph;
  w: TransformerWeights;
  c: TransformerConfig;
  D: number;
  H: number; // heads
  Dh: number; // head dim
  M: number;
  rope: { pos: Value; cos: Value; sin: Value };
}

export function linear(ctx: Ctx, x: Value, name: string): Value {
  // Block-quantized weights (src/quant/) multiply with MatMulNBits; the rest as stored.
  const y = ctx.w.quantizedLinear(ctx.g, x, `${name}.weight`) ?? ctx.g.linear(x, ctx.w.value(ctx.g, `${name}.weight`));
  // Runtime LoRA adapters add their side paths here (src/lora/apply.ts).
  return ctx.w.lora ? ctx.w.lora.linear(ctx.g, x, y, `${name}.weight`) : y;
}

/** (1 + scale) * LN(x) + shift */
export function modulate(ctx: Ctx, x: Value, shift: Value, scale: Value): Value {
  const { g } = ctx;
  const n = g.layerNorm(x, ctx.D, ctx.c.eps);
  return g.add(g.mul(n, g.add(scale, g.scalar(1))), shift);
}

/** RMSNorm over each head's dims, for (B, S, H*Dh). */
export function headNorm(ctx: Ctx, x: Value, name: string): Value {
  const { g } = ctx;
  const heads = g.reshape(x, [0, 0, ctx.H, ctx.Dh]);
  const n = g.rmsNorm(heads, ctx.w.value(g, `${name}.weight`), ctx.c.eps);
  return g.reshape(n, [0, 0, ctx.H * ctx.Dh]);
}

export function rope(ctx: Ctx, x: Value): Value {
  const { g, rope } = ctx;
  return g.op("RotaryEmbedding", [x, rope.pos, rope.cos, rope.sin], { interleaved: 1, num_heads: ctx.H }, { domain: "com.microsoft" })[0];
}

export function attention(ctx: Ctx, q: Value, k: Value, v: Value): Value {
  return ctx.g.op("MultiHeadAttention", [q, k, v], { num_heads: ctx.H, scale: { float: 1 / Math.sqrt(ctx.Dh) } }, { domain: "com.microsoft" })[0];
}

/** SiLU(h[..., :M]) * h[..., M:] */
function swiglu(ctx: Ctx, h: Value): Value {
  const [gate, value] = ctx.g.split(h, -1, [ctx.M, ctx.M]);
  return ctx.g.mul(ctx.g.silu(gate), value);
}

export function feedForward(ctx: Ctx, x: Value, name: string): Value {
  return linear(ctx, swiglu(ctx, linear(ctx, x, `${name}.linear_in`)), `${name}.linear_out`);
}

/** Split a (B, 1, k*D) modulation vector into k chunks of D. */
function chunks(ctx: Ctx, mod: Value, k: number): Value[] {
  return ctx.g.split(mod, -1, new Array(k).fill(ctx.D));
}

export function timeEmbedding(ctx: Ctx, feats: Value, name: string): Value {
  const { g } = ctx;
  return linear(ctx, g.silu(linear(ctx, feats, `${name}.linear_1`)), `${name}.linear_2`);
}

export function modulation(ctx: Ctx, sTemb: Value, name: string, sets: number): Value[] {
  const mod = ctx.g.unsqueeze(linear(ctx, sTemb, `${name}.linear`), [1]);
  return chunks(ctx, mod, 3 * sets);
}

function doubleBlock(ctx: Ctx, i: number, x: Value, c: Value, txtLen: Value, modImg: Value[], modTxt: Value[]) {
  const { g } = ctx;
  const p = `transformer_blocks.${i}`;
  const [shiftA, scaleA, gateA, shiftM, scaleM, gateM] = modImg;
  const [cShiftA, cScaleA, cGateA, cShiftM, cScaleM, cGateM] = modTxt;

  const xa = modulate(ctx, x, shiftA, scaleA);
  const ca = modulate(ctx, c, cShiftA, cScaleA);
  const q = g.concat([headNorm(ctx, linear(ctx, ca, `${p}.attn.add_q_proj`), `${p}.attn.norm_added_q`),
                      headNorm(ctx, linear(ctx, xa, `${p}.attn.to_q`), `${p}.attn.norm_q`)], 1);
  const k = g.concat([headNorm(ctx, linear(ctx, ca, `${p}.attn.add_k_proj`), `${p}.attn.norm_added_k`),
                      headNorm(ctx, linear(ctx, xa, `${p}.attn.to_k`), `${p}.attn.norm_k`)], 1);
  const v = g.concat([linear(ctx, ca, `${p}.attn.add_v_proj`), linear(ctx, xa, `${p}.attn.to_v`)], 1);
  const a = attention(ctx, rope(ctx, q), rope(ctx, k), v);
  const aTxt = g.sliceDyn(a, 1, g.constant([0]), txtLen);
  const aImg = g.sliceDyn(a, 1, txtLen, g.constant([Number.MAX_SAFE_INTEGER]));

  x = g.add(x, g.mul(gateA, linear(ctx, aImg, `${p}.attn.to_out.0`)));
  x = g.add(x, g.mul(gateM, feedForward(ctx, modulate(ctx, x, shiftM, scaleM), `${p}.ff`)));
  c = g.add(c, g.mul(cGateA, linear(ctx, aTxt, `${p}.attn.to_add_out`)));
  c = g.add(c, g.mul(cGateM, feedForward(ctx, modulate(ctx, c, cShiftM, cScaleM), `${p}.ff_context`)));
  return { x, c };
}

function singleBlock(ctx: Ctx, i: number, h: Value, mod: Value[]): Value {
  const { g, D, M } = ctx;
  const p = `single_transformer_blocks.${i}.attn`;
  const [shift, scale, gate] = mod;
  const u = modulate(ctx, h, shift, scale);
  const [q, k, v, mlpGate, mlpValue] = g.split(linear(ctx, u, `${p}.to_qkv_mlp_proj`), -1, [D, D, D, M, M]);
  const a = attention(ctx, rope(ctx, headNorm(ctx, q, `${p}.norm_q`)), rope(ctx, headNorm(ctx, k, `${p}.norm_k`)), v);
  const mlp = g.mul(g.silu(mlpGate), mlpValue);
  const y = linear(ctx, g.concat([a, mlp], -1), `${p}.to_out`);
  return g.add(h, g.mul(gate, y));
}

export function buildTransformerGraph(c: TransformerConfig, w: TransformerWeights): Graph {
  const g = new Graph("flux2_transformer");
  const D = innerDim(c);
  const ctx = graphContext(g, c, w);
  const hidden = g.input("hidden_states", "F32", ["batch", "img_seq", c.in_channels]);
  const text = g.input("encoder_hidden_states", "F32", ["batch", "txt_seq", c.joint_attention_dim]);
  const tFeat = g.input("timestep_features", "F32", ["batch", c.timestep_guidance_channels]);

  let temb = timeEmbedding(ctx, tFeat, "time_guidance_embed.timestep_embedder");
  if (c.guidance_embeds) {
    const gFeat = g.input("guidance_features", "F32", ["batch", c.timestep_guidance_channels]);
    temb = g.add(temb, timeEmbedding(ctx, gFeat, "time_guidance_embed.guidance_embedder"));
  }
  const sTemb = g.silu(temb);
  const modImg = g.scope("mod", () => modulation(ctx, sTemb, "double_stream_modulation_img", 2));
  const modTxt = g.scope("mod", () => modulation(ctx, sTemb, "double_stream_modulation_txt", 2));
  const modSingle = g.scope("mod", () => modulation(ctx, sTemb, "single_stream_modulation", 1));

  let x = linear(ctx, hidden, "x_embedder");
  let cTxt = linear(ctx, text, "context_embedder");
  const txtLen = g.op("Shape", [text], { start: 1, end: 2 })[0];

  for (let i = 0; i < c.num_layers; i++) {
    ({ x, c: cTxt } = g.scope(`double.${i}`, () => doubleBlock(ctx, i, x, cTxt, txtLen, modImg, modTxt)));
  }
  let h = g.concat([cTxt, x], 1);
  for (let i = 0; i < c.num_single_layers; i++) h = g.scope(`single.${i}`, () => singleBlock(ctx, i, h, modSingle));
  x = g.sliceDyn(h, 1, txtLen, g.constant([Number.MAX_SAFE_INTEGER]));

  outputLayer(ctx, x, sTemb);
  return g;
}

/** The model context shared by every block, with the host-computed RoPE tables as inputs. */
export function graphContext(g: Graph, c: TransformerConfig, w: TransformerWeights): Ctx {
  return {
    g, w, c, D: innerDim(c), H: c.num_attention_heads, Dh: c.attention_head_dim, M: mlpDim(c),
    rope: {
      pos: g.input("rope_positions", "I64", ["batch", "seq"]),
      cos: g.input("rope_cos", "F32", ["seq", c.attention_head_dim / 2]),
      sin: g.input("rope_sin", "F32", ["seq", c.attention_head_dim / 2]),
    },
  };
}

/** AdaLN-modulated final norm and projection (docs/FLUX2-spec.md §4.8), declared as the "output" of the graph. */
export function outputLayer(ctx: Ctx, x: Value, sTemb: Value): void {
  const { g, w, c, D } = ctx;
  // norm_out: rows [0, D) of its weight give the scale, [D, 2D) the shift.
  const scale = g.unsqueeze(g.linear(sTemb, w.rows(g, "norm_out.linear.weight", 0, D)), [1]);
  const shift = g.unsqueeze(g.linear(sTemb, w.rows(g, "norm_out.linear.weight", D, D)), [1]);
  const out = linear(ctx, g.add(g.mul(g.layerNorm(x, D, c.eps), g.add(scale, g.scalar(1))), shift), "proj_out");
  g.output(out, "output", "F32", ["batch", "img_seq", c.out_channels ?? c.in_channels]);
}

/**
 * The host-computed inputs of a forward: sinusoidal timestep (and guidance)
 * features, and the RoPE tables of the joint sequence whose ids are `ids` (seq, 4).
 */
export function hostFeeds(c: TransformerConfig, B: number, ids: BigInt64Array, seq: number, timestep: ArrayLike<number>, guidance?: ArrayLike<number>): Record<string, HostTensor> {
  const T = c.timestep_guidance_channels;
  const { cos, sin, pairs } = ropeTables(ids, seq, c.axes_dims_rope, c.rope_theta);
  const positions = new BigInt64Array(B * seq);
  for (let b = 0; b < B; b++) for (let s = 0; s < seq; s++) positions[b * seq + s] = BigInt(s);
  const feeds: Record<string, HostTensor> = {
    timestep_features: { data: timestepFeatures(timestep, T), shape: [B, T] },
    rope_positions: { data: positions, shape: [B, seq] },
    rope_cos: { data: cos, shape: [seq, pairs] },
    rope_sin: { data: sin, shape: [seq, pairs] },
  };
  if (c.guidance_embeds) {
    // diffusers silently falls back to the timestep embedding alone; BFL raises. A missing
    // guidance for dev is a caller bug, so say so instead of producing a different image.
    if (!guidance) throw new Error("this transformer has a guidance embedder (FLUX.2 dev): pass a guidance value");
    feeds.guidance_features = { data: timestepFeatures(guidance, T), shape: [B, T] };
  }
  return feeds;
}

/** Concatenate position ids given as (n, 4) rows, in order. */
export function joinIds(parts: ArrayLike<bigint | number>[]): BigInt64Array {
  const out = new BigInt64Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) for (let i = 0; i < p.length; i++) out[o++] = BigInt(p[i]);
  return out;
}

/** A session that also feeds the runtime LoRA strength inputs, read from the hook on every run. */
export function withLoraFeeds(session: Session, hook: LoraGraphHook | null | undefined): Session {
  if (!hook) return session;
  const declared = new Set(session.inputNames);
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    run(feeds, outputs) {
      const all = { ...feeds };
      for (const [k, v] of Object.entries(hook.feeds())) if (declared.has(k)) all[k] = v;
      return session.run(all, outputs);
    },
    release: () => session.release(),
  };
}

// ---------------------------------------------------------------------------
// The runnable model

export interface TransformerInputs {
  hidden: HostTensor; // (B, S_img, C)
  text: HostTensor; // (B, S_txt, J)
  timestep: ArrayLike<number>; // (B,) sigma in [0, 1]
  imgIds: ArrayLike<bigint | number>; // (S_img, 4) (batch element 0's ids)
  txtIds: ArrayLike<bigint | number>; // (S_txt, 4)
  guidance?: ArrayLike<number>; // (B,) dev only
}

export class Flux2Transformer {
  private constructor(readonly config: TransformerConfig, private session: Session) {}

  static async load(backend: Backend, config: TransformerConfig, weights: TransformerWeights): Promise<Flux2Transformer> {
    weights.check(config);
    const graph = buildTransformerGraph(config, weights);
    const session = await backend.createSession(graph);
    return new Flux2Transformer(config, withLoraFeeds(session, weights.lora));
  }

  /** Open weights from a diffusers folder / file, or a BFL single file (config inferred when absent). */
  static async fromFiles(backend: Backend, weightsPath: string, configPath: string | null, format: "diffusers" | "bfl" = "diffusers") {
    const set = WeightSet.open(weightsPath);
    const weights = new TransformerWeights(set, format);
    const config = configPath ? readTransformerConfig(configPath) : weights.inferConfig();
    return Flux2Transformer.load(backend, config, weights);
  }

  async forward(inp: TransformerInputs): Promise<HostTensor> {
    const [B, sImg] = inp.hidden.shape;
    const seq = inp.text.shape[1] + sImg;
    const feeds = hostFeeds(this.config, B, joinIds([inp.txtIds, inp.imgIds]), seq, inp.timestep, inp.guidance);
    const out = await this.session.run({ ...feeds, hidden_states: inp.hidden, encoder_hidden_states: inp.text });
    return out.output;
  }

  async release() {
    await this.session.release();
  }
}
