// What the denoiser is conditioned on besides the text: reference images (editing),
// the init image of img2img / inpainting, and the inpainting mask. Each is a small
// piece the denoising loop calls; none knows about the others' internals.
//
// References are VAE-encoded once, packed into tokens and appended to the image tokens
// of every step; their position ids carry t = 10, 20, … (one slot per image) so the
// model tells them apart from the target (t = 0). An init image becomes reference 0.

import type { Flux2Vae } from "../models/vae.js";
import { InvalidRequestError } from "../util/errors.js";
import { tensor, type Tensor } from "../util/tensor.js";
import { bnNormalize, latentIds, maskToLatent, noiseTo, pack, packRefs, patchify, refIds } from "./latents.js";
import type { ReferenceImage } from "./reference.js";
import type { Tap } from "./tap.js";

const f = Math.fround;
type F32 = Tensor<Float32Array>;

/** img2img / inpainting input: the image to start from, sized to the output. */
export interface InitImage {
  image: ReferenceImage;
  /** Single-channel mask (H, W), 255 = repaint; absent = repaint everything (img2img). */
  mask?: Uint8Array;
  /** 0 keeps the image, 1 starts from pure noise. */
  strength: number;
}

/** Packed reference tokens (1, R, C) and their position ids (1, R, 4). */
export interface ReferenceTokens {
  tokens: F32;
  ids: Tensor<BigInt64Array>;
}

/** u8 (H, W, 3) → float32 (1, 3, H, W) in [-1, 1]: u8/255·2 − 1 in float32. */
export function toSignedUnit(r: ReferenceImage): F32 {
  const hw = r.width * r.height;
  const out = new Float32Array(3 * hw);
  for (let p = 0; p < hw; p++)
    for (let c = 0; c < 3; c++) out[c * hw + p] = f(f(f(r.rgb[p * 3 + c] / 255) * 2) - 1);
  return tensor(out, [1, 3, r.height, r.width]);
}

/** An image's normalized latents: VAE mode → patchify → BN normalize, (1, 4C, h, w). */
async function imageLatents(vae: Flux2Vae, image: ReferenceImage, tap: Tap, prefix: string): Promise<F32> {
  const pixels = toSignedUnit(image);
  tap.emit(`${prefix}_preprocessed`, pixels);
  const enc = await vae.encode(pixels);
  tap.emit(`${prefix}_latent_mode`, enc.mean);
  const { mean, std } = vae.bnStats();
  return bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std);
}

/** The init image's latents x0 (1, 4C, h, w), after checking strength and mask. */
export async function encodeInit(vae: Flux2Vae, init: InitImage, tap: Tap): Promise<F32> {
  if (!(init.strength >= 0 && init.strength <= 1)) throw new InvalidRequestError(`strength must be between 0 and 1, got ${init.strength}`);
  if (init.mask && init.mask.length !== init.image.width * init.image.height) {
    throw new InvalidRequestError(`the mask has ${init.mask.length} pixels but the image is ${init.image.width}×${init.image.height}; give a mask of the same size`);
  }
  const x0 = await imageLatents(vae, init.image, tap, "image");
  tap.emit("image_latents", x0);
  return x0;
}

/** Reference images → packed tokens with ids t = 10, 20, …; each must already be cropped to the multiple. */
export async function encodeReferences(vae: Flux2Vae, refs: ReferenceImage[], multiple: number, tap: Tap): Promise<ReferenceTokens> {
  const latents: F32[] = [];
  for (const [n, r] of refs.entries()) {
    if (r.width % multiple || r.height % multiple) {
      throw new InvalidRequestError(`reference ${n} is ${r.width}×${r.height}; it must be cropped to multiples of ${multiple} first (see prepareReference)`);
    }
    latents.push(await imageLatents(vae, r, tap, `ref${n}`));
  }
  const tokens = packRefs(latents);
  const ids = refIds(latents.map((l) => ({ h: l.shape[2], w: l.shape[3] })));
  tap.emit("ref_tokens", tokens);
  tap.emit("ref_ids", ids);
  return { tokens, ids };
}

/** The init image's latents become reference 0 (t = 10); the other references move one slot on (20, 30, …). */
export function withInitReference(x0: F32, others: ReferenceTokens | null, tap: Tap): ReferenceTokens {
  const [, , h, w] = x0.shape;
  const tokens = pack(x0);
  const ids = latentIds(1, h, w, 10);
  tap.emit("condition_tokens", tokens);
  tap.emit("condition_ids", ids);
  if (!others) return { tokens, ids };
  const shifted = others.ids.data.map((v, n) => (n % 4 === 0 ? v + 10n : v));
  const C = tokens.shape[2], R = tokens.shape[1] + others.tokens.shape[1];
  return {
    tokens: tensor(concat(tokens.data, others.tokens.data), [1, R, C]),
    ids: tensor(concat(ids.data, shifted), [1, R, 4]),
  };
}

/**
 * Inpainting: after each step, the unmasked latents are put back to the init image
 * noised to the next sigma (the clean image after the last step), so only the mask
 * is repainted.
 */
export class InpaintMask {
  private constructor(private mask: F32, private x0: F32, private noise: F32, private channels: number) {}

  /** x0 (1, C, h, w) and noise (B, C, h, w) in latent layout; mask u8 (H, W) at the output size. */
  static create(maskU8: Uint8Array, x0: F32, noise: F32, height: number, width: number, tap: Tap): InpaintMask {
    const [B, C, h, w] = noise.shape;
    const mask = maskToLatent(maskU8, height, width, h, w);
    tap.emit("mask_latents", mask);
    return new InpaintMask(mask, pack(tensor(repeatBatch(x0.data, B), [B, C, h, w])), pack(noise), C);
  }

  /** Blend the latents after step k: (1 − m)·keep + m·x per token. */
  apply(x: F32, k: number, sigmas: Float32Array | Float64Array, last: boolean, tap: Tap): F32 {
    const keep = last ? this.x0.data : noiseTo(this.x0.data, this.noise.data, sigmas[k + 1]);
    if (!last) tap.emit("reference_noised", tensor(keep, x.shape));
    const N = this.mask.data.length, C = this.channels;
    const out = new Float32Array(x.data.length);
    for (let n = 0; n < out.length; n++) {
      const m = this.mask.data[Math.floor(n / C) % N];
      out[n] = f(f(f(1 - m) * keep[n]) + f(m * x.data[n]));
    }
    return tensor(out, x.shape);
  }
}

/** One (1, …) tensor's data repeated for B batch rows. */
export function repeatBatch(data: Float32Array, B: number): Float32Array {
  if (B === 1) return data;
  const out = new Float32Array(data.length * B);
  for (let b = 0; b < B; b++) out.set(data, b * data.length);
  return out;
}

export function concat<T extends Float32Array | BigInt64Array>(a: T, b: T): T {
  const out = new (a.constructor as { new (n: number): T })(a.length + b.length);
  out.set(a as any);
  out.set(b as any, a.length);
  return out;
}
