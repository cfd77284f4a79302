// After VAE training: the latent batch-norm statistics over the data.
//
// FLUX.2's transformer sees latents normalized by the VAE's `bn` buffers
// (running_mean / running_var over the 2×2-patchified channels). Training the
// autoencoder changes the latent space, so the buffers of the base no longer
// describe it: they are computed over the training images with the trained
// encoder (the distribution's mode, as the pipelines use it) and written into
// the saved VAE file. Variance is torch BatchNorm's running estimate: unbiased.

import * as path from "node:path";
import type { Backend } from "../backend/backend.js";
import { readAll, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { Flux2Vae } from "../models/vae.js";
import { patchify } from "../pipeline/latents.js";
import { tensor } from "../util/tensor.js";

/** Per-channel mean and unbiased variance of the patchified latents of `pixels` ((1, 3, H, W) each). */
export async function latentStats(vae: Flux2Vae, pixels: { data: Float32Array; width: number; height: number }[]): Promise<{ mean: Float64Array; variance: Float64Array; count: number }> {
  let sum: Float64Array | null = null, sq: Float64Array | null = null;
  let count = 0;
  for (const p of pixels) {
    const enc = await vae.encode({ data: p.data, shape: [1, 3, p.height, p.width] });
    const x = patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape));
    const [, C, h, w] = x.shape;
    sum ??= new Float64Array(C);
    sq ??= new Float64Array(C);
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < h * w; i++) {
        const v = x.data[c * h * w + i];
        sum[c] += v;
        sq[c] += v * v;
      }
    }
    count += h * w;
  }
  if (!sum || !sq || count < 2) throw new Error("latent statistics need at least two latent positions");
  const mean = sum.map((s) => s / count);
  const variance = sq.map((s, c) => (s - count * mean[c] * mean[c]) / (count - 1));
  return { mean, variance, count };
}

/** Replace bn.running_mean / bn.running_var of a saved diffusers VAE folder with the data's statistics. */
export async function writeLatentStats(backend: Backend, vaeDir: string, pixels: { data: Float32Array; width: number; height: number }[]): Promise<{ count: number }> {
  const file = path.join(vaeDir, "diffusion_pytorch_model.safetensors");
  const vae = await Flux2Vae.fromFiles(backend, file, path.join(vaeDir, "config.json"));
  let stats;
  try {
    stats = await latentStats(vae, pixels);
  } finally {
    await vae.release();
  }
  const all = readAll(file);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, t] of all) tensors[name] = { dtype: t.dtype, shape: t.shape, data: t.data };
  for (const [name, v] of [["bn.running_mean", stats.mean], ["bn.running_var", stats.variance]] as const) {
    const t = all.get(name);
    if (!t) throw new Error(`${file} has no ${name}; not a FLUX.2 VAE`);
    if (t.data.length !== v.length) throw new Error(`${file}: ${name} has ${t.data.length} channels, the latents ${v.length}`);
    tensors[name] = { dtype: "F32", shape: t.shape, data: Float32Array.from(v) };
  }
  writeSafetensors(file, tensors);
  return { count: stats.count };
}
