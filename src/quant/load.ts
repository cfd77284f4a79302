// Loading components with int8 / int4 weights quantized at load (`--quantize`, Flux2Pipeline
// `quantize` option): the quantized tensors are written once into $FLUX2_CACHE/quant/ and
// memory-mapped from there; the rest of each component is read from the checkpoint as usual.

import type { Backend } from "../backend/backend.js";
import { WeightSet } from "../io/safetensors.js";
import { defaultConfigPath } from "../models/decoder.js";
import { Qwen3Encoder, Qwen3Weights, readQwen3Config } from "../models/qwen3.js";
import { specFor, type QuantKind } from "../models/quantized/blockwise.js";
import { quantizeDecoderAtLoad, type LoadQuantOptions } from "./quantize.js";

export type QuantizeOption = QuantKind | LoadQuantOptions;

/** "int8" / "int8-block" / "int4" with the default layout, or full options. */
export function loadQuantOptions(q: QuantizeOption): LoadQuantOptions {
  return typeof q === "string" ? { spec: specFor(q) } : q;
}

/** Qwen3Encoder.fromFiles with its decoder projections quantized. */
export async function loadQuantizedQwen3(backend: Backend, weightsPath: string, configPath: string | null, q: QuantizeOption): Promise<Qwen3Encoder> {
  const config = readQwen3Config(defaultConfigPath(weightsPath, configPath));
  const weights = new Qwen3Weights(WeightSet.open(weightsPath));
  quantizeDecoderAtLoad(weights, config, loadQuantOptions(q));
  return Qwen3Encoder.load(backend, config, weights);
}
