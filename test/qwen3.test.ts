// Tests of src/models/qwen3.ts (the FLUX.2 klein Qwen3 text encoder) against the golden fixtures.
//
// * text_encoder/qwen3_tiny__prompt_embeds: every hidden state (embeddings, each decoder layer,
//   final norm last), the tied-lm_head logits and the stacked prompt embeddings.
// * The text encoders of the two checkpoint folders (bfloat16 single file / sharded float32) fed
//   the token ids and masks the t2i cases recorded at the encoder's input.
// * Clear errors for weights that do not fit the config, missing tensors, layers out of range.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { HostTensor } from "../src/backend/backend.js";
import { OrtBackend } from "../src/backend/ort.js";
import { readAll, writeSafetensors, WeightSet, type TensorToWrite } from "../src/io/safetensors.js";
import { causalPaddingBias, MASKED, qwen3RopeTables } from "../src/models/decoder.js";
import {
  buildQwen3Graph, parseQwen3Config, readQwen3Config,
  Qwen3Encoder, Qwen3Weights, QWEN3_DEFAULTS,
} from "../src/models/qwen3.js";
import { goldenPath, loadParams, loadTensors, maxAbsDiff, type Loaded } from "./golden.js";

const backend = new OrtBackend();
const TINY = "text_encoder/qwen3_tiny__prompt_embeds";
const TINY_CONFIG = goldenPath("text_encoder/qwen3_tiny.config.json");
const TINY_WEIGHTS = goldenPath("text_encoder/qwen3_tiny.safetensors");

interface Tolerances { [tensor: string]: number }

function tolerances(name: string): Tolerances {
  const cases = JSON.parse(fs.readFileSync(goldenPath("cases.json"), "utf8")).cases as any[];
  const c = cases.find((x) => x.name === name);
  assert.ok(c, `case ${name} not in cases.json`);
  return Object.fromEntries(Object.entries(c.tolerance.tensors).map(([k, v]) => [k, (v as { abs: number }).abs]));
}

function tensor(tensors: Map<string, Loaded>, name: string): Loaded {
  const t = tensors.get(name);
  assert.ok(t, `tensor ${name} is missing`);
  return t;
}

function close(name: string, got: HostTensor, want: Loaded, tol: number): number {
  assert.deepEqual(got.shape, want.shape, `${name}: shape`);
  assert.ok(got.data instanceof Float32Array, `${name}: float32 output`);
  const d = maxAbsDiff(got.data, want.data as Float32Array);
  assert.ok(d <= tol, `${name}: max |diff| ${d} > ${tol}`);
  return d;
}

test("Qwen3 config: head_dim defaults to Qwen3Config's 128, unsupported features are refused", () => {
  const tiny = readQwen3Config(TINY_CONFIG);
  assert.equal(tiny.head_dim, 8);
  assert.equal(tiny.num_key_value_heads, 2);
  assert.equal(tiny.tie_word_embeddings, true);
  const noHeadDim = parseQwen3Config({ hidden_size: 2560, num_attention_heads: 32, num_key_value_heads: 8 });
  assert.equal(noHeadDim.head_dim, 128);
  assert.equal(parseQwen3Config({ num_attention_heads: 8, num_key_value_heads: null }).num_key_value_heads, 8);
  assert.equal(parseQwen3Config({ rope_parameters: { rope_type: "default", rope_theta: 5e5 } }).rope_theta, 5e5);
  assert.throws(() => parseQwen3Config({ model_type: "llama" }), /model_type is "llama"/);
  assert.throws(() => parseQwen3Config({ rope_scaling: { rope_type: "yarn", factor: 4 } }), /RoPE scaling "yarn"/);
  assert.throws(() => parseQwen3Config({ num_attention_heads: 6, num_key_value_heads: 4 }), /not a multiple/);
  assert.equal(QWEN3_DEFAULTS.head_dim, 128);
});

test("Qwen3 host tables: rotate-half cos/sin and the causal + key-padding bias", () => {
  const { cos, sin, half } = qwen3RopeTables(3, 8, 1e6);
  assert.equal(half, 4);
  for (let k = 0; k < 4; k++) { assert.equal(cos[k], 1); assert.equal(sin[k], 0); }
  assert.equal(cos[half], Math.fround(Math.cos(1))); // position 1, k = 0: inv_freq 1
  const inv3 = Math.fround(1 / Math.fround(1e6 ** 0.75));
  assert.equal(sin[2 * half + 3], Math.fround(Math.sin(Math.fround(2 * inv3))));
  const bias = causalPaddingBias([1n, 1n, 0n], 1, 3);
  assert.deepEqual([...bias], [0, MASKED, MASKED, 0, 0, MASKED, 0, 0, MASKED].map(Math.fround));
});

test("Qwen3 tiny: every hidden state, logits and prompt_embeds match transformers", async () => {
  const params = loadParams(TINY);
  const inputs = loadTensors(`${TINY}.inputs.safetensors`);
  const expected = loadTensors(`${TINY}.expected.safetensors`);
  const tol = tolerances(TINY);
  const ids = tensor(inputs, "input_ids");
  const mask = tensor(inputs, "attention_mask");
  const [B, L] = ids.shape;
  const N = readQwen3Config(TINY_CONFIG).num_hidden_layers;
  const all = Array.from({ length: N + 1 }, (_, k) => k);

  const enc = await Qwen3Encoder.fromFiles(backend, TINY_WEIGHTS, TINY_CONFIG, { outputLayers: all, finalNorm: true, logits: true });
  try {
    const out = await enc.hiddenStates(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, all, { finalNorm: true, logits: true });
    // transformers' last hidden state is the final-norm output.
    assert.deepEqual(out.lastHiddenState!.data, out.hiddenStates[N].data);
    const want = tensor(expected, "hidden_states");
    const per = want.shape.slice(1).reduce((a, b) => a * b, 1);
    const errs: string[] = [];
    out.hiddenStates.forEach((h, k) => {
      const slice = { ...want, shape: want.shape.slice(1), data: (want.data as Float32Array).subarray(k * per, (k + 1) * per) };
      errs.push(`hs[${k}] ${close(`hidden_states[${k}]`, h, slice, tol.hidden_states).toExponential(2)}`);
    });
    errs.push(`logits ${close("logits", out.logits!, tensor(expected, "logits"), tol.logits).toExponential(2)}`);

    const layers = params.hidden_states_layers as number[];
    const embeds = await enc.promptEmbeds(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, layers);
    errs.push(`prompt_embeds ${close("prompt_embeds", embeds, tensor(expected, "prompt_embeds"), tol.prompt_embeds).toExponential(2)}`);
    console.log(`${TINY}: ${errs.join(", ")}`);
  } finally {
    await enc.release();
  }
});

test("Qwen3 tiny: a graph built only to layer 2 gives the same hidden state", async () => {
  const inputs = loadTensors(`${TINY}.inputs.safetensors`);
  const expected = loadTensors(`${TINY}.expected.safetensors`);
  const ids = tensor(inputs, "input_ids"), mask = tensor(inputs, "attention_mask");
  const [B, L] = ids.shape;
  const config = readQwen3Config(TINY_CONFIG);
  const weights = new Qwen3Weights(WeightSet.open(TINY_WEIGHTS));
  const g = buildQwen3Graph(config, weights, { outputLayers: [2] });
  assert.ok(!g.initializers.some((i) => i.name.startsWith("model.layers.2.") || i.name === "model.norm.weight"), "layers past 2 / final norm not in the graph");
  const enc = await Qwen3Encoder.load(backend, config, weights, { outputLayers: [2] });
  try {
    const { hiddenStates: [h2] } = await enc.hiddenStates(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, [2]);
    const want = tensor(expected, "hidden_states");
    const per = B * L * config.hidden_size;
    close("hidden_states[2]", h2, { ...want, shape: [B, L, config.hidden_size], data: (want.data as Float32Array).subarray(2 * per, 3 * per) }, 1e-4);
  } finally {
    await enc.release();
  }
});

const CHECKPOINTS: { name: string; folder: string; sides: string[] }[] = [
  { name: "checkpoints/klein_distilled__t2i", folder: "checkpoints/klein_distilled/text_encoder", sides: ["prompt"] },
  { name: "checkpoints/klein_base__t2i", folder: "checkpoints/klein_base/text_encoder", sides: ["prompt", "negative"] },
];

for (const cp of CHECKPOINTS) {
  test(`Qwen3 checkpoint text encoder: ${cp.folder} reproduces ${cp.name} prompt embeddings`, async () => {
    const params = loadParams(cp.name);
    const layers = params.call.text_encoder_out_layers as number[];
    const expected = loadTensors(`${cp.name}.expected.safetensors`);
    const tol = tolerances(cp.name);
    const enc = await Qwen3Encoder.fromFiles(backend, goldenPath(cp.folder), null, { outputLayers: layers });
    try {
      const errs: string[] = [];
      for (const side of cp.sides) {
        const ids = tensor(expected, `${side}_input_ids`);
        const mask = tensor(expected, `${side}_attention_mask`);
        const [B, L] = ids.shape;
        const embeds = await enc.promptEmbeds(ids.data as BigInt64Array, mask.data as BigInt64Array, B, L, layers);
        const name = `${side}_prompt_embeds`.replace(/^prompt_prompt/, "prompt");
        errs.push(`${name} ${close(name, embeds, tensor(expected, name), tol[name]).toExponential(2)}`);
      }
      console.log(`${cp.name}: ${errs.join(", ")}`);
    } finally {
      await enc.release();
    }
  });
}

// -- errors ------------------------------------------------------------------

function tmpCopy(edit: (t: Record<string, TensorToWrite>) => void): string {
  const tensors: Record<string, TensorToWrite> = {};
  for (const [k, v] of readAll(TINY_WEIGHTS)) tensors[k] = v;
  edit(tensors);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qwen3-test-"));
  const file = path.join(dir, "model.safetensors");
  writeSafetensors(file, tensors);
  return file;
}

test("Qwen3 errors: a weight whose shape does not fit the config is named", () => {
  const weights = new Qwen3Weights(WeightSet.open(TINY_WEIGHTS));
  const config = { ...readQwen3Config(TINY_CONFIG), intermediate_size: 41 };
  assert.throws(() => buildQwen3Graph(config, weights, { outputLayers: [1] }),
    /"model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[40,16\] but the config needs \[41,16\]/);
  const noHeadDim = { ...readQwen3Config(TINY_CONFIG), head_dim: 128 };
  assert.throws(() => buildQwen3Graph(noHeadDim, weights, { outputLayers: [1] }), /"model\.layers\.0\.self_attn\.q_proj\.weight".*head_dim defaults to 128/);
});

test("Qwen3 errors: a missing tensor is named", async () => {
  const file = tmpCopy((t) => { delete t["model.layers.1.self_attn.k_norm.weight"]; });
  try {
    const weights = new Qwen3Weights(WeightSet.open(file));
    const config = readQwen3Config(TINY_CONFIG);
    // Layer 1 is not needed for hidden state 1: the truncated file still works there.
    assert.ok(buildQwen3Graph(config, weights, { outputLayers: [1] }));
    assert.throws(() => buildQwen3Graph(config, weights, { outputLayers: [2] }), /missing tensor "model\.layers\.1\.self_attn\.k_norm\.weight"/);
    await assert.rejects(Qwen3Encoder.fromFiles(backend, file, TINY_CONFIG, { outputLayers: [3] }), /missing tensor "model\.layers\.1\.self_attn\.k_norm\.weight"/);
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
});

test("Qwen3 errors: an untied lm_head must exist for logits", () => {
  const weights = new Qwen3Weights(WeightSet.open(TINY_WEIGHTS));
  const config = { ...readQwen3Config(TINY_CONFIG), tie_word_embeddings: false };
  assert.ok(buildQwen3Graph(config, weights, { outputLayers: [4] }));
  assert.throws(() => buildQwen3Graph(config, weights, { outputLayers: [], logits: true }), /missing tensor "lm_head\.weight"/);
});

test("Qwen3 errors: a hidden-state layer beyond the model, bad inputs", async () => {
  const weights = new Qwen3Weights(WeightSet.open(TINY_WEIGHTS));
  const config = readQwen3Config(TINY_CONFIG);
  assert.throws(() => buildQwen3Graph(config, weights, { outputLayers: [1, 5] }), /layer 5 is out of range: this Qwen3 has 4 decoder layers, so valid indices are 0\.\.4/);
  assert.throws(() => buildQwen3Graph(config, weights, { outputLayers: [-1] }), /layer -1 is out of range/);
  // FLUX.2 klein's default layers (9, 18, 27) do not exist in a 4-layer model.
  await assert.rejects(Qwen3Encoder.fromFiles(backend, TINY_WEIGHTS, TINY_CONFIG), /layer 9 is out of range/);
  const enc = await Qwen3Encoder.load(backend, config, weights, { outputLayers: [1] });
  try {
    await assert.rejects(enc.promptEmbeds(new BigInt64Array(4), new BigInt64Array(4).fill(1n), 1, 4, [7]), /layer 7 is out of range/);
    await assert.rejects(enc.promptEmbeds(BigInt64Array.from([1n, 96n]), BigInt64Array.from([1n, 1n]), 1, 2, [1]), /token id 96 .* outside the vocabulary/);
    await assert.rejects(enc.promptEmbeds(new BigInt64Array(3), new BigInt64Array(4), 1, 4, [1]), /input_ids has 3 values/);
  } finally {
    await enc.release();
  }
});
