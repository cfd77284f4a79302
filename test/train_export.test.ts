// Trained LoRAs saved in the diffusers/PEFT and ComfyUI (BFL names, fused qkv)
// formats load back through the project's LoRA loader with the same deltas, and
// give byte-identical images through the pipeline.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SafetensorsFile, WeightSet } from "../src/io/safetensors.js";
import { denseOf, loadLoraFile, resolveModule } from "../src/lora/formats.js";
import { randn } from "../src/util/random.js";
import { OrtBackend } from "../src/backend/ort.js";
import { Flux2Vae } from "../src/models/vae.js";
import { bnNormalize, patchify } from "../src/pipeline/latents.js";
import { tensor } from "../src/util/tensor.js";
import { writeLatentStats } from "../src/train/vae_stats.js";
import { bflModuleOf, saveComfyLora, saveModelFolder, savePeftLora } from "../src/train/export.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

const MODEL = "testdata/golden/checkpoints/klein_base";
const RANK = 4, ALPHA = 8;
// Full q/k/v (fused in BFL), a partial qkv (q only; k only of the text stream), single-block layers,
// and norm_out.linear (BFL stores its halves swapped).
const MODULES = [
  "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
  "transformer_blocks.1.attn.to_q", "transformer_blocks.0.attn.add_k_proj", "transformer_blocks.0.attn.to_out.0",
  "transformer_blocks.1.ff.linear_in", "single_transformer_blocks.0.attn.to_qkv_mlp_proj", "single_transformer_blocks.1.attn.to_out",
  "norm_out.linear",
];

function randomLora(): Map<string, Float32Array> {
  const set = WeightSet.open(path.join(MODEL, "transformer"));
  const params = new Map<string, Float32Array>();
  MODULES.forEach((m, i) => {
    const [out, inF] = set.info(`${m}.weight`).shape;
    params.set(`transformer.${m}.lora_A.weight`, randn(100 + i, RANK * inF).map((v) => v * 0.3));
    params.set(`transformer.${m}.lora_B.weight`, randn(200 + i, out * RANK).map((v) => v * 0.3));
  });
  set.close();
  return params;
}

test("BFL module names of every diffusers module resolve back to it (the loader's own mapping)", () => {
  for (const m of MODULES) {
    const b = bflModuleOf(m)!;
    const back = resolveModule(b.module)!;
    const t = back.targets[b.part ?? 0];
    assert.equal(t.name, `${m}.weight`, `${m} → ${b.module}`);
    assert.equal(!!t.swapHalves, !!b.swap);
  }
  assert.equal(bflModuleOf("not.a.module"), null);
});

test("PEFT and ComfyUI exports load back with the same deltas and give identical images", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-export-"));
  const params = randomLora();
  const info = { rank: RANK, alpha: ALPHA, targets: ["to_q", "to_k", "to_v"] };
  const peftFile = path.join(dir, "lora.safetensors"), comfyFile = path.join(dir, "lora_comfy.safetensors");
  savePeftLora(peftFile, params, info);
  saveComfyLora(comfyFile, params, info);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["lora.safetensors", "lora_comfy.safetensors"], "no temporary files left");

  const f = SafetensorsFile.open(peftFile);
  const meta = JSON.parse(f.metadata.lora_adapter_metadata);
  assert.equal(f.metadata.format, "pt");
  assert.equal(meta["transformer.r"], RANK);
  assert.equal(meta["transformer.lora_alpha"], ALPHA);
  assert.deepEqual(f.tensors.get("transformer.transformer_blocks.0.attn.to_q.lora_A.weight")!.shape, [RANK, 48]);
  f.close();
  const c = SafetensorsFile.open(comfyFile);
  assert.deepEqual(c.tensors.get("diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight")!.shape, [3 * RANK, 48]);
  assert.deepEqual(c.tensors.get("diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight")!.shape, [3 * 48, 3 * RANK]);
  assert.ok(c.tensors.has("diffusion_model.single_blocks.0.linear1.lora_A.weight"));
  assert.ok(c.tensors.has("diffusion_model.final_layer.adaLN_modulation.1.lora_B.weight"));
  c.close();

  const peft = loadLoraFile(peftFile), comfy = loadLoraFile(comfyFile);
  assert.equal(peft.format, "diffusers");
  assert.equal(comfy.format, "ai-toolkit");
  // A partly trained fused qkv (q only) reads back with zero deltas on the other projections.
  for (const [name, d] of comfy.deltas) {
    if (!MODULES.includes(name.replace(/\.weight$/, ""))) assert.ok(denseOf(d).every((v) => v === 0), `${name} should be a zero delta`);
  }
  assert.deepEqual([...peft.deltas.keys()].sort(), MODULES.map((m) => `${m}.weight`).sort());
  for (const [name, d] of peft.deltas) {
    assert.equal(d.scale, ALPHA / RANK);
    const a = denseOf(d), b = denseOf(comfy.deltas.get(name)!);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst <= 1e-6 * Math.max(1, ...a.map(Math.abs)), `${name}: max difference ${worst}`);
  }

  const render = async (loras: { file: string; strength: number }[]) => {
    const pipe = loadPipeline(MODEL, { loras });
    try {
      const r = await pipe.generate({ prompt: "a red fox", width: 64, height: 64, steps: 2, seed: 3 });
      return Buffer.from(r.images[0].rgb);
    } finally {
      await pipe.release();
    }
  };
  const base = await render([]);
  const withPeft = await render([{ file: peftFile, strength: 1 }]);
  const withComfy = await render([{ file: comfyFile, strength: 1 }]);
  assert.notDeepEqual(withPeft, base, "the LoRA changes the image");
  assert.ok(withPeft.equals(withComfy), "PEFT and ComfyUI files give the same image");
});

test("--full saves a diffusers model folder: trained tensors with the base's shapes, other parts linked", () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-full-")), "model");
  const set = WeightSet.open(path.join(MODEL, "transformer"));
  const params = new Map(set.keys().map((k) => [k, set.float32(k).map((v) => v + 1)] as [string, Float32Array]));
  set.close();
  saveModelFolder(out, MODEL, "transformer", params, path.join(MODEL, "transformer"));
  assert.deepEqual(fs.readdirSync(out).sort(), fs.readdirSync(MODEL).sort());
  const back = WeightSet.open(path.join(out, "transformer"));
  const orig = WeightSet.open(path.join(MODEL, "transformer"));
  assert.deepEqual(back.keys().sort(), orig.keys().sort());
  const k = "x_embedder.weight";
  assert.deepEqual(back.info(k).shape, orig.info(k).shape);
  assert.deepEqual(back.float32(k), orig.float32(k).map((v) => v + 1));
  back.close();
  orig.close();
  assert.ok(fs.existsSync(path.join(out, "transformer", "config.json")));
  assert.ok(!fs.readdirSync(path.dirname(out)).some((n) => n.includes(".tmp-")), "no temporary folder left");
});

test("--vae: the latent batch-norm statistics are recomputed over the data (normalized latents get mean 0, variance 1)", async () => {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-vae-")), "vae");
  fs.mkdirSync(dir);
  for (const n of fs.readdirSync(path.join(MODEL, "vae"))) fs.copyFileSync(path.join(MODEL, "vae", n), path.join(dir, n.endsWith(".safetensors") ? "diffusion_pytorch_model.safetensors" : n));
  const pixels = [0, 1, 2].map((i) => ({ data: randn(300 + i, 3 * 32 * 48).map((v) => Math.tanh(v)), width: 48, height: 32 }));
  const { count } = await writeLatentStats(new OrtBackend(), dir, pixels);
  assert.equal(count, 3 * (32 / 4) * (48 / 4));
  const vae = await Flux2Vae.fromFiles(new OrtBackend(), path.join(dir, "diffusion_pytorch_model.safetensors"), path.join(dir, "config.json"));
  const { mean, std } = vae.bnStats();
  const C = mean.length;
  const sum = new Float64Array(C), sq = new Float64Array(C);
  let per = 0;
  for (const p of pixels) {
    const enc = await vae.encode({ data: p.data, shape: [1, 3, p.height, p.width] });
    const x = bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std);
    per = x.shape[2] * x.shape[3];
    for (let c = 0; c < C; c++) for (let i = 0; i < per; i++) { const v = x.data[c * per + i]; sum[c] += v; sq[c] += v * v; }
  }
  await vae.release();
  const n = pixels.length * per;
  for (let c = 0; c < C; c++) {
    assert.ok(Math.abs(sum[c] / n) < 1e-3, `channel ${c} mean ${sum[c] / n}`);
    assert.ok(Math.abs(sq[c] / (n - 1) - 1) < 1e-2, `channel ${c} variance ${sq[c] / (n - 1)}`);
  }
});
