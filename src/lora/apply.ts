// Applying LoRA adapters (src/lora/formats.ts) to the FLUX.2 transformer, two ways:
//
// * fused: W' = W + lora_scale · Σ_a weight_a · scale_a · B_a A_a, computed once in
//   float32 (float64 accumulation) and written into TransformerWeights.overrides. The
//   graph is the plain one; changing an adapter or its strength means fusing again and
//   building a new session. Memory: a float32 copy of every changed weight.
// * runtime: every targeted linear layer computes y = x Wᵀ + Σ_a s_a · ((x A_aᵀ) B_aᵀ)
//   (dense deltas: s_a · x ΔW_aᵀ), where s_a = weight_a · lora_scale · scale_a and
//   weight_a · lora_scale is a scalar graph INPUT per adapter. Strengths can change on
//   every run, and a strength of 0 disables an adapter, without rebuilding the session.
//   norm_out (read by row blocks) gets its delta rows added to the weight in the graph.
//
// Switching to a different LoRA set between jobs (Flux2LoraHost): the base checkpoint
// stays one opened WeightSet (headers only in JS; ONNX Runtime maps or reads the tensor
// bytes from the same files), a fresh TransformerWeights view is made over it, the new
// adapters are fused / attached, and a new session is built; the old one is released.
// Nothing of the base is converted or copied in JS. To switch among a known set of
// adapters without any rebuild, attach all of them at runtime and set the strengths of
// the unused ones to 0.

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import type { Backend, HostTensor } from "../backend/backend.js";
import { SafetensorsFile, WeightSet, type TensorInfo } from "../io/safetensors.js";
import { Graph, dataSource, type Value } from "../onnx/graph.js";
import { Flux2Transformer, readTransformerConfig, type TransformerConfig } from "../models/transformer.js";
import { TransformerWeights, type LoraGraphHook, type TransformerFormat } from "../models/transformer_weights.js";
import { LoraError, type LoraAdapter, type LoraDelta, type LoraReport, type LowRankDelta } from "./formats.js";

export interface AdapterUse {
  adapter: LoraAdapter;
  /** Per-adapter strength (diffusers `set_adapters` weight); default 1. */
  weight?: number;
}

export interface Binding {
  adapter: LoraAdapter;
  /** Targets the model has, in the adapter's order. */
  targets: string[];
  /** The adapter's report against this model: targets it lacks move to `unknown`. */
  report: LoraReport;
}

/**
 * Check an adapter against a model: every target the model has must have the delta's
 * shape (else refuse, naming the first mismatch); targets the model lacks are reported;
 * an adapter of which nothing applies is refused.
 */
export function bindAdapter(adapter: LoraAdapter, weights: TransformerWeights): Binding {
  const targets: string[] = [];
  const missing: string[] = [];
  for (const [name, d] of adapter.deltas) {
    if (!weights.has(name)) {
      missing.push(name);
      continue;
    }
    const shape = weights.shape(name);
    if (shape.length !== 2 || shape[0] !== d.outFeatures || shape[1] !== d.inFeatures) {
      throw new LoraError(
        `LoRA "${adapter.name}" (${adapter.source}) does not fit this transformer: weight "${name}" is [${shape}] ` +
          `in the model but the LoRA's delta for it is [${d.outFeatures}, ${d.inFeatures}] (from ${d.source}). ` +
          `It was made for a different FLUX.2 model (e.g. klein 9B vs klein 4B, or dev); load it with the model it was trained on`,
      );
    }
    targets.push(name);
  }
  if (!targets.length) {
    const seen = [...missing, ...adapter.report.unknown].slice(0, 5);
    throw new LoraError(
      `LoRA "${adapter.name}" (${adapter.source}): nothing in it applies to this FLUX.2 transformer` +
        (seen.length ? ` (e.g. ${seen.map((k) => `"${k}"`).join(", ")})` : " (no LoRA tensors found)") +
        (adapter.report.unsupportedTextEncoder.length ? `; it has ${adapter.report.unsupportedTextEncoder.length} text-encoder keys, which are not supported` : ""),
    );
  }
  const r = adapter.report;
  const report: LoraReport = {
    applied: targets, ignored: [...r.ignored], unknown: [...r.unknown, ...missing],
    unsupportedTextEncoder: [...r.unsupportedTextEncoder],
    notes: missing.length ? [...r.notes, `${missing.length} target weight(s) are not in this model, e.g. "${missing[0]}"`] : [...r.notes],
  };
  return { adapter, targets, report };
}

// ---------------------------------------------------------------------------
// Fusing

interface Previous {
  mem?: { data: Float32Array; shape: number[] };
  file?: TensorInfo;
}

export interface FuseResult {
  /** Diffusers names of the weights written into overrides. */
  changed: string[];
  /** One per adapter, in order. */
  reports: LoraReport[];
  /** The file holding the fused weights (with `spillFile`), else null. */
  spillFile: string | null;
  /** What the overrides held before, for unfuseLoras. */
  previous: Map<string, Previous>;
}

export interface FuseOptions {
  /**
   * Write the fused weights (float32) to this .safetensors file and point
   * TransformerWeights.fileOverrides at it, instead of holding them in memory. Needed for
   * real checkpoints: in-memory overrides are inlined into the ONNX protobuf (2 GB cap),
   * while a file is mapped by ONNX Runtime like the base weights. The caller owns the file.
   */
  spillFile?: string;
}

/** In-memory fused weights above this need `spillFile` (they are inlined into the ONNX model). */
const MAX_INLINE_FUSED = 1 << 30;

interface FusePlan {
  bound: { use: AdapterUse; b: Binding }[];
  changed: string[];
  shapes: number[][];
}

function planFuse(weights: TransformerWeights, uses: AdapterUse[], opts: FuseOptions): FusePlan {
  const bound = uses.map((u) => ({ use: u, b: bindAdapter(u.adapter, weights) }));
  const changed: string[] = [];
  const seen = new Set<string>();
  for (const { b } of bound) for (const t of b.targets) if (!seen.has(t)) { seen.add(t); changed.push(t); }
  const shapes = changed.map((n) => weights.shape(n));
  const bytes = shapes.reduce((a, s) => a + 4 * s[0] * s[1], 0);
  if (!opts.spillFile && bytes > MAX_INLINE_FUSED) {
    throw new LoraError(
      `fusing would hold ${(bytes / 2 ** 30).toFixed(1)} GiB of float32 weights in memory and inline them into the ONNX model ` +
        `(protobuf caps models at 2 GB); pass a spillFile to fuse into a file, or apply the adapters at runtime instead`,
    );
  }
  return { bound, changed, shapes };
}

/** Where fused weights go, in order: memory, or streamed to the spill file; then committed to the weights. */
class FuseSink {
  private spill: F32Writer | null;
  private mem = new Map<string, { data: Float32Array; shape: number[] }>();
  private next = 0;

  constructor(private weights: TransformerWeights, private plan: FusePlan, private opts: FuseOptions) {
    this.spill = opts.spillFile ? new F32Writer(opts.spillFile, plan.changed.map((n, i) => ({ name: n, shape: plan.shapes[i] }))) : null;
  }

  add(W: { data: Float32Array; shape: number[] }): void {
    const name = this.plan.changed[this.next++];
    if (this.spill) this.spill.append(W.data);
    else this.mem.set(name, W);
  }

  abort(): void {
    this.spill?.abort();
  }

  commit(): FuseResult {
    const { weights, plan } = this;
    const infos = this.spill?.finish();
    const previous = new Map<string, Previous>();
    for (const name of plan.changed) {
      previous.set(name, { mem: weights.overrides.get(name), file: weights.fileOverrides.get(name) });
      if (infos) {
        weights.overrides.delete(name);
        weights.fileOverrides.set(name, infos.get(name)!);
      } else {
        weights.overrides.set(name, this.mem.get(name)!);
      }
    }
    return { changed: plan.changed, reports: plan.bound.map(({ b }) => b.report), spillFile: this.opts.spillFile ?? null, previous };
  }
}

/**
 * W' = W + loraScale · Σ weight_a · scale_a · B_a A_a for every targeted weight, into
 * weights.overrides (float32) or, with `spillFile`, weights.fileOverrides. Computed in
 * JS with float64 accumulation: exact, but slow for real checkpoints (fuseLorasWith).
 */
export function fuseLoras(weights: TransformerWeights, uses: AdapterUse[], loraScale = 1, opts: FuseOptions = {}): FuseResult {
  const plan = planFuse(weights, uses, opts);
  const sink = new FuseSink(weights, plan, opts);
  try {
    for (const name of plan.changed) sink.add(fusedWeight(weights, plan.bound, name, loraScale));
  } catch (e) {
    sink.abort();
    throw e;
  }
  return sink.commit();
}

/**
 * fuseLoras with the low-rank products B_a A_a computed by the backend (one MatMul
 * session, float32), for real checkpoints: ~100x faster than JS on large weights.
 */
export async function fuseLorasWith(backend: Backend, weights: TransformerWeights, uses: AdapterUse[], loraScale = 1, opts: FuseOptions = {}): Promise<FuseResult> {
  const plan = planFuse(weights, uses, opts);
  const g = new Graph("lora_fuse_delta");
  g.output(g.matmul(g.input("B", "F32", ["out", "rank"]), g.input("A", "F32", ["rank", "in"])), "delta", "F32", ["out", "in"]);
  const session = await backend.createSession(g);
  const sink = new FuseSink(weights, plan, opts);
  try {
    for (const name of plan.changed) {
      const terms = fuseTerms(plan.bound, name, loraScale).filter((t) => t.coef !== 0);
      const base = weights.float32(name);
      const [out, inF] = base.shape;
      const W = base.data;
      const low = terms.filter((t) => t.d.kind === "lowrank") as { d: LowRankDelta; coef: number }[];
      if (low.length) {
        // [coef_1 B_1 | coef_2 B_2 | ...] @ [A_1; A_2; ...] = Σ coef_a B_a A_a
        const R = low.reduce((a, t) => a + t.d.rank, 0);
        const A = new Float32Array(R * inF), B = new Float32Array(out * R);
        let r0 = 0;
        for (const { d, coef } of low) {
          A.set(d.A, r0 * inF);
          for (let o = 0; o < out; o++) for (let k = 0; k < d.rank; k++) B[o * R + r0 + k] = coef * d.B[o * d.rank + k];
          r0 += d.rank;
        }
        const res = await session.run({ A: { data: A, shape: [R, inF] }, B: { data: B, shape: [out, R] } });
        const delta = res.delta.data as Float32Array;
        for (let i = 0; i < W.length; i++) W[i] += delta[i];
      }
      for (const { d, coef } of terms) {
        if (d.kind !== "dense") continue;
        for (let i = 0; i < W.length; i++) W[i] += coef * d.W[i];
      }
      sink.add({ data: W, shape: base.shape });
    }
  } catch (e) {
    sink.abort();
    throw e;
  } finally {
    await session.release();
  }
  return sink.commit();
}

function fuseTerms(bound: { use: AdapterUse; b: Binding }[], name: string, loraScale: number): { d: LoraDelta; coef: number }[] {
  const terms: { d: LoraDelta; coef: number }[] = [];
  for (const { use, b } of bound) {
    if (!b.targets.includes(name)) continue;
    const d = use.adapter.deltas.get(name)!;
    terms.push({ d, coef: loraScale * (use.weight ?? 1) * d.scale });
  }
  return terms;
}

/** One fused weight, from the current weights (float32, float64 accumulation of the deltas). */
function fusedWeight(
  weights: TransformerWeights, bound: { use: AdapterUse; b: Binding }[], name: string, loraScale: number,
): { data: Float32Array; shape: number[] } {
  const terms = fuseTerms(bound, name, loraScale);
  const base = weights.float32(name);
  const [out, inF] = base.shape;
  const W = base.data;
  const acc = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    acc.fill(0);
    for (const { d, coef } of terms) {
      if (coef === 0) continue;
      if (d.kind === "lowrank") {
        for (let k = 0; k < d.rank; k++) {
          const bv = coef * d.B[o * d.rank + k];
          if (bv === 0) continue;
          const ao = k * inF;
          for (let i = 0; i < inF; i++) acc[i] += bv * d.A[ao + i];
        }
      } else {
        const wo = o * inF;
        for (let i = 0; i < inF; i++) acc[i] += coef * d.W[wo + i];
      }
    }
    const wo = o * inF;
    for (let i = 0; i < inF; i++) W[wo + i] += acc[i];
  }
  return { data: W, shape: base.shape };
}

/** Undo fuseLoras exactly (restores what the overrides held before; base files are never changed). */
export function unfuseLoras(weights: TransformerWeights, fused: FuseResult): void {
  for (const [name, prev] of fused.previous) {
    if (prev.mem) weights.overrides.set(name, prev.mem);
    else weights.overrides.delete(name);
    if (prev.file) weights.fileOverrides.set(name, prev.file);
    else weights.fileOverrides.delete(name);
  }
}

/** Streams float32 tensors into a .safetensors file (the header first: every shape is known up front). */
class F32Writer {
  private fd: number;
  private tmp: string;
  private next = 0;

  constructor(readonly file: string, readonly entries: { name: string; shape: number[] }[]) {
    const header: Record<string, unknown> = { __metadata__: { format: "pt", producer: "flux2.ts lora fuse" } };
    let off = 0;
    for (const e of entries) {
      const n = 4 * e.shape.reduce((a, b) => a * b, 1);
      header[e.name] = { dtype: "F32", shape: e.shape, data_offsets: [off, off + n] };
      off += n;
    }
    let json = JSON.stringify(header);
    json += " ".repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.tmp = `${file}.tmp-${process.pid}`;
    this.fd = fs.openSync(this.tmp, "w");
    this.write(len);
    this.write(Buffer.from(json, "utf8"));
  }

  private write(b: Uint8Array) {
    for (let done = 0; done < b.byteLength;) done += fs.writeSync(this.fd, b, done, Math.min(b.byteLength - done, 1 << 30));
  }

  append(data: Float32Array) {
    const e = this.entries[this.next++];
    if (!e || data.length !== e.shape.reduce((a, b) => a * b, 1)) throw new Error("F32Writer: tensors out of order");
    this.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  finish(): Map<string, TensorInfo> {
    fs.closeSync(this.fd);
    fs.renameSync(this.tmp, this.file);
    const f = SafetensorsFile.open(this.file);
    try {
      return new Map(this.entries.map((e) => [e.name, f.info(e.name)]));
    } finally {
      f.close();
    }
  }

  abort() {
    try {
      fs.closeSync(this.fd);
    } catch { /* already closed */ }
    fs.rmSync(this.tmp, { force: true });
  }
}

// ---------------------------------------------------------------------------
// Runtime side paths

interface RuntimeEntry {
  id: string;
  adapter: LoraAdapter;
  weight: number;
  input: string;
  targets: Set<string>;
  report: LoraReport;
}

/** Runtime LoRA adapters: the graph hook of TransformerWeights.lora. */
export class RuntimeLoras implements LoraGraphHook {
  private entries: RuntimeEntry[] = [];
  private loraScale: number;
  private perGraph = new WeakMap<Graph, Map<string, Value>>();

  constructor(weights: TransformerWeights, uses: AdapterUse[], opts: { loraScale?: number } = {}) {
    this.loraScale = opts.loraScale ?? 1;
    uses.forEach((u, i) => {
      const id = u.adapter.name;
      if (this.entries.some((e) => e.id === id)) throw new LoraError(`two runtime adapters are named "${id}"; give each a distinct name`);
      const b = bindAdapter(u.adapter, weights);
      this.entries.push({ id, adapter: u.adapter, weight: u.weight ?? 1, input: `lora_strength_${i}`, targets: new Set(b.targets), report: b.report });
    });
  }

  /** Adapter names, in order. */
  get names(): string[] {
    return this.entries.map((e) => e.id);
  }

  get reports(): LoraReport[] {
    return this.entries.map((e) => e.report);
  }

  /** Set one adapter's strength (0 disables it); takes effect on the next run. */
  setWeight(name: string, weight: number): void {
    this.entry(name).weight = weight;
  }

  /** Set several strengths; adapters not named keep theirs (or all others to 0 with `exclusive`). */
  setWeights(weights: Record<string, number>, exclusive = false): void {
    for (const name of Object.keys(weights)) this.entry(name);
    for (const e of this.entries) {
      if (Object.prototype.hasOwnProperty.call(weights, e.id)) e.weight = weights[e.id];
      else if (exclusive) e.weight = 0;
    }
  }

  weight(name: string): number {
    return this.entry(name).weight;
  }

  /** The global multiplier (diffusers `attention_kwargs={"scale": s}` / lora_scale). */
  setScale(scale: number): void {
    this.loraScale = scale;
  }

  private entry(name: string): RuntimeEntry {
    const e = this.entries.find((x) => x.id === name);
    if (!e) throw new LoraError(`no runtime adapter named "${name}" (have: ${this.names.join(", ") || "none"})`);
    return e;
  }

  /** A value per graph, created once (graph inputs and LoRA matrices). */
  private once(g: Graph, key: string, make: () => Value): Value {
    let m = this.perGraph.get(g);
    if (!m) this.perGraph.set(g, (m = new Map()));
    let v = m.get(key);
    if (!v) m.set(key, (v = make()));
    return v;
  }

  private coef(g: Graph, i: number, scale: number): Value {
    const strength = this.once(g, `in:${i}`, () => g.input(this.entries[i].input, "F32", []));
    return scale === 1 ? strength : g.mul(strength, g.scalar(scale));
  }

  linear(g: Graph, x: Value, y: Value, name: string): Value {
    let sum: Value | null = null;
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i];
      if (!e.targets.has(name)) continue;
      const d = e.adapter.deltas.get(name)!;
      const tag = `lora${i}:${name}`;
      const coef = this.coef(g, i, d.scale);
      let t: Value;
      if (d.kind === "lowrank") {
        const A = this.once(g, `${tag}:A`, () => g.weight(`${tag}:A`, dataSource(d.A, "F32", [d.rank, d.inFeatures])));
        const B = this.once(g, `${tag}:B`, () => g.weight(`${tag}:B`, dataSource(d.B, "F32", [d.outFeatures, d.rank])));
        t = g.linear(g.mul(g.linear(x, A), coef), B);
      } else {
        const W = this.once(g, `${tag}:W`, () => g.weight(`${tag}:W`, dataSource(d.W, "F32", [d.outFeatures, d.inFeatures])));
        t = g.mul(g.linear(x, W), coef);
      }
      sum = sum ? g.add(sum, t) : t;
    }
    return sum ? g.add(y, sum) : y;
  }

  rows(g: Graph, name: string, start: number, count: number, base: Value): Value {
    let sum: Value | null = null;
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i];
      if (!e.targets.has(name)) continue;
      const d = e.adapter.deltas.get(name)!;
      const tag = `lora${i}:${name}[${start}:${start + count}]`;
      const coef = this.coef(g, i, d.scale);
      let t: Value;
      if (d.kind === "lowrank") {
        const A = this.once(g, `lora${i}:${name}:A`, () => g.weight(`lora${i}:${name}:A`, dataSource(d.A, "F32", [d.rank, d.inFeatures])));
        const B = g.weight(`${tag}:B`, dataSource(d.B.slice(start * d.rank, (start + count) * d.rank), "F32", [count, d.rank]));
        t = g.mul(g.matmul(B, A), coef);
      } else {
        const W = g.weight(`${tag}:W`, dataSource(d.W.slice(start * d.inFeatures, (start + count) * d.inFeatures), "F32", [count, d.inFeatures]));
        t = g.mul(W, coef);
      }
      sum = sum ? g.add(sum, t) : t;
    }
    return sum ? g.add(base, sum) : base;
  }

  feeds(): Record<string, HostTensor> {
    const out: Record<string, HostTensor> = {};
    for (const e of this.entries) out[e.input] = { data: Float32Array.of(e.weight * this.loraScale), shape: [] };
    return out;
  }
}

/** Attach runtime adapters to weights (before building the transformer from them). */
export function attachRuntimeLoras(weights: TransformerWeights, uses: AdapterUse[], opts: { loraScale?: number } = {}): RuntimeLoras {
  const r = new RuntimeLoras(weights, uses, opts);
  weights.lora = r;
  return r;
}

// ---------------------------------------------------------------------------
// One base checkpoint, changing LoRA sets

export interface LoraSetup {
  /** Fused into the weights (fixed strengths). */
  fused?: AdapterUse[];
  /** Runtime side paths (strengths adjustable per run). */
  runtime?: AdapterUse[];
  /** Global multiplier for both; default 1. */
  loraScale?: number;
  /** Fuse into this file instead of memory (see FuseOptions.spillFile). */
  spillFile?: string;
}

export interface ActiveLoras {
  model: Flux2Transformer;
  weights: TransformerWeights;
  runtime: RuntimeLoras | null;
  fused: FuseResult | null;
}

/**
 * A base transformer checkpoint opened once, serving jobs with different LoRA sets.
 * activate() builds the session for a set and releases the previous one.
 */
export class Flux2LoraHost {
  private active: ActiveLoras | null = null;

  constructor(readonly backend: Backend, readonly set: WeightSet, readonly format: TransformerFormat, readonly config: TransformerConfig) {}

  static open(backend: Backend, weightsPath: string, configPath: string | null, format?: TransformerFormat): Flux2LoraHost {
    const set = WeightSet.open(weightsPath);
    try {
      const fmt = format ?? TransformerWeights.detectFormat(set);
      const config = configPath ? readTransformerConfig(configPath) : new TransformerWeights(set, fmt).inferConfig();
      return new Flux2LoraHost(backend, set, fmt, config);
    } catch (e) {
      set.close();
      throw e;
    }
  }

  /** The current session, if any. */
  get current(): ActiveLoras | null {
    return this.active;
  }

  /** Build a session for `setup` (no adapters: the plain model). The previous session is released first. */
  async activate(setup: LoraSetup = {}): Promise<ActiveLoras> {
    const weights = new TransformerWeights(this.set, this.format);
    const fused = setup.fused?.length ? await fuseLorasWith(this.backend, weights, setup.fused, setup.loraScale ?? 1, { spillFile: setup.spillFile }) : null;
    const runtime = setup.runtime?.length ? attachRuntimeLoras(weights, setup.runtime, { loraScale: setup.loraScale }) : null;
    await this.releaseModel();
    const model = await Flux2Transformer.load(this.backend, this.config, weights);
    this.active = { model, weights, runtime, fused };
    return this.active;
  }

  private async releaseModel(): Promise<void> {
    const a = this.active;
    this.active = null;
    await a?.model.release();
  }

  async release(): Promise<void> {
    await this.releaseModel();
    this.set.close();
  }
}
