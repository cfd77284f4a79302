// Tests of src/io/safetensors.ts: round trips, the golden checkpoint files,
// dtype conversion, FP8 dequantization and the errors a broken file must give.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SafetensorsFile, WeightSet, SafetensorsError, writeSafetensors, readAll, readTensorBytes, toFloat32, toTypedArray, dequantizeFp8, DTYPE_BYTES, type TensorToWrite } from "../src/io/safetensors.js";
import { f32ToBf16Bits, f16ToF32, f8e4m3ToF32 } from "../src/io/dtype.js";
import { goldenPath } from "./golden.js";

let tmp = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-safetensors-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function tmpFile(name: string): string {
  return path.join(tmp, name);
}

/** A file with a hand-made header, for the malformed cases the writer refuses to produce. */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0)): string {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength));
  const file = tmpFile(name);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

/** Assert that `fn` throws a SafetensorsError whose message contains every fragment. */
function throwsWith(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

function bits32(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

// ---------------------------------------------------------------------------

describe("round trip", () => {
  const f32 = new Float32Array([0, -0, 1.5, -2.25, 3.4028234663852886e38, 1e-45, Infinity, -Infinity]);
  const f64 = new Float64Array([Math.PI, -1e300, 5e-324]);
  const bf16Source = [1, -1, 1.0078125, 1.015625, 3.14159, -65504.5, 1e-40, 0];
  const bf16 = new Uint16Array(bf16Source.map(f32ToBf16Bits));
  // float16 bit patterns: 1, -2, max, smallest subnormal, +inf, -0
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000]);
  const i64 = new BigInt64Array([0n, -1n, 9007199254740993n, -(2n ** 63n), 2n ** 63n - 1n, 42n]);
  const u8 = new Uint8Array([0, 1, 127, 128, 255]);
  const tensors: Record<string, TensorToWrite> = {
    "a.f32": { dtype: "F32", shape: [2, 4], data: f32 },
    "b.f64": { dtype: "F64", shape: [3], data: f64 },
    "c.bf16": { dtype: "BF16", shape: [2, 2, 2], data: bf16 },
    "d.f16": { dtype: "F16", shape: [6], data: f16 },
    "e.i64": { dtype: "I64", shape: [3, 2], data: i64 },
    "f.u8": { dtype: "U8", shape: [5], data: u8 },
    "g.scalar": { dtype: "F32", shape: [], data: new Float32Array([7]) },
    "h.empty": { dtype: "F32", shape: [0, 3], data: new Float32Array(0) },
  };
  const metadata = { format: "pt", note: "ünïcödé ✓", json: JSON.stringify({ a: [1, 2] }) };
  let file = "";
  before(() => {
    file = tmpFile("roundtrip.safetensors");
    writeSafetensors(file, tensors, metadata);
  });

  test("readAll returns every tensor with dtype, shape and exact data", () => {
    const all = readAll(file);
    assert.deepEqual([...all.keys()].sort(), Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const got = all.get(name)!;
      assert.equal(got.dtype, t.dtype, name);
      assert.deepEqual(got.shape, t.shape, name);
      assert.deepEqual(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength),
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), name);
    }
    assert.equal(all.get("a.f32")!.data.constructor, Float32Array);
    assert.equal(all.get("b.f64")!.data.constructor, Float64Array);
    assert.equal(all.get("e.i64")!.data.constructor, BigInt64Array);
    assert.equal(all.get("f.u8")!.data.constructor, Uint8Array);
    assert.equal((all.get("e.i64")!.data as BigInt64Array)[2], 9007199254740993n);
  });

  test("metadata survives", () => {
    const f = SafetensorsFile.open(file);
    try {
      assert.deepEqual(f.metadata, metadata);
    } finally {
      f.close();
    }
    const set = WeightSet.open(file);
    try {
      assert.deepEqual(set.metadata(), metadata);
    } finally {
      set.close();
    }
  });

  test("float32 conversion of each dtype", () => {
    const set = WeightSet.open(file);
    try {
      assert.deepEqual(bits32(set.float32("a.f32")), bits32(f32));
      assert.deepEqual([...set.float32("b.f64")], [...f64].map(Math.fround));
      assert.deepEqual([...set.float32("d.f16")], [1, -2, 65504, 2 ** -24, Infinity, -0]);
      assert.deepEqual([...set.float32("e.i64")], [0, -1, 9007199254740992, -(2 ** 63), 2 ** 63, 42]);
      assert.deepEqual([...set.float32("f.u8")], [0, 1, 127, 128, 255]);
      assert.deepEqual([...set.float32("g.scalar")], [7]);
      assert.equal(set.float32("h.empty").length, 0);
    } finally {
      set.close();
    }
  });

  test("BF16 stores f32ToBf16Bits and reads back as the upper half of a float32", () => {
    const set = WeightSet.open(file);
    try {
      const raw = toTypedArray("BF16", set.bytes("c.bf16")) as Uint16Array;
      assert.deepEqual([...raw], bf16Source.map(f32ToBf16Bits));
      const back = set.float32("c.bf16");
      assert.deepEqual([...bits32(back)], [...raw].map((h) => (h << 16) >>> 0));
      // Values exactly representable in bfloat16 come back unchanged.
      assert.deepEqual([...back.slice(0, 4)], [1, -1, 1.0078125, 1.015625]);
    } finally {
      set.close();
    }
  });

  test("lazy layout: aligned offsets, readTensorBytes agrees with bytes()", () => {
    const f = SafetensorsFile.open(file);
    try {
      const size = fs.statSync(file).size;
      for (const name of f.keys()) {
        const t = f.info(name);
        assert.equal(t.offset % DTYPE_BYTES[t.dtype], 0, `${name} misaligned`);
        assert.ok(t.offset + t.byteLength <= size);
        assert.equal(t.file, fs.realpathSync(file));
        assert.deepEqual(readTensorBytes(t), f.bytes(name));
      }
    } finally {
      f.close();
    }
  });

  test("the header is padded so the data section starts 8-byte aligned", () => {
    // Different name lengths give every header length modulo 8.
    for (let n = 1; n <= 8; n++) {
      const file = tmpFile(`pad-${n}.safetensors`);
      writeSafetensors(file, { ["x".repeat(n)]: { dtype: "U8", shape: [1], data: new Uint8Array([n]) } });
      const headerLen = Number(fs.readFileSync(file).readBigUInt64LE(0));
      assert.equal((8 + headerLen) % 8, 0, `name length ${n}`);
      assert.deepEqual(readAll(file).get("x".repeat(n))!.data, new Uint8Array([n]));
    }
  });

  test("writer refuses data of the wrong size and reserved names", () => {
    throwsWith(() => writeSafetensors(tmpFile("bad.safetensors"), { x: { dtype: "F32", shape: [3], data: new Float32Array(2) } }), "bad.safetensors", '"x"', "needs 12");
    throwsWith(() => writeSafetensors(tmpFile("bad.safetensors"), { x: { dtype: "F32", shape: [-1], data: new Float32Array(1) } }), '"x"', "invalid shape");
    throwsWith(() => writeSafetensors(tmpFile("bad.safetensors"), { __metadata__: { dtype: "U8", shape: [0], data: new Uint8Array(0) } }), "reserved");
    assert.equal(fs.existsSync(tmpFile("bad.safetensors")), false);
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.includes(".tmp-")), [], "no temporary files left behind");
  });
});

// ---------------------------------------------------------------------------

describe("dtype conversion", () => {
  test("f8e4m3ToF32 known values", () => {
    assert.equal(f8e4m3ToF32(0x38), 1);
    assert.equal(f8e4m3ToF32(0x7e), 448);
    assert.equal(f8e4m3ToF32(0x01), 2 ** -9);
    assert.equal(f8e4m3ToF32(0xb8), -1);
    assert.ok(Number.isNaN(f8e4m3ToF32(0x7f)));
    assert.ok(Number.isNaN(f8e4m3ToF32(0xff)));
    assert.equal(f8e4m3ToF32(0x00), 0);
    assert.ok(Object.is(f8e4m3ToF32(0x80), -0));
    assert.equal(f8e4m3ToF32(0x08), 2 ** -6, "smallest normal");
    assert.equal(f8e4m3ToF32(0x07), 7 * 2 ** -9, "largest subnormal");
    assert.equal(f8e4m3ToF32(0x3c), 1.5);
    assert.equal(f8e4m3ToF32(0xfe), -448);
  });

  test("toFloat32 F8_E4M3 matches f8e4m3ToF32 for all 256 bytes", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const out = toFloat32("F8_E4M3", all);
    for (let b = 0; b < 256; b++) assert.ok(Object.is(out[b], Math.fround(f8e4m3ToF32(b))), `byte ${b}`);
  });

  test("f16ToF32 known values", () => {
    assert.equal(f16ToF32(0x3c00), 1);
    assert.equal(f16ToF32(0x3555), 0.333251953125);
    assert.equal(f16ToF32(0x0400), 2 ** -14);
    assert.equal(f16ToF32(0xfc00), -Infinity);
    assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  });

  test("f32ToBf16Bits rounds to nearest even", () => {
    assert.equal(f32ToBf16Bits(1), 0x3f80);
    assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80, "tie goes to even");
    assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82, "tie goes to even");
    assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81, "above the tie rounds up");
    assert.equal(f32ToBf16Bits(-2), 0xc000);
    assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
    assert.equal(f32ToBf16Bits(3.4028234663852886e38), 0x7f80, "max float32 rounds to inf");
    assert.equal(f32ToBf16Bits(NaN), 0x7fc0);
  });

  test("toFloat32 rejects a byte count that is not a whole number of elements", () => {
    throwsWith(() => toFloat32("BF16", new Uint8Array(3)), "BF16", "3 bytes");
  });
});

// ---------------------------------------------------------------------------

describe("golden checkpoints", () => {
  const manifest = JSON.parse(fs.readFileSync(goldenPath("manifest.json"), "utf8")) as {
    files: { file: string; tensors?: Record<string, { dtype: string; shape: number[] }> }[];
  };
  const torchNames: Record<string, string> = { bfloat16: "BF16", float32: "F32", float64: "F64", int64: "I64", uint8: "U8" };
  function manifestTensors(rel: string): Record<string, { dtype: string; shape: number[] }> {
    const entry = manifest.files.find((f) => f.file === rel);
    assert.ok(entry?.tensors, `manifest lists ${rel}`);
    return entry.tensors;
  }
  function assertMatchesManifest(f: SafetensorsFile, rel: string): void {
    const expected = manifestTensors(rel);
    assert.deepEqual(f.keys().sort(), Object.keys(expected).sort(), rel);
    for (const [name, t] of Object.entries(expected)) {
      assert.equal(f.info(name).dtype, torchNames[t.dtype] ?? t.dtype, `${rel} ${name}`);
      assert.deepEqual(f.info(name).shape, t.shape, `${rel} ${name}`);
    }
  }

  const distilledRel = "checkpoints/klein_distilled/transformer/diffusion_pytorch_model.safetensors";
  const baseDir = "checkpoints/klein_base/transformer";
  const baseIndexRel = `${baseDir}/diffusion_pytorch_model.safetensors.index.json`;

  test("klein_distilled transformer: BF16 headers match the manifest, conversion is the exact bit pattern", () => {
    const f = SafetensorsFile.open(goldenPath(distilledRel));
    try {
      assertMatchesManifest(f, distilledRel);
      assert.equal(f.metadata.format, "pt");
      for (const name of f.keys()) {
        assert.equal(f.info(name).dtype, "BF16");
        const raw = toTypedArray("BF16", f.bytes(name)) as Uint16Array;
        const values = toFloat32("BF16", f.bytes(name));
        assert.equal(values.length, raw.length);
        const b = bits32(values);
        for (let i = 0; i < raw.length; i++) {
          assert.equal(b[i], (raw[i] << 16) >>> 0, `${name}[${i}]`);
          assert.ok(Number.isFinite(values[i]), `${name}[${i}] finite`);
          assert.equal(f32ToBf16Bits(values[i]), raw[i], `${name}[${i}] round trips through f32ToBf16Bits`);
        }
      }
    } finally {
      f.close();
    }
  });

  test("the BFL single file holds the same BF16 weights under BFL key names", () => {
    // There is no float32 copy of the BF16 checkpoint; the BFL-named twin is the cross-check.
    const diffusers = WeightSet.open(goldenPath(distilledRel));
    const bfl = WeightSet.open(goldenPath("checkpoints/klein_distilled/flux-2-klein-tiny.safetensors"));
    try {
      assert.deepEqual(bits32(bfl.float32("txt_in.weight")), bits32(diffusers.float32("context_embedder.weight")));
      assert.deepEqual(bits32(bfl.float32("img_in.weight")), bits32(diffusers.float32("x_embedder.weight")));
    } finally {
      diffusers.close();
      bfl.close();
    }
  });

  test("klein_base transformer: every indexed key resolves to its shard", () => {
    const indexPath = goldenPath(baseIndexRel);
    const index = JSON.parse(fs.readFileSync(indexPath, "utf8")) as { weight_map: Record<string, string> };
    const set = WeightSet.open(indexPath);
    try {
      assert.equal(set.files.length, 2);
      assert.deepEqual(set.keys().sort(), Object.keys(index.weight_map).sort());
      for (const [name, shard] of Object.entries(index.weight_map)) {
        const t = set.info(name);
        assert.equal(path.basename(t.file), shard, name);
        assert.equal(set.bytes(name).byteLength, t.byteLength, name);
        const shardTensors = manifestTensors(`${baseDir}/${shard}`);
        assert.equal(t.dtype, torchNames[shardTensors[name].dtype], name);
        assert.deepEqual(t.shape, shardTensors[name].shape, name);
        // F32 read through float32() is the raw little-endian bytes, bit for bit.
        assert.deepEqual(Buffer.from(set.float32(name).buffer), Buffer.from(set.bytes(name).buffer, 0, t.byteLength), name);
      }
      assert.equal(set.metadata().format, "pt");
    } finally {
      set.close();
    }
  });

  test("opening the folder finds the shard index", () => {
    const set = WeightSet.open(goldenPath(baseDir));
    try {
      assert.equal(set.source, goldenPath(baseIndexRel));
      assert.equal(set.keys().length, 49);
    } finally {
      set.close();
    }
  });

  test("golden .expected files read with readAll (F64, F32, I64, U8)", () => {
    const rel = "checkpoints/klein_base__t2i.expected.safetensors";
    const all = readAll(goldenPath(rel));
    const expected = manifestTensors(rel);
    assert.equal(all.size, Object.keys(expected).length);
    for (const [name, t] of Object.entries(expected)) {
      const got = all.get(name)!;
      assert.equal(got.dtype, torchNames[t.dtype], name);
      assert.equal(got.data.length, t.shape.reduce((a, b) => a * b, 1), name);
    }
  });
});

// ---------------------------------------------------------------------------

describe("FP8 dequantization", () => {
  // Rows: [1, 448, 2^-9], [-1, 1.5, 0]
  const fp8 = new Uint8Array([0x38, 0x7e, 0x01, 0xb8, 0x3c, 0x00]);
  const decoded = [1, 448, 2 ** -9, -1, 1.5, 0];

  function fp8File(name: string, scale: TensorToWrite, extra: Record<string, TensorToWrite> = {}): WeightSet {
    const file = tmpFile(name);
    writeSafetensors(file, {
      "blk.linear.weight": { dtype: "F8_E4M3", shape: [2, 3], data: fp8 },
      "blk.linear.weight_scale": scale,
      ...extra,
    });
    return WeightSet.open(file);
  }

  test("per-tensor scalar scale", () => {
    for (const shape of [[], [1]]) {
      const set = fp8File(`fp8-scalar-${shape.length}.safetensors`, { dtype: "F32", shape, data: new Float32Array([0.5]) });
      try {
        assert.deepEqual([...dequantizeFp8(set, "blk.linear.weight")], decoded.map((v) => v * 0.5));
      } finally {
        set.close();
      }
    }
  });

  test("per-row scale, [out] and [out, 1]", () => {
    for (const shape of [[2], [2, 1]]) {
      const set = fp8File(`fp8-row-${shape.length}.safetensors`, { dtype: "F32", shape, data: new Float32Array([2, 0.25]) });
      try {
        const expected = decoded.map((v, i) => Math.fround(v * (i < 3 ? 2 : 0.25)));
        assert.deepEqual([...dequantizeFp8(set, "blk.linear.weight")], expected);
      } finally {
        set.close();
      }
    }
  });

  test("a scale that fits neither layout is a clear error", () => {
    const set = fp8File("fp8-badscale.safetensors", { dtype: "F32", shape: [3], data: new Float32Array([1, 2, 3]) });
    try {
      throwsWith(() => dequantizeFp8(set, "blk.linear.weight"), "fp8-badscale.safetensors", "blk.linear.weight_scale", "[3]", "[2,3]");
    } finally {
      set.close();
    }
  });

  test("missing scale and non-FP8 weight are clear errors", () => {
    const set = fp8File("fp8-noscale.safetensors", { dtype: "F32", shape: [], data: new Float32Array([1]) }, {
      "other.weight": { dtype: "F8_E4M3", shape: [1], data: new Uint8Array([0x38]) },
      "plain.weight": { dtype: "F32", shape: [1], data: new Float32Array([1]) },
    });
    try {
      throwsWith(() => dequantizeFp8(set, "other.weight"), "fp8-noscale.safetensors", "other.weight_scale");
      throwsWith(() => dequantizeFp8(set, "plain.weight"), "plain.weight", "not FP8");
      throwsWith(() => dequantizeFp8(set, "nope.weight"), "nope.weight", "missing tensor");
    } finally {
      set.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe("errors", () => {
  function goodFile(name: string): string {
    const file = tmpFile(name);
    writeSafetensors(file, {
      "first.weight": { dtype: "F32", shape: [4, 4], data: new Float32Array(16).fill(1) },
      "second.weight": { dtype: "U8", shape: [64], data: new Uint8Array(64).fill(2) },
    });
    return file;
  }

  test("truncated data names the file and the tensor and says to download again", () => {
    const file = goodFile("truncated-data.safetensors");
    fs.truncateSync(file, fs.statSync(file).size - 10);
    throwsWith(() => SafetensorsFile.open(file), "truncated-data.safetensors", '"second.weight"', "past the end", "download it again");
    throwsWith(() => WeightSet.open(file), "truncated-data.safetensors", '"second.weight"');
  });

  test("truncated inside the header", () => {
    const file = goodFile("truncated-header.safetensors");
    fs.truncateSync(file, 20);
    throwsWith(() => SafetensorsFile.open(file), "truncated-header.safetensors", "truncated", "download it again");
    fs.truncateSync(file, 3);
    throwsWith(() => SafetensorsFile.open(file), "truncated-header.safetensors", "no header");
  });

  test("a file that shrinks after opening fails on read, naming the tensor", () => {
    const file = goodFile("shrinks.safetensors");
    const f = SafetensorsFile.open(file);
    try {
      fs.truncateSync(file, fs.statSync(file).size - 10);
      throwsWith(() => f.bytes("second.weight"), "shrinks.safetensors", '"second.weight"', "unexpected end of file");
    } finally {
      f.close();
    }
  });

  test("garbage header", () => {
    const garbage = tmpFile("garbage.safetensors");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(16n);
    fs.writeFileSync(garbage, Buffer.concat([len, Buffer.from("\x00\xffnot json at all")]));
    throwsWith(() => SafetensorsFile.open(garbage), "garbage.safetensors", "not JSON");
    // A huge length prefix (e.g. a text file) must not try to allocate it.
    fs.writeFileSync(garbage, "this is a README, not weights\n");
    throwsWith(() => SafetensorsFile.open(garbage), "garbage.safetensors", "corrupt or truncated");
  });

  test("a header that is not a JSON object", () => {
    for (const [i, header] of ["[]", "null", "42", '"x"'].entries()) {
      const file = rawFile(`notobject-${i}.safetensors`, header);
      throwsWith(() => SafetensorsFile.open(file), `notobject-${i}.safetensors`, "expected an object");
    }
    const entry = rawFile("badentry.safetensors", { w: [1, 2] });
    throwsWith(() => SafetensorsFile.open(entry), "badentry.safetensors", '"w"', "expected {dtype");
    const meta = rawFile("badmeta.safetensors", { __metadata__: { n: 1 } });
    throwsWith(() => SafetensorsFile.open(meta), "badmeta.safetensors", "__metadata__");
  });

  test("unknown dtype names the file, the tensor and the dtype", () => {
    const file = rawFile("unknown-dtype.safetensors", { "blk.w": { dtype: "F4_E2M1", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2));
    throwsWith(() => SafetensorsFile.open(file), "unknown-dtype.safetensors", '"blk.w"', "F4_E2M1", "convert");
    // Inherited object properties are not dtypes.
    const proto = rawFile("proto-dtype.safetensors", { w: { dtype: "toString", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    throwsWith(() => SafetensorsFile.open(proto), "proto-dtype.safetensors", '"w"', "unknown dtype");
  });

  test("negative, non-integer or missing shapes", () => {
    const cases: unknown[] = [[-2, -2], [1.5], ["2"], undefined];
    cases.forEach((shape, i) => {
      const file = rawFile(`shape-${i}.safetensors`, { w: { dtype: "U8", shape, data_offsets: [0, 4] } }, new Uint8Array(4));
      throwsWith(() => SafetensorsFile.open(file), `shape-${i}.safetensors`, '"w"', "invalid shape");
    });
  });

  test("bad, overlapping, gapped or out-of-order data_offsets", () => {
    const data = new Uint8Array(8);
    const reversed = rawFile("offs-reversed.safetensors", { w: { dtype: "U8", shape: [4], data_offsets: [4, 0] } }, data);
    throwsWith(() => SafetensorsFile.open(reversed), "offs-reversed.safetensors", '"w"', "invalid data_offsets");
    const missing = rawFile("offs-missing.safetensors", { w: { dtype: "U8", shape: [4] } }, data);
    throwsWith(() => SafetensorsFile.open(missing), "offs-missing.safetensors", '"w"', "invalid data_offsets");
    const sizeMismatch = rawFile("offs-size.safetensors", { w: { dtype: "F32", shape: [4], data_offsets: [0, 8] } }, data);
    throwsWith(() => SafetensorsFile.open(sizeMismatch), "offs-size.safetensors", '"w"', "needs 16");
    const overlap = rawFile("offs-overlap.safetensors", {
      a: { dtype: "U8", shape: [6], data_offsets: [0, 6] },
      b: { dtype: "U8", shape: [4], data_offsets: [4, 8] },
    }, data);
    throwsWith(() => SafetensorsFile.open(overlap), "offs-overlap.safetensors", '"b"', "overlaps", '"a"');
    const gap = rawFile("offs-gap.safetensors", { a: { dtype: "U8", shape: [4], data_offsets: [4, 8] } }, data);
    throwsWith(() => SafetensorsFile.open(gap), "offs-gap.safetensors", '"a"', "gap");
    // Tensors listed out of order in the header but tiling the data are fine.
    const shuffled = rawFile("offs-shuffled.safetensors", {
      b: { dtype: "U8", shape: [4], data_offsets: [4, 8] },
      a: { dtype: "U8", shape: [4], data_offsets: [0, 4] },
    }, Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    const f = SafetensorsFile.open(shuffled);
    try {
      assert.deepEqual([...f.bytes("a")], [0, 1, 2, 3]);
      assert.deepEqual([...f.bytes("b")], [4, 5, 6, 7]);
    } finally {
      f.close();
    }
  });

  test("a shard index naming a missing shard", () => {
    const dir = path.join(tmp, "sharded-missing");
    fs.mkdirSync(dir);
    writeSafetensors(path.join(dir, "model-00001-of-00002.safetensors"), { a: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
    const index = path.join(dir, "model.safetensors.index.json");
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" } }));
    throwsWith(() => WeightSet.open(index), "model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing", "download");
    throwsWith(() => WeightSet.open(dir), "model-00002-of-00002.safetensors", "missing");
  });

  test("a shard index that disagrees with its shards", () => {
    const dir = path.join(tmp, "sharded-wrong");
    fs.mkdirSync(dir);
    writeSafetensors(path.join(dir, "s1.safetensors"), { a: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
    writeSafetensors(path.join(dir, "s2.safetensors"), { b: { dtype: "F32", shape: [1], data: new Float32Array([2]) } });
    const index = path.join(dir, "m.safetensors.index.json");
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: "s1.safetensors", b: "s1.safetensors", c: "s2.safetensors" } }));
    throwsWith(() => WeightSet.open(index), "m.safetensors.index.json", '"b"', "s1.safetensors");
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: "s1.safetensors", b: "s2.safetensors", c: "s2.safetensors" } }));
    throwsWith(() => WeightSet.open(index), "m.safetensors.index.json", '"c"', "not found");
    fs.writeFileSync(index, "{ nope");
    throwsWith(() => WeightSet.open(index), "m.safetensors.index.json", "cannot read shard index");
    fs.writeFileSync(index, JSON.stringify({ metadata: {} }));
    throwsWith(() => WeightSet.open(index), "m.safetensors.index.json", "weight_map");
  });

  test("the same tensor in two files of a folder", () => {
    const dir = path.join(tmp, "duplicates");
    fs.mkdirSync(dir);
    writeSafetensors(path.join(dir, "model.safetensors"), { a: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
    writeSafetensors(path.join(dir, "model.fp16.safetensors"), { a: { dtype: "F16", shape: [1], data: new Uint16Array([0x3c00]) } });
    throwsWith(() => WeightSet.open(dir), '"a"', "model.safetensors", "model.fp16.safetensors");
  });

  test("a missing tensor name", () => {
    const file = goodFile("missing-name.safetensors");
    const set = WeightSet.open(file);
    try {
      assert.equal(set.has("third.weight"), false);
      throwsWith(() => set.info("third.weight"), "missing-name.safetensors", '"third.weight"', "missing tensor");
      throwsWith(() => set.bytes("third.weight"), '"third.weight"');
      throwsWith(() => set.float32("third.weight"), '"third.weight"');
    } finally {
      set.close();
    }
    const f = SafetensorsFile.open(file);
    f.close();
    throwsWith(() => f.info("third.weight"), "missing-name.safetensors", '"third.weight"');
    throwsWith(() => f.bytes("first.weight"), "closed", '"first.weight"');
  });

  test("missing files", () => {
    throwsWith(() => SafetensorsFile.open(tmpFile("absent.safetensors")), "absent.safetensors", "cannot open");
    throwsWith(() => WeightSet.open(tmpFile("absent.safetensors")), "absent.safetensors", "no such file");
    const empty = path.join(tmp, "empty-folder");
    fs.mkdirSync(empty);
    throwsWith(() => WeightSet.open(empty), "empty-folder", "no .safetensors files");
  });
});
