// Provenance: the invisible watermark (src/provenance/watermark.ts) and the
// EXIF/XMP "AI generated" tags, on their own and in images that `flux2 generate`
// and `flux2 serve` produce with the tiny checkpoint.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { readPngText } from "../src/pipeline/image.js";
import { encodeGenerated, EXIF_MAKE, EXIF_SOFTWARE, DIGITAL_SOURCE_TYPE, WATERMARK_NAME } from "../src/provenance/provenance.js";
import {
  BFL_REFERENCE_WATERMARK_BITS, FLUX2_WATERMARK_BITS, detectWatermark, embedWatermark, matchWatermark, watermarkBlock,
} from "../src/provenance/watermark.js";
import { goldenPath, repoRoot } from "./golden.js";
import { api, TINY, untilDone } from "./helpers/net.js";
import { testServer } from "./helpers/server.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");

function flux2(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/**
 * A photo-like test image: smooth gradients, soft coloured blobs and ±6 grain from
 * a fixed LCG (so the test is deterministic); a generated image of the tiny random
 * checkpoint is pure noise, so it alone would not show what JPEG does to a photo.
 */
function photoLike(W: number, H: number, seed = 7): Uint8Array {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const blobs = Array.from({ length: 12 }, () => ({ x: rnd() * W, y: rnd() * H, r: 20 + (rnd() * W) / 4, c: [rnd() * 255, rnd() * 255, rnd() * 255] }));
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let c = [120 + 80 * Math.sin(x / 37), 100 + 60 * Math.cos(y / 23), 90 + 50 * Math.sin((x + y) / 51)];
      for (const b of blobs) {
        const w = Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r));
        c = c.map((v, i) => v * (1 - w) + b.c[i] * w);
      }
      for (let i = 0; i < 3; i++) out[(y * W + x) * 3 + i] = Math.max(0, Math.min(255, Math.round(c[i] + (rnd() - 0.5) * 12)));
    }
  }
  return out;
}

function psnr(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  return 10 * Math.log10((255 * 255) / (se / a.length));
}

const raw = (rgb: Uint8Array, W: number, H: number) => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
const pixelsOf = async (buf: Buffer) => new Uint8Array(await sharp(buf).removeAlpha().raw().toBuffer());

test("the message is BFL's WATERMARK_MESSAGE: 48 bits, and the 46 its bin()[2:] leaves", () => {
  assert.equal(FLUX2_WATERMARK_BITS.join(""), "001010101111111010000111100111001111010100101110");
  assert.equal(BFL_REFERENCE_WATERMARK_BITS.join(""), (0b001010101111111010000111100111001111010100101110).toString(2));
  assert.equal(BFL_REFERENCE_WATERMARK_BITS.length, 46);
});

test("on a flat image each 8×8 block moves to the lattice point of its bit (hand-computed)", () => {
  // Grey 100 everywhere: luma mean 100. Step 4, offsets 1 (bit 0) and 3 (bit 1):
  // the nearest 4k+1 is 101, the nearest 4k+3 is 99; R, G and B all move alike.
  const W = 256, H = 256;
  const marked = embedWatermark(new Uint8Array(W * H * 3).fill(100), W, H);
  const cols = W / 8;
  for (let n = 0; n < (W / 8) * (H / 8); n++) {
    const want = FLUX2_WATERMARK_BITS[n % 48] ? 99 : 101;
    const y0 = Math.floor(n / cols) * 8, x0 = (n % cols) * 8;
    for (let y = y0; y < y0 + 8; y++) for (let x = x0; x < x0 + 8; x++) {
      for (let c = 0; c < 3; c++) assert.equal(marked[(y * W + x) * 3 + c], want, `block ${n} pixel (${x},${y})`);
    }
  }
  assert.deepEqual(matchWatermark(marked, W, H), { layout: "flux2", matched: 48, bits: 48, found: true });
});

describe("a photo-like 512×384 image", () => {
  const W = 512, H = 384;
  const clean = photoLike(W, H);
  const marked = embedWatermark(clean, W, H);

  test("unmarked: not detected, lossless or as JPEG", async () => {
    const m = matchWatermark(clean, W, H);
    assert.equal(m.found, false, JSON.stringify(m));
    assert.ok(m.matched <= 34, JSON.stringify(m));
    assert.equal((await detectWatermark(await raw(clean, W, H).jpeg({ quality: 75 }).toBuffer())).found, false);
  });

  test("marked: all 48 bits back from PNG, JPEG quality 75, and a 0.5× resize (also then JPEG 75)", async () => {
    const png = await raw(marked, W, H).png().toBuffer();
    const jpeg75 = await raw(marked, W, H).jpeg({ quality: 75 }).toBuffer();
    const half = await raw(marked, W, H).resize(W / 2, H / 2).png().toBuffer();
    const halfJpeg = await sharp(half).jpeg({ quality: 75 }).toBuffer();
    for (const [name, buf, scale] of [["png", png, 1], ["jpeg75", jpeg75, 1], ["half", half, 0.5], ["half+jpeg75", halfJpeg, 0.5]] as const) {
      const d = await detectWatermark(buf);
      // The halved image (256×192) is small: its own 4×4-block reading is the 0.5× reading of the 8×8 mark,
      // so the two cannot be told apart and the first (scale 1) is reported.
      const scales = scale === 0.5 && watermarkBlock(W / 2, H / 2) === 4 ? [1, 0.5] : [scale];
      assert.deepEqual([d.found, d.layout], [true, "flux2"], `${name}: ${JSON.stringify(d)}`);
      assert.ok(scales.includes(d.scale), `${name}: ${JSON.stringify(d)}`);
      assert.ok(d.matched >= 46, `${name}: ${JSON.stringify(d)}`);
    }
  });

  test("costs under 1 dB PSNR in a JPEG 75 of the image, and stays above 45 dB on its own", async () => {
    const own = psnr(marked, clean);
    const cleanJpeg = psnr(await pixelsOf(await raw(clean, W, H).jpeg({ quality: 75 }).toBuffer()), clean);
    const markedJpeg = psnr(await pixelsOf(await raw(marked, W, H).jpeg({ quality: 75 }).toBuffer()), clean);
    assert.ok(own > 45, `marked vs clean: ${own.toFixed(2)} dB`);
    assert.ok(cleanJpeg - markedJpeg < 1, `JPEG 75 vs clean: ${cleanJpeg.toFixed(2)} dB unmarked, ${markedJpeg.toFixed(2)} dB marked`);
  });
});

// flux2-mini makes 64×64 images: small images are marked with 4×4-pixel blocks (watermarkBlock).
describe("small images: 64², 128² (4×4 blocks) and 256² (8×8 blocks)", () => {
  /** The tiny random checkpoint's images are noise; a photo-like image is what JPEG is hard on. */
  const noise = (W: number, H: number, seed = 3) => {
    let s = seed;
    return Uint8Array.from({ length: W * H * 3 }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24);
  };
  for (const size of [64, 128, 256]) {
    test(`${size}×${size}: found in the PNG and in a JPEG of quality 90, photo-like and noise; not in the unmarked image`, async () => {
      assert.equal(watermarkBlock(size, size), size >= 256 ? 8 : 4);
      for (const [kind, clean] of [["photo-like", photoLike(size, size)], ["noise", noise(size, size)]] as const) {
        const marked = embedWatermark(clean, size, size);
        assert.ok(psnr(marked, clean) > 45, `${kind}: ${psnr(marked, clean).toFixed(1)} dB`);
        for (const [format, encode] of [["PNG", (x: Uint8Array) => raw(x, size, size).png().toBuffer()], ["JPEG 90", (x: Uint8Array) => raw(x, size, size).jpeg({ quality: 90 }).toBuffer()]] as const) {
          const yes = await detectWatermark(await encode(marked));
          assert.ok(yes.found && yes.matched >= 46, `${size}² ${kind} ${format} marked: ${yes.matched}/${yes.bits}`);
          const no = await detectWatermark(await encode(clean));
          assert.equal(no.found, false, `${size}² ${kind} ${format} unmarked: ${no.matched}/${no.bits}`);
        }
      }
    });
  }

  test("encodeGenerated marks a 64×64 image and says so; under 64×64 pixels in area there is no mark", async () => {
    const record = { prompt: "a fox", negativePrompt: null, width: 64, height: 64, steps: 4, guidance: 1, seed: 0, variant: "klein", model: "tiny" };
    const { bytes, record: r } = await encodeGenerated(photoLike(64, 64), 64, 64, "png", record, true);
    assert.equal(r.watermark, WATERMARK_NAME);
    assert.equal((await detectWatermark(bytes)).found, true);
    assert.equal(watermarkBlock(64, 63), 0);
    assert.throws(() => embedWatermark(new Uint8Array(64 * 63 * 3), 64, 63), /under 64×64 pixels/);
  });
});

test("encodeGenerated: tags in every format; too-small images say why they carry no mark", async () => {
  const record = { prompt: "a fox", negativePrompt: null, width: 64, height: 48, steps: 4, guidance: 1, seed: 0, variant: "klein", model: "tiny" };
  const rgb = photoLike(64, 48);
  for (const format of ["png", "jpg", "webp"] as const) {
    const { bytes, record: r } = await encodeGenerated(rgb, 64, 48, format, record, true);
    assert.equal(r.watermark, "none (64x48 is under 64x64 pixels)");
    const meta = await sharp(bytes).metadata();
    const exif = meta.exif!.toString("latin1");
    assert.ok(exif.includes(EXIF_SOFTWARE) && exif.includes(EXIF_MAKE) && exif.includes("FLUX.2 klein;tiny"), `${format}: ${exif}`);
    assert.ok(meta.xmp!.toString().includes(`Iptc4xmpExt:DigitalSourceType="${DIGITAL_SOURCE_TYPE}"`), format);
    assert.deepEqual(await pixelsOf(bytes).then((p) => format === "png" ? Buffer.from(p).equals(Buffer.from(rgb)) : true), true);
  }
  const off = await encodeGenerated(photoLike(256, 256), 256, 256, "png", { ...record, width: 256, height: 256 }, false);
  assert.equal(JSON.parse(readPngText(off.bytes).flux2).watermark, "off");
  assert.equal((await detectWatermark(off.bytes)).found, false);
});

test("flux2 generate marks its image (PNG and JPEG), --no-watermark does not, and flux2 watermark detect says so", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-wm-"));
  const model = goldenPath("checkpoints/klein_distilled");
  const gen = (out: string, extra: string[] = []) =>
    flux2(["generate", "--model", model, "--prompt", "a red fox", "--width", "256", "--height", "256", "--quiet", "--out", out, ...extra], dir);
  let r = gen("marked.png");
  assert.equal(r.code, 0, r.err);
  const png = fs.readFileSync(path.join(dir, "marked.png"));
  assert.equal(JSON.parse(readPngText(png).flux2).watermark, WATERMARK_NAME);
  assert.match(readPngText(png).parameters, /Watermark: flux2 dwt-dct 48-bit/);
  const exif = (await sharp(png).metadata()).exif!.toString("latin1");
  assert.ok(exif.includes(EXIF_SOFTWARE) && exif.includes(EXIF_MAKE));
  // The generated image survives the same attacks (it is noise-like: no JPEG after halving here).
  await sharp(png).jpeg({ quality: 75 }).toFile(path.join(dir, "marked75.jpg"));
  await sharp(png).resize(128, 128).png().toFile(path.join(dir, "half.png"));
  r = gen("direct.jpg");
  assert.equal(r.code, 0, r.err);

  r = flux2(["watermark", "detect", "marked.png", "marked75.jpg", "half.png", "direct.jpg"], dir);
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /^marked\.png: watermark found \(48\/48 bits\)$/m);
  assert.match(r.out, /^marked75\.jpg: watermark found/m);
  // 128×128 is small: its own 4×4-block reading is also the 0.5× reading of the 256² mark (reported as scale 1).
  assert.match(r.out, /^half\.png: watermark found \(\d+\/48 bits(, read at scale 0\.5)?\)$/m);
  assert.match(r.out, /^direct\.jpg: watermark found/m);

  r = gen("plain.png", ["--no-watermark"]);
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(readPngText(fs.readFileSync(path.join(dir, "plain.png"))).flux2).watermark, "off");
  r = flux2(["watermark", "detect", "plain.png"], dir);
  assert.equal(r.code, 1);
  assert.match(r.out, /^plain\.png: no watermark/m);
});

describe("flux2 serve marks its images; --no-watermark (config watermark: false) does not", () => {
  let on: Awaited<ReturnType<typeof testServer>>, off: Awaited<ReturnType<typeof testServer>>;
  before(async () => {
    on = await testServer();
    off = await testServer({ watermark: false, models: [{ id: "flux-2-klein-4b", dir: TINY }] });
  });
  after(async () => {
    await on?.close();
    await off?.close();
  });

  test("the served image carries the mark and the tags", async () => {
    for (const [s, expected] of [[on, true], [off, false]] as const) {
      const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "a red fox", width: 256, height: 256, seed: 3 });
      const done = await untilDone(s.url, sub.body.id);
      assert.equal(done.status, "Ready", JSON.stringify(done));
      const png = Buffer.from(await (await fetch(done.result.sample)).arrayBuffer());
      assert.equal((await detectWatermark(png)).found, expected);
      assert.equal(JSON.parse(readPngText(png).flux2).watermark, expected ? WATERMARK_NAME : "off");
      assert.ok((await sharp(png).metadata()).exif!.toString("latin1").includes(EXIF_SOFTWARE));
    }
  });
});
