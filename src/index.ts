// flux2.ts public API.
//
//   import { Flux2Pipeline } from "flux2";
//   const pipe = Flux2Pipeline.fromPretrained("models/FLUX.2-klein-4B");
//   const { images } = await pipe.generate({ prompt: "a red fox in the snow", width: 1024, height: 768, seed: 42 });
//
// images[i].rgb is packed RGB; encodeImage() writes PNG/JPEG/WebP with parameters.

export { Flux2Pipeline, InvalidRequestError, validateSize, MAX_PIXELS } from "./pipeline/flux2.js";
export type { GenerateOptions, GenerateResult, GeneratedImage, StepInfo, InitImage } from "./pipeline/flux2.js";
export { openCheckpoint, VARIANT_DEFAULTS, CheckpointError } from "./pipeline/checkpoint.js";
export type { Checkpoint, Variant } from "./pipeline/checkpoint.js";
export { prepareReference, prepareReferences, prepareInpaintImage, MAX_REFERENCES } from "./pipeline/reference.js";
export type { ReferenceImage } from "./pipeline/reference.js";
export { encodeImage, decodeImage, readPngText } from "./pipeline/image.js";
export { formatParameters, parseParameters } from "./pipeline/metadata.js";
export { GenerationRequest, modelCapabilities } from "./api/request.js";
export { Flux2Transformer } from "./models/transformer.js";
export { Flux2KvTransformer } from "./models/transformer_kv.js";
export { Flux2Vae } from "./models/vae.js";
export { Qwen3Encoder } from "./models/qwen3.js";
export { MistralEncoder } from "./models/mistral.js";
export { OrtBackend } from "./backend/ort.js";
export type { Backend, Session, HostTensor, Device } from "./backend/backend.js";
export { SafetensorsFile, WeightSet, writeSafetensors, readAll } from "./io/safetensors.js";
export { runConformance } from "./conformance/runner.js";
