// Training core: the golden-train set through the conformance runner, AdamW and clipping
// with torch's semantics, LoRA targets / init, activation checkpointing, and bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import type { Backend } from "../src/backend/backend.js";
import type { Graph } from "../src/onnx/graph.js";
import { runConformance } from "../src/conformance/runner.js";
import { readAll, writeSafetensors } from "../src/io/safetensors.js";
import { f32ToBf16Bits } from "../src/io/dtype.js";
import { AdamW, clipGradNorm } from "../src/train/optim.js";
import { DEFAULT_LORA_TARGETS, TransformerTrainer, VaeTrainer, type TransformerBatch } from "../src/train/step.js";
import { randn } from "../src/util/random.js";
import { repoRoot } from "./golden.js";

const trainDir = path.join(repoRoot, "testdata", "golden-train");
const model = path.join(trainDir, "models");
const backend = new OrtBackend({ threads: 1 });
const quiet = () => {};

/** The backend, recording the graphs it is given (to look at what the trainers build). */
function spyBackend(): { backend: Backend; graphs: Graph[] } {
  const graphs: Graph[] = [];
  const spy: Backend = { name: backend.name, device: backend.device, createSession: (g, o) => { graphs.push(g); return backend.createSession(g, o); } };
  return { backend: spy, graphs };
}
const recomputed = (g: Graph) => g.nodes.filter((n) => n.name.includes("recompute/")).length;

test("every golden-train case passes (train_lora_step, train_full_step, vae_train_step)", async () => {
  const s = await runConformance(trainDir, { log: quiet, backend });
  const bad = s.reports.filter((r) => r.status !== "PASS");
  assert.deepEqual(bad, [], bad.map((r) => `${r.name} ${r.status} ${r.detail ?? ""}`).join("; "));
  assert.deepEqual(s.reports.map((r) => r.kind).sort(), ["train_full_step", "train_lora_step", "vae_train_step"]);
});

test("a wrong training result is reported as FAIL", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-conf-"));
  try {
    fs.cpSync(trainDir, dir, { recursive: true });
    const cases = JSON.parse(fs.readFileSync(path.join(dir, "cases.json"), "utf8"));
    fs.writeFileSync(path.join(dir, "cases.json"), JSON.stringify({ ...cases, cases: cases.cases.filter((c: any) => c.name === "train/lora_default") }));
    // Change the LoRA init: every loss, gradient and final weight moves.
    const init = path.join(dir, "train", "lora_default.lora_init.safetensors");
    const buf = fs.readFileSync(init);
    for (let i = buf.length - 400; i < buf.length; i += 4) buf[i + 3] ^= 0x01;
    fs.writeFileSync(init, buf);
    const s = await runConformance(dir, { log: quiet, backend });
    assert.equal(s.failed, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("without expected files the training kinds compute and write their outputs (--write-outputs)", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-noexp-"));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-out-"));
  try {
    fs.cpSync(trainDir, dir, { recursive: true, filter: (src) => !src.endsWith(".expected.safetensors") });
    const s = await runConformance(dir, { log: quiet, backend, writeOutputs: out, kinds: ["train_lora_step", "vae_train_step"] });
    assert.equal(s.computed, 2);
    const mine = readAll(path.join(out, "train", "lora_default.safetensors"));
    const ref = readAll(path.join(trainDir, "train", "lora_default.expected.safetensors"));
    assert.deepEqual([...mine.keys()].sort(), [...ref.keys()].sort());
    for (const k of ["loss_2", "final.transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]) {
      const a = mine.get(k)!.data as Float32Array, b = ref.get(k)!.data as Float32Array;
      for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-4, `${k}[${i}]`);
    }
    assert.ok(fs.existsSync(path.join(out, "train", "vae.safetensors")));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test("AdamW follows torch.optim.AdamW (decoupled decay, bias correction, eps outside the root) and resumes exactly", () => {
  const lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  const grads = [0.5, -1, 0.25];
  // Reference written out step by step as in torch's _single_tensor_adamw.
  let p = 1, m = 0, v = 0;
  const ref: number[] = [];
  grads.forEach((g, i) => {
    const t = i + 1;
    p *= 1 - lr * wd;
    m = m * b1 + g * (1 - b1);
    v = v * b2 + g * g * (1 - b2);
    const denom = Math.sqrt(v) / Math.sqrt(1 - b2 ** t) + eps;
    p -= (lr / (1 - b1 ** t)) * (m / denom);
    ref.push(p);
  });
  const params = new Map([["w", Float32Array.of(1)]]);
  const opt = new AdamW(params, { lr, betas: [b1, b2], eps, weightDecay: wd });
  grads.forEach((g, i) => {
    opt.step(new Map([["w", Float32Array.of(g)]]));
    assert.ok(Math.abs(params.get("w")![0] - ref[i]) < 1e-6, `step ${i}: ${params.get("w")![0]} vs ${ref[i]}`);
  });
  assert.ok(Math.abs(ref[0] - (0.999 - 0.1)) < 1e-6); // first step moves by lr·sign(g) after the decay

  // Resume after step 1 from state() into a fresh optimizer: same result as never stopping.
  const a = new Map([["w", Float32Array.of(1, 2)]]);
  const o1 = new AdamW(a, { lr, betas: [b1, b2], eps, weightDecay: wd });
  o1.step(new Map([["w", Float32Array.of(0.5, -0.5)]]));
  const saved = o1.state();
  const b = new Map([["w", a.get("w")!.slice()]]);
  const o2 = new AdamW(b, { lr, betas: [b1, b2], eps, weightDecay: wd });
  o2.load(saved);
  o1.step(new Map([["w", Float32Array.of(-1, 3)]]), 0.05);
  o2.step(new Map([["w", Float32Array.of(-1, 3)]]), 0.05);
  assert.deepEqual([...b.get("w")!], [...a.get("w")!]);
  assert.throws(() => o2.step(new Map()), /no gradient for parameter "w"/);
  assert.throws(() => o2.load({ step: 1, m: new Map(), v: new Map() }), /no m for parameter "w"/);
});

test("clipGradNorm is torch's clip_grad_norm_", () => {
  const g = new Map([["a", Float32Array.of(3)], ["b", Float32Array.of(0, 4)]]);
  const norm = clipGradNorm(g, 1);
  assert.equal(norm, 5);
  assert.ok(Math.abs(g.get("a")![0] - 3 / (5 + 1e-6)) < 1e-7);
  assert.ok(Math.abs(g.get("b")![1] - 4 / (5 + 1e-6)) < 1e-7);
  const small = new Map([["a", Float32Array.of(0.3, 0.4)]]);
  assert.ok(Math.abs(clipGradNorm(small, 1) - 0.5) < 1e-7);
  assert.deepEqual([...small.get("a")!], [Math.fround(0.3), Math.fround(0.4)]);
});

function goldenBatch(): TransformerBatch {
  const inp = readAll(path.join(trainDir, "train", "lora_default.inputs.safetensors"));
  const x0 = inp.get("model_input")!, e = inp.get("prompt_embeds")!;
  return {
    x0: x0.data as Float32Array, shape: x0.shape as [number, number, number, number],
    embeds: e.data as Float32Array, embedShape: e.shape as [number, number, number],
    noise: inp.get("noise_0")!.data as Float32Array, sigmas: inp.get("sigmas_0")!.data as Float32Array,
  };
}

test("the default LoRA targets select the modules diffusers' klein script trains; default init is the script's gaussian, kaiming on request (seeded)", async () => {
  const init = readAll(path.join(trainDir, "train", "lora_default.lora_init.safetensors"));
  const mode = { kind: "lora" as const, targets: [...DEFAULT_LORA_TARGETS], rank: 4, alpha: 4 };
  const t = await TransformerTrainer.open(backend, path.join(model, "transformer.safetensors"), path.join(model, "transformer.config.json"), mode, { seed: 5 });
  const again = await TransformerTrainer.open(backend, path.join(model, "transformer.safetensors"), path.join(model, "transformer.config.json"), mode, { seed: 5 });
  const kaiming = await TransformerTrainer.open(backend, path.join(model, "transformer.safetensors"), path.join(model, "transformer.config.json"), { ...mode, initMethod: "kaiming" }, { seed: 5 });
  try {
    assert.deepEqual([...t.params.keys()].sort(), [...init.keys()].sort());
    let sumSq = 0, n = 0;
    for (const [k, a] of t.params) {
      assert.deepEqual([...a], [...again.params.get(k)!], "same seed, same init");
      assert.deepEqual(t.paramShape(k), init.get(k)!.shape);
      const ka = kaiming.params.get(k)!;
      if (k.endsWith("lora_B.weight")) assert.ok(a.every((x) => x === 0) && ka.every((x) => x === 0), `${k} starts at zero`);
      else {
        for (const x of a) sumSq += x * x;
        n += a.length;
        const bound = 1 / Math.sqrt(t.paramShape(k)[1]);
        assert.ok(ka.every((x) => Math.abs(x) <= bound) && ka.some((x) => x !== 0), `kaiming ${k} within ±1/sqrt(in)`);
        assert.ok(a.some((x) => Math.abs(x) > bound), `gaussian ${k} is not the kaiming draw`);
      }
    }
    // peft's gaussian init: A ~ N(0, 1/rank²); the sample standard deviation over every A.
    const std = Math.sqrt(sumSq / n);
    assert.ok(n > 1000 && Math.abs(std - 1 / mode.rank) < 0.05 / mode.rank, `gaussian std ${std} over ${n} values, want ${1 / mode.rank}`);
    assert.deepEqual(t.loraConfig?.modules.length, init.size / 2);
    // B = 0: the LoRA changes nothing yet, but its A tensors already get no gradient and B's do.
    const r = await t.lossAndGrads(goldenBatch());
    assert.ok(Number.isFinite(r.loss) && r.loss > 0);
    const key = "transformer.transformer_blocks.0.attn.to_q.lora_B.weight";
    assert.ok(r.grads.get(key)!.some((x) => x !== 0));
    assert.ok(r.grads.get(key.replace("lora_B", "lora_A"))!.every((x) => x === 0));
  } finally {
    await t.release();
    await again.release();
    await kaiming.release();
  }
});

test("activation checkpointing (recompute each block in the backward) gives the same loss and gradients", async () => {
  const init = new Map([...readAll(path.join(trainDir, "train", "lora_default.lora_init.safetensors"))].map(([k, v]) => [k, v.data as Float32Array]));
  const mode = { kind: "lora" as const, targets: ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj", "attn.to_out"], rank: 4, alpha: 4, init };
  const spy = spyBackend();
  const open = (checkpointActivations: boolean) =>
    TransformerTrainer.open(spy.backend, path.join(model, "transformer.safetensors"), path.join(model, "transformer.config.json"), mode, { checkpointActivations });
  const plain = await open(false), ck = await open(true);
  try {
    const a = await plain.lossAndGrads(goldenBatch());
    const b = await ck.lossAndGrads(goldenBatch());
    assert.ok(recomputed(spy.graphs[1]) > 0 && recomputed(spy.graphs[0]) === 0, "the checkpointed graph recomputes blocks");
    for (const block of ["double.0", "single.0", "single.1"]) assert.ok(spy.graphs[1].nodes.some((n) => n.name.includes(`recompute/${block}/`)), block);
    // Only what the backward reads is recomputed: a block's last projection, gate and residual add are not.
    const ckGraph = spy.graphs[1];
    const read = new Set([...ckGraph.nodes.flatMap((n) => n.inputs), ...ckGraph.outputs.map((o) => o.name)]);
    const unread = ckGraph.nodes.filter((n) => n.name.includes("recompute/") && !n.outputs.some((o) => read.has(o)));
    assert.deepEqual(unread.map((n) => n.name), [], "recomputed nodes nothing reads");
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * Math.abs(a.loss));
    for (const [k, g] of a.grads) {
      const h = b.grads.get(k)!;
      const scale = g.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i] - h[i]) <= 1e-5 * scale + 1e-9, `${k}[${i}]: ${g[i]} vs ${h[i]}`);
    }
  } finally {
    await plain.release();
    await ck.release();
  }
});

test("bad training input is refused with a message that says what is wrong", async () => {
  const weights = path.join(model, "transformer.safetensors"), cfg = path.join(model, "transformer.config.json");
  await assert.rejects(TransformerTrainer.open(backend, weights, cfg, { kind: "lora", targets: ["to_qq"], rank: 4, alpha: 4 }), /"to_qq" matches no Linear layer/);
  await assert.rejects(TransformerTrainer.open(backend, weights, null, { kind: "full" }), /needs its config.json/);
  await assert.rejects(TransformerTrainer.open(backend, weights, cfg, { kind: "lora", targets: ["to_q"], rank: 0, alpha: 4 }), /rank must be a positive integer/);
  const wrong = new Map([["transformer.transformer_blocks.0.attn.to_q.lora_A.weight", new Float32Array(3)], ["transformer.transformer_blocks.0.attn.to_q.lora_B.weight", new Float32Array(3)]]);
  await assert.rejects(TransformerTrainer.open(backend, weights, cfg, { kind: "lora", targets: ["to_q"], rank: 4, alpha: 4, init: wrong }), /has 3 values; rank 4 needs/);
  const t = await TransformerTrainer.open(backend, weights, cfg, { kind: "lora", targets: ["to_q"], rank: 2, alpha: 2 });
  try {
    const b = goldenBatch();
    const nan = b.x0.slice();
    nan[3] = NaN;
    await assert.rejects(t.lossAndGrads({ ...b, x0: nan }), /x0 holds a non-finite value at index 3/);
    await assert.rejects(t.lossAndGrads({ ...b, sigmas: Float32Array.of(0.5, 1.5) }), /sigmas must lie in \[0, 1\]/);
    await assert.rejects(t.lossAndGrads({ ...b, shape: [2, 8, 4, 12] }), /x0 has 8 channels; this transformer takes 16/);
  } finally {
    await t.release();
  }
  const vae = await VaeTrainer.open(backend, path.join(model, "vae.safetensors"), path.join(model, "vae.config.json"));
  try {
    assert.ok(!vae.params.has("bn.running_mean"), "batch-norm buffers are not parameters");
    const images = randn(1, 3 * 31 * 31);
    await assert.rejects(vae.lossAndGrads({ images, shape: [1, 3, 31, 31], eps: randn(2, 4 * 15 * 15), klWeight: 0.1 }), /multiples of 2/);
  } finally {
    await vae.release();
  }
});

test("full training of a bf16 checkpoint: every weight is fed as float32 (row blocks of norm_out included) and matches the float32 checkpoint", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bf16-full-"));
  const cfg = path.join(model, "transformer.config.json");
  try {
    const bf16: Record<string, { dtype: "BF16"; shape: number[]; data: Uint16Array }> = {};
    for (const [k, v] of readAll(path.join(model, "transformer.safetensors"))) bf16[k] = { dtype: "BF16", shape: v.shape, data: Uint16Array.from(v.data as Float32Array, f32ToBf16Bits) };
    writeSafetensors(path.join(dir, "t.safetensors"), bf16);
    const a = await TransformerTrainer.open(backend, path.join(dir, "t.safetensors"), cfg, { kind: "full" });
    const b = await TransformerTrainer.open(backend, path.join(model, "transformer.safetensors"), cfg, { kind: "full" });
    try {
      assert.deepEqual([...a.params.keys()], [...b.params.keys()]);
      const ra = await a.lossAndGrads(goldenBatch()), rb = await b.lossAndGrads(goldenBatch());
      assert.ok(Math.abs(ra.loss - rb.loss) < 1e-2 * rb.loss, `loss ${ra.loss} vs ${rb.loss}`);
      for (const k of ["norm_out.linear.weight", "x_embedder.weight", "single_transformer_blocks.1.attn.norm_q.weight"]) {
        const ga = ra.grads.get(k)!, gb = rb.grads.get(k)!;
        const scale = gb.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        assert.ok(scale > 0);
        for (let i = 0; i < gb.length; i++) assert.ok(Math.abs(ga[i] - gb[i]) <= 0.05 * scale, `${k}[${i}]: ${ga[i]} vs ${gb[i]} (bf16 rounding only)`);
      }
    } finally {
      await a.release();
      await b.release();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a guidance-embedding transformer (dev) trains with a guidance scale per sample, and needs one", async () => {
  const tdir = path.join(repoRoot, "testdata", "golden", "transformer");
  const t = await TransformerTrainer.open(backend, path.join(tdir, "dev_tiny.safetensors"), path.join(tdir, "dev_tiny.config.json"), { kind: "lora", targets: ["to_q", "to_v"], rank: 2, alpha: 2 }, { seed: 1 });
  try {
    const c = t.config;
    const B = 1, C = c.in_channels, h = 2, w = 3, L = 4, J = c.joint_attention_dim;
    const batch: TransformerBatch = { x0: randn(1, B * C * h * w), shape: [B, C, h, w], embeds: randn(2, B * L * J), embedShape: [B, L, J], noise: randn(3, B * C * h * w), sigmas: Float32Array.of(0.4) };
    await assert.rejects(t.lossAndGrads(batch), /pass `guidance`/);
    const lo = await t.lossAndGrads({ ...batch, guidance: Float32Array.of(1) });
    const hi = await t.lossAndGrads({ ...batch, guidance: Float32Array.of(4) });
    assert.ok(Number.isFinite(lo.loss) && lo.loss !== hi.loss, "the guidance scale reaches the model");
    assert.ok([...lo.grads.values()].some((g) => g.some((x) => x !== 0)));
  } finally {
    await t.release();
  }
});

test("VAE activation checkpointing gives the same loss and gradients", async () => {
  const inp = readAll(path.join(trainDir, "train", "vae.inputs.safetensors"));
  const images = inp.get("images")!;
  const batch = { images: images.data as Float32Array, shape: images.shape as [number, number, number, number], eps: inp.get("eps_0")!.data as Float32Array, klWeight: 0.001 };
  const spy = spyBackend();
  const plain = await VaeTrainer.open(spy.backend, path.join(model, "vae.safetensors"), path.join(model, "vae.config.json"));
  const ck = await VaeTrainer.open(spy.backend, path.join(model, "vae.safetensors"), path.join(model, "vae.config.json"), { checkpointActivations: true });
  try {
    const a = await plain.lossAndGrads(batch), b = await ck.lossAndGrads(batch);
    for (const block of ["encoder/down.0", "encoder/mid", "decoder/up.1"]) assert.ok(spy.graphs[1].nodes.some((n) => n.name.includes(`recompute/${block}/`)), block);
    assert.equal(recomputed(spy.graphs[0]), 0);
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * Math.abs(a.loss));
    for (const [k, g] of a.grads) {
      const h = b.grads.get(k)!;
      const scale = g.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i] - h[i]) <= 1e-5 * scale + 1e-9, `${k}[${i}]: ${g[i]} vs ${h[i]}`);
    }
  } finally {
    await plain.release();
    await ck.release();
  }
});
