// Assembling a pipeline from a checkpoint on disk, like diffusers' `from_pretrained`
// (diffusers keeps this in its loaders/ package too). The pipeline itself only
// knows how to get each component when its stage begins (ComponentSources); this
// module decides what those components are: which files, which text encoder,
// whether the transformer's Linears are quantized at load, and which LoRAs run
// beside the base weights. Keeping it here is what lets src/pipeline/ stay free of
// src/lora/ and src/quant/ (they sit above the models, next to the pipeline).

import type { Backend } from "../backend/backend.js";
import { OrtBackend } from "../backend/ort.js";
import { WeightSet } from "../io/safetensors.js";
import { attachRuntimeLoras, type RuntimeLoras } from "../lora/apply.js";
import { loadLoraFile, type LoraReport } from "../lora/formats.js";
import { MistralEncoder } from "../models/mistral.js";
import type { DecoderEncoder } from "../models/decoder.js";
import { Qwen3Encoder } from "../models/qwen3.js";
import { Flux2Transformer, type TransformerConfig } from "../models/transformer.js";
import { Flux2KvTransformer } from "../models/transformer_kv.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { Flux2Vae } from "../models/vae.js";
import { openCheckpoint, transformerConfig, type Checkpoint, type OpenOptions } from "../pipeline/checkpoint.js";
import { Flux2Pipeline, type ComponentSources, type PromptEncoder } from "../pipeline/flux2.js";
import { loadQuantOptions, loadQuantizedQwen3, type QuantizeOption } from "../quant/load.js";
import { quantizeTransformerAtLoad } from "../quant/quantize.js";
import { MistralPromptTokenizer } from "../text/mistral_prompt.js";
import { PromptTokenizer } from "../text/tokenizer.js";
import { InvalidRequestError } from "../util/errors.js";

/** A LoRA file and its strength. */
export interface LoraUse {
  file: string;
  strength: number;
  name?: string;
}

export interface LoadOptions extends OpenOptions {
  backend?: Backend;
  /** Keep every component loaded between runs (servers); default: each is released after its stage. */
  keepLoaded?: boolean;
  loras?: LoraUse[];
  /** int8 / int4 Linear weights (src/quant/): quantized once into the cache, then memory-mapped. */
  quantize?: QuantizeOption;
}

/**
 * Open a diffusers folder (or a BFL single file plus parts) as a ready pipeline.
 * LoRAs run as a low-rank side path next to the memory-mapped base weights (no fused
 * copy of any weight); their strengths are graph inputs. LoRAs are checked against the
 * model here, so a shape mismatch is refused before any work.
 */
export function loadPipeline(source: string, opts: LoadOptions = {}): Flux2Pipeline {
  const ck = openCheckpoint(source, opts);
  const backend = opts.backend ?? new OrtBackend();
  const tcfg = transformerConfig(ck);
  const adapters = (opts.loras ?? []).map((l, i) => ({ adapter: loadLoraFile(l.file, l.name ?? `lora${i}`), weight: l.strength }));
  let loraReports: LoraReport[] = [];
  const runtimeLoras: RuntimeLoras[] = [];
  const weights = (): TransformerWeights => {
    const w = new TransformerWeights(WeightSet.open(ck.transformer.weights), ck.transformer.format);
    w.check(tcfg);
    if (opts.quantize) quantizeTransformerAtLoad(w, tcfg, loadQuantOptions(opts.quantize));
    if (adapters.length) {
      const runtime = attachRuntimeLoras(w, adapters);
      runtimeLoras.push(runtime);
      loraReports = runtime.reports;
    }
    return w;
  };
  if (adapters.length) weights().set.close();
  const pipe = new Flux2Pipeline(ck.variant, checkpointSources(ck, backend, tcfg, weights, opts.quantize), { keepLoaded: opts.keepLoaded, checkpoint: ck });
  pipe.loraReports = loraReports.map((report, i) => ({
    name: adapters[i].adapter.name, file: opts.loras![i].file, strength: adapters[i].weight, format: adapters[i].adapter.format, report,
  }));
  // Strengths are graph inputs: a new set reaches every transformer session built so far (and later) without a rebuild.
  if (adapters.length) {
    pipe.setLoraStrengths = (strengths) => {
      if (strengths.length !== adapters.length) throw new InvalidRequestError(`${strengths.length} LoRA strengths for ${adapters.length} LoRAs`);
      strengths.forEach((x, i) => { adapters[i].weight = x; pipe.loraReports[i].strength = x; });
      for (const r of runtimeLoras) r.setWeights(Object.fromEntries(adapters.map((a) => [a.adapter.name, a.weight])));
    };
  }
  return pipe;
}

/** Each component of a checkpoint, loaded on demand. */
function checkpointSources(ck: Checkpoint, backend: Backend, tcfg: TransformerConfig, weights: () => TransformerWeights, quantize?: QuantizeOption): ComponentSources {
  const te = ck.textEncoder;
  return {
    transformerConfig: tcfg,
    transformer: () => Flux2Transformer.load(backend, tcfg, weights()),
    kvTransformer: async () => Flux2KvTransformer.create(backend, tcfg, weights()),
    vae: () => Flux2Vae.fromFiles(backend, ck.vae.weights, requireConfig(ck.vae.config, "VAE"), ck.vae.format),
    textEncoder: (): Promise<DecoderEncoder> => te.kind === "mistral3"
      ? MistralEncoder.fromFiles(backend, te.weights, te.config)
      : quantize ? loadQuantizedQwen3(backend, te.weights, te.config, quantize)
      : Qwen3Encoder.fromFiles(backend, te.weights, te.config),
    tokenizer: async (): Promise<PromptEncoder> => te.kind === "mistral3" ? MistralPromptTokenizer.load(ck.tokenizer) : PromptTokenizer.load(ck.tokenizer),
  };
}

function requireConfig(p: string | null, what: string): string {
  if (!p) throw new Error(`no config.json for the ${what}: pass the checkpoint folder as well`);
  return p;
}
