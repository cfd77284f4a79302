// Writing what training made, in the formats other tools read.
//
// * diffusers / PEFT LoRA (the default): `transformer.<module>.lora_A.weight`
//   (rank, in) and `.lora_B.weight` (out, rank), header metadata `format: pt`
//   and `lora_adapter_metadata` = the PEFT LoraConfig with every key prefixed
//   `transformer.`, JSON with sorted keys and indent 2, as diffusers'
//   `save_lora_weights` writes it (scale = lora_alpha / r when loading).
// * ComfyUI (`--format comfyui`): BFL / ai-toolkit names `diffusion_model.<BFL
//   module>.lora_A/B.weight` plus `.alpha` (ComfyUI's scale is alpha / rank of
//   the file's lora_A). Where BFL fuses q, k and v into one `qkv` Linear, the
//   three LoRAs become one: lora_A stacked (3r, in), lora_B block diagonal
//   (3·out, 3r), alpha 3α, so alpha / rank stays α / r and the delta of each
//   projection is unchanged. BFL's `final_layer.adaLN_modulation.1` stores
//   (shift; scale) where diffusers' norm_out.linear stores (scale; shift): the
//   halves of its lora_B are swapped.
// * A full model (`--full`, `--vae`): a diffusers folder, the trained component
//   written as one safetensors file with the base's config, every other
//   component hard-linked (or copied) from the base folder.
//
// Every file is written to a temporary name and renamed (writeSafetensors), and
// a model folder is assembled under a temporary name and renamed into place, so
// a crash or a full disk never leaves a truncated LoRA or a half model.

import * as fs from "node:fs";
import * as path from "node:path";
import { WeightSet, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import type { TextPadding } from "../text/length.js";

export type LoraExportFormat = "peft" | "comfyui";

export interface LoraInfo {
  rank: number;
  alpha: number;
  /** The target list given to PEFT (suffixes). */
  targets: string[];
}

const PEFT_KEY = /^transformer\.(.+)\.lora_([AB])\.weight$/;

/** A trained LoRA's modules: module name → A (rank, in), B (out, rank). */
export function loraModules(params: Map<string, Float32Array>, rank: number): Map<string, { A: Float32Array; B: Float32Array; in: number; out: number }> {
  const mods = new Map<string, { A?: Float32Array; B?: Float32Array }>();
  for (const [key, data] of params) {
    const m = key.match(PEFT_KEY);
    if (!m) throw new Error(`trainable "${key}" is not a PEFT LoRA key (transformer.<module>.lora_A/B.weight)`);
    let e = mods.get(m[1]);
    if (!e) mods.set(m[1], (e = {}));
    e[m[2] as "A" | "B"] = data;
  }
  const out = new Map<string, { A: Float32Array; B: Float32Array; in: number; out: number }>();
  for (const [name, e] of mods) {
    if (!e.A || !e.B) throw new Error(`LoRA module "${name}" lacks its lora_${e.A ? "B" : "A"}`);
    if (e.A.length % rank || e.B.length % rank) throw new Error(`LoRA module "${name}": tensor sizes ${e.A.length}, ${e.B.length} are not multiples of rank ${rank}`);
    out.set(name, { A: e.A, B: e.B, in: e.A.length / rank, out: e.B.length / rank });
  }
  return out;
}

/** The `lora_adapter_metadata` diffusers writes: the PEFT LoraConfig, keys prefixed `transformer.`. */
export function peftMetadata(info: LoraInfo): Record<string, string> {
  const config: Record<string, unknown> = {
    alpha_pattern: {}, bias: "none", fan_in_fan_out: false, init_lora_weights: true, lora_alpha: info.alpha,
    lora_dropout: 0, peft_type: "LORA", r: info.rank, rank_pattern: {}, target_modules: [...info.targets].sort(),
    task_type: null, use_dora: false, use_rslora: false,
  };
  const prefixed: Record<string, unknown> = {};
  for (const k of Object.keys(config).sort()) prefixed[`transformer.${k}`] = config[k];
  return { format: "pt", lora_adapter_metadata: JSON.stringify(prefixed, null, 2) };
}

/** Save a LoRA in the diffusers/PEFT format. */
export function savePeftLora(file: string, params: Map<string, Float32Array>, info: LoraInfo): void {
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, m] of loraModules(params, info.rank)) {
    tensors[`transformer.${name}.lora_A.weight`] = { dtype: "F32", shape: [info.rank, m.in], data: m.A };
    tensors[`transformer.${name}.lora_B.weight`] = { dtype: "F32", shape: [m.out, info.rank], data: m.B };
  }
  writeSafetensors(file, tensors, peftMetadata(info));
}

/** Where a diffusers module lives in BFL's model: module, and its row chunk when BFL fuses it. */
export function bflModuleOf(module: string): { module: string; part?: number; swap?: boolean } | null {
  let m = module.match(/^transformer_blocks\.(\d+)\.(.+)$/);
  if (m) {
    const [, i, rest] = m;
    const qkv = ["attn.to_q", "attn.to_k", "attn.to_v"].indexOf(rest);
    if (qkv >= 0) return { module: `double_blocks.${i}.img_attn.qkv`, part: qkv };
    const txt = ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"].indexOf(rest);
    if (txt >= 0) return { module: `double_blocks.${i}.txt_attn.qkv`, part: txt };
    const single: Record<string, string> = {
      "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.linear_in": "img_mlp.0",
      "ff.linear_out": "img_mlp.2", "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2",
    };
    return single[rest] ? { module: `double_blocks.${i}.${single[rest]}` } : null;
  }
  m = module.match(/^single_transformer_blocks\.(\d+)\.attn\.(to_qkv_mlp_proj|to_out)$/);
  if (m) return { module: `single_blocks.${m[1]}.${m[2] === "to_out" ? "linear2" : "linear1"}` };
  const top: Record<string, string> = {
    x_embedder: "img_in", context_embedder: "txt_in", proj_out: "final_layer.linear",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
  };
  if (top[module]) return { module: top[module] };
  if (module === "norm_out.linear") return { module: "final_layer.adaLN_modulation.1", swap: true };
  return null;
}

/** Save a LoRA with BFL names for ComfyUI (q/k/v fused where BFL fuses them). */
export function saveComfyLora(file: string, params: Map<string, Float32Array>, info: LoraInfo): void {
  const r = info.rank;
  const groups = new Map<string, { parts: Map<number, { A: Float32Array; B: Float32Array; in: number; out: number }>; swap: boolean }>();
  for (const [name, m] of loraModules(params, r)) {
    const bfl = bflModuleOf(name);
    if (!bfl) throw new Error(`LoRA module "${name}" has no BFL counterpart; save it with --format peft`);
    let g = groups.get(bfl.module);
    if (!g) groups.set(bfl.module, (g = { parts: new Map(), swap: !!bfl.swap }));
    g.parts.set(bfl.part ?? -1, m);
  }
  const tensors: Record<string, TensorToWrite> = {};
  for (const [module, g] of groups) {
    const key = `diffusion_model.${module}`;
    if (g.parts.has(-1)) {
      const m = g.parts.get(-1)!;
      const B = g.swap ? swapHalves(m.B, m.out, r) : m.B;
      tensors[`${key}.lora_A.weight`] = { dtype: "F32", shape: [r, m.in], data: m.A };
      tensors[`${key}.lora_B.weight`] = { dtype: "F32", shape: [m.out, r], data: B };
      tensors[`${key}.alpha`] = { dtype: "F32", shape: [], data: Float32Array.of(info.alpha) };
      continue;
    }
    // Fused qkv: the present projections in q, k, v order; absent ones get zero rows of lora_B.
    const present = [0, 1, 2].filter((p) => g.parts.has(p));
    const first = g.parts.get(present[0])!;
    const inF = first.in, outF = first.out, R = present.length * r;
    const A = new Float32Array(R * inF);
    const B = new Float32Array(3 * outF * R);
    present.forEach((p, slot) => {
      const m = g.parts.get(p)!;
      if (m.in !== inF || m.out !== outF) throw new Error(`${module}: q, k and v LoRAs have different shapes`);
      A.set(m.A, slot * r * inF);
      for (let i = 0; i < outF; i++) for (let j = 0; j < r; j++) B[(p * outF + i) * R + slot * r + j] = m.B[i * r + j];
    });
    tensors[`${key}.lora_A.weight`] = { dtype: "F32", shape: [R, inF], data: A };
    tensors[`${key}.lora_B.weight`] = { dtype: "F32", shape: [3 * outF, R], data: B };
    tensors[`${key}.alpha`] = { dtype: "F32", shape: [], data: Float32Array.of(present.length * info.alpha) };
  }
  writeSafetensors(file, tensors);
}

function swapHalves(B: Float32Array, rows: number, cols: number): Float32Array {
  const half = (rows / 2) * cols;
  const out = new Float32Array(B.length);
  out.set(B.subarray(half), 0);
  out.set(B.subarray(0, half), half);
  return out;
}

export function saveLora(file: string, params: Map<string, Float32Array>, info: LoraInfo, format: LoraExportFormat): void {
  if (format === "comfyui") saveComfyLora(file, params, info);
  else savePeftLora(file, params, info);
}

/**
 * Write a diffusers model folder: `component` (transformer, vae or text_encoder) holds the trained
 * tensors (named as in the base's weights file, shapes from it), the rest of the
 * base folder is hard-linked (copied across devices).
 *
 * `maxSequenceLength`: the text length the component was trained at, written to the folder's
 * model_index.json (`flux2ts.max_sequence_length`) so that the folder generates at that length by
 * default: a transformer trained on L text tokens has never seen the padding past L.
 * `textPadding` (a transformer): how its captions were padded (`flux2ts.text_padding`, absent
 * for "max"), so that generating pads prompts the same way (src/pipeline/model_defaults.ts).
 */
export function saveModelFolder(outDir: string, baseDir: string, component: "transformer" | "vae" | "text_encoder", params: Map<string, Float32Array>, baseWeights: string,
                                opts: { maxSequenceLength?: number; textPadding?: TextPadding } = {}): void {
  const tmp = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    if (fs.existsSync(path.join(baseDir, "model_index.json"))) {
      for (const name of fs.readdirSync(baseDir)) {
        if (name === component) continue;
        linkTree(path.join(baseDir, name), path.join(tmp, name));
      }
    }
    const index = path.join(tmp, "model_index.json");
    if ((opts.maxSequenceLength !== undefined || opts.textPadding !== undefined) && fs.existsSync(index)) {
      const j = JSON.parse(fs.readFileSync(index, "utf8"));
      j.flux2ts = { ...(j.flux2ts ?? {}), ...(opts.maxSequenceLength !== undefined ? { max_sequence_length: opts.maxSequenceLength } : {}) };
      // "max" is the rule without a hint: written as no hint, so a max-padded folder reads as before.
      if (opts.textPadding === "bucket") j.flux2ts.text_padding = "bucket";
      else if (opts.textPadding === "max") delete j.flux2ts.text_padding;
      fs.rmSync(index); // a hard link to the base's file: replace it, never write through it
      fs.writeFileSync(index, JSON.stringify(j, null, 2) + "\n");
    }
    const dir = path.join(tmp, component);
    fs.mkdirSync(dir, { recursive: true });
    const cfg = fs.statSync(baseWeights).isDirectory() ? path.join(baseWeights, "config.json") : path.join(path.dirname(baseWeights), "config.json");
    if (fs.existsSync(cfg)) fs.copyFileSync(cfg, path.join(dir, "config.json"));
    // Every tensor of the base, the trained ones replaced (float32); the others (e.g. the VAE's
    // batch-norm statistics) are copied in their stored dtype.
    const base = WeightSet.open(baseWeights);
    const tensors: Record<string, TensorToWrite> = {};
    try {
      for (const name of params.keys()) if (!base.has(name)) throw new Error(`trained tensor "${name}" is not in the base weights ${baseWeights}`);
      for (const name of base.keys()) {
        const info = base.info(name);
        const trained = params.get(name);
        tensors[name] = trained ? { dtype: "F32", shape: info.shape, data: trained } : { dtype: info.dtype, shape: info.shape, data: base.bytes(name) };
      }
    } finally {
      base.close();
    }
    // transformers names its single weights file model.safetensors, diffusers diffusion_pytorch_model.safetensors.
    writeSafetensors(path.join(dir, component === "text_encoder" ? "model.safetensors" : "diffusion_pytorch_model.safetensors"), tensors);
    const old = `${outDir}.old-${process.pid}`;
    if (fs.existsSync(outDir)) fs.renameSync(outDir, old);
    fs.renameSync(tmp, outDir);
    fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

function linkTree(src: string, dst: string): void {
  if (fs.statSync(src).isDirectory()) {
    fs.mkdirSync(dst, { recursive: true });
    for (const n of fs.readdirSync(src)) linkTree(path.join(src, n), path.join(dst, n));
    return;
  }
  try {
    fs.linkSync(src, dst);
  } catch {
    fs.copyFileSync(src, dst);
  }
}
