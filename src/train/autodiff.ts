// Reverse-mode gradients over a forward Graph (src/onnx/graph.ts).
//
// appendGradients() walks the forward nodes backwards from a scalar loss and appends,
// for every node on a path from a trainable graph input to the loss, the nodes of its
// vector-Jacobian product (src/train/grad_rules.ts). The gradients become graph outputs
// `grad.<input>`, so ONNX Runtime runs forward and backward as one graph and its memory
// planner frees each activation after its last (backward) use.
//
// Frozen weights are initializers (file-backed, in their stored dtype): nothing depends
// on them for gradients, so no gradient is computed for them and they are not copied.
//
// Activation checkpointing (opts.checkpoint): nodes are grouped into segments (e.g. one
// per transformer block, by node-name scope). When the backward first needs a value made
// inside a segment, the segment's forward is emitted again ("recomputed") and the backward
// reads the recomputed values, so the forward's copies die as soon as the forward is past
// them. The recomputation's inputs are tied to a gradient value (x + 0·Σ dY) so that ONNX
// Runtime can neither schedule it early nor merge it with the forward (common
// subexpression elimination): only one segment's activations are alive at a time.

import type { Graph } from "../onnx/graph.js";
import { Value } from "../onnx/graph.js";
import type { AttrValue, NodeProto } from "../onnx/proto.js";
import { attrOf, inferNode, inferShapes, type Elem, type Metas, type ValueMeta } from "./shapes.js";
import { GRAD_RULES } from "./grad_rules.js";

export interface GradientOptions {
  /** Segment key of a forward node for activation checkpointing (null: not checkpointed). */
  checkpoint?: (node: NodeProto) => string | null;
  /**
   * Convert stored non-float32 weights again in the backward instead of keeping the forward's
   * float32 conversions alive until then (default true; see Reconvert). False only to measure.
   */
  reconvertWeights?: boolean;
  /**
   * Largest (batch, heads, S, Sk) score matrix an attention backward may hold at once: heads are
   * processed in groups that fit (default 256 MiB; at least one head per group).
   */
  attentionChunkBytes?: number;
  /**
   * Trainable tables read by one Gather each (axis 0), whose gradient is returned by the rows
   * looked up instead of as a dense table: the output `grad_rows.<name>` holds the gradient of
   * each lookup (the indices' shape plus the row width), and `rowOutputs` says which indices
   * they belong to. Why: a 151,936-row token table's dense gradient is a scatter into 39 MB of
   * zeros that the caller then scans back into a few hundred rows, a quarter of a small text
   * encoder's training step (docs/flux2-mini.md, session 36). sumLookupRows()
   * (src/train/row_sparse.ts) turns the rows into the same row-sparse gradient, bit for bit.
   */
  gatherRows?: ReadonlySet<string>;
}

/** A table's gradient by lookup (GradientOptions.gatherRows). */
export interface LookupRowsOutput {
  /** Graph output holding one gradient row per lookup: shape [...indices, width]. */
  rows: string;
  /** The graph value the Gather read its row indices from. */
  indices: string;
}

export interface GradientResult {
  /** Trainable input name → graph output name holding its gradient (tables of gatherRows excepted). */
  outputs: Map<string, string>;
  /** Tables of GradientOptions.gatherRows → their gradient by lookup. */
  rowOutputs: Map<string, LookupRowsOutput>;
  /** Every value's static shape (forward and backward). */
  metas: Metas;
}

/** Emits nodes into the graph and keeps shapes up to date; what the gradient rules build with. */
export class Builder {
  private floatConsts = new Map<string, Value>();

  constructor(readonly g: Graph, readonly metas: Metas, readonly attentionChunkBytes = 256 * 2 ** 20) {}

  meta(v: Value | string): ValueMeta {
    const name = typeof v === "string" ? v : v.name;
    const m = this.metas.get(name);
    if (!m) throw new Error(`autodiff: no shape known for value "${name}"`);
    return m;
  }

  shape(v: Value): number[] {
    return this.meta(v).shape;
  }

  /**
   * While a gradient rule runs: maps a forward value it reads to the value the backward reads
   * instead (a re-conversion, a recomputation), at the moment a node reads it, so that a value a
   * rule only asks the shape of is neither converted nor recomputed.
   */
  resolve: ((name: string) => string) | null = null;

  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: number } = {}): Value[] {
    const r = this.resolve;
    if (r) inputs = inputs.map((v) => (v ? new Value(r(v.name)) : v));
    const outs = this.g.op(opType, inputs, attrs, opts);
    inferNode(this.g.nodes[this.g.nodes.length - 1], this.metas);
    return outs;
  }

  op1(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}, domain?: string): Value {
    return this.op(opType, inputs, attrs, { domain })[0];
  }

  ms(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}): Value {
    return this.op1(opType, inputs, attrs, "com.microsoft");
  }

  /** A float scalar constant of `like`'s element type (float32 or float64). */
  scalar(x: number, like: Value | Elem): Value {
    const elem = typeof like === "string" ? like : this.meta(like).elem;
    if (elem === "F32") {
      const v = this.g.scalar(x);
      if (!this.metas.has(v.name)) this.metas.set(v.name, { shape: [], elem: "F32", values: [Math.fround(x)] });
      return v;
    }
    if (elem !== "F64") throw new Error(`autodiff: gradients of ${elem} values are not supported (float32 or float64 only)`);
    const key = `F64:${x}`;
    let v = this.floatConsts.get(key);
    if (!v) {
      const name = `grad_const_f64_${this.floatConsts.size}`;
      const bytes = new Uint8Array(Float64Array.of(x).buffer);
      this.g.initializers.push({ name, source: { kind: "data", bytes, dtype: "F64", shape: [] } });
      v = new Value(name);
      this.metas.set(name, { shape: [], elem: "F64", values: [x] });
      this.floatConsts.set(key, v);
    }
    return v;
  }

  /** An int64 constant (shapes, axes, pads). */
  ints(values: number[]): Value {
    const v = this.g.constant(values);
    if (!this.metas.has(v.name)) this.metas.set(v.name, { shape: [values.length], elem: "I64", values: [...values] });
    return v;
  }

  add(a: Value, b: Value) { return this.op1("Add", [a, b]); }
  sub(a: Value, b: Value) { return this.op1("Sub", [a, b]); }
  mul(a: Value, b: Value) { return this.op1("Mul", [a, b]); }
  div(a: Value, b: Value) { return this.op1("Div", [a, b]); }
  neg(a: Value) { return this.op1("Neg", [a]); }
  reshape(a: Value, shape: number[]) {
    return sameShape(this.shape(a), shape) ? a : this.op1("Reshape", [a, this.ints(shape)]);
  }
  transpose(a: Value, perm: number[]) { return this.op1("Transpose", [a], { perm }); }
  reduceSum(a: Value, axes: number[], keepdims: boolean) {
    return this.op1("ReduceSum", [a, this.ints(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceMean(a: Value, axes: number[], keepdims: boolean) {
    return this.op1("ReduceMean", [a, this.ints(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  /** FusedMatMul: alpha · op(a) · op(b). */
  matmul(a: Value, b: Value, transA = 0, transB = 0, alpha = 1): Value {
    const attrs: Record<string, AttrValue> = {};
    if (transA) attrs.transA = 1;
    if (transB) attrs.transB = 1;
    if (alpha !== 1) attrs.alpha = { float: alpha };
    if (!transA && !transB && alpha === 1) return this.op1("MatMul", [a, b]);
    return this.ms("FusedMatMul", [a, b], attrs);
  }
  zeros(shape: number[], elem: Elem): Value {
    return this.op1("Expand", [this.scalar(0, elem), this.ints(shape)]);
  }

  /** Sum a gradient of broadcast shape back to `shape` (the operand's shape). */
  reduceTo(d: Value, shape: number[]): Value {
    const from = this.shape(d);
    if (sameShape(from, shape)) return d;
    const lead = from.length - shape.length;
    const axes: number[] = [];
    for (let i = 0; i < from.length; i++) {
      if (i < lead) axes.push(i);
      else if (shape[i - lead] === 1 && from[i] !== 1) axes.push(i);
      else if (shape[i - lead] !== from[i]) throw new Error(`autodiff: cannot reduce a gradient of shape [${from}] to [${shape}]`);
    }
    const r = axes.length ? this.reduceSum(d, axes, true) : d;
    return this.reshape(r, shape);
  }
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const FLOAT: ReadonlySet<Elem> = new Set(["F32", "F64"]);

/** What a rule sees: the node, its output gradients, and access to forward values. */
export interface RuleContext {
  b: Builder;
  node: NodeProto;
  /**
   * A forward value (input or output of `node`). Nodes the rule builds read it through
   * Builder.resolve: re-converted (frozen weights) or recomputed (checkpointing) there.
   */
  x(i: number): Value;
  y(i: number): Value;
  /** Whether input i needs a gradient. */
  needs(i: number): boolean;
  /** Gradient of output k (null: it has none). */
  dy(k: number): Value | null;
}

export type GradRule = (c: RuleContext) => (Value | null)[];

/**
 * Append the gradients of scalar `loss` with respect to the graph inputs `wrt` as outputs
 * `grad.<name>`. `inputShapes` gives concrete dims of every graph input with symbolic dims.
 */
export function appendGradients(g: Graph, loss: Value, wrt: string[], inputShapes: Record<string, number[]>, opts: GradientOptions = {}): GradientResult {
  const declared = new Set(g.inputs.map((i) => i.name));
  for (const w of wrt) if (!declared.has(w)) throw new Error(`appendGradients: "${w}" is not a graph input (trainable tensors must be inputs)`);
  const metas = inferShapes(g, inputShapes);
  const b = new Builder(g, metas, opts.attentionChunkBytes);
  const lossMeta = b.meta(loss);
  if (lossMeta.shape.reduce((p, q) => p * q, 1) !== 1) throw new Error(`appendGradients: the loss must be a scalar, got shape [${lossMeta.shape}]`);

  const forward = [...g.nodes];
  const trainable = new Set(wrt);
  const lookups = findTableLookups(forward, opts.gatherRows ?? new Set(), trainable, metas);
  const lookupRows = new Map<string, Value>();
  // Which values depend on a trainable input (and are float: indices and shapes never do).
  const live = new Set<string>(wrt);
  for (const n of forward) {
    if (!n.inputs.some((i) => live.has(i))) continue;
    for (const o of n.outputs) if (FLOAT.has(metas.get(o)!.elem)) live.add(o);
  }
  if (!live.has(loss.name)) throw new Error("appendGradients: the loss does not depend on any trainable input");

  const contributions = new Map<string, Value[]>();
  const push = (name: string, v: Value) => {
    const list = contributions.get(name);
    if (list) list.push(v);
    else contributions.set(name, [v]);
  };
  const total = (name: string): Value | null => {
    const list = contributions.get(name);
    if (!list || !list.length) return null;
    if (list.length === 1) return list[0];
    const sum = list.length === 2 ? b.add(list[0], list[1]) : b.op1("Sum", list);
    contributions.set(name, [sum]);
    return sum;
  };
  push(loss.name, b.op1("Expand", [b.scalar(1, lossMeta.elem), b.ints(lossMeta.shape)]));

  const reconvert = new Reconvert(b, opts.reconvertWeights === false ? [] : forward, "backward");
  // A recomputed segment converts its weights from a third alias: re-emitting the forward's Cast
  // of the same initializer would let ONNX Runtime's common subexpression elimination merge the
  // two, keeping every forward conversion alive until its segment is recomputed (a float32 copy
  // of the model).
  const recompute = opts.checkpoint
    ? new Recompute(b, forward, opts.checkpoint, new Reconvert(b, opts.reconvertWeights === false ? [] : forward, "recompute"))
    : null;

  for (let idx = forward.length - 1; idx >= 0; idx--) {
    const node = forward[idx];
    if (!node.outputs.some((o) => contributions.has(o))) continue;
    if (!node.inputs.some((i) => live.has(i))) continue;
    const table = lookups.get(node);
    if (table !== undefined) {
      // The lookup's output gradient is the table's gradient by row: returned as it is.
      const dy = total(node.outputs[0]);
      if (dy) lookupRows.set(table, dy);
      continue;
    }
    const rule = GRAD_RULES[node.opType];
    if (!rule) throw new Error(`autodiff: no gradient rule for op ${node.opType} (node ${node.name})`);
    const dys = node.outputs.map((o) => total(o));
    const tie = dys.find((d) => d !== null)!;
    // Forward values are read as the backward's own conversions of frozen weights and, inside a
    // checkpointed segment, as recomputations of the same segment's values; values from other
    // segments (their boundaries) or from outside any segment are read as the forward made them.
    const seg = opts.checkpoint?.(node) ?? null;
    b.resolve = (name) => reconvert.value(name) ?? (recompute && seg !== null ? recompute.value(name, seg, tie) : name);
    const ctx: RuleContext = {
      b, node,
      x: (i) => new Value(node.inputs[i]),
      y: (k) => new Value(node.outputs[k]),
      needs: (i) => !!node.inputs[i] && live.has(node.inputs[i]),
      dy: (k) => dys[k],
    };
    const grads = g.scope(`grad`, () => rule(ctx));
    b.resolve = null;
    g.scope(`grad`, () => tieToParamGrads(b, node, grads, ctx.needs, trainable)).forEach((d, i) => (grads[i] = d));
    grads.forEach((d, i) => {
      if (d && ctx.needs(i)) {
        const want = metas.get(node.inputs[i])!.shape;
        const got = b.shape(d);
        if (!sameShape(want, got)) throw new Error(`autodiff: rule ${node.opType} gave a gradient of shape [${got}] for input [${want}] (node ${node.name})`);
        push(node.inputs[i], d);
      }
    });
  }

  const outputs = new Map<string, string>();
  const rowOutputs = new Map<string, LookupRowsOutput>();
  for (const [node, w] of lookups) {
    const out = metas.get(node.outputs[0])!;
    const rows = lookupRows.get(w) ?? b.zeros(out.shape, out.elem);
    const name = `grad_rows.${w}`;
    g.output(rows, name, "F32", out.shape);
    rowOutputs.set(w, { rows: name, indices: node.inputs[1] });
  }
  for (const w of wrt) {
    if (rowOutputs.has(w)) continue;
    const d = total(w) ?? b.zeros(metas.get(w)!.shape, metas.get(w)!.elem);
    const name = `grad.${w}`;
    g.output(d, name, metas.get(w)!.elem === "F64" ? "F64" : "F32", metas.get(w)!.shape);
    outputs.set(w, name);
  }
  return { outputs, rowOutputs, metas };
}

/** The Gather node of each table of `tables` (GradientOptions.gatherRows), checked to be its only reader. */
function findTableLookups(forward: NodeProto[], tables: ReadonlySet<string>, trainable: ReadonlySet<string>, metas: Metas): Map<NodeProto, string> {
  const found = new Map<NodeProto, string>();
  for (const t of tables) {
    if (!trainable.has(t)) throw new Error(`appendGradients: gatherRows table "${t}" is not among the trainable inputs`);
    const readers = forward.filter((n) => n.inputs.includes(t));
    const n = readers[0];
    if (readers.length !== 1 || n.opType !== "Gather" || n.inputs[0] !== t || Number(attrOf(n, "axis", 0)) !== 0) {
      throw new Error(`appendGradients: gatherRows table "${t}" must be read by exactly one Gather on axis 0 (found ${readers.map((r) => r.opType).join(", ") || "no reader"})`);
    }
    if (FLOAT.has(metas.get(n.inputs[1])!.elem)) throw new Error(`appendGradients: gatherRows table "${t}" is indexed by a float value`);
    found.set(n, t);
  }
  return found;
}

/**
 * A node that reads a trainable input (a LoRA A or B, a weight in full training) gives that
 * input's gradient, a leaf of the backward graph: only the `grad.<name>` output reads it. ONNX
 * Runtime orders execution by a reverse depth-first walk from the graph's leaves, which put these
 * leaf computations after the whole backward chain, so their operands stayed alive until the
 * end: per LoRA'd linear the output gradient dY and the input x (recomputed, when checkpointing),
 * for a klein single block about 0.4 GB (1536 tokens, to_qkv_mlp_proj's dY alone is 162 MiB),
 * block after block (docs/training.md, "klein-4B width at 512²"). So the node's other input
 * gradients, the ones the chain continues with, are tied to the trainable inputs' gradients
 * (d + 0·Σ dW, as Recompute ties): the chain cannot go on before those are computed, and their
 * operands die here. The values are unchanged (adding a zero).
 */
function tieToParamGrads(b: Builder, node: NodeProto, grads: (Value | null)[], needs: (i: number) => boolean, trainable: ReadonlySet<string>): (Value | null)[] {
  const own = grads.filter((d, i): d is Value => !!d && needs(i) && trainable.has(node.inputs[i]));
  if (!own.length || !grads.some((d, i) => d && needs(i) && !trainable.has(node.inputs[i]))) return grads;
  const sums = own.map((d) => b.reduceSum(d, [], false));
  const total = sums.length === 1 ? sums[0] : b.op1("Sum", sums);
  const zero = b.mul(total, b.scalar(0, total));
  return grads.map((d, i) => {
    if (!d || !needs(i) || trainable.has(node.inputs[i])) return d;
    return plusZero(b, d, zero);
  });
}

/** x + zero, the zero cast to x's float type: ties x to the value the zero was made from, without changing it. */
function plusZero(b: Builder, x: Value, zero: Value): Value {
  const elem = b.meta(x).elem;
  return b.add(x, elem === b.meta(zero).elem ? zero : b.op1("Cast", [zero], { to: elem === "F64" ? 11 : 1 }));
}

/** Activation checkpointing: re-emits a segment's forward nodes the first time the backward reads one of its values. */
class Recompute {
  private producer = new Map<string, { node: NodeProto; seg: string }>(); // value name → forward node, segment
  private segments = new Map<string, { zero: Value; made: Map<string, string>; tied: Map<string, string> }>();

  constructor(private b: Builder, forward: NodeProto[], key: (n: NodeProto) => string | null, private reconvert: Reconvert) {
    for (const n of forward) {
      const seg = key(n);
      if (seg === null) continue;
      for (const o of n.outputs) this.producer.set(o, { node: n, seg });
    }
  }

  /**
   * The recomputed copy of `name` (a value made inside a segment), emitting only the segment's
   * nodes it depends on. Emitting the whole segment made nodes whose outputs nothing reads
   * (a block's last projection, its gate and residual add): ONNX Runtime ran those leaves last,
   * holding their inputs (e.g. a single block's 72 MiB to_out input and the 151 MiB float32
   * to_out weight) to the end of the step, and spent a full projection on them.
   */
  value(name: string, seg: string, tie: Value): string {
    const p = this.producer.get(name);
    if (!p || p.seg !== seg) return name;
    const { b } = this;
    const resolve = b.resolve;
    b.resolve = null; // the recomputation reads what make() gives it
    try {
      let st = this.segments.get(seg);
      if (!st) {
        // x + 0·Σ(dY): the recomputation starts only once this gradient exists, and differs from the forward.
        st = { zero: b.mul(b.reduceSum(tie, [], false), b.scalar(0, tie)), made: new Map(), tied: new Map() };
        this.segments.set(seg, st);
      }
      const s = st;
      return b.g.scope(`recompute/${seg}`, () => this.make(name, seg, s));
    } finally {
      b.resolve = resolve;
    }
  }

  private make(name: string, seg: string, st: { zero: Value; made: Map<string, string>; tied: Map<string, string> }): string {
    const hit = st.made.get(name);
    if (hit !== undefined) return hit;
    const { b } = this;
    const p = this.producer.get(name);
    if (!p || p.seg !== seg) {
      // From outside the segment. Only activations (float values made by nodes) are tied; weights and constants are read as they are.
      const m = b.metas.get(name);
      if (!m || !FLOAT.has(m.elem) || !this.isActivation(name)) return name;
      let t = st.tied.get(name);
      if (!t) {
        t = plusZero(b, new Value(name), st.zero).name;
        st.tied.set(name, t);
      }
      return t;
    }
    const n = p.node;
    const converted = this.reconvert.value(n.outputs[0]);
    if (converted !== null) {
      st.made.set(n.outputs[0], converted);
      return converted;
    }
    const inputs = n.inputs.map((i) => (i ? new Value(this.make(i, seg, st)) : null));
    const outs = b.op(n.opType, inputs, n.attrs ?? {}, { domain: n.domain, outputs: n.outputs.length });
    n.outputs.forEach((o, k) => st.made.set(o, outs[k].name));
    return st.made.get(name)!;
  }

  private activations: Set<string> | null = null;
  /**
   * Values computed by nodes from graph inputs: not weights, their conversions or constants, and
   * not the graph inputs themselves (tying a trainable weight would copy it for every segment).
   */
  private isActivation(name: string): boolean {
    if (!this.activations) {
      const inputs = new Set(this.b.g.inputs.map((i) => i.name));
      const dyn = new Set(inputs);
      for (const n of this.b.g.nodes) if (n.inputs.some((i) => dyn.has(i))) for (const o of n.outputs) dyn.add(o);
      for (const i of inputs) dyn.delete(i);
      this.activations = dyn;
    }
    return this.activations.has(name);
  }
}

/**
 * Frozen weights stored in another dtype are converted to float32 by a node (Cast of a bf16
 * initializer, DequantizeLinear of an fp8 one). If the backward read the forward's converted
 * value, ONNX Runtime would hold every converted weight from its forward use to its backward
 * use: a float32 copy of the whole model. So the backward converts again, from a second
 * initializer over the same stored bytes (a distinct name, so common subexpression elimination
 * cannot merge it into the forward's), registered as a conversion so that Graph.serialize
 * places it where ONNX Runtime runs it just before its consumer (see Graph.serialize).
 */
class Reconvert {
  private conversions = new Map<string, { node: NodeProto; init: string }>();
  private done = new Map<string, string>();

  constructor(private b: Builder, forward: NodeProto[], private suffix: string) {
    const stored = new Map(b.g.initializers.filter((i) => i.source.kind === "file").map((i) => [i.name, i]));
    for (const n of forward) {
      if ((n.opType === "Cast" || n.opType === "DequantizeLinear") && stored.has(n.inputs[0])) {
        this.conversions.set(n.outputs[0], { node: n, init: n.inputs[0] });
      }
    }
  }

  /** The backward's own conversion of a converted weight, or null for any other value. */
  value(name: string): string | null {
    const c = this.conversions.get(name);
    if (!c) return null;
    let v = this.done.get(name);
    if (!v) {
      const { g } = this.b;
      const source = g.initializers.find((i) => i.name === c.init)!.source;
      const alias = `${c.init}@${this.suffix}`;
      const out = c.node.opType === "Cast"
        ? g.weight(alias, source)
        : g.dequantizedWeight(alias, source, new Value(c.node.inputs[1]), (c.node.attrs?.axis as number | undefined) ?? 1);
      this.b.metas.set(alias, { shape: [...source.shape], elem: this.b.meta(c.init).elem });
      inferNode(g.nodes[g.nodes.length - 1], this.b.metas);
      v = out.name;
      this.done.set(name, v);
    }
    return v;
  }
}
