// A tiny random ViTForImageClassification checkpoint in the Falconsai layout
// (config.json, preprocessor_config.json, model.safetensors), for tests.

import * as fs from "node:fs";
import * as path from "node:path";
import { writeSafetensors } from "../../src/io/safetensors.js";

export const D = 16, L = 2, HEADS = 2, FF = 24, S = 32, P = 8, LABELS = ["normal", "nsfw"];
export const N = (S / P) ** 2;

export function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
}

/** A tiny random ViTForImageClassification folder; returns its tensors too. */
export function writeTinyVit(dir: string, seed = 1, classifierBias?: [number, number]): Record<string, Float32Array> {
  const r = rng(seed);
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  const put = (name: string, shape: number[], scale = 0.4, offset = 0) => {
    t[name] = { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + scale * r()) };
  };
  put("vit.embeddings.cls_token", [1, 1, D]);
  put("vit.embeddings.position_embeddings", [1, N + 1, D]);
  put("vit.embeddings.patch_embeddings.projection.weight", [D, 3, P, P], 0.1);
  put("vit.embeddings.patch_embeddings.projection.bias", [D]);
  for (let i = 0; i < L; i++) {
    const p = `vit.encoder.layer.${i}`;
    for (const n of ["query", "key", "value"]) {
      put(`${p}.attention.attention.${n}.weight`, [D, D]);
      put(`${p}.attention.attention.${n}.bias`, [D]);
    }
    put(`${p}.attention.output.dense.weight`, [D, D]);
    put(`${p}.attention.output.dense.bias`, [D]);
    put(`${p}.intermediate.dense.weight`, [FF, D]);
    put(`${p}.intermediate.dense.bias`, [FF]);
    put(`${p}.output.dense.weight`, [D, FF]);
    put(`${p}.output.dense.bias`, [D]);
    for (const n of ["layernorm_before", "layernorm_after"]) {
      put(`${p}.${n}.weight`, [D], 0.2, 1);
      put(`${p}.${n}.bias`, [D], 0.2);
    }
  }
  put("vit.layernorm.weight", [D], 0.2, 1);
  put("vit.layernorm.bias", [D], 0.2);
  put("classifier.weight", [LABELS.length, D], 1);
  put("classifier.bias", [LABELS.length]);
  // A fixed verdict for moderation tests: zero weights, so the logits are the bias whatever the image.
  if (classifierBias) {
    t["classifier.weight"].data.fill(0);
    t["classifier.bias"].data.set(classifierBias);
  }
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, "model.safetensors"), Object.fromEntries(Object.entries(t).map(([k, v]) => [k, { dtype: "F32", shape: v.shape, data: v.data }])));
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    architectures: ["ViTForImageClassification"], model_type: "vit", hidden_size: D, num_hidden_layers: L, num_attention_heads: HEADS,
    intermediate_size: FF, image_size: S, patch_size: P, num_channels: 3, hidden_act: "gelu", layer_norm_eps: 1e-12, qkv_bias: true,
    id2label: { 0: "normal", 1: "nsfw" }, label2id: { normal: 0, nsfw: 1 },
  }));
  fs.writeFileSync(path.join(dir, "preprocessor_config.json"), JSON.stringify({ image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], size: { height: S, width: S } }));
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.data]));
}

