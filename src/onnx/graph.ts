// Building ONNX graphs from TypeScript.
//
// A model file (src/models/*.ts) creates a Graph, declares its inputs, pulls
// weights out of checkpoint files and strings operations together, so that it
// reads like the math in the spec. The Graph knows nothing of FLUX.2.
//
// Weights are never copied into the graph eagerly: a weight is a *reference*
// to a byte range of a .safetensors file (or, for the rare tensor we must
// compute in JS, a typed array). When the graph is serialized the backend
// decides whether to inline the bytes (small models) or to emit ONNX
// external-data references that ONNX Runtime memory-maps (real checkpoints).

import { DataType, encodeModel, type AttrValue, type NodeProto, type TensorProto, type ValueInfo } from "./proto.js";
import { DTYPE_BYTES, readTensorBytes, type DType, type TensorInfo } from "../io/safetensors.js";

export { DataType };

export class Value {
  constructor(readonly name: string) {}
}

/** Where an initializer's bytes come from. */
export type WeightSource =
  | { kind: "file"; file: string; offset: number; byteLength: number; dtype: DType; shape: number[] }
  | { kind: "data"; bytes: Uint8Array; dtype: DType; shape: number[] };

export interface Initializer {
  name: string;
  source: WeightSource;
}

const ONNX_TYPE: Partial<Record<DType, DataType>> = {
  F32: DataType.FLOAT, F64: DataType.DOUBLE, F16: DataType.FLOAT16, BF16: DataType.BFLOAT16,
  F8_E4M3: DataType.FLOAT8E4M3FN, F8_E5M2: DataType.FLOAT8E5M2,
  I64: DataType.INT64, I32: DataType.INT32, I8: DataType.INT8, U8: DataType.UINT8, BOOL: DataType.BOOL,
};

export function onnxType(dtype: DType): DataType {
  const t = ONNX_TYPE[dtype];
  if (t === undefined) throw new Error(`dtype ${dtype} has no ONNX equivalent here`);
  return t;
}

/** A slice of rows of a stored [rows, ...] tensor, as a zero-copy file reference. */
export function rowSlice(info: TensorInfo, rowStart: number, rowCount: number): WeightSource {
  const rowBytes = (info.byteLength / info.shape[0]);
  if (rowStart < 0 || rowStart + rowCount > info.shape[0]) {
    throw new Error(`${info.file}: rows ${rowStart}..${rowStart + rowCount} out of range for "${info.name}" ${JSON.stringify(info.shape)}`);
  }
  return {
    kind: "file", file: info.file, dtype: info.dtype,
    offset: info.offset + rowStart * rowBytes, byteLength: rowCount * rowBytes,
    shape: [rowCount, ...info.shape.slice(1)],
  };
}

export function fileSource(info: TensorInfo, shape: number[] = info.shape): WeightSource {
  return { kind: "file", file: info.file, offset: info.offset, byteLength: info.byteLength, dtype: info.dtype, shape };
}

export function dataSource(data: Float32Array | BigInt64Array | Int32Array | Uint8Array | Int8Array, dtype: DType, shape: number[]): WeightSource {
  return { kind: "data", bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dtype, shape };
}

export class Graph {
  readonly nodes: NodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  readonly opsets: Record<string, number> = { "": 21, "com.microsoft": 1 };
  private counter = 0;
  private consts = new Map<string, Value>();
  private scopes: string[] = [];
  /**
   * Nodes that only convert a stored weight (Cast of a bf16/f16 initializer, DequantizeLinear of
   * an fp8 one), by node name, with the initializer they read. See `serialize()`.
   */
  private conversions = new Map<string, string>();

  constructor(readonly name: string) {}

  // -- naming ----------------------------------------------------------------

  /** Prefix node names inside `fn` (e.g. "double.3"), for readable profiles. */
  scope<T>(prefix: string, fn: () => T): T {
    this.scopes.push(prefix);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  private fresh(op: string): string {
    const s = this.scopes.length ? this.scopes.join("/") + "/" : "";
    return `${s}${op}_${this.counter++}`;
  }

  // -- graph interface ---------------------------------------------------------

  input(name: string, dtype: DType, dims: (number | string)[]): Value {
    this.inputs.push({ name, dataType: onnxType(dtype), dims });
    return new Value(name);
  }

  output(v: Value, name: string, dtype: DType = "F32", dims?: (number | string)[]): void {
    this.nodes.push({ opType: "Identity", name: this.fresh("Identity"), inputs: [v.name], outputs: [name] });
    this.outputs.push({ name, dataType: onnxType(dtype), dims });
  }

  /** A weight from a checkpoint. Non-float32 storage is cast to float32 in the graph. */
  weight(name: string, source: WeightSource, compute: DType = "F32"): Value {
    this.initializers.push({ name, source });
    const v = new Value(name);
    if (source.dtype === compute) return v;
    const out = this.op("Cast", [v], { to: onnxType(compute) })[0];
    this.conversions.set(this.nodes[this.nodes.length - 1].name, name);
    return out;
  }

  /**
   * A weight stored quantized (e.g. float8 e4m3 with a scale), dequantized to float32 by a
   * DequantizeLinear node: `scale` is a scalar (per tensor) or [rows] with `axis` 0 (per row).
   */
  dequantizedWeight(name: string, source: WeightSource, scale: Value, axis = 0): Value {
    this.initializers.push({ name, source });
    const out = this.op("DequantizeLinear", [new Value(name), scale], { axis })[0];
    this.conversions.set(this.nodes[this.nodes.length - 1].name, name);
    return out;
  }

  /** A small constant (shapes, axes, scalars), inlined. Deduplicated. */
  constant(values: number[] | bigint[], dtype: "F32" | "I64" = "I64", shape?: number[]): Value {
    const key = `${dtype}:${shape ?? "v"}:${values.join(",")}`;
    const hit = this.consts.get(key);
    if (hit) return hit;
    const data = dtype === "I64"
      ? BigInt64Array.from((values as (number | bigint)[]).map((x) => BigInt(x)))
      : Float32Array.from(values as number[]);
    const name = `const_${this.consts.size}`;
    this.initializers.push({ name, source: dataSource(data, dtype, shape ?? [values.length]) });
    const v = new Value(name);
    this.consts.set(key, v);
    return v;
  }

  scalar(x: number): Value {
    return this.constant([x], "F32", []);
  }

  /** Emit one node; returns its outputs. A null input is an omitted optional input. */
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: number } = {}): Value[] {
    // Trailing omitted inputs must be dropped, not written as "" (ORT crashes on some ops).
    while (inputs.length && inputs[inputs.length - 1] === null) inputs = inputs.slice(0, -1);
    const name = this.fresh(opType);
    const outs = Array.from({ length: opts.outputs ?? 1 }, (_, i) => `${name}:${i}`);
    this.nodes.push({ opType, domain: opts.domain, name, inputs: inputs.map((v) => (v ? v.name : "")), outputs: outs, attrs });
    return outs.map((o) => new Value(o));
  }

  // -- elementwise -------------------------------------------------------------

  add(a: Value, b: Value) { return this.op("Add", [a, b])[0]; }
  sub(a: Value, b: Value) { return this.op("Sub", [a, b])[0]; }
  mul(a: Value, b: Value) { return this.op("Mul", [a, b])[0]; }
  div(a: Value, b: Value) { return this.op("Div", [a, b])[0]; }
  sigmoid(x: Value) { return this.op("Sigmoid", [x])[0]; }
  silu(x: Value) { return this.mul(x, this.sigmoid(x)); }
  sqrt(x: Value) { return this.op("Sqrt", [x])[0]; }
  exp(x: Value) { return this.op("Exp", [x])[0]; }
  clip(x: Value, lo: number, hi: number) { return this.op("Clip", [x, this.scalar(lo), this.scalar(hi)])[0]; }

  // -- linear algebra ----------------------------------------------------------

  /** x @ W^T with W stored PyTorch-style [out, in] (no transpose copy: transB). */
  linear(x: Value, w: Value, bias?: Value | null): Value {
    const y = this.op("FusedMatMul", [x, w], { transB: 1 }, { domain: "com.microsoft" })[0];
    return bias ? this.add(y, bias) : y;
  }

  matmul(a: Value, b: Value) { return this.op("MatMul", [a, b])[0]; }

  /**
   * x @ dequant(B)^T with B block-quantized (ORT `com.microsoft.MatMulNBits`; layout in
   * src/models/quantized/blockwise.ts). accuracyLevel 4 lets ORT quantize x to int8 per block and use
   * integer dot products (fast); 0 dequantizes B to float32 (exact float math, slower).
   */
  matmulNBits(x: Value, q: Value, scales: Value, zeroPoints: Value | null,
              a: { K: number; N: number; bits: number; blockSize: number; accuracyLevel: number }): Value {
    return this.op("MatMulNBits", [x, q, scales, zeroPoints],
      { K: a.K, N: a.N, bits: a.bits, block_size: a.blockSize, accuracy_level: a.accuracyLevel }, { domain: "com.microsoft" })[0];
  }

  /**
   * x @ (qT · scales) with qT int8 [K, N] and one scale per output column (ORT
   * `com.microsoft.DynamicQuantizeMatMul`): ORT quantizes x to uint8 per call and runs MLAS's
   * integer GEMM (layout in src/models/quantized/per_channel.ts).
   */
  dynamicQuantizeMatMul(x: Value, qT: Value, scales: Value): Value {
    return this.op("DynamicQuantizeMatMul", [x, qT, scales], {}, { domain: "com.microsoft" })[0];
  }

  // -- shape -------------------------------------------------------------------

  reshape(x: Value, shape: number[]) { return this.op("Reshape", [x, this.constant(shape)])[0]; }
  transpose(x: Value, perm: number[]) { return this.op("Transpose", [x], { perm })[0]; }
  concat(xs: Value[], axis: number) { return xs.length === 1 ? xs[0] : this.op("Concat", xs, { axis })[0]; }
  unsqueeze(x: Value, axes: number[]) { return this.op("Unsqueeze", [x, this.constant(axes)])[0]; }

  /** x[..., start:end, ...] along one axis (end may be a large number for "to the end"). */
  slice(x: Value, axis: number, start: number, end: number) {
    return this.op("Slice", [x, this.constant([start]), this.constant([end]), this.constant([axis])])[0];
  }

  /** Split into equal-or-given sizes along an axis. */
  split(x: Value, axis: number, sizes: number[]) {
    return this.op("Split", [x, this.constant(sizes)], { axis }, { outputs: sizes.length });
  }

  /** Slice with a runtime start/end (Values holding 1-element int64). */
  sliceDyn(x: Value, axis: number, start: Value, end: Value) {
    return this.op("Slice", [x, start, end, this.constant([axis])])[0];
  }

  shape(x: Value) { return this.op("Shape", [x])[0]; }

  // -- normalization -----------------------------------------------------------

  /** LayerNorm over the last axis without affine parameters (scale 1, no bias). */
  layerNorm(x: Value, width: number, eps: number, scale?: Value, bias?: Value): Value {
    const s = scale ?? this.constant(new Array(width).fill(1), "F32", [width]);
    return this.op("LayerNormalization", [x, s, bias ?? null], { axis: -1, epsilon: { float: eps } })[0];
  }

  /** RMSNorm over the last axis with a learned scale: w * x / sqrt(mean(x^2) + eps). */
  rmsNorm(x: Value, weight: Value, eps: number): Value {
    return this.op("SimplifiedLayerNormalization", [x, weight], { axis: -1, epsilon: { float: eps } })[0];
  }

  // -- serialization -----------------------------------------------------------

  /** Total bytes of weights held in files (what the backend may map instead of copy). */
  weightBytes(): number {
    return this.initializers.reduce((n, i) => n + (i.source.kind === "file" ? i.source.byteLength : i.source.bytes.byteLength), 0);
  }

  /** Op types of the nodes, with counts (to check what ORT fused, compare with the optimized model). */
  opCounts(): Record<string, number> {
    const c: Record<string, number> = {};
    for (const n of this.nodes) c[n.opType] = (c[n.opType] ?? 0) + 1;
    return c;
  }

  /**
   * Serialize. `place` decides, per file-backed initializer, whether its bytes
   * go inline (return null) or as an external-data reference (return location+offset).
   *
   * Weight conversions (Cast bf16→f32, DequantizeLinear fp8→f32) are written first in the node
   * list. ONNX Runtime orders execution by a reverse DFS that visits a node's lower-indexed inputs
   * last, so a conversion placed first runs just before its consumer instead of all of them at
   * the start (which would hold every converted weight at once). Unless `opts.foldConversions`,
   * the converted initializers are also declared as graph inputs (ONNX IR ≥ 4: an overridable
   * initializer), which stops ORT from constant-folding the conversion into a float32 copy of the
   * weight: the stored (memory-mapped) bytes are the only resident copy and each weight is
   * converted when it is used. See docs/performance.md for the measurements behind this.
   */
  serialize(place: (init: Initializer) => { location: string; offset: number } | null, metadata?: Record<string, string>,
            opts: { foldConversions?: boolean } = {}): Uint8Array {
    const initializers: TensorProto[] = this.initializers.map((init) => {
      const s = init.source;
      const dims = s.shape;
      const dataType = onnxType(s.dtype);
      const expected = dims.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype];
      const length = s.kind === "file" ? s.byteLength : s.bytes.byteLength;
      if (length !== expected) throw new Error(`weight ${init.name}: ${length} bytes for ${s.dtype}${JSON.stringify(dims)}`);
      const where = s.kind === "file" ? place(init) : null;
      if (where) return { name: init.name, dataType, dims, external: { location: where.location, offset: where.offset, length } };
      const raw = s.kind === "file"
        ? readTensorBytes({ name: init.name, dtype: s.dtype, shape: dims, file: s.file, offset: s.offset, byteLength: s.byteLength })
        : s.bytes;
      return { name: init.name, dataType, dims, raw };
    });
    const first = this.nodes.filter((n) => this.conversions.has(n.name));
    const nodes = first.length ? [...first, ...this.nodes.filter((n) => !this.conversions.has(n.name))] : this.nodes;
    const inputs = [...this.inputs];
    if (!opts.foldConversions) {
      const converted = new Set(this.conversions.values());
      const declared = new Set(inputs.map((i) => i.name));
      for (const init of initializers) {
        if (converted.has(init.name) && !declared.has(init.name)) {
          inputs.push({ name: init.name, dataType: init.dataType, dims: init.dims });
          declared.add(init.name);
        }
      }
    }
    return encodeModel({
      graphName: this.name, nodes, initializers,
      inputs, outputs: this.outputs, opsets: this.opsets, metadata,
    });
  }
}
