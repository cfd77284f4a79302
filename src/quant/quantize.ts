// Quantizing a checkpoint's Linear weights, streamed one tensor at a time.
//
// Two uses:
//  - at load (`--quantize int8|int4`): the quantized weights of a component are written once to
//    $FLUX2_CACHE/quant/<key>/weights.safetensors (only the quantized tensors; everything else
//    keeps being read from the original files) and attached to the component's weights;
//  - `flux2 quantize` (src/cli/quantize.ts): a complete, loadable diffusers folder.
//
// Which weights: every Linear inside the repeated blocks (transformer: `transformer_blocks.*`,
// `single_transformer_blocks.*`, 95% of its parameters; text encoder: the q/k/v/o and MLP
// projections of every decoder layer). The embedders, modulation, output layer, norms and the
// token embedding stay as stored: they are small, and the modulation / output layers are the
// most sensitive to error. A weight whose K no block size ≥ 16 divides stays in float.

import * as crypto from "../platform/crypto.js";
import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { DTYPE_BYTES, WeightSet, numel, readTensorBytes, type DType } from "../io/safetensors.js";
import { cacheRoot } from "../backend/ort.js";
import { expectedTransformerShapes, type TransformerWeights } from "../models/transformer_weights.js";
import type { TransformerConfig } from "../models/transformer.js";
import type { DecoderConfig, DecoderWeights } from "../models/decoder.js";
import { INT8_BLOCK, blockSizeFor, quantizable, quantizeBlockwise, zeroPointBytes, type QuantSpec } from "../models/quantized/blockwise.js";
import { quantizePerChannel } from "../models/quantized/per_channel.js";
import { QuantizedLinears, quantMetadata, type AccuracyLevel } from "../models/quantized/format.js";
import { SafetensorsStreamWriter, bytesOf, type PlannedTensor } from "./writer.js";

/** A weight to quantize: its name, [N, K] and how to read it as float32. */
export interface QuantTarget {
  name: string;
  N: number;
  K: number;
  read: () => Float32Array;
}

/** A tensor copied unchanged (raw bytes in its dtype). */
export interface Passthrough {
  name: string;
  dtype: DType;
  shape: number[];
  read: () => Uint8Array;
}

export type Progress = (done: number, total: number, name: string) => void;

/** The planned tensors of one quantized weight. */
function planQuantized(t: QuantTarget, spec: QuantSpec): PlannedTensor[] {
  if (spec.perChannel) {
    return [{ name: `${t.name}.qweight_t`, dtype: "I8", shape: [t.K, t.N] }, { name: `${t.name}.scales`, dtype: "F32", shape: [t.N] }];
  }
  const bs = blockSizeFor(t.K, spec.blockSize)!;
  const blocks = t.K / bs;
  const out: PlannedTensor[] = [
    { name: `${t.name}.qweight`, dtype: "U8", shape: [t.N, blocks, (bs * spec.bits) / 8] },
    { name: `${t.name}.scales`, dtype: "F32", shape: [t.N, blocks] },
  ];
  if (!spec.symmetric) out.push({ name: `${t.name}.zero_points`, dtype: "U8", shape: [t.N, zeroPointBytes(blocks, spec.bits)] });
  return out;
}

/**
 * Write `targets` quantized (and `passthrough` unchanged) into one .safetensors file, one
 * tensor in memory at a time. Rows are quantized in chunks so even a 27648×3072 weight needs
 * only its float32 copy plus a few MB.
 */
export function writeQuantizedFile(file: string, targets: QuantTarget[], passthrough: Passthrough[], spec: QuantSpec,
                                   extraMetadata: Record<string, string> = {}, progress?: Progress): void {
  for (const t of targets) {
    if (!quantizable(t.K, spec)) throw new Error(`${t.name}: K = ${t.K} has no block size ≥ 16 dividing it; keep it in float`);
  }
  const plan = [...targets.flatMap((t) => planQuantized(t, spec)), ...passthrough.map((p) => ({ name: p.name, dtype: p.dtype, shape: p.shape }))];
  const writer = new SafetensorsStreamWriter(file, plan, { ...quantMetadata(spec.bits, spec.blockSize, spec.symmetric, undefined, spec.perChannel), ...extraMetadata });
  const total = targets.reduce((n, t) => n + t.N * t.K, 0) + passthrough.reduce((n, p) => n + numel(p.shape), 0);
  let done = 0;
  try {
    for (const t of targets) {
      const w = t.read();
      if (w.length !== t.N * t.K) throw new Error(`${t.name}: read ${w.length} values, expected ${t.N}×${t.K}`);
      if (spec.perChannel) {
        // Transposed codes need every row: the whole weight at once (a 27648×3072 weight is
        // 340 MB as float32 plus 85 MB of codes, released before the next one).
        const m = quantizePerChannel(w, t.N, t.K);
        writer.write(`${t.name}.qweight_t`, bytesOf(m.qT));
        writer.write(`${t.name}.scales`, bytesOf(m.scales));
        done += t.N * t.K;
        progress?.(done, total, t.name);
        continue;
      }
      const bs = blockSizeFor(t.K, spec.blockSize)!;
      const rowSpec = { ...spec, blockSize: bs };
      const rowsPerChunk = Math.max(1, Math.floor((1 << 22) / t.K));
      // Codes go out chunk by chunk; scales and zero points (small) are collected and written after.
      const ss: Float32Array[] = [], zs: Uint8Array[] = [];
      for (let r = 0; r < t.N; r += rowsPerChunk) {
        const n = Math.min(rowsPerChunk, t.N - r);
        const m = quantizeBlockwise(w.subarray(r * t.K, (r + n) * t.K), n, t.K, rowSpec);
        writer.write(`${t.name}.qweight`, m.q);
        ss.push(m.scales);
        if (m.zeroPoints) zs.push(m.zeroPoints);
      }
      for (const s of ss) writer.write(`${t.name}.scales`, bytesOf(s));
      for (const z of zs) writer.write(`${t.name}.zero_points`, z);
      done += t.N * t.K;
      progress?.(done, total, t.name);
    }
    for (const p of passthrough) {
      writer.write(p.name, p.read());
      done += numel(p.shape);
      progress?.(done, total, p.name);
    }
    writer.close();
  } catch (e) {
    writer.abort();
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Which weights

const TRANSFORMER_BLOCKS = /^(single_)?transformer_blocks\.\d+\./;

/** The transformer weights we quantize (diffusers names), with how to read each. */
export function transformerTargets(w: TransformerWeights, c: TransformerConfig, spec: QuantSpec): QuantTarget[] {
  return expectedTransformerShapes(c)
    .filter(([name, shape]) => TRANSFORMER_BLOCKS.test(name) && shape.length === 2 && quantizable(shape[1], spec))
    .map(([name, [N, K]]) => ({ name, N, K, read: () => w.float32(name).data }));
}

const DECODER_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

/** The text-encoder weights we quantize: every projection of every decoder layer. */
export function decoderTargets(w: DecoderWeights, c: DecoderConfig, spec: QuantSpec, layers = c.num_hidden_layers): QuantTarget[] {
  const out: QuantTarget[] = [];
  for (let i = 0; i < layers; i++) {
    for (const l of DECODER_LINEARS) {
      const name = w.key(`layers.${i}.${l}.weight`);
      if (!w.set.has(name)) continue;
      const info = w.set.info(name);
      const [N, K] = info.shape;
      if (info.shape.length !== 2 || !quantizable(K, spec)) continue;
      out.push({ name, N, K, read: () => w.set.float32(name) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Quantizing at load, cached

export interface LoadQuantOptions {
  spec: QuantSpec;
  accuracyLevel?: AccuracyLevel;
  progress?: Progress;
  /** Cache folder root (default $FLUX2_CACHE). */
  cacheDir?: string;
}

/** Same files (by path, size, mtime), same weights, same spec → same cache folder. */
function cacheKey(kind: string, set: WeightSet, targets: QuantTarget[], spec: QuantSpec): string {
  const h = crypto.createHash("sha256");
  h.update(JSON.stringify({ kind, spec, v: 1 }));
  for (const f of set.files) {
    const st = fs.statSync(f.path);
    h.update(`${f.path}:${st.size}:${st.mtimeMs}\n`);
  }
  for (const t of targets) h.update(`${t.name}:${t.N}:${t.K}\n`);
  const layout = spec.perChannel ? "pc" : `b${spec.blockSize}${spec.symmetric ? "s" : "a"}`;
  return `${kind}-int${spec.bits}-${layout}-${h.digest("hex").slice(0, 16)}`;
}

/** Quantize (or find in the cache) `targets` of `set`; returns the quantized linears over the cache file. */
export function quantizedCache(kind: string, set: WeightSet, targets: QuantTarget[], opts: LoadQuantOptions): QuantizedLinears {
  const dir = path.join(opts.cacheDir ?? cacheRoot(), "quant", cacheKey(kind, set, targets, opts.spec));
  const file = path.join(dir, "weights.safetensors");
  if (!fs.existsSync(file)) writeQuantizedFile(file, targets, [], opts.spec, { source: set.source }, opts.progress);
  return QuantizedLinears.detect(WeightSet.open(file), opts.accuracyLevel ?? 4)!;
}

/**
 * The projections whose input is a SwiGLU product (the double blocks' FF output layers, the single
 * blocks' output projection, whose input is half attention and half SwiGLU, the text encoder's
 * down projections): int8-mixed keeps these in MatMulNBits blocks.
 */
export const SENSITIVE_LINEARS = /(\.ff(_context)?\.linear_out\.weight|^single_transformer_blocks\.\d+\.attn\.to_out\.weight|\.mlp\.down_proj\.weight)$/;

/** The cache for `targets(spec)`, with int8-mixed's sensitive layers taken from an int8-block cache. */
function cached(kind: string, set: WeightSet, targets: (s: QuantSpec) => QuantTarget[], opts: LoadQuantOptions): QuantizedLinears {
  if (!opts.spec.sensitiveInBlocks) return quantizedCache(kind, set, targets(opts.spec), opts);
  // Both caches are the plain int8 and int8-block ones (shared with those kinds); each layer is
  // read from the one it uses.
  const main = { ...opts, spec: { ...opts.spec, sensitiveInBlocks: undefined } };
  const q = quantizedCache(kind, set, targets(main.spec), main);
  q.delegate = { linears: quantizedCache(kind, set, targets(INT8_BLOCK), { ...opts, spec: INT8_BLOCK }), names: SENSITIVE_LINEARS };
  return q;
}

/** Attach int8/int4 weights to a transformer's weights (quantized once, then read from the cache). */
export function quantizeTransformerAtLoad(w: TransformerWeights, c: TransformerConfig, opts: LoadQuantOptions): void {
  if (w.quant) return; // already a quantized checkpoint
  w.quant = cached("transformer", w.set, (s) => transformerTargets(w, c, s), opts);
}

/** Attach int8/int4 weights to a decoder text encoder's weights. */
export function quantizeDecoderAtLoad(w: DecoderWeights, c: DecoderConfig, opts: LoadQuantOptions): void {
  if (w.quant) return;
  w.quant = cached("text_encoder", w.set, (s) => decoderTargets(w, c, s), opts);
}

/** Raw bytes of a stored tensor, as a passthrough. */
export function passthroughOf(set: WeightSet, name: string, as = name): Passthrough {
  const info = set.info(name);
  return { name: as, dtype: info.dtype, shape: info.shape, read: () => readTensorBytes(info) };
}

/** Bytes a quantized set of targets will take (codes + scales + zero points). */
export function plannedBytes(targets: QuantTarget[], spec: QuantSpec): number {
  return targets.flatMap((t) => planQuantized(t, spec)).reduce((n, p) => n + numel(p.shape) * DTYPE_BYTES[p.dtype], 0);
}
