// Weight quantization (src/quant/): block-wise codes in ORT's MatMulNBits layout, the graph
// path against float32 math on the dequantized weights, drift bounds on the golden tiny models
// (measured first, see docs/performance.md), saved quantized folders, FP8 checkpoints, and the
// runtime weight conversion of bf16 weights (src/onnx/graph.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

// Quantized caches go to a private folder (set before anything reads FLUX2_CACHE).
const cache = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-quant-test-"));
process.env.FLUX2_CACHE = cache;

import { OrtBackend } from "../src/backend/ort.js";
import { WeightSet, readAll, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.js";
import { Graph, dataSource } from "../src/onnx/graph.js";
import { Flux2Transformer, readTransformerConfig } from "../src/models/transformer.js";
import { TransformerWeights } from "../src/models/transformer_weights.js";
import { Qwen3Encoder, Qwen3Weights, readQwen3Config } from "../src/models/qwen3.js";
import { dequantizeBlockwise, drift, quantizeBlockwise, specFor, zeroPointBytes, type QuantSpec } from "../src/models/quantized/blockwise.js";
import { toFp8PerTensor } from "../src/quant/fp8.js";
import { f32ToF8e4m3 } from "../src/io/dtype.js";
import { quantizeDecoderAtLoad, quantizeTransformerAtLoad, transformerTargets } from "../src/quant/quantize.js";
import { SafetensorsStreamWriter } from "../src/quant/writer.js";
import { dequantizePerChannel, quantizePerChannel } from "../src/models/quantized/per_channel.js";
import { perChannelLinear } from "../src/models/quantized/format.js";
import { integerGemmExact } from "../src/backend/cpu.js";
import { runQuantizeCommand } from "../src/cli/quantize.js";
import { goldenPath, transformerCaseInputs } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

const backend = new OrtBackend();
const ck = goldenPath("checkpoints/klein_distilled");
const trDir = path.join(ck, "transformer");
const trConfig = readTransformerConfig(path.join(trDir, "config.json"));
const bflFile = path.join(ck, "flux-2-klein-tiny.safetensors");

function seeded(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2;
  });
}

const inputs = () => transformerCaseInputs("lora/base.inputs.safetensors");
const transformerTargetsCount = (w: TransformerWeights) => transformerTargets(w, trConfig, specFor("int8")).length;

async function forward(w: TransformerWeights): Promise<Float32Array> {
  const m = await Flux2Transformer.load(backend, trConfig, w);
  const y = (await m.forward(inputs())).data as Float32Array;
  await m.release();
  return y;
}

const SPECS: [string, QuantSpec][] = [
  ["int8 symmetric", { bits: 8, blockSize: 32, symmetric: true }],
  ["int8 asymmetric", { bits: 8, blockSize: 16, symmetric: false }],
  ["int4 symmetric", { bits: 4, blockSize: 16, symmetric: true }],
  ["int4 asymmetric", { bits: 4, blockSize: 32, symmetric: false }],
];

for (const [label, spec] of SPECS) {
  test(`${label}: codes are packed low-first and dequantize within half a step`, () => {
    const N = 3, K = 96;
    const w = seeded(N * K, 7);
    w[5] = 0; // exact zero stays representable
    const m = quantizeBlockwise(w, N, K, spec);
    const blocks = K / spec.blockSize, blob = (spec.blockSize * spec.bits) / 8;
    assert.equal(m.q.length, N * blocks * blob);
    assert.equal(m.scales.length, N * blocks);
    assert.equal(m.zeroPoints?.length ?? 0, spec.symmetric ? 0 : N * zeroPointBytes(blocks, spec.bits));
    const dq = dequantizeBlockwise(m);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const b = Math.floor(k / spec.blockSize);
        const s = m.scales[n * blocks + b];
        assert.ok(Math.abs(dq[n * K + k] - w[n * K + k]) <= s / 2 + 1e-6, `[${n}, ${k}]: ${dq[n * K + k]} vs ${w[n * K + k]} (scale ${s})`);
        // The byte layout: element k of block b sits at byte (k % bs) * bits / 8, low nibble first.
        const byte = m.q[(n * blocks + b) * blob + Math.floor(((k % spec.blockSize) * spec.bits) / 8)];
        const code = spec.bits === 8 ? byte : k % 2 ? byte >> 4 : byte & 15;
        const zpByte = m.zeroPoints ? m.zeroPoints[n * zeroPointBytes(blocks, spec.bits) + (spec.bits === 8 ? b : b >> 1)] : -1;
        const zp = m.zeroPoints ? (spec.bits === 8 ? zpByte : b % 2 ? zpByte >> 4 : zpByte & 15) : 1 << (spec.bits - 1);
        assert.equal(Math.fround((code - zp) * s), dq[n * K + k]);
      }
    }
    assert.equal(dq[5], 0);
  });

  test(`${label}: MatMulNBits equals a float32 MatMul with the dequantized weights`, async () => {
    const M = 5, N = 40, K = 96;
    const m = quantizeBlockwise(seeded(N * K, 11), N, K, spec);
    const x = seeded(M * K, 13);
    const results: Record<number, Float32Array> = {};
    let ref: Float32Array | null = null;
    for (const acc of [0, 4] as const) {
      const g = new Graph("nbits");
      const xv = g.input("x", "F32", [M, K]);
      const q = g.weight("q", dataSource(m.q, "U8", [N, K / spec.blockSize, (spec.blockSize * spec.bits) / 8]), "U8");
      const s = g.weight("s", dataSource(m.scales, "F32", [N, K / spec.blockSize]));
      const z = m.zeroPoints ? g.weight("z", dataSource(m.zeroPoints, "U8", [N, m.zeroPoints.length / N]), "U8") : null;
      g.output(g.matmulNBits(xv, q, s, z, { K, N, bits: spec.bits, blockSize: spec.blockSize, accuracyLevel: acc }), "y", "F32", [M, N]);
      g.output(g.linear(xv, g.weight("w", dataSource(dequantizeBlockwise(m), "F32", [N, K]))), "ref", "F32", [M, N]);
      const sess = await backend.createSession(g);
      const out = await sess.run({ x: { data: x, shape: [M, K] } });
      await sess.release();
      results[acc] = out.y.data as Float32Array;
      ref = out.ref.data as Float32Array;
    }
    const exact = drift(results[0], ref!);
    assert.ok(exact.relMax < 1e-5, `accuracy 0: relative max error ${exact.relMax}`);
    // Level 4 quantizes the activations to int8 per block as well.
    const fast = drift(results[4], ref!);
    assert.ok(fast.cosine > 0.9999 && fast.relMax < 0.02, `accuracy 4: cosine ${fast.cosine}, relative max error ${fast.relMax}`);
  });
}

test("per-channel int8: codes transposed [K, N], one scale per output channel, within half a step", () => {
  const N = 5, K = 37;
  const w = seeded(N * K, 17);
  w[3] = 0;
  const smooth = Float32Array.from({ length: K }, (_, k) => 0.5 + (k % 4));
  for (const s of [undefined, smooth]) {
    const m = quantizePerChannel(w, N, K, s);
    assert.equal(m.qT.length, K * N);
    assert.equal(m.scales.length, N);
    const dq = dequantizePerChannel(m);
    for (let n = 0; n < N; n++) {
      let amax = 0;
      for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(w[n * K + k] * (s ? s[k] : 1)));
      assert.equal(m.scales[n], Math.fround(amax / 127));
      for (let k = 0; k < K; k++) {
        const v = w[n * K + k] * (s ? s[k] : 1);
        assert.ok(Math.abs(dq[n * K + k] - v) <= m.scales[n] / 2 + 1e-6, `[${n}, ${k}]`);
        assert.equal(dq[n * K + k], Math.fround(m.qT[k * N + n] * m.scales[n]));
      }
    }
    assert.equal(dq[3], 0);
  }
});

/** Round half to even (ONNX's rounding in QuantizeLinear / DynamicQuantizeLinear). */
const roundEven = (x: number) => {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

test("per-channel int8: on the integer GEMM where it is exact (uint8-per-tensor activations times the int8 codes), else float math on the dequantized codes", async () => {
  const M = 6, N = 24, K = 80;
  const m = quantizePerChannel(seeded(N * K, 19), N, K);
  const x = seeded(M * K, 23).map((v, i) => (i === 7 ? 4 * v : v)); // one outlier widens the range
  const exact = integerGemmExact();
  const g = new Graph("qgemm");
  const xv = g.input("x", "F32", [M, K]);
  g.output(perChannelLinear(g, xv, "q", dataSource(m.qT, "I8", [K, N]), g.weight("s", dataSource(m.scales, "F32", [N]))), "y", "F32", [M, N]);
  g.output(g.linear(xv, g.weight("w", dataSource(dequantizePerChannel(m), "F32", [N, K]))), "ref", "F32", [M, N]);
  assert.equal(g.nodes.some((n) => n.opType === "DynamicQuantizeMatMul"), exact, `integer GEMM used ⇔ exact on this CPU (${exact})`);
  const sess = await backend.createSession(g);
  const out = await sess.run({ x: { data: x, shape: [M, K] } });
  await sess.release();
  const y = out.y.data as Float32Array;
  let maxRef = 0;
  for (const v of out.ref.data as Float32Array) maxRef = Math.max(maxRef, Math.abs(v));
  if (!exact) {
    // No int8 dot products (e.g. AVX2 only): MLAS's u8×s8 kernel would saturate, so the codes are
    // dequantized and multiplied in float32: the float reference, up to summation order.
    const ref = out.ref.data as Float32Array;
    for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i] - ref[i]) <= 1e-5 * maxRef, `[${i}]: ${y[i]} vs ${ref[i]}`);
    return;
  }
  // The same math by hand: ONNX DynamicQuantizeLinear (range always contains 0), exact integer sums.
  const lo = Math.min(0, ...x), hi = Math.max(0, ...x);
  const xs = Math.fround((hi - lo) / 255), zp = Math.min(255, Math.max(0, roundEven(-lo / xs)));
  const xq = x.map((v) => Math.min(255, Math.max(0, roundEven(v / xs) + zp)));
  for (let i = 0; i < M; i++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += (xq[i * K + k] - zp) * m.qT[k * N + n];
      const want = acc * xs * m.scales[n];
      assert.ok(Math.abs(y[i * N + n] - want) <= 1e-5 * maxRef, `[${i}, ${n}]: ${y[i * N + n]} vs ${want}`);
    }
  }
  // And close to float math on the dequantized weights (the activation rounding is all that differs).
  const d = drift(y, out.ref.data as Float32Array);
  assert.ok(d.cosine > 0.9999 && d.relMax < 0.02, `cosine ${d.cosine}, relative max error ${d.relMax}`);
});

test("per-channel int8 transformer ≈ float transformer on its dequantized weights (only activation rounding differs)", async () => {
  const q = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  quantizeTransformerAtLoad(q, trConfig, { spec: specFor("int8") });
  assert.equal(q.quant!.format, "QGEMM");
  const names = q.quant!.names();
  assert.ok(names.length >= 20, `${names.length} weights quantized`);
  const f = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  for (const n of names) f.overrides.set(n, q.quant!.float32(n));
  const d = drift(await forward(q), await forward(f));
  // Measured 0.99999; a wrong layout (e.g. codes not transposed) gives a cosine near 0.
  assert.ok(d.cosine > 0.9999, `cosine ${d.cosine}, max |err| ${d.maxAbs}`);
});

test("int8-mixed: SwiGLU-output projections run as MatMulNBits blocks, the rest per channel (on the integer GEMM where it is exact)", async () => {
  const w = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  quantizeTransformerAtLoad(w, trConfig, { spec: specFor("int8-mixed") });
  const g = new Graph("mixed");
  const x = g.input("x", "F32", [1, 4, 32]);
  // (the graph is only built, not run: the input widths do not matter here)
  for (const n of ["ff.linear_in", "attn.to_q", "ff.linear_out", "ff_context.linear_out"]) w.quant!.linear(g, x, `transformer_blocks.0.${n}.weight`);
  w.quant!.linear(g, x, "single_transformer_blocks.0.attn.to_out.weight");
  w.quant!.linear(g, x, "single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight");
  const ops = g.opCounts();
  // Where the integer GEMM would saturate (no int8 dot products), the per-channel codes are dequantized at use.
  assert.equal(ops.DynamicQuantizeMatMul ?? 0, integerGemmExact() ? 3 : 0);
  assert.equal(ops.DequantizeLinear ?? 0, integerGemmExact() ? 0 : 3);
  assert.equal(ops.MatMulNBits, 3);
  const names = w.quant!.names();
  assert.equal(new Set(names).size, names.length, "each weight once");
  const f = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  for (const n of names) assert.deepEqual(w.quant!.shape(n), f.shape(n), n);
  assert.equal(names.length, transformerTargetsCount(f));
});

test("quantized transformer = float transformer on its dequantized weights (MatMulNBits, accuracy 0)", async () => {
  for (const kind of ["int8-block", "int4"] as const) {
    const q = new TransformerWeights(WeightSet.open(trDir), "diffusers");
    quantizeTransformerAtLoad(q, trConfig, { spec: specFor(kind), accuracyLevel: 0 });
    const names = q.quant!.names();
    assert.ok(names.length >= 20, `${names.length} weights quantized`);
    const f = new TransformerWeights(WeightSet.open(trDir), "diffusers");
    for (const n of names) f.overrides.set(n, q.quant!.float32(n));
    const d = drift(await forward(q), await forward(f));
    assert.ok(d.relMax < 1e-4, `${kind}: relative max error ${d.relMax}`);
  }
});

// Bounds measured on these fixtures (docs/performance.md): int8-block cosine 0.99999, max |err| 0.024;
// int8 (per channel, activations per tensor) cosine 0.99998;
// int4 (asymmetric, blocks of 16 here since K = 48) cosine 0.9989, max |err| 0.18.
test("drift of one transformer forward against float32 on the golden tiny model", async () => {
  const ref = await forward(new TransformerWeights(WeightSet.open(trDir), "diffusers"));
  const bounds = { "int8": { cos: 0.99995, rel: 0.01 }, "int8-mixed": { cos: 0.99995, rel: 0.01 }, "int8-block": { cos: 0.99995, rel: 0.01 }, int4: { cos: 0.997, rel: 0.08 } };
  for (const kind of ["int8", "int8-mixed", "int8-block", "int4"] as const) {
    const w = new TransformerWeights(WeightSet.open(trDir), "diffusers");
    quantizeTransformerAtLoad(w, trConfig, { spec: specFor(kind) });
    const d = drift(await forward(w), ref);
    assert.ok(d.cosine > bounds[kind].cos && d.relL2 < bounds[kind].rel, `${kind}: cosine ${d.cosine}, relative L2 ${d.relL2}, max |err| ${d.maxAbs}`);
  }
});

// Measured: int8 cosine 0.99992, int4 0.9888 (hidden size 16: every block is a whole row).
test("drift of the Qwen3 text encoder (golden tiny) against float32", async () => {
  const cfg = readQwen3Config(goldenPath("text_encoder/qwen3_tiny.config.json"));
  const inp = readAll(goldenPath("text_encoder/qwen3_tiny__prompt_embeds.inputs.safetensors"));
  const ids = inp.get("input_ids")!.data as BigInt64Array, mask = inp.get("attention_mask")!.data as BigInt64Array;
  const [B, L] = inp.get("input_ids")!.shape;
  const layers = [1, 2, 3];
  const embed = async (kind?: "int8" | "int8-block" | "int4") => {
    const w = new Qwen3Weights(WeightSet.open(goldenPath("text_encoder/qwen3_tiny.safetensors")));
    if (kind) quantizeDecoderAtLoad(w, cfg, { spec: specFor(kind) });
    const enc = await Qwen3Encoder.load(backend, cfg, w, { outputLayers: layers });
    const y = (await enc.promptEmbeds(ids, mask, B, L, layers)).data as Float32Array;
    await enc.release();
    return y;
  };
  const ref = await embed();
  const d8 = drift(await embed("int8"), ref);
  assert.ok(d8.cosine > 0.9995, `int8 cosine ${d8.cosine}`);
  const d8b = drift(await embed("int8-block"), ref);
  assert.ok(d8b.cosine > 0.9995, `int8-block cosine ${d8b.cosine}`);
  const d4 = drift(await embed("int4"), ref);
  assert.ok(d4.cosine > 0.98, `int4 cosine ${d4.cosine}`);
});

test("flux2 quantize writes a loadable folder that generates what --quantize at load does", async () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-quantized-")), "klein-int8");
  assert.equal(await runQuantizeCommand(["--model", ck, "--bits", "8", "--out", out, "--quiet"]), 0);
  const set = WeightSet.open(path.join(out, "transformer"));
  assert.ok(set.has("transformer_blocks.0.attn.to_q.weight.qweight_t"), "8 bits: per-channel codes for the integer GEMM");
  assert.ok(!set.has("transformer_blocks.0.attn.to_q.weight"), "no float copy of a quantized weight");
  assert.ok(set.has("x_embedder.weight"), "embedders stay as stored");
  set.close();
  const te = WeightSet.open(path.join(out, "text_encoder"));
  assert.ok(te.keys().some((k) => k.endsWith("mlp.down_proj.weight.qweight_t")));
  te.close();
  const opts = { prompt: "a red fox", width: 64, height: 48, steps: 2, seed: 3 };
  const saved = await loadPipeline(out).generate(opts);
  const atLoad = await loadPipeline(ck, { quantize: "int8" }).generate(opts);
  assert.deepEqual([...saved.decoded.data], [...atLoad.decoded.data]);
  const float = await loadPipeline(ck).generate(opts);
  const d = drift(saved.decoded.data, float.decoded.data);
  assert.ok(d.cosine > 0.999, `int8 pipeline vs float: cosine ${d.cosine}`);
});

/** The golden BFL file with every 2-D Linear weight in FP8 (F8_E4M3 + weight_scale + input_scale), as BFL's fp8 releases. */
function writeFp8(file: string, perRow: boolean): void {
  const out: Record<string, TensorToWrite> = {};
  for (const [name, t] of readAll(bflFile)) {
    if (t.shape.length !== 2 || !name.endsWith(".weight")) {
      out[name] = t;
      continue;
    }
    const set = WeightSet.open(bflFile);
    const w = set.float32(name);
    set.close();
    if (perRow) {
      const [N, K] = t.shape;
      const bytes = new Uint8Array(N * K), scale = new Float32Array(N);
      for (let r = 0; r < N; r++) {
        let a = 0;
        for (let i = 0; i < K; i++) a = Math.max(a, Math.abs(w[r * K + i]));
        scale[r] = Math.fround(a > 0 ? a / 448 : 1);
        for (let i = 0; i < K; i++) bytes[r * K + i] = f32ToF8e4m3(w[r * K + i] / scale[r]);
      }
      out[name] = { dtype: "F8_E4M3", shape: t.shape, data: bytes };
      out[`${name}_scale`] = { dtype: "F32", shape: [N, 1], data: scale };
    } else {
      const { bytes, scale } = toFp8PerTensor(w);
      out[name] = { dtype: "F8_E4M3", shape: t.shape, data: bytes };
      out[`${name}_scale`] = { dtype: "F32", shape: [], data: Float32Array.of(scale) };
    }
    out[name.replace(/weight$/, "input_scale")] = { dtype: "F32", shape: [], data: Float32Array.of(1) };
  }
  writeSafetensors(file, out);
}

test("FP8 checkpoints (weight_scale per tensor or per row) load, dequantized in the graph; --quantize int8 requantizes them", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-fp8-"));
  const bf16 = await forward(new TransformerWeights(WeightSet.open(bflFile), "bfl"));
  for (const perRow of [false, true]) {
    const file = path.join(dir, `flux-2-klein-tiny-fp8${perRow ? "-rows" : ""}.safetensors`);
    writeFp8(file, perRow);
    const fp8 = new TransformerWeights(WeightSet.open(file), "bfl");
    const y = await forward(fp8);
    // The same as float32 math on the dequantized weights (fp8 value × scale)...
    const deq = new TransformerWeights(WeightSet.open(file), "bfl");
    for (const [name, shape] of (await import("../src/models/transformer_weights.js")).expectedTransformerShapes(trConfig)) {
      if (shape.length === 2 && name !== "norm_out.linear.weight") deq.overrides.set(name, fp8.float32(name));
    }
    const exact = drift(y, await forward(deq));
    assert.ok(exact.relMax < 1e-5, `fp8 ${perRow ? "per row" : "per tensor"} vs dequantized: ${exact.relMax}`);
    // ... and close to the bf16 original (measured cosine 0.9991).
    const d = drift(y, bf16);
    assert.ok(d.cosine > 0.998, `fp8 vs bf16: cosine ${d.cosine}`);
    // Requantized to int8 straight from FP8.
    const q = new TransformerWeights(WeightSet.open(file), "bfl");
    quantizeTransformerAtLoad(q, trConfig, { spec: specFor("int8") });
    const dq = drift(await forward(q), y);
    assert.ok(dq.cosine > 0.9999, `fp8 → int8 vs fp8: cosine ${dq.cosine}`);
  }
});

test("bf16 weights are converted at use, not folded into float32 copies, with the same results", async () => {
  const w = () => new TransformerWeights(WeightSet.open(trDir), "diffusers");
  const lazy = await forward(w());
  const fm = await Flux2Transformer.load(new OrtBackend({ foldWeightConversions: true }), trConfig, w());
  const folded = (await fm.forward(inputs())).data as Float32Array;
  await fm.release();
  // Same weights; only the GEMM kernel differs (prepacked constant B vs B converted per run), so
  // the summation order, not the values, may differ.
  const d = drift(lazy, folded);
  assert.ok(d.relMax < 1e-5, `folded vs converted at use: ${d.relMax}`);
  // The weights stay out of the session's input names (they are overridable initializers).
  const m = await Flux2Transformer.load(backend, trConfig, w());
  const session = (m as unknown as { session: { inputNames: readonly string[] } }).session;
  assert.ok(session.inputNames.every((n) => !n.endsWith(".weight")), `inputs: ${session.inputNames.join(", ")}`);
  await m.release();
  // In the serialized graph the conversions come first and their weights are declared inputs.
  const { buildTransformerGraph } = await import("../src/models/transformer.js");
  const g = buildTransformerGraph(trConfig, w());
  const casts = g.nodes.filter((n) => n.opType === "Cast").length;
  assert.ok(casts > 10);
  const bytes = g.serialize(() => null);
  const text = Buffer.from(bytes).toString("latin1");
  const firstCast = text.indexOf("Cast"), firstMatMul = text.indexOf("FusedMatMul");
  assert.ok(firstCast >= 0 && firstCast < firstMatMul, "Cast nodes are serialized before the first FusedMatMul");
});

test("the streaming safetensors writer writes tensors in any order and refuses an incomplete file", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-writer-"));
  const file = path.join(dir, "a.safetensors");
  const w = new SafetensorsStreamWriter(file, [
    { name: "b", dtype: "U8", shape: [3] }, { name: "a", dtype: "F32", shape: [2, 2] },
  ], { note: "x" });
  w.write("b", Uint8Array.of(1, 2));
  w.write("a", new Uint8Array(Float32Array.of(1, 2).buffer));
  w.write("b", Uint8Array.of(3));
  w.write("a", new Uint8Array(Float32Array.of(3, 4).buffer));
  w.close();
  const back = readAll(file);
  assert.deepEqual([...back.get("a")!.data as Float32Array], [1, 2, 3, 4]);
  assert.deepEqual([...back.get("b")!.data as Uint8Array], [1, 2, 3]);
  const bad = new SafetensorsStreamWriter(path.join(dir, "b.safetensors"), [{ name: "a", dtype: "F32", shape: [2] }]);
  bad.write("a", new Uint8Array(4));
  assert.throws(() => bad.close(), /incomplete/);
  assert.ok(!fs.existsSync(path.join(dir, "b.safetensors")));
  const over = new SafetensorsStreamWriter(path.join(dir, "c.safetensors"), [{ name: "a", dtype: "U8", shape: [1] }]);
  assert.throws(() => over.write("a", new Uint8Array(2)), /too many bytes/);
  over.abort();
});
