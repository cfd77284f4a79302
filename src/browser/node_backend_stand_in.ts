// Stands in for src/backend/ort.ts (onnxruntime-node) in the browser bundle: the pipeline's
// default backend becomes ONNX Runtime Web, and the on-disk model cache is refused.
import { OrtWebBackend } from "../backend/ort_web.js";

export class OrtBackend extends OrtWebBackend {}

export function cacheRoot(): string {
  throw new Error("the browser build has no on-disk cache (quantizing at load needs Node): quantize the model with `flux2 quantize` and load that folder");
}
