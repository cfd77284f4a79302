// Static shape and dtype inference over a Graph, for the ops the models use.
//
// The gradient rules need every value's shape (to sum broadcast gradients back to an
// operand's shape, to pad a slice's gradient, to size a transposed convolution), and
// training graphs are built for one input shape anyway. Small int64 tensors whose
// values are known (constants, Shape outputs) are propagated too: Reshape / Slice /
// Split read them. Written by hand: ONNX Runtime's own shape inference is not exposed
// to JS, and the op set is small.

import { DataType } from "../onnx/proto.js";
import type { Graph } from "../onnx/graph.js";
import type { NodeProto } from "../onnx/proto.js";

export type Elem = "F32" | "F64" | "F16" | "BF16" | "I64" | "I32" | "I8" | "U8" | "BOOL" | "F8";

export interface ValueMeta {
  shape: number[];
  elem: Elem;
  /** Known values of a small int64 / float tensor (constants, shapes). */
  values?: number[];
}

export type Metas = Map<string, ValueMeta>;

const FROM_ONNX: Record<number, Elem> = {
  [DataType.FLOAT]: "F32", [DataType.DOUBLE]: "F64", [DataType.FLOAT16]: "F16", [DataType.BFLOAT16]: "BF16",
  [DataType.INT64]: "I64", [DataType.INT32]: "I32", [DataType.INT8]: "I8", [DataType.UINT8]: "U8", [DataType.BOOL]: "BOOL",
  [DataType.FLOAT8E4M3FN]: "F8", [DataType.FLOAT8E5M2]: "F8",
};

export function elemOf(onnx: number): Elem {
  const e = FROM_ONNX[onnx];
  if (!e) throw new Error(`shape inference: ONNX data type ${onnx} is not handled`);
  return e;
}

function storedElem(dtype: string): Elem {
  if (dtype.startsWith("F8")) return "F8";
  return dtype as Elem;
}

/** Values of an inlined initializer when it is small (constants), else undefined. */
function knownValues(bytes: Uint8Array, dtype: string): number[] | undefined {
  if (bytes.byteLength > 8 * 64) return undefined;
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  if (dtype === "I64") return Array.from(new BigInt64Array(buf), Number);
  if (dtype === "F32") return Array.from(new Float32Array(buf));
  if (dtype === "F64") return Array.from(new Float64Array(buf));
  if (dtype === "I32") return Array.from(new Int32Array(buf));
  return undefined;
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

export function broadcastShapes(a: number[], b: number[], what = "broadcast"): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`${what}: shapes [${a}] and [${b}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

function attr<T>(n: NodeProto, name: string, dflt: T): T {
  const v = n.attrs?.[name];
  if (v === undefined) return dflt;
  if (typeof v === "object" && v !== null && "float" in v) return (v as { float: number }).float as unknown as T;
  return v as unknown as T;
}

export function attrOf<T>(n: NodeProto, name: string, dflt: T): T {
  return attr(n, name, dflt);
}

/** Infer every value's shape. `inputShapes` gives concrete dims for the graph inputs (symbolic dims resolved). */
export function inferShapes(g: Graph, inputShapes: Record<string, number[]>): Metas {
  const m: Metas = new Map();
  for (const i of g.inputs) {
    const given = inputShapes[i.name];
    const dims = given ?? (i.dims?.every((d) => typeof d === "number") ? (i.dims as number[]) : undefined);
    if (!dims) continue; // an overridable initializer declared as input: its initializer below gives the shape
    m.set(i.name, { shape: [...dims], elem: elemOf(i.dataType) });
  }
  for (const init of g.initializers) {
    if (m.has(init.name)) continue;
    const s = init.source;
    const values = s.kind === "data" ? knownValues(s.bytes, s.dtype) : undefined;
    m.set(init.name, { shape: [...s.shape], elem: storedElem(s.dtype), values });
  }
  for (const n of g.nodes) inferNode(n, m);
  return m;
}

export function inferNode(n: NodeProto, m: Metas): void {
  const get = (i: number): ValueMeta => {
    const name = n.inputs[i];
    const v = name ? m.get(name) : undefined;
    if (!v) throw new Error(`shape inference: ${n.opType} node ${n.name}: input ${i} ("${name}") has no known shape`);
    return v;
  };
  const has = (i: number) => !!n.inputs[i];
  const vals = (i: number): number[] => {
    const v = get(i).values;
    if (!v) throw new Error(`shape inference: ${n.opType} node ${n.name}: input ${i} must be a constant known at build time`);
    return v;
  };
  const set = (k: number, meta: ValueMeta) => m.set(n.outputs[k], meta);
  const x = () => get(0);
  switch (n.opType) {
    case "Identity": case "Neg": case "Sqrt": case "Exp": case "Log": case "Sigmoid": case "Tanh": case "Erf":
    case "Reciprocal": case "Relu": case "Abs": case "Softmax": case "Clip": case "RotaryEmbedding":
    case "SimplifiedLayerNormalization": case "InstanceNormalization":
      set(0, { shape: [...x().shape], elem: x().elem, values: n.opType === "Identity" ? x().values : undefined });
      return;
    case "LayerNormalization": {
      const s = x().shape;
      set(0, { shape: [...s], elem: x().elem });
      const axis = normAxis(attr(n, "axis", -1), s.length);
      const red = s.map((d, i) => (i < axis ? d : 1));
      for (let k = 1; k < n.outputs.length; k++) set(k, { shape: red, elem: "F32" });
      return;
    }
    case "Cast":
      set(0, { shape: [...x().shape], elem: elemOf(attr(n, "to", DataType.FLOAT)), values: x().values });
      return;
    case "DequantizeLinear":
      set(0, { shape: [...x().shape], elem: get(1).elem });
      return;
    case "Add": case "Sub": case "Mul": case "Div": case "Pow": {
      const a = get(0), b = get(1);
      let values: number[] | undefined;
      if (a.values && b.values && a.values.length === b.values.length) {
        const f = { Add: (p: number, q: number) => p + q, Sub: (p: number, q: number) => p - q, Mul: (p: number, q: number) => p * q,
          Div: (p: number, q: number) => (a.elem === "I64" ? Math.trunc(p / q) : p / q), Pow: (p: number, q: number) => p ** q }[n.opType]!;
        values = a.values.map((p, i) => f(p, b.values![i]));
      }
      set(0, { shape: broadcastShapes(a.shape, b.shape, n.name), elem: a.elem, values });
      return;
    }
    case "Sum": {
      let shape = get(0).shape;
      for (let i = 1; i < n.inputs.length; i++) shape = broadcastShapes(shape, get(i).shape, n.name);
      set(0, { shape, elem: get(0).elem });
      return;
    }
    case "ScatterND":
      set(0, { shape: [...x().shape], elem: x().elem });
      return;
    case "Equal": case "Less": case "Greater": case "LessOrEqual": case "GreaterOrEqual": case "And": case "Or":
      set(0, { shape: broadcastShapes(get(0).shape, get(1).shape, n.name), elem: "BOOL" });
      return;
    case "Not":
      set(0, { shape: [...x().shape], elem: "BOOL" });
      return;
    case "Where":
      set(0, { shape: broadcastShapes(broadcastShapes(get(0).shape, get(1).shape, n.name), get(2).shape, n.name), elem: get(1).elem });
      return;
    case "MatMul": case "FusedMatMul": {
      const fused = n.opType === "FusedMatMul";
      const a = [...get(0).shape], b = [...get(1).shape];
      if (a.length < 2 || b.length < 2) throw new Error(`shape inference: ${n.name}: 1-D matmul operands are not supported here`);
      if (fused && (attr(n, "transBatchA", 0) || attr(n, "transBatchB", 0))) throw new Error(`${n.name}: FusedMatMul transBatch is not supported`);
      const ta = fused ? attr(n, "transA", 0) : 0, tb = fused ? attr(n, "transB", 0) : 0;
      const [M, K1] = ta ? [a[a.length - 1], a[a.length - 2]] : [a[a.length - 2], a[a.length - 1]];
      const [K2, N] = tb ? [b[b.length - 1], b[b.length - 2]] : [b[b.length - 2], b[b.length - 1]];
      if (K1 !== K2) throw new Error(`shape inference: ${n.name}: inner dims ${K1} and ${K2} differ ([${a}] x [${b}])`);
      const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2), n.name);
      set(0, { shape: [...batch, M, N], elem: get(0).elem });
      return;
    }
    case "MatMulNBits":
      set(0, { shape: [...x().shape.slice(0, -1), attr(n, "N", 0)], elem: x().elem });
      return;
    case "MultiHeadAttention": {
      const q = get(0).shape, v = get(2).shape;
      if (q.length !== 3 || v.length !== 3) throw new Error(`shape inference: ${n.name}: MultiHeadAttention needs (B, S, H·D) q, k, v`);
      set(0, { shape: [q[0], q[1], v[2]], elem: get(0).elem });
      return;
    }
    case "Conv": {
      const s = x().shape, w = get(1).shape;
      const k = w.slice(2);
      const strides = attr<number[]>(n, "strides", k.map(() => 1));
      const pads = attr<number[]>(n, "pads", [...k.map(() => 0), ...k.map(() => 0)]);
      const dil = attr<number[]>(n, "dilations", k.map(() => 1));
      if (attr(n, "group", 1) !== 1) throw new Error(`shape inference: ${n.name}: grouped Conv is not supported`);
      const out = k.map((kk, i) => Math.floor((s[2 + i] + pads[i] + pads[i + k.length] - ((kk - 1) * dil[i] + 1)) / strides[i]) + 1);
      set(0, { shape: [s[0], w[0], ...out], elem: x().elem });
      return;
    }
    case "ConvTranspose": {
      const s = x().shape, w = get(1).shape;
      const k = w.slice(2);
      const strides = attr<number[]>(n, "strides", k.map(() => 1));
      const pads = attr<number[]>(n, "pads", [...k.map(() => 0), ...k.map(() => 0)]);
      const op = attr<number[]>(n, "output_padding", k.map(() => 0));
      const out = k.map((kk, i) => strides[i] * (s[2 + i] - 1) + op[i] + kk - pads[i] - pads[i + k.length]);
      set(0, { shape: [s[0], w[1], ...out], elem: x().elem });
      return;
    }
    case "Resize": {
      const scales = vals(2);
      set(0, { shape: x().shape.map((d, i) => Math.floor(d * scales[i])), elem: x().elem });
      return;
    }
    case "Reshape": {
      const s = x().shape;
      const want = vals(1).map((d, i) => (d === 0 ? s[i] : d));
      const known = want.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      const shape = want.map((d) => (d === -1 ? numel(s) / known : d));
      if (numel(shape) !== numel(s)) throw new Error(`shape inference: ${n.name}: cannot reshape [${s}] to [${vals(1)}]`);
      set(0, { shape, elem: x().elem, values: x().values });
      return;
    }
    case "Transpose": {
      const s = x().shape;
      const perm = attr<number[]>(n, "perm", s.map((_, i) => s.length - 1 - i));
      set(0, { shape: perm.map((p) => s[p]), elem: x().elem });
      return;
    }
    case "Concat": {
      const parts = n.inputs.map((_, i) => get(i));
      const axis = normAxis(attr(n, "axis", 0), parts[0].shape.length);
      const shape = [...parts[0].shape];
      shape[axis] = parts.reduce((a, p) => a + p.shape[axis], 0);
      const values = parts.every((p) => p.values) ? parts.flatMap((p) => p.values!) : undefined;
      set(0, { shape, elem: parts[0].elem, values });
      return;
    }
    case "Split": {
      const s = x().shape;
      const axis = normAxis(attr(n, "axis", 0), s.length);
      const sizes = has(1) ? vals(1) : new Array(n.outputs.length).fill(s[axis] / n.outputs.length);
      sizes.forEach((sz, k) => set(k, { shape: s.map((d, i) => (i === axis ? sz : d)), elem: x().elem }));
      return;
    }
    case "Slice": {
      const s = x().shape;
      const r = sliceRanges(s, vals(1), vals(2), has(3) ? vals(3) : undefined, has(4) ? vals(4) : undefined, n.name);
      const values = x().values && s.length === 1 ? x().values!.slice(r[0].start, r[0].end) : undefined;
      set(0, { shape: r.map((q) => q.end - q.start), elem: x().elem, values });
      return;
    }
    case "Gather": {
      const s = x().shape, idx = get(1).shape;
      const axis = normAxis(attr(n, "axis", 0), s.length);
      set(0, { shape: [...s.slice(0, axis), ...idx, ...s.slice(axis + 1)], elem: x().elem });
      return;
    }
    case "Unsqueeze": {
      const s = [...x().shape];
      const axes = vals(1).map((a) => normAxis(a, s.length + vals(1).length)).sort((a, b) => a - b);
      for (const a of axes) s.splice(a, 0, 1);
      set(0, { shape: s, elem: x().elem, values: x().values });
      return;
    }
    case "Squeeze": {
      const s = x().shape;
      const axes = has(1) ? vals(1).map((a) => normAxis(a, s.length)) : s.flatMap((d, i) => (d === 1 ? [i] : []));
      set(0, { shape: s.filter((_, i) => !axes.includes(i)), elem: x().elem, values: x().values });
      return;
    }
    case "Expand":
      set(0, { shape: broadcastShapes(x().shape, vals(1), n.name), elem: x().elem });
      return;
    case "ReduceMean": case "ReduceSum": {
      const s = x().shape;
      const keep = attr(n, "keepdims", 1);
      const given = has(1) ? vals(1) : [];
      if (!given.length && attr(n, "noop_with_empty_axes", 0)) throw new Error(`${n.name}: noop_with_empty_axes is not supported`);
      const axes = given.length ? given.map((a) => normAxis(a, s.length)) : s.map((_, i) => i);
      const shape = keep ? s.map((d, i) => (axes.includes(i) ? 1 : d)) : s.filter((_, i) => !axes.includes(i));
      set(0, { shape, elem: x().elem });
      return;
    }
    case "Shape": {
      const s = x().shape;
      const start = normAxis(attr(n, "start", 0), s.length);
      const end = Math.min(normAxis(attr(n, "end", s.length), s.length), s.length);
      const values = s.slice(start, end);
      set(0, { shape: [values.length], elem: "I64", values });
      return;
    }
    case "ConstantOfShape":
      set(0, { shape: vals(0), elem: "F32" });
      return;
    case "Pad": {
      const s = x().shape;
      const p = vals(1);
      set(0, { shape: s.map((d, i) => d + p[i] + p[i + s.length]), elem: x().elem });
      return;
    }
    default:
      throw new Error(`shape inference: op ${n.opType} (node ${n.name}) is not supported by the training graph builder`);
  }
}

/** ONNX Slice semantics (steps must be 1), resolved to [start, end) per axis of `shape`. */
export function sliceRanges(shape: number[], starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined, what: string) {
  const r = shape.map((d) => ({ start: 0, end: d }));
  const ax = axes ?? starts.map((_, i) => i);
  ax.forEach((a0, i) => {
    const a = normAxis(a0, shape.length);
    if (steps && steps[i] !== 1) throw new Error(`${what}: Slice steps other than 1 are not supported`);
    const d = shape[a];
    const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
    r[a] = { start: clamp(starts[i]), end: Math.max(clamp(starts[i]), clamp(ends[i])) };
  });
  return r;
}
