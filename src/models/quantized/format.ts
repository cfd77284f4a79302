// Quantized weights on disk, and the graph hook that multiplies by them.
//
// File format (our own, documented in docs/performance.md): a quantized Linear weight named
// `NAME` (e.g. "transformer_blocks.0.attn.to_q.weight") is stored as
//
//   NAME.qweight      U8  [N, K/blockSize, blockSize*bits/8]   MatMulNBits "B"
//   NAME.scales       F32 [N, K/blockSize]
//   NAME.zero_points  U8  [N, ceil(K/blockSize*bits/8)]         asymmetric only
//
// and every file of the set carries the metadata entry
// `flux2_quantization = {"format":"MatMulNBits","bits":8|4,"version":1}`. The block size of each
// weight follows from its shapes (blob bytes · 8 / bits), so weights may use different ones.
// Per-channel int8 for ORT's QGEMM operators (`--quantize int8`; src/models/quantized/per_channel.ts) is
//
//   NAME.qweight_t    I8  [K, N]   DynamicQuantizeMatMul "B" (transposed: that op has no transB)
//   NAME.scales       F32 [N]      one scale per output channel
//
// with `flux2_quantization = {"format":"QGEMM","bits":8,"version":1}`.
// Everything else in the file (norm scales, embeddings, the layers we keep in float) is stored as
// in the original checkpoint. Such a set is what `flux2 quantize` writes, and what
// `--quantize int8|int4` writes once into $FLUX2_CACHE/quant/ when quantizing at load.

import { WeightSet, readTensorBytes, type TensorInfo } from "../../io/safetensors.js";
import { fileSource, type Graph, type Value, type WeightSource } from "../../onnx/graph.js";
import { dequantizeBlockwise, type Bits } from "./blockwise.js";
import { dequantizePerChannel } from "./per_channel.js";
import { integerGemmExact } from "../../backend/cpu.js";

export const QUANT_METADATA_KEY = "flux2_quantization";

export type QuantFormat = "MatMulNBits" | "QGEMM";

export interface QuantMetadata {
  format: QuantFormat;
  bits: Bits;
  version: 1;
  /** Informational: what was requested when the file was written. */
  block_size?: number;
  symmetric?: boolean;
  source?: string;
}

export function quantMetadata(bits: Bits, blockSize: number, symmetric: boolean, source?: string, perChannel = false): Record<string, string> {
  const m: QuantMetadata = perChannel
    ? { format: "QGEMM", bits, version: 1, symmetric: true, ...(source ? { source } : {}) }
    : { format: "MatMulNBits", bits, version: 1, block_size: blockSize, symmetric, ...(source ? { source } : {}) };
  return { [QUANT_METADATA_KEY]: JSON.stringify(m) };
}

export interface QuantizedTensor {
  name: string;
  N: number;
  K: number;
  bits: Bits;
  blockSize: number;
  /** MatMulNBits codes [N, blocks, bytes], or QGEMM codes [K, N] (blockSize 0) */
  q: TensorInfo;
  scales: TensorInfo;
  zeroPoints: TensorInfo | null;
}

/** MatMulNBits accuracy level: 4 = int8 activations (fast, the default), 0 = float32 math. */
export type AccuracyLevel = 0 | 1 | 4;

/**
 * The quantized weights of a WeightSet, by original weight name. Emits MatMulNBits nodes whose
 * inputs are byte ranges of the set's files (memory-mapped by ORT like any other weight).
 */
export class QuantizedLinears {
  private cache = new Map<string, QuantizedTensor | null>();

  /** Weights whose names match `names` are taken from `linears` instead (int8-mixed). */
  delegate: { linears: QuantizedLinears; names: RegExp } | null = null;

  constructor(readonly set: WeightSet, readonly bits: Bits, public accuracyLevel: AccuracyLevel = 4, readonly format: QuantFormat = "MatMulNBits") {}

  private owner(name: string): QuantizedLinears | null {
    return this.delegate && this.delegate.names.test(name) ? this.delegate.linears : null;
  }

  /** The quantized linears of `set` when its metadata says it holds any, else null. */
  static detect(set: WeightSet, accuracyLevel: AccuracyLevel = 4): QuantizedLinears | null {
    const raw = set.metadata()[QUANT_METADATA_KEY];
    if (!raw) return null;
    let m: QuantMetadata;
    try {
      m = JSON.parse(raw);
    } catch {
      throw new Error(`${set.source}: unreadable ${QUANT_METADATA_KEY} metadata ${JSON.stringify(raw)}`);
    }
    if (!((m.format === "MatMulNBits" && (m.bits === 4 || m.bits === 8)) || (m.format === "QGEMM" && m.bits === 8))) {
      throw new Error(`${set.source}: unsupported quantization ${raw} (this version reads MatMulNBits with 4 or 8 bits and QGEMM with 8)`);
    }
    return new QuantizedLinears(set, m.bits, accuracyLevel, m.format);
  }

  has(name: string): boolean {
    const o = this.owner(name);
    return o ? o.has(name) : this.tensor(name) !== null;
  }

  /** Every quantized weight name. */
  names(): string[] {
    const suffix = this.format === "QGEMM" ? ".qweight_t" : ".qweight";
    const own = this.set.keys().filter((k) => k.endsWith(suffix)).map((k) => k.slice(0, -suffix.length));
    if (!this.delegate) return own;
    const d = this.delegate;
    return [...own.filter((n) => !d.names.test(n)), ...d.linears.names().filter((n) => d.names.test(n))];
  }

  tensor(name: string): QuantizedTensor | null {
    if (this.cache.has(name)) return this.cache.get(name)!;
    let t: QuantizedTensor | null = null;
    if (this.format === "QGEMM") {
      if (this.set.has(`${name}.qweight_t`)) {
        const q = this.set.info(`${name}.qweight_t`);
        const scales = this.set.info(`${name}.scales`);
        if (q.dtype !== "I8" || q.shape.length !== 2 || scales.dtype !== "F32" || scales.shape.join(",") !== `${q.shape[1]}`) {
          throw new Error(`${q.file}: quantized weight "${name}" has ${q.dtype}${JSON.stringify(q.shape)} codes / ${scales.dtype}${JSON.stringify(scales.shape)} scales; expected I8 [K, N] and F32 [N]`);
        }
        const [K, N] = q.shape;
        t = { name, N, K, bits: 8, blockSize: 0, q, scales, zeroPoints: null };
      }
    } else if (this.set.has(`${name}.qweight`)) {
      const q = this.set.info(`${name}.qweight`);
      const scales = this.set.info(`${name}.scales`);
      const zeroPoints = this.set.has(`${name}.zero_points`) ? this.set.info(`${name}.zero_points`) : null;
      if (q.dtype !== "U8" || q.shape.length !== 3 || scales.dtype !== "F32") {
        throw new Error(`${q.file}: quantized weight "${name}" has ${q.dtype}${JSON.stringify(q.shape)} codes / ${scales.dtype} scales; expected U8 [N, blocks, bytes] and F32 [N, blocks]`);
      }
      const [N, blocks, blob] = q.shape;
      const blockSize = (blob * 8) / this.bits;
      if (scales.shape.join(",") !== `${N},${blocks}`) throw new Error(`${q.file}: scales of "${name}" have shape ${JSON.stringify(scales.shape)}, expected [${N}, ${blocks}]`);
      t = { name, N, K: blocks * blockSize, bits: this.bits, blockSize, q, scales, zeroPoints };
    }
    this.cache.set(name, t);
    return t;
  }

  shape(name: string): number[] {
    const o = this.owner(name);
    if (o) return o.shape(name);
    const t = this.tensor(name);
    if (!t) throw new Error(`${this.set.source}: "${name}" is not quantized`);
    return [t.N, t.K];
  }

  /** x @ Wᵀ for quantized weight `name` (null when `name` is not quantized here). */
  linear(g: Graph, x: Value, name: string): Value | null {
    const o = this.owner(name);
    if (o) return o.linear(g, x, name);
    const t = this.tensor(name);
    if (!t) return null;
    if (this.format === "QGEMM") return perChannelLinear(g, x, `${name}.qweight_t`, fileSource(t.q), g.weight(`${name}.scales`, fileSource(t.scales)));
    const q = g.weight(`${name}.qweight`, fileSource(t.q), "U8");
    const s = g.weight(`${name}.scales`, fileSource(t.scales));
    const z = t.zeroPoints ? g.weight(`${name}.zero_points`, fileSource(t.zeroPoints), "U8") : null;
    return g.matmulNBits(x, q, s, z, { K: t.K, N: t.N, bits: t.bits, blockSize: t.blockSize, accuracyLevel: this.accuracyLevel });
  }

  /** The float32 weight [N, K] the quantized one stands for (for LoRA fusing, drift checks). */
  float32(name: string): { data: Float32Array; shape: number[] } {
    const o = this.owner(name);
    if (o) return o.float32(name);
    const t = this.tensor(name);
    if (!t) throw new Error(`${this.set.source}: "${name}" is not quantized`);
    const scales = new Float32Array(readTensorBytes(t.scales).slice().buffer);
    if (this.format === "QGEMM") {
      const qT = new Int8Array(readTensorBytes(t.q).slice().buffer);
      return { data: dequantizePerChannel({ N: t.N, K: t.K, qT, scales }), shape: [t.N, t.K] };
    }
    const data = dequantizeBlockwise({
      N: t.N, K: t.K, bits: t.bits, blockSize: t.blockSize, q: readTensorBytes(t.q), scales,
      zeroPoints: t.zeroPoints ? readTensorBytes(t.zeroPoints) : null,
    });
    return { data, shape: [t.N, t.K] };
  }
}

/**
 * x @ (qT · scales) for per-channel int8 codes qT [K, N] (src/models/quantized/per_channel.ts).
 * Where ORT's integer GEMM is exact (int8 dot products: AMX, VNNI, Arm dotprod/i8mm) it runs there,
 * x quantized per call by the operator (uint8, the range of this call's values). Elsewhere that
 * kernel saturates (src/backend/cpu.ts), so the codes are dequantized at use and multiplied in
 * float32: the int8 file and its memory saving stay, the integer speed-up does not.
 */
export function perChannelLinear(g: Graph, x: Value, codesName: string, codes: WeightSource, scales: Value, exact = integerGemmExact()): Value {
  if (exact) return g.dynamicQuantizeMatMul(x, g.weight(codesName, codes, "I8"), scales);
  return g.matmul(x, g.dequantizedWeight(codesName, codes, scales, 1));
}
