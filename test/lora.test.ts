// Tests of src/lora/: the golden LoRA cases (both kinds), format conversion for every
// naming scheme, refusal of LoRAs that do not fit, runtime == fused, stacking,
// strength 0, and switching LoRA sets on one loaded base model.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import { SafetensorsFile, WeightSet, readAll, writeSafetensors } from "../src/io/safetensors.js";
import { loadCaseSet, readExpected, readInputs, readParams } from "../src/conformance/cases.js";
import { compareValues } from "../src/conformance/compare.js";
import { ModelCache } from "../src/conformance/kinds.js";
import { Flux2Transformer, readTransformerConfig, type TransformerInputs } from "../src/models/transformer.js";
import { TransformerWeights } from "../src/models/transformer_weights.js";
import {
  LoraError, denseOf, loadLoraFile, parseLora, type LoraAdapter, type LoraTensor,
} from "../src/lora/formats.js";
import {
  Flux2LoraHost, attachRuntimeLoras, bindAdapter, fuseLoras, fuseLorasWith, unfuseLoras, type AdapterUse, type LoraSetup,
} from "../src/lora/apply.js";
import { loraForwardKind, loraFuseKind, LORA_KINDS } from "../src/conformance/lora_kinds.js";
import { goldenDir, goldenPath, loadTensors, maxAbsDiff } from "./golden.js";

const backend = new OrtBackend();
const DIFFUSERS_WEIGHTS = goldenPath("checkpoints/klein_distilled/transformer/diffusion_pytorch_model.safetensors");
const CONFIG = goldenPath("checkpoints/klein_distilled/transformer/config.json");
const BFL_WEIGHTS = goldenPath("checkpoints/klein_distilled/flux-2-klein-tiny.safetensors");

let tmp = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-lora-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

// -- helpers ------------------------------------------------------------------

function loraTensors(rel: string): Map<string, LoraTensor> {
  const out = new Map<string, LoraTensor>();
  for (const [k, t] of readAll(goldenPath(rel))) out.set(k, { shape: t.shape, data: Float32Array.from(t.data as Float32Array) });
  return out;
}

function golden(rel: string, name?: string): LoraAdapter {
  return loadLoraFile(goldenPath(rel), name);
}

/** Deterministic pseudo-random numbers in [-0.5, 0.5). */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function randomTensor(shape: number[], rand: () => number, k = 0.3): LoraTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Float32Array.from({ length: n }, () => rand() * k) };
}

/** The inputs of the golden LoRA cases (all share them). */
function caseInputs(): TransformerInputs {
  const t = loadTensors("lora/base.inputs.safetensors");
  const ids = (n: string) => t.get(n)!.data as BigInt64Array;
  return {
    hidden: { data: t.get("hidden_states")!.data as Float32Array, shape: t.get("hidden_states")!.shape },
    text: { data: t.get("encoder_hidden_states")!.data as Float32Array, shape: t.get("encoder_hidden_states")!.shape },
    timestep: t.get("timestep")!.data as Float32Array,
    imgIds: ids("img_ids"),
    txtIds: ids("txt_ids"),
  };
}

function expectedOutput(caseName: string): Float32Array {
  return loadTensors(`${caseName}.expected.safetensors`).get("output")!.data as Float32Array;
}

function openWeights(file = DIFFUSERS_WEIGHTS): TransformerWeights {
  const set = WeightSet.open(file);
  return new TransformerWeights(set, TransformerWeights.detectFormat(set));
}

async function run(weights: TransformerWeights, inputs = caseInputs()): Promise<Float32Array> {
  const config = readTransformerConfig(CONFIG);
  const model = await Flux2Transformer.load(backend, config, weights);
  try {
    return (await model.forward(inputs)).data as Float32Array;
  } finally {
    await model.release();
  }
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string) {
  const d = maxAbsDiff(a, b);
  assert.ok(d <= tol, `${what}: max |diff| ${d} > ${tol}`);
}

/** scale·B@A per target, for comparing adapters from different formats. */
function denseDeltas(a: LoraAdapter): Map<string, Float32Array> {
  return new Map([...a.deltas].map(([k, d]) => [k, denseOf(d)]));
}

function assertSameDeltas(a: LoraAdapter, b: LoraAdapter, tol = 1e-6) {
  assert.deepEqual([...a.deltas.keys()].sort(), [...b.deltas.keys()].sort());
  const da = denseDeltas(a), db = denseDeltas(b);
  for (const [k, v] of da) assertClose(v, db.get(k)!, tol, k);
}

/** A kohya-named LoRA on every linear module of the tiny klein transformer (plus norm_out). */
const TINY_MODULES: [string, number, number][] = [
  ["img_in", 48, 16], ["txt_in", 48, 48], ["time_in_in_layer", 48, 256], ["time_in_out_layer", 48, 48],
  ["double_stream_modulation_img_lin", 288, 48], ["double_stream_modulation_txt_lin", 288, 48],
  ["single_stream_modulation_lin", 144, 48], ["final_layer_linear", 16, 48], ["final_layer_adaLN_modulation_1", 96, 48],
  ...[0, 1].flatMap((i): [string, number, number][] => [
    [`double_blocks_${i}_img_attn_qkv`, 144, 48], [`double_blocks_${i}_txt_attn_qkv`, 144, 48],
    [`double_blocks_${i}_img_attn_proj`, 48, 48], [`double_blocks_${i}_txt_attn_proj`, 48, 48],
    [`double_blocks_${i}_img_mlp_0`, 288, 48], [`double_blocks_${i}_img_mlp_2`, 48, 144],
    [`double_blocks_${i}_txt_mlp_0`, 288, 48], [`double_blocks_${i}_txt_mlp_2`, 48, 144],
    [`single_blocks_${i}_linear1`, 432, 48], [`single_blocks_${i}_linear2`, 48, 192],
  ]),
];

function fullKohya(seed: number, rank = 3, alpha = 1.5): Map<string, LoraTensor> {
  const rand = rng(seed);
  const t = new Map<string, LoraTensor>();
  for (const [m, out, inF] of TINY_MODULES) {
    t.set(`lora_unet_${m}.lora_down.weight`, randomTensor([rank, inF], rand));
    t.set(`lora_unet_${m}.lora_up.weight`, randomTensor([out, rank], rand));
    t.set(`lora_unet_${m}.alpha`, { shape: [], data: Float32Array.of(alpha) });
  }
  return t;
}

// -- golden cases --------------------------------------------------------------

describe("golden LoRA cases", () => {
  const set = loadCaseSet(goldenDir);
  const cases = set.cases.filter((c) => c.kind === "lora_fuse" || c.kind === "lora_forward");
  let models: ModelCache;
  before(() => {
    models = new ModelCache(set.root, backend);
  });
  after(async () => {
    await models.release();
  });

  test("the set has the 9 LoRA cases, and the handlers cover both kinds", () => {
    assert.equal(cases.length, 9);
    assert.deepEqual(Object.keys(LORA_KINDS).sort(), ["lora_forward", "lora_fuse"]);
  });

  for (const c of cases) {
    test(`${c.name} (${c.kind}) within tolerance`, async () => {
      const handler = c.kind === "lora_fuse" ? loraFuseKind : loraForwardKind;
      const out = await handler({ set, spec: c, params: readParams(set, c), inputs: readInputs(set, c), models });
      const expected = readExpected(set, c)!;
      for (const [name, meta] of Object.entries(c.expected_tensors)) {
        const got = out.tensors.get(name);
        assert.ok(got, `${name} not computed`);
        const cmp = compareValues(got.data as Float32Array, got.shape, expected.get(name)!.data as Float32Array, meta.shape, c.tolerance.tensors[name]);
        assert.ok(cmp.ok, `${name}: ${cmp.reason ?? `max_abs ${cmp.maxAbs}`} > ${c.tolerance.tensors[name].abs}`);
      }
      if (c.kind === "lora_fuse") {
        // Exactly the weights the reference changed, no more, no fewer.
        const mine = [...out.tensors.keys()].filter((k) => k !== "output").sort();
        const theirs = Object.keys(c.expected_tensors).filter((k) => k !== "output").sort();
        assert.deepEqual(mine, theirs);
      }
    });
  }

  test("each adapter really changes the output (the cases are not vacuous)", () => {
    const base = expectedOutput("lora/base");
    for (const tag of ["diffusers", "kohya", "bfl", "stacked"]) {
      assert.ok(maxAbsDiff(base, expectedOutput(`lora/${tag}__unfused`)) > 1e-2, tag);
    }
  });
});

// -- formats ---------------------------------------------------------------------

describe("LoRA formats", () => {
  test("golden files: detection, targets and scales", () => {
    const d = golden("lora/lora_diffusers.safetensors");
    assert.equal(d.format, "diffusers");
    assert.equal(d.deltas.size, 28);
    for (const x of d.deltas.values()) assert.equal(x.scale, 0.5); // lora_alpha 2 / r 4 from the header metadata
    const k = golden("lora/lora_kohya.safetensors");
    assert.equal(k.format, "kohya");
    assert.equal(k.deltas.size, 28); // 2 qkv × 3 + proj/mlp... split onto diffusers names
    for (const x of k.deltas.values()) assert.equal(x.scale, 0.75); // alpha 3 / rank 4
    const b = golden("lora/lora_bfl.safetensors");
    assert.equal(b.format, "ai-toolkit");
    assert.equal(b.deltas.size, 24); // no text-stream MLPs
    for (const x of b.deltas.values()) assert.equal(x.scale, 1);
    for (const a of [d, k, b]) {
      assert.deepEqual([a.report.ignored, a.report.unknown, a.report.unsupportedTextEncoder], [[], [], []]);
      assert.deepEqual(a.report.applied, [...a.deltas.keys()]);
    }
    // BFL qkv: lora_A shared by q, k, v, lora_B split in three row chunks.
    const q = b.deltas.get("transformer_blocks.0.attn.to_q.weight")!, v = b.deltas.get("transformer_blocks.0.attn.to_v.weight")!;
    assert.ok(q.kind === "lowrank" && v.kind === "lowrank");
    assert.deepEqual(q.A, v.A);
    const B = loraTensors("lora/lora_bfl.safetensors").get("diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight")!;
    assert.deepEqual(v.B, B.data.slice(2 * 48 * 2));
  });

  test("kohya and BFL / ai-toolkit naming of the same LoRA give the same deltas", () => {
    const kohya = loraTensors("lora/lora_kohya.safetensors");
    const bfl = new Map<string, LoraTensor>();
    for (const [k, t] of kohya) {
      const m = k.match(/^lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/)!;
      const mod = m[1].replace(/^double_blocks_(\d+)_(img|txt)_(attn|mlp)_(.+)$/, "double_blocks.$1.$2_$3.$4")
        .replace(/^single_blocks_(\d+)_(.+)$/, "single_blocks.$1.$2");
      if (m[2] === "alpha") continue;
      const rank = kohya.get(`lora_unet_${m[1]}.lora_down.weight`)!.shape[0];
      const s = kohya.get(`lora_unet_${m[1]}.alpha`)!.data[0] / rank;
      // ai-toolkit has no alpha: fold it into lora_A.
      bfl.set(`diffusion_model.${mod}.${m[2] === "lora_down.weight" ? "lora_A" : "lora_B"}.weight`,
        m[2] === "lora_down.weight" ? { shape: t.shape, data: t.data.map((x) => x * s) } : t);
    }
    const a = parseLora(kohya), b = parseLora(bfl);
    assert.equal(b.format, "ai-toolkit");
    assertSameDeltas(a, b);
    // The PEFT wrapper prefix is the same format (diffusers renames it to diffusion_model.).
    const peft = new Map([...bfl].map(([k, v]) => [k.replace(/^diffusion_model\./, "base_model.model."), v]));
    assertSameDeltas(parseLora(peft), b);
    // ComfyUI-style full prefix too.
    const comfy = new Map([...bfl].map(([k, v]) => [`model.${k}`, v]));
    assertSameDeltas(parseLora(comfy), b);
  });

  test("DiffSynth-Studio and old diffusers naming give the diffusers deltas", () => {
    const f = goldenPath("lora/lora_diffusers.safetensors");
    const t = loraTensors("lora/lora_diffusers.safetensors");
    const ref = loadLoraFile(f);
    // DiffSynth: bare diffusers module names, PEFT adapter segment ".default", alpha = rank (scale 1).
    const ds = new Map<string, LoraTensor>();
    for (const [k, v] of t) {
      const nk = k.replace(/^transformer\./, "").replace(/\.(lora_[AB])\.weight$/, ".$1.default.weight");
      ds.set(nk, k.includes("lora_B") ? { shape: v.shape, data: v.data.map((x) => x * 0.5) } : v);
    }
    const diffsynth = parseLora(ds);
    assert.equal(diffsynth.format, "diffsynth");
    assertSameDeltas(diffsynth, ref);
    // Old diffusers naming (.lora.down / .lora.up), same header metadata.
    const old = new Map([...t].map(([k, v]) => [k.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight", ".lora.up.weight"), v]));
    const file = SafetensorsFile.open(f);
    const meta = file.metadata;
    file.close();
    assertSameDeltas(parseLora(old, meta), ref);
    // Underscore (OneTrainer-style) diffusers names with kohya down/up/alpha.
    const ot = new Map<string, LoraTensor>();
    for (const [k, v] of t) {
      const mod = k.replace(/^transformer\./, "").replace(/\.lora_[AB]\.weight$/, "").replace(/\./g, "_");
      ot.set(`lora_transformer_${mod}.${k.includes("lora_A") ? "lora_down" : "lora_up"}.weight`, v);
      ot.set(`lora_transformer_${mod}.alpha`, { shape: [], data: Float32Array.of(2) });
    }
    assertSameDeltas(parseLora(ot), ref);
  });

  test("lora_adapter_metadata: rank_pattern, alpha_pattern and use_rslora as PEFT reads them", () => {
    const rand = rng(7);
    const t = new Map<string, LoraTensor>([
      ["transformer.transformer_blocks.0.attn.to_q.lora_A.weight", randomTensor([4, 48], rand)],
      ["transformer.transformer_blocks.0.attn.to_q.lora_B.weight", randomTensor([48, 4], rand)],
      ["transformer.transformer_blocks.1.attn.to_q.lora_A.weight", randomTensor([8, 48], rand)],
      ["transformer.transformer_blocks.1.attn.to_q.lora_B.weight", randomTensor([48, 8], rand)],
      ["transformer.proj_out.lora_A.weight", randomTensor([4, 48], rand)],
      ["transformer.proj_out.lora_B.weight", randomTensor([16, 4], rand)],
    ]);
    const meta = (cfg: object) => ({ lora_adapter_metadata: JSON.stringify(Object.fromEntries(Object.entries(cfg).map(([k, v]) => [`transformer.${k}`, v]))) });
    const a = parseLora(t, meta({ r: 4, lora_alpha: 8, rank_pattern: { "transformer_blocks.1.attn.to_q": 8 }, alpha_pattern: { proj_out: 2 } }));
    assert.equal(a.deltas.get("transformer_blocks.0.attn.to_q.weight")!.scale, 2);
    assert.equal(a.deltas.get("transformer_blocks.1.attn.to_q.weight")!.scale, 1);
    assert.equal(a.deltas.get("proj_out.weight")!.scale, 0.5);
    const rs = parseLora(t, meta({ r: 4, lora_alpha: 8, rank_pattern: { "^transformer_blocks.1.attn.to_q": 8 }, use_rslora: true }));
    assert.equal(rs.deltas.get("transformer_blocks.0.attn.to_q.weight")!.scale, 4);
    assert.equal(rs.deltas.get("transformer_blocks.1.attn.to_q.weight")!.scale, 8 / Math.sqrt(8));
    // No metadata: scale 1 for every rank (diffusers mirrors the ranks into alpha).
    for (const d of parseLora(t).deltas.values()) assert.equal(d.scale, 1);
    // Metadata that contradicts the tensors is refused, as PEFT would.
    assert.throws(() => parseLora(t, meta({ r: 4, lora_alpha: 4 })), /rank 8 .* r=4/);
  });

  test("kohya fused qkv: a block-diagonal lora_up is split by rank thirds (same delta)", () => {
    const rand = rng(11);
    const up = randomTensor([144, 6], rand);
    for (let i = 0; i < 144; i++) for (let j = 0; j < 6; j++) if (Math.floor(j / 2) !== Math.floor(i / 48)) up.data[i * 6 + j] = 0;
    const down = randomTensor([6, 48], rand);
    const t = new Map<string, LoraTensor>([
      ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", down],
      ["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight", up],
      ["lora_unet_double_blocks_0_img_attn_qkv.alpha", { shape: [], data: Float32Array.of(3) }],
    ]);
    const a = parseLora(t);
    const k = a.deltas.get("transformer_blocks.0.attn.to_k.weight")!;
    assert.equal(k.kind === "lowrank" && k.rank, 2);
    assert.equal(k.scale, 0.5);
    // Against the unsplit product.
    const full = denseOf({ kind: "lowrank", A: down.data, B: up.data, rank: 6, inFeatures: 48, outFeatures: 144, scale: 0.5, source: "" });
    assertClose(denseOf(k), full.slice(48 * 48, 96 * 48), 1e-7, "to_k");
    // Not block diagonal: down shared, up split by rows, full rank kept.
    up.data[0 * 6 + 5] = 0.1;
    const b = parseLora(t).deltas.get("transformer_blocks.0.attn.to_q.weight")!;
    assert.equal(b.kind === "lowrank" && b.rank, 6);
  });

  test("LoKr and LoHa: Kronecker / Hadamard products with alpha / rank", () => {
    const rand = rng(5);
    const w1 = randomTensor([6, 4], rand), w2a = randomTensor([8, 2], rand), w2b = randomTensor([2, 4], rand);
    const lokr = parseLora(new Map<string, LoraTensor>([
      ["lycoris_img_in.lokr_w1", w1], ["lycoris_img_in.lokr_w2_a", w2a], ["lycoris_img_in.lokr_w2_b", w2b],
      ["lycoris_img_in.alpha", { shape: [], data: Float32Array.of(1) }],
    ]));
    assert.equal(lokr.format, "lycoris");
    const d = lokr.deltas.get("x_embedder.weight")!;
    assert.ok(d.kind === "dense");
    assert.deepEqual([d.outFeatures, d.inFeatures], [48, 16]);
    assert.equal(d.scale, 0.5); // alpha 1 / rank 2 of the factorised w2
    const w2 = (k: number, l: number) => w2a.data[k * 2] * w2b.data[l] + w2a.data[k * 2 + 1] * w2b.data[4 + l];
    for (const [i, j, k, l] of [[0, 0, 0, 0], [5, 3, 7, 3], [2, 1, 4, 0]]) {
      assertClose([d.W[(i * 8 + k) * 16 + j * 4 + l]], [w1.data[i * 4 + j] * w2(k, l)], 1e-6, `kron ${i},${j},${k},${l}`);
    }
    const h = [randomTensor([48, 2], rand), randomTensor([2, 48], rand), randomTensor([48, 2], rand), randomTensor([2, 48], rand)];
    const loha = parseLora(new Map<string, LoraTensor>([
      ["lora_unet_txt_in.hada_w1_a", h[0]], ["lora_unet_txt_in.hada_w1_b", h[1]],
      ["lora_unet_txt_in.hada_w2_a", h[2]], ["lora_unet_txt_in.hada_w2_b", h[3]],
      ["lora_unet_txt_in.alpha", { shape: [], data: Float32Array.of(4) }],
    ]));
    const e = loha.deltas.get("context_embedder.weight")!;
    assert.ok(e.kind === "dense");
    assert.equal(e.scale, 2);
    const m = (a: LoraTensor, b: LoraTensor, i: number, j: number) => a.data[i * 2] * b.data[j] + a.data[i * 2 + 1] * b.data[48 + j];
    assertClose([e.W[7 * 48 + 30]], [m(h[0], h[1], 7, 30) * m(h[2], h[3], 7, 30)], 1e-6, "hadamard");
    // Tucker cores are conv-only: refused.
    assert.throws(() => parseLora(new Map([["lycoris_img_in.lokr_w1", w1], ["lycoris_img_in.lokr_w2_a", w2a], ["lycoris_img_in.lokr_w2_b", w2b], ["lycoris_img_in.lokr_t2", w1]])), /Tucker/);
  });

  test("norm_out: a BFL final_layer.adaLN_modulation.1 LoRA has its lora_B halves swapped; a diffusers one not", () => {
    const rand = rng(3);
    const A = randomTensor([2, 48], rand), B = randomTensor([96, 2], rand);
    const bfl = parseLora(new Map([["diffusion_model.final_layer.adaLN_modulation.1.lora_A.weight", A], ["diffusion_model.final_layer.adaLN_modulation.1.lora_B.weight", B]]));
    const d = bfl.deltas.get("norm_out.linear.weight")!;
    assert.ok(d.kind === "lowrank");
    assert.deepEqual(d.B.subarray(0, 96), B.data.subarray(96)); // diffusers scale rows = BFL rows [48, 96)
    assert.deepEqual(d.B.subarray(96), B.data.subarray(0, 96));
    assert.ok(bfl.report.notes.some((n) => n.includes("swapped")));
    const dif = parseLora(new Map([["transformer.norm_out.linear.lora_A.weight", A], ["transformer.norm_out.linear.lora_B.weight", B]]));
    const e = dif.deltas.get("norm_out.linear.weight")!;
    assert.ok(e.kind === "lowrank");
    assert.deepEqual(e.B, B.data);
  });

  test("text-encoder, DoRA, bias and unknown keys are reported, not applied", () => {
    const t = loraTensors("lora/lora_bfl.safetensors");
    const rand = rng(9);
    t.set("lora_te_model_layers_0_self_attn_q_proj.lora_down.weight", randomTensor([2, 8], rand));
    t.set("text_encoder.model.layers.0.self_attn.q_proj.lora_A.weight", randomTensor([2, 8], rand));
    t.set("diffusion_model.double_blocks.0.img_attn.proj.dora_scale", randomTensor([1, 48], rand));
    t.set("diffusion_model.double_blocks.0.img_attn.proj.lora_B.bias", randomTensor([48], rand));
    t.set("diffusion_model.double_blocks.0.img_attn.nonsense.lora_A.weight", randomTensor([2, 48], rand));
    t.set("diffusion_model.double_blocks.0.img_attn.nonsense.lora_B.weight", randomTensor([48, 2], rand));
    t.set("some_random_tensor", randomTensor([3], rand));
    t.set("diffusion_model.double_blocks.1.txt_mlp.0.lora_A.default.weight", randomTensor([2, 48], rand)); // its B is missing
    const a = parseLora(t);
    assert.deepEqual(a.report.unsupportedTextEncoder.sort(), [
      "lora_te_model_layers_0_self_attn_q_proj.lora_down.weight", "text_encoder.model.layers.0.self_attn.q_proj.lora_A.weight"]);
    assert.deepEqual(a.report.ignored.sort(), [
      "diffusion_model.double_blocks.0.img_attn.proj.dora_scale", "diffusion_model.double_blocks.0.img_attn.proj.lora_B.bias",
      "diffusion_model.double_blocks.1.txt_mlp.0.lora_A.default.weight"]);
    assert.ok(a.report.notes.some((n) => n.includes("incomplete")));
    assert.deepEqual(a.report.unknown.sort(), [
      "diffusion_model.double_blocks.0.img_attn.nonsense.lora_A.weight", "diffusion_model.double_blocks.0.img_attn.nonsense.lora_B.weight", "some_random_tensor"]);
    assertSameDeltas(a, golden("lora/lora_bfl.safetensors"), 0);
    // A module with both LoRA and LoKr weights: the LoRA is used, the rest reported.
    const mixed = new Map(loraTensors("lora/lora_bfl.safetensors"));
    mixed.set("diffusion_model.single_blocks.0.linear2.lokr_w1", randomTensor([4, 4], rand));
    const m = parseLora(mixed);
    assert.deepEqual(m.report.ignored, ["diffusion_model.single_blocks.0.linear2.lokr_w1"]);
    assert.ok(m.report.notes.some((n) => n.includes("mixes adapter kinds")));
  });
});

// -- refusing LoRAs that do not fit ------------------------------------------------

describe("LoRA compatibility", () => {
  test("unknown targets are reported and the rest applies (guidance embedder absent in klein)", async () => {
    const t = loraTensors("lora/lora_bfl.safetensors");
    const rand = rng(2);
    t.set("diffusion_model.guidance_in.in_layer.lora_A.weight", randomTensor([2, 256], rand));
    t.set("diffusion_model.guidance_in.in_layer.lora_B.weight", randomTensor([48, 2], rand));
    t.set("diffusion_model.foo.bar.lora_A.weight", randomTensor([2, 48], rand));
    t.set("diffusion_model.foo.bar.lora_B.weight", randomTensor([48, 2], rand));
    const a = parseLora(t, {}, { name: "extra" });
    const weights = openWeights();
    const b = bindAdapter(a, weights);
    assert.equal(b.targets.length, 24);
    assert.ok(b.report.unknown.includes("time_guidance_embed.guidance_embedder.linear_1.weight"));
    assert.ok(b.report.unknown.includes("diffusion_model.foo.bar.lora_A.weight"));
    // Still gives the golden result.
    const rt = attachRuntimeLoras(weights, [{ adapter: a }]);
    assert.equal(rt.reports[0].applied.length, 24);
    assertClose(await run(weights), expectedOutput("lora/bfl__unfused"), 1e-4, "output");
  });

  test("a LoRA of which nothing applies is refused", () => {
    const rand = rng(4);
    const a = parseLora(new Map([["diffusion_model.foo.lora_A.weight", randomTensor([2, 4], rand)], ["diffusion_model.foo.lora_B.weight", randomTensor([4, 2], rand)]]), {}, { name: "junk" });
    assert.throws(() => bindAdapter(a, openWeights()), (e: unknown) => e instanceof LoraError && /junk.*nothing in it applies.*diffusion_model\.foo/.test(e.message));
    const te = parseLora(new Map([["lora_te_x.lora_down.weight", randomTensor([2, 4], rand)], ["lora_te_x.lora_up.weight", randomTensor([4, 2], rand)]]), {}, { name: "te" });
    assert.throws(() => bindAdapter(te, openWeights()), /text-encoder/);
  });

  test("a LoRA for a bigger model is refused, naming the first mismatching key and both shapes", () => {
    // A "9B" LoRA (inner 64) on the tiny "4B" model (inner 48).
    const rand = rng(8);
    const t = new Map<string, LoraTensor>();
    for (const i of [0, 1, 2]) {
      t.set(`lora_unet_double_blocks_${i}_img_attn_proj.lora_down.weight`, randomTensor([4, 64], rand));
      t.set(`lora_unet_double_blocks_${i}_img_attn_proj.lora_up.weight`, randomTensor([64, 4], rand));
    }
    const file = path.join(tmp, "big.safetensors");
    writeSafetensors(file, Object.fromEntries([...t].map(([k, v]) => [k, { dtype: "F32" as const, shape: v.shape, data: v.data }])));
    const a = loadLoraFile(file);
    assert.throws(() => bindAdapter(a, openWeights()), (e: unknown) => {
      assert.ok(e instanceof LoraError);
      for (const s of ["big", `"transformer_blocks.0.attn.to_out.0.weight"`, "[48,48]", "[64, 64]", "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"]) {
        assert.ok(e.message.includes(s), `message lacks ${s}: ${e.message}`);
      }
      return true;
    });
    assert.throws(() => fuseLoras(openWeights(), [{ adapter: a }]), LoraError);
  });
});

// -- applying --------------------------------------------------------------------

describe("applying LoRAs", () => {
  let base: Float32Array;
  before(() => {
    base = expectedOutput("lora/base");
  });

  test("runtime side paths == fused weights, on every linear module and norm_out (incl. LoKr/LoHa dense deltas)", async () => {
    const t = fullKohya(21);
    const rand = rng(22);
    // Replace two modules by LyCORIS dense deltas.
    for (const k of [...t.keys()]) if (k.startsWith("lora_unet_img_in.") || k.startsWith("lora_unet_txt_in.")) t.delete(k);
    t.set("lora_unet_img_in.lokr_w1", randomTensor([6, 4], rand));
    t.set("lora_unet_img_in.lokr_w2", randomTensor([8, 4], rand));
    for (const n of ["hada_w1_a", "hada_w2_a"]) t.set(`lora_unet_txt_in.${n}`, randomTensor([48, 2], rand));
    for (const n of ["hada_w1_b", "hada_w2_b"]) t.set(`lora_unet_txt_in.${n}`, randomTensor([2, 48], rand));
    const a = parseLora(t, {}, { name: "all" });
    assert.equal(a.format, "mixed");
    assert.equal(a.deltas.size, 9 + 2 * (6 + 6) + 2 * 2);
    for (const file of [DIFFUSERS_WEIGHTS, BFL_WEIGHTS]) {
      const fw = openWeights(file);
      const fused = fuseLoras(fw, [{ adapter: a, weight: 0.8 }], 0.5);
      assert.equal(fused.changed.length, a.deltas.size);
      const outFused = await run(fw);
      const rw = openWeights(file);
      attachRuntimeLoras(rw, [{ adapter: a, weight: 0.8 }], { loraScale: 0.5 });
      const outRuntime = await run(rw);
      assert.ok(maxAbsDiff(outFused, base) > 1e-2, "the LoRA changes the output");
      assertClose(outRuntime, outFused, 2e-5, `runtime vs fused (${path.basename(file)})`);
    }
  });

  test("BFL-format base checkpoint: golden LoRAs give the golden outputs, fused and at runtime", async () => {
    const uses: AdapterUse[] = [
      { adapter: golden("lora/lora_diffusers.safetensors", "style"), weight: 0.5 },
      { adapter: golden("lora/lora_bfl.safetensors", "detail"), weight: 1 },
    ];
    const fw = openWeights(BFL_WEIGHTS);
    fuseLoras(fw, uses, 1);
    assertClose(await run(fw), expectedOutput("lora/stacked__fused"), 1e-4, "fused");
    const rw = openWeights(BFL_WEIGHTS);
    attachRuntimeLoras(rw, uses);
    assertClose(await run(rw), expectedOutput("lora/stacked__unfused"), 1e-4, "runtime");
  });

  test("strength 0 == base (runtime and fused)", async () => {
    const a = golden("lora/lora_kohya.safetensors");
    const rw = openWeights();
    attachRuntimeLoras(rw, [{ adapter: a, weight: 0 }]);
    assertClose(await run(rw), base, 1e-4, "runtime");
    const fw = openWeights();
    fuseLoras(fw, [{ adapter: a }], 0);
    assertClose(await run(fw), base, 1e-4, "fused, lora_scale 0");
  });

  test("stacked == sum: fused deltas add, and the stacked output is the golden one", async () => {
    const style = golden("lora/lora_diffusers.safetensors", "style"), detail = golden("lora/lora_bfl.safetensors", "detail");
    const both = openWeights(), s = openWeights(), d = openWeights();
    const fb = fuseLoras(both, [{ adapter: style, weight: 0.5 }, { adapter: detail, weight: 1 }]);
    fuseLoras(s, [{ adapter: style, weight: 0.5 }]);
    fuseLoras(d, [{ adapter: detail, weight: 1 }]);
    const plain = openWeights();
    for (const name of fb.changed) {
      const W = plain.float32(name).data, Ws = s.float32(name).data, Wd = d.float32(name).data;
      const sum = W.map((w, i) => w + (Ws[i] - w) + (Wd[i] - w));
      assertClose(both.float32(name).data, sum, 1e-6, name);
    }
    assertClose(await run(both), expectedOutput("lora/stacked__fused"), 1e-4, "stacked fused");
  });

  test("fusing into a spill file (for real checkpoints) == fusing in memory", async () => {
    const uses = [{ adapter: golden("lora/lora_kohya.safetensors") }];
    for (const file of [DIFFUSERS_WEIGHTS, BFL_WEIGHTS]) {
      const w = openWeights(file);
      const spillFile = path.join(tmp, `fused-${path.basename(file)}`);
      const f = fuseLoras(w, uses, 0.7, { spillFile });
      assert.equal(w.overrides.size, 0);
      assert.equal(w.fileOverrides.size, 28);
      assert.equal(f.spillFile, spillFile);
      const mem = openWeights(file);
      fuseLoras(mem, uses, 0.7);
      for (const name of f.changed) assert.deepEqual(w.float32(name).data, mem.float32(name).data, name);
      assertClose(await run(w), expectedOutput("lora/kohya__fused"), 1e-4, `spilled (${path.basename(file)})`);
      unfuseLoras(w, f);
      assert.equal(w.fileOverrides.size, 0);
    }
  });

  test("fusing with the backend's MatMul (fuseLorasWith) == fusing in JS", async () => {
    const t = fullKohya(31);
    const rand = rng(32);
    for (const k of [...t.keys()]) if (k.startsWith("lora_unet_txt_in.")) t.delete(k);
    t.set("lora_unet_txt_in.lokr_w1", randomTensor([6, 4], rand));
    t.set("lora_unet_txt_in.lokr_w2", randomTensor([8, 12], rand));
    const uses: AdapterUse[] = [
      { adapter: parseLora(t, {}, { name: "all" }), weight: 0.6 },
      { adapter: golden("lora/lora_bfl.safetensors", "detail"), weight: 0.9 },
      { adapter: golden("lora/lora_diffusers.safetensors", "off"), weight: 0 },
    ];
    const js = openWeights(), ort = openWeights();
    const a = fuseLoras(js, uses, 0.8);
    const b = await fuseLorasWith(backend, ort, uses, 0.8, { spillFile: path.join(tmp, "with.safetensors") });
    assert.deepEqual(a.changed, b.changed);
    for (const name of a.changed) assertClose(js.float32(name).data, ort.float32(name).data, 1e-6, name);
    assertClose(await run(ort), await run(js), 1e-5, "outputs");
  });

  test("unfuse restores the base weights exactly", async () => {
    const w = openWeights();
    const f = fuseLoras(w, [{ adapter: golden("lora/lora_kohya.safetensors") }], 0.7);
    assert.equal(w.overrides.size, 28);
    unfuseLoras(w, f);
    assert.equal(w.overrides.size, 0);
    assertClose(await run(w), base, 1e-4, "after unfuse");
  });

  test("runtime strengths are graph inputs: change and disable without rebuilding", async () => {
    const w = openWeights();
    const rt = attachRuntimeLoras(w, [
      { adapter: golden("lora/lora_diffusers.safetensors", "style"), weight: 0 },
      { adapter: golden("lora/lora_bfl.safetensors", "detail"), weight: 0 },
      { adapter: golden("lora/lora_kohya.safetensors", "kohya"), weight: 0 },
    ]);
    const model = await Flux2Transformer.load(backend, readTransformerConfig(CONFIG), w);
    try {
      const inp = caseInputs();
      const out = async () => (await model.forward(inp)).data as Float32Array;
      assertClose(await out(), base, 1e-4, "all disabled");
      rt.setWeights({ style: 0.5, detail: 1 }, true);
      assertClose(await out(), expectedOutput("lora/stacked__unfused"), 1e-4, "stacked");
      rt.setWeights({ kohya: 1 }, true);
      assertClose(await out(), expectedOutput("lora/kohya__unfused"), 1e-4, "kohya only");
      rt.setWeights({ kohya: 1 }, true);
      rt.setScale(0.7);
      assertClose(await out(), expectedOutput("lora/kohya__fused"), 1e-4, "kohya at lora_scale 0.7 == fused at 0.7");
      rt.setScale(1);
      rt.setWeight("kohya", 0);
      rt.setWeight("detail", 1);
      assertClose(await out(), expectedOutput("lora/bfl__unfused"), 1e-4, "bfl only");
      assert.throws(() => rt.setWeight("nope", 1), /no runtime adapter named "nope"/);
    } finally {
      await model.release();
    }
  });

  test("switching LoRA sets between jobs on one loaded base == loading each fresh", async () => {
    const host = Flux2LoraHost.open(backend, DIFFUSERS_WEIGHTS, CONFIG);
    const inp = caseInputs();
    const fwd = async (m: Flux2Transformer) => (await m.forward(inp)).data as Float32Array;
    try {
      const jobs: [string, LoraSetup, string][] = [
        ["kohya fused", { fused: [{ adapter: golden("lora/lora_kohya.safetensors") }], loraScale: 0.7 }, "lora/kohya__fused"],
        ["diffusers runtime", { runtime: [{ adapter: golden("lora/lora_diffusers.safetensors") }] }, "lora/diffusers__unfused"],
        ["none", {}, "lora/base"],
        ["stacked runtime", { runtime: [{ adapter: golden("lora/lora_diffusers.safetensors", "s"), weight: 0.5 }, { adapter: golden("lora/lora_bfl.safetensors", "d") }] }, "lora/stacked__unfused"],
        ["bfl fused", { fused: [{ adapter: golden("lora/lora_bfl.safetensors") }], loraScale: 0.7 }, "lora/bfl__fused"],
      ];
      for (const [what, setup, caseName] of jobs) {
        const hosted = await fwd((await host.activate(setup)).model);
        // Fresh: its own file handles, weights and session.
        const fresh = openWeights();
        if (setup.fused) fuseLoras(fresh, setup.fused, setup.loraScale ?? 1);
        if (setup.runtime) attachRuntimeLoras(fresh, setup.runtime, { loraScale: setup.loraScale });
        const freshOut = await run(fresh);
        assertClose(hosted, freshOut, 1e-6, `${what}: hosted vs fresh`);
        assertClose(hosted, expectedOutput(caseName), 1e-4, `${what}: vs golden`);
      }
    } finally {
      await host.release();
    }
  });
});
