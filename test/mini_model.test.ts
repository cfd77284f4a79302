// The flux2-mini model folder: within the 40 MB budget, PyTorch-default initial values, the same
// bytes from the same seed, loaded by the real checkpoint code with Qwen3's real vocabulary, and
// run end to end by flux2 generate and flux2 eval.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { miniPlan, writeMiniModel, MINI_TEXT_ENCODER } from "../src/mini/model.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { SafetensorsFile, toFloat32, writeSafetensors } from "../src/io/safetensors.js";
import { PromptTokenizer } from "../src/text/tokenizer.js";
import { OrtBackend } from "../src/backend/ort.js";
import { repoRoot } from "./golden.js";
import { loadPipeline } from "../src/loaders/pretrained.js";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "flux2-mini-model-"));
const dir = path.join(tmp(), "mini");
writeMiniModel(dir, 3);
const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const WEIGHTS = ["transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"];

test("the weights fit in 40 MB of bf16 and the folder opens as a klein base checkpoint", () => {
  const bytes = WEIGHTS.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  assert.ok(bytes <= 40e6, `${bytes} bytes`);
  assert.ok(Math.abs(bytes - miniPlan().bytes) < 1e5);
  const ck = openCheckpoint(dir);
  assert.equal(ck.variant, "klein-base");
  assert.equal(ck.textEncoder.kind, "qwen3");
  const index = JSON.parse(fs.readFileSync(path.join(dir, "model_index.json"), "utf8"));
  assert.equal(index.flux2ts.resolution, 64);
});

test("the tokenizer is Qwen3's real vocabulary and the embedding table covers it", async () => {
  const tok = await PromptTokenizer.load(path.join(dir, "tokenizer"));
  const enc = tok.encode(["a #2D5A8E circle on a white background"], 32);
  const ids = Array.from(enc.inputIds, Number);
  assert.equal(ids[0], 151644); // <|im_start|> in Qwen3's vocabulary
  assert.ok(Math.max(...ids) < MINI_TEXT_ENCODER.vocab_size);
  assert.equal(tok.padId, 151643); // <|endoftext|>
});

test("initial values follow PyTorch's defaults and the same seed gives the same bytes", () => {
  const read = (file: string, name: string) => {
    const f = SafetensorsFile.open(path.join(dir, file));
    try {
      return { values: Array.from(toFloat32(f.tensors.get(name)!.dtype, f.bytes(name))), shape: f.tensors.get(name)!.shape };
    } finally {
      f.close();
    }
  };
  const q = read("transformer/diffusion_pytorch_model.safetensors", "transformer_blocks.0.attn.to_q.weight");
  const vals = q.values;
  const bound = 1 / Math.sqrt(q.shape[1]);
  assert.ok(vals.every((x) => Math.abs(x) <= bound * 1.01), "Linear weights inside ±1/√fan_in");
  const std = Math.sqrt(vals.reduce((s, x) => s + x * x, 0) / vals.length);
  assert.ok(Math.abs(std / (bound / Math.sqrt(3)) - 1) < 0.05, `std ${std} vs uniform ${bound / Math.sqrt(3)}`);
  assert.ok(read("text_encoder/model.safetensors", "model.norm.weight").values.every((x) => x === 1));
  const emb = read("text_encoder/model.safetensors", "model.embed_tokens.weight").values;
  const embStd = Math.sqrt(emb.reduce((s, x) => s + x * x, 0) / emb.length);
  assert.ok(Math.abs(embStd - 1) < 0.01, `embedding std ${embStd} (nn.Embedding: N(0, 1))`);
  const again = path.join(tmp(), "again"), other = path.join(tmp(), "other");
  writeMiniModel(again, 3);
  writeMiniModel(other, 4);
  for (const f of WEIGHTS) {
    assert.equal(sha(path.join(again, f)), sha(path.join(dir, f)), f);
    assert.notEqual(sha(path.join(other, f)), sha(path.join(dir, f)), f);
  }
  assert.throws(() => writeMiniModel(dir, 3), /not empty/);
});

test("the frozen random text encoder tells prompts apart (a one-digit hex change moves the embedding)", async () => {
  const pipe = loadPipeline(dir, { backend: new OrtBackend(), keepLoaded: true });
  try {
    const prompts = ["a #2D5A8E circle on a white background", "a #2D5A8F circle on a white background", "a #2D5A8E square on a white background", "a red apple"];
    const L = 128, e = await pipe.encodePrompts(prompts, L, [9, 18, 27]);
    const D = e.shape[2], seq = (b: number) => e.data.subarray(b * L * D, (b + 1) * L * D);
    const rel = (a: Float32Array, b: Float32Array) => {
      let d = 0, n = 0;
      for (let i = 0; i < a.length; i++) { d += (a[i] - b[i]) ** 2; n += a[i] ** 2; }
      return Math.sqrt(d / n);
    };
    assert.ok(rel(seq(0), seq(1)) > 0.1, `one hex digit: ${rel(seq(0), seq(1))}`);
    assert.ok(rel(seq(0), seq(2)) > 0.1, `circle vs square: ${rel(seq(0), seq(2))}`);
    assert.ok(rel(seq(0), seq(3)) > 0.5, `different prompts: ${rel(seq(0), seq(3))}`);
    // No collapse: token positions of one prompt are far from parallel.
    const row = (t: number) => e.data.subarray(t * D, (t + 1) * D);
    let cos = 0, k = 0;
    for (let t = 0; t < 16; t++) {
      for (let u = t + 1; u < 16; u++) {
        let s = 0, x = 0, y = 0;
        for (let i = 0; i < D; i++) { s += row(t)[i] * row(u)[i]; x += row(t)[i] ** 2; y += row(u)[i] ** 2; }
        cos += s / Math.sqrt(x * y);
        k++;
      }
    }
    assert.ok(cos / k < 0.8, `mean cosine between token positions ${cos / k}`);
  } finally {
    await pipe.release();
  }
});

test("flux2 generate and flux2 eval run on the folder", async () => {
  const out = path.join(tmp(), "c.png");
  const g = spawnSync(process.execPath, [cli, "generate", "--model", dir, "--prompt", "a #1E90FF circle on a white background",
    "--width", "64", "--height", "64", "--steps", "2", "--max-sequence-length", "128", "--out", out, "--quiet"], { encoding: "utf8", timeout: 120_000 });
  assert.equal(g.status, 0, g.stderr);
  const meta = await sharp(out).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 64]);
  // A small PEFT LoRA on one attention projection, so the eval's before/after style path runs too.
  const lora = path.join(tmp(), "style.safetensors");
  const r8 = 4, D = 192;
  writeSafetensors(lora, {
    "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": { dtype: "F32", shape: [r8, D], data: new Float32Array(r8 * D).fill(0.01) },
    "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": { dtype: "F32", shape: [D, r8], data: new Float32Array(D * r8).fill(0.01) },
  });
  const e = spawnSync(process.execPath, [cli, "eval", "--model", dir, "--lora", lora, "--steps", "1", "--hex", "2", "--layout", "2", "--emoji", "2", "--style", "1", "--vae-ceiling", "--threads", "1", "--json"],
    { encoding: "utf8", timeout: 180_000 });
  assert.equal(e.status, 0, e.stderr);
  const r = JSON.parse(e.stdout);
  for (const k of ["hex", "layout", "emoji"]) {
    assert.equal(r[k].total, 2, k);
    assert.ok(r[k].score >= 0 && r[k].score <= 1, k);
  }
  // Each hex case says which shape was drawn; hexShapes counts those that match the prompt's shape.
  const hexCases = r.cases.filter((c: { measure: string }) => c.measure === "hex");
  const matched = hexCases.filter((c: { prompt: string; detail: string }) => {
    const drawn = /drawn as (circle|square|triangle|star|ring|nothing)$/.exec(c.detail);
    assert.ok(drawn, c.detail);
    return c.prompt.includes(` ${drawn[1]} on a white background`);
  }).length;
  assert.deepEqual([r.hexShapes.passed, r.hexShapes.total], [matched, 2]);
  assert.equal(r.style.total, 1);
  assert.equal(typeof r.style.withoutLora, "number");
  for (const k of ["hex", "layout", "emoji"]) assert.ok(r.vaeCeiling[k] >= 0 && r.vaeCeiling[k] <= 1, `VAE ceiling ${k}`);
  assert.equal(r.emoji.gallery > 1800, true);
  assert.equal(r.cases.length, 7);
  const bad = spawnSync(process.execPath, [cli, "eval", "--model", dir, "--size", "70"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--size must be a multiple of 16/);
  const badThreads = spawnSync(process.execPath, [cli, "eval", "--model", dir, "--threads", "0"], { encoding: "utf8" });
  assert.equal(badThreads.status, 1);
  assert.match(badThreads.stderr, /--threads/);
});
