import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { decodeImage, encodeImage, readPngText, toUint8Diffusers, toUnitRange } from "../src/pipeline/image.js";
import { goldenPath, loadTensors, maxAbsDiff } from "./golden.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-image-test-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

function gradient(W: number, H: number): Uint8Array {
  const rgb = new Uint8Array(W * H * 3);
  for (let i = 0; i < W * H; i++) rgb.set([(i * 7) & 255, (i * 13) & 255, (i * 29) & 255], i * 3);
  return rgb;
}

test("golden checkpoints/klein_distilled__t2i: decoded_raw → image_u8 exactly", () => {
  const exp = loadTensors("checkpoints/klein_distilled__t2i.expected.safetensors");
  const raw = exp.get("decoded_raw")!;
  const want = exp.get("image_u8")!;
  const [B, , H, W] = raw.shape;
  const got = toUint8Diffusers(raw.data as Float32Array, B, H, W);
  assert.deepEqual(got, want.data);
});

test("golden pipeline/e2e_klein_t2i: decoded_raw → image in [0, 1]", () => {
  const exp = loadTensors("pipeline/e2e_klein_t2i.expected.safetensors");
  const got = toUnitRange(exp.get("decoded_raw")!.data as Float32Array);
  assert.ok(maxAbsDiff(got, exp.get("image")!.data as Float32Array) <= 1e-7);
});

test("uint8 rounding is half-to-even and clamps", () => {
  // Inputs whose float32 (x/2 + 0.5)·255 is exactly 127.5, 128.5 and 129.5 (checked below).
  const xs = new Float32Array([0, 0.00784313678741455, 0.0156862735748291, -3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const f = Math.fround;
  assert.deepEqual([0, 1, 2].map((i) => f(f(xs[i] / 2 + 0.5) * 255)), [127.5, 128.5, 129.5]);
  const u8 = toUint8Diffusers(xs, 1, 1, 5);
  // NCHW → NHWC: channel 0 of pixel p is u8[3p].
  assert.deepEqual([0, 1, 2, 3, 4].map((p) => u8[3 * p]), [128, 128, 130, 0, 255]);
  assert.throws(() => toUint8Diffusers(new Float32Array(5), 1, 2, 2), RangeError);
});

test("PNG parameters round trip (tEXt for Latin-1, iTXt otherwise) and pixels are lossless", async () => {
  const rgb = gradient(17, 9);
  const text = "a red fox, 35mm\nSteps: 4, Sampler: Euler, Seed: 1234, Size: 17x9, Café";
  const png = await encodeImage(rgb, 17, 9, "png", text);
  assert.equal(readPngText(png).parameters, text);
  assert.ok(png.includes(Buffer.from("tEXtparameters\0", "latin1")), "stored as a tEXt chunk");
  const unicode = "Café sign \"OPEN 24/7\" ☕";
  const png2 = await encodeImage(rgb, 17, 9, "png", unicode);
  assert.equal(readPngText(png2).parameters, unicode);
  assert.ok(png2.includes(Buffer.from("iTXtparameters\0", "latin1")));
  // sharp (libvips) validates the CRC of every chunk on decode.
  const back = await decodeImage(png);
  assert.deepEqual([back.width, back.height], [17, 9]);
  assert.deepEqual(back.rgb, rgb);
  assert.deepEqual(readPngText(await encodeImage(rgb, 17, 9, "png")), {});
  assert.throws(() => readPngText(Buffer.from("not a png at all, really not")), /not a PNG/);
});

test("encodes are byte-identical for identical input", async () => {
  const rgb = gradient(32, 24);
  for (const fmt of ["png", "jpg", "webp"] as const) {
    const a = await encodeImage(rgb, 32, 24, fmt, "p");
    const b = await encodeImage(Uint8Array.from(rgb), 32, 24, fmt, "p");
    assert.ok(a.equals(b), `${fmt} differs between runs`);
    const meta = await sharp(a).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], [fmt === "jpg" ? "jpeg" : fmt, 32, 24]);
  }
});

test("golden expected PNG decodes to the stored uint8 image", async () => {
  const exp = loadTensors("checkpoints/klein_distilled__t2i.expected.safetensors");
  const want = exp.get("image_u8")!;
  const [, H, W] = want.shape;
  const img = await decodeImage(goldenPath("checkpoints/klein_distilled__t2i.expected_0.png"));
  assert.deepEqual([img.width, img.height], [W, H]);
  assert.deepEqual(img.rgb, (want.data as Uint8Array).subarray(0, H * W * 3));
});

test("alpha is dropped without compositing, grey becomes RGB", async () => {
  const rgba = new Uint8Array([10, 20, 30, 0, 200, 100, 50, 128]);
  const png = await sharp(rgba, { raw: { width: 2, height: 1, channels: 4 } }).png().toBuffer();
  assert.deepEqual([...(await decodeImage(png)).rgb], [10, 20, 30, 200, 100, 50]);
  const grey = await sharp(new Uint8Array([0, 77]), { raw: { width: 2, height: 1, channels: 1 } }).png().toBuffer();
  assert.deepEqual([...(await decodeImage(grey)).rgb], [0, 0, 0, 77, 77, 77]);
});

test("refuses images over maxPixels", async () => {
  const file = path.join(tmp, "big.png");
  fs.writeFileSync(file, await encodeImage(gradient(40, 30), 40, 30, "png"));
  await assert.rejects(decodeImage(file, { maxPixels: 1199 }), /big\.png.*40×30 = 1200 pixels.*limit of 1199/);
  assert.equal((await decodeImage(file, { maxPixels: 1200 })).width, 40);
});

test("unreadable, missing and animated images give clear errors naming the file", async () => {
  const bad = path.join(tmp, "broken.png");
  fs.writeFileSync(bad, "this is not an image");
  await assert.rejects(decodeImage(bad), (e: Error) => e.message.startsWith(bad) && /cannot read image/.test(e.message));
  const missing = path.join(tmp, "nope.png");
  await assert.rejects(decodeImage(missing), new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: no such file`));
  const frames = await Promise.all(
    ["#ff0000", "#0000ff"].map((background) => sharp({ create: { width: 4, height: 4, channels: 3, background } }).png().toBuffer()),
  );
  const gif = path.join(tmp, "anim.gif");
  await sharp(frames, { join: { animated: true } }).gif().toFile(gif);
  await assert.rejects(decodeImage(gif), /anim\.gif: animated or multi-page/);
});
