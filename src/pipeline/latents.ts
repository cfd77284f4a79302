// Latent layout helpers of the FLUX.2 pipelines (docs/FLUX2-spec.md §3.4, §3.5, §6.5):
// token packing, position ids, 2×2 patchify, the latent batch-norm, and the
// inpainting mask / noising helpers. All tensors are row-major; float results
// are rounded to float32 after every op, as the float32 reference does.

import { dims, tensor, type Tensor } from "../util/tensor.js";

const f = Math.fround;
type F32 = Tensor<Float32Array>;
type I64 = Tensor<BigInt64Array>;

// ---------------------------------------------------------------------------
// Packing and position ids

/** (B, C, h, w) → (B, h·w, C): token n = y·w + x, features = channels. */
export function pack(x: F32): F32 {
  const [B, C, h, w] = dims(x, 4, "pack input");
  const hw = h * w;
  const out = new Float32Array(B * hw * C);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++) {
      const src = (b * C + c) * hw;
      for (let n = 0; n < hw; n++) out[(b * hw + n) * C + c] = x.data[src + n];
    }
  return tensor(out, [B, hw, C]);
}

/** Inverse of pack for row-major tokens: (B, h·w, C) → (B, C, h, w). */
export function unpack(x: F32, h: number, w: number): F32 {
  const [B, N, C] = dims(x, 3, "unpack input");
  if (N !== h * w) throw new RangeError(`unpack: ${N} tokens do not fill a ${h}×${w} grid`);
  const out = new Float32Array(B * C * N);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++) {
      const src = (b * N + n) * C;
      for (let c = 0; c < C; c++) out[(b * C + c) * N + n] = x.data[src + c];
    }
  return tensor(out, [B, C, h, w]);
}

/**
 * Unpack by position ids, as diffusers' _unpack_latents_with_ids does: token n
 * goes to (y, x) = (ids[n][1], ids[n][2]); the grid is max + 1 in each axis.
 * Only the first batch row of ids is read (the pipelines build identical rows).
 */
export function unpackWithIds(x: F32, ids: I64): F32 {
  const [B, N, C] = dims(x, 3, "unpackWithIds input");
  const [, Ni] = dims(ids, 3, "ids");
  if (Ni !== N) throw new RangeError(`unpackWithIds: ${N} tokens but ${Ni} ids`);
  let h = 0, w = 0;
  for (let n = 0; n < N; n++) {
    h = Math.max(h, Number(ids.data[n * 4 + 1]) + 1);
    w = Math.max(w, Number(ids.data[n * 4 + 2]) + 1);
  }
  const hw = h * w;
  const out = new Float32Array(B * C * hw);
  for (let n = 0; n < N; n++) {
    const cell = Number(ids.data[n * 4 + 1]) * w + Number(ids.data[n * 4 + 2]);
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++) out[(b * C + c) * hw + cell] = x.data[(b * N + n) * C + c];
  }
  return tensor(out, [B, C, h, w]);
}

/** Image position ids (t, y, x, 0) for an h×w grid, row-major, repeated over the batch. */
export function latentIds(B: number, h: number, w: number, t = 0): I64 {
  const hw = h * w;
  const out = new BigInt64Array(B * hw * 4);
  const bt = BigInt(t);
  for (let b = 0; b < B; b++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const o = (b * hw + y * w + x) * 4;
        out[o] = bt;
        out[o + 1] = BigInt(y);
        out[o + 2] = BigInt(x);
      }
  return tensor(out, [B, hw, 4]);
}

/** Text position ids (0, 0, 0, l) for L tokens, repeated over the batch. */
export function textIds(B: number, L: number): I64 {
  const out = new BigInt64Array(B * L * 4);
  for (let b = 0; b < B; b++) for (let l = 0; l < L; l++) out[(b * L + l) * 4 + 3] = BigInt(l);
  return tensor(out, [B, L, 4]);
}

/** Reference position ids: reference i gets t = 10 + 10·i, all concatenated: (1, Σ h_i·w_i, 4). */
export function refIds(refShapes: readonly { h: number; w: number }[]): I64 {
  const parts = refShapes.map((r, i) => latentIds(1, r.h, r.w, 10 + 10 * i).data);
  return tensor(concat64(parts), [1, parts.reduce((s, p) => s + p.length / 4, 0), 4]);
}

/** Packed reference latents (each (1, C, h_i, w_i)) concatenated along the sequence: (1, Σ h_i·w_i, C). */
export function packRefs(refs: readonly F32[]): F32 {
  if (refs.length === 0) throw new RangeError("packRefs: no references");
  const packed = refs.map((r) => {
    if (r.shape[0] !== 1) throw new RangeError(`packRefs: references must have batch 1, got [${r.shape.join(", ")}]`);
    return pack(r);
  });
  const C = packed[0].shape[2];
  if (packed.some((p) => p.shape[2] !== C)) throw new RangeError("packRefs: references differ in channel count");
  const data = new Float32Array(packed.reduce((s, p) => s + p.data.length, 0));
  let o = 0;
  for (const p of packed) {
    data.set(p.data, o);
    o += p.data.length;
  }
  return tensor(data, [1, data.length / C, C]);
}

function concat64(parts: BigInt64Array[]): BigInt64Array {
  const out = new BigInt64Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// 2×2 patchify

/** (B, C, 2h, 2w) → (B, 4C, h, w) with output channel 4c + 2dy + dx = input (c, 2y+dy, 2x+dx). */
export function patchify(x: F32): F32 {
  const [B, C, H, W] = dims(x, 4, "patchify input");
  if (H % 2 || W % 2) throw new RangeError(`patchify: height and width must be even, got ${H}×${W}`);
  const h = H / 2, w = W / 2;
  const out = new Float32Array(x.data.length);
  forEachPatchCell(B, C, h, w, (src, dst) => (out[dst] = x.data[src]));
  return tensor(out, [B, 4 * C, h, w]);
}

/** Exact inverse of patchify: (B, 4C, h, w) → (B, C, 2h, 2w). */
export function unpatchify(x: F32): F32 {
  const [B, C4, h, w] = dims(x, 4, "unpatchify input");
  if (C4 % 4) throw new RangeError(`unpatchify: channels (${C4}) must be a multiple of 4`);
  const C = C4 / 4;
  const out = new Float32Array(x.data.length);
  forEachPatchCell(B, C, h, w, (src, dst) => (out[src] = x.data[dst]));
  return tensor(out, [B, C, 2 * h, 2 * w]);
}

/** Calls visit(index in (B,C,2h,2w), index in (B,4C,h,w)) for every element. */
function forEachPatchCell(B: number, C: number, h: number, w: number, visit: (src: number, dst: number) => void): void {
  const W = 2 * w;
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let dy = 0; dy < 2; dy++)
        for (let dx = 0; dx < 2; dx++) {
          const plane = ((b * C + c) * 4 + dy * 2 + dx) * h * w;
          for (let y = 0; y < h; y++)
            for (let xx = 0; xx < w; xx++) {
              const src = ((b * C + c) * 2 * h + 2 * y + dy) * W + 2 * xx + dx;
              visit(src, plane + y * w + xx);
            }
        }
}

// ---------------------------------------------------------------------------
// Latent batch-norm (the VAE's bn.running_mean / bn.running_var)

/** std = sqrt(running_var + eps) in float32; eps is rounded to float32 first, as torch does with a Python scalar. */
export function bnStd(runningVar: Float32Array, eps: number): Float32Array {
  const e = f(eps);
  return Float32Array.from(runningVar, (v) => f(Math.sqrt(f(v + e))));
}

/** (x − mean[c]) / std[c] over the channel axis of (B, C, h, w). */
export function bnNormalize(x: F32, mean: Float32Array, std: Float32Array): F32 {
  return perChannel(x, mean, std, (v, m, s) => f(f(v - m) / s));
}

/** x·std[c] + mean[c]: the inverse applied before unpatchify and the VAE decoder. */
export function bnDenormalize(x: F32, mean: Float32Array, std: Float32Array): F32 {
  return perChannel(x, mean, std, (v, m, s) => f(f(v * s) + m));
}

function perChannel(x: F32, mean: Float32Array, std: Float32Array, op: (v: number, m: number, s: number) => number): F32 {
  const [B, C, h, w] = dims(x, 4, "batch-norm input");
  if (mean.length !== C || std.length !== C) {
    throw new RangeError(`batch-norm: ${C} channels but ${mean.length} means and ${std.length} stds`);
  }
  const hw = h * w;
  const out = new Float32Array(x.data.length);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++) {
      const base = (b * C + c) * hw;
      for (let i = 0; i < hw; i++) out[base + i] = op(x.data[base + i], mean[c], std[c]);
    }
  return tensor(out, [B, C, h, w]);
}

// ---------------------------------------------------------------------------
// Inpainting helpers

/**
 * The inpainting mask in token space, as Flux2KleinInpaintPipeline builds it from an
 * (H, W) 8-bit mask (255 = repaint): /255 in float32, binarise (≥ 0.5 → 1, else 0),
 * bilinear resize to (h, w) like torch interpolate(mode="bilinear",
 * align_corners=False, no antialias), packed to (1, h·w, 1).
 */
export function maskToLatent(maskU8: Uint8Array, H: number, W: number, h: number, w: number): F32 {
  if (maskU8.length !== H * W) throw new RangeError(`maskToLatent: mask has ${maskU8.length} values, expected ${H}×${W}`);
  const bin = Float32Array.from(maskU8, (v) => (f(v / 255) >= 0.5 ? 1 : 0));
  const out = bilinear(bin, H, W, h, w);
  return tensor(out, [1, h * w, 1]);
}

/** Source taps and weights of one output coordinate, following PyTorch's CPU upsample_bilinear2d. */
function taps(outIndex: number, inSize: number, outSize: number): [number, number, number, number] {
  const scale = f(inSize / outSize);
  const src = Math.max(f(f(scale * f(outIndex + 0.5)) - 0.5), 0);
  const i0 = Math.floor(src);
  const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
  const l1 = f(src - i0);
  return [i0, i1, f(1 - l1), l1];
}

function bilinear(src: Float32Array, H: number, W: number, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  const cols = Array.from({ length: w }, (_, x) => taps(x, W, w));
  for (let y = 0; y < h; y++) {
    const [y0, y1, wy0, wy1] = taps(y, H, h);
    for (let x = 0; x < w; x++) {
      const [x0, x1, wx0, wx1] = cols[x];
      const top = f(f(wx0 * src[y0 * W + x0]) + f(wx1 * src[y0 * W + x1]));
      const bottom = f(f(wx0 * src[y1 * W + x0]) + f(wx1 * src[y1 * W + x1]));
      out[y * w + x] = f(f(wy0 * top) + f(wy1 * bottom));
    }
  }
  return out;
}

/** Noise x0 to level σ: σ·noise + (1 − σ)·x0 in float32 (the scheduler's scale_noise). */
export function noiseTo(x0: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  if (x0.length !== noise.length) throw new RangeError(`noiseTo: x0 has ${x0.length} values, noise ${noise.length}`);
  const s = f(sigma);
  const rest = f(1 - s);
  const out = new Float32Array(x0.length);
  for (let i = 0; i < x0.length; i++) out[i] = f(s * noise[i]) + f(rest * x0[i]);
  return out;
}

