// GEMM rates of the ORT kernels a Linear layer can run on, at one shape (`flux2 bench --kernels`).
//
// One x [M, K] by W [N, K] (PyTorch layout) product, timed for each way this engine can emit it:
//
//   fp32     FusedMatMul(transB) on a float32 W (what bf16 weights run on after their Cast)
//   nbits8   MatMulNBits, int8 codes in blocks of 128 along K, accuracy level 4 (ORT quantizes x
//            per block and uses int8 dot products)
//   qgemm    DynamicQuantizeMatMul: W int8 [K, N] with one scale per output channel, x quantized
//            per tensor to uint8 by the kernel; runs on MLAS's QGEMM (u8×s8, VNNI/AMX kernels)
//   qgemm_if DynamicQuantizeLinear + MatMulIntegerToFloat (the same math as two nodes)
//
// All kernels see the same x and the same W (quantized where they need it), so the rates compare
// kernels, not data. The rates count 2·M·N·K float FLOPs for every kernel.

import type { Session } from "../backend/backend.js";
import { OrtBackend } from "../backend/ort.js";
import { Graph, dataSource, type Value } from "../onnx/graph.js";
import { quantizeBlockwise } from "../models/quantized/blockwise.js";
import { quantizePerChannel } from "../models/quantized/per_channel.js";
import { FastNormal } from "./rng.js";
import { timed } from "./timer.js";

export type KernelName = "fp32" | "nbits8" | "qgemm" | "qgemm_if";
export const KERNELS: KernelName[] = ["fp32", "nbits8", "qgemm", "qgemm_if"];

export interface KernelResult {
  /** an ORT kernel, or PyTorch's F.linear in bf16 / float32 at the same shape (src/bench/torch_step.py) */
  kernel: KernelName | "torch_bf16" | "torch_fp32";
  M: number;
  N: number;
  K: number;
  /** best of the timed runs */
  seconds: number;
  gflops: number;
  /** every timed run, in order */
  runs: number[];
}

function build(kernel: KernelName, w: Float32Array, M: number, N: number, K: number): Graph {
  const g = new Graph(`kernel_${kernel}`);
  const x = g.input("x", "F32", [M, K]);
  let y: Value;
  if (kernel === "fp32") {
    y = g.linear(x, g.weight("w", dataSource(w, "F32", [N, K])));
  } else if (kernel === "nbits8") {
    const m = quantizeBlockwise(w, N, K, { bits: 8, blockSize: 128, symmetric: true });
    const q = g.weight("q", dataSource(m.q, "U8", [N, K / 128, 128]), "U8");
    const s = g.weight("s", dataSource(m.scales, "F32", [N, K / 128]));
    y = g.matmulNBits(x, q, s, null, { K, N, bits: 8, blockSize: 128, accuracyLevel: 4 });
  } else {
    const m = quantizePerChannel(w, N, K);
    const q = g.weight("q", dataSource(m.qT, "I8", [K, N]), "I8");
    const s = g.weight("s", dataSource(m.scales, "F32", [N]));
    if (kernel === "qgemm") {
      y = g.dynamicQuantizeMatMul(x, q, s);
    } else {
      const [xq, xs, xz] = g.op("DynamicQuantizeLinear", [x], {}, { outputs: 3 });
      y = g.op("MatMulIntegerToFloat", [xq, q, xs, s, xz], {}, { domain: "com.microsoft" })[0];
    }
  }
  g.output(y, "y", "F32", [M, N]);
  return g;
}

/**
 * Time each kernel on x [M, K] · W [N, K]ᵀ: `rounds` rounds, each running every kernel once in
 * turn (interleaved, so load on a shared machine hits all of them alike); the best run counts.
 */
export async function measureKernels(M: number, N: number, K: number, opts: { rounds?: number; threads?: number; kernels?: KernelName[] } = {}): Promise<KernelResult[]> {
  const kernels = opts.kernels ?? KERNELS;
  const w = new Float32Array(N * K);
  new FastNormal(11).fill(w, 1 / Math.sqrt(K));
  const x = new Float32Array(M * K);
  new FastNormal(12).fill(x, 1);
  const backend = new OrtBackend({ threads: opts.threads });
  const sessions: Session[] = [];
  for (const k of kernels) sessions.push(await backend.createSession(build(k, w, M, N, K)));
  const runs: number[][] = kernels.map(() => []);
  try {
    for (const s of sessions) await s.run({ x: { data: x, shape: [M, K] } }); // warm-up (prepacking, buffers)
    for (let r = 0; r < (opts.rounds ?? 3); r++) {
      for (let i = 0; i < sessions.length; i++) {
        runs[i].push((await timed(() => sessions[i].run({ x: { data: x, shape: [M, K] } })))[1]);
      }
    }
  } finally {
    for (const s of sessions) await s.release();
  }
  return kernels.map((kernel, i) => {
    const seconds = Math.min(...runs[i]);
    return { kernel, M, N, K, seconds, gflops: (2 * M * N * K) / 1e9 / seconds, runs: runs[i] };
  });
}
