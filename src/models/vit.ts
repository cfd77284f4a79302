// A ViT image classifier (transformers `ViTForImageClassification`), for the
// moderation image check: BFL's reference code runs Falconsai/nsfw_image_detection
// (a ViT-Base/16 fine-tuned to two labels, "normal" and "nsfw"). The user supplies
// the checkpoint folder (config.json + model.safetensors, as published); nothing is
// downloaded. Built as an ONNX graph like every other model here.
//
// Forward (transformers modeling_vit.py, pre-norm encoder):
//   patches = Conv(k = s = patch)(pixels) → (B, N, D); x = [cls; patches] + pos
//   per layer: x += Wo·MHA(LN_before(x)); x += W2·gelu(W1·LN_after(x))
//   logits = classifier(LN(x)[:, 0])
// Preprocessing (ViTImageProcessor): resize to image_size × image_size, /255,
// (x − 0.5) / 0.5 (image_mean / image_std from preprocessor_config.json when present).

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import sharp from "sharp";
import type { Backend, Session } from "../backend/backend.js";
import { Graph, Value, fileSource } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";

export interface VitConfig {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  image_size: number;
  patch_size: number;
  num_channels: number;
  layer_norm_eps: number;
  qkv_bias: boolean;
  /** Class index → label, e.g. {0: "normal", 1: "nsfw"}. */
  labels: string[];
  image_mean: [number, number, number];
  image_std: [number, number, number];
}

/** transformers ViTConfig defaults (google/vit-base-patch16-224). */
const VIT_DEFAULTS = {
  hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, image_size: 224,
  patch_size: 16, num_channels: 3, layer_norm_eps: 1e-12, qkv_bias: true,
};

function readJson(file: string): Record<string, any> {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as Error).message})`);
  }
}

/** Read config.json (and preprocessor_config.json if present) of a ViTForImageClassification folder. */
export function readVitConfig(dir: string): VitConfig {
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(file)) throw new Error(`${dir}: no config.json; give the folder of a ViTForImageClassification checkpoint (e.g. Falconsai/nsfw_image_detection)`);
  const raw = readJson(file);
  if (raw.model_type !== undefined && raw.model_type !== "vit") throw new Error(`${file}: model_type is "${raw.model_type}", expected "vit"`);
  if (raw.hidden_act !== undefined && raw.hidden_act !== "gelu") throw new Error(`${file}: hidden_act "${raw.hidden_act}" is not supported (ViT uses gelu)`);
  const c: Record<string, any> = { ...VIT_DEFAULTS };
  for (const k of Object.keys(VIT_DEFAULTS)) if (raw[k] !== undefined) c[k] = raw[k];
  for (const k of ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size", "num_channels"]) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new Error(`${file}: ${k} must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (c.num_channels !== 3) throw new Error(`${file}: num_channels ${c.num_channels} is not supported (RGB only)`);
  if (c.hidden_size % c.num_attention_heads !== 0) throw new Error(`${file}: hidden_size is not a multiple of num_attention_heads`);
  if (c.image_size % c.patch_size !== 0) throw new Error(`${file}: image_size is not a multiple of patch_size`);
  const id2label = raw.id2label as Record<string, string> | undefined;
  if (!id2label || typeof id2label !== "object") throw new Error(`${file}: no id2label; an image classifier names its classes there`);
  const labels: string[] = [];
  for (const [k, v] of Object.entries(id2label)) labels[Number(k)] = String(v);
  if (labels.some((l) => l === undefined) || labels.length === 0) throw new Error(`${file}: id2label must number its classes 0..n-1`);
  let mean: [number, number, number] = [0.5, 0.5, 0.5], std: [number, number, number] = [0.5, 0.5, 0.5];
  const pre = path.join(dir, "preprocessor_config.json");
  if (fs.existsSync(pre)) {
    const p = readJson(pre);
    if (Array.isArray(p.image_mean) && p.image_mean.length === 3) mean = p.image_mean as [number, number, number];
    if (Array.isArray(p.image_std) && p.image_std.length === 3) std = p.image_std as [number, number, number];
  }
  return { ...(c as typeof VIT_DEFAULTS), labels, image_mean: mean, image_std: std };
}

/** The graph: pixel_values (1, 3, S, S) float32 → logits (1, labels). */
export function buildVitGraph(c: VitConfig, w: WeightSet): Graph {
  const g = new Graph("vit_classifier");
  const weight = (name: string): Value => {
    if (!w.has(name)) throw new Error(`${w.source}: tensor "${name}" is missing (is this a ViTForImageClassification checkpoint?)`);
    return g.weight(name, fileSource(w.info(name)));
  };
  const linear = (x: Value, p: string, bias = true) => g.linear(x, weight(`${p}.weight`), bias ? weight(`${p}.bias`) : null);
  const layerNorm = (x: Value, p: string) => g.layerNorm(x, c.hidden_size, c.layer_norm_eps, weight(`${p}.weight`), weight(`${p}.bias`));
  const D = c.hidden_size, S = c.image_size, P = c.patch_size, N = (S / P) ** 2, H = c.num_attention_heads;

  const pixels = g.input("pixel_values", "F32", [1, 3, S, S]);
  const conv = g.op("Conv", [pixels, weight("vit.embeddings.patch_embeddings.projection.weight"), weight("vit.embeddings.patch_embeddings.projection.bias")],
    { kernel_shape: [P, P], strides: [P, P] })[0];
  const patches = g.transpose(g.reshape(conv, [1, D, N]), [0, 2, 1]);
  let x = g.add(g.concat([weight("vit.embeddings.cls_token"), patches], 1), weight("vit.embeddings.position_embeddings"));

  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `vit.encoder.layer.${i}`;
    const h = layerNorm(x, `${p}.layernorm_before`);
    const att = `${p}.attention.attention`;
    const a = g.op("MultiHeadAttention", [linear(h, `${att}.query`, c.qkv_bias), linear(h, `${att}.key`, c.qkv_bias), linear(h, `${att}.value`, c.qkv_bias)],
      { num_heads: H, scale: { float: 1 / Math.sqrt(D / H) } }, { domain: "com.microsoft" })[0];
    x = g.add(x, linear(a, `${p}.attention.output.dense`));
    x = g.add(x, linear(gelu(g, linear(layerNorm(x, `${p}.layernorm_after`), `${p}.intermediate.dense`)), `${p}.output.dense`));
  }
  const cls = g.slice(layerNorm(x, "vit.layernorm"), 1, 0, 1);
  g.output(g.reshape(linear(cls, "classifier"), [1, c.labels.length]), "logits", "F32", [1, c.labels.length]);
  return g;
}

/** Exact (erf) GELU, transformers' "gelu": x·½·(1 + erf(x/√2)). */
function gelu(g: Graph, x: Value): Value {
  const erf = g.op("Erf", [g.mul(x, g.scalar(Math.SQRT1_2))])[0];
  return g.mul(g.mul(x, g.scalar(0.5)), g.add(erf, g.scalar(1)));
}

/**
 * Packed RGB → pixel_values (1, 3, S, S). The resize is sharp's linear (triangle)
 * filter; transformers uses Pillow's bilinear, which differs in the last bits, not
 * in what the classifier sees.
 */
export async function vitPixels(rgb: Uint8Array, width: number, height: number, c: VitConfig): Promise<Float32Array> {
  const S = c.image_size;
  const resized = await sharp(rgb, { raw: { width, height, channels: 3 } }).resize(S, S, { fit: "fill", kernel: "linear" }).raw().toBuffer();
  const out = new Float32Array(3 * S * S);
  for (let p = 0; p < S * S; p++) {
    for (let ch = 0; ch < 3; ch++) out[ch * S * S + p] = (resized[3 * p + ch] / 255 - c.image_mean[ch]) / c.image_std[ch];
  }
  return out;
}

/** A loaded classifier: probabilities per label for an image. */
export class VitClassifier {
  private constructor(readonly config: VitConfig, private session: Session, private weights: WeightSet) {}

  static async open(dir: string, backend: Backend): Promise<VitClassifier> {
    const config = readVitConfig(dir);
    const weights = WeightSet.open(dir);
    const session = await backend.createSession(buildVitGraph(config, weights));
    return new VitClassifier(config, session, weights);
  }

  /** Softmax of the logits for already-prepared pixel_values. */
  async probabilities(pixels: Float32Array): Promise<Record<string, number>> {
    const S = this.config.image_size;
    const out = await this.session.run({ pixel_values: { data: pixels, shape: [1, 3, S, S] } });
    const logits = Array.from(out.logits.data as Float32Array);
    const max = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return Object.fromEntries(this.config.labels.map((l, i) => [l, e[i] / sum]));
  }

  async classify(rgb: Uint8Array, width: number, height: number): Promise<Record<string, number>> {
    return this.probabilities(await vitPixels(rgb, width, height, this.config));
  }

  async release(): Promise<void> {
    await this.session.release();
    this.weights.close();
  }
}
