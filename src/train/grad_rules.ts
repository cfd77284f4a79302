// Vector-Jacobian products of the ONNX ops the models and losses use, one rule per op.
//
// A rule gets the node, the gradients of its outputs and its forward values, and returns
// one gradient per input (null where none is needed). Rules build with the Builder of
// src/train/autodiff.ts, which tracks shapes. Matmul gradients use FusedMatMul's transA /
// transB instead of transposed copies; weight gradients of 2-D weights flatten the batch
// dims into one GEMM instead of materialising a per-batch product and summing it.

import type { Value } from "../onnx/graph.js";
import type { Builder, GradRule, RuleContext } from "./autodiff.js";
import { attrOf, sliceRanges } from "./shapes.js";

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

/** Wrap a rule that only produces gradients for elementwise unary ops. */
const unary = (f: (c: RuleContext, dy: Value) => Value): GradRule => (c) => [f(c, c.dy(0)!)];

function constValues(c: RuleContext, i: number, what: string): number[] {
  const v = c.b.meta(c.node.inputs[i]).values;
  if (!v) throw new Error(`autodiff: ${c.node.opType} node ${c.node.name}: ${what} must be a build-time constant`);
  return v;
}

function matmulRule(c: RuleContext): (Value | null)[] {
  const { b, node } = c;
  const fused = node.opType === "FusedMatMul";
  const ta = fused ? attrOf(node, "transA", 0) : 0;
  const tb = fused ? attrOf(node, "transB", 0) : 0;
  const alpha = fused ? attrOf(node, "alpha", 1) : 1;
  const A = c.x(0), B = c.x(1), dY = c.dy(0)!;
  const sa = b.shape(A), sb = b.shape(B), sy = b.shape(dY);
  let dA: Value | null = null, dB: Value | null = null;
  if (c.needs(0)) {
    // Y = α op(A) op(B): d op(A) = α dY op(B)ᵀ.
    dA = ta
      ? b.matmul(B, dY, tb, 1, alpha) // dA = α op(B) dYᵀ
      : b.matmul(dY, B, 0, tb ? 0 : 1, alpha); // dA = α dY op(B)ᵀ
    dA = b.reduceTo(dA, sa);
  }
  if (c.needs(1)) {
    if (sb.length === 2 && sa.length > 2 && !ta) {
      // A 2-D weight under a batched activation: one GEMM over the flattened rows.
      const K = sa[sa.length - 1], N = sy[sy.length - 1];
      const A2 = b.reshape(A, [-1, K]), dY2 = b.reshape(dY, [-1, N]);
      dB = tb ? b.matmul(dY2, A2, 1, 0, alpha) : b.matmul(A2, dY2, 1, 0, alpha);
    } else {
      dB = tb
        ? b.matmul(dY, A, 1, ta, alpha) // op(B) = Bᵀ: dB = α dYᵀ op(A)
        : b.matmul(A, dY, ta ? 0 : 1, 0, alpha); // dB = α op(A)ᵀ dY
      dB = b.reduceTo(dB, sb);
    }
  }
  return [dA, dB];
}

/** Mean and 1/sqrt(var + eps) over `axes` (keepdims), and the normalized x. */
function normalize(b: Builder, x: Value, axes: number[], eps: number, centered: boolean) {
  if (!centered) {
    const ms = b.reduceMean(b.mul(x, x), axes, true);
    const rstd = b.op1("Reciprocal", [b.op1("Sqrt", [b.add(ms, b.scalar(eps, x))])]);
    return { rstd, xhat: b.mul(x, rstd) };
  }
  const mu = b.reduceMean(x, axes, true);
  const xc = b.sub(x, mu);
  const v = b.reduceMean(b.mul(xc, xc), axes, true);
  const rstd = b.op1("Reciprocal", [b.op1("Sqrt", [b.add(v, b.scalar(eps, x))])]);
  return { rstd, xhat: b.mul(xc, rstd) };
}

/** dx of y = xhat(x) given g = dL/dxhat: rstd · (g − mean(g) − xhat · mean(g · xhat)) (without the mean(g) term for RMS). */
function normInputGrad(b: Builder, g: Value, xhat: Value, rstd: Value, axes: number[], centered: boolean): Value {
  let t = b.sub(g, b.mul(xhat, b.reduceMean(b.mul(g, xhat), axes, true)));
  if (centered) t = b.sub(t, b.reduceMean(g, axes, true));
  return b.mul(rstd, t);
}

function layerNormRule(centered: boolean): GradRule {
  return (c) => {
    const { b, node } = c;
    const x = c.x(0), dy = c.dy(0)!;
    if (node.outputs.slice(1).some((_, k) => c.dy(k + 1))) throw new Error(`autodiff: ${node.name}: gradients through the mean / inv-std outputs are not supported`);
    const rank = b.shape(x).length;
    const axes = range(normAxis(attrOf(node, "axis", -1), rank), rank);
    const eps = attrOf(node, "epsilon", 1e-5);
    const { rstd, xhat } = normalize(b, x, axes, eps, centered);
    const scale = c.x(1);
    const out: (Value | null)[] = [null, null, null];
    if (c.needs(0)) out[0] = normInputGrad(b, b.mul(dy, scale), xhat, rstd, axes, centered);
    if (c.needs(1)) out[1] = b.reduceTo(b.mul(dy, xhat), b.shape(scale));
    if (node.inputs[2] && c.needs(2)) out[2] = b.reduceTo(dy, b.shape(c.x(2)));
    return out;
  };
}

const instanceNormRule: GradRule = (c) => {
  const { b, node } = c;
  const x = c.x(0), dy = c.dy(0)!;
  const s = b.shape(x);
  const axes = range(2, s.length);
  const { rstd, xhat } = normalize(b, x, axes, attrOf(node, "epsilon", 1e-5), true);
  const perChannel = [s[1], ...axes.map(() => 1)];
  const scale = b.reshape(c.x(1), perChannel);
  const out: (Value | null)[] = [null, null, null];
  if (c.needs(0)) out[0] = normInputGrad(b, b.mul(dy, scale), xhat, rstd, axes, true);
  if (c.needs(1)) out[1] = b.reshape(b.reduceSum(b.mul(dy, xhat), [0, ...axes], false), [s[1]]);
  if (c.needs(2)) out[2] = b.reshape(b.reduceSum(dy, [0, ...axes], false), [s[1]]);
  return out;
};

/**
 * com.microsoft MultiHeadAttention (q, k, v as (B, S, H·D)): the forward stays the fused
 * kernel; the backward recomputes the probabilities P = softmax(α Q Kᵀ) per head and
 * applies dV = Pᵀ dO, dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)), dQ = α dS K, dK = α dSᵀ Q,
 * in groups of heads (GradientOptions.attentionChunkBytes).
 */
const attentionRule: GradRule = (c) => {
  const { b, node } = c;
  // Input 5 is an additive attention bias (B or 1, H or 1, S, Sk), e.g. a causal mask: a constant
  // added to the scores, so the backward adds it again when it recomputes P and needs no gradient for it.
  if (node.inputs.length > 3 && node.inputs.slice(3).some((i, j) => i && j !== 2)) throw new Error(`autodiff: ${node.name}: MultiHeadAttention with a qkv bias, key padding mask or past state is not supported`);
  if (c.needs(5)) throw new Error(`autodiff: ${node.name}: gradients of an attention bias are not supported`);
  const H = attrOf(node, "num_heads", 1);
  const q = c.x(0), k = c.x(1), v = c.x(2), dO = c.dy(0)!;
  const [B, S, QD] = b.shape(q), Sk = b.shape(k)[1], VD = b.shape(v)[2];
  const D = QD / H, Dv = VD / H;
  const alpha = attrOf(node, "scale", 1 / Math.sqrt(D));
  const heads = (t: Value, seq: number, d: number) => b.transpose(b.reshape(t, [B, seq, H, d]), [0, 2, 1, 3]);
  const merge = (t: Value, seq: number, d: number) => b.reshape(b.transpose(t, [0, 2, 1, 3]), [B, seq, H * d]);
  const Q = heads(q, S, D), K = heads(k, Sk, D), V = heads(v, Sk, Dv), dO4 = heads(dO, S, Dv);

  // The (B, heads, S, Sk) score matrices are the backward's largest tensors (2 GB each for 24
  // heads at 4,608 tokens). Heads are processed in groups whose matrices fit the budget, each
  // group's inputs tied to the previous group's result so that only one group's are alive.
  const perHead = B * S * Sk * (b.meta(q).elem === "F64" ? 8 : 4);
  const group = Math.max(1, Math.min(H, Math.floor(b.attentionChunkBytes / perHead)));
  const sizes = Array.from({ length: Math.ceil(H / group) }, (_, i) => Math.min(group, H - i * group));
  const parts = (t: Value) => (sizes.length === 1 ? [t] : b.op("Split", [t, b.ints(sizes)], { axis: 1 }, { outputs: sizes.length }));
  const [Qs, Ks, Vs, dOs] = [parts(Q), parts(K), parts(V), parts(dO4)];
  const attnBias = node.inputs[5] ? c.x(5) : null;
  const biasParts = attnBias ? (b.shape(attnBias)[1] === 1 ? sizes.map(() => attnBias) : parts(attnBias)) : null;
  // rowsum(P ∘ dP) = Σⱼ Pᵢⱼ (dOᵢ · Vⱼ) = dOᵢ · Oᵢ: one dot product per query row, read from the
  // forward output O, instead of a product and a sum over each (S, Sk) score matrix (FlashAttention's
  // backward does the same). (B, H, S, 1), split like the heads.
  const needsScores = c.needs(0) || c.needs(1);
  const rowDots = needsScores ? parts(b.transpose(b.reduceSum(b.reshape(b.mul(dO, c.y(0)), [B, S, H, Dv]), [-1], true), [0, 2, 1, 3])) : [];
  const dQ: Value[] = [], dK: Value[] = [], dV: Value[] = [];
  let previous: Value | null = null;
  sizes.forEach((_, i) => {
    let Qi = Qs[i], dOi = dOs[i];
    if (previous) {
      const zero = b.mul(b.reduceSum(previous, [], false), b.scalar(0, previous));
      Qi = b.add(Qi, zero);
      dOi = b.add(dOi, zero);
    }
    const scores = b.matmul(Qi, Ks[i], 0, 1, alpha);
    const P = b.op1("Softmax", [biasParts ? b.add(scores, biasParts[i]) : scores], { axis: -1 });
    if (c.needs(2)) dV.push(b.matmul(P, dOi, 1, 0));
    if (needsScores) {
      const dP = b.matmul(dOi, Vs[i], 0, 1);
      const dS = b.mul(P, b.sub(dP, rowDots[i]));
      if (c.needs(0)) dQ.push(b.matmul(dS, Ks[i], 0, 0, alpha));
      if (c.needs(1)) dK.push(b.matmul(dS, Qi, 1, 0, alpha));
    }
    previous = dQ[dQ.length - 1] ?? dK[dK.length - 1] ?? dV[dV.length - 1];
  });
  const joined = (xs: Value[]) => (xs.length === 1 ? xs[0] : b.op1("Concat", xs, { axis: 1 }));
  return [
    dQ.length ? merge(joined(dQ), S, D) : null,
    dK.length ? merge(joined(dK), Sk, D) : null,
    dV.length ? merge(joined(dV), Sk, Dv) : null,
  ];
};

/** com.microsoft RotaryEmbedding rotates pairs by position angles: its transpose rotates by minus the angle (sin → −sin). */
const rotaryRule: GradRule = (c) => {
  const { b, node } = c;
  if (c.needs(2) || c.needs(3)) throw new Error(`autodiff: ${node.name}: gradients of the rotary tables are not supported`);
  const dx = b.ms("RotaryEmbedding", [c.dy(0)!, c.x(1), c.x(2), b.neg(c.x(3))], node.attrs ?? {});
  return [dx, null, null, null];
};

/** Conv (2-D, group 1, no dilation): dX = ConvTranspose(dY, W); dW = correlation of X with dY (dY as a dilated kernel). */
const convRule: GradRule = (c) => {
  const { b, node } = c;
  const x = c.x(0), w = c.x(1), dy = c.dy(0)!;
  const sx = b.shape(x), sw = b.shape(w), sy = b.shape(dy);
  const nd = sw.length - 2;
  if (nd !== 2) throw new Error(`autodiff: ${node.name}: only 2-D Conv is supported`);
  const k = sw.slice(2);
  const strides = attrOf<number[]>(node, "strides", [1, 1]);
  const pads = attrOf<number[]>(node, "pads", [0, 0, 0, 0]);
  const dil = attrOf<number[]>(node, "dilations", [1, 1]);
  if (dil.some((d) => d !== 1) || attrOf(node, "group", 1) !== 1) throw new Error(`autodiff: ${node.name}: dilated or grouped Conv is not supported`);
  if (node.attrs?.auto_pad && node.attrs.auto_pad !== "NOTSET") throw new Error(`autodiff: ${node.name}: auto_pad is not supported`);
  const out: (Value | null)[] = [null, null, null];
  if (c.needs(0)) {
    const outputPadding = k.map((kk, i) => sx[2 + i] - (strides[i] * (sy[2 + i] - 1) + kk - pads[i] - pads[i + nd]));
    const attrs: Record<string, number[]> = { kernel_shape: k, strides, pads };
    if (outputPadding.some((p) => p !== 0)) attrs.output_padding = outputPadding;
    out[0] = b.op1("ConvTranspose", [dy, w], attrs);
  }
  if (c.needs(1)) {
    // dW[co, ci, a, b] = Σ_{n, i, j} dY[n, co, i, j] · Xpad[n, ci, s·i + a, s·j + b]:
    // a convolution of Xᵀ (ci as batch, n as channels) with dYᵀ (co as filters) dilated by the stride.
    const xt = b.transpose(x, [1, 0, 2, 3]);
    const dyt = b.transpose(dy, [1, 0, 2, 3]);
    const endPads = k.map((kk, i) => kk + strides[i] * (sy[2 + i] - 1) - sx[2 + i] - pads[i]);
    const r = b.op1("Conv", [xt, dyt], {
      kernel_shape: sy.slice(2), dilations: strides, strides: [1, 1],
      pads: [pads[0], pads[1], Math.max(0, endPads[0]), Math.max(0, endPads[1])],
    });
    let rk = r;
    const rs = b.shape(r);
    if (rs[2] !== k[0] || rs[3] !== k[1]) {
      rk = b.op1("Slice", [r, b.ints([0, 0]), b.ints([k[0], k[1]]), b.ints([2, 3])]);
    }
    out[1] = b.transpose(rk, [1, 0, 2, 3]);
  }
  if (node.inputs[2] && c.needs(2)) out[2] = b.reduceSum(dy, [0, 2, 3], false);
  return out;
};

/** Resize, nearest, asymmetric, floor, integer scales: each input pixel's gradient is the sum over its block. */
const resizeRule: GradRule = (c) => {
  const { b, node } = c;
  const mode = attrOf<string>(node, "mode", "nearest");
  const ctm = attrOf<string>(node, "coordinate_transformation_mode", "half_pixel");
  const nm = attrOf<string>(node, "nearest_mode", "round_prefer_floor");
  if (mode !== "nearest" || ctm !== "asymmetric" || nm !== "floor") throw new Error(`autodiff: ${node.name}: only nearest / asymmetric / floor Resize is supported`);
  const scales = constValues(c, 2, "scales");
  if (scales.some((s) => !Number.isInteger(s))) throw new Error(`autodiff: ${node.name}: only integer Resize scales are supported`);
  const sx = b.shape(c.x(0));
  const split = sx.flatMap((d, i) => [d, scales[i]]);
  const summed = b.reduceSum(b.reshape(c.dy(0)!, split), sx.map((_, i) => 2 * i + 1), false);
  return [b.reshape(summed, sx)];
};

const sameShapeAsInput: GradRule = (c) => [c.b.reshape(c.dy(0)!, c.b.shape(c.x(0))), null];

function where(b: Builder, cond: Value, dy: Value, inFalse: boolean): Value {
  const z = b.scalar(0, dy);
  return b.op1("Where", inFalse ? [cond, z, dy] : [cond, dy, z]);
}

export const GRAD_RULES: Record<string, GradRule> = {
  Identity: (c) => [c.dy(0)],
  Cast: (c) => {
    const elem = c.b.meta(c.node.inputs[0]).elem;
    if (elem !== "F32" && elem !== "F64") throw new Error(`autodiff: ${c.node.name}: gradient through a Cast from ${elem}`);
    return [c.b.op1("Cast", [c.dy(0)!], { to: elem === "F64" ? 11 : 1 })];
  },
  Neg: unary((c, dy) => c.b.neg(dy)),
  Add: (c) => [c.needs(0) ? c.b.reduceTo(c.dy(0)!, c.b.shape(c.x(0))) : null, c.needs(1) ? c.b.reduceTo(c.dy(0)!, c.b.shape(c.x(1))) : null],
  Sub: (c) => [c.needs(0) ? c.b.reduceTo(c.dy(0)!, c.b.shape(c.x(0))) : null, c.needs(1) ? c.b.neg(c.b.reduceTo(c.dy(0)!, c.b.shape(c.x(1)))) : null],
  Mul: (c) => {
    const { b } = c, dy = c.dy(0)!;
    if (c.node.inputs[0] === c.node.inputs[1]) return [b.mul(b.mul(dy, c.x(0)), b.scalar(2, dy)), null];
    return [c.needs(0) ? b.reduceTo(b.mul(dy, c.x(1)), b.shape(c.x(0))) : null, c.needs(1) ? b.reduceTo(b.mul(dy, c.x(0)), b.shape(c.x(1))) : null];
  },
  Div: (c) => {
    const { b } = c, dy = c.dy(0)!;
    return [
      c.needs(0) ? b.reduceTo(b.div(dy, c.x(1)), b.shape(c.x(0))) : null,
      c.needs(1) ? b.reduceTo(b.neg(b.div(b.mul(dy, c.y(0)), c.x(1))), b.shape(c.x(1))) : null,
    ];
  },
  Pow: (c) => {
    const { b } = c;
    if (c.needs(1)) throw new Error(`autodiff: ${c.node.name}: gradients of a Pow exponent are not supported`);
    const p = constValues(c, 1, "the exponent");
    if (p.length !== 1) throw new Error(`autodiff: ${c.node.name}: only a scalar Pow exponent is supported`);
    const x = c.x(0);
    const xp = b.op1("Pow", [x, b.scalar(p[0] - 1, x)]);
    return [b.mul(c.dy(0)!, b.mul(xp, b.scalar(p[0], x))), null];
  },
  Sqrt: unary((c, dy) => c.b.div(c.b.mul(dy, c.b.scalar(0.5, dy)), c.y(0))),
  Exp: unary((c, dy) => c.b.mul(dy, c.y(0))),
  Log: unary((c, dy) => c.b.div(dy, c.x(0))),
  Reciprocal: unary((c, dy) => c.b.neg(c.b.mul(dy, c.b.mul(c.y(0), c.y(0))))),
  Sigmoid: unary((c, dy) => {
    const { b } = c, y = c.y(0);
    return b.mul(dy, b.mul(y, b.sub(b.scalar(1, y), y)));
  }),
  Tanh: unary((c, dy) => {
    const { b } = c, y = c.y(0);
    return b.mul(dy, b.sub(b.scalar(1, y), b.mul(y, y)));
  }),
  Erf: unary((c, dy) => {
    const { b } = c, x = c.x(0);
    return b.mul(dy, b.mul(b.op1("Exp", [b.neg(b.mul(x, x))]), b.scalar(2 / Math.sqrt(Math.PI), x)));
  }),
  Relu: unary((c, dy) => where(c.b, c.b.op1("Greater", [c.x(0), c.b.scalar(0, dy)]), dy, false)),
  Clip: (c) => {
    // torch.clamp's gradient: passed where lo <= x <= hi.
    const { b } = c, x = c.x(0), dy = c.dy(0)!;
    if (c.needs(1) || c.needs(2)) throw new Error(`autodiff: ${c.node.name}: gradients of Clip bounds are not supported`);
    let keep: Value | null = null;
    if (c.node.inputs[1]) keep = b.op1("GreaterOrEqual", [x, c.x(1)]);
    if (c.node.inputs[2]) {
      const le = b.op1("LessOrEqual", [x, c.x(2)]);
      keep = keep ? b.op1("And", [keep, le]) : le;
    }
    return [keep ? where(b, keep, dy, false) : dy, null, null];
  },
  Softmax: (c) => {
    const { b } = c, y = c.y(0), dy = c.dy(0)!;
    const axis = attrOf(c.node, "axis", -1);
    return [b.mul(y, b.sub(dy, b.reduceSum(b.mul(dy, y), [axis], true)))];
  },
  MatMul: matmulRule,
  FusedMatMul: matmulRule,
  LayerNormalization: layerNormRule(true),
  SimplifiedLayerNormalization: layerNormRule(false),
  InstanceNormalization: instanceNormRule,
  MultiHeadAttention: attentionRule,
  RotaryEmbedding: rotaryRule,
  Conv: convRule,
  Resize: resizeRule,
  Reshape: sameShapeAsInput,
  Unsqueeze: sameShapeAsInput,
  Squeeze: sameShapeAsInput,
  Flatten: sameShapeAsInput,
  Transpose: (c) => {
    const rank = c.b.shape(c.x(0)).length;
    const perm = attrOf<number[]>(c.node, "perm", range(0, rank).reverse());
    const inv = new Array(rank);
    perm.forEach((p, i) => (inv[p] = i));
    return [c.b.transpose(c.dy(0)!, inv)];
  },
  Concat: (c) => {
    const { b, node } = c;
    const rank = b.shape(c.x(0)).length;
    const axis = normAxis(attrOf(node, "axis", 0), rank);
    const sizes = node.inputs.map((i) => b.meta(i).shape[axis]);
    const parts = b.op("Split", [c.dy(0)!, b.ints(sizes)], { axis }, { outputs: sizes.length });
    return parts.map((p, i) => (c.needs(i) ? p : null));
  },
  Split: (c) => {
    const { b, node } = c;
    const sx = b.shape(c.x(0));
    const axis = normAxis(attrOf(node, "axis", 0), sx.length);
    const elem = b.meta(c.x(0)).elem;
    const parts = node.outputs.map((o, k) => c.dy(k) ?? b.zeros(b.meta(o).shape, elem));
    return [parts.length === 1 ? parts[0] : b.op1("Concat", parts, { axis }), null];
  },
  Slice: (c) => {
    const { b, node } = c;
    const sx = b.shape(c.x(0));
    const vals = (i: number) => (node.inputs[i] ? constValues(c, i, "Slice parameters") : undefined);
    const r = sliceRanges(sx, vals(1)!, vals(2)!, vals(3), vals(4), node.name);
    const pads = [...r.map((q) => q.start), ...r.map((q, i) => sx[i] - q.end)];
    const dy = c.dy(0)!;
    return [pads.every((p) => p === 0) ? dy : b.op1("Pad", [dy, b.ints(pads), b.scalar(0, dy)]), null, null, null, null];
  },
  Gather: (c) => {
    const { b, node } = c;
    const axis = normAxis(attrOf(node, "axis", 0), b.shape(c.x(0)).length);
    if (axis !== 0) throw new Error(`autodiff: ${node.name}: Gather gradients are supported on axis 0 only`);
    const x = c.x(0), dy = c.dy(0)!;
    const zeros = b.zeros(b.shape(x), b.meta(x).elem);
    const idx = b.op1("Unsqueeze", [c.x(1), b.ints([-1])]);
    return [b.op1("ScatterND", [zeros, idx, dy], { reduction: "add" }), null];
  },
  Expand: (c) => [c.b.reduceTo(c.dy(0)!, c.b.shape(c.x(0))), null],
  Where: (c) => {
    const { b } = c, cond = c.x(0), dy = c.dy(0)!;
    return [
      null,
      c.needs(1) ? b.reduceTo(where(b, cond, dy, false), b.shape(c.x(1))) : null,
      c.needs(2) ? b.reduceTo(where(b, cond, dy, true), b.shape(c.x(2))) : null,
    ];
  },
  ReduceSum: (c) => reduceRule(c, false),
  ReduceMean: (c) => reduceRule(c, true),
};

function reduceRule(c: RuleContext, mean: boolean): (Value | null)[] {
  const { b, node } = c;
  const sx = b.shape(c.x(0));
  const given = node.inputs[1] ? constValues(c, 1, "reduction axes") : [];
  const axes = given.length ? given.map((a) => normAxis(a, sx.length)) : range(0, sx.length);
  const kept = sx.map((d, i) => (axes.includes(i) ? 1 : d));
  let d = b.reshape(c.dy(0)!, kept);
  if (mean) d = b.mul(d, b.scalar(1 / axes.reduce((n, a) => n * sx[a], 1), d));
  return [b.op1("Expand", [d, b.ints(sx)]), null];
}
