// "flux2/models": the engine's building blocks for callers who assemble their own pipeline or
// run one component: the transformer (plain and reference-KV-cached), the VAE, the text
// encoders, the ONNX Runtime backend they run on, and the safetensors reader/writer.

export { Flux2Transformer, readTransformerConfig, type TransformerConfig, type TransformerInputs } from "./transformer.js";
export { Flux2KvTransformer, type KvCache } from "./transformer_kv.js";
export { Flux2Vae, readVaeConfig, type VaeConfig } from "./vae.js";
export { DecoderEncoder } from "./decoder.js";
export { Qwen3Encoder, KLEIN_TEXT_LAYERS } from "./qwen3.js";
export { MistralEncoder, DEV_TEXT_LAYERS } from "./mistral.js";
export { OrtBackend } from "../backend/ort.js";
export type { Backend, Session, HostTensor, Device } from "../backend/backend.js";
export { SafetensorsFile, WeightSet, writeSafetensors, readAll } from "../io/safetensors.js";
