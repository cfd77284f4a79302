// Conformance handlers for the golden set's LoRA kinds (README "lora_fuse",
// "lora_forward"). The lead registers them in src/conformance/kinds.ts:
//   lora_forward: loraForwardKind, lora_fuse: loraFuseKind
//
// lora_forward runs the adapters as runtime side paths: one session per set of LoRA
// files (cached in the run's ModelCache) whose strengths are graph inputs, so cases that
// only change strengths reuse it. lora_fuse fuses into a fresh view of the base weights
// and returns every weight it changed (diffusers names) plus the forward output.

import type { HostTensor } from "../backend/backend.js";
import { WeightSet } from "../io/safetensors.js";
import { Flux2Transformer, readTransformerConfig } from "../models/transformer.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import type { ComponentSpec } from "./cases.js";
import { host, input, type CaseContext, type CaseOutput, type KindHandler } from "./kinds.js";
import { loadLoraFile, type LoraAdapter } from "../lora/formats.js";
import { attachRuntimeLoras, fuseLoras, type RuntimeLoras } from "../lora/apply.js";

interface AdapterParam {
  file: string;
  name?: string;
  weight?: number;
}

function adapterParams(ctx: CaseContext): AdapterParam[] {
  const a = ctx.params.adapters ?? [];
  if (!Array.isArray(a)) throw new Error(`case ${ctx.spec.name}: params.adapters must be a list of {file, name, weight}`);
  return a as AdapterParam[];
}

function transformerSpec(ctx: CaseContext): ComponentSpec {
  const spec = ctx.spec.model.transformer;
  if (!spec) throw new Error(`case ${ctx.spec.name}: no transformer model`);
  return spec;
}

/** Position ids are given per batch element; the model reads element 0. */
function firstBatch(ctx: CaseContext, name: string): BigInt64Array {
  const t = input(ctx, name);
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return (t.data as BigInt64Array).subarray(0, per);
}

async function forward(ctx: CaseContext, model: Flux2Transformer): Promise<HostTensor> {
  return model.forward({
    hidden: host(input(ctx, "hidden_states")),
    text: host(input(ctx, "encoder_hidden_states")),
    timestep: input(ctx, "timestep").data as Float32Array,
    imgIds: firstBatch(ctx, "img_ids"),
    txtIds: firstBatch(ctx, "txt_ids"),
    guidance: ctx.inputs.get("guidance")?.data as Float32Array | undefined,
  });
}

/** A LoRA file, parsed once per run; named by its path so that each file is one adapter. */
function loraFile(ctx: CaseContext, file: string): Promise<LoraAdapter> {
  return ctx.models
    .get(`lora-file:${file}`, async () => ({ adapter: loadLoraFile(ctx.models.resolve(file), file), release: async () => {} }))
    .then((x) => x.adapter);
}

function openWeights(ctx: CaseContext, spec: ComponentSpec) {
  const set = WeightSet.open(ctx.models.resolve(spec.weights));
  try {
    const weights = new TransformerWeights(set, spec.format ?? "diffusers");
    const config = spec.config ? readTransformerConfig(ctx.models.resolve(spec.config)) : weights.inferConfig();
    return { set, weights, config };
  } catch (e) {
    set.close();
    throw e;
  }
}

export const loraForwardKind: KindHandler = async (ctx) => {
  const spec = transformerSpec(ctx);
  const params = adapterParams(ctx);
  if (params.length === 0) {
    const model = await ctx.models.transformer(spec);
    return { tensors: new Map([["output", await forward(ctx, model)]]) };
  }
  const files = [...new Set(params.map((p) => p.file))].sort();
  const key = `lora-runtime:${spec.weights}:${spec.config}:${spec.format}:${files.join("|")}`;
  const entry = await ctx.models.get(key, async () => {
    const adapters = await Promise.all(files.map((f) => loraFile(ctx, f)));
    const { set, weights, config } = openWeights(ctx, spec);
    try {
      const runtime: RuntimeLoras = attachRuntimeLoras(weights, adapters.map((adapter) => ({ adapter, weight: 0 })));
      const model = await Flux2Transformer.load(ctx.models.backend, config, weights);
      return { model, runtime, release: async () => { await model.release(); set.close(); } };
    } catch (e) {
      set.close();
      throw e;
    }
  });
  // The same file under two names adds up, as two adapters with the same weights would.
  const strengths: Record<string, number> = {};
  for (const p of params) strengths[p.file] = (strengths[p.file] ?? 0) + (p.weight ?? 1);
  entry.runtime.setWeights(strengths, true);
  entry.runtime.setScale(ctx.params.lora_scale ?? 1);
  return { tensors: new Map([["output", await forward(ctx, entry.model)]]) };
};

export const loraFuseKind: KindHandler = async (ctx) => {
  const spec = transformerSpec(ctx);
  const params = adapterParams(ctx);
  const uses = await Promise.all(params.map(async (p) => ({ adapter: await loraFile(ctx, p.file), weight: p.weight ?? 1 })));
  const { set, weights, config } = openWeights(ctx, spec);
  try {
    const fused = fuseLoras(weights, uses, ctx.params.lora_scale ?? 1);
    const tensors: CaseOutput["tensors"] = new Map();
    for (const name of fused.changed) {
      const o = weights.overrides.get(name)!;
      tensors.set(name, { shape: o.shape, data: o.data });
    }
    const model = await Flux2Transformer.load(ctx.models.backend, config, weights);
    try {
      tensors.set("output", await forward(ctx, model));
    } finally {
      await model.release();
    }
    return { tensors };
  } finally {
    set.close();
  }
};

/** For registration: kind name → handler. */
export const LORA_KINDS: Record<string, KindHandler> = {
  lora_forward: loraForwardKind,
  lora_fuse: loraFuseKind,
};
