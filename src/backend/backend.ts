// The narrow interface between models and whatever executes their graphs.
//
// Models build a Graph (src/onnx/graph.ts) and hand it to a Backend; they only
// ever see Sessions that take and return host tensors. ONNX Runtime is the one
// backend today (src/backend/ort.ts); another can be added behind this
// interface without touching the models.

import type { Graph } from "../onnx/graph.js";

export type HostData = Float32Array | BigInt64Array | Int32Array | Uint8Array | Float64Array;

/** ONNX Runtime's name for a host array's element type (the same in onnxruntime-node and -web). */
export function ortTypeOf(data: HostData): "float32" | "int64" | "int32" | "uint8" | "float64" {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof Uint8Array) return "uint8";
  if (data instanceof Float64Array) return "float64";
  throw new Error("unsupported tensor data type");
}

export interface HostTensor {
  data: HostData;
  shape: number[];
}

export type Device = "cpu" | "webgpu" | "cuda";

export interface SessionOptions {
  /** A stable key for the graph + weights, used to cache serialized models on disk. */
  cacheKey?: string;
  /** Force external-data serialization even for small graphs (tests). */
  external?: boolean;
  /**
   * ORT's memory pattern for this session (overrides the backend's setting). Training sessions turn
   * it off: the pattern that ORT lays out after the first run was not served from the memory the
   * first run left in the arena, so every later step took about twice the first step's memory
   * (docs/training.md).
   */
  memPattern?: boolean;
}

export interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, HostTensor>, outputs?: string[]): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

/** How a training step takes its matrix products (`flux2 train --matmul`). */
export const MATMUL_PRECISIONS = ["fp32", "bf16"] as const;
export type MatmulPrecision = (typeof MATMUL_PRECISIONS)[number];

export interface Backend {
  readonly name: string;
  readonly device: Device;
  /**
   * How training steps should take their matrix products. "bf16" (NativeOrtBackend, `flux2 train
   * --matmul bf16`): the backend runs ai.flux2ts::BfMatMul, and the trainers rewrite their step
   * graphs' large products into it (src/train/bf16.ts). Absent: float32.
   */
  readonly trainingMatmul?: MatmulPrecision;
  createSession(graph: Graph, options?: SessionOptions): Promise<Session>;
}
