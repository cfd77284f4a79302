// Speed and accuracy of the ways ONNX Runtime's CPU provider can compute the transformer's
// attention (`flux2 bench --attention`): softmax(q kᵀ / √Dh) v over all L tokens, H heads of Dh.
//
//   mha_fp32         com.microsoft.MultiHeadAttention in float32 (what the transformer graph emits)
//   attention_onnx   the ONNX Attention operator (opset 23), float32
//   mha_fp16         MultiHeadAttention on float16 q/k/v (cast in, cast out)
//   decomposed_fp32  MatMul (q kᵀ), Softmax, MatMul (p v) per group of heads, float32
//   qk_int8          as decomposed, with q kᵀ on the integer GEMM: q and kᵀ quantized per call
//                    (DynamicQuantizeLinear, uint8) into MatMulIntegerToFloat; softmax and p v in float32
//   qk_pv_int8       as qk_int8, and p v too: p and v quantized per call, u8 × u8
//
// Every variant gets the same q, k, v (N(0, 1): the transformer normalizes q and k per head
// before attention), and its output is compared with mha_fp32's. A variant ORT has no CPU kernel
// for reports the error instead of a time.
//
// The decompositions run a group of heads at a time (`HEADS_PER_GROUP`), so the float32 score
// matrix is (group, L, L), not (H, L, L): 24 heads at L = 4608 would be 2 GB per copy.

import { OrtBackend } from "../backend/ort.js";
import type { Session } from "../backend/backend.js";
import { Graph, type Value } from "../onnx/graph.js";
import { drift } from "../models/quantized/blockwise.js";
import { FastNormal } from "./rng.js";

export type AttentionVariant = "mha_fp32" | "attention_onnx" | "mha_fp16" | "decomposed_fp32" | "qk_int8" | "qk_pv_int8";
export const ATTENTION_VARIANTS: AttentionVariant[] = ["mha_fp32", "attention_onnx", "mha_fp16", "decomposed_fp32", "qk_int8", "qk_pv_int8"];

const HEADS_PER_GROUP = 4;

/** Heads per group: HEADS_PER_GROUP, or the largest divisor of H below it. */
function headsPerGroup(H: number): number {
  let g = Math.min(HEADS_PER_GROUP, H);
  while (H % g) g--;
  return g;
}

export interface AttentionResult {
  variant: AttentionVariant;
  L: number;
  H: number;
  Dh: number;
  /** best timed run (absent when the variant could not run) */
  seconds?: number;
  /** 4·L²·H·Dh / seconds (the FLOPs src/bench/flops.ts counts for attention) */
  gflops?: number;
  runs: number[];
  /** against mha_fp32's output */
  cosine?: number;
  max_abs_error?: number;
  rel_l2?: number;
  /** why the variant did not run (e.g. no CPU kernel) */
  error?: string;
}

function build(variant: AttentionVariant, L: number, H: number, Dh: number): Graph {
  const g = new Graph(`attention_${variant}`);
  const D = H * Dh;
  const q = g.input("q", "F32", [1, L, D]);
  const k = g.input("k", "F32", [1, L, D]);
  const v = g.input("v", "F32", [1, L, D]);
  const scale = 1 / Math.sqrt(Dh);
  let y: Value;
  if (variant === "mha_fp32") {
    y = g.op("MultiHeadAttention", [q, k, v], { num_heads: H, scale: { float: scale } }, { domain: "com.microsoft" })[0];
  } else if (variant === "mha_fp16") {
    const h = (x: Value) => g.op("Cast", [x], { to: 10 })[0]; // FLOAT16
    const o = g.op("MultiHeadAttention", [h(q), h(k), h(v)], { num_heads: H, scale: { float: scale } }, { domain: "com.microsoft" })[0];
    y = g.op("Cast", [o], { to: 1 })[0];
  } else if (variant === "attention_onnx") {
    g.opsets[""] = 23;
    y = g.op("Attention", [q, k, v], { q_num_heads: H, kv_num_heads: H, scale: { float: scale } })[0];
  } else {
    // [1, L, D] → [H, L, Dh] (kᵀ: [H, Dh, L]), then groups of heads.
    const heads = (x: Value, perm: number[]) => g.transpose(g.reshape(x, [L, H, Dh]), perm);
    const per = headsPerGroup(H);
    const groups = H / per;
    const sizes = new Array(groups).fill(per);
    const qs = g.split(heads(q, [1, 0, 2]), 0, sizes);
    const ks = g.split(heads(k, [1, 2, 0]), 0, sizes);
    const vs = g.split(heads(v, [1, 0, 2]), 0, sizes);
    const outs: Value[] = [];
    for (let i = 0; i < groups; i++) {
      let s: Value;
      if (variant === "decomposed_fp32") {
        s = g.matmul(qs[i], ks[i]);
      } else {
        const [qq, qsc, qz] = g.op("DynamicQuantizeLinear", [qs[i]], {}, { outputs: 3 });
        const [kq, ksc, kz] = g.op("DynamicQuantizeLinear", [ks[i]], {}, { outputs: 3 });
        s = g.op("MatMulIntegerToFloat", [qq, kq, qsc, ksc, qz, kz], {}, { domain: "com.microsoft" })[0];
      }
      const p = g.op("Softmax", [g.mul(s, g.scalar(scale))], { axis: -1 })[0];
      if (variant === "qk_pv_int8") {
        const [pq, psc, pz] = g.op("DynamicQuantizeLinear", [p], {}, { outputs: 3 });
        const [vq, vsc, vz] = g.op("DynamicQuantizeLinear", [vs[i]], {}, { outputs: 3 });
        outs.push(g.op("MatMulIntegerToFloat", [pq, vq, psc, vsc, pz, vz], {}, { domain: "com.microsoft" })[0]);
      } else {
        outs.push(g.matmul(p, vs[i]));
      }
    }
    y = g.reshape(g.transpose(g.concat(outs, 0), [1, 0, 2]), [1, L, D]);
  }
  g.output(y, "y", "F32", [1, L, D]);
  return g;
}

/**
 * Time each variant on the same q, k, v: `rounds` rounds, each running every variant once in
 * turn (interleaved, so load on a shared machine hits all alike); the best run counts.
 */
export async function measureAttention(L: number, H: number, Dh: number, opts: { rounds?: number; threads?: number; variants?: AttentionVariant[] } = {}): Promise<AttentionResult[]> {
  const variants = opts.variants ?? ATTENTION_VARIANTS;
  const n = L * H * Dh;
  const inputs = Object.fromEntries(["q", "k", "v"].map((name, i) => {
    const data = new Float32Array(n);
    new FastNormal(21 + i).fill(data, 1);
    return [name, { data, shape: [1, L, H * Dh] }];
  }));
  const backend = new OrtBackend({ threads: opts.threads });
  const results: AttentionResult[] = variants.map((variant) => ({ variant, L, H, Dh, runs: [] }));
  const sessions: (Session | null)[] = [];
  const outputs: (Float32Array | null)[] = [];
  try {
    for (let i = 0; i < variants.length; i++) {
      try {
        const s = await backend.createSession(build(variants[i], L, H, Dh));
        outputs.push((await s.run(inputs)).y.data as Float32Array); // warm-up; its output is the one compared
        sessions.push(s);
      } catch (e) {
        results[i].error = String((e as Error).message ?? e).split("\n")[0].slice(0, 300);
        sessions.push(null);
        outputs.push(null);
      }
    }
    for (let r = 0; r < (opts.rounds ?? 3); r++) {
      for (let i = 0; i < sessions.length; i++) {
        if (!sessions[i]) continue;
        const t0 = performance.now();
        await sessions[i]!.run(inputs);
        results[i].runs.push((performance.now() - t0) / 1000);
      }
    }
  } finally {
    for (const s of sessions) await s?.release();
  }
  const ref = outputs[variants.indexOf("mha_fp32")];
  const flop = 4 * L * L * H * Dh;
  for (let i = 0; i < results.length; i++) {
    const r = results[i];
    if (!r.runs.length) continue;
    r.seconds = Math.min(...r.runs);
    r.gflops = flop / 1e9 / r.seconds;
    if (ref && outputs[i]) {
      const d = drift(outputs[i]!, ref);
      Object.assign(r, { cosine: d.cosine, max_abs_error: d.maxAbs, rel_l2: d.relL2 });
    }
  }
  return results;
}
