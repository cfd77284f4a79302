// Shared helpers for tests that read the golden fixtures copied into testdata/golden.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readAll, type DType, type TypedArray } from "../src/io/safetensors.js";
import type { TransformerInputs } from "../src/models/transformer.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// Compiled tests live in dist/test; the data lives at the repository root.
export const repoRoot = path.resolve(here, here.includes(`${path.sep}dist${path.sep}`) ? "../.." : "..");
export const goldenDir = path.join(repoRoot, "testdata", "golden");

export interface Loaded {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export function goldenPath(rel: string): string {
  return path.join(goldenDir, rel);
}

/** Tensors of `<name>.inputs.safetensors` / `<name>.expected.safetensors` (empty map if absent). */
export function loadTensors(rel: string): Map<string, Loaded> {
  const p = goldenPath(rel);
  return fs.existsSync(p) ? readAll(p) : new Map();
}

export function loadParams(name: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(goldenPath(`${name}.params.json`), "utf8"));
}

export function maxAbsDiff(a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(Number(a[i]) - Number(b[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** The transformer inputs of a golden forward case (ids of batch element 0, as the model reads them). */
export function transformerCaseInputs(rel: string): TransformerInputs {
  const t = loadTensors(rel);
  const get = (n: string) => t.get(n)!;
  const per = (n: string) => (get(n).data as BigInt64Array).subarray(0, get(n).shape.slice(1).reduce((a, b) => a * b, 1));
  return {
    hidden: { data: get("hidden_states").data as Float32Array, shape: get("hidden_states").shape },
    text: { data: get("encoder_hidden_states").data as Float32Array, shape: get("encoder_hidden_states").shape },
    timestep: get("timestep").data as Float32Array, imgIds: per("img_ids"), txtIds: per("txt_ids"),
  };
}
