// Scalar codecs between float32 and the narrow float formats checkpoints store: bfloat16,
// float16 and float8 (e4m3fn, e5m2). Decoding is exact; encoding rounds to nearest, ties to
// even. Hand-written because they are a few lines each and sit on every weight load (no
// package offers bf16/fp8 on plain typed arrays without pulling in a tensor library).

const f32scratch = new Float32Array(1);
const u32scratch = new Uint32Array(f32scratch.buffer);

// ---------------------------------------------------------------------------
// bfloat16: the upper half of a float32

/** Round float32 to bfloat16 (round to nearest even), returned as the upper 16 bits; NaN → 0x7fc0. */
export function f32ToBf16Bits(x: number): number {
  f32scratch[0] = x;
  const u = u32scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32(h: number): number {
  u32scratch[0] = (h & 0xffff) << 16;
  return f32scratch[0];
}

/**
 * A whole float32 array → bfloat16 bits, round to nearest even, for writers of large
 * random or trained weights. Finite inputs only (no NaN check per value: that is f32ToBf16Bits).
 */
export function f32ArrayToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

// ---------------------------------------------------------------------------
// float16 (IEEE binary16)

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Round to the nearest float16 (ties to even); overflow → ±Infinity, NaN → 0x7e00. */
export function f32ToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(Math.fround(x));
  if (a === Infinity) return sign | 0x7c00;
  // Subnormals are multiples of 2^-24; rounding up to 1024 of them gives the smallest normal's bits.
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24);
  let exp = Math.floor(Math.log2(a));
  if (2 ** exp > a) exp--; // log2 may round up just below a power of two
  else if (2 ** (exp + 1) <= a) exp++;
  let q = roundHalfEven(a * 2 ** (10 - exp)); // 1024..2048: the significand in units of the last place
  let biased = exp + 15;
  if (q === 2048) {
    q = 1024;
    biased++;
  }
  if (biased >= 31) return sign | 0x7c00;
  return sign | (biased << 10) | (q - 1024);
}

function roundHalfEven(v: number): number {
  const fl = Math.floor(v);
  const d = v - fl;
  return d > 0.5 || (d === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
}

// ---------------------------------------------------------------------------
// float8 e4m3fn (BFL's `*-fp8.safetensors` Linear weights) and e5m2

/** float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; no infinities, 0x7f/0xff are NaN. */
export function f8e4m3ToF32(b: number): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> 3) & 0xf;
  const m = b & 0x7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** -9;
  return s * (1 + m / 8) * 2 ** (e - 7);
}

/** float8 e5m2: 1 sign, 5 exponent (bias 15), 2 mantissa (IEEE-like: the upper byte of a float16). */
export function f8e5m2ToF32(b: number): number {
  return f16ToF32(b << 8);
}

/** Largest finite e4m3fn value. */
export const F8E4M3_MAX = 448;

// The 127 non-negative finite codes in increasing order (code i has value POS[i]).
const F8E4M3_POS = Float64Array.from({ length: 127 }, (_, i) => f8e4m3ToF32(i));

/** Round to the nearest e4m3fn code (ties to even code), saturating at ±448; NaN → 0x7f. */
export function f32ToF8e4m3(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= F8E4M3_MAX) return sign | 126;
  let lo = 0, hi = 126; // POS[lo] <= a < POS[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (F8E4M3_POS[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - F8E4M3_POS[lo], dh = F8E4M3_POS[hi] - a;
  const code = dl < dh ? lo : dh < dl ? hi : (lo % 2 === 0 ? lo : hi);
  return sign | code;
}
