// Reference-image preparation (docs/FLUX2-spec.md §6.3, §6.5 step 1) and the Pillow-exact
// Lanczos resampler (docs/FLUX2-spec.md §10 item 13).
//
// Expected resampler outputs in testdata/resize/lanczos.json come from Pillow's
// own Resample.c compiled unmodified into a small C oracle
// (testdata/resize/gen/make-fixtures.mjs); no Python or C is needed here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { lanczosCoefficients, resizeLanczos } from "../src/pipeline/resize.js";
import {
  BFL_SINGLE_REFERENCE_PIXEL_CAP,
  MAX_REFERENCES,
  REFERENCE_PIXEL_CAP,
  ReferenceImageError,
  cappedSize,
  checkReferenceCount,
  prepareInpaintImage,
  prepareReference,
  prepareReferences,
  preparedSize,
  recommendedReferences,
  referencePixelCap,
  resizeExact,
  validateReference,
  type ReferenceImage,
} from "../src/pipeline/reference.js";
import { goldenPath, loadTensors, repoRoot } from "./golden.js";

const fixtureFile = path.join(repoRoot, "testdata", "resize", "lanczos.json");

interface LanczosCase {
  name: string;
  kind: "noise" | "edges";
  w: number;
  h: number;
  channels: number;
  newW: number;
  newH: number;
  seed: number;
  inputSha256: string;
  outputSha256: string;
  output?: string;
}
interface Fixture {
  cases: LanczosCase[];
  capped: [number, number, number, number, number][];
}
const fixture: Fixture = JSON.parse(fs.readFileSync(fixtureFile, "utf8"));

/** Same generator as testdata/resize/gen/make-fixtures.mjs (input hashes guard against drift). */
function pattern(kind: string, w: number, h: number, ch: number, seed: number): Uint8Array {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const out = new Uint8Array(w * h * ch);
  let i = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < ch; c++, i++) {
        if (kind === "noise") out[i] = next() & 255;
        else {
          const g = Math.floor((x * 255) / Math.max(1, w - 1) + (y * 97) / Math.max(1, h - 1)) + c * 50;
          out[i] = (g + (((x >> 3) + (y >> 3)) & 1 ? 90 : 0) + (next() & 15)) & 255;
        }
      }
  return out;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function caseInput(c: LanczosCase): Uint8Array {
  const src = pattern(c.kind, c.w, c.h, c.channels, c.seed);
  assert.equal(sha(src), c.inputSha256, `${c.name}: input generator drifted from the fixture generator`);
  return src;
}

function firstDiff(a: Uint8Array, b: Uint8Array): string {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`;
  return a.length === b.length ? "equal" : `lengths ${a.length} vs ${b.length}`;
}

function rgbImage(w: number, h: number, seed = 1, kind: "noise" | "edges" = "edges"): ReferenceImage {
  return { rgb: pattern(kind, w, h, 3, seed), width: w, height: h };
}

// ---------------------------------------------------------------------------
// Resampler: bit-exact against Pillow

for (const c of fixture.cases) {
  test(`resizeLanczos equals Pillow: ${c.name} (${c.w}×${c.h}×${c.channels} → ${c.newW}×${c.newH})`, () => {
    const src = caseInput(c);
    const got = resizeLanczos(src, c.w, c.h, c.channels, c.newW, c.newH);
    assert.equal(got.length, c.newW * c.newH * c.channels);
    if (c.output !== undefined) {
      const exp = new Uint8Array(Buffer.from(c.output, "base64"));
      assert.ok(Buffer.from(got).equals(Buffer.from(exp)), `${c.name}: ${firstDiff(got, exp)}`);
    }
    assert.equal(sha(got), c.outputSha256);
  });
}

test("resizeLanczos: the tall-image rule (vertical pass first) matters and is followed", () => {
  const c = fixture.cases.find((x) => x.name === "rgb_tall_vertical_first")!;
  const src = caseInput(c);
  const horizontalFirst = resizeLanczos(resizeLanczos(src, c.w, c.h, 3, c.newW, c.h), c.newW, c.h, 3, c.newW, c.newH);
  assert.notEqual(sha(horizontalFirst), c.outputSha256);
  assert.equal(sha(resizeLanczos(src, c.w, c.h, 3, c.newW, c.newH)), c.outputSha256);
});

test("resizeLanczos: same size is a copy, not an alias", () => {
  const src = pattern("noise", 13, 7, 3, 5);
  const out = resizeLanczos(src, 13, 7, 3, 13, 7);
  assert.deepEqual(out, src);
  assert.notEqual(out.buffer, src.buffer);
});

test("resizeLanczos: constant images stay constant (fixed-point weights sum to 2^22 within rounding)", () => {
  for (const v of [0, 1, 77, 128, 254, 255]) {
    for (const [w, h, nw, nh] of [
      [17, 9, 5, 31],
      [64, 64, 1, 1],
      [3, 5, 100, 2],
      [250, 40, 33, 40],
    ]) {
      const out = resizeLanczos(new Uint8Array(w * h * 3).fill(v), w, h, 3, nw, nh);
      assert.ok(out.every((x) => x === v), `${v}: ${w}×${h} → ${nw}×${nh}`);
    }
  }
});

test("resizeLanczos: hand-derived 2→1 case is Pillow's round-half-up mean", () => {
  // scale 2, support 6, center 1: taps x = 0, 1 at filter arguments ∓0.25, equal
  // weights 0.5 → 2^21 each; out = (2^21 + 2^21·a + 2^21·b) >> 22 = floor((a + b + 1) / 2).
  const c = lanczosCoefficients(2, 1);
  assert.deepEqual([c.start[0], c.count[0], c.k[0], c.k[1]], [0, 2, 1 << 21, 1 << 21]);
  for (const [a, b] of [
    [0, 255],
    [10, 13],
    [10, 12],
    [255, 255],
    [0, 1],
  ]) {
    assert.deepEqual([...resizeLanczos(Uint8Array.of(a, b), 2, 1, 1, 1, 1)], [Math.floor((a + b + 1) / 2)]);
  }
});

test("resizeLanczos: coefficient windows follow Pillow's bounds rule", () => {
  // Downscale 100 → 10: scale 10, support 30, ksize 61. Output 0: center 5 →
  // [trunc(−24.5) → 0, trunc(35.5) = 35); output 5: center 55 → [25, 85);
  // output 9: center 95 → [65, min(100, 125)).
  const d = lanczosCoefficients(100, 10);
  assert.equal(d.ksize, 61);
  assert.deepEqual([d.start[0], d.count[0]], [0, 35]);
  assert.deepEqual([d.start[5], d.count[5]], [25, 60]);
  assert.deepEqual([d.start[9], d.count[9]], [65, 35]);
  // Upscale 4 → 8: scale 0.5, support 3; output 0: center 0.25 → [0, 3); output 7: center 3.75 → [1, 4).
  const u = lanczosCoefficients(4, 8);
  assert.equal(u.ksize, 7);
  assert.deepEqual([u.start[0], u.count[0]], [0, 3]);
  assert.deepEqual([u.start[7], u.count[7]], [1, 3]);
  // Every row of weights sums to 2^22 within the rounding of its taps.
  for (const c of [d, u, lanczosCoefficients(1000, 17), lanczosCoefficients(17, 1000)]) {
    for (let i = 0; i < c.start.length; i++) {
      let s = 0;
      for (let j = 0; j < c.count[i]; j++) s += c.k[i * c.ksize + j];
      assert.ok(Math.abs(s - (1 << 22)) <= c.count[i], `sum ${s}`);
    }
  }
});

test("resizeLanczos: argument checks", () => {
  assert.throws(() => resizeLanczos(new Uint8Array(12), 2, 2, 3, 0, 1), RangeError);
  assert.throws(() => resizeLanczos(new Uint8Array(11), 2, 2, 3, 1, 1), /expected 2×2×3/);
  assert.throws(() => resizeLanczos(new Uint8Array(8), 2, 2, 2, 1, 1), /premultiplied/);
});

// ---------------------------------------------------------------------------
// Sizes

test("cappedSize matches Python's int(w·sqrt(cap/(w·h)))", () => {
  for (const [w, h, cap, ew, eh] of fixture.capped) {
    assert.deepEqual(cappedSize(w, h, cap), { width: ew, height: eh }, `${w}×${h} cap ${cap}`);
  }
});

test("referencePixelCap: diffusers 1024² always; BFL 2024² for a single reference", () => {
  assert.equal(referencePixelCap(1), REFERENCE_PIXEL_CAP);
  assert.equal(referencePixelCap(3, "diffusers"), 1024 * 1024);
  assert.equal(referencePixelCap(1, "bfl"), BFL_SINGLE_REFERENCE_PIXEL_CAP);
  assert.equal(referencePixelCap(1, "bfl"), 2024 * 2024);
  assert.equal(referencePixelCap(2, "bfl"), 1024 * 1024);
});

test("prepareReference: documented output sizes for several aspect ratios (multiple 16)", () => {
  const cases: [number, number, number, number, boolean][] = [
    // w, h → W, H, resized?
    [512, 512, 512, 512, false], // square, already a multiple: untouched
    [1024, 1024, 1024, 1024, false], // exactly the cap: no resize
    [1920, 1080, 1360, 768, true], // 16:9 → 1365×768 → crop
    [1080, 1920, 768, 1360, true], // 9:16
    [1200, 400, 1200, 400, false], // 3:1 under the cap
    [3000, 1000, 1760, 576, true], // 3:1 over the cap → 1773×591
    [1000, 563, 992, 560, false], // ≈16:9 odd size
    [333, 777, 320, 768, false], // odd sizes
    [65, 64, 64, 64, false],
    [64, 512, 64, 512, false], // 8:1 exactly is allowed
  ];
  for (const [w, h, W, H, resized] of cases) {
    assert.deepEqual(preparedSize(w, h, { multiple: 16 }), { width: W, height: H }, `${w}×${h}`);
    // Pixel work only for the smaller ones (the big ones are covered below).
    if (w * h <= 1024 * 1024) {
      const r = prepareReference(rgbImage(w, h), { multiple: 16 });
      assert.deepEqual([r.image.width, r.image.height], [W, H], `${w}×${h}`);
      assert.equal(r.image.rgb.length, W * H * 3);
      assert.equal(r.resizedTo, null);
      assert.deepEqual(r.original, { width: w, height: h });
      assert.equal(resized, false);
    }
  }
});

test("prepareReference: centre crop window and pixels", () => {
  const img = rgbImage(333, 777, 3, "noise");
  const r = prepareReference(img, { multiple: 16 });
  // left = (333 − 320)//2 = 6, top = (777 − 768)//2 = 4
  assert.deepEqual(r.cropped, { left: 6, top: 4, width: 320, height: 768 });
  for (const [x, y] of [
    [0, 0],
    [319, 0],
    [0, 767],
    [319, 767],
    [123, 456],
  ]) {
    const a = ((y + 4) * 333 + x + 6) * 3;
    const b = (y * 320 + x) * 3;
    assert.deepEqual([...r.image.rgb.subarray(b, b + 3)], [...img.rgb.subarray(a, a + 3)]);
  }
  // Nothing to cut: a copy, reported as not cropped.
  const sq = rgbImage(128, 96);
  const s = prepareReference(sq, { multiple: 16 });
  assert.equal(s.cropped, null);
  assert.deepEqual(s.image.rgb, sq.rgb);
  assert.notEqual(s.image.rgb, sq.rgb);
});

test("prepareReference: oversize 2000×1500 is Lanczos-resized to 1182×886 (Pillow-exact) then cropped", () => {
  const c = fixture.cases.find((x) => x.name === "rgb_cap_2000x1500")!;
  const img: ReferenceImage = { rgb: caseInput(c), width: 2000, height: 1500 };
  const r = prepareReference(img, { multiple: 16 });
  assert.deepEqual(r.original, { width: 2000, height: 1500 });
  assert.deepEqual(r.resizedTo, { width: 1182, height: 886 });
  assert.ok(1182 * 886 <= 1024 * 1024);
  // left = (1182 − 1168)//2 = 7, top = (886 − 880)//2 = 3
  assert.deepEqual(r.cropped, { left: 7, top: 3, width: 1168, height: 880 });
  assert.deepEqual([r.image.width, r.image.height], [1168, 880]);
  // The crop of the Pillow-exact resize.
  const full = resizeExact(img, 1182, 886);
  assert.equal(sha(full.rgb), c.outputSha256);
  for (const [x, y] of [
    [0, 0],
    [1167, 879],
    [600, 400],
  ]) {
    const a = ((y + 3) * 1182 + x + 7) * 3;
    const b = (y * 1168 + x) * 3;
    assert.deepEqual([...r.image.rgb.subarray(b, b + 3)], [...full.rgb.subarray(a, a + 3)]);
  }
  // BFL's single-reference cap (2024²) leaves it alone.
  const bfl = prepareReference(img, { multiple: 16, pixelCap: referencePixelCap(1, "bfl") });
  assert.equal(bfl.resizedTo, null);
  assert.deepEqual([bfl.image.width, bfl.image.height], [2000, 1488]);
  assert.deepEqual(bfl.cropped, { left: 0, top: 6, width: 2000, height: 1488 });
});

test("prepareReference: 16:9 4096×2304 → 1365×768 → 1360×768", () => {
  const c = fixture.cases.find((x) => x.name === "rgb_cap_4096x2304")!;
  const img: ReferenceImage = { rgb: caseInput(c), width: 4096, height: 2304 };
  const r = prepareReference(img, { multiple: 16 });
  assert.deepEqual(r.resizedTo, { width: 1365, height: 768 });
  assert.deepEqual(r.cropped, { left: 2, top: 0, width: 1360, height: 768 });
  const full = resizeExact(img, 1365, 768);
  assert.equal(sha(full.rgb), c.outputSha256);
});

test("prepareInpaintImage: cap resize then a plain resize (no crop) to multiples", () => {
  const img = rgbImage(100, 70, 4, "noise");
  const r = prepareInpaintImage(img, { multiple: 16 });
  assert.equal(r.resizedTo, null);
  assert.deepEqual([r.image.width, r.image.height], [96, 64]);
  assert.deepEqual(r.image.rgb, resizeLanczos(img.rgb, 100, 70, 3, 96, 64));
  const exact = prepareInpaintImage(rgbImage(96, 64), { multiple: 16 });
  assert.deepEqual(exact.image.rgb, rgbImage(96, 64).rgb);
});

// ---------------------------------------------------------------------------
// Golden: diffusers' preprocessed reference tensors (tiny VAE: multiple 4)

test("golden klein_multi_ref: cropped references equal diffusers' ref{n}_preprocessed", async (t) => {
  const expected = loadTensors("edit/klein_multi_ref.expected.safetensors");
  const inputs = loadTensors("edit/klein_multi_ref.inputs.safetensors");
  if (!expected.size) return t.skip("golden fixture missing");
  const f = Math.fround;
  const refs: ReferenceImage[] = [];
  for (let n = 0; n < 3; n++) {
    const { data, info } = await sharp(goldenPath(`edit/klein_multi_ref__ref${n}.png`))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    assert.equal(info.channels, 3);
    const img = { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
    const u8 = inputs.get(`ref${n}_u8`);
    if (u8) assert.deepEqual(img.rgb, new Uint8Array(u8.data as Uint8Array), `ref${n}: PNG differs from ref${n}_u8`);
    refs.push(img);
  }
  const prepared = prepareReferences(refs, { multiple: 4 });
  for (let n = 0; n < 3; n++) {
    const e = expected.get(`ref${n}_preprocessed`)!;
    const [, C, H, W] = e.shape;
    const r = prepared[n].image;
    assert.deepEqual([r.width, r.height, C], [W, H, 3], `ref${n} size`);
    const hw = H * W;
    const ours = new Float32Array(3 * hw);
    for (let p = 0; p < hw; p++) for (let c = 0; c < 3; c++) ours[c * hw + p] = f(f(f(r.rgb[p * 3 + c] / 255) * 2) - 1);
    assert.deepEqual(ours, new Float32Array(e.data as Float32Array), `ref${n}_preprocessed`);
    assert.equal(prepared[n].resizedTo, null);
  }
  // 70×65 → 68×64 (left 1, top 0), 64×90 → 64×88 (top 1), 81×77 → 80×76 (left 0, top 0).
  assert.deepEqual(prepared.map((p) => p.cropped), [
    { left: 1, top: 0, width: 68, height: 64 },
    { left: 0, top: 1, width: 64, height: 88 },
    { left: 0, top: 0, width: 80, height: 76 },
  ]);
});

// ---------------------------------------------------------------------------
// Refusals and counts

test("validateReference: too small and too thin references are refused with clear messages", () => {
  assert.throws(() => validateReference(40, 300, "reference 2"), (e: Error) => {
    assert.ok(e instanceof ReferenceImageError);
    assert.equal(e.message, "reference 2 is 40×300: both sides must be at least 64 px");
    return true;
  });
  assert.throws(() => validateReference(64, 63), /both sides must be at least 64 px/);
  assert.throws(() => validateReference(600, 70, "reference 1"), /reference 1 is 600×70: aspect ratio 8\.6:1 is more than the maximum 8:1/);
  assert.throws(() => validateReference(64, 513), /aspect ratio/);
  validateReference(64, 512);
  validateReference(512, 64);
  validateReference(64, 64);
  // prepareReference and prepareReferences refuse them too, naming the reference (1-based).
  assert.throws(() => prepareReference(rgbImage(63, 100), { multiple: 16 }), /at least 64 px/);
  assert.throws(
    () => prepareReferences([rgbImage(64, 64), rgbImage(40, 300)], { multiple: 16 }),
    /^ReferenceImageError: reference 2 is 40×300: both sides must be at least 64 px$/,
  );
  assert.throws(() => prepareReferences([rgbImage(80, 700)], { multiple: 16 }), /reference 1 is 80×700: aspect ratio/);
});

test("11 references are refused; counts above the recommendation warn", () => {
  const eleven = Array.from({ length: 11 }, () => rgbImage(64, 64));
  assert.throws(() => prepareReferences(eleven, { multiple: 16 }), /11 reference images given; at most 10/);
  assert.equal(MAX_REFERENCES, 10);
  assert.equal(prepareReferences(eleven.slice(0, 10), { multiple: 16 }).length, 10);
  assert.throws(() => checkReferenceCount(11, "klein"), ReferenceImageError);
  assert.throws(() => checkReferenceCount(-1, "klein"), ReferenceImageError);
  assert.equal(recommendedReferences("klein"), 4);
  assert.equal(recommendedReferences("klein-base"), 4);
  assert.equal(recommendedReferences("dev"), 6);
  assert.equal(checkReferenceCount(0, "klein"), null);
  assert.equal(checkReferenceCount(4, "klein"), null);
  assert.match(checkReferenceCount(5, "klein") ?? "", /recommended with at most 4/);
  assert.match(checkReferenceCount(7, "dev") ?? "", /recommended with at most 6/);
});

test("prepareReferences: BFL cap applies 2024² only to a single reference", () => {
  const big = rgbImage(1100, 1000, 2); // 1.1 MP: over 1024², under 2024²
  assert.equal(prepareReferences([big], { multiple: 16, pixelCap: "bfl" })[0].resizedTo, null);
  const two = prepareReferences([big, rgbImage(64, 64)], { multiple: 16, pixelCap: "bfl" });
  assert.deepEqual(two[0].resizedTo, cappedSize(1100, 1000, 1024 * 1024));
  assert.deepEqual(prepareReferences([big], { multiple: 16 })[0].resizedTo, { width: 1073, height: 976 });
});
