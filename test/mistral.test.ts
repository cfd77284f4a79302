// Tests of src/models/mistral.ts (the FLUX.2 dev text encoder) and src/text/mistral_prompt.ts.
//
// There are no golden fixtures for the Mistral encoder (testdata/golden/README.md, "Not covered"), so:
// * a tiny random Mistral 3 checkpoint with the real key names is written to os.tmpdir() and the
//   encoder is compared with an independent float64 forward pass written here (embedding, RMSNorm,
//   q/k/v, rotate-half RoPE θ = 1e9, GQA, causal + padding mask, o_proj, SwiGLU MLP), with
//   head_dim · heads ≠ hidden;
// * fully masked (left-pad) query rows: zero attention output by default (PyTorch SDPA ≥ 2.5), the
//   mean of all values with fullyMaskedRows "uniform" (eager / ORT);
// * the key layouts model.language_model.* / language_model.model.* / model.* all load;
// * the dev prompt: system message bytes (SHA-256 from the spec), "[IMG]" removal, chat rendering
//   (template and built-in form agree), one BOS, left padding with <pad>, truncation;
// * errors for missing tensors, wrong shapes, layers out of range, unsupported configs.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { HostTensor } from "../src/backend/backend.js";
import { OrtBackend } from "../src/backend/ort.js";
import { WeightSet, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.js";
import {
  buildMistralGraph, DEV_TEXT_LAYERS, detectMistralLayout, MistralEncoder, MistralWeights, parseMistralConfig,
  readMistralConfig,
} from "../src/models/mistral.js";
import {
  DEV_MAX_LENGTH, DEV_SYSTEM_MESSAGE, DEV_SYSTEM_MESSAGE_SHA256, devMessages, MistralPromptTokenizer,
  removeImageTokens, renderDevChatBuiltin,
} from "../src/text/mistral_prompt.js";
import { TextGenerator } from "../src/text/generate.js";

const backend = new OrtBackend();
const TOL = 1e-4;

// -- a tiny random checkpoint --------------------------------------------------

interface Tiny {
  text: Record<string, any>; // text_config
  N: number; V: number; D: number; H: number; KV: number; Dh: number; I: number;
}

const TINY: Tiny = {
  N: 4, V: 300, D: 16, H: 4, KV: 2, Dh: 8, I: 24, // 4·8 = 32 ≠ 16
  text: {},
};
TINY.text = {
  model_type: "mistral", vocab_size: TINY.V, hidden_size: TINY.D, intermediate_size: TINY.I, num_hidden_layers: TINY.N,
  num_attention_heads: TINY.H, num_key_value_heads: TINY.KV, head_dim: TINY.Dh, rms_norm_eps: 1e-5, rope_theta: 1e9,
  sliding_window: null, hidden_act: "silu", max_position_embeddings: 1024, tie_word_embeddings: false,
};
const TINY6: Tiny = { ...TINY, Dh: 6, text: { ...TINY.text, head_dim: 6 } }; // 4·6 = 24 ≠ 16

/** Deterministic uniform numbers (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Weights = Map<string, { shape: number[]; data: Float32Array }>;

/** Random weights under relative names ("embed_tokens.weight", "layers.0.…", "norm.weight"). */
function randomWeights(t: Tiny, seed: number): Weights {
  const r = rng(seed);
  const w: Weights = new Map();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + (r() * 2 - 1) * scale;
    w.set(name, { shape, data });
  };
  add("embed_tokens.weight", [t.V, t.D], 1);
  for (let i = 0; i < t.N; i++) {
    const p = `layers.${i}`;
    add(`${p}.input_layernorm.weight`, [t.D], 0.2, 1);
    add(`${p}.post_attention_layernorm.weight`, [t.D], 0.2, 1);
    add(`${p}.self_attn.q_proj.weight`, [t.H * t.Dh, t.D], 0.5);
    add(`${p}.self_attn.k_proj.weight`, [t.KV * t.Dh, t.D], 0.5);
    add(`${p}.self_attn.v_proj.weight`, [t.KV * t.Dh, t.D], 0.5);
    add(`${p}.self_attn.o_proj.weight`, [t.D, t.H * t.Dh], 0.3);
    add(`${p}.mlp.gate_proj.weight`, [t.I, t.D], 0.4);
    add(`${p}.mlp.up_proj.weight`, [t.I, t.D], 0.4);
    add(`${p}.mlp.down_proj.weight`, [t.D, t.I], 0.3);
  }
  add("norm.weight", [t.D], 0.2, 1);
  return w;
}

type Layout = "current" | "older" | "causal_lm";

const PREFIX: Record<Layout, string> = { current: "model.language_model.", older: "language_model.model.", causal_lm: "model." };

/** Writes weights + config.json into a fresh temp folder with the layout's key names (plus unused vision keys). */
function writeCheckpoint(t: Tiny, w: Weights, layout: Layout, edit?: (tensors: Record<string, TensorToWrite>) => void): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mistral-test-"));
  const tensors: Record<string, TensorToWrite> = {};
  for (const [k, v] of w) tensors[PREFIX[layout] + k] = { dtype: "F32", shape: v.shape, data: v.data };
  const extra = (name: string, shape: number[]) => {
    tensors[name] = { dtype: "F32", shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) };
  };
  if (layout === "current") {
    extra("lm_head.weight", [t.V, t.D]);
    extra("model.vision_tower.patch_conv.weight", [8, 3, 2, 2]);
    extra("model.multi_modal_projector.linear_1.weight", [t.D, 8]);
  } else if (layout === "older") {
    extra("language_model.lm_head.weight", [t.V, t.D]);
    extra("vision_tower.patch_conv.weight", [8, 3, 2, 2]);
    extra("multi_modal_projector.linear_1.weight", [t.D, 8]);
  } else {
    extra("lm_head.weight", [t.V, t.D]);
  }
  edit?.(tensors);
  writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  const config = layout === "causal_lm"
    ? { architectures: ["MistralForCausalLM"], ...t.text }
    : {
        architectures: ["Mistral3ForConditionalGeneration"], model_type: "mistral3", image_token_index: 10,
        text_config: t.text, vision_config: { model_type: "pixtral", hidden_size: 8, head_dim: 4, num_attention_heads: 2 },
      };
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  return dir;
}

function cleanup(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

// -- the float64 reference forward ----------------------------------------------

type Rows = "zero" | "uniform";

/**
 * hidden_states[0..N] (the last one after the final RMSNorm) as float64 arrays (B*L*D), written
 * from the spec's math with no code shared with the encoder.
 */
function referenceForward(t: Tiny, w: Weights, ids: number[], mask: number[], B: number, L: number, rows: Rows, window: number | null = null): Float64Array[] {
  const { D, H, KV, Dh, I, N } = t;
  const eps = t.text.rms_norm_eps as number, theta = t.text.rope_theta as number;
  const get = (n: string) => {
    const v = w.get(n);
    assert.ok(v, n);
    return v.data;
  };
  const matvec = (W: Float32Array, x: Float64Array, out: number, inp: number) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inp; i++) s += W[o * inp + i] * x[i];
      y[o] = s;
    }
    return y;
  };
  const rms = (x: Float64Array, g: Float32Array) => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const r = 1 / Math.sqrt(ss / x.length + eps);
    return Float64Array.from(x, (v, i) => g[i] * v * r);
  };
  const rope = (x: Float64Array, heads: number, pos: number) => {
    const half = Dh / 2;
    const y = new Float64Array(x.length);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = pos * Math.pow(theta, (-2 * i) / Dh);
        const x1 = x[h * Dh + i], x2 = x[h * Dh + half + i];
        y[h * Dh + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        y[h * Dh + half + i] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    }
    return y;
  };
  const silu = (v: number) => v / (1 + Math.exp(-v));

  // x[b][l] vectors
  let x: Float64Array[] = [];
  const E = get("embed_tokens.weight");
  for (let i = 0; i < B * L; i++) x.push(Float64Array.from(E.subarray(ids[i] * D, (ids[i] + 1) * D)));
  const states: Float64Array[] = [];
  const snapshot = (v: Float64Array[]) => {
    const out = new Float64Array(B * L * D);
    v.forEach((row, i) => out.set(row, i * D));
    states.push(out);
  };
  snapshot(x);
  for (let layer = 0; layer < N; layer++) {
    const p = `layers.${layer}`;
    const a = x.map((v) => rms(v, get(`${p}.input_layernorm.weight`)));
    const q = a.map((v, i) => rope(matvec(get(`${p}.self_attn.q_proj.weight`), v, H * Dh, D), H, i % L));
    const k = a.map((v, i) => rope(matvec(get(`${p}.self_attn.k_proj.weight`), v, KV * Dh, D), KV, i % L));
    const v = a.map((u) => matvec(get(`${p}.self_attn.v_proj.weight`), u, KV * Dh, D));
    const next: Float64Array[] = [];
    for (let b = 0; b < B; b++) {
      for (let tq = 0; tq < L; tq++) {
        const o = new Float64Array(H * Dh);
        const allowed: number[] = [];
        for (let tk = 0; tk <= tq; tk++) if (mask[b * L + tk] === 1 && (window === null || tq - tk < window)) allowed.push(tk);
        for (let h = 0; h < H; h++) {
          const kvh = Math.floor(h / (H / KV));
          let keys = allowed, weights: number[];
          if (allowed.length === 0) {
            if (rows === "zero") continue; // PyTorch SDPA ≥ 2.5: zero output
            keys = Array.from({ length: L }, (_, j) => j); // eager: uniform over every key
            weights = keys.map(() => 1 / L);
          } else {
            const s = keys.map((tk) => {
              let dot = 0;
              for (let d = 0; d < Dh; d++) dot += q[b * L + tq][h * Dh + d] * k[b * L + tk][kvh * Dh + d];
              return dot / Math.sqrt(Dh);
            });
            const m = Math.max(...s);
            const e = s.map((z) => Math.exp(z - m));
            const sum = e.reduce((x1, x2) => x1 + x2, 0);
            weights = e.map((z) => z / sum);
          }
          keys.forEach((tk, j) => {
            for (let d = 0; d < Dh; d++) o[h * Dh + d] += weights[j] * v[b * L + tk][kvh * Dh + d];
          });
        }
        const proj = matvec(get(`${p}.self_attn.o_proj.weight`), o, D, H * Dh);
        next.push(Float64Array.from(x[b * L + tq], (val, i) => val + proj[i]));
      }
    }
    x = next.map((u) => {
      const m = rms(u, get(`${p}.post_attention_layernorm.weight`));
      const g = matvec(get(`${p}.mlp.gate_proj.weight`), m, I, D);
      const up = matvec(get(`${p}.mlp.up_proj.weight`), m, I, D);
      const h = Float64Array.from(g, (gv, i) => silu(gv) * up[i]);
      const down = matvec(get(`${p}.mlp.down_proj.weight`), h, D, I);
      return Float64Array.from(u, (val, i) => val + down[i]);
    });
    if (layer + 1 < N) snapshot(x);
  }
  snapshot(x.map((u) => rms(u, get("norm.weight"))));
  return states;
}

function maxDiff(got: HostTensor, want: Float64Array): number {
  assert.equal(got.data.length, want.length);
  let m = 0;
  const g = got.data as Float32Array;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(g[i] - want[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

// Row 0: left padding (3 pads), row 1: no padding, row 2: everything padding.
const B = 3, L = 7;
const MASK = [0, 0, 0, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 1, 1, 1, /**/ 0, 0, 0, 0, 0, 0, 0];
const IDS = [11, 11, 11, 1, 57, 201, 4, /**/ 1, 17, 99, 120, 18, 3, 299, /**/ 11, 11, 11, 11, 11, 11, 11];
const big = (a: number[]) => BigInt64Array.from(a.map(BigInt));

// -- config ------------------------------------------------------------------------

test("Mistral config: Mistral3 text_config or plain Mistral, transformers defaults, refusals", () => {
  const m3 = parseMistralConfig({ model_type: "mistral3", text_config: TINY.text });
  assert.equal(m3.head_dim, 8);
  assert.equal(m3.rope_theta, 1e9);
  assert.equal(m3.rms_norm_eps, 1e-5);
  assert.equal(m3.sliding_window, null);
  const plain = parseMistralConfig({ model_type: "mistral", hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2 });
  assert.equal(plain.head_dim, 16, "head_dim absent → hidden_size / heads");
  assert.equal(plain.sliding_window, 4096, "MistralConfig default");
  assert.equal(parseMistralConfig({ model_type: "mistral", head_dim: null, hidden_size: 64, num_attention_heads: 8 }).head_dim, 8);
  // No text_config at all: Mistral3Config's built-in text config (the FLUX.2 dev values).
  const dev = parseMistralConfig({ model_type: "mistral3" });
  assert.deepEqual([dev.hidden_size, dev.num_hidden_layers, dev.num_attention_heads, dev.num_key_value_heads, dev.head_dim, dev.intermediate_size, dev.vocab_size],
    [5120, 40, 32, 8, 128, 32768, 131072]);
  assert.equal(dev.rope_theta, 1e9);
  assert.deepEqual(parseMistralConfig({ model_type: "mistral3", text_config: null }), dev);
  assert.throws(() => parseMistralConfig({ model_type: "mistral3", text_config: [1] }), /text_config must be an object/);
  assert.equal(dev.rms_norm_eps, 1e-5);
  assert.equal(parseMistralConfig({ model_type: "mistral", rope_parameters: { rope_type: "default", rope_theta: 1e9 } }).rope_theta, 1e9);
  assert.throws(() => parseMistralConfig({ model_type: "qwen3" }), /model_type is "qwen3"/);
  assert.throws(() => parseMistralConfig({ model_type: "mistral3", text_config: { model_type: "llama" } }), /text_config\): model_type is "llama"/);
  assert.throws(() => parseMistralConfig({ model_type: "mistral", rope_scaling: { rope_type: "yarn", factor: 4 } }), /RoPE scaling "yarn"/);
  assert.throws(() => parseMistralConfig({ model_type: "mistral", num_attention_heads: 6, num_key_value_heads: 4 }), /not a multiple/);
  assert.throws(() => parseMistralConfig({ model_type: "mistral", hidden_act: "gelu" }), /hidden_act "gelu"/);
  assert.deepEqual(DEV_TEXT_LAYERS, [10, 20, 30]);
});

// -- numerics against the float64 reference ------------------------------------------------

for (const [label, t, seed] of [["head_dim 8", TINY, 1], ["head_dim 6", TINY6, 2]] as const) {
  test(`Mistral tiny (${label}, 4 heads × ${t.Dh} ≠ hidden ${t.D}): every hidden state matches the float64 reference`, async () => {
    const w = randomWeights(t, seed);
    const dir = writeCheckpoint(t, w, "current");
    const all = Array.from({ length: t.N + 1 }, (_, k) => k);
    const enc = await MistralEncoder.fromFiles(backend, dir, null, { outputLayers: all, finalNorm: true });
    try {
      const out = await enc.hiddenStates(big(IDS), big(MASK), B, L, all, { finalNorm: true });
      const ref = referenceForward(t, w, IDS, MASK, B, L, "zero");
      const diffs = out.hiddenStates.map((h, k) => {
        assert.deepEqual(h.shape, [B, L, t.D]);
        const d = maxDiff(h, ref[k]);
        assert.ok(d <= TOL, `hidden_states[${k}]: max |diff| ${d} > ${TOL}`);
        return d;
      });
      assert.deepEqual(out.lastHiddenState!.data, out.hiddenStates[t.N].data);

      // prompt embeddings: per token, the chosen layers side by side, in the order asked.
      const layers = [2, 1, 3];
      const embeds = await enc.promptEmbeds(big(IDS), big(MASK), B, L, layers);
      assert.deepEqual(embeds.shape, [B, L, 3 * t.D]);
      const e = embeds.data as Float32Array;
      for (let tok = 0; tok < B * L; tok++) {
        layers.forEach((k, j) => {
          const src = out.hiddenStates[k].data as Float32Array;
          for (let d = 0; d < t.D; d++) assert.equal(e[(tok * 3 + j) * t.D + d], src[tok * t.D + d]);
        });
      }
      console.log(`mistral tiny ${label}: max |diff| per hidden state ${diffs.map((d) => d.toExponential(2)).join(", ")}`);
    } finally {
      await enc.release();
      cleanup(dir);
    }
  });
}

test("Mistral fully masked rows: zero attention by default (pad rows = x + MLP(RMSNorm(x))), mean of values with \"uniform\"", async () => {
  const t = TINY;
  const w = randomWeights(t, 3);
  const dir = writeCheckpoint(t, w, "current");
  const cfg = readMistralConfig(path.join(dir, "config.json"));
  const weights = new MistralWeights(WeightSet.open(dir));
  const zero = await MistralEncoder.load(backend, cfg, weights, { outputLayers: [1, 2] });
  const uniform = await MistralEncoder.load(backend, cfg, weights, { outputLayers: [1, 2], fullyMaskedRows: "uniform" });
  try {
    assert.equal(zero.fullyMaskedRows, "zero");
    const z = await zero.hiddenStates(big(IDS), big(MASK), B, L, [1, 2]);
    const u = await uniform.hiddenStates(big(IDS), big(MASK), B, L, [1, 2]);
    const refZ = referenceForward(t, w, IDS, MASK, B, L, "zero");
    const refU = referenceForward(t, w, IDS, MASK, B, L, "uniform");
    for (const [j, k] of [[0, 1], [1, 2]]) {
      assert.ok(maxDiff(z.hiddenStates[j], refZ[k]) <= TOL, `zero: hidden_states[${k}]`);
      assert.ok(maxDiff(u.hiddenStates[j], refU[k]) <= TOL, `uniform: hidden_states[${k}]`);
    }
    // Layer 1 of a pad row by hand: attention adds nothing, only the MLP does.
    const D = t.D, p = "layers.0";
    const x0 = w.get("embed_tokens.weight")!.data.subarray(11 * D, 12 * D);
    const g = w.get(`${p}.post_attention_layernorm.weight`)!.data;
    const ms = x0.reduce((s, v) => s + v * v, 0) / D;
    const m = Array.from(x0, (v, i) => g[i] * v / Math.sqrt(ms + 1e-5));
    const lin = (name: string, x: number[], out: number) => {
      const W = w.get(name)!.data;
      return Array.from({ length: out }, (_, o) => x.reduce((s, v, i) => s + W[o * x.length + i] * v, 0));
    };
    const gate = lin(`${p}.mlp.gate_proj.weight`, m, t.I), up = lin(`${p}.mlp.up_proj.weight`, m, t.I);
    const down = lin(`${p}.mlp.down_proj.weight`, gate.map((v, i) => (v / (1 + Math.exp(-v))) * up[i]), D);
    const h1 = z.hiddenStates[0].data as Float32Array;
    for (const tok of [0, 1, 2, 14, 20]) { // pad rows of rows 0 and 2
      for (let d = 0; d < D; d++) assert.ok(Math.abs(h1[tok * D + d] - (x0[d] + down[d])) <= TOL, `pad row ${tok}, dim ${d}`);
    }
    // Rows with a visible key are identical in both modes at layer 1; the pad rows differ.
    const hu = u.hiddenStates[0].data as Float32Array;
    let padDiff = 0;
    for (let tok = 0; tok < B * L; tok++) {
      for (let d = 0; d < D; d++) {
        const diff = Math.abs(h1[tok * D + d] - hu[tok * D + d]);
        if (MASK.slice(Math.floor(tok / L) * L, tok + 1).includes(1)) assert.ok(diff <= 1e-6, `row ${tok} should not depend on the mode`);
        else padDiff = Math.max(padDiff, diff);
      }
    }
    assert.ok(padDiff > 1e-3, "uniform and zero modes must differ on pad rows");
  } finally {
    await zero.release();
    await uniform.release();
    weights.set.close();
    cleanup(dir);
  }
});

// -- key layouts ------------------------------------------------------------------------

test("Mistral key layouts: model.language_model.*, language_model.model.* and model.* load and agree", async () => {
  const t = TINY;
  const w = randomWeights(t, 4);
  const results: Float32Array[] = [];
  for (const layout of ["current", "older", "causal_lm"] as Layout[]) {
    const dir = writeCheckpoint(t, w, layout);
    try {
      const set = WeightSet.open(dir);
      assert.equal(detectMistralLayout(set).prefix, PREFIX[layout]);
      set.close();
      const enc = await MistralEncoder.fromFiles(backend, path.join(dir, "model.safetensors"), null, { outputLayers: [2, 4], logits: true });
      try {
        const out = await enc.hiddenStates(big(IDS), big(MASK), B, L, [2, 4], { logits: true });
        const logits = out.logits!.data as Float32Array;
        assert.ok(logits.every((v) => Number.isFinite(v)));
        const embeds = await enc.promptEmbeds(big(IDS), big(MASK), B, L, [2, 4]);
        results.push(embeds.data as Float32Array);
      } finally {
        await enc.release();
      }
    } finally {
      cleanup(dir);
    }
  }
  assert.deepEqual(results[1], results[0]);
  assert.deepEqual(results[2], results[0]);
  const ref = referenceForward(t, w, IDS, MASK, B, L, "zero");
  const e = results[0];
  for (let tok = 0; tok < B * L; tok++) {
    for (let d = 0; d < t.D; d++) assert.ok(Math.abs(e[(tok * 2 + 1) * t.D + d] - ref[4][tok * t.D + d]) <= TOL);
  }
});

test("Mistral graph: built only as deep as needed, vision tower / projector / lm_head never read", () => {
  const t = TINY;
  const dir = writeCheckpoint(t, randomWeights(t, 5), "current");
  try {
    const weights = new MistralWeights(WeightSet.open(dir));
    const g = buildMistralGraph(readMistralConfig(path.join(dir, "config.json")), weights, { outputLayers: [2], rowScale: true });
    const names = g.initializers.map((i) => i.name);
    assert.ok(names.includes("model.language_model.layers.1.mlp.down_proj.weight"));
    assert.ok(!names.some((n) => n.startsWith("model.language_model.layers.2.") || n.includes("norm.weight") && n.startsWith("model.language_model.norm")));
    assert.ok(!names.some((n) => n.includes("vision_tower") || n.includes("multi_modal_projector") || n === "lm_head.weight"));
    assert.ok(!names.some((n) => n.includes("q_norm") || n.includes("k_norm")), "no QK-norm in Mistral");
    assert.ok(g.inputs.some((i) => i.name === "attention_row_scale"));
    weights.set.close();
  } finally {
    cleanup(dir);
  }
});

// -- errors ------------------------------------------------------------------------------

test("Mistral errors: missing tensors, wrong shapes, layers out of range, bad inputs", async () => {
  const t = TINY;
  const w = randomWeights(t, 6);
  const missing = writeCheckpoint(t, w, "current", (ts) => { delete ts["model.language_model.layers.1.mlp.up_proj.weight"]; });
  const none = writeCheckpoint(t, w, "current", (ts) => {
    for (const k of Object.keys(ts)) if (k.startsWith("model.language_model.")) delete ts[k];
  });
  const ok = writeCheckpoint(t, w, "older");
  try {
    await assert.rejects(MistralEncoder.fromFiles(backend, missing, null, { outputLayers: [3] }),
      /missing tensor "model\.language_model\.layers\.1\.mlp\.up_proj\.weight".*Mistral text encoder.*layout "model\.language_model\.\*"/);
    // Layer 1 is not needed for hidden state 1.
    const cfg = readMistralConfig(path.join(missing, "config.json"));
    const weights = new MistralWeights(WeightSet.open(missing));
    assert.ok(buildMistralGraph(cfg, weights, { outputLayers: [1] }));
    weights.set.close();
    await assert.rejects(MistralEncoder.fromFiles(backend, none), /no Mistral language-model weights found/);

    const okCfg = readMistralConfig(path.join(ok, "config.json"));
    const okWeights = new MistralWeights(WeightSet.open(ok));
    assert.throws(() => buildMistralGraph({ ...okCfg, head_dim: 4 }, okWeights, { outputLayers: [1] }),
      /"language_model\.model\.layers\.0\.self_attn\.q_proj\.weight" has shape \[32,16\] but the config needs \[16,16\].*head_dim/);
    assert.throws(() => buildMistralGraph({ ...okCfg, intermediate_size: 25 }, okWeights, { outputLayers: [1] }),
      /"language_model\.model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[24,16\] but the config needs \[25,16\]/);
    assert.throws(() => buildMistralGraph({ ...okCfg, vocab_size: 301 }, okWeights, { outputLayers: [1] }),
      /"language_model\.model\.embed_tokens\.weight" has shape \[300,16\]/);
    assert.throws(() => buildMistralGraph(okCfg, okWeights, { outputLayers: [5] }), /layer 5 is out of range: this Mistral has 4 decoder layers/);
    // FLUX.2 dev's default layers (10, 20, 30) do not exist in a 4-layer model.
    await assert.rejects(MistralEncoder.fromFiles(backend, ok), /layer 10 is out of range/);
    await assert.rejects(MistralEncoder.load(backend, okCfg, okWeights, { outputLayers: [1], fullyMaskedRows: "nan" as any }), /fullyMaskedRows/);
    const enc = await MistralEncoder.load(backend, okCfg, okWeights, { outputLayers: [1] });
    try {
      await assert.rejects(enc.promptEmbeds(big([1, 300]), big([1, 1]), 1, 2, [1]), /token id 300 .* outside the vocabulary/);
      await assert.rejects(enc.promptEmbeds(big([1, 2]), big([1, 2]), 1, 2, [1]), /attention_mask must be 0 or 1/);
      await assert.rejects(enc.promptEmbeds(big([1, 2, 3]), big([1, 1, 1, 1]), 1, 4, [1]), /input_ids has 3 values/);
    } finally {
      await enc.release();
      okWeights.set.close();
    }
  } finally {
    cleanup(missing);
    cleanup(none);
    cleanup(ok);
  }
});

// -- the prompt ------------------------------------------------------------------------

test("dev system message: byte-exact (168 chars, one newline after \"object\", SHA-256 from the spec)", () => {
  const bytes = Buffer.from(DEV_SYSTEM_MESSAGE, "utf8");
  assert.equal(crypto.createHash("sha256").update(bytes).digest("hex"), DEV_SYSTEM_MESSAGE_SHA256);
  assert.equal(DEV_SYSTEM_MESSAGE_SHA256, "d43d93082f24034d9c7f4e5b65cdeceb1e082c64c9cf95dfae5be89c31e1320d");
  assert.equal(DEV_SYSTEM_MESSAGE.length, 168);
  assert.equal(bytes.length, 168);
  assert.equal(DEV_SYSTEM_MESSAGE.split("\n").length, 2);
  assert.ok(DEV_SYSTEM_MESSAGE.includes("object\nattribution"));
  assert.equal(DEV_MAX_LENGTH, 512);
});

test("dev prompt: every [IMG] is removed before the chat is built", () => {
  assert.equal(removeImageTokens("[IMG]a [IMG]cat[IMG][IMG] on [IMG"), "a cat on [IMG");
  const msgs = devMessages("x[IMG]y");
  assert.deepEqual(msgs, [
    { role: "system", content: [{ type: "text", text: DEV_SYSTEM_MESSAGE }] },
    { role: "user", content: [{ type: "text", text: "xy" }] },
  ]);
  assert.equal(renderDevChatBuiltin("a[IMG]b"), `<s>[SYSTEM_PROMPT]${DEV_SYSTEM_MESSAGE}[/SYSTEM_PROMPT][INST]ab[/INST]`);
});

// A tiny Tekken-shaped tokenizer folder: special tokens at Tekken's ids (<s>=1, [INST]=3, [IMG]=10,
// <pad>=11, [SYSTEM_PROMPT]=17, …), then one byte-level token per byte (ids 20..275), no merges.
const SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
  "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]",
  "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"];

function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => { out[b] = String.fromCharCode(cs[i]); });
  return out;
}

// Shaped like Mistral Small 3.1's template (system turn from the first message, list-of-blocks content).
const TEMPLATE = `{%- set today = strftime_now("%Y-%m-%d") %}
{%- set default_system_message = "You are a tiny test model. Today is " + today + "." %}
{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- if messages[0]['content'] is string %}
        {%- set system_message = messages[0]['content'] %}
    {%- else %}
        {%- set system_message = messages[0]['content'][0]['text'] %}
    {%- endif %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = default_system_message %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if message['content'] is string %}
            {{- '[INST]' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST]' }}
            {%- for block in message['content'] %}
                {%- if block['type'] == 'text' %}
                    {{- block['text'] }}
                {%- elif block['type'] in ['image', 'image_url'] %}
                    {{- '[IMG]' }}
                {%- else %}
                    {{- raise_exception('Only text and image blocks are supported') }}
                {%- endif %}
            {%- endfor %}
            {{- '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- message['content'][0]['text'] + eos_token }}
    {%- endif %}
{%- endfor %}`;

function tokenizerFolder(opts: { config?: Record<string, unknown>; template?: "jinja" | "json" | "config" | "none"; templateText?: string } = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mistral-tok-"));
  const vocab: Record<string, number> = {};
  SPECIALS.forEach((s, i) => { vocab[s] = i; });
  byteChars().forEach((c, i) => { vocab[c] = SPECIALS.length + i; });
  const json = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: SPECIALS.map((s, i) => ({ id: i, content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(json));
  const text = opts.templateText ?? TEMPLATE;
  const config: Record<string, unknown> = { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", pad_token: "<pad>", tokenizer_class: "LlamaTokenizerFast", ...opts.config };
  const mode = opts.template ?? "jinja";
  if (mode === "config") config.chat_template = text;
  if (mode === "jinja") fs.writeFileSync(path.join(dir, "chat_template.jinja"), text);
  if (mode === "json") fs.writeFileSync(path.join(dir, "chat_template.json"), JSON.stringify({ chat_template: text }));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return dir;
}

const bytesOf = (s: string) => [...Buffer.from(s, "utf8")].map((b) => SPECIALS.length + b);

test("dev prompt: chat template and built-in form render the same bytes; one BOS; [IMG] never reaches the ids", async () => {
  const dirs = [tokenizerFolder({ template: "jinja" }), tokenizerFolder({ template: "json" }), tokenizerFolder({ template: "config" }), tokenizerFolder({ template: "none" })];
  try {
    const expected = `<s>[SYSTEM_PROMPT]${DEV_SYSTEM_MESSAGE}[/SYSTEM_PROMPT][INST]a red [cube][/INST]`;
    const wantIds = [1, 17, ...bytesOf(DEV_SYSTEM_MESSAGE), 18, 3, ...bytesOf("a red [cube]"), 4];
    const sources: string[] = [];
    for (const dir of dirs) {
      const tok = await MistralPromptTokenizer.load(dir);
      sources.push(tok.templateSource);
      assert.equal(tok.renderChat("a red [IMG][cube]"), expected);
      assert.deepEqual(tok.tokenize(tok.renderChat("a red [IMG][cube]")), wantIds);
      assert.equal(tok.tokenCount("a red [cube]"), wantIds.length);
      const enc = tok.encode(["a red [IMG][cube]"], wantIds.length);
      assert.deepEqual([...enc.inputIds].map(Number), wantIds);
      assert.ok(![...enc.inputIds].includes(10n), "no [IMG] id");
      assert.equal([...enc.inputIds].filter((v) => v === 1n).length, 1, "exactly one BOS");
    }
    assert.deepEqual(sources, ["chat_template.jinja", "chat_template.json", "tokenizer_config.json", "builtin"]);
    // A template that emits no BOS: the tokenizer's post-processor adds it (add_special_tokens), still one.
    const noBos = tokenizerFolder({ templateText: "[SYSTEM_PROMPT]{{ messages[0]['content'][0]['text'] }}[/SYSTEM_PROMPT][INST]{{ messages[1]['content'][0]['text'] }}[/INST]" });
    try {
      const tok = await MistralPromptTokenizer.load(noBos);
      assert.deepEqual(tok.tokenize(tok.renderChat("a red [cube]")), wantIds);
    } finally {
      cleanup(noBos);
    }
    // The built-in form can be forced, and the system message replaced.
    const forced = await MistralPromptTokenizer.load(dirs[0], { builtinTemplate: true, systemMessage: "S" });
    assert.equal(forced.renderChat("p"), "<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]p[/INST]");
  } finally {
    dirs.forEach(cleanup);
  }
});

test("dev prompt: LEFT padding with <pad> (id 11) by default, padding_side / class / option override, truncation keeps the start", async () => {
  const dir = tokenizerFolder();
  const right = tokenizerFolder({ config: { padding_side: "right" } });
  const fastBase = tokenizerFolder({ config: { tokenizer_class: "PreTrainedTokenizerFast" } });
  try {
    const tok = await MistralPromptTokenizer.load(dir);
    assert.equal(tok.padId, 11);
    assert.equal(tok.padToken, "<pad>");
    assert.equal(tok.paddingSide, "left");
    assert.equal(tok.truncationSide, "right");
    const n = tok.tokenCount("cat");
    const enc = tok.encode(["cat", "a dog"], 300);
    assert.equal(enc.batch, 2);
    assert.equal(enc.length, 300);
    const row0 = [...enc.inputIds.subarray(0, 300)].map(Number);
    const mask0 = [...enc.attentionMask.subarray(0, 300)].map(Number);
    assert.deepEqual(row0.slice(0, 300 - n), new Array(300 - n).fill(11), "pad rows first");
    assert.deepEqual(mask0, [...new Array(300 - n).fill(0), ...new Array(n).fill(1)]);
    assert.equal(row0[300 - n], 1, "the BOS follows the padding");
    assert.equal(row0[299], 4, "[/INST] last");
    const m = tok.tokenCount("a dog");
    assert.deepEqual([...enc.attentionMask.subarray(300, 600)].map(Number), [...new Array(300 - m).fill(0), ...new Array(m).fill(1)]);

    assert.equal((await MistralPromptTokenizer.load(right)).paddingSide, "right");
    assert.equal((await MistralPromptTokenizer.load(fastBase)).paddingSide, "right");
    assert.equal((await MistralPromptTokenizer.load(right, { paddingSide: "left" })).paddingSide, "left");
    const r = (await MistralPromptTokenizer.load(right)).encode(["cat"], 300);
    assert.equal(Number(r.inputIds[0]), 1);
    assert.equal(Number(r.inputIds[299]), 11);

    // Truncation (default right side): the first L ids, mask all ones, the closing [/INST] lost.
    const long = tok.encode(["x".repeat(400)], 256);
    assert.ok(tok.truncated("x".repeat(400), 256));
    assert.ok(!tok.truncated("cat", 256));
    assert.deepEqual([...long.attentionMask].map(Number), new Array(256).fill(1));
    assert.deepEqual([...long.inputIds.subarray(0, 3)].map(Number), [1, 17, bytesOf("Y")[0]]);
    assert.notEqual(Number(long.inputIds[255]), 4);
    assert.throws(() => tok.encode(["a"], 0), /maxLength must be a positive integer/);
  } finally {
    cleanup(dir);
    cleanup(right);
    cleanup(fastBase);
  }
});

test("dev prompt → encoder: left-padded token ids through the tiny Mistral match the reference (pad rows zero-attention)", async () => {
  const tokDir = tokenizerFolder();
  const t = TINY;
  const w = randomWeights(t, 7);
  const dir = writeCheckpoint(t, w, "current");
  try {
    const tok = await MistralPromptTokenizer.load(tokDir, { systemMessage: "S" });
    const Lp = 24;
    const enc = tok.encode(["a cat", "[IMG]dog"], Lp);
    const ids = [...enc.inputIds].map(Number), mask = [...enc.attentionMask].map(Number);
    assert.equal(mask[0], 0, "left padding");
    const model = await MistralEncoder.fromFiles(backend, dir, path.join(dir, "config.json"), { outputLayers: [1, 2, 3] });
    try {
      const embeds = await model.promptEmbeds(enc.inputIds, enc.attentionMask, 2, Lp, [1, 2, 3]);
      assert.deepEqual(embeds.shape, [2, Lp, 3 * t.D]);
      const ref = referenceForward(t, w, ids, mask, 2, Lp, "zero");
      const e = embeds.data as Float32Array;
      let worst = 0;
      for (let tokIdx = 0; tokIdx < 2 * Lp; tokIdx++) {
        for (let j = 0; j < 3; j++) {
          for (let d = 0; d < t.D; d++) worst = Math.max(worst, Math.abs(e[(tokIdx * 3 + j) * t.D + d] - ref[j + 1][tokIdx * t.D + d]));
        }
      }
      assert.ok(worst <= TOL, `max |diff| ${worst}`);
    } finally {
      await model.release();
    }
  } finally {
    cleanup(tokDir);
    cleanup(dir);
  }
});

test("dev prompt: tokenizer folder errors are clear", async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), "mistral-tok-empty-"));
  const badPad = tokenizerFolder({ config: { pad_token: "<nope>" } });
  const badSide = tokenizerFolder({ config: { padding_side: "middle" } });
  try {
    await assert.rejects(MistralPromptTokenizer.load(empty), /has no tokenizer\.json/);
    await assert.rejects(MistralPromptTokenizer.load(badPad), /pad token "<nope>" is not in the vocabulary/);
    await assert.rejects(MistralPromptTokenizer.load(badSide), /padding_side must be "left" or "right"/);
  } finally {
    cleanup(empty);
    cleanup(badPad);
    cleanup(badSide);
  }
});

// -- text generation (prompt upsampling on dev) against the float64 reference ------------------

/** A random untied lm_head (V, D): the checkpoint writer's default one is constant, which would make every logit equal. */
function randomLmHead(t: Tiny, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: t.V * t.D }, () => (r() * 2 - 1) * 0.5);
}

/** Logits (L, V) in float64: the reference's final (normed) hidden state times lm_head. */
function referenceLogits(t: Tiny, w: Weights, head: Float32Array, ids: number[], window: number | null = null): Float64Array {
  const L = ids.length;
  const final = referenceForward(t, w, ids, ids.map(() => 1), 1, L, "zero", window)[t.N];
  const out = new Float64Array(L * t.V);
  for (let q = 0; q < L; q++) {
    for (let v = 0; v < t.V; v++) {
      let s = 0;
      for (let d = 0; d < t.D; d++) s += final[q * t.D + d] * head[v * t.D + d];
      out[q * t.V + v] = s;
    }
  }
  return out;
}

const GEN_IDS = [1, 57, 201, 4, 17, 99, 120, 18, 3];
const LOGIT_TOL = 2e-4;

function rowDiff(got: Float32Array, want: Float64Array, row: number, V: number): number {
  let m = 0;
  for (let v = 0; v < V; v++) {
    const d = Math.abs(got[v] - want[row * V + v]);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

for (const [label, layout, window] of [["model.language_model.*", "current", null], ["language_model.model.*", "older", null], ["sliding window 3", "current", 3]] as const) {
  test(`Mistral generation (${label}): uncached and KV-cached logits of the untied lm_head match the float64 reference at every position`, async () => {
    const t: Tiny = window === null ? TINY : { ...TINY, text: { ...TINY.text, sliding_window: window } };
    const w = randomWeights(t, 21);
    const head = randomLmHead(t, 22);
    const headKey = layout === "older" ? "language_model.lm_head.weight" : "lm_head.weight";
    const dir = writeCheckpoint(t, w, layout, (tensors) => { tensors[headKey] = { dtype: "F32", shape: [t.V, t.D], data: head }; });
    const config = readMistralConfig(path.join(dir, "config.json"));
    assert.equal(config.tie_word_embeddings, false);
    assert.equal(config.sliding_window, window);
    const want = referenceLogits(t, w, head, GEN_IDS, window);
    const L = GEN_IDS.length;
    // The verified forward pass (uncached graph, hidden states checked above) with logits on.
    const enc = await MistralEncoder.fromFiles(backend, dir, null, { outputLayers: [], logits: true });
    const gen = await TextGenerator.create(config, new MistralWeights(WeightSet.open(dir)), backend);
    try {
      const full = (await enc.hiddenStates(big(GEN_IDS), big(GEN_IDS.map(() => 1)), 1, L, [], { logits: true })).logits!.data as Float32Array;
      for (let q = 0; q < L; q++) {
        const d = rowDiff(full.subarray(q * t.V, (q + 1) * t.V), want, q, t.V);
        assert.ok(d <= LOGIT_TOL, `uncached position ${q}: max |diff| ${d}`);
      }
      // Prefill four tokens, then one at a time through the cache.
      const cache = gen.newCache();
      const diffs = [rowDiff(await gen.forward(GEN_IDS.slice(0, 4), cache), want, 3, t.V)];
      for (let q = 4; q < L; q++) {
        diffs.push(rowDiff(await gen.forward([GEN_IDS[q]], cache), want, q, t.V));
        assert.equal(cache.length, q + 1);
      }
      diffs.forEach((d, i) => assert.ok(d <= LOGIT_TOL, `cached position ${i + 3}: max |diff| ${d}`));
      console.log(`mistral generate ${label}: cached logits max |diff| ${Math.max(...diffs).toExponential(2)}`);

      // Greedy decoding is the argmax chain of the float64 reference.
      const out = await gen.generate(GEN_IDS.slice(0, 5), { maxNewTokens: 6 });
      assert.equal(out.tokens.length, 6);
      const chain = referenceLogits(t, w, head, [...GEN_IDS.slice(0, 5), ...out.tokens.slice(0, -1)], window);
      out.tokens.forEach((tok, i) => {
        const row = Array.from(chain.subarray((4 + i) * t.V, (5 + i) * t.V));
        assert.equal(tok, row.indexOf(Math.max(...row)), `greedy token ${i}`);
      });
    } finally {
      await gen.release();
      await enc.release();
      cleanup(dir);
    }
  });
}
