// The golden set's contract: cases.json, per-case files, tolerance rules.
// (See "Runner contract" in the set's README.)

import * as fs from "node:fs";
import * as path from "node:path";
import { readAll, type DType, type TypedArray } from "../io/safetensors.js";

export interface ComponentSpec {
  config: string | null;
  weights: string;
  format?: "bfl";
}

/** The model files a conformance case runs (not the server's ModelSpec, a served model). */
export interface CaseModel {
  transformer?: ComponentSpec;
  vae?: ComponentSpec;
  text_encoder?: ComponentSpec;
  checkpoint?: string;
}

export interface TensorRule {
  abs: number;
  min_identical_pixels?: number;
}

export interface FileRule extends TensorRule {
  tensor: string;
  index: number;
}

export interface CaseSpec {
  name: string;
  kind: string;
  model: CaseModel;
  params: string;
  inputs: string | null;
  input_files: string[];
  expected: string;
  expected_files: string[];
  expected_tensors: Record<string, { dtype: DType; shape: number[] }>;
  tolerance: { tensors: Record<string, TensorRule>; files: Record<string, FileRule> };
}

export interface CaseSet {
  root: string;
  kinds: string[];
  cases: CaseSpec[];
}

export interface NamedTensor {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export function loadCaseSet(root: string): CaseSet {
  const file = path.join(root, "cases.json");
  if (!fs.existsSync(file)) throw new Error(`${root}: no cases.json here — point the runner at a golden set folder`);
  const raw = JSON.parse(fs.readFileSync(file, "utf8"));
  if (raw.format !== 1) throw new Error(`${file}: unsupported format ${raw.format} (this runner reads format 1)`);
  return { root: path.resolve(root), kinds: raw.kinds, cases: raw.cases };
}

export function readParams(set: CaseSet, c: CaseSpec): Record<string, any> {
  return JSON.parse(fs.readFileSync(path.join(set.root, c.params), "utf8"));
}

export function readInputs(set: CaseSet, c: CaseSpec): Map<string, NamedTensor> {
  return c.inputs ? readAll(path.join(set.root, c.inputs)) : new Map();
}

/** Expected tensors, or null when the set copy has no expected file. */
export function readExpected(set: CaseSet, c: CaseSpec): Map<string, NamedTensor> | null {
  const p = path.join(set.root, c.expected);
  return fs.existsSync(p) ? readAll(p) : null;
}
