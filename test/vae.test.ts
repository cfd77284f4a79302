// Tests of the FLUX.2 VAE (src/models/vae.ts, src/models/vae_weights.ts):
// the golden vae_encode / vae_decode cases in both key layouts, the latent
// batch-norm statistics, lazy graph building and the errors a wrong config or
// a broken weight file must give.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import type { Backend, HostTensor } from "../src/backend/backend.js";
import type { Graph } from "../src/onnx/graph.js";
import { WeightSet, readAll, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.js";
import { Flux2Vae, readVaeConfig, parseVaeConfig, vaeScaleFactor } from "../src/models/vae.js";
import { VaeWeights, expectedVaeShapes } from "../src/models/vae_weights.js";
import { goldenPath, loadTensors, maxAbsDiff, type Loaded } from "./golden.js";

interface Case {
  name: string;
  kind: string;
  model: { vae: { config: string; weights: string; format?: "bfl" } };
  inputs: string;
  expected: string;
  tolerance: { tensors: Record<string, { abs: number }> };
}

const cases: Case[] = JSON.parse(fs.readFileSync(goldenPath("cases.json"), "utf8")).cases;
function goldenCase(name: string): Case {
  const c = cases.find((x) => x.name === name);
  if (!c) throw new Error(`cases.json has no case ${name}`);
  return c;
}

const backend = new OrtBackend();
/** Largest error seen per case and tensor, printed at the end (for the report). */
const seen: Record<string, number> = {};

function host(t: Loaded | undefined, what: string): HostTensor {
  assert.ok(t, `missing golden tensor ${what}`);
  return { data: t.data as Float32Array, shape: t.shape };
}

function expectClose(caseName: string, tensor: string, got: HostTensor, want: Loaded | undefined, tol: number): void {
  assert.ok(want, `${caseName}: no expected tensor ${tensor}`);
  assert.deepEqual(got.shape, want.shape, `${caseName}/${tensor}: shape`);
  const d = maxAbsDiff(got.data as Float32Array, want.data as Float32Array);
  seen[`${caseName}/${tensor}`] = d;
  assert.ok(d <= tol, `${caseName}/${tensor}: max |diff| ${d} > ${tol}`);
}

async function openCase(c: Case): Promise<Flux2Vae> {
  const v = c.model.vae;
  return Flux2Vae.fromFiles(backend, goldenPath(v.weights), goldenPath(v.config), v.format ?? "diffusers");
}

/** Run one vae_encode / vae_decode case of cases.json against its expected tensors. */
async function runCase(name: string): Promise<Record<string, HostTensor>> {
  const c = goldenCase(name);
  const vae = await openCase(c);
  try {
    const inputs = loadTensors(c.inputs);
    const expected = loadTensors(c.expected);
    let out: Record<string, HostTensor>;
    if (c.kind === "vae_encode") {
      const r = await vae.encode(host(inputs.get("image"), "image"));
      out = { moments: r.moments, latent_mean: r.mean, latent_logvar: r.logvar };
    } else {
      out = { sample: await vae.decode(host(inputs.get("latents"), "latents")) };
    }
    const names = Object.keys(c.tolerance.tensors);
    assert.ok(names.length > 0);
    for (const t of names) expectClose(name, t, out[t], expected.get(t), c.tolerance.tensors[t].abs);
    return out;
  } finally {
    await vae.release();
  }
}

let tmp = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-vae-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  const lines = Object.entries(seen).map(([k, v]) => `  ${k}: ${v.toExponential(3)}`);
  if (lines.length) process.stdout.write(`VAE max |diff| per case and tensor:\n${lines.join("\n")}\n`);
});

const TINY_WEIGHTS = goldenPath("vae/vae_tiny.safetensors");
const TINY_CONFIG = goldenPath("vae/vae_tiny.config.json");
const BFL_WEIGHTS = goldenPath("checkpoints/klein_distilled/ae.safetensors");
const FOLDER = goldenPath("checkpoints/klein_distilled/vae");

/** Write a changed copy of the tiny VAE's weights into the temp folder. */
function tinyCopy(file: string, change: (t: Map<string, TensorToWrite>) => void): string {
  const all = readAll(TINY_WEIGHTS) as Map<string, TensorToWrite>;
  change(all);
  const out = path.join(tmp, file);
  writeSafetensors(out, Object.fromEntries(all));
  return out;
}

function writeConfig(file: string, patch: Record<string, unknown>): string {
  const raw = JSON.parse(fs.readFileSync(TINY_CONFIG, "utf8"));
  const out = path.join(tmp, file);
  fs.writeFileSync(out, JSON.stringify({ ...raw, ...patch }));
  return out;
}

// ---------------------------------------------------------------------------

describe("config", () => {
  test("reads the tiny config; scale factor 2^(blocks-1)", () => {
    const c = readVaeConfig(TINY_CONFIG);
    assert.deepEqual(c.block_out_channels, [8, 16]);
    assert.equal(c.decoder_block_out_channels, null);
    assert.equal(c.latent_channels, 4);
    assert.equal(c.norm_num_groups, 4);
    assert.deepEqual(c.patch_size, [2, 2]);
    assert.equal(vaeScaleFactor(c), 2);
    assert.equal(vaeScaleFactor(parseVaeConfig({ _class_name: "AutoencoderKLFlux2" })), 8);
  });

  test("a folder path reads its config.json", () => {
    assert.deepEqual(readVaeConfig(FOLDER), readVaeConfig(path.join(FOLDER, "config.json")));
  });

  test("an unknown _class_name is a clear error", () => {
    assert.throws(() => parseVaeConfig({ _class_name: "AutoencoderKL" }, "x/config.json"),
      /x\/config\.json: _class_name is "AutoencoderKL", expected "AutoencoderKLFlux2"/);
  });

  test("inconsistent or unsupported configs are rejected with the field named", () => {
    assert.throws(() => parseVaeConfig({ block_out_channels: [8, 16], down_block_types: ["DownEncoderBlock2D"] }), /down_block_types/);
    assert.throws(() => parseVaeConfig({ up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"] }), /AttnUpDecoderBlock2D/);
    assert.throws(() => parseVaeConfig({ act_fn: "relu" }), /act_fn/);
    assert.throws(() => parseVaeConfig({ norm_num_groups: 3 }), /norm_num_groups/);
    assert.throws(() => parseVaeConfig({ patch_size: [2] }), /patch_size/);
  });
});

describe("weights", () => {
  test("format detection from the keys", () => {
    const d = WeightSet.open(TINY_WEIGHTS);
    const b = WeightSet.open(BFL_WEIGHTS);
    try {
      assert.equal(VaeWeights.detectFormat(d), "diffusers");
      assert.equal(VaeWeights.detectFormat(b), "bfl");
    } finally {
      d.close();
      b.close();
    }
    const t = WeightSet.open(goldenPath("transformer/klein_tiny.safetensors"));
    try {
      assert.throws(() => VaeWeights.detectFormat(t), /not a VAE weight file/);
    } finally {
      t.close();
    }
  });

  test("the expected tensor list is exactly the tiny file's keys (minus bn.num_batches_tracked)", () => {
    const c = readVaeConfig(TINY_CONFIG);
    const set = WeightSet.open(TINY_WEIGHTS);
    try {
      const want = new Map(expectedVaeShapes(c));
      const keys = set.keys().filter((k) => k !== "bn.num_batches_tracked").sort();
      assert.deepEqual([...want.keys()].sort(), keys);
      for (const k of keys) assert.deepEqual(set.info(k).shape, want.get(k), k);
    } finally {
      set.close();
    }
  });

  test("BFL names: reversed up blocks, renames, 1×1-conv attention weights as zero-copy [C, C] views", () => {
    const set = WeightSet.open(BFL_WEIGHTS);
    try {
      const w = new VaeWeights(set, "bfl");
      assert.equal(w.storedName("decoder.up_blocks.0.upsamplers.0.conv.weight"), "decoder.up.1.upsample.conv.weight");
      assert.equal(w.storedName("decoder.up_blocks.1.resnets.0.conv_shortcut.bias"), "decoder.up.0.block.0.nin_shortcut.bias");
      assert.equal(w.storedName("encoder.down_blocks.0.downsamplers.0.conv.bias"), "encoder.down.0.downsample.conv.bias");
      assert.equal(w.storedName("encoder.mid_block.resnets.1.norm2.weight"), "encoder.mid.block_2.norm2.weight");
      assert.equal(w.storedName("decoder.mid_block.attentions.0.to_out.0.weight"), "decoder.mid.attn_1.proj_out.weight");
      assert.equal(w.storedName("decoder.conv_norm_out.bias"), "decoder.norm_out.bias");
      assert.equal(w.storedName("quant_conv.weight"), "encoder.quant_conv.weight");
      assert.equal(w.storedName("post_quant_conv.bias"), "decoder.post_quant_conv.bias");
      const q = w.source("encoder.mid_block.attentions.0.to_q.weight");
      const stored = set.info("encoder.mid.attn_1.q.weight");
      assert.deepEqual(stored.shape, [16, 16, 1, 1]);
      assert.equal(q.kind, "file");
      if (q.kind === "file") {
        assert.deepEqual(q.shape, [16, 16]);
        assert.equal(q.offset, stored.offset);
        assert.equal(q.byteLength, stored.byteLength);
      }
      w.check(readVaeConfig(path.join(FOLDER, "config.json")));
    } finally {
      set.close();
    }
  });
});

describe("golden cases", () => {
  test("vae/vae_tiny__encode: moments, latent_mean, latent_logvar", async () => {
    await runCase("vae/vae_tiny__encode");
  });

  test("vae/vae_tiny__decode: sample", async () => {
    await runCase("vae/vae_tiny__decode");
  });

  test("bfl/ae__encode (BFL ae.safetensors)", async () => {
    assert.equal(goldenCase("bfl/ae__encode").model.vae.format, "bfl");
    await runCase("bfl/ae__encode");
  });

  test("bfl/ae__decode (BFL ae.safetensors)", async () => {
    await runCase("bfl/ae__decode");
  });

  test("BFL file and diffusers folder give the same results on the same inputs", async () => {
    const image = host(loadTensors("bfl/ae__encode.inputs.safetensors").get("image"), "image");
    const latents = host(loadTensors("bfl/ae__decode.inputs.safetensors").get("latents"), "latents");
    const bfl = await Flux2Vae.fromFiles(backend, BFL_WEIGHTS, FOLDER); // format detected
    const dif = await Flux2Vae.fromFiles(backend, FOLDER, FOLDER);
    try {
      assert.equal(bfl.weights.format, "bfl");
      assert.equal(dif.weights.format, "diffusers");
      const [eb, ed] = [await bfl.encode(image), await dif.encode(image)];
      const [db, dd] = [await bfl.decode(latents), await dif.decode(latents)];
      seen["bfl-vs-folder/moments"] = maxAbsDiff(eb.moments.data as Float32Array, ed.moments.data as Float32Array);
      seen["bfl-vs-folder/sample"] = maxAbsDiff(db.data as Float32Array, dd.data as Float32Array);
      assert.ok(seen["bfl-vs-folder/moments"] <= 1e-6, `moments differ by ${seen["bfl-vs-folder/moments"]}`);
      assert.ok(seen["bfl-vs-folder/sample"] <= 1e-6, `sample differs by ${seen["bfl-vs-folder/sample"]}`);
      const bs = bfl.bnStats(), ds = dif.bnStats();
      assert.deepEqual(bs.mean, ds.mean);
      assert.deepEqual(bs.std, ds.std);
    } finally {
      await bfl.release();
      await dif.release();
    }
  });

  test("pipeline/bn_norm: latent_mode from the image, bn_mean, bn_std", async () => {
    const c = cases.find((x) => x.name === "pipeline/bn_norm")!;
    const vae = await Flux2Vae.fromFiles(backend, goldenPath(c.model.vae.weights), goldenPath(c.model.vae.config));
    try {
      const inputs = loadTensors(c.inputs);
      const expected = loadTensors(c.expected);
      const tol = c.tolerance.tensors;
      const r = await vae.encode(host(inputs.get("image"), "image"));
      expectClose(c.name, "latent_mode", r.mean, expected.get("latent_mode"), tol.latent_mode.abs);
      const { mean, std } = vae.bnStats();
      expectClose(c.name, "bn_mean", { data: mean, shape: [mean.length] }, expected.get("bn_mean"), tol.bn_mean.abs);
      expectClose(c.name, "bn_std", { data: std, shape: [std.length] }, expected.get("bn_std"), tol.bn_std.abs);
      // float32 sqrt(var + eps) reproduces the reference bit for bit.
      assert.deepEqual(std, expected.get("bn_std")!.data);
      assert.deepEqual(mean, expected.get("bn_mean")!.data);
    } finally {
      await vae.release();
    }
  });
});

describe("graphs", () => {
  /** A backend that records which graphs it was asked to build. */
  class Recording implements Backend {
    readonly name = "recording";
    readonly device = "cpu" as const;
    built: string[] = [];
    async createSession(graph: Graph) {
      this.built.push(graph.name);
      return backend.createSession(graph);
    }
  }

  test("graphs are built lazily, once each; dynamic batch and size", async () => {
    const rec = new Recording();
    const vae = await Flux2Vae.fromFiles(rec, TINY_WEIGHTS, TINY_CONFIG);
    try {
      assert.deepEqual(rec.built, []);
      const latents = host(loadTensors("vae/vae_tiny__decode.inputs.safetensors").get("latents"), "latents"); // (2, 4, 6, 5)
      const full = await vae.decode(latents);
      assert.deepEqual(rec.built, ["flux2_vae_decode"], "decoding must not build the encoder");
      // Batch element 1 alone, through the same session: same numbers.
      const per = latents.data.length / 2;
      const one = await vae.decode({ data: (latents.data as Float32Array).slice(per), shape: [1, 4, 6, 5] });
      assert.deepEqual(one.shape, [1, 3, 12, 10]);
      assert.ok(maxAbsDiff(one.data as Float32Array, (full.data as Float32Array).slice(full.data.length / 2)) <= 1e-6);
      // Another size (odd sides) through the same session.
      const other = await vae.decode({ data: new Float32Array(1 * 4 * 3 * 7).fill(0.5), shape: [1, 4, 3, 7] });
      assert.deepEqual(other.shape, [1, 3, 6, 14]);
      assert.deepEqual(rec.built, ["flux2_vae_decode"]);
      const enc = await vae.encode({ data: new Float32Array(2 * 3 * 8 * 10).fill(0.1), shape: [2, 3, 8, 10] });
      assert.deepEqual(enc.moments.shape, [2, 8, 4, 5]);
      assert.deepEqual(enc.mean.shape, [2, 4, 4, 5]);
      assert.deepEqual(enc.logvar.shape, [2, 4, 4, 5]);
      assert.deepEqual(rec.built, ["flux2_vae_decode", "flux2_vae_encode"]);
    } finally {
      await vae.release();
    }
  });

  test("latent_logvar is clamped to [-30, 20], moments are not", async () => {
    const file = tinyCopy("big_logvar.safetensors", (t) => {
      const b = new Float32Array(t.get("quant_conv.bias")!.data as Float32Array);
      b.set([100, -100, 100, -100], 4);
      t.set("quant_conv.bias", { dtype: "F32", shape: [8], data: b });
    });
    const vae = await Flux2Vae.fromFiles(backend, file, TINY_CONFIG);
    try {
      const image = host(loadTensors("vae/vae_tiny__encode.inputs.safetensors").get("image"), "image");
      const r = await vae.encode(image);
      const hw = 8 * 12;
      const lv = r.logvar.data as Float32Array, m = r.moments.data as Float32Array;
      for (let i = 0; i < hw; i++) {
        assert.equal(lv[i], 20);
        assert.equal(lv[hw + i], -30);
        assert.ok(m[4 * hw + i] > 50 && m[5 * hw + i] < -50);
      }
    } finally {
      await vae.release();
    }
  });

  test("inputs of the wrong shape are refused before running", async () => {
    const vae = await Flux2Vae.fromFiles(backend, TINY_WEIGHTS, TINY_CONFIG);
    try {
      await assert.rejects(vae.decode({ data: new Float32Array(3 * 4 * 4), shape: [1, 3, 4, 4] }), /latents must have shape \(B, C, h, w\) with 4 channels/);
      await assert.rejects(vae.encode({ data: new Float32Array(10), shape: [1, 3, 4, 4] }), /needs 48 values, got 10/);
    } finally {
      await vae.release();
    }
  });
});

describe("errors", () => {
  test("block_out_channels that disagree with the weights name the tensor", async () => {
    const cfg = writeConfig("wide.json", { block_out_channels: [8, 32] });
    await assert.rejects(Flux2Vae.fromFiles(backend, TINY_WEIGHTS, cfg), (e: Error) => {
      assert.match(e.message, /VAE weight "encoder\.down_blocks\.1\.resnets\.0\.conv1\.weight" has shape \[16,8,3,3\] but the config needs \[32,8,3,3\]/);
      assert.ok(e.message.includes(TINY_WEIGHTS), e.message);
      return true;
    });
    // The same mismatch in a BFL file names the BFL tensor too.
    await assert.rejects(Flux2Vae.fromFiles(backend, BFL_WEIGHTS, cfg, "bfl"),
      /"encoder\.down\.1\.block\.0\.conv1\.weight" \(diffusers "encoder\.down_blocks\.1\.resnets\.0\.conv1\.weight"\) has shape \[16,8,3,3\]/);
  });

  test("a config with more blocks than the weights is refused", async () => {
    const cfg = writeConfig("deep.json", {
      block_out_channels: [8, 16, 16], down_block_types: new Array(3).fill("DownEncoderBlock2D"), up_block_types: new Array(3).fill("UpDecoderBlock2D"),
    });
    await assert.rejects(Flux2Vae.fromFiles(backend, TINY_WEIGHTS, cfg), /the weights hold 2 encoder down blocks but the config needs 3/);
    await assert.rejects(Flux2Vae.fromFiles(backend, BFL_WEIGHTS, cfg), /has 2 decoder up blocks \(decoder\.up\.N\) but the config has 3/);
  });

  test("a weight file missing a key is a clear error naming the key", async () => {
    const file = tinyCopy("missing.safetensors", (t) => t.delete("decoder.mid_block.attentions.0.to_v.bias"));
    await assert.rejects(Flux2Vae.fromFiles(backend, file, TINY_CONFIG), (e: Error) => {
      assert.match(e.message, /missing VAE tensor "decoder\.mid_block\.attentions\.0\.to_v\.bias"/);
      assert.ok(e.message.includes(file), e.message);
      return true;
    });
  });

  test("a truncated weight file is an error naming the file", async () => {
    const file = path.join(tmp, "truncated.safetensors");
    fs.copyFileSync(TINY_WEIGHTS, file);
    fs.truncateSync(file, fs.statSync(file).size - 1000);
    await assert.rejects(Flux2Vae.fromFiles(backend, file, TINY_CONFIG), (e: Error) => {
      assert.ok(e.message.includes(file), e.message);
      assert.match(e.message, /truncated/);
      return true;
    });
  });

  test("wrong format for the file is a clear error", async () => {
    await assert.rejects(Flux2Vae.fromFiles(backend, TINY_WEIGHTS, TINY_CONFIG, "bfl"), /not a BFL autoencoder file/);
    await assert.rejects(Flux2Vae.fromFiles(backend, BFL_WEIGHTS, TINY_CONFIG, "diffusers"), /missing VAE tensor "encoder\.conv_in\.weight"|missing VAE tensor/);
  });
});
