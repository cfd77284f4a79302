// Pillow-compatible Lanczos resampling (docs/FLUX2-spec.md §10 item 13).
//
// diffusers and BFL shrink oversize reference / inpaint images with
// `PIL.Image.resize(size, Image.Resampling.LANCZOS)`. To reproduce their tensors
// byte for byte we need Pillow's exact integer arithmetic, so this is written by
// hand: sharp / libvips `lanczos3` uses a different kernel normalisation, window
// placement and rounding and is NOT bit-identical to Pillow (differences of a few
// levels per pixel), so it must not be used for this.
//
// The algorithm (Pillow `src/libImaging/Resample.c`, 8 bits per channel):
//  * separable: a horizontal pass into an 8-bit intermediate image, then a
//    vertical pass; a pass is skipped when that dimension does not change, and a
//    resize to the same size is a plain copy (Pillow's `Image.resize` shortcut);
//  * per output index `i`: `scale = in/out`, `fs = max(scale, 1)`,
//    `support = 3·fs`, `center = (i + 0.5)·scale`,
//    `lo = max(0, trunc(center − support + 0.5))`,
//    `hi = min(in, trunc(center + support + 0.5))`; weights
//    `lanczos(((j − center) + 0.5) · (1/fs))` for j in [lo, hi) with
//    `lanczos(x) = sinc(x)·sinc(x/3)` on −3 ≤ x < 3, `sinc(x) = sin(πx)/(πx)`;
//    normalised by their sum (a division), then turned into 22-bit fixed point
//    `trunc(w·2²² ± 0.5)` (sign of w);
//  * each output sample: `acc = 2²¹ + Σ src·k` in 32-bit integers, result
//    `clamp(acc >> 22, 0, 255)` (arithmetic shift, i.e. floor).
//  * Pillow's `Image.resize` also has a rule for very tall images (height more
//    than 100× the width, shrinking vertically): it runs the vertical pass first.
//    It is reproduced here; it never applies to references (aspect ≤ 8).
//
// The double-precision steps are done in the same order as the C code, so the
// only possible source of difference is `Math.sin` vs the C library's `sin`
// (both within 1 ulp); a 1-ulp change in a weight alters a fixed-point
// coefficient only if it lands exactly on a rounding boundary, which did not
// happen in any of the test cases (see test/reference.test.ts).
//
// Supported layouts: interleaved 8-bit with 1 channel (Pillow mode "L") or 3
// channels ("RGB"). 4 channels are computed channel by channel like Pillow's
// "RGBX"/"CMYK"; Pillow resizes "RGBA"/"LA" premultiplied by alpha, which is
// not reproduced here (not needed: references are RGB), so 2 channels are refused.

const PRECISION_BITS = 32 - 8 - 2; // 22
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);
const LANCZOS_SUPPORT = 3;

function sinc(x: number): number {
  if (x === 0) return 1;
  const t = x * Math.PI;
  return Math.sin(t) / t;
}

function lanczos(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** Fixed-point filter bank for one axis: output i reads src[lo_i .. lo_i + n_i). */
export interface Coefficients {
  /** Taps per output index (rows of `k` are `ksize` long; only the first `count[i]` are used). */
  ksize: number;
  /** First source index per output index. */
  start: Int32Array;
  /** Number of taps per output index. */
  count: Int32Array;
  /** 22-bit fixed-point weights, `outSize × ksize`. */
  k: Int32Array;
}

/** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for LANCZOS over the box [0, inSize). */
export function lanczosCoefficients(inSize: number, outSize: number): Coefficients {
  // Pillow passes the box edges as C floats; integer sizes below 2^24 are exact.
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = LANCZOS_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterscale = 1 / filterscale;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const v = lanczos((j + lo - center + 0.5) * invFilterscale);
      w[j] = v;
      sum += v;
    }
    if (sum !== 0) for (let j = 0; j < n; j++) w[j] /= sum;
    const row = i * ksize;
    for (let j = 0; j < n; j++) {
      const v = w[j] * ONE;
      k[row + j] = w[j] < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
    }
    start[i] = lo;
    count[i] = n;
  }
  return { ksize, start, count, k };
}

function clip8(acc: number): number {
  // acc fits in int32 (as in Pillow), so `>>` is the C arithmetic shift.
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Called between rows of a resize; it throws to stop the resize (a cancelled
 * job). A 64 MP shrink takes seconds, too long to wait for between stages.
 */
export type ResizeCheck = () => void;

/** Rows between two calls of a ResizeCheck: a few milliseconds of work. */
const CHECK_EVERY = 32;

/** Horizontal pass over source rows [y0, y0 + rows): (w × …) → (newW × rows). */
function horizontal(src: Uint8Array, w: number, y0: number, rows: number, ch: number, c: Coefficients, check?: ResizeCheck): Uint8Array {
  const newW = c.start.length;
  const out = new Uint8Array(newW * rows * ch);
  const { ksize, start, count, k } = c;
  for (let y = 0; y < rows; y++) {
    if (check && y % CHECK_EVERY === 0) check();
    const inRow = (y + y0) * w * ch;
    const outRow = y * newW * ch;
    for (let x = 0; x < newW; x++) {
      const n = count[x];
      const kr = x * ksize;
      const base = inRow + start[x] * ch;
      for (let b = 0; b < ch; b++) {
        let acc = HALF;
        for (let j = 0; j < n; j++) acc += src[base + j * ch + b] * k[kr + j];
        out[outRow + x * ch + b] = clip8(acc);
      }
    }
  }
  return out;
}

/** Vertical pass: (w × h) → (w × newH); `yOffset` is subtracted from every tap's row. */
function vertical(src: Uint8Array, w: number, ch: number, c: Coefficients, yOffset: number, check?: ResizeCheck): Uint8Array {
  const newH = c.start.length;
  const rowLen = w * ch;
  const out = new Uint8Array(newH * rowLen);
  const { ksize, start, count, k } = c;
  for (let y = 0; y < newH; y++) {
    if (check && y % CHECK_EVERY === 0) check();
    const n = count[y];
    const kr = y * ksize;
    const base = (start[y] - yOffset) * rowLen;
    const outRow = y * rowLen;
    for (let i = 0; i < rowLen; i++) {
      let acc = HALF;
      for (let j = 0; j < n; j++) acc += src[base + j * rowLen + i] * k[kr + j];
      out[outRow + i] = clip8(acc);
    }
  }
  return out;
}

function checkDims(what: string, w: number, h: number): void {
  if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) {
    throw new RangeError(`resizeLanczos: ${what} size must be positive integers, got ${w}×${h}`);
  }
}

/**
 * `PIL.Image.resize((newW, newH), Image.Resampling.LANCZOS)` on an interleaved
 * 8-bit image (H, W, channels), channels 1 ("L") or 3 ("RGB") — bit-exact. A
 * same-size resize returns a copy. Always returns a new array. `check` is
 * called every few rows and may throw to abandon the resize.
 */
export function resizeLanczos(src: Uint8Array, w: number, h: number, channels: number, newW: number, newH: number, check?: ResizeCheck): Uint8Array {
  checkDims("source", w, h);
  checkDims("target", newW, newH);
  if (channels !== 1 && channels !== 3 && channels !== 4) {
    throw new RangeError(`resizeLanczos: ${channels} channels not supported (1 = L, 3 = RGB, 4 = RGBX; alpha images are resized premultiplied by Pillow, which is not reproduced)`);
  }
  if (src.length !== w * h * channels) {
    throw new RangeError(`resizeLanczos: buffer has ${src.length} bytes, expected ${w}×${h}×${channels} = ${w * h * channels}`);
  }
  if (w === newW && h === newH) return src.slice();

  if (h > w * 100 && newH < h) {
    // Pillow's Image.resize: very tall images are resized vertically first
    // (two ImagingResample calls; each skips the pass whose size is unchanged).
    const tall = vertical(src, w, channels, lanczosCoefficients(h, newH), 0, check);
    return newW === w ? tall : horizontal(tall, w, 0, newH, channels, lanczosCoefficients(w, newW), check);
  }

  const cv = lanczosCoefficients(h, newH);
  const needV = newH !== h;
  if (newW === w) return vertical(src, w, channels, cv, 0, check); // needV must be true here
  const ch = lanczosCoefficients(w, newW);
  if (!needV) return horizontal(src, w, 0, h, channels, ch, check);
  // Horizontal pass only over the rows the vertical pass will read.
  const yFirst = cv.start[0];
  const yLast = cv.start[newH - 1] + cv.count[newH - 1];
  const tmp = horizontal(src, w, yFirst, yLast - yFirst, channels, ch, check);
  return vertical(tmp, newW, channels, cv, yFirst, check);
}
