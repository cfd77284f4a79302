// The FLUX.2 VAE (diffusers `AutoencoderKLFlux2`), docs/FLUX2-spec.md §1.3 and §3.1–3.4.
//
// Two graphs, each built the first time it is needed (a pipeline that only
// decodes never builds the encoder):
//   encode: image (B, 3, H, W) in [-1, 1] → encoder → quant_conv → moments (B, 2C, H/f, W/f),
//           latent_mean = moments[:, :C], latent_logvar = clamp(moments[:, C:], -30, 20)
//   decode: latents (B, C, h, w) → post_quant_conv → decoder → sample (B, 3, f h, f w)
// Batch, height and width are dynamic. The latent batch-norm statistics (docs/FLUX2-spec.md §3.4)
// are not part of either graph: bnStats() hands them to the pipeline.

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Graph, Value } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import { VaeWeights, decoderChannels, type VaeFormat } from "./vae_weights.js";

export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  /** Decoder widths; null = same as block_out_channels (FLUX.2-small-decoder sets them). */
  decoder_block_out_channels: number[] | null;
  layers_per_block: number;
  act_fn: string;
  latent_channels: number;
  norm_num_groups: number;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  batch_norm_eps: number;
  patch_size: [number, number];
}

/** diffusers class defaults (= every released FLUX.2 VAE). */
export const VAE_DEFAULTS: VaeConfig = {
  in_channels: 3, out_channels: 3,
  down_block_types: new Array(4).fill("DownEncoderBlock2D"), up_block_types: new Array(4).fill("UpDecoderBlock2D"),
  block_out_channels: [128, 256, 512, 512], decoder_block_out_channels: null,
  layers_per_block: 2, act_fn: "silu", latent_channels: 32, norm_num_groups: 32,
  use_quant_conv: true, use_post_quant_conv: true, mid_block_add_attention: true,
  batch_norm_eps: 1e-4, patch_size: [2, 2],
};

const MAX_VAE_WIDTH = 1 << 16;
const MAX_VAE_BLOCKS = 8;
const MAX_VAE_LAYERS = 16;

/** Every GroupNorm of the VAE (ResNets, mid attention, conv_norm_out) uses this epsilon. */
const GROUP_NORM_EPS = 1e-6;

export function readVaeConfig(file: string): VaeConfig {
  const p = fs.statSync(file, { throwIfNoEntry: false })?.isDirectory() ? path.join(file, "config.json") : file;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(p, "utf8"));
  } catch (e) {
    throw new Error(`${p}: cannot read the VAE config (${(e as Error).message})`);
  }
  return parseVaeConfig(raw, p);
}

/** Defaults filled in and every field validated; `where` names the source in errors. */
export function parseVaeConfig(raw: Record<string, unknown>, where = "VAE config"): VaeConfig {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  if (raw._class_name !== undefined && raw._class_name !== "AutoencoderKLFlux2") {
    throw new Error(`${where}: _class_name is "${String(raw._class_name)}", expected "AutoencoderKLFlux2" (is this the vae/ folder of a FLUX.2 checkpoint?)`);
  }
  const c: VaeConfig = { ...VAE_DEFAULTS };
  for (const k of Object.keys(c) as (keyof VaeConfig)[]) if (raw[k] !== undefined) (c as any)[k] = raw[k];
  if (typeof c.patch_size === "number") c.patch_size = [c.patch_size, c.patch_size];

  const bad = (field: string, why: string) => new Error(`${where}: ${field} ${why}`);
  // Upper bounds far above the released VAE (4 blocks of 2 layers, width 512) and low enough
  // that a typo (layers_per_block: 1e9) is refused here, not while the weight list is built.
  const posInt = (v: unknown, max = MAX_VAE_WIDTH) => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= max;
  const intList = (v: unknown) => Array.isArray(v) && v.length > 0 && v.length <= MAX_VAE_BLOCKS && v.every((x) => posInt(x));
  for (const k of ["in_channels", "out_channels", "latent_channels", "norm_num_groups"] as const) {
    if (!posInt(c[k])) throw bad(k, `must be an integer from 1 to ${MAX_VAE_WIDTH}, got ${JSON.stringify(c[k])}`);
  }
  if (!posInt(c.layers_per_block, MAX_VAE_LAYERS)) throw bad("layers_per_block", `must be an integer from 1 to ${MAX_VAE_LAYERS}, got ${JSON.stringify(c.layers_per_block)}`);
  if (!intList(c.block_out_channels)) throw bad("block_out_channels", `must be a list of 1 to ${MAX_VAE_BLOCKS} integers from 1 to ${MAX_VAE_WIDTH}, got ${JSON.stringify(c.block_out_channels)}`);
  if (c.decoder_block_out_channels !== null && !intList(c.decoder_block_out_channels)) {
    throw bad("decoder_block_out_channels", `must be null or a list of 1 to ${MAX_VAE_BLOCKS} integers from 1 to ${MAX_VAE_WIDTH}, got ${JSON.stringify(c.decoder_block_out_channels)}`);
  }
  const dec = decoderChannels(c);
  if (!Array.isArray(c.down_block_types) || c.down_block_types.length !== c.block_out_channels.length) {
    throw bad("down_block_types", `must list one block per entry of block_out_channels (${c.block_out_channels.length}), got ${JSON.stringify(c.down_block_types)}`);
  }
  if (!Array.isArray(c.up_block_types) || c.up_block_types.length !== dec.length) {
    throw bad("up_block_types", `must list one block per decoder width (${dec.length}), got ${JSON.stringify(c.up_block_types)}`);
  }
  const badDown = c.down_block_types.find((t) => t !== "DownEncoderBlock2D");
  if (badDown !== undefined) throw bad("down_block_types", `contains "${badDown}"; only "DownEncoderBlock2D" is supported`);
  const badUp = c.up_block_types.find((t) => t !== "UpDecoderBlock2D");
  if (badUp !== undefined) throw bad("up_block_types", `contains "${badUp}"; only "UpDecoderBlock2D" is supported`);
  if (c.act_fn !== "silu" && c.act_fn !== "swish") throw bad("act_fn", `is "${c.act_fn}"; only "silu" is supported`);
  for (const ch of [...c.block_out_channels, ...dec]) {
    if (ch % c.norm_num_groups !== 0) throw bad("norm_num_groups", `(${c.norm_num_groups}) must divide every block width, but ${ch} is not a multiple`);
  }
  if (!Array.isArray(c.patch_size) || c.patch_size.length !== 2 || !c.patch_size.every((v) => posInt(v, 16))) {
    throw bad("patch_size", `must be two positive integers, got ${JSON.stringify(c.patch_size)}`);
  }
  if (typeof c.batch_norm_eps !== "number" || !(c.batch_norm_eps >= 0)) throw bad("batch_norm_eps", `must be a non-negative number, got ${JSON.stringify(c.batch_norm_eps)}`);
  for (const k of ["use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"] as const) {
    if (typeof c[k] !== "boolean") throw bad(k, `must be true or false, got ${JSON.stringify(c[k])}`);
  }
  return c;
}

/** Spatial factor between pixels and latents: one 2× downsample per block but the last. */
export function vaeScaleFactor(c: VaeConfig): number {
  return 2 ** (c.block_out_channels.length - 1);
}

// ---------------------------------------------------------------------------
// Building blocks (docs/FLUX2-spec.md §3.3)

/** What the building blocks read (exported for the training graph, src/train/step.ts). */
export interface VaeGraphCtx {
  g: Graph;
  w: VaeWeights;
  c: VaeConfig;
}

type Ctx = VaeGraphCtx;

/** 2-D convolution with bias; "same" padding unless `pads` ([top, left, bottom, right]) is given. */
function conv(ctx: Ctx, x: Value, name: string, k: number, stride = 1, pads?: number[]): Value {
  const { g, w } = ctx;
  const p = (k - 1) / 2;
  return g.op("Conv", [x, w.value(g, `${name}.weight`), w.value(g, `${name}.bias`)], {
    kernel_shape: [k, k], strides: [stride, stride], pads: pads ?? [p, p, p, p],
  })[0];
}

/**
 * GroupNorm(G groups, eps 1e-6) with a per-channel affine, on (B, C, H, W).
 *
 * Written as Reshape (B, G, -1) → InstanceNormalization (one mean / variance
 * per (batch, group), unit scale, zero bias) → Reshape back → × γ[c] + β[c].
 * ONNX's own GroupNormalization is not usable here: opset 18 defined its
 * scale / bias per *group*, opset 21 changed them to per *channel*, and ONNX
 * Runtime's handling differs between those opsets and execution providers
 * (the com.microsoft GroupNorm contrib op is NHWC and GPU-only). Instance
 * normalization over the grouped view is the same math with none of that.
 */
function groupNorm(ctx: Ctx, x: Value, name: string, channels: number): Value {
  const { g, w } = ctx;
  const G = ctx.c.norm_num_groups;
  const grouped = g.reshape(x, [0, G, -1]);
  const ones = g.constant(new Array(G).fill(1), "F32", [G]);
  const zeros = g.constant(new Array(G).fill(0), "F32", [G]);
  const n = g.op("InstanceNormalization", [grouped, ones, zeros], { epsilon: { float: GROUP_NORM_EPS } })[0];
  const back = g.op("Reshape", [n, g.shape(x)])[0];
  const gamma = w.value(g, `${name}.weight`, [channels, 1, 1]);
  const beta = w.value(g, `${name}.bias`, [channels, 1, 1]);
  return g.add(g.mul(back, gamma), beta);
}

/** ResnetBlock2D: shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))). */
function resnet(ctx: Ctx, x: Value, name: string, cin: number, cout: number): Value {
  const { g } = ctx;
  let h = conv(ctx, g.silu(groupNorm(ctx, x, `${name}.norm1`, cin)), `${name}.conv1`, 3);
  h = conv(ctx, g.silu(groupNorm(ctx, h, `${name}.norm2`, cout)), `${name}.conv2`, 3);
  const shortcut = cin === cout ? x : conv(ctx, x, `${name}.conv_shortcut`, 1);
  return g.add(shortcut, h);
}

/** Pad right and bottom by one zero, then 3×3 conv with stride 2. */
function downsample(ctx: Ctx, x: Value, name: string): Value {
  return conv(ctx, x, `${name}.conv`, 3, 2, [0, 0, 1, 1]);
}

/** Nearest-neighbour ×2 (out[i] = in[floor(i / 2)]), then 3×3 conv. */
function upsample(ctx: Ctx, x: Value, name: string): Value {
  const { g } = ctx;
  const scales = g.constant([1, 1, 2, 2], "F32", [4]);
  const up = g.op("Resize", [x, null, scales], {
    mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor",
  })[0];
  return conv(ctx, up, `${name}.conv`, 3);
}

/**
 * Single-head self-attention over the H·W positions, head dim = C:
 * x + to_out(softmax(q kᵀ / √C) v) with q, k, v = Linear(GN(x)) on (B, HW, C).
 * MultiHeadAttention keeps the (HW)² score matrix out of the graph's tensors
 * (it is 1 GiB per image at 1024² pixels).
 */
function midAttention(ctx: Ctx, x: Value, name: string, C: number): Value {
  const { g, w } = ctx;
  const n = groupNorm(ctx, x, `${name}.group_norm`, C);
  const seq = g.transpose(g.reshape(n, [0, 0, -1]), [0, 2, 1]);
  const proj = (v: Value, p: string) => g.linear(v, w.value(g, `${name}.${p}.weight`), w.value(g, `${name}.${p}.bias`));
  const o = g.op("MultiHeadAttention", [proj(seq, "to_q"), proj(seq, "to_k"), proj(seq, "to_v")],
    { num_heads: 1, scale: { float: 1 / Math.sqrt(C) } }, { domain: "com.microsoft" })[0];
  const y = g.transpose(proj(o, "to_out.0"), [0, 2, 1]);
  return g.add(x, g.op("Reshape", [y, g.shape(x)])[0]);
}

/** UNetMidBlock2D: ResNet, attention (if configured), ResNet; all at width C. */
function midBlock(ctx: Ctx, x: Value, name: string, C: number): Value {
  x = resnet(ctx, x, `${name}.resnets.0`, C, C);
  if (ctx.c.mid_block_add_attention) x = ctx.g.scope("attn", () => midAttention(ctx, x, `${name}.attentions.0`, C));
  return resnet(ctx, x, `${name}.resnets.1`, C, C);
}

/** GroupNorm → SiLU → 3×3 conv: the end of encoder and decoder. */
function outputHead(ctx: Ctx, x: Value, part: string, C: number): Value {
  return conv(ctx, ctx.g.silu(groupNorm(ctx, x, `${part}.conv_norm_out`, C)), `${part}.conv_out`, 3);
}

// ---------------------------------------------------------------------------
// Encoder and decoder (docs/FLUX2-spec.md §3.1, §3.2)

/** (B, in, H, W) → moments (B, 2C, H/f, W/f): encoder, then quant_conv. */
export function encoder(ctx: Ctx, x: Value): Value {
  const { g, c } = ctx;
  const widths = c.block_out_channels;
  let h = conv(ctx, x, "encoder.conv_in", 3);
  widths.forEach((cout, i) => {
    const cin = i === 0 ? widths[0] : widths[i - 1];
    h = g.scope(`down.${i}`, () => {
      let y = h;
      for (let j = 0; j < c.layers_per_block; j++) y = resnet(ctx, y, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
      return i < widths.length - 1 ? downsample(ctx, y, `encoder.down_blocks.${i}.downsamplers.0`) : y;
    });
  });
  const C = widths[widths.length - 1];
  h = g.scope("mid", () => midBlock(ctx, h, "encoder.mid_block", C));
  h = outputHead(ctx, h, "encoder", C);
  return c.use_quant_conv ? conv(ctx, h, "quant_conv", 1) : h;
}

/** (B, C, h, w) latents → (B, out, f h, f w): post_quant_conv, then decoder. */
export function decoder(ctx: Ctx, z: Value): Value {
  const { g, c } = ctx;
  const widths = [...decoderChannels(c)].reverse();
  if (c.use_post_quant_conv) z = conv(ctx, z, "post_quant_conv", 1);
  let h = conv(ctx, z, "decoder.conv_in", 3);
  h = g.scope("mid", () => midBlock(ctx, h, "decoder.mid_block", widths[0]));
  widths.forEach((cout, i) => {
    const cin = i === 0 ? widths[0] : widths[i - 1];
    h = g.scope(`up.${i}`, () => {
      let y = h;
      for (let j = 0; j < c.layers_per_block + 1; j++) y = resnet(ctx, y, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
      return i < widths.length - 1 ? upsample(ctx, y, `decoder.up_blocks.${i}.upsamplers.0`) : y;
    });
  });
  return outputHead(ctx, h, "decoder", widths[widths.length - 1]);
}

export function buildVaeEncodeGraph(c: VaeConfig, w: VaeWeights): Graph {
  const g = new Graph("flux2_vae_encode");
  const ctx: Ctx = { g, w, c };
  const C = c.latent_channels;
  const image = g.input("image", "F32", ["batch", c.in_channels, "height", "width"]);
  const moments = encoder(ctx, image);
  const [mean, logvar] = g.split(moments, 1, [C, C]);
  const dims = ["batch", C, "latent_height", "latent_width"];
  g.output(moments, "moments", "F32", ["batch", 2 * C, "latent_height", "latent_width"]);
  g.output(mean, "latent_mean", "F32", dims);
  g.output(g.clip(logvar, -30, 20), "latent_logvar", "F32", dims);
  return g;
}

export function buildVaeDecodeGraph(c: VaeConfig, w: VaeWeights): Graph {
  const g = new Graph("flux2_vae_decode");
  const ctx: Ctx = { g, w, c };
  const latents = g.input("latents", "F32", ["batch", c.latent_channels, "latent_height", "latent_width"]);
  g.output(decoder(ctx, latents), "sample", "F32", ["batch", c.out_channels, "height", "width"]);
  return g;
}

// ---------------------------------------------------------------------------
// The runnable model

export interface VaeEncoding {
  /** encoder + quant_conv output (B, 2C, H/f, W/f). */
  moments: HostTensor;
  /** moments[:, :C]: the distribution's mode, what the pipelines use. */
  mean: HostTensor;
  /** clamp(moments[:, C:], -30, 20). */
  logvar: HostTensor;
}

export class Flux2Vae {
  private sessions: { encode?: Promise<Session>; decode?: Promise<Session> } = {};
  private bn?: { mean: Float32Array; std: Float32Array };

  private constructor(private backend: Backend, readonly config: VaeConfig, readonly weights: VaeWeights) {}

  /** Validate the weights against the config; no graph is built until encode() / decode(). */
  static async load(backend: Backend, config: VaeConfig, weights: VaeWeights): Promise<Flux2Vae> {
    weights.check(config);
    return new Flux2Vae(backend, config, weights);
  }

  /**
   * Open a diffusers `vae/` folder or file, or a BFL `ae.safetensors` (format
   * detected from the keys when not given). The config (a `config.json` or the
   * folder holding it) is always needed: BFL files do not reveal e.g. the
   * GroupNorm group count.
   */
  static async fromFiles(backend: Backend, weightsPath: string, configPath: string, format?: VaeFormat): Promise<Flux2Vae> {
    const config = readVaeConfig(configPath);
    const set = WeightSet.open(weightsPath);
    try {
      const weights = new VaeWeights(set, format ?? VaeWeights.detectFormat(set));
      return await Flux2Vae.load(backend, config, weights);
    } catch (e) {
      set.close();
      throw e;
    }
  }

  /** Pixels per latent along each side (8 for the released VAE). */
  get scaleFactor(): number {
    return vaeScaleFactor(this.config);
  }

  private session(which: "encode" | "decode"): Promise<Session> {
    let s = this.sessions[which];
    if (!s) {
      const graph = which === "encode" ? buildVaeEncodeGraph(this.config, this.weights) : buildVaeDecodeGraph(this.config, this.weights);
      s = this.backend.createSession(graph);
      // A failed build must not poison later calls.
      s.catch(() => { if (this.sessions[which] === s) delete this.sessions[which]; });
      this.sessions[which] = s;
    }
    return s;
  }

  /** image (B, in_channels, H, W), values in [-1, 1]. */
  async encode(image: HostTensor): Promise<VaeEncoding> {
    checkInput(image, this.config.in_channels, "VAE encode: image", "(B, C, H, W)");
    const out = await (await this.session("encode")).run({ image });
    return { moments: out.moments, mean: out.latent_mean, logvar: out.latent_logvar };
  }

  /** latents (B, latent_channels, h, w), un-normalised → image (B, out_channels, f h, f w), about [-1, 1]. */
  async decode(latents: HostTensor): Promise<HostTensor> {
    checkInput(latents, this.config.latent_channels, "VAE decode: latents", "(B, C, h, w)");
    const out = await (await this.session("decode")).run({ latents });
    return out.sample;
  }

  /**
   * The latent batch-norm statistics over the patchified channels (docs/FLUX2-spec.md §3.4):
   * mean = bn.running_mean, std = sqrt(bn.running_var + batch_norm_eps), in
   * float32 as the reference computes them (eps rounded to float32 first).
   */
  bnStats(): { mean: Float32Array; std: Float32Array } {
    if (!this.bn) {
      const mean = this.weights.float32("bn.running_mean");
      const variance = this.weights.float32("bn.running_var");
      const eps = Math.fround(this.config.batch_norm_eps);
      const std = Float32Array.from(variance, (v) => Math.fround(Math.sqrt(Math.fround(v + eps))));
      this.bn = { mean, std };
    }
    return { mean: this.bn.mean.slice(), std: this.bn.std.slice() };
  }

  async release(): Promise<void> {
    const pending = Object.values(this.sessions);
    this.sessions = {};
    for (const s of pending) {
      let session: Session | null = null;
      try {
        session = await s;
      } catch {
        // never built; nothing to release
      }
      if (session) await session.release();
    }
    this.weights.set.close();
  }
}

function checkInput(t: HostTensor, channels: number, what: string, layout: string): void {
  if (!(t.data instanceof Float32Array)) throw new Error(`${what} must be float32`);
  if (t.shape.length !== 4 || t.shape[1] !== channels) {
    throw new Error(`${what} must have shape ${layout} with ${channels} channels, got [${t.shape}]`);
  }
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new Error(`${what}: shape [${t.shape}] needs ${n} values, got ${t.data.length}`);
  if (n === 0) throw new Error(`${what} is empty ([${t.shape}])`);
}
