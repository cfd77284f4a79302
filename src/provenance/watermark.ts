// Invisible watermark in the DWT-DCT family of the `invisible-watermark` Python
// package, which BFL's reference code applies to every FLUX.2 image
// (src/flux2/watermark.py: WatermarkEncoder().encode(bgr, "dwtDct"), 48-bit message).
// Written here in TypeScript because no npm package implements it.
//
// The package's dwtDct: take the U (chroma) plane, a one-level Haar DWT, walk the
// approximation band cA in 4×4 blocks (8×8 pixels), block n carrying bit n mod L, and
// in each block move the largest-magnitude coefficient (after the first) onto the
// lattice (⌊|v|/36⌋ + 0.25 + 0.5·bit)·36. We built that first and measured it
// (2026-12-02, synthetic textured images of 256² to 1024×768, sharp's JPEG and
// resize): 48/48 bits from the lossless file, but 19–24/48 — chance — after JPEG
// quality 95, 75 or halving.
// JPEG's chroma upsampling mixes each chroma sample with its neighbours, and both
// that and halving move which coefficient is largest, so the decoder reads the wrong
// one. It also cost 35.9 dB PSNR. It cannot meet "survives JPEG 75 and a 0.5× resize".
//
// So we keep the package's structure — Haar cA, 4×4 blocks in its order, the message
// repeated over blocks, quantisation-index modulation with lattice offsets ¼ and ¾ of
// a step, majority over blocks — and change the coefficient: each block's DCT DC of
// the luma cA. For an orthonormal 4×4 DCT that DC is 8 × the mean luma of the 8×8
// pixel block, so the code works on block means directly (same numbers, no
// transforms). Why it survives:
//   - the block is exactly a JPEG luma block, and JPEG stores its DC with a step of 1
//     grey level (mean) at quality 75, well inside our ±1 margin (step 4);
//   - halving maps an 8×8 block onto a 4×4 one with (nearly) the same mean;
//   - changing the mean by δ adds δ to R, G and B: luma moves, chroma does not.
// Cost: the mean moves by at most ±2 grey levels, 46.3 dB PSNR (measured).
// It is not readable by the package's decoder (different coefficient); BFL's own
// marks (chroma) are not readable by ours. Both message layouts are checked.
//
// The message: BFL's WATERMARK_MESSAGE, 0x2AFE879CF52E, as 48 bits. BFL's code turns it
// into bits with bin(x)[2:], which drops the two leading zeros, so its images carry a
// 46-bit message; detection reports which of the two layouts matched better.

import sharp from "sharp";

/** Lattice step of the block means, in grey levels: ±2 at most, ±1 decision margin. */
export const WATERMARK_STEP = 4;
const BLOCK_PX = 8;

/** The 48-bit message, most significant bit first. */
export const FLUX2_WATERMARK_BITS: readonly number[] = bitsOf(0x2afe879cf52en, 48);
/** The same message as BFL's reference code actually embeds it (leading zeros dropped). */
export const BFL_REFERENCE_WATERMARK_BITS: readonly number[] = FLUX2_WATERMARK_BITS.slice(2);

/**
 * From 256×256 pixels in area the mark uses 8×8-pixel blocks (the package's size; it
 * refuses smaller images). Smaller images, down to MIN_WATERMARK_PIXELS, use 4×4 blocks
 * so that every bit still has several blocks to vote (a 64×64 image: 256 blocks, 5–6
 * per bit; with 8×8 blocks it would have 64, one or two per bit). A 4×4 block is a
 * quarter of a JPEG block: JPEG keeps its mean less exactly than an 8×8 one's (its AC
 * coefficients are quantised too), which the extra votes make up for at quality 90
 * (test/watermark.test.ts measures it at 64², 128² and 256²).
 */
export const LARGE_WATERMARK_PIXELS = 256 * 256;
/** Below this (64×64 pixels in area) an image carries no mark: under 4 blocks per bit. */
export const MIN_WATERMARK_PIXELS = 64 * 64;

/** How many message bits must match for a detection; a random image reaches 40 of 48 with p ≈ 2·10⁻⁶. */
export const DETECT_MIN_MATCH = 40 / 48;

function bitsOf(x: bigint, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Number((x >> BigInt(n - 1 - i)) & 1n));
}

const KR = 0.299, KG = 0.587, KB = 0.114;

/** Mean luma of each b×b block, row by row (the image cropped to whole blocks). */
function blockMeans(rgb: Uint8Array, W: number, H: number, b: number): { means: Float64Array; rows: number; cols: number } {
  const rows = Math.floor(H / b), cols = Math.floor(W / b);
  const means = new Float64Array(rows * cols);
  for (let y = 0; y < rows * b; y++) {
    for (let x = 0; x < cols * b; x++) {
      const p = 3 * (y * W + x);
      means[Math.floor(y / b) * cols + Math.floor(x / b)] += KR * rgb[p] + KG * rgb[p + 1] + KB * rgb[p + 2];
    }
  }
  for (let i = 0; i < means.length; i++) means[i] /= b * b;
  return { means, rows, cols };
}

/** The lattice point nearest to m that carries `bit`: k·step + (0.25 + 0.5·bit)·step. */
function quantize(m: number, bit: number): number {
  const off = (0.25 + 0.5 * bit) * WATERMARK_STEP;
  return Math.round((m - off) / WATERMARK_STEP) * WATERMARK_STEP + off;
}

/**
 * A block's soft vote for bit 1, 0..1: 0 on the bit-0 lattice (phase 1/4 of a step),
 * 1 on the bit-1 lattice (phase 3/4), ½ halfway. Votes near the decision boundary
 * count less than hard 0/1 votes would, which helps most after resampling.
 */
function voteOf(m: number): number {
  return (1 - Math.sin((2 * Math.PI * m) / WATERMARK_STEP)) / 2;
}

export function canWatermark(W: number, H: number): boolean {
  return W * H >= MIN_WATERMARK_PIXELS && W >= 4 && H >= 4;
}

/** The block size, in pixels, of the mark of a W×H image (8, or 4 for small images; 0: none). */
export function watermarkBlock(W: number, H: number): number {
  return !canWatermark(W, H) ? 0 : W * H >= LARGE_WATERMARK_PIXELS ? BLOCK_PX : BLOCK_PX / 2;
}

/**
 * Embed the message into packed RGB (H, W, 3); returns a new array. Throws for images
 * under 64×64 pixels in area (see canWatermark).
 */
export function embedWatermark(rgb: Uint8Array, W: number, H: number, bits: readonly number[] = FLUX2_WATERMARK_BITS): Uint8Array {
  if (rgb.length !== W * H * 3) throw new RangeError(`embedWatermark: ${rgb.length} bytes is not ${W}×${H}×3`);
  if (!canWatermark(W, H)) throw new RangeError(`embedWatermark: a ${W}×${H} image is under 64×64 pixels, too small to carry the watermark`);
  const block = watermarkBlock(W, H);
  const { means, cols } = blockMeans(rgb, W, H, block);
  const out = Uint8Array.from(rgb);
  for (let n = 0; n < means.length; n++) {
    const delta = quantize(means[n], bits[n % bits.length]) - means[n];
    const y0 = Math.floor(n / cols) * block, x0 = (n % cols) * block;
    // Adding δ to R, G and B adds δ to luma and leaves chroma alone.
    for (let y = y0; y < y0 + block; y++) {
      for (let x = x0; x < x0 + block; x++) {
        const p = 3 * (y * W + x);
        for (let c = 0; c < 3; c++) out[p + c] = clampByte(rgb[p + c] + delta);
      }
    }
  }
  return out;
}

function clampByte(x: number): number {
  return Math.min(255, Math.max(0, Math.round(x)));
}

/** Per-bit mean vote (0..1) of an L-bit message read with blocks of b pixels (8, or 4 in a halved image). */
export function readWatermarkScores(rgb: Uint8Array, W: number, H: number, length: number, b = BLOCK_PX): number[] {
  if (rgb.length !== W * H * 3) throw new RangeError(`readWatermarkScores: ${rgb.length} bytes is not ${W}×${H}×3`);
  const { means } = blockMeans(rgb, W, H, b);
  const sum = new Float64Array(length), count = new Float64Array(length);
  for (let n = 0; n < means.length; n++) {
    sum[n % length] += voteOf(means[n]);
    count[n % length]++;
  }
  return Array.from(sum, (s, i) => (count[i] ? s / count[i] : 0));
}

export interface WatermarkMatch {
  /** "flux2" (the full 48 bits) or "bfl-reference" (the 46 bits BFL's code embeds). */
  layout: "flux2" | "bfl-reference";
  matched: number;
  bits: number;
  found: boolean;
}

/** Compare the decoded bits with both message layouts; the better one is returned. */
export function matchWatermark(rgb: Uint8Array, W: number, H: number, b = BLOCK_PX): WatermarkMatch {
  const layouts = [["flux2", FLUX2_WATERMARK_BITS], ["bfl-reference", BFL_REFERENCE_WATERMARK_BITS]] as const;
  let best: WatermarkMatch | undefined;
  for (const [layout, message] of layouts) {
    const scores = readWatermarkScores(rgb, W, H, message.length, b);
    const matched = scores.filter((s, i) => (s * 255 > 127 ? 1 : 0) === message[i]).length;
    const m = { layout, matched, bits: message.length, found: matched >= DETECT_MIN_MATCH * message.length };
    if (!best || m.matched / m.bits > best.matched / best.bits) best = m;
  }
  return best!;
}

export interface WatermarkDetection extends WatermarkMatch {
  /**
   * The size the image is read at relative to the marked original: 1, or 0.5 for an image halved since.
   * A small image's own reading (4×4 blocks) is the same as the 0.5× reading of a large one's 8×8 mark:
   * such a reading is reported as 1.
   */
  scale: number;
  width: number;
  height: number;
}

/**
 * Look for the watermark in an encoded image (PNG, JPEG, WebP…). The mark lives in
 * 8×8-pixel block means (4×4 in small images); an image halved since marking has the
 * same means in blocks half as wide, so it is read a second time that way when the
 * first reading finds nothing.
 */
export async function detectWatermark(file: Buffer): Promise<WatermarkDetection> {
  const { data, info } = await sharp(file).removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`watermark detect: expected an RGB image, got ${info.channels} channels`);
  const rgb = new Uint8Array(data.buffer, data.byteOffset, data.length);
  let best: WatermarkDetection | undefined;
  for (const scale of [1, 0.5]) {
    const block = watermarkBlock(info.width / scale, info.height / scale);
    if (!block) continue;
    const m = { ...matchWatermark(rgb, info.width, info.height, block * scale), scale, width: info.width, height: info.height };
    if (!best || m.matched / m.bits > best.matched / best.bits) best = m;
    if (m.found) break;
  }
  if (!best) throw new RangeError(`watermark detect: a ${info.width}×${info.height} image is too small to carry the watermark (under 32×32 pixels in area)`);
  return best;
}
