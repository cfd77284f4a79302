// Where each VAE weight lives, for both checkpoint layouts (docs/FLUX2-spec.md §7.4).
//
// The graph asks for weights by their diffusers names. For a BFL
// `ae.safetensors` (LDM-style names) the same request is answered with a
// zero-copy reference to the BFL tensor: the names are mapped, the decoder's
// up blocks are numbered in reverse (diffusers `up_blocks.i` = BFL
// `up.{n-1-i}`), and the mid-block attention projections, stored by BFL as
// 1×1 convolutions [C, C, 1, 1], are reinterpreted as Linear weights [C, C]
// (same bytes, other shape). Nothing is converted or copied.

import { WeightSet, type TensorInfo } from "../io/safetensors.js";
import { fileSource, type Graph, type Value, type WeightSource } from "../onnx/graph.js";
import type { VaeConfig } from "./vae.js";

export type VaeFormat = "diffusers" | "bfl";

/** Key prefixes under which a BFL autoencoder may sit (bare `ae.safetensors`, or inside a bigger file). */
const BFL_PREFIXES = ["", "vae.", "ae.", "first_stage_model."];
const BFL_PROBE = "encoder.conv_in.weight";

/** Attention projections: Linear [C, C] in diffusers, 1×1 conv [C, C, 1, 1] in BFL files. */
const ATTN_PROJECTION = /\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/;

/** The renames inside a ResNet block / attention block, diffusers → BFL. */
function bflResnetPart(rest: string): string {
  return rest.replace(/^conv_shortcut\./, "nin_shortcut.");
}

function bflMid(rest: string): string | null {
  let m = rest.match(/^resnets\.([01])\.(.+)$/);
  if (m) return `mid.block_${Number(m[1]) + 1}.${bflResnetPart(m[2])}`;
  m = rest.match(/^attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/);
  if (m) {
    const names: Record<string, string> = { group_norm: "norm", to_q: "q", to_k: "k", to_v: "v", "to_out.0": "proj_out" };
    return `mid.attn_1.${names[m[1]]}.${m[2]}`;
  }
  return null;
}

/** The BFL name of a diffusers VAE tensor name; `upBlocks` is the number of decoder up blocks. */
export function bflVaeName(name: string, upBlocks: number): string | null {
  const simple: Record<string, string> = {
    "quant_conv.weight": "encoder.quant_conv.weight", "quant_conv.bias": "encoder.quant_conv.bias",
    "post_quant_conv.weight": "decoder.post_quant_conv.weight", "post_quant_conv.bias": "decoder.post_quant_conv.bias",
    "bn.running_mean": "bn.running_mean", "bn.running_var": "bn.running_var",
  };
  if (simple[name]) return simple[name];
  const m = name.match(/^(encoder|decoder)\.(.+)$/);
  if (!m) return null;
  const [, part, rest] = m;
  let r = rest.match(/^(conv_in|conv_out)\.(weight|bias)$/);
  if (r) return `${part}.${rest}`;
  r = rest.match(/^conv_norm_out\.(weight|bias)$/);
  if (r) return `${part}.norm_out.${r[1]}`;
  r = rest.match(/^mid_block\.(.+)$/);
  if (r) {
    const mid = bflMid(r[1]);
    return mid ? `${part}.${mid}` : null;
  }
  if (part === "encoder") {
    r = rest.match(/^down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/);
    if (r) return `encoder.down.${r[1]}.block.${r[2]}.${bflResnetPart(r[3])}`;
    r = rest.match(/^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)$/);
    if (r) return `encoder.down.${r[1]}.downsample.conv.${r[2]}`;
    return null;
  }
  r = rest.match(/^up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/);
  if (r) return `decoder.up.${upBlocks - 1 - Number(r[1])}.block.${r[2]}.${bflResnetPart(r[3])}`;
  r = rest.match(/^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)$/);
  if (r) return `decoder.up.${upBlocks - 1 - Number(r[1])}.upsample.conv.${r[2]}`;
  return null;
}

export class VaeWeights {
  private prefix = "";
  /** Number of decoder up blocks in a BFL file (needed to undo its reversed numbering). */
  private upBlocks = 0;

  constructor(readonly set: WeightSet, readonly format: VaeFormat) {
    if (format === "bfl") {
      const probe = set.keys().find((k) => k.endsWith(BFL_PROBE) && BFL_PREFIXES.includes(k.slice(0, k.length - BFL_PROBE.length)));
      if (!probe || !set.keys().some((k) => k.startsWith(probe.slice(0, probe.length - BFL_PROBE.length) + "encoder.down."))) {
        throw new Error(`${set.source}: not a BFL autoencoder file (no encoder.conv_in.weight / encoder.down.* keys)`);
      }
      this.prefix = probe.slice(0, probe.length - BFL_PROBE.length);
      const ups = new Set(set.keys().map((k) => k.slice(this.prefix.length).match(/^decoder\.up\.(\d+)\./)?.[1]).filter((x) => x !== undefined));
      this.upBlocks = ups.size;
    }
  }

  /** Detect the layout of a weight file by its keys. */
  static detectFormat(set: WeightSet): VaeFormat {
    const keys = set.keys();
    if (keys.some((k) => /(^|\.)encoder\.down_blocks\.\d+\./.test(k))) return "diffusers";
    if (keys.some((k) => /(^|\.)encoder\.down\.\d+\.block\./.test(k))) return "bfl";
    throw new Error(`${set.source}: not a VAE weight file: neither diffusers keys (encoder.down_blocks.*) nor BFL / LDM keys (encoder.down.N.block.*)`);
  }

  /** The name under which a diffusers-named tensor is stored in this file. */
  storedName(name: string): string {
    if (this.format === "diffusers") return name;
    const b = bflVaeName(name, this.upBlocks);
    if (!b) throw new Error(`no BFL equivalent for VAE weight "${name}"`);
    return this.prefix + b;
  }

  private stored(name: string): TensorInfo {
    const s = this.storedName(name);
    if (!this.set.has(s)) {
      const alias = s === name ? "" : ` (diffusers name "${name}")`;
      throw new Error(`${this.set.source}: missing VAE tensor "${s}"${alias} — the file is incomplete or not a FLUX.2 ${this.format} VAE`);
    }
    return this.set.info(s);
  }

  has(name: string): boolean {
    if (this.format === "diffusers") return this.set.has(name);
    const b = bflVaeName(name, this.upBlocks);
    return b !== null && this.set.has(this.prefix + b);
  }

  /** The stored location of a diffusers-named weight, with its diffusers shape. */
  source(name: string): WeightSource {
    const t = this.stored(name);
    if (ATTN_PROJECTION.test(name) && t.shape.length === 4) {
      // 1×1 conv kernel [C, C, 1, 1] read as a Linear weight [C, C]: same bytes.
      if (t.shape[2] !== 1 || t.shape[3] !== 1) {
        throw new Error(`${this.set.source}: VAE attention weight "${t.name}" has shape [${t.shape}], expected a 1×1 kernel [C, C, 1, 1]`);
      }
      return fileSource(t, t.shape.slice(0, 2));
    }
    return fileSource(t);
  }

  /** Shape of a diffusers-named weight (in diffusers' layout). */
  shape(name: string): number[] {
    return this.source(name).shape;
  }

  /** A graph value for a weight, optionally viewed with another shape of the same size (e.g. [C] as [C, 1, 1]). */
  value(g: Graph, name: string, shape?: number[]): Value {
    const s = this.source(name);
    if (!shape) return g.weight(name, s);
    if (shape.reduce((a, b) => a * b, 1) !== s.shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`VAE weight "${name}" [${s.shape}] cannot be viewed as [${shape}]`);
    }
    return g.weight(name, { ...s, shape });
  }

  /** The latent batch-norm buffers as float32 (any stored float dtype). */
  float32(name: string): Float32Array {
    return this.set.float32(this.stored(name).name);
  }

  /** Every weight the config needs exists with the right shape; say which one is wrong otherwise. */
  check(c: VaeConfig): void {
    if (this.format === "bfl" && this.upBlocks !== c.up_block_types.length) {
      throw new Error(`${this.set.source}: the BFL file has ${this.upBlocks} decoder up blocks (decoder.up.N) but the config has ${c.up_block_types.length} — the weights do not match this config`);
    }
    // Counts before shapes: a config with fewer blocks or layers than the file would otherwise
    // pass the shape check and silently leave weights unused.
    const bfl = this.format === "bfl";
    const counts: [string, RegExp, number][] = [
      ["encoder down blocks", bfl ? /^encoder\.down\.(\d+)\./ : /^encoder\.down_blocks\.(\d+)\./, c.block_out_channels.length],
      ["decoder up blocks", bfl ? /^decoder\.up\.(\d+)\./ : /^decoder\.up_blocks\.(\d+)\./, c.up_block_types.length],
      ["ResNets in the first encoder block (layers_per_block)", bfl ? /^encoder\.down\.0\.block\.(\d+)\./ : /^encoder\.down_blocks\.0\.resnets\.(\d+)\./, c.layers_per_block],
    ];
    for (const [what, re, want] of counts) {
      const got = new Set(this.set.keys().map((k) => k.startsWith(this.prefix) ? k.slice(this.prefix.length).match(re)?.[1] : undefined).filter((x) => x !== undefined)).size;
      // None at all: the file is not this layout; the shape check below names the missing tensor.
      if (got !== want && got > 0) throw new Error(`${this.set.source}: the weights hold ${got} ${what} but the config needs ${want} — the weights do not match this config (wrong config.json?)`);
    }
    for (const [name, shape] of expectedVaeShapes(c)) {
      const got = this.shape(name);
      if (got.join(",") !== shape.join(",")) {
        const stored = this.storedName(name);
        const which = stored === name ? `"${name}"` : `"${stored}" (diffusers "${name}")`;
        throw new Error(`${this.set.source}: VAE weight ${which} has shape [${got}] but the config needs [${shape}] — the weights do not match this config (wrong model size or config.json?)`);
      }
    }
  }
}

/** Every tensor a FLUX.2 VAE of config `c` has, by diffusers name, with its shape. */
export function expectedVaeShapes(c: VaeConfig): [string, number[]][] {
  const want: [string, number[]][] = [];
  const conv = (name: string, cout: number, cin: number, k: number) => {
    want.push([`${name}.weight`, [cout, cin, k, k]], [`${name}.bias`, [cout]]);
  };
  const norm = (name: string, ch: number) => {
    want.push([`${name}.weight`, [ch]], [`${name}.bias`, [ch]]);
  };
  const resnet = (name: string, cin: number, cout: number) => {
    norm(`${name}.norm1`, cin);
    conv(`${name}.conv1`, cout, cin, 3);
    norm(`${name}.norm2`, cout);
    conv(`${name}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${name}.conv_shortcut`, cout, cin, 1);
  };
  const mid = (name: string, ch: number) => {
    resnet(`${name}.resnets.0`, ch, ch);
    if (c.mid_block_add_attention) {
      norm(`${name}.attentions.0.group_norm`, ch);
      for (const p of ["to_q", "to_k", "to_v", "to_out.0"]) want.push([`${name}.attentions.0.${p}.weight`, [ch, ch]], [`${name}.attentions.0.${p}.bias`, [ch]]);
    }
    resnet(`${name}.resnets.1`, ch, ch);
  };

  const L = c.latent_channels;
  const enc = c.block_out_channels;
  conv("encoder.conv_in", enc[0], c.in_channels, 3);
  for (let i = 0; i < enc.length; i++) {
    const cin = i === 0 ? enc[0] : enc[i - 1];
    for (let j = 0; j < c.layers_per_block; j++) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : enc[i], enc[i]);
    if (i < enc.length - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, enc[i], enc[i], 3);
  }
  mid("encoder.mid_block", enc[enc.length - 1]);
  norm("encoder.conv_norm_out", enc[enc.length - 1]);
  conv("encoder.conv_out", 2 * L, enc[enc.length - 1], 3);
  if (c.use_quant_conv) conv("quant_conv", 2 * L, 2 * L, 1);

  if (c.use_post_quant_conv) conv("post_quant_conv", L, L, 1);
  const dec = decoderChannels(c);
  const rev = [...dec].reverse();
  conv("decoder.conv_in", rev[0], L, 3);
  mid("decoder.mid_block", rev[0]);
  for (let i = 0; i < rev.length; i++) {
    const cin = i === 0 ? rev[0] : rev[i - 1];
    for (let j = 0; j < c.layers_per_block + 1; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : rev[i], rev[i]);
    if (i < rev.length - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, rev[i], rev[i], 3);
  }
  norm("decoder.conv_norm_out", dec[0]);
  conv("decoder.conv_out", c.out_channels, dec[0], 3);

  const bn = c.patch_size[0] * c.patch_size[1] * L;
  want.push(["bn.running_mean", [bn]], ["bn.running_var", [bn]]);
  return want;
}

export function decoderChannels(c: VaeConfig): number[] {
  return c.decoder_block_out_channels ?? c.block_out_channels;
}
