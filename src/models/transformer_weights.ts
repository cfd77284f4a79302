// Where each transformer weight lives, for both checkpoint layouts.
//
// The graph asks for weights by their diffusers names (docs/FLUX2-spec.md §7.1). For a BFL
// single file (docs/FLUX2-spec.md §7.2–7.3) the same request is answered with a zero-copy
// byte range of the BFL tensor: q/k/v are row chunks of the fused `qkv`
// matrix, and the two halves of `final_layer.adaLN_modulation.1` are swapped
// (BFL stores shift first, diffusers scale first). Nothing is converted or
// copied. LoRA fusing can override any weight with computed data.

import { WeightSet, readTensorBytes, toFloat32, type TensorInfo } from "../io/safetensors.js";
import { dataSource, fileSource, rowSlice, type Graph, type Value, type WeightSource } from "../onnx/graph.js";
import type { HostTensor } from "../backend/backend.js";
import { QuantizedLinears } from "./quantized/format.js";
import type { TransformerConfig } from "./transformer.js";

export type TransformerFormat = "diffusers" | "bfl";

/** A BFL tensor name plus the row range of it that a diffusers tensor occupies. */
interface BflRef {
  name: string;
  /** Which third of a fused qkv (0, 1, 2), if any. */
  third?: number;
}

const BFL_PREFIXES = ["model.diffusion_model.", "diffusion_model."];

function bflName(name: string): BflRef | null {
  const simple: Record<string, string> = {
    "x_embedder.weight": "img_in.weight",
    "context_embedder.weight": "txt_in.weight",
    "time_guidance_embed.timestep_embedder.linear_1.weight": "time_in.in_layer.weight",
    "time_guidance_embed.timestep_embedder.linear_2.weight": "time_in.out_layer.weight",
    "time_guidance_embed.guidance_embedder.linear_1.weight": "guidance_in.in_layer.weight",
    "time_guidance_embed.guidance_embedder.linear_2.weight": "guidance_in.out_layer.weight",
    "double_stream_modulation_img.linear.weight": "double_stream_modulation_img.lin.weight",
    "double_stream_modulation_txt.linear.weight": "double_stream_modulation_txt.lin.weight",
    "single_stream_modulation.linear.weight": "single_stream_modulation.lin.weight",
    "proj_out.weight": "final_layer.linear.weight",
    "norm_out.linear.weight": "final_layer.adaLN_modulation.1.weight",
  };
  if (simple[name]) return { name: simple[name] };
  let m = name.match(/^transformer_blocks\.(\d+)\.(.+)$/);
  if (m) {
    const [, i, rest] = m;
    const qkv: Record<string, [string, number]> = {
      "attn.to_q.weight": ["img_attn.qkv.weight", 0], "attn.to_k.weight": ["img_attn.qkv.weight", 1],
      "attn.to_v.weight": ["img_attn.qkv.weight", 2], "attn.add_q_proj.weight": ["txt_attn.qkv.weight", 0],
      "attn.add_k_proj.weight": ["txt_attn.qkv.weight", 1], "attn.add_v_proj.weight": ["txt_attn.qkv.weight", 2],
    };
    if (qkv[rest]) return { name: `double_blocks.${i}.${qkv[rest][0]}`, third: qkv[rest][1] };
    const other: Record<string, string> = {
      "attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
      "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale", "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
      "attn.to_out.0.weight": "img_attn.proj.weight", "attn.to_add_out.weight": "txt_attn.proj.weight",
      "ff.linear_in.weight": "img_mlp.0.weight", "ff.linear_out.weight": "img_mlp.2.weight",
      "ff_context.linear_in.weight": "txt_mlp.0.weight", "ff_context.linear_out.weight": "txt_mlp.2.weight",
    };
    return other[rest] ? { name: `double_blocks.${i}.${other[rest]}` } : null;
  }
  m = name.match(/^single_transformer_blocks\.(\d+)\.attn\.(.+)$/);
  if (m) {
    const [, i, rest] = m;
    const other: Record<string, string> = {
      "to_qkv_mlp_proj.weight": "linear1.weight", "to_out.weight": "linear2.weight",
      "norm_q.weight": "norm.query_norm.scale", "norm_k.weight": "norm.key_norm.scale",
    };
    return other[rest] ? { name: `single_blocks.${i}.${other[rest]}` } : null;
  }
  return null;
}

/**
 * Runtime LoRA side paths (implemented by src/lora/apply.ts). While a hook is set, the
 * transformer graph hands it every linear layer and the row blocks of norm_out, so adapters
 * can add their low-rank terms with strengths that are graph inputs.
 */
export interface LoraGraphHook {
  /** `y = x Wᵀ` was computed for weight `name` (diffusers name): return y plus any LoRA terms. */
  linear(g: Graph, x: Value, y: Value, name: string): Value;
  /** `base` holds rows [start, start+count) of weight `name`: return it plus any LoRA delta rows. */
  rows(g: Graph, name: string, start: number, count: number, base: Value): Value;
  /** Current values of the graph inputs the hook declared (read on every run). */
  feeds(): Record<string, HostTensor>;
}

export class TransformerWeights {
  /** Weights replaced by computed data (LoRA fusing), by diffusers name. */
  readonly overrides = new Map<string, { data: Float32Array; shape: number[] }>();
  /** Runtime LoRA adapters (src/lora/); null = none. Read when a graph is built. */
  lora: LoraGraphHook | null = null;
  /** Weights replaced by computed data held in a file (LoRA fusing of large models), by diffusers name. */
  readonly fileOverrides = new Map<string, TensorInfo>();
  /**
   * Block-quantized Linear weights (src/quant/), by diffusers name: found in the checkpoint itself
   * (a `flux2 quantize` folder) or attached at load (`--quantize`). linear() multiplies by them
   * with MatMulNBits; an override (LoRA fusing) of the same weight wins.
   */
  quant: QuantizedLinears | null = null;
  private prefix = "";

  constructor(readonly set: WeightSet, readonly format: TransformerFormat) {
    if (format === "bfl") {
      const probe = set.keys().find((k) => k.endsWith("single_stream_modulation.lin.weight"));
      if (!probe) throw new Error(`${set.source}: not a FLUX.2 BFL transformer file (no single_stream_modulation.lin.weight)`);
      this.prefix = probe.slice(0, probe.length - "single_stream_modulation.lin.weight".length);
      if (this.prefix && !BFL_PREFIXES.includes(this.prefix)) throw new Error(`${set.source}: unexpected key prefix "${this.prefix}"`);
    }
    this.quant = QuantizedLinears.detect(set);
  }

  /** The quantized weight `name` applies (not overridden by LoRA fusing), else null. */
  private quantized(name: string): QuantizedLinears | null {
    return this.quant && !this.overrides.has(name) && !this.fileOverrides.has(name) && this.quant.has(name) ? this.quant : null;
  }

  /** x @ Wᵀ through MatMulNBits when weight `name` is quantized; null means use the float weight. */
  quantizedLinear(g: Graph, x: Value, name: string): Value | null {
    return this.quantized(name)?.linear(g, x, name) ?? null;
  }

  /**
   * Where a diffusers-named weight is stored when it is an unmodified checkpoint tensor (or a row
   * range of one): the tensor, and the rows of it the weight occupies.
   */
  private located(name: string): { info: TensorInfo; start: number; count: number } | null {
    if (this.overrides.has(name) || this.fileOverrides.has(name)) return null;
    if (this.format === "diffusers") return this.set.has(name) ? { info: this.set.info(name), start: 0, count: this.set.info(name).shape[0] } : null;
    const ref = bflName(name);
    if (!ref || !this.set.has(this.prefix + ref.name)) return null;
    const info = this.set.info(this.prefix + ref.name);
    const third = info.shape[0] / 3;
    return ref.third !== undefined ? { info, start: ref.third * third, count: third } : { info, start: 0, count: info.shape[0] };
  }

  /**
   * FP8 checkpoints (docs/FLUX2-spec.md §7.6): an F8 weight `X.weight` comes with `X.weight_scale`, one float
   * for the tensor or one per output row. The scale of rows [start, start+count), or null when the
   * tensor is not FP8 (or has no scale, then it is plain FP8 and only cast).
   */
  private fp8Scale(info: TensorInfo, start: number, count: number): Float32Array | null {
    if (info.dtype !== "F8_E4M3" && info.dtype !== "F8_E5M2") return null;
    const scaleName = `${info.name}_scale`;
    if (!this.set.has(scaleName)) return null;
    const s = this.set.info(scaleName);
    const v = toFloat32(s.dtype, readTensorBytes(s));
    if (v.length === 1) return v;
    if (v.length !== info.shape[0]) {
      throw new Error(`${s.file}: scale "${scaleName}" has ${v.length} values; expected 1 (per tensor) or ${info.shape[0]} (per row) for ${JSON.stringify(info.shape)}`);
    }
    return v.slice(start, start + count);
  }

  /** A graph value for stored bytes `src` of weight `graphName`: FP8 with a scale is dequantized in the graph. */
  private storedValue(g: Graph, graphName: string, src: WeightSource, loc: { info: TensorInfo; start: number; count: number } | null): Value {
    const scale = loc ? this.fp8Scale(loc.info, loc.start, loc.count) : null;
    if (!scale) return g.weight(graphName, src);
    // DequantizeLinear keeps the weight in FP8 (1 byte per value, memory-mapped) and is not
    // constant-folded by ORT, so it is dequantized each time it is used.
    const sv = scale.length === 1 ? g.constant([scale[0]], "F32", []) : g.weight(`${graphName}.scale`, dataSource(scale, "F32", [scale.length]));
    return g.dequantizedWeight(graphName, src, sv, 0);
  }

  /** Detect the layout of a weight file by its keys. */
  static detectFormat(set: WeightSet): TransformerFormat {
    return set.keys().some((k) => k.endsWith("single_stream_modulation.lin.weight")) ? "bfl" : "diffusers";
  }

  private stored(name: string): TensorInfo {
    if (!this.set.has(name)) {
      throw new Error(`${this.set.source}: missing tensor "${name}" — the file is incomplete or not a FLUX.2 ${this.format} transformer`);
    }
    return this.set.info(name);
  }

  /** The stored location of a diffusers-named weight (whole tensor). */
  source(name: string): WeightSource {
    const o = this.overrides.get(name);
    if (o) return dataSource(o.data, "F32", o.shape);
    const fo = this.fileOverrides.get(name);
    if (fo) return fileSource(fo);
    if (this.format === "diffusers") return fileSource(this.stored(name));
    const ref = bflName(name);
    if (!ref) throw new Error(`no BFL equivalent for transformer weight "${name}"`);
    const t = this.stored(this.prefix + ref.name);
    if (ref.third !== undefined) return rowSlice(t, ref.third * (t.shape[0] / 3), t.shape[0] / 3);
    if (name === "norm_out.linear.weight") throw new Error("norm_out.linear.weight must be read by rows (its halves are swapped in BFL files)");
    return fileSource(t);
  }

  /** Shape of a diffusers-named weight. */
  shape(name: string): number[] {
    const q = this.quantized(name);
    if (q) return q.shape(name);
    if (name === "norm_out.linear.weight" && this.format === "bfl") return this.stored(this.prefix + "final_layer.adaLN_modulation.1.weight").shape;
    return this.source(name).shape;
  }

  has(name: string): boolean {
    if (this.overrides.has(name) || this.fileOverrides.has(name) || this.quant?.has(name)) return true;
    if (this.format === "diffusers") return this.set.has(name);
    const ref = bflName(name);
    return !!ref && this.set.has(this.prefix + ref.name);
  }

  /** A graph value for a whole weight. */
  value(g: Graph, name: string): Value {
    const q = this.quantized(name);
    if (q) {
      // A quantized weight used other than by linear(): its dequantized float32 values.
      const f = q.float32(name);
      return g.weight(name, dataSource(f.data, "F32", f.shape));
    }
    return this.storedValue(g, name, this.source(name), this.located(name));
  }

  /** A graph value for rows [start, start+count) of a weight, in diffusers row order. */
  rows(g: Graph, name: string, start: number, count: number): Value {
    const v = this.storedRows(g, name, start, count);
    return this.lora ? this.lora.rows(g, name, start, count, v) : v;
  }

  /** A weight's values as float32 in diffusers row order (for LoRA fusing); an override wins. */
  float32(name: string): { data: Float32Array; shape: number[] } {
    const o = this.overrides.get(name);
    if (o) return { data: o.data.slice(), shape: [...o.shape] };
    const q = this.quantized(name);
    if (q) return q.float32(name);
    if (this.format === "bfl" && name === "norm_out.linear.weight" && !this.fileOverrides.has(name)) {
      const t = this.stored(this.prefix + "final_layer.adaLN_modulation.1.weight");
      const v = toFloat32(t.dtype, readTensorBytes(t));
      const half = v.length / 2;
      const out = new Float32Array(v.length);
      out.set(v.subarray(half), 0); // diffusers (scale, shift) = BFL (second half, first half)
      out.set(v.subarray(0, half), half);
      return { data: out, shape: [...t.shape] };
    }
    const s = this.source(name);
    const bytes = s.kind === "data" ? s.bytes
      : readTensorBytes({ name, dtype: s.dtype, shape: s.shape, file: s.file, offset: s.offset, byteLength: s.byteLength });
    const data = toFloat32(s.dtype, bytes);
    const loc = this.located(name);
    const scale = loc ? this.fp8Scale(loc.info, loc.start, loc.count) : null;
    if (scale) {
      const cols = data.length / s.shape[0];
      for (let r = 0; r < s.shape[0]; r++) {
        const k = scale.length === 1 ? scale[0] : scale[r];
        for (let i = r * cols; i < (r + 1) * cols; i++) data[i] = Math.fround(data[i] * k);
      }
    }
    return { data, shape: [...s.shape] };
  }

  private storedRows(g: Graph, name: string, start: number, count: number): Value {
    const o = this.overrides.get(name);
    if (o) {
      const cols = o.shape[1];
      return g.weight(`${name}[${start}:${start + count}]`, dataSource(o.data.slice(start * cols, (start + count) * cols), "F32", [count, cols]));
    }
    if (this.format === "bfl" && name === "norm_out.linear.weight" && !this.fileOverrides.has(name)) {
      const t = this.stored(this.prefix + "final_layer.adaLN_modulation.1.weight");
      const half = t.shape[0] / 2;
      if (start % half + count > half) throw new Error("norm_out rows must stay within one half");
      // diffusers (scale, shift) = BFL rows (second half, first half).
      const from = (start + half) % t.shape[0];
      return this.storedValue(g, `${name}[${start}:${start + count}]`, rowSlice(t, from, count), { info: t, start: from, count });
    }
    const q = this.quantized(name);
    if (q) {
      const f = q.float32(name);
      const cols = f.shape[1];
      return g.weight(`${name}[${start}:${start + count}]`, dataSource(f.data.slice(start * cols, (start + count) * cols), "F32", [count, cols]));
    }
    const whole = this.source(name);
    if (whole.kind !== "file") throw new Error("unreachable");
    const info = { name, dtype: whole.dtype, shape: whole.shape, file: whole.file, offset: whole.offset, byteLength: whole.byteLength };
    const loc = this.located(name);
    return this.storedValue(g, `${name}[${start}:${start + count}]`, rowSlice(info, start, count), loc && { info: loc.info, start: loc.start + start, count });
  }

  /** Infer the config of a BFL file from tensor shapes (golden README, "transformer" kind). */
  inferConfig(): TransformerConfig {
    if (this.format === "diffusers") return this.inferDiffusersConfig();
    const p = this.prefix;
    const shape = (n: string) => this.stored(p + n).shape;
    const [inner, inChannels] = shape("img_in.weight");
    const joint = shape("txt_in.weight")[1];
    const tgc = shape("time_in.in_layer.weight")[1];
    const headDim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0];
    const count = (re: RegExp) => new Set(this.set.keys().map((k) => k.slice(p.length).match(re)?.[1]).filter((x) => x !== undefined)).size;
    const mlpIn = shape("double_blocks.0.img_mlp.0.weight")[0];
    return {
      patch_size: 1, in_channels: inChannels, out_channels: inChannels,
      num_layers: count(/^double_blocks\.(\d+)\./), num_single_layers: count(/^single_blocks\.(\d+)\./),
      attention_head_dim: headDim, num_attention_heads: inner / headDim, joint_attention_dim: joint,
      timestep_guidance_channels: tgc, mlp_ratio: mlpIn / 2 / inner,
      axes_dims_rope: [headDim / 4, headDim / 4, headDim / 4, headDim / 4], rope_theta: 2000, eps: 1e-6,
      guidance_embeds: this.set.keys().some((k) => k.startsWith(p + "guidance_in.")),
    };
  }

  /**
   * The same for a diffusers-named file without its config.json. Shapes give every size; RoPE
   * theta, eps and the rotary axes are not stored in weights, so they take the values every
   * FLUX.2 model uses (as for BFL files).
   */
  private inferDiffusersConfig(): TransformerConfig {
    const shape = (n: string) => this.stored(n).shape;
    const [inner, inChannels] = shape("x_embedder.weight");
    const blocks = this.blockCounts();
    const first = blocks.double > 0 ? "transformer_blocks.0.attn.norm_q.weight" : "single_transformer_blocks.0.attn.norm_q.weight";
    const headDim = shape(first)[0];
    const mlp = blocks.double > 0 ? shape("transformer_blocks.0.ff.linear_in.weight")[0] / 2 : (shape("single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight")[0] - 3 * inner) / 2;
    return {
      patch_size: 1, in_channels: inChannels, out_channels: null,
      num_layers: blocks.double, num_single_layers: blocks.single,
      attention_head_dim: headDim, num_attention_heads: inner / headDim, joint_attention_dim: shape("context_embedder.weight")[1],
      timestep_guidance_channels: shape("time_guidance_embed.timestep_embedder.linear_1.weight")[1], mlp_ratio: mlp / inner,
      axes_dims_rope: [headDim / 4, headDim / 4, headDim / 4, headDim / 4], rope_theta: 2000, eps: 1e-6,
      guidance_embeds: this.set.keys().some((k) => k.startsWith("time_guidance_embed.guidance_embedder.")),
    };
  }

  /** How many double-stream and single-stream blocks the stored weights hold (distinct block indices). */
  blockCounts(): { double: number; single: number } {
    const p = this.prefix;
    const [dbl, sgl] = this.format === "bfl" ? [/^double_blocks\.(\d+)\./, /^single_blocks\.(\d+)\./] : [/^transformer_blocks\.(\d+)\./, /^single_transformer_blocks\.(\d+)\./];
    const count = (re: RegExp) => new Set(this.set.keys().map((k) => k.startsWith(p) ? k.slice(p.length).match(re)?.[1] : undefined).filter((x) => x !== undefined)).size;
    return { double: count(dbl), single: count(sgl) };
  }

  /** Every weight the config needs exists with the right shape; say which one is wrong otherwise. */
  check(c: TransformerConfig): void {
    // Block counts first: cheap, and the clearest message for a config of the wrong model size.
    const blocks = this.blockCounts();
    if (blocks.double !== c.num_layers || blocks.single !== c.num_single_layers) {
      throw new Error(`${this.set.source}: the weights hold ${blocks.double} double-stream and ${blocks.single} single-stream blocks but the config says num_layers ${c.num_layers} and num_single_layers ${c.num_single_layers} — the weights do not match this config (wrong model size or config.json?)`);
    }
    const want = expectedTransformerShapes(c);
    for (const [name, shape] of want) {
      const got = this.shape(name);
      if (got.join(",") !== shape.join(",")) {
        throw new Error(`${this.set.source}: transformer weight "${name}" has shape [${got}] but the config needs [${shape}] — the weights do not match this config (wrong model size or config.json?)`);
      }
    }
  }
}

/** Every diffusers-named transformer weight a config needs, with its shape (docs/FLUX2-spec.md §7.1). */
export function expectedTransformerShapes(c: TransformerConfig): [string, number[]][] {
    const D = c.num_attention_heads * c.attention_head_dim;
    const M = Math.floor(D * c.mlp_ratio);
    const J = c.joint_attention_dim, T = c.timestep_guidance_channels, Dh = c.attention_head_dim;
    const want: [string, number[]][] = [
      ["x_embedder.weight", [D, c.in_channels]], ["context_embedder.weight", [D, J]],
      ["time_guidance_embed.timestep_embedder.linear_1.weight", [D, T]],
      ["time_guidance_embed.timestep_embedder.linear_2.weight", [D, D]],
      ["double_stream_modulation_img.linear.weight", [6 * D, D]], ["double_stream_modulation_txt.linear.weight", [6 * D, D]],
      ["single_stream_modulation.linear.weight", [3 * D, D]], ["norm_out.linear.weight", [2 * D, D]],
      ["proj_out.weight", [(c.out_channels ?? c.in_channels) * c.patch_size ** 2, D]],
    ];
    if (c.guidance_embeds) {
      want.push(["time_guidance_embed.guidance_embedder.linear_1.weight", [D, T]], ["time_guidance_embed.guidance_embedder.linear_2.weight", [D, D]]);
    }
    for (let i = 0; i < c.num_layers; i++) {
      const p = `transformer_blocks.${i}`;
      for (const n of ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"]) want.push([`${p}.attn.${n}.weight`, [D, D]]);
      for (const n of ["norm_q", "norm_k", "norm_added_q", "norm_added_k"]) want.push([`${p}.attn.${n}.weight`, [Dh]]);
      for (const n of ["ff", "ff_context"]) want.push([`${p}.${n}.linear_in.weight`, [2 * M, D]], [`${p}.${n}.linear_out.weight`, [D, M]]);
    }
    for (let i = 0; i < c.num_single_layers; i++) {
      const p = `single_transformer_blocks.${i}.attn`;
      want.push([`${p}.to_qkv_mlp_proj.weight`, [3 * D + 2 * M, D]], [`${p}.to_out.weight`, [D, D + M]], [`${p}.norm_q.weight`, [Dh]], [`${p}.norm_k.weight`, [Dh]]);
    }
    return want;
}
