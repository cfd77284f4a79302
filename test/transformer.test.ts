// Transformer loading: BFL single file == diffusers folder, config inference,
// and clear errors for bad checkpoints.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import { WeightSet, readAll, writeSafetensors } from "../src/io/safetensors.js";
import { Flux2Transformer, readTransformerConfig, timestepFeatures, ropeTables } from "../src/models/transformer.js";
import { TransformerWeights } from "../src/models/transformer_weights.js";
import { goldenPath, transformerCaseInputs } from "./golden.js";

const backend = new OrtBackend();
const ck = goldenPath("checkpoints/klein_distilled");
const bflFile = path.join(ck, "flux-2-klein-tiny.safetensors");
const diffDir = path.join(ck, "transformer");

const inputs = () => transformerCaseInputs("lora/base.inputs.safetensors");

test("BFL single file gives the same output as the diffusers folder", async () => {
  const a = await Flux2Transformer.fromFiles(backend, bflFile, null, "bfl");
  const b = await Flux2Transformer.fromFiles(backend, diffDir, path.join(diffDir, "config.json"));
  const x = inputs();
  const ya = (await a.forward(x)).data as Float32Array;
  const yb = (await b.forward(x)).data as Float32Array;
  assert.deepEqual([...ya], [...yb]);
  await a.release();
  await b.release();
});

test("config inferred from a BFL file equals the folder's config.json", () => {
  const set = WeightSet.open(bflFile);
  const inferred = new TransformerWeights(set, "bfl").inferConfig();
  const cfg = readTransformerConfig(path.join(diffDir, "config.json"));
  assert.deepEqual({ ...inferred, out_channels: cfg.out_channels ?? cfg.in_channels }, { ...cfg, out_channels: cfg.out_channels ?? cfg.in_channels });
  set.close();
});

test("timestep features are [cos, sin] of 1000·t", () => {
  const f = timestepFeatures([0.5], 8);
  assert.equal(f.length, 8);
  assert.ok(Math.abs(f[0] - Math.cos(500)) < 1e-4); // k = 0: frequency 1
  assert.ok(Math.abs(f[4] - Math.sin(500)) < 1e-4);
});

test("rope tables: text ids rotate only the last axis", () => {
  const { cos, sin, pairs } = ropeTables([0n, 0n, 0n, 3n], 1, [4, 4, 4, 4], 2000);
  assert.equal(pairs, 8);
  for (let m = 0; m < 6; m++) assert.equal(cos[m], 1);
  assert.ok(Math.abs(sin[6] - Math.sin(3)) < 1e-6);
});

function tmp(name: string) {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-tr-")), name);
}

test("a truncated weight file is refused with the file and tensor named", () => {
  const src = path.join(diffDir, "diffusion_pytorch_model.safetensors");
  const file = tmp("truncated.safetensors");
  fs.copyFileSync(src, file);
  fs.truncateSync(file, fs.statSync(src).size - 1000);
  assert.throws(() => WeightSet.open(file), (e: Error) => e.message.includes("truncated.safetensors") && /truncated/.test(e.message) && /tensor "/.test(e.message));
});

test("weights of the wrong shape for the config are refused, naming the tensor", async () => {
  const cfg = readTransformerConfig(path.join(diffDir, "config.json"));
  const bad = { ...cfg, num_attention_heads: cfg.num_attention_heads + 1 };
  const w = new TransformerWeights(WeightSet.open(diffDir), "diffusers");
  await assert.rejects(Flux2Transformer.load(backend, bad, w), /has shape \[.*\] but the config needs/);
});

test("a missing key is refused with its name", async () => {
  const all = readAll(path.join(diffDir, "diffusion_pytorch_model.safetensors"));
  all.delete("transformer_blocks.1.attn.to_k.weight");
  const file = tmp("missing.safetensors");
  writeSafetensors(file, Object.fromEntries(all));
  await assert.rejects(
    Flux2Transformer.fromFiles(backend, file, path.join(diffDir, "config.json")),
    /missing tensor "transformer_blocks\.1\.attn\.to_k\.weight"/,
  );
});

test("external-data sessions (memory-mapped weights) give the same output as inline ones", async () => {
  const cfg = readTransformerConfig(path.join(diffDir, "config.json"));
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-cache-"));
  process.env.FLUX2_CACHE = cache;
  try {
    const w = new TransformerWeights(WeightSet.open(diffDir), "diffusers");
    const { buildTransformerGraph } = await import("../src/models/transformer.js");
    const session = await backend.createSession(buildTransformerGraph(cfg, w), { external: true });
    const inline = await Flux2Transformer.fromFiles(backend, diffDir, path.join(diffDir, "config.json"));
    const x = inputs();
    const ref = (await inline.forward(x)).data as Float32Array;
    // Reuse forward()'s feed building by swapping the session in a second model object.
    const viaFile = Object.create(inline);
    (viaFile as any).session = session;
    const got = (await (Flux2Transformer.prototype.forward.call(viaFile, x))).data as Float32Array;
    assert.deepEqual([...got], [...ref]);
    const onnxDir = fs.readdirSync(path.join(cache, "onnx"));
    assert.equal(onnxDir.length, 1);
    const files = fs.readdirSync(path.join(cache, "onnx", onnxDir[0]));
    assert.ok(files.includes("model.onnx") && files.some((f) => f.startsWith("weights-")));
    await session.release();
    await inline.release();
  } finally {
    delete process.env.FLUX2_CACHE;
  }
});
