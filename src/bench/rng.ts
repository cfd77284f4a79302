// The benchmarks' one random generator (random checkpoints, inputs and LoRA factors): a fast
// seeded generator for billions of values (speed over statistical quality). One xorshift32 step per value; the four bytes of the word are summed
// (Irwin–Hall of 4 uniform bytes, mean 510, standard deviation 147.8), which is close enough
// to a standard normal for weights whose only job is to keep activations finite.

import { DTYPE_BYTES, type DType } from "../io/safetensors.js";
import { f32ArrayToBf16 } from "../io/dtype.js";

const IH_MEAN = 510;
const IH_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** A 32-bit seed from a tensor name and a global seed (FNV-1a), never 0. */
export function seedFor(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h || 1;
}

export class FastNormal {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }

  /** Fill `out` with approximately N(mean, std²) values. */
  fill(out: Float32Array, std: number, mean = 0): void {
    let s = this.s;
    const k = std / IH_STD, c = mean - IH_MEAN * k;
    for (let i = 0; i < out.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      const u = s >>> 0;
      out[i] = ((u & 255) + ((u >>> 8) & 255) + ((u >>> 16) & 255) + (u >>> 24)) * k + c;
    }
    this.s = s;
  }
}

/**
 * Stream the bytes of a random tensor in `dtype` (F32 or BF16): N(mean, std²) values, or the
 * constant `mean` when std is 0, generated in chunks of `chunk` values.
 */
export function* randomChunks(n: number, dtype: DType, std: number, mean: number, seed: number, chunk = 1 << 22): Generator<Uint8Array> {
  if (dtype !== "F32" && dtype !== "BF16") throw new Error(`random tensors are F32 or BF16, not ${dtype}`);
  const rng = new FastNormal(seed);
  const f = new Float32Array(Math.min(chunk, n));
  const h = dtype === "BF16" ? new Uint16Array(f.length) : null;
  for (let done = 0; done < n; done += f.length) {
    const m = Math.min(f.length, n - done);
    const part = f.subarray(0, m);
    if (std === 0) part.fill(mean);
    else rng.fill(part, std, mean);
    if (h) {
      f32ArrayToBf16(part, h);
      yield new Uint8Array(h.buffer, 0, m * DTYPE_BYTES.BF16);
    } else {
      yield new Uint8Array(f.buffer, 0, m * 4);
    }
  }
}

/** A float32 tensor of approximately N(mean, std²) values (benchmark inputs, LoRA factors). */
export function randomTensor(seed: number, shape: number[], std = 1, mean = 0): { data: Float32Array; shape: number[] } {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  new FastNormal(seed).fill(data, std, mean);
  return { data, shape };
}
