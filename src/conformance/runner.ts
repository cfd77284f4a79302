// `flux2 conformance DIR`: run every case of a golden set through the engine
// and compare with the reference's results (see the set README's "Runner contract").

import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import type { Backend } from "../backend/backend.js";
import { OrtBackend } from "../backend/ort.js";
import { writeSafetensors, type DType, type TypedArray } from "../io/safetensors.js";
import { loadCaseSet, readExpected, readInputs, readParams, type CaseSet, type CaseSpec, type NamedTensor } from "./cases.js";
import { compareValues } from "./compare.js";
import { KINDS, ModelCache, type CaseOutput } from "./kinds.js";

export interface RunOptions {
  kinds?: string[];
  /** Only cases whose name contains one of these strings. */
  cases?: string[];
  writeOutputs?: string;
  backend?: Backend;
  log?: (line: string) => void;
}

export type Status = "PASS" | "FAIL" | "MISSING" | "COMPUTED";

export interface CaseReport {
  name: string;
  kind: string;
  status: Status;
  worst?: string;
  maxAbs?: number;
  detail?: string;
}

export interface RunSummary {
  reports: CaseReport[];
  passed: number;
  failed: number;
  missing: number;
  computed: number;
}

export async function runConformance(root: string, opts: RunOptions = {}): Promise<RunSummary> {
  const set = loadCaseSet(root);
  const log = opts.log ?? ((l: string) => console.log(l));
  if (opts.kinds) {
    const unknown = opts.kinds.filter((k) => !set.kinds.includes(k));
    if (unknown.length) throw new Error(`unknown kind(s) ${unknown.join(", ")}; this set has: ${set.kinds.join(", ")}`);
  }
  const backend = opts.backend ?? new OrtBackend();
  const models = new ModelCache(set.root, backend);
  const reports: CaseReport[] = [];
  try {
    for (const c of set.cases) {
      if (opts.kinds && !opts.kinds.includes(c.kind)) continue;
      if (opts.cases && !opts.cases.some((s) => c.name.includes(s))) continue;
      const r = await runCase(set, c, models, opts.writeOutputs);
      reports.push(r);
      log(formatReport(r));
    }
  } finally {
    await models.release();
  }
  const count = (s: Status) => reports.filter((r) => r.status === s).length;
  const summary = { reports, passed: count("PASS"), failed: count("FAIL"), missing: count("MISSING"), computed: count("COMPUTED") };
  if (summary.missing) log(`${summary.missing} case(s) MISSING: their kind is not implemented yet`);
  if (summary.computed) log(`${summary.computed} case(s) computed and written without expected results to compare`);
  log(`${summary.passed} passed, ${summary.failed} failed`);
  return summary;
}

function formatReport(r: CaseReport): string {
  const parts = [r.status.padEnd(8), r.name];
  if (r.worst !== undefined) parts.push(`worst=${r.worst}`, `max_abs=${r.maxAbs?.toExponential(2)}`);
  if (r.detail) parts.push(`(${r.detail})`);
  return parts.join("  ");
}

async function runCase(set: CaseSet, c: CaseSpec, models: ModelCache, out?: string): Promise<CaseReport> {
  const handler = KINDS[c.kind];
  if (!handler) return { name: c.name, kind: c.kind, status: "MISSING", detail: `kind "${c.kind}" is not implemented yet` };
  let result: CaseOutput;
  try {
    result = await handler({ set, spec: c, params: readParams(set, c), inputs: readInputs(set, c), models });
  } catch (e) {
    return { name: c.name, kind: c.kind, status: "FAIL", detail: `error: ${(e as Error).message}` };
  }
  if (out) await writeOutputs(out, c, result);
  const expected = readExpected(set, c);
  if (!expected) return { name: c.name, kind: c.kind, status: "COMPUTED" };
  return await compareCase(set, c, result, expected);
}

interface Check {
  what: string;
  ok: boolean;
  ratio: number;
  maxAbs: number;
  reason?: string;
}

async function compareCase(set: CaseSet, c: CaseSpec, result: CaseOutput, expected: Map<string, NamedTensor>): Promise<CaseReport> {
  const checks: Check[] = [];
  for (const [name, meta] of Object.entries(c.expected_tensors)) {
    const rule = c.tolerance.tensors[name];
    const want = expected.get(name);
    const got = result.tensors.get(name);
    if (!want) { checks.push({ what: name, ok: false, ratio: Infinity, maxAbs: Infinity, reason: "not in the expected file" }); continue; }
    if (!got) { checks.push({ what: name, ok: false, ratio: Infinity, maxAbs: Infinity, reason: "not computed" }); continue; }
    const cmp = compareValues(got.data as ArrayLike<number | bigint>, got.shape, want.data as ArrayLike<number | bigint>, meta.shape, rule);
    checks.push({ what: name, ok: cmp.ok, maxAbs: cmp.maxAbs, ratio: cmp.maxAbs / Math.max(rule.abs, 1e-12), reason: cmp.reason });
  }
  for (const file of c.expected_files) {
    const rule = c.tolerance.files[file];
    const mine = result.images?.get(file);
    const p = path.join(set.root, file);
    if (!mine) { checks.push({ what: file, ok: false, ratio: Infinity, maxAbs: Infinity, reason: "image not produced" }); continue; }
    if (!fs.existsSync(p)) continue;
    const ref = await sharp(p).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const cmp = compareValues(mine.rgb, [mine.height, mine.width, 3], ref.data, [ref.info.height, ref.info.width, 3], rule);
    checks.push({ what: path.basename(file), ok: cmp.ok, maxAbs: cmp.maxAbs, ratio: cmp.maxAbs / Math.max(rule.abs, 1e-12), reason: cmp.reason });
  }
  const failed = checks.filter((k) => !k.ok);
  const worst = (failed.length ? failed : checks).reduce((a, b) => (b.ratio > a.ratio ? b : a), checks[0]);
  const detail = failed.length ? failed.slice(0, 3).map((k) => `${k.what}: ${k.reason ?? `max_abs ${k.maxAbs.toExponential(2)}`}`).join("; ") : undefined;
  return { name: c.name, kind: c.kind, status: failed.length ? "FAIL" : "PASS", worst: worst?.what, maxAbs: worst?.maxAbs, detail };
}

function castTo(dtype: DType, data: TypedArray): TypedArray {
  const src = data as ArrayLike<number | bigint>;
  const n = src.length;
  switch (dtype) {
    case "F64": return data instanceof Float64Array ? data : Float64Array.from({ length: n }, (_, i) => Number(src[i]));
    case "F32": return data instanceof Float32Array ? data : Float32Array.from({ length: n }, (_, i) => Number(src[i]));
    case "I64": return data instanceof BigInt64Array ? data : BigInt64Array.from({ length: n }, (_, i) => BigInt(src[i]));
    case "U8": return data instanceof Uint8Array ? data : Uint8Array.from({ length: n }, (_, i) => Number(src[i]));
    default: return data;
  }
}

async function writeOutputs(out: string, c: CaseSpec, result: CaseOutput): Promise<void> {
  const tensors: Record<string, { dtype: DType; shape: number[]; data: TypedArray }> = {};
  for (const [name, meta] of Object.entries(c.expected_tensors)) {
    const t = result.tensors.get(name);
    if (t) tensors[name] = { dtype: meta.dtype, shape: t.shape, data: castTo(meta.dtype, t.data) };
  }
  writeSafetensors(path.join(out, `${c.name}.safetensors`), tensors, { case: c.name, kind: c.kind, producer: "flux2.ts" });
  for (const [file, img] of result.images ?? []) {
    const dst = path.join(out, file);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    await sharp(Buffer.from(img.rgb), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toFile(dst);
  }
}
