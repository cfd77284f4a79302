// Which of a training step's matrix products run in bfloat16 (`flux2 train --matmul bf16`).
//
// The backend (NativeOrtBackend) runs ai.flux2ts::BfMatMul; this decides where it pays. Measured on
// the 2 vCPU Zen 4 (docs/training.md, "bf16 matrix products"): a product with a 2-D right operand
// (a Linear layer's forward and input gradient, and its weight gradient, which autodiff takes on
// flattened 2-D operands) runs 1.6-1.8x faster on one thread; a batched product of small matrices (attention's
// [B, heads, L, L] scores) runs 0.8-1.25x, its packing costing about what its arithmetic saves;
// and a product under about a million multiply-adds (the modulation layers, one row per image)
// gains nothing. So only the first kind is rewritten.

import type { Backend } from "../backend/backend.js";
import type { Graph } from "../onnx/graph.js";
import { attrOf, inferShapes } from "./shapes.js";

/** Products smaller than this many multiply-adds stay float32. */
const MIN_MACS = 1 << 20;

/**
 * Rewrites `g`'s MatMul / FusedMatMul nodes into BfMatMul where the backend asks for bf16
 * training products and the product has a 2-D right operand of at least MIN_MACS work.
 * `inputShapes`: the data inputs' shapes, as for appendGradients. Returns the count rewritten.
 */
export function useTrainingMatmul(backend: Backend, g: Graph, inputShapes: Record<string, number[]>): number {
  if (backend.trainingMatmul !== "bf16") return 0;
  const metas = inferShapes(g, inputShapes);
  let rewritten = 0;
  for (const n of g.nodes) {
    const plain = n.opType === "MatMul" && !n.domain;
    const fused = n.opType === "FusedMatMul" && n.domain === "com.microsoft";
    if (!plain && !fused) continue;
    if (fused && (attrOf(n, "transBatchA", 0) || attrOf(n, "transBatchB", 0))) continue;
    const a = metas.get(n.inputs[0])?.shape, b = metas.get(n.inputs[1])?.shape;
    if (!a || !b || b.length !== 2 || a.length < 2) continue;
    const transA = fused && attrOf(n, "transA", 0), transB = fused && attrOf(n, "transB", 0);
    const K = transB ? b[1] : b[0], N = transB ? b[0] : b[1];
    const rows = a.slice(0, -2).reduce((x, y) => x * y, 1) * (transA ? a[a.length - 1] : a[a.length - 2]);
    if (rows * K * N < MIN_MACS) continue;
    n.opType = "BfMatMul";
    n.domain = "ai.flux2ts";
    rewritten++;
  }
  if (rewritten) g.opsets["ai.flux2ts"] = 1;
  return rewritten;
}
