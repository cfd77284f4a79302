// Cheap RGB previews of the latents during denoising.
//
// Decoding every step with the VAE would cost as much as a denoising step, so
// we use a linear probe instead: once per VAE, decode a small random latent,
// average-pool the image back to the latent grid and fit RGB ≈ W·z + b by
// least squares over the pixels. The probe then maps the current x0
// prediction (x − σ·v) to a low-resolution RGB preview in microseconds.
// (ComfyUI ships hand-fitted "latent_rgb_factors" tables for the same purpose;
// fitting from the VAE itself works for any checkpoint, tiny test ones included.)

import type { HostTensor } from "../backend/backend.js";
import type { Flux2Vae } from "../models/vae.js";
import { randn } from "../util/random.js";

export interface PreviewProbe {
  channels: number;
  /** (channels + 1) × 3: weights then bias, per RGB channel. */
  coef: Float64Array;
}

export interface PreviewImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** Fit the probe on a 16×16-latent decode. */
export async function fitPreviewProbe(vae: Flux2Vae): Promise<PreviewProbe> {
  const C = vae.config.latent_channels;
  const f = vae.scaleFactor;
  const side = 16;
  const z = randn(20251124, C * side * side);
  const img = await vae.decode({ data: z, shape: [1, C, side, side] });
  const W = side * f;
  const pixels = side * side;
  const k = C + 1;
  // Normal equations (XᵀX) β = Xᵀy for the three colour channels at once.
  const xtx = new Float64Array(k * k);
  const xty = new Float64Array(k * 3);
  const x = new Float64Array(k);
  const rgbData = img.data as Float32Array;
  for (let p = 0; p < pixels; p++) {
    const py = Math.floor(p / side), px = p % side;
    for (let c = 0; c < C; c++) x[c] = z[c * pixels + p];
    x[C] = 1;
    for (let ch = 0; ch < 3; ch++) {
      let sum = 0;
      for (let dy = 0; dy < f; dy++)
        for (let dx = 0; dx < f; dx++) sum += rgbData[ch * W * W + (py * f + dy) * W + px * f + dx];
      const y = sum / (f * f);
      for (let i = 0; i < k; i++) xty[i * 3 + ch] += x[i] * y;
    }
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) xtx[i * k + j] += x[i] * x[j];
  }
  for (let i = 0; i < k; i++) xtx[i * k + i] += 1e-3; // ridge: keeps the solve stable
  return { channels: C, coef: solve(xtx, xty, k, 3) };
}

/** Gaussian elimination with partial pivoting for a small k×k system with m right-hand sides. */
function solve(a: Float64Array, b: Float64Array, k: number, m: number): Float64Array {
  a = a.slice();
  b = b.slice();
  for (let col = 0; col < k; col++) {
    let piv = col;
    for (let r = col + 1; r < k; r++) if (Math.abs(a[r * k + col]) > Math.abs(a[piv * k + col])) piv = r;
    for (let j = 0; j < k; j++) [a[col * k + j], a[piv * k + j]] = [a[piv * k + j], a[col * k + j]];
    for (let j = 0; j < m; j++) [b[col * m + j], b[piv * m + j]] = [b[piv * m + j], b[col * m + j]];
    for (let r = 0; r < k; r++) {
      if (r === col) continue;
      const fct = a[r * k + col] / a[col * k + col];
      for (let j = 0; j < k; j++) a[r * k + j] -= fct * a[col * k + j];
      for (let j = 0; j < m; j++) b[r * m + j] -= fct * b[col * m + j];
    }
  }
  for (let r = 0; r < k; r++) for (let j = 0; j < m; j++) b[r * m + j] /= a[r * k + r];
  return b;
}

/**
 * Preview of batch element 0 from VAE-space latents (1, C, H, W) (already
 * de-normalised and unpatchified): one RGB pixel per latent cell.
 */
export function previewFromLatents(probe: PreviewProbe, latents: HostTensor): PreviewImage {
  const [, C, H, W] = latents.shape;
  const z = latents.data as Float32Array;
  const n = H * W;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    for (let ch = 0; ch < 3; ch++) {
      let v = probe.coef[C * 3 + ch];
      for (let c = 0; c < C; c++) v += probe.coef[c * 3 + ch] * z[c * n + p];
      rgb[p * 3 + ch] = Math.max(0, Math.min(255, Math.round((v * 0.5 + 0.5) * 255)));
    }
  }
  return { rgb, width: W, height: H };
}
