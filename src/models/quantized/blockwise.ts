// Block-wise weight quantization in the layout of ONNX Runtime's `com.microsoft.MatMulNBits`.
//
// A PyTorch Linear weight W [N, K] (out, in) is cut along K into blocks of `blockSize`
// values. Each block gets a float32 scale (and, asymmetric, a zero point); a value is
// stored as an unsigned `bits`-bit code q and read back as (q - zp) * scale. The
// MatMulNBits inputs are then (ORT contrib op spec, matmul_nbits_helper.h):
//
//   B            uint8 [N, K/blockSize, blockSize*bits/8]  codes packed low-first along K
//                                                          (4-bit: byte j = q[2j] | q[2j+1] << 4)
//   scales       float [N, K/blockSize]
//   zero_points  uint8 [N, ceil((K/blockSize)*bits/8)]     packed the same way (optional;
//                                                          absent means 2^(bits-1))
//
// Symmetric quantization stores no zero points (the default 2^(bits-1) is the offset);
// asymmetric quantization (min/max per block) stores them. We only quantize weights whose
// K is a multiple of the block size (no padded blocks), so K is always blocks × blockSize.

export type Bits = 4 | 8;

export interface QuantSpec {
  bits: Bits;
  /** Values per block along K (power of two, ≥ 16); 0 with `perChannel` (one scale per whole row). */
  blockSize: number;
  /** true: scale only (zero point 2^(bits-1)); false: per-block min/max with zero points. */
  symmetric: boolean;
  /**
   * One scale per output channel, codes stored transposed for ORT's QGEMM operators
   * (DynamicQuantizeMatMul; src/models/quantized/per_channel.ts) instead of MatMulNBits blocks.
   */
  perChannel?: boolean;
  /**
   * With perChannel: the projections whose input is a SwiGLU product (heavy-tailed, the least
   * suited to one activation scale per call) use MatMulNBits int8 blocks instead, whose
   * activations are quantized per block of 128 (src/quant/quantize.ts SENSITIVE_LINEARS).
   */
  sensitiveInBlocks?: boolean;
}

/**
 * The quantized formats, by the name `--quantize` takes:
 *   int8        per-output-channel symmetric int8 on MLAS's QGEMM (DynamicQuantizeMatMul); the
 *               fastest int8 kernel ORT has on CPUs with int8 dot products (docs/performance.md)
 *   int8-block  int8 in symmetric blocks of 128 along K for MatMulNBits (the earlier int8 path)
 *   int8-mixed  int8, with the SwiGLU-output projections as int8-block
 *   int4        asymmetric blocks of 32 for MatMulNBits
 */
export type QuantKind = "int8" | "int8-block" | "int8-mixed" | "int4";
export const QUANT_KINDS: QuantKind[] = ["int8", "int8-block", "int8-mixed", "int4"];

export const INT8: QuantSpec = { bits: 8, blockSize: 0, symmetric: true, perChannel: true };
export const INT8_BLOCK: QuantSpec = { bits: 8, blockSize: 128, symmetric: true };
export const INT4: QuantSpec = { bits: 4, blockSize: 32, symmetric: false };

export function specFor(kind: QuantKind, blockSize?: number): QuantSpec {
  const base = kind === "int8" ? INT8 : kind === "int8-block" ? INT8_BLOCK : kind === "int8-mixed" ? { ...INT8, sensitiveInBlocks: true } : INT4;
  if (base.perChannel && blockSize) throw new Error(`int8 (per channel) takes no block size; use int8-block for blocks of ${blockSize}`);
  return blockSize ? { ...base, blockSize } : { ...base };
}

/** Whether a weight of input width K can be quantized with `spec` (block formats need a block size dividing K). */
export function quantizable(K: number, spec: QuantSpec): boolean {
  return spec.perChannel ? K > 0 : blockSizeFor(K, spec.blockSize) !== null;
}

export interface QuantizedMatrix {
  N: number;
  K: number;
  bits: Bits;
  blockSize: number;
  /** [N, blocks, blockSize*bits/8] */
  q: Uint8Array;
  /** [N, blocks] */
  scales: Float32Array;
  /** [N, ceil(blocks*bits/8)], or null (symmetric: 2^(bits-1)) */
  zeroPoints: Uint8Array | null;
}

/**
 * The block size to use for a K-wide weight: the requested one when it divides K, otherwise
 * the largest power of two ≥ 16 below it that does; null when none does (keep the weight in float).
 */
export function blockSizeFor(K: number, requested: number): number | null {
  for (let b = requested; b >= 16; b /= 2) if (K % b === 0) return b;
  return null;
}

export function zeroPointBytes(blocks: number, bits: Bits): number {
  return Math.ceil((blocks * bits) / 8);
}

/**
 * Quantize rows [0, N) of W (row-major [N, K] float32). `blockSize` must divide K.
 * Works row by row, so callers may pass any contiguous group of rows.
 */
export function quantizeBlockwise(w: Float32Array, N: number, K: number, spec: QuantSpec): QuantizedMatrix {
  const { bits, blockSize: bs, symmetric } = spec;
  if (w.length !== N * K) throw new Error(`quantize: ${w.length} values for [${N}, ${K}]`);
  if (K % bs !== 0 || bs < 16 || (bs & (bs - 1)) !== 0) throw new Error(`quantize: block size ${bs} must be a power of two ≥ 16 dividing K = ${K}`);
  const blocks = K / bs;
  const blob = (bs * bits) / 8;
  const q = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const zpb = zeroPointBytes(blocks, bits);
  const zeroPoints = symmetric ? null : new Uint8Array(N * zpb);
  const levels = (1 << bits) - 1; // 255 / 15
  const mid = 1 << (bits - 1); // 128 / 8
  const qmax = mid - 1; // 127 / 7
  const codes = new Uint8Array(bs);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const base = n * K + b * bs;
      let zp: number;
      let scale: number;
      if (symmetric) {
        let amax = 0;
        for (let i = 0; i < bs; i++) {
          const a = Math.abs(w[base + i]);
          if (a > amax) amax = a;
        }
        scale = Math.fround(amax / qmax);
        zp = mid;
        const inv = scale > 0 ? 1 / scale : 0;
        for (let i = 0; i < bs; i++) {
          let c = Math.round(w[base + i] * inv);
          if (c > qmax) c = qmax;
          else if (c < -mid) c = -mid;
          codes[i] = c + mid;
        }
      } else {
        let lo = 0, hi = 0; // the range always contains 0, so 0 is exactly representable
        for (let i = 0; i < bs; i++) {
          const v = w[base + i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        scale = Math.fround((hi - lo) / levels);
        const inv = scale > 0 ? 1 / scale : 0;
        zp = scale > 0 ? Math.min(levels, Math.max(0, Math.round(-lo * inv))) : mid;
        for (let i = 0; i < bs; i++) {
          let c = Math.round(w[base + i] * inv) + zp;
          if (c > levels) c = levels;
          else if (c < 0) c = 0;
          codes[i] = c;
        }
      }
      scales[n * blocks + b] = scale;
      const out = (n * blocks + b) * blob;
      if (bits === 8) {
        q.set(codes, out);
      } else {
        for (let j = 0; j < blob; j++) q[out + j] = codes[2 * j] | (codes[2 * j + 1] << 4);
      }
      if (zeroPoints) {
        if (bits === 8) zeroPoints[n * zpb + b] = zp;
        else zeroPoints[n * zpb + (b >> 1)] |= (b & 1) ? zp << 4 : zp;
      }
    }
  }
  return { N, K, bits, blockSize: bs, q, scales, zeroPoints };
}

/** (q - zp) * scale for every value: the float32 matrix [N, K] that MatMulNBits multiplies by. */
export function dequantizeBlockwise(m: QuantizedMatrix): Float32Array {
  const { N, K, bits, blockSize: bs, q, scales, zeroPoints } = m;
  const blocks = K / bs;
  const blob = (bs * bits) / 8;
  const zpb = zeroPointBytes(blocks, bits);
  const mid = 1 << (bits - 1);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const s = scales[n * blocks + b];
      let zp = mid;
      if (zeroPoints) {
        const byte = zeroPoints[n * zpb + (bits === 8 ? b : b >> 1)];
        zp = bits === 8 ? byte : (b & 1) ? byte >> 4 : byte & 15;
      }
      const src = (n * blocks + b) * blob;
      const dst = n * K + b * bs;
      if (bits === 8) {
        for (let i = 0; i < bs; i++) out[dst + i] = Math.fround((q[src + i] - zp) * s);
      } else {
        for (let j = 0; j < blob; j++) {
          const byte = q[src + j];
          out[dst + 2 * j] = Math.fround(((byte & 15) - zp) * s);
          out[dst + 2 * j + 1] = Math.fround(((byte >> 4) - zp) * s);
        }
      }
    }
  }
  return out;
}

/** Bytes a quantized [N, K] weight occupies (codes + scales + zero points). */
export function quantizedBytes(N: number, K: number, spec: QuantSpec): number {
  if (spec.perChannel) return N * K + 4 * N;
  const blocks = K / spec.blockSize;
  return N * blocks * ((spec.blockSize * spec.bits) / 8 + 4) + (spec.symmetric ? 0 : N * zeroPointBytes(blocks, spec.bits));
}

// ---------------------------------------------------------------------------
// Drift statistics

export interface Drift {
  cosine: number;
  maxAbs: number;
  /** max |a - b| / max |b| */
  relMax: number;
  /** ‖a − b‖ / ‖b‖ */
  relL2: number;
}

/** How far `a` is from the reference `ref`. */
export function drift(a: ArrayLike<number>, ref: ArrayLike<number>): Drift {
  if (a.length !== ref.length) throw new Error(`drift: ${a.length} vs ${ref.length} values`);
  let dot = 0, na = 0, nr = 0, maxAbs = 0, maxRef = 0, err = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = ref[i];
    dot += x * y;
    na += x * x;
    nr += y * y;
    const d = Math.abs(x - y);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d;
    if (Math.abs(y) > maxRef) maxRef = Math.abs(y);
    err += d * d;
  }
  return {
    cosine: na > 0 && nr > 0 ? dot / Math.sqrt(na * nr) : (na === nr ? 1 : 0),
    maxAbs, relMax: maxRef > 0 ? maxAbs / maxRef : maxAbs, relL2: nr > 0 ? Math.sqrt(err / nr) : Math.sqrt(err),
  };
}
