// A minimal tensor: a flat typed array plus a row-major shape. The pipeline
// helpers move data between layouts themselves, so nothing more is needed here.

export type TensorData = Float32Array | BigInt64Array | Uint8Array;

export interface Tensor<D extends TensorData = TensorData> {
  data: D;
  shape: number[];
}

/** Number of elements of a shape (1 for a scalar shape []). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid dimension ${d} in shape [${shape.join(", ")}]`);
    n *= d;
  }
  return n;
}

/** Wrap data and shape, checking that they agree (a mismatch is always a bug upstream). */
export function tensor<D extends TensorData>(data: D, shape: readonly number[]): Tensor<D> {
  const n = numel(shape);
  if (data.length !== n) {
    throw new RangeError(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${n}`);
  }
  return { data, shape: [...shape] };
}

/** Check a tensor has `rank` dimensions and return its shape (for destructuring). */
export function dims(t: Tensor, rank: number, what = "tensor"): number[] {
  if (t.shape.length !== rank) {
    throw new RangeError(`${what} must have ${rank} dimensions, got shape [${t.shape.join(", ")}]`);
  }
  return t.shape;
}
