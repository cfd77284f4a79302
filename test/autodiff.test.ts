// Every gradient rule of src/train/grad_rules.ts against central finite differences:
// float64 where ONNX Runtime's CPU kernels take doubles, float32 for the rest
// (com.microsoft ops, Conv, normalizations).
import { test } from "node:test";
import assert from "node:assert/strict";
import { OrtBackend } from "../src/backend/ort.js";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Graph, Value, fileSource } from "../src/onnx/graph.js";
import { WeightSet, writeSafetensors } from "../src/io/safetensors.js";
import { f32ToBf16Bits } from "../src/io/dtype.js";
import { appendGradients } from "../src/train/autodiff.js";
import { gradcheck } from "./helpers/gradcheck.js";

const backend = new OrtBackend({ threads: 1 });

/** A float64 scalar constant (Graph.scalar is float32). */
function f64(g: Graph, x: number): Value {
  const name = `test_f64_${g.initializers.length}`;
  g.initializers.push({ name, source: { kind: "data", bytes: new Uint8Array(Float64Array.of(x).buffer), dtype: "F64", shape: [] } });
  return new Value(name);
}

const ints = (g: Graph, v: number[]) => g.constant(v);

/** Several outputs as one flat vector, so one check covers them all. */
const flat = (g: Graph, parts: Value[]) => g.concat(parts.map((p) => g.reshape(p, [-1])), 0);

test("elementwise ops with broadcasting (float64)", async () => {
  await gradcheck(backend, {
    elem: "F64",
    inputs: [{ name: "a", shape: [2, 3, 4] }, { name: "b", shape: [3, 1] }, { name: "c", shape: [4] }],
    build: (g, { a, b, c }) => {
      const s = g.add(g.mul(a, b), g.sub(c, a)); // Add, Mul, Sub with broadcast on both sides
      const d = g.div(s, g.add(g.mul(c, c), f64(g, 1.5))); // Div by a broadcast denominator
      return g.op("Neg", [d])[0];
    },
  });
});

test("unary ops: Sqrt, Exp, Log, Pow, Reciprocal, Sigmoid, Tanh, Relu (float64)", async () => {
  const pos = Array.from({ length: 12 }, (_, i) => 0.3 + 0.17 * i);
  await gradcheck(backend, {
    elem: "F64",
    inputs: [{ name: "p", shape: [3, 4], data: pos }, { name: "x", shape: [3, 4] }],
    build: (g, { p, x }) => {
      const u = g.add(g.sqrt(p), g.op("Log", [p])[0]);
      const v = g.add(g.op("Pow", [p, f64(g, 1.7)])[0], g.op("Reciprocal", [p])[0]);
      const w = g.add(g.sigmoid(x), g.op("Tanh", [x])[0]);
      const z = g.exp(g.mul(x, f64(g, 0.5)));
      const r = g.op("Relu", [g.add(x, f64(g, 0.05))])[0];
      return g.add(g.add(u, v), g.add(g.add(w, z), r));
    },
  });
});

test("Erf in an exact GELU, SiLU and SwiGLU compositions (float32: ORT's Erf has no float64 kernel)", async () => {
  await gradcheck(backend, {
    elem: "F32",
    inputs: [{ name: "x", shape: [3, 8] }],
    build: (g, { x }) => {
      const gelu = g.mul(g.mul(x, g.scalar(0.5)), g.add(g.op("Erf", [g.mul(x, g.scalar(Math.SQRT1_2))])[0], g.scalar(1)));
      const [gate, value] = g.split(x, -1, [4, 4]);
      return flat(g, [gelu, g.silu(x), g.mul(g.silu(gate), value)]);
    },
  });
});

test("Softmax and reductions (float64)", async () => {
  await gradcheck(backend, {
    elem: "F64",
    inputs: [{ name: "x", shape: [2, 3, 5] }],
    build: (g, { x }) => {
      const s = g.op("Softmax", [x], { axis: -1 })[0];
      const m = g.op("ReduceMean", [x, ints(g, [1])], { keepdims: 1 })[0];
      const t = g.op("ReduceSum", [g.mul(x, x), ints(g, [0, 2])], { keepdims: 0 })[0]; // (3)
      return g.add(g.add(s, m), g.reshape(t, [1, 3, 1]));
    },
  });
});


test("MatMul and FusedMatMul with transA / transB / alpha and batch broadcasting (float64)", async () => {
  await gradcheck(backend, {
    elem: "F64",
    inputs: [{ name: "x", shape: [2, 3, 4] }, { name: "w", shape: [5, 4] }, { name: "v", shape: [3, 6] }, { name: "m", shape: [2, 4, 2] }, { name: "k", shape: [4, 2] }],
    build: (g, { x, w, v, m, k }) => {
      const ms = (a: Value, b: Value, attrs: Record<string, unknown>) => g.op("FusedMatMul", [a, b], attrs as never, { domain: "com.microsoft" })[0];
      const y = g.linear(x, w); // x wᵀ, 2-D weight under a batch: (2,3,5)
      const z = ms(v, y, { transA: 1, alpha: { float: 0.5 } }); // 0.5 vᵀ y, 2-D A broadcast over the batch: (2,6,5)
      const p = g.matmul(x, m); // batched: (2,3,2)
      const q = ms(p, x, { transA: 1 }); // pᵀ x: (2,2,4)
      const r = ms(k, x, { transA: 1, transB: 1, alpha: { float: -1.5 } }); // -1.5 kᵀ xᵀ: (2,2,3)
      const t = g.matmul(x, k); // 2-D weight, plain MatMul: (2,3,2)
      return flat(g, [y, z, p, q, r, t]);
    },
  });
});

test("shape ops: Reshape, Transpose, Concat, Split, Slice, Unsqueeze, Squeeze, Expand, Gather, Where, Cast, Identity, Clip (float64)", async () => {
  await gradcheck(backend, {
    elem: "F64",
    inputs: [
      { name: "x", shape: [2, 3, 4] }, { name: "y", shape: [2, 3, 2] },
      { name: "cond", shape: [2, 3, 1], frozen: { data: Uint8Array.from([1, 0, 1, 1, 0, 0]), shape: [2, 3, 1] } },
      { name: "idx", shape: [2], frozen: { data: BigInt64Array.from([2n, 0n]), shape: [2] } },
    ],
    build: (g, { x, y, cond, idx }) => {
      const cat = g.concat([x, y], -1); // (2,3,6)
      const [a, b] = g.split(cat, -1, [4, 2]);
      const t = g.transpose(a, [2, 0, 1]); // (4,2,3)
      const s = g.slice(t, 0, 1, 3); // (2,2,3)
      const u = g.op("Squeeze", [g.unsqueeze(s, [0]), ints(g, [0])])[0];
      const e = g.op("Expand", [g.slice(b, 2, 0, 1), ints(g, [2, 2, 3, 2])])[0];
      const gathered = g.op("Gather", [g.reshape(x, [4, 6]), idx], { axis: 0 })[0]; // rows 2 and 0
      const w = g.op("Where", [g.op("Cast", [cond], { to: 9 })[0], g.op("Identity", [x])[0], g.slice(y, 2, 1, 2)])[0];
      const cl = g.op("Clip", [x, f64(g, -0.5), f64(g, 0.7)])[0];
      const round = g.op("Cast", [g.mul(x, x)], { to: 11 })[0]; // float64 → float64
      return flat(g, [u, e, gathered, w, cl, round]);
    },
  });
});

test("LayerNormalization, RMSNorm (SimplifiedLayerNormalization), GroupNorm as InstanceNormalization (float32)", async () => {
  await gradcheck(backend, {
    elem: "F32",
    inputs: [{ name: "x", shape: [2, 3, 8] }, { name: "s", shape: [8] }, { name: "bias", shape: [8] }, { name: "w", shape: [8] }, { name: "img", shape: [2, 4, 3, 3] }, { name: "gs", shape: [2] }, { name: "gb", shape: [2] }],
    build: (g, { x, s, bias, w, img, gs, gb }) => {
      const ln = g.layerNorm(x, 8, 1e-5, s, bias);
      const rms = g.rmsNorm(x, w, 1e-6);
      const grouped = g.reshape(img, [0, 2, -1]);
      const inorm = g.op("InstanceNormalization", [grouped, gs, gb], { epsilon: { float: 1e-6 } })[0];
      return flat(g, [ln, rms, inorm]);
    },
  });
});

test("MultiHeadAttention (fused forward, backward from primitives) and RotaryEmbedding (float32)", async () => {
  const B = 1, S = 5, H = 2, D = 4;
  const angles = Array.from({ length: S * D / 2 }, (_, i) => 0.37 * i);
  await gradcheck(backend, {
    elem: "F32",
    inputs: [
      { name: "q", shape: [B, S, H * D] }, { name: "k", shape: [B, S + 1, H * D] }, { name: "v", shape: [B, S + 1, H * D] },
      { name: "pos", shape: [B, S], frozen: { data: BigInt64Array.from({ length: B * S }, (_, i) => BigInt(i)), shape: [B, S] } },
      { name: "cos", shape: [S, D / 2], frozen: { data: Float32Array.from(angles, Math.cos), shape: [S, D / 2] } },
      { name: "sin", shape: [S, D / 2], frozen: { data: Float32Array.from(angles, Math.sin), shape: [S, D / 2] } },
    ],
    build: (g, { q, k, v, pos, cos, sin }) => {
      const qr = g.op("RotaryEmbedding", [q, pos, cos, sin], { interleaved: 1, num_heads: H }, { domain: "com.microsoft" })[0];
      return g.op("MultiHeadAttention", [qr, k, v], { num_heads: H, scale: { float: 0.4 } }, { domain: "com.microsoft" })[0];
    },
    tol: 2e-2,
  });
});

test("attention backward in groups of heads (a small score-matrix budget) gives the same gradients (float32)", async () => {
  const B = 1, S = 5, Sk = 6, H = 3, D = 4;
  // One head's (B, S, Sk) float32 scores are 120 bytes: a 240-byte budget makes groups of 2 + 1 heads.
  await gradcheck(backend, {
    elem: "F32",
    inputs: [{ name: "q", shape: [B, S, H * D] }, { name: "k", shape: [B, Sk, H * D] }, { name: "v", shape: [B, Sk, H * D] }],
    build: (g, { q, k, v }) => g.op("MultiHeadAttention", [q, k, v], { num_heads: H }, { domain: "com.microsoft" })[0],
    gradOptions: { attentionChunkBytes: 240 },
    tol: 2e-2,
  });
  const g = new Graph("chunks");
  const [q, k, v] = ["q", "k", "v"].map((n) => g.input(n, "F32", [B, n === "q" ? S : Sk, H * D]));
  const o = g.op("MultiHeadAttention", [q, k, v], { num_heads: H }, { domain: "com.microsoft" })[0];
  const loss = g.op("ReduceSum", [o, g.constant([])], { keepdims: 0 })[0];
  appendGradients(g, loss, ["q", "k", "v"], {}, { attentionChunkBytes: 240 });
  assert.equal(g.nodes.filter((n) => n.opType === "Softmax").length, 2, "two head groups");
});

test("MultiHeadAttention with an additive attention bias (a causal mask per head, in head groups), as the Qwen3 text encoder uses it (float32)", async () => {
  const B = 2, S = 4, H = 3, D = 4;
  // (B, H, S, S): −1e9 above the diagonal (causal) and a different small bias per head, so a
  // backward that dropped the bias, or split it out of step with the heads, would be caught.
  const bias = new Float32Array(B * H * S * S);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < S; i++) for (let j = 0; j < S; j++) {
    bias[((b * H + h) * S + i) * S + j] = j > i ? -1e9 : 0.3 * (h + 1) * (j - i) + 0.1 * b;
  }
  for (const attentionChunkBytes of [256 * 2 ** 20, 2 * S * S * 4]) {
    await gradcheck(backend, {
      elem: "F32",
      inputs: [
        { name: "q", shape: [B, S, H * D] }, { name: "k", shape: [B, S, H * D] }, { name: "v", shape: [B, S, H * D] },
        { name: "bias", shape: [B, H, S, S], frozen: { data: bias, shape: [B, H, S, S] } },
      ],
      build: (g, { q, k, v, bias: mask }) => g.op("MultiHeadAttention", [q, k, v, null, null, mask], { num_heads: H }, { domain: "com.microsoft" })[0],
      gradOptions: { attentionChunkBytes },
      tol: 2e-2,
    });
  }
});

test("Conv with stride and padding, and nearest Resize (float32)", async () => {
  await gradcheck(backend, {
    elem: "F32",
    inputs: [{ name: "x", shape: [2, 3, 5, 6] }, { name: "w", shape: [4, 3, 3, 3] }, { name: "b", shape: [4] }, { name: "w1", shape: [2, 4, 1, 1] }],
    build: (g, { x, w, b, w1 }) => {
      const same = g.op("Conv", [x, w, b], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] })[0];
      const down = g.op("Conv", [x, w, b], { kernel_shape: [3, 3], strides: [2, 2], pads: [0, 0, 1, 1] })[0]; // the VAE's downsampler
      const up = g.op("Resize", [down, null, g.constant([1, 1, 2, 2], "F32", [4])], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" })[0];
      const one = g.op("Conv", [up, w1], { kernel_shape: [1, 1] })[0];
      return flat(g, [same, down, one]);
    },
    tol: 2e-2,
  });
});

test("activation checkpointing gives the same gradients", async () => {
  const build = (g: Graph) => {
    const x = g.input("x", "F32", [2, 4]);
    const w = g.input("w", "F32", [4, 4]);
    let h = x;
    for (let i = 0; i < 3; i++) h = g.scope(`block.${i}`, () => g.add(h, g.mul(g.sigmoid(g.linear(h, w)), h)));
    const loss = g.op("ReduceMean", [g.mul(h, h), g.constant([])], { keepdims: 0 })[0];
    g.output(loss, "loss", "F32", []);
    return { loss };
  };
  const run = async (checkpoint: boolean) => {
    const g = new Graph("ckpt");
    const { loss } = build(g);
    appendGradients(g, loss, ["x", "w"], {}, checkpoint ? { checkpoint: (n) => n.name.match(/^(block\.\d+)\//)?.[1] ?? null } : {});
    const s = await backend.createSession(g);
    const feeds = { x: { data: Float32Array.from({ length: 8 }, (_, i) => Math.sin(i)), shape: [2, 4] }, w: { data: Float32Array.from({ length: 16 }, (_, i) => Math.cos(i) / 2), shape: [4, 4] } };
    const out = await s.run(feeds);
    await s.release();
    return { g, out };
  };
  const plain = await run(false);
  const ck = await run(true);
  assert.ok(ck.g.nodes.some((n) => n.name.includes("recompute/block.1")), "no recomputed nodes");
  for (const k of ["grad.x", "grad.w"]) {
    const a = plain.out[k].data as Float32Array, b = ck.out[k].data as Float32Array;
    assert.ok(a.some((v) => v !== 0));
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 * Math.max(1, Math.abs(a[i])), `${k}[${i}]: ${a[i]} vs ${b[i]}`);
  }
});

test("frozen bf16 weights: no gradient, no float32 copy kept for the backward (converted again from the stored bytes)", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bf16-"));
  try {
    const W = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i + 1));
    const file = path.join(dir, "w.safetensors");
    writeSafetensors(file, { w: { dtype: "BF16", shape: [3, 4], data: Uint16Array.from(W, f32ToBf16Bits) } });
    const set = WeightSet.open(file);
    const g = new Graph("bf16");
    const x = g.input("x", "F32", [2, 4]);
    const w = g.weight("w", fileSource(set.info("w")));
    const loss = g.op("ReduceSum", [g.linear(x, w), g.constant([])], { keepdims: 0 })[0];
    g.output(loss, "loss", "F32", []);
    appendGradients(g, loss, ["x"], {});
    const alias = g.initializers.find((i) => i.name === "w@backward");
    assert.ok(alias && alias.source.kind === "file" && alias.source.dtype === "BF16", "the backward reads the stored bf16 bytes again");
    const fwdCast = g.nodes.find((n) => n.opType === "Cast" && n.inputs[0] === "w")!.outputs[0];
    assert.ok(!g.nodes.some((n) => n.name.startsWith("grad/") && n.inputs.includes(fwdCast)), "no backward node reads the forward's conversion");
    const s = await backend.createSession(g);
    const out = await s.run({ x: { data: new Float32Array(8), shape: [2, 4] } });
    await s.release();
    set.close();
    // d loss / d x[b, k] = Σ_o W[o, k] (W as stored in bf16).
    const wb = Float32Array.from(W, (v) => new Float32Array(new Uint32Array([f32ToBf16Bits(v) << 16]).buffer)[0]);
    const gx = out["grad.x"].data as Float32Array;
    for (let k = 0; k < 4; k++) assert.ok(Math.abs(gx[k] - (wb[k] + wb[4 + k] + wb[8 + k])) < 1e-6);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("checkpointing with bf16 weights: the recomputed segment converts from its own alias, so no conversion can be merged with the forward's", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bf16-ck-"));
  try {
    const W = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i + 1) / 2);
    const file = path.join(dir, "w.safetensors");
    writeSafetensors(file, { w: { dtype: "BF16", shape: [4, 4], data: Uint16Array.from(W, f32ToBf16Bits) } });
    const set = WeightSet.open(file);
    const run = async (checkpoint: boolean) => {
      const g = new Graph("bf16-ck");
      const x = g.input("x", "F32", [2, 4]);
      // The weight is converted inside the block, as the transformer's blocks convert theirs.
      const h = g.scope("block.0", () => g.sigmoid(g.linear(x, g.weight("w", fileSource(set.info("w"))))));
      const loss = g.op("ReduceSum", [g.mul(h, h), g.constant([])], { keepdims: 0 })[0];
      g.output(loss, "loss", "F32", []);
      appendGradients(g, loss, ["x"], {}, checkpoint ? { checkpoint: (n) => n.name.match(/^(block\.\d+)\//)?.[1] ?? null } : {});
      const s = await backend.createSession(g);
      const out = await s.run({ x: { data: Float32Array.from({ length: 8 }, (_, i) => Math.cos(i)), shape: [2, 4] } });
      await s.release();
      return { g, gx: out["grad.x"].data as Float32Array };
    };
    const plain = await run(false);
    const ck = await run(true);
    assert.ok(ck.g.nodes.some((n) => n.name.includes("recompute/block.0")), "the block was recomputed");
    const casts = ck.g.nodes.filter((n) => n.opType === "Cast" && n.inputs[0].startsWith("w"));
    assert.deepEqual(casts.map((n) => n.inputs[0]).sort(), ["w", "w@backward", "w@recompute"], "forward, backward and recomputation each convert from their own initializer");
    for (const alias of ["w@backward", "w@recompute"]) {
      const init = ck.g.initializers.find((i) => i.name === alias);
      assert.ok(init && init.source.kind === "file" && init.source.dtype === "BF16", `${alias} reads the stored bf16 bytes`);
    }
    const fwdCast = casts.find((n) => n.inputs[0] === "w")!.outputs[0];
    assert.ok(!ck.g.nodes.some((n) => n.name.startsWith("grad/") && n.inputs.includes(fwdCast)), "no backward or recomputed node reads the forward's conversion");
    assert.ok(plain.gx.some((v) => v !== 0));
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(plain.gx[i] - ck.gx[i]) <= 1e-6, `grad.x[${i}]: ${plain.gx[i]} vs ${ck.gx[i]}`);
    set.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Two LoRA'd linears (frozen w, trainable a / b) with a sigmoid between, one checkpoint segment each. */
function twoLoraLayers(g: Graph, v: Record<string, Value>): Value {
  const layer = (x: Value, i: number) => {
    const y = g.linear(x, v[`w${i}`]);
    const h = g.op("FusedMatMul", [x, v[`a${i}`]], { transB: 1 }, { domain: "com.microsoft" })[0];
    return g.add(y, g.op("FusedMatMul", [h, v[`b${i}`]], { transB: 1, alpha: { float: 0.5 } }, { domain: "com.microsoft" })[0]);
  };
  const s = g.scope("block.0", () => g.sigmoid(layer(v.x, 1)));
  return g.scope("block.1", () => layer(s, 2));
}
/** The two LoRA'd layers in float32 with a mean-square loss and the gradients of the four LoRA tensors appended. */
function twoLoraGradGraph(name: string, gradOptions: Parameters<typeof appendGradients>[4]): Graph {
  const g = new Graph(name);
  const v: Record<string, Value> = { x: g.input("x", "F32", [3, 5]), w1: g.input("w1", "F32", [4, 5]), w2: g.input("w2", "F32", [6, 4]) };
  for (const [k, s] of [["a1", [2, 5]], ["b1", [4, 2]], ["a2", [2, 4]], ["b2", [6, 2]]] as const) v[k] = g.input(k, "F32", [...s]);
  const out = twoLoraLayers(g, v);
  const loss = g.op("ReduceMean", [g.mul(out, out), g.constant([])], { keepdims: 0 })[0];
  g.output(loss, "loss", "F32", []);
  appendGradients(g, loss, ["a1", "b1", "a2", "b2"], {}, gradOptions);
  return g;
}

const loraCheckpoint = { checkpoint: (n: { name: string }) => n.name.match(/^(block\.\d+)\//)?.[1] ?? null };

test("a trainable input's gradient is computed before the backward goes on: the chain is tied to it, and the values are unchanged", async () => {
  // Values: finite differences through the tied (and checkpointed) backward, in float64.
  const frozen = (shape: number[], seed: number) => ({ data: Float64Array.from({ length: shape[0] * shape[1] }, (_, i) => Math.sin(seed + i) / 2), shape });
  await gradcheck(backend, {
    elem: "F64",
    inputs: [{ name: "x", shape: [3, 5], frozen: frozen([3, 5], 1) }, { name: "w1", shape: [4, 5], frozen: frozen([4, 5], 2) }, { name: "w2", shape: [6, 4], frozen: frozen([6, 4], 3) },
             { name: "a1", shape: [2, 5] }, { name: "b1", shape: [4, 2] }, { name: "a2", shape: [2, 4] }, { name: "b2", shape: [6, 2] }],
    build: twoLoraLayers,
    gradOptions: loraCheckpoint,
  });
  // Structure: ONNX Runtime runs a value's producers before it, so layer 1's gradients depending on
  // layer 2's means layer 2's are computed (and their operands freed) before the backward reaches layer 1.
  const g = twoLoraGradGraph("lora2", {});
  const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const gradValue = (p: string) => g.nodes.find((n) => n.outputs[0] === `grad.${p}`)!.inputs[0];
  const ancestors = (name: string) => {
    const seen = new Set<string>(), stack = [name];
    while (stack.length) for (const i of producer.get(stack.pop()!)?.inputs ?? []) if (i && !seen.has(i)) { seen.add(i); stack.push(i); }
    return seen;
  };
  const before = ancestors(gradValue("a1"));
  for (const p of ["a2", "b2", "b1"]) assert.ok(before.has(gradValue(p)), `grad.a1 waits for grad.${p}`);
});

test("checkpointing recomputes only what the backward reads: no recomputed node is left unread", async () => {
  const g = twoLoraGradGraph("lora2-ck", loraCheckpoint);
  const read = new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);
  const recomputedNodes = g.nodes.filter((n) => n.name.includes("recompute/"));
  assert.ok(recomputedNodes.some((n) => n.name.includes("recompute/block.1/")), "block.1 is recomputed (its LoRA input product h)");
  const unread = recomputedNodes.filter((n) => !n.outputs.some((o) => read.has(o)));
  assert.deepEqual(unread.map((n) => `${n.name} (${n.opType})`), []);
  // Block 1's frozen product and its output sum are not read by any gradient rule: not recomputed.
  assert.ok(!recomputedNodes.some((n) => n.name.includes("recompute/block.1/") && n.inputs.includes("w2")), "the frozen product of block 1 is not recomputed");
});
