// FP8 with a per-tensor scale, as BFL's `*-fp8.safetensors` files store Linear weights, used to
// write FP8 files (tests, `flux2 quantize --bits fp8`-style experiments). The e4m3fn codec
// itself (both ways) is in src/io/dtype.ts.

import { F8E4M3_MAX, f32ToF8e4m3 } from "../io/dtype.js";

/**
 * FP8 with one float32 scale for the whole tensor, as BFL's FP8 files store Linear weights:
 * W ≈ fp8(W / s) · s with s = max|W| / 448.
 */
export function toFp8PerTensor(w: Float32Array): { bytes: Uint8Array; scale: number } {
  let amax = 0;
  for (let i = 0; i < w.length; i++) amax = Math.max(amax, Math.abs(w[i]));
  const scale = Math.fround(amax > 0 ? amax / F8E4M3_MAX : 1);
  const bytes = new Uint8Array(w.length);
  for (let i = 0; i < w.length; i++) bytes[i] = f32ToF8e4m3(w[i] / scale);
  return { bytes, scale };
}
