// float32 → float8 e4m3fn encoding (the dtype of BFL's `*-fp8.safetensors` Linear weights,
// spec §7.6), used to write FP8 files (tests, `flux2 quantize --bits fp8`-style experiments).
// Decoding lives in src/io/safetensors.ts (f8e4m3ToF32).

import { f8e4m3ToF32 } from "../io/safetensors.js";

/** Largest finite e4m3fn value. */
export const F8E4M3_MAX = 448;

// The 127 non-negative finite codes in increasing order (code i has value POS[i]).
const POS = Float64Array.from({ length: 127 }, (_, i) => f8e4m3ToF32(i));

/** Round to the nearest e4m3fn code (ties to even code), saturating at ±448; NaN → 0x7f. */
export function f32ToF8e4m3(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= F8E4M3_MAX) return sign | 126;
  let lo = 0, hi = 126; // POS[lo] <= a < POS[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POS[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - POS[lo], dh = POS[hi] - a;
  const code = dl < dh ? lo : dh < dl ? hi : (lo % 2 === 0 ? lo : hi);
  return sign | code;
}

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
