// flux2 bench (src/bench/): the fusions ORT applies to the transformer graph, FLOP and parameter
// counts of the real shapes, the random real-shape checkpoint writer, and `bench --quick --json`
// end to end (the shape of its report).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const cache = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bench-test-"));
process.env.FLUX2_CACHE = cache;

import { WeightSet } from "../src/io/safetensors.js";
import { buildTransformerGraph, readTransformerConfig } from "../src/models/transformer.js";
import { TransformerWeights, expectedTransformerShapes } from "../src/models/transformer_weights.js";
import { specFor } from "../src/models/quantized/blockwise.js";
import { quantizeTransformerAtLoad } from "../src/quant/quantize.js";
import { optimizedOpCounts, countOps } from "../src/bench/onnx_ops.js";
import { transformerFlops } from "../src/bench/flops.js";
import { MODEL_SPECS, countParams, makeRandomModel, qwen3Tensors } from "../src/bench/make_model.js";
import { goldenPath, repoRoot } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { integerGemmExact } from "../src/backend/cpu.js";

const trDir = goldenPath("checkpoints/klein_distilled/transformer");

test("ORT runs the transformer with the fused kernels the graph asks for (optimized graph op counts)", async () => {
  const cfg = readTransformerConfig(path.join(trDir, "config.json"));
  const blocks = cfg.num_layers + cfg.num_single_layers;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-fusion-")), "optimized.onnx");
  const { emitted, optimized } = await optimizedOpCounts(buildTransformerGraph(cfg, new TransformerWeights(WeightSet.open(trDir), "diffusers")), file);
  assert.equal(optimized.MultiHeadAttention, blocks);
  assert.equal(optimized.RotaryEmbedding, 2 * blocks); // q and k of every block
  assert.equal(optimized.SimplifiedLayerNormalization, 4 * cfg.num_layers + 2 * cfg.num_single_layers); // per-head q/k RMSNorms
  assert.equal(optimized.LayerNormalization, 4 * cfg.num_layers + cfg.num_single_layers + 1); // modulated norms + norm_out
  assert.equal(optimized.FusedMatMul, emitted.FusedMatMul, "every Linear stays a FusedMatMul (transB, no transposed copy)");
  // Nothing was decomposed back into primitive ops.
  for (const op of ["Softmax", "ReduceMean", "Pow", "Transpose"]) assert.ok(!optimized[op], `${op} in the optimized graph`);

  // int8: every quantized Linear runs on the integer GEMM (DynamicQuantizeMatMul) where that is
  // exact (int8 dot products), else as float math on codes dequantized at use (src/backend/cpu.ts);
  // int8-block and int4 as MatMulNBits. Attention stays fused either way.
  const w = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  quantizeTransformerAtLoad(w, cfg, { spec: specFor("int8") });
  const q = await optimizedOpCounts(buildTransformerGraph(cfg, w), file);
  assert.equal(q.optimized.DynamicQuantizeMatMul ?? 0, integerGemmExact() ? w.quant!.names().length : 0);
  if (!integerGemmExact()) assert.equal(q.optimized.DequantizeLinear, w.quant!.names().length, "each int8 weight dequantized at use, once");
  assert.ok(!q.optimized.MatMulNBits);
  assert.equal(q.optimized.MultiHeadAttention, blocks);
  const wb = new TransformerWeights(WeightSet.open(trDir), "diffusers");
  quantizeTransformerAtLoad(wb, cfg, { spec: specFor("int8-block") });
  const qb = await optimizedOpCounts(buildTransformerGraph(cfg, wb), file);
  assert.equal(qb.optimized.MatMulNBits, wb.quant!.names().length);
  assert.equal(qb.optimized.MultiHeadAttention, blocks);
  assert.ok(Object.keys(countOps(fs.readFileSync(file))).some((k) => k.startsWith("com.microsoft:")));
});

test("klein-4B / 9B shapes: parameter counts match the spec, FLOPs of a step add up", () => {
  const k4 = MODEL_SPECS["klein-4b"], k9 = MODEL_SPECS["klein-9b"];
  assert.equal(countParams(expectedTransformerShapes(k4.transformer)), 3_875_544_576); // docs/FLUX2-spec.md §1.2: 3.876 B
  assert.ok(Math.abs(countParams(expectedTransformerShapes(k9.transformer)) / 1e9 - 9.079) < 0.001);
  assert.ok(Math.abs(countParams(qwen3Tensors(k4.textEncoder)) / 1e9 - 4.022) < 0.001); // Qwen3-4B
  // A step at 1024² (4096 image + 512 text tokens): 2 · params · tokens through each weight
  // (image weights see image tokens, text weights text tokens, single blocks both) + attention.
  const f = transformerFlops(k4.transformer, 4096, 512);
  const tokens = (n: string) => /^single_transformer_blocks\./.test(n) ? 4608
    : /^transformer_blocks\./.test(n) ? (/add_|ff_context|to_add_out/.test(n) ? 512 : 4096)
    : n === "x_embedder.weight" || n === "proj_out.weight" ? 4096 : n === "context_embedder.weight" ? 512 : 1;
  const want = expectedTransformerShapes(k4.transformer).filter(([, s]) => s.length === 2).reduce((a, [n, s]) => a + 2 * s[0] * s[1] * tokens(n), 0);
  assert.equal(f.linear, want);
  assert.equal(f.attention, 25 * 4 * 4608 * 4608 * 3072);
  assert.ok(Math.abs(f.total / 1e12 - 34.82) < 0.01, `${f.total / 1e12} TFLOP`);
});

test("make-model writes a complete, loadable random checkpoint once, then reuses it", async () => {
  const dir = path.join(cache, "quick-model");
  const first = makeRandomModel(MODEL_SPECS.quick, dir);
  assert.equal(first.reused, false);
  assert.equal(makeRandomModel(MODEL_SPECS.quick, dir).reused, true);
  const index = JSON.parse(fs.readFileSync(path.join(dir, "text_encoder", "model.safetensors.index.json"), "utf8"));
  assert.ok(new Set(Object.values(index.weight_map)).size > 1, "text encoder sharded");
  const pipe = loadPipeline(dir);
  const r = await pipe.generate({ prompt: "a lighthouse", width: 64, height: 64, steps: 1, maxSequenceLength: 16 });
  assert.ok(r.decoded.data.every(Number.isFinite), "finite output");
});

test("bench --quick --json prints one report with the documented shape", () => {
  const script = `import(${JSON.stringify(path.join(repoRoot, "dist", "src", "cli", "bench.js"))}).then(m => m.runBenchCommand(["--quick", "--json"])).then(c => process.exit(c))`;
  // No wall-clock assertion (speed belongs in the bench, not in tests); the limit only stops a hang.
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, FLUX2_CACHE: cache }, encoding: "utf8", timeout: 400_000 });
  assert.equal(r.status, 0, `status ${r.status} signal ${r.signal}: ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, "one JSON line on stdout (progress goes to stderr)");
  const report = JSON.parse(lines[0]);
  assert.ok(report.gemm_peak_gflops > 0);
  assert.equal(typeof report.machine.cpu, "string");
  assert.ok(report.machine.cores >= 1);
  assert.deepEqual(report.runs.map((x: any) => x.weights).sort(), ["bf16", "int4", "int8", "int8-block"]);
  for (const run of report.runs) {
    assert.equal(run.model, "quick");
    assert.equal(run.resolution, 256);
    for (const stage of ["text_encode", "transformer_step", "vae_decode"]) {
      const s = run.stages[stage];
      assert.ok(s, `${run.weights}: ${stage} missing`);
      for (const k of ["seconds", "gflops", "fraction_of_peak", "peak_rss_bytes"]) assert.ok(Number.isFinite(s[k]) && s[k] > 0, `${run.weights} ${stage}.${k} = ${s[k]}`);
    }
    // The LoRA training step runs on float weights only.
    if (run.weights === "bf16") {
      const t = run.stages.train_step;
      assert.ok(t?.seconds > 0, "bf16: train_step missing");
      // Sampled from a worker while the step runs (src/bench/mem_sampler.ts): PSS never exceeds RSS.
      assert.ok(t.peak_anon_bytes > 0 && t.peak_pss_bytes > 0, `train_step peaks: anon ${t.peak_anon_bytes}, pss ${t.peak_pss_bytes}`);
      assert.ok(t.peak_pss_bytes <= t.peak_rss_bytes, `PSS ${t.peak_pss_bytes} above VmHWM ${t.peak_rss_bytes}`);
    }
    else assert.equal(run.stages.train_step, undefined);
  }
  if (integerGemmExact()) assert.ok(report.fusions.int8.optimized.DynamicQuantizeMatMul > 0);
  else assert.ok(!report.fusions.int8.optimized.DynamicQuantizeMatMul && report.fusions.int8.optimized.DequantizeLinear > 0, "no integer GEMM where it would saturate");
  assert.ok(report.fusions["int8-block"].optimized.MatMulNBits > 0);
});
