// Seeded standard-normal noise that is identical on every machine.
//
// torch's generator cannot be reproduced cheaply, so parity tests inject the
// noise tensor (docs/FLUX2-spec.md §6.1 step 3); this generator only has to be stable: the same
// seed gives the same image on any OS, CPU and Node version.
//
// Algorithm (enough to re-implement it bit for bit):
//
// 1. Seed. The seed (an integer; a number must be a safe integer) is reduced to
//    an unsigned 64-bit value S (S = seed mod 2^64, so −1 becomes 2^64 − 1).
// 2. State. Two SplitMix64 outputs seed xoshiro128**: with z starting at S, each
//    output is   z += 0x9E3779B97F4A7C15;  r = z;
//                r = (r ^ (r >> 30)) * 0xBF58476D1CE4E5B9;
//                r = (r ^ (r >> 27)) * 0x94D049BB133111EB;
//                r = r ^ (r >> 31)                   (all mod 2^64)
//    The state words are s0 = low32(r1), s1 = high32(r1), s2 = low32(r2),
//    s3 = high32(r2). (SplitMix64 is a bijection of z, so the state is never 0.)
// 3. xoshiro128** (Blackman & Vigna), 32-bit words, all ops mod 2^32:
//        result = rotl(s1 * 5, 7) * 9
//        t = s1 << 9;  s2 ^= s0;  s3 ^= s1;  s1 ^= s2;  s0 ^= s3;  s2 ^= t;
//        s3 = rotl(s3, 11)
// 4. Uniform double in [0, 1): u = ((a >>> 5) · 2^26 + (b >>> 6)) / 2^53 with a,
//    b two consecutive xoshiro outputs (a first), exactly as in the reference
//    xoshiro/Mersenne-Twister "genrand_res53".
// 5. Box–Muller, one pair per two uniforms: u1 = 1 − U1 ∈ (0, 1], u2 = U2;
//    r = sqrt(−2·ln u1), θ = 2π·u2 (2π = the double 6.283185307179586);
//    z0 = r·cos θ, z1 = r·sin θ, all in float64; output z0 then z1, each
//    rounded to float32 (round to nearest even). For an odd count the final z1
//    is dropped, so randn(seed, n) is always a prefix of randn(seed, n + k).
//
// Portability: besides IEEE +, −, ×, ÷ and sqrt (correctly rounded everywhere)
// only Math.log, Math.cos and Math.sin are used. V8 does not call the platform's
// libm for these: it ships its own port of fdlibm (src/base/ieee754.cc), so the
// results do not depend on the OS or CPU. Should a future V8 swap in a
// different bundled sin/cos, results could move by one float64 ulp, which
// survives the float32 rounding only with probability ~2^-29 per value.

const TWO_PI = 6.283185307179586;
const MASK64 = (1n << 64n) - 1n;

/** xoshiro128** seeded through SplitMix64 (see the file header). */
export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number | bigint) {
    let z = toU64(seed);
    const next64 = (): bigint => {
      z = (z + 0x9e3779b97f4a7c15n) & MASK64;
      let r = z;
      r = ((r ^ (r >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
      r = ((r ^ (r >> 27n)) * 0x94d049bb133111ebn) & MASK64;
      return r ^ (r >> 31n);
    };
    const r1 = next64(), r2 = next64();
    this.s0 = Number(r1 & 0xffffffffn) | 0;
    this.s1 = Number(r1 >> 32n) | 0;
    this.s2 = Number(r2 & 0xffffffffn) | 0;
    this.s3 = Number(r2 >> 32n) | 0;
  }

  /** Next 32-bit output as an unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const a = this.nextU32() >>> 5, b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}

/** `count` standard-normal float32 values from `seed` (see the file header for the exact algorithm). */
export function randn(seed: number | bigint, count: number): Float32Array {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`randn: count must be a non-negative integer, got ${count}`);
  const rng = new Xoshiro128(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const u1 = 1 - rng.nextDouble();
    const u2 = rng.nextDouble();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = TWO_PI * u2;
    out[i] = r * Math.cos(theta);
    if (i + 1 < count) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function toU64(seed: number | bigint): bigint {
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
    throw new RangeError(`seed must be an integer (at most 2^53 in magnitude as a number; use a bigint beyond), got ${seed}`);
  }
  return BigInt.asUintN(64, BigInt(seed));
}
