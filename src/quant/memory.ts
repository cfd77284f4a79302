// How many bytes a component's weights occupy in memory as this engine loads them, for memory
// plans (src/loaders/memory.ts counts every tensor as float32, which was right when ORT
// constant-folded bf16 → float32 casts; see docs/performance.md):
//   - float weights stay in their stored dtype (memory-mapped, converted just before use);
//   - MatMulNBits codes are repacked by ORT once (the mapped original is released), 1:1 in size;
//   - with quantization at load, the quantized Linears count at their quantized size.

import { DTYPE_BYTES, WeightSet, numel } from "../io/safetensors.js";
import { blockSizeFor, quantizable, quantizedBytes, type QuantSpec } from "../models/quantized/blockwise.js";

const QUANTIZABLE = [
  /^(single_)?transformer_blocks\.\d+\..*\.weight$/,
  /(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/,
];

/**
 * Resident bytes of the weights at `p` (a file, index or folder), optionally quantized at load
 * with `spec`; `read` keeps only the tensors a run reads (a text encoder cut at its last output layer).
 */
export function residentWeightBytes(p: string, spec?: QuantSpec, read: (key: string) => boolean = () => true): number {
  const set = WeightSet.open(p);
  try {
    let n = 0;
    for (const k of set.keys()) {
      if (!read(k)) continue;
      const t = set.info(k);
      const q = spec && t.shape.length === 2 && QUANTIZABLE.some((re) => re.test(k)) && quantizable(t.shape[1], spec);
      const bs = q && !spec.perChannel ? blockSizeFor(t.shape[1], spec.blockSize)! : 0;
      n += q ? quantizedBytes(t.shape[0], t.shape[1], { ...spec, blockSize: bs }) : numel(t.shape) * DTYPE_BYTES[t.dtype];
    }
    return n;
  } finally {
    set.close();
  }
}
