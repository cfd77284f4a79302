// One handler per case kind: compute a case's expected tensors from its inputs
// and params with the engine. Handlers only translate between the golden
// set's naming and the engine's API; the engine does the work.

import * as path from "node:path";
import type { Backend, HostTensor } from "../backend/backend.js";
import type { TypedArray } from "../io/safetensors.js";
import { Flux2Transformer } from "../models/transformer.js";
import type { CaseSet, CaseSpec, ComponentSpec, NamedTensor } from "./cases.js";

export interface CaseContext {
  set: CaseSet;
  spec: CaseSpec;
  params: Record<string, any>;
  inputs: Map<string, NamedTensor>;
  models: ModelCache;
}

export interface CaseImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface CaseOutput {
  tensors: Map<string, { shape: number[]; data: TypedArray }>;
  /** Images by the expected file path they correspond to. */
  images?: Map<string, CaseImage>;
}

export type KindHandler = (ctx: CaseContext) => Promise<CaseOutput>;

/** Loaded models shared by the cases of one run (many cases use the same weights). */
export class ModelCache {
  private cache = new Map<string, Promise<{ release(): Promise<void> }>>();

  constructor(readonly root: string, readonly backend: Backend) {}

  resolve(rel: string): string {
    return path.join(this.root, rel);
  }

  get<T extends { release(): Promise<void> }>(key: string, load: () => Promise<T>): Promise<T> {
    let p = this.cache.get(key);
    if (!p) {
      p = load();
      this.cache.set(key, p);
    }
    return p as Promise<T>;
  }

  transformer(spec: ComponentSpec): Promise<Flux2Transformer> {
    return this.get(`transformer:${spec.weights}:${spec.config}:${spec.format}`, () =>
      Flux2Transformer.fromFiles(this.backend, this.resolve(spec.weights), spec.config ? this.resolve(spec.config) : null, spec.format ?? "diffusers"));
  }

  async release(): Promise<void> {
    for (const p of this.cache.values()) await (await p.catch(() => null))?.release();
    this.cache.clear();
  }
}

export function input(ctx: CaseContext, name: string): NamedTensor {
  const t = ctx.inputs.get(name);
  if (!t) throw new Error(`case ${ctx.spec.name}: input tensor "${name}" missing from ${ctx.spec.inputs}`);
  return t;
}

export function host(t: NamedTensor): HostTensor {
  return { data: t.data as HostTensor["data"], shape: t.shape };
}

/** Position ids are given per batch element; the model reads element 0. */
function firstBatch(t: NamedTensor): BigInt64Array {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return (t.data as BigInt64Array).subarray(0, per);
}

const transformerKind: KindHandler = async (ctx) => {
  const model = await ctx.models.transformer(ctx.spec.model.transformer!);
  const output = await model.forward({
    hidden: host(input(ctx, "hidden_states")),
    text: host(input(ctx, "encoder_hidden_states")),
    timestep: input(ctx, "timestep").data as Float32Array,
    imgIds: firstBatch(input(ctx, "img_ids")),
    txtIds: firstBatch(input(ctx, "txt_ids")),
    guidance: ctx.inputs.get("guidance")?.data as Float32Array | undefined,
  });
  return { tensors: new Map([["output", output]]) };
};

export const KINDS: Record<string, KindHandler> = {
  transformer: transformerKind,
};
